/* The Responses codec, golden: a Responses request in -> the canonical chat body out (and the
 * requests it refuses, with the reason); canonical chunks in -> the exact Responses events out
 * (ids normalized): a text item then a function call, numbered, with response.completed
 * repeating the output and the usage; a length finish -> response.incomplete; a break ->
 * response.failed (after a response.created even when nothing was sent yet); a chat.completion
 * -> a Response object. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "llmux/codec.h"
#include "llmux/errors.h"

static void test_request(void)
{
    const char *in =
        "{\"model\":\"m\",\"instructions\":\"Be brief.\",\"stream\":true,\"store\":false,"
        "\"include\":[\"reasoning.encrypted_content\"],\"prompt_cache_key\":\"k\","
        "\"reasoning\":{\"effort\":\"low\",\"summary\":\"auto\"},\"max_output_tokens\":64,"
        "\"temperature\":0.5,\"user\":\"u\",\"metadata\":{\"a\":\"b\"},"
        "\"input\":[{\"role\":\"developer\",\"content\":\"D\"},"
        "{\"type\":\"message\",\"role\":\"user\",\"content\":[{\"type\":\"input_text\",\"text\":"
        "\"look\"},{\"type\":\"input_image\",\"image_url\":\"data:image/png;base64,AA\","
        "\"detail\":\"auto\"}]},"
        "{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[],\"encrypted_content\":\"x\"},"
        "{\"type\":\"message\",\"role\":\"assistant\",\"content\":[{\"type\":\"output_text\","
        "\"text\":\"checking\"}]},"
        "{\"type\":\"function_call\",\"call_id\":\"c1\",\"name\":\"get\",\"arguments\":"
        "\"{\\\"q\\\":1}\"},"
        "{\"type\":\"function_call_output\",\"call_id\":\"c1\",\"output\":[{\"type\":"
        "\"input_text\",\"text\":\"42\"}]}],"
        "\"tools\":[{\"type\":\"function\",\"name\":\"get\",\"parameters\":{\"type\":\"object\"},"
        "\"strict\":true}],\"tool_choice\":{\"type\":\"function\",\"name\":\"get\"},"
        "\"parallel_tool_calls\":false,"
        "\"text\":{\"verbosity\":\"low\",\"format\":{\"type\":\"json_schema\",\"name\":\"r\","
        "\"schema\":{\"type\":\"object\"},\"strict\":true}}}";
    struct buf out;
    buf_init(&out, 0);
    char why[256];
    CHECK_INT(codec_responses_request(in, strlen(in), &out, why, sizeof(why)), 0);
    buf_append(&out, "", 1);
    CHECK_STR(out.data,
              "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
              "{\"role\":\"system\",\"content\":\"D\"},{\"role\":\"user\",\"content\":[{\"type\":"
              "\"text\",\"text\":\"look\"},{\"type\":\"image_url\",\"image_url\":{\"url\":"
              "\"data:image/png;base64,AA\"}}]},{\"role\":\"assistant\",\"content\":\"checking\","
              "\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get\","
              "\"arguments\":\"{\\\"q\\\":1}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\","
              "\"content\":\"42\"}],\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
              "\"get\",\"parameters\":{\"type\":\"object\"},\"strict\":true}}],\"tool_choice\":"
              "{\"type\":\"function\",\"function\":{\"name\":\"get\"}},\"parallel_tool_calls\":"
              "false,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"r\","
              "\"schema\":{\"type\":\"object\"},\"strict\":true}},\"max_tokens\":64,"
              "\"temperature\":0.5,\"user\":\"u\",\"reasoning_effort\":\"low\",\"stream\":true,"
              "\"stream_options\":{\"include_usage\":true}}");
    buf_free(&out);

    const char *plain = "{\"model\":\"m\",\"input\":\"hi\",\"parallel_tool_calls\":true}";
    buf_init(&out, 0);
    CHECK_INT(codec_responses_request(plain, strlen(plain), &out, why, sizeof(why)), 0);
    buf_append(&out, "", 1);
    CHECK_STR(out.data, "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    buf_free(&out);

    /* instructions as input items (developer and system messages), before the input string */
    const char *items = "{\"model\":\"m\",\"input\":\"hi\",\"instructions\":["
                        "{\"type\":\"message\",\"role\":\"developer\",\"content\":[{\"type\":"
                        "\"input_text\",\"text\":\"D\"}]},{\"role\":\"system\",\"content\":\"S\"}]}";
    buf_init(&out, 0);
    CHECK_INT(codec_responses_request(items, strlen(items), &out, why, sizeof(why)), 0);
    buf_append(&out, "", 1);
    CHECK_STR(out.data, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"D\"},"
                        "{\"role\":\"system\",\"content\":\"S\"},{\"role\":\"user\",\"content\":"
                        "\"hi\"}]}");
    buf_free(&out);

    struct {
        const char *body;
        int rc;
        const char *says;
    } refused[] = {
        {"{\"model\":\"m\",\"input\":\"hi\",\"instructions\":7}", UV_EINVAL, "instructions"},
        {"{\"model\":\"m\",\"input\":\"hi\",\"tools\":[{\"type\":\"custom\",\"name\":"
         "\"apply_patch\"}]}", LLMUX_EKIND, "\"custom\""},
        {"{\"model\":\"m\",\"input\":\"hi\",\"previous_response_id\":\"resp_1\"}", UV_EINVAL,
         "previous_response_id: llmux keeps no responses"},
        {"{\"model\":\"m\",\"input\":[{\"type\":\"item_reference\",\"id\":\"msg_1\"}]}", UV_EINVAL,
         "item_reference"},
        {"{\"model\":\"m\",\"input\":\"hi\",\"tools\":[{\"type\":\"web_search\"}]}", LLMUX_EKIND,
         "\"web_search\""},
        {"{\"model\":\"m\",\"input\":[{\"type\":\"local_shell_call\"}]}", LLMUX_EKIND,
         "\"local_shell_call\""},
        {"{\"model\":\"m\",\"input\":[{\"role\":\"tool\",\"content\":\"x\"}]}", UV_EINVAL, "role"},
        {"{\"model\":\"m\",\"input\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_image\","
         "\"file_id\":\"f\"}]}]}", UV_EINVAL, "file_id"},
        {"{\"model\":\"m\",\"input\":7}", UV_EINVAL, "input"},
        {"{\"model\":\"m\",\"input\":\"x\",\"text\":{\"format\":{\"type\":\"yaml\"}}}", UV_EINVAL,
         "text.format"},
    };
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        buf_init(&out, 0);
        CHECK_INT(codec_responses_request(refused[i].body, strlen(refused[i].body), &out, why,
                                          sizeof(why)),
                  refused[i].rc);
        CHECK(strstr(why, refused[i].says) != NULL);
        CHECK_INT(buf_size(&out), 0);
        buf_free(&out);
    }
}

/* Random ids ("resp_", "msg_", "fc_" + 24 hex digits) as PREFIX "X". */
static void normalize(const char *in, struct buf *out)
{
    static const char *const prefixes[] = {"resp_", "msg_", "fc_"};
    while (*in) {
        size_t skip = 0;
        for (int p = 0; p < 3 && !skip; p++) {
            size_t n = strlen(prefixes[p]), h = 0;
            if (strncmp(in, prefixes[p], n) != 0)
                continue;
            while (isxdigit((unsigned char)in[n + h]))
                h++;
            if (h == 24) {
                buf_append(out, in, n);
                buf_append_str(out, "X");
                skip = n + h;
            }
        }
        if (!skip)
            buf_append(out, in, (skip = 1));
        in += skip;
    }
}

static void feed(struct codec_stream *s, const char *data, enum chunk_kind kind,
                 const struct usage *total, struct buf *all)
{
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.kind = kind;
    struct buf out;
    buf_init(&out, 0);
    CHECK_INT(codec_responses.stream_chunk(s, data, strlen(data), &ci, total, &out), 0);
    buf_append(&out, "", 1);
    normalize(out.data, all);
    buf_free(&out);
}

#define RESPONSE(status, rest)                                                                     \
    "{\"id\":\"resp_X\",\"object\":\"response\",\"created_at\":7,\"status\":\"" status "\","     \
    "\"error\":null," rest

static void test_stream(void)
{
    struct codec_stream s;
    memset(&s, 0, sizeof(s));
    struct buf all;
    buf_init(&all, 0);
    struct usage total = {10, 7, 17, 4, 1};
    feed(&s, "{\"created\":7,\"model\":\"g\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}",
         CHUNK_CONTENT, NULL, &all);
    feed(&s, "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"c1\",\"function\":"
             "{\"name\":\"get\",\"arguments\":\"\"}}]}}]}", CHUNK_CONTENT, NULL, &all);
    feed(&s, "{\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":"
             "{\"arguments\":\"{\\\"q\\\":1}\"}}]}}]}", CHUNK_CONTENT, NULL, &all);
    feed(&s, "{\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}", CHUNK_CONTENT,
         NULL, &all);
    feed(&s, "{\"choices\":[],\"usage\":{\"prompt_tokens\":10,\"completion_tokens\":7,"
             "\"completion_tokens_details\":{\"reasoning_tokens\":3}}}", CHUNK_CONTENT, NULL, &all);
    feed(&s, "[DONE]", CHUNK_DONE, &total, &all);
    buf_append(&all, "", 1);
#define MSG "{\"id\":\"msg_X\",\"type\":\"message\",\"status\":"
#define PART "{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],\"text\":"
#define CALL "{\"id\":\"fc_X\",\"type\":\"function_call\",\"status\":"
    CHECK_STR(all.data,
              "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,"
              "\"response\":" RESPONSE("in_progress", "\"incomplete_details\":null,\"model\":\"g\","
              "\"output\":[],\"usage\":null}") "}\n\n"
              "event: response.in_progress\ndata: {\"type\":\"response.in_progress\","
              "\"sequence_number\":1,\"response\":" RESPONSE("in_progress",
              "\"incomplete_details\":null,\"model\":\"g\",\"output\":[],\"usage\":null}") "}\n\n"
              "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\","
              "\"sequence_number\":2,\"output_index\":0,\"item\":" MSG "\"in_progress\","
              "\"content\":[],\"role\":\"assistant\"}}\n\n"
              "event: response.content_part.added\ndata: {\"type\":\"response.content_part.added\","
              "\"sequence_number\":3,\"item_id\":\"msg_X\",\"output_index\":0,\"content_index\":0,"
              "\"part\":" PART "\"\"}}\n\n"
              "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\","
              "\"sequence_number\":4,\"item_id\":\"msg_X\",\"output_index\":0,\"content_index\":0,"
              "\"delta\":\"Hi\",\"logprobs\":[]}\n\n"
              "event: response.output_text.done\ndata: {\"type\":\"response.output_text.done\","
              "\"sequence_number\":5,\"item_id\":\"msg_X\",\"output_index\":0,\"content_index\":0,"
              "\"text\":\"Hi\",\"logprobs\":[]}\n\n"
              "event: response.content_part.done\ndata: {\"type\":\"response.content_part.done\","
              "\"sequence_number\":6,\"item_id\":\"msg_X\",\"output_index\":0,\"content_index\":0,"
              "\"part\":" PART "\"Hi\"}}\n\n"
              "event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\","
              "\"sequence_number\":7,\"output_index\":0,\"item\":" MSG "\"completed\",\"content\":["
              PART "\"Hi\"}],\"role\":\"assistant\"}}\n\n"
              "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\","
              "\"sequence_number\":8,\"output_index\":1,\"item\":" CALL "\"in_progress\","
              "\"arguments\":\"\",\"call_id\":\"c1\",\"name\":\"get\"}}\n\n"
              "event: response.function_call_arguments.delta\ndata: {\"type\":"
              "\"response.function_call_arguments.delta\",\"sequence_number\":9,\"item_id\":"
              "\"fc_X\",\"output_index\":1,\"delta\":\"{\\\"q\\\":1}\"}\n\n"
              "event: response.function_call_arguments.done\ndata: {\"type\":"
              "\"response.function_call_arguments.done\",\"sequence_number\":10,\"item_id\":"
              "\"fc_X\",\"output_index\":1,\"arguments\":\"{\\\"q\\\":1}\"}\n\n"
              "event: response.output_item.done\ndata: {\"type\":\"response.output_item.done\","
              "\"sequence_number\":11,\"output_index\":1,\"item\":" CALL "\"completed\","
              "\"arguments\":\"{\\\"q\\\":1}\",\"call_id\":\"c1\",\"name\":\"get\"}}\n\n"
              "event: response.completed\ndata: {\"type\":\"response.completed\","
              "\"sequence_number\":12,\"response\":" RESPONSE("completed",
              "\"incomplete_details\":null,\"model\":\"g\",\"output\":[" MSG "\"completed\","
              "\"content\":[" PART "\"Hi\"}],\"role\":\"assistant\"}," CALL "\"completed\","
              "\"arguments\":\"{\\\"q\\\":1}\",\"call_id\":\"c1\",\"name\":\"get\"}],"
              "\"usage\":{\"input_tokens\":10,\"input_tokens_details\":{\"cached_tokens\":4},"
              "\"output_tokens\":7,\"output_tokens_details\":{\"reasoning_tokens\":3},"
              "\"total_tokens\":17}}") "}\n\n");
    buf_free(&all);
    codec_responses.stream_free(&s);
}

static void test_incomplete_and_failed(void)
{
    struct codec_stream s;
    memset(&s, 0, sizeof(s));
    struct buf all;
    buf_init(&all, 0);
    feed(&s, "{\"created\":7,\"model\":\"g\",\"choices\":[{\"delta\":{\"content\":\"a\"},"
             "\"finish_reason\":\"length\"}]}", CHUNK_CONTENT, NULL, &all);
    feed(&s, "[DONE]", CHUNK_DONE, NULL, &all);
    buf_append(&all, "", 1);
    const char *last = strstr(all.data, "event: response.incomplete\n");
    CHECK(last != NULL);
    CHECK(strstr(all.data, "\"status\":\"incomplete\",\"content\"") != NULL); /* the item */
    CHECK(last && strstr(last, "\"status\":\"incomplete\",\"error\":null,\"incomplete_details\":"
                               "{\"reason\":\"max_output_tokens\"}") != NULL);
    CHECK(strstr(all.data, "response.completed") == NULL);
    buf_free(&all);
    codec_responses.stream_free(&s);

    /* pings went out, then every deployment failed: the stream still opens before it fails */
    memset(&s, 0, sizeof(s));
    snprintf(s.model, sizeof(s.model), "alias");
    buf_init(&all, 0);
    CHECK_INT(codec_responses.stream_error(&s, 502, "all \"deployments\" failed", &all), 0);
    buf_append(&all, "", 1);
    struct buf norm;
    buf_init(&norm, 0);
    normalize(all.data, &norm);
    buf_append(&norm, "", 1);
    const char *failed = strstr(norm.data, "event: response.failed\n");
    CHECK(strncmp(norm.data, "event: response.created\n", 24) == 0);
    CHECK(failed != NULL);
    CHECK(failed && strstr(failed, "\"sequence_number\":2,\"response\":{\"id\":\"resp_X\"") != NULL);
    CHECK(failed && strstr(failed, "\"status\":\"failed\",\"error\":{\"code\":\"server_error\","
                                   "\"message\":\"all \\\"deployments\\\" failed\"},"
                                   "\"incomplete_details\":null,\"model\":\"alias\","
                                   "\"output\":[],\"usage\":null}}\n\n") != NULL);
    buf_free(&norm);
    buf_free(&all);
    codec_responses.stream_free(&s);
}

static void test_body(void)
{
    const char *chat = "{\"id\":\"c\",\"created\":7,\"model\":\"g\",\"choices\":[{\"index\":0,"
                       "\"message\":{\"role\":\"assistant\",\"content\":\"Hi\",\"tool_calls\":[{"
                       "\"id\":\"c1\",\"type\":\"function\",\"function\":{\"name\":\"get\","
                       "\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}],"
                       "\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5,"
                       "\"prompt_tokens_details\":{\"cached_tokens\":1}}}";
    struct buf out, norm;
    buf_init(&out, 0);
    buf_init(&norm, 0);
    CHECK_INT(codec_responses.body(chat, strlen(chat), &out), 0);
    buf_append(&out, "", 1);
    normalize(out.data, &norm);
    buf_append(&norm, "", 1);
    CHECK_STR(norm.data, RESPONSE("completed", "\"incomplete_details\":null,\"model\":\"g\","
              "\"output\":[" MSG "\"completed\",\"content\":[" PART "\"Hi\"}],\"role\":"
              "\"assistant\"}," CALL "\"completed\",\"arguments\":\"{}\",\"call_id\":\"c1\","
              "\"name\":\"get\"}],\"usage\":{\"input_tokens\":3,\"input_tokens_details\":"
              "{\"cached_tokens\":1},\"output_tokens\":2,\"output_tokens_details\":"
              "{\"reasoning_tokens\":0},\"total_tokens\":5}}"));
    buf_reset(&out);
    CHECK_INT(codec_responses.body("{\"choices\":[]}", 14, &out), LLMUX_EPROTO);
    buf_free(&norm);
    buf_free(&out);
    CHECK(codec_responses.error == NULL); /* OpenAI's own error shape */
}

int main(void)
{
    test_request();
    test_stream();
    test_incomplete_and_failed();
    test_body();
    return check_report();
}
