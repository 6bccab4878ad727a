/* ops.c - see ops.h */
#define _GNU_SOURCE
#include "libcommon/nn/ops.h"

#include "formats/base.h"
#include "libcommon/nn/cpu.h"
#include "libcommon/nn/exp.h"

#include <blis.h>
#ifdef UC_HAVE_X86
#include <immintrin.h>
#endif
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int nthreads = 1;
static cntx_t *small_cntx; /* kernels for products with few rows, or NULL */

/* Our AVX-512 paths run (cpu.h) */
static inline int avx512(void) { return uc_cpu_level() >= UC_CPU_AVX512; }

#ifdef UC_HAVE_X86
/* The Skylake-X micro-kernel for the products with nn.Linear weights (see
 * "products with nn.Linear weights" below); ukr NULL when BLIS runs them. */
static struct {
    sgemm_ukr_ft ukr;
    cntx_t *cntx;
    int64_t mr, nr, kc; /* its register tile (mr x nr) and k block */
} lin;
static void lin_init(void);
#endif

/* BLIS 0.9 (Debian 12) knows no Zen 4: on an AVX-512 AMD processor it falls
 * back to its generic kernels, five times slower than its Skylake-X ones,
 * which run there at full speed. Choose those before BLIS initialises,
 * unless the user chose an architecture; when UNCLIP_CPU caps the level at
 * AVX2 on such a CPU, BLIS's Haswell kernels. */
static void choose_blis_kernels(void)
{
#ifdef UC_HAVE_X86
    static int done;
    if (done++ || getenv("BLIS_ARCH_TYPE"))
        return;
    char id[16];
    if (avx512()) {
        snprintf(id, sizeof id, "%d", (int)BLIS_ARCH_SKX);
        setenv("BLIS_ARCH_TYPE", id, 0);
        bli_init();
        small_cntx = bli_gks_lookup_ind_cntx(BLIS_ARCH_ZEN3, BLIS_NAT);
        lin_init();
    } else if (__builtin_cpu_supports("avx512f")) {
        snprintf(id, sizeof id, "%d", (int)BLIS_ARCH_HASWELL);
        setenv("BLIS_ARCH_TYPE", id, 0);
    }
#endif
}

int uc_threads_init(int n)
{
    uc_cpu_level(); /* read once, before the threads start */
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

/* Set while a thread runs items of a parallel loop: a loop started from
 * inside one runs inline, on the thread that reached it. */
static _Thread_local int in_pool;

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
    in_pool = 1;
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
    if (want <= 0 || n < 2 || work < 2e5 || in_pool) {
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
    in_pool = 1;
    take_slices(fn, ctx, n, slices);
    in_pool = 0;
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

/* ---- products with nn.Linear weights (AVX-512) -----------------------------
 *
 * C[M,N] = alpha A[M,K] W[N,K]^T + beta C, A and C row-major, W as nn.Linear
 * stores it. BLIS's Skylake-X kernel takes W as its 32-row panels, and BLIS
 * packs those through its reference scal2m code, one strided element at a
 * time: a third of the time of a product with ~150 rows (the CLIP text
 * tower's). Here the same micro-kernel runs on panels packed with 16 x 16
 * AVX-512 transposes, each element of W packed once and A once per product
 * (not once per column block), the bias copied into C chunk by chunk. Work
 * items are fixed chunks of W's rows, each summed over the same k blocks
 * whichever thread takes it: results do not depend on the thread count. */

#define LIN_CHUNK 96 /* rows of W per work item */

/* A 64-byte aligned buffer of at least n floats, kept per thread. */
static float *thread_buffer(float **buf, size_t *cap, size_t n)
{
    if (n > *cap) {
        uc_free(*buf);
        *buf = uc_alloc_raw(n, sizeof(float));
        *cap = n;
    }
    return *buf;
}

#ifdef UC_HAVE_X86
static void lin_init(void)
{
    cntx_t *cx = bli_gks_query_cntx();
    lin.mr = bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_MR, cx);
    lin.nr = bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_NR, cx);
    lin.kc = bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_KC, cx);
    lin.cntx = cx;
    /* W's panels are the kernel's A side: aligned as it loads them, and C
     * column-stored for the kernel (C^T = W A^T) as it prefers */
    if (lin.mr % 16 == 0 && lin.nr >= 1 && lin.kc >= 16 && LIN_CHUNK % lin.mr == 0 &&
        !bli_cntx_l3_nat_ukr_prefers_rows_dt(BLIS_FLOAT, BLIS_GEMM_UKR, cx))
        lin.ukr = (sgemm_ukr_ft)bli_cntx_get_l3_nat_ukr_dt(BLIS_FLOAT, BLIS_GEMM_UKR, cx);
}

/* r[i][j] <- r[j][i]. Inlined and unrolled, so that r stays in registers. */
static inline __attribute__((always_inline)) UC_AVX512 void transpose16(__m512 r[16])
{
    __m512 t[16];
#pragma GCC unroll 16
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 16; i += 4) {
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 8; i++) {
        int k = i / 4 * 8 + i % 4;
        t[k] = _mm512_shuffle_f32x4(r[k], r[k + 4], 0x88);
        t[k + 4] = _mm512_shuffle_f32x4(r[k], r[k + 4], 0xDD);
    }
#pragma GCC unroll 16
    for (int i = 0; i < 8; i++) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xDD);
    }
}

/* X[rows, kc] (row stride ld) as panels of P rows, k-major:
 * dst[(i / P) * kc * P + k * P + i % P] = X[i][k], zero past the last row;
 * 16 x 16 tiles transposed in registers. */
UC_AVX512 static void pack_panels(float *dst, const float *X, int64_t ld, int64_t rows, int64_t kc, int64_t P)
{
    for (int64_t i0 = 0; i0 < rows; i0 += P, dst += kc * P)
        for (int64_t h = 0; h < P; h += 16) {
            int64_t n = UC_MAX(0, UC_MIN(16, rows - i0 - h)), lanes = UC_MIN(16, P - h);
            const float *x = X + (i0 + h) * ld;
            for (int64_t k = 0; k < kc; k += 16) {
                int64_t kk = UC_MIN(16, kc - k);
                __mmask16 load = (__mmask16)((1u << kk) - 1), store = (__mmask16)((1u << lanes) - 1);
                __m512 r[16];
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++) {
                    r[i] = _mm512_setzero_ps();
                    if (i < n) {
                        _mm_prefetch((const char *)(x + i * ld + k + 32), _MM_HINT_T0);
                        r[i] = _mm512_maskz_loadu_ps(load, x + i * ld + k);
                    }
                }
                transpose16(r);
#pragma GCC unroll 16
                for (int j = 0; j < 16; j++)
                    if (j < kk)
                        _mm512_mask_storeu_ps(dst + (k + j) * P + h, store, r[j]);
            }
        }
}

typedef struct {
    int64_t M, N, K, ldw, ldc, Mp; /* Mp: M rounded up to whole panels */
    float alpha, beta;
    float *pa;          /* A packed: one block of Mp x kc per k block */
    const float *W, *b; /* b: bias[N] that C starts from (beta ignored), or NULL */
    float *C;
} lin_job;

static void lin_chunks(void *ctx, int64_t c0, int64_t c1)
{
    const lin_job *j = ctx;
    static _Thread_local float *buf;
    static _Thread_local size_t cap;
    int64_t mr = lin.mr, nr = lin.nr;
    float *pw = thread_buffer(&buf, &cap, (size_t)(LIN_CHUNK * lin.kc));
    auxinfo_t aux;
    memset(&aux, 0, sizeof aux);
    for (int64_t c = c0; c < c1; c++) {
        int64_t n0 = c * LIN_CHUNK, nn = UC_MIN(LIN_CHUNK, j->N - n0);
        for (int64_t p0 = 0; p0 < j->K; p0 += lin.kc) {
            int64_t kc = UC_MIN(lin.kc, j->K - p0);
            float beta = p0 || j->b ? 1.0f : j->beta, alpha = j->alpha;
            float *pa = j->pa + p0 * j->Mp;
            for (int64_t i = 0; i < j->M && j->b && p0 == 0; i++)
                memcpy(j->C + i * j->ldc + n0, j->b + n0, (size_t)nn * sizeof(float));
            pack_panels(pw, j->W + n0 * j->ldw + p0, j->ldw, nn, kc, mr);
            for (int64_t i = 0; i < j->M; i += nr)
                for (int64_t r = 0; r < nn; r += mr) {
                    bli_auxinfo_set_next_a(pw + (r + mr) * kc, &aux);
                    bli_auxinfo_set_next_b(pa + (i + nr) * kc, &aux);
                    lin.ukr(UC_MIN(mr, nn - r), UC_MIN(nr, j->M - i), kc, &alpha, pw + r * kc, pa + i * kc,
                            &beta, j->C + i * j->ldc + n0 + r, 1, j->ldc, &aux, lin.cntx);
                }
        }
    }
}

static void lin_gemm(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda, const float *W,
                     int64_t ldw, const float *b, float beta, float *C, int64_t ldc)
{
    double flops = (double)M * (double)N * (double)K;
    static _Thread_local float *buf;
    static _Thread_local size_t cap;
    int64_t Mp = (M + lin.nr - 1) / lin.nr * lin.nr;
    float *pa = thread_buffer(&buf, &cap, (size_t)(Mp * K));
    for (int64_t p0 = 0; p0 < K; p0 += lin.kc)
        pack_panels(pa + p0 * Mp, A + p0, lda, M, UC_MIN(lin.kc, K - p0), lin.nr);
    lin_job j = {M, N, K, ldw, ldc, Mp, alpha, beta, pa, W, b, C};
    int64_t chunks = (N + LIN_CHUNK - 1) / LIN_CHUNK;
    if (flops < UC_GEMM_SERIAL_FLOPS)
        lin_chunks(&j, 0, chunks);
    else
        uc_parallel_for(chunks, flops, lin_chunks, &j);
}
#endif

/* ---- the micro-kernel, for callers that pack their own panels ---------- */

static struct {
    int ready, off;
    sgemm_ukr_ft ukr;
    cntx_t *cntx;
    int64_t mr, nr, kc;
} uk;

int uc_ukr_dims(int64_t *mr, int64_t *nr, int64_t *kc)
{
    choose_blis_kernels();
    if (!uk.ready) {
        cntx_t *cx = bli_gks_query_cntx();
        uk.mr = bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_MR, cx);
        uk.nr = bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_NR, cx);
        uk.kc = bli_cntx_get_blksz_def_dt(BLIS_FLOAT, BLIS_KC, cx);
        uk.cntx = cx;
        /* A's panels are loaded as whole vectors (aligned, 16 floats a
         * row at least) and C is best column-stored: the layout the
         * callers build; other kernels are not used */
        if (uk.mr % 16 == 0 && uk.nr >= 1 && uk.nr <= 16 && uk.kc >= 16 &&
            !bli_cntx_l3_nat_ukr_prefers_rows_dt(BLIS_FLOAT, BLIS_GEMM_UKR, cx) && !getenv("UNCLIP_NO_UKR"))
            uk.ukr = (sgemm_ukr_ft)bli_cntx_get_l3_nat_ukr_dt(BLIS_FLOAT, BLIS_GEMM_UKR, cx);
        uk.ready = 1;
    }
    *mr = uk.mr, *nr = uk.nr, *kc = uk.kc;
    return uk.ukr && !uk.off ? 0 : -1;
}

void uc_ukr_disable(int off) { uk.off = off; }

void uc_ukr(int64_t m, int64_t n, int64_t k, const float *a, const float *b, float beta, float *c, int64_t rsc,
            int64_t csc, const float *next_a, const float *next_b)
{
    float alpha = 1.0f;
    auxinfo_t aux;
    memset(&aux, 0, sizeof aux);
    bli_auxinfo_set_next_a((void *)next_a, &aux);
    bli_auxinfo_set_next_b((void *)next_b, &aux);
    uk.ukr(m, n, k, &alpha, (float *)a, (float *)b, &beta, c, rsc, csc, &aux, uk.cntx);
}

static void sgemm(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t rsa, int64_t csa,
                  const float *B, int64_t rsb, int64_t csb, float beta, float *C, int64_t ldc)
{
    double flops = (double)M * (double)N * (double)K;
#ifdef UC_HAVE_X86
    if (lin.ukr && avx512() && M >= SMALL_ROWS && csa == 1 && rsb == 1) { /* B = W^T, W [N, K] rows contiguous */
        lin_gemm(M, N, K, alpha, A, rsa, B, csb, NULL, beta, C, ldc);
        return;
    }
#endif
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
#ifdef UC_HAVE_X86
    if (lin.ukr && avx512() && M >= SMALL_ROWS && N > 0 && K > 0) { /* the bias copied chunk by chunk, in the parallel loop */
        lin_gemm(M, N, K, 1.0f, in, K, W, K, b, 0.0f, out, N);
        return;
    }
#endif
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

typedef struct {
    float *out;
    const float *in, *w, *b;
    int64_t D;
    float eps;
} ln_job;

#ifdef UC_HAVE_X86
/* dsum's sum over x[0, n / 8 * 8), in eight lanes */
UC_AVX512 static double dsum8(const float *x, int64_t n, double c, int square)
{
    __m512d v = _mm512_setzero_pd();
    for (int64_t k = 0; k + 8 <= n; k += 8) {
        __m512d d = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_loadu_ps(x + k)), _mm512_set1_pd(c));
        v = square ? _mm512_fmadd_pd(d, d, v) : _mm512_add_pd(v, d);
    }
    return _mm512_reduce_add_pd(v);
}
#endif

/* Sum over x[0, n) of x - c (square 0) or (x - c)^2 (square 1), in double. */
static double dsum(const float *x, int64_t n, double c, int square)
{
    double s = 0;
    int64_t k = 0;
#ifdef UC_HAVE_X86
    if (avx512()) {
        s = dsum8(x, n, c, square);
        k = n / 8 * 8;
    }
#endif
    for (; k < n; k++)
        s += square ? (x[k] - c) * (x[k] - c) : x[k] - c;
    return s;
}

UC_INLINE void ln_body(void *ctx, int64_t i0, int64_t i1)
{
    const ln_job *j = ctx;
    int64_t D = j->D;
    for (int64_t i = i0; i < i1; i++) {
        const float *x = j->in + i * D;
        float *y = j->out + i * D;
        double mean = dsum(x, D, 0.0, 0) / (double)D, var = dsum(x, D, mean, 1) / (double)D;
        float m = (float)mean, rs = (float)(1.0 / sqrt(var + j->eps));
        for (int64_t k = 0; k < D; k++)
            y[k] = (x[k] - m) * rs * (j->w ? j->w[k] : 1.0f) + (j->b ? j->b[k] : 0.0f);
    }
}

UC_CLONE(ln_rows, ln_body)

void uc_layernorm(float *out, const float *in, const float *w, const float *b, int64_t M, int64_t D, float eps)
{
    ln_job j = {out, in, w, b, D, eps};
    uc_parallel_for(M, 4.0 * (double)(M * D), uc_pick(ln_rows), &j);
}

/* Element-wise functions, run over blocks of EW_BLOCK elements. */
#define EW_BLOCK 4096

typedef struct {
    float *x;
    int64_t n;
    int fn;
} ew_job;

enum { EW_GELU, EW_QUICK_GELU, EW_SILU };

#ifdef UC_HAVE_X86
/* e^x within about 1 ulp: x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two
 * parts), e^r by Cephes' expf polynomial, scaled by 2^n; x clamped so
 * that the result saturates to exactly 0 (e^-inf) or inf, NaN kept. */
UC_AVX512 static inline __m512 exp512(__m512 x)
{
    x = _mm512_max_ps(_mm512_set1_ps(-110.0f), _mm512_min_ps(_mm512_set1_ps(89.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    static const float c[] = {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f,
                              5.0000001201e-1f};
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    for (int i = 0; i < 5; i++)
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c[i]));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

/* x / (1 + e^(-1.702 x)) over x[0, n). */
UC_AVX512 static void quick_gelu_avx512(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xFFFF : (1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, x + i);
        __m512 e = exp512(_mm512_mul_ps(v, _mm512_set1_ps(-1.702f)));
        _mm512_mask_storeu_ps(x + i, m, _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e)));
    }
}

/* r[j] = e^(r[j] - mx) over r[0, n); returns their sum. */
UC_AVX512 static float exp_sum_avx512(float *r, int64_t n, float mx)
{
    __m512 vs = _mm512_setzero_ps();
    for (int64_t j = 0; j < n; j += 16) {
        __mmask16 m = (__mmask16)(n - j >= 16 ? 0xFFFF : (1u << (n - j)) - 1);
        __m512 e = exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, r + j), _mm512_set1_ps(mx)));
        _mm512_mask_storeu_ps(r + j, m, e);
        vs = _mm512_add_ps(vs, _mm512_maskz_mov_ps(m, e));
    }
    return _mm512_reduce_add_ps(vs);
}
#endif

static void ew_blocks(void *ctx, int64_t b0, int64_t b1)
{
    const ew_job *j = ctx;
    float *x = j->x;
    int64_t i1 = UC_MIN(j->n, b1 * EW_BLOCK);
#ifdef UC_HAVE_X86
    if (j->fn == EW_QUICK_GELU && avx512()) {
        quick_gelu_avx512(x + b0 * EW_BLOCK, i1 - b0 * EW_BLOCK);
        return;
    }
#endif
    for (int64_t i = b0 * EW_BLOCK; i < i1; i++)
        switch (j->fn) {
        case EW_GELU: x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f)); break;
        case EW_QUICK_GELU: x[i] = x[i] / (1.0f + expf(-1.702f * x[i])); break;
        default: x[i] = x[i] / (1.0f + expf(-x[i])); break;
        }
}

/* Split only from about 2e5 elements: below, waking a thread costs about
 * what it saves. */
static void elementwise(float *x, int64_t n, int fn)
{
    ew_job j = {x, n, fn};
    uc_parallel_for((n + EW_BLOCK - 1) / EW_BLOCK, (double)n, ew_blocks, &j);
}

void uc_gelu(float *x, int64_t n) { elementwise(x, n, EW_GELU); }
void uc_quick_gelu(float *x, int64_t n) { elementwise(x, n, EW_QUICK_GELU); }
void uc_silu(float *x, int64_t n) { elementwise(x, n, EW_SILU); }

void uc_add(float *x, const float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        x[i] += y[i];
}

/* One row of uc_softmax_rows; vec: exp by exp512. */
UC_INLINE void softmax_row(float *r, int64_t N, int vec)
{
    float mx = -INFINITY;
    for (int64_t j = 0; j < N; j++)
        mx = r[j] > mx ? r[j] : mx;
    if (mx == -INFINITY) { /* fully masked row: torch gives NaN; keep 0 */
        memset(r, 0, (size_t)N * sizeof *r);
        return;
    }
    float s = 0;
    int64_t j = 0;
#ifdef UC_HAVE_X86
    if (vec) {
        s = exp_sum_avx512(r, N, mx);
        j = N;
    }
#endif
    (void)vec;
    for (; j < N; j++) {
        r[j] = expf(r[j] - mx);
        s += r[j];
    }
    float inv = 1.0f / s;
    for (j = 0; j < N; j++)
        r[j] *= inv;
}

#ifdef UC_HAVE_X86
UC_AVX512 static void softmax_row_avx512(float *r, int64_t N) { softmax_row(r, N, 1); }
#endif

void uc_softmax_rows(float *x, int64_t M, int64_t N)
{
    for (int64_t i = 0; i < M; i++) {
#ifdef UC_HAVE_X86
        if (avx512()) {
            softmax_row_avx512(x + i * N, N);
            continue;
        }
#endif
        softmax_row(x + i * N, N, 0);
    }
}

/* The UNet's softmax (see ops.h). */
typedef struct {
    float *x;
    int64_t n;
} sm_job;

/* Rows i0..i1 of x[., n] in place; -inf entries give 0. */
UC_INLINE void softmax_body(void *ctx, int64_t i0, int64_t i1)
{
    const sm_job *j = ctx;
    int64_t n = j->n;
    for (int64_t r = i0; r < i1; r++) {
        float *x = j->x + r * n, mx[16], acc[16] = {0};
        int64_t i = 0;
        for (int k = 0; k < 16; k++)
            mx[k] = -INFINITY;
        for (; i + 16 <= n; i += 16)
            for (int k = 0; k < 16; k++)
                mx[k] = x[i + k] > mx[k] ? x[i + k] : mx[k];
        float m = -INFINITY;
        for (; i < n; i++)
            m = x[i] > m ? x[i] : m;
        for (int k = 0; k < 16; k++)
            m = mx[k] > m ? mx[k] : m;
        if (m == -INFINITY) { /* every key masked (never in the UNet: its image keys are valid) */
            memset(x, 0, (size_t)n * sizeof *x);
            continue;
        }
        for (i = 0; i + 16 <= n; i += 16)
            for (int k = 0; k < 16; k++) {
                float e = uc_exp_f(x[i + k] - m);
                x[i + k] = e;
                acc[k] += e;
            }
        float s = 0;
        for (; i < n; i++) {
            x[i] = uc_exp_f(x[i] - m);
            s += x[i];
        }
        for (int k = 0; k < 16; k++)
            s += acc[k];
        float inv = 1.0f / s;
        for (i = 0; i + 16 <= n; i += 16)
            for (int k = 0; k < 16; k++)
                x[i + k] *= inv;
        for (; i < n; i++)
            x[i] *= inv;
    }
}

UC_CLONE(softmax_items, softmax_body)

void uc_softmax_rows_blocked(float *x, int64_t rows, int64_t n)
{
    sm_job j = {x, n};
    uc_parallel_for(rows, 10.0 * (double)(rows * n), uc_pick(softmax_items), &j);
}

void uc_attention_head(float *out, int64_t ldo, const float *q, int64_t ldq, const float *k, int64_t ldk,
                       const float *v, int64_t ldv, int64_t Tq, int64_t Tk, int64_t dh, float scale,
                       const float *bias, float *scores)
{
    static _Thread_local float *buf;
    static _Thread_local size_t cap;
    if (!scores)
        scores = thread_buffer(&buf, &cap, (size_t)(Tq * Tk));
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
