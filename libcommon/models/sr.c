/* sr.c - see sr.h. */
#include "libcommon/models/sr.h"

#include <string.h>

#include "formats/base.h"
#include "libcommon/models/model_file.h"

int uc_sr_config_parse(const cJSON *hp, const cJSON *diffusion, uc_sr_config *cfg)
{
    uc_unet_config *u = &cfg->unet;
    memset(cfg, 0, sizeof *cfg);
    uc_unet_config_default(u);
    if (!cJSON_IsObject(hp))
        return uc_err("sr config: model.hparams missing");
    int learn_sigma = 0;
    if (uc_cfg_int(hp, "channels", -1, 1, 16384, &u->model_channels) ||
        uc_cfg_int(hp, "depth", -1, 0, 64, &u->num_res_blocks) ||
        uc_cfg_int(hp, "scale", 4, 1, 64, &cfg->scale) ||
        (diffusion && uc_cfg_int(diffusion, "learn_sigma", 0, 0, 1, &learn_sigma)))
        return uc_err_prefix("sr config");
    int n = uc_cfg_int_list(cJSON_GetObjectItemCaseSensitive(hp, "channels_multiple"), "channels_multiple",
                            u->channel_mult, UC_UNET_MAXLEVEL);
    if (n < 0)
        return -1;
    if (n == 0)
        return uc_err("sr config: channels_multiple is empty");
    u->nlevels = n;
    /* SuperResUNetModel as ImprovedSupRes64to256ProgressiveModel builds it */
    u->in_channels = 6;
    u->out_channels = learn_sigma ? 6 : 3;
    u->nattn = 0;
    u->use_middle_attention = 0;
    u->resblock_updown = 1;
    u->use_scale_shift_norm = 0;
    return 0;
}

static int parse_stage(const cJSON *config, uc_sr_config *cfg, const cJSON **diff)
{
    const cJSON *hp;
    return uc_model_sections(config, "sr", &hp, diff) ? -1 : uc_sr_config_parse(hp, *diff, cfg);
}

int uc_sr_tensors(const cJSON *config, uc_unet_tensor_fn fn, void *ctx)
{
    uc_sr_config cfg;
    const cJSON *diff;
    if (parse_stage(config, &cfg, &diff) || uc_unet_tensors(&cfg.unet, "model_first_steps.", fn, ctx) ||
        uc_unet_tensors(&cfg.unet, "model_last_step.", fn, ctx))
        return -1;
    return 0;
}

int uc_sr_load(uc_sr *s, st_file *f, const cJSON *config)
{
    memset(s, 0, sizeof *s);
    const cJSON *diff;
    if (parse_stage(config, &s->cfg, &diff))
        return -1;
    s->first = uc_unet_load(f, "model_first_steps.", &s->cfg.unet);
    s->last = s->first ? uc_unet_load(f, "model_last_step.", &s->cfg.unet) : NULL;
    if (!s->last) {
        uc_sr_free(s);
        return -1;
    }
    s->diffusion = cJSON_Duplicate(diff, 1);
    return 0;
}

static int load(void *s, st_file *f, const cJSON *config) { return uc_sr_load(s, f, config); }

int uc_sr_open(uc_sr *s, const char *path)
{
    memset(s, 0, sizeof *s);
    s->file = uc_model_open(path, "sr", "an sr", load, s, &s->info);
    return s->file ? 0 : -1;
}

void uc_sr_free(uc_sr *s)
{
    uc_unet_free(s->first);
    uc_unet_free(s->last);
    uc_unet_ws_free(s->ws);
    cJSON_Delete(s->diffusion);
    if (s->file)
        st_close(s->file);
    memset(s, 0, sizeof *s);
}

int uc_sr_forward(uc_sr *s, int last, int64_t B, int64_t H, int64_t W, const float *x, const double *t,
                  const float *low_res, float *out)
{
    uc_unet *u = last ? s->last : s->first;
    if (!uc_unet_ws_fits(s->ws, u, B, H, W, 0)) {
        uc_unet_ws_free(s->ws);
        if (!(s->ws = uc_unet_ws_new(u, B, H, W, 0)))
            return -1;
    }
    int64_t img = 3 * H * W;
    float *in = uc_alloc((size_t)(B * 2 * img), sizeof(float));
    float *emb = uc_alloc((size_t)(B * uc_unet_emb_dim(u)), sizeof(float));
    for (int64_t b = 0; b < B; b++) { /* cat[x, low_res] on channels */
        memcpy(in + 2 * b * img, x + b * img, (size_t)img * sizeof(float));
        memcpy(in + (2 * b + 1) * img, low_res + b * img, (size_t)img * sizeof(float));
    }
    uc_unet_time_embed(u, t, B, emb);
    int rc = uc_unet_forward(u, s->ws, in, emb, NULL, NULL, out);
    uc_free(in);
    uc_free(emb);
    return rc;
}

typedef struct {
    uc_sr *s;
    int64_t B, H, W;
    const float *low_res;
    double *t;
    const uc_sr_sample_opts *o;
} sample_ctx;

static int model_fn(void *ctx, const uc_step *st, const float *x, float *out)
{
    sample_ctx *k = ctx;
    for (int64_t i = 0; i < k->B; i++)
        k->t[i] = (double)st->t_model;
    int rc = uc_sr_forward(k->s, st->index == st->count - 1, k->B, k->H, k->W, x, k->t, k->low_res, out);
    if (rc == 0 && k->o->progress)
        k->o->progress(k->o->progress_ctx, st->call + 1, st->calls);
    return rc;
}

int uc_sr_sample(uc_sr *s, int64_t B, int64_t H, int64_t W, const float *low_res, const uc_sr_sample_opts *o,
                 float *x)
{
    uc_diffusion diff;
    if (uc_diffusion_from_config(&diff, s->diffusion, o->respacing))
        return -1;
    int learned = diff.var_type == UC_VAR_LEARNED || diff.var_type == UC_VAR_LEARNED_RANGE;
    if (learned != (s->cfg.unet.out_channels == 6)) {
        uc_diffusion_free(&diff);
        return uc_err("sr: the diffusion config does not match the model's outputs");
    }
    sample_ctx k = {s, B, H, W, low_res, uc_alloc((size_t)B, sizeof(double)), o};
    uc_sample_opts so = {
        .n = B,
        .channels = 3,
        .spatial = H * W,
        .sampler = UC_SAMPLER_DDPM,
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
