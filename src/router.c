/* router: model name -> plan. See include/llmux/router.h. */
#include "llmux/router.h"

#include <stdio.h>
#include <string.h>

static void add_reason(char *err, size_t errlen, const struct provider *p)
{
    size_t used = strlen(err);
    if (strstr(err, p->name) || used + 8 >= errlen)
        return;
    snprintf(err + used, errlen - used, "%s%s: %s", used ? "; " : "", p->name,
             p->disabled_reason ? p->disabled_reason : "disabled");
}

int router_plan(const struct config *cfg, const char *model, size_t len, struct plan *out,
                char *err, size_t errlen)
{
    out->n = 0;
    out->alias = NULL;
    out->timeouts = cfg->timeouts;
    err[0] = 0;
    const struct model *m = config_find_model(cfg, model, len);
    if (m) {
        char reasons[256] = "";
        out->alias = m;
        out->timeouts = m->timeouts;
        for (size_t i = 0; i < m->n_deployments && out->n < PLAN_MAX; i++) {
            const struct deployment *d = &m->deployments[i];
            if (!d->provider->enabled) {
                add_reason(reasons, sizeof(reasons), d->provider);
                continue;
            }
            struct plan_entry *e = &out->entries[out->n++];
            e->provider = d->provider;
            e->model = d->model;
            e->model_len = strlen(d->model);
        }
        if (out->n == 0) {
            snprintf(err, errlen, "model '%.*s' has no enabled deployment (%s)", (int)len, model,
                     reasons);
            return ROUTER_EUNAVAILABLE;
        }
        return 0;
    }
    const char *slash = memchr(model, '/', len);
    const struct provider *p = slash ? config_find_provider(cfg, model, (size_t)(slash - model)) : NULL;
    if (p && (size_t)(slash - model) + 1 < len) {
        if (!p->enabled) {
            snprintf(err, errlen, "provider '%s' is disabled: %s", p->name,
                     p->disabled_reason ? p->disabled_reason : "disabled");
            return ROUTER_EUNAVAILABLE;
        }
        struct plan_entry *e = &out->entries[out->n++];
        e->provider = p;
        e->model = slash + 1;
        e->model_len = len - (size_t)(slash - model) - 1;
        return 0;
    }
    snprintf(err, errlen, "The model '%.*s' does not exist or is not configured", (int)(len > 200 ? 200 : len), model);
    return ROUTER_ENOTFOUND;
}
