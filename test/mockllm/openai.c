/* openai.c: mockllm's OpenAI wire format (also served on Azure OpenAI's deployment paths, where
 * the model reported is the deployment's name): chat completions, completions, embeddings, their
 * SSE chunks ending with `data: [DONE]`, tool calls, and errors as
 * {"error":{"message","type","param","code"}}.
 */
#include <string.h>

#include "mockllm.h"

void mock_json_str(struct buf *b, const char *s)
{
    buf_append(b, "\"", 1);
    buf_append_json_str(b, s, strlen(s));
    buf_append(b, "\"", 1);
}

static void json_str_or_null(struct buf *b, const char *s)
{
    if (s)
        mock_json_str(b, s);
    else
        buf_append_str(b, "null");
}

/* The raw text of piece i (or of the whole answer, i < 0), as the inside of a JSON string. */
void mock_text_json(const struct reply *r, int i, struct buf *out)
{
    struct buf t;
    buf_init(&t, 0);
    if (i < 0)
        mock_answer_text(r, &t);
    else
        mock_piece_text(r, i, &t);
    buf_append_json_str(out, buf_head(&t), buf_size(&t));
    buf_free(&t);
}

static const char *finish_reason(const struct reply *r)
{
    return mock_is_tool(r) ? "tool_calls" : r->capped ? "length" : "stop";
}

static void usage_json(const struct reply *r, int completion, struct buf *b)
{
    buf_printf(b, "{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d",
               r->prompt_tokens, completion, r->prompt_tokens + completion);
    if (r->s.cached > 0)
        buf_printf(b, ",\"prompt_tokens_details\":{\"cached_tokens\":%d}",
                   r->s.cached < r->prompt_tokens ? r->s.cached : r->prompt_tokens);
    buf_append_str(b, "}");
}

static int openai_read(struct reply *r, const cJSON *body, struct mock_error *e)
{
    snprintf(r->id, sizeof(r->id), "%s-mock-%llu", r->api == API_CHAT ? "chatcmpl" : "cmpl",
             r->seq);
    snprintf(r->tool_id, sizeof(r->tool_id), "call_mock%llu", r->seq);
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(body, "stream_options");
    r->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(body, "max_tokens");
    if (!cJSON_IsNumber(mt))
        mt = cJSON_GetObjectItemCaseSensitive(body, "max_completion_tokens");
    if (cJSON_IsNumber(mt))
        r->max_tokens = mt->valueint > 0 ? mt->valueint : 0;
    const cJSON *input = cJSON_GetObjectItemCaseSensitive(body, "input");
    r->inputs = cJSON_IsArray(input) ? cJSON_GetArraySize(input) : 1;
    if (r->api == API_CHAT) {
        struct buf text;
        buf_init(&text, 0);
        int how = mock_find_continuation(cJSON_GetObjectItemCaseSensitive(body, "messages"),
                                         "assistant", &text);
        if (how == 2 || (how == 1 && r->s.prefill))
            mock_continue_from(r, buf_head(&text), buf_size(&text));
        buf_free(&text);
    }
    return 0;
}

void mock_openai_error_body(const struct reply *r, const struct mock_error *e, struct buf *out)
{
    const char *type = e->type            ? e->type
                       : e->status == 429 ? "rate_limit_error"
                       : e->status >= 500 ? "server_error"
                       : e->status == 401 ? "authentication_error"
                                          : "invalid_request_error";
    const char *code = e->code ? e->code : e->status == 429 ? "rate_limit_exceeded" : NULL;
    buf_append_str(out, "{\"error\":{\"message\":");
    mock_json_str(out, e->message);
    buf_append_str(out, ",\"type\":");
    mock_json_str(out, type);
    buf_append_str(out, ",\"param\":");
    json_str_or_null(out, e->param);
    buf_append_str(out, ",\"code\":");
    json_str_or_null(out, code);
    buf_append_str(out, "}}");
}

void mock_openai_context_error(const struct reply *r, int m, int n, struct mock_error *e)
{
    e->status = 400;
    e->type = "invalid_request_error";
    e->code = "context_length_exceeded";
    e->param = r->api == API_CHAT ? "messages" : r->api == API_COMPLETIONS ? "prompt" : "input";
    snprintf(e->message, sizeof(e->message),
             "This model's maximum context length is %d tokens. However, your messages resulted in "
             "%d tokens. Please reduce the length of the messages.",
             n, m);
}

static void full_chat(const struct reply *r, struct buf *b)
{
    buf_printf(b,
               "{\"id\":\"%s\",\"object\":\"chat.completion\",\"created\":%lld,\"model\":", r->id,
               r->created);
    mock_json_str(b, r->model);
    buf_append_str(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",");
    if (mock_is_tool(r)) {
        buf_printf(b,
                   "\"content\":null,\"tool_calls\":[{\"id\":\"%s\",\"type\":\"function\","
                   "\"function\":{\"name\":",
                   r->tool_id);
        mock_json_str(b, r->s.tool);
        buf_append_str(b, ",\"arguments\":\"");
        mock_text_json(r, -1, b);
        buf_append_str(b, "\"}}],");
    } else {
        buf_append_str(b, "\"content\":\"");
        mock_text_json(r, -1, b);
        buf_append_str(b, "\",");
    }
    buf_printf(b, "\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"%s\"}],\"usage\":",
               finish_reason(r));
    usage_json(r, r->pieces, b);
    buf_append_str(b, ",\"system_fingerprint\":\"fp_mock\"}");
}

static void openai_full(const struct reply *r, struct buf *b)
{
    if (r->api == API_CHAT) {
        full_chat(r, b);
    } else if (r->api == API_COMPLETIONS) {
        buf_printf(b, "{\"id\":\"%s\",\"object\":\"text_completion\",\"created\":%lld,\"model\":",
                   r->id, r->created);
        mock_json_str(b, r->model);
        buf_append_str(b, ",\"choices\":[{\"index\":0,\"text\":\"");
        mock_text_json(r, -1, b);
        buf_printf(b,
                   "\",\"logprobs\":null,\"finish_reason\":\"%s\"}],\"usage\":", finish_reason(r));
        usage_json(r, r->pieces, b);
        buf_append_str(b, "}");
    } else {
        buf_append_str(b, "{\"object\":\"list\",\"data\":[");
        for (int i = 0; i < r->inputs; i++) {
            buf_printf(b, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":[", i ? "," : "",
                       i);
            mock_embedding(i, b);
            buf_append_str(b, "]}");
        }
        buf_append_str(b, "],\"model\":");
        mock_json_str(b, r->model);
        buf_printf(b, ",\"usage\":{\"prompt_tokens\":%d,\"total_tokens\":%d}}", r->inputs * 4,
                   r->inputs * 4);
    }
}

/* One chunk: `choice` holds the inside of choices[0] after its index (delta or text, finish). */
static void send_chunk(struct reply *r, const struct buf *choice)
{
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", r->id,
               r->api == API_CHAT ? "chat.completion.chunk" : "text_completion", r->created);
    mock_json_str(&b, r->model);
    if (r->api == API_CHAT)
        buf_append_str(&b, ",\"system_fingerprint\":\"fp_mock\"");
    buf_printf(&b, ",\"choices\":[{\"index\":0,%.*s}]", (int)buf_size(choice), buf_head(choice));
    if (r->include_usage)
        buf_append_str(&b, ",\"usage\":null");
    if (r->s.stamp) /* taken last, just before the write */
        buf_printf(&b, ",\"mock_ts\":%llu", (unsigned long long)uv_hrtime());
    buf_append_str(&b, "}");
    mock_sse(r, NULL, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

static void openai_stream_head(struct reply *r)
{
    struct buf c;
    buf_init(&c, 0);
    if (r->api != API_CHAT) {
        buf_append_str(&c, "\"text\":\"\",\"logprobs\":null,\"finish_reason\":null");
    } else if (mock_is_tool(r)) {
        buf_printf(
            &c,
            "\"delta\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"index\":0,"
            "\"id\":\"%s\",\"type\":\"function\",\"function\":{\"name\":",
            r->tool_id);
        mock_json_str(&c, r->s.tool);
        buf_append_str(&c, ",\"arguments\":\"\"}}],\"refusal\":null},\"logprobs\":null,"
                           "\"finish_reason\":null");
    } else {
        buf_append_str(&c, "\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},"
                           "\"logprobs\":null,\"finish_reason\":null");
    }
    send_chunk(r, &c);
    buf_free(&c);
}

static void openai_stream_piece(struct reply *r, int i)
{
    struct buf c;
    buf_init(&c, 0);
    if (r->api != API_CHAT)
        buf_append_str(&c, "\"text\":\"");
    else if (mock_is_tool(r))
        buf_append_str(&c,
                       "\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"");
    else
        buf_append_str(&c, "\"delta\":{\"content\":\"");
    mock_text_json(r, i, &c);
    if (r->api != API_CHAT)
        buf_append_str(&c, "\"");
    else
        buf_append_str(&c, mock_is_tool(r) ? "\"}}]}" : "\"}");
    buf_append_str(&c, ",\"logprobs\":null,\"finish_reason\":null");
    send_chunk(r, &c);
    buf_free(&c);
}

static void openai_stream_end(struct reply *r)
{
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "%s,\"logprobs\":null,\"finish_reason\":\"%s\"",
               r->api == API_CHAT ? "\"delta\":{}" : "\"text\":\"\"", finish_reason(r));
    send_chunk(r, &b);
    if (r->include_usage) {
        buf_reset(&b);
        buf_printf(&b, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":", r->id,
                   r->api == API_CHAT ? "chat.completion.chunk" : "text_completion", r->created);
        mock_json_str(&b, r->model);
        if (r->api == API_CHAT)
            buf_append_str(&b, ",\"system_fingerprint\":\"fp_mock\"");
        buf_append_str(&b, ",\"choices\":[],\"usage\":");
        usage_json(r, r->sent, &b);
        buf_append_str(&b, "}");
        mock_sse(r, NULL, buf_head(&b), buf_size(&b));
    }
    buf_free(&b);
    mock_sse(r, NULL, "[DONE]", 6);
}

static void openai_stream_error(struct reply *r, const struct mock_error *e)
{
    struct buf b;
    buf_init(&b, 0);
    mock_openai_error_body(r, e, &b);
    mock_sse(r, NULL, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

const struct wire wire_openai = {
    .read = openai_read,
    .error_body = mock_openai_error_body,
    .context_error = mock_openai_context_error,
    .full = openai_full,
    .stream_head = openai_stream_head,
    .stream_piece = openai_stream_piece,
    .stream_end = openai_stream_end,
    .stream_error = openai_stream_error,
    .stream_error_status = 500,
    .garbage_body = "{\"id\":\"broken\",\"choices\":[",
    .garbage_event = "data: {\"choices\":[{\"delta\":{\"content\":\n\n",
    .sse_eol = "\n",
};
