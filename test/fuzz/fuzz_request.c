/* fuzz_request: libFuzzer harness for the HTTP request path: bytes from a client socket ->
 * the server (src/server.c: llhttp request parser, our callbacks, header collection, limits,
 * timeouts, pipelining, keep-alive) -> the api (src/api.c: routes, keys, body validation) ->
 * router and exchange, whose upstream attempts are refused at once (every provider points at a
 * bound port nobody listens on). Built by CMake with -DLLMUX_FUZZ=ON (make build-fuzz); run
 * with `make fuzz` or test/fuzz/run.sh. Seeds: corpus/request/, dictionary: request.dict.
 *
 * It runs the real thing in-process, with no hook in src/: one uv loop, two gateways each with
 * a server on 127.0.0.1 port 0 (A: default limits, no gateway keys; B: tiny limits (URL 64,
 * headers 256, body 512 bytes) and a gateway key). Per input a client socket connects, writes
 * the bytes in pieces (one piece per loop turn so the server reads them separately), waits
 * until every request the server took has been answered and nothing moves any more, then
 * either half-closes (the server sees EOF) or resets, and reads until the server closes.
 *
 * Input: byte 0 chooses the server (bit 0), the ending (bit 1: reset instead of half-close)
 * and the piece sizes (bits 2-7: 0 = all at once, else the seed of a small generator); the
 * rest is what the client sends.
 *
 * Besides memory errors, leaks and undefined behaviour it checks what a client relies on:
 *   - the server's output parses as HTTP/1.1 responses (llhttp, response mode), each with a
 *     status 100..599, exactly one framing header (content-length, or transfer-encoding:
 *     chunked) and one connection header, keep-alive or close; a JSON body parses, and an
 *     error status carries {"error":{"message":...}};
 *   - responses answer the requests in order, and a response to HEAD has no body (the input
 *     is parsed on the side with llhttp to know the methods; regression:
 *     regressions/request/head-answer-has-body);
 *   - nothing follows a "connection: close" response, and the server closes after it;
 *   - a response is never cut short; the connection always ends (no hang: each input must
 *     finish within 5 s of wall time) and the server has no connection left afterwards.
 */
#include <cjson/cJSON.h>
#include <llhttp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "llmux/api.h"
#include "llmux/buf.h"
#include "llmux/config.h"
#include "llmux/gateway.h"
#include "llmux/server.h"

#define MAX_REQS 64
#define DEADLINE_NS (5ull * 1000 * 1000 * 1000)
#define QUIET_TURNS 3

static uv_loop_t loop;
static uv_tcp_t dead; /* bound, never listening: connecting to it is refused */
static struct gateway gw[2];
static struct server *srv[2];

/* One input's client connection and what it has seen. */
struct client {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_shutdown_t sreq;
    uv_idle_t idle;
    const char *in;
    size_t in_len, off, piece_end;
    unsigned seed;
    int reset; /* end with a reset rather than a half-close */
    int connected, writes_done, shut, eof, closed, idle_closed;
    int quiet;
    uint64_t rx, rx_seen, req_seen;
    uint64_t reqs_before;
    /* the requests in the input, from a side parse: their methods, in order */
    int methods[MAX_REQS];
    size_t n_reqs;
    /* the response parser */
    llhttp_t rp;
    int in_msg;
    size_t finals;  /* non-1xx responses */
    int after_close; /* a "connection: close" response ended */
    char hname[64];
    size_t hname_len;
    char hvalue[256];
    size_t hvalue_len;
    int n_cl, n_te, n_conn, conn_close, is_json;
    struct buf body;
};

static llhttp_settings_t resp_settings, req_settings;
static const int check_head = 1; /* a response to HEAD has no body */

/* ---- the response parser's callbacks ---- */

static struct client *rp_client(llhttp_t *p)
{
    return (struct client *)((char *)p - offsetof(struct client, rp));
}

static int on_r_begin(llhttp_t *p)
{
    struct client *c = rp_client(p);
    if (c->after_close)
        abort(); /* bytes after a "connection: close" response */
    c->in_msg = 1;
    c->n_cl = c->n_te = c->n_conn = c->conn_close = c->is_json = 0;
    c->hname_len = c->hvalue_len = 0;
    buf_reset(&c->body);
    return 0;
}

static int on_r_field(llhttp_t *p, const char *at, size_t n)
{
    struct client *c = rp_client(p);
    size_t k = n < sizeof(c->hname) - 1 - c->hname_len ? n : sizeof(c->hname) - 1 - c->hname_len;
    memcpy(c->hname + c->hname_len, at, k);
    c->hname_len += k;
    return 0;
}

static int on_r_value(llhttp_t *p, const char *at, size_t n)
{
    struct client *c = rp_client(p);
    size_t room = sizeof(c->hvalue) - 1 - c->hvalue_len;
    size_t k = n < room ? n : room;
    memcpy(c->hvalue + c->hvalue_len, at, k);
    c->hvalue_len += k;
    return 0;
}

static int on_r_value_complete(llhttp_t *p)
{
    struct client *c = rp_client(p);
    c->hname[c->hname_len] = 0;
    c->hvalue[c->hvalue_len] = 0;
    if (strcasecmp(c->hname, "content-length") == 0)
        c->n_cl++;
    else if (strcasecmp(c->hname, "transfer-encoding") == 0) {
        if (strcmp(c->hvalue, "chunked") != 0)
            abort();
        c->n_te++;
    } else if (strcasecmp(c->hname, "connection") == 0) {
        if (strcmp(c->hvalue, "close") != 0 && strcmp(c->hvalue, "keep-alive") != 0)
            abort();
        c->n_conn++;
        c->conn_close = strcmp(c->hvalue, "close") == 0;
    } else if (strcasecmp(c->hname, "content-type") == 0) {
        c->is_json = strncmp(c->hvalue, "application/json", 16) == 0;
    }
    c->hname_len = c->hvalue_len = 0;
    return 0;
}

static int on_r_headers_complete(llhttp_t *p)
{
    struct client *c = rp_client(p);
    int status = llhttp_get_status_code(p);
    if (status < 100 || status > 599)
        abort();
    if (status < 200)
        return 0; /* 100 Continue: a bare status line */
    if (c->n_cl + c->n_te != 1 || c->n_conn != 1)
        abort(); /* one framing header, one connection header */
    /* The response to a HEAD request has no body, whatever its headers say. */
    if (check_head && c->finals < c->n_reqs && c->methods[c->finals] == HTTP_HEAD)
        return 1;
    return 0;
}

static int on_r_body(llhttp_t *p, const char *at, size_t n)
{
    struct client *c = rp_client(p);
    if (buf_append(&c->body, at, n) != 0)
        abort(); /* an answer larger than any llmux writes here */
    return 0;
}

static int on_r_complete(llhttp_t *p)
{
    struct client *c = rp_client(p);
    int status = llhttp_get_status_code(p);
    c->in_msg = 0;
    if (status < 200)
        return 0;
    if (c->is_json && buf_size(&c->body) > 0) {
        cJSON *o = cJSON_ParseWithLength(buf_head(&c->body), buf_size(&c->body));
        if (!cJSON_IsObject(o))
            abort();
        if (status >= 400) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(o, "error");
            if (!cJSON_IsString(cJSON_GetObjectItemCaseSensitive(e, "message")))
                abort();
        }
        cJSON_Delete(o);
    }
    c->finals++;
    if (c->conn_close)
        c->after_close = 1;
    return 0;
}

/* ---- the side parse of the input: which requests, in which order ---- */

/* A request counts once its method is read: a client that sent a HEAD reads no body in the
 * answer, even when the answer refuses the request (a bad Host, a malformed line...). */
static int on_q_method_complete(llhttp_t *p)
{
    struct client *c = p->data;
    if (c->n_reqs < MAX_REQS)
        c->methods[c->n_reqs++] = llhttp_get_method(p);
    return 0;
}

static void list_requests(struct client *c)
{
    llhttp_t q;
    llhttp_init(&q, HTTP_REQUEST, &req_settings);
    q.data = c;
    llhttp_execute(&q, c->in, c->in_len);
}

/* ---- the client socket ---- */

static void on_closed(uv_handle_t *h)
{
    struct client *c = h->data;
    if (h == (uv_handle_t *)&c->tcp)
        c->closed = 1;
    else
        c->idle_closed = 1;
}

static void client_close(struct client *c)
{
    if (uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (c->in_msg)
        abort(); /* the server closed in the middle of a response */
    if (c->reset) {
        uv_tcp_close_reset(&c->tcp, on_closed);
        return;
    }
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char space[64 * 1024];
    *b = uv_buf_init(space, sizeof(space));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct client *c = s->data;
    if (n > 0) {
        c->rx += (uint64_t)n;
        llhttp_errno_t err = llhttp_execute(&c->rp, b->base, (size_t)n);
        if (err != HPE_OK) {
            fprintf(stderr, "fuzz_request: malformed response: %s (%s)\n",
                    llhttp_errno_name(err), llhttp_get_error_reason(&c->rp));
            abort();
        }
        return;
    }
    if (n < 0) {
        c->eof = 1;
        if (n == UV_EOF && llhttp_finish(&c->rp) != HPE_OK)
            abort();
        client_close(c);
    }
}

static void on_shutdown(uv_shutdown_t *r, int status)
{
}

/* Once per loop turn: write the next piece, or decide that the exchange is over. */
static void on_idle(uv_idle_t *h)
{
    struct client *c = h->data;
    if (!c->connected || c->eof || uv_is_closing((uv_handle_t *)&c->tcp))
        return;
    if (!c->writes_done) {
        if (c->off == c->piece_end) {
            size_t k = c->in_len - c->off;
            if (c->seed) {
                c->seed = c->seed * 1103515245u + 12345u;
                size_t want = 1 + (c->seed >> 16) % 97;
                k = want < k ? want : k;
            }
            c->piece_end = c->off + k;
        }
        uv_buf_t b = uv_buf_init((char *)c->in + c->off, (unsigned)(c->piece_end - c->off));
        int rc = b.len ? uv_try_write((uv_stream_t *)&c->tcp, &b, 1) : 0;
        if (rc > 0)
            c->off += (size_t)rc;
        else if (rc < 0 && rc != UV_EAGAIN)
            c->writes_done = 1; /* the server closed: stop writing, read what it said */
        if (c->off == c->in_len)
            c->writes_done = 1;
        c->quiet = 0;
        return;
    }
    /* Everything sent: wait until every request the server took is answered and nothing
     * has moved for a few turns (pipelined requests are taken from a zero timer). */
    uint64_t reqs = 0;
    for (int i = 0; i < 2; i++)
        reqs += server_get_stats(srv[i])->requests;
    reqs -= c->reqs_before;
    if (c->rx != c->rx_seen || reqs != c->req_seen || c->finals < reqs) {
        c->rx_seen = c->rx;
        c->req_seen = reqs;
        c->quiet = 0;
        return;
    }
    if (++c->quiet < QUIET_TURNS || c->shut)
        return;
    if (c->reset) {
        client_close(c);
        return;
    }
    c->shut = 1;
    if (uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
        client_close(c);
}

static void on_connect(uv_connect_t *r, int status)
{
    struct client *c = r->data;
    if (status < 0) {
        fprintf(stderr, "fuzz_request: connect: %s\n", uv_strerror(status));
        abort();
    }
    c->connected = 1;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

/* ---- set-up, once ---- */

static void start_gateway(int i, uint16_t dead_port)
{
    char json[2048];
    snprintf(json, sizeof(json),
             "{\"listen\":\"127.0.0.1:0\",\"timeouts_ms\":{\"ping\":0},"
             "\"providers\":{"
             "\"oa\":{\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:%u/v1\"},"
             "\"an\":{\"kind\":\"anthropic\",\"base_url\":\"http://127.0.0.1:%u/v1\"},"
             "\"ge\":{\"kind\":\"gemini\",\"base_url\":\"http://127.0.0.1:%u/v1beta\"},"
             "\"az\":{\"kind\":\"azure\",\"base_url\":\"http://127.0.0.1:%u\"},"
             "\"off\":{\"kind\":\"openai\",\"base_url\":\"http://127.0.0.1:%u/v1\","
             "\"api_key_env\":\"FUZZ_UNSET_KEY\"}},"
             "\"models\":{"
             "\"m\":{\"deployments\":[{\"provider\":\"oa\",\"model\":\"gpt\"},"
             "{\"provider\":\"an\",\"model\":\"claude\",\"context_window\":100000}]},"
             "\"g\":{\"strategy\":\"price\",\"deployments\":[{\"provider\":\"ge\",\"model\":"
             "\"gem\",\"price\":{\"input\":1,\"output\":2}},{\"provider\":\"az\",\"model\":"
             "\"dep\"}]},"
             "\"c\":{\"on_stream_failure\":\"continue\",\"deployments\":[{\"provider\":\"an\","
             "\"model\":\"claude\"}]},"
             "\"off\":{\"deployments\":[{\"provider\":\"off\",\"model\":\"x\"}]}}%s}",
             dead_port, dead_port, dead_port, dead_port, dead_port,
             i ? ",\"keys\":[\"fuzz-key\"]" : "");
    struct config *cfg;
    char err[512];
    if (config_parse(json, strlen(json), &cfg, err, sizeof(err)) != 0 ||
        gateway_init(&gw[i], &loop, cfg, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_request: %s\n", err);
        abort();
    }
    config_unref(cfg);
    struct server_opts so = {0};
    if (i == 1) {
        so.max_url_bytes = 64;
        so.max_header_bytes = 256;
        so.max_body_bytes = 512;
    }
    if (server_listen(&loop, "127.0.0.1", 0, &so, api_handle, &gw[i], &srv[i]) != 0)
        abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    signal(SIGPIPE, SIG_IGN);
    unsetenv("FUZZ_UNSET_KEY");
    uv_loop_init(&loop);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    uv_tcp_init(&loop, &dead);
    if (uv_tcp_bind(&dead, (struct sockaddr *)&sa, 0) != 0)
        abort();
    int len = sizeof(sa);
    uv_tcp_getsockname(&dead, (struct sockaddr *)&sa, &len);
    for (int i = 0; i < 2; i++)
        start_gateway(i, ntohs(sa.sin_port));

    llhttp_settings_init(&resp_settings);
    resp_settings.on_message_begin = on_r_begin;
    resp_settings.on_header_field = on_r_field;
    resp_settings.on_header_value = on_r_value;
    resp_settings.on_header_value_complete = on_r_value_complete;
    resp_settings.on_headers_complete = on_r_headers_complete;
    resp_settings.on_body = on_r_body;
    resp_settings.on_message_complete = on_r_complete;
    llhttp_settings_init(&req_settings);
    req_settings.on_method_complete = on_q_method_complete;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct client *c = calloc(1, sizeof(*c));
    int which = data[0] & 1;
    c->reset = data[0] >> 1 & 1;
    c->seed = data[0] >> 2;
    c->in = (const char *)data + 1;
    c->in_len = size - 1;
    buf_init(&c->body, 8u << 20);
    list_requests(c);
    llhttp_init(&c->rp, HTTP_RESPONSE, &resp_settings);
    for (int i = 0; i < 2; i++)
        c->reqs_before += server_get_stats(srv[i])->requests;

    uv_tcp_init(&loop, &c->tcp);
    uv_tcp_nodelay(&c->tcp, 1);
    c->tcp.data = c;
    c->creq.data = c;
    uv_idle_init(&loop, &c->idle);
    c->idle.data = c;
    uv_idle_start(&c->idle, on_idle);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", server_port(srv[which]), &sa);
    if (uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&sa, on_connect) != 0)
        abort();

    uint64_t t0 = uv_hrtime();
    while (!c->closed || server_get_stats(srv[which])->active_connections > 0) {
        uv_run(&loop, UV_RUN_ONCE);
        if (uv_hrtime() - t0 > DEADLINE_NS) {
            fprintf(stderr, "fuzz_request: the connection did not end within 5 s\n");
            abort();
        }
    }
    uv_close((uv_handle_t *)&c->idle, on_closed);
    while (!c->idle_closed)
        uv_run(&loop, UV_RUN_ONCE);
    uv_run(&loop, UV_RUN_NOWAIT); /* the server's close callbacks free its client */
    buf_free(&c->body);
    free(c);
    return 0;
}
