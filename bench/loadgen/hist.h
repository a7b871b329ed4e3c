/* hist: a log-linear latency histogram in nanoseconds, the bucket shape of HdrHistogram.
 *
 * Values below 256 ns have a bucket each; above, every power of two is cut into 256 equal
 * buckets, so a value is known to within 0.4 % (4 us at 1 ms, under 1 ns below 256 ns) while
 * the whole range up to 2^42 ns (73 minutes) fits in a fixed 70 KB array. Adding is O(1) and
 * never allocates; quantiles walk the array. A histogram is plain data: zero it to reset.
 */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS 8
#define HIST_MAX_BITS 42
#define HIST_BUCKETS ((HIST_MAX_BITS - HIST_SUB_BITS + 1) << HIST_SUB_BITS)

struct hist {
    uint64_t count;
    uint64_t min, max; /* exact extremes, in ns */
    double sum;        /* for the mean */
    uint64_t b[HIST_BUCKETS];
};

/* Empty the histogram. */
void hist_reset(struct hist *h);
/* Record one value in ns (values past 2^42 ns count as the largest bucket). */
void hist_add(struct hist *h, uint64_t ns);
/* The value at quantile q in [0, 1], in ns: the midpoint of the bucket holding the
 * ceil(q * count)-th smallest value, clamped to [min, max]; 0 when empty. q >= 1 is max. */
uint64_t hist_quantile(const struct hist *h, double q);
/* Mean in ns; 0 when empty. */
double hist_mean(const struct hist *h);

#endif
