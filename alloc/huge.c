/*
 * Huge objects (larger than EBB_LARGE_MAX): a mapping each, laid out so that
 * the segment mask of the object's address finds a header:
 *
 *   huge_base (= seg unless the alignment exceeds EBB_SEG)
 *   +--------+---------------------------+--------------------------------+
 *   | header | (unused, never touched)   | object ... huge_size bytes     |
 *   +--------+---------------------------+--------------------------------+
 *   seg      seg + huge_offset = p, huge_offset = max(EBB_PAGE, min(align, EBB_SEG))
 *
 * Growth moves page tables with mremap (no copy); the fresh pages of a
 * mapping read as zero, so calloc never clears them.
 *
 * Freed mappings of default alignment go to a small cache (at most
 * HUGE_CACHE_SLOTS mappings and huge_cache_mb bytes), so that a program that
 * allocates and frees big buffers in a loop does not pay mmap, munmap and
 * page faults each time; ebb_purge() empties it.
 */
#include "conf.h"
#include "internal.h"

_Atomic size_t ebb__huge_bytes, ebb__huge_count;

#define HUGE_CACHE_SLOTS 16
typedef struct cached_s {
    ebb_segment_t *seg; /* NULL: empty slot */
    size_t len;
    uint64_t stamp;
} cached_t;

static ebb_lock_t cache_lock = EBB_LOCK_INIT;
static cached_t cache[HUGE_CACHE_SLOTS];
static size_t cache_bytes;
static uint64_t cache_clock;
_Atomic size_t ebb__huge_cached_bytes;

/* A cached mapping of len in [need, need + need/4], best fit; or NULL. */
static ebb_segment_t *cache_take(size_t need, size_t *len_out) {
    ebb_lock(&cache_lock);
    int best = -1;
    for (int i = 0; i < HUGE_CACHE_SLOTS; i++)
        if (cache[i].seg && cache[i].len >= need && cache[i].len - need <= need / 4 &&
            (best < 0 || cache[i].len < cache[best].len))
            best = i;
    ebb_segment_t *seg = NULL;
    if (best >= 0) {
        seg = cache[best].seg;
        *len_out = cache[best].len;
        cache_bytes -= cache[best].len;
        cache[best].seg = NULL;
        atomic_store_explicit(&ebb__huge_cached_bytes, cache_bytes, memory_order_relaxed);
    }
    ebb_unlock(&cache_lock);
    return seg;
}

/* Keep seg for reuse; returns false when it does not fit the bounds. Evicted
 * mappings are unmapped after the lock is dropped. */
static bool cache_put(ebb_segment_t *seg, size_t len) {
    size_t cap = (size_t)ebb__opts.huge_cache_mb << 20;
    if (len > cap / 2)
        return false;
    cached_t victims[HUGE_CACHE_SLOTS];
    int nv = 0;
    seg->kind = EBB_SEG_HUGE_CACHED; /* a second free of it now aborts */
    ebb_lock(&cache_lock);
    for (;;) {
        int empty = -1, oldest = -1;
        for (int i = 0; i < HUGE_CACHE_SLOTS; i++) {
            if (cache[i].seg == NULL)
                empty = i;
            else if (oldest < 0 || cache[i].stamp < cache[oldest].stamp)
                oldest = i;
        }
        if (empty >= 0 && cache_bytes + len <= cap) {
            cache[empty] = (cached_t){seg, len, ++cache_clock};
            cache_bytes += len;
            break;
        }
        victims[nv++] = cache[oldest];
        cache_bytes -= cache[oldest].len;
        cache[oldest].seg = NULL;
    }
    atomic_store_explicit(&ebb__huge_cached_bytes, cache_bytes, memory_order_relaxed);
    ebb_unlock(&cache_lock);
    for (int i = 0; i < nv; i++) {
        ebb__segmap_set(victims[i].seg, false);
        ebb__os_unmap(victims[i].seg, victims[i].len);
    }
    return true;
}

size_t ebb__huge_cache_flush(void) {
    cached_t all[HUGE_CACHE_SLOTS];
    size_t bytes = 0;
    ebb_lock(&cache_lock);
    memcpy(all, cache, sizeof(all));
    memset(cache, 0, sizeof(cache));
    cache_bytes = 0;
    atomic_store_explicit(&ebb__huge_cached_bytes, 0, memory_order_relaxed);
    ebb_unlock(&cache_lock);
    for (int i = 0; i < HUGE_CACHE_SLOTS; i++)
        if (all[i].seg) {
            ebb__segmap_set(all[i].seg, false);
            ebb__os_unmap(all[i].seg, all[i].len);
            bytes += all[i].len;
        }
    return bytes;
}

void ebb__huge_prefork(void) { ebb_lock(&cache_lock); }
void ebb__huge_postfork_parent(void) { ebb_unlock(&cache_lock); }
void ebb__huge_postfork_child(void) { ebb_lock_reinit(&cache_lock); }

static size_t huge_offset(size_t align) {
    if (align <= EBB_PAGE)
        return EBB_PAGE;
    return align < EBB_SEG ? align : EBB_SEG;
}

static void set_header(ebb_segment_t *seg, void *base, size_t map_len, size_t offset) {
    seg->magic = EBB_SEG_MAGIC;
    seg->kind = EBB_SEG_HUGE;
    seg->huge_offset = (uint32_t)offset;
    seg->huge_base = base;
    seg->huge_map_len = map_len;
    seg->huge_size = map_len - ((uintptr_t)seg + offset - (uintptr_t)base);
}

void *ebb__huge_alloc(size_t size, size_t align, bool zero) {
    size_t offset = huge_offset(align);
    if (size > PTRDIFF_MAX - offset - 2 * EBB_SEG) {
        errno = ENOMEM;
        return NULL;
    }
    size_t len = ebb_align_up(size + offset, EBB_PAGE);
    void *base;
    ebb_segment_t *seg;
    size_t cached_len;
    if (offset == EBB_PAGE && (seg = cache_take(len, &cached_len)) != NULL) {
        set_header(seg, seg, cached_len, offset);
        atomic_fetch_add_explicit(&ebb__huge_bytes, seg->huge_size, memory_order_relaxed);
        atomic_fetch_add_explicit(&ebb__huge_count, 1, memory_order_relaxed);
        if (zero)
            memset((char *)seg + offset, 0, size);
        return (char *)seg + offset;
    }
    if (align <= EBB_SEG) {
        base = ebb__os_map_aligned(len, EBB_SEG, 0);
        seg = base;
    } else {
        /* The object at base + EBB_SEG must be aligned to align; the header
         * then sits one segment below it. */
        base = ebb__os_map_aligned(len, align, EBB_SEG);
        seg = base;
    }
    if (base == NULL)
        return NULL;
    ebb__os_name(base, len, "ebbmalloc-huge");
    set_header(seg, base, len, offset);
    ebb__segmap_set(seg, true);
    atomic_fetch_add_explicit(&ebb__huge_bytes, seg->huge_size, memory_order_relaxed);
    atomic_fetch_add_explicit(&ebb__huge_count, 1, memory_order_relaxed);
    return (char *)seg + offset;
}

void ebb__huge_free(ebb_segment_t *seg) {
    atomic_fetch_sub_explicit(&ebb__huge_bytes, seg->huge_size, memory_order_relaxed);
    atomic_fetch_sub_explicit(&ebb__huge_count, 1, memory_order_relaxed);
    if (seg->huge_offset == EBB_PAGE && seg->huge_base == (void *)seg &&
        cache_put(seg, seg->huge_map_len))
        return;
    ebb__segmap_set(seg, false);
    ebb__os_unmap(seg->huge_base, seg->huge_map_len);
}

void *ebb__huge_realloc(ebb_segment_t *seg, void *p, size_t size) {
    size_t offset = seg->huge_offset;
    /* Objects aligned to a segment or more move by copying (the caller). */
    if (offset >= EBB_SEG || size > PTRDIFF_MAX - offset - 2 * EBB_SEG)
        return NULL;
    size_t old_len = seg->huge_map_len, old_size = seg->huge_size;
    size_t len = ebb_align_up(size + offset, EBB_PAGE);
    if (len == old_len)
        return p;
    if (len < old_len) {
        ebb__os_unmap((char *)seg + len, old_len - len);
    } else if (ebb__os_remap_inplace(seg, old_len, len) != 0) {
        /* Clear the old bit first: once moved, the range may be mapped anew. */
        ebb__segmap_set(seg, false);
        ebb_segment_t *moved = ebb__os_remap_aligned(seg, old_len, len, EBB_SEG, 0);
        ebb__segmap_set(moved ? moved : seg, true);
        if (moved == NULL)
            return NULL;
        seg = moved;
    }
    set_header(seg, seg, len, offset);
    atomic_fetch_add_explicit(&ebb__huge_bytes, seg->huge_size, memory_order_relaxed);
    atomic_fetch_sub_explicit(&ebb__huge_bytes, old_size, memory_order_relaxed);
    return (char *)seg + offset;
}
