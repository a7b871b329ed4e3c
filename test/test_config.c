/* Config parsing: a full config round-trips into the struct, defaults, the exact error
 * messages users see, unknown keys at every depth, keys from the environment (and never in an
 * error), base_url and listen parsing, per-model timeouts, refcounting, file loading, and the
 * shipped conf/llmux.json.
 *
 * Usage: test_config [path/to/llmux.json]; without it the shipped file is found next to this
 * source file (../conf/llmux.json relative to __FILE__). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "llmux/config.h"
#include "llmux/errors.h"

/* A provider every config below can use. */
#define PROV "\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h/v1\"}}"

static char err[512];

static struct config *parse(const char *json)
{
    struct config *c = NULL;
    int rc = config_parse(json, strlen(json), &c, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "unexpected config error: %s\n  in %s\n", err, json);
        return NULL;
    }
    return c;
}

/* Parse a config that must fail; returns the message. */
static const char *parse_err(const char *json)
{
    struct config *c = (struct config *)1;
    int rc = config_parse(json, strlen(json), &c, err, sizeof(err));
    CHECK_INT(rc, LLMUX_ECONFIG);
    CHECK(c == NULL);
    if (rc == 0 && c)
        config_unref(c);
    return err;
}

static void test_full(void)
{
    setenv("LLMUX_TEST_KEY_A", "sk-test-value-a", 1);
    const char *json =
        "{\"listen\":\"[::1]:9090\","
        " \"timeouts_ms\":{\"connect\":1,\"first_byte\":2,\"idle\":3,\"total\":4},"
        " \"limits\":{\"max_body_bytes\":5,\"max_header_bytes\":6,\"max_url_bytes\":7,"
        "            \"header_timeout_ms\":8,\"body_timeout_ms\":9,\"keepalive_timeout_ms\":10},"
        " \"pool\":{\"max_idle_per_origin\":11,\"idle_timeout_ms\":12},"
        " \"access_log\":\"/var/log/llmux.log\","
        " \"providers\":{"
        "  \"a\":{\"kind\":\"openai\",\"base_url\":\"https://api.example.com/v1/\","
        "        \"api_key_env\":\"LLMUX_TEST_KEY_A\",\"ca_file\":\"/etc/ca.pem\"},"
        "  \"b\":{\"kind\":\"openai\",\"base_url\":\"http://[fe80::1]:8000\"}},"
        " \"models\":{"
        "  \"m1\":{\"deployments\":[{\"provider\":\"b\",\"model\":\"x/y\"},"
        "                          {\"provider\":\"a\",\"model\":\"z\"}],"
        "         \"timeouts_ms\":{\"idle\":30,\"total\":40}},"
        "  \"llama-3.3\":{\"deployments\":[{\"provider\":\"a\",\"model\":\"q\"}]}},"
        " \"keys\":[\"k1\",\"k2\"]}";
    strcpy(err, "garbage");
    struct config *c = parse(json);
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_STR(err, "");
    CHECK_INT(c->refs, 1);
    CHECK_STR(c->listen_host, "::1");
    CHECK_INT(c->listen_port, 9090);
    CHECK_INT(c->timeouts.connect_ms, 1);
    CHECK_INT(c->timeouts.first_byte_ms, 2);
    CHECK_INT(c->timeouts.idle_ms, 3);
    CHECK_INT(c->timeouts.total_ms, 4);
    CHECK_INT(c->max_body_bytes, 5);
    CHECK_INT(c->max_header_bytes, 6);
    CHECK_INT(c->max_url_bytes, 7);
    CHECK_INT(c->header_timeout_ms, 8);
    CHECK_INT(c->body_timeout_ms, 9);
    CHECK_INT(c->keepalive_timeout_ms, 10);
    CHECK_INT(c->pool_max_idle, 11);
    CHECK_INT(c->pool_idle_timeout_ms, 12);
    CHECK_STR(c->access_log, "/var/log/llmux.log");

    CHECK_INT(c->n_providers, 2);
    const struct provider *a = &c->providers[0], *b = &c->providers[1];
    CHECK_STR(a->name, "a");
    CHECK_INT(a->kind, PROVIDER_OPENAI);
    CHECK_STR(a->base_url, "https://api.example.com/v1/");
    CHECK_INT(a->tls, 1);
    CHECK_STR(a->host, "api.example.com");
    CHECK_INT(a->port, 443);
    CHECK_STR(a->base_path, "/v1");
    CHECK_STR(a->api_key_env, "LLMUX_TEST_KEY_A");
    CHECK_STR(a->api_key, "sk-test-value-a");
    CHECK_STR(a->ca_file, "/etc/ca.pem");
    CHECK_INT(a->enabled, 1);
    CHECK(a->disabled_reason == NULL);
    CHECK_STR(b->name, "b");
    CHECK_INT(b->tls, 0);
    CHECK_STR(b->host, "fe80::1");
    CHECK_INT(b->port, 8000);
    CHECK_STR(b->base_path, "");
    CHECK(b->api_key_env == NULL && b->api_key == NULL && b->ca_file == NULL);
    CHECK_INT(b->enabled, 1);

    CHECK_INT(c->n_models, 2);
    const struct model *m = &c->models[0];
    CHECK_STR(m->name, "m1");
    CHECK_INT(m->n_deployments, 2);
    CHECK(m->deployments[0].provider == b);
    CHECK_STR(m->deployments[0].model, "x/y");
    CHECK(m->deployments[1].provider == a);
    CHECK_STR(m->deployments[1].model, "z");
    /* Per-model timeouts: the global ones with this model's overrides. */
    CHECK_INT(m->timeouts.connect_ms, 1);
    CHECK_INT(m->timeouts.first_byte_ms, 2);
    CHECK_INT(m->timeouts.idle_ms, 30);
    CHECK_INT(m->timeouts.total_ms, 40);
    CHECK_STR(c->models[1].name, "llama-3.3");
    CHECK_INT(c->models[1].timeouts.idle_ms, 3);

    CHECK_INT(c->n_keys, 2);
    CHECK_STR(c->keys[0].name, "keys[0]"); /* a plain key is named by its place, never itself */
    CHECK_STR(c->keys[1].name, "keys[1]");
    CHECK(c->keys[0].enabled && c->keys[0].rpm == 0 && c->keys[0].budget_usd < 0);

    /* Lookups: exact match on (name, len), never a prefix. */
    CHECK(config_find_model(c, "m1", 2) == m);
    CHECK(config_find_model(c, "m1x", 2) == m);
    CHECK(config_find_model(c, "m", 1) == NULL);
    CHECK(config_find_model(c, "m12", 3) == NULL);
    CHECK(config_find_model(c, "llama-3.3", 9) == &c->models[1]);
    CHECK(config_find_provider(c, "b/model", 1) == b);
    CHECK(config_find_provider(c, "ab", 2) == NULL);
    CHECK(config_find_provider(c, "", 0) == NULL);
    CHECK_STR(provider_kind_name(PROVIDER_OPENAI), "openai");

    /* Refcount: the last unref frees (ASan/valgrind report a leak or double free otherwise). */
    CHECK(config_ref(c) == c);
    CHECK_INT(c->refs, 2);
    config_unref(c);
    CHECK_INT(c->refs, 1);
    config_unref(c);
    config_unref(NULL);
    unsetenv("LLMUX_TEST_KEY_A");
}

static void test_defaults(void)
{
    struct config *c = parse("{" PROV "}");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_STR(c->listen_host, "127.0.0.1");
    CHECK_INT(c->listen_port, 8080);
    CHECK_INT(c->timeouts.connect_ms, 2000);
    CHECK_INT(c->timeouts.first_byte_ms, 30000);
    CHECK_INT(c->timeouts.idle_ms, 30000);
    CHECK_INT(c->timeouts.total_ms, 600000);
    CHECK_INT(c->max_body_bytes, 4194304);
    CHECK_INT(c->max_header_bytes, 16384);
    CHECK_INT(c->max_url_bytes, 8192);
    CHECK_INT(c->header_timeout_ms, 60000);
    CHECK_INT(c->body_timeout_ms, 60000);
    CHECK_INT(c->keepalive_timeout_ms, 75000);
    CHECK_INT(c->pool_max_idle, 32);
    CHECK_INT(c->pool_idle_timeout_ms, 60000);
    CHECK(c->access_log == NULL);
    CHECK_INT(c->n_models, 0);
    CHECK_INT(c->n_keys, 0);
    CHECK(config_find_model(c, "x", 1) == NULL);
    config_unref(c);

    /* Partial sections keep the other defaults; empty sections are fine; pool may hold none. */
    c = parse("{\"timeouts_ms\":{\"total\":5},\"limits\":{},\"pool\":{\"max_idle_per_origin\":0},"
              "\"models\":{},\"keys\":[]," PROV "}");
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_INT(c->timeouts.total_ms, 5);
    CHECK_INT(c->timeouts.connect_ms, 2000);
    CHECK_INT(c->pool_max_idle, 0);
    CHECK_INT(c->pool_idle_timeout_ms, 60000);
    config_unref(c);
}

static void test_errors(void)
{
    /* The messages quoted in the documentation, exactly. */
    CHECK_STR(parse_err("{\"providers\":{\"openai\":{\"kind\":\"foo\",\"base_url\":\"http://h\"}}}"),
              "$.providers.openai.kind: unknown kind \"foo\" (expected one of: openai, azure, anthropic, gemini)");
    CHECK_STR(parse_err("{" PROV ",\"models\":{\"demo\":{\"deployments\":["
                        "{\"provider\":\"p\",\"model\":\"a\"},{\"provider\":\"nope\",\"model\":\"b\"}]}}}"),
              "$.models.demo.deployments[1].provider: unknown provider \"nope\"");
    CHECK_STR(parse_err("{\"timeouts_ms\":{\"connect\":0}," PROV "}"),
              "$.timeouts_ms.connect: must be a positive integer");
    CHECK_STR(parse_err("{\"listen\":\"8080\"," PROV "}"), "$.listen: expected \"host:port\"");
    CHECK_STR(parse_err("{\"providers\":{\"x\":{\"kind\":\"openai\",\"base_url\":\"ftp://h\"}}}"),
              "$.providers.x.base_url: must start with http:// or https://");
    CHECK_STR(parse_err("{\"fooo\":1," PROV "}"), "$.fooo: unknown key");
    /* The stray ',' is column 17; cJSON's error pointer is one past it, hence "near". */
    CHECK_STR(parse_err("{\n  \"listen\": \"a:1\",\n  \"providers\": {,\n}"),
              "$: invalid JSON near line 3 column 18");
    CHECK_STR(parse_err("{\"providers\":{}}"), "$.providers: at least one provider is required");
    CHECK_STR(parse_err("{}"), "$.providers: at least one provider is required");
    CHECK_STR(parse_err("{" PROV ",\"models\":{\"demo\":{\"deployments\":[]}}}"),
              "$.models.demo.deployments: must be a non-empty array");
    CHECK_STR(parse_err("{" PROV ",\"models\":{\"demo\":{}}}"),
              "$.models.demo.deployments: must be a non-empty array");
    CHECK_STR(parse_err("{" PROV ",\"keys\":[\"\"]}"), "$.keys[0]: must be a non-empty string or an object");
    CHECK_STR(parse_err("{" PROV ",\"keys\":[\"ok\",7]}"), "$.keys[1]: must be a non-empty string or an object");

    /* "responses": how POST /v1/responses reaches an openai- or azure-kind provider. */
    CHECK_STR(parse_err("{\"providers\":{\"x\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
                        "\"responses\":\"passthrough\"}}}"),
              "$.providers.x.responses: must be \"native\" (the provider serves POST /responses "
              "itself) or \"translate\"");
    static const char *const translated_only[] = {"anthropic", "gemini"};
    for (size_t i = 0; i < 2; i++) {
        char text[160];
        snprintf(text, sizeof(text), "{\"providers\":{\"x\":{\"kind\":\"%s\",\"base_url\":"
                 "\"http://h\",\"responses\":\"native\"}}}", translated_only[i]);
        CHECK_STR(parse_err(text), "$.providers.x.responses: \"native\" is for openai- and "
                                   "azure-kind providers (the Responses API is OpenAI's); other "
                                   "kinds are always translated");
    }
    CHECK_STR(parse_err("{\"providers\":{\"x\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
                        "\"responses\":true}}}"),
              "$.providers.x.responses: must be a non-empty string");
    struct config *nc = parse("{\"providers\":{\"n\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
              "\"responses\":\"native\"},\"t\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
              "\"responses\":\"translate\"},\"d\":{\"kind\":\"openai\",\"base_url\":\"http://h\"},"
              "\"az\":{\"kind\":\"azure\",\"base_url\":\"http://h\",\"responses\":\"native\"}}}");
    CHECK(nc && nc->n_providers == 4);
    for (size_t i = 0; nc && i < nc->n_providers; i++)
        CHECK_INT(nc->providers[i].responses_native, strcmp(nc->providers[i].name, "n") == 0 ||
                                                         strcmp(nc->providers[i].name, "az") == 0);
    if (nc)
        config_unref(nc);

    /* Names that are not plain identifiers are written ["..."]. */
    CHECK_STR(parse_err("{" PROV ",\"models\":{\"llama-3.3\":{\"deployments\":["
                        "{\"provider\":\"x\",\"model\":\"b\"}]}}}"),
              "$.models[\"llama-3.3\"].deployments[0].provider: unknown provider \"x\"");
    CHECK_STR(parse_err("{\"providers\":{\"a/b\":{\"kind\":\"openai\",\"base_url\":\"http://h\"}}}"),
              "$.providers[\"a/b\"]: provider name must not contain '/'");

    /* JSON syntax: position, trailing garbage, NUL bytes, empty text, wrong root type. */
    CHECK_CONTAINS(parse_err(""), "$: invalid JSON near line 1 column 1");
    CHECK_CONTAINS(parse_err("{" PROV "} x"), "$: invalid JSON near line 1");
    CHECK_CONTAINS(parse_err("{\"a\":1,}"), "$: invalid JSON near line 1 column");
    struct config *c = NULL;
    static const char with_nul[] = "{\"listen\":\"a:1\"}\n\0{}";
    CHECK_INT(config_parse(with_nul, sizeof(with_nul) - 1, &c, err, sizeof(err)), LLMUX_ECONFIG);
    CHECK_STR(err, "$: invalid JSON near line 2 column 1");
    CHECK_STR(parse_err("[]"), "$: must be an object");

    /* Types and ranges. */
    CHECK_STR(parse_err("{\"timeouts_ms\":{\"total\":-1}," PROV "}"),
              "$.timeouts_ms.total: must be a positive integer");
    CHECK_STR(parse_err("{\"timeouts_ms\":{\"idle\":1.5}," PROV "}"),
              "$.timeouts_ms.idle: must be a positive integer");
    CHECK_STR(parse_err("{\"timeouts_ms\":{\"idle\":\"5\"}," PROV "}"),
              "$.timeouts_ms.idle: must be a positive integer");
    CHECK_STR(parse_err("{\"limits\":{\"max_body_bytes\":1e10}," PROV "}"),
              "$.limits.max_body_bytes: must be at most 4294967295");
    CHECK_STR(parse_err("{\"pool\":{\"max_idle_per_origin\":-1}," PROV "}"),
              "$.pool.max_idle_per_origin: must be a non-negative integer");
    CHECK_STR(parse_err("{\"timeouts_ms\":5," PROV "}"), "$.timeouts_ms: must be an object");
    CHECK_STR(parse_err("{\"providers\":[]}"), "$.providers: must be an object");
    CHECK_STR(parse_err("{\"providers\":{\"p\":1}}"), "$.providers.p: must be an object");
    CHECK_STR(parse_err("{\"listen\":80," PROV "}"), "$.listen: must be a non-empty string");
    CHECK_STR(parse_err("{\"access_log\":\"\"," PROV "}"),
              "$.access_log: must be a non-empty string");
    CHECK_STR(parse_err("{" PROV ",\"keys\":\"k\"}"), "$.keys: must be an array of keys (strings or objects)");
    CHECK_STR(parse_err("{\"providers\":{\"p\":{\"base_url\":\"http://h\"}}}"),
              "$.providers.p.kind: is required");
    CHECK_STR(parse_err("{\"providers\":{\"p\":{\"kind\":\"openai\"}}}"),
              "$.providers.p.base_url: is required");
    CHECK_STR(parse_err("{" PROV ",\"models\":{\"m\":{\"deployments\":[{\"provider\":\"p\"}]}}}"),
              "$.models.m.deployments[0].model: is required");
    CHECK_STR(parse_err("{" PROV ",\"models\":{\"m\":{\"deployments\":[\"p\"]}}}"),
              "$.models.m.deployments[0]: must be an object");
    CHECK_STR(parse_err("{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
                        "\"ca_file\":true}}}"),
              "$.providers.p.ca_file: must be a non-empty string");

    /* Names: empty and duplicated. */
    CHECK_STR(parse_err("{\"providers\":{\"\":{\"kind\":\"openai\",\"base_url\":\"http://h\"}}}"),
              "$.providers[\"\"]: name must not be empty");
    CHECK_STR(parse_err("{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h\"},"
                        "\"p\":{\"kind\":\"openai\",\"base_url\":\"http://i\"}}}"),
              "$.providers.p: duplicate name");
    CHECK_STR(parse_err("{\"listen\":\"a:1\",\"listen\":\"a:2\"," PROV "}"),
              "$.listen: duplicate key");

    /* Truncation: a tiny buffer still gets a NUL-terminated prefix. */
    char small[8];
    CHECK_INT(config_parse("{}", 2, &c, small, sizeof(small)), LLMUX_ECONFIG);
    CHECK_STR(small, "$.provi");
}

/* "keys" objects: name, exactly one key source, models, limits, budget. */
static void test_key_objects(void)
{
    static const char sha_of_abc[] = /* SHA-256("abc") */
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    char json[1024];
    snprintf(json, sizeof(json),
             "{" PROV ",\"keys\":[{\"name\":\"team-a\",\"key\":\"k1\",\"models\":[\"m\"],"
             "\"rpm\":10,\"tpm\":1000,\"budget_usd\":2.5,\"budget_period\":\"day\"},"
             "{\"name\":\"hashed\",\"key_sha256\":\"%s\"},"
             "{\"name\":\"env\",\"key_env\":\"LLMUX_TEST_UNSET_KEY_VAR\"}]}",
             sha_of_abc);
    struct config *c;
    char why[512];
    int rc = config_parse(json, strlen(json), &c, why, sizeof(why));
    CHECK_INT(rc, 0);
    if (rc != 0)
        return;
    CHECK_STR(c->keys[0].name, "team-a");
    CHECK_INT(c->keys[0].rpm, 10);
    CHECK_INT(c->keys[0].tpm, 1000);
    CHECK(c->keys[0].budget_usd == 2.5);
    CHECK_INT(c->keys[0].budget_period, BUDGET_DAY);
    CHECK_INT(c->keys[0].n_models, 1);
    CHECK_STR(c->keys[0].models[0], "m");
    CHECK_INT(c->keys[1].sha256[0], 0xba);
    CHECK_INT(c->keys[1].sha256[31], 0xad);
    CHECK(!c->keys[2].enabled); /* its variable is unset: it matches nothing */
    config_unref(c);
    CHECK_STR(parse_err("{" PROV ",\"keys\":[{\"name\":\"a\"}]}"),
              "$.keys[0]: needs exactly one of \"key\", \"key_sha256\" and \"key_env\"");
    CHECK_STR(parse_err("{" PROV ",\"keys\":[{\"key\":\"x\",\"key_sha256\":\"ab\"}]}"),
              "$.keys[0]: needs exactly one of \"key\", \"key_sha256\" and \"key_env\"");
    CHECK_STR(parse_err("{" PROV ",\"keys\":[{\"key_sha256\":\"ab\"}]}"),
              "$.keys[0].key_sha256: must be 64 hex digits (the SHA-256 of the key)");
    CHECK_STR(parse_err("{" PROV ",\"keys\":[{\"key\":\"x\",\"budget_period\":\"week\"}]}"),
              "$.keys[0].budget_period: unknown value \"week\" (expected one of: total, day, month)");
    CHECK_STR(parse_err("{" PROV ",\"keys\":[{\"name\":\"a\",\"key\":\"x\"},{\"name\":\"a\",\"key\":\"y\"}]}"),
              "$.keys[1]: the name \"a\" is used twice");
    CHECK_STR(parse_err("{" PROV ",\"keys\":[{\"key\":\"x\",\"rpm\":0}]}"),
              "$.keys[0].rpm: must be a positive integer");
    CHECK_STR(parse_err("{" PROV ",\"keys\":[7]}"), "$.keys[0]: must be a non-empty string or an object");
}

/* "state": the Redis URL's parts, defaults, and errors that never quote a password. */
static void test_state(void)
{
    struct config *c = parse("{" PROV ",\"state\":{\"redis\":\"redis://u:s3cret@[::1]:6380/2\","
                             "\"prefix\":\"app:\",\"on_error\":\"closed\",\"timeout_ms\":100}}");
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(c->state.redis_host, "::1");
        CHECK_INT(c->state.redis_port, 6380);
        CHECK_INT(c->state.redis_db, 2);
        CHECK_STR(c->state.redis_user, "u");
        CHECK_STR(c->state.redis_password, "s3cret");
        CHECK_STR(c->state.prefix, "app:");
        CHECK_INT(c->state.fail_closed, 1);
        CHECK_INT(c->state.timeout_ms, 100);
        config_unref(c);
    }
    c = parse("{" PROV ",\"state\":{\"redis\":\"redis://cache\"}}");
    CHECK(c != NULL);
    if (c) {
        CHECK_STR(c->state.redis_host, "cache");
        CHECK_INT(c->state.redis_port, 6379);
        CHECK_INT(c->state.redis_db, 0);
        CHECK(c->state.redis_user == NULL && c->state.redis_password == NULL);
        CHECK_STR(c->state.prefix, "llmux:");
        CHECK_INT(c->state.fail_closed, 0);
        CHECK_INT(c->state.timeout_ms, 250);
        config_unref(c);
    }
    c = parse("{" PROV "}");
    CHECK(c && c->state.redis_host == NULL);
    config_unref(c);
    CHECK_STR(parse_err("{" PROV ",\"state\":{\"redis\":\"http://h\"}}"),
              "$.state.redis: must start with redis:// (redis://[[USER]:PASSWORD@]HOST[:PORT][/DB])");
    const char *e = parse_err("{" PROV ",\"state\":{\"redis\":\"redis://:pw-secret@h/x\"}}");
    CHECK_STR(e, "$.state.redis: the database after the '/' must be a number");
    CHECK(strstr(e, "pw-secret") == NULL);
    CHECK_STR(parse_err("{" PROV ",\"state\":{\"redis\":\"redis://h\",\"on_error\":\"maybe\"}}"),
              "$.state.on_error: unknown value \"maybe\" (expected one of: open, closed)");
    CHECK_STR(parse_err("{" PROV ",\"state\":{\"redis\":\"redis://h\",\"timeout_ms\":0}}"),
              "$.state.timeout_ms: must be a whole number of milliseconds from 1 to 60000");
    CHECK_STR(parse_err("{" PROV ",\"state\":{\"redis\":\"redis://h\",\"password_env\":"
                        "\"LLMUX_TEST_UNSET_PW\"}}"),
              "$.state.password_env: the variable LLMUX_TEST_UNSET_PW is not set");
    CHECK_STR(parse_err("{" PROV ",\"state\":{\"prefix\":\"a\"}}"), "$.state.redis: is required");
}

static void test_unknown_keys(void)
{
    CHECK_STR(parse_err("{\"timeouts_ms\":{\"conect\":1}," PROV "}"),
              "$.timeouts_ms.conect: unknown key");
    CHECK_STR(parse_err("{\"limits\":{\"max_body\":1}," PROV "}"), "$.limits.max_body: unknown key");
    CHECK_STR(parse_err("{\"pool\":{\"max_idle\":1}," PROV "}"), "$.pool.max_idle: unknown key");
    CHECK_STR(parse_err("{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"http://h\","
                        "\"api_key\":\"sk-inline\"}}}"),
              "$.providers.p.api_key: unknown key");
    CHECK_STR(parse_err("{" PROV ",\"models\":{\"m\":{\"deployment\":[]}}}"),
              "$.models.m.deployment: unknown key");
    CHECK_STR(parse_err("{" PROV ",\"models\":{\"m\":{\"deployments\":["
                        "{\"provider\":\"p\",\"model\":\"x\",\"wieght\":2}]}}}"),
              "$.models.m.deployments[0].wieght: unknown key");
    CHECK_STR(parse_err("{" PROV ",\"models\":{\"m\":{\"deployments\":["
                        "{\"provider\":\"p\",\"model\":\"x\"}],\"timeouts_ms\":{\"ttfb\":1}}}}"),
              "$.models.m.timeouts_ms.ttfb: unknown key");
    CHECK_STR(parse_err("{\"Listen\":\"a:1\"," PROV "}"), "$.Listen: unknown key");
    CHECK_STR(parse_err("{\"we ird\\\"\":1," PROV "}"), "$[\"we ird\\\"\"]: unknown key");
}

/* Issue 3's fields: strategy, hedging, continuation, prices, windows, health. */
static void test_routing_fields(void)
{
    const char *json =
        "{" PROV ",\"health\":{\"failure_threshold\":3,\"retry_budget_percent\":10},"
        "\"models\":{\"m\":{\"strategy\":\"price\",\"hedge_after_ms\":250,"
        "\"on_stream_failure\":\"continue\",\"max_attempts\":4,\"deployments\":["
        "{\"provider\":\"p\",\"model\":\"x\",\"price\":{\"input\":0.5,\"output\":1.5},"
        "\"context_window\":8192,\"weight\":3},{\"provider\":\"p\",\"model\":\"y\"}]},"
        "\"n\":{\"hedge_after_ms\":\"auto\",\"deployments\":[{\"provider\":\"p\",\"model\":\"x\"}]}}}";
    struct config *c = NULL;
    char msg[256];
    CHECK_INT(config_parse(json, strlen(json), &c, msg, sizeof(msg)), 0);
    if (!c)
        return;
    const struct model *m = config_find_model(c, "m", 1);
    CHECK_INT(m->strategy, STRATEGY_PRICE);
    CHECK_INT(m->hedge_after_ms, 250);
    CHECK_INT(m->continue_on_failure, 1);
    CHECK_INT(m->max_attempts, 4);
    CHECK(m->deployments[0].price_in == 0.5 && m->deployments[0].price_out == 1.5);
    CHECK(m->deployments[1].price_in < 0);
    CHECK_INT(m->deployments[0].context_window, 8192);
    CHECK_INT(m->deployments[0].weight, 3);
    CHECK_INT(m->deployments[1].weight, 1);
    const struct model *n = config_find_model(c, "n", 1);
    CHECK_INT(n->hedge_after_ms, HEDGE_AUTO);
    CHECK_INT(n->strategy, STRATEGY_ORDERED);
    /* p/x appears twice: one health record */
    CHECK_INT(c->n_health, 2);
    CHECK_INT(n->deployments[0].health_id, m->deployments[0].health_id);
    CHECK_INT(c->health.failure_threshold, 3);
    CHECK_INT(c->health.retry_budget_percent, 10);
    CHECK_INT(c->health.window, 20);
    config_unref(c);

    CHECK_STR(parse_err("{" PROV ",\"models\":{\"m\":{\"strategy\":\"cheap\",\"deployments\":["
                        "{\"provider\":\"p\",\"model\":\"x\"}]}}}"),
              "$.models.m.strategy: unknown value \"cheap\" (expected one of: ordered, price, "
              "latency, throughput, balance)");
    CHECK_STR(parse_err("{" PROV ",\"models\":{\"m\":{\"hedge_after_ms\":\"soon\",\"deployments\":["
                        "{\"provider\":\"p\",\"model\":\"x\"}]}}}"),
              "$.models.m.hedge_after_ms: must be a positive integer (ms) or \"auto\"");
    CHECK_STR(parse_err("{" PROV ",\"models\":{\"m\":{\"on_stream_failure\":\"retry\",\"deployments\":["
                        "{\"provider\":\"p\",\"model\":\"x\"}]}}}"),
              "$.models.m.on_stream_failure: unknown value \"retry\" (expected one of: error, "
              "continue)");
    CHECK_STR(parse_err("{" PROV ",\"models\":{\"m\":{\"deployments\":["
                        "{\"provider\":\"p\",\"model\":\"x\",\"price\":{\"input\":-1,\"output\":1}}]}}}"),
              "$.models.m.deployments[0].price.input: must be a non-negative number ($ per "
              "million tokens)");
    CHECK_STR(parse_err("{" PROV ",\"models\":{\"m\":{\"deployments\":["
                        "{\"provider\":\"p\",\"model\":\"x\",\"price\":{\"input\":1}}]}}}"),
              "$.models.m.deployments[0].price: needs \"input\" and \"output\" ($ per million "
              "tokens)");
    CHECK_STR(parse_err("{" PROV ",\"health\":{\"threshold\":1}}"), "$.health.threshold: unknown key");
    CHECK_STR(parse_err("{" PROV ",\"health\":{\"window\":0}}"),
              "$.health.window: must be a positive integer");
}

static void test_env_keys(void)
{
    const char *json = "{\"providers\":{\"k\":{\"kind\":\"openai\",\"base_url\":\"https://h/v1\","
                       "\"api_key_env\":\"LLMUX_TEST_SECRET\"}}}";
    unsetenv("LLMUX_TEST_SECRET");
    struct config *c = parse(json);
    CHECK(c && c->providers[0].enabled == 0 && c->providers[0].api_key == NULL);
    if (c) {
        CHECK_STR(c->providers[0].disabled_reason, "LLMUX_TEST_SECRET is not set");
        config_unref(c);
    }
    setenv("LLMUX_TEST_SECRET", "", 1);
    c = parse(json);
    CHECK(c && c->providers[0].enabled == 0);
    if (c) {
        CHECK_STR(c->providers[0].disabled_reason, "LLMUX_TEST_SECRET is not set");
        config_unref(c);
    }
    const char *secret = "sk-SECRET-7f3a9c";
    setenv("LLMUX_TEST_SECRET", secret, 1);
    c = parse(json);
    CHECK(c && c->providers[0].enabled == 1 && c->providers[0].disabled_reason == NULL);
    if (c) {
        CHECK_STR(c->providers[0].api_key, secret);
        CHECK_STR(c->providers[0].api_key_env, "LLMUX_TEST_SECRET");
        config_unref(c);
    }

    CHECK_STR(parse_err("{\"providers\":{\"k\":{\"kind\":\"openai\",\"base_url\":\"https://h\","
                        "\"api_key_env\":\"1BAD-NAME\"}}}"),
              "$.providers.k.api_key_env: must be an environment variable name "
              "([A-Za-z_][A-Za-z0-9_]*)");

    /* With the key in the environment, no failing config ever shows it. */
#define KP "\"k\":{\"kind\":\"openai\",\"base_url\":\"https://h/v1\",\"api_key_env\":\"LLMUX_TEST_SECRET\"}"
    static const char *const failing[] = {
        "{\"providers\":{" KP ",\"x\":{\"kind\":\"nope\",\"base_url\":\"http://h\"}}}",
        "{\"providers\":{" KP "},\"models\":{\"m\":{\"deployments\":[{\"provider\":\"z\",\"model\":\"a\"}]}}}",
        "{\"providers\":{" KP "},\"models\":{\"m\":{\"deployments\":[{\"provider\":\"k\"}]}}}",
        "{\"providers\":{" KP "},\"keys\":[\"\"]}",
        "{\"providers\":{" KP "},\"bogus\":true}",
        "{\"providers\":{" KP ",\"k2\":{\"kind\":\"openai\",\"base_url\":\"https://h?q\"}}}",
        "{\"providers\":{" KP ",\"k2\":{\"kind\":\"openai\",\"base_url\":\"https://u:p@h\"}}}",
        "{\"providers\":{" KP ",\"k\":{}}}",
        "{\"providers\":{" KP "},\"timeouts_ms\":{\"total\":0}}",
        "{\"providers\":{" KP "}",
    };
#undef KP
    for (size_t i = 0; i < sizeof(failing) / sizeof(failing[0]); i++) {
        const char *e = parse_err(failing[i]);
        CHECK(e[0] != '\0');
        CHECK(strstr(e, secret) == NULL);
    }
    unsetenv("LLMUX_TEST_SECRET");
}

/* Parse one provider with this base_url; returns the config (caller unrefs) or NULL. */
static struct config *with_url(const char *url)
{
    char json[512];
    snprintf(json, sizeof(json),
             "{\"providers\":{\"p\":{\"kind\":\"openai\",\"base_url\":\"%s\"}}}", url);
    struct config *c = NULL;
    config_parse(json, strlen(json), &c, err, sizeof(err));
    return c;
}

static void check_url(const char *url, int tls, const char *host, int port, const char *path)
{
    struct config *c = with_url(url);
    CHECK(c != NULL);
    if (!c) {
        fprintf(stderr, "  %s: %s\n", url, err);
        return;
    }
    const struct provider *p = &c->providers[0];
    CHECK_STR(p->base_url, url);
    CHECK_INT(p->tls, tls);
    CHECK_STR(p->host, host);
    CHECK_INT(p->port, port);
    CHECK_STR(p->base_path, path);
    config_unref(c);
}

static void check_bad_url(const char *url, const char *problem)
{
    struct config *c = with_url(url);
    CHECK(c == NULL);
    if (c)
        config_unref(c);
    CHECK_CONTAINS(err, "$.providers.p.base_url: ");
    CHECK_CONTAINS(err, problem);
    CHECK(strstr(err, "secret") == NULL); /* the URL itself is never quoted */
}

static void test_base_url(void)
{
    check_url("https://api.openai.com/v1", 1, "api.openai.com", 443, "/v1");
    check_url("http://localhost/v1", 0, "localhost", 80, "/v1");
    check_url("http://127.0.0.1:9101/v1/", 0, "127.0.0.1", 9101, "/v1");
    check_url("https://h:8443/openai/v1//", 1, "h", 8443, "/openai/v1");
    check_url("https://h", 1, "h", 443, "");
    check_url("https://h/", 1, "h", 443, "");
    check_url("http://[::1]:8000/v1", 0, "::1", 8000, "/v1");
    check_url("https://[2001:db8::1]/api", 1, "2001:db8::1", 443, "/api");
    check_url("HTTPS://Example.COM/v1", 1, "Example.COM", 443, "/v1");

    check_bad_url("api.openai.com/v1", "must start with http:// or https://");
    check_bad_url("https://user:secret@h/v1", "must not contain user info");
    check_bad_url("https://h/v1?key=secret", "must not have a query or fragment");
    check_bad_url("https://h/v1#frag", "must not have a query or fragment");
    check_bad_url("https:///v1", "missing host");
    check_bad_url("https://", "missing host");
    check_bad_url("https://h:0/v1", "invalid port");
    check_bad_url("https://h:65536/v1", "invalid port");
    check_bad_url("https://h:/v1", "invalid port");
    check_bad_url("https://h:8x/v1", "invalid port");
    check_bad_url("http://[::1/v1", "unterminated IPv6 address");
    check_bad_url("http://[]/v1", "invalid IPv6 address");
    check_bad_url("http://[::1]x/v1", "invalid port");
    check_bad_url("http://h h/v1", "must not contain spaces");
    check_bad_url("http://h_!/v1", "invalid host name");
}

static void check_listen(const char *listen, const char *host, int port)
{
    char json[256];
    snprintf(json, sizeof(json), "{\"listen\":\"%s\"," PROV "}", listen);
    struct config *c = parse(json);
    CHECK(c != NULL);
    if (!c)
        return;
    CHECK_STR(c->listen_host, host);
    CHECK_INT(c->listen_port, port);
    config_unref(c);
}

static void test_listen(void)
{
    check_listen("127.0.0.1:8080", "127.0.0.1", 8080);
    check_listen("[::1]:8080", "::1", 8080);
    check_listen("localhost:0", "localhost", 0);
    check_listen("0.0.0.0:65535", "0.0.0.0", 65535);
    static const char *const bad[] = {"8080",  "localhost", ":8080",    "::1:8080", "h:65536",
                                      "h:-1",  "[::1]",     "[::1]8080", "h:",      "a b:1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char json[256];
        snprintf(json, sizeof(json), "{\"listen\":\"%s\"," PROV "}", bad[i]);
        CHECK_STR(parse_err(json), "$.listen: expected \"host:port\"");
    }
}

static void test_files(const char *shipped)
{
    struct config *c = NULL;
    CHECK(config_load_file("/nonexistent/llmux.json", &c, err, sizeof(err)) < 0);
    CHECK(c == NULL);
    CHECK_STR(err, "/nonexistent/llmux.json: No such file or directory");
    CHECK(config_load_file("/tmp", &c, err, sizeof(err)) < 0);
    CHECK_STR(err, "/tmp: Is a directory");

    /* Too large: refused while reading, before any parsing. */
    char big[] = "/tmp/llmux-test-config-XXXXXX";
    int fd = mkstemp(big);
    CHECK(fd >= 0);
    if (fd >= 0) {
        CHECK_INT(ftruncate(fd, (16 << 20) + 1), 0);
        close(fd);
        CHECK_INT(config_load_file(big, &c, err, sizeof(err)), LLMUX_ECONFIG);
        CHECK_CONTAINS(err, ": file too large (limit 16 MiB)");
        /* A small file with a JSON error reports the JSON path. */
        FILE *f = fopen(big, "w");
        fputs("{\"providers\":{}}\n", f);
        fclose(f);
        CHECK_INT(config_load_file(big, &c, err, sizeof(err)), LLMUX_ECONFIG);
        CHECK_STR(err, "$.providers: at least one provider is required");
        unlink(big);
    }

    /* The shipped config: valid, with keyless simulators enabled and keyed providers following
     * their variables. */
    static const char *const vars[] = {
        "OPENAI_API_KEY",    "GROQ_API_KEY",         "TOGETHER_API_KEY", "FIREWORKS_API_KEY",
        "DEEPSEEK_API_KEY",  "MISTRAL_API_KEY",      "OPENROUTER_API_KEY", "ANTHROPIC_API_KEY",
        "GEMINI_API_KEY",    "AZURE_OPENAI_API_KEY", "XAI_API_KEY"};
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    setenv("GROQ_API_KEY", "gsk-test", 1);
    strcpy(err, "garbage");
    CHECK_INT(config_load_file(shipped, &c, err, sizeof(err)), 0);
    CHECK_STR(err, "");
    if (!c) {
        fprintf(stderr, "  %s\n", err);
        return;
    }
    CHECK_STR(c->listen_host, "127.0.0.1");
    CHECK_INT(c->listen_port, 8080);
    CHECK_INT(c->n_providers, 15);
    /* the presets: every kind, every well-known provider, local servers without a key */
    static const char *const presets[] = {"openai", "anthropic", "gemini", "azure", "groq",
                                          "together", "fireworks", "deepseek", "mistral", "xai",
                                          "openrouter", "ollama", "vllm"};
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++) {
        const struct provider *pp = config_find_provider(c, presets[i], strlen(presets[i]));
        CHECK(pp != NULL);
        if (pp && strcmp(presets[i], "ollama") && strcmp(presets[i], "vllm") &&
            strcmp(presets[i], "groq")) {
            CHECK_INT(pp->enabled, 0);
            CHECK(pp->disabled_reason && strstr(pp->disabled_reason, "is not set"));
        }
    }
    const struct provider *an = config_find_provider(c, "anthropic", 9);
    CHECK(an && an->kind == PROVIDER_ANTHROPIC && strcmp(an->api_version, "2023-06-01") == 0);
    const struct provider *gm = config_find_provider(c, "gemini", 6);
    CHECK(gm && gm->kind == PROVIDER_GEMINI && strcmp(gm->base_path, "/v1beta") == 0);
    const struct provider *az = config_find_provider(c, "azure", 5);
    CHECK(az && az->kind == PROVIDER_AZURE && strcmp(az->api_version, "2024-10-21") == 0);
    const struct provider *h = config_find_provider(c, "sim-healthy", 11);
    const struct provider *f = config_find_provider(c, "sim-flaky", 9);
    const struct provider *o = config_find_provider(c, "openai", 6);
    const struct provider *g = config_find_provider(c, "groq", 4);
    const struct provider *fw = config_find_provider(c, "fireworks", 9);
    CHECK(h && f && o && g && fw);
    if (h && f && o && g && fw) {
        CHECK(h->enabled && f->enabled);
        CHECK_INT(h->port, 9101);
        CHECK_INT(f->port, 9102);
        CHECK_STR(h->base_path, "/v1");
        CHECK_INT(o->enabled, 0);
        CHECK_STR(o->disabled_reason, "OPENAI_API_KEY is not set");
        CHECK_INT(g->enabled, 1);
        CHECK_STR(g->base_path, "/openai/v1");
        CHECK_STR(fw->base_path, "/inference/v1");
    }
    CHECK(config_find_provider(c, "deepseek", 8) && config_find_provider(c, "mistral", 7) &&
          config_find_provider(c, "together", 8) && config_find_provider(c, "openrouter", 10));
    const struct model *demo = config_find_model(c, "demo", 4);
    CHECK(demo && demo->n_deployments == 2);
    if (demo) {
        CHECK(demo->deployments[0].provider == f);
        CHECK_STR(demo->deployments[0].model, "demo-flaky");
        CHECK(demo->deployments[1].provider == h);
        CHECK_STR(demo->deployments[1].model, "demo-healthy");
    }
    const struct model *mini = config_find_model(c, "gpt-4o-mini", 11);
    CHECK(mini && mini->n_deployments == 3);
    if (mini) {
        CHECK_STR(mini->deployments[2].model, "openai/gpt-4o-mini");
        CHECK(mini->deployments[0].price_in == 0.15 && mini->deployments[0].price_out == 0.6);
    }
    const struct model *llama = config_find_model(c, "llama-3.3-70b", 13);
    CHECK(llama && llama->n_deployments == 3);
    if (llama)
        CHECK_STR(llama->deployments[2].model, "accounts/fireworks/models/llama-v3p3-70b-instruct");
    config_unref(c);
    unsetenv("GROQ_API_KEY");
}

/* The response cache: per alias "cache": {"ttl_s"}, global "cache": {"max_bytes"}. */
static void test_cache(void)
{
    struct config *c = parse("{" PROV ",\"cache\":{\"max_bytes\":1048576},\"models\":{"
                             "\"a\":{\"cache\":{\"ttl_s\":600},\"deployments\":[{\"provider\":\"p\",\"model\":\"x\"}]},"
                             "\"b\":{\"deployments\":[{\"provider\":\"p\",\"model\":\"x\"}]}}}");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->cache_max_bytes, 1048576);
        CHECK_INT(c->models[0].cache_ttl_s, 600);
        CHECK_INT(c->models[1].cache_ttl_s, 0); /* off by default */
        config_unref(c);
    }
    c = parse("{" PROV "}");
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(c->cache_max_bytes, 64u << 20);
        config_unref(c);
    }
#define CACHED(x) "{" PROV ",\"models\":{\"a\":{\"cache\":" x ",\"deployments\":[{\"provider\":\"p\",\"model\":\"x\"}]}}}"
    CHECK_STR(parse_err(CACHED("{}")), "$.models.a.cache.ttl_s: is required (seconds an answer is kept)");
    CHECK_STR(parse_err(CACHED("{\"ttl_s\":0}")), "$.models.a.cache.ttl_s: must be a positive integer");
    CHECK_STR(parse_err(CACHED("{\"ttl_s\":1.5}")), "$.models.a.cache.ttl_s: must be a positive integer");
    CHECK_STR(parse_err(CACHED("{\"ttl_s\":\"60\"}")), "$.models.a.cache.ttl_s: must be a positive integer");
    CHECK_STR(parse_err(CACHED("true")), "$.models.a.cache: must be an object");
    CHECK_STR(parse_err(CACHED("{\"ttl_s\":60,\"max_bytes\":1}")), "$.models.a.cache.max_bytes: unknown key");
#undef CACHED
    CHECK_STR(parse_err("{" PROV ",\"cache\":{\"max_bytes\":0}}"), "$.cache.max_bytes: must be a positive integer");
    CHECK_STR(parse_err("{" PROV ",\"cache\":{\"ttl_s\":5}}"), "$.cache.ttl_s: unknown key");
    CHECK_STR(parse_err("{" PROV ",\"cache\":[]}"), "$.cache: must be an object");
}

int main(int argc, char **argv)
{
    /* ../conf/llmux.json relative to this source file, unless given. */
    char shipped[4096];
    if (argc > 1) {
        snprintf(shipped, sizeof(shipped), "%s", argv[1]);
    } else {
        const char *slash = strrchr(__FILE__, '/');
        int dir = slash ? (int)(slash - __FILE__) : 1;
        snprintf(shipped, sizeof(shipped), "%.*s/../conf/llmux.json", dir, slash ? __FILE__ : ".");
    }
    test_full();
    test_defaults();
    test_errors();
    test_unknown_keys();
    test_key_objects();
    test_state();
    test_routing_fields();
    test_env_keys();
    test_base_url();
    test_listen();
    test_cache();
    test_files(shipped);
    return check_report();
}
