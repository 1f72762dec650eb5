/*
 * Helpers shared by the api and stress tests: a deterministic random number
 * generator, byte patterns that tie a block's contents to a tag, alignment
 * checks, the ebbmalloc-in-use guard and a forked-child runner.
 *
 * Header-only (static functions) so each test stays one self-contained
 * executable; no helper here allocates except tu_require_ebbmalloc().
 */
#ifndef EBB_TEST_UTIL_H
#define EBB_TEST_UTIL_H

#include <ebbmalloc.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#define TU_KiB ((size_t)1 << 10)
#define TU_MiB ((size_t)1 << 20)

#define TU_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Every block malloc returns on x86-64 Linux is aligned to this (glibc's
 * MALLOC_ALIGNMENT, and what max_align_t needs). */
#define TU_MIN_ALIGN ((size_t)16)

/* Fail the whole program unless the malloc names resolve to ebbmalloc, so
 * that no test can pass against the C library's allocator by mistake.
 * Call it first in main(). */
static inline void tu_require_ebbmalloc(void)
{
    void *p = malloc(16);
    if (p == NULL || !ebb_owns(p)) {
        fprintf(stderr, "FAIL: malloc() is not ebbmalloc's (ebb_owns(malloc(16)) is false); "
                        "the test is not linked against libebbmalloc.so\n");
        exit(1);
    }
    free(p);
}

static inline bool tu_is_aligned(const void *p, size_t alignment)
{
    return ((uintptr_t)p & (alignment - 1)) == 0;
}

/* xorshift64*: small, fast and the same sequence on every machine. */
typedef struct tu_rng_s {
    uint64_t state;
} tu_rng_t;

static inline tu_rng_t tu_rng(uint64_t seed)
{
    tu_rng_t r = {seed * 0x9E3779B97F4A7C15ull + 1};
    return r;
}

static inline uint64_t tu_rng_next(tu_rng_t *r)
{
    uint64_t x = r->state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Uniform in [lo, hi]. */
static inline size_t tu_rng_range(tu_rng_t *r, size_t lo, size_t hi)
{
    return lo + (size_t)(tu_rng_next(r) % (hi - lo + 1));
}

/* Log-uniform in [lo, hi]: as many draws between 16 and 32 bytes as between
 * 512 KiB and 1 MiB, like a real program's size mix. */
static inline size_t tu_rng_size(tu_rng_t *r, size_t lo, size_t hi)
{
    unsigned lo_bits = 63u - (unsigned)__builtin_clzll(lo);
    unsigned hi_bits = 63u - (unsigned)__builtin_clzll(hi);
    unsigned bits = (unsigned)tu_rng_range(r, lo_bits, hi_bits);
    size_t base = (size_t)1 << bits;
    size_t size = base + (size_t)(tu_rng_next(r) % base);
    return size < lo ? lo : size > hi ? hi : size;
}

/* The pattern byte at offset i of a block tagged tag. Depends on both, so a
 * block swapped with another or shifted by a few bytes is caught. */
static inline uint8_t tu_pattern_byte(uint64_t tag, size_t i)
{
    uint64_t x = (tag + 1) * 0x100000001B3ull ^ (uint64_t)i * 0x9E3779B1u;
    return (uint8_t)(x ^ (x >> 29) ^ (x >> 43));
}

static inline void tu_fill(void *p, size_t n, uint64_t tag)
{
    uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        b[i] = tu_pattern_byte(tag, i);
}

/* Offset of the first byte that differs from the pattern, or n. */
static inline size_t tu_check(const void *p, size_t n, uint64_t tag)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != tu_pattern_byte(tag, i))
            return i;
    return n;
}

static inline bool tu_pattern_ok(const void *p, size_t n, uint64_t tag)
{
    return tu_check(p, n, tag) == n;
}

/* Check that blocks[i] holds the pattern of tag i over sizes[i] bytes, then
 * free it, for every i < count. Returns the first index that did not hold
 * its pattern (after freeing them all), or count. */
static inline size_t tu_check_and_free(void **blocks, const size_t *sizes, size_t count)
{
    size_t bad = count;
    for (size_t i = 0; i < count; i++) {
        if (bad == count && !tu_pattern_ok(blocks[i], sizes[i], i))
            bad = i;
        free(blocks[i]);
    }
    return bad;
}

/* Sparse patterns for big blocks: every byte of the first TU_DENSE bytes,
 * then one byte in TU_STRIDE (several per page) and the last byte. Keeps
 * blocks of megabytes cheap while still catching overlap and lost pages. */
#define TU_DENSE ((size_t)4096)
#define TU_STRIDE ((size_t)509)

static inline size_t tu_sparse_next(size_t i)
{
    return i < TU_DENSE ? i + 1 : i + TU_STRIDE;
}

static inline void tu_fill_sparse(void *p, size_t n, uint64_t tag)
{
    uint8_t *b = p;
    for (size_t i = 0; i < n; i = tu_sparse_next(i))
        b[i] = tu_pattern_byte(tag, i);
    if (n > 0)
        b[n - 1] = tu_pattern_byte(tag, n - 1);
}

/* The sparse positions below keep hold the pattern: what survives of a
 * sparsely filled block cut to its first keep bytes. */
static inline bool tu_sparse_prefix_ok(const void *p, size_t keep, uint64_t tag)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < keep; i = tu_sparse_next(i))
        if (b[i] != tu_pattern_byte(tag, i))
            return false;
    return true;
}

/* A block filled by tu_fill_sparse(p, n, tag) is intact. */
static inline bool tu_sparse_ok(const void *p, size_t n, uint64_t tag)
{
    const uint8_t *b = p;
    return tu_sparse_prefix_ok(p, n, tag) && (n == 0 || b[n - 1] == tu_pattern_byte(tag, n - 1));
}

static inline bool tu_all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return false;
    return true;
}

/* Fields of /proc/self/statm, in bytes: the process's virtual size and its
 * resident set. 0 when the file cannot be read. */
enum { TU_STATM_SIZE = 0, TU_STATM_RESIDENT = 1 };

static inline size_t tu_statm(int field)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long v[2] = {0, 0};
    if (f == NULL)
        return 0;
    if (fscanf(f, "%lu %lu", &v[0], &v[1]) != 2)
        v[0] = v[1] = 0;
    fclose(f);
    return v[field] * (size_t)sysconf(_SC_PAGESIZE);
}

/* Allocate and touch n / block blocks of block bytes, free them all, and
 * flush this thread's cache: afterwards the memory is the allocator's to
 * keep or give back. Returns false if an allocation failed. */
static inline bool tu_churn_and_free(size_t n, size_t block)
{
    size_t count = n / block;
    void **v = malloc(count * sizeof *v);
    if (v == NULL)
        return false;
    bool ok = true;
    for (size_t i = 0; i < count; i++) {
        v[i] = malloc(block);
        ok = ok && v[i] != NULL;
        for (size_t k = 0; v[i] != NULL && k < block; k += 256)
            ((volatile char *)v[i])[k] = 1;
    }
    for (size_t i = 0; i < count; i++)
        free(v[i]);
    free(v);
    ebb_thread_flush();
    return ok;
}

static inline ebb_summary_t tu_summary(void)
{
    ebb_summary_t s;
    ebb_summary(&s);
    return s;
}

/* Run fn(arg) in a forked child that is killed by SIGALRM after
 * timeout_seconds, so a deadlock fails instead of hanging. Returns the
 * child's exit status (0 on success), or 128 + signal number when the child
 * died of a signal, or -1 when fork or waitpid failed. */
static inline int tu_run_in_child(int (*fn)(void *), void *arg, unsigned timeout_seconds)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        alarm(timeout_seconds);
        _exit(fn(arg));
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        return -1;
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

#endif /* EBB_TEST_UTIL_H */
