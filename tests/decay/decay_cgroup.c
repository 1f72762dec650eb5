/*
 * Memory pressure from the cgroup purges at once. Where the machine lets
 * us (root, and cgroup v1's memory hierarchy or a cgroup v2 hierarchy with
 * the memory controller), make a cgroup limited to LIMIT bytes below our
 * own, start a child in it that runs this program again with a decay of
 * ten minutes, no dirty cap and pressure_pct:50 -- so that only pressure
 * can purge --, allocate and free more than half the limit, and check that
 * its resident set falls within PRESSURE_MS. Elsewhere: skip (exit 77)
 * with the reason. The cgroup is removed afterwards.
 */
#include "decay_util.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <sys/stat.h>

#include <cmocka.h>

#define LIMIT ((size_t)512 << 20)
#define CHILD_CONF "EBBMALLOC_CONF=decay_ms:600000,pressure_pct:50,dirty_max_kb:1048576"
#define CHILD_ARG "--in-cgroup"
enum { SKIP = 77, PRESSURE_MS = 3000, CHILD_TIMEOUT_S = 30 };

static char cg_dir[600];
static const char *cg_limit_file;

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
    } else if (du_read_file("/sys/fs/cgroup/cgroup.controllers", controllers,
                            sizeof(controllers)) &&
               strstr(controllers, "memory") != NULL) {
        own_dir("/sys/fs/cgroup", "", parent, sizeof(parent));
        cg_limit_file = "memory.max";
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

/* In the cgroup: fill more than pressure_pct of the limit, free, wait. */
static int in_cgroup_main(void)
{
    if (du_option("pressure_pct") != 50 || du_option("decay_ms") != 600000) {
        fprintf(stderr, "child: options not applied\n");
        return 2;
    }
    size_t base = tu_statm(TU_STATM_RESIDENT);
    du_churn_t c = {.seed = 13, .bytes = LIMIT / 10 * 6};
    if (!du_churn(&c))
        return 3;
    return du_resident_falls("child in the cgroup", base, c.kept_bytes, PRESSURE_MS) ? 0 : 1;
}

static void pressure_purges_at_once(void **state)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char self[16];
        snprintf(self, sizeof(self), "%d", (int)getpid());
        if (!write_file(cg_dir, "cgroup.procs", self))
            _exit(5);
        alarm(CHILD_TIMEOUT_S); /* kept across exec */
        char *args[] = {"/proc/self/exe", CHILD_ARG, NULL};
        putenv(CHILD_CONF);
        execv(args[0], args);
        _exit(6);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    rmdir(cg_dir);
    if (WIFSIGNALED(status))
        fail_msg("child died of signal %d", WTERMSIG(status));
    if (WEXITSTATUS(status) != 0)
        fail_msg("child exited %d (1: resident set did not fall, 2: options not applied, "
                 "3: allocation failed, 5: could not join the cgroup, 6: exec failed)",
                 WEXITSTATUS(status));
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], CHILD_ARG) == 0) {
        tu_require_ebbmalloc();
        return in_cgroup_main();
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
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    rmdir(cg_dir); /* in case the test stopped before it did */
    return failed;
}
