/*
 * CPU caches: free objects of the bigger slab classes (above
 * cpu_cache_min_size, default 1 KiB) kept per CPU instead of per thread.
 *
 *   thread --rseq area (cpu_id)--> region[cpu]: count[c] (uint16)
 *                                   slots[begin[c] .. begin[c] + count[c]) = cached objects of c
 *                                   (begin[c], room[c]: the same for every region, in pcpu)
 *          refill / flush in batches of half a class's room <--> arena bins (slabs)
 *
 * A region of zeros is a valid empty one, so the regions of CPUs the
 * process never runs on stay untouched pages (a machine may report
 * hundreds of possible CPUs).
 *
 * Why: a JVM runs hundreds of threads on a few CPUs. Per-thread caches of
 * 1-32 KiB objects hold memory in every thread that ran recently -- most
 * of them asleep -- and for these sizes that is what the caches cost: in
 * the Java RSS benchmark (64 threads on 2 CPUs) thread caches of objects
 * over 1 KiB were 6-12 MiB of the peak. A cache per CPU holds at most about
 * cpu_cache_kb per CPU, whatever the number of threads. Objects of 1 KiB
 * or less stay in the thread caches: a class's cached objects are few
 * bytes there, and the fast path is a few instructions.
 *
 * No lock: a pop or push is a restartable sequence (rseq, as tcmalloc's
 * per-CPU caches). The kernel keeps the running CPU's number in the
 * thread's rseq area, which glibc 2.35+ registers for every thread; a
 * sequence reads it, works on that CPU's region, and ends with one store
 * that commits (the new count[c]). If the thread is preempted, migrated or
 * signalled before that store, the kernel moves it to the abort handler,
 * which starts again: no other thread can have run on that CPU in the
 * middle of a sequence, so plain loads and stores suffice. A lock (two
 * atomic read-modify-writes a call) made objects over 1 KiB 2-4x slower
 * in ebb_bench here.
 *
 * The sequences are x86-64 assembly (one object: rseq.h, inlined into
 * malloc and free; batches: below); elsewhere, without glibc's
 * rseq area, or in ThreadSanitizer builds (which cannot see the
 * sequences' stores) there are no CPU caches and those classes go through
 * the thread caches as before.
 *
 * Draining (the purger's scan: regions whose count[] did not change for
 * decay_ms / 8; malloc_trim: all). A region is written only by sequences
 * running on its CPU, so another thread may touch it only once none can
 * run there. The drainer
 *   1. stops the region: count[0] (no class) = 1, which every sequence
 *      checks after finding its region, and then takes the "no region"
 *      way out (the caller goes to the arena); set by compare-and-swap,
 *      the flag keeps two drainers apart too;
 *   2. fences its CPU with membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
 *      that CPU): a thread of ours in a sequence there is restarted and
 *      sees the stop; with the barrier, the region's last commits are
 *      visible here;
 *   3. empties it with plain loads and stores, and lets it go (count[0] =
 *      0, a release store).
 * This is tcmalloc's way. Without the fence (a kernel before 5.10, a
 * seccomp filter, cpu_cache_fence:false) only the background thread
 * drains other CPUs' regions: it moves itself to each CPU
 * (sched_setaffinity) and pops there like any thread; malloc_trim asks it
 * and waits (background.c). With neither, there are no CPU caches.
 *
 * After fork the regions are consistent (a sequence interrupted by the
 * fork never committed; fork waits for a drain under way, as it takes the
 * decay lock first), so the child keeps them.
 */
#include "conf.h"
#include "internal.h"
#include "rseq.h"

#define REGION_STOPPED 0 /* count[0]: nonzero while a drainer has the region */

typedef struct ebb_region_s {
    uint16_t count[64];     /* written by the sequences on this CPU only (but count[0]) */
    uint64_t seen_sum;      /* background thread's view: a hash of count[] at its last look */
    uint64_t idle_since_ns; /* ... and since when it has not changed */
    char pad[EBB_REGION_SLOTS - 128 - 16];
    void *slots[];
} ebb_region_t;
_Static_assert(__builtin_offsetof(ebb_region_t, slots) == EBB_REGION_SLOTS, "region layout");
_Static_assert(EBB_NSMALL < 64, "a region's arrays cover every slab class");

ebb_pcpu_t ebb__pcpu;
/* The first class cached per CPU; EBB_NSMALL + 1: none (CPU caches off). */
unsigned ebb__cpucache_first = EBB_NSMALL + 1;
/* Regions can be drained from any CPU (membarrier's rseq fence works). */
bool ebb__cpucache_fenced;

#if EBB_HAVE_RSEQ
/*
 * The batch sequences (rseq.h tells how a sequence works and what these
 * return). A region a drainer has stopped counts as none. Between start
 * and commit they change nothing but scratch registers and buf; an abort
 * recomputes those.
 */
EBB_NOINLINE long ebb__rseq_pop(size_t c, void **buf, size_t n) {
    long r;
    __asm__ volatile(EBB_RSEQ_BEGIN("ebb_pop_")
                     "    movzwl (%%rax,%[c],2), %%r9d\n" /* r9 = count */
                     "    mov %%r9, %%r8\n"
                     "    cmp %[n], %%r8\n"
                     "    cmova %[n], %%r8\n" /* r8 = k = min(count, n) */
                     "    sub %%r8, %%r9\n"   /* r9 = new count */
                     "    movzwl 64(%[pc],%[c],2), %%r10d\n"
                     "    add %%r9, %%r10\n"  /* r10 = first slot taken */
                     "    xor %%ecx, %%ecx\n" /* rcx = i */
                     ".Lebb_pop_loop%=:\n"
                     "    cmp %%r8, %%rcx\n"
                     "    jae .Lebb_pop_commit%=\n"
                     "    lea (%%r10,%%rcx), %%rdx\n"
                     "    mov 192(%%rax,%%rdx,8), %%rdx\n"
                     "    mov %%rdx, (%[buf],%%rcx,8)\n"
                     "    inc %%rcx\n"
                     "    jmp .Lebb_pop_loop%=\n"
                     ".Lebb_pop_commit%=:\n"
                     "    mov %%r9w, (%%rax,%[c],2)\n" /* commit */
                     ".Lebb_pop_end%=:\n"
                     "    mov %%r8, %%rax\n"
                     "    jmp .Lebb_pop_done%=\n"
                     ".Lebb_pop_none%=:\n"
                     "    mov $-1, %%rax\n"
                     "    jmp .Lebb_pop_done%=\n" EBB_RSEQ_END("ebb_pop_")
                     : "=&a"(r)
                     : [pc] "r"(&ebb__pcpu), [c] "r"(c), [buf] "r"(buf), [n] "r"(n)
                     : "rcx", "rdx", "r8", "r9", "r10", "r11", "memory", "cc");
    return r;
}

EBB_NOINLINE long ebb__rseq_push(size_t c, void *const *buf, size_t n) {
    long r;
    __asm__ volatile(EBB_RSEQ_BEGIN("ebb_push_")
                     "    movzwl (%%rax,%[c],2), %%r9d\n"    /* r9 = count */
                     "    movzwl 192(%[pc],%[c],2), %%r8d\n" /* r8 = room */
                     "    sub %%r9, %%r8\n"   /* r8 = free slots (count <= room) */
                     "    cmp %[n], %%r8\n"
                     "    cmova %[n], %%r8\n" /* r8 = k = min(free, n) */
                     "    movzwl 64(%[pc],%[c],2), %%r10d\n"
                     "    add %%r9, %%r10\n"  /* r10 = first free slot */
                     "    add %%r8, %%r9\n"   /* r9 = new count */
                     "    xor %%ecx, %%ecx\n" /* rcx = i */
                     ".Lebb_push_loop%=:\n"
                     "    cmp %%r8, %%rcx\n"
                     "    jae .Lebb_push_commit%=\n"
                     "    mov (%[buf],%%rcx,8), %%rdx\n"
                     "    mov %%rdx, 192(%%rax,%%r10,8)\n"
                     "    inc %%r10\n"
                     "    inc %%rcx\n"
                     "    jmp .Lebb_push_loop%=\n"
                     ".Lebb_push_commit%=:\n"
                     "    mov %%r9w, (%%rax,%[c],2)\n" /* commit */
                     ".Lebb_push_end%=:\n"
                     "    mov %%r8, %%rax\n"
                     "    jmp .Lebb_push_done%=\n"
                     ".Lebb_push_none%=:\n"
                     "    mov $-1, %%rax\n"
                     "    jmp .Lebb_push_done%=\n" EBB_RSEQ_END("ebb_push_")
                     : "=&a"(r)
                     : [pc] "r"(&ebb__pcpu), [c] "r"(c), [buf] "r"(buf), [n] "r"(n)
                     : "rcx", "rdx", "r8", "r9", "r10", "r11", "memory", "cc");
    return r;
}
#else
long ebb__rseq_pop(size_t c, void **buf, size_t n) {
    (void)c, (void)buf, (void)n;
    return -1;
}
long ebb__rseq_push(size_t c, void *const *buf, size_t n) {
    (void)c, (void)buf, (void)n;
    return -1;
}
#endif

#define BATCH_MAX 256 /* objects moved at once: a class's room is at most this */

/* A class's room in each region: its share of cpu_cache_kb (1/16, as a
 * thread cache bin's), 2..BATCH_MAX objects. */
static unsigned class_room(unsigned c) {
    size_t share = ((size_t)ebb__opts.cpu_cache_kb << 10) / 16;
    size_t n = share / ebb_class_size(c);
    return (unsigned)(n < 2 ? 2 : n > BATCH_MAX ? BATCH_MAX : n);
}

static ebb_region_t *region(unsigned i) {
    return (ebb_region_t *)(void *)(ebb__pcpu.base + (size_t)i * ebb__pcpu.stride);
}

void ebb__cpucache_init(void) {
    if (!EBB_HAVE_RSEQ || ebb__opts.cpu_cache_kb == 0 || !ebb__opts.tcache)
        return;
    void *rs = ebb__os_rseq_area(&ebb__pcpu.rseq_off);
    if (rs == NULL || ((volatile uint32_t *)rs)[1] >= UINT32_MAX - 1)
        return; /* glibc registered no rseq area (before 2.35, or glibc.pthread.rseq=0) */
    /* Someone must be able to empty another CPU's region: any thread with
     * the fence, else the background thread. */
    bool fenced = ebb__opts.cpu_cache_fence && ebb__os_rseq_fence_register();
    if (!fenced && !ebb__opts.background_thread)
        return;
    unsigned first = EBB_NSMALL + 1;
    for (unsigned c = EBB_NSMALL; c >= 1 && ebb_class_size(c) > ebb__opts.cpu_cache_min_size; c--)
        first = c;
    if (first > EBB_NSMALL)
        return;
    unsigned n = ebb__os_cpu_ids();
    if (n == 0 || n > EBB_MAX_CPU_CACHES)
        n = n == 0 ? ebb__os_ncpus() : EBB_MAX_CPU_CACHES; /* CPUs above: no cache */
    size_t slots = 0, full = 0; /* a region's slots, and the most it holds */
    for (unsigned c = first; c <= EBB_NSMALL; c++) {
        ebb__pcpu.begin[c] = (uint16_t)slots;
        ebb__pcpu.room[c] = (uint16_t)class_room(c);
        slots += class_room(c);
        full += (size_t)class_room(c) * ebb_class_size(c);
    }
    size_t stride = (EBB_REGION_SLOTS + slots * sizeof(void *) + EBB_CACHELINE - 1) & ~(size_t)(EBB_CACHELINE - 1);
    char *base = ebb__base_alloc(stride * n); /* zeroed: every region empty */
    if (base == NULL)
        return; /* those classes go through the thread caches */
    ebb__pcpu.base = base;
    ebb__pcpu.stride = stride;
    ebb__pcpu.cap_bytes = full * ebb__os_ncpus();
    ebb__pcpu.nregions = n;
    ebb__cpucache_fenced = fenced;
    ebb__cpucache_first = first;
}

/* Link buf[0..n) into a list (through the objects' first words) and give
 * it back to the slabs. */
static void release(unsigned c, void **buf, long n) {
    if (n <= 0)
        return;
    for (long i = 0; i + 1 < n; i++)
        *(void **)buf[i] = buf[i + 1];
    *(void **)buf[n - 1] = NULL;
    ebb__arena_flush(c, buf[0]);
}

void *ebb__cpucache_refill(ebb_tcache_t *tc, ebb_arena_t *a, unsigned c) {
    if (a == NULL)
        return NULL;
    /* Half the class's room from the arena, one of them for the caller. */
    void *buf[BATCH_MAX];
    void *head;
    ebb__batch_begin(tc);
    unsigned n = ebb__arena_refill(a, c, &head, class_room(c) / 2 + 1);
    if (n == 0) {
        ebb_batch_end(tc);
        return NULL;
    }
    void *p = head;
    head = *(void **)head;
    for (unsigned i = 0; i + 1 < n; i++) {
        buf[i] = head;
        head = *(void **)head;
    }
    long put = ebb__rseq_push(c, buf, n - 1);
    if (put < 0) /* the thread moved to a CPU without a region */
        put = 0;
    release(c, buf + put, (long)(n - 1) - put); /* no room: filled meanwhile */
    ebb_batch_end(tc);
    return p;
}

/* Full: keep the most recently cached half (and p), give the older half
 * back to the slabs -- all of it out, the newer half in again, as the
 * sequences work at the top of a class's stack only. */
void ebb__cpucache_overflow(ebb_tcache_t *tc, unsigned c, void *p) {
    void *buf[BATCH_MAX + 1];
    ebb__batch_begin(tc);
    long n = ebb__rseq_pop(c, buf, BATCH_MAX);
    if (n < 0)
        n = 0;
    buf[n++] = p;
    long old = n / 2;
    long put = ebb__rseq_push(c, buf + old, (size_t)(n - old));
    if (put < 0)
        put = 0;
    release(c, buf, old);
    release(c, buf + old + put, n - old - put);
    ebb_batch_end(tc);
}

/* Empty the region of the CPU the caller runs on. */
static void drain_here(void) {
    void *buf[BATCH_MAX];
    for (unsigned c = ebb__cpucache_first; c <= EBB_NSMALL; c++) {
        long n;
        while ((n = ebb__rseq_pop(c, buf, BATCH_MAX)) > 0)
            release(c, buf, n);
    }
}

static uint64_t cur_sum(const ebb_region_t *r) {
    uint64_t sum = 0;
    for (unsigned c = ebb__cpucache_first; c <= EBB_NSMALL; c++)
        sum = sum * 31 + __atomic_load_n(&r->count[c], __ATOMIC_RELAXED);
    return sum;
}

static size_t region_bytes(const ebb_region_t *r, uint64_t counts[]) {
    size_t bytes = 0;
    for (unsigned c = ebb__cpucache_first; c <= EBB_NSMALL; c++) {
        unsigned n = __atomic_load_n(&r->count[c], __ATOMIC_RELAXED);
        bytes += (size_t)n * ebb_class_size(c);
        if (counts != NULL)
            counts[c] += n;
    }
    return bytes;
}

/* Empty region i from wherever the caller runs: stop it, fence its CPU,
 * empty it, let it go (see the top of this file). The stop flag is also
 * the drainers' lock. false: nothing done (another drainer has the region,
 * or the fence failed). */
static bool drain_fenced(unsigned i) {
    ebb_region_t *r = region(i);
    uint16_t free_flag = 0;
    if (!__atomic_compare_exchange_n(&r->count[REGION_STOPPED], &free_flag, 1, false,
                                     __ATOMIC_SEQ_CST, __ATOMIC_RELAXED))
        return false;
    if (!ebb__os_rseq_fence(i)) {
        __atomic_store_n(&r->count[REGION_STOPPED], 0, __ATOMIC_RELEASE);
        return false;
    }
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    void *buf[BATCH_MAX];
    for (unsigned c = ebb__cpucache_first; c <= EBB_NSMALL; c++) {
        unsigned n = __atomic_load_n(&r->count[c], __ATOMIC_RELAXED);
        if (n == 0)
            continue;
        EBB_CHECK(n <= ebb__pcpu.room[c], "CPU cache: a count beyond its room (memory corrupted)");
        for (unsigned k = 0; k < n; k++)
            buf[k] = r->slots[ebb__pcpu.begin[c] + k];
        __atomic_store_n(&r->count[c], 0, __ATOMIC_RELAXED);
        release(c, buf, (long)n);
    }
    __atomic_store_n(&r->count[REGION_STOPPED], 0, __ATOMIC_RELEASE);
    return true;
}

/* Empty region i: fenced from here, or (may_move: the background thread)
 * by moving the calling thread to CPU i. The first move saves the
 * thread's affinity in *home (*moved: saved). false: not done (the
 * process may not run on CPU i, or nobody may drain it from here). */
static bool drain_one(unsigned i, bool may_move, ebb_cpumask_t *home, bool *moved) {
    if (ebb__cpucache_fenced && drain_fenced(i))
        return true;
    if (!may_move)
        return false;
    if (!*moved && !ebb__os_affinity_get(home))
        return false;
    *moved = true;
    ebb_cpumask_t one;
    memset(&one, 0, sizeof(one));
    one.bits[i / 64] = (uint64_t)1 << (i % 64);
    if (!ebb__os_affinity_set(&one))
        return false;
    if (ebb__os_cpu_now() == i)
        drain_here();
    return true;
}

/* Empty every region (all), or those whose count[] did not change for
 * idle_ns / 8; then, while the regions together hold more than the cap,
 * the fullest ones. Moving from CPU to CPU (may_move), the caller goes
 * back to its own affinity at the end. Under the decay lock (but for tests). */
static void drain_regions(uint64_t now, uint64_t idle_ns, bool all, bool may_move) {
    ebb_cpumask_t home, tried;
    memset(&tried, 0, sizeof(tried));
    bool moved = false;
    size_t total = 0;
    unsigned n = ebb__pcpu.nregions < 64 * 64 ? (unsigned)ebb__pcpu.nregions : 64 * 64;
    for (unsigned i = 0; i < n; i++) {
        ebb_region_t *r = region(i);
        size_t bytes = region_bytes(r, NULL);
        if (bytes == 0)
            continue;
        uint64_t sum = cur_sum(r);
        bool idle = false;
        if (sum != r->seen_sum || r->idle_since_ns == 0 || now < r->idle_since_ns) {
            r->seen_sum = sum;
            r->idle_since_ns = now;
        } else {
            idle = now - r->idle_since_ns >= idle_ns / 8;
        }
        if (all || idle) {
            tried.bits[i / 64] |= (uint64_t)1 << (i % 64);
            if (drain_one(i, may_move, &home, &moved)) {
                r->idle_since_ns = 0;
                bytes = region_bytes(r, NULL);
            }
        }
        total += bytes;
    }
    while (total > ebb__pcpu.cap_bytes) {
        unsigned best = n;
        size_t most = 0;
        for (unsigned i = 0; i < n; i++) {
            size_t bytes = region_bytes(region(i), NULL);
            if (bytes > most && !(tried.bits[i / 64] >> (i % 64) & 1)) {
                most = bytes;
                best = i;
            }
        }
        if (best == n)
            break;
        tried.bits[best / 64] |= (uint64_t)1 << (best % 64);
        if (drain_one(best, may_move, &home, &moved)) {
            size_t left = region_bytes(region(best), NULL);
            total -= total > most - left ? most - left : total;
        }
    }
    if (moved)
        ebb__os_affinity_set(&home);
}

void ebb__cpucache_idle_scan(uint64_t now, uint64_t idle_ns, bool may_move) {
    if (ebb__pcpu.nregions == 0)
        return;
    if (may_move || ebb__cpucache_fenced)
        drain_regions(now, idle_ns, false, may_move);
}

void ebb__cpucache_flush_all(bool may_move) {
    if (ebb__pcpu.nregions == 0)
        return;
    if (may_move || ebb__cpucache_fenced)
        drain_regions(0, 0, true, may_move);
    else
        drain_here();
}

size_t ebb__cpucache_set_cap(size_t bytes) {
    size_t old = ebb__pcpu.cap_bytes;
    ebb__pcpu.cap_bytes = bytes;
    return old;
}

/* For statistics (racy reads): bytes held, and each class's objects added
 * to counts[c] unless counts is NULL. */
size_t ebb__cpucache_cached(uint64_t counts[]) {
    size_t bytes = 0;
    for (unsigned i = 0; i < ebb__pcpu.nregions; i++)
        bytes += region_bytes(region(i), counts);
    return bytes;
}
