/* unet.h - the GLIDE-style diffusion UNet of Karlo (karlo/modules/unet.py
 * UNetModel), shared by the 64px decoder (PLMImUNet, decoder.h) and the
 * super-resolution models (SuperResUNetModel, sr.h).
 *
 * Structure (guided-diffusion): conv_in; per level `num_res_blocks`
 * ResBlocks (+ AttentionBlock where the downsample factor is in
 * attention_ds), then a down-sampling ResBlock (resblock_updown) or a
 * Downsample layer; a middle ResBlock, [AttentionBlock], ResBlock; output
 * blocks in reverse, each taking cat[h, skip] on channels; GroupNorm(32) +
 * SiLU + conv_out. Weights are named exactly as the checkpoint keys under a
 * prefix ("model.", "model_first_steps.", ...).
 *
 * What lives here: the UNet's config, its weight tree (one walk that binds
 * or lists it, models/walk.h), the workspace plan and the forward. The
 * kernels are nn/'s: convolution (nn/conv.h: Winograd F(4x4, 3x3) for 3x3
 * stride-1 maps with enough tiles, im2col GEMMs otherwise), GroupNorm
 * fused with FiLM and SiLU (nn/norm.h), GEMM and softmax (nn/ops.h).
 *
 * Activations are held channel-major with the batch inside each channel
 * ([C, B, H, W]) so one GEMM covers the whole batch. All scratch memory
 * (activations, skips, convolution scratch, attention, the time
 * embedding's) lives in a uc_unet_ws allocated once per shape. */
#ifndef UNCLIP_UNET_H
#define UNCLIP_UNET_H

#include <stdint.h>

#include "formats/safetensors.h"
#include "libcommon/models/model.h"

#define UC_UNET_MAXLEVEL 8

typedef struct {
    int in_channels;                      /* image channels in (SR: 2 x 3) */
    int model_channels;                   /* base width C; time embedding is 4C */
    int out_channels;                     /* 3, or 6 with learned variance */
    int num_res_blocks;                   /* ResBlocks per level */
    int nlevels;                          /* entries of channel_mult */
    int channel_mult[UC_UNET_MAXLEVEL];   /* width of level l = mult[l] * C */
    int attn_ds[UC_UNET_MAXLEVEL * 2];    /* downsample factors with attention */
    int nattn;
    int num_heads;                        /* when num_head_channels == -1 */
    int num_head_channels;                /* -1, or channels per head */
    int num_heads_upsample;               /* output blocks (-1: num_heads) */
    int use_scale_shift_norm;             /* FiLM: norm(h) * (1 + scale) + shift */
    int resblock_updown;                  /* ResBlocks resample (else Down/Upsample layers) */
    int conv_resample;                    /* Down/Upsample layers carry a 3x3 conv */
    int use_middle_attention;             /* AttentionBlock in the middle block */
    int encoder_channels;                 /* width of the text tokens (0: none) */
} uc_unet_config;

/* Default flags of UNetModel's constructor (conv_resample on, middle
 * attention on, num_heads 1, everything else off). */
void uc_unet_config_default(uc_unet_config *cfg);

typedef struct uc_unet uc_unet;

/* Bind the weights `prefix`+key of f (shapes checked against cfg). The model
 * borrows f's memory: keep f open while the model lives. NULL and uc_err on
 * a missing or mismatched tensor, or an invalid config. */
uc_unet *uc_unet_load(st_file *f, const char *prefix, const uc_unet_config *cfg);
void uc_unet_free(uc_unet *u);
/* Free the network's cached Winograd weight transforms (their bytes go back
 * to the process's budget; the next forward makes them again). */
void uc_unet_drop_transforms(uc_unet *u);
/* Every tensor a model of cfg has, in load order, reported as
 * fn(ctx, prefix + key, ndim, shape, dtype) by the walk that also loads
 * (models/walk.h; dtype as there). 0, fn's first nonzero return, or -1
 * and uc_err on an invalid config. */
int uc_unet_tensors(const uc_unet_config *cfg, const char *prefix, uc_tensor_fn fn, void *ctx);
const uc_unet_config *uc_unet_cfg(const uc_unet *u);
/* Width of the time embedding (4 * model_channels). */
int64_t uc_unet_emb_dim(const uc_unet *u);
/* Total factor by which the deepest level is downsampled (2^(levels-1)):
 * image sides must be multiples of it. */
int64_t uc_unet_stride(const uc_unet *u);
/* Multiply-add count of one forward over B images of HxW with L text
 * tokens, times 2 (FLOPs), for progress and benchmarks. */
double uc_unet_flops(const uc_unet *u, int64_t B, int64_t H, int64_t W, int64_t L);
/* The same with the 3x3 convolutions that run by Winograd counted as the
 * products they do (36 per 4x4 tile where direct does 144). */
double uc_unet_flops_done(const uc_unet *u, int64_t B, int64_t H, int64_t W, int64_t L);

/* Scratch for forwards of a given shape: B images of H x W, L encoder
 * tokens (0 without text). Usable by every model of the same config. */
typedef struct uc_unet_ws uc_unet_ws;
uc_unet_ws *uc_unet_ws_new(const uc_unet *u, int64_t B, int64_t H, int64_t W, int64_t L);
void uc_unet_ws_free(uc_unet_ws *ws);
/* Bytes uc_unet_ws_new allocates for that shape (it refuses a shape whose
 * workspace does not fit the memory budget, formats/base.h). */
double uc_unet_ws_bytes(const uc_unet *u, int64_t B, int64_t H, int64_t W, int64_t L);
/* True when ws (may be NULL) was made for u's config and this shape. */
int uc_unet_ws_fits(const uc_unet_ws *ws, const uc_unet *u, int64_t B, int64_t H, int64_t W, int64_t L);

/* emb[B, 4C] = time_embed(timestep_embedding(t[B], C)): linear, SiLU,
 * linear, for the B of ws (made for u's config), in ws's scratch. */
void uc_unet_time_embed(const uc_unet *u, uc_unet_ws *ws, const double *t, float *emb);

/* One forward.
 *   x    [B, in_channels, H, W]  (NCHW, as the checkpoint's conv weights expect)
 *   emb  [B, 4C]                 the full conditioning embedding
 *   enc  [encoder_channels, B, L] text tokens, channel-major (NULL when L == 0)
 *   mask [B, L]                  additive key bias for the tokens (0 or -inf), or NULL
 *   out  [B, out_channels, H, W]
 * ws must have been made for this config and (B, H, W, L). */
int uc_unet_forward(const uc_unet *u, uc_unet_ws *ws, const float *x, const float *emb, const float *enc,
                    const float *mask, float *out);

#endif
