/* metrics: the counters and histograms for Prometheus (GET /metrics), kept in records made
 * when a config is loaded: one per alias and one per route (alias, provider, upstream model).
 * Records live in the worker's shared arena (include/llmux/shm.h) and are found by identity,
 * so they survive reloads that keep them and a worker's restart; the registry only grows (by
 * the routes a reload adds). Recording a finished request is array indexing and a few
 * additions in the worker's own records: no allocation, no formatting, no lookup by name, no
 * sharing of a cache line with another worker. A scrape, answered by any worker, sums the
 * records of every worker. Per-deployment state (up, ejections, attempts) comes from the
 * health records, which are kept the same way.
 *
 * Histograms use OpenTelemetry's recommended bucket bounds for the GenAI client metrics. */
#ifndef LLMUX_METRICS_H
#define LLMUX_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "llmux/buf.h"
#include "llmux/config.h"
#include "llmux/shm.h"

#define MET_SECONDS_BOUNDS 14 /* 0.01 .. 81.92 s, doubling */
#define MET_TOKEN_BOUNDS 14   /* 1 .. 67108864 tokens, x4 */
#define MET_CHUNK_BOUNDS 13   /* 0.01 .. 2.5 s */
#define MET_ENDPOINTS 5       /* chat, completions, embeddings, messages, responses */
#define MET_STATUSES 16       /* the statuses below, the last one "other" */

struct met_hist {
    uint64_t b[MET_SECONDS_BOUNDS + 1]; /* per bucket (not cumulative); the last is +Inf */
    uint64_t n;
    double sum;
};

struct route_metrics {
    struct shm_link link;
    char *alias, *provider, *model;
    uint64_t served;
    struct met_hist tokens[2]; /* input, output */
    struct met_hist duration, ttfc, tpoc;
    uint64_t cost_pico; /* $ 1e-12 */
    int endpoint;       /* of its latest request: the GenAI operation name */
};

struct alias_metrics {
    struct shm_link link;
    char *name;
    uint64_t requests[MET_ENDPOINTS][MET_STATUSES];
    uint64_t fallbacks, hedges, hedges_won, continuations;
    struct met_hist failed[MET_STATUSES]; /* durations of requests no deployment served, by
                                             the answer's status (error_type) */
    int endpoint;
};

/* What a worker counts outside the alias and route records (its retry budget, cache, Redis
 * connection, upstream pool, process), copied into its arena once a second and before each
 * scrape it answers, so that any worker answers for all. Counters carry on over a restart:
 * a process publishes what the processes it replaced had counted plus its own, one field each
 * (a reader never sees a counter go back); gauges are this process's. */
enum met_counter {
    MET_BUDGET_REFUSALS,
    MET_CACHE_HIT,
    MET_CACHE_MISS,
    MET_CACHE_BYPASS,
    MET_CACHE_STORED,
    MET_CACHE_EVICTIONS,
    MET_REDIS_COMMANDS,
    MET_REDIS_FAILED,
    MET_REDIS_OUTAGES,
    MET_COUNTERS
};
enum met_gauge {
    MET_CACHE_BYTES,
    MET_CACHE_ENTRIES,
    MET_CONNS_OPEN,
    MET_CONNS_IDLE,
    MET_RSS,
    MET_FDS,
    MET_REDIS_UP, /* 0 down, 1 up, 2 no Redis */
    MET_GAUGES
};
struct worker_metrics {
    struct shm_link link;
    uint64_t count[MET_COUNTERS];
    double cpu; /* CPU seconds */
    uint64_t gauge[MET_GAUGES];
    struct met_hist overhead; /* this process's own time per request (llmux_overhead_seconds) */
    int64_t started;          /* unix seconds: when the first process of this worker started */
};

struct metrics {
    struct shm *shm;         /* every worker's arena (borrowed) */
    struct shm_arena *arena; /* this worker's: where its records are made */
    struct worker_metrics *self; /* this worker's figures in its arena */
    uint64_t carried[MET_COUNTERS]; /* what the processes this one replaced had counted */
    double cpu_carried;
};

/* The arena bytes cfg's aliases and routes (and the worker's record) would take in a that it
 * does not hold yet (a NULL: an empty arena); at most that, since a route listed twice is
 * counted twice. */
size_t metrics_need(const struct shm_arena *a, const struct config *cfg);
/* The worker's record in m->arena (taken over from the process it replaces, if any). Returns
 * 0 or UV_ENOMEM. */
int metrics_init(struct metrics *m);

/* For cfg, the records of its aliases (by model index) and routes (by deployment route_id),
 * made in m->arena when new, in arrays the caller frees. Returns 0, or UV_ENOMEM (out of
 * memory, or the arena is full). */
int metrics_attach(struct metrics *m, const struct config *cfg, struct alias_metrics ***aliases,
                   struct route_metrics ***routes);

/* A finished request. endpoint: MET_ENDPOINTS index; r: the route that served (NULL: none). */
struct met_request {
    int endpoint, status;
    double seconds;         /* the whole request */
    double ttfc;            /* stream: request received -> the first content chunk sent */
    int has_ttfc;
    double tpoc;            /* stream: mean time per output chunk after the first; 0: none */
    uint64_t tpoc_count;    /* chunks after the first */
    long input_tokens, output_tokens; /* < 0: unknown */
    uint64_t cost_pico;
    unsigned fallbacks, hedges;
    int hedge_won, continuations;
};
void metrics_request(struct alias_metrics *a, struct route_metrics *r, const struct met_request *q);

struct runtime;
struct gateway;
/* Copy the worker's own figures (struct worker_metrics) into its arena. */
void metrics_publish(struct gateway *gw);
/* The Prometheus text exposition (format 0.0.4) of gw into out. */
int metrics_render(struct gateway *gw, struct buf *out);

#endif
