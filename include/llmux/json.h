/* json: byte-level helpers over JSON text that cJSON does not offer: a strict validator, the
 * byte spans of members and elements, and strings and numbers read in place, so that a request
 * body can be checked, read and forwarded (with its model value spliced), and a stream event
 * read for the few members the gateway needs, without building a tree or copying its strings.
 *
 * Values are spans of the text (struct json_span). A span a caller makes ({text, len}) is
 * untrusted: every function validates what it scans of it. A span json_* returns is a whole
 * valid value and says so (`valid`), so walking it again skips re-validation (a stream event is
 * validated once, then read in several steps at the cost of finding value ends only). Keys
 * are compared as cJSON_GetObjectItemCaseSensitive compares them: decoded (escapes resolved)
 * and up to a decoded NUL, the first of duplicate keys winning. */
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

/* A value's text s[0..n) (a string with its quotes); s == NULL: absent. `valid` is set only
 * by json_* on the spans they return (leave it 0: the text is then checked). */
struct json_span {
    const char *s;
    size_t n;
    int valid;
};

/* Untrusted text as a span, to be validated by whatever reads it. */
static inline struct json_span json_text(const char *s, size_t n)
{
    struct json_span v = {s, n, 0};
    return v;
}

enum json_type { JSON_ABSENT, JSON_NULL, JSON_FALSE, JSON_TRUE, JSON_NUMBER, JSON_STRING,
                 JSON_ARRAY, JSON_OBJECT };

/* The type of a span json_* returned, from its first byte (not validated again). */
enum json_type json_type(struct json_span v);

/* Whether the raw key of m (as json_member_next gives it) decodes to key[0..key_len). */
int json_key_is(const struct json_member *m, const char *key, size_t key_len);

/* One pass over the object v: validates all of it and sets found[i] to the value of the first
 * member named keys[i] (absent: s NULL). Returns 0, or -1 when v is not a valid object (found
 * is then all absent). */
int json_members(struct json_span v, const char *const *keys, size_t nkeys,
                 struct json_span *found);

/* The value at `path` under v: member names separated by '.' ("usage.prompt_tokens"), each
 * looked up in the object the previous one found; absent (s NULL) when a step is missing or
 * not an object. Only the members scanned on the way are validated. */
struct json_span json_get(struct json_span v, const char *path);

/* Iterate the elements of the array v, or the values of the members of the object v (as
 * cJSON_ArrayForEach walks either): start with *pos = 0; returns 0 with the next one in *item,
 * 1 at the end, -1 when v is neither or is invalid there. */
int json_next(struct json_span v, size_t *pos, struct json_span *item);

/* json_next, then json_members over the item (found all absent when it is not an object),
 * without the second walk over the item that the two calls make. */
int json_next_members(struct json_span v, size_t *pos, const char *const *keys, size_t nkeys,
                      struct json_span *found);

/* The string value v in place when it has no escapes: returns 0 with its bytes (between the
 * quotes) in *p, *len; 1 when it has escapes (decode with json_string_copy); -1 when v is not a
 * valid string. */
int json_string_raw(struct json_span v, const char **p, size_t *len);

/* Decode the string value v into dst: escapes resolved, \u surrogate pairs as one UTF-8
 * character; at most size - 1 bytes then a NUL (size 0: nothing written). *len gets the whole
 * decoded length, which is more than size - 1 when dst was too small. A decoded \u0000 is a
 * NUL byte like any other. Returns 0, or -1 when v is not a valid string. */
int json_string_copy(struct json_span v, char *dst, size_t size, size_t *len);

/* The number value v as strtod reads it, as cJSON does (out of range: +-HUGE_VAL or 0). Returns
 * 0, or -1 when v is not a valid number. */
int json_number(struct json_span v, double *d);

#endif
