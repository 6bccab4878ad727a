/* registry.c - the one description walk of every stage (model.h): by stage
 * name, to the stage's own description (clip.h, prior.h, decoder.h, sr.h). */
#include <string.h>

#include "formats/base.h"
#include "libcommon/models/clip.h"
#include "libcommon/models/decoder.h"
#include "libcommon/models/model.h"
#include "libcommon/models/prior.h"
#include "libcommon/models/sr.h"

static const struct {
    const char *stage;
    int (*tensors)(const char *config_json, uc_tensor_fn fn, void *ctx);
    const char *(*default_config)(void);
} stages[] = {
    {"clip", uc_clip_tensors, uc_clip_default_config},
    {"prior", uc_prior_tensors, uc_prior_default_config},
    {"decoder", uc_decoder_tensors, uc_decoder_default_config},
    {"sr", uc_sr_tensors, uc_sr_default_config},
};

int uc_stage_tensors(const char *stage, const char *config_json, uc_tensor_fn fn, void *ctx)
{
    for (size_t i = 0; stage && i < UC_COUNT(stages); i++)
        if (strcmp(stage, stages[i].stage) == 0)
            return stages[i].tensors(config_json, fn, ctx);
    return uc_err("unknown stage \"%s\" (clip, prior, decoder or sr)", stage ? stage : "");
}

const char *uc_stage_default_config(const char *stage)
{
    for (size_t i = 0; stage && i < UC_COUNT(stages); i++)
        if (strcmp(stage, stages[i].stage) == 0)
            return stages[i].default_config();
    uc_err("unknown stage \"%s\" (clip, prior, decoder or sr)", stage ? stage : "");
    return NULL;
}
