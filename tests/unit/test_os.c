/* The OS layer: CPU quota parsing (cgroup v1 and v2 formats), the CPU count,
 * aligned mappings and purging, and the cgroup memory use and limit read
 * over a made-up tree of cgroup files. */
#include <ftw.h>
#include <sched.h>
#include <stdlib.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

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

/* The VmFlags line of the mapping that holds addr, from /proc/self/smaps
 * ("" when there is none). */
static void vm_flags(const void *addr, char *out, size_t cap) {
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    bool inside = false;
    out[0] = '\0';
    while (fgets(line, sizeof(line), f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = (uintptr_t)addr >= lo && (uintptr_t)addr < hi;
        } else if (inside && strncmp(line, "VmFlags:", 8) == 0) {
            snprintf(out, cap, "%s", line + 8);
            break;
        }
    }
    fclose(f);
}

static bool has_flag(const char *flags, const char *flag) {
    for (const char *s = flags; (s = strstr(s, flag)) != NULL; s++)
        if ((s == flags || s[-1] == ' ') && (s[2] == ' ' || s[2] == '\n' || s[2] == '\0'))
            return true;
    return false;
}

/* Option thp as the kernel sees it: never marks every mapping nh
 * (MADV_NOHUGEPAGE), always marks pages and huge objects hg
 * (MADV_HUGEPAGE) and metadata still nh, default neither. */
static void test_mapped_thp_advice(void **state) {
    (void)state;
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", F_OK) != 0) {
        print_message("no transparent huge pages in this kernel: advice not checked\n");
        return;
    }
    static const char *const mode_name[] = {"never", "default", "always"};
    static const char *const kind_name[] = {"meta", "pages", "huge"};
    for (unsigned mode = EBB_THP_NEVER; mode <= EBB_THP_ALWAYS; mode++) {
        ebb__os_set_thp(mode);
        for (ebb_map_kind_t kind = EBB_MAP_META; kind <= EBB_MAP_HUGE; kind++) {
            char *p = ebb__os_map_aligned(EBB_SEG, EBB_SEG, 0);
            assert_non_null(p);
            ebb__os_mapped(p, EBB_SEG, kind);
            char flags[256];
            vm_flags(p + EBB_SEG / 2, flags, sizeof(flags));
            bool nh = has_flag(flags, "nh"), hg = has_flag(flags, "hg");
            bool want_nh = mode == EBB_THP_NEVER || (mode == EBB_THP_ALWAYS && kind == EBB_MAP_META);
            bool want_hg = mode == EBB_THP_ALWAYS && kind != EBB_MAP_META;
            if (nh != want_nh || hg != want_hg)
                fail_msg("thp:%s, %s mapping: VmFlags%s", mode_name[mode], kind_name[kind], flags);
            assert_int_equal(ebb__os_unmap(p, EBB_SEG), 0);
        }
    }
    ebb__os_set_thp((unsigned)ebb__opts.thp);
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


/* ---- cgroup memory, over a made-up tree ---- */
static char cg_root[64];

/* Write text to cg_root/dir/name, making dir as needed. */
static void cg_put(const char *dir, const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof(path), "%s%s", cg_root, dir);
    for (char *p = path + strlen(cg_root) + 1; *p; p++)
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0700);
            *p = '/';
        }
    mkdir(path, 0700);
    snprintf(path, sizeof(path), "%s%s/%s", cg_root, dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static int cg_remove(const char *path, const struct stat *st, int type, struct FTW *ftw) {
    (void)st, (void)type, (void)ftw;
    return remove(path);
}

static void cg_clean(void) { assert_int_equal(nftw(cg_root, cg_remove, 8, FTW_DEPTH | FTW_PHYS), 0); }

static void cg_setup(void) {
    snprintf(cg_root, sizeof(cg_root), "/tmp/ebb-cgtest-XXXXXX");
    assert_non_null(mkdtemp(cg_root));
}

static bool cg_read(const char *rel, bool v2, unsigned pct) {
    uint64_t cur = 12345, lim = 12345;
    return ebb__os_cgroup_memory_in(cg_root, rel, v2, pct, &cur, &lim);
}

/* The cgroup at rel reads as use cur of limit lim. */
static void cg_expect(const char *rel, bool v2, unsigned pct, uint64_t cur, uint64_t lim) {
    uint64_t c = 12345, l = 12345;
    assert_true(ebb__os_cgroup_memory_in(cg_root, rel, v2, pct, &c, &l));
    assert_int_equal(c, cur);
    assert_int_equal(l, lim);
}

static void test_cgroup_memory_v2(void **state) {
    (void)state;
    cg_setup();
    /* A pod at 90% of its limit holding a container with a looser one: the
     * pod's limit binds (the nearest limit alone would say 22%). */
    cg_put("/pod", "memory.max", "1000\n");
    cg_put("/pod", "memory.current", "900\n");
    cg_put("/pod/ctr", "memory.max", "4000\n");
    cg_put("/pod/ctr", "memory.high", "max\n");
    cg_put("/pod/ctr", "memory.current", "900\n");
    cg_expect("/pod/ctr", true, 0, 900, 1000);
    /* memory.high under memory.max is the limit that matters. */
    cg_put("/pod", "memory.max", "max\n");
    cg_put("/pod/ctr", "memory.high", "950\n");
    cg_expect("/pod/ctr", true, 0, 900, 950);
    /* Inactive file pages are not counted, once the charge is at pct. */
    cg_put("/pod/ctr", "memory.stat", "anon 100\nfile 700\nactive_file 200\ninactive_file 500\n");
    cg_expect("/pod/ctr", true, 0, 400, 950);
    cg_expect("/pod/ctr", true, 94, 400, 950); /* 900 >= 94% of 950 */
    cg_expect("/pod/ctr", true, 95, 900, 950); /* below: not looked up */
    cg_put("/pod/ctr", "memory.stat", "inactive_file 5000\n"); /* never below 0 */
    cg_expect("/pod/ctr", true, 0, 0, 950);
    /* No limit anywhere, or none readable: no answer. */
    cg_put("/pod/ctr", "memory.high", "max\n");
    cg_put("/pod/ctr", "memory.max", "max\n");
    assert_false(cg_read("/pod/ctr", true, 0));
    cg_put("/pod/ctr", "memory.max", "lots\n");
    assert_false(cg_read("/pod/ctr", true, 0));
    cg_put("/pod/ctr", "memory.max", "2000\n");
    cg_put("/pod/ctr", "memory.current", "garbage\n");
    assert_false(cg_read("/pod/ctr", true, 0));
    /* A path not visible under the mount (a cgroup namespace): the mount's
     * root is the container's own cgroup. */
    cg_put("", "memory.max", "2000\n");
    cg_put("", "memory.current", "100\n");
    cg_expect("/kubepods/pod9/ctr9", true, 0, 100, 2000);
    cg_expect("/", true, 0, 100, 2000);
    cg_clean();
}

static void test_cgroup_memory_v1(void **state) {
    (void)state;
    cg_setup();
    cg_put("", "memory.limit_in_bytes", "9223372036854771712\n"); /* v1's "none" */
    cg_put("", "memory.usage_in_bytes", "5000\n");
    cg_put("/svc", "memory.limit_in_bytes", "1000\n");
    cg_put("/svc", "memory.usage_in_bytes", "800\n");
    cg_expect("/svc", false, 0, 800, 1000);
    /* v1's usage is hierarchical: the hierarchical inactive count goes. */
    cg_put("/svc", "memory.stat", "inactive_file 700\ntotal_inactive_file 300\n");
    cg_expect("/svc", false, 80, 500, 1000);
    cg_expect("/svc", false, 81, 800, 1000);
    cg_put("/svc", "memory.limit_in_bytes", "9223372036854771712\n");
    assert_false(cg_read("/svc", false, 0));
    cg_clean();
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_cpu_list),
        cmocka_unit_test(test_parse_cpu_max_v2),
        cmocka_unit_test(test_quota_v1),
        cmocka_unit_test(test_ncpus_respects_affinity),
        cmocka_unit_test(test_map_aligned_and_purge),
        cmocka_unit_test(test_mapped_thp_advice),
        cmocka_unit_test(test_getenv_without_allocating),
        cmocka_unit_test(test_cgroup_memory_v2),
        cmocka_unit_test(test_cgroup_memory_v1),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
