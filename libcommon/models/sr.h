/* sr.h - Karlo's super-resolution stage (ImprovedSupRes64to256ProgressiveModel):
 * two SuperResUNetModels of the same shape, `model_first_steps` for every
 * step but the last and `model_last_step` (fine-tuned with adversarial and
 * perceptual losses) for the final one. Each is a UNet (unet.h) without
 * attention, text or CLIP conditioning and without scale-shift norm, whose
 * input is cat[x_t, low_res] on channels (low_res already resized to the
 * output size) and whose output is eps. Sampling: ancestral steps over a
 * respacing (Karlo fixes "7"), fixed-small variance, x_0 clamped.
 *
 * What lives here: the one description of its weights (uc_sr_tensors) and
 * the stage handle (open, info, schedule, forward, sampling); the handle
 * owns its weights, its schedule and every buffer of a forward. */
#ifndef UNCLIP_SR_H
#define UNCLIP_SR_H

#include <stdint.h>

#include "formats/safetensors.h"
#include "libcommon/models/model.h"
#include "libcommon/sample/diffusion.h"

/* ---- the description ---- */

/* The released config (Karlo v1.0.alpha improved_sr_64_256_1.4B) as stage
 * config JSON {"model": {"hparams": ...}, "diffusion": ...}; static. */
const char *uc_sr_default_config(void);
/* Every tensor of an sr model of this stage config (NULL: the released
 * one), in load order, through the walk that loads it: the UNet under
 * "model_first_steps.", then under "model_last_step.". 0, fn's first
 * nonzero return, or -1 and uc_err on an invalid config. */
int uc_sr_tensors(const char *config_json, uc_tensor_fn fn, void *ctx);

/* ---- the stage ---- */

typedef struct uc_sr uc_sr;

typedef struct {
    int scale;        /* output side / input side (hparams.scale, default 4) */
    int channels;     /* the UNets' base width (hparams.channels) */
    int levels;       /* entries of channels_multiple: sides must be multiples of 2^(levels-1) */
    int out_channels; /* 6 with learned variance, else 3 */
    uc_model_info model;
} uc_sr_info;

/* Open a model file whose unclip.stage is "sr"; NULL and uc_err. */
uc_sr *uc_sr_open(const char *path);
/* Bind the weights of f (borrowed: it must outlive the handle) for a stage
 * config (golden cases). NULL and uc_err. */
uc_sr *uc_sr_load(st_file *f, const char *config_json);
void uc_sr_free(uc_sr *s);
const uc_sr_info *uc_sr_get_info(const uc_sr *s);

/* Build the schedule of the model's diffusion config respaced by
 * `respacing` (NULL: the config's own) and keep it for sampling with the
 * same string. Returns its number of steps, or -1 and uc_err. */
int uc_sr_steps(uc_sr *s, const char *respacing);

/* One network: x [B, 3, H, W], t [B] original timesteps, low_res
 * [B, 3, H, W] -> out [B, out_channels, H, W]; last picks model_last_step.
 * Buffers are made for the first shape and kept until another comes. When
 * the other network ran before, its weights' pages are given back first
 * (st_release), so an F32 file costs one UNet of memory, not two. */
int uc_sr_forward(uc_sr *s, int last, int64_t B, int64_t H, int64_t W, const float *x, const double *t,
                  const float *low_res, float *out);
/* Sample in tiles of tile x tile pixels (0: the whole picture, the
 * default): every network call of uc_sr_sample runs on the tiles, as one
 * batch or, when they hold more pixels than the larger of 2^18 and the
 * pictures, in equal batches of about that many at most. Along each side a tile
 * starts tile - overlap pixels after the one before, the last one ending
 * at the edge; a pixel that several tiles hold
 * gets the mean of their outputs weighted by how deep it lies in each
 * (1 at a tile's edge, rising to overlap + 1), so across an overlap the
 * tiles cross-fade (overlap 0: a plain mean). A model trained on crops of
 * that side sees what it was trained on: its group norms' statistics are
 * those of a crop, not of the whole picture. tile must be a multiple of
 * 2^(levels-1) and overlap in [0, tile / 2]; -1 and uc_err if not. */
int uc_sr_set_tile(uc_sr *s, int tile, int overlap);
/* Bytes a sample of B images of HxW allocates (workspace and buffers). */
double uc_sr_bytes(const uc_sr *s, int64_t B, int64_t H, int64_t W);
/* 2 * multiply-adds of one forward of B images of HxW, for benchmarks:
 * counted as direct convolution, and as done (Winograd's fewer; as
 * uc_unet_flops_done). */
double uc_sr_flops(const uc_sr *s, int64_t B, int64_t H, int64_t W);
double uc_sr_flops_done(const uc_sr *s, int64_t B, int64_t H, int64_t W);

/* Sample x [B, 3, H, W] (in [-1, 1] up to the last step's noise-free mean)
 * given low_res [B, 3, H, W] at the output size, by o->sampler (Karlo:
 * DDPM) over the schedule of o->respacing. Noise draw 0 is x_T, draw k the
 * noise of step k-1. */
int uc_sr_sample(uc_sr *s, int64_t B, int64_t H, int64_t W, const float *low_res, const uc_stage_opts *o,
                 float *x);

#endif
