/* load: the load generator's engine (see load.h for what it measures).
 *
 * One struct load per run, with its own uv loop; one struct conn per TCP connection.
 * A conn goes CONNECTING -> IDLE <-> BUSY -> CLOSING and is freed in its close callback only.
 * Every conn is on the `all` list until freed, and on the `idle` list while IDLE.
 *
 * The request bytes are built once and shared by every write. Reads go into one shared buffer
 * (the loop is single-threaded and a read is parsed before the next one is allocated), so a
 * connection costs a few hundred bytes and 10,000 of them fit easily. Each read is stamped once
 * (`now`) and every callback of that read uses the stamp: events that arrive in one read arrive
 * together, as the application would see them.
 *
 * The parser pauses at the end of each response (HPE_PAUSED), so a request is finished outside
 * llhttp's callbacks and the next one is sent from a plain function.
 */
#include "load.h"

#include <llhttp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <uv.h>

#include "llmux/buf.h"
#include "llmux/sse.h"

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

enum conn_state {
    C_CONNECTING, /* TCP connect in progress */
    C_IDLE,       /* connected, on the idle list, no request */
    C_BUSY,       /* a request written, its answer not complete */
    C_CLOSING,    /* uv_close called; freed in on_conn_closed */
};

enum outcome { OUT_OK, OUT_STATUS, OUT_CONN, OUT_INCOMPLETE, OUT_TIMEOUT };

struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    llhttp_t parser;
    struct sse_decoder sse;
    struct load *ld;
    struct conn *idle_prev, *idle_next;
    struct conn *all_prev, *all_next;
    enum conn_state state;
    int was_connected;
    /* the request in flight */
    int measured, status, complete, keep_alive, got_done, got_byte, sse_live;
    uint64_t n_events;
    uint64_t t_start, t_prev_event, max_gap;
    char hname[16];  /* the header field being read (enough for "server-timing") */
    size_t hname_len;
    char timing[128]; /* the Server-Timing value */
    size_t timing_len;
};

struct load {
    const struct load_opts *o;
    struct load_result *r;
    uv_loop_t loop;
    struct sockaddr_in addr;
    llhttp_settings_t settings;
    struct buf request; /* the whole request, sent as is every time */
    char rbuf[65536];
    struct conn *idle, *all;
    int to_open, connecting, n_conns;
    uint64_t t0, t_measure, t_last_done, now;
    int issuing, started, finishing;
    uint64_t issued_measured, inflight, inflight_with_byte;
    uv_timer_t measure_timer, end_timer, grace_timer, sample_timer, sweep_timer;
    /* open loop: a timerfd ticks, requests due are sent or queued by scheduled time */
    int tfd;
    uv_poll_t tick;
    int tick_open;
    double next_sched, interval;
    uint64_t *queue;
    size_t q_head, q_len, q_cap;
};

static void conn_ready(struct conn *c);
static void conn_close(struct conn *c, int replace);
static void open_more(struct load *ld);
static void check_done(struct load *ld);

/* ---- bookkeeping ---- */

static void idle_push(struct conn *c)
{
    struct load *ld = c->ld;
    c->state = C_IDLE;
    c->idle_prev = NULL;
    c->idle_next = ld->idle;
    if (ld->idle)
        ld->idle->idle_prev = c;
    ld->idle = c;
}

static void idle_remove(struct conn *c)
{
    if (c->idle_prev)
        c->idle_prev->idle_next = c->idle_next;
    else
        c->ld->idle = c->idle_next;
    if (c->idle_next)
        c->idle_next->idle_prev = c->idle_prev;
    c->idle_prev = c->idle_next = NULL;
}

static int queue_push(struct load *ld, uint64_t t)
{
    if (ld->q_len == ld->q_cap) {
        size_t cap = ld->q_cap ? ld->q_cap * 2 : 1024;
        if (cap > (1u << 24))
            return -1;
        uint64_t *q = malloc(cap * sizeof(*q));
        if (!q)
            return -1;
        for (size_t i = 0; i < ld->q_len; i++)
            q[i] = ld->queue[(ld->q_head + i) % ld->q_cap];
        free(ld->queue);
        ld->queue = q;
        ld->q_cap = cap;
        ld->q_head = 0;
    }
    ld->queue[(ld->q_head + ld->q_len) % ld->q_cap] = t;
    ld->q_len++;
    return 0;
}

static uint64_t queue_pop(struct load *ld)
{
    uint64_t t = ld->queue[ld->q_head];
    ld->q_head = (ld->q_head + 1) % ld->q_cap;
    ld->q_len--;
    return t;
}

static void sample(struct load *ld, struct proc_sample *s)
{
    if (ld->o->pid)
        proc_sample(ld->o->pid, s);
}

/* ---- one request ---- */

static int on_event(void *data, const struct sse_event *ev)
{
    struct conn *c = data;
    struct load *ld = c->ld;
    if (ev->data_len == 6 && memcmp(ev->data, "[DONE]", 6) == 0) {
        c->got_done = 1;
        return 0;
    }
    c->n_events++;
    /* mockllm's send time (stamp=1), same clock: the event's transit through the proxy */
    const char *ts = c->measured ? memmem(ev->data, ev->data_len, "\"mock_ts\":", 10) : NULL;
    if (ts) {
        uint64_t sent = strtoull(ts + 10, NULL, 10);
        if (sent && sent <= ld->now)
            hist_add(&ld->r->transit, ld->now - sent);
    }
    if (c->n_events == 1) {
        if (c->measured)
            hist_add(&ld->r->first_event, ld->now - c->t_start);
    } else {
        uint64_t gap = ld->now - c->t_prev_event;
        if (gap > c->max_gap)
            c->max_gap = gap;
        if (c->n_events >= 3 && c->measured)
            hist_add(&ld->r->gap, gap);
    }
    c->t_prev_event = ld->now;
    return 0;
}

/* A proxy's Server-Timing `overhead;dur=MS` (llmux), recorded in ns. */
static int on_header_field(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->hname_len + len < sizeof(c->hname))
        memcpy(c->hname + c->hname_len, at, len);
    c->hname_len += len;
    return 0;
}

static int is_timing(const struct conn *c)
{
    return c->hname_len == 13 && strncasecmp(c->hname, "server-timing", 13) == 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (is_timing(c) && c->timing_len + len < sizeof(c->timing)) {
        memcpy(c->timing + c->timing_len, at, len);
        c->timing_len += len;
    }
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    if (is_timing(c) && c->measured) {
        c->timing[c->timing_len] = 0;
        const char *d = strstr(c->timing, "overhead;dur=");
        if (d)
            hist_add(&c->ld->r->server_overhead, (uint64_t)(strtod(d + 13, NULL) * 1e6));
    }
    c->hname_len = c->timing_len = 0;
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->status = llhttp_get_status_code(p);
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    struct conn *c = p->data;
    if (c->sse_live && sse_decoder_feed(&c->sse, at, len) != 0)
        return -1;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    struct conn *c = p->data;
    c->complete = 1;
    c->keep_alive = llhttp_should_keep_alive(p);
    return HPE_PAUSED;
}

static void on_write(uv_write_t *req, int status);
static void request_end(struct conn *c, enum outcome out, const char *why);

/* Send the request on c; t_start is when it counts from (its scheduled time in open loop). */
static void send_request(struct conn *c, uint64_t t_start)
{
    struct load *ld = c->ld;
    c->state = C_BUSY;
    c->t_start = t_start;
    c->measured = t_start >= ld->t_measure;
    c->status = c->complete = c->keep_alive = c->got_done = c->got_byte = 0;
    c->n_events = c->max_gap = 0;
    c->hname_len = c->timing_len = 0;
    llhttp_init(&c->parser, HTTP_RESPONSE, &ld->settings);
    c->parser.data = c;
    if (ld->o->stream) {
        sse_decoder_init(&c->sse, 0, 0, on_event, c);
        c->sse_live = 1;
    }
    ld->inflight++;
    uv_buf_t b = uv_buf_init((char *)buf_head(&ld->request), (unsigned)buf_size(&ld->request));
    int rc = uv_write(&c->write_req, (uv_stream_t *)&c->tcp, &b, 1, on_write);
    if (rc) {
        char why[96];
        snprintf(why, sizeof(why), "write: %s", uv_strerror(rc));
        ld->now = uv_hrtime();
        request_end(c, OUT_CONN, why);
        conn_close(c, 1);
    }
}

/* The request on c is over: count it. The caller then makes c ready or closes it. */
static void request_end(struct conn *c, enum outcome out, const char *why)
{
    struct load *ld = c->ld;
    struct load_result *r = ld->r;
    ld->inflight--;
    if (c->got_byte)
        ld->inflight_with_byte--;
    if (c->sse_live) {
        sse_decoder_free(&c->sse);
        c->sse_live = 0;
    }
    if (c->measured) {
        ld->t_last_done = ld->now;
        if (c->n_events >= 2)
            hist_add(&r->max_gap, c->max_gap);
        switch (out) {
        case OUT_OK:
            r->ok++;
            hist_add(&r->total, ld->now - c->t_start);
            break;
        case OUT_STATUS:
            r->err_status++;
            r->last_status = c->status;
            break;
        case OUT_CONN:
            r->err_conn++;
            snprintf(r->last_error, sizeof(r->last_error), "%s", why);
            break;
        case OUT_INCOMPLETE:
            r->err_incomplete++;
            break;
        case OUT_TIMEOUT:
            r->err_timeout++;
            break;
        }
    }
    c->state = C_IDLE; /* not on the idle list yet: conn_ready or conn_close decides */
}

static void request_complete(struct conn *c)
{
    enum outcome out = OUT_OK;
    if (c->status < 200 || c->status > 299)
        out = OUT_STATUS;
    else if (c->ld->o->stream && !c->got_done)
        out = OUT_INCOMPLETE;
    int keep = c->keep_alive;
    request_end(c, out, NULL);
    if (keep)
        conn_ready(c);
    else
        conn_close(c, 1);
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = container_of(req, struct conn, write_req);
    if (status < 0 && c->state == C_BUSY) {
        c->ld->now = uv_hrtime();
        char why[96];
        snprintf(why, sizeof(why), "write: %s", uv_strerror(status));
        request_end(c, OUT_CONN, why);
        conn_close(c, 1);
    }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    *buf = uv_buf_init(c->ld->rbuf, sizeof(c->ld->rbuf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    struct load *ld = c->ld;
    ld->now = uv_hrtime();
    if (nread == 0 || c->state == C_CLOSING)
        return;
    if (nread < 0) {
        if (c->state == C_BUSY) {
            /* a close-delimited body ends here: llhttp_finish completes (and pauses) it */
            enum llhttp_errno fe = nread == UV_EOF ? llhttp_finish(&c->parser) : HPE_OK;
            if (nread == UV_EOF && (fe == HPE_OK || fe == HPE_PAUSED) && c->complete) {
                c->keep_alive = 0;
                request_complete(c);
                return;
            }
            request_end(c, OUT_CONN, nread == UV_EOF ? "closed by peer" : uv_strerror((int)nread));
        }
        conn_close(c, 1);
        return;
    }
    if (c->state != C_BUSY) {
        snprintf(ld->r->last_error, sizeof(ld->r->last_error), "bytes with no request");
        conn_close(c, 1);
        return;
    }
    if (!c->got_byte) {
        c->got_byte = 1;
        ld->inflight_with_byte++;
        if (c->measured)
            hist_add(&ld->r->ttfb, ld->now - c->t_start);
    }
    enum llhttp_errno e = llhttp_execute(&c->parser, buf->base, (size_t)nread);
    if (e == HPE_PAUSED && c->complete) {
        request_complete(c);
    } else if (e != HPE_OK) {
        char why[96];
        snprintf(why, sizeof(why), "bad response: %s", llhttp_errno_name(e));
        request_end(c, OUT_CONN, why);
        conn_close(c, 1);
    }
}

/* ---- connections ---- */

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct load *ld = c->ld;
    if (c->sse_live)
        sse_decoder_free(&c->sse);
    if (c->all_prev)
        c->all_prev->all_next = c->all_next;
    else
        ld->all = c->all_next;
    if (c->all_next)
        c->all_next->all_prev = c->all_prev;
    ld->n_conns--;
    free(c);
    check_done(ld);
}

/* Close c (its request, if any, already counted). With replace, a new connection takes its
 * place while requests are still being sent, so the concurrency holds. */
static void conn_close(struct conn *c, int replace)
{
    struct load *ld = c->ld;
    if (c->state == C_CLOSING)
        return;
    if (c->state == C_IDLE && (c->idle_prev || ld->idle == c))
        idle_remove(c);
    c->state = C_CLOSING;
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    if (replace && c->was_connected && ld->issuing && !ld->finishing) {
        ld->to_open++;
        open_more(ld);
    }
}

/* Count a request starting at t; returns 1 when it is the last one to send. */
static int count_request(struct load *ld, uint64_t t)
{
    if (t < ld->t_measure)
        return 0;
    ld->issued_measured++;
    return ld->o->requests && ld->issued_measured >= ld->o->requests;
}

static void stop_issuing(struct load *ld);

/* c has nothing to do: give it the next request, or park it. */
static void conn_ready(struct conn *c)
{
    struct load *ld = c->ld;
    if (!ld->finishing) {
        if (ld->o->rate > 0) {
            if (ld->q_len) {
                send_request(c, queue_pop(ld));
                return;
            }
        } else if (ld->issuing) {
            uint64_t now = uv_hrtime();
            int last = count_request(ld, now);
            send_request(c, now);
            if (last)
                stop_issuing(ld);
            return;
        }
    }
    idle_push(c);
    check_done(ld);
}

static void start_schedule(struct load *ld);

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = container_of(req, struct conn, connect_req);
    struct load *ld = c->ld;
    ld->connecting--;
    if (c->state == C_CLOSING)
        return;
    if (status < 0) {
        ld->r->err_conn++;
        snprintf(ld->r->last_error, sizeof(ld->r->last_error), "connect: %s", uv_strerror(status));
        conn_close(c, 0);
    } else {
        c->was_connected = 1;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        conn_ready(c);
    }
    open_more(ld);
    if (ld->o->rate > 0 && !ld->started && ld->to_open == 0 && ld->connecting == 0)
        start_schedule(ld);
}

static int conn_open(struct load *ld)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        return UV_ENOMEM;
    c->ld = ld;
    c->state = C_CONNECTING;
    uv_tcp_init(&ld->loop, &c->tcp);
    c->tcp.data = c;
    c->all_next = ld->all;
    if (ld->all)
        ld->all->all_prev = c;
    ld->all = c;
    ld->n_conns++;
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, (struct sockaddr *)&ld->addr, on_connect);
    if (rc) {
        ld->r->err_conn++;
        snprintf(ld->r->last_error, sizeof(ld->r->last_error), "connect: %s", uv_strerror(rc));
        conn_close(c, 0);
        return rc;
    }
    ld->connecting++;
    return 0;
}

static void open_more(struct load *ld)
{
    while (ld->to_open > 0 && ld->connecting < ld->o->max_connecting && !ld->finishing) {
        ld->to_open--;
        conn_open(ld); /* a failure is counted and its conn closed: go on with the rest */
    }
}

/* ---- the run ---- */

static void on_handle_closed(uv_handle_t *h)
{
    (void)h;
}

static void on_tick_closed(uv_handle_t *h)
{
    struct load *ld = h->data;
    close(ld->tfd);
    ld->tfd = -1;
}

/* Stop everything: requests still in flight (or queued) count as timeouts. */
static void finish(struct load *ld)
{
    if (ld->finishing)
        return;
    ld->finishing = 1;
    ld->issuing = 0;
    ld->now = uv_hrtime();
    sample(ld, &ld->r->p_end);
    for (size_t i = 0; i < ld->q_len; i++)
        if (ld->queue[(ld->q_head + i) % ld->q_cap] >= ld->t_measure)
            ld->r->err_timeout++;
    ld->q_len = 0;
    if (ld->tick_open) {
        ld->tick_open = 0;
        uv_close((uv_handle_t *)&ld->tick, on_tick_closed);
    }
    uv_close((uv_handle_t *)&ld->measure_timer, on_handle_closed);
    uv_close((uv_handle_t *)&ld->end_timer, on_handle_closed);
    uv_close((uv_handle_t *)&ld->grace_timer, on_handle_closed);
    uv_close((uv_handle_t *)&ld->sample_timer, on_handle_closed);
    uv_close((uv_handle_t *)&ld->sweep_timer, on_handle_closed);
    for (struct conn *c = ld->all; c; c = c->all_next) {
        if (c->state == C_BUSY)
            request_end(c, OUT_TIMEOUT, NULL);
        conn_close(c, 0);
    }
    if (ld->t_last_done > ld->t_measure)
        ld->r->elapsed_s = (double)(ld->t_last_done - ld->t_measure) / 1e9;
}

static void check_done(struct load *ld)
{
    if (ld->finishing)
        return;
    int idle_run = !ld->issuing && ld->inflight == 0 && ld->q_len == 0;
    int dead = ld->n_conns == 0 && ld->to_open == 0 && ld->connecting == 0;
    if (idle_run || dead)
        finish(ld);
}

/* A request in flight for longer than timeout_s fails as a timeout; its connection is replaced. */
static void on_sweep(uv_timer_t *t)
{
    struct load *ld = t->data;
    ld->now = uv_hrtime();
    uint64_t limit = (uint64_t)(ld->o->timeout_s * 1e9);
    for (struct conn *c = ld->all; c && !ld->finishing; c = c->all_next) {
        if (c->state == C_BUSY && ld->now - c->t_start > limit) {
            request_end(c, OUT_TIMEOUT, NULL);
            conn_close(c, 1);
        }
    }
}

static void on_grace(uv_timer_t *t)
{
    finish(t->data);
}

static void stop_issuing(struct load *ld)
{
    if (!ld->issuing)
        return;
    ld->issuing = 0;
    if (ld->tick_open)
        uv_poll_stop(&ld->tick);
    uv_timer_start(&ld->grace_timer, on_grace, (uint64_t)(ld->o->timeout_s * 1000), 0);
    check_done(ld);
}

static void on_end(uv_timer_t *t)
{
    stop_issuing(t->data);
}

/* Keep the sample taken with the most answers in flight. */
static void on_sample(uv_timer_t *t)
{
    struct load *ld = t->data;
    struct load_result *r = ld->r;
    if (ld->inflight_with_byte <= r->peak_inflight)
        return;
    r->peak_inflight = ld->inflight_with_byte;
    r->peak_at_s = (double)(uv_hrtime() - ld->t0) / 1e9;
    sample(ld, &r->p_peak);
}

static void on_measure(uv_timer_t *t)
{
    struct load *ld = t->data;
    sample(ld, &ld->r->p_start);
}

/* Measuring starts warmup_s after t0 and sending stops duration_s later. */
static void start_clock(struct load *ld)
{
    const struct load_opts *o = ld->o;
    ld->t0 = uv_hrtime();
    ld->t_measure = ld->t0 + (uint64_t)(o->warmup_s * 1e9);
    if (o->warmup_s > 0)
        uv_timer_start(&ld->measure_timer, on_measure, (uint64_t)(o->warmup_s * 1000), 0);
    else
        sample(ld, &ld->r->p_start);
    if (o->duration_s > 0)
        uv_timer_start(&ld->end_timer, on_end, (uint64_t)((o->warmup_s + o->duration_s) * 1000), 0);
    if (o->sample_ms > 0 && o->pid)
        uv_timer_start(&ld->sample_timer, on_sample, (uint64_t)o->sample_ms,
                       (uint64_t)o->sample_ms);
}

static void on_tick(uv_poll_t *p, int status, int events)
{
    struct load *ld = p->data;
    uint64_t expirations;
    if (read(ld->tfd, &expirations, sizeof(expirations)) < 0) {
        /* EAGAIN: a spurious wake-up; the clock below decides anyway */
    }
    uint64_t now = uv_hrtime();
    while (ld->issuing && ld->next_sched <= (double)now) {
        uint64_t t = (uint64_t)ld->next_sched;
        ld->next_sched += ld->interval;
        int last = count_request(ld, t);
        struct conn *c = ld->idle;
        if (c) {
            idle_remove(c);
            send_request(c, t);
        } else if (queue_push(ld, t) != 0 && t >= ld->t_measure) {
            ld->r->err_timeout++; /* the queue is past 16 M entries: the target is far gone */
        }
        if (last) {
            stop_issuing(ld);
            break;
        }
    }
}

/* Open loop: every connection is up; start the clock and the ticks. */
static void start_schedule(struct load *ld)
{
    ld->started = 1;
    if (ld->n_conns == 0) {
        finish(ld);
        return;
    }
    start_clock(ld);
    ld->interval = 1e9 / ld->o->rate;
    ld->next_sched = (double)ld->t0;
    /* ticks no closer than 20 us: at higher rates several requests leave per tick */
    long tick_ns = ld->interval > 20000 ? (long)ld->interval : 20000;
    struct itimerspec its = {.it_interval = {tick_ns / 1000000000L, tick_ns % 1000000000L},
                             .it_value = {0, 1000}};
    timerfd_settime(ld->tfd, 0, &its, NULL);
    uv_poll_start(&ld->tick, UV_READABLE, on_tick);
}

static void build_request(struct load *ld)
{
    const struct load_opts *o = ld->o;
    struct buf body;
    buf_init(&body, 0);
    buf_append_str(&body, "{\"model\":\"");
    buf_append_json_str(&body, o->model, strlen(o->model));
    buf_printf(&body, "\",\"stream\":%s,\"messages\":[{\"role\":\"user\",\"content\":\"",
               o->stream ? "true" : "false");
    size_t tail = 4; /* "}]} */
    while (buf_size(&body) + tail < o->body_bytes || buf_size(&body) + tail < 64 + 1)
        buf_append(&body, "x", 1);
    buf_append_str(&body, "\"}]}");
    buf_init(&ld->request, 0);
    buf_printf(&ld->request,
               "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
               "Content-Length: %zu\r\n",
               o->path, o->host, o->port, buf_size(&body));
    for (int i = 0; i < o->n_headers; i++)
        buf_printf(&ld->request, "%s\r\n", o->headers[i]);
    buf_append_str(&ld->request, "\r\n");
    buf_append(&ld->request, buf_head(&body), buf_size(&body));
    buf_free(&body);
}

int load_run(const struct load_opts *o, struct load_result *r)
{
    struct load *ld = calloc(1, sizeof(*ld));
    if (!ld)
        return UV_ENOMEM;
    memset(r, 0, sizeof(*r));
    ld->o = o;
    ld->r = r;
    ld->tfd = -1;
    int rc = uv_ip4_addr(o->host, o->port, &ld->addr);
    if (rc)
        goto fail;
    if (o->rate > 0) {
        prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* wake-ups within a microsecond, not 50 */
        ld->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (ld->tfd < 0) {
            rc = UV_EINVAL;
            goto fail;
        }
    }
    rc = uv_loop_init(&ld->loop);
    if (rc) {
        if (ld->tfd >= 0)
            close(ld->tfd);
        goto fail;
    }
    llhttp_settings_init(&ld->settings);
    ld->settings.on_headers_complete = on_headers_complete;
    ld->settings.on_header_field = on_header_field;
    ld->settings.on_header_value = on_header_value;
    ld->settings.on_header_value_complete = on_header_value_complete;
    ld->settings.on_body = on_body;
    ld->settings.on_message_complete = on_message_complete;
    build_request(ld);
    uv_timer_init(&ld->loop, &ld->measure_timer);
    uv_timer_init(&ld->loop, &ld->end_timer);
    uv_timer_init(&ld->loop, &ld->grace_timer);
    uv_timer_init(&ld->loop, &ld->sample_timer);
    uv_timer_init(&ld->loop, &ld->sweep_timer);
    ld->measure_timer.data = ld->end_timer.data = ld->grace_timer.data = ld;
    ld->sample_timer.data = ld->sweep_timer.data = ld;
    uv_timer_start(&ld->sweep_timer, on_sweep, 100, 100);
    if (o->rate > 0) {
        uv_poll_init(&ld->loop, &ld->tick, ld->tfd);
        ld->tick.data = ld;
        ld->tick_open = 1;
    }
    sample(ld, &r->p_before);
    ld->issuing = 1;
    if (o->rate <= 0)
        start_clock(ld);
    ld->to_open = o->conns;
    open_more(ld);
    uv_run(&ld->loop, UV_RUN_DEFAULT);
    rc = uv_loop_close(&ld->loop);
    if (rc)
        fprintf(stderr, "llmux-bench: loop closed with handles open\n");
    rc = 0;
fail:
    buf_free(&ld->request);
    free(ld->queue);
    free(ld);
    return rc;
}
