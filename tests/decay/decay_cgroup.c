/*
 * Memory pressure from the cgroup purges at once. Where the machine lets
 * us (root, and cgroup v1's memory hierarchy or a cgroup v2 hierarchy with
 * the memory controller), make a cgroup limited to LIMIT bytes below our
 * own and start children in it that run this program again with a decay
 * of ten minutes, no dirty cap and pressure_pct:50 -- so that only
 * pressure can purge:
 *
 *   anon    allocate and free more than half the limit: the resident set
 *           falls within PRESSURE_MS;
 *   nested  the same from a cgroup inside it whose own limit is 4 x LIMIT:
 *           the outer limit binds the inner cgroup, and purges as well;
 *   cache   read a file larger than the limit, so that page cache charges
 *           the cgroup to its limit, then allocate and free a fifth of it:
 *           nothing is purged (the kernel reclaims inactive file pages
 *           before it throttles or kills; counted, a service that reads
 *           files would purge every 100 ms).
 *
 * In each, `ebbstat --json` on the child shows the limit that binds (the
 * outer one in nested) and whether pressure forced purges.
 *
 * Elsewhere: skip (exit 77) with the reason; a scenario the machine cannot
 * set up (a tmpfs for the file, v1 without hierarchical accounting) skips
 * alone. The cgroups and the file are removed afterwards.
 */
#include "decay_util.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include <cmocka.h>

#define LIMIT ((size_t)512 << 20)
#define CHILD_CONF \
    "EBBMALLOC_CONF=decay_ms:600000,pressure_pct:50,dirty_max_kb:1048576,stats_interval_ms:100"
#define CHILD_ARG "--in-cgroup"
enum { SKIP = 77, PRESSURE_MS = 3000, CHILD_TIMEOUT_S = 30, CACHE_HOLD_MS = 1500 };

static char cg_dir[600], cg_inner[700], cache_file[600];
static const char *cg_limit_file, *cg_usage_file;

static bool write_file(const char *dir, const char *name, const char *text)
{
    char path[700];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    bool ok = write(fd, text, strlen(text)) == (ssize_t)strlen(text);
    return close(fd) == 0 && ok;
}

/* Our cgroup's directory under root for the /proc/self/cgroup line whose
 * controller field is field ("memory" for v1, "" for v2); the root itself
 * when that directory is not visible (a container's own namespace). */
static void own_dir(const char *root, const char *field, char *out, size_t cap)
{
    char buf[4096], want[64];
    snprintf(out, cap, "%s", root);
    snprintf(want, sizeof(want), ":%s:", field);
    if (!du_read_file("/proc/self/cgroup", buf, sizeof(buf)))
        return;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        char *f = strstr(line, want);
        struct stat st;
        char dir[600];
        if (f == NULL)
            continue;
        snprintf(dir, sizeof(dir), "%s%s", root, f + strlen(want));
        if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
            snprintf(out, cap, "%s", dir);
        return;
    }
}

/* Make the cgroup; NULL on success, else why not. */
static const char *make_cgroup(void)
{
    char parent[500], limit[32], controllers[256];
    if (geteuid() != 0)
        return "not running as root";
    if (access("/sys/fs/cgroup/memory/memory.limit_in_bytes", F_OK) == 0) {
        own_dir("/sys/fs/cgroup/memory", "memory", parent, sizeof(parent));
        cg_limit_file = "memory.limit_in_bytes";
        cg_usage_file = "memory.usage_in_bytes";
    } else if (du_read_file("/sys/fs/cgroup/cgroup.controllers", controllers,
                            sizeof(controllers)) &&
               strstr(controllers, "memory") != NULL) {
        own_dir("/sys/fs/cgroup", "", parent, sizeof(parent));
        cg_limit_file = "memory.max";
        cg_usage_file = "memory.current";
        write_file(parent, "cgroup.subtree_control", "+memory"); /* may be on already */
    } else {
        return "no cgroup v1 memory hierarchy and no cgroup v2 memory controller";
    }
    snprintf(cg_dir, sizeof(cg_dir), "%s/ebbmalloc-decay-%d", parent, (int)getpid());
    if (mkdir(cg_dir, 0755) != 0)
        return "cannot create a cgroup (read-only or delegated hierarchy)";
    snprintf(limit, sizeof(limit), "%zu", LIMIT);
    if (!write_file(cg_dir, cg_limit_file, limit)) {
        rmdir(cg_dir);
        return "cannot set the cgroup's memory limit";
    }
    return NULL;
}

static void options_applied_or_exit(void)
{
    if (du_option("pressure_pct") != 50 || du_option("decay_ms") != 600000) {
        fprintf(stderr, "child: options not applied\n");
        exit(2);
    }
}

/* `ebbstat --json` on this process (ebbstat from $EBBSTAT), once the page
 * has a snapshot taken from now on; NULL when it cannot be read. */
static const char *own_stats_json(void)
{
    static char buf[1 << 16];
    char cmd[1200];
    const char *ebbstat = getenv("EBBSTAT");
    if (ebbstat == NULL)
        return NULL;
    du_sleep_ms(300); /* three snapshots at stats_interval_ms:100 */
    snprintf(cmd, sizeof(cmd), "%s --json %d", ebbstat, (int)getpid());
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return NULL;
    size_t n = fread(buf, 1, sizeof(buf) - 1, p);
    buf[n] = '\0';
    return pclose(p) == 0 ? buf : NULL;
}

/* A figure of the JSON's "total" object; -1 when it is not there. */
static long long total_field(const char *json, const char *field)
{
    char key[80];
    snprintf(key, sizeof(key), "\"%s\": ", field);
    const char *total = json ? strstr(json, "\"total\": {") : NULL;
    const char *at = total ? strstr(total, key) : NULL;
    return at ? strtoll(at + strlen(key), NULL, 10) : -1;
}

/* What the statistics say the pressure checks saw: the limit that binds,
 * and whether pressure forced purges. */
static bool stats_agree(bool purged)
{
    const char *json = own_stats_json();
    long long limit = total_field(json, "cgroup_limit_bytes");
    long long n = total_field(json, "pressure_purges");
    fprintf(stderr, "child: ebbstat says limit %lld MiB, %lld purges forced by pressure\n",
            limit < 0 ? limit : limit >> 20, n);
    return limit == (long long)LIMIT && (purged ? n >= 1 : n == 0);
}

/* In the cgroup: fill more than pressure_pct of the limit, free, wait. */
static int child_anon(void)
{
    size_t base = tu_statm(TU_STATM_RESIDENT);
    du_churn_t c = {.seed = 13, .bytes = LIMIT / 10 * 6};
    if (!du_churn(&c))
        return 3;
    if (!du_resident_falls("child in the cgroup", base, c.kept_bytes, PRESSURE_MS))
        return 1;
    return stats_agree(true) ? 0 : 8;
}

/* Read all of path (page cache, charged to our cgroup); -1 on error. */
static long long read_through(const char *path)
{
    size_t len = (size_t)1 << 20;
    char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    long long total = 0;
    ssize_t n = -1;
    if (buf != MAP_FAILED && fd >= 0)
        while ((n = read(fd, buf, len)) > 0)
            total += n;
    if (fd >= 0)
        close(fd);
    if (buf != MAP_FAILED)
        munmap(buf, len);
    return n == 0 ? total : -1;
}

/* In the cgroup: page cache up to the limit, then a fifth of it churned;
 * no purge may follow. usage_path: the cgroup's charge. */
static int child_cache(const char *file, const char *usage_path)
{
    char buf[64];
    if (read_through(file) < 0)
        return 3;
    unsigned long long usage = 0;
    if (!du_read_file(usage_path, buf, sizeof(buf)) || sscanf(buf, "%llu", &usage) != 1 ||
        usage < LIMIT / 10 * 9) {
        fprintf(stderr, "child: page cache charged %llu MiB of %zu\n", usage >> 20, LIMIT >> 20);
        return 4;
    }
    ebb_summary_t before = tu_summary();
    du_churn_t c = {.seed = 17, .bytes = LIMIT / 5};
    if (!du_churn(&c))
        return 3;
    du_sleep_ms(CACHE_HOLD_MS);
    ebb_summary_t after = tu_summary();
    size_t purged = after.purged - before.purged;
    fprintf(stderr,
            "child in the cgroup: charged %llu MiB of %zu by page cache, churned %zu MiB, "
            "dirty %zu MiB and %zu MiB purged %u ms later\n",
            usage >> 20, LIMIT >> 20, c.bytes >> 20, after.dirty >> 20, purged >> 20,
            CACHE_HOLD_MS);
    if (purged >= 8 * TU_MiB)
        return 7;
    return stats_agree(false) ? 0 : 8;
}

/* Run this program again as a child in the cgroup at dir, in the given
 * mode; the test fails unless it exits 0. */
static void run_child_in(const char *dir, const char *mode)
{
    char usage_path[800];
    snprintf(usage_path, sizeof(usage_path), "%s/%s", dir, cg_usage_file);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char self[16];
        snprintf(self, sizeof(self), "%d", (int)getpid());
        if (!write_file(dir, "cgroup.procs", self))
            _exit(5);
        alarm(CHILD_TIMEOUT_S); /* kept across exec */
        char *args[] = {"/proc/self/exe", CHILD_ARG, (char *)mode, cache_file, usage_path, NULL};
        putenv(CHILD_CONF);
        execv(args[0], args);
        _exit(6);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        fail_msg("child died of signal %d", WTERMSIG(status));
    if (WEXITSTATUS(status) != 0)
        fail_msg("child exited %d (1: resident set did not fall, 2: options not applied, "
                 "3: allocation or reading failed, 4: page cache did not charge the cgroup, "
                 "5: could not join the cgroup, 6: exec failed, 7: purged under page cache "
                 "alone, 8: ebbstat's pressure figures wrong)",
                 WEXITSTATUS(status));
}

static void pressure_purges_at_once(void **state)
{
    (void)state;
    run_child_in(cg_dir, "anon");
}

/* The outer cgroup's limit binds one inside it with a looser limit. */
static void outer_limit_binds(void **state)
{
    (void)state;
    char text[64];
    if (strcmp(cg_limit_file, "memory.limit_in_bytes") == 0 &&
        (!du_read_file("/sys/fs/cgroup/memory/memory.use_hierarchy", text, sizeof(text)) ||
         text[0] != '1')) {
        fprintf(stderr, "SKIP: cgroup v1 without hierarchical accounting\n");
        skip();
    }
    write_file(cg_dir, "cgroup.subtree_control", "+memory"); /* v2; may be on already */
    snprintf(cg_inner, sizeof(cg_inner), "%s/inner", cg_dir);
    snprintf(text, sizeof(text), "%zu", 4 * LIMIT);
    assert_int_equal(mkdir(cg_inner, 0755), 0);
    if (!write_file(cg_inner, cg_limit_file, text))
        fail_msg("cannot set %s/%s", cg_inner, cg_limit_file);
    run_child_in(cg_inner, "anon");
}

/* Page cache filling the cgroup is not memory pressure. */
static void page_cache_is_not_pressure(void **state)
{
    (void)state;
    const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : ".";
    struct statfs fs;
    if (statfs(dir, &fs) != 0 || fs.f_type == TMPFS_MAGIC || fs.f_type == RAMFS_MAGIC) {
        fprintf(stderr, "SKIP: %s is not on a disk: its pages would not be page cache\n", dir);
        skip();
    }
    snprintf(cache_file, sizeof(cache_file), "%s/ebbmalloc-cache-%d", dir, (int)getpid());
    int fd = open(cache_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    size_t chunk = (size_t)1 << 20;
    char *buf = mmap(NULL, chunk, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(buf != MAP_FAILED);
    memset(buf, 0x5a, chunk);
    bool ok = true;
    for (size_t done = 0; ok && done < LIMIT / 4 * 5; done += chunk)
        ok = write(fd, buf, chunk) == (ssize_t)chunk;
    munmap(buf, chunk);
    /* Out of our own cgroup's cache, so that the child's reads bring it in. */
    ok = ok && fsync(fd) == 0 && posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0;
    close(fd);
    if (!ok) {
        unlink(cache_file);
        fail_msg("cannot write %s", cache_file);
    }
    run_child_in(cg_dir, "cache");
    unlink(cache_file);
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], CHILD_ARG) == 0) {
        tu_require_ebbmalloc();
        options_applied_or_exit();
        return strcmp(argv[2], "cache") == 0 ? child_cache(argv[3], argv[4]) : child_anon();
    }
    tu_require_ebbmalloc();
    const char *why_not = make_cgroup();
    if (why_not != NULL) {
        fprintf(stderr, "SKIP: cgroup pressure test: %s\n", why_not);
        return SKIP;
    }
    fprintf(stderr, "cgroup %s, %s %zu\n", cg_dir, cg_limit_file, LIMIT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pressure_purges_at_once),
        cmocka_unit_test(outer_limit_binds),
        cmocka_unit_test(page_cache_is_not_pressure),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    if (cache_file[0])
        unlink(cache_file); /* in case a test stopped before it did */
    if (cg_inner[0])
        rmdir(cg_inner);
    rmdir(cg_dir);
    return failed;
}
