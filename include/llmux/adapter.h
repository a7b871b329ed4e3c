/* adapter: per provider kind, the translation between the canonical (OpenAI) request and
 * response shapes and the provider's wire format.
 *
 * The exchange only ever talks to `struct adapter` (one per kind, adapter_for()); it never
 * parses provider bytes itself. The openai kind is a near-passthrough: the request body is
 * forwarded with only the `model` value spliced in, and stream
 * events are forwarded as they are, after being inspected for content and usage. Other kinds
 * (src/adapters/<kind>.c) re-encode the request and translate responses and stream events into
 * OpenAI's shapes.
 *
 * Stream decoding is incremental: the exchange feeds every upstream SSE event to
 * adapter->stream_event(), which calls `emit` zero or more times, once per OpenAI chunk the
 * client should receive, each with its chunk_info (content or preamble, usage, error); an event
 * that cannot be decoded makes stream_event return LLMUX_EPROTO instead. At the
 * end of the upstream body the exchange calls stream_finish(), which says whether the stream
 * completed (and emits the final "[DONE]" for kinds that have none of their own).
 */
#ifndef LLMUX_ADAPTER_H
#define LLMUX_ADAPTER_H

#include <stddef.h>
#include <uv.h>

#include "llmux/buf.h"
#include "llmux/config.h"
#include "llmux/json.h"

enum api_endpoint { API_CHAT, API_COMPLETIONS, API_EMBEDDINGS };

/* The client's request, parsed once by the api module. Borrowed by everything downstream. */
struct client_codec;

struct canon_request {
    enum api_endpoint endpoint;
    const char *body; /* JSON from the client (an object), without llmux's own members */
    size_t body_len;
    size_t model_start, model_end; /* byte span of the "model" value (with quotes) in body */
    char *owned; /* when set, `body` is this malloc'd re-encoding, freed by the exchange */
    int stream;
    int include_usage;
    const char *request_id;
    uint64_t t_recv_ns; /* uv_hrtime() when the api module got the request */
    /* Mid-stream continuation: text already delivered to the client that the upstream must
     * continue (NULL when none). With `prefill` the adapter sends it as a trailing assistant
     * message (providers that continue such a prefix); otherwise as an assistant message
     * followed by a user message asking to continue exactly where it stopped. */
    const char *prefix;
    size_t prefix_len;
    int prefill;
    /* A client API other than chat (include/llmux/codec.h); NULL for chat. `body` is then the
     * canonical translation of the client's body, or NULL when it cannot be translated (`why`
     * says which member, for the client's 400); `native` is the client's own body, sent by the
     * codec's passthrough adapter to providers of the client's family, to native_path, with
     * native_headers (header lines of the client's to forward, each ending in CRLF). */
    const struct client_codec *codec;
    const char *native;
    size_t native_len;
    size_t native_model_start, native_model_end;
    const char *native_path;
    const char *native_headers;
    const char *why;
    int want_text; /* passthrough streams report content text (for a continuation) */
};

/* The bytes of one upstream request: head (request line and headers) and the body pieces.
 * Pieces borrow from the canon_request's body and from the buffers here. */
#define UPSTREAM_IOV_MAX 4
struct upstream_request {
    struct buf head;
    struct buf body;  /* a re-encoded body (kinds that translate), else empty */
    struct buf model; /* openai: the spliced-in model value */
    uv_buf_t iov[UPSTREAM_IOV_MAX];
    unsigned n;
    /* When encode refuses a request it cannot translate (UV_EINVAL, LLMUX_EKIND): the field
     * and why, e.g. "response_format: ...", for the client's 400; "" when encode said nothing.
     * Cleared by upstream_request_free. */
    char why[128];
};

struct usage {
    long prompt_tokens;
    long completion_tokens;
    long total_tokens;
    long cached_tokens; /* prompt tokens served from a provider cache (reads), when reported */
    int known;
};

enum chunk_kind {
    CHUNK_PREAMBLE, /* no content yet (role-only first chunk): may be held back before commit */
    CHUNK_CONTENT,  /* content, tool calls, a finish reason or usage: commits the response */
    CHUNK_DONE,     /* data: [DONE] */
    CHUNK_ERROR,    /* an in-band error from the provider */
};

/* What the exchange needs to know about one emitted OpenAI chunk. */
struct chunk_info {
    enum chunk_kind kind;
    struct usage usage; /* filled when the chunk carries usage, and on "[DONE]" when the
                           provider reported usage the client did not ask for (the log) */
    char id[96];        /* the chunk's id, "" when none */
    char model[128];
    long long created;
    char error[200];  /* CHUNK_ERROR: the provider's message */
    int retryable;    /* CHUNK_ERROR: e.g. Anthropic overloaded_error: another deployment may serve */
    const char *text; /* chat/completions: content text of choice 0 in this chunk, decoded
                         (text[0..text_len), no NUL in it, not NUL-terminated: it may point
                         into the event; borrowed, valid during emit), NULL when none; used
                         for continuation */
    size_t text_len;
    int tool_call;    /* the chunk carries a tool-call delta */
    int finish;       /* the chunk carries a finish_reason */
};

/* Receives one OpenAI chunk (the JSON after "data: ", or "[DONE]"). Returns 0 to go on,
 * nonzero to stop decoding (the value is returned by stream_event). */
typedef int (*adapter_emit_fn)(void *ctx, const char *data, size_t len, const struct chunk_info *ci);

/* Per-attempt stream decoding state, zeroed by the exchange before stream_open(). */
struct adapter_stream {
    const struct canon_request *req; /* borrowed for the attempt's lifetime */
    const char *model;               /* upstream model id, NUL-terminated, borrowed */
    void *state;                     /* the kind's own state, from stream_open */
    int done;                        /* openai: [DONE] seen */
};

/* How a non-2xx upstream answer (or an in-band error) is handled. */
enum verdict {
    VERDICT_RETRY,          /* another deployment may serve it (401/403/404/408/409/5xx...) */
    VERDICT_RATE_LIMIT,     /* 429, overloaded: retry elsewhere and cool this deployment down */
    VERDICT_CONTEXT_LENGTH, /* prompt too long for this deployment: one with a larger context
                               window may serve; otherwise passed to the client */
    VERDICT_CLIENT,         /* the request's own fault (400, 413, 422...): passed to the client */
};

struct adapter {
    const char *kind;
    int prefill; /* the provider continues a trailing assistant message */
    /* Build the upstream request for provider p, upstream model id (model, len). Returns 0 or
     * a negative code; on failure `out` holds nothing. Free with upstream_request_free. */
    int (*encode)(const struct provider *p, const char *model, size_t model_len,
                  const struct canon_request *req, struct upstream_request *out);
    /* Streams. stream_open may allocate s->state; stream_close frees it (always called once
     * after a successful open). stream_event returns 0, emit's nonzero value, or LLMUX_EPROTO
     * when the event cannot be decoded. stream_finish returns 1 when the upstream stream
     * completed properly (emitting "[DONE]" if the kind has none), 0 when it was cut short. */
    int (*stream_open)(struct adapter_stream *s);
    int (*stream_event)(struct adapter_stream *s, const char *event, size_t event_len,
                        const char *data, size_t len, adapter_emit_fn emit, void *ctx);
    int (*stream_finish)(struct adapter_stream *s, adapter_emit_fn emit, void *ctx);
    void (*stream_close)(struct adapter_stream *s);
    /* A whole 2xx response body. Fills `out` with the OpenAI-shaped body (or leaves it empty
     * when `body` can be sent as it is) and `u` with the usage. Returns 0, or LLMUX_EPROTO
     * when the body is not a valid response. */
    int (*decode_body)(const struct canon_request *req, const char *model, const char *body,
                       size_t len, struct buf *out, struct usage *u);
    /* A non-2xx answer: its verdict, and in `out` an OpenAI-shaped error body
     * {"error":{"message","type","code"}} for the client (left empty when `body` is already
     * one). `message` gets a short reason for the log (never a key). */
    enum verdict (*decode_error)(int status, const char *body, size_t len, struct buf *out,
                                 char *message, size_t message_size);
};

/* The adapter of a provider kind. */
const struct adapter *adapter_for(enum provider_kind kind);

extern const struct adapter adapter_openai;
extern const struct adapter adapter_azure;
extern const struct adapter adapter_anthropic;
extern const struct adapter adapter_gemini;

void upstream_request_free(struct upstream_request *r);

/* Helpers shared by the adapters (src/adapter_common.c). */

/* The request head: "POST <path> HTTP/1.1", host (with port when not the default), content
 * type, accept (event stream or JSON), user agent, x-request-id, `extra` (already formatted
 * header lines, each ending in CRLF; may be ""), content-length. */
int adapter_write_head(struct buf *head, const struct provider *p, const char *path,
                       const struct canon_request *req, const char *extra, size_t body_len);
/* Finish `out` for a body re-encoded into out->body: iov = head + body. */
void adapter_iov_body(struct upstream_request *out);
/* Encode the body as it came with the model value replaced (the openai kind's splice), to
 * `path`, with the key header `auth_fmt` (a printf format of the key) and `extra_lines` (header
 * lines, each ending in CRLF; may be ""). */
int adapter_encode_spliced(const struct provider *p, const char *path, const char *auth_fmt,
                           const char *extra_lines, const char *model, size_t model_len,
                           const struct canon_request *req, struct upstream_request *out);
/* One pass over a whole response body: 0 when it is a valid JSON object, with its top-level
 * `usage` member parsed into *usage (NULL when absent; caller frees with cJSON_Delete), else
 * LLMUX_EPROTO. */
struct cJSON;
int adapter_body_usage(const char *body, size_t len, struct cJSON **usage);
/* Usage from OpenAI's usage object. Returns 1 when present. */
int adapter_openai_usage(const void *root_cjson, struct usage *u);
/* The same from the text of the usage member (src/json.c spans; absent or not an object: 0). */
int adapter_openai_usage_span(struct json_span usage, struct usage *u);
/* adapter_json_long and adapter_copy_str over a span: the number as a long (0 when absent, not
 * a number or out of +-1e15), the decoded string copied (dst untouched when not a string). */
long adapter_span_long(struct json_span v);
void adapter_span_str(char *dst, size_t size, struct json_span v);
/* The decoded text of the string v as a cJSON valuestring reads (up to a decoded NUL): in
 * place when it has no escapes (*p then points into v, not NUL-terminated), else decoded into
 * `scratch` (reset first). Returns 0, UV_ENOMEM, or LLMUX_EPROTO when v is not a string. */
int adapter_span_text(struct buf *scratch, struct json_span v, const char **p, size_t *len);
/* A cJSON parse of the span v (NULL when absent), for the rare members a stream event still
 * reads as a tree (errors, tool calls); free with cJSON_Delete. */
struct cJSON *adapter_span_tree(struct json_span v);

/* Helpers for the kinds that translate (src/adapters/): re-encoded requests, and OpenAI chunks
 * built from another wire format. */

struct cJSON;

/* The user message that asks a provider without prefill to continue a delivered prefix. */
#define ADAPTER_CONTINUE_INSTRUCTION                                                              \
    "Continue your previous message exactly where it stopped. Output only the continuation: "  \
    "do not repeat anything already written and do not comment on it."

/* After an encode refused a request with LLMUX_EKIND: name the member it cannot carry in `why`
 * (unless the adapter already did), e.g. "n: anthropic providers return one choice per request
 * (n must be 1)". `in` is the parsed request body (NULL: the endpoint is not served). */
void adapter_explain_refusal(const struct canon_request *req, const struct cJSON *in,
                             const char *kind, char *why, size_t size);
/* Start an encode: `out` empty with its buffers initialised (safe to free). */
void adapter_encode_init(struct upstream_request *out);
/* Finish an encode whose body is the JSON `root` (borrowed): out->body gets its text, the head
 * is written with the header `key_header: <p->api_key>` (when both are set; the copy is wiped
 * afterwards) and `extra` header lines (each ending in CRLF; may be ""), iov = head + body.
 * On failure out is freed. */
int adapter_encode_json(struct upstream_request *out, const struct provider *p, const char *path,
                        const struct canon_request *req, const struct cJSON *root,
                        const char *key_header, const char *extra);

/* The identity every chunk of one translated stream carries. */
struct chunk_ident {
    char id[96];
    char model[128];
    long long created;
};

/* Emit one chat.completion.chunk {id, object, created, model, choices:[{index:0, delta,
 * finish_reason}]} (with "usage":null when the client asked for usage, as OpenAI does).
 * Takes ownership of `delta` (NULL: {}); `finish` NULL is null. The caller sets ci's kind,
 * text, tool_call and finish; id, model and created are filled here. Returns emit's value,
 * or UV_ENOMEM. */
int adapter_emit_delta(const struct chunk_ident *who, int include_usage, struct cJSON *delta,
                       const char *finish, struct chunk_info *ci, adapter_emit_fn emit,
                       void *ctx);
/* adapter_emit_delta with the delta {"content": text} (text[0..len), no NUL inside), written
 * without a cJSON tree: the same bytes, one buffer. ci->text may point at text. */
int adapter_emit_text(const struct chunk_ident *who, int include_usage, const char *text,
                      size_t len, struct chunk_info *ci, adapter_emit_fn emit, void *ctx);
/* Emit the final usage chunk (choices [] and usage), CHUNK_CONTENT with ci.usage set. */
int adapter_emit_usage(const struct chunk_ident *who, const struct usage *u, adapter_emit_fn emit,
                       void *ctx);
/* Emit "[DONE]" (CHUNK_DONE). `u` (may be NULL) is reported in its chunk_info: translated
 * kinds know the usage even when the client did not ask for a usage chunk. */
int adapter_emit_done(const struct usage *u, adapter_emit_fn emit, void *ctx);
/* OpenAI's usage object {prompt_tokens, completion_tokens, total_tokens,
 * prompt_tokens_details{cached_tokens}}. Caller frees with cJSON_Delete. */
struct cJSON *adapter_usage_json(const struct usage *u);
/* A fresh random id "<prefix><24 hex digits>" in dst. */
void adapter_new_id(char *dst, size_t size, const char *prefix);
/* Copy a cJSON string into dst (truncated to size - 1); dst is untouched when v is not a
 * string. */
void adapter_copy_str(char *dst, size_t size, const struct cJSON *v);
/* The text of an OpenAI message content appended to out: a string, or the text parts of an
 * array, joined; null or absent adds nothing. Returns 0, UV_EINVAL for another shape, or a
 * buffer error. */
int adapter_content_text(const struct cJSON *content, struct buf *out);
/* Append items (an array, taken) to the array `turns` as {role, <key>: items}, merged into
 * *last when that turn has the same role (providers that require alternating roles); no items,
 * no turn. *last is updated to the turn added. */
void adapter_push_turn(struct cJSON *turns, struct cJSON **last, const char *role,
                       const char *key, struct cJSON *items);
/* An OpenAI tool call's `arguments` string as the JSON object providers take: absent or "" is
 * {}; NULL when it is not a JSON object. Caller frees with cJSON_Delete. */
struct cJSON *adapter_tool_arguments(const struct cJSON *arguments);
/* An OpenAI tool call {index, id, type:"function", function{name, arguments}}; index < 0, id
 * NULL or name NULL leave that member out (a stream's argument fragments). */
struct cJSON *adapter_tool_call(int index, const char *id, const char *name, const char *args);
/* The chat.completion body of one choice, appended to out: content NULL is null, tool_calls
 * (taken; may be NULL) is left out when empty. Returns 0 or a buffer error. */
int adapter_write_completion(struct buf *out, const char *id, const char *model,
                             const char *content, struct cJSON *tool_calls, const char *finish,
                             const struct usage *u);
/* Emit the role-only first chunk (CHUNK_PREAMBLE). */
int adapter_emit_role(const struct chunk_ident *who, int include_usage, adapter_emit_fn emit,
                      void *ctx);
/* Emit CHUNK_ERROR for an in-band provider error, with an OpenAI error body as its data
 * (code may be NULL). */
int adapter_emit_error(const char *message, const char *type, const char *code, int retryable,
                       adapter_emit_fn emit, void *ctx);
/* The verdict the HTTP status alone gives: 429 rate limit; 5xx, 401, 403, 404, 408, 409 retry
 * (a deployment's key, model or health, not the client's request); others client. */
enum verdict adapter_status_verdict(int status);
/* decode_error's outputs: "status N: <text>" in message, and in out the OpenAI error body with
 * text (a generic one when NULL), type (NULL: OpenAI's type for the status) and code (may be
 * NULL). */
void adapter_error_out(int status, const char *text, const char *type, const char *code,
                       struct buf *out, char *message, size_t message_size);
/* How one provider represents the items of a message's content. */
struct content_makers {
    struct cJSON *(*text)(const char *text);
    /* an image: base64 `src` of media type `mime`, or (mime NULL) an http(s) URL `src` */
    struct cJSON *(*image)(const char *mime, const char *src);
};
/* OpenAI content (a string, an array of text, refusal and image_url parts, or null) appended to
 * items through make. Empty texts are skipped. Returns 0, UV_EINVAL for a malformed part or an
 * image URL that is neither a base64 data: URL nor http(s), LLMUX_EKIND for other part types
 * (audio, files). */
int adapter_content_items(const struct cJSON *content, struct cJSON *items,
                          const struct content_makers *make);
/* The OpenAI embeddings list for `list`, whose item i holds vector i (an array of numbers) as
 * its member `key` (key NULL: the item is the vector), appended to out:
 * {object:list, data[{object:embedding, index, embedding}], model, usage (zeros)}, each
 * embedding as numbers, or as base64 of little-endian float32 when the client asked for
 * encoding_format "base64" (as the OpenAI SDKs do by default). LLMUX_EPROTO when a vector is
 * not an array of numbers. */
int adapter_write_embeddings(struct buf *out, const struct canon_request *req, const char *model,
                             const struct cJSON *list, const char *key);
/* The passthrough adapters (a client API spoken by the provider itself, include/llmux/codec.h). */

/* Encode the client's own body (req->native) with the model spliced, to
 * {p->base_path}{under}{req->native_path}, with the key header auth_fmt and `extra` header lines
 * (each ending in CRLF). LLMUX_EKIND (out empty) when there is no native body or for a
 * continuation, which is translated. */
int adapter_encode_native(const struct provider *p, const char *under, const char *auth_fmt,
                          const char *extra, const char *model, size_t model_len,
                          const struct canon_request *req, struct upstream_request *out);
/* A passthrough stream's state (adapter_stream.state): the frame of the event being relayed and
 * the usage reported so far. stream_open, stream_finish (whether the end marker came: s->done)
 * and stream_close of the passthrough adapters. */
struct adapter_native {
    struct buf frame;
    struct usage usage;
};
int adapter_native_open(struct adapter_stream *s);
int adapter_native_finish(struct adapter_stream *s, adapter_emit_fn emit, void *ctx);
void adapter_native_close(struct adapter_stream *s);
/* The member `key` of the JSON object data, parsed on its own (NULL when absent). Caller frees
 * with cJSON_Delete. */
struct cJSON *adapter_member(const char *data, size_t len, const char *key);
/* The `type` string of the object member `key` of data (key NULL: of data itself), compared with
 * each of names: the index of the one it is, or -1. */
int adapter_member_type(const char *data, size_t len, const char *key, const char *const *names,
                        int n);
/* Emit (with ci) a passthrough's SSE event as the provider framed it, built in the state's
 * frame: `event: NAME\n` (when event_len > 0), one `data: ` line per line of data, and the blank
 * line. Returns emit's value or a buffer error. */
int adapter_native_relay(struct adapter_stream *s, const char *event, size_t event_len,
                         const char *data, size_t len, const struct chunk_info *ci,
                         adapter_emit_fn emit, void *ctx);
/* decode_body of a passthrough: the body is relayed as it is; 0 when it is a JSON object, its
 * `usage` read by read_usage into u; else LLMUX_EPROTO. */
int adapter_native_body(const char *body, size_t len, struct usage *u,
                        void (*read_usage)(const struct cJSON *us, struct usage *u));
/* Append n bytes as base64 (RFC 4648, padded). */
int adapter_append_base64(struct buf *b, const void *p, size_t n);
/* Append s[0..n) as one URL path segment: unreserved bytes as they are, others %XX. */
int adapter_append_segment(struct buf *b, const char *s, size_t n);
/* The number o.key as a long; 0 when absent or not a number. */
long adapter_json_long(const struct cJSON *o, const char *key);
/* The request's `stop` (a string or an array of strings) as a new array; NULL when none.
 * Caller frees with cJSON_Delete. */
struct cJSON *adapter_stop_list(const struct cJSON *request);
/* Anthropic's usage object into u (input side and/or output side, whichever it has; input
 * counts cache reads and writes, cached_tokens the reads). */
void adapter_anthropic_usage(const struct cJSON *us, struct usage *u);
/* An Anthropic stream `error` event's error object as CHUNK_ERROR (overloaded, api and rate
 * limit errors retryable). */
int adapter_anthropic_error_event(const struct cJSON *err, adapter_emit_fn emit, void *ctx);
/* Split a base64 data URL "data:<mime>;base64,<data>": returns 0 with the media type in mime
 * and *data pointing into url; -1 when url is not such a URL. */
int adapter_data_url(const char *url, char *mime, size_t mime_size, const char **data);

#endif
