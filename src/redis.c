/* redis: the shared-state connection (see include/llmux/redis.h).
 *
 * States: DOWN (waiting out a backoff before the next try), RESOLVING (c-ares), CONNECTING
 * (hiredis's non-blocking connect), UP. `ac` is the hiredis context while CONNECTING or UP.
 * hiredis frees a context itself after a failed connect or a lost connection (after running
 * the pending callbacks with no reply and our disconnect callback); we free it with
 * redisAsyncFree() on a timeout or a close, after setting `ac` to NULL so the callbacks that
 * run inside it see the connection gone. Either way each pending callback runs exactly once and
 * pops its ring entry, oldest first.
 *
 * One timer serves both deadlines: the connect (max(timeout, 1 s)) and the oldest command in
 * flight (timeout). The struct is freed when both its handles have closed. */
#include "llmux/redis.h"

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <mbedtls/sha1.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/config.h"
#include "llmux/dns.h"

#define RING 2048 /* commands in flight per connection; more are refused (Redis is too slow) */
#define MAX_SCRIPTS 4
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

enum redis_state { R_DOWN, R_RESOLVING, R_CONNECTING, R_UP };

struct pending {
    redis_cb cb;
    void *data;
    uint64_t sent_ns;
};

struct redis {
    uv_loop_t *loop;
    struct dns *dns;
    struct dns_query *query;
    redisAsyncContext *ac;
    enum redis_state state;
    char *host, *user, *password;
    uint16_t port;
    uint32_t db, timeout_ms;
    const char *const *scripts;
    size_t n_scripts;
    char sha[MAX_SCRIPTS][41];
    uv_timer_t timer; /* connect deadline, oldest command's deadline, or the backoff */
    uint32_t backoff_ms;
    int reported_down; /* this outage is logged */
    uint64_t down_since_ns;
    int closing;
    int handles;
    redis_log_fn log;
    void *log_ctx;
    struct pending ring[RING];
    size_t head, n; /* oldest entry, entries in use */
    struct redis_stats stats;
};

static void connect_now(struct redis *r);
static void on_timer(uv_timer_t *t);

static void log_line(struct redis *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void log_line(struct redis *r, const char *fmt, ...)
{
    char line[320];
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (len > 0 && r->log)
        r->log(r->log_ctx, line, (size_t)len < sizeof(line) ? (size_t)len : sizeof(line) - 1);
}

/* The connection is gone (or never came): log once per outage, then retry after a backoff. */
static void went_down(struct redis *r, const char *why)
{
    r->ac = NULL;
    r->state = R_DOWN;
    if (r->closing)
        return;
    if (!r->reported_down) {
        r->reported_down = 1;
        r->down_since_ns = uv_hrtime();
        r->stats.outages++;
        char safe[160];
        size_t i = 0;
        for (; why && why[i] && i < sizeof(safe) - 1; i++) /* JSON-safe, one line */
            safe[i] = why[i] == '"' || why[i] == '\\' || (unsigned char)why[i] < 0x20 ? '?' : why[i];
        safe[i] = 0;
        log_line(r, "{\"event\":\"redis_down\",\"reason\":\"%s\",\"next_try_ms\":%u}\n", safe,
                 r->backoff_ms);
    }
    uv_timer_start(&r->timer, on_timer, r->backoff_ms, 0);
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* Drop the connection we hold (timeout, refused setup, close): hiredis runs the pending
 * callbacks with no reply. */
static void drop(struct redis *r, const char *why)
{
    redisAsyncContext *ac = r->ac;
    went_down(r, why);
    if (ac)
        redisAsyncFree(ac); /* deferred by hiredis when inside one of its callbacks */
}

static void arm_deadline(struct redis *r)
{
    if (r->state == R_UP && r->n) {
        uint64_t age_ms = (uv_hrtime() - r->ring[r->head].sent_ns) / 1000000;
        uv_timer_start(&r->timer, on_timer, age_ms >= r->timeout_ms ? 0 : r->timeout_ms - age_ms,
                       0);
    }
}

static void on_timer(uv_timer_t *t)
{
    struct redis *r = t->data;
    if (r->state == R_DOWN) {
        connect_now(r);
    } else if (r->state == R_RESOLVING || r->state == R_CONNECTING) {
        if (r->query)
            dns_cancel(r->query);
        r->query = NULL;
        drop(r, "connect timed out");
    } else if (r->n) {
        uint64_t age_ms = (uv_hrtime() - r->ring[r->head].sent_ns) / 1000000;
        if (age_ms >= r->timeout_ms)
            drop(r, "a command was not answered in time");
        else
            arm_deadline(r);
    }
}

/* Every hiredis callback lands here: the reply of the oldest command in flight. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    (void)ac;
    struct redis *r = privdata;
    struct pending p = r->ring[r->head];
    r->head = (r->head + 1) % RING;
    r->n--;
    if (reply)
        hist_add(&r->stats.rtt_us, (uv_hrtime() - p.sent_ns) / 1000);
    else
        r->stats.failed++;
    if (p.cb)
        p.cb(p.data, reply);
}

static int send_argv(struct redis *r, int argc, const char **argv, const size_t *lens,
                     redis_cb cb, void *data)
{
    if (r->state != R_UP || !r->ac || r->n == RING) {
        r->stats.failed++;
        return UV_ENOTCONN;
    }
    size_t at = (r->head + r->n) % RING;
    r->ring[at] = (struct pending){cb, data, uv_hrtime()};
    if (redisAsyncCommandArgv(r->ac, on_reply, r, argc, argv, lens) != REDIS_OK) {
        r->stats.failed++;
        return UV_EIO;
    }
    if (r->n++ == 0)
        arm_deadline(r);
    r->stats.commands++;
    return 0;
}

/* AUTH, SELECT and SCRIPT LOAD answered: an error there means this connection is unusable. */
static void on_setup(void *data, redisReply *reply)
{
    struct redis *r = data;
    if (r->state != R_UP || !reply || reply->type != REDIS_REPLY_ERROR)
        return;
    char why[200];
    snprintf(why, sizeof(why), "setup refused: %.150s", reply->str); /* no secret in it */
    drop(r, why);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct redis *r = ac->data;
    if (r->ac != ac) /* dropped before it connected */
        return;
    if (status != REDIS_OK) {
        went_down(r, ac->errstr); /* hiredis frees ac */
        return;
    }
    r->state = R_UP;
    uv_timer_stop(&r->timer);
    r->backoff_ms = BACKOFF_MIN_MS;
    char db[16];
    snprintf(db, sizeof(db), "%u", r->db);
    const char *auth[] = {"AUTH", r->user ? r->user : r->password, r->password};
    if (r->password)
        send_argv(r, r->user ? 3 : 2, auth, NULL, on_setup, r);
    const char *sel[] = {"SELECT", db};
    if (r->db)
        send_argv(r, 2, sel, NULL, on_setup, r);
    for (size_t i = 0; i < r->n_scripts; i++) {
        const char *load[] = {"SCRIPT", "LOAD", r->scripts[i]};
        send_argv(r, 3, load, NULL, on_setup, r);
    }
    if (r->state == R_UP && r->reported_down) {
        r->reported_down = 0;
        log_line(r, "{\"event\":\"redis_up\",\"down_ms\":%llu}\n",
                 (unsigned long long)((uv_hrtime() - r->down_since_ns) / 1000000));
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    (void)status;
    struct redis *r = ac->data;
    if (r->ac == ac) /* lost (not dropped by us): hiredis frees ac */
        went_down(r, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void on_resolved(void *data, int status, const struct sockaddr_storage *addrs, size_t n)
{
    struct redis *r = data;
    r->query = NULL;
    char ip[64] = "";
    if (status == 0 && n > 0) {
        if (addrs[0].ss_family == AF_INET6)
            uv_ip6_name((const struct sockaddr_in6 *)&addrs[0], ip, sizeof(ip));
        else
            uv_ip4_name((const struct sockaddr_in *)&addrs[0], ip, sizeof(ip));
    }
    if (!ip[0]) {
        went_down(r, "cannot resolve the host");
        return;
    }
    redisAsyncContext *ac = redisAsyncConnect(ip, r->port);
    if (!ac || ac->err) {
        went_down(r, ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        return;
    }
    ac->data = r;
    if (redisLibuvAttach(ac, r->loop) != REDIS_OK) {
        redisAsyncFree(ac);
        went_down(r, "cannot watch the socket");
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    r->ac = ac;
    r->state = R_CONNECTING;
}

static void connect_now(struct redis *r)
{
    r->state = R_RESOLVING;
    uv_timer_start(&r->timer, on_timer, r->timeout_ms > 1000 ? r->timeout_ms : 1000, 0);
    if (dns_resolve(r->dns, r->host, on_resolved, r, &r->query) != 0) {
        r->query = NULL;
        went_down(r, "cannot resolve the host");
    }
}

static void on_handle_closed(uv_handle_t *h)
{
    struct redis *r = h->data;
    if (--r->handles == 0) {
        free(r->host);
        free(r->user);
        free(r->password);
        free(r);
    }
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

int redis_create(uv_loop_t *loop, struct dns *dns, const struct state_config *st,
                 const char *const *scripts, size_t n_scripts, redis_log_fn log, void *log_ctx,
                 struct redis **out)
{
    if (n_scripts > MAX_SCRIPTS)
        return UV_EINVAL;
    struct redis *r = calloc(1, sizeof(*r));
    if (!r)
        return UV_ENOMEM;
    r->loop = loop;
    r->dns = dns;
    r->host = strdup(st->redis_host);
    r->user = dup_or_null(st->redis_user);
    r->password = dup_or_null(st->redis_password);
    if (!r->host || (st->redis_user && !r->user) || (st->redis_password && !r->password)) {
        free(r->host);
        free(r->user);
        free(r->password);
        free(r);
        return UV_ENOMEM;
    }
    r->port = st->redis_port;
    r->db = st->redis_db;
    r->timeout_ms = st->timeout_ms ? st->timeout_ms : 250;
    r->scripts = scripts;
    r->n_scripts = n_scripts;
    for (size_t i = 0; i < n_scripts; i++) {
        unsigned char h[20];
        mbedtls_sha1_ret((const unsigned char *)scripts[i], strlen(scripts[i]), h);
        for (int j = 0; j < 20; j++)
            snprintf(r->sha[i] + 2 * j, 3, "%02x", h[j]);
    }
    r->log = log;
    r->log_ctx = log_ctx;
    r->backoff_ms = BACKOFF_MIN_MS;
    r->state = R_DOWN;
    r->reported_down = 1; /* the first connection is logged as the end of an outage */
    r->down_since_ns = uv_hrtime();
    uv_timer_init(loop, &r->timer);
    r->timer.data = r;
    r->handles = 1;
    uv_timer_start(&r->timer, on_timer, 0, 0); /* connect on the next loop turn */
    *out = r;
    return 0;
}

void redis_close(struct redis *r)
{
    if (!r || r->closing)
        return;
    r->closing = 1;
    if (r->query)
        dns_cancel(r->query);
    r->query = NULL;
    drop(r, NULL);
    uv_close((uv_handle_t *)&r->timer, on_handle_closed);
}

int redis_up(const struct redis *r)
{
    return r && r->state == R_UP;
}

int redis_same(const struct redis *r, const struct state_config *st)
{
    int same_str = (!r->user == !st->redis_user) && (!r->password == !st->redis_password);
    return same_str && strcmp(r->host, st->redis_host) == 0 && r->port == st->redis_port &&
           r->db == st->redis_db && (!r->user || strcmp(r->user, st->redis_user) == 0) &&
           (!r->password || strcmp(r->password, st->redis_password) == 0) &&
           r->timeout_ms == st->timeout_ms;
}

const struct redis_stats *redis_stats(const struct redis *r)
{
    return &r->stats;
}

int redis_command(struct redis *r, int argc, const char **argv, const size_t *lens, redis_cb cb,
                  void *data)
{
    return send_argv(r, argc, argv, lens, cb, data);
}

int redis_script(struct redis *r, size_t which, int n_keys, int argc, const char **argv,
                 const size_t *lens, redis_cb cb, void *data)
{
    if (which >= r->n_scripts || argc > 45)
        return UV_EINVAL;
    char nk[12];
    snprintf(nk, sizeof(nk), "%d", n_keys);
    const char *a[48] = {"EVALSHA", r->sha[which], nk};
    size_t l[48] = {7, 40, strlen(nk)};
    for (int i = 0; i < argc; i++) {
        a[3 + i] = argv[i];
        l[3 + i] = lens ? lens[i] : strlen(argv[i]);
    }
    return send_argv(r, argc + 3, a, l, cb, data);
}
