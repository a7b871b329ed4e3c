/* test_cache: the response cache's pieces (src/cache.c) without a gateway: the memory store's
 * expiry (an injected clock), LRU eviction by bytes and limit changes; the key (what is in it
 * and what is not); entries; which answers may be kept; a stream captured into a body and that
 * body replayed as a stream, text and tool calls unchanged. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "llmux/cache.h"
#include "llmux/errors.h"

static uint8_t key_n(int n, uint8_t k[CACHE_KEY_LEN])
{
    memset(k, 0, CACHE_KEY_LEN);
    memcpy(k, &n, sizeof(n));
    return k[0];
}

static int has(struct cache_store *s, int n, uint64_t now)
{
    uint8_t k[CACHE_KEY_LEN];
    key_n(n, k);
    const char *blob;
    size_t len;
    return s->ops->get(s, k, now, &blob, &len) == 0;
}

static int put(struct cache_store *s, int n, size_t len, uint64_t now, uint64_t ttl)
{
    uint8_t k[CACHE_KEY_LEN];
    key_n(n, k);
    char *blob = malloc(len);
    memset(blob, 'a' + n % 26, len);
    int rc = s->ops->put(s, k, blob, len, now, ttl);
    free(blob);
    return rc;
}

static void test_store_expiry(void)
{
    struct cache_store *s = cache_memory_new(1 << 20);
    struct cache_store_stats st;
    CHECK(!has(s, 1, 1000)); /* empty: no table yet */
    CHECK_INT(put(s, 1, 100, 1000, 500), 0);
    uint8_t k[CACHE_KEY_LEN];
    key_n(1, k);
    const char *blob;
    size_t len;
    CHECK_INT(s->ops->get(s, k, 1499, &blob, &len), 0);
    CHECK_INT(len, 100);
    CHECK(blob[0] == 'b' && blob[99] == 'b');
    CHECK_INT(s->ops->get(s, k, 1500, &blob, &len), UV_ENOENT); /* expired at now + ttl */
    s->ops->stats(s, &st);
    CHECK_INT(st.entries, 0); /* dropped when found expired */
    CHECK_INT(st.bytes, 0);
    /* a put replaces, with the new time to live */
    CHECK_INT(put(s, 2, 10, 0, 100), 0);
    CHECK_INT(put(s, 2, 20, 50, 1000), 0);
    CHECK(has(s, 2, 500));
    s->ops->stats(s, &st);
    CHECK_INT(st.entries, 1);
    s->ops->free(s);
}

static void test_store_lru(void)
{
    /* room for exactly three entries of this size */
    struct cache_store *probe = cache_memory_new(1 << 20);
    struct cache_store_stats st;
    put(probe, 0, 1000, 0, 1000);
    probe->ops->stats(probe, &st);
    size_t one = (size_t)st.bytes;
    CHECK(one > 1000 && one < 1200); /* the blob and a little bookkeeping */
    probe->ops->free(probe);

    struct cache_store *s = cache_memory_new(3 * one);
    for (int i = 1; i <= 3; i++)
        CHECK_INT(put(s, i, 1000, 0, 1000), 0);
    CHECK(has(s, 1, 0)); /* 1 is now the most recently used: 2 is the oldest */
    CHECK_INT(put(s, 4, 1000, 0, 1000), 0);
    CHECK(!has(s, 2, 0));
    CHECK(has(s, 1, 0) && has(s, 3, 0) && has(s, 4, 0));
    s->ops->stats(s, &st);
    CHECK_INT(st.entries, 3);
    CHECK_INT(st.evictions, 1);
    CHECK(st.bytes <= 3 * one);
    /* a larger entry evicts as many as it needs, oldest first */
    CHECK_INT(put(s, 5, 2000, 0, 1000), 0);
    CHECK(!has(s, 3, 0) && !has(s, 1, 0) && has(s, 4, 0) && has(s, 5, 0));
    /* one that can never fit is refused and evicts nothing */
    CHECK_INT(put(s, 6, 4 * one, 0, 1000), UV_E2BIG);
    CHECK(has(s, 4, 0) && has(s, 5, 0));
    /* a lower limit (a reload) evicts at once */
    s->ops->limit(s, one + 10);
    s->ops->stats(s, &st);
    CHECK_INT(st.entries, 0 + has(s, 5, 0) + has(s, 4, 0));
    CHECK(st.bytes <= one + 10);
    /* many entries: the table grows, every one is found */
    s->ops->limit(s, 1 << 24);
    for (int i = 100; i < 1100; i++)
        put(s, i, 10, 0, 1000);
    int found = 0;
    for (int i = 100; i < 1100; i++)
        found += has(s, i, 0);
    CHECK_INT(found, 1000);
    s->ops->free(s);
}

static void test_key(void)
{
    uint8_t a[CACHE_KEY_LEN], b[CACHE_KEY_LEN];
    const char *body = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
    cache_key("chat", "m", "", body, strlen(body), a);
    const char *streamed = "{\"model\":\"m\", \"stream\":true,\"messages\":[{\"role\":\"user\","
                           "\"content\":\"hi\"}],\"stream_options\":{\"include_usage\":true}}";
    cache_key("chat", "m", "", streamed, strlen(streamed), b);
    CHECK(memcmp(a, b, CACHE_KEY_LEN) == 0); /* stream members and spacing do not count */
    cache_key("chat", "m", "team-a", body, strlen(body), b);
    CHECK(memcmp(a, b, CACHE_KEY_LEN) != 0); /* the gateway key's name does */
    cache_key("chat", "m2", "", body, strlen(body), b);
    CHECK(memcmp(a, b, CACHE_KEY_LEN) != 0); /* the alias does */
    cache_key("chat", "m", NULL, body, strlen(body), b);
    CHECK(memcmp(a, b, CACHE_KEY_LEN) == 0); /* no key name is "" */
    const char *other = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
                        "\"temperature\":0}";
    cache_key("chat", "m", "", other, strlen(other), b);
    CHECK(memcmp(a, b, CACHE_KEY_LEN) != 0); /* every other member does */
    cache_key("ch", "atm", "", body, strlen(body), b);
    CHECK(memcmp(a, b, CACHE_KEY_LEN) != 0); /* fields are delimited */
}

static void test_entry(void)
{
    struct buf b;
    buf_init(&b, 0);
    CHECK_INT(cache_entry_make(1733100000123ull, "{\"x\":1}", 7, &b), 0);
    uint64_t at;
    const char *body;
    size_t len;
    CHECK_INT(cache_entry_open(buf_head(&b), buf_size(&b), &at, &body, &len), 0);
    CHECK(at == 1733100000123ull);
    CHECK_INT(len, 7);
    CHECK(memcmp(body, "{\"x\":1}", 7) == 0);
    CHECK_INT(cache_entry_open("{\"x\":1}", 7, &at, &body, &len), LLMUX_EPROTO);
    CHECK_INT(cache_entry_open("LLMUXC1 12", 10, &at, &body, &len), LLMUX_EPROTO);
    buf_free(&b);
}

#define ANSWER(msg, fin)                                                                           \
    "{\"id\":\"c1\",\"object\":\"chat.completion\",\"created\":5,\"model\":\"u\",\"choices\":[{"   \
    "\"index\":0,\"message\":" msg ",\"finish_reason\":" fin "}],\"usage\":{\"prompt_tokens\":3,"  \
    "\"completion_tokens\":4,\"total_tokens\":7}}"
#define CALL(args)                                                                                 \
    "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":"        \
    "\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"" args "\"}}]}"

static int storable(const char *s)
{
    return cache_storable(s, strlen(s));
}

static void test_storable(void)
{
    CHECK(storable(ANSWER("{\"role\":\"assistant\",\"content\":\"hi\"}", "\"stop\"")));
    CHECK(storable(ANSWER("{\"role\":\"assistant\",\"content\":\"hi\"}", "\"length\"")));
    CHECK(storable(ANSWER(CALL("{\\\"a\\\":1}"), "\"tool_calls\"")));
    CHECK(!storable(ANSWER(CALL("{\\\"a\\\":"), "\"tool_calls\""))); /* arguments cut */
    CHECK(!storable(ANSWER(CALL("{\\\"a\\\":1}"), "\"length\"")));
    CHECK(!storable(ANSWER("{\"role\":\"assistant\",\"content\":\"hi\"}", "null")));
    CHECK(!storable(ANSWER("{\"role\":\"assistant\",\"content\":\"hi\"}", "\"error\"")));
    CHECK(!storable("{\"error\":{\"message\":\"x\"}}"));
    CHECK(!storable("{\"choices\":[]}"));
    CHECK(!storable("not json"));
    CHECK(!storable("{\"choices\":[{\"index\":0,\"message\":{},\"finish_reason\":\"stop\"},"
                    "{\"index\":1,\"message\":{},\"finish_reason\":\"stop\"}]}")); /* n > 1 */
}

/* A replayed stream, as the client gets it. */
struct replayed {
    struct buf sse;
    struct buf text;
    int chunks, usage_chunks, done;
};

static int on_emit(void *ctx, const char *data, size_t len, const struct chunk_info *ci)
{
    struct replayed *r = ctx;
    buf_append(&r->sse, data, len);
    buf_append(&r->sse, "\n", 1);
    r->chunks++;
    if (ci->kind == CHUNK_DONE)
        r->done++;
    if (ci->text)
        buf_append(&r->text, ci->text, ci->text_len);
    if (ci->usage.known && ci->kind == CHUNK_CONTENT)
        r->usage_chunks++;
    return 0;
}

/* Feed a replay's chunks (one per line) into a capture: the body they add up to. */
static char *recapture(const char *sse, const struct usage *u)
{
    struct cache_capture *c = cache_capture_new();
    const char *p = sse;
    int first = 1;
    while (*p) {
        const char *nl = strchr(p, '\n');
        if (!first) /* the role chunk is a preamble: the exchange holds it back, uncaptured */
            cache_capture_chunk(c, p, (size_t)(nl - p));
        first = 0;
        p = nl + 1;
    }
    struct buf b;
    buf_init(&b, 0);
    int rc = cache_capture_body(c, u, &b);
    cache_capture_free(c);
    size_t len;
    char *out = rc == 0 ? buf_steal(&b, &len) : NULL;
    buf_free(&b);
    return out;
}

static void test_capture_replay(void)
{
    /* text with escapes and non-ASCII, through replay, capture and replay again */
    const char *body =
        ANSWER("{\"role\":\"assistant\",\"content\":\"caf\\u00e9 \\\"q\\\"\\n\\ud83d\\ude00 end\"}",
               "\"stop\"");
    struct replayed r;
    memset(&r, 0, sizeof(r));
    buf_init(&r.sse, 0);
    buf_init(&r.text, 0);
    CHECK_INT(cache_replay_stream(body, strlen(body), 1, on_emit, &r), 0);
    CHECK_INT(r.chunks, 5); /* role, content, finish, usage, [DONE] */
    CHECK_INT(r.usage_chunks, 1);
    CHECK_INT(r.done, 1);
    buf_append(&r.text, "", 1);
    CHECK_STR(buf_head(&r.text), "caf\xc3\xa9 \"q\"\n\xf0\x9f\x98\x80 end");
    buf_append(&r.sse, "", 1);
    CHECK(strstr(buf_head(&r.sse),
                 "{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":5,"
                 "\"model\":\"u\",\"choices\":[{\"index\":0,\"delta\":{\"role\":"
                 "\"assistant\",\"content\":\"\"},\"finish_reason\":null}],"
                 "\"usage\":null}") == buf_head(&r.sse));
    CHECK(strstr(buf_head(&r.sse), "\"finish_reason\":\"stop\"") != NULL);
    CHECK(strstr(buf_head(&r.sse), "\n[DONE]\n") != NULL);
    char *again = recapture(buf_head(&r.sse), NULL);
    CHECK(again != NULL);
    cJSON *x = cJSON_Parse(again), *y = cJSON_Parse(body);
    cJSON *ux = cJSON_GetObjectItem(x, "usage"), *uy = cJSON_GetObjectItem(y, "usage");
    static const char *const counts[] = {"prompt_tokens", "completion_tokens", "total_tokens"};
    for (int i = 0; i < 3; i++)
        CHECK_INT(cJSON_GetObjectItem(ux, counts[i])->valueint,
                  cJSON_GetObjectItem(uy, counts[i])->valueint);
    cJSON_DeleteItemFromObject(x, "usage"); /* replayed with prompt_tokens_details added */
    cJSON_DeleteItemFromObject(y, "usage");
    CHECK(cJSON_Compare(x, y, 1)); /* the same answer */
    cJSON_Delete(x);
    cJSON_Delete(y);
    free(again);
    buf_free(&r.sse);
    buf_free(&r.text);

    /* a tool call without usage asked: no usage chunk; captured with the usage given */
    const char *call = ANSWER(CALL("{\\\"city\\\":\\\"Paris\\\"}"), "\"tool_calls\"");
    memset(&r, 0, sizeof(r));
    buf_init(&r.sse, 0);
    CHECK_INT(cache_replay_stream(call, strlen(call), 0, on_emit, &r), 0);
    CHECK_INT(r.chunks, 4); /* role, the call, finish, [DONE] */
    CHECK_INT(r.usage_chunks, 0);
    buf_append(&r.sse, "", 1);
    CHECK(strstr(buf_head(&r.sse), "\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\","
                                   "\"function\":{\"name\":\"f\",\"arguments\":"
                                   "\"{\\\"city\\\":\\\"Paris\\\"}\"},\"index\":0}]") != NULL);
    CHECK(recapture(buf_head(&r.sse), NULL) == NULL); /* no usage anywhere: not kept */
    struct usage u = {.prompt_tokens = 3, .completion_tokens = 4, .total_tokens = 7, .known = 1};
    again = recapture(buf_head(&r.sse), &u);
    CHECK(again != NULL);
    CHECK(again && cache_storable(again, strlen(again)));
    x = cJSON_Parse(again);
    y = cJSON_Parse(call);
    cJSON_DeleteItemFromObject(x, "usage"); /* given as prompt_tokens_details too */
    cJSON_DeleteItemFromObject(y, "usage");
    CHECK(cJSON_Compare(x, y, 1));
    cJSON_Delete(x);
    cJSON_Delete(y);
    free(again);
    buf_free(&r.sse);

    /* arguments in pieces, a second call, another choice */
    struct cache_capture *c = cache_capture_new();
    const char *parts[] = {
        "{\"id\":\"s\",\"created\":1,\"model\":\"u\",\"choices\":[{\"index\":0,\"delta\":{\"tool_"
        "calls\":"
        "[{\"index\":0,\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\","
        "\"arguments\":\"\"}}]}}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{"
        "\"arguments\":\"{\\\"x\\\"\"}}]}}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{"
        "\"arguments\":\":1}\"}}]}}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"b\",\"type\":"
        "\"function\",\"function\":{\"name\":\"g\",\"arguments\":\"{}\"}}]}}]}",
        "{\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}",
        "{\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2,\"total_tokens\":3}"
        "}",
        "[DONE]",
    };
    for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++)
        cache_capture_chunk(c, parts[i], strlen(parts[i]));
    struct buf b;
    buf_init(&b, 0);
    CHECK_INT(cache_capture_body(c, NULL, &b), 0);
    buf_append(&b, "", 1);
    CHECK_STR(
        buf_head(&b),
        "{\"id\":\"s\",\"object\":\"chat.completion\",\"created\":1,\"model\":\"u\",\"choices\":"
        "[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":null,\"tool_calls\":["
        "{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":"
        "\"{\\\"x\\\":1}\"}},{\"id\":\"b\",\"type\":\"function\",\"function\":{\"name\":\"g\","
        "\"arguments\":\"{}\"}}]},\"finish_reason\":\"tool_calls\"}],\"usage\":{\"prompt_tokens\":"
        "1,"
        "\"completion_tokens\":2,\"total_tokens\":3}}");
    buf_free(&b);
    const char *second = "{\"choices\":[{\"index\":1,\"delta\":{\"content\":\"x\"}}]}";
    cache_capture_chunk(c, second, strlen(second));
    buf_init(&b, 0);
    CHECK_INT(cache_capture_body(c, NULL, &b), LLMUX_EPROTO); /* n > 1 */
    buf_free(&b);
    cache_capture_free(c);

    /* a stream that never finished is not an answer */
    c = cache_capture_new();
    const char *half = "{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"w0 \"}}]}";
    cache_capture_chunk(c, half, strlen(half));
    buf_init(&b, 0);
    CHECK_INT(cache_capture_body(c, &u, &b), LLMUX_EPROTO);
    buf_free(&b);
    cache_capture_free(c);

    CHECK_INT(cache_replay_stream("{\"error\":1}", 11, 1, on_emit, &r), LLMUX_EPROTO);
}

int main(void)
{
    test_store_expiry();
    test_store_lru();
    test_key();
    test_entry();
    test_storable();
    test_capture_replay();
    return check_report();
}
