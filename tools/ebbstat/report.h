/* ebbstat's writers: the text report, JSON and Prometheus text exposition.
 * Every statistic comes from the one list, alloc/stats.def. */
#ifndef EBBSTAT_REPORT_H
#define EBBSTAT_REPORT_H

#include <stdio.h>

#include "page.h"
#include "proc.h"

typedef struct ebbstat_view_s {
    int pid;
    char comm[64];
    ebbstat_mem_t mem;         /* the process's resident memory, from /proc */
    const ebbstat_page_t *page;
    uint64_t now_ns;           /* CLOCK_MONOTONIC when read */
} ebbstat_view_t;

/* RSS split between the allocator and the rest (all bytes, saturating). */
typedef struct ebbstat_recon_s {
    uint64_t rss, held, live, tcache, frag, dirty, metadata, outside;
} ebbstat_recon_t;
ebbstat_recon_t ebbstat_reconcile(const ebbstat_view_t *v);

void ebbstat_write_text(FILE *f, const ebbstat_view_t *v);
void ebbstat_write_json(FILE *f, const ebbstat_view_t *v);
void ebbstat_write_prometheus(FILE *f, const ebbstat_view_t *v);
/* One line of the process list; header when v is NULL. */
void ebbstat_write_list_line(FILE *f, const ebbstat_view_t *v, const char *state);

#endif
