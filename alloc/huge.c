/*
 * Huge objects (larger than EBB_LARGE_MAX): a mapping each, laid out so that
 * the segment mask of the object's address finds a header:
 *
 *   base = seg (EBB_SEG-aligned)
 *   +--------+----------------------+----------------------------+
 *   | header | (unused, untouched)  | object: huge_size bytes    |
 *   +--------+----------------------+----------------------------+
 *   seg      seg + huge_offset = p, huge_offset = max(EBB_PAGE, min(align, EBB_SEG))
 *
 * The mapping is aligned by mapping EBB_SEG more and trimming both ends
 * (for an alignment above EBB_SEG, so that p is aligned). The slop used
 * to stay mapped, as address space only, to save the two munmaps; but
 * under mlockall(MCL_FUTURE) every page of a new mapping is faulted in and
 * locked, and under strict overcommit (vm.overcommit_memory=2) every page
 * is charged: 8 objects of 3 MiB took 56 MiB of locked memory, now 24.
 * So huge_base is seg for every mapping made now; unmapping and growth
 * still go by huge_base and huge_map_len, as they did. Growth moves
 * page tables with mremap (no copy); fresh pages read as zero, so calloc
 * clears nothing. Mapping lengths are whole ebb__os_granule()s: the
 * kernel's page where it is larger than EBB_PAGE, so that every trim and
 * unmap is exact there too.
 *
 * Freed mappings go to a small cache (HUGE_CACHE_SLOTS mappings, at most
 * huge_cache_mb bytes), so a program that allocates and frees big buffers
 * in a loop pays no mmap, munmap or page faults each time. A request takes
 * the cached mapping that wastes fewest pages (cache_take): one that holds
 * it with at most a quarter to spare; else the largest smaller one, grown
 * with mremap as realloc grows (only the growth faults in fresh pages), or
 * the smallest bigger one, its excess unmapped. The decay unmaps entries
 * cached for decay_ms; ebb_purge() empties the cache.
 */
#include "conf.h"
#include "internal.h"

_Atomic size_t ebb__huge_bytes, ebb__huge_count, ebb__huge_cached_bytes;

#define HUGE_CACHE_SLOTS 16
typedef struct cached_s {
    ebb_segment_t *seg; /* NULL: empty slot */
    size_t cap;         /* bytes from seg to the end of the mapping */
    uint64_t stamp;     /* insertion order, for eviction */
    uint64_t freed_ns;  /* for the decay */
} cached_t;

static ebb_lock_t cache_lock = EBB_LOCK_INIT;
static cached_t cache[HUGE_CACHE_SLOTS];
static size_t cache_bytes;
static uint64_t cache_clock;

static void unmap_huge(ebb_segment_t *seg) {
    size_t len = seg->huge_map_len;
    ebb__segmap_set(seg, false);
    ebb__os_unmap(seg->huge_base, len);
    atomic_fetch_add_explicit(&ebb__unmapped_bytes, len, memory_order_relaxed);
}

/* seg's capacity: bytes from seg to the end of its mapping. */
static size_t seg_cap(const ebb_segment_t *seg) {
    return (size_t)((uintptr_t)seg->huge_base + seg->huge_map_len - (uintptr_t)seg);
}

/* A cached mapping for an object of need bytes from its header, the one
 * that wastes fewest pages: one that holds it with at most a quarter to
 * spare (the smallest: kept whole); else the larger one of
 *  - the largest smaller mapping, grown by the caller: need - cap fresh
 *    pages faulted in,
 *  - the smallest bigger one with less than need to spare, trimmed by the
 *    caller: cap - need pages unmapped, which a bigger object would have
 *    to fault in again,
 * whichever costs fewer pages; else NULL. */
static ebb_segment_t *cache_take(size_t need) {
    ebb_lock(&cache_lock);
    int fit = -1, below = -1, above = -1;
    for (int i = 0; i < HUGE_CACHE_SLOTS; i++) {
        size_t cap = cache[i].cap;
        if (cache[i].seg == NULL)
            continue;
        if (cap < need) {
            if (below < 0 || cap > cache[below].cap)
                below = i;
        } else if (cap - need <= need / 4) {
            if (fit < 0 || cap < cache[fit].cap)
                fit = i;
        } else if (cap - need < need) {
            if (above < 0 || cap < cache[above].cap)
                above = i;
        }
    }
    int best = fit;
    if (best < 0)
        best = below < 0 || (above >= 0 && cache[above].cap - need < need - cache[below].cap)
                   ? above
                   : below;
    ebb_segment_t *seg = NULL;
    if (best >= 0) {
        seg = cache[best].seg;
        cache_bytes -= cache[best].cap;
        cache[best].seg = NULL;
        atomic_store_explicit(&ebb__huge_cached_bytes, cache_bytes, memory_order_relaxed);
    }
    ebb_unlock(&cache_lock);
    return seg;
}

/* Keep seg for reuse; false when it does not fit the bounds. Evicted
 * mappings are unmapped after the lock is dropped. */
static bool cache_put(ebb_segment_t *seg) {
    size_t cap_bytes = (size_t)ebb__opts.huge_cache_mb << 20;
    size_t cap = seg_cap(seg);
    if (cap > cap_bytes / 2)
        return false;
    ebb_segment_t *victims[HUGE_CACHE_SLOTS];
    int nv = 0;
    seg->kind = EBB_SEG_HUGE_CACHED; /* a second free of it now aborts */
    uint64_t now = ebb__os_coarse_ns();
    ebb_lock(&cache_lock);
    for (;;) {
        int empty = -1, oldest = -1;
        for (int i = 0; i < HUGE_CACHE_SLOTS; i++) {
            if (cache[i].seg == NULL)
                empty = i;
            else if (oldest < 0 || cache[i].stamp < cache[oldest].stamp)
                oldest = i;
        }
        if (empty >= 0 && cache_bytes + cap <= cap_bytes) {
            cache[empty] = (cached_t){seg, cap, ++cache_clock, now};
            cache_bytes += cap;
            break;
        }
        victims[nv++] = cache[oldest].seg;
        cache_bytes -= cache[oldest].cap;
        cache[oldest].seg = NULL;
    }
    atomic_store_explicit(&ebb__huge_cached_bytes, cache_bytes, memory_order_relaxed);
    ebb_unlock(&cache_lock);
    for (int i = 0; i < nv; i++)
        unmap_huge(victims[i]);
    return true;
}

size_t ebb__huge_cache_expire(uint64_t cutoff_ns, uint64_t decay_ns, uint64_t *next_due_ns) {
    ebb_segment_t *expired[HUGE_CACHE_SLOTS];
    int n = 0;
    size_t bytes = 0;
    ebb_lock(&cache_lock);
    for (int i = 0; i < HUGE_CACHE_SLOTS; i++) {
        if (cache[i].seg == NULL)
            continue;
        if (cache[i].freed_ns <= cutoff_ns) {
            expired[n++] = cache[i].seg;
            bytes += cache[i].cap;
            cache_bytes -= cache[i].cap;
            cache[i].seg = NULL;
        } else if (next_due_ns && cache[i].freed_ns + decay_ns < *next_due_ns) {
            *next_due_ns = cache[i].freed_ns + decay_ns;
        }
    }
    atomic_store_explicit(&ebb__huge_cached_bytes, cache_bytes, memory_order_relaxed);
    ebb_unlock(&cache_lock);
    for (int i = 0; i < n; i++)
        unmap_huge(expired[i]);
    return bytes;
}

size_t ebb__huge_cache_flush(void) { return ebb__huge_cache_expire(UINT64_MAX, 0, NULL); }

void ebb__huge_prefork(void) { ebb_lock(&cache_lock); }
void ebb__huge_postfork_parent(void) { ebb_unlock(&cache_lock); }
void ebb__huge_postfork_child(void) { ebb_lock_reinit(&cache_lock); }

/* ---- objects ------------------------------------------------------------ */
static size_t huge_offset(size_t align) {
    if (align <= EBB_PAGE)
        return EBB_PAGE;
    return align < EBB_SEG ? align : EBB_SEG;
}

/* Header of a live object at seg + offset whose mapping ends at
 * seg + cap. */
static void *set_live(ebb_segment_t *seg, void *base, size_t map_len, size_t offset) {
    seg->magic = EBB_SEG_MAGIC;
    seg->kind = EBB_SEG_HUGE;
    seg->huge_offset = (uint32_t)offset;
    seg->huge_base = base;
    seg->huge_map_len = map_len;
    seg->huge_size = (uintptr_t)base + map_len - ((uintptr_t)seg + offset);
    atomic_fetch_add_explicit(&ebb__huge_bytes, seg->huge_size, memory_order_relaxed);
    atomic_fetch_add_explicit(&ebb__huge_count, 1, memory_order_relaxed);
    return (char *)seg + offset;
}

/* Cut the mapping of seg so that it ends at seg + cap. pre: cap a
 * multiple of ebb__os_granule(), as every mapping's length here is (a
 * kernel with a larger page would refuse the cut, or round it up). */
static void trim_tail(ebb_segment_t *seg, size_t cap) {
    size_t old = seg_cap(seg);
    if (cap >= old)
        return;
    ebb__os_unmap((char *)seg + cap, old - cap);
    seg->huge_map_len -= old - cap;
}

/* Grow the mapping of seg (not live) so that it holds cap bytes from seg:
 * in place, or moved with its page tables (no copy) together with whatever
 * of the mapping lies ahead of seg. Returns seg where it now is, its header's mapping updated;
 * NULL when the OS refuses (the mapping is then as it was). */
static ebb_segment_t *grow_mapping(ebb_segment_t *seg, size_t cap) {
    void *base = seg->huge_base;
    size_t lead = (uintptr_t)seg - (uintptr_t)base;
    size_t old_len = seg->huge_map_len, new_len = lead + cap;
    if (ebb__os_remap_inplace(base, old_len, new_len) == 0) {
        seg->huge_map_len = new_len;
        return seg;
    }
    /* Clear the old bit first: once moved, the range may be mapped anew by
     * another thread. */
    ebb__segmap_set(seg, false);
    char *moved = ebb__os_remap_aligned(base, old_len, new_len, EBB_SEG, lead);
    if (moved == NULL) {
        ebb__segmap_set(seg, true);
        return NULL;
    }
    seg = (ebb_segment_t *)(moved + lead);
    ebb__segmap_set(seg, true);
    seg->huge_base = moved;
    seg->huge_map_len = new_len;
    return seg;
}

/* A cached mapping for an object at offset of need bytes from seg, fitted
 * to it: the excess over a quarter trimmed, or grown when it is smaller.
 * *dirty: how many of the object's bytes held data before. NULL: nothing
 * cached fits or grows. */
static ebb_segment_t *reuse_cached(size_t need, size_t offset, size_t *dirty) {
    ebb_segment_t *seg = cache_take(need);
    if (seg == NULL)
        return NULL;
    size_t cap = seg_cap(seg);
    *dirty = cap > offset ? cap - offset : 0;
    if (cap < need) {
        ebb_segment_t *grown = grow_mapping(seg, need);
        if (grown == NULL)
            unmap_huge(seg);
        return grown;
    }
    if (cap - need > need / 4)
        trim_tail(seg, need);
    return seg;
}

void *ebb__huge_alloc(size_t size, size_t align, bool zero) {
    size_t offset = huge_offset(align);
    if (size > PTRDIFF_MAX - offset - 2 * EBB_SEG || align > PTRDIFF_MAX / 4) {
        errno = ENOMEM;
        return NULL;
    }
    size_t need = ebb_align_up(size + offset, ebb__os_granule());
    ebb_segment_t *seg;
    size_t dirty;
    if (align <= EBB_SEG && (seg = reuse_cached(need, offset, &dirty)) != NULL) {
        void *p = set_live(seg, seg->huge_base, seg->huge_map_len, offset);
        if (zero) /* what the mapping held before; grown pages read as zero */
            memset(p, 0, dirty < size ? dirty : size);
        return p;
    }
    /* Above EBB_SEG, the object at seg + EBB_SEG must be aligned to align. */
    size_t map_len = need, map_align = align <= EBB_SEG ? EBB_SEG : align;
    size_t lead = align <= EBB_SEG ? 0 : EBB_SEG;
    void *base = ebb__os_map_aligned(map_len, map_align, lead);
    /* Out of address space (RLIMIT_AS, strict overcommit), with some of it
     * held free: the cached mappings, the spare and retained segments.
     * Once more without them. */
    if (base == NULL && ebb__huge_cache_flush() + ebb__heap_release_spares() != 0)
        base = ebb__os_map_aligned(map_len, map_align, lead);
    if (base == NULL)
        return NULL;
    seg = base;
    ebb__os_mapped(base, map_len, EBB_MAP_HUGE);
    void *p = set_live(seg, base, map_len, offset);
    ebb__segmap_set(seg, true);
    return p;
}

static void account_free(ebb_segment_t *seg) {
    atomic_fetch_sub_explicit(&ebb__huge_bytes, seg->huge_size, memory_order_relaxed);
    atomic_fetch_sub_explicit(&ebb__huge_count, 1, memory_order_relaxed);
}

void ebb__huge_free(ebb_segment_t *seg) {
    account_free(seg);
    if (!cache_put(seg))
        unmap_huge(seg);
}

void *ebb__huge_realloc(ebb_segment_t *seg, void *p, size_t size) {
    size_t offset = seg->huge_offset;
    /* Objects aligned to a segment or more move by copying (the caller). */
    if (offset >= EBB_SEG || size > PTRDIFF_MAX - offset - 2 * EBB_SEG)
        return NULL;
    size_t need = ebb_align_up(size + offset, ebb__os_granule());
    size_t cap = seg_cap(seg);
    if (need <= cap) {
        if (cap - need <= cap / 2)
            return p; /* a modest shrink: keep the pages */
        account_free(seg);
        trim_tail(seg, need);
        return set_live(seg, seg->huge_base, seg->huge_map_len, offset);
    }
    account_free(seg);
    ebb_segment_t *grown = grow_mapping(seg, need);
    if (grown == NULL) {
        set_live(seg, seg->huge_base, seg->huge_map_len, offset);
        return NULL;
    }
    return set_live(grown, grown->huge_base, grown->huge_map_len, offset);
}
