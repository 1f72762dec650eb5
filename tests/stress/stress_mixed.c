/*
 * Many threads, sizes from 16 B to 1 MiB, malloc/realloc/free in a random
 * mix, and blocks swapped between threads through shared slots so any
 * thread may resize or free any other thread's block.
 */
#include "stress_util.h"

#include <setjmp.h>
#include <stdarg.h>

#include <cmocka.h>

enum {
    THREADS = 8,
    OPS = 150000,
    LOCAL = 256,
    SHARED = 64,
};

static uint64_t seed;
static _Atomic(tu_block_t *) shared[SHARED];

static size_t random_size(tu_rng_t *rng)
{
    /* One draw in 16 may reach 1 MiB; the rest stay below 8 KiB. */
    size_t max = tu_rng_next(rng) % 16 == 0 ? TU_MiB : 8 * TU_KiB;
    return tu_rng_size(rng, 16, max);
}

static void *mixed_thread(void *arg)
{
    size_t id = *(size_t *)arg;
    tu_rng_t rng = tu_rng(seed * 31 + id);
    tu_block_t *local[LOCAL] = {0};
    for (size_t op = 0; op < OPS; op++) {
        size_t slot = tu_rng_range(&rng, 0, LOCAL - 1);
        uint64_t tag = (uint64_t)id << 40 | op;
        unsigned what = (unsigned)(tu_rng_next(&rng) % 100);
        if (local[slot] == NULL) {
            local[slot] = tu_block_new(random_size(&rng), tag);
        } else if (what < 40) {
            local[slot] = tu_block_realloc(local[slot], random_size(&rng), tag);
        } else if (what < 90) {
            tu_block_free(local[slot]);
            local[slot] = NULL;
        } else {
            /* Swap with a shared slot: the block goes to whichever thread
             * takes that slot next. */
            if (!tu_block_ok(local[slot]))
                TU_FAIL("block damaged before sharing");
            local[slot] = atomic_exchange(&shared[tu_rng_range(&rng, 0, SHARED - 1)], local[slot]);
        }
    }
    for (size_t i = 0; i < LOCAL; i++)
        if (local[i] != NULL)
            tu_block_free(local[i]);
    return NULL;
}

static void mixed_sizes_with_realloc(void **state)
{
    seed = tu_seed(4242);
    ebb_summary_t s0 = tu_summary();
    tu_run_indexed(THREADS, mixed_thread);
    for (size_t i = 0; i < SHARED; i++) {
        tu_block_t *b = atomic_exchange(&shared[i], NULL);
        if (b != NULL)
            tu_block_free(b);
    }
    assert_int_equal(atomic_load(&tu_failures), 0);
    /* Everything was freed: nothing like the 8 x 256 live blocks remains. */
    assert_true(tu_summary().allocated <= s0.allocated + 4 * TU_MiB);
}

int main(void)
{
    tu_require_ebbmalloc();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mixed_sizes_with_realloc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
