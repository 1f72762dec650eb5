/* The CPU caches' restartable sequences, one instruction at a time.
 *
 * A sequence may be preempted anywhere; if another thread changes the CPU's
 * cache meanwhile, the kernel must send it back to its start before it
 * commits what it read. stress_cpucache only finds a sequence that commits
 * outside its descriptor's range when a preemption happens to fall on the
 * few instructions concerned, which it may not within its time. Here a
 * thread A is stopped (a hardware breakpoint, set through ptrace) before
 * every instruction of each sequence in turn -- one object out, one in, a
 * batch out, a batch in -- while a thread B on the same CPU takes an object
 * from that CPU's cache or puts one in. Then A goes on, and:
 *   - no object is lost or twice in the cache: what was cached, plus what
 *     A and B put in, minus what they took, is what is cached at the end;
 *   - stopped before its commit, A went through the sequence's abort
 *     handler (a second breakpoint sees it there).
 * The same stops again, now moving A to a second CPU while it is stopped
 * (where there is one with a cache): a stop before the commit must end
 * with A's op done on the second CPU's cache, the first CPU's untouched.
 * A sequence that read its CPU before its start would go on with the
 * first CPU's cache, on the second CPU.
 * The objects are tokens (the sequences only move pointers), in one class
 * that nothing else uses in the test's process.
 *
 * A forked child runs A and B; this process traces A and sets its CPU.
 * Skips where ptrace or the debug registers are refused, or where there
 * are no CPU caches (with the background thread off, main() sees to that,
 * they need the membarrier fence); the moves also where only one CPU has
 * a cache. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"
#include "rseq.h"

#if EBB_HAVE_RSEQ

#define N0 3          /* objects cached before each trial */
#define BATCH 2       /* objects a batch sequence moves */
#define MAXOBJ 256    /* a class's room is at most this */
#define TOKEN_A 100   /* the ids of what A and B put in */
#define TOKEN_B 200
#define NTOKENS 256

#define BASE2 10   /* the second CPU's objects: BASE2 + 1 .. BASE2 + N0 */

enum { A_POP1 = 1, A_PUSH1, A_POPN, A_PUSHN };
enum { B_RESET = 1, B_PUSH1, B_POP1, B_DUMP, B_EXIT };
enum { AT_STOP_MIGRATE = 100 }; /* at the stop, A moves to the second CPU */

typedef struct {
    int cpu[2]; /* CPUs with a cache: A and B run on cpu[0]; cpu[1] -1: none */
    _Atomic uint32_t a_cmd, a_done; /* sequence numbers: A's next op, A's last done */
    _Atomic int a_tid;
    int a_op;
    int a_cpu; /* where A was when its op returned */
    long a_ret;
    uintptr_t a_out[BATCH];
    uint64_t a_cs; /* the descriptor A's last sequence left in its rseq area */
    _Atomic uint32_t b_cmd, b_done;
    int b_op, b_cpu; /* B's op runs on CPU b_cpu */
    long b_ret;
    uintptr_t b_out[MAXOBJ];
} shared_t;

/* struct rseq_cs, as the kernel reads it. */
typedef struct {
    uint32_t version, flags;
    uint64_t start_ip, post_commit_offset, abort_ip;
} cs_t;

static size_t cls; /* the class the trials use */

static uintptr_t token(unsigned id) { return 0x10000 + ((uintptr_t)id << 4); }
static int token_id(uintptr_t t) {
    return t >= 0x10000 && ((t - 0x10000) & 15) == 0 && (t - 0x10000) >> 4 < NTOKENS ? (int)((t - 0x10000) >> 4) : -1;
}

/* Wait (yielding: A and B share one CPU) until *seq moves past seen. */
static void wait_past(_Atomic uint32_t *seq, uint32_t seen) {
    while (atomic_load_explicit(seq, memory_order_acquire) == seen)
        sched_yield();
}

/* ---- the child: A runs one sequence a command, B changes the cache ---- */

static void *thread_a(void *arg) {
    shared_t *sh = arg;
    int64_t off;
    volatile uint64_t *rs = ebb__os_rseq_area(&off);
    atomic_store(&sh->a_tid, (int)gettid());
    uint32_t seen = 0;
    for (;;) {
        wait_past(&sh->a_cmd, seen);
        seen = atomic_load(&sh->a_cmd);
        void *buf[BATCH] = {(void *)token(TOKEN_A), (void *)token(TOKEN_A + 1)};
        switch (sh->a_op) {
        case A_POP1:
            sh->a_out[0] = (uintptr_t)ebb_rseq_pop1(cls);
            sh->a_ret = sh->a_out[0] != 0;
            break;
        case A_PUSH1:
            sh->a_ret = ebb_rseq_push1(cls, buf[0]);
            break;
        case A_POPN:
            sh->a_ret = ebb__rseq_pop(cls, buf, BATCH);
            for (int i = 0; i < BATCH; i++)
                sh->a_out[i] = (uintptr_t)buf[i];
            break;
        case A_PUSHN:
            sh->a_ret = ebb__rseq_push(cls, buf, BATCH);
            break;
        }
        sh->a_cs = rs[1]; /* rseq_cs: 0 if the kernel has cleared it since */
        sh->a_cpu = sched_getcpu();
        atomic_store_explicit(&sh->a_done, seen, memory_order_release);
    }
    return NULL;
}

/* Run only on cpu, from now on. */
static bool pin(pid_t tid, int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return sched_setaffinity(tid, sizeof(set), &set) == 0;
}

static void run_b(shared_t *sh) {
    uint32_t seen = 0;
    int on = sh->cpu[0];
    for (;;) {
        wait_past(&sh->b_cmd, seen);
        seen = atomic_load(&sh->b_cmd);
        if (sh->b_cpu != on) {
            if (!pin(0, sh->b_cpu))
                _exit(4);
            on = sh->b_cpu;
        }
        while (sched_getcpu() != on)
            sched_yield();
        void *buf[MAXOBJ];
        long n;
        unsigned base = on == sh->cpu[0] ? 0 : BASE2;
        switch (sh->b_op) {
        case B_RESET:
            while (ebb__rseq_pop(cls, buf, MAXOBJ) > 0)
                ;
            for (unsigned i = 1; i <= N0; i++)
                ebb_rseq_push1(cls, (void *)token(base + i));
            break;
        case B_PUSH1:
            sh->b_ret = ebb_rseq_push1(cls, (void *)token(TOKEN_B));
            break;
        case B_POP1:
            sh->b_ret = (long)(uintptr_t)ebb_rseq_pop1(cls);
            break;
        case B_DUMP:
            n = ebb__rseq_pop(cls, buf, MAXOBJ);
            sh->b_ret = n;
            for (long i = 0; i < n; i++)
                sh->b_out[i] = (uintptr_t)buf[i];
            break;
        case B_EXIT:
            _exit(0);
        }
        atomic_store_explicit(&sh->b_done, seen, memory_order_release);
    }
}

static void child(shared_t *sh) {
    /* One CPU that has a cache, for B and for A (created below, it
     * inherits the affinity); none: a_tid -1, and the tests skip. A
     * second one, if any, for A to move to. */
    cpu_set_t allowed;
    int n = 0;
    sh->cpu[0] = sh->cpu[1] = -1;
    if (sched_getaffinity(0, sizeof(allowed), &allowed) == 0)
        for (int i = 0; i < CPU_SETSIZE && n < 2; i++)
            if (CPU_ISSET(i, &allowed) && (uint64_t)i < ebb__pcpu.nregions)
                sh->cpu[n++] = i;
    sh->b_cpu = sh->cpu[0];
    pthread_t t;
    if (n == 0 || !pin(0, sh->cpu[0]) || pthread_create(&t, NULL, thread_a, sh) != 0) {
        atomic_store(&sh->a_tid, -1);
        _exit(3);
    }
    run_b(sh);
}

/* ---- the tracer ------------------------------------------------------- */

typedef struct {
    shared_t *sh;
    pid_t pid, a; /* a: A's thread id; -1 no CPU with a cache, -2 ptrace refused */
} rig_t;

/* B does op on the second CPU (cpu 1) or the first (0). */
static void b_do_on(rig_t *r, int op, int cpu) {
    r->sh->b_op = op;
    r->sh->b_cpu = r->sh->cpu[cpu];
    uint32_t seq = atomic_load(&r->sh->b_cmd) + 1;
    atomic_store_explicit(&r->sh->b_cmd, seq, memory_order_release);
    wait_past(&r->sh->b_done, seq - 1);
}

static void b_do(rig_t *r, int op) { b_do_on(r, op, 0); }

static long set_dr(pid_t a, int i, uintptr_t v) {
    return ptrace(PTRACE_POKEUSER, a, offsetof(struct user, u_debugreg[i]), (void *)v);
}

/* Stop A where it waits for its next command and set its breakpoints:
 * dr0 (0: none) and dr1 (0: none), execution breakpoints. false: the
 * kernel refused the debug registers. */
static bool arm(rig_t *r, uintptr_t dr0, uintptr_t dr1) {
    int st;
    assert_int_equal(ptrace(PTRACE_INTERRUPT, r->a, 0, 0), 0);
    assert_int_equal(waitpid(r->a, &st, __WALL), r->a);
    assert_true(WIFSTOPPED(st));
    bool ok = set_dr(r->a, 7, 0) == 0 && (dr0 == 0 || set_dr(r->a, 0, dr0) == 0) &&
              (dr1 == 0 || set_dr(r->a, 1, dr1) == 0) &&
              set_dr(r->a, 7, (dr0 ? 1u : 0) | (dr1 ? 4u : 0)) == 0;
    assert_int_equal(ptrace(PTRACE_CONT, r->a, 0, 0), 0);
    return ok;
}

typedef struct {
    bool hit;       /* A stopped at the breakpoint */
    bool aborted;   /* and then went through the abort handler */
    bool committed; /* AT_STOP_MIGRATE: A's op had changed the first CPU's cache at the stop */
} trial_t;

/* Class cls's count in the first CPU's cache, read in A's memory. */
static unsigned first_cpu_count(rig_t *r) {
    uintptr_t at = (uintptr_t)ebb__pcpu.base + (uintptr_t)r->sh->cpu[0] * ebb__pcpu.stride + 2 * cls;
    errno = 0;
    long w = ptrace(PTRACE_PEEKDATA, r->a, (void *)at, 0);
    assert_int_equal(errno, 0);
    return (uint16_t)w; /* little-endian: the word's low bytes */
}

/* Run A's op once, arming first (dr0 0: no breakpoint). At a stop on dr0,
 * B does at_stop, or A moves to the second CPU (AT_STOP_MIGRATE), before
 * A goes on. */
static trial_t run_a(rig_t *r, int op, uintptr_t dr0, uintptr_t abort_ip, int at_stop) {
    trial_t t = {false, false, false};
    assert_true(arm(r, dr0, dr0 ? abort_ip : 0));
    r->sh->a_op = op;
    uint32_t seq = atomic_load(&r->sh->a_cmd) + 1;
    atomic_store_explicit(&r->sh->a_cmd, seq, memory_order_release);
    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (atomic_load_explicit(&r->sh->a_done, memory_order_acquire) != seq) {
        int st;
        pid_t w = waitpid(r->a, &st, __WALL | WNOHANG);
        assert_true(w == 0 || w == r->a);
        if (w == 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec - t0.tv_sec > 10)
                fail_msg("A did not finish its sequence in 10 s (op %d, breakpoint %#lx)", op, (unsigned long)dr0);
            sched_yield();
            continue;
        }
        assert_true(WIFSTOPPED(st));
        if (WSTOPSIG(st) == SIGTRAP && (st >> 16) == 0) {
            struct user_regs_struct regs;
            assert_int_equal(ptrace(PTRACE_GETREGS, r->a, 0, &regs), 0);
            if (regs.rip == dr0 && !t.hit) {
                t.hit = true;
                assert_int_equal(set_dr(r->a, 7, 4), 0); /* keep only the abort's */
                /* The kernel resumes A with the resume flag set, which would
                 * hide the abort handler's first instruction from dr1: the
                 * breakpoint at dr0 is off, so the flag may go. */
                regs.eflags &= ~(1ull << 16);
                assert_int_equal(ptrace(PTRACE_SETREGS, r->a, 0, &regs), 0);
                if (at_stop == AT_STOP_MIGRATE) {
                    t.committed = first_cpu_count(r) != N0;
                    assert_true(pin(r->a, r->sh->cpu[1]));
                } else {
                    b_do(r, at_stop);
                }
            } else if (regs.rip == abort_ip && t.hit) {
                t.aborted = true;
                assert_int_equal(set_dr(r->a, 7, 0), 0);
            } /* else an abort before the stop (a preemption): both stay */
        }
        assert_int_equal(ptrace(PTRACE_CONT, r->a, 0, 0), 0); /* the trap is not delivered */
    }
    return t;
}

/* Take out what the cache of CPU cpu (0: the first, 1: the second) holds,
 * and count it off count[]: what it should hold. The messages name A's
 * op, what happened at the stop (a B op, AT_STOP_MIGRATE or 0: no stop)
 * and where A stopped. */
static void dump_against(rig_t *r, int cpu, int *count, int op, int at_stop, uintptr_t dr0) {
    b_do_on(r, B_DUMP, cpu);
    for (long i = 0; i < r->sh->b_ret; i++) {
        int id = token_id(r->sh->b_out[i]);
        if (id <= 0)
            fail_msg("op %d, at the stop %d, stopped at %#lx: CPU %d's cache holds %#lx, no object", op, at_stop,
                     (unsigned long)dr0, r->sh->cpu[cpu], (unsigned long)r->sh->b_out[i]);
        count[id]--;
    }
    for (int id = 0; id < NTOKENS; id++)
        if (count[id] != 0)
            fail_msg("op %d, at the stop %d, stopped at %#lx: object %d is %s CPU %d's cache", op, at_stop,
                     (unsigned long)dr0, id, count[id] > 0 ? "not in" : "once too often in", r->sh->cpu[cpu]);
}

/* What was cached, plus what A and B put in, minus what they took, is what
 * is cached now (B takes it all out to look). */
static void check_conserved(rig_t *r, int op, int b_op, uintptr_t dr0) {
    shared_t *sh = r->sh;
    int count[NTOKENS] = {0};
    for (unsigned i = 1; i <= N0; i++)
        count[i]++;
    if (op == A_PUSH1 && sh->a_ret == 1)
        count[TOKEN_A]++;
    if (op == A_PUSHN)
        for (long i = 0; i < sh->a_ret; i++)
            count[TOKEN_A + i]++;
    long took = op == A_POP1 ? sh->a_ret : op == A_POPN ? sh->a_ret : 0;
    for (long i = 0; i < took; i++) {
        int id = token_id(sh->a_out[i]);
        assert_true(id > 0);
        count[id]--;
    }
    if (b_op == B_PUSH1 && sh->b_ret == 1)
        count[TOKEN_B]++;
    if (b_op == B_POP1 && sh->b_ret != 0) {
        int id = token_id((uintptr_t)sh->b_ret);
        assert_true(id > 0);
        count[id]--;
    }
    dump_against(r, 0, count, op, b_op, dr0);
}

/* The descriptor of op's sequence: what A's rseq area points to after it
 * (the kernel clears it when it preempts A after the sequence: retried). */
static cs_t descriptor(rig_t *r, int op) {
    for (int i = 0; i < 1000; i++) {
        b_do(r, B_RESET);
        run_a(r, op, 0, 0, 0);
        check_conserved(r, op, 0, 0);
        if (r->sh->a_cs != 0)
            return *(const cs_t *)(uintptr_t)r->sh->a_cs; /* same mapping as the child's */
    }
    fail_msg("op %d: no rseq_cs after 1000 runs", op);
    return (cs_t){0};
}

/* Stop A at every byte from 16 before op's sequence to 32 after its commit
 * (a byte that starts no instruction on the path taken never stops it),
 * once with B putting an object in, once with B taking one out. */
static void every_instruction(rig_t *r, int op) {
    cs_t cs = descriptor(r, op);
    uintptr_t start = cs.start_ip, end = start + cs.post_commit_offset;
    assert_true(cs.post_commit_offset > 0 && cs.post_commit_offset < 512);
    unsigned hits_inside = 0, hits_after = 0;
    for (uintptr_t x = start - 16; x < end + 32; x++)
        for (int b_op = B_PUSH1; b_op <= B_POP1; b_op++) {
            b_do(r, B_RESET);
            trial_t t = run_a(r, op, x, cs.abort_ip, b_op);
            check_conserved(r, op, t.hit ? b_op : 0, x); /* B acts at the stop only */
            if (t.hit && x >= start && x < end) {
                hits_inside++;
                if (!t.aborted)
                    fail_msg("op %d stopped at %#lx, inside its sequence [%#lx, %#lx), was not aborted", op,
                             (unsigned long)x, (unsigned long)start, (unsigned long)end);
            }
            hits_after += t.hit && x >= end;
        }
    /* Every instruction from start to commit, twice: a sequence has 6 or more. */
    if (hits_inside < 2 * 6 || hits_after == 0)
        fail_msg("op %d: only %u stops inside the sequence, %u after it", op, hits_inside, hits_after);
}

/* A's op was done on CPU land (0 or 1): that cache holds what it held
 * plus what A put in, minus what A took; the other holds what it held. */
static void check_landed(rig_t *r, int op, int land, uintptr_t dr0) {
    shared_t *sh = r->sh;
    int count[2][NTOKENS] = {{0}};
    for (unsigned i = 1; i <= N0; i++)
        count[0][i]++, count[1][BASE2 + i]++;
    long n = sh->a_ret > 0 ? sh->a_ret : 0;
    if (op == A_PUSH1 || op == A_PUSHN)
        for (long i = 0; i < n; i++)
            count[land][TOKEN_A + i]++;
    else
        for (long i = 0; i < n; i++) {
            int id = token_id(sh->a_out[i]);
            assert_true(id > 0);
            count[land][id]--;
        }
    dump_against(r, 0, count[0], op, AT_STOP_MIGRATE, dr0);
    dump_against(r, 1, count[1], op, AT_STOP_MIGRATE, dr0);
}

/* Stop A at every byte from 16 before op's sequence to 32 after its commit,
 * and move it to the second CPU there: an op not done by then must be done
 * on the second CPU's cache. */
static void every_instruction_moved(rig_t *r, int op) {
    cs_t cs = descriptor(r, op);
    uintptr_t start = cs.start_ip, end = start + cs.post_commit_offset;
    unsigned hits_inside = 0, moved_before = 0;
    for (uintptr_t x = start - 16; x < end + 32; x++) {
        b_do_on(r, B_RESET, 1);
        b_do(r, B_RESET);
        assert_true(pin(r->a, r->sh->cpu[0]));
        trial_t t = run_a(r, op, x, cs.abort_ip, AT_STOP_MIGRATE);
        int land = t.hit && !t.committed;
        if (r->sh->a_cpu != r->sh->cpu[t.hit])
            fail_msg("op %d, stop at %#lx %s: A ended on CPU %d, not %d", op, (unsigned long)x,
                     t.hit ? "hit" : "not hit", r->sh->a_cpu, r->sh->cpu[t.hit]);
        check_landed(r, op, land, x);
        if (t.hit && x >= start && x < end) {
            hits_inside++;
            if (!t.aborted)
                fail_msg("op %d moved at %#lx, inside its sequence [%#lx, %#lx), was not aborted", op,
                         (unsigned long)x, (unsigned long)start, (unsigned long)end);
        }
        moved_before += land && x < start;
    }
    if (hits_inside < 6 || moved_before == 0)
        fail_msg("op %d: only %u stops inside the sequence, %u before it", op, hits_inside, moved_before);
}

static rig_t rig;

static void skip_msg(const char *why) {
    printf("SKIP: %s\n", why);
    skip();
}

static int rig_setup(void **state) {
    (void)state;
    unit_init();
    if (ebb__cpucache_first > EBB_NSMALL)
        return 0; /* the tests skip */
    cls = ebb__cpucache_first;
    rig.sh = mmap(NULL, sizeof(shared_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    assert_true(rig.sh != MAP_FAILED);
    rig.pid = fork();
    assert_true(rig.pid >= 0);
    if (rig.pid == 0)
        child(rig.sh);
    while ((rig.a = atomic_load(&rig.sh->a_tid)) == 0)
        sched_yield();
    if (rig.a > 0 && ptrace(PTRACE_SEIZE, rig.a, 0, 0) != 0)
        rig.a = -2;
    return 0;
}

static int rig_teardown(void **state) {
    (void)state;
    if (rig.pid > 0) {
        if (rig.a > 0) {
            int st;
            ptrace(PTRACE_INTERRUPT, rig.a, 0, 0);
            waitpid(rig.a, &st, __WALL);
            ptrace(PTRACE_DETACH, rig.a, 0, 0);
        }
        kill(rig.pid, SIGKILL);
        waitpid(rig.pid, NULL, 0);
    }
    return 0;
}

static void require_rig(void) {
    if (ebb__cpucache_first > EBB_NSMALL)
        skip_msg("no CPU caches here (they need rseq and the membarrier fence without a background thread)");
    if (rig.a == -1)
        skip_msg("no CPU this test may run on has a CPU cache");
    if (rig.a == -2)
        skip_msg("ptrace refused here (PTRACE_SEIZE failed)");
    if (!arm(&rig, 0, 0) || !arm(&rig, (uintptr_t)thread_a, 0))
        skip_msg("the kernel refused the debug registers");
    assert_true(arm(&rig, 0, 0));
    assert_true(pin(rig.a, rig.sh->cpu[0])); /* where a test that failed may have left it */
    assert_true(ebb__pcpu.room[cls] >= N0 + BATCH + 1);
}

/* One test a sequence: state points to its op. */
static void test_every_instruction(void **state) {
    require_rig();
    every_instruction(&rig, *(const int *)*state);
}

static void test_every_instruction_moved(void **state) {
    require_rig();
    if (rig.sh->cpu[1] < 0)
        skip_msg("one CPU with a cache here: none to move a thread to");
    every_instruction_moved(&rig, *(const int *)*state);
}

int main(void) {
    /* Nothing but the test may drain the CPU caches: their objects are
     * tokens, not memory. */
    setenv("EBBMALLOC_CONF", "background_thread:false,decay_ms:60000,stats_shm:false", 1);
    static const int ops[] = {A_POP1, A_PUSH1, A_POPN, A_PUSHN};
    const struct CMUnitTest tests[] = {
        {"pop_one", test_every_instruction, NULL, NULL, (void *)&ops[0]},
        {"push_one", test_every_instruction, NULL, NULL, (void *)&ops[1]},
        {"pop_batch", test_every_instruction, NULL, NULL, (void *)&ops[2]},
        {"push_batch", test_every_instruction, NULL, NULL, (void *)&ops[3]},
        {"pop_one_moved", test_every_instruction_moved, NULL, NULL, (void *)&ops[0]},
        {"push_one_moved", test_every_instruction_moved, NULL, NULL, (void *)&ops[1]},
        {"pop_batch_moved", test_every_instruction_moved, NULL, NULL, (void *)&ops[2]},
        {"push_batch_moved", test_every_instruction_moved, NULL, NULL, (void *)&ops[3]},
    };
    return cmocka_run_group_tests(tests, rig_setup, rig_teardown);
}

#else /* no rseq sequences to test */

static void test_no_sequences(void **state) {
    (void)state;
    printf("SKIP: no restartable sequences in this build (x86-64 only, not under ThreadSanitizer)\n");
    skip();
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_no_sequences)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
#endif
