/*
 * Helpers of the decay tests: a workload that leaves a few hundred MiB
 * free with a few blocks still live, the resident set polled until it
 * falls under a bound, and the allocator's background thread found by its
 * name among the process's tasks.
 */
#ifndef EBB_DECAY_UTIL_H
#define EBB_DECAY_UTIL_H

#include "stress_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <time.h>

#define DU_MIN_BLOCK ((size_t)16)
#define DU_MAX_BLOCK (256 * TU_KiB)
#define DU_KEEP_ONE_IN 50        /* about 2% of the blocks stay live */
#define DU_SLACK (32 * TU_MiB)   /* resident bytes allowed beyond baseline + live */
#define DU_GRACE_MS 2000         /* after decay_ms, before the set must have fallen */
#define DU_POLL_MS 50
#define DU_BG_NAME "ebbmalloc-bg"

static inline uint64_t du_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static inline void du_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* An option of the running allocator as a number (0 if unknown). */
static inline uint64_t du_option(const char *name)
{
    char buf[32];
    const char *v = ebb_option(name, buf, sizeof(buf));
    return v ? strtoull(v, NULL, 10) : 0;
}

/* One thread's share of the workload. The pointer array is mapped apart
 * from the allocator; only its touched pages are resident. */
typedef struct du_churn_s {
    uint64_t seed;
    size_t bytes;      /* in: allocate (and write) this much, then free */
    void **kept;       /* out: the blocks left live, kept[0..nkept) */
    size_t nkept;
    size_t kept_bytes; /* out: their usable size */
    size_t cap;        /* slots mapped at kept */
} du_churn_t;

/* Allocate c->bytes in blocks of DU_MIN_BLOCK..DU_MAX_BLOCK (log-uniform),
 * writing all of each, then free all but one in DU_KEEP_ONE_IN. False if an
 * allocation failed. */
static inline bool du_churn(du_churn_t *c)
{
    c->cap = c->bytes / DU_MIN_BLOCK + 1;
    void **v = mmap(NULL, c->cap * sizeof(void *), PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (v == MAP_FAILED)
        return false;
    tu_rng_t rng = tu_rng(c->seed);
    size_t n = 0, total = 0;
    bool ok = true;
    while (total < c->bytes && n < c->cap) {
        size_t size = tu_rng_size(&rng, DU_MIN_BLOCK, DU_MAX_BLOCK);
        v[n] = malloc(size);
        if (v[n] == NULL) {
            ok = false;
            break;
        }
        memset(v[n], (int)(n | 1), size);
        total += size;
        n++;
    }
    c->nkept = c->kept_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (i % DU_KEEP_ONE_IN == 0) {
            c->kept_bytes += malloc_usable_size(v[i]);
            v[c->nkept++] = v[i];
        } else {
            free(v[i]);
        }
    }
    c->kept = v;
    return ok;
}

/* Free what du_churn kept. */
static inline void du_release(du_churn_t *c)
{
    for (size_t i = 0; i < c->nkept; i++)
        free(c->kept[i]);
    munmap(c->kept, c->cap * sizeof(void *));
    c->kept = NULL;
    c->nkept = c->kept_bytes = 0;
}

/* Called right after the frees: poll the resident set every DU_POLL_MS
 * until it is at most base + live + DU_SLACK, for up to timeout_ms. Prints
 * the figures under who. True when it fell that far in time. */
static inline bool du_resident_falls(const char *who, size_t base, size_t live,
                                     uint64_t timeout_ms)
{
    uint64_t start = du_now_ms(), took;
    size_t after_free = tu_statm(TU_STATM_RESIDENT), bound = base + live + DU_SLACK, rss;
    for (;;) {
        rss = tu_statm(TU_STATM_RESIDENT);
        took = du_now_ms() - start;
        if (rss <= bound || took >= timeout_ms)
            break;
        du_sleep_ms(DU_POLL_MS);
    }
    ebb_summary_t s = tu_summary();
    fprintf(stderr,
            "%s: baseline %zu MiB, live %zu MiB, resident %zu MiB after the frees, %zu MiB "
            "%llu ms later (bound %zu MiB within %llu ms); ebb: dirty %zu MiB, purged %zu MiB\n",
            who, base / TU_MiB, live / TU_MiB, after_free / TU_MiB, rss / TU_MiB,
            (unsigned long long)took, bound / TU_MiB, (unsigned long long)timeout_ms,
            s.dirty / TU_MiB, s.purged / TU_MiB);
    return rss <= bound;
}

/* Read a small /proc file into buf without the C library's allocations. */
static inline bool du_read_file(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        return false;
    buf[n] = '\0';
    return true;
}

/* The id of this process's task named name, or -1. */
static inline long du_task_named(const char *name)
{
    DIR *d = opendir("/proc/self/task");
    long found = -1;
    if (d == NULL)
        return -1;
    for (struct dirent *e; found < 0 && (e = readdir(d)) != NULL;) {
        char path[300], comm[32];
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
        if (du_read_file(path, comm, sizeof(comm)) && strncmp(comm, name, strlen(name)) == 0 &&
            (comm[strlen(name)] == '\n' || comm[strlen(name)] == '\0'))
            found = strtol(e->d_name, NULL, 10);
    }
    closedir(d);
    return found;
}

/* Wait up to timeout_ms for the background thread; its task id or -1. */
static inline long du_wait_background(uint64_t timeout_ms)
{
    uint64_t start = du_now_ms();
    long tid;
    while ((tid = du_task_named(DU_BG_NAME)) < 0 && du_now_ms() - start < timeout_ms)
        du_sleep_ms(DU_POLL_MS);
    return tid;
}

#endif /* EBB_DECAY_UTIL_H */
