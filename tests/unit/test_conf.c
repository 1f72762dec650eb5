/* The EBBMALLOC_CONF parser: values, ranges, suffixes, and one clear
 * warning line per bad entry, keeping the default. */
#include "capture.h"
#include "unit.h"

typedef struct parse_case_s {
    const char *text;
    ebb_opts_t opts;
    int bad;
} parse_case_t;

static void run_parse(void *arg) {
    parse_case_t *pc = arg;
    ebb__conf_defaults(&pc->opts);
    pc->bad = ebb__conf_parse(&pc->opts, pc->text);
}

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_good_values(void **state) {
    (void)state;
    char err[4096];
    parse_case_t pc = {.text = " narenas:2 , tcache:false,tcache_max_kb:1k,verbose:YES,thp:Always"};
    capture_stderr(run_parse, &pc, err, sizeof(err));
    assert_int_equal(pc.bad, 0);
    assert_string_equal(err, "");
    assert_int_equal(pc.opts.narenas, 2);
    assert_int_equal(pc.opts.tcache, 0);
    assert_int_equal(pc.opts.tcache_max_kb, 1024);
    assert_int_equal(pc.opts.verbose, 1);
    assert_int_equal(pc.opts.thp, EBB_THP_ALWAYS);
}

static void test_bad_entries_warn_once_and_keep_default(void **state) {
    (void)state;
    static const struct {
        const char *text, *must_name;
    } cases[] = {
        {"narenas:banana", "narenas"},
        {"narenas:-1", "narenas"},
        {"arenas_per_heap:0", "arenas_per_heap"},
        {"narenas:1025", "narenas"},
        {"narenas:99999999999999999999999", "narenas"},
        {"narenas:", "narenas"},
        {"tcache:maybe", "tcache"},
        {"bogus:1", "bogus"},
        {"justaword", "justaword"},
        {"tcache_max_kb:5x", "tcache_max_kb"},
        {"thp:sometimes", "thp"},
        {"thp:", "thp"},
        {"thp:nev", "thp"},
        {"thp:neverr", "thp"},
        {"thp:never|always", "thp"},
        {"thp:2", "thp"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char err[4096];
        parse_case_t pc = {.text = cases[i].text};
        capture_stderr(run_parse, &pc, err, sizeof(err));
        assert_int_equal(pc.bad, 1);
        assert_int_equal(count_lines(err), 1);
        assert_non_null(strstr(err, "ebbmalloc: "));
        assert_non_null(strstr(err, cases[i].must_name));
        ebb_opts_t def;
        ebb__conf_defaults(&def);
        assert_memory_equal(&pc.opts, &def, sizeof(def));
    }
}

static void test_mixed_good_and_bad(void **state) {
    (void)state;
    char err[4096];
    parse_case_t pc = {.text = "narenas:3,bogus:1,tcache:0,narenas:x"};
    capture_stderr(run_parse, &pc, err, sizeof(err));
    assert_int_equal(pc.bad, 2);
    assert_int_equal(count_lines(err), 2);
    assert_int_equal(pc.opts.tcache, 0);
    assert_int_equal(pc.opts.narenas, 0); /* the bad entry reset it to the default */
}

static void test_hostile_text_is_bounded(void **state) {
    (void)state;
    static char text[20000];
    memset(text, 'k', sizeof(text) - 1);
    text[5000] = ':';
    text[6000] = '\x01';
    char err[8192];
    parse_case_t pc = {.text = text};
    capture_stderr(run_parse, &pc, err, sizeof(err));
    assert_int_equal(pc.bad, 1);
    assert_int_equal(count_lines(err), 1);
    assert_true(strlen(err) < 600);
}

/* A CHOICE option: every word parses to its index and is written back as
 * itself; a bad word's warning lists the words and names the default. */
static void test_choice_words(void **state) {
    (void)state;
    static const char *const words[] = {"never", "default", "always"};
    for (unsigned i = 0; i < 3; i++) {
        char text[64], back[2048], err[4096];
        snprintf(text, sizeof(text), "thp:%s", words[i]);
        parse_case_t pc = {.text = text};
        capture_stderr(run_parse, &pc, err, sizeof(err));
        assert_int_equal(pc.bad, 0);
        assert_int_equal(pc.opts.thp, i);
        assert_true(ebb__conf_explicit(&pc.opts, "thp"));
        ebb__conf_describe(&pc.opts, back, sizeof(back));
        assert_non_null(strstr(back, text));
        parse_case_t again = {.text = back};
        capture_stderr(run_parse, &again, err, sizeof(err));
        assert_int_equal(again.bad, 0);
        assert_int_equal(again.opts.thp, i);
    }
    ebb_opts_t def;
    ebb__conf_defaults(&def);
    assert_int_equal(def.thp, EBB_THP_NEVER);
    char err[4096];
    parse_case_t pc = {.text = "thp:always,thp:huge"};
    capture_stderr(run_parse, &pc, err, sizeof(err));
    assert_int_equal(pc.bad, 1);
    assert_int_equal(pc.opts.thp, EBB_THP_NEVER);
    assert_non_null(strstr(err, "'huge' for 'thp' (expected one of never|default|always); "
                                "keeping the default never"));
}

static void run_help(void *arg) {
    (void)arg;
    ebb_opts_t o;
    ebb__conf_defaults(&o);
    ebb__conf_parse(&o, "help");
}

static void test_help_lists_every_option(void **state) {
    (void)state;
    char err[8192];
    capture_stderr(run_help, NULL, err, sizeof(err));
#define EBB_OPT(type, name, def, min, max, doc) assert_non_null(strstr(err, #name));
#include "conf.def"
#undef EBB_OPT
}

static void test_describe_and_option_lookup(void **state) {
    (void)state;
    unit_init();
    char buf[512];
    ebb_opts_t o;
    ebb__conf_defaults(&o);
    ebb__conf_describe(&o, buf, sizeof(buf));
    assert_non_null(strstr(buf, "narenas:0"));
    assert_non_null(strstr(buf, "tcache:true"));
    char v[32];
    assert_non_null(ebb_option("tcache", v, sizeof(v)));
    assert_null(ebb_option("no_such_option", v, sizeof(v)));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_values),
        cmocka_unit_test(test_bad_entries_warn_once_and_keep_default),
        cmocka_unit_test(test_mixed_good_and_bad),
        cmocka_unit_test(test_hostile_text_is_bounded),
        cmocka_unit_test(test_choice_words),
        cmocka_unit_test(test_help_lists_every_option),
        cmocka_unit_test(test_describe_and_option_lookup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
