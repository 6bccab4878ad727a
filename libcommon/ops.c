/* ops.c - see ops.h */
#define _GNU_SOURCE
#include "ops.h"

#include "common.h"

#include <blis.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int nthreads = 1;
static cntx_t *small_cntx; /* kernels for products with few rows, or NULL */

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
        bli_init();
        small_cntx = bli_gks_lookup_ind_cntx(BLIS_ARCH_ZEN3, BLIS_NAT);
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
    bli_thread_set_num_threads(1); /* every parallel loop, GEMMs included, runs on the pool below */
    return n;
}

int uc_threads(void) { return nthreads; }

/* ---- the thread pool ----------------------------------------------------
 *
 * One pool for all parallel work: BLIS itself runs single-threaded, and a
 * large product is split into column blocks that the pool's threads take
 * one at a time. Idle threads block on a condition variable instead of
 * spinning, so a busy machine slows a run down gracefully rather than
 * stalling it, and items are dealt out dynamically so a thread that loses
 * its core does not hold the others up. Each item is computed the same way
 * whichever thread takes it: results do not depend on the thread count. */

#define MAX_POOL 64

static struct {
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    int workers;      /* threads started besides the caller */
    uint64_t gen;     /* job number */
    int pending;      /* workers still inside the current job */
    uc_par_fn fn;
    void *ctx;
    int64_t n, slices;
    atomic_llong next; /* next slice to take */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, NULL, NULL, 0, 0, 0};

/* Take contiguous slices of [0, n) until none is left. */
static void take_slices(uc_par_fn fn, void *ctx, int64_t n, int64_t slices)
{
    for (;;) {
        int64_t s = (int64_t)atomic_fetch_add(&pool.next, 1);
        if (s >= slices)
            return;
        int64_t i0 = n * s / slices, i1 = n * (s + 1) / slices;
        if (i1 > i0)
            fn(ctx, i0, i1);
    }
}

static void *pool_worker(void *arg)
{
    (void)arg;
    uint64_t seen = 0;
    pthread_mutex_lock(&pool.mu);
    for (;;) {
        while (pool.gen == seen)
            pthread_cond_wait(&pool.go, &pool.mu);
        seen = pool.gen;
        uc_par_fn fn = pool.fn;
        void *ctx = pool.ctx;
        int64_t n = pool.n, slices = pool.slices;
        pthread_mutex_unlock(&pool.mu);
        take_slices(fn, ctx, n, slices);
        pthread_mutex_lock(&pool.mu);
        if (--pool.pending == 0)
            pthread_cond_signal(&pool.done);
    }
    return NULL;
}

void uc_parallel_for(int64_t n, double work, uc_par_fn fn, void *ctx)
{
    int want = UC_MIN(nthreads, MAX_POOL) - 1; /* workers besides the caller */
    if (want <= 0 || n < 2 || work < 2e5) {
        fn(ctx, 0, n);
        return;
    }
    pthread_mutex_lock(&pool.mu);
    while (pool.workers < want) {
        pthread_t th;
        if (pthread_create(&th, NULL, pool_worker, NULL))
            break;
        pthread_detach(th);
        pool.workers++;
    }
    if (pool.workers == 0) {
        pthread_mutex_unlock(&pool.mu);
        fn(ctx, 0, n);
        return;
    }
    int64_t slices = UC_MIN(n, 4 * (int64_t)(pool.workers + 1)); /* a few per thread, for balance */
    pool.fn = fn, pool.ctx = ctx, pool.n = n, pool.slices = slices;
    atomic_store(&pool.next, 0);
    pool.pending = pool.workers;
    pool.gen++;
    pthread_cond_broadcast(&pool.go);
    pthread_mutex_unlock(&pool.mu);
    take_slices(fn, ctx, n, slices);
    pthread_mutex_lock(&pool.mu);
    while (pool.pending > 0)
        pthread_cond_wait(&pool.done, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
}

/* ---- matrix products ---------------------------------------------------- */

/* The Skylake-X kernels pack operands through BLIS's reference code, which
 * dominates products with few rows (the prior's steps have 6). Its Zen 3
 * (AVX2) kernels handle those far better, so with the Skylake-X choice above
 * a product of fewer than SMALL_ROWS rows runs with the Zen 3 context. The
 * choice depends on the shape alone: results stay deterministic. */
#define SMALL_ROWS 96

static void sgemm1(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t rsa, int64_t csa,
                   const float *B, int64_t rsb, int64_t csb, float beta, float *C, int64_t ldc)
{
    rntm_t rntm = BLIS_RNTM_INITIALIZER;
    bli_rntm_set_num_threads(1, &rntm);
    bli_sgemm_ex(BLIS_NO_TRANSPOSE, BLIS_NO_TRANSPOSE, M, N, K, &alpha, (float *)A, rsa, csa, (float *)B, rsb,
                 csb, &beta, C, ldc, 1, M < SMALL_ROWS ? small_cntx : NULL, &rntm);
}

typedef struct {
    int64_t M, N, K, block;
    float alpha, beta;
    const float *A, *B;
    int64_t rsa, csa, rsb, csb, ldc;
    float *C;
} gemm_job;

static void gemm_block(void *ctx, int64_t i0, int64_t i1)
{
    const gemm_job *g = ctx;
    for (int64_t i = i0; i < i1; i++) {
        int64_t j0 = i * g->block, nj = UC_MIN(g->block, g->N - j0);
        sgemm1(g->M, nj, g->K, g->alpha, g->A, g->rsa, g->csa, g->B + j0 * g->csb, g->rsb, g->csb, g->beta,
               g->C + j0, g->ldc);
    }
}

/* Products below this many multiply-adds are not split: synchronising
 * costs more than it saves. */
#define UC_GEMM_SERIAL_FLOPS 4194304.0

static void sgemm(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t rsa, int64_t csa,
                  const float *B, int64_t rsb, int64_t csb, float beta, float *C, int64_t ldc)
{
    double flops = (double)M * (double)N * (double)K;
    if (nthreads <= 1 || flops < UC_GEMM_SERIAL_FLOPS || N < 64) {
        sgemm1(M, N, K, alpha, A, rsa, csa, B, rsb, csb, beta, C, ldc);
        return;
    }
    /* column blocks: a few per thread for balance, multiples of 32 wide */
    int64_t blocks = 4 * (int64_t)nthreads, block = (N + blocks - 1) / blocks;
    block = UC_MAX(64, (block + 31) / 32 * 32);
    gemm_job g = {M, N, K, block, alpha, beta, A, B, rsa, csa, rsb, csb, ldc, C};
    uc_parallel_for((N + block - 1) / block, flops, gemm_block, &g);
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
