/* limits: shared per-key GCRA limits and spend. See include/llmux/limits.h. */
#include "llmux/limits.h"

#include <sched.h>
#include <stdio.h>
#include <string.h>
#include "llmux/server.h"
#include <sys/mman.h>
#include <time.h>

struct limits *limits_create(void)
{
    void *p = mmap(NULL, sizeof(struct limits), PROT_READ | PROT_WRITE,
                   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p; /* zero-filled: every slot free */
}

void limits_destroy(struct limits *l)
{
    if (l)
        munmap(l, sizeof(*l));
}

struct limit_slot *limits_slot(struct limits *l, const char *name)
{
    if (!l)
        return NULL;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < LIMITS_SLOTS; i++) {
            struct limit_slot *s = &l->slot[i];
            int st = atomic_load(&s->state);
            while (st == 1) { /* another process is writing its name: a few instructions */
                sched_yield();
                st = atomic_load(&s->state);
            }
            if (st == 2 && strncmp(s->name, name, sizeof(s->name) - 1) == 0)
                return s;
            int free_slot = 0;
            if (pass == 1 && st == 0 && atomic_compare_exchange_strong(&s->state, &free_slot, 1)) {
                strncpy(s->name, name, sizeof(s->name) - 1);
                atomic_store(&s->state, 2);
                return s;
            }
        }
    }
    return NULL;
}

int limits_take(_Atomic uint64_t *tat, uint32_t per_minute, uint64_t cost, uint64_t now_ns,
                uint64_t *remaining, uint64_t *reset_us, uint64_t *retry_us)
{
    uint64_t t = LIMITS_WINDOW_NS / per_minute; /* emission interval */
    uint64_t old = atomic_load(tat);
    for (;;) {
        uint64_t base = old > now_ns ? old : now_ns;
        uint64_t next = base + cost * t;
        if (next - now_ns > LIMITS_WINDOW_NS) { /* over: it fits when TAT has come down */
            uint64_t used = base - now_ns;
            *retry_us = (next - now_ns - LIMITS_WINDOW_NS) / 1000;
            *remaining = (LIMITS_WINDOW_NS - used) / t;
            *reset_us = used / 1000;
            return 0;
        }
        if (atomic_compare_exchange_weak(tat, &old, next)) {
            *remaining = (LIMITS_WINDOW_NS - (next - now_ns)) / t;
            if (*remaining > per_minute) /* t is rounded down past 60 M per minute */
                *remaining = per_minute;
            *reset_us = (next - now_ns) / 1000;
            *retry_us = 0;
            return 1;
        }
    }
}

void limits_adjust(_Atomic uint64_t *tat, uint32_t per_minute, int64_t delta, uint64_t now_ns)
{
    uint64_t t = LIMITS_WINDOW_NS / per_minute;
    uint64_t old = atomic_load(tat), next;
    do {
        int64_t moved = delta * (int64_t)t;
        uint64_t base = old > now_ns ? old : now_ns;
        next = moved < 0 && (uint64_t)-moved > base - now_ns ? (old > now_ns ? now_ns : old)
                                                             : base + (uint64_t)moved;
    } while (!atomic_compare_exchange_weak(tat, &old, next));
}

uint64_t limits_spent(struct limit_slot *s, uint64_t period)
{
    return atomic_load(&s->period) == period ? atomic_load(&s->spent_pico) : 0;
}

void limits_spend(struct limit_slot *s, uint64_t period, uint64_t pico)
{
    uint64_t p = atomic_load(&s->period);
    if (p != period && atomic_compare_exchange_strong(&s->period, &p, period))
        atomic_store(&s->spent_pico, 0); /* a new period: the first to see it resets */
    atomic_fetch_add(&s->spent_pico, pico);
}

uint64_t limits_spent_now(struct limit_slot *s, int budget_period)
{
    return s ? limits_spent(s, limits_period(budget_period, (int64_t)time(NULL))) : 0;
}

void limits_spend_seen(struct limit_slot *s, uint64_t period, uint64_t pico)
{
    atomic_store(&s->period, period);
    atomic_store(&s->spent_pico, pico);
}

uint64_t limits_period(int budget_period, int64_t unix_s)
{
    if (budget_period == 1) /* day */
        return (uint64_t)(unix_s / 86400);
    if (budget_period == 2) { /* month */
        time_t t = (time_t)unix_s;
        struct tm tm;
        gmtime_r(&t, &tm);
        return (uint64_t)tm.tm_year * 12 + (uint64_t)tm.tm_mon;
    }
    return 0;
}

void limits_duration(uint64_t us, char *out, size_t size)
{
    uint64_t ms = (us + 999) / 1000;
    if (ms < 1000) {
        snprintf(out, size, "%llums", (unsigned long long)ms);
    } else if (ms < 60000) {
        int n = snprintf(out, size, "%llu.%03llu", (unsigned long long)(ms / 1000),
                         (unsigned long long)(ms % 1000));
        while (n > 0 && (size_t)n < size && (out[n - 1] == '0' || out[n - 1] == '.')) {
            int dot = out[n - 1] == '.';
            out[--n] = 0;
            if (dot)
                break;
        }
        snprintf(out + n, size - (size_t)n, "s");
    } else {
        snprintf(out, size, "%llum%llus", (unsigned long long)(ms / 60000),
                 (unsigned long long)(ms % 60000 / 1000));
    }
}

size_t limits_headers(const struct admission *a, uint64_t retry_us, struct http_header *h,
                      char (*space)[24])
{
    static const char *const names[2][3] = {
        {"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests"},
        {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"}};
    size_t n = 0;
    for (int k = 0; k < 2; k++) {
        uint32_t limit = k ? a->tpm : a->rpm;
        if (!limit)
            continue;
        snprintf(space[n], 24, "%u", limit);
        snprintf(space[n + 1], 24, "%llu",
                 (unsigned long long)(k ? a->remaining_tok : a->remaining_req));
        limits_duration(k ? a->reset_tok_us : a->reset_req_us, space[n + 2], 24);
        for (int i = 0; i < 3; i++, n++)
            h[n] = (struct http_header){names[k][i], strlen(names[k][i]), space[n], strlen(space[n])};
    }
    if (retry_us) {
        snprintf(space[n], 24, "%llu", (unsigned long long)((retry_us + 999999) / 1000000));
        h[n] = (struct http_header){"retry-after", 11, space[n], strlen(space[n])};
        n++;
    }
    return n;
}
