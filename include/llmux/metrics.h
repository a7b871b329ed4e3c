/* metrics: the worker's counters and histograms for Prometheus (GET /metrics), kept in records
 * made when a config is loaded: one per alias and one per route (alias, provider, upstream
 * model). A record is found by identity, so it survives reloads that keep it; the registry
 * only grows (by the routes a reload adds) and is freed at exit. Recording a finished request
 * is array indexing and a few additions: no allocation, no formatting, no lookup by name.
 * Per-deployment state (up, ejections, attempts) comes from the health records, which are
 * keyed the same way.
 *
 * Histograms use OpenTelemetry's recommended bucket bounds for the GenAI client metrics. */
#ifndef LLMUX_METRICS_H
#define LLMUX_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "llmux/buf.h"
#include "llmux/config.h"

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
    char *alias, *provider, *model;
    uint64_t served;
    struct met_hist tokens[2]; /* input, output */
    struct met_hist duration, ttfc, tpoc;
    uint64_t cost_pico; /* $ 1e-12 */
    int endpoint;       /* of its latest request: the GenAI operation name */
    struct route_metrics *next;
};

struct alias_metrics {
    char *name;
    uint64_t requests[MET_ENDPOINTS][MET_STATUSES];
    uint64_t fallbacks, hedges, hedges_won, continuations;
    struct met_hist failed[MET_STATUSES]; /* durations of requests no deployment served, by
                                             the answer's status (error_type) */
    int endpoint;
    struct alias_metrics *next;
};

struct metrics {
    struct route_metrics *routes;
    struct alias_metrics *aliases;
    int64_t started; /* unix seconds */
};

/* For cfg, the records of its aliases (by model index) and routes (by deployment route_id),
 * made when new, in arrays the caller frees. Returns 0 or UV_ENOMEM. */
int metrics_attach(struct metrics *m, const struct config *cfg, struct alias_metrics ***aliases,
                   struct route_metrics ***routes);
void metrics_free(struct metrics *m);

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
/* The Prometheus text exposition (format 0.0.4) of gw into out. */
int metrics_render(struct gateway *gw, struct buf *out);

#endif
