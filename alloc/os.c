/*
 * Linux implementation of os.h. Every system call ebbmalloc makes is here.
 */
#include <fcntl.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#ifndef PR_SET_VMA
#define PR_SET_VMA 0x53564d41
#define PR_SET_VMA_ANON_NAME 0
#endif

extern char **environ;

static void *map_raw(size_t len) {
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

uintptr_t ebb__os_random_word(void) {
    int saved = errno;
    uintptr_t w = 0;
    long n = syscall(SYS_getrandom, &w, sizeof(w), 1 /* GRND_NONBLOCK */);
    errno = saved;
    if (n == (long)sizeof(w))
        return w;
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uintptr_t)t.tv_nsec * 0x9e3779b97f4a7c15u ^ (uintptr_t)&t;
}

static _Atomic size_t os_page;

size_t ebb__os_page_size(void) {
    size_t page = atomic_load_explicit(&os_page, memory_order_relaxed);
    if (page == 0) {
        unsigned long v = getauxval(AT_PAGESZ);
        /* Absent or odd: the page of every x86-64 kernel. */
        page = v != 0 && (v & (v - 1)) == 0 ? (size_t)v : 4096;
        atomic_store_explicit(&os_page, page, memory_order_relaxed);
    }
    return page;
}

size_t ebb__os_granule(void) {
    size_t page = ebb__os_page_size();
    return page > EBB_PAGE ? page : EBB_PAGE;
}

void *ebb__os_map(size_t len) {
    int saved = errno;
    void *p = map_raw(len);
    errno = p ? saved : ENOMEM;
    return p;
}

void *ebb__os_map_aligned(size_t len, size_t align, size_t offset) {
    int saved = errno;
    /* Fast try: the kernel hands out addresses top-down next to the previous
     * mapping, so a plain mapping is often aligned already. */
    if (offset == 0 && align == EBB_SEG && len == EBB_SEG) {
        void *p = map_raw(len);
        if (p == NULL)
            goto oom;
        if (((uintptr_t)p & (align - 1)) == 0)
            return p;
        munmap(p, len);
    }
    if (len > SIZE_MAX - align - EBB_SEG)
        goto oom;
    size_t over = len + align;
    char *raw = map_raw(over);
    if (raw == NULL)
        goto oom;
    uintptr_t m = (((uintptr_t)raw + offset + align - 1) & ~(uintptr_t)(align - 1)) - offset;
    if (m < (uintptr_t)raw)
        m += align;
    /* The kernel maps and unmaps whole pages of its own: keep len rounded
     * up to one, and cut only whole ones (m is aligned to one: offset and
     * align are multiples). */
    size_t granule = ebb__os_granule();
    size_t head = m - (uintptr_t)raw;
    size_t keep = ebb_align_up(len, granule);
    size_t mapped = ebb_align_up(over, granule);
    size_t tail = mapped > head + keep ? mapped - head - keep : 0;
    if (head)
        munmap(raw, head);
    if (tail)
        munmap((char *)m + keep, tail);
    errno = saved;
    return (void *)m;
oom:
    errno = ENOMEM;
    return NULL;
}

int ebb__os_unmap(void *addr, size_t len) { return munmap(addr, len) == 0 ? 0 : errno; }

static _Atomic bool purge_works = true;
#define PROBE_BYTES 4096 /* a page on every Linux ebbmalloc supports */

int ebb__os_purge(void *addr, size_t len) {
    if (!atomic_load_explicit(&purge_works, memory_order_relaxed))
        return ENOSYS;
    int saved = errno;
    int r = madvise(addr, len, MADV_DONTNEED) == 0 ? 0 : errno;
    errno = saved;
    return r;
}

bool ebb__os_purge_probe(void) {
    if (ebb__os_page_size() > EBB_PAGE) {
        atomic_store_explicit(&purge_works, false, memory_order_relaxed);
        return false;
    }
    int saved = errno;
    bool works = true; /* unless a page shows otherwise */
    volatile unsigned char *p = map_raw(PROBE_BYTES);
    if (p != NULL) {
        p[0] = 1;
        /* Refused (a locked page, under mlockall(MCL_FUTURE)) says nothing
         * of the call: each purge then reports its own failure. Accepted,
         * the page must read as zero. */
        if (madvise((void *)p, PROBE_BYTES, MADV_DONTNEED) == 0)
            works = p[0] == 0;
        munmap((void *)p, PROBE_BYTES);
    }
    atomic_store_explicit(&purge_works, works, memory_order_relaxed);
    errno = saved;
    return works;
}

bool ebb__os_purge_works(void) { return atomic_load_explicit(&purge_works, memory_order_relaxed); }

int ebb__os_purge_lazy(void *addr, size_t len) {
    if (!atomic_load_explicit(&purge_works, memory_order_relaxed))
        return ENOSYS;
#ifdef MADV_FREE
    int saved = errno;
    int r = madvise(addr, len, MADV_FREE) == 0 ? 0 : errno;
    errno = saved;
    if (r != EINVAL)
        return r;
#endif
    return ebb__os_purge(addr, len);
}

int ebb__os_remap_inplace(void *addr, size_t old_len, size_t new_len) {
    int saved = errno;
    void *p = mremap(addr, old_len, new_len, 0);
    int r = p == MAP_FAILED ? errno : 0;
    errno = saved;
    return r;
}

void *ebb__os_remap_aligned(void *addr, size_t old_len, size_t new_len, size_t align,
                            size_t offset) {
    int saved = errno;
    /* Reserve an aligned range, then move the mapping over it. */
    void *target = ebb__os_map_aligned(new_len, align, offset);
    if (target == NULL)
        return NULL;
    void *p = mremap(addr, old_len, new_len, MREMAP_MAYMOVE | MREMAP_FIXED, target);
    if (p == MAP_FAILED) {
        munmap(target, new_len);
        errno = saved;
        return NULL;
    }
    errno = saved;
    return p;
}

/* Once the kernel refuses (no CONFIG_ANON_VMA_NAME, no
 * CONFIG_TRANSPARENT_HUGEPAGE), stop asking. */
static _Atomic bool names_unsupported, thp_unsupported;

static void name_mapping(void *addr, size_t len, const char *name) {
    if (atomic_load_explicit(&names_unsupported, memory_order_relaxed))
        return;
    if (prctl(PR_SET_VMA, PR_SET_VMA_ANON_NAME, (unsigned long)addr, len, (unsigned long)name) != 0 &&
        errno == EINVAL)
        atomic_store_explicit(&names_unsupported, true, memory_order_relaxed);
}

/* Why never is the default (alloc/README.md, "Transparent huge pages"):
 * purging a 4 KiB page out of a huge page unmaps it, and the process's RSS
 * falls, but the huge page stays whole and charged to the cgroup until the
 * kernel splits it under memory pressure; and khugepaged, on a system set
 * to "always", collapses a 2 MiB range with one resident page back into a
 * whole huge page. */
static _Atomic unsigned thp_mode = EBB_THP_NEVER;

void ebb__os_set_thp(unsigned mode) { atomic_store_explicit(&thp_mode, mode, memory_order_relaxed); }

static void advise_thp(void *addr, size_t len, ebb_map_kind_t kind) {
    unsigned mode = atomic_load_explicit(&thp_mode, memory_order_relaxed);
    if (mode == EBB_THP_DEFAULT || atomic_load_explicit(&thp_unsupported, memory_order_relaxed))
        return;
    int advice = mode == EBB_THP_ALWAYS && kind != EBB_MAP_META ? MADV_HUGEPAGE : MADV_NOHUGEPAGE;
    if (madvise(addr, len, advice) != 0 && errno == EINVAL)
        atomic_store_explicit(&thp_unsupported, true, memory_order_relaxed);
}

void ebb__os_mapped(void *addr, size_t len, ebb_map_kind_t kind) {
    static const char *const names[] = {
        [EBB_MAP_META] = "ebbmalloc-meta",
        [EBB_MAP_PAGES] = "ebbmalloc",
        [EBB_MAP_HUGE] = "ebbmalloc-huge",
    };
    int saved = errno;
    name_mapping(addr, len, names[kind]);
    advise_thp(addr, len, kind);
    errno = saved;
}

/* ---- CPUs -------------------------------------------------------------- */
static unsigned affinity_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) != 0)
        return 0;
    return (unsigned)CPU_COUNT(&set);
}

/* Read a small file into buf (NUL-terminated); returns length or -1. */
static long read_small(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    long n = read(fd, buf, cap - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return n;
}

static const char *parse_ll(const char *s, long long *out) {
    bool neg = false;
    long long v = 0;
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s == '-') {
        neg = true;
        s++;
    }
    if (*s < '0' || *s > '9')
        return NULL;
    while (*s >= '0' && *s <= '9') {
        if (v > (INT64_MAX - 9) / 10)
            return NULL;
        v = v * 10 + (*s++ - '0');
    }
    *out = neg ? -v : v;
    return s;
}

unsigned ebb__os_cpu_quota_to_cpus(long long quota, long long period) {
    if (quota <= 0 || period <= 0)
        return 0;
    long long n = (quota + period - 1) / period;
    return n > 65536 ? 65536 : (unsigned)n;
}

unsigned ebb__os_parse_cpu_max(const char *text) {
    long long quota, period;
    const char *s = text;
    while (*s == ' ')
        s++;
    if (strncmp(s, "max", 3) == 0)
        return 0;
    s = parse_ll(s, &quota);
    if (s == NULL || parse_ll(s, &period) == NULL)
        return 0;
    return ebb__os_cpu_quota_to_cpus(quota, period);
}

/* The cgroup path of this process for a controller: v2 ("0::/path") when
 * controller is NULL, else the v1 line naming the controller. */
static bool cgroup_path(const char *controller, char *out, size_t cap) {
    char buf[4096];
    if (read_small("/proc/self/cgroup", buf, sizeof(buf)) < 0)
        return false;
    for (char *line = buf; *line;) {
        char *end = strchr(line, '\n');
        if (end)
            *end = '\0';
        char *c1 = strchr(line, ':');
        char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
        if (c2) {
            bool match;
            if (controller == NULL) {
                match = c1 == line + 1 && line[0] == '0' && c2 == c1 + 1;
            } else {
                match = false;
                size_t cl = strlen(controller);
                for (char *t = c1 + 1; t < c2;) {
                    char *comma = memchr(t, ',', (size_t)(c2 - t));
                    char *te = comma ? comma : c2;
                    if ((size_t)(te - t) == cl && memcmp(t, controller, cl) == 0)
                        match = true;
                    t = te + 1;
                }
            }
            if (match && strlen(c2 + 1) < cap) {
                strcpy(out, c2 + 1);
                return true;
            }
        }
        if (!end)
            break;
        line = end + 1;
    }
    return false;
}

static size_t join(char *dst, size_t cap, const char *a, const char *b, const char *c) {
    return ebb__fmt(dst, cap, "%s%s%s", a, b, c);
}

unsigned ebb__os_cgroup_cpu_limit(void) {
    char rel[1024], path[1400], buf[128];
    /* cgroup v2: the process's own cgroup, then its ancestors (a limit set on
     * a parent binds too); the smallest wins. */
    unsigned best = 0;
    if (cgroup_path(NULL, rel, sizeof(rel))) {
        for (;;) {
            join(path, sizeof(path), "/sys/fs/cgroup", rel, strcmp(rel, "/") ? "/cpu.max" : "cpu.max");
            if (read_small(path, buf, sizeof(buf)) > 0) {
                unsigned n = ebb__os_parse_cpu_max(buf);
                if (n && (!best || n < best))
                    best = n;
            }
            char *slash = strrchr(rel, '/');
            if (slash == NULL || strcmp(rel, "/") == 0)
                break;
            slash[slash == rel ? 1 : 0] = '\0'; /* "/a" -> "/", "/a/b" -> "/a" */
        }
        if (best)
            return best;
    }
    /* cgroup v1: cpu controller's quota and period. */
    if (cgroup_path("cpu", rel, sizeof(rel))) {
        static const char *const roots[] = {"/sys/fs/cgroup/cpu", "/sys/fs/cgroup/cpu,cpuacct"};
        for (size_t r = 0; r < 2; r++) {
            long long quota, period;
            join(path, sizeof(path), roots[r], rel, "/cpu.cfs_quota_us");
            if (read_small(path, buf, sizeof(buf)) <= 0 || !parse_ll(buf, &quota))
                continue;
            join(path, sizeof(path), roots[r], rel, "/cpu.cfs_period_us");
            if (read_small(path, buf, sizeof(buf)) <= 0 || !parse_ll(buf, &period))
                continue;
            return ebb__os_cpu_quota_to_cpus(quota, period);
        }
    }
    return 0;
}

unsigned ebb__os_ncpus(void) {
    int saved = errno;
    unsigned n = affinity_cpus();
    if (n == 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (unsigned)c : 1;
    }
    unsigned q = ebb__os_cgroup_cpu_limit();
    if (q && q < n)
        n = q;
    errno = saved;
    return n ? n : 1;
}

unsigned ebb__os_parse_cpu_list(const char *text) {
    long long v, max = -1;
    for (const char *s = text; (s = parse_ll(s, &v)) != NULL;) {
        if (v > max)
            max = v;
        if (*s != '-' && *s != ',')
            break;
        s++;
    }
    return max >= 0 && max < (long long)UINT32_MAX ? (unsigned)max + 1 : 0;
}

unsigned ebb__os_cpu_ids(void) {
    int saved = errno;
    char buf[256];
    unsigned n = 0;
    if (read_small("/sys/devices/system/cpu/possible", buf, sizeof(buf)) > 0)
        n = ebb__os_parse_cpu_list(buf);
    errno = saved;
    return n;
}

/* The calling thread's affinity mask, read or set (up to 4096 CPUs). */
bool ebb__os_affinity_get(ebb_cpumask_t *m) {
    int saved = errno;
    memset(m, 0, sizeof(*m));
    bool ok = sched_getaffinity(0, sizeof(m->bits), (cpu_set_t *)(void *)m->bits) == 0;
    errno = saved;
    return ok;
}

bool ebb__os_affinity_set(const ebb_cpumask_t *m) {
    int saved = errno;
    bool ok = sched_setaffinity(0, sizeof(m->bits), (const cpu_set_t *)(const void *)m->bits) == 0;
    errno = saved;
    return ok;
}

/* The CPU this thread runs on, a hint that may be stale by the time it is
 * used: the kernel's copy in the thread's rseq area, which glibc 2.35+
 * registers for every thread (one load); else getcpu (vDSO); else 0. */
extern const ptrdiff_t __rseq_offset __attribute__((weak));
extern const unsigned int __rseq_size __attribute__((weak));

static inline void *thread_pointer(void) {
#if defined(__x86_64__)
    void *tp;
    __asm__("mov %%fs:0, %0" : "=r"(tp));
    return tp;
#else
    return __builtin_thread_pointer();
#endif
}

void *ebb__os_rseq_area(int64_t *offset) {
    if (&__rseq_size == NULL || __rseq_size < 16)
        return NULL; /* cpu_id and rseq_cs are the fields used */
    *offset = __rseq_offset;
    return (char *)thread_pointer() + __rseq_offset;
}

/* From <linux/membarrier.h>, which older headers lack. */
#define EBB_MEMBARRIER_CMD_QUERY 0
#define EBB_MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ (1 << 7)
#define EBB_MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ (1 << 8)
#define EBB_MEMBARRIER_CMD_FLAG_CPU (1 << 0)

bool ebb__os_rseq_fence_register(void) {
#ifdef SYS_membarrier
    int saved = errno;
    long cmds = syscall(SYS_membarrier, EBB_MEMBARRIER_CMD_QUERY, 0, 0);
    bool ok = cmds > 0 && (cmds & EBB_MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ) &&
              syscall(SYS_membarrier, EBB_MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED_RSEQ, 0, 0) == 0;
    errno = saved;
    return ok;
#else
    return false;
#endif
}

bool ebb__os_rseq_fence(unsigned cpu) {
#ifdef SYS_membarrier
    int saved = errno;
    bool ok = syscall(SYS_membarrier, EBB_MEMBARRIER_CMD_PRIVATE_EXPEDITED_RSEQ,
                      EBB_MEMBARRIER_CMD_FLAG_CPU, (int)cpu) == 0;
    errno = saved;
    return ok;
#else
    (void)cpu;
    return false;
#endif
}

unsigned ebb__os_cpu_now(void) {
    int64_t off;
    /* struct rseq: u32 cpu_id_start, u32 cpu_id; cpu_id is (u32)-1 or -2
     * while unregistered. */
    const volatile uint32_t *rs = ebb__os_rseq_area(&off);
    if (rs != NULL && rs[1] < UINT32_MAX - 1)
        return rs[1];
    int saved = errno;
    int id = sched_getcpu();
    errno = saved;
    return id >= 0 ? (unsigned)id : 0;
}

/* ---- environment and messages ------------------------------------------ */
const char *ebb__os_getenv(const char *name) {
    size_t len = strlen(name);
    if (environ == NULL)
        return NULL;
    for (char **e = environ; *e; e++)
        if (strncmp(*e, name, len) == 0 && (*e)[len] == '=')
            return *e + len + 1;
    return NULL;
}

bool ebb__os_secure(void) { return getauxval(AT_SECURE) != 0; }

void ebb__os_write_err(const char *buf, size_t len) {
    int saved = errno;
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        buf += n;
        len -= (size_t)n;
    }
    errno = saved;
}

static uint64_t clock_ns(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t ebb__os_now_ns(void) { return clock_ns(CLOCK_MONOTONIC); }

/* Both clocks count from the same origin (the monotonic one's); the coarse
 * one is read from the vDSO on every Linux since 2.6.32 and every
 * clocksource, where CLOCK_MONOTONIC is a system call on some hypervisors'
 * clocksources (Xen's, for one). */
uint64_t ebb__os_coarse_ns(void) { return clock_ns(CLOCK_MONOTONIC_COARSE); }

void ebb__os_futex_wait(volatile uint32_t *addr, uint32_t val) {
    int saved = errno;
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
    errno = saved;
}

void ebb__os_futex_wake(volatile uint32_t *addr, int n) {
    int saved = errno;
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
    errno = saved;
}

void ebb__os_futex_wait_timeout(volatile uint32_t *addr, uint32_t val, uint64_t timeout_ns) {
    int saved = errno;
    struct timespec ts = {(time_t)(timeout_ns / 1000000000u), (long)(timeout_ns % 1000000000u)};
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, &ts, NULL, 0);
    errno = saved;
}

bool ebb__os_thread_start(void *(*fn)(void *), void *arg, const char *name) {
    int saved = errno;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* inherited by the new thread */
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    pthread_t t;
    bool ok = pthread_create(&t, &attr, fn, arg) == 0;
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (ok)
        pthread_setname_np(t, name);
    errno = saved;
    return ok;
}

bool ebb__os_parse_mem_value(const char *text, uint64_t *out) {
    long long v;
    if (parse_ll(text, &v) == NULL || v <= 0)
        return false;
    if ((unsigned long long)v >= (1ull << 60)) /* v1's "no limit" */
        return false;
    *out = (uint64_t)v;
    return true;
}

/* The value of key in the "key value" lines of the file at path. */
static bool stat_value(const char *path, const char *key, uint64_t *out) {
    char buf[8192];
    if (read_small(path, buf, sizeof(buf)) <= 0)
        return false;
    size_t kl = strlen(key);
    for (const char *line = buf; line && *line;) {
        long long v;
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ' && parse_ll(line + kl + 1, &v) &&
            v >= 0) {
            *out = (uint64_t)v;
            return true;
        }
        line = strchr(line, '\n');
        if (line)
            line++;
    }
    return false;
}

/* The use and the limit of the cgroup at dir; true when it has a limit.
 *
 * v2's limit is the lower of memory.max (the OOM killer's) and memory.high
 * (above it the kernel reclaims from the cgroup and throttles its
 * allocations; our free pages are anonymous, not reclaimable without
 * swap); v1's is memory.limit_in_bytes.
 *
 * The use is the working set, as kubelet reckons it for evictions: the
 * cgroup's charge less its inactive file pages, which the kernel reclaims
 * before it throttles or kills anyone. A service that reads files (Kafka,
 * Elasticsearch, RocksDB) keeps its cgroup's charge at the limit with page
 * cache; counted, it would have us purge every 100 ms for nothing. The
 * statistics are read only for a level charged at least pct of its limit:
 * below that, its working set cannot be over it either. */
static bool mem_level(const char *dir, bool v2, unsigned pct, uint64_t *current,
                      uint64_t *limit) {
    char path[1400], buf[64];
    uint64_t lim = 0, v;
    join(path, sizeof(path), dir, "/", v2 ? "memory.max" : "memory.limit_in_bytes");
    if (read_small(path, buf, sizeof(buf)) > 0 && ebb__os_parse_mem_value(buf, &v))
        lim = v;
    if (v2) {
        join(path, sizeof(path), dir, "/", "memory.high");
        if (read_small(path, buf, sizeof(buf)) > 0 && ebb__os_parse_mem_value(buf, &v) &&
            (lim == 0 || v < lim))
            lim = v;
    }
    if (lim == 0)
        return false;
    join(path, sizeof(path), dir, "/", v2 ? "memory.current" : "memory.usage_in_bytes");
    long long use;
    if (read_small(path, buf, sizeof(buf)) <= 0 || parse_ll(buf, &use) == NULL || use < 0)
        return false;
    uint64_t cur = (uint64_t)use;
    join(path, sizeof(path), dir, "/", "memory.stat");
    if ((unsigned __int128)cur * 100 >= (unsigned __int128)lim * pct &&
        stat_value(path, v2 ? "inactive_file" : "total_inactive_file", &v))
        cur = v < cur ? cur - v : 0;
    *current = cur;
    *limit = lim;
    return true;
}

bool ebb__os_cgroup_memory_in(const char *root, const char *rel, bool v2, unsigned pct,
                              uint64_t *current, uint64_t *limit) {
    char dir[1400], path[1024];
    bool found = false;
    if (strlen(rel) >= sizeof(path))
        return false;
    strcpy(path, rel);
    /* From the process's cgroup up to the root: every level with a limit
     * counts, and the fullest one is reported -- a parent's limit binds the
     * whole subtree, whatever a child's own says. The root is read last
     * also when the path is not visible under the mount (a container's
     * namespace: the mount's root is the container's cgroup). */
    for (;;) {
        uint64_t c, l;
        join(dir, sizeof(dir), root, strcmp(path, "/") ? path : "", "");
        if (mem_level(dir, v2, pct, &c, &l) &&
            (!found || (unsigned __int128)c * *limit > (unsigned __int128)*current * l)) {
            *current = c;
            *limit = l;
            found = true;
        }
        char *slash = strrchr(path, '/');
        if (slash == NULL || strcmp(path, "/") == 0)
            return found;
        slash[slash == path ? 1 : 0] = '\0';
    }
}

bool ebb__os_cgroup_memory(unsigned pct, uint64_t *current, uint64_t *limit) {
    int saved = errno;
    char rel[1024];
    bool ok = false;
    if (cgroup_path(NULL, rel, sizeof(rel)))
        ok = ebb__os_cgroup_memory_in("/sys/fs/cgroup", rel, true, pct, current, limit);
    if (!ok && cgroup_path("memory", rel, sizeof(rel)))
        ok = ebb__os_cgroup_memory_in("/sys/fs/cgroup/memory", rel, false, pct, current, limit);
    errno = saved;
    return ok;
}

void ebb__os_yield(void) { sched_yield(); }

/* ---- the shared statistics page ----------------------------------------- */
int ebb__os_shm_create(const char *path, size_t len, void **out) {
    int saved = errno, r = 0;
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = errno;
        goto done;
    }
    /* The umask can only narrow 0600; make it exactly that. */
    if (fchmod(fd, 0600) != 0 || ftruncate(fd, (off_t)len) != 0) {
        r = errno;
        close(fd);
        unlink(path);
        goto done;
    }
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        r = errno;
        close(fd);
        unlink(path);
        goto done;
    }
    close(fd);
    *out = p;
done:
    errno = saved;
    return r;
}

/* A page this process may take over or remove: a regular file of this
 * user with one link and mode 0600 -- as ebb__os_shm_create makes them. */
static bool own_page(const struct stat *st) {
    return S_ISREG(st->st_mode) && st->st_uid == geteuid() && st->st_nlink == 1 &&
           (st->st_mode & 07777) == 0600;
}

int ebb__os_unlink_stale(const char *path) {
    int saved = errno, r = 0;
    struct stat st;
    if (lstat(path, &st) != 0)
        r = errno;
    else if (!own_page(&st))
        r = EPERM;
    else if (unlink(path) != 0)
        r = errno;
    errno = saved;
    return r;
}

/* Read up to len bytes from the start of the regular file path, never
 * through a symlink; with id, only an own_page, whose identity goes there. */
static long read_head(const char *path, void *buf, size_t len, uint64_t *id) {
    int saved = errno;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    long n = -1;
    if (fd >= 0) {
        struct stat st;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && (id == NULL || own_page(&st))) {
            if (id != NULL) {
                id[0] = (uint64_t)st.st_dev;
                id[1] = (uint64_t)st.st_ino;
            }
            n = pread(fd, buf, len, 0);
        }
        close(fd);
    }
    errno = saved;
    return n;
}

int ebb__os_dir_each(const char *dir, bool (*fn)(const char *name, void *arg), void *arg) {
    int saved = errno, r = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        r = errno;
        errno = saved;
        return r;
    }
    /* struct linux_dirent64: d_ino, d_off, d_reclen, d_type, d_name[]. */
    enum { RECLEN_OFF = 16, NAME_OFF = 19 };
    char buf[4096] __attribute__((aligned(8)));
    bool more = true;
    while (more) {
        long n = syscall(SYS_getdents64, fd, buf, sizeof(buf));
        if (n <= 0) {
            r = n < 0 ? errno : 0;
            break;
        }
        for (long off = 0; off < n && more;) {
            unsigned short reclen;
            memcpy(&reclen, buf + off + RECLEN_OFF, sizeof(reclen));
            if (reclen == 0)
                break;
            more = fn(buf + off + NAME_OFF, arg);
            off += reclen;
        }
    }
    close(fd);
    errno = saved;
    return r;
}

long ebb__os_read_own_file(const char *path, void *buf, size_t len, uint64_t id[2]) {
    return read_head(path, buf, len, id);
}

int ebb__os_unlink_same(const char *path, const uint64_t id[2]) {
    int saved = errno, r = 0;
    struct stat st;
    if (lstat(path, &st) != 0)
        r = errno;
    else if ((uint64_t)st.st_dev != id[0] || (uint64_t)st.st_ino != id[1])
        r = ESTALE;
    else if (unlink(path) != 0)
        r = errno;
    errno = saved;
    return r;
}

bool ebb__os_pid_gone(int pid) {
    int saved = errno;
    bool gone = pid > 0 && kill(pid, 0) != 0 && errno == ESRCH;
    errno = saved;
    return gone;
}

long ebb__os_read_head(const char *path, void *buf, size_t len) {
    return read_head(path, buf, len, NULL);
}

int ebb__os_unlink(const char *path) {
    int saved = errno;
    int r = unlink(path) == 0 ? 0 : errno;
    errno = saved;
    return r;
}

int ebb__os_getpid(void) { return (int)getpid(); }

uint64_t ebb__os_pid_ns(void) {
    int saved = errno;
    struct stat st;
    uint64_t ino = stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
    errno = saved;
    return ino;
}

uint64_t ebb__os_start_time(void) {
    char buf[1024];
    int saved = errno;
    long n = read_small("/proc/self/stat", buf, sizeof(buf));
    errno = saved;
    if (n <= 0)
        return 0;
    /* "pid (comm) state ppid ..."; comm may hold spaces and parentheses, so
     * count fields after the last ')'. starttime is field 22. */
    char *s = strrchr(buf, ')');
    if (s == NULL)
        return 0;
    int field = 2;
    for (s++; *s && field < 22; s++)
        if (*s == ' ')
            field++;
    long long v;
    return parse_ll(s, &v) && v >= 0 ? (uint64_t)v : 0;
}

void ebb__os_fatal(const char *msg) {
    ebb__warn("fatal: %s", msg);
    abort();
}
