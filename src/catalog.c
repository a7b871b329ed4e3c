/* catalog: GET /v1/models, /v1/models/{id} and /v1/models/{id}/endpoints. See
 * include/llmux/catalog.h. */
#include "llmux/catalog.h"

#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "llmux/config.h"
#include "llmux/gateway.h"
#include "llmux/health.h"
#include "llmux/window.h"

static const struct model *find_alias(const struct config *cfg, const char *id, size_t len)
{
    const struct model *m = config_find_model(cfg, id, len);
    for (size_t j = 0; m && j < m->n_deployments; j++)
        if (m->deployments[j].provider->enabled)
            return m;
    return NULL;
}

/* "key":"<price>" as OpenRouter writes it: a decimal string in $ per token (per million / 1e6,
 * "0.00000015") or per request, exact to the 1e-12 $ the cost math keeps. */
static void price_str(struct buf *b, const char *key, double v, double per)
{
    buf_printf(b, "\"%s\":\"", key);
    buf_append_fixed(b, (uint64_t)llround((v < 0 ? 0 : v) / per * 1e12), 12);
    buf_append_str(b, "\"");
}

/* "pricing":{...} of a deployment, or null when it has no price. */
static void pricing(struct buf *b, const struct deployment *d)
{
    buf_append_str(b, ",\"pricing\":");
    if (!d || d->price_in < 0) {
        buf_append_str(b, "null");
        return;
    }
    buf_append_str(b, "{");
    price_str(b, "prompt", d->price_in, 1e6);
    buf_append_str(b, ",");
    price_str(b, "completion", d->price_out, 1e6);
    buf_append_str(b, ",");
    price_str(b, "input_cache_read", d->price_cache_read >= 0 ? d->price_cache_read : d->price_in,
              1e6);
    buf_append_str(b, ",");
    price_str(b, "input_cache_write",
              d->price_cache_write >= 0 ? d->price_cache_write : d->price_in, 1e6);
    buf_append_str(b, ",");
    price_str(b, "request", d->price_request, 1);
    buf_append_str(b, "}");
}

/* The deployment whose price the alias shows: the cheapest enabled one for the price
 * strategy, else the first enabled one (what a healthy ordered plan tries first). */
static const struct deployment *headline(const struct model *m)
{
    const struct deployment *best = NULL;
    for (size_t j = 0; j < m->n_deployments; j++) {
        const struct deployment *d = &m->deployments[j];
        if (!d->provider->enabled)
            continue;
        if (!best)
            best = d;
        if (m->strategy == STRATEGY_PRICE && d->price_in >= 0 &&
            (best->price_in < 0 || d->price_in + d->price_out < best->price_in + best->price_out))
            best = d;
    }
    return best;
}

static void model_json(struct buf *b, const struct model *m)
{
    uint32_t ctx = 0;
    size_t enabled = 0;
    for (size_t j = 0; j < m->n_deployments; j++) {
        const struct deployment *d = &m->deployments[j];
        if (!d->provider->enabled)
            continue;
        enabled++;
        if (d->context_window > ctx)
            ctx = d->context_window;
    }
    buf_append_str(b, "{\"id\":\"");
    buf_append_json_str(b, m->name, strlen(m->name));
    buf_append_str(b, "\",\"object\":\"model\",\"created\":0,\"owned_by\":\"llmux\",\"name\":\"");
    buf_append_json_str(b, m->name, strlen(m->name));
    buf_append_str(b, "\",\"context_length\":");
    if (ctx)
        buf_append_uint(b, ctx);
    else
        buf_append_str(b, "null");
    pricing(b, headline(m));
    buf_append_str(b, ",\"deployments\":");
    buf_append_uint(b, enabled);
    buf_append_str(b, "}");
}

int catalog_list(const struct runtime *rt, struct buf *out)
{
    const struct config *cfg = rt->cfg;
    buf_append_str(out, "{\"object\":\"list\",\"data\":[");
    int first = 1;
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct model *m = &cfg->models[i];
        if (!find_alias(cfg, m->name, strlen(m->name)))
            continue;
        if (!first)
            buf_append_str(out, ",");
        model_json(out, m);
        first = 0;
    }
    return buf_append_str(out, "]}");
}

int catalog_model(const struct runtime *rt, const char *id, size_t len, struct buf *out)
{
    const struct model *m = find_alias(rt->cfg, id, len);
    if (!m)
        return -1;
    model_json(out, m);
    return 0;
}

/* ,"key":{"p50":..,"p75":..,"p90":..,"p99":..} or null, over the last 30 minutes. */
static void quantiles(struct buf *b, const char *key, const struct window *w, int64_t now,
                      enum win_series s)
{
    static const double qs[4] = {0.5, 0.75, 0.9, 0.99};
    double v[4];
    buf_printf(b, ",\"%s\":", key);
    if (window_quantiles(w, now, 30, s, qs, 4, v) != 0)
        buf_append_str(b, "null");
    else
        buf_printf(b, "{\"p50\":%.1f,\"p75\":%.1f,\"p90\":%.1f,\"p99\":%.1f}", v[0], v[1], v[2],
                   v[3]);
}

static void uptime(struct buf *b, const char *key, const struct window *w, int64_t now,
                   unsigned minutes)
{
    double pct;
    buf_printf(b, ",\"%s\":", key);
    if (window_uptime(w, now, minutes, &pct) != 0)
        buf_append_str(b, "null");
    else
        buf_printf(b, "%.2f", pct);
}

int catalog_endpoints(const struct runtime *rt, const struct shm *shm, const char *id, size_t len,
                      uint64_t now_ms, int64_t now_s, struct buf *out)
{
    const struct model *m = config_find_model(rt->cfg, id, len);
    if (!m)
        return -1;
    struct dep_health *t = malloc(sizeof(*t)); /* every worker's record of a deployment */
    if (!t)
        return UV_ENOMEM;
    buf_append_str(out, "{\"data\":{\"id\":\"");
    buf_append_json_str(out, m->name, strlen(m->name));
    buf_append_str(out, "\",\"name\":\"");
    buf_append_json_str(out, m->name, strlen(m->name));
    buf_append_str(out, "\",\"endpoints\":[");
    for (size_t j = 0; j < m->n_deployments; j++) {
        const struct deployment *d = &m->deployments[j];
        const struct dep_health *h = rt->health->deps[d->health_id];
        health_total(shm, h, t);
        buf_append_str(out, j ? ",{\"name\":\"" : "{\"name\":\"");
        buf_append_json_str(out, d->provider->name, strlen(d->provider->name));
        buf_append_str(out, " | ");
        buf_append_json_str(out, d->model, strlen(d->model));
        buf_append_str(out, "\",\"provider_name\":\"");
        buf_append_json_str(out, d->provider->name, strlen(d->provider->name));
        buf_append_str(out, "\",\"model\":\"");
        buf_append_json_str(out, d->model, strlen(d->model));
        buf_printf(out, "\",\"kind\":\"%s\",\"context_length\":", provider_kind_name(d->provider->kind));
        if (d->context_window)
            buf_append_uint(out, d->context_window);
        else
            buf_append_str(out, "null");
        pricing(out, d);
        buf_printf(out, ",\"status\":\"%s\"",
                   d->provider->enabled ? health_state(h, now_ms) : "disabled");
        uptime(out, "uptime_last_5m", &t->win, now_s, 5);
        uptime(out, "uptime_last_30m", &t->win, now_s, 30);
        uptime(out, "uptime_last_1d", &t->win, now_s, 24 * 60);
        quantiles(out, "latency_last_30m", &t->win, now_s, WIN_TTFT);
        quantiles(out, "throughput_last_30m", &t->win, now_s, WIN_TPS);
        buf_append_str(out, ",\"requests\":");
        buf_append_uint(out, t->requests);
        buf_append_str(out, ",\"failures\":");
        buf_append_uint(out, t->failures);
        buf_append_str(out, "}");
    }
    free(t);
    return buf_append_str(out, "]}}");
}
