/* model.h - model files (formats/MODEL.md): safetensors whose metadata
 * names the stage (unclip.stage), carries the stage config as JSON
 * (unclip.config) and optionally an id (unclip.model_id) and a checksum
 * (unclip.checksum). */
#ifndef UNCLIP_MODEL_H
#define UNCLIP_MODEL_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "formats/safetensors.h"

/* The sections of a stage config {"model": {"hparams": ...}, "diffusion":
 * ...}: hparams (NULL when absent) and diffusion, which must be an object. */
int uc_model_sections(const cJSON *config, const char *stage, const cJSON **hparams, const cJSON **diffusion);

/* Binds the weights of f (borrowed) to model for a stage config; -1 and
 * uc_err on failure. */
typedef int (*uc_model_load_fn)(void *model, st_file *f, const cJSON *config);

/* Open path as a model of `stage` ("a <what> model" in messages) and bind
 * it with load. Returns the file, which then belongs to the model, with
 * *id = unclip.model_id or the path and *checksum = unclip.checksum or "";
 * NULL and uc_err ("PATH: ...") when the file cannot be opened, is of
 * another stage, has no valid unclip.config or does not load. */
st_file *uc_model_open(const char *path, const char *stage, const char *what, uc_model_load_fn load, void *model,
                       const char **id, const char **checksum);

/* The checksum a record names the model by: unclip.checksum, else
 * "fnv1a64:" and the 16 hex digits of FNV-1a 64 over the safetensors
 * header (its 8 length bytes and its JSON). */
void uc_model_checksum(const st_file *f, char *out, size_t n);

/* The classifier-free guidance scale for a tool whose user gave no -g:
 * *guidance = the model file's metadata unclip.default_guidance (a decimal
 * number in (0, 1000]) when present, else fallback (Karlo's default).
 * -1 and uc_err when the value is not such a number. */
int uc_model_guidance(const st_file *f, double fallback, double *guidance);

/* The candidates per image for a decoder-diffuse user who gave no
 * --best-of: the model file's metadata unclip.default_best_of (an integer
 * in [1, 64]) when present, else 1. -1 and uc_err when it is not one. */
int uc_model_best_of(const st_file *f, long *best_of);

#endif
