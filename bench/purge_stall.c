/*
 * Does giving memory back stall the threads that allocate? (Issue 3:
 * "purging is smooth, no purge storms that stall allocating threads".)
 *
 *   ebb_purge_stall [trim] [MIB [SIZE [KEEP]]]    defaults 256 5120 4
 *     The main thread leaves MIB MiB of SIZE-byte objects with one in KEEP
 *     still allocated (for small sizes: slabs with free pages among used
 *     ones, the pages ebbmalloc purges inside slabs), then calls
 *     malloc_trim(0) (what the JVM's System.trim_native_heap calls), which
 *     purges all of them.
 *   ebb_purge_stall free [MIB [SIZE]]             defaults 1024 1048576
 *     The main thread frees MIB MiB of SIZE-byte objects at once: whole
 *     segments come free and go back to the OS (munmap).
 *
 * Meanwhile a worker thread allocates and frees objects in batches, timing
 * every malloc and free: of the same size (trim), or of 40,000 bytes
 * (free: large objects, from the same page heap). Run it with one arena
 * (EBBMALLOC_CONF=narenas:1) so that both threads use the same bins and
 * page heap, as a JVM's hundreds of threads share a few arenas.
 *
 * Prints one line: how long the trim (or the frees) took, the RSS before
 * and after, and the latency of the worker's calls before and during
 * (maximum, and how many took over 100 us).
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { BATCH_MAX = 512, SLOW_NS = 100000 };

static size_t size = 5120, wsize, batch = BATCH_MAX; /* wsize: the worker's objects */
static atomic_bool started, stop;
static _Atomic int phase; /* 0: before the trim, 1: during it */
static uint64_t worst[2], slow[2], ops[2];

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* One timed call: its latency goes to the phase it began in. */
static void count(uint64_t t0) {
    uint64_t d = now_ns() - t0;
    int ph = atomic_load_explicit(&phase, memory_order_relaxed);
    if (d > worst[ph])
        worst[ph] = d;
    slow[ph] += d > SLOW_NS;
    ops[ph]++;
}

static void *worker(void *arg) {
    (void)arg;
    static void *p[BATCH_MAX];
    atomic_store(&started, true);
    while (!atomic_load(&stop)) {
        for (size_t i = 0; i < batch; i++) {
            uint64_t t0 = now_ns();
            p[i] = malloc(wsize);
            count(t0);
            if (p[i] == NULL)
                abort();
            *(volatile char *)p[i] = 1;
        }
        for (size_t i = 0; i < batch; i++) {
            uint64_t t0 = now_ns();
            free(p[i]);
            count(t0);
        }
    }
    return NULL;
}

/* This process's resident set, MiB (VmRSS); -1 if unreadable. */
static double rss_mib(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kib = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtod(line + 6, NULL);
    if (f != NULL)
        fclose(f);
    return kib < 0 ? -1 : kib / 1024;
}

static void nap_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

int main(int argc, char **argv) {
    bool trim_mode = true;
    if (argc > 1 && (strcmp(argv[1], "trim") == 0 || strcmp(argv[1], "free") == 0)) {
        trim_mode = argv[1][0] == 't';
        argc--, argv++;
    }
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : trim_mode ? 256 : 1024;
    size = argc > 2 ? strtoul(argv[2], NULL, 10) : trim_mode ? 5120 : 1 << 20;
    size_t keep = trim_mode ? (argc > 3 ? strtoul(argv[3], NULL, 10) : 4) : 0;
    if (mib == 0 || size == 0 || (trim_mode && keep == 0)) {
        fprintf(stderr, "usage: ebb_purge_stall [trim] [MIB [SIZE [KEEP]]] | free [MIB [SIZE]]\n");
        return 2;
    }
    wsize = trim_mode ? size : 40000;
    batch = (32u << 20) / wsize; /* the worker holds at most 32 MiB */
    batch = batch < 1 ? 1 : batch > BATCH_MAX ? BATCH_MAX : batch;
    size_t n = (mib << 20) / size, kept = 0;
    char **v = malloc(n * sizeof(*v));
    if (v == NULL)
        return 1;
    for (size_t i = 0; i < n; i++) {
        if ((v[i] = malloc(size)) == NULL)
            return 1;
        memset(v[i], 1, size);
    }
    for (size_t i = 0; trim_mode && i < n; i++) {
        if (i % keep == 0)
            kept++;
        else
            free(v[i]);
    }
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 1;
    while (!atomic_load(&started))
        nap_ms(1);
    nap_ms(200);
    double rss0 = rss_mib();
    atomic_store(&phase, 1);
    uint64_t t0 = now_ns();
    int released = 0;
    if (trim_mode)
        released = malloc_trim(0);
    else
        for (size_t i = 0; i < n; i++)
            free(v[i]);
    uint64_t took = now_ns() - t0;
    atomic_store(&stop, true);
    pthread_join(t, NULL);
    if (trim_mode)
        printf("%zu MiB of %zu-byte objects, 1 in %zu kept (%zu): malloc_trim %d in %.1f ms", mib, size, keep,
               kept, released, took / 1e6);
    else
        printf("%zu MiB of %zu-byte objects freed in %.1f ms", mib, size, took / 1e6);
    printf(", RSS %.0f -> %.0f MiB; worker's malloc/free before: max %.1f us, %lu of %lu over 100 us; during: max "
           "%.1f us, %lu of %lu over 100 us\n",
           rss0, rss_mib(), worst[0] / 1e3, (unsigned long)slow[0], (unsigned long)ops[0], worst[1] / 1e3,
           (unsigned long)slow[1], (unsigned long)ops[1]);
    for (size_t i = 0; trim_mode && i < n; i += keep)
        free(v[i]);
    free(v);
    return 0;
}
