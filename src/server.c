/* server: HTTP/1.1 server on llhttp over conn. See include/llmux/server.h for the contract.
 *
 * Types:
 *   struct server  - one listening socket; counts its clients; freed when the listener and the
 *                    last client are closed.
 *   struct client  - one connection: conn + llhttp parser + one timer + the request being
 *                    read or served (struct server_req is embedded: one at a time).
 *
 * Client states:
 *   CL_IDLE      - between requests; keep-alive timer armed (a stray CRLF between requests,
 *                  which llhttp skips without starting a message, does not disarm it)
 *   CL_HEADERS   - reading a request head; header timer armed
 *   CL_BODY      - reading a body; body timer re-armed on every read; trailer fields that
 *                  follow a chunked body are counted against the limit and dropped
 *   CL_HANDLING  - request handed to the handler, response not ended; no state timer (the
 *                  handler has its own deadlines); bytes that arrive now are pipelined requests
 *                  and wait in `pending` (read stops above a cap)
 *   CL_CLOSING   - the connection is being closed (after flushing a final response, and after
 *                  a short linger that reads and drops what the client was still sending, so
 *                  the close is not a reset that could destroy the answer in flight)
 *
 * Output: a second timer, `send_timer`, runs while written bytes wait in the socket's queue
 * and closes the connection when they have not moved for send_timeout_ms (a client that stopped
 * reading). Pipelined requests are parsed only while less than OUT_CAP bytes are queued, so a
 * client that sends requests without reading answers holds at most PENDING_CAP of input and
 * OUT_CAP plus one answer of output.
 *
 * Invariants: the request's strings point into `head` and `body`, which are not touched while
 * CL_HANDLING. The client is freed only in the close callback of its last handle.
 */
#include "llmux/server.h"

#include <errno.h>
#include <llhttp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "llmux/buf.h"
#include "llmux/conn.h"
#include "llmux/errors.h"
#include "llmux/headers.h"

#define PENDING_CAP (256 * 1024)
#define OUT_CAP (64 * 1024)      /* queued output above which pipelined requests wait */
#define LINGER_MS 1000           /* reading and dropping input after an early answer */
#define LINGER_BYTES (1024 * 1024)
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

enum client_state { CL_IDLE, CL_HEADERS, CL_BODY, CL_HANDLING, CL_CLOSING };

struct server_req {
    struct client *client;
    struct server_request request;
    int started;   /* status line sent */
    int chunked;   /* response uses chunked encoding */
    int raw;       /* HTTP/1.0 stream: bytes as they are, ended by the close */
    int http10;
    int keep_alive;
    void (*on_abort)(void *data, struct server_req *r);
    void (*on_drain)(void *data, struct server_req *r);
    void *watch_data;
    uint64_t tag; /* the handler's own note, from on_head to the handler (0: none) */
};

struct client {
    struct server *srv;
    struct conn *conn;
    uv_timer_t timer;
    uv_timer_t send_timer;
    uint64_t send_mark; /* conn_flushed() when send_timer last looked */
    int handles; /* conn + the two timers still to close */
    enum client_state state;
    llhttp_t parser;
    struct buf head;    /* method, url, header names and values, each NUL-terminated */
    struct buf body;    /* request body, capped */
    struct buf pending; /* received bytes not parsed yet (pipelining) */
    size_t url_len;
    size_t header_bytes;
    struct headers headers; /* offsets into `head` */
    int reject_status; /* set by a parser callback that hit a limit */
    int in_trailers;   /* header callbacks now carry a chunked body's trailer fields */
    const char *parse_end; /* end of the bytes given to the current llhttp_execute() */
    uint64_t exec_seq;     /* llhttp_execute() calls so far */
    uint64_t value_seq;    /* the call that delivered the open header value's last piece */
    int value_at_end;      /* that piece ended where its call's bytes ended */
    int version_seen;      /* the request line's HTTP version was read */
    int is_head;           /* the request being read is a HEAD (known once its method is) */
    const char *reject_why; /* a parser callback's reason for a 400 */
    size_t body_held;  /* bytes of this unfinished body counted in srv->body_bytes */
    size_t lingered;   /* bytes dropped while lingering */
    int linger;        /* after the answer, read and drop input a while before closing */
    int refused;       /* over max_connections */
    int dispatching; /* inside client_process(): do not re-enter */
    int close_after_flush;
    int process_soon; /* the zero-delay timer is for parsing pipelined input */
    struct buf out;   /* response head scratch, reused */
    struct buf hview; /* the request's headers as struct http_header[], reused */
    struct server_req req;
    struct client *next, *prev;
};

struct server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct server_opts opts;
    server_handler handler;
    void *data;
    struct server_stats stats;
    struct client *clients;
    size_t n_clients; /* allocated, including ones still closing */
    size_t body_bytes; /* held for unfinished request bodies, all clients */
    int listener_open;
    int closing;
    void (*on_closed)(void *data); /* server_shutdown()'s callback, run when freed */
    void *on_closed_data;
    uint16_t port;
};

static llhttp_settings_t parser_settings;
static void client_process(struct client *cl);
static void client_close(struct client *cl, int reset);
static void client_reject(struct client *cl, int status, const char *message);
static void client_close_now(struct client *cl, int reset);

static const char *status_text(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 529: return "Overloaded";
    default: return status < 300 ? "OK" : status < 500 ? "Client Error" : "Server Error";
    }
}

/* "name":"value" or "name":null, preceded by a comma. */
static int append_member(struct buf *out, const char *name, const char *value)
{
    int rc = buf_append_str(out, ",\"");
    if (!rc)
        rc = buf_append_str(out, name);
    if (!rc && !value)
        return buf_append_str(out, "\":null");
    if (!rc)
        rc = buf_append_str(out, "\":\"");
    if (!rc)
        rc = buf_append_json_str(out, value, strlen(value));
    if (!rc)
        rc = buf_append(out, "\"", 1);
    return rc;
}

/* The error body with OpenAI's `param` (the request member at fault; NULL: null). */
static int format_error(struct buf *out, const char *type, const char *code, const char *param,
                        const char *message)
{
    int rc = buf_append_str(out, "{\"error\":{\"message\":\"");
    if (!rc)
        rc = buf_append_json_str(out, message, strlen(message));
    if (!rc)
        rc = buf_append(out, "\"", 1);
    if (!rc)
        rc = append_member(out, "type", type);
    if (!rc)
        rc = append_member(out, "param", param);
    if (!rc)
        rc = append_member(out, "code", code);
    if (!rc)
        rc = buf_append_str(out, "}}");
    return rc;
}

int server_format_error(struct buf *out, const char *type, const char *code, const char *message)
{
    return format_error(out, type, code, NULL, message);
}

static void server_free(struct server *srv)
{
    if (srv->on_closed)
        srv->on_closed(srv->on_closed_data);
    free(srv);
}

/* ---- timers ---- */

static void on_timer(uv_timer_t *t)
{
    struct client *cl = container_of(t, struct client, timer);
    if (cl->process_soon) {
        cl->process_soon = 0;
        client_process(cl);
        return;
    }
    switch (cl->state) {
    case CL_IDLE:
        client_close(cl, 0);
        break;
    case CL_HEADERS:
    case CL_BODY:
        client_reject(cl, 408, "timed out reading the request");
        break;
    case CL_CLOSING: /* the linger after an early answer is over */
        client_close_now(cl, 0);
        break;
    default:
        break;
    }
}

/* Queued output is checked every send_timeout: if none of it reached the kernel since the
 * last look, the client stopped reading and the connection (and its request) is dropped. */
static void on_send_timer(uv_timer_t *t)
{
    struct client *cl = container_of(t, struct client, send_timer);
    if (!cl->conn || conn_queued(cl->conn) == 0) {
        uv_timer_stop(t);
        return;
    }
    uint64_t flushed = conn_flushed(cl->conn);
    if (flushed != cl->send_mark) {
        cl->send_mark = flushed;
        return;
    }
    cl->srv->stats.send_timeouts++;
    client_close(cl, 1);
}

/* Arm the state timer; whatever it was for before (a "parse soon" too) is replaced. */
static void client_arm(struct client *cl, uint32_t ms)
{
    cl->process_soon = 0;
    uv_timer_start(&cl->timer, on_timer, ms, 0);
}

/* ---- closing ---- */

static void client_maybe_free(struct client *cl)
{
    if (--cl->handles > 0)
        return;
    struct server *srv = cl->srv;
    srv->body_bytes -= cl->body_held;
    buf_free(&cl->head);
    buf_free(&cl->body);
    buf_free(&cl->pending);
    buf_free(&cl->out);
    buf_free(&cl->hview);
    free(cl);
    if (--srv->n_clients == 0 && srv->closing && !srv->listener_open)
        server_free(srv);
}

static void on_timer_closed(uv_handle_t *h)
{
    client_maybe_free(container_of((uv_timer_t *)h, struct client, timer));
}

static void on_send_timer_closed(uv_handle_t *h)
{
    client_maybe_free(container_of((uv_timer_t *)h, struct client, send_timer));
}

static void on_conn_closed(struct conn *c)
{
    client_maybe_free(conn_data(c));
}

/* Close the socket and the timer now; the client is freed in the last close callback. */
static void client_close_now(struct client *cl, int reset)
{
    cl->state = CL_CLOSING;
    if (!cl->conn)
        return;
    struct server *srv = cl->srv;
    if (cl->prev)
        cl->prev->next = cl->next;
    else
        srv->clients = cl->next;
    if (cl->next)
        cl->next->prev = cl->prev;
    srv->stats.active_connections--;
    conn_close(cl->conn, reset);
    cl->conn = NULL;
    uv_close((uv_handle_t *)&cl->timer, on_timer_closed);
    uv_close((uv_handle_t *)&cl->send_timer, on_send_timer_closed);
}

/* The connection is going away: tell the handler its request is gone, if one is outstanding. */
static void client_close(struct client *cl, int reset)
{
    if (cl->state == CL_HANDLING && cl->req.client) {
        struct server_req *r = &cl->req;
        void (*on_abort)(void *, struct server_req *) = r->on_abort;
        cl->srv->stats.aborted++;
        cl->state = CL_CLOSING;
        r->on_abort = NULL;
        r->on_drain = NULL;
        if (on_abort)
            on_abort(r->watch_data, r);
        r->client = NULL;
    }
    client_close_now(cl, reset);
}

/* Everything is written: close, or first linger (read and drop what the client is still
 * sending, for a while) when it may be mid-request: closing a socket with unread input sends a
 * reset, and a reset can destroy the answer before the client has read it. */
static void client_flushed_close(struct client *cl)
{
    if (!cl->linger) {
        client_close_now(cl, 0);
        return;
    }
    cl->close_after_flush = 0;
    conn_read_start(cl->conn);
    client_arm(cl, LINGER_MS);
}

/* Close once everything written so far has reached the socket. */
static void client_close_after_flush(struct client *cl)
{
    cl->state = CL_CLOSING;
    if (!cl->conn)
        return;
    uv_timer_stop(&cl->timer);
    if (conn_queued(cl->conn) == 0) {
        client_flushed_close(cl);
        return;
    }
    cl->close_after_flush = 1;
    if (!cl->linger)
        conn_read_stop(cl->conn);
}

/* ---- writing ---- */

/* Output waits in the queue: the send timer watches that it moves. */
static void client_watch_send(struct client *cl)
{
    if (cl->conn && conn_queued(cl->conn) > 0 && !uv_is_active((uv_handle_t *)&cl->send_timer)) {
        uint32_t ms = cl->srv->opts.send_timeout_ms;
        cl->send_mark = conn_flushed(cl->conn);
        uv_timer_start(&cl->send_timer, on_send_timer, ms, ms);
    }
}

/* batched: a stream's head, events and end, so what one upstream read brings leaves in one
 * write (conn_write_batched) */
static int client_send(struct client *cl, const uv_buf_t *bufs, unsigned n, int batched)
{
    if (!cl->conn)
        return UV_EPIPE;
    int rc = batched ? conn_write_batched(cl->conn, bufs, n) : conn_write(cl->conn, bufs, n);
    client_watch_send(cl);
    return rc;
}

static int client_write(struct client *cl, const uv_buf_t *bufs, unsigned n)
{
    return client_send(cl, bufs, n, 0);
}

/* A header value as it may go on the wire: CR, LF, NUL and other control bytes (HTAB aside)
 * become spaces, so no value, whatever its source, can end the line and forge a header. */
static int append_field_value(struct buf *b, const char *v, size_t n)
{
    /* 8 bytes at a time: a word with no byte below 0x20 and none equal to 0x7f is clean (the
     * usual case); the first word that may hold one is looked at byte by byte */
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    size_t clean = 0;
    while (clean + 8 <= n) {
        uint64_t x;
        memcpy(&x, v + clean, 8);
        uint64_t low = (x - ones * 0x20) & ~x & highs;   /* some byte < 0x20 */
        uint64_t del = ((x ^ (ones * 0x7f)) - ones) & ~(x ^ (ones * 0x7f)) & highs; /* = 0x7f */
        if (low | del)
            break;
        clean += 8;
    }
    while (clean < n && ((unsigned char)v[clean] >= 0x20 || v[clean] == '\t') && v[clean] != 0x7f)
        clean++;
    int rc = buf_append(b, v, clean);
    for (size_t i = clean; i < n && !rc; i++) {
        char c = v[i];
        if (((unsigned char)c < 0x20 && c != '\t') || c == 0x7f)
            c = ' ';
        rc = buf_append(b, &c, 1);
    }
    return rc;
}

/* Hex digits of v ending at out[16]; returns the start (no NUL). */
static const char *put_hex(char out[16], size_t v, size_t *len)
{
    char *p = out + 16;
    do {
        *--p = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    *len = (size_t)(out + 16 - p);
    return p;
}

enum framing { FRAME_LENGTH, FRAME_CHUNKED, FRAME_CLOSE };

/* The status line, headers, framing (content-length of `body`, chunked, or none: the close
 * ends it) and connection header, then the body (not for HEAD), in the same write: one system
 * call for a whole answer. Built without printf: this runs for every response. */
static int write_head(struct client *cl, int status, const struct http_header *hdrs, size_t n,
                      int keep_alive, enum framing framing, const char *body, size_t body_len,
                      char *owned)
{
    struct buf *b = &cl->out;
    buf_reset(b);
    char code[4] = {(char)('0' + status / 100 % 10), (char)('0' + status / 10 % 10),
                    (char)('0' + status % 10), ' '};
    int rc = buf_append(b, "HTTP/1.1 ", 9);
    if (!rc)
        rc = buf_append(b, code, 4);
    if (!rc)
        rc = buf_append_str(b, status_text(status));
    if (!rc)
        rc = buf_append(b, "\r\n", 2);
    for (size_t i = 0; i < n && !rc; i++) {
        rc = buf_append(b, hdrs[i].name, hdrs[i].name_len);
        if (!rc)
            rc = buf_append(b, ": ", 2);
        if (!rc)
            rc = append_field_value(b, hdrs[i].value, hdrs[i].value_len);
        if (!rc)
            rc = buf_append(b, "\r\n", 2);
    }
    const char *origin = cl->req.request.cors_origin;
    if (!rc && origin) {
        rc = buf_append_str(b, "access-control-allow-origin: ");
        if (!rc)
            rc = append_field_value(b, origin, strlen(origin));
        if (!rc)
            rc = buf_append_str(b, "\r\nvary: Origin\r\naccess-control-expose-headers: "
                                   "x-request-id, x-llmux-provider, x-llmux-model, "
                                   "x-llmux-attempts, x-llmux-tried, x-llmux-hedged\r\n");
    }
    if (!rc && framing == FRAME_LENGTH)
        rc = buf_append_str(b, "content-length: ");
    if (!rc && framing == FRAME_LENGTH)
        rc = buf_append_uint(b, body_len);
    if (!rc && framing == FRAME_CHUNKED)
        rc = buf_append_str(b, "transfer-encoding: chunked");
    if (!rc)
        rc = buf_append_str(b, framing == FRAME_CLOSE ? "connection: close\r\n\r\n"
                               : keep_alive           ? "\r\nconnection: keep-alive\r\n\r\n"
                                                      : "\r\nconnection: close\r\n\r\n");
    if (!rc) {
        uv_buf_t ub[2] = {uv_buf_init(b->data, (unsigned)b->len),
                          uv_buf_init((char *)body, (unsigned)body_len)};
        unsigned nb = body_len && !cl->req.request.head_only ? 2 : 1;
        if (owned && nb == 2 && cl->conn) {
            rc = conn_write_owned(cl->conn, ub, nb, owned);
            owned = NULL;
            client_watch_send(cl);
        } else if (framing == FRAME_LENGTH) {
            rc = client_write(cl, ub, nb);
        } else { /* a stream's head: its first events follow in the same write */
            rc = client_send(cl, ub, nb, 1);
        }
    }
    free(owned);
    return rc;
}

/* The response ended: get ready for the next request or close. */
static void req_finish(struct server_req *r)
{
    struct client *cl = r->client;
    r->client = NULL;
    r->on_abort = NULL;
    r->on_drain = NULL;
    if (!cl || cl->state != CL_HANDLING)
        return;
    if (!r->keep_alive || cl->srv->closing) {
        client_close_after_flush(cl);
        return;
    }
    cl->state = CL_IDLE;
    if (buf_size(&cl->pending) > 0) {
        if (!cl->dispatching && conn_queued(cl->conn) <= OUT_CAP) {
            client_arm(cl, 0);
            cl->process_soon = 1; /* parse pipelined input outside this call chain */
        } /* else: client_process() goes on, or on_client_drain() restarts it */
    } else {
        client_arm(cl, cl->srv->opts.keepalive_timeout_ms);
    }
}

int server_respond_owned(struct server_req *r, int status, const struct http_header *hdrs,
                         size_t n, char *owned, const char *body, size_t len)
{
    struct client *cl = r->client;
    int rc = write_head(cl, status, hdrs, n, r->keep_alive && !cl->srv->closing, FRAME_LENGTH,
                        body ? body : "", len, owned);
    r->started = 1;
    req_finish(r);
    return rc;
}

int server_respond(struct server_req *r, int status, const struct http_header *hdrs, size_t n,
                   const char *body, size_t len)
{
    return server_respond_owned(r, status, hdrs, n, NULL, body, len);
}

/* An error body b (JSON) with its content-type, extra headers and an x-request-id. */
static int respond_error_body(struct server_req *r, int status, const struct buf *b,
                              const struct http_header *extra, size_t n_extra)
{
    struct http_header h[SERVER_ERROR_EXTRA + 2] = {{"content-type", 12, "application/json", 16}};
    size_t n = 1;
    int has_id = 0;
    for (size_t i = 0; i < n_extra && i < SERVER_ERROR_EXTRA; i++) {
        h[n++] = extra[i];
        has_id |= strcasecmp(extra[i].name, "x-request-id") == 0;
    }
    char rid[33];
    struct server *srv = r->client->srv;
    if (!has_id && srv->opts.request_id) {
        srv->opts.request_id(srv->data, rid);
        h[n++] = (struct http_header){"x-request-id", 12, rid, strlen(rid)};
    }
    return server_respond(r, status, h, n, buf_head(b), buf_size(b));
}

int server_respond_error_with(struct server_req *r, int status, const char *type,
                              const char *code, const char *param, const char *message,
                              const struct http_header *extra, size_t n_extra)
{
    struct buf b;
    buf_init(&b, 0);
    format_error(&b, type, code, param, message);
    int rc = respond_error_body(r, status, &b, extra, n_extra);
    buf_free(&b);
    return rc;
}

int server_respond_error(struct server_req *r, int status, const char *type, const char *code,
                         const char *message)
{
    return server_respond_error_with(r, status, type, code, NULL, message, NULL, 0);
}

int server_stream_start(struct server_req *r, int status, const struct http_header *hdrs, size_t n)
{
    r->started = 1;
    if (r->http10) { /* no chunks for HTTP/1.0: raw bytes, and the close ends them */
        r->raw = 1;
        r->keep_alive = 0;
        return write_head(r->client, status, hdrs, n, 0, FRAME_CLOSE, NULL, 0, NULL);
    }
    r->chunked = 1;
    return write_head(r->client, status, hdrs, n, r->keep_alive && !r->client->srv->closing,
                      FRAME_CHUNKED, NULL, 0, NULL);
}

int server_stream_write(struct server_req *r, const uv_buf_t *bufs, unsigned nbufs)
{
    if (r->request.head_only)
        return 0;
    if (r->raw)
        return client_send(r->client, bufs, nbufs, 1);
    uv_buf_t stack[18];
    uv_buf_t *iov = nbufs + 2 <= 18 ? stack : malloc((nbufs + 2) * sizeof(uv_buf_t));
    if (!iov)
        return UV_ENOMEM;
    size_t total = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        total += bufs[i].len;
        iov[i + 1] = bufs[i];
    }
    int rc = 0;
    if (total > 0) {
        char hdr[18];
        size_t hl;
        const char *h = put_hex(hdr, total, &hl);
        hdr[16] = '\r';
        hdr[17] = '\n';
        iov[0] = uv_buf_init((char *)h, (unsigned)hl + 2);
        iov[nbufs + 1] = uv_buf_init("\r\n", 2);
        rc = client_send(r->client, iov, nbufs + 2, 1);
    }
    if (iov != stack)
        free(iov);
    return rc;
}

int server_stream_end(struct server_req *r)
{
    uv_buf_t end = uv_buf_init("0\r\n\r\n", 5);
    int rc = r->chunked && !r->request.head_only ? client_send(r->client, &end, 1, 1) : 0;
    req_finish(r);
    return rc;
}

void server_req_abort(struct server_req *r, int reset)
{
    struct client *cl = r->client;
    r->client = NULL;
    r->on_abort = NULL;
    r->on_drain = NULL;
    if (cl)
        client_close_now(cl, reset);
}

size_t server_req_queued(const struct server_req *r)
{
    return r->client && r->client->conn ? conn_queued(r->client->conn) : 0;
}

void server_req_watch(struct server_req *r, void (*on_abort)(void *, struct server_req *),
                      void (*on_drain)(void *, struct server_req *), void *data)
{
    r->on_abort = on_abort;
    r->on_drain = on_drain;
    r->watch_data = data;
}

const struct server_request *server_req_request(const struct server_req *r)
{
    return &r->request;
}

void server_req_set_tag(struct server_req *r, uint64_t tag)
{
    r->tag = tag;
}

uint64_t server_req_tag(const struct server_req *r)
{
    return r->tag;
}

const char *server_req_header(const struct server_req *r, const char *name)
{
    for (size_t i = 0; i < r->request.n_headers; i++)
        if (strcasecmp(r->request.headers[i].name, name) == 0)
            return r->request.headers[i].value;
    return NULL;
}

/* A request we refuse before the handler sees it: answer and close the connection (after a
 * linger: the client may still be sending). */
static void client_reject(struct client *cl, int status, const char *message)
{
    if (cl->state == CL_CLOSING || cl->state == CL_HANDLING)
        return;
    const char *code = status == 413   ? "request_too_large"
                       : status == 414 ? "url_too_long"
                       : status == 431 ? "headers_too_large"
                       : status == 408 ? "request_timeout"
                       : status == 503 ? "server_busy"
                                       : "bad_request";
    cl->state = CL_HANDLING;
    memset(&cl->req, 0, sizeof(cl->req));
    cl->req.client = cl;
    cl->req.request.head_only = cl->is_head;
    cl->req.keep_alive = 0;
    cl->linger = !cl->refused;
    /* the body in the shape of the API the URL names, as far as it came */
    struct server *srv = cl->srv;
    size_t url_len = cl->url_len < buf_size(&cl->head) ? cl->url_len : buf_size(&cl->head);
    struct buf b;
    buf_init(&b, 0);
    if (!srv->opts.error_body ||
        srv->opts.error_body(srv->data, url_len ? buf_head(&cl->head) : "", url_len, status,
                             message, &b) != 0) {
        buf_reset(&b);
        format_error(&b, status == 503 ? "server_error" : "invalid_request_error", code, NULL,
                     message);
    }
    respond_error_body(&cl->req, status, &b, NULL, 0);
    buf_free(&b);
}

/* ---- parsing ---- */

static struct client *parser_client(llhttp_t *p)
{
    return container_of(p, struct client, parser);
}

static void body_release(struct client *cl)
{
    cl->srv->body_bytes -= cl->body_held;
    cl->body_held = 0;
}

static int on_message_begin(llhttp_t *p)
{
    struct client *cl = parser_client(p);
    cl->state = CL_HEADERS;
    client_arm(cl, cl->srv->opts.header_timeout_ms);
    buf_reset(&cl->head);
    buf_reset(&cl->body);
    headers_reset(&cl->headers, &cl->head);
    body_release(cl);
    cl->url_len = 0;
    cl->header_bytes = 0;
    cl->reject_status = 0;
    cl->value_seq = 0;
    cl->version_seen = 0;
    cl->is_head = 0;
    cl->in_trailers = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    struct client *cl = parser_client(p);
    cl->url_len += len;
    if (cl->url_len > cl->srv->opts.max_url_bytes) {
        size_t over = cl->url_len - cl->srv->opts.max_url_bytes;
        if (over < len) /* the part within the limit: the refusal's shape follows the path */
            buf_append(&cl->head, at, len - over);
        cl->reject_status = 414;
        return HPE_USER;
    }
    return buf_append(&cl->head, at, len) ? HPE_USER : 0;
}

static int on_piece_complete(llhttp_t *p)
{
    struct client *cl = parser_client(p);
    return buf_append(&cl->head, "", 1) ? HPE_USER : 0;
}

/* Known from here on: even a refusal of a HEAD request gets no body, since its client reads
 * none whatever the answer says. */
static int on_method_complete(llhttp_t *p)
{
    parser_client(p)->is_head = p->method == HTTP_HEAD;
    return 0;
}

static int on_version_complete(llhttp_t *p)
{
    parser_client(p)->version_seen = 1;
    return 0;
}

/* Header bytes are counted against the limit; too many headers is the same refusal. */
static int header_piece(struct client *cl, size_t len, int rc)
{
    cl->header_bytes += len;
    if (rc == HEADERS_EFULL || cl->header_bytes > cl->srv->opts.max_header_bytes) {
        cl->reject_status = 431;
        return HPE_USER;
    }
    return rc ? HPE_USER : 0;
}

/* Trailer fields (after a chunked body) are counted against the limit and never kept: they
 * must not be able to pass for headers (an Authorization or x-request-id after the body). */
static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct client *cl = parser_client(p);
    if (cl->in_trailers)
        return header_piece(cl, len, 0);
    return header_piece(cl, len, headers_field(&cl->headers, at, len));
}

static int on_header_field_complete(llhttp_t *p)
{
    struct client *cl = parser_client(p);
    if (cl->in_trailers)
        return 0;
    return header_piece(cl, 0, headers_field_complete(&cl->headers));
}

/* llhttp delivers a value in one piece per llhttp_execute() call, and also splits it at an
 * obs-fold (a line starting with a space continues the value), which RFC 9112 lets a server
 * refuse and a front proxy may read differently. A second piece is a fold when it comes in
 * the same call as the first, or when the first did not end where its call's bytes ended. */
static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct client *cl = parser_client(p);
    if (cl->value_seq && (cl->value_seq == cl->exec_seq || !cl->value_at_end)) {
        cl->reject_status = 400;
        cl->reject_why = "malformed HTTP request: a header value continued on a new line "
                         "(obs-fold)";
        return HPE_USER;
    }
    cl->value_seq = cl->exec_seq;
    cl->value_at_end = at + len == cl->parse_end;
    if (cl->in_trailers)
        return header_piece(cl, len, 0);
    return header_piece(cl, len, headers_value(&cl->headers, at, len));
}

static int on_header_value_complete(llhttp_t *p)
{
    struct client *cl = parser_client(p);
    cl->value_seq = 0;
    if (cl->in_trailers)
        return 0;
    return header_piece(cl, 0, headers_value_complete(&cl->headers));
}

/* The request view, built once when the head is complete (on_head sees it without a body;
 * client_dispatch adds the body). */
static int client_view(struct client *cl)
{
    struct server_req *r = &cl->req;
    struct http_header hs[HEADERS_MAX];
    size_t n = headers_view(&cl->headers, hs);
    buf_reset(&cl->hview);
    if (buf_append(&cl->hview, hs, n * sizeof(hs[0])))
        return UV_ENOMEM;
    memset(r, 0, sizeof(*r));
    r->client = cl;
    const char *h = cl->head.data;
    r->request.method = llhttp_method_name((llhttp_method_t)cl->parser.method);
    r->request.head_only = cl->is_head;
    r->request.url = h;
    r->request.url_len = cl->url_len;
    const char *q = memchr(h, '?', cl->url_len);
    r->request.path_len = q ? (size_t)(q - h) : cl->url_len;
    r->request.headers = (const struct http_header *)(const void *)buf_head(&cl->hview);
    r->request.n_headers = n;
    r->request.body = "";
    r->http10 = cl->parser.http_major == 1 && cl->parser.http_minor == 0;
    const char *origin = cl->srv->opts.n_cors_origins ? server_req_header(r, "origin") : NULL;
    for (size_t i = 0; origin && i < cl->srv->opts.n_cors_origins; i++) {
        const char *o = cl->srv->opts.cors_origins[i];
        if (strcmp(o, "*") == 0 || strcasecmp(o, origin) == 0) {
            r->request.cors_origin = origin;
            break;
        }
    }
    return 0;
}

/* What RFC 9112 asks of a request head beyond llhttp's checks: exactly one Host in HTTP/1.1
 * (at most one in 1.0), as nginx enforces. Returns the reason, or NULL. */
static const char *head_problem(struct client *cl)
{
    const struct server_request *q = &cl->req.request;
    if (cl->parser.http_major == 0) /* a request line without a version, which llhttp takes */
        return "malformed HTTP request: HTTP/0.9 is not supported";
    if (q->url[0] != '/' && !(q->url[0] == '*' && q->url_len == 1))
        return "malformed HTTP request: the request target must be a path (llmux is not a "
               "forward proxy)";
    int hosts = 0, te = 0;
    for (size_t i = 0; i < q->n_headers; i++) {
        const struct http_header *h = &q->headers[i];
        hosts += h->name_len == 4 && strcasecmp(h->name, "host") == 0;
        te += h->name_len == 17 && strcasecmp(h->name, "transfer-encoding") == 0;
    }
    if (te && cl->req.http10) /* RFC 9112 6.1: the framing is faulty */
        return "malformed HTTP request: Transfer-Encoding in an HTTP/1.0 request";
    if (hosts > 1)
        return "malformed HTTP request: more than one Host header";
    if (hosts == 0 && !cl->req.http10)
        return "malformed HTTP request: an HTTP/1.1 request needs a Host header";
    return NULL;
}

static int on_headers_complete(llhttp_t *p)
{
    struct client *cl = parser_client(p);
    struct server *srv = cl->srv;
    size_t max = srv->opts.max_body_bytes;
    if ((p->flags & F_CONTENT_LENGTH) && p->content_length > max) {
        cl->reject_status = 413;
        return HPE_USER;
    }
    if (client_view(cl) != 0)
        return HPE_USER;
    const char *why = head_problem(cl);
    if (why) {
        client_reject(cl, 400, why);
        return HPE_USER;
    }
    if (srv->opts.on_head) {
        /* the handler may answer from the head alone (e.g. 401): the body is then not read */
        cl->state = CL_HANDLING;
        cl->req.keep_alive = 0;
        cl->linger = 1;
        srv->opts.on_head(srv->data, &cl->req);
        if (cl->state != CL_HANDLING)
            return HPE_USER;
        cl->linger = 0;
        cl->req.client = NULL;
    }
    cl->state = CL_BODY;
    cl->in_trailers = 1; /* header callbacks from here on are trailers */
    client_arm(cl, srv->opts.body_timeout_ms);
    int has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
    const char *expect = has_body && !cl->req.http10 ? server_req_header(&cl->req, "expect") : NULL;
    if (expect && strcasecmp(expect, "100-continue") == 0) {
        uv_buf_t b = uv_buf_init("HTTP/1.1 100 Continue\r\n\r\n", 25);
        client_write(cl, &b, 1);
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct client *cl = parser_client(p);
    struct server *srv = cl->srv;
    if (buf_append(&cl->body, at, len)) {
        cl->reject_status = 413;
        return HPE_USER;
    }
    cl->body_held += len;
    srv->body_bytes += len;
    if (srv->body_bytes > srv->opts.max_body_buffer_bytes) {
        cl->reject_status = 503;
        return HPE_USER;
    }
    client_arm(cl, srv->opts.body_timeout_ms);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    return HPE_PAUSED;
}

/* Complete the request view with the body and call the handler. */
static void client_dispatch(struct client *cl)
{
    struct server_req *r = &cl->req;
    struct server *srv = cl->srv;
    uv_timer_stop(&cl->timer);
    cl->state = CL_HANDLING;
    body_release(cl); /* a complete body is the handler's now, not an unfinished one */
    /* The body buffer holds one extra NUL so handlers may treat it as a string. */
    size_t body_len = buf_size(&cl->body);
    cl->body.max = 0;
    if (buf_append(&cl->body, "", 1)) {
        client_close(cl, 0);
        return;
    }
    cl->body.max = srv->opts.max_body_bytes;
    /* the view built when the head completed still holds: the head does not change after it
     * (trailers are not kept) */
    r->client = cl;
    r->request.body = buf_head(&cl->body);
    r->request.body_len = body_len;
    r->keep_alive = llhttp_should_keep_alive(&cl->parser);
    srv->stats.requests++;
    srv->handler(srv->data, r);
}

/* Parse until a request is complete. Returns 1 when one is (*used: the bytes it took; the
 * rest is the next request's), 0 when every byte was consumed without completing one, -1
 * when the request was refused (answered and closing). */
static int client_parse(struct client *cl, const char *data, size_t len, size_t *used)
{
    *used = len;
    cl->parse_end = data + len;
    cl->exec_seq++;
    llhttp_errno_t err = llhttp_execute(&cl->parser, data, len);
    if (err == HPE_OK && cl->state == CL_HEADERS && !cl->version_seen && cl->url_len > 0 &&
        data[len - 1] == '\n') {
        /* a request line ended without a version: HTTP/0.9 (llhttp waits for one more byte) */
        client_reject(cl, 400, "malformed HTTP request: HTTP/0.9 is not supported");
        return -1;
    }
    if (err == HPE_OK)
        return 0;
    if (err == HPE_PAUSED) {
        *used = (size_t)(llhttp_get_error_pos(&cl->parser) - data);
        llhttp_resume(&cl->parser);
        return 1;
    }
    if (cl->reject_status == 414)
        client_reject(cl, 414, "request URL is too long");
    else if (cl->reject_status == 431)
        client_reject(cl, 431, "request headers are too large");
    else if (cl->reject_status == 413)
        client_reject(cl, 413, "request body is too large");
    else if (cl->reject_status == 503)
        client_reject(cl, 503, "the gateway is holding too many request bodies; try again");
    else if (cl->reject_status == 400)
        client_reject(cl, 400, cl->reject_why);
    else if (err == HPE_PAUSED_UPGRADE)
        client_reject(cl, 400, "protocol upgrades are not supported");
    else if (cl->state != CL_CLOSING && cl->state != CL_HANDLING) {
        char msg[160];
        snprintf(msg, sizeof(msg), "malformed HTTP request: %s",
                 llhttp_get_error_reason(&cl->parser));
        client_reject(cl, 400, msg);
    }
    return -1;
}

/* Serve pipelined requests from `pending`, one at a time, while the connection is idle and
 * the client keeps reading what we answer. */
static void client_process(struct client *cl)
{
    cl->dispatching++;
    while (cl->conn && cl->state == CL_IDLE && buf_size(&cl->pending) > 0 &&
           conn_queued(cl->conn) <= OUT_CAP) {
        size_t used;
        int rc = client_parse(cl, buf_head(&cl->pending), buf_size(&cl->pending), &used);
        if (rc < 0)
            break;
        buf_consume(&cl->pending, used);
        if (rc == 1)
            client_dispatch(cl);
    }
    if (cl->conn && (cl->state == CL_IDLE || cl->state == CL_HANDLING) &&
        buf_size(&cl->pending) <= PENDING_CAP / 2)
        conn_read_start(cl->conn); /* no-op unless reading was stopped */
    /* idle with nothing to parse: the keep-alive clock runs (also after a stray CRLF) */
    if (cl->conn && cl->state == CL_IDLE && buf_size(&cl->pending) == 0 &&
        !uv_is_active((uv_handle_t *)&cl->timer))
        client_arm(cl, cl->srv->opts.keepalive_timeout_ms);
    cl->dispatching--;
}

static void on_client_read(struct conn *c, const char *data, size_t len)
{
    struct client *cl = conn_data(c);
    if (cl->state == CL_CLOSING) { /* lingering: dropped */
        cl->lingered += len;
        if (cl->lingered > LINGER_BYTES)
            client_close_now(cl, 0);
        return;
    }
    if (cl->state == CL_HANDLING || buf_size(&cl->pending) > 0) {
        if (buf_append(&cl->pending, data, len)) {
            client_close(cl, 1); /* a client pipelining this much is not a client */
            return;
        }
        if (buf_size(&cl->pending) > PENDING_CAP / 2)
            conn_read_stop(c);
        if (cl->state != CL_HANDLING)
            client_process(cl);
        return;
    }
    size_t used;
    cl->dispatching++;
    int rc = client_parse(cl, data, len, &used);
    if (rc == 1) {
        if (used < len && buf_append(&cl->pending, data + used, len - used) != 0) {
            cl->dispatching--;
            client_close(cl, 1);
            return;
        }
        client_dispatch(cl);
    }
    cl->dispatching--;
    client_process(cl);
}

static void on_client_eof(struct conn *c, int status)
{
    struct client *cl = conn_data(c);
    client_close(cl, 0);
}

static void on_client_drain(struct conn *c)
{
    struct client *cl = conn_data(c);
    uv_timer_stop(&cl->send_timer);
    if (cl->close_after_flush) {
        client_flushed_close(cl);
        return;
    }
    struct server_req *r = &cl->req;
    if (cl->state == CL_HANDLING && r->client && r->on_drain)
        r->on_drain(r->watch_data, r);
    else if (cl->state == CL_IDLE && buf_size(&cl->pending) > 0 && !cl->dispatching)
        client_process(cl); /* pipelined requests waited for the client to read */
}

static const struct conn_cbs client_cbs = {
    .on_read = on_client_read,
    .on_eof = on_client_eof,
    .on_drain = on_client_drain,
    .on_close = on_conn_closed,
};

static void on_connection(uv_stream_t *listener, int status)
{
    struct server *srv = container_of((uv_tcp_t *)listener, struct server, listener);
    if (status < 0 || srv->closing)
        return;
    struct client *cl = calloc(1, sizeof(*cl));
    if (!cl)
        return;
    cl->srv = srv;
    if (conn_accept(listener, srv->opts.tls, &client_cbs, cl, &cl->conn) != 0) {
        free(cl);
        return;
    }
    uv_timer_init(srv->loop, &cl->timer);
    uv_timer_init(srv->loop, &cl->send_timer);
    cl->handles = 3;
    buf_init(&cl->head, srv->opts.max_url_bytes + srv->opts.max_header_bytes + 4096);
    buf_init(&cl->body, srv->opts.max_body_bytes);
    buf_init(&cl->pending, PENDING_CAP);
    llhttp_init(&cl->parser, HTTP_REQUEST, &parser_settings);
    cl->state = CL_IDLE;
    client_arm(cl, srv->opts.header_timeout_ms);
    cl->next = srv->clients;
    if (srv->clients)
        srv->clients->prev = cl;
    srv->clients = cl;
    srv->n_clients++;
    srv->stats.connections++;
    srv->stats.active_connections++;
    if (srv->stats.active_connections > srv->opts.max_connections) {
        srv->stats.refused++;
        cl->refused = 1; /* answered and closed at once: no linger holding a descriptor */
        client_reject(cl, 503, "the gateway has too many open connections; try again");
    }
}

void server_set_opts(struct server *srv, const struct server_opts *o)
{
    struct tls_ctx *tls = srv->opts.tls;
    srv->opts = *o;
    if (srv->listener_open)
        srv->opts.tls = tls; /* a listener's TLS context is the one it started with */
    if (!srv->opts.max_url_bytes)
        srv->opts.max_url_bytes = 8 * 1024;
    if (!srv->opts.max_header_bytes)
        srv->opts.max_header_bytes = 16 * 1024;
    if (!srv->opts.max_body_bytes)
        srv->opts.max_body_bytes = 4 * 1024 * 1024;
    if (!srv->opts.header_timeout_ms)
        srv->opts.header_timeout_ms = 60000;
    if (!srv->opts.body_timeout_ms)
        srv->opts.body_timeout_ms = 60000;
    if (!srv->opts.keepalive_timeout_ms)
        srv->opts.keepalive_timeout_ms = 75000;
    if (!srv->opts.send_timeout_ms)
        srv->opts.send_timeout_ms = 60000;
    if (!srv->opts.max_connections)
        srv->opts.max_connections = 10000;
    if (!srv->opts.max_body_buffer_bytes)
        srv->opts.max_body_buffer_bytes = 256u << 20;
}

int server_listen(uv_loop_t *loop, const char *host, uint16_t port, const struct server_opts *o,
                  server_handler handler, void *data, struct server **out)
{
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_url_complete = on_piece_complete;
    parser_settings.on_method_complete = on_method_complete;
    parser_settings.on_version_complete = on_version_complete;
    parser_settings.on_header_field = on_header_field;
    parser_settings.on_header_field_complete = on_header_field_complete;
    parser_settings.on_header_value = on_header_value;
    parser_settings.on_header_value_complete = on_header_value_complete;
    parser_settings.on_headers_complete = on_headers_complete;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;

    struct sockaddr_storage ss;
    if (strcmp(host, "localhost") == 0)
        host = "127.0.0.1";
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0)
        return UV_EINVAL;
    struct server *srv = calloc(1, sizeof(*srv));
    if (!srv)
        return UV_ENOMEM;
    srv->loop = loop;
    server_set_opts(srv, o);
    srv->handler = handler;
    srv->data = data;
    int rc = uv_tcp_init_ex(loop, &srv->listener, ss.ss_family);
    if (rc) {
        free(srv);
        return rc;
    }
    srv->listener_open = 1;
    if (o->reuse_port) { /* workers share the port; the kernel spreads connections (libuv has
                            no flag for it) */
        uv_os_fd_t fd;
        int one = 1;
        if (uv_fileno((uv_handle_t *)&srv->listener, &fd) == 0 &&
            setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0)
            rc = uv_translate_sys_error(errno);
    }
    if (!rc)
        rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&ss, 0);
    if (!rc)
        rc = uv_listen((uv_stream_t *)&srv->listener, 1024, on_connection);
    if (rc) {
        srv->closing = 1;
        server_close(srv);
        return rc;
    }
    int len = sizeof(ss);
    uv_tcp_getsockname(&srv->listener, (struct sockaddr *)&ss, &len);
    srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    *out = srv;
    return 0;
}

uint16_t server_port(const struct server *s)
{
    return s->port;
}

const struct server_stats *server_get_stats(const struct server *s)
{
    return &s->stats;
}

static void on_listener_closed(uv_handle_t *h)
{
    struct server *srv = container_of((uv_tcp_t *)h, struct server, listener);
    srv->listener_open = 0;
    if (srv->n_clients == 0)
        server_free(srv);
}

void server_shutdown(struct server *s, void (*on_closed)(void *data), void *data)
{
    s->on_closed = on_closed;
    s->on_closed_data = data;
    s->closing = 1;
    struct client *cl = s->clients;
    while (cl) {
        struct client *next = cl->next;
        if (cl->state != CL_HANDLING)
            client_close(cl, 0); /* idle or mid-request: nothing was promised to it */
        cl = next;
    }
    if (s->listener_open && !uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
}

void server_close(struct server *s)
{
    s->closing = 1;
    while (s->clients)
        client_close(s->clients, 0);
    if (s->listener_open && !uv_is_closing((uv_handle_t *)&s->listener))
        uv_close((uv_handle_t *)&s->listener, on_listener_closed);
}
