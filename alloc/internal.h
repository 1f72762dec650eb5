/*
 * ebbmalloc internals: the types every module shares and the ebb__ functions
 * they call in one another. Public API: include/ebbmalloc.h.
 *
 * Glossary
 *   page      EBB_PAGE bytes, the unit of the page heap and of purging.
 *   segment   EBB_SEG bytes, aligned to EBB_SEG, in one page heap. Its first
 *             EBB_SEG_HDR_PAGES pages hold the segment header (page maps); the
 *             rest is cut into spans. ptr -> segment is one mask.
 *   span      a run of pages in a segment: free, a slab, or one large object.
 *             Described by an ebb_span_t that lives in metadata (base.c).
 *   slab      a span cut into objects of one small size class; a bitmap in
 *             its span records which objects are free.
 *   class     a size class; 1..EBB_NSMALL are slab classes, the rest up to
 *             EBB_NCLASSES-1 are large classes (whole spans); 0 = none.
 *   bin       the per-arena, per-class set of slabs (lock + non-full list).
 *   arena     bins, and a page heap (free spans, segments) shared by a group
 *             of arenas (option arenas_per_heap); a capped number of them;
 *             each thread is attached to one.
 *   tcache    a thread's cache: per class a singly linked free list threaded
 *             through the cached objects; the lock-free fast path.
 *   huge      an object larger than EBB_LARGE_MAX in a mapping of its own,
 *             laid out like a segment so the same mask finds its header.
 *   base      the metadata allocator (spans, arenas, thread caches).
 */
#ifndef EBB_INTERNAL_H
#define EBB_INTERNAL_H

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ebbmalloc.h"
#include "os.h"

/* ---- compiler helpers ---------------------------------------------- */
#define ebb_likely(x) __builtin_expect(!!(x), 1)
#define ebb_unlikely(x) __builtin_expect(!!(x), 0)
#define EBB_INLINE static inline __attribute__((always_inline))
/* Read on a fast path: one RIP-relative load, no GOT entry. */
#define EBB_HIDDEN __attribute__((visibility("hidden")))
#define EBB_NOINLINE __attribute__((noinline))
#define EBB_CACHELINE 64
#if defined(__x86_64__) || defined(__i386__)
#define EBB_CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define EBB_CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#else
#define EBB_CPU_RELAX() __asm__ __volatile__("" ::: "memory")
#endif
#define EBB_ALIGNED(n) __attribute__((aligned(n)))

#ifdef EBB_DEBUG
static const bool ebb_config_debug = true;
#else
static const bool ebb_config_debug = false;
#endif

/* Graded assertions: EBB_CHECK stays on in release (cheap, guards memory
 * safety); EBB_DASSERT only in debug builds (still compiled, cannot rot). */
#define EBB_CHECK(cond, msg)                                                   \
    do {                                                                       \
        if (ebb_unlikely(!(cond)))                                             \
            ebb__os_fatal(msg);                                                \
    } while (0)
#define EBB_DASSERT(cond)                                                      \
    do {                                                                       \
        if (ebb_config_debug && ebb_unlikely(!(cond)))                         \
            ebb__os_fatal("assertion failed: " #cond " at " __FILE__);         \
    } while (0)

/* ---- geometry ------------------------------------------------------ */
#define EBB_PAGE_SHIFT 12
#define EBB_PAGE ((size_t)1 << EBB_PAGE_SHIFT)
#define EBB_SEG_SHIFT 22
#define EBB_SEG ((size_t)1 << EBB_SEG_SHIFT)
#define EBB_SEG_MASK (EBB_SEG - 1)
#define EBB_SEG_PAGES (EBB_SEG >> EBB_PAGE_SHIFT)
#define EBB_MIN_ALIGN 16 /* alignof(max_align_t) on the supported targets */

/* Size classes (size_class.c): 16..128 by 16, then four per doubling. */
#define EBB_NSMALL 40            /* classes 1..40: slabs, up to EBB_SMALL_MAX */
#define EBB_SMALL_MAX ((size_t)32768)
#define EBB_NCLASSES 65          /* classes 41..64: large spans */
#define EBB_LARGE_MAX ((size_t)2 << 20)
#define EBB_LUT_MAX EBB_SMALL_MAX /* sizes up to this use a table lookup (2 KiB) */
#define EBB_SLAB_MAX_OBJS 512
#define EBB_SLAB_WORDS (EBB_SLAB_MAX_OBJS / 64)
#define EBB_SLAB_MIN_BYTES 4096 /* small slabs: a few survivors pin little */

#define EBB_MAX_ARENAS 1024

EBB_INLINE size_t ebb_align_up(size_t n, size_t a) { return (n + a - 1) & ~(a - 1); }
EBB_INLINE bool ebb_is_pow2(size_t n) { return n != 0 && (n & (n - 1)) == 0; }

/* ---- locks (futex mutex: 0 free, 1 held, 2 held with waiters) ------- */
typedef struct ebb_lock_s {
    _Atomic uint32_t state;
} ebb_lock_t;
#define EBB_LOCK_INIT {0}

void ebb__lock_slow(ebb_lock_t *l);
EBB_INLINE void ebb_lock(ebb_lock_t *l) {
    uint32_t expect = 0;
    if (ebb_likely(atomic_compare_exchange_weak_explicit(&l->state, &expect, 1,
                                                         memory_order_acquire,
                                                         memory_order_relaxed)))
        return;
    ebb__lock_slow(l);
}
EBB_INLINE bool ebb_trylock(ebb_lock_t *l) {
    uint32_t expect = 0;
    return atomic_compare_exchange_strong_explicit(&l->state, &expect, 1, memory_order_acquire,
                                                   memory_order_relaxed);
}
EBB_INLINE void ebb_unlock(ebb_lock_t *l) {
    if (ebb_unlikely(atomic_exchange_explicit(&l->state, 0, memory_order_release) == 2))
        ebb__os_futex_wake((volatile uint32_t *)&l->state, 1);
}
/* After fork in the child: only the forking thread exists. */
EBB_INLINE void ebb_lock_reinit(ebb_lock_t *l) { atomic_store(&l->state, 0); }

/* ---- size classes -------------------------------------------------- */
typedef struct ebb_class_info_s {
    uint32_t size;      /* object size in bytes */
    uint32_t slab_pages;/* small: pages per slab; large: pages per object */
    uint32_t nobjs;     /* small: objects per slab */
    uint32_t div_magic; /* small: offset * div_magic >> 32 == offset / size */
} ebb_class_info_t;

extern ebb_class_info_t ebb__classes[EBB_NCLASSES];
extern uint8_t ebb__class_lut[(EBB_LUT_MAX >> 4) + 1];

void ebb__size_classes_init(void);

/* Aligned small objects: slabs start on a page, so the objects of a class
 * whose size is a multiple of align are aligned to it.
 * ebb__class_aligned[c][k] is the first small class from c on whose size
 * is a multiple of 32 << k (k = 0..7: 32 B .. 4 KiB), or 0 where none is. */
#define EBB_ALIGNED_KINDS 8
extern uint8_t ebb__class_aligned[EBB_NSMALL + 1][EBB_ALIGNED_KINDS];

/* For 128 < size <= EBB_LARGE_MAX (the table covers the small sizes): with 2^g < size <= 2^(g+1), the class
 * is the g-th group of four plus which quarter of the group size - 1 is in. */
EBB_INLINE unsigned ebb_size_class_big(size_t size) {
    unsigned g = (unsigned)(63 - __builtin_clzll(size - 1));
    unsigned quarter = (unsigned)((size - 1) >> (g - 2)) & 3;
    return 4 * g - 19 + quarter;
}

/* size -> class in O(1), no call; pre: size <= EBB_LARGE_MAX. */
EBB_INLINE unsigned ebb_size_class(size_t size) {
    if (ebb_likely(size <= EBB_LUT_MAX))
        return ebb__class_lut[(size + 15) >> 4];
    return ebb_size_class_big(size);
}
EBB_INLINE size_t ebb_class_size(unsigned c) { return ebb__classes[c].size; }
EBB_INLINE bool ebb_class_is_small(unsigned c) { return c - 1 < EBB_NSMALL; }

/* ---- spans and segments -------------------------------------------- */
enum { EBB_SPAN_FREE = 1, EBB_SPAN_SLAB = 2, EBB_SPAN_LARGE = 3, EBB_SPAN_PURGING = 4 };

typedef struct ebb_arena_s ebb_arena_t;
typedef struct ebb_segment_s ebb_segment_t;

/*
 * A span. Invariants:
 *   free span:  seg->spans[first] == seg->spans[last] == span; on one heap
 *               free list; ndirty <= npages; ndirty == 0 => contents zero.
 *   slab:       seg->spans[p] == span and seg->page_class[p] == sclass for
 *               every page p of it; popcount(bitmap) == nfree <= nobjs; on its
 *               bin's non-full list iff 0 < nfree and it is not bin->cur.
 *   large:      seg->spans[first] == seg->spans[last] == span,
 *               seg->page_class[first] == sclass.
 */
typedef struct ebb_span_s ebb_span_t;
struct ebb_span_s {
    ebb_span_t *next, *prev;  /* heap free list or bin non-full list */
    ebb_segment_t *seg;
    uint32_t first;           /* page index in seg */
    uint32_t npages;
    uint8_t kind;
    uint8_t sclass;
    uint8_t on_list;          /* slab: EBB_SLAB_NONFULL, _PURGING (off every list), or 0 */
    uint8_t zeroed;           /* large: memory known to be zero at alloc */
    uint8_t muzzy;            /* free: dirty pages were MADV_FREEd (stage 1) */
    uint8_t refused;          /* free or slab: the kernel refused its last purge */
    uint16_t nfree;           /* slab: free objects */
    uint16_t nobjs;           /* slab: objects in all */
    uint32_t ndirty;          /* free: pages that may be resident */
    uint32_t list_idx;        /* free: which heap list it is on */
    uint32_t refused_round;   /* free, refused: the heap's purge_round then */
    uint64_t free_since_ns;   /* free: when it became dirty (or muzzy);
                                 slab: when an object was last freed into it */
    uint64_t purged_pages;    /* slab: bit k set = page k purged while free */
    ebb_arena_t *arena;       /* slab: the arena whose bin it belongs to */
    uint64_t bitmap[EBB_SLAB_WORDS]; /* slab: bit i set = object i free */
};

/*
 * Segment layout (EBB_SEG bytes, EBB_SEG-aligned):
 *
 *   +--------------------+ seg
 *   | header: magic, kind|
 *   | page_class[]       |  one byte a page: class of the object there (0: none)
 *   | spans[]            |  one pointer a page: its span (see invariants)
 *   +--------------------+ seg + EBB_SEG_HDR_PAGES * EBB_PAGE
 *   | span | span | ...  |  slabs, large objects, free spans
 *   +--------------------+ seg + EBB_SEG
 *
 * A huge object's mapping starts with the same header (kind HUGE, page_class
 * all 0), and the object follows at seg + huge_offset, which is at most
 * EBB_SEG, so ((p - 1) & ~EBB_SEG_MASK) finds the header for every pointer
 * ebbmalloc returns. Only the first page of a huge header is touched.
 */
enum { EBB_SEG_NORMAL = 0x5e6, EBB_SEG_HUGE = 0x4a6e, EBB_SEG_HUGE_CACHED = 0x4a6c };
#define EBB_SEG_MAGIC 0xebbebb5e6ebbull

struct ebb_segment_s {
    uint64_t magic;
    uint32_t kind;
    uint32_t huge_offset;     /* huge: object at seg + huge_offset */
    ebb_arena_t *arena;       /* normal: owner */
    ebb_segment_t *next, *prev; /* normal: the arena's segment list */
    size_t huge_map_len;      /* huge: length of the mapping from huge_base */
    void *huge_base;          /* huge: start of the mapping (seg: the slop is trimmed) */
    size_t huge_size;         /* huge: usable bytes */
    uint32_t nfree_pages;     /* normal: free pages in the segment */
    uint32_t pad;
    uint8_t page_class[EBB_SEG_PAGES + 1];
    ebb_span_t *spans[EBB_SEG_PAGES] EBB_ALIGNED(64);
};
#define EBB_SEG_HDR_PAGES ((sizeof(ebb_segment_t) + EBB_PAGE - 1) / EBB_PAGE)
#define EBB_SEG_FIRST_PAGE EBB_SEG_HDR_PAGES
_Static_assert(__builtin_offsetof(ebb_segment_t, page_class) + EBB_SEG_PAGES + 1 <= 4096,
               "a huge object's header must fit in its first page");

EBB_INLINE ebb_segment_t *ebb_ptr_segment(const void *p) {
    return (ebb_segment_t *)(((uintptr_t)p - 1) & ~(uintptr_t)EBB_SEG_MASK);
}
EBB_INLINE size_t ebb_ptr_page(const ebb_segment_t *seg, const void *p) {
    return ((uintptr_t)p - (uintptr_t)seg) >> EBB_PAGE_SHIFT;
}
EBB_INLINE uintptr_t ebb_span_addr(const ebb_span_t *s) {
    return (uintptr_t)s->seg + ((uintptr_t)s->first << EBB_PAGE_SHIFT);
}

/* ---- page heap (page_heap.c) ---------------------------------------- */
#define EBB_HEAP_EXACT 128 /* lists 0..127: exact page counts 1..128 */
#define EBB_HEAP_NLISTS (EBB_HEAP_EXACT + 4)
#define EBB_HEAP_SPARE_MAX 4 /* wholly free segments an arena keeps mapped */

typedef struct ebb_heap_s {
    ebb_lock_t lock;
    ebb_span_t *lists[EBB_HEAP_NLISTS];
    uint64_t nonempty[(EBB_HEAP_NLISTS + 63) / 64];
    ebb_segment_t *segments;    /* all segments of the arena */
    size_t nspare;              /* wholly free segments (kept for reuse) */
    ebb_span_t *span_pool;      /* recycled span structs */
    size_t nsegments;
    size_t active_pages;        /* pages in slabs and large objects */
    size_t free_pages;          /* pages in free spans */
    size_t dirty_pages;         /* of those, possibly resident */
    size_t purged_bytes;        /* cumulative */
    size_t purge_calls;         /* cumulative */
    size_t purge_refused;       /* cumulative: calls the kernel refused */
    uint32_t purge_round;       /* ebb__heap_purge calls so far */
    size_t dirty_cap_pages;     /* above this, wake the purger at once */
    size_t active_peak_pages;   /* most active pages since peak_since_ns */
    size_t active_peak_prev;    /* ... in the decay period before that */
    uint64_t peak_since_ns;     /* decay.c starts a period each decay_ms */
    size_t meta_bytes;          /* span structs taken from base for this heap */
    bool kicked;                /* the purger was woken for the cap */
    unsigned purge_list;        /* the purge's place (list, span) while it has the lock dropped */
    ebb_span_t *purge_next;
} ebb_heap_t;

void ebb__heap_init(ebb_heap_t *h);
/* pre: h->lock held. Returns a span of npages (kind/class set by caller via
 * ebb__heap_mark), or NULL when out of memory. align_pages: power of two. */
ebb_span_t *ebb__heap_alloc(ebb_heap_t *h, ebb_arena_t *a, size_t npages, size_t align_pages);
/* pre: h->lock held. Returns span's pages to the heap, coalescing. A
 * segment that became wholly free beyond the spares is given up: the
 * caller calls ebb__heap_unmap_released once it has dropped the lock. */
void ebb__heap_free(ebb_heap_t *h, ebb_span_t *s);
/* Unmap the segments heaps gave up (no heap lock held): as many as the
 * calling thread gave up, or (all: the purger) every one. */
void ebb__heap_unmap_released(bool all);
/* Out of address space (RLIMIT_AS, strict overcommit): unmap every wholly
 * free segment of every heap, spares and retained ones alike. No lock
 * held. Returns bytes unmapped. */
size_t ebb__heap_release_spares(void);
void ebb__heap_prefork(void);
void ebb__heap_postfork_parent(void);
void ebb__heap_postfork_child(void);
/* pre: h->lock held. Shrink an allocated span to npages, freeing the tail. */
void ebb__heap_shrink(ebb_heap_t *h, ebb_span_t *s, size_t npages);
/* pre: h->lock held. Grow an allocated span in place to npages if the pages
 * after it are free. Returns true on success. */
bool ebb__heap_grow(ebb_heap_t *h, ebb_span_t *s, size_t npages);
/* What to purge (decay.c builds it from the options and the clock). */
typedef struct ebb_purge_policy_s {
    uint64_t now_ns;           /* the time of this round (the second stage starts then) */
    uint64_t cutoff_ns;        /* dirty since at or before this: due */
    uint64_t muzzy_cutoff_ns;  /* muzzy since at or before this: due */
    uint64_t decay_ns, muzzy_ns; /* the stages' lengths (muzzy_ns 0: one stage) */
    size_t keep_dirty_pages;   /* above this, purge whatever is dirty */
    bool force;                /* purge everything dirty now */
} ebb_purge_policy_t;

/* A span or slab whose purge the kernel refused is stamped anew and waits
 * this long at least before the next try, whatever the decay: with
 * decay_ms:0 it would be due again at once, and the purger would spin. */
#define EBB_REFUSED_RETRY_NS ((uint64_t)1000000000)

/* When memory stamped since_ns, waiting wait_ns, falls due. */
static inline uint64_t ebb_purge_due_ns(uint64_t since_ns, uint64_t wait_ns, bool refused) {
    if (refused && wait_ns < EBB_REFUSED_RETRY_NS)
        wait_ns = EBB_REFUSED_RETRY_NS;
    return since_ns + wait_ns;
}
/* Takes h->lock itself, in short batches; madvise runs unlocked. Lowers
 * *next_due_ns to the time the next dirty span falls due. Returns bytes. */
size_t ebb__heap_purge(ebb_heap_t *h, const ebb_purge_policy_t *pol, uint64_t *next_due_ns);
extern bool ebb__heap_retain; /* option retain: keep every free segment mapped */
/* Set seg->spans / page_class for an allocated span. */
void ebb__heap_mark(ebb_span_t *s, uint8_t kind, uint8_t sclass);
bool ebb__heap_is_valid(ebb_heap_t *h);

/* ---- arenas (arena.c) ---------------------------------------------- */
enum { EBB_SLAB_NONFULL = 1, EBB_SLAB_PURGING = 2 }; /* a slab's on_list */

typedef struct ebb_bin_s {
    ebb_lock_t lock;
    ebb_span_t *cur;       /* slab being carved */
    ebb_span_t *nonfull;   /* other slabs with free objects (doubly linked) */
    ebb_span_t *purge_next; /* the purge's place in nonfull while it has the lock dropped */
    size_t nslabs;
    size_t nout;           /* objects out of slabs (in use or in caches) */
    uint64_t nrefills, nflushes;
} EBB_ALIGNED(EBB_CACHELINE) ebb_bin_t;

/*
 * Arenas share page heaps in groups of arenas_per_heap (default 8: arenas
 * 0..7 use arena 0's, 8..15 arena 8's, ...): `pages` is the arena whose heap holds
 * this one's slabs and large objects. Free pages then serve any arena of the
 * group at once instead of waiting for the decay in the arena that freed
 * them; bins (and their locks) stay per arena. A segment's `arena` is the
 * owner of its heap; a slab's span names the arena of its bin.
 */
struct ebb_arena_s {
    unsigned index;
    _Atomic unsigned nthreads;
    ebb_arena_t *pages;         /* the arena whose page heap this one uses */
    ebb_heap_t heap EBB_ALIGNED(EBB_CACHELINE); /* used when pages == this arena */
    size_t large_allocated;     /* bytes in large objects of the group (heap lock) */
    _Atomic size_t slab_purged_pages; /* slab pages of the heap purged now (not resident) */
    _Atomic size_t slab_purged_bytes; /* cumulative */
    _Atomic size_t slab_purge_calls;  /* cumulative */
    _Atomic size_t slab_purge_refused; /* cumulative: calls the kernel refused */
    uint64_t large_nmalloc, large_nfree;
    ebb_bin_t bins[EBB_NSMALL + 1];
};

extern ebb_arena_t *ebb__arenas[EBB_MAX_ARENAS];
extern unsigned ebb__narenas;       /* the cap */
extern _Atomic unsigned ebb__narenas_made;

ebb_arena_t *ebb__arena_get(unsigned i); /* creates it on first use; NULL on OOM */
ebb_arena_t *ebb__arena_choose(void);    /* the least loaded */
/* The next arena made so far at or after index *i (advanced past it), or
 * NULL: for (unsigned i = 0; (a = ebb__arena_next(&i)) != NULL;) */
ebb_arena_t *ebb__arena_next(unsigned *i);
/* Take up to n objects of small class c; link them into *head (NULL
 * terminated). Returns the number taken (0: out of memory). */
unsigned ebb__arena_refill(ebb_arena_t *a, unsigned c, void **head, unsigned n);
/* Return a NULL-terminated list of small objects of class c to their slabs,
 * whatever arena owns each. */
void ebb__arena_flush(unsigned c, void *head);
void *ebb__arena_alloc_small(ebb_arena_t *a, unsigned c);
void ebb__arena_free_small(void *p);
void *ebb__arena_alloc_large(ebb_arena_t *a, size_t size, size_t align, bool zero);
void ebb__arena_free_large(ebb_segment_t *seg, void *p);
size_t ebb__arena_large_usable(ebb_segment_t *seg, const void *p);
/* Resize a large object in place; returns true when p now holds size bytes. */
bool ebb__arena_large_resize(ebb_segment_t *seg, void *p, size_t size);
size_t ebb__arena_purge(ebb_arena_t *a, const ebb_purge_policy_t *pol, uint64_t *next_due_ns);

/* ---- thread caches (tcache.c) --------------------------------------- */
typedef struct ebb_tbin_s {
    void *head;       /* free list threaded through the objects */
    uint32_t count;   /* objects on the list */
    uint32_t max;     /* the list's bound now, <= limit; 0: not caching */
    uint64_t nmalloc; /* allocations served from this class */
    uint32_t limit;   /* the most max may grow to: the budget's share */
    uint32_t pad;     /* 32 bytes: the bin address is one shift away */
} ebb_tbin_t;
_Static_assert(sizeof(ebb_tbin_t) == 32, "thread-cache bins are 32 bytes");
#define EBB_TBIN_START 2 /* a bin's max when it starts, or restarts after a drain */
/* A bin's max: the purger lowers it from another thread (idle drain). */
EBB_INLINE uint32_t ebb_tbin_max(const ebb_tbin_t *b) {
    return __atomic_load_n(&b->max, __ATOMIC_RELAXED);
}

enum { EBB_TC_UNINIT = 0, EBB_TC_ACTIVE = 1, EBB_TC_BUSY = 2, EBB_TC_DEAD = 3 };

/*
 * Thread cache. Invariants: for every class c, count == length of the list
 * at head, count <= max; every object on the list is of class c and
 * counted in its bin's nout. Static placeholders (uninitialised, busy,
 * dead) have max == 0 everywhere, so the fast paths always miss on them.
 */
typedef struct ebb_tcache_s ebb_tcache_t;
struct ebb_tcache_s {
    ebb_tbin_t bins[EBB_NCLASSES];
    uint32_t state;
    uint32_t ticks;
    ebb_arena_t *arena;
    ebb_tcache_t *next, *prev; /* registry of live caches */
    uint64_t nlarge_malloc;    /* large and huge allocations by this thread */
    _Atomic uint32_t drain;    /* set by the purger: flush at the next slow call */
    uint64_t seen_nmalloc;     /* purger's view: allocations at last look */
    uint64_t idle_since_ns;    /* purger's view: no allocation since */
    size_t budget;             /* bytes this cache may hold (tcache.c) */
    uint32_t epoch;            /* the thread-count epoch budget is for */
    _Atomic uint32_t in_batch; /* a batch is between a cache and the bins (fork waits) */
};

extern __thread ebb_tcache_t *ebb__tls_tcache __attribute__((tls_model("initial-exec")));
extern ebb_tcache_t ebb__tcache_uninit;

/*
 * Double frees and writes after free, caught where the caches hand an
 * object out. Every free small object on its way into a thread's or a
 * CPU's cache has the free mark in its second word (slab_take marks what
 * a refill takes, the frees what they cache); every small allocation
 * checks it and clears it. An object freed twice is on a cache's list
 * twice: the first allocation of it clears the mark, so the second finds
 * it gone (or the program's data there) and stops the process before two
 * owners share it -- and before the list link the program has since
 * overwritten is followed. So does an object written after its free.
 * The check is on a line the allocation reads anyway (the list link), so
 * it costs no cache miss; a check at free, as glibc's, reads the object
 * there: larson/T:2 took 12% longer so. The mark is odd, so no pointer a
 * program keeps matches it, and random per process (getrandom). Objects
 * that reach their slab are checked there too (slab_put: its bitmap).
 */
extern EBB_HIDDEN uintptr_t ebb__free_mark;
EBB_INLINE uintptr_t *ebb_mark_word(void *p) { return (uintptr_t *)p + 1; }
void ebb__free_mark_init(void);
__attribute__((noreturn, cold)) void ebb__cached_object_changed(void);
/* p, just taken from a cache for the caller: check and clear its mark. */
EBB_INLINE void *ebb_take_marked(void *p) {
    if (ebb_unlikely(*ebb_mark_word(p) != ebb__free_mark))
        ebb__cached_object_changed();
    *ebb_mark_word(p) = 0;
    return p;
}

ebb_tcache_t *ebb__tcache_get_slow(void); /* create or return a placeholder */
/* Around every batch of objects a thread moves between its caches (thread
 * or CPU) and the bins: while a batch is out, only this thread knows where
 * its objects are, and a child forked then would lose them. fork waits
 * until no batch is out and holds new ones back until it is done
 * (ebb__tcache_fork_gate). pre: tc is the caller's active cache; no
 * allocator lock held. */
void ebb__batch_begin(ebb_tcache_t *tc);
EBB_INLINE void ebb_batch_end(ebb_tcache_t *tc) {
    atomic_store_explicit(&tc->in_batch, 0, memory_order_release);
}
/* prefork, before any other lock but init's: hold new batches back and
 * wait for those out (1 s at most in all: a fork from a signal handler
 * may have interrupted one that never ends). */
void ebb__tcache_fork_gate(void);
void *ebb__tcache_refill_alloc(ebb_tcache_t *tc, unsigned c);
void ebb__tcache_overflow_free(ebb_tcache_t *tc, unsigned c, void *p);
void ebb__tcache_flush_all(ebb_tcache_t *tc);
void ebb__tcache_thread_exit(void *tc);
/* Ask the caches of threads that made no allocation for idle_ns to drain
 * themselves at their next call (see tcache.c). */
void ebb__tcache_idle_scan(uint64_t now, uint64_t idle_ns);
void ebb__tcache_drain_if_asked(ebb_tcache_t *tc);
size_t ebb__tcache_cached_bytes(void);
/* For statistics (racy counts): add the bytes each live cache holds to
 * per_arena[its thread's arena index] for indexes below n; add each class's
 * cached objects to counts[c]. */
void ebb__tcache_cached_bytes_by_arena(uint64_t per_arena[], unsigned n);
void ebb__tcache_cached_counts(uint64_t counts[]);
unsigned ebb__tcache_count(void);
void ebb__tcache_prefork(void);
void ebb__tcache_postfork_parent(void);
void ebb__tcache_postfork_child(void);

/* ---- CPU caches (cpucache.c) ----------------------------------------- */
#define EBB_MAX_CPU_CACHES 4096
/* Classes >= this are cached per CPU, not per thread (EBB_NSMALL + 1: none). */
extern unsigned ebb__cpucache_first;
/* Any thread may empty any CPU's cache (membarrier's rseq fence); else
 * only the background thread, moving from CPU to CPU. */
extern bool ebb__cpucache_fenced;
void ebb__cpucache_init(void);          /* after the options; may leave them off */
/* What malloc and free do when ebb_rseq_pop1 / ebb_rseq_push1 (rseq.h)
 * miss; tc is the caller's active cache. Refill: one object of class c
 * from arena a, and half the class's room into the CPU's cache (NULL:
 * OOM). Overflow: half the room back to the slabs, p in. */
void *ebb__cpucache_refill(ebb_tcache_t *tc, ebb_arena_t *a, unsigned c);
void ebb__cpucache_overflow(ebb_tcache_t *tc, unsigned c, void *p);
/* Empty every CPU's cache: fenced from where the caller runs, or moving
 * the caller from CPU to CPU (may_move: the background thread only); with
 * neither, only the cache of the caller's CPU. Under the decay lock but
 * for tests: fork waits for a drain under way by taking that lock. */
void ebb__cpucache_flush_all(bool may_move);
/* Empty the caches unused for idle_ns / 8 (fenced, or with may_move). */
void ebb__cpucache_idle_scan(uint64_t now, uint64_t idle_ns, bool may_move);
/* Bytes of free objects held; adds each class's objects to counts[c]
 * unless counts is NULL (racy reads: a statistic). */
size_t ebb__cpucache_cached(uint64_t counts[]);
/* Set what all CPUs' caches together may hold (the scan drains the
 * fullest above it); returns the previous cap. For tests. */
size_t ebb__cpucache_set_cap(size_t bytes);

/* ---- huge objects (huge.c) ------------------------------------------ */
void *ebb__huge_alloc(size_t size, size_t align, bool zero);
void ebb__huge_free(ebb_segment_t *seg);
void *ebb__huge_realloc(ebb_segment_t *seg, void *p, size_t size);
size_t ebb__huge_cache_flush(void); /* unmap every cached mapping; bytes */
/* Unmap cached mappings freed at or before cutoff; lower *next_due_ns to the
 * time the next one expires (given the decay). Returns bytes. */
size_t ebb__huge_cache_expire(uint64_t cutoff_ns, uint64_t decay_ns, uint64_t *next_due_ns);
void ebb__huge_prefork(void);
void ebb__huge_postfork_parent(void);
void ebb__huge_postfork_child(void);
extern _Atomic size_t ebb__huge_bytes, ebb__huge_count, ebb__huge_cached_bytes;

/* ---- metadata (base.c) ---------------------------------------------- */
/* The segment map: one bit for every EBB_SEG of the address space that holds
 * an ebbmalloc segment header, so any pointer can be tested safely. */
bool ebb__segmap_init(void);
void ebb__segmap_set(const void *seg, bool on);
bool ebb__segmap_test(const void *seg);
/* The highest segment header at or below addr's segment, or NULL. */
void *ebb__segmap_find_below(const void *addr);
/* Bytes unmapped so far (segments released, huge mappings). */
extern _Atomic size_t ebb__unmapped_bytes;
size_t ebb__base_used(void);
void *ebb__base_alloc(size_t size); /* zeroed, EBB_CACHELINE aligned; NULL on OOM */
ebb_span_t *ebb__span_new(ebb_heap_t *h); /* pre: h->lock held */
void ebb__span_delete(ebb_heap_t *h, ebb_span_t *s);
extern _Atomic size_t ebb__base_mapped;
void ebb__base_prefork(void);
void ebb__base_postfork_parent(void);
void ebb__base_postfork_child(void);

/* ---- decay and the background thread (decay.c, background.c) -------- */
extern _Atomic uint64_t ebb__last_purge_ns;
/* The policy at time now (force: purge everything dirty). */
ebb_purge_policy_t ebb__decay_policy(uint64_t now, bool force);
/* One round at time now: purge what is due in every arena and in the huge
 * cache, ask idle thread caches to drain, update the dirty caps. Returns
 * when the next work falls due (UINT64_MAX: nothing pending) and adds the
 * bytes purged to *purged. Only one thread runs it at a time; a concurrent
 * call returns at once with now + 1 ms. */
uint64_t ebb__decay_run(uint64_t now, bool force, size_t *purged);
/* Purge everything dirty now, waiting for a round under way. Bytes. */
size_t ebb__decay_purge_all(void);
/* Drain every CPU's cache (the background thread, for malloc_trim) under
 * the decay lock, which fork takes first: no fork splits a drain. */
void ebb__decay_drain_cpus(void);
extern _Atomic bool ebb__purge_yield; /* a fork waits: stop after this batch */
void ebb__decay_prefork(void);
void ebb__decay_postfork_parent(void);
void ebb__decay_postfork_child(void);
/* From allocation slow paths: run the decay when due and no background
 * thread does it. */
void ebb__decay_on_tick(void);
/* Start the background thread if it is wanted and safe now. pre: no lock held. */
void ebb__background_maybe_start(void);
bool ebb__background_running(void);
bool ebb__background_is_self(void); /* the calling thread is the background thread */
/* Have the background thread drain every CPU's cache (see cpucache.c) and
 * wait for it, timeout_ns at most; false when it is not running or did not
 * finish in time. */
bool ebb__background_drain_cpus(uint64_t timeout_ns);
void ebb__background_kick(void);
void ebb__background_postfork_child(void);
/* The background thread's cgroup pressure checks, for the statistics:
 * purges they forced, and the working set and limit of the last one. */
extern _Atomic uint64_t ebb__pressure_purges, ebb__cgroup_working_set, ebb__cgroup_limit;
/* Hook of the statistics page, when linked in. */
__attribute__((weak)) void ebb__stats_shm_tick(uint64_t now_ns);

/* ---- initialisation (init.c) ---------------------------------------- */
extern _Atomic bool ebb__initialized;
bool ebb__init_slow(void); /* false: could not initialise (out of memory) */
EBB_INLINE bool ebb_init(void) {
    return ebb_likely(atomic_load_explicit(&ebb__initialized, memory_order_acquire)) ||
           ebb__init_slow();
}
extern _Atomic size_t ebb__segments_mapped; /* bytes of normal segments mapped */

/* ---- messages (conf.c) ---------------------------------------------- */
/* Format into buf without allocating: %s, %d (int), %u (unsigned),
 * %zu (size_t), %lld, %llu, %%. Returns the length written. */
size_t ebb__fmt(char *buf, size_t cap, const char *fmt, ...);
/* "ebbmalloc: " + formatted text + newline, to stderr in one write. */
void ebb__warn(const char *fmt, ...);

/* ---- entry points shared by malloc.c and the override layer --------- */
void *ebb__alloc_aligned(size_t align, size_t size, bool zero);

/* ---- statistics and fork (stats.c, arena.c) -------------------------- */
/* Per-arena figures, taken under the arena's locks one at a time. */
typedef struct ebb_arena_figures_s {
    size_t slab_bytes_out; /* bytes of small objects out of slabs (live or cached) */
    size_t large_bytes;
    size_t active_pages, free_pages, dirty_pages, nsegments;
    size_t purged_bytes, purge_calls, purge_refused;
} ebb_arena_figures_t;
void ebb__arena_figures(ebb_arena_t *a, ebb_arena_figures_t *f);
uint64_t ebb__class_nmalloc(unsigned c);
void ebb__arenas_prefork(void);
void ebb__arenas_postfork_parent(void);
void ebb__arenas_postfork_child(void);

#endif /* EBB_INTERNAL_H */
