/*
 * The background thread: runs the decay (decay.c) on its clock, watches the
 * cgroup's memory pressure, and publishes statistics, so that memory goes
 * back to the OS even while every application thread sleeps.
 *
 * Started lazily from an allocation slow path with no lock held, once the
 * library's constructor has run (never during early initialisation, when
 * the dynamic loader or libc may still be setting up), with every signal
 * blocked in it (the JVM's signals go to its own threads). After fork it
 * does not exist in the child; the child's next slow path starts a new one.
 *
 * Sleeping: until the next dirty span falls due, and at most
 * IDLE_SLEEP_NS; with nothing dirty it wakes once per IDLE_SLEEP_NS only.
 * A free that pushes an arena over its dirty cap, and ebb_purge() callers,
 * wake it early through a futex word.
 */
#include "conf.h"
#include "internal.h"

#define MS ((uint64_t)1000000)
#define IDLE_SLEEP_NS (1000 * MS)
#define MIN_SLEEP_NS (5 * MS)
#define PRESSURE_EVERY_NS (100 * MS)

enum { BG_OFF = 0, BG_STARTING = 1, BG_RUNNING = 2, BG_FAILED = 3 };
static _Atomic int bg_state;
static _Atomic uint32_t bg_wake;
static _Atomic bool ctor_done;

__attribute__((constructor)) static void background_ctor(void) {
    atomic_store_explicit(&ctor_done, true, memory_order_release);
}

static __thread bool bg_self;
/* Requests to drain every CPU's cache now (malloc_trim), where the CPU
 * caches cannot be drained fenced from any thread (cpucache.c): then only
 * this thread may move from CPU to CPU. A caller takes a ticket and waits
 * until the thread has served it. */
static _Atomic uint32_t drain_asked, drain_served;

bool ebb__background_is_self(void) { return bg_self; }

bool ebb__background_running(void) {
    return atomic_load_explicit(&bg_state, memory_order_relaxed) == BG_RUNNING;
}

void ebb__background_kick(void) {
    if (!ebb__background_running())
        return;
    atomic_fetch_add_explicit(&bg_wake, 1, memory_order_release);
    ebb__os_futex_wake((volatile uint32_t *)&bg_wake, 1);
}

_Atomic uint64_t ebb__pressure_purges, ebb__cgroup_working_set, ebb__cgroup_limit;

/* Has the working set of the process's cgroup, or of one above it, reached
 * pressure_pct of its limit? (No limit, or no cgroup: never.) What it saw
 * goes to the statistics. */
static bool under_pressure(void) {
    unsigned pct = ebb__opts.pressure_pct;
    uint64_t current = 0, limit = 0;
    if (pct == 0 || !ebb__os_cgroup_memory(pct, &current, &limit))
        current = limit = 0;
    atomic_store_explicit(&ebb__cgroup_working_set, current, memory_order_relaxed);
    atomic_store_explicit(&ebb__cgroup_limit, limit, memory_order_relaxed);
    if (limit == 0 || current < limit / 100 * pct)
        return false;
    atomic_fetch_add_explicit(&ebb__pressure_purges, 1, memory_order_relaxed);
    return true;
}

static void *bg_main(void *arg) {
    (void)arg;
    bg_self = true;
    uint64_t last_pressure = 0;
    for (;;) {
        uint32_t seen = atomic_load_explicit(&bg_wake, memory_order_acquire);
        uint64_t now = ebb__os_now_ns();
        bool force = false;
        if (now - last_pressure >= PRESSURE_EVERY_NS) {
            last_pressure = now;
            force = under_pressure();
        }
        uint32_t asked = atomic_load_explicit(&drain_asked, memory_order_acquire);
        if (asked != atomic_load_explicit(&drain_served, memory_order_relaxed)) {
            ebb__decay_drain_cpus();
            atomic_store_explicit(&drain_served, asked, memory_order_release);
            ebb__os_futex_wake((volatile uint32_t *)&drain_served, INT32_MAX);
        }
        uint64_t next = ebb__decay_run(now, force, NULL);
        if (ebb__stats_shm_tick)
            ebb__stats_shm_tick(now);
        now = ebb__os_now_ns();
        uint64_t sleep = next > now ? next - now : 0;
        if (sleep > IDLE_SLEEP_NS)
            sleep = IDLE_SLEEP_NS;
        if (sleep < MIN_SLEEP_NS)
            sleep = MIN_SLEEP_NS;
        ebb__os_futex_wait_timeout((volatile uint32_t *)&bg_wake, seen, sleep);
    }
    return NULL;
}

bool ebb__background_drain_cpus(uint64_t timeout_ns) {
    if (!ebb__background_running() || bg_self)
        return false;
    uint32_t ticket = atomic_fetch_add_explicit(&drain_asked, 1, memory_order_acq_rel) + 1;
    ebb__background_kick();
    uint64_t end = ebb__os_now_ns() + timeout_ns;
    for (;;) {
        uint32_t served = atomic_load_explicit(&drain_served, memory_order_acquire);
        if ((int32_t)(served - ticket) >= 0)
            return true;
        uint64_t now = ebb__os_now_ns();
        if (now >= end)
            return false;
        ebb__os_futex_wait_timeout((volatile uint32_t *)&drain_served, served, end - now);
    }
}

void ebb__background_maybe_start(void) {
    if (ebb_likely(atomic_load_explicit(&bg_state, memory_order_relaxed) != BG_OFF))
        return;
    if (!ebb__opts.background_thread || !atomic_load_explicit(&ctor_done, memory_order_acquire))
        return;
    int expect = BG_OFF;
    if (!atomic_compare_exchange_strong(&bg_state, &expect, BG_STARTING))
        return;
    bool ok = ebb__os_thread_start(bg_main, NULL, "ebbmalloc-bg");
    atomic_store_explicit(&bg_state, ok ? BG_RUNNING : BG_FAILED, memory_order_release);
    if (!ok)
        ebb__warn("could not start the background thread; purging on allocation instead");
}

void ebb__background_postfork_child(void) {
    /* The thread did not survive the fork; a FAILED start may be retried. */
    atomic_store_explicit(&bg_state, BG_OFF, memory_order_relaxed);
    atomic_store_explicit(&bg_wake, 0, memory_order_relaxed);
}
