/* The page reader and its checks; see page.h. */
#include "page.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FAIL(code, ...)                                                                      \
    do {                                                                                     \
        snprintf(err, errcap, __VA_ARGS__);                                                  \
        return code;                                                                         \
    } while (0)

/* off + n * stride within [lo, len), without overflow. */
static bool range_ok(uint64_t off, uint64_t n, uint64_t stride, uint64_t lo, uint64_t len) {
    if (off < lo || off > len || off % 8 != 0)
        return false;
    if (n != 0 && stride > (len - off) / n)
        return false;
    return true;
}

int ebbstat_page_parse(const void *buf, size_t len, ebbstat_page_t *out, char *err,
                       size_t errcap) {
    /* Magic and version are at the same place in every layout version. */
    uint64_t magic;
    uint32_t version;
    if (len < sizeof(magic) + sizeof(version))
        FAIL(EBBSTAT_CORRUPT, "truncated page: %zu bytes", len);
    memcpy(&magic, buf, sizeof(magic));
    memcpy(&version, (const char *)buf + sizeof(magic), sizeof(version));
    if (magic != EBB_STATS_MAGIC)
        FAIL(EBBSTAT_CORRUPT, "not an ebbmalloc statistics page (bad magic)");
    if (version != EBB_STATS_VERSION)
        FAIL(EBBSTAT_VERSION,
             "page layout version %u, this ebbstat reads version %u: use the ebbstat of the "
             "process's ebbmalloc",
             version, EBB_STATS_VERSION);
    const ebb_stats_header_t *h = buf;
    if (len < sizeof(*h))
        FAIL(EBBSTAT_CORRUPT, "truncated page: %zu bytes, the header alone is %zu", len,
             sizeof(*h));
    if (h->header_size != sizeof(*h) || h->counters_size != sizeof(ebb_stats_counters_t) ||
        h->arena_stride != sizeof(ebb_stats_counters_t) ||
        h->class_stride != sizeof(ebb_stats_class_t))
        FAIL(EBBSTAT_CORRUPT, "corrupt page: record sizes differ from layout version %u",
             EBB_STATS_VERSION);
    if (h->total_size != len)
        FAIL(EBBSTAT_CORRUPT, "corrupt page: header says %llu bytes, the file has %zu",
             (unsigned long long)h->total_size, len);
    if (h->narenas == 0 || h->narenas > EBBSTAT_MAX_ARENAS)
        FAIL(EBBSTAT_CORRUPT, "corrupt page: %u arenas", h->narenas);
    if (h->nclasses == 0 || h->nclasses > EBBSTAT_MAX_CLASSES)
        FAIL(EBBSTAT_CORRUPT, "corrupt page: %u size classes", h->nclasses);
    if (!range_ok(h->arena_off, h->narenas, h->arena_stride, sizeof(*h), len) ||
        !range_ok(h->class_off, h->nclasses, h->class_stride, sizeof(*h), len))
        FAIL(EBBSTAT_CORRUPT, "corrupt page: arena or class table outside the file");
    uint64_t a_end = h->arena_off + (uint64_t)h->narenas * h->arena_stride;
    uint64_t c_end = h->class_off + (uint64_t)h->nclasses * h->class_stride;
    if (h->arena_off < c_end && h->class_off < a_end)
        FAIL(EBBSTAT_CORRUPT, "corrupt page: the arena and class tables overlap");
    if (memchr(h->options, '\0', sizeof(h->options)) == NULL)
        FAIL(EBBSTAT_CORRUPT, "corrupt page: options text not terminated");
    if (h->pid <= 0 || h->pid > (1 << 22))
        FAIL(EBBSTAT_CORRUPT, "corrupt page: pid %lld", (long long)h->pid);
    if (h->seq & 1)
        FAIL(EBBSTAT_CORRUPT, "corrupt page: torn snapshot");
    out->h = h;
    out->arenas = (const ebb_stats_counters_t *)((const char *)buf + h->arena_off);
    out->classes = (const ebb_stats_class_t *)((const char *)buf + h->class_off);
    return EBBSTAT_OK;
}

static bool pread_all(int fd, void *buf, size_t len, off_t off, size_t *got) {
    size_t n = 0;
    while (n < len) {
        ssize_t r = pread(fd, (char *)buf + n, len - n, off + (off_t)n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return false;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *got = n;
    return true;
}

static bool read_seq(int fd, uint64_t *seq) {
    size_t got;
    return pread_all(fd, seq, sizeof(*seq), (off_t)EBB_STATS_SNAP_OFF, &got) &&
           got == sizeof(*seq);
}

int ebbstat_snap_read(const char *path, ebbstat_snap_t *snap, char *err, size_t errcap) {
    memset(snap, 0, sizeof(*snap));
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        int e = errno;
        if (e == EACCES || e == EPERM)
            FAIL(EBBSTAT_PERM, "%s: permission denied (run as the process's user or root)",
                 path);
        if (e == ENOENT)
            FAIL(EBBSTAT_NOPAGE, "%s: no such page", path);
        if (e == ELOOP)
            FAIL(EBBSTAT_CORRUPT, "%s: a symlink, not a page (refused)", path);
        FAIL(EBBSTAT_ERR, "%s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        FAIL(EBBSTAT_CORRUPT, "%s: not a regular file", path);
    }
    /* Magic and version first, so another layout says so whatever its size. */
    uint64_t head[2];
    size_t got;
    if (st.st_size >= 16 && pread_all(fd, head, sizeof(head), 0, &got) && got == sizeof(head)) {
        ebbstat_page_t p;
        int r = ebbstat_page_parse(head, sizeof(head), &p, err, errcap);
        if (r == EBBSTAT_VERSION) {
            close(fd);
            return r;
        }
    }
    if (st.st_size < (off_t)sizeof(ebb_stats_header_t) || (size_t)st.st_size > EBBSTAT_PAGE_MAX) {
        close(fd);
        FAIL(EBBSTAT_CORRUPT, "%s: truncated or oversized page (%lld bytes)", path,
             (long long)st.st_size);
    }
    size_t len = (size_t)st.st_size;
    void *buf = NULL;
    if (posix_memalign(&buf, 64, len) != 0) {
        close(fd);
        FAIL(EBBSTAT_ERR, "out of memory");
    }
    /* The sequence lock from outside: seq, the whole file, seq again. */
    int code = EBBSTAT_CORRUPT;
    snprintf(err, errcap, "%s: the writer stayed busy (torn snapshots)", path);
    for (int tries = 0; tries < 200; tries++) {
        uint64_t s1, s2;
        if (!read_seq(fd, &s1) || !pread_all(fd, buf, len, 0, &got) || !read_seq(fd, &s2)) {
            snprintf(err, errcap, "%s: read error: %s", path, strerror(errno));
            code = EBBSTAT_ERR;
            break;
        }
        if (got != len) {
            snprintf(err, errcap, "%s: truncated while reading", path);
            code = EBBSTAT_CORRUPT;
            break;
        }
        uint64_t s_copy;
        memcpy(&s_copy, (char *)buf + EBB_STATS_SNAP_OFF, sizeof(s_copy));
        if ((s1 & 1) || s1 != s2 || s_copy != s1) {
            usleep(1000);
            continue;
        }
        char perr[256];
        code = ebbstat_page_parse(buf, len, &snap->page, perr, sizeof(perr));
        if (code != EBBSTAT_OK)
            snprintf(err, errcap, "%s: %s", path, perr);
        break;
    }
    close(fd);
    if (code != EBBSTAT_OK) {
        free(buf);
        return code;
    }
    snap->buf = buf;
    snap->len = len;
    return EBBSTAT_OK;
}

void ebbstat_snap_free(ebbstat_snap_t *snap) {
    free(snap->buf);
    memset(snap, 0, sizeof(*snap));
}
