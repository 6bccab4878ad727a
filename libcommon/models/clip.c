/* clip.c - OpenAI CLIP: the model's weight tree (one walk that binds or
 * lists it), loading (OpenAI and Hugging Face layouts), the text and image
 * encoders and logits. See clip.h. */
#define _DEFAULT_SOURCE
#include "libcommon/models/clip.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/base.h"
#include "libcommon/models/model_file.h"
#include "libcommon/nn/ops.h"

#define CLIP_MAX_LAYERS 1000
#define CLIP_MAX_DIM (1 << 20)
#define CLIP_MAX_TOKENS 8192 /* context or image tokens: bounds the T x T scores */
#define CLIP_MAX_RES 16384

enum { CLIP_ACT_QUICK_GELU, CLIP_ACT_GELU };

/* One residual attention block (W = width of its tower). */
typedef struct {
    const float *ln_1_w, *ln_1_b;  /* [W] */
    const float *in_proj_w;        /* [3W, W]: q, k, v stacked */
    const float *in_proj_b;        /* [3W] */
    const float *out_proj_w;       /* [W, W] */
    const float *out_proj_b;       /* [W] */
    const float *ln_2_w, *ln_2_b;  /* [W] */
    const float *c_fc_w;           /* [4W, W] */
    const float *c_fc_b;           /* [4W] */
    const float *c_proj_w;         /* [W, 4W] */
    const float *c_proj_b;         /* [W] */
} clip_block;

typedef struct {
    int width;           /* W */
    int layers;
    int heads;           /* W % heads == 0 */
    int act;             /* CLIP_ACT_* of the MLP */
    float eps;           /* LayerNorm epsilon (1e-5) */
    clip_block *blocks;  /* [layers] */
} clip_transformer;

struct clip_model {
    clip_info info; /* hyperparameters, layout, file */

    /* Text tower. */
    const float *token_embedding;       /* [vocab, W] */
    const float *positional_embedding;  /* [ctx, W] */
    clip_transformer text;
    const float *ln_final_w, *ln_final_b; /* [W] */
    const float *text_projection;       /* [W, D] */

    /* Vision tower. */
    const float *conv1_w;               /* [Wv, 3, P, P] (no bias) */
    const float *class_embedding;       /* [Wv] */
    const float *vis_positional;        /* [G*G + 1, Wv] */
    const float *ln_pre_w, *ln_pre_b;   /* [Wv] */
    clip_transformer visual;
    const float *ln_post_w, *ln_post_b; /* [Wv] */
    const float *proj;                  /* [Wv, D] */

    /* Ownership. */
    st_file *file;
    int own_file;
    float **owned;  /* buffers built by the layout conversion */
    int nowned;
};

const clip_info *clip_get_info(const clip_model *m) { return &m->info; }

/* ------------------------------------------------------------------------
 * Layouts: the one place where checkpoint names are converted. The loader
 * asks for OpenAI names; a Hugging Face CLIPModel file answers through these
 * tables (q/k/v concatenated into in_proj, projections transposed). */

enum { MAP_COPY, MAP_TRANSPOSE, MAP_QKV };

typedef struct {
    const char *openai, *hf;
    int how;
} name_map;

static const name_map hf_names[] = {
    {"token_embedding.weight", "text_model.embeddings.token_embedding.weight", MAP_COPY},
    {"positional_embedding", "text_model.embeddings.position_embedding.weight", MAP_COPY},
    {"ln_final.weight", "text_model.final_layer_norm.weight", MAP_COPY},
    {"ln_final.bias", "text_model.final_layer_norm.bias", MAP_COPY},
    {"text_projection", "text_projection.weight", MAP_TRANSPOSE},
    {"logit_scale", "logit_scale", MAP_COPY},
    {"visual.class_embedding", "vision_model.embeddings.class_embedding", MAP_COPY},
    {"visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight", MAP_COPY},
    {"visual.positional_embedding", "vision_model.embeddings.position_embedding.weight", MAP_COPY},
    {"visual.ln_pre.weight", "vision_model.pre_layrnorm.weight", MAP_COPY},
    {"visual.ln_pre.bias", "vision_model.pre_layrnorm.bias", MAP_COPY},
    {"visual.ln_post.weight", "vision_model.post_layernorm.weight", MAP_COPY},
    {"visual.ln_post.bias", "vision_model.post_layernorm.bias", MAP_COPY},
    {"visual.proj", "visual_projection.weight", MAP_TRANSPOSE},
};

/* Block prefixes (a layer number follows), then the names inside a block. */
static const name_map hf_towers[] = {
    {"transformer.resblocks.", "text_model.encoder.layers.", 0},
    {"visual.transformer.resblocks.", "vision_model.encoder.layers.", 0},
};

static const name_map hf_block[] = {
    {"attn.in_proj_weight", "self_attn.%s_proj.weight", MAP_QKV},
    {"attn.in_proj_bias", "self_attn.%s_proj.bias", MAP_QKV},
    {"attn.out_proj.weight", "self_attn.out_proj.weight", MAP_COPY},
    {"attn.out_proj.bias", "self_attn.out_proj.bias", MAP_COPY},
    {"ln_1.weight", "layer_norm1.weight", MAP_COPY},
    {"ln_1.bias", "layer_norm1.bias", MAP_COPY},
    {"ln_2.weight", "layer_norm2.weight", MAP_COPY},
    {"ln_2.bias", "layer_norm2.bias", MAP_COPY},
    {"mlp.c_fc.weight", "mlp.fc1.weight", MAP_COPY},
    {"mlp.c_fc.bias", "mlp.fc1.bias", MAP_COPY},
    {"mlp.c_proj.weight", "mlp.fc2.weight", MAP_COPY},
    {"mlp.c_proj.bias", "mlp.fc2.bias", MAP_COPY},
};

/* The Hugging Face name of OpenAI name `name` (with "%s" where q/k/v go
 * for MAP_QKV); -1 when the layout has no such tensor. */
static int hf_translate(const char *name, char *out, size_t n, int *how)
{
    for (size_t i = 0; i < UC_COUNT(hf_names); i++)
        if (strcmp(name, hf_names[i].openai) == 0) {
            *how = hf_names[i].how;
            snprintf(out, n, "%s", hf_names[i].hf);
            return 0;
        }
    for (size_t i = 0; i < UC_COUNT(hf_towers); i++) {
        size_t pl = strlen(hf_towers[i].openai);
        if (strncmp(name, hf_towers[i].openai, pl) != 0)
            continue;
        const char *p = name + pl, *dot = strchr(p, '.');
        if (!dot || dot == p || dot - p > 6)
            return -1;
        for (size_t j = 0; j < UC_COUNT(hf_block); j++)
            if (strcmp(dot + 1, hf_block[j].openai) == 0) {
                *how = hf_block[j].how;
                snprintf(out, n, "%s%.*s.%s", hf_towers[i].hf, (int)(dot - p), p, hf_block[j].hf);
                return 0;
            }
    }
    return -1;
}

typedef struct {
    st_file *f;
    clip_model *m;
} wsrc;

/* name with its q/k/v marker ("%s") replaced by `which`. */
static void qkv_name(char *out, size_t n, const char *pattern, const char *which)
{
    const char *mark = strstr(pattern, "%s");
    if (!mark) {
        snprintf(out, n, "%s", pattern);
        return;
    }
    snprintf(out, n, "%.*s%s%s", (int)(mark - pattern), pattern, which, mark + 2);
}

/* Shape of OpenAI tensor `name` as this file holds it (converted for the
 * layout); 0 when present, -1 when absent. */
static int src_shape(const wsrc *s, const char *name, uc_tensor *out)
{
    if (s->m->info.layout == CLIP_LAYOUT_OPENAI) {
        const uc_tensor *t = st_get(s->f, name);
        if (!t)
            return -1;
        *out = *t;
        return 0;
    }
    char hf[256], part[300];
    int how;
    if (hf_translate(name, hf, sizeof hf, &how))
        return -1;
    qkv_name(part, sizeof part, hf, "q");
    const uc_tensor *t = st_get(s->f, part);
    if (!t)
        return -1;
    *out = *t;
    if (how == MAP_QKV && t->ndim >= 1)
        out->shape[0] *= 3;
    if (how == MAP_TRANSPOSE && t->ndim == 2) {
        out->shape[0] = t->shape[1];
        out->shape[1] = t->shape[0];
    }
    return 0;
}

/* Hugging Face tensor `name`, which must have the given shape, widened into
 * dst. */
static int hf_part(const wsrc *s, const char *name, int ndim, const int64_t *shape, float *dst)
{
    const uc_tensor *t = st_get(s->f, name);
    char a[96], b[96];
    if (!t)
        return uc_err("tensor %s: missing from %s", name, st_path(s->f));
    if (!uc_tensor_shape_is(t, ndim, shape)) {
        uc_tensor want = {.ndim = ndim};
        memcpy(want.shape, shape, (size_t)ndim * sizeof *shape);
        return uc_err("tensor %s: shape %s, expected %s", name, uc_shape_str(t, a, sizeof a),
                      uc_shape_str(&want, b, sizeof b));
    }
    if (uc_tensor_to_f32(t, dst))
        return uc_err_prefix("tensor %s", name);
    return 0;
}

/* F32 data of OpenAI tensor `name` with exactly the given shape. */
static const float *src_f32(wsrc *s, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static const float *src_f32(wsrc *s, int ndim, const int64_t *shape, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (s->m->info.layout == CLIP_LAYOUT_OPENAI)
        return st_f32(s->f, name, ndim, shape);

    char hf[256], part[300];
    int how;
    if (hf_translate(name, hf, sizeof hf, &how)) {
        uc_err("tensor %s: no Hugging Face equivalent", name);
        return NULL;
    }
    if (how == MAP_COPY)
        return st_f32(s->f, hf, ndim, shape);
    if ((how == MAP_TRANSPOSE && ndim != 2) || (how == MAP_QKV && (ndim < 1 || shape[0] % 3))) {
        uc_err("tensor %s: bad shape for the layout conversion", name);
        return NULL;
    }
    clip_model *m = s->m;
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++)
        numel *= shape[i];
    float *w = uc_alloc((size_t)numel, sizeof *w);
    m->owned = uc_xrealloc(m->owned, (size_t)m->nowned + 1, sizeof *m->owned);
    m->owned[m->nowned++] = w;
    if (how == MAP_TRANSPOSE) { /* [out, in] Linear weight -> [in, out] projection */
        int64_t r = shape[0], c = shape[1];
        float *t = uc_alloc((size_t)numel, sizeof *t);
        int rc = hf_part(s, hf, 2, (int64_t[]){c, r}, t);
        for (int64_t i = 0; rc == 0 && i < r; i++)
            for (int64_t j = 0; j < c; j++)
                w[i * c + j] = t[j * r + i];
        uc_free(t);
        return rc ? NULL : w;
    }
    /* MAP_QKV: q, k, v stacked along the first dimension. */
    int64_t part_shape[UC_MAXDIM];
    memcpy(part_shape, shape, (size_t)ndim * sizeof *shape);
    part_shape[0] /= 3;
    static const char *const qkv[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        qkv_name(part, sizeof part, hf, qkv[i]);
        if (hf_part(s, part, ndim, part_shape, w + i * (numel / 3)))
            return NULL;
    }
    return w;
}

/* Number of blocks under the OpenAI prefix (one more than the highest
 * index present, as build_model counts them). */
static int count_layers(const wsrc *s, const char *prefix)
{
    const char *p = prefix;
    for (size_t i = 0; s->m->info.layout == CLIP_LAYOUT_HF && i < UC_COUNT(hf_towers); i++)
        if (strcmp(prefix, hf_towers[i].openai) == 0)
            p = hf_towers[i].hf;
    size_t pl = strlen(p);
    int n = 0;
    for (int i = 0; i < st_count(s->f); i++) {
        const char *name = st_at(s->f, i)->name;
        if (strncmp(name, p, pl) != 0)
            continue;
        char *end;
        long v = strtol(name + pl, &end, 10);
        if (end == name + pl || *end != '.' || v < 0)
            continue;
        if (v >= CLIP_MAX_LAYERS)
            return uc_err("%s%ld: too many layers", p, v);
        n = UC_MAX(n, (int)v + 1);
    }
    return n;
}

/* ------------------------------------------------------------------------
 * Config: head counts, activation, epsilon; other values must agree with
 * the shapes. Reads the OpenAI CLIP(...) names and Hugging Face's. */

static int cfg_int(const cJSON *j, const char *key, int *out)
{
    const cJSON *v = j ? cJSON_GetObjectItemCaseSensitive(j, key) : NULL;
    if (!v)
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < 0 ||
        v->valuedouble > CLIP_MAX_DIM)
        return uc_err("config %s: not a size", key);
    *out = (int)v->valuedouble;
    return 1;
}

static int cfg_check(const cJSON *j, const char *key, int have)
{
    int v;
    int rc = cfg_int(j, key, &v);
    if (rc < 0)
        return -1;
    if (rc && v != have)
        return uc_err("config %s = %d, but the weights have %d", key, v, have);
    return 0;
}

static int cfg_tower(const cJSON *cfg, const char *heads_key, const char *hf_key, clip_transformer *t)
{
    const cJSON *hf = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, hf_key) : NULL;
    int heads = 0;
    int rc = cfg_int(cfg, heads_key, &heads);
    if (rc == 0)
        rc = cfg_int(hf, "num_attention_heads", &heads);
    if (rc < 0)
        return -1;
    if (rc == 0)
        heads = t->width / 64; /* OpenAI build_model's assumption */
    if (cfg_check(hf, "hidden_size", t->width) || cfg_check(hf, "num_hidden_layers", t->layers))
        return uc_err_prefix("%s", hf_key);
    if (heads < 1 || t->width % heads)
        return uc_err("%s: %d heads do not divide width %d (give %s in the config)", heads_key, heads, t->width,
                      heads_key);
    t->heads = heads;
    t->act = CLIP_ACT_QUICK_GELU;
    t->eps = 1e-5f;
    const cJSON *act = hf ? cJSON_GetObjectItemCaseSensitive(hf, "hidden_act") : NULL;
    if (act) {
        if (cJSON_IsString(act) && strcmp(act->valuestring, "quick_gelu") == 0)
            t->act = CLIP_ACT_QUICK_GELU;
        else if (cJSON_IsString(act) && strcmp(act->valuestring, "gelu") == 0)
            t->act = CLIP_ACT_GELU;
        else
            return uc_err("config %s.hidden_act: unsupported (quick_gelu or gelu)", hf_key);
    }
    const cJSON *eps = hf ? cJSON_GetObjectItemCaseSensitive(hf, "layer_norm_eps") : NULL;
    if (eps) {
        if (!cJSON_IsNumber(eps) || !(eps->valuedouble > 0 && eps->valuedouble < 1))
            return uc_err("config %s.layer_norm_eps: bad value", hf_key);
        t->eps = (float)eps->valuedouble;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * The description: CLIP's weight tree in OpenAI's names, walked over the
 * hyperparameters. A walker either binds each tensor (through the layout
 * conversion above) or reports it. */

enum { HALF = 0, FULL = 1 }; /* storage dtype of a half-precision file: F16 / F32 */

typedef struct {
    clip_model *m; /* receives the weights (NULL pointers when listing) */
    wsrc *src;     /* bind from (NULL: list to fn) */
    uc_tensor_fn fn;
    void *ctx;
    int rc; /* nonzero: the walk stops (a failed bind, or fn's return) */
} walker;

static const float *wt(walker *w, int how, int ndim, const int64_t *shape, const char *fmt, ...) UC_PRINTF(5, 6);
static const float *wt(walker *w, int how, int ndim, const int64_t *shape, const char *fmt, ...)
{
    char name[256];
    if (w->rc)
        return NULL;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (!w->src) {
        w->rc = w->fn(w->ctx, name, ndim, shape, how == FULL ? "F32" : "F16");
        return NULL;
    }
    const float *x = src_f32(w->src, ndim, shape, "%s", name);
    if (!x)
        w->rc = -1;
    return x;
}

#define D1(a) 1, (int64_t[]){(a)}
#define D2(a, b) 2, (int64_t[]){(a), (b)}
#define D4(a, b, c, d) 4, (int64_t[]){(a), (b), (c), (d)}

/* ResidualAttentionBlock x layers under prefix (t->width, t->layers set). */
static void walk_blocks(walker *w, clip_transformer *t, const char *prefix)
{
    const int64_t W = t->width;
    t->blocks = uc_alloc((size_t)t->layers + 1, sizeof *t->blocks);
    for (int l = 0; l < t->layers && !w->rc; l++) {
        clip_block *b = &t->blocks[l];
        b->in_proj_w = wt(w, HALF, D2(3 * W, W), "%s%d.attn.in_proj_weight", prefix, l);
        b->in_proj_b = wt(w, HALF, D1(3 * W), "%s%d.attn.in_proj_bias", prefix, l);
        b->out_proj_w = wt(w, HALF, D2(W, W), "%s%d.attn.out_proj.weight", prefix, l);
        b->out_proj_b = wt(w, HALF, D1(W), "%s%d.attn.out_proj.bias", prefix, l);
        b->ln_1_w = wt(w, FULL, D1(W), "%s%d.ln_1.weight", prefix, l);
        b->ln_1_b = wt(w, FULL, D1(W), "%s%d.ln_1.bias", prefix, l);
        b->c_fc_w = wt(w, HALF, D2(4 * W, W), "%s%d.mlp.c_fc.weight", prefix, l);
        b->c_fc_b = wt(w, HALF, D1(4 * W), "%s%d.mlp.c_fc.bias", prefix, l);
        b->c_proj_w = wt(w, HALF, D2(W, 4 * W), "%s%d.mlp.c_proj.weight", prefix, l);
        b->c_proj_b = wt(w, HALF, D1(W), "%s%d.mlp.c_proj.bias", prefix, l);
        b->ln_2_w = wt(w, FULL, D1(W), "%s%d.ln_2.weight", prefix, l);
        b->ln_2_b = wt(w, FULL, D1(W), "%s%d.ln_2.bias", prefix, l);
    }
}

/* The weight tree of CLIP(...) with the hyperparameters in w->m->info and
 * the towers' widths and depths in w->m->text / visual. */
static int walk(walker *w)
{
    clip_model *m = w->m;
    const clip_info *h = &m->info;
    const int64_t D = h->embed_dim;
    if (h->has_text) {
        const int64_t W = h->transformer_width;
        m->token_embedding = wt(w, HALF, D2(h->vocab_size, W), "token_embedding.weight");
        m->positional_embedding = wt(w, FULL, D2(h->context_length, W), "positional_embedding");
        walk_blocks(w, &m->text, "transformer.resblocks.");
        m->ln_final_w = wt(w, FULL, D1(W), "ln_final.weight");
        m->ln_final_b = wt(w, FULL, D1(W), "ln_final.bias");
        m->text_projection = wt(w, HALF, D2(W, D), "text_projection");
        if (w->rc && w->src)
            return uc_err_prefix("CLIP text tower");
    }
    if (h->has_vision) {
        const int64_t Wv = h->vision_width, P = h->vision_patch_size, G = h->grid;
        m->class_embedding = wt(w, FULL, D1(Wv), "visual.class_embedding");
        m->vis_positional = wt(w, FULL, D2(G * G + 1, Wv), "visual.positional_embedding");
        m->conv1_w = wt(w, HALF, D4(Wv, 3, P, P), "visual.conv1.weight");
        m->ln_pre_w = wt(w, FULL, D1(Wv), "visual.ln_pre.weight");
        m->ln_pre_b = wt(w, FULL, D1(Wv), "visual.ln_pre.bias");
        walk_blocks(w, &m->visual, "visual.transformer.resblocks.");
        m->ln_post_w = wt(w, FULL, D1(Wv), "visual.ln_post.weight");
        m->ln_post_b = wt(w, FULL, D1(Wv), "visual.ln_post.bias");
        m->proj = wt(w, HALF, D2(Wv, D), "visual.proj");
        if (w->rc && w->src)
            return uc_err_prefix("CLIP vision tower");
    }
    /* logit_scale: [] in CLIP(...); a file may hold it as [1], or not at
     * all (then clip_logits refuses) */
    if (!w->src) {
        wt(w, FULL, 0, (int64_t[]){1}, "logit_scale");
        return w->rc;
    }
    uc_tensor t;
    if (!w->rc && src_shape(w->src, "logit_scale", &t) == 0) {
        if (uc_tensor_numel(&t) != 1)
            return w->rc = uc_err("tensor logit_scale: expected a scalar");
        const float *ls = wt(w, FULL, t.ndim, t.shape, "logit_scale");
        if (ls) {
            m->info.logit_scale = ls[0];
            m->info.has_logit_scale = 1;
        }
    }
    return w->rc;
}

#undef D1
#undef D2
#undef D4

static const char default_config[] =
    "{\"embed_dim\": 768, \"image_resolution\": 224, \"vision_layers\": 24, \"vision_width\": 1024, "
    "\"vision_patch_size\": 14, \"context_length\": 77, \"vocab_size\": 49408, \"transformer_width\": 768, "
    "\"transformer_heads\": 12, \"transformer_layers\": 12}";

const char *uc_clip_default_config(void) { return default_config; }

/* A required config size in lo..hi. */
static int need_int(const cJSON *cfg, const char *key, int lo, int hi, int *out)
{
    if (!cJSON_GetObjectItemCaseSensitive(cfg, key))
        return uc_err("clip config: %s missing", key);
    return uc_cfg_int(cfg, key, 0, lo, hi, out);
}

/* Heads of a tower: heads_key, else width // 64 as build_model assumes. */
static int need_heads(const cJSON *cfg, const char *key, int width, int *out)
{
    if (uc_cfg_int(cfg, key, width / 64, 0, CLIP_MAX_DIM, out))
        return -1;
    if (*out < 1 || width % *out)
        return uc_err("%s: %d heads do not divide width %d (give %s in the config)", key, *out, width, key);
    return 0;
}

/* The hyperparameters of the CLIP(...) arguments in cfg. */
static int info_from_config(const cJSON *cfg, clip_model *m)
{
    clip_info *h = &m->info;
    h->has_text = cJSON_GetObjectItemCaseSensitive(cfg, "transformer_width") != NULL;
    h->has_vision = cJSON_GetObjectItemCaseSensitive(cfg, "vision_width") != NULL;
    if (!h->has_text && !h->has_vision)
        return uc_err("clip config: neither transformer_width nor vision_width (no tower)");
    if (need_int(cfg, "embed_dim", 1, CLIP_MAX_DIM, &h->embed_dim))
        return -1;
    if (h->has_text) {
        if (need_int(cfg, "transformer_width", 1, CLIP_MAX_DIM, &h->transformer_width) ||
            need_int(cfg, "transformer_layers", 0, CLIP_MAX_LAYERS, &h->transformer_layers) ||
            need_int(cfg, "vocab_size", 1, CLIP_MAX_DIM, &h->vocab_size) ||
            need_int(cfg, "context_length", 1, CLIP_MAX_TOKENS, &h->context_length) ||
            need_heads(cfg, "transformer_heads", h->transformer_width, &h->transformer_heads))
            return -1;
        m->text.width = h->transformer_width;
        m->text.layers = h->transformer_layers;
    }
    if (h->has_vision) {
        if (need_int(cfg, "vision_width", 1, CLIP_MAX_DIM, &h->vision_width) ||
            need_int(cfg, "vision_layers", 0, CLIP_MAX_LAYERS, &h->vision_layers) ||
            need_int(cfg, "vision_patch_size", 1, CLIP_MAX_RES, &h->vision_patch_size) ||
            need_int(cfg, "image_resolution", 1, CLIP_MAX_RES, &h->image_resolution) ||
            need_heads(cfg, "vision_heads", h->vision_width, &h->vision_heads))
            return -1;
        if (h->image_resolution % h->vision_patch_size)
            return uc_err("clip config: image_resolution %d is not a multiple of vision_patch_size %d",
                          h->image_resolution, h->vision_patch_size);
        h->grid = h->image_resolution / h->vision_patch_size;
        if ((int64_t)h->grid * h->grid + 1 > CLIP_MAX_TOKENS)
            return uc_err("clip config: %d x %d patches are above the limit of %d tokens", h->grid, h->grid,
                          CLIP_MAX_TOKENS);
        m->visual.width = h->vision_width;
        m->visual.layers = h->vision_layers;
    }
    return 0;
}

int uc_clip_tensors(const char *config_json, uc_tensor_fn fn, void *ctx)
{
    cJSON *cfg = cJSON_Parse(config_json ? config_json : default_config);
    clip_model m;
    memset(&m, 0, sizeof m);
    int rc = cJSON_IsObject(cfg) ? info_from_config(cfg, &m) : uc_err("clip config: not a JSON object");
    cJSON_Delete(cfg);
    if (!rc) {
        walker w = {&m, NULL, fn, ctx, 0};
        rc = walk(&w);
    }
    uc_free(m.text.blocks);
    uc_free(m.visual.blocks);
    return rc;
}

/* ------------------------------------------------------------------------
 * Loading: the hyperparameters from the shapes (as build_model) and the
 * config, then the walk binds every weight. */

static int dim_ok(int64_t v) { return v >= 1 && v <= CLIP_MAX_DIM; }

static int infer_text(wsrc *s, const cJSON *cfg)
{
    clip_info *h = &s->m->info;
    uc_tensor tok, pos, proj;
    if (src_shape(s, "token_embedding.weight", &tok) || tok.ndim != 2 || !dim_ok(tok.shape[0]) ||
        !dim_ok(tok.shape[1]))
        return uc_err("tensor token_embedding.weight: expected [vocab, width]");
    if (src_shape(s, "positional_embedding", &pos) || pos.ndim != 2 || !dim_ok(pos.shape[0]))
        return uc_err("tensor positional_embedding: expected [context, width]");
    if (pos.shape[0] > CLIP_MAX_TOKENS)
        return uc_err("tensor positional_embedding: context %lld above the limit %d", (long long)pos.shape[0],
                      CLIP_MAX_TOKENS);
    if (src_shape(s, "text_projection", &proj) || proj.ndim != 2 || !dim_ok(proj.shape[1]))
        return uc_err("tensor text_projection: expected [width, embed_dim]");
    h->vocab_size = (int)tok.shape[0];
    h->transformer_width = (int)tok.shape[1];
    h->context_length = (int)pos.shape[0];
    h->embed_dim = (int)proj.shape[1];
    int W = h->transformer_width, D = h->embed_dim;
    if ((h->transformer_layers = count_layers(s, "transformer.resblocks.")) < 0)
        return -1;
    if (cfg_check(cfg, "vocab_size", h->vocab_size) || cfg_check(cfg, "transformer_width", W) ||
        cfg_check(cfg, "context_length", h->context_length) || cfg_check(cfg, "embed_dim", D) ||
        cfg_check(cfg, "transformer_layers", h->transformer_layers) || cfg_check(cfg, "projection_dim", D))
        return -1;
    const cJSON *hf = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "text_config") : NULL;
    if (cfg_check(hf, "vocab_size", h->vocab_size) || cfg_check(hf, "max_position_embeddings", h->context_length))
        return uc_err_prefix("text_config");
    s->m->text.width = W;
    s->m->text.layers = h->transformer_layers;
    if (cfg_tower(cfg, "transformer_heads", "text_config", &s->m->text))
        return -1;
    h->transformer_heads = s->m->text.heads;
    return 0;
}

static int infer_vision(wsrc *s, const cJSON *cfg)
{
    clip_info *h = &s->m->info;
    uc_tensor conv, pos, proj;
    if (src_shape(s, "visual.conv1.weight", &conv) || conv.ndim != 4 || conv.shape[1] != 3 ||
        conv.shape[2] != conv.shape[3] || !dim_ok(conv.shape[0]) || !dim_ok(conv.shape[2]))
        return uc_err("tensor visual.conv1.weight: expected [width, 3, patch, patch]");
    if (src_shape(s, "visual.positional_embedding", &pos) || pos.ndim != 2 || !dim_ok(pos.shape[0]))
        return uc_err("tensor visual.positional_embedding: expected [grid*grid + 1, width]");
    if (src_shape(s, "visual.proj", &proj) || proj.ndim != 2 || !dim_ok(proj.shape[1]))
        return uc_err("tensor visual.proj: expected [width, embed_dim]");
    int64_t Wv = conv.shape[0], P = conv.shape[2], T = pos.shape[0];
    int64_t G = (int64_t)llround(sqrt((double)(T - 1)));
    if (G < 1 || G * G + 1 != T)
        return uc_err("tensor visual.positional_embedding: %lld positions is not grid*grid + 1", (long long)T);
    if (T > CLIP_MAX_TOKENS || G * P > CLIP_MAX_RES)
        return uc_err("visual: %lld tokens at resolution %lld is above the limits (%d, %d)", (long long)T,
                      (long long)(G * P), CLIP_MAX_TOKENS, CLIP_MAX_RES);
    if (h->has_text && proj.shape[1] != h->embed_dim)
        return uc_err("tensor visual.proj: embed_dim %lld, text_projection has %d", (long long)proj.shape[1],
                      h->embed_dim);
    h->vision_width = (int)Wv;
    h->vision_patch_size = (int)P;
    h->grid = (int)G;
    h->image_resolution = (int)(G * P);
    h->embed_dim = (int)proj.shape[1];
    if ((h->vision_layers = count_layers(s, "visual.transformer.resblocks.")) < 0)
        return -1;
    if (cfg_check(cfg, "vision_width", (int)Wv) || cfg_check(cfg, "vision_patch_size", (int)P) ||
        cfg_check(cfg, "image_resolution", h->image_resolution) || cfg_check(cfg, "embed_dim", h->embed_dim) ||
        cfg_check(cfg, "vision_layers", h->vision_layers) || cfg_check(cfg, "projection_dim", h->embed_dim))
        return -1;
    const cJSON *hf = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "vision_config") : NULL;
    if (cfg_check(hf, "patch_size", (int)P) || cfg_check(hf, "image_size", h->image_resolution))
        return uc_err_prefix("vision_config");
    s->m->visual.width = (int)Wv;
    s->m->visual.layers = h->vision_layers;
    if (cfg_tower(cfg, "vision_heads", "vision_config", &s->m->visual))
        return -1;
    h->vision_heads = s->m->visual.heads;
    return 0;
}

clip_model *clip_load(st_file *f, const char *config_json)
{
    clip_model *m = uc_alloc(1, sizeof *m);
    m->file = f;
    m->info.layout = st_get(f, "text_model.embeddings.token_embedding.weight") ||
                             st_get(f, "vision_model.embeddings.patch_embedding.weight")
                         ? CLIP_LAYOUT_HF
                         : CLIP_LAYOUT_OPENAI;
    cJSON *cfg = NULL;
    if (config_json && *config_json) {
        cfg = cJSON_Parse(config_json);
        if (!cJSON_IsObject(cfg)) {
            uc_err("clip config: not a JSON object");
            goto fail;
        }
    }
    wsrc s = {f, m};
    uc_tensor t;
    m->info.has_text = src_shape(&s, "token_embedding.weight", &t) == 0;
    m->info.has_vision = src_shape(&s, "visual.conv1.weight", &t) == 0;
    if (!m->info.has_text && !m->info.has_vision) {
        uc_err("%s: not a CLIP model (neither token_embedding.weight nor visual.conv1.weight)", st_path(f));
        goto fail;
    }
    if (m->info.has_text && infer_text(&s, cfg)) {
        uc_err_prefix("%s: CLIP text tower", st_path(f));
        goto fail;
    }
    if (m->info.has_vision && infer_vision(&s, cfg)) {
        uc_err_prefix("%s: CLIP vision tower", st_path(f));
        goto fail;
    }
    walker w = {m, &s, NULL, NULL, 0};
    if (walk(&w) || uc_model_info_fill(f, "clip", &m->info.model))
        goto fail;
    cJSON_Delete(cfg);
    return m;
fail:
    cJSON_Delete(cfg);
    clip_free(m);
    return NULL;
}

clip_model *clip_open(const char *path)
{
    char buf[4096];
    struct stat sb;
    int isdir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    if (isdir)
        snprintf(buf, sizeof buf, "%s/model.safetensors", path);
    else
        snprintf(buf, sizeof buf, "%s", path);
    st_file *f = st_open(buf);
    if (!f)
        return NULL;
    const char *stage = st_meta(f, "unclip.stage");
    if (stage && strcmp(stage, "clip") != 0) {
        uc_err("%s: a %s model (unclip.stage), not a clip model", buf, stage);
        st_close(f);
        return NULL;
    }
    char *text = NULL;
    const char *cfg = st_meta(f, "unclip.config");
    if (!cfg)
        cfg = st_meta(f, "config");
    if (!cfg) { /* a Hugging Face config.json beside the weights */
        if (isdir) {
            snprintf(buf, sizeof buf, "%s/config.json", path);
        } else {
            const char *slash = strrchr(path, '/');
            snprintf(buf, sizeof buf, "%.*s%sconfig.json", slash ? (int)(slash - path) : 0, path,
                     slash ? "/" : "");
        }
        size_t len;
        if (stat(buf, &sb) == 0 && S_ISREG(sb.st_mode)) {
            if (uc_read_file(buf, 16u << 20, &text, &len)) {
                st_close(f);
                return NULL;
            }
            cfg = text;
        }
    }
    clip_model *m = clip_load(f, cfg);
    free(text);
    if (!m) {
        st_close(f);
        return NULL;
    }
    m->own_file = 1;
    if (isdir) /* the folder names the model, not its model.safetensors */
        m->info.model.id = st_meta(f, "unclip.model_id") ? st_meta(f, "unclip.model_id") : path;
    return m;
}

void clip_free(clip_model *m)
{
    if (!m)
        return;
    uc_free(m->text.blocks);
    uc_free(m->visual.blocks);
    for (int i = 0; i < m->nowned; i++)
        uc_free(m->owned[i]);
    uc_free(m->owned);
    if (m->own_file)
        st_close(m->file);
    uc_free(m);
}

uc_bpe *clip_tokenizer(const clip_model *m)
{
    if (!m->info.has_text) {
        uc_err("this CLIP model has no text tower");
        return NULL;
    }
    const char *merges = st_meta(m->file, "unclip.tokenizer.merges");
    uc_bpe *b;
    if (merges) {
        if (!(b = uc_bpe_load_text(merges, strlen(merges), -1))) {
            uc_err_prefix("%s: unclip.tokenizer.merges", st_path(m->file));
            return NULL;
        }
    } else {
        const char *path = uc_bpe_default_path();
        if (!path) {
            uc_err("no BPE vocabulary: set UNCLIP_VOCAB to the path of bpe_simple_vocab_16e6.txt.gz");
            return NULL;
        }
        if (!(b = uc_bpe_load_gz(path))) {
            uc_err_prefix("BPE vocabulary (UNCLIP_VOCAB)");
            return NULL;
        }
    }
    if (uc_bpe_vocab_size(b) > m->info.vocab_size) {
        uc_err("the tokenizer has %d ids but the model's vocabulary only %d", uc_bpe_vocab_size(b),
               m->info.vocab_size);
        uc_bpe_free(b);
        return NULL;
    }
    return b;
}

/* ------------------------------------------------------------------------
 * Forward. Activations live in one workspace per call; every product is
 * one GEMM over all tokens of all rows. */

typedef struct {
    float *h;      /* [M, W]: normed input / projection output */
    float *qkv;    /* [M, 3W] */
    float *att;    /* [M, W]: heads side by side */
    float *mlp;    /* [M, 4W] */
    float *mask;   /* [T, T] additive causal mask, or NULL */
    float *block;  /* the single allocation */
} clip_ws;

static void ws_init(clip_ws *ws, int64_t M, int64_t T, int64_t W, int causal)
{
    size_t n = (size_t)(M * W * 9 + T * T);
    float *p = ws->block = uc_alloc_raw(n, sizeof(float)); /* every buffer is written before it is read */
    ws->h = p, p += M * W;
    ws->qkv = p, p += M * 3 * W;
    ws->att = p, p += M * W;
    ws->mlp = p, p += M * 4 * W;
    ws->mask = NULL;
    if (causal) { /* torch.empty(T, T).fill_(-inf).triu_(1) */
        ws->mask = p;
        for (int64_t i = 0; i < T; i++)
            for (int64_t j = 0; j < T; j++)
                p[i * T + j] = j > i ? -INFINITY : 0.0f;
    }
}

typedef struct {
    const clip_ws *ws;
    int64_t T, W, H;
    float scale;
} attn_job;

/* Heads [i0, i1) of all rows, item r * H + h. */
static void attn_heads(void *ctx, int64_t i0, int64_t i1)
{
    const attn_job *j = ctx;
    int64_t T = j->T, W = j->W, dh = W / j->H;
    for (int64_t i = i0; i < i1; i++) {
        int64_t r = i / j->H, h = i % j->H;
        const float *q = j->ws->qkv + r * T * 3 * W + h * dh;
        uc_attention_head(j->ws->att + r * T * W + h * dh, W, q, 3 * W, q + W, 3 * W, q + 2 * W, 3 * W, T, T, dh,
                          j->scale, j->ws->mask, NULL);
    }
}

/* x[B*T, W] through every block, in place. */
static void transformer_forward(const clip_transformer *t, float *x, int64_t B, int64_t T, clip_ws *ws)
{
    int64_t W = t->width, M = B * T, H = t->heads, dh = W / H;
    float scale = 1.0f / sqrtf((float)dh);
    for (int l = 0; l < t->layers; l++) {
        const clip_block *b = &t->blocks[l];
        /* x = x + out_proj(attention(ln_1(x))) */
        uc_layernorm(ws->h, x, b->ln_1_w, b->ln_1_b, M, W, t->eps);
        uc_linear(ws->qkv, ws->h, b->in_proj_w, b->in_proj_b, M, W, 3 * W);
        /* one parallel loop over every (row, head) */
        attn_job aj = {ws, T, W, H, scale};
        uc_parallel_for(B * H, 4.0 * (double)(B * H * T * T * dh), attn_heads, &aj);
        uc_linear(ws->h, ws->att, b->out_proj_w, b->out_proj_b, M, W, W);
        uc_add(x, ws->h, M * W);
        /* x = x + c_proj(act(c_fc(ln_2(x)))) */
        uc_layernorm(ws->h, x, b->ln_2_w, b->ln_2_b, M, W, t->eps);
        uc_linear(ws->mlp, ws->h, b->c_fc_w, b->c_fc_b, M, W, 4 * W);
        if (t->act == CLIP_ACT_GELU)
            uc_gelu(ws->mlp, M * 4 * W);
        else
            uc_quick_gelu(ws->mlp, M * 4 * W);
        uc_linear(ws->h, ws->mlp, b->c_proj_w, b->c_proj_b, M, 4 * W, W);
        uc_add(x, ws->h, M * W);
    }
}

int clip_encode_text(const clip_model *m, const int32_t *tokens, int B, float *seq, float *emb)
{
    if (!m->info.has_text)
        return uc_err("this CLIP model has no text tower");
    if (B < 1)
        return 0;
    int64_t C = m->info.context_length, W = m->info.transformer_width, D = m->info.embed_dim;
    for (int64_t i = 0; i < (int64_t)B * C; i++)
        if (tokens[i] < 0 || tokens[i] >= m->info.vocab_size)
            return uc_err("row %lld token %lld: id %d outside the vocabulary (%d)", (long long)(i / C),
                          (long long)(i % C), tokens[i], m->info.vocab_size);
    /* Pool at tokens.argmax(-1): the first highest id (EOT). The mask is
     * causal, so when only the embedding is wanted the positions after the
     * last pooled one change nothing and are not computed (T <= C). */
    int64_t *at = uc_alloc((size_t)B, sizeof *at), T = C;
    for (int64_t r = 0; r < B; r++) {
        at[r] = 0;
        for (int64_t t = 1; t < C; t++)
            if (tokens[r * C + t] > tokens[r * C + at[r]])
                at[r] = t;
    }
    if (!seq) {
        T = 1;
        for (int64_t r = 0; r < B; r++)
            T = at[r] + 1 > T ? at[r] + 1 : T;
    }
    int64_t M = (int64_t)B * T;
    float *x = uc_alloc((size_t)M, (size_t)W * sizeof(float));
    for (int64_t i = 0; i < M; i++) {
        int64_t r = i / T, t = i % T;
        const float *te = m->token_embedding + (int64_t)tokens[r * C + t] * W, *pe = m->positional_embedding + t * W;
        for (int64_t j = 0; j < W; j++)
            x[i * W + j] = te[j] + pe[j];
    }
    clip_ws ws;
    ws_init(&ws, M, T, W, 1);
    transformer_forward(&m->text, x, B, T, &ws);
    uc_layernorm(x, x, m->ln_final_w, m->ln_final_b, M, W, m->text.eps);
    if (seq)
        memcpy(seq, x, (size_t)(M * W) * sizeof *x);
    if (emb) {
        float *pooled = ws.h;
        for (int64_t r = 0; r < B; r++)
            memcpy(pooled + r * W, x + (r * T + at[r]) * W, (size_t)W * sizeof *x);
        uc_matmul(emb, pooled, m->text_projection, B, W, D);
    }
    uc_free(at);
    uc_free(ws.block);
    uc_free(x);
    return 0;
}

int clip_encode_image(const clip_model *m, const float *px, int B, float *emb, float *seq, float *seq_ln)
{
    if (!m->info.has_vision)
        return uc_err("this CLIP model has no vision tower");
    if (B < 1)
        return 0;
    const clip_info *h = &m->info;
    int64_t G = h->grid, P = h->vision_patch_size, R = G * P, Wv = h->vision_width, D = h->embed_dim;
    int64_t T = G * G + 1, M = (int64_t)B * T, K = 3 * P * P, NP = (int64_t)B * G * G;
    /* conv1 (stride P, no bias) as one GEMM over every patch: rows are
     * patches, columns (channel, dy, dx) in the weight's order. */
    float *patches = uc_alloc((size_t)NP, (size_t)K * sizeof(float));
    for (int64_t b = 0; b < B; b++)
        for (int64_t gy = 0; gy < G; gy++)
            for (int64_t gx = 0; gx < G; gx++) {
                float *row = patches + ((b * G + gy) * G + gx) * K;
                for (int64_t c = 0; c < 3; c++)
                    for (int64_t dy = 0; dy < P; dy++)
                        memcpy(row + (c * P + dy) * P, px + ((b * 3 + c) * R + gy * P + dy) * R + gx * P,
                               (size_t)P * sizeof *px);
            }
    float *pe = uc_alloc((size_t)NP, (size_t)Wv * sizeof(float));
    uc_linear(pe, patches, m->conv1_w, NULL, NP, K, Wv);
    uc_free(patches);
    float *x = uc_alloc((size_t)M, (size_t)Wv * sizeof(float));
    for (int64_t b = 0; b < B; b++)
        for (int64_t t = 0; t < T; t++) {
            const float *src = t == 0 ? m->class_embedding : pe + (b * G * G + t - 1) * Wv;
            const float *pos = m->vis_positional + t * Wv;
            float *dst = x + (b * T + t) * Wv;
            for (int64_t j = 0; j < Wv; j++)
                dst[j] = src[j] + pos[j];
        }
    uc_free(pe);
    uc_layernorm(x, x, m->ln_pre_w, m->ln_pre_b, M, Wv, m->visual.eps);
    clip_ws ws;
    ws_init(&ws, M, T, Wv, 0);
    transformer_forward(&m->visual, x, B, T, &ws);
    if (seq)
        memcpy(seq, x, (size_t)(M * Wv) * sizeof *x);
    if (seq_ln)
        uc_layernorm(seq_ln, x, m->ln_post_w, m->ln_post_b, M, Wv, m->visual.eps);
    if (emb) {
        float *cls = ws.h;
        for (int64_t b = 0; b < B; b++)
            uc_layernorm(cls + b * Wv, x + b * T * Wv, m->ln_post_w, m->ln_post_b, 1, Wv, m->visual.eps);
        uc_matmul(emb, cls, m->proj, B, Wv, D);
    }
    uc_free(ws.block);
    uc_free(x);
    return 0;
}

/* Rows of x[n, D] divided by their L2 norms (no epsilon, as CLIP). */
static float *normalized(const float *x, int64_t n, int64_t D)
{
    float *y = uc_alloc((size_t)(n * D) + 1, sizeof *y);
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t j = 0; j < D; j++)
            s += (double)x[i * D + j] * x[i * D + j];
        float nrm = (float)sqrt(s);
        for (int64_t j = 0; j < D; j++)
            y[i * D + j] = x[i * D + j] / nrm;
    }
    return y;
}

int clip_logits(const clip_model *m, const float *img, int Bi, const float *txt, int Bt, float *logits)
{
    if (!m->info.has_logit_scale)
        return uc_err("tensor logit_scale: missing from the CLIP model");
    int64_t D = m->info.embed_dim;
    float *a = normalized(img, Bi, D), *b = normalized(txt, Bt, D);
    float scale = expf(m->info.logit_scale);
    /* logits = a b^T, then scaled */
    uc_gemm(Bi, Bt, D, a, D, 1, b, 1, D, 0.0f, logits, Bt);
    for (int64_t i = 0; i < (int64_t)Bi * Bt; i++)
        logits[i] *= scale;
    uc_free(a);
    uc_free(b);
    return 0;
}

