/*
 * The decay: free memory goes back to the OS decay_ms after it was freed.
 *
 *   freed ──decay_ms──> purged (MADV_DONTNEED: RSS falls, pages read as 0)
 *   with muzzy_decay_ms > 0:
 *   freed ──decay_ms──> MADV_FREE ──muzzy_decay_ms──> MADV_DONTNEED
 *
 * What decays: free spans of the page heaps (a span remembers when it
 * became dirty; merged spans average their times, weighted by dirty
 * pages), the free pages inside slabs (pages none of whose objects is in
 * use, though the slab is), cached huge mappings (unmapped), and idle
 * thread caches (asked to drain). Beyond the clock, a cap (the larger of
 * dirty_max_kb and dirty_max_pct of the most pages a heap had active in
 * the last one or two decay periods) bounds what any heap keeps resident,
 * and memory pressure from the cgroup (background.c) purges everything at
 * once. The cap is generous by default (64 MiB or the heap's recent active
 * size): a tighter one makes busy programs purge memory they are about to
 * reuse.
 *
 * Who runs it: the background thread (background.c), or -- without one --
 * allocation slow paths every DECAY_TICK_NS at most. Purging is in short
 * batches with the locks dropped around madvise (page_heap.c), so no
 * allocating thread waits behind a purge storm. Every function here takes
 * the time as an argument, so tests drive it with their own clock.
 */
#include "conf.h"
#include "internal.h"

#define MS ((uint64_t)1000000)
#define DECAY_TICK_NS (100 * MS) /* without a background thread */

_Atomic uint64_t ebb__last_purge_ns;
static ebb_lock_t decay_lock = EBB_LOCK_INIT;
static _Atomic uint64_t next_tick_ns;

ebb_purge_policy_t ebb__decay_policy(uint64_t now, bool force) {
    ebb_purge_policy_t pol;
    memset(&pol, 0, sizeof(pol));
    pol.now_ns = now;
    pol.decay_ns = ebb__opts.decay_ms * MS;
    pol.muzzy_ns = ebb__opts.muzzy_decay_ms * MS;
    pol.cutoff_ns = now >= pol.decay_ns ? now - pol.decay_ns : 0;
    pol.muzzy_cutoff_ns = now >= pol.muzzy_ns ? now - pol.muzzy_ns : 0;
    pol.keep_dirty_pages = SIZE_MAX; /* per arena: set by the caller */
    pol.force = force;
    return pol;
}

/* The cap: the larger of dirty_max_kb and dirty_max_pct of the most pages
 * the heap had active in this decay period and the one before (not of those
 * active now): when a program frees a burst it is about to allocate again
 * -- a phase of threads ends and the next begins -- the freed pages wait
 * for the clock instead of being purged at once and faulted in again.
 * pre: h->lock held. */
static size_t dirty_cap_pages(ebb_heap_t *h, uint64_t now, uint64_t decay_ns) {
    if (now < h->peak_since_ns || now - h->peak_since_ns >= decay_ns) {
        h->active_peak_prev = h->active_peak_pages;
        h->active_peak_pages = h->active_pages;
        h->peak_since_ns = now;
    }
    size_t basis = h->active_pages;
    if (h->active_peak_pages > basis)
        basis = h->active_peak_pages;
    if (h->active_peak_prev > basis)
        basis = h->active_peak_prev;
    size_t fixed = (size_t)ebb__opts.dirty_max_kb >> (EBB_PAGE_SHIFT - 10);
    size_t rel = basis * ebb__opts.dirty_max_pct / 100;
    return fixed > rel ? fixed : rel;
}

/* pre: decay_lock held. */
static uint64_t decay_round(uint64_t now, bool force, size_t *purged) {
    uint64_t next = UINT64_MAX;
    size_t bytes = 0;
    ebb_purge_policy_t pol = ebb__decay_policy(now, force);
    if (force)
        ebb__cpucache_flush_all(ebb__background_is_self());
    else
        ebb__cpucache_idle_scan(now, pol.decay_ns, ebb__background_is_self());
    /* Where purging cannot work (ebb__os_purge_probe), the arenas are not
     * walked, and no cap wakes the background thread for them: what they
     * give back is whole segments (ebb__heap_unmap_released). */
    bool can_purge = ebb__os_purge_works();
    ebb_arena_t *a;
    for (unsigned i = 0; (a = ebb__arena_next(&i)) != NULL;) {
        ebb_lock(&a->heap.lock);
        pol.keep_dirty_pages = can_purge ? dirty_cap_pages(&a->heap, now, pol.decay_ns) : SIZE_MAX;
        a->heap.dirty_cap_pages = pol.keep_dirty_pages;
        a->heap.kicked = false;
        ebb_unlock(&a->heap.lock);
        if (can_purge)
            bytes += ebb__arena_purge(a, &pol, &next);
    }
    ebb__heap_unmap_released(true); /* whatever the free paths left waiting */
    bytes += ebb__huge_cache_expire(force ? UINT64_MAX : pol.cutoff_ns, pol.decay_ns, &next);
    ebb__tcache_idle_scan(now, pol.decay_ns);
    if (bytes)
        atomic_store_explicit(&ebb__last_purge_ns, now, memory_order_relaxed);
    if (purged)
        *purged += bytes;
    return next;
}

uint64_t ebb__decay_run(uint64_t now, bool force, size_t *purged) {
    uint32_t expect = 0;
    if (!atomic_compare_exchange_strong_explicit(&decay_lock.state, &expect, 1,
                                                 memory_order_acquire, memory_order_relaxed))
        return now + MS; /* another thread is at it */
    uint64_t next = decay_round(now, force, purged);
    ebb_unlock(&decay_lock);
    return next;
}

void ebb__decay_drain_cpus(void) {
    ebb_lock(&decay_lock);
    ebb__cpucache_flush_all(true);
    ebb_unlock(&decay_lock);
}

size_t ebb__decay_purge_all(void) {
    size_t bytes = 0;
    ebb_lock(&decay_lock);
    decay_round(ebb__os_now_ns(), true, &bytes);
    ebb_unlock(&decay_lock);
    return bytes;
}

/* fork() waits for a purge round under way; the round sees ebb__purge_yield
 * and stops after its current batch, so a fork is never held up for long. */
_Atomic bool ebb__purge_yield;

void ebb__decay_prefork(void) {
    atomic_store_explicit(&ebb__purge_yield, true, memory_order_relaxed);
    ebb_lock(&decay_lock);
}
void ebb__decay_postfork_parent(void) {
    atomic_store_explicit(&ebb__purge_yield, false, memory_order_relaxed);
    ebb_unlock(&decay_lock);
}
void ebb__decay_postfork_child(void) {
    atomic_store_explicit(&ebb__purge_yield, false, memory_order_relaxed);
    ebb_lock_reinit(&decay_lock);
}

void ebb__decay_on_tick(void) {
    if (ebb__background_running())
        return;
    uint64_t now = ebb__os_now_ns();
    if (now < atomic_load_explicit(&next_tick_ns, memory_order_relaxed))
        return;
    atomic_store_explicit(&next_tick_ns, now + DECAY_TICK_NS, memory_order_relaxed);
    ebb__decay_run(now, false, NULL);
}
