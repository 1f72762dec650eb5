/*
 * The resident set must reach a plateau: a service that allocates the same
 * amount each cycle, in sizes that shift from cycle to cycle, freed on
 * other threads, with a few blocks surviving each cycle (as caches and
 * sessions do), must not need more memory every cycle. This is the growth
 * that makes JVM services leave glibc malloc.
 */
#include "stress_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <sys/mman.h>

#include <cmocka.h>

enum {
    THREADS = 4,
    CYCLES = 12,
    PER_THREAD = 24 << 20, /* bytes live per thread at a cycle's peak */
    MAX_BLOCKS = PER_THREAD / 16,
    SURVIVE_ONE_IN = 100,
    SURVIVORS = THREADS * CYCLES * (MAX_BLOCKS / SURVIVE_ONE_IN + 1),
};

static uint64_t seed;
static unsigned cycle;
static tu_block_t **blocks[THREADS];
static size_t nblocks[THREADS];
static tu_block_t *survivors[SURVIVORS];
static atomic_size_t nsurvivors;
static atomic_size_t live_bytes; /* in blocks allocated and not yet freed */

/* Fill this thread's share; the size range moves with the cycle. */
static void *allocate_share(void *arg)
{
    size_t id = *(size_t *)arg;
    tu_rng_t rng = tu_rng(seed + cycle * THREADS + id);
    size_t lo = TU_BLOCK_MIN << (cycle % 4), hi = (size_t)256 << (cycle % 7);
    size_t bytes = 0, n = 0;
    while (bytes < PER_THREAD && n < MAX_BLOCKS) {
        size_t size = tu_rng_size(&rng, lo, hi);
        blocks[id][n] = tu_block_new(size, n);
        if (blocks[id][n] == NULL)
            break;
        bytes += size;
        n++;
    }
    nblocks[id] = n;
    atomic_fetch_add(&live_bytes, bytes);
    return NULL;
}

/* Free the next thread's share, keeping one block in SURVIVE_ONE_IN. */
static void *free_other_share(void *arg)
{
    size_t victim = (*(size_t *)arg + 1) % THREADS;
    for (size_t i = 0; i < nblocks[victim]; i++) {
        if (i % SURVIVE_ONE_IN == 0) {
            size_t slot = atomic_fetch_add(&nsurvivors, 1);
            if (slot < SURVIVORS) {
                survivors[slot] = blocks[victim][i];
                continue;
            }
        }
        atomic_fetch_sub(&live_bytes, blocks[victim][i]->size);
        tu_block_free(blocks[victim][i]);
    }
    return NULL;
}

/* Resident bytes may exceed the live bytes by this factor (size-class
 * rounding, partly used slabs, caches) plus SLACK: the 4 KiB pages that the
 * scattered survivors pin. glibc, whose free chunks serve any size, stays at
 * about 1.4x live here; jemalloc (no purge inside slabs) exceeds the bound;
 * ebbmalloc meets it only because it purges free pages inside slabs. */
#define OVERHEAD_NUM 3
#define OVERHEAD_DEN 2
#define SLACK (24 * TU_MiB)

static void resident_set_plateaus(void **state)
{
    seed = tu_seed(31337);
    /* The bookkeeping arrays come from mmap, so they are not counted. */
    for (size_t t = 0; t < THREADS; t++) {
        blocks[t] = mmap(NULL, MAX_BLOCKS * sizeof(tu_block_t *), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(blocks[t] != MAP_FAILED);
    }
    size_t base = tu_statm(TU_STATM_RESIDENT);
    size_t peak[CYCLES], live[CYCLES];
    for (cycle = 0; cycle < CYCLES; cycle++) {
        tu_run_indexed(THREADS, allocate_share);
        peak[cycle] = tu_statm(TU_STATM_RESIDENT) - base;
        live[cycle] = atomic_load(&live_bytes);
        ebb_summary_t s = tu_summary();
        tu_run_indexed(THREADS, free_other_share);
        /* Let the decay (decay_ms:100, set by ctest) purge the pages the
         * freed blocks left empty, inside slabs that survivors keep. */
        usleep(300 * 1000);
        fprintf(stderr,
                "cycle %2u at peak: live %zu MiB, resident +%zu MiB; ebb: allocated %zu, "
                "active %zu, dirty %zu, mapped %zu MiB\n",
                cycle, live[cycle] / TU_MiB, peak[cycle] / TU_MiB, s.allocated / TU_MiB,
                s.active / TU_MiB, s.dirty / TU_MiB, s.mapped / TU_MiB);
    }
    size_t kept = atomic_load(&nsurvivors) < SURVIVORS ? atomic_load(&nsurvivors) : SURVIVORS;
    tu_free_all(survivors, kept);
    for (size_t t = 0; t < THREADS; t++)
        munmap(blocks[t], MAX_BLOCKS * sizeof(tu_block_t *));
    assert_int_equal(atomic_load(&tu_failures), 0);

    for (unsigned c = 0; c < CYCLES; c++)
        if (peak[c] > live[c] / OVERHEAD_DEN * OVERHEAD_NUM + SLACK)
            fail_msg("cycle %u: %zu MiB resident for %zu MiB live", c, peak[c] / TU_MiB,
                     live[c] / TU_MiB);
}

int main(void)
{
    tu_require_ebbmalloc();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(resident_set_plateaus),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
