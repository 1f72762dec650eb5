/*
 * Allocation workloads; see workloads.h for the contract and README.md for
 * what each one stands for. Each says in its comment which real program it
 * imitates.
 *
 * Rules every workload follows:
 *  - all randomness comes from splitmix64 seeded by p->seed (and the thread
 *    number), so a run is the same sequence of requests for every allocator;
 *  - sizes are drawn log-uniformly (as many 16..31 B requests as 512..1023 B
 *    ones), the usual shape of real programs, from a table filled before the
 *    timed loop so the loop measures the allocator, not the generator;
 *  - every object is written after it is allocated (allocators that hand out
 *    untouched pages must pay for the page fault) and escapes to the compiler,
 *    which may otherwise delete a malloc/free pair.
 */
#define _GNU_SOURCE
#include "workloads.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers ----------------------------------------------------------- */

#define SIZE_TABLE_LEN 4096u /* power of two: indexed with a mask */
#define PAGE 4096u

typedef struct size_table_s {
    uint32_t v[SIZE_TABLE_LEN];
} size_table_t;

static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* A generator for stream `stream` (a thread number) of run `seed`. */
static uint64_t rng_init(uint64_t seed, uint64_t stream)
{
    uint64_t s = seed ^ (stream * 0xd1342543de82ef95ull);
    rng_next(&s);
    return s;
}

static inline uint64_t rng_below(uint64_t *s, uint64_t n)
{
    return (uint64_t)(((unsigned __int128)rng_next(s) * n) >> 64);
}

static unsigned log2_floor(size_t x)
{
    return 63u - (unsigned)__builtin_clzll((unsigned long long)(x | 1));
}

/* Log-uniform in [lo, hi]: a power-of-two bucket uniformly, then uniformly
 * inside it. */
static size_t rand_size(uint64_t *s, size_t lo, size_t hi)
{
    if (lo < 1)
        lo = 1;
    if (hi <= lo)
        return lo;
    unsigned b = log2_floor(lo) + (unsigned)rng_below(s, log2_floor(hi) - log2_floor(lo) + 1);
    size_t base = (size_t)1 << b;
    size_t sz = base + (size_t)rng_below(s, base);
    return sz < lo ? lo : sz > hi ? hi : sz;
}

static void size_table_fill(size_table_t *t, uint64_t *s, size_t lo, size_t hi)
{
    for (unsigned i = 0; i < SIZE_TABLE_LEN; i++)
        t->v[i] = (uint32_t)rand_size(s, lo, hi);
}

/* Tell the compiler p is used, so malloc/free pairs are not deleted. */
static inline void escape(void *p)
{
    __asm__ volatile("" : : "g"(p) : "memory");
}

static void die(const char *what)
{
    fprintf(stderr, "workload failed: %s\n", what);
    abort();
}

static inline void *xmalloc(size_t n)
{
    void *q = malloc(n);
    if (q == NULL)
        die("malloc returned NULL");
    return q;
}

/* Write the first and last byte: a program uses what it asks for. */
static inline void touch(void *q, size_t n)
{
    ((volatile char *)q)[0] = 1;
    ((volatile char *)q)[n - 1] = 1;
    escape(q);
}

/* Write one byte in every page of [q+from, q+n). */
static void touch_pages(void *q, size_t from, size_t n)
{
    for (size_t i = from; i < n; i += PAGE)
        ((volatile char *)q)[i] = 1;
    if (n > 0)
        ((volatile char *)q)[n - 1] = 1;
}

typedef struct worker_s {
    const wl_params_t *p;
    void *shared;   /* the workload's state common to all its threads */
    unsigned id;
    uint64_t ops;   /* filled in by the thread */
} worker_t;

/* Run fn on n threads (worker ids 0..n-1) and return the sum of their ops. */
static uint64_t run_workers(const wl_params_t *p, unsigned n, void *(*fn)(void *), void *shared)
{
    worker_t *w = calloc(n, sizeof *w);
    pthread_t *tid = calloc(n, sizeof *tid);
    if (w == NULL || tid == NULL)
        die("calloc for workers");
    for (unsigned i = 0; i < n; i++) {
        w[i] = (worker_t){.p = p, .shared = shared, .id = i};
        if (pthread_create(&tid[i], NULL, fn, &w[i]) != 0)
            die("pthread_create");
    }
    uint64_t ops = 0;
    for (unsigned i = 0; i < n; i++) {
        pthread_join(tid[i], NULL);
        ops += w[i].ops;
    }
    free(tid);
    free(w);
    return ops;
}

static unsigned threads_of(const wl_params_t *p)
{
    return p->threads ? p->threads : 1;
}

static size_t live_of(const wl_params_t *p)
{
    return p->live ? p->live : 1;
}

/* An array of n empty slots for a working set, and its release. */
static void **slots_new(size_t n)
{
    void **slot = calloc(n, sizeof *slot);
    if (slot == NULL)
        die("calloc for slots");
    return slot;
}

static void slots_free(void **slot, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(slot[i]);
    free(slot);
}

/* ---- single thread ----------------------------------------------------- */

/* Stands for: the innermost loop of any C/C++ program that makes and drops a
 * temporary (a std::string, a parse node, a JNI scratch buffer) per call —
 * the allocator's fast path and nothing else. */
uint64_t wl_st_pairs(const wl_params_t *p)
{
    uint64_t s = rng_init(p->seed, 0);
    size_table_t t;
    size_table_fill(&t, &s, p->min_size, p->max_size);
    for (uint64_t i = 0; i < p->iters; i++) {
        size_t n = t.v[i & (SIZE_TABLE_LEN - 1)];
        void *q = xmalloc(n);
        touch(q, n);
        free(q);
    }
    return p->iters;
}

/* Stands for: a cache or symbol table of long-lived objects that are
 * replaced one at a time in random order (a compiler's AST, an in-memory
 * index): frees land all over the heap, not in LIFO order. */
uint64_t wl_st_workset(const wl_params_t *p)
{
    uint64_t s = rng_init(p->seed, 0);
    size_table_t t;
    size_table_fill(&t, &s, p->min_size, p->max_size);
    size_t live = live_of(p);
    void **slot = slots_new(live);
    for (size_t i = 0; i < live; i++) {
        size_t n = t.v[i & (SIZE_TABLE_LEN - 1)];
        slot[i] = xmalloc(n);
        touch(slot[i], n);
    }
    for (uint64_t i = 0; i < p->iters; i++) {
        size_t k = (size_t)rng_below(&s, live);
        size_t n = t.v[i & (SIZE_TABLE_LEN - 1)];
        free(slot[k]);
        slot[k] = xmalloc(n);
        touch(slot[k], n);
    }
    slots_free(slot, live);
    return p->iters;
}

/* Stands for: text and collection building in C and C++ code (string
 * builders, JSON writers, std::vector growth): strings grow by realloc, half
 * of them by small exact steps (naive C that reallocs on every append), half
 * by 1.5x capacity steps; arrays come zeroed from calloc. A working set of
 * p->live finished strings is kept so growth does not always happen at the top
 * of the heap. One operation = one call of the malloc family. */
uint64_t wl_calloc_realloc(const wl_params_t *p)
{
    uint64_t s = rng_init(p->seed, 0);
    size_t live = live_of(p);
    void **slot = slots_new(live);
    uint64_t calls = 0;
    for (uint64_t i = 0; i < p->iters; i++) {
        size_t k = (size_t)rng_below(&s, live);
        free(slot[k]);
        calls++;
        if (i & 1) {
            size_t elem = (size_t)8 << rng_below(&s, 4); /* 8..64 B elements */
            size_t count = 1 + (size_t)rng_below(&s, p->max_size / elem);
            unsigned char *v = calloc(count, elem);
            if (v == NULL || v[0] != 0 || v[count * elem - 1] != 0)
                die("calloc returned NULL or non-zero memory");
            touch(v, count * elem);
            slot[k] = v;
        } else {
            size_t target = rand_size(&s, p->min_size, p->max_size);
            bool exact = rng_next(&s) & 1;
            size_t len = 0, cap = 0;
            char *str = NULL;
            while (len < target) {
                size_t step = 1 + (size_t)rng_below(&s, 32);
                if (len + step > cap) {
                    cap = exact ? len + step : (cap ? cap + cap / 2 : 16);
                    if (cap < len + step)
                        cap = len + step;
                    char *grown = realloc(str, cap);
                    if (grown == NULL)
                        die("realloc returned NULL");
                    if (len > 0 && grown[len - 1] != 'x')
                        die("realloc lost the contents");
                    str = grown;
                    calls++;
                }
                memset(str + len, 'x', step);
                len += step;
            }
            slot[k] = str;
        }
    }
    slots_free(slot, live);
    return calls;
}

/* Stands for: buffers for SIMD, DMA and direct I/O (O_DIRECT needs 512 B to
 * 4 KiB alignment), cache-line-aligned per-thread structures, and the
 * aligned operator new of C++17. Alternates posix_memalign and aligned_alloc
 * with alignments 64 B .. 4 KiB, in a working set of p->live objects. */
uint64_t wl_aligned(const wl_params_t *p)
{
    uint64_t s = rng_init(p->seed, 0);
    size_t live = live_of(p);
    void **slot = slots_new(live);
    for (uint64_t i = 0; i < p->iters; i++) {
        size_t k = (size_t)rng_below(&s, live);
        size_t align = (size_t)64 << rng_below(&s, 7); /* 64 .. 4096 */
        size_t n = rand_size(&s, p->min_size, p->max_size);
        void *q = NULL;
        free(slot[k]);
        if (i & 1) {
            n = (n + align - 1) & ~(align - 1); /* C11 wants a multiple */
            q = aligned_alloc(align, n);
        } else if (posix_memalign(&q, align, n) != 0) {
            q = NULL;
        }
        if (q == NULL || ((uintptr_t)q & (align - 1)) != 0)
            die("aligned allocation failed or misaligned");
        touch(q, n);
        slot[k] = q;
    }
    slots_free(slot, live);
    return p->iters;
}

/* ---- many threads ------------------------------------------------------ */

/* Rounds of threads in larson: each round's threads exit and the next round
 * takes over their objects, as a server's worker pool is recycled. */
#define LARSON_ROUNDS 4u

typedef struct larson_s {
    void **slot;     /* threads * live objects; thread i of round r owns
                        share (i + r) % threads */
    unsigned round;
} larson_t;

static void *larson_thread(void *arg)
{
    worker_t *w = arg;
    const wl_params_t *p = w->p;
    larson_t *l = w->shared;
    unsigned nt = threads_of(p);
    size_t live = live_of(p);
    void **share = l->slot + (size_t)((w->id + l->round) % nt) * live;
    uint64_t s = rng_init(p->seed, (uint64_t)l->round * nt + w->id + 1);
    size_table_t t;
    size_table_fill(&t, &s, p->min_size, p->max_size);
    uint64_t n = p->iters / LARSON_ROUNDS;
    for (uint64_t i = 0; i < n; i++) {
        size_t k = (size_t)rng_below(&s, live);
        size_t sz = t.v[i & (SIZE_TABLE_LEN - 1)];
        free(share[k]);
        share[k] = xmalloc(sz);
        touch(share[k], sz);
    }
    w->ops = n;
    return NULL;
}

/* Stands for: a multithreaded server (larson's original model) — each worker
 * thread replaces random objects of its share of the live data, objects are
 * freed by threads other than the one that allocated them once a worker pool
 * is recycled. p->live objects per thread, p->iters operations per thread. */
uint64_t wl_larson(const wl_params_t *p)
{
    unsigned nt = threads_of(p);
    size_t live = live_of(p);
    larson_t l = {.slot = slots_new((size_t)nt * live)};
    uint64_t s = rng_init(p->seed, 0);
    for (size_t i = 0; i < (size_t)nt * live; i++) {
        size_t n = rand_size(&s, p->min_size, p->max_size);
        l.slot[i] = xmalloc(n);
        touch(l.slot[i], n);
    }
    uint64_t ops = 0;
    for (l.round = 0; l.round < LARSON_ROUNDS; l.round++)
        ops += run_workers(p, nt, larson_thread, &l);
    slots_free(l.slot, (size_t)nt * live);
    return ops;
}

/* A bounded queue of batches, guarded by one mutex. A NULL batch tells a
 * consumer to stop. */
#define QUEUE_CAP 16u

typedef struct prodcons_s {
    pthread_mutex_t lock;
    pthread_cond_t not_full, not_empty;
    void **ring[QUEUE_CAP];
    unsigned head, count;
    unsigned producers_left, consumers;
} prodcons_t;

static void queue_push(prodcons_t *q, void **batch)
{
    pthread_mutex_lock(&q->lock);
    while (q->count == QUEUE_CAP)
        pthread_cond_wait(&q->not_full, &q->lock);
    q->ring[(q->head + q->count++) % QUEUE_CAP] = batch;
    pthread_cond_signal(&q->not_empty);
    pthread_mutex_unlock(&q->lock);
}

static void **queue_pop(prodcons_t *q)
{
    pthread_mutex_lock(&q->lock);
    while (q->count == 0)
        pthread_cond_wait(&q->not_empty, &q->lock);
    void **batch = q->ring[q->head];
    q->head = (q->head + 1) % QUEUE_CAP;
    q->count--;
    pthread_cond_signal(&q->not_full);
    pthread_mutex_unlock(&q->lock);
    return batch;
}

static void *prodcons_thread(void *arg)
{
    worker_t *w = arg;
    const wl_params_t *p = w->p;
    prodcons_t *q = w->shared;
    unsigned per_batch = p->work ? p->work : 1;
    if (w->id >= q->consumers) { /* producer */
        uint64_t s = rng_init(p->seed, w->id + 1);
        size_table_t t;
        size_table_fill(&t, &s, p->min_size, p->max_size);
        uint64_t made = 0;
        while (made < p->iters) {
            void **batch = xmalloc(per_batch * sizeof *batch);
            for (unsigned j = 0; j < per_batch; j++, made++) {
                size_t n = t.v[made & (SIZE_TABLE_LEN - 1)];
                batch[j] = xmalloc(n);
                touch(batch[j], n);
            }
            queue_push(q, batch);
        }
        w->ops = made;
        pthread_mutex_lock(&q->lock);
        bool last = --q->producers_left == 0;
        pthread_mutex_unlock(&q->lock);
        if (last)
            for (unsigned c = 0; c < q->consumers; c++)
                queue_push(q, NULL);
    } else { /* consumer */
        void **batch;
        while ((batch = queue_pop(q)) != NULL) {
            for (unsigned j = 0; j < per_batch; j++)
                free(batch[j]);
            free(batch);
        }
    }
    return NULL;
}

/* Stands for: buffers handed between thread pools (a JVM's Netty event loop
 * allocating direct buffers that a worker pool releases; xmalloc-test):
 * threads/2 producers allocate batches of p->work objects and push them on a
 * bounded queue, the other threads pop and free them, so every free is
 * remote. p->iters objects per producer. */
uint64_t wl_prodcons(const wl_params_t *p)
{
    unsigned nt = threads_of(p) < 2 ? 2 : threads_of(p);
    unsigned producers = nt / 2;
    prodcons_t q = {.producers_left = producers, .consumers = nt - producers};
    pthread_mutex_init(&q.lock, NULL);
    pthread_cond_init(&q.not_full, NULL);
    pthread_cond_init(&q.not_empty, NULL);
    uint64_t ops = run_workers(p, nt, prodcons_thread, &q);
    pthread_cond_destroy(&q.not_empty);
    pthread_cond_destroy(&q.not_full);
    pthread_mutex_destroy(&q.lock);
    return ops;
}

/* One object's life in cache-scratch/-thrash: allocate, write p->work times
 * (each write is a read-modify-write of one byte), free. */
static void write_many(const wl_params_t *p, size_t n)
{
    volatile char *o = xmalloc(n);
    for (unsigned j = 0; j < p->work; j++)
        o[j % n]++;
    free((void *)o);
}

static void *cache_thrash_thread(void *arg)
{
    worker_t *w = arg;
    size_t n = w->p->min_size ? w->p->min_size : 8;
    for (uint64_t i = 0; i < w->p->iters; i++)
        write_many(w->p, n);
    w->ops = w->p->iters;
    return NULL;
}

/* Stands for: threads that each keep a small private object (a counter, a
 * request context) and write it hard. An allocator that gives objects from
 * one cache line to different threads makes them fight over the line
 * (active false sharing; Hoard's cache-thrash). */
uint64_t wl_cache_thrash(const wl_params_t *p)
{
    return run_workers(p, threads_of(p), cache_thrash_thread, NULL);
}

static void *cache_scratch_thread(void *arg)
{
    worker_t *w = arg;
    void **given = w->shared;
    free(given[w->id]); /* the object the main thread made for us */
    return cache_thrash_thread(arg);
}

/* Stands for: a dispatcher that allocates small objects and hands one to
 * each worker, which frees it and then allocates its own. An allocator that
 * reuses the freed object for the worker's own allocations keeps the
 * workers on the dispatcher's cache lines (passive false sharing; Hoard's
 * cache-scratch). */
uint64_t wl_cache_scratch(const wl_params_t *p)
{
    unsigned nt = threads_of(p);
    size_t n = p->min_size ? p->min_size : 8;
    void **given = xmalloc(nt * sizeof *given);
    for (unsigned i = 0; i < nt; i++) {
        given[i] = xmalloc(n);
        touch(given[i], n);
    }
    uint64_t ops = run_workers(p, nt, cache_scratch_thread, given);
    free(given);
    return ops;
}

/* Longest burst many_threads keeps on its stack. */
#define BURST_MAX 512u

static void *many_threads_thread(void *arg)
{
    worker_t *w = arg;
    const wl_params_t *p = w->p;
    unsigned burst = p->work < 1 ? 1 : p->work > BURST_MAX ? BURST_MAX : p->work;
    uint64_t s = rng_init(p->seed, w->id + 1);
    void *held[BURST_MAX] = {0};
    struct timespec nap = {0, 200 * 1000}; /* 200 us */
    uint64_t ops = 0;
    for (uint64_t b = 0; b < p->iters; b++) {
        /* Replace the objects the previous burst left alive, so memory is
         * held across the sleep, as a request's state is. */
        for (unsigned j = 0; j < burst; j++, ops++) {
            size_t n = rand_size(&s, p->min_size, p->max_size);
            free(held[j]);
            held[j] = xmalloc(n);
            touch(held[j], n);
        }
        nanosleep(&nap, NULL);
    }
    for (unsigned j = 0; j < burst; j++)
        free(held[j]);
    w->ops = ops;
    return NULL;
}

/* Stands for: a JVM or application server with far more threads than cores
 * (thread pools of 64..200 on a 2-core container): each thread wakes, does a
 * burst of allocations, and sleeps. Stresses per-thread caches and arenas:
 * their number, and what they hold while their thread sleeps. p->iters
 * bursts of p->work allocations per thread. */
uint64_t wl_many_threads(const wl_params_t *p)
{
    return run_workers(p, threads_of(p), many_threads_thread, NULL);
}

/* ---- buffers over 2 MiB --------------------------------------------------- */

/* Stands for: I/O and compression buffers, and a JVM's direct buffers
 * (ByteBuffer.allocateDirect writes every byte it is given), taken per
 * request and given back: p->live slots, each operation a malloc of
 * p->min_size .. p->max_size writing every page, or a free; no realloc.
 * What an allocator does with a freed big block decides the cost: unmap it
 * (the next one faults every page in), keep it for a block of about the
 * same size, or reuse its pages for any size. */
uint64_t wl_buffers(const wl_params_t *p)
{
    uint64_t s = rng_init(p->seed, 0);
    size_t live = live_of(p);
    void **slot = slots_new(live);
    for (uint64_t i = 0; i < p->iters; i++) {
        size_t k = (size_t)rng_below(&s, live);
        if (slot[k] == NULL) {
            size_t n = rand_size(&s, p->min_size, p->max_size);
            slot[k] = xmalloc(n);
            touch_pages(slot[k], 0, n);
        } else {
            free(slot[k]);
            slot[k] = NULL;
        }
    }
    slots_free(slot, live);
    return p->iters;
}

/* ---- large blocks ------------------------------------------------------ */

/* Stands for: I/O buffers, decompression windows, image and column buffers,
 * growing byte arrays (64 KiB .. 8 MiB): a working set of p->live blocks,
 * each operation a malloc (empty slot), a realloc to a new size or a free,
 * writing every page it is given. Measures mmap/munmap/madvise policy and
 * page-fault counts more than the allocator's code. */
uint64_t wl_large(const wl_params_t *p)
{
    uint64_t s = rng_init(p->seed, 0);
    size_t live = live_of(p);
    void **slot = slots_new(live);
    size_t *len = calloc(live, sizeof *len);
    if (len == NULL)
        die("calloc");
    for (uint64_t i = 0; i < p->iters; i++) {
        size_t k = (size_t)rng_below(&s, live);
        size_t n = rand_size(&s, p->min_size, p->max_size);
        if (slot[k] == NULL) {
            slot[k] = xmalloc(n);
            touch_pages(slot[k], 0, n);
            len[k] = n;
        } else if (rng_next(&s) & 1) {
            void *grown = realloc(slot[k], n);
            if (grown == NULL)
                die("realloc returned NULL");
            touch_pages(grown, len[k] < n ? len[k] : n, n);
            slot[k] = grown;
            len[k] = n;
        } else {
            free(slot[k]);
            slot[k] = NULL;
        }
    }
    free(len);
    slots_free(slot, live);
    return p->iters;
}
