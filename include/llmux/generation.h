/* generation: the record of a finished request for GET /v1/generation (OpenRouter's
 * "generation"), kept in a ring per worker. A record is one allocation: fixed fields, then the
 * attempts, then the strings they point to; it is turned into JSON only when asked for, so a
 * request pays a few copies, not the formatting. */
#ifndef LLMUX_GENERATION_H
#define LLMUX_GENERATION_H

#include <stddef.h>
#include <stdint.h>

#include "llmux/buf.h"

struct gen_attempt {
    const char *provider, *model, *error; /* error NULL for the one that served */
    int status;                           /* 0: none */
    uint64_t ms;
    int hedge, continuation, served, priced;
    uint64_t cost_pico;
};

struct gen_rec {
    char id[80];
    const char *alias, *endpoint, *provider, *upstream_model, *finish; /* NULL: unknown */
    const char *cache; /* "hit", "miss", "bypass" (static); NULL: the alias has no cache */
    int64_t created; /* unix seconds */
    int status, streamed, usage_known, priced;
    long latency_ms, generation_ms, duration_ms; /* < 0: none */
    long prompt, completion, cached;
    uint64_t total_pico;
    size_t n_attempts;
    struct gen_attempt attempts[];
};

struct generations {
    struct gen_rec **ring;
    size_t keep, next, n;
};

/* A ring of `keep` (0: keeps nothing). Returns 0 or UV_ENOMEM. */
int generations_init(struct generations *g, size_t keep);
void generations_free(struct generations *g);
/* Keep r (taken; the oldest is freed when `keep` are held). */
void generations_add(struct generations *g, struct gen_rec *r);
/* The newest record of request `id`, or NULL. */
const struct gen_rec *generations_find(const struct generations *g, const char *id);
/* The k-th newest record (0: the newest), or NULL. */
const struct gen_rec *generations_nth(const struct generations *g, size_t k);
/* A record as its JSON object. */
int generation_json(const struct gen_rec *r, struct buf *out);
/* Whether an attempt of r did not serve (a failure, or a cancelled hedge). */
int generation_failed(const struct gen_rec *r);

#endif
