/* Size classes: waste bound, monotonicity, O(1) lookup agreeing with a
 * linear search, slab geometry, the division by multiplication, and the
 * table of classes for aligned requests. */
#include "unit.h"

static unsigned linear_class(size_t size) {
    unsigned c = 1;
    while (ebb__classes[c].size < size)
        c++;
    return c;
}

static void test_table_shape(void **state) {
    (void)state;
    unit_init();
    assert_int_equal(ebb__classes[1].size, 16);
    assert_int_equal(ebb__classes[EBB_NSMALL].size, EBB_SMALL_MAX);
    assert_int_equal(ebb__classes[EBB_NCLASSES - 1].size, EBB_LARGE_MAX);
    for (unsigned c = 2; c < EBB_NCLASSES; c++) {
        assert_true(ebb__classes[c].size > ebb__classes[c - 1].size);
        assert_int_equal(ebb__classes[c].size % 16, 0);
    }
    for (unsigned c = EBB_NSMALL + 1; c < EBB_NCLASSES; c++)
        assert_int_equal(ebb__classes[c].size % EBB_PAGE, 0);
}

static void test_lookup_matches_linear_and_waste(void **state) {
    (void)state;
    unit_init();
    for (size_t size = 1; size <= EBB_LARGE_MAX; size += (size < 70000 ? 1 : 61)) {
        unsigned c = ebb_size_class(size);
        assert_int_equal(c, linear_class(size));
        size_t cs = ebb_class_size(c);
        assert_true(cs >= size);
        /* At most 25% internal waste, or less than the 16-byte quantum
         * that malloc's alignment guarantee imposes on small sizes. */
        assert_true((cs - size) * 4 <= cs || cs - size < EBB_MIN_ALIGN);
    }
    assert_int_equal(ebb_size_class(0), 1);
    assert_int_equal(ebb_size_class(EBB_LARGE_MAX), EBB_NCLASSES - 1);
}

static void test_slab_geometry(void **state) {
    (void)state;
    unit_init();
    for (unsigned c = 1; c <= EBB_NSMALL; c++) {
        const ebb_class_info_t *ci = &ebb__classes[c];
        size_t bytes = (size_t)ci->slab_pages * EBB_PAGE;
        assert_true(ci->nobjs >= 1 && ci->nobjs <= EBB_SLAB_MAX_OBJS);
        assert_true((size_t)ci->nobjs * ci->size <= bytes);
        /* Tail waste of a slab stays under 1/8 of it. */
        assert_true((bytes - (size_t)ci->nobjs * ci->size) * 8 <= bytes);
        assert_true(ci->slab_pages <= EBB_SEG_PAGES - EBB_SEG_FIRST_PAGE);
    }
}

static void test_div_magic_exact(void **state) {
    (void)state;
    unit_init();
    for (unsigned c = 1; c <= EBB_NSMALL; c++) {
        const ebb_class_info_t *ci = &ebb__classes[c];
        for (uint32_t i = 0; i < ci->nobjs; i++) {
            uint64_t off = (uint64_t)i * ci->size;
            assert_int_equal((uint32_t)((off * ci->div_magic) >> 32), i);
        }
    }
}

/* The aligned-class table: for each class and alignment, the first small
 * class from it on whose size is a multiple of the alignment (so its
 * objects, in page-aligned slabs, are aligned), or 0 where none is. */
static void test_aligned_class_table(void **state) {
    (void)state;
    unit_init();
    for (unsigned c = 1; c <= EBB_NSMALL; c++)
        for (unsigned k = 0; k < EBB_ALIGNED_KINDS; k++) {
            size_t align = (size_t)32 << k;
            unsigned a = ebb__class_aligned[c][k];
            unsigned want = 0;
            for (unsigned d = c; d <= EBB_NSMALL && want == 0; d++)
                if (ebb_class_size(d) % align == 0)
                    want = d;
            assert_int_equal(a, want);
        }
    /* Every alignment up to 4 KiB has a class for any small size below
     * the largest multiple of it. */
    for (unsigned k = 0; k < EBB_ALIGNED_KINDS; k++)
        assert_int_not_equal(ebb__class_aligned[ebb_size_class(EBB_SMALL_MAX)][k], 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_shape),
        cmocka_unit_test(test_lookup_matches_linear_and_waste),
        cmocka_unit_test(test_slab_geometry),
        cmocka_unit_test(test_div_magic_exact),
        cmocka_unit_test(test_aligned_class_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
