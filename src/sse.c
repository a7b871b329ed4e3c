/* sse: incremental Server-Sent Events decoder (WHATWG "event stream interpretation").
 *
 * One struct sse_decoder per upstream stream: sse_decoder_init(), any number of
 * sse_decoder_feed() calls with whatever the socket delivered, sse_decoder_finish() at end of
 * stream to learn whether the last event was cut off, sse_decoder_free().
 *
 * Feeding scans for CR and LF with memchr. A line that lies whole inside the current feed is
 * parsed where it is; only the unterminated tail of a feed is copied into `line`, and the next
 * line end completes it there. So `line` is empty except between feeds, and holds at most
 * max_line bytes. A CR that ends a feed sets `last_cr` so that an LF opening the next feed is
 * taken as the rest of that CRLF, not as a blank line.
 *
 * Per-event state (`data`, `event`, `id`, `has_id`, `pending`) lives until a blank line, which
 * dispatches the event when `data` is non-empty and then resets it. `data` holds every data
 * value followed by LF, so its size is at most max_event + 1 (the final LF is dropped at
 * dispatch). `event` and `id` are each set from a single line, so max_line bounds them too.
 *
 * Once a feed fails or a callback asks to stop, `stopped` keeps that value and every later feed
 * returns it without looking at the bytes.
 */
#include "llmux/sse.h"

#include <stdint.h>
#include <string.h>

#include "llmux/errors.h"

#define SSE_DEFAULT_MAX_LINE (64 * 1024)
#define SSE_DEFAULT_MAX_EVENT (1024 * 1024)

static const char utf8_bom[3] = {'\xEF', '\xBB', '\xBF'};

void sse_decoder_init(struct sse_decoder *d, size_t max_line, size_t max_event, sse_event_cb cb,
                      void *cb_data)
{
    memset(d, 0, sizeof(*d));
    d->cb = cb;
    d->cb_data = cb_data;
    d->max_line = max_line ? max_line : SSE_DEFAULT_MAX_LINE;
    d->max_event = max_event ? max_event : SSE_DEFAULT_MAX_EVENT;
    buf_init(&d->line, d->max_line);
    /* room for the LF after the last data line, which dispatch removes */
    buf_init(&d->data, d->max_event < SIZE_MAX ? d->max_event + 1 : 0);
    /* set from one line each, so already bounded by max_line */
    buf_init(&d->event, 0);
    buf_init(&d->id, 0);
}

void sse_decoder_free(struct sse_decoder *d)
{
    buf_free(&d->line);
    buf_free(&d->data);
    buf_free(&d->event);
    buf_free(&d->id);
}

/* Forget the current event, keeping the allocations for the next one. */
static void event_reset(struct sse_decoder *d)
{
    buf_reset(&d->data);
    buf_reset(&d->event);
    buf_reset(&d->id);
    d->has_id = 0;
    d->pending = 0;
}

/* A blank line: hand the event to the callback if it has data. Returns the callback's value.
 * Buffer failures (only UV_ENOMEM can happen here) are reported as LLMUX_ESSE because the
 * interface promises no other error; the stream is lost either way. */
static int dispatch(struct sse_decoder *d)
{
    if (buf_size(&d->data) == 0) {
        event_reset(d);
        return 0;
    }
    struct sse_event ev;
    /* overwrite the final LF with the NUL the interface promises */
    ev.data = d->data.data + d->data.off;
    ev.data_len = buf_size(&d->data) - 1;
    d->data.data[d->data.len - 1] = '\0';
    ev.event = "";
    ev.event_len = 0;
    if (buf_size(&d->event) > 0) {
        ev.event_len = buf_size(&d->event);
        if (buf_append(&d->event, "", 1) != 0)
            return LLMUX_ESSE;
        ev.event = buf_head(&d->event);
    }
    ev.id = NULL;
    ev.id_len = 0;
    if (d->has_id) {
        ev.id_len = buf_size(&d->id);
        if (buf_append(&d->id, "", 1) != 0)
            return LLMUX_ESSE;
        ev.id = buf_head(&d->id);
    }
    d->events++;
    int rc = d->cb(d->cb_data, &ev);
    event_reset(d);
    return rc;
}

/* One complete line, without its line end. s may point into the caller's feed. */
static int process_line(struct sse_decoder *d, const char *s, size_t len)
{
    if (len == 0)
        return dispatch(d);
    if (s[0] == ':') {
        d->comments++;
        return 0;
    }
    d->pending = 1;
    /* "name:value" with one optional space after the colon; no colon: the whole line is the
     * name and the value is empty. */
    const char *colon = memchr(s, ':', len);
    size_t name_len = colon ? (size_t)(colon - s) : len;
    const char *v = colon ? colon + 1 : s + len;
    size_t vlen = len - (size_t)(v - s);
    if (vlen > 0 && v[0] == ' ') {
        v++;
        vlen--;
    }
    if (name_len == 4 && memcmp(s, "data", 4) == 0) {
        if (buf_append(&d->data, v, vlen) != 0 || buf_append(&d->data, "\n", 1) != 0)
            return LLMUX_ESSE;
    } else if (name_len == 5 && memcmp(s, "event", 5) == 0) {
        buf_reset(&d->event);
        if (buf_append(&d->event, v, vlen) != 0)
            return LLMUX_ESSE;
    } else if (name_len == 2 && memcmp(s, "id", 2) == 0 && memchr(v, '\0', vlen) == NULL) {
        buf_reset(&d->id);
        if (buf_append(&d->id, v, vlen) != 0)
            return LLMUX_ESSE;
        d->has_id = 1;
    }
    /* retry and unknown fields are ignored: llmux does not reconnect by itself */
    return 0;
}

/* A line end was found after [s, s + len): complete a carried line or parse in place. */
static int line_end(struct sse_decoder *d, const char *s, size_t len)
{
    if (buf_size(&d->line) == 0) {
        if (len > d->max_line)
            return LLMUX_ESSE;
        return process_line(d, s, len);
    }
    if (buf_append(&d->line, s, len) != 0)
        return LLMUX_ESSE;
    int rc = process_line(d, buf_head(&d->line), buf_size(&d->line));
    buf_reset(&d->line);
    return rc;
}

/* Split [p, p + n) into lines; the BOM has already been dealt with. */
static int feed_lines(struct sse_decoder *d, const char *p, size_t n)
{
    const char *end = p + n;
    if (d->last_cr && p < end) {
        d->last_cr = 0;
        if (*p == '\n')
            p++;
    }
    /* The next LF is remembered across lines so that a stream of CR-only line ends does not
     * rescan the rest of the feed for an LF at every line. */
    const char *lf = memchr(p, '\n', (size_t)(end - p));
    if (!lf)
        lf = end;
    while (p < end) {
        if (lf < p) {
            lf = memchr(p, '\n', (size_t)(end - p));
            if (!lf)
                lf = end;
        }
        const char *eol = memchr(p, '\r', (size_t)(lf - p));
        if (!eol)
            eol = lf;
        if (eol == end) {
            /* no line end left: carry the partial line to the next feed */
            if (buf_append(&d->line, p, (size_t)(end - p)) != 0)
                return LLMUX_ESSE;
            return 0;
        }
        const char *next = eol + 1;
        if (*eol == '\r') {
            if (next == end)
                d->last_cr = 1;
            else if (*next == '\n')
                next++;
        }
        int rc = line_end(d, p, (size_t)(eol - p));
        if (rc != 0)
            return rc;
        p = next;
    }
    return 0;
}

int sse_decoder_feed(struct sse_decoder *d, const char *p, size_t n)
{
    if (d->stopped)
        return d->stopped;
    if (!d->bom_done) {
        /* At most three bytes, once per stream. Matched bytes are held until the BOM is
         * complete or disproved; in the latter case they were content after all. */
        while (d->bom_len < 3 && n > 0 && *p == utf8_bom[d->bom_len]) {
            d->bom_len++;
            p++;
            n--;
        }
        if (d->bom_len < 3 && n == 0)
            return 0;
        d->bom_done = 1;
        if (d->bom_len < 3) {
            int rc = feed_lines(d, utf8_bom, (size_t)d->bom_len);
            if (rc != 0) {
                d->stopped = rc;
                return rc;
            }
        }
    }
    int rc = feed_lines(d, p, n);
    if (rc != 0)
        d->stopped = rc;
    return rc;
}

int sse_decoder_finish(struct sse_decoder *d)
{
    int partial_bom = !d->bom_done && d->bom_len > 0;
    return d->pending || buf_size(&d->line) > 0 || partial_bom;
}
