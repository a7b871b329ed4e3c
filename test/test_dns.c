/* dns: c-ares on the loop. localhost via /etc/hosts, numeric addresses, the cache, cancel,
 * closing with a query pending; callbacks never run inside dns_resolve(); no handle left. */
#include <arpa/inet.h>
#include <string.h>

#include "check.h"
#include "llmux/dns.h"

struct result {
    int called;
    int returned; /* dns_resolve had returned when the callback ran */
    int status;
    size_t n;
    char first[64];
};

static void on_done(void *data, int status, const struct sockaddr_storage *addrs, size_t n)
{
    struct result *r = data;
    r->called++;
    r->status = status;
    r->n = n;
    if (n > 0) {
        if (addrs[0].ss_family == AF_INET)
            uv_ip4_name((const struct sockaddr_in *)&addrs[0], r->first, sizeof(r->first));
        else
            uv_ip6_name((const struct sockaddr_in6 *)&addrs[0], r->first, sizeof(r->first));
    }
}

static void resolve(struct dns *d, const char *host, struct result *r)
{
    memset(r, 0, sizeof(*r));
    CHECK_INT(dns_resolve(d, host, on_done, r, NULL), 0);
    CHECK_INT(r->called, 0); /* never synchronous */
    r->returned = 1;
}

int main(void)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct dns *d;
    CHECK_INT(dns_create(&loop, &d), 0);

    struct result a, b, c, v6;
    resolve(d, "localhost", &a);
    resolve(d, "127.0.0.1", &b);
    resolve(d, "::1", &v6);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(a.called, 1);
    CHECK_INT(a.status, 0);
    CHECK(a.n >= 1);
    int has_v4 = strcmp(a.first, "127.0.0.1") == 0 || strcmp(a.first, "::1") == 0;
    CHECK(has_v4);
    CHECK_INT(b.status, 0);
    CHECK_STR(b.first, "127.0.0.1");
    CHECK_STR(v6.first, "::1");

    /* second lookup of the same name comes from the cache, still asynchronously */
    size_t hits = dns_cache_hits(d);
    resolve(d, "localhost", &c);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(c.called, 1);
    CHECK_INT(dns_cache_hits(d), hits + 1);
    CHECK_STR(c.first, a.first);

    /* a cancelled query is never called back */
    struct result x;
    struct dns_query *q;
    memset(&x, 0, sizeof(x));
    CHECK_INT(dns_resolve(d, "localhost", on_done, &x, &q), 0);
    dns_cancel(q);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_INT(x.called, 0);

    /* closing with a query pending: no callback, everything freed, loop closes clean */
    memset(&x, 0, sizeof(x));
    CHECK_INT(dns_resolve(d, "127.0.0.2", on_done, &x, NULL), 0);
    dns_close(d);
    CHECK_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);
    CHECK_INT(x.called, 0);
    CHECK_INT(uv_loop_close(&loop), 0);
    return check_report();
}
