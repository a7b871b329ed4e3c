/* responses.c: mockllm's OpenAI Responses API wire format (POST /v1/responses), the upstream of
 * llmux's native Responses passthrough ("responses": "native").
 *
 * Non-stream: one Response object (`object: "response"`, status completed, or incomplete with
 * incomplete_details.reason max_output_tokens when max_output_tokens caps the answer), its
 * output one item: a message with one output_text part, or under the `tool` script a
 * function_call (a custom_tool_call with a string `input` when the request declares that tool
 * with type "custom", as Codex's apply_patch is), and the usage in the Responses shape. Stream:
 * the documented lifecycle, each event with `event:` equal to its data's `type` and a
 * sequence_number from 0: response.created, response.in_progress, output_item.added
 * (content_part.added for a message), one delta per piece (output_text.delta,
 * function_call_arguments.delta or custom_tool_call_input.delta), the matching .done events,
 * output_item.done, then response.completed or response.incomplete with the whole output and
 * the usage. error_after ends with response.failed (error.code server_error, or error_type).
 * Errors are OpenAI's shape (openai.c).
 */
#include <string.h>

#include "mockllm.h"

static int responses_read(struct reply *r, const cJSON *body, struct mock_error *e)
{
    snprintf(r->id, sizeof(r->id), "resp_mock%llu", r->seq);
    snprintf(r->tool_id, sizeof(r->tool_id), "call_mock%llu", r->seq);
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(body, "max_output_tokens");
    if (cJSON_IsNumber(mt))
        r->max_tokens = mt->valueint > 0 ? mt->valueint : 0;
    const cJSON *t;
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(body, "tools"))
    {
        const char *type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "type"));
        const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(t, "name"));
        if (type && name && strcmp(type, "custom") == 0 && strcmp(name, r->s.tool) == 0)
            r->custom = 1;
    }
    return 0;
}

static void responses_context_error(const struct reply *r, int m, int n, struct mock_error *e)
{
    mock_openai_context_error(r, m, n, e);
    e->param = "input";
}

static const char *status_of(const struct reply *r)
{
    return r->capped && !mock_is_tool(r) ? "incomplete" : "completed";
}

/* The output item; text 0: as added (empty content, arguments or input). */
static void item(const struct reply *r, const char *status, int text, struct buf *b)
{
    if (!mock_is_tool(r)) {
        buf_printf(b, "{\"id\":\"msg_mock%llu\",\"type\":\"message\",\"status\":\"%s\",\"content\":[",
                   r->seq, status);
        if (text) {
            buf_append_str(b, "{\"type\":\"output_text\",\"annotations\":[],\"logprobs\":[],"
                              "\"text\":\"");
            mock_text_json(r, -1, b);
            buf_append_str(b, "\"}");
        }
        buf_append_str(b, "],\"role\":\"assistant\"}");
        return;
    }
    buf_printf(b, "{\"id\":\"%s_mock%llu\",\"type\":\"%s\",\"status\":\"%s\",\"%s\":\"",
               r->custom ? "ctc" : "fc", r->seq, r->custom ? "custom_tool_call" : "function_call",
               status, r->custom ? "input" : "arguments");
    if (text)
        mock_text_json(r, -1, b);
    buf_printf(b, "\",\"call_id\":\"%s\",\"name\":", r->tool_id);
    mock_json_str(b, r->s.tool);
    buf_append_str(b, "}");
}

/* The Response object; output 0: [] and no usage (in progress), else the item and the usage of
 * `completion` output tokens. error_code NULL: no error. */
static void response(const struct reply *r, const char *status, int output, int completion,
                     const char *error_code, const char *error_message, struct buf *b)
{
    buf_printf(b, "{\"id\":\"%s\",\"object\":\"response\",\"created_at\":%lld,\"status\":\"%s\","
                  "\"error\":",
               r->id, r->created, status);
    if (error_code) {
        buf_append_str(b, "{\"code\":");
        mock_json_str(b, error_code);
        buf_append_str(b, ",\"message\":");
        mock_json_str(b, error_message);
        buf_append_str(b, "}");
    } else {
        buf_append_str(b, "null");
    }
    buf_append_str(b, ",\"incomplete_details\":");
    buf_append_str(b, output && strcmp(status, "incomplete") == 0
                          ? "{\"reason\":\"max_output_tokens\"}"
                          : "null");
    buf_append_str(b, ",\"instructions\":null,\"model\":");
    mock_json_str(b, r->model);
    buf_append_str(b, ",\"output\":[");
    if (output)
        item(r, status, 1, b);
    buf_append_str(b, "],\"parallel_tool_calls\":true,\"tool_choice\":\"auto\",\"tools\":[],"
                      "\"usage\":");
    if (output) {
        int cached = r->s.cached < r->prompt_tokens ? r->s.cached : r->prompt_tokens;
        buf_printf(b,
                   "{\"input_tokens\":%d,\"input_tokens_details\":{\"cached_tokens\":%d},"
                   "\"output_tokens\":%d,\"output_tokens_details\":{\"reasoning_tokens\":0},"
                   "\"total_tokens\":%d}",
                   r->prompt_tokens, cached > 0 ? cached : 0, completion,
                   r->prompt_tokens + completion);
    } else {
        buf_append_str(b, "null");
    }
    buf_append_str(b, "}");
}

static void responses_full(const struct reply *r, struct buf *b)
{
    response(r, status_of(r), 1, r->pieces, NULL, NULL, b);
}

/* Starts an event's data: `{"type":TYPE,"sequence_number":N` (the caller closes it). */
static void open_event(struct reply *r, struct buf *b, const char *type)
{
    buf_reset(b);
    buf_printf(b, "{\"type\":\"%s\",\"sequence_number\":%ld", type, r->events++);
}

static void send_event(struct reply *r, struct buf *b, const char *type)
{
    buf_append_str(b, "}");
    mock_sse(r, type, buf_head(b), buf_size(b));
}

/* `,"item_id":..,"output_index":0` (and `,"content_index":0` for a message's part). */
static void item_ref(const struct reply *r, struct buf *b)
{
    buf_printf(b, ",\"item_id\":\"%s_mock%llu\",\"output_index\":0",
               !mock_is_tool(r) ? "msg" : r->custom ? "ctc" : "fc", r->seq);
    if (!mock_is_tool(r))
        buf_append_str(b, ",\"content_index\":0");
}

/* The piece events' type prefix: what the item streams. */
static const char *stream_kind(const struct reply *r)
{
    return !mock_is_tool(r) ? "response.output_text"
           : r->custom      ? "response.custom_tool_call_input"
                            : "response.function_call_arguments";
}

static void lifecycle(struct reply *r, struct buf *b, const char *type, const char *status)
{
    open_event(r, b, type);
    buf_append_str(b, ",\"response\":");
    response(r, status, 0, 0, NULL, NULL, b);
    send_event(r, b, type);
}

static void responses_stream_head(struct reply *r)
{
    struct buf b;
    buf_init(&b, 0);
    lifecycle(r, &b, "response.created", "in_progress");
    lifecycle(r, &b, "response.in_progress", "in_progress");
    open_event(r, &b, "response.output_item.added");
    buf_append_str(&b, ",\"output_index\":0,\"item\":");
    item(r, "in_progress", 0, &b);
    send_event(r, &b, "response.output_item.added");
    if (!mock_is_tool(r)) {
        open_event(r, &b, "response.content_part.added");
        item_ref(r, &b);
        buf_append_str(&b, ",\"part\":{\"type\":\"output_text\",\"annotations\":[],"
                           "\"logprobs\":[],\"text\":\"\"}");
        send_event(r, &b, "response.content_part.added");
    }
    buf_free(&b);
}

/* The item's own text event: `<kind>.delta` with piece i, or `<kind>.done` (i < 0) with the
 * whole text, arguments or input. */
static void text_event(struct reply *r, int i, struct buf *b)
{
    char type[64];
    snprintf(type, sizeof(type), "%s.%s", stream_kind(r), i >= 0 ? "delta" : "done");
    open_event(r, b, type);
    item_ref(r, b);
    buf_printf(b, ",\"%s\":\"", i >= 0 ? "delta" : !mock_is_tool(r) ? "text"
                                            : r->custom        ? "input"
                                                               : "arguments");
    mock_text_json(r, i, b);
    buf_append_str(b, mock_is_tool(r) ? "\"" : "\",\"logprobs\":[]");
    send_event(r, b, type);
}

static void responses_stream_piece(struct reply *r, int i)
{
    struct buf b;
    buf_init(&b, 0);
    text_event(r, i, &b);
    buf_free(&b);
}

static void responses_stream_end(struct reply *r)
{
    struct buf b;
    buf_init(&b, 0);
    text_event(r, -1, &b);
    const char *status = status_of(r);
    if (!mock_is_tool(r)) {
        open_event(r, &b, "response.content_part.done");
        item_ref(r, &b);
        buf_append_str(&b, ",\"part\":{\"type\":\"output_text\",\"annotations\":[],"
                           "\"logprobs\":[],\"text\":\"");
        mock_text_json(r, -1, &b);
        buf_append_str(&b, "\"}");
        send_event(r, &b, "response.content_part.done");
    }
    open_event(r, &b, "response.output_item.done");
    buf_append_str(&b, ",\"output_index\":0,\"item\":");
    item(r, status, 1, &b);
    send_event(r, &b, "response.output_item.done");
    const char *end = strcmp(status, "incomplete") == 0 ? "response.incomplete"
                                                        : "response.completed";
    open_event(r, &b, end);
    buf_append_str(&b, ",\"response\":");
    response(r, status, 1, r->sent, NULL, NULL, &b);
    send_event(r, &b, end);
    buf_free(&b);
}

static void responses_stream_error(struct reply *r, const struct mock_error *e)
{
    struct buf b;
    buf_init(&b, 0);
    open_event(r, &b, "response.failed");
    buf_append_str(&b, ",\"response\":");
    response(r, "failed", 0, 0, e->type ? e->type : "server_error", e->message, &b);
    send_event(r, &b, "response.failed");
    buf_free(&b);
}

const struct wire wire_responses = {
    .read = responses_read,
    .error_body = mock_openai_error_body,
    .context_error = responses_context_error,
    .full = responses_full,
    .stream_head = responses_stream_head,
    .stream_piece = responses_stream_piece,
    .stream_end = responses_stream_end,
    .stream_error = responses_stream_error,
    .stream_error_status = 500,
    .garbage_body = "{\"id\":\"broken\",\"output\":[",
    .garbage_event = "event: response.output_text.delta\ndata: {\"delta\":\n\n",
    .sse_eol = "\n",
};
