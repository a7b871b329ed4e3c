/* router: from the model name a client sends (and its OpenRouter-style preferences) to the
 * ordered plan of deployments to try.
 *
 * A configured alias gives its deployments; a name of the form PROVIDER/MODEL that is not an
 * alias goes straight to that provider with MODEL as the upstream id (OpenRouter-style ids).
 * Providers without a key are skipped. Then, in this order:
 *   - the request's `models` list appends each fallback model's deployments;
 *   - `provider.only` / `provider.ignore` / `provider.max_price` filter;
 *   - `provider.order` puts the named providers first in that order (with
 *     `allow_fallbacks: false` nothing else is kept; without an order, only the first);
 *   - otherwise the strategy sorts each model's deployments: the request's `provider.sort`
 *     or `:floor` (price) / `:nitro` (throughput) suffix, else the alias's `strategy`;
 *   - ejected and cooling-down deployments move to the end, and are dropped from the plan
 *     while that keeps at least one usable deployment and at most max_ejection_percent of
 *     the plan out.
 */
#ifndef LLMUX_ROUTER_H
#define LLMUX_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "llmux/config.h"

#define PLAN_MAX 16
#define PREFS_MAX 8

struct health;

struct plan_entry {
    const struct provider *provider;     /* borrowed from the config */
    const struct deployment *deployment; /* NULL for direct PROVIDER/MODEL routing */
    const char *model;                   /* upstream model id (see `borrowed`) */
    size_t model_len;
    int borrowed; /* model points into the caller's request: copy it to keep it */
};

struct plan {
    struct plan_entry entries[PLAN_MAX];
    size_t n;
    struct timeouts timeouts;
    const struct model *alias; /* of the requested model; NULL for direct routing */
    uint32_t max_attempts;     /* attempts in all (>= n unless the alias says fewer) */
    uint32_t hedge_after_ms;   /* 0: no hedging */
    int continue_on_failure;
    size_t dropped;            /* ejected deployments left out */
};

/* OpenRouter's request preferences; strings are borrowed for the router_plan() call. */
struct route_prefs {
    const char *models[PREFS_MAX]; /* fallback models after the requested one */
    size_t n_models;
    const char *order[PREFS_MAX], *only[PREFS_MAX], *ignore[PREFS_MAX]; /* provider names */
    size_t n_order, n_only, n_ignore;
    int allow_fallbacks;    /* default 1 */
    int sort;               /* -1, or STRATEGY_PRICE / _LATENCY / _THROUGHPUT */
    double max_prompt;      /* $/M input tokens, < 0: none */
    double max_completion;  /* $/M output tokens, < 0: none */
};

void route_prefs_init(struct route_prefs *p);

enum {
    ROUTER_ENOTFOUND = -1,    /* no alias and no provider of that name: 404 model_not_found */
    ROUTER_EUNAVAILABLE = -2, /* known, but every deployment's provider is disabled: 503 */
    ROUTER_EFILTERED = -3,    /* the request's preferences left no deployment: 400 */
};

/* Seed the "balance" strategy's random draws (each worker its own). */
void router_seed(uint64_t seed);
/* Build the plan for `model` (len bytes, not necessarily NUL-terminated). health may be NULL
 * (no health ordering). Returns 0 or a ROUTER_E* code with a client-safe explanation in err
 * (never a key). */
int router_plan(const struct config *cfg, const struct health *health, uint64_t now,
                const char *model, size_t len, const struct route_prefs *prefs,
                struct plan *out, char *err, size_t errlen);

#endif
