/* window: what one deployment did recently, in time buckets of bounded size: a ring of 30
 * one-minute slots and one of 24 one-hour slots, each counting attempts that succeeded and
 * failed (for the provider's fault) and holding two small geometric histograms (time to first
 * token in ms, output tokens per second). Merging the slots of a window answers uptime and
 * p50..p99 over the last 5 or 30 minutes or the last day. Adding is O(1), never allocates,
 * and never formats; slots are recycled by their unix minute (hour) number.
 *
 * Histogram bins grow by 25 % from 1 (ms or tokens/s) up to ~2.6e5; a quantile is
 * interpolated inside its bin and clamped to the slot's exact minimum and maximum, so a
 * steady value reads back exactly and others within the bin's 25 %.
 */
#ifndef LLMUX_WINDOW_H
#define LLMUX_WINDOW_H

#include <stddef.h>
#include <stdint.h>

#define WIN_BINS 56
#define WIN_MINUTES 30
#define WIN_HOURS 24

enum win_series { WIN_TTFT = 0, WIN_TPS = 1 };

struct win_hist {
    uint32_t n;
    float min, max;
    uint32_t bin[WIN_BINS];
};

struct win_slot {
    uint32_t epoch; /* unix minute (or hour) + 1; 0: empty */
    uint32_t ok, failed;
    struct win_hist h[2]; /* by enum win_series */
};

struct window {
    struct win_slot minute[WIN_MINUTES];
    struct win_slot hour[WIN_HOURS];
};

/* One attempt's outcome at unix time `now`: failed (the provider's fault) or not, and when
 * known (> 0) its time to first token and output tokens per second. */
void window_add(struct window *w, int64_t now, int failed, double ttft_ms, double tps);

/* Add src into dst: slots of the same minute (hour) add up, a newer slot replaces an older
 * one in the same place. */
void window_merge(struct window *dst, const struct window *src);

/* Percent of attempts that did not fail over the last `minutes` (at most 30, or 1440 for the
 * last day from the hour slots). Returns 0, or -1 when there were none. */
int window_uptime(const struct window *w, int64_t now, unsigned minutes, double *pct);

/* Quantiles qs[0..n) of a series over the last `minutes` (as above) into out. Returns 0, or -1
 * when the window holds no sample. */
int window_quantiles(const struct window *w, int64_t now, unsigned minutes, enum win_series s,
                     const double *qs, size_t n, double *out);

#endif
