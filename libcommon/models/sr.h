/* sr.h - Karlo's super-resolution stage (ImprovedSupRes64to256ProgressiveModel):
 * two SuperResUNetModels of the same shape, `model_first_steps` for every
 * step but the last and `model_last_step` (fine-tuned with adversarial and
 * perceptual losses) for the final one. Each is a UNet (unet.h) without
 * attention, text or CLIP conditioning and without scale-shift norm, whose
 * input is cat[x_t, low_res] on channels (low_res already resized to the
 * output size) and whose output is eps. Sampling: ancestral steps over a
 * respacing (Karlo fixes "7"), fixed-small variance, x_0 clamped. */
#ifndef UNCLIP_SR_H
#define UNCLIP_SR_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "formats/safetensors.h"
#include "libcommon/sample/diffusion.h"
#include "libcommon/models/model.h"
#include "libcommon/models/unet.h"

typedef struct {
    uc_unet_config unet; /* both models: hparams channels, depth, channels_multiple */
    int scale;           /* output side / input side (hparams.scale, default 4) */
} uc_sr_config;

typedef struct {
    uc_sr_config cfg;
    uc_unet *first;   /* keys "model_first_steps." + UNetModel names */
    uc_unet *last;    /* keys "model_last_step." + UNetModel names */
    cJSON *diffusion; /* owned copy of the config's diffusion section */
    uc_unet_ws *ws;   /* scratch shared by both models */
    /* filled by uc_sr_open */
    st_file *file;        /* owned */
    uc_model_info info;   /* id, checksum */
} uc_sr;

/* Hyperparameters from model.hparams (and diffusion.learn_sigma, which
 * doubles the output channels). */
int uc_sr_config_parse(const cJSON *hparams, const cJSON *diffusion, uc_sr_config *cfg);
/* Bind the weights of f (borrowed) for {"model": {"hparams"}, "diffusion"}. */
int uc_sr_load(uc_sr *s, st_file *f, const cJSON *config);
/* Every tensor of an sr model of this stage config (for writers of model
 * files); -1 and uc_err on an invalid config. */
int uc_sr_tensors(const cJSON *config, uc_unet_tensor_fn fn, void *ctx);
/* Open a model file whose unclip.stage is "sr". */
int uc_sr_open(uc_sr *s, const char *path);
void uc_sr_free(uc_sr *s);

/* One network: x [B, 3, H, W], t [B] original timesteps, low_res
 * [B, 3, H, W] -> out [B, out_channels, H, W]; last picks model_last_step. */
int uc_sr_forward(uc_sr *s, int last, int64_t B, int64_t H, int64_t W, const float *x, const double *t,
                  const float *low_res, float *out);

typedef struct {
    const char *respacing; /* "7" */
    uc_noise_fn noise;     /* draw 0: x_T [B, 3, H, W]; draw k: noise of step k-1 */
    void *noise_ctx;
    uc_trace_fn trace; /* optional */
    void *trace_ctx;
    void (*progress)(void *ctx, int done, int total); /* optional */
    void *progress_ctx;
    const uc_edit *edit; /* optional: inpainting (diffusion.h) */
} uc_sr_sample_opts;

/* Sample x [B, 3, H, W] (in [-1, 1] up to the last step's noise-free mean)
 * given low_res [B, 3, H, W] at the output size. */
int uc_sr_sample(uc_sr *s, int64_t B, int64_t H, int64_t W, const float *low_res, const uc_sr_sample_opts *o,
                 float *x);

#endif
