/* Options: one table in conf.def, parsed from EBBMALLOC_CONF at init. */
#ifndef EBB_CONF_H
#define EBB_CONF_H

#include <stddef.h>
#include <stdint.h>

typedef struct ebb_opts_s {
#define EBB_OPT(type, name, def, min, max, doc) uint64_t name;
#include "conf.def"
#undef EBB_OPT
} ebb_opts_t;

extern ebb_opts_t ebb__opts;

/* Parse a configuration string over the current values (defaults first).
 * Bad entries print one warning line each and keep the default. Returns the
 * number of bad entries. Does not allocate. "help" prints the table. */
int ebb__conf_parse(ebb_opts_t *o, const char *text);
void ebb__conf_defaults(ebb_opts_t *o);
void ebb__conf_help(void);
/* Write "name:value,name:value..." of all options into buf. */
size_t ebb__conf_describe(const ebb_opts_t *o, char *buf, size_t cap);

#endif
