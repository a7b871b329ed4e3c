/* hist: a log-linear histogram of microsecond values (8 sub-buckets per power of two, so any
 * value is placed within 12.5%), for llmux's own overhead figure in GET /v1/status. */
#ifndef LLMUX_HIST_H
#define LLMUX_HIST_H

#include <stdint.h>

#include "llmux/buf.h"

#define HIST_SUB 8
#define HIST_BUCKETS (HIST_SUB * 40)

struct hist {
    uint64_t count;
    uint64_t max;
    uint64_t sum;
    uint32_t buckets[HIST_BUCKETS];
};

void hist_add(struct hist *h, uint64_t v);
/* The value at quantile q (0..1): the upper edge of its bucket (exact below 8). 0 when empty. */
uint64_t hist_quantile(const struct hist *h, double q);
/* {"count","mean","p50","p90","p99","p999","max"} appended to out. */
int hist_json(const struct hist *h, struct buf *out);

#endif
