/*
 * Metadata allocator: spans, arenas and thread caches come from here, never
 * from the heap they describe. Bump allocation in EBB_SEG-sized chunks of
 * their own (named "ebbmalloc-meta"); memory is recycled by its users
 * (span pools, the thread-cache free list), never returned.
 *
 *   chunk: | chunk header (magic) | obj | obj | ...        bump -> |  free  |
 */
#include "internal.h"

#define BASE_MAGIC 0xbA5Eebbull
#define BASE_CHUNK EBB_SEG
#define SPAN_BATCH 64

typedef struct base_chunk_s {
    uint64_t magic;
    struct base_chunk_s *next;
} base_chunk_t;

static ebb_lock_t base_lock = EBB_LOCK_INIT;
static char *base_cur, *base_end;
static base_chunk_t *base_chunks;
_Atomic size_t ebb__base_mapped;
static _Atomic size_t base_used;

size_t ebb__base_used(void) { return atomic_load_explicit(&base_used, memory_order_relaxed); }

void *ebb__base_alloc(size_t size) {
    size = ebb_align_up(size, EBB_CACHELINE);
    if (size > BASE_CHUNK - EBB_CACHELINE)
        return NULL;
    ebb_lock(&base_lock);
    if (base_cur == NULL || (size_t)(base_end - base_cur) < size) {
        base_chunk_t *c = ebb__os_map_aligned(BASE_CHUNK, EBB_SEG, 0);
        if (c == NULL) {
            ebb_unlock(&base_lock);
            return NULL;
        }
        ebb__os_mapped(c, BASE_CHUNK, EBB_MAP_META);
        c->magic = BASE_MAGIC;
        c->next = base_chunks;
        base_chunks = c;
        base_cur = (char *)c + EBB_CACHELINE;
        base_end = (char *)c + BASE_CHUNK;
        atomic_fetch_add_explicit(&ebb__base_mapped, BASE_CHUNK, memory_order_relaxed);
    }
    void *p = base_cur;
    base_cur += size;
    atomic_fetch_add_explicit(&base_used, size, memory_order_relaxed);
    ebb_unlock(&base_lock);
    return p; /* fresh mapping: already zero */
}

ebb_span_t *ebb__span_new(ebb_heap_t *h) {
    if (h->span_pool == NULL) {
        ebb_span_t *batch = ebb__base_alloc(sizeof(ebb_span_t) * SPAN_BATCH);
        if (batch == NULL)
            return NULL;
        h->meta_bytes += sizeof(ebb_span_t) * SPAN_BATCH;
        for (int i = 0; i < SPAN_BATCH; i++) {
            batch[i].next = h->span_pool;
            h->span_pool = &batch[i];
        }
    }
    ebb_span_t *s = h->span_pool;
    h->span_pool = s->next;
    memset(s, 0, sizeof(*s));
    return s;
}

void ebb__span_delete(ebb_heap_t *h, ebb_span_t *s) {
    s->kind = 0;
    s->next = h->span_pool;
    h->span_pool = s;
}

void ebb__base_prefork(void) { ebb_lock(&base_lock); }
void ebb__base_postfork_parent(void) { ebb_unlock(&base_lock); }
void ebb__base_postfork_child(void) { ebb_lock_reinit(&base_lock); }

/* ---- segment map --------------------------------------------------------- */
#define SEGMAP_ADDR_BITS 47 /* user address space on x86-64 and arm64 (4 levels) */
#define SEGMAP_BITS ((size_t)1 << (SEGMAP_ADDR_BITS - EBB_SEG_SHIFT))
static _Atomic uint64_t *segmap;

bool ebb__segmap_init(void) {
    size_t len = ebb_align_up(SEGMAP_BITS / 8, EBB_SEG);
    segmap = ebb__os_map_aligned(len, EBB_SEG, 0);
    if (segmap == NULL)
        return false;
    ebb__os_mapped(segmap, len, EBB_MAP_META);
    atomic_fetch_add_explicit(&ebb__base_mapped, len, memory_order_relaxed);
    return true;
}

void ebb__segmap_set(const void *seg, bool on) {
    size_t i = (uintptr_t)seg >> EBB_SEG_SHIFT;
    if (i >= SEGMAP_BITS)
        return;
    uint64_t bit = 1ull << (i % 64);
    if (on)
        atomic_fetch_or_explicit(&segmap[i / 64], bit, memory_order_release);
    else
        atomic_fetch_and_explicit(&segmap[i / 64], ~bit, memory_order_release);
}

bool ebb__segmap_test(const void *seg) {
    size_t i = (uintptr_t)seg >> EBB_SEG_SHIFT;
    if (i >= SEGMAP_BITS || segmap == NULL)
        return false;
    return (atomic_load_explicit(&segmap[i / 64], memory_order_acquire) >> (i % 64)) & 1;
}

void *ebb__segmap_find_below(const void *addr) {
    size_t i = (uintptr_t)addr >> EBB_SEG_SHIFT;
    if (segmap == NULL)
        return NULL;
    if (i >= SEGMAP_BITS)
        i = SEGMAP_BITS - 1;
    /* Word by word: 64 segments at a time. */
    size_t w = i / 64;
    uint64_t bits = atomic_load_explicit(&segmap[w], memory_order_acquire);
    bits &= (i % 64 == 63) ? ~0ull : ((1ull << (i % 64 + 1)) - 1);
    for (;;) {
        if (bits)
            return (void *)(((w * 64) + 63 - (size_t)__builtin_clzll(bits)) << EBB_SEG_SHIFT);
        if (w == 0)
            return NULL;
        bits = atomic_load_explicit(&segmap[--w], memory_order_acquire);
    }
}
