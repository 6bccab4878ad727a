/* winograd.c - see winograd.h.
 *
 * The transforms of F(4x4, 3x3) with points 0, 1, -1, 2, -2, infinity:
 *
 *   B^T = | 4  0 -5  0  1  0 |   G = | 1/4    0     0   |   A^T = | 1  1  1  1  1  0 |
 *         | 0 -4 -4  1  1  0 |       | -1/6  -1/6  -1/6 |         | 0  1 -1  2 -2  0 |
 *         | 0  4 -4 -1  1  0 |       | -1/6   1/6  -1/6 |         | 0  1  1  4  4  0 |
 *         | 0 -2 -1  2  1  0 |       | 1/24  1/12  1/6  |         | 0  1 -1  8 -8  1 |
 *         | 0  2 -1 -2  1  0 |       | 1/24 -1/12  1/6  |
 *         | 0  4  0 -5  0  1 |       | 0      0     1   |
 *
 * each applied along y and along x. The tiles are taken in chunks of tile
 * rows, the output channels in blocks; per (chunk, block): the input
 * transform into V and the weight transform into U (each unless V or U
 * already holds it), the 36 products into M (spread over the threads a
 * whole product each), the output transform into y.
 * The transforms work on VB lanes (tiles, or triples of kernel values) at
 * a time, written as loops over l < VB that the compiler vectorizes. */
#include "libcommon/nn/winograd.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/nn/bf16.h"
#include "libcommon/nn/cpu.h"
#ifdef UC_HAVE_X86
#include <immintrin.h>
#endif
#include "libcommon/nn/ops.h"

#define WM 4         /* output tile side */
#define WA (WM + 2)  /* input tile side */
#define WN (WA * WA) /* positions of a transformed tile: one product each */
#define VB 16        /* lanes of the transforms */
/* Scratch budgets in floats per position: V holds cin x (tiles of a chunk),
 * U cin x (output channels of a block); a chunk is at least one tile row, a
 * block at least MIN_BLOCK channels (the products need that much width).
 * Chunks and blocks are split evenly. */
#ifndef V_BUDGET
#define V_BUDGET ((int64_t)256 << 10)
#endif
#define U_BUDGET ((int64_t)512 << 10)
#define MIN_BLOCK 128
/* Default budget of the cache of transformed weights, MiB (see winograd.h) */
#define CACHE_MB 1024

/* The 1-D transforms, on VB lanes: o[k * os + l] for k < 6 (4 for A^T)
 * from inputs x0[l], x1[l], ... */
static inline void bt_1d(float *o, int64_t os, const float *x0, const float *x1, const float *x2, const float *x3,
                         const float *x4, const float *x5)
{
    for (int l = 0; l < VB; l++) {
        float a = x0[l], b = x1[l], c = x2[l], d = x3[l], e = x4[l], f = x5[l];
        o[l] = 4 * a - 5 * c + e;
        o[os + l] = d + e - 4 * (b + c);
        o[2 * os + l] = e - d + 4 * (b - c);
        o[3 * os + l] = e - c + 2 * (d - b);
        o[4 * os + l] = e - c + 2 * (b - d);
        o[5 * os + l] = 4 * b - 5 * d + f;
    }
}

static inline void at_1d(float *o, int64_t os, const float *x0, const float *x1, const float *x2, const float *x3,
                         const float *x4, const float *x5)
{
    for (int l = 0; l < VB; l++) {
        float p12 = x1[l] + x2[l], m12 = x1[l] - x2[l], p34 = x3[l] + x4[l], m34 = x3[l] - x4[l];
        o[l] = x0[l] + p12 + p34;
        o[os + l] = m12 + 2 * m34;
        o[2 * os + l] = p12 + 4 * p34;
        o[3 * os + l] = m12 + 8 * m34 + x5[l];
    }
}

/* p[e][l] = s[WM * l + e]: the columns of VB tiles by phase. Groups of
 * exactly WM contiguous floats, which the compiler turns into shuffles. */
static inline void unzip(float p[WM][VB], const float *restrict s)
{
    for (int l = 0; l < VB; l++) {
        const float *q = s + WM * l;
        p[0][l] = q[0], p[1][l] = q[1], p[2][l] = q[2], p[3][l] = q[3];
    }
}

/* s[WM * l + e] = p[e][l]: the inverse, for output rows. */
static inline void zip(float *restrict s, float p[WM][VB])
{
    for (int l = 0; l < VB; l++) {
        float *q = s + WM * l;
        q[0] = p[0][l], q[1] = p[1][l], q[2] = p[2][l], q[3] = p[3][l];
    }
}

/* n floats (n <= VB): a constant-size copy when full, so it stays inline. */
static inline void put(float *dst, const float *src, int64_t n)
{
    if (n == VB)
        memcpy(dst, src, VB * sizeof *dst);
    else
        memcpy(dst, src, (size_t)n * sizeof *dst);
}

typedef struct {
    int64_t th, tw, rows;     /* tile rows and columns of an image; tile rows of the batch */
    int64_t chunk, nchunks;   /* tile rows per pass; passes */
    int64_t block, nblocks;   /* output channels per block; blocks */
    int chunks_outer;         /* loop order */
    int ukr;                  /* products by uc_ukr on packed panels (else uc_gemm) */
    int64_t mr, nr, kc;       /* the micro-kernel's tile and k block (ukr) */
    int64_t vmax, umax;       /* floats per position: V (cin x tiles of a chunk, padded), U of a block */
} wplan;

static int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

/* Panel widths: tiles (V, the micro-kernel's A side) in panels of mr,
 * output channels (U, its B side) in panels of nr. Without the kernel, one
 * panel each: V is [cin][tiles] and U [cin][channels], plain matrices for
 * uc_gemm. */
static int64_t tile_panel(const wplan *p, int64_t nt) { return p->ukr ? p->mr : round_up(nt, VB); }
static int64_t chan_panel(const wplan *p, int64_t nb) { return p->ukr ? p->nr : nb; }

static wplan make_plan(int64_t B, int64_t cin, int64_t h, int64_t w, int64_t cout, int cached)
{
    wplan p;
    p.ukr = uc_ukr_dims(&p.mr, &p.nr, &p.kc) == 0;
    p.th = (h + WM - 1) / WM, p.tw = (w + WM - 1) / WM, p.rows = B * p.th;
    int64_t most_rows = UC_MAX(1, V_BUDGET / (cin * p.tw)), most_co = UC_MAX(MIN_BLOCK, U_BUDGET / cin);
    if (cached && p.ukr)
        most_co = cout; /* the whole transform is at hand, in the kernel's panels */
    p.nchunks = (p.rows + most_rows - 1) / most_rows, p.chunk = (p.rows + p.nchunks - 1) / p.nchunks;
    p.nblocks = (cout + most_co - 1) / most_co, p.block = (cout + p.nblocks - 1) / p.nblocks;
    /* With several chunks and several blocks, one transform is redone on
     * every pass of the other loop: the weights' (cout x cin, chunks
     * outside) or the input's (cin x tiles, blocks outside). They cost
     * about the same per element: redo the smaller. */
    p.chunks_outer = cout * (p.nchunks - 1) <= p.rows * p.tw * (p.nblocks - 1);
    int64_t nt = p.chunk * p.tw;
    p.vmax = cin * round_up(nt, tile_panel(&p, nt));
    p.umax = cin * round_up(p.block, chan_panel(&p, p.block));
    return p;
}

/* Floats of scratch a run needs: V, U unless cached, M. */
static int64_t need(const wplan *p, int64_t cin, int64_t cout, int cached)
{
    int64_t nb = p->block;
    (void)cout;
    return WN * (p->vmax + (cached ? 0 : p->umax) + p->vmax / cin * round_up(nb, chan_panel(p, nb)));
}

int64_t uc_winograd_scratch(int64_t B, int64_t cin, int64_t h, int64_t w, int64_t cout)
{
    wplan p = make_plan(B, cin, h, w, cout, 0), q = make_plan(B, cin, h, w, cout, 1);
    return UC_MAX(need(&p, cin, cout, 0), need(&q, cin, cout, 1));
}

typedef struct {
    const float *x, *bias;
    uc_wref wgt;
    float *y, *V, *U, *M;
    const float *Uc;    /* the transform in use: U, or the cached one */
    int64_t B, cin, h, w;
    int accumulate;
    wplan p;
    int64_t r0, nt;     /* the chunk: nt tiles from tile row r0 on */
    int64_t c0, nb;     /* the block: output channels c0 .. c0+nb */
    int64_t mr, ntp;    /* tile panel width; tiles rounded up to it */
    int64_t nr, nbp;    /* channel panel width; channels rounded up to it */
} job;

/* dst[k] = src[x0 + k] where 0 <= x0 + k < w, else 0, for k < n; src NULL:
 * zeros. */
static inline void span(float *dst, const float *src, int64_t x0, int64_t n, int64_t w)
{
    for (int64_t k = 0; k < n; k++)
        dst[k] = src && x0 + k >= 0 && x0 + k < w ? src[x0 + k] : 0.0f;
}

/* The runs of a group of VB tiles (g0 .. g0+n of the chunk) that lie in one
 * tile row: lanes l0 .. l1, image b, top row y0 and left column x0. */
typedef struct {
    int64_t l0, l1, b, y0, x0;
} run;

static int next_run(const job *j, int64_t g0, int64_t n, run *r)
{
    if ((r->l0 = r->l1) >= n)
        return 0;
    int64_t t = g0 + r->l0, tx = t % j->p.tw, row = j->r0 + t / j->p.tw;
    r->l1 = UC_MIN(n, r->l0 + j->p.tw - tx);
    r->b = row / j->p.th, r->y0 = row % j->p.th * WM, r->x0 = tx * WM;
    return 1;
}

/* V[pos][ci][t] = B^T d B for items (input channel, group of VB tiles of
 * the chunk): each input row under the tiles is split into phases and
 * transformed along x, then the six rows are combined along y. */
#ifdef UC_HAVE_X86
/* bt_1d on vectors: o[k] from x[0..5]. */
UC_AVX512 static inline void bt_vec(__m512 o[WA], const __m512 x[WA])
{
    __m512 four = _mm512_set1_ps(4), five = _mm512_set1_ps(5), two = _mm512_set1_ps(2);
    __m512 a = x[0], b = x[1], c = x[2], d = x[3], e = x[4], f = x[5], ec = _mm512_sub_ps(e, c);
    o[0] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, a), _mm512_mul_ps(five, c)), e);
    o[1] = _mm512_sub_ps(_mm512_add_ps(d, e), _mm512_mul_ps(four, _mm512_add_ps(b, c)));
    o[2] = _mm512_add_ps(_mm512_sub_ps(e, d), _mm512_mul_ps(four, _mm512_sub_ps(b, c)));
    o[3] = _mm512_add_ps(ec, _mm512_mul_ps(two, _mm512_sub_ps(d, b)));
    o[4] = _mm512_add_ps(ec, _mm512_mul_ps(two, _mm512_sub_ps(b, d)));
    o[5] = _mm512_add_ps(_mm512_sub_ps(_mm512_mul_ps(four, b), _mm512_mul_ps(five, d)), f);
}

/* input_items' item (ci, g0, n lanes) into dst, on AVX-512 */
UC_AVX512 static void input_item_avx512(const job *j, int64_t ci, int64_t g0, int64_t n, float *dst)
{
    int64_t h = j->h, w = j->w, cn = j->cin * j->ntp;
    /* Per input row: R[v] (and S[v], 4 columns on) hold 64 columns
     * from a base such that lane l's tile starts at element 4 l: each
     * run of lanes loads the elements of its lanes that lie in the
     * image, the rest stay zero. Phases k of the tiles' columns are
     * then gathered from them by permutes. */
    run runs[VB];
    int nruns = 0;
    for (run u = {0}; next_run(j, g0, n, &u);)
        runs[nruns++] = u;
    __m512i idx[4];
    for (int k = 0; k < 4; k++)
        idx[k] = _mm512_add_epi32(_mm512_set_epi32(60, 56, 52, 48, 44, 40, 36, 32, 28, 24, 20, 16, 12, 8, 4, 0),
                                  _mm512_set1_epi32(k));
    __m512 r[WA][WA]; /* r[a][e]: row a transformed along x, phase e */
    for (int a = 0; a < WA; a++) {
        __m512 R[4], S[4], x[WA];
        R[0] = R[1] = R[2] = R[3] = S[0] = S[1] = S[2] = S[3] = _mm512_setzero_ps();
        for (int q = 0; q < nruns; q++) {
            const run *u = &runs[q];
            int64_t y = u->y0 - 1 + a;
            if (y < 0 || y >= h)
                continue;
            int64_t base = u->x0 - 1 - WM * u->l0; /* column of element 0 */
            int64_t lo = UC_MAX(WM * u->l0, -base), hi = UC_MIN(WM * u->l1, w - base);
            int64_t lo4 = UC_MAX(WM * u->l0, -base - 4), hi4 = UC_MIN(WM * u->l1, w - base - 4);
            /* elements outside [lo, hi) are never read */
            const float *row = j->x + ((ci * j->B + u->b) * h + y) * w + base;
            /* whole masks: merging loads into R and S then stay in registers */
            uint64_t mr64 = hi > lo ? (~0ull >> (64 - (hi - lo))) << lo : 0;
            uint64_t ms64 = hi4 > lo4 ? (~0ull >> (64 - (hi4 - lo4))) << lo4 : 0;
            R[0] = _mm512_mask_loadu_ps(R[0], (__mmask16)mr64, row);
            R[1] = _mm512_mask_loadu_ps(R[1], (__mmask16)(mr64 >> 16), row + 16);
            R[2] = _mm512_mask_loadu_ps(R[2], (__mmask16)(mr64 >> 32), row + 32);
            R[3] = _mm512_mask_loadu_ps(R[3], (__mmask16)(mr64 >> 48), row + 48);
            S[0] = _mm512_mask_loadu_ps(S[0], (__mmask16)ms64, row + 4);
            S[1] = _mm512_mask_loadu_ps(S[1], (__mmask16)(ms64 >> 16), row + 20);
            S[2] = _mm512_mask_loadu_ps(S[2], (__mmask16)(ms64 >> 32), row + 36);
            S[3] = _mm512_mask_loadu_ps(S[3], (__mmask16)(ms64 >> 48), row + 52);
        }
        for (int k = 0; k < 6; k++) {
            const __m512 *src = k < 4 ? R : S;
            __m512 lo8 = _mm512_permutex2var_ps(src[0], idx[k & 3], src[1]);
            __m512 hi8 = _mm512_permutex2var_ps(src[2], idx[k & 3], src[3]);
            x[k] = _mm512_shuffle_f32x4(lo8, hi8, 0x44);
        }
        bt_vec(r[a], x);
    }
    __mmask16 m = (__mmask16)((1u << n) - 1);
    for (int e = 0; e < WA; e++) {
        __m512 x[WA], o[WA];
        for (int a = 0; a < WA; a++)
            x[a] = r[a][e];
        bt_vec(o, x);
        for (int a = 0; a < WA; a++)
            _mm512_mask_storeu_ps(dst + (a * WA + e) * cn, m, o[a]);
    }
}
#endif

/* the same in plain C */
static void input_item(const job *j, int64_t ci, int64_t g0, int64_t n, float *dst)
{
    int64_t h = j->h, w = j->w, cn = j->cin * j->ntp;
    /* row a under lane l: the tile's columns 0..3 at cols[a][WM * l], 4..7 at next[a][WM * l] */
    float cols[WA][WM * VB], next[WA][WM * VB];
    float r[WA][WA][VB], o[WA][WA][VB], p[WM][VB], q[WM][VB];
    if (n < VB) { /* lanes past the last tile: zeros, never stored */
        memset(cols, 0, sizeof cols);
        memset(next, 0, sizeof next);
    }
    for (run u = {0}; next_run(j, g0, n, &u);) {
        const float *xc = j->x + (ci * j->B + u.b) * h * w;
        for (int a = 0; a < WA; a++) {
            int64_t y = u.y0 - 1 + a;
            const float *row = y >= 0 && y < h ? xc + y * w : NULL;
            span(cols[a] + WM * u.l0, row, u.x0 - 1, WM * (u.l1 - u.l0), w);
            span(next[a] + WM * u.l0, row, u.x0 + WM - 1, WM * (u.l1 - u.l0), w);
        }
    }
    for (int a = 0; a < WA; a++) {
        unzip(p, cols[a]);
        unzip(q, next[a]);
        bt_1d(r[a][0], VB, p[0], p[1], p[2], p[3], q[0], q[1]);
    }
    for (int e = 0; e < WA; e++)
        bt_1d(o[0][e], WA * VB, r[0][e], r[1][e], r[2][e], r[3][e], r[4][e], r[5][e]);
    for (int a = 0; a < WA; a++)
        for (int e = 0; e < WA; e++)
            put(dst + (a * WA + e) * cn, o[a][e], n);
}

static void input_items(void *ctx, int64_t i0, int64_t i1)
{
    const job *j = ctx;
    int64_t groups = (j->nt + VB - 1) / VB, mr = j->mr;
    int vec = uc_cpu_level() >= UC_CPU_AVX512;
    for (int64_t it = i0; it < i1; it++) {
        int64_t ci = it / groups, g0 = it % groups * VB, n = UC_MIN(VB, j->nt - g0);
        float *dst = j->V + g0 / mr * j->cin * mr + ci * mr + g0 % mr;
#ifdef UC_HAVE_X86
        if (vec) {
            input_item_avx512(j, ci, g0, n, dst);
            continue;
        }
#endif
        (void)vec;
        input_item(j, ci, g0, n, dst);
    }
}

/* U = G g G^T for output channels co0 .. co0+nb of wgt [cout, cin, 3, 3],
 * into u in panels of nr channels: position pos, channel co, input
 * channel ci at u[pos * ups + co / nr * cin * nr + ci * nr + co % nr],
 * ups = cin x nb rounded up to nr. Items: runs of at most VB channels
 * inside one panel, all input channels each, VB channels in the lanes. */
typedef struct {
    uc_wref wgt;
    float *u;
    int64_t cin, co0, nb, nr, ups;
} wjob;

static int64_t lane_groups(int64_t nb, int64_t nr) { return nb / nr * ((nr + VB - 1) / VB) + (nb % nr + VB - 1) / VB; }

/* The first channel and the count of lane group g. */
static void lane_group(const wjob *j, int64_t g, int64_t *co, int64_t *n)
{
    int64_t per = (j->nr + VB - 1) / VB, panel = g / per, k = g % per;
    *co = panel * j->nr + k * VB;
    *n = UC_MIN(UC_MIN(VB, j->nr - k * VB), j->nb - *co);
}

#ifdef UC_HAVE_X86
UC_AVX512 static inline void g_vec(__m512 o[WA], __m512 a, __m512 b, __m512 c)
{
    __m512 ac = _mm512_add_ps(a, c), q = _mm512_fmadd_ps(a, _mm512_set1_ps(1.0f / 24), _mm512_mul_ps(c, _mm512_set1_ps(1.0f / 6)));
    __m512 b12 = _mm512_mul_ps(b, _mm512_set1_ps(1.0f / 12));
    o[0] = _mm512_mul_ps(a, _mm512_set1_ps(1.0f / 4));
    o[1] = _mm512_mul_ps(_mm512_add_ps(ac, b), _mm512_set1_ps(-1.0f / 6));
    o[2] = _mm512_mul_ps(_mm512_sub_ps(ac, b), _mm512_set1_ps(-1.0f / 6));
    o[3] = _mm512_add_ps(q, b12);
    o[4] = _mm512_sub_ps(q, b12);
    o[5] = c;
}
#endif

/* weight_items' item: n lanes of kernels g (row stride cin * 9) into u */
#ifdef UC_HAVE_X86
UC_AVX512 static void weight_item_avx512(const wjob *j, const float *g, int64_t n, float *u)
{
    int64_t cin = j->cin;
    __mmask16 m = (__mmask16)((1u << n) - 1);
    __m512i idx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                     _mm512_set1_epi32((int)(cin * 9)));
    for (int64_t ci = 0; ci < cin; ci++, g += 9, u += j->nr) {
        __m512 k[9], r[3][WA], o[WA];
        for (int e = 0; e < 9; e++)
            k[e] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, g + e, 4);
        for (int e = 0; e < 3; e++) /* along y: column e of the kernel */
            g_vec(o, k[e], k[3 + e], k[6 + e]), memcpy(r[e], o, sizeof o);
        for (int a = 0; a < WA; a++) { /* along x: row a */
            g_vec(o, r[0][a], r[1][a], r[2][a]);
            for (int e = 0; e < WA; e++)
                _mm512_mask_storeu_ps(u + (a * WA + e) * j->ups, m, o[e]);
        }
    }
}
#endif

static void weight_item(const wjob *j, const float *g, int64_t n, float *u)
{
    int64_t cin = j->cin;
    for (int64_t ci = 0; ci < cin; ci++, u += j->nr)
        for (int64_t l = 0; l < n; l++) {
            const float *k = g + l * cin * 9 + ci * 9;
            float r[3][WA], o[WA];
            for (int e = 0; e < 3; e++) {
                float a = k[e], b = k[3 + e], c = k[6 + e], ac = a + c, q = a * (1.0f / 24) + c * (1.0f / 6);
                r[e][0] = a * (1.0f / 4), r[e][1] = (ac + b) * (-1.0f / 6), r[e][2] = (ac - b) * (-1.0f / 6);
                r[e][3] = q + b * (1.0f / 12), r[e][4] = q - b * (1.0f / 12), r[e][5] = c;
            }
            for (int a = 0; a < WA; a++) {
                float x0 = r[0][a], x1 = r[1][a], x2 = r[2][a], ac = x0 + x2, q = x0 * (1.0f / 24) + x2 * (1.0f / 6);
                o[0] = x0 * (1.0f / 4), o[1] = (ac + x1) * (-1.0f / 6), o[2] = (ac - x1) * (-1.0f / 6);
                o[3] = q + x1 * (1.0f / 12), o[4] = q - x1 * (1.0f / 12), o[5] = x2;
                for (int e = 0; e < WA; e++)
                    u[(a * WA + e) * j->ups + l] = o[e];
            }
        }
}

static void weight_items(void *ctx, int64_t i0, int64_t i1)
{
    const wjob *j = ctx;
    int64_t cin = j->cin;
    int vec = uc_cpu_level() >= UC_CPU_AVX512;
    for (int64_t it = i0; it < i1; it++) {
        int64_t co, n;
        lane_group(j, it, &co, &n);
        static _Thread_local float *rows;
        static _Thread_local int64_t cap;
        if (j->wgt.h && VB * cin * 9 > cap) {
            uc_free(rows);
            cap = VB * cin * 9;
            rows = uc_alloc_raw((size_t)cap, sizeof *rows);
        }
        const float *g = uc_wref_rows(j->wgt, j->co0 + co, n, cin * 9, rows); /* half weights widened */
        float *u = j->u + co / j->nr * cin * j->nr + co % j->nr;
#ifdef UC_HAVE_X86
        if (vec) {
            weight_item_avx512(j, g, n, u);
            continue;
        }
#endif
        (void)vec;
        weight_item(j, g, n, u);
    }
}

static void transform_weights(uc_wref wgt, int64_t cin, int64_t co0, int64_t nb, int64_t nr, float *u)
{
    wjob j = {wgt, u, cin, co0, nb, nr, cin * round_up(nb, nr)};
    uc_parallel_for(lane_groups(nb, nr), 60.0 * (double)(nb * cin), weight_items, &j);
}

/* dst[k] = src[k] + bias (+ dst[k] when acc), k < n. */
static void emit(float *dst, const float *src, int64_t n, float bias, int acc)
{
    int64_t k = 0;
    for (; k + VB <= n; k += VB)
        for (int l = 0; l < VB; l++)
            dst[k + l] = (acc ? dst[k + l] : 0.0f) + src[k + l] + bias;
    for (; k < n; k++)
        dst[k] = (acc ? dst[k] : 0.0f) + src[k] + bias;
}

/* y = A^T M A + bias for items (output channel of the block, group of VB
 * tiles of the chunk): combined along y, then along x row by row. */
static void output_items(void *ctx, int64_t i0, int64_t i1)
{
    const job *j = ctx;
    int64_t h = j->h, w = j->w, groups = (j->nt + VB - 1) / VB, bn = j->nbp * j->ntp;
    for (int64_t it = i0; it < i1; it++) {
        int64_t co = it / groups, g0 = it % groups * VB, n = UC_MIN(VB, j->nt - g0);
        float d[WA][WA][VB] = {{{0}}}, t[WM][WA][VB], o[WM][VB], out[WM][WM * VB];
        for (int a = 0; a < WA; a++)
            for (int e = 0; e < WA; e++)
                put(d[a][e], j->M + (a * WA + e) * bn + co * j->ntp + g0, n);
        for (int e = 0; e < WA; e++)
            at_1d(t[0][e], WA * VB, d[0][e], d[1][e], d[2][e], d[3][e], d[4][e], d[5][e]);
        for (int a = 0; a < WM; a++) {
            at_1d(o[0], VB, t[a][0], t[a][1], t[a][2], t[a][3], t[a][4], t[a][5]);
            zip(out[a], o);
        }
        float bv = j->bias[j->c0 + co], *yc = j->y + (j->c0 + co) * j->B * h * w;
        for (run u = {0}; next_run(j, g0, n, &u);)
            for (int a = 0; a < WM && u.y0 + a < h; a++)
                emit(yc + (u.b * h + u.y0 + a) * w + u.x0, out[a] + WM * u.l0,
                     UC_MIN(WM * (u.l1 - u.l0), w - u.x0), bv, j->accumulate);
    }
}

/* M[pos] = U[pos] V[pos] for positions p0 .. p1, each product on the
 * thread that takes it (a loop inside a parallel loop runs inline), so
 * that every element is summed in the same order whichever thread runs
 * it. M is [pos][channel][tile] (row stride ntp). With the micro-kernel:
 * per k block, per group of tile panels (kept in L2), per channel panel
 * (in L1), the tile panels; C = V^T U is column-stored, i.e. M. */
#define TILE_PANELS 8

static void gemm_items(void *ctx, int64_t p0, int64_t p1)
{
    const job *j = ctx;
    int64_t cin = j->cin, ntp = j->ntp, mr = j->mr, nr = j->nr;
    for (int64_t pos = p0; pos < p1; pos++) {
        const float *V = j->V + pos * cin * ntp, *U = j->Uc + pos * cin * j->nbp;
        float *M = j->M + pos * j->nbp * ntp;
        if (!j->p.ukr) {
            uc_gemm(j->nb, j->nt, cin, U, 1, j->nbp, V, ntp, 1, 0.0f, M, ntp);
            continue;
        }
        for (int64_t k0 = 0; k0 < cin; k0 += j->p.kc) {
            int64_t kk = UC_MIN(j->p.kc, cin - k0);
            float beta = k0 ? 1.0f : 0.0f;
            for (int64_t t0 = 0; t0 < j->nt; t0 += TILE_PANELS * mr)
                for (int64_t c = 0; c < j->nb; c += nr) {
                    const float *b = U + c * cin + k0 * nr;
                    int64_t t1 = UC_MIN(j->nt, t0 + TILE_PANELS * mr);
                    for (int64_t t = t0; t < t1; t += mr) {
                        const float *a = V + t * cin + k0 * mr;
                        uc_ukr(UC_MIN(mr, j->nt - t), UC_MIN(nr, j->nb - c), kk, a, b, beta, M + c * ntp + t, 1,
                               ntp, t + mr < t1 ? a + mr * cin : V + t0 * cin + k0 * mr, b);
                    }
                }
        }
    }
}

static void wrun(const float *x, int64_t B, int64_t cin, int64_t h, int64_t w, uc_wref wgt, const float *cached,
                const float *bias, int64_t cout, float *y, int accumulate, float *scratch)
{
    job j = {.x = x, .wgt = wgt, .bias = bias, .y = y, .B = B, .cin = cin, .h = h, .w = w, .accumulate = accumulate};
    wplan p = j.p = make_plan(B, cin, h, w, cout, cached != NULL);
    j.V = scratch;
    j.U = j.V + WN * p.vmax;
    j.M = j.U + (cached ? 0 : WN * p.umax);
    int64_t held_chunk = -1, held_block = -1; /* what V and U hold */
    for (int64_t i = 0; i < (p.chunks_outer ? p.nchunks : p.nblocks); i++)
        for (int64_t k = 0; k < (p.chunks_outer ? p.nblocks : p.nchunks); k++) {
            int64_t c = p.chunks_outer ? i : k, b = p.chunks_outer ? k : i;
            if (c != held_chunk) {
                j.r0 = c * p.chunk, j.nt = UC_MIN(p.chunk, p.rows - j.r0) * p.tw;
                j.mr = tile_panel(&p, j.nt), j.ntp = round_up(j.nt, j.mr);
                uc_parallel_for(cin * ((j.nt + VB - 1) / VB), 200.0 * (double)(cin * j.nt), input_items, &j);
                held_chunk = c;
            }
            if (b != held_block) {
                j.c0 = b * p.block, j.nb = UC_MIN(p.block, cout - j.c0);
                j.nr = chan_panel(&p, j.nb), j.nbp = round_up(j.nb, j.nr);
                if (cached) /* with the kernel one block of all channels, else block after block */
                    j.Uc = p.ukr ? cached : cached + WN * cin * j.c0;
                else
                    transform_weights(wgt, cin, j.c0, j.nb, j.nr, j.U), j.Uc = j.U;
                held_block = b;
            }
            uc_parallel_for(WN, 2.0 * WN * (double)(j.nb * j.nt * cin), gemm_items, &j);
            uc_parallel_for(j.nb * ((j.nt + VB - 1) / VB), 200.0 * (double)(j.nb * j.nt), output_items, &j);
        }
}

void uc_winograd_conv3x3(const float *x, int64_t B, int64_t cin, int64_t h, int64_t w, const float *wgt,
                         const float *bias, int64_t cout, float *y, int accumulate, float *scratch)
{
    wrun(x, B, cin, h, w, (uc_wref){.f = wgt}, NULL, bias, cout, y, accumulate, scratch);
}

/* ---- the cache of transformed weights --------------------------------- */

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static int64_t cache_held, cache_budget = -1; /* bytes */
static int cache_explicit;                    /* the budget was set (uc_winograd_set_cache_mb) */

static void set_budget(double mb, int explicit)
{
    pthread_mutex_lock(&cache_mu);
    if (explicit || !cache_explicit)
        cache_budget = (int64_t)(mb * 1048576.0);
    cache_explicit |= explicit;
    pthread_mutex_unlock(&cache_mu);
}

void uc_winograd_set_cache_mb(double mb) { set_budget(mb, 1); }
void uc_winograd_default_cache_mb(double mb) { set_budget(mb, 0); }

int64_t uc_winograd_packed_floats(int64_t cin, int64_t cout)
{
    int64_t mr, nr, kc;
    return WN * cin * (uc_ukr_dims(&mr, &nr, &kc) ? cout : round_up(cout, nr));
}

int64_t uc_winograd_cache_bytes(void)
{
    pthread_mutex_lock(&cache_mu);
    int64_t n = cache_held;
    pthread_mutex_unlock(&cache_mu);
    return n;
}

static const float *cached_transform(uc_winograd_slot *s, uc_wref wgt, int64_t cin, int64_t cout)
{
    pthread_mutex_lock(&cache_mu);
    if (cache_budget < 0)
        cache_budget = (int64_t)CACHE_MB << 20;
    if (!s->state && wgt.h && !cache_explicit)
        s->state = -1; /* half-precision weights were chosen to save memory: no F32 transforms by default */
    if (!s->state) {
        int64_t n = uc_winograd_packed_floats(cin, cout), bytes = n * (int64_t)sizeof(float);
        s->state = -1;
        if (cache_held + bytes <= cache_budget) {
            s->u = uc_alloc_raw((size_t)n, sizeof(float));
            s->bytes = bytes;
            cache_held += bytes;
            /* the blocks of a run, each as the run transforms it */
            wplan p = make_plan(1, cin, WM, WM, cout, 1);
            for (int64_t c0 = 0; c0 < cout; c0 += p.block) {
                int64_t nb = UC_MIN(p.block, cout - c0);
                transform_weights(wgt, cin, c0, nb, chan_panel(&p, nb), s->u + WN * cin * c0);
            }
            s->state = 1;
        }
    }
    pthread_mutex_unlock(&cache_mu);
    return s->u;
}

void uc_winograd_conv3x3_cached(const float *x, int64_t B, int64_t cin, int64_t h, int64_t w, uc_wref wgt,
                                uc_winograd_slot *slot, const float *bias, int64_t cout, float *y, int accumulate,
                                float *scratch)
{
    const float *u = slot ? cached_transform(slot, wgt, cin, cout) : NULL;
    wrun(x, B, cin, h, w, wgt, u, bias, cout, y, accumulate, scratch);
}

void uc_winograd_slot_free(uc_winograd_slot *s)
{
    if (!s || s->state != 1)
        return;
    pthread_mutex_lock(&cache_mu);
    cache_held -= s->bytes;
    pthread_mutex_unlock(&cache_mu);
    uc_free(s->u);
    memset(s, 0, sizeof *s);
}
