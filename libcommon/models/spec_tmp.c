/* spec_tmp.c - TEMPORARY (branch spec-consumers), see spec_tmp.h: stand-in
 * descriptions of CLIP and the prior until api-clip-prior lands. Removed
 * when it is merged. */
#define UC_SPEC_TMP_IMPL
#include "libcommon/models/spec_tmp.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/models/model_file.h"

typedef struct {
    char name[256];
    int ndim;
    int64_t shape[8];
} ent;

typedef struct {
    ent *e;
    int n;
} elist;

static void add(void *ctx, const char *name, int ndim, const int64_t *shape)
{
    elist *l = ctx;
    l->e = uc_xrealloc(l->e, (size_t)l->n + 1, sizeof *l->e);
    ent *d = &l->e[l->n++];
    memset(d, 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "%s", name);
    d->ndim = ndim;
    if (ndim > 0)
        memcpy(d->shape, shape, (size_t)ndim * sizeof *shape);
}

static void addf(elist *l, int ndim, const int64_t *shape, const char *fmt, ...) UC_PRINTF(4, 5);
static void addf(elist *l, int ndim, const int64_t *shape, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    add(l, name, ndim, shape);
}

static int ends(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

/* the converter's halvable() */
static const char *dtype_of(const elist *l, const ent *d)
{
    if (!strcmp(d->name, "clip_mean") || !strcmp(d->name, "clip_std") || !strcmp(d->name, "logit_scale"))
        return "F32";
    if (ends(d->name, "in_proj_weight") || ends(d->name, "in_proj_bias") || !strcmp(d->name, "text_projection") ||
        !strcmp(d->name, "visual.proj"))
        return "F16";
    if (ends(d->name, ".weight"))
        return d->ndim >= 2 ? "F16" : "F32";
    if (ends(d->name, ".bias")) {
        char w[300];
        snprintf(w, sizeof w, "%.*s.weight", (int)(strlen(d->name) - 5), d->name);
        for (int i = 0; i < l->n; i++)
            if (!strcmp(l->e[i].name, w))
                return l->e[i].ndim >= 2 ? "F16" : "F32";
    }
    return "F32";
}

static int emit(elist *l, int rc, uc_tensor_fn fn, void *ctx)
{
    for (int i = 0; rc == 0 && i < l->n; i++)
        rc = fn(ctx, l->e[i].name, l->e[i].ndim, l->e[i].shape, dtype_of(l, &l->e[i]));
    uc_free(l->e);
    return rc;
}

#define S0 0, NULL
#define S1(a) 1, (int64_t[]){a}
#define S2(a, b) 2, (int64_t[]){a, b}
#define S3(a, b, c) 3, (int64_t[]){a, b, c}
#define S4(a, b, c, d) 4, (int64_t[]){a, b, c, d}

static void clip_block(elist *l, const char *prefix, int i, int64_t W)
{
    addf(l, S2(3 * W, W), "%s%d.attn.in_proj_weight", prefix, i);
    addf(l, S1(3 * W), "%s%d.attn.in_proj_bias", prefix, i);
    addf(l, S2(W, W), "%s%d.attn.out_proj.weight", prefix, i);
    addf(l, S1(W), "%s%d.attn.out_proj.bias", prefix, i);
    addf(l, S1(W), "%s%d.ln_1.weight", prefix, i);
    addf(l, S1(W), "%s%d.ln_1.bias", prefix, i);
    addf(l, S2(4 * W, W), "%s%d.mlp.c_fc.weight", prefix, i);
    addf(l, S1(4 * W), "%s%d.mlp.c_fc.bias", prefix, i);
    addf(l, S2(W, 4 * W), "%s%d.mlp.c_proj.weight", prefix, i);
    addf(l, S1(W), "%s%d.mlp.c_proj.bias", prefix, i);
    addf(l, S1(W), "%s%d.ln_2.weight", prefix, i);
    addf(l, S1(W), "%s%d.ln_2.bias", prefix, i);
}

static const char clip_default[] =
    "{\"embed_dim\":768,\"image_resolution\":224,\"vision_layers\":24,\"vision_width\":1024,"
    "\"vision_patch_size\":14,\"context_length\":77,\"vocab_size\":49408,\"transformer_width\":768,"
    "\"transformer_heads\":12,\"transformer_layers\":12}";
const char *uc_tmp_clip_default_config(void) { return clip_default; }

int uc_tmp_clip_tensors(const char *config_json, uc_tensor_fn fn, void *ctx)
{
    cJSON *c = cJSON_Parse(config_json ? config_json : clip_default);
    if (!cJSON_IsObject(c)) {
        cJSON_Delete(c);
        return uc_err("clip config: not a JSON object");
    }
    int D, R, Wv, P, T, V, W, tl, vl, th, vh;
    int text = cJSON_GetObjectItemCaseSensitive(c, "transformer_width") != NULL;
    int vis = cJSON_GetObjectItemCaseSensitive(c, "vision_width") != NULL;
    int rc = uc_cfg_int(c, "embed_dim", -1, 1, 1 << 20, &D);
    if (!rc && text)
        rc = uc_cfg_int(c, "transformer_width", -1, 1, 1 << 20, &W) ||
             uc_cfg_int(c, "context_length", -1, 1, 1 << 20, &T) ||
             uc_cfg_int(c, "vocab_size", -1, 1, 1 << 24, &V) ||
             uc_cfg_int(c, "transformer_layers", -1, 0, 4096, &tl) ||
             uc_cfg_int(c, "transformer_heads", 0, 0, 1 << 20, &th);
    if (!rc && vis)
        rc = uc_cfg_int(c, "vision_width", -1, 1, 1 << 20, &Wv) ||
             uc_cfg_int(c, "image_resolution", -1, 1, 1 << 20, &R) ||
             uc_cfg_int(c, "vision_patch_size", -1, 1, 1 << 20, &P) ||
             uc_cfg_int(c, "vision_layers", -1, 0, 4096, &vl) ||
             uc_cfg_int(c, "vision_heads", 0, 0, 1 << 20, &vh);
    if (!rc && !text && !vis)
        rc = uc_err("clip config: neither transformer_width nor vision_width");
    if (!rc && vis && R % P)
        rc = uc_err("clip config: vision_patch_size %d does not divide image_resolution %d", P, R);
    cJSON_Delete(c);
    if (rc)
        return strncmp(uc_errmsg(), "clip config", 11) ? uc_err_prefix("clip config") : -1;
    elist l = {0};
    if (text) {
        add(&l, "positional_embedding", S2(T, W));
        add(&l, "text_projection", S2(W, D));
        add(&l, "logit_scale", S0);
        add(&l, "token_embedding.weight", S2(V, W));
        for (int i = 0; i < tl; i++)
            clip_block(&l, "transformer.resblocks.", i, W);
        add(&l, "ln_final.weight", S1(W));
        add(&l, "ln_final.bias", S1(W));
    } else {
        add(&l, "logit_scale", S0);
    }
    if (vis) {
        int64_t G = R / P;
        add(&l, "visual.class_embedding", S1(Wv));
        add(&l, "visual.positional_embedding", S2(G * G + 1, Wv));
        add(&l, "visual.proj", S2(Wv, D));
        add(&l, "visual.conv1.weight", S4(Wv, 3, P, P));
        add(&l, "visual.ln_pre.weight", S1(Wv));
        add(&l, "visual.ln_pre.bias", S1(Wv));
        for (int i = 0; i < vl; i++)
            clip_block(&l, "visual.transformer.resblocks.", i, Wv);
        add(&l, "visual.ln_post.weight", S1(Wv));
        add(&l, "visual.ln_post.bias", S1(Wv));
    }
    return emit(&l, 0, fn, ctx);
}

static const char prior_default[] =
    "{\"model\": {\"type\": \"prior\", \"diffusion_sampler\": \"uniform\", \"hparams\": {\"text_ctx\": 77, "
    "\"xf_width\": 2048, \"xf_layers\": 20, \"xf_heads\": 32, \"xf_final_ln\": true, \"text_drop\": 0.2, "
    "\"clip_dim\": 768}}, \"diffusion\": {\"steps\": 1000, \"learn_sigma\": false, \"sigma_small\": true, "
    "\"noise_schedule\": \"squaredcos_cap_v2\", \"use_kl\": false, \"predict_xstart\": true, "
    "\"rescale_learned_sigmas\": false, \"timestep_respacing\": \"\"}}";
const char *uc_tmp_prior_default_config(void) { return prior_default; }

int uc_tmp_prior_tensors(const char *config_json, uc_tensor_fn fn, void *ctx)
{
    cJSON *c = cJSON_Parse(config_json ? config_json : prior_default);
    const cJSON *hp, *diff;
    int W, D, T, L, H, fl, rc = uc_model_sections(c, "prior", &hp, &diff);
    if (!rc && !hp)
        rc = uc_err("prior config: model.hparams missing");
    if (!rc && (uc_cfg_int(hp, "xf_width", -1, 1, 65536, &W) || uc_cfg_int(hp, "clip_dim", -1, 1, 65536, &D) ||
                uc_cfg_int(hp, "text_ctx", -1, 1, 65536, &T) || uc_cfg_int(hp, "xf_layers", -1, 0, 1024, &L) ||
                uc_cfg_int(hp, "xf_heads", -1, 1, 4096, &H) || uc_cfg_int(hp, "xf_final_ln", 0, 0, 1, &fl)))
        rc = uc_err_prefix("prior config: model.hparams");
    if (!rc && W % H)
        rc = uc_err("prior config: xf_heads %d does not divide xf_width %d", H, W);
    cJSON_Delete(c);
    if (rc)
        return -1;
    elist l = {0};
    add(&l, "model.time_embed.0.weight", S2(W, W));
    add(&l, "model.time_embed.0.bias", S1(W));
    add(&l, "model.time_embed.2.weight", S2(W, W));
    add(&l, "model.time_embed.2.bias", S1(W));
    add(&l, "model.text_enc_proj.weight", S2(W, D));
    add(&l, "model.text_enc_proj.bias", S1(W));
    add(&l, "model.text_emb_proj.weight", S2(W, D));
    add(&l, "model.text_emb_proj.bias", S1(W));
    add(&l, "model.clip_img_proj.weight", S2(W, D));
    add(&l, "model.clip_img_proj.bias", S1(W));
    add(&l, "model.out_proj.weight", S2(D, W));
    add(&l, "model.out_proj.bias", S1(D));
    add(&l, "model.positional_embedding", S3(1, T + 4, W));
    add(&l, "model.prd_emb", S3(1, 1, W));
    if (fl) {
        add(&l, "model.final_ln.weight", S1(W));
        add(&l, "model.final_ln.bias", S1(W));
    }
    for (int i = 0; i < L; i++) {
        const char *p = "model.transformer.resblocks";
        addf(&l, S1(W), "%s.%d.ln_1.weight", p, i);
        addf(&l, S1(W), "%s.%d.ln_1.bias", p, i);
        addf(&l, S2(3 * W, W), "%s.%d.attn.c_qkv.weight", p, i);
        addf(&l, S1(3 * W), "%s.%d.attn.c_qkv.bias", p, i);
        addf(&l, S2(W, W), "%s.%d.attn.c_proj.weight", p, i);
        addf(&l, S1(W), "%s.%d.attn.c_proj.bias", p, i);
        addf(&l, S1(W), "%s.%d.ln_2.weight", p, i);
        addf(&l, S1(W), "%s.%d.ln_2.bias", p, i);
        addf(&l, S2(4 * W, W), "%s.%d.mlp.c_fc.weight", p, i);
        addf(&l, S1(4 * W), "%s.%d.mlp.c_fc.bias", p, i);
        addf(&l, S2(W, 4 * W), "%s.%d.mlp.c_proj.weight", p, i);
        addf(&l, S1(W), "%s.%d.mlp.c_proj.bias", p, i);
    }
    add(&l, "clip_mean", S1(D));
    add(&l, "clip_std", S1(D));
    return emit(&l, 0, fn, ctx);
}
