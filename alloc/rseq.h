/*
 * The CPU caches' restartable sequences for one object (cpucache.c tells
 * the design): the layout they read, and the pop and push that malloc and
 * free inline, so that a hit is one function with no call in it. A call to
 * an out-of-line sequence (and the pushes and pops of the caller's frame
 * around it) made a 2 KiB malloc+free pair 7.0 ns instead of 5.4 here
 * (build/bench/ebb_instr_pairs, medians of 3).
 *
 * x86-64 with glibc's rseq area; elsewhere, and under ThreadSanitizer
 * (which cannot see the sequences' stores), EBB_HAVE_RSEQ is 0 and every
 * sequence answers "this CPU has no cache".
 */
#ifndef EBB_RSEQ_H
#define EBB_RSEQ_H

#include "internal.h"

#if defined(__SANITIZE_THREAD__)
#define EBB_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define EBB_TSAN 1
#endif
#endif

#if defined(__x86_64__) && defined(__linux__) && !defined(EBB_TSAN)
#define EBB_HAVE_RSEQ 1
#else
#define EBB_HAVE_RSEQ 0
#endif

/* Offsets the assembly uses (checked below and in cpucache.c). */
#define EBB_REGION_SLOTS 192 /* region: uint16_t count[64] at 0, void *slots[] here */
#define EBB_PCPU_BEGIN 64    /* pcpu: uint16_t begin[64] */
#define EBB_PCPU_ROOM 192    /* pcpu: uint16_t room[64] */

/* What the sequences need, in the order the assembly reads it; set once by
 * ebb__cpucache_init. */
typedef struct ebb_pcpu_s {
    char *base;        /* region 0 */
    uint64_t stride;   /* bytes from one region to the next */
    uint64_t nregions; /* CPU ids at or above this: no cache (the sequences say so) */
    int64_t rseq_off;  /* glibc's __rseq_offset: the rseq area from the thread pointer */
    size_t cap_bytes;  /* what all regions together may hold: full ones on the usable CPUs */
    char pad[EBB_PCPU_BEGIN - 40];
    uint16_t begin[64]; /* class c's first slot in every region */
    uint16_t room[64];  /* and how many slots it has */
} ebb_pcpu_t;
_Static_assert(__builtin_offsetof(ebb_pcpu_t, begin) == EBB_PCPU_BEGIN, "pcpu layout");
_Static_assert(__builtin_offsetof(ebb_pcpu_t, room) == EBB_PCPU_ROOM, "pcpu layout");

extern ebb_pcpu_t ebb__pcpu;

/* The batch sequences (cpucache.c, out of line: misses only). Pop: up to
 * n objects of class c from the running CPU's cache into buf[0..k): k, or
 * -1 (the CPU has no cache). Push: buf[0..k) in, k <= n as room allows: k,
 * or -1. */
long ebb__rseq_pop(size_t c, void **buf, size_t n);
long ebb__rseq_push(size_t c, void *const *buf, size_t n);

#if EBB_HAVE_RSEQ
/*
 * Each sequence finds the thread's rseq area (struct rseq: +4 cpu_id, +8
 * rseq_cs) at the thread pointer + rseq_off, stores its descriptor (struct
 * rseq_cs: version, flags, start_ip, post_commit_offset, abort_ip) in
 * rseq_cs, and runs from `start` to the committing 16-bit store of the
 * class's count; the abort handler after it is preceded by glibc's
 * signature, 0x53053053, and starts over. A region a drainer has stopped
 * (count[0] != 0) counts as none. Between start and commit the inputs and
 * r11 (the rseq area) stay as they were; everything else is recomputed.
 * %= makes the labels and the descriptor of every inlined copy its own.
 * The batch sequences (cpucache.c) are built from the same two macros.
 */
#define EBB_RSEQ_BEGIN(n)                                                      \
    ".pushsection .data.rel.ro.ebb_rseq, \"aw\"\n"                                  \
    ".balign 32\n"                                                                  \
    ".L" n "cs%=:\n"                                                                \
    "    .long 0, 0\n"                                                              \
    "    .quad .L" n "start%=, .L" n "end%= - .L" n "start%=, .L" n "abort%=\n"     \
    ".popsection\n"                                                                 \
    "    mov %%fs:0, %%r11\n"                                                       \
    "    add 24(%[pc]), %%r11\n" /* r11 = this thread's struct rseq */              \
    ".L" n "again%=:\n"                                                             \
    "    lea .L" n "cs%=(%%rip), %%rax\n"                                           \
    "    mov %%rax, 8(%%r11)\n" /* rseq_cs = &descriptor */                         \
    ".L" n "start%=:\n"                                                             \
    "    mov 4(%%r11), %%eax\n" /* cpu_id */                                        \
    "    cmp 16(%[pc]), %%rax\n"                                                    \
    "    jae .L" n "none%=\n"                                                       \
    "    imul 8(%[pc]), %%rax\n"                                                    \
    "    add (%[pc]), %%rax\n" /* rax = the CPU's region */                        \
    "    cmpb $0, (%%rax)\n"   /* stopped by a drainer: none */                    \
    "    jne .L" n "none%=\n"
#define EBB_RSEQ_END(n)                                                           \
    "    .long 0x53053053\n"                                                        \
    ".L" n "abort%=:\n"                                                             \
    "    jmp .L" n "again%=\n"                                                      \
    ".L" n "done%=:\n"

/* The running CPU's most recently cached object of class c; NULL: none
 * cached; (void *)1: the CPU has no cache. */
EBB_INLINE void *ebb_rseq_pop1(size_t c) {
    void *r;
    __asm__ volatile(EBB_RSEQ_BEGIN("ebb_pop1_")
                     "    movzwl (%%rax,%[c],2), %%ecx\n" /* count */
                     "    test %%ecx, %%ecx\n"
                     "    jz .Lebb_pop1_empty%=\n"
                     "    dec %%ecx\n"
                     "    movzwl 64(%[pc],%[c],2), %%edx\n" /* begin */
                     "    add %%ecx, %%edx\n"
                     "    mov 192(%%rax,%%rdx,8), %%rdx\n" /* the top object */
                     "    mov %%cx, (%%rax,%[c],2)\n"      /* commit */
                     ".Lebb_pop1_end%=:\n"
                     "    mov %%rdx, %%rax\n"
                     "    jmp .Lebb_pop1_done%=\n"
                     ".Lebb_pop1_empty%=:\n"
                     "    xor %%eax, %%eax\n"
                     "    jmp .Lebb_pop1_done%=\n"
                     ".Lebb_pop1_none%=:\n"
                     "    mov $1, %%eax\n"
                     "    jmp .Lebb_pop1_done%=\n" EBB_RSEQ_END("ebb_pop1_")
                     : "=&a"(r)
                     : [pc] "r"(&ebb__pcpu), [c] "r"(c)
                     : "rcx", "rdx", "r11", "memory", "cc");
    return r;
}

/* Cache p on the running CPU: 1 done; 0 no room; -1 the CPU has no cache. */
EBB_INLINE long ebb_rseq_push1(size_t c, void *p) {
    long r;
    __asm__ volatile(EBB_RSEQ_BEGIN("ebb_push1_")
                     "    movzwl (%%rax,%[c],2), %%ecx\n"   /* count */
                     "    cmp 192(%[pc],%[c],2), %%cx\n"    /* room */
                     "    jae .Lebb_push1_full%=\n"
                     "    movzwl 64(%[pc],%[c],2), %%edx\n" /* begin */
                     "    add %%ecx, %%edx\n"
                     "    mov %[p], 192(%%rax,%%rdx,8)\n"
                     "    inc %%ecx\n"
                     "    mov %%cx, (%%rax,%[c],2)\n" /* commit */
                     ".Lebb_push1_end%=:\n"
                     "    mov $1, %%eax\n"
                     "    jmp .Lebb_push1_done%=\n"
                     ".Lebb_push1_full%=:\n"
                     "    xor %%eax, %%eax\n"
                     "    jmp .Lebb_push1_done%=\n"
                     ".Lebb_push1_none%=:\n"
                     "    mov $-1, %%rax\n"
                     "    jmp .Lebb_push1_done%=\n" EBB_RSEQ_END("ebb_push1_")
                     : "=&a"(r)
                     : [pc] "r"(&ebb__pcpu), [c] "r"(c), [p] "r"(p)
                     : "rcx", "rdx", "r11", "memory", "cc");
    return r;
}
#else
EBB_INLINE void *ebb_rseq_pop1(size_t c) {
    (void)c;
    return (void *)1;
}
EBB_INLINE long ebb_rseq_push1(size_t c, void *p) {
    (void)c, (void)p;
    return -1;
}
#endif

#endif /* EBB_RSEQ_H */
