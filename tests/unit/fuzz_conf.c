/*
 * libFuzzer target of the EBBMALLOC_CONF parser (alloc/conf.c), which runs
 * inside malloc's initialisation of every process that loads ebbmalloc:
 * whatever the text, it must not crash, and afterwards
 *   - every number is within its option's range and every text option is
 *     terminated within its buffer (conf.def's table, expanded here);
 *   - the count of bad entries is at most the number of entries;
 *   - only options that the text names are marked as set;
 *   - the options written back as text (ebb__conf_describe, what the
 *     statistics page shows) parse without a warning to the same values.
 * The warnings go to stderr: run with -close_fd_mask=2 to keep them out of
 * the fuzzer's output.
 *   build/tests/unit/fuzz_conf -max_total_time=60 -close_fd_mask=2 CORPUS_DIR
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "internal.h" /* EBB_MAX_ARENAS, a bound in conf.def */

#define MAX_TEXT 4096

/* conf.c's ebb_option() initialises the allocator first; this target links
 * conf.c and os.c alone, with the allocator "initialised" already. */
_Atomic bool ebb__initialized = true;
bool ebb__init_slow(void) { return true; }

static void check(int ok) {
    if (!ok)
        abort();
}

/* Every option within its range, text options terminated. */
static void check_ranges(const ebb_opts_t *o) {
#define EBB_OPT_CHECK_BOOL(name, min, max) check(o->name <= 1);
#define EBB_OPT_CHECK_UINT(name, min, max)                                     \
    check(o->name >= (uint64_t)(min) && o->name <= (uint64_t)(max));
#define EBB_OPT_CHECK_CHOICE(name, min, max) check(o->name <= (uint64_t)(max));
#define EBB_OPT_CHECK_STR(name, min, max)                                      \
    check(memchr(o->name, 0, EBB_OPT_STR_LEN) != NULL && o->name[0] != 0);
#define EBB_OPT(type, name, def, min, max, doc) EBB_OPT_CHECK_##type(name, min, max)
#include "conf.def"
#undef EBB_OPT
}

/* Does the text name option `name` as the key of one of its entries? */
static int names(const char *text, const char *name) {
    size_t n = strlen(name);
    for (const char *s = text; *s;) {
        while (*s == ' ' || *s == '\t')
            s++;
        if (strncmp(s, name, n) == 0) {
            const char *e = s + n;
            while (*e == ' ' || *e == '\t')
                e++;
            if (*e == ':')
                return 1;
        }
        const char *comma = strchr(s, ',');
        if (comma == NULL)
            break;
        s = comma + 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static char text[MAX_TEXT + 1];
    if (size > MAX_TEXT)
        size = MAX_TEXT;
    memcpy(text, data, size);
    text[size] = 0;
    if (strstr(text, "help") != NULL)
        return 0; /* prints the whole table: valid, and slow */

    ebb_opts_t o;
    ebb__conf_defaults(&o);
    int bad = ebb__conf_parse(&o, text);
    size_t entries = 1;
    for (const char *s = text; *s; s++)
        entries += *s == ',';
    check(bad >= 0 && (size_t)bad <= entries);
    check_ranges(&o);
    unsigned bit = 0;
#define EBB_OPT(type, name, def, min, max, doc)                                \
    if (o.explicit_mask >> bit & 1)                                            \
        check(names(text, #name));                                             \
    bit++;
#include "conf.def"
#undef EBB_OPT

    /* Written back and parsed again: no warning, the same values. */
    static char described[MAX_TEXT + 2048];
    size_t n = ebb__conf_describe(&o, described, sizeof(described));
    check(n < sizeof(described));
    ebb_opts_t again;
    ebb__conf_defaults(&again);
    check(ebb__conf_parse(&again, described) == 0);
    again.explicit_mask = o.explicit_mask;
    check(memcmp(&again, &o, sizeof(o)) == 0);
    return 0;
}
