/* gateway: one worker, wiring the modules together: the resolver, the upstream pool, the TLS
 * contexts, the HTTP server, the access log, and the current runtime (the loaded config and
 * what is derived from it). Built by main, borrowed by api and exchange.
 *
 * A runtime is the refcounted unit a request runs on: the config, each provider's origin and
 * the health table. An exchange holds the runtime it started with; a reload (SIGHUP) builds a
 * new one and swaps gw->rt, so requests in flight finish on their config while new ones use
 * the new. What outlives a runtime is keyed by identity, never by position in a config:
 * origins by (TLS context, host, port) in the pool, TLS contexts by CA file (path and file
 * identity), health records by (provider name, upstream model). */
#ifndef LLMUX_GATEWAY_H
#define LLMUX_GATEWAY_H

#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "llmux/buf.h"
#include "llmux/cache.h"
#include "llmux/config.h"
#include "llmux/generation.h"
#include "llmux/health.h"
#include "llmux/hist.h"
#include "llmux/limits.h"
#include "llmux/metrics.h"
#include "llmux/shm.h"

struct dns;
struct health;
struct pool;
struct redis;
struct upstream_ops;
struct origin;
struct server;
struct tls_ctx;

struct gateway_stats {
    uint64_t requests;
    uint64_t exchanges_active;
    uint64_t failovers; /* attempts after the first */
    uint64_t trims;         /* malloc_trim calls (after a quiet second) */
    uint64_t trim_us_last;  /* how long the last one took (off the request path) */
    uint64_t trim_us_max;
    struct hist overhead_us; /* llmux's own time per request: see exchange_int.h busy_ns */
};

struct runtime {
    int refs;
    struct config *cfg;
    struct health *health;    /* deps[deployment->health_id] */
    struct origin **origins;  /* per provider index, NULL when disabled */
    struct alias_metrics **aliases; /* per model index (the gateway's registry) */
    struct route_metrics **routes;  /* per deployment route_id */
    struct limit_slot **key_slots;  /* per key index: its limits and spend */
    struct limit_slot **dep_slots;  /* per health_id: the deployment's rpm/tpm (NULL: none) */
    uint64_t generation;      /* 1 for the config loaded at start, +1 per reload */
    int64_t loaded_at;        /* unix seconds */
    uint64_t *live;           /* the gateway's count of runtimes not freed yet */
};

struct tls_entry; /* a TLS context and the CA file it was built from (gateway.c) */


struct gateway {
    uv_loop_t *loop;
    struct runtime *rt; /* the current one: what a new request starts on */
    uint64_t runtimes;  /* alive: the current one and older ones held by requests in flight */
    struct dns *dns;
    struct pool *pool;
    const struct upstream_ops *upstream; /* upstream_real (a test's stand-in in unit tests) */
    struct server *server;
    struct tls_entry *tls; /* every TLS context built (kept until gateway_free: pooled
                              connections use them) */
    FILE *access_log; /* also where health events (ejections, recoveries) go */
    struct buf log_buf;   /* log lines not written yet (written within 100 ms, or at 32 KiB) */
    uv_timer_t log_timer;
    int log_timer_on;
    struct health_shared health; /* the retry budget and counters, across reloads */
    struct metrics metrics;      /* counters and histograms by alias and route */
    struct gen_ring *gens;   /* finished requests' records, in the arena (NULL: none kept) */
    struct cache cache;      /* the response cache: kept across reloads (keyed by content) */
    struct limits *limits;   /* per-key limits and spend, shared by the workers */
    struct redis *redis;     /* state.redis: limits and spend across instances (NULL: none) */
    uv_timer_t cooldown_timer; /* reads the cooldowns other instances shared (src/cooldown.c) */
    int cooldown_on;
    int own_limits;          /* made by gateway_init (no supervisor shared one) */
    int own_shm;             /* the registry arenas too */
    struct gateway_stats stats;
    uint64_t id_seed;
    uv_timer_t trim_timer; /* hands freed memory back after a quiet second (gateway_quiet) */
    uv_timer_t publish_timer; /* the worker's figures into its arena, once a second */
    int publish_timer_on;
    int trim_timer_on;
    uint64_t quiet_since; /* when the last request ended with none left in flight */
    int draining; /* SIGTERM came: /healthz answers 503 */
    int worker;   /* index among the supervisor's workers (0 when there is one process): its
                     arena of metrics and health records is metrics.shm->arena[worker] */
};

/* Set up everything for cfg (takes a reference) except the server. Returns 0 or a negative
 * code with a message in err; either way gateway_close, the loop run out and gateway_free
 * undo what was made. */
int gateway_init(struct gateway *gw, uv_loop_t *loop, struct config *cfg, char *err, size_t errlen);
/* The limits table and the registry arenas every gateway of this process (and its forks)
 * uses; set before forking workers. Without them, gateway_init makes its own. */
void gateway_share(struct limits *l, struct shm *s);
/* The index of the worker the next gateway_init is for (0 without workers): its arena. */
void gateway_share_worker(int worker);
/* The bytes of address space a worker's arena gets for cfg: room for its records four times
 * over (reloads add aliases and deployments; 32 MiB at least) and its generations ring. 0
 * when out of memory. */
size_t gateway_registry_bytes(const struct config *cfg);
/* Whether the records cfg adds to arena a fit in what is left of it (gateway_load refuses a
 * config that does not, before it takes anything; so does the supervisor's reload). */
int gateway_registry_fits(const struct shm_arena *a, const struct config *cfg);
/* Log lines (access log, health events) go to f, buffered: written when 32 KiB wait or 100 ms
 * after the first waiting line, so a request costs no write() of its own. */
void gateway_open_log(struct gateway *gw, FILE *f);
/* Queue one complete log line (ending in '\n'). */
void gateway_log(void *gw, const char *line, size_t n);
/* Close what gateway_init opened, writing pending log lines (handles finish closing as the
 * loop runs). */
void gateway_close(struct gateway *gw);
/* Free the rest once the loop has run to completion after gateway_close(). */
void gateway_free(struct gateway *gw);
/* Build a runtime for cfg (takes a reference) and make it the current one: health records,
 * origins and TLS contexts whose identity is unchanged carry over. Returns 0, or a negative
 * code with a message in err (the current runtime stays). */
int gateway_load(struct gateway *gw, struct config *cfg, char *err, size_t errlen);
struct runtime *runtime_ref(struct runtime *rt);
void runtime_unref(struct runtime *rt);
/* The origin for a provider of rt->cfg (NULL when it has none). */
struct origin *runtime_origin(const struct runtime *rt, const struct provider *p);
/* No request is in flight any more: if none starts for a second, freed memory is handed back
 * to the system (malloc_trim), off the request path. */
void gateway_quiet(struct gateway *gw);
/* A fresh request id (32 hex characters) into out[33]. */
void gateway_request_id(struct gateway *gw, char out[33]);

#endif
