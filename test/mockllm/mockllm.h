/* mockllm: what mockllm.c (process, routes, request checks, /mock/ endpoints), script.c
 * (per-request scripts) and reply.c (paced answers in OpenAI's wire format) share.
 * See README.md here for the command line, the endpoints and the script keys. */
#ifndef MOCKLLM_H
#define MOCKLLM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "llmux/buf.h"
#include "llmux/server.h"

struct cJSON;

/* ---- scripts (script.c) ---- */

enum script_malformed {
    MALFORMED_NONE,
    MALFORMED_JSON, /* non-stream: invalid JSON body; stream: one event's data is invalid */
    MALFORMED_SSE,  /* stream: bytes that are not SSE framing */
};

/* What one request should do and when. Times are milliseconds. */
struct script {
    int delay;       /* before the response head */
    int ttft;        /* before the first content token */
    int tokens;      /* content tokens */
    int tps;         /* tokens per second; 0: as fast as the client reads */
    int status;      /* 0: answer normally; else answer with this error status */
    int retry_after; /* seconds for a retry-after header on the error; 0: none */
    int fail_every;  /* apply status (503 by default) to every Nth request only; 0: to all */
    int reset_after; /* TCP reset after this many tokens; -1: never */
    int stall_after; /* send nothing more after this many tokens; -1: never */
    int chunk_bytes; /* pad each token's text to about this size; 0: no padding */
    enum script_malformed malformed;
};

/* The script of a request that says nothing. */
void script_init(struct script *s);
/* Apply "k=v&k=v" (text[0..len), not NUL-terminated) on top of s; later keys win. Returns 0,
 * or -1 with a message naming the bad key or value in err (s may then be partly changed). */
int script_apply(struct script *s, const char *text, size_t len, char *err, size_t errlen);

/* ---- the process (mockllm.c) ---- */

struct mock {
    uv_loop_t *loop;
    struct server *srv;
    int quiet;
    struct script defaults;      /* from --script */
    uint64_t requests;           /* API requests since start or reset; fail_every's counter */
    uint64_t streams_completed;  /* streams that ended with data: [DONE] */
    uint64_t write_failures;     /* responses cut because the socket failed under a write */
    uint64_t ids;                /* response id sequence; never reset, so ids stay unique */
    uint64_t connections_base;   /* server counters at the last reset */
    uint64_t aborted_base;
    struct buf last;             /* /mock/last: JSON text of the last API request */
};

/* One line on stderr about a finished API request, unless --quiet. Strings need not be
 * NUL-terminated. */
void mock_log(const struct mock *m, const char *method, const char *path, size_t path_len,
              const char *model, size_t model_len, int status, const char *outcome, int tokens,
              uint64_t ms);

/* ---- answers (reply.c) ---- */

enum reply_kind {
    REPLY_CHAT,        /* POST /v1/chat/completions */
    REPLY_COMPLETION,  /* POST /v1/completions (legacy) */
    REPLY_EMBEDDINGS,  /* POST /v1/embeddings */
    REPLY_MODELS,      /* GET /v1/models, GET /v1/models/{id} */
};

/* A checked request, as reply_start() needs it. Pointers are borrowed for the call only. */
struct reply_spec {
    enum reply_kind kind;
    const char *method;
    const char *path;
    size_t path_len;
    const char *model; /* the reported model: the request's model up to '?'; or the model id */
    size_t model_len;
    int stream;
    int include_usage;
    int max_tokens;              /* -1: no cap */
    int prompt_tokens;
    const struct cJSON *input;   /* embeddings: the checked "input" member */
    int base64;                  /* embeddings: encoding_format "base64" */
    int dimensions;              /* embeddings: floats per vector */
    int list;                    /* models: the list, not one model */
    int fail_status;             /* 0, or the error status this request gets (fail_every applied) */
};

/* Answer req as spec and script say: at once, or later from the loop (then the reply watches
 * the req and drops it when the client goes away). The req is not touched by the caller after
 * this call. */
void reply_start(struct mock *m, struct server_req *req, const struct script *s,
                 const struct reply_spec *spec);

/* Append an error body in OpenAI's shape {"error":{"message","type","param","code"}};
 * param and code may be NULL (JSON null). */
int mock_error_json(struct buf *out, const char *message, const char *type, const char *param,
                    const char *code);
/* Answer req with that error body (content-type application/json). The req is finished. */
void mock_respond_error(struct server_req *req, int status, const char *message,
                        const char *type, const char *param, const char *code);

/* Release what reply.c keeps for the whole process (reused buffers). */
void reply_cleanup(void);

#endif
