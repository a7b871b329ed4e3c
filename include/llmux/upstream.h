/* upstream: HTTP/1.1 client requests to provider origins over a keep-alive pool.
 *
 * pool    - per loop: origins (scheme, host, port, TLS context) each with a list of idle
 *           connections, capped in number and closed after an idle timeout. An idle connection
 *           that receives anything (a close, a TLS close-notify) is dropped at once, so a
 *           reused connection is one the server still considered open.
 * upstream - one request/response on one connection: idle connection from the pool, or
 *           dns -> tcp (each address in turn) -> tls. The response is parsed with llhttp in
 *           response mode (content-length, chunked or close-delimited) and delivered as
 *           callbacks; the connection goes back to the pool only when the response was
 *           complete, the request fully sent and the server allows keep-alive. If a reused
 *           connection closes before any response byte within the millisecond of the write (the
 *           server closed it while idle, so it never saw the request), the request is sent
 *           once more on a fresh connection; a later close is an ordinary failure (the server
 *           may have been generating: resending would bill twice).
 *
 * Lifetime: upstream_start() allocates; after on_done returns, or after upstream_cancel(),
 * the upstream is gone. upstream_cancel() is safe from inside its own callbacks.
 */
#ifndef LLMUX_UPSTREAM_H
#define LLMUX_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "llmux/server.h"

struct dns;
struct tls_ctx;
struct pool;
struct origin;
struct upstream;

struct pool_stats {
    uint64_t connects;    /* new connections made */
    uint64_t reuses;      /* requests sent on a pooled connection */
    uint64_t idle;        /* idle connections now */
    uint64_t open;        /* connections now (busy, idle or closing) */
    uint64_t tls_full;    /* TLS handshakes of new connections: full (key exchange and */
    uint64_t tls_resumed; /* certificate check) or resuming the origin's session */
};

int pool_create(uv_loop_t *loop, struct dns *dns, size_t max_idle, uint32_t idle_timeout_ms,
                struct pool **out);
/* Close every idle connection and free the pool once handles are closed. In-flight upstreams
 * must have ended before. */
void pool_close(struct pool *p);
const struct pool_stats *pool_get_stats(const struct pool *p);

/* The origin for scheme/host/port (tls NULL: http). Created on first use, lives with the pool.
 * host is copied. */
struct origin *pool_origin(struct pool *p, struct tls_ctx *tls, const char *host, uint16_t port);

struct upstream_cbs {
    /* The connection is ready and the request is being written (for timing). May be NULL. */
    void (*on_sent)(void *data);
    /* The response head: status and headers, borrowed for the call. */
    void (*on_head)(void *data, int status, const struct http_header *h, size_t n);
    /* Body bytes, de-chunked; borrowed for the call. */
    void (*on_body)(void *data, const char *p, size_t n);
    /* The response completed (status 0) or failed (< 0: UV_ECONNREFUSED, UV_ECONNRESET,
     * UV_EOF for a premature close, LLMUX_ETLSVERIFY, LLMUX_EDNS, LLMUX_EHTTP, ...). detail
     * is a short client-safe text. The upstream is freed after this returns. */
    void (*on_done)(void *data, int status, const char *detail);
};

/* Send a request to an origin. bufs (request line, headers and body) are borrowed until
 * on_done or upstream_cancel(). Returns 0 and calls on_done exactly once later, or a negative
 * code and never calls back. */
int upstream_start(struct pool *p, struct origin *o, const uv_buf_t *bufs, unsigned nbufs,
                   const struct upstream_cbs *cbs, void *data, struct upstream **out);
/* Stop now: the connection is closed (with a reset, so the server stops generating at once);
 * no callback follows. */
void upstream_cancel(struct upstream *u);
/* Backpressure: stop/resume reading the response. */
void upstream_read_stop(struct upstream *u);
void upstream_read_start(struct upstream *u);

/* The upstream as the exchange sees it: the functions above behind one table, so a unit test
 * can stand in for the network and drive an exchange's callbacks in any order
 * (test/test_exchange.c). Production uses upstream_real. */
struct upstream_ops {
    int (*start)(struct pool *p, struct origin *o, const uv_buf_t *bufs, unsigned nbufs,
                 const struct upstream_cbs *cbs, void *data, struct upstream **out);
    void (*cancel)(struct upstream *u);
    void (*read_stop)(struct upstream *u);
    void (*read_start)(struct upstream *u);
};
extern const struct upstream_ops upstream_real;

#endif
