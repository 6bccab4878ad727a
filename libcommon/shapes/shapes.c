/* shapes.c - captions, layouts and the rasteriser of the shapes world;
 * see shapes.h and SHAPES.md. The judge lives in shapes_eval.c. */
#define _POSIX_C_SOURCE 200809L
#include "libcommon/shapes/shapes.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "formats/base.h"

const unsigned char sh_palette[SH_NCOLOUR][3] = {
    {220, 40, 40}, {40, 170, 60}, {40, 80, 220}, {235, 200, 30}, {150, 60, 200}, {245, 135, 30},
};
const char *const sh_colour_names[SH_NCOLOUR] = {"red", "green", "blue", "yellow", "purple", "orange"};
const char *const sh_shape_names[SH_NSHAPE] = {"circle", "square", "triangle"};
const char *const sh_kind_names[SH_NKIND] = {"single", "relation", "count"};
const char *const sh_rel_names[SH_NREL] = {"above", "below", "to the left of", "to the right of", "on top of"};
static const char *const size_names[3] = {"", "small", "big"};
static const char *const number_names[5] = {"", "", "two", "three", "four"};

#define SQRT3_2 0.8660254f

/* ---- captions ---- */

#define MAX_WORDS 16

/* "an" before a vowel sound; every word of the grammar that starts with a
 * vowel letter (orange) is pronounced with one. */
static const char *article(const char *next) { return next[0] && strchr("aeiou", next[0]) ? "an" : "a"; }

static int lookup(const char *w, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (names[i][0] && strcmp(w, names[i]) == 0)
            return i;
    return -1;
}

static int plural_shape(const char *w)
{
    size_t n = strlen(w);
    if (n < 2 || w[n - 1] != 's')
        return -1;
    for (int i = 0; i < SH_NSHAPE; i++)
        if (strlen(sh_shape_names[i]) == n - 1 && strncmp(w, sh_shape_names[i], n - 1) == 0)
            return i;
    return -1;
}

typedef struct {
    const char *text; /* the caption as given, for messages */
    char buf[256];
    char *w[MAX_WORDS];
    int n, i; /* words, the next one */
} words;

static int perr(const words *p, const char *what)
{
    return uc_err("caption '%.80s%s': %s", p->text, strlen(p->text) > 80 ? "..." : "", what);
}

static int perr_word(const words *p, const char *expected)
{
    char m[160];
    if (p->i < p->n)
        snprintf(m, sizeof m, "expected %s, not '%.40s'", expected, p->w[p->i]);
    else
        snprintf(m, sizeof m, "expected %s after the last word", expected);
    return perr(p, m);
}

/* article [size] colour shape, the article agreeing with the word after
 * it; a size only where size is not NULL */
static int parse_object(words *p, int *size, int *colour, int *shape)
{
    if (p->i >= p->n || (strcmp(p->w[p->i], "a") != 0 && strcmp(p->w[p->i], "an") != 0))
        return perr_word(p, "'a' or 'an'");
    const char *art = p->w[p->i++], *next = p->i < p->n ? p->w[p->i] : "";
    if (size && p->i < p->n && (*size = lookup(p->w[p->i], size_names, 3)) > 0)
        p->i++;
    else if (size)
        *size = SH_ANY;
    if (p->i >= p->n || (*colour = lookup(p->w[p->i], sh_colour_names, SH_NCOLOUR)) < 0)
        return perr_word(p, size ? "a size (small, big) or a colour (red, green, blue, yellow, purple, orange)"
                                 : "a colour (red, green, blue, yellow, purple, orange)");
    p->i++;
    if (p->i >= p->n || (*shape = lookup(p->w[p->i], sh_shape_names, SH_NSHAPE)) < 0)
        return perr_word(p, "a shape (circle, square, triangle)");
    p->i++;
    if (strcmp(art, article(next)) != 0) {
        char m[96];
        snprintf(m, sizeof m, "'%s %s' should be '%s %s'", art, next, article(next), next);
        return perr(p, m);
    }
    return 0;
}

/* One of the relation phrases, word by word. */
static int parse_rel(words *p, int *rel)
{
    for (int r = 0; r < SH_NREL; r++) {
        char phrase[32];
        snprintf(phrase, sizeof phrase, "%s", sh_rel_names[r]);
        int k = p->i, ok = 1;
        for (char *save = NULL, *t = strtok_r(phrase, " ", &save); t; t = strtok_r(NULL, " ", &save), k++)
            if (k >= p->n || strcmp(p->w[k], t) != 0) {
                ok = 0;
                break;
            }
        if (ok) {
            *rel = r;
            p->i = k;
            return 0;
        }
    }
    return perr_word(p, "the end or a relation (above, below, to the left of, to the right of, on top of)");
}

int sh_caption_parse(const char *text, sh_caption *c)
{
    words p = {.text = text};
    memset(c, 0, sizeof *c);
    if (strlen(text) >= sizeof p.buf)
        return perr(&p, "too long");
    for (size_t i = 0;; i++) {
        char ch = text[i];
        p.buf[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
        if (!ch)
            break;
    }
    for (char *s = p.buf; *s;) {
        while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')
            *s++ = 0;
        if (!*s)
            break;
        if (p.n == MAX_WORDS)
            return perr(&p, "too many words");
        p.w[p.n++] = s;
        while (*s && *s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
            s++;
    }
    if (p.n == 0)
        return perr(&p, "empty");

    int num = lookup(p.w[0], number_names, 5);
    if (num >= 2) { /* count := number colour shape "s" */
        p.i = 1;
        c->kind = SH_COUNT;
        c->count = num;
        if (p.i >= p.n || (c->colour[0] = lookup(p.w[p.i], sh_colour_names, SH_NCOLOUR)) < 0)
            return perr_word(&p, "a colour (red, green, blue, yellow, purple, orange)");
        p.i++;
        if (p.i >= p.n || (c->shape[0] = plural_shape(p.w[p.i])) < 0)
            return perr_word(&p, "a plural shape (circles, squares, triangles)");
        p.i++;
        if (p.i < p.n)
            return perr_word(&p, "the end");
        return 0;
    }
    if (strcmp(p.w[0], "a") != 0 && strcmp(p.w[0], "an") != 0)
        return perr(&p, "must start with a, an, two, three or four");
    /* single := article [size] colour shape */
    if (parse_object(&p, &c->size, &c->colour[0], &c->shape[0]))
        return -1;
    if (p.i == p.n) {
        c->kind = SH_SINGLE;
        c->count = 1;
        return 0;
    }
    if (c->size != SH_ANY)
        return perr(&p, "a relation names no sizes");
    /* relation := article colour shape rel article colour shape */
    if (parse_rel(&p, &c->rel) || parse_object(&p, NULL, &c->colour[1], &c->shape[1]))
        return -1;
    if (p.i < p.n)
        return perr_word(&p, "the end");
    if (c->colour[0] == c->colour[1] && c->shape[0] == c->shape[1])
        return perr(&p, "the two objects must differ in colour or shape");
    c->kind = SH_RELATION;
    c->count = 2;
    return 0;
}

static int valid(const sh_caption *c)
{
    int n = c->kind == SH_RELATION ? 2 : 1;
    for (int i = 0; i < n; i++)
        if (c->colour[i] < 0 || c->colour[i] >= SH_NCOLOUR || c->shape[i] < 0 || c->shape[i] >= SH_NSHAPE)
            return 0;
    switch (c->kind) {
    case SH_SINGLE: return c->count == 1 && c->size >= SH_ANY && c->size <= SH_BIG;
    case SH_RELATION:
        return c->count == 2 && c->rel >= 0 && c->rel < SH_NREL &&
               (c->colour[0] != c->colour[1] || c->shape[0] != c->shape[1]);
    case SH_COUNT: return c->count >= 2 && c->count <= 4;
    default: return 0;
    }
}

int sh_caption_format(const sh_caption *c, char *buf, size_t n)
{
    if (!valid(c))
        return -1;
    const char *c0 = sh_colour_names[c->colour[0]], *s0 = sh_shape_names[c->shape[0]];
    int len;
    if (c->kind == SH_COUNT) {
        len = snprintf(buf, n, "%s %s %ss", number_names[c->count], c0, s0);
    } else if (c->kind == SH_SINGLE && c->size != SH_ANY) {
        len = snprintf(buf, n, "a %s %s %s", size_names[c->size], c0, s0);
    } else if (c->kind == SH_SINGLE) {
        len = snprintf(buf, n, "%s %s %s", article(c0), c0, s0);
    } else {
        const char *c1 = sh_colour_names[c->colour[1]];
        len = snprintf(buf, n, "%s %s %s %s %s %s %s", article(c0), c0, s0, sh_rel_names[c->rel], article(c1), c1,
                       sh_shape_names[c->shape[1]]);
    }
    return len < 0 || (size_t)len >= n ? -1 : len;
}

void sh_caption_random(uc_rng *r, sh_caption *c)
{
    memset(c, 0, sizeof *c);
    c->kind = (int)uc_rng_below(r, SH_NKIND);
    c->colour[0] = (int)uc_rng_below(r, SH_NCOLOUR);
    c->shape[0] = (int)uc_rng_below(r, SH_NSHAPE);
    switch (c->kind) {
    case SH_SINGLE:
        c->count = 1;
        c->size = (int)uc_rng_below(r, 3);
        break;
    case SH_RELATION:
        c->count = 2;
        c->rel = (int)uc_rng_below(r, 4);
        if (c->rel == SH_ABOVE && uc_rng_below(r, 2))
            c->rel = SH_ON_TOP_OF;
        do {
            c->colour[1] = (int)uc_rng_below(r, SH_NCOLOUR);
            c->shape[1] = (int)uc_rng_below(r, SH_NSHAPE);
        } while (c->colour[1] == c->colour[0] && c->shape[1] == c->shape[0]);
        break;
    default:
        c->count = 2 + (int)uc_rng_below(r, 3);
        break;
    }
}

void sh_rel_axis(int rel, int *axis, int *sign)
{
    /* y grows downwards: A above B when B.y - A.y > 0 */
    *axis = (rel == SH_LEFT_OF || rel == SH_RIGHT_OF) ? 0 : 1;
    *sign = (rel == SH_BELOW || rel == SH_RIGHT_OF) ? -1 : 1;
}

void sh_rng_for(uc_rng *r, uint64_t seed, uint32_t index, int what)
{
    uc_rng_init(r, seed, 2u * index + (uint32_t)what);
}

/* ---- layout ---- */

float sh_object_height(const sh_object *o) { return o->shape == SH_TRIANGLE ? o->w * SQRT3_2 : o->w; }

void sh_object_centroid(const sh_object *o, float *x, float *y)
{
    *x = o->cx;
    *y = o->shape == SH_TRIANGLE ? o->cy + sh_object_height(o) / 6 : o->cy;
}

static float uniform(uc_rng *r, float lo, float hi) { return lo + (hi - lo) * (float)uc_rng_uniform(r); }

/* Distance between two objects' boxes: the larger of the gaps along x and
 * y (negative when the boxes overlap). */
static float box_gap(const sh_object *a, const sh_object *b)
{
    float gx = fabsf(a->cx - b->cx) - (a->w + b->w) / 2;
    float gy = fabsf(a->cy - b->cy) - (sh_object_height(a) + sh_object_height(b)) / 2;
    return UC_MAX(gx, gy);
}

/* 0 when A rel B holds clearly, else -1 with a message. */
static int rel_check(int rel, const sh_object *a, const sh_object *b)
{
    int axis, sign;
    float ax, ay, bx, by;
    sh_rel_axis(rel, &axis, &sign);
    sh_object_centroid(a, &ax, &ay);
    sh_object_centroid(b, &bx, &by);
    float d = sign * (axis ? by - ay : bx - ax), other = fabsf(axis ? bx - ax : by - ay);
    if (d < SH_REL_MIN)
        return uc_err("relation '%s': centroids %.3f apart along its axis, need %.2f", sh_rel_names[rel], d,
                      SH_REL_MIN);
    if (other > SH_REL_OTHER * d)
        return uc_err("relation '%s': centroids %.3f apart across its axis, more than %.1f x %.3f",
                      sh_rel_names[rel], other, SH_REL_OTHER, d);
    return 0;
}

static int size_class(float w)
{
    if (w >= SH_SMALL_MIN && w <= SH_SMALL_MAX)
        return SH_SMALL;
    if (w >= SH_BIG_MIN && w <= SH_BIG_MAX)
        return SH_BIG;
    return -1;
}

int sh_scene_check(const sh_caption *c, const sh_scene *s)
{
    if (!valid(c))
        return uc_err("invalid caption");
    if (s->n != c->count)
        return uc_err("%d objects, caption names %d", s->n, c->count);
    for (int i = 0; i < s->n; i++) {
        const sh_object *o = &s->obj[i];
        int k = c->kind == SH_RELATION ? i : 0;
        if (o->colour != c->colour[k] || o->shape != c->shape[k])
            return uc_err("object %d is a %s %s, caption names a %s %s", i, sh_colour_names[o->colour],
                          sh_shape_names[o->shape], sh_colour_names[c->colour[k]], sh_shape_names[c->shape[k]]);
        int cls = size_class(o->w);
        if (cls < 0)
            return uc_err("object %d: width %.3f is neither small nor big", i, o->w);
        if (c->kind == SH_SINGLE && c->size != SH_ANY && cls != c->size)
            return uc_err("object %d: width %.3f is not %s", i, o->w, size_names[c->size]);
        if (c->kind == SH_COUNT && cls != size_class(s->obj[0].w))
            return uc_err("object %d: size class differs from object 0", i);
        float hw = o->w / 2, hh = sh_object_height(o) / 2;
        if (o->cx - hw < SH_MARGIN - 1e-6f || o->cx + hw > 1 - SH_MARGIN + 1e-6f || o->cy - hh < SH_MARGIN - 1e-6f ||
            o->cy + hh > 1 - SH_MARGIN + 1e-6f)
            return uc_err("object %d is not inside the canvas margin", i);
        for (int j = 0; j < i; j++)
            if (box_gap(o, &s->obj[j]) < SH_GAP - 1e-6f)
                return uc_err("objects %d and %d are %.3f apart, need %.2f", j, i, box_gap(o, &s->obj[j]), SH_GAP);
    }
    if (c->kind == SH_RELATION)
        return rel_check(c->rel, &s->obj[0], &s->obj[1]);
    return 0;
}

/* Four big objects fit only as a 2 x 2 grid and take about 17 scene draws
 * on average (at most 176 in 11 000 such scenes); the bound is far above. */
#define LAYOUT_TRIES 2000 /* scenes drawn (widths and positions) */
#define PLACE_TRIES 100  /* positions tried per object */

static float draw_width(uc_rng *r, int cls)
{
    return cls == SH_SMALL ? uniform(r, SH_SMALL_MIN, SH_SMALL_MAX) : uniform(r, SH_BIG_MIN, SH_BIG_MAX);
}

/* Objects placed one by one, each at a uniform position inside the margin
 * that keeps its gaps (and, for B, the relation). */
static int place(const sh_caption *c, uc_rng *r, sh_scene *s)
{
    for (int i = 0; i < s->n; i++) {
        sh_object *o = &s->obj[i];
        float hw = o->w / 2, hh = sh_object_height(o) / 2;
        int ok = 0;
        for (int t = 0; t < PLACE_TRIES && !ok; t++) {
            o->cx = uniform(r, SH_MARGIN + hw, 1 - SH_MARGIN - hw);
            o->cy = uniform(r, SH_MARGIN + hh, 1 - SH_MARGIN - hh);
            ok = 1;
            for (int j = 0; j < i && ok; j++)
                ok = box_gap(o, &s->obj[j]) >= SH_GAP;
            if (ok && c->kind == SH_RELATION && i == 1)
                ok = rel_check(c->rel, &s->obj[0], o) == 0;
        }
        if (!ok)
            return -1;
    }
    return 0;
}

int sh_layout(const sh_caption *c, uc_rng *r, sh_scene *s)
{
    if (!valid(c))
        return uc_err("invalid caption");
    memset(s, 0, sizeof *s);
    s->n = c->count;
    /* size classes: a named one, else small or big at even odds, drawn
     * once (so crowded scenes keep their share); one class for a whole
     * count scene */
    int cls[SH_MAX_OBJ];
    for (int i = 0; i < s->n; i++) {
        cls[i] = c->size != SH_ANY ? c->size : (int)uc_rng_below(r, 2) + SH_SMALL;
        if (c->kind == SH_COUNT && i > 0)
            cls[i] = cls[0];
    }
    for (int t = 0; t < LAYOUT_TRIES; t++) {
        for (int i = 0; i < s->n; i++) {
            int k = c->kind == SH_RELATION ? i : 0;
            s->obj[i].colour = c->colour[k];
            s->obj[i].shape = c->shape[k];
            s->obj[i].w = draw_width(r, cls[i]);
        }
        if (place(c, r, s) == 0)
            return 0;
    }
    char text[SH_CAPTION_MAX];
    sh_caption_format(c, text, sizeof text);
    return uc_err("caption '%s': no layout found in %d tries", text, LAYOUT_TRIES);
}

/* ---- rasteriser ---- */

/* Signed distance in pixels from (x, y) to the object's outline, positive
 * inside. Exact for the circle; for the polygons the smallest distance to
 * an edge's line, which is exact inside and never more than the true
 * distance outside, so both tests below stay conservative. */
typedef struct {
    int shape;
    float cx, cy, r;        /* circle */
    float x0, y0, x1, y1;   /* box */
} outline;

static float sdist(const outline *g, float x, float y)
{
    if (g->shape == SH_CIRCLE)
        return g->r - sqrtf((x - g->cx) * (x - g->cx) + (y - g->cy) * (y - g->cy));
    float d = UC_MIN(UC_MIN(x - g->x0, g->x1 - x), UC_MIN(y - g->y0, g->y1 - y));
    if (g->shape == SH_TRIANGLE) {
        /* sides through the apex (cx, y0) and the base corners; the
         * triangle is equilateral, so each side's length is the width w
         * and its inward normal is (+-h, w/2) / w */
        float w = g->x1 - g->x0, h = g->y1 - g->y0, dy = (y - g->y0) * (w / 2);
        float left = ((x - g->cx) * h + dy) / w, right = (-(x - g->cx) * h + dy) / w;
        d = UC_MIN(g->y1 - y, UC_MIN(left, right));
    }
    return d;
}

void sh_render(const sh_scene *s, int size, unsigned char *px)
{
    memset(px, 255, (size_t)size * size * 3);
    const float half_diag = 0.7072f; /* a pixel lies wholly on one side beyond this */
    for (int k = 0; k < s->n; k++) {
        const sh_object *o = &s->obj[k];
        float w = o->w * size, h = sh_object_height(o) * size;
        outline g = {o->shape, o->cx * size, o->cy * size, w / 2, 0, 0, 0, 0};
        g.x0 = g.cx - w / 2;
        g.x1 = g.cx + w / 2;
        g.y0 = g.cy - h / 2;
        g.y1 = g.cy + h / 2;
        int xa = UC_MAX(0, (int)floorf(g.x0) - 1), xb = UC_MIN(size - 1, (int)ceilf(g.x1) + 1);
        int ya = UC_MAX(0, (int)floorf(g.y0) - 1), yb = UC_MIN(size - 1, (int)ceilf(g.y1) + 1);
        const unsigned char *col = sh_palette[o->colour];
        for (int y = ya; y <= yb; y++)
            for (int x = xa; x <= xb; x++) {
                float d = sdist(&g, x + 0.5f, y + 0.5f), a;
                if (d >= half_diag) {
                    a = 1;
                } else if (d <= -half_diag) {
                    continue;
                } else {
                    int in = 0;
                    for (int sy = 0; sy < 4; sy++)
                        for (int sx = 0; sx < 4; sx++)
                            in += sdist(&g, x + (sx + 0.5f) / 4, y + (sy + 0.5f) / 4) >= 0;
                    if (!in)
                        continue;
                    a = in / 16.0f;
                }
                unsigned char *p = px + ((size_t)y * size + x) * 3;
                for (int ch = 0; ch < 3; ch++)
                    p[ch] = (unsigned char)lrintf(p[ch] + a * (col[ch] - p[ch]));
            }
    }
}
