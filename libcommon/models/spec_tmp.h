/* spec_tmp.h - TEMPORARY (branch spec-consumers): stand-ins for CLIP's and
 * the prior's descriptions (uc_clip_tensors, uc_prior_tensors with model.h's
 * signature, their default configs) until the branch api-clip-prior lands;
 * removed when it is merged. */
#ifndef UNCLIP_SPEC_TMP_H
#define UNCLIP_SPEC_TMP_H

#include "libcommon/models/model.h"

int uc_tmp_clip_tensors(const char *config_json, uc_tensor_fn fn, void *ctx);
int uc_tmp_prior_tensors(const char *config_json, uc_tensor_fn fn, void *ctx);
const char *uc_tmp_clip_default_config(void);
const char *uc_tmp_prior_default_config(void);

#ifndef UC_SPEC_TMP_IMPL /* include after the stage headers */
#define uc_clip_tensors uc_tmp_clip_tensors
#define uc_prior_tensors uc_tmp_prior_tensors
#define uc_clip_default_config uc_tmp_clip_default_config
#define uc_prior_default_config uc_tmp_prior_default_config
#endif

#endif
