/* router: model name + preferences -> plan. See include/llmux/router.h. */
#include "llmux/router.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/health.h"

void route_prefs_init(struct route_prefs *p)
{
    memset(p, 0, sizeof(*p));
    p->allow_fallbacks = 1;
    p->sort = -1;
    p->max_prompt = -1;
    p->max_completion = -1;
}

static void add_reason(char *err, size_t errlen, const struct provider *p)
{
    size_t used = strlen(err);
    if (strstr(err, p->name) || used + 8 >= errlen)
        return;
    snprintf(err + used, errlen - used, "%s%s: %s", used ? "; " : "", p->name,
             p->disabled_reason ? p->disabled_reason : "disabled");
}

static int in_list(const char *name, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(name, list[i]) == 0)
            return (int)i;
    return -1;
}

/* Candidates of one model name, appended to out. Returns 0, or ROUTER_ENOTFOUND /
 * ROUTER_EUNAVAILABLE with err set. `group` tags the entries (for sorting per model). */
static int add_model(const struct config *cfg, const char *model, size_t len, struct plan *out,
                     unsigned char *groups, unsigned char group, char *err, size_t errlen)
{
    const struct model *m = config_find_model(cfg, model, len);
    if (m) {
        char reasons[256] = "";
        size_t before = out->n;
        for (size_t i = 0; i < m->n_deployments && out->n < PLAN_MAX; i++) {
            const struct deployment *d = &m->deployments[i];
            if (!d->provider->enabled) {
                add_reason(reasons, sizeof(reasons), d->provider);
                continue;
            }
            groups[out->n] = group;
            out->entries[out->n++] = (struct plan_entry){d->provider, d, d->model,
                                                         strlen(d->model), 0};
        }
        if (out->n == before) {
            snprintf(err, errlen, "model '%.*s' has no enabled deployment (%s)", (int)len, model,
                     reasons);
            return ROUTER_EUNAVAILABLE;
        }
        return 0;
    }
    const char *slash = memchr(model, '/', len);
    const struct provider *p =
        slash ? config_find_provider(cfg, model, (size_t)(slash - model)) : NULL;
    if (p && (size_t)(slash - model) + 1 < len) {
        if (!p->enabled) {
            snprintf(err, errlen, "provider '%s' is disabled: %s", p->name,
                     p->disabled_reason ? p->disabled_reason : "disabled");
            return ROUTER_EUNAVAILABLE;
        }
        if (out->n < PLAN_MAX) {
            groups[out->n] = group;
            out->entries[out->n++] = (struct plan_entry){
                p, NULL, slash + 1, len - (size_t)(slash - model) - 1, 1};
        }
        return 0;
    }
    snprintf(err, errlen, "The model '%.*s' does not exist or is not configured",
             (int)(len > 200 ? 200 : len), model);
    return ROUTER_ENOTFOUND;
}

/* Sort keys: lower sorts first. */
static double sort_key(const struct plan_entry *e, int strategy, const struct health *h)
{
    const struct deployment *d = e->deployment;
    const struct dep_health *dh = d && h ? h->deps[d->health_id] : NULL;
    switch (strategy) {
    case STRATEGY_PRICE:
        return d && d->price_in >= 0 ? d->price_in + d->price_out : 1e18;
    case STRATEGY_LATENCY: /* unmeasured first, so they become measured */
        return dh && dh->ttft_ms > 0 ? dh->ttft_ms : -1;
    case STRATEGY_THROUGHPUT:
        return dh && dh->tps > 0 ? -dh->tps : -1e18;
    default:
        return 0;
    }
}

static uint64_t rng_state;

void router_seed(uint64_t seed)
{
    rng_state = seed ? seed : 0x9e3779b97f4a7c15ULL;
}

static double rng_unit(void)
{
    if (!rng_state)
        rng_state = (uint64_t)(uintptr_t)&rng_state ^ 0x9e3779b97f4a7c15ULL;
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* Stable insertion sort of entries [a, b) by key (plans are at most 16 long). */
static void sort_range(struct plan_entry *v, size_t a, size_t b, const double *key_in)
{
    double key[PLAN_MAX];
    memcpy(key, key_in, sizeof(key));
    for (size_t i = a + 1; i < b; i++) {
        struct plan_entry e = v[i];
        double k = key[i];
        size_t j = i;
        while (j > a && key[j - 1] > k) {
            v[j] = v[j - 1];
            key[j] = key[j - 1];
            j--;
        }
        v[j] = e;
        key[j] = k;
    }
}

/* Sort each model group's entries by the strategy. Balance draws a weighted random order,
 * each weight divided by 1 + the deployment's in-flight attempts. */
static void apply_strategy(struct plan *p, const unsigned char *groups, int strategy,
                           const struct health *h)
{
    if (strategy == STRATEGY_ORDERED)
        return;
    double key[PLAN_MAX];
    for (size_t i = 0; i < p->n; i++) {
        const struct plan_entry *e = &p->entries[i];
        if (strategy == STRATEGY_BALANCE) {
            double w = e->deployment ? e->deployment->weight : 1;
            if (h && e->deployment)
                w /= 1.0 + h->deps[e->deployment->health_id]->inflight;
            /* Efraimidis-Spirakis: sorting by -u^(1/w) draws a weighted order */
            double u = rng_unit();
            key[i] = -pow(u > 0 ? u : 1e-12, 1.0 / w);
        } else {
            key[i] = sort_key(e, strategy, h);
        }
    }
    size_t a = 0;
    while (a < p->n) {
        size_t b = a;
        while (b < p->n && groups[b] == groups[a])
            b++;
        sort_range(p->entries, a, b, key);
        a = b;
    }
}

/* The request's provider filters. Returns the number removed; reasons appended to why. */
static void filter_prefs(struct plan *p, const struct route_prefs *r, char *why, size_t whylen)
{
    size_t k = 0;
    for (size_t i = 0; i < p->n; i++) {
        const struct plan_entry *e = &p->entries[i];
        const char *name = e->provider->name;
        const char *drop = NULL;
        if (r->n_only && in_list(name, r->only, r->n_only) < 0)
            drop = "not in provider.only";
        else if (in_list(name, r->ignore, r->n_ignore) >= 0)
            drop = "in provider.ignore";
        else if (e->deployment && r->max_prompt >= 0 && e->deployment->price_in > r->max_prompt)
            drop = "prompt price over provider.max_price";
        else if (e->deployment && r->max_completion >= 0 &&
                 e->deployment->price_out > r->max_completion)
            drop = "completion price over provider.max_price";
        if (!drop) {
            p->entries[k++] = *e;
            continue;
        }
        size_t used = strlen(why);
        if (used + 8 < whylen)
            snprintf(why + used, whylen - used, "%s%s (%.*s): %s", used ? "; " : "", name,
                     (int)e->model_len, e->model, drop);
    }
    p->n = k;
}

/* provider.order first, in that order; the rest after them unless fallbacks are refused.
 * Each entry is taken at most once, whatever the order list repeats. */
static void apply_order(struct plan *p, const struct route_prefs *r)
{
    struct plan_entry v[PLAN_MAX];
    char used[PLAN_MAX] = {0};
    size_t k = 0;
    for (size_t o = 0; o < r->n_order; o++) {
        for (size_t i = 0; i < p->n; i++) {
            if (!used[i] && strcmp(p->entries[i].provider->name, r->order[o]) == 0) {
                used[i] = 1;
                v[k++] = p->entries[i];
            }
        }
    }
    for (size_t i = 0; r->allow_fallbacks && i < p->n; i++) {
        if (!used[i] && in_list(p->entries[i].provider->name, r->order, r->n_order) < 0)
            v[k++] = p->entries[i];
    }
    memcpy(p->entries, v, k * sizeof(v[0]));
    p->n = k;
}

/* Unusable deployments to the end; dropped while the plan keeps a usable one and at most
 * max_ejection_percent of it is left out. */
static void apply_health(struct plan *p, const struct health *h, uint64_t now)
{
    struct plan_entry usable[PLAN_MAX], out[PLAN_MAX];
    size_t nu = 0, no = 0;
    for (size_t i = 0; i < p->n; i++) {
        const struct plan_entry *e = &p->entries[i];
        if (!e->deployment || health_usable(h, e->deployment->health_id, now))
            usable[nu++] = *e;
        else
            out[no++] = *e;
    }
    if (no == 0)
        return;
    size_t may_drop = nu ? p->n * h->cfg.max_ejection_percent / 100 : 0;
    if (may_drop > no)
        may_drop = no;
    memcpy(p->entries, usable, nu * sizeof(usable[0]));
    memcpy(p->entries + nu, out, (no - may_drop) * sizeof(out[0]));
    p->n = nu + no - may_drop;
    p->dropped = may_drop;
}

static int suffix(const char *model, size_t len, const char *sfx)
{
    size_t n = strlen(sfx);
    return len > n && memcmp(model + len - n, sfx, n) == 0;
}

int router_plan(const struct config *cfg, const struct health *health, uint64_t now,
                const char *model, size_t len, const struct route_prefs *prefs,
                struct plan *out, char *err, size_t errlen)
{
    struct route_prefs none;
    if (!prefs) {
        route_prefs_init(&none);
        prefs = &none;
    }
    memset(out, 0, sizeof(*out));
    out->timeouts = cfg->timeouts;
    err[0] = 0;
    int sort = prefs->sort;
    if (!config_find_model(cfg, model, len)) {
        if (suffix(model, len, ":floor")) {
            len -= 6;
            sort = STRATEGY_PRICE;
        } else if (suffix(model, len, ":nitro")) {
            len -= 6;
            sort = STRATEGY_THROUGHPUT;
        }
    }
    unsigned char groups[PLAN_MAX];
    int rc = add_model(cfg, model, len, out, groups, 0, err, errlen);
    if (rc)
        return rc;
    const struct model *m = config_find_model(cfg, model, len);
    out->alias = m;
    if (m) {
        out->timeouts = m->timeouts;
        out->hedge_after_ms = m->hedge_after_ms;
        out->continue_on_failure = m->continue_on_failure;
    }
    for (size_t i = 0; i < prefs->n_models; i++) {
        char ignored[256];
        rc = add_model(cfg, prefs->models[i], strlen(prefs->models[i]), out, groups,
                       (unsigned char)(i + 1), ignored, sizeof(ignored));
        if (rc == ROUTER_ENOTFOUND) {
            snprintf(err, errlen, "%s (in models[%zu])", ignored, i);
            return rc;
        }
    }
    char why[512] = "";
    filter_prefs(out, prefs, why, sizeof(why));
    if (out->n == 0) {
        snprintf(err, errlen, "the request's provider preferences leave no deployment: %s", why);
        return ROUTER_EFILTERED;
    }
    if (prefs->n_order) {
        apply_order(out, prefs);
        if (out->n == 0) {
            snprintf(err, errlen,
                     "no deployment of the model is at a provider in provider.order, and "
                     "provider.allow_fallbacks is false");
            return ROUTER_EFILTERED;
        }
    } else {
        apply_strategy(out, groups, sort >= 0 ? sort : m ? (int)m->strategy : STRATEGY_ORDERED,
                       health);
        if (!prefs->allow_fallbacks)
            out->n = 1;
    }
    if (health)
        apply_health(out, health, now);
    out->max_attempts = m && m->max_attempts ? m->max_attempts : (uint32_t)out->n;
    return 0;
}
