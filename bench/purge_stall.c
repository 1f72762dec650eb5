/*
 * Does purging stall the threads that allocate? (Issue 3: "purging is
 * smooth, no purge storms that stall allocating threads".)
 *
 * The main thread leaves MIB MiB of SIZE-byte objects with one in KEEP
 * still allocated: slabs with free pages among used ones, the pages
 * ebbmalloc purges inside slabs. A worker thread then allocates and frees
 * objects of the same size in batches of 512, timing every malloc, while
 * the main thread calls malloc_trim(0) (what the JVM's
 * System.trim_native_heap calls), which purges all of those pages. Run it
 * with one arena (EBBMALLOC_CONF=narenas:1) so that both threads use the
 * same bins, as a JVM's hundreds of threads share a few arenas.
 *
 *   ebb_purge_stall [MIB [SIZE [KEEP]]]      defaults 256 5120 4
 *
 * Prints one line: the trim's time, the RSS before and after it, and the
 * worker's malloc latency before and during the trim (maximum, and how
 * many took over 100 us).
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

enum { BATCH = 512, SLOW_NS = 100000 };

static size_t size = 5120;
static atomic_bool started, stop;
static _Atomic int phase; /* 0: before the trim, 1: during it */
static uint64_t worst[2], slow[2], ops[2];

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void *worker(void *arg) {
    (void)arg;
    static void *p[BATCH];
    atomic_store(&started, true);
    while (!atomic_load(&stop)) {
        int ph = atomic_load_explicit(&phase, memory_order_relaxed);
        for (int i = 0; i < BATCH; i++) {
            uint64_t t0 = now_ns();
            p[i] = malloc(size);
            uint64_t d = now_ns() - t0;
            if (p[i] == NULL)
                abort();
            *(volatile char *)p[i] = 1;
            if (d > worst[ph])
                worst[ph] = d;
            slow[ph] += d > SLOW_NS;
            ops[ph]++;
        }
        for (int i = 0; i < BATCH; i++)
            free(p[i]);
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
    size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 256;
    size = argc > 2 ? strtoul(argv[2], NULL, 10) : 5120;
    size_t keep = argc > 3 ? strtoul(argv[3], NULL, 10) : 4;
    if (mib == 0 || size == 0 || keep == 0) {
        fprintf(stderr, "usage: ebb_purge_stall [MIB [SIZE [KEEP]]]\n");
        return 2;
    }
    size_t n = (mib << 20) / size, kept = 0;
    char **v = malloc(n * sizeof(*v));
    if (v == NULL)
        return 1;
    for (size_t i = 0; i < n; i++) {
        if ((v[i] = malloc(size)) == NULL)
            return 1;
        memset(v[i], 1, size);
    }
    for (size_t i = 0; i < n; i++) {
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
    int released = malloc_trim(0);
    uint64_t trim = now_ns() - t0;
    atomic_store(&stop, true);
    pthread_join(t, NULL);
    printf("%zu MiB of %zu-byte objects, 1 in %zu kept (%zu): malloc_trim %d in %.1f ms, RSS %.0f -> %.0f MiB; "
           "worker malloc before: max %.1f us, %lu of %lu over 100 us; during: max %.1f us, %lu of %lu "
           "over 100 us\n",
           mib, size, keep, kept, released, trim / 1e6, rss0, rss_mib(), worst[0] / 1e3,
           (unsigned long)slow[0], (unsigned long)ops[0], worst[1] / 1e3, (unsigned long)slow[1],
           (unsigned long)ops[1]);
    for (size_t i = 0; i < n; i += keep)
        free(v[i]);
    free(v);
    return 0;
}
