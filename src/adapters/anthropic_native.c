/* adapters/anthropic_native: the anthropic kind for a client that speaks the Messages API
 * itself (codec_messages): a passthrough, not a translation. See include/llmux/codec.h.
 *
 * Request: the client's own body (req->native) with only the model value spliced (an iovec
 * per piece, as the openai kind does), to {base_path}{req->native_path}, with x-api-key, the
 * client's anthropic-version (else the provider's) and anthropic-beta (req->native_headers).
 * Thinking blocks with their signatures, cache_control and members llmux does not know go as
 * they came.
 *
 * Stream: every event is relayed re-framed as `event: NAME\ndata: DATA\n\n` (Anthropic's own
 * framing, so the client gets the bytes the provider sent) and classified from its name alone:
 * message_start, ping, a content_block_start of a text or thinking block, content_block_stop
 * and unknown events are preamble (held before commit); deltas and a tool_use start are
 * content; message_delta is the finish; message_stop the end ([DONE] for the exchange); error
 * an in-band error. Only message_start and message_delta's usage (and, for a continuation, a
 * text delta's text) are parsed.
 *
 * Body: relayed as it came; only its `usage` member is parsed. Errors: the provider's body when
 * it is Anthropic's error shape, else one in that shape.
 */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/codec.h"
#include "llmux/errors.h"
#include "llmux/json.h"

#define DEFAULT_VERSION "2023-06-01"

static int native_encode(const struct provider *p, const char *model, size_t model_len,
                         const struct canon_request *req, struct upstream_request *out)
{
    const char *h = req->native_headers ? req->native_headers : "";
    struct buf extra;
    buf_init(&extra, 0);
    int rc = 0;
    if (strncmp(h, "anthropic-version:", 18) != 0) /* api puts the client's version first */
        rc = buf_printf(&extra, "anthropic-version: %s\r\n",
                        p->api_version && p->api_version[0] ? p->api_version : DEFAULT_VERSION);
    if (!rc)
        rc = buf_printf(&extra, "%s", h);
    if (!rc)
        rc = adapter_encode_native(p, "", "x-api-key: %s\r\n", buf_head(&extra), model, model_len,
                                   req, out);
    else
        adapter_encode_init(out);
    buf_free(&extra);
    return rc;
}

static int name_is(const char *event, size_t len, const char *name)
{
    return strlen(name) == len && memcmp(event, name, len) == 0;
}

static int native_stream_event(struct adapter_stream *s, const char *event, size_t event_len,
                               const char *data, size_t len, adapter_emit_fn emit, void *ctx)
{
    struct adapter_native *st = s->state;
    struct chunk_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.kind = CHUNK_PREAMBLE;
    cJSON *parsed = NULL;
    if (name_is(event, event_len, "content_block_delta")) {
        static const char *const deltas[] = {"text_delta", "input_json_delta"};
        int t = adapter_member_type(data, len, "delta", deltas, 2);
        ci.kind = CHUNK_CONTENT;
        ci.tool_call = t == 1;
        if (t == 0 && s->req->want_text) {
            parsed = adapter_member(data, len, "delta");
            ci.text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(parsed, "text"));
            ci.text_len = ci.text ? strlen(ci.text) : 0;
        }
    } else if (name_is(event, event_len, "content_block_start")) {
        static const char *const tools[] = {"tool_use", "server_tool_use", "mcp_tool_use"};
        if (adapter_member_type(data, len, "content_block", tools, 3) >= 0) {
            ci.kind = CHUNK_CONTENT;
            ci.tool_call = 1;
        }
    } else if (name_is(event, event_len, "message_start")) {
        parsed = adapter_member(data, len, "message");
        if (!cJSON_IsObject(parsed)) {
            cJSON_Delete(parsed);
            return LLMUX_EPROTO;
        }
        adapter_copy_str(ci.id, sizeof(ci.id), cJSON_GetObjectItemCaseSensitive(parsed, "id"));
        adapter_copy_str(ci.model, sizeof(ci.model),
                         cJSON_GetObjectItemCaseSensitive(parsed, "model"));
        adapter_anthropic_usage(cJSON_GetObjectItemCaseSensitive(parsed, "usage"), &st->usage);
    } else if (name_is(event, event_len, "message_delta")) {
        parsed = adapter_member(data, len, "usage");
        adapter_anthropic_usage(parsed, &st->usage);
        ci.kind = CHUNK_CONTENT;
        ci.finish = 1;
        ci.usage = st->usage;
    } else if (name_is(event, event_len, "message_stop")) {
        s->done = 1;
        ci.kind = CHUNK_DONE;
        ci.usage = st->usage;
    } else if (name_is(event, event_len, "error")) {
        parsed = cJSON_ParseWithLength(data, len);
        int rc = adapter_anthropic_error_event(cJSON_GetObjectItemCaseSensitive(parsed, "error"),
                                               emit, ctx);
        cJSON_Delete(parsed);
        return rc;
    }
    /* content_block_stop, ping and event types added later: preamble (held before commit) */
    int rc = adapter_native_relay(s, event, event_len, data, len, &ci, emit, ctx);
    cJSON_Delete(parsed);
    return rc;
}

static int native_decode_body(const struct canon_request *req, const char *model,
                              const char *body, size_t len, struct buf *out, struct usage *u)
{
    return adapter_native_body(body, len, u, adapter_anthropic_usage);
}

static enum verdict native_decode_error(int status, const char *body, size_t len,
                                        struct buf *out, char *message, size_t message_size)
{
    struct buf openai;
    buf_init(&openai, 0);
    enum verdict v = adapter_anthropic.decode_error(status, body, len, &openai, message,
                                                    message_size);
    size_t vs, ve;
    int shaped = json_top_key(body, len, "type", &vs, &ve) == 0 && ve - vs == 7 &&
                 memcmp(body + vs, "\"error\"", 7) == 0;
    if (!shaped) /* not Anthropic's error shape (a proxy's page...): the client gets one */
        codec_messages.error(status, NULL, buf_head(&openai), buf_size(&openai), out);
    buf_free(&openai);
    return v;
}

const struct adapter adapter_anthropic_native = {
    .kind = "anthropic",
    .prefill = 1,
    .encode = native_encode,
    .stream_open = adapter_native_open,
    .stream_event = native_stream_event,
    .stream_finish = adapter_native_finish,
    .stream_close = adapter_native_close,
    .decode_body = native_decode_body,
    .decode_error = native_decode_error,
};
