/*
 * Threads that come and go: hundreds created and exiting while they
 * allocate, blocks of dead threads freed by later ones, and thread caches
 * given back when their thread exits.
 */
#include "stress_util.h"

#include <setjmp.h>
#include <stdarg.h>

#include <cmocka.h>

enum {
    WAVES = 8,
    PER_WAVE = 50, /* 400 threads in all */
    OPS = 2000,
    HANDOFF = 64, /* blocks each thread leaves for the next wave */
};

static uint64_t seed;
/* Blocks left by wave w, freed by wave w + 1 after their thread is gone. */
static tu_block_t *handoff[WAVES + 1][PER_WAVE][HANDOFF];

typedef struct churn_arg_s {
    size_t wave, index;
} churn_arg_t;

static void *churn_thread(void *argp)
{
    churn_arg_t *arg = argp;
    tu_rng_t rng = tu_rng(seed + arg->wave * PER_WAVE + arg->index);
    /* Free what the same slot of the previous wave left: its thread has
     * exited, its cache with it. */
    if (arg->wave > 0)
        for (size_t i = 0; i < HANDOFF; i++)
            tu_block_free(handoff[arg->wave - 1][arg->index][i]);

    tu_block_t *live[128] = {0};
    for (size_t op = 0; op < OPS; op++)
        tu_churn_step(live, 128, &rng, op, op % 100 == 0 ? 512 * TU_KiB : 4 * TU_KiB, 0);
    tu_free_all(live, 128);
    for (size_t i = 0; i < HANDOFF; i++)
        handoff[arg->wave][arg->index][i] =
            tu_block_new(tu_rng_size(&rng, TU_BLOCK_MIN, 2 * TU_KiB), arg->wave << 16 | i);
    return NULL;
}

static void threads_in_waves(void **state)
{
    seed = tu_seed(77);
    ebb_summary_t s0 = tu_summary();
    static churn_arg_t args[PER_WAVE];
    for (size_t w = 0; w < WAVES; w++) {
        for (size_t i = 0; i < PER_WAVE; i++)
            args[i] = (churn_arg_t){w, i};
        tu_run_threads(PER_WAVE, churn_thread, args, sizeof args[0]);
    }
    for (size_t i = 0; i < PER_WAVE; i++)
        for (size_t k = 0; k < HANDOFF; k++)
            tu_block_free(handoff[WAVES - 1][i][k]);
    assert_int_equal(atomic_load(&tu_failures), 0);
    /* Every thread that exited gave up its cache. */
    assert_true(tu_summary().nthreads <= s0.nthreads);
}

/* Fill the thread cache: many blocks of every small size, all freed on this
 * thread, so the cache holds as much as it can when the thread exits. */
static void *fill_cache_and_exit(void *arg)
{
    enum { PER_SIZE = 256 };
    static const size_t sizes[] = {8, 16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 256, 384,
                                   512, 768, 1024, 1536, 2048, 3072, 4096, 8192, 16384};
    void *blocks[PER_SIZE];
    for (size_t s = 0; s < TU_ARRAY_LEN(sizes); s++) {
        for (size_t i = 0; i < PER_SIZE; i++) {
            blocks[i] = malloc(sizes[s]);
            TU_CHECK(blocks[i] != NULL);
            if (blocks[i] != NULL)
                memset(blocks[i], 0x5C, sizes[s]);
        }
        for (size_t i = 0; i < PER_SIZE; i++)
            free(blocks[i]);
    }
    return NULL;
}

/* Bytes a few pages of per-size-class bookkeeping may keep after all
 * caches are flushed. */
#define SLACK (2 * TU_MiB)

static void exit_flushes_thread_cache(void **state)
{
    enum { THREADS = 32 };
    ebb_thread_flush();
    ebb_summary_t s0 = tu_summary();
    for (int round = 0; round < 4; round++)
        tu_run_threads(THREADS / 4, fill_cache_and_exit, NULL, 0);
    ebb_summary_t s1 = tu_summary();
    assert_int_equal(atomic_load(&tu_failures), 0);
    /* 32 full caches would show as megabytes held; flushed, everything the
     * threads allocated is back. */
    assert_true(s1.allocated <= s0.allocated + SLACK);
    assert_true(s1.active <= s0.active + SLACK);
    assert_true(s1.nthreads <= s0.nthreads);
}

/* Other libraries' thread destructors run in any order relative to
 * ebbmalloc's own and may free and allocate; a destructor that stores a new
 * value makes glibc run the destructors again (up to
 * PTHREAD_DESTRUCTOR_ITERATIONS rounds). */
enum { DTOR_THREADS = 64, DTOR_ROUNDS = 3 };

static pthread_key_t dtor_key;
static tu_block_t *dtor_leftover[DTOR_THREADS];

typedef struct dtor_state_s {
    size_t thread, round;
    tu_block_t *block;
} dtor_state_t;

static void dtor(void *value)
{
    dtor_state_t *st = value;
    tu_block_free(st->block);
    if (++st->round < DTOR_ROUNDS) {
        st->block = tu_block_new(100 * st->round + 24, st->round);
        if (st->block != NULL)
            pthread_setspecific(dtor_key, st);
        return;
    }
    /* Last round: leave one block for the main thread to free. */
    dtor_leftover[st->thread] = tu_block_new(3000, st->thread);
    free(st);
}

static void *dtor_thread(void *arg)
{
    size_t id = *(size_t *)arg;
    dtor_state_t *st = malloc(sizeof *st);
    TU_CHECK(st != NULL);
    *st = (dtor_state_t){id, 0, tu_block_new(64, id)};
    pthread_setspecific(dtor_key, st);
    free(malloc(1000)); /* make sure this thread has a cache of its own */
    return NULL;
}

static void malloc_in_thread_destructors(void **state)
{
    assert_int_equal(pthread_key_create(&dtor_key, dtor), 0);
    ebb_summary_t s0 = tu_summary();
    tu_run_indexed(DTOR_THREADS, dtor_thread);
    for (size_t i = 0; i < DTOR_THREADS; i++) {
        assert_non_null(dtor_leftover[i]);
        tu_block_free(dtor_leftover[i]);
    }
    assert_int_equal(atomic_load(&tu_failures), 0);
    /* A cache made again by a late destructor is given up as well. */
    ebb_summary_t s1 = tu_summary();
    assert_true(s1.nthreads <= s0.nthreads);
    assert_true(s1.allocated <= s0.allocated + SLACK);
    pthread_key_delete(dtor_key);
}

int main(void)
{
    tu_require_ebbmalloc();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(threads_in_waves),
        cmocka_unit_test(exit_flushes_thread_cache),
        cmocka_unit_test(malloc_in_thread_destructors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
