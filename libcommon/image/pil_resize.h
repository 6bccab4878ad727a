/* pil_resize.h - Pillow's 8-bit resampling, bit for bit, for CLIP's image
 * preprocessing (torchvision Resize on a PIL image calls Image.resize).
 *
 * Bicubic: Pillow's separable fixed-point resampler (Resample.c): filter
 * a = -0.5 with its support widened by the downscale factor, one row of
 * double weights per output pixel normalised to sum 1 and then rounded to
 * 22 fractional bits; the horizontal pass runs first into an 8-bit clamped
 * intermediate, then the vertical pass. Nearest: Pillow's affine scale
 * (Geometry.c), the filter Pillow always uses for palette images.
 *
 * Both compute only a window [x0, x0+cw) x [y0, y0+ch) of the ow x oh result
 * (a center crop needs no more), each pixel exactly as the full resize gives
 * it. Images are interleaved, C channels (1..4), resampled independently. */
#ifndef UNCLIP_PIL_RESIZE_H
#define UNCLIP_PIL_RESIZE_H

#include <stddef.h>
#include <stdint.h>

/* in[h][w][C] -> out[ch][cw][C]. -1 and uc_err on bad sizes. When ow == w
 * (oh == h) the horizontal (vertical) pass is skipped, as Pillow does. */
int uc_pil_resize_bicubic(const uint8_t *in, int w, int h, int C, int ow, int oh, int x0, int y0, int cw,
                          int ch, uint8_t *out);
int uc_pil_resize_nearest(const uint8_t *in, int w, int h, int C, int ow, int oh, int x0, int y0, int cw,
                          int ch, uint8_t *out);

/* Pillow's RGBA <-> RGBa (and LA <-> La) conversions, in place on n pixels
 * of C channels (2 or 4) whose last channel is alpha: premultiply rounds
 * c * a / 255; unpremultiply gives 255 * c / a (integer division, clamped),
 * leaving pixels with alpha 0 or 255 unchanged. */
void uc_pil_premultiply(uint8_t *px, size_t n, int C);
void uc_pil_unpremultiply(uint8_t *px, size_t n, int C);

#endif
