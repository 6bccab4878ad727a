/* mkmodel - make small unclip model files for the shell tests.
 *
 *   mkmodel clip OUT [EMBED WIDTH LAYERS HEADS VWIDTH RES PATCH]
 *       random OpenAI-layout CLIP weights (full 49408 vocabulary), seeded;
 *       the tensors are those of CLIP's one description (uc_stage_tensors)
 *   mkmodel prior|decoder|sr OUT CASEDIR [GUIDANCE] [KEY=VALUE]...
 *       the weights of a golden case, with the case's config as metadata
 *       (and, for the prior, clip_mean/clip_std from the case's inputs);
 *       GUIDANCE, when given, becomes unclip.default_guidance verbatim, and
 *       each KEY=VALUE metadata KEY
 *
 * Test scaffolding only: real models come from the trainer or a converter. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/safetensors.h"
#include "formats/base.h"
#include "libcommon/models/model.h"
#include "libcommon/nn/rng.h"

#define MAX_EXTRA 4 /* metadata arguments after CASEDIR */

static st_out outs[512];
static float *bufs[512];
static int nout;
static uc_rng rng;

static void add(const char *name, int ndim, const int64_t *shape, float stddev, float mean)
{
    st_out *o = &outs[nout];
    o->name = uc_strdup(name);
    o->dtype = UC_F32;
    o->ndim = ndim;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (o->shape[i] = shape[i]);
    float *x = uc_alloc((size_t)n + 1, sizeof(float));
    uc_rng_normal(&rng, x, n);
    for (int64_t i = 0; i < n; i++)
        x[i] = mean + stddev * x[i];
    o->data = bufs[nout++] = x;
}

static int ends(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* One tensor of CLIP's description (model.h), drawn from a stream of its
 * own (seeded by its name, so the values do not move when the description
 * lists the tensors in another order): norm gains N(1, 0.2), biases N(0, 0.1) (out_proj 0.05), matrices
 * N(0, 1/fan_in) (fan_in first for CLIP's [in, out] projections), the
 * embeddings small, logit_scale log(100). */
static int clip_tensor(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    (void)ctx;
    (void)dtype;
    if (nout >= (int)UC_COUNT(outs))
        return uc_err("mkmodel: more than %d tensors", (int)UC_COUNT(outs));
    float std = 0, mean = 0;
    if (ndim == 0)
        mean = 4.6052f;
    else if (!strcmp(name, "token_embedding.weight"))
        std = 0.02f;
    else if (!strcmp(name, "positional_embedding"))
        std = 0.01f;
    else if (!strcmp(name, "visual.conv1.weight"))
        std = 0.05f;
    else if (ndim == 1 && ends(name, ".weight"))
        std = 0.2f, mean = 1;
    else if (ndim == 1 && ends(name, "out_proj.bias"))
        std = 0.05f;
    else if (ndim == 1 && ends(name, "bias"))
        std = 0.1f;
    else if (ndim == 1)
        std = 1.0f / sqrtf((float)shape[0]);
    else if (!strcmp(name, "text_projection") || !strcmp(name, "visual.proj"))
        std = 1.0f / sqrtf((float)shape[0]);
    else
        std = 1.0f / sqrtf((float)shape[1]);
    uint32_t h = 2166136261u; /* FNV-1a of the name */
    for (const char *c = name; *c; c++)
        h = (h ^ (unsigned char)*c) * 16777619u;
    uc_rng_init(&rng, 1234, h);
    add(name, ndim, shape, std, mean);
    return 0;
}

static int make_clip(const char *out, int argc, char **argv)
{
    int v[7] = {32, 32, 1, 2, 64, 32, 8};
    for (int i = 0; i < 7 && i < argc; i++)
        v[i] = atoi(argv[i]);
    int embed = v[0], w = v[1], layers = v[2], heads = v[3], vw = v[4], res = v[5], patch = v[6];
    int ctx = 77, vocab = 49408;
    char cfg[512];
    snprintf(cfg, sizeof cfg,
             "{\"embed_dim\":%d,\"image_resolution\":%d,\"vision_layers\":%d,\"vision_width\":%d,"
             "\"vision_patch_size\":%d,\"context_length\":%d,\"vocab_size\":%d,\"transformer_width\":%d,"
             "\"transformer_heads\":%d,\"transformer_layers\":%d}",
             embed, res, layers, vw, patch, ctx, vocab, w, heads, layers);
    if (uc_stage_tensors("clip", cfg, clip_tensor, NULL))
        return -1;
    const char *meta[] = {"unclip.stage", "clip", "unclip.config", cfg, "unclip.model_id", "test/clip-random"};
    return st_write(out, outs, nout, meta, 3);
}

static int make_from_case(const char *stage, const char *out, const char *dir, int nextra, char **extra)
{
    char path[4096];
    char *text;
    size_t len;
    snprintf(path, sizeof path, "%s/case.json", dir);
    if (uc_read_file(path, 64 << 20, &text, &len))
        return -1;
    cJSON *j = cJSON_Parse(text);
    free(text);
    cJSON *cfg = cJSON_GetObjectItem(j, "config");
    if (!cfg)
        return uc_err("%s: no config", path);
    /* keep only model + diffusion: the rest describes the golden call */
    cJSON *keep = cJSON_CreateObject();
    cJSON_AddItemToObject(keep, "model", cJSON_Duplicate(cJSON_GetObjectItem(cfg, "model"), 1));
    cJSON_AddItemToObject(keep, "diffusion", cJSON_Duplicate(cJSON_GetObjectItem(cfg, "diffusion"), 1));
    char *cfgs = cJSON_PrintUnformatted(keep);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    st_file *m = st_open(path);
    if (!m)
        return -1;
    for (int i = 0; i < st_count(m); i++) {
        const st_entry *e = st_at(m, i);
        st_out *o = &outs[nout++];
        o->name = e->name;
        o->dtype = e->t.dtype;
        o->ndim = e->t.ndim;
        memcpy(o->shape, e->t.shape, sizeof o->shape);
        o->data = e->t.data;
    }
    st_file *io = NULL;
    if (strcmp(stage, "prior") == 0) {
        snprintf(path, sizeof path, "%s/io.safetensors", dir);
        if (!(io = st_open(path)))
            return -1;
        const char *names[2] = {"clip_mean", "clip_std"};
        for (int k = 0; k < 2; k++) {
            const uc_tensor *t = st_get(io, names[k]);
            if (!t)
                return uc_err("%s: no %s", path, names[k]);
            st_out *o = &outs[nout++];
            o->name = names[k];
            o->dtype = t->dtype;
            o->ndim = t->ndim;
            memcpy(o->shape, t->shape, sizeof o->shape);
            o->data = t->data;
        }
    }
    char id[300];
    snprintf(id, sizeof id, "test/%s-golden", stage);
    const char *meta[6 + 2 * MAX_EXTRA] = {"unclip.stage", stage, "unclip.config", cfgs, "unclip.model_id", id};
    int nmeta = 3;
    for (int i = 0; i < nextra; i++) {
        char *eq = strchr(extra[i], '=');
        meta[2 * nmeta] = eq ? extra[i] : "unclip.default_guidance";
        meta[2 * nmeta + 1] = eq ? eq + 1 : extra[i];
        if (eq)
            *eq = 0;
        nmeta++;
    }
    int rc = st_write(out, outs, nout, meta, nmeta);
    st_close(io);
    st_close(m);
    free(cfgs);
    cJSON_Delete(keep);
    cJSON_Delete(j);
    return rc;
}

int main(int argc, char **argv)
{
    int rc;
    if (argc >= 3 && strcmp(argv[1], "clip") == 0)
        rc = make_clip(argv[2], argc - 3, argv + 3);
    else if (argc >= 4 && argc <= 4 + MAX_EXTRA &&
             (!strcmp(argv[1], "prior") || !strcmp(argv[1], "decoder") || !strcmp(argv[1], "sr")))
        rc = make_from_case(argv[1], argv[2], argv[3], argc - 4, argv + 4);
    else {
        fprintf(stderr, "usage: mkmodel clip OUT [EMBED WIDTH LAYERS HEADS VWIDTH RES PATCH]\n"
                        "       mkmodel prior|decoder|sr OUT GOLDEN_CASE_DIR [GUIDANCE] [KEY=VALUE]...\n");
        return 2;
    }
    if (rc)
        fprintf(stderr, "mkmodel: %s\n", uc_errmsg());
    return rc ? 1 : 0;
}
