/*
 * The shared statistics page: its layout, shared by the allocator (writer,
 * stats_shm.c) and ebbstat (reader, tools/ebbstat), and the writer's
 * interface. Self-contained (C11 and <stdint.h> only), so the reader can
 * include it without the allocator's internals.
 *
 * The file <stats_dir>/ebbmalloc.<pid> (mode 0600, sized once at creation):
 *
 *   0             +----------------------------------------------+
 *                 | ebb_stats_header_t                           |
 *                 |  magic, version, header_size, total_size     |  written once,
 *                 |  pid, start_time, narenas, nclasses,         |  before the page
 *                 |  arena_off/stride, class_off/stride,         |  is published
 *                 |  options text                                |
 *                 |----------------------------------------------|
 *                 |  request   <- the one word the process reads |  own cache line
 *                 |----------------------------------------------|
 *                 |  seq       (odd while a snapshot is written) |  own cache line
 *   snapshot -->  |  publish_ns ... purge results, decay_ms      |
 *                 |  total: ebb_stats_counters_t                 |  \
 *   arena_off --> +----------------------------------------------+   |
 *                 | ebb_stats_counters_t arenas[narenas]         |   | under seq
 *   class_off --> +----------------------------------------------+   |
 *                 | ebb_stats_class_t classes[nclasses]          |   |
 *   total_size -> +----------------------------------------------+  /
 *
 * Sequence lock (one writer at a time, inside the process; any number of
 * readers, in any process): the writer makes seq odd, copies a snapshot
 * built beforehand, then makes seq even again. A reader copies the page
 * and keeps the copy only when seq was the same even number before and
 * after. The snapshot's own fields are read by nobody inside the process.
 *
 * A reader trusts nothing here: ebbstat checks every size, count and offset
 * (tools/ebbstat/page.c) before it uses one.
 */
#ifndef EBB_STATS_SHM_H
#define EBB_STATS_SHM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define EBB_STATS_MAGIC 0x3174617473626265ull /* "ebbstat1", little-endian */
#define EBB_STATS_VERSION 3
#define EBB_STATS_OPTS_LEN 1024   /* options text, NUL-terminated */
#define EBB_STATS_FILE_PREFIX "ebbmalloc."

/* Requests from outside, in the request word: low byte the verb, the rest a
 * token the process echoes in purge_token when done. */
#define EBB_STATS_REQ_PURGE 1u
#define EBB_STATS_REQ_VERB(w) ((uint32_t)((w) & 0xff))
#define EBB_STATS_REQ_TOKEN(w) ((w) >> 8)

typedef struct ebb_stats_counters_s {
#define EBB_STAT(name, type, unit, doc) uint64_t name;
#include "stats.def"
} ebb_stats_counters_t;

typedef struct ebb_stats_class_s {
    uint64_t size; /* object size of the class, bytes */
#define EBB_CLASS_STAT(name, type, unit, doc) uint64_t name;
#include "stats.def"
} ebb_stats_class_t;

typedef struct ebb_stats_header_s {
    /* Written once at creation. */
    uint64_t magic;        /* EBB_STATS_MAGIC */
    uint32_t version;      /* EBB_STATS_VERSION */
    uint32_t header_size;  /* sizeof(ebb_stats_header_t) */
    uint64_t total_size;   /* bytes of the whole file */
    int64_t pid;
    uint64_t start_time;   /* clock ticks after boot (/proc/PID/stat field 22) */
    uint32_t narenas, nclasses;
    uint32_t arena_off, arena_stride;  /* arenas[i] at arena_off + i * arena_stride */
    uint32_t class_off, class_stride;
    uint32_t counters_size;            /* sizeof(ebb_stats_counters_t) */
    uint32_t page_size;                /* the allocator's page, bytes */
    char options[EBB_STATS_OPTS_LEN];  /* "name:value,..." effective options */
    uint64_t pid_ns;                   /* inode of the writer's /proc/self/ns/pid; 0:
                                          unknown (in padding: layout 3 pages before
                                          it read 0 here) */

    /* Written from outside (ebbstat purge); the process reads only this. */
    _Atomic uint64_t request __attribute__((aligned(64)));

    /* The snapshot, under seq. */
    _Atomic uint64_t seq __attribute__((aligned(64)));
    uint64_t publish_ns;      /* CLOCK_MONOTONIC of the snapshot */
    uint64_t publish_count;   /* snapshots published so far */
    uint64_t interval_ms;     /* stats_interval_ms */
    uint64_t decay_ms;        /* current decay time of dirty pages */
    uint64_t last_purge_ns;   /* CLOCK_MONOTONIC of the last purge (0: none) */
    uint64_t purge_token;     /* token of the last request honoured */
    uint64_t purge_bytes;     /* bytes that purge gave back */
    uint64_t purge_duration_ns;
    uint64_t purge_done_ns;   /* CLOCK_MONOTONIC when it finished */
    ebb_stats_counters_t total;
} ebb_stats_header_t;

#define EBB_STATS_SNAP_OFF offsetof(ebb_stats_header_t, seq)

/* Is a page's writer alive? It published within three of its intervals
 * (3 s at least) before now (CLOCK_MONOTONIC ns, shared by every pid
 * namespace). A live process with a background thread publishes every
 * interval; one without (background_thread:false) only when it allocates,
 * so an idle one looks dead here. For a page of the reader's own pid
 * namespace /proc says more; for one of another namespace (pid_ns differs:
 * containers sharing /dev/shm but not their processes) this is all there
 * is. */
static inline bool ebb_stats_page_is_fresh(uint64_t publish_ns, uint64_t interval_ms, uint64_t now_ns) {
    uint64_t window = interval_ms < 1000 ? 3000000000u : interval_ms * 3000000u;
    if (publish_ns == 0 || publish_ns > now_ns + 1000000000u)
        return false; /* never published, or not by this boot's clock */
    return publish_ns >= now_ns || now_ns - publish_ns < window;
}

/* ---- the sequence lock ------------------------------------------------- */
/* Writer: pre: the caller is the only writer. Copies len bytes of src
 * (built outside the lock) to the page from EBB_STATS_SNAP_OFF + sizeof seq.
 * *seq_private is the writer's own copy of seq: the process never reads
 * the page's. */
static inline void ebb_stats_seq_publish(ebb_stats_header_t *page, uint64_t *seq_private,
                                         const void *src, size_t len) {
    uint64_t s = *seq_private + 1; /* odd: writing */
    atomic_store_explicit(&page->seq, s, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    const size_t off = EBB_STATS_SNAP_OFF + sizeof(page->seq);
    /* Byte copy through a volatile pointer: the compiler may neither hoist
     * it above the fence nor merge it with the final store. */
    volatile unsigned char *d = (volatile unsigned char *)page + off;
    const unsigned char *sp = (const unsigned char *)src + off;
    for (size_t i = 0; i + off < len; i++)
        d[i] = sp[i];
    atomic_store_explicit(&page->seq, s + 1, memory_order_release);
    *seq_private = s + 1;
}

/* Reader: copy len bytes of the page into dst, consistent under seq.
 * Returns true on a clean copy, false when the writer stayed busy through
 * every try. */
static inline bool ebb_stats_seq_read(const ebb_stats_header_t *page, void *dst, size_t len,
                                      unsigned tries) {
    for (unsigned t = 0; t < tries; t++) {
        uint64_t s1 = atomic_load_explicit(&page->seq, memory_order_acquire);
        if (s1 & 1)
            continue;
        const volatile unsigned char *src = (const volatile unsigned char *)page;
        unsigned char *d = (unsigned char *)dst;
        for (size_t i = 0; i < len; i++)
            d[i] = src[i];
        atomic_thread_fence(memory_order_acquire);
        uint64_t s2 = atomic_load_explicit(&page->seq, memory_order_relaxed);
        if (s1 == s2)
            return true;
    }
    return false;
}

/* ---- the writer, inside the allocator (stats_shm.c) --------------------- */
/* At initialisation (stats_shm option): the page is due one
 * stats_interval_ms from now. Quiet unless stats_shm was set explicitly. */
void ebb__stats_shm_init(void);
/* In a forked child: drop the parent's mapping; the child's page is due. */
void ebb__stats_shm_postfork_child(void);
/* True while the page exists or is due (the background thread should tick). */
bool ebb__stats_shm_wants_tick(void);
/* Called by the background thread at least every stats_interval_ms:
 * creates the page once it is due, honours a request, publishes when the
 * interval has elapsed. */
void ebb__stats_shm_tick(uint64_t now_ns);
/* Build and publish a snapshot now (tests, and after a purge). */
void ebb__stats_shm_publish(uint64_t now_ns);
/* Fill the counters from the arenas, caches and huge objects (stats.c). */
void ebb__stats_collect(ebb_stats_counters_t *total, ebb_stats_counters_t *arenas,
                        unsigned narenas, ebb_stats_class_t *classes, unsigned nclasses);
/* Objects of each class in live thread caches, added to counts[class]
 * (tcache.c, where the registry is). */
/* The page's path ("" when there is none), for tests. */
const char *ebb__stats_shm_path(void);
/* At exit (its destructor calls it): remove this process's page; make none after. */
void ebb__stats_shm_exit(void);
/* Pages of gone processes this process removed (made its own page, then swept), for tests. */
unsigned ebb__stats_shm_swept(void);

#endif /* EBB_STATS_SHM_H */
