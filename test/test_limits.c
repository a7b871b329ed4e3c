/* limits: GCRA admissions exactly at the limit, the retry and reset times a client is told,
 * refunds, limits up to UINT32_MAX per minute (no zero spacing), OpenAI's duration format, and
 * budget periods. Time is passed in, so nothing here waits. */
#include <stdint.h>

#include "check.h"
#include "llmux/limits.h"

#define S 1000000000ull /* a second in ns */

static void test_gcra(void)
{
    _Atomic uint64_t tat = 0;
    uint64_t now = 1000 * S, rem, reset, retry;
    for (int i = 0; i < 3; i++) { /* a burst of the whole allowance passes */
        CHECK_INT(limits_take(&tat, 3, 1, now, &rem, &reset, &retry), 1);
        CHECK_INT(rem, 2 - i);
        CHECK_INT(reset, (uint64_t)(i + 1) * 20000000);
    }
    CHECK_INT(limits_take(&tat, 3, 1, now, &rem, &reset, &retry), 0);
    CHECK_INT(retry, 20000000); /* one slot back in 60 s / 3 */
    CHECK_INT(rem, 0);
    CHECK_INT(limits_take(&tat, 3, 1, now + 20 * S - 1, &rem, &reset, &retry), 0);
    CHECK_INT(limits_take(&tat, 3, 1, now + 20 * S, &rem, &reset, &retry), 1);
    /* a refund gives the slot back at once */
    limits_adjust(&tat, 3, -1, now + 20 * S);
    CHECK_INT(limits_take(&tat, 3, 1, now + 20 * S, &rem, &reset, &retry), 1);
    /* a refund larger than what is taken never goes below now */
    limits_adjust(&tat, 3, -100, now + 20 * S);
    CHECK_INT(tat, now + 20 * S);
    /* a charge after the fact (tokens used past the estimate) */
    _Atomic uint64_t tok = 0;
    CHECK_INT(limits_take(&tok, 600, 100, now, &rem, &reset, &retry), 1);
    CHECK_INT(rem, 500);
    limits_adjust(&tok, 600, 250, now);
    CHECK_INT(limits_take(&tok, 600, 300, now, &rem, &reset, &retry), 0);
    CHECK_INT(rem, 250);
}

static void test_huge_limits(void)
{
    _Atomic uint64_t tat = 0;
    uint64_t rem, reset, retry;
    static const uint32_t pers[] = {60000001u, 100000000u, UINT32_MAX};
    for (size_t i = 0; i < sizeof(pers) / sizeof(pers[0]); i++) {
        uint32_t per = pers[i];
        tat = 0;
        CHECK_INT(limits_take(&tat, per, 1000, 5 * S, &rem, &reset, &retry), 1);
        CHECK(tat > 5 * S); /* the spacing is never zero */
        CHECK(rem <= per);
        limits_adjust(&tat, per, -1, 5 * S);
    }
}

static void test_duration(void)
{
    char b[24];
    limits_duration(20000, b, sizeof(b));
    CHECK_STR(b, "20ms");
    limits_duration(1000000, b, sizeof(b));
    CHECK_STR(b, "1s");
    limits_duration(1500000, b, sizeof(b));
    CHECK_STR(b, "1.5s");
    limits_duration(360000000, b, sizeof(b));
    CHECK_STR(b, "6m0s");
}

static void test_periods(void)
{
    CHECK_INT(limits_period(0, 1764633600), 0);          /* total */
    CHECK_INT(limits_period(1, 1764633600), 1764633600 / 86400); /* day */
    CHECK_INT(limits_period(2, 1764633600), 125 * 12 + 11);      /* 2025-12: month */
}

int main(void)
{
    test_gcra();
    test_huge_limits();
    test_duration();
    test_periods();
    return check_report();
}
