/* upsample - image in, image of `scale` times the size out: Karlo's
 * super-resolution stage (64 -> 256 for the released model): the image is
 * resized with an antialiased bicubic filter and a diffusion UNet restores
 * the detail, the last step by a second, fine-tuned UNet. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libcommon/cli/cli.h"
#include "libcommon/cli/edit.h"
#include "formats/base.h"
#include "libcommon/image/imageio.h"
#include "libcommon/image/resize.h"
#include "libcommon/nn/rng.h"
#include "libcommon/nn/winograd.h"
#include "libcommon/models/sr.h"
#include "libcommon/cli/stage.h"

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
    "      --sampler S     ddpm (default, Karlo's), ddim (eta 0) or dpm++2m\n"
    "                      (DPM-Solver++(2M), deterministic; not for edits)\n"
    "      --fast          only the bicubic resize, no model\n"
    "      --tile N        run the model on tiles of N x N output pixels; 0: the\n"
    "                      whole picture (default: the model's\n"
    "                      unclip.default_tile, the side it was trained on,\n"
    "                      else 0)\n"
    "      --overlap N     pixels neighbouring tiles share, across which their\n"
    "                      outputs cross-fade: 0 to half the tile (the\n"
    "                      default); 0: each pixel the plain mean of the\n"
    "                      tiles that hold it\n"
    "      --image FILE    edit: the picture at the upsampled size (PNG or image\n"
    "                      record) whose kept pixels the output keeps byte for\n"
    "                      byte; the model redraws the others (RePaint)\n"
    "      --mask FILE     PNG of the picture's size or of the input's (then\n"
    "                      scaled up): white redraws, black keeps (default:\n"
    "                      the picture's transparent pixels are redrawn)\n"
    "      --resample N    RePaint: take each step N times (default 5)\n"
    "      --jump J        go back J steps between the takes (default 1)\n"
    "  -f, --format FMT    png (default): PNGs carrying the record, concatenated;\n"
    "                      record: the input record with image replaced\n"
    "      --float         records also get image_f32, the unquantised sample\n"
    "  -o, --output PATH   write to PATH instead of standard output; for png a\n"
    "                      pattern with one %d, the output number (img-%d.png),\n"
    "                      or a plain name when there is one picture\n"
    UC_VERIFY_HELP
    "  -m, --model FILE    sr model (default: sr.safetensors, see unclip-model(5))\n"
    "  -t, --threads N     threads (default: all cores)\n"
    "  -s, --seed N        random seed (default: the record's seed, else 0)\n"
    "      --progress WHEN auto (a bar when stderr is a terminal), json (one\n"
    "                      object a step on stderr) or none\n"
    "      --memory-budget SIZE\n"
    "                      most memory one picture's work may take, sized and\n"
    "                      checked before it starts (K, M, G, T; default\n"
    "                      $UNCLIP_MEMORY_BUDGET, else 4G; ulimit -v also counts)\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       more messages\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "The input is the record's image_f32 when it has one (the unquantised\n"
    "decoder sample, which must match image), else its image. Its noise comes\n"
    "from the RNG keyed by (seed, the record's noise_key), not from its place\n"
    "in the stream. Outputs get image (U8 [H, W, 3]), seed (when absent),\n"
    "params.sr {steps, sampler (unless ddpm), input, seed, noise_key, index,\n"
    "tile and overlap (when tiled), scale, or fast; edit},\n"
    "models.sr {id, checksum} and a history entry; every other field passes\n"
    "through.\n"
    "Exit status: 0 ok, 1 data error, 2 usage error.\n";

enum { OPT_FAST = 256, OPT_IMAGE, OPT_MASK, OPT_RESAMPLE, OPT_JUMP, OPT_SAMPLER, OPT_TILE, OPT_OVERLAP };

#define MAX_SIDE 16384 /* output side */
#define SR_STREAM 0x80000000u /* RNG stream of this stage, apart from the decoder's */

typedef struct {
    uc_cli cli;
    uc_sr *sr;
    const uc_sr_info *info; /* of sr */
    uc_image_out out;
    int have_model, scale;
    const char *steps;
    uc_sampler sampler;
    int fast;
    long tile;    /* --tile, -1: the model's default */
    long overlap; /* --overlap, -1: half the tile */
    const char *image, *mask; /* --image, --mask */
    long resample, jump;
    uc_edit_in edit;          /* the picture to edit (with --image) */
    int edit_loaded;
} opts;

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
    if ((uint64_t)(h * o->scale) * (uint64_t)(w * o->scale) * (o->out.want_float ? 15u : 3u) > UC_REC_MAX)
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

static void process(opts *o, rec *r, const char *src, uint64_t ordinal)
{
    int64_t h, w;
    float *low = input_image(o, r, src, &h, &w);
    int64_t H = h * o->scale, W = w * o->scale, n = 3 * H * W;
    if (o->have_model) {
        int64_t s = (int64_t)1 << (o->info->levels - 1);
        if (H % s || W % s)
            uc_die(&o->cli, UC_EXIT_DATA,
                   "%s: record %ld field image: %lldx%lld upscaled is not a multiple of %lld, as the model needs",
                   src, rec_number(r), (long long)w, (long long)h, (long long)s);
    }
    uint64_t seed = uc_record_seed(&o->cli, r, src);
    /* everything this picture needs, sized before any of it is allocated:
     * the resized input and the sample (and the picture to edit), the
     * model's buffers, the output record (U8, and F32 with --float) and its
     * PNG */
    double px = (double)H * (double)W, need = px * 3 * sizeof(float) * (o->image ? 3 : 2) + px * (o->image ? 1 : 0) +
                                            px * 3 * 3 + (o->out.want_float ? px * 3 * sizeof(float) * 2 : 0);
    if (o->have_model && !o->fast)
        need += uc_sr_bytes(o->sr, 1, H, W);
    char what[128];
    snprintf(what, sizeof what, "%lldx%lld upsampled to %lldx%lld", (long long)w, (long long)h, (long long)W,
             (long long)H);
    if (uc_mem_fits(what, need))
        uc_die(&o->cli, UC_EXIT_DATA, "%s: record %ld field image: %s", src, rec_number(r), uc_errmsg());

    float *up = uc_alloc((size_t)n, sizeof *up), *x = uc_alloc((size_t)n, sizeof *x);
    uc_resize_aa(low, 3, h, w, up, H, W);
    uc_edit ed = {0};
    float *known = NULL;
    unsigned char *keep = NULL;
    if (o->image) {
        uc_edit_in *e = &o->edit;
        if (!o->edit_loaded) { /* the first image tells the mask's scale */
            uc_edit_load_image(&o->cli, o->image, e);
            if (e->w == W && e->h == H)
                uc_edit_load_mask(&o->cli, o->mask, o->scale, 0, e);
            o->edit_loaded = 1;
            if (e->nredraw == (int64_t)e->w * e->h)
                uc_info(&o->cli, "--image %s: every pixel is redrawn, so this is plain upsampling", o->image);
        }
        if (e->w != W || e->h != H)
            uc_die(&o->cli, UC_EXIT_DATA,
                   "%s: record %ld: the picture to edit, %s, is %dx%d; the image %lldx%lld upsampled is %lldx%lld",
                   src, rec_number(r), o->image, e->w, e->h, (long long)w, (long long)h, (long long)W,
                   (long long)H);
        known = uc_alloc((size_t)n, sizeof *known);
        keep = uc_alloc((size_t)(H * W), 1);
        uc_image_u8_to_f32(e->px, (int)H, (int)W, known);
        for (int64_t i = 0; i < H * W; i++)
            keep[i] = !e->redraw[i];
        ed = (uc_edit){.known = known, .keep = keep, .resample = (int)o->resample, .jump = (int)o->jump};
    }
    if (o->fast) {
        memcpy(x, up, (size_t)n * sizeof *x);
    } else {
        noise_ctx nc;
        uc_rng_init(&nc.rng, uc_stage_key(seed, uc_record_noise_key(&o->cli, r, src), "sr"), SR_STREAM);
        uc_step_progress pg = {.cli = &o->cli};
        snprintf(pg.label, sizeof pg.label, "image %llu", (unsigned long long)ordinal);
        uc_stage_opts so = {.respacing = o->steps,
                            .sampler = o->sampler, /* Karlo's DDPM unless told, whatever the respacing */
                            .noise = draw_noise,
                            .noise_ctx = &nc,
                            .progress = uc_step_progress_fn,
                            .progress_ctx = &pg,
                            .edit = o->image ? &ed : NULL};
        if (uc_sr_sample(o->sr, 1, H, W, up, &so, x))
            uc_die(&o->cli, UC_EXIT_DATA, "%s: record %ld: %s", src, rec_number(r), uc_errmsg());
    }
    uc_check_finite(&o->cli, src, r, "image", x, n);

    rec *out = rec_clone(r);
    if (o->image && o->fast) /* no model: the kept pixels over the resize */
        for (int64_t c = 0; c < 3; c++)
            for (int64_t i = 0; i < H * W; i++)
                if (keep[i])
                    x[c * H * W + i] = known[c * H * W + i];
    uc_rec_set_image(out, x, H, W, o->out.want_float);
    if (o->image)
        uc_edit_paste(&o->cli, out, &o->edit, 0, 0);
    if (!rec_has(out, "seed") && !o->fast)
        rec_set_u64(out, "seed", seed);
    rec *pp = rec_new();
    rec_del(pp, "version");
    if (o->fast) {
        rec_set_str(pp, "fast", "bicubic");
    } else {
        rec_set_str(pp, "steps", o->steps);
        if (o->sampler != UC_SAMPLER_DDPM) /* absent: ddpm, as records written before --sampler */
            rec_set_str(pp, "sampler", uc_sampler_name(o->sampler));
        rec_set_str(pp, "input", rec_has(r, "image_f32") ? "image_f32" : "image");
        uc_set_draw(&o->cli, pp, seed, uc_record_noise_key(&o->cli, r, src), 0);
        if (o->tile > 0) {
            rec_set_u64(pp, "tile", (uint64_t)o->tile);
            rec_set_u64(pp, "overlap", (uint64_t)o->overlap);
        }
    }
    rec_set_u64(pp, "scale", (uint64_t)o->scale);
    if (o->image) {
        rec *em = uc_edit_params(&o->edit, (int)o->resample, (int)o->jump);
        rec_set_map(pp, "edit", em);
        rec_free(em);
    }
    rec_set_stage(out, "params", "sr", pp);
    rec_free(pp);
    if (o->have_model)
        uc_set_model_info(out, "sr", &o->info->model);
    uc_image_out_emit(&o->out, &o->cli, out);
    uc_free(up);
    uc_free(x);
    uc_free(low);
    uc_free(known);
    uc_free(keep);
}

int main(int argc, char **argv)
{
    opts o = {.steps = "7", .scale = 4, .resample = 5, .jump = 1, .tile = -1, .overlap = -1};
    uc_cli_init(&o.cli, "upsample", usage, argc, argv);
    /* the SR UNets gain 1% from cached Winograd transforms, for 1 GB */
    uc_winograd_default_cache_mb(0);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS, UC_VERIFY_LONGOPT,
        {"steps", 1, 0, 'S'},
        {"fast", 0, 0, OPT_FAST},
        {"tile", 1, 0, OPT_TILE},
        {"overlap", 1, 0, OPT_OVERLAP},
        {"image", 1, 0, OPT_IMAGE},
        {"mask", 1, 0, OPT_MASK},
        {"resample", 1, 0, OPT_RESAMPLE},
        {"jump", 1, 0, OPT_JUMP},
        {"sampler", 1, 0, OPT_SAMPLER},
        UC_IMAGE_OUT_LONGOPTS,
        {0, 0, 0, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "S:" UC_IMAGE_OUT_SHORTOPTS, longopts, NULL)) != -1) {
        if (uc_cli_common(&o.cli, opt, optarg) || uc_image_out_option(&o.out, &o.cli, opt, optarg))
            continue;
        switch (opt) {
        case 'S': o.steps = uc_parse_steps(&o.cli, optarg); break;
        case OPT_FAST: o.fast = 1; break;
        case OPT_TILE: o.tile = uc_parse_long(&o.cli, "--tile", optarg, 0, MAX_SIDE); break;
        case OPT_OVERLAP: o.overlap = uc_parse_long(&o.cli, "--overlap", optarg, 0, MAX_SIDE / 2); break;
        case OPT_IMAGE: o.image = optarg; break;
        case OPT_MASK: o.mask = optarg; break;
        case OPT_RESAMPLE: o.resample = uc_parse_long(&o.cli, "--resample", optarg, 1, UC_EDIT_MAX_RESAMPLE); break;
        case OPT_JUMP: o.jump = uc_parse_long(&o.cli, "--jump", optarg, 1, 1000); break;
        case OPT_SAMPLER: o.sampler = uc_parse_sampler(&o.cli, optarg); break;
        default: uc_die(&o.cli, UC_EXIT_USAGE, "bad option");
        }
    }
    if (o.mask && !o.image)
        uc_die(&o.cli, UC_EXIT_USAGE, "--mask needs --image, the picture to edit");
    if (o.image && !o.fast && o.sampler == UC_SAMPLER_DPMPP_2M)
        uc_die(&o.cli, UC_EXIT_USAGE, "--sampler dpm++2m: not for edits (--image); use ddpm or ddim");
    uc_image_out_check(&o.out, &o.cli);
    uc_cli_ready(&o.cli);

    /* --fast needs no model; with -m the model still gives the scale */
    if (!o.fast || o.cli.model) {
        const char *path = uc_model_path(&o.cli, "sr");
        if (!(o.sr = uc_sr_open(path)))
            uc_die_err(&o.cli);
        o.info = uc_sr_get_info(o.sr);
        o.have_model = 1;
        o.scale = o.info->scale;
        /* the model's diffusion section must hold (data error), then
         * --steps must fit it (usage error); kept for every image */
        if (uc_sr_steps(o.sr, "") < 0)
            uc_die(&o.cli, UC_EXIT_DATA, "%s: %s", path, uc_errmsg());
        int steps = uc_sr_steps(o.sr, o.steps);
        if (steps < 0)
            uc_die(&o.cli, UC_EXIT_USAGE, "--steps: %s", uc_errmsg());
        if (o.tile >= 0 && uc_sr_set_tile(o.sr, (int)o.tile, 0))
            uc_die(&o.cli, UC_EXIT_USAGE, "--tile: %s", uc_errmsg());
        if (o.tile < 0 && uc_sr_set_tile(o.sr, o.info->model.default_tile, 0))
            uc_die(&o.cli, UC_EXIT_DATA, "%s: metadata unclip.default_tile: %s", path, uc_errmsg());
        if (o.tile < 0)
            o.tile = o.info->model.default_tile;
        if (o.overlap < 0)
            o.overlap = o.tile / 2;
        if (uc_sr_set_tile(o.sr, (int)o.tile, (int)o.overlap))
            uc_die(&o.cli, UC_EXIT_USAGE, "--overlap: %s", uc_errmsg());
        uc_info(&o.cli, "model %s (%s): x%d, %d channels, %d levels; %d steps (%s), %s%s%s", path, o.info->model.id,
                o.scale, o.info->channels, o.info->levels, steps, o.steps, uc_sampler_name(o.sampler), o.tile > 0 ? "; tiled" : "",
                o.fast ? "; --fast: resize only" : "");
        if (o.image && o.jump > steps)
            uc_die(&o.cli, UC_EXIT_USAGE, "--jump %ld: more than the %d steps", o.jump, steps);
        if (o.image && !o.fast)
            uc_info(&o.cli, "edit %s: resample %ld, jump %ld: %lld network calls instead of %d", o.image, o.resample,
                    o.jump, (long long)uc_edit_calls(steps, (int)o.resample, (int)o.jump), steps);
    }

    uc_image_out_open(&o.out, &o.cli);
    uc_inputs in;
    uc_inputs_init(&in, &o.cli, argc - optind, argv + optind, 1);
    rec *r;
    while ((r = uc_inputs_next(&in)))
        process(&o, r, in.src, in.ordinal);
    uc_image_out_close(&o.out, &o.cli);
    uc_stdout_check(&o.cli);
    if (o.have_model)
        uc_sr_free(o.sr);
    uc_edit_in_free(&o.edit);
    return UC_EXIT_OK;
}
