/* decoder-diffuse - CLIP image embedding (and the text it came from) in,
 * 64x64 image out: Karlo's decoder, a diffusion UNet sampled with
 * classifier-free guidance (DALL-E 2 paper, section 2.1). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../libcommon/cli.h"
#include "../libcommon/common.h"
#include "../libcommon/decoder.h"
#include "../libcommon/imageio.h"
#include "../libcommon/rng.h"

static const char usage[] =
    "Usage: decoder-diffuse [OPTION]... [FILE]...\n"
    "Generate images from CLIP image embeddings with the diffusion decoder.\n"
    "Reads records from the FILEs or standard input; each needs image_emb\n"
    "(from prior-sample, clip-encode --image, emb-interp or emb-textdiff),\n"
    "text_emb, text_seq, token_mask and uncond.{text_emb, text_seq,\n"
    "token_mask} (from clip-encode). Writes one image per sample.\n"
    "\n"
    "  -S, --steps STR     timestep respacing: \"25\" (default), section counts\n"
    "                      \"10,10,3,2,2\", \"ddimN\" or \"fast27\"\n"
    "  -g, --guidance F    classifier-free guidance scale, > 0 (default 8)\n"
    "  -n, --samples N     images per input record (default 1)\n"
    "      --sampler S     ddpm or ddim (default: ddim for \"ddim...\" and\n"
    "                      \"fast...\" respacings, else ddpm)\n"
    "      --eta F         DDIM noise (default 0)\n"
    "  -f, --format FMT    png (default): PNGs carrying the record, concatenated;\n"
    "                      record: the input record with image added\n"
    "      --float         records also get image_f32, the unquantised sample\n"
    "  -o, --output PATH   write to PATH instead of standard output; for png a\n"
    "                      pattern with one %d, the output number (img-%d.png)\n"
    "  -m, --model FILE    decoder model (default: decoder.safetensors, see unclip-model(5))\n"
    "  -t, --threads N     threads (default: all cores)\n"
    "  -s, --seed N        random seed (default: the record's seed, else 0)\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       more messages\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Sample i of the r-th input record (1-based, counted over all inputs)\n"
    "draws its noise from the RNG keyed by (seed, r), stream i. Outputs get\n"
    "image (U8 [H, W, 3]), index (with -n above 1), seed (when absent),\n"
    "params.decoder {steps, guidance, sampler, eta, seed}, models.decoder\n"
    "{id, checksum} and a history entry; every other field passes through.\n"
    "Exit status: 0 ok, 1 data error, 2 usage error.\n";

enum { OPT_SAMPLER = 256, OPT_ETA, OPT_FLOAT };
enum { FMT_PNG, FMT_RECORD };

#define MAX_BATCH 4 /* samples sampled together (2x rows in the network) */

typedef struct {
    uc_cli cli;
    uc_decoder dec;
    const char *steps, *output;
    double guidance, eta;
    long nsamples;
    int sampler, format, want_float;
    FILE *out;
    long nout; /* outputs written */
} opts;

/* The conditioning of one record, checked against the model. */
typedef struct {
    float *emb, *seq;
    unsigned char *mask;
} text_in;

static void text_in_free(text_in *t)
{
    uc_free(t->emb);
    uc_free(t->seq);
    uc_free(t->mask);
}

/* A float field with exactly the dims want[ndim]; messages name the stream,
 * record and field (with the "uncond." prefix inside the uncond map). */
static float *get_f32(const rec *r, const char *src, const char *pre, const char *key, int ndim,
                      const int64_t *want)
{
    uc_tensor t, w = {.ndim = ndim};
    char got[96], need[96];
    if (!rec_has(r, key)) {
        uc_err("%s: record %ld field %s%s: missing", src, rec_number(r), pre, key);
        return NULL;
    }
    if (rec_get_tensor(r, key, &t)) {
        uc_err_prefix("%s", src);
        return NULL;
    }
    memcpy(w.shape, want, (size_t)ndim * sizeof *want);
    if (!uc_tensor_shape_is(&t, ndim, want)) {
        uc_err("%s: record %ld field %s%s: shape %s, but the decoder model needs %s", src, rec_number(r), pre, key,
               uc_shape_str(&t, got, sizeof got), uc_shape_str(&w, need, sizeof need));
        return NULL;
    }
    float *x = rec_get_f32(r, key, ndim, want, NULL);
    if (!x)
        uc_err_prefix("%s", src);
    return x;
}

static int get_text(const rec *r, const char *src, const char *pre, const uc_decoder_config *dc, text_in *t)
{
    memset(t, 0, sizeof *t);
    int64_t T = dc->text_ctx, D = dc->clip_dim;
    t->emb = get_f32(r, src, pre, "text_emb", 1, &D);
    t->seq = t->emb ? get_f32(r, src, pre, "text_seq", 2, (int64_t[]){T, D}) : NULL;
    if (!t->seq)
        return -1;
    uc_tensor m;
    char got[96];
    if (!rec_has(r, "token_mask"))
        return uc_err("%s: record %ld field %stoken_mask: missing", src, rec_number(r), pre);
    if (rec_get_tensor(r, "token_mask", &m))
        return uc_err_prefix("%s", src);
    if (m.dtype == UC_F32 || m.dtype == UC_F16 || m.dtype == UC_BF16 || m.dtype == UC_F64)
        return uc_err("%s: record %ld field %stoken_mask: dtype %s, expected U8", src, rec_number(r), pre,
                      uc_dtype_name(m.dtype));
    if (!uc_tensor_shape_is(&m, 1, &T))
        return uc_err("%s: record %ld field %stoken_mask: shape %s, but the decoder model needs [%lld]", src,
                      rec_number(r), pre, uc_shape_str(&m, got, sizeof got), (long long)T);
    int64_t *v = uc_alloc((size_t)T, sizeof *v);
    uc_tensor_to_i64(&m, v);
    t->mask = uc_alloc((size_t)T, 1);
    int rc = 0;
    for (int64_t i = 0; i < T && !rc; i++) {
        if (v[i] != 0 && v[i] != 1)
            rc = uc_err("%s: record %ld field %stoken_mask: value %lld at %lld is not 0 or 1", src, rec_number(r),
                        pre, (long long)v[i], (long long)i);
        t->mask[i] = (unsigned char)v[i];
    }
    uc_free(v);
    return rc;
}

/* Noise: sample j of the batch draws from its own stream; the second half
 * of the rows (Karlo's unconditional bookkeeping, never fed to the
 * network) repeats the first. */
typedef struct {
    uc_rng *rng;
    int64_t nb, per;
} noise_ctx;

static int draw_noise(void *ctx, int draw, float *out, int64_t nelem)
{
    noise_ctx *n = ctx;
    (void)draw;
    if (nelem != 2 * n->nb * n->per)
        return uc_err("noise request of %lld values for %lld samples", (long long)nelem, (long long)n->nb);
    for (int64_t j = 0; j < n->nb; j++) {
        uc_rng_normal(&n->rng[j], out + j * n->per, n->per);
        memcpy(out + (n->nb + j) * n->per, out + j * n->per, (size_t)n->per * sizeof *out);
    }
    return 0;
}

typedef struct {
    const uc_cli *cli;
    char label[48];
} progress_ctx;

static void on_progress(void *ctx, int done, int total)
{
    progress_ctx *p = ctx;
    uc_progress(p->cli, p->label, done, total);
}

/* splitmix64: the key of record r's RNG from the seed. */
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

/* Every sample of one record. */
static void process(opts *o, rec *r, const char *src, uint64_t ordinal, int argc, char **argv)
{
    const uc_decoder_config *dc = &o->dec.cfg;
    int64_t D = dc->clip_dim, T = dc->text_ctx, S = dc->image_size, per = 3 * S * S;
    /* check everything before computing */
    float *img = get_f32(r, src, "", "image_emb", 1, &D);
    if (!img)
        uc_die_err(&o->cli);
    text_in tc, tu;
    if (get_text(r, src, "", dc, &tc))
        uc_die_err(&o->cli);
    if (!rec_has(r, "uncond"))
        uc_die(&o->cli, UC_EXIT_DATA, "%s: record %ld field uncond: missing (clip-encode writes it)", src,
               rec_number(r));
    rec *um = rec_get_map(r, "uncond");
    if (!um)
        uc_die(&o->cli, UC_EXIT_DATA, "%s: %s", src, uc_errmsg());
    if (get_text(um, src, "uncond.", dc, &tu))
        uc_die_err(&o->cli);
    uint64_t seed = 0;
    if (o->cli.seed_set)
        seed = o->cli.seed;
    else if (rec_has(r, "seed") && rec_get_u64(r, "seed", &seed))
        uc_die(&o->cli, UC_EXIT_DATA, "%s: %s", src, uc_errmsg());

    /* the guided batch: nb samples, rows [cond x nb, uncond x nb] */
    int64_t nb_max = UC_MIN(o->nsamples, MAX_BATCH);
    float *txt = uc_alloc((size_t)(2 * nb_max * D), sizeof(float));
    float *seq = uc_alloc((size_t)(2 * nb_max * T * D), sizeof(float));
    unsigned char *mask = uc_alloc((size_t)(2 * nb_max * T), 1);
    float *y = uc_alloc((size_t)(2 * nb_max * D), sizeof(float)), *imgs = uc_alloc((size_t)(nb_max * D), sizeof(float));
    float *x = uc_alloc((size_t)(2 * nb_max * per), sizeof(float));
    uc_rng *rng = uc_alloc((size_t)nb_max, sizeof *rng);
    unsigned char *px = uc_alloc((size_t)per, 1);
    float scale = (float)o->guidance;
    uint64_t key = record_key(seed, ordinal);
    progress_ctx pg = {.cli = &o->cli};
    const char *sampler_name = o->sampler == UC_SAMPLER_DDIM ? "ddim" : "ddpm";

    for (int64_t s0 = 0; s0 < o->nsamples; s0 += nb_max) {
        int64_t nb = UC_MIN(nb_max, o->nsamples - s0);
        for (int64_t j = 0; j < nb; j++) {
            const text_in *half[2] = {&tc, &tu};
            for (int h = 0; h < 2; h++) {
                int64_t row = h * nb + j;
                memcpy(txt + row * D, half[h]->emb, (size_t)D * sizeof(float));
                memcpy(seq + row * T * D, half[h]->seq, (size_t)(T * D) * sizeof(float));
                memcpy(mask + row * T, half[h]->mask, (size_t)T);
            }
            memcpy(imgs + j * D, img, (size_t)D * sizeof(float));
            uc_rng_init(&rng[j], key, (uint32_t)(s0 + j));
        }
        uc_decoder_guided_y(&o->dec, nb, imgs, y);
        uc_decoder_cond cond = {nb, T, txt, seq, mask, y, &scale, 1};
        noise_ctx nc = {rng, nb, per};
        snprintf(pg.label, sizeof pg.label, "record %llu", (unsigned long long)ordinal);
        uc_decoder_sample_opts so = {.respacing = o->steps,
                                     .sampler = (uc_sampler)o->sampler,
                                     .eta = (float)o->eta,
                                     .noise = draw_noise,
                                     .noise_ctx = &nc,
                                     .progress = on_progress,
                                     .progress_ctx = &pg};
        if (uc_decoder_sample(&o->dec, &cond, &so, x))
            uc_die(&o->cli, UC_EXIT_DATA, "%s: record %ld: %s", src, rec_number(r), uc_errmsg());

        for (int64_t j = 0; j < nb; j++) {
            float *xi = x + j * per;
            for (int64_t i = 0; i < per; i++) /* what Karlo hands on: clamp(sample, -1, 1) */
                xi[i] = xi[i] < -1.0f ? -1.0f : xi[i] > 1.0f ? 1.0f : xi[i];
            uc_image_f32_to_u8(xi, (int)S, (int)S, px);
            rec *out = rec_clone(r);
            rec_set_tensor(out, "image", UC_U8, 3, (int64_t[]){S, S, 3}, px);
            if (o->want_float)
                rec_set_tensor(out, "image_f32", UC_F32, 3, (int64_t[]){3, S, S}, xi);
            else
                rec_del(out, "image_f32"); /* a stale one would not match image */
            if (!rec_has(out, "seed"))
                rec_set_u64(out, "seed", seed);
            if (o->nsamples > 1)
                rec_set_u64(out, "index", (uint64_t)(s0 + j));
            rec *pp = rec_new();
            rec_del(pp, "version");
            rec_set_str(pp, "steps", o->steps);
            rec_set_f64(pp, "guidance", o->guidance);
            rec_set_str(pp, "sampler", sampler_name);
            if (o->sampler == UC_SAMPLER_DDIM)
                rec_set_f64(pp, "eta", o->eta);
            rec_set_u64(pp, "seed", seed);
            rec_set_stage(out, "params", "decoder", pp);
            rec_free(pp);
            rec *pm = rec_new();
            rec_del(pm, "version");
            rec_set_str(pm, "id", o->dec.model_id);
            if (*o->dec.checksum)
                rec_set_str(pm, "checksum", o->dec.checksum);
            rec_set_stage(out, "models", "decoder", pm);
            rec_free(pm);
            rec_history_add(out, o->cli.tool, argc, argv);
            emit(o, out);
            rec_free(out);
        }
    }
    uc_free(txt);
    uc_free(seq);
    uc_free(mask);
    uc_free(y);
    uc_free(imgs);
    uc_free(x);
    uc_free(rng);
    uc_free(px);
    uc_free(img);
    text_in_free(&tc);
    text_in_free(&tu);
    rec_free(um);
}

int main(int argc, char **argv)
{
    opts o = {.steps = "25", .guidance = 8.0, .nsamples = 1, .sampler = -1};
    uc_cli_init(&o.cli, "decoder-diffuse", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS,
        {"steps", 1, 0, 'S'},
        {"guidance", 1, 0, 'g'},
        {"samples", 1, 0, 'n'},
        {"sampler", 1, 0, OPT_SAMPLER},
        {"eta", 1, 0, OPT_ETA},
        {"format", 1, 0, 'f'},
        {"float", 0, 0, OPT_FLOAT},
        {"output", 1, 0, 'o'},
        {0, 0, 0, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "S:g:n:f:o:", longopts, NULL)) != -1) {
        if (uc_cli_common(&o.cli, opt, optarg))
            continue;
        switch (opt) {
        case 'S':
            if (strlen(optarg) > UC_RESPACING_MAX)
                uc_die(&o.cli, UC_EXIT_USAGE, "--steps: longer than %d characters", UC_RESPACING_MAX);
            o.steps = optarg;
            break;
        case 'g':
            o.guidance = uc_parse_double(&o.cli, "--guidance", optarg);
            if (!(o.guidance > 0) || o.guidance > 1e6)
                uc_die(&o.cli, UC_EXIT_USAGE, "--guidance: '%s' is not a scale in (0, 1e6]", optarg);
            break;
        case 'n': o.nsamples = uc_parse_long(&o.cli, "--samples", optarg, 1, 100000); break;
        case OPT_SAMPLER:
            if (!strcmp(optarg, "ddpm"))
                o.sampler = UC_SAMPLER_DDPM;
            else if (!strcmp(optarg, "ddim"))
                o.sampler = UC_SAMPLER_DDIM;
            else
                uc_die(&o.cli, UC_EXIT_USAGE, "--sampler: '%s' is not ddpm or ddim", optarg);
            break;
        case OPT_ETA:
            o.eta = uc_parse_double(&o.cli, "--eta", optarg);
            if (!(o.eta >= 0) || o.eta > 1000)
                uc_die(&o.cli, UC_EXIT_USAGE, "--eta: '%s' is not in [0, 1000]", optarg);
            break;
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

    const char *path = uc_model_path(&o.cli, "decoder");
    if (uc_decoder_open(&o.dec, path))
        uc_die_err(&o.cli);
    uc_diffusion d;
    if (uc_diffusion_from_config(&d, o.dec.diffusion, ""))
        uc_die(&o.cli, UC_EXIT_DATA, "%s: %s", path, uc_errmsg());
    uc_diffusion_free(&d);
    if (uc_diffusion_from_config(&d, o.dec.diffusion, o.steps))
        uc_die(&o.cli, UC_EXIT_USAGE, "--steps: %s", uc_errmsg());
    if (o.sampler < 0)
        o.sampler = uc_sampler_for_respacing(o.steps);
    uc_info(&o.cli, "model %s (%s): %dx%d, %d channels, clip_dim %d; %d steps (%s), %s, guidance %g", path,
            o.dec.model_id, o.dec.cfg.image_size, o.dec.cfg.image_size, o.dec.cfg.unet.model_channels,
            o.dec.cfg.clip_dim, d.steps, o.steps, o.sampler == UC_SAMPLER_DDIM ? "ddim" : "ddpm", o.guidance);
    uc_diffusion_free(&d);

    o.out = stdout;
    if (o.output && o.format == FMT_RECORD)
        o.out = uc_out_open(&o.cli, o.output);
    int nin = optind < argc ? argc - optind : 1;
    uint64_t ordinal = 0;
    for (int f = 0; f < nin; f++) {
        const char *name = optind < argc ? argv[optind + f] : "-";
        const char *src = strcmp(name, "-") ? name : "stdin";
        rec_reader *rd = uc_open_records(&o.cli, name);
        rec *r;
        int got;
        uint64_t first = ordinal;
        while ((got = rec_read(rd, &r)) == 1) {
            process(&o, r, src, ++ordinal, argc, argv);
            rec_free(r);
        }
        if (got < 0)
            uc_die_err(&o.cli);
        if (ordinal == first) /* an upstream stage that failed leaves nothing */
            uc_die(&o.cli, UC_EXIT_DATA, "%s: empty input (no records)", src);
        rec_reader_free(rd);
    }
    if (o.output && o.format == FMT_RECORD)
        uc_out_commit(&o.cli, o.out);
    uc_stdout_check(&o.cli);
    uc_decoder_free(&o.dec);
    return UC_EXIT_OK;
}
