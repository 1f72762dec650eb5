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
 */
#include "internal.h"

_Atomic size_t ebb__huge_bytes, ebb__huge_count;

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
    (void)zero; /* fresh mappings are zero */
    size_t offset = huge_offset(align);
    if (size > PTRDIFF_MAX - offset - 2 * EBB_SEG) {
        errno = ENOMEM;
        return NULL;
    }
    size_t len = ebb_align_up(size + offset, EBB_PAGE);
    void *base;
    ebb_segment_t *seg;
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
