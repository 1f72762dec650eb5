/* /proc readers for ebbstat; see proc.h. */
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static long read_file(const char *path, char *buf, size_t cap) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = read(fd, buf + n, cap - 1 - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    buf[n] = '\0';
    return (long)n;
}

bool ebbstat_proc_exists(int pid) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d", pid);
    return access(path, F_OK) == 0;
}

uint64_t ebbstat_own_pid_ns(void) {
    struct stat st;
    return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

bool ebbstat_proc_start_time(int pid, uint64_t *out) {
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    if (read_file(path, buf, sizeof(buf)) <= 0)
        return false;
    char *s = strrchr(buf, ')');
    if (s == NULL)
        return false;
    int field = 2;
    for (s++; *s && field < 22; s++)
        if (*s == ' ')
            field++;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || errno)
        return false;
    *out = v;
    return true;
}

void ebbstat_proc_comm(int pid, char *buf, size_t cap) {
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/comm", pid);
    long n = read_file(path, buf, cap);
    if (n <= 0) {
        snprintf(buf, cap, "?");
        return;
    }
    for (char *p = buf; *p; p++) {
        if (*p == '\n') {
            *p = '\0';
            break;
        }
        if ((unsigned char)*p < 0x20 || (unsigned char)*p >= 0x7f)
            *p = '?';
    }
}

/* "Key:   123 kB" lines. */
static bool field_kb(const char *text, const char *key, uint64_t *out) {
    size_t kl = strlen(key);
    for (const char *line = text; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            *out = strtoull(line + kl + 1, NULL, 10) * 1024;
            return true;
        }
    }
    return false;
}

/* Rss, Pss and Swap from smaps_rollup (the whole address space, summed by
 * the kernel); its split from status (RssAnon/RssFile/RssShmem). Without
 * smaps_rollup (old kernels), VmRSS stands in for Rss and Pss. */
ebbstat_mem_t ebbstat_proc_mem(int pid) {
    ebbstat_mem_t m = {0};
    char path[64], buf[8192];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    if (read_file(path, buf, sizeof(buf)) <= 0 || !field_kb(buf, "VmRSS", &m.rss))
        return m;
    m.pss = m.rss;
    field_kb(buf, "RssAnon", &m.anon);
    field_kb(buf, "RssFile", &m.file);
    field_kb(buf, "RssShmem", &m.shmem);
    field_kb(buf, "VmSwap", &m.swap);
    field_kb(buf, "VmLck", &m.locked);
    snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", pid);
    if (read_file(path, buf, sizeof(buf)) > 0 && field_kb(buf, "Rss", &m.rss)) {
        field_kb(buf, "Pss", &m.pss);
        field_kb(buf, "Swap", &m.swap);
        field_kb(buf, "AnonHugePages", &m.anon_huge);
    }
    m.ok = true;
    return m;
}

const char *ebbstat_host_thp(void) {
    static char word[16];
    char buf[128];
    if (read_file("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof(buf)) <= 0)
        return NULL;
    const char *open = strchr(buf, '['), *close = open ? strchr(open, ']') : NULL;
    if (close == NULL || (size_t)(close - open - 1) >= sizeof(word) || close == open + 1)
        return NULL;
    memcpy(word, open + 1, (size_t)(close - open - 1));
    word[close - open - 1] = '\0';
    return word;
}

uint64_t ebbstat_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
