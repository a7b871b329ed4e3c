/* generation: the record of a finished request for GET /v1/generation (OpenRouter's
 * "generation") and /v1/generations. Each worker keeps the records of its requests in a ring
 * in its shared arena (include/llmux/shm.h), so any worker answers for all: a lookup by id
 * reads every worker's ring. A record is one block: fixed fields, then the attempts, then the
 * strings they point to; it is turned into JSON only when asked for, so a request pays a few
 * copies, not the formatting.
 *
 * The ring is bytes (records packed end to end, wrapping) plus one slot per record (where it
 * is, its id's hash, when it ended, whether an attempt failed). Only the owner writes; a
 * reader copies a record out and keeps the copy only if the owner did not write over it
 * meanwhile (the ring's reserved position, checked after the copy, as a seqlock would), so a
 * reader never sees a torn record. A record's strings are offsets from its start (gen_str),
 * so it means the same wherever it is copied. */
#ifndef LLMUX_GENERATION_H
#define LLMUX_GENERATION_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "llmux/buf.h"
#include "llmux/shm.h"

#define GEN_BYTES_PER_RECORD 384 /* the ring's bytes per kept record: one attempt takes
                                    about 330, a failover with its error about 460 */

/* Offsets of strings from the start of their record (0: none). */
struct gen_attempt {
    uint32_t provider, model, error; /* error 0 for the one that served */
    int status;                           /* 0: none */
    uint64_t ms;
    int hedge, continuation, served, priced;
    uint64_t cost_pico;
};

struct gen_rec {
    char id[80];
    uint32_t alias, endpoint, provider, upstream_model, finish; /* 0: unknown */
    uint32_t cache; /* "hit", "miss", "bypass"; 0: the alias has no cache */
    int64_t created; /* unix seconds */
    int status, streamed, usage_known, priced;
    long latency_ms, generation_ms, duration_ms; /* < 0: none */
    long prompt, completion, cached;
    uint64_t total_pico;
    size_t size; /* bytes of the whole block */
    size_t n_attempts;
    struct gen_attempt attempts[];
};

struct gen_slot {
    _Atomic uint64_t seq; /* record number + 1 held here; 0: none yet */
    uint64_t pos;         /* where its bytes start (ring position, not wrapped) */
    uint64_t id_hash;
    uint64_t ended;       /* loop ms (one clock for every worker): rings merge newest first */
    uint32_t size;
    uint32_t failed;      /* an attempt did not serve */
};

struct gen_ring {
    struct shm_link link;
    size_t keep;               /* slots */
    size_t bytes;              /* data */
    _Atomic uint64_t count;    /* records ever added */
    _Atomic uint64_t reserved; /* ring bytes ever handed out (a reader's check) */
    struct gen_slot *slot;
    unsigned char *data;
};

/* A string of r (off: one of its offsets), or NULL. */
static inline const char *gen_str(const struct gen_rec *r, uint32_t off)
{
    return off ? (const char *)r + off : NULL;
}

/* The address space a ring of `keep` records takes in an arena (0 for keep 0). */
size_t generations_bytes(size_t keep);
/* Arena a's ring (made when it has none: keep 0 makes none). Returns 0, or UV_ENOMEM when the
 * arena is full. *out is NULL when keep is 0. */
int generations_attach(struct shm_arena *a, size_t keep, struct gen_ring **out);
/* Copy the record r (r->size bytes) into the ring. ended: uv_now() (one clock for every
 * worker). */
void generations_add(struct gen_ring *g, const struct gen_rec *r, uint64_t ended);
/* The newest record of request `id` in any worker's ring, copied (caller frees), or NULL. */
struct gen_rec *generations_find(const struct shm *s, const char *id);
/* Up to `limit` of the newest records across the workers, newest first (failed: only those
 * with an attempt that did not serve), copied into out[] (caller frees each); returns how
 * many. */
size_t generations_newest(const struct shm *s, size_t limit, int failed, struct gen_rec **out);
/* A record as its JSON object. */
int generation_json(const struct gen_rec *r, struct buf *out);
/* Whether an attempt of r did not serve (a failure, or a cancelled hedge). */
int generation_failed(const struct gen_rec *r);

#endif
