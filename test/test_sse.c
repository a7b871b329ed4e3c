/* sse: the WHATWG event-stream rules as an upstream's bytes arrive in arbitrary reads.
 *
 * Every event the decoder dispatches is written as "{type|id|data}" (id "-" when absent), so a
 * whole stream's outcome is one string to compare, whatever way it was split into feeds. */
#include <stdarg.h>
#include <string.h>

#include "check.h"
#include "llmux/errors.h"
#include "llmux/sse.h"

#define BOM "\xEF\xBB\xBF"

struct rec {
    struct buf out;
    int stop_at; /* return stop_rc from the stop_at-th event (1-based); 0: never */
    int stop_rc;
    int n;
};

/* Events that broke the interface (missing NUL, NULL type), over all runs; checked once. */
static int bad_events;

static int on_event(void *data, const struct sse_event *ev)
{
    struct rec *r = data;
    r->n++;
    if (!ev->event || !ev->data || ev->data[ev->data_len] != '\0' ||
        ev->event[ev->event_len] != '\0' || (ev->id && ev->id[ev->id_len] != '\0'))
        bad_events++;
    buf_append(&r->out, "{", 1);
    buf_append(&r->out, ev->event, ev->event_len);
    buf_append(&r->out, "|", 1);
    if (ev->id)
        buf_append(&r->out, ev->id, ev->id_len);
    else
        buf_append(&r->out, "-", 1);
    buf_append(&r->out, "|", 1);
    buf_append(&r->out, ev->data, ev->data_len);
    buf_append(&r->out, "}", 1);
    return r->n == r->stop_at ? r->stop_rc : 0;
}

/* The result of one decoding run. */
static char out[4096];
static size_t out_len;
static int out_rc;     /* first nonzero feed return, else 0 */
static int out_finish; /* sse_decoder_finish() */
static size_t out_comments;
static size_t out_events;

static void run_begin(struct sse_decoder *d, struct rec *r, size_t max_line, size_t max_event)
{
    memset(r, 0, sizeof(*r));
    buf_init(&r->out, 0);
    sse_decoder_init(d, max_line, max_event, on_event, r);
    out_rc = 0;
}

static void run_feed(struct sse_decoder *d, const char *p, size_t n)
{
    int rc = sse_decoder_feed(d, p, n);
    if (rc && !out_rc)
        out_rc = rc;
}

static const char *run_end(struct sse_decoder *d, struct rec *r)
{
    out_finish = sse_decoder_finish(d);
    out_comments = d->comments;
    out_events = d->events;
    size_t n = buf_size(&r->out) < sizeof(out) - 1 ? buf_size(&r->out) : sizeof(out) - 1;
    memcpy(out, buf_head(&r->out), n);
    out[n] = '\0';
    out_len = n;
    buf_free(&r->out);
    sse_decoder_free(d);
    return out;
}

/* Decode n bytes fed in pieces of `chunk` bytes (0: all at once), default bounds. */
static const char *decode_n(const char *s, size_t n, size_t chunk)
{
    struct sse_decoder d;
    struct rec r;
    run_begin(&d, &r, 0, 0);
    if (chunk == 0)
        chunk = n ? n : 1;
    for (size_t i = 0; i < n && !out_rc; i += chunk)
        run_feed(&d, s + i, n - i < chunk ? n - i : chunk);
    return run_end(&d, &r);
}

static const char *decode(const char *s)
{
    return decode_n(s, strlen(s), 0);
}

/* Decode the pieces given, NULL-terminated, as separate feeds. */
static const char *decode_parts(const char *first, ...)
{
    struct sse_decoder d;
    struct rec r;
    run_begin(&d, &r, 0, 0);
    va_list ap;
    va_start(ap, first);
    for (const char *s = first; s; s = va_arg(ap, const char *))
        run_feed(&d, s, strlen(s));
    va_end(ap);
    return run_end(&d, &r);
}

/* Decode with bounds, in pieces of `chunk` bytes (0: at once). */
static const char *decode_bounded(const char *s, size_t max_line, size_t max_event, size_t chunk)
{
    struct sse_decoder d;
    struct rec r;
    run_begin(&d, &r, max_line, max_event);
    size_t n = strlen(s);
    if (chunk == 0)
        chunk = n;
    for (size_t i = 0; i < n && !out_rc; i += chunk)
        run_feed(&d, s + i, n - i < chunk ? n - i : chunk);
    return run_end(&d, &r);
}

static void test_line_ends(void)
{
    CHECK_STR(decode("data: a\n\n"), "{|-|a}");
    CHECK_STR(decode("data: a\r\r"), "{|-|a}");
    CHECK_STR(decode("data: a\r\n\r\n"), "{|-|a}");
    CHECK_STR(decode("data: a\n\ndata: b\n\n"), "{|-|a}{|-|b}");
    CHECK_STR(decode("data: a\r\rdata: b\r\r"), "{|-|a}{|-|b}");
    CHECK_STR(decode("data: a\r\n\r\ndata: b\r\n\r\n"), "{|-|a}{|-|b}");
    /* mixed in one event; "\n\r\n" is LF then CRLF: two line ends */
    CHECK_STR(decode("data: a\rdata: b\r\ndata: c\n\r\n"), "{|-|a\nb\nc}");
    CHECK_STR(decode("data: a\n\r"), "{|-|a}");
    /* "\r\n" is one line end but "\n\r" is two */
    CHECK_STR(decode("data: a\r\ndata: b\n\rdata: c\n\n"), "{|-|a\nb}{|-|c}");
}

static void test_cr_across_feeds(void)
{
    /* CR ends one feed, LF starts the next: one line end, so a and b are one event */
    CHECK_STR(decode_parts("data: a\r", "\ndata: b\r", "\n\r", "\n", NULL), "{|-|a\nb}");
    CHECK_INT(out_finish, 0);
    /* the LF is not swallowed if something else came first */
    CHECK_STR(decode_parts("data: a\r", "\r", "\ndata: b\n\n", NULL), "{|-|a}{|-|b}");
    /* an empty feed in between changes nothing */
    CHECK_STR(decode_parts("data: a\r", "", "\n", "data: b\r", "", "\n\n", NULL), "{|-|a\nb}");
    /* a carried partial line ended by a CR at the end of a feed */
    CHECK_STR(decode_parts("da", "ta: a\r", "\n", "\r", "\n", NULL), "{|-|a}");
}

/* A stream with every feature in it; split anywhere it must decode the same. */
static const char split_stream[] = "\xEF\xBB\xBF"
                                   ": hello\r\n"
                                   "event: add\r"
                                   "id: 7\r\n"
                                   "data: first\n"
                                   "data:second\r"
                                   "data\r\n"
                                   "\r\n"
                                   "retry: 10\n"
                                   "x-unknown: y\n"
                                   "data:  spaced \r"
                                   "\r"
                                   ":\n"
                                   "event: ping\n"
                                   "\n"
                                   "id\n"
                                   "data: {\"a\":1}\r\n"
                                   "\n"
                                   "data: [DONE]\n"
                                   "\n";
static const char split_expect[] = "{add|7|first\nsecond\n}{|-| spaced }{||{\"a\":1}}{|-|[DONE]}";

static void test_splits(void)
{
    size_t n = sizeof(split_stream) - 1;
    CHECK_STR(decode_n(split_stream, n, 0), split_expect);
    CHECK_INT(out_comments, 2);
    CHECK_INT(out_events, 4);
    CHECK_INT(out_finish, 0);
    CHECK_STR(decode_n(split_stream, n, 1), split_expect);
    CHECK_INT(out_comments, 2);
    CHECK_INT(out_finish, 0);
    for (size_t chunk = 2; chunk <= 7; chunk++)
        CHECK_STR(decode_n(split_stream, n, chunk), split_expect);

    /* every single split position, and every pair of them (three feeds) */
    int mismatches = 0;
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j++) {
            struct sse_decoder d;
            struct rec r;
            run_begin(&d, &r, 0, 0);
            run_feed(&d, split_stream, i);
            run_feed(&d, split_stream + i, j - i);
            run_feed(&d, split_stream + j, n - j);
            const char *got = run_end(&d, &r);
            if (strcmp(got, split_expect) != 0 || out_rc != 0 || out_finish != 0 ||
                out_comments != 2 || out_events != 4) {
                if (mismatches++ < 5)
                    fprintf(stderr, "split at %zu,%zu: got \"%s\"\n", i, j, got);
            }
        }
    }
    CHECK_INT(mismatches, 0);
}

static void test_fields(void)
{
    /* multi-line data joined by LF, the final LF dropped */
    CHECK_STR(decode("data: a\ndata: b\ndata: c\n\n"), "{|-|a\nb\nc}");
    CHECK_STR(decode("data: a\ndata:\ndata: c\n\n"), "{|-|a\n\nc}");
    /* one leading space removed, no more; trailing spaces kept */
    CHECK_STR(decode("data:a\n\n"), "{|-|a}");
    CHECK_STR(decode("data:  a \n\n"), "{|-| a }");
    CHECK_STR(decode("data:\ta\n\n"), "{|-|\ta}");
    /* only the first colon separates */
    CHECK_STR(decode("data: a: b:c\n\n"), "{|-|a: b:c}");
    /* "data:" appends an empty line, so the event exists with empty data */
    CHECK_STR(decode("data:\n\n"), "{|-|}");
    CHECK_INT(out_events, 1);
    CHECK_STR(decode("data: \n\n"), "{|-|}");
    /* a line without colon is a field name with an empty value */
    CHECK_STR(decode("data\n\n"), "{|-|}");
    CHECK_STR(decode("data\ndata\n\n"), "{|-|\n}");
    /* names are case-sensitive and exact */
    CHECK_STR(decode("Data: a\n\ndatas: b\n\n data: c\n\n"), "");
    /* event type and id; both reset after each event */
    CHECK_STR(decode("event: add\nid: 42\ndata: 1\n\ndata: 2\n\n"), "{add|42|1}{|-|2}");
    CHECK_STR(decode("event: a\nevent: b\nid: 1\nid: 2\ndata: x\n\n"), "{b|2|x}");
    CHECK_STR(decode("id\ndata: x\n\n"), "{||x}");
    CHECK_STR(decode("event\ndata: x\n\n"), "{|-|x}");
    /* an id containing NUL is ignored, an earlier id stays */
    CHECK_STR(decode_n("id: a\0b\ndata: x\n\n", 17, 0), "{|-|x}");
    CHECK_STR(decode_n("id: 1\nid: a\0b\ndata: x\n\n", 23, 0), "{|1|x}");
    /* NUL in data is passed through; data_len counts it */
    decode_n("data: a\0b\n\n", 11, 0);
    CHECK(out_len == 8 && memcmp(out, "{|-|a\0b}", 8) == 0);
    /* retry and unknown fields are ignored */
    CHECK_STR(decode("retry: 1000\nfoo: bar\ndata: x\n\n"), "{|-|x}");
    /* an event without data is not dispatched, and leaves nothing behind */
    CHECK_STR(decode("event: ping\nid: 3\n\ndata: y\n\n"), "{|-|y}");
    CHECK_INT(out_events, 1);
    CHECK_STR(decode("\n\n\n"), "");
    CHECK_INT(out_events, 0);
}

static void test_comments(void)
{
    CHECK_STR(decode(": keep-alive\n\n: x\ndata: a\n:\n\n"), "{|-|a}");
    CHECK_INT(out_comments, 3);
    CHECK_INT(out_events, 1);
    CHECK_INT(out_finish, 0);
    /* a comment between data lines does not end the event */
    CHECK_STR(decode("data: a\n: ping\ndata: b\n\n"), "{|-|a\nb}");
    /* ":data: x" is a comment, not a field */
    CHECK_STR(decode(":data: x\n\n"), "");
    CHECK_INT(out_comments, 1);
}

static void test_bom(void)
{
    CHECK_STR(decode(BOM "data: x\n\n"), "{|-|x}");
    /* split across feeds in every way */
    CHECK_STR(decode_parts("\xEF", "\xBB", "\xBF", "data: x\n\n", NULL), "{|-|x}");
    CHECK_STR(decode_parts("\xEF\xBB", "\xBF: c\n", NULL), "");
    CHECK_INT(out_comments, 1);
    CHECK_STR(decode_parts("\xEF", "\xBB\xBF: c\n", NULL), "");
    CHECK_INT(out_comments, 1);
    /* only once: a second BOM belongs to the line (here the field name, so ignored) */
    CHECK_STR(decode(BOM BOM "data: x\n\n"), "");
    CHECK_STR(decode(BOM "data: a\n\n" BOM "data: b\n\n"), "{|-|a}");
    CHECK_STR(decode("data:\xEF\xBB\xBF\n\n"), "{|-|\xEF\xBB\xBF}");
    CHECK_STR(decode(BOM "data:\xEF\xBB\xBF\n\n"), "{|-|\xEF\xBB\xBF}");
    /* a BOM prefix that turns out not to be one is kept as content: the line below starts
     * with EF BB, so it is a field, not a comment */
    CHECK_STR(decode_parts("\xEF\xBB", ":c\n", NULL), "");
    CHECK_INT(out_comments, 0);
    CHECK_INT(out_finish, 1);
    CHECK_STR(decode("\xEF\xBB:c\n"), "");
    CHECK_INT(out_comments, 0);
    /* a BOM alone, or with only line ends, is no event */
    CHECK_STR(decode_parts("\xEF\xBB\xBF", "\n", NULL), "");
    CHECK_INT(out_finish, 0);
}

static void test_truncated(void)
{
    decode("");
    CHECK_INT(out_finish, 0);
    decode("data: x\n\n");
    CHECK_INT(out_finish, 0);
    decode(": ping\n");
    CHECK_INT(out_finish, 0);
    decode("data: x\n\n\r");
    CHECK_INT(out_finish, 0);
    /* cut off: never dispatched, and finish says so */
    CHECK_STR(decode("data: x\n"), "");
    CHECK_INT(out_finish, 1);
    CHECK_STR(decode("data: x"), "");
    CHECK_INT(out_finish, 1);
    CHECK_STR(decode("data: x\r"), "");
    CHECK_INT(out_finish, 1);
    CHECK_STR(decode("data: a\n\ndata: b\n"), "{|-|a}");
    CHECK_INT(out_finish, 1);
    decode("event: done\n");
    CHECK_INT(out_finish, 1);
    decode(":");
    CHECK_INT(out_finish, 1);
    decode("\xEF\xBB");
    CHECK_INT(out_finish, 1);
}

static void test_bounds(void)
{
    /* a line of exactly max_line bytes passes, one more fails, in place or carried */
    for (size_t chunk = 0; chunk <= 3; chunk++) {
        CHECK_STR(decode_bounded("data: 12\n\n", 8, 0, chunk), "{|-|12}");
        CHECK_INT(out_rc, 0);
        CHECK_STR(decode_bounded("data: 123\n\n", 8, 0, chunk), "");
        CHECK_INT(out_rc, LLMUX_ESSE);
        /* events before the long line were delivered */
        CHECK_STR(decode_bounded("data: 1\n\ndata: 123\n\ndata: 2\n\n", 8, 0, chunk), "{|-|1}");
        CHECK_INT(out_rc, LLMUX_ESSE);
        /* an unterminated line over the bound fails before its end arrives */
        CHECK_STR(decode_bounded(": 12345678", 8, 0, chunk), "");
        CHECK_INT(out_rc, LLMUX_ESSE);
    }
    /* comments count against max_line too */
    decode_bounded(": 1234567\n", 8, 0, 0);
    CHECK_INT(out_rc, LLMUX_ESSE);
    /* event data: exactly max_event passes, one byte more fails, also joined lines */
    CHECK_STR(decode_bounded("data: abcd\n\n", 0, 4, 0), "{|-|abcd}");
    CHECK_INT(out_rc, 0);
    CHECK_STR(decode_bounded("data: ab\ndata: c\n\n", 0, 4, 0), "{|-|ab\nc}");
    CHECK_INT(out_rc, 0);
    CHECK_STR(decode_bounded("data: abcde\n\n", 0, 4, 0), "");
    CHECK_INT(out_rc, LLMUX_ESSE);
    CHECK_STR(decode_bounded("data: ab\ndata: cd\n\n", 0, 4, 1), "");
    CHECK_INT(out_rc, LLMUX_ESSE);
    /* the bound is per event: the data buffer starts again after a dispatch */
    CHECK_STR(decode_bounded("data: abcd\n\ndata: efgh\n\n", 0, 4, 0), "{|-|abcd}{|-|efgh}");
    CHECK_INT(out_rc, 0);

    /* once stopped, the decoder stays stopped */
    struct sse_decoder d;
    struct rec r;
    run_begin(&d, &r, 8, 0);
    CHECK_INT(sse_decoder_feed(&d, "data: 123456789\n\n", 17), LLMUX_ESSE);
    CHECK_INT(sse_decoder_feed(&d, "data: x\n\n", 9), LLMUX_ESSE);
    CHECK_STR(run_end(&d, &r), "");
}

static void test_stop(void)
{
    const char *s = "data: a\n\ndata: b\n\ndata: c\n\n";
    struct sse_decoder d;
    struct rec r;
    run_begin(&d, &r, 0, 0);
    r.stop_at = 2;
    r.stop_rc = 7;
    CHECK_INT(sse_decoder_feed(&d, s, strlen(s)), 7);
    CHECK_INT(sse_decoder_feed(&d, s, strlen(s)), 7);
    CHECK_STR(run_end(&d, &r), "{|-|a}{|-|b}");
    CHECK_INT(out_events, 2);

    /* a negative stop value is returned as is, byte by byte too */
    run_begin(&d, &r, 0, 0);
    r.stop_at = 1;
    r.stop_rc = -5;
    int rc = 0;
    for (size_t i = 0; i < strlen(s) && rc == 0; i++)
        rc = sse_decoder_feed(&d, s + i, 1);
    CHECK_INT(rc, -5);
    CHECK_STR(run_end(&d, &r), "{|-|a}");
}

static void test_openai(void)
{
    static const char s[] =
        "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
        "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
        "\"content\":\"\"},\"finish_reason\":null}]}\n\n"
        "data: "
        "{\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n"
        "\n"
        ": OPENROUTER PROCESSING\n\n"
        "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\\n\"}},"
        "{\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n"
        "data: [DONE]\n\n";
    static const char expect[] =
        "{|-|{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,"
        "\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
        "\"content\":\"\"},\"finish_reason\":null}]}}"
        "{|-|{\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}}"
        "{|-|{\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\\n\"}},"
        "{\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}}"
        "{|-|[DONE]}";
    for (size_t chunk = 0; chunk <= 13; chunk++) {
        CHECK_STR(decode_n(s, sizeof(s) - 1, chunk), expect);
        CHECK_INT(out_events, 4);
        CHECK_INT(out_comments, 1);
        CHECK_INT(out_finish, 0);
    }
}

int main(void)
{
    test_line_ends();
    test_cr_across_feeds();
    test_splits();
    test_fields();
    test_comments();
    test_bom();
    test_truncated();
    test_bounds();
    test_stop();
    test_openai();
    CHECK_INT(bad_events, 0);
    return check_report();
}
