/* dns: asynchronous name resolution with c-ares on the libuv loop, with a TTL cache.
 *
 * c-ares sockets are watched with uv_poll; one uv_timer drives c-ares' timeouts and retries.
 * Answers (IPv4 and IPv6) are cached by name for their TTL (bounded to [1 s, 300 s]; names
 * from /etc/hosts for 60 s); failures are cached for 1 s. Numeric addresses never reach c-ares.
 * The callback is never called from inside dns_resolve(), even for cache hits and /etc/hosts
 * answers (which c-ares answers synchronously): it always runs on a later loop iteration.
 */
#ifndef LLMUX_DNS_H
#define LLMUX_DNS_H

#include <stddef.h>
#include <sys/socket.h>
#include <uv.h>

struct dns;
struct dns_query;

/* status 0: n >= 1 addresses (port 0; the caller sets its own), in the order to try them,
 * borrowed for the duration of the call. status < 0: LLMUX_EDNS (no such name) or a libuv
 * code, n == 0. */
typedef void (*dns_cb)(void *data, int status, const struct sockaddr_storage *addrs, size_t n);

/* One resolver per loop. Returns 0 or a negative code. */
int dns_create(uv_loop_t *loop, struct dns **out);
/* Cancel every pending query (their callbacks are not called) and free the resolver once its
 * handles are closed (the loop must run to finish). */
void dns_close(struct dns *d);

/* Resolve host. Returns 0 and calls cb exactly once later unless dns_cancel() is called first,
 * or a negative code and never calls cb. *out (may be NULL) identifies the query for
 * dns_cancel() and is valid until cb runs. */
int dns_resolve(struct dns *d, const char *host, dns_cb cb, void *data, struct dns_query **out);
/* The query's callback will not be called. Safe before cb runs; not after. */
void dns_cancel(struct dns_query *q);

/* Lookups answered from the cache (for tests and stats). */
size_t dns_cache_hits(const struct dns *d);

#endif
