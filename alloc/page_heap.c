/*
 * The page heap of one arena: its segments, and the free spans in them,
 * coalesced with their neighbours on free and kept in lists by size
 * (exact lists for 1..EBB_HEAP_EXACT pages, then power-of-two buckets
 * searched best-fit). A bitmap of non-empty lists makes the search O(1) in
 * the common case. All functions need h->lock.
 *
 * A free span remembers how many of its pages may still be resident
 * (ndirty) and since when; ebb__heap_purge() hands those back to the OS.
 * Up to EBB_HEAP_SPARE_MAX wholly free segments are kept for reuse, so that
 * a large object freed and allocated again causes no mmap/munmap churn;
 * further ones are unmapped, so a program that frees everything does not
 * keep its peak mapped.
 */
#include "internal.h"

#define SEG_USABLE (EBB_SEG_PAGES - EBB_SEG_FIRST_PAGE)

_Atomic size_t ebb__segments_mapped;
_Atomic size_t ebb__unmapped_bytes;
bool ebb__heap_retain;

static unsigned list_index(size_t npages) {
    if (npages <= EBB_HEAP_EXACT)
        return (unsigned)npages - 1;
    unsigned lg = (unsigned)(63 - __builtin_clzll(npages)); /* >= 7 */
    unsigned idx = EBB_HEAP_EXACT + lg - 7;
    return idx < EBB_HEAP_NLISTS ? idx : EBB_HEAP_NLISTS - 1;
}

static void list_insert(ebb_heap_t *h, ebb_span_t *s) {
    unsigned i = list_index(s->npages);
    s->list_idx = i;
    s->prev = NULL;
    s->next = h->lists[i];
    if (s->next)
        s->next->prev = s;
    h->lists[i] = s;
    h->nonempty[i / 64] |= 1ull << (i % 64);
    h->free_pages += s->npages;
    h->dirty_pages += s->ndirty;
}

static void list_remove(ebb_heap_t *h, ebb_span_t *s) {
    unsigned i = s->list_idx;
    if (h->purge_next == s)
        h->purge_next = s->next;
    if (s->prev)
        s->prev->next = s->next;
    else
        h->lists[i] = s->next;
    if (s->next)
        s->next->prev = s->prev;
    if (h->lists[i] == NULL)
        h->nonempty[i / 64] &= ~(1ull << (i % 64));
    s->next = s->prev = NULL;
    h->free_pages -= s->npages;
    h->dirty_pages -= s->ndirty;
}

/* First non-empty list at or after i, or EBB_HEAP_NLISTS. */
static unsigned next_nonempty(const ebb_heap_t *h, unsigned i) {
    for (unsigned w = i / 64; w < (EBB_HEAP_NLISTS + 63) / 64; w++) {
        uint64_t bits = h->nonempty[w];
        if (w == i / 64)
            bits &= ~0ull << (i % 64);
        if (bits)
            return w * 64 + (unsigned)__builtin_ctzll(bits);
    }
    return EBB_HEAP_NLISTS;
}

/* Pages become active: the dirty cap (decay.c) follows their recent peak. */
static void active_add(ebb_heap_t *h, size_t npages) {
    h->active_pages += npages;
    if (h->active_pages > h->active_peak_pages)
        h->active_peak_pages = h->active_pages;
}

static void set_bounds(ebb_span_t *s) {
    s->seg->spans[s->first] = s;
    s->seg->spans[s->first + s->npages - 1] = s;
}

/* The spans of seg tile its usable pages, each starting where the one
 * before ended. A slab or large object: spans[] names it on every page,
 * page_class carries its class (a slab's on every page, a large object's
 * on its first only, 0 on the rest). A free span (on a list, or off it
 * for a purge): spans[] names it at both ends, page_class is 0 on all its
 * pages, ndirty <= npages, and no free span on a list touches another.
 * pre: the heap lock held. Debug builds check it after every change to a
 * segment (EBB_DASSERT); the walk is a few hundred steps. */
static bool segment_is_valid(const ebb_segment_t *seg) {
    bool listed_before = false; /* the span before is free and on a list */
    for (uint32_t pg = EBB_SEG_FIRST_PAGE; pg < EBB_SEG_PAGES;) {
        const ebb_span_t *s = seg->spans[pg];
        if (s == NULL || s->seg != seg || s->first != pg || s->npages == 0 ||
            s->npages > EBB_SEG_PAGES - pg)
            return false;
        uint32_t last = pg + s->npages - 1;
        if (seg->spans[last] != s)
            return false;
        bool listed = s->kind == EBB_SPAN_FREE;
        if (s->kind == EBB_SPAN_FREE || s->kind == EBB_SPAN_PURGING) {
            if ((listed && listed_before) || s->ndirty > s->npages)
                return false;
            for (uint32_t q = pg; q <= last; q++)
                if (seg->page_class[q] != 0)
                    return false;
        } else if (s->kind == EBB_SPAN_SLAB || s->kind == EBB_SPAN_LARGE) {
            bool slab = s->kind == EBB_SPAN_SLAB;
            for (uint32_t q = pg; q <= last; q++)
                if (seg->spans[q] != s ||
                    seg->page_class[q] != (slab || q == pg ? s->sclass : 0))
                    return false;
        } else {
            return false;
        }
        listed_before = listed;
        pg += s->npages;
    }
    return true;
}

static ebb_span_t *find_fit(ebb_heap_t *h, size_t npages) {
    for (unsigned i = next_nonempty(h, list_index(npages)); i < EBB_HEAP_NLISTS;
         i = next_nonempty(h, i + 1)) {
        if (i < EBB_HEAP_EXACT)
            return h->lists[i]; /* every span here is large enough */
        ebb_span_t *best = NULL;
        for (ebb_span_t *s = h->lists[i]; s; s = s->next)
            if (s->npages >= npages && (!best || s->npages < best->npages ||
                                        (s->npages == best->npages && s < best)))
                best = s;
        if (best)
            return best;
    }
    return NULL;
}

/* Count a spare segment in or out. pre: h->lock held; other heaps read
 * nspare without it (steal_spare's first look), hence the atomic store. */
static void spares_add(ebb_heap_t *h, int delta) {
    __atomic_store_n(&h->nspare, h->nspare + (size_t)(ptrdiff_t)delta, __ATOMIC_RELAXED);
}

static void segment_link(ebb_heap_t *h, ebb_segment_t *seg) {
    seg->prev = NULL;
    seg->next = h->segments;
    if (h->segments)
        h->segments->prev = seg;
    h->segments = seg;
    h->nsegments++;
}

static void segment_unlink(ebb_heap_t *h, ebb_segment_t *seg) {
    if (seg->prev)
        seg->prev->next = seg->next;
    else
        h->segments = seg->next;
    if (seg->next)
        seg->next->prev = seg->prev;
    h->nsegments--;
}

static ebb_segment_t *segment_new(ebb_heap_t *h, ebb_arena_t *a) {
    ebb_span_t *s = ebb__span_new(h);
    if (s == NULL)
        return NULL;
    ebb_segment_t *seg = ebb__os_map_aligned(EBB_SEG, EBB_SEG, 0);
    /* Out of address space: the cached huge mappings may hold it (the
     * cache takes no heap lock, so flushing it here is safe). */
    if (seg == NULL && ebb__huge_cache_flush() != 0)
        seg = ebb__os_map_aligned(EBB_SEG, EBB_SEG, 0);
    if (seg == NULL) {
        ebb__span_delete(h, s);
        return NULL;
    }
    ebb__os_mapped(seg, EBB_SEG, EBB_MAP_PAGES);
    ebb__segmap_set(seg, true);
    seg->magic = EBB_SEG_MAGIC;
    seg->kind = EBB_SEG_NORMAL;
    seg->arena = a;
    segment_link(h, seg);
    atomic_fetch_add_explicit(&ebb__segments_mapped, EBB_SEG, memory_order_relaxed);
    s->seg = seg;
    s->first = EBB_SEG_FIRST_PAGE;
    s->npages = SEG_USABLE;
    s->kind = EBB_SPAN_FREE;
    s->ndirty = 0; /* fresh from the OS: zero */
    set_bounds(s);
    list_insert(h, s);
    seg->nfree_pages = SEG_USABLE;
    spares_add(h, 1);
    return seg;
}

/* Segments given up under a heap lock wait here for their munmap, which
 * the thread does once it has dropped the lock (ebb__heap_unmap_released):
 * a munmap of a resident segment takes ~0.3 ms, and a burst of frees that
 * emptied 256 segments held the heap lock for 89 ms, while other threads'
 * large allocations waited the whole time (bench/README.md). Pushed
 * lock-free (linked through the segment's own next); popped one at a time
 * under the unmap lock, which fork takes: a segment is either still on the
 * list in the child, or unmapped in both. A thread unmaps as many as it
 * gave up (unmap_owed), once it has dropped the heap lock; a thread that
 * gave up none does not touch the list, so it never queues behind, or
 * takes over, a burst another thread is giving up (a free waited 40-95 ms
 * so). The purger takes whatever is left. */
static _Atomic(ebb_segment_t *) unmap_pending;

/* unmap_lock is a ticket lock: first come, first served. With the
 * ordinary lock a thread freeing a burst took it again and again before a
 * waiting thread woke, and a free in that thread waited 45-85 ms. */
static _Atomic uint32_t unmap_next, unmap_serving;

static void unmap_lock(void) {
    uint32_t me = atomic_fetch_add_explicit(&unmap_next, 1, memory_order_relaxed);
    for (;;) {
        uint32_t now = atomic_load_explicit(&unmap_serving, memory_order_acquire);
        if (now == me)
            return;
        ebb__os_futex_wait((volatile uint32_t *)&unmap_serving, now);
    }
}

static void unmap_unlock(void) {
    atomic_fetch_add_explicit(&unmap_serving, 1, memory_order_release);
    if (atomic_load_explicit(&unmap_next, memory_order_relaxed) !=
        atomic_load_explicit(&unmap_serving, memory_order_relaxed))
        ebb__os_futex_wake((volatile uint32_t *)&unmap_serving, INT32_MAX);
}

/* Segments this thread gave up and has not unmapped yet. */
static __thread unsigned unmap_owed __attribute__((tls_model("initial-exec")));

static void segment_release(ebb_heap_t *h, ebb_span_t *whole) {
    ebb_segment_t *seg = whole->seg;
    list_remove(h, whole);
    ebb__span_delete(h, whole);
    segment_unlink(h, seg);
    atomic_fetch_sub_explicit(&ebb__segments_mapped, EBB_SEG, memory_order_relaxed);
    ebb__segmap_set(seg, false);
    ebb_segment_t *head = atomic_load_explicit(&unmap_pending, memory_order_relaxed);
    do
        seg->next = head;
    while (!atomic_compare_exchange_weak_explicit(&unmap_pending, &head, seg, memory_order_release,
                                                  memory_order_relaxed));
    unmap_owed++;
}

void ebb__heap_unmap_released(bool all) {
    while ((all || unmap_owed > 0) && atomic_load_explicit(&unmap_pending, memory_order_relaxed) != NULL) {
        unmap_lock();
        /* The only popper (under the lock): no ABA with the pushers. */
        ebb_segment_t *seg = atomic_load_explicit(&unmap_pending, memory_order_acquire);
        while (seg != NULL && !atomic_compare_exchange_weak_explicit(&unmap_pending, &seg, seg->next,
                                                                     memory_order_acquire,
                                                                     memory_order_acquire))
            ;
        if (seg != NULL) {
            ebb__os_unmap(seg, EBB_SEG);
            atomic_fetch_add_explicit(&ebb__unmapped_bytes, EBB_SEG, memory_order_relaxed);
        }
        unmap_unlock();
        if (unmap_owed > 0)
            unmap_owed--;
    }
    if (atomic_load_explicit(&unmap_pending, memory_order_relaxed) == NULL)
        unmap_owed = 0; /* others did it */
}

/* A wholly free segment's span (a spare), or NULL. pre: h->lock held. */
static ebb_span_t *spare_span(const ebb_heap_t *h) {
    for (unsigned li = list_index(SEG_USABLE); li < EBB_HEAP_NLISTS; li++)
        for (ebb_span_t *sp = h->lists[li]; sp; sp = sp->next)
            if (sp->npages == SEG_USABLE)
                return sp;
    return NULL;
}

size_t ebb__heap_release_spares(void) {
    size_t n = 0;
    ebb_arena_t *a;
    for (unsigned i = 0; (a = ebb__arena_next(&i)) != NULL;) {
        ebb_heap_t *h = &a->heap;
        if (__atomic_load_n(&h->nspare, __ATOMIC_RELAXED) == 0)
            continue;
        ebb_lock(&h->lock);
        for (ebb_span_t *sp; (sp = spare_span(h)) != NULL; n++) {
            spares_add(h, -1);
            segment_release(h, sp);
        }
        ebb_unlock(&h->lock);
    }
    ebb__heap_unmap_released(true);
    return n * EBB_SEG;
}

void ebb__heap_prefork(void) { unmap_lock(); }
void ebb__heap_postfork_parent(void) { unmap_unlock(); }
void ebb__heap_postfork_child(void) {
    atomic_store_explicit(&unmap_next, 0, memory_order_relaxed);
    atomic_store_explicit(&unmap_serving, 0, memory_order_relaxed);
    unmap_owed = 0;
}

/* Cut s (free, off-list) to its first npages; the rest becomes a free span. */
static bool split_front(ebb_heap_t *h, ebb_span_t *s, size_t npages) {
    if (s->npages == npages)
        return true;
    ebb_span_t *r = ebb__span_new(h);
    if (r == NULL)
        return false;
    r->seg = s->seg;
    r->first = s->first + (uint32_t)npages;
    r->npages = s->npages - (uint32_t)npages;
    r->kind = EBB_SPAN_FREE;
    r->ndirty = s->ndirty < r->npages ? s->ndirty : r->npages;
    r->free_since_ns = s->free_since_ns;
    r->refused = s->refused;
    r->refused_round = s->refused_round;
    s->npages = (uint32_t)npages;
    if (s->ndirty > npages)
        s->ndirty = (uint32_t)npages;
    set_bounds(r);
    set_bounds(s);
    list_insert(h, r);
    return true;
}

/* Take a wholly free segment from another arena, if one has a spare and
 * its heap lock is free right now (a try: never wait while holding ours,
 * so no lock order between arenas is needed). Memory one arena freed then
 * serves another before any new mapping -- with threads spread over arenas,
 * a spare here while the other arena maps is resident memory twice.
 * pre: h->lock held, h is a's heap. */
static bool steal_spare(ebb_heap_t *h, ebb_arena_t *a) {
    ebb_arena_t *o;
    for (unsigned i = 0; (o = ebb__arena_next(&i)) != NULL;) {
        ebb_heap_t *oh = &o->heap;
        if (o == a || __atomic_load_n(&oh->nspare, __ATOMIC_RELAXED) == 0 ||
            !ebb_trylock(&oh->lock))
            continue;
        ebb_span_t *whole = spare_span(oh);
        if (whole != NULL) {
            list_remove(oh, whole);
            spares_add(oh, -1);
            segment_unlink(oh, whole->seg);
        }
        ebb_unlock(&oh->lock);
        if (whole == NULL)
            continue;
        whole->seg->arena = a;
        segment_link(h, whole->seg);
        list_insert(h, whole);
        spares_add(h, 1);
        return true;
    }
    return false;
}

ebb_span_t *ebb__heap_alloc(ebb_heap_t *h, ebb_arena_t *a, size_t npages, size_t align_pages) {
    size_t want = npages + align_pages - 1;
    if (want > SEG_USABLE)
        return NULL;
    ebb_span_t *s = find_fit(h, want);
    if (s == NULL) {
        if (!(h == &a->heap && steal_spare(h, a)) && segment_new(h, a) == NULL)
            return NULL;
        s = find_fit(h, want);
        if (s == NULL)
            return NULL;
    }
    list_remove(h, s);
    if (s->npages == SEG_USABLE)
        spares_add(h, -1);
    s->seg->nfree_pages -= s->npages;
    if (align_pages > 1) {
        uintptr_t addr = ebb_span_addr(s);
        size_t lead = (ebb_align_up(addr, align_pages * EBB_PAGE) - addr) >> EBB_PAGE_SHIFT;
        if (lead) {
            /* Give the leading pages back as a free span of their own. */
            ebb_span_t *body = ebb__span_new(h);
            if (body == NULL) {
                s->seg->nfree_pages += s->npages;
                list_insert(h, s);
                return NULL;
            }
            *body = *s;
            body->first = s->first + (uint32_t)lead;
            body->npages = s->npages - (uint32_t)lead;
            body->ndirty = s->ndirty < body->npages ? s->ndirty : body->npages;
            s->npages = (uint32_t)lead;
            if (s->ndirty > lead)
                s->ndirty = (uint32_t)lead;
            set_bounds(s);
            set_bounds(body);
            list_insert(h, s);
            s->seg->nfree_pages += s->npages;
            s = body;
        }
    }
    uint32_t before = s->npages;
    if (!split_front(h, s, npages)) {
        s->seg->nfree_pages += s->npages;
        list_insert(h, s);
        return NULL;
    }
    s->seg->nfree_pages += before - s->npages;
    s->zeroed = s->ndirty == 0;
    s->refused = 0; /* from here on, of the slab's own purges */
    active_add(h, s->npages);
    return s;
}

void ebb__heap_mark(ebb_span_t *s, uint8_t kind, uint8_t sclass) {
    ebb_segment_t *seg = s->seg;
    s->kind = kind;
    s->sclass = sclass;
    /* Every page maps to the span (ebb_owns and free find it from any
     * page); only slab pages carry the class. */
    for (uint32_t p = s->first; p < s->first + s->npages; p++)
        seg->spans[p] = s;
    if (kind == EBB_SPAN_SLAB)
        memset(&seg->page_class[s->first], sclass, s->npages);
    else
        seg->page_class[s->first] = sclass;
    EBB_DASSERT(segment_is_valid(seg));
}

/* When two free spans merge, their dirty times average, weighted by dirty
 * pages: fresh frees next to old dirty pages neither get purged at once
 * (that would purge memory about to be reused) nor postpone the old pages
 * by a whole decay; the dirty cap bounds the rest. */
static uint64_t merged_since(const ebb_span_t *a, const ebb_span_t *b) {
    if (a->ndirty == 0)
        return b->free_since_ns;
    if (b->ndirty == 0)
        return a->free_since_ns;
    uint64_t ta = a->free_since_ns, tb = b->free_since_ns;
    uint64_t lo = ta < tb ? ta : tb, hi = ta < tb ? tb : ta;
    uint64_t w_hi = ta < tb ? b->ndirty : a->ndirty;
    return lo + (uint64_t)((double)(hi - lo) * w_hi / (a->ndirty + b->ndirty));
}

/* Absorb the free span after lo (hi, off-list) into lo; hi's struct goes. */
static void absorb(ebb_heap_t *h, ebb_span_t *lo, ebb_span_t *hi) {
    lo->free_since_ns = merged_since(lo, hi);
    lo->muzzy &= hi->muzzy;
    if (hi->refused && (!lo->refused || hi->refused_round == h->purge_round))
        lo->refused_round = hi->refused_round; /* refused this round if either was */
    lo->refused |= hi->refused;
    lo->npages += hi->npages;
    lo->ndirty += hi->ndirty;
    ebb__span_delete(h, hi);
}

/* Put a free, off-list span on its list, merged with its free neighbours;
 * a span that now covers a whole segment is a spare, or is given up (to
 * be unmapped once the lock is dropped). Returns the span it became part
 * of, or NULL when that was given up. */
static ebb_span_t *insert_coalesced(ebb_heap_t *h, ebb_span_t *s) {
    ebb_segment_t *seg = s->seg;
    if (s->first > EBB_SEG_FIRST_PAGE) {
        ebb_span_t *p = seg->spans[s->first - 1];
        if (p && p->kind == EBB_SPAN_FREE) {
            list_remove(h, p);
            absorb(h, p, s);
            s = p;
        }
    }
    uint32_t end = s->first + s->npages;
    if (end < EBB_SEG_PAGES) {
        ebb_span_t *n = seg->spans[end];
        if (n && n->kind == EBB_SPAN_FREE) {
            list_remove(h, n);
            absorb(h, s, n);
        }
    }
    set_bounds(s);
    list_insert(h, s);
    if (s->npages == SEG_USABLE) {
        if (h->nspare < EBB_HEAP_SPARE_MAX || ebb__heap_retain) {
            spares_add(h, 1);
        } else {
            segment_release(h, s);
            return NULL;
        }
    }
    return s;
}

void ebb__heap_free(ebb_heap_t *h, ebb_span_t *s) {
    ebb_segment_t *seg = s->seg;
    EBB_DASSERT(s->kind == EBB_SPAN_SLAB || s->kind == EBB_SPAN_LARGE);
    h->active_pages -= s->npages;
    if (s->kind == EBB_SPAN_SLAB)
        memset(&seg->page_class[s->first], 0, s->npages);
    else
        seg->page_class[s->first] = 0;
    seg->nfree_pages += s->npages;
    /* Slab pages purged while the slab lived are clean already. */
    uint32_t clean = s->kind == EBB_SPAN_SLAB ? (uint32_t)__builtin_popcountll(s->purged_pages) : 0;
    if (clean)
        atomic_fetch_sub_explicit(&seg->arena->slab_purged_pages, clean, memory_order_relaxed);
    s->kind = EBB_SPAN_FREE;
    s->sclass = 0;
    s->purged_pages = 0;
    s->muzzy = 0;
    s->refused = 0;
    s->ndirty = s->npages - clean;
    s->free_since_ns = ebb__os_coarse_ns();
    if (insert_coalesced(h, s) != NULL) /* NULL: the segment was given up */
        EBB_DASSERT(segment_is_valid(seg));
    if (h->dirty_pages > h->dirty_cap_pages && !h->kicked) {
        h->kicked = true; /* once per purge round: see ebb__decay_run */
        ebb__background_kick();
    }
}

void ebb__heap_shrink(ebb_heap_t *h, ebb_span_t *s, size_t npages) {
    if (npages >= s->npages)
        return;
    ebb_span_t *t = ebb__span_new(h);
    if (t == NULL)
        return; /* keep the pages; the object is still valid */
    t->seg = s->seg;
    t->first = s->first + (uint32_t)npages;
    t->npages = s->npages - (uint32_t)npages;
    t->kind = EBB_SPAN_LARGE;
    s->npages = (uint32_t)npages;
    set_bounds(s);
    set_bounds(t);
    ebb__heap_free(h, t);
}

bool ebb__heap_grow(ebb_heap_t *h, ebb_span_t *s, size_t npages) {
    ebb_segment_t *seg = s->seg;
    uint32_t end = s->first + s->npages;
    if (npages <= s->npages)
        return true;
    if (end >= EBB_SEG_PAGES)
        return false;
    ebb_span_t *n = seg->spans[end];
    size_t need = npages - s->npages;
    if (n == NULL || n->kind != EBB_SPAN_FREE || n->npages < need)
        return false;
    list_remove(h, n);
    if (!split_front(h, n, need)) {
        list_insert(h, n);
        return false;
    }
    seg->nfree_pages -= n->npages; /* the remainder went back on a list */
    active_add(h, n->npages);
    for (uint32_t p = n->first; p < n->first + n->npages; p++)
        seg->spans[p] = s;
    s->npages += n->npages;
    ebb__span_delete(h, n);
    EBB_DASSERT(segment_is_valid(seg));
    return true;
}

/* When the current stage of s (free, dirty) falls due. */
static uint64_t span_due_ns(const ebb_span_t *s, const ebb_purge_policy_t *pol) {
    return ebb_purge_due_ns(s->free_since_ns, s->muzzy ? pol->muzzy_ns : pol->decay_ns, s->refused);
}

/* Is s due: a dirty free span whose current stage has lasted long enough? */
static bool purge_due(const ebb_span_t *s, const ebb_purge_policy_t *pol) {
    if (s->ndirty == 0)
        return false;
    if (pol->force)
        return true;
    return span_due_ns(s, pol) <= pol->now_ns;
}

/* Purge s in this round: due, or dirty while the heap is over its cap.
 * A span whose purge the kernel refused (locked pages: mlock, mlockall)
 * was stamped anew then: it is tried again when due by that stamp, or by
 * a forced purge (malloc_trim, pressure) -- once a round, and never for
 * the cap, which would retry it on every round a free kicks off. */
static bool purge_wanted(const ebb_heap_t *h, const ebb_span_t *s, const ebb_purge_policy_t *pol) {
    if (!s->refused)
        return purge_due(s, pol) || (s->ndirty && h->dirty_pages > pol->keep_dirty_pages);
    return s->refused_round != h->purge_round && purge_due(s, pol);
}

#define PURGE_BATCH 32 /* spans taken off at once */
#define PURGE_LOOK 256 /* spans looked at under one hold of the lock */

/* The next span of the purge's walk over the free lists (its place is kept
 * in the heap, and list_remove moves it on), or NULL at the end.
 * pre: h->lock held. */
static ebb_span_t *purge_walk(ebb_heap_t *h) {
    while (h->purge_next == NULL) {
        if (h->purge_list >= EBB_HEAP_NLISTS)
            return NULL;
        h->purge_list = next_nonempty(h, h->purge_list + 1);
        if (h->purge_list < EBB_HEAP_NLISTS)
            h->purge_next = h->lists[h->purge_list];
    }
    ebb_span_t *s = h->purge_next;
    h->purge_next = s->next;
    return s;
}

/* The purge runs in batches: under the lock, look at up to PURGE_LOOK
 * spans and take the due ones off their lists, up to PURGE_BATCH (kind
 * PURGING: no one allocates or merges them); without the lock, madvise
 * them; under the lock again, put them back clean. The walk goes on from
 * where it was; a span put back that merged with a due dirty neighbour
 * may land behind it, so then the walk starts over (4 passes at most).
 * Allocating threads never wait behind an madvise, nor behind a long
 * walk: restarting the walk after each batch, as the first version did,
 * made malloc_trim of 6,500 free spans take 0.18-1.2 s. */
size_t ebb__heap_purge(ebb_heap_t *h, const ebb_purge_policy_t *pol, uint64_t *next_due_ns) {
    size_t purged = 0;
    uint64_t next = UINT64_MAX;
    ebb_lock(&h->lock);
    h->purge_round++;
    h->purge_list = next_nonempty(h, 0);
    h->purge_next = h->purge_list < EBB_HEAP_NLISTS ? h->lists[h->purge_list] : NULL;
    int passes = 1;
    bool again = false; /* a purged span merged into a due one, maybe behind the walk */
    for (int rounds = 0; rounds < 1 << 20 && !atomic_load(&ebb__purge_yield); rounds++) {
        ebb_span_t *batch[PURGE_BATCH];
        bool lazy[PURGE_BATCH];
        int n = 0;
        ebb_span_t *s = NULL;
        for (int seen = 0; n < PURGE_BATCH && seen < PURGE_LOOK && (s = purge_walk(h)) != NULL; seen++) {
            bool over_cap = h->dirty_pages > pol->keep_dirty_pages;
            if (!purge_wanted(h, s, pol)) {
                if (s->ndirty && span_due_ns(s, pol) < next)
                    next = span_due_ns(s, pol);
                continue;
            }
            list_remove(h, s);
            if (s->npages == SEG_USABLE)
                spares_add(h, -1);
            s->kind = EBB_SPAN_PURGING;
            /* Two stages when muzzy decay is on: MADV_FREE, then DONTNEED. */
            lazy[n] = pol->muzzy_ns != 0 && !s->muzzy && !pol->force && !over_cap;
            batch[n++] = s;
        }
        bool walked = s == NULL;
        ebb_unlock(&h->lock); /* allocating threads get in between batches */
        size_t bytes = 0, calls = 0, refused = 0;
        bool failed[PURGE_BATCH];
        for (int k = 0; k < n; k++) {
            void *addr = (void *)ebb_span_addr(batch[k]);
            size_t len = (size_t)batch[k]->npages << EBB_PAGE_SHIFT;
            failed[k] = (lazy[k] ? ebb__os_purge_lazy(addr, len) : ebb__os_purge(addr, len)) != 0;
            calls++;
            refused += failed[k];
            if (!lazy[k] && !failed[k])
                bytes += (size_t)batch[k]->ndirty << EBB_PAGE_SHIFT;
        }
        ebb_lock(&h->lock);
        for (int k = 0; k < n; k++) {
            s = batch[k];
            s->kind = EBB_SPAN_FREE;
            if (failed[k]) {
                /* Its pages may hold what they held: still dirty, and not
                 * known to be zero. Tried again a decay period from now. */
                s->refused = 1;
                s->refused_round = h->purge_round;
                s->free_since_ns = pol->now_ns;
            } else if (lazy[k]) {
                s->refused = 0;
                s->muzzy = 1;
                s->free_since_ns = pol->now_ns; /* the second stage starts now */
            } else {
                s->muzzy = 0;
                s->ndirty = 0;
                s->refused = 0;
            }
            /* Where the walk is past it, say when it (or what it merged
             * into) falls due. */
            ebb_segment_t *seg = s->seg;
            s = insert_coalesced(h, s);
            EBB_DASSERT(s == NULL || segment_is_valid(seg));
            if (s != NULL && s->ndirty) {
                if (purge_wanted(h, s, pol))
                    again = true;
                if (span_due_ns(s, pol) < next)
                    next = span_due_ns(s, pol);
            }
        }
        h->purged_bytes += bytes;
        h->purge_calls += calls;
        h->purge_refused += refused;
        purged += bytes;
        if (walked) {
            if (!again || passes == 4)
                break;
            /* Once more from the start, for what merged behind the walk. */
            passes++;
            again = false;
            h->purge_list = next_nonempty(h, 0);
            h->purge_next = h->purge_list < EBB_HEAP_NLISTS ? h->lists[h->purge_list] : NULL;
        }
    }
    h->purge_next = NULL;
    EBB_DASSERT(ebb__heap_is_valid(h));
    ebb_unlock(&h->lock);
    ebb__heap_unmap_released(false); /* what putting spans back gave up; the round takes the rest */
    if (next_due_ns && next < *next_due_ns)
        *next_due_ns = next;
    return purged;
}

void ebb__heap_init(ebb_heap_t *h) {
    memset(h, 0, sizeof(*h));
    h->peak_since_ns = ebb__os_now_ns();
}

bool ebb__heap_is_valid(ebb_heap_t *h) {
    size_t free_pages = 0, dirty = 0;
    for (unsigned i = 0; i < EBB_HEAP_NLISTS; i++) {
        bool has = h->lists[i] != NULL;
        if (has != !!(h->nonempty[i / 64] & (1ull << (i % 64))))
            return false;
        for (ebb_span_t *s = h->lists[i]; s; s = s->next) {
            if (s->kind != EBB_SPAN_FREE || s->list_idx != i || list_index(s->npages) != i)
                return false;
            if (s->seg->spans[s->first] != s || s->seg->spans[s->first + s->npages - 1] != s)
                return false;
            if (s->ndirty > s->npages)
                return false;
            /* Coalesced: no free neighbour. */
            if (s->first > EBB_SEG_FIRST_PAGE) {
                ebb_span_t *p = s->seg->spans[s->first - 1];
                if (p && p->kind == EBB_SPAN_FREE && p->first + p->npages == s->first)
                    return false;
            }
            free_pages += s->npages;
            dirty += s->ndirty;
        }
    }
    return free_pages == h->free_pages && dirty == h->dirty_pages;
}
