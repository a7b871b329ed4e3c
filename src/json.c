/* json: byte-span helpers over already-validated JSON text. See include/llmux/json.h. */
#include "llmux/json.h"

#include <string.h>

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* i at an opening quote; returns the index just past the closing quote. */
static size_t skip_string(const char *s, size_t i, size_t n)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
    }
    return n;
}

/* i at the first byte of a value; returns the index just past it. */
static size_t skip_value(const char *s, size_t i, size_t n)
{
    if (i >= n)
        return n;
    if (s[i] == '"')
        return skip_string(s, i, n);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        while (i < n) {
            char c = s[i];
            if (c == '"') {
                i = skip_string(s, i, n);
                continue;
            }
            if (c == '{' || c == '[')
                depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
            i++;
        }
        return n;
    }
    while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\n' &&
           s[i] != '\r' && s[i] != '\t')
        i++;
    return i;
}

int json_top_key(const char *s, size_t n, const char *key, size_t *vstart, size_t *vend)
{
    size_t klen = strlen(key);
    size_t i = skip_ws(s, 0, n);
    if (i >= n || s[i] != '{')
        return -1;
    i++;
    for (;;) {
        i = skip_ws(s, i, n);
        if (i >= n || s[i] != '"')
            return -1;
        size_t kstart = i + 1;
        size_t kend = skip_string(s, i, n);
        i = skip_ws(s, kend, n);
        if (i >= n || s[i] != ':')
            return -1;
        i = skip_ws(s, i + 1, n);
        size_t v0 = i;
        i = skip_value(s, i, n);
        if (kend - 1 - kstart == klen && memcmp(s + kstart, key, klen) == 0) {
            *vstart = v0;
            *vend = i;
            return 0;
        }
        i = skip_ws(s, i, n);
        if (i >= n || s[i] != ',')
            return -1;
        i++;
    }
}
