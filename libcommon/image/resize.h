/* resize.h - resampling as the reference pipelines do it.
 *
 * uc_resize_aa: torch.nn.functional.interpolate(mode='bicubic',
 * antialias=True, align_corners=False) on float planes, as torchvision's
 * resize does for Karlo's 64->256 step: cubic a = -0.5, support scaled by
 * the downscale factor, centre (i + 0.5) / scale, weights only for in-range
 * source pixels, renormalised to sum 1; separable (width first? see .c),
 * result not clamped. */
#ifndef UNCLIP_RESIZE_H
#define UNCLIP_RESIZE_H

#include <stdint.h>

/* in: [C, H, W] -> out: [C, oh, ow] */
void uc_resize_aa(const float *in, int64_t C, int64_t H, int64_t W, float *out, int64_t oh, int64_t ow);

#endif
