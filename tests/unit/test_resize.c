/* test_resize.c - the antialiased bicubic resize against values worked out
 * by hand from the kernel (a = -0.5, taps renormalised at the borders). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/image/resize.h"

static void test_identity(void **state)
{
    (void)state;
    float in[2 * 3 * 5], out[2 * 3 * 5];
    for (int i = 0; i < 30; i++)
        in[i] = sinf((float)i) * 3.0f;
    uc_resize_aa(in, 2, 3, 5, out, 3, 5);
    assert_memory_equal(in, out, sizeof in);
}

static void test_constant(void **state)
{
    (void)state;
    /* weights are normalised, so a constant stays (nearly) constant at any
     * ratio, up, down, fractional, one axis or both */
    static const int sizes[][4] = {{4, 4, 16, 16}, {16, 16, 4, 4}, {7, 5, 3, 11}, {64, 64, 256, 256},
                                   {10, 3, 10, 7}, {3, 10, 9, 10}, {1, 1, 5, 3}, {9, 9, 1, 1}};
    for (size_t k = 0; k < UC_COUNT(sizes); k++) {
        int H = sizes[k][0], W = sizes[k][1], oh = sizes[k][2], ow = sizes[k][3];
        float *in = uc_alloc((size_t)(2 * H * W), sizeof *in), *out = uc_alloc((size_t)(2 * oh * ow), sizeof *out);
        for (int i = 0; i < H * W; i++) {
            in[i] = 0.75f;
            in[H * W + i] = -0.25f;
        }
        uc_resize_aa(in, 2, H, W, out, oh, ow);
        for (int i = 0; i < oh * ow; i++) {
            assert_true(fabsf(out[i] - 0.75f) < 1e-6f);
            assert_true(fabsf(out[oh * ow + i] + 0.25f) < 1e-6f);
        }
        uc_free(in);
        uc_free(out);
    }
}

/* A row [0, 1] upsampled to 4: scale 0.5, support 2, taps at distances
 * 0.25 and 1.25 for the outer pixels, 0.25 and 0.75 for the inner ones.
 * cubic(0.25) = 111/128, cubic(0.75) = 29/128, cubic(1.25) = -9/128, so
 * the outputs are -3/34, 29/140, 111/140, 37/34. */
static void test_upscale_2x(void **state)
{
    (void)state;
    float in[2] = {0.0f, 1.0f}, out[4];
    uc_resize_aa(in, 1, 1, 2, out, 1, 4);
    const double want[4] = {-3.0 / 34, 29.0 / 140, 111.0 / 140, 37.0 / 34};
    for (int i = 0; i < 4; i++)
        assert_true(fabs(out[i] - want[i]) < 1e-6);
    /* mirror symmetry: out[i] + out[3 - i] = 1 */
    for (int i = 0; i < 2; i++)
        assert_true(fabs(out[i] + out[3 - i] - 1.0) < 1e-6);
    /* the same along the height (column) axis */
    float col[4];
    uc_resize_aa(in, 1, 2, 1, col, 4, 1);
    for (int i = 0; i < 4; i++)
        assert_true(fabs(col[i] - want[i]) < 1e-6);
}

/* [0, 1, 2, 3] downscaled to 2: scale 2, the kernel stretched to support 4
 * (distances scaled by 1/2). Output 0 is centred at 1.0 and sees all four
 * pixels at distances 0.25, 0.25, 0.75, 1.25: weights 111, 111, 29, -9
 * (/128), sum 242, so (111 + 58 - 27) / 242 = 71/121; by symmetry
 * output 1 = 3 - 71/121. */
static void test_downscale_2x(void **state)
{
    (void)state;
    float in[4] = {0, 1, 2, 3}, out[2];
    uc_resize_aa(in, 1, 1, 4, out, 1, 2);
    assert_true(fabs(out[0] - 71.0 / 121) < 1e-6);
    assert_true(fabs(out[1] - (3 - 71.0 / 121)) < 1e-6);
}

/* Separable: a product image f(y) g(x) resizes to F(y) G(x). */
static void test_separable(void **state)
{
    (void)state;
    enum { H = 5, W = 6, OH = 13, OW = 4 };
    float f[H], g[W], img[H * W], F[OH], G[OW], out[OH * OW];
    for (int y = 0; y < H; y++)
        f[y] = (float)(y * y) - 2.0f;
    for (int x = 0; x < W; x++)
        g[x] = cosf((float)x);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            img[y * W + x] = f[y] * g[x];
    uc_resize_aa(f, 1, H, 1, F, OH, 1);
    uc_resize_aa(g, 1, 1, W, G, 1, OW);
    uc_resize_aa(img, 1, H, W, out, OH, OW);
    for (int y = 0; y < OH; y++)
        for (int x = 0; x < OW; x++)
            assert_true(fabsf(out[y * OW + x] - F[y] * G[x]) < 1e-5f);
    /* the result is not clamped: overshoot of a step survives */
    float step[8] = {-1, -1, -1, -1, 1, 1, 1, 1}, up[32];
    uc_resize_aa(step, 1, 1, 8, up, 1, 32);
    float mx = -2, mn = 2;
    for (int i = 0; i < 32; i++) {
        mx = fmaxf(mx, up[i]);
        mn = fminf(mn, up[i]);
    }
    assert_true(mx > 1.0f && mn < -1.0f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_identity),   cmocka_unit_test(test_constant),  cmocka_unit_test(test_upscale_2x),
        cmocka_unit_test(test_downscale_2x), cmocka_unit_test(test_separable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
