/*
 * Producer/consumer: blocks allocated on one thread are checked, sometimes
 * reallocated, and freed on another, the pattern of the JVM's and most
 * servers' hand-offs, which sends every free to a remote thread's memory.
 *
 * Run by ctest three times: with the default options and with
 * EBBMALLOC_CONF=narenas:1 and narenas:4; EBB_TEST_NARENAS then tells the
 * test which narenas ebbmalloc must report.
 */
#include "stress_util.h"

#include <setjmp.h>
#include <stdarg.h>

#include <cmocka.h>

enum {
    PRODUCERS = 4,
    CONSUMERS = 4,
    PER_PRODUCER = 200000,
    QUEUE_CAP = 1024,
    BATCH = 32,
};

/* A bounded queue of blocks under one mutex: simple beats fast here, the
 * allocator is what is under test. */
typedef struct queue_s {
    pthread_mutex_t lock;
    pthread_cond_t not_empty, not_full;
    tu_block_t *items[QUEUE_CAP];
    size_t head, count;
    int producers_left;
} queue_t;

static queue_t queue = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER,
                        PTHREAD_COND_INITIALIZER, {0}, 0, 0, 0};
static uint64_t seed;
static atomic_size_t consumed;

static void push_batch(tu_block_t **batch, size_t n)
{
    pthread_mutex_lock(&queue.lock);
    for (size_t i = 0; i < n; i++) {
        while (queue.count == QUEUE_CAP)
            pthread_cond_wait(&queue.not_full, &queue.lock);
        queue.items[(queue.head + queue.count++) % QUEUE_CAP] = batch[i];
        pthread_cond_signal(&queue.not_empty);
    }
    pthread_mutex_unlock(&queue.lock);
}

/* Up to max blocks; 0 when the queue is empty and every producer is done. */
static size_t pop_batch(tu_block_t **batch, size_t max)
{
    pthread_mutex_lock(&queue.lock);
    while (queue.count == 0 && queue.producers_left > 0)
        pthread_cond_wait(&queue.not_empty, &queue.lock);
    size_t n = 0;
    for (; n < max && queue.count > 0; n++) {
        batch[n] = queue.items[queue.head];
        queue.head = (queue.head + 1) % QUEUE_CAP;
        queue.count--;
    }
    pthread_cond_broadcast(&queue.not_full);
    pthread_mutex_unlock(&queue.lock);
    return n;
}

static void *producer(void *arg)
{
    size_t id = *(size_t *)arg;
    tu_rng_t rng = tu_rng(seed + id);
    tu_block_t *batch[BATCH];
    size_t n = 0;
    for (size_t i = 0; i < PER_PRODUCER; i++) {
        /* Mostly small, one in 64 up to 1 MiB. */
        size_t max = i % 64 == 0 ? TU_MiB : 2 * TU_KiB;
        tu_block_t *b = tu_block_new(tu_rng_size(&rng, TU_BLOCK_MIN, max), id << 32 | i);
        if (b == NULL)
            break;
        batch[n++] = b;
        if (n == BATCH) {
            push_batch(batch, n);
            n = 0;
        }
    }
    push_batch(batch, n);
    pthread_mutex_lock(&queue.lock);
    queue.producers_left--;
    pthread_cond_broadcast(&queue.not_empty);
    pthread_mutex_unlock(&queue.lock);
    return NULL;
}

static void *consumer(void *arg)
{
    size_t id = *(size_t *)arg;
    tu_rng_t rng = tu_rng(seed ^ (0xC0FFEEu + id));
    tu_block_t *batch[BATCH];
    size_t n;
    while ((n = pop_batch(batch, BATCH)) > 0) {
        for (size_t i = 0; i < n; i++) {
            tu_block_t *b = batch[i];
            if (!tu_block_ok(b))
                TU_FAIL("consumer %zu: block tag %llu damaged", id, (unsigned long long)b->tag);
            /* One in four is resized here first: a realloc of a block this
             * thread did not allocate. */
            if (tu_rng_next(&rng) % 4 == 0)
                b = tu_block_realloc(b, tu_rng_size(&rng, TU_BLOCK_MIN, 8 * TU_KiB), b->tag + 1);
            tu_block_free(b);
        }
        atomic_fetch_add(&consumed, n);
    }
    return NULL;
}

static void *run_role(void *arg)
{
    size_t id = *(size_t *)arg;
    return id < PRODUCERS ? producer(arg) : consumer(arg);
}

/* narenas as ebbmalloc reports it, or 0 when it has no such option. */
static long reported_narenas(void)
{
    char buf[32];
    const char *v = ebb_option("narenas", buf, sizeof buf);
    return v ? strtol(v, NULL, 10) : 0;
}

static void cross_thread_free(void **state)
{
    const char *expect = getenv("EBB_TEST_NARENAS");
    if (expect != NULL)
        assert_int_equal(reported_narenas(), strtol(expect, NULL, 10));

    seed = tu_seed(20240611);
    queue.producers_left = PRODUCERS;
    size_t ids[PRODUCERS + CONSUMERS];
    for (size_t i = 0; i < PRODUCERS + CONSUMERS; i++)
        ids[i] = i;
    tu_run_threads(PRODUCERS + CONSUMERS, run_role, ids, sizeof ids[0]);

    assert_int_equal(atomic_load(&tu_failures), 0);
    assert_int_equal(atomic_load(&consumed), (size_t)PRODUCERS * PER_PRODUCER);
    assert_int_equal(queue.count, 0);
    if (expect != NULL)
        assert_true(tu_summary().narenas <= (unsigned)strtol(expect, NULL, 10));
}

int main(void)
{
    tu_require_ebbmalloc();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cross_thread_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
