/* upstream: HTTP/1.1 client over a keep-alive pool. See include/llmux/upstream.h.
 *
 * Types:
 *   struct pool     - origins + one sweep timer closing expired idle connections.
 *   struct origin   - scheme/host/port/TLS context and its idle list (most recent first).
 *   struct upconn   - one upstream connection (owns the conn); idle in its origin's list, or
 *                     serving exactly one upstream (`user`).
 *   struct upstream - one request: resolving, connecting, sending, reading the response.
 *
 * Re-entrancy: every entry from the loop into an upstream (dns, conn callbacks) goes through
 * enter()/leave(); upstream_cancel() or the end of on_done() inside a callback only marks the
 * upstream dead and leave() frees it when the outermost callback returns.
 */
#include "llmux/upstream.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/buf.h"
#include "llmux/conn.h"
#include "llmux/dns.h"
#include "llmux/errors.h"
#include "llmux/headers.h"

#define MAX_ADDRS 8
#define MAX_RESP_HEAD_BYTES (64 * 1024)
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct origin {
    struct pool *pool;
    struct tls_ctx *tls;
    char *host;
    uint16_t port;
    struct upconn *idle; /* most recently used first */
    size_t n_idle;
    struct origin *next;
};

struct pool {
    uv_loop_t *loop;
    struct dns *dns;
    size_t max_idle;
    uint32_t idle_timeout_ms;
    uv_timer_t sweep;
    struct origin *origins;
    struct pool_stats stats;
    size_t live; /* upconns not yet freed */
    int timer_open;
    int closing;
};

struct upconn {
    struct conn *conn;
    struct origin *origin;
    struct upstream *user; /* NULL while idle or closing */
    struct upconn *next, *prev;
    uint64_t idle_since;
    int idle;
    int closing;
};

enum upstream_state { UP_RESOLVING, UP_CONNECTING, UP_WAITING, UP_DONE };

struct upstream {
    struct pool *pool;
    struct origin *origin;
    uv_buf_t iov[8];
    unsigned nbufs;
    const struct upstream_cbs *cbs;
    void *data;
    enum upstream_state state;
    struct dns_query *dq;
    union addr {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } addrs[MAX_ADDRS]; /* not sockaddr_storage: 28 bytes each instead of 128 */
    size_t n_addrs, next_addr;
    struct upconn *uc;
    llhttp_t parser;
    struct buf head; /* response header names/values, NUL-terminated */
    struct headers headers; /* offsets into `head` */
    int complete; /* on_message_complete seen */
    int got_bytes;
    int reused;
    int retried;
    uint64_t sent_at; /* uv_now() when the request was written on a reused connection */
    int in_cb;
    int dead;
    int last_err;
    char detail[192];
};

static llhttp_settings_t resp_settings;
static void upstream_connect_next(struct upstream *u);
static void upconn_close(struct upconn *uc, int reset);
static void upstream_fail(struct upstream *u, int status, const char *detail);

/* ---- pool ---- */

static void on_sweep(uv_timer_t *t)
{
    struct pool *p = container_of(t, struct pool, sweep);
    uint64_t now = uv_now(p->loop);
    for (struct origin *o = p->origins; o; o = o->next) {
        struct upconn *uc = o->idle;
        while (uc) {
            struct upconn *next = uc->next;
            if (now - uc->idle_since >= p->idle_timeout_ms)
                upconn_close(uc, 0);
            uc = next;
        }
    }
}

int pool_create(uv_loop_t *loop, struct dns *dns, size_t max_idle, uint32_t idle_timeout_ms,
                struct pool **out)
{
    struct pool *p = calloc(1, sizeof(*p));
    if (!p)
        return UV_ENOMEM;
    p->loop = loop;
    p->dns = dns;
    p->max_idle = max_idle;
    p->idle_timeout_ms = idle_timeout_ms ? idle_timeout_ms : 60000;
    uv_timer_init(loop, &p->sweep);
    uint64_t every = p->idle_timeout_ms < 1000 ? p->idle_timeout_ms : 1000;
    uv_timer_start(&p->sweep, on_sweep, every, every);
    uv_unref((uv_handle_t *)&p->sweep);
    p->timer_open = 1;

    llhttp_settings_init(&resp_settings);
    *out = p;
    return 0;
}

static void pool_maybe_free(struct pool *p)
{
    if (!p->closing || p->timer_open || p->live > 0)
        return;
    struct origin *o = p->origins;
    while (o) {
        struct origin *next = o->next;
        free(o->host);
        free(o);
        o = next;
    }
    free(p);
}

static void on_sweep_closed(uv_handle_t *h)
{
    struct pool *p = container_of((uv_timer_t *)h, struct pool, sweep);
    p->timer_open = 0;
    pool_maybe_free(p);
}

static void idle_unlink(struct upconn *uc)
{
    struct origin *o = uc->origin;
    if (!uc->idle)
        return;
    if (uc->prev)
        uc->prev->next = uc->next;
    else
        o->idle = uc->next;
    if (uc->next)
        uc->next->prev = uc->prev;
    uc->next = uc->prev = NULL;
    uc->idle = 0;
    o->n_idle--;
    o->pool->stats.idle--;
}

static void upconn_close(struct upconn *uc, int reset)
{
    if (uc->closing)
        return;
    idle_unlink(uc);
    uc->closing = 1;
    uc->user = NULL;
    conn_close(uc->conn, reset);
}

void pool_close(struct pool *p)
{
    p->closing = 1;
    for (struct origin *o = p->origins; o; o = o->next)
        while (o->idle)
            upconn_close(o->idle, 0);
    if (p->timer_open && !uv_is_closing((uv_handle_t *)&p->sweep))
        uv_close((uv_handle_t *)&p->sweep, on_sweep_closed);
}

const struct pool_stats *pool_get_stats(const struct pool *p)
{
    return &p->stats;
}

struct origin *pool_origin(struct pool *p, struct tls_ctx *tls, const char *host, uint16_t port)
{
    for (struct origin *o = p->origins; o; o = o->next)
        if (o->tls == tls && o->port == port && strcmp(o->host, host) == 0)
            return o;
    struct origin *o = calloc(1, sizeof(*o));
    if (!o)
        return NULL;
    o->host = strdup(host);
    if (!o->host) {
        free(o);
        return NULL;
    }
    o->pool = p;
    o->tls = tls;
    o->port = port;
    o->next = p->origins;
    p->origins = o;
    return o;
}

/* The response ended cleanly: keep the connection for the next request when allowed. */
static void upconn_release(struct upconn *uc, int reusable)
{
    struct origin *o = uc->origin;
    struct pool *p = o->pool;
    uc->user = NULL;
    if (!reusable || p->closing || o->n_idle >= p->max_idle) {
        upconn_close(uc, 0);
        return;
    }
    uc->idle = 1;
    uc->idle_since = uv_now(p->loop);
    uc->prev = NULL;
    uc->next = o->idle;
    if (o->idle)
        o->idle->prev = uc;
    o->idle = uc;
    o->n_idle++;
    p->stats.idle++;
    conn_read_start(uc->conn);
}

/* ---- upstream lifetime ---- */

static void upstream_free(struct upstream *u)
{
    buf_free(&u->head);
    free(u);
}

static void enter(struct upstream *u)
{
    u->in_cb++;
}

/* Returns 1 when the upstream was freed (the caller must not touch it). */
static int leave(struct upstream *u)
{
    if (--u->in_cb == 0 && u->dead) {
        upstream_free(u);
        return 1;
    }
    return 0;
}

static void upstream_finish(struct upstream *u, int status, const char *detail)
{
    u->state = UP_DONE;
    enter(u);
    u->cbs->on_done(u->data, status, detail);
    u->dead = 1;
    leave(u);
}

static void upstream_fail(struct upstream *u, int status, const char *detail)
{
    if (u->state == UP_DONE || u->dead)
        return;
    if (u->uc) {
        upconn_close(u->uc, 0);
        u->uc = NULL;
    }
    upstream_finish(u, status, detail);
}

/* ---- conn callbacks (shared by idle and busy connections) ---- */

static void upstream_send(struct upstream *u)
{
    u->state = UP_WAITING;
    u->complete = 0;
    u->got_bytes = 0;
    buf_reset(&u->head);
    headers_reset(&u->headers, &u->head);
    llhttp_init(&u->parser, HTTP_RESPONSE, &resp_settings);
    int rc = conn_write(u->uc->conn, u->iov, u->nbufs);
    if (rc) {
        upstream_fail(u, rc, "writing the request failed");
        return;
    }
    if (u->cbs->on_sent)
        u->cbs->on_sent(u->data);
}

static void on_uc_connect(struct conn *c, int status)
{
    struct upconn *uc = conn_data(c);
    struct upstream *u = uc->user;
    if (!u)
        return;
    enter(u);
    if (status < 0) {
        u->last_err = status;
        char addr[64] = "";
        const union addr *sa = &u->addrs[u->next_addr - 1];
        if (sa->sa.sa_family == AF_INET6)
            uv_ip6_name(&sa->in6, addr, sizeof(addr));
        else
            uv_ip4_name(&sa->in, addr, sizeof(addr));
        const char *why = conn_error(c);
        snprintf(u->detail, sizeof(u->detail), "%s %s:%u: %s", status == LLMUX_ETLSVERIFY || status == LLMUX_ETLS ? "TLS with" : "connect to",
                 addr, u->origin->port, why && *why ? why : llmux_strerror(status));
        upconn_close(uc, 0);
        u->uc = NULL;
        upstream_connect_next(u);
    } else {
        u->pool->stats.connects++;
        if (u->origin->tls)
            (*(conn_tls_resumed(c) ? &u->pool->stats.tls_resumed : &u->pool->stats.tls_full))++;
        upstream_send(u);
    }
    leave(u);
}

static struct upstream *parser_upstream(llhttp_t *p)
{
    return container_of(p, struct upstream, parser);
}

/* Headers past HEADERS_MAX are dropped: the ones we use come first in every real server. */
static int header_rc(int rc)
{
    return rc == HEADERS_EFULL ? 0 : rc ? HPE_USER : 0;
}

static int on_r_header_field(llhttp_t *p, const char *at, size_t len)
{
    return header_rc(headers_field(&parser_upstream(p)->headers, at, len));
}

static int on_r_header_field_complete(llhttp_t *p)
{
    return header_rc(headers_field_complete(&parser_upstream(p)->headers));
}

static int on_r_header_value(llhttp_t *p, const char *at, size_t len)
{
    return header_rc(headers_value(&parser_upstream(p)->headers, at, len));
}

static int on_r_header_value_complete(llhttp_t *p)
{
    return header_rc(headers_value_complete(&parser_upstream(p)->headers));
}

static int on_r_headers_complete(llhttp_t *p)
{
    struct upstream *u = parser_upstream(p);
    int status = llhttp_get_status_code(p);
    if (status < 100) /* no such status: a response we cannot frame */
        return HPE_USER;
    if (status < 200) { /* 1xx: informational, without a body; the final head starts afresh */
        buf_reset(&u->head);
        headers_reset(&u->headers, &u->head);
        return 1;
    }
    struct http_header hs[HEADERS_MAX];
    size_t n = headers_view(&u->headers, hs);
    u->cbs->on_head(u->data, status, hs, n);
    return u->dead ? HPE_USER : 0;
}

static int on_r_body(llhttp_t *p, const char *at, size_t len)
{
    struct upstream *u = parser_upstream(p);
    u->cbs->on_body(u->data, at, len);
    return u->dead ? HPE_USER : 0;
}

static int on_r_message_complete(llhttp_t *p)
{
    struct upstream *u = parser_upstream(p);
    if (llhttp_get_status_code(p) < 200)
        return 0;
    u->complete = 1;
    return HPE_PAUSED;
}

static void upstream_complete(struct upstream *u, int extra_bytes)
{
    struct upconn *uc = u->uc;
    u->uc = NULL;
    /* reusable only if nothing follows the response, not even in TLS buffers, and the whole
     * request went out (a server may answer before reading all of it) */
    upconn_release(uc, !extra_bytes && llhttp_should_keep_alive(&u->parser) &&
                           conn_pending(uc->conn) == 0 && conn_queued(uc->conn) == 0);
    upstream_finish(u, 0, "");
}

static void on_uc_read(struct conn *c, const char *data, size_t len)
{
    struct upconn *uc = conn_data(c);
    struct upstream *u = uc->user;
    if (!u) {
        upconn_close(uc, 0); /* bytes on an idle connection: it cannot be reused */
        return;
    }
    enter(u);
    u->got_bytes = 1;
    llhttp_errno_t err = llhttp_execute(&u->parser, data, len);
    if (u->dead) {
        leave(u);
        return;
    }
    if (err == HPE_PAUSED && u->complete) {
        size_t used = (size_t)(llhttp_get_error_pos(&u->parser) - data);
        upstream_complete(u, used < len);
    } else if (err != HPE_OK) {
        snprintf(u->detail, sizeof(u->detail), "malformed HTTP response: %s",
                 llhttp_get_error_reason(&u->parser));
        upstream_fail(u, LLMUX_EHTTP, u->detail);
    }
    leave(u);
}

static void upstream_retry_fresh(struct upstream *u);

/* The server closed: that completes a body delimited by the close (llhttp_finish runs
 * on_message_complete, which pauses as for any other end of message). */
static int close_ends_body(struct upstream *u)
{
    llhttp_errno_t err = llhttp_finish(&u->parser);
    return (err == HPE_OK || err == HPE_PAUSED) && u->complete;
}

static void on_uc_eof(struct conn *c, int status)
{
    struct upconn *uc = conn_data(c);
    struct upstream *u = uc->user;
    if (!u) {
        upconn_close(uc, 0);
        return;
    }
    enter(u);
    /* A pooled connection that closes before any answer is sent once more on a new one only
     * when the close came at once (within the millisecond of the write): the server closed it
     * while idle and never read the request. Later, the provider may have been working on it
     * (a model thinking for a minute behind a balancer with a shorter idle timeout): resending
     * would bill a second generation unseen, so that is an ordinary failure the exchange
     * decides about. */
    if (u->reused && !u->got_bytes && !u->retried && uv_now(u->pool->loop) == u->sent_at) {
        upstream_retry_fresh(u);
    } else if (status == UV_EOF && u->got_bytes && close_ends_body(u)) {
        upstream_complete(u, 1); /* close-delimited body ended */
    } else if (!u->dead) {
        snprintf(u->detail, sizeof(u->detail), "%s%s",
                 status == UV_EOF ? "upstream closed the connection before the response ended"
                                  : llmux_strerror(status),
                 u->reused && !u->got_bytes ? " (a pooled connection, after the request was sent)"
                                            : "");
        upstream_fail(u, status == UV_EOF ? UV_EOF : status, u->detail);
    }
    leave(u);
}

static void on_uc_closed(struct conn *c)
{
    struct upconn *uc = conn_data(c);
    struct pool *p = uc->origin->pool;
    free(uc);
    p->live--;
    p->stats.open = p->live;
    pool_maybe_free(p);
}

static const struct conn_cbs upconn_cbs = {
    .on_connect = on_uc_connect,
    .on_read = on_uc_read,
    .on_eof = on_uc_eof,
    .on_close = on_uc_closed,
};

/* ---- connecting ---- */

static void upstream_connect_next(struct upstream *u)
{
    while (u->next_addr < u->n_addrs) {
        const union addr *sa = &u->addrs[u->next_addr++];
        struct upconn *uc = calloc(1, sizeof(*uc));
        if (!uc) {
            upstream_fail(u, UV_ENOMEM, "out of memory");
            return;
        }
        uc->origin = u->origin;
        uc->user = u;
        int rc = conn_connect(u->pool->loop, &sa->sa, u->origin->tls,
                              u->origin->host, &upconn_cbs, uc, &uc->conn);
        if (rc == 0) {
            u->pool->live++;
            u->pool->stats.open = u->pool->live;
            u->uc = uc;
            u->state = UP_CONNECTING;
            return;
        }
        free(uc);
        u->last_err = rc;
        snprintf(u->detail, sizeof(u->detail), "connect to %s:%u: %s", u->origin->host,
                 u->origin->port, llmux_strerror(rc));
    }
    upstream_fail(u, u->last_err ? u->last_err : UV_ECONNREFUSED,
                  u->detail[0] ? u->detail : "no address to connect to");
}

static void on_resolved(void *data, int status, const struct sockaddr_storage *addrs, size_t n)
{
    struct upstream *u = data;
    u->dq = NULL;
    enter(u);
    if (status < 0) {
        snprintf(u->detail, sizeof(u->detail), "resolving %s: %s", u->origin->host,
                 llmux_strerror(status));
        upstream_fail(u, status, u->detail);
    } else {
        u->n_addrs = n < MAX_ADDRS ? n : MAX_ADDRS;
        for (size_t i = 0; i < u->n_addrs; i++) {
            if (addrs[i].ss_family == AF_INET6) {
                memcpy(&u->addrs[i].in6, &addrs[i], sizeof(u->addrs[i].in6));
                u->addrs[i].in6.sin6_port = htons(u->origin->port);
            } else {
                memcpy(&u->addrs[i].in, &addrs[i], sizeof(u->addrs[i].in));
                u->addrs[i].in.sin_port = htons(u->origin->port);
            }
        }
        u->next_addr = 0;
        upstream_connect_next(u);
    }
    leave(u);
}

static int upstream_resolve(struct upstream *u)
{
    u->state = UP_RESOLVING;
    return dns_resolve(u->pool->dns, u->origin->host, on_resolved, u, &u->dq);
}

static void upstream_retry_fresh(struct upstream *u)
{
    u->retried = 1;
    u->reused = 0;
    upconn_close(u->uc, 0);
    u->uc = NULL;
    int rc = upstream_resolve(u);
    if (rc)
        upstream_fail(u, rc, "resolving failed");
}

int upstream_start(struct pool *p, struct origin *o, const uv_buf_t *bufs, unsigned nbufs,
                   const struct upstream_cbs *cbs, void *data, struct upstream **out)
{
    if (nbufs > 8)
        return UV_EINVAL;
    if (!resp_settings.on_headers_complete) {
        resp_settings.on_header_field = on_r_header_field;
        resp_settings.on_header_field_complete = on_r_header_field_complete;
        resp_settings.on_header_value = on_r_header_value;
        resp_settings.on_header_value_complete = on_r_header_value_complete;
        resp_settings.on_headers_complete = on_r_headers_complete;
        resp_settings.on_body = on_r_body;
        resp_settings.on_message_complete = on_r_message_complete;
    }
    struct upstream *u = calloc(1, sizeof(*u));
    if (!u)
        return UV_ENOMEM;
    u->pool = p;
    u->origin = o;
    memcpy(u->iov, bufs, nbufs * sizeof(uv_buf_t));
    u->nbufs = nbufs;
    u->cbs = cbs;
    u->data = data;
    buf_init(&u->head, MAX_RESP_HEAD_BYTES);
    headers_reset(&u->headers, &u->head);
    *out = u;
    if (o->idle) {
        /* Write on the most recently used idle connection; on_sent runs before we return. */
        struct upconn *uc = o->idle;
        idle_unlink(uc);
        uc->user = u;
        u->uc = uc;
        u->reused = 1;
        u->state = UP_WAITING;
        u->sent_at = uv_now(p->loop);
        llhttp_init(&u->parser, HTTP_RESPONSE, &resp_settings);
        if (conn_write(uc->conn, u->iov, u->nbufs) == 0) {
            p->stats.reuses++;
            if (cbs->on_sent)
                cbs->on_sent(data);
            return 0;
        }
        upconn_close(uc, 0); /* broken while idle: connect afresh */
        u->uc = NULL;
        u->reused = 0;
    }
    int rc = upstream_resolve(u);
    if (rc) {
        upstream_free(u);
        *out = NULL;
        return rc;
    }
    return 0;
}

void upstream_cancel(struct upstream *u)
{
    if (u->dead)
        return;
    if (u->dq) {
        dns_cancel(u->dq);
        u->dq = NULL;
    }
    if (u->uc) {
        upconn_close(u->uc, 1);
        u->uc = NULL;
    }
    u->state = UP_DONE;
    u->dead = 1;
    if (u->in_cb == 0)
        upstream_free(u);
}

void upstream_read_stop(struct upstream *u)
{
    if (u->uc)
        conn_read_stop(u->uc->conn);
}

void upstream_read_start(struct upstream *u)
{
    if (u->uc)
        conn_read_start(u->uc->conn);
}

const struct upstream_ops upstream_real = {
    .start = upstream_start,
    .cancel = upstream_cancel,
    .read_stop = upstream_read_stop,
    .read_start = upstream_read_start,
};
