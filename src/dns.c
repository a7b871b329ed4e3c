/* dns: asynchronous name resolution with c-ares on the libuv loop, with a TTL cache.
 * See include/llmux/dns.h for the contract.
 *
 * Types and lifecycle:
 * - struct dns: one ares_channel; a uv_timer that drives c-ares' timeouts and retries; a uv_idle
 *   that delivers ready queries; the socket watchers, the lookups in flight and the cache.
 *   dns_close() destroys the channel and closes every handle; the last close callback frees it
 *   (`handles` counts the handles open or closing).
 * - struct dns_lookup: one ares_getaddrinfo() in flight for a name, shared by every query for that
 *   name that arrives meanwhile. c-ares holds a pointer to it until on_addrinfo(), which frees it;
 *   so a lookup outlives its queries when they are cancelled.
 * - struct dns_query: one caller's request. It waits in a lookup's `waiters`, then in the `ready`
 *   queue with its answer; it is freed after its callback, by dns_cancel() or by dns_close().
 * - struct dns_answer: addresses, reference-counted, shared by a cache entry and its queries.
 * - struct dns_sock: one uv_poll per c-ares socket, freed in its close callback.
 *
 * Invariants: callers' callbacks run only from on_idle(), never inside dns_resolve() and never
 * inside a c-ares call, even when the answer is known at once (numeric address, cache, or c-ares
 * answering from /etc/hosts inside ares_getaddrinfo()). So ares_destroy() cannot run from inside
 * a c-ares callback; `in_ares` still defers it in case dns_close() is ever reached from one.
 */
#include "llmux/dns.h"

#include <ares.h>
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/errors.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

enum {
    DNS_CACHE_MAX = 1024,  /* names kept in the cache */
    DNS_TTL_MIN_MS = 1000, /* bounds on a DNS answer's TTL */
    DNS_TTL_MAX_MS = 300 * 1000,
    DNS_TTL_HOSTS_MS = 60 * 1000, /* answers from /etc/hosts carry no TTL */
    DNS_TTL_FAIL_MS = 1000,       /* failures */
    DNS_TIMEOUT_MS = 2000,        /* c-ares' first try; it doubles each round */
    DNS_TRIES = 2,                /* so an unreachable server fails after ~6 s */
};

/* Intrusive circular doubly linked list; a head is a link to itself when empty. */
struct link {
    struct link *prev, *next;
};

static void link_init(struct link *l)
{
    l->prev = l->next = l;
}

static int link_empty(const struct link *head)
{
    return head->next == head;
}

static void link_push(struct link *head, struct link *l)
{
    l->prev = head->prev;
    l->next = head;
    head->prev->next = l;
    head->prev = l;
}

/* Unlinking an unlinked (self-linked) node is a no-op. */
static void link_remove(struct link *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    link_init(l);
}

/* Move every node of `from` to the empty list `to`. */
static void link_move(struct link *from, struct link *to)
{
    link_init(to);
    if (link_empty(from))
        return;
    to->next = from->next;
    to->prev = from->prev;
    to->next->prev = to;
    to->prev->next = to;
    link_init(from);
}

struct dns_answer {
    int refs;
    size_t n;
    struct sockaddr_storage addrs[];
};

struct dns_entry {
    struct link link; /* in dns.cache, newest first */
    uint64_t expires; /* uv_now() time */
    int status;
    struct dns_answer *answer; /* NULL when status < 0 */
    char host[];
};

struct dns_lookup {
    struct link link; /* in dns.lookups */
    struct dns *d;
    struct link waiters; /* dns_query.link */
    char host[];
};

struct dns_query {
    struct link link; /* in a lookup's waiters, then in dns.ready */
    struct dns *d;
    dns_cb cb;
    void *data;
    int status;
    struct dns_answer *answer; /* set once ready and status == 0 */
};

struct dns_sock {
    struct link link; /* in dns.socks until its poll starts closing */
    uv_poll_t poll;
    struct dns *d;
    ares_socket_t fd;
};

struct dns {
    uv_loop_t *loop;
    ares_channel channel; /* NULL once destroyed */
    uv_timer_t timer;     /* c-ares timeouts; armed from ares_timeout() */
    uv_idle_t idle;       /* active while `ready` is not empty */
    struct link socks;
    struct link lookups;
    struct link ready;
    struct link cache;
    size_t cache_size;
    size_t cache_hits;
    struct dns_lookup *starting; /* inside its ares_getaddrinfo(): a success is /etc/hosts */
    int in_ares;                 /* depth of c-ares calls on the stack */
    int closing;
    int handles;
};

static void on_idle(uv_idle_t *idle);
static void on_timer(uv_timer_t *timer);
static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res);
static void channel_destroy(struct dns *d);

static void answer_unref(struct dns_answer *a)
{
    if (a && --a->refs == 0)
        free(a);
}

/* ---- delivery ---- */

/* Queue q for its callback on the idle handle. Takes a reference on a (may be NULL). */
static void query_ready(struct dns_query *q, int status, struct dns_answer *a)
{
    struct dns *d = q->d;
    q->status = status;
    q->answer = a;
    if (a)
        a->refs++;
    link_remove(&q->link);
    link_push(&d->ready, &q->link);
    if (!uv_is_active((uv_handle_t *)&d->idle))
        uv_idle_start(&d->idle, on_idle);
}

static void query_free(struct dns_query *q)
{
    link_remove(&q->link);
    answer_unref(q->answer);
    free(q);
}

/* Calls back the queries that were ready when this iteration began; queries made ready by those
 * callbacks wait for the next iteration. Stops calling back if a callback closes the resolver. */
static void on_idle(uv_idle_t *idle)
{
    struct dns *d = container_of(idle, struct dns, idle);
    struct link batch;
    link_move(&d->ready, &batch);
    uv_idle_stop(idle);
    while (!link_empty(&batch)) {
        struct dns_query *q = container_of(batch.next, struct dns_query, link);
        link_remove(&q->link);
        if (!d->closing) {
            const struct sockaddr_storage *addrs = q->answer ? q->answer->addrs : NULL;
            q->cb(q->data, q->status, addrs, q->answer ? q->answer->n : 0);
        }
        query_free(q);
    }
}

/* ---- cache ---- */

static void entry_free(struct dns *d, struct dns_entry *e)
{
    link_remove(&e->link);
    answer_unref(e->answer);
    free(e);
    d->cache_size--;
}

/* The live entry for host, or NULL; an expired entry found on the way is dropped. */
static struct dns_entry *cache_find(struct dns *d, const char *host)
{
    for (struct link *l = d->cache.next; l != &d->cache; l = l->next) {
        struct dns_entry *e = container_of(l, struct dns_entry, link);
        if (strcmp(e->host, host) != 0)
            continue;
        if (e->expires > uv_now(d->loop))
            return e;
        entry_free(d, e);
        return NULL;
    }
    return NULL;
}

/* Remember a result; a failure to allocate only loses the cache entry. Takes a reference on a. */
static void cache_put(struct dns *d, const char *host, int status, struct dns_answer *a,
                      uint64_t ttl_ms)
{
    uint64_t now = uv_now(d->loop);
    if (d->cache_size >= DNS_CACHE_MAX) {
        struct link *l = d->cache.next;
        while (l != &d->cache) {
            struct dns_entry *e = container_of(l, struct dns_entry, link);
            l = l->next;
            if (e->expires <= now)
                entry_free(d, e);
        }
    }
    if (d->cache_size >= DNS_CACHE_MAX) /* none expired: drop the oldest */
        entry_free(d, container_of(d->cache.prev, struct dns_entry, link));
    size_t len = strlen(host);
    struct dns_entry *e = malloc(sizeof(*e) + len + 1);
    if (!e)
        return;
    memcpy(e->host, host, len + 1);
    e->expires = now + ttl_ms;
    e->status = status;
    e->answer = a;
    if (a)
        a->refs++;
    link_push(d->cache.next, &e->link); /* before the first: newest first */
    d->cache_size++;
}

/* ---- c-ares on the loop ---- */

/* Arm the timer for c-ares' next timeout, or stop it when nothing is pending. */
static void timer_arm(struct dns *d)
{
    struct timeval tv;
    struct timeval *tvp = ares_timeout(d->channel, NULL, &tv);
    if (!tvp) {
        uv_timer_stop(&d->timer);
        return;
    }
    uint64_t ms = (uint64_t)tvp->tv_sec * 1000 + ((uint64_t)tvp->tv_usec + 999) / 1000;
    uv_timer_start(&d->timer, on_timer, ms, 0);
}

static void ares_enter(struct dns *d)
{
    d->in_ares++;
}

/* After a c-ares call: finish a close deferred from inside it, or re-arm the timer. */
static void ares_leave(struct dns *d)
{
    if (--d->in_ares > 0)
        return;
    if (d->closing)
        channel_destroy(d);
    else
        timer_arm(d);
}

static void on_timer(uv_timer_t *timer)
{
    struct dns *d = container_of(timer, struct dns, timer);
    ares_enter(d);
    ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    ares_leave(d);
}

static void on_poll(uv_poll_t *poll, int status, int events)
{
    struct dns_sock *s = container_of(poll, struct dns_sock, poll);
    struct dns *d = s->d;
    /* On a poll error let c-ares read and write, so that it sees the error itself. */
    ares_socket_t r = (status < 0 || (events & UV_READABLE)) ? s->fd : ARES_SOCKET_BAD;
    ares_socket_t w = (status < 0 || (events & UV_WRITABLE)) ? s->fd : ARES_SOCKET_BAD;
    ares_enter(d);
    ares_process_fd(d->channel, r, w); /* may close s's poll (on_sock_state 0, 0) */
    ares_leave(d);
}

static void handle_closed(struct dns *d)
{
    if (--d->handles == 0)
        free(d);
}

static void on_sock_closed(uv_handle_t *h)
{
    struct dns_sock *s = container_of((uv_poll_t *)h, struct dns_sock, poll);
    struct dns *d = s->d;
    free(s);
    handle_closed(d);
}

static void sock_close(struct dns_sock *s)
{
    link_remove(&s->link);
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

/* c-ares opens, changes interest in, or (0, 0) closes a socket; it closes the fd right after. */
static void on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    struct dns *d = data;
    struct dns_sock *s = NULL;
    for (struct link *l = d->socks.next; l != &d->socks; l = l->next) {
        if (container_of(l, struct dns_sock, link)->fd == fd) {
            s = container_of(l, struct dns_sock, link);
            break;
        }
    }
    if (!readable && !writable) {
        if (s)
            sock_close(s);
        return;
    }
    if (!s) {
        /* Without a watcher the query can only time out, which the timer still handles. */
        s = calloc(1, sizeof(*s));
        if (!s)
            return;
        if (uv_poll_init_socket(d->loop, &s->poll, fd) != 0) {
            free(s);
            return;
        }
        s->d = d;
        s->fd = fd;
        link_push(&d->socks, &s->link);
        d->handles++;
    }
    uv_poll_start(&s->poll, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
}

/* ---- lookups ---- */

/* Not-found names are LLMUX_EDNS; server trouble is temporary (UV_EAI_AGAIN). */
static int status_from_ares(int status)
{
    switch (status) {
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
    case ARES_EBADNAME:
        return LLMUX_EDNS;
    case ARES_ETIMEOUT:
        return UV_ETIMEDOUT;
    case ARES_ENOMEM:
        return UV_ENOMEM;
    case ARES_ESERVFAIL:
    case ARES_EREFUSED:
    case ARES_ECONNREFUSED:
    case ARES_EFORMERR:
    case ARES_EBADRESP:
        return UV_EAI_AGAIN;
    default:
        return UV_EAI_FAIL;
    }
}

static int same_address(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0 &&
           x->sin6_scope_id == y->sin6_scope_id;
}

/* The IPv4 and IPv6 addresses of res, in c-ares' order (RFC 6724), without duplicates, port 0.
 * *ttl_s gets the smallest TTL seen. NULL if out of memory; n may be 0. */
static struct dns_answer *answer_from_ares(const struct ares_addrinfo *res, int *ttl_s)
{
    size_t max = 0;
    for (const struct ares_addrinfo_node *nd = res->nodes; nd; nd = nd->ai_next)
        max++;
    struct dns_answer *a = malloc(sizeof(*a) + max * sizeof(a->addrs[0]));
    if (!a)
        return NULL;
    a->refs = 1;
    a->n = 0;
    *ttl_s = INT32_MAX;
    for (const struct ares_addrinfo_node *nd = res->nodes; nd; nd = nd->ai_next) {
        struct sockaddr_storage *ss = &a->addrs[a->n];
        memset(ss, 0, sizeof(*ss));
        if (nd->ai_family == AF_INET && nd->ai_addrlen >= sizeof(struct sockaddr_in)) {
            memcpy(ss, nd->ai_addr, sizeof(struct sockaddr_in));
            ((struct sockaddr_in *)ss)->sin_port = 0;
        } else if (nd->ai_family == AF_INET6 && nd->ai_addrlen >= sizeof(struct sockaddr_in6)) {
            memcpy(ss, nd->ai_addr, sizeof(struct sockaddr_in6));
            ((struct sockaddr_in6 *)ss)->sin6_port = 0;
        } else {
            continue;
        }
        size_t i = 0;
        while (i < a->n && !same_address(&a->addrs[i], ss))
            i++;
        if (i == a->n)
            a->n++;
        if (nd->ai_ttl < *ttl_s)
            *ttl_s = nd->ai_ttl;
    }
    for (const struct ares_addrinfo_cname *c = res->cnames; c; c = c->next)
        if (c->ttl < *ttl_s)
            *ttl_s = c->ttl;
    return a;
}

/* c-ares is done with a lookup: answer its waiters, cache the result, free it. Also called with
 * ARES_EDESTRUCTION from ares_destroy(), when dns_close() has already freed the waiters. */
static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
    struct dns_lookup *lk = arg;
    struct dns *d = lk->d;
    struct dns_answer *a = NULL;
    int st = 0;
    uint64_t ttl_ms = DNS_TTL_FAIL_MS;
    if (status == ARES_SUCCESS && res) {
        int ttl_s;
        a = answer_from_ares(res, &ttl_s);
        if (!a) {
            st = UV_ENOMEM;
        } else if (a->n == 0) {
            st = LLMUX_EDNS;
        } else if (d->starting == lk) {
            ttl_ms = DNS_TTL_HOSTS_MS; /* answered inside ares_getaddrinfo(): /etc/hosts */
        } else {
            ttl_ms = ttl_s < 1 ? 0 : (uint64_t)ttl_s * 1000;
            ttl_ms = ttl_ms < DNS_TTL_MIN_MS ? DNS_TTL_MIN_MS : ttl_ms;
            ttl_ms = ttl_ms > DNS_TTL_MAX_MS ? DNS_TTL_MAX_MS : ttl_ms;
        }
    } else {
        st = status_from_ares(status);
    }
    if (res)
        ares_freeaddrinfo(res);
    if (st < 0) {
        answer_unref(a);
        a = NULL;
    }
    if (status != ARES_EDESTRUCTION && !d->closing) {
        if (st != UV_ENOMEM)
            cache_put(d, lk->host, st, a, ttl_ms);
        while (!link_empty(&lk->waiters))
            query_ready(container_of(lk->waiters.next, struct dns_query, link), st, a);
    }
    answer_unref(a);
    link_remove(&lk->link);
    free(lk);
}

static struct dns_lookup *lookup_find(struct dns *d, const char *host)
{
    for (struct link *l = d->lookups.next; l != &d->lookups; l = l->next) {
        struct dns_lookup *lk = container_of(l, struct dns_lookup, link);
        if (strcmp(lk->host, host) == 0)
            return lk;
    }
    return NULL;
}

/* Start a c-ares lookup with q as its first waiter. c-ares may answer (and free the lookup)
 * before this returns; q is then in the ready queue. */
static int lookup_start(struct dns *d, const char *host, struct dns_query *q)
{
    size_t len = strlen(host);
    struct dns_lookup *lk = malloc(sizeof(*lk) + len + 1);
    if (!lk)
        return UV_ENOMEM;
    memcpy(lk->host, host, len + 1);
    lk->d = d;
    link_init(&lk->waiters);
    link_push(&lk->waiters, &q->link);
    link_push(&d->lookups, &lk->link);

    struct ares_addrinfo_hints hints;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC; /* A and AAAA; c-ares sorts them by RFC 6724 */
    hints.ai_socktype = SOCK_STREAM;
    d->starting = lk;
    ares_enter(d);
    ares_getaddrinfo(d->channel, host, NULL, &hints, on_addrinfo, lk);
    d->starting = NULL;
    ares_leave(d);
    return 0;
}

/* ---- public ---- */

/* No ares_library_init(): c-ares 1.18 needs it only on Windows, and it is not thread-safe. */
int dns_create(uv_loop_t *loop, struct dns **out)
{
    struct dns *d = calloc(1, sizeof(*d));
    if (!d)
        return UV_ENOMEM;
    d->loop = loop;
    link_init(&d->socks);
    link_init(&d->lookups);
    link_init(&d->ready);
    link_init(&d->cache);

    struct ares_options opts;
    memset(&opts, 0, sizeof(opts));
    opts.sock_state_cb = on_sock_state;
    opts.sock_state_cb_data = d;
    opts.timeout = DNS_TIMEOUT_MS;
    opts.tries = DNS_TRIES;
    int rc = ares_init_options(&d->channel, &opts,
                               ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES);
    if (rc != ARES_SUCCESS) {
        free(d);
        return rc == ARES_ENOMEM ? UV_ENOMEM : LLMUX_EDNS;
    }
    uv_timer_init(loop, &d->timer);
    uv_idle_init(loop, &d->idle);
    d->handles = 2;
    *out = d;
    return 0;
}

int dns_resolve(struct dns *d, const char *host, dns_cb cb, void *data, struct dns_query **out)
{
    if (d->closing)
        return UV_ECANCELED;
    if (!host || !*host || !cb)
        return UV_EINVAL;
    struct dns_query *q = calloc(1, sizeof(*q));
    if (!q)
        return UV_ENOMEM;
    q->d = d;
    q->cb = cb;
    q->data = data;
    link_init(&q->link);

    union {
        struct sockaddr_in v4;
        struct sockaddr_in6 v6;
    } num;
    int family = 0;
    if (uv_ip4_addr(host, 0, &num.v4) == 0)
        family = AF_INET;
    else if (uv_ip6_addr(host, 0, &num.v6) == 0)
        family = AF_INET6;
    struct dns_entry *e = family ? NULL : cache_find(d, host);
    struct dns_lookup *lk = (family || e) ? NULL : lookup_find(d, host);

    if (family) { /* numeric: never reaches c-ares nor the cache */
        struct dns_answer *a = malloc(sizeof(*a) + sizeof(a->addrs[0]));
        if (!a) {
            free(q);
            return UV_ENOMEM;
        }
        a->refs = 1;
        a->n = 1;
        memset(&a->addrs[0], 0, sizeof(a->addrs[0]));
        memcpy(&a->addrs[0], &num, family == AF_INET ? sizeof(num.v4) : sizeof(num.v6));
        query_ready(q, 0, a);
        answer_unref(a);
    } else if (e) {
        d->cache_hits++;
        query_ready(q, e->status, e->answer);
    } else if (lk) {
        link_push(&lk->waiters, &q->link); /* the same name is already in flight */
    } else {
        int rc = lookup_start(d, host, q);
        if (rc < 0) {
            free(q);
            return rc;
        }
    }
    if (out)
        *out = q;
    return 0;
}

void dns_cancel(struct dns_query *q)
{
    query_free(q); /* its lookup, if any, stays with c-ares and fills the cache */
}

size_t dns_cache_hits(const struct dns *d)
{
    return d->cache_hits;
}

/* ares_destroy() calls on_addrinfo(ARES_EDESTRUCTION) for each lookup and reports its sockets
 * closed; any socket it did not report is closed here. */
static void channel_destroy(struct dns *d)
{
    if (!d->channel)
        return;
    ares_destroy(d->channel);
    d->channel = NULL;
    while (!link_empty(&d->socks))
        sock_close(container_of(d->socks.next, struct dns_sock, link));
    while (!link_empty(&d->lookups)) { /* c-ares can no longer call back */
        struct dns_lookup *lk = container_of(d->lookups.next, struct dns_lookup, link);
        link_remove(&lk->link);
        free(lk);
    }
    while (!link_empty(&d->cache))
        entry_free(d, container_of(d->cache.next, struct dns_entry, link));
}

static void on_own_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

void dns_close(struct dns *d)
{
    assert(!d->closing);
    d->closing = 1;
    while (!link_empty(&d->ready))
        query_free(container_of(d->ready.next, struct dns_query, link));
    for (struct link *l = d->lookups.next; l != &d->lookups; l = l->next) {
        struct dns_lookup *lk = container_of(l, struct dns_lookup, link);
        while (!link_empty(&lk->waiters))
            query_free(container_of(lk->waiters.next, struct dns_query, link));
    }
    d->timer.data = d;
    d->idle.data = d;
    uv_close((uv_handle_t *)&d->timer, on_own_closed);
    uv_close((uv_handle_t *)&d->idle, on_own_closed);
    if (d->in_ares == 0) /* else ares_leave() destroys the channel */
        channel_destroy(d);
}
