/*
 * Allocation workloads for comparing malloc implementations.
 *
 * Each workload is a plain C function over the standard malloc family (so the
 * allocator under test is whichever one the process resolves malloc to:
 * glibc, or a library put in front with LD_PRELOAD). Each takes one
 * wl_params_t, is deterministic for a given seed, and returns the number of
 * operations it did (one operation = one allocation together with its later
 * free, unless the workload says otherwise), so callers can report ops/s.
 *
 * Threaded workloads create and join their own pthreads: a caller times one
 * call with a wall clock.
 */
#ifndef EBB_BENCH_WORKLOADS_H
#define EBB_BENCH_WORKLOADS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct wl_params_s {
    unsigned threads;  /* worker threads (ignored by single-thread workloads) */
    uint64_t iters;    /* operations per thread (per producer for prodcons) */
    size_t min_size;   /* smallest request, bytes */
    size_t max_size;   /* largest request, bytes */
    size_t live;       /* live objects kept (working set), per workload */
    unsigned work;     /* writes per object (cache_*), objects per batch
                          (prodcons), allocations per burst (many_threads) */
    uint64_t seed;     /* every random choice derives from it */
} wl_params_t;

/* One malloc/free pair at a time, sizes min..max (log-uniform). */
uint64_t wl_st_pairs(const wl_params_t *p);
/* Random replacement in an array of p->live live objects. */
uint64_t wl_st_workset(const wl_params_t *p);
/* Strings grown by realloc, vectors from calloc. */
uint64_t wl_calloc_realloc(const wl_params_t *p);
/* posix_memalign / aligned_alloc, alignments 64 B .. 4 KiB. */
uint64_t wl_aligned(const wl_params_t *p);
/* Larson server churn: threads replace random slots of their share. */
uint64_t wl_larson(const wl_params_t *p);
/* Producers allocate batches, consumers on other threads free them. */
uint64_t wl_prodcons(const wl_params_t *p);
/* Hoard's cache-scratch and cache-thrash (false sharing). */
uint64_t wl_cache_scratch(const wl_params_t *p);
uint64_t wl_cache_thrash(const wl_params_t *p);
/* Many threads allocating in bursts and sleeping in between. */
uint64_t wl_many_threads(const wl_params_t *p);
/* Buffers of p->min_size..p->max_size (over 2 MiB) taken and given back,
 * every page written, no realloc. */
uint64_t wl_buffers(const wl_params_t *p);
/* Large blocks: malloc, realloc and free of min..max (64 KiB .. 8 MiB). */
uint64_t wl_large(const wl_params_t *p);

#ifdef __cplusplus
}
#endif
#endif /* EBB_BENCH_WORKLOADS_H */
