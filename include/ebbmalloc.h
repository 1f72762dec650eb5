/*
 * ebbmalloc public API.
 *
 * ebbmalloc replaces the C library's malloc family when it is preloaded
 * (LD_PRELOAD=libebbmalloc.so) or linked (libebbmalloc.so / libebbmalloc.a).
 * The standard names (malloc, free, ...) are then ebbmalloc's; the ebb_
 * functions below are always available under their own names, also in the
 * internal build that does not replace malloc (used by the unit tests).
 *
 * Configuration: the environment variable EBBMALLOC_CONF="key:value,...",
 * read once at initialisation. EBBMALLOC_CONF=help prints every option.
 */
#ifndef EBBMALLOC_H
#define EBBMALLOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EBB_VERSION_STRING "0.1.0"

#if defined(__GNUC__)
#define EBB_EXPORT __attribute__((visibility("default")))
#else
#define EBB_EXPORT
#endif

/* The malloc family under ebbmalloc's own names; same semantics as the
 * standard functions (errno ENOMEM on failure, EINVAL for bad alignments). */
EBB_EXPORT void *ebb_malloc(size_t size);
EBB_EXPORT void *ebb_calloc(size_t count, size_t size);
EBB_EXPORT void *ebb_realloc(void *ptr, size_t size);
EBB_EXPORT void ebb_free(void *ptr);
/* Any power-of-two alignment; size need not be a multiple of it. */
EBB_EXPORT void *ebb_aligned_alloc(size_t alignment, size_t size);
EBB_EXPORT int ebb_posix_memalign(void **out, size_t alignment, size_t size);
EBB_EXPORT size_t ebb_usable_size(const void *ptr);

/* True when ptr lies in memory that ebbmalloc manages (any pointer value
 * may be passed; it is never dereferenced unless it is ebbmalloc's). */
EBB_EXPORT bool ebb_owns(const void *ptr);

/* Return every free page ebbmalloc still holds to the OS now, after
 * flushing the calling thread's cache and (through the background thread,
 * waiting for it up to 1 s) every CPU's cache. malloc_trim calls it.
 * Returns the number of bytes released. */
EBB_EXPORT size_t ebb_purge(void);

/* Flush the calling thread's cache back to its arena. */
EBB_EXPORT void ebb_thread_flush(void);

/* A summary of what the allocator holds; a consistent-enough snapshot
 * (counters are read without stopping other threads). */
typedef struct ebb_summary_s {
    size_t mapped;       /* bytes mapped from the OS (segments, huge, metadata) */
    size_t active;       /* bytes in pages holding live objects or thread caches */
    size_t allocated;    /* bytes handed to the application and not yet freed */
    size_t dirty;        /* free pages still resident, awaiting purge */
    size_t metadata;     /* bytes of allocator metadata */
    size_t purged;       /* bytes returned to the OS so far (cumulative) */
    unsigned narenas;    /* arenas in use */
    unsigned nthreads;   /* threads with a live thread cache */
} ebb_summary_t;
EBB_EXPORT void ebb_summary(ebb_summary_t *out);

/* Value of an option as text ("narenas" -> "2"); NULL for an unknown name. */
EBB_EXPORT const char *ebb_option(const char *name, char *buf, size_t buflen);

EBB_EXPORT const char *ebb_version(void);

#ifdef __cplusplus
}
#endif
#endif /* EBBMALLOC_H */
