/*
 * The main job, in one program: the native-memory shape under which a JVM
 * service's RSS grows and never comes back with glibc malloc.
 *
 * A JVM runs far more threads than cores (thread pools, JIT and GC workers);
 * its native allocations (NIO buffers, zlib streams, JNI code, the JIT's own
 * arenas) are mixed sizes, mostly short-lived, a few long-lived ones spread
 * among them. Threads come and go. Then the service goes quiet, and its RSS
 * should go down — with glibc it does not: each thread sticks to one of up
 * to 8 x cores arenas, and a few long-lived objects near the top of an arena
 * keep all the free memory below them resident.
 *
 * The program, in phases:
 *   - start T threads (default 8 x cores + 16, more than glibc's arenas);
 *   - each allocates mixed sizes, 16 B .. 256 KiB log-uniform, writing every
 *     page, up to its share of the phase's budget, then churns: frees a
 *     random half and allocates again, a few rounds;
 *   - at exit it frees everything but --keep percent of its objects, chosen
 *     at random (so they are scattered), which stay alive to the end;
 *   - all threads exit; the next phase starts new ones.
 * Then it idles, making one small allocation per sample as a JVM's periodic
 * tasks do (--idle-alloc 0: none at all), and reports what RSS the allocator
 * gave back.
 *
 * RSS is read from /proc/self/statm without stdio, so reading it allocates
 * nothing; the peak is the kernel's VmHWM. Two lines are machine-readable:
 * at the end of the work, flushed at once so that bench/rss/run can tell
 * the work from the idling in the RSS it samples from outside,
 *   work_end baseline_kib=.. live_bytes=.. live_usable_bytes=.. work_s=..
 * (baseline: the RSS before the work; usable: malloc_usable_size of the live
 * objects, their size rounded up by the allocator), and last, for tools/demo,
 *   summary peak_mib=.. end_mib=.. idle2_mib=.. idle_mib=.. idle_s=.. live_mib=.. work_s=.. baseline_mib=..
 *
 * Options: --threads T --phases P --budget-mib M (in flight per phase)
 *          --rounds R --nap-ms N (a thread's wait between rounds) --keep PCT
 *          --idle S (seconds, >= 2) --idle-alloc 0|1
 *          --trace (print the RSS every SAMPLE_MS) --seed N
 *          --sizes exact|pages (requests as drawn, or rounded up to whole
 *          4 KiB pages, so that the allocator's own size rounding drops out)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SAMPLE_MS 200
#define MIN_SIZE 16
#define MAX_SIZE (256 * 1024)
#define MIB (1024.0 * 1024.0)

typedef struct options_s {
    unsigned threads, phases, rounds, nap_ms;
    double budget_mib, keep_pct;
    unsigned idle_s;
    bool trace, idle_alloc, page_sizes;
    uint64_t seed;
} options_t;

static options_t opt;

/* ---- RSS sampling ------------------------------------------------------ */

static atomic_bool sampler_stop;
static long page_size;
static struct timespec t0;

static double elapsed_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) * 1e-9;
}

/* The text of a small /proc file, read with plain system calls: stdio would
 * allocate, and the idle period must allocate nothing. */
static bool read_proc(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, len - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    return n > 0;
}

static size_t sample(void)
{
    char buf[128];
    if (!read_proc("/proc/self/statm", buf, sizeof buf))
        return 0;
    char *resident = strchr(buf, ' '); /* statm: size resident shared ... */
    return resident ? (size_t)strtoull(resident, NULL, 10) * (size_t)page_size : 0;
}

/* The peak RSS, as the kernel counts it (VmHWM): sampling would miss spikes. */
static size_t peak_rss(void)
{
    char buf[4096];
    if (!read_proc("/proc/self/status", buf, sizeof buf))
        return 0;
    char *hwm = strstr(buf, "VmHWM:");
    return hwm ? (size_t)strtoull(hwm + 6, NULL, 10) * 1024 : 0;
}

static void *sampler(void *arg)
{
    struct timespec nap = {0, SAMPLE_MS * 1000000L};
    while (!atomic_load(&sampler_stop)) {
        printf("  t=%6.1fs rss %8.1f MiB\n", elapsed_s(), (double)sample() / MIB);
        nanosleep(&nap, NULL);
    }
    return NULL;
}

/* ---- the work ---------------------------------------------------------- */

static inline uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static size_t rand_size(uint64_t *s)
{
    unsigned lo = 4, hi = 18; /* log2 of MIN_SIZE and MAX_SIZE */
    size_t base = (size_t)1 << (lo + rng_next(s) % (hi - lo));
    size_t n = base + rng_next(s) % base;
    /* --sizes pages: what the allocator's size rounding costs drops out */
    return opt.page_sizes ? (n + 4095) & ~(size_t)4095 : n;
}

typedef struct object_s {
    void *p;
    size_t n;
} object_t;

/* Objects kept alive to the end, from every thread. */
static pthread_mutex_t kept_lock = PTHREAD_MUTEX_INITIALIZER;
static object_t *kept;
static size_t kept_len, kept_cap, kept_bytes, kept_usable;

static void keep(object_t o)
{
    pthread_mutex_lock(&kept_lock);
    if (kept_len == kept_cap) {
        kept_cap = kept_cap ? 2 * kept_cap : 1024;
        kept = realloc(kept, kept_cap * sizeof *kept);
        if (kept == NULL) {
            perror("realloc");
            exit(1);
        }
    }
    kept[kept_len++] = o;
    kept_bytes += o.n;
    kept_usable += malloc_usable_size(o.p); /* what the size classes made of them */
    pthread_mutex_unlock(&kept_lock);
}

static void *alloc_touch(size_t n)
{
    char *p = malloc(n);
    if (p == NULL) {
        perror("malloc");
        exit(1);
    }
    for (size_t i = 0; i < n; i += (size_t)page_size)
        p[i] = 1;
    p[n - 1] = 1;
    return p;
}

typedef struct worker_s {
    unsigned phase, id;
} worker_t;

static void *worker(void *arg)
{
    worker_t *w = arg;
    uint64_t s = opt.seed ^ ((uint64_t)w->phase << 32) ^ w->id;
    size_t budget = (size_t)(opt.budget_mib * MIB / opt.threads);
    size_t cap = 1024, len = 0, bytes = 0;
    object_t *obj = malloc(cap * sizeof *obj);
    for (unsigned r = 0; r < opt.rounds; r++) {
        while (bytes < budget) {
            if (len == cap) {
                cap *= 2;
                obj = realloc(obj, cap * sizeof *obj);
            }
            size_t n = rand_size(&s);
            obj[len++] = (object_t){alloc_touch(n), n};
            bytes += n;
        }
        if (r + 1 == opt.rounds)
            break;
        /* Wait as a request handler waits on I/O: the phase's threads
         * overlap, and their memory is live at the same time. */
        nanosleep(&(struct timespec){opt.nap_ms / 1000, (opt.nap_ms % 1000) * 1000000L}, NULL);
        /* Free a random half, compacting the array. */
        size_t out = 0;
        for (size_t i = 0; i < len; i++) {
            if (rng_next(&s) & 1) {
                free(obj[i].p);
                bytes -= obj[i].n;
            } else {
                obj[out++] = obj[i];
            }
        }
        len = out;
    }
    uint64_t keep_below = (uint64_t)(opt.keep_pct / 100.0 * 1e6);
    for (size_t i = 0; i < len; i++) {
        if (rng_next(&s) % 1000000 < keep_below)
            keep(obj[i]);
        else
            free(obj[i].p);
    }
    free(obj);
    return NULL;
}

static void run_phase(unsigned phase)
{
    pthread_t *tid = malloc(opt.threads * sizeof *tid);
    worker_t *w = malloc(opt.threads * sizeof *w);
    for (unsigned i = 0; i < opt.threads; i++) {
        w[i] = (worker_t){phase, i};
        if (pthread_create(&tid[i], NULL, worker, &w[i]) != 0) {
            perror("pthread_create");
            exit(1);
        }
    }
    for (unsigned i = 0; i < opt.threads; i++)
        pthread_join(tid[i], NULL);
    free(w);
    free(tid);
}

/* Sleep until `at` seconds after the idle period began, allocating a little
 * every sample as a live process does (unless --idle-alloc 0); return the
 * RSS then. */
static size_t idle_until(double start, double at)
{
    struct timespec nap = {0, SAMPLE_MS * 1000000L};
    while (elapsed_s() - start < at) {
        if (opt.idle_alloc) {
            void *p = malloc(64);
            __asm__ volatile("" : : "g"(p) : "memory");
            free(p);
        }
        nanosleep(&nap, NULL);
    }
    return sample();
}

/* ebbmalloc's own account, when it is the allocator. */
static void print_ebb_summary(void)
{
    typedef struct {
        size_t mapped, active, allocated, dirty, metadata, purged;
        unsigned narenas, nthreads;
    } summary_t; /* the layout of ebb_summary_t in include/ebbmalloc.h */
    void (*fn)(summary_t *) = (void (*)(summary_t *))dlsym(RTLD_DEFAULT, "ebb_summary");
    if (fn == NULL)
        return;
    summary_t s;
    memset(&s, 0, sizeof s);
    fn(&s);
    printf("ebbmalloc: mapped %.1f MiB, active %.1f MiB, allocated %.1f MiB, dirty %.1f MiB, "
           "purged %.1f MiB, %u arenas, %u thread caches\n",
           (double)s.mapped / MIB, (double)s.active / MIB, (double)s.allocated / MIB,
           (double)s.dirty / MIB, (double)s.purged / MIB, s.narenas, s.nthreads);
}

static void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--threads T] [--phases P] [--budget-mib M] [--rounds R] [--nap-ms N]\n"
            "          [--keep PCT] [--idle S] [--idle-alloc 0|1] [--seed N] [--trace]\n"
            "          [--sizes exact|pages]\n",
            prog);
    exit(2);
}

static void parse(int argc, char **argv)
{
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    opt = (options_t){.threads = (unsigned)(8 * (ncpu > 0 ? ncpu : 1) + 16),
                      .phases = 10,
                      .rounds = 12,
                      .nap_ms = 10,
                      .budget_mib = 512,
                      .keep_pct = 1.5,
                      .idle_s = 10,
                      .idle_alloc = true,
                      .seed = 42};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--trace") == 0) {
            opt.trace = true;
            continue;
        }
        if (v == NULL)
            usage(argv[0]);
        i++;
        if (strcmp(a, "--threads") == 0)
            opt.threads = (unsigned)atoi(v);
        else if (strcmp(a, "--phases") == 0)
            opt.phases = (unsigned)atoi(v);
        else if (strcmp(a, "--rounds") == 0)
            opt.rounds = (unsigned)atoi(v);
        else if (strcmp(a, "--nap-ms") == 0)
            opt.nap_ms = (unsigned)atoi(v);
        else if (strcmp(a, "--budget-mib") == 0)
            opt.budget_mib = atof(v);
        else if (strcmp(a, "--keep") == 0)
            opt.keep_pct = atof(v);
        else if (strcmp(a, "--idle") == 0)
            opt.idle_s = (unsigned)atoi(v);
        else if (strcmp(a, "--idle-alloc") == 0)
            opt.idle_alloc = atoi(v) != 0;
        else if (strcmp(a, "--seed") == 0)
            opt.seed = strtoull(v, NULL, 0);
        else if (strcmp(a, "--sizes") == 0 && (strcmp(v, "exact") == 0 || strcmp(v, "pages") == 0))
            opt.page_sizes = strcmp(v, "pages") == 0;
        else
            usage(argv[0]);
    }
    if (opt.threads < 1 || opt.phases < 1 || opt.rounds < 1 || opt.idle_s < 2 ||
        opt.budget_mib <= 0)
        usage(argv[0]);
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    page_size = sysconf(_SC_PAGESIZE);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    const char *preload = getenv("LD_PRELOAD");
    printf("ebb_demo: %u phases x %u threads, %.0f MiB in flight per phase, %.1f%% kept, "
           "allocator %s\n",
           opt.phases, opt.threads, opt.budget_mib, opt.keep_pct,
           preload && *preload ? preload : "glibc (no LD_PRELOAD)");
    fflush(stdout);
    size_t baseline = sample(); /* the allocator is initialised: printf allocated */

    pthread_t sampler_tid;
    if (opt.trace)
        pthread_create(&sampler_tid, NULL, sampler, NULL);
    double work_t0 = elapsed_s();
    for (unsigned ph = 0; ph < opt.phases; ph++) {
        run_phase(ph);
        size_t rss = sample();
        printf("phase %2u/%u at %5.1f s: rss %7.1f MiB, kept %6.1f MiB, peak so far %7.1f MiB\n",
               ph + 1, opt.phases, elapsed_s(), (double)rss / MIB, (double)kept_bytes / MIB,
               (double)peak_rss() / MIB);
        fflush(stdout);
    }
    double idle_t0 = elapsed_s(), work_s = idle_t0 - work_t0;
    size_t end = sample();
    printf("work_end baseline_kib=%zu live_bytes=%zu live_usable_bytes=%zu work_s=%.3f\n",
           baseline / 1024, kept_bytes, kept_usable, work_s);
    fflush(stdout);
    size_t idle2 = idle_until(idle_t0, 2.0);
    size_t idle_end = idle_until(idle_t0, (double)opt.idle_s);
    if (opt.trace) {
        atomic_store(&sampler_stop, true);
        pthread_join(sampler_tid, NULL);
    }

    double peak = (double)peak_rss() / MIB;
    printf("peak RSS            %8.1f MiB\n", peak);
    printf("RSS at end of work  %8.1f MiB  (after %.1f s)\n", (double)end / MIB, work_s);
    printf("RSS after idle 2 s  %8.1f MiB\n", (double)idle2 / MIB);
    printf("RSS after idle %2u s %8.1f MiB\n", opt.idle_s, (double)idle_end / MIB);
    printf("live bytes held     %8.1f MiB  (%zu objects)\n", (double)kept_bytes / MIB, kept_len);
    print_ebb_summary();
    printf("summary peak_mib=%.1f end_mib=%.1f idle2_mib=%.1f idle_mib=%.1f idle_s=%u "
           "live_mib=%.1f work_s=%.1f baseline_mib=%.1f\n",
           peak, (double)end / MIB, (double)idle2 / MIB, (double)idle_end / MIB, opt.idle_s,
           (double)kept_bytes / MIB, work_s, (double)baseline / MIB);

    for (size_t i = 0; i < kept_len; i++)
        free(kept[i].p);
    free(kept);
    return 0;
}
