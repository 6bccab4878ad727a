/* test_shapes.c - the shapes world: caption grammar, layouts, rasteriser and
 * judge (libcommon/shapes/shapes.h). The judge must accept rendered scenes (also
 * upscaled from 32 px, noisy and blurred) and reject altered ones. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/shapes/shapes.h"

#define NJUDGE 300 /* scenes per judge test */

static void random_caption(uint64_t seed, uint32_t i, sh_caption *c)
{
    uc_rng r;
    sh_rng_for(&r, seed, i, SH_RNG_CAPTION);
    sh_caption_random(&r, c);
}

static void layout(const sh_caption *c, uint64_t seed, uint32_t i, sh_scene *s)
{
    uc_rng r;
    sh_rng_for(&r, seed, i, SH_RNG_LAYOUT);
    assert_int_equal(sh_layout(c, &r, s), 0);
}

static int judge(const sh_caption *c, const unsigned char *px, int w, int h, char *why, size_t n)
{
    sh_analysis a;
    assert_int_equal(sh_analyse(px, w, h, &a), 0);
    return sh_judge(c, &a, why, n);
}

/* ---- grammar ---- */

static void parse_ok(const char *text, int kind, int count, int c0, int s0, int size, int rel, int c1, int s1)
{
    sh_caption c;
    if (sh_caption_parse(text, &c) != 0)
        fail_msg("'%s' rejected: %s", text, uc_errmsg());
    assert_int_equal(c.kind, kind);
    assert_int_equal(c.count, count);
    assert_int_equal(c.colour[0], c0);
    assert_int_equal(c.shape[0], s0);
    assert_int_equal(c.size, size);
    if (kind == SH_RELATION) {
        assert_int_equal(c.rel, rel);
        assert_int_equal(c.colour[1], c1);
        assert_int_equal(c.shape[1], s1);
    }
}

static void test_parse(void **state)
{
    (void)state;
    parse_ok("a red circle", SH_SINGLE, 1, SH_RED, SH_CIRCLE, SH_ANY, 0, 0, 0);
    parse_ok("an orange triangle", SH_SINGLE, 1, SH_ORANGE, SH_TRIANGLE, SH_ANY, 0, 0, 0);
    parse_ok("a small orange square", SH_SINGLE, 1, SH_ORANGE, SH_SQUARE, SH_SMALL, 0, 0, 0);
    parse_ok("a big blue circle", SH_SINGLE, 1, SH_BLUE, SH_CIRCLE, SH_BIG, 0, 0, 0);
    parse_ok("  A Big  Blue\tcircle\n", SH_SINGLE, 1, SH_BLUE, SH_CIRCLE, SH_BIG, 0, 0, 0);
    parse_ok("a red circle above a blue square", SH_RELATION, 2, SH_RED, SH_CIRCLE, SH_ANY, SH_ABOVE, SH_BLUE,
             SH_SQUARE);
    parse_ok("a green triangle on top of an orange triangle", SH_RELATION, 2, SH_GREEN, SH_TRIANGLE, SH_ANY,
             SH_ON_TOP_OF, SH_ORANGE, SH_TRIANGLE);
    parse_ok("an orange circle to the left of a purple circle", SH_RELATION, 2, SH_ORANGE, SH_CIRCLE, SH_ANY,
             SH_LEFT_OF, SH_PURPLE, SH_CIRCLE);
    parse_ok("a yellow square to the right of a yellow circle", SH_RELATION, 2, SH_YELLOW, SH_SQUARE, SH_ANY,
             SH_RIGHT_OF, SH_YELLOW, SH_CIRCLE);
    parse_ok("a blue square below a red square", SH_RELATION, 2, SH_BLUE, SH_SQUARE, SH_ANY, SH_BELOW, SH_RED,
             SH_SQUARE);
    parse_ok("two red circles", SH_COUNT, 2, SH_RED, SH_CIRCLE, SH_ANY, 0, 0, 0);
    parse_ok("three purple triangles", SH_COUNT, 3, SH_PURPLE, SH_TRIANGLE, SH_ANY, 0, 0, 0);
    parse_ok("four orange squares", SH_COUNT, 4, SH_ORANGE, SH_SQUARE, SH_ANY, 0, 0, 0);

    int axis, sign;
    sh_rel_axis(SH_ON_TOP_OF, &axis, &sign);
    assert_true(axis == 1 && sign == 1);
    sh_rel_axis(SH_ABOVE, &axis, &sign);
    assert_true(axis == 1 && sign == 1);
    sh_rel_axis(SH_BELOW, &axis, &sign);
    assert_true(axis == 1 && sign == -1);
    sh_rel_axis(SH_LEFT_OF, &axis, &sign);
    assert_true(axis == 0 && sign == 1);
    sh_rel_axis(SH_RIGHT_OF, &axis, &sign);
    assert_true(axis == 0 && sign == -1);
}

static void test_parse_rejects(void **state)
{
    (void)state;
    static const char *bad[] = {
        "", "   ", "a", "a red", "red circle", "a pink circle", "a red hexagon", "a orange circle", "an red circle",
        "an small red circle", "a small orange", "a red circles", "two red circle", "one red circle",
        "five red circles", "two small red circles", "a huge red circle", "a red circle above",
        "a red circle near a blue square", "a red circle above a red circle", "a small red circle above a blue square",
        "a red circle above a small blue square", "a red circle to the left a blue square",
        "a red circle above a blue square and a green circle", "a red circle.", "two red circles please",
        "a red circle on top a blue square", "the red circle",
    };
    for (size_t i = 0; i < UC_COUNT(bad); i++) {
        sh_caption c;
        if (sh_caption_parse(bad[i], &c) == 0)
            fail_msg("'%s' accepted", bad[i]);
        char want[160];
        snprintf(want, sizeof want, "caption '%s'", bad[i]);
        if (!strstr(uc_errmsg(), want))
            fail_msg("message for '%s' does not name it: %s", bad[i], uc_errmsg());
    }
    char long_text[400];
    memset(long_text, 'a', sizeof long_text - 1);
    long_text[sizeof long_text - 1] = 0;
    sh_caption c;
    assert_int_equal(sh_caption_parse(long_text, &c), -1);
    assert_non_null(strstr(uc_errmsg(), "too long"));
}

/* generate -> format -> parse -> format: the same text and the same spec */
static void test_roundtrip(void **state)
{
    (void)state;
    for (uint32_t i = 0; i < 5000; i++) {
        sh_caption c, d;
        char t1[SH_CAPTION_MAX], t2[SH_CAPTION_MAX];
        random_caption(3, i, &c);
        assert_true(sh_caption_format(&c, t1, sizeof t1) > 0);
        if (sh_caption_parse(t1, &d) != 0)
            fail_msg("'%s': %s", t1, uc_errmsg());
        assert_memory_equal(&c, &d, sizeof c);
        assert_true(sh_caption_format(&d, t2, sizeof t2) > 0);
        assert_string_equal(t1, t2);
    }
    sh_caption c = {.kind = SH_SINGLE, .count = 1, .colour = {SH_ORANGE}, .shape = {SH_CIRCLE}};
    char t[SH_CAPTION_MAX];
    sh_caption_format(&c, t, sizeof t);
    assert_string_equal(t, "an orange circle");
    c.size = SH_SMALL;
    sh_caption_format(&c, t, sizeof t);
    assert_string_equal(t, "a small orange circle");
    assert_int_equal(sh_caption_format(&c, t, 10), -1); /* too small a buffer */
    c.kind = SH_RELATION;                                /* same objects: not a caption */
    c.count = 2;
    c.size = SH_ANY;
    c.colour[1] = SH_ORANGE;
    c.shape[1] = SH_CIRCLE;
    assert_int_equal(sh_caption_format(&c, t, sizeof t), -1);
}

static void test_random_captions(void **state)
{
    (void)state;
    int kinds[SH_NKIND] = {0}, rels[SH_NREL] = {0}, sizes[3] = {0}, counts[5] = {0};
    const int N = 6000;
    for (uint32_t i = 0; i < (uint32_t)N; i++) {
        sh_caption c, d;
        random_caption(11, i, &c);
        random_caption(11, i, &d);
        assert_memory_equal(&c, &d, sizeof c); /* deterministic for (seed, index) */
        kinds[c.kind]++;
        if (c.kind == SH_RELATION) {
            rels[c.rel]++;
            assert_true(c.colour[0] != c.colour[1] || c.shape[0] != c.shape[1]);
        }
        if (c.kind == SH_SINGLE)
            sizes[c.size]++;
        if (c.kind == SH_COUNT)
            counts[c.count]++;
    }
    for (int k = 0; k < SH_NKIND; k++) /* 1/3 each: 2000 +- 6 sigma */
        assert_true(abs(kinds[k] - N / 3) < 220);
    assert_true(abs(rels[SH_ABOVE] + rels[SH_ON_TOP_OF] - kinds[SH_RELATION] / 4) < 120);
    assert_true(abs(rels[SH_BELOW] - kinds[SH_RELATION] / 4) < 120);
    assert_true(abs(rels[SH_ON_TOP_OF] - kinds[SH_RELATION] / 8) < 100);
    for (int s = 0; s < 3; s++)
        assert_true(abs(sizes[s] - kinds[SH_SINGLE] / 3) < 150);
    for (int n = 2; n <= 4; n++)
        assert_true(abs(counts[n] - kinds[SH_COUNT] / 3) < 150);
    /* another seed, other captions */
    int same = 0;
    for (uint32_t i = 0; i < 100; i++) {
        sh_caption c, d;
        random_caption(11, i, &c);
        random_caption(12, i, &d);
        same += memcmp(&c, &d, sizeof c) == 0;
    }
    assert_true(same < 30);
}

/* ---- layout ---- */

static float height(const sh_object *o) { return o->shape == SH_TRIANGLE ? o->w * sqrtf(3) / 2 : o->w; }

/* The rules of SHAPES.md, checked here from first principles. */
static void check_scene(const sh_caption *c, const sh_scene *s, const char *text)
{
    if (s->n != c->count)
        fail_msg("%s: %d objects", text, s->n);
    int big0 = s->obj[0].w > 0.3f;
    for (int i = 0; i < s->n; i++) {
        const sh_object *o = &s->obj[i];
        int k = c->kind == SH_RELATION ? i : 0;
        assert_int_equal(o->colour, c->colour[k]);
        assert_int_equal(o->shape, c->shape[k]);
        int small = o->w >= 0.18f && o->w <= 0.24f, big = o->w >= 0.34f && o->w <= 0.42f;
        if (!small && !big)
            fail_msg("%s: width %.3f", text, o->w);
        if (c->kind == SH_SINGLE && c->size == SH_SMALL && !small)
            fail_msg("%s: not small", text);
        if (c->kind == SH_SINGLE && c->size == SH_BIG && !big)
            fail_msg("%s: not big", text);
        if (c->kind == SH_COUNT && big != big0)
            fail_msg("%s: count scene mixes sizes", text);
        float h = height(o);
        if (o->cx - o->w / 2 < 0 || o->cx + o->w / 2 > 1 || o->cy - h / 2 < 0 || o->cy + h / 2 > 1)
            fail_msg("%s: object %d leaves the canvas", text, i);
        for (int j = 0; j < i; j++) { /* the boxes are apart by the gap along x or y */
            const sh_object *p = &s->obj[j];
            float gx = fabsf(o->cx - p->cx) - (o->w + p->w) / 2, gy = fabsf(o->cy - p->cy) - (h + height(p)) / 2;
            if (gx < 0.06f - 1e-5f && gy < 0.06f - 1e-5f)
                fail_msg("%s: objects %d and %d too close (%.3f, %.3f)", text, j, i, gx, gy);
        }
    }
    if (c->kind == SH_RELATION) {
        const sh_object *a = &s->obj[0], *b = &s->obj[1];
        float ay = a->cy + (a->shape == SH_TRIANGLE ? height(a) / 6 : 0);
        float by = b->cy + (b->shape == SH_TRIANGLE ? height(b) / 6 : 0);
        float dx = b->cx - a->cx, dy = by - ay, named, other;
        switch (c->rel) {
        case SH_ABOVE:
        case SH_ON_TOP_OF: named = dy, other = dx; break;
        case SH_BELOW: named = -dy, other = dx; break;
        case SH_LEFT_OF: named = dx, other = dy; break;
        default: named = -dx, other = dy; break;
        }
        if (named < 0.25f || fabsf(other) >= named)
            fail_msg("%s: relation not clear (dx %.3f, dy %.3f)", text, dx, dy);
    }
}

static void test_layout_rules(void **state)
{
    (void)state;
    int big_count4 = 0, count4 = 0, big_single = 0, any_single = 0;
    for (uint32_t i = 0; i < 3000; i++) {
        sh_caption c;
        sh_scene s, t;
        char text[SH_CAPTION_MAX];
        random_caption(5, i, &c);
        sh_caption_format(&c, text, sizeof text);
        layout(&c, 5, i, &s);
        check_scene(&c, &s, text);
        if (sh_scene_check(&c, &s) != 0)
            fail_msg("%s: %s", text, uc_errmsg());
        layout(&c, 5, i, &t);
        assert_memory_equal(&s, &t, sizeof s); /* deterministic for (seed, index) */
        if (c.kind == SH_COUNT && c.count == 4) {
            count4++;
            big_count4 += s.obj[0].w > 0.3f;
        }
        if (c.kind == SH_SINGLE && c.size == SH_ANY) {
            any_single++;
            big_single += s.obj[0].w > 0.3f;
        }
    }
    /* unnamed sizes come out both ways at even odds, crowded scenes too */
    assert_true(big_single > any_single / 3 && big_single < 2 * any_single / 3);
    assert_true(big_count4 > count4 / 3 && big_count4 < 2 * count4 / 3);

    /* the checker catches broken scenes */
    sh_caption c;
    sh_scene s;
    assert_int_equal(sh_caption_parse("a red circle above a blue square", &c), 0);
    layout(&c, 1, 0, &s);
    assert_int_equal(sh_scene_check(&c, &s), 0);
    sh_object tmp = s.obj[0];
    s.obj[0] = s.obj[1];
    s.obj[1] = tmp;
    assert_int_equal(sh_scene_check(&c, &s), -1);
    s.obj[1] = s.obj[0];
    s.obj[1].colour = SH_RED;
    s.obj[1].shape = SH_CIRCLE;
    assert_int_equal(sh_scene_check(&c, &s), -1);
}

/* ---- rasteriser ---- */

static void test_render(void **state)
{
    (void)state;
    enum { N = 256 };
    unsigned char *px = malloc(N * N * 3);
    assert_non_null(px);
    for (int shape = 0; shape < SH_NSHAPE; shape++) {
        sh_scene s = {1, {{shape, SH_PURPLE, 0.5f, 0.5f, 0.4f}}};
        sh_render(&s, N, px);
        /* centre exactly the palette colour, corners white */
        const unsigned char *p = px + ((size_t)(N / 2) * N + N / 2) * 3;
        assert_memory_equal(p, sh_palette[SH_PURPLE], 3);
        assert_true(px[0] == 255 && px[1] == 255 && px[2] == 255);
        /* coverage adds up to the shape's area */
        double cover = 0;
        for (int i = 0; i < N * N; i++)
            cover += (255.0 - px[i * 3 + 1]) / (255.0 - sh_palette[SH_PURPLE][1]);
        double w = 0.4 * N, area = shape == SH_CIRCLE ? 3.14159265358979 * w * w / 4 : shape == SH_SQUARE ? w * w
                                                                                           : w * w * sqrt(3) / 4;
        if (fabs(cover - area) > 0.005 * area)
            fail_msg("%s: coverage %.1f, area %.1f", sh_shape_names[shape], cover, area);
    }
    /* any canvas size; objects stay inside it */
    sh_caption c;
    sh_scene s;
    assert_int_equal(sh_caption_parse("four blue triangles", &c), 0);
    layout(&c, 9, 0, &s);
    for (int size = 8; size <= 256; size *= 2)
        sh_render(&s, size, px);
    free(px);
}

/* ---- judge ---- */

/* Render NJUDGE random scenes at `size`, pass them through `alter` (may be
 * NULL) at `out` x `out` pixels, and count the judge's matches. */
typedef void (*alter_fn)(const unsigned char *in, int size, unsigned char *out, int out_size, uint32_t i);

static int judge_many(uint64_t seed, int size, int out_size, alter_fn alter, int verbose)
{
    unsigned char *px = malloc((size_t)size * size * 3), *big = malloc((size_t)out_size * out_size * 3);
    assert_true(px && big);
    int ok = 0;
    for (uint32_t i = 0; i < NJUDGE; i++) {
        sh_caption c;
        sh_scene s;
        char text[SH_CAPTION_MAX], why[256];
        random_caption(seed, i, &c);
        layout(&c, seed, i, &s);
        sh_render(&s, size, px);
        if (alter)
            alter(px, size, big, out_size, i);
        int m = judge(&c, alter ? big : px, out_size, out_size, why, sizeof why);
        ok += m;
        if (!m && verbose) {
            sh_caption_format(&c, text, sizeof text);
            print_message("  %dpx -> %dpx: '%s' judged wrong: %s\n", size, out_size, text, why);
        }
    }
    free(px);
    free(big);
    return ok;
}

static void test_judge_rendered(void **state)
{
    (void)state;
    int n64 = judge_many(21, 64, 64, NULL, 1), n128 = judge_many(22, 128, 128, NULL, 1),
        n256 = judge_many(23, 256, 256, NULL, 1);
    print_message("  judge on rendered scenes: 64px %d/%d, 128px %d/%d, 256px %d/%d\n", n64, NJUDGE, n128, NJUDGE,
                  n256, NJUDGE);
    assert_true(n64 >= NJUDGE * 99 / 100);
    assert_true(n128 >= NJUDGE * 99 / 100);
    assert_true(n256 >= NJUDGE * 99 / 100);
}

static unsigned char clamp_u8(float v) { return (unsigned char)(v < 0 ? 0 : v > 255 ? 255 : lrintf(v)); }

static float cubic(float x) /* Keys, a = -0.5 */
{
    x = fabsf(x);
    return x < 1 ? (1.5f * x - 2.5f) * x * x + 1 : x < 2 ? ((-0.5f * x + 2.5f) * x - 4) * x + 2 : 0;
}

/* Bicubic upscaling (half-pixel centres, edge clamped), as an upsampler's
 * input would be. */
static void upscale(const unsigned char *in, int n, unsigned char *out, int m, uint32_t i)
{
    (void)i;
    float scale = (float)n / m;
    for (int y = 0; y < m; y++)
        for (int x = 0; x < m; x++) {
            float sx = (x + 0.5f) * scale - 0.5f, sy = (y + 0.5f) * scale - 0.5f, acc[3] = {0};
            int x0 = (int)floorf(sx), y0 = (int)floorf(sy);
            for (int dy = -1; dy <= 2; dy++)
                for (int dx = -1; dx <= 2; dx++) {
                    float wgt = cubic(sx - (x0 + dx)) * cubic(sy - (y0 + dy));
                    int xx = UC_MIN(n - 1, UC_MAX(0, x0 + dx)), yy = UC_MIN(n - 1, UC_MAX(0, y0 + dy));
                    for (int ch = 0; ch < 3; ch++)
                        acc[ch] += wgt * in[((size_t)yy * n + xx) * 3 + ch];
                }
            for (int ch = 0; ch < 3; ch++)
                out[((size_t)y * m + x) * 3 + ch] = clamp_u8(acc[ch]);
        }
}

/* A 3x3 box blur, then uniform noise of +-16 on every channel. */
static void noise_blur(const unsigned char *in, int n, unsigned char *out, int m, uint32_t i)
{
    assert_int_equal(n, m);
    uc_rng r;
    uc_rng_init(&r, 77, i);
    for (int y = 0; y < n; y++)
        for (int x = 0; x < n; x++)
            for (int ch = 0; ch < 3; ch++) {
                float acc = 0;
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        int xx = UC_MIN(n - 1, UC_MAX(0, x + dx)), yy = UC_MIN(n - 1, UC_MAX(0, y + dy));
                        acc += in[((size_t)yy * n + xx) * 3 + ch];
                    }
                out[((size_t)y * n + x) * 3 + ch] = clamp_u8(acc / 9 + (float)uc_rng_below(&r, 33) - 16);
            }
}

static void upscale_noise(const unsigned char *in, int n, unsigned char *out, int m, uint32_t i)
{
    unsigned char *tmp = malloc((size_t)m * m * 3);
    assert_non_null(tmp);
    upscale(in, n, tmp, m, i);
    noise_blur(tmp, m, out, m, i);
    free(tmp);
}

static void test_judge_upscaled_noisy(void **state)
{
    (void)state;
    int up = judge_many(31, 32, 128, upscale, 1), nb = judge_many(32, 64, 64, noise_blur, 1),
        nb128 = judge_many(33, 128, 128, noise_blur, 1), upnb = judge_many(34, 32, 128, upscale_noise, 1);
    print_message("  judge: 32px upscaled to 128px %d/%d; blurred and noisy: 64px %d/%d, 128px %d/%d, 32px "
                  "upscaled to 128px %d/%d\n",
                  up, NJUDGE, nb, NJUDGE, nb128, NJUDGE, upnb, NJUDGE);
    assert_true(up >= NJUDGE * 99 / 100);
    assert_true(nb >= NJUDGE * 99 / 100);
    assert_true(nb128 >= NJUDGE * 99 / 100);
    assert_true(upnb >= NJUDGE * 99 / 100);
}

/* Alterations of the scene (or of the caption) that must be judged wrong;
 * each returns 0 when it does not apply to this caption. */
typedef int (*change_fn)(sh_caption *c, sh_scene *s, uint64_t seed, uint32_t i);

static int wrong_colour(sh_caption *c, sh_scene *s, uint64_t seed, uint32_t i)
{
    (void)c;
    (void)seed;
    int k = (int)(i % (uint32_t)s->n); /* one object painted in another colour */
    s->obj[k].colour = (s->obj[k].colour + 1 + (int)(i % 5)) % SH_NCOLOUR;
    return 1;
}

static int wrong_shape(sh_caption *c, sh_scene *s, uint64_t seed, uint32_t i)
{
    (void)c;
    (void)seed;
    int k = (int)(i % (uint32_t)s->n);
    s->obj[k].shape = (s->obj[k].shape + 1 + (int)(i % 2)) % SH_NSHAPE;
    return 1;
}

static int wrong_count(sh_caption *c, sh_scene *s, uint64_t seed, uint32_t i)
{
    /* the scene of a count caption with another number */
    if (c->kind != SH_COUNT)
        return 0;
    sh_caption d = *c;
    d.count = 2 + (c->count - 2 + 1 + (int)(i % 2)) % 3;
    layout(&d, seed, i, s);
    return 1;
}

static int swapped_relation(sh_caption *c, sh_scene *s, uint64_t seed, uint32_t i)
{
    /* the scene of "B rel A" judged against "A rel B" */
    if (c->kind != SH_RELATION)
        return 0;
    sh_caption d = *c;
    d.colour[0] = c->colour[1];
    d.shape[0] = c->shape[1];
    d.colour[1] = c->colour[0];
    d.shape[1] = c->shape[0];
    layout(&d, seed, i, s);
    return 1;
}

static int other_relation(sh_caption *c, sh_scene *s, uint64_t seed, uint32_t i)
{
    /* the scene of A rel' B for each other direction rel' */
    if (c->kind != SH_RELATION)
        return 0;
    sh_caption d = *c;
    int axis, sign, axis2, sign2;
    sh_rel_axis(c->rel, &axis, &sign);
    do {
        d.rel = (d.rel + 1) % SH_NREL;
        sh_rel_axis(d.rel, &axis2, &sign2);
    } while (axis2 == axis && sign2 == sign);
    layout(&d, seed, i, s);
    return 1;
}

static void judged_wrong(const char *name, change_fn change)
{
    enum { N = 64 };
    unsigned char px[N * N * 3];
    int tried = 0, caught = 0;
    for (uint32_t i = 0; tried < 150; i++) {
        sh_caption c;
        sh_scene s;
        char text[SH_CAPTION_MAX], why[256];
        random_caption(41, i, &c);
        layout(&c, 41, i, &s);
        if (!change(&c, &s, 41, i))
            continue;
        sh_render(&s, N, px);
        tried++;
        if (!judge(&c, px, N, N, why, sizeof why)) {
            caught++;
            assert_true(why[0] != 0);
        } else {
            sh_caption_format(&c, text, sizeof text);
            print_message("  %s not caught: '%s'\n", name, text);
        }
    }
    print_message("  %s: %d/%d judged wrong\n", name, caught, tried);
    assert_int_equal(caught, tried);
}

static void test_judge_altered(void **state)
{
    (void)state;
    judged_wrong("wrong colour", wrong_colour);
    judged_wrong("wrong shape", wrong_shape);
    judged_wrong("wrong count", wrong_count);
    judged_wrong("swapped relation", swapped_relation);
    judged_wrong("other relation", other_relation);
}

static void test_judge_details(void **state)
{
    (void)state;
    enum { N = 64 };
    unsigned char px[N * N * 3];
    sh_caption c;
    sh_analysis a;
    char why[256];
    /* a blank canvas has nothing */
    memset(px, 255, sizeof px);
    assert_int_equal(sh_analyse(px, N, N, &a), 0);
    assert_int_equal(a.n, 0);
    assert_int_equal(sh_caption_parse("a red circle", &c), 0);
    assert_int_equal(sh_judge(&c, &a, why, sizeof why), 0);
    assert_string_equal(why, "found 0 objects, expected 1");
    /* sizes: a big object against "a small ..." */
    sh_scene s = {1, {{SH_TRIANGLE, SH_GREEN, 0.5f, 0.5f, 0.38f}}};
    sh_render(&s, N, px);
    assert_int_equal(sh_analyse(px, N, N, &a), 0);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.obj[0].colour, SH_GREEN);
    assert_int_equal(a.obj[0].shape, SH_TRIANGLE);
    assert_true(fabsf(a.obj[0].size - 0.38f) < 0.04f);
    assert_true(fabsf(a.obj[0].cx - 0.5f) < 0.01f);
    assert_true(fabsf(a.obj[0].cy - (0.5f + 0.38f * sqrtf(3) / 12)) < 0.02f);
    assert_int_equal(sh_caption_parse("a big green triangle", &c), 0);
    assert_int_equal(sh_judge(&c, &a, why, sizeof why), 1);
    assert_int_equal(sh_caption_parse("a small green triangle", &c), 0);
    assert_int_equal(sh_judge(&c, &a, why, sizeof why), 0);
    assert_non_null(strstr(why, "expected small"));
    /* specks below the minimum area are not objects; grey and dark are not foreground */
    px[0] = 220, px[1] = 40, px[2] = 40;
    for (int x = 10; x < 30; x++) {
        unsigned char *p = px + ((size_t)60 * N + x) * 3;
        p[0] = p[1] = p[2] = 90;
        p = px + ((size_t)62 * N + x) * 3;
        p[0] = 40, p[1] = 10, p[2] = 10;
    }
    assert_int_equal(sh_analyse(px, N, N, &a), 0);
    assert_int_equal(a.n, 1);
    /* non-square images; bad sizes */
    assert_int_equal(sh_analyse(px, N, N / 2, &a), 0);
    assert_int_equal(sh_analyse(px, 0, N, &a), -1);
}

/* ---- what a person sees (quality.c) ---- */

/* Analyse a picture into a and its object mask (caller frees the mask). */
static unsigned char *analyse_mask(const unsigned char *px, int n, sh_analysis *a)
{
    unsigned char *mask = malloc((size_t)n * n);
    assert_non_null(mask);
    assert_int_equal(sh_analyse_mask(px, n, n, a, mask), 0);
    return mask;
}

static void test_ground(void **state)
{
    (void)state;
    enum { N = 128, SMALL = 32, SCENES = 60 };
    unsigned char *px = malloc(N * N * 3), *lo = malloc(SMALL * SMALL * 3);
    assert_true(px && lo);
    assert_int_equal(sh_ground_margin(128, 128), 4);
    assert_int_equal(sh_ground_margin(64, 32), 2);
    assert_int_equal(sh_ground_margin(16, 16), 1);
    /* rendered scenes at 128 px, and at 32 px upscaled bicubic to 128:
     * every ground pixel is white */
    for (int up = 0; up < 2; up++)
        for (uint32_t i = 0; i < SCENES; i++) {
            sh_caption c;
            sh_scene s;
            sh_analysis a;
            sh_ground_stat g;
            random_caption(41, i, &c);
            layout(&c, 41, i, &s);
            if (up) {
                sh_render(&s, SMALL, lo);
                upscale(lo, SMALL, px, N, i);
            } else {
                sh_render(&s, N, px);
            }
            unsigned char *mask = analyse_mask(px, N, &a);
            assert_int_equal(a.n, c.count);
            sh_ground(px, N, N, mask, &g);
            /* the objects cover at most about half of the canvas */
            assert_true(g.pixels > N * N / 3);
            if (!up) {
                assert_int_equal(g.clean, g.pixels);
                assert_true(g.deviation == 0);
            } else if ((double)g.clean < 0.999 * (double)g.pixels) {
                fail_msg("upscaled scene %u: %lld of %lld ground pixels clean", i, (long long)g.clean,
                         (long long)g.pixels);
            }
            free(mask);
        }
    /* the patch of issue 24: (247, 250, 254) over the ground in a 64 x 48
     * box away from the object; every one of its pixels is 8 off white */
    sh_scene s = {1, {{SH_CIRCLE, SH_YELLOW, 0.2f, 0.2f, 0.2f}}};
    sh_render(&s, N, px);
    for (int y = 70; y < 118; y++)
        for (int x = 60; x < 124; x++) {
            unsigned char *p = px + ((size_t)y * N + x) * 3;
            p[0] = 247, p[1] = 250, p[2] = 254;
        }
    sh_analysis a;
    sh_ground_stat g;
    unsigned char *mask = analyse_mask(px, N, &a);
    assert_int_equal(a.n, 1);
    sh_ground(px, N, N, mask, &g);
    assert_int_equal(g.pixels - g.clean, 64 * 48);
    assert_true(fabs(g.deviation - 8.0 * 64 * 48) < 1e-9);
    /* a faint tint within the tolerance is clean; one step more is not */
    for (int i = 0; i < N * N; i++)
        if (!mask[i] && px[i * 3] == 247)
            px[i * 3] = 255 - SH_GROUND_TOL;
    sh_ground(px, N, N, mask, &g);
    assert_int_equal(g.pixels, g.clean);
    for (int i = 0; i < N * N; i++)
        if (!mask[i] && px[i * 3] == 255 - SH_GROUND_TOL)
            px[i * 3] = 255 - SH_GROUND_TOL - 1;
    sh_ground(px, N, N, mask, &g);
    assert_int_equal(g.pixels - g.clean, 64 * 48);
    free(mask);
    free(px);
    free(lo);
}

static void test_shape_iou(void **state)
{
    (void)state;
    enum { N = 128 };
    unsigned char *px = malloc(N * N * 3);
    assert_non_null(px);
    /* a rendered object overlaps the world's shape of its area and centroid
     * almost exactly, at any size and place */
    for (int shape = 0; shape < SH_NSHAPE; shape++)
        for (int k = 0; k < 4; k++) {
            float w = k % 2 ? 0.2f : 0.4f, c = k < 2 ? 0.5f : 0.37f;
            sh_scene s = {1, {{shape, SH_BLUE, c, c, w}}};
            sh_render(&s, N, px);
            sh_analysis a;
            unsigned char *mask = analyse_mask(px, N, &a);
            assert_int_equal(a.n, 1);
            assert_int_equal(a.obj[0].shape, shape);
            float iou = sh_shape_iou(mask, N, N, 0, &a.obj[0]);
            if (iou < 0.97f)
                fail_msg("%s of width %.2f: IoU %.3f with the world's", sh_shape_names[shape], w, iou);
            free(mask);
        }
    /* a square measured as a circle (a squarish circle): a circle and a
     * square of one area and centre overlap by IoU 0.834 */
    sh_scene s = {1, {{SH_SQUARE, SH_RED, 0.5f, 0.5f, 0.4f}}};
    sh_render(&s, N, px);
    sh_analysis a;
    unsigned char *mask = analyse_mask(px, N, &a);
    sh_found f = a.obj[0];
    f.shape = SH_CIRCLE;
    float iou = sh_shape_iou(mask, N, N, 0, &f);
    if (fabsf(iou - 0.834f) > 0.01f)
        fail_msg("a square as a circle: IoU %.3f, expected 0.834", iou);
    /* a lumpy circle: a bump of a fifth of its width on its side */
    free(mask);
    s.obj[0].shape = SH_CIRCLE;
    sh_render(&s, N, px);
    for (int y = 58; y < 70; y++)
        for (int x = 88; x < 100; x++)
            memcpy(px + ((size_t)y * N + x) * 3, sh_palette[SH_RED], 3);
    mask = analyse_mask(px, N, &a);
    assert_int_equal(a.n, 1);
    iou = sh_shape_iou(mask, N, N, 0, &a.obj[0]);
    if (iou > 0.95f || iou < 0.85f)
        fail_msg("a lumpy circle: IoU %.3f", iou);
    free(mask);
    free(px);
}

/* The placements of n renders (sh_render at px pixels, 32 px ones
 * upscaled) of caption text drawn with the layouts of (seed, 0..n). */
static int rendered_placements(const char *text, uint64_t seed, int n, int size, sh_placement *p)
{
    enum { N = 128 };
    unsigned char *px = malloc(N * N * 3), *lo = malloc((size_t)size * size * 3);
    assert_true(px && lo);
    sh_caption c;
    assert_int_equal(sh_caption_parse(text, &c), 0);
    int got = 0;
    for (int i = 0; i < n; i++) {
        sh_scene s;
        sh_analysis a;
        layout(&c, seed, (uint32_t)i, &s);
        if (size == N) {
            sh_render(&s, N, px);
        } else {
            sh_render(&s, size, lo);
            upscale(lo, size, px, N, (uint32_t)i);
        }
        assert_int_equal(sh_analyse(px, N, N, &a), 0);
        got += sh_placement_found(&c, &a, N, N, &p[got]) == 0;
    }
    free(px);
    free(lo);
    return got;
}

static void test_diversity(void **state)
{
    (void)state;
    enum { SEEDS = 16, CAPTIONS = 12 };
    static const char *const texts[CAPTIONS] = {
        "a red circle",       "a small blue square",  "a big green triangle", "an orange circle",
        "two purple triangles", "three yellow squares", "four blue circles",  "two red squares",
        "a red circle above a blue square", "a green triangle to the left of an orange circle",
        "a purple square below a purple circle", "a yellow circle to the right of a red triangle",
    };
    sh_placement p[SEEDS];
    double pos = 0, size = 0;
    for (int k = 0; k < CAPTIONS; k++) {
        sh_caption c;
        sh_spread m, w;
        assert_int_equal(sh_caption_parse(texts[k], &c), 0);
        /* the world against itself, from the pixels (at 128 px and upscaled from 32) */
        for (int size_px = 32; size_px <= 128; size_px *= 4) {
            assert_int_equal(rendered_placements(texts[k], 51 + (uint64_t)k, SEEDS, size_px, p), SEEDS);
            sh_spread_of(&c, p, SEEDS, &m);
            assert_int_equal(m.pairs, SEEDS * (SEEDS - 1) / 2);
            assert_int_equal(sh_world_spread(&c, 256, 7, &w), 0);
            if (size_px == 128) {
                pos += m.pos / w.pos / CAPTIONS;
                size += m.size / w.size / CAPTIONS;
            }
            /* one caption's 16 pictures: within a factor of 1.5 */
            if (m.pos < w.pos / 1.5 || m.pos > w.pos * 1.5 || m.size < w.size / 1.5 || m.size > w.size * 1.5)
                fail_msg("'%s' at %d px: spread %.3f, %.3f; the world's %.3f, %.3f", texts[k], size_px, m.pos,
                         m.size, w.pos, w.size);
        }
        /* one layout drawn 16 times: no diversity at all */
        for (int i = 1; i < SEEDS; i++)
            p[i] = p[0];
        sh_spread_of(&c, p, SEEDS, &m);
        assert_true(m.pos == 0 && m.size == 0);
        /* the world's layouts pulled halfway to the canvas centre: half the spread */
        sh_placement q[SEEDS];
        for (int i = 0; i < SEEDS; i++) {
            uc_rng r;
            sh_scene s;
            sh_rng_for(&r, 99, (uint32_t)i, SH_RNG_LAYOUT);
            assert_int_equal(sh_layout(&c, &r, &s), 0);
            sh_placement_scene(&s, &p[i]);
            q[i] = p[i];
            for (int j = 0; j < q[i].n; j++) {
                q[i].x[j] = 0.5f + 0.5f * (q[i].x[j] - 0.5f);
                q[i].y[j] = 0.5f + 0.5f * (q[i].y[j] - 0.5f);
            }
        }
        sh_spread_of(&c, p, SEEDS, &w);
        sh_spread_of(&c, q, SEEDS, &m);
        assert_true(fabs(m.pos - 0.5 * w.pos) < 1e-6 * w.pos && fabs(m.size - w.size) < 1e-9);
    }
    print_message("  diversity of the world's renders against the world: position %.3f, size %.3f\n", pos, size);
    assert_true(pos > 0.9 && pos < 1.1);
    assert_true(size > 0.85 && size < 1.15);
    /* a count's objects pair up however they are listed */
    sh_caption c;
    assert_int_equal(sh_caption_parse("three red squares", &c), 0);
    sh_placement a = {3, {0.2f, 0.5f, 0.8f}, {0.3f, 0.6f, 0.2f}, {0.2f, 0.21f, 0.22f}}, b = a;
    b.x[0] = a.x[2], b.y[0] = a.y[2], b.s[0] = a.s[2];
    b.x[2] = a.x[0], b.y[2] = a.y[0], b.s[2] = a.s[0];
    double dp, ds;
    sh_placement_dist(&c, &a, &b, &dp, &ds);
    assert_true(dp == 0 && ds == 0);
    b.x[1] += 0.3f;
    sh_placement_dist(&c, &a, &b, &dp, &ds);
    assert_true(fabs(dp - 0.3 / sqrt(3)) < 1e-6 && ds == 0);
    assert_true(fabsf(sh_size_range(&a) - 0.02f) < 1e-6f);
    /* a picture that does not match has no placement */
    assert_int_equal(sh_caption_parse("four red squares", &c), 0);
    unsigned char px[64 * 64 * 3];
    sh_scene s = {1, {{SH_SQUARE, SH_RED, 0.5f, 0.5f, 0.3f}}};
    sh_render(&s, 64, px);
    sh_analysis an;
    assert_int_equal(sh_analyse(px, 64, 64, &an), 0);
    assert_int_equal(sh_placement_found(&c, &an, 64, 64, &a), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_random_captions),
        cmocka_unit_test(test_layout_rules),
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_judge_rendered),
        cmocka_unit_test(test_judge_upscaled_noisy),
        cmocka_unit_test(test_judge_altered),
        cmocka_unit_test(test_judge_details),
        cmocka_unit_test(test_ground),
        cmocka_unit_test(test_shape_iou),
        cmocka_unit_test(test_diversity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
