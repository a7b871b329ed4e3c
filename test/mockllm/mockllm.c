/* mockllm: an OpenAI-compatible upstream imitation built on llmux's own server module, scripted
 * per request so tests can provoke every failure a real provider shows. See README.md here.
 *
 * One struct reply per API request: its parsed script, a uv_timer that paces the response
 * (delay, time to first token, tokens per second), and the server_req while it is valid.
 * A reply is freed in its timer's close callback; client aborts (on_abort) just drop `req`.
 */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uv.h>

#include "llmux/buf.h"
#include "llmux/conn.h"
#include "llmux/server.h"

struct script {
    int delay, ttft, tokens, tps, status, retry_after, fail_every, reset_after, stall_after;
    int chunk_bytes;
    char malformed[8];
};

enum kind { K_CHAT, K_COMPLETIONS };

struct reply {
    uv_timer_t timer;
    struct server_req *req;
    struct script s;
    enum kind kind;
    int stream, include_usage;
    int sent; /* content tokens sent */
    int error_status; /* scripted error, answered after `delay` */
    int phase; /* 0: before head, 1: streaming tokens, 2: done */
    int prompt_tokens;
    char model[128];
    char id[48];
    long long created;
};

static struct server *srv;
static uv_signal_t sig_int, sig_term;
static int quiet;
static char default_script[512];
static uint64_t api_requests, streams_completed, counter;
static struct buf last_request;

static const struct http_header json_ct[] = {{"content-type", 12, "application/json", 16}};

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
        KEY(delay) KEY(ttft) KEY(tokens) KEY(tps) KEY(status) KEY(retry_after) KEY(fail_every)
        KEY(reset_after) KEY(stall_after) KEY(chunk_bytes)
#undef KEY
        if (strcmp(kv, "malformed") == 0) {
            snprintf(s->malformed, sizeof(s->malformed), "%s", v);
            continue;
        }
        snprintf(err, errlen, "mockllm: unknown script key '%s'", kv);
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

static void token_text(struct buf *b, int i, int pad)
{
    buf_printf(b, "w%d ", i);
    for (int k = 0; k < pad; k++)
        buf_append(b, "x", 1);
}

static int pad_of(const struct reply *r)
{
    return r->s.chunk_bytes > 8 ? r->s.chunk_bytes - 8 : 0;
}

static void write_event(struct reply *r, const char *data, size_t len)
{
    uv_buf_t iov[3] = {uv_buf_init("data: ", 6), uv_buf_init((char *)data, (unsigned)len),
                       uv_buf_init("\n\n", 2)};
    server_stream_write(r->req, iov, 3);
}

static void chunk_begin(struct reply *r, struct buf *b)
{
    buf_printf(b, "{\"id\":\"%s\",\"object\":\"%s\",\"created\":%lld,\"model\":\"%s\",", r->id,
               r->kind == K_CHAT ? "chat.completion.chunk" : "text_completion", r->created,
               r->model);
    if (r->kind == K_CHAT)
        buf_append_str(b, "\"system_fingerprint\":\"fp_mock\",");
}

static void usage_json(struct reply *r, struct buf *b)
{
    buf_printf(b, "{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d}",
               r->prompt_tokens, r->sent, r->prompt_tokens + r->sent);
}

static void send_chunk(struct reply *r, const char *delta_or_text, const char *finish, int text)
{
    struct buf b;
    buf_init(&b, 0);
    chunk_begin(r, &b);
    if (r->kind == K_CHAT)
        buf_printf(&b, "\"choices\":[{\"index\":0,\"delta\":%s,\"logprobs\":null,\"finish_reason\":%s}]",
                   delta_or_text, finish);
    else
        buf_printf(&b, "\"choices\":[{\"index\":0,\"text\":\"%s\",\"logprobs\":null,\"finish_reason\":%s}]",
                   delta_or_text, finish);
    (void)text;
    if (r->include_usage)
        buf_append_str(&b, ",\"usage\":null");
    buf_append_str(&b, "}");
    write_event(r, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

static void finish_stream(struct reply *r)
{
    send_chunk(r, r->kind == K_CHAT ? "{}" : "", "\"stop\"", 0);
    if (r->include_usage) {
        struct buf b;
        buf_init(&b, 0);
        chunk_begin(r, &b);
        buf_append_str(&b, "\"choices\":[],\"usage\":");
        usage_json(r, &b);
        buf_append_str(&b, "}");
        write_event(r, buf_head(&b), buf_size(&b));
        buf_free(&b);
    }
    write_event(r, "[DONE]", 6);
    streams_completed++;
    struct server_req *req = r->req;
    r->req = NULL;
    server_stream_end(req);
    reply_free(r);
}

static void on_tick(uv_timer_t *t);
static void respond_error(struct server_req *req, int status, int retry_after);

static void respond_full(struct reply *r)
{
    struct buf b;
    buf_init(&b, 0);
    if (strcmp(r->s.malformed, "json") == 0) {
        buf_append_str(&b, "{\"id\":\"broken\",\"choices\":[");
    } else {
        struct buf text;
        buf_init(&text, 0);
        for (int i = 0; i < r->s.tokens; i++)
            token_text(&text, i, pad_of(r));
        r->sent = r->s.tokens;
        if (r->kind == K_CHAT)
            buf_printf(&b,
                       "{\"id\":\"%s\",\"object\":\"chat.completion\",\"created\":%lld,\"model\":\"%s\","
                       "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"%.*s\","
                       "\"refusal\":null},\"logprobs\":null,\"finish_reason\":\"stop\"}],\"usage\":",
                       r->id, r->created, r->model, (int)buf_size(&text), buf_head(&text));
        else
            buf_printf(&b,
                       "{\"id\":\"%s\",\"object\":\"text_completion\",\"created\":%lld,\"model\":\"%s\","
                       "\"choices\":[{\"index\":0,\"text\":\"%.*s\",\"logprobs\":null,"
                       "\"finish_reason\":\"stop\"}],\"usage\":",
                       r->id, r->created, r->model, (int)buf_size(&text), buf_head(&text));
        usage_json(r, &b);
        buf_append_str(&b, r->kind == K_CHAT ? ",\"system_fingerprint\":\"fp_mock\"}" : "}");
        buf_free(&text);
    }
    struct server_req *req = r->req;
    r->req = NULL;
    server_respond(req, 200, json_ct, 1, buf_head(&b), buf_size(&b));
    buf_free(&b);
    reply_free(r);
}

/* Advance the reply one step; re-arms the timer for the next one. */
static void step(struct reply *r)
{
    if (!r->req)
        return;
    if (r->phase == 0) {
        if (r->error_status) {
            struct server_req *req = r->req;
            r->req = NULL;
            respond_error(req, r->error_status, r->s.retry_after);
            reply_free(r);
            return;
        }
        if (r->s.reset_after == 0 && r->s.reset_after != -1) {
            struct server_req *req = r->req;
            r->req = NULL;
            server_req_abort(req, 1);
            reply_free(r);
            return;
        }
        if (!r->stream) {
            if (r->s.stall_after == 0)
                return; /* never answer */
            respond_full(r);
            return;
        }
        static const struct http_header h[] = {{"content-type", 12, "text/event-stream", 17},
                                               {"cache-control", 13, "no-cache", 8}};
        server_stream_start(r->req, 200, h, 2);
        r->phase = 1;
        if (strcmp(r->s.malformed, "sse") == 0) {
            uv_buf_t b = uv_buf_init("this is not an event stream\r\n{\"garbage\":", 41);
            server_stream_write(r->req, &b, 1);
            struct server_req *req = r->req;
            r->req = NULL;
            server_req_abort(req, 0);
            reply_free(r);
            return;
        }
        send_chunk(r, r->kind == K_CHAT ? "{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null}" : "",
                   "null", 0);
        if (r->kind == K_COMPLETIONS && 0)
            return;
        uv_timer_start(&r->timer, on_tick, (uint64_t)r->s.ttft, 0);
        return;
    }
    if (r->sent == r->s.stall_after)
        return; /* stall: keep the connection open, send nothing */
    if (r->sent == r->s.reset_after) {
        struct server_req *req = r->req;
        r->req = NULL;
        server_req_abort(req, 1);
        reply_free(r);
        return;
    }
    if (r->sent >= r->s.tokens) {
        finish_stream(r);
        return;
    }
    if (strcmp(r->s.malformed, "json") == 0 && r->sent == 1) {
        write_event(r, "{\"choices\":[{\"delta\":{\"content\":", 32);
        r->sent++;
    } else {
        struct buf text, delta;
        buf_init(&text, 0);
        buf_init(&delta, 0);
        token_text(&text, r->sent, pad_of(r));
        if (r->kind == K_CHAT)
            buf_printf(&delta, "{\"content\":\"%.*s\"}", (int)buf_size(&text), buf_head(&text));
        else
            buf_append(&delta, buf_head(&text), buf_size(&text));
        buf_append(&delta, "", 1);
        send_chunk(r, buf_head(&delta), "null", 1);
        buf_free(&text);
        buf_free(&delta);
        r->sent++;
    }
    if (!r->req)
        return;
    if (r->s.tps > 0) {
        uv_timer_start(&r->timer, on_tick, (uint64_t)(1000 / r->s.tps), 0);
    } else if (server_req_queued(r->req) > 256 * 1024) {
        return; /* resumed by on_drain: a slow client slows us down, like a real server */
    } else {
        uv_timer_start(&r->timer, on_tick, 0, 0);
    }
}

static void on_tick(uv_timer_t *t)
{
    step(t->data);
}

static void on_drain(void *data, struct server_req *req)
{
    struct reply *r = data;
    if (r->phase == 1 && r->s.tps == 0 && !uv_is_active((uv_handle_t *)&r->timer))
        uv_timer_start(&r->timer, on_tick, 0, 0);
}

static void respond_error(struct server_req *req, int status, int retry_after)
{
    const char *type = status == 429   ? "rate_limit_error"
                       : status >= 500 ? "server_error"
                       : status == 401 ? "authentication_error"
                                       : "invalid_request_error";
    const char *code = status == 429 ? "rate_limit_exceeded" : NULL;
    struct buf b;
    buf_init(&b, 0);
    char msg[80];
    snprintf(msg, sizeof(msg), "mockllm scripted status %d", status);
    server_format_error(&b, type, code, msg);
    struct http_header h[2] = {json_ct[0]};
    char ra[16];
    size_t n = 1;
    if (retry_after > 0) {
        snprintf(ra, sizeof(ra), "%d", retry_after);
        h[n++] = (struct http_header){"retry-after", 11, ra, strlen(ra)};
    }
    server_respond(req, status, h, n, buf_head(&b), buf_size(&b));
    buf_free(&b);
}

static void record_last(struct server_req *req, const struct server_request *rq)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "method", rq->method);
    cJSON_AddStringToObject(o, "url", rq->url);
    cJSON *h = cJSON_AddObjectToObject(o, "headers");
    for (size_t i = 0; i < rq->n_headers; i++) {
        char name[128];
        size_t n = rq->headers[i].name_len < 127 ? rq->headers[i].name_len : 127;
        for (size_t k = 0; k < n; k++)
            name[k] = (char)(rq->headers[i].name[k] | ((rq->headers[i].name[k] >= 'A' && rq->headers[i].name[k] <= 'Z') ? 0x20 : 0));
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

static void handle_api(struct server_req *req, const struct server_request *rq, int which)
{
    api_requests++;
    record_last(req, rq);
    cJSON *root = cJSON_ParseWithLength(rq->body, rq->body_len);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(root) || !cJSON_IsString(model)) {
        cJSON_Delete(root);
        server_respond_error(req, 400, "invalid_request_error", NULL,
                             "mockllm: body must be JSON with a model");
        return;
    }
    struct script s = {.tokens = 8, .reset_after = -1, .stall_after = -1};
    char err[160] = "";
    const char *q = strchr(model->valuestring, '?');
    const char *hdr = server_req_header(req, "x-mock");
    int bad = parse_script(default_script, strlen(default_script), &s, err, sizeof(err)) ||
              (q && parse_script(q + 1, strlen(q + 1), &s, err, sizeof(err))) ||
              (hdr && parse_script(hdr, strlen(hdr), &s, err, sizeof(err)));
    if (bad) {
        cJSON_Delete(root);
        server_respond_error(req, 400, "invalid_request_error", NULL, err);
        return;
    }
    counter++;
    int error_status = 0;
    if (s.status && (!s.fail_every || counter % (uint64_t)s.fail_every == 0))
        error_status = s.status;
    else if (s.fail_every && !s.status && counter % (uint64_t)s.fail_every == 0)
        error_status = 503;
    if (error_status && s.delay == 0) {
        cJSON_Delete(root);
        respond_error(req, error_status, s.retry_after);
        return;
    }
    if (which == 2 && !error_status) { /* embeddings (a delayed error goes below) */
        const cJSON *input = cJSON_GetObjectItemCaseSensitive(root, "input");
        int n = cJSON_IsArray(input) ? cJSON_GetArraySize(input) : 1;
        struct buf b;
        buf_init(&b, 0);
        buf_append_str(&b, "{\"object\":\"list\",\"data\":[");
        for (int i = 0; i < n; i++) {
            buf_printf(&b, "%s{\"object\":\"embedding\",\"index\":%d,\"embedding\":[", i ? "," : "", i);
            for (int k = 0; k < 8; k++)
                buf_printf(&b, "%s%.4f", k ? "," : "", (double)((i * 8 + k) % 10) / 10.0);
            buf_append_str(&b, "]}");
        }
        buf_printf(&b, "],\"model\":\"%.*s\",\"usage\":{\"prompt_tokens\":%d,\"total_tokens\":%d}}",
                   (int)(q ? q - model->valuestring : (long)strlen(model->valuestring)),
                   model->valuestring, n * 4, n * 4);
        cJSON_Delete(root);
        server_respond(req, 200, json_ct, 1, buf_head(&b), buf_size(&b));
        buf_free(&b);
        return;
    }
    struct reply *r = calloc(1, sizeof(*r));
    r->s = s;
    r->error_status = error_status;
    r->kind = which == 0 ? K_CHAT : K_COMPLETIONS;
    r->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"));
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    r->include_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "max_tokens");
    if (!cJSON_IsNumber(mt))
        mt = cJSON_GetObjectItemCaseSensitive(root, "max_completion_tokens");
    if (cJSON_IsNumber(mt) && mt->valueint < r->s.tokens) {
        r->s.tokens = mt->valueint;
    }
    snprintf(r->model, sizeof(r->model), "%.*s",
             (int)(q ? q - model->valuestring : (long)strlen(model->valuestring)), model->valuestring);
    r->prompt_tokens = (int)(rq->body_len / 4) + 1;
    snprintf(r->id, sizeof(r->id), "%s-mock-%llu", r->kind == K_CHAT ? "chatcmpl" : "cmpl",
             (unsigned long long)counter);
    r->created = (long long)time(NULL);
    cJSON_Delete(root);
    r->req = req;
    uv_timer_init(uv_default_loop(), &r->timer);
    r->timer.data = r;
    server_req_watch(req, on_abort, on_drain, r);
    uv_timer_start(&r->timer, on_tick, (uint64_t)s.delay + (r->stream ? 0 : (uint64_t)s.ttft), 0);
}

static void handler(void *data, struct server_req *req)
{
    const struct server_request *rq = server_req_request(req);
    char path[128];
    snprintf(path, sizeof(path), "%.*s", (int)(rq->path_len < 127 ? rq->path_len : 127), rq->url);
    int post = strcmp(rq->method, "POST") == 0;
    if (post && strcmp(path, "/v1/chat/completions") == 0)
        handle_api(req, rq, 0);
    else if (post && strcmp(path, "/v1/completions") == 0)
        handle_api(req, rq, 1);
    else if (post && strcmp(path, "/v1/embeddings") == 0)
        handle_api(req, rq, 2);
    else if (strcmp(path, "/v1/models") == 0) {
        static const char body[] = "{\"object\":\"list\",\"data\":[{\"id\":\"mock-model\",\"object\":"
                                   "\"model\",\"created\":1700000000,\"owned_by\":\"mockllm\"}]}";
        server_respond(req, 200, json_ct, 1, body, sizeof(body) - 1);
    } else if (strcmp(path, "/mock/stats") == 0) {
        const struct server_stats *st = server_get_stats(srv);
        char body[256];
        int n = snprintf(body, sizeof(body),
                         "{\"connections\":%llu,\"active_connections\":%llu,\"requests\":%llu,"
                         "\"aborted\":%llu,\"streams_completed\":%llu}",
                         (unsigned long long)st->connections,
                         (unsigned long long)st->active_connections - 1,
                         (unsigned long long)api_requests, (unsigned long long)st->aborted,
                         (unsigned long long)streams_completed);
        server_respond(req, 200, json_ct, 1, body, (size_t)n);
    } else if (strcmp(path, "/mock/last") == 0) {
        server_respond(req, 200, json_ct, 1, buf_size(&last_request) ? buf_head(&last_request) : "{}",
                       buf_size(&last_request) ? buf_size(&last_request) : 2);
    } else if (post && strcmp(path, "/mock/reset") == 0) {
        api_requests = streams_completed = counter = 0;
        server_respond(req, 200, json_ct, 1, "{}", 2);
    } else {
        server_respond_error(req, 404, "invalid_request_error", "unknown_url", "mockllm: unknown path");
    }
    (void)data;
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
            quiet = 1;
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
    struct tls_ctx *tls = NULL;
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
