/*
 * The glibc introspection and tuning calls: malloc_trim, mallinfo,
 * mallinfo2, mallopt, malloc_stats and malloc_info. Programs (and the JVM)
 * call them, so they must exist, not crash and report plausible numbers.
 */
#include "test_util.h"

#include <errno.h>
#include <malloc.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#define LIVE_BYTES (64 * TU_MiB)
#define SMALL_BLOCK ((size_t)1024)
#define NSMALL (LIVE_BYTES / SMALL_BLOCK)
/* How much of LIVE_BYTES a counter must show: room for caches and rounding. */
#define MOSTLY(n) ((n) / 10 * 9)

/* malloc_trim returns 1 when it released memory, 0 otherwise; after
 * megabytes were freed it releases them, as glibc's does. */
static void malloc_trim_releases_memory(void **state)
{
    size_t rss0 = tu_statm(TU_STATM_RESIDENT);
    assert_true(tu_churn_and_free(LIVE_BYTES, 64 * TU_KiB));
    assert_true(tu_churn_and_free(LIVE_BYTES, 1000));
    int r = malloc_trim(0);
    assert_true(r == 0 || r == 1);
    assert_true(tu_statm(TU_STATM_RESIDENT) < rss0 + LIVE_BYTES / 2);
    r = malloc_trim(1 * TU_MiB);
    assert_true(r == 0 || r == 1);
    void *q = malloc(100);
    assert_non_null(q);
    free(q);
}

static void **alloc_small_blocks(void)
{
    void **v = malloc(NSMALL * sizeof(void *));
    assert_non_null(v);
    for (size_t i = 0; i < NSMALL; i++) {
        v[i] = malloc(SMALL_BLOCK);
        assert_non_null(v[i]);
    }
    return v;
}

static void free_small_blocks(void **v)
{
    for (size_t i = 0; i < NSMALL; i++)
        free(v[i]);
    free(v);
}

/* glibc counts small blocks in uordblks (in use) and arena (obtained from
 * the system), huge ones in hblkhd; so in-use memory is uordblks + hblkhd. */
static void mallinfo2_tracks_live_bytes(void **state)
{
    struct mallinfo2 m0 = mallinfo2();
    void **v = alloc_small_blocks();
    struct mallinfo2 m1 = mallinfo2();
    assert_true(m1.uordblks >= m0.uordblks + MOSTLY(LIVE_BYTES));
    /* What was obtained from the system covers what is in use (it need not
     * grow: memory kept from an earlier test may be reused). */
    assert_true(m1.arena + m1.hblkhd >= m1.uordblks);
    free_small_blocks(v);
    struct mallinfo2 m2 = mallinfo2();
    assert_true(m2.uordblks + MOSTLY(LIVE_BYTES) <= m1.uordblks);

    /* One huge block. */
    void *big = malloc(LIVE_BYTES);
    assert_non_null(big);
    memset(big, 1, LIVE_BYTES);
    struct mallinfo2 m3 = mallinfo2();
    assert_true(m3.uordblks + m3.hblkhd >= m2.uordblks + m2.hblkhd + MOSTLY(LIVE_BYTES));
    free(big);
    struct mallinfo2 m4 = mallinfo2();
    assert_true(m4.uordblks + m4.hblkhd + MOSTLY(LIVE_BYTES) <= m3.uordblks + m3.hblkhd);
}

/* The old int-sized mallinfo, same numbers while they fit. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static void mallinfo_tracks_live_bytes(void **state)
{
    struct mallinfo m0 = mallinfo();
    void **v = alloc_small_blocks();
    struct mallinfo m1 = mallinfo();
    assert_true((size_t)m1.uordblks >= (size_t)m0.uordblks + MOSTLY(LIVE_BYTES));
    assert_true((size_t)m1.arena + (size_t)m1.hblkhd >= (size_t)m1.uordblks);
    free_small_blocks(v);
    struct mallinfo m2 = mallinfo();
    assert_true((size_t)m2.uordblks + MOSTLY(LIVE_BYTES) <= (size_t)m1.uordblks);
}
#pragma GCC diagnostic pop

/* mallopt returns 1 on success, 0 on error; ebbmalloc may ignore glibc's
 * knobs, but must answer and keep working. */
static void mallopt_answers(void **state)
{
    static const int params[] = {M_ARENA_MAX,      M_ARENA_TEST,    M_MMAP_THRESHOLD,
                                 M_TRIM_THRESHOLD, M_TOP_PAD,       M_MMAP_MAX,
                                 M_CHECK_ACTION,   M_PERTURB,       M_MXFAST,
                                 12345,            -12345};
    for (size_t i = 0; i < TU_ARRAY_LEN(params); i++) {
        int r = mallopt(params[i], params[i] == M_ARENA_MAX ? 2 : 128 * 1024);
        assert_true(r == 0 || r == 1);
    }
    assert_int_equal(mallopt(M_PERTURB, 0), mallopt(M_PERTURB, 0));
    void *p = malloc(300 * TU_KiB);
    assert_non_null(p);
    memset(p, 3, 300 * TU_KiB);
    free(p);
}

/* Run fn with fd 2 sent to a temporary file; return what it wrote (caller
 * frees) and its length. */
static char *capture_stderr(void (*fn)(void), size_t *len)
{
    FILE *tmp = tmpfile();
    assert_non_null(tmp);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_true(dup2(fileno(tmp), 2) == 2);
    fn();
    fflush(stderr);
    assert_true(dup2(saved, 2) == 2);
    close(saved);
    off_t n = lseek(fileno(tmp), 0, SEEK_END);
    assert_true(n >= 0);
    char *buf = calloc(1, (size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(pread(fileno(tmp), buf, (size_t)n, 0), n);
    fclose(tmp);
    *len = (size_t)n;
    return buf;
}

static void malloc_stats_writes_stderr(void **state)
{
    void *p = malloc(1000);
    size_t n;
    char *out = capture_stderr(malloc_stats, &n);
    assert_true(n > 0);
    assert_int_equal(strlen(out), n);
    free(out);
    free(p);
}

/* True when s is one element named root whose tags nest properly. Enough
 * XML to catch a truncated or interleaved document: tags, attributes in
 * quotes, self-closing tags, the <?xml ?> prolog. */
static bool xml_well_formed(const char *s, const char *root)
{
    enum { DEPTH = 64, NAME = 64 };
    char stack[DEPTH][NAME];
    int depth = 0, elements = 0;
    while (*s) {
        if (*s != '<') {
            s++;
            continue;
        }
        s++;
        bool closing = *s == '/', special = *s == '?' || *s == '!';
        if (closing)
            s++;
        char name[NAME];
        size_t n = 0;
        while (*s && !strchr(" \t\r\n/>", *s) && n + 1 < NAME)
            name[n++] = *s++;
        name[n] = '\0';
        if (n == 0)
            return false;
        bool self_closing = false;
        char quote = 0;
        for (; *s && (quote || *s != '>'); s++) {
            if (quote && *s == quote)
                quote = 0;
            else if (!quote && (*s == '"' || *s == '\''))
                quote = *s;
            self_closing = !quote && *s == '/';
        }
        if (*s != '>')
            return false;
        s++;
        if (special)
            continue;
        if (closing) {
            if (depth == 0 || strcmp(stack[depth - 1], name) != 0)
                return false;
            depth--;
        } else {
            if (depth == 0 && (elements++ > 0 || strcmp(name, root) != 0))
                return false;
            if (!self_closing) {
                if (depth == DEPTH)
                    return false;
                strcpy(stack[depth++], name);
            }
        }
    }
    return depth == 0 && elements == 1;
}

static void xml_checker_rejects_bad_documents(void **state)
{
    assert_true(xml_well_formed("<malloc version=\"1\"><heap nr=\"0\"><x a='>'/></heap></malloc>\n", "malloc"));
    assert_false(xml_well_formed("<malloc><heap></malloc></heap>", "malloc"));
    assert_false(xml_well_formed("<malloc><heap>", "malloc"));
    assert_false(xml_well_formed("<malloc/><malloc/>", "malloc"));
    assert_false(xml_well_formed("<stats></stats>", "malloc"));
}

static void malloc_info_writes_xml(void **state)
{
    void *keep[64];
    for (int i = 0; i < 64; i++)
        keep[i] = malloc((size_t)(i + 1) * 1000);
    char *doc = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&doc, &len);
    assert_non_null(f);
    assert_int_equal(malloc_info(0, f), 0);
    assert_int_equal(fclose(f), 0);
    assert_non_null(doc);
    assert_true(len > 0);
    while (len > 0 && (doc[len - 1] == '\n' || doc[len - 1] == ' '))
        doc[--len] = '\0';
    /* Like glibc: the document is one <malloc ...> element. */
    const char *start = doc;
    if (strncmp(start, "<?xml", 5) == 0)
        start = strchr(start, '>') + 1;
    while (*start == '\n' || *start == ' ')
        start++;
    assert_memory_equal(start, "<malloc", 7);
    assert_true(xml_well_formed(doc, "malloc"));
    free(doc);
    for (int i = 0; i < 64; i++)
        free(keep[i]);

    /* Options other than 0 are an error (glibc returns EINVAL). */
    f = open_memstream(&doc, &len);
    assert_non_null(f);
    assert_int_not_equal(malloc_info(1, f), 0);
    fclose(f);
    free(doc);
}

int main(void)
{
    tu_require_ebbmalloc();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(malloc_trim_releases_memory),
        cmocka_unit_test(mallinfo2_tracks_live_bytes),
        cmocka_unit_test(mallinfo_tracks_live_bytes),
        cmocka_unit_test(mallopt_answers),
        cmocka_unit_test(malloc_stats_writes_stderr),
        cmocka_unit_test(xml_checker_rejects_bad_documents),
        cmocka_unit_test(malloc_info_writes_xml),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
