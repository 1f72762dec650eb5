/*
 * The cost of the statistics page: a malloc/free workload timed with
 * stats_shm on and off (EBBMALLOC_CONF decides; run it twice). A thread
 * of its own calls the publisher every millisecond, as the background
 * thread does every stats_interval_ms, so the page is refreshed while the
 * workload runs (with stats_interval_ms:10, a hundred times a second).
 *   overhead THREADS MILLION_OPS  -> prints "ns/op N"
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

void ebb__stats_shm_tick(uint64_t now_ns) __attribute__((weak));

static _Atomic int stop;
static long ops;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *ticker(void *arg) {
    (void)arg;
    while (!stop) {
        if (ebb__stats_shm_tick)
            ebb__stats_shm_tick(now_ns());
        usleep(1000);
    }
    return NULL;
}

static void *work(void *arg) {
    uint64_t x = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
    void *slot[1024] = {0};
    for (long i = 0; i < ops; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        unsigned k = (unsigned)(x & 1023);
        free(slot[k]);
        slot[k] = malloc(16 + (x >> 20) % 2000);
    }
    for (int k = 0; k < 1024; k++)
        free(slot[k]);
    return NULL;
}

int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 2;
    ops = (argc > 2 ? atol(argv[2]) : 20) * 1000000L;
    pthread_t tick, t[64];
    pthread_create(&tick, NULL, ticker, NULL);
    uint64_t t0 = now_ns();
    for (int i = 0; i < n && i < 64; i++)
        pthread_create(&t[i], NULL, work, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < n && i < 64; i++)
        pthread_join(t[i], NULL);
    uint64_t dt = now_ns() - t0;
    stop = 1;
    pthread_join(tick, NULL);
    printf("ns/op %.2f\n", (double)dt / (double)(ops * n));
    return 0;
}
