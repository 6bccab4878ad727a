/* mkmodel - make small unclip model files for the shell tests.
 *
 *   mkmodel clip OUT [EMBED WIDTH LAYERS HEADS VWIDTH RES PATCH]
 *       random OpenAI-layout CLIP weights (full 49408 vocabulary), seeded
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

#define A(name, std, mean, ...) add(name, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__}, std, mean)

static void blocks(const char *prefix, int layers, int w)
{
    char k[256];
    for (int l = 0; l < layers; l++) {
#define K(s) (snprintf(k, sizeof k, "%sresblocks.%d.%s", prefix, l, s), k)
        A(K("attn.in_proj_weight"), 1.0f / sqrtf((float)w), 0, 3 * w, w);
        A(K("attn.in_proj_bias"), 0.1f, 0, 3 * w);
        A(K("attn.out_proj.weight"), 1.0f / sqrtf((float)w), 0, w, w);
        A(K("attn.out_proj.bias"), 0.05f, 0, w);
        A(K("ln_1.weight"), 0.2f, 1, w);
        A(K("ln_1.bias"), 0.1f, 0, w);
        A(K("mlp.c_fc.weight"), 1.0f / sqrtf((float)w), 0, 4 * w, w);
        A(K("mlp.c_fc.bias"), 0.1f, 0, 4 * w);
        A(K("mlp.c_proj.weight"), 1.0f / sqrtf(4.0f * w), 0, w, 4 * w);
        A(K("mlp.c_proj.bias"), 0.1f, 0, w);
        A(K("ln_2.weight"), 0.2f, 1, w);
        A(K("ln_2.bias"), 0.1f, 0, w);
#undef K
    }
}

static int make_clip(const char *out, int argc, char **argv)
{
    int v[7] = {32, 32, 1, 2, 64, 32, 8};
    for (int i = 0; i < 7 && i < argc; i++)
        v[i] = atoi(argv[i]);
    int embed = v[0], w = v[1], layers = v[2], heads = v[3], vw = v[4], res = v[5], patch = v[6];
    int ctx = 77, vocab = 49408, grid = res / patch;
    uc_rng_init(&rng, 1234, 0);
    A("positional_embedding", 0.01f, 0, ctx, w);
    A("text_projection", 1.0f / sqrtf((float)w), 0, w, embed);
    A("logit_scale", 0, 4.6052f);
    outs[nout - 1].ndim = 0;
    A("token_embedding.weight", 0.02f, 0, vocab, w);
    blocks("transformer.", layers, w);
    A("ln_final.weight", 0.2f, 1, w);
    A("ln_final.bias", 0.1f, 0, w);
    A("visual.class_embedding", 1.0f / sqrtf((float)vw), 0, vw);
    A("visual.positional_embedding", 1.0f / sqrtf((float)vw), 0, grid * grid + 1, vw);
    A("visual.proj", 1.0f / sqrtf((float)vw), 0, vw, embed);
    A("visual.conv1.weight", 0.05f, 0, vw, 3, patch, patch);
    A("visual.ln_pre.weight", 0.2f, 1, vw);
    A("visual.ln_pre.bias", 0.1f, 0, vw);
    blocks("visual.transformer.", layers, vw);
    A("visual.ln_post.weight", 0.2f, 1, vw);
    A("visual.ln_post.bias", 0.1f, 0, vw);
    char cfg[512];
    snprintf(cfg, sizeof cfg,
             "{\"embed_dim\":%d,\"image_resolution\":%d,\"vision_layers\":%d,\"vision_width\":%d,"
             "\"vision_patch_size\":%d,\"context_length\":%d,\"vocab_size\":%d,\"transformer_width\":%d,"
             "\"transformer_heads\":%d,\"transformer_layers\":%d}",
             embed, res, layers, vw, patch, ctx, vocab, w, heads, layers);
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
