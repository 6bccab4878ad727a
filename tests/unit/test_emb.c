/* test_emb.c - slerp, lerp and text diffs in embedding space. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/sample/emb.h"

#define PI 3.14159265358979323846

static void test_slerp_endpoints(void **state)
{
    (void)state;
    float a[5] = {0.1f, -2.3f, 0.7f, 1e-3f, 5.5f}, b[5] = {-1.0f, 0.25f, 3.0f, 2.0f, -0.125f}, out[5];
    assert_int_equal(uc_emb_slerp(a, b, 5, 0.0, out), 0);
    assert_memory_equal(out, a, sizeof a);
    assert_int_equal(uc_emb_slerp(a, b, 5, 1.0, out), 0);
    assert_memory_equal(out, b, sizeof b);
}

static void test_slerp_geometry(void **state)
{
    (void)state;
    /* orthogonal, norms 2 and 4: at t the direction is t * 90 degrees from
     * a and the norm is 2 + 2t */
    float a[3] = {2, 0, 0}, b[3] = {0, 4, 0}, out[3];
    for (int k = 1; k < 10; k++) {
        double t = k / 10.0;
        assert_int_equal(uc_emb_slerp(a, b, 3, t, out), 0);
        double len = 2 + 2 * t;
        assert_true(fabs(out[0] - len * cos(t * PI / 2)) < 1e-5);
        assert_true(fabs(out[1] - len * sin(t * PI / 2)) < 1e-5);
        assert_true(out[2] == 0.0f);
        assert_true(fabs(uc_emb_norm(out, 3) - len) < 1e-5);
    }
    /* the middle of a 60 degree arc between unit vectors is their bisector */
    float u[2] = {1, 0}, v[2] = {0.5f, (float)(sqrt(3) / 2)};
    assert_int_equal(uc_emb_slerp(u, v, 2, 0.5, out), 0);
    assert_true(fabs(out[0] - sqrt(3) / 2) < 1e-6 && fabs(out[1] - 0.5) < 1e-6);
    assert_true(fabs(uc_emb_angle(u, out, 2) - PI / 6) < 1e-6);
    /* parallel vectors: same direction, norm blended (1,2)*|1.5| */
    float p[2] = {1, 2}, q[2] = {2, 4};
    assert_int_equal(uc_emb_slerp(p, q, 2, 0.5, out), 0);
    assert_true(fabs(out[0] - 1.5) < 1e-6 && fabs(out[1] - 3.0) < 1e-6);
}

static void test_slerp_degenerate(void **state)
{
    (void)state;
    float a[3] = {1, 2, 3}, neg[3] = {-2, -4, -6}, zero[3] = {0, 0, 0}, out[3] = {7, 7, 7};
    assert_int_equal(uc_emb_slerp(a, neg, 3, 0.5, out), -1);
    assert_non_null(strstr(uc_errmsg(), "opposite"));
    assert_true(out[0] == 7 && out[1] == 7 && out[2] == 7); /* untouched */
    assert_int_equal(uc_emb_slerp(zero, a, 3, 0.5, out), -1);
    assert_non_null(strstr(uc_errmsg(), "first embedding is zero"));
    assert_int_equal(uc_emb_slerp(a, zero, 3, 0.5, out), -1);
    assert_non_null(strstr(uc_errmsg(), "second embedding is zero"));
    assert_true(uc_emb_angle(a, zero, 3) == -1);
}

static void test_lerp(void **state)
{
    (void)state;
    float a[3] = {1, -2, 4}, b[3] = {3, 2, 0}, out[3];
    uc_emb_lerp(a, b, 3, 0.25, out);
    assert_true(out[0] == 1.5f && out[1] == -1.0f && out[2] == 3.0f);
    uc_emb_lerp(a, b, 3, 0.0, out);
    assert_memory_equal(out, a, sizeof a);
    uc_emb_lerp(a, b, 3, 1.0, out);
    assert_memory_equal(out, b, sizeof b);
}

static void test_textdiff(void **state)
{
    (void)state;
    enum { D = 6 };
    float zi[D] = {3, 1, 0.5f, -1, 2, 0}, cur[D] = {1, 0, 0, 1, 0, 0.5f}, tgt[D] = {0, 1, 0, 1, 0.5f, -0.5f};
    float d[D], out[D];
    double nd = 0;
    for (int i = 0; i < D; i++)
        nd += (double)(tgt[i] - cur[i]) * (tgt[i] - cur[i]);
    for (int i = 0; i < D; i++)
        d[i] = (float)((tgt[i] - cur[i]) / sqrt(nd));
    double ni = uc_emb_norm(zi, D), omega = uc_emb_angle(zi, d, D);
    assert_true(omega > 0.1 && omega < PI - 0.1);

    /* theta 0: the image embedding itself */
    assert_int_equal(uc_emb_textdiff(zi, cur, tgt, D, 0.0, out), 0);
    assert_memory_equal(out, zi, sizeof zi);
    /* the angle to the diff direction falls linearly with theta, the norm
     * stays the image embedding's */
    double prev = omega + 1e-9;
    for (int k = 1; k <= 10; k++) {
        double theta = k / 10.0;
        assert_int_equal(uc_emb_textdiff(zi, cur, tgt, D, theta, out), 0);
        double to_d = uc_emb_angle(out, d, D);
        assert_true(to_d < prev);
        prev = to_d;
        assert_true(fabs(to_d - (1 - theta) * omega) < 1e-5);
        assert_true(fabs(uc_emb_angle(out, zi, D) - theta * omega) < 1e-5);
        assert_true(fabs(uc_emb_norm(out, D) - ni) < 1e-5 * ni);
    }
    /* theta 1: along d with the image's norm */
    assert_int_equal(uc_emb_textdiff(zi, cur, tgt, D, 1.0, out), 0);
    for (int i = 0; i < D; i++)
        assert_true(fabs(out[i] - ni * d[i]) < 1e-5);

    /* degenerate: equal texts, zero image, diff opposite to the image */
    assert_int_equal(uc_emb_textdiff(zi, cur, cur, D, 0.5, out), -1);
    assert_non_null(strstr(uc_errmsg(), "equal"));
    float zero[D] = {0};
    assert_int_equal(uc_emb_textdiff(zero, cur, tgt, D, 0.5, out), -1);
    assert_non_null(strstr(uc_errmsg(), "image embedding is zero"));
    float back[D];
    for (int i = 0; i < D; i++)
        back[i] = cur[i] - zi[i]; /* target - current = -zi */
    assert_int_equal(uc_emb_textdiff(zi, cur, back, D, 0.5, out), -1);
    assert_non_null(strstr(uc_errmsg(), "opposite"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slerp_endpoints), cmocka_unit_test(test_slerp_geometry),
        cmocka_unit_test(test_slerp_degenerate), cmocka_unit_test(test_lerp),
        cmocka_unit_test(test_textdiff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
