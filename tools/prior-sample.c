/* prior-sample - text embedding and token sequence in, CLIP image
 * embedding out: Karlo's diffusion prior with classifier-free guidance
 * (DALL-E 2 paper, section 2.2). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libcommon/cli/cli.h"
#include "formats/base.h"
#include "libcommon/sample/diffusion.h"
#include "libcommon/models/model.h"
#include "libcommon/models/prior.h"
#include "libcommon/nn/rng.h"
#include "libcommon/cli/stage.h"

static const char usage[] =
    "Usage: prior-sample [OPTION]... [FILE]...\n"
    "Sample CLIP image embeddings from text with the diffusion prior.\n"
    "Reads records (from clip-encode), or unclip PNGs, from the FILEs or\n"
    "standard input; each\n"
    "needs text_emb, text_seq, token_mask and uncond.{text_emb, text_seq,\n"
    "token_mask}. Writes each record with image_emb added, N times with -n.\n"
    "\n"
    "  -S, --steps STR     timestep respacing: \"25\" (default), section counts\n"
    "                      \"10,10,3,2,2\", \"ddimN\" or \"fast27\"\n"
    "  -g, --guidance F    classifier-free guidance scale, > 0 (default: the\n"
    "                      model's unclip.default_guidance, else 4)\n"
    "  -n, --samples N     samples per input record (default 1)\n"
    "      --index I       draw only sample I (0-based) of each record, the\n"
    "                      same embedding as the I-th of -n I+1 (unclip-replay)\n"
    "      --best-of K     draw K candidates per sample and keep the one whose\n"
    "                      embedding is most similar (cosine) to text_emb\n"
    "      --sampler S     ddpm, ddim or dpm++2m (DPM-Solver++(2M), deterministic)\n"
    "                      (default: ddim for \"ddim...\" and \"fast...\"\n"
    "                      respacings, else ddpm)\n"
    "      --any-clip      take records whose embeddings were made by a CLIP\n"
    "                      the model does not pair with (unclip.clip), or by\n"
    "                      an unknown one (no models.clip)\n"
UC_VERIFY_HELP
    "  -m, --model FILE    prior model (default: prior.safetensors, see unclip-model(5))\n"
    "  -t, --threads N     threads (default: all cores)\n"
    "  -s, --seed N        random seed (default 0)\n"
    "      --progress WHEN auto (a bar when stderr is a terminal), json (one\n"
    "                      object a step on stderr) or none\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       more messages\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Noise is data of the record, not its place in the stream: candidate c\n"
    "of sample i draws from the RNG keyed by (seed, the record's noise_key),\n"
    "stream i * K + c, so a record gives the same embedding in any batch.\n"
    "Output records get image_emb, seed (when absent), noise_key (their\n"
    "own, from the input's and i), params.prior {steps, guidance, sampler,\n"
    "best_of, seed, noise_key, index}, models.prior {id, checksum} and a\n"
    "history entry; every other field passes through in order.\n"
    "Exit status: 0 ok, 1 data error, 2 usage error.\n";

enum { OPT_BEST_OF = 256, OPT_SAMPLER, OPT_INDEX };

#define MAX_BATCH 64 /* candidates sampled together */

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
    int64_t done, total; /* steps of the batches before this one; of all */
} progress_ctx;

static void on_step(void *ctx, int done, int total)
{
    progress_ctx *p = ctx;
    (void)total;
    uc_progress(p->cli, p->label, p->done + done, p->total);
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

int main(int argc, char **argv)
{
    uc_cli c;
    uc_cli_init(&c, "prior-sample", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS, UC_ANY_CLIP_LONGOPT, UC_VERIFY_LONGOPT,
        {"steps", 1, 0, 'S'},
        {"guidance", 1, 0, 'g'},
        {"samples", 1, 0, 'n'},
        {"best-of", 1, 0, OPT_BEST_OF},
        {"sampler", 1, 0, OPT_SAMPLER},
        {"index", 1, 0, OPT_INDEX},
        {0, 0, 0, 0},
    };
    const char *steps = "25";
    double guidance = 0; /* 0: not given */
    long nsamples = 1, best_of = 1, first = 0, index_set = 0;
    int sampler = -1, opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "S:g:n:", longopts, NULL)) != -1) {
        if (uc_cli_common(&c, opt, optarg))
            continue;
        switch (opt) {
        case 'S': steps = uc_parse_steps(&c, optarg); break;
        case 'g': guidance = uc_parse_guidance(&c, optarg); break;
        case 'n': nsamples = uc_parse_long(&c, "--samples", optarg, 1, 100000); break;
        case OPT_BEST_OF: best_of = uc_parse_long(&c, "--best-of", optarg, 1, 1000); break;
        case OPT_SAMPLER: sampler = uc_parse_sampler(&c, optarg); break;
        case OPT_INDEX:
            first = uc_parse_long(&c, "--index", optarg, 0, 99999);
            index_set = 1;
            break;
        default: uc_die(&c, UC_EXIT_USAGE, "bad option");
        }
    }
    if (index_set && nsamples != 1)
        uc_die(&c, UC_EXIT_USAGE, "--index draws one sample: drop -n");
    uc_cli_ready(&c);
    uint64_t seed = c.seed_set ? c.seed : 0;

    const char *path = uc_model_path(&c, "prior");
    uc_prior *p = uc_prior_open(path);
    if (!p)
        uc_die_err(&c);
    const uc_prior_info *pi = uc_prior_get_info(p);
    if (guidance == 0) /* no -g: the model's default, else Karlo's */
        guidance = pi->model.default_guidance ? pi->model.default_guidance : 4.0;
    int nsteps;
    if (uc_prior_schedule(p, steps, &nsteps))
        uc_die(&c, UC_EXIT_USAGE, "--steps: %s", uc_errmsg());
    if (sampler < 0)
        sampler = uc_sampler_for_respacing(steps);
    const char *sampler_name = uc_sampler_name((uc_sampler)sampler);
    uc_info(&c, "model %s (%s): width %d, %d layers, clip_dim %d; %d steps (%s), %s, guidance %g", path,
            pi->model.id, pi->width, pi->layers, pi->clip_dim, nsteps, steps, sampler_name, guidance);

    /* the candidates of samples first .. first + nsamples - 1 */
    const int64_t D = pi->clip_dim, T = pi->text_ctx, E = pi->text_dim, K = best_of, total = nsamples * best_of,
                  c0 = first * best_of;
    if (c0 + total > UINT32_MAX)
        uc_die(&c, UC_EXIT_USAGE, "--index times --best-of is too large");
    if (total > UINT32_MAX)
        uc_die(&c, UC_EXIT_USAGE, "--samples times --best-of is too large");
    /* memory: one batch of candidates and the best of the current sample,
     * whatever -n and --best-of ask (each sample is written when its K
     * candidates are done) */
    const int64_t batch = UC_MIN(total, MAX_BATCH);
    float *cand = uc_alloc((size_t)(batch * D), sizeof *cand), *best = uc_alloc((size_t)D, sizeof *best);
    uc_rng *rng = uc_alloc((size_t)batch, sizeof *rng);
    int64_t *cond = uc_alloc((size_t)batch, sizeof *cond), *uncond = uc_alloc((size_t)batch, sizeof *uncond);
    float *scale = uc_alloc((size_t)batch, sizeof *scale);
    for (int64_t i = 0; i < batch; i++) {
        cond[i] = 0;
        uncond[i] = 1;
        scale[i] = (float)guidance;
    }

    uc_inputs in;
    uc_inputs_init(&in, &c, argc - optind, argv + optind, 1);
    rec *r;
    while ((r = uc_inputs_next(&in))) {
        uint64_t ordinal = in.ordinal;
        const char *src = in.src;
        /* check everything before computing */
        uc_text_in tc, tu;
        uc_text_pair(&c, r, src, "prior", D, (int)T, (int)E, &tc, &tu);
        uc_check_pairing(&c, r, src, &pi->model);

        float *emb2 = uc_alloc(2 * (size_t)D, sizeof *emb2);
        memcpy(emb2, tc.emb, (size_t)D * sizeof *emb2);
        memcpy(emb2 + D, tu.emb, (size_t)D * sizeof *emb2);
        size_t ts = (size_t)T * (size_t)E;
        float *seq2 = uc_alloc(2 * ts, sizeof *seq2);
        memcpy(seq2, tc.seq, ts * sizeof *seq2);
        memcpy(seq2 + ts, tu.seq, ts * sizeof *seq2);
        uint8_t *mask2 = uc_alloc(2 * (size_t)T, 1);
        memcpy(mask2, tc.mask, (size_t)T);
        memcpy(mask2 + T, tu.mask, (size_t)T);
        uc_prior_text *txt;
        if (uc_prior_text_new(p, 2, emb2, seq2, mask2, &txt))
            uc_die_err(&c);
        uc_free(emb2);
        uc_free(seq2);
        uc_free(mask2);

        /* all candidates of this record, in batches; sample i keeps the
         * first of its K candidates, or a later one of higher cosine */
        uint64_t nkey = uc_record_noise_key(&c, r, src), key = uc_stage_key(seed, nkey, "prior");
        progress_ctx pg = {.cli = &c, .total = (total + batch - 1) / batch * nsteps};
        snprintf(pg.label, sizeof pg.label, "record %llu", (unsigned long long)ordinal);
        double bs = -2;
        for (int64_t b0 = 0; b0 < total; b0 += batch) {
            int64_t nb = UC_MIN(batch, total - b0);
            for (int64_t j = 0; j < nb; j++)
                uc_rng_init(&rng[j], key, (uint32_t)(c0 + b0 + j));
            noise_ctx nc = {rng, nb, D};
            uc_stage_opts so = {
                .respacing = steps,
                .sampler = (uc_sampler)sampler,
                .eta = 0.0f,
                .noise = draw_noise,
                .noise_ctx = &nc,
                .progress = on_step,
                .progress_ctx = &pg,
            };
            uc_prior_batch pb = {.text = txt, .n = nb, .cond = cond, .uncond = uncond, .scale = scale};
            if (uc_prior_sample(p, &so, &pb, cand))
                uc_die(&c, UC_EXIT_DATA, "%s: record %ld: %s", src, rec_number(r), uc_errmsg());
            uc_check_finite(&c, src, r, "image_emb", cand, nb * D);
            pg.done += nsteps;
            for (int64_t j = 0; j < nb; j++) {
                int64_t g = b0 + j, k = g % K;
                double sc = K > 1 ? cosine(cand + j * D, tc.emb, D) : 0;
                if (k == 0 || sc > bs) {
                    bs = sc;
                    memcpy(best, cand + j * D, (size_t)D * sizeof *best);
                }
                if (k < K - 1)
                    continue;
                uint64_t index = (uint64_t)(first + g / K);
                rec *out = rec_clone(r);
                rec_del(out, "image"); /* a PNG's picture is not this embedding's */
                rec_del(out, "image_f32");
                rec_set_tensor(out, "image_emb", UC_F32, 1, &D, best);
                if (!rec_has(out, "seed"))
                    rec_set_u64(out, "seed", seed);
                rec_set_u64(out, "noise_key", uc_output_noise_key(nkey, "prior", index));
                rec *pp = rec_new();
                rec_del(pp, "version");
                rec_set_str(pp, "steps", steps);
                rec_set_f64(pp, "guidance", guidance);
                rec_set_str(pp, "sampler", sampler_name);
                rec_set_u64(pp, "best_of", (uint64_t)K);
                uc_set_draw(&c, pp, seed, nkey, index);
                rec_set_stage(out, "params", "prior", pp);
                rec_free(pp);
                uc_set_model_info(out, "prior", &pi->model);
                uc_emit_record(&c, out);
            }
        }
        uc_prior_text_free(txt);
        uc_text_in_free(&tc);
        uc_text_in_free(&tu);
    }
    uc_stdout_check(&c);
    uc_free(cand);
    uc_free(best);
    uc_free(rng);
    uc_free(cond);
    uc_free(uncond);
    uc_free(scale);
    uc_prior_free(p);
    return UC_EXIT_OK;
}
