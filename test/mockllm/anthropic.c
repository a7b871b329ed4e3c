/* anthropic.c: mockllm's Anthropic Messages wire format (POST /v1/messages).
 *
 * Non-stream: one message object. Stream: the events in the order Anthropic sends them, each
 * with `event:` and `data:` lines whose names match: message_start, content_block_start, ping,
 * content_block_delta (text_delta or input_json_delta)*, content_block_stop, message_delta,
 * message_stop; an in-stream failure is `event: error`. Errors are
 * {"type":"error","error":{"type","message"},"request_id"} and every response has a request-id
 * header. The request checks of the real API that adapters get wrong are kept: an anthropic-version
 * header, a key (x-api-key, or Authorization: Bearer as the SDK 1.x sends it), max_tokens, and a
 * final assistant text (prefill) that must not end with whitespace. A forced tool_choice is
 * obeyed as Claude obeys it: {type:tool, name} answers with a call of that tool, {type:any}
 * with a call of the first tool (both with MOCK_TOOL_ARGS as the input).
 */
#include <ctype.h>
#include <string.h>

#include "mockllm.h"

static void json_str(struct buf *b, const char *s, size_t n)
{
    buf_append(b, "\"", 1);
    buf_append_json_str(b, s, n);
    buf_append(b, "\"", 1);
}

static int invalid(struct mock_error *e, int status, const char *message)
{
    e->status = status;
    snprintf(e->message, sizeof(e->message), "%s", message);
    return -1;
}

static int anthropic_read(struct reply *r, const cJSON *body, struct mock_error *e)
{
    snprintf(r->id, sizeof(r->id), "msg_mock%llu", r->seq);
    snprintf(r->tool_id, sizeof(r->tool_id), "toolu_mock%llu", r->seq);
    if (!server_req_header(r->req, "x-api-key") && !server_req_header(r->req, "authorization"))
        return invalid(e, 401, "x-api-key header is required");
    if (!server_req_header(r->req, "anthropic-version"))
        return invalid(e, 400, "anthropic-version: header is required");
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(body, "max_tokens");
    if (!cJSON_IsNumber(mt))
        return invalid(e, 400, "max_tokens: Field required");
    if (mt->valueint < 1)
        return invalid(e, 400, "max_tokens: Input should be greater than or equal to 1");
    r->max_tokens = mt->valueint;
    const cJSON *choice = cJSON_GetObjectItemCaseSensitive(body, "tool_choice");
    const char *forced = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(choice, "type"));
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(body, "tools");
    const cJSON *name = NULL;
    if (forced && strcmp(forced, "tool") == 0)
        name = cJSON_GetObjectItemCaseSensitive(choice, "name");
    else if (forced && strcmp(forced, "any") == 0)
        name = cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(tools, 0), "name");
    if (!r->s.tool[0] && cJSON_IsString(name)) /* a scripted tool= wins */
        snprintf(r->s.tool, sizeof(r->s.tool), "%s", name->valuestring);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages");
    if (!cJSON_IsArray(msgs))
        return invalid(e, 400, "messages: Field required");
    struct buf text;
    buf_init(&text, 0);
    int how = mock_find_continuation(msgs, "assistant", &text);
    size_t n = buf_size(&text);
    int rc = 0;
    if (how == 1 && !r->s.prefill)
        rc = invalid(e, 400,
                     "This model does not support assistant message prefill. The "
                     "conversation must end with a user message.");
    else if (how == 1 && n > 0 && isspace((unsigned char)buf_head(&text)[n - 1]))
        rc = invalid(e, 400,
                     "messages: final assistant content cannot end with trailing whitespace");
    else if (how)
        mock_continue_from(r, buf_head(&text), n);
    buf_free(&text);
    return rc;
}

static const char *error_type(int status)
{
    switch (status) {
    case 401: return "authentication_error";
    case 402: return "billing_error";
    case 403: return "permission_error";
    case 404: return "not_found_error";
    case 413: return "request_too_large";
    case 429: return "rate_limit_error";
    case 504: return "timeout_error";
    case 529: return "overloaded_error";
    default: return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

/* {"type":"error","error":{...}}, without the closing brace (the HTTP body adds request_id). */
static void error_object(const struct mock_error *e, struct buf *out)
{
    buf_append_str(out, "{\"type\":\"error\",\"error\":{\"type\":");
    const char *type = e->type ? e->type : error_type(e->status);
    json_str(out, type, strlen(type));
    buf_append_str(out, ",\"message\":");
    json_str(out, e->message, strlen(e->message));
    buf_append_str(out, "}");
}

static void anthropic_error_body(const struct reply *r, const struct mock_error *e, struct buf *out)
{
    error_object(e, out);
    buf_printf(out, ",\"request_id\":\"%s\"}", r->request_id);
}

static void anthropic_context_error(const struct reply *r, int m, int n, struct mock_error *e)
{
    e->status = 400;
    snprintf(e->message, sizeof(e->message), "prompt is too long: %d tokens > %d maximum", m, n);
}

static const char *stop_reason(const struct reply *r)
{
    return mock_is_tool(r) ? "tool_use" : r->capped ? "max_tokens" : "end_turn";
}

/* The content block, with its text (or tool input) when `with_content`, else empty. */
static void content_block(const struct reply *r, int with_content, struct buf *b)
{
    struct buf t;
    buf_init(&t, 0);
    if (with_content)
        mock_answer_text(r, &t);
    if (mock_is_tool(r)) {
        buf_printf(b, "{\"type\":\"tool_use\",\"id\":\"%s\",\"name\":", r->tool_id);
        json_str(b, r->s.tool, strlen(r->s.tool));
        buf_printf(b, ",\"input\":%.*s}", with_content ? (int)buf_size(&t) : 2,
                   with_content ? buf_head(&t) : "{}");
    } else {
        buf_append_str(b, "{\"type\":\"text\",\"text\":");
        json_str(b, buf_head(&t), buf_size(&t));
        buf_append_str(b, "}");
    }
    buf_free(&t);
}

#define THOUGHT "Let me think about this."
#define SIGNATURE "mocksig-EqQBCkgIARABGAIiQL"

/* With the thinking script: the thinking block the answer opens with (whole when `done`). */
static void thinking_block(const struct reply *r, int done, struct buf *b)
{
    buf_printf(b, "{\"type\":\"thinking\",\"thinking\":\"%s\",\"signature\":\"%s\"}",
               done ? THOUGHT : "", done ? SIGNATURE : "");
}

/* The index of the answer's own content block. */
static int main_index(const struct reply *r)
{
    return r->s.thinking ? 1 : 0;
}

/* The message object; `done`: with its content, stop reason and final usage (else as in
 * message_start: empty, no stop reason yet). */
static void message(const struct reply *r, int done, struct buf *b)
{
    buf_printf(b, "{\"id\":\"%s\",\"type\":\"message\",\"role\":\"assistant\",\"model\":", r->id);
    json_str(b, r->model, strlen(r->model));
    buf_append_str(b, ",\"content\":[");
    if (done && r->s.thinking) {
        thinking_block(r, 1, b);
        buf_append_str(b, ",");
    }
    if (done)
        content_block(r, 1, b);
    if (done)
        buf_printf(b, "],\"stop_reason\":\"%s\",", stop_reason(r));
    else
        buf_append_str(b, "],\"stop_reason\":null,");
    buf_printf(b,
               "\"stop_sequence\":null,\"usage\":{\"input_tokens\":%d,"
               "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,"
               "\"output_tokens\":%d}}",
               r->prompt_tokens, done ? r->pieces : 1);
}

static void anthropic_full(const struct reply *r, struct buf *b)
{
    message(r, 1, b);
}

static void event(struct reply *r, const char *name, struct buf *data)
{
    mock_sse(r, name, buf_head(data), buf_size(data));
    buf_reset(data);
}

static void anthropic_stream_head(struct reply *r)
{
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, "{\"type\":\"message_start\",\"message\":");
    message(r, 0, &b);
    buf_append_str(&b, "}");
    event(r, "message_start", &b);
    if (r->s.thinking) {
        buf_append_str(&b, "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":");
        thinking_block(r, 0, &b);
        buf_append_str(&b, "}");
        event(r, "content_block_start", &b);
        buf_append_str(&b, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                           "{\"type\":\"thinking_delta\",\"thinking\":\"" THOUGHT "\"}}");
        event(r, "content_block_delta", &b);
        buf_append_str(&b, "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                           "{\"type\":\"signature_delta\",\"signature\":\"" SIGNATURE "\"}}");
        event(r, "content_block_delta", &b);
        buf_append_str(&b, "{\"type\":\"content_block_stop\",\"index\":0}");
        event(r, "content_block_stop", &b);
    }
    buf_printf(&b, "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":",
               main_index(r));
    content_block(r, 0, &b);
    buf_append_str(&b, "}");
    event(r, "content_block_start", &b);
    buf_append_str(&b, "{\"type\":\"ping\"}");
    event(r, "ping", &b);
    buf_free(&b);
}

static void anthropic_stream_piece(struct reply *r, int i)
{
    struct buf t, b;
    buf_init(&t, 0);
    buf_init(&b, 0);
    mock_piece_text(r, i, &t);
    buf_printf(&b,
               "{\"type\":\"content_block_delta\",\"index\":%d,\"delta\":{\"type\":\"%s\",\"%s\":",
               main_index(r), mock_is_tool(r) ? "input_json_delta" : "text_delta",
               mock_is_tool(r) ? "partial_json" : "text");
    json_str(&b, buf_head(&t), buf_size(&t));
    buf_append_str(&b, "}}");
    event(r, "content_block_delta", &b);
    buf_free(&t);
    buf_free(&b);
}

static void anthropic_stream_end(struct reply *r)
{
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b, "{\"type\":\"content_block_stop\",\"index\":%d}", main_index(r));
    event(r, "content_block_stop", &b);
    buf_printf(
        &b,
        "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"%s\",\"stop_sequence\":null},"
        "\"usage\":{\"output_tokens\":%d}}",
        stop_reason(r), r->sent);
    event(r, "message_delta", &b);
    buf_append_str(&b, "{\"type\":\"message_stop\"}");
    event(r, "message_stop", &b);
    buf_free(&b);
}

static void anthropic_stream_error(struct reply *r, const struct mock_error *e)
{
    struct buf b;
    buf_init(&b, 0);
    error_object(e, &b);
    buf_append_str(&b, "}");
    event(r, "error", &b);
    buf_free(&b);
}

const struct wire wire_anthropic = {
    .read = anthropic_read,
    .error_body = anthropic_error_body,
    .context_error = anthropic_context_error,
    .full = anthropic_full,
    .stream_head = anthropic_stream_head,
    .stream_piece = anthropic_stream_piece,
    .stream_end = anthropic_stream_end,
    .stream_error = anthropic_stream_error,
    .stream_error_status = 529,
    .garbage_body = "{\"id\":\"msg_broken\",\"type\":\"message\",\"content\":[",
    .garbage_event =
        "event: content_block_delta\n"
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_del\n\n",
    .sse_eol = "\n",
    .request_id = 1,
};
