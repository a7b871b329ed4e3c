/* fuzz_sse: libFuzzer harness for the SSE decoder (src/sse.c). Built by CMake with
 * -DLLMUX_FUZZ=ON (make build-fuzz); run with `make fuzz` or test/fuzz/run.sh; seeds in
 * corpus/sse/.
 *
 * Besides memory errors it checks a differential property: the same bytes fed at once and fed
 * in pieces of fuzzer-chosen sizes give the same events, the same return value, the same
 * counters and the same finish() result. The first four bytes choose max_line, max_event,
 * the event at which the callback stops, and the piece sizes; the rest is the stream.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/sse.h"

struct run {
    struct buf out; /* every event as type, id, data with their lengths */
    size_t max_event;
    int stop_at; /* 1-based event at which the callback returns 1; 0: never */
    int n;
};

static void put(struct buf *b, const char *p, size_t n)
{
    buf_append(b, &n, sizeof(n));
    buf_append(b, p, n);
}

static int on_event(void *data, const struct sse_event *ev)
{
    struct run *r = data;
    if (!ev->event || !ev->data || ev->data[ev->data_len] != '\0' ||
        ev->event[ev->event_len] != '\0' || ev->data_len > r->max_event ||
        (ev->id && ev->id[ev->id_len] != '\0'))
        abort();
    put(&r->out, ev->event, ev->event_len);
    put(&r->out, ev->id ? ev->id : "-", ev->id ? ev->id_len : 1);
    buf_append(&r->out, ev->id ? "i" : "n", 1);
    put(&r->out, ev->data, ev->data_len);
    r->n++;
    return r->n == r->stop_at;
}

struct result {
    int rc, finish;
    size_t comments, events;
};

/* Decode p in pieces; seed 0 means one feed, else piece sizes come from a small LCG. */
static struct result decode(struct run *r, const uint8_t *cfg, const char *p, size_t n,
                            unsigned seed)
{
    struct sse_decoder d;
    struct result res = {0};
    buf_init(&r->out, 0);
    r->n = 0;
    r->stop_at = cfg[2] % 8;
    size_t max_line = cfg[0] % 64; /* 0: the default */
    r->max_event = cfg[1] % 128 ? (size_t)(cfg[1] % 128) : 1024 * 1024;
    sse_decoder_init(&d, max_line, r->max_event, on_event, r);
    size_t i = 0;
    while (i < n && res.rc == 0) {
        size_t k = n - i;
        if (seed) {
            seed = seed * 1103515245u + 12345u;
            k = (seed >> 16) % 9; /* 0..8: empty feeds included */
            if (k > n - i)
                k = n - i;
        }
        res.rc = sse_decoder_feed(&d, p + i, k);
        i += k;
    }
    res.finish = sse_decoder_finish(&d);
    res.comments = d.comments;
    res.events = d.events;
    sse_decoder_free(&d);
    return res;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4)
        return 0;
    const char *p = (const char *)data + 4;
    size_t n = size - 4;
    struct run a, b;
    struct result ra = decode(&a, data, p, n, 0);
    struct result rb = decode(&b, data, p, n, data[3] | 1u);
    if (ra.rc != rb.rc || ra.comments != rb.comments || ra.events != rb.events ||
        buf_size(&a.out) != buf_size(&b.out) ||
        memcmp(buf_head(&a.out), buf_head(&b.out), buf_size(&a.out)) != 0)
        abort();
    /* finish() is only meaningful for a stream read to its end */
    if (ra.rc == 0 && ra.finish != rb.finish)
        abort();
    buf_free(&a.out);
    buf_free(&b.out);
    return 0;
}
