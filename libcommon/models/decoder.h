/* decoder.h - Karlo's 64px decoder (Text2ImProgressiveModel around
 * PLMImUNet): a GLIDE-style UNet (unet.h) conditioned on a CLIP image
 * embedding and the CLIP text features, sampled with classifier-free
 * guidance on eps and learned-range variance.
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

#include <cjson/cJSON.h>
#include <stdint.h>

#include "formats/safetensors.h"
#include "libcommon/sample/diffusion.h"
#include "libcommon/models/model.h"
#include "libcommon/models/unet.h"

typedef struct {
    uc_unet_config unet; /* the UNet built from model.hparams */
    int image_size;      /* side of the samples (hparams.image_size) */
    int clip_dim;        /* D: image embedding and text feature width */
    int clip_emb_mult;   /* image-embedding tokens */
    int xf_width;        /* token width (encoder_channels) */
    int text_ctx;        /* tokens per prompt the model was trained with */
} uc_decoder_config;

typedef struct {
    uc_decoder_config cfg;
    uc_unet *unet;                          /* keys "model." + UNetModel names */
    const float *clip_emb_w, *clip_emb_b;   /* clip_emb: [4C, D], [4C] */
    const float *seq_proj_w, *seq_proj_b;   /* text_seq_proj.0: [xf, D], [xf] */
    const float *seq_ln_w, *seq_ln_b;       /* text_seq_proj.1 (LayerNorm): [xf], [xf] */
    const float *feat_proj_w, *feat_proj_b; /* text_feat_proj: [4C, D], [4C] */
    const float *tok_proj_w, *tok_proj_b;   /* clip_tok_proj: [xf * mult, D], [xf * mult] */
    const float *cf_param;                  /* cf_param: [D], y of unconditional rows */
    cJSON *diffusion;                       /* owned copy of the config's diffusion section */
    uc_unet_ws *ws;                         /* scratch of the last forward's shape */
    /* filled by uc_decoder_open */
    st_file *file;        /* owned */
    uc_model_info info;   /* id, checksum, sampling defaults */
} uc_decoder;

/* Hyperparameters from model.hparams of Karlo's decoder yaml (as JSON). */
int uc_decoder_config_parse(const cJSON *hparams, uc_decoder_config *cfg);
/* Bind the weights of f (borrowed; it must outlive d) for the stage config
 * {"model": {"hparams": ...}, "diffusion": ...}; every shape is checked. */
int uc_decoder_load(uc_decoder *d, st_file *f, const cJSON *config);
/* Every tensor of a decoder of this stage config (names and shapes, for
 * writers of model files); -1 and uc_err on an invalid config. */
int uc_decoder_tensors(const cJSON *config, uc_unet_tensor_fn fn, void *ctx);
/* Open a model file whose unclip.stage is "decoder". */
int uc_decoder_open(uc_decoder *d, const char *path);
void uc_decoder_free(uc_decoder *d);

/* The network (PLMImUNet.forward) on B rows of HxW:
 *   x [B, 3, H, W], t [B] original timesteps, txt_feat [B, D],
 *   txt_seq [B, ctx, D], mask [B, ctx] (nonzero = valid), y [B, D]
 *   -> out [B, out_channels, H, W]. */
int uc_decoder_forward(uc_decoder *d, int64_t B, int64_t H, int64_t W, int64_t ctx, const float *x,
                       const double *t, const float *txt_feat, const float *txt_seq, const unsigned char *mask,
                       const float *y, float *out);

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

/* Sample images: the guided p_sample loop (or DDIM) over `respacing` of the
 * model's diffusion config, clip_denoised, on 2B rows of image_size^2.
 * Noise draw 0 is x_T [2B, 3, S, S], draw k the noise of step k-1. x
 * receives the final 2B rows (the first B are the samples, in [-1, 1]
 * after clamping). trace may be NULL. */
typedef struct {
    const char *respacing; /* "25", "ddim50", ... */
    uc_sampler sampler;
    float eta;
    uc_noise_fn noise;
    void *noise_ctx;
    uc_trace_fn trace;
    void *trace_ctx;
    void (*progress)(void *ctx, int done, int total); /* optional, after each step */
    void *progress_ctx;
    const uc_edit *edit; /* optional: inpainting (diffusion.h) */
} uc_decoder_sample_opts;

int uc_decoder_sample(uc_decoder *d, const uc_decoder_cond *c, const uc_decoder_sample_opts *o, float *x);

#endif
