/* pil_resize.c - see pil_resize.h. The arithmetic follows Pillow 9.x
 * (src/libImaging/Resample.c, Geometry.c, Convert.c) operation for
 * operation, so every byte matches. */
#include "libcommon/image/pil_resize.h"

#include <limits.h>
#include <math.h>
#include <string.h>

#include "formats/base.h"

#define PRECISION_BITS 22 /* 32 - 8 bits of result - 2 bits of headroom */

/* Keys' cubic convolution, a = -0.5 (Pillow's BICUBIC, support 2). */
static double bicubic(double x)
{
    const double a = -0.5;
    if (x < 0.0)
        x = -x;
    if (x < 1.0)
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0)
        return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

/* Fixed-point weights of output pixels o0 .. o0+n-1 along one axis. */
typedef struct {
    int ksize;    /* taps per output pixel (room; first[i+1] are used) */
    int *first;   /* [n]: first source pixel */
    int *count;   /* [n]: number of source pixels */
    int32_t *k;   /* [n][ksize]: weights, 22 fractional bits */
} pil_coeffs;

static void coeffs_free(pil_coeffs *c)
{
    uc_free(c->first);
    uc_free(c->count);
    uc_free(c->k);
}

static void coeffs_make(int in_size, int out_size, int o0, int n, pil_coeffs *c)
{
    /* Pillow passes the box as floats: in1 - in0 = (float)in_size - 0.0f. */
    double scale = (double)(float)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *kd = uc_alloc((size_t)ksize, sizeof *kd);
    c->ksize = ksize;
    c->first = uc_alloc((size_t)n, sizeof *c->first);
    c->count = uc_alloc((size_t)n, sizeof *c->count);
    c->k = uc_alloc((size_t)n * (size_t)ksize, sizeof *c->k);
    for (int i = 0; i < n; i++) {
        int xx = o0 + i;
        double center = 0.0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0)
            xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size)
            xmax = in_size;
        xmax -= xmin;
        if (xmax > ksize) /* cannot happen (Pillow relies on it); bounds the writes */
            xmax = ksize;
        if (xmax < 0)
            xmax = 0;
        for (int x = 0; x < xmax; x++) {
            double w = bicubic((x + xmin - center + 0.5) * ss);
            kd[x] = w;
            ww += w;
        }
        int32_t *k = c->k + (size_t)i * (size_t)ksize;
        for (int x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? kd[x] / ww : kd[x];
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS)) : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        c->first[i] = xmin;
        c->count[i] = xmax;
    }
    uc_free(kd);
}

static uint8_t clip8(int v)
{
    if (v < 0)
        return 0;
    v >>= PRECISION_BITS;
    return v > 255 ? 255 : (uint8_t)v;
}

static int check_sizes(int w, int h, int C, int ow, int oh, int x0, int y0, int cw, int ch)
{
    if (w < 1 || h < 1 || C < 1 || C > 4)
        return uc_err("resize: bad input %dx%dx%d", w, h, C);
    if (ow < 1 || oh < 1 || ow > INT_MAX / 8 || oh > INT_MAX / 8)
        return uc_err("resize: bad output size %dx%d", ow, oh);
    if (x0 < 0 || y0 < 0 || cw < 1 || ch < 1 || cw > ow - x0 || ch > oh - y0)
        return uc_err("resize: window %dx%d+%d+%d outside %dx%d", cw, ch, x0, y0, ow, oh);
    return 0;
}

int uc_pil_resize_bicubic(const uint8_t *in, int w, int h, int C, int ow, int oh, int x0, int y0, int cw,
                          int ch, uint8_t *out)
{
    if (check_sizes(w, h, C, ow, oh, x0, y0, cw, ch))
        return -1;
    int need_h = ow != w, need_v = oh != h;
    pil_coeffs hc = {0}, vc = {0};
    /* Source rows the vertical pass reads. */
    int r0 = y0, r1 = y0 + ch;
    if (need_v) {
        coeffs_make(h, oh, y0, ch, &vc);
        r0 = INT_MAX;
        r1 = 0;
        for (int j = 0; j < ch; j++) {
            r0 = UC_MIN(r0, vc.first[j]);
            r1 = UC_MAX(r1, vc.first[j] + vc.count[j]);
        }
        if (r1 <= r0)
            r0 = r1 = 0;
    }
    /* Horizontal pass into an 8-bit intermediate tmp[r1-r0][cw][C]. */
    size_t rowb = (size_t)cw * (size_t)C;
    uint8_t *tmp = uc_alloc((size_t)(r1 - r0) * rowb + 1, 1);
    if (need_h)
        coeffs_make(w, ow, x0, cw, &hc);
    for (int r = r0; r < r1; r++) {
        const uint8_t *src = in + (size_t)r * (size_t)w * (size_t)C;
        uint8_t *dst = tmp + (size_t)(r - r0) * rowb;
        if (!need_h) {
            memcpy(dst, src + (size_t)x0 * (size_t)C, rowb);
            continue;
        }
        for (int i = 0; i < cw; i++) {
            const int32_t *k = hc.k + (size_t)i * (size_t)hc.ksize;
            const uint8_t *s = src + (size_t)hc.first[i] * (size_t)C;
            for (int c = 0; c < C; c++) {
                int ss = 1 << (PRECISION_BITS - 1);
                for (int x = 0; x < hc.count[i]; x++)
                    ss += s[(size_t)x * (size_t)C + (size_t)c] * k[x];
                dst[(size_t)i * (size_t)C + (size_t)c] = clip8(ss);
            }
        }
    }
    /* Vertical pass. */
    for (int j = 0; j < ch; j++) {
        uint8_t *dst = out + (size_t)j * rowb;
        if (!need_v) {
            memcpy(dst, tmp + (size_t)j * rowb, rowb);
            continue;
        }
        const int32_t *k = vc.k + (size_t)j * (size_t)vc.ksize;
        const uint8_t *s = tmp + (size_t)(vc.first[j] - r0) * rowb;
        for (size_t e = 0; e < rowb; e++) {
            int ss = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < vc.count[j]; y++)
                ss += s[(size_t)y * rowb + e] * k[y];
            dst[e] = clip8(ss);
        }
    }
    uc_free(tmp);
    coeffs_free(&hc);
    coeffs_free(&vc);
    return 0;
}

/* Source index of each output pixel o0 .. o0+n-1 (or -1 outside): Pillow's
 * ImagingScaleAffine, which accumulates the position in double from 0. */
static void nearest_tab(int in_size, int out_size, int o0, int n, int *tab)
{
    double a = (double)(float)in_size / out_size;
    double xo = 0.0 + a * 0.5;
    for (int x = 0; x < o0 + n; x++) {
        int xin = xo < 0.0 ? -1 : (int)xo;
        if (x >= o0)
            tab[x - o0] = xin >= 0 && xin < in_size ? xin : -1;
        xo += a;
    }
}

int uc_pil_resize_nearest(const uint8_t *in, int w, int h, int C, int ow, int oh, int x0, int y0, int cw,
                          int ch, uint8_t *out)
{
    if (check_sizes(w, h, C, ow, oh, x0, y0, cw, ch))
        return -1;
    int *xt = uc_alloc((size_t)cw, sizeof *xt), *yt = uc_alloc((size_t)ch, sizeof *yt);
    if (ow == w && oh == h) { /* Pillow crops instead */
        for (int i = 0; i < cw; i++)
            xt[i] = x0 + i;
        for (int j = 0; j < ch; j++)
            yt[j] = y0 + j;
    } else {
        nearest_tab(w, ow, x0, cw, xt);
        nearest_tab(h, oh, y0, ch, yt);
    }
    for (int j = 0; j < ch; j++) {
        uint8_t *dst = out + (size_t)j * (size_t)cw * (size_t)C;
        for (int i = 0; i < cw; i++) {
            for (int c = 0; c < C; c++)
                dst[(size_t)i * (size_t)C + (size_t)c] =
                    yt[j] < 0 || xt[i] < 0
                        ? 0
                        : in[((size_t)yt[j] * (size_t)w + (size_t)xt[i]) * (size_t)C + (size_t)c];
        }
    }
    uc_free(xt);
    uc_free(yt);
    return 0;
}

void uc_pil_premultiply(uint8_t *px, size_t n, int C)
{
    for (size_t i = 0; i < n; i++, px += C) {
        unsigned a = px[C - 1];
        for (int c = 0; c < C - 1; c++) {
            unsigned t = px[c] * a + 128;
            px[c] = (uint8_t)(((t >> 8) + t) >> 8);
        }
    }
}

void uc_pil_unpremultiply(uint8_t *px, size_t n, int C)
{
    for (size_t i = 0; i < n; i++, px += C) {
        unsigned a = px[C - 1];
        if (a == 0 || a == 255)
            continue;
        for (int c = 0; c < C - 1; c++) {
            unsigned v = 255u * px[c] / a;
            px[c] = (uint8_t)(v > 255 ? 255 : v);
        }
    }
}
