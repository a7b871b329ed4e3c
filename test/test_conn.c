/* conn: plain and TLS streams on loopback against an in-process echo server built on
 * conn_accept. Checks byte-exact round trips (one large enough to be queued), certificate
 * verification failures (wrong CA, wrong host name), refused connects, read backpressure, and
 * that the loop ends with no handle left. Counts write system calls (conn_socket_writes): a
 * TLS write of several pieces and a handshake flight are one write each, and a batching
 * connection's writes during one read callback leave in one write. Needs LLMUX_TEST_CERTS
 * (test/gen-certs.sh). */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "llmux/conn.h"
#include "llmux/errors.h"

static uv_loop_t loop;
static uv_tcp_t listener;
static struct tls_ctx *server_tls;
static int port;

/* ---- echo server ---- */

/* echo_batching: the server echoes each read as three conn_write_batched() calls; the counts
 * below are the last server conn's. */
static int echo_batching;
static uint64_t echo_reads, echo_handshake_writes, echo_writes, echo_drains;
static int echo_queued_wrong; /* batched bytes not counted by conn_queued() in the callback */

static void echo_connect(struct conn *c, int status)
{
    echo_handshake_writes = conn_socket_writes(c);
}

static void echo_read(struct conn *c, const char *p, size_t n)
{
    echo_reads++;
    if (!echo_batching) {
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
        conn_write(c, &b, 1);
        return;
    }
    for (size_t at = 0; at < n;) {
        size_t len = n - at < n / 3 + 1 ? n - at : n / 3 + 1;
        uv_buf_t b = uv_buf_init((char *)p + at, (unsigned)len);
        conn_write_batched(c, &b, 1);
        at += len;
    }
    echo_queued_wrong += conn_queued(c) != n; /* waiting, not lost: a server closing after */
}                                              /* its answer waits for on_drain */

static void echo_drain(struct conn *c)
{
    echo_drains++;
}

static void echo_eof(struct conn *c, int status)
{
    echo_writes = conn_socket_writes(c);
    conn_close(c, 0);
}

static const struct conn_cbs echo_cbs = {.on_connect = echo_connect, .on_read = echo_read,
                                         .on_eof = echo_eof, .on_drain = echo_drain};

static void on_connection(uv_stream_t *s, int status)
{
    struct conn *c;
    echo_reads = echo_handshake_writes = echo_writes = echo_drains = 0;
    conn_accept(s, server_tls, &echo_cbs, NULL, &c);
}

/* ---- client ---- */

struct client {
    struct conn *c;
    int connect_status;
    int connected;
    char *expect;
    size_t expect_len, got;
    int mismatch;
    int drained;
    int closed;
    int stop_after_first; /* read backpressure test */
    int stopped_reads;
    char error[200];
    int resumed;
    unsigned pieces;          /* the request is written as this many pieces in one conn_write */
    uint64_t handshake_writes; /* conn_socket_writes() when connected */
    uint64_t request_writes;   /* ... made by the conn_write() of the request */
};

static void cl_connect(struct conn *c, int status)
{
    struct client *cl = conn_data(c);
    cl->connected = 1;
    cl->connect_status = status;
    snprintf(cl->error, sizeof(cl->error), "%s", conn_error(c));
    cl->resumed = conn_tls_resumed(c);
    if (status < 0) {
        conn_close(c, 0);
        return;
    }
    cl->handshake_writes = conn_socket_writes(c);
    uv_buf_t b[8];
    unsigned n = cl->pieces ? cl->pieces : 1;
    size_t each = cl->expect_len / n;
    for (unsigned i = 0; i < n; i++)
        b[i] = uv_buf_init(cl->expect + i * each,
                           (unsigned)(i + 1 < n ? each : cl->expect_len - i * each));
    CHECK_INT(conn_write(c, b, n), 0);
    cl->request_writes = conn_socket_writes(c) - cl->handshake_writes;
}

static void cl_read(struct conn *c, const char *p, size_t n)
{
    struct client *cl = conn_data(c);
    if (cl->got + n > cl->expect_len || memcmp(cl->expect + cl->got, p, n) != 0)
        cl->mismatch = 1;
    cl->got += n;
    if (cl->stop_after_first && !cl->stopped_reads) {
        cl->stopped_reads = 1;
        conn_read_stop(c);
        return;
    }
    if (cl->got >= cl->expect_len)
        conn_close(c, 0); /* closing from inside on_read */
}

static void cl_eof(struct conn *c, int status)
{
    conn_close(c, 0);
}

static void cl_drain(struct conn *c)
{
    ((struct client *)conn_data(c))->drained++;
}

static void cl_close(struct conn *c)
{
    ((struct client *)conn_data(c))->closed = 1;
}

static const struct conn_cbs client_cbs = {.on_connect = cl_connect, .on_read = cl_read,
                                           .on_eof = cl_eof, .on_drain = cl_drain,
                                           .on_close = cl_close};

static void start_server(struct tls_ctx *tls)
{
    server_tls = tls;
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(&loop, &listener);
    uv_tcp_bind(&listener, (struct sockaddr *)&a, 0);
    uv_listen((uv_stream_t *)&listener, 64, on_connection);
    struct sockaddr_in got;
    int len = sizeof(got);
    uv_tcp_getsockname(&listener, (struct sockaddr *)&got, &len);
    port = ntohs(got.sin_port);
}

static void run_client(struct client *cl, struct tls_ctx *tls, const char *host, int p, size_t size)
{
    memset(cl, 0, sizeof(*cl));
    cl->expect_len = size;
    cl->expect = malloc(size);
    for (size_t i = 0; i < size; i++)
        cl->expect[i] = (char)('a' + (i * 7 + i / 1000) % 26);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", p, &a);
    CHECK_INT(conn_connect(&loop, (struct sockaddr *)&a, tls, host, &client_cbs, cl, &cl->c), 0);
}

static void run_until_closed(struct client *cl)
{
    while (!cl->closed)
        uv_run(&loop, UV_RUN_ONCE);
}

int main(void)
{
    const char *dir = getenv("LLMUX_TEST_CERTS");
    if (!dir) {
        fprintf(stderr, "LLMUX_TEST_CERTS is not set\n");
        return 1;
    }
    char ca[512], other[512], cert[512], key[512], err[256];
    snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
    snprintf(other, sizeof(other), "%s/other-ca.pem", dir);
    snprintf(cert, sizeof(cert), "%s/localhost.pem", dir);
    snprintf(key, sizeof(key), "%s/localhost.key", dir);
    uv_loop_init(&loop);
    struct client cl;

    /* plain: 4 MiB echo is queued (on_drain) and comes back byte-exact */
    start_server(NULL);
    run_client(&cl, NULL, NULL, port, 4 << 20);
    run_until_closed(&cl);
    CHECK_INT(cl.connect_status, 0);
    CHECK_INT(cl.got, 4 << 20);
    CHECK_INT(cl.mismatch, 0);
    CHECK(cl.drained >= 1);
    free(cl.expect);
    uv_close((uv_handle_t *)&listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);

    /* batching: the three writes of each echo leave in one write per read */
    echo_batching = 1;
    start_server(NULL);
    run_client(&cl, NULL, NULL, port, 3000);
    run_until_closed(&cl);
    uv_close((uv_handle_t *)&listener, NULL);
    uv_run(&loop, UV_RUN_DEFAULT); /* the server conn sees the close */
    CHECK_INT(cl.got, 3000);
    CHECK_INT(cl.mismatch, 0);
    CHECK(echo_reads >= 1);
    CHECK_INT(echo_writes, echo_reads);
    CHECK_INT(echo_queued_wrong, 0);
    CHECK_INT(echo_drains, echo_reads); /* each batch left whole when its callback returned */
    free(cl.expect);
    echo_batching = 0;

    /* refused */
    run_client(&cl, NULL, NULL, port, 10);
    run_until_closed(&cl);
    CHECK_INT(cl.connect_status, UV_ECONNREFUSED);
    free(cl.expect);

    /* TLS with the test CA: 1 MiB round trip; a second connection resumes the session */
    struct tls_ctx *srv_tls, *good, *bad;
    CHECK_INT(tls_ctx_server(cert, key, &srv_tls, err, sizeof(err)), 0);
    CHECK_INT(tls_ctx_client(ca, &good, err, sizeof(err)), 0);
    CHECK_INT(tls_ctx_client(other, &bad, err, sizeof(err)), 0);
    struct tls_ctx *none = NULL;
    CHECK_INT(tls_ctx_client("/nonexistent.pem", &none, err, sizeof(err)), LLMUX_ETLS);
    CHECK_CONTAINS(err, "/nonexistent.pem");
    start_server(srv_tls);
    /* a request of four pieces (a head, the body around a spliced model...) is one record and
     * one write; the client's handshake flights (ClientHello; key exchange, change cipher
     * spec, finished) one write each */
    run_client(&cl, good, "localhost", port, 1500);
    cl.pieces = 4;
    run_until_closed(&cl);
    CHECK_INT(cl.connect_status, 0);
    CHECK_INT(cl.got, 1500);
    CHECK_INT(cl.mismatch, 0);
    CHECK_INT(cl.resumed, 0); /* first connection: full handshake */
    CHECK_INT(cl.handshake_writes, 2);
    CHECK_INT(cl.request_writes, 1);
    free(cl.expect);

    /* 100 KB in four pieces: full records across piece boundaries (whole ones straight from
     * the caller's memory), byte-exact, in fewer writes than its seven records */
    run_client(&cl, good, "localhost", port, 100000);
    cl.pieces = 4;
    run_until_closed(&cl);
    CHECK_INT(cl.got, 100000);
    CHECK_INT(cl.mismatch, 0);
    CHECK(cl.request_writes >= 1 && cl.request_writes < 7);
    free(cl.expect);

    run_client(&cl, good, "localhost", port, 1 << 20);
    run_until_closed(&cl);
    CHECK_INT(cl.connect_status, 0);
    CHECK_INT(cl.got, 1 << 20);
    CHECK_INT(cl.mismatch, 0);
    CHECK_INT(cl.resumed, 1); /* the session of the first connection was resumed */
    free(cl.expect);
    uint64_t handshakes, resumed;
    tls_ctx_counts(good, &handshakes, &resumed, NULL); /* every connection after the first resumed */
    CHECK_INT(handshakes, 3);
    CHECK_INT(resumed, 2);
    tls_ctx_counts(srv_tls, &handshakes, &resumed, NULL); /* the server's cache resumed them */
    CHECK_INT(handshakes, 3);
    CHECK_INT(resumed, 2);

    /* TLS server side batching: each echo (three writes) leaves as one write, and its
     * handshake flights as one write each (ServerHello to ServerHelloDone; change cipher
     * spec and finished) */
    echo_batching = 1;
    run_client(&cl, good, "localhost", port, 3000);
    run_until_closed(&cl);
    for (int i = 0; i < 20 && echo_writes == 0; i++)
        uv_run(&loop, UV_RUN_ONCE); /* the server conn sees the close */
    CHECK_INT(cl.got, 3000);
    CHECK_INT(cl.mismatch, 0);
    CHECK(echo_handshake_writes <= 2);
    CHECK(echo_reads >= 1);
    CHECK_INT(echo_writes - echo_handshake_writes, echo_reads);
    free(cl.expect);
    echo_batching = 0;

    /* TLS read backpressure: nothing delivered while stopped, the rest in order after */
    run_client(&cl, good, "localhost", port, 256 << 10);
    cl.stop_after_first = 1;
    while (!cl.stopped_reads)
        uv_run(&loop, UV_RUN_ONCE);
    size_t at_stop = cl.got;
    for (int i = 0; i < 50; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    CHECK_INT(cl.got, at_stop);
    conn_read_start(cl.c);
    run_until_closed(&cl);
    CHECK_INT(cl.resumed, 1); /* second connection to localhost resumed the session */
    CHECK_INT(cl.got, 256 << 10);
    CHECK_INT(cl.mismatch, 0);
    free(cl.expect);

    /* wrong CA: verification fails, never falls back */
    run_client(&cl, bad, "localhost", port, 10);
    run_until_closed(&cl);
    CHECK_INT(cl.connect_status, LLMUX_ETLSVERIFY);
    CHECK_CONTAINS(cl.error, "certificate verification failed");
    CHECK_INT(cl.got, 0);
    free(cl.expect);

    /* right CA, wrong host name */
    run_client(&cl, good, "wrong.example", port, 10);
    run_until_closed(&cl);
    CHECK_INT(cl.connect_status, LLMUX_ETLSVERIFY);
    CHECK_CONTAINS(cl.error, "certificate verification failed");
    free(cl.expect);

    uv_close((uv_handle_t *)&listener, NULL);
    CHECK_INT(uv_run(&loop, UV_RUN_DEFAULT), 0);
    CHECK_INT(uv_loop_close(&loop), 0);
    tls_ctx_free(good);
    tls_ctx_free(bad);
    tls_ctx_free(srv_tls);
    return check_report();
}
