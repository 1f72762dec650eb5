/*
 * A process that frees most of what its threads allocated, then idles,
 * gives the memory back within decay_ms + DU_GRACE_MS: 8 threads allocate
 * ~300 MiB of mixed sizes, keep ~2% and free the rest; the resident set
 * must fall under baseline + live + DU_SLACK in time, with nobody calling
 * malloc any more. Two ways to stop:
 *   decay_rss            the threads exit (their caches go back);
 *   decay_rss blocked    the threads stay, blocked forever on a condition
 *                        variable (their caches stay with them).
 */
#include "decay_util.h"

#include <setjmp.h>
#include <stdarg.h>

#include <cmocka.h>

enum { THREADS = 8, TOTAL = 300 << 20 };

static du_churn_t work[THREADS];
static bool block_forever;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cv = PTHREAD_COND_INITIALIZER, never_cv = PTHREAD_COND_INITIALIZER;
static unsigned ndone;

static void *worker(void *arg)
{
    du_churn_t *c = arg;
    if (!du_churn(c))
        TU_FAIL("allocation failed in the churn");
    pthread_mutex_lock(&mu);
    ndone++;
    pthread_cond_signal(&done_cv);
    while (block_forever)
        pthread_cond_wait(&never_cv, &mu); /* never signalled */
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void resident_set_falls_when_idle(void **state)
{
    uint64_t seed = tu_seed(3);
    uint64_t decay_ms = du_option("decay_ms");
    size_t base = tu_statm(TU_STATM_RESIDENT);
    pthread_t t[THREADS];
    for (size_t i = 0; i < THREADS; i++) {
        work[i] = (du_churn_t){.seed = seed + i, .bytes = TOTAL / THREADS};
        assert_int_equal(pthread_create(&t[i], NULL, worker, &work[i]), 0);
    }
    pthread_mutex_lock(&mu);
    while (ndone < THREADS)
        pthread_cond_wait(&done_cv, &mu);
    pthread_mutex_unlock(&mu);
    if (!block_forever)
        for (size_t i = 0; i < THREADS; i++)
            pthread_join(t[i], NULL);
    size_t live = 0;
    for (size_t i = 0; i < THREADS; i++)
        live += work[i].kept_bytes;
    assert_int_equal(atomic_load(&tu_failures), 0);
    assert_true(du_resident_falls(block_forever ? "threads blocked" : "threads exited", base,
                                  live, decay_ms + DU_GRACE_MS));
    if (!block_forever)
        for (size_t i = 0; i < THREADS; i++)
            du_release(&work[i]);
}

int main(int argc, char **argv)
{
    tu_require_ebbmalloc();
    block_forever = argc > 1 && strcmp(argv[1], "blocked") == 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(resident_set_falls_when_idle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
