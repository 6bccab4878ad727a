/* model_file.h - the models/ layer's side of model files: the one open
 * every stage uses, the config sections, and config number parsing. Only
 * files in libcommon/models/ include this (it exposes cJSON); tools see
 * model.h and each stage's header. */
#ifndef UNCLIP_MODEL_FILE_H
#define UNCLIP_MODEL_FILE_H

#include <cjson/cJSON.h>

#include "formats/safetensors.h"
#include "libcommon/models/model.h"

/* The sections of a stage config {"model": {"hparams": ...}, "diffusion":
 * ...}: hparams (NULL when absent) and diffusion, which must be an object. */
int uc_model_sections(const cJSON *config, const char *stage, const cJSON **hparams, const cJSON **diffusion);

/* Binds the weights of f (borrowed) to model for a stage config; -1 and
 * uc_err on failure. */
typedef int (*uc_model_load_fn)(void *model, st_file *f, const cJSON *config);

/* Open path as a model of `stage` ("a <what> model" in messages), check
 * unclip.stage, parse unclip.config and bind it with load. On success the
 * file belongs to the model and info is filled (uc_model_info_fill); NULL
 * and uc_err ("PATH: ...") when the file cannot be opened, is of another
 * stage, has no valid unclip.config, has bad sampling defaults or does not
 * load. */
st_file *uc_model_open(const char *path, const char *stage, const char *what, uc_model_load_fn load, void *model,
                       uc_model_info *info);

/* info of an open file: stage, path (st_path), id, checksum, the CLIPs it
 * pairs with and sampling defaults from its metadata (with
 * uc_model_verify on, the checksum recomputed). -1 and uc_err naming the
 * file and the metadata key on a bad default, a malformed unclip.clip or a
 * checksum that the data does not have. */
int uc_model_info_fill(const st_file *f, const char *stage, uc_model_info *info);

/* An integer list as configs write it: a JSON array of numbers, one
 * number, or a comma-separated string ("1,2,3,4"; "" is empty). Returns the
 * count, or -1 and uc_err naming `what`. */
int uc_cfg_int_list(const cJSON *v, const char *what, int *out, int max);
/* A number (or boolean) at key of obj: dflt when absent; -1 and uc_err
 * naming the key when it is not a number or not an integer in lo..hi. */
int uc_cfg_int(const cJSON *obj, const char *key, int dflt, int lo, int hi, int *out);

#endif
