/*
 * Statistics gathered from the arenas, thread caches and huge objects on
 * demand (ebb_summary, mallinfo, malloc_stats, malloc_info), and purging on
 * request (ebb_purge, malloc_trim). Nothing here is on a fast path.
 */
#include "conf.h"
#include "internal.h"

void ebb__arena_figures(ebb_arena_t *a, ebb_arena_figures_t *f) {
    memset(f, 0, sizeof(*f));
    for (unsigned c = 1; c <= EBB_NSMALL; c++) {
        ebb_lock(&a->bins[c].lock);
        f->slab_bytes_out += a->bins[c].nout * ebb_class_size(c);
        ebb_unlock(&a->bins[c].lock);
    }
    ebb_lock(&a->heap.lock);
    f->large_bytes = a->large_allocated;
    f->active_pages = a->heap.active_pages;
    f->free_pages = a->heap.free_pages;
    f->dirty_pages = a->heap.dirty_pages;
    f->nsegments = a->heap.nsegments;
    f->purged_bytes = a->heap.purged_bytes;
    f->purge_calls = a->heap.purge_calls;
    ebb_unlock(&a->heap.lock);
}

EBB_EXPORT void ebb_summary(ebb_summary_t *out) {
    memset(out, 0, sizeof(*out));
    if (!atomic_load_explicit(&ebb__initialized, memory_order_acquire))
        return;
    size_t out_bytes = 0, large = 0, active_pages = 0, dirty_pages = 0, purged = 0;
    for (unsigned i = 0; i < EBB_MAX_ARENAS; i++) {
        ebb_arena_t *a = __atomic_load_n(&ebb__arenas[i], __ATOMIC_ACQUIRE);
        if (a == NULL)
            continue;
        ebb_arena_figures_t f;
        ebb__arena_figures(a, &f);
        out_bytes += f.slab_bytes_out;
        large += f.large_bytes;
        active_pages += f.active_pages;
        dirty_pages += f.dirty_pages;
        purged += f.purged_bytes;
        out->narenas++;
    }
    size_t cached = ebb__tcache_cached_bytes();
    size_t huge = atomic_load_explicit(&ebb__huge_bytes, memory_order_relaxed);
    out->allocated = (out_bytes > cached ? out_bytes - cached : 0) + large + huge;
    out->active = (active_pages << EBB_PAGE_SHIFT) + huge;
    out->dirty = dirty_pages << EBB_PAGE_SHIFT;
    out->metadata = ebb__base_used();
    size_t huge_cached = atomic_load_explicit(&ebb__huge_cached_bytes, memory_order_relaxed);
    out->dirty += huge_cached;
    out->mapped = atomic_load_explicit(&ebb__segments_mapped, memory_order_relaxed) + huge + huge_cached +
                  atomic_load_explicit(&ebb__base_mapped, memory_order_relaxed);
    out->purged = purged;
    out->nthreads = ebb__tcache_count();
}

EBB_EXPORT void ebb_thread_flush(void) {
    ebb_tcache_t *tc = ebb__tls_tcache;
    if (tc->state == EBB_TC_ACTIVE)
        ebb__tcache_flush_all(tc);
}

EBB_EXPORT size_t ebb_purge(void) {
    if (!ebb_init())
        return 0;
    ebb_thread_flush();
    size_t n = ebb__huge_cache_flush();
    for (unsigned i = 0; i < EBB_MAX_ARENAS; i++) {
        ebb_arena_t *a = __atomic_load_n(&ebb__arenas[i], __ATOMIC_ACQUIRE);
        if (a != NULL)
            n += ebb__arena_purge(a, UINT64_MAX);
    }
    return n;
}
