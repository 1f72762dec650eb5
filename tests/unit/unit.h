/* Shared setup for the unit tests: cmocka plus the allocator internals. */
#ifndef EBB_TEST_UNIT_H
#define EBB_TEST_UNIT_H
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "conf.h"
#include "internal.h"

/* Initialise the allocator once (the internal build does not replace malloc). */
static inline void unit_init(void) { assert_true(ebb_init()); }

/* Objects of class c out of arena a's slabs (in use or in thread caches). */
static inline size_t unit_bin_nout(ebb_arena_t *a, unsigned c) {
    ebb_lock(&a->bins[c].lock);
    size_t n = a->bins[c].nout;
    ebb_unlock(&a->bins[c].lock);
    return n;
}

#endif
