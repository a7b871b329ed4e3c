/* json_top_key: the byte span of a top-level member, which the openai adapter replaces to
 * rewrite `model` without re-encoding the body. Nested and escaped look-alikes must not match. */
#include <string.h>

#include "check.h"
#include "llmux/json.h"

static const char *span(const char *s, const char *key, char *out)
{
    size_t a, b;
    if (json_top_key(s, strlen(s), key, &a, &b) != 0)
        return "(absent)";
    memcpy(out, s + a, b - a);
    out[b - a] = 0;
    return out;
}

int main(void)
{
    char o[256];
    CHECK_STR(span("{\"model\":\"gpt\"}", "model", o), "\"gpt\"");
    CHECK_STR(span(" {\n \"model\" : \"a\\\"b\" , \"x\":1}", "model", o), "\"a\\\"b\"");
    /* nested "model" keys and strings that look like keys are skipped */
    CHECK_STR(span("{\"meta\":{\"model\":\"inner\"},\"s\":\"\\\"model\\\":\",\"model\":\"outer\"}",
                   "model", o),
              "\"outer\"");
    CHECK_STR(span("{\"messages\":[{\"model\":1},[\"{\",\"}\"]],\"model\":\"m\"}", "model", o),
              "\"m\"");
    CHECK_STR(span("{\"n\":12.5e3,\"b\":true,\"z\":null,\"model\":\"m\"}", "model", o), "\"m\"");
    CHECK_STR(span("{\"stream\":true}", "stream", o), "true");
    CHECK_STR(span("{\"a\":1}", "model", o), "(absent)");
    CHECK_STR(span("[\"model\"]", "model", o), "(absent)");
    CHECK_STR(span("{\"modelx\":\"no\",\"mode\":\"no\"}", "model", o), "(absent)");
    /* the first of duplicate keys, as cJSON_GetObjectItem sees it */
    CHECK_STR(span("{\"model\":\"first\",\"model\":\"second\"}", "model", o), "\"first\"");
    return check_report();
}
