/* fuzz_config: libFuzzer harness for the config loader (src/config.c, config_parse: the text
 * of a config file). Built by CMake with -DLLMUX_FUZZ=ON (make build-fuzz); run with
 * `make fuzz` or test/fuzz/run.sh. Seeds: corpus/config/, dictionary: config.dict.
 *
 * Besides memory errors and leaks it checks:
 *   - a success returns a config and no message, a failure no config and a message that
 *     names a JSON path ("$...: ...") or is "out of memory";
 *   - the same text parsed with a message buffer of 1..16 bytes gives the same result and a
 *     NUL-terminated prefix of the full message (no overflow when the message is cut);
 *   - the provider key read from the environment (FUZZ_KEY, set to a marker) never appears in
 *     an error message, and a provider is enabled exactly when it names no variable or one
 *     that is set (the key is then copied), with a reason when it is disabled;
 *   - every deployment points into the config's providers, has a non-empty upstream model and
 *     a health id below n_health, deployments naming the same provider and model share one,
 *     and the lookups (config_find_model / config_find_provider) find every name;
 *   - references: config_ref + two config_unref free it (LeakSanitizer watches).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/config.h"
#include "llmux/errors.h"

#define KEY_MARKER "sk-fuzz-SECRET-2f1c"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setenv("FUZZ_KEY", KEY_MARKER, 1);
    setenv("OPENAI_API_KEY", KEY_MARKER, 1);
    unsetenv("FUZZ_UNSET");
    return 0;
}

static void check_config(const struct config *c)
{
    if (!c->listen_host || c->n_providers == 0 || !c->providers)
        abort();
    for (size_t i = 0; i < c->n_providers; i++) {
        const struct provider *p = &c->providers[i];
        if (!p->name || !p->base_url || !p->host || !p->base_path || !p->api_version)
            abort();
        if (config_find_provider(c, p->name, strlen(p->name)) != p)
            abort();
        if (p->enabled != (!p->api_key_env || p->api_key != NULL))
            abort();
        if (p->enabled ? p->disabled_reason != NULL : p->disabled_reason == NULL)
            abort();
        if (p->api_key && strcmp(p->api_key, getenv(p->api_key_env)) != 0)
            abort();
        if (p->disabled_reason && strstr(p->disabled_reason, KEY_MARKER))
            abort();
        if (strcmp(provider_kind_name(p->kind), "unknown") == 0)
            abort();
    }
    for (size_t i = 0; i < c->n_models; i++) {
        const struct model *m = &c->models[i];
        if (!m->name || m->n_deployments == 0 || !m->deployments)
            abort();
        if (config_find_model(c, m->name, strlen(m->name)) != m)
            abort();
        for (size_t j = 0; j < m->n_deployments; j++) {
            const struct deployment *d = &m->deployments[j];
            if (d->provider < c->providers || d->provider >= c->providers + c->n_providers)
                abort();
            if (!d->model || !d->model[0] || d->health_id >= c->n_health)
                abort();
            for (size_t k = 0; k <= i; k++)
                for (size_t l = 0; l < c->models[k].n_deployments; l++) {
                    const struct deployment *e = &c->models[k].deployments[l];
                    int same = e->provider == d->provider && strcmp(e->model, d->model) == 0;
                    if (same != (e->health_id == d->health_id))
                        abort();
                }
        }
    }
    for (size_t i = 0; i < c->n_keys; i++) { /* named, unique, with a model list that holds */
        if (!c->keys[i].name || !c->keys[i].name[0])
            abort();
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->keys[j].name, c->keys[i].name) == 0)
                abort();
        for (size_t j = 0; j < c->keys[i].n_models; j++)
            if (!c->keys[i].models[j] || !c->keys[i].models[j][0])
                abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct config *c = NULL;
    char err[512];
    int rc = config_parse(text, size, &c, err, sizeof(err));
    if (rc != 0 && rc != LLMUX_ECONFIG)
        abort();
    if (rc == 0) {
        if (!c || err[0])
            abort();
        check_config(c);
    } else {
        if (c || !memchr(err, 0, sizeof(err)) ||
            (err[0] != '$' && strcmp(err, "out of memory") != 0))
            abort();
        if (strstr(err, KEY_MARKER) && !memmem(data, size, KEY_MARKER, strlen(KEY_MARKER)))
            abort(); /* the key came from the environment into a message */
    }

    /* The same text with a short message buffer: same result, a cut but terminated message. */
    char small[16 + 1];
    size_t small_len = 1 + size % 16;
    memset(small, 'x', sizeof(small));
    struct config *c2 = NULL;
    int rc2 = config_parse(text, size, &c2, small, small_len);
    if (rc2 != rc || (c2 == NULL) != (c == NULL) || small[small_len] != 'x')
        abort();
    if (strnlen(small, small_len) == small_len ||
        strncmp(small, rc ? err : "", strlen(small)) != 0)
        abort();

    if (c) {
        if (config_ref(c) != c)
            abort();
        config_unref(c);
        config_unref(c);
        config_unref(c2);
    }
    return 0;
}
