/* upsample - image in, image of `scale` times the size out: Karlo's
 * super-resolution stage (64 -> 256 for the released model): the image is
 * resized with an antialiased bicubic filter and a diffusion UNet restores
 * the detail, the last step by a second, fine-tuned UNet. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../libcommon/cli.h"
#include "../libcommon/common.h"
#include "../libcommon/imageio.h"
#include "../libcommon/resize.h"
#include "../libcommon/rng.h"
#include "../libcommon/sr.h"

static const char usage[] =
    "Usage: upsample [OPTION]... [FILE]...\n"
    "Enlarge images with the super-resolution diffusion model.\n"
    "Reads PNGs (any PNG; one written by unclip keeps its record) or records\n"
    "with an image field from the FILEs or standard input. Each image is\n"
    "resized to the model's scale (4 for Karlo's 64 -> 256 model) with an\n"
    "antialiased bicubic filter, then refined by the model.\n"
    "\n"
    "  -S, --steps STR     timestep respacing (default \"7\", the one the model\n"
    "                      was tuned for); the last step uses the second model\n"
    "      --fast          only the bicubic resize, no model\n"
    "  -f, --format FMT    png (default): PNGs carrying the record, concatenated;\n"
    "                      record: the input record with image replaced\n"
    "      --float         records also get image_f32, the unquantised sample\n"
    "  -o, --output PATH   write to PATH instead of standard output; for png a\n"
    "                      pattern with one %d, the output number (img-%d.png)\n"
    "  -m, --model FILE    sr model (default: sr.safetensors, see unclip-model(5))\n"
    "  -t, --threads N     threads (default: all cores)\n"
    "  -s, --seed N        random seed (default: the record's seed, else 0)\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       more messages\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "The input is the record's image_f32 when it has one (the unquantised\n"
    "decoder sample, which must match image), else its image. The r-th image\n"
    "(1-based, counted over all inputs) draws its noise from the RNG keyed by\n"
    "(seed, r). Outputs get image (U8 [H, W, 3]), seed (when absent),\n"
    "params.sr {steps, scale, seed, fast}, models.sr {id, checksum} and a\n"
    "history entry; every other field passes through.\n"
    "Exit status: 0 ok, 1 data error, 2 usage error.\n";

enum { OPT_FAST = 256, OPT_FLOAT };
enum { FMT_PNG, FMT_RECORD };

#define MAX_SIDE 16384 /* output side */
#define SR_STREAM 0x80000000u /* RNG stream of this stage, apart from the decoder's */

typedef struct {
    uc_cli cli;
    uc_sr sr;
    int have_model, scale;
    const char *steps, *output;
    int fast, format, want_float;
    FILE *out;
    long nout;
} opts;

typedef struct {
    const uc_cli *cli;
    char label[48];
} progress_ctx;

static void on_progress(void *ctx, int done, int total)
{
    progress_ctx *p = ctx;
    uc_progress(p->cli, p->label, done, total);
}

typedef struct {
    uc_rng rng;
} noise_ctx;

static int draw_noise(void *ctx, int draw, float *out, int64_t nelem)
{
    noise_ctx *n = ctx;
    (void)draw;
    uc_rng_normal(&n->rng, out, nelem);
    return 0;
}

static uint64_t record_key(uint64_t seed, uint64_t r)
{
    uint64_t z = seed + r * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void emit(opts *o, rec *out)
{
    if (o->format == FMT_RECORD) {
        if (rec_write(out, o->out))
            uc_die(&o->cli, UC_EXIT_DATA, "%s: write error", o->output ? o->output : "stdout");
        o->nout++;
        return;
    }
    FILE *f = stdout;
    char path[4096];
    if (o->output) {
        uc_out_pattern(&o->cli, o->output, o->nout, path, sizeof path);
        f = uc_out_open(&o->cli, path);
    }
    if (uc_write_png_record(f, out))
        uc_die(&o->cli, UC_EXIT_DATA, "%s: %s", o->output ? path : "stdout", uc_errmsg());
    if (o->output)
        uc_out_commit(&o->cli, f);
    o->nout++;
}

/* The low-resolution input in [-1, 1] as [3, H, W]: image_f32 when it
 * matches image, else image. */
static float *input_image(opts *o, const rec *r, const char *src, int64_t *H, int64_t *W)
{
    uc_tensor t;
    char shp[96];
    if (!rec_has(r, "image"))
        uc_die(&o->cli, UC_EXIT_DATA, "%s: record %ld field image: missing", src, rec_number(r));
    if (rec_get_tensor(r, "image", &t))
        uc_die(&o->cli, UC_EXIT_DATA, "%s: %s", src, uc_errmsg());
    if (t.dtype != UC_U8 || t.ndim != 3 || t.shape[2] != 3 || t.shape[0] < 1 || t.shape[1] < 1)
        uc_die(&o->cli, UC_EXIT_DATA, "%s: record %ld field image: %s %s, expected U8 [H, W, 3]", src,
               rec_number(r), uc_dtype_name(t.dtype), uc_shape_str(&t, shp, sizeof shp));
    int64_t h = t.shape[0], w = t.shape[1];
    if (h * o->scale > MAX_SIDE || w * o->scale > MAX_SIDE)
        uc_die(&o->cli, UC_EXIT_DATA, "%s: record %ld field image: %lldx%lld times %d is larger than %d", src,
               rec_number(r), (long long)w, (long long)h, o->scale, MAX_SIDE);
    /* the output (U8, and F32 with --float) must fit in a record */
    if ((uint64_t)(h * o->scale) * (uint64_t)(w * o->scale) * (o->want_float ? 15u : 3u) > UC_REC_MAX)
        uc_die(&o->cli, UC_EXIT_DATA, "%s: record %ld field image: %lldx%lld times %d would not fit in a record", src,
               rec_number(r), (long long)w, (long long)h, o->scale);
    *H = h, *W = w;
    if (rec_has(r, "image_f32")) { /* must be the same picture, unquantised */
        float *x = rec_get_f32(r, "image_f32", 3, (int64_t[]){3, h, w}, NULL);
        if (!x)
            uc_die(&o->cli, UC_EXIT_DATA, "%s: %s (image is %lldx%lld)", src, uc_errmsg(), (long long)w,
                   (long long)h);
        for (int64_t i = 0; i < 3 * h * w; i++) /* Karlo resizes the clamped sample */
            x[i] = x[i] < -1.0f ? -1.0f : x[i] > 1.0f ? 1.0f : x[i];
        return x;
    }
    float *x = uc_alloc((size_t)(3 * h * w), sizeof *x);
    uc_image_u8_to_f32(t.data, (int)h, (int)w, x);
    return x;
}

static void process(opts *o, rec *r, const char *src, uint64_t ordinal, int argc, char **argv)
{
    int64_t h, w;
    float *low = input_image(o, r, src, &h, &w);
    int64_t H = h * o->scale, W = w * o->scale, n = 3 * H * W;
    if (o->have_model) {
        int64_t s = uc_unet_stride(o->sr.first);
        if (H % s || W % s)
            uc_die(&o->cli, UC_EXIT_DATA,
                   "%s: record %ld field image: %lldx%lld upscaled is not a multiple of %lld, as the model needs",
                   src, rec_number(r), (long long)w, (long long)h, (long long)s);
    }
    uint64_t seed = 0;
    if (o->cli.seed_set)
        seed = o->cli.seed;
    else if (rec_has(r, "seed") && rec_get_u64(r, "seed", &seed))
        uc_die(&o->cli, UC_EXIT_DATA, "%s: %s", src, uc_errmsg());

    float *up = uc_alloc((size_t)n, sizeof *up), *x = uc_alloc((size_t)n, sizeof *x);
    uc_resize_aa(low, 3, h, w, up, H, W);
    if (o->fast) {
        memcpy(x, up, (size_t)n * sizeof *x);
    } else {
        noise_ctx nc;
        uc_rng_init(&nc.rng, record_key(seed, ordinal), SR_STREAM);
        progress_ctx pg = {.cli = &o->cli};
        snprintf(pg.label, sizeof pg.label, "image %llu", (unsigned long long)ordinal);
        uc_sr_sample_opts so = {.respacing = o->steps,
                                .noise = draw_noise,
                                .noise_ctx = &nc,
                                .progress = on_progress,
                                .progress_ctx = &pg};
        if (uc_sr_sample(&o->sr, 1, H, W, up, &so, x))
            uc_die(&o->cli, UC_EXIT_DATA, "%s: record %ld: %s", src, rec_number(r), uc_errmsg());
    }
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] < -1.0f ? -1.0f : x[i] > 1.0f ? 1.0f : x[i];
    unsigned char *px = uc_alloc((size_t)n, 1);
    uc_image_f32_to_u8(x, (int)H, (int)W, px);

    rec *out = rec_clone(r);
    rec_set_tensor(out, "image", UC_U8, 3, (int64_t[]){H, W, 3}, px);
    if (o->want_float)
        rec_set_tensor(out, "image_f32", UC_F32, 3, (int64_t[]){3, H, W}, x);
    else
        rec_del(out, "image_f32");
    if (!rec_has(out, "seed") && !o->fast)
        rec_set_u64(out, "seed", seed);
    rec *pp = rec_new();
    rec_del(pp, "version");
    if (o->fast) {
        rec_set_str(pp, "fast", "bicubic");
    } else {
        rec_set_str(pp, "steps", o->steps);
        rec_set_u64(pp, "seed", seed);
    }
    rec_set_u64(pp, "scale", (uint64_t)o->scale);
    rec_set_stage(out, "params", "sr", pp);
    rec_free(pp);
    if (o->have_model) {
        rec *pm = rec_new();
        rec_del(pm, "version");
        rec_set_str(pm, "id", o->sr.model_id);
        if (*o->sr.checksum)
            rec_set_str(pm, "checksum", o->sr.checksum);
        rec_set_stage(out, "models", "sr", pm);
        rec_free(pm);
    }
    rec_history_add(out, o->cli.tool, argc, argv);
    emit(o, out);
    rec_free(out);
    uc_free(px);
    uc_free(up);
    uc_free(x);
    uc_free(low);
}

int main(int argc, char **argv)
{
    opts o = {.steps = "7", .scale = 4};
    uc_cli_init(&o.cli, "upsample", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS,
        {"steps", 1, 0, 'S'},
        {"fast", 0, 0, OPT_FAST},
        {"format", 1, 0, 'f'},
        {"float", 0, 0, OPT_FLOAT},
        {"output", 1, 0, 'o'},
        {0, 0, 0, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "S:f:o:", longopts, NULL)) != -1) {
        if (uc_cli_common(&o.cli, opt, optarg))
            continue;
        switch (opt) {
        case 'S':
            if (strlen(optarg) > UC_RESPACING_MAX)
                uc_die(&o.cli, UC_EXIT_USAGE, "--steps: longer than %d characters", UC_RESPACING_MAX);
            o.steps = optarg;
            break;
        case OPT_FAST: o.fast = 1; break;
        case 'f':
            if (!strcmp(optarg, "png"))
                o.format = FMT_PNG;
            else if (!strcmp(optarg, "record"))
                o.format = FMT_RECORD;
            else
                uc_die(&o.cli, UC_EXIT_USAGE, "--format: '%s' is not png or record", optarg);
            break;
        case OPT_FLOAT: o.want_float = 1; break;
        case 'o': o.output = optarg; break;
        default: uc_die(&o.cli, UC_EXIT_USAGE, "bad option");
        }
    }
    if (o.output && o.format == FMT_PNG) {
        char probe[4096];
        uc_out_pattern(&o.cli, o.output, 0, probe, sizeof probe); /* exits unless one %d */
    }
    uc_cli_ready(&o.cli);

    /* --fast needs no model; with -m the model still gives the scale */
    if (!o.fast || o.cli.model) {
        const char *path = uc_model_path(&o.cli, "sr");
        if (uc_sr_open(&o.sr, path))
            uc_die_err(&o.cli);
        o.have_model = 1;
        o.scale = o.sr.cfg.scale;
        uc_diffusion d;
        if (uc_diffusion_from_config(&d, o.sr.diffusion, ""))
            uc_die(&o.cli, UC_EXIT_DATA, "%s: %s", path, uc_errmsg());
        uc_diffusion_free(&d);
        if (uc_diffusion_from_config(&d, o.sr.diffusion, o.steps))
            uc_die(&o.cli, UC_EXIT_USAGE, "--steps: %s", uc_errmsg());
        uc_info(&o.cli, "model %s (%s): x%d, %d channels, %d levels; %d steps (%s)%s", path, o.sr.model_id,
                o.scale, o.sr.cfg.unet.model_channels, o.sr.cfg.unet.nlevels, d.steps, o.steps,
                o.fast ? "; --fast: resize only" : "");
        uc_diffusion_free(&d);
    }

    o.out = stdout;
    if (o.output && o.format == FMT_RECORD)
        o.out = uc_out_open(&o.cli, o.output);
    int nin = optind < argc ? argc - optind : 1;
    uint64_t ordinal = 0;
    for (int f = 0; f < nin; f++) {
        const char *name = optind < argc ? argv[optind + f] : "-";
        const char *src = strcmp(name, "-") ? name : "stdin";
        uc_image_reader *rd = uc_image_reader_open_path(name);
        if (!rd)
            uc_die_err(&o.cli);
        rec *r;
        int got;
        uint64_t first = ordinal;
        while ((got = uc_image_reader_next(rd, &r)) == 1) {
            process(&o, r, src, ++ordinal, argc, argv);
            rec_free(r);
        }
        if (got < 0)
            uc_die_err(&o.cli);
        if (ordinal == first) /* an upstream stage that failed leaves nothing */
            uc_die(&o.cli, UC_EXIT_DATA, "%s: empty input (no images or records)", src);
        uc_image_reader_free(rd);
    }
    if (o.output && o.format == FMT_RECORD)
        uc_out_commit(&o.cli, o.out);
    uc_stdout_check(&o.cli);
    if (o.have_model)
        uc_sr_free(&o.sr);
    return UC_EXIT_OK;
}
