/* adapters/openai_responses: an openai- or azure-kind provider configured with "responses":
 * "native", for a client that speaks the Responses API itself (codec_responses): a passthrough,
 * not a translation. See include/llmux/codec.h. The two adapters differ only in their encode.
 *
 * Request: the client's own body (req->native) with only the model value spliced (an iovec per
 * piece), to {base_path}/responses with the provider's bearer key (openai), or to Azure's v1 API,
 * {base_path}/openai/v1/responses with an api-key header (azure: the deployment name is the
 * spliced model; the v1 API takes no api-version). Custom (freeform) tools,
 * hosted tools, `include`, `store`, `previous_response_id`, reasoning items and members llmux
 * does not know go as they came.
 *
 * Stream: every event is relayed re-framed as `event: NAME\ndata: DATA\n\n` (OpenAI's framing,
 * so the client gets the bytes and sequence numbers the provider sent) and classified from its
 * name (the data's `type` when the provider sends no `event:` line): every `*.delta` is content
 * (a function call's arguments or a custom tool's input a tool call), and so is an
 * output_item.added of an item that is neither a message nor reasoning (a tool call);
 * response.completed and response.incomplete are the end (the finish, with the usage of their
 * `response`); response.failed and error are in-band errors; everything else (created,
 * in_progress, the added and done events) is preamble, held before commit. Only the end
 * events' usage, an error's message and (for a continuation) a text delta are parsed.
 *
 * Body: relayed as it came; only its `usage` member is parsed. Errors: OpenAI's shape, as the
 * openai kind reads them (the Responses API's errors are the same shape, Azure's too).
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "llmux/codec.h"
#include "llmux/errors.h"
#include "llmux/json.h"

static int responses_encode(const struct provider *p, const char *model, size_t model_len,
                            const struct canon_request *req, struct upstream_request *out)
{
    return adapter_encode_native(p, "", "authorization: Bearer %s\r\n",
                                 req->native_headers ? req->native_headers : "", model,
                                 model_len, req, out);
}

static int azure_responses_encode(const struct provider *p, const char *model, size_t model_len,
                                  const struct canon_request *req, struct upstream_request *out)
{
    return adapter_encode_native(p, "/openai/v1", "api-key: %s\r\n",
                                 req->native_headers ? req->native_headers : "", model,
                                 model_len, req, out);
}

/* The Responses API's usage object into u. */
static void responses_usage(const cJSON *us, struct usage *u)
{
    if (!cJSON_IsObject(us))
        return;
    u->prompt_tokens = adapter_json_long(us, "input_tokens");
    u->completion_tokens = adapter_json_long(us, "output_tokens");
    u->total_tokens = adapter_json_long(us, "total_tokens");
    if (!u->total_tokens)
        u->total_tokens = u->prompt_tokens + u->completion_tokens;
    u->cached_tokens = adapter_json_long(
        cJSON_GetObjectItemCaseSensitive(us, "input_tokens_details"), "cached_tokens");
    u->known = 1;
}

/* The member `key` of the data's `response` object, parsed (NULL when absent). */
static cJSON *response_member(const char *data, size_t len, const char *key)
{
    size_t vs, ve;
    if (json_top_key(data, len, "response", &vs, &ve) != 0)
        return NULL;
    return adapter_member(data + vs, ve - vs, key);
}

/* An in-band error (an `error` event's data, or response.failed's response.error) as CHUNK_ERROR;
 * another deployment may serve unless the error says the request is at fault. */
static int error_event(const cJSON *err, adapter_emit_fn emit, void *ctx)
{
    const char *code = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "code"));
    const char *msg = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(err, "message"));
    int request_fault = code && (strncmp(code, "invalid", 7) == 0 ||
                                 strcmp(code, "context_length_exceeded") == 0);
    return adapter_emit_error(msg, request_fault ? "invalid_request_error" : "server_error", code,
                              !request_fault, emit, ctx);
}

static int responses_stream_event(struct adapter_stream *s, const char *event, size_t event_len,
                                  const char *data, size_t len, adapter_emit_fn emit, void *ctx)
{
    struct adapter_native *st = s->state;
    const char *name = event;
    size_t name_len = event_len, vs, ve;
    if (!name_len && json_top_key(data, len, "type", &vs, &ve) == 0 && ve - vs >= 2) {
        name = data + vs + 1;
        name_len = ve - vs - 2;
    }
#define IS(n) (name_len == sizeof(n) - 1 && memcmp(name, n, name_len) == 0)
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.kind = CHUNK_PREAMBLE;
    cJSON *parsed = NULL;
    if (name_len > 6 && memcmp(name + name_len - 6, ".delta", 6) == 0) {
        ci.kind = CHUNK_CONTENT;
        ci.tool_call = IS("response.function_call_arguments.delta") ||
                       IS("response.custom_tool_call_input.delta");
        if (IS("response.output_text.delta") && s->req->want_text) {
            parsed = adapter_member(data, len, "delta");
            ci.text = cJSON_GetStringValue(parsed);
            ci.text_len = ci.text ? strlen(ci.text) : 0;
        }
    } else if (IS("response.output_item.added")) {
        static const char *const quiet[] = {"message", "reasoning"};
        if (adapter_member_type(data, len, "item", quiet, 2) < 0) { /* a call of some tool */
            ci.kind = CHUNK_CONTENT;
            ci.tool_call = 1;
        }
    } else if (IS("response.completed") || IS("response.incomplete")) {
        parsed = response_member(data, len, "usage");
        responses_usage(parsed, &st->usage);
        s->done = 1;
        ci.kind = CHUNK_DONE;
        ci.finish = 1;
        ci.usage = st->usage;
    } else if (IS("response.failed") || IS("error")) {
        parsed = IS("error") ? cJSON_ParseWithLength(data, len)
                             : response_member(data, len, "error");
        int rc = error_event(parsed, emit, ctx);
        cJSON_Delete(parsed);
        return rc;
    }
#undef IS
    int rc = adapter_native_relay(s, event, event_len, data, len, &ci, emit, ctx);
    cJSON_Delete(parsed);
    return rc;
}

static int responses_decode_body(const struct canon_request *req, const char *model,
                                 const char *body, size_t len, struct buf *out, struct usage *u)
{
    return adapter_native_body(body, len, u, responses_usage);
}

static enum verdict responses_decode_error(int status, const char *body, size_t len,
                                           struct buf *out, char *message, size_t message_size)
{
    return adapter_openai.decode_error(status, body, len, out, message, message_size);
}

#define RESPONSES_SHAPES                                                                           \
    .stream_open = adapter_native_open, .stream_event = responses_stream_event,                   \
    .stream_finish = adapter_native_finish, .stream_close = adapter_native_close,                 \
    .decode_body = responses_decode_body, .decode_error = responses_decode_error

const struct adapter adapter_openai_responses = {
    .kind = "openai", .encode = responses_encode, RESPONSES_SHAPES};
const struct adapter adapter_azure_responses = {
    .kind = "azure", .encode = azure_responses_encode, RESPONSES_SHAPES};
