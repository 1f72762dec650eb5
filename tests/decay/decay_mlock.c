/*
 * Locked memory. The kernel refuses MADV_DONTNEED on locked pages: under
 * mlockall(MCL_CURRENT | MCL_FUTURE) (Elasticsearch's
 * bootstrap.memory_lock, Cassandra, latency-bound C services), or on a
 * buffer mlock'ed and freed without munlock (key buffers of crypto
 * libraries). What the allocator failed to purge still holds what it held:
 *
 *   locked_all     under mlockall, blocks written and freed stay dirty
 *                  (ebb_summary) through decay periods, calloc hands their
 *                  pages out cleared, and the background thread, retrying
 *                  once a decay period, uses little CPU; objects over
 *                  2 MiB, each a mapping of its own that the kernel faults
 *                  in whole, take no more than their size; after
 *                  munlockall the decay purges the freed blocks;
 *   locked_buffer  the same for one mlock'ed buffer: freed, trimmed, and
 *                  calloc'ed again at the same address, it reads as zero.
 *
 * ctest runs it with decay_ms:100 and the background thread on, and again
 * with decay_ms:0 (every free due at once; a refused purge waits a second
 * before its next try, unit_decay's test_refused_retry_floor). Each test
 * skips (77) with the reason where the lock is not permitted here
 * (RLIMIT_MEMLOCK without CAP_IPC_LOCK).
 */
#include "decay_util.h"

#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <sys/resource.h>

#include <cmocka.h>

enum { SKIP = 77, BLOCKS = 64, WAIT_MS = 1500, CPU_MAX_MS = 300 };
#define BLOCK ((size_t)256 << 10) /* a large object: pages of its own */

static size_t dirty_bytes(void)
{
    ebb_summary_t s;
    ebb_summary(&s);
    return s.dirty;
}

static uint64_t cpu_ms(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/* BLOCKS blocks, each written with byte. */
static void fill_blocks(void **p, int byte)
{
    for (int i = 0; i < BLOCKS; i++) {
        p[i] = malloc(BLOCK);
        assert_non_null(p[i]);
        memset(p[i], byte, BLOCK);
    }
}

static void free_blocks(void **p)
{
    for (int i = 0; i < BLOCKS; i++)
        free(p[i]);
}

static void locked_all(void **state)
{
    (void)state;
    assert_true(du_option("decay_ms") <= 100);
    struct rlimit rl;
    getrlimit(RLIMIT_MEMLOCK, &rl);
    if (geteuid() != 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < ((rlim_t)1 << 30)) {
        fprintf(stderr, "skip: mlockall needs CAP_IPC_LOCK or RLIMIT_MEMLOCK >= 1 GiB here\n");
        exit(SKIP);
    }
    if (mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
        fprintf(stderr, "skip: mlockall: %s\n", strerror(errno));
        exit(SKIP);
    }
    void *p[BLOCKS];
    fill_blocks(p, 0xa5);
    size_t dirty0 = dirty_bytes();
    free_blocks(p);
    uint64_t cpu0 = cpu_ms();
    du_sleep_ms(WAIT_MS); /* 15 decay periods: a purge tried, refused, tried again */
    uint64_t cpu = cpu_ms() - cpu0;
    size_t dirty = dirty_bytes();
    assert_int_equal(malloc_trim(0), 0); /* nothing can go */
    fprintf(stderr, "locked: dirty %zu MiB after %d ms of decay, %" PRIu64 " ms of CPU\n",
            dirty / TU_MiB, WAIT_MS, cpu);
    assert_true(dirty >= dirty0 + BLOCKS * BLOCK);
    assert_true(cpu <= CPU_MAX_MS);
    /* The freed blocks' pages, handed out again by calloc, read as zero. */
    for (int i = 0; i < BLOCKS; i++) {
        p[i] = calloc(1, BLOCK);
        assert_non_null(p[i]);
        assert_true(tu_all_zero(p[i], BLOCK));
    }
    free_blocks(p);

    /* Mapped now, an object's whole mapping is faulted in and locked: no
     * slop around it. */
    enum { HUGE_N = 8 };
    const size_t huge = 3 * TU_MiB;
    void *h[HUGE_N];
    size_t rss0 = tu_statm(TU_STATM_RESIDENT);
    for (int i = 0; i < HUGE_N; i++) {
        h[i] = malloc(huge);
        assert_non_null(h[i]);
        memset(h[i], 0x3c, huge);
    }
    size_t grew = tu_statm(TU_STATM_RESIDENT) - rss0;
    fprintf(stderr, "locked: %d objects of %zu MiB raised the RSS by %zu MiB\n", HUGE_N,
            huge / TU_MiB, grew / TU_MiB);
    assert_true(grew <= HUGE_N * (huge + 64 * 1024) + 2 * TU_MiB);
    for (int i = 0; i < HUGE_N; i++)
        free(h[i]);

    /* Unlocked, the next decay periods purge it all. */
    assert_int_equal(munlockall(), 0);
    uint64_t t0 = du_now_ms();
    while (dirty_bytes() >= BLOCK && du_now_ms() - t0 < 100 + DU_GRACE_MS)
        du_sleep_ms(DU_POLL_MS);
    fprintf(stderr, "unlocked: dirty %zu KiB after %" PRIu64 " ms\n", dirty_bytes() >> 10,
            du_now_ms() - t0);
    assert_true(dirty_bytes() < BLOCK);
}

static void locked_buffer(void **state)
{
    (void)state;
    char *p = malloc(BLOCK);
    assert_non_null(p);
    memset(p, 0x5a, BLOCK);
    if (mlock(p, BLOCK) != 0) {
        fprintf(stderr, "skip: mlock of %zu KiB: %s\n", BLOCK >> 10, strerror(errno));
        free(p);
        exit(SKIP);
    }
    free(p); /* still locked */
    malloc_trim(0);
    char *q = calloc(1, BLOCK);
    assert_non_null(q);
    assert_ptr_equal(q, p); /* the same pages, or the test proves nothing */
    assert_true(tu_all_zero(q, BLOCK));
    assert_int_equal(munlock(q, BLOCK), 0);
    free(q);
}

int main(void)
{
    tu_require_ebbmalloc();
    /* locked_buffer first: locked_all leaves everything locked if it fails. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(locked_buffer),
        cmocka_unit_test(locked_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
