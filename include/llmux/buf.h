/* buf: the one growable byte buffer of llmux.
 *
 * Every buffer a peer can grow is created with a cap (`max`): appends past it fail with
 * UV_ENOBUFS and leave the buffer unchanged. Consumed bytes are dropped from the front
 * lazily (an offset), so a parser can eat a buffer piece by piece without memmove per call.
 */
#ifndef LLMUX_BUF_H
#define LLMUX_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
    char *data;   /* owned; NULL until the first append */
    size_t off;   /* bytes at the front already consumed */
    size_t len;   /* bytes in use, counted from data (so readable = len - off) */
    size_t cap;   /* allocated size */
    size_t max;   /* cap on readable bytes; 0 = unbounded (only for our own output) */
};

/* Initialise an empty buffer that may hold at most `max` readable bytes (0: no cap). */
void buf_init(struct buf *b, size_t max);
/* Release the memory; the buffer is empty and reusable afterwards. */
void buf_free(struct buf *b);
/* Forget the contents but keep the allocation. */
void buf_reset(struct buf *b);

/* Append n bytes. Returns 0, or UV_ENOBUFS past the cap / UV_ENOMEM (buffer unchanged). */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_str(struct buf *b, const char *s);
/* Append printf-formatted text; same errors as buf_append. */
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap);
/* Append the decimal digits of v (no printf: for hot paths). Same errors as buf_append. */
int buf_append_uint(struct buf *b, unsigned long long v);
/* v / 10^decimals as an exact decimal with its trailing zeros trimmed ("0.00111", "5"). */
int buf_append_fixed(struct buf *b, uint64_t v, unsigned decimals);
/* Append s as the inside of a JSON string (quotes not included), escaping as JSON requires. */
int buf_append_json_str(struct buf *b, const char *s, size_t n);

/* Readable bytes and their count. The pointer is borrowed; valid until the next append. */
static inline const char *buf_head(const struct buf *b)
{
    return b->data ? b->data + b->off : "";
}
static inline size_t buf_size(const struct buf *b)
{
    return b->len - b->off;
}
/* Hand the storage over without copying: returns the allocation (caller frees with free(); may
 * be NULL when empty), whose readable bytes are [*off, *off + *len). The buffer is left empty. */
char *buf_release(struct buf *b, size_t *off, size_t *len);
/* Drop n readable bytes from the front (n <= buf_size). */
void buf_consume(struct buf *b, size_t n);
/* Take the memory out: returns a malloc'd NUL-terminated copy of the readable bytes, caller
 * frees with free(); the buffer is left empty. Returns NULL on allocation failure. */
char *buf_steal(struct buf *b, size_t *len);

#endif
