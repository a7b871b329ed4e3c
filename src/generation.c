/* generation: finished requests' records. See include/llmux/generation.h. */
#include "llmux/generation.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

size_t generations_bytes(size_t keep)
{
    if (!keep)
        return 0;
    size_t data = keep * GEN_BYTES_PER_RECORD;
    if (data < 65536)
        data = 65536; /* room for any record */
    return sizeof(struct gen_ring) + keep * sizeof(struct gen_slot) + data + 64;
}

int generations_attach(struct shm_arena *a, size_t keep, struct gen_ring **out)
{
    *out = NULL;
    if (!keep)
        return 0;
    struct gen_ring *g = (struct gen_ring *)shm_first(a, SHM_GENERATIONS);
    if (g) { /* a restarted worker carries on with its predecessor's ring */
        uint64_t n = atomic_load(&g->count);
        if (atomic_load(&g->slot[n % g->keep].seq) == n + 1) /* it died between the last two */
            atomic_store(&g->count, n + 1);                   /* stores of its last record */
    } else {
        size_t data = generations_bytes(keep) - sizeof(*g) - keep * sizeof(struct gen_slot) - 64;
        g = shm_alloc(a, sizeof(*g));
        struct gen_slot *slots = g ? shm_alloc(a, keep * sizeof(*slots)) : NULL;
        unsigned char *bytes = slots ? shm_alloc(a, data) : NULL;
        if (!bytes)
            return UV_ENOMEM;
        g->keep = keep;
        g->bytes = data;
        g->slot = slots;
        g->data = bytes;
        shm_publish(a, SHM_GENERATIONS, &g->link);
    }
    *out = g;
    return 0;
}

/* A hash of an id, eight bytes at a time (ids are 32 hex characters unless a client sent its
 * own x-request-id): a collision only costs a copy and a comparison. */
static uint64_t id_hash(const char *id)
{
    size_t n = strnlen(id, sizeof(((struct gen_rec *)0)->id));
    uint64_t h = n;
    while (n) {
        uint64_t w = 0;
        size_t k = n < 8 ? n : 8;
        memcpy(&w, id, k);
        h = (h ^ w) * 0x9e3779b97f4a7c15ull;
        h ^= h >> 29;
        id += k;
        n -= k;
    }
    return h;
}

#define GEN_MAX_ATTEMPTS 64

/* Copy `size` ring bytes from position pos into out (wrapping). */
static void ring_read(const struct gen_ring *g, uint64_t pos, size_t size, void *out)
{
    size_t at = (size_t)(pos % g->bytes), first = g->bytes - at < size ? g->bytes - at : size;
    memcpy(out, g->data + at, first);
    memcpy((char *)out + first, g->data, size - first);
}

static void ring_write(struct gen_ring *g, uint64_t pos, const void *in, size_t size)
{
    size_t at = (size_t)(pos % g->bytes), first = g->bytes - at < size ? g->bytes - at : size;
    memcpy(g->data + at, in, first);
    memcpy(g->data, (const char *)in + first, size - first);
}

void generations_add(struct gen_ring *g, const struct gen_rec *r, uint64_t ended)
{
    if (!g || r->size > g->bytes / 4 || r->n_attempts > GEN_MAX_ATTEMPTS)
        return;
    uint64_t n = atomic_load_explicit(&g->count, memory_order_relaxed);
    uint64_t pos = atomic_load_explicit(&g->reserved, memory_order_relaxed);
    struct gen_slot *sl = &g->slot[n % g->keep];
    /* readers of the bytes about to be written, or of this slot, see that they changed */
    atomic_store_explicit(&sl->seq, 0, memory_order_relaxed);
    atomic_store_explicit(&g->reserved, pos + r->size, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    ring_write(g, pos, r, r->size);
    sl->pos = pos;
    sl->size = (uint32_t)r->size;
    sl->id_hash = id_hash(r->id);
    sl->ended = ended;
    sl->failed = (uint32_t)generation_failed(r);
    atomic_store_explicit(&sl->seq, n + 1, memory_order_release);
    atomic_store_explicit(&g->count, n + 1, memory_order_release);
}

/* A copy of record n of g (caller frees), or NULL when it is gone or being written over. */
static struct gen_rec *copy_out(const struct gen_ring *g, uint64_t n)
{
    const struct gen_slot *sl = &g->slot[n % g->keep];
    if (atomic_load_explicit(&((struct gen_slot *)sl)->seq, memory_order_acquire) != n + 1)
        return NULL;
    uint64_t pos = sl->pos;
    size_t size = sl->size;
    if (size < sizeof(struct gen_rec) || size > g->bytes / 4)
        return NULL;
    struct gen_rec *r = malloc(size);
    if (!r)
        return NULL;
    ring_read(g, pos, size, r);
    atomic_thread_fence(memory_order_acquire);
    uint64_t reserved = atomic_load_explicit(&((struct gen_ring *)g)->reserved, memory_order_relaxed);
    if (atomic_load_explicit(&((struct gen_slot *)sl)->seq, memory_order_relaxed) != n + 1 ||
        reserved - pos > g->bytes || r->size != size || r->n_attempts > GEN_MAX_ATTEMPTS ||
        sizeof(*r) + r->n_attempts * sizeof(r->attempts[0]) > size) {
        free(r); /* written over while it was copied */
        return NULL;
    }
    ((char *)r)[size - 1] = 0; /* the last string ends the block, whatever an offset says */
    uint32_t off[6] = {r->alias, r->endpoint, r->provider, r->upstream_model, r->finish, r->cache};
    for (size_t i = 0; i < 6; i++)
        if (off[i] >= size)
            off[i] = 0;
    r->alias = off[0], r->endpoint = off[1], r->provider = off[2];
    r->upstream_model = off[3], r->finish = off[4], r->cache = off[5];
    for (size_t i = 0; i < r->n_attempts; i++) {
        struct gen_attempt *a = &r->attempts[i];
        a->provider = a->provider < size ? a->provider : 0;
        a->model = a->model < size ? a->model : 0;
        a->error = a->error < size ? a->error : 0;
    }
    return r;
}

struct gen_rec *generations_find(const struct shm *s, const char *id)
{
    uint64_t h = id_hash(id);
    struct gen_rec *best = NULL;
    uint64_t best_t = 0;
    for (uint32_t w = 0; w < s->n; w++) {
        const struct gen_ring *g = (const struct gen_ring *)shm_first(s->arena[w], SHM_GENERATIONS);
        if (!g)
            continue;
        uint64_t count = atomic_load_explicit(&((struct gen_ring *)g)->count, memory_order_acquire);
        for (uint64_t k = 0; k < count && k < g->keep; k++) {
            uint64_t n = count - 1 - k;
            const struct gen_slot *sl = &g->slot[n % g->keep];
            if (sl->id_hash != h || (best && sl->ended <= best_t))
                continue;
            struct gen_rec *r = copy_out(g, n);
            if (r && strcmp(r->id, id) == 0) {
                free(best);
                best = r;
                best_t = sl->ended;
                break; /* this ring's newest */
            }
            free(r);
        }
    }
    return best;
}

size_t generations_newest(const struct shm *s, size_t limit, int failed, struct gen_rec **out)
{
    uint64_t count[SHM_MAX_WORKERS], next[SHM_MAX_WORKERS]; /* per worker: records, the cursor */
    const struct gen_ring *ring[SHM_MAX_WORKERS];
    for (uint32_t w = 0; w < s->n; w++) {
        ring[w] = (const struct gen_ring *)shm_first(s->arena[w], SHM_GENERATIONS);
        count[w] = ring[w] ? atomic_load_explicit(&((struct gen_ring *)ring[w])->count,
                                                  memory_order_acquire)
                           : 0;
        next[w] = 0;
    }
    size_t got = 0;
    while (got < limit) { /* merge the rings newest first */
        int pick = -1;
        uint64_t pick_t = 0;
        for (uint32_t w = 0; w < s->n; w++) {
            while (next[w] < count[w] && next[w] < ring[w]->keep) {
                const struct gen_slot *sl = &ring[w]->slot[(count[w] - 1 - next[w]) % ring[w]->keep];
                if (!failed || sl->failed)
                    break;
                next[w]++;
            }
            if (next[w] >= count[w] || next[w] >= ring[w]->keep)
                continue;
            uint64_t ms = ring[w]->slot[(count[w] - 1 - next[w]) % ring[w]->keep].ended;
            if (pick < 0 || ms > pick_t) {
                pick = (int)w;
                pick_t = ms;
            }
        }
        if (pick < 0)
            break;
        struct gen_rec *r = copy_out(ring[pick], count[pick] - 1 - next[pick]);
        next[pick]++;
        if (r && failed && !generation_failed(r)) {
            free(r);
            continue;
        }
        if (r)
            out[got++] = r;
    }
    return got;
}

int generation_failed(const struct gen_rec *r)
{
    for (size_t i = 0; i < r->n_attempts; i++)
        if (!r->attempts[i].served)
            return 1;
    return 0;
}

/* ,"key":"value" or ,"key":null */
static void str(struct buf *b, const char *key, const char *v)
{
    buf_printf(b, ",\"%s\":", key);
    if (!v) {
        buf_append_str(b, "null");
        return;
    }
    buf_append_str(b, "\"");
    buf_append_json_str(b, v, strlen(v));
    buf_append_str(b, "\"");
}

static void num(struct buf *b, const char *key, int known, long v)
{
    if (known)
        buf_printf(b, ",\"%s\":%ld", key, v);
    else
        buf_printf(b, ",\"%s\":null", key);
}

static void dollars(struct buf *b, const char *key, int priced, uint64_t pico)
{
    buf_printf(b, ",\"%s\":", key);
    if (priced)
        buf_append_fixed(b, pico, 12);
    else
        buf_append_str(b, "null");
}

int generation_json(const struct gen_rec *r, struct buf *b)
{
    buf_append_str(b, "{\"id\":\"");
    buf_append_json_str(b, r->id, strlen(r->id));
    buf_append_str(b, "\"");
    str(b, "model", gen_str(r, r->alias));
    str(b, "endpoint", gen_str(r, r->endpoint));
    str(b, "provider_name", gen_str(r, r->provider));
    str(b, "upstream_model", gen_str(r, r->upstream_model));
    buf_printf(b, ",\"streamed\":%s", r->streamed ? "true" : "false");
    time_t t = (time_t)r->created;
    struct tm tm;
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
    str(b, "created_at", when);
    num(b, "status", 1, r->status);
    num(b, "latency", r->latency_ms >= 0, r->latency_ms);
    num(b, "generation_time", r->generation_ms >= 0, r->generation_ms);
    num(b, "duration", 1, r->duration_ms);
    num(b, "tokens_prompt", r->usage_known, r->prompt);
    num(b, "tokens_completion", r->usage_known, r->completion);
    num(b, "tokens_cached", r->usage_known, r->cached);
    str(b, "finish_reason", gen_str(r, r->finish));
    str(b, "cache", gen_str(r, r->cache));
    dollars(b, "total_cost", r->priced, r->total_pico);
    buf_append_str(b, ",\"provider_responses\":[");
    for (size_t i = 0; i < r->n_attempts; i++) {
        const struct gen_attempt *a = &r->attempts[i];
        buf_append_str(b, i ? ",{" : "{");
        buf_append_str(b, "\"provider_name\":\"");
        const char *provider = gen_str(r, a->provider);
        buf_append_json_str(b, provider ? provider : "", provider ? strlen(provider) : 0);
        buf_append_str(b, "\"");
        str(b, "model", gen_str(r, a->model));
        num(b, "status", a->status != 0, a->status);
        str(b, "error", gen_str(r, a->error));
        num(b, "latency", 1, (long)a->ms);
        buf_printf(b, ",\"is_hedge\":%s,\"is_continuation\":%s,\"served\":%s",
                   a->hedge ? "true" : "false", a->continuation ? "true" : "false",
                   a->served ? "true" : "false");
        dollars(b, "cost", a->priced, a->cost_pico);
        buf_append_str(b, "}");
    }
    return buf_append_str(b, "]}");
}
