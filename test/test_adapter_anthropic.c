/* The anthropic adapter, golden: an OpenAI request in -> the exact upstream request out (path,
 * headers, body field by field); Anthropic responses, stream events and errors in -> the exact
 * OpenAI bodies and chunks (with their chunk_info) out. Stream chunks are recorded with their
 * "created" value replaced by 0 (it is the clock at stream_open). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "llmux/adapter.h"
#include "llmux/errors.h"
#include "llmux/json.h"

#define KEY "sk-ant-secret-key"

static struct provider prov(const char *key)
{
    struct provider p;
    memset(&p, 0, sizeof(p));
    p.name = "claude";
    p.kind = PROVIDER_ANTHROPIC;
    p.tls = 1;
    p.host = "api.anthropic.com";
    p.port = 443;
    p.base_path = "/v1";
    p.api_key = (char *)key;
    p.api_version = "2023-06-01";
    p.default_max_tokens = 1024;
    return p;
}

static struct canon_request creq(const char *body, enum api_endpoint ep)
{
    struct canon_request r;
    memset(&r, 0, sizeof(r));
    r.endpoint = ep;
    r.body = body;
    r.body_len = strlen(body);
    json_top_key(body, r.body_len, "model", &r.model_start, &r.model_end);
    cJSON *root = cJSON_Parse(body);
    r.stream = cJSON_IsTrue(cJSON_GetObjectItem(root, "stream"));
    r.include_usage = cJSON_IsTrue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(root, "stream_options"), "include_usage"));
    cJSON_Delete(root);
    r.request_id = "req-1";
    return r;
}

/* Encode; returns the body as cJSON (caller frees), the head in head[] and a refusal's reason
 * in why[]. */
static char head[4096];
static char why[128];
static cJSON *encode_req(const struct provider *p, const struct canon_request *r, int *rc)
{
    struct upstream_request out;
    *rc = adapter_anthropic.encode(p, "claude-x", 8, r, &out);
    snprintf(why, sizeof(why), "%s", out.why);
    if (*rc)
        return NULL;
    size_t total = 0;
    for (unsigned i = 0; i < out.n; i++)
        total += out.iov[i].len;
    snprintf(head, sizeof(head), "%.*s", (int)out.head.len, out.head.data);
    CHECK_INT(out.n, 2);
    CHECK_INT(out.iov[0].len, out.head.len);
    char cl[64];
    snprintf(cl, sizeof(cl), "content-length: %zu\r\n", buf_size(&out.body));
    CHECK_CONTAINS(head, cl);
    CHECK(memmem(buf_head(&out.body), buf_size(&out.body), KEY, strlen(KEY)) == NULL);
    cJSON *body = cJSON_ParseWithLength(buf_head(&out.body), buf_size(&out.body));
    CHECK(body != NULL);
    upstream_request_free(&out);
    return body;
}

static cJSON *encode_ok(const struct provider *p, const char *json)
{
    struct canon_request r = creq(json, API_CHAT);
    int rc;
    cJSON *b = encode_req(p, &r, &rc);
    CHECK_INT(rc, 0);
    return b;
}

/* The JSON text of a member (unformatted), in a static buffer. */
static const char *js(const cJSON *o, const char *key)
{
    static char s[4][4096];
    static int k;
    k = (k + 1) % 4;
    const cJSON *v = key ? cJSON_GetObjectItem(o, key) : o;
    char *t = v ? cJSON_PrintUnformatted(v) : NULL;
    snprintf(s[k], sizeof(s[k]), "%s", t ? t : "(absent)");
    free(t);
    return s[k];
}

static void test_encode_basic(void)
{
    struct provider p = prov(KEY);
    cJSON *b = encode_ok(
        &p, "{\"model\":\"alias\",\"messages\":["
            "{\"role\":\"system\",\"content\":\"Be brief.\"},"
            "{\"role\":\"developer\",\"content\":[{\"type\":\"text\",\"text\":\"Use French.\"}]},"
            "{\"role\":\"system\",\"content\":\"\"},"
            "{\"role\":\"user\",\"content\":\"Hi\"},"
            "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Look:\"},"
            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,iVBORw0=\"}},"
            "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.test/cat.jpg\"}}]}],"
            "\"temperature\":0.5,\"top_p\":0.9,\"stop\":\"END\",\"user\":\"u-42\","
            "\"frequency_penalty\":1}");
    CHECK_CONTAINS(head, "POST /v1/messages HTTP/1.1\r\n");
    CHECK_CONTAINS(head, "host: api.anthropic.com\r\n");
    CHECK_CONTAINS(head, "x-api-key: " KEY "\r\n");
    CHECK_CONTAINS(head, "anthropic-version: 2023-06-01\r\n");
    CHECK_CONTAINS(head, "accept: application/json\r\n");
    CHECK(strstr(head, "authorization") == NULL);
    CHECK(strstr(strstr(head, KEY) + 1, KEY) == NULL); /* once */
    CHECK_STR(js(b, "model"), "\"claude-x\"");
    CHECK_STR(js(b, "system"), "\"Be brief.\\n\\nUse French.\"");
    CHECK_STR(
        js(b, "messages"),
        "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"},"
        "{\"type\":\"text\",\"text\":\"Look:\"},"
        "{\"type\":\"image\",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\","
        "\"data\":\"iVBORw0=\"}},"
        "{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":\"https://x.test/cat.jpg\"}}"
        "]}]");
    CHECK_STR(js(b, "max_tokens"), "1024");
    CHECK_STR(js(b, "temperature"), "0.5");
    CHECK_STR(js(b, "top_p"), "0.9");
    CHECK_STR(js(b, "stop_sequences"), "[\"END\"]");
    CHECK_STR(js(b, "metadata"), "{\"user_id\":\"u-42\"}");
    CHECK_STR(js(b, "stream"), "(absent)");
    CHECK_STR(js(b, "tools"), "(absent)");
    CHECK_STR(js(b, "frequency_penalty"), "(absent)");
    CHECK_INT(cJSON_GetArraySize(b), 8);
    cJSON_Delete(b);
}

static void test_encode_tools(void)
{
    struct provider p = prov(NULL);
    p.api_version = "";
    cJSON *b = encode_ok(
        &p, "{\"model\":\"a\",\"stream\":true,\"max_completion_tokens\":77,\"temperature\":1.7,"
            "\"stop\":[\"a\",\"b\"],\"messages\":["
            "{\"role\":\"user\",\"content\":\"Weather in Paris and Rome?\"},"
            "{\"role\":\"assistant\",\"content\":\"Checking.\",\"tool_calls\":["
            "{\"id\":\"toolu_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
            "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
            "{\"id\":\"toolu_2\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
            "\"arguments\":\"\"}}]},"
            "{\"role\":\"tool\",\"tool_call_id\":\"toolu_1\",\"content\":\"18C\"},"
            "{\"role\":\"tool\",\"tool_call_id\":\"toolu_2\",\"content\":[{\"type\":\"text\","
            "\"text\":\"21C\"}]},"
            "{\"role\":\"user\",\"content\":\"Thanks\"},"
            "{\"role\":\"assistant\",\"content\":\"\"}],"
            "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
            "\"description\":\"Weather\",\"parameters\":{\"type\":\"object\",\"properties\":"
            "{\"city\":{\"type\":\"string\"}}}}},"
            "{\"type\":\"function\",\"function\":{\"name\":\"now\"}}],"
            "\"tool_choice\":\"required\",\"parallel_tool_calls\":false}");
    CHECK(strstr(head, "x-api-key") == NULL);
    CHECK_CONTAINS(head, "anthropic-version: 2023-06-01\r\n"); /* the default */
    CHECK_CONTAINS(head, "accept: text/event-stream\r\n");
    CHECK_STR(js(b, "messages"),
              "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Weather in Paris "
              "and Rome?\"}]},"
              "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Checking.\"},"
              "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":"
              "{\"city\":\"Paris\"}},"
              "{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"get_weather\",\"input\":{}}]},"
              "{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":"
              "\"toolu_1\",\"content\":\"18C\"},{\"type\":\"tool_result\",\"tool_use_id\":"
              "\"toolu_2\",\"content\":\"21C\"},{\"type\":\"text\",\"text\":\"Thanks\"}]}]");
    CHECK_STR(js(b, "max_tokens"), "77");
    CHECK_STR(js(b, "temperature"), "1");
    CHECK_STR(js(b, "stop_sequences"), "[\"a\",\"b\"]");
    CHECK_STR(js(b, "stream"), "true");
    CHECK_STR(js(b, "tools"),
              "[{\"name\":\"get_weather\",\"description\":\"Weather\",\"input_schema\":{\"type\":"
              "\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}},"
              "{\"name\":\"now\",\"input_schema\":{\"type\":\"object\",\"properties\":{}}}]");
    CHECK_STR(js(b, "tool_choice"), "{\"type\":\"any\",\"disable_parallel_tool_use\":true}");
    cJSON_Delete(b);

    static const char *const choices[][2] = {
        {"\"auto\"", "{\"type\":\"auto\"}"},
        {"\"none\"", "{\"type\":\"none\"}"},
        {"{\"type\":\"function\",\"function\":{\"name\":\"now\"}}",
         "{\"type\":\"tool\",\"name\":\"now\"}"},
    };
    for (size_t i = 0; i < 3; i++) {
        char json[512];
        snprintf(json, sizeof(json),
                 "{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                 "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"now\"}}],"
                 "\"tool_choice\":%s}",
                 choices[i][0]);
        b = encode_ok(&p, json);
        CHECK_STR(js(b, "tool_choice"), choices[i][1]);
        cJSON_Delete(b);
    }
}

static void test_encode_refused(void)
{
    struct provider p = prov(KEY);
    static const struct {
        const char *body;
        enum api_endpoint ep;
        int rc;
    } cases[] = {
        {"{\"model\":\"a\",\"prompt\":\"x\"}", API_COMPLETIONS, LLMUX_EKIND},
        {"{\"model\":\"a\",\"input\":\"x\"}", API_EMBEDDINGS, LLMUX_EKIND},
        {"{\"model\":\"a\",\"n\":2,\"messages\":[]}", API_CHAT, LLMUX_EKIND},
        {"{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
         "\"input_audio\",\"input_audio\":{}}]}]}",
         API_CHAT, LLMUX_EKIND},
        {"{\"model\":\"a\",\"messages\":[{\"role\":\"function\",\"content\":\"x\"}]}", API_CHAT,
         LLMUX_EKIND},
        {"{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":"
         "[{\"type\":\"code_interpreter\"}]}",
         API_CHAT, LLMUX_EKIND},
        {"{\"model\":\"a\",\"messages\":\"hi\"}", API_CHAT, UV_EINVAL},
        {"{\"model\":\"a\",\"messages\":[{\"content\":\"no role\"}]}", API_CHAT, UV_EINVAL},
        {"{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
         "\"image_url\",\"image_url\":{\"url\":\"ftp://x\"}}]}]}",
         API_CHAT, UV_EINVAL},
        {"{\"model\":\"a\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"1\","
         "\"function\":{\"name\":\"f\",\"arguments\":\"{not json\"}}]}]}",
         API_CHAT, UV_EINVAL},
        {"{\"model\":\"a\",\"messages\":[{\"role\":\"tool\",\"content\":\"no id\"}]}", API_CHAT,
         UV_EINVAL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct canon_request r = creq(cases[i].body, cases[i].ep);
        int rc;
        cJSON *b = encode_req(&p, &r, &rc);
        CHECK(b == NULL);
        if (rc != cases[i].rc)
            fprintf(stderr, "case %zu\n", i);
        CHECK_INT(rc, cases[i].rc);
    }
    /* not JSON at all */
    struct canon_request r = creq("{\"model\":\"a\"}", API_CHAT);
    r.body = "{nope";
    r.body_len = 5;
    int rc;
    CHECK(encode_req(&p, &r, &rc) == NULL);
    CHECK_INT(rc, UV_EINVAL);
}

static void test_encode_continuation(void)
{
    struct provider p = prov(KEY);
    const char *json = "{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"Count\"}]}";
    struct canon_request r = creq(json, API_CHAT);
    r.prefix = "one two \n\t";
    r.prefix_len = strlen(r.prefix);
    r.prefill = 1;
    int rc;
    cJSON *b = encode_req(&p, &r, &rc);
    CHECK_INT(rc, 0);
    CHECK_STR(js(b, "messages"),
              "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Count\"}]},"
              "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"one two\"}]}]");
    cJSON_Delete(b);

    r.prefill = 0;
    b = encode_req(&p, &r, &rc);
    CHECK_INT(rc, 0);
    CHECK_STR(
        js(b, "messages"),
        "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Count\"}]},"
        "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"one two \\n\\t\"}]},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":"
        "\"" ADAPTER_CONTINUE_INSTRUCTION "\"}]}]");
    cJSON_Delete(b);

    /* only whitespace delivered: no empty assistant message */
    r.prefill = 1;
    r.prefix = "  ";
    r.prefix_len = 2;
    b = encode_req(&p, &r, &rc);
    CHECK_INT(rc, 0);
    CHECK_INT(cJSON_GetArraySize(cJSON_GetObjectItem(b, "messages")), 1);
    cJSON_Delete(b);

    /* the client's own prefill and the delivered text: one assistant message */
    struct canon_request r2 = creq("{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":"
                                   "\"Count\"},{\"role\":\"assistant\",\"content\":\"Sure:\"}]}",
                                   API_CHAT);
    r2.prefix = " one";
    r2.prefix_len = 4;
    r2.prefill = 1;
    b = encode_req(&p, &r2, &rc);
    CHECK_STR(js(b, "messages"),
              "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Count\"}]},"
              "{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"Sure:\"},"
              "{\"type\":\"text\",\"text\":\" one\"}]}]");
    cJSON_Delete(b);
}

#define RF_MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"}]"
#define RF_SCHEMA                                                                                  \
    "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"},\"days\":{\"type\":"      \
    "\"integer\"}},\"required\":[\"city\",\"days\"],\"additionalProperties\":false}"
#define RF_JSON_SCHEMA                                                                             \
    "\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"forecast\","       \
    "\"strict\":true,\"schema\":" RF_SCHEMA "}}"
#define RF_TOOL "{\"type\":\"function\",\"function\":{\"name\":\"now\"}}"

/* response_format: a forced tool whose input_schema is the schema (Anthropic has no such
 * field); nothing else of the request changes and response_format itself is not sent. */
static void test_encode_response_format(void)
{
    struct provider p = prov(KEY);
    cJSON *b = encode_ok(&p, "{\"model\":\"a\"," RF_MSGS "," RF_JSON_SCHEMA "}");
    CHECK_STR(js(b, "tools"), "[{\"name\":\"forecast\",\"description\":\"Give the answer as this "
                              "tool's input.\",\"input_schema\":" RF_SCHEMA "}]");
    CHECK_STR(js(b, "tool_choice"), "{\"type\":\"tool\",\"name\":\"forecast\"}");
    CHECK_STR(js(b, "response_format"), "(absent)");
    CHECK_STR(js(b, "messages"),
              "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Weather?\"}]}]");
    CHECK_INT(cJSON_GetArraySize(b), 5); /* model, messages, max_tokens, tools, tool_choice */
    cJSON_Delete(b);

    /* json_object: any object, under the default name; a description is passed on */
    b = encode_ok(&p,
                  "{\"model\":\"a\"," RF_MSGS ",\"response_format\":{\"type\":\"json_object\"}}");
    CHECK_STR(js(b, "tools"), "[{\"name\":\"json_response\",\"description\":\"Give the answer as "
                              "this tool's input.\",\"input_schema\":{\"type\":\"object\"}}]");
    CHECK_STR(js(b, "tool_choice"), "{\"type\":\"tool\",\"name\":\"json_response\"}");
    cJSON_Delete(b);
    b = encode_ok(&p, "{\"model\":\"a\"," RF_MSGS ",\"response_format\":{\"type\":\"json_schema\","
                      "\"json_schema\":{\"name\":\"not a valid name\",\"description\":"
                      "\"A city\"}}}");
    CHECK_STR(js(b, "tools"), "[{\"name\":\"json_response\",\"description\":\"A city\","
                              "\"input_schema\":{\"type\":\"object\"}}]");
    cJSON_Delete(b);

    /* text, null: nothing to do */
    b = encode_ok(&p, "{\"model\":\"a\"," RF_MSGS ",\"response_format\":{\"type\":\"text\"}}");
    CHECK_STR(js(b, "tools"), "(absent)");
    CHECK_STR(js(b, "tool_choice"), "(absent)");
    cJSON_Delete(b);
    b = encode_ok(&p, "{\"model\":\"a\"," RF_MSGS ",\"response_format\":null}");
    CHECK_STR(js(b, "tools"), "(absent)");
    cJSON_Delete(b);

    /* the client's own tools: still callable (any) unless tool_choice is none */
    static const char *const choices[][2] = {
        {"", "{\"type\":\"any\"}"},
        {",\"tool_choice\":\"auto\"", "{\"type\":\"any\"}"},
        {",\"tool_choice\":\"none\"", "{\"type\":\"tool\",\"name\":\"forecast\"}"},
        {",\"tool_choice\":\"auto\",\"parallel_tool_calls\":false",
         "{\"type\":\"any\",\"disable_parallel_tool_use\":true}"},
    };
    for (size_t i = 0; i < sizeof(choices) / sizeof(choices[0]); i++) {
        char json[1024];
        snprintf(json, sizeof(json),
                 "{\"model\":\"a\"," RF_MSGS ",\"tools\":[" RF_TOOL "]%s," RF_JSON_SCHEMA "}",
                 choices[i][0]);
        b = encode_ok(&p, json);
        CHECK_STR(js(b, "tools"),
                  "[{\"name\":\"now\",\"input_schema\":{\"type\":\"object\",\"properties\":{}}},"
                  "{\"name\":\"forecast\",\"description\":\"Give the answer as this tool's "
                  "input.\",\"input_schema\":" RF_SCHEMA "}]");
        CHECK_STR(js(b, "tool_choice"), choices[i][1]);
        cJSON_Delete(b);
    }
}

/* What cannot be represented is refused (a 400 from llmux), and the reason names the field. */
static void test_encode_response_format_refused(void)
{
    struct provider p = prov(KEY);
    static const char *const bodies[] = {
        "{\"model\":\"a\"," RF_MSGS ",\"response_format\":{\"type\":\"json\"}}",
        "{\"model\":\"a\"," RF_MSGS ",\"response_format\":{\"type\":\"json_schema\","
        "\"json_schema\":{\"name\":\"list\",\"schema\":{\"type\":\"array\"}}}}",
        "{\"model\":\"a\"," RF_MSGS ",\"response_format\":{\"type\":\"json_schema\","
        "\"json_schema\":{\"name\":\"x\",\"schema\":{\"anyOf\":[]}}}}",
        "{\"model\":\"a\"," RF_MSGS ",\"tools\":[" RF_TOOL "],\"tool_choice\":\"required\","
        RF_JSON_SCHEMA "}",
        "{\"model\":\"a\"," RF_MSGS ",\"tools\":[" RF_TOOL "],\"tool_choice\":{\"type\":"
        "\"function\",\"function\":{\"name\":\"now\"}}," RF_JSON_SCHEMA "}",
        "{\"model\":\"a\"," RF_MSGS ",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":"
        "\"forecast\"}}]," RF_JSON_SCHEMA "}",
    };
    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
        struct canon_request r = creq(bodies[i], API_CHAT);
        int rc;
        CHECK(encode_req(&p, &r, &rc) == NULL);
        if (rc != UV_EINVAL || strncmp(why, "response_format: ", 17) != 0)
            fprintf(stderr, "case %zu: %d %s\n", i, rc, why);
        CHECK_INT(rc, UV_EINVAL);
        CHECK(strncmp(why, "response_format: ", 17) == 0);
    }
    /* a continuation of a JSON answer */
    struct canon_request r = creq("{\"model\":\"a\"," RF_MSGS "," RF_JSON_SCHEMA "}", API_CHAT);
    r.prefix = "{\"city\":";
    r.prefix_len = strlen(r.prefix);
    r.prefill = 1;
    int rc;
    CHECK(encode_req(&p, &r, &rc) == NULL);
    CHECK_INT(rc, UV_EINVAL);
    CHECK_CONTAINS(why, "response_format");
    /* other refusals say nothing of response_format */
    r = creq("{\"model\":\"a\",\"messages\":\"hi\"}", API_CHAT);
    CHECK(encode_req(&p, &r, &rc) == NULL);
    CHECK_INT(rc, UV_EINVAL);
    CHECK_STR(why, "");
}

/* ---- responses ---- */

static char out_text[8192];
static int decode_for(const char *request, const char *body, struct usage *u)
{
    struct canon_request r = creq(request, API_CHAT);
    struct buf out;
    buf_init(&out, 0);
    int rc = adapter_anthropic.decode_body(&r, "claude-x", body, strlen(body), &out, u);
    snprintf(out_text, sizeof(out_text), "%.*s", (int)buf_size(&out), buf_head(&out));
    buf_free(&out);
    return rc;
}

static int decode(const char *body, struct usage *u)
{
    return decode_for("{\"model\":\"a\",\"messages\":[]}", body, u);
}

/* out_text with "created":<n> replaced by "created":0 */
static const char *norm(const char *s)
{
    static char o[8192];
    const char *c = strstr(s, "\"created\":");
    if (!c)
        return s;
    size_t at = (size_t)(c - s) + 10;
    const char *e = s + at;
    while (*e >= '0' && *e <= '9')
        e++;
    snprintf(o, sizeof(o), "%.*s0%s", (int)at, s, e);
    return o;
}

static void test_decode_body(void)
{
    struct usage u;
    CHECK_INT(decode("{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
                     "\"claude-3-5-haiku-20241022\",\"content\":[{\"type\":\"text\",\"text\":"
                     "\"Let me check. \"},{\"type\":\"thinking\",\"thinking\":\"hm\"},"
                     "{\"type\":\"tool_use\",\"id\":\"toolu_9\",\"name\":\"get_weather\",\"input\":"
                     "{\"city\":\"Paris\",\"days\":[1,2]}},{\"type\":\"text\",\"text\":\"é✓\"}],"
                     "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,\"usage\":{"
                     "\"input_tokens\":10,\"cache_creation_input_tokens\":5,"
                     "\"cache_read_input_tokens\":100,\"output_tokens\":20}}",
                     &u),
              0);
    CHECK_STR(norm(out_text),
              "{\"id\":\"msg_01\",\"object\":\"chat.completion\",\"created\":0,\"model\":"
              "\"claude-3-5-haiku-20241022\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
              "\"assistant\",\"content\":\"Let me check. é✓\",\"tool_calls\":[{\"id\":\"toolu_9\","
              "\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":"
              "\"{\\\"city\\\":\\\"Paris\\\",\\\"days\\\":[1,2]}\"}}]},\"finish_reason\":"
              "\"tool_calls\"}],\"usage\":{\"prompt_tokens\":115,\"completion_tokens\":20,"
              "\"total_tokens\":135,\"prompt_tokens_details\":{\"cached_tokens\":100}}}");
    CHECK_INT(u.known, 1);
    CHECK_INT(u.prompt_tokens, 115);
    CHECK_INT(u.completion_tokens, 20);
    CHECK_INT(u.total_tokens, 135);
    CHECK_INT(u.cached_tokens, 100);

    /* tool use only: content null; every stop reason */
    static const char *const reasons[][2] = {
        {"\"end_turn\"", "stop"},          {"\"stop_sequence\"", "stop"},
        {"\"max_tokens\"", "length"},      {"\"tool_use\"", "tool_calls"},
        {"\"refusal\"", "content_filter"}, {"null", "stop"},
    };
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        char body[512], want[128];
        snprintf(body, sizeof(body),
                 "{\"id\":\"m\",\"model\":\"c\",\"content\":[],\"stop_reason\":%s,"
                 "\"usage\":{\"input_tokens\":1,\"output_tokens\":2}}",
                 reasons[i][0]);
        CHECK_INT(decode(body, &u), 0);
        snprintf(want, sizeof(want), "\"finish_reason\":\"%s\"", reasons[i][1]);
        CHECK_CONTAINS(out_text, want);
        CHECK_CONTAINS(out_text, "\"content\":null");
        CHECK(strstr(out_text, "tool_calls\":[") == NULL);
        CHECK_INT(u.total_tokens, 3);
        CHECK_INT(u.cached_tokens, 0);
    }
    /* malformed */
    CHECK_INT(decode("{\"id\":\"m\",\"content\":", &u), LLMUX_EPROTO);
    CHECK_INT(decode("[1,2]", &u), LLMUX_EPROTO);
    CHECK_INT(decode("{\"id\":\"m\",\"content\":\"text\"}", &u), LLMUX_EPROTO);
    CHECK_INT(decode("{\"content\":[{\"type\":\"tool_use\",\"input\":{}}]}", &u), LLMUX_EPROTO);
    CHECK_INT(u.known, 0);
}

#define RF_ANSWER "{\"city\":\"Paris\",\"days\":3}"

/* response_format: the forced tool's input is the message content, finish "stop". */
static void test_decode_response_format(void)
{
    struct usage u;
    const char *req = "{\"model\":\"a\"," RF_MSGS "," RF_JSON_SCHEMA "}";
    CHECK_INT(decode_for(req,
                         "{\"id\":\"msg_2\",\"model\":\"c\",\"content\":[{\"type\":\"tool_use\","
                         "\"id\":\"toolu_1\",\"name\":\"forecast\",\"input\":" RF_ANSWER "}],"
                         "\"stop_reason\":\"tool_use\",\"usage\":{\"input_tokens\":1,"
                         "\"output_tokens\":2}}",
                         &u),
              0);
    CHECK_STR(norm(out_text),
              "{\"id\":\"msg_2\",\"object\":\"chat.completion\",\"created\":0,\"model\":\"c\","
              "\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":"
              "\"{\\\"city\\\":\\\"Paris\\\",\\\"days\\\":3}\"},\"finish_reason\":\"stop\"}],"
              "\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3,"
              "\"prompt_tokens_details\":{\"cached_tokens\":0}}}");
    /* cut by max_tokens: length, as OpenAI says */
    CHECK_INT(decode_for(req,
                         "{\"id\":\"m\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t\",\"name\":"
                         "\"forecast\",\"input\":{}}],\"stop_reason\":\"max_tokens\"}",
                         &u),
              0);
    CHECK_CONTAINS(out_text, "\"content\":\"{}\"},\"finish_reason\":\"length\"");
    /* a tool of the client's called too: that one stays a tool call */
    CHECK_INT(decode_for("{\"model\":\"a\",\"tools\":[" RF_TOOL "]," RF_JSON_SCHEMA "}",
                         "{\"id\":\"m\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t1\",\"name\":"
                         "\"now\",\"input\":{}},{\"type\":\"tool_use\",\"id\":\"t2\",\"name\":"
                         "\"forecast\",\"input\":" RF_ANSWER "}],\"stop_reason\":\"tool_use\"}",
                         &u),
              0);
    CHECK_CONTAINS(out_text, "\"content\":\"{\\\"city\\\":\\\"Paris\\\",\\\"days\\\":3}\","
                             "\"tool_calls\":[{\"id\":\"t1\",\"type\":\"function\",\"function\":"
                             "{\"name\":\"now\",\"arguments\":\"{}\"}}]},\"finish_reason\":"
                             "\"tool_calls\"");
    /* json_object: the default name; without response_format that name is a plain tool */
    const char *body = "{\"id\":\"m\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t\",\"name\":"
                       "\"json_response\",\"input\":{\"a\":1}}],\"stop_reason\":\"tool_use\"}";
    CHECK_INT(decode_for("{\"model\":\"a\",\"response_format\":{\"type\":\"json_object\"}}", body,
                         &u),
              0);
    CHECK_CONTAINS(out_text, "\"content\":\"{\\\"a\\\":1}\"},\"finish_reason\":\"stop\"");
    CHECK_INT(decode(body, &u), 0);
    CHECK_CONTAINS(out_text, "\"content\":null,\"tool_calls\":[{\"id\":\"t\"");
}

/* ---- streams ---- */

#define MAX_CHUNKS 64
struct rec {
    int n;
    char data[MAX_CHUNKS][1024];
    struct chunk_info ci[MAX_CHUNKS];
    char text[MAX_CHUNKS][256];
    int stop_at; /* return 1 from this chunk (1-based) */
};

static int on_chunk(void *ctx, const char *data, size_t len, const struct chunk_info *ci)
{
    struct rec *r = ctx;
    if (r->n == MAX_CHUNKS)
        return 1;
    char raw[1024];
    snprintf(raw, sizeof(raw), "%.*s", (int)len, data);
    const char *n = norm(raw);
    size_t nlen = strlen(n);
    if (nlen >= sizeof(r->data[r->n]))
        nlen = sizeof(r->data[r->n]) - 1;
    memcpy(r->data[r->n], n, nlen);
    r->data[r->n][nlen] = 0;
    r->ci[r->n] = *ci;
    if (ci->text)
        snprintf(r->text[r->n], sizeof(r->text[r->n]), "%.*s", (int)ci->text_len, ci->text);
    r->ci[r->n].text = ci->text ? r->text[r->n] : NULL;
    r->n++;
    return r->n == r->stop_at;
}

struct run {
    struct canon_request req;
    struct adapter_stream s;
    struct rec rec;
    int rc; /* first nonzero stream_event return */
};

static void run_open(struct run *x, const char *body)
{
    memset(x, 0, sizeof(*x));
    x->req = creq(body, API_CHAT);
    x->s.req = &x->req;
    x->s.model = "claude-x";
    CHECK_INT(adapter_anthropic.stream_open(&x->s), 0);
}

static void run_event(struct run *x, const char *event, const char *data)
{
    if (x->rc)
        return;
    x->rc = adapter_anthropic.stream_event(&x->s, event, strlen(event), data, strlen(data),
                                           on_chunk, &x->rec);
}

static int run_close(struct run *x)
{
    int done = adapter_anthropic.stream_finish(&x->s, on_chunk, &x->rec);
    adapter_anthropic.stream_close(&x->s);
    return done;
}

#define STREAM_BODY "{\"model\":\"a\",\"stream\":true,\"messages\":[]}"
#define USAGE_BODY                                                                                 \
    "{\"model\":\"a\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[]" \
    "}"
#define CHUNK(delta, finish)                                                                       \
    "{\"id\":\"msg_1\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"claude-y\"," \
    "\"choices\":[{\"index\":0,\"delta\":" delta ",\"finish_reason\":" finish "}]"
#define MSG_START                                                                                  \
    "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":"     \
    "\"assistant\",\"model\":\"claude-y\",\"content\":[],\"stop_reason\":null,\"usage\":"          \
    "{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}"

static void test_stream_text(void)
{
    struct run x;
    run_open(&x, USAGE_BODY);
    run_event(&x, "message_start", MSG_START);
    run_event(&x, "content_block_start",
              "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
              "\"text\":\"\"}}");
    run_event(&x, "ping", "{\"type\":\"ping\"}");
    run_event(&x, "content_block_delta",
              "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
              "\"text\":\"Hello\"}}");
    /* multi-byte characters, raw and escaped (a surrogate pair), split across events */
    run_event(&x, "content_block_delta",
              "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
              "\"text\":\" wörld \\ud83d\\ude00\"}}");
    run_event(&x, "content_block_delta",
              "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
              "\"text\":\"日本\"}}");
    run_event(&x, "brand_new_event", "{\"type\":\"brand_new_event\",\"x\":1}");
    run_event(&x, "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}");
    run_event(&x, "message_delta",
              "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
              "\"stop_sequence\":null},\"usage\":{\"output_tokens\":12}}");
    run_event(&x, "message_stop", "{\"type\":\"message_stop\"}");
    CHECK_INT(x.rc, 0);
    CHECK_INT(run_close(&x), 1);
    struct rec *r = &x.rec;
    CHECK_INT(r->n, 7);
    CHECK_STR(r->data[0],
              CHUNK("{\"role\":\"assistant\",\"content\":\"\"}", "null") ",\"usage\":null}");
    CHECK_INT(r->ci[0].kind, CHUNK_PREAMBLE);
    CHECK_STR(r->ci[0].id, "msg_1");
    CHECK_STR(r->ci[0].model, "claude-y");
    CHECK(r->ci[0].created > 1700000000);
    CHECK(r->ci[0].text == NULL);
    CHECK_STR(r->data[1], CHUNK("{\"content\":\"Hello\"}", "null") ",\"usage\":null}");
    CHECK_INT(r->ci[1].kind, CHUNK_CONTENT);
    CHECK_STR(r->ci[1].text, "Hello");
    CHECK_INT(r->ci[1].text_len, 5);
    CHECK_STR(r->data[2],
              CHUNK("{\"content\":\" wörld \xF0\x9F\x98\x80\"}", "null") ",\"usage\":null}");
    CHECK_STR(r->ci[2].text, " wörld \xF0\x9F\x98\x80");
    CHECK_STR(r->ci[3].text, "日本");
    CHECK_STR(r->data[4], CHUNK("{}", "\"stop\"") ",\"usage\":null}");
    CHECK_INT(r->ci[4].kind, CHUNK_CONTENT);
    CHECK_INT(r->ci[4].finish, 1);
    CHECK(r->ci[4].text == NULL);
    CHECK_STR(r->data[5], "{\"id\":\"msg_1\",\"object\":\"chat.completion.chunk\",\"created\":0,"
                          "\"model\":\"claude-y\",\"choices\":[],\"usage\":{\"prompt_tokens\":30,"
                          "\"completion_tokens\":12,\"total_tokens\":42,\"prompt_tokens_details\":"
                          "{\"cached_tokens\":5}}}");
    CHECK_INT(r->ci[5].kind, CHUNK_CONTENT);
    CHECK_INT(r->ci[5].usage.known, 1);
    CHECK_INT(r->ci[5].usage.prompt_tokens, 30);
    CHECK_INT(r->ci[5].usage.completion_tokens, 12);
    CHECK_INT(r->ci[5].usage.cached_tokens, 5);
    CHECK_STR(r->data[6], "[DONE]");
    CHECK_INT(r->ci[6].kind, CHUNK_DONE);
    for (int i = 0; i < 5; i++) {
        CHECK_INT(r->ci[i].usage.known, 0);
        CHECK_INT(r->ci[i].tool_call, 0);
    }
}

static void test_stream_tools(void)
{
    struct run x;
    run_open(&x, STREAM_BODY);
    run_event(&x, "message_start", MSG_START);
    run_event(&x, "content_block_start",
              "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
              "\"text\":\"\"}}");
    run_event(&x, "content_block_delta",
              "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
              "\"text\":\"Checking\"}}");
    run_event(&x, "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}");
    static const char *const frags[] = {"",      "{\"ci",       "ty\": \"Pa",
                                        "ris\"", ", \"unit\":", "\"°C\"}"};
    for (int t = 0; t < 2; t++) {
        char ev[512];
        snprintf(ev, sizeof(ev),
                 "{\"type\":\"content_block_start\",\"index\":%d,\"content_block\":{\"type\":"
                 "\"tool_use\",\"id\":\"toolu_%d\",\"name\":\"get_weather\",\"input\":{}}}",
                 t + 1, t);
        run_event(&x, "content_block_start", ev);
        for (size_t i = 0; i < sizeof(frags) / sizeof(frags[0]); i++) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "type", "content_block_delta");
            cJSON_AddNumberToObject(o, "index", t + 1);
            cJSON *d = cJSON_AddObjectToObject(o, "delta");
            cJSON_AddStringToObject(d, "type", "input_json_delta");
            cJSON_AddStringToObject(d, "partial_json", frags[i]);
            char *s = cJSON_PrintUnformatted(o);
            run_event(&x, "content_block_delta", s);
            free(s);
            cJSON_Delete(o);
        }
        run_event(&x, "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":1}");
    }
    run_event(&x, "message_delta",
              "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},"
              "\"usage\":{\"output_tokens\":40}}");
    run_event(&x, "message_stop", "{\"type\":\"message_stop\"}");
    CHECK_INT(x.rc, 0);
    CHECK_INT(run_close(&x), 1);
    struct rec *r = &x.rec;
    CHECK_INT(r->n, 1 + 1 + 2 * 6 + 1 + 1);
    CHECK_STR(r->data[1], CHUNK("{\"content\":\"Checking\"}", "null") "}");
    CHECK_STR(r->data[2], CHUNK("{\"tool_calls\":[{\"index\":0,\"id\":\"toolu_0\",\"type\":"
                                "\"function\",\"function\":{\"name\":\"get_weather\","
                                "\"arguments\":\"\"}}]}",
                                "null") "}");
    CHECK_INT(r->ci[2].kind, CHUNK_CONTENT);
    CHECK_INT(r->ci[2].tool_call, 1);
    CHECK(r->ci[2].text == NULL);
    CHECK_STR(r->data[3], CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
                                "\"{\\\"ci\"}}]}",
                                "null") "}");
    CHECK_STR(r->data[8], CHUNK("{\"tool_calls\":[{\"index\":1,\"id\":\"toolu_1\",\"type\":"
                                "\"function\",\"function\":{\"name\":\"get_weather\","
                                "\"arguments\":\"\"}}]}",
                                "null") "}");
    /* the fragments of each call put together are its arguments */
    for (int t = 0; t < 2; t++) {
        char args[256] = "";
        for (int i = 0; i < 5; i++) {
            cJSON *o = cJSON_Parse(r->data[3 + 6 * t + i]);
            cJSON *tc = cJSON_GetArrayItem(
                cJSON_GetObjectItem(
                    cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(o, "choices"), 0),
                                        "delta"),
                    "tool_calls"),
                0);
            CHECK_INT(cJSON_GetObjectItem(tc, "index")->valueint, t);
            strcat(
                args,
                cJSON_GetObjectItem(cJSON_GetObjectItem(tc, "function"), "arguments")->valuestring);
            CHECK_INT(r->ci[3 + 6 * t + i].tool_call, 1);
            cJSON_Delete(o);
        }
        CHECK_STR(args, "{\"city\": \"Paris\", \"unit\":\"°C\"}");
    }
    CHECK_STR(r->data[14], CHUNK("{}", "\"tool_calls\"") "}");
    CHECK_INT(r->ci[14].finish, 1);
    CHECK_STR(r->data[15], "[DONE]");
    /* no usage chunk asked for: the exchange still learns the usage from [DONE]'s info */
    CHECK_INT(r->ci[15].usage.known, 1);
    CHECK_INT(r->ci[15].usage.completion_tokens, 40);
    CHECK_INT(r->ci[15].usage.prompt_tokens, 30);
}

/* response_format: the forced tool's input_json_delta fragments are content deltas, its
 * tool_use start is not relayed, the finish is "stop"; a client tool keeps index 0. */
static void test_stream_response_format(void)
{
    struct run x;
    run_open(&x, "{\"model\":\"a\",\"stream\":true," RF_MSGS "," RF_JSON_SCHEMA "}");
    run_event(&x, "message_start", MSG_START);
    run_event(&x, "content_block_start",
              "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
              "\"tool_use\",\"id\":\"toolu_1\",\"name\":\"forecast\",\"input\":{}}}");
    run_event(&x, "ping", "{\"type\":\"ping\"}");
    static const char *const frags[] = {"", "{\"city\"", ":\"Par", "is\",\"days\":3}"};
    for (size_t i = 0; i < 4; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "type", "content_block_delta");
        cJSON_AddNumberToObject(o, "index", 0);
        cJSON *d = cJSON_AddObjectToObject(o, "delta");
        cJSON_AddStringToObject(d, "type", "input_json_delta");
        cJSON_AddStringToObject(d, "partial_json", frags[i]);
        char *ev = cJSON_PrintUnformatted(o);
        run_event(&x, "content_block_delta", ev);
        free(ev);
        cJSON_Delete(o);
    }
    run_event(&x, "content_block_stop", "{\"type\":\"content_block_stop\",\"index\":0}");
    run_event(&x, "message_delta",
              "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},"
              "\"usage\":{\"output_tokens\":9}}");
    run_event(&x, "message_stop", "{\"type\":\"message_stop\"}");
    CHECK_INT(x.rc, 0);
    CHECK_INT(run_close(&x), 1);
    struct rec *r = &x.rec;
    CHECK_INT(r->n, 1 + 3 + 1 + 1);
    CHECK_INT(r->ci[0].kind, CHUNK_PREAMBLE);
    CHECK_STR(r->data[1], CHUNK("{\"content\":\"{\\\"city\\\"\"}", "null") "}");
    CHECK_STR(r->data[2], CHUNK("{\"content\":\":\\\"Par\"}", "null") "}");
    CHECK_STR(r->data[3], CHUNK("{\"content\":\"is\\\",\\\"days\\\":3}\"}", "null") "}");
    for (int i = 1; i <= 3; i++) {
        CHECK_INT(r->ci[i].kind, CHUNK_CONTENT);
        CHECK_INT(r->ci[i].tool_call, 0);
    }
    CHECK_STR(r->ci[1].text, "{\"city\"");
    CHECK_INT(r->ci[1].text_len, 7);
    CHECK_STR(r->data[4], CHUNK("{}", "\"stop\"") "}");
    CHECK_STR(r->data[5], "[DONE]");

    /* with a client tool called first: it stays tool call 0, the finish is tool_calls */
    run_open(&x, "{\"model\":\"a\",\"stream\":true,\"tools\":[" RF_TOOL "]," RF_JSON_SCHEMA "}");
    run_event(&x, "message_start", MSG_START);
    run_event(&x, "content_block_start",
              "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":"
              "\"tool_use\",\"id\":\"toolu_1\",\"name\":\"now\",\"input\":{}}}");
    run_event(&x, "content_block_delta",
              "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":"
              "\"input_json_delta\",\"partial_json\":\"{}\"}}");
    run_event(&x, "content_block_start",
              "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":"
              "\"tool_use\",\"id\":\"toolu_2\",\"name\":\"forecast\",\"input\":{}}}");
    run_event(&x, "content_block_delta",
              "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":"
              "\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\\\"Paris\\\"}\"}}");
    run_event(&x, "message_delta",
              "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"}}");
    run_event(&x, "message_stop", "{\"type\":\"message_stop\"}");
    CHECK_INT(x.rc, 0);
    CHECK_INT(run_close(&x), 1);
    CHECK_INT(r->n, 6);
    CHECK_STR(r->data[1], CHUNK("{\"tool_calls\":[{\"index\":0,\"id\":\"toolu_1\",\"type\":"
                                "\"function\",\"function\":{\"name\":\"now\",\"arguments\":"
                                "\"\"}}]}",
                                "null") "}");
    CHECK_STR(r->data[2], CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":"
                                "\"{}\"}}]}",
                                "null") "}");
    CHECK_STR(r->data[3], CHUNK("{\"content\":\"{\\\"city\\\":\\\"Paris\\\"}\"}", "null") "}");
    CHECK_STR(r->data[4], CHUNK("{}", "\"tool_calls\"") "}");
}

static void test_stream_finish_reasons(void)
{
    static const char *const reasons[][2] = {
        {"end_turn", "stop"},       {"stop_sequence", "stop"},     {"max_tokens", "length"},
        {"tool_use", "tool_calls"}, {"refusal", "content_filter"},
    };
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        struct run x;
        run_open(&x, STREAM_BODY);
        run_event(&x, "message_start", MSG_START);
        char ev[256], want[256];
        snprintf(ev, sizeof(ev),
                 "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"%s\"},"
                 "\"usage\":{\"output_tokens\":3}}",
                 reasons[i][0]);
        run_event(&x, "message_delta", ev);
        run_event(&x, "message_delta", ev); /* a second one only updates usage */
        run_event(&x, "message_stop", "{\"type\":\"message_stop\"}");
        CHECK_INT(run_close(&x), 1);
        CHECK_INT(x.rec.n, 3);
        snprintf(want, sizeof(want), "\"finish_reason\":\"%s\"", reasons[i][1]);
        CHECK_CONTAINS(x.rec.data[1], want);
        CHECK_STR(x.rec.data[2], "[DONE]");
    }
}

static void test_stream_errors(void)
{
    static const struct {
        const char *type;
        int retryable;
    } cases[] = {{"overloaded_error", 1},
                 {"api_error", 1},
                 {"rate_limit_error", 1},
                 {"invalid_request_error", 0},
                 {"permission_error", 0}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct run x;
        run_open(&x, STREAM_BODY);
        run_event(&x, "message_start", MSG_START);
        char ev[256];
        snprintf(ev, sizeof(ev),
                 "{\"type\":\"error\",\"error\":{\"type\":\"%s\",\"message\":"
                 "\"Overloaded\"}}",
                 cases[i].type);
        run_event(&x, "error", ev);
        CHECK_INT(x.rc, 0);
        CHECK_INT(run_close(&x), 0);
        CHECK_INT(x.rec.n, 2);
        CHECK_INT(x.rec.ci[1].kind, CHUNK_ERROR);
        CHECK_STR(x.rec.ci[1].error, "Overloaded");
        CHECK_INT(x.rec.ci[1].retryable, cases[i].retryable);
        CHECK_CONTAINS(x.rec.data[1], "{\"error\":{\"message\":\"Overloaded\"");
    }
    /* an error without a message still says something (the exchange logs it) */
    {
        struct run x;
        run_open(&x, STREAM_BODY);
        run_event(&x, "error", "{\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                               "\"message\":\"\"}}");
        CHECK_INT(x.rec.n, 1);
        CHECK_INT(x.rec.ci[0].kind, CHUNK_ERROR);
        CHECK_STR(x.rec.ci[0].error, "the provider reported an error");
        run_close(&x);
    }
    /* emit's nonzero value stops decoding and is returned */
    struct run x;
    run_open(&x, STREAM_BODY);
    x.rec.stop_at = 1;
    run_event(&x, "message_start", MSG_START);
    CHECK_INT(x.rc, 1);
    run_close(&x);
}

static void test_stream_truncated_and_malformed(void)
{
    /* cut after the finish chunk but before message_stop: not complete, no [DONE] */
    struct run x;
    run_open(&x, STREAM_BODY);
    run_event(&x, "message_start", MSG_START);
    run_event(&x, "content_block_delta",
              "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
              "\"text\":\"Hi\"}}");
    run_event(&x, "message_delta",
              "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":"
              "\"end_turn\"},\"usage\":{\"output_tokens\":1}}");
    CHECK_INT(run_close(&x), 0);
    CHECK_INT(x.rec.n, 3);
    CHECK(strcmp(x.rec.data[2], "[DONE]") != 0);

    /* nothing at all */
    run_open(&x, STREAM_BODY);
    CHECK_INT(run_close(&x), 0);
    CHECK_INT(x.rec.n, 0);

    static const char *const bad[][2] = {
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_del"},
        {"message_start", "not json"},
        {"message_start", "[1]"},
        {"message_start", "{\"type\":\"message_start\"}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                                "{\"type\":\"text_delta\",\"text\":7}}"},
        {"content_block_start", "{\"type\":\"content_block_start\",\"index\":0,"
                                "\"content_block\":{\"type\":\"tool_use\",\"name\":\"f\"}}"},
        {"content_block_delta", "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":"
                                "{\"type\":\"input_json_delta\",\"partial_json\":\"{\"}}"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        run_open(&x, STREAM_BODY);
        run_event(&x, bad[i][0], bad[i][1]);
        CHECK_INT(x.rc, LLMUX_EPROTO);
        CHECK_INT(x.rec.n, 0);
        CHECK_INT(run_close(&x), 0);
    }
    /* the type may come from the SSE event name alone; no message_delta: a finish chunk */
    run_open(&x, STREAM_BODY);
    run_event(&x, "message_stop", "{}");
    CHECK_INT(run_close(&x), 1);
    CHECK_INT(x.rec.n, 2);
    CHECK_CONTAINS(x.rec.data[0], "\"finish_reason\":\"stop\"");
    CHECK_INT(x.rec.ci[0].finish, 1);
    CHECK_STR(x.rec.data[1], "[DONE]");
}

static void test_stream_continuation(void)
{
    /* the prefill lost "  \n" at its end: the continuation's same leading bytes are dropped */
    const char *cases[][3] = {
        /* delivered tail, continuation events (| separated), text the client gets */
        {"one two  \n", " |", ""},
        {"one two  \n", " | \nthree", "three"},
        {"def f():\n", "\n    return 1", "    return 1"},
        {"one two", " three", " three"},
        {"one two ", "three", "three"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct run x;
        memset(&x, 0, sizeof(x));
        x.req = creq(STREAM_BODY, API_CHAT);
        x.req.prefix = cases[i][0];
        x.req.prefix_len = strlen(cases[i][0]);
        x.req.prefill = 1;
        x.s.req = &x.req;
        x.s.model = "claude-x";
        CHECK_INT(adapter_anthropic.stream_open(&x.s), 0);
        char events[128];
        snprintf(events, sizeof(events), "%s", cases[i][1]);
        for (char *save, *t = strtok_r(events, "|", &save); t; t = strtok_r(NULL, "|", &save)) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "type", "content_block_delta");
            cJSON *d = cJSON_AddObjectToObject(o, "delta");
            cJSON_AddStringToObject(d, "type", "text_delta");
            cJSON_AddStringToObject(d, "text", t);
            char *s = cJSON_PrintUnformatted(o);
            run_event(&x, "content_block_delta", s);
            free(s);
            cJSON_Delete(o);
        }
        run_close(&x);
        char got[128] = "";
        for (int k = 0; k < x.rec.n; k++)
            if (x.rec.ci[k].text)
                strcat(got, x.rec.ci[k].text);
        CHECK_STR(got, cases[i][2]);
        CHECK_INT(x.rc, 0);
    }
}

/* ---- errors ---- */

static void test_errors(void)
{
    static const struct {
        int status;
        const char *body;
        enum verdict v;
        const char *out; /* a piece of the translated body */
    } cases[] = {
        {429,
         "{\"type\":\"error\",\"error\":{\"type\":\"rate_limit_error\",\"message\":\"slow down\"}}",
         VERDICT_RATE_LIMIT,
         "{\"error\":{\"message\":\"slow down\",\"type\":\"rate_limit_error\","
         "\"param\":null,\"code\":null}}"},
        {529,
         "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}"
         "}",
         VERDICT_RATE_LIMIT, "\"type\":\"overloaded_error\""},
        {503, "{\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"busy\"}}",
         VERDICT_RATE_LIMIT, "busy"},
        {500, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"Internal\"}}",
         VERDICT_RETRY, "\"type\":\"api_error\""},
        {502, "<html>bad gateway</html>", VERDICT_RETRY,
         "{\"error\":{\"message\":\"the provider refused the request with status 502\","
         "\"type\":\"api_error\""},
        {401,
         "{\"type\":\"error\",\"error\":{\"type\":\"authentication_error\",\"message\":"
         "\"invalid x-api-key\"}}",
         VERDICT_RETRY, "authentication_error"},
        {403, "{\"type\":\"error\",\"error\":{\"type\":\"permission_error\",\"message\":\"no\"}}",
         VERDICT_RETRY, "permission_error"},
        {404,
         "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\",\"message\":\"model: "
         "claude-x\"}}",
         VERDICT_RETRY, "not_found_error"},
        {400,
         "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":"
         "\"prompt is too long: 250000 tokens > 200000 maximum\"}}",
         VERDICT_CONTEXT_LENGTH, "\"code\":\"context_length_exceeded\""},
        {400,
         "{\"type\":\"error\",\"error\":{\"type\":\"invalid_request_error\",\"message\":"
         "\"max_tokens: Field required\"}}",
         VERDICT_CLIENT,
         "{\"error\":{\"message\":\"max_tokens: Field required\",\"type\":"
         "\"invalid_request_error\",\"param\":null,\"code\":null}}"},
        {413, "{\"type\":\"error\",\"error\":{\"type\":\"request_too_large\",\"message\":\"big\"}}",
         VERDICT_CLIENT, "request_too_large"},
        {422, "", VERDICT_CLIENT, "\"type\":\"invalid_request_error\""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct buf out;
        buf_init(&out, 0);
        char msg[160];
        enum verdict v = adapter_anthropic.decode_error(
            cases[i].status, cases[i].body, strlen(cases[i].body), &out, msg, sizeof(msg));
        if (v != cases[i].v)
            fprintf(stderr, "case %zu\n", i);
        CHECK_INT(v, cases[i].v);
        buf_append(&out, "", 1);
        CHECK_CONTAINS(out.data, cases[i].out);
        cJSON *o = cJSON_Parse(out.data);
        CHECK(cJSON_IsString(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "error"), "message")));
        cJSON_Delete(o);
        char status[16];
        snprintf(status, sizeof(status), "status %d", cases[i].status);
        CHECK_CONTAINS(msg, status);
        buf_free(&out);
    }
}

static void test_kind_table(void)
{
    CHECK(adapter_for(PROVIDER_ANTHROPIC) == &adapter_anthropic);
    CHECK_STR(adapter_anthropic.kind, "anthropic");
    CHECK_INT(adapter_anthropic.prefill, 1);
}

int main(void)
{
    test_kind_table();
    test_encode_basic();
    test_encode_tools();
    test_encode_refused();
    test_encode_continuation();
    test_encode_response_format();
    test_encode_response_format_refused();
    test_decode_body();
    test_decode_response_format();
    test_stream_text();
    test_stream_tools();
    test_stream_response_format();
    test_stream_finish_reasons();
    test_stream_errors();
    test_stream_truncated_and_malformed();
    test_stream_continuation();
    test_errors();
    return check_report();
}
