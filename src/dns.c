/* dns: c-ares on the libuv loop with a TTL cache. See include/llmux/dns.h.
 *
 * Types: struct dns (channel, one uv_timer for c-ares timeouts, one uv_timer for delivering
 * ready answers, the poll watchers and the cache); struct dns_query (one caller's request);
 * struct watcher (one uv_poll per c-ares socket, freed in its close callback).
 * Answers are never delivered from inside dns_resolve(): queries whose answer is known (cache,
 * numeric address, or c-ares answering synchronously from /etc/hosts) go to the `ready` list
 * and the zero-delay `deliver` timer calls them back on the next loop iteration.
 */
#include "llmux/dns.h"

#include <ares.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/errors.h"

#define MAX_ANSWERS 8
#define CACHE_MAX 1024
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct cache_entry {
    char *host;
    uint64_t expires;
    int status;
    struct sockaddr_storage addrs[MAX_ANSWERS];
    size_t n;
    struct cache_entry *next;
};

struct watcher {
    uv_poll_t poll;
    struct dns *d;
    ares_socket_t fd;
    struct watcher *next;
};

struct dns_query {
    struct dns *d;
    char *host;
    dns_cb cb;
    void *data;
    int cancelled;
    int status;
    struct sockaddr_storage addrs[MAX_ANSWERS];
    size_t n;
    int pending_ares; /* c-ares still holds a pointer to us */
    struct dns_query *next; /* in the ready list */
};

struct dns {
    uv_loop_t *loop;
    ares_channel channel;
    uv_timer_t timeout;
    uv_timer_t deliver;
    int handles;
    int closing;
    int in_ares; /* inside an ares call: callbacks may be running */
    struct watcher *watchers;
    struct dns_query *ready;
    struct cache_entry *cache;
    size_t cache_n;
    size_t cache_hits;
};

static void on_deliver(uv_timer_t *t);

/* ---- socket watching ---- */

static void process_timeouts(struct dns *d);

static void on_poll(uv_poll_t *p, int status, int events)
{
    struct watcher *w = container_of(p, struct watcher, poll);
    struct dns *d = w->d;
    ares_socket_t r = ARES_SOCKET_BAD, wr = ARES_SOCKET_BAD;
    if (status < 0 || (events & UV_READABLE))
        r = w->fd;
    if (status < 0 || (events & UV_WRITABLE))
        wr = w->fd;
    d->in_ares++;
    ares_process_fd(d->channel, r, wr);
    d->in_ares--;
    process_timeouts(d);
}

static void on_watcher_closed(uv_handle_t *h)
{
    struct watcher *w = container_of((uv_poll_t *)h, struct watcher, poll);
    struct dns *d = w->d;
    free(w);
    if (--d->handles == 0)
        free(d);
}

static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *d = data;
    struct watcher **pp = &d->watchers, *w;
    for (w = *pp; w && w->fd != fd; pp = &w->next, w = *pp)
        ;
    if (!readable && !writable) {
        if (w) {
            *pp = w->next;
            uv_poll_stop(&w->poll);
            uv_close((uv_handle_t *)&w->poll, on_watcher_closed);
        }
        return;
    }
    if (!w) {
        w = calloc(1, sizeof(*w));
        if (!w || uv_poll_init_socket(d->loop, &w->poll, fd) != 0) {
            free(w);
            return;
        }
        w->d = d;
        w->fd = fd;
        w->next = d->watchers;
        d->watchers = w;
        d->handles++;
    }
    uv_poll_start(&w->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

static void on_ares_timeout(uv_timer_t *t)
{
    struct dns *d = container_of(t, struct dns, timeout);
    d->in_ares++;
    ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    d->in_ares--;
    process_timeouts(d);
}

static void process_timeouts(struct dns *d)
{
    if (d->closing)
        return;
    struct timeval tv, *tvp = ares_timeout(d->channel, NULL, &tv);
    if (tvp)
        uv_timer_start(&d->timeout, on_ares_timeout, (uint64_t)tvp->tv_sec * 1000 + (uint64_t)tvp->tv_usec / 1000 + 1, 0);
    else
        uv_timer_stop(&d->timeout);
}

/* ---- cache ---- */

static struct cache_entry *cache_find(struct dns *d, const char *host)
{
    uint64_t now = uv_now(d->loop);
    for (struct cache_entry *e = d->cache; e; e = e->next)
        if (strcmp(e->host, host) == 0)
            return e->expires > now ? e : NULL;
    return NULL;
}

static void cache_store(struct dns *d, const char *host, int status,
                        const struct sockaddr_storage *addrs, size_t n, uint32_t ttl_ms)
{
    struct cache_entry **pp = &d->cache, *e;
    for (e = *pp; e && strcmp(e->host, host) != 0; pp = &e->next, e = *pp)
        ;
    if (!e) {
        if (d->cache_n >= CACHE_MAX) { /* drop the oldest (the tail) */
            struct cache_entry **t = &d->cache;
            while ((*t)->next)
                t = &(*t)->next;
            free((*t)->host);
            free(*t);
            *t = NULL;
            d->cache_n--;
        }
        e = calloc(1, sizeof(*e));
        if (!e)
            return;
        e->host = strdup(host);
        if (!e->host) {
            free(e);
            return;
        }
        e->next = d->cache;
        d->cache = e;
        d->cache_n++;
    }
    e->status = status;
    e->n = n;
    memcpy(e->addrs, addrs, n * sizeof(*addrs));
    e->expires = uv_now(d->loop) + ttl_ms;
}

/* ---- queries ---- */

static void make_ready(struct dns_query *q)
{
    struct dns *d = q->d;
    q->next = NULL;
    struct dns_query **pp = &d->ready;
    while (*pp)
        pp = &(*pp)->next;
    *pp = q;
    uv_timer_start(&d->deliver, on_deliver, 0, 0);
}

static void on_deliver(uv_timer_t *t)
{
    struct dns *d = container_of(t, struct dns, deliver);
    struct dns_query *q = d->ready;
    d->ready = NULL;
    while (q) {
        struct dns_query *next = q->next;
        if (!q->cancelled)
            q->cb(q->data, q->status, q->addrs, q->n);
        free(q->host);
        free(q);
        q = next;
    }
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct dns_query *q = arg;
    struct dns *d = q->d;
    q->pending_ares = 0;
    int ttl = 300;
    q->n = 0;
    if (status == ARES_SUCCESS && res) {
        for (struct ares_addrinfo_node *nd = res->nodes; nd && q->n < MAX_ANSWERS; nd = nd->ai_next) {
            if (nd->ai_family != AF_INET && nd->ai_family != AF_INET6)
                continue;
            int dup = 0;
            for (size_t i = 0; i < q->n; i++)
                dup |= memcmp(&q->addrs[i], nd->ai_addr, nd->ai_addrlen) == 0;
            if (dup)
                continue;
            memset(&q->addrs[q->n], 0, sizeof(q->addrs[0]));
            memcpy(&q->addrs[q->n], nd->ai_addr, nd->ai_addrlen);
            q->n++;
            if (nd->ai_ttl >= 0 && nd->ai_ttl < ttl)
                ttl = nd->ai_ttl;
        }
    }
    if (res)
        ares_freeaddrinfo(res);
    if (status == ARES_EDESTRUCTION) {
        free(q->host);
        free(q);
        return;
    }
    q->status = q->n ? 0 : (status == ARES_ETIMEOUT ? UV_ETIMEDOUT : LLMUX_EDNS);
    if (ttl < 1)
        ttl = 1;
    cache_store(d, q->host, q->status, q->addrs, q->n, q->n ? (uint32_t)ttl * 1000 : 1000);
    make_ready(q);
}

int dns_resolve(struct dns *d, const char *host, dns_cb cb, void *data, struct dns_query **out)
{
    if (d->closing)
        return UV_ECANCELED;
    struct dns_query *q = calloc(1, sizeof(*q));
    if (!q || !(q->host = strdup(host))) {
        free(q);
        return UV_ENOMEM;
    }
    q->d = d;
    q->cb = cb;
    q->data = data;
    if (out)
        *out = q;
    struct sockaddr_in6 a6;
    struct sockaddr_in a4;
    const struct cache_entry *e;
    if (uv_ip4_addr(host, 0, &a4) == 0) {
        memcpy(&q->addrs[0], &a4, sizeof(a4));
        q->n = 1;
    } else if (uv_ip6_addr(host, 0, &a6) == 0) {
        memcpy(&q->addrs[0], &a6, sizeof(a6));
        q->n = 1;
    } else if ((e = cache_find(d, host)) != NULL) {
        d->cache_hits++;
        q->status = e->status;
        q->n = e->n;
        memcpy(q->addrs, e->addrs, e->n * sizeof(e->addrs[0]));
    } else {
        struct ares_addrinfo_hints hints;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        q->pending_ares = 1;
        d->in_ares++;
        ares_getaddrinfo(d->channel, host, NULL, &hints, on_addrinfo, q);
        d->in_ares--;
        process_timeouts(d);
        return 0; /* on_addrinfo queues it (possibly already did, from /etc/hosts) */
    }
    make_ready(q);
    return 0;
}

void dns_cancel(struct dns_query *q)
{
    q->cancelled = 1; /* freed after delivery, or when c-ares lets go of it */
}

int dns_create(uv_loop_t *loop, struct dns **out)
{
    static int initialised;
    if (!initialised && ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
        return UV_EINVAL;
    initialised = 1;
    struct dns *d = calloc(1, sizeof(*d));
    if (!d)
        return UV_ENOMEM;
    struct ares_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.sock_state_cb = on_sock_state;
    opts.sock_state_cb_data = d;
    opts.timeout = 1000;
    opts.tries = 2;
    if (ares_init_options(&d->channel, &opts,
                          ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES) != ARES_SUCCESS) {
        free(d);
        return LLMUX_EDNS;
    }
    d->loop = loop;
    uv_timer_init(loop, &d->timeout);
    uv_timer_init(loop, &d->deliver);
    d->handles = 2;
    *out = d;
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    struct dns *d = h->data;
    if (--d->handles == 0)
        free(d);
}

size_t dns_cache_hits(const struct dns *d)
{
    return d->cache_hits;
}

void dns_close(struct dns *d)
{
    d->closing = 1;
    /* Pending c-ares queries are called back with ARES_EDESTRUCTION and free themselves. */
    ares_destroy(d->channel);
    struct dns_query *q = d->ready;
    while (q) {
        struct dns_query *next = q->next;
        free(q->host);
        free(q);
        q = next;
    }
    d->ready = NULL;
    while (d->cache) {
        struct cache_entry *e = d->cache;
        d->cache = e->next;
        free(e->host);
        free(e);
    }
    while (d->watchers) {
        struct watcher *w = d->watchers;
        d->watchers = w->next;
        uv_close((uv_handle_t *)&w->poll, on_watcher_closed);
    }
    d->timeout.data = d;
    d->deliver.data = d;
    uv_close((uv_handle_t *)&d->timeout, on_timer_closed);
    uv_close((uv_handle_t *)&d->deliver, on_timer_closed);
}
