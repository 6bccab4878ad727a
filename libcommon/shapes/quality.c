/* quality.c - what a person sees in a picture of the shapes world beyond
 * its caption being right: a clean ground, objects of the world's shapes,
 * and layouts that vary as much as the world's (shapes.h). */
#include <math.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/shapes/shapes.h"

/* ---- ground ---- */

int sh_ground_margin(int w, int h)
{
    int side = UC_MAX(w, h);
    return UC_MAX(1, (side + 16) / 32);
}

/* out = in dilated by r pixels along one axis: (sx, sy) = (1, 0) rows,
 * (0, 1) columns. */
static void dilate(const unsigned char *in, unsigned char *out, int w, int h, int r, int sx, int sy)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            unsigned char v = 0;
            for (int d = -r; d <= r && !v; d++) {
                int xx = x + d * sx, yy = y + d * sy;
                v = xx >= 0 && xx < w && yy >= 0 && yy < h && in[(size_t)yy * w + xx];
            }
            out[(size_t)y * w + x] = v;
        }
}

void sh_ground(const unsigned char *px, int w, int h, const unsigned char *mask, sh_ground_stat *g)
{
    memset(g, 0, sizeof *g);
    int r = sh_ground_margin(w, h);
    size_t np = (size_t)w * h;
    /* near: an object within r pixels (Chebyshev), by a row pass and a column pass */
    unsigned char *row = uc_alloc(np, 1), *near = uc_alloc(np, 1);
    dilate(mask, row, w, h, r, 1, 0);
    dilate(row, near, w, h, r, 0, 1);
    for (size_t i = 0; i < np; i++) {
        if (near[i])
            continue;
        const unsigned char *p = px + i * 3;
        int d = 255 - UC_MIN(p[0], UC_MIN(p[1], p[2]));
        g->pixels++;
        g->clean += d <= SH_GROUND_TOL;
        g->deviation += d;
    }
    uc_free(row);
    uc_free(near);
}

/* ---- shapes ---- */

/* The width of shape s whose area is `area` (in squared widths). */
static float width_of_area(int s, double area)
{
    return (float)(s == SH_CIRCLE   ? sqrt(4 * area / 3.14159265358979)
                   : s == SH_SQUARE ? sqrt(area)
                                    : sqrt(4 * area / 1.7320508075688772));
}

float sh_shape_iou(const unsigned char *mask, int w, int h, int k, const sh_found *f)
{
    int side = UC_MAX(w, h);
    sh_scene s = {.n = 1};
    sh_object *o = &s.obj[0];
    o->shape = f->shape;
    o->colour = f->colour;
    o->w = width_of_area(f->shape, (double)f->area / ((double)side * side));
    o->cx = f->cx * (float)w / (float)side;
    o->cy = f->cy * (float)h / (float)side;
    if (f->shape == SH_TRIANGLE) /* the centroid lies h/6 below the box centre */
        o->cy -= sh_object_height(o) / 6;
    unsigned char *px = uc_alloc((size_t)side * side, 3);
    sh_render(&s, side, px);
    size_t inter = 0, uni = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            int in = mask[(size_t)y * w + x] == k + 1, t = sh_foreground(px + ((size_t)y * side + x) * 3);
            inter += in && t;
            uni += in || t;
        }
    uc_free(px);
    return uni ? (float)inter / (float)uni : 0;
}

/* ---- layouts ---- */

static int is(const sh_found *f, int colour, int shape) { return f->colour == colour && f->shape == shape; }

int sh_placement_found(const sh_caption *c, const sh_analysis *a, int w, int h, sh_placement *p)
{
    if (!sh_judge(c, a, NULL, 0) || a->n > SH_MAX_OBJ)
        return -1;
    int swap = c->kind == SH_RELATION && !(is(&a->obj[0], c->colour[0], c->shape[0]) &&
                                           is(&a->obj[1], c->colour[1], c->shape[1]));
    p->n = a->n;
    for (int i = 0; i < a->n; i++) {
        const sh_found *f = &a->obj[swap ? 1 - i : i];
        p->x[i] = f->cx;
        p->y[i] = f->cy;
        p->s[i] = width_of_area(f->shape, (double)f->area / ((double)w * h));
    }
    return 0;
}

void sh_placement_scene(const sh_scene *s, sh_placement *p)
{
    p->n = s->n;
    for (int i = 0; i < s->n; i++) {
        sh_object_centroid(&s->obj[i], &p->x[i], &p->y[i]);
        p->s[i] = s->obj[i].w;
    }
}

/* The pairing of a's objects with b's (perm) of the least sum of squared
 * centroid distances, over the permutations of b's objects from index i. */
static void best_pairing(const sh_placement *a, const sh_placement *b, int *perm, int i, double sum, double *best,
                         int *best_perm)
{
    if (sum >= *best)
        return;
    if (i == a->n) {
        *best = sum;
        memcpy(best_perm, perm, sizeof(int) * (size_t)a->n);
        return;
    }
    for (int j = i; j < a->n; j++) {
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        double dx = a->x[i] - b->x[perm[i]], dy = a->y[i] - b->y[perm[i]];
        best_pairing(a, b, perm, i + 1, sum + dx * dx + dy * dy, best, best_perm);
        perm[j] = perm[i];
        perm[i] = t;
    }
}

void sh_placement_dist(const sh_caption *c, const sh_placement *a, const sh_placement *b, double *pos,
                       double *size)
{
    int n = UC_MIN(a->n, b->n), perm[SH_MAX_OBJ], best_perm[SH_MAX_OBJ];
    for (int i = 0; i < SH_MAX_OBJ; i++)
        perm[i] = best_perm[i] = i;
    double sq = 0;
    if (c->kind == SH_COUNT && a->n == b->n) {
        sq = INFINITY;
        best_pairing(a, b, perm, 0, 0, &sq, best_perm);
    } else {
        for (int i = 0; i < n; i++) {
            double dx = a->x[i] - b->x[i], dy = a->y[i] - b->y[i];
            sq += dx * dx + dy * dy;
        }
    }
    double ds = 0;
    for (int i = 0; i < n; i++)
        ds += fabs((double)a->s[i] - b->s[best_perm[i]]);
    *pos = n ? sqrt(sq / n) : 0;
    *size = n ? ds / n : 0;
}

void sh_spread_of(const sh_caption *c, const sh_placement *p, int n, sh_spread *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            double pos, size;
            sh_placement_dist(c, &p[i], &p[j], &pos, &size);
            out->pos += pos;
            out->size += size;
            out->pairs++;
        }
    if (out->pairs) {
        out->pos /= (double)out->pairs;
        out->size /= (double)out->pairs;
    }
}

static int world_layouts(const sh_caption *c, int m, uint64_t seed, sh_placement *p)
{
    for (int i = 0; i < m; i++) {
        uc_rng r;
        sh_scene s;
        sh_rng_for(&r, seed, (uint32_t)i, SH_RNG_LAYOUT);
        if (sh_layout(c, &r, &s))
            return -1;
        sh_placement_scene(&s, &p[i]);
    }
    return 0;
}

int sh_world_spread(const sh_caption *c, int m, uint64_t seed, sh_spread *out)
{
    sh_placement *p = uc_alloc((size_t)m, sizeof *p);
    int rc = world_layouts(c, m, seed, p);
    if (!rc)
        sh_spread_of(c, p, m, out);
    uc_free(p);
    return rc;
}

float sh_size_range(const sh_placement *p)
{
    float lo = p->s[0], hi = p->s[0];
    for (int i = 1; i < p->n; i++) {
        lo = UC_MIN(lo, p->s[i]);
        hi = UC_MAX(hi, p->s[i]);
    }
    return p->n ? hi - lo : 0;
}

int sh_world_size_range(const sh_caption *c, int m, uint64_t seed, double *range)
{
    sh_placement *p = uc_alloc((size_t)m, sizeof *p);
    int rc = world_layouts(c, m, seed, p);
    *range = 0;
    for (int i = 0; !rc && i < m; i++)
        *range += sh_size_range(&p[i]) / (double)m;
    uc_free(p);
    return rc;
}
