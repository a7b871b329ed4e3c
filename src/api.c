/* api: routes, authentication, request validation. See include/llmux/api.h. */
#include "llmux/api.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "llmux/buf.h"
#include "llmux/exchange.h"
#include "llmux/json.h"
#include "llmux/router.h"

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

static void handle_inference(struct gateway *gw, struct server_req *req, enum api_endpoint ep)
{
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
    struct canon_request creq;
    memset(&creq, 0, sizeof(creq));
    creq.endpoint = ep;
    creq.body = r->body;
    creq.body_len = r->body_len;
    creq.stream = ep != API_EMBEDDINGS && cJSON_IsTrue(stream);
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    creq.include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    if (json_top_key(r->body, r->body_len, "model", &creq.model_start, &creq.model_end) != 0) {
        cJSON_Delete(root);
        bad_request(req, "model", "the model parameter could not be read");
        return;
    }
    char client_model[160];
    snprintf(client_model, sizeof(client_model), "%s", model->valuestring);
    cJSON_Delete(root);

    char rid[80];
    const char *given = server_req_header(req, "x-request-id");
    if (given && usable_request_id(given))
        snprintf(rid, sizeof(rid), "%s", given);
    else
        gateway_request_id(gw, rid);
    creq.request_id = rid;

    struct plan plan;
    char err[512];
    /* The plan's model strings point into the config or into the request body (direct
     * routing): both outlive the exchange's attempts. The body copy of the name is used. */
    const char *name = r->body + creq.model_start + 1;
    size_t name_len = creq.model_end - creq.model_start - 2;
    if (memchr(name, '\\', name_len)) { /* escaped name: route on the decoded copy */
        name = client_model;
        name_len = strlen(client_model);
    }
    int rc = router_plan(gw->cfg, name, name_len, &plan, err, sizeof(err));
    if (rc == ROUTER_ENOTFOUND) {
        server_respond_error(req, 404, "invalid_request_error", "model_not_found", err);
        return;
    }
    if (rc == ROUTER_EUNAVAILABLE) {
        server_respond_error(req, 503, "service_unavailable", "no_enabled_deployment", err);
        return;
    }
    gw->stats.requests++;
    if (exchange_start(gw, req, &creq, client_model, &plan) != 0)
        server_respond_error(req, 500, "server_error", NULL, "out of memory");
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
    if (found->endpoint < 0) {
        list_models(gw, req);
        return;
    }
    handle_inference(gw, req, (enum api_endpoint)found->endpoint);
}
