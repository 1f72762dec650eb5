/*
 * Size classes: 16..128 bytes in steps of 16, then four classes per doubling
 * (2^g + k * 2^(g-2), k = 1..4), so a request wastes at most 25% of its
 * class. Classes 1..EBB_NSMALL live in slabs; the rest, up to EBB_LARGE_MAX,
 * are whole spans of pages. The table is computed once at initialisation.
 *
 *   class:  1   2   3 ...  8 |   9  10  11  12 |  13 ... | 37 ... 40 | 41 ... 64
 *   size:  16  32  48 ... 128| 160 192 224 256 | 320 ... | 20K...32K | 40K...2M
 *          <----------- slabs (bitmap per slab) -------------------> <- spans ->
 */
#include "internal.h"

ebb_class_info_t ebb__classes[EBB_NCLASSES];
uint8_t ebb__class_lut[(EBB_LUT_MAX >> 4) + 1];
uint8_t ebb__class_aligned[EBB_NSMALL + 1][EBB_ALIGNED_KINDS];

/* Pages per slab: as few as give at most 1/32 of the slab as tail waste and
 * hold at most EBB_SLAB_MAX_OBJS objects; at least 4 objects and 16 KiB
 * per slab where the bitmap allows. */
static uint32_t slab_pages_for(size_t size) {
    uint32_t best = 0;
    size_t best_waste = SIZE_MAX;
    /* At least 16 KiB (fewer trips to the page heap), within the bitmap. */
    size_t target = 4 * size > EBB_SLAB_MIN_BYTES ? 4 * size : EBB_SLAB_MIN_BYTES;
    uint32_t min_pages = (uint32_t)((target + EBB_PAGE - 1) / EBB_PAGE);
    uint32_t cap_pages = (uint32_t)((size_t)EBB_SLAB_MAX_OBJS * size / EBB_PAGE);
    if (cap_pages && min_pages > cap_pages)
        min_pages = cap_pages;
    if (min_pages == 0)
        min_pages = 1;
    for (uint32_t p = min_pages; p <= 64; p++) {
        size_t bytes = (size_t)p * EBB_PAGE;
        size_t n = bytes / size;
        if (n > EBB_SLAB_MAX_OBJS)
            break;
        size_t waste = bytes - n * size;
        if (waste * 32 <= bytes)
            return p;
        /* Compare waste as a fraction: waste/bytes. */
        if (best == 0 || waste * (best * EBB_PAGE) < best_waste * bytes) {
            best = p;
            best_waste = waste;
        }
    }
    return best ? best : min_pages;
}

void ebb__size_classes_init(void) {
    unsigned c = 1;
    for (size_t s = 16; s <= 128; s += 16)
        ebb__classes[c++].size = (uint32_t)s;
    for (unsigned g = 7; c < EBB_NCLASSES; g++)
        for (unsigned k = 1; k <= 4; k++)
            ebb__classes[c++].size = (uint32_t)(((size_t)1 << g) + ((size_t)k << (g - 2)));
    for (c = 1; c < EBB_NCLASSES; c++) {
        ebb_class_info_t *ci = &ebb__classes[c];
        if (c <= EBB_NSMALL) {
            ci->slab_pages = slab_pages_for(ci->size);
            ci->nobjs = (uint32_t)(ci->slab_pages * EBB_PAGE / ci->size);
            if (ci->nobjs > EBB_SLAB_MAX_OBJS)
                ci->nobjs = EBB_SLAB_MAX_OBJS;
            /* Exact for offsets that are multiples of size below 2^32/size. */
            ci->div_magic = (uint32_t)(((uint64_t)1 << 32) / ci->size + 1);
        } else {
            ci->slab_pages = (uint32_t)(ci->size / EBB_PAGE);
        }
    }
    unsigned cls = 1;
    for (size_t i = 0; i <= (EBB_LUT_MAX >> 4); i++) {
        while (ebb__classes[cls].size < (i << 4))
            cls++;
        ebb__class_lut[i] = (uint8_t)cls;
    }
    for (c = 1; c <= EBB_NSMALL; c++)
        for (unsigned k = 0; k < EBB_ALIGNED_KINDS; k++) {
            unsigned a = c;
            while (a <= EBB_NSMALL && ebb__classes[a].size % (32u << k) != 0)
                a++;
            ebb__class_aligned[c][k] = (uint8_t)(a <= EBB_NSMALL ? a : 0);
        }
}
