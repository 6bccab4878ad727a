/* winograd.h - 3x3 convolution (stride 1, zero padding 1) by Winograd's
 * minimal filtering algorithm F(4x4, 3x3) (Lavin & Gray 2016, points
 * 0, +-1, +-2, infinity).
 *
 * Each 4x4 output tile is A^T [(G g G^T) . (B^T d B)] A, d the 6x6 input
 * tile around it and g a 3x3 kernel, so the sum over input channels turns
 * into 36 matrix products, one per position of the 6x6 transformed tile:
 * U[36][cout][cin] x V[36][cin][tiles] -> M[36][cout][tiles]. That is 4x
 * fewer multiplications than a direct convolution, at an error about ten
 * times f32 rounding: 1e-6 to 2e-5 of the output's scale, growing with the
 * input channels (tests/unit/test_winograd.c).
 *
 * Layout as uc_conv2d: x[cin, B*h, w] (the B images stacked along the
 * rows, never mixed), weights [cout, cin, 3, 3], y[cout, B*h, w]; any h
 * and w (partial tiles at the right and bottom edges are zero-padded).
 * The weights are transformed on every call into the scratch buffer (no
 * transformed copy of the model is kept); tiles are taken in chunks of
 * tile rows and output channels in blocks, so the scratch grows with the
 * channel counts and the width but not with the batch or the height
 * (about 50-120 MB on Karlo's layers). Results do not depend on the
 * thread count. */
#ifndef UNCLIP_WINOGRAD_H
#define UNCLIP_WINOGRAD_H

#include <stdint.h>

/* Floats of scratch uc_winograd_conv3x3 needs for this shape. */
int64_t uc_winograd_scratch(int64_t B, int64_t cin, int64_t h, int64_t w, int64_t cout);

/* y = conv3x3(x) + bias, or y += conv3x3(x) + bias when accumulate.
 * scratch: uc_winograd_scratch(...) floats. */
void uc_winograd_conv3x3(const float *x, int64_t B, int64_t cin, int64_t h, int64_t w, const float *wgt,
                         const float *bias, int64_t cout, float *y, int accumulate, float *scratch);

#endif
