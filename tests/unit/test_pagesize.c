/* A kernel whose pages are 64 KiB (most ppc64le kernels, arm64 kernels
 * built for 64 KiB pages), played on this one: getauxval(AT_PAGESZ) says
 * 65536, and every munmap, mremap and madvise the allocator makes is
 * checked to start and end on such a page. The kernel would round a
 * length up to its page (a purge of one 4 KiB span would empty the
 * whole 64 KiB around it, other spans' live objects with it) and refuse
 * an address inside one. So: nothing is purged and nothing purge-related
 * is called (nor tried: the heaps are not walked), huge mappings are
 * whole kernel pages and are trimmed, grown
 * and unmapped as such, wholly free segments still go back, and what
 * live objects hold survives all of it. One warning line says so at
 * initialisation. Runs with stats_shm:false (the statistics file is not
 * the allocator's memory), without the background thread and with a long
 * decay: the tests purge when they choose. */
#include <errno.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "capture.h"
#include "unit.h"

#define KiB ((size_t)1 << 10)
#define MiB ((size_t)1 << 20)
#define KPAGE ((size_t)64 << 10) /* the played kernel's page */

unsigned long __getauxval(unsigned long type);

/* This executable's definitions come before the C library's. */
unsigned long getauxval(unsigned long type) {
    return type == AT_PAGESZ ? KPAGE : __getauxval(type);
}

static _Atomic unsigned misaligned, purges, unmaps;
static char first_bad[160];

static bool on_kpages(const void *addr, size_t len) {
    return ((uintptr_t)addr | len) % KPAGE == 0;
}

static void note_bad(const char *call, const void *addr, size_t len) {
    if (atomic_fetch_add(&misaligned, 1) == 0)
        snprintf(first_bad, sizeof(first_bad), "%s(%p, %zu): not on 64 KiB pages", call, addr, len);
}

int munmap(void *addr, size_t len) {
    atomic_fetch_add(&unmaps, 1);
    if (!on_kpages(addr, len))
        note_bad("munmap", addr, len);
    return (int)syscall(SYS_munmap, addr, len);
}

int madvise(void *addr, size_t len, int advice) {
    if (advice == MADV_DONTNEED || advice == MADV_FREE)
        atomic_fetch_add(&purges, 1);
    if (!on_kpages(addr, len))
        note_bad("madvise", addr, len);
    return (int)syscall(SYS_madvise, addr, len, advice);
}

void *mremap(void *addr, size_t old_len, size_t new_len, int flags, ...) {
    void *target = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        target = va_arg(ap, void *);
        va_end(ap);
    }
    if (!on_kpages(addr, old_len) || !on_kpages(target, new_len))
        note_bad("mremap", addr, new_len);
    long r = syscall(SYS_mremap, addr, old_len, new_len, flags, target);
    if (r < 0 && r > -4096) {
        errno = (int)-r;
        return MAP_FAILED;
    }
    return (void *)r;
}

static void assert_all_on_kpages(void) {
    if (atomic_load(&misaligned) != 0)
        fail_msg("%u calls off the kernel's pages; the first: %s", atomic_load(&misaligned), first_bad);
}

/* An object of size bytes filled with a pattern of its own. */
static unsigned char *filled(size_t size, size_t align, unsigned seed) {
    unsigned char *p = align ? ebb_aligned_alloc(align, size) : ebb_malloc(size);
    assert_non_null(p);
    if (align)
        assert_int_equal((uintptr_t)p % align, 0);
    for (size_t i = 0; i < size - 1; i += 512)
        p[i] = (unsigned char)(seed + i / 512);
    p[size - 1] = (unsigned char)seed;
    return p;
}

static void assert_filled(const unsigned char *p, size_t size, unsigned seed) {
    for (size_t i = 0; i < size - 1; i += 512)
        if (p[i] != (unsigned char)(seed + i / 512))
            fail_msg("object %p of %zu bytes lost its byte %zu", (const void *)p, size, i);
    assert_int_equal(p[size - 1], (unsigned char)seed);
}

static char init_err[1024];
static void init_fn(void *arg) {
    (void)arg;
    unit_init();
}

static void test_page_size_and_warning(void **state) {
    (void)state;
    assert_int_equal(ebb__os_page_size(), KPAGE);
    assert_int_equal(ebb__os_granule(), KPAGE);
    assert_false(ebb__os_purge_works());
    const char *line = strstr(init_err, "ebbmalloc: the kernel's pages are 65536 bytes, ebbmalloc's 4096");
    if (line == NULL)
        fail_msg("no warning at initialisation; stderr was: '%s'", init_err);
    assert_null(strstr(line + 1, "ebbmalloc: the kernel's pages")); /* one line */
}

/* Small and large objects of every size, most freed in a scattered
 * pattern, then everything the decay and malloc_trim would purge: no
 * purge is made, no call lands off a kernel page, and the objects kept
 * still hold what they held. */
#define MIXED 3000
static void test_spans_never_purged(void **state) {
    (void)state;
    static unsigned char *obj[MIXED];
    static size_t len[MIXED];
    unsigned s = 12345;
    for (int i = 0; i < MIXED; i++) {
        s = s * 1103515245u + 12345u;
        len[i] = 16 + (s >> 8) % (i % 10 == 0 ? 2 * MiB - 16 : 32 * KiB);
        obj[i] = filled(len[i], 0, (unsigned)i);
    }
    for (int i = 0; i < MIXED; i++)
        if (i % 7 != 0) {
            ebb_free(obj[i]);
            obj[i] = NULL;
        }
    unsigned before = atomic_load(&purges);
    ebb__decay_purge_all();
    ebb__decay_run(ebb__os_now_ns() + (uint64_t)3600 * 1000000000, false, NULL);
    assert_int_equal(atomic_load(&purges), before);
    /* Nor are the heaps walked, or their caps left to wake the purger
     * at every free. */
    ebb_arena_t *a;
    for (unsigned i = 0; (a = ebb__arena_next(&i)) != NULL;) {
        assert_int_equal(a->heap.purge_calls, 0);
        assert_true(a->heap.dirty_cap_pages == SIZE_MAX);
    }
    for (int i = 0; i < MIXED; i++)
        if (obj[i] != NULL) {
            assert_filled(obj[i], len[i], (unsigned)i);
            ebb_free(obj[i]);
        }
    ebb__decay_purge_all();
    assert_int_equal(atomic_load(&purges), before);
    assert_all_on_kpages();
}

/* Objects over 2 MiB: fresh, aligned up to 16 MiB, reused from the cache
 * (trimmed when much bigger, grown when smaller), resized in place and
 * moved, and unmapped: all in whole kernel pages, contents kept. */
static void test_huge_mappings_in_kernel_pages(void **state) {
    (void)state;
    static const size_t sizes[] = {2 * MiB + 1, 3 * MiB + 4097, 5 * MiB - 12345, 9 * MiB + 65537};
    static const size_t aligns[] = {0, 64 * KiB, 4 * MiB, 16 * MiB};
    unsigned seed = 1;
    for (size_t a = 0; a < sizeof(aligns) / sizeof(aligns[0]); a++)
        for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++, seed++) {
            unsigned char *p = filled(sizes[k], aligns[a], seed);
            ebb_segment_t *seg = ebb_ptr_segment(p);
            assert_int_equal(seg->huge_map_len % KPAGE, 0);
            assert_true(ebb_usable_size(p) >= sizes[k]);
            assert_filled(p, sizes[k], seed);
            ebb_free(p);
        }
    /* From the cache: a much smaller request trims a cached mapping, a
     * bigger one grows it; realloc shrinks, grows and moves. */
    unsigned char *big = filled(12 * MiB + 777, 0, 7);
    ebb_free(big);
    unsigned char *small = filled(2 * MiB + 999, 0, 8);
    assert_int_equal(ebb_ptr_segment(small)->huge_map_len % KPAGE, 0);
    unsigned char *grown = ebb_realloc(small, 6 * MiB + 4321);
    assert_non_null(grown);
    assert_filled(grown, 2 * MiB + 999, 8);
    unsigned char *shrunk = ebb_realloc(grown, 2 * MiB + 5);
    assert_non_null(shrunk);
    assert_int_equal(ebb_ptr_segment(shrunk)->huge_map_len % KPAGE, 0);
    unsigned char *keep = filled(3 * MiB, 0, 9); /* in the way of growth in place */
    unsigned char *moved = ebb_realloc(shrunk, 20 * MiB + 3);
    assert_non_null(moved);
    for (size_t i = 0; i < 2 * MiB; i += 512)
        assert_int_equal(moved[i], (unsigned char)(8 + i / 512));
    assert_filled(keep, 3 * MiB, 9);
    ebb_free(moved);
    ebb_free(keep);
    ebb__huge_cache_flush();
    assert_int_equal(atomic_load(&ebb__huge_cached_bytes), 0);
    assert_all_on_kpages();
}

/* Segments that become wholly free are still unmapped: that part of
 * giving memory back needs no purge. (The free spans the tests before
 * left in partly used segments stay resident: with purging off, that is
 * the cost.) Large objects are taken until 8 new segments are mapped. */
static void test_free_segments_unmapped(void **state) {
    (void)state;
    enum { MAX = 1024, SIZE = 1 * MiB + 4096 };
    static unsigned char *p[MAX];
    size_t mapped0 = atomic_load(&ebb__segments_mapped);
    int n = 0;
    while (n < MAX && atomic_load(&ebb__segments_mapped) < mapped0 + 8 * EBB_SEG) {
        p[n] = ebb_malloc(SIZE);
        assert_non_null(p[n]);
        p[n][0] = p[n][SIZE - 1] = (unsigned char)n;
        n++;
    }
    size_t mapped1 = atomic_load(&ebb__segments_mapped);
    assert_true(mapped1 >= mapped0 + 8 * EBB_SEG);
    unsigned u0 = atomic_load(&unmaps);
    for (int i = 0; i < n; i++) {
        assert_int_equal(p[i][0], (unsigned char)i);
        assert_int_equal(p[i][SIZE - 1], (unsigned char)i);
        ebb_free(p[i]);
    }
    ebb__decay_purge_all();
    assert_true(atomic_load(&unmaps) > u0);
    /* All but the spares an arena keeps. */
    assert_true(atomic_load(&ebb__segments_mapped) + (8 - EBB_HEAP_SPARE_MAX) * EBB_SEG <= mapped1);
    assert_all_on_kpages();
}

int main(void) {
    capture_stderr(init_fn, NULL, init_err, sizeof(init_err));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_size_and_warning),
        cmocka_unit_test(test_spans_never_purged),
        cmocka_unit_test(test_huge_mappings_in_kernel_pages),
        cmocka_unit_test(test_free_segments_unmapped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
