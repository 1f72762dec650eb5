/* Options: one table in conf.def, parsed from EBBMALLOC_CONF at init. */
#ifndef EBB_CONF_H
#define EBB_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Each type's field: numbers in a uint64_t, text (STR) in a fixed buffer,
 * so parsing never allocates. */
#define EBB_OPT_STR_LEN 256
#define EBB_OPT_FIELD_BOOL(name) uint64_t name;
#define EBB_OPT_FIELD_UINT(name) uint64_t name;
#define EBB_OPT_FIELD_STR(name) char name[EBB_OPT_STR_LEN];
#define EBB_OPT_FIELD_CHOICE(name) uint64_t name; /* index of the word */

typedef struct ebb_opts_s {
#define EBB_OPT(type, name, def, min, max, doc) EBB_OPT_FIELD_##type(name)
#include "conf.def"
#undef EBB_OPT
    uint64_t explicit_mask; /* bit i: option i was given in EBBMALLOC_CONF */
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
/* True when option name was set (validly) by the parsed text. */
bool ebb__conf_explicit(const ebb_opts_t *o, const char *name);

#endif
