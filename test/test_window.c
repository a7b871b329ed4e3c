/* test_window: time-bucketed uptime and percentiles (src/window.c), driven with made-up unix
 * times: which slots a window covers, slots recycled as time passes, the day from hour slots,
 * and quantiles exact for steady values and within a bin otherwise. */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "llmux/window.h"

static struct window w;

static double uptime(int64_t now, unsigned minutes)
{
    double pct;
    return window_uptime(&w, now, minutes, &pct) == 0 ? pct : -1;
}

int main(void)
{
    const int64_t t0 = 1796169600; /* a whole hour */
    CHECK(uptime(t0, 30) < 0);      /* nothing yet */

    /* minute 0: 4 ok; minute 10: 4 failed; minute 27: 2 ok, 2 failed */
    for (int i = 0; i < 4; i++)
        window_add(&w, t0 + i, 0, 100, 50);
    for (int i = 0; i < 4; i++)
        window_add(&w, t0 + 600 + i, 1, 0, 0);
    for (int i = 0; i < 4; i++)
        window_add(&w, t0 + 27 * 60 + i, i & 1, 0, 0);
    int64_t now = t0 + 29 * 60 + 30; /* minute 29 */
    CHECK(fabs(uptime(now, 5) - 50) < 1e-9);             /* minutes 25-29 */
    CHECK(fabs(uptime(now, 30) - 100.0 * 6 / 12) < 1e-9); /* all three */
    CHECK(fabs(uptime(now, 1440) - 50) < 1e-9);           /* the hour slot holds all 12 */

    /* 31 minutes on, minute 0 has left the 30-minute window but not the day */
    now = t0 + 30 * 60 + 5;
    CHECK(fabs(uptime(now, 30) - 100.0 * 2 / 8) < 1e-9);
    CHECK(fabs(uptime(now, 1440) - 50) < 1e-9);

    /* a slot is recycled when its minute comes round again: minute 40 replaces minute 10 */
    window_add(&w, t0 + 40 * 60, 0, 0, 0);
    CHECK(fabs(uptime(t0 + 40 * 60, 30) - 100.0 * 3 / 5) < 1e-9); /* minute 27 and 40 */

    /* a day later, nothing is left in either window */
    CHECK(uptime(t0 + 25 * 3600, 30) < 0);
    CHECK(uptime(t0 + 25 * 3600, 1440) < 0);

    /* quantiles: a steady TTFT reads back exactly (clamped to the exact min and max) */
    static const double qs[4] = {0.5, 0.75, 0.9, 0.99};
    double v[4];
    int64_t t1 = t0 + 48 * 3600;
    CHECK(window_quantiles(&w, t1, 30, WIN_TTFT, qs, 4, v) < 0);
    for (int i = 0; i < 10; i++)
        window_add(&w, t1, 0, 153, 0);
    CHECK_INT(window_quantiles(&w, t1, 30, WIN_TTFT, qs, 4, v), 0);
    for (int i = 0; i < 4; i++)
        CHECK(fabs(v[i] - 153) < 1e-3);
    CHECK(window_quantiles(&w, t1, 30, WIN_TPS, qs, 4, v) < 0); /* no throughput samples */

    /* 1..1000 ms uniformly: each quantile within the 25 % of its bin */
    memset(&w, 0, sizeof(w));
    for (int i = 1; i <= 1000; i++)
        window_add(&w, t1, 0, i, i / 10.0);
    CHECK_INT(window_quantiles(&w, t1, 5, WIN_TTFT, qs, 4, v), 0);
    for (int i = 0; i < 4; i++)
        CHECK(fabs(v[i] - qs[i] * 1000) <= qs[i] * 1000 * 0.25);
    CHECK_INT(window_quantiles(&w, t1, 5, WIN_TPS, qs, 1, v), 0);
    CHECK(fabs(v[0] - 50) <= 50 * 0.25);
    printf("struct window: %zu bytes per deployment\n", sizeof(struct window));
    CHECK(sizeof(struct window) <= 64 * 1024);
    return check_report();
}
