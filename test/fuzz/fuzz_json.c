/* fuzz_json: libFuzzer harness for the request-body scanner (src/json.c), which reads every
 * client body. Built by CMake with -DLLMUX_FUZZ=ON (make build-fuzz); run with `make fuzz`
 * or test/fuzz/run.sh; seeds in corpus/json/.
 *
 * Besides memory errors it checks: json_valid agrees with cJSON on inputs cJSON reads strictly
 * (cJSON accepts a few things RFC 8259 does not, such as leading zeros, so only "valid for us"
 * implies "valid for cJSON" is asserted), the member iteration of an object agrees with
 * json_valid, and every member span lies inside the input.
 */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llmux/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    int valid = json_valid(s, size);
    if (valid && memchr(s, 0, size) == NULL) {
        const char *end = NULL;
        cJSON *c = cJSON_ParseWithLengthOpts(s, size, &end, 0);
        if (!c)
            abort(); /* we accepted what cJSON refuses */
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
    return 0;
}
