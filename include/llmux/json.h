/* json: byte-level helpers over JSON text that cJSON does not offer: a strict validator and the
 * byte spans of top-level members, so that a request body can be checked, read and forwarded
 * (with its model value spliced) without building a tree or copying its strings. */
#ifndef LLMUX_JSON_H
#define LLMUX_JSON_H

#include <stddef.h>

/* Whether s[0..n) is one valid JSON value (RFC 8259; nesting deeper than 128 is refused),
 * surrounded by nothing but whitespace. UTF-8 is not checked (cJSON does not either). */
int json_valid(const char *s, size_t n);

/* One top-level member of an object: its key (raw, between the quotes, escapes not decoded),
 * its value's span [vstart, vend) (a string value includes its quotes) and where the member
 * starts (its key's opening quote). */
struct json_member {
    const char *key;
    size_t key_len;
    size_t start;
    size_t vstart, vend;
};

/* Iterate the members of the object s[0..n): start with *pos = 0; returns 0 and fills m (its
 * value validated), 1 at the closing brace (*pos just past it), or -1 when s is not a valid
 * object there. An object is valid JSON iff every call returns 0 until one returns 1 and
 * json_object_rest_empty(s, n, *pos) holds. */
int json_member_next(const char *s, size_t n, size_t *pos, struct json_member *m);
int json_object_rest_empty(const char *s, size_t n, size_t pos);

/* Find the value of top-level member `key`. On success returns 0 and the value's byte span
 * [*vstart, *vend); returns -1 when absent or when s is not an object. With duplicate keys the
 * first one is found, as cJSON_GetObjectItem does. Keys with escapes are not matched (ours
 * never have any). */
int json_top_key(const char *s, size_t n, const char *key, size_t *vstart, size_t *vend);

#endif
