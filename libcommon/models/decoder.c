/* decoder.c - see decoder.h. */
#include "libcommon/models/decoder.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/models/model_file.h"
#include "libcommon/nn/ops.h"

/* ---- config and weights ------------------------------------------------ */

int uc_decoder_config_parse(const cJSON *hp, uc_decoder_config *cfg)
{
    uc_unet_config *u = &cfg->unet;
    memset(cfg, 0, sizeof *cfg);
    uc_unet_config_default(u);
    if (!cJSON_IsObject(hp))
        return uc_err("decoder config: model.hparams missing");
    int learn_sigma, drop_unused;
    if (uc_cfg_int(hp, "image_size", -1, 1, 4096, &cfg->image_size) ||
        uc_cfg_int(hp, "num_channels", -1, 1, 16384, &u->model_channels) ||
        uc_cfg_int(hp, "num_res_blocks", -1, 0, 64, &u->num_res_blocks) ||
        uc_cfg_int(hp, "num_heads", 1, -1, 4096, &u->num_heads) ||
        uc_cfg_int(hp, "num_head_channels", -1, -1, 65536, &u->num_head_channels) ||
        uc_cfg_int(hp, "num_heads_upsample", -1, -1, 4096, &u->num_heads_upsample) ||
        uc_cfg_int(hp, "use_scale_shift_norm", 0, 0, 1, &u->use_scale_shift_norm) ||
        uc_cfg_int(hp, "resblock_updown", 0, 0, 1, &u->resblock_updown) ||
        uc_cfg_int(hp, "clip_dim", -1, 1, 65536, &cfg->clip_dim) ||
        uc_cfg_int(hp, "clip_emb_mult", -1, 1, 4096, &cfg->clip_emb_mult) ||
        uc_cfg_int(hp, "xf_width", -1, 1, 65536, &cfg->xf_width) ||
        uc_cfg_int(hp, "text_ctx", 77, 1, 65536, &cfg->text_ctx) ||
        uc_cfg_int(hp, "learn_sigma", 0, 0, 1, &learn_sigma) || uc_cfg_int(hp, "xf_layers", 0, 0, 0, &drop_unused))
        return uc_err_prefix("decoder config");
    const char *emb_type = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(hp, "clip_emb_type"));
    if (emb_type && strcmp(emb_type, "image"))
        return uc_err("decoder config: clip_emb_type \"%s\" (only \"image\" exists)", emb_type);
    u->in_channels = 3;
    u->out_channels = learn_sigma ? 6 : 3;
    u->encoder_channels = cfg->xf_width;

    const cJSON *cm = cJSON_GetObjectItemCaseSensitive(hp, "channel_mult");
    int n = cm ? uc_cfg_int_list(cm, "channel_mult", u->channel_mult, UC_UNET_MAXLEVEL) : 0;
    if (n < 0)
        return -1;
    if (n == 0) { /* Karlo's defaults by image size */
        static const int m256[] = {1, 1, 2, 2, 4, 4}, m128[] = {1, 1, 2, 3, 4}, m64[] = {1, 2, 3, 4};
        const int *m = cfg->image_size == 256 ? m256 : cfg->image_size == 128 ? m128 : cfg->image_size == 64 ? m64 : NULL;
        if (!m)
            return uc_err("decoder config: no channel_mult and no default for image_size %d", cfg->image_size);
        n = cfg->image_size == 256 ? 6 : cfg->image_size == 128 ? 5 : 4;
        memcpy(u->channel_mult, m, (size_t)n * sizeof *m);
    }
    u->nlevels = n;
    int res[UC_COUNT(u->attn_ds)];
    const cJSON *ar = cJSON_GetObjectItemCaseSensitive(hp, "attention_resolutions");
    int na = ar ? uc_cfg_int_list(ar, "attention_resolutions", res, (int)UC_COUNT(res)) : 0;
    if (na < 0)
        return -1;
    for (int i = 0; i < na; i++) {
        if (res[i] < 1)
            return uc_err("decoder config: attention resolution %d", res[i]);
        u->attn_ds[i] = cfg->image_size / res[i]; /* Python's image_size // res */
    }
    u->nattn = na;
    return 0;
}

/* The tensors of PLMImUNet outside UNetModel. */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[2];
} extra;

static int extras(const uc_decoder_config *c, extra *w)
{
    int64_t E = 4 * (int64_t)c->unet.model_channels, D = c->clip_dim, X = c->xf_width, M = c->clip_emb_mult;
    const extra t[] = {
        {"model.clip_emb.weight", 2, {E, D}},
        {"model.clip_emb.bias", 1, {E}},
        {"model.text_seq_proj.0.weight", 2, {X, D}},
        {"model.text_seq_proj.0.bias", 1, {X}},
        {"model.text_seq_proj.1.weight", 1, {X}},
        {"model.text_seq_proj.1.bias", 1, {X}},
        {"model.text_feat_proj.weight", 2, {E, D}},
        {"model.text_feat_proj.bias", 1, {E}},
        {"model.clip_tok_proj.weight", 2, {X * M, D}},
        {"model.clip_tok_proj.bias", 1, {X * M}},
        {"model.cf_param", 1, {D}},
    };
    memcpy(w, t, sizeof t);
    return (int)UC_COUNT(t);
}

static int parse_stage(const cJSON *config, uc_decoder_config *cfg, const cJSON **diff)
{
    const cJSON *hp;
    return uc_model_sections(config, "decoder", &hp, diff) ? -1 : uc_decoder_config_parse(hp, cfg);
}

int uc_decoder_tensors(const cJSON *config, uc_unet_tensor_fn fn, void *ctx)
{
    uc_decoder_config cfg;
    const cJSON *diff;
    extra w[16];
    if (parse_stage(config, &cfg, &diff) || uc_unet_tensors(&cfg.unet, "model.", fn, ctx))
        return -1;
    for (int i = 0, n = extras(&cfg, w); i < n; i++)
        fn(ctx, w[i].name, w[i].ndim, w[i].shape);
    return 0;
}

int uc_decoder_load(uc_decoder *d, st_file *f, const cJSON *config)
{
    memset(d, 0, sizeof *d);
    const cJSON *diff;
    if (parse_stage(config, &d->cfg, &diff))
        return -1;
    if (!(d->unet = uc_unet_load(f, "model.", &d->cfg.unet)))
        return -1;
    const float **dst[] = {&d->clip_emb_w,  &d->clip_emb_b,  &d->seq_proj_w, &d->seq_proj_b,
                           &d->seq_ln_w,    &d->seq_ln_b,    &d->feat_proj_w, &d->feat_proj_b,
                           &d->tok_proj_w,  &d->tok_proj_b,  &d->cf_param};
    extra w[16];
    int n = extras(&d->cfg, w);
    for (int i = 0; i < n; i++)
        if (!(*dst[i] = st_f32(f, w[i].name, w[i].ndim, w[i].shape))) {
            uc_decoder_free(d);
            return -1;
        }
    d->diffusion = cJSON_Duplicate(diff, 1);
    return 0;
}

static int load(void *d, st_file *f, const cJSON *config) { return uc_decoder_load(d, f, config); }

int uc_decoder_open(uc_decoder *d, const char *path)
{
    memset(d, 0, sizeof *d);
    d->file = uc_model_open(path, "decoder", "a decoder", load, d, &d->info);
    return d->file ? 0 : -1;
}

void uc_decoder_free(uc_decoder *d)
{
    uc_unet_free(d->unet);
    uc_unet_ws_free(d->ws);
    cJSON_Delete(d->diffusion);
    if (d->file)
        st_close(d->file);
    memset(d, 0, sizeof *d);
}

/* ---- forward ------------------------------------------------------------ */

int uc_decoder_forward(uc_decoder *d, int64_t B, int64_t H, int64_t W, int64_t ctx, const float *x,
                       const double *t, const float *txt_feat, const float *txt_seq, const unsigned char *mask,
                       const float *y, float *out)
{
    const uc_decoder_config *c = &d->cfg;
    int64_t E = uc_unet_emb_dim(d->unet), D = c->clip_dim, X = c->xf_width, M = c->clip_emb_mult;
    if (ctx < 1 || ctx > 65536)
        return uc_err("decoder: %lld text tokens out of range", (long long)ctx);
    int64_t L = M + ctx;
    if (!uc_unet_ws_fits(d->ws, d->unet, B, H, W, L)) {
        uc_unet_ws_free(d->ws);
        if (!(d->ws = uc_unet_ws_new(d->unet, B, H, W, L)))
            return -1;
    }
    float *emb = uc_alloc((size_t)(B * E), sizeof(float)), *tmp = uc_alloc((size_t)(B * E), sizeof(float));
    float *seq = uc_alloc((size_t)(B * ctx * X), sizeof(float)), *tok = uc_alloc((size_t)(B * X * M), sizeof(float));
    float *enc = uc_alloc((size_t)(X * B * L), sizeof(float)), *bias = uc_alloc((size_t)(B * L), sizeof(float));

    uc_unet_time_embed(d->unet, t, B, emb);
    uc_linear(tmp, y, d->clip_emb_w, d->clip_emb_b, B, D, E);
    uc_add(emb, tmp, B * E);
    uc_linear(seq, txt_seq, d->seq_proj_w, d->seq_proj_b, B * ctx, D, X);
    uc_layernorm(seq, seq, d->seq_ln_w, d->seq_ln_b, B * ctx, X, 1e-5f);
    uc_linear(tmp, txt_feat, d->feat_proj_w, d->feat_proj_b, B, D, E);
    uc_add(emb, tmp, B * E);
    uc_linear(tok, y, d->tok_proj_w, d->tok_proj_b, B, D, X * M);
    /* tokens [X, B, L]: the M image tokens, then the text tokens */
    for (int64_t ch = 0; ch < X; ch++)
        for (int64_t b = 0; b < B; b++) {
            float *e = enc + (ch * B + b) * L;
            for (int64_t j = 0; j < M; j++)
                e[j] = tok[b * X * M + ch * M + j];
            for (int64_t j = 0; j < ctx; j++)
                e[M + j] = seq[(b * ctx + j) * X + ch];
        }
    for (int64_t b = 0; b < B; b++)
        for (int64_t j = 0; j < L; j++)
            bias[b * L + j] = j < M || mask[b * ctx + j - M] ? 0.0f : -INFINITY;
    int rc = uc_unet_forward(d->unet, d->ws, x, emb, enc, bias, out);
    uc_free(emb);
    uc_free(tmp);
    uc_free(seq);
    uc_free(tok);
    uc_free(enc);
    uc_free(bias);
    return rc;
}

int uc_decoder_guided_y(const uc_decoder *d, int64_t B, const float *img_feat, float *y)
{
    int64_t D = d->cfg.clip_dim;
    memcpy(y, img_feat, (size_t)(B * D) * sizeof(float));
    for (int64_t b = 0; b < B; b++)
        memcpy(y + (B + b) * D, d->cf_param, (size_t)D * sizeof(float));
    return 0;
}

int uc_decoder_guided(uc_decoder *d, const uc_decoder_cond *c, int64_t H, int64_t W, const float *x,
                      const double *t, float *out)
{
    int64_t B = c->B, HW = H * W, oc = d->cfg.unet.out_channels, img = 3 * HW;
    if (c->nscales != 1 && c->nscales != B)
        return uc_err("decoder: %lld guidance scales for %lld prompts", (long long)c->nscales, (long long)B);
    float *xx = uc_alloc((size_t)(2 * B * img), sizeof(float));
    memcpy(xx, x, (size_t)(B * img) * sizeof(float));
    memcpy(xx + B * img, x, (size_t)(B * img) * sizeof(float));
    int rc = uc_decoder_forward(d, 2 * B, H, W, c->ctx, xx, t, c->txt_feat, c->txt_seq, c->mask, c->y, out);
    uc_free(xx);
    if (rc)
        return rc;
    /* eps channels: g = u + s (c - u) for both halves; the rest unguided */
    for (int64_t b = 0; b < B; b++) {
        float s = c->scales[c->nscales == 1 ? 0 : b];
        float *ce = out + b * oc * HW, *ue = out + (B + b) * oc * HW;
        for (int64_t i = 0; i < img; i++) {
            float g = ue[i] + s * (ce[i] - ue[i]);
            ce[i] = g;
            ue[i] = g;
        }
    }
    return 0;
}

/* ---- sampling ----------------------------------------------------------- */

typedef struct {
    uc_decoder *d;
    const uc_decoder_cond *c;
    int64_t S;
    double *t;
    const uc_decoder_sample_opts *o;
} sample_ctx;

static int model_fn(void *ctx, const uc_step *s, const float *x, float *out)
{
    sample_ctx *k = ctx;
    for (int64_t i = 0; i < 2 * k->c->B; i++)
        k->t[i] = (double)s->t_model;
    int rc = uc_decoder_guided(k->d, k->c, k->S, k->S, x, k->t, out);
    if (rc == 0 && k->o->progress)
        k->o->progress(k->o->progress_ctx, s->call + 1, s->calls);
    return rc;
}

int uc_decoder_sample(uc_decoder *d, const uc_decoder_cond *c, const uc_decoder_sample_opts *o, float *x)
{
    uc_diffusion diff;
    if (uc_diffusion_from_config(&diff, d->diffusion, o->respacing))
        return -1;
    int64_t S = d->cfg.image_size;
    if ((diff.var_type == UC_VAR_LEARNED_RANGE) != (d->cfg.unet.out_channels == 6)) {
        uc_diffusion_free(&diff);
        return uc_err("decoder: the diffusion config does not match the model's outputs (%s learned variance)",
                      d->cfg.unet.out_channels == 6 ? "with" : "without");
    }
    sample_ctx k = {d, c, S, uc_alloc((size_t)(2 * c->B), sizeof(double)), o};
    uc_sample_opts so = {
        .n = 2 * c->B,
        .channels = 3,
        .spatial = S * S,
        .sampler = o->sampler,
        .eta = o->eta,
        .denoise = {.clamp = 0, .clip_denoised = 1},
        .model = model_fn,
        .model_ctx = &k,
        .noise = o->noise,
        .noise_ctx = o->noise_ctx,
        .trace = o->trace,
        .trace_ctx = o->trace_ctx,
        .edit = o->edit,
    };
    int rc = uc_diffusion_sample(&diff, &so, x);
    uc_free(k.t);
    uc_diffusion_free(&diff);
    return rc;
}
