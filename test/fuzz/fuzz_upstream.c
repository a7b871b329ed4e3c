/* fuzz_upstream: libFuzzer harness for the upstream response path: bytes from a provider's
 * socket -> src/upstream.c (llhttp response parser: status, headers, content-length, chunked
 * or close-delimited bodies, 1xx, keep-alive and the pool) -> the SSE decoder (src/sse.c) ->
 * a provider adapter's stream decoder (openai, azure, anthropic, gemini), or its whole-body
 * and error decoders, exactly as the exchange feeds them. Built by CMake with
 * -DLLMUX_FUZZ=ON (make build-fuzz); run with `make fuzz` or test/fuzz/run.sh. Seeds:
 * corpus/upstream/, dictionary: upstream.dict.
 *
 * It runs in-process with real sockets and no hook in src/: one uv loop, a pool (at most one
 * idle connection per origin) and a fake provider listening on 127.0.0.1 port 0. Per input
 * upstream_start() sends a request; the fake provider accepts, writes the input as its answer
 * in pieces (one piece per loop turn), then half-closes and reads until the client closes.
 * The harness's callbacks do what the exchange does: a 2xx answer to a stream request must be
 * text/event-stream (else the upstream is cancelled from inside on_head), its body goes to
 * sse_decoder_feed and each event to adapter->stream_event (an undecodable event cancels the
 * upstream from inside on_body); at the end sse_decoder_finish and stream_finish. Other
 * answers are collected (capped like the exchange's) for decode_body or decode_error.
 *
 * Input: byte 0 chooses the adapter (bits 0-1: openai, azure, anthropic, gemini), a stream
 * request (bit 2), include_usage (bit 3) and the piece sizes (bits 4-7: 0 = all at once, else
 * the seed of a small generator); the rest is the provider's answer.
 *
 * Besides memory errors, leaks and undefined behaviour it checks:
 *   - on_head runs at most once, with a final status (200..999) and NUL-terminated header
 *     names and values of the announced lengths; on_done runs exactly once (unless
 *     cancelled) and nothing runs after it or after upstream_cancel();
 *   - no body before the head (a status below 100 is malformed, not a 1xx; regression:
 *     regressions/upstream/status-below-100-body-without-head), and the final head carries
 *     only its own headers, not an interim (1xx) head's (regressions/upstream/interim-headers-leak);
 *   - a success (status 0) had a head, and its body is exactly the bytes a content-length
 *     announced, when one did (not chunked, not 204/304);
 *   - every chunk an adapter emits is a JSON object or [DONE] (fuzz_checks.h), decode_body
 *     leaves valid JSON or nothing, decode_error always writes a JSON error body;
 *   - the exchange ends: both sockets close and the pool holds no connection afterwards
 *     (each input must finish within 5 s of wall time).
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "llmux/adapter.h"
#include "llmux/buf.h"
#include "llmux/dns.h"
#include "llmux/errors.h"
#include "llmux/sse.h"
#include "llmux/upstream.h"
#include "fuzz_checks.h"

#define DEADLINE_NS (5ull * 1000 * 1000 * 1000)
#define MAX_BODY (32u << 20)      /* as src/exchange.c */
#define MAX_ERROR_BODY (64u << 10) /* as src/exchange.c */

static uv_loop_t loop;
static struct dns *dns;
static struct pool *pool;
static struct origin *origin;
static uv_tcp_t listener;
static struct input *current; /* the input being run; the fake provider's one connection */
static const int strict = 1; /* the checks for bugs once open (1xx heads, status < 100) */

static const char request[] = "POST /v1/chat/completions HTTP/1.1\r\n"
                              "host: 127.0.0.1\r\n"
                              "content-type: application/json\r\n"
                              "content-length: 2\r\n\r\n{}";

/* One input: the fake provider's side and the client's side. */
struct input {
    /* the fake provider */
    uv_tcp_t peer;
    uv_idle_t idle;
    uv_shutdown_t sreq;
    const char *out;
    size_t out_len, off, piece_end;
    unsigned seed;
    int accepted, writes_done, shut, peer_closed, idle_closed;
    /* the client (what the exchange would hold) */
    const struct adapter *ad;
    struct canon_request creq;
    struct upstream *up;
    int heads, done, cancelled, status;
    int interim; /* the answer starts with a status below 200 (see strict) */
    enum { MODE_NONE, MODE_SSE, MODE_BODY, MODE_ERROR } mode;
    long long content_length; /* announced, -1 when none or chunked */
    size_t body_bytes;
    struct sse_decoder sse;
    int sse_on;
    struct adapter_stream ast;
    int ast_on;
    int emitted;
    struct buf body;
};

/* ---- the client side: the exchange's part ---- */

static void cancel(struct input *in)
{
    upstream_cancel(in->up);
    in->up = NULL;
    in->cancelled = 1;
}

static int on_event(void *data, const struct sse_event *ev)
{
    struct input *in = data;
    int rc = in->ad->stream_event(&in->ast, ev->event, ev->event_len, ev->data, ev->data_len,
                                  fuzz_check_chunk, &in->emitted);
    if (rc != 0 && rc != 1 && rc != LLMUX_EPROTO)
        abort();
    return rc;
}

static void on_head(void *data, int status, const struct http_header *h, size_t n)
{
    struct input *in = data;
    if (in->done || in->cancelled || in->heads++ || status < 200 || status > 999)
        abort();
    in->status = status;
    const char *ct = "";
    in->content_length = -1;
    int chunked = 0, n_cl = 0;
    for (size_t i = 0; i < n; i++) {
        if (!h[i].name || !h[i].value || strlen(h[i].name) != h[i].name_len ||
            strlen(h[i].value) != h[i].value_len)
            abort();
        if (strcasecmp(h[i].name, "content-type") == 0)
            ct = h[i].value;
        else if (strcasecmp(h[i].name, "content-length") == 0 && ++n_cl)
            in->content_length = strtoll(h[i].value, NULL, 10);
        else if (strcasecmp(h[i].name, "transfer-encoding") == 0)
            chunked = 1;
    }
    if (strict && n_cl > 1)
        abort(); /* llhttp refuses two in one head: these came from an interim head */
    if (chunked || (!strict && in->interim))
        in->content_length = -1; /* not checked: maybe an interim head's */
    if (status < 200 || status >= 300) {
        buf_init(&in->body, MAX_ERROR_BODY);
        in->mode = MODE_ERROR;
        return;
    }
    if (in->creq.stream) {
        if (strncasecmp(ct, "text/event-stream", 17) != 0) {
            cancel(in); /* the exchange fails the attempt: cancelled inside on_head */
            return;
        }
        memset(&in->ast, 0, sizeof(in->ast));
        in->ast.req = &in->creq;
        in->ast.model = "m/1";
        if (in->ad->stream_open(&in->ast) != 0)
            abort();
        in->ast_on = 1;
        sse_decoder_init(&in->sse, 0, 0, on_event, in);
        in->sse_on = 1;
        in->mode = MODE_SSE;
        return;
    }
    buf_init(&in->body, MAX_BODY);
    in->mode = MODE_BODY;
}

static void on_body(void *data, const char *p, size_t n)
{
    struct input *in = data;
    if (in->done || in->cancelled || (strict && !in->heads))
        abort();
    if (!in->heads)
        return; /* as the exchange: body bytes before a head are dropped */
    in->body_bytes += n;
    if (in->mode == MODE_SSE) {
        int rc = sse_decoder_feed(&in->sse, p, n);
        if (rc != 0)
            cancel(in); /* malformed stream, undecodable event or enough chunks */
        return;
    }
    if (buf_append(&in->body, p, n) != 0)
        cancel(in); /* over the exchange's cap */
}

static void on_done(void *data, int status, const char *detail)
{
    struct input *in = data;
    if (in->done++ || in->cancelled || !detail || status > 0)
        abort();
    in->up = NULL;
    if (status < 0)
        return;
    if (!in->heads)
        abort(); /* a success without a response head */
    if (in->content_length >= 0 && in->status != 204 && in->status != 304 &&
        (size_t)in->content_length != in->body_bytes)
        abort(); /* a complete response whose body is not what content-length said */
    if (in->mode == MODE_SSE) {
        int truncated = sse_decoder_finish(&in->sse);
        int complete = in->ad->stream_finish(&in->ast, fuzz_check_chunk, &in->emitted);
        if ((truncated != 0 && truncated != 1) || (complete != 0 && complete != 1))
            abort();
    } else if (in->mode == MODE_BODY) {
        struct buf out;
        struct usage u;
        buf_init(&out, 0);
        if (in->ad->decode_body(&in->creq, "m/1", buf_head(&in->body), buf_size(&in->body),
                                &out, &u) == 0)
            fuzz_check_json(&out, 1);
        buf_free(&out);
    } else if (in->mode == MODE_ERROR) {
        struct buf out;
        buf_init(&out, 0);
        char why[160];
        in->ad->decode_error(in->status, buf_head(&in->body), buf_size(&in->body), &out, why,
                             sizeof(why));
        if (buf_size(&out))
            fuzz_check_json(&out, 0);
        buf_free(&out);
    }
}

static const struct upstream_cbs cbs = {
    .on_head = on_head,
    .on_body = on_body,
    .on_done = on_done,
};

/* ---- the fake provider ---- */

static void on_peer_closed(uv_handle_t *h)
{
    struct input *in = h->data;
    if (h == (uv_handle_t *)&in->peer)
        in->peer_closed = 1;
    else
        in->idle_closed = 1;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char space[64 * 1024];
    *b = uv_buf_init(space, sizeof(space));
}

/* The request is read and dropped; the end of it (EOF or a reset) closes our side. */
static void on_peer_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct input *in = s->data;
    if (n < 0 && !uv_is_closing((uv_handle_t *)&in->peer))
        uv_close((uv_handle_t *)&in->peer, on_peer_closed);
}

static void on_shutdown(uv_shutdown_t *r, int status)
{
}

/* Once per loop turn: the next piece of the answer, then a half-close. */
static void on_idle(uv_idle_t *h)
{
    struct input *in = h->data;
    if (!in->accepted || in->shut || uv_is_closing((uv_handle_t *)&in->peer))
        return;
    if (!in->writes_done) {
        if (in->off == in->piece_end) {
            size_t k = in->out_len - in->off;
            if (in->seed) {
                in->seed = in->seed * 1103515245u + 12345u;
                size_t want = 1 + (in->seed >> 16) % 61;
                k = want < k ? want : k;
            }
            in->piece_end = in->off + k;
        }
        uv_buf_t b = uv_buf_init((char *)in->out + in->off, (unsigned)(in->piece_end - in->off));
        int rc = b.len ? uv_try_write((uv_stream_t *)&in->peer, &b, 1) : 0;
        if (rc > 0)
            in->off += (size_t)rc;
        else if (rc < 0 && rc != UV_EAGAIN)
            in->writes_done = 1; /* the client went away */
        if (in->off == in->out_len)
            in->writes_done = 1;
        return;
    }
    in->shut = 1;
    if (uv_shutdown(&in->sreq, (uv_stream_t *)&in->peer, on_shutdown) != 0)
        uv_close((uv_handle_t *)&in->peer, on_peer_closed);
}

static void on_connection(uv_stream_t *l, int status)
{
    struct input *in = current;
    if (status < 0 || !in || in->accepted)
        abort(); /* one connection per input: the pool never holds one across inputs */
    uv_tcp_init(&loop, &in->peer);
    in->peer.data = in;
    if (uv_accept(l, (uv_stream_t *)&in->peer) != 0)
        abort();
    uv_tcp_nodelay(&in->peer, 1);
    in->accepted = 1;
    uv_read_start((uv_stream_t *)&in->peer, on_alloc, on_peer_read);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    if (dns_create(&loop, &dns) != 0 || pool_create(&loop, dns, 1, 60000, &pool) != 0)
        abort();
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&loop, &listener);
    if (uv_tcp_bind(&listener, (struct sockaddr *)&sa, 0) != 0 ||
        uv_listen((uv_stream_t *)&listener, 16, on_connection) != 0)
        abort();
    int len = sizeof(sa);
    uv_tcp_getsockname(&listener, (struct sockaddr *)&sa, &len);
    origin = pool_origin(pool, NULL, "127.0.0.1", ntohs(sa.sin_port));
    return origin ? 0 : -1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const enum provider_kind kinds[] = {PROVIDER_OPENAI, PROVIDER_AZURE,
                                               PROVIDER_ANTHROPIC, PROVIDER_GEMINI};
    if (size < 1)
        return 0;
    struct input *in = calloc(1, sizeof(*in));
    in->ad = adapter_for(kinds[data[0] & 3]);
    in->creq.endpoint = API_CHAT;
    in->creq.body = "{}";
    in->creq.body_len = 2;
    in->creq.stream = data[0] >> 2 & 1;
    in->creq.include_usage = data[0] >> 3 & 1;
    in->creq.request_id = "fuzz";
    in->seed = data[0] >> 4;
    in->out = (const char *)data + 1;
    in->out_len = size - 1;
    in->interim = in->out_len > 12 && memcmp(in->out, "HTTP/1.", 7) == 0 &&
                  (in->out[9] == '0' || in->out[9] == '1');
    buf_init(&in->body, 0);
    current = in;
    uv_idle_init(&loop, &in->idle);
    in->idle.data = in;
    uv_idle_start(&in->idle, on_idle);

    uv_buf_t req = uv_buf_init((char *)request, sizeof(request) - 1);
    if (upstream_start(pool, origin, &req, 1, &cbs, in, &in->up) != 0)
        abort();
    uint64_t t0 = uv_hrtime();
    while (!(in->done || in->cancelled) || !in->peer_closed || pool_get_stats(pool)->idle > 0) {
        uv_run(&loop, UV_RUN_ONCE);
        if (uv_hrtime() - t0 > DEADLINE_NS) {
            fprintf(stderr, "fuzz_upstream: the exchange did not end within 5 s\n");
            abort();
        }
    }
    uv_close((uv_handle_t *)&in->idle, on_peer_closed);
    while (!in->idle_closed)
        uv_run(&loop, UV_RUN_ONCE);
    uv_run(&loop, UV_RUN_NOWAIT); /* the client connection's close callbacks */
    current = NULL;
    if (in->sse_on)
        sse_decoder_free(&in->sse);
    if (in->ast_on)
        in->ad->stream_close(&in->ast);
    buf_free(&in->body);
    free(in);
    return 0;
}
