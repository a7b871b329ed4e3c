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
 * twice: the codec's `native` adapter sends the client's own body with the model spliced and
 * relays the provider's events re-framed but otherwise as they came, classified (preamble,
 * content, done, error) for the exchange; `observe` lets the codec follow the stream the
 * client has seen, so a continuation on another kind goes on in the same message.
 *
 * State: one struct codec_stream per exchange, zeroed at the start; the codec's functions are
 * called only for bytes that go to the client, in order, so the state is the client's view.
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
    char id[64];
    char model[128];
};

struct client_codec {
    const char *name;   /* the endpoint in the access log, e.g. "messages" */
    int native_kind;    /* the provider kind whose wire is the client's (passthrough); -1 none */
    const struct adapter *native; /* the passthrough adapter for that kind */
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
     * OpenAI-shaped error body [body, body + len). */
    int (*error)(int status, const char *message, const char *body, size_t len, struct buf *out);
};

extern const struct client_codec codec_messages;

/* The passthrough adapter of the anthropic kind: the client's Messages body (req->native) with
 * the model spliced, to {base_path}{req->native_path}; the client's anthropic-version and
 * anthropic-beta forwarded (req->native_headers); events relayed as they came. */
extern const struct adapter adapter_anthropic_native;

/* A Messages request body (a JSON object) as a canonical chat body appended to out, with
 * stream_options.include_usage when it streams. Returns 0; UV_EINVAL with the reason in why
 * when the body is not a valid Messages request (the client's 400); LLMUX_EKIND with the reason
 * in why when it is valid but only an anthropic provider can carry it (server tools,
 * documents...). */
int codec_messages_request(const char *body, size_t len, struct buf *out, char *why,
                           size_t why_size);

/* An estimate of a Messages request's input tokens (count_tokens without an anthropic
 * deployment): see the README. */
long codec_messages_estimate_tokens(const char *body, size_t len);

#endif
