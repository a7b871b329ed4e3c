/* fuzz_codecs: libFuzzer harness for the client codecs (Messages and Responses in), called
 * directly. Built by CMake with -DLLMUX_FUZZ=ON (make build-fuzz); seeds in corpus/codecs/.
 *
 * The first byte picks the codec; the rest is split at 0x00 bytes into pieces: piece 0 is the
 * client's request for codec->request(), every piece is also given to body() and, as one
 * canonical chunk each, to stream_chunk(), then "[DONE]" or (by the first byte) stream_error().
 * Besides memory errors it checks what clients rely on: a translated request is one JSON
 * object with "messages", and a refusal says why; a body is one JSON object; the stream is a
 * series of complete `event: NAME\ndata: JSON\n\n` events (Responses: numbered 0, 1, 2...).
 * With the first byte's bit 2, the pieces are a passthrough's provider bytes instead, given to
 * observe(); the honest end that follows must then be whole events too (Responses: numbered
 * after the last sequence_number observed).
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/codec.h"
#include "llmux/errors.h"
#include "fuzz_checks.h"

/* out[from..] is whole SSE events with JSON data; a Responses one is numbered from *seq. */
static void check_events(const struct buf *out, size_t from, int responses, long *seq)
{
    const char *p = buf_head(out) + from, *end = buf_head(out) + buf_size(out);
    while (p < end) {
        const char *stop = memmem(p, (size_t)(end - p), "\n\n", 2);
        const char *data = memmem(p, (size_t)(end - p), "\ndata: ", 7);
        if (strncmp(p, "event: ", 7) != 0 || !stop || !data || data > stop)
            abort();
        cJSON *o = cJSON_ParseWithLength(data + 7, (size_t)(stop - data - 7));
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "sequence_number");
        if (!cJSON_IsObject(o) || !cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "type")))
            abort();
        if (responses && (!cJSON_IsNumber(n) || n->valuedouble != (double)(*seq)++))
            abort();
        cJSON_Delete(o);
        p = stop + 2;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int responses = data[0] & 1;
    const struct client_codec *c = responses ? &codec_responses : &codec_messages;
    char *copy = malloc(size); /* NUL-separated pieces, each NUL-terminated in place */
    memcpy(copy, data + 1, size - 1);
    copy[size - 1] = 0;

    struct buf out;
    buf_init(&out, 0);
    char why[256];
    int rc = c->request(copy, strlen(copy), &out, why, sizeof(why));
    if (rc == 0) {
        cJSON *o = cJSON_ParseWithLength(buf_head(&out), buf_size(&out));
        if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(o, "messages")))
            abort();
        cJSON_Delete(o);
    } else if (rc != UV_EINVAL && rc != LLMUX_EKIND) {
        abort();
    } else if (buf_size(&out) || (rc == LLMUX_EKIND && !why[0])) {
        abort();
    }

    struct codec_stream s;
    memset(&s, 0, sizeof(s));
    long seq = 0;
    int broken = 0;
    buf_reset(&out);
    if (data[0] & 4) { /* a passthrough stream observed, then broken */
        for (const char *p = copy; p < copy + size - 1; p += strlen(p) + 1)
            c->observe(&s, p, strlen(p));
        seq = s.seq;
        c->stream_error(&s, 502, "broken \"stream\"", &out);
        check_events(&out, 0, responses, &seq);
        if (c->stream_free)
            c->stream_free(&s);
        buf_free(&out);
        free(copy);
        return 0;
    }
    for (const char *p = copy; p < copy + size - 1 && !broken; p += strlen(p) + 1) {
        size_t n = strlen(p);
        struct buf body;
        buf_init(&body, 0);
        if (c->body(p, n, &body) == 0)
            fuzz_check_json(&body, 0);
        buf_free(&body);
        struct chunk_info ci;
        memset(&ci, 0, sizeof(ci));
        ci.kind = CHUNK_CONTENT;
        size_t at = buf_size(&out);
        rc = c->stream_chunk(&s, p, n, &ci, NULL, &out);
        if (rc != 0 && rc != LLMUX_EPROTO && rc != UV_ENOBUFS)
            abort();
        check_events(&out, at, responses, &seq);
        broken = rc != 0;
    }
    size_t at = buf_size(&out);
    if (broken || data[0] & 2) {
        c->stream_error(&s, 502, "broken \"stream\"", &out);
    } else {
        struct chunk_info ci;
        memset(&ci, 0, sizeof(ci));
        ci.kind = CHUNK_DONE;
        if (c->stream_chunk(&s, "[DONE]", 6, &ci, NULL, &out) != 0 && !responses)
            abort();
    }
    check_events(&out, at, responses, &seq);
    if (c->stream_free)
        c->stream_free(&s);
    buf_free(&out);
    free(copy);
    return 0;
}
