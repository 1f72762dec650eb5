/*
 * N malloc(SIZE)/free pairs after a warm-up, for bench/instr: callgrind
 * counts the instructions of the whole run at two N, and the difference
 * divided by the difference of N is the cost of one pair (the loop's own
 * few instructions included), free of start-up and exit costs.
 *
 *   ebb_instr_pairs N [SIZE]      (SIZE defaults to 32)
 */
#include <stdio.h>
#include <stdlib.h>

#define WARMUP 10000L

static void pairs(long n, size_t size)
{
    for (long i = 0; i < n; i++) {
        void *p = malloc(size);
        __asm__ volatile("" : : "g"(p) : "memory"); /* keep the pair */
        free(p);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s N [SIZE]\n", argv[0]);
        return 2;
    }
    long n = atol(argv[1]);
    size_t size = argc > 2 ? (size_t)atol(argv[2]) : 32;
    pairs(WARMUP, size);
    pairs(n, size);
    return 0;
}
