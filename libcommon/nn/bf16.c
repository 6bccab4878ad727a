/* bf16.c - see bf16.h.
 *
 * The vdpbf16ps path: C is computed in blocks of RC rows of W x NB columns
 * of X. Per block, the NB columns of X are packed as BF16 pairs along k,
 * Xp[p][c] = (x[2p][c], x[2p+1][c]) in one 32-bit word, zero past K and
 * N; then register tiles of MRW rows x NB columns run over all k pairs,
 * each step broadcasting a pair of one weight row (read in place: a row's
 * consecutive k are a pair) against NB/16 vectors of Xp: 4 x 4
 * accumulators. Blocks are independent work items, each summed in k
 * order: the same bits on any number of threads. */
#include "libcommon/nn/bf16.h"

#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#include <cpuid.h>
#define HAVE_X86 1
#endif

#include "formats/base.h"
#include "libcommon/nn/cpu.h"
#include "libcommon/nn/ops.h"

#define NB 64  /* columns of a block: 4 vectors */
#define MRW 4  /* rows of a register tile */
#define RC 256 /* rows of a block */
#define WIDEN_ROWS 256 /* rows of W widened at a time on the other path */

static int forced_widen = -1; /* -1: UNCLIP_BF16_WIDEN not read yet */

void uc_bf16_force_widen(int on) { forced_widen = on ? 1 : 0; }

int uc_bf16_native(void)
{
#ifdef HAVE_X86
    int has = uc_cpu_level() >= UC_CPU_AVX512BF16;
    if (forced_widen < 0) {
        const char *e = getenv("UNCLIP_BF16_WIDEN");
        forced_widen = e && *e && strcmp(e, "0") ? 1 : 0;
    }
    return has && !forced_widen;
#else
    return 0;
#endif
}

/* ---- widening ---------------------------------------------------------- */

#ifdef HAVE_X86
__attribute__((target("avx2,f16c"))) static void widen_f16c(float *dst, const uint16_t *src, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    for (; i < n; i++)
        dst[i] = uc_f16_to_f32(src[i]);
}
#endif

/* dst[i] = src[i] widened exactly, i < n. */
static void widen(float *dst, const uint16_t *src, int64_t n, uc_half type)
{
    if (type == UC_HALF_BF16) {
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)src[i] << 16;
            memcpy(dst + i, &bits, 4);
        }
        return;
    }
#ifdef HAVE_X86
    static int f16c = -1;
    if (f16c < 0) {
        unsigned a, b, c, d; /* F16C by cpuid: clang 14 has no "f16c" for __builtin_cpu_supports */
        __builtin_cpu_init();
        f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) && __builtin_cpu_supports("avx2");
    }
    if (f16c) {
        widen_f16c(dst, src, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++)
        dst[i] = uc_f16_to_f32(src[i]);
}

/* Block by block of W's rows, widened into one reused buffer. */
static void gemm_widen(int64_t M, int64_t N, int64_t K, const uint16_t *W, uc_half type, int64_t ldw,
                       const float *X, int64_t rsx, int64_t csx, float beta, float *C, int64_t rsc, int64_t csc)
{
    static _Thread_local float *buf;
    static _Thread_local int64_t cap;
    int64_t rows = UC_MIN(M, WIDEN_ROWS);
    if (rows * K > cap) {
        uc_free(buf);
        cap = rows * K;
        buf = uc_alloc_raw((size_t)cap, sizeof(float));
    }
    for (int64_t r0 = 0; r0 < M; r0 += rows) {
        int64_t nr = UC_MIN(rows, M - r0);
        for (int64_t r = 0; r < nr; r++)
            widen(buf + r * K, W + (r0 + r) * ldw, K, type);
        if (csc == 1) /* C rows: W X */
            uc_gemm(nr, N, K, buf, K, 1, X, rsx, csx, beta, C + r0 * rsc, rsc);
        else /* C columns: C^T = X^T W^T */
            uc_gemm(N, nr, K, X, csx, rsx, buf, 1, K, beta, C + r0 * rsc, csc);
    }
}

/* ---- vdpbf16ps ----------------------------------------------------------- */

#ifdef HAVE_X86
typedef struct {
    int64_t M, N, K, ldw, rsx, csx, rsc, csc;
    const uint16_t *W;
    const float *X;
    float *C, beta;
    int64_t nchunks; /* row blocks per column block */
} njob;

#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* One register tile: rows r0 .. r0+nr (nr <= MRW) x the block's columns
 * (nv vectors of Xp, nc columns valid). */
BF16_TARGET static inline __attribute__((always_inline)) void tile_body(const njob *j, const uint32_t *Xp, int64_t r0,
                                                                          int nr, const int nv, int64_t n0, int64_t nc)
{
    __m512 acc[MRW][4];
#pragma GCC unroll 4
    for (int r = 0; r < MRW; r++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++)
            acc[r][v] = _mm512_setzero_ps();
    const uint16_t *w[MRW];
    for (int r = 0; r < MRW; r++)
        w[r] = j->W + (r0 + UC_MIN(r, nr - 1)) * j->ldw; /* rows past nr repeat the last: never stored */
    int64_t K = j->K, kp = K / 2;
    for (int64_t p = 0; p < kp; p++) {
        const uint32_t *x = Xp + p * NB;
        __m512bh xv[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++)
            xv[v] = (__m512bh)(v < nv ? _mm512_loadu_si512(x + 16 * v) : _mm512_setzero_si512());
#pragma GCC unroll 4
        for (int r = 0; r < MRW; r++) {
            uint32_t pair;
            memcpy(&pair, w[r] + 2 * p, 4);
            __m512bh wv = (__m512bh)_mm512_set1_epi32((int)pair);
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++)
                if (v < nv)
                    acc[r][v] = _mm512_dpbf16_ps(acc[r][v], wv, xv[v]);
        }
    }
    if (K & 1) { /* the last weight alone, against the zero-padded last pair of Xp */
        const uint32_t *x = Xp + kp * NB;
#pragma GCC unroll 4
        for (int r = 0; r < MRW; r++) {
            __m512bh wv = (__m512bh)_mm512_set1_epi32((int)w[r][2 * kp]);
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++)
                if (v < nv)
                    acc[r][v] = _mm512_dpbf16_ps(acc[r][v], wv, (__m512bh)_mm512_loadu_si512(x + 16 * v));
        }
    }
    if (j->csc == 1) {
        for (int r = 0; r < nr; r++) {
            float *d = j->C + (r0 + r) * j->rsc + n0;
#pragma GCC unroll 4
            for (int v = 0; v < 4; v++) {
                int64_t left = nc - 16 * v;
                if (left <= 0)
                    break;
                __mmask16 m = (__mmask16)(left >= 16 ? 0xffffu : (1u << left) - 1);
                __m512 y = acc[r][v];
                if (j->beta != 0.0f)
                    y = _mm512_fmadd_ps(_mm512_set1_ps(j->beta), _mm512_maskz_loadu_ps(m, d + 16 * v), y);
                _mm512_mask_storeu_ps(d + 16 * v, m, y);
            }
        }
        return;
    }
    float out[MRW][NB];
#pragma GCC unroll 4
    for (int r = 0; r < MRW; r++)
#pragma GCC unroll 4
        for (int v = 0; v < 4; v++)
            if (v < nv)
                _mm512_storeu_ps(out[r] + 16 * v, acc[r][v]);
    for (int r = 0; r < nr; r++)
        for (int64_t c = 0; c < nc; c++) {
            float *d = j->C + (r0 + r) * j->rsc + (n0 + c) * j->csc;
            *d = j->beta == 0.0f ? out[r][c] : out[r][c] + j->beta * *d;
        }
}

/* tile_body with the vector count a constant, so that the accumulators
 * stay in registers and the loop has no branch. */
BF16_TARGET static void tile(const njob *j, const uint32_t *Xp, int64_t r0, int nr, int nv, int64_t n0, int64_t nc)
{
    switch (nv) {
    case 1: tile_body(j, Xp, r0, nr, 1, n0, nc); break;
    case 2: tile_body(j, Xp, r0, nr, 2, n0, nc); break;
    case 3: tile_body(j, Xp, r0, nr, 3, n0, nc); break;
    default: tile_body(j, Xp, r0, nr, 4, n0, nc); break;
    }
}

/* Xp[p][c] = (bf16 x[2p][n0 + c], bf16 x[2p+1][n0 + c]) for c < nc, zero
 * past K and for c >= nc (up to NB). vcvtneps2bf16 rounds to nearest even
 * as uc_f32_to_bf16 does (denormal inputs flush to zero). */
BF16_TARGET static void pack(const njob *j, uint32_t *Xp, int64_t n0, int64_t nc)
{
    int64_t K = j->K, kp = (K + 1) / 2;
    if (j->csx == 1) { /* rows of X: 16 columns a vector */
        for (int64_t p = 0; p < kp; p++)
            for (int64_t c = 0; c < NB; c += 16) {
                __mmask16 m = (__mmask16)(c < nc ? (nc - c >= 16 ? 0xffffu : (1u << (nc - c)) - 1) : 0);
                const float *x = j->X + 2 * p * j->rsx + n0 + c;
                __m512 lo = _mm512_maskz_loadu_ps(m, x), hi = _mm512_setzero_ps();
                if (2 * p + 1 < K)
                    hi = _mm512_maskz_loadu_ps(m, x + j->rsx);
                __m512i a = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(lo));
                __m512i b = _mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(hi)), 16);
                _mm512_storeu_si512(Xp + p * NB + c, _mm512_or_si512(a, b));
            }
        return;
    }
    if (j->rsx == 1) { /* columns of X contiguous along k: 16 pairs a vector, scattered */
        __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                         _mm512_set1_epi32(NB));
        for (int64_t c = 0; c < NB; c++) {
            const float *x = j->X + (n0 + c) * j->csx;
            for (int64_t k = 0; k < 2 * kp; k += 32) {
                int64_t n = c < nc ? UC_MIN(32, K - k) : 0;
                __mmask16 m0 = (__mmask16)(n >= 16 ? 0xffffu : (1u << n) - 1);
                __mmask16 m1 = (__mmask16)(n >= 32 ? 0xffffu : n > 16 ? (1u << (n - 16)) - 1 : 0);
                __m512 lo = _mm512_maskz_loadu_ps(m0, x + k), hi = _mm512_maskz_loadu_ps(m1, x + k + 16);
                __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo); /* k, k+1, ... as pairs */
                int64_t np = UC_MIN(16, kp - k / 2);
                _mm512_mask_i32scatter_epi32(Xp + k / 2 * NB + c, (__mmask16)((1u << np) - 1), idx, v, 4);
            }
        }
        return;
    }
    for (int64_t p = 0; p < kp; p++)
        for (int64_t c = 0; c < NB; c++) {
            uint32_t lo = 0, hi = 0;
            if (c < nc) {
                const float *x = j->X + 2 * p * j->rsx + (n0 + c) * j->csx;
                lo = uc_f32_to_bf16(x[0]);
                hi = 2 * p + 1 < K ? uc_f32_to_bf16(x[j->rsx]) : 0;
            }
            Xp[p * NB + c] = lo | hi << 16;
        }
}

static void native_items(void *ctx, int64_t i0, int64_t i1)
{
    const njob *j = ctx;
    static _Thread_local uint32_t *buf;
    static _Thread_local int64_t cap;
    int64_t kp = (j->K + 1) / 2;
    if (kp * NB > cap) {
        uc_free(buf);
        cap = kp * NB;
        buf = uc_alloc_raw((size_t)cap, sizeof *buf);
    }
    int64_t packed = -1;
    for (int64_t it = i0; it < i1; it++) {
        int64_t b = it / j->nchunks, ch = it % j->nchunks, n0 = b * NB, nc = UC_MIN(NB, j->N - n0);
        if (b != packed) { /* Xp of this column block */
            pack(j, buf, n0, nc);
            packed = b;
        }
        int nv = (int)((nc + 15) / 16);
        int64_t m1 = UC_MIN(j->M, (ch + 1) * RC);
        for (int64_t r0 = ch * RC; r0 < m1; r0 += MRW)
            tile(j, buf, r0, (int)UC_MIN(MRW, m1 - r0), nv, n0, nc);
    }
}
#endif

void uc_gemm_half(int64_t M, int64_t N, int64_t K, const uint16_t *W, uc_half type, int64_t ldw, const float *X,
                  int64_t rsx, int64_t csx, float beta, float *C, int64_t rsc, int64_t csc)
{
    if (M <= 0 || N <= 0)
        return;
    if (K <= 0) {
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++)
                C[m * rsc + n * csc] *= beta;
        return;
    }
#ifdef HAVE_X86
    if (type == UC_HALF_BF16 && uc_bf16_native()) {
        int64_t nchunks = (M + RC - 1) / RC, nblocks = (N + NB - 1) / NB;
        njob j = {M, N, K, ldw, rsx, csx, rsc, csc, W, X, C, beta, nchunks};
        /* column blocks outside: a thread packs each block it takes once */
        uc_parallel_for(nblocks * nchunks, 2.0 * (double)M * (double)N * (double)K, native_items, &j);
        return;
    }
#endif
    gemm_widen(M, N, K, W, type, ldw, X, rsx, csx, beta, C, rsc, csc);
}

void uc_linear_half(float *out, const float *in, const uint16_t *W, uc_half type, const float *b, int64_t M,
                    int64_t K, int64_t N)
{
    if (b)
        for (int64_t i = 0; i < M; i++)
            memcpy(out + i * N, b, (size_t)N * sizeof *out);
    /* out^T[N,M] = W[N,K] in^T[K,M] */
    uc_gemm_half(N, M, K, W, type, K, in, 1, K, b ? 1.0f : 0.0f, out, 1, N);
}

void uc_gemm_w(int64_t M, int64_t N, int64_t K, uc_wref W, int64_t ldw, const float *X, int64_t rsx, int64_t csx,
               float beta, float *C, int64_t ldc)
{
    if (W.h)
        uc_gemm_half(M, N, K, W.h, W.type, ldw, X, rsx, csx, beta, C, ldc, 1);
    else
        uc_gemm(M, N, K, W.f, ldw, 1, X, rsx, csx, beta, C, ldc);
}

void uc_linear_w(float *out, const float *in, uc_wref W, const float *b, int64_t M, int64_t K, int64_t N)
{
    if (W.h)
        uc_linear_half(out, in, W.h, W.type, b, M, K, N);
    else
        uc_linear(out, in, W.f, b, M, K, N);
}

const float *uc_wref_rows(uc_wref W, int64_t r0, int64_t n, int64_t k, float *dst)
{
    if (!W.h)
        return W.f + r0 * k;
    widen(dst, W.h + r0 * k, n * k, W.type);
    return dst;
}
