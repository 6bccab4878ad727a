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

#include <string.h>

#include "formats/base.h"
#include "libcommon/nn/ops.h"

#define WM 4         /* output tile side */
#define WA (WM + 2)  /* input tile side */
#define WN (WA * WA) /* positions of a transformed tile: one product each */
#define VB 16        /* lanes of the transforms */
/* Scratch budgets in floats per position: V holds cin x (tiles of a chunk),
 * U cin x (output channels of a block); a chunk is at least one tile row, a
 * block at least MIN_BLOCK channels (the products need that much width).
 * Chunks and blocks are split evenly. */
#define V_BUDGET ((int64_t)256 << 10)
#define U_BUDGET ((int64_t)512 << 10)
#define MIN_BLOCK 128

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

static inline void g_1d(float *o, int64_t os, const float *x0, const float *x1, const float *x2)
{
    for (int l = 0; l < VB; l++) {
        float a = x0[l], b = x1[l], c = x2[l];
        o[l] = a * (1.0f / 4);
        o[os + l] = (a + b + c) * (-1.0f / 6);
        o[2 * os + l] = (a - b + c) * (-1.0f / 6);
        o[3 * os + l] = a * (1.0f / 24) + b * (1.0f / 12) + c * (1.0f / 6);
        o[4 * os + l] = a * (1.0f / 24) - b * (1.0f / 12) + c * (1.0f / 6);
        o[5 * os + l] = c;
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

/* p[e * ps + m] = s[3 * m + e], e < 3, m < n: triples by position. */
static inline void unzip3(float *restrict p, int64_t ps, const float *restrict s, int n)
{
    for (int m = 0; m < n; m++)
        p[m] = s[3 * m], p[ps + m] = s[3 * m + 1], p[2 * ps + m] = s[3 * m + 2];
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
} wplan;

static wplan make_plan(int64_t B, int64_t cin, int64_t h, int64_t w, int64_t cout)
{
    wplan p;
    p.th = (h + WM - 1) / WM, p.tw = (w + WM - 1) / WM, p.rows = B * p.th;
    int64_t most_rows = UC_MAX(1, V_BUDGET / (cin * p.tw)), most_co = UC_MAX(MIN_BLOCK, U_BUDGET / cin);
    p.nchunks = (p.rows + most_rows - 1) / most_rows, p.chunk = (p.rows + p.nchunks - 1) / p.nchunks;
    p.nblocks = (cout + most_co - 1) / most_co, p.block = (cout + p.nblocks - 1) / p.nblocks;
    /* With several chunks and several blocks, one transform is redone on
     * every pass of the other loop: the weights' (cout x cin, chunks
     * outside) or the input's (cin x tiles, blocks outside). They cost
     * about the same per element: redo the smaller. */
    p.chunks_outer = cout * (p.nchunks - 1) <= p.rows * p.tw * (p.nblocks - 1);
    return p;
}

int64_t uc_winograd_scratch(int64_t B, int64_t cin, int64_t h, int64_t w, int64_t cout)
{
    wplan p = make_plan(B, cin, h, w, cout);
    int64_t nt = p.chunk * p.tw;
    return WN * (cin * nt + p.block * cin + p.block * nt);
}

typedef struct {
    const float *x, *wgt, *bias;
    float *y, *V, *U, *M;
    int64_t B, cin, h, w;
    int accumulate;
    wplan p;
    int64_t r0, nt;     /* the chunk: nt tiles from tile row r0 on */
    int64_t c0, nb;     /* the block: output channels c0 .. c0+nb */
} job;

/* dst[k] = src[x0 + k] for k < n where 0 <= x0 + k < w (the rest of dst
 * stays zero). */
static void span(float *dst, const float *src, int64_t x0, int64_t n, int64_t w)
{
    int64_t lo = UC_MAX(0, -x0), hi = UC_MIN(n, w - x0);
    if (hi > lo)
        memcpy(dst + lo, src + x0 + lo, (size_t)(hi - lo) * sizeof *dst);
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
static void input_items(void *ctx, int64_t i0, int64_t i1)
{
    const job *j = ctx;
    int64_t h = j->h, w = j->w, groups = (j->nt + VB - 1) / VB, cn = j->cin * j->nt;
    for (int64_t it = i0; it < i1; it++) {
        int64_t ci = it / groups, g0 = it % groups * VB, n = UC_MIN(VB, j->nt - g0);
        /* row a under lane l: the tile's columns 0..3 at cols[a][WM * l], 4..7 at next[a][WM * l] */
        float cols[WA][WM * VB] = {{0}}, next[WA][WM * VB] = {{0}};
        float r[WA][WA][VB], o[WA][WA][VB], p[WM][VB], q[WM][VB];
        for (run u = {0}; next_run(j, g0, n, &u);) {
            const float *xc = j->x + (ci * j->B + u.b) * h * w;
            for (int a = 0; a < WA; a++) {
                int64_t y = u.y0 - 1 + a;
                if (y >= 0 && y < h) {
                    span(cols[a] + WM * u.l0, xc + y * w, u.x0 - 1, WM * (u.l1 - u.l0), w);
                    span(next[a] + WM * u.l0, xc + y * w, u.x0 + WM - 1, WM * (u.l1 - u.l0), w);
                }
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
                put(j->V + (a * WA + e) * cn + ci * j->nt + g0, o[a][e], n);
    }
}

/* U[pos][co][ci] = G g G^T for items (output channel of the block), VB
 * input channels at a time: the kernels' rows (3 * VB triples) along x,
 * then their columns along y. */
static void weight_items(void *ctx, int64_t i0, int64_t i1)
{
    const job *j = ctx;
    int64_t cin = j->cin;
    for (int64_t co = i0; co < i1; co++) {
        const float *g = j->wgt + (j->c0 + co) * cin * 9;
        for (int64_t ci = 0; ci < cin; ci += VB) {
            int64_t n = UC_MIN(VB, cin - ci);
            float last[9 * VB], k[3][3 * VB], r[WA][3 * VB], t[WA][3][VB], u[WA][WA][VB];
            const float *src = g + ci * 9;
            if (n < VB) { /* the last channels: do not read past the kernels */
                memset(last, 0, sizeof last);
                src = memcpy(last, src, (size_t)(9 * n) * sizeof(float));
            }
            unzip3(k[0], 3 * VB, src, 3 * VB); /* k[e][3l + a] = g[ci + l][a][e] */
            for (int m = 0; m < 3 * VB; m += VB)
                g_1d(r[0] + m, 3 * VB, k[0] + m, k[1] + m, k[2] + m);
            for (int e = 0; e < WA; e++)
                unzip3(t[e][0], VB, r[e], VB); /* t[e][a][l] = r[e][3l + a] */
            for (int e = 0; e < WA; e++)
                g_1d(u[0][e], WA * VB, t[e][0], t[e][1], t[e][2]);
            for (int a = 0; a < WA; a++)
                for (int e = 0; e < WA; e++)
                    put(j->U + ((a * WA + e) * j->nb + co) * cin + ci, u[a][e], n);
        }
    }
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
    int64_t h = j->h, w = j->w, groups = (j->nt + VB - 1) / VB, bn = j->nb * j->nt;
    for (int64_t it = i0; it < i1; it++) {
        int64_t co = it / groups, g0 = it % groups * VB, n = UC_MIN(VB, j->nt - g0);
        float d[WA][WA][VB] = {{{0}}}, t[WM][WA][VB], o[WM][VB], out[WM][WM * VB];
        for (int a = 0; a < WA; a++)
            for (int e = 0; e < WA; e++)
                put(d[a][e], j->M + (a * WA + e) * bn + co * j->nt + g0, n);
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
 * thread that takes it (a loop inside a parallel loop runs inline): whole
 * products pack U[pos] once, where splitting one into column blocks packs
 * it per block, and narrow ones (few tiles) would not split at all. */
static void gemm_items(void *ctx, int64_t p0, int64_t p1)
{
    const job *j = ctx;
    for (int64_t pos = p0; pos < p1; pos++)
        uc_gemm(j->nb, j->nt, j->cin, j->U + pos * j->nb * j->cin, j->cin, 1, j->V + pos * j->cin * j->nt, j->nt, 1,
                0.0f, j->M + pos * j->nb * j->nt, j->nt);
}

void uc_winograd_conv3x3(const float *x, int64_t B, int64_t cin, int64_t h, int64_t w, const float *wgt,
                         const float *bias, int64_t cout, float *y, int accumulate, float *scratch)
{
    job j = {.x = x, .wgt = wgt, .bias = bias, .y = y, .B = B, .cin = cin, .h = h, .w = w, .accumulate = accumulate};
    wplan p = j.p = make_plan(B, cin, h, w, cout);
    j.V = scratch;
    j.U = j.V + WN * cin * p.chunk * p.tw;
    j.M = j.U + WN * cin * p.block;
    int64_t held_chunk = -1, held_block = -1; /* what V and U hold */
    for (int64_t i = 0; i < (p.chunks_outer ? p.nchunks : p.nblocks); i++)
        for (int64_t k = 0; k < (p.chunks_outer ? p.nblocks : p.nchunks); k++) {
            int64_t c = p.chunks_outer ? i : k, b = p.chunks_outer ? k : i;
            if (c != held_chunk) {
                j.r0 = c * p.chunk, j.nt = UC_MIN(p.chunk, p.rows - j.r0) * p.tw;
                uc_parallel_for(cin * ((j.nt + VB - 1) / VB), 200.0 * (double)(cin * j.nt), input_items, &j);
                held_chunk = c;
            }
            if (b != held_block) {
                j.c0 = b * p.block, j.nb = UC_MIN(p.block, cout - j.c0);
                uc_parallel_for(j.nb, 100.0 * (double)(j.nb * cin), weight_items, &j);
                held_block = b;
            }
            uc_parallel_for(WN, 2.0 * WN * (double)(j.nb * j.nt * cin), gemm_items, &j);
            uc_parallel_for(j.nb * ((j.nt + VB - 1) / VB), 200.0 * (double)(j.nb * j.nt), output_items, &j);
        }
}
