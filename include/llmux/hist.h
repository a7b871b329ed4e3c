/* hist: a log-linear histogram, the bucket shape of HdrHistogram: values below 256 have a
 * bucket each; above, every power of two is cut into 256 equal buckets, so a value is known to
 * within 0.4 % while the range up to 2^42 fits in a fixed array. Adding is O(1) and never
 * allocates; quantiles walk the array. Plain data: zero it to reset. Unit-free: the gateway's
 * overhead figure (GET /v1/status) records microseconds, bench/'s load client nanoseconds.
 */
#ifndef LLMUX_HIST_H
#define LLMUX_HIST_H

#include <stddef.h>
#include <stdint.h>

#include "llmux/buf.h"

#define HIST_SUB_BITS 8
#define HIST_MAX_BITS 42
#define HIST_BUCKETS ((HIST_MAX_BITS - HIST_SUB_BITS + 1) << HIST_SUB_BITS)

struct hist {
    uint64_t count;
    uint64_t min, max; /* exact extremes */
    double sum;        /* for the mean */
    uint64_t b[HIST_BUCKETS];
};

/* Empty the histogram. */
void hist_reset(struct hist *h);
/* Record one value (values past 2^42 count as the largest bucket). */
void hist_add(struct hist *h, uint64_t v);
/* The value at quantile q in [0, 1]: the midpoint of the bucket holding the ceil(q * count)-th
 * smallest value, clamped to [min, max]; 0 when empty. q >= 1 is max. */
uint64_t hist_quantile(const struct hist *h, double q);
/* How many values were at most v (to within a bucket: the one holding v counts whole). */
uint64_t hist_count_le(const struct hist *h, uint64_t v);
/* hist_count_le for each of n ascending values v[] into out[], in one pass. */
void hist_counts_le(const struct hist *h, const uint64_t *v, size_t n, uint64_t *out);
/* Mean; 0 when empty. */
double hist_mean(const struct hist *h);
/* {"count","mean","p50","p90","p99","p999","max"} appended to out. */
int hist_json(const struct hist *h, struct buf *out);

#endif
