/* ops.c - see ops.h */
#define _GNU_SOURCE
#include "ops.h"

#include <blis.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int nthreads = 1;

/* BLIS 0.9 (Debian 12) knows no Zen 4: on an AVX-512 AMD processor it falls
 * back to its generic kernels, five times slower than its Skylake-X ones,
 * which run there at full speed. Choose those before BLIS initialises,
 * unless the user chose an architecture. */
static void choose_blis_kernels(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    static int done;
    if (done++ || getenv("BLIS_ARCH_TYPE"))
        return;
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
        char id[16];
        snprintf(id, sizeof id, "%d", (int)BLIS_ARCH_SKX);
        setenv("BLIS_ARCH_TYPE", id, 0);
    }
#endif
}

int uc_threads_init(int n)
{
    choose_blis_kernels();
    if (n <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        n = c > 0 ? (int)c : 1;
    }
    nthreads = n;
    bli_thread_set_num_threads(n);
    return n;
}

int uc_threads(void) { return nthreads; }

/* Products below this many multiply-adds run on one thread: splitting them
 * costs more in synchronisation than it saves (and on a busy machine far
 * more). */
#define UC_GEMM_SERIAL_FLOPS 4194304.0

static void sgemm(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t rsa, int64_t csa,
                  const float *B, int64_t rsb, int64_t csb, float beta, float *C, int64_t ldc)
{
    rntm_t rntm = BLIS_RNTM_INITIALIZER;
    bli_rntm_set_num_threads((double)M * (double)N * (double)K < UC_GEMM_SERIAL_FLOPS ? 1 : nthreads, &rntm);
    bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, M, N, K, &alpha, (float *)A, rsa, csa, (float *)B, rsb,
                 csb, &beta, C, ldc, 1, NULL, &rntm);
}

void uc_gemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t rsa, int64_t csa, const float *B,
             int64_t rsb, int64_t csb, float beta, float *C, int64_t ldc)
{
    if (M == 0 || N == 0)
        return;
    if (K == 0) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                C[i * ldc + j] *= beta;
        return;
    }
    sgemm(M, N, K, 1.0f, A, rsa, csa, B, rsb, csb, beta, C, ldc);
}

void uc_linear(float *out, const float *in, const float *W, const float *b, int64_t M, int64_t K, int64_t N)
{
    if (b) {
        for (int64_t i = 0; i < M; i++)
            memcpy(out + i * N, b, (size_t)N * sizeof *out);
    }
    uc_gemm(M, N, K, in, K, 1, W, 1, K, b ? 1.0f : 0.0f, out, N);
}

void uc_matmul(float *out, const float *in, const float *P, int64_t M, int64_t K, int64_t N)
{
    uc_gemm(M, N, K, in, K, 1, P, N, 1, 0.0f, out, N);
}

void uc_layernorm(float *out, const float *in, const float *w, const float *b, int64_t M, int64_t D, float eps)
{
    for (int64_t i = 0; i < M; i++) {
        const float *x = in + i * D;
        float *y = out + i * D;
        double mean = 0, var = 0;
        for (int64_t j = 0; j < D; j++)
            mean += x[j];
        mean /= (double)D;
        for (int64_t j = 0; j < D; j++) {
            double d = x[j] - mean;
            var += d * d;
        }
        var /= (double)D;
        float m = (float)mean, rs = (float)(1.0 / sqrt(var + eps));
        for (int64_t j = 0; j < D; j++)
            y[j] = (x[j] - m) * rs * (w ? w[j] : 1.0f) + (b ? b[j] : 0.0f);
    }
}

void uc_gelu(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

void uc_quick_gelu(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
}

void uc_silu(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] / (1.0f + expf(-x[i]));
}

void uc_add(float *x, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] += y[i];
}

void uc_softmax_rows(float *x, int64_t M, int64_t N)
{
    for (int64_t i = 0; i < M; i++) {
        float *r = x + i * N, mx = -INFINITY;
        for (int64_t j = 0; j < N; j++)
            mx = r[j] > mx ? r[j] : mx;
        if (mx == -INFINITY) { /* fully masked row: torch gives NaN; keep 0 */
            memset(r, 0, (size_t)N * sizeof *r);
            continue;
        }
        float s = 0;
        for (int64_t j = 0; j < N; j++) {
            r[j] = expf(r[j] - mx);
            s += r[j];
        }
        float inv = 1.0f / s;
        for (int64_t j = 0; j < N; j++)
            r[j] *= inv;
    }
}

void uc_attention_head(float *out, int64_t ldo, const float *q, int64_t ldq, const float *k, int64_t ldk,
                       const float *v, int64_t ldv, int64_t Tq, int64_t Tk, int64_t dh, float scale,
                       const float *bias, float *scores)
{
    if (bias)
        memcpy(scores, bias, (size_t)(Tq * Tk) * sizeof *scores);
    /* scores = scale * q k^T (+ bias) */
    sgemm(Tq, Tk, dh, scale, q, ldq, 1, k, 1, ldk, bias ? 1.0f : 0.0f, scores, Tk);
    uc_softmax_rows(scores, Tq, Tk);
    sgemm(Tq, dh, Tk, 1.0f, scores, Tk, 1, v, ldv, 1, 0.0f, out, ldo);
}

void uc_timestep_embedding(float *out, double t, int64_t dim)
{
    int64_t half = dim / 2;
    for (int64_t i = 0; i < half; i++) {
        /* torch: freqs = exp(-log(10000) * arange(half) / half) in float32;
         * args = t * freqs in float32 */
        float f = expf(-logf(10000.0f) * (float)i / (float)half);
        float a = (float)t * f;
        out[i] = cosf(a);
        out[half + i] = sinf(a);
    }
    if (dim % 2)
        out[dim - 1] = 0.0f;
}
