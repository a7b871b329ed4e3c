/* load: the load generator's engine. Holds N keep-alive HTTP/1.1 connections on one libuv loop
 * and sends the same POST over them, closed loop (each connection sends its next request as soon
 * as its answer is complete) or open loop (requests scheduled at a fixed rate by a timerfd with
 * microsecond slack; a request that finds no free connection waits in a queue and its latency
 * counts from its scheduled time, so queueing shows instead of being hidden).
 *
 * Per request it records the total latency, the time to the first response byte, the time to
 * the first SSE event and, for streams, every gap between consecutive events (the first gap,
 * role chunk to first token, and `[DONE]` are left out: a gateway may hold the role chunk back).
 * A request is ok when its status is 2xx and, for a stream, `data: [DONE]` arrived.
 */
#ifndef BENCH_LOAD_H
#define BENCH_LOAD_H

#include <stddef.h>
#include <stdint.h>

#include "llmux/hist.h"
#include "proc.h"

#define LOAD_MAX_HEADERS 16

struct load_opts {
    char host[64];
    int port;
    char path[256];
    int conns;         /* concurrent connections */
    double rate;       /* open loop, requests per second; 0: closed loop */
    uint64_t requests; /* measured requests to send; 0: no count limit */
    double duration_s; /* measured seconds; 0: no time limit */
    double warmup_s;   /* seconds of load before measuring starts */
    int stream;        /* ask for an SSE stream */
    size_t body_bytes; /* approximate request body size */
    const char *model;
    const char *headers[LOAD_MAX_HEADERS]; /* "Name: value" */
    int n_headers;
    int max_connecting; /* connection attempts in progress at once */
    double timeout_s;   /* a request unanswered after this long fails as a timeout */
    int pid;            /* process to sample (CPU, RSS); 0: none */
    int sample_ms;      /* also sample every this many ms, keeping the sample taken when the
                         * most answers were in flight (peak); 0: never */
};

struct load_result {
    uint64_t ok;
    uint64_t err_status;     /* non-2xx answers */
    uint64_t err_conn;       /* connect failures, resets, protocol errors */
    uint64_t err_incomplete; /* streams that ended without [DONE] */
    uint64_t err_timeout;    /* still in flight when the grace period ended */
    int last_status;         /* the last non-2xx status seen */
    char last_error[96];     /* the last connection-level error */
    double elapsed_s;        /* from the start of measuring to the last measured answer */
    struct hist total, ttfb, first_event, gap, max_gap;
    struct hist transit; /* send -> arrival of events stamped by mockllm (script stamp=1) */
    struct hist server_overhead; /* the proxy's own time from its Server-Timing (llmux) */
    /* process samples: before connecting, at the start of measuring, at the peak (see
     * sample_ms), and at the end */
    struct proc_sample p_before, p_start, p_peak, p_end;
    uint64_t peak_inflight; /* answers in flight (first byte seen) when p_peak was taken */
    double peak_at_s;       /* seconds from the start to p_peak */
};

/* Run one load as described by o; fills r (caller allocates it; it is large). Returns 0, or a
 * negative libuv code when the run could not start. */
int load_run(const struct load_opts *o, struct load_result *r);

#endif
