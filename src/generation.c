/* generation: finished requests' records. See include/llmux/generation.h. */
#include "llmux/generation.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

int generations_init(struct generations *g, size_t keep)
{
    memset(g, 0, sizeof(*g));
    g->keep = keep;
    g->ring = keep ? calloc(keep, sizeof(*g->ring)) : NULL;
    return keep && !g->ring ? UV_ENOMEM : 0;
}

void generations_free(struct generations *g)
{
    for (size_t i = 0; i < g->keep; i++)
        free(g->ring[i]);
    free(g->ring);
    memset(g, 0, sizeof(*g));
}

void generations_add(struct generations *g, struct gen_rec *r)
{
    if (!g->keep) {
        free(r);
        return;
    }
    free(g->ring[g->next]);
    g->ring[g->next] = r;
    g->next = (g->next + 1) % g->keep;
    if (g->n < g->keep)
        g->n++;
}

const struct gen_rec *generations_nth(const struct generations *g, size_t k)
{
    return k < g->n ? g->ring[(g->next + g->keep - 1 - k) % g->keep] : NULL;
}

const struct gen_rec *generations_find(const struct generations *g, const char *id)
{
    for (size_t k = 0; k < g->n; k++) {
        const struct gen_rec *r = generations_nth(g, k);
        if (strcmp(r->id, id) == 0)
            return r;
    }
    return NULL;
}

int generation_failed(const struct gen_rec *r)
{
    for (size_t i = 0; i < r->n_attempts; i++)
        if (!r->attempts[i].served)
            return 1;
    return 0;
}

/* ,"key":"value" or ,"key":null */
static void str(struct buf *b, const char *key, const char *v)
{
    buf_printf(b, ",\"%s\":", key);
    if (!v) {
        buf_append_str(b, "null");
        return;
    }
    buf_append_str(b, "\"");
    buf_append_json_str(b, v, strlen(v));
    buf_append_str(b, "\"");
}

static void num(struct buf *b, const char *key, int known, long v)
{
    if (known)
        buf_printf(b, ",\"%s\":%ld", key, v);
    else
        buf_printf(b, ",\"%s\":null", key);
}

static void dollars(struct buf *b, const char *key, int priced, uint64_t pico)
{
    buf_printf(b, ",\"%s\":", key);
    if (priced)
        buf_append_fixed(b, pico, 12);
    else
        buf_append_str(b, "null");
}

int generation_json(const struct gen_rec *r, struct buf *b)
{
    buf_append_str(b, "{\"id\":\"");
    buf_append_json_str(b, r->id, strlen(r->id));
    buf_append_str(b, "\"");
    str(b, "model", r->alias);
    str(b, "endpoint", r->endpoint);
    str(b, "provider_name", r->provider);
    str(b, "upstream_model", r->upstream_model);
    buf_printf(b, ",\"streamed\":%s", r->streamed ? "true" : "false");
    time_t t = (time_t)r->created;
    struct tm tm;
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    str(b, "created_at", when);
    num(b, "status", 1, r->status);
    num(b, "latency", r->latency_ms >= 0, r->latency_ms);
    num(b, "generation_time", r->generation_ms >= 0, r->generation_ms);
    num(b, "duration", 1, r->duration_ms);
    num(b, "tokens_prompt", r->usage_known, r->prompt);
    num(b, "tokens_completion", r->usage_known, r->completion);
    num(b, "tokens_cached", r->usage_known, r->cached);
    str(b, "finish_reason", r->finish);
    str(b, "cache", r->cache);
    dollars(b, "total_cost", r->priced, r->total_pico);
    buf_append_str(b, ",\"provider_responses\":[");
    for (size_t i = 0; i < r->n_attempts; i++) {
        const struct gen_attempt *a = &r->attempts[i];
        buf_append_str(b, i ? ",{\"provider_name\":\"" : "{\"provider_name\":\"");
        buf_append_json_str(b, a->provider, strlen(a->provider));
        buf_append_str(b, "\"");
        str(b, "model", a->model);
        num(b, "status", a->status != 0, a->status);
        str(b, "error", a->error);
        num(b, "latency", 1, (long)a->ms);
        buf_printf(b, ",\"is_hedge\":%s,\"is_continuation\":%s,\"served\":%s",
                   a->hedge ? "true" : "false", a->continuation ? "true" : "false",
                   a->served ? "true" : "false");
        dollars(b, "cost", a->priced, a->cost_pico);
        buf_append_str(b, "}");
    }
    return buf_append_str(b, "]}");
}
