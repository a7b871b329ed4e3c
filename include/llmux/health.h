/* health: what llmux knows about each deployment (provider + upstream model), and the retry
 * budget of the worker.
 *
 * Per deployment: EWMAs of time to first token, total latency and output tokens/s, a window
 * of recent outcomes (error rate), the in-flight count, and the circuit breaker: after
 * `failure_threshold` consecutive failures, or an error rate over `error_rate_percent` across
 * a full window, the deployment is ejected for `base_ejection_ms`, doubled at each repeated
 * ejection up to `max_ejection_ms`. When the time is up, ONE request (the half-open probe)
 * decides: success returns it to rotation, failure ejects it again for longer. A 429 or 503
 * with Retry-After cools the deployment down until then without counting as an ejection.
 * Whether an ejected deployment is really left out of a plan is the router's call (it never
 * leaves out the last usable one: max_ejection_percent).
 *
 * Retry budget: retries and hedges are allowed while they stay under retry_budget_percent of
 * the requests of the last 10 s (plus min_retries), so a global outage cannot multiply load.
 *
 * Single-threaded like the rest of a worker; times are the loop's milliseconds.
 */
#ifndef LLMUX_HEALTH_H
#define LLMUX_HEALTH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "llmux/buf.h"
#include "llmux/config.h"
#include "llmux/shm.h"
#include "llmux/window.h"

#define HEALTH_TTFT_SAMPLES 64

/* One deployment's record, keyed by identity (provider name + upstream model), shared by the
 * health tables of every runtime that has the deployment: a reload keeps what is known about
 * it, and an exchange started on the old config feeds the same record. Records live in the
 * worker's shared arena (include/llmux/shm.h) and are never freed: other workers read them
 * (health_total), and a deployment a reload drops and a later one brings back finds its own. */
struct dep_health {
    struct shm_link link;
    char *provider; /* identity (copies in the arena: a record outlives the config it came from) */
    char *model;
    double ttft_ms;               /* EWMA; 0 until measured */
    double latency_ms;            /* EWMA of whole successful attempts */
    double tps;                   /* EWMA of output tokens per second (streams with usage) */
    uint32_t ttft_ring[HEALTH_TTFT_SAMPLES]; /* recent TTFTs, for the p95 */
    uint32_t n_ttft;
    uint32_t inflight;
    uint64_t requests, successes, failures, cancels; /* attempts begun; served; failed;
                                                        cancelled (no outcome): each only grows,
                                                        so other workers' sums never go back */
    uint32_t consecutive_failures;
    uint64_t window_bits; /* recent outcomes, 1 = failure, newest in bit 0 */
    uint32_t window_n;
    uint64_t ejected_until; /* loop ms; 0: not ejected */
    uint32_t ejections;     /* consecutive ejections (the backoff exponent) */
    uint64_t total_ejections;
    int probing;            /* the half-open probe is in flight */
    uint64_t cooldown_until; /* Retry-After */
    char last_error[120];
    struct window win; /* outcomes, TTFT and tokens/s over the last 30 min and day */
};

/* What one worker knows across configs: the retry budget, the event log and the counters. */
struct health_shared {
    /* ejection and recovery events (JSON lines) go to log(log_ctx, line, len); may be NULL */
    void (*log)(void *ctx, const char *line, size_t n);
    void *log_ctx;
    /* retry budget: 10 one-second buckets */
    uint64_t bucket_sec[10];
    uint32_t bucket_requests[10];
    uint32_t bucket_retries[10];
    uint64_t hedges, hedges_won, continuations, budget_refusals;
};

/* The health table of one config: deps[health_id] for each of its distinct deployments. */
struct health {
    struct health_config cfg;
    struct health_shared *sh;
    struct dep_health **deps;
    const struct deployment **dep; /* the config's first deployment with each id */
    size_t n;
    int own_sh; /* sh was allocated by health_create */
};

/* The table for every distinct deployment of cfg, with the records of arena (made there when
 * new). sh: the worker's shared part (NULL: the table gets its own, for tests). Returns NULL
 * when out of memory or the arena is full. */
struct health *health_create(const struct config *cfg, struct health_shared *sh,
                             struct shm_arena *arena);
/* Arena a's record of (provider, model), or NULL. */
struct dep_health *health_in(const struct shm_arena *a, const char *provider, const char *model);
/* The arena bytes the records of cfg's deployments would take in a that it does not hold yet
 * (a NULL: an empty arena); SIZE_MAX when out of memory. */
size_t health_need(const struct shm_arena *a, const struct config *cfg);
/* A worker took over the arena of a dead one: its attempts in flight will never end, so they
 * count as cancelled, and a probe it had in flight is no longer. */
void health_adopt(struct shm_arena *a);
/* Into t, the sum over every worker of s of the record `mine`: attempts, failures,
 * cancellations and ejections added, windows merged (identity and the rest: mine's). */
void health_total(const struct shm *s, const struct dep_health *mine, struct dep_health *t);
void health_free(struct health *h);

/* Whether the deployment may take a request now: not ejected, not cooling down, or its
 * ejection is over and no probe is in flight (the request becomes the probe). */
int health_usable(const struct health *h, size_t id, uint64_t now);
/* An attempt starts / ends. `ok` failures feed the breaker; retry_after_ms > 0 cools down. */
/* Returns 1 when this attempt is the half-open probe. */
int health_begin(struct health *h, size_t id, uint64_t now);
struct health_sample {
    uint64_t ttft_ms;    /* request sent -> first content (stream) or whole answer; 0: unknown */
    uint64_t latency_ms; /* whole attempt */
    long output_tokens;  /* 0: unknown */
    uint64_t stream_ms;  /* first content -> end (for tokens/s) */
};
void health_success(struct health *h, size_t id, uint64_t now, const struct health_sample *s);
void health_failure(struct health *h, size_t id, uint64_t now, uint64_t retry_after_ms,
                    const char *why);
/* The attempt was cancelled (hedge lost, client gone): not a health outcome. `probe`: what
 * health_begin returned for it (a cancelled probe lets the next request probe). */
void health_cancel(struct health *h, size_t id, int probe);
/* Cool the deployment down for ms (capped at max_ejection_ms) unless it already is for
 * longer: a provider's Retry-After (why: the failure) or one another instance saw (why NULL).
 * Returns the ms applied, 0 when nothing changed. */
uint64_t health_cooldown(struct health *h, size_t id, uint64_t now, uint64_t ms, const char *why);

/* The 95th percentile of recent TTFTs, 0 when fewer than 5 samples. */
uint32_t health_p95_ttft(const struct health *h, size_t id);

/* Retry budget. Every request calls health_note_request once; every retry or hedge asks
 * health_retry_allowed first (which counts it when it answers 1). */
void health_note_request(struct health *h, uint64_t now);
int health_retry_allowed(struct health *h, uint64_t now);

/* "healthy", "ejected", "half_open" (its ejection is over: the next request probes) or
 * "cooldown" (a Retry-After). */
const char *health_state(const struct dep_health *d, uint64_t now);

/* The status document (GET /v1/status): per deployment its numbers and state. */
int health_status_json(const struct health *h, uint64_t now, struct buf *out);

#endif
