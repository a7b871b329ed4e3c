/* dns: c-ares on the loop. localhost via /etc/hosts, numeric addresses, not-found names, the
 * cache, cancel, closing with queries pending and from inside a callback. Every callback must run
 * after dns_resolve() has returned, and every loop must end with no handle left.
 *
 * "no-such-host.onion" fails inside c-ares without any network (c-ares refuses .onion names).
 * "no-such-host.invalid" goes to the configured DNS server: NXDOMAIN where there is one, a
 * timeout or a refusal where there is none; dns.c bounds c-ares' retries (~6 s), so the test
 * only asserts that it fails, and prints how. */
#include <string.h>

#include "check.h"
#include "llmux/dns.h"
#include "llmux/errors.h"

struct result {
    int returned; /* dns_resolve() had returned */
    int called;
    int sync; /* called before dns_resolve() returned */
    int status;
    size_t n;
    char addrs[8][64];
    int port_zero;
    struct dns *close_on_call; /* dns_close() from inside the callback */
};

static void on_done(void *data, int status, const struct sockaddr_storage *addrs, size_t n)
{
    struct result *r = data;
    r->called++;
    r->sync |= !r->returned;
    r->status = status;
    r->n = n;
    r->port_zero = 1;
    for (size_t i = 0; i < n && i < 8; i++) {
        if (addrs[i].ss_family == AF_INET) {
            const struct sockaddr_in *a = (const struct sockaddr_in *)&addrs[i];
            uv_ip4_name(a, r->addrs[i], sizeof(r->addrs[i]));
            r->port_zero &= a->sin_port == 0;
        } else {
            const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&addrs[i];
            uv_ip6_name(a, r->addrs[i], sizeof(r->addrs[i]));
            r->port_zero &= a->sin6_port == 0;
        }
    }
    if (r->close_on_call)
        dns_close(r->close_on_call);
}

static int has_addr(const struct result *r, const char *addr)
{
    for (size_t i = 0; i < r->n && i < 8; i++)
        if (strcmp(r->addrs[i], addr) == 0)
            return 1;
    return 0;
}

static struct dns_query *resolve(struct dns *d, const char *host, struct result *r)
{
    struct dns_query *q = NULL;
    memset(r, 0, sizeof(*r));
    CHECK_INT(dns_resolve(d, host, on_done, r, &q), 0);
    r->returned = 1;
    CHECK(q != NULL);
    return q;
}

static void walk_count(uv_handle_t *h, void *arg)
{
    (*(int *)arg)++;
}

static void test_basic(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dns *d;
    CHECK_INT(dns_create(&loop, &d), 0);

    struct result host, v4, v6, onion, empty;
    resolve(d, "localhost", &host);
    resolve(d, "127.0.0.1", &v4);
    resolve(d, "::1", &v6);
    resolve(d, "no-such-host.onion", &onion);
    memset(&empty, 0, sizeof(empty));
    CHECK_INT(dns_resolve(d, "", on_done, &empty, NULL), UV_EINVAL);
    /* Nothing is called back before the loop runs. */
    CHECK_INT(host.called + v4.called + v6.called + onion.called, 0);
    CHECK_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);

    CHECK_INT(host.called, 1);
    CHECK_INT(host.sync, 0);
    CHECK_INT(host.status, 0);
    CHECK(host.n >= 1);
    CHECK(has_addr(&host, "127.0.0.1"));
    CHECK(host.port_zero);

    CHECK_INT(v4.called, 1);
    CHECK_INT(v4.sync, 0);
    CHECK_INT(v4.status, 0);
    CHECK_INT(v4.n, 1);
    CHECK_STR(v4.addrs[0], "127.0.0.1");

    CHECK_INT(v6.called, 1);
    CHECK_INT(v6.sync, 0);
    CHECK_INT(v6.n, 1);
    CHECK_STR(v6.addrs[0], "::1");

    CHECK_INT(onion.called, 1);
    CHECK_INT(onion.sync, 0);
    CHECK_INT(onion.status, LLMUX_EDNS);
    CHECK_INT(onion.n, 0);
    CHECK_INT(empty.called, 0);

    /* The same names again: names from the cache (success and failure), still asynchronous;
     * numeric addresses do not use the cache. */
    size_t hits = dns_cache_hits(d);
    struct result again, onion2, v4again;
    resolve(d, "localhost", &again);
    resolve(d, "no-such-host.onion", &onion2);
    resolve(d, "127.0.0.1", &v4again);
    CHECK_INT(again.called + onion2.called + v4again.called, 0);
    CHECK_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);
    CHECK_INT(dns_cache_hits(d), hits + 2);
    CHECK_INT(again.called, 1);
    CHECK_INT(again.sync, 0);
    CHECK_INT(again.n, host.n);
    CHECK_STR(again.addrs[0], host.addrs[0]);
    CHECK_INT(onion2.status, LLMUX_EDNS);
    CHECK_INT(v4again.status, 0);

    /* Cancelled before the callback: a cache hit, a numeric address, a name c-ares answers
     * inside ares_getaddrinfo(). */
    struct result c1, c2, c3;
    dns_cancel(resolve(d, "localhost", &c1));
    dns_cancel(resolve(d, "::1", &c2));
    dns_cancel(resolve(d, "cancelled.onion", &c3));
    CHECK_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);
    CHECK_INT(c1.called + c2.called + c3.called, 0);

    dns_close(d);
    CHECK_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);
    CHECK_INT(uv_loop_close(&loop), 0);
}

/* A name that needs the DNS server: it fails (how depends on the network), two concurrent
 * queries share the lookup, a cancelled one is freed when c-ares lets go of it, and the failure
 * is cached. */
static void test_not_found(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dns *d;
    CHECK_INT(dns_create(&loop, &d), 0);

    struct result a, b, c;
    uint64_t start = uv_hrtime();
    resolve(d, "no-such-host.invalid", &a);
    resolve(d, "no-such-host.invalid", &b);
    dns_cancel(resolve(d, "no-such-host.invalid", &c));
    CHECK_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);
    uint64_t ms = (uv_hrtime() - start) / 1000000;
    printf("no-such-host.invalid: %s after %llu ms\n", llmux_strerror(a.status),
           (unsigned long long)ms);
    CHECK_INT(a.called, 1);
    CHECK_INT(a.sync, 0);
    CHECK(a.status < 0);
    CHECK_INT(a.n, 0);
    CHECK_INT(b.called, 1);
    CHECK_INT(b.status, a.status);
    CHECK_INT(c.called, 0);
    CHECK(ms < 15000);

    size_t hits = dns_cache_hits(d);
    struct result again;
    resolve(d, "no-such-host.invalid", &again);
    CHECK_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);
    CHECK_INT(again.status, a.status);
    CHECK_INT(dns_cache_hits(d), hits + 1);

    dns_close(d);
    CHECK_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);
    CHECK_INT(uv_loop_close(&loop), 0);
}

/* dns_close() with queries pending (one waiting for c-ares, one ready): no callback, all freed. */
static void test_close_pending(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dns *d;
    CHECK_INT(dns_create(&loop, &d), 0);
    struct result a, b, c;
    resolve(d, "pending.invalid", &a);
    resolve(d, "localhost", &b);
    resolve(d, "127.0.0.2", &c);
    dns_close(d);
    CHECK_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);
    CHECK_INT(a.called + b.called + c.called, 0);
    int handles = 0;
    uv_walk(&loop, walk_count, &handles);
    CHECK_INT(handles, 0);
    CHECK_INT(uv_loop_close(&loop), 0);
}

/* dns_close() from inside a callback: the other ready queries are not called back. */
static void test_close_in_callback(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dns *d;
    CHECK_INT(dns_create(&loop, &d), 0);
    struct result a, b, c;
    resolve(d, "127.0.0.1", &a);
    resolve(d, "127.0.0.2", &b);
    resolve(d, "pending.invalid", &c);
    a.close_on_call = d;
    CHECK_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);
    CHECK_INT(a.called, 1);
    CHECK_INT(b.called + c.called, 0);
    CHECK_INT(uv_loop_close(&loop), 0);
}

int main(void)
{
    test_basic();
    test_close_pending();
    test_close_in_callback();
    test_not_found();
    return check_report();
}
