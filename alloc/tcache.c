/*
 * Thread caches. Each thread has one, reached through a single initial-exec
 * TLS pointer; until the thread's first call it points at a static
 * placeholder whose bins all have max == 0, so the fast paths miss without
 * a separate "initialised?" test.
 *
 *   ebb__tls_tcache --> tcache
 *                       bins[c]: head -> obj -> obj -> NULL    (count <= max)
 *                                  (links live in the first word of each
 *                                   cached object; nothing else does)
 *
 * Refill takes max/2 objects from the arena in one locked batch; a free into
 * a full bin flushes the older half. A bin starts small and doubles its max
 * each time it runs dry (or overflows) up to its limit, its share of the
 * thread's budget -- tcmalloc's slow start: the hundreds of JVM threads
 * that make a few allocations of a class pull a few objects, not half a
 * bin each. A per-thread byte bound (tcache_max_kb) is enforced on those
 * slow paths, every so many of them (summing the bins costs as much as a
 * flush: checked on every overflow, it took 7% of the C RSS benchmark's
 * instructions). On thread exit (a pthread key destructor) everything goes
 * back to the arenas.
 *
 * Idle caches: the purger (decay.c) notices a thread that has made no
 * allocation for decay_ms and sets every bin's max to 0, then `drain`. The
 * thread's next free misses the fast path (count < 0 is false) and its next
 * cache miss lands in a slow path anyway; both see `drain`, flush the whole
 * cache and restore the bounds. The fast paths pay nothing for this: they
 * already load max. A thread blocked forever keeps at most tcache_max_kb
 * cached -- stealing its cache from another thread would need a fence or an
 * atomic on every fast-path call (alloc/README.md argues the choice).
 */
#include <pthread.h>

#include "conf.h"
#include "internal.h"

__thread ebb_tcache_t *ebb__tls_tcache __attribute__((tls_model("initial-exec"))) =
    &ebb__tcache_uninit;

ebb_tcache_t ebb__tcache_uninit = {.state = EBB_TC_UNINIT};
static ebb_tcache_t tcache_busy = {.state = EBB_TC_BUSY};
static ebb_tcache_t tcache_dead = {.state = EBB_TC_DEAD};

static ebb_lock_t tc_lock = EBB_LOCK_INIT;
static ebb_tcache_t *tc_live;   /* registry of live caches */
static ebb_tcache_t *tc_pool;   /* recycled structs */
static unsigned tc_nlive;     /* written under tc_lock, read without it */
/* Bumped when the number of live caches crosses a power of two: each
 * thread then recomputes its bounds on its next slow path. */
static _Atomic uint32_t tc_epoch;
/* Counters of exited threads, so totals survive them. */
static _Atomic uint64_t dead_nmalloc[EBB_NCLASSES];

extern pthread_key_t ebb__tkey;
extern bool ebb__tkey_ok;

/* A thread's byte budget: the caches together hold about tcache_total_mb,
 * so a JVM with 200 threads does not keep 200 full caches, while one or two
 * threads get up to tcache_max_kb each. */
#define BUDGET_MIN ((size_t)64 << 10)
static size_t thread_budget(void) {
    unsigned n = __atomic_load_n(&tc_nlive, __ATOMIC_RELAXED);
    size_t per = ((size_t)ebb__opts.tcache_total_mb << 20) / (n ? n : 1);
    size_t max = (size_t)ebb__opts.tcache_max_kb << 10;
    if (per > max)
        per = max;
    return per > BUDGET_MIN ? per : BUDGET_MIN;
}

/* A bin's bound: its share of the thread's budget, budget / BIN_SHARES, so
 * a thread that fills a handful of classes stays near its budget without
 * any check on the fast path (which cannot afford one); 2..256 objects a
 * bin, scaled by tcache_scale. */
#define BIN_SHARES 16
static uint32_t bin_max(unsigned c, size_t budget) {
    if (!ebb__opts.tcache || !ebb_class_is_small(c) || c >= ebb__cpucache_first)
        return 0;
    size_t share = budget / BIN_SHARES;
    size_t n = share / ebb_class_size(c);
    if (n < 2)
        n = 2;
    if (n > 256)
        n = 256;
    n = n * ebb__opts.tcache_scale / 100;
    return (uint32_t)(n ? n : 1);
}

static unsigned floor_lg(unsigned n) { return n ? 31u - (unsigned)__builtin_clz(n) : 0; }

static uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* The bins' limits for the thread's current budget; with restart, every max
 * starts again from EBB_TBIN_START, else it only shrinks to a lower limit. */
static void set_bounds(ebb_tcache_t *tc, bool restart) {
    tc->epoch = atomic_load_explicit(&tc_epoch, memory_order_relaxed);
    tc->budget = thread_budget();
    for (unsigned c = 0; c < EBB_NCLASSES; c++) {
        ebb_tbin_t *b = &tc->bins[c];
        b->limit = bin_max(c, tc->budget);
        uint32_t max = min_u32(restart ? EBB_TBIN_START : ebb_tbin_max(b), b->limit);
        __atomic_store_n(&b->max, max, __ATOMIC_RELAXED);
    }
}

/* The bin is in use beyond its max (ran dry, or overflowed): let it grow. */
static void bin_grow(ebb_tbin_t *b) {
    uint32_t max = ebb_tbin_max(b);
    if (max < b->limit && max != 0)
        __atomic_store_n(&b->max, min_u32(max * 2, b->limit), __ATOMIC_RELAXED);
}

static void registry_add(ebb_tcache_t *tc) {
    if (floor_lg(tc_nlive + 1) != floor_lg(tc_nlive))
        atomic_fetch_add_explicit(&tc_epoch, 1, memory_order_relaxed);
    tc->prev = NULL;
    tc->next = tc_live;
    if (tc_live)
        tc_live->prev = tc;
    tc_live = tc;
    __atomic_store_n(&tc_nlive, tc_nlive + 1, __ATOMIC_RELAXED);
}

static void registry_remove(ebb_tcache_t *tc) {
    if (floor_lg(tc_nlive - 1) != floor_lg(tc_nlive))
        atomic_fetch_add_explicit(&tc_epoch, 1, memory_order_relaxed);
    if (tc->prev)
        tc->prev->next = tc->next;
    else
        tc_live = tc->next;
    if (tc->next)
        tc->next->prev = tc->prev;
    __atomic_store_n(&tc_nlive, tc_nlive - 1, __ATOMIC_RELAXED);
}

ebb_tcache_t *ebb__tcache_get_slow(void) {
    ebb_tcache_t *tc = ebb__tls_tcache;
    if (tc->state != EBB_TC_UNINIT)
        return tc;
    if (!ebb_init())
        return &tcache_busy;
    /* Anything called from here that allocates (pthread_setspecific may)
     * sees the busy placeholder and allocates from an arena directly. */
    ebb__tls_tcache = &tcache_busy;
    ebb_lock(&tc_lock);
    tc = tc_pool;
    if (tc != NULL)
        tc_pool = tc->next;
    ebb_unlock(&tc_lock);
    if (tc == NULL)
        tc = ebb__base_alloc(sizeof(ebb_tcache_t));
    if (tc == NULL) {
        ebb__tls_tcache = &ebb__tcache_uninit;
        return &tcache_busy;
    }
    memset(tc, 0, sizeof(*tc));
    tc->arena = ebb__arena_choose();
    if (tc->arena)
        atomic_fetch_add_explicit(&tc->arena->nthreads, 1, memory_order_relaxed);
    tc->state = EBB_TC_ACTIVE;
    ebb_lock(&tc_lock);
    registry_add(tc);
    ebb_unlock(&tc_lock);
    set_bounds(tc, true); /* counting this thread */
    if (ebb__tkey_ok)
        pthread_setspecific(ebb__tkey, tc);
    ebb__tls_tcache = tc;
    return tc;
}

/* Flush the objects after the first keep on bin c. */
static void bin_flush(ebb_tcache_t *tc, unsigned c, uint32_t keep) {
    ebb_tbin_t *b = &tc->bins[c];
    if (b->count <= keep)
        return;
    ebb__batch_begin(tc);
    void *rest;
    if (keep == 0) {
        rest = b->head;
        b->head = NULL;
    } else {
        void *p = b->head;
        for (uint32_t i = 1; i < keep; i++)
            p = *(void **)p;
        rest = *(void **)p;
        *(void **)p = NULL;
    }
    b->count = keep;
    ebb__arena_flush(c, rest);
    ebb_batch_end(tc);
}

/* Another thread's cache counters, read while their owner changes them
 * with plain stores on its fast path (atomics there would cost every
 * malloc and free): for statistics and the idle check, where a stale value
 * only skews a figure or delays a drain. Aligned 4- and 8-byte loads do not
 * tear on the supported targets; volatile makes it one load, and the
 * attribute tells ThreadSanitizer the race is meant (it also keeps the
 * function out of instrumented callers there; elsewhere it inlines). */
#define EBB_NO_TSAN __attribute__((no_sanitize("thread")))
static EBB_NO_TSAN uint32_t racy_u32(const volatile uint32_t *p) { return *p; }
static EBB_NO_TSAN uint64_t racy_u64(const volatile uint64_t *p) { return *p; }

static size_t cached_bytes(const ebb_tcache_t *tc) {
    size_t bytes = 0;
    for (unsigned c = 1; c <= EBB_NSMALL; c++)
        bytes += (size_t)racy_u32(&tc->bins[c].count) * ebb_class_size(c);
    return bytes;
}

/* Keep the cache within its budget: after a change of budget, trim every
 * bin to its new bound; then halve every bin until under half the budget,
 * so the next trim is not immediately due again. */
static void enforce_bound(ebb_tcache_t *tc) {
    if (ebb_unlikely(tc->epoch != atomic_load_explicit(&tc_epoch, memory_order_relaxed))) {
        set_bounds(tc, false);
        for (unsigned c = 1; c <= EBB_NSMALL; c++)
            bin_flush(tc, c, ebb_tbin_max(&tc->bins[c]));
    }
    size_t cap = tc->budget;
    if (cached_bytes(tc) <= cap)
        return;
    for (int round = 0; round < 8 && cached_bytes(tc) > cap / 2; round++)
        for (unsigned c = 1; c <= EBB_NSMALL; c++)
            bin_flush(tc, c, tc->bins[c].count / 2);
}

void *ebb__tcache_refill_alloc(ebb_tcache_t *tc, unsigned c) {
    ebb_tbin_t *b = &tc->bins[c];
    bin_grow(b);
    uint32_t half = ebb_tbin_max(b) / 2; /* one read: the purger may lower it */
    unsigned want = half ? half : 1;
    void *head;
    ebb__batch_begin(tc);
    unsigned got = ebb__arena_refill(tc->arena, c, &head, want);
    if (got != 0) { /* the first object is the caller's, the rest the bin's */
        b->head = *(void **)head;
        b->count = got - 1;
    }
    ebb_batch_end(tc);
    if (got == 0)
        return NULL;
    void *p = head;
    b->nmalloc++;
    if (++tc->ticks % 64 == 0 ||
        tc->epoch != atomic_load_explicit(&tc_epoch, memory_order_relaxed))
        enforce_bound(tc);
    return p;
}

uintptr_t ebb__free_mark = 0x9e3779b97f4a7c15u; /* odd; made random at initialisation */

void ebb__free_mark_init(void) {
    uintptr_t r = ebb__os_random_word();
    ebb__free_mark = (r ^ (r >> 29) ^ ebb__free_mark) | 1;
}

void ebb__cached_object_changed(void) {
    ebb__os_fatal("malloc(): a free object in a cache was written: freed twice, or used after free");
}

void ebb__tcache_overflow_free(ebb_tcache_t *tc, unsigned c, void *p) {
    ebb_tbin_t *b = &tc->bins[c];
    bin_grow(b);
    uint32_t max = ebb_tbin_max(b);
    if (b->count >= max)
        bin_flush(tc, c, max / 2);
    *(void **)p = b->head;
    *ebb_mark_word(p) = ebb__free_mark;
    b->head = p;
    b->count++;
    if (++tc->ticks % 8 == 0 ||
        tc->epoch != atomic_load_explicit(&tc_epoch, memory_order_relaxed))
        enforce_bound(tc);
}

void ebb__tcache_flush_all(ebb_tcache_t *tc) {
    if (tc->state != EBB_TC_ACTIVE)
        return;
    for (unsigned c = 1; c <= EBB_NSMALL; c++)
        bin_flush(tc, c, 0);
}

static void tcache_retire(ebb_tcache_t *tc) {
    for (unsigned c = 0; c < EBB_NCLASSES; c++)
        if (tc->bins[c].nmalloc)
            atomic_fetch_add_explicit(&dead_nmalloc[c], tc->bins[c].nmalloc,
                                      memory_order_relaxed);
    if (tc->arena)
        atomic_fetch_sub_explicit(&tc->arena->nthreads, 1, memory_order_relaxed);
    tc->state = EBB_TC_DEAD;
    registry_remove(tc);
    tc->next = tc_pool;
    tc_pool = tc;
}

void ebb__tcache_thread_exit(void *arg) {
    ebb_tcache_t *tc = arg;
    if (tc == NULL || tc->state != EBB_TC_ACTIVE)
        return;
    /* From here on this thread allocates from arenas directly. */
    ebb__tls_tcache = &tcache_dead;
    ebb__tcache_flush_all(tc);
    ebb_lock(&tc_lock);
    tcache_retire(tc);
    ebb_unlock(&tc_lock);
}

size_t ebb__tcache_cached_bytes(void) {
    size_t bytes = 0;
    ebb_lock(&tc_lock);
    for (ebb_tcache_t *tc = tc_live; tc; tc = tc->next)
        bytes += cached_bytes(tc);
    ebb_unlock(&tc_lock);
    return bytes;
}

unsigned ebb__tcache_count(void) { return __atomic_load_n(&tc_nlive, __ATOMIC_RELAXED); }

uint64_t ebb__class_nmalloc(unsigned c) {
    uint64_t n = atomic_load_explicit(&dead_nmalloc[c], memory_order_relaxed);
    ebb_lock(&tc_lock);
    for (ebb_tcache_t *tc = tc_live; tc; tc = tc->next)
        n += racy_u64(&tc->bins[c].nmalloc);
    ebb_unlock(&tc_lock);
    return n;
}

void ebb__tcache_drain_if_asked(ebb_tcache_t *tc) {
    if (ebb_likely(atomic_load_explicit(&tc->drain, memory_order_acquire) == 0))
        return;
    atomic_store_explicit(&tc->drain, 0, memory_order_relaxed);
    ebb__tcache_flush_all(tc);
    set_bounds(tc, true);
}

void ebb__tcache_idle_scan(uint64_t now, uint64_t idle_ns) {
    ebb_lock(&tc_lock);
    for (ebb_tcache_t *tc = tc_live; tc; tc = tc->next) {
        /* Racy reads of the owner's counters: a stale value only delays. */
        uint64_t sum = 0, cached = 0;
        for (unsigned c = 1; c <= EBB_NSMALL; c++) {
            sum += racy_u64(&tc->bins[c].nmalloc);
            cached += racy_u32(&tc->bins[c].count);
        }
        if (sum != tc->seen_nmalloc || tc->idle_since_ns == 0) {
            tc->seen_nmalloc = sum;
            tc->idle_since_ns = now;
            continue;
        }
        if (cached == 0 || now < tc->idle_since_ns || now - tc->idle_since_ns < idle_ns ||
            atomic_load_explicit(&tc->drain, memory_order_relaxed))
            continue;
        /* Bounds first, then the flag (release): the owner restores the
         * bounds only after it has seen the flag, so none stays at 0. */
        for (unsigned c = 0; c < EBB_NCLASSES; c++)
            __atomic_store_n(&tc->bins[c].max, 0, __ATOMIC_RELAXED);
        atomic_store_explicit(&tc->drain, 1, memory_order_release);
    }
    ebb_unlock(&tc_lock);
}

/* ---- batches at a fork ------------------------------------------------ */
/* 1 from the fork gate to the end of fork: batches wait. A batch's owner
 * sets its flag and then looks at this; the fork sets this and then looks
 * at the flags (both with a full fence between): one of them sees the
 * other. */
static _Atomic uint32_t forking;

void ebb__batch_begin(ebb_tcache_t *tc) {
    for (;;) {
        atomic_store_explicit(&tc->in_batch, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        if (ebb_likely(atomic_load_explicit(&forking, memory_order_relaxed) == 0))
            return;
        atomic_store_explicit(&tc->in_batch, 0, memory_order_release);
        while (atomic_load_explicit(&forking, memory_order_acquire) != 0)
            ebb__os_futex_wait((volatile uint32_t *)&forking, 1);
    }
}

void ebb__tcache_fork_gate(void) {
    ebb_lock(&tc_lock);
    atomic_store_explicit(&forking, 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
    const ebb_tcache_t *self = ebb__tls_tcache;
    uint64_t deadline = 0;
    for (ebb_tcache_t *tc = tc_live; tc != NULL; tc = tc->next) {
        while (tc != self && atomic_load_explicit(&tc->in_batch, memory_order_acquire)) {
            uint64_t now = ebb__os_now_ns();
            if (deadline == 0)
                deadline = now + 1000000000u;
            else if (now > deadline)
                break; /* and the others get no longer */
            ebb__os_yield();
        }
    }
    ebb_unlock(&tc_lock);
}

static void fork_done(void) {
    atomic_store_explicit(&forking, 0, memory_order_release);
    ebb__os_futex_wake((volatile uint32_t *)&forking, INT32_MAX);
}

void ebb__tcache_prefork(void) { ebb_lock(&tc_lock); }
void ebb__tcache_postfork_parent(void) {
    ebb_unlock(&tc_lock);
    fork_done();
}

/* In the child only this thread survives: give the other threads' cached
 * objects back (every list is consistent at any instant: see the fast
 * paths), and recount threads per arena. */
void ebb__tcache_postfork_child(void) {
    ebb_lock_reinit(&tc_lock);
    atomic_store_explicit(&forking, 0, memory_order_relaxed); /* no one waits here */
    ebb_tcache_t *self = ebb__tls_tcache;
    ebb_tcache_t *tc = tc_live;
    while (tc != NULL) {
        ebb_tcache_t *next = tc->next;
        if (tc != self) {
            for (unsigned c = 1; c <= EBB_NSMALL; c++) {
                void *head = tc->bins[c].head;
                tc->bins[c].head = NULL;
                tc->bins[c].count = 0;
                if (head)
                    ebb__arena_flush(c, head);
            }
            tcache_retire(tc);
        }
        tc = next;
    }
}

/* For the statistics page (stats.c): add the bytes each live cache holds to
 * per_arena[index of its thread's arena], for the n first arenas. */
void ebb__tcache_cached_bytes_by_arena(uint64_t per_arena[], unsigned n) {
    ebb_lock(&tc_lock);
    for (ebb_tcache_t *tc = tc_live; tc; tc = tc->next)
        if (tc->arena != NULL && tc->arena->index < n)
            per_arena[tc->arena->index] += cached_bytes(tc);
    ebb_unlock(&tc_lock);
}

/* For the statistics page (stats.c): add each class's objects held in live
 * thread caches to counts[c]. The counts are read racily: a statistic. */
void ebb__tcache_cached_counts(uint64_t counts[]) {
    ebb_lock(&tc_lock);
    for (ebb_tcache_t *tc = tc_live; tc; tc = tc->next)
        for (unsigned c = 1; c <= EBB_NSMALL; c++)
            counts[c] += racy_u32(&tc->bins[c].count);
    ebb_unlock(&tc_lock);
}
