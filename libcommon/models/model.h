/* model.h - model files (formats/MODEL.md), one open for every stage, and
 * the one description of each stage's weights.
 *
 * A model file is safetensors whose metadata names the stage
 * (unclip.stage), carries the stage config as JSON (unclip.config) and
 * optionally an id (unclip.model_id), a checksum (unclip.checksum), the
 * CLIPs it pairs with (unclip.clip) and sampling defaults
 * (unclip.default_guidance, unclip.default_best_of).
 * Every stage opener (clip, prior, decoder, sr) goes through
 * uc_model_open and exposes the same uc_model_info. */
#ifndef UNCLIP_MODEL_H
#define UNCLIP_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "formats/safetensors.h"

/* What a tool needs to know of an open model file, the same for every
 * stage. The strings live as long as the model. */
typedef struct {
    const char *stage;       /* "clip", "prior", "decoder" or "sr" */
    const char *path;        /* as opened */
    const char *id;          /* unclip.model_id, else the file name */
    char checksum[80];       /* what the file claims, unclip.checksum (not recomputed), else
                                "fnv1a64:" + 16 hex digits of FNV-1a 64 over the safetensors
                                header (length + JSON: names, shapes, metadata, not the
                                weights); with uc_model_verify(1), "sha256:" + the digest
                                of the tensor data, recomputed at open */
    int verified;            /* 1: checksum was recomputed from the tensor data at open
                                (and equals unclip.checksum where the file has one) */
    const char *clip;        /* unclip.clip: the CLIPs whose embeddings this model takes,
                                model ids or checksums separated by single spaces; NULL
                                when the file declares none */
    double default_guidance; /* unclip.default_guidance in (0, 1000], 0 when absent */
    int default_best_of;     /* unclip.default_best_of in [1, 64], 0 when absent */
    int default_tile;        /* unclip.default_tile in [1, 4096], 0 when absent */
    const char *vocabulary;  /* unclip.vocabulary: the words the model was trained on,
                                separated by spaces, or NULL when it does not say */
} uc_model_info;

/* Whether every later open (of any stage) recomputes the SHA-256 of the
 * file's tensor data, in name order (the digest the converter and the
 * trainer write as unclip.checksum): off by default, since it reads every
 * byte of the weights (seconds for a released model; the open is
 * otherwise milliseconds). A file whose unclip.checksum differs is then
 * refused ("PATH: metadata unclip.checksum ..."). Tools turn it on with
 * --verify. */
void uc_model_verify(int on);

/* 1 when a record's CLIP (its models.clip id and checksum, either may be
 * NULL) is one m pairs with: an entry of m->clip equals the id or the
 * checksum; also 1 when m declares no CLIP. */
int uc_model_pairs(const uc_model_info *m, const char *clip_id, const char *clip_checksum);

/* ---- the one description of each stage's weights ---- */

/* One tensor of a stage: its exact checkpoint key, shape and the dtype a
 * half-precision file stores it in ("F16" for matrices and convolutions,
 * "F32" for what stays full precision: norms, biases where upstream keeps
 * them, embeddings, logit_scale, statistics). */
typedef int (*uc_tensor_fn)(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype);

/* Walk every tensor a model of `stage` has for a config, in a fixed order,
 * calling fn for each (a nonzero return stops the walk and is returned).
 * config_json: the stage config as unclip.config holds it (and
 * unclip-convert --config takes it); NULL: the released sizes (Karlo
 * v1.0.alpha, OpenAI ViT-L/14). -1 and uc_err on an unknown stage or an
 * invalid config. The loaders bind weights through the same walk, so
 * what this lists is exactly what a model file must hold. */
int uc_stage_tensors(const char *stage, const char *config_json, uc_tensor_fn fn, void *ctx);
/* uc_stage_tensors dispatches to each stage's own description, which its
 * header declares with the same signature: uc_clip_tensors, uc_prior_tensors,
 * uc_decoder_tensors, uc_sr_tensors (and uc_<stage>_default_config). */
/* The released config of a stage as JSON text (static storage), or NULL. */
const char *uc_stage_default_config(const char *stage);

/* Opening is done by each stage's open function (clip.h, prior.h,
 * decoder.h, sr.h) through model_file.h, which only the models/ layer
 * includes; each fills a uc_model_info. */

#endif
