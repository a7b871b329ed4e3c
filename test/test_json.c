/* json_top_key: the byte span of a top-level member, which the openai adapter replaces to
 * rewrite `model` without re-encoding the body. Nested and escaped look-alikes must not match.
 * json_valid: the strict validator the api runs on every request body instead of a parse.
 * json_members/get/next, json_string_*, json_number: how the adapters read a stream event in
 * place; they must see what cJSON would (decoded keys, first duplicate, decoded strings, the
 * same numbers) and refuse what is not JSON, hostile input included. */
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

static struct json_span T(const char *s)
{
    return json_text(s, strlen(s));
}

/* The text of a span, for comparing ("(absent)" when absent). */
static const char *text_of(struct json_span v, char *out, size_t size)
{
    if (!v.s)
        return "(absent)";
    snprintf(out, size, "%.*s", (int)v.n, v.s);
    return out;
}

static void test_members(void)
{
    static const char *const keys[] = {"id", "usage", "choices", "missing"};
    struct json_span f[4];
    char o[128];
    const char *ev = " {\"id\":\"x\",\"choices\":[{\"a\":1}],\"usage\":null,\"id\":\"dup\"} ";
    CHECK_INT(json_members(T(ev), keys, 4, f), 0);
    CHECK_STR(text_of(f[0], o, sizeof(o)), "\"x\""); /* the first of duplicates */
    CHECK_STR(text_of(f[1], o, sizeof(o)), "null");
    CHECK_STR(text_of(f[2], o, sizeof(o)), "[{\"a\":1}]");
    CHECK_STR(text_of(f[3], o, sizeof(o)), "(absent)");
    CHECK(f[0].valid && f[2].valid);
    CHECK_INT(json_type(f[0]), JSON_STRING);
    CHECK_INT(json_type(f[1]), JSON_NULL);
    CHECK_INT(json_type(f[2]), JSON_ARRAY);
    CHECK_INT(json_type(f[3]), JSON_ABSENT);
    /* escaped keys match decoded, as cJSON compares them; up to a decoded NUL */
    CHECK_INT(json_members(T("{\"\\u0069d\":1,\"us\\u0061ge\":2}"), keys, 2, f), 0);
    CHECK_STR(text_of(f[0], o, sizeof(o)), "1");
    CHECK_STR(text_of(f[1], o, sizeof(o)), "2");
    CHECK_INT(json_members(T("{\"id\\u0000x\":3}"), keys, 1, f), 0);
    CHECK_STR(text_of(f[0], o, sizeof(o)), "3");
    CHECK_INT(json_members(T("{\"i\\\"d\":3,\"Id\":4,\"idx\":5}"), keys, 1, f), 0);
    CHECK_STR(text_of(f[0], o, sizeof(o)), "(absent)");
    /* not an object, or not valid anywhere in it (after the members wanted, too): -1, nothing */
    static const char *const bad[] = {
        "[1]", "\"id\"", "", "{\"id\":1", "{\"id\":1}x", "{\"id\":1,}", "{\"id\":1,\"z\":[1,]}",
        "{\"id\":1,\"z\":\"\\ud800\"}", "{\"id\":1,\"z\":\"\x01\"}", "{\"id\":1,\"z\":01}",
        "{\"id\":\"unterminated}", "{\"id\":1,\"z\":\"\\u12\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        CHECK_INT(json_members(T(bad[i]), keys, 1, f), -1);
        CHECK(f[0].s == NULL);
    }
    /* nesting past 128 is refused even below the members wanted */
    char deep[300];
    int k = snprintf(deep, sizeof(deep), "{\"id\":1,\"z\":");
    memset(deep + k, '[', 130);
    memset(deep + k + 130, ']', 130);
    deep[k + 260] = '}';
    CHECK_INT(json_members(json_text(deep, (size_t)k + 261), keys, 1, f), -1);
    /* a trusted span (from json_members) is walked without being validated again */
    CHECK_INT(json_members(T("{\"choices\":{\"id\":\"in\",\"x\":[\"]\",{\"y\":\"}\"}]}}"), keys, 3,
                           f),
              0);
    struct json_span inner[1];
    CHECK_INT(json_members(f[2], keys, 1, inner), 0);
    CHECK_STR(text_of(inner[0], o, sizeof(o)), "\"in\"");
}

/* The fast paths of the event walk: keys compared raw unless they have an escape, strings of
 * trusted spans skipped 8 bytes at a time (escapes at every offset around a boundary), white
 * space told apart from the other bytes below '!', and json_next_members. */
static void test_event_walk(void)
{
    static const char *const keys[] = {"id", "choices", "i"};
    struct json_span f[3], g[3];
    char o[128], ev[160];
    /* a key that is a prefix of a wanted one, or has one as its prefix, is another key */
    CHECK_INT(json_members(T("{\"idx\":1,\"choice\":2,\"choicesx\":3,\"\":4,\"i\":5,\"id\":6}"),
                           keys, 3, f),
              0);
    CHECK_STR(text_of(f[0], o, sizeof(o)), "6");
    CHECK_STR(text_of(f[1], o, sizeof(o)), "(absent)");
    CHECK_STR(text_of(f[2], o, sizeof(o)), "5");
    /* an escaped key after the raw one: the first still wins; escaped first: it wins */
    CHECK_INT(json_members(T("{\"i\":1,\"\\u0069\":2,\"\\u0069d\":3,\"id\":4}"), keys, 3, f), 0);
    CHECK_STR(text_of(f[2], o, sizeof(o)), "1");
    CHECK_STR(text_of(f[0], o, sizeof(o)), "3");
    for (int at = 0; at < 20; at++) { /* an escaped quote, then backslash, at offsets 0..19 */
        const char *abc = "abcdefghijklmnopqrstuvwxyz";
        int k = snprintf(ev, sizeof(ev), "{\"choices\":{\"x\":\"%.*s\\\"q\",\"id\":\"%.*s\\\\\"}}",
                         at, abc, at, abc);
        CHECK_INT(json_members(json_text(ev, (size_t)k), keys, 2, f), 0);
        CHECK_INT(json_members(f[1], keys, 1, g), 0); /* trusted: skipped, not scanned */
        CHECK_INT((int)g[0].n, at + 4);
        CHECK(g[0].s && g[0].s[g[0].n - 3] == '\\' && g[0].s[g[0].n - 1] == '"');
    }
    /* white space is ' ', \t, \n, \r: the other bytes below '!' are refused */
    CHECK_INT(json_members(T("\r\n{\t\"id\" :\n1 ,\"i\":2}\n"), keys, 3, f), 0);
    CHECK_STR(text_of(f[0], o, sizeof(o)), "1");
    static const char *const bad_ws[] = {"{\"id\":\x0b" "1}", "{\x0c\"id\":1}", "\x01{}",
                                         "{}\x1f"};
    for (size_t i = 0; i < sizeof(bad_ws) / sizeof(bad_ws[0]); i++)
        CHECK_INT(json_members(T(bad_ws[i]), keys, 1, f), -1);

    /* json_next_members: what json_next then json_members give, element by element */
    static const char *const arrays[] = {
        "{\"choices\":[{\"id\":\"]}\",\"i\":[{}]} , 7, [{\"id\":1}],{\"i\":\"\\\"}\"} ,{}]}",
        "{\"choices\":{\"a\":{\"id\":2},\"b\":null,\"c\":{\"i\":[\"}\"]}}}",
        "{\"choices\":[]}",
    };
    static const int elements[] = {5, 3, 0};
    for (size_t a = 0; a < sizeof(arrays) / sizeof(arrays[0]); a++) {
        static const char *const top[] = {"choices"};
        struct json_span c[1], item;
        CHECK_INT(json_members(T(arrays[a]), top, 1, c), 0);
        size_t p1 = 0, p2 = 0;
        int r1, n = 0;
        while ((r1 = json_next(c[0], &p1, &item)) == 0) {
            json_members(item, keys, 3, f);
            CHECK_INT(json_next_members(c[0], &p2, keys, 3, g), 0);
            CHECK_INT((int)p2, (int)p1);
            for (int k = 0; k < 3; k++)
                CHECK(g[k].s == f[k].s && g[k].n == f[k].n && g[k].valid == f[k].valid);
            n++;
        }
        CHECK_INT(json_next_members(c[0], &p2, keys, 3, g), r1);
        CHECK_INT(n, elements[a]);
    }
    /* untrusted: validated as json_next validates it */
    size_t pos = 0;
    const char *two = "[{\"id\":1},{\"id\":01}]";
    CHECK_INT(json_next_members(T(two), &pos, keys, 1, f), 0);
    CHECK_STR(text_of(f[0], o, sizeof(o)), "1");
    CHECK_INT(json_next_members(T(two), &pos, keys, 1, g), -1);
    struct json_span absent = {NULL, 0, 0};
    pos = 0;
    CHECK_INT(json_next_members(absent, &pos, keys, 1, g), -1);
    pos = 0;
    CHECK_INT(json_next_members(f[0], &pos, keys, 1, g), -1); /* a trusted number */
}

static void test_get_next(void)
{
    char o[128];
    struct json_span ev = T("{\"error\":{\"message\":\"m\",\"code\":429},\"a\":{\"b\":{\"c\":[1]}}}");
    CHECK_STR(text_of(json_get(ev, "error.code"), o, sizeof(o)), "429");
    CHECK_STR(text_of(json_get(ev, "a.b.c"), o, sizeof(o)), "[1]");
    CHECK_STR(text_of(json_get(ev, "a.b.x"), o, sizeof(o)), "(absent)");
    CHECK_STR(text_of(json_get(ev, "error.code.x"), o, sizeof(o)), "(absent)"); /* not an object */
    CHECK_STR(text_of(json_get(T("[{\"a\":1}]"), "a"), o, sizeof(o)), "(absent)");
    struct json_span absent = {NULL, 0, 0};
    CHECK_STR(text_of(json_get(absent, "a"), o, sizeof(o)), "(absent)");
    CHECK_STR(text_of(json_get(T("{\"a\":[1,}"), "a"), o, sizeof(o)), "(absent)");

    /* elements of an array, values of an object (cJSON_ArrayForEach walks both) */
    const char *want[] = {"1", "\"two\"", "{\"x\":[3]}", "null"};
    size_t pos = 0, i = 0;
    struct json_span item;
    struct json_span arr = T(" [1 , \"two\",{\"x\":[3]}, null ] ");
    while (i < 4 && json_next(arr, &pos, &item) == 0)
        CHECK_STR(text_of(item, o, sizeof(o)), want[i++]);
    CHECK_INT(i, 4);
    CHECK_INT(json_next(arr, &pos, &item), 1);
    pos = 0;
    CHECK_INT(json_next(T("{\"k\":\"v\"}"), &pos, &item), 0);
    CHECK_STR(text_of(item, o, sizeof(o)), "\"v\"");
    pos = 0;
    CHECK_INT(json_next(T("[]"), &pos, &item), 1);
    static const char *const bad[] = {"[1,]", "[,1]", "[1 2]", "\"s\"", "[\"open]", "{1:2}"};
    for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
        pos = 0;
        int rc;
        while ((rc = json_next(T(bad[b]), &pos, &item)) == 0)
            ;
        CHECK_INT(rc, -1);
    }
    CHECK_INT(json_next(absent, &pos, &item), -1);
}

static void test_strings(void)
{
    char d[64];
    size_t len;
    const char *p;
    CHECK_INT(json_string_raw(T("\"plain text\""), &p, &len), 0);
    CHECK(len == 10 && memcmp(p, "plain text", 10) == 0);
    CHECK_INT(json_string_raw(T("\"a\\nb\""), &p, &len), 1);
    CHECK_INT(json_string_raw(T("\"open"), &p, &len), -1);
    CHECK_INT(json_string_raw(T("12"), &p, &len), -1);
    CHECK_INT(json_string_raw(T("\"a\"b\""), &p, &len), -1); /* more after the string */
    static const struct {
        const char *in, *out;
        size_t len;
    } cases[] = {
        {"\"\"", "", 0},
        {"\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", "\"\\/\b\f\n\r\t", 8},
        {"\"caf\\u00e9 \\u20ac\"", "caf\xc3\xa9 \xe2\x82\xac", 9},
        {"\"\\ud83d\\ude00!\"", "\xf0\x9f\x98\x80!", 5},   /* a surrogate pair: one character */
        {"\"\\uD834\\uDD1E\"", "\xf0\x9d\x84\x9e", 4},      /* upper-case hex */
        {"\"\xc3\xa9 raw\"", "\xc3\xa9 raw", 6},              /* raw UTF-8 as it is */
        {"\"a\\u0000b\"", "a", 3},                           /* a NUL decoded: len says 3 */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(d, 'Z', sizeof(d));
        CHECK_INT(json_string_copy(T(cases[i].in), d, sizeof(d), &len), 0);
        CHECK_INT(len, cases[i].len);
        CHECK_STR(d, cases[i].out);
    }
    CHECK_INT(json_string_copy(T("\"a\\u0000b\""), d, sizeof(d), &len), 0);
    CHECK(d[1] == 0 && d[2] == 'b');
    /* truncated to the buffer (NUL-terminated), with the whole length reported */
    memset(d, 'Z', sizeof(d));
    CHECK_INT(json_string_copy(T("\"abc\\u00e9def\""), d, 5, &len), 0);
    CHECK_INT(len, 8);
    CHECK_STR(d, "abc\xc3");
    CHECK(d[5] == 'Z');
    CHECK_INT(json_string_copy(T("\"abcdef\""), d, 4, &len), 0);
    CHECK_STR(d, "abc");
    d[0] = 'Z';
    CHECK_INT(json_string_copy(T("\"abc\""), d, 0, &len), 0); /* size 0: nothing written */
    CHECK(d[0] == 'Z' && len == 3);
    /* not strings, or invalid ones: -1 and dst untouched */
    static const char *const bad[] = {
        "\"\\ud83d\"", "\"\\ude00\"", "\"\\ud83d\\u0041\"", "\"\\u12\"", "\"\\x\"", "\"a",
        "\"\x01\"", "null", "", "\"\\",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        d[0] = 'Z';
        CHECK_INT(json_string_copy(T(bad[i]), d, sizeof(d), &len), -1);
        CHECK(d[0] == 'Z');
    }
    /* a long escaped string, all escapes at every word offset */
    char big[600];
    size_t n = 0;
    big[n++] = '"';
    for (int i = 0; i < 50; i++) {
        memcpy(big + n, "\\n\\u00e9x", 9);
        n += 9;
    }
    big[n++] = '"';
    char out[400];
    CHECK_INT(json_string_copy(json_text(big, n), out, sizeof(out), &len), 0);
    CHECK_INT(len, 200);
    CHECK(memcmp(out, "\n\xc3\xa9x\n\xc3\xa9x", 8) == 0 && out[199] == 'x' && out[200] == 0);
}

static void test_numbers(void)
{
    double d = -1;
    CHECK(json_number(T("0"), &d) == 0 && d == 0);
    CHECK(json_number(T("1700000000"), &d) == 0 && d == 1700000000.0);
    CHECK(json_number(T("-42"), &d) == 0 && d == -42);
    CHECK(json_number(T("999999999999999"), &d) == 0 && d == 999999999999999.0);
    CHECK(json_number(T("12345678901234567890"), &d) == 0 && d > 1.2345e19 && d < 1.2346e19);
    CHECK(json_number(T("1.5e3"), &d) == 0 && d == 1500);
    CHECK(json_number(T("-0.25"), &d) == 0 && d == -0.25);
    CHECK(json_number(T("1e400"), &d) == 0 && d > 1e308); /* out of range: HUGE_VAL */
    CHECK(json_number(T("1e-400"), &d) == 0 && d == 0);
    char huge[80];
    memset(huge, '9', sizeof(huge));
    CHECK(json_number(json_text(huge, 63), &d) == 0 && d > 9.9e62);
    CHECK(json_number(json_text(huge, 80), &d) == 0 && d > 9.9e79); /* past the stack copy */
    huge[0] = '0';
    huge[1] = '.';
    CHECK(json_number(json_text(huge, 80), &d) == 0 && d > 0.99 && d <= 1); /* long, in range */
    static const char *const bad[] = {"01", "1.", "-", "+1", ".5", "1e", "0x10", "\"1\"",
                                      "NaN", "1 ", "", "true"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_INT(json_number(T(bad[i]), &d), -1);
    /* a trusted span: a number json_members found */
    static const char *const keys[] = {"n"};
    struct json_span f[1];
    CHECK_INT(json_members(T("{\"n\":-7.5}"), keys, 1, f), 0);
    CHECK(json_number(f[0], &d) == 0 && d == -7.5);
    CHECK_INT(json_members(T("{\"n\":\"7\"}"), keys, 1, f), 0);
    CHECK_INT(json_number(f[0], &d), -1);
}

int main(void)
{
    test_fixed();
    test_members();
    test_get_next();
    test_event_walk();
    test_strings();
    test_numbers();
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
