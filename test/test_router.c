/* Router plan building: aliases in order, disabled providers skipped, direct PROVIDER/MODEL
 * routing, unknown models, and client-safe error messages. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "llmux/config.h"
#include "llmux/router.h"

static const char *conf_json =
    "{\"listen\":\"127.0.0.1:0\","
    " \"timeouts_ms\":{\"connect\":1000,\"first_byte\":2000,\"idle\":3000,\"total\":4000},"
    " \"providers\":{"
    "  \"a\":{\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:1/v1\"},"
    "  \"b\":{\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:2/v1\"},"
    "  \"keyed\":{\"kind\":\"openai\",\"base_url\":\"https://example.com/v1\","
    "             \"api_key_env\":\"LLMUX_TEST_ROUTER_KEY\"}},"
    " \"models\":{"
    "  \"m\":{\"deployments\":[{\"provider\":\"keyed\",\"model\":\"k1\"},"
    "                         {\"provider\":\"b\",\"model\":\"b1\"},"
    "                         {\"provider\":\"a\",\"model\":\"a1\"}],"
    "        \"timeouts_ms\":{\"first_byte\":50}},"
    "  \"only-keyed\":{\"deployments\":[{\"provider\":\"keyed\",\"model\":\"k2\"}]},"
    "  \"a/alias-wins\":{\"deployments\":[{\"provider\":\"b\",\"model\":\"b2\"}]}}}";

static int entry_is(const struct plan_entry *e, const char *provider, const char *model)
{
    return strcmp(e->provider->name, provider) == 0 && e->model_len == strlen(model) &&
           memcmp(e->model, model, e->model_len) == 0;
}

int main(void)
{
    unsetenv("LLMUX_TEST_ROUTER_KEY");
    struct config *cfg;
    char err[512];
    CHECK_INT(config_parse(conf_json, strlen(conf_json), &cfg, err, sizeof(err)), 0);
    if (check_failed) {
        fprintf(stderr, "config: %s\n", err);
        return check_report();
    }
    struct plan p;

    /* Alias: order kept, the keyless provider skipped, per-model timeouts applied. */
    CHECK_INT(router_plan(cfg, NULL, 0, "m", 1, NULL, &p, err, sizeof(err)), 0);
    CHECK_INT(p.n, 2);
    CHECK(entry_is(&p.entries[0], "b", "b1"));
    CHECK(entry_is(&p.entries[1], "a", "a1"));
    CHECK_INT(p.timeouts.first_byte_ms, 50);
    CHECK_INT(p.timeouts.connect_ms, 1000);
    CHECK(p.alias != NULL);

    /* Every deployment disabled: 503-class error naming why, never a key. */
    CHECK_INT(router_plan(cfg, NULL, 0, "only-keyed", 10, NULL, &p, err, sizeof(err)), ROUTER_EUNAVAILABLE);
    CHECK_CONTAINS(err, "LLMUX_TEST_ROUTER_KEY is not set");

    /* Direct routing: PROVIDER/MODEL, the model may itself contain slashes. */
    const char *direct = "a/org/model-x?x=1";
    CHECK_INT(router_plan(cfg, NULL, 0, direct, strlen(direct), NULL, &p, err, sizeof(err)), 0);
    CHECK_INT(p.n, 1);
    CHECK(entry_is(&p.entries[0], "a", "org/model-x?x=1"));
    CHECK(p.alias == NULL);
    CHECK_INT(p.timeouts.first_byte_ms, 2000);

    /* A configured alias wins over a provider prefix. */
    CHECK_INT(router_plan(cfg, NULL, 0, "a/alias-wins", 12, NULL, &p, err, sizeof(err)), 0);
    CHECK(entry_is(&p.entries[0], "b", "b2"));

    /* Direct routing to a disabled provider, to an unknown provider, empty model, unknown. */
    CHECK_INT(router_plan(cfg, NULL, 0, "keyed/x", 7, NULL, &p, err, sizeof(err)), ROUTER_EUNAVAILABLE);
    CHECK_INT(router_plan(cfg, NULL, 0, "nope/x", 6, NULL, &p, err, sizeof(err)), ROUTER_ENOTFOUND);
    CHECK_INT(router_plan(cfg, NULL, 0, "a/", 2, NULL, &p, err, sizeof(err)), ROUTER_ENOTFOUND);
    CHECK_INT(router_plan(cfg, NULL, 0, "gpt-5", 5, NULL, &p, err, sizeof(err)), ROUTER_ENOTFOUND);
    CHECK_CONTAINS(err, "gpt-5");

    /* With the key present the keyed deployment comes first again. */
    setenv("LLMUX_TEST_ROUTER_KEY", "sk-secret-value", 1);
    struct config *cfg2;
    CHECK_INT(config_parse(conf_json, strlen(conf_json), &cfg2, err, sizeof(err)), 0);
    CHECK_INT(router_plan(cfg2, NULL, 0, "m", 1, NULL, &p, err, sizeof(err)), 0);
    CHECK_INT(p.n, 3);
    CHECK(entry_is(&p.entries[0], "keyed", "k1"));
    config_unref(cfg2);
    config_unref(cfg);
    return check_report();
}
