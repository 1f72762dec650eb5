/*
 * Out of memory: absurd sizes and alignments fail cleanly (NULL and errno
 * ENOMEM, or EINVAL where POSIX asks for it), leave the old block of a
 * failed realloc alone, and the allocator works on afterwards. A forked
 * child under a lowered RLIMIT_AS really runs out, frees and allocates again.
 */
#include "test_util.h"

#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <cmocka.h>

/* Sizes no allocator can satisfy: more than PTRDIFF_MAX, or more than the
 * 47-bit user address space of x86-64. Volatile so the compiler cannot
 * reason about the calls. */
static volatile size_t absurd[] = {
    SIZE_MAX,         SIZE_MAX - 15,          SIZE_MAX - 4096 * 2, (size_t)PTRDIFF_MAX + 1,
    (size_t)PTRDIFF_MAX, (size_t)1 << 50,     (size_t)1 << 47,
};

/* Alignments larger than the address space; valid powers of two, so the
 * failure is ENOMEM. */
static volatile size_t absurd_align[] = {(size_t)1 << 48, (size_t)1 << 56, (size_t)1 << 62,
                                         (size_t)1 << 63};

static size_t mapped_before;

static int remember_mapped(void **state)
{
    mapped_before = tu_summary().mapped;
    return 0;
}

/* After a test of failures: nothing leaked, and every size class works. */
static void check_allocator_still_works(void)
{
    assert_true(tu_summary().mapped < mapped_before + 64 * TU_MiB);
    static const size_t sz[] = {1, 100, 5000, 300000, 8 * TU_MiB};
    for (size_t i = 0; i < TU_ARRAY_LEN(sz); i++) {
        void *p = malloc(sz[i]);
        assert_non_null(p);
        tu_fill(p, sz[i], i);
        assert_true(tu_pattern_ok(p, sz[i], i));
        free(p);
    }
}

static void expect_enomem(void *p)
{
    int err = errno;
    assert_null(p);
    assert_int_equal(err, ENOMEM);
}

static void malloc_absurd_sizes(void **state)
{
    for (size_t i = 0; i < TU_ARRAY_LEN(absurd); i++) {
        errno = 0;
        expect_enomem(malloc(absurd[i]));
    }
    check_allocator_still_works();
}

static void calloc_absurd_sizes(void **state)
{
    for (size_t i = 0; i < TU_ARRAY_LEN(absurd); i++) {
        errno = 0;
        expect_enomem(calloc(1, absurd[i]));
        errno = 0;
        expect_enomem(calloc(absurd[i], 1));
    }
    volatile size_t tib = (size_t)1 << 40;
    errno = 0;
    expect_enomem(calloc(tib, 1024)); /* 1 PiB, no overflow */
    check_allocator_still_works();
}

/* A failed realloc leaves the old block as it was, still owned by the
 * caller, for small and huge blocks alike. */
static void realloc_absurd_keeps_old_block(void **state)
{
    static const size_t old_sizes[] = {10, 3000, 200000, 8 * TU_MiB};
    for (size_t k = 0; k < TU_ARRAY_LEN(old_sizes); k++) {
        size_t n = old_sizes[k];
        void *p = malloc(n);
        assert_non_null(p);
        tu_fill(p, n, k);
        for (size_t i = 0; i < TU_ARRAY_LEN(absurd); i++) {
            errno = 0;
            expect_enomem(realloc(p, absurd[i]));
            assert_true(ebb_owns(p));
            assert_true(malloc_usable_size(p) >= n);
            assert_true(tu_pattern_ok(p, n, k));
        }
        errno = 0;
        expect_enomem(reallocarray(p, SIZE_MAX / 2, 3));
        assert_true(tu_pattern_ok(p, n, k));
        p = realloc(p, n * 2);
        assert_non_null(p);
        assert_true(tu_pattern_ok(p, n, k));
        free(p);
    }
    check_allocator_still_works();
}

static void aligned_absurd(void **state)
{
    for (size_t i = 0; i < TU_ARRAY_LEN(absurd_align); i++) {
        errno = 0;
        expect_enomem(aligned_alloc(absurd_align[i], 16));
        errno = 0;
        expect_enomem(memalign(absurd_align[i], 16));
        void *out = &mapped_before;
        errno = 0;
        assert_int_equal(posix_memalign(&out, absurd_align[i], 16), ENOMEM);
        assert_ptr_equal(out, &mapped_before);
    }
    for (size_t i = 0; i < TU_ARRAY_LEN(absurd); i++) {
        errno = 0;
        expect_enomem(aligned_alloc(64, absurd[i]));
        errno = 0;
        expect_enomem(memalign(4096, absurd[i]));
        errno = 0;
        expect_enomem(valloc(absurd[i]));
        /* pvalloc's rounding up to a page overflows here: it must not wrap
         * to a small block. */
        errno = 0;
        expect_enomem(pvalloc(absurd[i]));
        void *out = &mapped_before;
        assert_int_equal(posix_memalign(&out, 64, absurd[i]), ENOMEM);
        assert_ptr_equal(out, &mapped_before);
    }
    /* An alignment that is no power of two and above SIZE_MAX / 2 + 1 is
     * invalid, not merely too big (glibc: EINVAL). */
    volatile size_t worst = SIZE_MAX;
    errno = 0;
    assert_null(aligned_alloc(worst, 16));
    assert_int_equal(errno, EINVAL);
    errno = 0;
    assert_null(memalign(worst, 16));
    assert_int_equal(errno, EINVAL);
    check_allocator_still_works();
}

#define HEADROOM ((size_t)512 << 20)
#define MAX_BLOCKS (HEADROOM / 128)

/* Allocate blocks of size n until malloc fails; the first byte of each
 * holds its index. Returns how many, or 0 after reporting a wrong failure. */
static size_t exhaust(void **blocks, size_t n, bool zeroed)
{
    size_t count = 0;
    for (;;) {
        if (count == MAX_BLOCKS) {
            fprintf(stderr, "child: %zu blocks of %zu bytes and still no failure\n", count, n);
            return 0;
        }
        errno = 0;
        unsigned char *p = zeroed ? calloc(1, n) : malloc(n);
        if (p == NULL) {
            if (errno != ENOMEM) {
                fprintf(stderr, "child: NULL with errno %d, not ENOMEM\n", errno);
                return 0;
            }
            break;
        }
        if (zeroed && !tu_all_zero(p, n)) {
            fprintf(stderr, "child: calloc block not zeroed\n");
            return 0;
        }
        p[0] = (unsigned char)count;
        p[n - 1] = (unsigned char)~count;
        blocks[count++] = p;
    }
    for (size_t i = 0; i < count; i++) {
        unsigned char *p = blocks[i];
        if (p[0] != (unsigned char)i || p[n - 1] != (unsigned char)~i) {
            fprintf(stderr, "child: block %zu of %zu bytes overwritten\n", i, n);
            return 0;
        }
        free(p);
    }
    return count;
}

/* Runs in a forked child: returns 0 when every round ran out of memory
 * cleanly after a plausible amount and allocation worked again after. */
static int exhaust_child(void *arg)
{
    /* The pointer array is mapped before the limit and outside malloc. */
    void **blocks = mmap(NULL, MAX_BLOCKS * sizeof(void *), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (blocks == MAP_FAILED)
        return 10;
    size_t limit = tu_statm(TU_STATM_SIZE) + HEADROOM;
    struct rlimit rl = {limit, limit};
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        return 11;
    static const struct {
        size_t size;
        bool zeroed;
    } rounds[] = {{4 * TU_MiB, false}, {256, false}, {64 * TU_KiB, true}, {4 * TU_MiB, true},
                  {4000, false}, {4 * TU_MiB, false}};
    for (size_t r = 0; r < TU_ARRAY_LEN(rounds); r++) {
        size_t count = exhaust(blocks, rounds[r].size, rounds[r].zeroed);
        /* At least a quarter of the headroom must have been usable: memory
         * freed in the round before has to be reusable. */
        if (count * rounds[r].size < HEADROOM / 4) {
            fprintf(stderr, "child: round %zu: only %zu blocks of %zu bytes before NULL\n", r, count,
                    rounds[r].size);
            return 20 + (int)r;
        }
    }
    /* Allocation works again after the last round freed everything. */
    for (int i = 0; i < 16; i++) {
        void *p = malloc(TU_MiB);
        void *q = malloc(48);
        if (p == NULL || q == NULL)
            return 30;
        memset(p, 1, TU_MiB);
        free(p);
        free(q);
    }
    return 0;
}

static void rlimit_as_exhaust_free_retry(void **state)
{
    assert_int_equal(tu_run_in_child(exhaust_child, NULL, 60), 0);
}

int main(void)
{
    tu_require_ebbmalloc();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(malloc_absurd_sizes, remember_mapped),
        cmocka_unit_test_setup(calloc_absurd_sizes, remember_mapped),
        cmocka_unit_test_setup(realloc_absurd_keeps_old_block, remember_mapped),
        cmocka_unit_test_setup(aligned_absurd, remember_mapped),
        cmocka_unit_test(rlimit_as_exhaust_free_retry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
