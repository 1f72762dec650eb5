/* Misuse is stopped, not passed on: a small object freed twice -- at once,
 * or with other frees between -- or written after its free, ends the
 * process (SIGABRT, one line on stderr) when a cache would hand it out
 * again, before two owners share it; as glibc's tcache stops it. So do a
 * double free straight into a slab (no caches) and a free of a pointer
 * into the middle of a large object. A program that keeps any value in
 * its objects, odd words included, is never stopped. Each case runs in a
 * child process of its own, re-executed when it needs other options; none
 * keeps a statistics page (stats_shm:false, from ctest), which a process
 * killed by SIGABRT would leave behind. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Exit codes of a case that was not stopped. */
enum { NOT_STOPPED = 0, SHARED = 3 };

static void *volatile sink;

static int case_double_free_at_once(size_t size) {
    char *p = malloc(size);
    free(p);
    free(p);
    char *a = malloc(size), *b = malloc(size);
    sink = a;
    return a == b ? SHARED : NOT_STOPPED;
}

static int case_double_free_later(size_t size) {
    char *p = malloc(size), *q = malloc(size);
    free(p);
    free(q);
    free(p);
    char *a = malloc(size), *b = malloc(size), *c = malloc(size);
    sink = b;
    return a == c ? SHARED : NOT_STOPPED;
}

static int case_write_after_free(size_t size) {
    uintptr_t *p = malloc(size);
    free(p);
    p[1] ^= 1; /* whatever the allocator keeps there, it changed */
    sink = malloc(size);
    return NOT_STOPPED;
}

static int case_interior_free_large(void) {
    char *p = malloc(100000);
    free(p + 4096);
    return NOT_STOPPED;
}

/* Odd words, even words, words from a generator: never a false stop. */
static int case_any_contents(void) {
    uint64_t x = 0x243f6a8885a308d3u;
    for (int i = 0; i < 200000; i++) {
        size_t size = 16 + (size_t)(x % 8000);
        uint64_t *p = malloc(size);
        x = x * 6364136223846793005u + 1442695040888963407u;
        p[0] = x;
        p[1] = x | (i & 1);
        free(p);
    }
    return 99; /* ran to the end */
}

static int run_case(const char *name) {
    if (strcmp(name, "small_at_once") == 0)
        return case_double_free_at_once(32);
    if (strcmp(name, "small_later") == 0)
        return case_double_free_later(48);
    if (strcmp(name, "cpu_class_at_once") == 0) /* cached per CPU where rseq works */
        return case_double_free_at_once(4000);
    if (strcmp(name, "cpu_class_later") == 0)
        return case_double_free_later(20000);
    if (strcmp(name, "write_after_free") == 0)
        return case_write_after_free(64);
    if (strcmp(name, "write_after_free_cpu") == 0)
        return case_write_after_free(3000);
    if (strcmp(name, "slab_at_once") == 0)
        return case_double_free_at_once(32);
    if (strcmp(name, "interior_large") == 0)
        return case_interior_free_large();
    if (strcmp(name, "any_contents") == 0)
        return case_any_contents();
    return 127;
}

static char self[4096];

/* Run case name in a child (under conf when not NULL); its stderr goes to
 * err. Returns the wait status. */
static int child(const char *name, const char *conf, char *err, size_t cap) {
    char path[] = "/tmp/ebb-misuse-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fd, 2);
        if (conf != NULL) {
            char opts[256];
            snprintf(opts, sizeof(opts), "stats_shm:false,%s", conf);
            setenv("EBBMALLOC_CONF", opts, 1);
            execl(self, self, "--case", name, (char *)NULL);
            _exit(126);
        }
        _exit(run_case(name));
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    ssize_t n = pread(fd, err, cap - 1, 0);
    err[n > 0 ? n : 0] = '\0';
    close(fd);
    return status;
}

static void expect_stopped(const char *name, const char *conf, const char *says) {
    char err[1024];
    int status = child(name, conf, err, sizeof(err));
    if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGABRT)
        fail_msg("%s: not stopped (%s %d; 3: two mallocs returned the same object); stderr '%s'",
                 name, WIFEXITED(status) ? "exit" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), err);
    if (strstr(err, says) == NULL)
        fail_msg("%s: stopped, but stderr '%s' does not say '%s'", name, err, says);
}

#define CHANGED "malloc(): a free object in a cache was written: freed twice, or used after free"

static void test_double_free_at_once(void **state) {
    (void)state;
    expect_stopped("small_at_once", NULL, CHANGED);
}

static void test_double_free_with_frees_between(void **state) {
    (void)state;
    expect_stopped("small_later", NULL, CHANGED);
}

static void test_double_free_of_cpu_cached_classes(void **state) {
    (void)state;
    expect_stopped("cpu_class_at_once", NULL, CHANGED);
    expect_stopped("cpu_class_later", NULL, CHANGED);
    /* With the thread caches holding those classes instead. */
    expect_stopped("cpu_class_later", "cpu_cache_kb:0", CHANGED);
}

static void test_write_after_free(void **state) {
    (void)state;
    expect_stopped("write_after_free", NULL, CHANGED);
    expect_stopped("write_after_free_cpu", NULL, CHANGED);
}

static void test_double_free_without_caches(void **state) {
    (void)state;
    expect_stopped("slab_at_once", "tcache:false,cpu_cache_kb:0", "free(): double free detected");
}

static void test_interior_free_of_large_object(void **state) {
    (void)state;
    expect_stopped("interior_large", NULL, "free(): invalid pointer");
}

static void test_any_contents_is_fine(void **state) {
    (void)state;
    char err[1024];
    int status = child("any_contents", NULL, err, sizeof(err));
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 99);
    assert_string_equal(err, "");
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--case") == 0)
        return run_case(argv[2]);
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return 1;
    self[n] = '\0';
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_double_free_at_once),
        cmocka_unit_test(test_double_free_with_frees_between),
        cmocka_unit_test(test_double_free_of_cpu_cached_classes),
        cmocka_unit_test(test_write_after_free),
        cmocka_unit_test(test_double_free_without_caches),
        cmocka_unit_test(test_interior_free_of_large_object),
        cmocka_unit_test(test_any_contents_is_fine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
