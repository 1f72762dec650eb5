/*
 * malloc_trim(0) gives freed memory back at once: with no background
 * thread, a decay of a minute and the dirty cap out of the way (set by
 * ctest), nothing else purges, so the resident set stays up after the
 * frees until malloc_trim, and falls under baseline + live + DU_SLACK as
 * soon as it returns 1.
 */
#include "decay_util.h"

#include <setjmp.h>
#include <stdarg.h>

#include <cmocka.h>

enum { TOTAL = 200 << 20 };

static void trim_releases_at_once(void **state)
{
    assert_int_equal(du_option("background_thread"), 0);
    assert_true(du_option("decay_ms") >= 60000);
    size_t base = tu_statm(TU_STATM_RESIDENT);
    du_churn_t c = {.seed = tu_seed(5), .bytes = TOTAL};
    assert_true(du_churn(&c));
    size_t before = tu_statm(TU_STATM_RESIDENT);
    size_t bound = base + c.kept_bytes + DU_SLACK;
    /* Nothing purged yet: most of the freed memory is still resident. */
    assert_true(before > bound + TOTAL / 4);
    int r = malloc_trim(0);
    size_t after = tu_statm(TU_STATM_RESIDENT);
    fprintf(stderr, "baseline %zu MiB, live %zu MiB, resident %zu MiB before malloc_trim, "
            "%zu MiB after (it returned %d; bound %zu MiB)\n", base / TU_MiB,
            c.kept_bytes / TU_MiB, before / TU_MiB, after / TU_MiB, r, bound / TU_MiB);
    assert_int_equal(r, 1);
    assert_true(after <= bound);
    du_release(&c);
}

int main(void)
{
    tu_require_ebbmalloc();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trim_releases_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
