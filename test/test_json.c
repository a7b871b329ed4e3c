/* json_top_key: the byte span of a top-level member, which the openai adapter replaces to
 * rewrite `model` without re-encoding the body. Nested and escaped look-alikes must not match.
 * json_valid: the strict validator the api runs on every request body instead of a parse. */
#include <string.h>

#include <stdint.h>

#include "check.h"
#include "llmux/buf.h"
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

/* Exact decimals for money: 1e-12 $ units, trailing zeros trimmed. */
static void test_fixed(void)
{
    static const struct {
        uint64_t v;
        unsigned d;
        const char *want;
    } cases[] = {{1110000000, 12, "0.00111"}, {5000000000000, 12, "5"}, {0, 12, "0"},
                 {1, 12, "0.000000000001"}, {123456789012345678u, 12, "123456.789012345678"},
                 {42, 0, "42"}, {1500, 3, "1.5"}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct buf b;
        buf_init(&b, 0);
        buf_append_fixed(&b, cases[i].v, cases[i].d);
        buf_append(&b, "", 1);
        CHECK_STR(buf_head(&b), cases[i].want);
        buf_free(&b);
    }
}

int main(void)
{
    test_fixed();
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
    /* json_valid */
    static const char *const good[] = {
        "{}", " [ ] ", "0", "-0.5e+10", "\"\\u00e9\\n\"", "{\"a\":[1,{\"b\":null}],\"c\":true}",
        "\"\xc3\xa9\"", "[false, 1E3, 2.0]", "\r\n{\"k\" : \"v\"}\t",
        "\"\\ud83d\\ude00\"", "\"a\\uD83D\\uDE00b\"",
    };
    static const char *const bad[] = {
        "", "{", "{\"a\":1,}", "[1,]", "{\"a\" 1}", "{a:1}", "01", "1.", "-", ".5", "1e",
        "\"\x01\"", "\"\\x\"", "\"\\u12G4\"", "\"open", "tru", "nul", "[1] [2]", "{\"a\":1}x",
        "'s'", "NaN", "{\"a\":1 \"b\":2}", "[\"a\" \"b\"]",
        /* unpaired surrogates (found by fuzz_json: cJSON refuses them) */
        "\"\\ud83d\"", "\"\\ude00\"", "\"\\ud83dx\"", "\"\\ud83d\\u0041\"",
        "\"\\ud83d\\ud83d\"", "\"\\ud83d\\", "\"\\ud83d\\ude0\"",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        CHECK_INT(json_valid(good[i], strlen(good[i])), 1);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_INT(json_valid(bad[i], strlen(bad[i])), 0);
    char deep[400];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 200);
    CHECK_INT(json_valid(deep, 400), 0);    /* nesting past 128 */
    CHECK_INT(json_valid(deep + 80, 240), 1); /* 120 deep */
    CHECK_INT(json_valid("{\"a\":1}\0", 8), 0); /* a NUL inside the length */

    /* the member iterator: keys raw, values as spans */
    const char *obj = "{ \"a\" : 1 , \"b\\\"\":[2,3],\"c\":{}}";
    size_t pos = 0;
    struct json_member m;
    CHECK_INT(json_member_next(obj, strlen(obj), &pos, &m), 0);
    CHECK(m.key_len == 1 && m.key[0] == 'a' && obj[m.start] == '"' && obj[m.vstart] == '1');
    CHECK_INT(json_member_next(obj, strlen(obj), &pos, &m), 0);
    CHECK(m.key_len == 3 && memcmp(obj + m.vstart, "[2,3]", m.vend - m.vstart) == 0);
    CHECK_INT(json_member_next(obj, strlen(obj), &pos, &m), 0);
    CHECK_INT(json_member_next(obj, strlen(obj), &pos, &m), 1);
    CHECK(json_object_rest_empty(obj, strlen(obj), pos));
    pos = 0;
    CHECK_INT(json_member_next("{}  ", 4, &pos, &m), 1);
    CHECK(json_object_rest_empty("{}  ", 4, pos));
    pos = 0;
    CHECK_INT(json_member_next("{\"a\":1,}", 8, &pos, &m), 0);
    CHECK_INT(json_member_next("{\"a\":1,}", 8, &pos, &m), -1);
    pos = 0;
    CHECK_INT(json_member_next("{\"a\":1 \"b\":2}", 14, &pos, &m), 0);
    CHECK_INT(json_member_next("{\"a\":1 \"b\":2}", 14, &pos, &m), -1);

    /* long strings: the 8-bytes-at-a-time scan must see a quote, a backslash or a control
     * character at every offset of a word */
    for (int k = 0; k < 24; k++) {
        char str[64];
        memset(str, 'x', sizeof(str));
        str[0] = '"';
        str[40] = '"';
        str[41] = 0;
        str[1 + k] = 0x01;
        CHECK_INT(json_valid(str, 41), 0);
        str[1 + k] = '"'; /* ends the string early: trailing garbage */
        CHECK_INT(json_valid(str, 41), 0);
        str[1 + k] = '\\';
        str[2 + k] = 'n';
        CHECK_INT(json_valid(str, 41), 1);
        str[2 + k] = 'q';
        CHECK_INT(json_valid(str, 41), 0);
    }
    return check_report();
}
