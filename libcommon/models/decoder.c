/* decoder.c - see decoder.h. In order: the config, the one walk of the
 * weights (bind or list), the handle, the forward with its buffers, the
 * guided forward and the sampling loop. */
#include "libcommon/models/decoder.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/models/model_file.h"
#include "libcommon/models/unet.h"
#include "libcommon/models/walk.h"
#include "libcommon/nn/ops.h"

/* ---- config --------------------------------------------------------------- */

typedef struct {
    uc_unet_config unet; /* the UNet built from model.hparams */
    int image_size;      /* side of the samples (hparams.image_size) */
    int clip_dim;        /* D: image embedding and text feature width */
    int clip_emb_mult;   /* image-embedding tokens */
    int xf_width;        /* token width (encoder_channels) */
    int text_ctx;        /* tokens per prompt the model was trained with */
} dec_config;

static const char default_config[] =
    "{\"model\": {\"type\": \"t2i-decoder\", \"diffusion_sampler\": \"uniform\", \"hparams\":"
    " {\"image_size\": 64, \"num_channels\": 320, \"num_res_blocks\": 3, \"channel_mult\": \"\","
    " \"attention_resolutions\": \"32,16,8\", \"num_heads\": -1, \"num_head_channels\": 64,"
    " \"num_heads_upsample\": -1, \"use_scale_shift_norm\": true, \"dropout\": 0.1, \"clip_dim\":"
    " 768, \"clip_emb_mult\": 4, \"text_ctx\": 77, \"xf_width\": 1536, \"xf_layers\": 0,"
    " \"xf_heads\": 0, \"xf_final_ln\": false, \"resblock_updown\": true, \"learn_sigma\": true,"
    " \"text_drop\": 0.3, \"clip_emb_type\": \"image\", \"clip_emb_drop\": 0.1, \"use_plm\": true}},"
    " \"diffusion\": {\"steps\": 1000, \"learn_sigma\": true, \"sigma_small\": false,"
    " \"noise_schedule\": \"squaredcos_cap_v2\", \"use_kl\": false, \"predict_xstart\": false,"
    " \"rescale_learned_sigmas\": true, \"timestep_respacing\": \"\"}}";

const char *uc_decoder_default_config(void) { return default_config; }

/* Hyperparameters from model.hparams of Karlo's decoder yaml (as JSON). */
static int config_parse(const cJSON *hp, dec_config *cfg)
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

/* ---- the weights: one walk -------------------------------------------------- */

struct uc_decoder {
    dec_config cfg;
    uc_decoder_info info;
    uc_unet *unet;                          /* keys "model." + UNetModel names */
    const float *clip_emb_w, *clip_emb_b;   /* clip_emb: [4C, D], [4C] */
    const float *seq_proj_w, *seq_proj_b;   /* text_seq_proj.0: [xf, D], [xf] */
    const float *seq_ln_w, *seq_ln_b;       /* text_seq_proj.1 (LayerNorm): [xf], [xf] */
    const float *feat_proj_w, *feat_proj_b; /* text_feat_proj: [4C, D], [4C] */
    const float *tok_proj_w, *tok_proj_b;   /* clip_tok_proj: [xf * mult, D], [xf * mult] */
    const float *cf_param;                  /* cf_param: [D], y of unconditional rows */
    cJSON *diffusion;                       /* owned copy of the config's diffusion section */
    st_file *file;                          /* owned when opened from a path, else NULL */
    uc_schedule sched; /* of the last respacing asked for */
    /* buffers of a forward of (B, H, W, ctx) */
    uc_unet_ws *ws;
    int64_t B, H, W, ctx;
    float *emb, *tmp;  /* [B, 4C] each */
    float *seq, *tok;  /* [B, ctx, xf], [B, xf * mult] */
    float *enc, *bias; /* tokens [xf, B, L], key bias [B, L] */
    float *xx;         /* guided input [B, 3, H, W] (B = 2 prompts) */
    double *t;         /* sampling timesteps, t_n of them */
    int64_t t_n;
};

/* PLMImUNet's tensors: the UNet, then the conditioning layers. */
static int walk(uc_walk *w, uc_decoder *d)
{
    const dec_config *c = &d->cfg;
    int64_t E = 4 * (int64_t)c->unet.model_channels, D = c->clip_dim, X = c->xf_width, M = c->clip_emb_mult;
    w->prefix = "model.";
    if (!(d->unet = uc_unet_walk(w, &c->unet)))
        return w->rc ? w->rc : -1;
    d->clip_emb_w = uc_walk_tensor(w, UC_D2(E, D), "clip_emb.weight");
    d->clip_emb_b = uc_walk_tensor(w, UC_D1(E), "clip_emb.bias");
    d->seq_proj_w = uc_walk_tensor(w, UC_D2(X, D), "text_seq_proj.0.weight");
    d->seq_proj_b = uc_walk_tensor(w, UC_D1(X), "text_seq_proj.0.bias");
    d->seq_ln_w = uc_walk_tensor(w, UC_D1(X), "text_seq_proj.1.weight");
    d->seq_ln_b = uc_walk_tensor(w, UC_D1(X), "text_seq_proj.1.bias");
    d->feat_proj_w = uc_walk_tensor(w, UC_D2(E, D), "text_feat_proj.weight");
    d->feat_proj_b = uc_walk_tensor(w, UC_D1(E), "text_feat_proj.bias");
    d->tok_proj_w = uc_walk_tensor(w, UC_D2(X * M, D), "clip_tok_proj.weight");
    d->tok_proj_b = uc_walk_tensor(w, UC_D1(X * M), "clip_tok_proj.bias");
    d->cf_param = uc_walk_tensor(w, UC_D1(D), "cf_param");
    return w->rc;
}

static int parse_stage(const cJSON *config, dec_config *cfg, const cJSON **diff)
{
    const cJSON *hp;
    return uc_model_sections(config, "decoder", &hp, diff) ? -1 : config_parse(hp, cfg);
}

static cJSON *parse_json(const char *config_json)
{
    cJSON *j = cJSON_Parse(config_json ? config_json : default_config);
    if (!j)
        uc_err("decoder config: not JSON");
    return j;
}

int uc_decoder_tensors(const char *config_json, uc_tensor_fn fn, void *ctx)
{
    cJSON *config = parse_json(config_json);
    if (!config)
        return -1;
    uc_decoder d = {0};
    const cJSON *diff;
    uc_walk w = {.fn = fn, .ctx = ctx};
    int rc = parse_stage(config, &d.cfg, &diff) ? -1 : walk(&w, &d);
    uc_unet_free(d.unet);
    cJSON_Delete(config);
    return rc;
}

/* Bind the weights of f for config into d (zeroed). */
static int load(void *dv, st_file *f, const cJSON *config)
{
    uc_decoder *d = dv;
    const cJSON *diff;
    uc_walk w = {.f = f};
    if (parse_stage(config, &d->cfg, &diff) || walk(&w, d))
        return -1;
    d->diffusion = cJSON_Duplicate(diff, 1);
    const dec_config *c = &d->cfg;
    uc_decoder_info *i = &d->info;
    i->image_size = c->image_size;
    i->clip_dim = c->clip_dim;
    i->clip_emb_mult = c->clip_emb_mult;
    i->xf_width = c->xf_width;
    i->text_ctx = c->text_ctx;
    i->model_channels = c->unet.model_channels;
    i->out_channels = c->unet.out_channels;
    return 0;
}

/* load for a model file, which is for sampling: its diffusion section
 * must hold and match its outputs, found at open rather than at the first
 * record. */
static int load_file(void *dv, st_file *f, const cJSON *config)
{
    uc_decoder *d = dv;
    if (load(dv, f, config))
        return -1;
    const uc_diffusion *sc = uc_schedule_get(&d->sched, d->diffusion, "");
    if (!sc)
        return -1;
    if ((sc->var_type == UC_VAR_LEARNED_RANGE) != (d->cfg.unet.out_channels == 6))
        return uc_err("decoder config: diffusion.learn_sigma is %s, but the model has %d output channels",
                      sc->var_type == UC_VAR_LEARNED_RANGE ? "true" : "false", d->cfg.unet.out_channels);
    return 0;
}

uc_decoder *uc_decoder_open(const char *path)
{
    uc_decoder *d = uc_alloc(1, sizeof *d);
    if (!(d->file = uc_model_open(path, "decoder", "a decoder", load_file, d, &d->info.model))) {
        uc_decoder_free(d);
        return NULL;
    }
    return d;
}

uc_decoder *uc_decoder_load(st_file *f, const char *config_json)
{
    cJSON *config = parse_json(config_json);
    uc_decoder *d = uc_alloc(1, sizeof *d);
    if (!config || load(d, f, config) || uc_model_info_fill(f, "decoder", &d->info.model)) {
        cJSON_Delete(config);
        uc_decoder_free(d);
        return NULL;
    }
    cJSON_Delete(config);
    return d;
}

static void free_buffers(uc_decoder *d)
{
    uc_unet_ws_free(d->ws);
    d->ws = NULL;
    float **bufs[] = {&d->emb, &d->tmp, &d->seq, &d->tok, &d->enc, &d->bias, &d->xx};
    for (size_t i = 0; i < UC_COUNT(bufs); i++) {
        uc_free(*bufs[i]);
        *bufs[i] = NULL;
    }
    d->B = d->H = d->W = d->ctx = 0;
}

void uc_decoder_free(uc_decoder *d)
{
    if (!d)
        return;
    free_buffers(d);
    uc_free(d->t);
    uc_unet_free(d->unet);
    cJSON_Delete(d->diffusion);
    uc_schedule_free(&d->sched);
    if (d->file)
        st_close(d->file);
    uc_free(d);
}

const uc_decoder_info *uc_decoder_get_info(const uc_decoder *d) { return &d->info; }

int uc_decoder_steps(uc_decoder *d, const char *respacing)
{
    const uc_diffusion *sc = uc_schedule_get(&d->sched, d->diffusion, respacing);
    return sc ? sc->steps : -1;
}

/* ---- forward ------------------------------------------------------------ */

/* The buffers of a forward of B rows of HxW with ctx tokens: kept while
 * the shape stays, made again when it changes. */
static int fit(uc_decoder *d, int64_t B, int64_t H, int64_t W, int64_t ctx)
{
    int64_t L = d->cfg.clip_emb_mult + ctx;
    if (d->ws && d->B == B && d->H == H && d->W == W && d->ctx == ctx)
        return 0;
    free_buffers(d);
    if (!(d->ws = uc_unet_ws_new(d->unet, B, H, W, L)))
        return -1;
    int64_t E = uc_unet_emb_dim(d->unet), X = d->cfg.xf_width, M = d->cfg.clip_emb_mult;
    d->B = B, d->H = H, d->W = W, d->ctx = ctx;
    d->emb = uc_alloc((size_t)(B * E), sizeof(float));
    d->tmp = uc_alloc((size_t)(B * E), sizeof(float));
    d->seq = uc_alloc((size_t)(B * ctx * X), sizeof(float));
    d->tok = uc_alloc((size_t)(B * X * M), sizeof(float));
    d->enc = uc_alloc((size_t)(X * B * L), sizeof(float));
    d->bias = uc_alloc((size_t)(B * L), sizeof(float));
    d->xx = uc_alloc((size_t)(B * 3 * H * W), sizeof(float));
    return 0;
}

int uc_decoder_forward(uc_decoder *d, int64_t B, int64_t H, int64_t W, int64_t ctx, const float *x,
                       const double *t, const float *txt_feat, const float *txt_seq, const unsigned char *mask,
                       const float *y, float *out)
{
    const dec_config *c = &d->cfg;
    int64_t E = uc_unet_emb_dim(d->unet), D = c->clip_dim, X = c->xf_width, M = c->clip_emb_mult;
    if (ctx < 1 || ctx > 65536)
        return uc_err("decoder: %lld text tokens out of range", (long long)ctx);
    int64_t L = M + ctx;
    if (fit(d, B, H, W, ctx))
        return -1;
    float *emb = d->emb, *tmp = d->tmp, *seq = d->seq, *tok = d->tok, *enc = d->enc, *bias = d->bias;

    uc_unet_time_embed(d->unet, d->ws, t, emb);
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
    return uc_unet_forward(d->unet, d->ws, x, emb, enc, bias, out);
}

static double flops(const uc_decoder *d, int64_t rows, int64_t ctx, int done)
{
    const dec_config *c = &d->cfg;
    int64_t S = c->image_size, D = c->clip_dim, X = c->xf_width, M = c->clip_emb_mult;
    int64_t C = c->unet.model_channels, E = 4 * C;
    return (done ? uc_unet_flops_done : uc_unet_flops)(d->unet, rows, S, S, M + ctx) +
           2.0 * (double)rows *
               ((double)(C * E + E * E) + 2.0 * (double)(D * E) + (double)(ctx * D * X) + (double)(D * X * M));
}

double uc_decoder_flops(const uc_decoder *d, int64_t rows, int64_t ctx) { return flops(d, rows, ctx, 0); }
double uc_decoder_flops_done(const uc_decoder *d, int64_t rows, int64_t ctx) { return flops(d, rows, ctx, 1); }

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
    if (c->ctx < 1 || c->ctx > 65536)
        return uc_err("decoder: %lld text tokens out of range", (long long)c->ctx);
    if (fit(d, 2 * B, H, W, c->ctx))
        return -1;
    float *xx = d->xx;
    memcpy(xx, x, (size_t)(B * img) * sizeof(float));
    memcpy(xx + B * img, x, (size_t)(B * img) * sizeof(float));
    int rc = uc_decoder_forward(d, 2 * B, H, W, c->ctx, xx, t, c->txt_feat, c->txt_seq, c->mask, c->y, out);
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
    const uc_stage_opts *o;
} sample_ctx;

static int model_fn(void *ctx, const uc_step *s, const float *x, float *out)
{
    sample_ctx *k = ctx;
    for (int64_t i = 0; i < 2 * k->c->B; i++)
        k->d->t[i] = (double)s->t_model;
    int rc = uc_decoder_guided(k->d, k->c, k->S, k->S, x, k->d->t, out);
    if (rc == 0 && k->o->progress)
        k->o->progress(k->o->progress_ctx, s->call + 1, s->calls);
    return rc;
}

int uc_decoder_sample(uc_decoder *d, const uc_decoder_cond *c, const uc_stage_opts *o, float *x)
{
    if (uc_decoder_steps(d, o->respacing) < 0)
        return -1;
    int64_t S = d->cfg.image_size;
    if ((d->sched.d.var_type == UC_VAR_LEARNED_RANGE) != (d->cfg.unet.out_channels == 6))
        return uc_err("decoder: the diffusion config does not match the model's outputs (%s learned variance)",
                      d->cfg.unet.out_channels == 6 ? "with" : "without");
    if (c->B < 1 || c->B > 4096)
        return uc_err("decoder: %lld prompts out of range", (long long)c->B);
    if (d->t_n < 2 * c->B) {
        uc_free(d->t);
        d->t = uc_alloc((size_t)(2 * c->B), sizeof(double));
        d->t_n = 2 * c->B;
    }
    sample_ctx k = {d, c, S, o};
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
    return uc_diffusion_sample(&d->sched.d, &so, x);
}
