/* gateway: one worker's runtime wiring. See include/llmux/gateway.h. */
#include "llmux/gateway.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "llmux/conn.h"
#include "llmux/dns.h"
#include "llmux/errors.h"
#include "llmux/health.h"
#include "llmux/upstream.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

int gateway_init(struct gateway *gw, uv_loop_t *loop, struct config *cfg, char *err, size_t errlen)
{
    memset(gw, 0, sizeof(*gw));
    gw->loop = loop;
    gw->cfg = config_ref(cfg);
    gw->upstream = &upstream_real;
    gw->id_seed = ((uint64_t)time(NULL) << 20) ^ ((uint64_t)getpid() << 40) ^ uv_hrtime();
    gw->origins = calloc(cfg->n_providers + 1, sizeof(*gw->origins));
    gw->tls = calloc(cfg->n_providers + 1, sizeof(*gw->tls));
    if (!gw->origins || !gw->tls) {
        snprintf(err, errlen, "out of memory");
        return UV_ENOMEM;
    }
    gw->health = health_create(cfg, gateway_log, gw);
    if (!gw->health) {
        snprintf(err, errlen, "out of memory");
        return UV_ENOMEM;
    }
    uv_timer_init(loop, &gw->trim_timer);
    uv_unref((uv_handle_t *)&gw->trim_timer); /* never keeps the loop alive */
    gw->trim_timer_on = 1;
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
    for (size_t i = 0; i < cfg->n_providers; i++) {
        struct provider *p = &cfg->providers[i];
        if (!p->enabled)
            continue;
        if (p->tls && p->ca_file) {
            char msg[256];
            rc = tls_ctx_client(p->ca_file, &gw->tls[i], msg, sizeof(msg));
            if (rc) {
                snprintf(err, errlen, "provider %s: %s", p->name, msg);
                return rc;
            }
        } else if (p->tls) {
            if (!gw->system_tls) {
                char msg[256];
                rc = tls_ctx_client(NULL, &gw->system_tls, msg, sizeof(msg));
                if (rc) {
                    snprintf(err, errlen, "provider %s: system CA bundle: %s", p->name, msg);
                    return rc;
                }
            }
        }
        struct tls_ctx *t = p->tls ? (gw->tls[i] ? gw->tls[i] : gw->system_tls) : NULL;
        gw->origins[i] = pool_origin(gw->pool, t, p->host, p->port);
        if (!gw->origins[i]) {
            snprintf(err, errlen, "out of memory");
            return UV_ENOMEM;
        }
    }
    return 0;
}

static void log_flush(struct gateway *gw)
{
    if (gw->access_log && buf_size(&gw->log_buf)) {
        fwrite(buf_head(&gw->log_buf), 1, buf_size(&gw->log_buf), gw->access_log);
        fflush(gw->access_log);
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
    if (gw->dns)
        dns_close(gw->dns);
    gw->pool = NULL;
    gw->dns = NULL;
}

/* TLS contexts are freed after the loop has closed every connection that used them. */
void gateway_free(struct gateway *gw)
{
    for (size_t i = 0; gw->cfg && i < gw->cfg->n_providers; i++)
        if (gw->tls[i])
            tls_ctx_free(gw->tls[i]);
    if (gw->system_tls)
        tls_ctx_free(gw->system_tls);
    buf_free(&gw->log_buf);
    free(gw->tls);
    free(gw->origins);
    health_free(gw->health);
    if (gw->cfg)
        config_unref(gw->cfg);
    memset(gw, 0, sizeof(*gw));
}

struct origin *gateway_origin(struct gateway *gw, const struct provider *p)
{
    size_t i = (size_t)(p - gw->cfg->providers);
    return i < gw->cfg->n_providers ? gw->origins[i] : NULL;
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
