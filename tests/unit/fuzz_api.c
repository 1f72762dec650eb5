/*
 * libFuzzer target of the allocator's API: each input is a program of
 * malloc, calloc, realloc, free, aligned_alloc, posix_memalign, thread
 * flushes and purges over 64 slots, with sizes drawn around every boundary
 * of the allocator's geometry (size classes, the slab/large limit at
 * 32 KiB, the large/huge limit at 2 MiB) and alignments up to 4 MiB. The
 * allocator's sources are compiled into the target with ASan, UBSan and
 * coverage, so the fuzzer steers by the allocator's own branches. After
 * every call it checks what the C standard and glibc promise:
 *   - no NULL below 64 MiB, 16-byte alignment, the asked alignment;
 *   - usable size >= the request, ebb_owns() of every live object;
 *   - all of the usable size may be written (each object is filled to
 *     it, so a usable size reaching into another object is caught);
 *   - calloc's memory reads zero; realloc keeps the old contents;
 *   - a live object's bytes stay as written (each object holds a pattern
 *     of its own, checked before it is freed or reallocated and at the
 *     end of the input), so one object overwriting another is caught;
 *   - posix_memalign with a bad alignment returns EINVAL and writes nothing;
 *   - realloc(p, 0) frees p and returns NULL, as glibc's does.
 * The program may also make the kernel refuse every purge from then on,
 * as it does on locked pages (mlock, mlockall), or accept purges and
 * ignore them, as older qemu-user does (the allocator's probe runs again):
 * the allocator's madvise calls land in this file's madvise. What it
 * failed to purge must not pass for zero.
 * Everything is freed at the end of an input.
 *   build/tests/unit/fuzz_api -max_total_time=60 CORPUS_DIR
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ebbmalloc.h"

bool ebb__os_purge_probe(void); /* alloc/os.h */

/* How this process's kernel answers purges (MADV_DONTNEED, MADV_FREE). */
enum { MADV_REAL, MADV_REFUSE, MADV_IGNORE };
static int madv_mode;

int madvise(void *addr, size_t len, int advice) {
    if ((advice == MADV_DONTNEED || advice == MADV_FREE) && madv_mode != MADV_REAL) {
        if (madv_mode == MADV_IGNORE)
            return 0;
        errno = EINVAL;
        return -1;
    }
    return (int)syscall(SYS_madvise, addr, len, advice);
}

static void set_madv_mode(int mode) {
    madv_mode = mode;
    ebb__os_purge_probe();
}

#define NSLOTS 64
#define MAX_LIVE ((size_t)256 << 20)
#define FULL_CHECK ((size_t)64 << 10) /* larger objects: head, tail, a page in 64 */

typedef struct {
    unsigned char *p;
    size_t size;   /* asked for */
    size_t usable; /* ebb_usable_size(): all of it may be written */
    unsigned char tag;
} slot_t;

static slot_t slots[NSLOTS];
static size_t live;

static void check(int ok) {
    if (!ok)
        abort();
}

/* The bytes of the input, 0 once it is used up. */
typedef struct {
    const uint8_t *d;
    size_t n, i;
} input_t;

static unsigned next(input_t *in) { return in->i < in->n ? in->d[in->i++] : 0; }

/* A size near one of the allocator's boundaries, or anything below 64 KiB. */
static size_t next_size(input_t *in) {
    static const size_t edges[] = {0,      1,      16,     128,   1024,   4096,
                                   16384,  32768,  65536,  1 << 20, 2 << 20, 3 << 20,
                                   5 << 20, 48,    4608,   24576};
    unsigned a = next(in), b = next(in);
    if (a & 0x80)
        return ((size_t)(a & 0x7f) << 9) | ((size_t)b << 1); /* 0 .. 64 KiB */
    size_t e = edges[a % (sizeof(edges) / sizeof(edges[0]))];
    int delta = (int)(b & 0x3f) - 32; /* -32 .. 31 bytes around it */
    return delta < 0 && (size_t)-delta > e ? 0 : e + (size_t)(ptrdiff_t)delta;
}

static unsigned char pattern(const slot_t *s, size_t i) {
    return (unsigned char)(s->tag + i * 131 + (i >> 12));
}

/* The offsets of an object of n bytes that are written and checked: all
 * of a small object; of a larger one its first and last 4 KiB and one page
 * in 64 (writing megabytes per call would slow the fuzzer down). */
#define FOR_CHECKED(n, i, body)                                                \
    for (size_t i = 0; i < (n); i++) {                                         \
        if ((n) > FULL_CHECK && i >= 4096 && i + 4096 < (n) && (i >> 12) % 64 != 0) { \
            i = ((i >> 12) + 1) * 4096 - 1;                                    \
            continue;                                                          \
        }                                                                      \
        body;                                                                  \
    }

static void fill(slot_t *s) { FOR_CHECKED(s->usable, i, s->p[i] = pattern(s, i)); }

/* The pattern fill() wrote, in the first upto bytes (realloc keeps those). */
static void verify(const slot_t *s, size_t upto) {
    FOR_CHECKED(s->usable, i, if (i < upto) check(s->p[i] == pattern(s, i)));
}

static void verify_zero(const unsigned char *p, size_t n) { FOR_CHECKED(n, i, check(p[i] == 0)); }

/* A new object in slot s: the promises every allocation keeps. */
static void took(slot_t *s, void *p, size_t size, size_t align, unsigned char tag) {
    check(p != NULL);
    check((uintptr_t)p % 16 == 0 && (uintptr_t)p % align == 0);
    check(ebb_owns(p));
    check(ebb_usable_size(p) >= size);
    s->p = p;
    s->size = size;
    s->usable = ebb_usable_size(p);
    s->tag = tag;
    live += size;
}

static void release(slot_t *s) {
    if (s->p == NULL)
        return;
    verify(s, s->usable);
    ebb_free(s->p);
    live -= s->size;
    s->p = NULL;
}

static void run(input_t *in) {
    while (in->i < in->n) {
        unsigned op = next(in) % 10;
        slot_t *s = &slots[next(in) % NSLOTS];
        unsigned char tag = (unsigned char)next(in);
        size_t size = next_size(in);
        if (op <= 6 && op != 3 && live + size > MAX_LIVE)
            continue;
        switch (op) {
        case 0: /* malloc */
        case 1:
            release(s);
            took(s, ebb_malloc(size), size, 1, tag);
            fill(s);
            break;
        case 2: { /* calloc, as count x size */
            release(s);
            size_t count = 1 + next(in) % 4, each = size / count;
            unsigned char *p = ebb_calloc(count, each);
            took(s, p, count * each, 1, tag);
            verify_zero(p, s->size);
            fill(s);
            break;
        }
        case 3: /* free */
            release(s);
            break;
        case 4: { /* realloc, also from NULL */
            size_t keep = s->p ? (s->size < size ? s->size : size) : 0;
            if (s->p)
                verify(s, s->usable);
            unsigned char *old = s->p;
            unsigned char *p = ebb_realloc(old, size);
            live -= old ? s->size : 0;
            s->p = NULL;
            if (old != NULL && size == 0) { /* glibc's rule: freed, NULL */
                check(p == NULL);
                break;
            }
            size_t old_usable = s->usable;
            took(s, p, size, 1, s->tag);
            s->usable = old_usable; /* the offsets fill() wrote */
            verify(s, keep);
            s->usable = ebb_usable_size(p);
            s->tag = tag; /* the new pattern over it all */
            fill(s);
            break;
        }
        case 5: { /* aligned_alloc, 2 .. 4 MiB alignments */
            release(s);
            size_t align = (size_t)1 << (1 + next(in) % 22);
            took(s, ebb_aligned_alloc(align, size), size, align, tag);
            fill(s);
            break;
        }
        case 6: { /* posix_memalign, and with an alignment it must refuse */
            release(s);
            unsigned a = next(in);
            size_t align = a & 1 ? (size_t)8 << (a % 20) : 24 + (a & ~1u) * 8;
            void *p = (void *)&slots; /* must stay as it is on EINVAL */
            int r = ebb_posix_memalign(&p, align, size);
            if (align & (align - 1)) {
                check(r == EINVAL && p == (void *)&slots);
            } else {
                check(r == 0);
                took(s, p, size, align, tag);
                fill(s);
            }
            break;
        }
        case 7:
            if (tag == 0)
                ebb_purge();
            else if (tag < 16)
                ebb_thread_flush();
            else if (tag < 20)
                set_madv_mode(tag - 16 < 3 ? (int)(tag - 16) : MADV_REAL);
            break;
        default: /* check a live object */
            if (s->p)
                verify(s, s->usable);
            break;
        }
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    /* One thread, no statistics page in /dev/shm: the fuzzer's process only. */
    setenv("EBBMALLOC_CONF", "background_thread:false,stats_shm:false", 1);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    input_t in = {data, size, 0};
    set_madv_mode(MADV_REAL);
    run(&in);
    for (unsigned i = 0; i < NSLOTS; i++)
        release(&slots[i]);
    check(live == 0);
    return 0;
}
