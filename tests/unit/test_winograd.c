/* test_winograd.c - uc_winograd_conv3x3 against a direct convolution in
 * double: odd sizes, maps narrower and wider than a group of tiles, channel
 * counts that are multiples of nothing, batches, accumulate on and off,
 * several tile chunks and output-channel blocks, any thread count.
 *
 * Tolerance: F(4x4, 3x3) with points 0, +-1, +-2 loses about ten times f32
 * rounding, growing slowly with the input channels. Measured on these
 * shapes, the largest error relative to the output's largest magnitude is
 * 0.1-7e-6 up to 100 input channels and 0.5-1.2e-5 at 2000-8200 (1.1-2e-5
 * on real-size layers of 320-1280 channels, against 3e-7 for f32 im2col);
 * the test allows 1e-4. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/nn/ops.h"
#include "libcommon/nn/rng.h"
#include "libcommon/nn/winograd.h"

#define TOL 1e-4

/* y[co, b, i, j] of a 3x3 convolution, zero padding 1, in double; only
 * every `step`-th output (the large cases), the others left as they are. */
static void conv_direct(const float *x, int64_t B, int64_t cin, int64_t h, int64_t w, const float *wt,
                        const float *bias, int64_t cout, double *y, int64_t step)
{
    int64_t n = cout * B * h * w;
    for (int64_t o = 0; o < n; o += step) {
        int64_t co = o / (B * h * w), b = o / (h * w) % B, i = o / w % h, j = o % w;
        double s = bias[co];
        for (int64_t ci = 0; ci < cin; ci++)
            for (int ky = 0; ky < 3; ky++)
                for (int kx = 0; kx < 3; kx++) {
                    int64_t yi = i + ky - 1, xi = j + kx - 1;
                    if (yi >= 0 && yi < h && xi >= 0 && xi < w)
                        s += (double)x[((ci * B + b) * h + yi) * w + xi] * wt[((co * cin + ci) * 3 + ky) * 3 + kx];
                }
        y[o] = s;
    }
}

/* Uniform in [-scale, scale). */
static void fill(float *x, int64_t n, uint64_t seed, float scale)
{
    uc_rng r;
    uc_rng_init(&r, seed, 1);
    for (int64_t i = 0; i < n; i++)
        x[i] = scale * (float)(2 * uc_rng_uniform(&r) - 1);
}

/* Largest |got - k * want| over the checked outputs, relative to the
 * largest |want|. */
static double rel_err(const float *got, const double *want, double k, int64_t n, int64_t step)
{
    double e = 0, m = 0;
    for (int64_t i = 0; i < n; i += step) {
        e = fmax(e, fabs(got[i] - k * want[i]));
        m = fmax(m, fabs(want[i]));
    }
    return e != e ? INFINITY : e / m;
}

static void check_shape(int64_t B, int64_t cin, int64_t h, int64_t w, int64_t cout, int64_t step)
{
    int64_t nx = B * cin * h * w, nw = cout * cin * 9, ny = B * cout * h * w;
    float *x = uc_alloc((size_t)nx, sizeof(float)), *wt = uc_alloc((size_t)nw, sizeof(float));
    float *bias = uc_alloc((size_t)cout, sizeof(float)), *y = uc_alloc((size_t)ny, sizeof(float));
    float *y1 = uc_alloc((size_t)ny, sizeof(float));
    double *want = uc_alloc((size_t)ny, sizeof(double));
    int64_t ns = uc_winograd_scratch(B, cin, h, w, cout);
    float *scratch = uc_alloc((size_t)ns, sizeof(float));
    fill(x, nx, (uint64_t)(B * 1000 + cin), 1.0f);
    fill(wt, nw, (uint64_t)(cout * 1000 + h), (float)(1.0 / sqrt(9.0 * (double)cin)));
    fill(bias, cout, (uint64_t)w, 0.1f);
    conv_direct(x, B, cin, h, w, wt, bias, cout, want, step);

    for (int64_t i = 0; i < ny; i++)
        y[i] = NAN; /* every output is written */
    uc_threads_init(1);
    uc_winograd_conv3x3(x, B, cin, h, w, wt, bias, cout, y, 0, scratch);
    double e = rel_err(y, want, 1, ny, step);
    if (!(e < TOL))
        fail_msg("B %lld cin %lld %lldx%lld cout %lld: error %.3g of the output's scale", (long long)B,
                 (long long)cin, (long long)h, (long long)w, (long long)cout, e);

    /* two threads: the same bits */
    memcpy(y1, y, (size_t)ny * sizeof(float));
    uc_threads_init(2);
    uc_winograd_conv3x3(x, B, cin, h, w, wt, bias, cout, y, 0, scratch);
    assert_memory_equal(y, y1, (size_t)ny * sizeof(float));

    /* accumulate adds the same again */
    uc_winograd_conv3x3(x, B, cin, h, w, wt, bias, cout, y, 1, scratch);
    e = rel_err(y, want, 2, ny, step);
    if (!(e < 2 * TOL))
        fail_msg("accumulate, B %lld cin %lld %lldx%lld cout %lld: error %.3g", (long long)B, (long long)cin,
                 (long long)h, (long long)w, (long long)cout, e);

    /* the cached transform: the same bits, at its first call and after */
    uc_winograd_slot slot = {0};
    for (int k = 0; k < 2; k++) {
        uc_winograd_conv3x3_cached(x, B, cin, h, w, (uc_wref){.f = wt}, &slot, bias, cout, y, 0, scratch);
        assert_int_equal(slot.state, 1);
        assert_memory_equal(y, y1, (size_t)ny * sizeof(float));
    }
    assert_true(uc_winograd_cache_bytes() >= slot.bytes);
    uc_winograd_slot_free(&slot);
    assert_null(slot.u);

    /* without the micro-kernel (plain uc_gemm products): as exact */
    uc_ukr_disable(1);
    uc_winograd_conv3x3(x, B, cin, h, w, wt, bias, cout, y, 0, scratch);
    e = rel_err(y, want, 1, ny, step);
    if (!(e < TOL))
        fail_msg("no micro-kernel, B %lld cin %lld %lldx%lld cout %lld: error %.3g", (long long)B, (long long)cin,
                 (long long)h, (long long)w, (long long)cout, e);
    uc_winograd_conv3x3_cached(x, B, cin, h, w, (uc_wref){.f = wt}, &slot, bias, cout, y1, 0, scratch);
    assert_memory_equal(y, y1, (size_t)ny * sizeof(float));
    uc_winograd_slot_free(&slot);
    uc_ukr_disable(0);

    /* half-precision weights, widened as they are transformed: the bits of
     * the same weights given as F32, cached or not */
    uint16_t *hw = uc_alloc((size_t)nw, sizeof *hw);
    for (int half = 0; half < 2; half++) {
        for (int64_t i = 0; i < nw; i++) {
            hw[i] = half ? uc_f32_to_f16(wt[i]) : uc_f32_to_bf16(wt[i]);
            wt[i] = half ? uc_f16_to_f32(hw[i]) : uc_bf16_to_f32(hw[i]);
        }
        uc_wref hr = {.h = hw, .type = half ? UC_HALF_F16 : UC_HALF_BF16};
        uc_winograd_conv3x3(x, B, cin, h, w, wt, bias, cout, y1, 0, scratch);
        uc_winograd_conv3x3_cached(x, B, cin, h, w, hr, NULL, bias, cout, y, 0, scratch);
        assert_memory_equal(y, y1, (size_t)ny * sizeof(float));
        uc_winograd_conv3x3_cached(x, B, cin, h, w, hr, &slot, bias, cout, y, 0, scratch);
        assert_memory_equal(y, y1, (size_t)ny * sizeof(float));
        uc_winograd_slot_free(&slot);
    }
    uc_free(hw);
    uc_threads_init(1);
    uc_free(x);
    uc_free(wt);
    uc_free(bias);
    uc_free(y);
    uc_free(y1);
    uc_free(want);
    uc_free(scratch);
}

static void test_small(void **state)
{
    (void)state;
    static const int cases[][5] = {
        /* B, cin, h, w, cout */
        {1, 1, 1, 1, 1},   {1, 3, 5, 7, 4},  {2, 35, 13, 21, 40}, {2, 17, 4, 4, 9},   {1, 5, 8, 8, 3},
        {3, 6, 2, 3, 5},   {2, 33, 9, 70, 7}, {1, 20, 6, 64, 17},  {2, 19, 7, 129, 6}, {1, 70, 12, 12, 100},
    };
    for (size_t c = 0; c < UC_COUNT(cases); c++)
        check_shape(cases[c][0], cases[c][1], cases[c][2], cases[c][3], cases[c][4], 1);
}

/* Shapes that take several passes with winograd.c's budgets (per
 * position, 256 Ki floats for the transformed input, 512 Ki for the
 * weights): more input channels x tile columns than the first and the tile
 * rows come in chunks; more input x output channels than the second and the
 * output channels come in blocks (of at least 128). */
static void test_passes(void **state)
{
    (void)state;
    check_shape(1, 2053, 5, 6, 260, 7);     /* one chunk, two blocks */
    check_shape(2, 2100, 5, 500, 3, 7);     /* four chunks, one block */
    check_shape(1, 4100, 8, 260, 129, 211); /* two chunks x two blocks, weights redone per chunk */
    check_shape(1, 8200, 9, 128, 130, 389); /* three chunks x two blocks, input redone per block */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small),
        cmocka_unit_test(test_passes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
