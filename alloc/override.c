/*
 * The glibc malloc API beyond the core names (those are aliases at the end
 * of malloc.c): compiled only into the libraries that replace malloc.
 * glibc's semantics, including its extensions that programs and the JVM
 * call (malloc_trim, mallinfo, malloc_info, ...).
 */
#include <malloc.h>
#include <stdio.h>

#include "conf.h"
#include "internal.h"

#define EXPORT EBB_EXPORT

/* Declared here: glibc 2.36's headers lack some, or declare them elsewhere. */
void *aligned_alloc(size_t align, size_t size);
void free_sized(void *p, size_t size);
void free_aligned_sized(void *p, size_t align, size_t size);
void *__libc_memalign(size_t align, size_t size);
void *__libc_valloc(size_t size);
void *__libc_pvalloc(size_t size);

/* glibc's memalign: an alignment that is not a power of two is rounded up
 * to one; an impossible one is EINVAL. */
EXPORT void *memalign(size_t align, size_t size) {
    if (align > SIZE_MAX / 2 + 1) {
        errno = EINVAL;
        return NULL;
    }
    if (!ebb_is_pow2(align))
        align = align < EBB_MIN_ALIGN ? EBB_MIN_ALIGN : (size_t)1 << (64 - __builtin_clzll(align));
    return ebb__alloc_aligned(align, size, false);
}

EXPORT void *aligned_alloc(size_t align, size_t size) { return ebb_aligned_alloc(align, size); }

EXPORT void *valloc(size_t size) { return ebb__alloc_aligned(EBB_PAGE, size, false); }

EXPORT void *pvalloc(size_t size) {
    if (size > PTRDIFF_MAX) {
        errno = ENOMEM;
        return NULL;
    }
    size_t rounded = size ? ebb_align_up(size, EBB_PAGE) : EBB_PAGE;
    return ebb__alloc_aligned(EBB_PAGE, rounded, false);
}

EXPORT void *reallocarray(void *p, size_t n, size_t size) {
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return ebb_realloc(p, total);
}

/* C23. The sizes are hints ebbmalloc does not need. */
EXPORT void free_sized(void *p, size_t size) {
    (void)size;
    ebb_free(p);
}
EXPORT void free_aligned_sized(void *p, size_t align, size_t size) {
    (void)align;
    (void)size;
    ebb_free(p);
}

EXPORT void *__libc_memalign(size_t align, size_t size) { return memalign(align, size); }
EXPORT void *__libc_valloc(size_t size) { return valloc(size); }
EXPORT void *__libc_pvalloc(size_t size) { return pvalloc(size); }

/* Returns 1 when memory was given back to the OS, as glibc does. */
EXPORT int malloc_trim(size_t pad) {
    (void)pad;
    return ebb_purge() > 0;
}

/* glibc's parameters are accepted and have no effect: ebbmalloc's own
 * options (EBBMALLOC_CONF) replace them. Unknown ones fail, as in glibc. */
EXPORT int mallopt(int param, int value) {
    (void)value;
    switch (param) {
    case M_MXFAST: case M_TRIM_THRESHOLD: case M_TOP_PAD: case M_MMAP_THRESHOLD:
    case M_MMAP_MAX: case M_CHECK_ACTION: case M_PERTURB: case M_ARENA_TEST:
    case M_ARENA_MAX:
        return 1;
    default:
        return 0;
    }
}

static size_t clamp_int(size_t v) { return v > INT32_MAX ? INT32_MAX : v; }

EXPORT struct mallinfo2 mallinfo2(void) {
    struct mallinfo2 mi;
    memset(&mi, 0, sizeof(mi));
    ebb_summary_t s;
    ebb_summary(&s);
    mi.arena = s.mapped - atomic_load_explicit(&ebb__huge_bytes, memory_order_relaxed);
    mi.hblks = atomic_load_explicit(&ebb__huge_count, memory_order_relaxed);
    mi.hblkhd = atomic_load_explicit(&ebb__huge_bytes, memory_order_relaxed);
    mi.uordblks = s.allocated;
    mi.fordblks = s.mapped > s.allocated ? s.mapped - s.allocated : 0;
    mi.keepcost = s.dirty;
    mi.ordblks = s.narenas;
    return mi;
}

EXPORT struct mallinfo mallinfo(void) {
    struct mallinfo2 m2 = mallinfo2();
    struct mallinfo mi;
    memset(&mi, 0, sizeof(mi));
    mi.arena = (int)clamp_int(m2.arena);
    mi.ordblks = (int)clamp_int(m2.ordblks);
    mi.hblks = (int)clamp_int(m2.hblks);
    mi.hblkhd = (int)clamp_int(m2.hblkhd);
    mi.uordblks = (int)clamp_int(m2.uordblks);
    mi.fordblks = (int)clamp_int(m2.fordblks);
    mi.keepcost = (int)clamp_int(m2.keepcost);
    return mi;
}

/* Like glibc: per arena, then totals, on standard error. */
EXPORT void malloc_stats(void) {
    char buf[256];
    size_t n;
    if (!ebb_init())
        return;
    ebb_arena_t *a;
    for (unsigned i = 0; (a = ebb__arena_next(&i)) != NULL;) {
        ebb_arena_figures_t f;
        ebb__arena_figures(a, &f);
        n = ebb__fmt(buf, sizeof(buf),
                     "Arena %u:\nsystem bytes     = %zu\nin use bytes     = %zu\n", a->index,
                     f.nsegments * EBB_SEG, f.slab_bytes_out + f.large_bytes);
        ebb__os_write_err(buf, n);
    }
    ebb_summary_t s;
    ebb_summary(&s);
    n = ebb__fmt(buf, sizeof(buf),
                 "Total (incl. mmap):\nsystem bytes     = %zu\nin use bytes     = %zu\n"
                 "max mmap regions = %zu\nmax mmap bytes   = %zu\n",
                 s.mapped, s.allocated, atomic_load(&ebb__huge_count),
                 atomic_load(&ebb__huge_bytes));
    ebb__os_write_err(buf, n);
}

/* glibc's XML layout (version 1), one <heap> per arena. The text is built
 * in a local buffer and written with one fputs once no lock is held. */
EXPORT int malloc_info(int options, FILE *fp) {
    if (options != 0 || fp == NULL) {
        errno = EINVAL;
        return -1;
    }
    char buf[16384];
    size_t n = ebb__fmt(buf, sizeof(buf), "<malloc version=\"1\">\n");
    if (ebb_init()) {
        ebb_arena_t *a;
        for (unsigned i = 0; (a = ebb__arena_next(&i)) != NULL && n + 512 < sizeof(buf);) {
            ebb_arena_figures_t f;
            ebb__arena_figures(a, &f);
            n += ebb__fmt(buf + n, sizeof(buf) - n,
                          "<heap nr=\"%u\">\n<sizes>\n</sizes>\n"
                          "<total type=\"rest\" count=\"%zu\" size=\"%zu\"/>\n"
                          "<system type=\"current\" size=\"%zu\"/>\n"
                          "<system type=\"max\" size=\"%zu\"/>\n"
                          "<aspace type=\"total\" size=\"%zu\"/>\n"
                          "<aspace type=\"mprotect\" size=\"%zu\"/>\n</heap>\n",
                          a->index, f.free_pages ? (size_t)1 : 0, f.free_pages << EBB_PAGE_SHIFT,
                          f.nsegments * EBB_SEG, f.nsegments * EBB_SEG, f.nsegments * EBB_SEG,
                          f.nsegments * EBB_SEG);
        }
    }
    ebb_summary_t s;
    ebb_summary(&s);
    n += ebb__fmt(buf + n, sizeof(buf) - n,
                  "<total type=\"fast\" count=\"0\" size=\"0\"/>\n"
                  "<total type=\"rest\" count=\"0\" size=\"%zu\"/>\n"
                  "<total type=\"mmap\" count=\"%zu\" size=\"%zu\"/>\n"
                  "<system type=\"current\" size=\"%zu\"/>\n"
                  "<system type=\"max\" size=\"%zu\"/>\n"
                  "<aspace type=\"total\" size=\"%zu\"/>\n"
                  "<aspace type=\"mprotect\" size=\"%zu\"/>\n</malloc>\n",
                  s.dirty, atomic_load(&ebb__huge_count), atomic_load(&ebb__huge_bytes),
                  s.mapped, s.mapped, s.mapped, s.mapped);
    (void)n;
    return fputs(buf, fp) < 0 ? -1 : 0;
}
