/* cache: keys, entries, the memory store, stream capture and replay. See include/llmux/cache.h.
 *
 * The memory store: entries are single allocations (bookkeeping, then the blob) in a chained
 * hash table (by the key's first 8 bytes: SHA-256 is uniform) and on one LRU list, most
 * recently used first. `bytes` counts each entry's whole allocation; a put evicts from the
 * LRU tail until the new entry fits under `max_bytes`. An expired entry is dropped when a get
 * finds it (or when the LRU reaches it). The table is made at the first put and doubles when
 * it holds as many entries as buckets.
 */
#include "llmux/cache.h"

#include <cjson/cJSON.h>
#include <mbedtls/sha256.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llmux/errors.h"
#include "llmux/json.h"

#define ENTRY_MAGIC "LLMUXC1 "
#define CAPTURE_MAX_TEXT (16u << 20) /* a stream's text kept for the entry */
#define CAPTURE_MAX_CALLS 32         /* tool calls in one answer */

const char *cache_result_name(enum cache_result r)
{
    static const char *const names[] = {NULL, "miss", "hit", "bypass", "miss"};
    return names[r];
}

uint64_t cache_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- keys and entries ---- */

static int is_key(const struct json_member *m, const char *k)
{
    return m->key_len == strlen(k) && memcmp(m->key, k, m->key_len) == 0;
}

void cache_key(const char *endpoint, const char *alias, const char *key_name, const char *body,
               size_t len, uint8_t out[CACHE_KEY_LEN])
{
    mbedtls_sha256_context c;
    mbedtls_sha256_init(&c);
    mbedtls_sha256_starts_ret(&c, 0);
    const char *parts[] = {endpoint, alias, key_name ? key_name : ""};
    for (size_t i = 0; i < 3; i++) /* with their NULs: "ab" + "c" differs from "a" + "bc" */
        mbedtls_sha256_update_ret(&c, (const unsigned char *)parts[i], strlen(parts[i]) + 1);
    size_t pos = 0;
    struct json_member m;
    while (json_member_next(body, len, &pos, &m) == 0) {
        if (is_key(&m, "stream") || is_key(&m, "stream_options"))
            continue;
        mbedtls_sha256_update_ret(&c, (const unsigned char *)body + m.start, m.vend - m.start);
        mbedtls_sha256_update_ret(&c, (const unsigned char *)"", 1);
    }
    mbedtls_sha256_finish_ret(&c, out);
    mbedtls_sha256_free(&c);
}

int cache_entry_make(uint64_t stored_at_ms, const char *body, size_t len, struct buf *out)
{
    int rc = buf_append_str(out, ENTRY_MAGIC);
    if (!rc)
        rc = buf_append_uint(out, stored_at_ms);
    if (!rc)
        rc = buf_append(out, "\n", 1);
    return rc ? rc : buf_append(out, body, len);
}

int cache_entry_open(const char *blob, size_t len, uint64_t *stored_at_ms, const char **body,
                     size_t *body_len)
{
    size_t m = sizeof(ENTRY_MAGIC) - 1, i = m;
    if (len < m + 2 || memcmp(blob, ENTRY_MAGIC, m) != 0)
        return LLMUX_EPROTO;
    uint64_t t = 0;
    for (; i < len && blob[i] >= '0' && blob[i] <= '9' && i < m + 19; i++)
        t = t * 10 + (uint64_t)(blob[i] - '0');
    if (i == m || i >= len || blob[i] != '\n')
        return LLMUX_EPROTO;
    *stored_at_ms = t;
    *body = blob + i + 1;
    *body_len = len - i - 1;
    return 0;
}

/* The one choice of a chat.completion, or NULL. */
static const cJSON *only_choice(const cJSON *root)
{
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    if (!cJSON_IsObject(root) || cJSON_GetObjectItemCaseSensitive(root, "error") ||
        !cJSON_IsArray(choices) || cJSON_GetArraySize(choices) != 1)
        return NULL;
    const cJSON *choice = choices->child;
    return cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(choice, "message")) ? choice : NULL;
}

int cache_storable(const char *body, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *choice = only_choice(root);
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(choice, "finish_reason");
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(choice, "message");
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    int ok = cJSON_IsString(fr) && strcmp(fr->valuestring, "error") != 0;
    if (ok && cJSON_GetArraySize(calls) > 0) {
        ok = strcmp(fr->valuestring, "length") != 0; /* cut off inside the calls */
        const cJSON *call;
        cJSON_ArrayForEach(call, calls)
        {
            const cJSON *fn = cJSON_GetObjectItemCaseSensitive(call, "function");
            const cJSON *args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
            if (!cJSON_IsString(args) ||
                (args->valuestring[0] && !json_valid(args->valuestring, strlen(args->valuestring))))
                ok = 0;
        }
    }
    cJSON_Delete(root);
    return ok;
}

void cache_body_usage(const char *body, size_t len, struct usage *u)
{
    struct buf ignored; /* the openai kind's body reader: validates and reads `usage` */
    buf_init(&ignored, 0);
    if (adapter_openai.decode_body(NULL, "", body, len, &ignored, u) != 0)
        memset(u, 0, sizeof(*u));
    buf_free(&ignored);
}

/* ---- the memory store ---- */

struct mem_entry {
    uint8_t key[CACHE_KEY_LEN];
    uint64_t expires_ms;
    struct mem_entry *chain;         /* next in its bucket */
    struct mem_entry *newer, *older; /* the LRU list */
    size_t len;
    char blob[];
};

struct mem_store {
    struct cache_store base;
    struct mem_entry **buckets; /* NULL until the first put */
    size_t n_buckets;           /* a power of two */
    struct mem_entry *newest, *oldest;
    size_t max_bytes;
    struct cache_store_stats st;
};

static size_t entry_bytes(const struct mem_entry *e)
{
    return sizeof(*e) + e->len;
}

static struct mem_entry **bucket(struct mem_store *m, const uint8_t key[CACHE_KEY_LEN])
{
    uint64_t h;
    memcpy(&h, key, sizeof(h));
    return &m->buckets[h & (m->n_buckets - 1)];
}

static void lru_unlink(struct mem_store *m, struct mem_entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        m->newest = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        m->oldest = e->newer;
}

static void lru_push(struct mem_store *m, struct mem_entry *e)
{
    e->newer = NULL;
    e->older = m->newest;
    if (m->newest)
        m->newest->newer = e;
    m->newest = e;
    if (!m->oldest)
        m->oldest = e;
}

static void drop(struct mem_store *m, struct mem_entry *e)
{
    struct mem_entry **p = bucket(m, e->key);
    while (*p != e)
        p = &(*p)->chain;
    *p = e->chain;
    lru_unlink(m, e);
    m->st.bytes -= entry_bytes(e);
    m->st.entries--;
    free(e);
}

static struct mem_entry *find(struct mem_store *m, const uint8_t key[CACHE_KEY_LEN])
{
    if (!m->buckets)
        return NULL;
    struct mem_entry *e = *bucket(m, key);
    while (e && memcmp(e->key, key, CACHE_KEY_LEN) != 0)
        e = e->chain;
    return e;
}

static int mem_get(struct cache_store *s, const uint8_t key[CACHE_KEY_LEN], uint64_t now_ms,
                   const char **blob, size_t *len)
{
    struct mem_store *m = (struct mem_store *)s;
    struct mem_entry *e = find(m, key);
    if (e && now_ms >= e->expires_ms) {
        drop(m, e);
        e = NULL;
    }
    if (!e)
        return UV_ENOENT;
    lru_unlink(m, e);
    lru_push(m, e);
    *blob = e->blob;
    *len = e->len;
    return 0;
}

/* Drop the least recently used entries until `room` more bytes fit under the bound. */
static void evict(struct mem_store *m, size_t room)
{
    while (m->oldest && m->st.bytes + room > m->max_bytes) {
        drop(m, m->oldest);
        m->st.evictions++;
    }
}

static int grow(struct mem_store *m)
{
    size_t n = m->n_buckets ? m->n_buckets * 2 : 64;
    struct mem_entry **b = calloc(n, sizeof(*b));
    if (!b)
        return UV_ENOMEM;
    for (size_t i = 0; i < m->n_buckets; i++) {
        struct mem_entry *e = m->buckets[i];
        while (e) {
            struct mem_entry *next = e->chain;
            uint64_t h;
            memcpy(&h, e->key, sizeof(h));
            e->chain = b[h & (n - 1)];
            b[h & (n - 1)] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->n_buckets = n;
    return 0;
}

static int mem_put(struct cache_store *s, const uint8_t key[CACHE_KEY_LEN], const char *blob,
                   size_t len, uint64_t now_ms, uint64_t ttl_ms)
{
    struct mem_store *m = (struct mem_store *)s;
    if (sizeof(struct mem_entry) + len > m->max_bytes)
        return UV_E2BIG;
    if (m->st.entries >= m->n_buckets && grow(m) != 0)
        return UV_ENOMEM;
    struct mem_entry *old = find(m, key);
    if (old)
        drop(m, old);
    evict(m, sizeof(struct mem_entry) + len);
    struct mem_entry *e = malloc(sizeof(*e) + len);
    if (!e)
        return UV_ENOMEM;
    memcpy(e->key, key, CACHE_KEY_LEN);
    e->expires_ms = now_ms + ttl_ms;
    e->len = len;
    memcpy(e->blob, blob, len);
    struct mem_entry **p = bucket(m, key);
    e->chain = *p;
    *p = e;
    lru_push(m, e);
    m->st.bytes += entry_bytes(e);
    m->st.entries++;
    return 0;
}

static void mem_limit(struct cache_store *s, size_t max_bytes)
{
    struct mem_store *m = (struct mem_store *)s;
    m->max_bytes = max_bytes;
    evict(m, 0);
}

static void mem_stats(const struct cache_store *s, struct cache_store_stats *out)
{
    *out = ((const struct mem_store *)s)->st;
}

static void mem_free(struct cache_store *s)
{
    struct mem_store *m = (struct mem_store *)s;
    while (m->oldest)
        drop(m, m->oldest);
    free(m->buckets);
    free(m);
}

static const struct cache_store_ops mem_ops = {mem_get, mem_put, mem_limit, mem_stats, mem_free};

struct cache_store *cache_memory_new(size_t max_bytes)
{
    struct mem_store *m = calloc(1, sizeof(*m));
    if (!m)
        return NULL;
    m->base.ops = &mem_ops;
    m->max_bytes = max_bytes;
    return &m->base;
}

/* ---- capture ---- */

struct capture_call {
    cJSON *call;           /* id, type and any other member (Gemini's extra_content) */
    struct buf name, args; /* function.name and function.arguments, appended */
};

struct cache_capture {
    struct chunk_ident who;
    struct buf content, refusal;
    int has_content, has_refusal;
    struct capture_call calls[CAPTURE_MAX_CALLS];
    size_t n_calls;
    char finish[32];
    cJSON *usage; /* the last usage object of the stream */
    int bad;      /* cannot become one answer */
};

struct cache_capture *cache_capture_new(void)
{
    struct cache_capture *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    buf_init(&c->content, CAPTURE_MAX_TEXT);
    buf_init(&c->refusal, CAPTURE_MAX_TEXT);
    return c;
}

void cache_capture_free(struct cache_capture *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n_calls; i++) {
        cJSON_Delete(c->calls[i].call);
        buf_free(&c->calls[i].name);
        buf_free(&c->calls[i].args);
    }
    buf_free(&c->content);
    buf_free(&c->refusal);
    cJSON_Delete(c->usage);
    free(c);
}

/* Append a string value (absent or null: nothing) to b; 1 when v is a string. */
static int append_string(struct cache_capture *c, struct buf *b, const cJSON *v)
{
    if (!cJSON_IsString(v))
        return 0;
    if (buf_append_str(b, v->valuestring) != 0)
        c->bad = 1;
    return 1;
}

static void capture_call(struct cache_capture *c, const cJSON *delta, int position)
{
    const cJSON *ix = cJSON_GetObjectItemCaseSensitive(delta, "index");
    int i = cJSON_IsNumber(ix) ? ix->valueint : position;
    if (i < 0 || i > (int)c->n_calls || i >= CAPTURE_MAX_CALLS) {
        c->bad = 1;
        return;
    }
    struct capture_call *k = &c->calls[i];
    if (i == (int)c->n_calls) {
        c->n_calls++;
        k->call = cJSON_CreateObject();
        buf_init(&k->name, 0);
        buf_init(&k->args, CAPTURE_MAX_TEXT);
    }
    const cJSON *m;
    cJSON_ArrayForEach(m, delta)
    {
        if (strcmp(m->string, "index") == 0)
            continue;
        if (strcmp(m->string, "function") == 0) {
            append_string(c, &k->name, cJSON_GetObjectItemCaseSensitive(m, "name"));
            append_string(c, &k->args, cJSON_GetObjectItemCaseSensitive(m, "arguments"));
            continue;
        }
        cJSON_DeleteItemFromObjectCaseSensitive(k->call, m->string);
        cJSON_AddItemToObject(k->call, m->string, cJSON_Duplicate(m, 1));
    }
}

void cache_capture_chunk(struct cache_capture *c, const char *json, size_t len)
{
    if (c->bad || (len == 6 && memcmp(json, "[DONE]", 6) == 0))
        return;
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(root)) {
        c->bad = 1;
        cJSON_Delete(root);
        return;
    }
    if (!c->who.id[0]) {
        adapter_copy_str(c->who.id, sizeof(c->who.id),
                         cJSON_GetObjectItemCaseSensitive(root, "id"));
        adapter_copy_str(c->who.model, sizeof(c->who.model),
                         cJSON_GetObjectItemCaseSensitive(root, "model"));
        const cJSON *created = cJSON_GetObjectItemCaseSensitive(root, "created");
        c->who.created = cJSON_IsNumber(created) ? (long long)created->valuedouble : 0;
    }
    const cJSON *choice;
    cJSON_ArrayForEach(choice, cJSON_GetObjectItemCaseSensitive(root, "choices"))
    {
        const cJSON *ix = cJSON_GetObjectItemCaseSensitive(choice, "index");
        if (cJSON_IsNumber(ix) && ix->valueint != 0)
            c->bad = 1; /* n > 1: not kept */
        const cJSON *delta = cJSON_GetObjectItemCaseSensitive(choice, "delta");
        c->has_content |=
            append_string(c, &c->content, cJSON_GetObjectItemCaseSensitive(delta, "content"));
        c->has_refusal |=
            append_string(c, &c->refusal, cJSON_GetObjectItemCaseSensitive(delta, "refusal"));
        int position = 0;
        const cJSON *call;
        cJSON_ArrayForEach(call, cJSON_GetObjectItemCaseSensitive(delta, "tool_calls"))
            capture_call(c, call, position++);
        adapter_copy_str(c->finish, sizeof(c->finish),
                         cJSON_GetObjectItemCaseSensitive(choice, "finish_reason"));
    }
    cJSON *usage = cJSON_DetachItemFromObjectCaseSensitive(root, "usage");
    if (cJSON_IsObject(usage)) {
        cJSON_Delete(c->usage);
        c->usage = usage;
    } else {
        cJSON_Delete(usage);
    }
    cJSON_Delete(root);
}

/* A string member from a buf (its bytes, NUL-terminated). */
static void add_buf_string(cJSON *obj, const char *key, struct buf *b)
{
    buf_append(b, "", 1);
    cJSON_AddStringToObject(obj, key, buf_head(b));
}

int cache_capture_body(struct cache_capture *c, const struct usage *u, struct buf *out)
{
    if (c->bad || !c->finish[0] || (!c->usage && !(u && u->known)))
        return LLMUX_EPROTO;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "id", c->who.id);
    cJSON_AddStringToObject(root, "object", "chat.completion");
    cJSON_AddNumberToObject(root, "created", (double)c->who.created);
    cJSON_AddStringToObject(root, "model", c->who.model);
    cJSON *choice = cJSON_CreateObject();
    cJSON_AddNumberToObject(choice, "index", 0);
    cJSON *msg = cJSON_AddObjectToObject(choice, "message");
    cJSON_AddStringToObject(msg, "role", "assistant");
    if (c->has_content || !c->n_calls)
        add_buf_string(msg, "content", &c->content);
    else
        cJSON_AddNullToObject(msg, "content");
    if (c->has_refusal)
        add_buf_string(msg, "refusal", &c->refusal);
    cJSON *calls = c->n_calls ? cJSON_AddArrayToObject(msg, "tool_calls") : NULL;
    for (size_t i = 0; i < c->n_calls; i++) {
        cJSON *call = cJSON_Duplicate(c->calls[i].call, 1);
        cJSON *fn = cJSON_AddObjectToObject(call, "function");
        add_buf_string(fn, "name", &c->calls[i].name);
        add_buf_string(fn, "arguments", &c->calls[i].args);
        cJSON_AddItemToArray(calls, call);
    }
    cJSON_AddStringToObject(choice, "finish_reason", c->finish);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(root, "choices"), choice);
    cJSON_AddItemToObject(root, "usage",
                          c->usage ? cJSON_Duplicate(c->usage, 1) : adapter_usage_json(u));
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    int rc = text ? buf_append_str(out, text) : UV_ENOMEM;
    free(text);
    return rc;
}

/* ---- replay ---- */

int cache_replay_stream(const char *body, size_t len, int include_usage, adapter_emit_fn emit,
                        void *ctx)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *choice = only_choice(root);
    if (!choice) {
        cJSON_Delete(root);
        return LLMUX_EPROTO;
    }
    struct chunk_ident who;
    memset(&who, 0, sizeof(who));
    adapter_copy_str(who.id, sizeof(who.id), cJSON_GetObjectItemCaseSensitive(root, "id"));
    adapter_copy_str(who.model, sizeof(who.model), cJSON_GetObjectItemCaseSensitive(root, "model"));
    const cJSON *created = cJSON_GetObjectItemCaseSensitive(root, "created");
    who.created = cJSON_IsNumber(created) ? (long long)created->valuedouble : 0;
    const cJSON *msg = cJSON_GetObjectItemCaseSensitive(choice, "message");
    const cJSON *fr = cJSON_GetObjectItemCaseSensitive(choice, "finish_reason");
    struct chunk_info ci;
    int rc = adapter_emit_role(&who, include_usage, emit, ctx);
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(msg, "content");
    const cJSON *refusal = cJSON_GetObjectItemCaseSensitive(msg, "refusal");
    memset(&ci, 0, sizeof(ci));
    ci.kind = CHUNK_CONTENT;
    if (!rc && cJSON_IsString(content) && content->valuestring[0]) {
        ci.text = content->valuestring;
        ci.text_len = strlen(content->valuestring);
        rc = adapter_emit_text(&who, include_usage, ci.text, ci.text_len, &ci, emit, ctx);
    }
    if (!rc && cJSON_IsString(refusal) && refusal->valuestring[0]) {
        cJSON *delta = cJSON_CreateObject();
        cJSON_AddStringToObject(delta, "refusal", refusal->valuestring);
        memset(&ci, 0, sizeof(ci));
        ci.kind = CHUNK_CONTENT;
        rc = adapter_emit_delta(&who, include_usage, delta, NULL, &ci, emit, ctx);
    }
    int index = 0;
    const cJSON *call;
    cJSON_ArrayForEach(call, cJSON_GetObjectItemCaseSensitive(msg, "tool_calls"))
    {
        if (rc)
            break;
        cJSON *piece = cJSON_Duplicate(call, 1);
        cJSON_DeleteItemFromObjectCaseSensitive(piece, "index");
        cJSON_AddNumberToObject(piece, "index", index++);
        cJSON *delta = cJSON_CreateObject();
        cJSON_AddItemToArray(cJSON_AddArrayToObject(delta, "tool_calls"), piece);
        memset(&ci, 0, sizeof(ci));
        ci.kind = CHUNK_CONTENT;
        ci.tool_call = 1;
        rc = adapter_emit_delta(&who, include_usage, delta, NULL, &ci, emit, ctx);
    }
    memset(&ci, 0, sizeof(ci));
    ci.kind = CHUNK_CONTENT;
    ci.finish = 1;
    if (!rc)
        rc = adapter_emit_delta(&who, include_usage, NULL,
                                cJSON_IsString(fr) ? fr->valuestring : "stop", &ci, emit, ctx);
    struct usage u;
    memset(&u, 0, sizeof(u));
    adapter_openai_usage(root, &u);
    if (!rc && include_usage && u.known)
        rc = adapter_emit_usage(&who, &u, emit, ctx);
    if (!rc)
        rc = adapter_emit_done(&u, emit, ctx);
    cJSON_Delete(root);
    return rc;
}
