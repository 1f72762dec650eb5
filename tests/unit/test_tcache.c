/* Thread caches: the budget shared by the live threads (tcache_total_mb),
 * bins bounded by their share of it, and a thread's first free going back
 * to its slab instead of into the cache. */
#include <pthread.h>

#include "unit.h"

enum { NTHREADS = 63 };
static pthread_barrier_t ready, done;

static void *hold_a_cache(void *arg) {
    (void)arg;
    ebb_free(ebb_malloc(16)); /* this thread now has a cache */
    pthread_barrier_wait(&ready);
    pthread_barrier_wait(&done);
    return NULL;
}

typedef struct seen_s {
    size_t budget;
    uint32_t max_1k; /* the 1 KiB bin's limit */
} seen_t;

static void *look_at_own_cache(void *arg) {
    seen_t *seen = arg;
    ebb_free(ebb_malloc(16));
    seen->budget = ebb__tls_tcache->budget;
    seen->max_1k = ebb__tls_tcache->bins[ebb_size_class(1024)].limit;
    return NULL;
}

static void test_budget_shrinks_with_threads(void **state) {
    (void)state;
    unit_init();
    seen_t alone = {0}, crowded = {0};
    pthread_t t;
    pthread_create(&t, NULL, look_at_own_cache, &alone);
    pthread_join(t, NULL);
    /* Few threads: each gets tcache_max_kb; a bin 1/16 of it. */
    assert_int_equal(alone.budget, (size_t)ebb__opts.tcache_max_kb << 10);
    assert_int_equal(alone.max_1k, (alone.budget / 16) / 1024);

    pthread_t held[NTHREADS];
    pthread_barrier_init(&ready, NULL, NTHREADS + 1);
    pthread_barrier_init(&done, NULL, NTHREADS + 1);
    for (int i = 0; i < NTHREADS; i++)
        pthread_create(&held[i], NULL, hold_a_cache, NULL);
    pthread_barrier_wait(&ready);
    pthread_create(&t, NULL, look_at_own_cache, &crowded);
    pthread_join(t, NULL);
    /* 64+ live caches share tcache_total_mb. */
    size_t total = (size_t)ebb__opts.tcache_total_mb << 20;
    assert_true(crowded.budget <= total / (NTHREADS + 1));
    assert_true(crowded.budget >= (size_t)64 << 10);
    assert_true(crowded.max_1k < alone.max_1k);
    assert_int_equal(crowded.max_1k, (crowded.budget / 16) / 1024);
    pthread_barrier_wait(&done);
    for (int i = 0; i < NTHREADS; i++)
        pthread_join(held[i], NULL);
    pthread_barrier_destroy(&ready);
    pthread_barrier_destroy(&done);
}

typedef struct handoff_s {
    void *obj;
    unsigned cached_after;
} handoff_t;

static void *free_handed_object(void *arg) {
    handoff_t *h = arg;
    unsigned c = ebb_size_class(ebb_usable_size(h->obj));
    ebb_free(h->obj); /* this thread's first call */
    h->cached_after = ebb__tls_tcache->bins[c].count;
    return NULL;
}

static void test_first_free_is_not_cached(void **state) {
    (void)state;
    unit_init();
    ebb_arena_t *a = ebb__tls_tcache->arena ? ebb__tls_tcache->arena : ebb__arena_get(0);
    void *p = ebb__arena_alloc_small(a, ebb_size_class(48));
    assert_non_null(p);
    unsigned c = ebb_size_class(48);
    size_t out_before = unit_bin_nout(a, c);
    handoff_t h = {p, 99};
    pthread_t t;
    pthread_create(&t, NULL, free_handed_object, &h);
    pthread_join(t, NULL);
    assert_int_equal(h.cached_after, 0);
    assert_int_equal(unit_bin_nout(a, c), out_before - 1); /* back in its slab */
}

enum { SLOW_SIZE = 64, SLOW_N = 400 };

/* cmocka's asserts belong to the main thread: the thread notes the line of
 * the first failed check. */
#define CHECK(cond)                                                                              \
    do {                                                                                         \
        if (!(cond) && *failed == 0)                                                             \
            *failed = __LINE__;                                                                  \
    } while (0)

/* A thread that makes one allocation of a class takes one or two objects
 * from its arena, not half a bin; one that keeps allocating sees the bin's
 * max double at every refill up to its limit. */
static void *slow_start(void *arg) {
    int *failed = arg;
    unsigned c = ebb_size_class(SLOW_SIZE);
    ebb_free(ebb_malloc(16)); /* this thread's cache exists, its first free done */
    ebb_tcache_t *tc = ebb__tls_tcache;
    ebb_tbin_t *b = &tc->bins[c];
    ebb_arena_t *a = tc->arena;
    CHECK(b->max == EBB_TBIN_START);
    CHECK(b->limit >= 64);

    size_t before = unit_bin_nout(a, c);
    void *p[SLOW_N];
    p[0] = ebb_malloc(SLOW_SIZE);
    CHECK(unit_bin_nout(a, c) - before <= EBB_TBIN_START);
    uint32_t prev = b->max;
    for (int i = 1; i < SLOW_N; i++) {
        p[i] = ebb_malloc(SLOW_SIZE);
        CHECK(b->max == prev || b->max == prev * 2 || b->max == b->limit);
        prev = b->max;
    }
    CHECK(b->max == b->limit);
    /* Objects taken from the arena: what is in use plus at most half a
     * bin at its limit. */
    CHECK(unit_bin_nout(a, c) - before <= SLOW_N + b->limit / 2);
    for (int i = 0; i < SLOW_N; i++)
        ebb_free(p[i]);
    CHECK(b->count <= b->max);
    return NULL;
}

static void test_bins_start_small(void **state) {
    (void)state;
    unit_init();
    int failed = 0;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_start, &failed), 0);
    pthread_join(t, NULL);
    assert_int_equal(failed, 0); /* else: the line of the check that failed */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_shrinks_with_threads),
        cmocka_unit_test(test_first_free_is_not_cached),
        cmocka_unit_test(test_bins_start_small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
