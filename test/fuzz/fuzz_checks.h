/* fuzz_checks: the invariants on adapter output shared by the fuzz harnesses (fuzz_adapters,
 * fuzz_upstream). Each check abort()s, which libFuzzer reports as a crash with its input. */
#ifndef LLMUX_FUZZ_CHECKS_H
#define LLMUX_FUZZ_CHECKS_H
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/adapter.h"

/* An adapter_emit_fn: every chunk is a JSON object, or "[DONE]" as CHUNK_DONE; text is set
 * only on CHUNK_CONTENT, its length without a NUL; an error chunk has a message. ctx counts the
 * chunks (int); after 1000 it returns 1, so a nonzero return is exercised too. */
static inline int fuzz_check_chunk(void *ctx, const char *data, size_t len,
                                   const struct chunk_info *ci)
{
    int *n = ctx;
    if (ci->kind == CHUNK_DONE) {
        if (len != 6 || memcmp(data, "[DONE]", 6) != 0)
            abort();
    } else {
        cJSON *o = cJSON_ParseWithLength(data, len);
        if (!cJSON_IsObject(o))
            abort();
        cJSON_Delete(o);
    }
    /* text[0..text_len) holds no NUL (it may be in place in the event: not NUL-terminated) */
    if (ci->text && (ci->kind != CHUNK_CONTENT || memchr(ci->text, 0, ci->text_len)))
        abort();
    if (ci->kind == CHUNK_ERROR && !ci->error[0])
        abort();
    if (ci->kind > CHUNK_ERROR)
        abort();
    return ++*n > 1000;
}

/* b holds one JSON object (or nothing, when may_be_empty). */
static inline void fuzz_check_json(const struct buf *b, int may_be_empty)
{
    if (may_be_empty && buf_size(b) == 0)
        return;
    cJSON *o = cJSON_ParseWithLength(buf_head(b), buf_size(b));
    if (!cJSON_IsObject(o))
        abort();
    cJSON_Delete(o);
}
#endif
