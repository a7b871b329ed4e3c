/* gateway: the runtime of one worker, wiring the modules together: the loaded config, the
 * resolver, the upstream pool, each provider's origin and TLS context, the HTTP server and the
 * access log. Built by main, borrowed by api and exchange. */
#ifndef LLMUX_GATEWAY_H
#define LLMUX_GATEWAY_H

#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "llmux/buf.h"
#include "llmux/config.h"
#include "llmux/hist.h"

struct dns;
struct health;
struct pool;
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

struct gateway {
    uv_loop_t *loop;
    struct config *cfg;
    struct dns *dns;
    struct pool *pool;
    const struct upstream_ops *upstream; /* upstream_real (a test's stand-in in unit tests) */
    struct server *server;
    struct origin **origins;      /* per provider index, NULL when disabled */
    struct tls_ctx **tls;         /* per provider index, NULL for http:// */
    struct tls_ctx *system_tls;   /* shared by providers without a ca_file */
    FILE *access_log; /* also where health events (ejections, recoveries) go */
    struct buf log_buf;   /* log lines not written yet (written within 100 ms, or at 32 KiB) */
    uv_timer_t log_timer;
    int log_timer_on;
    struct health *health;
    struct gateway_stats stats;
    uint64_t id_seed;
    uv_timer_t trim_timer; /* hands freed memory back after a quiet second (gateway_quiet) */
    int trim_timer_on;
    uint64_t quiet_since; /* when the last request ended with none left in flight */
};

/* Set up everything for cfg (takes a reference) except the server. Returns 0 or a negative
 * code with a message in err. */
int gateway_init(struct gateway *gw, uv_loop_t *loop, struct config *cfg, char *err, size_t errlen);
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
/* The origin for a provider of gw->cfg (NULL when it has none). */
struct origin *gateway_origin(struct gateway *gw, const struct provider *p);
/* No request is in flight any more: if none starts for a second, freed memory is handed back
 * to the system (malloc_trim), off the request path. */
void gateway_quiet(struct gateway *gw);
/* A fresh request id (32 hex characters) into out[33]. */
void gateway_request_id(struct gateway *gw, char out[33]);

#endif
