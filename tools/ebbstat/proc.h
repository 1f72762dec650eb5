/* What ebbstat reads about a process from /proc (no ptrace, no signal). */
#ifndef EBBSTAT_PROC_H
#define EBBSTAT_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ebbstat_mem_s {
    bool ok;               /* smaps_rollup (or status) could be read */
    uint64_t rss, pss, anon, file, shmem, swap; /* bytes */
    uint64_t anon_huge;    /* of anon, in transparent huge pages (smaps_rollup only) */
    uint64_t locked;       /* locked in memory (VmLck: mlock, mlockall): cannot be purged */
} ebbstat_mem_t;

/* Start time of pid (field 22 of /proc/PID/stat); false when no such process. */
bool ebbstat_proc_start_time(int pid, uint64_t *out);
/* The command name (/proc/PID/comm), printable, or "?". */
void ebbstat_proc_comm(int pid, char *buf, size_t cap);
/* Resident memory from /proc/PID/smaps_rollup, else /proc/PID/status. */
ebbstat_mem_t ebbstat_proc_mem(int pid);
/* True when /proc/PID exists at all. */
bool ebbstat_proc_exists(int pid);
/* The inode of our own /proc/self/ns/pid (our pid namespace); 0 unknown. */
uint64_t ebbstat_own_pid_ns(void);
/* The host's transparent huge page setting, the bracketed word of
 * /sys/kernel/mm/transparent_hugepage/enabled ("always", "madvise",
 * "never"), or NULL when the kernel has none. */
const char *ebbstat_host_thp(void);
/* CLOCK_MONOTONIC now, ns (the page's clock). */
uint64_t ebbstat_now_ns(void);

#endif
