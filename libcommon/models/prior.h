/* prior.h - Karlo's diffusion prior (PriorDiffusionModel): a causal
 * transformer (PriorTransformer) that predicts the normalised CLIP image
 * embedding x_0 from a noisy one, the CLIP text embedding and the text
 * token sequence; sampled with classifier-free guidance on x_0.
 *
 * Sequence per row (text_ctx + 4 positions): the projected text tokens, the
 * projected text embedding, the time embedding, the projected x_t and a
 * learned query (prd_emb), plus a learned positional embedding; padding
 * tokens are masked as keys, attention is causal, and the output is read at
 * the last position.
 *
 * Because attention is causal, the text positions never see x_t or t: their
 * keys and values in every layer are the same at every diffusion step.
 * uc_prior_text computes them once per prompt; each step then runs only the
 * three step tokens of each row (one GEMM per linear layer over all rows).
 * Padding positions are dropped outright: they are masked as keys for every
 * query, so they cannot reach any valid position. Both are exact rewrites
 * of the upstream forward. (One difference: a mask whose first token is
 * padding makes upstream's first query attend to nothing and gives NaN
 * everywhere; here the padding is simply absent.) */
#ifndef UNCLIP_PRIOR_H
#define UNCLIP_PRIOR_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "formats/safetensors.h"
#include "libcommon/models/model.h"
#include "libcommon/sample/diffusion.h"

typedef struct {
    const float *ln_1_w, *ln_1_b;         /* [W] */
    const float *c_qkv_w, *c_qkv_b;       /* [3W, W], [3W]: per head [q k v], dh each */
    const float *c_proj_w, *c_proj_b;     /* [W, W], [W] */
    const float *ln_2_w, *ln_2_b;         /* [W] */
    const float *c_fc_w, *c_fc_b;         /* [4W, W], [4W] */
    const float *mlp_proj_w, *mlp_proj_b; /* [W, 4W], [W] (mlp.c_proj) */
} uc_prior_block;

typedef struct {
    /* hyperparameters: model.hparams, checked against the weights */
    int text_ctx; /* T: text tokens per prompt (77) */
    int width;    /* W: xf_width */
    int layers;   /* xf_layers */
    int heads;    /* xf_heads; W % heads == 0 */
    int clip_dim; /* D: CLIP embedding size */
    int text_dim; /* E: width of the token sequence (text_enc_proj input; D in Karlo) */
    int final_ln; /* xf_final_ln */
    /* weights, borrowed from the safetensors file (keys "model." + name) */
    const float *time_embed_0_w, *time_embed_0_b;   /* [W, W], [W] */
    const float *time_embed_2_w, *time_embed_2_b;   /* [W, W], [W] */
    const float *text_enc_proj_w, *text_enc_proj_b; /* [W, E], [W] */
    const float *text_emb_proj_w, *text_emb_proj_b; /* [W, D], [W] */
    const float *clip_img_proj_w, *clip_img_proj_b; /* [W, D], [W] */
    const float *out_proj_w, *out_proj_b;           /* [D, W], [D] */
    const float *positional_embedding;              /* [T + 4, W] */
    const float *prd_emb;                           /* [W] */
    const float *final_ln_w, *final_ln_b;           /* [W], or NULL without xf_final_ln */
    uc_prior_block *blocks;                         /* [layers], owned */
    const float *clip_mean, *clip_std;              /* [D] de-normalisation (tensors clip_mean,
                                                       clip_std), or NULL when absent */
    /* filled by uc_prior_open */
    st_file *file;         /* owned */
    cJSON *config;         /* owned: parsed unclip.config */
    uc_model_info info;    /* id, checksum, sampling defaults */
} uc_prior;

/* Load the weights from an open file given the stage config
 * ({"model": {"hparams": {...}}, "diffusion": {...}}). Hyperparameters
 * come from the config and every weight shape is checked against them.
 * Borrows f (it must outlive p); clip_mean / clip_std are taken when the
 * file has them. */
int uc_prior_load(uc_prior *p, st_file *f, const cJSON *config);
/* Open a prior model file: metadata unclip.stage must be "prior" and
 * unclip.config present; clip_mean and clip_std are required. */
int uc_prior_open(uc_prior *p, const char *path);
void uc_prior_free(uc_prior *p); /* also closes what uc_prior_open opened */

/* Keys and values of the text positions of P prompts in every layer. */
typedef struct uc_prior_text uc_prior_text;
/* text_emb [P, D], text_seq [P, T, E], mask [P, T] (nonzero = valid token). */
int uc_prior_text_new(const uc_prior *p, int64_t P, const float *text_emb, const float *text_seq,
                      const uint8_t *mask, uc_prior_text **out);
void uc_prior_text_free(uc_prior_text *t);
int64_t uc_prior_text_count(const uc_prior_text *t);

/* The network: n rows, row r reading prompt prompt[r] of txt, with noisy
 * (normalised) embedding x[r] at original timestep t[r]; out [n, D] is the
 * x_0 prediction. */
int uc_prior_forward(const uc_prior *p, const uc_prior_text *txt, int64_t n, const int64_t *prompt,
                     const float *x, const int64_t *t, float *out);

/* Karlo's guided model function for n samples: one network pass over the
 * 2n rows [x with prompt cond[i] ..., x with prompt uncond[i] ...], then
 * out[i] = u + scale[i] (c - u). */
int uc_prior_guided(const uc_prior *p, const uc_prior_text *txt, int64_t n, const int64_t *cond,
                    const int64_t *uncond, const float *scale, const float *x, const int64_t *t, float *out);

/* x * clip_std + clip_mean for n rows, in place. */
int uc_prior_denormalize(const uc_prior *p, int64_t n, float *x);

/* Sampling of n embeddings as PriorDiffusionModel.forward (the first half of
 * its batch): x_0 prediction, FIXED_SMALL or the diffusion's variance,
 * denoised_fn clamp(-10, 10), no clipping, DDPM or DDIM (eta 0), guidance
 * as uc_prior_guided, then de-normalisation. */
typedef struct {
    const uc_diffusion *diffusion;
    uc_sampler sampler;
    const uc_prior_text *text;
    int64_t n;             /* samples */
    const int64_t *cond;   /* [n] prompt index of each sample's text */
    const int64_t *uncond; /* [n] prompt index of its unconditional text */
    const float *scale;    /* [n] guidance scale */
    uc_noise_fn noise;     /* draws of n * D floats: x_T, then one per step */
    void *noise_ctx;
    uc_trace_fn trace; /* optional, also serves as progress */
    void *trace_ctx;
} uc_prior_sample_opts;

/* emb: n * D floats, de-normalised CLIP image embeddings. */
int uc_prior_sample(const uc_prior *p, const uc_prior_sample_opts *o, float *emb);

#endif
