/* The internals under threads, through the ebb_* API: mixed sizes (slabs,
 * large, huge) and alignments, objects handed between threads, realloc,
 * purges and statistics taken while others allocate, caches drained while
 * their thread sleeps (decay_ms:1, set by CMake), threads ending with full
 * caches. It asserts that every object keeps its contents; its main use is
 * under ThreadSanitizer (tools/test builds the unit tests with it), where
 * any data race among the allocator's own accesses fails the run. */
#include <pthread.h>
#include <stdlib.h>

#include "unit.h"

enum { WORKERS = 4, OPS = 20000, QUEUE = 64, ROUNDS = 3 };

/* A bounded hand-off queue: objects made by one thread, freed by another. */
typedef struct queue_s {
    pthread_mutex_t lock;
    unsigned char *item[QUEUE];
    size_t size[QUEUE];
    unsigned n;
} queue_t;

static queue_t q = {.lock = PTHREAD_MUTEX_INITIALIZER};
static _Atomic int corrupt;

static uint64_t next_rand(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Sizes from 1 B to 4 MiB, mostly small. */
static size_t pick_size(uint64_t *s) {
    uint64_t r = next_rand(s);
    unsigned lg = (unsigned)(r % 100 < 90 ? r % 11 : r % 100 < 99 ? 11 + r % 7 : 18 + r % 5);
    return ((size_t)1 << lg) + (size_t)(next_rand(s) % ((size_t)1 << lg));
}

static void fill(unsigned char *p, size_t n, unsigned char tag) {
    p[0] = tag;
    p[n - 1] = tag;
    p[n / 2] = tag;
}

static bool intact(const unsigned char *p, size_t n, unsigned char tag) {
    return p[0] == tag && p[n - 1] == tag && p[n / 2] == tag;
}

static unsigned char tag_of(size_t n) { return (unsigned char)(n * 31 + 7); }

static void check_free(unsigned char *p, size_t n) {
    if (!intact(p, n, tag_of(n)))
        atomic_store(&corrupt, 1);
    ebb_free(p);
}

static void *worker(void *arg) {
    uint64_t s = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    unsigned char *mine[32] = {0};
    size_t len[32] = {0};
    for (int i = 0; i < OPS; i++) {
        unsigned k = (unsigned)(next_rand(&s) % 32);
        uint64_t what = next_rand(&s) % 16;
        if (mine[k] == NULL) {
            len[k] = pick_size(&s);
            size_t align = (size_t)64 << (next_rand(&s) % 10); /* 64 B .. 32 KiB */
            mine[k] = what == 0   ? ebb_calloc(1, len[k])
                      : what == 1 ? ebb_aligned_alloc(align, len[k])
                                  : ebb_malloc(len[k]);
            if (mine[k] == NULL) { /* no cmocka assert off the main thread */
                atomic_store(&corrupt, 1);
                break;
            }
            if (what == 1 && (uintptr_t)mine[k] % align != 0)
                atomic_store(&corrupt, 1);
            if (what == 0 && (mine[k][0] != 0 || mine[k][len[k] - 1] != 0))
                atomic_store(&corrupt, 1);
            fill(mine[k], len[k], tag_of(len[k]));
        } else if (what < 3) { /* grow or shrink in place or by moving */
            size_t n = pick_size(&s);
            unsigned char *p = ebb_realloc(mine[k], n);
            if (p == NULL) {
                atomic_store(&corrupt, 1);
                break;
            }
            size_t keep = n < len[k] ? n : len[k];
            if (p[0] != tag_of(len[k]) || (keep == len[k] && p[len[k] - 1] != tag_of(len[k])))
                atomic_store(&corrupt, 1);
            mine[k] = p;
            len[k] = n;
            fill(p, n, tag_of(n));
        } else if (what < 8) { /* hand it to whichever thread takes it */
            pthread_mutex_lock(&q.lock);
            if (q.n < QUEUE) {
                q.item[q.n] = mine[k];
                q.size[q.n++] = len[k];
                mine[k] = NULL;
            }
            pthread_mutex_unlock(&q.lock);
            if (mine[k] != NULL) {
                check_free(mine[k], len[k]);
                mine[k] = NULL;
            }
        } else if (what < 12) { /* free one another thread made */
            unsigned char *p = NULL;
            size_t n = 0;
            pthread_mutex_lock(&q.lock);
            if (q.n > 0) {
                p = q.item[--q.n];
                n = q.size[q.n];
            }
            pthread_mutex_unlock(&q.lock);
            if (p != NULL)
                check_free(p, n);
        } else {
            check_free(mine[k], len[k]);
            mine[k] = NULL;
        }
        if (ebb_usable_size(mine[k]) < (mine[k] ? len[k] : 0))
            atomic_store(&corrupt, 1);
        if (i % 5000 == 4999) { /* idle for a while: the purger drains the cache */
            struct timespec ts = {0, 3 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    for (unsigned k = 0; k < 32; k++)
        if (mine[k] != NULL)
            check_free(mine[k], len[k]);
    return NULL; /* exits with a full cache: the destructor flushes it */
}

/* Purges, statistics and cache flushes while the workers run. */
static _Atomic int stop;
static void *meddler(void *arg) {
    (void)arg;
    while (!atomic_load(&stop)) {
        ebb_summary_t sum;
        ebb_summary(&sum);
        ebb_purge();
        ebb_thread_flush();
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

static void test_threads_share_objects_intact(void **state) {
    (void)state;
    unit_init();
    for (int round = 0; round < ROUNDS; round++) {
        pthread_t w[WORKERS], m;
        atomic_store(&stop, 0);
        assert_int_equal(pthread_create(&m, NULL, meddler, NULL), 0);
        for (uintptr_t i = 0; i < WORKERS; i++)
            assert_int_equal(pthread_create(&w[i], NULL, worker, (void *)(i + 1 + round * WORKERS)), 0);
        for (int i = 0; i < WORKERS; i++)
            pthread_join(w[i], NULL);
        atomic_store(&stop, 1);
        pthread_join(m, NULL);
    }
    while (q.n > 0) {
        q.n--;
        check_free(q.item[q.n], q.size[q.n]);
    }
    assert_int_equal(atomic_load(&corrupt), 0);
    ebb_summary_t sum;
    ebb_summary(&sum);
    /* Everything was freed: what is left allocated is this thread's own. */
    assert_true(sum.allocated < (size_t)1 << 20);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_threads_share_objects_intact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
