/* decoder-diffuse - CLIP image embedding (and the text it came from) in,
 * 64x64 image out: Karlo's decoder, a diffusion UNet sampled with
 * classifier-free guidance (DALL-E 2 paper, section 2.1). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libcommon/cli/cli.h"
#include "libcommon/cli/edit.h"
#include "libcommon/image/preprocess.h"
#include "libcommon/models/clip.h"
#include "formats/base.h"
#include "libcommon/models/decoder.h"
#include "libcommon/image/imageio.h"
#include "libcommon/models/model.h"
#include "libcommon/nn/rng.h"
#include "libcommon/cli/stage.h"

static const char usage[] =
    "Usage: decoder-diffuse [OPTION]... [FILE]...\n"
    "Generate images from CLIP image embeddings with the diffusion decoder.\n"
    "Reads records or unclip PNGs from the FILEs or standard input; each\n"
    "needs image_emb\n"
    "(from prior-sample, clip-encode --image, emb-interp or emb-textdiff),\n"
    "text_emb, text_seq, token_mask and uncond.{text_emb, text_seq,\n"
    "token_mask} (from clip-encode). Writes one image per sample.\n"
    "\n"
    "  -S, --steps STR     timestep respacing: \"25\" (default), section counts\n"
    "                      \"10,10,3,2,2\", \"ddimN\" or \"fast27\"\n"
    "  -g, --guidance F    classifier-free guidance scale, > 0 (default: the\n"
    "                      model's unclip.default_guidance, else 8)\n"
    "  -n, --samples N     images per input record (default 1)\n"
    "      --index I       draw only sample I (0-based) of each record, the\n"
    "                      same picture as the I-th of -n I+1 (unclip-replay)\n"
    "      --best-of K     draw K candidates per image and keep the one whose\n"
    "                      CLIP image embedding is nearest (cosine) to image_emb\n"
    "                      (default: the model's unclip.default_best_of, else 1)\n"
    "      --clip FILE     the CLIP that ranks them (default: clip.safetensors,\n"
    "                      found as the models are)\n"
    "      --sampler S     ddpm, ddim or dpm++2m (DPM-Solver++(2M), deterministic,\n"
    "                      for fewer steps: -S 10; not for edits) (default:\n"
    "                      ddim for \"ddim...\" and \"fast...\" respacings, else\n"
    "                      ddpm)\n"
    "      --eta F         DDIM noise, 0..1 (default 0)\n"
    "      --image FILE    edit this picture (PNG or image record) instead of\n"
    "                      drawing a new one: inpaint the pixels that --mask\n"
    "                      marks (or that are transparent), keep the others\n"
    "                      byte for byte; the picture is the decoder's size\n"
    "      --mask FILE     PNG of the picture's size: white redraws, black keeps\n"
    "      --extend SPEC   outpaint: grow the canvas by left=N,right=N,top=N,\n"
    "                      bottom=N pixels (each up to the picture's side) and\n"
    "                      draw the new parts window by window\n"
    "      --resample N    RePaint: take each step N times (default 5)\n"
    "      --jump J        go back J steps between the takes (default 1)\n"
    "  -f, --format FMT    png (default): PNGs carrying the record, concatenated;\n"
    "                      record: the input record with image added\n"
    "      --float         records also get image_f32, the unquantised sample\n"
    "  -o, --output PATH   write to PATH instead of standard output; for png a\n"
    "                      pattern with one %d, the output number (img-%d.png),\n"
    "                      or a plain name when there is one picture\n"
    "      --any-clip      take records whose embeddings were made by a CLIP\n"
    "                      the model does not pair with (unclip.clip), or by\n"
    "                      an unknown one (no models.clip)\n"
UC_VERIFY_HELP
    "  -m, --model FILE    decoder model (default: decoder.safetensors, see unclip-model(5))\n"
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
    "Noise is data of the record, not its place in the stream: candidate c\n"
    "of sample i draws from the RNG keyed by (seed, the record's noise_key),\n"
    "stream i * K + c, so a record gives the same picture in any batch; an\n"
    "edit's window w draws from stream w * N * K + i * K + c.\n"
    "Outputs get image (U8 [H, W, 3]), seed (when absent), noise_key (their\n"
    "own, from the input's and i), params.decoder {steps, guidance, sampler,\n"
    "eta, best_of, seed, noise_key, index, and for an edit, edit {image,\n"
    "mask, mask_from, resample, jump, kept, redrawn, extend, windows}},\n"
    "models.decoder {id, checksum} (and models.rank, the CLIP, with K above 1)\n"
    "and a history entry; every other field passes through.\n"
    "Exit status: 0 ok, 1 data error, 2 usage error.\n";

enum { OPT_SAMPLER = 256, OPT_ETA, OPT_BEST_OF, OPT_CLIP, OPT_INDEX, OPT_IMAGE, OPT_MASK, OPT_EXTEND, OPT_RESAMPLE,
       OPT_JUMP };

#define MAX_BATCH 4 /* candidates sampled together (2x rows in the network) */

typedef struct {
    uc_cli cli;
    uc_decoder *dec;
    const uc_decoder_info *info; /* of dec */
    uc_image_out out;
    const char *steps;
    double guidance, eta;
    long nsamples, best_of, first; /* samples first .. first + nsamples - 1 */
    int index_set;
    int sampler;
    const char *clip_path;
    clip_model *clip;  /* ranks the candidates (best_of > 1) */
    uc_image rank_img; /* a candidate quantised, and as CLIP sees it: */
    float *rank_px;    /* [3, R, R] */
    float *rank_emb;   /* [embed_dim] */
    const char *image, *mask, *extend_arg; /* --image, --mask, --extend */
    int extend[4];                         /* left, right, top, bottom */
    long resample, jump;
    uc_edit_in edit; /* the picture to edit (with --image) */
} opts;

/* Cosine between the CLIP image embedding of the picture x [3, S, S] (in
 * [-1, 1], quantised as the output will be) and the unit vector target. */
static float rank_score(opts *o, const float *x, const float *target)
{
    const clip_model *m = o->clip;
    const clip_info *mi = clip_get_info(m);
    float *e = o->rank_emb;
    uc_image_f32_to_u8(x, o->rank_img.h, o->rank_img.w, o->rank_img.px);
    if (clip_preprocess(&o->rank_img, mi->image_resolution, NULL, NULL, o->rank_px) ||
        clip_encode_image(m, o->rank_px, 1, e, NULL, NULL))
        uc_die(&o->cli, UC_EXIT_DATA, "ranking a candidate: %s", uc_errmsg());
    double dot = 0, nn = 0;
    for (int i = 0; i < mi->embed_dim; i++) {
        dot += (double)e[i] * target[i];
        nn += (double)e[i] * e[i];
    }
    return nn > 0 ? (float)(dot / sqrt(nn)) : -1.0f;
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

/* params.decoder of sample `index` of a record: the settings and the draw. */
static rec *draw_params(const opts *o, uint64_t seed, uint64_t nkey, uint64_t index)
{
    rec *pp = rec_new();
    rec_del(pp, "version");
    rec_set_str(pp, "steps", o->steps);
    rec_set_f64(pp, "guidance", o->guidance);
    rec_set_str(pp, "sampler", uc_sampler_name((uc_sampler)o->sampler));
    if (o->sampler == UC_SAMPLER_DDIM)
        rec_set_f64(pp, "eta", o->eta);
    rec_set_u64(pp, "best_of", (uint64_t)o->best_of);
    uc_set_draw(&o->cli, pp, seed, nkey, index);
    return pp;
}

/* An output: its params.decoder (freed here), models.decoder (and
 * models.rank with --best-of), written. */
static void finish(opts *o, rec *out, rec *pp)
{
    rec_set_stage(out, "params", "decoder", pp);
    rec_free(pp);
    uc_set_model_info(out, "decoder", &o->info->model);
    if (o->best_of > 1)
        uc_set_model_info(out, "rank", &clip_get_info(o->clip)->model);
    uc_image_out_emit(&o->out, &o->cli, out);
}

/* Every sample of one record: nsamples * best_of candidates, drawn in
 * batches of MAX_BATCH in stream order; each sample keeps its best. */
static void process(opts *o, rec *r, const char *src, uint64_t ordinal)
{
    const uc_decoder_info *dc = o->info;
    int64_t D = dc->clip_dim, T = dc->text_ctx, S = dc->image_size, per = 3 * S * S;
    int64_t K = o->best_of, ndraw = o->nsamples * K;
    /* check everything before computing */
    float *img = uc_field_f32(r, src, "", "image_emb", 1, &D, "decoder");
    if (!img)
        uc_die_err(&o->cli);
    uc_text_in tc, tu;
    uc_text_pair(&o->cli, r, src, "decoder", D, T, D, &tc, &tu);
    uc_check_pairing(&o->cli, r, src, &o->info->model);
    uint64_t seed = uc_record_seed(&o->cli, r, src);

    /* the guided batch: nb candidates, rows [cond x nb, uncond x nb] */
    int64_t nb_max = UC_MIN(ndraw, MAX_BATCH);
    float *txt = uc_alloc((size_t)(2 * nb_max * D), sizeof(float));
    float *seq = uc_alloc((size_t)(2 * nb_max * T * D), sizeof(float));
    unsigned char *mask = uc_alloc((size_t)(2 * nb_max * T), 1);
    float *y = uc_alloc((size_t)(2 * nb_max * D), sizeof(float)), *imgs = uc_alloc((size_t)(nb_max * D), sizeof(float));
    float *x = uc_alloc((size_t)(2 * nb_max * per), sizeof(float)), *best = uc_alloc((size_t)per, sizeof(float));
    float *target = uc_alloc((size_t)D, sizeof(float)), best_score = 0;
    uc_rng *rng = uc_alloc((size_t)nb_max, sizeof *rng);
    float scale = (float)o->guidance;
    uint64_t nkey = uc_record_noise_key(&o->cli, r, src), key = uc_stage_key(seed, nkey, "decoder");
    uc_step_progress pg = {.cli = &o->cli};
    double norm = 0;
    for (int64_t i = 0; i < D; i++)
        norm += (double)img[i] * img[i];
    for (int64_t i = 0; i < D; i++)
        target[i] = norm > 0 ? (float)(img[i] / sqrt(norm)) : 0.0f;

    for (int64_t d0 = 0; d0 < ndraw; d0 += nb_max) {
        int64_t nb = UC_MIN(nb_max, ndraw - d0);
        for (int64_t j = 0; j < nb; j++) {
            const uc_text_in *half[2] = {&tc, &tu};
            for (int h = 0; h < 2; h++) {
                int64_t row = h * nb + j;
                memcpy(txt + row * D, half[h]->emb, (size_t)D * sizeof(float));
                memcpy(seq + row * T * D, half[h]->seq, (size_t)(T * D) * sizeof(float));
                memcpy(mask + row * T, half[h]->mask, (size_t)T);
            }
            memcpy(imgs + j * D, img, (size_t)D * sizeof(float));
            uc_rng_init(&rng[j], key, (uint32_t)(o->first * K + d0 + j));
        }
        uc_decoder_guided_y(o->dec, nb, imgs, y);
        uc_decoder_cond cond = {nb, T, txt, seq, mask, y, &scale, 1};
        noise_ctx nc = {rng, nb, per};
        snprintf(pg.label, sizeof pg.label, "record %llu", (unsigned long long)ordinal);
        uc_stage_opts so = {.respacing = o->steps,
                            .sampler = (uc_sampler)o->sampler,
                            .eta = (float)o->eta,
                            .noise = draw_noise,
                            .noise_ctx = &nc,
                            .progress = uc_step_progress_fn,
                            .progress_ctx = &pg};
        if (uc_decoder_sample(o->dec, &cond, &so, x))
            uc_die(&o->cli, UC_EXIT_DATA, "%s: record %ld: %s", src, rec_number(r), uc_errmsg());
        uc_check_finite(&o->cli, src, r, "image", x, nb * per);

        for (int64_t j = 0; j < nb; j++) {
            int64_t draw = d0 + j, sample = o->first + draw / K;
            float *xj = x + j * per;
            if (K > 1) {
                for (int64_t i = 0; i < per; i++) /* the picture as it will be written */
                    xj[i] = xj[i] < -1.0f ? -1.0f : xj[i] > 1.0f ? 1.0f : xj[i];
                float score = rank_score(o, xj, target);
                uc_info(&o->cli, "record %llu, sample %lld, candidate %lld: cosine %.6f", (unsigned long long)ordinal,
                        (long long)sample, (long long)(draw % K), score);
                if (draw % K == 0 || score > best_score) {
                    best_score = score;
                    memcpy(best, xj, (size_t)per * sizeof(float));
                }
                if (draw % K != K - 1)
                    continue;
                xj = best;
            }
            rec *out = rec_clone(r);
            uc_rec_set_image(out, xj, S, S, o->out.want_float); /* Karlo hands on the clamped sample */
            if (!rec_has(out, "seed"))
                rec_set_u64(out, "seed", seed);
            rec_set_u64(out, "noise_key", uc_output_noise_key(nkey, "decoder", (uint64_t)sample));
            rec *pp = draw_params(o, seed, nkey, (uint64_t)sample);
            finish(o, out, pp);
        }
    }
    uc_free(txt);
    uc_free(seq);
    uc_free(mask);
    uc_free(y);
    uc_free(imgs);
    uc_free(x);
    uc_free(best);
    uc_free(target);
    uc_free(rng);
    uc_free(img);
    uc_text_in_free(&tc);
    uc_text_in_free(&tu);
}

/* ---- edits (--image): inpainting and outpainting ---- */

/* One window of an edit: K candidates inpainting known [3, S, S] where
 * keep [S * S] says, the best by CLIP (K > 1) into best [3, S, S]. */
static void edit_window(opts *o, const rec *r, uint64_t ordinal, const uc_text_in *tc, const uc_text_in *tu,
                        const float *img, const float *target, uint64_t key, uint32_t stream0, const float *known,
                        const unsigned char *keep, float *best)
{
    int64_t D = o->info->clip_dim, T = o->info->text_ctx, S = o->info->image_size, per = 3 * S * S, K = o->best_of;
    int64_t nb_max = UC_MIN(K, MAX_BATCH);
    float *txt = uc_alloc((size_t)(2 * nb_max * D), sizeof(float));
    float *seq = uc_alloc((size_t)(2 * nb_max * T * D), sizeof(float));
    unsigned char *mask = uc_alloc((size_t)(2 * nb_max * T), 1);
    float *y = uc_alloc((size_t)(2 * nb_max * D), sizeof(float)), *imgs = uc_alloc((size_t)(nb_max * D), sizeof(float));
    float *x = uc_alloc((size_t)(2 * nb_max * per), sizeof(float)), best_score = 0;
    uc_rng *rng = uc_alloc((size_t)nb_max, sizeof *rng);
    float scale = (float)o->guidance;
    uc_step_progress pg = {.cli = &o->cli};
    uc_edit ed = {.known = known, .keep = keep, .resample = (int)o->resample, .jump = (int)o->jump};
    for (int64_t c0 = 0; c0 < K; c0 += nb_max) {
        int64_t nb = UC_MIN(nb_max, K - c0);
        for (int64_t j = 0; j < nb; j++) {
            const uc_text_in *half[2] = {tc, tu};
            for (int h = 0; h < 2; h++) {
                int64_t row = h * nb + j;
                memcpy(txt + row * D, half[h]->emb, (size_t)D * sizeof(float));
                memcpy(seq + row * T * D, half[h]->seq, (size_t)(T * D) * sizeof(float));
                memcpy(mask + row * T, half[h]->mask, (size_t)T);
            }
            memcpy(imgs + j * D, img, (size_t)D * sizeof(float));
            uc_rng_init(&rng[j], key, stream0 + (uint32_t)(c0 + j));
        }
        uc_decoder_guided_y(o->dec, nb, imgs, y);
        uc_decoder_cond cond = {nb, T, txt, seq, mask, y, &scale, 1};
        noise_ctx nc = {rng, nb, per};
        snprintf(pg.label, sizeof pg.label, "record %llu", (unsigned long long)ordinal);
        uc_stage_opts so = {.respacing = o->steps,
                            .sampler = (uc_sampler)o->sampler,
                            .eta = (float)o->eta,
                            .noise = draw_noise,
                            .noise_ctx = &nc,
                            .progress = uc_step_progress_fn,
                            .progress_ctx = &pg,
                            .edit = &ed};
        if (uc_decoder_sample(o->dec, &cond, &so, x))
            uc_die(&o->cli, UC_EXIT_DATA, "record %ld: %s", rec_number(r), uc_errmsg());
        uc_check_finite(&o->cli, "the input", r, "image", x, nb * per);
        for (int64_t j = 0; j < nb; j++) {
            float *xj = x + j * per;
            for (int64_t i = 0; i < per; i++)
                xj[i] = xj[i] < -1.0f ? -1.0f : xj[i] > 1.0f ? 1.0f : xj[i];
            float score = K > 1 ? rank_score(o, xj, target) : 0;
            if (K > 1)
                uc_info(&o->cli, "record %llu, window stream %u, candidate %lld: cosine %.6f",
                        (unsigned long long)ordinal, stream0, (long long)(c0 + j), score);
            if (c0 + j == 0 || score > best_score) {
                best_score = score;
                memcpy(best, xj, (size_t)per * sizeof(float));
            }
        }
    }
    uc_free(txt);
    uc_free(seq);
    uc_free(mask);
    uc_free(y);
    uc_free(imgs);
    uc_free(x);
    uc_free(rng);
}

/* Every sample of one record edited: the canvas (the picture, grown by
 * --extend) is inpainted window by window; the kept pixels are pasted back
 * byte for byte. */
static void process_edit(opts *o, rec *r, const char *src, uint64_t ordinal)
{
    const uc_edit_in *e = &o->edit;
    int64_t D = o->info->clip_dim, T = o->info->text_ctx, S = o->info->image_size, K = o->best_of;
    float *img = uc_field_f32(r, src, "", "image_emb", 1, &D, "decoder");
    if (!img)
        uc_die_err(&o->cli);
    uc_text_in tc, tu;
    uc_text_pair(&o->cli, r, src, "decoder", D, T, D, &tc, &tu);
    uc_check_pairing(&o->cli, r, src, &o->info->model);
    uint64_t seed = uc_record_seed(&o->cli, r, src);
    uint64_t nkey = uc_record_noise_key(&o->cli, r, src), key = uc_stage_key(seed, nkey, "decoder");
    int left = o->extend[0], top = o->extend[2];
    int cw = e->w + o->extend[0] + o->extend[1], ch = e->h + o->extend[2] + o->extend[3];
    size_t cn = (size_t)cw * (size_t)ch;
    float *target = uc_alloc((size_t)D, sizeof(float));
    double norm = 0;
    for (int64_t i = 0; i < D; i++)
        norm += (double)img[i] * img[i];
    for (int64_t i = 0; i < D; i++)
        target[i] = norm > 0 ? (float)(img[i] / sqrt(norm)) : 0.0f;
    /* the canvas as floats [3, ch, cw] and which pixels are known */
    float *pic = uc_alloc((size_t)e->w * (size_t)e->h * 3, sizeof(float));
    uc_image_u8_to_f32(e->px, e->h, e->w, pic);
    float *canvas = uc_alloc(cn * 3, sizeof(float)), *known = uc_alloc((size_t)(3 * S * S), sizeof(float));
    float *best = uc_alloc((size_t)(3 * S * S), sizeof(float));
    unsigned char *kn = uc_alloc(cn, 1), *keep = uc_alloc((size_t)(S * S), 1);
    for (long i = o->first; i < o->first + o->nsamples; i++) {
        memset(kn, 0, cn);
        memset(canvas, 0, cn * 3 * sizeof(float));
        for (int yy = 0; yy < e->h; yy++)
            for (int xx = 0; xx < e->w; xx++) {
                size_t pi = (size_t)yy * (size_t)e->w + (size_t)xx;
                size_t ci = (size_t)(yy + top) * (size_t)cw + (size_t)(xx + left);
                kn[ci] = !e->redraw[pi];
                for (int c = 0; c < 3; c++)
                    canvas[c * cn + ci] = pic[c * (size_t)e->w * (size_t)e->h + pi];
            }
        int wx, wy, nwin = 0;
        while (uc_edit_window(kn, cw, ch, (int)S, &wx, &wy)) {
            int64_t nkeep = 0;
            for (int64_t yy = 0; yy < S; yy++)
                for (int64_t xx = 0; xx < S; xx++) {
                    size_t ci = (size_t)(yy + wy) * (size_t)cw + (size_t)(xx + wx);
                    keep[yy * S + xx] = kn[ci];
                    nkeep += kn[ci];
                    for (int c = 0; c < 3; c++)
                        known[(c * S + yy) * S + xx] = canvas[c * cn + ci];
                }
            if (nkeep == 0)
                uc_info(&o->cli, "record %llu: window at %d,%d keeps nothing: plain sampling",
                        (unsigned long long)ordinal, wx, wy);
            else
                uc_info(&o->cli, "record %llu, sample %ld: window %d at %d,%d keeps %lld of %lld pixels",
                        (unsigned long long)ordinal, i, nwin + 1, wx, wy, (long long)nkeep, (long long)(S * S));
            uint32_t stream0 = (uint32_t)((int64_t)nwin * (o->first + o->nsamples) * K + i * K);
            edit_window(o, r, ordinal, &tc, &tu, img, target, key, stream0, known, keep, best);
            for (int64_t yy = 0; yy < S; yy++)
                for (int64_t xx = 0; xx < S; xx++) {
                    size_t ci = (size_t)(yy + wy) * (size_t)cw + (size_t)(xx + wx);
                    if (kn[ci])
                        continue;
                    kn[ci] = 1;
                    for (int c = 0; c < 3; c++)
                        canvas[c * cn + ci] = best[(c * S + yy) * S + xx];
                }
            nwin++;
        }
        rec *out = rec_clone(r);
        uc_rec_set_image(out, canvas, ch, cw, o->out.want_float);
        uc_edit_paste(&o->cli, out, e, left, top);
        if (!rec_has(out, "seed"))
            rec_set_u64(out, "seed", seed);
        rec_set_u64(out, "noise_key", uc_output_noise_key(nkey, "decoder", (uint64_t)i));
        rec *pp = draw_params(o, seed, nkey, (uint64_t)i);
        rec *em = uc_edit_params(e, (int)o->resample, (int)o->jump);
        if (o->extend_arg) {
            char ext[96];
            snprintf(ext, sizeof ext, "left=%d,right=%d,top=%d,bottom=%d", o->extend[0], o->extend[1],
                     o->extend[2], o->extend[3]);
            rec_set_str(em, "extend", ext);
        }
        rec_set_u64(em, "windows", (uint64_t)nwin);
        rec_set_map(pp, "edit", em);
        rec_free(em);
        finish(o, out, pp);
    }
    uc_free(target);
    uc_free(pic);
    uc_free(canvas);
    uc_free(known);
    uc_free(best);
    uc_free(kn);
    uc_free(keep);
    uc_free(img);
    uc_text_in_free(&tc);
    uc_text_in_free(&tu);
}

/* The CLIP of --best-of: a vision tower whose embedding is the decoder's. */
static void open_ranker(opts *o)
{
    if (!o->clip_path)
        o->clip_path = uc_model_find(&o->cli, "clip");
    if (!(o->clip = clip_open(o->clip_path)))
        uc_die(&o->cli, UC_EXIT_DATA, "--best-of needs a CLIP model (--clip): %s", uc_errmsg());
    const clip_info *ci = clip_get_info(o->clip);
    if (!ci->has_vision)
        uc_die(&o->cli, UC_EXIT_DATA, "%s: this CLIP model has no vision tower to rank candidates with", o->clip_path);
    if (!o->cli.any_clip && !uc_model_pairs(&o->info->model, ci->model.id, ci->model.checksum))
        uc_die(&o->cli, UC_EXIT_DATA,
               "%s: the CLIP that ranks the candidates, %.100s (%s), is not one the decoder %s pairs with "
               "(unclip.clip %.200s; --any-clip to rank with it anyway)",
               o->clip_path, ci->model.id, ci->model.checksum, o->info->model.path, o->info->model.clip);
    if (ci->embed_dim != o->info->clip_dim)
        uc_die(&o->cli, UC_EXIT_DATA, "%s: CLIP embed_dim %d is not the decoder's clip_dim %d", o->clip_path,
               ci->embed_dim, o->info->clip_dim);
    int S = o->info->image_size, R = ci->image_resolution;
    o->rank_img = (uc_image){.w = S, .h = S, .channels = 3, .px = uc_alloc((size_t)3 * S * S, 1)};
    o->rank_px = uc_alloc((size_t)3 * R * R, sizeof(float));
    o->rank_emb = uc_alloc((size_t)ci->embed_dim, sizeof(float));
}

/* --image: read the picture and its mask, and check them against the
 * model before any work. */
static void check_edit(opts *o, int steps)
{
    int S = o->info->image_size;
    uc_edit_in *e = &o->edit;
    if (o->jump > steps)
        uc_die(&o->cli, UC_EXIT_USAGE, "--jump %ld: more than the %d steps", o->jump, steps);
    if (o->sampler == UC_SAMPLER_DPMPP_2M)
        uc_die(&o->cli, UC_EXIT_USAGE, "--sampler dpm++2m: not for edits (--image); use ddpm or ddim");
    uc_edit_load_image(&o->cli, o->image, e);
    if (!o->extend_arg) {
        if (e->w > S || e->h > S)
            uc_die(&o->cli, UC_EXIT_DATA,
                   "--image %s is %dx%d, larger than the decoder's %dx%d canvas: crop or shrink it to %dx%d, or "
                   "extend a %dx%d part with --extend (outpainting)",
                   o->image, e->w, e->h, S, S, S, S, S, S);
        if (e->w != S || e->h != S)
            uc_die(&o->cli, UC_EXIT_DATA,
                   "--image %s is %dx%d, the decoder draws %dx%d: give a picture of that size, or grow this one "
                   "with --extend",
                   o->image, e->w, e->h, S, S);
    } else {
        int cw = e->w + o->extend[0] + o->extend[1], ch = e->h + o->extend[2] + o->extend[3];
        if (o->extend[0] > e->w || o->extend[1] > e->w || o->extend[2] > e->h || o->extend[3] > e->h)
            uc_die(&o->cli, UC_EXIT_USAGE, "--extend %s: a side grows by at most the picture's %s (%dx%d)",
                   o->extend_arg, o->extend[0] > e->w || o->extend[1] > e->w ? "width" : "height", e->w, e->h);
        if (cw < S || ch < S)
            uc_die(&o->cli, UC_EXIT_DATA, "--extend %s: the canvas %dx%d is smaller than the decoder's %dx%d window",
                   o->extend_arg, cw, ch, S, S);
        if (cw > 16 * S || ch > 16 * S)
            uc_die(&o->cli, UC_EXIT_DATA, "--extend %s: the canvas %dx%d is larger than %d windows a side",
                   o->extend_arg, cw, ch, 16);
    }
    uc_edit_load_mask(&o->cli, o->mask, 1, o->extend_arg != NULL, e);
    if (e->nredraw == (int64_t)e->w * e->h && !o->extend_arg)
        uc_info(&o->cli, "--image %s: every pixel is redrawn, so this is plain sampling", o->image);
    else if (o->extend_arg)
        uc_info(&o->cli, "outpaint %s (%dx%d) to %dx%d: %lld new pixels and %lld of its own redrawn (%s), resample "
                "%ld, jump %ld, %lld network calls a window instead of %d",
                o->image, e->w, e->h, e->w + o->extend[0] + o->extend[1], e->h + o->extend[2] + o->extend[3],
                (long long)((int64_t)(e->w + o->extend[0] + o->extend[1]) * (e->h + o->extend[2] + o->extend[3]) -
                            (int64_t)e->w * e->h),
                (long long)e->nredraw, e->mask_from, o->resample, o->jump,
                (long long)uc_edit_calls(steps, (int)o->resample, (int)o->jump), steps);
    else
        uc_info(&o->cli, "edit %s (%dx%d): %lld pixels redrawn (%s), resample %ld, jump %ld, %lld network calls a "
                "window instead of %d",
                o->image, e->w, e->h, (long long)e->nredraw, e->mask_from, o->resample, o->jump,
                (long long)uc_edit_calls(steps, (int)o->resample, (int)o->jump), steps);
}

int main(int argc, char **argv)
{
    opts o = {.steps = "25", .nsamples = 1, .sampler = -1, .resample = 5, .jump = 1};
    uc_cli_init(&o.cli, "decoder-diffuse", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS, UC_ANY_CLIP_LONGOPT, UC_VERIFY_LONGOPT,
        {"steps", 1, 0, 'S'},
        {"guidance", 1, 0, 'g'},
        {"samples", 1, 0, 'n'},
        {"sampler", 1, 0, OPT_SAMPLER},
        {"eta", 1, 0, OPT_ETA},
        {"best-of", 1, 0, OPT_BEST_OF},
        {"clip", 1, 0, OPT_CLIP},
        {"index", 1, 0, OPT_INDEX},
        {"image", 1, 0, OPT_IMAGE},
        {"mask", 1, 0, OPT_MASK},
        {"extend", 1, 0, OPT_EXTEND},
        {"resample", 1, 0, OPT_RESAMPLE},
        {"jump", 1, 0, OPT_JUMP},
        UC_IMAGE_OUT_LONGOPTS,
        {0, 0, 0, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "S:g:n:" UC_IMAGE_OUT_SHORTOPTS, longopts, NULL)) != -1) {
        if (uc_cli_common(&o.cli, opt, optarg) || uc_image_out_option(&o.out, &o.cli, opt, optarg))
            continue;
        switch (opt) {
        case 'S': o.steps = uc_parse_steps(&o.cli, optarg); break;
        case 'g': o.guidance = uc_parse_guidance(&o.cli, optarg); break;
        case 'n': o.nsamples = uc_parse_long(&o.cli, "--samples", optarg, 1, 100000); break;
        case OPT_SAMPLER: o.sampler = uc_parse_sampler(&o.cli, optarg); break;
        case OPT_BEST_OF: o.best_of = uc_parse_long(&o.cli, "--best-of", optarg, 1, 1000); break;
        case OPT_CLIP: o.clip_path = optarg; break;
        case OPT_INDEX:
            o.first = uc_parse_long(&o.cli, "--index", optarg, 0, 99999);
            o.index_set = 1;
            break;
        case OPT_IMAGE: o.image = optarg; break;
        case OPT_MASK: o.mask = optarg; break;
        case OPT_EXTEND:
            o.extend_arg = optarg;
            uc_parse_extend(&o.cli, optarg, o.extend);
            break;
        case OPT_RESAMPLE: o.resample = uc_parse_long(&o.cli, "--resample", optarg, 1, UC_EDIT_MAX_RESAMPLE); break;
        case OPT_JUMP: o.jump = uc_parse_long(&o.cli, "--jump", optarg, 1, 1000); break;
        case OPT_ETA:
            o.eta = uc_parse_double(&o.cli, "--eta", optarg);
            /* past 1 the first step's variance exceeds 1 - acp_prev (its
             * acp is near 0): every sample would be NaN */
            if (!(o.eta >= 0) || o.eta > 1)
                uc_die(&o.cli, UC_EXIT_USAGE, "--eta: '%s' is not in [0, 1]", optarg);
            break;
        default: uc_die(&o.cli, UC_EXIT_USAGE, "bad option");
        }
    }
    if (o.index_set && o.nsamples != 1)
        uc_die(&o.cli, UC_EXIT_USAGE, "--index draws one sample: drop -n");
    if (!o.image && (o.mask || o.extend_arg))
        uc_die(&o.cli, UC_EXIT_USAGE, "%s needs --image, the picture to edit", o.mask ? "--mask" : "--extend");
    uc_image_out_check(&o.out, &o.cli);
    uc_cli_ready(&o.cli);

    const char *path = uc_model_path(&o.cli, "decoder");
    if (!(o.dec = uc_decoder_open(path)))
        uc_die_err(&o.cli);
    o.info = uc_decoder_get_info(o.dec);
    if (o.guidance == 0) /* no -g: the model's default, else Karlo's */
        o.guidance = o.info->model.default_guidance ? o.info->model.default_guidance : 8.0;
    if (o.best_of == 0) /* no --best-of */
        o.best_of = o.info->model.default_best_of ? o.info->model.default_best_of : 1;
    if ((o.first + o.nsamples) * o.best_of > 100000)
        uc_die(&o.cli, UC_EXIT_USAGE, "--samples times --best-of is too large");
    if (o.best_of > 1)
        open_ranker(&o);
    /* the schedule: the model's diffusion section must hold (data error),
     * then --steps must fit it (usage error); kept for every record */
    if (uc_decoder_steps(o.dec, "") < 0)
        uc_die(&o.cli, UC_EXIT_DATA, "%s: %s", path, uc_errmsg());
    int steps = uc_decoder_steps(o.dec, o.steps);
    if (steps < 0)
        uc_die(&o.cli, UC_EXIT_USAGE, "--steps: %s", uc_errmsg());
    if (o.sampler < 0)
        o.sampler = uc_sampler_for_respacing(o.steps);
    uc_info(&o.cli, "model %s (%s): %dx%d, %d channels, clip_dim %d; %d steps (%s), %s, guidance %g",
            o.info->model.path, o.info->model.id, o.info->image_size, o.info->image_size, o.info->model_channels,
            o.info->clip_dim, steps, o.steps, uc_sampler_name((uc_sampler)o.sampler), o.guidance);
    if (o.image)
        check_edit(&o, steps);

    uc_image_out_open(&o.out, &o.cli);
    uc_inputs in;
    uc_inputs_init(&in, &o.cli, argc - optind, argv + optind, 1);
    rec *r;
    while ((r = uc_inputs_next(&in)))
        (o.image ? process_edit : process)(&o, r, in.src, in.ordinal);
    uc_image_out_close(&o.out, &o.cli);
    uc_stdout_check(&o.cli);
    uc_decoder_free(o.dec);
    clip_free(o.clip);
    uc_free(o.rank_img.px);
    uc_free(o.rank_px);
    uc_free(o.rank_emb);
    uc_edit_in_free(&o.edit);
    return UC_EXIT_OK;
}
