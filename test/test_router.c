/* Router plan building: aliases in order, disabled providers skipped, direct PROVIDER/MODEL
 * routing, unknown models, client-safe error messages; strategies, request preferences and
 * health (ejected deployments) ordering. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "llmux/config.h"
#include "llmux/health.h"
#include "llmux/router.h"
#include "llmux/shm.h"

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

static const char *routing_json =
    "{\"providers\":{"
    "  \"a\":{\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:1/v1\"},"
    "  \"b\":{\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:2/v1\"},"
    "  \"c\":{\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:3/v1\"}},"
    " \"health\":{\"failure_threshold\":2,\"base_ejection_ms\":1000,\"max_ejection_percent\":50},"
    " \"models\":{"
    "  \"r\":{\"deployments\":[{\"provider\":\"a\",\"model\":\"x\",\"price\":{\"input\":3,\"output\":3}},"
    "                         {\"provider\":\"b\",\"model\":\"x\",\"price\":{\"input\":1,\"output\":1}},"
    "                         {\"provider\":\"c\",\"model\":\"x\",\"price\":{\"input\":2,\"output\":2}}]},"
    "  \"lat\":{\"strategy\":\"latency\",\"deployments\":[{\"provider\":\"a\",\"model\":\"x\"},"
    "                         {\"provider\":\"b\",\"model\":\"x\"},{\"provider\":\"c\",\"model\":\"x\"}]},"
    "  \"bal\":{\"strategy\":\"balance\",\"deployments\":[{\"provider\":\"a\",\"model\":\"x\",\"weight\":9},"
    "                         {\"provider\":\"b\",\"model\":\"x\",\"weight\":1}]},"
    "  \"two\":{\"deployments\":[{\"provider\":\"a\",\"model\":\"x\"},{\"provider\":\"b\",\"model\":\"x\"}]},"
    "  \"fb\":{\"deployments\":[{\"provider\":\"c\",\"model\":\"fb\"}]}}}";

static void order_is(const struct plan *p, const char *providers)
{
    char got[64] = "";
    for (size_t i = 0; i < p->n; i++)
        strncat(got, p->entries[i].provider->name, sizeof(got) - strlen(got) - 1);
    CHECK_STR(got, providers);
}

static void test_routing(void)
{
    struct config *cfg;
    char err[512];
    CHECK_INT(config_parse(routing_json, strlen(routing_json), &cfg, err, sizeof(err)), 0);
    if (check_failed) {
        fprintf(stderr, "config: %s\n", err);
        return;
    }
    struct shm *shm = shm_create(1, SHM_ARENA_BYTES);
    struct health *h = health_create(cfg, NULL, shm->arena[0]);
    struct plan p;
    struct route_prefs rp;

    /* ordered by default; price by preference or suffix */
    CHECK_INT(router_plan(cfg, h, 0, "r", 1, NULL, &p, err, sizeof(err)), 0);
    order_is(&p, "abc");
    route_prefs_init(&rp);
    rp.sort = STRATEGY_PRICE;
    CHECK_INT(router_plan(cfg, h, 0, "r", 1, &rp, &p, err, sizeof(err)), 0);
    order_is(&p, "bca");
    CHECK_INT(router_plan(cfg, h, 0, "r:floor", 7, NULL, &p, err, sizeof(err)), 0);
    order_is(&p, "bca");

    /* latency: unmeasured first (in list order), then the lowest TTFT */
    size_t ha = cfg->models[1].deployments[0].health_id, hb = cfg->models[1].deployments[1].health_id;
    size_t hc = cfg->models[1].deployments[2].health_id;
    struct health_sample slow = {300, 400, 0, 0}, quick = {20, 40, 0, 0};
    health_begin(h, ha, 0);
    health_success(h, ha, 0, &slow);
    CHECK_INT(router_plan(cfg, h, 0, "lat", 3, NULL, &p, err, sizeof(err)), 0);
    order_is(&p, "bca");
    health_begin(h, hb, 0);
    health_success(h, hb, 0, &quick);
    health_begin(h, hc, 0);
    health_success(h, hc, 0, &slow);
    health_begin(h, hc, 0);
    health_success(h, hc, 0, &slow);
    CHECK_INT(router_plan(cfg, h, 0, "lat", 3, NULL, &p, err, sizeof(err)), 0);
    CHECK_STR(p.entries[0].provider->name, "b");

    /* balance: the heavy deployment first about 90% of the time */
    int first_a = 0;
    for (int i = 0; i < 1000; i++) {
        CHECK_INT(router_plan(cfg, h, 0, "bal", 3, NULL, &p, err, sizeof(err)), 0);
        first_a += strcmp(p.entries[0].provider->name, "a") == 0;
        CHECK_INT(p.n, 2);
    }
    CHECK(first_a > 800 && first_a < 980);

    /* preferences: only, ignore, order, allow_fallbacks, max_price, models */
    route_prefs_init(&rp);
    rp.only[rp.n_only++] = "c";
    rp.only[rp.n_only++] = "a";
    CHECK_INT(router_plan(cfg, h, 0, "r", 1, &rp, &p, err, sizeof(err)), 0);
    order_is(&p, "ac");
    route_prefs_init(&rp);
    rp.ignore[rp.n_ignore++] = "a";
    rp.order[rp.n_order++] = "c";
    CHECK_INT(router_plan(cfg, h, 0, "r", 1, &rp, &p, err, sizeof(err)), 0);
    order_is(&p, "cb");
    rp.allow_fallbacks = 0;
    CHECK_INT(router_plan(cfg, h, 0, "r", 1, &rp, &p, err, sizeof(err)), 0);
    order_is(&p, "c");
    route_prefs_init(&rp);
    rp.max_prompt = 2;
    rp.max_completion = 1.5;
    CHECK_INT(router_plan(cfg, h, 0, "r", 1, &rp, &p, err, sizeof(err)), 0);
    order_is(&p, "b");
    rp.max_prompt = 0.5;
    CHECK_INT(router_plan(cfg, h, 0, "r", 1, &rp, &p, err, sizeof(err)), ROUTER_EFILTERED);
    CHECK(strstr(err, "a (x): prompt price over provider.max_price") != NULL);
    route_prefs_init(&rp);
    rp.models[rp.n_models++] = "fb";
    rp.models[rp.n_models++] = "a/direct";
    CHECK_INT(router_plan(cfg, h, 0, "two", 3, &rp, &p, err, sizeof(err)), 0);
    order_is(&p, "abca");
    CHECK(entry_is(&p.entries[2], "c", "fb") && entry_is(&p.entries[3], "a", "direct"));
    CHECK(p.entries[3].borrowed && !p.entries[2].borrowed);
    rp.models[0] = "nope";
    CHECK_INT(router_plan(cfg, h, 0, "two", 3, &rp, &p, err, sizeof(err)), ROUTER_ENOTFOUND);
    CHECK(strstr(err, "models[0]") != NULL);

    /* health: an ejected deployment is dropped while at most half the plan is out and one
     * usable deployment stays; past its ejection it is usable again (the probe) */
    size_t rb = cfg->models[0].deployments[1].health_id; /* b/x: shared by every alias */
    health_begin(h, rb, 100);
    health_failure(h, rb, 100, 0, "boom");
    health_begin(h, rb, 100);
    health_failure(h, rb, 100, 0, "boom");
    CHECK(!health_usable(h, rb, 500));
    CHECK_INT(router_plan(cfg, h, 500, "r", 1, NULL, &p, err, sizeof(err)), 0);
    order_is(&p, "ac");
    CHECK_INT(p.dropped, 1);
    CHECK_INT(router_plan(cfg, h, 500, "two", 3, NULL, &p, err, sizeof(err)), 0);
    order_is(&p, "a"); /* 1 of 2 = 50%: may drop */
    route_prefs_init(&rp);
    rp.only[rp.n_only++] = "b";
    CHECK_INT(router_plan(cfg, h, 500, "r", 1, &rp, &p, err, sizeof(err)), 0);
    order_is(&p, "b"); /* never leaves a plan empty */
    CHECK(health_usable(h, rb, 1100));
    health_begin(h, rb, 1100); /* the probe */
    CHECK(!health_usable(h, rb, 1100));
    health_failure(h, rb, 1100, 0, "still down");
    CHECK_INT(h->deps[rb]->ejected_until, 1100 + 2000); /* doubled */
    CHECK(health_usable(h, rb, 3100));
    health_begin(h, rb, 3100);
    struct health_sample fine = {10, 20, 0, 0};
    health_success(h, rb, 3100, &fine);
    CHECK_INT(h->deps[rb]->ejected_until, 0);
    CHECK_INT(h->deps[rb]->ejections, 0);

    /* p95 of recent TTFTs (hedge_after_ms "auto"): none below 5 samples */
    size_t hp = cfg->models[4].deployments[0].health_id;
    CHECK_INT(health_p95_ttft(h, hp), 0);
    for (uint64_t i = 1; i <= 100; i++) {
        struct health_sample t = {i * 10, i * 10, 0, 0};
        health_begin(h, hp, 0);
        health_success(h, hp, 0, &t);
    }
    CHECK_INT(health_p95_ttft(h, hp), 970); /* the last 64 samples: 370..1000 */

    /* error rate: failures never consecutive past the threshold, but half of a full window */
    size_t hr = cfg->models[0].deployments[2].health_id; /* c/x */
    for (int i = 0; i < 19; i++) {
        health_begin(h, hr, 4000);
        if (i % 2)
            health_failure(h, hr, 4000, 0, "flaky");
        else
            health_success(h, hr, 4000, &fine);
        CHECK(health_usable(h, hr, 4000));
    }
    health_begin(h, hr, 4000);
    health_failure(h, hr, 4000, 0, "flaky"); /* the 20th outcome: 10 of 20 failed */
    CHECK(!health_usable(h, hr, 4000));
    CHECK_INT(h->deps[hr]->ejections, 1);

    /* Retry-After: unusable until then, without an ejection */
    health_begin(h, ha, 5000);
    health_failure(h, ha, 5000, 2000, "429");
    CHECK(!health_usable(h, ha, 6999));
    CHECK(health_usable(h, ha, 7000));
    CHECK_INT(h->deps[ha]->ejections, 0);

    /* retry budget: min 10/s, then 20% of the requests of the last 10 s */
    for (int i = 0; i < 100; i++)
        health_note_request(h, 20000);
    int allowed = 0;
    for (int i = 0; i < 200; i++)
        allowed += health_retry_allowed(h, 20000);
    CHECK_INT(allowed, 100);
    CHECK_INT(health_retry_allowed(h, 31000), 1); /* the window moved on */
    health_free(h);
    shm_destroy(shm);
    config_unref(cfg);
}

int main(void)
{
    test_routing();
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
