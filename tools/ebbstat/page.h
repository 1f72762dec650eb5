/*
 * Reading a statistics page from outside the process. Nothing in the page
 * is trusted: ebbstat_page_parse checks every size, count and offset before
 * ebbstat uses one, and the file is read with pread (a file truncated under
 * us reads short; a mapping would fault).
 */
#ifndef EBBSTAT_PAGE_H
#define EBBSTAT_PAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "stats_shm.h"

/* Exit codes, one per kind of failure (documented in tools/README.md). */
enum {
    EBBSTAT_OK = 0,
    EBBSTAT_ERR = 1,        /* anything else (I/O error, out of memory) */
    EBBSTAT_USAGE = 2,
    EBBSTAT_NOPROC = 3,     /* no such process */
    EBBSTAT_NOPAGE = 4,     /* the process does not use ebbmalloc (no page) */
    EBBSTAT_PERM = 5,       /* permission denied */
    EBBSTAT_STALE = 6,      /* the page's process is gone */
    EBBSTAT_VERSION = 7,    /* layout version mismatch */
    EBBSTAT_CORRUPT = 8,    /* truncated, corrupt or hostile page */
    EBBSTAT_TIMEOUT = 9,    /* the process did not answer in time */
    EBBSTAT_ELSEWHERE = 10, /* a live page whose process runs in another pid namespace */
};

/* Largest page accepted: far above any real one (1024 arenas). */
#define EBBSTAT_PAGE_MAX ((size_t)16 << 20)
#define EBBSTAT_MAX_ARENAS 65536u
#define EBBSTAT_MAX_CLASSES 1024u

/* A parsed page: pointers into the (aligned) buffer it was parsed from. */
typedef struct ebbstat_page_s {
    const ebb_stats_header_t *h;
    const ebb_stats_counters_t *arenas; /* h->narenas of them */
    const ebb_stats_class_t *classes;   /* h->nclasses of them */
} ebbstat_page_t;

/* Check buf (len bytes, 8-byte aligned) as a page. Returns EBBSTAT_OK and
 * fills *out, or EBBSTAT_CORRUPT / EBBSTAT_VERSION with a message in err. */
int ebbstat_page_parse(const void *buf, size_t len, ebbstat_page_t *out, char *err,
                       size_t errcap);

/* A page read from a file: the copy and its parse. */
typedef struct ebbstat_snap_s {
    void *buf;
    size_t len;
    ebbstat_page_t page;
} ebbstat_snap_t;

/* Open, copy under the sequence lock and parse the page at path. Returns an
 * EBBSTAT_ code with a message in err. */
int ebbstat_snap_read(const char *path, ebbstat_snap_t *snap, char *err, size_t errcap);
void ebbstat_snap_free(ebbstat_snap_t *snap);

#endif
