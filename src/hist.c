/* hist: log-linear histogram. See include/llmux/hist.h. */
#include "llmux/hist.h"

#include <inttypes.h>

/* Bucket of v: values below HIST_SUB have their own; above, the power of two and the top
 * three bits after the leading one. */
static unsigned bucket_of(uint64_t v)
{
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned lz = (unsigned)__builtin_clzll(v);
    unsigned exp = 63 - lz; /* >= 3 */
    unsigned sub = (unsigned)((v >> (exp - 3)) & (HIST_SUB - 1));
    unsigned b = (exp - 2) * HIST_SUB + sub;
    return b < HIST_BUCKETS ? b : HIST_BUCKETS - 1;
}

/* The largest value of bucket b. */
static uint64_t bucket_top(unsigned b)
{
    if (b < HIST_SUB)
        return b;
    unsigned exp = b / HIST_SUB + 2, sub = b % HIST_SUB;
    return (((uint64_t)(HIST_SUB + sub + 1)) << (exp - 3)) - 1;
}

void hist_add(struct hist *h, uint64_t v)
{
    h->buckets[bucket_of(v)]++;
    h->count++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (!h->count)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if (rank >= h->count)
        rank = h->count - 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < HIST_BUCKETS; b++) {
        seen += h->buckets[b];
        if (seen > rank) {
            uint64_t top = bucket_top(b);
            return top < h->max ? top : h->max;
        }
    }
    return h->max;
}

int hist_json(const struct hist *h, struct buf *out)
{
    return buf_printf(out,
                      "{\"count\":%" PRIu64 ",\"mean\":%.1f,\"p50\":%" PRIu64 ",\"p90\":%" PRIu64
                      ",\"p99\":%" PRIu64 ",\"p999\":%" PRIu64 ",\"max\":%" PRIu64 "}",
                      h->count, h->count ? (double)h->sum / (double)h->count : 0.0,
                      hist_quantile(h, 0.5), hist_quantile(h, 0.9), hist_quantile(h, 0.99),
                      hist_quantile(h, 0.999), h->max);
}
