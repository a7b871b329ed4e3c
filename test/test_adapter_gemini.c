/* The gemini adapter, golden: an OpenAI request in -> the exact upstream request out (path,
 * headers, body field by field); Gemini responses, stream events and errors in -> the exact
 * OpenAI bodies and chunks (with their chunk_info) out. Recorded chunks have their "created"
 * value replaced by 0 (it is the clock at stream_open). */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "llmux/adapter.h"
#include "llmux/errors.h"
#include "llmux/json.h"

#define KEY "AIza-secret-key"

static struct provider prov(const char *key)
{
    struct provider p;
    memset(&p, 0, sizeof(p));
    p.name = "gemini";
    p.kind = PROVIDER_GEMINI;
    p.tls = 1;
    p.host = "generativelanguage.googleapis.com";
    p.port = 443;
    p.base_path = "/v1beta";
    p.api_key = (char *)key;
    p.api_version = "";
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
    r.stream = ep != API_EMBEDDINGS && cJSON_IsTrue(cJSON_GetObjectItem(root, "stream"));
    r.include_usage = cJSON_IsTrue(
        cJSON_GetObjectItem(cJSON_GetObjectItem(root, "stream_options"), "include_usage"));
    cJSON_Delete(root);
    r.request_id = "req-1";
    return r;
}

static char head[4096];
static cJSON *encode_model(const struct provider *p, const char *model,
                           const struct canon_request *r, int *rc)
{
    struct upstream_request out;
    *rc = adapter_gemini.encode(p, model, strlen(model), r, &out);
    if (*rc)
        return NULL;
    snprintf(head, sizeof(head), "%.*s", (int)out.head.len, out.head.data);
    CHECK_INT(out.n, 2);
    char cl[64];
    snprintf(cl, sizeof(cl), "content-length: %zu\r\n", buf_size(&out.body));
    CHECK_CONTAINS(head, cl);
    CHECK(memmem(buf_head(&out.body), buf_size(&out.body), KEY, strlen(KEY)) == NULL);
    cJSON *body = cJSON_ParseWithLength(buf_head(&out.body), buf_size(&out.body));
    CHECK(body != NULL);
    upstream_request_free(&out);
    return body;
}

static cJSON *encode_ok(const struct provider *p, const char *json, enum api_endpoint ep)
{
    struct canon_request r = creq(json, ep);
    int rc;
    cJSON *b = encode_model(p, "gemini-2.0-flash", &r, &rc);
    CHECK_INT(rc, 0);
    return b;
}

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
        &p,
        "{\"model\":\"alias\",\"messages\":["
        "{\"role\":\"system\",\"content\":\"Be brief.\"},"
        "{\"role\":\"developer\",\"content\":\"Use French.\"},"
        "{\"role\":\"user\",\"content\":\"Hi\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Look:\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/jpeg;base64,/9j/4AAQ\"}},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"https://x.test/cat.png\"}}]},"
        "{\"role\":\"assistant\",\"content\":\"Un chat.\"}],"
        "\"temperature\":0.2,\"top_p\":0.8,\"max_tokens\":100,\"stop\":\"END\",\"seed\":7,"
        "\"response_format\":{\"type\":\"json_object\"},\"logprobs\":true}",
        API_CHAT);
    CHECK_CONTAINS(head, "POST /v1beta/models/gemini-2.0-flash:generateContent HTTP/1.1\r\n");
    CHECK_CONTAINS(head, "host: generativelanguage.googleapis.com\r\n");
    CHECK_CONTAINS(head, "x-goog-api-key: " KEY "\r\n");
    CHECK(strstr(head, "authorization") == NULL);
    CHECK(strstr(strstr(head, KEY) + 1, KEY) == NULL);
    CHECK(strstr(head, "?key=") == NULL);
    CHECK_STR(js(b, "systemInstruction"),
              "{\"parts\":[{\"text\":\"Be brief.\"},{\"text\":\"Use French.\"}]}");
    CHECK_STR(js(b, "contents"),
              "[{\"role\":\"user\",\"parts\":[{\"text\":\"Hi\"},{\"text\":\"Look:\"},"
              "{\"inlineData\":{\"mimeType\":\"image/jpeg\",\"data\":\"/9j/4AAQ\"}},"
              "{\"fileData\":{\"fileUri\":\"https://x.test/cat.png\"}}]},"
              "{\"role\":\"model\",\"parts\":[{\"text\":\"Un chat.\"}]}]");
    CHECK_STR(js(b, "generationConfig"),
              "{\"temperature\":0.2,\"topP\":0.8,\"maxOutputTokens\":100,\"seed\":7,"
              "\"stopSequences\":[\"END\"],\"responseMimeType\":\"application/json\"}");
    CHECK_STR(js(b, "model"), "(absent)");
    CHECK_STR(js(b, "tools"), "(absent)");
    CHECK_INT(cJSON_GetArraySize(b), 3);
    cJSON_Delete(b);

    /* streaming, no key, a model id with "models/" and characters to escape */
    p = prov(NULL);
    struct canon_request r =
        creq("{\"model\":\"a\",\"stream\":true,\"max_completion_tokens\":9,"
             "\"stop\":[\"x\",\"y\"],\"response_format\":{\"type\":"
             "\"json_schema\",\"json_schema\":{\"name\":\"n\",\"strict\":true,"
             "\"schema\":{\"type\":\"object\",\"additionalProperties\":false}}},"
             "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
             API_CHAT);
    int rc;
    b = encode_model(&p, "models/tuned a/b", &r, &rc);
    CHECK_INT(rc, 0);
    CHECK_CONTAINS(head, "POST /v1beta/models/tuned%20a%2Fb:streamGenerateContent?alt=sse "
                         "HTTP/1.1\r\n");
    CHECK_CONTAINS(head, "accept: text/event-stream\r\n");
    CHECK(strstr(head, "x-goog-api-key") == NULL);
    CHECK_STR(js(b, "generationConfig"),
              "{\"maxOutputTokens\":9,\"stopSequences\":[\"x\",\"y\"],\"responseMimeType\":"
              "\"application/json\",\"responseJsonSchema\":{\"type\":\"object\","
              "\"additionalProperties\":false}}");
    cJSON_Delete(b);

    /* nothing to configure: no generationConfig */
    b = encode_ok(&p, "{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                  API_CHAT);
    CHECK_STR(js(b, "generationConfig"), "(absent)");
    CHECK_STR(js(b, "systemInstruction"), "(absent)");
    cJSON_Delete(b);
}

static void test_encode_tools(void)
{
    struct provider p = prov(KEY);
    cJSON *b = encode_ok(
        &p,
        "{\"model\":\"a\",\"messages\":["
        "{\"role\":\"user\",\"content\":\"Weather in Paris and Rome?\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
        "{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
        "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_time\","
        "\"arguments\":\"{}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_0\",\"content\":\"{\\\"temp\\\":18}\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"noon\"},"
        "{\"role\":\"assistant\",\"content\":\"Again?\",\"tool_calls\":["
        "{\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"get_time\","
        "\"arguments\":\"\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_0\",\"content\":[{\"type\":\"text\","
        "\"text\":\"[1,2]\"}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"unknown\",\"name\":\"legacy\",\"content\":\"\"}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
        "\"description\":\"Weather\",\"parameters\":{\"type\":\"object\",\"properties\":"
        "{\"city\":{\"type\":\"string\"}},\"additionalProperties\":false}}},"
        "{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}],"
        "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"get_time\"}}}",
        API_CHAT);
    CHECK_STR(js(b, "contents"),
              "[{\"role\":\"user\",\"parts\":[{\"text\":\"Weather in Paris and Rome?\"}]},"
              "{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":\"get_weather\",\"args\":"
              "{\"city\":\"Paris\"}}},{\"functionCall\":{\"name\":\"get_time\",\"args\":{}}}]},"
              "{\"role\":\"user\",\"parts\":[{\"functionResponse\":{\"name\":\"get_weather\","
              "\"response\":{\"temp\":18}}},{\"functionResponse\":{\"name\":\"get_time\","
              "\"response\":{\"content\":\"noon\"}}}]},"
              "{\"role\":\"model\",\"parts\":[{\"text\":\"Again?\"},{\"functionCall\":{\"name\":"
              "\"get_time\",\"args\":{}}}]},"
              "{\"role\":\"user\",\"parts\":[{\"functionResponse\":{\"name\":\"get_time\","
              "\"response\":{\"content\":\"[1,2]\"}}},{\"functionResponse\":{\"name\":\"legacy\","
              "\"response\":{\"content\":\"\"}}}]}]");
    CHECK_STR(js(b, "tools"),
              "[{\"functionDeclarations\":[{\"name\":\"get_weather\",\"description\":\"Weather\","
              "\"parametersJsonSchema\":{\"type\":\"object\",\"properties\":{\"city\":{\"type\":"
              "\"string\"}},\"additionalProperties\":false}},{\"name\":\"get_time\"}]}]");
    CHECK_STR(js(b, "toolConfig"),
              "{\"functionCallingConfig\":{\"mode\":\"ANY\",\"allowedFunctionNames\":"
              "[\"get_time\"]}}");
    cJSON_Delete(b);

    static const char *const choices[][2] = {
        {"\"auto\"", "AUTO"}, {"\"none\"", "NONE"}, {"\"required\"", "ANY"}};
    for (size_t i = 0; i < 3; i++) {
        char json[512], want[128];
        snprintf(json, sizeof(json),
                 "{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
                 "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"now\"}}],"
                 "\"tool_choice\":%s}",
                 choices[i][0]);
        b = encode_ok(&p, json, API_CHAT);
        snprintf(want, sizeof(want), "{\"functionCallingConfig\":{\"mode\":\"%s\"}}",
                 choices[i][1]);
        CHECK_STR(js(b, "toolConfig"), want);
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
        {"{\"model\":\"a\",\"input\":[[1,2,3]]}", API_EMBEDDINGS, LLMUX_EKIND},
        {"{\"model\":\"a\",\"input\":[]}", API_EMBEDDINGS, UV_EINVAL},
        {"{\"model\":\"a\"}", API_EMBEDDINGS, UV_EINVAL},
        {"{\"model\":\"a\",\"n\":3,\"messages\":[]}", API_CHAT, LLMUX_EKIND},
        {"{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"file\","
         "\"file\":{}}]}]}",
         API_CHAT, LLMUX_EKIND},
        {"{\"model\":\"a\",\"messages\":[{\"role\":\"tool\",\"tool_call_id\":\"zz\",\"content\":"
         "\"orphan\"}]}",
         API_CHAT, UV_EINVAL},
        {"{\"model\":\"a\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"1\","
         "\"function\":{\"name\":\"f\",\"arguments\":\"[1]\"}}]}]}",
         API_CHAT, UV_EINVAL},
        {"{\"model\":\"a\",\"messages\":{}}", API_CHAT, UV_EINVAL},
        {"{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":7}]}", API_CHAT, UV_EINVAL},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct canon_request r = creq(cases[i].body, cases[i].ep);
        int rc;
        CHECK(encode_model(&p, "g", &r, &rc) == NULL);
        if (rc != cases[i].rc)
            fprintf(stderr, "case %zu\n", i);
        CHECK_INT(rc, cases[i].rc);
    }
}

static void test_encode_continuation(void)
{
    struct provider p = prov(KEY);
    struct canon_request r = creq("{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":"
                                  "\"Count\"}]}",
                                  API_CHAT);
    r.prefix = "one two ";
    r.prefix_len = strlen(r.prefix);
    r.prefill = 1;
    int rc;
    cJSON *b = encode_model(&p, "g", &r, &rc);
    CHECK_STR(js(b, "contents"), "[{\"role\":\"user\",\"parts\":[{\"text\":\"Count\"}]},"
                                 "{\"role\":\"model\",\"parts\":[{\"text\":\"one two \"}]}]");
    cJSON_Delete(b);
    r.prefill = 0;
    b = encode_model(&p, "g", &r, &rc);
    CHECK_STR(js(b, "contents"),
              "[{\"role\":\"user\",\"parts\":[{\"text\":\"Count\"}]},"
              "{\"role\":\"model\",\"parts\":[{\"text\":\"one two \"}]},"
              "{\"role\":\"user\",\"parts\":[{\"text\":\"" ADAPTER_CONTINUE_INSTRUCTION "\"}]}]");
    cJSON_Delete(b);
}

static void test_encode_embeddings(void)
{
    struct provider p = prov(KEY);
    cJSON *b = encode_ok(&p, "{\"model\":\"e\",\"input\":\"hello\"}", API_EMBEDDINGS);
    CHECK_CONTAINS(head, "POST /v1beta/models/gemini-2.0-flash:batchEmbedContents HTTP/1.1\r\n");
    CHECK_CONTAINS(head, "accept: application/json\r\n");
    CHECK_CONTAINS(head, "x-goog-api-key: " KEY "\r\n");
    CHECK_STR(js(b, NULL), "{\"requests\":[{\"model\":\"models/gemini-2.0-flash\",\"content\":"
                           "{\"parts\":[{\"text\":\"hello\"}]}}]}");
    cJSON_Delete(b);
    struct canon_request r =
        creq("{\"model\":\"e\",\"input\":[\"a\",\"b\"],\"dimensions\":8}", API_EMBEDDINGS);
    int rc;
    b = encode_model(&p, "models/text-embedding-004", &r, &rc);
    CHECK_CONTAINS(head, "POST /v1beta/models/text-embedding-004:batchEmbedContents ");
    CHECK_STR(js(b, NULL),
              "{\"requests\":[{\"model\":\"models/text-embedding-004\",\"content\":{\"parts\":"
              "[{\"text\":\"a\"}]},\"outputDimensionality\":8},{\"model\":"
              "\"models/text-embedding-004\",\"content\":{\"parts\":[{\"text\":\"b\"}]},"
              "\"outputDimensionality\":8}]}");
    cJSON_Delete(b);
}

/* ---- responses ---- */

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

static char out_text[8192];
static int decode(const char *req_body, enum api_endpoint ep, const char *body, struct usage *u)
{
    struct canon_request r = creq(req_body, ep);
    struct buf out;
    buf_init(&out, 0);
    int rc = adapter_gemini.decode_body(&r, "gemini-2.0-flash", body, strlen(body), &out, u);
    size_t n = buf_size(&out);
    buf_append(&out, "", 1);
    snprintf(out_text, sizeof(out_text), "%s", n ? norm(buf_head(&out)) : "");
    buf_free(&out);
    return rc;
}

#define CHAT "{\"model\":\"a\",\"messages\":[]}"

static void test_decode_body(void)
{
    struct usage u;
    CHECK_INT(decode(CHAT, API_CHAT,
                     "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"thinking...\","
                     "\"thought\":true},{\"text\":\"Hello \"},{\"text\":\"wörld\"}],\"role\":"
                     "\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{"
                     "\"promptTokenCount\":12,\"candidatesTokenCount\":5,\"thoughtsTokenCount\":3,"
                     "\"totalTokenCount\":20,\"cachedContentTokenCount\":4},\"modelVersion\":"
                     "\"gemini-2.0-flash-001\",\"responseId\":\"resp-1\"}",
                     &u),
              0);
    CHECK_STR(out_text,
              "{\"id\":\"resp-1\",\"object\":\"chat.completion\",\"created\":0,\"model\":"
              "\"gemini-2.0-flash-001\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
              "\"assistant\",\"content\":\"Hello wörld\"},\"finish_reason\":\"stop\"}],"
              "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":8,\"total_tokens\":20,"
              "\"prompt_tokens_details\":{\"cached_tokens\":4}}}");
    CHECK_INT(u.known, 1);
    CHECK_INT(u.prompt_tokens, 12);
    CHECK_INT(u.completion_tokens, 8);
    CHECK_INT(u.total_tokens, 20);
    CHECK_INT(u.cached_tokens, 4);

    /* function calls: ids generated (or Gemini's own), finish "tool_calls"; no responseId */
    CHECK_INT(decode(CHAT, API_CHAT,
                     "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":"
                     "\"get_weather\",\"args\":{\"city\":\"Paris\"}}},{\"functionCall\":{\"id\":"
                     "\"g-7\",\"name\":\"now\"}}],\"role\":\"model\"},\"finishReason\":\"STOP\"}]}",
                     &u),
              0);
    CHECK_CONTAINS(out_text, "\"id\":\"chatcmpl-");
    CHECK_CONTAINS(out_text, "\"model\":\"gemini-2.0-flash\"");
    CHECK_CONTAINS(out_text,
                   "\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":"
                   "\"call_0\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\","
                   "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},{\"id\":\"g-7\",\"type\":"
                   "\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"{}\"}}]},"
                   "\"finish_reason\":\"tool_calls\"}");
    CHECK_INT(u.known, 0);

    static const char *const reasons[][2] = {
        {"STOP", "stop"},
        {"MAX_TOKENS", "length"},
        {"SAFETY", "content_filter"},
        {"RECITATION", "content_filter"},
        {"BLOCKLIST", "content_filter"},
        {"PROHIBITED_CONTENT", "content_filter"},
        {"SPII", "content_filter"},
        {"OTHER", "stop"},
    };
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        char body[256], want[64];
        snprintf(body, sizeof(body),
                 "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]},"
                 "\"finishReason\":\"%s\"}]}",
                 reasons[i][0]);
        CHECK_INT(decode(CHAT, API_CHAT, body, &u), 0);
        snprintf(want, sizeof(want), "\"finish_reason\":\"%s\"", reasons[i][1]);
        CHECK_CONTAINS(out_text, want);
    }
    /* the prompt itself blocked: no candidates */
    CHECK_INT(decode(CHAT, API_CHAT, "{\"promptFeedback\":{\"blockReason\":\"SAFETY\"}}", &u), 0);
    CHECK_CONTAINS(out_text, "\"content\":null},\"finish_reason\":\"content_filter\"");

    CHECK_INT(decode(CHAT, API_CHAT, "{\"candidates\":[{\"content\":", &u), LLMUX_EPROTO);
    CHECK_INT(decode(CHAT, API_CHAT, "{\"usageMetadata\":{}}", &u), LLMUX_EPROTO);
    CHECK_INT(decode(CHAT, API_CHAT, "[]", &u), LLMUX_EPROTO);
    CHECK_INT(decode(CHAT, API_CHAT,
                     "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{}}]}}]}", &u),
              LLMUX_EPROTO);
    CHECK_STR(out_text, "");
}

static void test_decode_embeddings(void)
{
    struct usage u;
    CHECK_INT(decode("{\"model\":\"e\",\"input\":[\"a\",\"b\"]}", API_EMBEDDINGS,
                     "{\"embeddings\":[{\"values\":[0.5,-1]},{\"values\":[0,2.25]}]}", &u),
              0);
    CHECK_STR(out_text, "{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,"
                        "\"embedding\":[0.5,-1]},{\"object\":\"embedding\",\"index\":1,"
                        "\"embedding\":[0,2.25]}],\"model\":\"gemini-2.0-flash\",\"usage\":"
                        "{\"prompt_tokens\":0,\"total_tokens\":0}}");
    /* base64: little-endian float32 (0.5 = 00 00 00 3f, -1 = 00 00 80 bf) */
    CHECK_INT(decode("{\"model\":\"e\",\"input\":\"a\",\"encoding_format\":\"base64\"}",
                     API_EMBEDDINGS, "{\"embeddings\":[{\"values\":[0.5,-1]},{\"values\":[1]}]}",
                     &u),
              0);
    CHECK_CONTAINS(out_text, "\"index\":0,\"embedding\":\"AAAAPwAAgL8=\"}");
    CHECK_CONTAINS(out_text, "\"index\":1,\"embedding\":\"AACAPw==\"}");
    CHECK_INT(decode("{\"model\":\"e\",\"input\":\"a\"}", API_EMBEDDINGS, "{\"embedding\":{}}", &u),
              LLMUX_EPROTO);
    CHECK_INT(decode("{\"model\":\"e\",\"input\":\"a\"}", API_EMBEDDINGS,
                     "{\"embeddings\":[{\"values\":[\"x\"]}]}", &u),
              LLMUX_EPROTO);
}

/* ---- streams ---- */

#define MAX_CHUNKS 64
struct rec {
    int n;
    char data[MAX_CHUNKS][1024];
    struct chunk_info ci[MAX_CHUNKS];
    char text[MAX_CHUNKS][256];
    int stop_at;
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
    int rc;
};

static void run_open(struct run *x, const char *body)
{
    memset(x, 0, sizeof(*x));
    x->req = creq(body, API_CHAT);
    x->s.req = &x->req;
    x->s.model = "gemini-2.0-flash";
    CHECK_INT(adapter_gemini.stream_open(&x->s), 0);
}

static void run_event(struct run *x, const char *data)
{
    if (x->rc)
        return;
    x->rc = adapter_gemini.stream_event(&x->s, "", 0, data, strlen(data), on_chunk, &x->rec);
}

static int run_close(struct run *x)
{
    int done = adapter_gemini.stream_finish(&x->s, on_chunk, &x->rec);
    adapter_gemini.stream_close(&x->s);
    return done;
}

#define STREAM_BODY "{\"model\":\"a\",\"stream\":true,\"messages\":[]}"
#define USAGE_BODY                                                                                 \
    "{\"model\":\"a\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[]" \
    "}"
#define CHUNK(delta, finish)                                                                       \
    "{\"id\":\"r-1\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":"                \
    "\"gemini-2.0-flash-001\",\"choices\":[{\"index\":0,\"delta\":" delta                          \
    ",\"finish_reason\":" finish "}]"
#define EV(parts, extra)                                                                           \
    "{\"candidates\":[{\"content\":{\"parts\":[" parts "],\"role\":\"model\"}" extra               \
    ",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":7,\"candidatesTokenCount\":3,"         \
    "\"totalTokenCount\":10},\"modelVersion\":\"gemini-2.0-flash-001\",\"responseId\":\"r-1\"}"

static void test_stream_text(void)
{
    struct run x;
    run_open(&x, USAGE_BODY);
    run_event(&x, EV("{\"text\":\"Hel\"}", ""));
    run_event(&x, EV("{\"text\":\"lo wörld \\ud83d\\ude00 \"},{\"text\":\"日本\"}", ""));
    run_event(&x, EV("{\"text\":\"secret\",\"thought\":true}", ""));
    run_event(&x, EV("{\"text\":\"!\"}", ",\"finishReason\":\"STOP\""));
    CHECK_INT(x.rc, 0);
    CHECK_INT(run_close(&x), 1);
    struct rec *r = &x.rec;
    CHECK_INT(r->n, 8);
    CHECK_STR(r->data[0],
              CHUNK("{\"role\":\"assistant\",\"content\":\"\"}", "null") ",\"usage\":null}");
    CHECK_INT(r->ci[0].kind, CHUNK_PREAMBLE);
    CHECK_STR(r->ci[0].id, "r-1");
    CHECK_STR(r->ci[0].model, "gemini-2.0-flash-001");
    CHECK(r->ci[0].created > 1700000000);
    CHECK_STR(r->data[1], CHUNK("{\"content\":\"Hel\"}", "null") ",\"usage\":null}");
    CHECK_INT(r->ci[1].kind, CHUNK_CONTENT);
    CHECK_STR(r->ci[1].text, "Hel");
    CHECK_STR(r->ci[2].text, "lo wörld \xF0\x9F\x98\x80 ");
    CHECK_STR(r->ci[3].text, "日本");
    CHECK_STR(r->data[4], CHUNK("{\"content\":\"!\"}", "null") ",\"usage\":null}");
    CHECK_STR(r->data[5], CHUNK("{}", "\"stop\"") ",\"usage\":null}");
    CHECK_INT(r->ci[5].finish, 1);
    CHECK(r->ci[5].text == NULL);
    CHECK_STR(r->data[6], "{\"id\":\"r-1\",\"object\":\"chat.completion.chunk\",\"created\":0,"
                          "\"model\":\"gemini-2.0-flash-001\",\"choices\":[],\"usage\":{"
                          "\"prompt_tokens\":7,\"completion_tokens\":3,\"total_tokens\":10,"
                          "\"prompt_tokens_details\":{\"cached_tokens\":0}}}");
    CHECK_INT(r->ci[6].kind, CHUNK_CONTENT);
    CHECK_INT(r->ci[6].usage.known, 1);
    CHECK_INT(r->ci[6].usage.total_tokens, 10);
    CHECK_STR(r->data[7], "[DONE]");
    CHECK_INT(r->ci[7].kind, CHUNK_DONE);
}

static void test_stream_tools(void)
{
    struct run x;
    run_open(&x, STREAM_BODY);
    run_event(&x, EV("{\"text\":\"Checking.\"}", ""));
    run_event(&x, EV("{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"city\":\"Paris\","
                     "\"unit\":\"°C\"}}},{\"functionCall\":{\"name\":\"now\"}}",
                     ",\"finishReason\":\"STOP\""));
    CHECK_INT(x.rc, 0);
    CHECK_INT(run_close(&x), 1);
    struct rec *r = &x.rec;
    CHECK_INT(r->n, 6);
    CHECK_STR(r->data[2], CHUNK("{\"tool_calls\":[{\"index\":0,\"id\":\"call_0\",\"type\":"
                                "\"function\",\"function\":{\"name\":\"get_weather\","
                                "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\",\\\"unit\\\":"
                                "\\\"°C\\\"}\"}}]}",
                                "null") "}");
    CHECK_INT(r->ci[2].tool_call, 1);
    CHECK(r->ci[2].text == NULL);
    CHECK_STR(r->data[3], CHUNK("{\"tool_calls\":[{\"index\":1,\"id\":\"call_1\",\"type\":"
                                "\"function\",\"function\":{\"name\":\"now\",\"arguments\":"
                                "\"{}\"}}]}",
                                "null") "}");
    CHECK_STR(r->data[4], CHUNK("{}", "\"tool_calls\"") "}");
    CHECK_STR(r->data[5], "[DONE]");
    CHECK_INT(r->ci[5].usage.known, 1); /* not asked for, still reported to the exchange */
    CHECK_INT(r->ci[5].usage.prompt_tokens, 7);
}

/* Gemini 3 refuses a function-calling turn whose functionCall parts lost their
 * thoughtSignature: it rides out on the tool call as extra_content.google.thought_signature
 * (Google's OpenAI-compatible shape) and comes back as the part's thoughtSignature. */
#define SIG_PARTS                                                                                  \
    "{\"functionCall\":{\"name\":\"get_weather\",\"args\":{\"city\":\"Paris\"}},"                  \
    "\"thoughtSignature\":\"CiQB0e2Kb+sig/1==\"},{\"functionCall\":{\"name\":\"now\",\"args\":{}}}"
#define SIG_CALLS                                                                                  \
    "\"tool_calls\":[{\"index\":0,\"id\":\"call_0\",\"type\":\"function\",\"function\":{\"name\":" \
    "\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"},\"extra_content\":{"          \
    "\"google\":{\"thought_signature\":\"CiQB0e2Kb+sig/1==\"}}},{\"index\":1,\"id\":\"call_1\","   \
    "\"type\":\"function\",\"function\":{\"name\":\"now\",\"arguments\":\"{}\"}}]"

static void test_thought_signature(void)
{
    struct usage u;
    CHECK_INT(decode(CHAT, API_CHAT,
                     "{\"candidates\":[{\"content\":{\"parts\":[" SIG_PARTS "],\"role\":\"model\"},"
                     "\"finishReason\":\"STOP\"}],\"responseId\":\"r-2\"}",
                     &u),
              0);
    CHECK_CONTAINS(out_text,
                   "\"tool_calls\":[{\"id\":\"call_0\",\"type\":\"function\",\"function\":{"
                   "\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"},"
                   "\"extra_content\":{\"google\":{\"thought_signature\":\"CiQB0e2Kb+sig/1==\"}}},"
                   "{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"now\","
                   "\"arguments\":\"{}\"}}]");

    struct run x;
    run_open(&x, STREAM_BODY);
    run_event(&x, EV(SIG_PARTS, ",\"finishReason\":\"STOP\""));
    CHECK_INT(x.rc, 0);
    CHECK_INT(run_close(&x), 1);
    CHECK_INT(x.rec.n, 5);
    CHECK_STR(x.rec.data[1], CHUNK("{\"tool_calls\":[{\"index\":0,\"id\":\"call_0\",\"type\":"
                                   "\"function\",\"function\":{\"name\":\"get_weather\","
                                   "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"},"
                                   "\"extra_content\":{\"google\":{\"thought_signature\":"
                                   "\"CiQB0e2Kb+sig/1==\"}}}]}",
                                   "null") "}");
    CHECK(strstr(x.rec.data[2], "extra_content") == NULL);

    /* the next turn: the assistant message as the client keeps it, signature back in place */
    struct provider p = prov(KEY);
    cJSON *b = encode_ok(&p,
                         "{\"model\":\"a\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
                         "{\"role\":\"assistant\",\"content\":null," SIG_CALLS "},"
                         "{\"role\":\"tool\",\"tool_call_id\":\"call_0\",\"content\":\"18C\"},"
                         "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"noon\"}]}",
                         API_CHAT);
    cJSON *model = cJSON_GetArrayItem(cJSON_GetObjectItem(b, "contents"), 1);
    CHECK_STR(js(model, NULL), "{\"role\":\"model\",\"parts\":[" SIG_PARTS "]}");
    cJSON_Delete(b);
    /* a signature that is not a string is not Gemini's: left out */
    b = encode_ok(&p,
                  "{\"model\":\"a\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":"
                  "\"c\",\"function\":{\"name\":\"now\"},\"extra_content\":{\"google\":{"
                  "\"thought_signature\":7}}}]}]}",
                  API_CHAT);
    CHECK_STR(js(b, "contents"), "[{\"role\":\"model\",\"parts\":[{\"functionCall\":{\"name\":"
                                 "\"now\",\"args\":{}}}]}]");
    cJSON_Delete(b);
}

static void test_stream_finish_reasons(void)
{
    static const char *const reasons[][2] = {
        {"STOP", "stop"},
        {"MAX_TOKENS", "length"},
        {"SAFETY", "content_filter"},
        {"RECITATION", "content_filter"},
        {"BLOCKLIST", "content_filter"},
        {"PROHIBITED_CONTENT", "content_filter"},
        {"SPII", "content_filter"},
    };
    for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++) {
        struct run x;
        run_open(&x, STREAM_BODY);
        char ev[512], want[64];
        snprintf(ev, sizeof(ev), "{\"candidates\":[{\"finishReason\":\"%s\"}]}", reasons[i][0]);
        run_event(&x, ev);
        run_event(&x, ev); /* reported once */
        CHECK_INT(run_close(&x), 1);
        CHECK_INT(x.rec.n, 3);
        snprintf(want, sizeof(want), "\"finish_reason\":\"%s\"", reasons[i][1]);
        CHECK_CONTAINS(x.rec.data[1], want);
        CHECK_STR(x.rec.data[2], "[DONE]");
        CHECK_INT(x.rec.ci[2].usage.known, 0);
    }
    /* a blocked prompt: content_filter, the stream completes */
    struct run x;
    run_open(&x, STREAM_BODY);
    run_event(&x, "{\"promptFeedback\":{\"blockReason\":\"OTHER\"}}");
    CHECK_INT(run_close(&x), 1);
    CHECK_INT(x.rec.n, 3);
    CHECK_CONTAINS(x.rec.data[1], "\"finish_reason\":\"content_filter\"");
}

static void test_stream_errors_and_truncation(void)
{
    static const struct {
        const char *ev;
        int retryable;
    } cases[] = {
        {"{\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":"
         "\"UNAVAILABLE\"}}",
         1},
        {"[{\"error\":{\"code\":429,\"message\":\"Quota\",\"status\":\"RESOURCE_EXHAUSTED\"}}]", 1},
        {"{\"error\":{\"code\":400,\"message\":\"Bad\",\"status\":\"INVALID_ARGUMENT\"}}", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct run x;
        run_open(&x, STREAM_BODY);
        run_event(&x, EV("{\"text\":\"Hi\"}", ""));
        run_event(&x, cases[i].ev);
        CHECK_INT(x.rc, 0);
        CHECK_INT(run_close(&x), 0);
        CHECK_INT(x.rec.n, 3);
        CHECK_INT(x.rec.ci[2].kind, CHUNK_ERROR);
        CHECK_INT(x.rec.ci[2].retryable, cases[i].retryable);
        CHECK(x.rec.ci[2].error[0] != 0);
        CHECK_CONTAINS(x.rec.data[2], "{\"error\":{\"message\":");
    }
    /* cut before any finishReason: not complete, no [DONE] */
    struct run x;
    run_open(&x, STREAM_BODY);
    run_event(&x, EV("{\"text\":\"Hi\"}", ""));
    CHECK_INT(run_close(&x), 0);
    CHECK_INT(x.rec.n, 2);
    run_open(&x, STREAM_BODY);
    CHECK_INT(run_close(&x), 0);
    CHECK_INT(x.rec.n, 0);

    static const char *const bad[] = {
        "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":",
        "data",
        "42",
        "[]",
        "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"args\":{}}}]}}]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        run_open(&x, STREAM_BODY);
        run_event(&x, bad[i]);
        CHECK_INT(x.rc, LLMUX_EPROTO);
        CHECK_INT(run_close(&x), 0);
    }
    /* emit's nonzero value stops decoding and is returned */
    run_open(&x, STREAM_BODY);
    x.rec.stop_at = 2;
    run_event(&x, EV("{\"text\":\"a\"},{\"text\":\"b\"}", ""));
    CHECK_INT(x.rc, 1);
    CHECK_INT(x.rec.n, 2);
    run_close(&x);
}

/* ---- errors ---- */

static void test_errors(void)
{
    static const struct {
        int status;
        const char *body;
        enum verdict v;
        const char *out;
    } cases[] = {
        {429,
         "{\"error\":{\"code\":429,\"message\":\"Resource has been exhausted\",\"status\":"
         "\"RESOURCE_EXHAUSTED\"}}",
         VERDICT_RATE_LIMIT,
         "{\"error\":{\"message\":\"Resource has been exhausted\",\"type\":\"rate_limit_error\","
         "\"param\":null,\"code\":\"RESOURCE_EXHAUSTED\"}}"},
        {503, "{\"error\":{\"code\":503,\"message\":\"overloaded\",\"status\":\"UNAVAILABLE\"}}",
         VERDICT_RETRY, "\"type\":\"server_error\""},
        {500, "[{\"error\":{\"code\":500,\"message\":\"internal\",\"status\":\"INTERNAL\"}}]",
         VERDICT_RETRY, "\"message\":\"internal\""},
        {502, "<html></html>", VERDICT_RETRY,
         "{\"error\":{\"message\":\"the provider refused the request with status 502\","
         "\"type\":\"server_error\",\"param\":null,\"code\":null}}"},
        {401, "{\"error\":{\"code\":401,\"message\":\"no\",\"status\":\"UNAUTHENTICATED\"}}",
         VERDICT_RETRY, "authentication_error"},
        {403, "{\"error\":{\"code\":403,\"message\":\"no\",\"status\":\"PERMISSION_DENIED\"}}",
         VERDICT_RETRY, "permission_error"},
        {404,
         "{\"error\":{\"code\":404,\"message\":\"models/x is not found\",\"status\":"
         "\"NOT_FOUND\"}}",
         VERDICT_RETRY, "not_found_error"},
        {400,
         "{\"error\":{\"code\":400,\"message\":\"API key not valid. Please pass a valid API "
         "key.\",\"status\":\"INVALID_ARGUMENT\",\"details\":[{\"reason\":"
         "\"API_KEY_INVALID\"}]}}",
         VERDICT_RETRY, "invalid_request_error"},
        {400,
         "{\"error\":{\"code\":400,\"message\":\"The input token count (1200000) exceeds the "
         "maximum number of tokens allowed (1048576).\",\"status\":\"INVALID_ARGUMENT\"}}",
         VERDICT_CONTEXT_LENGTH, "\"code\":\"context_length_exceeded\""},
        {400,
         "{\"error\":{\"code\":400,\"message\":\"Invalid value at 'contents'\",\"status\":"
         "\"INVALID_ARGUMENT\"}}",
         VERDICT_CLIENT,
         "{\"error\":{\"message\":\"Invalid value at 'contents'\",\"type\":"
         "\"invalid_request_error\",\"param\":null,\"code\":\"INVALID_ARGUMENT\"}}"},
        {413, "", VERDICT_CLIENT, "invalid_request_error"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct buf out;
        buf_init(&out, 0);
        char msg[160];
        enum verdict v = adapter_gemini.decode_error(cases[i].status, cases[i].body,
                                                     strlen(cases[i].body), &out, msg, sizeof(msg));
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
    CHECK(adapter_for(PROVIDER_GEMINI) == &adapter_gemini);
    CHECK_STR(adapter_gemini.kind, "gemini");
    CHECK_INT(adapter_gemini.prefill, 1);
}

int main(void)
{
    test_kind_table();
    test_encode_basic();
    test_encode_tools();
    test_encode_refused();
    test_encode_continuation();
    test_encode_embeddings();
    test_decode_body();
    test_decode_embeddings();
    test_stream_text();
    test_stream_tools();
    test_thought_signature();
    test_stream_finish_reasons();
    test_stream_errors_and_truncation();
    test_errors();
    return check_report();
}
