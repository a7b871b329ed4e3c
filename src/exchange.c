/* exchange: the state machine that serves one client request over an ordered plan of
 * deployments.
 *
 *   EX_PLANNED -> EX_ATTEMPTING -> EX_RELAYING -> EX_DONE
 *                    ^    |             |
 *                    +----+ (failure    +-> EX_DONE (honest error end after commit)
 *                     before commit: next deployment)
 *
 * One attempt runs at a time, with its own sub-state (enum at_state). Two timers: `deadline`
 * (the total deadline of the exchange) and `phase` (connect, then first byte, then idle between
 * events or body reads). Every failure of an attempt goes to exchange_next() with a failure
 * class; it decides, in one condition, whether another deployment is tried.
 *
 * Commit: the first byte sent to the client. Lifecycle frames without content (the role-only
 * first chunk) are held back until real content arrives, so a provider that dies after its
 * preamble is replaced invisibly. After commit a failure ends the stream honestly: a final
 * chunk with finish_reason "error" and an `error` object, a clean chunked end, and no [DONE].
 *
 * Lifetime: the exchange is created by exchange_start() and freed in the close callback of its
 * last timer, after exchange_end(). The server_req is borrowed until the response ends or the
 * client goes away (on_abort), whichever comes first; `req` is NULL afterwards. An upstream is
 * owned while `up` is set; its on_done or upstream_cancel() ends that.
 */
#include "llmux/exchange.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "llmux/buf.h"
#include "llmux/errors.h"
#include "llmux/sse.h"
#include "llmux/upstream.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define HIGH_WATER (256 * 1024)     /* client bytes queued before we stop reading upstream */
#define MAX_BODY (32 * 1024 * 1024) /* non-stream upstream response */
#define MAX_ERROR_BODY (64 * 1024)

enum ex_state {
    EX_PLANNED,    /* plan built, no attempt yet */
    EX_ATTEMPTING, /* an attempt is running; nothing sent to the client */
    EX_RELAYING,   /* committed: the client has the head; events flow */
    EX_DONE,       /* answered (or client gone); waiting for timers to close */
};

enum at_state {
    AT_NONE,
    AT_CONNECTING,            /* dns, tcp, tls (or a pooled connection) */
    AT_WAITING_HEAD,          /* request written; waiting for the response head */
    AT_WAITING_FIRST_EVENT,   /* 2xx stream head received; no content event yet */
    AT_STREAMING,             /* content events flowing to the client */
    AT_READING_BODY,          /* 2xx non-stream body */
    AT_READING_ERROR,         /* non-2xx body */
};

static const char *const ex_state_names[] = {"PLANNED", "ATTEMPTING", "RELAYING", "DONE"};
static const char *const at_state_names[] = {"NONE", "CONNECTING", "WAITING_HEAD",
                                             "WAITING_FIRST_EVENT", "STREAMING", "READING_BODY",
                                             "READING_ERROR"};

/* Failure classes of an attempt (nginx's NGX_HTTP_UPSTREAM_FT_* idea). */
enum failure {
    FT_CONNECT,    /* dns, tcp or tls failure */
    FT_TIMEOUT,    /* connect, first byte or idle timer */
    FT_RESET,      /* connection reset or closed early */
    FT_STATUS,     /* retryable HTTP status */
    FT_MALFORMED,  /* response we cannot use */
    FT_PROVIDER,   /* in-band error event from the provider */
    FT_CLIENT,     /* non-retryable status caused by the request: passed through */
};

struct attempt_record {
    const struct provider *provider;
    const char *model;
    size_t model_len;
    int status; /* upstream HTTP status, 0 when none */
    char reason[160];
    uint64_t ms;
};

struct exchange {
    struct gateway *gw;
    struct config *cfg;
    struct server_req *req;
    struct canon_request creq;
    char request_id[80];
    char client_model[160];
    char direct_model[256]; /* a PROVIDER/MODEL id, copied out of the request body */
    struct plan plan;
    enum ex_state state;
    enum at_state at;
    size_t next_entry;
    const struct plan_entry *entry; /* deployment of the current attempt */
    struct upstream *up;
    struct upstream_request ureq;
    int up_status;
    char up_content_type[64];
    char retry_after[16];
    struct sse_decoder sse;
    int sse_active;
    int in_feed;          /* inside sse_decoder_feed(): the decoder must outlive the call */
    int sse_free_pending; /* free the decoder when the feed returns */
    struct buf body; /* non-stream or error body of the current attempt */
    struct buf held; /* events held back before commit */
    int saw_done;
    int read_paused;
    char resp_id[96];
    char resp_model[128];
    long long created;
    struct usage usage;
    struct attempt_record rec[PLAN_MAX];
    size_t n_rec;
    uv_timer_t deadline;
    uv_timer_t phase;
    uv_timer_t ping; /* keeps a slow-starting stream alive before commit */
    int head_sent;   /* 200 and SSE headers sent by a ping, before any content */
    int handles;
    uint64_t t_start, t_attempt, t_first_byte;
    uint64_t bytes_out;
    int status;          /* status sent to the client */
    const char *outcome; /* "ok", "error", "client_closed", "truncated" */
    char end_reason[200];
};

static void exchange_next(struct exchange *ex, enum failure ft, int status, const char *detail);
static void end_stream_with_error(struct exchange *ex, int code, const char *message);
static void exchange_end(struct exchange *ex);
static int on_event(void *data, const struct sse_event *ev);

static int debug_enabled = -1;

static void set_state(struct exchange *ex, enum ex_state s)
{
    if (debug_enabled < 0)
        debug_enabled = getenv("LLMUX_DEBUG") != NULL;
    if (debug_enabled)
        fprintf(stderr, "[%s] exchange %s -> %s\n", ex->request_id, ex_state_names[ex->state],
                ex_state_names[s]);
    ex->state = s;
}

static void set_at(struct exchange *ex, enum at_state s)
{
    if (debug_enabled > 0)
        fprintf(stderr, "[%s] attempt %s -> %s\n", ex->request_id, at_state_names[ex->at],
                at_state_names[s]);
    ex->at = s;
}

static uint64_t now_ms(struct exchange *ex)
{
    return uv_now(ex->gw->loop);
}

/* ---- timers ---- */

static void on_phase_timeout(uv_timer_t *t)
{
    struct exchange *ex = container_of(t, struct exchange, phase);
    const char *what = ex->at == AT_CONNECTING      ? "connect timeout"
                       : ex->at == AT_WAITING_HEAD || ex->at == AT_WAITING_FIRST_EVENT
                           ? "first byte timeout"
                           : "idle timeout (stream stalled)";
    char detail[96];
    uint32_t ms = ex->at == AT_CONNECTING ? ex->plan.timeouts.connect_ms
                  : ex->at == AT_WAITING_HEAD || ex->at == AT_WAITING_FIRST_EVENT
                      ? ex->plan.timeouts.first_byte_ms
                      : ex->plan.timeouts.idle_ms;
    snprintf(detail, sizeof(detail), "%s after %u ms", what, ms);
    exchange_next(ex, FT_TIMEOUT, 0, detail);
}

static void arm_phase(struct exchange *ex, uint32_t ms)
{
    uv_timer_start(&ex->phase, on_phase_timeout, ms, 0);
}

/* ---- responses to the client ---- */

/* Headers every answer carries: request id and which deployment served. */
static size_t common_headers(struct exchange *ex, struct http_header *h, char *attempts,
                             size_t attempts_size)
{
    size_t n = 0;
    h[n++] = (struct http_header){"x-request-id", 12, ex->request_id, strlen(ex->request_id)};
    snprintf(attempts, attempts_size, "%zu", ex->n_rec);
    h[n++] = (struct http_header){"x-llmux-attempts", 16, attempts, strlen(attempts)};
    if (ex->entry && ex->status < 400) {
        const char *pn = ex->entry->provider->name;
        h[n++] = (struct http_header){"x-llmux-provider", 16, pn, strlen(pn)};
        h[n++] = (struct http_header){"x-llmux-model", 13, ex->entry->model, ex->entry->model_len};
    }
    return n;
}

/* A whole JSON answer (before commit). An error also says the client should not retry on top
 * of our own failover. */
static void respond_json(struct exchange *ex, int status, const char *body, size_t len, int error)
{
    struct http_header h[8];
    char attempts[16];
    ex->status = status;
    size_t n = common_headers(ex, h, attempts, sizeof(attempts));
    h[n++] = (struct http_header){"content-type", 12, "application/json", 16};
    if (error)
        h[n++] = (struct http_header){"x-should-retry", 14, "false", 5};
    if (error && ex->retry_after[0] && (status == 429 || status == 503))
        h[n++] = (struct http_header){"retry-after", 11, ex->retry_after, strlen(ex->retry_after)};
    ex->bytes_out += len;
    struct server_req *req = ex->req;
    ex->req = NULL;
    server_respond(req, status, h, n, body, len);
}

/* An error answer in OpenAI's shape, before commit. */
static void respond_error(struct exchange *ex, int status, const char *type, const char *code,
                          const char *message)
{
    if (!ex->req)
        return;
    if (ex->head_sent) { /* pings went out: the error can only go in-band now */
        end_stream_with_error(ex, status, message);
        ex->outcome = "error";
        return;
    }
    struct buf b;
    buf_init(&b, 0);
    server_format_error(&b, type, code, message);
    respond_json(ex, status, buf_head(&b), buf_size(&b), 1);
    buf_free(&b);
    snprintf(ex->end_reason, sizeof(ex->end_reason), "%.199s", message);
}

/* Write one SSE event (data as given) to the client stream. */
static void client_write_event(struct exchange *ex, const char *data, size_t len)
{
    if (!ex->req)
        return;
    uv_buf_t iov[3] = {
        uv_buf_init("data: ", 6),
        uv_buf_init((char *)data, (unsigned)len),
        uv_buf_init("\n\n", 2),
    };
    ex->bytes_out += len + 8;
    server_stream_write(ex->req, iov, 3);
    if (ex->req && ex->up && !ex->read_paused && server_req_queued(ex->req) > HIGH_WATER) {
        ex->read_paused = 1;
        upstream_read_stop(ex->up);
    }
}

/* The head of a stream response (at commit, or earlier for keep-alive pings). */
static void send_stream_head(struct exchange *ex)
{
    struct http_header h[8];
    char attempts[16];
    ex->status = 200;
    size_t n = common_headers(ex, h, attempts, sizeof(attempts));
    h[n++] = (struct http_header){"content-type", 12, "text/event-stream", 17};
    h[n++] = (struct http_header){"cache-control", 13, "no-cache", 8};
    ex->head_sent = 1;
    server_stream_start(ex->req, 200, h, n);
}

/* Before commit, a stream still waiting for content gets the head once and a comment line
 * per interval: clients and load balancers keep waiting, and failover stays possible. */
static void on_ping(uv_timer_t *t)
{
    struct exchange *ex = container_of(t, struct exchange, ping);
    if (ex->state != EX_ATTEMPTING || !ex->req) {
        uv_timer_stop(t);
        return;
    }
    if (!ex->head_sent) {
        ex->t_first_byte = now_ms(ex);
        send_stream_head(ex);
    }
    if (ex->req) {
        uv_buf_t b = uv_buf_init(": ping\n\n", 8);
        ex->bytes_out += b.len;
        server_stream_write(ex->req, &b, 1);
    }
}

/* Commit a stream: head (unless pings sent it), then every event held back so far. */
static void commit_stream(struct exchange *ex)
{
    uv_timer_stop(&ex->ping);
    if (!ex->t_first_byte)
        ex->t_first_byte = now_ms(ex);
    set_state(ex, EX_RELAYING);
    if (!ex->head_sent)
        send_stream_head(ex);
    if (ex->req && buf_size(&ex->held) > 0) {
        uv_buf_t b = uv_buf_init((char *)buf_head(&ex->held), (unsigned)buf_size(&ex->held));
        ex->bytes_out += b.len;
        server_stream_write(ex->req, &b, 1);
    }
    buf_free(&ex->held);
}

/* After commit, something broke: a final chunk that says so, then a clean end (no [DONE]). */
static void end_stream_with_error(struct exchange *ex, int code, const char *message)
{
    ex->outcome = "truncated";
    snprintf(ex->end_reason, sizeof(ex->end_reason), "%.199s", message);
    if (!ex->req)
        return;
    struct buf b;
    buf_init(&b, 0);
    int chat = ex->creq.endpoint == API_CHAT;
    buf_append_str(&b, "{\"id\":\"");
    if (ex->resp_id[0])
        buf_append_json_str(&b, ex->resp_id, strlen(ex->resp_id));
    else
        buf_printf(&b, "llmux-%s", ex->request_id);
    buf_printf(&b, "\",\"object\":\"%s\",\"created\":%lld,\"model\":\"",
               chat ? "chat.completion.chunk" : "text_completion", ex->created);
    const char *model = ex->resp_model[0] ? ex->resp_model : ex->client_model;
    buf_append_json_str(&b, model, strlen(model));
    buf_printf(&b, "\",\"choices\":[{\"index\":0,%s\"finish_reason\":\"error\"}]",
               chat ? "\"delta\":{}," : "\"text\":\"\",");
    if (ex->usage.known)
        buf_printf(&b,
                   ",\"usage\":{\"prompt_tokens\":%ld,\"completion_tokens\":%ld,"
                   "\"total_tokens\":%ld}",
                   ex->usage.prompt_tokens, ex->usage.completion_tokens, ex->usage.total_tokens);
    buf_printf(&b, ",\"error\":{\"code\":%d,\"message\":\"", code);
    buf_append_json_str(&b, message, strlen(message));
    buf_append_str(&b, "\"}}");
    client_write_event(ex, buf_head(&b), buf_size(&b));
    buf_free(&b);
    if (ex->req) {
        struct server_req *req = ex->req;
        ex->req = NULL;
        server_stream_end(req);
    }
}

/* ---- attempts ---- */

static void attempt_reset(struct exchange *ex)
{
    if (ex->up) {
        upstream_cancel(ex->up);
        ex->up = NULL;
    }
    upstream_request_free(&ex->ureq);
    if (ex->sse_active) {
        if (ex->in_feed) {
            ex->sse_free_pending = 1;
        } else {
            sse_decoder_free(&ex->sse);
            ex->sse_active = 0;
        }
    }
    buf_free(&ex->body);
    buf_free(&ex->held);
    ex->up_status = 0;
    ex->up_content_type[0] = 0;
    ex->saw_done = 0;
    ex->read_paused = 0;
    set_at(ex, AT_NONE);
}

static struct attempt_record *current_record(struct exchange *ex)
{
    return ex->n_rec ? &ex->rec[ex->n_rec - 1] : NULL;
}

static void on_up_sent(void *data)
{
    struct exchange *ex = data;
    set_at(ex, AT_WAITING_HEAD);
    arm_phase(ex, ex->plan.timeouts.first_byte_ms);
}

static void on_up_head(void *data, int status, const struct http_header *h, size_t n)
{
    struct exchange *ex = data;
    ex->up_status = status;
    current_record(ex)->status = status;
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(h[i].name, "content-type") == 0)
            snprintf(ex->up_content_type, sizeof(ex->up_content_type), "%s", h[i].value);
        else if (strcasecmp(h[i].name, "retry-after") == 0)
            snprintf(ex->retry_after, sizeof(ex->retry_after), "%s", h[i].value);
    }
    if (status < 200 || status >= 300) {
        buf_init(&ex->body, MAX_ERROR_BODY);
        set_at(ex, AT_READING_ERROR);
        arm_phase(ex, ex->plan.timeouts.idle_ms);
        return;
    }
    if (ex->creq.stream) {
        if (strncasecmp(ex->up_content_type, "text/event-stream", 17) != 0) {
            exchange_next(ex, FT_MALFORMED, status, "expected an event stream from the provider");
            return;
        }
        sse_decoder_init(&ex->sse, 0, 0, on_event, ex);
        ex->sse_active = 1;
        buf_init(&ex->held, 0);
        set_at(ex, AT_WAITING_FIRST_EVENT);
        return; /* the first-byte timer keeps running until real content */
    }
    buf_init(&ex->body, MAX_BODY);
    set_at(ex, AT_READING_BODY);
    arm_phase(ex, ex->plan.timeouts.idle_ms);
}

/* One complete upstream SSE event. Returns nonzero to stop the decoder. */
static int on_event(void *data, const struct sse_event *ev)
{
    struct exchange *ex = data;
    struct chunk_info ci;
    adapter_chunk_info(ev->data, ev->data_len, &ci);
    if (ci.usage.known)
        ex->usage = ci.usage;
    if (ci.id[0] && !ex->resp_id[0]) {
        snprintf(ex->resp_id, sizeof(ex->resp_id), "%s", ci.id);
        snprintf(ex->resp_model, sizeof(ex->resp_model), "%s", ci.model);
        ex->created = ci.created;
    }
    if (ci.kind == CHUNK_INVALID) {
        exchange_next(ex, FT_MALFORMED, ex->up_status, "the provider sent an event that is not JSON");
        return 1;
    }
    if (ci.kind == CHUNK_ERROR) {
        exchange_next(ex, FT_PROVIDER, ex->up_status, ci.error);
        return 1;
    }
    if (ex->state == EX_ATTEMPTING) {
        if (ci.kind == CHUNK_PREAMBLE) {
            buf_append(&ex->held, "data: ", 6);
            buf_append(&ex->held, ev->data, ev->data_len);
            buf_append(&ex->held, "\n\n", 2);
            return 0;
        }
        commit_stream(ex);
        set_at(ex, AT_STREAMING);
    }
    if (ci.kind == CHUNK_DONE)
        ex->saw_done = 1;
    client_write_event(ex, ev->data, ev->data_len);
    if (!ex->req) {
        exchange_end(ex); /* the client went away while we wrote */
        return 1;
    }
    /* While the client is the slow side, the upstream is not stalled: no idle timer then
     * (the total deadline still bounds the exchange). */
    if (ex->read_paused)
        uv_timer_stop(&ex->phase);
    else
        arm_phase(ex, ex->plan.timeouts.idle_ms);
    return 0;
}

static void on_up_body(void *data, const char *p, size_t n)
{
    struct exchange *ex = data;
    switch (ex->at) {
    case AT_WAITING_FIRST_EVENT:
    case AT_STREAMING: {
        ex->in_feed++;
        int rc = sse_decoder_feed(&ex->sse, p, n);
        ex->in_feed--;
        if (ex->sse_free_pending) {
            ex->sse_free_pending = 0;
            ex->sse_active = 0;
            sse_decoder_free(&ex->sse);
            break;
        }
        if (rc == LLMUX_ESSE)
            exchange_next(ex, FT_MALFORMED, ex->up_status, "the provider's event stream is malformed");
        break;
    }
    case AT_READING_BODY:
    case AT_READING_ERROR:
        if (buf_append(&ex->body, p, n) != 0) {
            if (ex->at == AT_READING_BODY)
                exchange_next(ex, FT_MALFORMED, ex->up_status, "response body too large");
            else
                exchange_next(ex, FT_STATUS, ex->up_status, "error body too large");
            return;
        }
        arm_phase(ex, ex->plan.timeouts.idle_ms);
        break;
    default:
        break;
    }
}

/* A non-retryable upstream answer caused by the request: pass it through to the client. */
static void pass_through_error(struct exchange *ex)
{
    if (ex->head_sent) {
        char msg[96];
        snprintf(msg, sizeof(msg), "the provider refused the request with status %d",
                 ex->up_status);
        end_stream_with_error(ex, ex->up_status, msg);
        ex->outcome = "error";
        return;
    }
    struct usage u;
    if (adapter_response_usage(buf_head(&ex->body), buf_size(&ex->body), &u) != 0 ||
        !strstr(buf_head(&ex->body), "\"error\"")) {
        char msg[96];
        snprintf(msg, sizeof(msg), "the provider refused the request with status %d",
                 ex->up_status);
        respond_error(ex, ex->up_status, "invalid_request_error", NULL, msg);
        return;
    }
    snprintf(ex->end_reason, sizeof(ex->end_reason), "provider refused the request (%d)",
             ex->up_status);
    respond_json(ex, ex->up_status, buf_head(&ex->body), buf_size(&ex->body), 1);
}

static void on_up_done(void *data, int status, const char *detail)
{
    struct exchange *ex = data;
    ex->up = NULL; /* freed by the upstream module after we return */
    if (status < 0) {
        enum failure ft = status == UV_ECONNRESET || status == UV_EOF || status == UV_EPIPE
                              ? FT_RESET
                          : status == LLMUX_EHTTP ? FT_MALFORMED
                                                  : FT_CONNECT;
        exchange_next(ex, ft, ex->up_status, detail);
        return;
    }
    switch (ex->at) {
    case AT_READING_ERROR:
        if (adapter_status_retryable(ex->up_status)) {
            char msg[64];
            snprintf(msg, sizeof(msg), "status %d", ex->up_status);
            exchange_next(ex, FT_STATUS, ex->up_status, msg);
        } else {
            exchange_next(ex, FT_CLIENT, ex->up_status, "request refused by the provider");
        }
        return;
    case AT_READING_BODY: {
        if (adapter_response_usage(buf_head(&ex->body), buf_size(&ex->body), &ex->usage) != 0) {
            exchange_next(ex, FT_MALFORMED, ex->up_status, "the provider's response is not JSON");
            return;
        }
        ex->t_first_byte = now_ms(ex);
        set_state(ex, EX_RELAYING);
        respond_json(ex, ex->up_status, buf_head(&ex->body), buf_size(&ex->body), 0);
        ex->outcome = "ok";
        exchange_end(ex);
        return;
    }
    case AT_WAITING_FIRST_EVENT:
    case AT_STREAMING:
        if (sse_decoder_finish(&ex->sse) == 0 && ex->saw_done) {
            if (ex->state == EX_ATTEMPTING) /* a stream without content: still an answer */
                commit_stream(ex);
            if (ex->req) {
                struct server_req *req = ex->req;
                ex->req = NULL;
                server_stream_end(req);
            }
            ex->outcome = "ok";
            exchange_end(ex);
            return;
        }
        exchange_next(ex, FT_RESET, ex->up_status,
                      ex->state == EX_ATTEMPTING ? "the stream ended before its first event"
                                                 : "the stream ended without [DONE]");
        return;
    default:
        exchange_next(ex, FT_MALFORMED, ex->up_status, "unexpected end of the response");
        return;
    }
}

static const struct upstream_cbs up_cbs = {
    .on_sent = on_up_sent,
    .on_head = on_up_head,
    .on_body = on_up_body,
    .on_done = on_up_done,
};

static void respond_all_failed(struct exchange *ex)
{
    char msg[1024];
    size_t used = (size_t)snprintf(msg, sizeof(msg), "all %zu deployment%s failed", ex->n_rec,
                                   ex->n_rec == 1 ? "" : "s");
    for (size_t i = 0; i < ex->n_rec && used < sizeof(msg); i++) {
        const struct attempt_record *r = &ex->rec[i];
        used += (size_t)snprintf(msg + used, sizeof(msg) - used, "%s %s (%.*s): %s",
                                 i ? ";" : ":", r->provider->name, (int)r->model_len, r->model,
                                 r->reason);
    }
    ex->outcome = "error";
    respond_error(ex, 502, "upstream_error", "all_deployments_failed", msg);
}

/* Start the next deployment of the plan, or answer that all failed. */
static void attempt_next(struct exchange *ex)
{
    while (ex->next_entry < ex->plan.n) {
        const struct plan_entry *e = &ex->plan.entries[ex->next_entry++];
        ex->entry = e;
        struct attempt_record *r = &ex->rec[ex->n_rec++];
        memset(r, 0, sizeof(*r));
        r->provider = e->provider;
        r->model = e->model;
        r->model_len = e->model_len;
        ex->t_attempt = now_ms(ex);
        if (ex->n_rec > 1)
            ex->gw->stats.failovers++;
        struct origin *o = gateway_origin(ex->gw, e->provider);
        int rc = o ? adapter_encode(e->provider, e->model, e->model_len, &ex->creq, &ex->ureq)
                   : UV_EINVAL;
        if (rc == 0) {
            set_state(ex, EX_ATTEMPTING);
            set_at(ex, AT_CONNECTING);
            arm_phase(ex, ex->plan.timeouts.connect_ms);
            rc = upstream_start(ex->gw->pool, o, ex->ureq.iov, ex->ureq.n, &up_cbs, ex, &ex->up);
            if (rc == 0)
                return;
            ex->up = NULL;
        }
        snprintf(r->reason, sizeof(r->reason), "%s", llmux_strerror(rc));
        attempt_reset(ex);
    }
    respond_all_failed(ex);
    exchange_end(ex);
}

/* Every failure of an attempt comes here. Before commit: next deployment while there is one
 * and the deadline allows; a failure caused by the request itself is passed to the client.
 * After commit: end the stream honestly. */
static void exchange_next(struct exchange *ex, enum failure ft, int status, const char *detail)
{
    if (ex->state == EX_DONE)
        return;
    struct attempt_record *r = current_record(ex);
    if (r) {
        snprintf(r->reason, sizeof(r->reason), "%s", detail);
        r->ms = now_ms(ex) - ex->t_attempt;
        if (status)
            r->status = status;
    }
    if (ft == FT_CLIENT && ex->state == EX_ATTEMPTING) {
        ex->outcome = "error";
        pass_through_error(ex);
        exchange_end(ex);
        return;
    }
    if (ex->state == EX_RELAYING) {
        end_stream_with_error(ex, 502, detail);
        exchange_end(ex);
        return;
    }
    attempt_reset(ex);
    if (!ex->req) {
        exchange_end(ex);
        return;
    }
    attempt_next(ex);
}

static void on_deadline(uv_timer_t *t)
{
    struct exchange *ex = container_of(t, struct exchange, deadline);
    char msg[96];
    snprintf(msg, sizeof(msg), "the request exceeded its total deadline of %u ms",
             ex->plan.timeouts.total_ms);
    struct attempt_record *r = current_record(ex);
    if (r && !r->reason[0]) {
        snprintf(r->reason, sizeof(r->reason), "total deadline");
        r->ms = now_ms(ex) - ex->t_attempt;
    }
    if (ex->state == EX_RELAYING) {
        end_stream_with_error(ex, 504, msg);
    } else {
        ex->outcome = "error";
        respond_error(ex, 504, "timeout", "deadline_exceeded", msg);
    }
    exchange_end(ex);
}

/* ---- client side ---- */

static void on_client_abort(void *data, struct server_req *req)
{
    struct exchange *ex = data;
    ex->req = NULL;
    ex->outcome = "client_closed";
    snprintf(ex->end_reason, sizeof(ex->end_reason), "client closed the connection");
    exchange_end(ex);
}

static void on_client_drain(void *data, struct server_req *req)
{
    struct exchange *ex = data;
    if (ex->read_paused && ex->up) {
        ex->read_paused = 0;
        arm_phase(ex, ex->plan.timeouts.idle_ms);
        upstream_read_start(ex->up);
    }
}

/* ---- end and log ---- */

static void log_json_str(FILE *f, const char *s, size_t n)
{
    struct buf b;
    buf_init(&b, 0);
    buf_append_json_str(&b, s, n);
    fputc('"', f);
    fwrite(buf_head(&b), 1, buf_size(&b), f);
    fputc('"', f);
    buf_free(&b);
}

static void exchange_log(struct exchange *ex)
{
    FILE *f = ex->gw->access_log;
    if (!f)
        return;
    uint64_t now = now_ms(ex);
    static const char *const ep[] = {"chat", "completions", "embeddings"};
    fprintf(f, "{\"request_id\":\"%s\",\"endpoint\":\"%s\",\"model\":", ex->request_id,
            ep[ex->creq.endpoint]);
    log_json_str(f, ex->client_model, strlen(ex->client_model));
    const struct plan_entry *e = ex->entry;
    if (e && ex->status < 400) {
        fprintf(f, ",\"provider\":");
        log_json_str(f, e->provider->name, strlen(e->provider->name));
        fprintf(f, ",\"upstream_model\":");
        log_json_str(f, e->model, e->model_len);
    } else {
        fprintf(f, ",\"provider\":null,\"upstream_model\":null");
    }
    fprintf(f, ",\"stream\":%s,\"status\":%d,\"outcome\":\"%s\"", ex->creq.stream ? "true" : "false",
            ex->status, ex->outcome ? ex->outcome : "error");
    if (ex->end_reason[0]) {
        fprintf(f, ",\"reason\":");
        log_json_str(f, ex->end_reason, strlen(ex->end_reason));
    }
    fprintf(f, ",\"attempts\":[");
    for (size_t i = 0; i < ex->n_rec; i++) {
        const struct attempt_record *r = &ex->rec[i];
        fprintf(f, "%s{\"provider\":", i ? "," : "");
        log_json_str(f, r->provider->name, strlen(r->provider->name));
        fprintf(f, ",\"model\":");
        log_json_str(f, r->model, r->model_len);
        fprintf(f, ",\"status\":%d", r->status);
        if (r->reason[0]) {
            fprintf(f, ",\"error\":");
            log_json_str(f, r->reason, strlen(r->reason));
        }
        fprintf(f, ",\"ms\":%" PRIu64 "}", r->ms);
    }
    fprintf(f, "],\"bytes_in\":%zu,\"bytes_out\":%" PRIu64, ex->creq.body_len, ex->bytes_out);
    if (ex->t_first_byte)
        fprintf(f, ",\"ttfb_ms\":%" PRIu64, ex->t_first_byte - ex->t_start);
    else
        fprintf(f, ",\"ttfb_ms\":null");
    fprintf(f, ",\"duration_ms\":%" PRIu64, now - ex->t_start);
    if (ex->usage.known)
        fprintf(f,
                ",\"usage\":{\"prompt_tokens\":%ld,\"completion_tokens\":%ld,\"total_tokens\":%ld}",
                ex->usage.prompt_tokens, ex->usage.completion_tokens, ex->usage.total_tokens);
    fprintf(f, "}\n");
    fflush(f);
}

static void on_timer_closed(uv_handle_t *h)
{
    struct exchange *ex = h->data;
    if (--ex->handles > 0)
        return;
    config_unref(ex->cfg);
    free(ex);
}

static void exchange_end(struct exchange *ex)
{
    if (ex->state == EX_DONE)
        return;
    set_state(ex, EX_DONE);
    attempt_reset(ex);
    if (ex->req) { /* should not happen: every path answers first */
        server_req_abort(ex->req, 0);
        ex->req = NULL;
    }
    ex->gw->stats.exchanges_active--;
    exchange_log(ex);
    uv_close((uv_handle_t *)&ex->deadline, on_timer_closed);
    uv_close((uv_handle_t *)&ex->phase, on_timer_closed);
    uv_close((uv_handle_t *)&ex->ping, on_timer_closed);
}

int exchange_start(struct gateway *gw, struct server_req *req, const struct canon_request *creq,
                   const char *client_model, const struct plan *plan)
{
    struct exchange *ex = calloc(1, sizeof(*ex));
    if (!ex)
        return UV_ENOMEM;
    ex->gw = gw;
    ex->cfg = config_ref(gw->cfg);
    ex->req = req;
    ex->creq = *creq;
    snprintf(ex->request_id, sizeof(ex->request_id), "%s", creq->request_id);
    ex->creq.request_id = ex->request_id;
    snprintf(ex->client_model, sizeof(ex->client_model), "%s", client_model);
    ex->plan = *plan;
    for (size_t i = 0; i < ex->plan.n; i++) {
        struct plan_entry *e = &ex->plan.entries[i];
        if (e->model >= creq->body && e->model < creq->body + creq->body_len) {
            e->model_len = e->model_len < sizeof(ex->direct_model) - 1 ? e->model_len
                                                                         : sizeof(ex->direct_model) - 1;
            memcpy(ex->direct_model, e->model, e->model_len);
            ex->direct_model[e->model_len] = 0;
            e->model = ex->direct_model;
        }
    }
    ex->state = EX_PLANNED;
    ex->t_start = uv_now(gw->loop);
    ex->created = (long long)time(NULL);
    uv_timer_init(gw->loop, &ex->deadline);
    uv_timer_init(gw->loop, &ex->phase);
    uv_timer_init(gw->loop, &ex->ping);
    ex->deadline.data = ex;
    ex->phase.data = ex;
    ex->ping.data = ex;
    ex->handles = 3;
    gw->stats.exchanges_active++;
    server_req_watch(req, on_client_abort, on_client_drain, ex);
    uv_timer_start(&ex->deadline, on_deadline, plan->timeouts.total_ms, 0);
    if (creq->stream && plan->timeouts.ping_ms)
        uv_timer_start(&ex->ping, on_ping, plan->timeouts.ping_ms, plan->timeouts.ping_ms);
    attempt_next(ex);
    return 0;
}
