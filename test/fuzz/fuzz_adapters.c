/* fuzz_adapters: libFuzzer harness for the translating adapters (anthropic, gemini), called
 * directly (fuzz_upstream reaches every kind's stream decoder through a real socket).
 * Built by CMake with -DLLMUX_FUZZ=ON (make build-fuzz); run with `make fuzz` or
 * test/fuzz/run.sh; seeds in corpus/adapters/.
 *
 * The first byte picks the adapter and flags (stream, include_usage, prefix, prefill); the rest
 * is split at 0x00 bytes into pieces: piece 0 is the client's request body for encode() and
 * every piece is also fed to decode_body(), decode_error() and, as one stream event each (a
 * 0x01 byte splits an event name from its data), to stream_event(). Besides memory errors it
 * checks what the exchange relies on: an encoded request is a head ending in a blank line and
 * a body of valid JSON of the announced length; every emitted chunk is valid JSON (or
 * "[DONE]" as CHUNK_DONE), text is set only on CHUNK_CONTENT with the right length, an error
 * chunk has a message; decode_body leaves valid JSON (or nothing) and decode_error always
 * writes a valid OpenAI error body. The response cache (src/cache.c) captures the stream's
 * chunks: what it assembles is a JSON object, and an answer it would keep replays as chunks
 * that pass the same checks, with the streamed text unchanged.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/adapter.h"
#include "llmux/cache.h"
#include "llmux/errors.h"
#include "fuzz_checks.h"


static void run_encode(const struct adapter *ad, const struct canon_request *req)
{
    static const struct provider p = {
        .name = "fuzz", .host = "example.test", .port = 443, .tls = 1, .base_path = "/v1",
        .api_key = "KEY", .api_version = "", .default_max_tokens = 16};
    struct upstream_request out;
    int rc = ad->encode(&p, "m/1", 3, req, &out);
    if (rc) {
        if (out.n != 0 || buf_size(&out.head) || buf_size(&out.body))
            abort(); /* "on failure out holds nothing" */
        upstream_request_free(&out);
        return;
    }
    if (out.n != 2 || out.head.len < 4 || memcmp(out.head.data + out.head.len - 4, "\r\n\r\n", 4))
        abort();
    char cl[64];
    snprintf(cl, sizeof(cl), "content-length: %zu\r\n", buf_size(&out.body));
    if (!memmem(out.head.data, out.head.len, cl, strlen(cl)))
        abort();
    fuzz_check_json(&out.body, 0);
    upstream_request_free(&out);
}

/* The stream as the client gets it: checked, captured for the cache, its text kept. */
struct seen {
    int emitted;
    struct cache_capture *cap;
    struct buf text;
};

static int on_chunk(void *ctx, const char *data, size_t len, const struct chunk_info *ci)
{
    struct seen *k = ctx;
    int rc = fuzz_check_chunk(&k->emitted, data, len, ci);
    if (ci->kind == CHUNK_CONTENT && k->cap)
        cache_capture_chunk(k->cap, data, len);
    if (ci->text)
        buf_append(&k->text, ci->text, ci->text_len);
    return rc;
}

/* What the cache would keep of the stream replays with the same text. */
static void check_cache(struct seen *k)
{
    struct usage u = {.prompt_tokens = 1, .completion_tokens = 1, .total_tokens = 2, .known = 1};
    struct buf body;
    buf_init(&body, 0);
    if (cache_capture_body(k->cap, &u, &body) == 0) {
        fuzz_check_json(&body, 0);
        struct seen r;
        memset(&r, 0, sizeof(r));
        buf_init(&r.text, 0);
        if (cache_storable(buf_head(&body), buf_size(&body))) {
            if (cache_replay_stream(buf_head(&body), buf_size(&body), 1, on_chunk, &r) != 0)
                abort();
            if (buf_size(&r.text) != buf_size(&k->text) ||
                memcmp(buf_head(&r.text), buf_head(&k->text), buf_size(&k->text)) != 0)
                abort(); /* the replayed text is not the streamed text */
        }
        buf_free(&r.text);
    }
    buf_free(&body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const struct adapter *ad = data[0] & 1 ? &adapter_gemini : &adapter_anthropic;
    char *copy = malloc(size); /* NUL-separated pieces, each NUL-terminated in place */
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = 0;
    const char *body = copy;

    struct canon_request req;
    memset(&req, 0, sizeof(req));
    req.endpoint = data[0] >> 5 & 1 ? API_EMBEDDINGS : API_CHAT;
    req.body = body;
    req.body_len = strlen(body);
    req.stream = data[0] >> 1 & 1;
    req.include_usage = data[0] >> 2 & 1;
    req.request_id = "fuzz";
    if (data[0] >> 3 & 1) {
        req.prefix = " delivered \n";
        req.prefix_len = strlen(req.prefix);
        req.prefill = data[0] >> 4 & 1;
    }
    run_encode(ad, &req);

    struct adapter_stream s;
    memset(&s, 0, sizeof(s));
    s.req = &req;
    s.model = "m/1";
    if (ad->stream_open(&s) != 0)
        abort();
    struct seen k = {0, cache_capture_new(), {0}};
    buf_init(&k.text, 0);
    int stopped = 0;
    for (const char *p = copy; p < copy + size - 1; p += strlen(p) + 1) {
        size_t n = strlen(p);
        struct usage u;
        struct buf out;
        buf_init(&out, 0);
        if (ad->decode_body(&req, "m/1", p, n, &out, &u) == 0)
            fuzz_check_json(&out, 1);
        else if (u.known)
            abort();
        buf_reset(&out);
        char why[160];
        ad->decode_error(400 + (int)(n % 200), p, n, &out, why, sizeof(why));
        fuzz_check_json(&out, 0);
        buf_free(&out);

        const char *sep = memchr(p, 1, n);
        const char *ev = sep ? p : "";
        size_t ev_len = sep ? (size_t)(sep - p) : 0;
        const char *d = sep ? sep + 1 : p;
        if (!stopped) {
            int rc = ad->stream_event(&s, ev, ev_len, d, n - (size_t)(d - p), on_chunk, &k);
            if (rc != 0 && rc != 1 && rc != LLMUX_EPROTO)
                abort();
            stopped = rc != 0;
        }
    }
    if (!stopped) {
        int done = ad->stream_finish(&s, on_chunk, &k);
        if (done != 0 && done != 1)
            abort();
        if (done == 1 && req.endpoint == API_CHAT)
            check_cache(&k);
    }
    ad->stream_close(&s);
    cache_capture_free(k.cap);
    buf_free(&k.text);
    free(copy);
    return 0;
}
