/* prior.h - Karlo's diffusion prior (PriorDiffusionModel): a causal
 * transformer (PriorTransformer) that predicts the normalised CLIP image
 * embedding x_0 from a noisy one, the CLIP text embedding and the text
 * token sequence; sampled with classifier-free guidance on x_0.
 *
 * The weight tree is written once, as the walk behind uc_prior_tensors
 * (prior.c): every tensor's checkpoint key ("model." + PriorTransformer's
 * names, plus clip_mean / clip_std), its shape from the hyperparameters
 * and its half-precision storage dtype. The loader binds the weights
 * through that same walk, so what uc_prior_tensors lists is exactly what
 * a model file holds; it is the single source of the prior's weight tree.
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
 * everywhere; here the padding is simply absent.)
 *
 * A uc_prior owns the scratch memory of its steps (sized once per batch
 * shape) and the schedule of the last respacing it sampled with: use one
 * handle per thread. */
#ifndef UNCLIP_PRIOR_H
#define UNCLIP_PRIOR_H

#include <stdint.h>

#include "formats/safetensors.h"
#include "libcommon/models/model.h"
#include "libcommon/sample/diffusion.h"

typedef struct uc_prior uc_prior;

/* Hyperparameters (model.hparams of the config, checked against the
 * weights) and the model file's info. */
typedef struct {
    int text_ctx;  /* T: text tokens per prompt (77) */
    int width;     /* W: xf_width */
    int layers;    /* xf_layers */
    int heads;     /* xf_heads; W % heads == 0 */
    int clip_dim;  /* D: CLIP embedding size */
    int text_dim;  /* E: width of the token sequence (text_enc_proj input; D in Karlo) */
    int final_ln;  /* xf_final_ln */
    int has_stats; /* clip_mean / clip_std present (always after uc_prior_open) */
    uc_model_info model;
} uc_prior_info;

/* ---- the description ---- */

/* Every tensor of a prior for config_json (the stage config as
 * unclip.config holds it: {"model": {"hparams": {text_ctx, xf_width,
 * xf_layers, xf_heads, xf_final_ln, clip_dim[, text_dim]}}, ...}; NULL:
 * Karlo v1.0.alpha's prior_1B_vit_l), in a fixed order: name, shape and
 * the dtype a half-precision file stores it in (the converter's --f16
 * rule: linear weights and biases F16; norms, positional embedding,
 * prd_emb and clip_mean / clip_std F32). text_dim defaults to clip_dim. A
 * nonzero return of fn stops the walk and is returned; -1 and uc_err on an
 * invalid config. */
int uc_prior_tensors(const char *config_json, uc_tensor_fn fn, void *ctx);
/* Karlo's released prior config (configs/prior_1B_vit_l.yaml) as JSON. */
const char *uc_prior_default_config(void);

/* ---- opening ---- */

/* Bind the weights of f (borrowed: it must outlive the prior) for a stage
 * config (JSON text). Every weight's shape is checked against the config;
 * text_dim, when the config does not say it, is the width of
 * model.text_enc_proj.weight. clip_mean / clip_std are bound when the
 * file has them. NULL and uc_err on failure. */
uc_prior *uc_prior_load(st_file *f, const char *config_json);
/* Open a prior model file: unclip.stage must be "prior", unclip.config
 * present with a valid diffusion section, and clip_mean and clip_std are
 * required. NULL and uc_err ("PATH: ...") on failure. */
uc_prior *uc_prior_open(const char *path);
void uc_prior_free(uc_prior *p); /* also closes what uc_prior_open opened */
const uc_prior_info *uc_prior_get_info(const uc_prior *p);
/* Use these statistics (clip_dim floats each, copied) for de-normalising. */
int uc_prior_set_stats(uc_prior *p, const float *mean, const float *std);
/* Build (or keep) the schedule of the config's diffusion section under a
 * respacing (NULL: the section's timestep_respacing); *steps (may be NULL)
 * receives its number of steps. -1 and uc_err on a bad respacing. */
int uc_prior_schedule(uc_prior *p, const char *respacing, int *steps);

/* ---- the network ---- */

/* Keys and values of the text positions of P prompts in every layer. */
typedef struct uc_prior_text uc_prior_text;
/* text_emb [P, D], text_seq [P, T, E], mask [P, T] (nonzero = valid token). */
int uc_prior_text_new(const uc_prior *p, int64_t P, const float *text_emb, const float *text_seq,
                      const uint8_t *mask, uc_prior_text **out);
void uc_prior_text_free(uc_prior_text *t);
int64_t uc_prior_text_count(const uc_prior_text *t);

/* n rows, row r reading prompt prompt[r] of txt, with noisy (normalised)
 * embedding x[r] at original timestep t[r]; out [n, D] is the x_0
 * prediction. */
int uc_prior_forward(uc_prior *p, const uc_prior_text *txt, int64_t n, const int64_t *prompt, const float *x,
                     const int64_t *t, float *out);

/* Karlo's guided model function for n samples: one network pass over the
 * 2n rows [x with prompt cond[i] ..., x with prompt uncond[i] ...], then
 * out[i] = u + scale[i] (c - u). */
int uc_prior_guided(uc_prior *p, const uc_prior_text *txt, int64_t n, const int64_t *cond, const int64_t *uncond,
                    const float *scale, const float *x, const int64_t *t, float *out);

/* x * clip_std + clip_mean for n rows, in place. */
int uc_prior_denormalize(const uc_prior *p, int64_t n, float *x);

/* ---- sampling ---- */

/* What is sampled: n embeddings, sample i guided by prompt cond[i] of text
 * against its unconditional prompt uncond[i] with scale[i]. */
typedef struct {
    const uc_prior_text *text;
    int64_t n;
    const int64_t *cond;   /* [n] */
    const int64_t *uncond; /* [n] */
    const float *scale;    /* [n] */
} uc_prior_batch;

/* Sampling as PriorDiffusionModel.forward (the first half of its batch):
 * x_0 prediction, FIXED_SMALL or the diffusion's variance, denoised_fn
 * clamp(-10, 10), no clipping, o->sampler (DDIM with o->eta), guidance as
 * uc_prior_guided, then de-normalisation. The schedule is
 * uc_prior_schedule(p, o->respacing); noise draws are of n * D floats.
 * emb: n * D floats. */
int uc_prior_sample(uc_prior *p, const uc_stage_opts *o, const uc_prior_batch *b, float *emb);

#endif
