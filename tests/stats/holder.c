/*
 * A process that holds memory for ebbstat to read (tests/stats).
 *   holder LIVE_MIB DIRTY_MIB [tick|lock]
 * allocates LIVE_MIB of touched 1 MiB blocks (and 64 Ki small objects) and
 * keeps them; allocates and frees DIRTY_MIB more, which stays dirty until
 * purged; prints "ready PID" and waits for its standard input to close.
 * With "tick", a thread of its own calls the publisher every 20 ms (for a
 * build without the background thread). With "lock", it first locks all
 * its memory, now and future (mlockall), so that no purge can succeed; it
 * exits 77 where that is not permitted. Linked with the malloc-replacing
 * library, or run under LD_PRELOAD.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)

void ebb__stats_shm_tick(uint64_t now_ns) __attribute__((weak));

static void *ticker(void *arg) {
    (void)arg;
    for (;;) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (ebb__stats_shm_tick)
            ebb__stats_shm_tick((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
        usleep(20000);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: holder LIVE_MIB DIRTY_MIB [tick|lock]\n");
        return 2;
    }
    if (argc > 3 && strcmp(argv[3], "lock") == 0 && mlockall(MCL_CURRENT | MCL_FUTURE) != 0) {
        perror("holder: mlockall");
        return 77;
    }
    size_t live = strtoul(argv[1], NULL, 10), dirty = strtoul(argv[2], NULL, 10);
    char **keep = calloc(live + 1, sizeof(char *));
    for (size_t i = 0; i < live; i++) {
        keep[i] = malloc(MIB - 4096);
        memset(keep[i], 1, MIB - 4096);
    }
    void **small = calloc(65536, sizeof(void *));
    for (size_t i = 0; i < 65536; i++)
        small[i] = malloc(64);
    char **tmp = calloc(dirty + 1, sizeof(char *));
    for (size_t i = 0; i < dirty; i++) {
        tmp[i] = malloc(MIB - 4096);
        memset(tmp[i], 2, MIB - 4096);
    }
    for (size_t i = 0; i < dirty; i++)
        free(tmp[i]);
    if (argc > 3 && strcmp(argv[3], "tick") == 0) {
        pthread_t t;
        pthread_create(&t, NULL, ticker, NULL);
    }
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    char buf[64];
    while (fread(buf, 1, sizeof(buf), stdin) > 0) {
    }
    return 0;
}
