/* script: the per-request scripts of mockllm, "k=v&k=v" with integer values (and malformed=
 * json|sse). A request's script is the --script default, then the part of its model after '?',
 * then its x-mock header, each applied on top of the one before. Unknown keys and bad values
 * are refused with a message that names them, so a test author sees the typo at once. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "mockllm.h"

struct script_key {
    const char *name;
    size_t offset; /* of the int in struct script */
    int min, max;
};

static const struct script_key keys[] = {
    {"delay", offsetof(struct script, delay), 0, 3600000},
    {"ttft", offsetof(struct script, ttft), 0, 3600000},
    {"tokens", offsetof(struct script, tokens), 0, 10000000},
    {"tps", offsetof(struct script, tps), 0, 1000000},
    {"status", offsetof(struct script, status), 0, 599},
    {"retry_after", offsetof(struct script, retry_after), 0, 86400},
    {"fail_every", offsetof(struct script, fail_every), 0, 1000000000},
    {"reset_after", offsetof(struct script, reset_after), 0, 1000000000},
    {"stall_after", offsetof(struct script, stall_after), 0, 1000000000},
    {"chunk_bytes", offsetof(struct script, chunk_bytes), 0, 1024 * 1024},
};

#define KEY_LIST                                                                                   \
    "delay ttft tokens tps status retry_after fail_every reset_after stall_after chunk_bytes "     \
    "malformed"

void script_init(struct script *s)
{
    memset(s, 0, sizeof(*s));
    s->tokens = 8;
    s->reset_after = -1;
    s->stall_after = -1;
}

/* Strict decimal: digits only, at most 10 of them, within [min, max]. */
static int parse_int(const char *v, size_t len, int min, int max, int *out)
{
    if (len == 0 || len > 10)
        return -1;
    long long n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -1;
        n = n * 10 + (v[i] - '0');
    }
    if (n < min || n > max)
        return -1;
    *out = (int)n;
    return 0;
}

static int apply_pair(struct script *s, const char *k, size_t klen, const char *v, size_t vlen,
                      char *err, size_t errlen)
{
    if (klen == 9 && memcmp(k, "malformed", 9) == 0) {
        if (vlen == 4 && memcmp(v, "json", 4) == 0)
            s->malformed = MALFORMED_JSON;
        else if (vlen == 3 && memcmp(v, "sse", 3) == 0)
            s->malformed = MALFORMED_SSE;
        else if (vlen == 0 || (vlen == 4 && memcmp(v, "none", 4) == 0))
            s->malformed = MALFORMED_NONE;
        else {
            snprintf(err, errlen, "mockllm script: malformed=%.*s: the value must be json or sse",
                     (int)vlen, v);
            return -1;
        }
        return 0;
    }
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        const struct script_key *key = &keys[i];
        if (strlen(key->name) != klen || memcmp(key->name, k, klen) != 0)
            continue;
        int n;
        if (parse_int(v, vlen, key->min, key->max, &n) != 0) {
            snprintf(err, errlen,
                     "mockllm script: %s=%.*s: the value must be an integer from %d to %d",
                     key->name, (int)vlen, v, key->min, key->max);
            return -1;
        }
        if (key->offset == offsetof(struct script, status)) {
            if (n == 200)
                n = 0; /* "status=200" overrides a default error: answer normally */
            if (n != 0 && n < 400) {
                snprintf(err, errlen, "mockllm script: status=%d: use an error status (400-599)",
                         n);
                return -1;
            }
        }
        *(int *)((char *)s + key->offset) = n;
        return 0;
    }
    snprintf(err, errlen, "mockllm script: unknown key '%.*s' (known: " KEY_LIST ")", (int)klen,
             k);
    return -1;
}

int script_apply(struct script *s, const char *text, size_t len, char *err, size_t errlen)
{
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if (stop > p) { /* empty pieces ("a=1&&b=2", a trailing '&') are nothing */
            const char *eq = memchr(p, '=', (size_t)(stop - p));
            if (!eq) {
                snprintf(err, errlen, "mockllm script: '%.*s' is not key=value", (int)(stop - p),
                         p);
                return -1;
            }
            if (apply_pair(s, p, (size_t)(eq - p), eq + 1, (size_t)(stop - eq - 1), err,
                           errlen) != 0)
                return -1;
        }
        p = stop + 1;
    }
    return 0;
}
