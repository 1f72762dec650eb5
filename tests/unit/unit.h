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

#endif
