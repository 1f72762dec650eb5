/*
 * ebbmalloc's own API (include/ebbmalloc.h): ebb_owns, ebb_summary,
 * ebb_purge, ebb_thread_flush, ebb_option, ebb_version and the ebb_ names
 * of the malloc family.
 */
#include "test_util.h"

#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define BIG (64 * TU_MiB)

static void version_matches_header(void **state)
{
    assert_non_null(ebb_version());
    assert_string_equal(ebb_version(), EBB_VERSION_STRING);
}

static void owns_only_its_own_memory(void **state)
{
    int on_stack;
    static int in_data;
    assert_false(ebb_owns(NULL));
    assert_false(ebb_owns(&on_stack));
    assert_false(ebb_owns(&in_data));
    assert_false(ebb_owns((void *)owns_only_its_own_memory));
    assert_false(ebb_owns((void *)(uintptr_t)1));
    assert_false(ebb_owns((void *)UINTPTR_MAX));
    static const size_t sz[] = {1, 64, 4000, 100000, 3 * TU_MiB, 8 * TU_MiB, 64 * TU_MiB};
    for (size_t i = 0; i < TU_ARRAY_LEN(sz); i++) {
        char *p = malloc(sz[i]);
        assert_true(ebb_owns(p));
        void *a = aligned_alloc(4096, sz[i]);
        assert_true(ebb_owns(a));
        free(p);
        free(a);
    }
}

/* A pointer into the middle or the last byte of a live block lies in
 * ebbmalloc's memory as much as the block's start does. */
static void owns_interior_pointers(void **state)
{
    static const size_t sz[] = {1, 64, 4000, 100000, 3 * TU_MiB, 8 * TU_MiB, 64 * TU_MiB};
    for (size_t i = 0; i < TU_ARRAY_LEN(sz); i++) {
        char *p = malloc(sz[i]);
        assert_non_null(p);
        if (!ebb_owns(p + sz[i] / 2) || !ebb_owns(p + sz[i] - 1))
            fail_msg("ebb_owns is false inside a live block of %zu bytes", sz[i]);
        free(p);
    }
}

static void ebb_names_match_standard_ones(void **state)
{
    char *p = ebb_malloc(100);
    assert_non_null(p);
    assert_true(ebb_usable_size(p) >= 100);
    assert_int_equal(ebb_usable_size(p), malloc_usable_size(p));
    tu_fill(p, 100, 1);
    p = ebb_realloc(p, 5000);
    assert_non_null(p);
    assert_true(tu_pattern_ok(p, 100, 1));
    free(p); /* the standard free takes ebb_ blocks and vice versa */
    p = malloc(10);
    ebb_free(p);
    unsigned char *z = ebb_calloc(1000, 3);
    assert_non_null(z);
    assert_true(tu_all_zero(z, 3000));
    ebb_free(z);
    void *a = ebb_aligned_alloc(1 << 16, 10);
    assert_true(tu_is_aligned(a, 1 << 16));
    ebb_free(a);
    void *out = &out;
    assert_int_equal(ebb_posix_memalign(&out, 24, 10), EINVAL);
    assert_ptr_equal(out, &out);
    assert_int_equal(ebb_posix_memalign(&out, 256, 10), 0);
    assert_true(tu_is_aligned(out, 256));
    ebb_free(out);
    errno = 0;
    assert_null(ebb_malloc(SIZE_MAX));
    assert_int_equal(errno, ENOMEM);
}

/* allocated and mapped follow a large live allocation up and down. */
static void summary_follows_allocations(void **state)
{
    ebb_summary_t s0 = tu_summary();
    assert_true(s0.narenas >= 1);
    assert_true(s0.nthreads >= 1);
    assert_true(s0.mapped >= s0.active);
    assert_true(s0.active >= s0.allocated);
    void **v = malloc((BIG / 4096) * sizeof(void *));
    for (size_t i = 0; i < BIG / 4096; i++)
        v[i] = malloc(4096);
    void *big = malloc(BIG);
    memset(big, 1, BIG);
    ebb_summary_t s1 = tu_summary();
    assert_true(s1.allocated >= s0.allocated + 2 * BIG);
    assert_true(s1.active >= s0.active + 2 * BIG);
    assert_true(s1.mapped >= s0.mapped + BIG);
    for (size_t i = 0; i < BIG / 4096; i++)
        free(v[i]);
    free(v);
    free(big);
    ebb_thread_flush();
    ebb_summary_t s2 = tu_summary();
    assert_true(s2.allocated + 2 * BIG - BIG / 8 <= s1.allocated);
}

/* Freed memory is given back by ebb_purge: it reports the bytes, the
 * cumulative purged counter grows by as much, and the resident set falls
 * back to near where it was, the point of ebbmalloc. */
static void purge_returns_freed_pages(void **state)
{
    size_t rss0 = tu_statm(TU_STATM_RESIDENT);
    assert_true(tu_churn_and_free(BIG, 8192));
    assert_true(tu_churn_and_free(2 * BIG, 1000));
    ebb_summary_t s0 = tu_summary();
    size_t released = ebb_purge();
    ebb_summary_t s1 = tu_summary();
    assert_true(tu_statm(TU_STATM_RESIDENT) < rss0 + BIG / 2);
    /* Pages freed above are dirty unless already purged on free. */
    if (s0.dirty > 0) {
        assert_true(released > 0);
        assert_true(s1.dirty < s0.dirty);
    }
    /* Every byte ebb_purge reports as returned to the OS, whether by
     * discarding pages or unmapping them, counts in the cumulative total. */
    if (s1.purged < s0.purged + released)
        fail_msg("ebb_purge() returned %zu bytes but summary.purged grew by %zu "
                 "(mapped %zu -> %zu)", released, s1.purged - s0.purged, s0.mapped, s1.mapped);
    assert_true(ebb_purge() < BIG / 8); /* nothing much left the second time */
}

static void option_reports_values(void **state)
{
    char buf[64];
    const char *v = ebb_option("narenas", buf, sizeof buf);
    assert_non_null(v);
    char *end;
    long n = strtol(v, &end, 10);
    assert_true(*v != '\0' && *end == '\0');
    assert_true(n >= 0 && n <= 1024); /* 0: one per CPU the process may use */
    assert_non_null(ebb_option("tcache", buf, sizeof buf));
    assert_null(ebb_option("no_such_option", buf, sizeof buf));
    assert_null(ebb_option("", buf, sizeof buf));
}

int main(void)
{
    tu_require_ebbmalloc();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(version_matches_header),
        cmocka_unit_test(owns_only_its_own_memory),
        cmocka_unit_test(owns_interior_pointers),
        cmocka_unit_test(ebb_names_match_standard_ones),
        cmocka_unit_test(summary_follows_allocations),
        cmocka_unit_test(purge_returns_freed_pages),
        cmocka_unit_test(option_reports_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
