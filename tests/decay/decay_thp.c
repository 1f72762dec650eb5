/*
 * Purged pages stay purged where the kernel backs memory with transparent
 * huge pages.
 *
 * On a system set to "always" (/sys/kernel/mm/transparent_hugepage/enabled,
 * the default of RHEL and OpenShift), khugepaged collapses every 2 MiB
 * range with a resident page in it back into one whole huge page (up to
 * 511 of its 512 pages may be empty: khugepaged/max_ptes_none). The pages
 * an allocator purged come back, as zeroes, and the resident set creeps up
 * to the peak again. MADV_COLLAPSE (Linux 6.1) does the same at once, so
 * this test plays khugepaged with it over every 2 MiB range that holds a
 * live block, after malloc_trim has purged the rest:
 *  - under thp:never (the default) the allocator's mappings refuse the
 *    collapse (MADV_NOHUGEPAGE), and the resident set stays down;
 *  - under thp:default (ctest's decay_thp_default) the same collapse fills
 *    them back: what the advice prevents, seen on this machine.
 * Skips (exit 77) where the kernel has no MADV_COLLAPSE.
 */
#include "decay_util.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>

#include <cmocka.h>

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25
#endif

enum { SKIP = 77, TOTAL = 200 << 20, HUGE_PAGE = 2 << 20 };

/* Does the kernel collapse a private anonymous range of ours at all? */
static const char *collapse_unsupported(void)
{
    size_t len = 2 * HUGE_PAGE;
    char *raw = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED)
        return "no memory for the probe";
    char *p = (char *)(((uintptr_t)raw + HUGE_PAGE - 1) & ~(uintptr_t)(HUGE_PAGE - 1));
    p[0] = 1;
    int r = madvise(p, HUGE_PAGE, MADV_COLLAPSE);
    int e = errno;
    munmap(raw, len);
    if (r == 0)
        return NULL;
    return e == EINVAL ? "the kernel has no MADV_COLLAPSE (Linux 6.1) or no transparent huge pages"
                       : "MADV_COLLAPSE failed on a plain mapping";
}

/* The huge-page ranges that hold a block, sorted and each once. */
static int cmp_addr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static size_t ranges_holding(void **blocks, size_t n, uintptr_t *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (uintptr_t)blocks[i] & ~(uintptr_t)(HUGE_PAGE - 1);
    qsort(out, n, sizeof(*out), cmp_addr);
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || out[k - 1] != out[i])
            out[k++] = out[i];
    return k;
}

/* FNV-1a over a block's usable bytes. */
static uint64_t block_hash(const unsigned char *b)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0, n = malloc_usable_size((void *)b); i < n; i++)
        h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void purged_pages_stay_purged(void **state)
{
    (void)state;
    char mode[16];
    assert_non_null(ebb_option("thp", mode, sizeof(mode)));
    bool advised = strcmp(mode, "never") == 0;
    assert_true(advised || strcmp(mode, "default") == 0);
    assert_int_equal(du_option("background_thread"), 0);

    size_t base = tu_statm(TU_STATM_RESIDENT);
    du_churn_t c = {.seed = tu_seed(7), .bytes = TOTAL};
    assert_true(du_churn(&c));
    assert_int_equal(malloc_trim(0), 1);
    size_t bound = base + c.kept_bytes + DU_SLACK;
    size_t trimmed = tu_statm(TU_STATM_RESIDENT);
    assert_true(trimmed <= bound);

    uint64_t *hashes = malloc(c.nkept * sizeof(uint64_t));
    assert_non_null(hashes);
    for (size_t i = 0; i < c.nkept; i++)
        hashes[i] = block_hash(c.kept[i]);
    uintptr_t *ranges = malloc(c.nkept * sizeof(uintptr_t));
    assert_non_null(ranges);
    size_t nranges = ranges_holding(c.kept, c.nkept, ranges), collapsed = 0, refused = 0,
           no_page = 0;
    for (size_t i = 0; i < nranges; i++) {
        if (madvise((void *)ranges[i], HUGE_PAGE, MADV_COLLAPSE) == 0)
            collapsed++;
        else if (errno == EINVAL)
            refused++;
        else if (errno == EAGAIN || errno == ENOMEM)
            no_page++; /* no huge page to be had just now */
    }
    free(ranges);
    size_t after = tu_statm(TU_STATM_RESIDENT);
    fprintf(stderr,
            "thp:%s: baseline %zu MiB, live %zu MiB in %zu blocks, resident %zu MiB after "
            "malloc_trim (bound %zu MiB); of the %zu huge-page ranges that hold them, %zu "
            "collapsed, %zu refused (EINVAL), %zu without a huge page (EAGAIN, ENOMEM); "
            "resident %zu MiB after\n",
            mode, base / TU_MiB, c.kept_bytes / TU_MiB, c.nkept, trimmed / TU_MiB,
            bound / TU_MiB, nranges, collapsed, refused, no_page, after / TU_MiB);
    for (size_t i = 0; i < c.nkept; i++)
        assert_true(block_hash(c.kept[i]) == hashes[i]);
    free(hashes);
    if (advised) {
        assert_int_equal(collapsed, 0);
        assert_int_equal(refused, nranges);
        assert_true(after <= bound);
    } else {
        /* Left to the system, the purged pages come back as huge pages:
         * each collapse makes 2 MiB resident where a few pages were. */
        if (collapsed == 0 && no_page > 0) {
            fprintf(stderr, "SKIP: the kernel had no huge page to collapse into\n");
            du_release(&c);
            skip();
        }
        assert_true(collapsed > 0);
        assert_true(after >= trimmed + collapsed * (HUGE_PAGE / 2));
    }
    du_release(&c);
}

int main(void)
{
    tu_require_ebbmalloc();
    const char *why_not = collapse_unsupported();
    if (why_not != NULL) {
        fprintf(stderr, "SKIP: %s\n", why_not);
        return SKIP;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(purged_pages_stay_purged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
