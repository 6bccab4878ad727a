/* test_bf16.c - the half-precision-weight products of bf16.h against F64
 * references on random data, on both paths: vdpbf16ps (where this CPU has
 * AVX512_BF16; skipped with a message elsewhere) and the widening path
 * (forced with uc_bf16_force_widen), for BF16 and F16 weights; shapes
 * around the register tile (4 x 64), the row block (128) and odd K; the
 * transposed output of uc_linear_half with a bias; beta; NaN in C that
 * beta 0 must not read; the same bits on 1 and 2 threads.
 *
 * References, in double, sum over k of w[k] x[k] with w the weight as
 * stored (exactly widened):
 *   - vdpbf16ps: x rounded to BF16 (nearest even), as the path packs it;
 *     the only other error is F32 accumulation: within 1e-5 of sum |w x|.
 *   - widening: x as given (F32 products by BLIS): within 1e-6 of sum |w x|.
 * And each against the F32-weights product with x unrounded: within 2^-8
 * of sum |w x| (one BF16 rounding of x) on the native path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/nn/bf16.h"
#include "libcommon/nn/ops.h"
#include "libcommon/nn/rng.h"

#include "tests/unit/randn.h"

static double half_value(uint16_t h, uc_half type) { return type == UC_HALF_BF16 ? uc_bf16_to_f32(h) : uc_f16_to_f32(h); }

/* C = W X + beta C0 with C [M, N] at C[m * rsc + n * csc]; X [K, N]
 * row-major. */
static void check(int64_t M, int64_t N, int64_t K, uc_half type, int native, float beta, int64_t rsc, int64_t csc)
{
    float *Wf = randn(M * K, (uint64_t)(M * 131 + K)), *X = randn(K * N, (uint64_t)(N * 7 + K));
    float *C = uc_alloc((size_t)(M * N), sizeof *C), *C0 = randn(M * N, 5), *C1 = uc_alloc((size_t)(M * N), sizeof *C);
    uint16_t *W = uc_alloc((size_t)(M * K), sizeof *W);
    for (int64_t i = 0; i < M * K; i++)
        W[i] = type == UC_HALF_BF16 ? uc_f32_to_bf16(Wf[i]) : uc_f32_to_f16(Wf[i]);
    for (int64_t i = 0; i < M * N; i++)
        C[i] = beta == 0.0f ? NAN : C0[i];
    uc_bf16_force_widen(!native);
    uc_threads_init(1);
    uc_gemm_half(M, N, K, W, type, K, X, N, 1, beta, C, rsc, csc);
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = 0, exact = 0, mag = 0;
            for (int64_t k = 0; k < K; k++) {
                double w = half_value(W[m * K + k], type), x = X[k * N + n];
                double xr = native ? uc_bf16_to_f32(uc_f32_to_bf16(X[k * N + n])) : x;
                s += w * xr;
                exact += w * x;
                mag += fabs(w * x);
            }
            float got = C[m * rsc + n * csc];
            double c0 = beta != 0.0f ? beta * (double)C0[m * rsc + n * csc] : 0.0;
            double tol = (native ? 1e-5 : 1e-6) * (mag + fabs(c0)) + 1e-30;
            if (!(fabs(got - (s + c0)) <= tol))
                fail_msg("%s %s M=%lld N=%lld K=%lld [%lld,%lld]: %.9g, expected %.9g (tolerance %.3g)",
                         native ? "vdpbf16ps" : "widening", type == UC_HALF_BF16 ? "BF16" : "F16", (long long)M,
                         (long long)N, (long long)K, (long long)m, (long long)n, got, s + c0, tol);
            if (!(fabs(got - (exact + c0)) <= 0x1p-8 * mag + 1e-6 * fabs(c0) + 1e-30))
                fail_msg("M=%lld N=%lld K=%lld [%lld,%lld]: %.9g, unrounded product %.9g", (long long)M,
                         (long long)N, (long long)K, (long long)m, (long long)n, got, exact + c0);
        }
    /* two threads: the same bits */
    memcpy(C1, C, (size_t)(M * N) * sizeof *C);
    for (int64_t i = 0; i < M * N; i++)
        C[i] = beta == 0.0f ? NAN : C0[i];
    uc_threads_init(2);
    uc_gemm_half(M, N, K, W, type, K, X, N, 1, beta, C, rsc, csc);
    assert_memory_equal(C, C1, (size_t)(M * N) * sizeof *C);
    uc_threads_init(1);
    uc_bf16_force_widen(0);
    uc_free(Wf);
    uc_free(X);
    uc_free(C);
    uc_free(C0);
    uc_free(C1);
    uc_free(W);
}

static void shapes(int native, uc_half type)
{
    static const int64_t Ms[] = {1, 3, 4, 5, 129, 260};
    static const int64_t Ns[] = {1, 2, 17, 64, 65, 150};
    static const int64_t Ks[] = {1, 2, 7, 64, 333};
    for (size_t a = 0; a < UC_COUNT(Ms); a++)
        for (size_t b = 0; b < UC_COUNT(Ns); b++)
            for (size_t c = 0; c < UC_COUNT(Ks); c++) {
                check(Ms[a], Ns[b], Ks[c], type, native, 0.0f, Ns[b], 1);
                if (a == b) { /* beta, and C stored by columns */
                    check(Ms[a], Ns[b], Ks[c], type, native, 0.5f, Ns[b], 1);
                    check(Ms[a], Ns[b], Ks[c], type, native, 1.0f, 1, Ms[a]);
                }
            }
}

static void test_native(void **state)
{
    (void)state;
    uc_bf16_force_widen(0);
    if (!uc_bf16_native()) {
        print_message("this CPU has no AVX512_BF16: the vdpbf16ps path is not tested here\n");
        return;
    }
    shapes(1, UC_HALF_BF16);
}

static void test_widen(void **state)
{
    (void)state;
    shapes(0, UC_HALF_BF16);
    shapes(0, UC_HALF_F16);
}

/* uc_linear_half: out[M,N] = in[M,K] W[N,K]^T + b against the F64 sum. */
static void test_linear(void **state)
{
    (void)state;
    int64_t M = 37, K = 301, N = 70;
    float *in = randn(M * K, 1), *Wf = randn(N * K, 2), *b = randn(N, 3), *out = uc_alloc((size_t)(M * N), sizeof *out);
    uint16_t *W = uc_alloc((size_t)(N * K), sizeof *W);
    for (int64_t i = 0; i < N * K; i++)
        W[i] = uc_f32_to_bf16(Wf[i]);
    for (int native = 0; native < 2; native++) {
        uc_bf16_force_widen(!native);
        if (native && !uc_bf16_native())
            break;
        uc_linear_half(out, in, W, UC_HALF_BF16, b, M, K, N);
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double s = b[n], mag = fabs(b[n]);
                for (int64_t k = 0; k < K; k++) {
                    double x = in[m * K + k], w = uc_bf16_to_f32(W[n * K + k]);
                    s += w * (native ? uc_bf16_to_f32(uc_f32_to_bf16(in[m * K + k])) : x);
                    mag += fabs(w * x);
                }
                if (!(fabs(out[m * N + n] - s) <= 1e-5 * mag))
                    fail_msg("linear %s [%lld,%lld]: %.9g, expected %.9g", native ? "vdpbf16ps" : "widening",
                             (long long)m, (long long)n, out[m * N + n], s);
            }
    }
    uc_bf16_force_widen(0);
    uc_free(in);
    uc_free(Wf);
    uc_free(b);
    uc_free(out);
    uc_free(W);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_native),
        cmocka_unit_test(test_widen),
        cmocka_unit_test(test_linear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
