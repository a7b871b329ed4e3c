/* health: deployment health and the retry budget. See include/llmux/health.h. */
#include "llmux/health.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define EWMA_ALPHA 0.2

struct dep_health *health_in(const struct shm_arena *a, const char *provider, const char *model)
{
    for (struct shm_link *l = shm_first(a, SHM_HEALTH); l; l = l->next) {
        struct dep_health *r = (struct dep_health *)l;
        if (strcmp(r->provider, provider) == 0 && strcmp(r->model, model) == 0)
            return r;
    }
    return NULL;
}

/* arena's record for the identity of d, made when new; NULL when the arena is full. */
static struct dep_health *dep_of(struct shm_arena *arena, const struct deployment *d)
{
    struct dep_health *r = health_in(arena, d->provider->name, d->model);
    if (r)
        return r;
    r = shm_alloc(arena, sizeof(*r));
    if (!r || !(r->provider = shm_strdup(arena, d->provider->name)) ||
        !(r->model = shm_strdup(arena, d->model)))
        return NULL;
    shm_publish(arena, SHM_HEALTH, &r->link);
    return r;
}

size_t health_need(const struct shm_arena *a, const struct config *cfg)
{
    unsigned char *seen = calloc(cfg->n_health + 1, 1);
    size_t n = 0;
    if (!seen)
        return SIZE_MAX;
    for (size_t i = 0; i < cfg->n_models; i++)
        for (size_t j = 0; j < cfg->models[i].n_deployments; j++) {
            const struct deployment *d = &cfg->models[i].deployments[j];
            if (seen[d->health_id] || (a && health_in(a, d->provider->name, d->model)))
                continue;
            seen[d->health_id] = 1;
            n += shm_rounded(sizeof(struct dep_health)) +
                 shm_rounded(strlen(d->provider->name) + 1) + shm_rounded(strlen(d->model) + 1);
        }
    free(seen);
    return n;
}

void health_adopt(struct shm_arena *a)
{
    for (struct shm_link *l = shm_first(a, SHM_HEALTH); l; l = l->next) {
        struct dep_health *r = (struct dep_health *)l;
        r->cancels += r->inflight;
        r->inflight = 0;
        r->probing = 0;
    }
}

void health_total(const struct shm *s, const struct dep_health *mine, struct dep_health *t)
{
    *t = *mine;
    t->requests = t->successes = t->failures = t->cancels = t->total_ejections = 0;
    t->inflight = 0;
    memset(&t->win, 0, sizeof(t->win));
    for (uint32_t w = 0; w < s->n; w++) {
        const struct dep_health *r = health_in(s->arena[w], mine->provider, mine->model);
        if (!r)
            continue;
        t->requests += r->requests;
        t->successes += r->successes;
        t->failures += r->failures;
        t->cancels += r->cancels;
        t->inflight += r->inflight;
        t->total_ejections += r->total_ejections;
        window_merge(&t->win, &r->win);
    }
}

struct health *health_create(const struct config *cfg, struct health_shared *sh,
                             struct shm_arena *arena)
{
    struct health *h = calloc(1, sizeof(*h));
    if (!h)
        return NULL;
    h->cfg = cfg->health;
    if (h->cfg.window > 64)
        h->cfg.window = 64;
    h->sh = sh ? sh : calloc(1, sizeof(*h->sh));
    h->own_sh = !sh;
    h->n = cfg->n_health;
    h->deps = calloc(h->n ? h->n : 1, sizeof(*h->deps));
    h->dep = calloc(h->n ? h->n : 1, sizeof(*h->dep));
    if (!h->sh || !h->deps || !h->dep) {
        health_free(h);
        return NULL;
    }
    for (size_t i = 0; i < cfg->n_models; i++) {
        for (size_t j = 0; j < cfg->models[i].n_deployments; j++) {
            const struct deployment *d = &cfg->models[i].deployments[j];
            if (h->dep[d->health_id])
                continue;
            h->dep[d->health_id] = d;
            h->deps[d->health_id] = dep_of(arena, d);
            if (!h->deps[d->health_id]) {
                health_free(h);
                return NULL;
            }
        }
    }
    return h;
}

void health_free(struct health *h)
{
    if (!h)
        return;
    if (h->own_sh)
        free(h->sh);
    free(h->deps);
    free(h->dep);
    free(h);
}

int health_usable(const struct health *h, size_t id, uint64_t now)
{
    const struct dep_health *d = h->deps[id];
    if (now < d->cooldown_until)
        return 0;
    if (!d->ejected_until)
        return 1;
    return now >= d->ejected_until && !d->probing;
}

int health_begin(struct health *h, size_t id, uint64_t now)
{
    struct dep_health *d = h->deps[id];
    d->inflight++;
    d->requests++;
    if (d->ejected_until && now >= d->ejected_until && !d->probing) {
        d->probing = 1;
        return 1;
    }
    return 0;
}

static void log_event(struct health *h, const struct dep_health *d, const char *event,
                      uint64_t for_ms, const char *why)
{
    if (!h->sh->log)
        return;
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, "{\"event\":\"");
    buf_append_str(&b, event);
    buf_append_str(&b, "\",\"provider\":\"");
    buf_append_json_str(&b, d->provider, strlen(d->provider));
    buf_append_str(&b, "\",\"model\":\"");
    buf_append_json_str(&b, d->model, strlen(d->model));
    buf_append_str(&b, "\"");
    if (for_ms)
        buf_printf(&b, ",\"for_ms\":%" PRIu64, for_ms);
    if (why) {
        buf_append_str(&b, ",\"reason\":\"");
        buf_append_json_str(&b, why, strlen(why));
        buf_append_str(&b, "\"");
    }
    buf_append_str(&b, "}\n");
    h->sh->log(h->sh->log_ctx, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

static void record_outcome(struct health *h, struct dep_health *d, int failed)
{
    d->window_bits = (d->window_bits << 1) | (failed ? 1u : 0u);
    if (d->window_n < h->cfg.window)
        d->window_n++;
}

static unsigned window_failures(const struct health *h, const struct dep_health *d)
{
    uint64_t mask = h->cfg.window >= 64 ? ~0ull : ((1ull << h->cfg.window) - 1);
    return (unsigned)__builtin_popcountll(d->window_bits & mask);
}

static void ewma(double *v, double sample)
{
    *v = *v == 0 ? sample : *v + EWMA_ALPHA * (sample - *v);
}

void health_success(struct health *h, size_t id, uint64_t now, const struct health_sample *s)
{
    struct dep_health *d = h->deps[id];
    if (d->inflight)
        d->inflight--;
    d->successes++;
    record_outcome(h, d, 0);
    d->consecutive_failures = 0;
    if (d->ejected_until) {
        log_event(h, d, "recovered", 0, NULL);
        d->ejected_until = 0;
        d->ejections = 0;
    }
    d->probing = 0;
    if (s->ttft_ms) {
        ewma(&d->ttft_ms, (double)s->ttft_ms);
        d->ttft_ring[d->n_ttft++ % HEALTH_TTFT_SAMPLES] = (uint32_t)s->ttft_ms;
    }
    if (s->latency_ms)
        ewma(&d->latency_ms, (double)s->latency_ms);
    double tps = s->output_tokens > 1 && s->stream_ms > 0
                     ? (double)s->output_tokens * 1000.0 / (double)s->stream_ms
                     : 0;
    if (tps > 0)
        ewma(&d->tps, tps);
    window_add(&d->win, (int64_t)time(NULL), 0, (double)s->ttft_ms, tps);
}

uint64_t health_cooldown(struct health *h, size_t id, uint64_t now, uint64_t ms, const char *why)
{
    struct dep_health *d = h->deps[id];
    uint64_t cap = h->cfg.max_ejection_ms;
    ms = ms < cap ? ms : cap;
    if (now + ms <= d->cooldown_until)
        return 0;
    int was = now < d->cooldown_until;
    d->cooldown_until = now + ms;
    if (!was || why) /* an extension found in Redis is not news */
        log_event(h, d, "cooldown", ms, why ? why : "Retry-After of another llmux instance");
    return ms;
}

void health_failure(struct health *h, size_t id, uint64_t now, uint64_t retry_after_ms,
                    const char *why)
{
    struct dep_health *d = h->deps[id];
    if (d->inflight)
        d->inflight--;
    d->failures++;
    d->consecutive_failures++;
    window_add(&d->win, (int64_t)time(NULL), 1, 0, 0);
    record_outcome(h, d, 1);
    snprintf(d->last_error, sizeof(d->last_error), "%s", why ? why : "");
    if (retry_after_ms)
        health_cooldown(h, id, now, retry_after_ms, why);
    int was_probe = d->probing;
    d->probing = 0;
    int trip = was_probe || d->consecutive_failures >= h->cfg.failure_threshold ||
               (d->window_n >= h->cfg.window &&
                window_failures(h, d) * 100 >= h->cfg.error_rate_percent * d->window_n);
    if (!trip || (d->ejected_until && now < d->ejected_until))
        return;
    uint64_t ms = h->cfg.base_ejection_ms;
    for (uint32_t i = 0; i < d->ejections && ms < h->cfg.max_ejection_ms; i++)
        ms *= 2;
    if (ms > h->cfg.max_ejection_ms)
        ms = h->cfg.max_ejection_ms;
    d->ejections++;
    d->total_ejections++;
    d->ejected_until = now + ms;
    d->window_bits = 0;
    d->window_n = 0;
    log_event(h, d, "ejected", ms, why);
}

void health_cancel(struct health *h, size_t id, int probe)
{
    struct dep_health *d = h->deps[id];
    if (d->inflight)
        d->inflight--;
    d->cancels++;
    if (probe)
        d->probing = 0;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

uint32_t health_p95_ttft(const struct health *h, size_t id)
{
    const struct dep_health *d = h->deps[id];
    uint32_t n = d->n_ttft < HEALTH_TTFT_SAMPLES ? d->n_ttft : HEALTH_TTFT_SAMPLES;
    if (n < 5)
        return 0;
    uint32_t v[HEALTH_TTFT_SAMPLES];
    memcpy(v, d->ttft_ring, n * sizeof(v[0]));
    qsort(v, n, sizeof(v[0]), cmp_u32);
    return v[(n * 95 + 99) / 100 - 1];
}

/* The bucket of second `sec`, cleared when it last held an older second. */
static size_t bucket(struct health_shared *h, uint64_t now)
{
    uint64_t sec = now / 1000;
    size_t i = (size_t)(sec % 10);
    if (h->bucket_sec[i] != sec) {
        h->bucket_sec[i] = sec;
        h->bucket_requests[i] = 0;
        h->bucket_retries[i] = 0;
    }
    return i;
}

void health_note_request(struct health *h, uint64_t now)
{
    h->sh->bucket_requests[bucket(h->sh, now)]++;
}

int health_retry_allowed(struct health *h, uint64_t now)
{
    struct health_shared *sh = h->sh;
    size_t cur = bucket(sh, now);
    uint64_t sec = now / 1000, requests = 0, retries = 0;
    for (size_t i = 0; i < 10; i++) {
        if (sh->bucket_sec[i] + 10 > sec) {
            requests += sh->bucket_requests[i];
            retries += sh->bucket_retries[i];
        }
    }
    if (retries >= 10ull * h->cfg.min_retries_per_s &&
        retries * 100 >= requests * (uint64_t)h->cfg.retry_budget_percent) {
        sh->budget_refusals++;
        return 0;
    }
    sh->bucket_retries[cur]++;
    return 1;
}

const char *health_state(const struct dep_health *d, uint64_t now)
{
    return now < d->cooldown_until                        ? "cooldown"
           : d->ejected_until && now < d->ejected_until   ? "ejected"
           : d->ejected_until                             ? "half_open"
                                                          : "healthy";
}

int health_status_json(const struct health *h, uint64_t now, struct buf *out)
{
    int rc = buf_printf(out,
                        "{\"hedges\":%" PRIu64 ",\"hedges_won\":%" PRIu64
                        ",\"continuations\":%" PRIu64 ",\"retry_budget_refusals\":%" PRIu64
                        ",\"deployments\":[",
                        h->sh->hedges, h->sh->hedges_won, h->sh->continuations, h->sh->budget_refusals);
    for (size_t i = 0; !rc && i < h->n; i++) {
        const struct dep_health *d = h->deps[i];
        const char *state = health_state(d, now);
        rc = buf_printf(out, "%s{\"provider\":\"", i ? "," : "");
        if (!rc)
            rc = buf_append_json_str(out, d->provider, strlen(d->provider));
        if (!rc)
            rc = buf_append_str(out, "\",\"model\":\"");
        if (!rc)
            rc = buf_append_json_str(out, d->model, strlen(d->model));
        if (!rc)
            rc = buf_printf(out,
                            "\",\"state\":\"%s\",\"enabled\":%s,\"requests\":%" PRIu64
                            ",\"failures\":%" PRIu64 ",\"inflight\":%u"
                            ",\"consecutive_failures\":%u,\"error_rate\":%.3f"
                            ",\"ejections\":%" PRIu64 ",\"ejected_for_ms\":%" PRIu64
                            ",\"ttft_ms\":%.1f,\"ttft_p95_ms\":%u,\"latency_ms\":%.1f"
                            ",\"tokens_per_s\":%.1f,\"last_error\":\"",
                            state, h->dep[i]->provider->enabled ? "true" : "false", d->requests,
                            d->failures, d->inflight, d->consecutive_failures,
                            d->window_n ? (double)window_failures(h, d) / d->window_n : 0.0,
                            d->total_ejections,
                            d->ejected_until > now ? d->ejected_until - now : 0, d->ttft_ms,
                            health_p95_ttft(h, i), d->latency_ms, d->tps);
        if (!rc)
            rc = buf_append_json_str(out, d->last_error, strlen(d->last_error));
        if (!rc)
            rc = buf_append_str(out, "\"}");
    }
    if (!rc)
        rc = buf_append_str(out, "]}");
    return rc;
}
