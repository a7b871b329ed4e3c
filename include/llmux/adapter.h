/* adapter: per provider kind, the translation between the canonical (OpenAI) request and
 * response shapes and the provider's wire format. The openai kind is a near-passthrough: the
 * request body is forwarded with only the `model` value spliced in (no re-encoding), and
 * stream events are forwarded as they are, after being inspected for content and usage.
 */
#ifndef LLMUX_ADAPTER_H
#define LLMUX_ADAPTER_H

#include <stddef.h>
#include <uv.h>

#include "llmux/buf.h"
#include "llmux/config.h"

enum api_endpoint { API_CHAT, API_COMPLETIONS, API_EMBEDDINGS };

/* The client's request, parsed once by the api module. Borrowed by everything downstream. */
struct canon_request {
    enum api_endpoint endpoint;
    const char *body; /* raw JSON from the client */
    size_t body_len;
    size_t model_start, model_end; /* byte span of the "model" value (with quotes) in body */
    int stream;
    int include_usage;
    const char *request_id;
};

/* The bytes of one upstream request: head (request line and headers) and the body pieces. */
struct upstream_request {
    struct buf head;
    struct buf model; /* the spliced-in model value */
    uv_buf_t iov[4];
    unsigned n;
};

struct usage {
    long prompt_tokens;
    long completion_tokens;
    long total_tokens;
    int known;
};

enum chunk_kind {
    CHUNK_PREAMBLE, /* no content yet (role-only first chunk): may be held back before commit */
    CHUNK_CONTENT,  /* content, tool calls, a finish reason or usage: commits the response */
    CHUNK_DONE,     /* data: [DONE] */
    CHUNK_ERROR,    /* an in-band error object from the provider */
    CHUNK_INVALID,  /* not JSON */
};

struct chunk_info {
    enum chunk_kind kind;
    struct usage usage; /* filled when the chunk carries usage */
    char id[96];        /* the chunk's id, "" when none */
    char model[128];
    long long created;
    char error[200]; /* CHUNK_ERROR: the provider's message */
};

/* Build the upstream request for provider p, upstream model id (model, len). The iov pieces
 * borrow from req->body and from out's buffers. Returns 0 or a negative code. */
int adapter_encode(const struct provider *p, const char *model, size_t model_len,
                   const struct canon_request *req, struct upstream_request *out);
void upstream_request_free(struct upstream_request *r);

/* Classify one stream event's data (OpenAI chunk JSON or [DONE]). */
void adapter_chunk_info(const char *data, size_t len, struct chunk_info *ci);

/* Usage from a whole non-stream response body. Returns 0, or -1 when the body is not JSON. */
int adapter_response_usage(const char *body, size_t len, struct usage *u);

/* Whether an upstream HTTP status is worth trying another deployment for (401, 403, 404,
 * 408, 409, 429, 5xx), as opposed to a fault in the request that every deployment would
 * refuse (400, 413, 422...). */
int adapter_status_retryable(int status);

#endif
