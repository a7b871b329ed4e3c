/* conn: one byte stream over TCP, optionally wrapped in TLS (mbedTLS), client or server side.
 *
 * The same object carries llmux's client connections, its upstream connections and mockllm's
 * HTTPS, so protocol code (server, upstream) never sees whether bytes are encrypted.
 *
 * Lifecycle: conn_connect()/conn_accept() allocate; the owner receives callbacks; the owner
 * calls conn_close() exactly once; on_close runs later (from the uv_close callback of the last
 * handle) and the conn's memory is freed right after on_close returns. conn_close() is safe to
 * call from inside any of the conn's own callbacks: nothing is freed until the loop turns.
 * After conn_close() no callback but on_close is called.
 *
 * Every socket gets TCP_NODELAY. TLS: minimum TLS 1.2; client side verifies the peer chain
 * (REQUIRED) against the tls_ctx's CA chain and checks the host name given to conn_connect()
 * (also sent as SNI); a verification failure fails the connect with LLMUX_ETLSVERIFY and is
 * never downgraded to an unverified connection. Client sessions are resumed when possible:
 * the context keeps one per origin (host name and port), and while the first full handshake to
 * an origin is in flight, further connections to it wait for its session (after their TCP
 * connect, up to a bound: see conn.c) instead of making full handshakes of their own.
 */
#ifndef LLMUX_CONN_H
#define LLMUX_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

/* Shared TLS configuration: load once per process, share by every connection using it. */
struct tls_ctx;

/* Client context verifying against ca_file (PEM bundle), or the system CA bundle when NULL.
 * Returns 0, or LLMUX_ETLS with a message in err (e.g. "cannot load CA file X: ..."). */
int tls_ctx_client(const char *ca_file, struct tls_ctx **out, char *err, size_t errlen);
/* Server context presenting cert_file (PEM chain) with key_file. */
int tls_ctx_server(const char *cert_file, const char *key_file, struct tls_ctx **out, char *err,
                   size_t errlen);
/* Handshakes completed with this context, and how many of them resumed a session. Server
 * side, `offered` (may be NULL) counts the handshakes whose client offered a session ID,
 * resumed or not (a client never offers one session to two origins). */
void tls_ctx_counts(const struct tls_ctx *t, uint64_t *handshakes, uint64_t *resumed,
                    uint64_t *offered);
/* Frees the context. Every conn using it must be closed (on_close run) before. */
void tls_ctx_free(struct tls_ctx *t);

struct conn;

struct conn_cbs {
    /* Client side: the TCP connection (and the TLS handshake, if any) completed (status 0) or
     * failed (status < 0: UV_ECONNREFUSED, LLMUX_ETLSVERIFY, ...). On failure the owner still
     * calls conn_close(). Server side: called with 0 once the TLS handshake is done; may be NULL. */
    void (*on_connect)(struct conn *c, int status);
    /* Plaintext bytes from the peer; borrowed, valid only during the call. */
    void (*on_read)(struct conn *c, const char *data, size_t len);
    /* The peer closed (UV_EOF) or the connection failed (other codes, e.g. UV_ECONNRESET).
     * No on_read follows. The owner decides when to conn_close(). */
    void (*on_eof)(struct conn *c, int status);
    /* Everything queued by conn_write() has reached the socket. May be NULL. */
    void (*on_drain)(struct conn *c);
    /* Last callback: the handles are closed; the conn is freed when this returns. May be NULL. */
    void (*on_close)(struct conn *c);
};

/* Connect to addr (IPv4 or IPv6). tls NULL: plain TCP; else TLS with host name `host`
 * (SNI and certificate check; borrowed, copied). Returns 0 and later calls on_connect, or a
 * negative code and no callback is ever called (nothing to close). */
int conn_connect(uv_loop_t *loop, const struct sockaddr *addr, struct tls_ctx *tls,
                 const char *host, const struct conn_cbs *cbs, void *data, struct conn **out);

/* Accept a pending connection from a listening server stream; reading starts at once (after
 * the TLS handshake when tls is set). Returns 0 or a negative code (no conn then). */
int conn_accept(uv_stream_t *server, struct tls_ctx *tls, const struct conn_cbs *cbs, void *data,
                struct conn **out);

void *conn_data(const struct conn *c);

/* Write bytes (encrypted first when TLS: the pieces become as few records as fit, all written
 * in one system call). What the socket does not take at once is copied into
 * the conn's queue, so the caller's buffers are free on return. Returns 0 or a negative code
 * (the conn is then broken: on_eof follows or has been called). */
int conn_write(struct conn *c, const uv_buf_t *bufs, unsigned nbufs);
/* The same, for a large last piece inside `owned` (a malloc'd block; taken over, freed with
 * free()): what the socket does not take at once is queued from `owned` itself instead of a
 * copy, so a big answer to a slow client is held once, not twice. */
int conn_write_owned(struct conn *c, const uv_buf_t *bufs, unsigned nbufs, char *owned);
/* The same, for output that may wait a little: called while a read callback of any conn runs,
 * the bytes (up to 16 KiB, copied) wait and leave in one write with the rest given during that
 * callback, when it returns; on_drain follows if the kernel took it all. The server writes SSE
 * events with it, so the events decoded from one upstream read leave in one write. Outside a
 * read callback, or when they do not fit, it is conn_write() (after what waits). */
int conn_write_batched(struct conn *c, const uv_buf_t *bufs, unsigned nbufs);
/* Write system calls made so far (uv_try_write attempts, and queued writes when the socket
 * was busy): a TLS conn_write() makes one however many pieces and records it has. */
uint64_t conn_socket_writes(const struct conn *c);
/* Bytes accepted by conn_write() not yet handed to the kernel (backpressure signal). */
size_t conn_queued(const struct conn *c);
/* Bytes handed to the kernel since the start (ciphertext for TLS), partial writes included:
 * a send timeout sees whether queued output moves. */
uint64_t conn_flushed(const struct conn *c);

/* Backpressure on the read side: stop and resume on_read delivery. Bytes TLS has already
 * decrypted are delivered after conn_read_start(). */
void conn_read_stop(struct conn *c);
void conn_read_start(struct conn *c);

/* Close. reset != 0 aborts with a TCP RST (used to stop an upstream generating tokens and in
 * tests). Idempotent. */
void conn_close(struct conn *c, int reset);

/* Text of the last failure (e.g. "certificate verification failed: hostname mismatch"), or "". */
const char *conn_error(const struct conn *c);
/* Whether the TLS handshake resumed a saved session. */
int conn_tls_resumed(const struct conn *c);
/* Bytes received but not delivered to on_read yet (TLS: records still buffered or decrypted
 * inside mbedTLS). A connection with any is not idle, so it must not go back to a pool. */
size_t conn_pending(const struct conn *c);

#endif
