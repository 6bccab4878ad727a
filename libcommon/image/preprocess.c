/* preprocess.c - CLIP's image preprocessing (clip.clip._transform) on a
 * decoded PNG. See preprocess.h. */
#include "libcommon/image/preprocess.h"

#include <string.h>

#include "formats/base.h"
#include "libcommon/image/pil_resize.h"


static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};

int clip_resize_size(int w, int h, int n_px, int *ow, int *oh)
{
    if (w < 1 || h < 1 || n_px < 1)
        return uc_err("image size %dx%d: empty", w, h);
    int s = UC_MIN(w, h), l = UC_MAX(w, h);
    /* int(n_px * long / short): an exact product, a rounded division */
    double nl = (double)((int64_t)n_px * l) / (double)s;
    if (nl > (double)(1 << 30))
        return uc_err("image size %dx%d: aspect ratio too extreme", w, h);
    if (w <= h)
        *ow = n_px, *oh = (int)nl;
    else
        *ow = (int)nl, *oh = n_px;
    return 0;
}

/* Python's int(round(v / 2.0)) for an integer v >= 0: half to even. */
static int half_round_even(int v) { return v % 2 == 0 ? v / 2 : (v / 2) % 2 == 0 ? v / 2 : v / 2 + 1; }

int clip_preprocess(const uc_image *img, int n_px, const float *mean, const float *std, float *out)
{
    int ow, oh, w = img->w, h = img->h;
    if (!mean)
        mean = clip_mean;
    if (!std)
        std = clip_std;
    if (clip_resize_size(w, h, n_px, &ow, &oh))
        return -1;
    int x0 = half_round_even(ow - n_px), y0 = half_round_even(oh - n_px);
    int C = img->palette ? 1 : img->channels;
    if (C < 1 || C > 4 || !img->px)
        return uc_err("image: unsupported layout (%d channels)", C);
    size_t npx = (size_t)n_px * (size_t)n_px;
    uint8_t *crop = uc_alloc(npx, (size_t)C);
    int rc;
    if (img->palette) {
        rc = uc_pil_resize_nearest(img->px, w, h, 1, ow, oh, x0, y0, n_px, n_px, crop);
    } else if ((C == 2 || C == 4) && (ow != w || oh != h)) {
        /* RGBA -> RGBa, resize, -> RGBA (LA likewise) */
        uint8_t *pm = uc_alloc((size_t)w * (size_t)h, (size_t)C);
        memcpy(pm, img->px, (size_t)w * (size_t)h * (size_t)C);
        uc_pil_premultiply(pm, (size_t)w * (size_t)h, C);
        rc = uc_pil_resize_bicubic(pm, w, h, C, ow, oh, x0, y0, n_px, n_px, crop);
        uc_free(pm);
        uc_pil_unpremultiply(crop, npx, C);
    } else {
        rc = uc_pil_resize_bicubic(img->px, w, h, C, ow, oh, x0, y0, n_px, n_px, crop);
    }
    if (rc) {
        uc_free(crop);
        return -1;
    }
    /* convert("RGB"), ToTensor, Normalize, all in float32 as torch does */
    for (size_t i = 0; i < npx; i++) {
        uint8_t rgb[3];
        if (img->palette) {
            int k = crop[i];
            for (int c = 0; c < 3; c++) /* Pillow's palette beyond its entries is a gray ramp */
                rgb[c] = k < img->nplte ? img->plte[k][c] : (uint8_t)k;
        } else if (C <= 2) {
            rgb[0] = rgb[1] = rgb[2] = crop[i * (size_t)C];
        } else {
            for (int c = 0; c < 3; c++)
                rgb[c] = crop[i * (size_t)C + (size_t)c];
        }
        for (int c = 0; c < 3; c++) {
            float v = (float)rgb[c] / 255.0f;
            out[(size_t)c * npx + i] = (v - mean[c]) / std[c];
        }
    }
    uc_free(crop);
    return 0;
}
