/* codec_common: the helpers the client codecs (codec_messages, codec_responses) share: the
 * request translation's frame (parse, build, print), reading canonical chunks and bodies, and
 * SSE event framing. See include/llmux/codec.h. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/codec.h"
#include "llmux/errors.h"

int codec_fail(char *why, size_t size, int rc, const char *fmt, const char *arg)
{
    snprintf(why, size, fmt, arg);
    return rc;
}

int codec_translate(const char *body, size_t len, codec_build_fn build, struct buf *out,
                    char *why, size_t why_size)
{
    why[0] = 0;
    cJSON *in = cJSON_ParseWithLength(body, len);
    cJSON *o = cJSON_CreateObject();
    int rc = !cJSON_IsObject(in) || !o ? UV_EINVAL : build(in, o, why, why_size);
    if (!rc && cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(in, "stream"))) {
        cJSON_AddTrueToObject(o, "stream");
        cJSON_AddTrueToObject(cJSON_AddObjectToObject(o, "stream_options"), "include_usage");
    }
    char *text = rc ? NULL : cJSON_PrintUnformatted(o);
    if (!rc)
        rc = text ? buf_append_str(out, text) : UV_ENOMEM;
    free(text);
    cJSON_Delete(in);
    cJSON_Delete(o);
    return rc;
}

int codec_parse_chunk(const char *data, size_t len, const struct chunk_info *ci, cJSON **root)
{
    *root = ci->kind == CHUNK_DONE ? NULL : cJSON_ParseWithLength(data, len);
    if (ci->kind != CHUNK_DONE && !cJSON_IsObject(*root)) {
        cJSON_Delete(*root);
        *root = NULL;
        return LLMUX_EPROTO;
    }
    return 0;
}

int codec_parse_completion(const char *body, size_t len, cJSON **root, const cJSON **choice,
                           const cJSON **msg)
{
    *root = cJSON_ParseWithLength(body, len);
    *choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(*root, "choices"), 0);
    *msg = cJSON_GetObjectItemCaseSensitive(*choice, "message");
    if (cJSON_IsObject(*msg))
        return 0;
    cJSON_Delete(*root);
    *root = NULL;
    return LLMUX_EPROTO;
}

void codec_event_open(struct buf *out, const char *type)
{
    buf_append_str(out, "event: ");
    buf_append_str(out, type);
    buf_append_str(out, "\ndata: {\"type\":\"");
    buf_append_str(out, type);
    buf_append_str(out, "\"");
}

void codec_event_close(struct buf *out)
{
    buf_append_str(out, "}\n\n");
}

void codec_each_event(struct codec_stream *s, const char *bytes, size_t len,
                      void (*fn)(struct codec_stream *s, const char *ev, size_t len))
{
    for (size_t at = 0; at < len;) {
        const char *end = memmem(bytes + at, len - at, "\n\n", 2);
        size_t n = end ? (size_t)(end - (bytes + at)) : len - at;
        fn(s, bytes + at, n);
        at += n + 2;
    }
}
