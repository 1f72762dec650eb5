/*
 * fork() while the background thread runs: the thread does not exist in
 * the child, so the child must start a purger of its own. The parent makes
 * sure its thread is up and purging (a free span purged while the parent
 * only polls), forks, and the child allocates and frees 200 MiB and then
 * idles: its resident set must fall within decay_ms + DU_GRACE_MS, and a
 * task named DU_BG_NAME must exist in it. alarm() ends a hung child.
 */
#include "decay_util.h"

#include <setjmp.h>
#include <stdarg.h>

#include <cmocka.h>

enum { CHILD_TOTAL = 200 << 20, PARENT_BLOCKS = 32, CHILD_TIMEOUT_S = 30 };

static int child_main(void *arg)
{
    (void)arg;
    if (du_task_named(DU_BG_NAME) >= 0) {
        fprintf(stderr, "child: a background thread survived the fork\n");
        return 2;
    }
    uint64_t decay_ms = du_option("decay_ms");
    size_t base = tu_statm(TU_STATM_RESIDENT);
    du_churn_t c = {.seed = 11, .bytes = CHILD_TOTAL};
    if (!du_churn(&c))
        return 3;
    bool fell = du_resident_falls("child", base, c.kept_bytes, decay_ms + DU_GRACE_MS);
    long bg = du_task_named(DU_BG_NAME);
    fprintf(stderr, "child: background thread %s\n", bg >= 0 ? "running" : "missing");
    if (bg < 0)
        return 4;
    if (!fell)
        return 1;
    du_release(&c);
    return 0;
}

static void child_purges_after_fork(void **state)
{
    /* Enough slow-path calls to start the background thread, and free
     * spans between live ones for it to purge. */
    void *p[PARENT_BLOCKS];
    for (int i = 0; i < PARENT_BLOCKS; i++) {
        p[i] = malloc(TU_MiB);
        assert_non_null(p[i]);
        memset(p[i], 1, TU_MiB);
    }
    size_t purged0 = tu_summary().purged;
    for (int i = 0; i < PARENT_BLOCKS; i += 2)
        free(p[i]);
    uint64_t start = du_now_ms(), limit = du_option("decay_ms") + DU_GRACE_MS;
    while (tu_summary().purged == purged0 && du_now_ms() - start < limit)
        du_sleep_ms(DU_POLL_MS);
    assert_true(tu_summary().purged > purged0);
    assert_true(du_wait_background(limit) >= 0);

    int rc = tu_run_in_child(child_main, NULL, CHILD_TIMEOUT_S);
    if (rc != 0)
        fail_msg("child %s %d (1: resident set did not fall, 2: background thread in the "
                 "child at fork, 3: allocation failed, 4: no background thread in the child)",
                 rc >= 128 ? "died of signal" : "exited", rc >= 128 ? rc - 128 : rc);
    for (int i = 1; i < PARENT_BLOCKS; i += 2)
        free(p[i]);
}

int main(void)
{
    tu_require_ebbmalloc();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(child_purges_after_fork),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
