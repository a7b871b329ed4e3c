/* json: byte-level helpers over JSON text: a strict validator, member and element spans, and
 * strings and numbers read in place, so a request body can be checked and forwarded and a
 * stream event read without building a tree. See include/llmux/json.h.
 *
 * Everything is one recursive-descent scanner (scan_value) that returns the index past a valid
 * value or 0; the walks (json_member_next, json_next) call it for each value they step over, so
 * nothing they return was left unchecked. Nesting is bounded (JSON_MAX_DEPTH) for the stack.
 */
#include "llmux/json.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 128

/* Any byte above ' ' is not white space: one test ends the loop in the common case. */
static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (unsigned char)s[i] <= ' ' &&
           (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
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

/* The bytes of x (8 bytes of text, little-endian) that are '"', '\\' or (with `controls`) below
 * 0x20, as their high bits. The classic SWAR tests: (v - 0x01..01 * k) & ~v & 0x80..80 marks
 * the bytes of v below k (k <= 0x80), and a byte equal to c is a zero byte of
 * x ^ (0x01..01 * c). A borrow can mark a byte above a marked one, never below: the lowest mark
 * is exact. Text known valid has no control bytes in its strings: `controls` 0 for it. */
static inline uint64_t special_bytes(uint64_t x, int controls)
{
    const uint64_t ones = 0x0101010101010101ull, high = 0x8080808080808080ull;
    uint64_t q = x ^ (ones * '"'), bs = x ^ (ones * '\\');
    uint64_t m = ((q - ones) & ~q) | ((bs - ones) & ~bs);
    if (controls)
        m |= (x - ones * 0x20) & ~x;
    return m & high;
}

/* From i, 8 bytes at a time, to the next '"', '\\' or (with `controls`) control byte; stops
 * earlier (fewer than 8 bytes left) for the caller to go on byte by byte. */
static inline size_t skip_plain(const char *s, size_t i, size_t n, int controls)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    while (n - i >= 8) {
        uint64_t x;
        memcpy(&x, s + i, 8);
        uint64_t m = special_bytes(x, controls);
        if (m)
            return i + ((size_t)__builtin_ctzll(m) >> 3);
        i += 8;
    }
#endif
    return i;
}

/* i at an opening quote: the index past the closing quote, or 0 when the string is invalid
 * (unterminated, a raw control character, a bad escape). Plain runs go 8 bytes at a time,
 * straight to the next quote, backslash or control byte. */
static size_t scan_string(const char *s, size_t i, size_t n)
{
    i++;
    while (i < n) {
        i = skip_plain(s, i, n, 1);
        if (i >= n)
            break;
        unsigned char c = (unsigned char)s[i];
        if (c == '"')
            return i + 1;
        if (c < 0x20)
            return 0;
        if (c != '\\') {
            i++;
            continue;
        }
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
        i++;
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

/* The end of the string at i in text known valid: only its closing quote is looked for. */
static size_t skip_string(const char *s, size_t i, size_t n)
{
    i++;
    while (i < n) {
        i = skip_plain(s, i, n, 0);
        if (i >= n)
            break;
        if (s[i] == '"')
            return i + 1;
        i += s[i] == '\\' ? 2 : 1;
    }
    return 0;
}

/* The end of the value at i in text known valid: brackets counted, strings skipped. */
static size_t skip_value(const char *s, size_t i, size_t n)
{
    if (i >= n)
        return 0;
    if (s[i] == '"')
        return skip_string(s, i, n);
    switch (s[i]) {
    case '{':
    case '[':
        break;
    case 't':
    case 'n':
        return i + 4;
    case 'f':
        return i + 5;
    default: /* a number: digits, sign, point, exponent */
        while (i < n && ((s[i] >= '0' && s[i] <= '9') || s[i] == '-' || s[i] == '+' ||
                         s[i] == '.' || s[i] == 'e' || s[i] == 'E'))
            i++;
        return i;
    }
    size_t depth = 0;
    while (i < n) {
        char c = s[i];
        if (c == '"') {
            if (!(i = skip_string(s, i, n)))
                return 0;
            continue;
        }
        if (c == '{' || c == '[') {
            depth++;
        } else if ((c == '}' || c == ']') && --depth == 0) {
            return i + 1;
        }
        i++;
    }
    return 0;
}

int json_valid(const char *s, size_t n)
{
    size_t i = scan_value(s, skip_ws(s, 0, n), n, 0);
    return i && skip_ws(s, i, n) == n;
}

/* One step of a walk over the container s[0..n) opening with `open` ('{' or '['), from *pos
 * (0: the start): the next member's key span [kstart, kend) with its quotes (objects) and its
 * value span. Returns 0, 1 at the closing bracket (*pos just past it), or -1 when the text is
 * not valid there. `trusted`: the container is known valid, so values are skipped rather than
 * scanned. vend NULL (trusted only): stops at the value, *pos = *vstart, for the caller to step
 * over it (while reading it). */
static int walk_step(const char *s, size_t n, char open, int trusted, size_t *pos,
                     size_t *kstart, size_t *kend, size_t *vstart, size_t *vend)
{
    size_t i = *pos;
    int first = i == 0;
    if (first) {
        i = skip_ws(s, 0, n);
        if (i >= n || s[i] != open)
            return -1;
        i = skip_ws(s, i + 1, n);
    } else {
        i = skip_ws(s, i, n);
    }
    if (i < n && s[i] == (open == '{' ? '}' : ']')) {
        *pos = i + 1;
        return 1;
    }
    if (!first) {
        if (i >= n || s[i] != ',')
            return -1;
        i = skip_ws(s, i + 1, n);
    }
    if (open == '{') {
        if (i >= n || s[i] != '"')
            return -1;
        *kstart = i;
        if (!(i = trusted ? skip_string(s, i, n) : scan_string(s, i, n)))
            return -1;
        *kend = i;
        i = skip_ws(s, i, n);
        if (i >= n || s[i] != ':')
            return -1;
        i = skip_ws(s, i + 1, n);
    }
    *vstart = i;
    if (!vend) {
        *pos = i;
        return 0;
    }
    *vend = trusted ? skip_value(s, i, n) : scan_value(s, i, n, 1);
    if (!*vend)
        return -1;
    *pos = *vend;
    return 0;
}

int json_member_next(const char *s, size_t n, size_t *pos, struct json_member *m)
{
    size_t k = 0, kend = 0;
    int rc = walk_step(s, n, '{', 0, pos, &k, &kend, &m->vstart, &m->vend);
    if (rc == 0) {
        m->start = k;
        m->key = s + k + 1;
        m->key_len = kend - k - 2;
    }
    return rc;
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

enum json_type json_type(struct json_span v)
{
    if (!v.s || !v.n)
        return JSON_ABSENT;
    switch (v.s[0]) {
    case 'n':
        return JSON_NULL;
    case 'f':
        return JSON_FALSE;
    case 't':
        return JSON_TRUE;
    case '"':
        return JSON_STRING;
    case '[':
        return JSON_ARRAY;
    case '{':
        return JSON_OBJECT;
    default:
        return JSON_NUMBER;
    }
}

/* The next member of the object v (walk_step over a span, trusting it when it is valid). */
static int member_next(struct json_span v, size_t *pos, struct json_member *m)
{
    size_t k = 0, kend = 0;
    int rc = walk_step(v.s, v.n, '{', v.valid, pos, &k, &kend, &m->vstart, &m->vend);
    if (rc == 0) {
        m->start = k;
        m->key = v.s + k + 1;
        m->key_len = kend - k - 2;
    }
    return rc;
}

static struct json_span value_of(struct json_span v, size_t vstart, size_t vend)
{
    struct json_span out = {v.s + vstart, vend - vstart, 1};
    return out;
}

int json_key_is(const struct json_member *m, const char *key, size_t key_len)
{
    if (!memchr(m->key, '\\', m->key_len))
        return m->key_len == key_len && memcmp(m->key, key, key_len) == 0;
    /* escaped: compared decoded, up to a decoded NUL (cJSON's strcmp); our keys are short */
    char dec[64];
    size_t len;
    struct json_span raw = {m->key - 1, m->key_len + 2, 1};
    if (key_len >= sizeof(dec) - 1 || json_string_copy(raw, dec, sizeof(dec), &len) != 0)
        return 0;
    return strnlen(dec, sizeof(dec)) == key_len && memcmp(dec, key, key_len) == 0;
}

/* Whether the raw key[0..len) is the C string want. Valid key text has no NUL byte, so the loop
 * stops at want's end. */
static int raw_key_is(const char *key, size_t len, const char *want)
{
    for (size_t i = 0; i < len; i++) {
        if (key[i] != want[i])
            return 0;
    }
    return want[len] == 0;
}

/* The first of keys not found yet that the key of m names, or nkeys. A key with an escape never
 * equals one of ours raw: only then is it decoded. */
static size_t wanted_key(const struct json_member *m, const char *const *keys, size_t nkeys,
                         const struct json_span *found)
{
    for (size_t k = 0; k < nkeys; k++) {
        if (!found[k].s && raw_key_is(m->key, m->key_len, keys[k]))
            return k;
    }
    if (!memchr(m->key, '\\', m->key_len))
        return nkeys;
    for (size_t k = 0; k < nkeys; k++) {
        if (!found[k].s && json_key_is(m, keys[k], strlen(keys[k])))
            return k;
    }
    return nkeys;
}

/* json_members, also giving the index past the object's closing brace in *end. A valid v may
 * run on past the object (the rest of its container). */
static int members_end(struct json_span v, const char *const *keys, size_t nkeys,
                       struct json_span *found, size_t *end)
{
    size_t pos = 0;
    struct json_member m;
    int rc;
    memset(found, 0, nkeys * sizeof(*found));
    while ((rc = member_next(v, &pos, &m)) == 0) {
        size_t k = wanted_key(&m, keys, nkeys, found);
        if (k < nkeys)
            found[k] = value_of(v, m.vstart, m.vend);
    }
    *end = pos;
    if (rc == 1 && (v.valid || json_object_rest_empty(v.s, v.n, pos)))
        return 0;
    memset(found, 0, nkeys * sizeof(*found));
    return -1;
}

int json_members(struct json_span v, const char *const *keys, size_t nkeys,
                 struct json_span *found)
{
    size_t end;
    return members_end(v, keys, nkeys, found, &end);
}

struct json_span json_get(struct json_span v, const char *path)
{
    while (v.s) {
        const char *dot = strchr(path, '.');
        size_t klen = dot ? (size_t)(dot - path) : strlen(path), pos = 0;
        struct json_member m;
        struct json_span next = {NULL, 0, 0};
        while (member_next(v, &pos, &m) == 0) {
            if (json_key_is(&m, path, klen)) {
                next = value_of(v, m.vstart, m.vend);
                break;
            }
        }
        v = next;
        if (!dot)
            break;
        path = dot + 1;
    }
    return v;
}

int json_next(struct json_span v, size_t *pos, struct json_span *item)
{
    if (!v.s)
        return -1;
    size_t open = skip_ws(v.s, 0, v.n), k, kend, vs, ve;
    if (open >= v.n || (v.s[open] != '[' && v.s[open] != '{'))
        return -1;
    int rc = walk_step(v.s, v.n, v.s[open], v.valid, pos, &k, &kend, &vs, &ve);
    if (rc == 0)
        *item = value_of(v, vs, ve);
    return rc;
}

int json_next_members(struct json_span v, size_t *pos, const char *const *keys, size_t nkeys,
                      struct json_span *found)
{
    struct json_span item;
    if (!v.valid) { /* validated by json_next first */
        int rc = json_next(v, pos, &item);
        if (rc == 0)
            json_members(item, keys, nkeys, found);
        return rc;
    }
    size_t open = skip_ws(v.s, 0, v.n), k, kend, vs, end;
    if (open >= v.n || (v.s[open] != '[' && v.s[open] != '{'))
        return -1;
    int rc = walk_step(v.s, v.n, v.s[open], 1, pos, &k, &kend, &vs, NULL);
    if (rc != 0)
        return rc;
    /* one walk: the members are read while the element is stepped over */
    struct json_span rest = {v.s + vs, v.n - vs, 1};
    if (members_end(rest, keys, nkeys, found, &end) == 0)
        *pos = vs + end;
    else /* not an object: nothing found */
        *pos = skip_value(v.s, vs, v.n);
    return 0;
}

int json_string_raw(struct json_span v, const char **p, size_t *len)
{
    if (!v.s || v.n < 2 || v.s[0] != '"' || (!v.valid && scan_string(v.s, 0, v.n) != v.n))
        return -1;
    *p = v.s + 1;
    *len = v.n - 2;
    return memchr(*p, '\\', *len) ? 1 : 0;
}

/* Append the UTF-8 encoding of code point u to dst (within size - 1), advancing *o always. */
static void put_utf8(char *dst, size_t size, size_t *o, unsigned long u)
{
    unsigned char b[4];
    size_t k;
    if (u < 0x80) {
        b[0] = (unsigned char)u;
        k = 1;
    } else if (u < 0x800) {
        b[0] = (unsigned char)(0xC0 | u >> 6);
        b[1] = (unsigned char)(0x80 | (u & 0x3F));
        k = 2;
    } else if (u < 0x10000) {
        b[0] = (unsigned char)(0xE0 | u >> 12);
        b[1] = (unsigned char)(0x80 | (u >> 6 & 0x3F));
        b[2] = (unsigned char)(0x80 | (u & 0x3F));
        k = 3;
    } else {
        b[0] = (unsigned char)(0xF0 | u >> 18);
        b[1] = (unsigned char)(0x80 | (u >> 12 & 0x3F));
        b[2] = (unsigned char)(0x80 | (u >> 6 & 0x3F));
        b[3] = (unsigned char)(0x80 | (u & 0x3F));
        k = 4;
    }
    for (size_t j = 0; j < k; j++, (*o)++) {
        if (*o + 1 < size)
            dst[*o] = (char)b[j];
    }
}

int json_string_copy(struct json_span v, char *dst, size_t size, size_t *len)
{
    const char *p;
    size_t n, o = 0;
    int rc = json_string_raw(v, &p, &n);
    if (rc < 0)
        return -1;
    if (rc == 0) { /* no escapes: one copy */
        if (size) {
            size_t k = n < size - 1 ? n : size - 1;
            memcpy(dst, p, k);
            dst[k] = 0;
        }
        *len = n;
        return 0;
    }
    /* valid (scan_string said so): every escape is whole and every surrogate paired */
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c == '\\') {
            c = p[++i];
            switch (c) {
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u': {
                unsigned long u = (unsigned long)hex4(p, i + 1, n);
                i += 4;
                if (u >= 0xD800 && u <= 0xDBFF) {
                    u = 0x10000 + ((u - 0xD800) << 10) + ((unsigned long)hex4(p, i + 3, n) - 0xDC00);
                    i += 6;
                }
                put_utf8(dst, size, &o, u);
                continue;
            }
            default: /* '"', '\\', '/' stand for themselves */
                break;
            }
        }
        if (o + 1 < size)
            dst[o] = c;
        o++;
    }
    if (size)
        dst[o < size ? o : size - 1] = 0;
    *len = o;
    return 0;
}

int json_number(struct json_span v, double *d)
{
    if (!v.s || !v.n || (v.valid ? v.s[0] != '-' && (v.s[0] < '0' || v.s[0] > '9')
                                  : scan_number(v.s, 0, v.n) != v.n))
        return -1;
    /* the common case, a small integer, exactly and without strtod */
    size_t i = v.s[0] == '-';
    if (v.n - i <= 15) {
        double x = 0;
        for (; i < v.n && v.s[i] >= '0' && v.s[i] <= '9'; i++)
            x = x * 10 + (v.s[i] - '0');
        if (i == v.n) {
            *d = v.s[0] == '-' ? -x : x;
            return 0;
        }
    }
    /* strtod needs a NUL after the number: a copy (on the heap only for absurdly long ones) */
    char tmp[64], *p = v.n < sizeof(tmp) ? tmp : malloc(v.n + 1);
    if (!p)
        return -1;
    memcpy(p, v.s, v.n);
    p[v.n] = 0;
    *d = strtod(p, NULL);
    if (p != tmp)
        free(p);
    return 0;
}
