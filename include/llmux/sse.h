/* sse: incremental Server-Sent Events decoder following the WHATWG rules.
 *
 * Lines end in CR, LF or CRLF (a CR at the end of one feed and an LF at the start of the next
 * are ONE line end); a leading UTF-8 BOM is dropped once; lines starting with ':' are comments;
 * `data:` lines are joined with LF; a single space after the colon is removed; an event is
 * dispatched at a blank line, only if it has data; an event cut off at end of stream (no blank
 * line) is never dispatched. Line and event sizes are bounded.
 */
#ifndef LLMUX_SSE_H
#define LLMUX_SSE_H

#include <stddef.h>

#include "llmux/buf.h"

struct sse_event {
    const char *event; /* event type ("" when none given); borrowed, valid during the callback */
    size_t event_len;
    const char *data; /* data lines joined by LF, no trailing LF; NUL-terminated */
    size_t data_len;
    const char *id; /* `id:` of this event, NULL when it had none */
    size_t id_len;
};

/* Return 0 to go on; anything else stops the decoder: sse_decoder_feed() returns that value
 * at once and the decoder must not be fed again. */
typedef int (*sse_event_cb)(void *data, const struct sse_event *ev);

struct sse_decoder {
    sse_event_cb cb;
    void *cb_data;
    size_t max_line;  /* longest accepted line */
    size_t max_event; /* largest accepted data of one event */
    size_t comments;  /* comment lines seen (keep-alives), for activity accounting */
    size_t events;    /* events dispatched */
    /* private */
    struct buf line;  /* a partial line carried to the next feed (capped at max_line) */
    struct buf data;  /* data lines of the current event, each followed by LF */
    struct buf event; /* event type of the current event */
    struct buf id;    /* id of the current event, meaningful when has_id */
    int has_id;
    int bom_done; /* the start of the stream has been checked for a BOM */
    int bom_len;  /* BOM bytes matched so far and held back while undecided */
    int last_cr;  /* previous feed ended in CR: a leading LF is part of that line end */
    int pending;  /* a field line was seen since the last blank line */
    int stopped;  /* nonzero: the value feed returned when the decoder stopped */
};

/* Initialise. max_line and max_event of 0 take defaults (64 KiB and 1 MiB). */
void sse_decoder_init(struct sse_decoder *d, size_t max_line, size_t max_event, sse_event_cb cb,
                      void *cb_data);
/* Feed bytes. Returns 0, the callback's nonzero value, or LLMUX_ESSE (line or event over its
 * bound; the decoder is then stopped). */
int sse_decoder_feed(struct sse_decoder *d, const char *p, size_t n);
/* End of stream: returns 1 when an event was started but never completed (truncated), else 0. */
int sse_decoder_finish(struct sse_decoder *d);
/* Free the buffers; the decoder may be initialised again. */
void sse_decoder_free(struct sse_decoder *d);

#endif
