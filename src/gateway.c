/* gateway: one worker's runtime wiring. See include/llmux/gateway.h. */
#include "llmux/gateway.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "llmux/conn.h"
#include "llmux/cooldown.h"
#include "llmux/dns.h"
#include "llmux/errors.h"
#include "llmux/exchange.h"
#include "llmux/health.h"
#include "llmux/redis.h"
#include "llmux/upstream.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/* A TLS context and the CA file it was built from: a reload reuses it while the file is the
 * same one, unchanged (ca_file NULL: the system bundle). */
struct tls_entry {
    char *ca_file;
    struct stat st;
    struct tls_ctx *ctx;
    struct tls_entry *next;
};

static int same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_size == b->st_size &&
           a->st_mtim.tv_sec == b->st_mtim.tv_sec && a->st_mtim.tv_nsec == b->st_mtim.tv_nsec;
}

static struct tls_ctx *tls_for(struct gateway *gw, const struct provider *p, char *err,
                               size_t errlen)
{
    struct stat st;
    memset(&st, 0, sizeof(st));
    if (p->ca_file && stat(p->ca_file, &st) != 0) {
        snprintf(err, errlen, "provider %s: ca_file: %s", p->name, strerror(errno));
        return NULL;
    }
    for (struct tls_entry *t = gw->tls; t; t = t->next)
        if (p->ca_file ? t->ca_file && strcmp(t->ca_file, p->ca_file) == 0 && same_file(&t->st, &st)
                       : !t->ca_file)
            return t->ctx;
    struct tls_entry *t = calloc(1, sizeof(*t));
    if (!t || (p->ca_file && !(t->ca_file = strdup(p->ca_file)))) {
        free(t);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    char msg[256];
    if (tls_ctx_client(p->ca_file, &t->ctx, msg, sizeof(msg)) != 0) {
        snprintf(err, errlen, "provider %s: %s%s", p->name, p->ca_file ? "" : "system CA bundle: ",
                 msg);
        free(t->ca_file);
        free(t);
        return NULL;
    }
    t->st = st;
    t->next = gw->tls;
    gw->tls = t;
    return t->ctx;
}

static struct limits *shared_limits;
static struct shm *shared_shm;
static int shared_worker;

void gateway_share(struct limits *l, struct shm *s)
{
    shared_limits = l;
    shared_shm = s;
}

void gateway_share_worker(int worker)
{
    shared_worker = worker;
}

struct runtime *runtime_ref(struct runtime *rt)
{
    rt->refs++;
    return rt;
}

void runtime_unref(struct runtime *rt)
{
    if (!rt || --rt->refs > 0)
        return;
    health_free(rt->health);
    free(rt->origins);
    free(rt->aliases);
    free(rt->routes);
    free(rt->key_slots);
    free(rt->dep_slots);
    config_unref(rt->cfg);
    (*rt->live)--;
    free(rt);
}

size_t gateway_registry_bytes(const struct config *cfg)
{
    size_t need = metrics_need(NULL, cfg), health = health_need(NULL, cfg);
    if (health == SIZE_MAX)
        return 0;
    return SHM_ARENA_BYTES + 4 * (need + health) + generations_bytes(cfg->generations_keep);
}

int gateway_registry_fits(const struct shm_arena *a, const struct config *cfg)
{
    size_t need = metrics_need(a, cfg), health = health_need(a, cfg);
    return health != SIZE_MAX && need + health <= a->size - a->used;
}

int gateway_load(struct gateway *gw, struct config *cfg, char *err, size_t errlen)
{
    if (!gateway_registry_fits(gw->metrics.arena, cfg)) { /* before a byte of it is taken */
        snprintf(err, errlen,
                 "the shared registry (%zu MiB, sized at start for its config) has no room for "
                 "this config's new aliases and deployments: restart llmux to size it again",
                 gw->metrics.shm->arena_bytes >> 20);
        return UV_ENOMEM;
    }
    struct runtime *rt = calloc(1, sizeof(*rt));
    if (!rt) {
        snprintf(err, errlen, "out of memory");
        return UV_ENOMEM;
    }
    rt->refs = 1;
    rt->live = &gw->runtimes;
    gw->runtimes++;
    rt->cfg = config_ref(cfg);
    rt->generation = gw->rt ? gw->rt->generation + 1 : 1;
    rt->loaded_at = (int64_t)time(NULL);
    rt->origins = calloc(cfg->n_providers + 1, sizeof(*rt->origins));
    rt->health = health_create(cfg, &gw->health, gw->metrics.arena);
    rt->key_slots = calloc(cfg->n_keys + 1, sizeof(*rt->key_slots));
    for (size_t i = 0; rt->key_slots && i < cfg->n_keys; i++)
        rt->key_slots[i] = limits_slot(gw->limits, cfg->keys[i].name); /* NULL: table full */
    rt->dep_slots = calloc(cfg->n_health + 1, sizeof(*rt->dep_slots));
    for (size_t i = 0; rt->dep_slots && i < cfg->n_models; i++)
        for (size_t j = 0; j < cfg->models[i].n_deployments; j++) {
            const struct deployment *d = &cfg->models[i].deployments[j];
            if ((d->rpm || d->tpm) && !rt->dep_slots[d->health_id])
                rt->dep_slots[d->health_id] = limits_slot(gw->limits, d->limit_name);
        }
    if (!rt->origins || !rt->health || !rt->key_slots || !rt->dep_slots ||
        metrics_attach(&gw->metrics, cfg, &rt->aliases, &rt->routes) != 0) {
        runtime_unref(rt);
        snprintf(err, errlen, "out of memory");
        return UV_ENOMEM;
    }
    for (size_t i = 0; i < cfg->n_providers; i++) {
        struct provider *p = &cfg->providers[i];
        if (!p->enabled)
            continue;
        struct tls_ctx *t = p->tls ? tls_for(gw, p, err, errlen) : NULL;
        if (p->tls && !t) {
            runtime_unref(rt);
            return LLMUX_ECONFIG;
        }
        rt->origins[i] = pool_origin(gw->pool, t, p->host, p->port);
        if (!rt->origins[i]) {
            runtime_unref(rt);
            snprintf(err, errlen, "out of memory");
            return UV_ENOMEM;
        }
    }
    const struct state_config *st = &cfg->state;
    if (gw->redis && (!st->redis_host || !redis_same(gw->redis, st))) {
        redis_close(gw->redis); /* commands in flight answer as if it were down */
        gw->redis = NULL;
        cooldown_stop(gw);
    }
    int rc = 0;
    if (st->redis_host && !gw->redis)
        rc = redis_create(gw->loop, gw->dns, st, exchange_redis_scripts, EXCHANGE_REDIS_SCRIPTS,
                          gateway_log, gw, &gw->redis);
    if (rc) {
        runtime_unref(rt);
        snprintf(err, errlen, "cannot set up Redis: %s", llmux_strerror(rc));
        return rc;
    }
    if (gw->redis)
        cooldown_start(gw);
    runtime_unref(gw->rt);
    gw->rt = rt;
    gw->cache.store->ops->limit(gw->cache.store, cfg->cache_max_bytes);
    return 0;
}

static void on_publish(uv_timer_t *t)
{
    metrics_publish(container_of(t, struct gateway, publish_timer));
}

int gateway_init(struct gateway *gw, uv_loop_t *loop, struct config *cfg, char *err, size_t errlen)
{
    memset(gw, 0, sizeof(*gw));
    gw->loop = loop;
    gw->upstream = &upstream_real;
    gw->id_seed = ((uint64_t)time(NULL) << 20) ^ ((uint64_t)getpid() << 40) ^ uv_hrtime();
    gw->health.log = gateway_log;
    gw->health.log_ctx = gw;
    gw->limits = shared_limits;
    if (!gw->limits) {
        gw->limits = limits_create();
        gw->own_limits = 1;
    }
    gw->worker = shared_worker;
    gw->metrics.shm = shared_shm;
    if (!gw->metrics.shm) {
        size_t bytes = gateway_registry_bytes(cfg);
        gw->metrics.shm = bytes ? shm_create(1, bytes) : NULL;
        gw->own_shm = 1;
        gw->worker = 0;
    }
    if (!gw->metrics.shm) {
        snprintf(err, errlen, "cannot map the shared registry");
        return UV_ENOMEM;
    }
    gw->metrics.arena = gw->metrics.shm->arena[gw->worker];
    if (shm_adopt(gw->metrics.shm, (uint32_t)gw->worker))
        health_adopt(gw->metrics.arena); /* the records of the worker this one replaces */
    if (metrics_init(&gw->metrics) != 0 ||
        generations_attach(gw->metrics.arena, cfg->generations_keep, &gw->gens) != 0) {
        snprintf(err, errlen, "the shared registry is full");
        return UV_ENOMEM;
    }
    gw->cache.store = cache_memory_new(cfg->cache_max_bytes);
    if (!gw->cache.store) {
        snprintf(err, errlen, "out of memory");
        return UV_ENOMEM;
    }
    uv_timer_init(loop, &gw->trim_timer);
    uv_unref((uv_handle_t *)&gw->trim_timer); /* never keeps the loop alive */
    gw->trim_timer_on = 1;
    cooldown_init(gw);
    int rc = dns_create(loop, &gw->dns);
    if (rc) {
        snprintf(err, errlen, "cannot start the resolver: %s", llmux_strerror(rc));
        return rc;
    }
    rc = pool_create(loop, gw->dns, cfg->pool_max_idle, cfg->pool_idle_timeout_ms, &gw->pool);
    if (rc) {
        snprintf(err, errlen, "cannot create the connection pool: %s", llmux_strerror(rc));
        return rc;
    }
    rc = gateway_load(gw, cfg, err, errlen);
    if (rc)
        return rc;
    uv_timer_init(loop, &gw->publish_timer); /* the worker's figures for the others' scrapes */
    uv_unref((uv_handle_t *)&gw->publish_timer);
    uv_timer_start(&gw->publish_timer, on_publish, 1000, 1000);
    gw->publish_timer_on = 1;
    return 0;
}

/* Waiting lines go out in write()s of whole lines, each at most PIPE_BUF bytes (unless one
 * line is longer): such a write is never interleaved with another process's on a pipe or an
 * O_APPEND file, so the workers' lines never mix. */
static void log_flush(struct gateway *gw)
{
    const char *p = buf_head(&gw->log_buf);
    size_t left = buf_size(&gw->log_buf);
    int fd = gw->access_log ? fileno(gw->access_log) : -1;
    if (left && fd < 0 && gw->access_log) { /* a memory stream (tests) */
        fwrite(p, 1, left, gw->access_log);
        fflush(gw->access_log);
        left = 0;
    }
    while (left && fd >= 0) {
        size_t n = left;
        if (n > PIPE_BUF) { /* up to the last line end that fits, or one whole long line */
            n = PIPE_BUF;
            while (n > 0 && p[n - 1] != '\n')
                n--;
            if (n == 0) {
                const char *nl = memchr(p, '\n', left);
                n = nl ? (size_t)(nl - p) + 1 : left;
            }
        }
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break; /* a log that cannot be written loses its lines, never the requests */
        p += w;
        left -= (size_t)w;
    }
    buf_reset(&gw->log_buf);
}

static void on_log_timer(uv_timer_t *t)
{
    log_flush(container_of(t, struct gateway, log_timer));
}

void gateway_open_log(struct gateway *gw, FILE *f)
{
    gw->access_log = f;
    buf_init(&gw->log_buf, 0);
    uv_timer_init(gw->loop, &gw->log_timer);
    uv_unref((uv_handle_t *)&gw->log_timer); /* never keeps the loop alive */
    gw->log_timer_on = 1;
}

void gateway_log(void *data, const char *line, size_t n)
{
    struct gateway *gw = data;
    if (!gw->log_timer_on) { /* not opened (or closed): straight through */
        if (gw->access_log) {
            fwrite(line, 1, n, gw->access_log);
            fflush(gw->access_log);
        }
        return;
    }
    if (buf_size(&gw->log_buf) == 0) /* the first line waiting: written within 100 ms */
        uv_timer_start(&gw->log_timer, on_log_timer, 100, 0);
    if (buf_append(&gw->log_buf, line, n) != 0 || buf_size(&gw->log_buf) >= 32 * 1024)
        log_flush(gw);
}

static void on_trim(uv_timer_t *t)
{
    struct gateway *gw = container_of(t, struct gateway, trim_timer);
    if (gw->stats.exchanges_active != 0)
        return; /* busy again: the next quiet moment re-arms */
    uint64_t quiet_for = uv_now(gw->loop) - gw->quiet_since;
    if (quiet_for < 1000) { /* requests came and went meanwhile: wait out the second */
        uv_timer_start(&gw->trim_timer, on_trim, 1000 - quiet_for, 0);
        return;
    }
    uint64_t t0 = uv_hrtime();
    malloc_trim(0);
    gw->stats.trim_us_last = (uv_hrtime() - t0) / 1000;
    if (gw->stats.trim_us_last > gw->stats.trim_us_max)
        gw->stats.trim_us_max = gw->stats.trim_us_last;
    gw->stats.trims++;
}

void gateway_quiet(struct gateway *gw)
{
    /* one timestamp per request; the timer is armed only when it is not already running */
    gw->quiet_since = uv_now(gw->loop);
    if (gw->trim_timer_on && !uv_is_active((uv_handle_t *)&gw->trim_timer))
        uv_timer_start(&gw->trim_timer, on_trim, 1000, 0);
}

void gateway_close(struct gateway *gw)
{
    if (gw->publish_timer_on) {
        gw->publish_timer_on = 0;
        metrics_publish(gw); /* what a replacement worker carries on from */
        uv_close((uv_handle_t *)&gw->publish_timer, NULL);
    }
    if (gw->trim_timer_on) {
        gw->trim_timer_on = 0;
        uv_close((uv_handle_t *)&gw->trim_timer, NULL);
    }
    if (gw->log_timer_on) {
        log_flush(gw);
        gw->log_timer_on = 0;
        uv_close((uv_handle_t *)&gw->log_timer, NULL);
    }
    if (gw->pool)
        pool_close(gw->pool);
    redis_close(gw->redis);
    gw->redis = NULL;
    cooldown_close(gw);
    if (gw->dns)
        dns_close(gw->dns);
    gw->pool = NULL;
    gw->dns = NULL;
}

/* TLS contexts are freed after the loop has closed every connection that used them. */
void gateway_free(struct gateway *gw)
{
    runtime_unref(gw->rt);
    while (gw->tls) {
        struct tls_entry *t = gw->tls;
        gw->tls = t->next;
        tls_ctx_free(t->ctx);
        free(t->ca_file);
        free(t);
    }
    buf_free(&gw->log_buf);
    if (gw->cache.store)
        gw->cache.store->ops->free(gw->cache.store);
    if (gw->own_limits)
        limits_destroy(gw->limits);
    if (gw->own_shm)
        shm_destroy(gw->metrics.shm);
    memset(gw, 0, sizeof(*gw));
}

struct origin *runtime_origin(const struct runtime *rt, const struct provider *p)
{
    size_t i = (size_t)(p - rt->cfg->providers);
    return i < rt->cfg->n_providers ? rt->origins[i] : NULL;
}

void gateway_request_id(struct gateway *gw, char out[33])
{
    static const char hex[] = "0123456789abcdef";
    for (int half = 0; half < 2; half++) {
        /* splitmix64: cheap, well mixed; ids need to be unique, not secret */
        uint64_t z = (gw->id_seed += 0x9e3779b97f4a7c15ULL);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
        z ^= z >> 31;
        for (int i = 0; i < 16; i++)
            out[half * 16 + i] = hex[(z >> (i * 4)) & 15];
    }
    out[32] = 0;
}
