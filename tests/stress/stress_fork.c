/*
 * fork() while other threads allocate: the child must find the allocator
 * usable (no lock left held by a thread that does not exist in the child),
 * free blocks the parent allocated, start threads of its own, and exit 0.
 * A child that deadlocks is killed by alarm() and fails the test. And the
 * child must not lose the objects a thread was moving between its caches
 * and the bins at the fork (fork_loses_no_*_batch).
 */
#include "stress_util.h"

#include <setjmp.h>
#include <stdarg.h>

#include <cmocka.h>

enum {
    BACKGROUND = 3,
    FORKS = 30,
    CHILD_OPS = 20000,
    CHILD_THREADS = 2,
    INHERITED = 256,
    CHILD_TIMEOUT = 20, /* seconds */
};

static uint64_t seed;
static atomic_bool stop;
static tu_block_t *inherited[INHERITED];

/* Allocate, resize and free without pause until told to stop, so that a
 * fork lands in the middle of the allocator's critical sections. */
static void *background(void *arg)
{
    size_t id = *(size_t *)arg;
    tu_rng_t rng = tu_rng(seed + id);
    tu_block_t *live[64] = {0};
    for (uint64_t op = 0; !atomic_load_explicit(&stop, memory_order_relaxed); op++)
        tu_churn_step(live, 64, &rng, op, op % 50 == 0 ? 2 * TU_MiB : 4 * TU_KiB, 3);
    tu_free_all(live, 64);
    return NULL;
}

/* Plain churn for the child and its threads. */
static void *child_churn(void *arg)
{
    tu_rng_t rng = tu_rng((uintptr_t)arg);
    tu_block_t *live[128] = {0};
    for (size_t op = 0; op < CHILD_OPS; op++)
        tu_churn_step(live, 128, &rng, op, op % 64 == 0 ? TU_MiB : 2 * TU_KiB, 0);
    tu_free_all(live, 128);
    return NULL;
}

static int grandchild_main(void *arg)
{
    child_churn((void *)(uintptr_t)7);
    return atomic_load(&tu_failures) == 0 ? 0 : 1;
}

static int child_main(void *arg)
{
    /* The parent's blocks are the child's copy now: check and free them. */
    tu_free_all(inherited, INHERITED);
    pthread_t t[CHILD_THREADS];
    for (size_t i = 0; i < CHILD_THREADS; i++)
        if (pthread_create(&t[i], NULL, child_churn, (void *)(uintptr_t)(i + 1)) != 0)
            return 2;
    child_churn((void *)(uintptr_t)99);
    for (size_t i = 0; i < CHILD_THREADS; i++)
        pthread_join(t[i], NULL);
    if (atomic_load(&tu_failures) != 0)
        return 1;
    /* The child can fork again, too. */
    return tu_run_in_child(grandchild_main, NULL, CHILD_TIMEOUT) == 0 ? 0 : 3;
}

/* Fork number f runs child_fn in the child: 1 (and why) when it fails. */
static int fork_failed(int f, int (*child_fn)(void *))
{
    int rc = tu_run_in_child(child_fn, NULL, CHILD_TIMEOUT);
    if (rc == 0)
        return 0;
    fprintf(stderr, "fork %d: child %s %d\n", f, rc >= 128 ? "died of signal" : "exited",
            rc >= 128 ? rc - 128 : rc);
    return 1;
}

static void fork_while_allocating(void **state)
{
    seed = tu_seed(9);
    tu_rng_t rng = tu_rng(seed);
    for (size_t i = 0; i < INHERITED; i++)
        inherited[i] = tu_block_new(tu_rng_size(&rng, 16, 64 * TU_KiB), i);

    pthread_t t[BACKGROUND];
    size_t ids[BACKGROUND];
    for (size_t i = 0; i < BACKGROUND; i++) {
        ids[i] = i;
        assert_int_equal(pthread_create(&t[i], NULL, background, &ids[i]), 0);
    }
    int failed = 0;
    for (int f = 0; f < FORKS; f++) {
        failed += fork_failed(f, child_main);
        /* The parent goes on allocating too. */
        free(malloc(tu_rng_size(&rng, 16, 64 * TU_KiB)));
    }
    atomic_store(&stop, true);
    for (size_t i = 0; i < BACKGROUND; i++)
        pthread_join(t[i], NULL);
    tu_free_all(inherited, INHERITED);
    assert_int_equal(failed, 0);
    assert_int_equal(atomic_load(&tu_failures), 0);
}

/* ---- forks while slabs come and go in every arena --------------------- */
/* Each thread fills and empties slabs of a few classes as fast as it can:
 * a refill that needs a new slab takes its group's page heap while holding
 * its arena's bin lock, so fork() must take every bin lock before any heap
 * lock (a bin of arena 1 waits for arena 0's heap). Run under
 * tcache:false too (ctest stress_fork_tcache_false), where every malloc and
 * free goes to the bins. */
enum { SLAB_THREADS = 4, SLAB_OBJS = 48, SLAB_FORKS = 300, STORM_TIMEOUT = 60 };
static atomic_bool storm_stop;

static void *slab_churn(void *arg)
{
    size_t size = 1024 + 512 * (*(size_t *)arg % 4); /* 1..2.5 KiB: 4-object slabs */
    void *obj[SLAB_OBJS];
    while (!atomic_load_explicit(&storm_stop, memory_order_relaxed)) {
        for (size_t i = 0; i < SLAB_OBJS; i++) {
            obj[i] = malloc(size);
            if (obj[i] == NULL)
                abort();
            *(volatile char *)obj[i] = 1;
        }
        for (size_t i = 0; i < SLAB_OBJS; i++)
            free(obj[i]);
    }
    return NULL;
}

static int quick_child(void *arg)
{
    (void)arg;
    free(malloc(2048)); /* the locks are usable */
    return 0;
}

/* In a child of its own, so that a deadlocked fork() ends in the timeout
 * instead of hanging the test: threads churn slabs, the thread forks. */
static int fork_storm(void *arg)
{
    (void)arg;
    pthread_t t[SLAB_THREADS];
    size_t ids[SLAB_THREADS];
    for (size_t i = 0; i < SLAB_THREADS; i++) {
        ids[i] = i;
        if (pthread_create(&t[i], NULL, slab_churn, &ids[i]) != 0)
            return 2;
    }
    int failed = 0;
    for (int f = 0; f < SLAB_FORKS; f++)
        failed += tu_run_in_child(quick_child, NULL, CHILD_TIMEOUT) != 0;
    atomic_store(&storm_stop, true);
    for (size_t i = 0; i < SLAB_THREADS; i++)
        pthread_join(t[i], NULL);
    return failed == 0 ? 0 : 1;
}

static void fork_while_slabs_churn(void **state)
{
    (void)state;
    assert_int_equal(tu_run_in_child(fork_storm, NULL, STORM_TIMEOUT), 0);
}

/* ---- no object lost on its way between a cache and the bins ---------- */
/* Workers hand objects to each other through shared slots: each puts a new
 * object in a random slot and frees the one it finds there, most likely
 * another arena's, so the batches their caches flush span arenas and wait
 * on several bin locks. The main thread forks meanwhile. Each child counts
 * what the allocator calls allocated (caches excluded) against what the
 * slots hold: beyond what the process held before the workers started,
 * the difference may be only the objects the workers had in hand, one
 * each, and their threads' own blocks. A batch a worker held at the fork
 * would be lost to the child and show as more. */
enum { HAND_WORKERS = 4, HAND_SLOTS = 4096, HAND_FORKS = 200, HAND_SLACK = 8 * 1024 };
static _Atomic(void *) hand_slot[HAND_SLOTS];
static atomic_bool hand_stop;
static size_t hand_lo, hand_hi, hand_base;

static void *hand_worker(void *arg)
{
    tu_rng_t rng = tu_rng(seed + 100 + (uintptr_t)arg);
    while (!atomic_load_explicit(&hand_stop, memory_order_relaxed)) {
        void *p = malloc(tu_rng_range(&rng, hand_lo, hand_hi));
        if (p == NULL)
            abort();
        *(volatile char *)p = 1;
        void *old = atomic_exchange(&hand_slot[tu_rng_next(&rng) % HAND_SLOTS], p);
        free(old);
    }
    return NULL;
}

static size_t allocated_now(void)
{
    ebb_summary_t s;
    ebb_summary(&s);
    return s.allocated;
}

static int hand_child(void *arg)
{
    size_t held = 0;
    for (size_t i = 0; i < HAND_SLOTS; i++) {
        void *p = atomic_load(&hand_slot[i]);
        if (p != NULL)
            held += ebb_usable_size(p);
    }
    size_t allocated = allocated_now();
    size_t extra = allocated > held + hand_base ? allocated - held - hand_base : 0;
    size_t bound = HAND_WORKERS * (hand_hi + 1024) + HAND_SLACK;
    if (extra > bound) {
        fprintf(stderr, "child: %zu bytes allocated that no slot holds (bound %zu)\n", extra, bound);
        return 1;
    }
    (void)arg;
    return 0;
}

static void fork_loses_no_batch(size_t lo, size_t hi)
{
    seed = tu_seed(11);
    hand_lo = lo, hand_hi = hi;
    atomic_store(&hand_stop, false);
    hand_base = allocated_now();
    pthread_t t[HAND_WORKERS];
    for (size_t i = 0; i < HAND_WORKERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, hand_worker, (void *)i), 0);
    int lost = 0;
    for (int f = 0; f < HAND_FORKS; f++)
        lost += fork_failed(f, hand_child);
    atomic_store(&hand_stop, true);
    for (size_t i = 0; i < HAND_WORKERS; i++)
        pthread_join(t[i], NULL);
    for (size_t i = 0; i < HAND_SLOTS; i++)
        free(atomic_exchange(&hand_slot[i], NULL));
    assert_int_equal(lost, 0);
}

/* Objects of 256 B..1 KiB travel through the thread caches. */
static void fork_loses_no_thread_cache_batch(void **state)
{
    (void)state;
    fork_loses_no_batch(256, 1024);
}

/* Objects of 1.1..4 KiB through the CPU caches (where there are). */
static void fork_loses_no_cpu_cache_batch(void **state)
{
    (void)state;
    fork_loses_no_batch(1100, 4096);
}

int main(void)
{
    tu_require_ebbmalloc();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fork_while_allocating),
        cmocka_unit_test(fork_while_slabs_churn),
        cmocka_unit_test(fork_loses_no_thread_cache_batch),
        cmocka_unit_test(fork_loses_no_cpu_cache_batch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
