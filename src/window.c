/* window: time-bucketed attempt outcomes and latency/throughput histograms. See
 * include/llmux/window.h. */
#include "llmux/window.h"

#include <math.h>
#include <string.h>

#define GROWTH 1.25

static unsigned bin_of(double v)
{
    if (v < 1)
        return 0;
    double i = floor(log(v) / log(GROWTH)) + 1;
    return i >= WIN_BINS - 1 ? WIN_BINS - 1 : (unsigned)i;
}

static void hist_put(struct win_hist *h, double v)
{
    float f = (float)v;
    if (!h->n || f < h->min)
        h->min = f;
    if (!h->n || f > h->max)
        h->max = f;
    h->n++;
    h->bin[bin_of(v)]++;
}

/* The slot of `epoch` in a ring of n, emptied when it held an older one. */
static struct win_slot *slot(struct win_slot *ring, size_t n, uint32_t epoch)
{
    struct win_slot *s = &ring[epoch % n];
    if (s->epoch != epoch) {
        memset(s, 0, sizeof(*s));
        s->epoch = epoch;
    }
    return s;
}

void window_add(struct window *w, int64_t now, int failed, double ttft_ms, double tps)
{
    struct win_slot *s[2] = {slot(w->minute, WIN_MINUTES, (uint32_t)(now / 60) + 1),
                             slot(w->hour, WIN_HOURS, (uint32_t)(now / 3600) + 1)};
    for (int i = 0; i < 2; i++) {
        if (failed)
            s[i]->failed++;
        else
            s[i]->ok++;
        if (ttft_ms > 0)
            hist_put(&s[i]->h[WIN_TTFT], ttft_ms);
        if (tps > 0)
            hist_put(&s[i]->h[WIN_TPS], tps);
    }
}

static void hist_merge(struct win_hist *d, const struct win_hist *s)
{
    if (!s->n)
        return;
    if (!d->n || s->min < d->min)
        d->min = s->min;
    if (!d->n || s->max > d->max)
        d->max = s->max;
    d->n += s->n;
    for (size_t i = 0; i < WIN_BINS; i++)
        d->bin[i] += s->bin[i];
}

static void ring_merge(struct win_slot *d, const struct win_slot *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!s[i].epoch || s[i].epoch < d[i].epoch)
            continue;
        if (s[i].epoch > d[i].epoch) {
            d[i] = s[i];
            continue;
        }
        d[i].ok += s[i].ok;
        d[i].failed += s[i].failed;
        hist_merge(&d[i].h[WIN_TTFT], &s[i].h[WIN_TTFT]);
        hist_merge(&d[i].h[WIN_TPS], &s[i].h[WIN_TPS]);
    }
}

void window_merge(struct window *dst, const struct window *src)
{
    ring_merge(dst->minute, src->minute, WIN_MINUTES);
    ring_merge(dst->hour, src->hour, WIN_HOURS);
}

/* The ring holding the last `minutes` (the hour ring for more than 30) and the range of
 * slot epochs in the window. */
static const struct win_slot *ring_for(const struct window *w, int64_t now, unsigned minutes,
                                       uint32_t *oldest, uint32_t *newest)
{
    if (minutes > WIN_MINUTES) {
        *newest = (uint32_t)(now / 3600) + 1;
        *oldest = *newest - (WIN_HOURS - 1);
        return w->hour;
    }
    *newest = (uint32_t)(now / 60) + 1;
    *oldest = *newest - (minutes ? minutes - 1 : 0);
    return w->minute;
}

#define RING_SIZE(minutes) ((minutes) > WIN_MINUTES ? WIN_HOURS : WIN_MINUTES)

int window_uptime(const struct window *w, int64_t now, unsigned minutes, double *pct)
{
    uint32_t oldest, newest;
    const struct win_slot *ring = ring_for(w, now, minutes, &oldest, &newest);
    uint64_t ok = 0, failed = 0;
    for (size_t i = 0; i < RING_SIZE(minutes); i++) {
        if (ring[i].epoch >= oldest && ring[i].epoch <= newest) {
            ok += ring[i].ok;
            failed += ring[i].failed;
        }
    }
    if (ok + failed == 0)
        return -1;
    *pct = 100.0 * (double)ok / (double)(ok + failed);
    return 0;
}

int window_quantiles(const struct window *w, int64_t now, unsigned minutes, enum win_series s,
                     const double *qs, size_t nq, double *out)
{
    uint32_t oldest, newest;
    const struct win_slot *ring = ring_for(w, now, minutes, &oldest, &newest);
    struct win_hist m;
    memset(&m, 0, sizeof(m));
    for (size_t i = 0; i < RING_SIZE(minutes); i++) {
        const struct win_hist *h = &ring[i].h[s];
        if (ring[i].epoch < oldest || ring[i].epoch > newest || !h->n)
            continue;
        if (!m.n || h->min < m.min)
            m.min = h->min;
        if (!m.n || h->max > m.max)
            m.max = h->max;
        m.n += h->n;
        for (size_t b = 0; b < WIN_BINS; b++)
            m.bin[b] += h->bin[b];
    }
    if (!m.n)
        return -1;
    for (size_t k = 0; k < nq; k++) {
        double rank = qs[k] * (double)m.n; /* how many samples lie below the answer */
        uint64_t below = 0;
        size_t b = 0;
        while (b < WIN_BINS - 1 && below + m.bin[b] <= (uint64_t)rank)
            below += m.bin[b++];
        double lo = b ? pow(GROWTH, (double)b - 1) : 0, hi = pow(GROWTH, (double)b);
        double frac = m.bin[b] ? (rank - (double)below) / (double)m.bin[b] : 0;
        double v = lo + (hi - lo) * frac;
        out[k] = v < m.min ? m.min : v > m.max ? m.max : v;
    }
    return 0;
}
