/* The OS layer: CPU quota parsing (cgroup v1 and v2 formats), the CPU count,
 * aligned mappings and purging. */
#include <sched.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "unit.h"

static void test_parse_cpu_max_v2(void **state) {
    (void)state;
    assert_int_equal(ebb__os_parse_cpu_max("max 100000\n"), 0);
    assert_int_equal(ebb__os_parse_cpu_max("200000 100000\n"), 2);
    assert_int_equal(ebb__os_parse_cpu_max("150000 100000"), 2); /* rounded up */
    assert_int_equal(ebb__os_parse_cpu_max("50000 100000"), 1);
    assert_int_equal(ebb__os_parse_cpu_max("garbage"), 0);
    assert_int_equal(ebb__os_parse_cpu_max(""), 0);
    assert_int_equal(ebb__os_parse_cpu_max("100000"), 0); /* no period */
}

static void test_quota_v1(void **state) {
    (void)state;
    assert_int_equal(ebb__os_cpu_quota_to_cpus(-1, 100000), 0);
    assert_int_equal(ebb__os_cpu_quota_to_cpus(300000, 100000), 3);
    assert_int_equal(ebb__os_cpu_quota_to_cpus(1, 100000), 1);
    assert_int_equal(ebb__os_cpu_quota_to_cpus(100000, 0), 0);
}

static void test_ncpus_respects_affinity(void **state) {
    (void)state;
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof(set), &set), 0);
    unsigned aff = (unsigned)CPU_COUNT(&set);
    unsigned n = ebb__os_ncpus();
    assert_true(n >= 1 && n <= aff);
    unsigned q = ebb__os_cgroup_cpu_limit();
    if (q)
        assert_true(n <= q);
    /* Restrict affinity to one CPU: the count follows. */
    cpu_set_t one;
    CPU_ZERO(&one);
    for (int i = 0; i < CPU_SETSIZE; i++)
        if (CPU_ISSET(i, &set)) {
            CPU_SET(i, &one);
            break;
        }
    assert_int_equal(sched_setaffinity(0, sizeof(one), &one), 0);
    assert_int_equal(ebb__os_ncpus(), 1);
    assert_int_equal(sched_setaffinity(0, sizeof(set), &set), 0);
}

static void test_map_aligned_and_purge(void **state) {
    (void)state;
    char *p = ebb__os_map_aligned(EBB_SEG, EBB_SEG, 0);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % EBB_SEG, 0);
    memset(p, 7, 3 * EBB_PAGE);
    assert_int_equal(ebb__os_purge(p, 3 * EBB_PAGE), 0);
    assert_int_equal(p[0], 0);
    assert_int_equal(p[3 * EBB_PAGE - 1], 0);
    assert_int_equal(ebb__os_unmap(p, EBB_SEG), 0);
    /* An offset alignment: (m + EBB_SEG) aligned to 4 segments. */
    char *q = ebb__os_map_aligned(2 * EBB_SEG, 4 * EBB_SEG, EBB_SEG);
    assert_non_null(q);
    assert_int_equal(((uintptr_t)q + EBB_SEG) % (4 * EBB_SEG), 0);
    assert_int_equal((uintptr_t)q % EBB_SEG, 0);
    assert_int_equal(ebb__os_unmap(q, 2 * EBB_SEG), 0);
}

static void test_getenv_without_allocating(void **state) {
    (void)state;
    setenv("EBB_UNIT_VAR", "v1", 1);
    assert_string_equal(ebb__os_getenv("EBB_UNIT_VAR"), "v1");
    assert_null(ebb__os_getenv("EBB_UNIT_VA"));
    assert_null(ebb__os_getenv("EBB_UNIT_VAR_NOT_SET"));
}

/* /sys/devices/system/cpu/possible: the highest CPU id + 1. */
static void test_parse_cpu_list(void **state) {
    (void)state;
    assert_int_equal(ebb__os_parse_cpu_list("0-1\n"), 2);
    assert_int_equal(ebb__os_parse_cpu_list("0\n"), 1);
    assert_int_equal(ebb__os_parse_cpu_list("0-3,8-11\n"), 12);
    assert_int_equal(ebb__os_parse_cpu_list("0,2,4-5"), 6);
    assert_int_equal(ebb__os_parse_cpu_list(""), 0);
    assert_int_equal(ebb__os_parse_cpu_list("none"), 0);
    unsigned n = ebb__os_cpu_ids();
    assert_true(n >= 1 && ebb__os_cpu_now() < n);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_cpu_list),
        cmocka_unit_test(test_parse_cpu_max_v2),
        cmocka_unit_test(test_quota_v1),
        cmocka_unit_test(test_ncpus_respects_affinity),
        cmocka_unit_test(test_map_aligned_and_purge),
        cmocka_unit_test(test_getenv_without_allocating),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
