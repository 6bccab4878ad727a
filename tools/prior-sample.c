/* prior-sample - text embedding and token sequence in, CLIP image
 * embedding out: Karlo's diffusion prior with classifier-free guidance
 * (DALL-E 2 paper, section 2.2). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../libcommon/cli.h"
#include "../libcommon/common.h"
#include "../libcommon/diffusion.h"
#include "../libcommon/prior.h"
#include "../libcommon/rng.h"

static const char usage[] =
    "Usage: prior-sample [OPTION]... [FILE]...\n"
    "Sample CLIP image embeddings from text with the diffusion prior.\n"
    "Reads records (from clip-encode) from the FILEs or standard input; each\n"
    "needs text_emb, text_seq, token_mask and uncond.{text_emb, text_seq,\n"
    "token_mask}. Writes each record with image_emb added, N times with -n.\n"
    "\n"
    "  -S, --steps STR     timestep respacing: \"25\" (default), section counts\n"
    "                      \"10,10,3,2,2\", \"ddimN\" or \"fast27\"\n"
    "  -g, --guidance F    classifier-free guidance scale, > 0 (default 4)\n"
    "  -n, --samples N     samples per input record (default 1)\n"
    "      --best-of K     draw K candidates per sample and keep the one whose\n"
    "                      embedding is most similar (cosine) to text_emb\n"
    "      --sampler S     ddpm or ddim (default: ddim for \"ddim...\" and\n"
    "                      \"fast...\" respacings, else ddpm)\n"
    "  -m, --model FILE    prior model (default: prior.safetensors, see unclip-model(5))\n"
    "  -t, --threads N     threads (default: all cores)\n"
    "  -s, --seed N        random seed (default 0)\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       more messages\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Candidate c of sample i of the r-th input record (1-based, counted over\n"
    "all inputs) draws its noise from the RNG keyed by (seed, r), stream\n"
    "i * K + c. Output records get image_emb, seed, index, params.prior\n"
    "{steps, guidance, sampler, best_of}, models.prior {id, checksum} and a\n"
    "history entry; every other field passes through in order.\n"
    "Exit status: 0 ok, 1 data error, 2 usage error.\n";

enum { OPT_BEST_OF = 256, OPT_SAMPLER };

#define MAX_BATCH 64 /* candidates sampled together */

/* The text conditioning of one record, checked against the model. */
typedef struct {
    float *emb, *seq;
    uint8_t *mask;
} text_in;

static void text_in_free(text_in *t)
{
    uc_free(t->emb);
    uc_free(t->seq);
    uc_free(t->mask);
}

/* A float field of r with exactly the dims want[ndim]; messages name the
 * stream, record and field (prefix "uncond." inside the uncond map). */
static float *get_f32(const rec *r, const char *src, const char *pre, const char *key, int ndim,
                      const int64_t *want)
{
    uc_tensor t;
    char got[96], need[96];
    if (!rec_has(r, key)) {
        uc_err("%s: record %ld field %s%s: missing", src, rec_number(r), pre, key);
        return NULL;
    }
    if (rec_get_tensor(r, key, &t)) {
        uc_err_prefix("%s", src);
        return NULL;
    }
    uc_tensor w = {.ndim = ndim};
    memcpy(w.shape, want, (size_t)ndim * sizeof *want);
    if (!uc_tensor_shape_is(&t, ndim, want)) {
        uc_err("%s: record %ld field %s%s: shape %s, but the prior model needs %s", src, rec_number(r), pre, key,
               uc_shape_str(&t, got, sizeof got), uc_shape_str(&w, need, sizeof need));
        return NULL;
    }
    float *x = rec_get_f32(r, key, ndim, want, NULL);
    if (!x)
        uc_err_prefix("%s", src);
    return x;
}

static int get_text(const rec *r, const char *src, const char *pre, const uc_prior *p, text_in *t)
{
    memset(t, 0, sizeof *t);
    int64_t T = p->text_ctx;
    t->emb = get_f32(r, src, pre, "text_emb", 1, (int64_t[]){p->clip_dim});
    t->seq = t->emb ? get_f32(r, src, pre, "text_seq", 2, (int64_t[]){T, p->text_dim}) : NULL;
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
        return uc_err("%s: record %ld field %stoken_mask: shape %s, but the prior model needs [%lld]", src,
                      rec_number(r), pre, uc_shape_str(&m, got, sizeof got), (long long)T);
    int64_t *v = uc_alloc((size_t)T, sizeof *v);
    uc_tensor_to_i64(&m, v);
    t->mask = uc_alloc((size_t)T, 1);
    int rc = 0;
    for (int64_t i = 0; i < T && !rc; i++) {
        if (v[i] != 0 && v[i] != 1)
            rc = uc_err("%s: record %ld field %stoken_mask: value %lld at %lld is not 0 or 1", src, rec_number(r),
                        pre, (long long)v[i], (long long)i);
        t->mask[i] = (uint8_t)v[i];
    }
    uc_free(v);
    return rc;
}

/* Noise: one RNG stream per candidate row. */
typedef struct {
    uc_rng *rng; /* [rows] */
    int64_t rows, dim;
} noise_ctx;

static int draw_noise(void *ctx, int draw, float *out, int64_t nelem)
{
    noise_ctx *n = ctx;
    (void)draw;
    if (nelem != n->rows * n->dim)
        return uc_err("noise request of %lld values for %lld rows", (long long)nelem, (long long)n->rows);
    for (int64_t r = 0; r < n->rows; r++)
        uc_rng_normal(&n->rng[r], out + r * n->dim, n->dim);
    return 0;
}

typedef struct {
    const uc_cli *cli;
    char label[32];
    int64_t done, total;
} progress_ctx;

static int on_step(void *ctx, const uc_step *s, const float *x_in, const float *sample, const float *pred)
{
    progress_ctx *p = ctx;
    (void)s, (void)x_in, (void)sample, (void)pred;
    uc_progress(p->cli, p->label, ++p->done, p->total);
    return 0;
}

static double cosine(const float *a, const float *b, int64_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0;
}

/* splitmix64: the key of record r's RNG from the seed. */
static uint64_t record_key(uint64_t seed, uint64_t r)
{
    uint64_t z = seed + r * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

int main(int argc, char **argv)
{
    uc_cli c;
    uc_cli_init(&c, "prior-sample", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS,
        {"steps", 1, 0, 'S'},
        {"guidance", 1, 0, 'g'},
        {"samples", 1, 0, 'n'},
        {"best-of", 1, 0, OPT_BEST_OF},
        {"sampler", 1, 0, OPT_SAMPLER},
        {0, 0, 0, 0},
    };
    const char *steps = "25";
    double guidance = 4.0;
    long nsamples = 1, best_of = 1;
    int sampler = -1, opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "S:g:n:", longopts, NULL)) != -1) {
        if (uc_cli_common(&c, opt, optarg))
            continue;
        switch (opt) {
        case 'S':
            if (strlen(optarg) > UC_RESPACING_MAX)
                uc_die(&c, UC_EXIT_USAGE, "--steps: longer than %d characters", UC_RESPACING_MAX);
            steps = optarg;
            break;
        case 'g':
            guidance = uc_parse_double(&c, "--guidance", optarg);
            if (!(guidance > 0) || guidance > 1e6)
                uc_die(&c, UC_EXIT_USAGE, "--guidance: '%s' is not a scale in (0, 1e6]", optarg);
            break;
        case 'n': nsamples = uc_parse_long(&c, "--samples", optarg, 1, 100000); break;
        case OPT_BEST_OF: best_of = uc_parse_long(&c, "--best-of", optarg, 1, 1000); break;
        case OPT_SAMPLER:
            if (!strcmp(optarg, "ddpm"))
                sampler = UC_SAMPLER_DDPM;
            else if (!strcmp(optarg, "ddim"))
                sampler = UC_SAMPLER_DDIM;
            else
                uc_die(&c, UC_EXIT_USAGE, "--sampler: '%s' is not ddpm or ddim", optarg);
            break;
        default: uc_die(&c, UC_EXIT_USAGE, "bad option");
        }
    }
    uc_cli_ready(&c);
    uint64_t seed = c.seed_set ? c.seed : 0;

    uc_prior p;
    const char *path = uc_model_path(&c, "prior");
    if (uc_prior_open(&p, path))
        uc_die_err(&c);
    const cJSON *dconf = cJSON_GetObjectItemCaseSensitive(p.config, "diffusion");
    uc_diffusion d;
    if (uc_diffusion_from_config(&d, dconf, ""))
        uc_die(&c, UC_EXIT_DATA, "%s: %s", path, uc_errmsg());
    uc_diffusion_free(&d);
    if (uc_diffusion_from_config(&d, dconf, steps))
        uc_die(&c, UC_EXIT_USAGE, "--steps: %s", uc_errmsg());
    if (sampler < 0)
        sampler = uc_sampler_for_respacing(steps);
    const char *sampler_name = sampler == UC_SAMPLER_DDIM ? "ddim" : "ddpm";
    uc_info(&c, "model %s (%s): width %d, %d layers, clip_dim %d; %d steps (%s), %s, guidance %g", path,
            p.model_id, p.width, p.layers, p.clip_dim, d.steps, steps, sampler_name, guidance);

    const int64_t D = p.clip_dim, K = best_of, total = nsamples * best_of;
    if (total > UINT32_MAX)
        uc_die(&c, UC_EXIT_USAGE, "--samples times --best-of is too large");
    const int64_t batch = UC_MIN(total, MAX_BATCH);
    float *cand = uc_alloc((size_t)(total * D), sizeof *cand);
    uc_rng *rng = uc_alloc((size_t)batch, sizeof *rng);
    int64_t *cond = uc_alloc((size_t)batch, sizeof *cond), *uncond = uc_alloc((size_t)batch, sizeof *uncond);
    float *scale = uc_alloc((size_t)batch, sizeof *scale);
    for (int64_t i = 0; i < batch; i++) {
        cond[i] = 0;
        uncond[i] = 1;
        scale[i] = (float)guidance;
    }

    int nin = optind < argc ? argc - optind : 1;
    uint64_t ordinal = 0;
    for (int f = 0; f < nin; f++) {
        const char *name = optind < argc ? argv[optind + f] : "-";
        const char *src = strcmp(name, "-") ? name : "stdin";
        rec_reader *rd = uc_open_records(&c, name);
        rec *r;
        int got;
        uint64_t first = ordinal;
        while ((got = rec_read(rd, &r)) == 1) {
            ordinal++;
            /* check everything before computing */
            text_in tc, tu;
            rec *um = NULL;
            if (get_text(r, src, "", &p, &tc))
                uc_die_err(&c);
            if (!rec_has(r, "uncond"))
                uc_die(&c, UC_EXIT_DATA, "%s: record %ld field uncond: missing (clip-encode writes it)", src,
                       rec_number(r));
            if (!(um = rec_get_map(r, "uncond")))
                uc_die(&c, UC_EXIT_DATA, "%s: %s", src, uc_errmsg());
            if (get_text(um, src, "uncond.", &p, &tu))
                uc_die_err(&c);

            float *emb2 = uc_alloc(2 * (size_t)D, sizeof *emb2);
            memcpy(emb2, tc.emb, (size_t)D * sizeof *emb2);
            memcpy(emb2 + D, tu.emb, (size_t)D * sizeof *emb2);
            size_t ts = (size_t)p.text_ctx * (size_t)p.text_dim;
            float *seq2 = uc_alloc(2 * ts, sizeof *seq2);
            memcpy(seq2, tc.seq, ts * sizeof *seq2);
            memcpy(seq2 + ts, tu.seq, ts * sizeof *seq2);
            uint8_t *mask2 = uc_alloc(2 * (size_t)p.text_ctx, 1);
            memcpy(mask2, tc.mask, (size_t)p.text_ctx);
            memcpy(mask2 + p.text_ctx, tu.mask, (size_t)p.text_ctx);
            uc_prior_text *txt;
            if (uc_prior_text_new(&p, 2, emb2, seq2, mask2, &txt))
                uc_die_err(&c);
            uc_free(emb2);
            uc_free(seq2);
            uc_free(mask2);

            /* all candidates of this record, in batches */
            uint64_t key = record_key(seed, ordinal);
            progress_ctx pg = {.cli = &c, .total = (total + batch - 1) / batch * d.steps};
            snprintf(pg.label, sizeof pg.label, "record %llu", (unsigned long long)ordinal);
            for (int64_t b0 = 0; b0 < total; b0 += batch) {
                int64_t nb = UC_MIN(batch, total - b0);
                for (int64_t j = 0; j < nb; j++)
                    uc_rng_init(&rng[j], key, (uint32_t)(b0 + j));
                noise_ctx nc = {rng, nb, D};
                uc_prior_sample_opts so = {
                    .diffusion = &d,
                    .sampler = (uc_sampler)sampler,
                    .text = txt,
                    .n = nb,
                    .cond = cond,
                    .uncond = uncond,
                    .scale = scale,
                    .noise = draw_noise,
                    .noise_ctx = &nc,
                    .trace = on_step,
                    .trace_ctx = &pg,
                };
                if (uc_prior_sample(&p, &so, cand + b0 * D))
                    uc_die(&c, UC_EXIT_DATA, "%s: record %ld: %s", src, rec_number(r), uc_errmsg());
            }
            uc_prior_text_free(txt);

            for (int64_t i = 0; i < nsamples; i++) {
                int64_t best = i * K;
                double bs = -2;
                for (int64_t k = 0; k < K && K > 1; k++) {
                    double s = cosine(cand + (i * K + k) * D, tc.emb, D);
                    if (s > bs) {
                        bs = s;
                        best = i * K + k;
                    }
                }
                rec *out = rec_clone(r);
                rec_set_tensor(out, "image_emb", UC_F32, 1, &D, cand + best * D);
                rec_set_u64(out, "seed", seed);
                rec_set_u64(out, "index", (uint64_t)i);
                rec *pp = rec_new();
                rec_del(pp, "version");
                rec_set_str(pp, "steps", steps);
                rec_set_f64(pp, "guidance", guidance);
                rec_set_str(pp, "sampler", sampler_name);
                rec_set_u64(pp, "best_of", (uint64_t)K);
                rec_set_stage(out, "params", "prior", pp);
                rec_free(pp);
                rec *pm = rec_new();
                rec_del(pm, "version");
                rec_set_str(pm, "id", p.model_id);
                rec_set_str(pm, "checksum", p.checksum);
                rec_set_stage(out, "models", "prior", pm);
                rec_free(pm);
                rec_history_add(out, c.tool, argc, argv);
                if (rec_write(out, stdout))
                    uc_die_err(&c);
                rec_free(out);
            }
            text_in_free(&tc);
            text_in_free(&tu);
            rec_free(um);
            rec_free(r);
        }
        if (got < 0)
            uc_die_err(&c);
        if (ordinal == first) /* an upstream stage that failed leaves nothing */
            uc_die(&c, UC_EXIT_DATA, "%s: empty input (no records)", src);
        rec_reader_free(rd);
    }
    uc_stdout_check(&c);
    uc_free(cand);
    uc_free(rng);
    uc_free(cond);
    uc_free(uncond);
    uc_free(scale);
    uc_diffusion_free(&d);
    uc_prior_free(&p);
    return UC_EXIT_OK;
}
