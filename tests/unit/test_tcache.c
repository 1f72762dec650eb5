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
    uint32_t max_1k;
} seen_t;

static void *look_at_own_cache(void *arg) {
    seen_t *seen = arg;
    ebb_free(ebb_malloc(16));
    seen->budget = ebb__tls_tcache->budget;
    seen->max_1k = ebb__tls_tcache->bins[ebb_size_class(1024)].max;
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
    ebb_lock(&a->bins[c].lock);
    size_t out_before = a->bins[c].nout;
    ebb_unlock(&a->bins[c].lock);
    handoff_t h = {p, 99};
    pthread_t t;
    pthread_create(&t, NULL, free_handed_object, &h);
    pthread_join(t, NULL);
    assert_int_equal(h.cached_after, 0);
    ebb_lock(&a->bins[c].lock);
    assert_int_equal(a->bins[c].nout, out_before - 1); /* back in its slab */
    ebb_unlock(&a->bins[c].lock);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_shrinks_with_threads),
        cmocka_unit_test(test_first_free_is_not_cached),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
