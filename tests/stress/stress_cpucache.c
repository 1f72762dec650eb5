/*
 * CPU caches under what interrupts their restartable sequences: more
 * threads than CPUs (preemption), threads moving themselves from CPU to
 * CPU (migration), a signal every 50 us to every thread, blocks handed
 * between threads, a thread calling malloc_trim (which empties every
 * CPU's cache) every 200 us, and -- with decay_ms:1 (set by ctest) -- a
 * background thread that drains the caches nobody uses. ctest runs it
 * with each way of draining another CPU's cache: fenced from anywhere
 * (default), by the background thread moving there (cpu_cache_fence:false),
 * and without a background thread.
 * Sizes 1-32 KiB, the classes cached per CPU. Every block carries its
 * size and tag, checked on free: a sequence that committed twice, or lost
 * its commit, hands one block to two owners and shows up here.
 */
#include "stress_util.h"

#include <malloc.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <time.h>

#include <cmocka.h>

enum {
    THREADS = 8,
    OPS = 200000,
    LOCAL = 64,
    SHARED = 64,
    MOVE_EVERY = 2000, /* ops between a thread's moves to another CPU */
};

static uint64_t seed;
static _Atomic(tu_block_t *) shared[SHARED];
static cpu_set_t allowed;
static atomic_bool stop_signals;
static atomic_int workers_done; /* workers stay alive until the signals stop */
static atomic_ulong signals_seen, trims;
static pthread_t workers[THREADS];

static void on_signal(int sig) {
    (void)sig;
    atomic_fetch_add_explicit(&signals_seen, 1, memory_order_relaxed);
}

static void move_somewhere(tu_rng_t *rng) {
    int n = CPU_COUNT(&allowed);
    if (n < 2)
        return;
    int k = (int)tu_rng_range(rng, 0, (uint64_t)n - 1);
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (CPU_ISSET(cpu, &allowed) && k-- == 0) {
            cpu_set_t one;
            CPU_ZERO(&one);
            CPU_SET(cpu, &one);
            sched_setaffinity(0, sizeof(one), &one);
            return;
        }
    }
}

static void *worker(void *arg) {
    size_t id = *(size_t *)arg;
    tu_rng_t rng = tu_rng(seed * 31 + id);
    tu_block_t *live[LOCAL] = {0};
    for (uint64_t op = 0; op < OPS; op++) {
        if (op % MOVE_EVERY == 0)
            move_somewhere(&rng);
        if (op % 4 == 0) {
            /* Hand a block to whichever thread takes this slot next. */
            size_t s = tu_rng_range(&rng, 0, SHARED - 1);
            tu_block_t *mine = tu_block_new(tu_rng_size(&rng, 1024, 32 * TU_KiB), id << 32 | op);
            tu_block_t *theirs = atomic_exchange(&shared[s], mine);
            if (theirs != NULL)
                tu_block_free(theirs);
        } else {
            tu_churn_step(live, LOCAL, &rng, id << 32 | op, 32 * TU_KiB, 0);
        }
    }
    tu_free_all(live, LOCAL);
    atomic_fetch_add(&workers_done, 1);
    while (!atomic_load(&stop_signals)) {
        struct timespec nap = {0, 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    return NULL;
}

static void *signaller(void *arg) {
    (void)arg;
    struct timespec nap = {0, 50 * 1000};
    while (!atomic_load(&stop_signals)) {
        for (int i = 0; i < THREADS; i++)
            pthread_kill(workers[i], SIGUSR1);
        nanosleep(&nap, NULL);
    }
    return NULL;
}

static void *trimmer(void *arg) {
    (void)arg;
    struct timespec nap = {0, 200 * 1000};
    while (!atomic_load(&stop_signals)) {
        malloc_trim(0);
        atomic_fetch_add_explicit(&trims, 1, memory_order_relaxed);
        nanosleep(&nap, NULL);
    }
    return NULL;
}

static void test_sequences_survive_interruptions(void **state) {
    (void)state;
    seed = tu_seed(0xc0ffee);
    assert_int_equal(sched_getaffinity(0, sizeof(allowed), &allowed), 0);
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGUSR1, &sa, NULL), 0);

    size_t ids[THREADS];
    for (size_t i = 0; i < THREADS; i++) {
        ids[i] = i;
        assert_int_equal(pthread_create(&workers[i], NULL, worker, &ids[i]), 0);
    }
    pthread_t sig, trim;
    assert_int_equal(pthread_create(&sig, NULL, signaller, NULL), 0);
    assert_int_equal(pthread_create(&trim, NULL, trimmer, NULL), 0);
    while (atomic_load(&workers_done) < THREADS) {
        struct timespec nap = {0, 1000 * 1000};
        nanosleep(&nap, NULL);
    }
    atomic_store(&stop_signals, true);
    pthread_join(sig, NULL);
    pthread_join(trim, NULL);
    for (size_t i = 0; i < THREADS; i++)
        pthread_join(workers[i], NULL);
    for (size_t s = 0; s < SHARED; s++) {
        tu_block_t *b = atomic_exchange(&shared[s], NULL);
        if (b != NULL)
            tu_block_free(b);
    }
    fprintf(stderr, "%lu signals delivered, %lu trims\n", (unsigned long)atomic_load(&signals_seen),
            (unsigned long)atomic_load(&trims));
    assert_true(atomic_load(&signals_seen) > 0);
    assert_true(atomic_load(&trims) > 0);
    assert_int_equal(atomic_load(&tu_failures), 0);
}

int main(void) {
    tu_require_ebbmalloc();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequences_survive_interruptions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
