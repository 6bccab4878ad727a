/* gc.h - the golden runner's case API. A case is a directory with
 * case.json, io.safetensors and (when a model is involved) model.safetensors
 * (tests/golden/FORMAT.md). A handler builds whatever the case describes from
 * its `config` and the weight shapes, computes the outputs and compares them
 * with gc_check; it knows nothing about a particular case's sizes. */
#ifndef UNCLIP_GC_H
#define UNCLIP_GC_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "formats/safetensors.h"

typedef struct {
    const char *dir, *family, *name;
    cJSON *json;         /* case.json */
    const cJSON *config; /* json.config (never NULL: an empty object if absent) */
    st_file *io;         /* io.safetensors, or NULL */
    st_file *model;      /* model.safetensors, or NULL */
    double atol, rtol;   /* json.tolerance */
    double max_err;      /* largest |got - want| seen by gc_check */
    char fail[1024];     /* first failure */
    const char *vocab;   /* path of bpe_simple_vocab_16e6.txt.gz (may not exist) */
} gc_case;

typedef int (*gc_handler)(gc_case *c);

/* Inputs from io.safetensors, widened; caller frees with uc_free. NULL (and
 * a failure recorded) when missing. shape may be NULL. */
float *gc_f32(gc_case *c, const char *name, uc_tensor *shape);
int64_t *gc_i64(gc_case *c, const char *name, uc_tensor *shape);
/* Compare got[n] with io tensor `name` (element count must match). */
int gc_check(gc_case *c, const char *name, const float *got, int64_t n);
int gc_check_tol(gc_case *c, const char *name, const float *got, int64_t n, double atol, double rtol);
/* Exact comparison of integers. */
int gc_check_i64(gc_case *c, const char *name, const int64_t *got, int64_t n);
/* Record a failure (first one wins); returns -1. */
int gc_fail(gc_case *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Config helpers: number / string / int-list at a dotted path ("model.hparams.xf_width");
 * dflt (or NULL / -1) when absent. */
double gc_num(const cJSON *j, const char *path, double dflt);
const char *gc_str(const cJSON *j, const char *path, const char *dflt);
const cJSON *gc_get(const cJSON *j, const char *path);

/* Handlers, one per case kind, in the files that own each model family. */
int gc_clip_tokenizer(gc_case *c);
int gc_clip_text(gc_case *c);
int gc_clip_image(gc_case *c);
int gc_clip_logits(gc_case *c);
int gc_clip_preprocess(gc_case *c);
int gc_karlo_clip_text(gc_case *c);
int gc_layout_hf_clip(gc_case *c);
int gc_diffusion_schedule(gc_case *c);
int gc_prior_forward(gc_case *c);
int gc_prior_sample(gc_case *c);
int gc_decoder_forward(gc_case *c);
int gc_decoder_sample(gc_case *c);
int gc_sr_resize(gc_case *c);
int gc_sr_forward(gc_case *c);
int gc_sr_sample(gc_case *c);

#endif
