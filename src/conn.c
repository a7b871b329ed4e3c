/* conn: TCP byte stream with optional TLS (mbedTLS 2.28, non-blocking). See
 * include/llmux/conn.h for the contract.
 *
 * struct conn embeds its uv_tcp_t and, for TLS, its mbedtls_ssl_context. Reads go from the
 * socket to mbedTLS (the BIO recv callback reads the shared read buffer in place; only a partial
 * record left at the end of a read is copied into `rx`) and out as plaintext through on_read.
 * Writes go through uv_try_write first; what the kernel does not take is copied into a uv_write
 * request (so callers never keep buffers alive). `queued` counts bytes in flight.
 *
 * One write system call per flush: a TLS conn_write() gathers its pieces (a request's head and
 * the body pieces around the spliced model) into one record, and every record one call makes
 * (a handshake flight, a large body) is corked and handed to the kernel in one write when the
 * call ends. conn_write_batched() holds what it is given while a read callback runs and writes
 * it when the callback returns, so the SSE events decoded from one upstream read leave in one
 * write. The three buffers this takes are process-wide (a flush always completes within the
 * call or read callback that starts it), so a connection holds none of them between calls.
 *
 * Invariant: the conn is freed only in the uv_close callback of its tcp handle, after on_close.
 */
#include "llmux/conn.h"

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ssl_cache.h>
#include <mbedtls/ssl_internal.h> /* MBEDTLS_SSL_IN_BUFFER_LEN, MBEDTLS_SSL_OUT_BUFFER_LEN */
#include <mbedtls/x509_crt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "llmux/buf.h"
#include "llmux/errors.h"

#define READ_SIZE (64 * 1024)
#define OWNED_SLICE (256 * 1024) /* conn_write_owned: pages handed back per slice written */
#define OWNED_MIN (4 * 1024)     /* below this, copying the unsent rest is cheaper */
#define STAGE_SIZE 16384         /* plaintext of one full TLS record */
#define CORK_SIZE (64 * 1024)    /* ciphertext handed to the kernel in one write */
#define BATCH_SIZE (16 * 1024)   /* output a batching connection holds during a read callback */
#define SYSTEM_CA_BUNDLE "/etc/ssl/certs/ca-certificates.crt"
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

struct tls_ctx {
    int server;
    mbedtls_ssl_config conf;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    mbedtls_x509_crt ca;
    mbedtls_x509_crt cert;
    mbedtls_pk_context key;
    mbedtls_ssl_cache_context cache; /* server: sessions clients may resume */
    struct tls_origin *origins;      /* client: sessions and handshakes per host and port */
    uint64_t handshakes, resumed;    /* tls_ctx_counts() */
    uint64_t offered;                /* server: handshakes that offered a session ID */
};

/* A client context's session for one origin (host name and port: a session is never offered
 * to another name, nor to another port of the same name), and the burst that waits for it.
 * The first connection to an origin that has no session yet leads: its full handshake makes
 * the session. Connections that reach the server meanwhile park after their TCP connect (no
 * ClientHello sent) until it is done, then resume it: a cold burst of N connections costs one
 * ECDHE and certificate check instead of N. They stop waiting and make full handshakes of
 * their own when the server leaves the leader waiting for an answer much longer than a whole
 * full handshake to this origin took last time (wait_ms(); the leader's own CPU time, however
 * slow, does not count); when it fails or is closed, the first of them leads instead. */
struct tls_origin {
    struct tls_origin *next;
    uint16_t port;
    int has_session;
    mbedtls_ssl_session session;
    struct conn *leader;   /* the full handshake in flight that will give a session */
    uint64_t leader_since; /* uv_now() when it started */
    uint64_t leader_asked; /* ... when it last began to wait for the server */
    uint64_t full_ms;      /* how long the last full handshake took (0: none yet) */
    struct conn *waiters;  /* parked, first come first */
    uv_timer_t *timer;     /* wakes the waiters while there are any */
    char host[];
};

struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    const struct conn_cbs *cbs;
    void *data;
    struct tls_ctx *tls;
    mbedtls_ssl_context *ssl; /* TLS only (allocated: plain sockets do not pay for it) */
    struct tls_origin *origin; /* TLS client */
    struct conn *next_waiter;  /* in origin->waiters while parked */
    int parked;
    int handshaking;
    int verified; /* a certificate chain was checked: the handshake was a full one */
    int resumed;
    char host[256];
    struct buf rx;  /* TLS: ciphertext received and not yet consumed by mbedTLS */
    const char *in; /* TLS, during a read callback: the read's ciphertext not consumed yet */
    size_t in_len;
    size_t queued;
    uint64_t accepted; /* bytes ever handed to raw_write (ciphertext for TLS) */
    uint64_t socket_writes; /* raw_write calls that reached the socket */
    int closing;
    int reading;     /* on_read delivery wanted */
    int eof_sent;
    char error[160];
};

/* One read buffer for every connection of the process: a read callback consumes its bytes
 * before it returns (parsers copy what they keep; writes copy what they cannot send at once)
 * and callbacks of one loop never nest, so nothing points into it afterwards. Per-connection
 * buffers would cost 64 KiB for each of the two sockets of every stream. */
static char read_buf[READ_SIZE];

/* Plaintext of one TLS conn_write(), encrypted as one record before the call returns. */
static char tls_stage[STAGE_SIZE];

/* Ciphertext of the records one call makes (cork_begin .. cork_end), written at once. */
static struct {
    struct conn *c;
    size_t len;
    unsigned char data[CORK_SIZE];
} cork;

/* conn_write_batched() output of one connection during the running read callbacks; written
 * when the outermost returns (read_turns back to 0). Another connection given batched output
 * in the same callback writes at once. */
static struct {
    struct conn *c;
    size_t len;
    char data[BATCH_SIZE];
} batch;
static unsigned read_turns;

struct write_req {
    uv_write_t req;
    struct conn *c;
    size_t len;
    char *owned; /* a caller's allocation written without a copy, freed when done */
    char *slice; /* a slice of such an allocation (not a copy in data[]), else NULL */
    char data[];
};

/* ---- TLS contexts ---- */

/* Forward secret AEAD suites only (what every provider serves over TLS 1.2), fastest first as
 * measured with Debian's mbedTLS 2.28 on an AMD EPYC with AES-NI and PCLMUL (llmux-crypto-bench,
 * bench/results/2026-12-02-tls.md): ChaCha20-Poly1305 ~4 ns and 35 instructions per byte,
 * AES-128-GCM ~7 ns and 48 (mbedTLS's GCM goes through its generic cipher layer 16 bytes at a
 * time). A server that honours the client's order (BoringSSL's equal-preference groups) picks
 * the first. */
static const int tls_suites[] = {
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    0,
};
/* Key exchange groups, cheapest first: an ECDHE costs ~1.5-1.9 ms of CPU on P-256 (mbedTLS's
 * NIST optimisation), 10-20 % more on X25519, 50-70 % more on P-384. */
static const mbedtls_ecp_group_id tls_curves[] = {
    MBEDTLS_ECP_DP_SECP256R1,
    MBEDTLS_ECP_DP_CURVE25519,
    MBEDTLS_ECP_DP_SECP384R1,
    MBEDTLS_ECP_DP_NONE,
};

static int tls_ctx_base(struct tls_ctx *t, int endpoint, char *err, size_t errlen)
{
    mbedtls_ssl_config_init(&t->conf);
    mbedtls_entropy_init(&t->entropy);
    mbedtls_ctr_drbg_init(&t->drbg);
    mbedtls_x509_crt_init(&t->ca);
    mbedtls_x509_crt_init(&t->cert);
    mbedtls_pk_init(&t->key);
    mbedtls_ssl_cache_init(&t->cache);
    int rc = mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy,
                                   (const unsigned char *)"llmux", 5);
    if (!rc)
        rc = mbedtls_ssl_config_defaults(&t->conf, endpoint, MBEDTLS_SSL_TRANSPORT_STREAM,
                                         MBEDTLS_SSL_PRESET_DEFAULT);
    if (rc) {
        snprintf(err, errlen, "TLS setup failed (-0x%04x)", -rc);
        return LLMUX_ETLS;
    }
    mbedtls_ssl_conf_min_version(&t->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
                                 MBEDTLS_SSL_MINOR_VERSION_3);
    mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
    mbedtls_ssl_conf_ciphersuites(&t->conf, tls_suites);
    mbedtls_ssl_conf_curves(&t->conf, tls_curves);
    return 0;
}

int tls_ctx_client(const char *ca_file, struct tls_ctx **out, char *err, size_t errlen)
{
    struct tls_ctx *t = calloc(1, sizeof(*t));
    if (!t)
        return UV_ENOMEM;
    int rc = tls_ctx_base(t, MBEDTLS_SSL_IS_CLIENT, err, errlen);
    if (rc) {
        tls_ctx_free(t);
        return rc;
    }
    const char *file = ca_file ? ca_file : SYSTEM_CA_BUNDLE;
    rc = mbedtls_x509_crt_parse_file(&t->ca, file);
    /* A user CA file must parse completely; the system bundle may hold a few certificates
     * mbedTLS cannot read, as long as it loaded some. */
    if (rc < 0 || (ca_file && rc > 0) || t->ca.version == 0) {
        char why[100];
        mbedtls_strerror(rc, why, sizeof(why));
        snprintf(err, errlen, "cannot load CA file %s: %s", file, rc > 0 ? "unreadable certificates" : why);
        tls_ctx_free(t);
        return LLMUX_ETLS;
    }
    mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
    *out = t;
    return 0;
}

/* The server's session cache, counting the sessions it resumes. */
static int cache_get(void *data, mbedtls_ssl_session *session)
{
    struct tls_ctx *t = data; /* called only when the client offered a session ID */
    int rc = mbedtls_ssl_cache_get(&t->cache, session);
    t->offered++;
    t->resumed += rc == 0;
    return rc;
}

static int cache_set(void *data, const mbedtls_ssl_session *session)
{
    struct tls_ctx *t = data;
    return mbedtls_ssl_cache_set(&t->cache, session);
}

int tls_ctx_server(const char *cert_file, const char *key_file, struct tls_ctx **out, char *err,
                   size_t errlen)
{
    struct tls_ctx *t = calloc(1, sizeof(*t));
    if (!t)
        return UV_ENOMEM;
    t->server = 1;
    int rc = tls_ctx_base(t, MBEDTLS_SSL_IS_SERVER, err, errlen);
    if (!rc && (mbedtls_x509_crt_parse_file(&t->cert, cert_file) != 0 ||
                mbedtls_pk_parse_keyfile(&t->key, key_file, NULL) != 0 ||
                mbedtls_ssl_conf_own_cert(&t->conf, &t->cert, &t->key) != 0)) {
        snprintf(err, errlen, "cannot load certificate %s / key %s", cert_file, key_file);
        rc = LLMUX_ETLS;
    }
    if (rc) {
        tls_ctx_free(t);
        return rc;
    }
    mbedtls_ssl_conf_session_cache(&t->conf, t, cache_get, cache_set);
    *out = t;
    return 0;
}

void tls_ctx_counts(const struct tls_ctx *t, uint64_t *handshakes, uint64_t *resumed,
                    uint64_t *offered)
{
    *handshakes = t->handshakes;
    *resumed = t->resumed;
    if (offered)
        *offered = t->offered;
}

void tls_ctx_free(struct tls_ctx *t)
{
    if (!t)
        return;
    while (t->origins) { /* no conn uses it any more: none waits, no timer is left */
        struct tls_origin *o = t->origins;
        t->origins = o->next;
        mbedtls_ssl_session_free(&o->session);
        free(o);
    }
    mbedtls_ssl_cache_free(&t->cache);
    mbedtls_pk_free(&t->key);
    mbedtls_x509_crt_free(&t->cert);
    mbedtls_x509_crt_free(&t->ca);
    mbedtls_ctr_drbg_free(&t->drbg);
    mbedtls_entropy_free(&t->entropy);
    mbedtls_ssl_config_free(&t->conf);
    free(t);
}

/* ---- writing ---- */

static void fail(struct conn *c, int status);

/* The whole pages inside [p, p + len) of a block still in use hold bytes already written:
 * give them back to the system (they read as zeros afterwards). */
static void release_pages(char *p, size_t len)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)p + len) & ~(page - 1);
    if (end > start)
        madvise((void *)start, end - start, MADV_DONTNEED);
}

static void on_write_done(uv_write_t *req, int status)
{
    struct write_req *w = container_of(req, struct write_req, req);
    struct conn *c = w->c;
    c->queued -= w->len;
    if (w->slice && !w->owned)
        release_pages(w->slice, w->len);
    free(w->owned);
    free(w);
    if (c->closing)
        return;
    if (status < 0) {
        fail(c, status);
        return;
    }
    if (c->queued == 0 && c->cbs->on_drain)
        c->cbs->on_drain(c);
}

/* Queue bytes [from, to) of `owned` (a malloc'd block) without copying; takes ownership. The
 * bytes go out as slices, and the pages of each slice the kernel has taken are handed back at
 * once (MADV_DONTNEED: the block stays valid, those pages read as zeros), so a slow client of a
 * large answer holds only what it has not read yet, as with a copy, without the copy. */
static int queue_owned(struct conn *c, char *owned, size_t from, size_t to)
{
    struct write_req *last = NULL; /* writes complete in order: the last one frees the block */
    int rc = 0;
    for (size_t at = from; at < to && !rc; at += OWNED_SLICE) {
        size_t len = to - at < OWNED_SLICE ? to - at : OWNED_SLICE;
        struct write_req *w = malloc(sizeof(*w));
        if (!w) {
            rc = UV_ENOMEM;
            break;
        }
        w->c = c;
        w->len = len;
        w->owned = NULL;
        w->slice = owned + at;
        uv_buf_t b = uv_buf_init(owned + at, (unsigned)len);
        rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write_done);
        if (rc) {
            free(w);
            break;
        }
        c->queued += len;
        c->accepted += len;
        last = w;
    }
    if (last)
        last->owned = owned;
    else
        free(owned);
    return rc;
}

static int raw_write(struct conn *c, const uv_buf_t *bufs, unsigned n);
static int batch_flush(void);

int conn_write_owned(struct conn *c, const uv_buf_t *bufs, unsigned nbufs, char *owned)
{
    const uv_buf_t *last = &bufs[nbufs - 1];
    if (!c->closing && batch.c == c) { /* what it holds goes first */
        int rc = batch_flush();
        if (rc) {
            free(owned);
            return rc;
        }
    }
    if (c->closing || c->tls || c->queued > 0 || last->len < OWNED_MIN || nbufs > 8) {
        /* encrypted (copied into records anyway), behind other writes, or small: as usual */
        int rc = conn_write(c, bufs, nbufs);
        free(owned);
        return rc;
    }
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    c->socket_writes++;
    int rc = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
    if (rc < 0 && rc != UV_EAGAIN) {
        raw_write(c, bufs, nbufs); /* queued to fail again: reported from the loop */
        free(owned);
        return rc;
    }
    size_t done = rc > 0 ? (size_t)rc : 0;
    c->accepted += done;
    if (done == total) {
        free(owned);
        return 0;
    }
    size_t head = total - last->len;
    if (done < head) { /* what is left of the head pieces is small: copied */
        uv_buf_t rest[8];
        unsigned k = 0;
        size_t skip = done;
        for (unsigned i = 0; i + 1 < nbufs; i++) {
            if (skip >= bufs[i].len) {
                skip -= bufs[i].len;
                continue;
            }
            rest[k++] = uv_buf_init(bufs[i].base + skip, (unsigned)(bufs[i].len - skip));
            skip = 0;
        }
        rc = raw_write(c, rest, k);
        if (rc) {
            free(owned);
            return rc;
        }
        done = head;
    }
    size_t at = (size_t)(last->base - owned);
    release_pages(last->base, done - head);
    return queue_owned(c, owned, at + (done - head), at + last->len);
}

/* Raw bytes to the socket: try at once, queue a copy of the rest. */
static int raw_write(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
    size_t total = 0, done = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0)
        return 0;
    if (c->closing)
        return UV_EPIPE;
    c->accepted += total;
    c->socket_writes++;
    int failed = 0;
    if (c->queued == 0) {
        int rc = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (rc >= 0)
            done = (size_t)rc;
        else if (rc != UV_EAGAIN)
            failed = rc;
    }
    if (done == total)
        return 0;
    /* A failed write (EPIPE, ECONNRESET) goes through uv_write too: libuv fails it again and
     * reports it from the loop (on_write_done -> on_eof), never inside the caller's call, so
     * an owner that stopped reading still learns its peer is gone. */
    struct write_req *w = malloc(sizeof(*w) + total - done);
    if (!w)
        return UV_ENOMEM;
    size_t skip = done, at = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t len = bufs[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(w->data + at, bufs[i].base + skip, len - skip);
        at += len - skip;
        skip = 0;
    }
    w->c = c;
    w->len = at;
    w->owned = NULL;
    w->slice = NULL;
    uv_buf_t b = uv_buf_init(w->data, (unsigned)at);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write_done);
    if (rc) {
        free(w);
        return rc;
    }
    c->queued += at;
    return failed;
}

/* ---- TLS output: one record per call, one write per call ---- */

static void cork_begin(struct conn *c)
{
    cork.c = c;
    cork.len = 0;
}

static int cork_flush(void)
{
    uv_buf_t b = uv_buf_init((char *)cork.data, (unsigned)cork.len);
    cork.len = 0;
    return raw_write(cork.c, &b, 1);
}

static int cork_end(void)
{
    int rc = cork_flush();
    cork.c = NULL;
    return rc;
}

/* mbedTLS's output: records of a corked call wait in `cork`, others go out at once. */
static int bio_send(void *ctx, const unsigned char *p, size_t n)
{
    struct conn *c = ctx;
    int rc = 0;
    if (cork.c == c && cork.len + n > CORK_SIZE)
        rc = cork_flush();
    if (!rc && cork.c == c && n <= CORK_SIZE) {
        memcpy(cork.data + cork.len, p, n);
        cork.len += n;
        return (int)n;
    }
    if (!rc) {
        uv_buf_t b = uv_buf_init((char *)p, (unsigned)n);
        rc = raw_write(c, &b, 1);
    }
    return rc ? MBEDTLS_ERR_NET_SEND_FAILED : (int)n;
}

/* mbedTLS's input: first what an earlier read left in `rx`, then the current read in place. */
static int bio_recv(void *ctx, unsigned char *p, size_t n)
{
    struct conn *c = ctx;
    size_t avail = buf_size(&c->rx);
    if (avail > 0) {
        n = n < avail ? n : avail;
        memcpy(p, buf_head(&c->rx), n);
        buf_consume(&c->rx, n);
        return (int)n;
    }
    if (c->in_len == 0)
        return MBEDTLS_ERR_SSL_WANT_READ;
    n = n < c->in_len ? n : c->in_len;
    memcpy(p, c->in, n);
    c->in += n;
    c->in_len -= n;
    return (int)n;
}

static int tls_encrypt(struct conn *c, const char *p, size_t n)
{
    while (n > 0) {
        int rc = mbedtls_ssl_write(c->ssl, (const unsigned char *)p, n);
        if (rc < 0)
            return LLMUX_ETLS;
        p += rc;
        n -= (size_t)rc;
    }
    return 0;
}

/* The pieces are gathered into full records (whole records of a large piece are encrypted
 * from the caller's memory, not copied) and the call's ciphertext goes out in one write. */
static int tls_write(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
    size_t staged = 0;
    int rc = 0;
    cork_begin(c);
    for (unsigned i = 0; i < n && !rc; i++) {
        const char *p = bufs[i].base;
        size_t len = bufs[i].len;
        if (staged + len > STAGE_SIZE) {
            size_t fill = STAGE_SIZE - staged;
            memcpy(tls_stage + staged, p, fill);
            p += fill;
            len -= fill;
            size_t whole = len - len % STAGE_SIZE;
            rc = tls_encrypt(c, tls_stage, STAGE_SIZE);
            if (!rc)
                rc = tls_encrypt(c, p, whole);
            p += whole;
            len -= whole;
            staged = 0;
        }
        memcpy(tls_stage + staged, p, len);
        staged += len;
    }
    if (!rc && staged > 0)
        rc = tls_encrypt(c, tls_stage, staged);
    int wrc = cork_end();
    return rc ? rc : wrc;
}

/* ---- batching: output held while read callbacks run ---- */

/* Write what the batching connection holds; it stays the batch's owner until the turn ends. */
static int batch_flush(void)
{
    struct conn *c = batch.c;
    size_t len = batch.len;
    batch.len = 0;
    if (len == 0)
        return 0;
    if (c->tls) {
        cork_begin(c);
        int rc = tls_encrypt(c, batch.data, len);
        int wrc = cork_end();
        return rc ? rc : wrc;
    }
    uv_buf_t b = uv_buf_init(batch.data, (unsigned)len);
    return raw_write(c, &b, 1);
}

static void turn_begin(void)
{
    read_turns++;
}

/* The outermost read callback returned: the batch goes out, from the loop (a failure is
 * reported through on_eof, and an owner waiting for its output to leave hears on_drain). */
static void turn_end(void)
{
    if (--read_turns > 0 || !batch.c)
        return;
    struct conn *c = batch.c;
    int rc = batch_flush();
    batch.c = NULL;
    if (rc)
        fail(c, rc);
    else if (c->queued == 0 && c->cbs->on_drain)
        c->cbs->on_drain(c);
}

/* Hold the pieces in the batch when they fit; 1 if they were taken. */
static int batch_take(struct conn *c, const uv_buf_t *bufs, unsigned n)
{
    if (read_turns == 0 || (batch.c && batch.c != c))
        return 0;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (batch.len + total > BATCH_SIZE)
        return 0;
    for (unsigned i = 0; i < n; i++) {
        memcpy(batch.data + batch.len, bufs[i].base, bufs[i].len);
        batch.len += bufs[i].len;
    }
    batch.c = c;
    return 1;
}

int conn_write_batched(struct conn *c, const uv_buf_t *bufs, unsigned nbufs)
{
    if (!c->closing && batch_take(c, bufs, nbufs))
        return 0;
    return conn_write(c, bufs, nbufs);
}

int conn_write(struct conn *c, const uv_buf_t *bufs, unsigned nbufs)
{
    if (c->closing)
        return UV_EPIPE;
    if (batch.c == c) { /* what it holds goes first */
        int rc = batch_flush();
        if (rc)
            return rc;
    }
    return c->tls ? tls_write(c, bufs, nbufs) : raw_write(c, bufs, nbufs);
}

size_t conn_queued(const struct conn *c)
{
    return c->queued + (batch.c == c ? batch.len : 0);
}

uint64_t conn_socket_writes(const struct conn *c)
{
    return c->socket_writes;
}

uint64_t conn_flushed(const struct conn *c)
{
    return c->accepted - uv_stream_get_write_queue_size((const uv_stream_t *)&c->tcp);
}

/* ---- client sessions: one per origin, shared by a burst ---- */

#define WAIT_FIRST_MS 1000 /* the leader's time before any full handshake was timed */
#define WAIT_MIN_MS 50

static void tls_pump(struct conn *c);

static uint16_t addr_port(const struct sockaddr *a)
{
    return ntohs(a->sa_family == AF_INET6 ? ((const struct sockaddr_in6 *)a)->sin6_port
                                          : ((const struct sockaddr_in *)a)->sin_port);
}

static struct tls_origin *origin_get(struct tls_ctx *t, const char *host, uint16_t port)
{
    for (struct tls_origin *o = t->origins; o; o = o->next)
        if (o->port == port && strcmp(o->host, host) == 0)
            return o;
    size_t n = strlen(host) + 1;
    struct tls_origin *o = calloc(1, sizeof(*o) + n);
    if (!o)
        return NULL;
    memcpy(o->host, host, n);
    o->port = port;
    mbedtls_ssl_session_init(&o->session);
    o->next = t->origins;
    t->origins = o;
    return o;
}

/* How long the server may leave the leader waiting before the others give up on it: four
 * times the last full handshake to the origin (a resumed handshake after it costs little, so
 * waiting pays even when it is longer than a full handshake of one's own would take, as in a
 * burst, where the client's CPU is the limit), within [WAIT_MIN_MS, WAIT_FIRST_MS]. */
static uint64_t wait_ms(const struct tls_origin *o)
{
    uint64_t ms = o->full_ms ? 4 * o->full_ms : WAIT_FIRST_MS;
    return ms < WAIT_MIN_MS ? WAIT_MIN_MS : ms > WAIT_FIRST_MS ? WAIT_FIRST_MS : ms;
}

static int on_verify(void *data, mbedtls_x509_crt *crt, int depth, uint32_t *flags);
static void on_origin_timer(uv_timer_t *t);

static void free_handle(uv_handle_t *h)
{
    free(h);
}

/* Wake the waiters in `ms` (from the loop: never inside another connection's callback). */
static int origin_arm(struct tls_origin *o, uv_loop_t *loop, uint64_t ms)
{
    if (!o->timer) {
        o->timer = malloc(sizeof(*o->timer));
        if (!o->timer)
            return UV_ENOMEM;
        uv_timer_init(loop, o->timer);
        o->timer->data = o;
    }
    return uv_timer_start(o->timer, on_origin_timer, ms, 0);
}

/* The TCP connection is up: send the ClientHello offering the origin's session, or wait for
 * the leader's when it has none yet (may_wait). */
static void tls_begin(struct conn *c, int may_wait)
{
    struct tls_origin *o = c->origin;
    if (o->has_session) {
        mbedtls_ssl_set_session(c->ssl, &o->session); /* a failure: a full handshake */
    } else if (!o->leader) {
        o->leader = c;
        o->leader_since = o->leader_asked = uv_now(c->tcp.loop);
    } else if (may_wait) {
        uint64_t now = uv_now(c->tcp.loop), until = o->leader_asked + wait_ms(o);
        if (now < until && origin_arm(o, c->tcp.loop, until - now) == 0) {
            struct conn **at = &o->waiters;
            while (*at)
                at = &(*at)->next_waiter;
            *at = c;
            c->parked = 1;
            return;
        }
    }
    tls_pump(c);
}

/* The leader's handshake ended (the session is saved if it succeeded), or its deadline came. */
static void on_origin_timer(uv_timer_t *t)
{
    struct tls_origin *o = t->data;
    while (o->waiters) {
        uint64_t now = uv_now(t->loop), until = o->leader_asked + wait_ms(o);
        if (!o->has_session && o->leader && now < until) {
            uv_timer_start(t, on_origin_timer, until - now, 0);
            return;
        }
        struct conn *c = o->waiters;
        o->waiters = c->next_waiter;
        c->next_waiter = NULL;
        c->parked = 0;
        tls_begin(c, 0); /* resumes, leads, or (past the deadline) makes a full handshake */
    }
    if (o->timer) {
        uv_close((uv_handle_t *)o->timer, free_handle);
        o->timer = NULL;
    }
}

/* c stops waiting or leading (it failed, was closed or is done). */
static void origin_leave(struct conn *c)
{
    struct tls_origin *o = c->origin;
    if (c->parked) {
        struct conn **at = &o->waiters;
        while (*at != c)
            at = &(*at)->next_waiter;
        *at = c->next_waiter;
        c->parked = 0;
    }
    if (o->leader == c)
        o->leader = NULL;
    if (o->waiters && (!o->leader || o->has_session))
        origin_arm(o, c->tcp.loop, 0); /* they resume, or the first leads */
    if (!o->waiters && o->timer) {
        uv_close((uv_handle_t *)o->timer, free_handle);
        o->timer = NULL;
    }
}

/* A certificate chain is being checked: a full handshake (a resumed one checks none). The
 * result is mbedTLS's own (flags untouched). */
static int on_verify(void *data, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    (void)crt, (void)depth, (void)flags;
    ((struct conn *)data)->verified = 1;
    return 0;
}

/* A client handshake succeeded: keep its session for the origin (a resumed one only when it
 * brought a new ticket) and let the waiters resume it. */
static void session_made(struct conn *c)
{
    struct tls_origin *o = c->origin;
    c->resumed = !c->verified;
    c->tls->resumed += c->resumed;
    if (!c->resumed || (c->ssl->session && c->ssl->session->ticket_len > 0)) {
        mbedtls_ssl_session_free(&o->session);
        mbedtls_ssl_session_init(&o->session);
        o->has_session = mbedtls_ssl_get_session(c->ssl, &o->session) == 0;
    }
    if (o->leader == c)
        o->full_ms = uv_now(c->tcp.loop) - o->leader_since;
    origin_leave(c);
}

/* ---- reading ---- */

static void fail(struct conn *c, int status)
{
    if (c->closing || c->eof_sent)
        return;
    c->eof_sent = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (c->origin)
        origin_leave(c);
    if (c->handshaking && !c->tls->server && c->cbs->on_connect) {
        c->handshaking = 0;
        c->cbs->on_connect(c, status);
        return;
    }
    c->handshaking = 0;
    c->cbs->on_eof(c, status); /* also a server-side handshake failure */
}

static void handshake_failed(struct conn *c, int rc)
{
    uint32_t flags = mbedtls_ssl_get_verify_result(c->ssl);
    if (!c->tls->server && flags != 0 && flags != (uint32_t)-1) {
        char info[256];
        mbedtls_x509_crt_verify_info(info, sizeof(info), "", flags);
        char *nl = strchr(info, '\n');
        if (nl)
            *nl = 0;
        snprintf(c->error, sizeof(c->error), "certificate verification failed: %.120s", info);
        fail(c, LLMUX_ETLSVERIFY);
        return;
    }
    char why[120];
    mbedtls_strerror(rc, why, sizeof(why));
    snprintf(c->error, sizeof(c->error), "TLS handshake failed: %s", why);
    fail(c, LLMUX_ETLS);
}

/* mbedTLS 2.28 as Debian builds it (no MBEDTLS_SSL_VARIABLE_BUFFER_LENGTH) allocates two
 * record buffers of ~16.7 KB per connection for its life, and the handshake (or calloc
 * reusing freed heap) has written every page of them. A connection that then carries SSE
 * events and requests of a few KB touches only the first page or two, so once the handshake
 * is over and nothing waits in them, their other whole pages go back to the system (they read
 * as zeros when a large record needs them again). The first bytes of each buffer hold the
 * record sequence number, so the release starts past them. */
static void release_record_buffers(struct conn *c)
{
    if (mbedtls_ssl_get_bytes_avail(c->ssl) > 0 || mbedtls_ssl_check_pending(c->ssl) != 0 ||
        c->ssl->out_left > 0)
        return;
    enum { KEEP = 64 }; /* counter, header, explicit IV */
    release_pages((char *)c->ssl->in_buf + KEEP, MBEDTLS_SSL_IN_BUFFER_LEN - KEEP);
    release_pages((char *)c->ssl->out_buf + KEEP, MBEDTLS_SSL_OUT_BUFFER_LEN - KEEP);
}

/* Drive the handshake or decrypt what mbedTLS can, delivering plaintext while reading. */
static void tls_pump(struct conn *c)
{
    if (c->handshaking) {
        cork_begin(c); /* a flight of handshake messages goes out in one write */
        int rc = mbedtls_ssl_handshake(c->ssl);
        if (cork_end() != 0 && (rc == 0 || rc == MBEDTLS_ERR_SSL_WANT_READ))
            rc = MBEDTLS_ERR_NET_SEND_FAILED;
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE) {
            if (c->origin && c->origin->leader == c) { /* waiting for the server from now */
                uv_update_time(c->tcp.loop);
                c->origin->leader_asked = uv_now(c->tcp.loop);
            }
            return;
        }
        if (rc) {
            handshake_failed(c, rc);
            return;
        }
        c->handshaking = 0;
        c->tls->handshakes++;
        release_record_buffers(c);
        if (!c->tls->server)
            session_made(c);
        if (c->cbs->on_connect)
            c->cbs->on_connect(c, 0);
        if (c->closing)
            return;
    }
    unsigned char plain[16384];
    while (c->reading && !c->closing) {
        int rc = mbedtls_ssl_read(c->ssl, plain, sizeof(plain));
        if (rc > 0) {
            c->cbs->on_read(c, (const char *)plain, (size_t)rc);
            continue;
        }
        if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
            return;
        if (rc == 0 || rc == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY)
            fail(c, UV_EOF);
        else
            fail(c, UV_ECONNRESET);
        return;
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    *b = uv_buf_init(read_buf, sizeof(read_buf));
}

static void tcp_read(struct conn *c, ssize_t n, const uv_buf_t *b)
{
    if (c->closing)
        return;
    if (n < 0) {
        if (c->tls && n == UV_EOF && c->handshaking)
            snprintf(c->error, sizeof(c->error), "TLS handshake failed: connection closed");
        fail(c, (int)n);
        return;
    }
    if (n == 0)
        return;
    if (!c->tls) {
        c->cbs->on_read(c, b->base, (size_t)n);
        return;
    }
    if (c->parked) { /* the server spoke before our ClientHello */
        snprintf(c->error, sizeof(c->error), "TLS handshake failed: unexpected data");
        fail(c, LLMUX_ETLS);
        return;
    }
    if (buf_size(&c->rx) == 0) { /* mbedTLS reads the read buffer in place */
        c->in = b->base;
        c->in_len = (size_t)n;
    } else if (buf_append(&c->rx, b->base, (size_t)n) != 0) {
        fail(c, UV_ENOMEM);
        return;
    }
    tls_pump(c);
    /* a partial record (or input held back by conn_read_stop) outlives the read buffer */
    if (c->in_len > 0 && !c->closing && buf_append(&c->rx, c->in, c->in_len) != 0)
        fail(c, UV_ENOMEM);
    c->in_len = 0;
    if (buf_size(&c->rx) == 0) /* an idle stream holds no ciphertext buffer */
        buf_free(&c->rx);
}

static void on_tcp_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    turn_begin();
    tcp_read(container_of((uv_tcp_t *)s, struct conn, tcp), n, b);
    turn_end();
}

static int start_reading(struct conn *c)
{
    return uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_tcp_read);
}

void conn_read_stop(struct conn *c)
{
    c->reading = 0;
    if (!c->closing && !c->handshaking)
        uv_read_stop((uv_stream_t *)&c->tcp);
}

void conn_read_start(struct conn *c)
{
    if (c->closing || c->eof_sent || c->reading)
        return;
    c->reading = 1;
    start_reading(c);
    /* decrypted bytes may wait inside mbedTLS */
    if (c->tls && !c->handshaking &&
        (mbedtls_ssl_get_bytes_avail(c->ssl) > 0 || buf_size(&c->rx) > 0 || c->in_len > 0))
        tls_pump(c);
}

/* ---- setup ---- */

static void ssl_free(struct conn *c)
{
    if (c->ssl) {
        mbedtls_ssl_free(c->ssl);
        free(c->ssl);
        c->ssl = NULL;
    }
}

static int tls_setup(struct conn *c)
{
    c->ssl = malloc(sizeof(*c->ssl));
    if (!c->ssl)
        return UV_ENOMEM;
    mbedtls_ssl_init(c->ssl);
    if (mbedtls_ssl_setup(c->ssl, &c->tls->conf) != 0)
        return LLMUX_ETLS;
    if (!c->tls->server) {
        if (mbedtls_ssl_set_hostname(c->ssl, c->host) != 0)
            return LLMUX_ETLS;
        mbedtls_ssl_set_verify(c->ssl, on_verify, c);
    }
    mbedtls_ssl_set_bio(c->ssl, c, bio_send, bio_recv, NULL);
    c->handshaking = 1;
    return 0;
}

static void on_closed(uv_handle_t *h)
{
    struct conn *c = container_of((uv_tcp_t *)h, struct conn, tcp);
    if (c->cbs->on_close)
        c->cbs->on_close(c);
    ssl_free(c);
    buf_free(&c->rx);
    free(c);
}

static void on_tcp_connect(uv_connect_t *req, int status)
{
    struct conn *c = container_of(req, struct conn, connect_req);
    if (c->closing)
        return;
    if (status < 0) {
        snprintf(c->error, sizeof(c->error), "%s", uv_strerror(status));
        c->eof_sent = 1;
        c->cbs->on_connect(c, status);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->reading = 1;
    start_reading(c);
    if (!c->tls) {
        c->cbs->on_connect(c, 0);
        return;
    }
    tls_begin(c, 1);
}

int conn_connect(uv_loop_t *loop, const struct sockaddr *addr, struct tls_ctx *tls,
                 const char *host, const struct conn_cbs *cbs, void *data, struct conn **out)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return UV_ENOMEM;
    c->cbs = cbs;
    c->data = data;
    c->tls = tls;
    snprintf(c->host, sizeof(c->host), "%s", host ? host : "");
    if (tls && (tls_setup(c) != 0 || !(c->origin = origin_get(tls, c->host, addr_port(addr))))) {
        ssl_free(c);
        free(c);
        return LLMUX_ETLS;
    }
    uv_tcp_init(loop, &c->tcp);
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, addr, on_tcp_connect);
    if (rc) {
        /* The handle exists: it must be closed, and nobody may be told. */
        static const struct conn_cbs none = {0};
        c->cbs = &none;
        c->closing = 1;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return rc;
    }
    *out = c;
    return 0;
}

int conn_accept(uv_stream_t *server, struct tls_ctx *tls, const struct conn_cbs *cbs, void *data,
                struct conn **out)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return UV_ENOMEM;
    static const struct conn_cbs none = {0};
    c->cbs = &none;
    c->data = data;
    c->tls = tls;
    uv_tcp_init(server->loop, &c->tcp);
    int rc = uv_accept(server, (uv_stream_t *)&c->tcp);
    if (!rc && tls)
        rc = tls_setup(c);
    if (rc) {
        c->closing = 1;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
        return rc;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->cbs = cbs;
    c->reading = 1;
    start_reading(c);
    *out = c;
    return 0;
}

void *conn_data(const struct conn *c)
{
    return c->data;
}

void conn_close(struct conn *c, int reset)
{
    if (c->closing)
        return;
    if (batch.c == c) { /* what it holds goes out first (dropped by a reset) */
        if (!reset)
            batch_flush();
        batch.len = 0;
        batch.c = NULL;
    }
    if (c->origin)
        origin_leave(c);
    if (c->tls && !c->handshaking && !reset && !c->eof_sent)
        mbedtls_ssl_close_notify(c->ssl); /* best effort */
    c->closing = 1;
    if (reset && uv_tcp_close_reset(&c->tcp, on_closed) == 0)
        return;
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

const char *conn_error(const struct conn *c)
{
    return c->error;
}

size_t conn_pending(const struct conn *c)
{
    size_t n = buf_size(&c->rx) + c->in_len;
    if (c->ssl && !c->handshaking) {
        n += mbedtls_ssl_get_bytes_avail(c->ssl);
        /* a record mbedTLS has read in part (header or body) waits in its input buffer */
        n += mbedtls_ssl_check_pending(c->ssl) != 0;
    }
    return n;
}

int conn_tls_resumed(const struct conn *c)
{
    return c->resumed;
}
