/* json: byte-level helpers over JSON text: a strict validator and top-level member spans, so a
 * request body can be checked and forwarded without building a tree. See include/llmux/json.h.
 */
#include "llmux/json.h"

#include <stdint.h>
#include <string.h>

#define JSON_MAX_DEPTH 128

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

static int is_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* The value of the 4 hex digits at s[i], or -1 when there are not 4 before n. */
static long hex4(const char *s, size_t i, size_t n)
{
    long v = 0;
    if (i + 4 > n)
        return -1;
    for (size_t k = i; k < i + 4; k++) {
        char c = s[k];
        if (!is_hex(c))
            return -1;
        v = v * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    return v;
}

/* Whether any of the 8 bytes in x is '"', '\\' or below 0x20. The classic exact SWAR tests:
 * (v - 0x01..01 * k) & ~v & 0x80..80 is nonzero iff some byte of v is below k (k <= 0x80); a
 * byte equal to c is a zero byte of x ^ (0x01..01 * c). */
static int word_has_special(uint64_t x)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t q = x ^ (ones * '"'), bs = x ^ (ones * '\\');
    return ((((x - ones * 0x20) & ~x) | ((q - ones) & ~q) | ((bs - ones) & ~bs)) & high) != 0;
}

/* i at an opening quote: the index past the closing quote, or 0 when the string is invalid
 * (unterminated, a raw control character, a bad escape). Plain runs go 8 bytes at a time. */
static size_t scan_string(const char *s, size_t i, size_t n)
{
    for (i++; i < n; i++) {
        while (n - i >= 8) {
            uint64_t x;
            memcpy(&x, s + i, 8);
            if (word_has_special(x))
                break;
            i += 8;
        }
        if (i >= n)
            break;
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            return i + 1;
        if (c < 0x20)
            return 0;
        if (c != '\\')
            continue;
        if (++i >= n)
            return 0;
        switch (s[i]) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            break;
        case 'u': {
            /* An unpaired surrogate is refused (RFC 7493, I-JSON): cJSON, and with it every
             * adapter that re-encodes the body, refuses it too. */
            long u = hex4(s, i + 1, n);
            if (u < 0 || (u >= 0xDC00 && u <= 0xDFFF))
                return 0;
            i += 4;
            if (u >= 0xD800 && u <= 0xDBFF) {
                long lo = -1;
                if (i + 2 < n && s[i + 1] == '\\' && s[i + 2] == 'u')
                    lo = hex4(s, i + 3, n);
                if (lo < 0xDC00 || lo > 0xDFFF)
                    return 0;
                i += 6;
            }
            break;
        }
        default:
            return 0;
        }
    }
    return 0;
}

static size_t scan_digits(const char *s, size_t i, size_t n)
{
    size_t start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    return i > start ? i : 0;
}

/* RFC 8259 number; the index past it, or 0. */
static size_t scan_number(const char *s, size_t i, size_t n)
{
    if (i < n && s[i] == '-')
        i++;
    if (i < n && s[i] == '0')
        i++;
    else if (!(i = scan_digits(s, i, n)))
        return 0;
    if (i < n && s[i] == '.' && !(i = scan_digits(s, i + 1, n)))
        return 0;
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (!(i = scan_digits(s, i, n)))
            return 0;
    }
    return i;
}

static size_t scan_value(const char *s, size_t i, size_t n, int depth);

/* Object or array at i; the index past it, or 0. */
static size_t scan_container(const char *s, size_t i, size_t n, int depth)
{
    char close = s[i] == '{' ? '}' : ']';
    int object = close == '}';
    if (depth >= JSON_MAX_DEPTH)
        return 0;
    i = skip_ws(s, i + 1, n);
    if (i < n && s[i] == close)
        return i + 1;
    for (;;) {
        if (object) {
            if (i >= n || s[i] != '"' || !(i = scan_string(s, i, n)))
                return 0;
            i = skip_ws(s, i, n);
            if (i >= n || s[i] != ':')
                return 0;
            i = skip_ws(s, i + 1, n);
        }
        if (!(i = scan_value(s, i, n, depth + 1)))
            return 0;
        i = skip_ws(s, i, n);
        if (i < n && s[i] == close)
            return i + 1;
        if (i >= n || s[i] != ',')
            return 0;
        i = skip_ws(s, i + 1, n);
    }
}

static size_t scan_value(const char *s, size_t i, size_t n, int depth)
{
    if (i >= n)
        return 0;
    switch (s[i]) {
    case '"':
        return scan_string(s, i, n);
    case '{':
    case '[':
        return scan_container(s, i, n, depth);
    case 't':
        return n - i >= 4 && memcmp(s + i, "true", 4) == 0 ? i + 4 : 0;
    case 'f':
        return n - i >= 5 && memcmp(s + i, "false", 5) == 0 ? i + 5 : 0;
    case 'n':
        return n - i >= 4 && memcmp(s + i, "null", 4) == 0 ? i + 4 : 0;
    default:
        return scan_number(s, i, n);
    }
}

int json_valid(const char *s, size_t n)
{
    size_t i = scan_value(s, skip_ws(s, 0, n), n, 0);
    return i && skip_ws(s, i, n) == n;
}

int json_member_next(const char *s, size_t n, size_t *pos, struct json_member *m)
{
    size_t i = *pos;
    int first = i == 0;
    if (first) { /* the opening brace */
        i = skip_ws(s, 0, n);
        if (i >= n || s[i] != '{')
            return -1;
        i = skip_ws(s, i + 1, n);
    } else {
        i = skip_ws(s, i, n);
    }
    if (i < n && s[i] == '}') {
        *pos = i + 1;
        return 1;
    }
    if (!first) {
        if (i >= n || s[i] != ',')
            return -1;
        i = skip_ws(s, i + 1, n);
    }
    if (i >= n || s[i] != '"')
        return -1;
    m->start = i;
    m->key = s + i + 1;
    size_t kend = scan_string(s, i, n);
    if (!kend)
        return -1;
    m->key_len = kend - i - 2;
    i = skip_ws(s, kend, n);
    if (i >= n || s[i] != ':')
        return -1;
    m->vstart = skip_ws(s, i + 1, n);
    m->vend = scan_value(s, m->vstart, n, 1);
    if (!m->vend)
        return -1;
    *pos = m->vend;
    return 0;
}

int json_object_rest_empty(const char *s, size_t n, size_t pos)
{
    return skip_ws(s, pos, n) == n;
}

int json_top_key(const char *s, size_t n, const char *key, size_t *vstart, size_t *vend)
{
    size_t klen = strlen(key), pos = 0;
    struct json_member m;
    while (json_member_next(s, n, &pos, &m) == 0) {
        if (m.key_len == klen && memcmp(m.key, key, klen) == 0) {
            *vstart = m.vstart;
            *vend = m.vend;
            return 0;
        }
    }
    return -1;
}
