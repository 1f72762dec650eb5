/*
 * Statistics gathered from the arenas, thread caches and huge objects on
 * demand (ebb_summary, mallinfo, malloc_stats, malloc_info), and purging on
 * request (ebb_purge, malloc_trim). Nothing here is on a fast path.
 */
#include "conf.h"
#include "internal.h"
#include "stats_shm.h"

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
    f->purge_refused = a->heap.purge_refused;
    ebb_unlock(&a->heap.lock);
}

EBB_EXPORT void ebb_summary(ebb_summary_t *out) {
    memset(out, 0, sizeof(*out));
    if (!atomic_load_explicit(&ebb__initialized, memory_order_acquire))
        return;
    size_t out_bytes = 0, large = 0, active_pages = 0, dirty_pages = 0, purged = 0;
    ebb_arena_t *a;
    for (unsigned i = 0; (a = ebb__arena_next(&i)) != NULL;) {
        ebb_arena_figures_t f;
        ebb__arena_figures(a, &f);
        out_bytes += f.slab_bytes_out;
        large += f.large_bytes;
        active_pages += f.active_pages;
        dirty_pages += f.dirty_pages;
        purged += f.purged_bytes + atomic_load_explicit(&a->slab_purged_bytes, memory_order_relaxed);
        out->narenas++;
    }
    size_t cached = ebb__tcache_cached_bytes() + ebb__cpucache_cached(NULL);
    size_t huge = atomic_load_explicit(&ebb__huge_bytes, memory_order_relaxed);
    out->allocated = (out_bytes > cached ? out_bytes - cached : 0) + large + huge;
    out->active = (active_pages << EBB_PAGE_SHIFT) + huge;
    out->dirty = dirty_pages << EBB_PAGE_SHIFT;
    out->metadata = ebb__base_used();
    size_t huge_cached = atomic_load_explicit(&ebb__huge_cached_bytes, memory_order_relaxed);
    out->dirty += huge_cached;
    out->mapped = atomic_load_explicit(&ebb__segments_mapped, memory_order_relaxed) + huge + huge_cached +
                  atomic_load_explicit(&ebb__base_mapped, memory_order_relaxed);
    out->purged = purged + atomic_load_explicit(&ebb__unmapped_bytes, memory_order_relaxed);
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
    if (!ebb__cpucache_fenced) /* only the background thread can empty other CPUs' caches */
        ebb__background_drain_cpus((uint64_t)1000 * 1000 * 1000); /* 1 s at most */
    return ebb__decay_purge_all();
}

/* ---- the shared statistics page (stats_shm.c) -------------------------- */

/* One arena's counters, and its objects out of slabs added to classes[c-1]. */
static void collect_arena(ebb_arena_t *a, ebb_stats_counters_t *s, ebb_stats_class_t *classes,
                          unsigned nclasses) {
    ebb_arena_figures_t f;
    ebb__arena_figures(a, &f);
    uint64_t objects = 0;
    for (unsigned c = 1; c <= EBB_NSMALL; c++) {
        ebb_lock(&a->bins[c].lock);
        size_t nout = a->bins[c].nout;
        ebb_unlock(&a->bins[c].lock);
        objects += nout;
        if (c <= nclasses)
            classes[c - 1].live_objects += nout;
    }
    ebb_lock(&a->heap.lock);
    s->large_nmalloc = a->large_nmalloc;
    s->large_nfree = a->large_nfree;
    s->metadata_bytes = a->heap.meta_bytes + sizeof(ebb_arena_t);
    ebb_unlock(&a->heap.lock);
    s->live_bytes = f.slab_bytes_out + f.large_bytes;
    s->live_objects = objects + (s->large_nmalloc - s->large_nfree);
    /* Free pages inside slabs that the decay purged are active but not
     * resident: they count as retained. */
    size_t slab_purged = atomic_load_explicit(&a->slab_purged_pages, memory_order_relaxed);
    s->active_bytes = (f.active_pages - (slab_purged < f.active_pages ? slab_purged : f.active_pages))
                      << EBB_PAGE_SHIFT;
    s->dirty_bytes = f.dirty_pages << EBB_PAGE_SHIFT;
    s->purged_bytes = f.purged_bytes + atomic_load_explicit(&a->slab_purged_bytes, memory_order_relaxed);
    s->purge_calls = f.purge_calls + atomic_load_explicit(&a->slab_purge_calls, memory_order_relaxed);
    s->purge_refused = f.purge_refused + atomic_load_explicit(&a->slab_purge_refused, memory_order_relaxed);
    s->mapped_bytes = f.nsegments * EBB_SEG;
    uint64_t used = s->active_bytes + s->dirty_bytes;
    s->retained_bytes = s->mapped_bytes > used ? s->mapped_bytes - used : 0;
    s->threads = atomic_load_explicit(&a->nthreads, memory_order_relaxed);
}

void ebb__stats_collect(ebb_stats_counters_t *total, ebb_stats_counters_t *arenas,
                        unsigned narenas, ebb_stats_class_t *classes, unsigned nclasses) {
    memset(total, 0, sizeof(*total));
    memset(arenas, 0, sizeof(*arenas) * narenas);
    memset(classes, 0, sizeof(*classes) * nclasses);
    uint64_t slab_and_large = 0;
    for (unsigned i = 0; i < narenas && i < EBB_MAX_ARENAS; i++) {
        ebb_arena_t *a = __atomic_load_n(&ebb__arenas[i], __ATOMIC_ACQUIRE);
        if (a == NULL)
            continue;
        ebb_stats_counters_t *s = &arenas[i];
        collect_arena(a, s, classes, nclasses);
        slab_and_large += s->live_bytes;
        total->live_objects += s->live_objects;
        total->active_bytes += s->active_bytes;
        total->dirty_bytes += s->dirty_bytes;
        total->purged_bytes += s->purged_bytes;
        total->purge_calls += s->purge_calls;
        total->purge_refused += s->purge_refused;
        total->large_nmalloc += s->large_nmalloc;
        total->large_nfree += s->large_nfree;
    }
    /* Thread caches by the arena their thread is attached to; CPU caches
     * in the total only. */
    uint64_t by_arena[EBB_MAX_ARENAS] = {0};
    unsigned nar = narenas < EBB_MAX_ARENAS ? narenas : EBB_MAX_ARENAS;
    ebb__tcache_cached_bytes_by_arena(by_arena, nar);
    for (unsigned i = 0; i < nar; i++) {
        arenas[i].tcache_bytes = by_arena[i];
        total->tcache_bytes += by_arena[i];
    }
    /* A class's live objects: out of slabs and in no thread or CPU cache. */
    uint64_t cached[EBB_NCLASSES] = {0};
    ebb__tcache_cached_counts(cached);
    total->tcache_bytes += ebb__cpucache_cached(cached);
    for (unsigned i = 0; i < nclasses && i < EBB_NSMALL; i++) {
        ebb_stats_class_t *k = &classes[i];
        k->size = ebb_class_size(i + 1);
        k->nmalloc = ebb__class_nmalloc(i + 1);
        uint64_t n = cached[i + 1] < k->live_objects ? cached[i + 1] : k->live_objects;
        k->live_objects -= n;
        total->live_objects -= n;
        k->nfree = k->nmalloc > k->live_objects ? k->nmalloc - k->live_objects : 0;
    }
    size_t huge = atomic_load_explicit(&ebb__huge_bytes, memory_order_relaxed);
    size_t huge_cached = atomic_load_explicit(&ebb__huge_cached_bytes, memory_order_relaxed);
    size_t base_mapped = atomic_load_explicit(&ebb__base_mapped, memory_order_relaxed);
    total->live_bytes =
        (slab_and_large > total->tcache_bytes ? slab_and_large - total->tcache_bytes : 0) + huge;
    total->live_objects += atomic_load_explicit(&ebb__huge_count, memory_order_relaxed);
    /* As ebb_summary: unmapped segments and huge mappings went back too. */
    total->purged_bytes += atomic_load_explicit(&ebb__unmapped_bytes, memory_order_relaxed);
    total->huge_bytes = huge;
    total->active_bytes += huge;
    total->dirty_bytes += huge_cached;
    total->metadata_bytes = ebb__base_used();
    total->mapped_bytes = atomic_load_explicit(&ebb__segments_mapped, memory_order_relaxed) +
                          huge + huge_cached + base_mapped;
    uint64_t used = total->active_bytes + total->dirty_bytes + base_mapped;
    total->retained_bytes = total->mapped_bytes > used ? total->mapped_bytes - used : 0;
    total->threads = ebb__tcache_count();
    total->pressure_purges = atomic_load_explicit(&ebb__pressure_purges, memory_order_relaxed);
    total->cgroup_working_set_bytes =
        atomic_load_explicit(&ebb__cgroup_working_set, memory_order_relaxed);
    total->cgroup_limit_bytes = atomic_load_explicit(&ebb__cgroup_limit, memory_order_relaxed);
}
