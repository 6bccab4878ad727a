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
 * The 36 products run on BLIS's micro-kernel (ops.h uc_ukr) directly:
 * the input transform writes the tiles as the kernel's packed A panels
 * and the weight transform writes the weights as its B panels, so nothing
 * is packed twice (uc_gemm on plain matrices where the CPU's kernel has
 * another shape). Tiles are taken in chunks of tile rows and output
 * channels in blocks, so the scratch grows with the channel counts and
 * the width but not with the batch or the height (about 50-150 MB on
 * Karlo's layers).
 *
 * The weight transform is 4x the size of the weights (36 values per 9).
 * uc_winograd_conv3x3 makes it on every call, block by block;
 * uc_winograd_conv3x3_cached keeps it in a slot, made at the first call,
 * while the process's cache stays within its budget (1024 MiB unless
 * uc_winograd_set_cache_mb set one, as the tools do from
 * UNCLIP_WINOGRAD_CACHE_MB; 0 turns the cache off); past that, a slot's
 * weights are transformed per call as without one. Half-precision weights
 * are only cached when a budget was set (their F32 transform is 8x
 * their size, and such files are chosen to save memory). Karlo's decoder would need 4.7 GB
 * for all of its 3x3 convolutions (1.2 GB of F32 weights), an SR UNet
 * about as much. Cached or not, the same transform and the same products
 * run: results do not depend on the cache, nor on the thread count. */
#ifndef UNCLIP_WINOGRAD_H
#define UNCLIP_WINOGRAD_H

#include <stdint.h>

#include "libcommon/nn/bf16.h"

/* Floats of scratch uc_winograd_conv3x3 needs for this shape. */
int64_t uc_winograd_scratch(int64_t B, int64_t cin, int64_t h, int64_t w, int64_t cout);

/* y = conv3x3(x) + bias, or y += conv3x3(x) + bias when accumulate.
 * scratch: uc_winograd_scratch(...) floats. */
void uc_winograd_conv3x3(const float *x, int64_t B, int64_t cin, int64_t h, int64_t w, const float *wgt,
                         const float *bias, int64_t cout, float *y, int accumulate, float *scratch);

/* One weight's cached transform. Zero-initialise; the weights it was made
 * from must stay the same while it lives. */
typedef struct {
    float *u;      /* the transform, or NULL */
    int64_t bytes; /* held by u */
    int state;     /* 0 not tried, 1 made, -1 over the budget when tried */
} uc_winograd_slot;

/* uc_winograd_conv3x3 with the weights F32 or half precision (widened as
 * they are transformed) and the transform kept in slot (NULL: none). */
void uc_winograd_conv3x3_cached(const float *x, int64_t B, int64_t cin, int64_t h, int64_t w, uc_wref wgt,
                                uc_winograd_slot *slot, const float *bias, int64_t cout, float *y, int accumulate,
                                float *scratch);
/* Free a slot's transform (its bytes go back to the budget). */
void uc_winograd_slot_free(uc_winograd_slot *slot);
/* Floats of one weight's transform; bytes the cache holds now. */
int64_t uc_winograd_packed_floats(int64_t cin, int64_t cout);
int64_t uc_winograd_cache_bytes(void);
/* The cache's budget, MiB (0 <= mb <= 1e9), set before the first run; the
 * default, 1024 MiB, a tool may change (unless a budget was set). */
void uc_winograd_set_cache_mb(double mb);
void uc_winograd_default_cache_mb(double mb);

#endif
