/* metrics: the Prometheus registry and text exposition. See include/llmux/metrics.h. */
#include "llmux/metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>
#include <uv.h>

#include "llmux/gateway.h"
#include "llmux/health.h"
#include "llmux/redis.h"
#include "llmux/upstream.h"

static const double seconds_le[MET_SECONDS_BOUNDS] = {0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64,
                                                       1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92};
static const double tokens_le[MET_TOKEN_BOUNDS] = {1,      4,       16,      64,       256,
                                                   1024,   4096,    16384,   65536,    262144,
                                                   1048576, 4194304, 16777216, 67108864};
static const double chunk_le[MET_CHUNK_BOUNDS] = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2,
                                                  0.3,  0.4,   0.5,  0.75,  1.0, 2.5};
static const int statuses[MET_STATUSES - 1] = {200, 400, 401, 403, 404, 408, 413, 422,
                                               429, 499, 500, 502, 503, 504, 529};
static const double overhead_le[MET_SECONDS_BOUNDS] = {0.00001, 0.00002, 0.00005, 0.0001, 0.0002,
                                                        0.0005,  0.001,   0.002,   0.005,  0.01,
                                                        0.02,    0.05,    0.1,     1};
static const char *const endpoints[MET_ENDPOINTS] = {"chat", "completions", "embeddings",
                                                     "messages", "responses"};

static void observe(struct met_hist *h, const double *le, size_t n, double v, uint64_t count)
{
    size_t i = 0;
    while (i < n && v > le[i])
        i++;
    h->b[i] += count;
    h->n += count;
    h->sum += v * (double)count;
}

static int same(const char *a, const char *b)
{
    return strcmp(a, b) == 0;
}

/* Arena a's alias record called name, or NULL. */
static struct alias_metrics *alias_in(const struct shm_arena *a, const char *name)
{
    for (struct shm_link *l = shm_first(a, SHM_ALIASES); l; l = l->next) {
        struct alias_metrics *r = (struct alias_metrics *)l;
        if (same(r->name, name))
            return r;
    }
    return NULL;
}

/* Arena a's record of the route (alias, provider, model), or NULL. */
static struct route_metrics *route_in(const struct shm_arena *a, const char *alias,
                                      const char *provider, const char *model)
{
    for (struct shm_link *l = shm_first(a, SHM_ROUTES); l; l = l->next) {
        struct route_metrics *r = (struct route_metrics *)l;
        if (same(r->alias, alias) && same(r->provider, provider) && same(r->model, model))
            return r;
    }
    return NULL;
}

static struct alias_metrics *alias_of(struct metrics *m, const char *name)
{
    struct alias_metrics *a = alias_in(m->arena, name);
    if (a)
        return a;
    a = shm_alloc(m->arena, sizeof(*a));
    if (!a || !(a->name = shm_strdup(m->arena, name)))
        return NULL;
    shm_publish(m->arena, SHM_ALIASES, &a->link);
    return a;
}

static struct route_metrics *route_of(struct metrics *m, const char *alias,
                                      const struct deployment *d)
{
    struct route_metrics *r = route_in(m->arena, alias, d->provider->name, d->model);
    if (r)
        return r;
    r = shm_alloc(m->arena, sizeof(*r));
    if (!r || !(r->alias = shm_strdup(m->arena, alias)) ||
        !(r->provider = shm_strdup(m->arena, d->provider->name)) ||
        !(r->model = shm_strdup(m->arena, d->model)))
        return NULL;
    shm_publish(m->arena, SHM_ROUTES, &r->link);
    return r;
}

size_t metrics_need(const struct shm_arena *a, const struct config *cfg)
{
    size_t n = a && shm_first(a, SHM_WORKER) ? 0 : shm_rounded(sizeof(struct worker_metrics));
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct model *md = &cfg->models[i];
        if (!a || !alias_in(a, md->name))
            n += shm_rounded(sizeof(struct alias_metrics)) + shm_rounded(strlen(md->name) + 1);
        for (size_t j = 0; j < md->n_deployments; j++) {
            const struct deployment *d = &md->deployments[j];
            if (!a || !route_in(a, md->name, d->provider->name, d->model))
                n += shm_rounded(sizeof(struct route_metrics)) +
                     shm_rounded(strlen(md->name) + 1) +
                     shm_rounded(strlen(d->provider->name) + 1) + shm_rounded(strlen(d->model) + 1);
        }
    }
    return n;
}

int metrics_init(struct metrics *m)
{
    struct worker_metrics *w = (struct worker_metrics *)shm_first(m->arena, SHM_WORKER);
    if (!w) {
        w = shm_alloc(m->arena, sizeof(*w));
        if (!w)
            return UV_ENOMEM;
        w->started = (int64_t)time(NULL);
        shm_publish(m->arena, SHM_WORKER, &w->link);
    }
    memcpy(m->carried, w->count, sizeof(m->carried)); /* what the processes it replaces counted */
    m->cpu_carried = w->cpu;
    memset(w->gauge, 0, sizeof(w->gauge));
    memset(&w->overhead, 0, sizeof(w->overhead));
    m->self = w;
    return 0;
}

int metrics_attach(struct metrics *m, const struct config *cfg, struct alias_metrics ***aliases,
                   struct route_metrics ***routes)
{
    *aliases = calloc(cfg->n_models + 1, sizeof(**aliases));
    *routes = calloc(cfg->n_routes + 1, sizeof(**routes));
    if (!*aliases || !*routes)
        return UV_ENOMEM;
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct model *md = &cfg->models[i];
        if (!((*aliases)[i] = alias_of(m, md->name)))
            return UV_ENOMEM;
        for (size_t j = 0; j < md->n_deployments; j++) {
            const struct deployment *d = &md->deployments[j];
            struct route_metrics *r = route_of(m, md->name, d);
            if (!r)
                return UV_ENOMEM;
            (*routes)[d->route_id] = r;
        }
    }
    return 0;
}

void metrics_request(struct alias_metrics *a, struct route_metrics *r, const struct met_request *q)
{
    if (a) {
        size_t s = 0;
        while (s < MET_STATUSES - 1 && statuses[s] != q->status)
            s++;
        a->requests[q->endpoint][s]++;
        a->fallbacks += q->fallbacks;
        a->hedges += q->hedges;
        a->hedges_won += (uint64_t)q->hedge_won;
        a->continuations += (uint64_t)q->continuations;
        a->endpoint = q->endpoint;
        if (!r && q->status >= 400)
            observe(&a->failed[s], seconds_le, MET_SECONDS_BOUNDS, q->seconds, 1);
    }
    if (!r)
        return;
    r->served++;
    r->endpoint = q->endpoint;
    r->cost_pico += q->cost_pico;
    observe(&r->duration, seconds_le, MET_SECONDS_BOUNDS, q->seconds, 1);
    if (q->has_ttfc)
        observe(&r->ttfc, seconds_le, MET_SECONDS_BOUNDS, q->ttfc, 1);
    if (q->tpoc_count)
        observe(&r->tpoc, chunk_le, MET_CHUNK_BOUNDS, q->tpoc, q->tpoc_count);
    if (q->input_tokens >= 0)
        observe(&r->tokens[0], tokens_le, MET_TOKEN_BOUNDS, (double)q->input_tokens, 1);
    if (q->output_tokens >= 0)
        observe(&r->tokens[1], tokens_le, MET_TOKEN_BOUNDS, (double)q->output_tokens, 1);
}

/* ---- sums over the workers ---- */

static void met_hist_add(struct met_hist *d, const struct met_hist *s)
{
    for (size_t i = 0; i <= MET_SECONDS_BOUNDS; i++)
        d->b[i] += s->b[i];
    d->n += s->n;
    d->sum += s->sum;
}

/* Every worker's records of one list by identity, made for one scrape so that summing a
 * record over the workers costs a few probes, not a walk of every worker's list. */
struct idx_entry {
    uint64_t h;
    uint32_t worker;
    const struct shm_link *rec; /* NULL: an empty place */
};
struct rec_index {
    size_t mask;
    struct idx_entry *e;
};

static uint64_t ident_hash(const char *a, const char *b, const char *c)
{
    const char *parts[3] = {a, b, c};
    uint64_t h = 1469598103934665603ull; /* FNV-1a, parts separated */
    for (int i = 0; i < 3 && parts[i]; i++) {
        for (const char *p = parts[i]; *p; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ull;
        h = (h ^ 0x100) * 1099511628211ull;
    }
    return h;
}

static uint64_t rec_hash(enum shm_list list, const struct shm_link *l)
{
    if (list == SHM_ALIASES)
        return ident_hash(((const struct alias_metrics *)l)->name, NULL, NULL);
    if (list == SHM_ROUTES) {
        const struct route_metrics *r = (const struct route_metrics *)l;
        return ident_hash(r->alias, r->provider, r->model);
    }
    const struct dep_health *d = (const struct dep_health *)l;
    return ident_hash(d->provider, d->model, NULL);
}

static int index_build(struct rec_index *x, const struct shm *s, enum shm_list list)
{
    size_t n = 0, cap = 16;
    for (uint32_t w = 0; w < s->n; w++)
        for (const struct shm_link *l = shm_first(s->arena[w], list); l; l = l->next)
            n++;
    while (cap < 2 * n)
        cap *= 2;
    x->mask = cap - 1;
    x->e = calloc(cap, sizeof(*x->e));
    if (!x->e)
        return UV_ENOMEM;
    for (uint32_t w = 0; w < s->n; w++)
        for (const struct shm_link *l = shm_first(s->arena[w], list); l; l = l->next) {
            uint64_t h = rec_hash(list, l);
            size_t i = (size_t)h & x->mask;
            while (x->e[i].rec)
                i = (i + 1) & x->mask;
            x->e[i] = (struct idx_entry){h, w, l};
        }
    return 0;
}

/* The next entry with hash h from *at (start at h & mask), or NULL: the caller checks the
 * identity. */
static const struct idx_entry *index_next(const struct rec_index *x, uint64_t h, size_t *at)
{
    for (; x->e[*at].rec; *at = (*at + 1) & x->mask) {
        const struct idx_entry *e = &x->e[*at];
        if (e->h == h) {
            *at = (*at + 1) & x->mask;
            return e;
        }
    }
    return NULL;
}

/* Into t, the sum over every worker of the alias record `mine` (this worker's). Its latest
 * endpoint (a label) is that of the lowest-numbered worker that saw requests, whichever
 * worker answers. */
static void alias_total(const struct rec_index *x, const struct alias_metrics *mine,
                        struct alias_metrics *t)
{
    memset(t, 0, sizeof(*t));
    t->name = mine->name;
    t->endpoint = mine->endpoint;
    uint32_t first = UINT32_MAX;
    uint64_t h = ident_hash(mine->name, NULL, NULL);
    size_t at = (size_t)h & x->mask;
    for (const struct idx_entry *e; (e = index_next(x, h, &at));) {
        const struct alias_metrics *a = (const struct alias_metrics *)e->rec;
        if (!same(a->name, mine->name))
            continue;
        uint64_t seen = 0;
        for (int ep = 0; ep < MET_ENDPOINTS; ep++)
            for (int st = 0; st < MET_STATUSES; st++) {
                t->requests[ep][st] += a->requests[ep][st];
                seen += a->requests[ep][st];
            }
        if (seen && e->worker < first) {
            first = e->worker;
            t->endpoint = a->endpoint;
        }
        t->fallbacks += a->fallbacks;
        t->hedges += a->hedges;
        t->hedges_won += a->hedges_won;
        t->continuations += a->continuations;
        for (int st = 0; st < MET_STATUSES; st++)
            met_hist_add(&t->failed[st], &a->failed[st]);
    }
}

/* Into t, the sum over every worker of the route record `mine` (its endpoint as above). */
static void route_total(const struct rec_index *x, const struct route_metrics *mine,
                        struct route_metrics *t)
{
    memset(t, 0, sizeof(*t));
    t->alias = mine->alias;
    t->provider = mine->provider;
    t->model = mine->model;
    t->endpoint = mine->endpoint;
    uint32_t first = UINT32_MAX;
    uint64_t h = ident_hash(mine->alias, mine->provider, mine->model);
    size_t at = (size_t)h & x->mask;
    for (const struct idx_entry *e; (e = index_next(x, h, &at));) {
        const struct route_metrics *r = (const struct route_metrics *)e->rec;
        if (!same(r->alias, mine->alias) || !same(r->provider, mine->provider) ||
            !same(r->model, mine->model))
            continue;
        if (r->served && e->worker < first) {
            first = e->worker;
            t->endpoint = r->endpoint;
        }
        t->served += r->served;
        t->cost_pico += r->cost_pico;
        met_hist_add(&t->tokens[0], &r->tokens[0]);
        met_hist_add(&t->tokens[1], &r->tokens[1]);
        met_hist_add(&t->duration, &r->duration);
        met_hist_add(&t->ttfc, &r->ttfc);
        met_hist_add(&t->tpoc, &r->tpoc);
    }
}

/* A deployment's attempts over every worker, and whether it takes requests: up unless every
 * worker that has tried it has it ejected or cooling down. */
struct dep_total {
    uint64_t successes, failures, cancels, ejections;
    int up;
};

static void dep_total(const struct rec_index *x, const struct dep_health *mine, uint64_t now,
                      struct dep_total *t)
{
    memset(t, 0, sizeof(*t));
    int tried = 0;
    uint64_t h = ident_hash(mine->provider, mine->model, NULL);
    size_t at = (size_t)h & x->mask;
    for (const struct idx_entry *e; (e = index_next(x, h, &at));) {
        const struct dep_health *d = (const struct dep_health *)e->rec;
        if (!same(d->provider, mine->provider) || !same(d->model, mine->model))
            continue;
        t->successes += d->successes;
        t->failures += d->failures;
        t->cancels += d->cancels;
        t->ejections += d->total_ejections;
        if (d->requests) {
            const char *st = health_state(d, now);
            tried = 1;
            t->up |= same(st, "healthy") || same(st, "half_open");
        }
    }
    if (!tried)
        t->up = 1;
}

/* ---- exposition ---- */

/* A label value: backslash, quote and newline escaped. */
static void label(struct buf *b, const char *name, const char *v, int first)
{
    buf_printf(b, "%s%s=\"", first ? "" : ",", name);
    for (const char *p = v; *p; p++) {
        if (*p == '\\' || *p == '"')
            buf_append(b, "\\", 1);
        if (*p == '\n')
            buf_append_str(b, "\\n");
        else
            buf_append(b, p, 1);
    }
    buf_append_str(b, "\"");
}

static void head(struct buf *b, const char *name, const char *type, const char *help)
{
    buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* OpenTelemetry's gen_ai.provider.name for a route: from the kind, and for the OpenAI-compatible
 * kind from the host of well-known providers; else the configured provider name. */
static const char *otel_provider(const struct provider *p)
{
    static const struct {
        const char *host, *name;
    } hosts[] = {{"api.openai.com", "openai"},  {"groq.com", "groq"},
                 {"mistral.ai", "mistral_ai"},  {"deepseek.com", "deepseek"},
                 {"x.ai", "x_ai"},              {"perplexity.ai", "perplexity"},
                 {"cohere", "cohere"},          {"openrouter.ai", "openrouter"},
                 {"together.xyz", "together_ai"}, {"fireworks.ai", "fireworks_ai"}};
    switch (p->kind) {
    case PROVIDER_ANTHROPIC:
        return "anthropic";
    case PROVIDER_GEMINI:
        return "gcp.gemini";
    case PROVIDER_AZURE:
        return "azure.ai.openai";
    default:
        break;
    }
    size_t n = strlen(p->host);
    for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
        size_t k = strlen(hosts[i].host);
        if (n >= k && strcmp(p->host + n - k, hosts[i].host) == 0)
            return hosts[i].name;
    }
    return p->name;
}

/* OTel's gen_ai.operation.name of an endpoint. */
static const char *operation(int endpoint)
{
    return endpoint == 1 ? "text_completion" : endpoint == 2 ? "embeddings" : "chat";
}

/* The GenAI labels of a route (no trailing brace). */
static void genai_labels(struct buf *b, const struct deployment *d, const char *alias,
                         const char *op)
{
    buf_append_str(b, "{");
    label(b, "gen_ai_provider_name", otel_provider(d->provider), 1);
    label(b, "provider", d->provider->name, 0);
    label(b, "gen_ai_request_model", alias, 0);
    label(b, "gen_ai_response_model", d->model, 0);
    label(b, "gen_ai_operation_name", op, 0);
}

static void hist_lines(struct buf *b, const char *name, const struct buf *labels,
                       const struct met_hist *h, const double *le, size_t n)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= n; i++) {
        cum += h->b[i];
        buf_printf(b, "%s_bucket%.*s,le=\"", name, (int)buf_size(labels), buf_head(labels));
        if (i < n)
            buf_printf(b, "%g\"} %" PRIu64 "\n", le[i], cum);
        else
            buf_printf(b, "+Inf\"} %" PRIu64 "\n", cum);
    }
    buf_printf(b, "%s_sum%.*s} %.9g\n%s_count%.*s} %" PRIu64 "\n", name, (int)buf_size(labels),
               buf_head(labels), h->sum, name, (int)buf_size(labels), buf_head(labels), h->n);
}

/* Whether route_id is the first of the config's routes with its record (a deployment listed
 * twice in an alias has one record, rendered once). */
static int first_of(struct route_metrics *const *routes, size_t route_id)
{
    for (size_t k = 0; k < route_id; k++)
        if (routes[k] == routes[route_id])
            return 0;
    return 1;
}

/* The series of one histogram over every route of the current config. which: 0 duration,
 * 1 ttfc, 2 tpoc, 3/4 input/output tokens. */
static void route_hists(struct buf *b, const struct runtime *rt, const struct route_metrics *totals,
                        const char *name, int which)
{
    const struct config *cfg = rt->cfg;
    struct buf l;
    buf_init(&l, 0);
    for (size_t i = 0; i < cfg->n_models; i++) {
        for (size_t j = 0; j < cfg->models[i].n_deployments; j++) {
            const struct deployment *d = &cfg->models[i].deployments[j];
            if (!first_of(rt->routes, d->route_id))
                continue;
            const struct route_metrics *r = &totals[d->route_id];
            buf_reset(&l);
            genai_labels(&l, d, cfg->models[i].name, operation(r->endpoint));
            if (which >= 3)
                label(&l, "gen_ai_token_type", which == 3 ? "input" : "output", 0);
            const struct met_hist *h = which == 0   ? &r->duration
                                       : which == 1 ? &r->ttfc
                                       : which == 2 ? &r->tpoc
                                                    : &r->tokens[which - 3];
            if (which >= 3)
                hist_lines(b, name, &l, h, tokens_le, MET_TOKEN_BOUNDS);
            else if (which == 2)
                hist_lines(b, name, &l, h, chunk_le, MET_CHUNK_BOUNDS);
            else
                hist_lines(b, name, &l, h, seconds_le, MET_SECONDS_BOUNDS);
        }
    }
    buf_free(&l);
}

static void counter(struct buf *b, const char *name, const char *help, uint64_t v)
{
    head(b, name, "counter", help);
    buf_printf(b, "%s %" PRIu64 "\n", name, v);
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

int metrics_render(struct gateway *gw, struct buf *b)
{
    const struct runtime *rt = gw->rt;
    const struct config *cfg = rt->cfg;
    /* every worker's records summed, by this config's aliases, routes and deployments */
    struct rec_index ix[3] = {{0, NULL}, {0, NULL}, {0, NULL}};
    struct alias_metrics *aliases = calloc(cfg->n_models + 1, sizeof(*aliases));
    struct route_metrics *routes = calloc(cfg->n_routes + 1, sizeof(*routes));
    struct dep_total *deps = calloc(rt->health->n + 1, sizeof(*deps));
    int rc = aliases && routes && deps ? 0 : UV_ENOMEM;
    for (int l = 0; l < 3 && rc == 0; l++)
        rc = index_build(&ix[l], gw->metrics.shm, (enum shm_list)l);
    if (rc == 0) {
        for (size_t i = 0; i < cfg->n_models; i++)
            alias_total(&ix[SHM_ALIASES], rt->aliases[i], &aliases[i]);
        for (size_t i = 0; i < cfg->n_routes; i++)
            route_total(&ix[SHM_ROUTES], rt->routes[i], &routes[i]);
        for (size_t i = 0; i < rt->health->n; i++)
            dep_total(&ix[SHM_HEALTH], rt->health->deps[i], uv_now(gw->loop), &deps[i]);
    }
    for (int l = 0; l < 3; l++)
        free(ix[l].e);
    if (rc != 0) {
        free(aliases);
        free(routes);
        free(deps);
        return rc;
    }
    head(b, "llmux_build_info", "gauge", "llmux's version");
    buf_printf(b, "llmux_build_info{version=\"%s\"} 1\n", LLMUX_VERSION);

    head(b, "llmux_requests_total", "counter",
         "Requests that reached an alias, by endpoint, alias and answer status");
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct alias_metrics *a = &aliases[i];
        for (int e = 0; e < MET_ENDPOINTS; e++)
            for (int s = 0; s < MET_STATUSES; s++) {
                if (!a->requests[e][s])
                    continue;
                buf_append_str(b, "llmux_requests_total{");
                label(b, "endpoint", endpoints[e], 1);
                label(b, "model", a->name, 0);
                char st[8];
                snprintf(st, sizeof(st), "%d", s < MET_STATUSES - 1 ? statuses[s] : 0);
                label(b, "status", s < MET_STATUSES - 1 ? st : "other", 0);
                buf_printf(b, "} %" PRIu64 "\n", a->requests[e][s]);
            }
    }
    static const struct {
        const char *name, *help;
        size_t off;
    } alias_counters[] = {
        {"llmux_fallbacks_total", "Attempts after the first (not hedges), by alias",
         offsetof(struct alias_metrics, fallbacks)},
        {"llmux_continuations_total", "Broken streams continued on another deployment",
         offsetof(struct alias_metrics, continuations)},
    };
    for (size_t k = 0; k < 2; k++) {
        head(b, alias_counters[k].name, "counter", alias_counters[k].help);
        for (size_t i = 0; i < cfg->n_models; i++) {
            const struct alias_metrics *a = &aliases[i];
            buf_printf(b, "%s{", alias_counters[k].name);
            label(b, "model", a->name, 1);
            buf_printf(b, "} %" PRIu64 "\n",
                       *(const uint64_t *)((const char *)a + alias_counters[k].off));
        }
    }
    head(b, "llmux_hedges_total", "counter", "Hedged attempts started, and won, by alias");
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct alias_metrics *a = &aliases[i];
        for (int won = 0; won < 2; won++) {
            buf_append_str(b, "llmux_hedges_total{");
            label(b, "model", a->name, 1);
            label(b, "result", won ? "won" : "started", 0);
            buf_printf(b, "} %" PRIu64 "\n", won ? a->hedges_won : a->hedges);
        }
    }

    /* per deployment (provider, upstream model): the health records */
    const struct health *h = rt->health;
    head(b, "llmux_attempts_total", "counter",
         "Upstream attempts by deployment and outcome (failure: the provider's fault)");
    for (size_t i = 0; i < h->n; i++) {
        static const char *const outcome[3] = {"success", "failure", "cancelled"};
        const uint64_t n[3] = {deps[i].successes, deps[i].failures, deps[i].cancels};
        for (int k = 0; k < 3; k++) {
            buf_append_str(b, "llmux_attempts_total{");
            label(b, "provider", h->deps[i]->provider, 1);
            label(b, "model", h->deps[i]->model, 0);
            label(b, "outcome", outcome[k], 0);
            buf_printf(b, "} %" PRIu64 "\n", n[k]);
        }
    }
    head(b, "llmux_deployment_up", "gauge",
         "1 when the deployment takes requests (healthy or half-open) in a worker that has tried "
         "it, 0 when ejected or cooling down in every such worker, or disabled");
    for (size_t i = 0; i < h->n; i++) {
        buf_append_str(b, "llmux_deployment_up{");
        label(b, "provider", h->deps[i]->provider, 1);
        label(b, "model", h->deps[i]->model, 0);
        buf_printf(b, "} %d\n", h->dep[i]->provider->enabled && deps[i].up);
    }
    head(b, "llmux_ejections_total", "counter", "Circuit-breaker ejections by deployment");
    for (size_t i = 0; i < h->n; i++) {
        buf_append_str(b, "llmux_ejections_total{");
        label(b, "provider", h->deps[i]->provider, 1);
        label(b, "model", h->deps[i]->model, 0);
        buf_printf(b, "} %" PRIu64 "\n", deps[i].ejections);
    }
    free(deps);
    head(b, "llmux_cost_usd_total", "counter", "Spend of served requests in USD, by alias and provider");
    for (size_t i = 0; i < cfg->n_routes; i++) {
        const struct route_metrics *r = &routes[i];
        if (!first_of(rt->routes, i))
            continue;
        buf_append_str(b, "llmux_cost_usd_total{");
        label(b, "model", r->alias, 1);
        label(b, "provider", r->provider, 0);
        label(b, "upstream_model", r->model, 0);
        buf_append_str(b, "} ");
        buf_append_fixed(b, r->cost_pico, 12);
        buf_append_str(b, "\n");
    }

    head(b, "llmux_key_spend_usd", "gauge",
         "Spend of each gateway key in its current budget period (day, month or total), in USD");
    static const char *const periods[] = {"total", "day", "month"};
    for (size_t i = 0; i < cfg->n_keys; i++) {
        const struct gateway_key *k = &cfg->keys[i];
        buf_append_str(b, "llmux_key_spend_usd{");
        label(b, "key", k->name, 1);
        label(b, "period", periods[k->budget_period], 0);
        buf_append_str(b, "} ");
        buf_append_fixed(b, limits_spent_now(rt->key_slots[i], k->budget_period), 12);
        buf_append_str(b, "\n");
    }
    head(b, "gen_ai_client_operation_duration_seconds", "histogram",
         "Duration of served GenAI operations (request received to the last byte)");
    route_hists(b, rt, routes, "gen_ai_client_operation_duration_seconds", 0);
    { /* requests no deployment served: by alias and error_type (the answer's status) */
        struct buf l;
        buf_init(&l, 0);
        for (size_t i = 0; i < cfg->n_models; i++) {
            const struct alias_metrics *a = &aliases[i];
            for (int st = 0; st < MET_STATUSES; st++) {
                if (!a->failed[st].n)
                    continue;
                char code[8];
                snprintf(code, sizeof(code), "%d", st < MET_STATUSES - 1 ? statuses[st] : 0);
                buf_reset(&l);
                buf_append_str(&l, "{");
                label(&l, "gen_ai_request_model", a->name, 1);
                label(&l, "gen_ai_operation_name", operation(a->endpoint), 0);
                label(&l, "error_type", st < MET_STATUSES - 1 ? code : "_OTHER", 0);
                hist_lines(b, "gen_ai_client_operation_duration_seconds", &l, &a->failed[st],
                           seconds_le, MET_SECONDS_BOUNDS);
            }
        }
        buf_free(&l);
    }
    head(b, "gen_ai_client_operation_time_to_first_chunk_seconds", "histogram",
         "Streams: request received to the first content chunk");
    route_hists(b, rt, routes, "gen_ai_client_operation_time_to_first_chunk_seconds", 1);
    head(b, "gen_ai_client_operation_time_per_output_chunk_seconds", "histogram",
         "Streams: time between output chunks after the first");
    route_hists(b, rt, routes, "gen_ai_client_operation_time_per_output_chunk_seconds", 2);
    head(b, "gen_ai_client_token_usage", "histogram", "Tokens per served operation, input and output");
    route_hists(b, rt, routes, "gen_ai_client_token_usage", 3);
    route_hists(b, rt, routes, "gen_ai_client_token_usage", 4);

    /* the workers' own figures: counters and gauges summed, the overhead per worker */
    metrics_publish(gw);
    struct worker_metrics sum;
    memset(&sum, 0, sizeof(sum));
    sum.started = INT64_MAX;
    int redis_workers = 0, redis_up_all = 1;
    head(b, "llmux_overhead_seconds", "histogram",
         "llmux's own time per request (handlers: parsing, routing, encoding, relaying)");
    for (uint32_t w = 0; w < gw->metrics.shm->n; w++) {
        const struct worker_metrics *wm =
            (const struct worker_metrics *)shm_first(gw->metrics.shm->arena[w], SHM_WORKER);
        if (!wm)
            continue; /* not started yet */
        for (int i = 0; i < MET_COUNTERS; i++)
            sum.count[i] += wm->count[i];
        sum.cpu += wm->cpu;
        for (int i = 0; i < MET_GAUGES; i++)
            sum.gauge[i] += wm->gauge[i];
        if (wm->gauge[MET_REDIS_UP] != 2) {
            redis_workers++;
            redis_up_all &= wm->gauge[MET_REDIS_UP] == 1;
        }
        if (wm->started < sum.started)
            sum.started = wm->started;
        struct buf l; /* hist_lines adds ",le=...": one label first */
        buf_init(&l, 0);
        buf_printf(&l, "{worker=\"%u\"", w);
        hist_lines(b, "llmux_overhead_seconds", &l, &wm->overhead, overhead_le, MET_SECONDS_BOUNDS);
        buf_free(&l);
    }
    const uint64_t *c = sum.count, *g = sum.gauge;
    head(b, "llmux_upstream_connections", "gauge", "Upstream connections: open (busy or idle) and idle");
    buf_printf(b, "llmux_upstream_connections{state=\"open\"} %" PRIu64 "\n", g[MET_CONNS_OPEN]);
    buf_printf(b, "llmux_upstream_connections{state=\"idle\"} %" PRIu64 "\n", g[MET_CONNS_IDLE]);
    counter(b, "llmux_retry_budget_refusals_total", "Retries and hedges refused by the retry budget",
            c[MET_BUDGET_REFUSALS]);
    head(b, "llmux_cache_requests_total", "counter",
         "Requests to aliases with a response cache, by what the cache did");
    buf_printf(b, "llmux_cache_requests_total{result=\"hit\"} %" PRIu64 "\n", c[MET_CACHE_HIT]);
    buf_printf(b, "llmux_cache_requests_total{result=\"miss\"} %" PRIu64 "\n", c[MET_CACHE_MISS]);
    buf_printf(b, "llmux_cache_requests_total{result=\"bypass\"} %" PRIu64 "\n",
               c[MET_CACHE_BYPASS]);
    head(b, "llmux_cache_bytes", "gauge",
         "Bytes held by the response cache (entries and bookkeeping)");
    buf_printf(b, "llmux_cache_bytes %" PRIu64 "\n", g[MET_CACHE_BYTES]);
    head(b, "llmux_cache_entries", "gauge", "Answers held by the response cache");
    buf_printf(b, "llmux_cache_entries %" PRIu64 "\n", g[MET_CACHE_ENTRIES]);
    counter(b, "llmux_cache_stored_total", "Answers put into the response cache",
            c[MET_CACHE_STORED]);
    counter(b, "llmux_cache_evictions_total", "Entries evicted to stay under cache.max_bytes",
            c[MET_CACHE_EVICTIONS]);
    if (redis_workers) {
        head(b, "llmux_redis_up", "gauge",
             "1 when every worker's connection to the shared-state Redis is up");
        buf_printf(b, "llmux_redis_up %d\n", redis_up_all);
        counter(b, "llmux_redis_commands_total", "Commands sent to Redis", c[MET_REDIS_COMMANDS]);
        counter(b, "llmux_redis_failures_total",
                "Redis commands unanswered (down, timed out) or refused unsent", c[MET_REDIS_FAILED]);
        counter(b, "llmux_redis_outages_total", "Redis connection losses and failed connects",
                c[MET_REDIS_OUTAGES]);
    }
    head(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes, all workers");
    buf_printf(b, "process_resident_memory_bytes %" PRIu64 "\n", g[MET_RSS]);
    head(b, "process_open_fds", "gauge", "Open file descriptors, all workers");
    buf_printf(b, "process_open_fds %" PRIu64 "\n", g[MET_FDS]);
    head(b, "process_cpu_seconds_total", "counter", "User and system CPU time in seconds, all workers");
    buf_printf(b, "process_cpu_seconds_total %.6f\n", sum.cpu);
    head(b, "process_start_time_seconds", "gauge", "Start time of the process, unix seconds");
    free(aliases);
    free(routes);
    return buf_printf(b, "process_start_time_seconds %" PRId64 "\n", sum.started);
}

void metrics_publish(struct gateway *gw)
{
    struct worker_metrics *w = gw->metrics.self;
    uint64_t c[MET_COUNTERS] = {0}, *g = w->gauge;
    const uint64_t *cr = gw->cache.results;
    c[MET_BUDGET_REFUSALS] = gw->health.budget_refusals;
    c[MET_CACHE_HIT] = cr[CACHE_HIT];
    c[MET_CACHE_MISS] = cr[CACHE_MISS] + cr[CACHE_REFRESH];
    c[MET_CACHE_BYPASS] = cr[CACHE_BYPASS];
    c[MET_CACHE_STORED] = gw->cache.stored;
    struct cache_store_stats cs;
    gw->cache.store->ops->stats(gw->cache.store, &cs);
    c[MET_CACHE_EVICTIONS] = cs.evictions;
    g[MET_CACHE_BYTES] = cs.bytes;
    g[MET_CACHE_ENTRIES] = cs.entries;
    g[MET_REDIS_UP] = 2;
    if (gw->redis) {
        const struct redis_stats *rs = redis_stats(gw->redis);
        c[MET_REDIS_COMMANDS] = rs->commands;
        c[MET_REDIS_FAILED] = rs->failed;
        c[MET_REDIS_OUTAGES] = rs->outages;
        g[MET_REDIS_UP] = redis_up(gw->redis) ? 1 : 0;
    }
    if (gw->pool) {
        const struct pool_stats *ps = pool_get_stats(gw->pool);
        g[MET_CONNS_OPEN] = ps->open;
        g[MET_CONNS_IDLE] = ps->idle;
    }
    long page = sysconf(_SC_PAGESIZE);
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &resident) != 2)
            resident = 0;
        fclose(f);
    }
    g[MET_RSS] = (uint64_t)resident * (uint64_t)page;
    int fds = open_fds();
    g[MET_FDS] = fds > 0 ? (uint64_t)fds : 0;
    for (int i = 0; i < MET_COUNTERS; i++)
        w->count[i] = gw->metrics.carried[i] + c[i];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    w->cpu = gw->metrics.cpu_carried + (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
             ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
    const struct hist *oh = &gw->stats.overhead_us;
    if (oh->count == w->overhead.n)
        return; /* no request since the last copy */
    uint64_t le_us[MET_SECONDS_BOUNDS], n[MET_SECONDS_BOUNDS], prev = 0;
    for (size_t i = 0; i < MET_SECONDS_BOUNDS; i++)
        le_us[i] = (uint64_t)(overhead_le[i] * 1e6);
    hist_counts_le(oh, le_us, MET_SECONDS_BOUNDS, n);
    for (size_t i = 0; i < MET_SECONDS_BOUNDS; i++) {
        w->overhead.b[i] = n[i] - prev;
        prev = n[i];
    }
    w->overhead.b[MET_SECONDS_BOUNDS] = oh->count - prev;
    w->overhead.n = oh->count;
    w->overhead.sum = oh->sum / 1e6;
}
