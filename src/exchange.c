/* exchange: the state machine that serves one client request over an ordered plan of
 * deployments.
 *
 *   EX_ADMITTING -> EX_PLANNED -> EX_ATTEMPTING -> EX_RELAYING -> EX_DONE
 *        | (429/503: src/admission.c)
 *                  ^    |  (hedge)      |   ^
 *                  +----+               |   | (continuation attempt splices into the stream)
 *           (failure before commit:     +---+
 *            next deployment)           +-> EX_DONE (honest error end after commit)
 *
 * Attempts (struct attempt, two slots: primary and hedge) each have a sub-state (enum
 * at_state) and a `phase` timer: connect, then first byte, then idle between events or body
 * reads. The exchange has the total `deadline`, the `ping` keep-alive and the `hedge` timer.
 * Every failure of an attempt goes to attempt_fail() with a failure class; it decides, in one
 * place, whether the exchange tries another deployment, continues a broken stream, passes the
 * provider's answer to the client or ends.
 *
 * Commit: the first content sent to the client. Lifecycle frames without content (the
 * role-only first chunk, Anthropic's message_start and ping) are held back until real content
 * arrives, so a provider that dies after its preamble is replaced invisibly. With a hedge, the
 * first attempt to reach content commits and the other is cancelled (its connection closed).
 * After commit a failure either continues on the next deployment (on_stream_failure
 * "continue": the delivered text goes upstream as an assistant prefix and the new events are
 * rewritten into the same stream) or ends the stream honestly: a final chunk with
 * finish_reason "error" and an `error` object, a clean chunked end, and no [DONE].
 *
 * Admission (src/admission.c) comes first: the gateway key's budget and rate limits, decided
 * at once from shared memory or after a Redis round trip; it refuses (exchange_refuse) or lets
 * the plan start (exchange_go). Only the deadline timer runs while it waits.
 *
 * Lifetime: exchange_start() allocates; the exchange is freed when its last hold goes (the
 * close callbacks of its timers after exchange_end(), and a pending Redis reply). The server_req is borrowed until the response ends or the
 * client goes away (on_client_abort); `req` is NULL afterwards. An attempt owns its upstream
 * while `up` is set; on_up_done or the upstream's cancel ends that. The upstream is reached only
 * through gw->upstream (struct upstream_ops), so test/test_exchange.c can drive it.
 */
#include "exchange_int.h"

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "llmux/cooldown.h"
#include "llmux/errors.h"
#include "llmux/health.h"
#include "llmux/json.h"
#include "llmux/redact.h"
#include "llmux/redis.h"
#include "llmux/upstream.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define HIGH_WATER (256 * 1024)     /* client bytes queued before we stop reading upstream */
#define MAX_BODY (32 * 1024 * 1024) /* non-stream upstream response */
#define MAX_ERROR_BODY (64 * 1024)
#define MAX_DELIVERED (1024 * 1024) /* text kept for a continuation */
#define MAX_HELD (64 * 1024)        /* preamble chunks held back before commit */
#define BACKOFF_BASE_MS 100
#define BACKOFF_MAX_MS 2000
#define DRAIN_MS 1000 /* after a stream's end marker, the wait for the upstream's own end */

static const char *const ex_state_names[] = {"ADMITTING", "PLANNED", "ATTEMPTING", "RELAYING",
                                             "DONE"};
static const char *const at_state_names[] = {
    "IDLE",      "BACKOFF",      "CONNECTING",    "WAITING_HEAD", "WAITING_FIRST_EVENT",
    "STREAMING", "READING_BODY", "READING_ERROR", "DRAINING"};

/* Failure classes of an attempt (nginx's NGX_HTTP_UPSTREAM_FT_* idea). */
enum failure {
    FT_CONNECT,   /* dns, tcp or tls failure */
    FT_TIMEOUT,   /* connect, first byte or idle timer */
    FT_RESET,     /* connection reset or closed early */
    FT_STATUS,    /* retryable HTTP status */
    FT_MALFORMED, /* response we cannot use */
    FT_PROVIDER,  /* in-band error event from the provider */
    FT_CONTEXT,   /* the prompt is over this deployment's context window */
    FT_CLIENT,    /* non-retryable status caused by the request: passed through */
};

static void attempt_fail(struct attempt *a, enum failure ft, const char *detail);
static void stream_succeeded(struct exchange *ex, struct attempt *a);
static void end_stream_with_error(struct exchange *ex, int code, const char *message);
static void exchange_end(struct exchange *ex);
static void start_next(struct exchange *ex, struct attempt *a, int hedge);
/* Off the path of a request to an alias without a cache: never inlined into the hot code. */
#define COLD __attribute__((noinline))
static COLD void cache_keep(struct exchange *ex, const char *body, size_t len);
static COLD void cache_keep_stream(struct exchange *ex);
static int deployment_admit(struct exchange *ex, const struct plan_entry *e);
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

static void set_at(struct attempt *a, enum at_state s)
{
    if (debug_enabled > 0)
        fprintf(stderr, "[%s] attempt %d %s -> %s\n", a->ex->request_id,
                (int)(a - a->ex->at), at_state_names[a->at], at_state_names[s]);
    a->at = s;
}

static uint64_t now_ms(struct exchange *ex)
{
    return uv_now(ex->gw->loop);
}

static struct attempt *other(struct attempt *a)
{
    return a == &a->ex->at[0] ? &a->ex->at[1] : &a->ex->at[0];
}

static struct attempt_record *record(struct attempt *a)
{
    return &a->ex->rec[a->rec];
}

static size_t health_id(const struct attempt *a)
{
    return a->entry->deployment->health_id;
}

static int tracked(const struct attempt *a)
{
    return a->entry && a->entry->deployment;
}

/* Each attempt reports at most one health outcome (success, failure or cancel). */
static void attempt_health(struct attempt *a, int outcome, const struct health_sample *s,
                           const char *why)
{
    if (!a->health_open || !tracked(a))
        return;
    a->health_open = 0;
    struct health *h = a->ex->rt->health;
    uint64_t now = uv_now(a->ex->gw->loop);
    if (outcome > 0)
        health_success(h, health_id(a), now, s);
    else if (outcome < 0)
        health_failure(h, health_id(a), now, a->retry_after_ms, why);
    else
        health_cancel(h, health_id(a), a->probe);
    if (outcome < 0 && a->retry_after_ms) /* the other instances cool it down too */
        cooldown_share(a->ex->gw, a->entry->deployment, a->retry_after_ms);
}

/* ---- timers ---- */

static void on_phase_timeout(uv_timer_t *t)
{
    struct attempt *a = container_of(t, struct attempt, phase);
    const struct timeouts *to = &a->ex->plan.timeouts;
    if (a->at == AT_BACKOFF) {
        set_at(a, AT_IDLE);
        start_next(a->ex, a, 0);
        return;
    }
    char detail[96];
    if (a->at == AT_CONNECTING)
        snprintf(detail, sizeof(detail), "connect timeout after %u ms", to->connect_ms);
    else if (a->at == AT_WAITING_HEAD || a->at == AT_WAITING_FIRST_EVENT)
        snprintf(detail, sizeof(detail), "first byte timeout after %u ms", to->first_byte_ms);
    else
        snprintf(detail, sizeof(detail), "idle timeout (stream stalled) after %u ms",
                 to->idle_ms);
    attempt_fail(a, FT_TIMEOUT, detail);
}

static void arm_phase(struct attempt *a, uint32_t ms)
{
    uv_timer_start(&a->phase, on_phase_timeout, ms, 0);
}

/* ---- responses to the client ---- */

/* "provider/model: why it failed; provider/model: ok" for every attempt so far, in printable
 * ASCII only (a provider's message must not be able to break the header). */
static void tried_header(struct exchange *ex, char *tried, size_t cap)
{
    size_t used = 0;
    for (size_t i = 0; i < ex->n_rec && used + 1 < cap; i++) {
        const struct attempt_record *r = &ex->rec[i];
        const char *why = r->served || !r->reason[0] ? "ok" : r->reason;
        int w = snprintf(tried + used, cap - used, "%s%s/%.*s%s: %.80s", i ? "; " : "",
                         r->provider->name, (int)r->model_len, r->model,
                         r->hedge ? " (hedge)" : "", why);
        used = w < 0 ? used : used + (size_t)w < cap ? used + (size_t)w : cap - 1;
    }
    for (char *c = tried; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
            *c = '?';
}

/* name then ns as milliseconds with three decimals; returns the end. */
static char *put_ms(char *p, const char *name, uint64_t ns)
{
    uint64_t us = ns / 1000;
    while (*name)
        *p++ = *name++;
    char digits[24];
    int n = 0;
    uint64_t ms = us / 1000;
    do
        digits[n++] = (char)('0' + ms % 10);
    while ((ms /= 10) && n < 20);
    while (n)
        *p++ = digits[--n];
    *p++ = '.';
    *p++ = (char)('0' + us / 100 % 10);
    *p++ = (char)('0' + us / 10 % 10);
    *p++ = (char)('0' + us % 10);
    return p;
}

/* Server-Timing (ms, to the microsecond): `overhead` is llmux's own time so far; once an
 * attempt answered, `ttfb` is request received -> its first byte, and for a whole answer
 * `upstream` is its request written -> last byte. */
static void server_timing(struct exchange *ex, char *out)
{
    uint64_t now = uv_hrtime();
    char *p = put_ms(out, "overhead;dur=", ex->busy_ns + (ex->busy_t0 ? now - ex->busy_t0 : 0));
    const struct attempt *a = ex->winner;
    if (a && a->head_ns && ex->creq.t_recv_ns)
        p = put_ms(p, ", ttfb;dur=", a->head_ns - ex->creq.t_recv_ns);
    if (a && a->sent_ns && !ex->creq.stream)
        p = put_ms(p, ", upstream;dur=", now - a->sent_ns);
    *p = 0;
}

/* Headers every answer carries: request id, attempts, and which deployment served. The
 * values point into ex and into `tried`, which must live until the head is written. */
static size_t common_headers(struct exchange *ex, struct http_header *h, char *attempts,
                             size_t attempts_size, char *tried, size_t tried_size)
{
    size_t n = 0;
    server_timing(ex, ex->timing);
    h[n++] = (struct http_header){"server-timing", 13, ex->timing, strlen(ex->timing)};
    h[n++] = (struct http_header){"x-request-id", 12, ex->request_id, strlen(ex->request_id)};
    snprintf(attempts, attempts_size, "%zu", ex->n_rec);
    h[n++] = (struct http_header){"x-llmux-attempts", 16, attempts, strlen(attempts)};
    const struct plan_entry *e = ex->winner ? ex->winner->entry : NULL;
    if (e && ex->status < 400) {
        const char *pn = e->provider->name;
        h[n++] = (struct http_header){"x-llmux-provider", 16, pn, strlen(pn)};
        h[n++] = (struct http_header){"x-llmux-model", 13, e->model, e->model_len};
    }
    if (ex->hedged)
        h[n++] = (struct http_header){"x-llmux-hedged", 14, ex->hedge_won ? "won" : "lost",
                                      ex->hedge_won ? 3 : 4};
    if (ex->n_rec > 1 || (ex->n_rec == 1 && ex->rec[0].reason[0])) {
        tried_header(ex, tried, tried_size);
        h[n++] = (struct http_header){"x-llmux-tried", 13, tried, strlen(tried)};
    }
    if (ex->adm.rpm || ex->adm.tpm) /* the key's limits, as OpenAI writes them */
        n += limits_headers(&ex->adm, 0, h + n, ex->rl_space);
    if (ex->cache) {
        const char *c = cache_result_name(ex->cache);
        h[n++] = (struct http_header){"x-llmux-cache", 13, c, strlen(c)};
    }
    return n;
}

/* A whole JSON answer (before commit). `error`: the client should not retry on top of our own
 * failover (x-should-retry: false); `retry_after` (seconds, 429/503) says when to come back. */
static void respond_json(struct exchange *ex, int status, char *owned, const char *body,
                         size_t len, int error, const char *retry_after)
{
    struct http_header h[20];
    char attempts[16], tried[512];
    ex->status = status;
    size_t n = common_headers(ex, h, attempts, sizeof(attempts), tried, sizeof(tried));
    h[n++] = (struct http_header){"content-type", 12, "application/json", 16};
    if (error)
        h[n++] = (struct http_header){"x-should-retry", 14, "false", 5};
    if (retry_after && retry_after[0] && (status == 429 || status == 503))
        h[n++] = (struct http_header){"retry-after", 11, retry_after, strlen(retry_after)};
    ex->bytes_out += len;
    struct server_req *req = ex->req;
    ex->req = NULL;
    server_respond_owned(req, status, h, n, owned, body, len);
}

/* llmux's own error body: OpenAI's shape, or the client codec's. */
static void format_error(struct exchange *ex, int status, const char *type, const char *code,
                         const char *message, struct buf *b)
{
    if (ex->creq.codec && ex->creq.codec->error)
        ex->creq.codec->error(status, message, NULL, 0, b);
    else
        server_format_error(b, type, code, message);
}

/* An error answer in the client API's shape, before commit. */
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
    format_error(ex, status, type, code, message, &b);
    respond_json(ex, status, NULL, buf_head(&b), buf_size(&b), 1, NULL);
    buf_free(&b);
    snprintf(ex->end_reason, sizeof(ex->end_reason), "%.199s", message);
}

/* Write raw bytes to the client stream, pausing the winner's upstream above the high water. */
static void client_write(struct exchange *ex, const uv_buf_t *iov, unsigned n)
{
    if (!ex->req)
        return;
    for (unsigned i = 0; i < n; i++)
        ex->bytes_out += iov[i].len;
    server_stream_write(ex->req, iov, n);
    struct attempt *w = ex->winner;
    if (ex->req && w && w->up && !w->read_paused && server_req_queued(ex->req) > HIGH_WATER) {
        w->read_paused = 1;
        ex->gw->upstream->read_stop(w->up);
    }
}

static void client_write_event(struct exchange *ex, const char *data, size_t len)
{
    uv_buf_t iov[3] = {
        uv_buf_init("data: ", 6),
        uv_buf_init((char *)data, (unsigned)len),
        uv_buf_init("\n\n", 2),
    };
    client_write(ex, iov, 3);
}

/* The head of a stream response (at commit, or earlier for keep-alive pings). */
static void send_stream_head(struct exchange *ex)
{
    struct http_header h[20];
    char attempts[16], tried[512];
    ex->status = 200;
    size_t n = common_headers(ex, h, attempts, sizeof(attempts), tried, sizeof(tried));
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
    const char *ping = ex->creq.codec ? ex->creq.codec->ping : ": ping\n\n";
    uv_buf_t b = uv_buf_init((char *)ping, (unsigned)strlen(ping));
    client_write(ex, &b, 1);
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
    if (ex->creq.codec) { /* the client API's own honest end instead */
        buf_reset(&b);
        ex->creq.codec->stream_error(ex->cs, code, message, &b);
        uv_buf_t iov = uv_buf_init((char *)buf_head(&b), (unsigned)buf_size(&b));
        client_write(ex, &iov, 1);
    } else {
        client_write_event(ex, buf_head(&b), buf_size(&b));
    }
    buf_free(&b);
    if (ex->req) {
        struct server_req *req = ex->req;
        ex->req = NULL;
        server_stream_end(req);
    }
}

/* ---- attempts ---- */

static void free_decoders(struct attempt *a)
{
    if (a->ast_open)
        a->ast_ad->stream_close(&a->ast);
    if (a->sse_active)
        sse_decoder_free(&a->sse);
    a->ast_open = 0;
    a->sse_active = 0;
}

/* Leave the decoders; returns 1 when the attempt was reset meanwhile (decoders now freed). */
static int feed_leave(struct attempt *a)
{
    if (--a->in_feed > 0 || !a->free_pending)
        return 0;
    a->free_pending = 0;
    free_decoders(a);
    return 1;
}

/* Stop an attempt and free what it holds; the slot becomes idle. Safe inside its callbacks. */
static void attempt_reset(struct attempt *a)
{
    if (a->up) {
        a->ex->gw->upstream->cancel(a->up);
        a->up = NULL;
    }
    uv_timer_stop(&a->phase);
    upstream_request_free(&a->ureq);
    if (a->in_feed) { /* inside the decoder or the adapter: they are freed on return */
        a->free_pending = a->sse_active || a->ast_open;
    } else {
        free_decoders(a);
    }
    buf_free(&a->body);
    buf_free(&a->held);
    a->status = 0;
    a->content_type[0] = 0;
    a->retry_after_ms = 0;
    a->read_paused = 0;
    a->continuation = 0;
    a->content_chunks = 0;
    a->sent_ns = a->head_ns = 0;
    a->health_open = 0;
    a->probe = 0;
    memset(&a->usage, 0, sizeof(a->usage));
    if (a->at != AT_IDLE)
        set_at(a, AT_IDLE);
}

/* The attempt ends without a health outcome (it lost a hedge, or the client left). */
static void attempt_cancel(struct attempt *a, const char *why)
{
    if (a->at == AT_IDLE)
        return;
    if (a->at != AT_BACKOFF) {
        struct attempt_record *r = record(a);
        if (!r->reason[0] && !r->served)
            snprintf(r->reason, sizeof(r->reason), "%s", why);
        r->ms = now_ms(a->ex) - a->t_start;
        attempt_health(a, 0, NULL, NULL);
    }
    attempt_reset(a);
}

static void on_up_sent(void *data)
{
    struct attempt *a = data;
    a->t_sent = now_ms(a->ex);
    a->sent_ns = uv_hrtime();
    set_at(a, AT_WAITING_HEAD);
    arm_phase(a, a->ex->plan.timeouts.first_byte_ms);
}

static uint64_t parse_retry_after(const char *v)
{
    char *end;
    unsigned long s = strtoul(v, &end, 10);
    return end != v && s < 86400 ? (uint64_t)s * 1000 : 0;
}

static void on_up_head_(void *data, int status, const struct http_header *h, size_t n)
{
    struct attempt *a = data;
    struct exchange *ex = a->ex;
    a->status = status;
    a->head_ns = uv_hrtime();
    record(a)->status = status;
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(h[i].name, "content-type") == 0)
            snprintf(a->content_type, sizeof(a->content_type), "%s", h[i].value);
        else if (strcasecmp(h[i].name, "retry-after") == 0)
            a->retry_after_ms = parse_retry_after(h[i].value);
    }
    if (status < 200 || status >= 300) {
        buf_init(&a->body, MAX_ERROR_BODY);
        set_at(a, AT_READING_ERROR);
        arm_phase(a, ex->plan.timeouts.idle_ms);
        return;
    }
    if (a->creq.stream) {
        if (strncasecmp(a->content_type, "text/event-stream", 17) != 0) {
            attempt_fail(a, FT_MALFORMED, "expected an event stream from the provider");
            return;
        }
        memset(&a->ast, 0, sizeof(a->ast));
        a->ast.req = &a->creq;
        a->ast.model = a->entry->model;
        a->ast_ad = a->ad;
        if (a->ad->stream_open(&a->ast) != 0) {
            attempt_fail(a, FT_MALFORMED, "out of memory");
            return;
        }
        a->ast_open = 1;
        sse_decoder_init(&a->sse, 0, 0, on_event, a);
        a->sse_active = 1;
        buf_init(&a->held, 0);
        set_at(a, AT_WAITING_FIRST_EVENT);
        return; /* the first-byte timer keeps running until real content */
    }
    buf_init(&a->body, MAX_BODY);
    set_at(a, AT_READING_BODY);
    arm_phase(a, ex->plan.timeouts.idle_ms);
}

/* The winner is decided: cancel the other attempt, note a won hedge. */
static void set_winner(struct exchange *ex, struct attempt *a)
{
    ex->winner = a;
    record(a)->served = 1;
    uv_timer_stop(&ex->hedge);
    if (ex->hedged && record(a)->hedge) {
        ex->hedge_won = 1;
        ex->gw->health.hedges_won++;
    }
    attempt_cancel(other(a), "cancelled: the other attempt answered first");
}

/* Commit a stream: head (unless pings sent it), then every chunk held back so far. */
static void commit_stream(struct exchange *ex, struct attempt *a)
{
    uv_timer_stop(&ex->ping);
    set_winner(ex, a);
    ex->commit_ns = uv_hrtime();
    if (!ex->t_first_byte)
        ex->t_first_byte = now_ms(ex);
    set_state(ex, EX_RELAYING);
    if (!ex->head_sent)
        send_stream_head(ex);
    if (buf_size(&a->held) > 0) {
        uv_buf_t b = uv_buf_init((char *)buf_head(&a->held), (unsigned)buf_size(&a->held));
        if (a->native)
            ex->creq.codec->observe(ex->cs, b.base, b.len);
        client_write(ex, &b, 1);
    }
    buf_free(&a->held);
}

static void flush_tool_held(struct exchange *ex)
{
    if (buf_size(&ex->tool_held) == 0)
        return;
    uv_buf_t b = uv_buf_init((char *)buf_head(&ex->tool_held), (unsigned)buf_size(&ex->tool_held));
    client_write(ex, &b, 1);
    buf_reset(&ex->tool_held);
    ex->no_continue = 1; /* a completed tool call went out: not continued mid-conversation */
}

static void usage_add(struct usage *to, const struct usage *u)
{
    to->prompt_tokens += u->prompt_tokens;
    to->completion_tokens += u->completion_tokens;
    to->total_tokens += u->total_tokens;
    to->cached_tokens += u->cached_tokens;
}

/* obj[key] = item (takes ownership of item), whether or not obj had that key. */
static void set_member(cJSON *obj, const char *key, cJSON *item)
{
    if (!item)
        return;
    if (cJSON_GetObjectItemCaseSensitive(obj, key))
        cJSON_ReplaceItemInObjectCaseSensitive(obj, key, item);
    else
        cJSON_AddItemToObject(obj, key, item);
}

/* A chunk to the client, its usage (if any) with the request's cost. */
static void write_costed(struct exchange *ex, const char *chunk, size_t len,
                         const struct chunk_info *ci)
{
    if (ci->usage.known && exchange_cost_splice(ex, chunk, len, &ex->cbuf)) {
        client_write_event(ex, buf_head(&ex->cbuf), buf_size(&ex->cbuf));
        buf_reset(&ex->cbuf);
        return;
    }
    client_write_event(ex, chunk, len);
}

/* A continuation's chunk in the committed stream's identity (same id, created and model),
 * its usage grown by what the broken attempts consumed, marked as continued. */
static int write_continued(struct exchange *ex, const char *data, size_t len,
                           const struct chunk_info *ci)
{
    cJSON *root = cJSON_ParseWithLength(data, len);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return LLMUX_EPROTO;
    }
    if (ex->resp_id[0])
        set_member(root, "id", cJSON_CreateString(ex->resp_id));
    set_member(root, "created", cJSON_CreateNumber((double)ex->created));
    if (ex->resp_model[0])
        set_member(root, "model", cJSON_CreateString(ex->resp_model));
    if (ci->usage.known) {
        cJSON *u = cJSON_CreateObject();
        cJSON_AddNumberToObject(u, "prompt_tokens", (double)ex->usage.prompt_tokens);
        cJSON_AddNumberToObject(u, "completion_tokens", (double)ex->usage.completion_tokens);
        cJSON_AddNumberToObject(u, "total_tokens", (double)ex->usage.total_tokens);
        set_member(root, "usage", u);
    }
    cJSON *mark = cJSON_CreateObject();
    cJSON_AddBoolToObject(mark, "continued", 1);
    cJSON_AddStringToObject(mark, "provider", ex->winner->entry->provider->name);
    cJSON_AddItemToObject(root, "llmux", mark);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text)
        return UV_ENOMEM;
    write_costed(ex, text, strlen(text), ci);
    free(text);
    return 0;
}

/* Merge an attempt's reported usage into the exchange's: what broken attempts consumed is
 * added (a broken attempt that reported nothing counts one token per content chunk, and its
 * prompt as the continuation's prompt minus that prefix). */
static void take_usage(struct exchange *ex, const struct usage *u)
{
    ex->usage = *u;
    ex->served_usage = *u;
    if (!ex->continued)
        return;
    struct usage spent = ex->spent;
    if (ex->spent_prompt_unknown) {
        long p = u->prompt_tokens - spent.completion_tokens;
        spent.prompt_tokens += p > 0 ? p : 0;
        spent.total_tokens = spent.prompt_tokens + spent.completion_tokens;
    }
    usage_add(&ex->usage, &spent);
}

/* An SSE event kept to be written later (held preamble, a tool call being completed). */
static void hold_event(struct buf *b, const char *data, size_t len)
{
    buf_append(b, "data: ", 6);
    buf_append(b, data, len);
    buf_append(b, "\n\n", 2);
}

/* A passthrough event whose data (one line) has the usage (its own, or its `response`'s: the
 * Responses API's end events), with the request's cost spliced into it, into ex->cbuf. Returns
 * 1, or 0 (write it as it is). */
static int native_costed(struct exchange *ex, const char *ev, size_t len)
{
    const char *d = memmem(ev, len, "data: ", 6);
    if (!d)
        return 0;
    d += 6;
    const char *nl = memchr(d, '\n', len - (size_t)(d - ev));
    if (!nl || (size_t)(ev + len - nl) != 2) /* one data line, then the event's end */
        return 0;
    size_t vs, ve;
    const char *end = nl;
    if (json_top_key(d, (size_t)(nl - d), "usage", &vs, &ve) != 0 &&
        json_top_key(d, (size_t)(nl - d), "response", &vs, &ve) == 0) {
        end = d + ve;
        d += vs;
    }
    struct buf json;
    buf_init(&json, 0);
    int ok = exchange_cost_splice(ex, d, (size_t)(end - d), &json);
    if (ok) {
        buf_reset(&ex->cbuf);
        buf_append(&ex->cbuf, ev, (size_t)(d - ev));
        buf_append(&ex->cbuf, buf_head(&json), buf_size(&json));
        ok = buf_append(&ex->cbuf, end, (size_t)(ev + len - end)) == 0;
    }
    buf_free(&json);
    return ok;
}

/* A chunk to a client that has a codec: a passthrough event as it is, or a canonical chunk in
 * the client API's events. Returns 0 or a negative code. */
static int codec_write(struct exchange *ex, struct attempt *a, const char *chunk, size_t len,
                       const struct chunk_info *ci)
{
    const struct client_codec *c = ex->creq.codec;
    if (a->native) {
        c->observe(ex->cs, chunk, len);
        uv_buf_t b = uv_buf_init((char *)chunk, (unsigned)len);
        if (ci->finish && ci->usage.known && native_costed(ex, chunk, len))
            b = uv_buf_init((char *)buf_head(&ex->cbuf), (unsigned)buf_size(&ex->cbuf));
        client_write(ex, &b, 1);
        return 0;
    }
    buf_reset(&ex->cbuf);
    if (ci->kind == CHUNK_DONE) { /* the codec reports the usage at the end: with its cost */
        exchange_cost_members(ex, &ex->cbuf);
        snprintf(ex->cs->cost, sizeof(ex->cs->cost), "%.*s", (int)buf_size(&ex->cbuf),
                 buf_size(&ex->cbuf) ? buf_head(&ex->cbuf) : "");
        buf_reset(&ex->cbuf);
    }
    int rc = c->stream_chunk(ex->cs, chunk, len, ci, &ex->usage, &ex->cbuf);
    if (!rc && buf_size(&ex->cbuf)) {
        uv_buf_t b = uv_buf_init((char *)buf_head(&ex->cbuf), (unsigned)buf_size(&ex->cbuf));
        client_write(ex, &b, 1);
    }
    return rc;
}

/* One OpenAI chunk decoded from the attempt's stream. Returns nonzero to stop decoding. */
static int on_chunk(void *data, const char *chunk, size_t len, const struct chunk_info *ci)
{
    struct attempt *a = data;
    struct exchange *ex = a->ex;
    if (ci->usage.known)
        a->usage = ci->usage;
    if (ci->kind == CHUNK_ERROR) {
        if (!ci->retryable) /* e.g. an invalid request: another provider would refuse too */
            ex->no_continue = 1;
        attempt_fail(a, FT_PROVIDER, ci->error);
        return 1;
    }
    if (ex->state == EX_ATTEMPTING) {
        if (ci->kind == CHUNK_PREAMBLE) {
            if (ex->creq.codec && !a->native)
                return 0; /* the codec opens the client's stream itself */
            if (buf_size(&a->held) + len + 8 > MAX_HELD) {
                attempt_fail(a, FT_MALFORMED, "the provider sent too much before any content");
                return 1;
            }
            if (a->native)
                buf_append(&a->held, chunk, len);
            else
                hold_event(&a->held, chunk, len);
            return 0;
        }
        a->t_first = now_ms(ex);
        if (ci->id[0]) { /* the stream's identity: the committing attempt's */
            snprintf(ex->resp_id, sizeof(ex->resp_id), "%s", ci->id);
            snprintf(ex->resp_model, sizeof(ex->resp_model), "%s", ci->model);
            if (ci->created)
                ex->created = ci->created;
        }
        commit_stream(ex, a);
        set_at(a, AT_STREAMING);
        arm_phase(a, ex->plan.timeouts.idle_ms); /* from first byte to idle */
    } else if (a->at == AT_WAITING_FIRST_EVENT) { /* a continuation's first event */
        if (ci->kind == CHUNK_PREAMBLE)
            return 0; /* the stream already has its preamble */
        a->t_first = now_ms(ex);
        set_at(a, AT_STREAMING);
        arm_phase(a, ex->plan.timeouts.idle_ms);
    }
    if (ci->kind == CHUNK_CONTENT)
        a->content_chunks++;
    if (ci->kind == CHUNK_CONTENT && (ci->text || ci->tool_call))
        ex->output_chunks++;
    if (ci->finish && !ex->finish_reason[0])
        exchange_sniff_finish(ex, chunk, len);
    if (ci->usage.known)
        take_usage(ex, &ci->usage);
    if (ex->cap && ci->kind == CHUNK_CONTENT) { /* a stream the cache will keep */
        cache_capture_chunk(ex->cap, chunk, len);
        if (ex->hide_usage && ci->usage.known && !ci->text && !ci->tool_call && !ci->finish)
            goto relayed; /* the usage chunk llmux asked for itself, not the client */
    }
    if (ex->plan.continue_on_failure && ci->kind == CHUNK_CONTENT) {
        if (ci->tool_call && !ci->text && !ci->finish) {
            /* held until the call is complete, so a break restarts it whole (a codec's client
             * has it at once: no continuation after it) */
            if (ex->creq.codec) {
                ex->no_continue = 1;
            } else if (buf_size(&ex->tool_held) + len + 8 > MAX_DELIVERED) {
                flush_tool_held(ex);
            } else {
                hold_event(&ex->tool_held, chunk, len);
                goto relayed;
            }
        }
        flush_tool_held(ex);
        if (ci->text && buf_append(&ex->delivered, ci->text, ci->text_len) != 0)
            ex->no_continue = 1;
    }
    if (ex->creq.codec) {
        if (codec_write(ex, a, chunk, len, ci) != 0) {
            attempt_fail(a, FT_MALFORMED, "the provider sent an event that is not JSON");
            return 1;
        }
    } else if (a->continuation && ci->kind == CHUNK_CONTENT) {
        if (write_continued(ex, chunk, len, ci) != 0) {
            attempt_fail(a, FT_MALFORMED, "the provider sent an event that is not JSON");
            return 1;
        }
    } else {
        write_costed(ex, chunk, len, ci);
    }
relayed:
    if (!ex->req) {
        exchange_end(ex); /* the client went away while we wrote */
        return 1;
    }
    if (ci->kind == CHUNK_DONE && a->up) {
        /* The stream's end marker: the answer is whole whatever the connection does next (a
         * reset or a stall before the chunked terminator must not turn it into a failure, an
         * error event after [DONE] or a second generation). The client's response ends now;
         * the upstream's own end is awaited briefly so its connection can be pooled. */
        stream_succeeded(ex, a);
        set_at(a, AT_DRAINING);
        arm_phase(a, DRAIN_MS);
        return 1;
    }
    /* While the client is the slow side, the upstream is not stalled: no idle timer then
     * (the total deadline still bounds the exchange). Otherwise upstream bytes re-arm it
     * (on_up_body_), once per read rather than per event. */
    if (a->read_paused)
        uv_timer_stop(&a->phase);
    return 0;
}

/* One complete upstream SSE event: the adapter turns it into OpenAI chunks (on_chunk). */
static int on_event(void *data, const struct sse_event *ev)
{
    struct attempt *a = data;
    int rc = a->ad->stream_event(&a->ast, ev->event, ev->event_len, ev->data, ev->data_len,
                                 on_chunk, a);
    if (rc < 0) /* the event cannot be decoded (or memory ran out): this attempt is over */
        attempt_fail(a, FT_MALFORMED,
                     rc == LLMUX_EPROTO ? "the provider sent an event that is not JSON"
                                        : llmux_strerror(rc));
    return rc;
}

static void on_up_body_(void *data, const char *p, size_t n)
{
    struct attempt *a = data;
    switch (a->at) {
    case AT_WAITING_FIRST_EVENT:
    case AT_STREAMING: {
        /* bytes are activity, even events the adapter drops (pings, thinking blocks) */
        if (a->at == AT_STREAMING && !a->read_paused)
            arm_phase(a, a->ex->plan.timeouts.idle_ms);
        a->in_feed++;
        int rc = sse_decoder_feed(&a->sse, p, n);
        if (feed_leave(a))
            break;
        if (rc == LLMUX_ESSE)
            attempt_fail(a, FT_MALFORMED, "the provider's event stream is malformed");
        break;
    }
    case AT_READING_BODY:
    case AT_READING_ERROR:
        if (buf_append(&a->body, p, n) != 0) {
            attempt_fail(a, a->at == AT_READING_BODY ? FT_MALFORMED : FT_STATUS,
                         a->at == AT_READING_BODY ? "response body too large"
                                                  : "error body too large");
            return;
        }
        arm_phase(a, a->ex->plan.timeouts.idle_ms);
        break;
    default:
        break;
    }
}

/* A non-retryable upstream answer caused by the request: pass it to the client. */
static void pass_through_error(struct exchange *ex, struct attempt *a)
{
    ex->outcome = "error";
    if (ex->head_sent) {
        char msg[96];
        snprintf(msg, sizeof(msg), "the provider refused the request with status %d",
                 a->status);
        end_stream_with_error(ex, a->status, msg);
        ex->outcome = "error";
        return;
    }
    struct buf translated;
    buf_init(&translated, 0);
    char why[160];
    a->ad->decode_error(a->status, buf_head(&a->body), buf_size(&a->body), &translated, why,
                        sizeof(why));
    snprintf(ex->end_reason, sizeof(ex->end_reason), "provider refused the request (%s)", why);
    redact_str(ex->end_reason, a->entry->provider->api_key);
    struct buf *b = buf_size(&translated) ? &translated : &a->body;
    size_t len = redact((char *)buf_head(b), buf_size(b), a->entry->provider->api_key);
    struct buf shaped; /* a codec's client gets the error in its API's shape */
    buf_init(&shaped, 0);
    if (ex->creq.codec && !a->native && ex->creq.codec->error &&
        ex->creq.codec->error(a->status, NULL, buf_head(b), len, &shaped) == 0) {
        b = &shaped;
        len = buf_size(&shaped);
    }
    respond_json(ex, a->status, NULL, buf_head(b), len, 1, NULL);
    buf_free(&shaped);
    buf_free(&translated);
}

/* A deployment after the current one with a larger context window, or -1. */
static long larger_window(struct exchange *ex, const struct attempt *a)
{
    uint32_t have = a->entry->deployment ? a->entry->deployment->context_window : 0;
    for (size_t i = ex->next_entry; i < ex->plan.n; i++) {
        const struct deployment *d = ex->plan.entries[i].deployment;
        if (d && d->context_window > have)
            return (long)i;
    }
    return -1;
}

static void on_up_done_(void *data, int status, const char *detail)
{
    struct attempt *a = data;
    struct exchange *ex = a->ex;
    a->up = NULL; /* freed by the upstream module after we return */
    if (status < 0) {
        enum failure ft = status == UV_ECONNRESET || status == UV_EOF || status == UV_EPIPE
                              ? FT_RESET
                          : status == LLMUX_EHTTP ? FT_MALFORMED
                                                  : FT_CONNECT;
        attempt_fail(a, ft, detail);
        return;
    }
    switch (a->at) {
    case AT_READING_ERROR: {
        struct buf ignored;
        buf_init(&ignored, 0);
        char why[160];
        enum verdict v = a->ad->decode_error(a->status, buf_head(&a->body), buf_size(&a->body),
                                             &ignored, why, sizeof(why));
        buf_free(&ignored);
        attempt_fail(a,
                     v == VERDICT_CLIENT           ? FT_CLIENT
                     : v == VERDICT_CONTEXT_LENGTH ? FT_CONTEXT
                                                   : FT_STATUS,
                     why);
        return;
    }
    case AT_READING_BODY: {
        struct buf out;
        buf_init(&out, 0);
        int rc = a->ad->decode_body(&a->creq, a->entry->model, buf_head(&a->body),
                                    buf_size(&a->body), &out, &a->usage);
        if (rc == 0 && ex->creq.codec && !a->native) { /* canonical -> the client's API */
            struct buf *canon = buf_size(&out) ? &out : &a->body;
            struct buf shaped;
            buf_init(&shaped, 0);
            rc = ex->creq.codec->body(buf_head(canon), buf_size(canon), &shaped);
            buf_free(&out);
            out = shaped;
        }
        if (rc != 0) {
            buf_free(&out);
            attempt_fail(a, FT_MALFORMED, "the provider's response is not valid");
            return;
        }
        ex->usage = a->usage;
        ex->served_usage = a->usage;
        ex->t_first_byte = now_ms(ex);
        a->t_first = ex->t_first_byte;
        set_winner(ex, a);
        set_state(ex, EX_RELAYING);
        struct health_sample s = {a->t_first - a->t_sent, now_ms(ex) - a->t_start, 0, 0};
        attempt_health(a, 1, &s, NULL);
        /* the answer's bytes are handed to the client connection, not copied: a large answer
         * to a slow client is held once */
        struct buf *answer = buf_size(&out) ? &out : &a->body;
        exchange_sniff_finish(ex, buf_head(answer), buf_size(answer));
        if (ex->cache)
            cache_keep(ex, buf_head(answer), buf_size(answer));
        struct buf costed;
        buf_init(&costed, 0);
        if (exchange_cost_splice(ex, buf_head(answer), buf_size(answer), &costed))
            answer = &costed;
        size_t off, len;
        char *mem = buf_release(answer, &off, &len);
        respond_json(ex, a->status, mem, mem ? mem + off : "", len, 0, NULL);
        buf_free(&out);
        buf_free(&costed);
        ex->outcome = "ok";
        exchange_end(ex);
        return;
    }
    case AT_DRAINING: /* the answer went out at its end marker; the connection is pooled */
        exchange_end(ex);
        return;
    case AT_WAITING_FIRST_EVENT:
    case AT_STREAMING: {
        a->in_feed++;
        int complete = sse_decoder_finish(&a->sse) == 0 &&
                       a->ad->stream_finish(&a->ast, on_chunk, a) == 1;
        if (feed_leave(a) || ex->state == EX_DONE || a->at == AT_IDLE)
            return;
        if (!complete) {
            attempt_fail(a, FT_RESET,
                         a->at == AT_WAITING_FIRST_EVENT ? "the stream ended before its first event"
                                                         : "the stream ended without [DONE]");
            return;
        }
        stream_succeeded(ex, a);
        exchange_end(ex);
        return;
    }
    default:
        attempt_fail(a, FT_MALFORMED, "unexpected end of the response");
        return;
    }
}

/* A stream answered in full: commit it if it had no content, health, the client's end. */
static void stream_succeeded(struct exchange *ex, struct attempt *a)
{
    if (ex->state == EX_ATTEMPTING) /* a stream without content: still an answer */
        commit_stream(ex, a);
    flush_tool_held(ex);
    uint64_t now = now_ms(ex);
    uint64_t first = a->t_first ? a->t_first : now;
    struct health_sample s = {first - a->t_sent, now - a->t_start,
                              a->usage.known ? a->usage.completion_tokens : 0, now - first};
    attempt_health(a, 1, &s, NULL);
    if (ex->cap)
        cache_keep_stream(ex);
    if (ex->req) {
        struct server_req *req = ex->req;
        ex->req = NULL;
        server_stream_end(req);
    }
    ex->outcome = "ok";
}

/* The upstream callbacks, timed. */
static void on_up_head(void *data, int status, const struct http_header *h, size_t n)
{
    struct exchange *ex = ((struct attempt *)data)->ex;
    busy_enter(ex);
    on_up_head_(data, status, h, n);
    busy_leave(ex);
}

static void on_up_body(void *data, const char *p, size_t n)
{
    struct exchange *ex = ((struct attempt *)data)->ex;
    busy_enter(ex);
    on_up_body_(data, p, n);
    busy_leave(ex);
}

static void on_up_done(void *data, int status, const char *detail)
{
    struct exchange *ex = ((struct attempt *)data)->ex;
    busy_enter(ex);
    on_up_done_(data, status, detail);
    busy_leave(ex);
}

static const struct upstream_cbs up_cbs = {
    .on_sent = on_up_sent,
    .on_head = on_up_head,
    .on_body = on_up_body,
    .on_done = on_up_done,
};

static void respond_all_failed(struct exchange *ex, const char *why)
{
    char msg[1024];
    size_t used = (size_t)snprintf(msg, sizeof(msg), "all %zu deployment%s failed", ex->n_rec,
                                   ex->n_rec == 1 ? "" : "s");
    if (why)
        used += (size_t)snprintf(msg + used, sizeof(msg) - used, " (%s)", why);
    if (ex->limited)
        used += (size_t)snprintf(msg + used, sizeof(msg) - used,
                                 "; %u skipped at their rpm/tpm limit", ex->limited);
    for (size_t i = 0; i < ex->n_rec && used < sizeof(msg); i++) {
        const struct attempt_record *r = &ex->rec[i];
        used += (size_t)snprintf(msg + used, sizeof(msg) - used, "%s %s (%.*s): %s",
                                 i ? ";" : ":", r->provider->name, (int)r->model_len, r->model,
                                 r->reason);
    }
    ex->outcome = "error";
    int untranslatable = ex->n_rec > 0;
    for (size_t i = 0; i < ex->n_rec; i++)
        untranslatable &= ex->rec[i].untranslatable;
    if (untranslatable) { /* no deployment can take this request as it is */
        respond_error(ex, 400, "invalid_request_error", "unsupported_request", msg);
        return;
    }
    /* rate limited everywhere: say so (SDKs back off on 429), with the soonest time a retry
     * can succeed when a provider said */
    int all_429 = ex->n_rec > 0 || ex->limited; /* a deployment at its limit counts as one */
    uint64_t retry_ms = ex->limited ? ex->limited_retry_ms : UINT64_MAX;
    for (size_t i = 0; i < ex->n_rec; i++) {
        all_429 &= ex->rec[i].status == 429;
        if (ex->rec[i].retry_after_ms && ex->rec[i].retry_after_ms < retry_ms)
            retry_ms = ex->rec[i].retry_after_ms;
    }
    if (all_429 && !ex->head_sent && ex->req) {
        char ra[24];
        snprintf(ra, sizeof(ra), "%llu", (unsigned long long)((retry_ms + 999) / 1000));
        struct buf b;
        buf_init(&b, 0);
        format_error(ex, 429, "rate_limit_error", "rate_limit_exceeded", msg, &b);
        snprintf(ex->end_reason, sizeof(ex->end_reason), "%.199s", msg);
        respond_json(ex, 429, NULL, buf_head(&b), buf_size(&b), 1,
                     retry_ms == UINT64_MAX ? NULL : ra);
        buf_free(&b);
        return;
    }
    respond_error(ex, 502, "upstream_error", "all_deployments_failed", msg);
}

/* Start attempt slot `a` on deployment `e`. Returns 0 or a negative code (a stays idle). */
static int attempt_start(struct exchange *ex, struct attempt *a, const struct plan_entry *e,
                         int hedge)
{
    if (ex->n_rec == EX_MAX_RECORDS)
        return UV_E2BIG;
    if (!deployment_admit(ex, e)) /* at its own rate limit: skipped as an ejected one is, by */
        return UV_EBUSY;          /* every caller (next, hedge, continuation), with no record */
    if (ex->rec == ex->rec_inline && ex->n_rec == 2) { /* most requests never get here */
        struct attempt_record *more = malloc(EX_MAX_RECORDS * sizeof(*more));
        if (!more)
            return UV_ENOMEM;
        memcpy(more, ex->rec_inline, sizeof(ex->rec_inline));
        ex->rec = more;
    }
    struct attempt_record *r = &ex->rec[ex->n_rec];
    memset(r, 0, sizeof(*r));
    r->provider = e->provider;
    r->model = e->model;
    r->model_len = e->model_len;
    r->hedge = hedge;
    r->continuation = a->continuation;
    a->rec = ex->n_rec++;
    a->entry = e;
    const struct client_codec *codec = ex->creq.codec;
    const struct adapter *native =
        codec && codec->native_for && !a->continuation ? codec->native_for(e->provider) : NULL;
    a->native = native != NULL;
    a->ad = native ? native : adapter_for(e->provider->kind);
    a->t_start = now_ms(ex);
    a->t_sent = a->t_start;
    a->t_first = 0;
    ex->attempts_made++;
    if (ex->n_rec > 1)
        ex->gw->stats.failovers++;
    struct origin *o = runtime_origin(ex->rt, e->provider);
    int rc = !o ? UV_ENOTCONN : !a->ad ? LLMUX_EKIND : 0;
    if (!rc && !a->native && !a->creq.body) { /* a codec's request with no canonical form */
        rc = LLMUX_EKIND;
        snprintf(a->ureq.why, sizeof(a->ureq.why), "%s", a->creq.why ? a->creq.why : "");
    }
    if (!rc)
        rc = a->ad->encode(e->provider, e->model, e->model_len, &a->creq, &a->ureq);
    if (!rc) {
        set_at(a, AT_CONNECTING);
        arm_phase(a, ex->plan.timeouts.connect_ms);
        if (tracked(a)) {
            a->probe = health_begin(ex->rt->health, health_id(a), a->t_start);
            a->health_open = 1;
        }
        rc = ex->gw->upstream->start(ex->gw->pool, o, a->ureq.iov, a->ureq.n, &up_cbs, a,
                                     &a->up);
        if (rc == 0)
            return 0;
        a->up = NULL;
        attempt_health(a, -1, NULL, llmux_strerror(rc));
    }
    r->untranslatable = rc == UV_EINVAL || rc == LLMUX_EKIND;
    snprintf(r->reason, sizeof(r->reason), "%s",
             a->ureq.why[0]    ? a->ureq.why
             : rc == UV_EINVAL ? "the request cannot be translated for this provider"
                               : llmux_strerror(rc));
    attempt_reset(a);
    return rc;
}

/* Start the next deployment of the plan in slot a (before commit), or answer that all
 * failed once no attempt is left running. Retries beyond the first attempt ask the budget. */
static void start_next(struct exchange *ex, struct attempt *a, int hedge)
{
    a->creq = ex->creq;
    while (ex->attempts_made < ex->plan.max_attempts && ex->n_rec < EX_MAX_RECORDS) {
        if (ex->next_entry >= ex->plan.n && ex->attempts_made == 0)
            break; /* every deployment is at its own rate limit: nothing to retry yet */
        if (ex->next_entry >= ex->plan.n) {
            /* every deployment tried and attempts remain: the plan again, after a backoff
             * with jitter (exponential in the rounds done) */
            ex->next_entry = 0;
            uint64_t round = ex->attempts_made / (ex->plan.n ? ex->plan.n : 1);
            uint64_t ms = BACKOFF_BASE_MS << (round < 5 ? round : 5);
            ms = ms > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms;
            ms = ms / 2 + (uint64_t)rand() % (ms + 1);
            set_at(a, AT_BACKOFF);
            uv_timer_start(&a->phase, on_phase_timeout, ms, 0);
            return;
        }
        if (ex->attempts_made > 0 &&
            !health_retry_allowed(ex->rt->health, now_ms(ex))) {
            if (hedge || other(a)->at != AT_IDLE)
                return;
            respond_all_failed(ex, "retry budget exhausted");
            exchange_end(ex);
            return;
        }
        const struct plan_entry *e = &ex->plan.entries[ex->next_entry++];
        if (attempt_start(ex, a, e, hedge) == 0) {
            set_state(ex, EX_ATTEMPTING);
            return;
        }
    }
    if (hedge || other(a)->at != AT_IDLE)
        return; /* the other attempt is still running */
    respond_all_failed(ex, NULL);
    exchange_end(ex);
}

/* A deployment's own rpm/tpm (the provider account's limits): 1 when it may take this attempt
 * (charged: one request, the prompt estimate), 0 when it is at its limit (skipped; the
 * soonest time one fits is kept for the 429 if every deployment is). */
static int deployment_admit(struct exchange *ex, const struct plan_entry *e)
{
    const struct deployment *d = e->deployment;
    if (!d || !(d->rpm || d->tpm))
        return 1;
    size_t i = (size_t)(e - ex->plan.entries);
    uint64_t ms = 0;
    int remote = 0;
    for (size_t k = 0; ex->dep_remote && k < ex->n_dep_remote; k++)
        remote |= ex->dep_entry[k] == i;
    if (remote) { /* Redis decided at admission */
        ms = ex->dep_retry_ms[i];
        if (!ms && ex->dep_pick == (int)i)
            ex->dep_pick = -1; /* charged there: this attempt uses it */
        else if (!ms)
            admission_charge_deployment(ex, e);
    } else {
        struct limit_slot *slot = ex->rt->dep_slots[d->health_id];
        if (!slot)
            return 1;
        uint64_t now = uv_hrtime(), rem, reset, retry = 0;
        if (d->rpm && !limits_take(&slot->tat_req, d->rpm, 1, now, &rem, &reset, &retry)) {
        } else if (d->tpm && !limits_take(&slot->tat_tok, d->tpm, ex->creq.body_len / 4 + 1, now,
                                          &rem, &reset, &retry)) {
            if (d->rpm)
                limits_adjust(&slot->tat_req, d->rpm, -1, now);
        } else {
            return 1;
        }
        ms = (retry + 999) / 1000;
    }
    if (!ms)
        return 1;
    if (!ex->limited || ms < ex->limited_retry_ms)
        ex->limited_retry_ms = ms;
    ex->limited++;
    return 0;
}

/* A committed stream broke: go on with the next deployment, the delivered text as prefix. */
static int continue_stream(struct exchange *ex, struct attempt *a)
{
    if (!ex->plan.continue_on_failure || ex->no_continue || ex->creq.endpoint == API_EMBEDDINGS)
        return 0;
    if (a->native && !ex->creq.codec->native_continues) /* ends with the codec's stream_error */
        return 0;
    if (ex->next_entry >= ex->plan.n || ex->n_rec == EX_MAX_RECORDS)
        return 0;
    if (!health_retry_allowed(ex->rt->health, now_ms(ex)))
        return 0;
    struct usage est = {.completion_tokens = a->content_chunks, .known = 1};
    if (a->usage.known) {
        usage_add(&ex->spent, &a->usage);
    } else {
        ex->spent.completion_tokens += a->content_chunks;
        ex->spent.total_tokens += a->content_chunks;
        ex->spent_prompt_unknown = 1;
    }
    /* its cost: what it reported, else one token per content chunk (its prompt unknown) */
    record(a)->cost_pico =
        exchange_cost_pico(a->entry->deployment, a->usage.known ? &a->usage : &est);
    ex->spent_pico += record(a)->cost_pico;
    buf_reset(&ex->tool_held); /* a half-streamed tool call restarts whole */
    attempt_reset(a);
    ex->continued++;
    ex->gw->health.continuations++;
    while (ex->next_entry < ex->plan.n) {
        const struct plan_entry *e = &ex->plan.entries[ex->next_entry++];
        const struct adapter *ad = adapter_for(e->provider->kind);
        a->creq = ex->creq;
        a->creq.prefix = buf_head(&ex->delivered);
        a->creq.prefix_len = buf_size(&ex->delivered);
        a->creq.prefill = ad ? ad->prefill : 0;
        a->continuation = 1;
        if (attempt_start(ex, a, e, 0) == 0) {
            ex->winner = a;
            record(a)->served = 1;
            return 1;
        }
    }
    return 0;
}

/* Every failure of an attempt comes here. Before commit: the next deployment while there is
 * one (unless a hedge is still running); a failure caused by the request itself is passed to
 * the client; a context-length refusal moves to a deployment with a larger window. After
 * commit: continue the stream elsewhere, or end it honestly. */
static void attempt_fail(struct attempt *a, enum failure ft, const char *why)
{
    struct exchange *ex = a->ex;
    if (ex->state == EX_DONE || a->at == AT_IDLE)
        return;
    if (a->at == AT_DRAINING) { /* the answer was whole: only the connection is lost */
        exchange_end(ex);
        return;
    }
    /* provider text may quote the key it got: masked before it is relayed or logged */
    char detail[200];
    snprintf(detail, sizeof(detail), "%s", why);
    redact_str(detail, a->entry->provider->api_key);
    struct attempt_record *r = record(a);
    snprintf(r->reason, sizeof(r->reason), "%.127s", detail);
    r->ms = now_ms(ex) - a->t_start;
    if (a->status)
        r->status = a->status;
    r->retry_after_ms = a->retry_after_ms;
    attempt_health(a, ft == FT_CLIENT || ft == FT_CONTEXT ? 0 : -1, NULL, detail);
    if (ex->state == EX_RELAYING) {
        r->served = 0;
        if (continue_stream(ex, a))
            return;
        end_stream_with_error(ex, 502, detail);
        exchange_end(ex);
        return;
    }
    if (ft == FT_CONTEXT) {
        long i = larger_window(ex, a);
        if (i >= 0)
            ex->next_entry = (size_t)i;
        else
            ft = FT_CLIENT;
    }
    if (ft == FT_CLIENT) {
        attempt_cancel(other(a), "cancelled: the request was refused");
        pass_through_error(ex, a);
        exchange_end(ex);
        return;
    }
    attempt_reset(a);
    if (!ex->req) {
        exchange_end(ex);
        return;
    }
    if (other(a)->at != AT_IDLE)
        return; /* the hedge (or primary) still runs: it may yet answer */
    start_next(ex, a, 0);
}

static void on_hedge(uv_timer_t *t)
{
    struct exchange *ex = container_of(t, struct exchange, hedge);
    if (ex->state != EX_ATTEMPTING || ex->hedged || !ex->req)
        return;
    struct attempt *free_slot = ex->at[0].at == AT_IDLE ? &ex->at[0]
                                : ex->at[1].at == AT_IDLE ? &ex->at[1]
                                                          : NULL;
    if (!free_slot || ex->next_entry >= ex->plan.n ||
        ex->attempts_made >= ex->plan.max_attempts)
        return;
    if (!health_retry_allowed(ex->rt->health, now_ms(ex)))
        return;
    ex->hedged = 1;
    ex->gw->health.hedges++;
    const struct plan_entry *e = &ex->plan.entries[ex->next_entry++];
    free_slot->creq = ex->creq;
    if (attempt_start(ex, free_slot, e, 1) != 0)
        ex->hedged = 0;
}

static void on_deadline(uv_timer_t *t)
{
    struct exchange *ex = container_of(t, struct exchange, deadline);
    char msg[96];
    snprintf(msg, sizeof(msg), "the request exceeded its total deadline of %u ms",
             ex->plan.timeouts.total_ms);
    for (int i = 0; i < 2; i++) {
        struct attempt *a = &ex->at[i];
        if (a->at != AT_IDLE && a->at != AT_BACKOFF && !record(a)->reason[0]) {
            snprintf(record(a)->reason, sizeof(record(a)->reason), "total deadline");
            record(a)->ms = now_ms(ex) - a->t_start;
        }
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
    struct attempt *w = ex->winner;
    if (w && w->read_paused && w->up) {
        w->read_paused = 0;
        arm_phase(w, ex->plan.timeouts.idle_ms);
        ex->gw->upstream->read_start(w->up);
    }
}

/* ---- the response cache (src/cache.c has the key, the store, capture and replay) ---- */

/* A replayed chunk to the client; the stream's head goes out with the first. */
static int on_replay(void *data, const char *chunk, size_t len, const struct chunk_info *ci)
{
    struct exchange *ex = data;
    if (!ex->head_sent)
        send_stream_head(ex);
    if (ci->kind == CHUNK_CONTENT && (ci->text || ci->tool_call))
        ex->output_chunks++;
    write_costed(ex, chunk, len, ci);
    return ex->req ? 0 : 1;
}

/* Answer with a stored entry: its body as it is, or replayed as a stream. Its usage is the
 * original's, its cost 0 (exchange_cost). Returns 1 when answered, 0 when the entry is older
 * than the alias's ttl_s now (a reload shortened it) or not an answer. */
static int cache_answer(struct exchange *ex, const char *blob, size_t len)
{
    uint64_t stored_at, now = cache_now_ms();
    const char *body;
    size_t n;
    if (cache_entry_open(blob, len, &stored_at, &body, &n) != 0 ||
        (now > stored_at && now - stored_at >= (uint64_t)ex->plan.alias->cache_ttl_s * 1000))
        return 0;
    ex->cache = CACHE_HIT;
    exchange_sniff_finish(ex, body, n);
    cache_body_usage(body, n, &ex->usage);
    ex->served_usage = ex->usage;
    ex->t_first_byte = now_ms(ex);
    ex->commit_ns = uv_hrtime();
    if (ex->creq.stream) {
        if (cache_replay_stream(body, n, ex->creq.include_usage, on_replay, ex) == LLMUX_EPROTO) {
            ex->cache = CACHE_MISS; /* nothing was sent */
            ex->finish_reason[0] = 0;
            memset(&ex->usage, 0, sizeof(ex->usage));
            ex->served_usage = ex->usage;
            return 0;
        }
        if (ex->req) {
            struct server_req *req = ex->req;
            ex->req = NULL;
            server_stream_end(req);
        }
    } else {
        struct buf costed;
        buf_init(&costed, 0);
        if (exchange_cost_splice(ex, body, n, &costed)) {
            body = buf_head(&costed);
            n = buf_size(&costed);
        }
        respond_json(ex, 200, NULL, body, n, 0, NULL);
        buf_free(&costed);
    }
    ex->outcome = "ok";
    exchange_end(ex);
    return 1;
}

/* A stream is stored with its usage: when the client did not ask for the usage chunk (and
 * said nothing of stream_options), the upstream is asked for it and the client does not get
 * it. The member goes before the body's closing brace, so the model's span stays put. */
static void cache_ask_usage(struct exchange *ex)
{
    static const char member[] = ",\"stream_options\":{\"include_usage\":true}}";
    const char *b = ex->creq.body;
    size_t n = ex->creq.body_len, s, e;
    while (n > 0 && b[n - 1] != '}')
        n--;
    if (n == 0 || json_top_key(b, ex->creq.body_len, "stream_options", &s, &e) == 0)
        return;
    char *owned = malloc(n - 1 + sizeof(member));
    if (!owned)
        return;
    memcpy(owned, b, n - 1);
    memcpy(owned + n - 1, member, sizeof(member));
    free(ex->creq.owned);
    ex->creq.owned = owned;
    ex->creq.body = owned;
    ex->creq.body_len = n - 1 + sizeof(member) - 1;
    ex->hide_usage = 1;
}

/* A miss (or refresh) will store its answer: a stream's chunks are captured for it. */
static void cache_miss(struct exchange *ex)
{
    if (ex->creq.stream && (ex->cap = cache_capture_new()) && !ex->creq.include_usage)
        cache_ask_usage(ex);
}

/* An entry's Redis key (state.redis): PREFIXcache:HEX of the cache key. */
static void redis_cache_key(const struct exchange *ex, char *out, size_t size)
{
    static const char hex[] = "0123456789abcdef";
    int n = snprintf(out, size, "%.80scache:", ex->rt->cfg->state.prefix);
    for (int i = 0; i < CACHE_KEY_LEN && (size_t)n + 2 < size; i++, n += 2) {
        out[n] = hex[ex->cache_key[i] >> 4];
        out[n + 1] = hex[ex->cache_key[i] & 15];
    }
    out[n] = 0;
}

static void exchange_plan(struct exchange *ex);

/* Redis answered a lookup: a hit is answered from it; a miss, or no answer (Redis down or
 * slow: the cache never refuses a request), runs the plan. */
static void on_cache_reply(void *data, redisReply *reply)
{
    struct exchange *ex = data;
    if (ex->state == EX_ADMITTING) { /* else the client left meanwhile */
        busy_enter(ex);
        struct cache *c = &ex->gw->cache;
        if (reply && reply->type == REDIS_REPLY_STRING &&
            cache_answer(ex, reply->str, reply->len)) {
            c->results[CACHE_HIT]++;
        } else {
            c->results[ex->cache]++;
            cache_miss(ex);
            exchange_plan(ex);
        }
        busy_leave(ex);
    }
    exchange_release(ex);
}

/* What the cache does for a request to an alias with a cache, before the plan runs: bypass
 * (x-llmux-cache: no-store; an endpoint other than chat), or a lookup by key (not for
 * x-llmux-cache: refresh) that answers a hit here. A miss or refresh keeps its
 * answer when it completes (cache_keep). Returns 1 when the request was answered (a hit, or a
 * 400 for an unknown x-llmux-cache value), 0 to go on, 2 when Redis will answer
 * (on_cache_reply goes on). */
static COLD int cache_lookup(struct exchange *ex)
{
    struct cache *c = &ex->gw->cache;
    const char *asked = server_req_header(ex->req, "x-llmux-cache");
    int refresh = asked && strcasecmp(asked, "refresh") == 0;
    if (asked && !refresh && strcasecmp(asked, "no-store") != 0) {
        c->results[CACHE_BYPASS]++;
        ex->cache = CACHE_BYPASS;
        respond_error(ex, 400, "invalid_request_error", "invalid_cache_directive",
                      "x-llmux-cache must be no-store or refresh");
        ex->outcome = "error";
        exchange_end(ex);
        return 1;
    }
    if (asked && !refresh) {
        ex->cache = CACHE_BYPASS;
    } else if (ex->creq.endpoint != API_CHAT || ex->creq.codec) {
        ex->cache = CACHE_BYPASS; /* only chat completions are cached (README) */
    } else {
        ex->cache = refresh ? CACHE_REFRESH : CACHE_MISS;
        cache_key("chat", ex->client_model, ex->adm.key_name, ex->creq.body, ex->creq.body_len,
                  ex->cache_key);
        if (!refresh && ex->gw->redis) { /* shared entries: the answer comes back later */
            char key[160];
            redis_cache_key(ex, key, sizeof(key));
            const char *argv[] = {"GET", key};
            if (redis_command(ex->gw->redis, 2, argv, NULL, on_cache_reply, ex) == 0) {
                ex->handles++; /* the reply comes back to ex, whatever happens meanwhile */
                return 2;
            }
        } else if (!refresh) {
            struct cache_store *s = c->store;
            const char *blob;
            size_t len;
            if (s->ops->get(s, ex->cache_key, cache_now_ms(), &blob, &len) == 0 &&
                cache_answer(ex, blob, len)) {
                c->results[CACHE_HIT]++;
                return 1;
            }
        }
        cache_miss(ex);
    }
    c->results[ex->cache]++;
    return 0;
}

/* A complete answer (a chat.completion body) of a miss or refresh into the store, unless it
 * was continued or is not whole (cache_storable). */
static COLD void cache_keep(struct exchange *ex, const char *body, size_t len)
{
    if ((ex->cache != CACHE_MISS && ex->cache != CACHE_REFRESH) || ex->continued ||
        !cache_storable(body, len))
        return;
    struct cache_store *s = ex->gw->cache.store;
    uint64_t now = cache_now_ms(), ttl_ms = (uint64_t)ex->plan.alias->cache_ttl_s * 1000;
    struct buf entry;
    buf_init(&entry, 0);
    if (cache_entry_make(now, body, len, &entry) != 0) {
        buf_free(&entry);
        return;
    }
    if (ex->gw->redis) { /* shared: SET key entry PX ttl, without waiting */
        char key[160], px[24];
        redis_cache_key(ex, key, sizeof(key));
        snprintf(px, sizeof(px), "%llu", (unsigned long long)ttl_ms);
        const char *argv[] = {"SET", key, buf_head(&entry), "PX", px};
        const size_t lens[] = {3, strlen(key), buf_size(&entry), 2, strlen(px)};
        if (redis_command(ex->gw->redis, 5, argv, lens, NULL, NULL) == 0)
            ex->gw->cache.stored++;
    } else if (s->ops->put(s, ex->cache_key, buf_head(&entry), buf_size(&entry), now, ttl_ms) ==
               0) {
        ex->gw->cache.stored++;
    }
    buf_free(&entry);
}

/* A stream that completed: the answer its chunks add up to, kept as a non-stream body. */
static COLD void cache_keep_stream(struct exchange *ex)
{
    struct buf body;
    buf_init(&body, 0);
    if (cache_capture_body(ex->cap, &ex->served_usage, &body) == 0)
        cache_keep(ex, buf_head(&body), buf_size(&body));
    buf_free(&body);
}

/* ---- end ---- */

void exchange_release(struct exchange *ex)
{
    if (--ex->handles > 0)
        return;
    free(ex->creq.owned);
    if (ex->cs && ex->creq.codec->stream_free)
        ex->creq.codec->stream_free(ex->cs);
    free(ex->cs);
    free(ex->names);
    if (ex->rec != ex->rec_inline)
        free(ex->rec);
    runtime_unref(ex->rt);
    free(ex);
}

static void on_timer_closed(uv_handle_t *h)
{
    exchange_release(h->data);
}

static void exchange_end(struct exchange *ex)
{
    if (ex->state == EX_DONE)
        return;
    set_state(ex, EX_DONE);
    for (int i = 0; i < 2; i++)
        attempt_cancel(&ex->at[i], ex->req ? "cancelled" : "cancelled: client gone");
    if (ex->req) { /* should not happen: every path answers first */
        server_req_abort(ex->req, 0);
        ex->req = NULL;
    }
    if (--ex->gw->stats.exchanges_active == 0)
        gateway_quiet(ex->gw);
    busy_leave(ex);
    hist_add(&ex->gw->stats.overhead_us, ex->busy_ns / 1000);
    exchange_settle(ex);
    exchange_log(ex);
    exchange_metrics(ex);
    exchange_generation(ex);
    buf_free(&ex->delivered);
    buf_free(&ex->tool_held);
    buf_free(&ex->cbuf);
    if (ex->cap) {
        cache_capture_free(ex->cap);
        ex->cap = NULL;
    }
    uv_close((uv_handle_t *)&ex->deadline, on_timer_closed);
    uv_close((uv_handle_t *)&ex->ping, on_timer_closed);
    uv_close((uv_handle_t *)&ex->hedge, on_timer_closed);
    uv_close((uv_handle_t *)&ex->at[0].phase, on_timer_closed);
    uv_close((uv_handle_t *)&ex->at[1].phase, on_timer_closed);
}

/* Model ids that point into the request are copied into the exchange. */
static int keep_names(struct exchange *ex)
{
    size_t total = 0;
    for (size_t i = 0; i < ex->plan.n; i++)
        total += ex->plan.entries[i].borrowed ? ex->plan.entries[i].model_len + 1 : 0;
    if (!total)
        return 0;
    ex->names = malloc(total);
    if (!ex->names)
        return UV_ENOMEM;
    size_t used = 0;
    for (size_t i = 0; i < ex->plan.n; i++) {
        struct plan_entry *e = &ex->plan.entries[i];
        if (!e->borrowed)
            continue;
        memcpy(ex->names + used, e->model, e->model_len);
        ex->names[used + e->model_len] = 0;
        e->model = ex->names + used;
        e->borrowed = 0;
        used += e->model_len + 1;
    }
    return 0;
}

static void init_timer(struct exchange *ex, uv_timer_t *t)
{
    uv_timer_init(ex->gw->loop, t);
    t->data = ex;
    ex->handles++;
}

int exchange_start(struct gateway *gw, struct server_req *req, const struct canon_request *creq,
                   const char *client_model, const struct plan *plan, int key)
{
    struct exchange *ex = calloc(1, sizeof(*ex));
    if (!ex)
        return UV_ENOMEM; /* creq->owned stays the caller's then */
    ex->gw = gw;
    ex->rt = runtime_ref(gw->rt);
    ex->key = key;
    ex->req = req;
    ex->creq = *creq;
    snprintf(ex->request_id, sizeof(ex->request_id), "%s", creq->request_id);
    ex->creq.request_id = ex->request_id;
    snprintf(ex->client_model, sizeof(ex->client_model), "%s", client_model);
    ex->plan = *plan;
    ex->rec = ex->rec_inline;
    if (ex->plan.max_attempts == 0 || ex->plan.max_attempts > EX_MAX_RECORDS)
        ex->plan.max_attempts = ex->plan.max_attempts ? EX_MAX_RECORDS : (uint32_t)plan->n;
    if (creq->codec && !(ex->cs = calloc(1, sizeof(*ex->cs)))) {
        runtime_unref(ex->rt);
        free(ex);
        return UV_ENOMEM;
    }
    if (ex->cs) /* until a chunk names the provider's model */
        snprintf(ex->cs->model, sizeof(ex->cs->model), "%s", client_model);
    if (keep_names(ex) != 0) {
        runtime_unref(ex->rt);
        free(ex->cs);
        free(ex);
        return UV_ENOMEM;
    }
    buf_init(&ex->delivered, MAX_DELIVERED);
    buf_init(&ex->tool_held, 0);
    ex->state = EX_ADMITTING;
    ex->t_start = uv_now(gw->loop);
    ex->created = (long long)time(NULL);
    init_timer(ex, &ex->deadline);
    init_timer(ex, &ex->ping);
    init_timer(ex, &ex->hedge);
    for (int i = 0; i < 2; i++) {
        ex->at[i].ex = ex;
        init_timer(ex, &ex->at[i].phase);
    }
    gw->stats.exchanges_active++;
    health_note_request(ex->rt->health, ex->t_start);
    server_req_watch(req, on_client_abort, on_client_drain, ex);
    uv_timer_start(&ex->deadline, on_deadline, plan->timeouts.total_ms, 0);
    ex->busy_t0 = creq->t_recv_ns ? creq->t_recv_ns : uv_hrtime();
    admission_start(ex);
    busy_leave(ex);
    return 0;
}

void exchange_go(struct exchange *ex)
{
    if (ex->plan.alias && ex->plan.alias->cache_ttl_s && cache_lookup(ex))
        return; /* answered from the cache (no plan runs), or Redis will say */
    exchange_plan(ex);
}

/* Admitted and not answered from the cache: the plan runs. */
static void exchange_plan(struct exchange *ex)
{
    set_state(ex, EX_PLANNED);
    const struct plan *plan = &ex->plan;
    if (ex->creq.stream && plan->timeouts.ping_ms)
        uv_timer_start(&ex->ping, on_ping, plan->timeouts.ping_ms, plan->timeouts.ping_ms);
    uint32_t hedge_ms = plan->hedge_after_ms;
    if (hedge_ms == HEDGE_AUTO) {
        const struct plan_entry *e = &ex->plan.entries[0];
        hedge_ms = e->deployment ? health_p95_ttft(ex->rt->health, e->deployment->health_id) : 0;
    }
    if (hedge_ms && ex->plan.n > 1)
        uv_timer_start(&ex->hedge, on_hedge, hedge_ms, 0);
    start_next(ex, &ex->at[0], 0);
}

void exchange_refuse(struct exchange *ex, int status, const char *type, const char *code,
                     const char *message, uint64_t retry_us, int retry)
{
    char after[24] = "";
    if (retry_us)
        snprintf(after, sizeof(after), "%llu", (unsigned long long)((retry_us + 999999) / 1000000));
    ex->outcome = "error";
    snprintf(ex->end_reason, sizeof(ex->end_reason), "%.199s", message);
    struct buf b;
    buf_init(&b, 0);
    format_error(ex, status, type, code, message, &b);
    respond_json(ex, status, NULL, buf_head(&b), buf_size(&b), !retry, after);
    buf_free(&b);
    exchange_end(ex);
}
