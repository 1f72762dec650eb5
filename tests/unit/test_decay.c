/* The decay (decay.c) with an injected clock: when a free span falls due,
 * the next-due time it reports, the dirty cap (and the recent peak it
 * follows), forced purges, the two muzzy
 * stages, free pages inside slabs, calloc on purged spans, purges the
 * kernel refuses or ignores, the idle thread cache drain, and the cgroup
 * memory value parser. No test sleeps: the times passed in are
 * ebb__os_now_ns() (the clock the allocator stamps frees with) plus chosen
 * offsets. Needs background_thread:false (set by ctest), so that nothing
 * purges behind the tests' backs. */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../common/test_util.h"
#include "unit.h"

#define MS ((uint64_t)1000000)
#define LARGE_BYTES ((size_t)256 << 10) /* a large object: a span of its own */
#define MAX_PAGES 1024

static ebb_opts_t saved_opts;

/* ---- a kernel that refuses purges, or ignores them ---- */
/* The allocator's madvise calls land here: this executable's definition
 * comes before the C library's. MADV_DONTNEED and MADV_FREE are refused
 * with EINVAL, as the kernel refuses them on locked pages (mlock,
 * mlockall), or accepted and ignored, as older qemu-user does; anything else,
 * and every call in MADV_REAL, goes to the kernel. */
enum { MADV_REAL, MADV_REFUSE, MADV_IGNORE };
static _Atomic int madv_mode;
static _Atomic unsigned madv_purges; /* purge calls that reached here */

int madvise(void *addr, size_t len, int advice) {
    bool purge = advice == MADV_DONTNEED || advice == MADV_FREE;
    int mode = atomic_load(&madv_mode);
    if (purge)
        atomic_fetch_add(&madv_purges, 1);
    if (purge && mode == MADV_REFUSE) {
        errno = EINVAL;
        return -1;
    }
    if (purge && mode == MADV_IGNORE)
        return 0;
    return (int)syscall(SYS_madvise, addr, len, advice);
}

/* Each test starts with nothing dirty anywhere and its own options. */
static int setup(void **state) {
    (void)state;
    unit_init();
    saved_opts = ebb__opts;
    ebb__decay_purge_all();
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ebb__opts = saved_opts;
    atomic_store(&madv_mode, MADV_REAL);
    assert_true(ebb__os_purge_probe());
    return 0;
}

static uint64_t decay_ns(void) { return ebb__opts.decay_ms * MS; }

/* An arena no thread is attached to and no other test has used, the first
 * of its group (so it keeps its own page heap): what it holds is what the
 * test put there. */
static ebb_arena_t *fresh_arena(void) {
    static unsigned next = EBB_MAX_ARENAS;
    next -= ebb__opts.arenas_per_heap;
    ebb_arena_t *a = ebb__arena_get(next);
    assert_non_null(a);
    assert_ptr_equal(a->pages, a);
    return a;
}

/* How many of the npages pages at p are resident (mincore). */
static size_t resident_pages(const void *p, size_t npages) {
    unsigned char vec[MAX_PAGES];
    assert_true(npages <= MAX_PAGES);
    assert_int_equal(mincore((void *)p, npages * EBB_PAGE, vec), 0);
    size_t n = 0;
    for (size_t i = 0; i < npages; i++)
        n += vec[i] & 1;
    return n;
}

/* The one free span of h with dirty pages in it. */
static ebb_span_t *the_dirty_span(ebb_heap_t *h) {
    ebb_span_t *found = NULL;
    unsigned n = 0;
    ebb_lock(&h->lock);
    for (unsigned i = 0; i < EBB_HEAP_NLISTS; i++)
        for (ebb_span_t *s = h->lists[i]; s; s = s->next)
            if (s->ndirty) {
                found = s;
                n++;
            }
    ebb_unlock(&h->lock);
    assert_int_equal(n, 1);
    return found;
}

/* A large object in a fresh arena, written all over (resident), then
 * freed: the arena's one dirty span, dirty since t. */
typedef struct freed_s {
    ebb_arena_t *a;
    char *p;
    size_t npages;
    uint64_t t;
} freed_t;

static freed_t free_dirty_large(void) {
    freed_t f = {.a = fresh_arena()};
    f.p = ebb__arena_alloc_large(f.a, LARGE_BYTES, 0, false);
    assert_non_null(f.p);
    f.npages = ebb__arena_large_usable(ebb_ptr_segment(f.p), f.p) >> EBB_PAGE_SHIFT;
    memset(f.p, 0xab, f.npages * EBB_PAGE);
    ebb__arena_free_large(ebb_ptr_segment(f.p), f.p);
    f.t = the_dirty_span(&f.a->heap)->free_since_ns;
    return f;
}

/* Purge a alone at time now; returns bytes, lowers *next. */
static size_t purge_at(ebb_arena_t *a, uint64_t now, bool force, uint64_t *next) {
    ebb_purge_policy_t pol = ebb__decay_policy(now, force);
    return ebb__arena_purge(a, &pol, next);
}

static void test_span_due_after_decay(void **state) {
    (void)state;
    freed_t f = free_dirty_large();
    assert_int_equal(resident_pages(f.p, f.npages), f.npages);

    uint64_t next = UINT64_MAX;
    assert_int_equal(purge_at(f.a, f.t + decay_ns() - MS, false, &next), 0);
    assert_int_equal(next, f.t + decay_ns());
    assert_int_equal(f.a->heap.dirty_pages, f.npages);
    assert_int_equal(resident_pages(f.p, f.npages), f.npages);

    next = UINT64_MAX;
    assert_int_equal(purge_at(f.a, f.t + decay_ns() + MS, false, &next), f.npages * EBB_PAGE);
    assert_int_equal(next, UINT64_MAX); /* nothing left to wait for */
    assert_int_equal(f.a->heap.dirty_pages, 0);
    assert_int_equal(resident_pages(f.p, f.npages), 0);
}

static void test_decay_run_returns_next_due(void **state) {
    (void)state;
    freed_t f = free_dirty_large();
    size_t purged = 0;
    assert_int_equal(ebb__decay_run(f.t + decay_ns() - MS, false, &purged), f.t + decay_ns());
    assert_int_equal(purged, 0);
    uint64_t next = ebb__decay_run(f.t + decay_ns() + MS, false, &purged);
    assert_int_equal(purged, f.npages * EBB_PAGE);
    assert_true(next > f.t + decay_ns() + MS);
    assert_int_equal(resident_pages(f.p, f.npages), 0);
}

/* n large objects of span_bytes from arena a, every page written. */
static void alloc_touched(ebb_arena_t *a, void **p, int n, size_t span_bytes) {
    for (int i = 0; i < n; i++) {
        p[i] = ebb__arena_alloc_large(a, span_bytes, 0, false);
        assert_non_null(p[i]);
        memset(p[i], 0xcd, span_bytes);
    }
}

/* Half of 16 large objects of span_bytes freed, every other one, so no
 * two freed spans merge. Returns when the frees began. */
static uint64_t free_every_other(ebb_arena_t *a, size_t span_bytes) {
    enum { N = 16 };
    void *p[N];
    alloc_touched(a, p, N, span_bytes);
    uint64_t t = ebb__os_now_ns();
    for (int i = 0; i < N; i += 2)
        ebb__arena_free_large(ebb_ptr_segment(p[i]), p[i]);
    return t;
}

static void test_dirty_cap_purges_at_once(void **state) {
    (void)state;
    const size_t span = (size_t)1 << 20, cap_kb = 6144;
    ebb_arena_t *a = fresh_arena();
    uint64_t t = free_every_other(a, span);
    size_t dirty = a->heap.dirty_pages;
    assert_int_equal(dirty, 8 * (span >> EBB_PAGE_SHIFT));
    /* Nothing is due by age, and without a cap nothing goes. */
    assert_int_equal(purge_at(a, t + MS, false, NULL), 0);
    /* The cap is the larger of dirty_max_kb and dirty_max_pct of the active
     * pages (8 MiB here): with the percentage off, 6 MiB decides. */
    ebb__opts.dirty_max_kb = cap_kb;
    ebb__opts.dirty_max_pct = 0;
    size_t purged = 0;
    ebb__decay_run(t + MS, false, &purged);
    size_t cap_pages = cap_kb >> (EBB_PAGE_SHIFT - 10);
    assert_int_equal(a->heap.dirty_cap_pages, cap_pages);
    assert_true(a->heap.dirty_pages <= cap_pages);
    assert_true(a->heap.dirty_pages > cap_pages - (span >> EBB_PAGE_SHIFT));
    assert_true(purged >= (dirty - cap_pages) * EBB_PAGE);
}

/* The percentage part of the cap is of the most pages active in this decay
 * period and the one before, not of those active now: a burst of frees that
 * the program is about to allocate again is left to the clock. Only when two
 * periods have passed with the pages out of use does the cap fall to what
 * is active, and purge the rest at once. */
static void test_dirty_cap_follows_recent_peak(void **state) {
    (void)state;
    enum { N = 16, KEEP = 2 };
    const size_t span_bytes = (size_t)1 << 20, span_pages = span_bytes >> EBB_PAGE_SHIFT;
    ebb__opts.decay_ms = 60000; /* nothing falls due by age in this test */
    ebb__opts.dirty_max_kb = 0;
    ebb__opts.dirty_max_pct = 100;
    ebb_arena_t *a = fresh_arena();
    void *p[N];
    alloc_touched(a, p, N, span_bytes);
    size_t peak = a->heap.active_pages;
    assert_true(peak >= N * span_pages);
    for (int i = KEEP; i < N; i++)
        ebb__arena_free_large(ebb_ptr_segment(p[i]), p[i]);
    uint64_t t = ebb__os_now_ns();
    /* (Segments left wholly free may be unmapped: not all of them stay.) */
    size_t dirty = a->heap.dirty_pages, active = a->heap.active_pages;
    assert_true(dirty > active + 4 * span_pages);

    /* Within the period of the peak, and in the next: the cap is the peak. */
    size_t purged = 0;
    ebb__decay_run(t + MS, false, &purged);
    assert_int_equal(purged, 0);
    assert_int_equal(a->heap.dirty_cap_pages, peak);
    a->heap.peak_since_ns -= decay_ns() + MS; /* a period later */
    ebb__decay_run(t + 2 * MS, false, &purged);
    assert_int_equal(purged, 0);
    assert_int_equal(a->heap.dirty_cap_pages, peak);
    assert_int_equal(a->heap.dirty_pages, dirty);

    /* Two periods without the pages in use: the cap is what is active. */
    a->heap.peak_since_ns -= decay_ns() + MS;
    ebb__decay_run(t + 3 * MS, false, &purged);
    assert_int_equal(a->heap.dirty_cap_pages, active);
    assert_true(a->heap.dirty_pages <= active);
    assert_true(purged >= (dirty - active) * EBB_PAGE);
    for (int i = 0; i < KEEP; i++)
        ebb__arena_free_large(ebb_ptr_segment(p[i]), p[i]);
}

static void test_force_purges_everything(void **state) {
    (void)state;
    freed_t f = free_dirty_large();
    char *h = ebb__huge_alloc(3 * EBB_LARGE_MAX / 2, 0, false);
    assert_non_null(h);
    ebb__huge_free(ebb_ptr_segment(h)); /* into the huge cache */
    assert_true(atomic_load(&ebb__huge_cached_bytes) > 0);
    size_t purged = 0;
    ebb__decay_run(f.t + MS, true, &purged);
    assert_true(purged >= f.npages * EBB_PAGE + 3 * EBB_LARGE_MAX / 2);
    assert_int_equal(f.a->heap.dirty_pages, 0);
    assert_int_equal(resident_pages(f.p, f.npages), 0);
    assert_int_equal(atomic_load(&ebb__huge_cached_bytes), 0);
}

static void test_muzzy_two_stages(void **state) {
    (void)state;
    /* Longer than the first stage: the second is timed from the real clock
     * (when stage 1 ran), which the injected times run ahead of. */
    ebb__opts.muzzy_decay_ms = 2 * ebb__opts.decay_ms;
    const uint64_t muzzy = ebb__opts.muzzy_decay_ms * MS;
    freed_t f = free_dirty_large();
    size_t calls = f.a->heap.purge_calls;

    /* Stage 1 at f.t + decay: MADV_FREE; still muzzy, still counted dirty. */
    uint64_t next = UINT64_MAX;
    assert_int_equal(purge_at(f.a, f.t + decay_ns() + MS, false, &next), 0);
    assert_int_equal(f.a->heap.purge_calls, calls + 1);
    ebb_span_t *s = the_dirty_span(&f.a->heap);
    assert_true(s->muzzy);
    assert_int_equal(s->ndirty, f.npages);
    assert_int_equal(f.a->heap.dirty_pages, f.npages);
    /* The second stage runs from when the first one ran. */
    uint64_t m = s->free_since_ns;
    assert_int_equal(next, m + muzzy);

    next = UINT64_MAX;
    assert_int_equal(purge_at(f.a, m + muzzy - MS, false, &next), 0);
    assert_true(the_dirty_span(&f.a->heap)->muzzy);
    assert_int_equal(next, m + muzzy);

    /* Stage 2 at + muzzy_decay_ms: MADV_DONTNEED. */
    assert_int_equal(purge_at(f.a, m + muzzy + MS, false, NULL), f.npages * EBB_PAGE);
    assert_int_equal(f.a->heap.dirty_pages, 0);
    assert_int_equal(resident_pages(f.p, f.npages), 0);
    for (size_t i = 0; i < f.npages * EBB_PAGE; i += 1024)
        assert_int_equal(f.p[i], 0);
}

/* A slab of 1280-byte objects: they straddle page boundaries. */
#define SLAB_OBJ 1280

/* The whole of one fresh slab of SLAB_OBJ objects from a fresh arena,
 * written; then every object but the first freed: pages 1.. are free,
 * since the slab's free_since_ns. With second, the whole of a second slab
 * is taken before the frees: it is the bin's current slab then, and the
 * first one is on the non-full list. */
typedef struct slab_s {
    ebb_arena_t *a;
    unsigned c;
    const ebb_class_info_t *ci;
    char *base;
    ebb_span_t *s;
    void *second; /* the second slab's objects, a list */
} slab_t;

static slab_t slab_with_one_object(bool second) {
    slab_t sl = {.a = fresh_arena(), .c = ebb_size_class(SLAB_OBJ)};
    sl.ci = &ebb__classes[sl.c];
    assert_int_equal(sl.ci->size, SLAB_OBJ);
    assert_true(sl.ci->slab_pages >= 4);
    void *head;
    assert_int_equal(ebb__arena_refill(sl.a, sl.c, &head, sl.ci->nobjs), sl.ci->nobjs);
    if (second)
        assert_int_equal(ebb__arena_refill(sl.a, sl.c, &sl.second, sl.ci->nobjs), sl.ci->nobjs);
    sl.base = head;
    ebb_segment_t *seg = ebb_ptr_segment(sl.base);
    sl.s = seg->spans[ebb_ptr_page(seg, sl.base)];
    assert_int_equal(ebb_span_addr(sl.s), (uintptr_t)sl.base);
    for (void *o = head, *nx; o; o = nx) {
        nx = *(void **)o;
        memset((char *)o + sizeof(void *), 0x5a, SLAB_OBJ - sizeof(void *));
    }
    void *rest = *(void **)sl.base;
    *(void **)sl.base = NULL;
    ebb__arena_flush(sl.c, rest);
    assert_int_equal(resident_pages(sl.base, sl.ci->slab_pages), sl.ci->slab_pages);
    return sl;
}

static void test_free_pages_inside_slab(void **state) {
    (void)state;
    slab_t sl = slab_with_one_object(false);
    ebb_arena_t *a = sl.a;
    unsigned c = sl.c;
    const ebb_class_info_t *ci = sl.ci;
    char *base = sl.base;
    ebb_span_t *s = sl.s;
    size_t purged0 = atomic_load(&a->slab_purged_pages);
    uint64_t t = s->free_since_ns;

    uint64_t next = UINT64_MAX;
    assert_int_equal(purge_at(a, t + decay_ns() - MS, false, &next), 0);
    assert_int_equal(next, t + decay_ns());
    size_t free_pages = ci->slab_pages - 1;
    assert_int_equal(purge_at(a, t + decay_ns() + MS, false, NULL), free_pages * EBB_PAGE);
    assert_int_equal(atomic_load(&a->slab_purged_pages), purged0 + free_pages);
    assert_int_equal(resident_pages(base, 1), 1);
    assert_int_equal(resident_pages(base + EBB_PAGE, free_pages), 0);
    /* Purged once: a second round finds nothing new. */
    assert_int_equal(purge_at(a, t + 2 * decay_ns(), false, NULL), 0);

    /* Objects 1..3 reach into page 1: it is no longer purged. */
    unsigned first_take = (unsigned)(EBB_PAGE / SLAB_OBJ);
    void *more;
    assert_int_equal(ebb__arena_refill(a, c, &more, first_take), first_take);
    assert_int_equal(atomic_load(&a->slab_purged_pages), purged0 + free_pages - 1);
    assert_int_equal(s->purged_pages & 2, 0);
    /* The rest of the slab: every page in use, none purged. */
    void *last;
    unsigned left = ci->nobjs - 1 - first_take;
    assert_int_equal(ebb__arena_refill(a, c, &last, left), left);
    assert_int_equal(atomic_load(&a->slab_purged_pages), purged0);
    assert_int_equal(s->purged_pages, 0);
    /* Objects wholly on purged pages read as zero (past the list link and
     * the free mark the refill wrote). */
    for (unsigned i = first_take + 1; i < ci->nobjs; i++)
        for (size_t k = 2 * sizeof(void *); k < SLAB_OBJ; k += 64)
            assert_int_equal(base[(size_t)i * SLAB_OBJ + k], 0);
    ebb__arena_flush(c, last);
    ebb__arena_flush(c, more);
    ebb__arena_free_small(base);
}

/* calloc of a large object must read zero whether its span was purged
 * (ebbmalloc skips the memset), dirty, or part of each. */
static void test_calloc_on_purged_and_dirty_spans(void **state) {
    (void)state;
    const size_t n = LARGE_BYTES;
    char *p = ebb_malloc(n);
    memset(p, 0xab, n);
    ebb_free(p);
    ebb__decay_run(ebb__os_now_ns(), true, NULL);
    char *q = ebb_calloc(1, n);
    assert_non_null(q);
    assert_true(tu_all_zero(q, n));
    memset(q, 0xcd, n);
    ebb_free(q); /* dirty now */
    char *r = ebb_calloc(1, n);
    assert_true(tu_all_zero(r, n));
    /* Two neighbours, one purged, one dirty, merged; calloc over both. */
    char *x = ebb_malloc(n), *y = ebb_malloc(n);
    memset(x, 0x11, n);
    memset(y, 0x22, n);
    ebb_free(x);
    ebb__decay_run(ebb__os_now_ns(), true, NULL);
    ebb_free(y);
    char *z = ebb_calloc(2, n);
    assert_true(tu_all_zero(z, 2 * n));
    ebb_free(r);
    ebb_free(z);
}

/* A purge the kernel refuses (locked pages) leaves the span dirty and not
 * known to be zero, so calloc clears it; it is tried again a decay period
 * later, not on each round the dirty cap starts. */
static void test_refused_purge_keeps_span_dirty(void **state) {
    (void)state;
    freed_t f = free_dirty_large();
    atomic_store(&madv_mode, MADV_REFUSE);
    uint64_t now = f.t + decay_ns() + MS, next = UINT64_MAX;
    unsigned calls = atomic_load(&madv_purges);
    assert_int_equal(purge_at(f.a, now, false, &next), 0);
    assert_true(atomic_load(&madv_purges) > calls); /* it was tried */
    assert_int_equal(f.a->heap.dirty_pages, f.npages);
    assert_int_equal(f.a->heap.purge_refused, 1);
    assert_int_equal(resident_pages(f.p, f.npages), f.npages);
    assert_int_equal(next, now + decay_ns());

    /* Over the cap, within the decay period: not tried again. */
    ebb_purge_policy_t pol = ebb__decay_policy(now + MS, false);
    pol.keep_dirty_pages = 0;
    calls = atomic_load(&madv_purges);
    assert_int_equal(ebb__arena_purge(f.a, &pol, NULL), 0);
    assert_int_equal(atomic_load(&madv_purges), calls);

    /* The same span again, with what it held cleared by calloc. */
    char *q = ebb__arena_alloc_large(f.a, LARGE_BYTES, 0, true);
    assert_ptr_equal(q, f.p);
    assert_true(tu_all_zero(q, LARGE_BYTES));
    ebb__arena_free_large(ebb_ptr_segment(q), q);
}

/* However short the decay, a refused span waits EBB_REFUSED_RETRY_NS
 * before its next try: with decay_ms:0 the purger would otherwise try it
 * again at once, round after round. */
static void test_refused_retry_floor(void **state) {
    (void)state;
    ebb__opts.decay_ms = 0;
    freed_t f = free_dirty_large();
    atomic_store(&madv_mode, MADV_REFUSE);
    uint64_t now = f.t + MS, next = UINT64_MAX;
    assert_int_equal(purge_at(f.a, now, false, &next), 0);
    assert_int_equal(next, now + EBB_REFUSED_RETRY_NS);
    unsigned calls = atomic_load(&madv_purges);
    assert_int_equal(purge_at(f.a, now + EBB_REFUSED_RETRY_NS - MS, false, NULL), 0);
    assert_int_equal(atomic_load(&madv_purges), calls);
    atomic_store(&madv_mode, MADV_REAL);
    assert_int_equal(purge_at(f.a, now + EBB_REFUSED_RETRY_NS, false, NULL), f.npages * EBB_PAGE);
}

/* Once the kernel takes purges again, the span goes when due by its new
 * stamp, or at once when forced (malloc_trim), and is clean after. */
static void test_refused_purge_retried(void **state) {
    (void)state;
    freed_t f = free_dirty_large();
    atomic_store(&madv_mode, MADV_REFUSE);
    uint64_t now = f.t + decay_ns() + MS;
    assert_int_equal(purge_at(f.a, now, false, NULL), 0);
    /* Forced while still refused: tried once, not once a pass. */
    unsigned calls = atomic_load(&madv_purges);
    assert_int_equal(purge_at(f.a, now, true, NULL), 0);
    assert_int_equal(atomic_load(&madv_purges), calls + 1);

    atomic_store(&madv_mode, MADV_REAL);
    assert_int_equal(purge_at(f.a, now + decay_ns() - MS, false, NULL), 0);
    assert_int_equal(purge_at(f.a, now + decay_ns() + MS, false, NULL), f.npages * EBB_PAGE);
    assert_int_equal(f.a->heap.dirty_pages, 0);
    assert_int_equal(resident_pages(f.p, f.npages), 0);
    ebb_span_t *s = ebb_ptr_segment(f.p)->spans[ebb_ptr_page(ebb_ptr_segment(f.p), f.p)];
    assert_int_equal(s->refused, 0);

    /* Refused again, then forced with the kernel willing: all of it. */
    freed_t g = free_dirty_large();
    atomic_store(&madv_mode, MADV_REFUSE);
    assert_int_equal(purge_at(g.a, g.t + decay_ns() + MS, false, NULL), 0);
    atomic_store(&madv_mode, MADV_REAL);
    assert_int_equal(purge_at(g.a, g.t + decay_ns() + 2 * MS, true, NULL), g.npages * EBB_PAGE);
    assert_int_equal(resident_pages(g.p, g.npages), 0);
}

/* Free pages inside a slab whose purge is refused are not marked purged:
 * they count as resident, and when the slab goes back to the page heap
 * its span is dirty in full. A slab on the non-full list (purged in
 * batches, off the list) and the bin's current one (under the lock). */
static void refused_slab_pages(bool on_list) {
    slab_t sl = slab_with_one_object(on_list);
    assert_true(on_list ? sl.a->bins[sl.c].cur != sl.s : sl.a->bins[sl.c].cur == sl.s);
    size_t purged0 = atomic_load(&sl.a->slab_purged_pages);
    uint64_t now = sl.s->free_since_ns + decay_ns() + MS, next = UINT64_MAX;
    atomic_store(&madv_mode, MADV_REFUSE);
    assert_int_equal(purge_at(sl.a, now, false, NULL), 0);
    assert_true(atomic_load(&sl.a->slab_purge_refused) > 0);
    assert_int_equal(sl.s->purged_pages, 0);
    assert_int_equal(atomic_load(&sl.a->slab_purged_pages), purged0);
    assert_int_equal(resident_pages(sl.base, sl.ci->slab_pages), sl.ci->slab_pages);
    /* Not due again until a decay period after the refusal. */
    atomic_store(&madv_mode, MADV_REAL);
    assert_int_equal(purge_at(sl.a, now + decay_ns() - MS, false, &next), 0);
    assert_int_equal(next, now + decay_ns());

    /* Still refused, the slab's last object goes: its span is all dirty
     * (the current slab stays the bin's). */
    atomic_store(&madv_mode, MADV_REFUSE);
    assert_int_equal(purge_at(sl.a, now + decay_ns() + MS, false, NULL), 0);
    assert_int_equal(sl.s->purged_pages, 0);
    size_t dirty0 = sl.a->heap.dirty_pages;
    ebb__arena_free_small(sl.base);
    if (on_list)
        assert_int_equal(sl.a->heap.dirty_pages, dirty0 + sl.ci->slab_pages);
    if (sl.second != NULL)
        ebb__arena_flush(sl.c, sl.second);
}

static void test_refused_slab_pages(void **state) {
    (void)state;
    refused_slab_pages(true);
    refused_slab_pages(false);
}

/* Where MADV_DONTNEED is accepted but leaves pages as they were (older qemu-user),
 * the probe says so, nothing is purged or taken for zero, and calloc
 * clears what it hands out. */
static void test_ignored_purge(void **state) {
    (void)state;
    atomic_store(&madv_mode, MADV_IGNORE);
    assert_false(ebb__os_purge_probe());
    freed_t f = free_dirty_large();
    unsigned calls = atomic_load(&madv_purges);
    assert_int_equal(purge_at(f.a, f.t + decay_ns() + MS, true, NULL), 0);
    assert_int_equal(atomic_load(&madv_purges), calls); /* no call made */
    assert_int_equal(f.a->heap.dirty_pages, f.npages);
    char *q = ebb__arena_alloc_large(f.a, LARGE_BYTES, 0, true);
    assert_ptr_equal(q, f.p);
    assert_true(tu_all_zero(q, LARGE_BYTES));
    ebb__arena_free_large(ebb_ptr_segment(q), q);
    /* Where it works, the probe finds that too. */
    atomic_store(&madv_mode, MADV_REAL);
    assert_true(ebb__os_purge_probe());
}

/* A thread that allocates, frees into its cache, then stops calling. */
typedef struct idler_s {
    sem_t ready, go;
    ebb_tcache_t *tc;
} idler_t;

#define IDLE_OBJ 64
#define IDLE_N 200

static void *idler_main(void *arg) {
    idler_t *d = arg;
    void *keep = ebb_malloc(IDLE_OBJ), *p[IDLE_N];
    for (int i = 0; i < IDLE_N; i++)
        p[i] = ebb_malloc(IDLE_OBJ);
    for (int i = 0; i < IDLE_N; i++)
        ebb_free(p[i]);
    d->tc = ebb__tls_tcache;
    sem_post(&d->ready);
    sem_wait(&d->go);
    ebb_free(keep); /* the first call after the scan: a slow path */
    sem_post(&d->ready);
    sem_wait(&d->go);
    return NULL;
}

static void test_idle_tcache_drains(void **state) {
    (void)state;
    const uint64_t idle = decay_ns();
    unsigned c = ebb_size_class(IDLE_OBJ);
    idler_t d;
    sem_init(&d.ready, 0, 0);
    sem_init(&d.go, 0, 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, idler_main, &d), 0);
    sem_wait(&d.ready);
    ebb_tcache_t *tc = d.tc;
    ebb_arena_t *a = tc->arena;
    uint32_t cached = tc->bins[c].count, max = tc->bins[c].max;
    size_t nout = unit_bin_nout(a, c);
    assert_true(cached > 0 && max > 0);

    /* The first look notes when the thread went quiet (or keeps an
     * earlier note); idle for just under idle_ns: left alone. */
    ebb__tcache_idle_scan(ebb__os_now_ns(), idle);
    uint64_t since = tc->idle_since_ns;
    ebb__tcache_idle_scan(since + idle - MS, idle);
    assert_int_equal(atomic_load(&tc->drain), 0);
    assert_int_equal(tc->bins[c].max, max);
    ebb__tcache_idle_scan(since + idle, idle);
    assert_int_equal(atomic_load(&tc->drain), 1);
    assert_int_equal(tc->bins[c].max, 0);
    assert_int_equal(tc->bins[c].count, cached); /* nothing taken from it */

    /* Its next call flushes everything, then caches as before. */
    sem_post(&d.go);
    sem_wait(&d.ready);
    assert_int_equal(atomic_load(&tc->drain), 0);
    assert_int_equal(tc->bins[c].max, EBB_TBIN_START); /* starts small again */
    assert_int_equal(tc->bins[c].count, 1); /* the object just freed */
    uint32_t total = 0;
    for (unsigned k = 1; k <= EBB_NSMALL; k++)
        total += tc->bins[k].count;
    assert_int_equal(total, 1);
    assert_int_equal(unit_bin_nout(a, c), nout - cached);
    sem_post(&d.go);
    pthread_join(t, NULL);
    sem_destroy(&d.ready);
    sem_destroy(&d.go);
}

static void test_parse_mem_value(void **state) {
    (void)state;
    uint64_t v = 7;
    assert_false(ebb__os_parse_mem_value("max\n", &v));
    assert_false(ebb__os_parse_mem_value("max", &v));
    /* v1's "no limit": PAGE_COUNTER_MAX pages, and LLONG_MAX. */
    assert_false(ebb__os_parse_mem_value("9223372036854771712\n", &v));
    assert_false(ebb__os_parse_mem_value("9223372036854775807", &v));
    assert_false(ebb__os_parse_mem_value("99999999999999999999999", &v));
    assert_int_equal(v, 7);
    assert_true(ebb__os_parse_mem_value("536870912\n", &v));
    assert_int_equal(v, 536870912);
    assert_true(ebb__os_parse_mem_value("4096", &v));
    assert_int_equal(v, 4096);
    assert_true(ebb__os_parse_mem_value("68719476736\n", &v)); /* 64 GiB */
    assert_int_equal(v, (uint64_t)64 << 30);
    assert_false(ebb__os_parse_mem_value("", &v));
    assert_false(ebb__os_parse_mem_value("\n", &v));
    assert_false(ebb__os_parse_mem_value("garbage", &v));
    assert_false(ebb__os_parse_mem_value("-1", &v));
    assert_false(ebb__os_parse_mem_value("x123", &v));
}

int main(void) {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_span_due_after_decay),
        T(test_decay_run_returns_next_due),
        T(test_dirty_cap_purges_at_once),
        T(test_dirty_cap_follows_recent_peak),
        T(test_force_purges_everything),
        T(test_muzzy_two_stages),
        T(test_free_pages_inside_slab),
        T(test_calloc_on_purged_and_dirty_spans),
        T(test_refused_purge_keeps_span_dirty),
        T(test_refused_purge_retried),
        T(test_refused_retry_floor),
        T(test_refused_slab_pages),
        T(test_ignored_purge),
        T(test_idle_tcache_drains),
        T(test_parse_mem_value),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
