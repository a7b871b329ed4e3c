/* test_exchange: the exchange's state machine driven event by event.
 *
 * The client side is real (an in-process server on 127.0.0.1 with api_handle, a uv_tcp client
 * on the same loop); the upstream side is a stand-in behind gw.upstream (struct upstream_ops)
 * whose callbacks the test calls in the order it wants: head, body pieces, the end or a failure,
 * at any moment. That reaches transitions that process tests only hit by timing: an end marker
 * followed by a reset, a client gone mid-stream, a hedge that fails while the other attempt
 * runs or waits in backoff. Each test checks what the client received, the access-log line, the
 * deployment's health and which upstream attempts were started or cancelled, and every test
 * closes its handles and checks that the loop closes cleanly.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "check.h"
#include "llmux/api.h"
#include "llmux/buf.h"
#include "llmux/config.h"
#include "llmux/errors.h"
#include "llmux/gateway.h"
#include "llmux/health.h"
#include "llmux/server.h"
#include "llmux/upstream.h"

/* ---- the stand-in upstream ---- */

struct fake {
    const struct upstream_cbs *cbs;
    void *data;
    struct buf sent; /* the request bytes the exchange wrote */
    int cancelled;
    int done;
};

#define MAX_FAKES 8
static struct fake *fakes[MAX_FAKES];
static int n_fakes;

static int fake_start(struct pool *p, struct origin *o, const uv_buf_t *bufs, unsigned nbufs,
                      const struct upstream_cbs *cbs, void *data, struct upstream **out)
{
    if (n_fakes == MAX_FAKES)
        return UV_ENOMEM;
    struct fake *f = calloc(1, sizeof(*f));
    f->cbs = cbs;
    f->data = data;
    buf_init(&f->sent, 0);
    for (unsigned i = 0; i < nbufs; i++)
        buf_append(&f->sent, bufs[i].base, bufs[i].len);
    fakes[n_fakes++] = f;
    *out = (struct upstream *)f;
    if (cbs->on_sent) /* as on a pooled connection: written at once */
        cbs->on_sent(data);
    return 0;
}

static void fake_cancel(struct upstream *u)
{
    ((struct fake *)u)->cancelled = 1;
}

static void fake_read(struct upstream *u)
{
}

static const struct upstream_ops fake_ops = {fake_start, fake_cancel, fake_read, fake_read};

static void fake_head(struct fake *f, int status, const char *content_type)
{
    struct http_header h = {"content-type", 12, content_type, strlen(content_type)};
    f->cbs->on_head(f->data, status, &h, 1);
}

static void fake_body(struct fake *f, const char *text)
{
    f->cbs->on_body(f->data, text, strlen(text));
}

static void fake_end(struct fake *f, int status)
{
    f->done = 1;
    f->cbs->on_done(f->data, status, status ? llmux_strerror(status) : "");
}

static void fakes_free(void)
{
    for (int i = 0; i < n_fakes; i++) {
        buf_free(&fakes[i]->sent);
        free(fakes[i]);
    }
    n_fakes = 0;
}

/* ---- the gateway, a server and one client on one loop ---- */

static uv_loop_t loop;
static struct gateway gw;
static char *log_text;
static size_t log_len;

struct client {
    uv_tcp_t tcp;
    uv_connect_t connect;
    struct buf in;
    char *request;
    int eof;
};

static uv_timer_t guard; /* keeps UV_RUN_ONCE from blocking: the loop turns at least every 5 ms */

static void on_guard(uv_timer_t *t)
{
}

static void start(const char *config)
{
    uv_loop_init(&loop);
    struct config *cfg;
    char err[256];
    if (config_parse(config, strlen(config), &cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "config: %s\n", err);
        exit(1);
    }
    if (gateway_init(&gw, &loop, cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "gateway: %s\n", err);
        exit(1);
    }
    config_unref(cfg);
    gw.upstream = &fake_ops;
    gw.access_log = open_memstream(&log_text, &log_len); /* unbuffered path: one write a line */
    struct server_opts so = {.on_head = api_on_head, .request_id = api_request_id};
    if (server_listen(&loop, "127.0.0.1", 0, &so, api_handle, &gw, &gw.server) != 0)
        exit(1);
    uv_timer_init(&loop, &guard);
    uv_timer_start(&guard, on_guard, 5, 5);
}

static void on_server_closed(void *data)
{
}

static void stop(void)
{
    server_shutdown(gw.server, on_server_closed, NULL);
    server_close(gw.server);
    gateway_close(&gw);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    fclose(gw.access_log);
    gw.access_log = NULL;
    gateway_free(&gw);
    CHECK_INT(uv_loop_close(&loop), 0); /* every handle closed */
    free(log_text);
    log_text = NULL;
    fakes_free();
}

/* Turn the loop until cond() holds; at most ~5 s (a failed test, not a hung one). */
static int spin(int (*cond)(void *), void *arg)
{
    for (int i = 0; i < 1000; i++) {
        if (cond(arg))
            return 1;
        uv_run(&loop, UV_RUN_ONCE);
    }
    return cond(arg);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char space[65536];
    *b = uv_buf_init(space, sizeof(space));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct client *c = s->data;
    if (n > 0)
        buf_append(&c->in, b->base, (size_t)n);
    else if (n < 0)
        c->eof = 1;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct client *c = req->data;
    if (status < 0) {
        c->eof = 1;
        return;
    }
    uv_buf_t b = uv_buf_init(c->request, (unsigned)strlen(c->request));
    uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* POST /v1/chat/completions with this JSON body. */
static void client_send(struct client *c, const char *json)
{
    memset(c, 0, sizeof(*c));
    buf_init(&c->in, 0);
    size_t n = strlen(json) + 256;
    c->request = malloc(n);
    snprintf(c->request, n,
             "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(json), json);
    uv_tcp_init(&loop, &c->tcp);
    c->tcp.data = c;
    c->connect.data = c;
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", server_port(gw.server), &sa);
    uv_tcp_connect(&c->connect, &c->tcp, (struct sockaddr *)&sa, on_connect);
}

static void client_close(struct client *c, int reset)
{
    if (reset)
        uv_tcp_close_reset(&c->tcp, NULL);
    else
        uv_close((uv_handle_t *)&c->tcp, NULL);
}

static void client_free(struct client *c)
{
    buf_free(&c->in);
    free(c->request);
}

static int has_fakes(void *n)
{
    return n_fakes >= *(int *)n;
}

static int client_has(void *arg)
{
    void **a = arg;
    struct client *c = a[0];
    const char *text = a[1];
    buf_append(&c->in, "", 1); /* NUL for strstr, then taken back */
    int found = strstr(buf_head(&c->in), text) != NULL;
    c->in.len--;
    return found;
}

static int wait_text(struct client *c, const char *text)
{
    void *arg[2] = {c, (void *)text};
    return spin(client_has, arg);
}

static int log_has(void *text)
{
    fflush(gw.access_log);
    return log_text && strstr(log_text, text) != NULL;
}

static int fake_cancelled(void *f)
{
    return ((struct fake *)f)->cancelled;
}

static char *status_json(void)
{
    struct buf b;
    buf_init(&b, 0);
    health_status_json(gw.rt->health, uv_now(&loop), &b);
    buf_append(&b, "", 1);
    size_t len;
    return buf_steal(&b, &len);
}

#define CHUNK(text)                                                                                \
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","     \
    "\"choices\":[{\"index\":0,\"delta\":{\"content\":\"" text "\"},\"finish_reason\":null}]}\n\n"
#define FINISH                                                                                     \
    "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","     \
    "\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
#define STREAM_REQ(model)                                                                          \
    "{\"model\":\"" model "\",\"stream\":true,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"

static const char *two_deployments =
    "{\"providers\":{\"a\":{\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:9/v1\"},"
    "\"b\":{\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:9/v1\"}},"
    "\"models\":{\"m\":{\"deployments\":[{\"provider\":\"a\",\"model\":\"x\"},"
    "{\"provider\":\"b\",\"model\":\"y\"}],\"on_stream_failure\":\"continue\"},"
    "\"h\":{\"deployments\":[{\"provider\":\"a\",\"model\":\"x\"},{\"provider\":\"b\",\"model\":\"y\"}],"
    "\"hedge_after_ms\":1,\"max_attempts\":3}}}";

/* A gateway on two_deployments and a stream request for `model`, once `attempts` upstream
 * attempts have started. */
static void begin(struct client *c, const char *model, int attempts)
{
    start(two_deployments);
    char body[256];
    snprintf(body, sizeof(body), STREAM_REQ("%s"), model);
    client_send(c, body);
    CHECK(spin(has_fakes, &attempts));
}

static void end(struct client *c)
{
    client_close(c, 0);
    stop();
    client_free(c);
}

/* [DONE], then the connection resets before the chunked terminator: the answer was whole. */
static void test_end_marker_then_reset(void)
{
    struct client c;
    begin(&c, "m", 1);
    struct fake *f = fakes[0];
    fake_head(f, 200, "text/event-stream");
    fake_body(f, CHUNK("hello") FINISH "data: [DONE]\n\n");
    CHECK(wait_text(&c, "0\r\n\r\n")); /* the client's response ended at the marker */
    fake_end(f, UV_ECONNRESET);         /* the upstream dies after it */
    CHECK(spin(log_has, "\"outcome\":\"ok\""));
    buf_append(&c.in, "", 1);
    CHECK(strstr(buf_head(&c.in), "hello") != NULL);
    CHECK(strstr(buf_head(&c.in), "\"error\"") == NULL); /* no error event after [DONE] */
    CHECK_INT(n_fakes, 1);                                /* no continuation started */
    char *st = status_json();
    CHECK(strstr(st, "\"failures\":0") != NULL); /* the deployment is not marked failed */
    CHECK(strstr(st, "\"failures\":1") == NULL);
    free(st);
    end(&c);
}

/* [DONE], then the upstream stalls: the client is done at once; the attempt ends after the
 * drain wait, and the connection is dropped (not pooled). */
static void test_end_marker_then_stall(void)
{
    struct client c;
    begin(&c, "m", 1);
    struct fake *f = fakes[0];
    fake_head(f, 200, "text/event-stream");
    fake_body(f, CHUNK("hi") "data: [DONE]\n\n");
    CHECK(wait_text(&c, "data: [DONE]\n\n\r\n0\r\n\r\n"));
    CHECK(spin(fake_cancelled, f)); /* after the drain wait: no callback comes after this */
    CHECK(spin(log_has, "\"outcome\":\"ok\""));
    CHECK_INT(n_fakes, 1);
    end(&c);
}

/* The client goes away mid-stream: the upstream is cancelled, the log says so. */
static void test_client_gone_mid_stream(void)
{
    struct client c;
    begin(&c, "m", 1);
    struct fake *f = fakes[0];
    fake_head(f, 200, "text/event-stream");
    fake_body(f, CHUNK("one"));
    CHECK(wait_text(&c, "one"));
    client_close(&c, 1); /* reset */
    /* the provider keeps sending until llmux notices; every write after the reset fails */
    for (int i = 0; i < 50 && !f->cancelled; i++) {
        fake_body(f, CHUNK("more"));
        uv_run(&loop, UV_RUN_ONCE);
    }
    CHECK(f->cancelled);
    CHECK(spin(log_has, "\"outcome\":\"client_closed\""));
    CHECK_INT(n_fakes, 1); /* nobody continued a stream nobody reads */
    stop();
    client_free(&c);
}

/* A hedge that fails while the primary still runs: the primary answers. */
static void test_hedge_fails_primary_answers(void)
{
    struct client c;
    begin(&c, "h", 2); /* the hedge started after 1 ms */
    struct fake *primary = fakes[0], *hedge = fakes[1];
    fake_head(hedge, 503, "application/json");
    fake_body(hedge, "{\"error\":{\"message\":\"busy\",\"type\":\"server_error\"}}");
    fake_end(hedge, 0);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_INT(n_fakes, 2); /* nothing new: the primary may still answer */
    CHECK(!primary->cancelled);
    fake_head(primary, 200, "text/event-stream");
    fake_body(primary, CHUNK("from-primary") FINISH "data: [DONE]\n\n");
    fake_end(primary, 0);
    CHECK(wait_text(&c, "0\r\n\r\n"));
    buf_append(&c.in, "", 1);
    CHECK(strstr(buf_head(&c.in), "from-primary") != NULL);
    CHECK(strstr(buf_head(&c.in), "x-llmux-hedged: lost") != NULL);
    CHECK(spin(log_has, "\"outcome\":\"ok\""));
    end(&c);
}

/* Both attempts fail (the hedge last, while the primary's slot is idle): the plan is tried
 * again after a backoff, and the third attempt answers. */
static void test_hedge_fails_then_backoff_retry(void)
{
    struct client c;
    begin(&c, "h", 2);
    int three = 3;
    fake_head(fakes[0], 500, "application/json");
    fake_end(fakes[0], 0);
    fake_head(fakes[1], 502, "application/json");
    fake_end(fakes[1], 0);
    CHECK(spin(has_fakes, &three)); /* after the backoff: the first deployment again */
    fake_head(fakes[2], 200, "text/event-stream");
    fake_body(fakes[2], CHUNK("third") "data: [DONE]\n\n");
    fake_end(fakes[2], 0);
    CHECK(wait_text(&c, "0\r\n\r\n"));
    buf_append(&c.in, "", 1);
    CHECK(strstr(buf_head(&c.in), "third") != NULL);
    CHECK(strstr(buf_head(&c.in), "x-llmux-attempts: 3") != NULL);
    CHECK(spin(log_has, "\"outcome\":\"ok\""));
    CHECK_INT(n_fakes, 3);
    end(&c);
}

/* A stream that breaks after content continues on the next deployment (continue mode), and
 * the request the continuation sends carries the delivered text. */
static void test_reset_after_content_continues(void)
{
    struct client c;
    begin(&c, "m", 1);
    int two = 2;
    fake_head(fakes[0], 200, "text/event-stream");
    fake_body(fakes[0], CHUNK("first part"));
    CHECK(wait_text(&c, "first part"));
    fake_end(fakes[0], UV_ECONNRESET);
    CHECK(spin(has_fakes, &two));
    buf_append(&fakes[1]->sent, "", 1);
    CHECK(strstr(buf_head(&fakes[1]->sent), "first part") != NULL);
    fake_head(fakes[1], 200, "text/event-stream");
    fake_body(fakes[1], CHUNK(" and the rest") FINISH "data: [DONE]\n\n");
    fake_end(fakes[1], 0);
    CHECK(wait_text(&c, "0\r\n\r\n"));
    buf_append(&c.in, "", 1);
    CHECK(strstr(buf_head(&c.in), "\"continued\":true") != NULL);
    CHECK(spin(log_has, "\"outcome\":\"ok\""));
    end(&c);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* as llmux does: a write to a reset client is an error, not death */
    test_end_marker_then_reset();
    test_end_marker_then_stall();
    test_client_gone_mid_stream();
    test_hedge_fails_primary_answers();
    test_hedge_fails_then_backoff_retry();
    test_reset_after_content_continues();
    return check_report();
}
