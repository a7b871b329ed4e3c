/* buf: growable byte buffer with a cap. See include/llmux/buf.h. */
#include "llmux/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

void buf_init(struct buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
}

void buf_reset(struct buf *b)
{
    b->off = b->len = 0;
}

/* Make room for n more bytes at the end, compacting consumed bytes first. */
static int buf_reserve(struct buf *b, size_t n)
{
    if (b->max && buf_size(b) + n > b->max)
        return UV_ENOBUFS;
    if (b->len + n <= b->cap)
        return 0;
    if (b->off > 0) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + n <= b->cap)
            return 0;
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return UV_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = buf_reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int buf_append_str(struct buf *b, const char *s)
{
    return buf_append(b, s, strlen(s));
}

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n < 0)
        return UV_EINVAL;
    int rc = buf_reserve(b, (size_t)n + 1);
    if (rc)
        return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return 0;
}

int buf_append_uint(struct buf *b, unsigned long long v)
{
    char digits[20];
    size_t i = sizeof(digits);
    do {
        digits[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return buf_append(b, digits + i, sizeof(digits) - i);
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

int buf_append_json_str(struct buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];
        if (c == '"')
            esc = "\\\"";
        else if (c == '\\')
            esc = "\\\\";
        else if (c == '\n')
            esc = "\\n";
        else if (c == '\r')
            esc = "\\r";
        else if (c == '\t')
            esc = "\\t";
        else if (c == '\b') /* as cJSON and JSON.stringify write them */
            esc = "\\b";
        else if (c == '\f')
            esc = "\\f";
        else if (c < 0x20) {
            memcpy(u, "\\u00", 4);
            u[4] = hex[c >> 4];
            u[5] = hex[c & 15];
            u[6] = 0;
            esc = u;
        }
        if (!esc)
            continue;
        int rc = buf_append(b, s + start, i - start);
        if (!rc)
            rc = buf_append_str(b, esc);
        if (rc)
            return rc;
        start = i + 1;
    }
    return buf_append(b, s + start, n - start);
}

void buf_consume(struct buf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len)
        b->off = b->len = 0;
}

char *buf_release(struct buf *b, size_t *off, size_t *len)
{
    char *p = b->data;
    *off = b->off;
    *len = buf_size(b);
    b->data = NULL;
    b->off = b->len = b->cap = 0;
    return p;
}

char *buf_steal(struct buf *b, size_t *len)
{
    size_t n = buf_size(b);
    char *p = malloc(n + 1);
    if (!p)
        return NULL;
    memcpy(p, buf_head(b), n);
    p[n] = 0;
    if (len)
        *len = n;
    buf_free(b);
    return p;
}

int buf_append_fixed(struct buf *b, uint64_t v, unsigned decimals)
{
    char s[48]; /* digits, the last first */
    size_t n = 0;
    for (unsigned i = 0; i < decimals && i < 20; i++, v /= 10)
        s[n++] = (char)('0' + v % 10);
    if (n)
        s[n++] = '.';
    do
        s[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    size_t start = 0; /* the fraction's trailing zeros (first here), and a bare dot */
    while (start < n && decimals && s[start] == '0')
        start++;
    if (start < n && decimals && s[start] == '.')
        start++;
    char out[48];
    size_t len = 0;
    for (size_t i = n; i > start; i--)
        out[len++] = s[i - 1];
    return buf_append(b, out, len);
}
