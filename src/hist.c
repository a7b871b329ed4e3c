/* hist: log-linear histogram. See include/llmux/hist.h. */
#include "llmux/hist.h"

#include <inttypes.h>
#include <string.h>

#define SUB (1u << HIST_SUB_BITS)

static unsigned bucket_of(uint64_t v)
{
    if (v >= (UINT64_C(1) << HIST_MAX_BITS))
        v = (UINT64_C(1) << HIST_MAX_BITS) - 1;
    if (v < SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;
    return (shift + 1) * SUB + (unsigned)(v >> shift) - SUB;
}

/* Midpoint of bucket i. */
static uint64_t value_of(unsigned i)
{
    if (i < SUB)
        return i;
    unsigned shift = i / SUB - 1;
    uint64_t lo = (uint64_t)(i % SUB + SUB) << shift;
    return lo + ((UINT64_C(1) << shift) >> 1);
}

void hist_reset(struct hist *h)
{
    memset(h, 0, sizeof(*h));
}

void hist_add(struct hist *h, uint64_t v)
{
    if (h->count == 0 || v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
    h->count++;
    h->sum += (double)v;
    h->b[bucket_of(v)]++;
}

uint64_t hist_quantile(const struct hist *h, double q)
{
    if (h->count == 0)
        return 0;
    if (q >= 1.0)
        return h->max;
    uint64_t rank = (uint64_t)(q * (double)h->count);
    if ((double)rank < q * (double)h->count)
        rank++;
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = value_of(i);
            return v < h->min ? h->min : v > h->max ? h->max : v;
        }
    }
    return h->max;
}

uint64_t hist_count_le(const struct hist *h, uint64_t v)
{
    uint64_t n = 0;
    for (unsigned i = 0; i <= bucket_of(v); i++)
        n += h->b[i];
    return n;
}

void hist_counts_le(const struct hist *h, const uint64_t *v, size_t n, uint64_t *out)
{
    uint64_t sum = 0;
    unsigned i = 0;
    for (size_t k = 0; k < n; k++) {
        for (unsigned last = bucket_of(v[k]); i <= last; i++)
            sum += h->b[i];
        out[k] = sum;
    }
}

double hist_mean(const struct hist *h)
{
    return h->count ? h->sum / (double)h->count : 0.0;
}

int hist_json(const struct hist *h, struct buf *out)
{
    return buf_printf(out,
                      "{\"count\":%" PRIu64 ",\"mean\":%.1f,\"p50\":%" PRIu64 ",\"p90\":%" PRIu64
                      ",\"p99\":%" PRIu64 ",\"p999\":%" PRIu64 ",\"max\":%" PRIu64 "}",
                      h->count, hist_mean(h), hist_quantile(h, 0.5), hist_quantile(h, 0.9),
                      hist_quantile(h, 0.99), hist_quantile(h, 0.999), h->max);
}
