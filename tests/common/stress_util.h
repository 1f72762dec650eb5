/*
 * Helpers for the multithreaded stress tests.
 *
 * Worker threads cannot use cmocka's asserts (they longjmp out of the
 * calling thread), so they report with TU_FAIL / TU_CHECK, which print and
 * count; the main thread asserts the count is zero at the end.
 *
 * Blocks that travel between threads describe themselves, so whichever
 * thread frees or reallocates one can check it:
 *
 *   +-----------+----------+---------------------------------+
 *   | size (8B) | tag (8B) | pattern of tag, sparse (size-16) |
 *   +-----------+----------+---------------------------------+
 *   ^ pointer from malloc/realloc              size >= TU_BLOCK_MIN
 */
#ifndef EBB_STRESS_UTIL_H
#define EBB_STRESS_UTIL_H

#include "test_util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

static atomic_int tu_failures;

#define TU_FAIL(...)                                                                               \
    do {                                                                                           \
        fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                       \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        atomic_fetch_add(&tu_failures, 1);                                                         \
    } while (0)

#define TU_CHECK(cond)                                                                             \
    do {                                                                                           \
        if (!(cond))                                                                               \
            TU_FAIL("%s", #cond);                                                                  \
    } while (0)

typedef struct tu_block_s {
    size_t size;
    uint64_t tag;
    uint8_t data[];
} tu_block_t;

#define TU_BLOCK_MIN sizeof(tu_block_t)

static inline void tu_block_stamp(tu_block_t *b, size_t size, uint64_t tag)
{
    b->size = size;
    b->tag = tag;
    tu_fill_sparse(b->data, size - TU_BLOCK_MIN, tag);
}

/* A new block of size bytes (at least TU_BLOCK_MIN) holding tag's pattern;
 * NULL (and a failure counted) if malloc failed. */
static inline tu_block_t *tu_block_new(size_t size, uint64_t tag)
{
    if (size < TU_BLOCK_MIN)
        size = TU_BLOCK_MIN;
    tu_block_t *b = malloc(size);
    if (b == NULL) {
        TU_FAIL("malloc(%zu) failed", size);
        return NULL;
    }
    if (!tu_is_aligned(b, TU_MIN_ALIGN))
        TU_FAIL("malloc(%zu) = %p is not %zu-byte aligned", size, (void *)b, TU_MIN_ALIGN);
    tu_block_stamp(b, size, tag);
    return b;
}

/* True when the block still holds what tu_block_new/realloc wrote. */
static inline bool tu_block_ok(const tu_block_t *b)
{
    if (b->size < TU_BLOCK_MIN || b->size > ((size_t)1 << 40))
        return false;
    return tu_sparse_ok(b->data, b->size - TU_BLOCK_MIN, b->tag);
}

/* Check, then free; a damaged block is counted as a failure. */
static inline void tu_block_free(tu_block_t *b)
{
    if (!tu_block_ok(b))
        TU_FAIL("block %p (size %zu, tag %llu) damaged before free", (void *)b, b->size,
                (unsigned long long)b->tag);
    free(b);
}

/* realloc to new_size, check the kept prefix, re-stamp under new_tag.
 * Returns the block (the old one if realloc failed, with a failure counted). */
static inline tu_block_t *tu_block_realloc(tu_block_t *b, size_t new_size, uint64_t new_tag)
{
    if (new_size < TU_BLOCK_MIN)
        new_size = TU_BLOCK_MIN;
    size_t old_size = b->size;
    uint64_t old_tag = b->tag;
    tu_block_t *nb = realloc(b, new_size);
    if (nb == NULL) {
        TU_FAIL("realloc(%zu -> %zu) failed", old_size, new_size);
        return b;
    }
    size_t keep = (old_size < new_size ? old_size : new_size) - TU_BLOCK_MIN;
    if (nb->tag != old_tag || !tu_sparse_prefix_ok(nb->data, keep, old_tag))
        TU_FAIL("realloc(%zu -> %zu) lost the contents", old_size, new_size);
    tu_block_stamp(nb, new_size, new_tag);
    return nb;
}

/* One step of slot churn over live[0..n): an empty slot gets a new block
 * of a random size up to max; a full one is resized (one op in resize_every,
 * 0 for never) or else checked and freed. */
static inline void tu_churn_step(tu_block_t **live, size_t n, tu_rng_t *rng, uint64_t op,
                                 size_t max, unsigned resize_every)
{
    size_t slot = tu_rng_range(rng, 0, n - 1);
    size_t size = tu_rng_size(rng, TU_BLOCK_MIN, max);
    if (live[slot] == NULL) {
        live[slot] = tu_block_new(size, op);
    } else if (resize_every != 0 && op % resize_every == 0) {
        live[slot] = tu_block_realloc(live[slot], size, op);
    } else {
        tu_block_free(live[slot]);
        live[slot] = NULL;
    }
}

/* Check and free every block left in live[0..n). */
static inline void tu_free_all(tu_block_t **live, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (live[i] != NULL)
            tu_block_free(live[i]);
}

/* Start n threads running fn(&args[i * arg_size]); join them all. */
static inline void tu_run_threads(size_t n, void *(*fn)(void *), void *args, size_t arg_size)
{
    pthread_t *t = calloc(n, sizeof *t);
    if (t == NULL) {
        TU_FAIL("calloc for %zu thread ids failed", n);
        return;
    }
    size_t started = 0;
    for (; started < n; started++) {
        int rc = pthread_create(&t[started], NULL, fn, (char *)args + started * arg_size);
        if (rc != 0) {
            TU_FAIL("pthread_create: %s", strerror(rc));
            break;
        }
    }
    for (size_t i = 0; i < started; i++)
        pthread_join(t[i], NULL);
    free(t);
}

/* Start n threads running fn(&i) with i = 0..n-1 (a size_t); join them. */
static inline void tu_run_indexed(size_t n, void *(*fn)(void *))
{
    size_t *ids = malloc(n * sizeof *ids);
    if (ids == NULL) {
        TU_FAIL("malloc for %zu thread indices failed", n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        ids[i] = i;
    tu_run_threads(n, fn, ids, sizeof *ids);
    free(ids);
}

/* Seed of a test run: EBB_TEST_SEED if set, else the given default; printed
 * so that a failure can be replayed. */
static inline uint64_t tu_seed(uint64_t fallback)
{
    const char *s = getenv("EBB_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0) : fallback;
    fprintf(stderr, "seed %llu (set EBB_TEST_SEED to replay another)\n", (unsigned long long)seed);
    return seed;
}

#endif /* EBB_STRESS_UTIL_H */
