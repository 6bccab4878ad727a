/* decoder.h - Karlo's 64px decoder (Text2ImProgressiveModel around
 * PLMImUNet): a GLIDE-style UNet (unet.h) conditioned on a CLIP image
 * embedding and the CLIP text features, sampled with classifier-free
 * guidance on eps and learned-range variance. What lives here: the one
 * description of its weights (uc_decoder_tensors), the stage handle (open,
 * info, schedule, forward, guided forward, sampling); the handle owns its
 * weights, its schedule and every buffer of a forward.
 *
 * Conditioning per row (PLMImUNet.forward):
 *   emb = time_embed(t) + clip_emb(y) + text_feat_proj(txt_feat)     [4C]
 *   tokens = [clip_tok_proj(y) as clip_emb_mult tokens,
 *             LayerNorm(text_seq_proj(txt_seq))]                     [xf_width, mult + ctx]
 * where clip_tok_proj's output of xf_width * mult values is read as
 * [xf_width, mult] (token j, channel c at c * mult + j). The tokens are the
 * encoder keys/values of every AttentionBlock; the mult image tokens are
 * always valid, the text tokens follow the token mask.
 *
 * Guidance (Text2ImProgressiveModel.forward): rows are [cond..., uncond...];
 * y of the unconditional rows is the learned `model.cf_param`. The guided
 * model runs the network on [x[:B], x[:B]], mixes eps as
 * uncond + s * (cond - uncond) for both halves and keeps each row's own
 * variance channels. */
#ifndef UNCLIP_DECODER_H
#define UNCLIP_DECODER_H

#include <stdint.h>

#include "formats/safetensors.h"
#include "libcommon/models/model.h"
#include "libcommon/sample/diffusion.h"

/* ---- the description ---- */

/* The released config (Karlo v1.0.alpha decoder_900M_vit_l) as stage
 * config JSON {"model": {"hparams": ...}, "diffusion": ...}; static. */
const char *uc_decoder_default_config(void);
/* Every tensor of a decoder of this stage config (NULL: the released one),
 * in load order, through the walk that loads it: the UNet under "model.",
 * then clip_emb, text_seq_proj, text_feat_proj, clip_tok_proj, cf_param.
 * 0, fn's first nonzero return, or -1 and uc_err on an invalid config. */
int uc_decoder_tensors(const char *config_json, uc_tensor_fn fn, void *ctx);

/* ---- the stage ---- */

typedef struct uc_decoder uc_decoder;

typedef struct {
    int image_size;     /* S: side of the samples */
    int clip_dim;       /* D: image embedding and text feature width */
    int clip_emb_mult;  /* image-embedding tokens */
    int xf_width;       /* token width */
    int text_ctx;       /* tokens per prompt the model was trained with */
    int model_channels; /* the UNet's base width */
    int out_channels;   /* 6 with learned variance, else 3 */
    uc_model_info model;
} uc_decoder_info;

/* Open a model file whose unclip.stage is "decoder"; NULL and uc_err. */
uc_decoder *uc_decoder_open(const char *path);
/* Bind the weights of f (borrowed: it must outlive the handle) for a stage
 * config (golden cases); every shape is checked. NULL and uc_err. */
uc_decoder *uc_decoder_load(st_file *f, const char *config_json);
void uc_decoder_free(uc_decoder *d);
const uc_decoder_info *uc_decoder_get_info(const uc_decoder *d);

/* Build the schedule of the model's diffusion config respaced by
 * `respacing` (NULL: the config's own) and keep it for sampling with the
 * same string. Returns its number of steps, or -1 and uc_err. */
int uc_decoder_steps(uc_decoder *d, const char *respacing);

/* The network (PLMImUNet.forward) on B rows of HxW:
 *   x [B, 3, H, W], t [B] original timesteps, txt_feat [B, D],
 *   txt_seq [B, ctx, D], mask [B, ctx] (nonzero = valid), y [B, D]
 *   -> out [B, out_channels, H, W].
 * Buffers are made for the first shape and kept until another comes. */
int uc_decoder_forward(uc_decoder *d, int64_t B, int64_t H, int64_t W, int64_t ctx, const float *x,
                       const double *t, const float *txt_feat, const float *txt_seq, const unsigned char *mask,
                       const float *y, float *out);
/* 2 * multiply-adds of one forward of `rows` rows of image_size^2 with ctx
 * text tokens, for benchmarks. */
double uc_decoder_flops(const uc_decoder *d, int64_t rows, int64_t ctx);
/* The same counting the multiplications done (uc_unet_flops_done). */
double uc_decoder_flops_done(const uc_decoder *d, int64_t rows, int64_t ctx);

/* Conditioning of a guided batch of 2B rows, [cond..., uncond...]. */
typedef struct {
    int64_t B;                 /* prompts (half the rows) */
    int64_t ctx;               /* text tokens per row */
    const float *txt_feat;     /* [2B, D] */
    const float *txt_seq;      /* [2B, ctx, D] */
    const unsigned char *mask; /* [2B, ctx] */
    const float *y;            /* [2B, D]: image embeddings then cf_param rows */
    const float *scales;       /* guidance scale: one, or one per prompt */
    int64_t nscales;           /* 1 or B */
} uc_decoder_cond;

/* y for the guided batch: img_feat [B, D] followed by B copies of
 * cf_param; y must hold 2B * D floats. */
int uc_decoder_guided_y(const uc_decoder *d, int64_t B, const float *img_feat, float *y);

/* Karlo's guided_model_fn on x [2B, 3, H, W] at original timesteps t[2B]:
 * out [2B, out_channels, H, W]. */
int uc_decoder_guided(uc_decoder *d, const uc_decoder_cond *c, int64_t H, int64_t W, const float *x,
                      const double *t, float *out);

/* Sample images: the guided loop of o->sampler (eta for DDIM) over the
 * schedule of o->respacing (uc_decoder_steps), clip_denoised, on 2B rows
 * of image_size^2. Noise draw 0 is x_T [2B, 3, S, S], draw k the noise of
 * step k-1. x receives the final 2B rows (the first B are the samples, in
 * [-1, 1] after clamping). o->trace and o->progress may be NULL. */
int uc_decoder_sample(uc_decoder *d, const uc_decoder_cond *c, const uc_stage_opts *o, float *x);

#endif
