/*
 * The only contact between ebbmalloc and the operating system.
 *
 * Contract for every function here:
 *  - none allocates memory, uses stdio, or calls a locale-dependent function;
 *  - none may be called with an allocator lock held unless it says so (all
 *    are plain system calls and may be);
 *  - addresses and lengths marked "page-aligned" must be multiples of
 *    EBB_PAGE; the result of passing anything else is undefined. Where the
 *    kernel's page is larger (ebb__os_page_size), the kernel rounds lengths
 *    up to its own page and refuses addresses inside one: the callers keep
 *    to ebb__os_granule() for what they unmap, and nothing is purged.
 * os.c is the Linux implementation; no other file includes <sys/mman.h>,
 * <linux/futex.h> or reads /proc or /sys.
 */
#ifndef EBB_OS_H
#define EBB_OS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A word of randomness: getrandom(2) without blocking, else the clock and
 * an address (ASLR). Not for secrets. */
uintptr_t ebb__os_random_word(void);

/* The kernel's page size (AT_PAGESZ), read once: 4 KiB on x86-64, 4, 16
 * or 64 KiB on arm64, 64 KiB on most ppc64le kernels. */
size_t ebb__os_page_size(void);

/* The unit of mapping lengths the allocator unmaps or trims: the larger of
 * EBB_PAGE and the kernel's page. */
size_t ebb__os_granule(void);

/* Map len bytes of fresh zeroed read-write memory anywhere.
 * pre: len page-aligned. Returns NULL when the OS refuses (errno ENOMEM). */
void *ebb__os_map(size_t len);

/* Map len bytes of fresh zeroed read-write memory at an address m such that
 * (m + offset) % align == 0. What stays mapped is len rounded up to
 * ebb__os_granule().
 * pre: len page-aligned; align a power of two >= EBB_SEG; offset < align,
 *      a multiple of ebb__os_granule().
 * Returns NULL when the OS refuses (errno is then left as ENOMEM). */
void *ebb__os_map_aligned(size_t len, size_t align, size_t offset);

/* Unmap. pre: addr, len page-aligned. Returns 0 or an errno. */
int ebb__os_unmap(void *addr, size_t len);

/* Give the pages back to the OS; their contents read as zero afterwards
 * (MADV_DONTNEED on private anonymous memory). pre: page-aligned.
 * Returns 0 or an errno; on an error the pages may still hold what they
 * held (locked pages, mlock or mlockall: EINVAL), and after
 * ebb__os_purge_probe found MADV_DONTNEED without effect, every call
 * returns ENOSYS without making one. */
int ebb__os_purge(void *addr, size_t len);

/* Does MADV_DONTNEED empty a page here? Tries it on a page of its own and
 * sets what ebb__os_purge does accordingly. Where the call is accepted and
 * does nothing (older qemu-user, some unikernels), purged memory would
 * keep its contents while the allocator takes it for zero (calloc).
 * Where the kernel's page is larger than EBB_PAGE it does not try: a
 * purge of a span would empty the whole kernel page around it, live
 * objects of other spans with it. Returns true where purging works.
 * Called at initialisation. */
bool ebb__os_purge_probe(void);

/* What the last ebb__os_purge_probe found (true before any). */
bool ebb__os_purge_works(void);

/* Let the OS reclaim the pages lazily (MADV_FREE): they stay resident
 * until memory is short, and read as zero or as before. Falls back to
 * ebb__os_purge where MADV_FREE is unknown. pre: page-aligned. */
int ebb__os_purge_lazy(void *addr, size_t len);

/* Resize a mapping in place (never moves). pre: page-aligned.
 * Returns 0 or an errno (ENOMEM when the following range is taken). */
int ebb__os_remap_inplace(void *addr, size_t old_len, size_t new_len);

/* Move a mapping to a new address m with (m + offset) % align == 0,
 * changing its length; page tables move, data is not
 * copied. Returns the new address or NULL (the old mapping is then intact). */
void *ebb__os_remap_aligned(void *addr, size_t old_len, size_t new_len, size_t align,
                            size_t offset);

/* What a fresh mapping of ebbmalloc's holds. */
typedef enum {
    EBB_MAP_META,  /* metadata: the segment map, base chunks */
    EBB_MAP_PAGES, /* a segment: slabs and large objects */
    EBB_MAP_HUGE,  /* one huge object */
} ebb_map_kind_t;
/* Values of option thp, in conf.def's order; set once at initialisation
 * (before it, and by default, never). */
enum { EBB_THP_NEVER, EBB_THP_DEFAULT, EBB_THP_ALWAYS };
void ebb__os_set_thp(unsigned mode);
/* Tell the kernel what a fresh mapping is, once, right after mapping it:
 *  - its name where the kernel supports it ([anon:ebbmalloc...] in
 *    /proc/PID/maps);
 *  - the transparent huge page advice of option thp: never marks every
 *    mapping MADV_NOHUGEPAGE; always marks pages and huge objects
 *    MADV_HUGEPAGE, and metadata (sparse) still MADV_NOHUGEPAGE; default
 *    advises nothing.
 * Either silently does nothing where the kernel lacks it. */
void ebb__os_mapped(void *addr, size_t len, ebb_map_kind_t kind);

/* The number of CPUs this process may really use: the affinity mask, capped
 * by a cgroup CPU quota (v2 cpu.max, or v1 cpu.cfs_quota_us/period), rounded
 * up; at least 1. */
unsigned ebb__os_ncpus(void);
/* The number of CPU ids the kernel may ever report, from the list in
 * /sys/devices/system/cpu/possible ("0-N", or "0-3,8-11"): the highest id
 * + 1; 0 when unreadable. The parser alone, for tests. */
unsigned ebb__os_cpu_ids(void);
unsigned ebb__os_parse_cpu_list(const char *text);
unsigned ebb__os_cpu_now(void); /* this thread's CPU now (a hint) */
typedef struct ebb_cpumask_s {
    uint64_t bits[64]; /* CPUs 0..4095 */
} ebb_cpumask_t;
bool ebb__os_affinity_get(ebb_cpumask_t *m); /* the calling thread's */
bool ebb__os_affinity_set(const ebb_cpumask_t *m);
/* The thread's rseq area (struct rseq, registered by glibc 2.35+), or NULL. */
void *ebb__os_rseq_area(int64_t *offset);
/* membarrier's rseq fence (Linux 5.10+): register the process for it
 * (once; a forked child inherits it), then restart whatever restartable
 * sequence a thread of the process is in on that CPU, with a full memory
 * barrier there. false: not available (older kernel, seccomp). */
bool ebb__os_rseq_fence_register(void);
bool ebb__os_rseq_fence(unsigned cpu);

/* Read the cgroup quota alone: returns 0 when there is none, else the
 * number of CPUs the quota allows, rounded up. For tests. */
unsigned ebb__os_cgroup_cpu_limit(void);

/* Parse a cgroup CPU quota: "max 100000" / "150000 100000" (v2 cpu.max) or
 * quota and period given separately (v1; quota -1 = none). Returns CPUs
 * rounded up, 0 for no limit or unparsable text. Pure; for tests. */
unsigned ebb__os_parse_cpu_max(const char *text);
unsigned ebb__os_cpu_quota_to_cpus(long long quota, long long period);

/* Value of an environment variable without allocating, or NULL. */
const char *ebb__os_getenv(const char *name);

/* True when the process runs with elevated privileges (setuid/setgid);
 * the environment is then not trusted. */
bool ebb__os_secure(void);

/* Write all of buf to standard error; errors are ignored. */
void ebb__os_write_err(const char *buf, size_t len);

/* Monotonic clock in nanoseconds. */
uint64_t ebb__os_now_ns(void);

/* The same clock as of the last timer tick (CLOCK_MONOTONIC_COARSE: 1-10 ms
 * behind, never ahead of ebb__os_now_ns, a fifth of its cost), for the
 * stamps of the free paths: the decay only asks whether a stamp is older
 * than a cutoff, so a stamp a tick early purges a tick early. */
uint64_t ebb__os_coarse_ns(void);

/* Futex wait while *addr == val / wake up to n waiters. */
void ebb__os_futex_wait(volatile uint32_t *addr, uint32_t val);
void ebb__os_futex_wake(volatile uint32_t *addr, int n);

/* As ebb__os_futex_wait, returning after timeout_ns at the latest. */
void ebb__os_futex_wait_timeout(volatile uint32_t *addr, uint32_t val, uint64_t timeout_ns);

/* Start a detached thread running fn(arg) with every signal blocked, named
 * name (at most 15 characters). Returns false when it could not start. */
bool ebb__os_thread_start(void *(*fn)(void *), void *arg, const char *name);

/* Memory use and limit of the process's cgroup, of whichever level from it
 * up to the root is fullest. The use is the working set: v2 memory.current
 * or v1 memory.usage_in_bytes, less the inactive file pages (memory.stat),
 * which are looked up only where the charge is at least pct of the limit.
 * The limit is v2's lower of memory.max and memory.high, or v1's
 * memory.limit_in_bytes. Returns false when there is no cgroup or no
 * limit. */
bool ebb__os_cgroup_memory(unsigned pct, uint64_t *current, uint64_t *limit);
/* The same under a given mount (root) for a cgroup path (rel, as in
 * /proc/self/cgroup, "/" for the root); for tests. */
bool ebb__os_cgroup_memory_in(const char *root, const char *rel, bool v2, unsigned pct,
                              uint64_t *current, uint64_t *limit);
/* Parse a cgroup memory value ("max", or bytes). Returns false for "max",
 * a v1 "unlimited" value, or text that is not a number. Pure; for tests. */
bool ebb__os_parse_mem_value(const char *text, uint64_t *out);

/* Yield the CPU for a spin loop that is taking long. */
void ebb__os_yield(void);

/* ---- the shared statistics page (stats_shm.c) ---- */
/* Create the file path with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600, size it to
 * len bytes once and map it shared read-write. Returns 0 and *out, or an
 * errno: EEXIST when anything (a file, a symlink) is already at path.
 * pre: len page-aligned. */
int ebb__os_shm_create(const char *path, size_t len, void **out);

/* Remove path when it is a regular file of this user with one link and
 * mode 0600 -- a page left by an earlier image of this pid (exec) or by a
 * dead process whose pid we now have. Never follows or removes a symlink.
 * Returns 0 or an errno (EPERM when path is anything else). */
int ebb__os_unlink_stale(const char *path);

/* Read up to len bytes from the start of the regular file path (never
 * through a symlink). Returns the bytes read, or -1. */
long ebb__os_read_head(const char *path, void *buf, size_t len);

/* unlink(2). Returns 0 or an errno. */
int ebb__os_unlink(const char *path);

/* Call fn(name, arg) for each entry of the directory dir until fn returns
 * false; the directory is read with getdents64 into a buffer on the stack
 * (no allocation). Returns 0 or an errno. */
int ebb__os_dir_each(const char *dir, bool (*fn)(const char *name, void *arg), void *arg);

/* Read up to len bytes from the start of path when it is a regular file of
 * this user with one link and mode 0600 (what ebb__os_unlink_stale would
 * remove), never through a symlink; id[] gets its device and inode, for
 * ebb__os_unlink_same. Returns the bytes read, or -1. */
long ebb__os_read_own_file(const char *path, void *buf, size_t len, uint64_t id[2]);

/* Remove path if it still is the file id[] (ebb__os_read_own_file).
 * Returns 0 or an errno: ESTALE when another file is there now. */
int ebb__os_unlink_same(const char *path, const uint64_t id[2]);

/* Does no process of that pid exist in this pid namespace (kill(pid, 0)
 * fails with ESRCH)? */
bool ebb__os_pid_gone(int pid);

/* getpid(2). */
int ebb__os_getpid(void);

/* The process's start time, clock ticks after boot (field 22 of
 * /proc/self/stat); 0 when unknown. With the pid it names one process. */
uint64_t ebb__os_start_time(void);

/* The inode of /proc/self/ns/pid, naming this process's pid namespace;
 * 0 when unknown. */
uint64_t ebb__os_pid_ns(void);

/* Abort the process after writing msg to standard error. */
__attribute__((noreturn)) void ebb__os_fatal(const char *msg);

#endif /* EBB_OS_H */
