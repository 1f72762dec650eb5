/*
 * The malloc family: fast paths and their slow paths.
 *
 * The fast paths (ebb_malloc, ebb_free) are a handful of instructions with
 * one unlikely branch: a hit or a miss in the thread cache. They take no
 * lock and do no atomic read-modify-write. Everything else -- the first call
 * of a thread, initialisation, refill and flush, large and huge objects --
 * is in noinline slow paths, so the fast paths build no stack frame.
 */
#include "conf.h"
#include "internal.h"
#include "rseq.h"

/* ---- slow paths ------------------------------------------------------- */
/* Every so many slow-path calls of a thread: start the background thread
 * when it is due, or run the decay when there is none. No lock is held. */
static void slow_tick(ebb_tcache_t *tc) {
    if (tc->state == EBB_TC_ACTIVE && ++tc->ticks % 16 != 0)
        return;
    ebb__background_maybe_start();
    ebb__decay_on_tick();
}

static ebb_arena_t *arena_of(ebb_tcache_t *tc) {
    return tc->arena ? tc->arena : ebb__arena_get(0);
}

static void *oom(void) {
    errno = ENOMEM;
    return NULL;
}

/* An object of a class cached per CPU (the thread's cache is active): a
 * hit is one restartable sequence; a miss (popped: NULL, or 1 on a CPU
 * without a cache) refills the CPU's cache from the arena, or takes from
 * the arena directly, and ticks. */
static EBB_NOINLINE void *cpu_alloc_miss(ebb_tcache_t *tc, unsigned c, void *popped) {
    ebb_arena_t *a = arena_of(tc);
    void *p;
    if (popped == NULL)
        p = ebb__cpucache_refill(tc, a, c);
    else
        p = a ? ebb__arena_alloc_small(a, c) : NULL;
    slow_tick(tc);
    if (p == NULL)
        return oom();
    tc->bins[c].nmalloc++;
    return ebb_take_marked(p); /* marked by the refill (slab_take) */
}

EBB_INLINE void *cpu_alloc(ebb_tcache_t *tc, unsigned c) {
    void *p = ebb_rseq_pop1(c);
    if (ebb_unlikely((uintptr_t)p <= 1))
        return cpu_alloc_miss(tc, c, p);
    tc->bins[c].nmalloc++;
    return ebb_take_marked(p);
}

/* An object of small class c, from the cache or its arena. */
static void *small_alloc(unsigned c) {
    void *p;
    ebb_tcache_t *tc = ebb__tcache_get_slow();
    ebb__tcache_drain_if_asked(tc);
    if (c >= ebb__cpucache_first && tc->state == EBB_TC_ACTIVE) {
        return cpu_alloc(tc, c);
    } else if (tc->state == EBB_TC_ACTIVE && ebb_tbin_max(&tc->bins[c]) != 0) {
        ebb_tbin_t *b = &tc->bins[c];
        p = b->head;
        if (p != NULL) {
            b->head = *(void **)p;
            b->count--;
            b->nmalloc++;
            return ebb_take_marked(p);
        }
        p = ebb__tcache_refill_alloc(tc, c);
    } else {
        ebb_arena_t *a = arena_of(tc);
        p = a ? ebb__arena_alloc_small(a, c) : NULL;
        if (tc->state == EBB_TC_ACTIVE)
            tc->bins[c].nmalloc++;
    }
    return p ? ebb_take_marked(p) : oom(); /* marked by slab_take */
}

static void *large_or_huge_alloc(size_t size, size_t align, bool zero) {
    ebb_tcache_t *tc = ebb__tcache_get_slow();
    void *p = NULL;
    if (size <= EBB_LARGE_MAX && align < EBB_SEG / 4) {
        ebb_arena_t *a = arena_of(tc);
        if (a != NULL)
            p = ebb__arena_alloc_large(a, size, align, zero);
    }
    if (p == NULL)
        p = ebb__huge_alloc(size, align, zero);
    if (tc->state == EBB_TC_ACTIVE)
        tc->nlarge_malloc++;
    return p ? p : oom();
}

static EBB_NOINLINE void *malloc_slow(size_t size, bool zero) {
    if (!ebb_init())
        return oom();
    void *p;
    if (size > EBB_SMALL_MAX) {
        p = large_or_huge_alloc(size, 0, zero);
    } else {
        p = small_alloc(ebb_size_class(size));
        if (p != NULL && zero)
            memset(p, 0, size);
    }
    slow_tick(ebb__tls_tcache);
    return p;
}

static void free_slow_inner(void *p, ebb_segment_t *seg, unsigned c);

static EBB_NOINLINE void free_slow(void *p, ebb_segment_t *seg, unsigned c) {
    free_slow_inner(p, seg, c);
    slow_tick(ebb__tls_tcache);
}

static void free_slow_inner(void *p, ebb_segment_t *seg, unsigned c) {
    if (c == 0) {
        EBB_CHECK(seg->magic == EBB_SEG_MAGIC && seg->kind == EBB_SEG_HUGE &&
                      (char *)p == (char *)seg + seg->huge_offset,
                  "free(): invalid pointer");
        ebb__huge_free(seg);
        return;
    }
    if (c > EBB_NSMALL) {
        ebb__arena_free_large(seg, p);
        return;
    }
    /* A thread whose very first call is a free was most likely handed the
     * object by the thread that allocated it. Caching it would give it back
     * to this thread's next malloc, on cache lines the other thread's
     * objects share (false sharing, Hoard's cache-scratch): return it to
     * its slab instead, and let this thread's cache fill from its arena. */
    bool first_call = ebb__tls_tcache->state == EBB_TC_UNINIT;
    ebb_tcache_t *tc = ebb__tcache_get_slow();
    ebb__tcache_drain_if_asked(tc);
    if (tc->state == EBB_TC_ACTIVE && ebb_tbin_max(&tc->bins[c]) != 0 && !first_call) {
        ebb_tbin_t *b = &tc->bins[c];
        if (b->count < ebb_tbin_max(b)) { /* the bound was lowered and restored */
            *(void **)p = b->head;
            *ebb_mark_word(p) = ebb__free_mark;
            b->head = p;
            b->count++;
        } else {
            ebb__tcache_overflow_free(tc, c, p);
        }
        return;
    }
    ebb__arena_free_small(p);
}

/* ---- the classes cached per CPU ---------------------------------------- */
/* malloc and free of a class cached per CPU leave the fast paths for these
 * (the thread cache's bins of those classes are always empty), not for the
 * general slow paths: a hit is one restartable sequence, inlined (rseq.h),
 * in a function that needs no frame, and does not tick. Through the slow
 * paths, whose frames save six registers, and a call to the sequence, a
 * 2 KiB malloc+free pair took 7.3 ns against 5.4 (build/bench/ebb_instr_pairs,
 * medians of 3). */
static EBB_NOINLINE void *cpu_malloc(size_t size, unsigned c) {
    ebb_tcache_t *tc = ebb__tls_tcache;
    if (ebb_unlikely(tc->state != EBB_TC_ACTIVE))
        return malloc_slow(size, false); /* first call of the thread, or its exit */
    return cpu_alloc(tc, c);
}

static EBB_NOINLINE void cpu_free(void *p, ebb_segment_t *seg, unsigned c) {
    ebb_tcache_t *tc = ebb__tls_tcache;
    if (ebb_unlikely(tc->state != EBB_TC_ACTIVE)) {
        free_slow(p, seg, c);
        return;
    }
    /* The mark goes first: once pushed, the object is the CPU's. */
    *ebb_mark_word(p) = ebb__free_mark;
    long r = ebb_rseq_push1(c, p);
    if (ebb_likely(r == 1))
        return;
    if (r == 0)
        ebb__cpucache_overflow(tc, c, p);
    else /* a CPU without a cache */
        ebb__arena_free_small(p);
    slow_tick(tc);
}

/* ---- fast paths ------------------------------------------------------- */
EBB_EXPORT void *ebb_malloc(size_t size) {
    if (ebb_likely(size <= EBB_LUT_MAX)) {
        size_t c = ebb__class_lut[(size + 15) >> 4];
        ebb_tbin_t *b = &ebb__tls_tcache->bins[c];
        __asm__("" : "+r"(b)); /* keep b in a register: one address for every field */
        void *p = b->head;
        if (ebb_likely(p != NULL)) {
            void *next = *(void **)p;
            ebb_take_marked(p);
            b->nmalloc++;
            b->count--;
            b->head = next;
            return p;
        }
        if (c >= ebb__cpucache_first)
            return cpu_malloc(size, (unsigned)c);
    }
    return malloc_slow(size, false);
}

EBB_EXPORT void ebb_free(void *p) {
    if (ebb_unlikely(p == NULL))
        return;
    ebb_segment_t *seg = ebb_ptr_segment(p);
    unsigned c = seg->page_class[ebb_ptr_page(seg, p)];
    ebb_tbin_t *b = &ebb__tls_tcache->bins[c];
    /* max is lowered by the purger to ask an idle cache to drain. */
    if (ebb_likely(b->count < ebb_tbin_max(b))) {
        *(void **)p = b->head;
        *ebb_mark_word(p) = ebb__free_mark;
        b->head = p;
        b->count++;
        return;
    }
    if (c >= ebb__cpucache_first && c <= EBB_NSMALL)
        cpu_free(p, seg, c);
    else
        free_slow(p, seg, c);
}

/* ---- the rest of the family ------------------------------------------- */
EBB_EXPORT void *ebb_calloc(size_t count, size_t size) {
    size_t total;
    if (ebb_unlikely(__builtin_mul_overflow(count, size, &total)))
        return oom();
    if (ebb_likely(total <= EBB_SMALL_MAX)) {
        void *p = ebb_malloc(total);
        if (ebb_likely(p != NULL))
            memset(p, 0, total);
        return p;
    }
    return malloc_slow(total, true);
}

EBB_EXPORT size_t ebb_usable_size(const void *p) {
    if (p == NULL)
        return 0;
    ebb_segment_t *seg = ebb_ptr_segment(p);
    unsigned c = seg->page_class[ebb_ptr_page(seg, p)];
    if (c != 0 && c <= EBB_NSMALL)
        return ebb_class_size(c);
    if (c != 0)
        return ebb__arena_large_usable(seg, p);
    EBB_CHECK(seg->magic == EBB_SEG_MAGIC && seg->kind == EBB_SEG_HUGE,
              "malloc_usable_size(): invalid pointer");
    return seg->huge_size;
}

EBB_EXPORT void *ebb_realloc(void *p, size_t size) {
    if (p == NULL)
        return ebb_malloc(size);
    if (size == 0) { /* glibc: frees and returns NULL */
        ebb_free(p);
        return NULL;
    }
    ebb_segment_t *seg = ebb_ptr_segment(p);
    unsigned c = seg->page_class[ebb_ptr_page(seg, p)];
    size_t old = ebb_usable_size(p);
    if (c != 0 && c <= EBB_NSMALL) {
        /* Same class, or a shrink that wastes at most half: stay. */
        if (size <= old && (size > old / 2 || old <= 16))
            return p;
    } else if (c != 0) {
        if (size > EBB_SMALL_MAX && size <= EBB_LARGE_MAX &&
            ebb__arena_large_resize(seg, p, size))
            return p;
    } else if (size > EBB_LARGE_MAX) {
        void *q = ebb__huge_realloc(seg, p, size);
        if (q != NULL)
            return q;
    }
    void *q = ebb_malloc(size);
    if (q == NULL)
        return NULL; /* errno is ENOMEM; p is untouched */
    memcpy(q, p, old < size ? old : size);
    ebb_free(p);
    return q;
}

/* Alignments the small classes serve (slabs start on a page). */
#define ALIGNED_SMALL_MAX ((size_t)32 << (EBB_ALIGNED_KINDS - 1))
_Static_assert(ALIGNED_SMALL_MAX <= EBB_PAGE, "slabs start on a page");

/* The small class that serves size bytes aligned to align (a power of two,
 * 32 B .. ALIGNED_SMALL_MAX), or 0. pre: initialised. */
static unsigned aligned_class(size_t size, size_t align) {
    unsigned k = (unsigned)__builtin_ctzll(align) - 5;
    return ebb__class_aligned[ebb_size_class(size > align ? size : align)][k];
}

void *ebb__alloc_aligned(size_t align, size_t size, bool zero) {
    if (align <= EBB_MIN_ALIGN)
        return zero ? ebb_calloc(1, size) : ebb_malloc(size);
    /* The common case as malloc's: a class from a table, popped from the
     * thread's cache or its CPU's (an active cache: initialised). */
    ebb_tcache_t *tc = ebb__tls_tcache;
    unsigned c;
    if (ebb_likely(align <= ALIGNED_SMALL_MAX && size <= EBB_SMALL_MAX && tc->state == EBB_TC_ACTIVE) &&
        (c = aligned_class(size, align)) != 0) {
        ebb_tbin_t *b = &tc->bins[c];
        void *p = b->head;
        if (p != NULL) {
            b->head = *(void **)p;
            b->count--;
            b->nmalloc++;
            p = ebb_take_marked(p);
        } else {
            p = c >= ebb__cpucache_first ? cpu_alloc(tc, c) : small_alloc(c);
        }
        if (p != NULL && zero)
            memset(p, 0, size);
        return p;
    }
    if (!ebb_init())
        return oom();
    if (size > PTRDIFF_MAX || align > PTRDIFF_MAX / 2 + 1)
        return oom();
    if (align <= ALIGNED_SMALL_MAX && size <= EBB_SMALL_MAX && (c = aligned_class(size, align)) != 0) {
        void *p = small_alloc(c);
        if (p != NULL && zero)
            memset(p, 0, size);
        return p;
    }
    if (size == 0)
        size = 1;
    return large_or_huge_alloc(size, align, zero);
}

EBB_EXPORT void *ebb_aligned_alloc(size_t align, size_t size) {
    if (!ebb_is_pow2(align)) {
        errno = EINVAL;
        return NULL;
    }
    return ebb__alloc_aligned(align, size, false);
}

EBB_EXPORT int ebb_posix_memalign(void **out, size_t align, size_t size) {
    if (align < sizeof(void *) || !ebb_is_pow2(align))
        return EINVAL;
    int saved = errno;
    void *p = ebb__alloc_aligned(align, size, false);
    errno = saved;
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

EBB_EXPORT bool ebb_owns(const void *p) {
    if (p == NULL || !atomic_load_explicit(&ebb__initialized, memory_order_acquire))
        return false;
    /* The nearest header at or below p: a huge object spans segments. */
    ebb_segment_t *seg = ebb__segmap_find_below((const char *)p - 1);
    if (seg == NULL || seg->magic != EBB_SEG_MAGIC)
        return false;
    const char *c = p;
    if (seg->kind == EBB_SEG_HUGE)
        return c >= (const char *)seg + seg->huge_offset &&
               c < (const char *)seg + seg->huge_offset + seg->huge_size;
    if (seg->kind != EBB_SEG_NORMAL || c >= (const char *)seg + EBB_SEG)
        return false;
    size_t page = ebb_ptr_page(seg, p);
    if (page < EBB_SEG_FIRST_PAGE)
        return false;
    /* Entries of interior pages may be stale: check the span's range. */
    const ebb_span_t *s = seg->spans[page];
    return s != NULL && s->seg == seg && page >= s->first && page < s->first + s->npages &&
           (s->kind == EBB_SPAN_SLAB || s->kind == EBB_SPAN_LARGE);
}

EBB_EXPORT const char *ebb_version(void) { return EBB_VERSION_STRING; }

/* ---- the standard names ----------------------------------------------- */
#ifndef EBB_NO_OVERRIDE
#define EBB_ALIAS(target) __attribute__((alias(#target), used, visibility("default")))
void *malloc(size_t size) EBB_ALIAS(ebb_malloc);
void free(void *p) EBB_ALIAS(ebb_free);
void *calloc(size_t n, size_t size) EBB_ALIAS(ebb_calloc);
void *realloc(void *p, size_t size) EBB_ALIAS(ebb_realloc);
size_t malloc_usable_size(void *p) EBB_ALIAS(ebb_usable_size);
int posix_memalign(void **out, size_t align, size_t size) EBB_ALIAS(ebb_posix_memalign);
/* glibc's internal names, for programs that call them directly. */
void *__libc_malloc(size_t size) EBB_ALIAS(ebb_malloc);
void __libc_free(void *p) EBB_ALIAS(ebb_free);
void *__libc_calloc(size_t n, size_t size) EBB_ALIAS(ebb_calloc);
void *__libc_realloc(void *p, size_t size) EBB_ALIAS(ebb_realloc);
#endif
