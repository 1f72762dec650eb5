/*
 * How long one cache line takes to go from one CPU to another and back,
 * for bench/rss/run: two threads, pinned to the first two CPUs this process
 * may use, hand a counter back and forth; the median of 9 batches of 20,000
 * round trips, in nanoseconds.
 *
 * Why: on these shared machines the two CPUs are sometimes near each other
 * (a round trip of ~90 ns) and sometimes on distant cores (~450 ns), and
 * the placement changes from minute to minute. A workload whose threads
 * share allocator lines across CPUs runs up to twice as long in the second
 * case, so a work time means little without the round trip next to it.
 *
 *   ebb_line_rtt      prints  line_rtt_ns=N   (or line_rtt_ns=- with one CPU)
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define TRIPS 20000L
#define BATCHES 9

static _Atomic long ball __attribute__((aligned(64)));
static _Atomic int partner_pinned; /* 1: on its CPU; -1: could not pin */
static int cpus[2];

static int pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* No figure: one CPU, or threads that cannot be pinned (spinning on one CPU
 * would measure the scheduler, for minutes). */
static int no_figure(void)
{
    puts("line_rtt_ns=-");
    fflush(stdout);
    _Exit(0); /* the partner may be spinning still */
}

/* The other side: waits for each odd value and answers with the next. */
static void *partner(void *arg)
{
    (void)arg;
    atomic_store(&partner_pinned, pin(cpus[1]) == 0 ? 1 : -1);
    for (long i = 0; i < TRIPS * BATCHES; i++) {
        while (atomic_load_explicit(&ball, memory_order_acquire) != 2 * i + 1)
            ;
        atomic_store_explicit(&ball, 2 * i + 2, memory_order_release);
    }
    return NULL;
}

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(void)
{
    cpu_set_t set;
    int n = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        for (int c = 0; c < CPU_SETSIZE && n < 2; c++)
            if (CPU_ISSET(c, &set))
                cpus[n++] = c;
    pthread_t t;
    if (n < 2 || pin(cpus[0]) != 0 || pthread_create(&t, NULL, partner, NULL) != 0)
        return no_figure();
    while (atomic_load(&partner_pinned) == 0)
        sched_yield();
    if (atomic_load(&partner_pinned) < 0)
        return no_figure();
    double batch[BATCHES];
    for (long b = 0; b < BATCHES; b++) {
        double t0 = now_ns();
        for (long i = b * TRIPS; i < (b + 1) * TRIPS; i++) {
            atomic_store_explicit(&ball, 2 * i + 1, memory_order_release);
            while (atomic_load_explicit(&ball, memory_order_acquire) != 2 * i + 2)
                ;
        }
        batch[b] = (now_ns() - t0) / TRIPS;
        if (batch[b] > 50000) /* 1 s a batch: the partner is not running */
            return no_figure();
    }
    pthread_join(t, NULL);
    qsort(batch, BATCHES, sizeof batch[0], cmp_double);
    printf("line_rtt_ns=%.0f\n", batch[BATCHES / 2]);
    return 0;
}
