/* shapes.h - the shapes world of SHAPES.md: the default model's domain.
 *
 * Captions follow a small grammar (single objects, spatial relations,
 * counts); a caption parses into an sh_caption, a layout places its objects
 * on a square canvas (sh_scene, coordinates in canvas widths, y down), and
 * the rasteriser paints them flat and antialiased on white. The judge
 * (shapes_eval.c) goes the other way: from pixels alone it finds the
 * objects and checks them against a caption.
 *
 * Everything random comes from the project's counter-based RNG, so a caption
 * and its layout are pure functions of (seed, index). */
#ifndef UNCLIP_SHAPES_H
#define UNCLIP_SHAPES_H

#include <stddef.h>
#include <stdint.h>

#include "libcommon/nn/rng.h"

enum { SH_RED, SH_GREEN, SH_BLUE, SH_YELLOW, SH_PURPLE, SH_ORANGE, SH_NCOLOUR };
enum { SH_CIRCLE, SH_SQUARE, SH_TRIANGLE, SH_NSHAPE };
enum { SH_ANY, SH_SMALL, SH_BIG };                /* size classes; SH_ANY: not named */
enum { SH_SINGLE, SH_RELATION, SH_COUNT, SH_NKIND }; /* caption kinds */
/* Relation words. SH_ON_TOP_OF means SH_ABOVE; it is kept apart only so
 * that a caption's text survives a parse. */
enum { SH_ABOVE, SH_BELOW, SH_LEFT_OF, SH_RIGHT_OF, SH_ON_TOP_OF, SH_NREL };

#define SH_MAX_OBJ 4       /* objects in a scene */
#define SH_CAPTION_MAX 128 /* bytes of a formatted caption, NUL included */

/* Geometry of the world, in canvas widths. */
#define SH_SMALL_MIN 0.18f /* bounding-box width of a small object */
#define SH_SMALL_MAX 0.24f
#define SH_BIG_MIN 0.34f   /* ... of a big one */
#define SH_BIG_MAX 0.42f
#define SH_GAP 0.06f       /* least distance between two objects' boxes */
#define SH_MARGIN 0.02f    /* least distance from a box to the canvas edge */
#define SH_REL_MIN 0.25f   /* least centroid distance along a relation's axis */
#define SH_REL_OTHER 0.8f  /* other-axis distance at most this times the named one */

extern const unsigned char sh_palette[SH_NCOLOUR][3]; /* sRGB */
extern const char *const sh_colour_names[SH_NCOLOUR];
extern const char *const sh_shape_names[SH_NSHAPE];
extern const char *const sh_kind_names[SH_NKIND];
extern const char *const sh_rel_names[SH_NREL];

/* ---- captions ---- */

typedef struct {
    int kind;      /* SH_SINGLE, SH_RELATION, SH_COUNT */
    int count;     /* objects named: 1 (single), 2 (relation), 2..4 (count) */
    int colour[2]; /* [0]: the object (or counted objects, or A of "A rel B"); [1]: B */
    int shape[2];  /* likewise */
    int size;      /* single only: SH_ANY, SH_SMALL or SH_BIG; else SH_ANY */
    int rel;       /* relation only: SH_ABOVE..SH_ON_TOP_OF */
} sh_caption;

/* Parse a caption (words separated by blanks, any letter case). Anything
 * outside the grammar fails with a message naming the caption and the word
 * that is wrong. */
int sh_caption_parse(const char *text, sh_caption *c);
/* The caption's text (lower case, single spaces) into buf; returns its
 * length, or -1 when c is not a valid caption or buf is too small. */
int sh_caption_format(const sh_caption *c, char *buf, size_t n);
/* A random caption. Proportions: kinds 1/3 each. Single: size unnamed,
 * small, big 1/3 each. Relation: the four directions 1/4 each, "above"
 * written as "on top of" half the time; A and B drawn uniformly until they
 * differ in colour or shape. Count: two, three, four 1/3 each. Colours and
 * shapes uniform. */
void sh_caption_random(uc_rng *r, sh_caption *c);
/* The relation as an axis and a sign: A rel B holds when
 * sign * (B - A) along axis (0: x, 1: y, y down) is positive. */
void sh_rel_axis(int rel, int *axis, int *sign);

/* The random stream of sample `index` of a run with `seed`. The caption
 * (when drawn) and the layout have separate streams. index < 2^31. */
enum { SH_RNG_CAPTION, SH_RNG_LAYOUT };
void sh_rng_for(uc_rng *r, uint64_t seed, uint32_t index, int what);

/* ---- scenes ---- */

typedef struct {
    int shape, colour;
    float cx, cy; /* bounding-box centre, canvas widths, y down */
    float w;      /* bounding-box width, canvas widths */
} sh_object;

typedef struct {
    int n;                     /* objects in use */
    sh_object obj[SH_MAX_OBJ]; /* relation: [0] is A, [1] is B */
} sh_scene;

/* Bounding-box height: w for circles and squares, w*sqrt(3)/2 for the
 * equilateral triangle (vertex up, base at the bottom of the box). */
float sh_object_height(const sh_object *o);
/* Area centroid (the triangle's lies h/6 below its box centre). */
void sh_object_centroid(const sh_object *o, float *x, float *y);

/* Random placement satisfying every rule of SHAPES.md by rejection
 * sampling: size classes drawn first (named, else small or big at even
 * odds; one class for a count scene), then widths uniform in the class and
 * positions uniform inside the margin, object by object, until the gaps and
 * the relation (between centroids, see SH_REL_*) hold. The number of tries
 * is bounded; -1 only when every one failed. */
int sh_layout(const sh_caption *c, uc_rng *r, sh_scene *s);
/* Verify those rules for scene s of caption c: 0, or -1 naming the rule
 * broken. */
int sh_scene_check(const sh_caption *c, const sh_scene *s);

/* Paint s on a white size x size canvas: px is size*size*3 bytes, RGB,
 * row-major. Coverage is exact inside and outside, 4x4 supersampled on the
 * edge pixels. */
void sh_render(const sh_scene *s, int size, unsigned char *px);

/* ---- the judge (shapes_eval.c) ---- */

#define SH_MAX_FOUND 16

typedef struct {
    int colour, shape;    /* palette colour by vote, best-overlapping template */
    float iou;            /* its intersection over union with that template */
    float x0, y0, x1, y1; /* bounding box: x in image widths, y in image heights */
    float cx, cy;         /* centroid, same units */
    float size;           /* bounding-box width / image width */
    int64_t area;         /* pixels */
} sh_found;

typedef struct {
    int n;                      /* objects: regions above the minimum area */
    sh_found obj[SH_MAX_FOUND]; /* the first SH_MAX_FOUND, in scan order */
} sh_analysis;

/* Judge tolerances. */
#define SH_JUDGE_SIZE_SPLIT 0.29f /* bbox width below: small; at or above: big */
#define SH_JUDGE_REL_MIN 0.10f    /* least centroid distance along the named axis */
#define SH_JUDGE_MIN_AREA 0.004f  /* least region area, as a fraction of the image */

/* Find the objects of an RGB image (w x h x 3 bytes, row-major): each
 * 8-connected region of foreground (saturation (max-min)/max >= 0.30 and
 * max >= 60) of at least SH_JUDGE_MIN_AREA of the image. Its colour: the
 * palette colour nearest to most of its most saturated half of pixels; its
 * shape: the template (circle, square, triangle vertex up, with the
 * region's area and centroid) of the highest intersection over union. */
int sh_analyse(const unsigned char *px, int w, int h, sh_analysis *a);
/* 1 when the analysis shows exactly what c names, else 0 with the first
 * reason in why (when why is not NULL): as many objects as named, each of
 * the named colour and shape; a named size by width against
 * SH_JUDGE_SIZE_SPLIT; a relation by centroids, at least SH_JUDGE_REL_MIN
 * apart on the named side and less far across. */
int sh_judge(const sh_caption *c, const sh_analysis *a, char *why, size_t n);
/* sh_analyse, and when mask is not NULL (w*h bytes) it gets, for every
 * pixel of a found object, 1 + the object's index in a (255 beyond
 * SH_MAX_FOUND), and 0 elsewhere (the ground, and specks below the minimum
 * area). */
int sh_analyse_mask(const unsigned char *px, int w, int h, sh_analysis *a, unsigned char *mask);
/* 1 when the RGB pixel p is foreground (saturated and not too dark). */
int sh_foreground(const unsigned char *p);

/* ---- what a person sees (quality.c) ---- */

#define SH_GROUND_TOL 6 /* a ground pixel is clean within this of white, every channel */
#define SH_CLEAN_PICTURE 0.99 /* a picture is clean with at least this share of clean ground */

typedef struct {
    int64_t pixels;   /* ground: farther than sh_ground_margin(w, h) pixels from every object */
    int64_t clean;    /* ... of them within SH_GROUND_TOL of white (255) in every channel */
    double deviation; /* the sum over them of the largest channel's distance from 255 */
} sh_ground_stat;

/* Pixels around an object left out of the ground (its antialiased edge,
 * blurred over a 32 px source pixel after upsampling to 128):
 * max(1, round(max(w, h) / 32)). */
int sh_ground_margin(int w, int h);
/* The ground of an RGB image whose objects mask marks (sh_analyse_mask). */
void sh_ground(const unsigned char *px, int w, int h, const unsigned char *mask, sh_ground_stat *g);
/* Intersection over union of found object k (mask value k + 1, f its
 * measures) with the world's rendering of the ideal shape f->shape of the
 * same area and centroid (sh_render, then sh_foreground): 1 for a
 * rendered object, less for a lumpy or squarish one. */
float sh_shape_iou(const unsigned char *mask, int w, int h, int k, const sh_found *f);

/* A layout as the pixels show it: each object's centroid (x, y, in image
 * widths and heights) and width (s, image widths: the width of its shape
 * with its area, which a stray pixel moves less than its bounding box).
 * For a relation [0] is A and [1] B; a count's objects are in any order. */
typedef struct {
    int n;
    float x[SH_MAX_OBJ], y[SH_MAX_OBJ], s[SH_MAX_OBJ];
} sh_placement;

/* The placement of the analysis of a w x h image that matches c
 * (sh_judge); -1 when it does not match. */
int sh_placement_found(const sh_caption *c, const sh_analysis *a, int w, int h, sh_placement *p);
/* The placement of a world scene (centroids, widths). */
void sh_placement_scene(const sh_scene *s, sh_placement *p);
/* The distance between two placements of caption c: pos, the root mean
 * square distance between the objects' centroids, size, the mean absolute
 * difference of their widths; objects paired as the caption's roles say
 * (relation: A with A), a count's in the pairing with the least pos. */
void sh_placement_dist(const sh_caption *c, const sh_placement *a, const sh_placement *b, double *pos,
                       double *size);

/* Spread of n placements of one caption: the mean distance over all pairs. */
typedef struct {
    double pos, size; /* mean pos and size distances */
    long pairs;
} sh_spread;
void sh_spread_of(const sh_caption *c, const sh_placement *p, int n, sh_spread *out);
/* The world's spread of caption c: m layouts (sh_layout, streams (seed, i)).
 * -1 when a layout fails. */
int sh_world_spread(const sh_caption *c, int m, uint64_t seed, sh_spread *out);
/* Range of sizes (largest minus smallest width) within one placement. */
float sh_size_range(const sh_placement *p);
/* Its mean over m world layouts of caption c. */
int sh_world_size_range(const sh_caption *c, int m, uint64_t seed, double *range);

#endif
