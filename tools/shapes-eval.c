/* shapes-eval - judge pictures of the shapes world against their captions
 * from the pixels alone (SHAPES.md, "Judging a picture") and report the
 * fraction that match, per caption kind; with --quality also the ground,
 * the objects' shapes and the diversity of layouts (quality.c). */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libcommon/cli/cli.h"
#include "formats/base.h"
#include "libcommon/image/imageio.h"
#include "libcommon/shapes/shapes.h"

static const char usage[] =
    "Usage: shapes-eval [OPTION]... [FILE]...\n"
    "Judge pictures of the shapes world against their captions from the\n"
    "pixels alone, and print the fraction that match per caption kind\n"
    "(single, relation, count) and overall. Input: record streams (fields\n"
    "prompt and image, U8 [H, W, 3]) or PNGs, concatenated or one a file,\n"
    "whose caption is the prompt of the record they carry or their prompt\n"
    "text chunk. With no FILE, or when FILE is -, read standard input.\n"
    "\n"
    "  -c, --caption TEXT  judge every picture against TEXT instead\n"
    "      --quality       also measure what a person sees: the ground's\n"
    "                      cleanliness, each object's IoU with the world's\n"
    "                      shape, and for captions drawn more than once the\n"
    "                      spread of their layouts against the world's\n"
    "      --json          the summary as one JSON object\n"
    "  -v, --verbose       a line per picture: its input, match or mismatch,\n"
    "                      the caption and, for a mismatch, the reason (with\n"
    "                      --quality also its ground and IoU, and a line per\n"
    "                      caption's diversity); on standard error with --json\n"
    "  -m, --model FILE    accepted for uniformity; no model is used\n"
    "  -t, --threads N     accepted for uniformity\n"
    "  -s, --seed N        accepted for uniformity; nothing random is drawn\n"
    "  -q, --quiet         no messages but errors\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Exit status: 0 when every picture was judged (whatever the verdicts),\n"
    "1 bad input (unreadable picture, missing or ungrammatical caption),\n"
    "2 usage error.\n";

enum { OPT_JSON = 256, OPT_QUALITY };

#define WORLD_LAYOUTS 256          /* layouts of a caption for the world's spread */
#define WORLD_SEED 0x5eedf00du     /* ... drawn from this seed */

/* The matched pictures of one caption, for its diversity, with the
 * noise_key of the record of each (when it has one). */
typedef struct {
    char text[SH_CAPTION_MAX];
    sh_caption cap;
    sh_placement *p;
    uint64_t *key;
    int *has_key;
    int n, alloc;
} group;

typedef struct {
    uc_cli cli;
    const char *caption; /* --caption, or NULL */
    int json, quality;
    long matched[SH_NKIND], total[SH_NKIND];
    /* --quality */
    long pictures, clean_pictures;
    double worst;                          /* least clean share of a picture */
    sh_ground_stat ground;                 /* summed over the pictures */
    double iou[SH_NSHAPE];                 /* summed per shape */
    long objects[SH_NSHAPE];
    double range, world_range;             /* count pictures: size range, summed */
    long ranged;
    group *groups;
    int ngroups, groups_alloc;
} eval;

static group *group_for(eval *E, const sh_caption *cap)
{
    char text[SH_CAPTION_MAX];
    if (sh_caption_format(cap, text, sizeof text) < 0)
        uc_die(&E->cli, UC_EXIT_DATA, "caption: cannot be formatted");
    for (int i = 0; i < E->ngroups; i++)
        if (strcmp(E->groups[i].text, text) == 0)
            return &E->groups[i];
    if (E->ngroups == E->groups_alloc) {
        E->groups_alloc = E->groups_alloc ? 2 * E->groups_alloc : 16;
        E->groups = realloc(E->groups, (size_t)E->groups_alloc * sizeof *E->groups);
        if (!E->groups)
            uc_die(&E->cli, UC_EXIT_DATA, "out of memory");
    }
    group *g = &E->groups[E->ngroups++];
    memset(g, 0, sizeof *g);
    memcpy(g->text, text, sizeof text);
    g->cap = *cap;
    return g;
}

/* What a person sees of one picture (analysed into a, objects in mask):
 * its ground, its objects' shapes and, when it matches, its layout. The
 * verbose line's fields go to f. */
static void see(eval *E, const rec *r, const sh_caption *cap, const unsigned char *px, int w, int h,
                const sh_analysis *a, const unsigned char *mask, FILE *f)
{
    sh_ground_stat g;
    sh_ground(px, w, h, mask, &g);
    double clean = g.pixels ? (double)g.clean / (double)g.pixels : 1;
    E->ground.pixels += g.pixels;
    E->ground.clean += g.clean;
    E->ground.deviation += g.deviation;
    E->worst = E->pictures ? UC_MIN(E->worst, clean) : clean;
    E->pictures++;
    E->clean_pictures += clean >= SH_CLEAN_PICTURE;
    double sum = 0;
    int n = UC_MIN(a->n, SH_MAX_FOUND);
    for (int k = 0; k < n; k++) {
        float iou = sh_shape_iou(mask, w, h, k, &a->obj[k]);
        E->iou[a->obj[k].shape] += iou;
        E->objects[a->obj[k].shape]++;
        sum += iou;
    }
    if (f)
        fprintf(f, "\tground %.4f\tdeviation %.2f\tiou %.3f", clean, g.pixels ? g.deviation / (double)g.pixels : 0,
                n ? sum / n : 0);
    sh_placement p;
    if (sh_placement_found(cap, a, w, h, &p))
        return;
    group *gr = group_for(E, cap);
    /* a record with the noise_key of one already here is the same draw
     * again (the same caption and noise), not another sample */
    uint64_t key = 0;
    int has_key = rec_has(r, "noise_key") && rec_get_u64(r, "noise_key", &key) == 0;
    for (int i = 0; has_key && i < gr->n; i++)
        if (gr->has_key[i] && gr->key[i] == key)
            return;
    if (gr->n == gr->alloc) {
        gr->alloc = gr->alloc ? 2 * gr->alloc : 16;
        gr->p = realloc(gr->p, (size_t)gr->alloc * sizeof *gr->p);
        gr->key = realloc(gr->key, (size_t)gr->alloc * sizeof *gr->key);
        gr->has_key = realloc(gr->has_key, (size_t)gr->alloc * sizeof *gr->has_key);
        if (!gr->p || !gr->key || !gr->has_key)
            uc_die(&E->cli, UC_EXIT_DATA, "out of memory");
    }
    gr->key[gr->n] = key;
    gr->has_key[gr->n] = has_key;
    gr->p[gr->n++] = p;
    if (cap->kind == SH_COUNT) {
        double world;
        if (sh_world_size_range(cap, WORLD_LAYOUTS, WORLD_SEED, &world))
            uc_die(&E->cli, UC_EXIT_DATA, "%s: the world has no layout: %s", gr->text, uc_errmsg());
        E->range += sh_size_range(&p);
        E->world_range += world;
        E->ranged++;
    }
}

/* Judge one picture (record r, with its image) named `where`, from the
 * input `name` (a record's field errors name the record themselves). */
static void judge(eval *E, const rec *r, const char *png_prompt, const char *name, const char *where)
{
    const uc_cli *c = &E->cli;
    const char *text = E->caption;
    if (!text && rec_has(r, "prompt") && !(text = rec_get_str(r, "prompt")))
        uc_die(c, UC_EXIT_DATA, "%s: %s", rec_number(r) > 0 ? name : where, uc_errmsg());
    if (!text)
        text = png_prompt;
    if (!text)
        uc_die(c, UC_EXIT_DATA, "%s: no caption (no prompt field or text chunk); give --caption", where);
    sh_caption cap;
    if (sh_caption_parse(text, &cap))
        uc_die(c, UC_EXIT_DATA, "%s: %s", where, uc_errmsg());

    uc_tensor t;
    char shp[96];
    if (rec_get_tensor(r, "image", &t))
        uc_die(c, UC_EXIT_DATA, "%s: %s", where, uc_errmsg());
    if (t.dtype != UC_U8 || t.ndim != 3 || t.shape[2] != 3 || t.shape[0] < 1 || t.shape[1] < 1 ||
        t.shape[0] > UC_PNG_MAX_SIDE || t.shape[1] > UC_PNG_MAX_SIDE)
        uc_die(c, UC_EXIT_DATA, "%s: field image: %s %s, expected U8 [H, W, 3] with sides of 1..%d", where,
               uc_dtype_name(t.dtype), uc_shape_str(&t, shp, sizeof shp), UC_PNG_MAX_SIDE);
    int w = (int)t.shape[1], h = (int)t.shape[0];
    unsigned char *mask = E->quality ? uc_alloc((size_t)w * h, 1) : NULL;
    sh_analysis a;
    if (sh_analyse_mask(t.data, w, h, &a, mask))
        uc_die(c, UC_EXIT_DATA, "%s: %s", where, uc_errmsg());
    char why[512];
    int ok = sh_judge(&cap, &a, why, sizeof why);
    E->total[cap.kind]++;
    E->matched[cap.kind] += ok;
    FILE *f = c->verbose > 0 ? E->json ? stderr : stdout : NULL;
    if (f)
        fprintf(f, "%s\t%s\t%s%s%s", where, ok ? "match" : "mismatch", text, ok ? "" : "\t", ok ? "" : why);
    if (E->quality)
        see(E, r, &cap, t.data, w, h, &a, mask, f);
    if (f)
        fputc('\n', f);
    uc_free(mask);
}

/* A stream of PNGs: the signature of the first is already read. */
static void judge_pngs(eval *E, int fd, const char *name)
{
    FILE *f = fdopen(fd, "rb");
    if (!f)
        uc_die(&E->cli, UC_EXIT_DATA, "%s: %s", name, strerror(errno));
    char where[300];
    for (long n = 1;; n++) {
        unsigned char sig[8];
        snprintf(where, sizeof where, "%s: image %ld", name, n);
        if (n > 1) {
            size_t got = fread(sig, 1, 8, f);
            if (got == 0 && feof(f))
                break;
            if (got < 8 || !uc_png_sig(sig))
                uc_die(&E->cli, UC_EXIT_DATA, "%s: not a PNG (a PNG stream holds only PNGs)", where);
        }
        uc_image img;
        if (uc_png_read(f, where, 8, 0, &img))
            uc_die_err(&E->cli);
        rec *r = uc_record_from_png(&img);
        if (!r)
            uc_die(&E->cli, UC_EXIT_DATA, "%s: %s", where, uc_errmsg());
        judge(E, r, uc_png_text_get(&img, "prompt"), name, where);
        rec_free(r);
        uc_image_free(&img);
    }
    fclose(f);
}

/* One input: PNGs or records, told apart by the first bytes. */
static void judge_input(eval *E, const char *path)
{
    int is_stdin = !path || strcmp(path, "-") == 0;
    const char *name = is_stdin ? "stdin" : path;
    int fd = is_stdin ? 0 : open(path, O_RDONLY);
    if (fd < 0)
        uc_die(&E->cli, UC_EXIT_DATA, "%s: %s", path, strerror(errno));
    unsigned char sig[8];
    ssize_t got = uc_read_prefix(fd, sig);
    if (got < 0)
        uc_die(&E->cli, UC_EXIT_DATA, "%s: read error: %s", name, strerror(errno));
    if (got == 8 && uc_png_sig(sig)) {
        judge_pngs(E, fd, name);
        return;
    }
    rec_reader *rr = rec_reader_new_prefixed(fd, name, sig, (size_t)got);
    rec *r;
    int rc;
    char where[300];
    while ((rc = rec_read(rr, &r)) == 1) {
        snprintf(where, sizeof where, "%s: record %ld", name, rec_number(r));
        judge(E, r, NULL, name, where);
        rec_free(r);
    }
    if (rc < 0)
        uc_die_err(&E->cli);
    rec_reader_free(rr);
    if (!is_stdin)
        close(fd);
}

static double ratio(double a, double b) { return b > 0 ? a / b : 0; }

/* The --quality lines (or JSON members) after the accuracy. */
static void quality_summary(eval *E)
{
    const sh_ground_stat *g = &E->ground;
    double clean = g->pixels ? (double)g->clean / (double)g->pixels : 1,
           dev = g->pixels ? g->deviation / (double)g->pixels : 0;
    long objects = 0;
    double iou = 0;
    for (int s = 0; s < SH_NSHAPE; s++) {
        objects += E->objects[s];
        iou += E->iou[s];
    }
    /* diversity: the mean over captions of the ratios to the world */
    double pos = 0, size = 0;
    int captions = 0;
    long pictures = 0;
    FILE *f = E->cli.verbose > 0 ? E->json ? stderr : stdout : NULL;
    for (int i = 0; i < E->ngroups; i++) {
        group *gr = &E->groups[i];
        if (gr->n < 2)
            continue;
        sh_spread m, w;
        sh_spread_of(&gr->cap, gr->p, gr->n, &m);
        if (sh_world_spread(&gr->cap, WORLD_LAYOUTS, WORLD_SEED, &w))
            uc_die(&E->cli, UC_EXIT_DATA, "%s: the world has no layout: %s", gr->text, uc_errmsg());
        double rp = ratio(m.pos, w.pos), rs = ratio(m.size, w.size);
        if (f)
            fprintf(f, "diversity\t%s\t%d pictures\tposition %.3f\tsize %.3f\n", gr->text, gr->n, rp, rs);
        pos += rp;
        size += rs;
        captions++;
        pictures += gr->n;
    }
    if (captions) {
        pos /= captions;
        size /= captions;
    }
    if (E->json) {
        printf(", \"ground\": {\"clean_pictures\": %ld, \"pictures\": %ld, \"fraction\": ", E->clean_pictures,
               E->pictures);
        if (E->pictures)
            printf("%.6f, \"clean_pixels\": %.6f, \"deviation\": %.4f, \"worst\": %.6f}",
                   (double)E->clean_pictures / (double)E->pictures, clean, dev, E->worst);
        else
            printf("null}");
        printf(", \"shape\": {\"objects\": %ld, \"iou\": ", objects);
        if (objects)
            printf("%.6f", iou / (double)objects);
        else
            printf("null");
        for (int s = 0; s < SH_NSHAPE; s++) {
            printf(", \"%s\": ", sh_shape_names[s]);
            if (E->objects[s])
                printf("%.6f", E->iou[s] / (double)E->objects[s]);
            else
                printf("null");
        }
        printf("}, \"diversity\": {\"captions\": %d, \"pictures\": %ld, \"position\": ", captions, pictures);
        if (captions)
            printf("%.6f, \"size\": %.6f}", pos, size);
        else
            printf("null, \"size\": null}");
        printf(", \"count_sizes\": {\"pictures\": %ld, \"ratio\": ", E->ranged);
        if (E->ranged)
            printf("%.6f, \"range\": %.6f, \"world\": %.6f}", ratio(E->range, E->world_range),
                   E->range / (double)E->ranged, E->world_range / (double)E->ranged);
        else
            printf("null}");
        return;
    }
    if (E->pictures)
        printf("ground   %.3f (%ld/%ld pictures at least %.0f%% clean; ground pixels %.4f within %d/255 of white, "
               "mean deviation %.2f/255, worst picture %.4f)\n",
               (double)E->clean_pictures / (double)E->pictures, E->clean_pictures, E->pictures,
               100 * SH_CLEAN_PICTURE, clean, SH_GROUND_TOL, dev, E->worst);
    else
        printf("ground   -     (0 pictures)\n");
    if (objects) {
        printf("shape    %.3f (mean IoU of %ld objects with the world's shape;", iou / (double)objects, objects);
        for (int s = 0; s < SH_NSHAPE; s++)
            if (E->objects[s])
                printf(" %s %.3f (%ld)", sh_shape_names[s], E->iou[s] / (double)E->objects[s], E->objects[s]);
        printf(")\n");
    } else {
        printf("shape    -     (0 objects)\n");
    }
    if (captions) {
        printf("position %.3f (spread of layouts / the world's, mean over %d captions, %ld matched pictures)\n", pos,
               captions, pictures);
        printf("size     %.3f (spread of sizes / the world's, the same captions)\n", size);
    } else {
        printf("position -     (no caption with 2 or more matched pictures)\n");
        printf("size     -     (no caption with 2 or more matched pictures)\n");
    }
    if (E->ranged)
        printf("sizes    %.3f (range of sizes within a count picture / the world's, %ld pictures: %.3f / %.3f)\n",
               ratio(E->range, E->world_range), E->ranged, E->range / (double)E->ranged,
               E->world_range / (double)E->ranged);
}

static void summary(eval *E)
{
    long m = 0, n = 0;
    for (int k = 0; k < SH_NKIND; k++) {
        m += E->matched[k];
        n += E->total[k];
    }
    if (E->json)
        putchar('{');
    for (int k = 0; k <= SH_NKIND; k++) {
        const char *name = k < SH_NKIND ? sh_kind_names[k] : "overall";
        long km = k < SH_NKIND ? E->matched[k] : m, kn = k < SH_NKIND ? E->total[k] : n;
        if (E->json) {
            printf("%s\"%s\": {\"matched\": %ld, \"total\": %ld, \"fraction\": ", k ? ", " : "", name, km, kn);
            if (kn)
                printf("%.6f}", (double)km / (double)kn);
            else
                printf("null}");
        } else if (kn) {
            printf("%-8s %.3f (%ld/%ld)\n", name, (double)km / (double)kn, km, kn);
        } else {
            printf("%-8s -     (0/0)\n", name);
        }
    }
    if (E->quality)
        quality_summary(E);
    if (E->json)
        puts("}");
}

int main(int argc, char **argv)
{
    eval E = {0};
    uc_cli *c = &E.cli;
    uc_cli_init(c, "shapes-eval", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS, {"caption", 1, 0, 'c'}, {"json", 0, 0, OPT_JSON}, {"quality", 0, 0, OPT_QUALITY}, {0, 0, 0, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "c:", longopts, NULL)) != -1) {
        if (uc_cli_common(c, opt, optarg))
            continue;
        switch (opt) {
        case 'c': E.caption = optarg; break;
        case OPT_JSON: E.json = 1; break;
        case OPT_QUALITY: E.quality = 1; break;
        default: uc_die(c, UC_EXIT_USAGE, "bad option");
        }
    }
    uc_cli_ready(c);
    sh_caption cap;
    if (E.caption && sh_caption_parse(E.caption, &cap))
        uc_die(c, UC_EXIT_USAGE, "--caption: %s", uc_errmsg());
    if (optind == argc)
        judge_input(&E, NULL);
    for (int i = optind; i < argc; i++)
        judge_input(&E, argv[i]);
    summary(&E);
    uc_stdout_check(c);
    for (int i = 0; i < E.ngroups; i++) {
        free(E.groups[i].p);
        free(E.groups[i].key);
        free(E.groups[i].has_key);
    }
    free(E.groups);
    return UC_EXIT_OK;
}
