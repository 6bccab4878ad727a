/* prior.c - Karlo's PriorTransformer and its guided sampling (see prior.h).
 * Architecture from karlo/modules/xf.py and karlo/models/prior_model.py. */
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

/* ---- loading ------------------------------------------------------------ */

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

/* A weight "model.<name>" of the given shape. */
static const float *weight(st_file *f, int *bad, int ndim, const int64_t *shape, const char *fmt, ...)
    UC_PRINTF(5, 6);
static const float *weight(st_file *f, int *bad, int ndim, const int64_t *shape, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    int k = snprintf(name, sizeof name, "model.");
    vsnprintf(name + k, sizeof name - (size_t)k, fmt, ap);
    va_end(ap);
    if (*bad)
        return NULL;
    const float *w = st_f32(f, name, ndim, shape);
    if (!w)
        *bad = 1;
    return w;
}

int uc_prior_load(uc_prior *p, st_file *f, const cJSON *config)
{
    memset(p, 0, sizeof *p);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(config, "model");
    const cJSON *hp = cJSON_GetObjectItemCaseSensitive(model, "hparams");
    if (!cJSON_IsObject(hp))
        return uc_err("prior config: model.hparams missing");
    if (hparam_int(hp, "text_ctx", 1, 4096, &p->text_ctx) || hparam_int(hp, "xf_width", 1, 65536, &p->width) ||
        hparam_int(hp, "xf_layers", 0, 1024, &p->layers) || hparam_int(hp, "xf_heads", 1, 4096, &p->heads) ||
        hparam_int(hp, "clip_dim", 1, 65536, &p->clip_dim) || hparam_int(hp, "xf_final_ln", 0, 1, &p->final_ln))
        return -1;
    if (p->width % p->heads)
        return uc_err("prior config: xf_width %d not divisible by xf_heads %d", p->width, p->heads);
    const uc_tensor *te = st_get(f, "model.text_enc_proj.weight");
    if (!te || te->ndim != 2 || te->shape[1] < 1 || te->shape[1] > 65536)
        return uc_err("tensor model.text_enc_proj.weight: missing or not [xf_width, text width]");
    p->text_dim = (int)te->shape[1];

    int64_t W = p->width, D = p->clip_dim, E = p->text_dim;
    int bad = 0;
#define V1(n) ((int64_t[]){n})
#define V2(a, b) ((int64_t[]){a, b})
    p->time_embed_0_w = weight(f, &bad, 2, V2(W, W), "time_embed.0.weight");
    p->time_embed_0_b = weight(f, &bad, 1, V1(W), "time_embed.0.bias");
    p->time_embed_2_w = weight(f, &bad, 2, V2(W, W), "time_embed.2.weight");
    p->time_embed_2_b = weight(f, &bad, 1, V1(W), "time_embed.2.bias");
    p->text_enc_proj_w = weight(f, &bad, 2, V2(W, E), "text_enc_proj.weight");
    p->text_enc_proj_b = weight(f, &bad, 1, V1(W), "text_enc_proj.bias");
    p->text_emb_proj_w = weight(f, &bad, 2, V2(W, D), "text_emb_proj.weight");
    p->text_emb_proj_b = weight(f, &bad, 1, V1(W), "text_emb_proj.bias");
    p->clip_img_proj_w = weight(f, &bad, 2, V2(W, D), "clip_img_proj.weight");
    p->clip_img_proj_b = weight(f, &bad, 1, V1(W), "clip_img_proj.bias");
    p->out_proj_w = weight(f, &bad, 2, V2(D, W), "out_proj.weight");
    p->out_proj_b = weight(f, &bad, 1, V1(D), "out_proj.bias");
    p->positional_embedding =
        weight(f, &bad, 3, ((int64_t[]){1, p->text_ctx + EXT_LEN, W}), "positional_embedding");
    p->prd_emb = weight(f, &bad, 3, ((int64_t[]){1, 1, W}), "prd_emb");
    if (p->final_ln) {
        p->final_ln_w = weight(f, &bad, 1, V1(W), "final_ln.weight");
        p->final_ln_b = weight(f, &bad, 1, V1(W), "final_ln.bias");
    }
    p->blocks = uc_alloc((size_t)(p->layers ? p->layers : 1), sizeof *p->blocks);
    for (int l = 0; l < p->layers && !bad; l++) {
        uc_prior_block *b = &p->blocks[l];
        const char *pre = "transformer.resblocks";
        b->ln_1_w = weight(f, &bad, 1, V1(W), "%s.%d.ln_1.weight", pre, l);
        b->ln_1_b = weight(f, &bad, 1, V1(W), "%s.%d.ln_1.bias", pre, l);
        b->c_qkv_w = weight(f, &bad, 2, V2(3 * W, W), "%s.%d.attn.c_qkv.weight", pre, l);
        b->c_qkv_b = weight(f, &bad, 1, V1(3 * W), "%s.%d.attn.c_qkv.bias", pre, l);
        b->c_proj_w = weight(f, &bad, 2, V2(W, W), "%s.%d.attn.c_proj.weight", pre, l);
        b->c_proj_b = weight(f, &bad, 1, V1(W), "%s.%d.attn.c_proj.bias", pre, l);
        b->ln_2_w = weight(f, &bad, 1, V1(W), "%s.%d.ln_2.weight", pre, l);
        b->ln_2_b = weight(f, &bad, 1, V1(W), "%s.%d.ln_2.bias", pre, l);
        b->c_fc_w = weight(f, &bad, 2, V2(4 * W, W), "%s.%d.mlp.c_fc.weight", pre, l);
        b->c_fc_b = weight(f, &bad, 1, V1(4 * W), "%s.%d.mlp.c_fc.bias", pre, l);
        b->mlp_proj_w = weight(f, &bad, 2, V2(W, 4 * W), "%s.%d.mlp.c_proj.weight", pre, l);
        b->mlp_proj_b = weight(f, &bad, 1, V1(W), "%s.%d.mlp.c_proj.bias", pre, l);
    }
    char extra[96];
    snprintf(extra, sizeof extra, "model.transformer.resblocks.%d.ln_1.weight", p->layers);
    if (!bad && st_get(f, extra))
        bad = uc_err("prior: the file has more than xf_layers = %d resblocks", p->layers) != 0;
    if (!bad && (st_get(f, "clip_mean") || st_get(f, "clip_std"))) {
        p->clip_mean = st_f32(f, "clip_mean", 1, V1(D));
        p->clip_std = p->clip_mean ? st_f32(f, "clip_std", 1, V1(D)) : NULL;
        bad = !p->clip_std;
    }
#undef V1
#undef V2
    if (bad) {
        uc_free(p->blocks);
        p->blocks = NULL;
        return -1;
    }
    return 0;
}

/* uc_prior_load for uc_model_open: the statistics are required in a file,
 * and the config is kept for its diffusion section. */
static int load_file(void *model, st_file *f, const cJSON *config)
{
    uc_prior *p = model;
    if (uc_prior_load(p, f, config))
        return -1;
    if (!p->clip_mean)
        return uc_err("tensors clip_mean and clip_std missing");
    if (!(p->config = cJSON_Duplicate(config, 1)))
        return uc_err("out of memory");
    return 0;
}

int uc_prior_open(uc_prior *p, const char *path)
{
    memset(p, 0, sizeof *p);
    if (!(p->file = uc_model_open(path, "prior", "a prior", load_file, p, &p->info))) {
        uc_free(p->blocks);
        cJSON_Delete(p->config);
        memset(p, 0, sizeof *p);
        return -1;
    }
    return 0;
}

void uc_prior_free(uc_prior *p)
{
    if (!p)
        return;
    uc_free(p->blocks);
    cJSON_Delete(p->config);
    st_close(p->file);
    memset(p, 0, sizeof *p);
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
static void block_tail(const uc_prior_block *b, float *h, const float *att, int64_t rows, int64_t W, float *tmp,
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
    int64_t width;
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
    const int64_t W = p->width, D = p->clip_dim, E = p->text_dim, T = p->text_ctx, H = p->heads, dh = W / H;
    if (P < 1 || P > (1 << 20))
        return uc_err("prior: %lld prompts out of range", (long long)P);
    uc_prior_text *t = uc_alloc(1, sizeof *t);
    t->P = P;
    t->layers = p->layers;
    t->width = W;
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
    t->k = uc_alloc((size_t)(p->layers ? p->layers : 1), sizeof *t->k);
    t->v = uc_alloc((size_t)(p->layers ? p->layers : 1), sizeof *t->v);

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
    for (int64_t l = 0; l < p->layers; l++) {
        const uc_prior_block *b = &p->blocks[l];
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
        if (l == p->layers - 1)
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

int uc_prior_forward(const uc_prior *p, const uc_prior_text *txt, int64_t n, const int64_t *prompt,
                     const float *x, const int64_t *t, float *out)
{
    const int64_t W = p->width, D = p->clip_dim, T = p->text_ctx, H = p->heads, dh = W / H, R = 3 * n;
    if (txt->layers != p->layers || txt->width != W)
        return uc_err("prior: text cache built for another model");
    int64_t maxlen = 0;
    for (int64_t r = 0; r < n; r++) {
        if (prompt[r] < 0 || prompt[r] >= txt->P)
            return uc_err("prior: row %lld refers to prompt %lld of %lld", (long long)r, (long long)prompt[r],
                          (long long)txt->P);
        maxlen = UC_MAX(maxlen, txt->off[prompt[r] + 1] - txt->off[prompt[r]]);
    }
    const float *pos = p->positional_embedding;
    float *h = uc_alloc((size_t)(R * W), sizeof *h), *a = uc_alloc((size_t)(R * W), sizeof *a);
    float *tmp = uc_alloc((size_t)(R * 4 * W), sizeof *tmp), *qkv = uc_alloc((size_t)(R * 3 * W), sizeof *qkv);
    float *att = uc_alloc((size_t)(R * W), sizeof *att), *scores = uc_alloc((size_t)(3 * (maxlen + 3)), sizeof *scores);

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

    for (int64_t l = 0; l < p->layers; l++) {
        const uc_prior_block *b = &p->blocks[l];
        uc_layernorm(a, h, b->ln_1_w, b->ln_1_b, R, W, LN_EPS);
        uc_linear(qkv, a, b->c_qkv_w, b->c_qkv_b, R, W, 3 * W);
        scale_qk(qkv, R, W, H);
        for (int64_t r = 0; r < n; r++) {
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
    if (p->final_ln)
        uc_layernorm(a, a, p->final_ln_w, p->final_ln_b, n, W, LN_EPS);
    uc_linear(out, a, p->out_proj_w, p->out_proj_b, n, W, D);
    uc_free(h);
    uc_free(a);
    uc_free(tmp);
    uc_free(qkv);
    uc_free(att);
    uc_free(scores);
    return 0;
}

int uc_prior_guided(const uc_prior *p, const uc_prior_text *txt, int64_t n, const int64_t *cond,
                    const int64_t *uncond, const float *scale, const float *x, const int64_t *t, float *out)
{
    const int64_t D = p->clip_dim;
    int64_t *prompt = uc_alloc((size_t)(2 * n), sizeof *prompt), *tt = uc_alloc((size_t)(2 * n), sizeof *tt);
    float *xx = uc_alloc((size_t)(2 * n * D), sizeof *xx), *o = uc_alloc((size_t)(2 * n * D), sizeof *o);
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
    uc_free(prompt);
    uc_free(tt);
    uc_free(xx);
    uc_free(o);
    return rc;
}

int uc_prior_denormalize(const uc_prior *p, int64_t n, float *x)
{
    if (!p->clip_mean || !p->clip_std)
        return uc_err("prior: no clip_mean / clip_std to de-normalise with");
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < p->clip_dim; c++)
            x[i * p->clip_dim + c] = x[i * p->clip_dim + c] * p->clip_std[c] + p->clip_mean[c];
    return 0;
}

/* ---- sampling ----------------------------------------------------------- */

typedef struct {
    const uc_prior *p;
    const uc_prior_sample_opts *o;
    int64_t *t;
} sample_ctx;

static int sample_model(void *ctx, const uc_step *s, const float *x, float *out)
{
    sample_ctx *c = ctx;
    for (int64_t i = 0; i < c->o->n; i++)
        c->t[i] = s->t_model;
    return uc_prior_guided(c->p, c->o->text, c->o->n, c->o->cond, c->o->uncond, c->o->scale, x, c->t, out);
}

int uc_prior_sample(const uc_prior *p, const uc_prior_sample_opts *o, float *emb)
{
    if (o->diffusion->mean_type != UC_MEAN_START_X || o->diffusion->var_type == UC_VAR_LEARNED ||
        o->diffusion->var_type == UC_VAR_LEARNED_RANGE)
        return uc_err("prior: the diffusion must predict x_0 with a fixed variance");
    if (!p->clip_mean)
        return uc_err("prior: no clip_mean / clip_std to de-normalise with");
    sample_ctx c = {p, o, uc_alloc((size_t)o->n, sizeof(int64_t))};
    uc_sample_opts so = {
        .n = o->n,
        .channels = p->clip_dim,
        .spatial = 1,
        .sampler = o->sampler,
        .eta = 0.0f,
        .denoise = {.clamp = 10.0f, .clip_denoised = 0},
        .model = sample_model,
        .model_ctx = &c,
        .noise = o->noise,
        .noise_ctx = o->noise_ctx,
        .trace = o->trace,
        .trace_ctx = o->trace_ctx,
    };
    int rc = uc_diffusion_sample(o->diffusion, &so, emb);
    uc_free(c.t);
    return rc ? rc : uc_prior_denormalize(p, o->n, emb);
}
