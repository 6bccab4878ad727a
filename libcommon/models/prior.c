/* prior.c - Karlo's PriorTransformer and its guided sampling (see prior.h).
 * Architecture from karlo/modules/xf.py and karlo/models/prior_model.py.
 * In order: the handle, the description (one walk that binds or lists the
 * weights), opening, the step workspace, the network, sampling. */
#include "libcommon/models/prior.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/models/model_file.h"
#include "libcommon/nn/ops.h"

#define EXT_LEN 4 /* text_emb, time, x_t, prd positions after the text */
#define LN_EPS 1e-5f

typedef struct {
    const float *ln_1_w, *ln_1_b;         /* [W] */
    const float *c_qkv_w, *c_qkv_b;       /* [3W, W], [3W]: per head [q k v], dh each */
    const float *c_proj_w, *c_proj_b;     /* [W, W], [W] */
    const float *ln_2_w, *ln_2_b;         /* [W] */
    const float *c_fc_w, *c_fc_b;         /* [4W, W], [4W] */
    const float *mlp_proj_w, *mlp_proj_b; /* [W, 4W], [W] (mlp.c_proj) */
} prior_block;

/* Scratch of the step forward for up to `rows` network rows, one
 * allocation, every buffer 64-byte aligned; grown only when a larger batch
 * comes. */
typedef struct {
    int64_t rows;            /* network rows (2 per guided sample) it holds */
    float *h, *a, *att;      /* [3 rows, W] step tokens, normed, attention */
    float *qkv, *tmp;        /* [3 rows, 3W], [3 rows, 4W] */
    float *scores;           /* [3, T + 4] one head's scores */
    float *xx, *o;           /* [rows, D] guided inputs and raw outputs */
    int64_t *prompt, *tt;    /* [rows] guided rows' prompts and timesteps */
    int64_t *st;             /* [rows] the sampler's timesteps */
    void *block;
} step_ws;

struct uc_prior {
    uc_prior_info info;
    /* weights, borrowed from the safetensors file */
    const float *time_embed_0_w, *time_embed_0_b;   /* [W, W], [W] */
    const float *time_embed_2_w, *time_embed_2_b;   /* [W, W], [W] */
    const float *text_enc_proj_w, *text_enc_proj_b; /* [W, E], [W] */
    const float *text_emb_proj_w, *text_emb_proj_b; /* [W, D], [W] */
    const float *clip_img_proj_w, *clip_img_proj_b; /* [W, D], [W] */
    const float *out_proj_w, *out_proj_b;           /* [D, W], [D] */
    const float *positional_embedding;              /* [T + 4, W] */
    const float *prd_emb;                           /* [W] */
    const float *final_ln_w, *final_ln_b;           /* [W], or NULL without xf_final_ln */
    prior_block *blocks;                            /* [layers], owned */
    const float *clip_mean, *clip_std;              /* [D], or NULL */
    float *stats;                                   /* owned [2D] after uc_prior_set_stats */
    st_file *file;                                  /* owned when opened by uc_prior_open */
    cJSON *diffusion;                               /* owned copy of the config's section, or NULL */
    uc_schedule sched;                              /* of the last respacing asked for */
    step_ws ws;
};

/* ---- the description ---------------------------------------------------- */

typedef struct {
    int text_ctx, width, layers, heads, clip_dim, text_dim, final_ln;
} prior_hp;

static const char default_config[] =
    "{\"model\": {\"type\": \"prior\", \"diffusion_sampler\": \"uniform\", \"hparams\": {"
    "\"text_ctx\": 77, \"xf_width\": 2048, \"xf_layers\": 20, \"xf_heads\": 32, \"xf_final_ln\": true, "
    "\"text_drop\": 0.2, \"clip_dim\": 768}}, "
    "\"diffusion\": {\"steps\": 1000, \"learn_sigma\": false, \"sigma_small\": true, "
    "\"noise_schedule\": \"squaredcos_cap_v2\", \"use_kl\": false, \"predict_xstart\": true, "
    "\"rescale_learned_sigmas\": false, \"timestep_respacing\": \"\"}}";

const char *uc_prior_default_config(void) { return default_config; }

static int hparam_int(const cJSON *hp, const char *key, int lo, int hi, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(hp, key);
    if (cJSON_IsBool(v) && lo == 0 && hi == 1) {
        *out = cJSON_IsTrue(v);
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return uc_err("prior config: model.hparams.%s missing or not an integer in %d..%d", key, lo, hi);
    *out = (int)v->valuedouble;
    return 0;
}

/* model.hparams of a config; text_dim 0 when the config does not say it. */
static int parse_hp(const cJSON *config, prior_hp *hp)
{
    memset(hp, 0, sizeof *hp);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(config, "model");
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(model, "hparams");
    if (!cJSON_IsObject(h))
        return uc_err("prior config: model.hparams missing");
    if (hparam_int(h, "text_ctx", 1, 4096, &hp->text_ctx) || hparam_int(h, "xf_width", 1, 65536, &hp->width) ||
        hparam_int(h, "xf_layers", 0, 1024, &hp->layers) || hparam_int(h, "xf_heads", 1, 4096, &hp->heads) ||
        hparam_int(h, "clip_dim", 1, 65536, &hp->clip_dim) || hparam_int(h, "xf_final_ln", 0, 1, &hp->final_ln))
        return -1;
    if (cJSON_GetObjectItemCaseSensitive(h, "text_dim") && hparam_int(h, "text_dim", 1, 65536, &hp->text_dim))
        return -1;
    if (hp->width % hp->heads)
        return uc_err("prior config: xf_width %d not divisible by xf_heads %d", hp->width, hp->heads);
    return 0;
}

/* Binds the tensors of f into p, or (f NULL) reports each to fn. */
typedef struct {
    uc_prior *p;
    st_file *f;
    uc_tensor_fn fn;
    void *ctx;
    int rc; /* nonzero: the walk stops (a failed bind, or fn's return) */
} walker;

enum { HALF = 0, FULL = 1, OPTIONAL = 2 }; /* storage dtype F16 / F32; OPTIONAL: a file may lack it */

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
    if (!w->f) {
        w->rc = w->fn(w->ctx, name, ndim, shape, how & FULL ? "F32" : "F16");
        return NULL;
    }
    if ((how & OPTIONAL) && !st_get(w->f, name))
        return NULL;
    const float *x = st_f32(w->f, name, ndim, shape);
    if (!x)
        w->rc = -1;
    return x;
}

#define D1(a) 1, (int64_t[]){(a)}
#define D2(a, b) 2, (int64_t[]){(a), (b)}
#define D3(a, b, c) 3, (int64_t[]){(a), (b), (c)}

/* The weight tree: PriorDiffusionModel.state_dict() of Karlo (the
 * PriorTransformer under "model."), then the CLIP statistics. */
static int walk(walker *w, const prior_hp *hp)
{
    uc_prior *p = w->p;
    const int64_t W = hp->width, D = hp->clip_dim, E = hp->text_dim, T = hp->text_ctx;
    p->time_embed_0_w = wt(w, HALF, D2(W, W), "model.time_embed.0.weight");
    p->time_embed_0_b = wt(w, HALF, D1(W), "model.time_embed.0.bias");
    p->time_embed_2_w = wt(w, HALF, D2(W, W), "model.time_embed.2.weight");
    p->time_embed_2_b = wt(w, HALF, D1(W), "model.time_embed.2.bias");
    p->text_enc_proj_w = wt(w, HALF, D2(W, E), "model.text_enc_proj.weight");
    p->text_enc_proj_b = wt(w, HALF, D1(W), "model.text_enc_proj.bias");
    p->text_emb_proj_w = wt(w, HALF, D2(W, D), "model.text_emb_proj.weight");
    p->text_emb_proj_b = wt(w, HALF, D1(W), "model.text_emb_proj.bias");
    p->clip_img_proj_w = wt(w, HALF, D2(W, D), "model.clip_img_proj.weight");
    p->clip_img_proj_b = wt(w, HALF, D1(W), "model.clip_img_proj.bias");
    p->out_proj_w = wt(w, HALF, D2(D, W), "model.out_proj.weight");
    p->out_proj_b = wt(w, HALF, D1(D), "model.out_proj.bias");
    p->blocks = uc_alloc((size_t)(hp->layers ? hp->layers : 1), sizeof *p->blocks);
    for (int l = 0; l < hp->layers && !w->rc; l++) {
        prior_block *b = &p->blocks[l];
        const char *pre = "model.transformer.resblocks";
        b->c_qkv_w = wt(w, HALF, D2(3 * W, W), "%s.%d.attn.c_qkv.weight", pre, l);
        b->c_qkv_b = wt(w, HALF, D1(3 * W), "%s.%d.attn.c_qkv.bias", pre, l);
        b->c_proj_w = wt(w, HALF, D2(W, W), "%s.%d.attn.c_proj.weight", pre, l);
        b->c_proj_b = wt(w, HALF, D1(W), "%s.%d.attn.c_proj.bias", pre, l);
        b->ln_1_w = wt(w, FULL, D1(W), "%s.%d.ln_1.weight", pre, l);
        b->ln_1_b = wt(w, FULL, D1(W), "%s.%d.ln_1.bias", pre, l);
        b->c_fc_w = wt(w, HALF, D2(4 * W, W), "%s.%d.mlp.c_fc.weight", pre, l);
        b->c_fc_b = wt(w, HALF, D1(4 * W), "%s.%d.mlp.c_fc.bias", pre, l);
        b->mlp_proj_w = wt(w, HALF, D2(W, 4 * W), "%s.%d.mlp.c_proj.weight", pre, l);
        b->mlp_proj_b = wt(w, HALF, D1(W), "%s.%d.mlp.c_proj.bias", pre, l);
        b->ln_2_w = wt(w, FULL, D1(W), "%s.%d.ln_2.weight", pre, l);
        b->ln_2_b = wt(w, FULL, D1(W), "%s.%d.ln_2.bias", pre, l);
    }
    if (hp->final_ln) {
        p->final_ln_w = wt(w, FULL, D1(W), "model.final_ln.weight");
        p->final_ln_b = wt(w, FULL, D1(W), "model.final_ln.bias");
    }
    p->positional_embedding = wt(w, FULL, D3(1, T + EXT_LEN, W), "model.positional_embedding");
    p->prd_emb = wt(w, FULL, D3(1, 1, W), "model.prd_emb");
    /* non-persistent buffers in Karlo, stored by the converter (--stats) */
    p->clip_mean = wt(w, FULL | OPTIONAL, D1(D), "clip_mean");
    p->clip_std = wt(w, FULL | OPTIONAL, D1(D), "clip_std");
    return w->rc;
}

#undef D1
#undef D2
#undef D3

int uc_prior_tensors(const char *config_json, uc_tensor_fn fn, void *ctx)
{
    cJSON *cfg = cJSON_Parse(config_json ? config_json : default_config);
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return uc_err("prior config: not a JSON object");
    }
    prior_hp hp;
    int rc = parse_hp(cfg, &hp);
    cJSON_Delete(cfg);
    if (rc)
        return -1;
    if (!hp.text_dim)
        hp.text_dim = hp.clip_dim;
    uc_prior p;
    memset(&p, 0, sizeof p);
    walker w = {&p, NULL, fn, ctx, 0};
    rc = walk(&w, &hp);
    uc_free(p.blocks);
    return rc;
}

/* ---- opening ------------------------------------------------------------ */

/* Bind f's weights into p (zeroed) for a parsed config. */
static int bind(uc_prior *p, st_file *f, const cJSON *config)
{
    prior_hp hp;
    if (parse_hp(config, &hp))
        return -1;
    if (!hp.text_dim) { /* the token sequence's width, as the weights have it */
        const uc_tensor *te = st_get(f, "model.text_enc_proj.weight");
        if (!te || te->ndim != 2 || te->shape[1] < 1 || te->shape[1] > 65536)
            return uc_err("tensor model.text_enc_proj.weight: missing or not [xf_width, text width]");
        hp.text_dim = (int)te->shape[1];
    }
    walker w = {p, f, NULL, NULL, 0};
    if (walk(&w, &hp))
        return -1;
    char extra[96];
    snprintf(extra, sizeof extra, "model.transformer.resblocks.%d.ln_1.weight", hp.layers);
    if (st_get(f, extra))
        return uc_err("prior: the file has more than xf_layers = %d resblocks", hp.layers);
    if (!p->clip_mean != !p->clip_std)
        return uc_err("tensor %s: missing (clip_mean and clip_std go together)",
                      p->clip_mean ? "clip_std" : "clip_mean");
    const cJSON *diffusion = cJSON_GetObjectItemCaseSensitive(config, "diffusion");
    if (diffusion && !(p->diffusion = cJSON_Duplicate(diffusion, 1)))
        return uc_err("out of memory");
    p->info = (uc_prior_info){.text_ctx = hp.text_ctx, .width = hp.width, .layers = hp.layers,
                              .heads = hp.heads, .clip_dim = hp.clip_dim, .text_dim = hp.text_dim,
                              .final_ln = hp.final_ln, .has_stats = p->clip_mean != NULL};
    return 0;
}

static void release(uc_prior *p)
{
    uc_free(p->blocks);
    uc_free(p->stats);
    cJSON_Delete(p->diffusion);
    uc_schedule_free(&p->sched);
    uc_free(p->ws.block);
}

uc_prior *uc_prior_load(st_file *f, const char *config_json)
{
    cJSON *cfg = config_json ? cJSON_Parse(config_json) : NULL;
    uc_prior *p = uc_alloc(1, sizeof *p);
    int rc = cJSON_IsObject(cfg) ? bind(p, f, cfg) : uc_err("prior config: not a JSON object");
    cJSON_Delete(cfg);
    if (rc || uc_model_info_fill(f, "prior", &p->info.model)) {
        release(p);
        uc_free(p);
        return NULL;
    }
    return p;
}

/* bind for uc_model_open: a model file must hold the statistics and a
 * valid diffusion section (its schedule is kept for the default
 * respacing). */
static int load_file(void *model, st_file *f, const cJSON *config)
{
    uc_prior *p = model;
    if (bind(p, f, config))
        return -1;
    if (!p->clip_mean)
        return uc_err("tensors clip_mean and clip_std missing");
    const uc_diffusion *d = uc_schedule_get(&p->sched, p->diffusion, "");
    if (!d)
        return -1;
    if (d->mean_type != UC_MEAN_START_X || d->var_type == UC_VAR_LEARNED || d->var_type == UC_VAR_LEARNED_RANGE)
        return uc_err("prior config: the diffusion must predict x_0 with a fixed variance (predict_xstart true, "
                      "learn_sigma false)");
    return 0;
}

uc_prior *uc_prior_open(const char *path)
{
    uc_prior *p = uc_alloc(1, sizeof *p);
    uc_model_info info;
    if (!(p->file = uc_model_open(path, "prior", "a prior", load_file, p, &info))) {
        release(p);
        uc_free(p);
        return NULL;
    }
    p->info.model = info;
    return p;
}

void uc_prior_free(uc_prior *p)
{
    if (!p)
        return;
    release(p);
    st_close(p->file);
    uc_free(p);
}

const uc_prior_info *uc_prior_get_info(const uc_prior *p) { return &p->info; }

int uc_prior_set_stats(uc_prior *p, const float *mean, const float *std)
{
    const int64_t D = p->info.clip_dim;
    if (!p->stats)
        p->stats = uc_alloc((size_t)(2 * D), sizeof *p->stats);
    memcpy(p->stats, mean, (size_t)D * sizeof *mean);
    memcpy(p->stats + D, std, (size_t)D * sizeof *std);
    p->clip_mean = p->stats;
    p->clip_std = p->stats + D;
    p->info.has_stats = 1;
    return 0;
}

int uc_prior_schedule(uc_prior *p, const char *respacing, int *steps)
{
    if (!p->diffusion)
        return uc_err("prior config: diffusion section missing");
    const uc_diffusion *d = uc_schedule_get(&p->sched, p->diffusion, respacing);
    if (!d)
        return -1;
    if (steps)
        *steps = d->steps;
    return 0;
}

/* ---- the step workspace ------------------------------------------------- */

/* Room for `rows` network rows (the whole workspace is replaced when it is
 * too small; the buffers hold nothing between calls). */
static void ws_reserve(uc_prior *p, int64_t rows)
{
    step_ws *ws = &p->ws;
    if (ws->block && ws->rows >= rows)
        return;
    uc_free(ws->block);
    const int64_t W = p->info.width, D = p->info.clip_dim, T = p->info.text_ctx, R = 3 * rows;
    /* float counts of each buffer, each rounded up to 64 bytes */
#define UP(n) (((n) + 15) / 16 * 16)
    const int64_t nf[] = {UP(R * W), UP(R * W), UP(R * W), UP(R * 3 * W), UP(R * 4 * W), UP(3 * (T + EXT_LEN)),
                          UP(rows * D), UP(rows * D)};
    int64_t total = 0;
    for (size_t i = 0; i < UC_COUNT(nf); i++)
        total += nf[i];
    total += 3 * UP(rows * 2); /* the three int64 arrays, in float units */
#undef UP
    float *q = ws->block = uc_alloc((size_t)total, sizeof(float));
    float **dst[] = {&ws->h, &ws->a, &ws->att, &ws->qkv, &ws->tmp, &ws->scores, &ws->xx, &ws->o};
    for (size_t i = 0; i < UC_COUNT(nf); i++) {
        *dst[i] = q;
        q += nf[i];
    }
    const int64_t ni = (rows * 2 + 15) / 16 * 16;
    ws->prompt = (int64_t *)q;
    ws->tt = (int64_t *)(q + ni);
    ws->st = (int64_t *)(q + 2 * ni);
    ws->rows = rows;
}

/* ---- transformer pieces ------------------------------------------------- */

/* Karlo scales q and k each by dh^-1/4 before their product. */
static void scale_qk(float *qkv, int64_t rows, int64_t W, int64_t heads)
{
    int64_t dh = W / heads;
    float s = (float)(1.0 / sqrt(sqrt((double)dh)));
    for (int64_t i = 0; i < rows; i++)
        for (int64_t h = 0; h < heads; h++) {
            float *q = qkv + i * 3 * W + h * 3 * dh;
            for (int64_t c = 0; c < 2 * dh; c++)
                q[c] *= s;
        }
}

/* The rest of a residual block after attention: h += c_proj(att);
 * h += mlp(ln_2(h)). tmp: rows * 4W floats. */
static void block_tail(const prior_block *b, float *h, const float *att, int64_t rows, int64_t W, float *tmp,
                       float *tmp2)
{
    uc_linear(tmp2, att, b->c_proj_w, b->c_proj_b, rows, W, W);
    uc_add(h, tmp2, rows * W);
    uc_layernorm(tmp2, h, b->ln_2_w, b->ln_2_b, rows, W, LN_EPS);
    uc_linear(tmp, tmp2, b->c_fc_w, b->c_fc_b, rows, W, 4 * W);
    uc_gelu(tmp, rows * 4 * W);
    uc_linear(tmp2, tmp, b->mlp_proj_w, b->mlp_proj_b, rows, 4 * W, W);
    uc_add(h, tmp2, rows * W);
}

/* ---- the text prefix ---------------------------------------------------- */

struct uc_prior_text {
    int64_t P;      /* prompts */
    int64_t *off;   /* [P + 1] first token of each prompt's prefix */
    int64_t layers; /* copies of the model's sizes, to check against */
    int64_t width, ctx;
    float **k, **v; /* [layers][total, W]: keys (scaled) and values, heads side by side */
};

int64_t uc_prior_text_count(const uc_prior_text *t) { return t->P; }

void uc_prior_text_free(uc_prior_text *t)
{
    if (!t)
        return;
    for (int64_t l = 0; l < t->layers; l++) {
        uc_free(t->k[l]);
        uc_free(t->v[l]);
    }
    uc_free(t->k);
    uc_free(t->v);
    uc_free(t->off);
    uc_free(t);
}

int uc_prior_text_new(const uc_prior *p, int64_t P, const float *text_emb, const float *text_seq,
                      const uint8_t *mask, uc_prior_text **out)
{
    const int64_t W = p->info.width, D = p->info.clip_dim, E = p->info.text_dim, T = p->info.text_ctx,
                  H = p->info.heads, dh = W / H;
    if (P < 1 || P > (1 << 20))
        return uc_err("prior: %lld prompts out of range", (long long)P);
    uc_prior_text *t = uc_alloc(1, sizeof *t);
    t->P = P;
    t->layers = p->info.layers;
    t->width = W;
    t->ctx = T;
    t->off = uc_alloc((size_t)P + 1, sizeof *t->off);
    int64_t ntext = 0, maxlen = 0;
    for (int64_t i = 0; i < P; i++) {
        int64_t m = 0;
        for (int64_t j = 0; j < T; j++)
            m += mask[i * T + j] != 0;
        t->off[i] = ntext + i;
        ntext += m;
        maxlen = UC_MAX(maxlen, m + 1);
    }
    const int64_t N = ntext + P; /* text tokens plus one text_emb token per prompt */
    t->off[P] = N;
    t->k = uc_alloc((size_t)(p->info.layers ? p->info.layers : 1), sizeof *t->k);
    t->v = uc_alloc((size_t)(p->info.layers ? p->info.layers : 1), sizeof *t->v);

    /* layer-0 input: projected tokens and text embedding plus positions */
    float *h = uc_alloc((size_t)(N * W), sizeof *h), *gin = uc_alloc((size_t)(UC_MAX(ntext, 1) * E), sizeof *gin);
    float *gout = uc_alloc((size_t)(UC_MAX(ntext, P) * W), sizeof *gout);
    int64_t *gpos = uc_alloc((size_t)UC_MAX(ntext, 1), sizeof *gpos);
    for (int64_t i = 0, g = 0; i < P; i++)
        for (int64_t j = 0; j < T; j++)
            if (mask[i * T + j]) {
                memcpy(gin + g * E, text_seq + (i * T + j) * E, (size_t)E * sizeof *gin);
                gpos[g++] = j;
            }
    uc_linear(gout, gin, p->text_enc_proj_w, p->text_enc_proj_b, ntext, E, W);
    for (int64_t i = 0, g = 0; i < P; i++)
        for (int64_t k = t->off[i]; k < t->off[i + 1] - 1; k++, g++)
            for (int64_t c = 0; c < W; c++)
                h[k * W + c] = gout[g * W + c] + p->positional_embedding[gpos[g] * W + c];
    uc_linear(gout, text_emb, p->text_emb_proj_w, p->text_emb_proj_b, P, D, W);
    for (int64_t i = 0; i < P; i++)
        for (int64_t c = 0; c < W; c++)
            h[(t->off[i + 1] - 1) * W + c] = gout[i * W + c] + p->positional_embedding[T * W + c];
    uc_free(gin);
    uc_free(gout);
    uc_free(gpos);

    float *a = uc_alloc((size_t)(N * W), sizeof *a), *qkv = uc_alloc((size_t)(N * 3 * W), sizeof *qkv);
    float *att = uc_alloc((size_t)(N * W), sizeof *att), *tmp = uc_alloc((size_t)(N * 4 * W), sizeof *tmp);
    float *bias = uc_alloc((size_t)(maxlen * maxlen), sizeof *bias);
    float *scores = uc_alloc((size_t)(maxlen * maxlen), sizeof *scores);
    for (int64_t l = 0; l < p->info.layers; l++) {
        const prior_block *b = &p->blocks[l];
        uc_layernorm(a, h, b->ln_1_w, b->ln_1_b, N, W, LN_EPS);
        uc_linear(qkv, a, b->c_qkv_w, b->c_qkv_b, N, W, 3 * W);
        scale_qk(qkv, N, W, H);
        t->k[l] = uc_alloc((size_t)(N * W), sizeof(float));
        t->v[l] = uc_alloc((size_t)(N * W), sizeof(float));
        for (int64_t i = 0; i < N; i++)
            for (int64_t hd = 0; hd < H; hd++) {
                memcpy(t->k[l] + i * W + hd * dh, qkv + i * 3 * W + hd * 3 * dh + dh, (size_t)dh * sizeof(float));
                memcpy(t->v[l] + i * W + hd * dh, qkv + i * 3 * W + hd * 3 * dh + 2 * dh, (size_t)dh * sizeof(float));
            }
        if (l == p->info.layers - 1)
            break; /* the last layer's outputs at text positions are never read */
        for (int64_t i = 0; i < P; i++) {
            int64_t o = t->off[i], L = t->off[i + 1] - o;
            for (int64_t q = 0; q < L; q++)
                for (int64_t k = 0; k < L; k++)
                    bias[q * L + k] = k > q ? -INFINITY : 0.0f;
            for (int64_t hd = 0; hd < H; hd++) {
                const float *base = qkv + o * 3 * W + hd * 3 * dh;
                uc_attention_head(att + o * W + hd * dh, W, base, 3 * W, base + dh, 3 * W, base + 2 * dh, 3 * W, L,
                                  L, dh, 1.0f, bias, scores);
            }
        }
        block_tail(b, h, att, N, W, tmp, a);
    }
    uc_free(h);
    uc_free(a);
    uc_free(qkv);
    uc_free(att);
    uc_free(tmp);
    uc_free(bias);
    uc_free(scores);
    *out = t;
    return 0;
}

/* ---- the step tokens ---------------------------------------------------- */

int uc_prior_forward(uc_prior *p, const uc_prior_text *txt, int64_t n, const int64_t *prompt, const float *x,
                     const int64_t *t, float *out)
{
    const int64_t W = p->info.width, D = p->info.clip_dim, T = p->info.text_ctx, H = p->info.heads, dh = W / H,
                  R = 3 * n;
    if (txt->layers != p->info.layers || txt->width != W || txt->ctx != T)
        return uc_err("prior: text cache built for another model");
    for (int64_t r = 0; r < n; r++)
        if (prompt[r] < 0 || prompt[r] >= txt->P)
            return uc_err("prior: row %lld refers to prompt %lld of %lld", (long long)r, (long long)prompt[r],
                          (long long)txt->P);
    if (n < 1)
        return 0;
    ws_reserve(p, n);
    const float *pos = p->positional_embedding;
    float *h = p->ws.h, *a = p->ws.a, *tmp = p->ws.tmp, *qkv = p->ws.qkv, *att = p->ws.att, *scores = p->ws.scores;

    /* tokens: time embedding, projected x_t, prd query; plus positions */
    for (int64_t r = 0; r < n; r++)
        uc_timestep_embedding(tmp + r * W, (double)t[r], W);
    uc_linear(a, tmp, p->time_embed_0_w, p->time_embed_0_b, n, W, W);
    uc_silu(a, n * W);
    uc_linear(tmp, a, p->time_embed_2_w, p->time_embed_2_b, n, W, W);
    uc_linear(a, x, p->clip_img_proj_w, p->clip_img_proj_b, n, D, W);
    for (int64_t r = 0; r < n; r++)
        for (int64_t c = 0; c < W; c++) {
            h[(3 * r) * W + c] = tmp[r * W + c] + pos[(T + 1) * W + c];
            h[(3 * r + 1) * W + c] = a[r * W + c] + pos[(T + 2) * W + c];
            h[(3 * r + 2) * W + c] = p->prd_emb[c] + pos[(T + 3) * W + c];
        }

    for (int64_t l = 0; l < p->info.layers; l++) {
        const prior_block *b = &p->blocks[l];
        uc_layernorm(a, h, b->ln_1_w, b->ln_1_b, R, W, LN_EPS);
        uc_linear(qkv, a, b->c_qkv_w, b->c_qkv_b, R, W, 3 * W);
        scale_qk(qkv, R, W, H);
        for (int64_t r = 0; r < n; r++) {
            /* L <= T + 1: scores (3 (T + 4) floats) holds 3 rows of L + 3 */
            int64_t o = txt->off[prompt[r]], L = txt->off[prompt[r] + 1] - o, ld = L + 3;
            for (int64_t hd = 0; hd < H; hd++) {
                const float *q = qkv + 3 * r * 3 * W + hd * 3 * dh, *ks = q + dh, *vs = q + 2 * dh;
                const float *kp = txt->k[l] + o * W + hd * dh, *vp = txt->v[l] + o * W + hd * dh;
                float *dst = att + 3 * r * W + hd * dh;
                /* scores[3, L + 3] = q [text keys | step keys]^T, causal among the step keys */
                uc_gemm(3, L, dh, q, 3 * W, 1, kp, 1, W, 0.0f, scores, ld);
                uc_gemm(3, 3, dh, q, 3 * W, 1, ks, 1, 3 * W, 0.0f, scores + L, ld);
                for (int64_t i = 0; i < 3; i++)
                    for (int64_t j = i + 1; j < 3; j++)
                        scores[i * ld + L + j] = -INFINITY;
                uc_softmax_rows(scores, 3, ld);
                uc_gemm(3, dh, L, scores, ld, 1, vp, W, 1, 0.0f, dst, W);
                uc_gemm(3, dh, 3, scores + L, ld, 1, vs, 3 * W, 1, 1.0f, dst, W);
            }
        }
        block_tail(b, h, att, R, W, tmp, a);
    }

    /* output at the prd position */
    for (int64_t r = 0; r < n; r++)
        memcpy(a + r * W, h + (3 * r + 2) * W, (size_t)W * sizeof *a);
    if (p->info.final_ln)
        uc_layernorm(a, a, p->final_ln_w, p->final_ln_b, n, W, LN_EPS);
    uc_linear(out, a, p->out_proj_w, p->out_proj_b, n, W, D);
    return 0;
}

int uc_prior_guided(uc_prior *p, const uc_prior_text *txt, int64_t n, const int64_t *cond, const int64_t *uncond,
                    const float *scale, const float *x, const int64_t *t, float *out)
{
    const int64_t D = p->info.clip_dim;
    if (n < 1)
        return 0;
    ws_reserve(p, 2 * n); /* before taking its buffers: the forward then fits */
    int64_t *prompt = p->ws.prompt, *tt = p->ws.tt;
    float *xx = p->ws.xx, *o = p->ws.o;
    for (int64_t i = 0; i < n; i++) {
        prompt[i] = cond[i];
        prompt[n + i] = uncond[i];
        tt[i] = tt[n + i] = t[i];
    }
    memcpy(xx, x, (size_t)(n * D) * sizeof *xx);
    memcpy(xx + n * D, x, (size_t)(n * D) * sizeof *xx);
    int rc = uc_prior_forward(p, txt, 2 * n, prompt, xx, tt, o);
    for (int64_t i = 0; !rc && i < n; i++)
        for (int64_t c = 0; c < D; c++) {
            float cv = o[i * D + c], uv = o[(n + i) * D + c];
            out[i * D + c] = uv + scale[i] * (cv - uv);
        }
    return rc;
}

int uc_prior_denormalize(const uc_prior *p, int64_t n, float *x)
{
    const int64_t D = p->info.clip_dim;
    if (!p->clip_mean || !p->clip_std)
        return uc_err("prior: no clip_mean / clip_std to de-normalise with");
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < D; c++)
            x[i * D + c] = x[i * D + c] * p->clip_std[c] + p->clip_mean[c];
    return 0;
}

/* ---- sampling ----------------------------------------------------------- */

typedef struct {
    uc_prior *p;
    const uc_prior_batch *b;
    const uc_stage_opts *o;
} sample_ctx;

static int sample_model(void *ctx, const uc_step *s, const float *x, float *out)
{
    sample_ctx *c = ctx;
    int64_t *t = c->p->ws.st;
    for (int64_t i = 0; i < c->b->n; i++)
        t[i] = s->t_model;
    return uc_prior_guided(c->p, c->b->text, c->b->n, c->b->cond, c->b->uncond, c->b->scale, x, t, out);
}

static int sample_trace(void *ctx, const uc_step *s, const float *x_in, const float *sample, const float *pred)
{
    sample_ctx *c = ctx;
    if (c->o->trace && c->o->trace(c->o->trace_ctx, s, x_in, sample, pred))
        return -1;
    if (c->o->progress)
        c->o->progress(c->o->progress_ctx, s->index + 1, s->count);
    return 0;
}

int uc_prior_sample(uc_prior *p, const uc_stage_opts *o, const uc_prior_batch *b, float *emb)
{
    if (uc_prior_schedule(p, o->respacing, NULL))
        return -1;
    const uc_diffusion *d = &p->sched.d;
    if (d->mean_type != UC_MEAN_START_X || d->var_type == UC_VAR_LEARNED || d->var_type == UC_VAR_LEARNED_RANGE)
        return uc_err("prior: the diffusion must predict x_0 with a fixed variance");
    if (!p->clip_mean)
        return uc_err("prior: no clip_mean / clip_std to de-normalise with");
    if (b->n < 1)
        return 0;
    ws_reserve(p, 2 * b->n);
    sample_ctx c = {p, b, o};
    uc_sample_opts so = {
        .n = b->n,
        .channels = p->info.clip_dim,
        .spatial = 1,
        .sampler = o->sampler,
        .eta = o->eta,
        .denoise = {.clamp = 10.0f, .clip_denoised = 0},
        .model = sample_model,
        .model_ctx = &c,
        .noise = o->noise,
        .noise_ctx = o->noise_ctx,
        .trace = o->trace || o->progress ? sample_trace : NULL,
        .trace_ctx = &c,
    };
    int rc = uc_diffusion_sample(d, &so, emb);
    return rc ? rc : uc_prior_denormalize(p, b->n, emb);
}
