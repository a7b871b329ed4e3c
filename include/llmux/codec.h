/* codec: client-side codecs, the mirror of the provider adapters (include/llmux/adapter.h).
 *
 * A provider adapter translates the canonical request (OpenAI Chat Completions) into a
 * provider's wire and the provider's answer back into canonical chunks and bodies. A client
 * codec does the same on the client's side: the api module decodes the client's request into
 * the canonical one (codec_messages_request), and the exchange encodes every canonical chunk,
 * body and error into the client's wire as it writes it. Chat Completions is the identity
 * codec: a chat request has no codec (creq->codec NULL) and costs nothing here.
 *
 * When the client's API is the wire of the provider kind an attempt goes to (Messages in ->
 * an anthropic-kind deployment), the attempt passes bytes through instead of translating
 * twice: the passthrough adapter the codec's `native_for` names for that provider sends the
 * client's own body with the model spliced and relays the provider's events re-framed but
 * otherwise as they came, classified (preamble, content, done, error) for the exchange;
 * `observe` lets the codec follow the stream the client has seen, so a continuation on another
 * kind goes on in the same message.
 *
 * State: one struct codec_stream per exchange, zeroed at the start (with the client's model in
 * `model`); the codec's functions are called only for bytes that go to the client, in order, so
 * the state is the client's view. A codec that grows buffers in it frees them in stream_free.
 *
 * Codecs: codec_messages (POST /v1/messages, src/codec_messages.c; native to anthropic-kind
 * providers) and codec_responses (POST /v1/responses, src/codec_responses.c; native to openai- and
 * azure-kind providers configured with "responses": "native", translated to every other; its
 * errors are OpenAI's own shape).
 */
#ifndef LLMUX_CODEC_H
#define LLMUX_CODEC_H

#include <stddef.h>

#include "llmux/adapter.h"
#include "llmux/buf.h"

/* The client's stream as the client has seen it so far. */
struct codec_stream {
    int started;      /* the stream's opening (message_start) went out */
    int block;        /* index of the open content block; -1 none */
    int block_kind;   /* the open block's kind: 0 text, 1 tool_use, 2 other */
    int next_block;   /* index of the next block */
    int tool;         /* canonical tool-call index of the open tool_use block */
    int finished;     /* the stop reason is known (finish chunk seen) */
    char stop[24];    /* the client API's stop reason */
    struct usage usage; /* reported by the provider's usage chunk */
    /* the request's cost as usage members (`"cost":..,"cost_details":{..}`), set by the exchange
     * before the chunk that ends the stream when the serving deployment is priced, else "";
     * the codec adds them to the usage it reports at the end */
    char cost[256];
    char id[64];
    char model[128];
    /* the Responses codec: every event has a sequence_number; response.completed repeats the
     * whole output, so the items are kept as they close */
    long seq;             /* the next event's sequence_number */
    long long created;    /* created_at */
    long reasoning_tokens;
    char item[40];        /* the open output item's id */
    char call_id[96];     /* the open function_call item's call_id and name */
    char name[128];
    struct buf text;      /* the open item's text (or arguments) so far */
    struct buf items;     /* the closed output items, as JSON objects joined by ',' */
};

struct client_codec {
    const char *name;   /* the endpoint in the access log, e.g. "messages" */
    int metrics_endpoint; /* its index in the metrics registry's endpoints */
    const char *main_key; /* the request member that holds the conversation (required) */
    /* The client's request body as the canonical chat body appended to out (with
     * stream_options.include_usage when it streams). Returns 0; UV_EINVAL with the reason in
     * why for the client's 400; LLMUX_EKIND with the reason when it is valid but only the
     * native kind could carry it (attempts on other kinds fail, a 400 names it when all do). */
    int (*request)(const char *body, size_t len, struct buf *out, char *why, size_t why_size);
    const char *native_path;            /* the passthrough's path under the provider's base */
    const char *const *forward_headers; /* client headers the passthrough forwards; NULL ends */
    /* The passthrough adapter of provider p when p speaks the client's API itself (attempts on
     * it pass the client's bytes through instead of translating twice); NULL when it does not.
     * The function NULL: no provider does. */
    const struct adapter *(*native_for)(const struct provider *p);
    /* Keys (with their quotes) that say why an answer in the client's API ended, looked for
     * after "finish_reason" and "stop_reason" (the access log's and generation's finish);
     * NULL-terminated; NULL: none. */
    const char *const *finish_keys;
    /* A continuation may follow a broken passthrough attempt (on another kind, translated, in
     * the same client message); 0: a passthrough stream that breaks ends with stream_error. */
    int native_continues;
    const char *ping;   /* keep-alive bytes before commit (an SSE event or comment) */
    /* A canonical chunk (the JSON after "data: ", or "[DONE]") to the client's events,
     * appended to out. `total` is the usage the client is told (continuations add up). */
    int (*stream_chunk)(struct codec_stream *s, const char *data, size_t len,
                        const struct chunk_info *ci, const struct usage *total, struct buf *out);
    /* Bytes of a passthrough attempt written to the client as they are (framed events). */
    void (*observe)(struct codec_stream *s, const char *bytes, size_t len);
    /* The honest end of a committed stream that broke (HTTP status class in `status`). */
    int (*stream_error)(struct codec_stream *s, int status, const char *message, struct buf *out);
    /* A canonical non-stream answer (chat.completion) to the client's body. */
    int (*body)(const char *body, size_t len, struct buf *out);
    /* An error body in the client API's shape: `message`, or (NULL) the message of the
     * OpenAI-shaped error body [body, body + len). NULL: the client API's errors are OpenAI's. */
    int (*error)(int status, const char *message, const char *body, size_t len, struct buf *out);
    /* Frees what the codec grew in a stream's state (NULL: nothing); the struct is the
     * exchange's. */
    void (*stream_free)(struct codec_stream *s);
};

extern const struct client_codec codec_messages;
extern const struct client_codec codec_responses;

/* The passthrough adapter of the anthropic kind: the client's Messages body (req->native) with
 * the model spliced, to {base_path}{req->native_path}; the client's anthropic-version and
 * anthropic-beta forwarded (req->native_headers); events relayed as they came. */
extern const struct adapter adapter_anthropic_native;

/* The passthrough adapters of a provider that serves the Responses API itself ("responses":
 * "native"): the client's Responses body (req->native) with the model spliced, to
 * {base_path}/responses with a bearer key (openai kind), or to {base_path}/openai/v1/responses
 * (Azure's v1 API: the deployment name is the body's model, no api-version) with an api-key
 * header (azure kind); events and bodies relayed as they came. */
extern const struct adapter adapter_openai_responses;
extern const struct adapter adapter_azure_responses;

/* A Messages request body (a JSON object) as a canonical chat body appended to out, with
 * stream_options.include_usage when it streams. Returns 0; UV_EINVAL with the reason in why
 * when the body is not a valid Messages request (the client's 400); LLMUX_EKIND with the reason
 * in why when it is valid but only an anthropic provider can carry it (server tools,
 * documents...). */
int codec_messages_request(const char *body, size_t len, struct buf *out, char *why,
                           size_t why_size);

/* A Responses API request body (a JSON object) as a canonical chat body appended to out; the
 * contract of client_codec.request. previous_response_id, conversation and item_reference
 * inputs are UV_EINVAL (llmux keeps no responses); hosted tools and items only OpenAI's service
 * runs are LLMUX_EKIND. */
int codec_responses_request(const char *body, size_t len, struct buf *out, char *why,
                            size_t why_size);

/* Helpers shared by the codecs (src/codec_common.c). */

struct cJSON;
/* Builds the canonical chat body o from the client's body in; the codec_request contract. */
typedef int (*codec_build_fn)(const struct cJSON *in, struct cJSON *o, char *why,
                              size_t why_size);
/* why = fmt with arg; returns rc. */
int codec_fail(char *why, size_t size, int rc, const char *fmt, const char *arg);
/* A client's body as a canonical chat body appended to out: parsed (not an object: UV_EINVAL),
 * built, then `stream` with stream_options.include_usage when the client streams, printed. */
int codec_translate(const char *body, size_t len, codec_build_fn build, struct buf *out,
                    char *why, size_t why_size);
/* What the codecs read of a canonical chunk, as spans of its text (src/json.c; absent ones have
 * s NULL): model, created, usage, and of choices[0] the delta's content and tool_calls and the
 * finish_reason. */
struct codec_chunk {
    struct json_span model, created, usage, content, tool_calls, finish;
};
/* Scan a canonical chunk in place (no tree, no allocation): 0, or LLMUX_EPROTO when it is not
 * a valid JSON object. [DONE] (ci->kind CHUNK_DONE) gives 0 with everything absent. */
int codec_read_chunk(const char *data, size_t len, const struct chunk_info *ci,
                     struct codec_chunk *c);
/* A string span's decoded text, up to a decoded NUL (as cJSON's valuestring would be): in
 * place when it has no escapes, else decoded into tmp (or, when longer, a heap copy that
 * codec_str_free releases). */
struct codec_str {
    const char *p; /* NULL when the span is not a string */
    size_t len;
    char *heap;
    char tmp[512];
};
/* Returns whether v is a string (p set). Pair every call with codec_str_free. */
int codec_str(struct json_span v, struct codec_str *t);
void codec_str_free(struct codec_str *t);
/* A chat.completion parsed: *root (caller frees with cJSON_Delete), its first choice and that
 * choice's message; LLMUX_EPROTO (nothing to free) when there is no message. */
int codec_parse_completion(const char *body, size_t len, struct cJSON **root,
                           const struct cJSON **choice, const struct cJSON **msg);
/* `event: TYPE\ndata: {"type":"TYPE"` (the caller adds members), and the event's end `}\n\n`. */
void codec_event_open(struct buf *out, const char *type);
void codec_event_close(struct buf *out);

/* fn on each SSE event of a passthrough's bytes (events ending in a blank line), without it. */
void codec_each_event(struct codec_stream *s, const char *bytes, size_t len,
                      void (*fn)(struct codec_stream *s, const char *ev, size_t len));

/* An estimate of a Messages request's input tokens (count_tokens without an anthropic
 * deployment): see the README. */
long codec_messages_estimate_tokens(const char *body, size_t len);

#endif
