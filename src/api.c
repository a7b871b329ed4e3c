/* api: routes, authentication, request validation. See include/llmux/api.h. */
#include "llmux/api.h"

#include <cjson/cJSON.h>
#include <mbedtls/sha256.h>
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "llmux/buf.h"
#include "llmux/catalog.h"
#include "llmux/codec.h"
#include "llmux/errors.h"
#include "llmux/exchange.h"
#include "llmux/health.h"
#include "llmux/json.h"
#include "llmux/redis.h"
#include "llmux/metrics.h"
#include "llmux/router.h"
#include "llmux/upstream.h"
#include "ui_page.h" /* generated from src/ui.html by src/ui.cmake */

struct route {
    const char *path; /* ends in '/': a prefix (the rest is an id) */
    const char *method;
    int endpoint; /* enum api_endpoint, a ROUTE_* below, or -1 for the gateway's own answers */
};

/* The client APIs with a codec (include/llmux/codec.h): canonical endpoint API_CHAT. */
enum { ROUTE_MESSAGES = 16, ROUTE_COUNT_TOKENS, ROUTE_RESPONSES };

static const struct route routes[] = {
    {"/v1/chat/completions", "POST", API_CHAT},
    {"/v1/messages", "POST", ROUTE_MESSAGES},
    {"/v1/messages/count_tokens", "POST", ROUTE_COUNT_TOKENS},
    {"/v1/responses", "POST", ROUTE_RESPONSES},
    {"/v1/completions", "POST", API_COMPLETIONS},
    {"/v1/embeddings", "POST", API_EMBEDDINGS},
    {"/v1/models", "GET", -1},
    {"/v1/models/", "GET", -1}, /* {id}, {id}/endpoints */
    {"/v1/status", "GET", -1},
    {"/healthz", "GET", -1},
    {"/metrics", "GET", -1},
    {"/v1/generation", "GET", -1},
    {"/v1/generations", "GET", -1},
    {"/ui", "GET", -1},
};

static void respond_json(struct server_req *req, int status, const char *body, size_t len)
{
    static const struct http_header ct[] = {{"content-type", 12, "application/json", 16}};
    server_respond(req, status, ct, 1, body, len);
}

static const struct route *find_route(const struct server_request *r, int *path_known);

/* The routes served without a gateway key: the health check and the dashboard page (which
 * asks for a key and sends it with its own requests). */
static int keyless(const struct route *rt)
{
    return strcmp(rt->path, "/healthz") == 0 || strcmp(rt->path, "/ui") == 0;
}

/* The dashboard: one page, its script and style inline and allowed by their hashes alone. */
static void dashboard(struct server_req *req)
{
    static const struct http_header h[] = {
        {"content-type", 12, "text/html; charset=utf-8", 24},
        {"cache-control", 13, "no-cache", 8},
        {"content-security-policy", 23, UI_CSP, sizeof(UI_CSP) - 1},
        {"x-content-type-options", 22, "nosniff", 7},
        {"referrer-policy", 15, "no-referrer", 11},
    };
    server_respond(req, 200, h, sizeof(h) / sizeof(h[0]), ui_page, sizeof(ui_page));
}

/* The codec of a route's client API; NULL for the OpenAI endpoints. */
static const struct client_codec *route_codec(const struct route *rt)
{
    if (rt && rt->endpoint == ROUTE_RESPONSES)
        return &codec_responses;
    return rt && (rt->endpoint == ROUTE_MESSAGES || rt->endpoint == ROUTE_COUNT_TOKENS)
               ? &codec_messages
               : NULL;
}

/* llmux's own refusals: OpenAI's error shape with `param` (or the shape of the route's client
 * API), the request id (the SDKs read it as error.request_id), and x-should-retry: false where
 * retrying cannot help (llmux already tried every deployment it could, or the request itself is
 * at fault). */
static void api_error(struct server_req *req, const char *rid, int status, const char *type,
                      const char *code, const char *param, const char *message)
{
    struct http_header h[3] = {{"x-request-id", 12, rid, strlen(rid)}};
    size_t n = 1;
    if (status != 500)
        h[n++] = (struct http_header){"x-should-retry", 14, "false", 5};
    int known;
    const struct client_codec *codec = route_codec(find_route(server_req_request(req), &known));
    if (!codec || !codec->error) {
        server_respond_error_with(req, status, type, code, param, message, h, n);
        return;
    }
    struct buf b;
    buf_init(&b, 0);
    codec->error(status, message, NULL, 0, &b);
    h[n++] = (struct http_header){"content-type", 12, "application/json", 16};
    server_respond(req, status, h, n, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

static void list_models(struct gateway *gw, struct server_req *req)
{
    struct buf b;
    buf_init(&b, 0);
    catalog_list(gw->rt, &b);
    respond_json(req, 200, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

/* Percent-decode src[0..len) into dst (NUL-terminated). Returns the length, or -1 when it
 * does not fit or holds a bad escape or a control character. */
static long url_decode(const char *src, size_t len, char *dst, size_t size)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned c = (unsigned char)src[i];
        if (c == '%') {
            if (i + 2 >= len || !isxdigit((unsigned char)src[i + 1]) ||
                !isxdigit((unsigned char)src[i + 2]))
                return -1;
            char hex[3] = {src[i + 1], src[i + 2], 0};
            c = (unsigned)strtoul(hex, NULL, 16);
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || n + 1 >= size)
            return -1;
        dst[n++] = (char)c;
    }
    dst[n] = 0;
    return (long)n;
}

/* GET /v1/generation?id=<request id>: the record of a finished request (OpenRouter's shape,
 * {"data": {...}}), from this worker's ring. */
static void generation(struct gateway *gw, struct server_req *req, const char *rid)
{
    const struct server_request *r = server_req_request(req);
    const char *q = r->url + r->path_len, *end = r->url + strlen(r->url);
    char id[80] = "";
    while (q < end) {
        q++; /* '?' or '&' */
        const char *amp = memchr(q, '&', (size_t)(end - q));
        const char *stop = amp ? amp : end;
        if (stop - q > 3 && memcmp(q, "id=", 3) == 0 &&
            url_decode(q + 3, (size_t)(stop - q - 3), id, sizeof(id)) < 0)
            id[0] = 0;
        q = stop;
    }
    if (!id[0]) {
        api_error(req, rid, 400, "invalid_request_error", NULL, "id",
                  "the generation id is missing: GET /v1/generation?id=<x-request-id>");
        return;
    }
    struct gen_rec *g = generations_find(gw->metrics.shm, id);
    if (!g) {
        char msg[160];
        snprintf(msg, sizeof(msg), "Generation %s not found (llmux keeps the last %zu per worker)",
                 id, gw->gens ? gw->gens->keep : 0);
        api_error(req, rid, 404, "invalid_request_error", "generation_not_found", "id", msg);
        return;
    }
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, "{\"data\":");
    generation_json(g, &b);
    free(g);
    buf_append_str(&b, "}");
    respond_json(req, 200, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

/* GET /v1/generations?limit=N[&failed=1]: the newest records (at most 100), newest first;
 * failed=1: only requests with an attempt that failed (an error somewhere in the trail). */
static void generations(struct gateway *gw, struct server_req *req)
{
    const struct server_request *r = server_req_request(req);
    const char *q = r->url + r->path_len;
    const char *lim = strstr(q, "limit=");
    long limit = lim ? strtol(lim + 6, NULL, 10) : 20;
    int failed = strstr(q, "failed=1") || strstr(q, "failed=true");
    if (limit < 1 || limit > 100)
        limit = limit < 1 ? 1 : 100;
    struct buf b;
    buf_init(&b, 0);
    buf_append_str(&b, "{\"data\":[");
    struct gen_rec *recs[100];
    size_t n = generations_newest(gw->metrics.shm, (size_t)limit, failed, recs);
    for (size_t k = 0; k < n; k++) {
        if (k)
            buf_append_str(&b, ",");
        generation_json(recs[k], &b);
        free(recs[k]);
    }
    buf_append_str(&b, "]}");
    respond_json(req, 200, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

/* GET /v1/models/{id} (the SDKs' models.retrieve) and /v1/models/{id}/endpoints; an id may
 * hold '/' (sent as is or as %2F). */
static void model_sub(struct gateway *gw, struct server_req *req, const char *rid)
{
    const struct server_request *r = server_req_request(req);
    static const char prefix[] = "/v1/models/", suffix[] = "/endpoints";
    const char *id = r->url + sizeof(prefix) - 1;
    size_t len = r->path_len - (sizeof(prefix) - 1);
    int endpoints = len > sizeof(suffix) - 1 &&
                    memcmp(id + len - (sizeof(suffix) - 1), suffix, sizeof(suffix) - 1) == 0;
    if (endpoints)
        len -= sizeof(suffix) - 1;
    char name[512];
    long n = url_decode(id, len, name, sizeof(name));
    struct buf b;
    buf_init(&b, 0);
    int rc = n <= 0 ? -1
             : endpoints
                 ? catalog_endpoints(gw->rt, gw->metrics.shm, name, (size_t)n, uv_now(gw->loop),
                                     (int64_t)time(NULL), &b)
                 : catalog_model(gw->rt, name, (size_t)n, &b);
    if (rc == 0) {
        respond_json(req, 200, buf_head(&b), buf_size(&b));
    } else if (rc != -1) {
        api_error(req, rid, 500, "server_error", NULL, NULL, "out of memory");
    } else {
        char msg[600];
        snprintf(msg, sizeof(msg), "The model '%s' does not exist", n > 0 ? name : "");
        api_error(req, rid, 404, "invalid_request_error", "model_not_found", "model", msg);
    }
    buf_free(&b);
}

/* Whether key k may use model `name`: its "models" list, when it has one. */
static int key_allows(const struct gateway_key *k, const char *name)
{
    for (size_t i = 0; i < k->n_models; i++)
        if (strcmp(k->models[i], name) == 0)
            return 1;
    return k->n_models == 0;
}

/* The gateway key a request presents (Authorization: Bearer, or Anthropic clients'
 * x-api-key), matched by its SHA-256 against every key, in constant time: returns its index,
 * -1 when no keys are configured, -2 when it presents none or an unknown one. */
static int authenticate(const struct config *cfg, struct server_req *req)
{
    if (cfg->n_keys == 0)
        return -1;
    const char *auth = server_req_header(req, "authorization");
    const char *key = server_req_header(req, "x-api-key");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0)
        key = auth + 7;
    if (!key)
        return -2;
    unsigned char h[32];
    mbedtls_sha256_ret((const unsigned char *)key, strlen(key), h, 0);
    int found = -2;
    for (size_t i = 0; i < cfg->n_keys; i++) {
        unsigned char diff = 0;
        for (int j = 0; j < 32; j++)
            diff |= h[j] ^ cfg->keys[i].sha256[j];
        if (diff == 0 && cfg->keys[i].enabled)
            found = (int)i;
    }
    return found;
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

static void bad_request(struct server_req *req, const char *rid, const char *param,
                        const char *message)
{
    api_error(req, rid, 400, "invalid_request_error", NULL, param, message);
}

/* A model id goes into response headers and logs: no control characters. */
static int printable(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return 0;
    return 1;
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

/* OpenRouter's `models` and `provider` members of root (NULL: none). Returns NULL, or what
 * is wrong. */
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

/* The members of a request body llmux looks at, as byte spans (found in one pass). */
struct body_view {
    struct json_member model, main, stream, stream_options, models, provider, usage;
    int has_model, has_main, has_stream, has_stream_options, has_models, has_provider, has_usage;
};

static int key_is(const struct json_member *m, const char *k)
{
    return m->key_len == strlen(k) && memcmp(m->key, k, m->key_len) == 0;
}

/* One pass over a body that starts with '{': validates it and finds the members. Returns
 * 1 when valid, 0 when not JSON, -1 when a member llmux reads appears twice or a top-level key
 * is escaped: providers whose parsers keep the last duplicate would then see another model
 * (or stream mode) than the one llmux routed and logged, so such bodies are refused. */
static int view_body(const char *b, size_t n, const char *main_key, struct body_view *v)
{
    memset(v, 0, sizeof(*v));
    size_t pos = 0;
    struct json_member m;
    int rc, twice = 0;
    while ((rc = json_member_next(b, n, &pos, &m)) == 0) {
        if (memchr(m.key, '\\', m.key_len))
            twice = 1;
        struct {
            const char *key;
            struct json_member *slot;
            int *seen;
        } wanted[] = {
            {"model", &v->model, &v->has_model},
            {main_key, &v->main, &v->has_main},
            {"stream", &v->stream, &v->has_stream},
            {"stream_options", &v->stream_options, &v->has_stream_options},
            {"models", &v->models, &v->has_models},
            {"provider", &v->provider, &v->has_provider},
            {"usage", &v->usage, &v->has_usage},
        };
        for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
            if (key_is(&m, wanted[i].key)) {
                twice |= *wanted[i].seen;
                *wanted[i].slot = m;
                *wanted[i].seen = 1;
            }
        }
    }
    if (rc != 1 || !json_object_rest_empty(b, n, pos))
        return 0;
    return twice ? -1 : 1;
}

/* A member's value parsed on its own (small values only). Caller frees with cJSON_Delete. */
static cJSON *parse_member(const char *b, const struct json_member *m)
{
    return cJSON_ParseWithLength(b + m->vstart, m->vend - m->vstart);
}

/* The body without llmux's own members (`models`, `provider`, OpenRouter's `usage`), into
 * creq->owned: the other members copied as they are; with ask_usage, stream_options asking
 * the upstream for the usage chunk is added. */
static int strip_prefs(const char *b, size_t n, int ask_usage, struct canon_request *creq)
{
    struct buf out;
    buf_init(&out, 0);
    int rc = buf_append(&out, "{", 1);
    size_t pos = 0;
    int first = 1;
    struct json_member m;
    while (!rc && json_member_next(b, n, &pos, &m) == 0) {
        if (key_is(&m, "models") || key_is(&m, "provider") || key_is(&m, "usage"))
            continue;
        if (!first)
            rc = buf_append(&out, ",", 1);
        if (!rc)
            rc = buf_append(&out, b + m.start, m.vend - m.start);
        first = 0;
    }
    if (!rc && ask_usage)
        rc = buf_append_str(&out, first ? "\"stream_options\":{\"include_usage\":true}"
                                        : ",\"stream_options\":{\"include_usage\":true}");
    if (!rc)
        rc = buf_append(&out, "}", 1);
    size_t len;
    creq->owned = rc ? NULL : buf_steal(&out, &len);
    buf_free(&out);
    if (!creq->owned)
        return UV_ENOMEM;
    creq->body = creq->owned;
    creq->body_len = len;
    return 0;
}

/* A request of a client API with a codec (Messages, Responses) made ready for the exchange.
 * creq->body is the client's body (without llmux's own members); it becomes creq->native, and
 * creq->body its canonical translation when a deployment of another kind than the codec's
 * native one (or a continuation) may need it: NULL with creq->why when only the native kind
 * can carry it. One block (creq->owned) holds what the exchange keeps: the translation, the
 * client's body when it was re-encoded, the header lines to forward, and the reason. Returns
 * 0, UV_EINVAL with `why` for the client's 400, or UV_ENOMEM. */
static int codec_canon(struct server_req *req, const struct client_codec *codec,
                       struct canon_request *creq, const struct plan *plan, int count_tokens,
                       char *why, size_t why_size)
{
    /* a continuation after a passthrough attempt is translated */
    int need = plan->continue_on_failure && codec->native_continues && !count_tokens;
    for (size_t i = 0; i < plan->n && !count_tokens; i++)
        need |= !codec->native_for || !codec->native_for(plan->entries[i].provider);
    struct buf own;
    buf_init(&own, 0);
    int rc = 0, untranslatable = 0;
    why[0] = 0;
    if (need) {
        rc = codec->request(creq->body, creq->body_len, &own, why, why_size);
        untranslatable = rc == LLMUX_EKIND;
        if (untranslatable) {
            buf_reset(&own);
            rc = 0;
        }
    }
    size_t canon_len = buf_size(&own), native_at = 0, headers_at, why_at;
    if (!rc)
        rc = buf_append(&own, "", 1);
    if (!rc && creq->owned) { /* re-encoded without llmux's members: kept here */
        native_at = buf_size(&own);
        rc = buf_append(&own, creq->body, creq->body_len + 1);
    }
    headers_at = buf_size(&own);
    for (const char *const *h = codec->forward_headers; !rc && h && *h; h++) {
        const char *value = server_req_header(req, *h);
        if (value)
            rc = buf_printf(&own, "%s: %s\r\n", *h, value);
    }
    if (!rc)
        rc = buf_append(&own, "", 1);
    why_at = buf_size(&own);
    if (!rc)
        rc = buf_append(&own, why, strlen(why) + 1);
    size_t len;
    char *block = rc ? NULL : buf_steal(&own, &len);
    buf_free(&own);
    if (!block)
        return rc == UV_EINVAL ? UV_EINVAL : UV_ENOMEM;
    creq->native = native_at ? block + native_at : creq->body;
    creq->native_len = creq->body_len;
    free(creq->owned);
    creq->owned = block;
    creq->body = need && !untranslatable ? block : NULL;
    creq->body_len = canon_len;
    creq->native_headers = block + headers_at;
    creq->why = block + why_at;
    creq->native_path = count_tokens ? "/messages/count_tokens" : codec->native_path;
    creq->want_text = plan->continue_on_failure && codec->native_continues;
    creq->include_usage = creq->stream; /* the translation asks for the stream's usage */
    if (json_top_key(creq->native, creq->native_len, "model", &creq->native_model_start,
                     &creq->native_model_end) != 0)
        return UV_EINVAL;
    return 0;
}

/* count_tokens goes to the anthropic deployments of the plan only (it has no translation).
 * Without any, the answer is an estimate (see the README). Returns 1 when answered here. */
static int count_tokens_plan(struct server_req *req, const char *rid, struct plan *plan)
{
    size_t n = 0;
    for (size_t i = 0; i < plan->n; i++) {
        if (plan->entries[i].provider->kind == PROVIDER_ANTHROPIC)
            plan->entries[n++] = plan->entries[i];
    }
    plan->n = n;
    if (plan->max_attempts > n)
        plan->max_attempts = (uint32_t)n;
    if (n > 0)
        return 0;
    const struct server_request *r = server_req_request(req);
    char body[64];
    int len = snprintf(body, sizeof(body), "{\"input_tokens\":%ld}",
                       codec_messages_estimate_tokens(r->body, r->body_len));
    const struct http_header h[2] = {{"content-type", 12, "application/json", 16},
                                     {"x-request-id", 12, rid, strlen(rid)}};
    server_respond(req, 200, h, 2, body, (size_t)len);
    return 1;
}

/* Validation, routing and the exchange. The body is checked and read without building a tree:
 * a long conversation is forwarded as it came, with only its model value replaced. A client
 * API with a codec (Messages) is validated the same way, then translated (messages_canon). */
static void handle_inference(struct gateway *gw, struct server_req *req, enum api_endpoint ep,
                             const struct client_codec *codec, int count_tokens, int key,
                             const char *rid)
{
    uint64_t t_recv = uv_hrtime();
    const struct server_request *r = server_req_request(req);
    const char *need = codec                    ? codec->main_key
                       : ep == API_CHAT        ? "messages"
                       : ep == API_COMPLETIONS ? "prompt"
                                               : "input";
    /* chat's and Messages' `messages` are arrays; Responses' `input` may be a string */
    int array = ep == API_CHAT && need[0] == 'm';
    size_t first = 0;
    while (first < r->body_len && strchr(" \t\r\n", r->body[first]))
        first++;
    struct body_view v;
    int object = first < r->body_len && r->body[first] == '{';
    int valid = object ? view_body(r->body, r->body_len, need, &v)
                       : json_valid(r->body, r->body_len);
    if (valid < 0) {
        bad_request(req, rid, NULL,
                    "The request body repeats a member llmux reads (model, stream, "
                    "stream_options, models, provider or the messages/prompt/input) or has an "
                    "escaped top-level key.");
        return;
    }
    if (!valid) {
        bad_request(req, rid, NULL,
                    r->body_len ? "We could not parse the JSON body of your request. "
                                  "(HINT: the body must be valid JSON.)"
                                : "The request body is empty; it must be a JSON object.");
        return;
    }
    if (!object) {
        bad_request(req, rid, NULL, "The request body must be a JSON object.");
        return;
    }
    char client_model[160];
    cJSON *model = v.has_model ? parse_member(r->body, &v.model) : NULL;
    if (!cJSON_IsString(model) || !model->valuestring[0]) {
        cJSON_Delete(model);
        bad_request(req, rid, "model", "you must provide a model parameter");
        return;
    }
    if (!printable(model->valuestring)) {
        cJSON_Delete(model);
        bad_request(req, rid, "model", "the model parameter must not contain control characters");
        return;
    }
    snprintf(client_model, sizeof(client_model), "%s", model->valuestring);
    char msg[256];
    if (!v.has_main || (array && r->body[v.main.vstart] != '[')) {
        cJSON_Delete(model);
        snprintf(msg, sizeof(msg), "'%s' is a required property%s", need,
                 array ? " and must be an array" : "");
        bad_request(req, rid, need, msg);
        return;
    }
    const char *st = r->body + v.stream.vstart;
    int stream = v.has_stream && *st == 't';
    if (v.has_stream && *st != 't' && *st != 'f' && *st != 'n') {
        cJSON_Delete(model);
        bad_request(req, rid, "stream", "'stream' must be a boolean");
        return;
    }
    /* the members llmux reads whole are small: parsed on their own */
    cJSON *so = v.has_stream_options ? parse_member(r->body, &v.stream_options) : NULL;
    cJSON *prefs_root = v.has_models || v.has_provider ? cJSON_CreateObject() : NULL;
    if (prefs_root && v.has_models)
        cJSON_AddItemToObject(prefs_root, "models", parse_member(r->body, &v.models));
    if (prefs_root && v.has_provider)
        cJSON_AddItemToObject(prefs_root, "provider", parse_member(r->body, &v.provider));
    struct route_prefs prefs;
    const char *why = prefs_root || !(v.has_models || v.has_provider)
                          ? read_prefs(prefs_root, &prefs)
                          : "out of memory";
    if (why) {
        cJSON_Delete(model);
        cJSON_Delete(so);
        cJSON_Delete(prefs_root);
        bad_request(req, rid, strncmp(why, "'models'", 8) == 0 ? "models" : "provider", why);
        return;
    }
    struct canon_request creq;
    memset(&creq, 0, sizeof(creq));
    creq.endpoint = ep;
    creq.body = r->body;
    creq.body_len = r->body_len;
    creq.stream = ep != API_EMBEDDINGS && stream && !count_tokens;
    creq.include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    creq.codec = codec;
    cJSON_Delete(so);
    /* OpenRouter's "usage": {"include": true}: the usage chunk (with the cost) for a stream */
    int ask_usage = 0;
    if (v.has_usage && !codec) {
        cJSON *u = parse_member(r->body, &v.usage);
        int include = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(u, "include"));
        cJSON_Delete(u);
        ask_usage = include && creq.stream && !v.has_stream_options;
        creq.include_usage |= include && creq.stream;
    }

    creq.request_id = rid;
    creq.t_recv_ns = t_recv;

    if (key >= 0) { /* the key's models: the one asked for and any fallbacks */
        const struct gateway_key *k = &gw->rt->cfg->keys[key];
        const char *refused = key_allows(k, model->valuestring) ? NULL : model->valuestring;
        for (size_t i = 0; !refused && i < prefs.n_models; i++)
            refused = key_allows(k, prefs.models[i]) ? NULL : prefs.models[i];
        if (refused) {
            snprintf(msg, sizeof(msg), "Key '%.64s' may not use the model '%.100s'.", k->name,
                     refused);
            cJSON_Delete(model);
            cJSON_Delete(prefs_root);
            free(creq.owned);
            api_error(req, rid, 403, "permission_error", "model_not_allowed", "model", msg);
            return;
        }
    }
    struct plan plan;
    char err[512];
    int rc = router_plan(gw->rt->cfg, gw->rt->health, uv_now(gw->loop), model->valuestring,
                         strlen(model->valuestring), &prefs, &plan, err, sizeof(err));
    if (rc == 0 && count_tokens && count_tokens_plan(req, rid, &plan)) {
        cJSON_Delete(model);
        cJSON_Delete(prefs_root);
        return;
    }
    if (rc == 0 && (v.has_models || v.has_provider || (v.has_usage && !codec)))
        rc = strip_prefs(r->body, r->body_len, ask_usage, &creq); /* llmux's own stay here */
    if (rc == 0 && codec) {
        rc = codec_canon(req, codec, &creq, &plan, count_tokens, msg, sizeof(msg));
        if (rc == UV_EINVAL) {
            free(creq.owned);
            cJSON_Delete(model);
            cJSON_Delete(prefs_root);
            /* a codec's reason starts with the member at fault ("input: ..."): its param */
            char param[48] = "";
            size_t n = strcspn(msg, ": ");
            if (msg[n] == ':' && n < sizeof(param))
                snprintf(param, sizeof(param), "%.*s", (int)n, msg);
            bad_request(req, rid, param[0] ? param : NULL,
                        msg[0] ? msg : "the request could not be read");
            return;
        }
    }
    if (rc == 0 && creq.body &&
        json_top_key(creq.body, creq.body_len, "model", &creq.model_start, &creq.model_end) != 0)
        rc = UV_EINVAL;
    if (rc != 0)
        free(creq.owned);
    if (rc == 0) {
        gw->stats.requests++;
        rc = exchange_start(gw, req, &creq, client_model, &plan, key);
        if (rc != 0) {
            free(creq.owned);
            api_error(req, rid, 500, "server_error", NULL, NULL, "out of memory");
        }
    } else if (rc == ROUTER_ENOTFOUND) {
        api_error(req, rid, 404, "invalid_request_error", "model_not_found", "model", err);
    } else if (rc == ROUTER_EUNAVAILABLE) {
        api_error(req, rid, 503, "service_unavailable", "no_enabled_deployment", "model", err);
    } else if (rc == ROUTER_EFILTERED) {
        api_error(req, rid, 400, "invalid_request_error", "no_deployment_matches", "provider",
                  err);
    } else if (rc == UV_ENOMEM) {
        api_error(req, rid, 500, "server_error", NULL, NULL, "out of memory");
    } else {
        bad_request(req, rid, "model", "the model parameter could not be read");
    }
    cJSON_Delete(model);
    cJSON_Delete(prefs_root);
}

static void status(struct gateway *gw, struct server_req *req)
{
    const struct pool_stats *ps = pool_get_stats(gw->pool);
    struct buf b;
    buf_init(&b, 0);
    buf_printf(&b,
               "{\"worker\":%d,\"worker_pid\":%ld,\"config_generation\":%llu,"
               "\"config_loaded_at\":%lld,\"configs_in_use\":%llu,\"draining\":%s,"
               "\"requests\":%llu,\"active\":%llu,\"failovers\":%llu,"
               "\"upstream_connects\":%llu,\"upstream_reuses\":%llu,"
               "\"upstream_tls_handshakes\":{\"full\":%llu,\"resumed\":%llu},\"health\":",
               gw->worker, (long)getpid(), (unsigned long long)gw->rt->generation,
               (long long)gw->rt->loaded_at, (unsigned long long)gw->runtimes, gw->draining ? "true" : "false",
               (unsigned long long)gw->stats.requests,
               (unsigned long long)gw->stats.exchanges_active,
               (unsigned long long)gw->stats.failovers, (unsigned long long)ps->connects,
               (unsigned long long)ps->reuses, (unsigned long long)ps->tls_full,
               (unsigned long long)ps->tls_resumed);
    health_status_json(gw->rt->health, uv_now(gw->loop), &b);
    buf_append_str(&b, ",\"keys\":[");
    const struct config *cfg = gw->rt->cfg;
    for (size_t i = 0; i < cfg->n_keys; i++) { /* names and spend, never the keys */
        const struct gateway_key *k = &cfg->keys[i];
        uint64_t spent = limits_spent_now(gw->rt->key_slots[i], k->budget_period);
        buf_append_str(&b, i ? ",{\"name\":\"" : "{\"name\":\"");
        buf_append_json_str(&b, k->name, strlen(k->name));
        buf_append_str(&b, "\",\"spent_usd\":");
        buf_append_fixed(&b, spent, 12);
        buf_append_str(&b, ",\"budget_usd\":");
        if (k->budget_usd >= 0)
            buf_printf(&b, "%g", k->budget_usd);
        else
            buf_append_str(&b, "null");
        buf_printf(&b, ",\"rpm\":%u,\"tpm\":%u}", k->rpm, k->tpm);
    }
    buf_append_str(&b, "]");
    if (gw->redis) { /* the shared state's connection (never its URL: it may hold a password) */
        const struct redis_stats *rs = redis_stats(gw->redis);
        buf_printf(&b,
                   ",\"redis\":{\"up\":%s,\"commands\":%llu,\"failed\":%llu,\"outages\":%llu,"
                   "\"on_error\":\"%s\",\"rtt_us\":",
                   redis_up(gw->redis) ? "true" : "false", (unsigned long long)rs->commands,
                   (unsigned long long)rs->failed, (unsigned long long)rs->outages,
                   cfg->state.fail_closed ? "closed" : "open");
        hist_json(&rs->rtt_us, &b);
        buf_append_str(&b, "}");
    }
    buf_printf(&b, ",\"trim\":{\"count\":%llu,\"last_us\":%llu,\"max_us\":%llu}",
               (unsigned long long)gw->stats.trims, (unsigned long long)gw->stats.trim_us_last,
               (unsigned long long)gw->stats.trim_us_max);
    buf_append_str(&b, ",\"overhead_us\":");
    hist_json(&gw->stats.overhead_us, &b);
    buf_append_str(&b, "}");
    respond_json(req, 200, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

/* The route of a request (HEAD is served as GET, without the body); *path_known says whether
 * the path exists for another method. */
static const struct route *find_route(const struct server_request *r, int *path_known)
{
    const char *method = strcmp(r->method, "HEAD") == 0 ? "GET" : r->method;
    const struct route *found = NULL;
    *path_known = 0;
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        size_t n = strlen(routes[i].path);
        int prefix = routes[i].path[n - 1] == '/';
        if (prefix ? r->path_len <= n || memcmp(routes[i].path, r->url, n)
                   : n != r->path_len || memcmp(routes[i].path, r->url, n))
            continue;
        *path_known = 1;
        if (strcmp(routes[i].method, method) == 0)
            found = &routes[i];
    }
    return found;
}

/* The request's id: the client's x-request-id when it is short and plain, else a new one. */
static void request_id(struct gateway *gw, struct server_req *req, char rid[80])
{
    const char *given = server_req_header(req, "x-request-id");
    if (given && usable_request_id(given))
        snprintf(rid, 80, "%s", given);
    else
        gateway_request_id(gw, rid);
}

static void unauthorized(struct server_req *req, const char *rid)
{
    api_error(req, rid, 401, "invalid_request_error", "invalid_api_key", NULL,
              "Missing or invalid gateway key: send Authorization: Bearer <key> (or x-api-key)");
}

void api_request_id(void *data, char out[33])
{
    gateway_request_id(data, out);
}

int api_error_body(void *data, const char *url, size_t url_len, int status, const char *message,
                   struct buf *out)
{
    (void)data;
    static const char messages[] = "/v1/messages"; /* and /v1/messages/count_tokens */
    size_t n = sizeof(messages) - 1;
    if (url_len < n || memcmp(url, messages, n) != 0 ||
        (url_len > n && url[n] != '/' && url[n] != '?'))
        return 1;
    return codec_messages.error(status, message, NULL, 0, out);
}

/* The key index authenticate() found in on_head, kept for the handler with the config
 * generation it was found in (a reload in between: found again). */
static uint64_t key_tag(const struct gateway *gw, int key)
{
    return gw->rt->generation << 32 | (uint32_t)(key + 3);
}

static int presented_key(struct gateway *gw, struct server_req *req)
{
    uint64_t tag = server_req_tag(req);
    if (tag && tag >> 32 == (gw->rt->generation & 0xffffffffu))
        return (int)(uint32_t)tag - 3;
    return authenticate(gw->rt->cfg, req);
}

void api_on_head(void *data, struct server_req *req)
{
    struct gateway *gw = data;
    if (gw->rt->cfg->n_keys == 0) /* no gateway keys: nothing to refuse from the head */
        return;
    int path_known;
    const struct route *found = find_route(server_req_request(req), &path_known);
    if (!found || keyless(found))
        return;
    int key = authenticate(gw->rt->cfg, req);
    if (key == -2) {
        char rid[80];
        request_id(gw, req, rid);
        unauthorized(req, rid);
        return;
    }
    server_req_set_tag(req, key_tag(gw, key));
}

/* A CORS preflight from an allowed origin (the server marked it): what the browser may send. */
static void preflight(struct server_req *req, const char *rid)
{
    const struct server_request *r = server_req_request(req);
    if (!r->cors_origin || !server_req_header(req, "access-control-request-method")) {
        api_error(req, rid, 403, "invalid_request_error", "cors_origin_not_allowed", NULL,
                  "This origin may not call llmux from a browser (see \"cors.origins\").");
        return;
    }
    const char *asked = server_req_header(req, "access-control-request-headers");
    const char *allow = asked && strlen(asked) < 1024
                            ? asked
                            : "authorization, content-type, x-request-id";
    struct http_header h[] = {
        {"access-control-allow-methods", 28, "GET, POST, OPTIONS", 18},
        {"access-control-allow-headers", 28, allow, strlen(allow)},
        {"access-control-max-age", 22, "600", 3},
        {"x-request-id", 12, rid, strlen(rid)},
    };
    server_respond(req, 204, h, 4, NULL, 0);
}

void api_handle(void *data, struct server_req *req)
{
    struct gateway *gw = data;
    const struct server_request *r = server_req_request(req);
    char rid[80];
    request_id(gw, req, rid);
    int path_known;
    const struct route *found = find_route(r, &path_known);
    if (!found && path_known && gw->rt->cfg->n_cors_origins && strcmp(r->method, "OPTIONS") == 0) {
        preflight(req, rid);
        return;
    }
    if (!found) {
        char msg[160];
        if (path_known) {
            snprintf(msg, sizeof(msg), "Method %s is not allowed on %.*s", r->method,
                     (int)r->path_len, r->url);
            api_error(req, rid, 405, "invalid_request_error", "method_not_allowed", NULL, msg);
        } else {
            snprintf(msg, sizeof(msg), "Unknown request URL: %s %.*s", r->method,
                     (int)(r->path_len > 100 ? 100 : r->path_len), r->url);
            api_error(req, rid, 404, "invalid_request_error", "unknown_url", NULL, msg);
        }
        return;
    }
    if (strcmp(found->path, "/healthz") == 0) { /* draining: traffic should go elsewhere */
        if (gw->draining)
            respond_json(req, 503, "{\"status\":\"draining\"}", 21);
        else
            respond_json(req, 200, "{\"status\":\"ok\"}", 15);
        return;
    }
    if (strcmp(found->path, "/ui") == 0) {
        dashboard(req);
        return;
    }
    int key = presented_key(gw, req);
    if (key == -2) {
        unauthorized(req, rid);
        return;
    }
    if (found->endpoint < 0 && strcmp(found->path, "/v1/generations") == 0) {
        generations(gw, req);
        return;
    }
    if (found->endpoint < 0 && strcmp(found->path, "/v1/generation") == 0) {
        generation(gw, req, rid);
        return;
    }
    if (found->endpoint < 0 && strcmp(found->path, "/metrics") == 0) {
        static const struct http_header ct[] = {
            {"content-type", 12, "text/plain; version=0.0.4; charset=utf-8", 40}};
        struct buf b;
        buf_init(&b, 0);
        metrics_render(gw, &b);
        server_respond(req, 200, ct, 1, buf_head(&b), buf_size(&b));
        buf_free(&b);
        return;
    }
    if (found->endpoint < 0 && strcmp(found->path, "/v1/status") == 0) {
        status(gw, req);
        return;
    }
    if (found->endpoint < 0 && strcmp(found->path, "/v1/models/") == 0) {
        model_sub(gw, req, rid);
        return;
    }
    if (found->endpoint < 0) {
        list_models(gw, req);
        return;
    }
    const struct client_codec *codec = route_codec(found);
    handle_inference(gw, req, codec ? API_CHAT : (enum api_endpoint)found->endpoint, codec,
                     found->endpoint == ROUTE_COUNT_TOKENS, key, rid);
}
