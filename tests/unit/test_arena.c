/* Arenas, slabs and thread caches through the ebb_ API of the internal
 * build: cross-thread return to the owning arena, slab release, the
 * release-mode checks against double and invalid frees, the summary, and
 * the purge of free pages inside slabs racing the bin's users. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <unistd.h>

#include "unit.h"

static void *free_list(void *head) {
    unsigned c = ebb_size_class(48);
    ebb__arena_flush(c, head);
    return NULL;
}

static void test_refill_and_cross_thread_flush(void **state) {
    (void)state;
    unit_init();
    ebb_arena_t *a = ebb__arena_get(0);
    unsigned c = ebb_size_class(48);
    size_t before = unit_bin_nout(a, c);
    void *head;
    unsigned got = ebb__arena_refill(a, c, &head, 300);
    assert_int_equal(got, 300);
    assert_int_equal(unit_bin_nout(a, c), before + 300);
    /* Distinct, class-aligned objects in address order within a slab. */
    unsigned n = 0;
    for (void *p = head; p; p = *(void **)p) {
        assert_true(ebb_owns(p));
        assert_int_equal(ebb_usable_size(p), 48);
        n++;
    }
    assert_int_equal(n, 300);
    /* Another thread returns them: they go back to arena 0's slabs. */
    pthread_t t;
    pthread_create(&t, NULL, free_list, head);
    pthread_join(t, NULL);
    assert_int_equal(unit_bin_nout(a, c), before);
}

/* A flush of objects of three arenas, interleaved one by one: each goes
 * back to its own arena's slabs, and each arena's bin lock is taken once
 * (nflushes counts the passes), not at every change of arena. */
static void test_mixed_flush_locks_each_arena_once(void **state) {
    (void)state;
    unit_init();
    unsigned c = ebb_size_class(96);
    ebb_arena_t *ar[3] = {ebb__arena_get(EBB_MAX_ARENAS - 1), ebb__arena_get(EBB_MAX_ARENAS - 2),
                          ebb__arena_get(EBB_MAX_ARENAS - 3)};
    enum { PER = 40 };
    void *objs[3][PER];
    size_t nout0[3];
    uint64_t flushes0[3];
    for (int k = 0; k < 3; k++) {
        assert_non_null(ar[k]);
        void *head;
        assert_int_equal(ebb__arena_refill(ar[k], c, &head, PER), PER);
        for (int i = 0; i < PER; i++, head = *(void **)head)
            objs[k][i] = head;
        nout0[k] = unit_bin_nout(ar[k], c);
        flushes0[k] = ar[k]->bins[c].nflushes;
    }
    void *list = NULL;
    for (int i = PER - 1; i >= 0; i--)
        for (int k = 2; k >= 0; k--) {
            *(void **)objs[k][i] = list;
            list = objs[k][i];
        }
    ebb__arena_flush(c, list);
    for (int k = 0; k < 3; k++) {
        assert_int_equal(unit_bin_nout(ar[k], c), nout0[k] - PER);
        assert_int_equal(ar[k]->bins[c].nflushes, flushes0[k] + 1);
    }
}

static void test_objects_do_not_overlap(void **state) {
    (void)state;
    unit_init();
    enum { N = 5000 };
    static char *ptrs[N];
    static size_t sizes[N];
    srand(7);
    for (int i = 0; i < N; i++) {
        sizes[i] = 1 + (size_t)rand() % 5000;
        ptrs[i] = ebb_malloc(sizes[i]);
        assert_non_null(ptrs[i]);
        assert_int_equal((uintptr_t)ptrs[i] % 16, 0);
        memset(ptrs[i], i & 0xff, sizes[i]);
    }
    for (int i = 0; i < N; i++)
        for (size_t j = 0; j < sizes[i]; j += 97)
            assert_int_equal((unsigned char)ptrs[i][j], i & 0xff);
    for (int i = 0; i < N; i++)
        ebb_free(ptrs[i]);
}

static void test_summary_tracks_live_bytes(void **state) {
    (void)state;
    unit_init();
    ebb_thread_flush();
    ebb_summary_t s0, s1, s2;
    ebb_summary(&s0);
    enum { N = 1000 };
    void *p[N];
    for (int i = 0; i < N; i++)
        p[i] = ebb_malloc(1000); /* class 1024 */
    void *big = ebb_malloc(100000);
    void *huge = ebb_malloc(8 << 20);
    ebb_thread_flush();
    ebb_summary(&s1);
    size_t expect = N * 1024 + ebb_usable_size(big) + ebb_usable_size(huge);
    assert_true(s1.allocated >= s0.allocated + expect);
    assert_true(s1.allocated <= s0.allocated + expect + 64 * 1024);
    for (int i = 0; i < N; i++)
        ebb_free(p[i]);
    ebb_free(big);
    ebb_free(huge);
    ebb_thread_flush();
    ebb_summary(&s2);
    assert_true(s2.allocated <= s0.allocated + 64 * 1024);
    assert_true(s2.mapped >= s2.allocated);
}

/* Run fn in a child; return the signal that ended it (0: exited normally). */
static int child_signal(void (*fn)(void)) {
    pid_t pid = fork();
    if (pid == 0) {
        int devnull = open("/dev/null", 1);
        dup2(devnull, 2);
        fn();
        _exit(0);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

static void double_free(void) {
    ebb_summary_t s;
    void *p = ebb_malloc(64);
    ebb_free(p);
    ebb_thread_flush(); /* p back in its slab */
    ebb_free(p);
    ebb_thread_flush(); /* the second return finds it free */
    ebb_summary(&s);
}

static void interior_free(void) {
    char *p = ebb_malloc(64);
    ebb_free(p + 16);
    ebb_thread_flush();
}

static void large_interior_free(void) {
    char *p = ebb_malloc(100000);
    ebb_free(p + 4096);
}

static void test_release_checks_abort(void **state) {
    (void)state;
    unit_init();
    assert_int_equal(child_signal(double_free), SIGABRT);
    assert_int_equal(child_signal(interior_free), SIGABRT);
    assert_int_equal(child_signal(large_interior_free), SIGABRT);
}

static void test_owns(void **state) {
    (void)state;
    unit_init();
    int local;
    static int global;
    assert_false(ebb_owns(NULL));
    assert_false(ebb_owns(&local));
    assert_false(ebb_owns(&global));
    assert_false(ebb_owns((void *)0x10));
    void *p = ebb_malloc(10), *h = ebb_malloc(9 << 20);
    assert_true(ebb_owns(p));
    assert_true(ebb_owns(h));
    ebb_free(h);
    assert_false(ebb_owns(h));
    ebb_free(p);
}

/* An arena that needs a segment takes a wholly free one from another
 * group's heap before it maps a new one. */
static void test_spare_segment_moves_between_arenas(void **state) {
    (void)state;
    unit_init();
    /* The first arenas of two groups: each keeps its group's heap. */
    unsigned group = ebb__opts.arenas_per_heap;
    ebb_arena_t *x = ebb__arena_get(EBB_MAX_ARENAS - 2 * group);
    ebb_arena_t *y = ebb__arena_get(EBB_MAX_ARENAS - 3 * group);
    assert_ptr_equal(x->pages, x);
    assert_ptr_equal(y->pages, y);
    void *p = ebb__arena_alloc_large(x, 100000, 0, false);
    assert_non_null(p);
    ebb__arena_free_large(ebb_ptr_segment(p), p); /* x now has a spare */
    assert_true(x->heap.nspare >= 1);
    size_t mapped = atomic_load(&ebb__segments_mapped);
    assert_int_equal(y->heap.nsegments, 0);
    void *q = ebb__arena_alloc_large(y, 100000, 0, false);
    assert_non_null(q);
    assert_int_equal(atomic_load(&ebb__segments_mapped), mapped); /* nothing mapped */
    assert_ptr_equal(ebb_ptr_segment(q)->arena, y);
    ebb_lock(&y->heap.lock);
    assert_int_equal(y->heap.nsegments, 1);
    assert_true(ebb__heap_is_valid(&y->heap));
    ebb_unlock(&y->heap.lock);
    ebb__arena_free_large(ebb_ptr_segment(q), q);
    ebb_lock(&x->heap.lock);
    assert_true(ebb__heap_is_valid(&x->heap));
    ebb_unlock(&x->heap.lock);
}

/* The arenas of a group take their pages from the group's first arena:
 * a large object one frees is what another allocates next, and a slab's
 * objects go back to the bin of the arena that made the slab. */
static void test_group_shares_pages(void **state) {
    (void)state;
    unit_init();
    assert_true(ebb__opts.arenas_per_heap >= 3); /* the default, 8 */
    unsigned base = EBB_MAX_ARENAS - 4 * ebb__opts.arenas_per_heap;
    ebb_arena_t *lead = ebb__arena_get(base + 1)->pages;
    ebb_arena_t *a = ebb__arena_get(base + 1), *b = ebb__arena_get(base + 2);
    assert_ptr_equal(lead, ebb__arena_get(base));
    assert_ptr_equal(b->pages, lead);
    assert_int_equal(a->heap.nsegments, 0);

    void *p = ebb__arena_alloc_large(a, 200000, 0, false);
    assert_non_null(p);
    assert_ptr_equal(ebb_ptr_segment(p)->arena, lead);
    ebb__arena_free_large(ebb_ptr_segment(p), p);
    void *q = ebb__arena_alloc_large(b, 200000, 0, false);
    assert_ptr_equal(q, p); /* the same pages, still resident */
    ebb__arena_free_large(ebb_ptr_segment(q), q);

    unsigned c = ebb_size_class(96);
    void *head = NULL;
    assert_int_equal(ebb__arena_refill(b, c, &head, 10), 10);
    assert_ptr_equal(ebb_ptr_segment(head)->arena, lead);
    assert_int_equal(unit_bin_nout(b, c), 10);
    assert_int_equal(unit_bin_nout(a, c), 0);
    assert_int_equal(unit_bin_nout(lead, c), 0);
    ebb__arena_flush(c, head);
    assert_int_equal(unit_bin_nout(b, c), 0);
    assert_int_equal(a->heap.nsegments, 0);
    assert_int_equal(b->heap.nsegments, 0);
    ebb_lock(&lead->heap.lock);
    assert_true(ebb__heap_is_valid(&lead->heap));
    /* All that is left in use: b's current slab, in the shared heap. */
    assert_int_equal(lead->heap.active_pages, ebb__classes[c].slab_pages);
    ebb_unlock(&lead->heap.lock);
}

/* The purge of free pages inside slabs leaves the bin open: it takes the
 * slabs it madvises off the bin's lists and drops the lock meanwhile (and
 * the page heap's purge its lock, with large objects coming and going).
 * While one thread force-purges arena 0 over and over, another carves
 * objects of the same class out of its slabs one at a time and gives each
 * back 2048 objects later (at the bins: no cache between), so frees
 * trickle into slabs the purge has out; each object carries a mark. An
 * object carved from a page being purged would lose its mark. Marking the
 * slabs the purge has out as off every list (so a free put one back on
 * the list while its pages were purged) hung it in a broken list, 3 runs
 * of 3 (ctest's timeout ends it). */
enum { PURGE_RACE_OBJS = 2048 };
static atomic_bool purge_race_stop;
static atomic_ulong purge_race_bad, purge_race_rounds;

static void *purge_race_worker(void *arg) {
    ebb_arena_t *a = arg;
    unsigned c = ebb_size_class(5000);
    size_t words = ebb_class_size(c) / 8;
    /* A ring of objects, each given back one at a time some rounds after
     * it was carved: frees trickle into slabs the purge may have out. */
    static uint64_t *ring[PURGE_RACE_OBJS];
    unsigned at = 0;
    while (!atomic_load(&purge_race_stop)) {
        uint64_t *o = ring[at];
        if (o != NULL) {
            uint64_t want = (uint64_t)(uintptr_t)o ^ 0x5a5a5a5a;
            if (o[1] != want || o[words - 1] != want)
                atomic_fetch_add(&purge_race_bad, 1);
            *(void **)o = NULL;
            ebb__arena_flush(c, o);
        }
        void *p;
        if (ebb__arena_refill(a, c, &p, 1) == 1) {
            o = p;
            o[1] = o[words - 1] = (uint64_t)(uintptr_t)o ^ 0x5a5a5a5a;
        } else {
            o = NULL;
        }
        ring[at] = o;
        at = (at + 1) % PURGE_RACE_OBJS;
        /* And a large object now and then: spans come and go on the page
         * heap's lists while its purge walks them with the lock dropped. */
        if (at % 16 == 0) {
            size_t len = 40000 + (size_t)(at / 16 % 8) * 4096;
            uint64_t *big = ebb_malloc(len);
            if (big == NULL) {
                atomic_fetch_add(&purge_race_bad, 1);
            } else {
                big[0] = big[len / 8 - 1] = (uint64_t)(uintptr_t)big;
                if (big[0] != (uint64_t)(uintptr_t)big || big[len / 8 - 1] != big[0])
                    atomic_fetch_add(&purge_race_bad, 1);
                ebb_free(big);
            }
        }
        atomic_fetch_add(&purge_race_rounds, 1);
    }
    for (unsigned i = 0; i < PURGE_RACE_OBJS; i++)
        if (ring[i] != NULL) {
            *(void **)ring[i] = NULL;
            ebb__arena_flush(c, ring[i]);
        }
    return NULL;
}

static void test_slab_purge_leaves_the_bin_open(void **state) {
    (void)state;
    unit_init();
    ebb_arena_t *a = ebb__arena_get(0);
    unsigned c = ebb_size_class(5000);
    assert_true(ebb__classes[c].slab_pages >= 4);
    /* Slabs with one object in four kept: free pages among used ones. */
    enum { N = 4096 };
    static void *keep[N];
    void *head;
    assert_int_equal(ebb__arena_refill(a, c, &head, N), N);
    void *freed = NULL;
    unsigned nkeep = 0;
    for (unsigned i = 0; i < N; i++) {
        void *p = head;
        head = *(void **)p;
        if (i % 4 == 0) {
            keep[nkeep++] = p;
        } else {
            *(void **)p = freed;
            freed = p;
        }
    }
    ebb__arena_flush(c, freed);

    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, purge_race_worker, a), 0);
    size_t purged = 0;
    unsigned long rounds = 0;
    for (uint64_t end = ebb__os_now_ns() + 300 * 1000 * 1000ull; ebb__os_now_ns() < end; rounds++) {
        ebb_purge_policy_t pol = ebb__decay_policy(ebb__os_now_ns(), true);
        pol.keep_dirty_pages = 0;
        uint64_t next = UINT64_MAX;
        purged += ebb__arena_purge(a, &pol, &next);
    }
    atomic_store(&purge_race_stop, true);
    pthread_join(t, NULL);
    fprintf(stderr, "%lu purges (%zu MiB), %lu objects carved and given back, %lu lost\n", rounds, purged >> 20,
            (unsigned long)atomic_load(&purge_race_rounds), (unsigned long)atomic_load(&purge_race_bad));
    assert_true(purged > 0 && atomic_load(&purge_race_rounds) > 0);
    assert_int_equal(atomic_load(&purge_race_bad), 0);
    for (unsigned i = 0; i < nkeep; i++) {
        *(void **)keep[i] = i + 1 < nkeep ? keep[i + 1] : NULL;
    }
    ebb__arena_flush(c, keep[0]);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refill_and_cross_thread_flush),
        cmocka_unit_test(test_mixed_flush_locks_each_arena_once),
        cmocka_unit_test(test_objects_do_not_overlap),
        cmocka_unit_test(test_summary_tracks_live_bytes),
        cmocka_unit_test(test_release_checks_abort),
        cmocka_unit_test(test_owns),
        cmocka_unit_test(test_spare_segment_moves_between_arenas),
        cmocka_unit_test(test_group_shares_pages),
        cmocka_unit_test(test_slab_purge_leaves_the_bin_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
