/* cache: the exact response cache (README "Response cache"). Pieces the exchange puts
 * together, none of which knows about the exchange:
 *
 * - the key: SHA-256 over the endpoint, the alias as asked, the gateway key's name and the
 *   request body without its stream-only members (`stream`, `stream_options`);
 * - the entry: ONE contiguous blob, a one-line header ("LLMUXC1 <stored_at_ms>\n") then the
 *   answer as a chat.completion JSON body, so any backend stores the same bytes (memory here;
 *   Redis: SET key blob PX ttl, GET key);
 * - the store interface (get, put, limit, stats, free) and its memory backend: a hash table and
 *   an LRU list bounded by bytes, expiry checked on get, the clock passed in (tests inject it);
 * - capture: a stream's chunks assembled into the chat.completion body a non-stream answer
 *   would have been, and the check that an answer is whole enough to keep;
 * - replay: a stored body as the chunks of a stream, in the shape llmux's own streams have.
 *
 * Nothing here allocates unless a model has a cache: the store starts empty (no table), and a
 * request to a model without one never reaches this module.
 */
#ifndef LLMUX_CACHE_H
#define LLMUX_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "llmux/adapter.h"
#include "llmux/buf.h"

#define CACHE_KEY_LEN 32
#define CACHE_DEFAULT_MAX_BYTES (64u << 20)

/* What the cache did for a request (x-llmux-cache says hit, miss or bypass). */
enum cache_result {
    CACHE_OFF = 0, /* the model has no cache: no header, nothing done */
    CACHE_MISS,    /* looked up and not found: a complete answer is stored */
    CACHE_HIT,     /* answered from the store; no provider was asked */
    CACHE_BYPASS,  /* neither read nor written (no-store, an endpoint that is not cached) */
    CACHE_REFRESH, /* not read, written (x-llmux-cache: refresh); says "miss" */
};
/* "hit", "miss" or "bypass" (NULL for CACHE_OFF). */
const char *cache_result_name(enum cache_result r);

/* ---- the store ---- */

struct cache_store;

struct cache_store_stats {
    uint64_t bytes; /* held, entries and their bookkeeping */
    uint64_t entries;
    uint64_t evictions; /* entries dropped to stay under the limit */
};

/* A backend. Blobs are opaque bytes; a backend never looks inside. */
struct cache_store_ops {
    /* The blob under key, if stored and not expired at now_ms. Returns 0 with *blob borrowed
     * (valid until the next call on s), or UV_ENOENT. */
    int (*get)(struct cache_store *s, const uint8_t key[CACHE_KEY_LEN], uint64_t now_ms,
               const char **blob, size_t *len);
    /* Keep a copy of blob under key (replacing what was there) until now_ms + ttl_ms. Returns 0,
     * UV_E2BIG when it can never fit, or UV_ENOMEM. */
    int (*put)(struct cache_store *s, const uint8_t key[CACHE_KEY_LEN], const char *blob,
               size_t len, uint64_t now_ms, uint64_t ttl_ms);
    /* The byte bound (a reload may change it; entries are evicted to meet it at once). */
    void (*limit)(struct cache_store *s, size_t max_bytes);
    void (*stats)(const struct cache_store *s, struct cache_store_stats *out);
    void (*free)(struct cache_store *s);
};

struct cache_store {
    const struct cache_store_ops *ops;
};

/* The in-process backend, bounded by max_bytes (LRU by bytes). NULL when out of memory. */
struct cache_store *cache_memory_new(size_t max_bytes);

/* The worker's cache: its store and what it did (/metrics). */
struct cache {
    struct cache_store *store;
    uint64_t results[5]; /* requests by enum cache_result (refresh says miss) */
    uint64_t stored;     /* answers put */
};

/* Milliseconds since the epoch (entries carry wall-clock times: shared stores outlive a
 * process). */
uint64_t cache_now_ms(void);

/* ---- keys and entries ---- */

/* The key of a request: endpoint ("chat"), alias as asked, gateway key name ("" without
 * keys), and the body's top-level members except `stream` and `stream_options`, each hashed
 * as its bytes (whitespace between members does not count). */
void cache_key(const char *endpoint, const char *alias, const char *key_name, const char *body,
               size_t len, uint8_t out[CACHE_KEY_LEN]);

/* An entry for a chat.completion body stored at stored_at_ms, into out. Returns 0 or a buffer
 * error. */
int cache_entry_make(uint64_t stored_at_ms, const char *body, size_t len, struct buf *out);
/* An entry's parts: the body is borrowed from blob. Returns 0, or LLMUX_EPROTO when blob is
 * not an entry. */
int cache_entry_open(const char *blob, size_t len, uint64_t *stored_at_ms, const char **body,
                     size_t *body_len);

/* Whether a chat.completion body is a whole answer worth keeping: one choice with a message,
 * a finish_reason other than "error", and when it calls tools, a finish that is not "length"
 * and arguments that are complete JSON. */
int cache_storable(const char *body, size_t len);

/* The usage a stored body reports (u->known 0 when none). */
void cache_body_usage(const char *body, size_t len, struct usage *u);

/* ---- capture of a stream ---- */

struct cache_capture;

/* NULL when out of memory (the stream is then not stored). */
struct cache_capture *cache_capture_new(void);
void cache_capture_free(struct cache_capture *c);
/* One canonical chunk as the client got it (the JSON after "data: "; "[DONE]" is ignored). */
void cache_capture_chunk(struct cache_capture *c, const char *json, size_t len);
/* The chat.completion body the stream adds up to, into out: its id, created, model, content,
 * refusal, tool calls, finish_reason, and the usage of its usage chunk, else `u` (known).
 * Returns 0, or LLMUX_EPROTO when there is nothing whole to keep (another choice than 0, no
 * finish, no usage). */
int cache_capture_body(struct cache_capture *c, const struct usage *u, struct buf *out);

/* ---- replay ---- */

/* A stored body as a stream, emitted chunk by chunk through emit (adapter_emit_fn, with
 * chunk_info as the adapters fill it): the role chunk, the content, one chunk per tool call,
 * the finish chunk, the usage chunk when include_usage (and the body has usage), "[DONE]".
 * Returns 0, emit's nonzero value, or LLMUX_EPROTO (nothing emitted) when body is not a
 * chat.completion. */
int cache_replay_stream(const char *body, size_t len, int include_usage, adapter_emit_fn emit,
                        void *ctx);

#endif
