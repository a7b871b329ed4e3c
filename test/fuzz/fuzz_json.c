/* fuzz_json: libFuzzer harness for the request-body scanner (src/json.c), which reads every
 * client body. Built by CMake with -DLLMUX_FUZZ=ON (make build-fuzz); run with `make fuzz`
 * or test/fuzz/run.sh; seeds in corpus/json/.
 *
 * Besides memory errors it checks: json_valid agrees with cJSON on inputs cJSON reads strictly
 * (cJSON accepts a few things RFC 8259 does not, such as leading zeros, so only "valid for us"
 * implies "valid for cJSON" is asserted), the member iteration of an object agrees with
 * json_valid, and every member span lies inside the input. And the in-place readers the stream
 * adapters use: on an object both accept, every member json_members/json_get finds is the one
 * cJSON_GetObjectItemCaseSensitive finds (same type, same decoded string up to a NUL, same
 * number), json_next walks as many children as cJSON has, and on any input they stay inside it.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/json.h"

/* The span v and the cJSON item c (either may be absent) are the same value. */
static void same_value(struct json_span v, const cJSON *c)
{
    if (!v.s || !c) {
        if (v.s || c)
            abort();
        return;
    }
    static const int types[] = {[JSON_NULL] = cJSON_NULL, [JSON_FALSE] = cJSON_False,
                                [JSON_TRUE] = cJSON_True, [JSON_NUMBER] = cJSON_Number,
                                [JSON_STRING] = cJSON_String, [JSON_ARRAY] = cJSON_Array,
                                [JSON_OBJECT] = cJSON_Object};
    if ((c->type & 0xff) != types[json_type(v)])
        abort();
    if (cJSON_IsString(c)) {
        char dst[256];
        size_t len;
        if (json_string_copy(v, dst, sizeof(dst), &len) != 0)
            abort();
        if (len < sizeof(dst) && strcmp(dst, c->valuestring) != 0)
            abort();
    }
    double d;
    if (cJSON_IsNumber(c) && json_number(v, &d) == 0 && d != c->valuedouble)
        abort();
    size_t pos = 0;
    int n = 0;
    struct json_span item;
    if (cJSON_IsArray(c) || cJSON_IsObject(c)) {
        while (json_next(v, &pos, &item) == 0)
            n++;
        if (n != cJSON_GetArraySize(c))
            abort();
    }
}

/* The stream adapters' reads of an object s both accept, against cJSON's. */
static void check_readers(const char *s, size_t size, const cJSON *root)
{
    static const char *const keys[] = {"id", "model", "usage", "choices", "a", "b"};
    struct json_span f[6];
    if (json_members(json_text(s, size), keys, 6, f) != 0)
        abort();
    for (size_t k = 0; k < 6; k++) {
        same_value(f[k], cJSON_GetObjectItemCaseSensitive(root, keys[k]));
        same_value(json_get(json_text(s, size), keys[k]),
                   cJSON_GetObjectItemCaseSensitive(root, keys[k]));
    }
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(root, "a");
    same_value(json_get(json_text(s, size), "a.b"), cJSON_GetObjectItemCaseSensitive(a, "b"));
    same_value(json_get(f[4], "b"), cJSON_GetObjectItemCaseSensitive(a, "b"));
    /* json_next_members (one walk) finds what json_next then json_members find, element by
       element, and ends where json_next does */
    static const char *const item_keys[] = {"index", "delta", "finish_reason", "a"};
    size_t p1 = 0, p2 = 0;
    struct json_span item, g1[4], g2[4];
    for (;;) {
        int r1 = json_next(f[3], &p1, &item), r2 = json_next_members(f[3], &p2, item_keys, 4, g2);
        if (r1 != r2 || (r1 == 0 && p1 != p2))
            abort();
        if (r1 != 0)
            break;
        if (json_members(item, item_keys, 4, g1) != 0)
            memset(g1, 0, sizeof(g1));
        for (size_t k = 0; k < 4; k++)
            if (g1[k].s != g2[k].s || g1[k].n != g2[k].n)
                abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int valid = json_valid(s, size);
    if (valid && memchr(s, 0, size) == NULL) {
        const char *end = NULL;
        cJSON *c = cJSON_ParseWithLengthOpts(s, size, &end, 0);
        if (!c)
            abort(); /* we accepted what cJSON refuses */
        if (cJSON_IsObject(c))
            check_readers(s, size, c);
        cJSON_Delete(c);
    }
    size_t i = 0;
    while (i < size && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    if (i < size && s[i] == '{') {
        size_t pos = 0;
        struct json_member m;
        int rc;
        while ((rc = json_member_next(s, size, &pos, &m)) == 0) {
            if (m.start >= m.vstart || m.vstart >= m.vend || m.vend > size)
                abort();
        }
        int ok = rc == 1 && json_object_rest_empty(s, size, pos);
        if (ok != valid)
            abort(); /* the one-pass reading and the validator disagree */
    }
    /* any input: the readers stay inside it (ASan) and decode within the buffer */
    struct json_span v = json_text(s, size), item;
    size_t pos = 0, len;
    char small[8];
    double d;
    while (json_next(v, &pos, &item) == 0)
        json_string_copy(item, small, sizeof(small), &len);
    json_get(v, "a.b");
    json_string_copy(v, small, sizeof(small), &len);
    json_number(v, &d);
    return 0;
}
