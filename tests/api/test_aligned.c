/*
 * posix_memalign, aligned_alloc, memalign, valloc and pvalloc: alignments
 * from 8 B to 64 MiB, the EINVAL cases and page rounding.
 */
#include "test_util.h"

#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define MAX_ALIGN_BITS 26 /* 64 MiB */

static size_t page;

/* Write the first and last byte of every page of [p, p + n) and read them
 * back: the whole block is mapped and writable. */
static void touch_block(void *p, size_t n, uint64_t tag)
{
    uint8_t *b = p;
    for (size_t i = 0; i < n; i += page)
        b[i] = tu_pattern_byte(tag, i);
    b[n - 1] = tu_pattern_byte(tag, n - 1);
    for (size_t i = 0; i < n; i += page)
        assert_int_equal(b[i], tu_pattern_byte(tag, i));
    assert_int_equal(b[n - 1], tu_pattern_byte(tag, n - 1));
}

static void check_aligned_block(void *p, size_t alignment, size_t size, uint64_t tag)
{
    assert_non_null(p);
    assert_true(tu_is_aligned(p, alignment));
    assert_true(tu_is_aligned(p, TU_MIN_ALIGN));
    assert_true(ebb_owns(p));
    assert_true(malloc_usable_size(p) >= size);
    touch_block(p, size ? size : 1, tag);
}

/* A non-power-of-two alignment either fails with EINVAL (glibc >= 2.38,
 * C23) or is rounded up to the next power of two (glibc 2.36 and older). */
static void check_non_power_of_two_result(void *p, int err, size_t alignment, size_t size)
{
    if (p == NULL) {
        assert_int_equal(err, EINVAL);
        return;
    }
    size_t rounded = (size_t)1 << (64 - __builtin_clzll(alignment));
    check_aligned_block(p, rounded, size, alignment);
    free(p);
}

static void posix_memalign_rejects_bad_alignment(void **state)
{
    static const size_t bad[] = {0, 1, 2, 4, 3, 12, 24, 48, 100, 4097, SIZE_MAX, ((size_t)3) << 60};
    for (size_t i = 0; i < TU_ARRAY_LEN(bad); i++) {
        void *out = (void *)&page; /* sentinel */
        errno = 777;
        int rc = posix_memalign(&out, bad[i], 64);
        assert_int_equal(rc, EINVAL);
        /* Returned as the code, never through errno or the out pointer. */
        assert_ptr_equal(out, (void *)&page);
        assert_int_equal(errno, 777);
    }
}

static void posix_memalign_all_alignments(void **state)
{
    void *live[MAX_ALIGN_BITS + 1][3];
    for (unsigned bit = 3; bit <= MAX_ALIGN_BITS; bit++) {
        size_t a = (size_t)1 << bit;
        const size_t sz[3] = {1, 100 + bit, a + 1};
        for (int k = 0; k < 3; k++) {
            void *p = NULL;
            errno = 777;
            assert_int_equal(posix_memalign(&p, a, sz[k]), 0);
            assert_int_equal(errno, 777);
            check_aligned_block(p, a, sz[k], bit);
            live[bit][k] = p;
        }
    }
    for (unsigned bit = 3; bit <= MAX_ALIGN_BITS; bit++)
        for (int k = 0; k < 3; k++)
            free(live[bit][k]);
}

/* Many small aligned blocks at once: alignment padding must not let them
 * overlap. */
static void posix_memalign_many_small(void **state)
{
    enum { N = 2000 };
    static void *p[N];
    static size_t n[N];
    tu_rng_t rng = tu_rng(5);
    for (size_t i = 0; i < N; i++) {
        size_t a = (size_t)1 << tu_rng_range(&rng, 3, 13);
        n[i] = tu_rng_size(&rng, 1, 3 * a);
        assert_int_equal(posix_memalign(&p[i], a, n[i]), 0);
        assert_true(tu_is_aligned(p[i], a));
        tu_fill(p[i], n[i], i);
    }
    assert_int_equal(tu_check_and_free(p, n, N), N);
}

static void aligned_alloc_all_alignments(void **state)
{
    for (unsigned bit = 0; bit <= MAX_ALIGN_BITS; bit++) {
        size_t a = (size_t)1 << bit;
        /* The size need not be a multiple of the alignment (C17 DR 460). */
        const size_t sz[3] = {1, a + 3, 3 * a};
        for (int k = 0; k < 3; k++) {
            void *p = aligned_alloc(a, sz[k]);
            check_aligned_block(p, a, sz[k], bit);
            free(p);
        }
    }
}

static const size_t non_power_of_two[] = {3, 24, 48, 100, 4097};

static void aligned_alloc_non_power_of_two(void **state)
{
    for (size_t i = 0; i < TU_ARRAY_LEN(non_power_of_two); i++) {
        errno = 0;
        void *p = aligned_alloc(non_power_of_two[i], 200);
        check_non_power_of_two_result(p, errno, non_power_of_two[i], 200);
    }
}

static void memalign_all_alignments(void **state)
{
    for (unsigned bit = 0; bit <= MAX_ALIGN_BITS; bit++) {
        size_t a = (size_t)1 << bit;
        void *p = memalign(a, a + 5);
        check_aligned_block(p, a, a + 5, bit);
        void *q = memalign(a, 0);
        assert_non_null(q);
        assert_true(tu_is_aligned(q, a));
        free(p);
        free(q);
    }
    for (size_t i = 0; i < TU_ARRAY_LEN(non_power_of_two); i++) {
        errno = 0;
        void *p = memalign(non_power_of_two[i], 1000);
        check_non_power_of_two_result(p, errno, non_power_of_two[i], 1000);
    }
}

/* realloc takes aligned blocks too and keeps their contents (the result
 * need only be 16-byte aligned). */
static void realloc_of_aligned_blocks(void **state)
{
    for (unsigned bit = 4; bit <= MAX_ALIGN_BITS; bit += 2) {
        size_t a = (size_t)1 << bit;
        size_t n = 100 + bit;
        void *p = aligned_alloc(a, n);
        assert_non_null(p);
        tu_fill(p, n, bit);
        static const size_t next[] = {3000, 5 * TU_MiB, 40, 0};
        for (size_t k = 0; next[k] != 0; k++) {
            size_t keep = n < next[k] ? n : next[k];
            p = realloc(p, next[k]);
            assert_non_null(p);
            assert_true(tu_is_aligned(p, TU_MIN_ALIGN));
            assert_int_equal(tu_check(p, keep, bit), keep);
            tu_fill(p, next[k], bit);
            n = next[k];
        }
        free(p);
    }
}

static void valloc_is_page_aligned(void **state)
{
    static const size_t sz[] = {0, 1, 100, 4095, 4096, 4097, 65537, 3 * TU_MiB + 1};
    void *live[TU_ARRAY_LEN(sz)];
    for (size_t i = 0; i < TU_ARRAY_LEN(sz); i++) {
        live[i] = valloc(sz[i]);
        check_aligned_block(live[i], page, sz[i], i);
    }
    for (size_t i = 0; i < TU_ARRAY_LEN(sz); i++)
        free(live[i]);
}

/* pvalloc rounds the size up to whole pages. pvalloc(0) is one page: the
 * project asks for that, a stricter promise than glibc 2.36, whose pvalloc(0)
 * returns a minimum chunk (usable size 24). */
static void pvalloc_rounds_to_pages(void **state)
{
    static const size_t sz[] = {0, 1, 100, 4095, 4096, 4097, 65537, 3 * TU_MiB + 1};
    for (size_t i = 0; i < TU_ARRAY_LEN(sz); i++) {
        size_t rounded = sz[i] == 0 ? page : (sz[i] + page - 1) / page * page;
        void *p = pvalloc(sz[i]);
        assert_non_null(p);
        assert_true(tu_is_aligned(p, page));
        assert_true(malloc_usable_size(p) >= rounded);
        /* Every byte of the rounded size is the caller's. */
        memset(p, 0xC3, rounded);
        touch_block(p, rounded, i);
        free(p);
    }
}

int main(void)
{
    tu_require_ebbmalloc();
    page = (size_t)sysconf(_SC_PAGESIZE);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(posix_memalign_rejects_bad_alignment),
        cmocka_unit_test(posix_memalign_all_alignments),
        cmocka_unit_test(posix_memalign_many_small),
        cmocka_unit_test(aligned_alloc_all_alignments),
        cmocka_unit_test(aligned_alloc_non_power_of_two),
        cmocka_unit_test(memalign_all_alignments),
        cmocka_unit_test(realloc_of_aligned_blocks),
        cmocka_unit_test(valloc_is_page_aligned),
        cmocka_unit_test(pvalloc_rounds_to_pages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
