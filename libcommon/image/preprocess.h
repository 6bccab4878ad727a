/* preprocess.h - CLIP's image preprocessing, bit for bit as OpenAI's
 * clip.load transform computes it on a PIL image. */
#ifndef UNCLIP_PREPROCESS_H
#define UNCLIP_PREPROCESS_H

#include "formats/png.h"

/* clip.clip._transform(n_px) on a decoded image (uc_png_read with
 * keep_palette): Resize(n_px, bicubic) of the shorter side exactly as Pillow
 * (palette images nearest on indices; RGBA and LA premultiplied around the
 * resize; gray resized as one channel), CenterCrop(n_px) with round half to
 * even, convert("RGB") (alpha dropped), /255, (x - mean) / std.
 * mean, std: NULL for CLIP's. out[3, n_px, n_px]. */
int clip_preprocess(const uc_image *img, int n_px, const float *mean, const float *std, float *out);
/* The resized size for an image of w x h (torchvision's rule). */
int clip_resize_size(int w, int h, int n_px, int *ow, int *oh);

#endif
