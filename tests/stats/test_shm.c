/*
 * The shared statistics page from inside (linked with the internal build):
 * creation, mode and header; the sequence lock under concurrent writers and
 * readers, raw and through the real publisher; a forked child's own page;
 * a symlink planted at the page's path refused; removal at exit, and no
 * page made once the process is exiting; the pages of gone processes swept
 * by the next process that makes its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "conf.h"
#include "internal.h"
#include "page.h"
#include "stats_shm.h"

/* A tick far enough in the future that the page is due. */
static void tick_late(void) { ebb__stats_shm_tick(ebb__os_now_ns() + 3600 * 1000000000ull); }

static void test_page_created_0600_with_header(void **state) {
    (void)state;
    assert_true(ebb_init());
    assert_true(ebb__stats_shm_wants_tick());
    tick_late(); /* due one stats_interval_ms after initialisation */
    const char *path = ebb__stats_shm_path();
    assert_true(path[0] != '\0');
    char want[256];
    snprintf(want, sizeof(want), "%s/ebbmalloc.%d", ebb__opts.stats_dir, (int)getpid());
    assert_string_equal(path, want);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_mode & 07777, 0600);
    assert_int_equal(st.st_uid, geteuid());
    ebbstat_snap_t snap;
    char err[512];
    assert_int_equal(ebbstat_snap_read(path, &snap, err, sizeof(err)), EBBSTAT_OK);
    const ebb_stats_header_t *h = snap.page.h;
    assert_int_equal(h->pid, getpid());
    assert_int_equal(h->total_size, (uint64_t)st.st_size);
    assert_int_equal(h->narenas, ebb__narenas);
    assert_int_equal(h->nclasses, EBB_NSMALL);
    assert_int_equal(h->start_time, ebb__os_start_time());
    assert_true(h->start_time != 0);
    assert_non_null(strstr(h->options, "stats_shm:true"));
    assert_int_equal(snap.page.classes[0].size, 16);
    ebbstat_snap_free(&snap);
}

static void test_publish_counts_allocations(void **state) {
    (void)state;
    enum { N = 1000 };
    void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = ebb_malloc(48);
    ebb__stats_shm_publish(ebb__os_now_ns());
    ebbstat_snap_t snap;
    char err[512];
    assert_int_equal(ebbstat_snap_read(ebb__stats_shm_path(), &snap, err, sizeof(err)), 0);
    unsigned c = ebb_size_class(48);
    assert_true(snap.page.classes[c - 1].nmalloc >= N);
    assert_true(snap.page.classes[c - 1].live_objects >= N);
    assert_true(snap.page.h->total.live_bytes >= N * 48);
    assert_true(snap.page.h->total.mapped_bytes >= snap.page.h->total.active_bytes);
    assert_true(snap.page.h->total.threads >= 1);
    ebbstat_snap_free(&snap);
    /* Half of them freed into this thread's cache: the per-arena caches add
     * up to the total, and every arena in use reports its metadata. */
    for (int i = 0; i < N / 2; i++)
        ebb_free(p[i]);
    ebb__stats_shm_publish(ebb__os_now_ns());
    assert_int_equal(ebbstat_snap_read(ebb__stats_shm_path(), &snap, err, sizeof(err)), 0);
    uint64_t cached = 0;
    for (unsigned i = 0; i < snap.page.h->narenas; i++) {
        cached += snap.page.arenas[i].tcache_bytes;
        if (snap.page.arenas[i].mapped_bytes > 0)
            assert_true(snap.page.arenas[i].metadata_bytes > 0);
    }
    assert_true(snap.page.h->total.tcache_bytes > 0);
    assert_int_equal(cached, snap.page.h->total.tcache_bytes);
    ebbstat_snap_free(&snap);
    for (int i = N / 2; i < N; i++)
        ebb_free(p[i]);
}

/* ---- the sequence lock, raw: every word of a snapshot is the same value */
#define RAW_WORDS 1024
typedef struct raw_s {
    ebb_stats_header_t *page;
    size_t len;
    pthread_mutex_t writer; /* the process's one-writer rule */
    uint64_t seq_private;
    _Atomic bool stop;
    _Atomic uint64_t reads, torn;
} raw_t;

static void *raw_writer(void *arg) {
    raw_t *r = arg;
    unsigned char *snap = calloc(1, r->len);
    for (uint64_t v = 1; !atomic_load(&r->stop); v++) {
        uint64_t *w = (uint64_t *)(snap + EBB_STATS_SNAP_OFF + 8);
        for (size_t i = 0; i < (r->len - EBB_STATS_SNAP_OFF - 8) / 8; i++)
            w[i] = v;
        pthread_mutex_lock(&r->writer);
        ebb_stats_seq_publish(r->page, &r->seq_private, snap, r->len);
        pthread_mutex_unlock(&r->writer);
        usleep(50); /* the real writer publishes every stats_interval_ms */
    }
    free(snap);
    return NULL;
}

static void *raw_reader(void *arg) {
    raw_t *r = arg;
    unsigned char *copy = malloc(r->len);
    while (!atomic_load(&r->stop)) {
        if (!ebb_stats_seq_read(r->page, copy, r->len, 1000))
            continue;
        const uint64_t *w = (const uint64_t *)(copy + EBB_STATS_SNAP_OFF + 8);
        size_t n = (r->len - EBB_STATS_SNAP_OFF - 8) / 8;
        for (size_t i = 1; i < n; i++)
            if (w[i] != w[0]) {
                atomic_fetch_add(&r->torn, 1);
                break;
            }
        atomic_fetch_add(&r->reads, 1);
    }
    free(copy);
    return NULL;
}

static void test_seqlock_concurrent_writers_and_readers(void **state) {
    (void)state;
    raw_t r = {.len = sizeof(ebb_stats_header_t) + RAW_WORDS * 8};
    r.page = aligned_alloc(64, (r.len + 63) & ~(size_t)63);
    memset(r.page, 0, r.len);
    pthread_mutex_init(&r.writer, NULL);
    pthread_t w[2], rd[3];
    for (int i = 0; i < 2; i++)
        pthread_create(&w[i], NULL, raw_writer, &r);
    for (int i = 0; i < 3; i++)
        pthread_create(&rd[i], NULL, raw_reader, &r);
    usleep(400000);
    atomic_store(&r.stop, true);
    for (int i = 0; i < 2; i++)
        pthread_join(w[i], NULL);
    for (int i = 0; i < 3; i++)
        pthread_join(rd[i], NULL);
    printf("# raw seqlock: %llu clean reads, %llu torn\n", (unsigned long long)r.reads,
           (unsigned long long)r.torn);
    assert_true(r.reads > 100);
    assert_int_equal(r.torn, 0);
    assert_int_equal(atomic_load(&r.page->seq) & 1, 0);
    free(r.page);
}

/* ---- the real publisher: ticks and publishes from several threads while
 * others allocate; readers parse every copy and see publish_count grow. */
typedef struct live_s {
    _Atomic bool stop;
    _Atomic uint64_t reads, bad;
} live_t;

static void *live_alloc(void *arg) {
    live_t *l = arg;
    void *p[64] = {0};
    for (unsigned i = 0; !atomic_load(&l->stop); i++) {
        ebb_free(p[i % 64]);
        p[i % 64] = ebb_malloc(16 + (i * 37) % 3000);
    }
    for (int i = 0; i < 64; i++)
        ebb_free(p[i]);
    return NULL;
}

static void *live_publish(void *arg) {
    live_t *l = arg;
    for (unsigned i = 0; !atomic_load(&l->stop); i++) {
        if (i & 1)
            ebb__stats_shm_publish(ebb__os_now_ns());
        else
            ebb__stats_shm_tick(ebb__os_now_ns() + 10 * 1000000000ull);
    }
    return NULL;
}

static void *live_read(void *arg) {
    live_t *l = arg;
    uint64_t last = 0;
    while (!atomic_load(&l->stop)) {
        ebbstat_snap_t snap;
        char err[512];
        if (ebbstat_snap_read(ebb__stats_shm_path(), &snap, err, sizeof(err)) != EBBSTAT_OK) {
            fprintf(stderr, "# %s\n", err);
            atomic_fetch_add(&l->bad, 1);
            continue;
        }
        if (snap.page.h->publish_count < last)
            atomic_fetch_add(&l->bad, 1);
        last = snap.page.h->publish_count;
        ebbstat_snap_free(&snap);
        atomic_fetch_add(&l->reads, 1);
    }
    return NULL;
}

static void test_publisher_under_concurrency(void **state) {
    (void)state;
    live_t l = {0};
    pthread_t t[7];
    for (int i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, live_alloc, &l);
    for (int i = 3; i < 5; i++)
        pthread_create(&t[i], NULL, live_publish, &l);
    for (int i = 5; i < 7; i++)
        pthread_create(&t[i], NULL, live_read, &l);
    usleep(500000);
    atomic_store(&l.stop, true);
    for (int i = 0; i < 7; i++)
        pthread_join(t[i], NULL);
    printf("# publisher: %llu clean reads\n", (unsigned long long)l.reads);
    assert_true(l.reads > 10);
    assert_int_equal(l.bad, 0);
}

/* ---- fork: the child's own page, created on its first tick; removal at
 * normal exit; a symlink at the child's path refused. */
static void test_fork_child_gets_own_page_removed_at_exit(void **state) {
    (void)state;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        bool before = ebb__stats_shm_path()[0] == '\0'; /* not the parent's */
        ebb__stats_shm_tick(ebb__os_now_ns());
        before = before && ebb__stats_shm_path()[0] == '\0'; /* not due yet */
        tick_late();
        char path[256];
        snprintf(path, sizeof(path), "%s", ebb__stats_shm_path());
        ebbstat_snap_t snap;
        char err[512];
        bool ok = before && ebbstat_snap_read(path, &snap, err, sizeof(err)) == 0 &&
                  snap.page.h->pid == getpid();
        if (write(fds[1], path, strlen(path) + 1) < 0 || !ok)
            _exit(1);
        exit(0); /* runs the destructor that removes the page */
    }
    close(fds[1]);
    char path[256] = "";
    ssize_t n = read(fds[0], path, sizeof(path) - 1);
    close(fds[0]);
    int st;
    waitpid(pid, &st, 0);
    assert_true(n > 0);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char want[256];
    snprintf(want, sizeof(want), "%s/ebbmalloc.%d", ebb__opts.stats_dir, (int)pid);
    assert_string_equal(path, want);
    assert_int_equal(access(path, F_OK), -1); /* removed at exit */
    /* The parent's page is still there and still ours. */
    struct stat sb;
    assert_int_equal(stat(ebb__stats_shm_path(), &sb), 0);
}

/* ---- exit: no page is made once the process is exiting ---- */

/* Is there a page in the name of process pid? */
static bool page_exists(pid_t pid) {
    char path[300];
    snprintf(path, sizeof(path), "%s/ebbmalloc.%d", ebb__opts.stats_dir, (int)pid);
    return access(path, F_OK) == 0;
}

/* A process whose page falls due after its destructor ran (it exits about
 * stats_interval_ms after it started; the background thread ticks until
 * _exit) makes none. */
static void test_no_page_made_after_exit(void **state) {
    (void)state;
    pid_t pid = fork();
    if (pid == 0) {
        ebb__stats_shm_exit(); /* what exit() runs */
        tick_late();           /* the page is due now */
        _exit(ebb__stats_shm_path()[0] == '\0' && !page_exists(getpid()) ? 0 : 1);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    bool left = page_exists(pid);
    if (left) {
        char path[300];
        snprintf(path, sizeof(path), "%s/ebbmalloc.%d", ebb__opts.stats_dir, (int)pid);
        unlink(path);
    }
    assert_false(left);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static atomic_bool ticker_stop;

static void *ticker(void *arg) {
    (void)arg;
    while (!atomic_load(&ticker_stop))
        tick_late();
    return NULL;
}

/* Exit racing the background thread as it makes the page: whichever
 * comes first, no page is left. Each child exits after a different delay,
 * so some exit before the page is made, some while, some after. */
static void test_exit_racing_page_creation(void **state) {
    (void)state;
    enum { CHILDREN = 200 };
    int left = 0, failed = 0;
    for (int i = 0; i < CHILDREN; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            atomic_store(&ticker_stop, false);
            pthread_t t;
            if (pthread_create(&t, NULL, ticker, NULL) != 0)
                _exit(2);
            struct timespec d = {0, (long)(i % 50) * 4000}; /* 0-196 us */
            nanosleep(&d, NULL);
            ebb__stats_shm_exit();
            atomic_store(&ticker_stop, true);
            pthread_join(t, NULL);
            _exit(0);
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        failed += !(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        if (page_exists(pid)) {
            left++;
            char path[300];
            snprintf(path, sizeof(path), "%s/ebbmalloc.%d", ebb__opts.stats_dir, (int)pid);
            unlink(path);
        }
    }
    printf("# %d of %d children left a page\n", left, CHILDREN);
    assert_int_equal(failed, 0);
    assert_int_equal(left, 0);
}

/* ---- pages of gone processes: swept by the next process that makes one ---- */

/* A pid no process has: a child's, once it is reaped. */
static pid_t dead_pid(void) {
    pid_t pid = fork();
    if (pid == 0)
        _exit(0);
    int st;
    waitpid(pid, &st, 0);
    return pid;
}

/* Write a page header naming pid into dir/ebbmalloc.<name_pid>, mode mode. */
static void plant_page(const char *dir, pid_t name_pid, pid_t pid, uint64_t pid_ns, uint32_t version,
                       mode_t mode) {
    char path[300];
    snprintf(path, sizeof(path), "%s/ebbmalloc.%d", dir, (int)name_pid);
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0600);
    assert_true(fd >= 0);
    ebb_stats_header_t h;
    memset(&h, 0, sizeof(h));
    h.magic = EBB_STATS_MAGIC;
    h.version = version;
    h.header_size = sizeof(h);
    h.total_size = 4096;
    h.pid = pid;
    h.pid_ns = pid_ns;
    assert_int_equal(write(fd, &h, sizeof(h)), (ssize_t)sizeof(h));
    assert_int_equal(ftruncate(fd, 4096), 0);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static bool planted(const char *dir, pid_t name_pid) {
    char path[300];
    struct stat st;
    snprintf(path, sizeof(path), "%s/ebbmalloc.%d", dir, (int)name_pid);
    return lstat(path, &st) == 0;
}

/* A process that makes its page removes those of gone processes of its
 * pid namespace, and nothing else: not a live process's page, not one of
 * another pid namespace or of another layout, not a file that is not a
 * page (wrong mode, a symlink, a name that is not a page's). */
static void test_pages_of_gone_processes_swept(void **state) {
    (void)state;
    char dir[] = "/tmp/ebb-sweep-XXXXXX";
    assert_non_null(mkdtemp(dir));
    uint64_t ns = ebb__os_pid_ns();
    if (ns == 0)
        skip(); /* no /proc/self/ns/pid: nothing to tell our pages by */
    pid_t live = fork();
    if (live == 0) {
        pause();
        _exit(0);
    }
    pid_t gone1 = dead_pid(), gone2 = dead_pid(), other_ns = dead_pid(), other_version = dead_pid(),
          wrong_mode = dead_pid(), other_pid = dead_pid(), link = dead_pid();
    plant_page(dir, gone1, gone1, ns, EBB_STATS_VERSION, 0600);
    plant_page(dir, gone2, gone2, ns, EBB_STATS_VERSION, 0600);
    plant_page(dir, live, live, ns, EBB_STATS_VERSION, 0600);
    plant_page(dir, other_ns, other_ns, ns + 1, EBB_STATS_VERSION, 0600);
    plant_page(dir, other_version, other_version, ns, EBB_STATS_VERSION + 1, 0600);
    plant_page(dir, wrong_mode, wrong_mode, ns, EBB_STATS_VERSION, 0644);
    plant_page(dir, other_pid, gone1, ns, EBB_STATS_VERSION, 0600); /* names another pid */
    char target[300], path[300];
    snprintf(target, sizeof(target), "%s/ebbmalloc.%d", dir, (int)gone1);
    snprintf(path, sizeof(path), "%s/ebbmalloc.%d", dir, (int)link);
    assert_int_equal(symlink(target, path), 0);
    snprintf(path, sizeof(path), "%s/ebbmalloc.%d.bak", dir, (int)gone2);
    assert_int_equal(close(open(path, O_WRONLY | O_CREAT, 0600)), 0);

    pid_t pid = fork();
    if (pid == 0) {
        snprintf(ebb__opts.stats_dir, sizeof(ebb__opts.stats_dir), "%s", dir);
        /* The count is the process's: the parent's own sweep of /dev/shm
         * (pages other tests left) comes with the fork. */
        unsigned before = ebb__stats_shm_swept();
        tick_late(); /* makes the child's page, then sweeps */
        bool made = ebb__stats_shm_path()[0] != '\0';
        unsigned swept = ebb__stats_shm_swept() - before;
        ebb__stats_shm_exit();
        _exit(made ? (int)swept : 100);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    bool gone1_kept = planted(dir, gone1), gone2_kept = planted(dir, gone2);
    bool kept_all = planted(dir, live) && planted(dir, other_ns) && planted(dir, other_version) &&
                    planted(dir, wrong_mode) && planted(dir, other_pid) && planted(dir, link) &&
                    access(path, F_OK) == 0;
    kill(live, SIGKILL);
    waitpid(live, NULL, 0);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    printf("# child status %#x; gone pages kept: %d %d; the others all kept: %d\n", st, gone1_kept,
           gone2_kept, kept_all);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 2); /* made its page, removed two */
    assert_false(gone1_kept);
    assert_false(gone2_kept);
    assert_true(kept_all);
}

static void test_symlink_at_page_path_refused(void **state) {
    (void)state;
    char target[] = "/tmp/ebbstat-target-XXXXXX";
    int tfd = mkstemp(target);
    assert_true(tfd >= 0);
    close(tfd);
    pid_t pid = fork();
    if (pid == 0) {
        char path[300];
        snprintf(path, sizeof(path), "%s/ebbmalloc.%d", ebb__opts.stats_dir, (int)getpid());
        if (symlink(target, path) != 0)
            _exit(2);
        tick_late();
        bool refused = ebb__stats_shm_path()[0] == '\0';
        struct stat sb;
        bool link_kept = lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode);
        unlink(path);
        _exit(refused && link_kept ? 0 : 1);
    }
    int st;
    waitpid(pid, &st, 0);
    struct stat sb;
    assert_int_equal(stat(target, &sb), 0);
    unlink(target);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    assert_int_equal(sb.st_size, 0); /* the target was neither sized nor written */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_page_created_0600_with_header),
        cmocka_unit_test(test_publish_counts_allocations),
        cmocka_unit_test(test_seqlock_concurrent_writers_and_readers),
        cmocka_unit_test(test_publisher_under_concurrency),
        cmocka_unit_test(test_fork_child_gets_own_page_removed_at_exit),
        cmocka_unit_test(test_symlink_at_page_path_refused),
        cmocka_unit_test(test_no_page_made_after_exit),
        cmocka_unit_test(test_exit_racing_page_creation),
        cmocka_unit_test(test_pages_of_gone_processes_swept),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
