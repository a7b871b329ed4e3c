/* redact: see include/llmux/redact.h. One pass over the text: tokens are maximal runs of
 * [A-Za-z0-9_.*-]; each is kept, or replaced by its first three characters and "***". The
 * output is written over the input (it never grows), so no allocation. */
#include "llmux/redact.h"

#include <string.h>
#include <strings.h>

#define KEY_PIECE 12 /* a piece of the provider's key this long in a token masks the token */

static int token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-' || c == '*';
}

static int starts_with(const char *t, size_t n, const char *prefix)
{
    size_t p = strlen(prefix);
    return n > p && memcmp(t, prefix, p) == 0;
}

/* Whether the token t[0..n) holds a piece of the key. */
static int has_key_piece(const char *t, size_t n, const char *key, size_t key_len)
{
    if (!key || key_len < KEY_PIECE || n < KEY_PIECE)
        return 0;
    for (size_t i = 0; i + KEY_PIECE <= key_len; i++)
        for (size_t j = 0; j + KEY_PIECE <= n; j++)
            if (t[j] == key[i] && memcmp(t + j, key + i, KEY_PIECE) == 0)
                return 1;
    return 0;
}

static int looks_secret(const char *t, size_t n, int after_bearer, const char *key,
                        size_t key_len)
{
    static const char *const prefixes[] = {"sk-", "sk_", "pk-", "rk-", "gsk_", "xai-", "AIza",
                                           "key-"};
    if (n < 8)
        return 0;
    if (after_bearer)
        return 1;
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (starts_with(t, n, prefixes[i]))
            return 1;
    if (n >= 32) {
        int letters = 0, digits = 0;
        for (size_t i = 0; i < n; i++) {
            letters |= (t[i] >= 'a' && t[i] <= 'z') || (t[i] >= 'A' && t[i] <= 'Z');
            digits |= t[i] >= '0' && t[i] <= '9';
        }
        if (letters && digits)
            return 1;
    }
    return has_key_piece(t, n, key, key_len);
}

size_t redact(char *s, size_t n, const char *key)
{
    size_t key_len = key ? strlen(key) : 0;
    if (key_len >= 8) { /* the whole key, whatever characters it has */
        char *at = s;
        while ((at = memmem(at, n - (size_t)(at - s), key, key_len)) != NULL)
            memset(at, '*', key_len);
    }
    size_t in = 0, out = 0;
    int after_bearer = 0;
    while (in < n) {
        if (!token_char(s[in])) {
            s[out++] = s[in++];
            continue;
        }
        size_t start = in;
        while (in < n && token_char(s[in]))
            in++;
        size_t len = in - start;
        int bearer = len == 6 && strncasecmp(s + start, "bearer", 6) == 0;
        size_t stars = 0;
        while (stars < len && s[start + stars] == '*')
            stars++;
        if (stars == len && len > 3) { /* the whole key, starred out above */
            memcpy(s + out, "***", 3);
            out += 3;
        } else if (looks_secret(s + start, len, after_bearer, key, key_len)) {
            memmove(s + out, s + start, 3);
            memcpy(s + out + 3, "***", 3);
            out += 6;
        } else {
            memmove(s + out, s + start, len);
            out += len;
        }
        after_bearer = bearer;
    }
    if (out < n)
        s[out] = 0;
    return out;
}

void redact_str(char *s, const char *key)
{
    redact(s, strlen(s), key);
}
