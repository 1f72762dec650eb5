/* Huge objects (over EBB_LARGE_MAX) and the cache of freed mappings: a
 * fresh mapping holds its object and no more, a
 * fitting mapping is reused as it is, a smaller one grows (only the growth
 * is fresh pages), a much bigger one is trimmed; calloc clears what a
 * reused mapping held and leaves the fresh pages untouched; threads share
 * the cache while it is emptied under them. Residency is read with
 * mincore(). Run with a long decay (ctest), so that nothing expires the
 * cache behind a test. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>

#include "unit.h"

#define MiB ((size_t)1 << 20)

/* Resident pages of [p, p + len), page-aligned p; -1 when part of the range
 * is not mapped. */
static long resident(const void *p, size_t len) {
    static unsigned char vec[(64 * MiB) / EBB_PAGE];
    size_t n = (len + EBB_PAGE - 1) / EBB_PAGE;
    assert_true(n <= sizeof(vec));
    if (mincore((void *)p, len, vec) != 0)
        return -1;
    long r = 0;
    for (size_t i = 0; i < n; i++)
        r += vec[i] & 1;
    return r;
}

/* Bytes from the object's segment to the end of its mapping. */
static size_t mapping_cap(const void *p) {
    ebb_segment_t *seg = ebb_ptr_segment(p);
    return (size_t)((uintptr_t)seg->huge_base + seg->huge_map_len - (uintptr_t)seg);
}

/* Bytes of the object at p that lie before byte cap of its segment. */
static size_t object_part(const void *p, size_t cap) {
    size_t offset = (size_t)((uintptr_t)p - (uintptr_t)ebb_ptr_segment(p));
    return cap > offset ? cap - offset : 0;
}

static void *filled(size_t size, int byte) {
    void *p = ebb_malloc(size);
    assert_non_null(p);
    memset(p, byte, size);
    return p;
}

static int setup(void **state) {
    (void)state;
    unit_init();
    ebb__huge_cache_flush();
    return 0;
}

static void test_fitting_mapping_reused_as_is(void **state) {
    (void)state;
    void *p = filled(4 * MiB, 0xaa);
    ebb_free(p);
    assert_true(atomic_load(&ebb__huge_cached_bytes) >= 4 * MiB);
    void *q = ebb_malloc(4 * MiB);
    assert_ptr_equal(q, p);
    assert_int_equal(atomic_load(&ebb__huge_cached_bytes), 0);
    ebb_free(q);
}

/* Nothing cached holds 12 MiB: the 3 MiB mapping grows, and its pages,
 * resident, are the new object's first 3 MiB; past its old end, nothing is
 * resident until written. */
static void test_smaller_mapping_grows(void **state) {
    (void)state;
    void *p = filled(3 * MiB, 0xaa);
    size_t old_cap = mapping_cap(p);
    ebb_free(p);
    void *q = ebb_malloc(12 * MiB);
    assert_non_null(q);
    assert_int_equal(atomic_load(&ebb__huge_cached_bytes), 0);
    assert_true(ebb_usable_size(q) >= 12 * MiB);
    assert_int_equal(resident(q, 3 * MiB), (long)(3 * MiB / EBB_PAGE));
    size_t old_part = object_part(q, old_cap);
    char *fresh = (char *)q + ebb_align_up(old_part, EBB_PAGE);
    assert_int_equal(resident(fresh, 12 * MiB - (size_t)(fresh - (char *)q)), 0);
    memset(q, 0x55, 12 * MiB);
    ebb_free(q);
}

/* calloc of a reused mapping: zero throughout, and the grown pages were
 * not written to get there. */
static void test_calloc_of_reused_mapping_is_zero(void **state) {
    (void)state;
    for (size_t size = 4 * MiB; size <= 12 * MiB; size += 8 * MiB) {
        void *p = filled(size == 4 * MiB ? 4 * MiB : 3 * MiB, 0xaa);
        size_t old_cap = mapping_cap(p);
        ebb_free(p);
        unsigned char *q = ebb_calloc(1, size);
        assert_non_null(q);
        assert_int_equal(atomic_load(&ebb__huge_cached_bytes), 0);
        char *fresh = (char *)q + ebb_align_up(object_part(q, old_cap), EBB_PAGE);
        if (fresh < (char *)q + size)
            assert_int_equal(resident(fresh, size - (size_t)(fresh - (char *)q)), 0);
        for (size_t i = 0; i < size; i++)
            if (q[i] != 0)
                fail_msg("calloc(%zu MiB) byte %zu is %#x", size / MiB, i, q[i]);
        ebb_free(q);
    }
}

/* Only a much bigger mapping is cached: it serves, cut to the object (its
 * tail no longer mapped). */
/* A fresh mapping starts at its header and ends with its object's last
 * page: the alignment slop is unmapped, not kept (under mlockall's
 * MCL_FUTURE every page of a mapping is faulted in and locked). */
static void test_fresh_mapping_has_no_slop(void **state) {
    (void)state;
    for (size_t align = 0; align <= 16 * MiB; align = align ? align * 4 : 4096) {
        size_t size = 3 * MiB + 100;
        void *p = align ? ebb_aligned_alloc(align, size) : ebb_malloc(size);
        assert_non_null(p);
        ebb_segment_t *seg = ebb_ptr_segment(p);
        assert_ptr_equal(seg->huge_base, seg);
        assert_int_equal(object_part(p, mapping_cap(p)),
                         ebb_align_up(size + ((uintptr_t)p - (uintptr_t)seg), EBB_PAGE) -
                             ((uintptr_t)p - (uintptr_t)seg));
        assert_int_equal((uintptr_t)p % (align ? align : 16), 0);
        ebb_free(p);
        ebb__huge_cache_flush();
    }
}

static void test_bigger_mapping_trimmed(void **state) {
    (void)state;
    void *p = filled(12 * MiB, 0xaa);
    ebb_free(p);
    void *q = ebb_malloc(9 * MiB);
    assert_ptr_equal(q, p);
    size_t cap = mapping_cap(q);
    assert_true(object_part(q, cap) >= 9 * MiB && object_part(q, cap) < 9 * MiB + EBB_PAGE);
    char *end = (char *)ebb_ptr_segment(q) + cap;
    assert_int_equal(resident(end, EBB_PAGE), -1);
    assert_int_equal(errno, ENOMEM);
    ebb_free(q);
}

/* An aligned object grows out of the cache too, and stays aligned. */
static void test_aligned_object_grows(void **state) {
    (void)state;
    void *p = ebb_aligned_alloc(MiB, 3 * MiB);
    assert_non_null(p);
    memset(p, 0xaa, 3 * MiB);
    ebb_free(p);
    void *q = ebb_aligned_alloc(MiB, 12 * MiB);
    assert_non_null(q);
    assert_int_equal((uintptr_t)q % MiB, 0);
    assert_true(ebb_usable_size(q) >= 12 * MiB);
    assert_int_equal(atomic_load(&ebb__huge_cached_bytes), 0);
    memset(q, 0x55, 12 * MiB);
    ebb_free(q);
}

/* Threads taking, growing and giving back cached mappings at once, while
 * another empties the cache again and again: every buffer holds what its
 * thread wrote (the first and last word of each page) until it is freed. */
enum { WORKERS = 4, SLOTS = 4, ROUNDS = 300 };
static atomic_int stress_failures, stress_done;

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void mark(uint64_t *p, size_t size, uint64_t tag, bool check) {
    for (size_t off = 0; off + sizeof(uint64_t) <= size; off += EBB_PAGE) {
        size_t last = (off + EBB_PAGE < size ? off + EBB_PAGE : size) / sizeof(uint64_t) - 1;
        uint64_t *first = p + off / sizeof(uint64_t), *end = p + last;
        if (end == first) /* a last page of one word */
            end = NULL;
        if (!check) {
            *first = tag ^ off;
            if (end)
                *end = ~tag ^ off;
        } else if (*first != (tag ^ off) || (end && *end != (~tag ^ off))) {
            atomic_fetch_add(&stress_failures, 1);
            return;
        }
    }
}

static void *buffer_worker(void *arg) {
    uint64_t rng = 0x9e3779b97f4a7c15ull * ((uintptr_t)arg + 1);
    uint64_t *slot[SLOTS] = {0};
    size_t size[SLOTS] = {0};
    uint64_t tag[SLOTS] = {0};
    for (int r = 0; r < ROUNDS; r++) {
        int k = (int)(next_rand(&rng) % SLOTS);
        if (slot[k] == NULL) {
            size[k] = (2 * MiB) << (next_rand(&rng) % 3); /* 2, 4 or 8 MiB */
            size[k] += (next_rand(&rng) % size[k]) & ~(size_t)7;
            slot[k] = ebb_malloc(size[k]);
            if (slot[k] == NULL) {
                atomic_fetch_add(&stress_failures, 1);
                continue;
            }
            tag[k] = next_rand(&rng);
            mark(slot[k], size[k], tag[k], false);
        } else {
            mark(slot[k], size[k], tag[k], true);
            ebb_free(slot[k]);
            slot[k] = NULL;
        }
    }
    for (int k = 0; k < SLOTS; k++) {
        if (slot[k] != NULL) {
            mark(slot[k], size[k], tag[k], true);
            ebb_free(slot[k]);
        }
    }
    atomic_fetch_add(&stress_done, 1);
    return NULL;
}

static void test_threads_share_the_cache(void **state) {
    (void)state;
    pthread_t t[WORKERS];
    for (uintptr_t i = 0; i < WORKERS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, buffer_worker, (void *)i), 0);
    unsigned flushes = 0;
    while (atomic_load(&stress_done) < WORKERS) {
        ebb__huge_cache_flush();
        flushes++;
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join(t[i], NULL);
    print_message("%u cache flushes during the run\n", flushes);
    assert_int_equal(atomic_load(&stress_failures), 0);
    ebb__huge_cache_flush();
    assert_int_equal(atomic_load(&ebb__huge_cached_bytes), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_fresh_mapping_has_no_slop, setup),
        cmocka_unit_test_setup(test_fitting_mapping_reused_as_is, setup),
        cmocka_unit_test_setup(test_smaller_mapping_grows, setup),
        cmocka_unit_test_setup(test_calloc_of_reused_mapping_is_zero, setup),
        cmocka_unit_test_setup(test_bigger_mapping_trimmed, setup),
        cmocka_unit_test_setup(test_aligned_object_grows, setup),
        cmocka_unit_test_setup(test_threads_share_the_cache, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
