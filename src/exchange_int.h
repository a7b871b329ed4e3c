/* exchange_int: the exchange's and its attempts' state, shared by src/exchange.c (the state
 * machine) and src/exchange_log.c (the access-log line). Nothing else includes this. */
#ifndef LLMUX_EXCHANGE_INT_H
#define LLMUX_EXCHANGE_INT_H

#include <stdint.h>
#include <uv.h>

#include "llmux/adapter.h"
#include "llmux/buf.h"
#include "llmux/cache.h"
#include "llmux/codec.h"
#include "llmux/exchange.h"
#include "llmux/limits.h"
#include "llmux/sse.h"

#define EX_MAX_RECORDS 16 /* attempts logged per exchange (max_attempts is capped to this) */
#define DEPS_MAX 8 /* deployments with limits decided in Redis at admission (more: locally) */

enum ex_state {
    EX_ADMITTING,  /* the gateway key's limits being decided (may wait for Redis) */
    EX_PLANNED,    /* admitted, no attempt yet */
    EX_ATTEMPTING, /* one or two attempts (a hedge) running; nothing committed to the client */
    EX_RELAYING,   /* committed: the client has content; one attempt (the winner) streams */
    EX_DONE,       /* answered (or client gone); waiting for timers to close */
};

enum at_state {
    AT_IDLE,                /* slot unused */
    AT_BACKOFF,             /* waiting before retrying a deployment already tried */
    AT_CONNECTING,          /* dns, tcp, tls (or a pooled connection) */
    AT_WAITING_HEAD,        /* request written; waiting for the response head */
    AT_WAITING_FIRST_EVENT, /* 2xx stream head received; no content event yet */
    AT_STREAMING,           /* content events flowing to the client */
    AT_READING_BODY,        /* 2xx non-stream body */
    AT_READING_ERROR,       /* non-2xx body */
    AT_DRAINING,            /* the stream's end marker came and the client's response ended;
                               waiting briefly for the upstream's own end to pool its
                               connection (any failure now just ends the exchange) */
};

struct attempt_record {
    const struct provider *provider;
    const char *model;
    size_t model_len;
    int status; /* upstream HTTP status, 0 when none */
    char reason[128];
    uint64_t ms;
    uint64_t retry_after_ms; /* the provider's Retry-After, 0 when none */
    int hedge;        /* started as a hedge */
    int continuation; /* continued a broken stream */
    int served;       /* this attempt answered the client */
    int untranslatable; /* the adapter could not encode the request (its fault, not the
                           deployment's): all of them so -> 400, not 502 */
    uint64_t cost_pico; /* what it consumed, $1e-12 (a broken one: set when continued) */
    int priced;         /* its deployment has a price */
};

/* One try at one deployment over one upstream connection. Two slots per exchange (primary and
 * hedge); a slot is reused by the next attempt. */
struct attempt {
    struct exchange *ex;
    enum at_state at;
    size_t rec; /* index into ex->rec */
    const struct plan_entry *entry;
    const struct adapter *ad;
    struct canon_request creq; /* the exchange's, plus a continuation prefix */
    struct upstream *up;
    struct upstream_request ureq;
    struct adapter_stream ast;
    int ast_open;
    const struct adapter *ast_ad; /* the adapter that opened ast (the slot may be reused first) */
    int health_open; /* health_begin called, no outcome reported yet */
    int probe;       /* this attempt is its deployment's half-open probe */
    struct sse_decoder sse;
    int sse_active;
    int in_feed;          /* inside sse_decoder_feed(): the decoder must outlive the call */
    int free_pending;     /* reset while decoding: free the decoders when the feed returns */
    struct buf body;      /* non-stream or error body */
    struct buf held;      /* chunks held back before commit */
    int status;
    char content_type[64];
    uint64_t retry_after_ms;
    int read_paused;
    int continuation; /* its events continue the committed stream */
    int native;       /* passes the client's own API through (creq.codec->native_for) */
    uint64_t t_start, t_sent, t_first;
    uint64_t sent_ns, head_ns; /* uv_hrtime() of the request written, of the response head */
    long content_chunks;
    struct usage usage;
    uv_timer_t phase; /* connect, then first byte, then idle; backoff delay */
};

struct exchange {
    struct gateway *gw;
    struct runtime *rt; /* the config (and origins, health) this request runs on */
    struct server_req *req;
    struct canon_request creq;
    char request_id[80];
    char client_model[160];
    char *names; /* upstream model ids copied out of the request (direct routing); owned */
    struct plan plan;
    enum ex_state state;
    size_t next_entry;
    uint32_t attempts_made;
    struct attempt at[2];
    struct attempt *winner; /* committed (or answering) attempt */
    char resp_id[96];
    char resp_model[128];
    long long created;
    struct usage usage; /* what the client is told / the log reports */
    struct usage spent; /* consumed by attempts that broke after commit */
    uint64_t spent_pico; /* what they cost, $1e-12, at their deployments' prices */
    struct usage served_usage; /* what the serving attempt reported */
    int spent_prompt_unknown;
    struct buf delivered; /* content text relayed (for a continuation) */
    struct buf tool_held; /* tool-call chunks held until the call is complete (continue mode) */
    int no_continue;      /* delivered something a continuation cannot follow */
    struct codec_stream *cs; /* the client's stream for a client codec (creq.codec); owned */
    struct buf cbuf;         /* a codec's output, reused per event */
    struct attempt_record *rec; /* rec_inline, or a malloc'd array past two attempts */
    struct attempt_record rec_inline[2];
    size_t n_rec;
    uv_timer_t deadline;
    uv_timer_t ping;  /* keeps a slow-starting stream alive before commit */
    uv_timer_t hedge; /* starts the hedge attempt */
    int head_sent;    /* 200 and SSE headers sent (pings or commit) */
    int handles;
    uint64_t t_start, t_first_byte;
    /* llmux's own time: nanoseconds spent inside the exchange's handlers (request parsing and
     * planning included), i.e. the request's time minus the time waiting on either peer */
    uint64_t busy_ns;
    uint64_t busy_t0; /* a handler's start, 0 outside handlers */
    uint64_t bytes_out;
    int status;          /* status sent to the client */
    const char *outcome; /* "ok", "error", "client_closed", "truncated" */
    char end_reason[200];
    int hedged, hedge_won, continued;
    long output_chunks; /* stream chunks with output (text or a tool call) sent to the client */
    char timing[128];   /* the Server-Timing value (3 x at most 39 bytes), until the head is
                           written */
    char finish_reason[24]; /* of the answer (the provider's words), "" when unknown */
    int key;                /* the gateway key's index in rt->cfg->keys, -1: none */
    int adm_pending;        /* admission waits for Redis (its reply holds a handle) */
    struct admission adm;   /* the gateway key's limits (zero: none) */
    /* the plan's deployment limits as Redis decided them at admission (state.redis) */
    int dep_remote;               /* 1: decided there (else attempt_start takes them locally) */
    int dep_pick;                 /* the plan entry charged at admission, -1: none (or used) */
    size_t n_dep_remote;          /* entries sent (those with rpm/tpm, at most DEPS_MAX) */
    uint8_t dep_entry[DEPS_MAX];  /* their plan indices */
    uint32_t dep_retry_ms[PLAN_MAX]; /* per plan entry: 0 fits, else when it would */
    unsigned limited;       /* deployments skipped at their own rpm/tpm */
    uint64_t limited_retry_ms; /* the soonest one of them takes a request again */
    uint64_t commit_ns;        /* uv_hrtime() when a stream committed (its first content) */
    char rl_space[7][24];   /* their header values, until the head is written */
    enum cache_result cache; /* what the response cache did (CACHE_OFF: the alias has none) */
    uint8_t cache_key[CACHE_KEY_LEN];
    struct cache_capture *cap; /* a stream miss's answer, assembled to be stored; owned */
    int hide_usage; /* the upstream was asked for the usage chunk (to store the stream) and
                       the client was not: that chunk is not relayed */
};

/* Handler time accounting (busy_ns). */
static inline void busy_enter(struct exchange *ex)
{
    ex->busy_t0 = uv_hrtime();
}

static inline void busy_leave(struct exchange *ex)
{
    if (ex->busy_t0) {
        ex->busy_ns += uv_hrtime() - ex->busy_t0;
        ex->busy_t0 = 0;
    }
}

/* Admission (src/admission.c): decides ex->key's budget and limits, then calls exchange_go()
 * or answers with exchange_refuse(), now or when Redis answers. */
void admission_start(struct exchange *ex);
/* An attempt on deployment e that fitted at admission but was not charged there (a failover
 * or a hedge): charge it in Redis, without waiting. */
void admission_charge_deployment(struct exchange *ex, const struct plan_entry *e);
/* Admitted: the plan's first attempt starts (src/exchange.c). */
void exchange_go(struct exchange *ex);
/* Refused at admission: an error in the client API's shape with the key's rate-limit headers,
 * retry-after when retry_us > 0, x-should-retry: false unless retry; the exchange ends. */
void exchange_refuse(struct exchange *ex, int status, const char *type, const char *code,
                     const char *message, uint64_t retry_us, int retry);
/* Drop a hold on ex (a closing timer, a pending Redis reply): the last one frees it. */
void exchange_release(struct exchange *ex);

/* The access-log line (src/exchange_log.c). */
void exchange_log(struct exchange *ex);
/* The finished request's record for GET /v1/generation (src/exchange_log.c). */
void exchange_generation(struct exchange *ex);
/* The answer's finish reason into ex->finish_reason, found in a chunk or body (OpenAI's
 * "finish_reason", Anthropic's "stop_reason", then the client codec's finish_keys). */
void exchange_sniff_finish(struct exchange *ex, const char *json, size_t len);
/* The key's tokens corrected to the answer's usage, and its spend (src/admission.c). */
void exchange_settle(struct exchange *ex);
/* The finished request into the metrics registry (src/exchange_log.c). */
void exchange_metrics(struct exchange *ex);
/* What usage u costs at deployment d's prices, in $1e-12 (0: unpriced or unknown). */
uint64_t exchange_cost_pico(const struct deployment *d, const struct usage *u);
/* The request's cost so far: the serving attempt's and that of broken attempts before it, in
 * $1e-12. Returns 0 when the serving deployment has no price or its usage is unknown. */
int exchange_cost(const struct exchange *ex, uint64_t *served, uint64_t *spent);
/* json (an answer or a usage chunk) with "cost" and "cost_details" added to its top-level
 * "usage" object, into out. Returns 1, or 0 (out untouched) when there is no price, no usage
 * or no usage object. */
int exchange_cost_splice(const struct exchange *ex, const char *json, size_t len, struct buf *out);
/* `"cost":..,"cost_details":{..}` (the members exchange_cost_splice adds) appended to out.
 * Returns 1, or 0 (out untouched) when there is no price or no usage. */
int exchange_cost_members(const struct exchange *ex, struct buf *out);

#endif
