/* conv.h - 2-D convolution on the channel-major batch layout of the UNet
 * (models/unet.h): x[cin, B*h, w], the B images stacked along the rows of
 * each channel and never mixed. 3x3 stride-1 convolutions with enough
 * input channels and tiles run by Winograd F(4x4, 3x3) (winograd.h), the
 * other k x k ones as GEMMs over im2col tiles of whole output rows, 1x1
 * stride-1 ones as one direct GEMM. Products go through BLIS (uc_gemm, or
 * its micro-kernel for Winograd's), or through nn/bf16.h's kernels when
 * the weights are half precision (uc_conv2d_w); the caller owns all
 * memory. */
#ifndef UNCLIP_CONV_H
#define UNCLIP_CONV_H

#include <stdint.h>

#include "libcommon/nn/winograd.h"

/* y[cout, B*ho, wo] = conv(x[cin, B*h, w]) + bias with a k x k kernel (k
 * odd; weights [cout, cin, k, k]), zero padding k/2, stride 1 or 2.
 * accumulate adds to y instead. col: scratch of col_n floats, at least
 * cin*k*k*wo when k > 1 (the column matrix is built in tiles of whole
 * output rows that fit). A convolution for which uc_conv2d_winograd holds
 * runs by Winograd when col_n holds uc_winograd_scratch(B, cin, h, w, cout)
 * floats, with its weight transform kept in slot (NULL: made per call;
 * winograd.h uc_winograd_conv3x3_cached). */
void uc_conv2d(const float *x, int64_t B, int64_t cin, int64_t h, int64_t w, const float *wgt, const float *bias,
               int64_t cout, int k, int stride, float *y, int accumulate, float *col, int64_t col_n,
               uc_winograd_slot *slot);

/* uc_conv2d with the weights F32 or half precision (nn/bf16.h). */
void uc_conv2d_w(const float *x, int64_t B, int64_t cin, int64_t h, int64_t w, uc_wref wgt, const float *bias,
                 int64_t cout, int k, int stride, float *y, int accumulate, float *col, int64_t col_n,
                 uc_winograd_slot *slot);

/* Whether a convolution of output size ho x wo takes the Winograd path. */
int uc_conv2d_winograd(int k, int stride, int64_t B, int64_t cin, int64_t ho, int64_t wo);

/* Floats of col that give a convolution of output size ho x wo its fastest
 * path: the Winograd scratch, or an im2col tile of at most 4 Mi floats
 * (at least one output row); 0 for 1x1. */
int64_t uc_conv2d_scratch(int64_t B, int64_t cin, int64_t cout, int k, int stride, int64_t ho, int64_t wo);

#endif
