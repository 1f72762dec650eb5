/*
 * An idle process with nothing to purge costs next to nothing: the
 * background thread wakes about once a second. Its voluntary context
 * switches (one a sleep) over WATCH_S seconds must stay at most MAX_WAKEUPS.
 */
#include "decay_util.h"

#include <setjmp.h>
#include <stdarg.h>

#include <cmocka.h>

enum { WATCH_S = 5, MAX_WAKEUPS = 7, SETTLE_MS = 1500 };

static long voluntary_switches(long tid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/self/task/%ld/status", tid);
    if (!du_read_file(path, buf, sizeof(buf)))
        return -1;
    const char *f = strstr(buf, "\nvoluntary_ctxt_switches:");
    return f ? strtol(f + strlen("\nvoluntary_ctxt_switches:"), NULL, 10) : -1;
}

static void idle_purger_sleeps(void **state)
{
    /* Slow-path calls start the background thread. */
    for (int i = 0; i < 64; i++)
        free(malloc(TU_MiB));
    long tid = du_wait_background(2000);
    assert_true(tid >= 0);
    /* Nothing left to purge, and time for what was due to pass. */
    ebb_purge();
    du_sleep_ms(SETTLE_MS);
    long v0 = voluntary_switches(tid);
    du_sleep_ms(WATCH_S * 1000);
    long v1 = voluntary_switches(tid);
    assert_true(v0 >= 0 && v1 >= 0);
    fprintf(stderr, "background thread %ld: %ld wakeups in %d s (at most %d)\n", tid, v1 - v0,
            WATCH_S, MAX_WAKEUPS);
    assert_true(v1 - v0 <= MAX_WAKEUPS);
}

int main(void)
{
    tu_require_ebbmalloc();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(idle_purger_sleeps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
