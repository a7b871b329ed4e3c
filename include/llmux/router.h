/* router: from the model name a client sends to the ordered plan of deployments to try.
 *
 * A configured alias gives its deployments in order, skipping those whose provider is disabled
 * (no key). A name of the form PROVIDER/MODEL that is not an alias goes straight to that
 * provider with MODEL as the upstream id (OpenRouter-style ids). Later strategies (price,
 * latency, health) reorder the same plan.
 */
#ifndef LLMUX_ROUTER_H
#define LLMUX_ROUTER_H

#include <stddef.h>

#include "llmux/config.h"

#define PLAN_MAX 16

struct plan_entry {
    const struct provider *provider; /* borrowed from the config */
    const char *model;               /* upstream model id; borrowed (config or request body) */
    size_t model_len;
};

struct plan {
    struct plan_entry entries[PLAN_MAX];
    size_t n;
    struct timeouts timeouts;
    const struct model *alias; /* NULL for direct PROVIDER/MODEL routing */
};

enum {
    ROUTER_ENOTFOUND = -1,    /* no alias and no provider of that name: 404 model_not_found */
    ROUTER_EUNAVAILABLE = -2, /* known, but every deployment's provider is disabled: 503 */
};

/* Build the plan for `model` (len bytes, not necessarily NUL-terminated). Returns 0 or a
 * ROUTER_E* code with a client-safe explanation in err (never a key). */
int router_plan(const struct config *cfg, const char *model, size_t len, struct plan *out,
                char *err, size_t errlen);

#endif
