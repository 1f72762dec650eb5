/*
 * malloc, free, calloc, realloc, reallocarray, malloc_usable_size,
 * free_sized and free_aligned_sized, as glibc documents them.
 */
#include "test_util.h"

#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

/* C23's sized frees; glibc 2.36's headers lack them, so declare them weak:
 * a missing export shows up as a NULL address, not a link error. */
extern void free_sized(void *ptr, size_t size) __attribute__((weak));
extern void free_aligned_sized(void *ptr, size_t alignment, size_t size) __attribute__((weak));

/* Sizes from 1 byte to 64 MiB: every power of two and its neighbours. */
static size_t sizes[3 * 27];
static size_t nsizes;

static void init_sizes(void)
{
    for (unsigned bit = 0; bit <= 26; bit++) {
        size_t p = (size_t)1 << bit;
        if (p > 2)
            sizes[nsizes++] = p - 1;
        sizes[nsizes++] = p;
        if (bit < 26)
            sizes[nsizes++] = p + 1;
    }
}

/* malloc(0) returns a unique pointer that free accepts (glibc: a minimum
 * sized chunk, never NULL). */
static void malloc_zero_is_unique(void **state)
{
    void *a = malloc(0), *b = malloc(0);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    assert_true(tu_is_aligned(a, TU_MIN_ALIGN));
    assert_true(ebb_owns(a));
    free(a);
    free(b);
}

static void free_null_is_noop(void **state)
{
    errno = 1234;
    free(NULL);
    assert_int_equal(errno, 1234);
}

/* Every size from 1 B to 64 MiB, all live at once: 16-byte aligned, owned,
 * usable size at least the request, contents intact after the others were
 * allocated and written. */
static void malloc_sizes_aligned_and_preserved(void **state)
{
    void *blocks[TU_ARRAY_LEN(sizes)];
    for (size_t i = 0; i < nsizes; i++) {
        blocks[i] = malloc(sizes[i]);
        assert_non_null(blocks[i]);
        assert_true(tu_is_aligned(blocks[i], TU_MIN_ALIGN));
        assert_true(ebb_owns(blocks[i]));
        assert_true(malloc_usable_size(blocks[i]) >= sizes[i]);
        tu_fill_sparse(blocks[i], sizes[i], i);
    }
    for (size_t i = 0; i < nsizes; i++) {
        assert_true(tu_sparse_ok(blocks[i], sizes[i], i));
        free(blocks[i]);
    }
}

/* Distinct live blocks never overlap: fill each fully, then check all. */
static void malloc_blocks_do_not_overlap(void **state)
{
    enum { N = 4096 };
    static void *p[N];
    static size_t n[N];
    tu_rng_t rng = tu_rng(1);
    for (size_t i = 0; i < N; i++) {
        n[i] = tu_rng_size(&rng, 1, 64 * TU_KiB);
        p[i] = malloc(n[i]);
        assert_non_null(p[i]);
        tu_fill(p[i], n[i], i);
    }
    assert_int_equal(tu_check_and_free(p, n, N), N);
}

/* calloc zeroes the n bytes asked for (the usable tail beyond them need
 * not be), also when it gets memory that was just written and freed (small,
 * page-sized and huge blocks, each reused many times). */
static void calloc_zeroes_dirty_memory(void **state)
{
    static const size_t csizes[] = {1, 16, 100, 1000, 4096, 40000, 300000, 4 * TU_MiB, 32 * TU_MiB};
    for (size_t s = 0; s < TU_ARRAY_LEN(csizes); s++) {
        size_t n = csizes[s];
        int rounds = n >= TU_MiB ? 4 : 64;
        for (int r = 0; r < rounds; r++) {
            void *dirty[8];
            for (int i = 0; i < 8; i++) {
                dirty[i] = malloc(n);
                assert_non_null(dirty[i]);
                memset(dirty[i], 0xA5, n);
            }
            for (int i = 0; i < 8; i++)
                free(dirty[i]);
            for (int i = 0; i < 8; i++) {
                dirty[i] = calloc(1, n);
                assert_non_null(dirty[i]);
                assert_true(tu_all_zero(dirty[i], n));
                memset(dirty[i], 0x5A, n);
            }
            for (int i = 0; i < 8; i++)
                free(dirty[i]);
        }
    }
    /* count * size split the other way round. */
    unsigned char *p = calloc(4096, 3);
    assert_non_null(p);
    assert_true(tu_all_zero(p, 4096 * 3));
    free(p);
    p = calloc(0, 0);
    assert_non_null(p);
    free(p);
}

static void calloc_overflow_is_enomem(void **state)
{
    volatile size_t big = SIZE_MAX / 2 + 2;
    errno = 0;
    assert_null(calloc(big, 2));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(calloc(2, big));
    assert_int_equal(errno, ENOMEM);
    errno = 0;
    assert_null(calloc((size_t)1 << 32, ((size_t)1 << 32) + 1));
    assert_int_equal(errno, ENOMEM);
}

static void realloc_null_is_malloc(void **state)
{
    void *p = realloc(NULL, 100);
    assert_non_null(p);
    assert_true(ebb_owns(p));
    assert_true(malloc_usable_size(p) >= 100);
    tu_fill(p, 100, 7);
    assert_true(tu_pattern_ok(p, 100, 7));
    free(p);
    /* realloc(NULL, 0) is malloc(0): glibc returns a unique live block. */
    void *a = realloc(NULL, 0), *b = realloc(NULL, 0);
    assert_non_null(a);
    assert_non_null(b);
    assert_ptr_not_equal(a, b);
    free(a);
    free(b);
}

/* glibc: realloc(p, 0) with p != NULL frees p and returns NULL
 * (REALLOC_ZERO_BYTES_FREES). Freeing is checked by doing it often enough
 * that a leak would show as hundreds of megabytes mapped. */
static void realloc_zero_frees_and_returns_null(void **state)
{
    size_t before = tu_summary().mapped;
    for (int i = 0; i < 100000; i++) {
        void *p = malloc(4000);
        assert_non_null(p);
        memset(p, 1, 4000);
        assert_null(realloc(p, 0));
    }
    size_t after = tu_summary().mapped;
    assert_true(after < before + 64 * TU_MiB);
}

/* Grow and shrink across every size range, keeping the common prefix. */
static void realloc_chains_keep_contents(void **state)
{
    static const size_t chain[] = {1,       24,         200,   4000, 70000, 2 * TU_MiB, 65 * TU_MiB,
                                   100,     3 * TU_MiB, 33,    8192, 8190,  8200,       1000000,
                                   1000001, 999999,     16,    0};
    size_t cur = 0;
    uint8_t *p = NULL;
    for (size_t i = 0; chain[i] != 0; i++) {
        size_t next = chain[i];
        uint8_t *q = realloc(p, next);
        assert_non_null(q);
        assert_true(tu_is_aligned(q, TU_MIN_ALIGN));
        assert_true(malloc_usable_size(q) >= next);
        size_t keep = cur < next ? cur : next;
        assert_int_equal(tu_check(q, keep, 42), keep);
        tu_fill(q, next, 42);
        p = q;
        cur = next;
    }
    free(p);
}

/* Small steps, as a growing string does: contents survive each step. */
static void realloc_small_steps(void **state)
{
    uint8_t *p = NULL;
    size_t n = 0;
    for (size_t next = 1; next <= 300000; next += 1 + next / 8) {
        p = realloc(p, next);
        assert_non_null(p);
        assert_int_equal(tu_check(p, n, 3), n);
        tu_fill(p, next, 3);
        n = next;
    }
    for (; n > 1; n = n * 2 / 3) {
        p = realloc(p, n);
        assert_non_null(p);
        assert_int_equal(tu_check(p, n, 3), n);
    }
    free(p);
}

static void reallocarray_overflow_is_enomem(void **state)
{
    uint8_t *p = reallocarray(NULL, 10, 10);
    assert_non_null(p);
    tu_fill(p, 100, 9);
    volatile size_t big = SIZE_MAX / 8 + 1;
    errno = 0;
    assert_null(reallocarray(p, big, 8));
    assert_int_equal(errno, ENOMEM);
    /* The old block is untouched and still live. */
    assert_true(tu_pattern_ok(p, 100, 9));
    p = reallocarray(p, 1000, 10);
    assert_non_null(p);
    assert_true(tu_pattern_ok(p, 100, 9));
    free(p);
}

/* malloc_usable_size: at least the request, and every usable byte is the
 * caller's: writing all of them disturbs no neighbour. */
static void usable_size_is_writable(void **state)
{
    assert_int_equal(malloc_usable_size(NULL), 0);
    enum { N = 512 };
    static void *p[N];
    static size_t u[N];
    tu_rng_t rng = tu_rng(2);
    for (size_t i = 0; i < N; i++) {
        size_t n = tu_rng_size(&rng, 1, 256 * TU_KiB);
        if (i % 64 == 0)
            n = 5 * TU_MiB + i;
        p[i] = malloc(n);
        assert_non_null(p[i]);
        u[i] = malloc_usable_size(p[i]);
        assert_true(u[i] >= n);
        tu_fill(p[i], u[i], i);
    }
    for (size_t i = 0; i < N; i++) {
        assert_int_equal(tu_check(p[i], u[i], i), u[i]);
        assert_int_equal(malloc_usable_size(p[i]), u[i]);
        free(p[i]);
    }
}

/* free_sized / free_aligned_sized (C23) are exported and really free: a
 * leak would map gigabytes. */
static void sized_frees_work(void **state)
{
    assert_non_null(free_sized);
    assert_non_null(free_aligned_sized);
    size_t before = tu_summary().mapped;
    for (int i = 0; i < 20000; i++) {
        size_t n = 16 + (size_t)(i % 97) * 331;
        void *p = malloc(n);
        assert_non_null(p);
        memset(p, 0x11, n);
        free_sized(p, n);
        size_t a = (size_t)64 << (i % 8);
        p = aligned_alloc(a, n);
        assert_non_null(p);
        assert_true(tu_is_aligned(p, a));
        memset(p, 0x22, n);
        free_aligned_sized(p, a, n);
        p = malloc(TU_MiB + (size_t)i);
        assert_non_null(p);
        free_sized(p, TU_MiB + (size_t)i);
    }
    free_sized(NULL, 0);
    free_aligned_sized(NULL, 64, 0);
    assert_true(tu_summary().mapped < before + 64 * TU_MiB);
}

int main(void)
{
    tu_require_ebbmalloc();
    init_sizes();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(malloc_zero_is_unique),
        cmocka_unit_test(free_null_is_noop),
        cmocka_unit_test(malloc_sizes_aligned_and_preserved),
        cmocka_unit_test(malloc_blocks_do_not_overlap),
        cmocka_unit_test(calloc_zeroes_dirty_memory),
        cmocka_unit_test(calloc_overflow_is_enomem),
        cmocka_unit_test(realloc_null_is_malloc),
        cmocka_unit_test(realloc_zero_frees_and_returns_null),
        cmocka_unit_test(realloc_chains_keep_contents),
        cmocka_unit_test(realloc_small_steps),
        cmocka_unit_test(reallocarray_overflow_is_enomem),
        cmocka_unit_test(usable_size_is_writable),
        cmocka_unit_test(sized_frees_work),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
