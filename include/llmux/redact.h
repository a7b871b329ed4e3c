/* redact: masks secrets in text that llmux relays or logs but did not write itself (a
 * provider's error message, an upstream error body).
 *
 * A provider that rejects a key may quote it back ("Incorrect API key provided: sk-proj-...").
 * That text would otherwise reach the client (502 message, x-llmux-tried, a passed-through
 * 4xx body), /v1/status and the access log. Masked: every occurrence of the provider's own key
 * (and of any 12-byte piece of it, which catches keys shown shortened), and anything that
 * looks like a credential: a token after "Bearer ", and tokens that start the way API keys do
 * (sk-, sk_, pk-, rk-, gsk_, xai-, AIza, key-) or are 32+ characters of [A-Za-z0-9_-] mixing
 * letters and digits. A masked token keeps its first 3 characters and becomes "abc***", so the
 * message stays readable; the text never grows. */
#ifndef LLMUX_REDACT_H
#define LLMUX_REDACT_H

#include <stddef.h>

/* Mask secrets in place in s[0..n); `key` may be NULL. Returns n' <= n, the new length (the
 * text shrinks where a token is replaced). s need not be NUL-terminated; if it was, it
 * stays so when n' < n. */
size_t redact(char *s, size_t n, const char *key);
/* The same for a NUL-terminated string. */
void redact_str(char *s, const char *key);

#endif
