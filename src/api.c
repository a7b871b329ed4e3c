/* api: routes, authentication, request validation. See include/llmux/api.h. */
#include "llmux/api.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llmux/buf.h"
#include "llmux/exchange.h"
#include "llmux/health.h"
#include "llmux/json.h"
#include "llmux/router.h"
#include "llmux/upstream.h"

struct route {
    const char *path;
    const char *method;
    int endpoint; /* enum api_endpoint, or -1 for the gateway's own answers */
};

static const struct route routes[] = {
    {"/v1/chat/completions", "POST", API_CHAT},
    {"/v1/completions", "POST", API_COMPLETIONS},
    {"/v1/embeddings", "POST", API_EMBEDDINGS},
    {"/v1/models", "GET", -1},
    {"/v1/status", "GET", -1},
    {"/healthz", "GET", -1},
};

static void respond_json(struct server_req *req, int status, const char *body, size_t len)
{
    static const struct http_header ct[] = {{"content-type", 12, "application/json", 16}};
    server_respond(req, status, ct, 1, body, len);
}

static void list_models(struct gateway *gw, struct server_req *req)
{
    const struct config *cfg = gw->cfg;
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
    int first = 1;
    for (size_t i = 0; i < cfg->n_models; i++) {
        const struct model *m = &cfg->models[i];
        int enabled = 0;
        for (size_t j = 0; j < m->n_deployments; j++)
            enabled |= m->deployments[j].provider->enabled;
        if (!enabled)
            continue;
        buf_append_str(&b, first ? "{\"id\":\"" : ",{\"id\":\"");
        buf_append_json_str(&b, m->name, strlen(m->name));
        buf_append_str(&b, "\",\"object\":\"model\",\"created\":0,\"owned_by\":\"llmux\"}");
        first = 0;
    }
    buf_append_str(&b, "]}");
    respond_json(req, 200, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

/* Constant-time comparison so a key cannot be guessed byte by byte from timing. */
static int key_equal(const char *a, size_t alen, const char *b)
{
    size_t blen = strlen(b);
    unsigned char diff = alen != blen;
    for (size_t i = 0; i < alen; i++)
        diff |= (unsigned char)a[i] ^ (unsigned char)b[i < blen ? i : 0];
    return diff == 0;
}

static int authorized(const struct config *cfg, struct server_req *req)
{
    if (cfg->n_keys == 0)
        return 1;
    const char *auth = server_req_header(req, "authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return 0;
    const char *key = auth + 7;
    size_t len = strlen(key);
    int ok = 0;
    for (size_t i = 0; i < cfg->n_keys; i++)
        ok |= key_equal(key, len, cfg->keys[i]);
    return ok;
}

/* A client-supplied request id is kept when it is short and plain. */
static int usable_request_id(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              c == '-' || c == '_' || c == '.' || c == ':'))
            return 0;
    }
    return 1;
}

static void bad_request(struct server_req *req, const char *param, const char *message)
{
    (void)param;
    server_respond_error(req, 400, "invalid_request_error", NULL, message);
}

/* An array of at most PREFS_MAX non-empty strings into out (borrowed from the tree). */
static int read_names(const cJSON *arr, const char **out, size_t *n)
{
    *n = 0;
    if (!arr)
        return 0;
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) > PREFS_MAX)
        return -1;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        if (!cJSON_IsString(it) || !it->valuestring[0])
            return -1;
        out[(*n)++] = it->valuestring;
    }
    return 0;
}

/* OpenRouter's `models` and `provider` members. Returns NULL, or what is wrong. */
static const char *read_prefs(const cJSON *root, struct route_prefs *p)
{
    route_prefs_init(p);
    if (read_names(cJSON_GetObjectItemCaseSensitive(root, "models"), p->models, &p->n_models))
        return "'models' must be an array of at most 8 model names";
    const cJSON *prov = cJSON_GetObjectItemCaseSensitive(root, "provider");
    if (!prov || cJSON_IsNull(prov))
        return NULL;
    if (!cJSON_IsObject(prov))
        return "'provider' must be an object";
    if (read_names(cJSON_GetObjectItemCaseSensitive(prov, "order"), p->order, &p->n_order) ||
        read_names(cJSON_GetObjectItemCaseSensitive(prov, "only"), p->only, &p->n_only) ||
        read_names(cJSON_GetObjectItemCaseSensitive(prov, "ignore"), p->ignore, &p->n_ignore))
        return "'provider.order', 'provider.only' and 'provider.ignore' must be arrays of at "
               "most 8 provider names";
    const cJSON *fb = cJSON_GetObjectItemCaseSensitive(prov, "allow_fallbacks");
    if (fb && !cJSON_IsBool(fb))
        return "'provider.allow_fallbacks' must be a boolean";
    p->allow_fallbacks = !cJSON_IsFalse(fb);
    const cJSON *sort = cJSON_GetObjectItemCaseSensitive(prov, "sort");
    if (sort && !cJSON_IsNull(sort)) {
        static const char *const names[] = {"price", "latency", "throughput"};
        static const int values[] = {STRATEGY_PRICE, STRATEGY_LATENCY, STRATEGY_THROUGHPUT};
        for (size_t i = 0; cJSON_IsString(sort) && i < 3; i++)
            if (strcmp(sort->valuestring, names[i]) == 0)
                p->sort = values[i];
        if (p->sort < 0)
            return "'provider.sort' must be one of \"price\", \"latency\", \"throughput\"";
    }
    const cJSON *mp = cJSON_GetObjectItemCaseSensitive(prov, "max_price");
    if (mp && !cJSON_IsNull(mp)) {
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(mp, "prompt");
        const cJSON *co = cJSON_GetObjectItemCaseSensitive(mp, "completion");
        if (!cJSON_IsObject(mp) || (pr && !cJSON_IsNumber(pr)) || (co && !cJSON_IsNumber(co)))
            return "'provider.max_price' must be an object with numbers 'prompt' and "
                   "'completion' ($ per million tokens)";
        p->max_prompt = pr ? pr->valuedouble : -1;
        p->max_completion = co ? co->valuedouble : -1;
    }
    return NULL;
}

/* Re-encode the body without `models` and `provider` into creq->owned. The members are put
 * back afterwards: the plan may point into them until the exchange has copied its names. */
static int strip_prefs(cJSON *root, struct canon_request *creq)
{
    cJSON *models = cJSON_DetachItemFromObjectCaseSensitive(root, "models");
    cJSON *provider = cJSON_DetachItemFromObjectCaseSensitive(root, "provider");
    creq->owned = cJSON_PrintUnformatted(root);
    if (models)
        cJSON_AddItemToObject(root, "models", models);
    if (provider)
        cJSON_AddItemToObject(root, "provider", provider);
    if (!creq->owned)
        return UV_ENOMEM;
    creq->body = creq->owned;
    creq->body_len = strlen(creq->owned);
    return 0;
}

static void handle_inference(struct gateway *gw, struct server_req *req, enum api_endpoint ep)
{
    uint64_t t_recv = uv_hrtime();
    const struct server_request *r = server_req_request(req);
    cJSON *root = cJSON_ParseWithLength(r->body, r->body_len);
    if (!root) {
        bad_request(req, NULL,
                    r->body_len ? "We could not parse the JSON body of your request. "
                                  "(HINT: the body must be valid JSON.)"
                                : "The request body is empty; it must be a JSON object.");
        return;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        bad_request(req, NULL, "The request body must be a JSON object.");
        return;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *need = ep == API_CHAT ? "messages" : ep == API_COMPLETIONS ? "prompt" : "input";
    const cJSON *main_field = cJSON_GetObjectItemCaseSensitive(root, need);
    const cJSON *stream = cJSON_GetObjectItemCaseSensitive(root, "stream");
    char msg[256];
    if (!cJSON_IsString(model) || !model->valuestring[0]) {
        cJSON_Delete(root);
        bad_request(req, "model", "you must provide a model parameter");
        return;
    }
    if (!main_field || (ep == API_CHAT && !cJSON_IsArray(main_field))) {
        cJSON_Delete(root);
        snprintf(msg, sizeof(msg), "'%s' is a required property%s", need,
                 ep == API_CHAT ? " and must be an array" : "");
        bad_request(req, need, msg);
        return;
    }
    if (stream && !cJSON_IsBool(stream) && !cJSON_IsNull(stream)) {
        cJSON_Delete(root);
        bad_request(req, "stream", "'stream' must be a boolean");
        return;
    }
    struct route_prefs prefs;
    const char *why = read_prefs(root, &prefs);
    if (why) {
        cJSON_Delete(root);
        bad_request(req, NULL, why);
        return;
    }
    struct canon_request creq;
    memset(&creq, 0, sizeof(creq));
    creq.endpoint = ep;
    creq.body = r->body;
    creq.body_len = r->body_len;
    creq.stream = ep != API_EMBEDDINGS && cJSON_IsTrue(stream);
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    creq.include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    char client_model[160];
    snprintf(client_model, sizeof(client_model), "%s", model->valuestring);

    char rid[80];
    const char *given = server_req_header(req, "x-request-id");
    if (given && usable_request_id(given))
        snprintf(rid, sizeof(rid), "%s", given);
    else
        gateway_request_id(gw, rid);
    creq.request_id = rid;
    creq.t_recv_ns = t_recv;

    struct plan plan;
    char err[512];
    int rc = router_plan(gw->cfg, gw->health, uv_now(gw->loop), model->valuestring,
                         strlen(model->valuestring), &prefs, &plan, err, sizeof(err));
    if (rc == 0 && (cJSON_GetObjectItemCaseSensitive(root, "models") ||
                    cJSON_GetObjectItemCaseSensitive(root, "provider"))) {
        /* llmux's own members never reach a provider: re-encode without them */
        rc = strip_prefs(root, &creq);
    }
    if (rc == 0 &&
        json_top_key(creq.body, creq.body_len, "model", &creq.model_start, &creq.model_end) != 0)
        rc = ROUTER_EFILTERED - 1;
    if (rc == 0) {
        gw->stats.requests++;
        rc = exchange_start(gw, req, &creq, client_model, &plan);
        if (rc != 0) {
            free(creq.owned);
            server_respond_error(req, 500, "server_error", NULL, "out of memory");
        }
    } else if (rc == ROUTER_ENOTFOUND) {
        server_respond_error(req, 404, "invalid_request_error", "model_not_found", err);
    } else if (rc == ROUTER_EUNAVAILABLE) {
        server_respond_error(req, 503, "service_unavailable", "no_enabled_deployment", err);
    } else if (rc == ROUTER_EFILTERED) {
        server_respond_error(req, 400, "invalid_request_error", "no_deployment_matches", err);
    } else if (rc == UV_ENOMEM) {
        server_respond_error(req, 500, "server_error", NULL, "out of memory");
    } else {
        bad_request(req, "model", "the model parameter could not be read");
    }
    cJSON_Delete(root);
}

static void status(struct gateway *gw, struct server_req *req)
{
    const struct pool_stats *ps = pool_get_stats(gw->pool);
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b,
               "{\"requests\":%llu,\"active\":%llu,\"failovers\":%llu,"
               "\"upstream_connects\":%llu,\"upstream_reuses\":%llu,\"health\":",
               (unsigned long long)gw->stats.requests,
               (unsigned long long)gw->stats.exchanges_active,
               (unsigned long long)gw->stats.failovers, (unsigned long long)ps->connects,
               (unsigned long long)ps->reuses);
    health_status_json(gw->health, uv_now(gw->loop), &b);
    buf_append_str(&b, ",\"overhead_us\":");
    hist_json(&gw->stats.overhead_us, &b);
    buf_append_str(&b, "}");
    respond_json(req, 200, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

void api_handle(void *data, struct server_req *req)
{
    struct gateway *gw = data;
    const struct server_request *r = server_req_request(req);
    const struct route *found = NULL;
    int path_known = 0;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strlen(routes[i].path) != r->path_len || memcmp(routes[i].path, r->url, r->path_len))
            continue;
        path_known = 1;
        if (strcmp(routes[i].method, r->method) == 0)
            found = &routes[i];
    }
    if (!found) {
        char msg[160];
        if (path_known) {
            snprintf(msg, sizeof(msg), "Method %s is not allowed on %.*s", r->method,
                     (int)r->path_len, r->url);
            server_respond_error(req, 405, "invalid_request_error", "method_not_allowed", msg);
        } else {
            snprintf(msg, sizeof(msg), "Unknown request URL: %s %.*s", r->method,
                     (int)(r->path_len > 100 ? 100 : r->path_len), r->url);
            server_respond_error(req, 404, "invalid_request_error", "unknown_url", msg);
        }
        return;
    }
    if (strcmp(found->path, "/healthz") == 0) {
        respond_json(req, 200, "{\"status\":\"ok\"}", 15);
        return;
    }
    if (!authorized(gw->cfg, req)) {
        server_respond_error(req, 401, "invalid_request_error", "invalid_api_key",
                             "Missing or invalid gateway key: send Authorization: Bearer <key>");
        return;
    }
    if (found->endpoint < 0 && strcmp(found->path, "/v1/status") == 0) {
        status(gw, req);
        return;
    }
    if (found->endpoint < 0) {
        list_models(gw, req);
        return;
    }
    handle_inference(gw, req, (enum api_endpoint)found->endpoint);
}
