/* mockllm: an upstream imitation of the OpenAI (chat and Responses), Azure OpenAI, Anthropic and
 * Gemini APIs, built on llmux's own server module and scripted per request so tests can provoke
 * every failure a real provider shows. See README.md here.
 *
 * This file is the core: routing (which wire format, which model), the script, the decision of
 * what to answer, and the pacing of streams; the wire formats live in openai.c, responses.c,
 * anthropic.c and gemini.c (mockllm.h). One struct reply per API request: its script, a uv_timer that paces the
 * response (delay, time to first token, tokens per second), and the server_req while it is
 * valid. A reply is freed in its timer's close callback; client aborts (on_abort) just drop `req`.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "llmux/conn.h"
#include "mockllm.h"

/* Where an API request goes: its wire format, endpoint, and what the path says. */
struct route {
    const struct wire *wire;
    enum api api;
    int stream;          /* -1: the body's "stream" decides */
    int embed_single;    /* Gemini :embedContent */
    char model[128];     /* from the path (Gemini model, Azure deployment); "": the body's */
    const char *refusal; /* the path is wrong in a way the provider answers with 404 */
};

static struct server *srv;
static struct tls_ctx *tls; /* --tls-cert/--tls-key: HTTPS */
static uv_signal_t sig_int, sig_term;
static char default_script[512];
static uint64_t api_requests, streams_completed, counter;
static struct buf last_request;

static int parse_script(const char *text, size_t len, struct script *s, char *err, size_t errlen)
{
    char tmp[512];
    if (len >= sizeof(tmp))
        len = sizeof(tmp) - 1;
    memcpy(tmp, text, len);
    tmp[len] = 0;
    char *save = NULL;
    for (char *kv = strtok_r(tmp, "&", &save); kv; kv = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(kv, '=');
        const char *v = eq ? eq + 1 : "";
        if (eq)
            *eq = 0;
        int n = atoi(v);
#define KEY(name)                                                                                  \
    if (strcmp(kv, #name) == 0) {                                                                  \
        s->name = n;                                                                               \
        continue;                                                                                  \
    }
#define TEXT_KEY(name)                                                                             \
    if (strcmp(kv, #name) == 0) {                                                                  \
        snprintf(s->name, sizeof(s->name), "%s", v);                                               \
        continue;                                                                                  \
    }
        /* clang-format off */
        KEY(delay) KEY(ttft) KEY(tokens) KEY(tps) KEY(status) KEY(retry_after) KEY(fail_every)
        KEY(reset_after) KEY(stall_after) KEY(chunk_bytes) KEY(context_window) KEY(error_after)
        KEY(prefill) KEY(stamp) KEY(thought_signature) KEY(echo_key) KEY(thinking) KEY(cached)
        TEXT_KEY(malformed)
        TEXT_KEY(tool) TEXT_KEY(error_type) TEXT_KEY(after_done)
#undef KEY
#undef TEXT_KEY
        snprintf(err, errlen, "mockllm: unknown script key '%s'", kv);
        /* clang-format on */
        return -1;
    }
    return 0;
}

static void on_reply_closed(uv_handle_t *h)
{
    free(h->data);
}

static void reply_free(struct reply *r)
{
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, on_reply_closed);
}

static void on_abort(void *data, struct server_req *req)
{
    struct reply *r = data;
    r->req = NULL;
    reply_free(r);
}

/* Takes the req out of the reply: the caller ends the response with it. */
static struct server_req *reply_take(struct reply *r)
{
    struct server_req *req = r->req;
    r->req = NULL;
    return req;
}

void mock_sse(struct reply *r, const char *name, const char *data, size_t len)
{
    const char *eol = r->wire->sse_eol;
    uv_buf_t iov[8];
    unsigned n = 0;
    if (name) {
        iov[n++] = uv_buf_init("event: ", 7);
        iov[n++] = uv_buf_init((char *)name, (unsigned)strlen(name));
        iov[n++] = uv_buf_init((char *)eol, (unsigned)strlen(eol));
    }
    iov[n++] = uv_buf_init("data: ", 6);
    iov[n++] = uv_buf_init((char *)data, (unsigned)len);
    iov[n++] = uv_buf_init((char *)eol, (unsigned)strlen(eol));
    iov[n++] = uv_buf_init((char *)eol, (unsigned)strlen(eol));
    server_stream_write(r->req, iov, n);
}

/* The headers of every answer: content type, Anthropic's request-id, retry-after on errors. */
static size_t headers_of(const struct reply *r, const char *type, int error, char ra[16],
                         struct http_header *h)
{
    size_t n = 0;
    h[n++] = (struct http_header){"content-type", 12, type, strlen(type)};
    if (!strcmp(type, "text/event-stream"))
        h[n++] = (struct http_header){"cache-control", 13, "no-cache", 8};
    if (r->request_id[0])
        h[n++] = (struct http_header){"request-id", 10, r->request_id, strlen(r->request_id)};
    if (error && r->s.retry_after > 0) {
        snprintf(ra, 16, "%d", r->s.retry_after);
        h[n++] = (struct http_header){"retry-after", 11, ra, strlen(ra)};
    }
    return n;
}

static void respond(struct reply *r, int status, const char *body, size_t len)
{
    struct http_header h[4];
    char ra[16];
    size_t n = headers_of(r, "application/json", status >= 400, ra, h);
    server_respond(reply_take(r), status, h, n, body, len);
}

/* Answers e in the reply's wire format and frees the reply. */
static void reply_fail(struct reply *r, const struct mock_error *e)
{
    struct buf b;
    buf_init(&b, 0);
    r->wire->error_body(r, e, &b);
    respond(r, e->status, buf_head(&b), buf_size(&b));
    buf_free(&b);
    reply_free(r);
}

static void respond_full(struct reply *r)
{
    struct buf b;
    buf_init(&b, 0);
    if (strcmp(r->s.malformed, "json") == 0)
        buf_append_str(&b, r->wire->garbage_body);
    else
        r->wire->full(r, &b);
    respond(r, 200, buf_head(&b), buf_size(&b));
    buf_free(&b);
    reply_free(r);
}

/* Ends a started stream with a proper chunked end; `completed`: the answer was all sent. */
static void stream_close(struct reply *r, int completed)
{
    if (completed)
        streams_completed++;
    server_stream_end(reply_take(r));
    reply_free(r);
}

static void reset(struct reply *r)
{
    server_req_abort(reply_take(r), 1);
    reply_free(r);
}

static void on_tick(uv_timer_t *t);

/* Before the head: the scripted error, reset or stall, the whole answer, or the stream's head. */
static void step_head(struct reply *r)
{
    if (r->error.status) {
        reply_fail(r, &r->error);
        return;
    }
    if (r->s.reset_after == 0) {
        reset(r);
        return;
    }
    if (!r->stream) {
        if (r->s.stall_after != 0) /* stall_after=0: never answer */
            respond_full(r);
        return;
    }
    struct http_header h[4];
    char ra[16];
    server_stream_start(r->req, 200, h, headers_of(r, "text/event-stream", 0, ra, h));
    r->phase = 1;
    if (strcmp(r->s.malformed, "sse") == 0) {
        uv_buf_t b = uv_buf_init("this is not an event stream\r\n{\"garbage\":", 41);
        server_stream_write(r->req, &b, 1);
        server_req_abort(reply_take(r), 0);
        reply_free(r);
        return;
    }
    r->wire->stream_head(r);
    uv_timer_start(&r->timer, on_tick, (uint64_t)r->s.ttft, 0);
}

/* One stream event: the next piece, or what the script makes of this point of the stream. */
static void step_stream(struct reply *r)
{
    if (r->sent == r->s.stall_after)
        return; /* stall: keep the connection open, send nothing */
    if (r->sent == r->s.reset_after) {
        reset(r);
        return;
    }
    if (r->sent == r->s.error_after) {
        struct mock_error e = {.status = r->wire->stream_error_status,
                               .type = r->s.error_type[0] ? r->s.error_type : NULL};
        snprintf(e.message, sizeof(e.message), "mockllm scripted stream error after %d", r->sent);
        r->wire->stream_error(r, &e);
        stream_close(r, 0);
        return;
    }
    if (r->sent >= r->pieces) {
        r->wire->stream_end(r);
        if (strcmp(r->s.after_done, "stall") == 0) {
            streams_completed++;
            r->phase = 2; /* the end marker went out; the chunked end never does */
        } else if (strcmp(r->s.after_done, "reset") == 0) {
            streams_completed++;
            r->phase = 2;
            uv_timer_start(&r->timer, on_tick, 20, 0); /* reset once the marker is read */
        } else {
            stream_close(r, 1);
        }
        return;
    }
    if (strcmp(r->s.malformed, "json") == 0 && r->sent == 1) {
        uv_buf_t b =
            uv_buf_init((char *)r->wire->garbage_event, (unsigned)strlen(r->wire->garbage_event));
        server_stream_write(r->req, &b, 1);
    } else {
        r->wire->stream_piece(r, r->sent);
    }
    r->sent++;
    if (r->s.tps > 0)
        uv_timer_start(&r->timer, on_tick, (uint64_t)(1000 / r->s.tps), 0);
    else if (server_req_queued(r->req) <= 256 * 1024)
        uv_timer_start(&r->timer, on_tick, 0, 0);
    /* else on_drain resumes: a slow client slows us down, like a real server */
}

static void on_tick(uv_timer_t *t)
{
    struct reply *r = t->data;
    if (!r->req)
        return;
    if (r->phase == 0)
        step_head(r);
    else if (r->phase == 2)
        reset(r); /* after_done=reset */
    else
        step_stream(r);
}

static void on_drain(void *data, struct server_req *req)
{
    struct reply *r = data;
    if (r->phase == 1 && r->s.tps == 0 && !uv_is_active((uv_handle_t *)&r->timer))
        uv_timer_start(&r->timer, on_tick, 0, 0);
}

static void record_last(const struct server_request *rq)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "method", rq->method);
    cJSON_AddStringToObject(o, "url", rq->url);
    cJSON *h = cJSON_AddObjectToObject(o, "headers");
    for (size_t i = 0; i < rq->n_headers; i++) {
        char name[128];
        size_t n = rq->headers[i].name_len < 127 ? rq->headers[i].name_len : 127;
        for (size_t k = 0; k < n; k++) {
            char c = rq->headers[i].name[k];
            name[k] = c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
        }
        name[n] = 0;
        cJSON_AddStringToObject(h, name, rq->headers[i].value);
    }
    cJSON_AddStringToObject(o, "body", rq->body); /* the raw text: tests compare bytes */
    char *text = cJSON_PrintUnformatted(o);
    buf_reset(&last_request);
    buf_append_str(&last_request, text);
    free(text);
    cJSON_Delete(o);
}

static int fail(struct mock_error *e, int status, const char *message)
{
    e->status = status;
    snprintf(e->message, sizeof(e->message), "%s", message);
    return -1;
}

/* Reads an API request into r: model, script, the wire's view of the body, the answer's size,
 * and the scripted error if any. Returns 0, or fills e (answered at once) and returns -1. */
static int intake(struct reply *r, const struct server_request *rq, const struct route *rt,
                  const cJSON *body, struct mock_error *e)
{
    if (rt->refusal)
        return fail(e, 404, rt->refusal);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(body, "model");
    const char *name = rt->model[0] ? rt->model : cJSON_IsString(model) ? model->valuestring : NULL;
    if (!cJSON_IsObject(body))
        return fail(e, 400, "mockllm: body must be a JSON object");
    if (!name)
        return fail(e, 400, "mockllm: body must be JSON with a model");
    const char *q = strchr(name, '?');
    const char *hdr = server_req_header(r->req, "x-mock");
    char err[160] = "";
    if (parse_script(default_script, strlen(default_script), &r->s, err, sizeof(err)) ||
        (q && parse_script(q + 1, strlen(q + 1), &r->s, err, sizeof(err))) ||
        (hdr && parse_script(hdr, strlen(hdr), &r->s, err, sizeof(err))))
        return fail(e, 400, err);
    r->seq = ++counter;
    snprintf(r->model, sizeof(r->model), "%.*s", (int)(q ? q - name : (long)strlen(name)), name);
    r->prompt_tokens = (int)(rq->body_len / 4) + 1;
    r->created = (long long)time(NULL);
    if (r->wire->read(r, body, e))
        return -1;
    if (mock_is_tool(r)) {
        r->pieces =
            r->wire->tool_in_one_piece
                ? 1
                : (int)(strlen(MOCK_TOOL_ARGS) + MOCK_TOOL_FRAGMENT - 1) / MOCK_TOOL_FRAGMENT;
    } else {
        int end = r->s.tokens;
        if (r->max_tokens >= 0 && r->first + r->max_tokens < end) {
            end = r->first + r->max_tokens;
            r->capped = 1;
        }
        r->pieces = end > r->first ? end - r->first : 0;
    }
    if (r->s.context_window > 0 && r->prompt_tokens > r->s.context_window) {
        r->wire->context_error(r, r->prompt_tokens, r->s.context_window, e);
        return -1;
    }
    int nth = !r->s.fail_every || counter % (uint64_t)r->s.fail_every == 0;
    if (nth && (r->s.status || r->s.fail_every)) {
        r->error.status = r->s.status ? r->s.status : 503;
        r->error.type = r->s.error_type[0] ? r->s.error_type : NULL;
        snprintf(r->error.message, sizeof(r->error.message), "mockllm scripted status %d",
                 r->error.status);
        const char *key = NULL;
        for (size_t i = 0; r->s.echo_key && i < rq->n_headers; i++) {
            const char *n = rq->headers[i].name;
            if (strcasecmp(n, "authorization") == 0 || strcasecmp(n, "x-api-key") == 0 ||
                strcasecmp(n, "api-key") == 0 || strcasecmp(n, "x-goog-api-key") == 0)
                key = rq->headers[i].value;
        }
        if (key) /* as some providers do: the key they got, quoted back */
            snprintf(r->error.message, sizeof(r->error.message),
                     "Incorrect API key provided: %.200s", key);
    }
    return 0;
}

static void handle_api(struct server_req *req, const struct server_request *rq,
                       const struct route *rt)
{
    api_requests++;
    record_last(rq);
    struct reply *r = calloc(1, sizeof(*r));
    r->req = req;
    r->wire = rt->wire;
    r->api = rt->api;
    r->embed_single = rt->embed_single;
    r->s = (struct script){
        .tokens = 8, .reset_after = -1, .stall_after = -1, .error_after = -1, .prefill = 1};
    r->max_tokens = -1;
    if (r->wire->request_id)
        snprintf(r->request_id, sizeof(r->request_id), "req_mock%llu",
                 (unsigned long long)api_requests);
    uv_timer_init(uv_default_loop(), &r->timer);
    r->timer.data = r;
    cJSON *body = cJSON_ParseWithLength(rq->body, rq->body_len);
    r->stream = rt->stream >= 0 ? rt->stream
                                : cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(body, "stream"));
    if (r->api == API_EMBEDDINGS)
        r->stream = 0;
    struct mock_error e = {0};
    int rc = intake(r, rq, rt, body, &e);
    cJSON_Delete(body);
    if (rc) {
        reply_fail(r, &e);
        return;
    }
    server_req_watch(req, on_abort, on_drain, r);
    uv_timer_start(&r->timer, on_tick, (uint64_t)r->s.delay + (r->stream ? 0 : (uint64_t)r->s.ttft),
                   0);
}

/* Copies a path segment, undoing %XX escapes (a model id may carry "?script" as %3F...). */
static void copy_segment(char *out, size_t size, const char *p, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len && n + 1 < size; i++) {
        unsigned hex;
        if (p[i] == '%' && i + 2 < len && sscanf(p + i + 1, "%2x", &hex) == 1) {
            out[n++] = (char)hex;
            i += 2;
        } else {
            out[n++] = p[i];
        }
    }
    out[n] = 0;
}

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Gemini: /v1beta/models/{model}:{method} (or /v1/models/...). */
static int route_gemini(const char *path, const char *query, struct route *rt)
{
    const char *m = starts(path, "/v1beta/models/") ? path + 15
                    : starts(path, "/v1/models/")   ? path + 11
                                                    : NULL;
    const char *colon = m ? strrchr(m, ':') : NULL;
    if (!colon)
        return -1;
    *rt = (struct route){.wire = &wire_gemini, .api = API_CHAT, .stream = 0};
    copy_segment(rt->model, sizeof(rt->model), m, (size_t)(colon - m));
    const char *method = colon + 1;
    if (strcmp(method, "streamGenerateContent") == 0) {
        rt->stream = 1;
        if (!strstr(query, "alt=sse"))
            rt->refusal = "mockllm: streamGenerateContent is served as SSE only (add ?alt=sse)";
    } else if (strcmp(method, "batchEmbedContents") == 0 || strcmp(method, "embedContent") == 0) {
        rt->api = API_EMBEDDINGS;
        rt->embed_single = strcmp(method, "embedContent") == 0;
    } else if (strcmp(method, "generateContent") != 0) {
        rt->refusal = "mockllm: unknown Gemini method";
    }
    return 0;
}

/* Azure OpenAI: /openai/deployments/{deployment}/{endpoint}?api-version=... */
static int route_azure(const char *path, const char *query, struct route *rt)
{
    if (!starts(path, "/openai/deployments/"))
        return -1;
    const char *d = path + 20, *slash = strchr(d, '/');
    if (!slash)
        return -1;
    *rt = (struct route){.wire = &wire_openai, .stream = -1};
    copy_segment(rt->model, sizeof(rt->model), d, (size_t)(slash - d));
    if (strcmp(slash, "/chat/completions") == 0)
        rt->api = API_CHAT;
    else if (strcmp(slash, "/completions") == 0)
        rt->api = API_COMPLETIONS;
    else if (strcmp(slash, "/embeddings") == 0)
        rt->api = API_EMBEDDINGS;
    else
        return -1;
    if (!strstr(query, "api-version="))
        rt->refusal = "mockllm: Azure OpenAI paths need the api-version query parameter";
    return 0;
}

/* Which API request this is; -1 when it is none (admin endpoints, unknown paths). */
static int route_of(const char *path, const char *query, struct route *rt)
{
    static const struct {
        const char *path;
        const struct wire *wire;
        enum api api;
    } fixed[] = {{"/v1/chat/completions", &wire_openai, API_CHAT},
                 {"/v1/completions", &wire_openai, API_COMPLETIONS},
                 {"/v1/embeddings", &wire_openai, API_EMBEDDINGS},
                 {"/v1/messages", &wire_anthropic, API_CHAT},
                 {"/v1/responses", &wire_responses, API_CHAT},
                 {"/openai/v1/responses", &wire_responses, API_CHAT}}; /* Azure's v1 API */
    for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++) {
        if (strcmp(path, fixed[i].path) == 0) {
            *rt = (struct route){.wire = fixed[i].wire, .api = fixed[i].api, .stream = -1};
            return 0;
        }
    }
    if (route_gemini(path, query, rt) == 0 || route_azure(path, query, rt) == 0)
        return 0;
    return -1;
}

static void handler(void *data, struct server_req *req)
{
    const struct server_request *rq = server_req_request(req);
    char path[256];
    snprintf(path, sizeof(path), "%.*s", (int)(rq->path_len < 255 ? rq->path_len : 255), rq->url);
    const char *query = rq->url + rq->path_len;
    static const struct http_header json_ct[] = {{"content-type", 12, "application/json", 16}};
    struct route rt;
    if (strcmp(rq->method, "POST") == 0 && strcmp(path, "/v1/messages/count_tokens") == 0) {
        /* Anthropic's token counting: the prompt count every answer reports */
        api_requests++;
        record_last(rq);
        char body[64];
        int n = snprintf(body, sizeof(body), "{\"input_tokens\":%d}", (int)(rq->body_len / 4) + 1);
        server_respond(req, 200, json_ct, 1, body, (size_t)n);
    } else if (strcmp(rq->method, "POST") == 0 && route_of(path, query, &rt) == 0) {
        handle_api(req, rq, &rt);
    } else if (strcmp(path, "/v1/models") == 0) {
        static const char body[] =
            "{\"object\":\"list\",\"data\":[{\"id\":\"mock-model\",\"object\":"
            "\"model\",\"created\":1700000000,\"owned_by\":\"mockllm\"}]}";
        server_respond(req, 200, json_ct, 1, body, sizeof(body) - 1);
    } else if (strcmp(path, "/mock/stats") == 0) {
        const struct server_stats *st = server_get_stats(srv);
        char body[360];
        uint64_t handshakes = 0, resumed = 0, offered = 0;
        if (tls)
            tls_ctx_counts(tls, &handshakes, &resumed, &offered);
        int n = snprintf(body, sizeof(body),
                         "{\"connections\":%llu,\"active_connections\":%llu,\"requests\":%llu,"
                         "\"aborted\":%llu,\"streams_completed\":%llu,\"tls_handshakes\":%llu,"
                         "\"tls_resumed\":%llu,\"tls_offered\":%llu}",
                         (unsigned long long)st->connections,
                         (unsigned long long)st->active_connections - 1,
                         (unsigned long long)api_requests, (unsigned long long)st->aborted,
                         (unsigned long long)streams_completed, (unsigned long long)handshakes,
                         (unsigned long long)resumed, (unsigned long long)offered);
        server_respond(req, 200, json_ct, 1, body, (size_t)n);
    } else if (strcmp(path, "/mock/last") == 0) {
        server_respond(req, 200, json_ct, 1,
                       buf_size(&last_request) ? buf_head(&last_request) : "{}",
                       buf_size(&last_request) ? buf_size(&last_request) : 2);
    } else if (strcmp(rq->method, "POST") == 0 && strcmp(path, "/mock/reset") == 0) {
        api_requests = streams_completed = counter = 0;
        server_respond(req, 200, json_ct, 1, "{}", 2);
    } else {
        server_respond_error(req, 404, "invalid_request_error", "unknown_url",
                             "mockllm: unknown path");
    }
}

static void on_signal(uv_signal_t *s, int signum)
{
    server_close(srv);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&sig_term, NULL);
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0", *cert = NULL, *key = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc)
            listen = argv[++i];
        else if (strcmp(argv[i], "--tls-cert") == 0 && i + 1 < argc)
            cert = argv[++i];
        else if (strcmp(argv[i], "--tls-key") == 0 && i + 1 < argc)
            key = argv[++i];
        else if (strcmp(argv[i], "--script") == 0 && i + 1 < argc)
            snprintf(default_script, sizeof(default_script), "%s", argv[++i]);
        else if (strcmp(argv[i], "--quiet") == 0)
            ; /* mockllm prints only its listening line */
        else {
            fprintf(stderr, "usage: mockllm --listen HOST:PORT [--tls-cert F --tls-key F] "
                            "[--script 'k=v&...'] [--quiet]\n");
            return 2;
        }
    }
    struct script check = {0};
    char err[160];
    if (parse_script(default_script, strlen(default_script), &check, err, sizeof(err))) {
        fprintf(stderr, "%s\n", err);
        return 2;
    }
    char host[64];
    const char *colon = strrchr(listen, ':');
    if (!colon) {
        fprintf(stderr, "mockllm: --listen wants HOST:PORT\n");
        return 2;
    }
    snprintf(host, sizeof(host), "%.*s", (int)(colon - listen), listen);
    signal(SIGPIPE, SIG_IGN);
    uv_loop_t *loop = uv_default_loop();
    if (cert && key && tls_ctx_server(cert, key, &tls, err, sizeof(err)) != 0) {
        fprintf(stderr, "mockllm: %s\n", err);
        return 1;
    }
    buf_init(&last_request, 0);
    struct server_opts o = {.tls = tls, .max_body_bytes = 64 * 1024 * 1024};
    int rc = server_listen(loop, host, (uint16_t)atoi(colon + 1), &o, handler, NULL, &srv);
    if (rc) {
        fprintf(stderr, "mockllm: cannot listen on %s: %s\n", listen, uv_strerror(rc));
        return 1;
    }
    printf("mockllm listening on %s:%u\n", host, server_port(srv));
    fflush(stdout);
    uv_signal_init(loop, &sig_int);
    uv_signal_init(loop, &sig_term);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_run(loop, UV_RUN_DEFAULT);
    buf_free(&last_request);
    tls_ctx_free(tls);
    uv_loop_close(loop);
    return 0;
}
