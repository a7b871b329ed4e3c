/* The Messages codec, golden: a Messages request in -> the canonical chat body out; canonical
 * chunks in -> the exact Anthropic events out (ids normalized); a passthrough stream observed,
 * then a continuation's canonical text goes on in the same block; the honest end and errors in
 * Anthropic's shape; the passthrough adapter's upstream request (model spliced, headers). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "llmux/codec.h"
#include "llmux/errors.h"
#include "llmux/json.h"

static void test_request(void)
{
    const char *in =
        "{\"model\":\"m\",\"max_tokens\":64,\"stream\":true,\"top_k\":3,"
        "\"system\":[{\"type\":\"text\",\"text\":\"A\",\"cache_control\":{\"type\":\"ephemeral\"}},"
        "{\"type\":\"text\",\"text\":\"B\"}],"
        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":\"t\","
        "\"signature\":\"s\"},{\"type\":\"text\",\"text\":\"let me look\"},{\"type\":\"tool_use\","
        "\"id\":\"toolu_1\",\"name\":\"get\",\"input\":{\"q\":1}}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\","
        "\"content\":[{\"type\":\"text\",\"text\":\"42\"}]},{\"type\":\"text\",\"text\":\"ok?\"}]}],"
        "\"tools\":[{\"name\":\"get\",\"input_schema\":{\"type\":\"object\"}}],"
        "\"tool_choice\":{\"type\":\"any\",\"disable_parallel_tool_use\":true},"
        "\"stop_sequences\":[\"X\"],\"metadata\":{\"user_id\":\"u\"}}";
    struct buf out;
    buf_init(&out, 0);
    char why[128];
    CHECK_INT(codec_messages_request(in, strlen(in), &out, why, sizeof(why)), 0);
    buf_append(&out, "", 1);
    CHECK_STR(out.data,
              "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"A\\n\\nB\"},"
              "{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":"
              "\"let me look\",\"tool_calls\":[{\"id\":\"toolu_1\",\"type\":\"function\","
              "\"function\":{\"name\":\"get\",\"arguments\":\"{\\\"q\\\":1}\"}}]},"
              "{\"role\":\"tool\",\"tool_call_id\":\"toolu_1\",\"content\":\"42\"},"
              "{\"role\":\"user\",\"content\":\"ok?\"}],\"tools\":[{\"type\":\"function\","
              "\"function\":{\"name\":\"get\",\"parameters\":{\"type\":\"object\"}}}],"
              "\"tool_choice\":\"required\",\"parallel_tool_calls\":false,\"max_tokens\":64,"
              "\"stop\":[\"X\"],\"user\":\"u\",\"stream\":true,"
              "\"stream_options\":{\"include_usage\":true}}");
    buf_free(&out);

    const char *server_tool = "{\"model\":\"m\",\"messages\":[],\"tools\":[{\"type\":"
                              "\"web_search_20250305\",\"name\":\"web_search\"}]}";
    buf_init(&out, 0);
    CHECK_INT(codec_messages_request(server_tool, strlen(server_tool), &out, why, sizeof(why)),
              LLMUX_EKIND);
    CHECK(strstr(why, "web_search_20250305") != NULL);
    const char *bad_role = "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}";
    CHECK_INT(codec_messages_request(bad_role, strlen(bad_role), &out, why, sizeof(why)), UV_EINVAL);
    buf_free(&out);
}

/* Feed one canonical chunk; the output with the message id replaced by "msg_X". */
static void feed(struct codec_stream *s, const char *data, enum chunk_kind kind,
                 const struct usage *total, struct buf *all)
{
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.kind = kind;
    struct buf out;
    buf_init(&out, 0);
    CHECK_INT(codec_messages.stream_chunk(s, data, strlen(data), &ci, total, &out), 0);
    buf_append(&out, "", 1);
    char *id = strstr(out.data, s->id);
    if (id && s->id[0]) { /* "msg_<24 hex>" -> "msg_X" */
        buf_append(all, out.data, (size_t)(id - out.data));
        buf_append_str(all, "msg_X");
        buf_append_str(all, id + strlen(s->id));
    } else {
        buf_append_str(all, out.data);
    }
    buf_free(&out);
}

static void test_stream(void)
{
    struct codec_stream s;
    memset(&s, 0, sizeof(s));
    struct buf all;
    buf_init(&all, 0);
    struct usage total = {10, 7, 17, 4, 1};
    feed(&s, "{\"model\":\"g\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}", CHUNK_CONTENT, NULL,
         &all);
    feed(&s, "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":"
             "{\"name\":\"get\",\"arguments\":\"\"}}]}}]}", CHUNK_CONTENT, NULL, &all);
    feed(&s, "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
             "{\"arguments\":\"{\\\"q\\\":1}\"}}]}}]}", CHUNK_CONTENT, NULL, &all);
    feed(&s, "{\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}", CHUNK_CONTENT,
         NULL, &all);
    feed(&s, "[DONE]", CHUNK_DONE, &total, &all);
    buf_append(&all, "", 1);
    CHECK_STR(all.data,
              "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_X\","
              "\"type\":\"message\",\"role\":\"assistant\",\"model\":\"g\",\"content\":[],"
              "\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":0,"
              "\"output_tokens\":0}}}\n\n"
              "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
              "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
              "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
              "\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n"
              "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
              "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,"
              "\"content_block\":{\"type\":\"tool_use\",\"id\":\"c1\",\"name\":\"get\","
              "\"input\":{}}}\n\n"
              "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,"
              "\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"q\\\":1}\"}}\n\n"
              "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n"
              "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
              "\"tool_use\",\"stop_sequence\":null},\"usage\":{\"input_tokens\":6,"
              "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":4,"
              "\"output_tokens\":7}}\n\n"
              "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    buf_free(&all);
}

static void test_continuation_after_passthrough(void)
{
    struct codec_stream s;
    memset(&s, 0, sizeof(s));
    const char *seen =
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n"
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,"
        "\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
        "\"delta\":{\"type\":\"text_delta\",\"text\":\"w0 \"}}\n\n";
    codec_messages.observe(&s, seen, strlen(seen));
    CHECK_INT(s.started, 1);
    CHECK_INT(s.block, 0);
    CHECK_INT(s.block_kind, 0);
    struct buf all;
    buf_init(&all, 0);
    feed(&s, "{\"choices\":[{\"delta\":{\"content\":\"w1 \"}}]}", CHUNK_CONTENT, NULL, &all);
    buf_append(&all, "", 1);
    CHECK_STR(all.data, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                        "\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"w1 \"}}\n\n");
    buf_reset(&all);
    CHECK_INT(codec_messages.stream_error(&s, 502, "stalled \"x\"", &all), 0);
    buf_append(&all, "", 1);
    CHECK_STR(all.data, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                        "\"message\":\"stalled \\\"x\\\"\"}}\n\n");
    buf_free(&all);
}

static void test_errors_and_body(void)
{
    struct buf out;
    buf_init(&out, 0);
    const char *openai = "{\"error\":{\"message\":\"bad thing\",\"type\":\"x\",\"code\":null}}";
    CHECK_INT(codec_messages.error(529, NULL, openai, strlen(openai), &out), 0);
    buf_append(&out, "", 1);
    CHECK_STR(out.data, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\","
                        "\"message\":\"bad thing\"}}");
    buf_reset(&out);
    const char *chat = "{\"id\":\"c\",\"model\":\"g\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                       "\"assistant\",\"content\":\"Hi\"},\"finish_reason\":\"length\"}],"
                       "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}";
    CHECK_INT(codec_messages.body(chat, strlen(chat), &out), 0);
    buf_append(&out, "", 1);
    cJSON *m = cJSON_Parse(out.data);
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(m, "stop_reason")), "max_tokens");
    CHECK_STR(cJSON_GetStringValue(cJSON_GetObjectItem(
                  cJSON_GetArrayItem(cJSON_GetObjectItem(m, "content"), 0), "text")),
              "Hi");
    CHECK_INT(cJSON_GetObjectItem(cJSON_GetObjectItem(m, "usage"), "output_tokens")->valueint, 2);
    cJSON_Delete(m);
    buf_free(&out);
}

static void test_passthrough_encode(void)
{
    struct provider p;
    memset(&p, 0, sizeof(p));
    p.kind = PROVIDER_ANTHROPIC;
    p.host = "api.anthropic.com";
    p.port = 443;
    p.tls = 1;
    p.base_path = "/v1";
    p.api_key = "sk-ant-k";
    p.api_version = "2023-06-01";
    const char *body = "{\"model\":\"alias\",\"thinking\":{\"type\":\"enabled\"},\"messages\":[]}";
    struct canon_request r;
    memset(&r, 0, sizeof(r));
    r.request_id = "rid";
    r.native = body;
    r.native_len = strlen(body);
    json_top_key(body, r.native_len, "model", &r.native_model_start, &r.native_model_end);
    r.native_path = "/messages";
    r.native_headers = "anthropic-version: 2024-01-01\r\nanthropic-beta: b1\r\n";
    struct upstream_request u;
    CHECK_INT(adapter_anthropic_native.encode(&p, "claude-x", 8, &r, &u), 0);
    struct buf all;
    buf_init(&all, 0);
    for (unsigned i = 0; i < u.n; i++)
        buf_append(&all, u.iov[i].base, u.iov[i].len);
    buf_append(&all, "", 1);
    CHECK(strstr(all.data, "POST /v1/messages HTTP/1.1\r\n") == all.data);
    CHECK(strstr(all.data, "x-api-key: sk-ant-k\r\nanthropic-version: 2024-01-01\r\n"
                           "anthropic-beta: b1\r\n") != NULL);
    CHECK(strstr(all.data, "\r\n\r\n{\"model\":\"claude-x\",\"thinking\":{\"type\":\"enabled\"},"
                           "\"messages\":[]}") != NULL);
    buf_free(&all);
    upstream_request_free(&u);
}

int main(void)
{
    test_request();
    test_stream();
    test_continuation_after_passthrough();
    test_errors_and_body();
    test_passthrough_encode();
    return check_report();
}
