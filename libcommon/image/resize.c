/* resize.c - antialiased bicubic resampling, as PyTorch's CPU kernel for
 * interpolate(mode='bicubic', antialias=True, align_corners=False) on float
 * tensors (the path torchvision's resize takes).
 *
 * Separable, in two passes: along the width first (the contiguous axis),
 * then along the height; an axis whose size does not change is skipped (its
 * pass would be the identity). Per output index i of an axis resized from n
 * to m:
 *   scale   = n / m                          (float)
 *   support = 2 * max(scale, 1)              (bicubic has 4 taps at scale 1)
 *   center  = scale * (i + 0.5)
 *   taps j in [trunc(center - support + 0.5), trunc(center + support + 0.5))
 *           clipped to [0, n)
 *   w_j     = cubic((j - center + 0.5) / max(scale, 1)), cubic with a = -0.5
 * and the weights are divided by their sum (taps outside the image are
 * dropped, not replicated). Weights and sums are float, accumulated in tap
 * order, as the reference does; the result is not clamped. */
#include "libcommon/image/resize.h"

#include <math.h>
#include <string.h>

#include "formats/base.h"

/* Keys' cubic convolution kernel with a = -0.5 (PIL's and the AA path's). */
static float cubic(float x)
{
    const float a = -0.5f;
    x = fabsf(x);
    if (x < 1.0f)
        return ((a + 2.0f) * x - (a + 3.0f)) * x * x + 1.0f;
    if (x < 2.0f)
        return ((a * x - 5.0f * a) * x + 8.0f * a) * x - 4.0f * a;
    return 0.0f;
}

/* The taps of one axis: for each output index, the first source index, the
 * number of taps and `maxtaps` normalised weights. */
typedef struct {
    int64_t *first;  /* [m] */
    int64_t *count;  /* [m] */
    float *w;        /* [m, maxtaps] */
    int64_t maxtaps;
} axis_taps;

static void taps_init(axis_taps *t, int64_t n, int64_t m)
{
    float scale = (float)n / (float)m;
    float support = scale >= 1.0f ? 2.0f * scale : 2.0f;
    float invscale = scale >= 1.0f ? (float)(1.0 / scale) : 1.0f;
    t->maxtaps = (int64_t)ceilf(support) * 2 + 1;
    t->first = uc_alloc((size_t)m, sizeof *t->first);
    t->count = uc_alloc((size_t)m, sizeof *t->count);
    t->w = uc_alloc((size_t)(m * t->maxtaps), sizeof *t->w);
    for (int64_t i = 0; i < m; i++) {
        /* the mixed float/double arithmetic follows the reference */
        float center = (float)(scale * (i + 0.5));
        int64_t lo = (int64_t)(center - support + 0.5);
        int64_t hi = (int64_t)(center + support + 0.5);
        if (lo < 0)
            lo = 0;
        if (hi > n)
            hi = n;
        int64_t cnt = hi - lo;
        if (cnt < 0)
            cnt = 0;
        if (cnt > t->maxtaps)
            cnt = t->maxtaps;
        float *w = t->w + i * t->maxtaps, total = 0.0f;
        for (int64_t j = 0; j < cnt; j++) {
            w[j] = cubic((float)(((float)(j + lo) - center + 0.5) * invscale));
            total += w[j];
        }
        if (total != 0.0f)
            for (int64_t j = 0; j < cnt; j++)
                w[j] /= total;
        t->first[i] = lo;
        t->count[i] = cnt;
    }
}

static void taps_free(axis_taps *t)
{
    uc_free(t->first);
    uc_free(t->count);
    uc_free(t->w);
}

/* One pass along an axis of length n (element stride `step`) into length m,
 * for `lines` independent lines. in line k starts at in + k * in_line and
 * out line k at out + k * out_line; both have the same stride `step` along
 * the resized axis. Used for rows (step 1) and columns (step W). */
static void resample_axis(const float *in, float *out, int64_t n, int64_t m, int64_t lines, int64_t inner,
                          int64_t step)
{
    axis_taps t;
    taps_init(&t, n, m);
    /* lines = outer count; inner = elements per outer block that share taps */
    for (int64_t o = 0; o < lines; o++) {
        const float *src = in + o * n * step;
        float *dst = out + o * m * step;
        for (int64_t i = 0; i < m; i++) {
            const float *w = t.w + i * t.maxtaps;
            const float *s0 = src + t.first[i] * step;
            float *d = dst + i * step;
            for (int64_t k = 0; k < inner; k++) {
                float acc = 0.0f;
                if (t.count[i] > 0) {
                    acc = s0[k] * w[0];
                    for (int64_t j = 1; j < t.count[i]; j++)
                        acc += s0[j * step + k] * w[j];
                }
                d[k] = acc;
            }
        }
    }
    taps_free(&t);
}

void uc_resize_aa(const float *in, int64_t C, int64_t H, int64_t W, float *out, int64_t oh, int64_t ow)
{
    if (H == oh && W == ow) {
        memcpy(out, in, (size_t)(C * H * W) * sizeof *out);
        return;
    }
    const float *src = in;
    float *tmp = NULL;
    if (W != ow) {
        /* rows: C*H lines of W -> ow, contiguous */
        float *dst = H != oh ? (tmp = uc_alloc((size_t)(C * H * ow), sizeof *tmp)) : out;
        resample_axis(src, dst, W, ow, C * H, 1, 1);
        src = dst;
    }
    if (H != oh) {
        /* columns: per channel, H -> oh with stride ow, ow columns sharing taps */
        resample_axis(src, out, H, oh, C, ow, ow);
    }
    uc_free(tmp);
}
