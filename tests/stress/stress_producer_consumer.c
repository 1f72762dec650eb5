/*
 * Producer/consumer: blocks allocated on one thread are checked, sometimes
 * reallocated, and freed on another, the pattern of the JVM's and most
 * servers' hand-offs, which sends every free to a remote thread's memory.
 *
 * Run by ctest with the default options and again with EBBMALLOC_CONF set
 * (narenas:1, narenas:4, tcache:false, arenas_per_heap:1); EBB_TEST_OPTIONS="name=value,..."
 * then lists what ebb_option() must report, so a configuration that was
 * not applied fails instead of testing the defaults again.
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

/* Check every name=value of EBB_TEST_OPTIONS against ebb_option(). */
static void check_expected_options(void)
{
    const char *expect = getenv("EBB_TEST_OPTIONS");
    if (expect == NULL)
        return;
    char list[256];
    snprintf(list, sizeof list, "%s", expect);
    char *save = NULL;
    for (char *item = strtok_r(list, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *value = strchr(item, '=');
        assert_non_null(value);
        *value++ = '\0';
        char buf[64];
        const char *got = ebb_option(item, buf, sizeof buf);
        assert_non_null(got);
        assert_string_equal(got, value);
    }
}

static void cross_thread_free(void **state)
{
    check_expected_options();

    seed = tu_seed(20240611);
    queue.producers_left = PRODUCERS;
    tu_run_indexed(PRODUCERS + CONSUMERS, run_role);

    assert_int_equal(atomic_load(&tu_failures), 0);
    assert_int_equal(atomic_load(&consumed), (size_t)PRODUCERS * PER_PRODUCER);
    assert_int_equal(queue.count, 0);
    /* No more arenas than configured (0, the default, is one per CPU). */
    char buf[32];
    unsigned narenas = (unsigned)strtoul(ebb_option("narenas", buf, sizeof buf), NULL, 10);
    if (narenas != 0)
        assert_true(tu_summary().narenas <= narenas);
}

int main(void)
{
    tu_require_ebbmalloc();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cross_thread_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
