/* norm.h - GroupNorm on the channel-major batch layout of the UNet
 * (x[C, B, hw]: each channel holds the B images one after another), fused
 * with the FiLM and SiLU that follow it in the UNet's blocks, as one pass
 * over the data. Statistics in double over 16 float lanes, two-pass
 * variance; LayerNorm (rows) is uc_layernorm in ops.h. */
#ifndef UNCLIP_NORM_H
#define UNCLIP_NORM_H

#include <stdint.h>

/* GroupNorm(groups, eps) of x[C, B, hw] into y (may alias x), C a multiple
 * of groups, with gains gamma[C] and biases beta[C]; then, when film is not
 * NULL, y * (1 + film[b, c]) + film[b, C + c] (film [B, 2C]); then SiLU
 * when silu. Rows are spread over the threads of ops.h; the result does
 * not depend on their number. */
void uc_group_norm(const float *x, float *y, int64_t C, int64_t B, int64_t hw, int groups, double eps,
                   const float *gamma, const float *beta, const float *film, int silu);

#endif
