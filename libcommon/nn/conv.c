/* conv.c - see conv.h. */
#include "libcommon/nn/conv.h"

#include <string.h>

#include "formats/base.h"
#include "libcommon/nn/ops.h"
#include "libcommon/nn/winograd.h"

/* im2col tile budget in floats (rows of the output are taken so that the
 * column matrix stays below this, at least one row). */
#define COL_BUDGET ((int64_t)4 << 20)

static int64_t col_need(int64_t K, int64_t rows, int64_t wo)
{
    int64_t per_row = K * wo, r = COL_BUDGET / per_row;
    r = r < 1 ? 1 : r > rows ? rows : r;
    return r * per_row;
}

/* Winograd pays for 3x3 stride-1 convolutions once there are enough 4x4
 * tiles to amortise the weight transform, and input channels to amortise
 * the output transform. Measured against im2col on Karlo's layers: 1.4x
 * (1 thread) to 1.8x (2 threads) faster at 32 tiles (16x16, batch 2),
 * 1.9-3.4x from 64 tiles on, but 0.6-0.85x at 16-18 tiles; with 3 input
 * channels 0.35x, with 16 even, with 32 1.5x. */
int uc_conv2d_winograd(int k, int stride, int64_t B, int64_t cin, int64_t ho, int64_t wo)
{
    return k == 3 && stride == 1 && cin >= 32 && B * ((ho + 3) / 4) * ((wo + 3) / 4) >= 32;
}

int64_t uc_conv2d_scratch(int64_t B, int64_t cin, int64_t cout, int k, int stride, int64_t ho, int64_t wo)
{
    if (uc_conv2d_winograd(k, stride, B, cin, ho, wo))
        return uc_winograd_scratch(B, cin, ho, wo, cout);
    return k > 1 ? col_need(cin * k * k, B * ho, wo) : 0;
}

/* Activations are [C, B*H, W]: the images of the batch stacked as one tall
 * image per channel, so row r is row r % H of image r / H. */

/* Column matrix of output rows r0 .. r0+nr of a k x k convolution:
 * col[(ci * k + ky) * k + kx][(r - r0) * wo + xo], zero outside the image. */
typedef struct {
    const float *x;
    float *col;
    int64_t B, h, w, ho, wo;
    int k, stride;
    int64_t r0, nr;
} im2col_job;

static void im2col_items(void *ctx, int64_t c0, int64_t c1)
{
    const im2col_job *j = ctx;
    int64_t B = j->B, h = j->h, w = j->w, ho = j->ho, wo = j->wo, n = j->nr * wo, pad = j->k / 2;
    int k = j->k, stride = j->stride;
    for (int64_t ci = c0; ci < c1; ci++) {
        const float *xc = j->x + ci * B * h * w;
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                float *dst = j->col + ((ci * k + ky) * k + kx) * n;
                /* output columns whose input column is inside the image */
                int64_t x0 = 0, x1 = wo;
                while (x0 < wo && x0 * stride + kx - pad < 0)
                    x0++;
                while (x1 > x0 && (x1 - 1) * stride + kx - pad >= w)
                    x1--;
                for (int64_t r = j->r0; r < j->r0 + j->nr; r++) {
                    float *d = dst + (r - j->r0) * wo;
                    int64_t b = r / ho, yi = (r % ho) * stride + ky - pad;
                    if (yi < 0 || yi >= h) {
                        memset(d, 0, (size_t)wo * sizeof *d);
                        continue;
                    }
                    const float *src = xc + (b * h + yi) * w + kx - pad;
                    for (int64_t xo = 0; xo < x0; xo++)
                        d[xo] = 0;
                    if (stride == 1)
                        memcpy(d + x0, src + x0, (size_t)(x1 - x0) * sizeof *d);
                    else
                        for (int64_t xo = x0; xo < x1; xo++)
                            d[xo] = src[xo * stride];
                    for (int64_t xo = x1; xo < wo; xo++)
                        d[xo] = 0;
                }
            }
    }
}

void uc_conv2d(const float *x, int64_t B, int64_t cin, int64_t h, int64_t w, const float *wgt, const float *bias,
               int64_t cout, int k, int stride, float *y, int accumulate, float *col, int64_t col_n,
               uc_winograd_slot *slot)
{
    uc_conv2d_w(x, B, cin, h, w, (uc_wref){.f = wgt}, bias, cout, k, stride, y, accumulate, col, col_n, slot);
}

void uc_conv2d_w(const float *x, int64_t B, int64_t cin, int64_t h, int64_t w, uc_wref wgt, const float *bias,
                 int64_t cout, int k, int stride, float *y, int accumulate, float *col, int64_t col_n,
                 uc_winograd_slot *slot)
{
    int64_t pad = k / 2;
    int64_t ho = (h + 2 * pad - k) / stride + 1, wo = (w + 2 * pad - k) / stride + 1;
    if (uc_conv2d_winograd(k, stride, B, cin, ho, wo) && col_n >= uc_winograd_scratch(B, cin, h, w, cout)) {
        uc_winograd_conv3x3_cached(x, B, cin, h, w, wgt, slot, bias, cout, y, accumulate, col);
        return;
    }
    int64_t N = B * ho * wo;
    for (int64_t co = 0; co < cout; co++) {
        float *yr = y + co * N, bv = bias[co];
        if (accumulate)
            for (int64_t j = 0; j < N; j++)
                yr[j] += bv;
        else
            for (int64_t j = 0; j < N; j++)
                yr[j] = bv;
    }
    if (k == 1 && stride == 1) {
        uc_gemm_w(cout, N, cin, wgt, cin, x, N, 1, 1.0f, y, N);
        return;
    }
    int64_t K = cin * k * k, rows = B * ho;
    int64_t tile = col_n / (K * wo);
    if (tile < 1)
        tile = 1; /* callers guarantee that one row fits */
    for (int64_t r0 = 0; r0 < rows; r0 += tile) {
        int64_t nr = UC_MIN(tile, rows - r0), n = nr * wo;
        im2col_job j = {x, col, B, h, w, ho, wo, k, stride, r0, nr};
        uc_parallel_for(cin, (double)(K * n), im2col_items, &j);
        uc_gemm_w(cout, n, K, wgt, K, col, n, 1, 1.0f, y + r0 * wo, N);
    }
}
