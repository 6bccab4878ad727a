/* spec_tmp.h - TEMPORARY (branch spec-consumers): stand-ins for the stages'
 * descriptions (uc_clip_tensors, uc_prior_tensors with model.h's signature,
 * uc_decoder_tensors/uc_sr_tensors with it, the default configs) until the
 * branches api-clip-prior and api-unet land; removed when they are merged. */
#ifndef UNCLIP_SPEC_TMP_H
#define UNCLIP_SPEC_TMP_H

#include "libcommon/models/model.h"

int uc_tmp_clip_tensors(const char *config_json, uc_tensor_fn fn, void *ctx);
int uc_tmp_prior_tensors(const char *config_json, uc_tensor_fn fn, void *ctx);
int uc_tmp_decoder_tensors(const char *config_json, uc_tensor_fn fn, void *ctx);
int uc_tmp_sr_tensors(const char *config_json, uc_tensor_fn fn, void *ctx);
const char *uc_tmp_clip_default_config(void);
const char *uc_tmp_prior_default_config(void);
const char *uc_tmp_decoder_default_config(void);
const char *uc_tmp_sr_default_config(void);

#ifndef UC_SPEC_TMP_IMPL /* include after the stage headers */
#define uc_clip_tensors uc_tmp_clip_tensors
#define uc_prior_tensors uc_tmp_prior_tensors
#define uc_decoder_tensors uc_tmp_decoder_tensors
#define uc_sr_tensors uc_tmp_sr_tensors
#define uc_clip_default_config uc_tmp_clip_default_config
#define uc_prior_default_config uc_tmp_prior_default_config
#define uc_decoder_default_config uc_tmp_decoder_default_config
#define uc_sr_default_config uc_tmp_sr_default_config
#endif

#endif
