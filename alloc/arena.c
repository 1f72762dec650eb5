/*
 * Arenas: per size class a bin of slabs; slabs and large objects come from
 * the page heap the arena shares with its group (internal.h, arenas_per_heap).
 * Lock order: bin lock -> heap lock -> base lock; a thread holds at most one
 * bin lock.
 *
 * A slab's free objects are recorded in its span's bitmap, never inside the
 * objects: a free slab page holds no allocator data, so it can be purged
 * while other pages of the slab are in use. Objects leave slabs in batches
 * (refill) into thread caches and come back in batches (flush), each to the
 * slab -- and so the arena -- that owns it, whichever thread frees it.
 */
#include "conf.h"
#include "internal.h"

ebb_arena_t *ebb__arenas[EBB_MAX_ARENAS];
unsigned ebb__narenas = 1;
_Atomic unsigned ebb__narenas_made;
static ebb_lock_t arenas_lock = EBB_LOCK_INIT;

/* pre: arenas_lock held. pages: the arena whose heap it uses, NULL for its own. */
static ebb_arena_t *arena_make(unsigned i, ebb_arena_t *pages) {
    ebb_arena_t *a = ebb__arenas[i];
    if (a != NULL)
        return a;
    a = ebb__base_alloc(sizeof(ebb_arena_t));
    if (a == NULL)
        return NULL;
    a->index = i;
    a->pages = pages ? pages : a;
    ebb__heap_init(&a->heap);
    __atomic_store_n(&ebb__arenas[i], a, __ATOMIC_RELEASE);
    atomic_fetch_add_explicit(&ebb__narenas_made, 1, memory_order_relaxed);
    return a;
}

ebb_arena_t *ebb__arena_get(unsigned i) {
    ebb_arena_t *a = __atomic_load_n(&ebb__arenas[i], __ATOMIC_ACQUIRE);
    if (ebb_likely(a != NULL))
        return a;
    ebb_lock(&arenas_lock);
    /* The group's first arena, which keeps the heap, exists before the others. */
    unsigned group = ebb__opts.arenas_per_heap ? ebb__opts.arenas_per_heap : 1;
    ebb_arena_t *pages = arena_make(i - i % group, NULL);
    a = pages ? arena_make(i, pages) : NULL;
    ebb_unlock(&arenas_lock);
    return a;
}

ebb_arena_t *ebb__arena_next(unsigned *i) {
    for (; *i < EBB_MAX_ARENAS; (*i)++) {
        ebb_arena_t *a = __atomic_load_n(&ebb__arenas[*i], __ATOMIC_ACQUIRE);
        if (a != NULL) {
            (*i)++;
            return a;
        }
    }
    return NULL;
}

ebb_arena_t *ebb__arena_choose(void) {
    unsigned best = 0, best_load = UINT32_MAX;
    for (unsigned i = 0; i < ebb__narenas; i++) {
        ebb_arena_t *a = __atomic_load_n(&ebb__arenas[i], __ATOMIC_ACQUIRE);
        unsigned load = a ? atomic_load_explicit(&a->nthreads, memory_order_relaxed) : 0;
        if (load < best_load) {
            best = i;
            best_load = load;
            if (load == 0)
                break;
        }
    }
    ebb_arena_t *a = ebb__arena_get(best);
    if (a == NULL)
        a = ebb__arena_get(0);
    return a;
}

/* ---- slabs ------------------------------------------------------------- */
static void nonfull_push(ebb_bin_t *b, ebb_span_t *s) {
    s->prev = NULL;
    s->next = b->nonfull;
    if (s->next)
        s->next->prev = s;
    b->nonfull = s;
    s->on_list = EBB_SLAB_NONFULL;
}

/* Put s on the list just before at (on the list), or at the head when at
 * is NULL. */
static void nonfull_insert_before(ebb_bin_t *b, ebb_span_t *s, ebb_span_t *at) {
    if (at == NULL) {
        nonfull_push(b, s);
        return;
    }
    s->next = at;
    s->prev = at->prev;
    if (at->prev)
        at->prev->next = s;
    else
        b->nonfull = s;
    at->prev = s;
    s->on_list = EBB_SLAB_NONFULL;
}

static void nonfull_remove(ebb_bin_t *b, ebb_span_t *s) {
    if (b->purge_next == s)
        b->purge_next = s->next;
    if (s->prev)
        s->prev->next = s->next;
    else
        b->nonfull = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->next = s->prev = NULL;
    s->on_list = 0;
}

/* pre: the bin lock of class c held. */
static ebb_span_t *slab_new(ebb_arena_t *a, unsigned c) {
    const ebb_class_info_t *ci = &ebb__classes[c];
    ebb_arena_t *pa = a->pages;
    ebb_lock(&pa->heap.lock);
    ebb_span_t *s = ebb__heap_alloc(&pa->heap, pa, ci->slab_pages, 1);
    if (s != NULL)
        ebb__heap_mark(s, EBB_SPAN_SLAB, (uint8_t)c);
    ebb_unlock(&pa->heap.lock);
    if (s == NULL)
        return NULL;
    s->arena = a;
    s->nobjs = (uint16_t)ci->nobjs;
    s->nfree = (uint16_t)ci->nobjs;
    s->on_list = 0;
    memset(s->bitmap, 0, sizeof(s->bitmap));
    for (unsigned i = 0; i < ci->nobjs; i++)
        s->bitmap[i / 64] |= 1ull << (i % 64);
    a->bins[c].nslabs++;
    return s;
}

/* Are all objects that overlap page k of slab s free (bits set)? A page
 * with only the slab's tail waste in it counts as free. */
static bool slab_page_free(const ebb_span_t *s, unsigned k, size_t size) {
    size_t start = (size_t)k << EBB_PAGE_SHIFT;
    size_t lo = start / size, hi = (start + EBB_PAGE - 1) / size + 1; /* [lo, hi) */
    if (hi > s->nobjs)
        hi = s->nobjs;
    for (size_t i = lo; i < hi;) {
        size_t w = i / 64, b = i % 64, n = 64 - b < hi - i ? 64 - b : hi - i;
        uint64_t mask = (n == 64 ? ~0ull : (1ull << n) - 1) << b;
        if ((s->bitmap[w] & mask) != mask)
            return false;
        i += n;
    }
    return true;
}

/* Pages of s that were purged and now hold objects again are resident
 * again: forget them. */
static void slab_unmark_purged(ebb_span_t *s, size_t size) {
    uint64_t keep = 0;
    for (uint64_t m = s->purged_pages; m; m &= m - 1) {
        unsigned k = (unsigned)__builtin_ctzll(m);
        if (slab_page_free(s, k, size))
            keep |= 1ull << k;
    }
    atomic_fetch_sub_explicit(&s->seg->arena->slab_purged_pages,
                              (size_t)__builtin_popcountll(s->purged_pages & ~keep),
                              memory_order_relaxed);
    s->purged_pages = keep;
}

/* Take up to n free objects from s in address order, appending them to the
 * list whose last link is *tailp, each with the free mark. */
static unsigned slab_take(ebb_span_t *s, size_t size, void ***tailp, unsigned n) {
    uintptr_t base = ebb_span_addr(s);
    void **tail = *tailp;
    unsigned got = 0;
    for (unsigned w = 0; w < EBB_SLAB_WORDS && got < n; w++) {
        uint64_t bits = s->bitmap[w];
        while (bits != 0 && got < n) {
            unsigned bit = (unsigned)__builtin_ctzll(bits);
            bits &= bits - 1;
            void **obj = (void **)(base + (size_t)(w * 64 + bit) * size);
            *tail = obj;
            *ebb_mark_word(obj) = ebb__free_mark; /* on its way to a cache */
            tail = obj;
            got++;
        }
        s->bitmap[w] = bits;
    }
    *tailp = tail;
    if (ebb_unlikely(s->purged_pages != 0))
        slab_unmark_purged(s, size);
    s->nfree = (uint16_t)(s->nfree - got);
    return got;
}

unsigned ebb__arena_refill(ebb_arena_t *a, unsigned c, void **head, unsigned n) {
    ebb_bin_t *b = &a->bins[c];
    size_t size = ebb__classes[c].size;
    void *first = NULL;
    void **tail = &first;
    unsigned got = 0;
    ebb_lock(&b->lock);
    while (got < n) {
        ebb_span_t *s = b->cur;
        if (s == NULL || s->nfree == 0) {
            s = b->nonfull;
            if (s != NULL)
                nonfull_remove(b, s);
            else if ((s = slab_new(a, c)) == NULL)
                break;
            b->cur = s;
        }
        got += slab_take(s, size, &tail, n - got);
    }
    *tail = NULL;
    b->nout += got;
    b->nrefills++;
    ebb_unlock(&b->lock);
    *head = first;
    return got;
}

/* Give arena a's emptied slabs (linked through next) back to its page heap. */
static void release_slabs(ebb_arena_t *a, ebb_span_t *empties) {
    if (empties == NULL)
        return;
    ebb_arena_t *pa = a->pages;
    ebb_lock(&pa->heap.lock);
    while (empties != NULL) {
        ebb_span_t *s = empties;
        empties = s->next;
        s->next = NULL;
        ebb__heap_free(&pa->heap, s);
    }
    ebb_unlock(&pa->heap.lock);
    ebb__heap_unmap_released(false);
}

/* The slab that holds p, an object of class c. */
static ebb_span_t *slab_of(ebb_segment_t *seg, const void *p, unsigned c) {
    EBB_CHECK(seg->magic == EBB_SEG_MAGIC && seg->kind == EBB_SEG_NORMAL,
              "free(): invalid pointer (not from ebbmalloc)");
    ebb_span_t *s = seg->spans[ebb_ptr_page(seg, p)];
    EBB_CHECK(s != NULL && s->kind == EBB_SPAN_SLAB && s->sclass == c,
              "free(): invalid pointer (no slab of its size here)");
    return s;
}

/* Return p to its slab s. pre: the bin lock held. Returns an emptied slab
 * that the caller must release, or NULL. */
static ebb_span_t *slab_put(ebb_bin_t *b, ebb_span_t *s, void *p, unsigned c, uint64_t now) {
    const ebb_class_info_t *ci = &ebb__classes[c];
    EBB_CHECK(s->kind == EBB_SPAN_SLAB && s->sclass == c,
              "free(): invalid pointer (no slab of its size here)");
    size_t off = (uintptr_t)p - ebb_span_addr(s);
    uint32_t idx = (uint32_t)(((uint64_t)off * ci->div_magic) >> 32);
    EBB_CHECK((size_t)idx * ci->size == off && idx < s->nobjs,
              "free(): invalid pointer (not the start of an object)");
    uint64_t bit = 1ull << (idx % 64);
    EBB_CHECK(!(s->bitmap[idx / 64] & bit), "free(): double free detected");
    s->bitmap[idx / 64] |= bit;
    s->nfree++;
    s->free_since_ns = now;
    b->nout--;
    if (s == b->cur || s->on_list == EBB_SLAB_PURGING)
        return NULL; /* the purge puts it back (or releases it) when done */
    if (s->nfree == s->nobjs) {
        if (s->on_list)
            nonfull_remove(b, s);
        b->nslabs--;
        return s;
    }
    if (!s->on_list)
        nonfull_push(b, s);
    return NULL;
}

/* Objects of several arenas come mixed in a flush: a thread caches what it
 * frees whoever allocated it, and reuses it. Taken in list order, the bin
 * locks changed with the objects: in larson/T:2 a flush of ~35 objects
 * took 5.9 locks, each a line from the other CPU where the owner works.
 * So one pass per arena: the objects of the first one's arena go back
 * under its lock, the others wait for the next pass (jemalloc's tcache
 * flush does the same). */
void ebb__arena_flush(unsigned c, void *head) {
    uint64_t now = ebb__os_coarse_ns();
    while (head != NULL) {
        /* The span of a live object does not change: read without a lock. */
        ebb_arena_t *a = slab_of(ebb_ptr_segment(head), head, c)->arena;
        void *others = NULL, **others_tail = &others;
        ebb_span_t *empties = NULL;
        ebb_lock(&a->bins[c].lock);
        do {
            void *p = head;
            head = *(void **)p;
            ebb_span_t *s = slab_of(ebb_ptr_segment(p), p, c);
            if (s->arena != a) {
                *others_tail = p;
                others_tail = (void **)p;
                continue;
            }
            ebb_span_t *e = slab_put(&a->bins[c], s, p, c, now);
            if (e != NULL) {
                e->next = empties;
                empties = e;
            }
        } while (head != NULL);
        *others_tail = NULL;
        a->bins[c].nflushes++;
        ebb_unlock(&a->bins[c].lock);
        release_slabs(a, empties);
        head = others;
    }
}

void *ebb__arena_alloc_small(ebb_arena_t *a, unsigned c) {
    void *p;
    return ebb__arena_refill(a, c, &p, 1) ? p : NULL;
}

void ebb__arena_free_small(void *p) {
    ebb_segment_t *seg = ebb_ptr_segment(p);
    unsigned c = seg->page_class[ebb_ptr_page(seg, p)];
    *(void **)p = NULL;
    ebb__arena_flush(c, p);
}

/* ---- large objects ----------------------------------------------------- */
static ebb_span_t *large_span(ebb_segment_t *seg, const void *p) {
    size_t page = ebb_ptr_page(seg, p);
    ebb_span_t *s = seg->spans[page];
    EBB_CHECK(s != NULL && s->kind == EBB_SPAN_LARGE && ebb_span_addr(s) == (uintptr_t)p,
              "free(): invalid pointer (no large object starts here)");
    return s;
}

/* The large class for size bytes (at least the first large class): what
 * page_class records for the object (a class above EBB_NSMALL sends free to
 * the slow path), and the statistics' bucket. */
static unsigned large_class(size_t size) {
    if (size <= EBB_SMALL_MAX)
        return EBB_NSMALL + 1;
    return ebb_size_class(size);
}

/* Large objects take whole pages, not their class's size: no thread cache
 * holds them, so nothing needs the class rounding, and a long-lived 33 KiB
 * object keeps 36 KiB resident instead of 40. */
static size_t large_pages(size_t size) {
    return size ? (size + EBB_PAGE - 1) >> EBB_PAGE_SHIFT : 1;
}

void *ebb__arena_alloc_large(ebb_arena_t *a, size_t size, size_t align, bool zero) {
    unsigned c = large_class(size);
    size_t npages = large_pages(size);
    size_t align_pages = align > EBB_PAGE ? align >> EBB_PAGE_SHIFT : 1;
    a = a->pages; /* large objects belong to the heap's arena */
    ebb_lock(&a->heap.lock);
    ebb_span_t *s = ebb__heap_alloc(&a->heap, a, npages, align_pages);
    if (s != NULL) {
        ebb__heap_mark(s, EBB_SPAN_LARGE, (uint8_t)c);
        a->large_allocated += npages << EBB_PAGE_SHIFT;
        a->large_nmalloc++;
    }
    ebb_unlock(&a->heap.lock);
    if (s == NULL)
        return NULL;
    void *p = (void *)ebb_span_addr(s);
    if (zero && !s->zeroed)
        memset(p, 0, npages << EBB_PAGE_SHIFT);
    return p;
}

void ebb__arena_free_large(ebb_segment_t *seg, void *p) {
    ebb_arena_t *a = seg->arena;
    ebb_lock(&a->heap.lock);
    ebb_span_t *s = large_span(seg, p);
    a->large_allocated -= (size_t)s->npages << EBB_PAGE_SHIFT;
    a->large_nfree++;
    ebb__heap_free(&a->heap, s);
    ebb_unlock(&a->heap.lock);
    ebb__heap_unmap_released(false);
}

size_t ebb__arena_large_usable(ebb_segment_t *seg, const void *p) {
    /* The span cannot change under a caller that owns p. */
    return (size_t)large_span(seg, p)->npages << EBB_PAGE_SHIFT;
}

bool ebb__arena_large_resize(ebb_segment_t *seg, void *p, size_t size) {
    if (size > EBB_LARGE_MAX)
        return false;
    unsigned c = large_class(size);
    size_t npages = large_pages(size);
    ebb_arena_t *a = seg->arena;
    ebb_lock(&a->heap.lock);
    ebb_span_t *s = large_span(seg, p);
    size_t old = s->npages;
    if (npages < old)
        ebb__heap_shrink(&a->heap, s, npages);
    else if (npages > old)
        ebb__heap_grow(&a->heap, s, npages);
    bool ok = s->npages == npages;
    if (ok) {
        s->sclass = (uint8_t)c;
        seg->page_class[s->first] = (uint8_t)c;
        a->large_allocated -= old << EBB_PAGE_SHIFT;
        a->large_allocated += npages << EBB_PAGE_SHIFT;
    }
    ebb_unlock(&a->heap.lock);
    ebb__heap_unmap_released(false);
    return ok;
}

/* The free pages inside slab s to purge now: pages all of whose objects
 * have been free since the cutoff, though other pages of the slab are in
 * use (a long-lived object no longer pins its neighbours' pages), and not
 * purged yet (each page is purged once until it is reused). 0: none; a
 * slab not due yet lowers *next_due_ns. pre: the bin lock held. */
static uint64_t slab_purge_mask(const ebb_span_t *s, const ebb_class_info_t *ci,
                                const ebb_purge_policy_t *pol, uint64_t *next_due_ns) {
    if ((size_t)s->nfree * ci->size < EBB_PAGE)
        return 0; /* no page can be wholly free */
    uint64_t due = ebb_purge_due_ns(s->free_since_ns, pol->decay_ns, s->refused);
    if (!pol->force && due > pol->now_ns) {
        if (due < *next_due_ns)
            *next_due_ns = due;
        return 0;
    }
    uint64_t mask = 0;
    for (unsigned k = 0; k < ci->slab_pages; k++)
        if (!(s->purged_pages >> k & 1) && slab_page_free(s, k, ci->size))
            mask |= 1ull << k;
    return mask;
}

/* madvise the pages of mask in slab s, a call per run; returns the bytes.
 * Either under the bin lock, or with s off every list (no object of those
 * pages can be handed out meanwhile). The pages are in purged_pages; the
 * runs the kernel refuses (locked pages) go to *refused, for the caller to
 * take out of purged_pages under the bin lock. */
static size_t slab_purge_runs(ebb_arena_t *a, ebb_span_t *s, uint64_t mask, uint64_t *refused) {
    size_t purged = 0;
    *refused = 0;
    while (mask != 0) {
        unsigned k = (unsigned)__builtin_ctzll(mask);
        uint64_t rest = ~(mask >> k);
        unsigned run = rest != 0 ? (unsigned)__builtin_ctzll(rest) : 64 - k;
        uint64_t bits = run == 64 ? ~0ull : ((1ull << run) - 1) << k;
        atomic_fetch_add_explicit(&a->slab_purge_calls, 1, memory_order_relaxed);
        if (ebb__os_purge((char *)ebb_span_addr(s) + ((size_t)k << EBB_PAGE_SHIFT),
                          (size_t)run << EBB_PAGE_SHIFT) != 0) {
            *refused |= bits;
            atomic_fetch_add_explicit(&a->slab_purge_refused, 1, memory_order_relaxed);
        } else {
            purged += (size_t)run << EBB_PAGE_SHIFT;
            atomic_fetch_add_explicit(&s->seg->arena->slab_purged_pages, run, memory_order_relaxed);
        }
        mask &= ~bits;
    }
    return purged;
}

/* After purging the pages tried of s: those the kernel refused still
 * hold what they held, so they are not purged, and the slab's free pages
 * are tried again when due from now (EBB_REFUSED_RETRY_NS at least), or by
 * a forced purge. pre: the bin lock held. */
static void slab_purge_done(ebb_span_t *s, uint64_t tried, uint64_t refused,
                            const ebb_purge_policy_t *pol) {
    if (tried == 0)
        return;
    s->refused = refused != 0;
    if (refused == 0)
        return;
    s->purged_pages &= ~refused;
    s->free_since_ns = pol->now_ns;
}

#define SLAB_PURGE_BATCH 32 /* slabs taken off at once */
#define SLAB_PURGE_LOOK 256 /* slabs looked at under one hold of the lock */

/* Purge the free pages inside the slabs of bin c, as the page heap does
 * its spans: under the lock, look at up to SLAB_PURGE_LOOK slabs of the
 * non-full list and take those with pages to purge off it, up to
 * SLAB_PURGE_BATCH (EBB_SLAB_PURGING: nothing is carved from them, frees
 * into them only set bits); without the lock, madvise; under the lock
 * again, put them back where the walk is (not at the head, where the bin
 * carves first), or release those that became wholly free. So a thread of
 * this class never waits behind an madvise, nor behind a long walk: with
 * the walk and the madvise calls under one hold of the lock, a malloc
 * waited up to 44 ms behind malloc_trim (bench/purge_stall.c). The
 * current slab is purged in place. */
static size_t bin_purge(ebb_arena_t *a, unsigned c, const ebb_purge_policy_t *pol,
                        uint64_t *next_due_ns) {
    const ebb_class_info_t *ci = &ebb__classes[c];
    ebb_bin_t *b = &a->bins[c];
    size_t purged = 0;
    ebb_lock(&b->lock);
    if (b->cur != NULL) {
        uint64_t m = slab_purge_mask(b->cur, ci, pol, next_due_ns), refused;
        b->cur->purged_pages |= m;
        purged += slab_purge_runs(a, b->cur, m, &refused);
        slab_purge_done(b->cur, m, refused, pol);
    }
    b->purge_next = b->nonfull;
    while (b->purge_next != NULL && !atomic_load(&ebb__purge_yield)) {
        ebb_span_t *batch[SLAB_PURGE_BATCH];
        uint64_t masks[SLAB_PURGE_BATCH];
        int n = 0;
        ebb_span_t *s = b->purge_next;
        for (int seen = 0; s != NULL && n < SLAB_PURGE_BATCH && seen < SLAB_PURGE_LOOK; seen++) {
            ebb_span_t *next = s->next;
            uint64_t m = slab_purge_mask(s, ci, pol, next_due_ns);
            if (m != 0) {
                nonfull_remove(b, s);
                s->on_list = EBB_SLAB_PURGING;
                s->purged_pages |= m;
                masks[n] = m;
                batch[n++] = s;
            }
            s = next;
        }
        b->purge_next = s;
        ebb_unlock(&b->lock); /* the bin's users get in between batches */
        if (n == 0) {
            ebb_lock(&b->lock);
            continue;
        }
        uint64_t refused[SLAB_PURGE_BATCH];
        for (int k = 0; k < n; k++)
            purged += slab_purge_runs(a, batch[k], masks[k], &refused[k]);
        ebb_lock(&b->lock);
        ebb_span_t *empties = NULL;
        for (int k = 0; k < n; k++) {
            s = batch[k];
            s->on_list = 0;
            slab_purge_done(s, masks[k], refused[k], pol);
            if (s->nfree == s->nobjs) { /* its last objects came back meanwhile */
                b->nslabs--;
                s->next = empties;
                empties = s;
            } else { /* behind the walk: the bin carves resident slabs first */
                nonfull_insert_before(b, s, b->purge_next);
            }
        }
        if (empties != NULL) {
            ebb_unlock(&b->lock);
            release_slabs(a, empties);
            ebb_lock(&b->lock);
        }
    }
    b->purge_next = NULL;
    ebb_unlock(&b->lock);
    return purged;
}

size_t ebb__arena_purge(ebb_arena_t *a, const ebb_purge_policy_t *pol, uint64_t *next_due_ns) {
    uint64_t next = UINT64_MAX;
    size_t n = 0;
    for (unsigned c = 1; c <= EBB_NSMALL; c++)
        n += bin_purge(a, c, pol, &next);
    atomic_fetch_add_explicit(&a->slab_purged_bytes, n, memory_order_relaxed);
    n += ebb__heap_purge(&a->heap, pol, &next);
    if (next_due_ns && next < *next_due_ns)
        *next_due_ns = next;
    return n;
}

/* ---- fork -------------------------------------------------------------- */
/* Every lock, in the global order, so no other thread holds one at fork:
 * all bins before any heap, since a bin of one arena takes the heap of
 * another (its group's). */
void ebb__arenas_prefork(void) {
    ebb_lock(&arenas_lock);
    ebb_arena_t *a;
    for (unsigned i = 0; (a = ebb__arena_next(&i)) != NULL;)
        for (unsigned c = 1; c <= EBB_NSMALL; c++)
            ebb_lock(&a->bins[c].lock);
    for (unsigned i = 0; (a = ebb__arena_next(&i)) != NULL;)
        ebb_lock(&a->heap.lock);
}

void ebb__arenas_postfork_parent(void) {
    ebb_arena_t *a;
    for (unsigned i = 0; (a = ebb__arena_next(&i)) != NULL;) {
        ebb_unlock(&a->heap.lock);
        for (unsigned c = 1; c <= EBB_NSMALL; c++)
            ebb_unlock(&a->bins[c].lock);
    }
    ebb_unlock(&arenas_lock);
}

void ebb__arenas_postfork_child(void) {
    ebb_arena_t *a;
    for (unsigned i = 0; (a = ebb__arena_next(&i)) != NULL;) {
        ebb_lock_reinit(&a->heap.lock);
        for (unsigned c = 1; c <= EBB_NSMALL; c++)
            ebb_lock_reinit(&a->bins[c].lock);
    }
    ebb_lock_reinit(&arenas_lock);
}
