/* server: HTTP/1.1 server on llhttp over conn (plain TCP or TLS).
 *
 * It owns listening sockets and client connections, parses requests with llhttp (lenient flags
 * off: CL+TE and duplicate Content-Length are rejected), enforces the size limits that llhttp
 * itself has not (URL -> 414, header bytes -> 431, body -> 413, counted in the callbacks),
 * and the slow-client timeouts (header, body, keep-alive idle). Protocol errors are answered
 * in OpenAI's error shape and the connection is closed.
 *
 * A complete request (body buffered up to the limit) is handed to the handler as a
 * `struct server_req`, which is also the handle for its response: either one server_respond()
 * or server_stream_start() + server_stream_write()* + server_stream_end(). Requests on one
 * connection are served one at a time, in order (pipelined ones wait, llhttp paused).
 *
 * Lifetime of a server_req: valid from the handler call until the response ends (the call to
 * server_respond() / server_stream_end() returns) or, if the client goes away first, until the
 * `on_abort` watcher returns. A handler that answers later (after its callback returned) must
 * set a watcher with server_req_watch() before returning, and drop its pointer in on_abort.
 */
#ifndef LLMUX_SERVER_H
#define LLMUX_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct tls_ctx;
struct server;
struct server_req;
struct buf;

struct http_header {
    const char *name; /* NUL-terminated */
    size_t name_len;
    const char *value; /* NUL-terminated */
    size_t value_len;
};

/* What the handler sees. Every pointer is borrowed, valid as long as the server_req. */
struct server_request {
    const char *method; /* "GET", "POST", ... */
    const char *url;    /* raw request target, NUL-terminated */
    size_t url_len;
    size_t path_len; /* length of the path part of url (before '?') */
    const struct http_header *headers;
    size_t n_headers;
    const char *body; /* NUL-terminated (the NUL is not counted); "" in on_head */
    size_t body_len;
    int head_only; /* HEAD: the answer's body is not sent (its length still is) */
    const char *cors_origin; /* the request's Origin when it is an allowed one, else NULL */
};

struct server_req;

struct server_opts {
    struct tls_ctx *tls;           /* NULL: plain HTTP */
    size_t max_url_bytes;          /* 0: 8 KiB */
    size_t max_header_bytes;       /* all header names + values; 0: 16 KiB */
    size_t max_body_bytes;         /* 0: 4 MiB */
    uint32_t header_timeout_ms;    /* first byte of a request to end of its headers; 0: 60 s */
    uint32_t body_timeout_ms;      /* between two reads of a body; 0: 60 s */
    uint32_t keepalive_timeout_ms; /* idle connection between requests; 0: 75 s */
    uint32_t send_timeout_ms;      /* queued output that has not moved for this long closes the
                                      connection (a client that stopped reading); 0: 60 s */
    size_t max_connections;        /* open client connections; beyond: 503 and close; 0: 10000 */
    size_t max_body_buffer_bytes;  /* bytes held for request bodies still being received, over
                                      all connections; beyond: 503 and close; 0: 256 MiB */
    /* Called when a request's head is complete, before its body is read (the request view has
     * no body yet). It may answer at once (server_respond*, e.g. a 401 that must not wait for
     * a 4 MiB body); the body is then never read and the connection closes after the answer.
     * May be NULL. */
    void (*on_head)(void *data, struct server_req *r);
    /* Writes a request id (at most 32 characters and a NUL) for the answers the server gives
     * by itself (400, 408, 413, ...), sent as x-request-id. May be NULL. */
    void (*request_id)(void *data, char out[33]);
    /* The body of an error the server answers by itself (400, 408, 413, 414, 431, 503) for a
     * request whose URL is [url, url + url_len) (as much of it as was received; may be empty):
     * appended to out, returns 0; nonzero (or a NULL hook) for OpenAI's shape. */
    int (*error_body)(void *data, const char *url, size_t url_len, int status,
                      const char *message, struct buf *out);
    /* Origins whose browser requests get CORS headers on every answer ("*": any). Borrowed
     * for the server's life. Preflights (OPTIONS) are the handler's. */
    char *const *cors_origins;
    size_t n_cors_origins;
    int reuse_port; /* SO_REUSEPORT on the listener: several processes share the port */
};

struct server_stats {
    uint64_t connections;        /* accepted since start */
    uint64_t active_connections; /* open now */
    uint64_t requests;           /* handed to the handler */
    uint64_t aborted;            /* requests whose client went away before the response ended */
    uint64_t refused;            /* connections refused over max_connections */
    uint64_t send_timeouts;      /* connections closed because the client stopped reading */
};

/* Called once per complete request. `data` is the value given to server_listen(). */
typedef void (*server_handler)(void *data, struct server_req *req);

/* Listen on host:port (IPv4 or IPv6 literal or "localhost"; port 0 picks a free one).
 * Returns 0 or a negative code. */
int server_listen(uv_loop_t *loop, const char *host, uint16_t port, const struct server_opts *o,
                  server_handler handler, void *data, struct server **out);
/* New options (a reload) for requests from now on; the listener and its TLS context stay.
 * What the options borrow must live until the next call or the server's end. */
void server_set_opts(struct server *s, const struct server_opts *o);
/* The bound port (useful after port 0). */
uint16_t server_port(const struct server *s);
const struct server_stats *server_get_stats(const struct server *s);
/* Graceful stop: stop listening, close idle connections, let requests in flight finish (their
 * connections close after the response); on_closed(data) runs when the last one is gone and
 * the server is freed. server_close() may still be called to cut the wait short. */
void server_shutdown(struct server *s, void (*on_closed)(void *data), void *data);
/* Stop listening and close every connection (requests in flight are aborted, on_abort runs);
 * the server is freed when its handles are closed. */
void server_close(struct server *s);

const struct server_request *server_req_request(const struct server_req *r);
/* Header value by case-insensitive name, NUL-terminated; NULL when absent. */
const char *server_req_header(const struct server_req *r, const char *name);
/* A value the handler keeps from on_head to its request handler (0 until set), e.g. what it
 * already worked out from the head. */
void server_req_set_tag(struct server_req *r, uint64_t tag);
uint64_t server_req_tag(const struct server_req *r);

/* Watchers for a response given later. on_abort: the client went away before the response
 * ended; the req is freed when on_abort returns. on_drain: every byte written so far reached
 * the socket (use with server_req_queued() for backpressure). Either may be NULL. */
void server_req_watch(struct server_req *r, void (*on_abort)(void *data, struct server_req *r),
                      void (*on_drain)(void *data, struct server_req *r), void *data);

/* A whole response with Content-Length. hdrs are extra headers (content-type, ...). The req is
 * invalid after this returns. Returns 0 or a negative code (the req is still finished). */
int server_respond(struct server_req *r, int status, const struct http_header *hdrs, size_t n,
                   const char *body, size_t len);
/* The same with a body inside `owned`, a malloc'd block the server takes over (freed with
 * free() once written): a large answer to a slow client is queued without a second copy. */
int server_respond_owned(struct server_req *r, int status, const struct http_header *hdrs,
                         size_t n, char *owned, const char *body, size_t len);
/* An error in OpenAI's shape {"error":{"message","type","param","code"}}, with content-type
 * application/json and x-request-id (from the request_id hook). code may be NULL (null). */
int server_respond_error(struct server_req *r, int status, const char *type, const char *code,
                         const char *message);
/* The same with OpenAI's `param` (NULL: null) and up to SERVER_ERROR_EXTRA more headers; an
 * x-request-id comes from the request_id hook unless `extra` has one. */
#define SERVER_ERROR_EXTRA 12
int server_respond_error_with(struct server_req *r, int status, const char *type,
                              const char *code, const char *param, const char *message,
                              const struct http_header *extra, size_t n_extra);
/* Helper for the body above; appends to out. */
int server_format_error(struct buf *out, const char *type, const char *code, const char *message);

/* A chunked response: start with status and headers, then write pieces (each call is one
 * chunk, flushed at once), then end. Buffers are copied when not written at once. An HTTP/1.0
 * client cannot take chunks (RFC 9112): it gets the bytes raw, delimited by the close. */
int server_stream_start(struct server_req *r, int status, const struct http_header *hdrs, size_t n);
int server_stream_write(struct server_req *r, const uv_buf_t *bufs, unsigned nbufs);
/* Ends the response (terminal chunk). The req is invalid after this returns. */
int server_stream_end(struct server_req *r);
/* Bytes written but not yet taken by the kernel. */
size_t server_req_queued(const struct server_req *r);
/* Abort the response: close the connection at once (a started response cannot be ended
 * properly any more). The req is invalid after this returns; on_abort is NOT called. */
void server_req_abort(struct server_req *r, int reset);

#endif
