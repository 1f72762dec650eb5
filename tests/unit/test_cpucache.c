/* CPU caches: objects above cpu_cache_min_size are cached per CPU, not per
 * thread; a thread on the same CPU reuses them; bins stay within their
 * bound; an idle cache is flushed by the purger's scan, all of them by a
 * purge, from whichever CPU; objects of 1 KiB or less still go through the
 * thread caches. Run with a long decay, so that the background thread
 * leaves the caches to the tests' own scans; again without the fence
 * (cpu_cache_fence:false: the background thread drains by moving to each
 * CPU), without a background thread (fenced drains only), and with
 * cpu_cache_kb:0, where only the tests that do not need CPU caches run. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sched.h>

#include "unit.h"

#define MS ((uint64_t)1000000)

static bool cpu_caches_on(void) { return ebb__cpucache_first <= EBB_NSMALL; }

/* Where the CPU caches must be on: x86-64 outside ThreadSanitizer, glibc's
 * rseq area registered, the options asking for them, and someone able to
 * drain another CPU's cache (the fence, or the background thread). */
static bool cpu_caches_expected(void) {
#if defined(__x86_64__) && !defined(__SANITIZE_THREAD__)
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
    return false;
#endif
#endif
    int64_t off;
    void *rs = ebb__os_rseq_area(&off);
    return rs != NULL && ((volatile uint32_t *)rs)[1] < UINT32_MAX - 1 &&
           ebb__opts.cpu_cache_kb != 0 && ebb__opts.tcache &&
           (ebb__opts.background_thread || (ebb__opts.cpu_cache_fence && ebb__os_rseq_fence_register()));
#else
    return false;
#endif
}

/* Pin the calling thread to its current CPU, so the CPU cache it uses
 * stays the same; false where the affinity cannot be set. */
static bool pin_here(void) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(ebb__os_cpu_now(), &set);
    return sched_setaffinity(0, sizeof(set), &set) == 0;
}

/* Initialise; skip the test where there are no CPU caches or (pin) where
 * the thread cannot be pinned to the CPU it runs on. */
static void require_cpu_caches(bool pin) {
    unit_init();
    if (!cpu_caches_on() || (pin && !pin_here()))
        skip();
}

/* Allocate n objects of size, then free them all: into this CPU's cache,
 * up to its room. */
static void alloc_then_free(size_t size, int n) {
    static void *p[2000];
    assert_true(n <= 2000);
    for (int i = 0; i < n; i++)
        assert_non_null(p[i] = ebb_malloc(size));
    for (int i = 0; i < n; i++)
        ebb_free(p[i]);
}

static void test_classes_split_at_the_option(void **state) {
    (void)state;
    unit_init();
    assert_int_equal(cpu_caches_on(), cpu_caches_expected());
    if (!cpu_caches_on())
        return;
    unsigned first = ebb__cpucache_first;
    assert_true(ebb_class_size(first) > ebb__opts.cpu_cache_min_size);
    assert_true(first == 1 || ebb_class_size(first - 1) <= ebb__opts.cpu_cache_min_size);
    /* No thread-cache bin for those classes; one for the class below. */
    ebb_free(ebb_malloc(16));
    ebb_tcache_t *tc = ebb__tls_tcache;
    assert_int_equal(tc->bins[first].limit, 0);
    assert_true(first == 1 || tc->bins[first - 1].limit > 0);
}

static void *same_cpu_reuse(void *arg) {
    void **out = arg;
    out[0] = ebb_malloc(4000); /* a class above 1 KiB */
    ebb_free(out[0]);
    out[1] = ebb_malloc(4000);
    ebb_free(out[1]);
    return NULL;
}

/* Freed by one thread, the object serves the next thread on that CPU. */
static void test_objects_move_between_threads_of_a_cpu(void **state) {
    (void)state;
    require_cpu_caches(true);
    ebb_purge();
    void *p = ebb_malloc(4000);
    memset(p, 0xab, 4000);
    ebb_free(p);
    assert_true(ebb__cpucache_cached(NULL) >= ebb_usable_size(p));
    void *got[2];
    pthread_t t;
    /* The new thread inherits the affinity: same CPU, same cache. */
    assert_int_equal(pthread_create(&t, NULL, same_cpu_reuse, got), 0);
    pthread_join(t, NULL);
    assert_ptr_equal(got[0], p);
    assert_ptr_equal(got[1], p);
    ebb_purge();
    assert_int_equal(ebb__cpucache_cached(NULL), 0);
}

/* Many frees of one class: the CPU cache keeps at most its bound, the rest
 * goes back to the slabs. */
static void test_bins_are_bounded(void **state) {
    (void)state;
    require_cpu_caches(true);
    ebb_purge();
    size_t size = 8000;
    unsigned c = ebb_size_class(size);
    alloc_then_free(size, 2000);
    uint64_t counts[EBB_NCLASSES] = {0};
    size_t bytes = ebb__cpucache_cached(counts);
    size_t share = ((size_t)ebb__opts.cpu_cache_kb << 10) / 16;
    size_t bound = share / ebb_class_size(c);
    if (bound < 2)
        bound = 2;
    if (bound > 256)
        bound = 256;
    assert_true(counts[c] > 0);
    assert_true(counts[c] <= bound);
    assert_int_equal(bytes, counts[c] * ebb_class_size(c));
    ebb_purge();
}

/* The purger's scan flushes a cache nobody used for decay_ms / 8, moving
 * the scanning thread to its CPU (here the test's thread, allowed to). */
static void test_idle_cache_is_flushed(void **state) {
    (void)state;
    require_cpu_caches(false);
    ebb_free(ebb_malloc(20000));
    assert_true(ebb__cpucache_cached(NULL) > 0);
    uint64_t idle = 800 * MS, now = ebb__os_now_ns();
    ebb__cpucache_idle_scan(now, idle, true);             /* notes the state */
    ebb__cpucache_idle_scan(now + idle / 16, idle, true); /* too early */
    assert_true(ebb__cpucache_cached(NULL) > 0);
    ebb__cpucache_idle_scan(now + idle / 8, idle, true);
    assert_int_equal(ebb__cpucache_cached(NULL), 0);
}

/* Over the cap (threads roaming over more CPUs than the process may use),
 * the scan drains the fullest caches until the total is under it. */
static void test_cap_drains_the_fullest(void **state) {
    (void)state;
    require_cpu_caches(false);
    ebb__cpucache_flush_all(true);
    assert_int_equal(ebb__cpucache_cached(NULL), 0);
    alloc_then_free(4000, 16);
    size_t held = ebb__cpucache_cached(NULL);
    assert_true(held >= 2 * 4096);
    uint64_t forever = UINT64_MAX / 2, now = ebb__os_now_ns();
    ebb__cpucache_idle_scan(now, forever, true); /* under the cap: nothing */
    assert_int_equal(ebb__cpucache_cached(NULL), held);
    size_t old = ebb__cpucache_set_cap(held / 2);
    ebb__cpucache_idle_scan(now, forever, true);
    assert_true(ebb__cpucache_cached(NULL) <= held / 2);
    ebb__cpucache_set_cap(old);
}

static void *fill_on_cpu(void *arg) {
    unsigned cpu = *(unsigned *)arg;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    if (sched_setaffinity(0, sizeof(one), &one) == 0)
        alloc_then_free(4000, 8);
    return NULL;
}

/* Another CPU the test's thread may run on than the one it runs on (it
 * is pinned there); the same one where there is none. */
static unsigned other_cpu(void) {
    cpu_set_t all;
    assert_int_equal(sched_getaffinity(0, sizeof(all), &all), 0);
    unsigned here = ebb__os_cpu_now(), other = here;
    for (unsigned cpu = 0; cpu < ebb__os_cpu_ids() && other == here; cpu++) {
        cpu_set_t one;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (cpu != here && sched_setaffinity(0, sizeof(one), &one) == 0)
            other = cpu;
    }
    assert_int_equal(sched_setaffinity(0, sizeof(all), &all), 0);
    return other;
}

/* ebb_purge (malloc_trim) from one CPU empties every CPU's cache: fenced
 * from here, or by having the background thread move to each in turn
 * (and waiting for it). */
static void test_purge_drains_every_cpu(void **state) {
    (void)state;
    require_cpu_caches(true);
    ebb__background_maybe_start();
    if (!ebb__cpucache_fenced && !ebb__background_running())
        skip();
    unsigned here = ebb__os_cpu_now(), other = other_cpu();
    if (other == here)
        skip(); /* one CPU only */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fill_on_cpu, &other), 0);
    pthread_join(t, NULL);
    alloc_then_free(4000, 8);
    assert_true(ebb__cpucache_cached(NULL) >= 2 * 4096);
    ebb_purge();
    assert_int_equal(ebb__cpucache_cached(NULL), 0);
}

/* With the fence, any thread empties another CPU's cache: the purger's
 * scan (an idle one) and a flush of all, from a thread pinned elsewhere
 * and not allowed to move. */
static void test_fenced_drain_from_another_cpu(void **state) {
    (void)state;
    require_cpu_caches(true);
    if (!ebb__cpucache_fenced)
        skip();
    unsigned here = ebb__os_cpu_now(), other = other_cpu();
    if (other == here)
        skip(); /* one CPU only */
    ebb__cpucache_flush_all(false);
    assert_int_equal(ebb__cpucache_cached(NULL), 0);

    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, fill_on_cpu, &other), 0);
    pthread_join(t, NULL);
    size_t held = ebb__cpucache_cached(NULL);
    assert_true(held >= 2 * 4096);
    uint64_t idle = 800 * MS, now = ebb__os_now_ns();
    ebb__cpucache_idle_scan(now, idle, false);
    ebb__cpucache_idle_scan(now + idle / 8, idle, false);
    assert_int_equal(ebb__cpucache_cached(NULL), 0);
    assert_int_equal(ebb__os_cpu_now(), here); /* it did not move */

    /* The region, let go, caches again; a flush from here empties it. */
    assert_int_equal(pthread_create(&t, NULL, fill_on_cpu, &other), 0);
    pthread_join(t, NULL);
    assert_int_equal(ebb__cpucache_cached(NULL), held);
    ebb__cpucache_flush_all(false);
    assert_int_equal(ebb__cpucache_cached(NULL), 0);
}

/* Drains from another CPU racing the sequences: workers on every CPU
 * take and give back 1-2 KiB blocks (the classes with the most room: the
 * longest batch sequences) marked with their owner, while this thread
 * drains all regions fenced as fast as it can. A drain that let a
 * sequence commit on a region it had emptied would hand a block to two
 * owners: one finds the other's mark, or the allocator a double free.
 * Without the fence this failed 5 runs of 5 ("double free detected"),
 * without the stop check in the sequences 3 of 3 (a crash). */
enum { RACE_WORKERS = 4, RACE_BLOCKS = 48 };
static cpu_set_t start_affinity;
static atomic_bool race_stop;
static atomic_ulong race_bad, race_rounds;

static void *race_worker(void *arg) {
    uint64_t id = (uint64_t)(uintptr_t)arg, x = id * 0x9e3779b97f4a7c15u + 1;
    uint64_t *b[RACE_BLOCKS];
    size_t n[RACE_BLOCKS];
    while (!atomic_load_explicit(&race_stop, memory_order_relaxed)) {
        for (int i = 0; i < RACE_BLOCKS; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            n[i] = (1025 + x % 1024) / 8;
            b[i] = ebb_malloc(n[i] * 8);
            if (b[i] == NULL) {
                atomic_fetch_add(&race_bad, 1);
                return NULL;
            }
            b[i][0] = b[i][n[i] - 1] = id << 32 | (uint64_t)i;
        }
        for (int i = 0; i < RACE_BLOCKS; i++) {
            if (b[i][0] != (id << 32 | (uint64_t)i) || b[i][n[i] - 1] != b[i][0])
                atomic_fetch_add(&race_bad, 1);
            ebb_free(b[i]);
        }
        atomic_fetch_add_explicit(&race_rounds, 1, memory_order_relaxed);
    }
    return NULL;
}

static void test_fenced_drains_race_the_sequences(void **state) {
    (void)state;
    require_cpu_caches(false);
    if (!ebb__cpucache_fenced)
        skip();
    /* Earlier tests pinned this thread: the workers (who inherit it) and
     * this one get every CPU the process started with. */
    assert_int_equal(sched_setaffinity(0, sizeof(start_affinity), &start_affinity), 0);
    pthread_t t[RACE_WORKERS];
    for (uintptr_t i = 0; i < RACE_WORKERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, race_worker, (void *)(i + 1)), 0);
    unsigned long drains = 0;
    unsigned long nonempty = 0;
    for (uint64_t end = ebb__os_now_ns() + 1000 * MS; ebb__os_now_ns() < end; drains++) {
        nonempty += ebb__cpucache_cached(NULL) > 0;
        ebb__cpucache_flush_all(false);
    }
    atomic_store(&race_stop, true);
    for (int i = 0; i < RACE_WORKERS; i++)
        pthread_join(t[i], NULL);
    fprintf(stderr, "%lu drains (%lu of caches holding objects), %lu rounds of %d blocks, %lu blocks with two owners\n",
            drains, nonempty, (unsigned long)atomic_load(&race_rounds), RACE_BLOCKS,
            (unsigned long)atomic_load(&race_bad));
    assert_true(nonempty > 0 && atomic_load(&race_rounds) > 0);
    assert_int_equal(atomic_load(&race_bad), 0);
}

/* Objects of 1 KiB and less stay in the thread cache. */
static void test_small_objects_stay_in_the_thread_cache(void **state) {
    (void)state;
    unit_init();
    size_t before = ebb__cpucache_cached(NULL);
    void *p = ebb_malloc(512);
    ebb_free(p);
    assert_int_equal(ebb__cpucache_cached(NULL), before);
    assert_ptr_equal(ebb_malloc(512), p);
    ebb_free(p);
}

/* The CPU id is within the ids the kernel reports. */
static void test_cpu_ids(void **state) {
    (void)state;
    unsigned n = ebb__os_cpu_ids();
    assert_true(n >= 1);
    assert_true(ebb__os_cpu_now() < n);
    if (pin_here()) {
        unsigned here = ebb__os_cpu_now();
        for (int i = 0; i < 1000; i++)
            assert_int_equal(ebb__os_cpu_now(), here);
    }
}

int main(void) {
    if (sched_getaffinity(0, sizeof(start_affinity), &start_affinity) != 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_ids),
        cmocka_unit_test(test_classes_split_at_the_option),
        cmocka_unit_test(test_objects_move_between_threads_of_a_cpu),
        cmocka_unit_test(test_bins_are_bounded),
        cmocka_unit_test(test_idle_cache_is_flushed),
        cmocka_unit_test(test_cap_drains_the_fullest),
        cmocka_unit_test(test_purge_drains_every_cpu),
        cmocka_unit_test(test_fenced_drain_from_another_cpu),
        cmocka_unit_test(test_fenced_drains_race_the_sequences),
        cmocka_unit_test(test_small_objects_stay_in_the_thread_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
