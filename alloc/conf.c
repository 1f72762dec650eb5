/*
 * Options (the table is conf.def) and the allocation-free message formatter.
 * Parsing runs inside malloc's initialisation: no allocation, no stdio, no
 * locale (no strtoul, no isdigit).
 */
#include <stdarg.h>

#include "conf.h"
#include "internal.h"

ebb_opts_t ebb__opts;

enum { T_BOOL, T_UINT, T_STR, T_CHOICE };
#define EBB_T_BOOL T_BOOL
#define EBB_T_UINT T_UINT
#define EBB_T_STR T_STR
#define EBB_T_CHOICE T_CHOICE
/* A default is a number (def) or, for STR, a string (sdef). A CHOICE keeps
 * its words, "first|second|...", in sdef; its default is the first word. */
#define EBB_NUMDEF_BOOL(d) d
#define EBB_NUMDEF_UINT(d) d
#define EBB_NUMDEF_STR(d) 0
#define EBB_NUMDEF_CHOICE(d) 0
#define EBB_STRDEF_BOOL(d) NULL
#define EBB_STRDEF_UINT(d) NULL
#define EBB_STRDEF_STR(d) d
#define EBB_STRDEF_CHOICE(d) d

typedef struct opt_desc_s {
    const char *name;
    int type;
    uint64_t def, min, max;
    const char *sdef;
    const char *doc;
    size_t offset;
} opt_desc_t;

static const opt_desc_t opt_table[] = {
#define EBB_OPT(type, name, def, min, max, doc)                                \
    {#name, EBB_T_##type, EBB_NUMDEF_##type(def), min, max, EBB_STRDEF_##type(def), doc,      \
     offsetof(ebb_opts_t, name)},
#include "conf.def"
#undef EBB_OPT
};
_Static_assert(sizeof(opt_table) / sizeof(opt_table[0]) <= 64, "explicit_mask has 64 bits");
#define NOPTS (sizeof(opt_table) / sizeof(opt_table[0]))

static uint64_t *opt_slot(ebb_opts_t *o, const opt_desc_t *d) {
    return (uint64_t *)((char *)o + d->offset);
}
static char *opt_str(ebb_opts_t *o, const opt_desc_t *d) { return (char *)o + d->offset; }

/* Bounded copy of len bytes into a STR option's buffer, zero-filled after
 * the text so that two equal option sets compare equal byte for byte. */
static void str_set(char *dst, const char *s, size_t len) {
    if (len > EBB_OPT_STR_LEN - 1)
        len = EBB_OPT_STR_LEN - 1;
    memset(dst, 0, EBB_OPT_STR_LEN);
    memcpy(dst, s, len);
}

void ebb__conf_defaults(ebb_opts_t *o) {
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_desc_t *d = &opt_table[i];
        if (d->type == T_STR)
            str_set(opt_str(o, d), d->sdef, strlen(d->sdef));
        else
            *opt_slot(o, d) = d->def;
    }
    o->explicit_mask = 0;
}

/* ---- formatting ------------------------------------------------------ */
typedef struct out_s {
    char *buf;
    size_t cap, len;
} out_t;

static void out_ch(out_t *o, char c) {
    if (o->len + 1 < o->cap)
        o->buf[o->len] = c;
    o->len++;
}
static void out_str(out_t *o, const char *s) {
    while (*s)
        out_ch(o, *s++);
}
static void out_uint(out_t *o, unsigned long long v) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        out_ch(o, tmp[--n]);
}

static size_t vfmt(char *buf, size_t cap, const char *fmt, va_list ap) {
    out_t o = {buf, cap, 0};
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') {
            out_ch(&o, *f);
            continue;
        }
        f++;
        if (*f == 's') {
            const char *s = va_arg(ap, const char *);
            out_str(&o, s ? s : "(null)");
        } else if (*f == 'd') {
            int v = va_arg(ap, int);
            if (v < 0) {
                out_ch(&o, '-');
                out_uint(&o, (unsigned long long)(-(long long)v));
            } else {
                out_uint(&o, (unsigned long long)v);
            }
        } else if (*f == 'u') {
            out_uint(&o, va_arg(ap, unsigned));
        } else if (f[0] == 'z' && f[1] == 'u') {
            f++;
            out_uint(&o, va_arg(ap, size_t));
        } else if (f[0] == 'l' && f[1] == 'l' && f[2] == 'u') {
            f += 2;
            out_uint(&o, va_arg(ap, unsigned long long));
        } else if (f[0] == 'l' && f[1] == 'l' && f[2] == 'd') {
            f += 2;
            long long v = va_arg(ap, long long);
            if (v < 0) {
                out_ch(&o, '-');
                out_uint(&o, 0ull - (unsigned long long)v);
            } else {
                out_uint(&o, (unsigned long long)v);
            }
        } else if (*f == '%') {
            out_ch(&o, '%');
        } else {
            out_ch(&o, '?');
            if (!*f)
                break;
        }
    }
    if (cap)
        buf[o.len < cap ? o.len : cap - 1] = '\0';
    return o.len < cap ? o.len : (cap ? cap - 1 : 0);
}

size_t ebb__fmt(char *buf, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    size_t n = vfmt(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

void ebb__warn(const char *fmt, ...) {
    char buf[512];
    size_t n = ebb__fmt(buf, sizeof(buf), "ebbmalloc: ");
    va_list ap;
    va_start(ap, fmt);
    n += vfmt(buf + n, sizeof(buf) - n - 1, fmt, ap);
    va_end(ap);
    buf[n++] = '\n';
    ebb__os_write_err(buf, n);
}

/* ---- parsing --------------------------------------------------------- */
/* Copy a token for a message, bounded and with control characters hidden. */
static void token_copy(char *dst, size_t cap, const char *s, size_t len) {
    size_t n = 0;
    for (size_t i = 0; i < len && n + 4 < cap; i++)
        dst[n++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
    if (len > n && n + 4 <= cap) {
        dst[n++] = '.';
        dst[n++] = '.';
        dst[n++] = '.';
    }
    dst[n] = '\0';
}

static bool token_eq(const char *s, size_t len, const char *word) {
    size_t wl = strlen(word);
    if (wl != len)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != word[i])
            return false;
    }
    return true;
}

static bool parse_bool(const char *s, size_t len, uint64_t *out) {
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (token_eq(s, len, yes[i])) {
            *out = 1;
            return true;
        }
        if (token_eq(s, len, no[i])) {
            *out = 0;
            return true;
        }
    }
    return false;
}

/* Decimal with an optional k/m/g suffix (powers of 1024); no sign. */
static bool parse_uint(const char *s, size_t len, uint64_t *out) {
    if (len == 0)
        return false;
    uint64_t v = 0;
    size_t i = 0;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    if (i == 0)
        return false;
    if (i < len) {
        unsigned shift;
        switch (s[i]) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        default: return false;
        }
        if (i + 1 != len || v > (UINT64_MAX >> shift))
            return false;
        v <<= shift;
    }
    *out = v;
    return true;
}

/* Word i of a CHOICE's "a|b|c" list into buf; false past the last word. */
static bool choice_word(const char *words, uint64_t i, char *buf, size_t cap) {
    const char *w = words;
    for (; i > 0 && *w; i--) {
        while (*w && *w != '|')
            w++;
        if (*w == '|')
            w++;
    }
    size_t n = 0;
    while (w[n] && w[n] != '|' && n + 1 < cap) {
        buf[n] = w[n];
        n++;
    }
    buf[n] = '\0';
    return n > 0;
}

static bool parse_choice(const char *words, const char *s, size_t len, uint64_t *out) {
    char word[EBB_OPT_STR_LEN];
    for (uint64_t i = 0; choice_word(words, i, word, sizeof(word)); i++) {
        if (token_eq(s, len, word)) {
            *out = i;
            return true;
        }
    }
    return false;
}

static const opt_desc_t *opt_find(const char *key, size_t len) {
    for (size_t i = 0; i < NOPTS; i++)
        if (strlen(opt_table[i].name) == len && memcmp(opt_table[i].name, key, len) == 0)
            return &opt_table[i];
    return NULL;
}

static int parse_entry(ebb_opts_t *o, const char *s, size_t len) {
    char key[80], val[80];
    const char *colon = memchr(s, ':', len);
    if (colon == NULL) {
        if (token_eq(s, len, "help")) {
            ebb__conf_help();
            return 0;
        }
        token_copy(key, sizeof(key), s, len);
        ebb__warn("EBBMALLOC_CONF: entry '%s' is not key:value (ignored)", key);
        return 1;
    }
    size_t klen = (size_t)(colon - s), vlen = len - klen - 1;
    const char *v = colon + 1;
    token_copy(key, sizeof(key), s, klen);
    const opt_desc_t *d = opt_find(s, klen);
    if (d == NULL) {
        ebb__warn("EBBMALLOC_CONF: unknown option '%s' (ignored; EBBMALLOC_CONF=help lists "
                  "the options)",
                  key);
        return 1;
    }
    if (d->type == T_STR) {
        if (vlen == 0 || vlen > EBB_OPT_STR_LEN - 1) {
            token_copy(val, sizeof(val), v, vlen);
            ebb__warn("EBBMALLOC_CONF: invalid value '%s' for '%s' (expected 1..%u bytes of "
                      "text); keeping the default %s",
                      val, d->name, (unsigned)(EBB_OPT_STR_LEN - 1), d->sdef);
            str_set(opt_str(o, d), d->sdef, strlen(d->sdef));
            return 1;
        }
        str_set(opt_str(o, d), v, vlen);
        o->explicit_mask |= 1ull << (d - opt_table);
        return 0;
    }
    uint64_t x;
    bool ok = d->type == T_BOOL     ? parse_bool(v, vlen, &x)
              : d->type == T_CHOICE ? parse_choice(d->sdef, v, vlen, &x)
                                    : parse_uint(v, vlen, &x);
    if (!ok || x < d->min || x > d->max) {
        token_copy(val, sizeof(val), v, vlen);
        if (d->type == T_CHOICE) {
            char def[EBB_OPT_STR_LEN];
            choice_word(d->sdef, 0, def, sizeof(def));
            ebb__warn("EBBMALLOC_CONF: invalid value '%s' for '%s' (expected one of %s); "
                      "keeping the default %s",
                      val, d->name, d->sdef, def);
        } else if (d->type == T_BOOL)
            ebb__warn("EBBMALLOC_CONF: invalid value '%s' for '%s' (expected true or false); "
                      "keeping the default %s",
                      val, d->name, d->def ? "true" : "false");
        else
            ebb__warn("EBBMALLOC_CONF: invalid value '%s' for '%s' (expected an integer in "
                      "%llu..%llu); keeping the default %llu",
                      val, d->name, (unsigned long long)d->min, (unsigned long long)d->max,
                      (unsigned long long)d->def);
        *opt_slot(o, d) = d->def;
        return 1;
    }
    *opt_slot(o, d) = x;
    o->explicit_mask |= 1ull << (d - opt_table);
    return 0;
}

int ebb__conf_parse(ebb_opts_t *o, const char *text) {
    int bad = 0;
    if (text == NULL)
        return 0;
    const char *s = text;
    while (*s) {
        const char *e = s;
        while (*e && *e != ',')
            e++;
        /* Trim blanks around the entry. */
        const char *b = s, *t = e;
        while (b < t && (*b == ' ' || *b == '\t'))
            b++;
        while (t > b && (t[-1] == ' ' || t[-1] == '\t'))
            t--;
        if (t > b)
            bad += parse_entry(o, b, (size_t)(t - b));
        s = *e ? e + 1 : e;
    }
    return bad;
}

/* An option's current value in o (or its default when o is NULL) as text. */
static size_t value_text(const opt_desc_t *d, ebb_opts_t *o, char *buf, size_t cap) {
    if (d->type == T_STR)
        return ebb__fmt(buf, cap, "%s", o ? opt_str(o, d) : d->sdef);
    uint64_t v = o ? *opt_slot(o, d) : d->def;
    if (d->type == T_BOOL)
        return ebb__fmt(buf, cap, "%s", v ? "true" : "false");
    if (d->type == T_CHOICE) {
        char word[EBB_OPT_STR_LEN];
        choice_word(d->sdef, v, word, sizeof(word));
        return ebb__fmt(buf, cap, "%s", word);
    }
    return ebb__fmt(buf, cap, "%llu", (unsigned long long)v);
}

void ebb__conf_help(void) {
    char line[512];
    size_t n;
    ebb__os_write_err(line, ebb__fmt(line, sizeof(line),
                                     "ebbmalloc %s options, set with "
                                     "EBBMALLOC_CONF=\"key:value,...\":\n",
                                     EBB_VERSION_STRING));
    for (size_t i = 0; i < NOPTS; i++) {
        const opt_desc_t *d = &opt_table[i];
        char def[EBB_OPT_STR_LEN];
        value_text(d, NULL, def, sizeof(def));
        if (d->type == T_STR)
            n = ebb__fmt(line, sizeof(line), "  %s (text, default %s): %s\n", d->name, def,
                         d->doc);
        else if (d->type == T_BOOL)
            n = ebb__fmt(line, sizeof(line), "  %s (bool, default %s): %s\n", d->name, def,
                         d->doc);
        else if (d->type == T_CHOICE)
            n = ebb__fmt(line, sizeof(line), "  %s (%s, default %s): %s\n", d->name, d->sdef,
                         def, d->doc);
        else
            n = ebb__fmt(line, sizeof(line), "  %s (integer %llu..%llu, default %s): %s\n",
                         d->name, (unsigned long long)d->min, (unsigned long long)d->max, def,
                         d->doc);
        ebb__os_write_err(line, n);
    }
}

size_t ebb__conf_describe(const ebb_opts_t *o, char *buf, size_t cap) {
    size_t n = 0;
    if (cap)
        buf[0] = '\0';
    for (size_t i = 0; i < NOPTS && n + 1 < cap; i++) {
        const opt_desc_t *d = &opt_table[i];
        char v[EBB_OPT_STR_LEN];
        value_text(d, (ebb_opts_t *)o, v, sizeof(v));
        n += ebb__fmt(buf + n, cap - n, "%s%s:%s", i ? "," : "", d->name, v);
    }
    return n;
}

const char *ebb_option(const char *name, char *buf, size_t buflen) {
    if (name == NULL || buf == NULL || buflen == 0)
        return NULL;
    ebb_init();
    const opt_desc_t *d = opt_find(name, strlen(name));
    if (d == NULL)
        return NULL;
    value_text(d, &ebb__opts, buf, buflen);
    return buf;
}

bool ebb__conf_explicit(const ebb_opts_t *o, const char *name) {
    const opt_desc_t *d = opt_find(name, strlen(name));
    return d != NULL && (o->explicit_mask >> (d - opt_table) & 1);
}
