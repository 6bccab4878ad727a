/* test_ops.c - the kernels of ops.h against plain double-precision
 * references: products of every shape class (few rows through BLIS, the
 * nn.Linear path on AVX-512 with partial register tiles and k blocks),
 * strided operands, bias and beta; the same bytes at 1 and 2 threads;
 * nested parallel loops; layernorm, activations and one attention head;
 * the AVX-512 paths against the AVX2 ones (uc_cpu_cap). */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/nn/cpu.h"
#include "libcommon/nn/norm.h"
#include "libcommon/nn/ops.h"
#include "libcommon/nn/rng.h"

#include "tests/unit/randn.h"

/* |got - C[i][j]| within a bound scaled by sum_k |a||b|, C = alpha A B +
 * beta C0 in double; A[i][k] = A[i*rsa + k*csa], B[k][j] = B[k*rsb + j*csb]. */
static void check_product(const float *got, int64_t ldc, int64_t M, int64_t N, int64_t K, float alpha,
                          const float *A, int64_t rsa, int64_t csa, const float *B, int64_t rsb, int64_t csb,
                          float beta, const float *C0)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0, mag = 0;
            for (int64_t k = 0; k < K; k++) {
                double p = (double)A[i * rsa + k * csa] * B[k * rsb + j * csb];
                s += p;
                mag += fabs(p);
            }
            double want = alpha * s + (beta != 0.0f ? beta * C0[i * ldc + j] : 0.0);
            double tol = 1e-6 * (fabs(alpha) * mag + fabs(beta * (C0 ? C0[i * ldc + j] : 0))) + 1e-30;
            if (!(fabs(got[i * ldc + j] - want) <= tol))
                fail_msg("M=%lld N=%lld K=%lld [%lld,%lld]: %g, expected %g", (long long)M, (long long)N,
                         (long long)K, (long long)i, (long long)j, got[i * ldc + j], want);
        }
}

/* uc_linear over shapes around the register tile (32 x 12 on AVX-512),
 * the row threshold of the nn.Linear path (96), the k block (384) and the
 * work chunk (96 rows of W); with and without bias; output prefilled with
 * NaN, which beta 0 must not read. */
static void test_linear_shapes(void **state)
{
    (void)state;
    static const int64_t Ms[] = {1, 6, 95, 96, 97, 154, 203};
    static const int64_t Ns[] = {1, 31, 33, 96, 97, 250};
    static const int64_t Ks[] = {1, 17, 384, 400, 800};
    for (int threads = 1; threads <= 2; threads++) {
        uc_threads_init(threads);
        for (size_t a = 0; a < UC_COUNT(Ms); a++)
            for (size_t b = 0; b < UC_COUNT(Ns); b++)
                for (size_t c = 0; c < UC_COUNT(Ks); c++) {
                    int64_t M = Ms[a], N = Ns[b], K = Ks[c];
                    float *in = randn(M * K, 1), *W = randn(N * K, 2), *bias = randn(N, 3);
                    float *out = uc_alloc((size_t)(M * N), sizeof *out);
                    for (int with_bias = 0; with_bias < 2; with_bias++) {
                        for (int64_t i = 0; i < M * N; i++)
                            out[i] = NAN;
                        uc_linear(out, in, W, with_bias ? bias : NULL, M, K, N);
                        float *c0 = NULL;
                        if (with_bias) { /* the bias as beta * C0 */
                            c0 = uc_alloc((size_t)(M * N), sizeof *c0);
                            for (int64_t i = 0; i < M; i++)
                                memcpy(c0 + i * N, bias, (size_t)N * sizeof *c0);
                        }
                        check_product(out, N, M, N, K, 1.0f, in, K, 1, W, 1, K, with_bias ? 1.0f : 0.0f, c0);
                        uc_free(c0);
                    }
                    uc_free(in);
                    uc_free(W);
                    uc_free(bias);
                    uc_free(out);
                }
    }
    uc_threads_init(1);
}

/* uc_gemm with strided operands (row strides beyond the width, A
 * transposed, B row-major), beta 1 accumulating, at both thread counts. */
static void test_gemm_strides(void **state)
{
    (void)state;
    const int64_t M = 130, N = 150, K = 420, pad = 5;
    float *A = randn((M + pad) * (K + pad), 4), *B = randn((K + pad) * (N + pad), 5);
    float *C0 = randn(M * (N + pad), 6), *C = uc_alloc((size_t)(M * (N + pad)), sizeof *C);
    struct {
        int64_t rsa, csa, rsb, csb;
    } cases[] = {
        {K + pad, 1, 1, K + pad}, /* B = W^T with a padded row stride: the nn.Linear path */
        {1, M + pad, 1, K + pad}, /* A transposed */
        {K + pad, 1, N + pad, 1}, /* B row-major */
    };
    for (int threads = 1; threads <= 2; threads++) {
        uc_threads_init(threads);
        for (size_t c = 0; c < UC_COUNT(cases); c++) {
            memcpy(C, C0, (size_t)(M * (N + pad)) * sizeof *C);
            uc_gemm(M, N, K, A, cases[c].rsa, cases[c].csa, B, cases[c].rsb, cases[c].csb, 1.0f, C, N + pad);
            check_product(C, N + pad, M, N, K, 1.0f, A, cases[c].rsa, cases[c].csa, B, cases[c].rsb, cases[c].csb,
                          1.0f, C0);
            for (int64_t i = 0; i < M; i++) /* the padding columns untouched */
                for (int64_t j = N; j < N + pad; j++)
                    assert_true(C[i * (N + pad) + j] == C0[i * (N + pad) + j]);
        }
    }
    uc_threads_init(1);
    uc_free(A);
    uc_free(B);
    uc_free(C0);
    uc_free(C);
}

/* The same bytes whatever the thread count, for a CLIP-sized product. */
static void test_threads_same_bytes(void **state)
{
    (void)state;
    const int64_t M = 154, K = 768, N = 2304;
    float *in = randn(M * K, 7), *W = randn(N * K, 8), *bias = randn(N, 9);
    float *o1 = uc_alloc((size_t)(M * N), sizeof *o1), *o2 = uc_alloc((size_t)(M * N), sizeof *o2);
    uc_threads_init(1);
    uc_linear(o1, in, W, bias, M, K, N);
    uc_threads_init(2);
    uc_linear(o2, in, W, bias, M, K, N);
    uc_threads_init(1);
    assert_memory_equal(o1, o2, (size_t)(M * N) * sizeof *o1);
    uc_free(in);
    uc_free(W);
    uc_free(bias);
    uc_free(o1);
    uc_free(o2);
}

/* A parallel loop started inside another runs inline: every inner item
 * exactly once per outer item. */
static atomic_int hits[64][64];

static void inner(void *ctx, int64_t i0, int64_t i1)
{
    int64_t o = *(const int64_t *)ctx;
    for (int64_t i = i0; i < i1; i++)
        atomic_fetch_add(&hits[o][i], 1);
}

static void outer(void *ctx, int64_t i0, int64_t i1)
{
    (void)ctx;
    for (int64_t o = i0; o < i1; o++)
        uc_parallel_for(64, 1e9, inner, &o);
}

static void test_nested_parallel(void **state)
{
    (void)state;
    uc_threads_init(2);
    memset(hits, 0, sizeof hits);
    uc_parallel_for(64, 1e9, outer, NULL);
    uc_threads_init(1);
    for (int o = 0; o < 64; o++)
        for (int i = 0; i < 64; i++)
            assert_int_equal(atomic_load(&hits[o][i]), 1);
}

static void test_layernorm_activations(void **state)
{
    (void)state;
    const int64_t M = 300, D = 768, n = M * D;
    float *x = randn(n, 10), *w = randn(D, 11), *b = randn(D, 12), *y = uc_alloc((size_t)n, sizeof *y);
    uc_threads_init(2);
    uc_layernorm(y, x, w, b, M, D, 1e-5f);
    for (int64_t i = 0; i < M; i++) {
        double mean = 0, var = 0;
        for (int64_t k = 0; k < D; k++)
            mean += x[i * D + k];
        mean /= (double)D;
        for (int64_t k = 0; k < D; k++)
            var += (x[i * D + k] - mean) * (x[i * D + k] - mean);
        var /= (double)D;
        for (int64_t k = 0; k < D; k++) {
            double want = (x[i * D + k] - mean) / sqrt(var + 1e-5) * w[k] + b[k];
            assert_true(fabs(y[i * D + k] - want) <= 1e-5 * (1 + fabs(want)));
        }
    }
    float *g = uc_alloc((size_t)n, sizeof *g), *q = uc_alloc((size_t)n, sizeof *q), *s = uc_alloc((size_t)n, sizeof *s);
    memcpy(g, x, (size_t)n * sizeof *g);
    memcpy(q, x, (size_t)n * sizeof *q);
    memcpy(s, x, (size_t)n * sizeof *s);
    uc_gelu(g, n);
    uc_quick_gelu(q, n);
    uc_silu(s, n);
    uc_threads_init(1);
    for (int64_t i = 0; i < n; i++) {
        double v = x[i];
        assert_true(fabs(g[i] - 0.5 * v * (1 + erf(v / sqrt(2.0)))) <= 1e-6 * (1 + fabs(v)));
        assert_true(fabs(q[i] - v / (1 + exp(-1.702 * v))) <= 1e-6 * (1 + fabs(v)));
        assert_true(fabs(s[i] - v / (1 + exp(-v))) <= 1e-6 * (1 + fabs(v)));
    }
    uc_free(x);
    uc_free(w);
    uc_free(b);
    uc_free(y);
    uc_free(g);
    uc_free(q);
    uc_free(s);
}

/* Softmax rows: masked (-inf) entries exactly 0, a fully masked row all
 * 0, the rest as exp(x - max) / sum in double. */
static void test_softmax(void **state)
{
    (void)state;
    const int64_t M = 4, N = 77;
    float *x = randn(M * N, 14), *y = uc_alloc((size_t)(M * N), sizeof *y);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++)
            if (i == 3 || j > 20 + i * 10)
                x[i * N + j] = -INFINITY;
    memcpy(y, x, (size_t)(M * N) * sizeof *y);
    uc_softmax_rows(y, M, N);
    for (int64_t i = 0; i < M; i++) {
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j < N; j++)
            mx = fmax(mx, x[i * N + j]);
        for (int64_t j = 0; j < N && i < 3; j++)
            sum += exp(x[i * N + j] - mx);
        for (int64_t j = 0; j < N; j++) {
            if (x[i * N + j] == -INFINITY) {
                assert_true(y[i * N + j] == 0.0f);
                continue;
            }
            double want = exp(x[i * N + j] - mx) / sum;
            assert_true(fabs(y[i * N + j] - want) <= 1e-6 * want);
        }
    }
    uc_free(x);
    uc_free(y);
}

/* One causal attention head read in place from a fused QKV buffer, long
 * enough (Tq >= 96) for q k^T to take the nn.Linear path; scores scratch
 * given or per thread. */
static void test_attention_head(void **state)
{
    (void)state;
    const int64_t T = 130, dh = 64, W = 2 * dh;
    float *qkv = randn(T * 3 * W, 13), *mask = uc_alloc((size_t)(T * T), sizeof *mask);
    float *o1 = uc_alloc((size_t)(T * W), sizeof *o1), *o2 = uc_alloc((size_t)(T * W), sizeof *o2);
    float *scores = uc_alloc((size_t)(T * T), sizeof *scores);
    for (int64_t i = 0; i < T; i++)
        for (int64_t j = 0; j < T; j++)
            mask[i * T + j] = j > i ? -INFINITY : 0.0f;
    const float scale = 0.125f, *q = qkv + dh, *k = q + W, *v = q + 2 * W; /* head 1 */
    uc_threads_init(2);
    uc_attention_head(o1 + dh, W, q, 3 * W, k, 3 * W, v, 3 * W, T, T, dh, scale, mask, scores);
    uc_attention_head(o2 + dh, W, q, 3 * W, k, 3 * W, v, 3 * W, T, T, dh, scale, mask, NULL);
    uc_threads_init(1);
    for (int64_t i = 0; i < T; i++) {
        double p[130], mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= i; j++) {
            double s = 0;
            for (int64_t d = 0; d < dh; d++)
                s += (double)q[i * 3 * W + d] * k[j * 3 * W + d];
            p[j] = s * scale;
            mx = fmax(mx, p[j]);
        }
        for (int64_t j = 0; j <= i; j++)
            sum += p[j] = exp(p[j] - mx);
        for (int64_t d = 0; d < dh; d++) {
            double want = 0;
            for (int64_t j = 0; j <= i; j++)
                want += p[j] / sum * v[j * 3 * W + d];
            assert_true(fabs(o1[i * W + dh + d] - want) <= 1e-5 * (1 + fabs(want)));
        }
    }
    for (int64_t i = 0; i < T; i++)
        assert_memory_equal(o1 + i * W + dh, o2 + i * W + dh, (size_t)dh * sizeof *o1);
    uc_free(qkv);
    uc_free(mask);
    uc_free(o1);
    uc_free(o2);
    uc_free(scores);
}

/* got within tol * (1 + |want|) of want, element by element */
static void near(const float *got, const float *want, int64_t n, double tol, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (!(fabs((double)got[i] - want[i]) <= tol * (1 + fabs((double)want[i]))))
            fail_msg("%s [%lld]: %g at this CPU's level, %g at AVX2", what, (long long)i, got[i], want[i]);
}

/* Each kernel with an AVX-512 path gives, at this CPU's level, what its
 * AVX2 path gives (the same on a CPU without AVX-512): LayerNorm, both
 * softmaxes, QuickGELU, GroupNorm with FiLM and SiLU, the nn.Linear
 * products. run(level) writes every output into out[level]. */
static void levels_run(float *out, const float *x, const float *w, const float *b)
{
    uc_layernorm(out, x, w, b, 37, 768, 1e-5f); /* out[0, 37 * 768) */
    float *s = out + 37 * 768;
    memcpy(s, x, 5 * 77 * sizeof *s);
    uc_softmax_rows(s, 5, 77);
    float *sb = s + 5 * 77;
    memcpy(sb, x, 40 * 300 * sizeof *sb);
    uc_softmax_rows_blocked(sb, 40, 300);
    float *q = sb + 40 * 300;
    memcpy(q, x, 5000 * sizeof *q);
    uc_quick_gelu(q, 5000);
    float *gn = q + 5000; /* C 64, B 2, hw 300; film [B, 2C] */
    uc_group_norm(x, gn, 64, 2, 300, 32, 1e-5, w, b, x + 40000, 1);
    float *lin = gn + 64 * 2 * 300;
    uc_linear(lin, x, w, b, 130, 200, 150);
}

static void test_levels_agree(void **state)
{
    (void)state;
    const int64_t n = 37 * 768 + 5 * 77 + 40 * 300 + 5000 + 64 * 2 * 300 + 130 * 150;
    float *x = randn(60000, 20), *w = randn(40000, 21), *b = randn(768, 22);
    float *native = uc_alloc((size_t)n, sizeof *native), *avx2 = uc_alloc((size_t)n, sizeof *avx2);
    uc_threads_init(2);
    levels_run(native, x, w, b);
    uc_cpu_cap(UC_CPU_AVX2);
    levels_run(avx2, x, w, b);
    uc_cpu_cap(UC_CPU_AVX512BF16);
    near(native, avx2, 37 * 768, 1e-5, "layernorm");
    near(native + 37 * 768, avx2 + 37 * 768, 5 * 77 + 40 * 300 + 5000, 1e-6, "softmax, quick_gelu");
    int64_t o = n - 64 * 2 * 300 - 130 * 150;
    near(native + o, avx2 + o, 64 * 2 * 300, 1e-5, "group_norm");
    o = n - 130 * 150;
    near(native + o, avx2 + o, 130 * 150, 1e-5, "linear");
    if (uc_cpu_level() >= UC_CPU_AVX512) /* the cap took the other paths: exp512 and expf differ in some ulp */
        assert_true(memcmp(native, avx2, (size_t)n * sizeof *native) != 0);
    uc_threads_init(1);
    uc_free(x);
    uc_free(w);
    uc_free(b);
    uc_free(native);
    uc_free(avx2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear_shapes),        cmocka_unit_test(test_gemm_strides),
        cmocka_unit_test(test_threads_same_bytes),   cmocka_unit_test(test_nested_parallel),
        cmocka_unit_test(test_layernorm_activations), cmocka_unit_test(test_softmax),
        cmocka_unit_test(test_attention_head),       cmocka_unit_test(test_levels_agree),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
