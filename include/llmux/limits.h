/* limits: per-key rate limits and spend, exact across the workers of one instance. The table
 * lives in one shared anonymous mapping made before the workers are forked; each key name has
 * a slot (claimed once, kept across reloads, so counters survive a reload that keeps the
 * name). Updates are lock-free atomics on the shared memory.
 *
 * Rate limits are GCRA (the generic cell rate algorithm, as in ATM networks and Redis-cell):
 * per limit one "theoretical arrival time" (TAT). A limit of N per minute spaces admissions by
 * T = 60 s / N and tolerates a burst of up to N at once: a request (or a request's tokens) is
 * admitted when TAT + cost * T stays within one minute of now. Unlike a fixed window it has no
 * edge where 2N pass within a second, and unlike a sliding log it needs 8 bytes per limit.
 * Tokens are charged at admission from an estimate and corrected when the answer's usage is
 * known. */
#ifndef LLMUX_LIMITS_H
#define LLMUX_LIMITS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#define LIMITS_SLOTS 1024
#define LIMITS_WINDOW_NS 60000000000ull /* a minute */

struct limit_slot {
    _Atomic int state; /* 0 free, 1 being claimed, 2 in use */
    char name[64];
    _Atomic uint64_t tat_req, tat_tok; /* CLOCK_MONOTONIC ns (uv_hrtime) */
    _Atomic uint64_t spent_pico;       /* this budget period's spend, $1e-12 */
    _Atomic uint64_t period;           /* which period spent_pico is for */
};

struct limits {
    struct limit_slot slot[LIMITS_SLOTS];
};

/* What admission decided for a request of a key with limits, carried by its exchange: the
 * answer's x-ratelimit-* headers, then the token correction and the spend at its end. */
struct admission {
    const char *key_name; /* the key's name (borrowed from the exchange's config) */
    struct limit_slot *slot;
    uint32_t rpm, tpm;    /* 0: no such limit */
    uint64_t est_tokens;  /* charged to tpm at admission */
    uint64_t remaining_req, reset_req_us, remaining_tok, reset_tok_us;
    uint64_t period;      /* the budget period of the spend */
    int limited;          /* the key has limits or a budget: with Redis, its spend goes there
                             (a key without them keeps its spend in this instance) */
};

/* The budget period number of a unix time: 0 for "total", the UTC day or month. */
uint64_t limits_period(int budget_period, int64_t unix_s);
/* OpenAI's duration form of a reset ("20ms", "1s", "1.5s", "6m0s") into out. */
void limits_duration(uint64_t us, char *out, size_t size);

struct http_header;
/* OpenAI's x-ratelimit-{limit,remaining,reset}-{requests,tokens} for the limits a has (and
 * retry-after in whole seconds when retry_us > 0) into h, their values in space; returns how
 * many (at most 7). */
size_t limits_headers(const struct admission *a, uint64_t retry_us, struct http_header *h,
                      char (*space)[24]);

/* The shared table (mmap MAP_SHARED|MAP_ANONYMOUS), or NULL. */
struct limits *limits_create(void);
void limits_destroy(struct limits *l);
/* The slot of key name (claimed when new), or NULL when the table is full. */
struct limit_slot *limits_slot(struct limits *l, const char *name);

/* One GCRA limit: `per_minute` (> 0), `cost` units at now_ns (uv_hrtime). Returns 1
 * (admitted: *tat advanced) or 0 (refused: *retry_us until it would fit). Either way
 * *remaining and *reset_us describe the limit after the decision (reset: until the whole
 * allowance is back). Nanoseconds keep the spacing exact up to UINT32_MAX per minute. */
int limits_take(_Atomic uint64_t *tat, uint32_t per_minute, uint64_t cost, uint64_t now_ns,
                uint64_t *remaining, uint64_t *reset_us, uint64_t *retry_us);
/* Give back (delta < 0) or charge more (delta > 0) units of a limit after the fact. */
void limits_adjust(_Atomic uint64_t *tat, uint32_t per_minute, int64_t delta, uint64_t now_ns);

/* Spend of the current period (period: a number that changes when it rolls over). */
uint64_t limits_spent(struct limit_slot *s, uint64_t period);
void limits_spend(struct limit_slot *s, uint64_t period, uint64_t pico);
/* The spend of the budget period running now (s may be NULL: 0). */
uint64_t limits_spent_now(struct limit_slot *s, int budget_period);
/* The spend of a period as another source (Redis) reported it. */
void limits_spend_seen(struct limit_slot *s, uint64_t period, uint64_t pico);

#endif
