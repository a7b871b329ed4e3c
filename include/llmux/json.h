/* json: small helpers over raw JSON text that cJSON does not offer (byte spans, for splicing a
 * request body without re-encoding it). Input must already be valid JSON (checked by cJSON). */
#ifndef LLMUX_JSON_H
#define LLMUX_JSON_H

#include <stddef.h>

/* Find the value of top-level member `key` in the object text s[0..n). On success returns 0
 * and the value's byte span [*vstart, *vend) (a string value includes its quotes); returns -1
 * when absent or when s is not an object. With duplicate keys the first one is found, as
 * cJSON_GetObjectItem does. Keys with escapes are not matched (ours never have any). */
int json_top_key(const char *s, size_t n, const char *key, size_t *vstart, size_t *vend);

#endif
