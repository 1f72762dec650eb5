/*
 * ebbstat: read the live statistics of processes that use ebbmalloc, from
 * outside, through their shared pages (<dir>/ebbmalloc.<pid>, see
 * alloc/stats_shm.h). No ptrace, no signal, no cooperation beyond the page.
 *
 *   ebbstat                     one line per page: live processes and stale pages
 *   ebbstat --clean             remove the pages of processes that are gone
 *   ebbstat [--json|--prometheus] [-w SECS] PID
 *   ebbstat purge PID           ask the process to purge now; RSS before and after
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ebbmalloc.h"
#include "page.h"
#include "proc.h"
#include "report.h"

enum { OUT_TEXT, OUT_JSON, OUT_PROM };

static const char *usage_text =
    "usage: ebbstat [options]                list processes with an ebbmalloc page\n"
    "       ebbstat [options] PID            report on one process\n"
    "       ebbstat [options] purge PID      make the process purge now; RSS before/after\n"
    "       ebbstat --clean                  remove pages left by processes that are gone\n"
    "options:\n"
    "  --json            one JSON object (fields: tools/README.md)\n"
    "  --prometheus      Prometheus text exposition format\n"
    "  -w, --watch SECS  repeat every SECS seconds, with rates between snapshots\n"
    "  -d, --dir DIR     where the pages are (default $EBBSTAT_DIR or /dev/shm;\n"
    "                    the processes' stats_dir option)\n"
    "  -h, --help        this text;  -V, --version  the version\n"
    "exit codes: 0 ok, 1 error, 2 usage, 3 no such process, 4 process not using\n"
    "ebbmalloc, 5 permission denied, 6 stale page, 7 layout version mismatch,\n"
    "8 corrupt page, 9 no answer from the process, 10 the page's process runs in\n"
    "another pid namespace (a container sharing the directory)\n";

static int usage_error(const char *msg) {
    fprintf(stderr, "ebbstat: %s\n%s", msg, usage_text);
    return EBBSTAT_USAGE;
}

static bool parse_pid(const char *s, int *pid) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno || v <= 0 || v > (1 << 22))
        return false;
    *pid = (int)v;
    return true;
}

static void page_path(char *buf, size_t cap, const char *dir, int pid) {
    snprintf(buf, cap, "%s/" EBB_STATS_FILE_PREFIX "%d", dir, pid);
}

/* Read pid's page and what /proc says of the process. */
static int load(const char *dir, int pid, ebbstat_snap_t *snap, ebbstat_view_t *v, char *err,
                size_t errcap) {
    char path[4200];
    page_path(path, sizeof(path), dir, pid);
    memset(v, 0, sizeof(*v));
    v->pid = pid;
    int r = ebbstat_snap_read(path, snap, err, errcap);
    if (r == EBBSTAT_NOPAGE) {
        if (!ebbstat_proc_exists(pid)) {
            snprintf(err, errcap, "no such process: %d", pid);
            return EBBSTAT_NOPROC;
        }
        ebbstat_proc_comm(pid, v->comm, sizeof(v->comm));
        snprintf(err, errcap,
                 "process %d (%s) does not use ebbmalloc: no page at %s (or it runs with "
                 "stats_shm:false, or another stats_dir: try --dir)",
                 pid, v->comm, path);
        return EBBSTAT_NOPAGE;
    }
    if (r != EBBSTAT_OK)
        return r;
    const ebb_stats_header_t *h = snap->page.h;
    if (h->pid != pid) {
        snprintf(err, errcap, "%s: corrupt page: it names pid %lld", path, (long long)h->pid);
        ebbstat_snap_free(snap);
        return EBBSTAT_CORRUPT;
    }
    /* A page of another pid namespace (containers that share /dev/shm but
     * not their processes): pid names another process here, or none, so
     * /proc says nothing of its writer; only its snapshots say whether it
     * lives. */
    uint64_t own_ns = ebbstat_own_pid_ns();
    if (h->pid_ns != 0 && own_ns != 0 && h->pid_ns != own_ns) {
        bool fresh = ebb_stats_page_is_fresh(h->publish_ns, h->interval_ms, ebbstat_now_ns());
        ebbstat_snap_free(snap);
        if (fresh) {
            snprintf(err, errcap,
                     "%s belongs to pid %d of another pid namespace (a container sharing this "
                     "directory), and that process is live: run ebbstat there, or share the "
                     "pid namespace",
                     path, pid);
            return EBBSTAT_ELSEWHERE;
        }
        uint64_t now = ebbstat_now_ns();
        snprintf(err, errcap,
                 "stale page %s: pid %d of another pid namespace, no snapshot for %.0f s "
                 "(ebbstat --clean removes it)",
                 path, pid, now > h->publish_ns ? (double)(now - h->publish_ns) / 1e9 : 0.0);
        return EBBSTAT_STALE;
    }
    uint64_t start;
    if (!ebbstat_proc_start_time(pid, &start) || (h->start_time && start != h->start_time)) {
        bool gone = !ebbstat_proc_exists(pid);
        ebbstat_snap_free(snap);
        snprintf(err, errcap, "stale page %s: process %d %s (ebbstat --clean removes it)", path,
                 pid, gone ? "has exited" : "has exited and its pid was reused");
        return EBBSTAT_STALE;
    }
    v->page = &snap->page;
    ebbstat_proc_comm(pid, v->comm, sizeof(v->comm));
    v->mem = ebbstat_proc_mem(pid);
    v->now_ns = ebbstat_now_ns();
    return EBBSTAT_OK;
}

static void write_out(int fmt, const ebbstat_view_t *v) {
    if (fmt == OUT_JSON)
        ebbstat_write_json(stdout, v);
    else if (fmt == OUT_PROM)
        ebbstat_write_prometheus(stdout, v);
    else
        ebbstat_write_text(stdout, v);
    fflush(stdout);
}

/* ---- one process, once or watched ---------------------------------------- */
static uint64_t total_allocs(const ebbstat_page_t *p) {
    uint64_t n = p->h->total.large_nmalloc;
    for (uint32_t c = 0; c < p->h->nclasses; c++)
        n += p->classes[c].nmalloc;
    return n;
}

static int cmd_report(const char *dir, int pid, int fmt, double watch) {
    char err[4400];
    ebbstat_snap_t snap, prev = {0};
    ebbstat_view_t v;
    int r = load(dir, pid, &snap, &v, err, sizeof(err));
    if (r != EBBSTAT_OK) {
        fprintf(stderr, "ebbstat: %s\n", err);
        return r;
    }
    if (watch <= 0) {
        write_out(fmt, &v);
        ebbstat_snap_free(&snap);
        return EBBSTAT_OK;
    }
    if (fmt == OUT_TEXT)
        printf("%-8s %10s %10s %10s %10s %12s %12s\n", "time s", "RSS MiB", "live MiB",
               "dirty MiB", "caches MiB", "allocs/s", "purged MiB/s");
    uint64_t t0 = v.now_ns;
    for (;;) {
        if (fmt != OUT_TEXT) {
            write_out(fmt, &v);
        } else {
            const ebb_stats_header_t *h = v.page->h;
            char rate_a[32] = "-", rate_p[32] = "-";
            if (prev.buf && h->publish_ns > prev.page.h->publish_ns) {
                double dt = (double)(h->publish_ns - prev.page.h->publish_ns) / 1e9;
                uint64_t a1 = total_allocs(v.page), a0 = total_allocs(&prev.page);
                uint64_t p1 = h->total.purged_bytes, p0 = prev.page.h->total.purged_bytes;
                snprintf(rate_a, sizeof(rate_a), "%.0f", a1 >= a0 ? (double)(a1 - a0) / dt : 0.0);
                snprintf(rate_p, sizeof(rate_p), "%.2f",
                         p1 >= p0 ? (double)(p1 - p0) / dt / 1048576.0 : 0.0);
            }
            printf("%-8.1f %10.1f %10.1f %10.1f %10.1f %12s %12s\n",
                   (double)(v.now_ns - t0) / 1e9, (double)v.mem.rss / 1048576.0,
                   (double)h->total.live_bytes / 1048576.0,
                   (double)h->total.dirty_bytes / 1048576.0,
                   (double)h->total.tcache_bytes / 1048576.0, rate_a, rate_p);
            fflush(stdout);
        }
        usleep((useconds_t)(watch * 1e6));
        ebbstat_snap_free(&prev);
        prev = snap;
        r = load(dir, pid, &snap, &v, err, sizeof(err));
        if (r != EBBSTAT_OK) {
            ebbstat_snap_free(&prev);
            fprintf(stderr, "ebbstat: %s\n", err);
            return r == EBBSTAT_STALE || r == EBBSTAT_NOPROC ? EBBSTAT_OK : r;
        }
    }
}

/* ---- purge ----------------------------------------------------------------- */
static int cmd_purge(const char *dir, int pid, int fmt) {
    char err[4400], path[4200];
    ebbstat_snap_t snap;
    ebbstat_view_t v;
    int r = load(dir, pid, &snap, &v, err, sizeof(err));
    if (r != EBBSTAT_OK) {
        fprintf(stderr, "ebbstat: %s\n", err);
        return r;
    }
    uint64_t interval = snap.page.h->interval_ms;
    ebbstat_snap_free(&snap);
    page_path(path, sizeof(path), dir, pid);
    int fd = open(path, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        fprintf(stderr, "ebbstat: %s: %s\n", path, strerror(e));
        return e == EACCES || e == EPERM ? EBBSTAT_PERM : EBBSTAT_ERR;
    }
    uint64_t token = ((ebbstat_now_ns() ^ ((uint64_t)getpid() << 32)) & ((1ull << 56) - 1)) | 1;
    uint64_t word = token << 8 | EBB_STATS_REQ_PURGE;
    ebbstat_mem_t before = ebbstat_proc_mem(pid);
    if (pwrite(fd, &word, sizeof(word), (off_t)offsetof(ebb_stats_header_t, request)) !=
        (ssize_t)sizeof(word)) {
        fprintf(stderr, "ebbstat: %s: cannot write the request: %s\n", path, strerror(errno));
        close(fd);
        return EBBSTAT_ERR;
    }
    close(fd);
    uint64_t wait_ms = (interval > 10000 ? 10000 : interval) * 3 + 5000;
    uint64_t deadline = ebbstat_now_ns() + wait_ms * 1000000u;
    for (;;) {
        usleep(20000);
        r = load(dir, pid, &snap, &v, err, sizeof(err));
        if (r != EBBSTAT_OK) {
            fprintf(stderr, "ebbstat: %s\n", err);
            return r;
        }
        if (snap.page.h->purge_token == token)
            break;
        ebbstat_snap_free(&snap);
        if (ebbstat_now_ns() > deadline) {
            fprintf(stderr,
                    "ebbstat: process %d did not answer the purge request within %" PRIu64
                    " ms (its background thread does not run?)\n",
                    pid, wait_ms);
            return EBBSTAT_TIMEOUT;
        }
    }
    ebbstat_mem_t after = ebbstat_proc_mem(pid);
    const ebb_stats_header_t *h = snap.page.h;
    if (fmt == OUT_JSON) {
        printf("{\"pid\": %d, \"purged_bytes\": %" PRIu64 ", \"duration_ns\": %" PRIu64
               ", \"rss_before_bytes\": %" PRIu64 ", \"rss_after_bytes\": %" PRIu64 "}\n",
               pid, h->purge_bytes, h->purge_duration_ns, before.rss, after.rss);
    } else {
        double b = (double)before.rss / 1048576.0, a = (double)after.rss / 1048576.0;
        printf("pid %d (%s): purged %.1f MiB in %.1f ms; RSS %.1f MiB -> %.1f MiB (%+.1f MiB)\n",
               pid, v.comm, (double)h->purge_bytes / 1048576.0, (double)h->purge_duration_ns / 1e6,
               b, a, a - b);
    }
    ebbstat_snap_free(&snap);
    return EBBSTAT_OK;
}

/* ---- every page in dir --------------------------------------------------- */
static bool page_name(const char *name, int *pid) {
    size_t pl = strlen(EBB_STATS_FILE_PREFIX);
    return strncmp(name, EBB_STATS_FILE_PREFIX, pl) == 0 && parse_pid(name + pl, pid);
}

static int cmd_list(const char *dir, bool clean) {
    DIR *d = opendir(dir);
    if (d == NULL) {
        fprintf(stderr, "ebbstat: %s: %s\n", dir, strerror(errno));
        return errno == EACCES ? EBBSTAT_PERM : EBBSTAT_ERR;
    }
    if (!clean)
        ebbstat_write_list_line(stdout, NULL, NULL);
    int status = EBBSTAT_OK, n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int pid;
        if (!page_name(e->d_name, &pid))
            continue;
        char path[4200], err[4400];
        page_path(path, sizeof(path), dir, pid);
        struct stat st;
        if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
            fprintf(stderr, "ebbstat: %s: not a regular file (ignored)\n", path);
            continue;
        }
        ebbstat_snap_t snap;
        ebbstat_view_t v;
        int r = load(dir, pid, &snap, &v, err, sizeof(err));
        n++;
        /* Gone: the process has exited or its pid now names another. A
         * page of another layout (an older ebbmalloc) or a corrupt one is
         * stale too when no process of its pid runs. */
        uint64_t start;
        bool stale = r == EBBSTAT_STALE || ((r == EBBSTAT_CORRUPT || r == EBBSTAT_VERSION) &&
                                            !ebbstat_proc_start_time(pid, &start));
        if (clean) {
            if (stale) {
                if (unlink(path) == 0) {
                    printf("removed %s (process %d is gone)\n", path, pid);
                } else {
                    fprintf(stderr, "ebbstat: cannot remove %s: %s\n", path, strerror(errno));
                    status = errno == EACCES || errno == EPERM ? EBBSTAT_PERM : EBBSTAT_ERR;
                }
            }
        } else {
            static const char *const state[] = {
                [EBBSTAT_OK] = "live",         [EBBSTAT_PERM] = "permission denied",
                [EBBSTAT_STALE] = "stale",     [EBBSTAT_VERSION] = "other layout version",
                [EBBSTAT_CORRUPT] = "corrupt", [EBBSTAT_ERR] = "unreadable",
                [EBBSTAT_ELSEWHERE] = "live, another pid namespace"};
            if (r != EBBSTAT_OK) {
                v.page = NULL;
                ebbstat_proc_comm(pid, v.comm, sizeof(v.comm));
                if (stale || r == EBBSTAT_ELSEWHERE) /* /proc/PID here is not its process */
                    snprintf(v.comm, sizeof(v.comm), "-");
            }
            const char *s = r < (int)(sizeof(state) / sizeof(state[0])) && state[r] ? state[r]
                                                                                    : "unreadable";
            ebbstat_write_list_line(stdout, &v, stale ? "stale (ebbstat --clean)" : s);
        }
        if (r == EBBSTAT_OK)
            ebbstat_snap_free(&snap);
    }
    closedir(d);
    if (!clean && n == 0)
        fprintf(stderr, "ebbstat: no ebbmalloc pages in %s\n", dir);
    return status;
}

int main(int argc, char **argv) {
    static const struct option longopts[] = {
        {"json", no_argument, NULL, 'j'},   {"prometheus", no_argument, NULL, 'p'},
        {"watch", required_argument, NULL, 'w'}, {"dir", required_argument, NULL, 'd'},
        {"clean", no_argument, NULL, 'c'},  {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'}, {NULL, 0, NULL, 0}};
    int fmt = OUT_TEXT, opt;
    bool clean = false;
    double watch = 0;
    const char *dir = getenv("EBBSTAT_DIR");
    if (dir == NULL || *dir == '\0')
        dir = "/dev/shm";
    while ((opt = getopt_long(argc, argv, "w:d:hV", longopts, NULL)) != -1) {
        switch (opt) {
        case 'j': fmt = OUT_JSON; break;
        case 'p': fmt = OUT_PROM; break;
        case 'c': clean = true; break;
        case 'd': dir = optarg; break;
        case 'w': {
            char *end;
            watch = strtod(optarg, &end);
            if (*end || !(watch >= 0.05 && watch <= 86400))
                return usage_error("-w takes seconds, 0.05 to 86400");
            break;
        }
        case 'h': fputs(usage_text, stdout); return EBBSTAT_OK;
        case 'V': printf("ebbstat %s (page layout %u)\n", EBB_VERSION_STRING, EBB_STATS_VERSION);
                  return EBBSTAT_OK;
        default: return usage_error("unknown option");
        }
    }
    int nargs = argc - optind, pid;
    if (clean) {
        if (nargs)
            return usage_error("--clean takes no argument");
        return cmd_list(dir, true);
    }
    if (nargs == 0)
        return cmd_list(dir, false);
    if (strcmp(argv[optind], "purge") == 0) {
        if (nargs != 2 || !parse_pid(argv[optind + 1], &pid))
            return usage_error("purge takes one PID");
        return cmd_purge(dir, pid, fmt);
    }
    if (nargs != 1 || !parse_pid(argv[optind], &pid))
        return usage_error("expected a PID");
    return cmd_report(dir, pid, fmt, watch);
}
