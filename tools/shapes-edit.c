/* shapes-edit - edit tasks of the shapes world (for `make eval-edit`):
 * pictures to inpaint and to outpaint, with the caption each edit should
 * reach, and the check that an edit's results kept the pixels they were
 * told to keep. */
#define _POSIX_C_SOURCE 200809L
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"
#include "formats/png.h"
#include "libcommon/cli/cli.h"
#include "libcommon/image/imageio.h"
#include "libcommon/shapes/shapes.h"

static const char usage[] =
    "Usage: shapes-edit --tasks N [OPTION]... DIR\n"
    "       shapes-edit --check DIR\n"
    "Make edit tasks of the shapes world, or check the kept pixels of their\n"
    "results.\n"
    "\n"
    "  --tasks N       write N tasks into DIR (which must exist) and list them\n"
    "                  on standard output, one a line: index, kind (inpaint or\n"
    "                  outpaint), the caption to reach and the --extend of an\n"
    "                  outpainting (- for none), separated by tabs. Tasks\n"
    "                  with index % 3 == 2 outpaint, the others inpaint.\n"
    "                  Inpainting: a two-object scene (a relation caption);\n"
    "                  one object's box (its square around the centre, plus a\n"
    "                  margin, less the other object's box) is to be redrawn\n"
    "                  as the caption with that object's colour, shape or both\n"
    "                  changed. Files: I-pic.png (the scene at --size),\n"
    "                  I-mask.png (white: redraw), I-big.png (the scene at\n"
    "                  --size times --scale). Outpainting: a two-object scene\n"
    "                  whose objects lie in opposite halves; I-pic.png is the\n"
    "                  half with one of them, to be extended by its own size\n"
    "                  to the caption's full scene; I-big.png is the whole\n"
    "                  scene at the larger size with the other half\n"
    "                  transparent.\n"
    "  --size PX       the decoder's side (default 32)\n"
    "  --scale K       the upsampler's factor (default 4)\n"
    "  --check         for each task of DIR/tasks.txt, compare the kept pixels\n"
    "                  of I-dec.png (the decoder's result) and I-out.png (the\n"
    "                  upsampler's) with the task's pictures; print how many\n"
    "                  results kept every pixel; exit 1 when one did not\n"
    "  -s, --seed N    seed of captions and layouts (default 0)\n"
    "  -m, --model FILE, -t, --threads N   accepted for uniformity\n"
    "  -q, --quiet     no messages but errors\n"
    "  -v, --verbose   more messages\n"
    "  -h, --help      this help\n"
    "  -V, --version   version\n"
    "\n"
    "Exit status: 0 ok, 1 a write error or (--check) a changed kept pixel,\n"
    "2 usage error.\n";

enum { OPT_TASKS = 256, OPT_SIZE, OPT_SCALE, OPT_CHECK };

typedef struct {
    uc_cli cli;
    const char *dir;
    int size, scale;
} ctx;

static void write_png(ctx *C, const char *name, long i, const unsigned char *px, int w, int h, int ch)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%ld-%s.png", C->dir, i, name);
    FILE *f = uc_out_open(&C->cli, path);
    if (uc_png_write(f, px, w, h, ch, NULL, 0))
        uc_die(&C->cli, UC_EXIT_DATA, "%s: %s", path, uc_errmsg());
    uc_out_commit(&C->cli, f);
}

/* Box of o in pixels of a size-wide canvas: [x0, x1) x [y0, y1). */
static void box(const sh_object *o, int size, float grow, int b[4])
{
    float h = sh_object_height(o), s = (float)size;
    b[0] = (int)((o->cx - o->w / 2 - grow) * s);
    b[1] = (int)((o->cx + o->w / 2 + grow) * s + 0.999f);
    b[2] = (int)((o->cy - h / 2 - grow) * s);
    b[3] = (int)((o->cy + h / 2 + grow) * s + 0.999f);
}

/* A scene for relation caption c by layout tries from (seed, index); with
 * split, only one whose objects lie in opposite halves along the
 * relation's axis (a pixel of room on each side of the middle). */
static int scene_for(ctx *C, const sh_caption *c, uint32_t index, int split, sh_scene *s)
{
    for (uint64_t k = 0; k < 2000; k++) {
        uc_rng rng;
        sh_rng_for(&rng, C->cli.seed + k * 0x9e3779b97f4a7c15ull, index, SH_RNG_LAYOUT);
        if (sh_layout(c, &rng, s))
            continue;
        if (!split)
            return 0;
        int axis, sign, b0[4], b1[4], half = C->size / 2;
        sh_rel_axis(c->rel, &axis, &sign);
        box(&s->obj[0], C->size, 0, b0);
        box(&s->obj[1], C->size, 0, b1);
        int lo0 = b0[2 * axis], hi0 = b0[2 * axis + 1], lo1 = b1[2 * axis], hi1 = b1[2 * axis + 1];
        if ((hi0 <= half - 1 && lo1 >= half + 1) || (hi1 <= half - 1 && lo0 >= half + 1))
            return 0;
    }
    return -1;
}

static void make_tasks(ctx *C, long n)
{
    int S = C->size, B = S * C->scale;
    unsigned char *px = uc_alloc((size_t)S * S, 3), *big = uc_alloc((size_t)B * B, 4);
    unsigned char *mask = uc_alloc((size_t)S * S, 1), *half = uc_alloc((size_t)S * S, 3);
    unsigned char *bigrgb = uc_alloc((size_t)B * B, 3);
    for (long i = 0; i < n; i++) {
        uc_rng rng;
        sh_rng_for(&rng, C->cli.seed, (uint32_t)i, SH_RNG_CAPTION);
        sh_caption c;
        int outpaint = i % 3 == 2;
        do /* a relation caption */
            sh_caption_random(&rng, &c);
        while (c.kind != SH_RELATION);
        sh_scene s;
        if (scene_for(C, &c, (uint32_t)i, outpaint, &s))
            uc_die(&C->cli, UC_EXIT_DATA, "task %ld: no layout found", i);
        char text[SH_CAPTION_MAX];
        sh_render(&s, S, px);
        sh_render(&s, B, bigrgb);
        if (!outpaint) {
            /* change object k: colour (1/3), shape (1/3) or both (1/3), until
             * the two objects still differ */
            int k = (int)(uc_rng_below(&rng, 2)), what = (int)(uc_rng_below(&rng, 3));
            sh_caption nc = c;
            do {
                nc = c;
                if (what != 1)
                    while ((nc.colour[k] = (int)(uc_rng_below(&rng, SH_NCOLOUR))) == c.colour[k])
                        ;
                if (what != 0)
                    while ((nc.shape[k] = (int)(uc_rng_below(&rng, SH_NSHAPE))) == c.shape[k])
                        ;
            } while (nc.colour[0] == nc.colour[1] && nc.shape[0] == nc.shape[1]);
            /* the mask: the square around k's centre, a margin of 6 % of
             * the canvas, less the other object's box grown by a pixel */
            sh_object sq = s.obj[k];
            float side = sh_object_height(&sq) > sq.w ? sh_object_height(&sq) : sq.w;
            int bk[4], bo[4];
            sh_object_centroid(&sq, &sq.cx, &sq.cy); /* centre the square on the area centroid */
            sq.shape = SH_SQUARE;
            sq.w = side;
            box(&sq, S, 0.06f, bk);
            box(&s.obj[1 - k], S, 1.0f / (float)S, bo);
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) {
                    int in = x >= bk[0] && x < bk[1] && y >= bk[2] && y < bk[3];
                    int other = x >= bo[0] && x < bo[1] && y >= bo[2] && y < bo[3];
                    mask[y * S + x] = in && !other ? 255 : 0;
                }
            sh_caption_format(&nc, text, sizeof text);
            write_png(C, "pic", i, px, S, S, 3);
            write_png(C, "mask", i, mask, S, S, 1);
            write_png(C, "big", i, bigrgb, B, B, 3);
            printf("%ld\tinpaint\t%s\t-\n", i, text);
        } else {
            /* keep the half with object k; extend toward the other */
            int k = (int)(uc_rng_below(&rng, 2)), axis, sign, bk[4];
            sh_rel_axis(c.rel, &axis, &sign);
            box(&s.obj[k], S, 0, bk);
            int first = bk[2 * axis + 1] <= S / 2; /* k lies in the first half (left or top) */
            int hw = axis == 0 ? S / 2 : S, hh = axis == 0 ? S : S / 2;
            int ox = axis == 0 && !first ? S / 2 : 0, oy = axis == 1 && !first ? S / 2 : 0;
            for (int y = 0; y < hh; y++)
                memcpy(half + 3 * (size_t)(y * hw), px + 3 * (size_t)((y + oy) * S + ox), 3 * (size_t)hw);
            for (int y = 0; y < B; y++)
                for (int x = 0; x < B; x++) {
                    size_t j = (size_t)y * B + (size_t)x;
                    int kept = axis == 0 ? (x >= ox * C->scale && x < (ox + hw) * C->scale)
                                         : (y >= oy * C->scale && y < (oy + hh) * C->scale);
                    memcpy(big + 4 * j, bigrgb + 3 * j, 3);
                    big[4 * j + 3] = kept ? 255 : 0;
                }
            static const char *const side_name[2][2] = {{"right", "left"}, {"bottom", "top"}};
            sh_caption_format(&c, text, sizeof text);
            write_png(C, "pic", i, half, hw, hh, 3);
            write_png(C, "big", i, big, B, B, 4);
            printf("%ld\toutpaint\t%s\t%s=%d\n", i, text, side_name[axis][first ? 0 : 1], S / 2);
        }
    }
    uc_free(px);
    uc_free(big);
    uc_free(mask);
    uc_free(half);
    uc_free(bigrgb);
}

/* Read DIR/I-name.png; NULL when missing (quiet) or unreadable. */
static int read_png(ctx *C, long i, const char *name, uc_image *im)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%ld-%s.png", C->dir, i, name);
    return uc_png_read_file(path, 0, im);
}

/* Pixels of res that differ from the kept pixels of pic (placed at ox,
 * oy): keep where mask (when given) is dark and pic's alpha is 255. -1
 * when the pictures do not fit each other (a task folder not made by
 * --tasks): pic is RGB or RGBA, the mask covers pic at 1/k of its size,
 * res holds pic at its offset. */
static long changed(const uc_image *pic, const uc_image *mask, int k, const uc_image *res, int ox, int oy)
{
    long bad = 0;
    if (res->channels != 3 || (pic->channels != 3 && pic->channels != 4) || ox < 0 || oy < 0 ||
        (long)res->w < (long)pic->w + ox || (long)res->h < (long)pic->h + oy)
        return -1;
    if (mask && ((long)mask->w * k < pic->w || (long)mask->h * k < pic->h))
        return -1;
    for (int y = 0; y < pic->h; y++)
        for (int x = 0; x < pic->w; x++) {
            const unsigned char *p = pic->px + ((size_t)y * pic->w + x) * pic->channels;
            if (pic->channels == 4 && p[3] < 255)
                continue;
            if (mask) {
                const unsigned char *m = mask->px + ((size_t)(y / k) * mask->w + x / k) * mask->channels;
                if (m[0] >= 128)
                    continue;
            }
            const unsigned char *q = res->px + ((size_t)(y + oy) * res->w + x + ox) * 3;
            bad += memcmp(p, q, 3) != 0;
        }
    return bad;
}

static int check(ctx *C)
{
    char path[4096], line[1024];
    snprintf(path, sizeof path, "%s/tasks.txt", C->dir);
    FILE *f = fopen(path, "r");
    if (!f)
        uc_die(&C->cli, UC_EXIT_DATA, "%s: cannot open", path);
    long tasks = 0, ok[2] = {0}, results = 0;
    while (fgets(line, sizeof line, f)) {
        long i = strtol(line, NULL, 10);
        int outpaint = strstr(line, "\toutpaint\t") != NULL;
        int ox = 0, oy = 0;
        const char *ext = strrchr(line, '\t');
        if (ext && (!strncmp(ext + 1, "left=", 5) || !strncmp(ext + 1, "top=", 4))) {
            char *end;
            long v = strtol(strchr(ext, '=') + 1, &end, 10);
            if (v < 0 || v > UC_PNG_MAX_SIDE || (*end && *end != '\n'))
                uc_die(&C->cli, UC_EXIT_DATA, "%s: task %ld: '%.*s' is not an offset in 0..%d", path, i,
                       (int)strcspn(ext + 1, "\n"), ext + 1, UC_PNG_MAX_SIDE);
            *(ext[1] == 'l' ? &ox : &oy) = (int)v;
        }
        tasks++;
        uc_image pic, big, mask, dec, out;
        int has_mask = !outpaint && !read_png(C, i, "mask", &mask);
        if (read_png(C, i, "pic", &pic) || read_png(C, i, "big", &big) || (!outpaint && !has_mask))
            uc_die(&C->cli, UC_EXIT_DATA, "task %ld: the task's pictures are missing", i);
        const char *stage[2] = {"dec", "out"};
        for (int st = 0; st < 2; st++) {
            uc_image *res = st ? &out : &dec;
            if (read_png(C, i, stage[st], res)) {
                uc_warn(&C->cli, "task %ld: no %s result", i, stage[st]);
                continue;
            }
            results++;
            long bad = st ? changed(&big, has_mask ? &mask : NULL, C->scale, res, 0, 0)
                          : changed(&pic, has_mask ? &mask : NULL, 1, res, ox, oy);
            if (bad == 0)
                ok[st]++;
            else if (bad < 0)
                uc_warn(&C->cli, "task %ld: %s: its size or channels do not fit the task's pictures", i, stage[st]);
            else
                uc_warn(&C->cli, "task %ld: %s: %ld kept pixels changed", i, stage[st], bad);
            uc_image_free(res);
        }
        uc_image_free(&pic);
        uc_image_free(&big);
        if (has_mask)
            uc_image_free(&mask);
    }
    fclose(f);
    printf("kept pixels unchanged: decoder %ld of %ld tasks, upsampler %ld of %ld tasks\n", ok[0], tasks, ok[1],
           tasks);
    return ok[0] + ok[1] == 2 * tasks && results == 2 * tasks ? UC_EXIT_OK : UC_EXIT_DATA;
}

int main(int argc, char **argv)
{
    ctx C = {.size = 32, .scale = 4};
    uc_cli_init(&C.cli, "shapes-edit", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS,       {"tasks", 1, 0, OPT_TASKS}, {"size", 1, 0, OPT_SIZE},
        {"scale", 1, 0, OPT_SCALE}, {"check", 0, 0, OPT_CHECK}, {0, 0, 0, 0},
    };
    long tasks = -1;
    int do_check = 0, opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS, longopts, NULL)) != -1) {
        if (uc_cli_common(&C.cli, opt, optarg))
            continue;
        switch (opt) {
        case OPT_TASKS: tasks = uc_parse_long(&C.cli, "--tasks", optarg, 0, 1000000); break;
        case OPT_SIZE: C.size = (int)uc_parse_long(&C.cli, "--size", optarg, 8, 1024); break;
        case OPT_SCALE: C.scale = (int)uc_parse_long(&C.cli, "--scale", optarg, 1, 16); break;
        case OPT_CHECK: do_check = 1; break;
        default: uc_die(&C.cli, UC_EXIT_USAGE, "bad option");
        }
    }
    if ((tasks >= 0) == do_check || optind != argc - 1)
        uc_die(&C.cli, UC_EXIT_USAGE, "give --tasks N or --check, and one DIR");
    C.dir = argv[optind];
    uc_cli_ready(&C.cli);
    if (do_check)
        return check(&C);
    uc_out_dir_check(&C.cli, C.dir);
    make_tasks(&C, tasks);
    uc_stdout_check(&C.cli);
    return UC_EXIT_OK;
}
