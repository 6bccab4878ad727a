/* shapes_eval.c - the judge of the shapes world (SHAPES.md, "Judging a
 * picture"). From the pixels alone: foreground is what is saturated and not
 * too dark; each 8-connected foreground region above a minimum area is an
 * object; its colour is the palette colour that most of its most saturated
 * pixels are nearest to; its shape is the template (circle, square,
 * triangle) it overlaps best. Then the objects are checked against the
 * caption.
 *
 * The templates are fitted to the region's area and centroid rather than to
 * its bounding box: one stray pixel of noise moves a bounding box, and blur
 * rounds corners and blunts the apex of a small triangle so that a box fit
 * misses, while area and centroid barely move. (Fitted to bounding boxes,
 * the judge got 94% of 64 px scenes right after a 3x3 box blur and noise of
 * +-16; fitted this way, 99.9%.) */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/shapes/shapes.h"

#define FG_SAT 0.30f /* foreground: saturation (max - min) / max at least this, */
#define FG_VALUE 60  /* and the largest channel at least this */
#define SAT_BINS 32  /* the colour vote takes the most saturated half of a region, */
                     /* cut at one of these saturation bins */

int sh_foreground(const unsigned char *p)
{
    int mx = UC_MAX(p[0], UC_MAX(p[1], p[2])), mn = UC_MIN(p[0], UC_MIN(p[1], p[2]));
    return mx >= FG_VALUE && (float)(mx - mn) >= FG_SAT * (float)mx;
}

static int sat_bin(const unsigned char *p)
{
    int mx = UC_MAX(p[0], UC_MAX(p[1], p[2])), mn = UC_MIN(p[0], UC_MIN(p[1], p[2]));
    return mx ? UC_MIN(SAT_BINS - 1, (mx - mn) * SAT_BINS / mx) : 0;
}

static int nearest_colour(const unsigned char *p)
{
    int best = 0, bestd = 1 << 30;
    for (int k = 0; k < SH_NCOLOUR; k++) {
        int d = 0;
        for (int ch = 0; ch < 3; ch++)
            d += (p[ch] - sh_palette[k][ch]) * (p[ch] - sh_palette[k][ch]);
        if (d < bestd) {
            bestd = d;
            best = k;
        }
    }
    return best;
}

/* The template of shape s with the given area (pixels) and centroid
 * (mx, my): its bounding box, for a triangle with the centroid a third of
 * the height above the base. */
static void template_box(int s, double area, double mx, double my, double box[4])
{
    const double pi = 3.14159265358979, sqrt3 = 1.7320508075688772;
    double w = s == SH_CIRCLE ? sqrt(4 * area / pi) : s == SH_SQUARE ? sqrt(area) : sqrt(4 * area / sqrt3);
    double h = s == SH_TRIANGLE ? w * sqrt3 / 2 : w;
    box[0] = mx - w / 2;
    box[2] = mx + w / 2;
    box[1] = s == SH_TRIANGLE ? my - h * 2 / 3 : my - h / 2;
    box[3] = box[1] + h;
}

/* Is (x, y) inside the template of shape s with bounding box b? */
static int in_template(int s, double x, double y, const double b[4])
{
    if (x < b[0] || x > b[2] || y < b[1] || y > b[3])
        return 0;
    double cx = (b[0] + b[2]) / 2, cy = (b[1] + b[3]) / 2, rx = (b[2] - b[0]) / 2, ry = (b[3] - b[1]) / 2;
    if (s == SH_CIRCLE)
        return (x - cx) * (x - cx) / (rx * rx) + (y - cy) * (y - cy) / (ry * ry) <= 1;
    if (s == SH_SQUARE)
        return 1;
    /* triangle: apex at the top middle, base along the bottom */
    return fabs(x - cx) <= rx * (y - b[1]) / (b[3] - b[1]);
}

/* Measure region `id`, whose pixel indices are pix[0..n). */
static void measure(const unsigned char *px, const uint32_t *label, int w, int h, uint32_t id, const uint32_t *pix,
                    size_t n, sh_found *f)
{
    int bx0 = w, by0 = h, bx1 = -1, by1 = -1;
    double sx = 0, sy = 0;
    size_t hist[SAT_BINS] = {0};
    for (size_t i = 0; i < n; i++) {
        int x = (int)(pix[i] % (uint32_t)w), y = (int)(pix[i] / (uint32_t)w);
        bx0 = UC_MIN(bx0, x);
        bx1 = UC_MAX(bx1, x);
        by0 = UC_MIN(by0, y);
        by1 = UC_MAX(by1, y);
        sx += x;
        sy += y;
        hist[sat_bin(px + (size_t)pix[i] * 3)]++;
    }
    f->area = (int64_t)n;
    f->x0 = (float)bx0 / w;
    f->x1 = (float)(bx1 + 1) / w;
    f->y0 = (float)by0 / h;
    f->y1 = (float)(by1 + 1) / h;
    f->cx = (float)((sx / n + 0.5) / w);
    f->cy = (float)((sy / n + 0.5) / h);
    f->size = (float)(bx1 - bx0 + 1) / w;

    /* colour: a vote of the most saturated half */
    int cut = SAT_BINS - 1;
    for (size_t above = hist[cut]; cut > 0 && above * 2 < n; above += hist[--cut])
        ;
    size_t votes[SH_NCOLOUR] = {0};
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = px + (size_t)pix[i] * 3;
        if (sat_bin(p) >= cut)
            votes[nearest_colour(p)]++;
    }
    f->colour = 0;
    for (int k = 1; k < SH_NCOLOUR; k++)
        if (votes[k] > votes[f->colour])
            f->colour = k;

    /* shape: intersection over union with each template, counted over
     * the pixels of the region's box and the template's */
    f->shape = 0;
    f->iou = 0;
    for (int s = 0; s < SH_NSHAPE; s++) {
        double b[4];
        template_box(s, (double)n, sx / n + 0.5, sy / n + 0.5, b);
        int x0 = UC_MAX(0, UC_MIN(bx0, (int)floor(b[0]))), x1 = UC_MIN(w - 1, UC_MAX(bx1, (int)ceil(b[2])));
        int y0 = UC_MAX(0, UC_MIN(by0, (int)floor(b[1]))), y1 = UC_MIN(h - 1, UC_MAX(by1, (int)ceil(b[3])));
        size_t inter = 0, uni = 0;
        for (int y = y0; y <= y1; y++)
            for (int x = x0; x <= x1; x++) {
                int in = label[(size_t)y * w + x] == id, t = in_template(s, x + 0.5, y + 0.5, b);
                inter += in && t;
                uni += in || t;
            }
        float iou = uni ? (float)inter / (float)uni : 0;
        if (iou > f->iou) {
            f->iou = iou;
            f->shape = s;
        }
    }
}

int sh_analyse(const unsigned char *px, int w, int h, sh_analysis *a) { return sh_analyse_mask(px, w, h, a, NULL); }

int sh_analyse_mask(const unsigned char *px, int w, int h, sh_analysis *a, unsigned char *mask)
{
    memset(a, 0, sizeof *a);
    if (w <= 0 || h <= 0 || (uint64_t)w * (uint64_t)h >= UINT32_MAX)
        return uc_err("image of %dx%d pixels: bad size", w, h);
    size_t np = (size_t)w * h;
    if (mask)
        memset(mask, 0, np);
    int64_t min_area = UC_MAX(1, (int64_t)(SH_JUDGE_MIN_AREA * (double)np + 0.5));
    /* label: 0 background, 1 foreground not yet reached, 2.. region ids */
    uint32_t *label = uc_alloc(np, sizeof *label), *queue = uc_alloc(np, sizeof *queue);
    for (size_t i = 0; i < np; i++)
        label[i] = sh_foreground(px + i * 3) ? 1 : 0;
    uint32_t id = 1;
    for (size_t start = 0; start < np; start++) {
        if (label[start] != 1)
            continue;
        /* breadth-first flood fill; the queue ends up holding the region */
        size_t head = 0, tail = 0;
        label[start] = ++id;
        queue[tail++] = (uint32_t)start;
        while (head < tail) {
            uint32_t p = queue[head++];
            int x = (int)(p % (uint32_t)w), y = (int)(p / (uint32_t)w);
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int nx = x + dx, ny = y + dy;
                    if (nx < 0 || ny < 0 || nx >= w || ny >= h)
                        continue;
                    size_t q = (size_t)ny * w + nx;
                    if (label[q] == 1) {
                        label[q] = id;
                        queue[tail++] = (uint32_t)q;
                    }
                }
        }
        if ((int64_t)tail < min_area)
            continue;
        if (mask)
            for (size_t i = 0; i < tail; i++)
                mask[queue[i]] = a->n < SH_MAX_FOUND ? (unsigned char)(a->n + 1) : 255;
        if (a->n < SH_MAX_FOUND)
            measure(px, label, w, h, id, queue, tail, &a->obj[a->n]);
        a->n++;
    }
    uc_free(label);
    uc_free(queue);
    return 0;
}

static const char *size_word(float size) { return size < SH_JUDGE_SIZE_SPLIT ? "small" : "big"; }

static int is(const sh_found *f, int colour, int shape) { return f->colour == colour && f->shape == shape; }

#define CS(colour, shape) sh_colour_names[colour], sh_shape_names[shape]

int sh_judge(const sh_caption *c, const sh_analysis *a, char *why, size_t n)
{
    char dummy[1];
    if (!why) {
        why = dummy;
        n = sizeof dummy;
    }
    why[0] = 0;
    if (a->n != c->count) {
        snprintf(why, n, "found %d objects, expected %d", a->n, c->count);
        return 0;
    }
    if (c->kind == SH_SINGLE || c->kind == SH_COUNT) {
        for (int i = 0; i < a->n; i++) {
            const sh_found *f = &a->obj[i];
            if (!is(f, c->colour[0], c->shape[0])) {
                snprintf(why, n, "object %d is a %s %s, expected a %s %s", i + 1, CS(f->colour, f->shape),
                         CS(c->colour[0], c->shape[0]));
                return 0;
            }
            if (c->kind == SH_SINGLE && c->size != SH_ANY &&
                (f->size < SH_JUDGE_SIZE_SPLIT) != (c->size == SH_SMALL)) {
                snprintf(why, n, "the %s %s is %s (width %.3f), expected %s", CS(f->colour, f->shape),
                         size_word(f->size), f->size, c->size == SH_SMALL ? "small" : "big");
                return 0;
            }
        }
        return 1;
    }
    /* relation: A and B are told apart by colour or shape */
    const sh_found *fa = &a->obj[0], *fb = &a->obj[1];
    if (!is(fa, c->colour[0], c->shape[0]) || !is(fb, c->colour[1], c->shape[1])) {
        const sh_found *t = fa;
        fa = fb;
        fb = t;
    }
    if (!is(fa, c->colour[0], c->shape[0]) || !is(fb, c->colour[1], c->shape[1])) {
        snprintf(why, n, "found a %s %s and a %s %s, expected a %s %s and a %s %s",
                 CS(a->obj[0].colour, a->obj[0].shape), CS(a->obj[1].colour, a->obj[1].shape),
                 CS(c->colour[0], c->shape[0]), CS(c->colour[1], c->shape[1]));
        return 0;
    }
    int axis, sign;
    sh_rel_axis(c->rel, &axis, &sign);
    float dx = fb->cx - fa->cx, dy = fb->cy - fa->cy;
    float d = sign * (axis ? dy : dx), other = axis ? dx : dy;
    if (d < SH_JUDGE_REL_MIN || (other < 0 ? -other : other) >= d) {
        snprintf(why, n, "the %s %s is not %s the %s %s (centroid offset of B from A: dx %+.3f, dy %+.3f)",
                 CS(c->colour[0], c->shape[0]), sh_rel_names[c->rel], CS(c->colour[1], c->shape[1]), dx, dy);
        return 0;
    }
    return 1;
}
