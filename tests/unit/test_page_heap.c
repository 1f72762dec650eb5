/* The page heap: allocation, coalescing, alignment, in-place resize, the
 * spare segment, purging, segments given up and unmapped once the lock is
 * dropped -- with the heap's invariants checked after every operation
 * (ebb__heap_is_valid). */
#include <stdlib.h>
#include <sys/mman.h>

#include "unit.h"

#define USABLE (EBB_SEG_PAGES - EBB_SEG_FIRST_PAGE)

typedef struct fixture_s {
    ebb_heap_t heap;
    ebb_arena_t *arena;
} fixture_t;

static int setup(void **state) {
    unit_init();
    fixture_t *f = calloc(1, sizeof(*f));
    ebb__heap_init(&f->heap);
    f->arena = ebb__arena_get(0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    free(*state);
    return 0;
}

static ebb_span_t *take(fixture_t *f, size_t npages, size_t align_pages) {
    ebb_lock(&f->heap.lock);
    ebb_span_t *s = ebb__heap_alloc(&f->heap, f->arena, npages, align_pages);
    if (s)
        ebb__heap_mark(s, EBB_SPAN_LARGE, EBB_NSMALL + 1);
    assert_true(ebb__heap_is_valid(&f->heap));
    ebb_unlock(&f->heap.lock);
    return s;
}

static void give(fixture_t *f, ebb_span_t *s) {
    ebb_lock(&f->heap.lock);
    ebb__heap_free(&f->heap, s);
    assert_true(ebb__heap_is_valid(&f->heap));
    ebb_unlock(&f->heap.lock);
    ebb__heap_unmap_released(true);
}

static void test_alloc_free_coalesces(void **state) {
    fixture_t *f = *state;
    ebb_span_t *a = take(f, 3, 1), *b = take(f, 5, 1), *c = take(f, 7, 1);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    /* Spans do not overlap and lie inside the usable part of a segment. */
    assert_true(ebb_span_addr(a) + 3 * EBB_PAGE <= ebb_span_addr(b) ||
                ebb_span_addr(b) + 5 * EBB_PAGE <= ebb_span_addr(a));
    assert_true(a->first >= EBB_SEG_FIRST_PAGE);
    assert_int_equal(f->heap.active_pages, 15);
    give(f, b);
    give(f, a);
    give(f, c);
    /* Everything coalesced back into one free span: the whole segment. */
    assert_int_equal(f->heap.free_pages, USABLE);
    assert_int_equal(f->heap.active_pages, 0);
    assert_int_equal(f->heap.nsegments, 1);
    assert_int_equal(f->heap.nspare, 1);
}

static void test_random_churn_keeps_invariants(void **state) {
    fixture_t *f = *state;
    enum { N = 400 };
    ebb_span_t *live[N] = {0};
    size_t pages = 0;
    srand(42);
    for (int step = 0; step < 4000; step++) {
        int i = rand() % N;
        if (live[i]) {
            pages -= live[i]->npages;
            give(f, live[i]);
            live[i] = NULL;
        } else {
            size_t n = 1 + (size_t)(rand() % (rand() % 8 == 0 ? 600 : 16));
            live[i] = take(f, n, 1);
            assert_non_null(live[i]);
            pages += n;
        }
        assert_int_equal(f->heap.active_pages, pages);
    }
    for (int i = 0; i < N; i++)
        if (live[i])
            give(f, live[i]);
    assert_int_equal(f->heap.active_pages, 0);
    /* Wholly free segments beyond the spares are unmapped. */
    assert_true(f->heap.nsegments >= 1 && f->heap.nsegments <= EBB_HEAP_SPARE_MAX);
    assert_int_equal(f->heap.nspare, f->heap.nsegments);
    assert_int_equal(f->heap.free_pages, USABLE * f->heap.nsegments);
}

static void test_aligned_spans(void **state) {
    fixture_t *f = *state;
    ebb_span_t *pad = take(f, 1, 1);
    for (size_t align = 2; align <= 256; align *= 2) {
        ebb_span_t *s = take(f, 5, align);
        assert_non_null(s);
        assert_int_equal(ebb_span_addr(s) % (align * EBB_PAGE), 0);
        assert_int_equal(s->npages, 5);
        give(f, s);
    }
    give(f, pad);
    assert_int_equal(f->heap.active_pages, 0);
}

static void test_grow_and_shrink_in_place(void **state) {
    fixture_t *f = *state;
    ebb_span_t *s = take(f, 4, 1);
    uintptr_t addr = ebb_span_addr(s);
    ebb_lock(&f->heap.lock);
    assert_true(ebb__heap_grow(&f->heap, s, 40));
    assert_int_equal(s->npages, 40);
    assert_int_equal(ebb_span_addr(s), addr);
    assert_int_equal(f->heap.active_pages, 40);
    ebb__heap_shrink(&f->heap, s, 10);
    assert_int_equal(s->npages, 10);
    assert_int_equal(f->heap.active_pages, 10);
    assert_true(ebb__heap_is_valid(&f->heap));
    ebb_unlock(&f->heap.lock);
    /* A neighbour in the way stops growth. */
    ebb_span_t *n = take(f, 1, 1);
    assert_int_equal(ebb_span_addr(n), addr + 10 * EBB_PAGE);
    ebb_lock(&f->heap.lock);
    assert_false(ebb__heap_grow(&f->heap, s, 11));
    ebb_unlock(&f->heap.lock);
    give(f, n);
    give(f, s);
    assert_int_equal(f->heap.free_pages, USABLE * f->heap.nsegments);
}

static void test_purge_zeroes_and_counts(void **state) {
    fixture_t *f = *state;
    ebb_span_t *s = take(f, 8, 1);
    assert_true(s->zeroed); /* fresh segment */
    char *p = (char *)ebb_span_addr(s);
    memset(p, 0xab, 8 * EBB_PAGE);
    give(f, s);
    assert_true(f->heap.dirty_pages >= 8);
    ebb_purge_policy_t all = {.force = true, .keep_dirty_pages = SIZE_MAX};
    size_t purged = ebb__heap_purge(&f->heap, &all, NULL);
    assert_true(purged >= 8 * EBB_PAGE);
    assert_int_equal(f->heap.dirty_pages, 0);
    ebb_span_t *t = take(f, 8, 1);
    assert_ptr_equal((char *)ebb_span_addr(t), p);
    assert_true(t->zeroed);
    for (size_t i = 0; i < 8 * EBB_PAGE; i += 512)
        assert_int_equal(p[i], 0);
    give(f, t);
    /* Nothing dirty at or before the cutoff: nothing purged, and the next
     * due time is reported. */
    ebb_purge_policy_t none = {.cutoff_ns = 0, .decay_ns = 1000, .keep_dirty_pages = SIZE_MAX};
    uint64_t next = UINT64_MAX;
    assert_int_equal(ebb__heap_purge(&f->heap, &none, &next), 0);
    assert_true(next != UINT64_MAX);
}

static void test_too_large_fails_cleanly(void **state) {
    fixture_t *f = *state;
    ebb_lock(&f->heap.lock);
    assert_null(ebb__heap_alloc(&f->heap, f->arena, USABLE + 1, 1));
    assert_true(ebb__heap_is_valid(&f->heap));
    ebb_unlock(&f->heap.lock);
    ebb_span_t *whole = take(f, USABLE, 1);
    assert_non_null(whole);
    give(f, whole);
}

static bool mapped(const void *addr) {
    unsigned char vec[1];
    return mincore((void *)addr, EBB_PAGE, vec) == 0;
}

/* A segment given up under the heap lock stays mapped until the thread,
 * with the lock dropped, calls ebb__heap_unmap_released: no munmap is
 * made while the lock is held. */
static void test_released_segments_unmapped_after_the_lock(void **state) {
    fixture_t *f = *state;
    enum { N = EBB_HEAP_SPARE_MAX + 3 };
    ebb_span_t *whole[N];
    for (int i = 0; i < N; i++)
        assert_non_null(whole[i] = take(f, USABLE, 1));
    void *seg[N];
    for (int i = 0; i < N; i++)
        seg[i] = whole[i]->seg;
    ebb__heap_unmap_released(true); /* none left from before */
    size_t unmapped = atomic_load(&ebb__unmapped_bytes);
    ebb_lock(&f->heap.lock);
    for (int i = 0; i < N; i++)
        ebb__heap_free(&f->heap, whole[i]);
    assert_true(ebb__heap_is_valid(&f->heap));
    /* Given up (beyond the spares), but not unmapped under the lock. */
    assert_int_equal(f->heap.nsegments, EBB_HEAP_SPARE_MAX);
    for (int i = 0; i < N; i++)
        assert_true(mapped(seg[i]));
    ebb_unlock(&f->heap.lock);
    /* This thread unmaps as many as it gave up. */
    ebb__heap_unmap_released(false);
    int gone = 0;
    for (int i = 0; i < N; i++)
        gone += !mapped(seg[i]);
    assert_int_equal(gone, N - EBB_HEAP_SPARE_MAX);
    assert_int_equal(atomic_load(&ebb__unmapped_bytes) - unmapped, (size_t)gone * EBB_SEG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_alloc_free_coalesces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_churn_keeps_invariants, setup, teardown),
        cmocka_unit_test_setup_teardown(test_aligned_spans, setup, teardown),
        cmocka_unit_test_setup_teardown(test_grow_and_shrink_in_place, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_zeroes_and_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_large_fails_cleanly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_released_segments_unmapped_after_the_lock, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
