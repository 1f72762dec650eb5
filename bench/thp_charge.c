/*
 * ebb_thp_charge: what a cgroup is charged after an allocator has given
 * memory back, next to the RSS the process shows. With transparent huge
 * pages they part: MADV_DONTNEED on part of a huge page unmaps those pages
 * (the RSS falls) but the huge page stays whole, and charged, until the
 * kernel splits it. bench/thp/run runs this in a memory cgroup under each
 * allocator; alloc/README.md ("Transparent huge pages") has the story.
 *
 *   ebb_thp_charge CHARGE_FILE [BURST_MIB [KEEP_ONE_IN [IDLE_MS [SECOND_BLOCK_KIB]]]]
 *
 * 1. burst: BURST_MIB (200) in blocks of 16 B..256 KiB (log-uniform), every
 *    byte written; all but one block in KEEP_ONE_IN (50) freed;
 * 2. idle IDLE_MS (3000) with no allocation: the allocator's own decay;
 * 3. a second burst of BURST_MIB, all kept, in the same blocks or, with
 *    SECOND_BLOCK_KIB (0), in blocks of that size: does it still fit in the
 *    limit?
 * After each phase, one line on stdout:
 *   PHASE rss_kib N charge_kib N
 * CHARGE_FILE is the cgroup's memory.current (v2) or memory.usage_in_bytes
 * (v1). The allocator comes by LD_PRELOAD; nothing here links one.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

static const char *charge_file;

static long long read_number(const char *path) {
    FILE *f = fopen(path, "r");
    long long v = -1;
    if (f) {
        if (fscanf(f, "%lld", &v) != 1)
            v = -1;
        fclose(f);
    }
    return v;
}

static long long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long long size = 0, resident = -1;
    if (f) {
        if (fscanf(f, "%lld %lld", &size, &resident) != 2)
            resident = -1;
        fclose(f);
    }
    return resident < 0 ? -1 : resident * 4;
}

static void report(const char *phase) {
    long long charge = read_number(charge_file);
    printf("%s rss_kib %lld charge_kib %lld\n", phase, rss_kib(), charge < 0 ? -1 : charge / 1024);
    fflush(stdout);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double uniform(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0;
}

/* Allocate and write burst bytes in blocks of block bytes (0: 16 B..256
 * KiB, log-uniform); keep one block in keep (all if keep is 1), free the
 * rest. Returns the number of blocks kept in out. */
static size_t burst(size_t bytes, size_t block, unsigned keep, void **out, size_t cap) {
    size_t total = 0, n = 0, kept = 0;
    while (total < bytes && n < cap) {
        size_t size = block ? block : (size_t)(16.0 * pow(16384.0, uniform()));
        char *p = malloc(size);
        if (p == NULL) {
            fprintf(stderr, "ebb_thp_charge: malloc(%zu) failed\n", size);
            exit(1);
        }
        memset(p, (int)(n | 1), size);
        total += size;
        out[n++] = p;
    }
    for (size_t i = 0; i < n; i++) {
        if (i % keep == 0)
            out[kept++] = out[i];
        else
            free(out[i]);
    }
    return kept;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: ebb_thp_charge CHARGE_FILE [BURST_MIB [KEEP_ONE_IN [IDLE_MS "
                        "[SECOND_BLOCK_KIB]]]]\n");
        return 2;
    }
    charge_file = argv[1];
    size_t burst_mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 200;
    unsigned keep = argc > 3 ? (unsigned)strtoul(argv[3], NULL, 10) : 50;
    unsigned idle_ms = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 10) : 3000;
    size_t second_block = argc > 5 ? (size_t)strtoul(argv[5], NULL, 10) << 10 : 0;
    if (burst_mib == 0 || keep == 0) {
        fprintf(stderr, "ebb_thp_charge: BURST_MIB and KEEP_ONE_IN must be positive\n");
        return 2;
    }
    /* The block list is mapped apart from the allocator under test. */
    size_t cap = (burst_mib << 20) / 16 + 1;
    void **blocks = mmap(NULL, cap * sizeof(void *), PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (blocks == MAP_FAILED)
        return 1;
    report("start");
    burst(burst_mib << 20, 0, keep, blocks, cap);
    report("freed");
    struct timespec ts = {idle_ms / 1000, (long)(idle_ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
    report("idle");
    /* The second burst keeps everything: the blocks of the first stay too. */
    burst(burst_mib << 20, second_block, 1, blocks, cap);
    report("second");
    return 0;
}
