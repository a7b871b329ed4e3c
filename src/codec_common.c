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

int codec_read_chunk(const char *data, size_t len, const struct chunk_info *ci,
                     struct codec_chunk *c)
{
    static const char *const keys[] = {"model", "created", "usage", "choices"};
    static const char *const choice_keys[] = {"delta", "finish_reason"};
    static const char *const delta_keys[] = {"content", "tool_calls"};
    struct json_span top[4], ch[2], d[2], first = {NULL, 0, 0};
    memset(c, 0, sizeof(*c));
    if (ci->kind == CHUNK_DONE)
        return 0;
    if (json_members(json_text(data, len), keys, 4, top) != 0)
        return LLMUX_EPROTO;
    size_t pos = 0;
    json_next(top[3], &pos, &first); /* choices[0] (cJSON_GetArrayItem(choices, 0)) */
    json_members(first, choice_keys, 2, ch);
    json_members(ch[0], delta_keys, 2, d);
    c->model = top[0];
    c->created = top[1];
    c->usage = top[2];
    c->content = d[0];
    c->tool_calls = d[1];
    c->finish = ch[1];
    return 0;
}

int codec_str(struct json_span v, struct codec_str *t)
{
    size_t len;
    t->heap = NULL;
    t->p = NULL;
    t->len = 0;
    int rc = json_string_raw(v, &t->p, &t->len);
    if (rc < 0) {
        t->p = NULL;
        return 0;
    }
    if (rc == 0)
        return 1;
    char *dst = t->tmp;
    if (v.n > sizeof(t->tmp)) /* the decoded text is shorter than its escaped form */
        dst = t->heap = malloc(v.n);
    if (!dst) {
        t->p = NULL;
        return 0;
    }
    json_string_copy(v, dst, v.n, &len);
    t->p = dst;
    t->len = strnlen(dst, len);
    return 1;
}

void codec_str_free(struct codec_str *t)
{
    free(t->heap);
    t->heap = NULL;
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
