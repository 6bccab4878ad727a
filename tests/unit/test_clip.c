/* test_clip.c - CLIP on tiny random models written here with st_write:
 * hyperparameters from shapes and config, invariants of the encoders (the
 * causal mask, EOT pooling, batching), the Hugging Face layout giving the
 * same numbers as the OpenAI one, and the preprocessing size rules and
 * Pillow-exact resampling. */
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "libcommon/image/preprocess.h"
#include "libcommon/models/clip.h"
#include "formats/base.h"
#include "libcommon/image/pil_resize.h"
#include "libcommon/nn/rng.h"

/* ---- a tiny random CLIP ---- */

enum { VOCAB = 300, CTX = 16, TW = 32, TL = 2, TH = 2, EMBED = 24, VW = 48, VL = 2, VH = 3, PATCH = 4, GRID = 3 };
#define RES (PATCH * GRID)

typedef struct {
    char name[128];
    int ndim;
    int64_t shape[4];
    float *data;
} tensor;

static tensor tens[128];
static int ntens;
static uc_rng rng;
static char tmpdir[256];

static void add(const char *name, float std, float mean, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    tensor *t = &tens[ntens++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    int64_t d[4] = {d0, d1, d2, d3}, n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (t->shape[i] = d[i]);
    t->data = uc_alloc((size_t)n + 1, sizeof(float));
    uc_rng_normal(&rng, t->data, n);
    for (int64_t i = 0; i < n; i++) /* values exact in F16, so any storage gives the same model */
        t->data[i] = uc_f16_to_f32(uc_f32_to_f16(mean + std * t->data[i]));
}

/* The data of tensor `name` of the last make_weights. */
static const float *tdata(const char *name)
{
    for (int i = 0; i < ntens; i++)
        if (strcmp(tens[i].name, name) == 0)
            return tens[i].data;
    fail_msg("no tensor %s", name);
    return NULL;
}

static int ends(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* A tensor of the description gets random values of a scale by its kind. */
static int add_described(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    (void)ctx, (void)dtype;
    float std = 0.1f, mean = 0;
    if (!strcmp(name, "logit_scale"))
        std = 0, mean = 2.5f;
    else if (strstr(name, "ln_") && ends(name, ".weight"))
        std = 0.2f, mean = 1;
    else if (ends(name, "bias"))
        std = ends(name, "out_proj.bias") ? 0.05f : 0.1f;
    else if (!strcmp(name, "token_embedding.weight"))
        std = 0.5f;
    else if (!strcmp(name, "text_projection") || !strcmp(name, "visual.class_embedding"))
        std = 0.2f;
    else if (!strcmp(name, "visual.proj"))
        std = 0.15f;
    else if (ends(name, "c_proj.weight")) /* [w, 4w] */
        std = 0.5f / sqrtf((float)shape[0]);
    else if (ndim == 2 && strstr(name, "resblocks.")) /* [out, w] */
        std = 1.0f / sqrtf((float)shape[1]);
    int64_t d[4] = {0, 0, 0, 0};
    for (int k = 0; k < ndim && k < 4; k++)
        d[k] = shape[k];
    add(name, std, mean, ndim, d[0], d[1], d[2], d[3]);
    return 0;
}

/* The tensors CLIP's one description lists for these sizes, OpenAI names;
 * `towers`: 1 text, 2 vision, 3 both. */
static void make_weights(int towers)
{
    for (int i = 0; i < ntens; i++)
        uc_free(tens[i].data);
    ntens = 0;
    uc_rng_init(&rng, 42, 7);
    char cfg[512];
    int n = snprintf(cfg, sizeof cfg, "{\"embed_dim\": %d", EMBED);
    if (towers & 1)
        n += snprintf(cfg + n, sizeof cfg - (size_t)n,
                      ", \"context_length\": %d, \"vocab_size\": %d, \"transformer_width\": %d, "
                      "\"transformer_heads\": %d, \"transformer_layers\": %d",
                      CTX, VOCAB, TW, TH, TL);
    if (towers & 2)
        n += snprintf(cfg + n, sizeof cfg - (size_t)n,
                      ", \"image_resolution\": %d, \"vision_layers\": %d, \"vision_width\": %d, \"vision_heads\": %d, "
                      "\"vision_patch_size\": %d",
                      RES, VL, VW, VH, PATCH);
    snprintf(cfg + n, sizeof cfg - (size_t)n, "}");
    assert_int_equal(uc_clip_tensors(cfg, add_described, NULL), 0);
}

/* Write the tensors as stored by OpenAI (matrices F16, as convert_weights
 * leaves them) with the given metadata pairs. */
static void write_openai(const char *path, const char *const *meta, int nmeta)
{
    st_out o[128];
    uint16_t *half[128] = {0};
    for (int i = 0; i < ntens; i++) {
        const tensor *t = &tens[i];
        o[i] = (st_out){.name = t->name, .dtype = UC_F32, .ndim = t->ndim, .data = t->data};
        memcpy(o[i].shape, t->shape, sizeof t->shape);
        if (t->ndim >= 2) {
            int64_t n = 1;
            for (int d = 0; d < t->ndim; d++)
                n *= t->shape[d];
            half[i] = uc_alloc((size_t)n, sizeof(uint16_t));
            for (int64_t k = 0; k < n; k++)
                half[i][k] = uc_f32_to_f16(t->data[k]);
            o[i].dtype = UC_F16;
            o[i].data = half[i];
        }
    }
    assert_int_equal(st_write(path, o, ntens, meta, nmeta), 0);
    for (int i = 0; i < ntens; i++)
        uc_free(half[i]);
}

/* The same weights as transformers' CLIPModel saves them, written out
 * independently of the loader's table: q/k/v split, projections as
 * Linear weights [out, in]. */
static void write_hf(const char *dir) /* dir: under 256 bytes */
{
    static const char *const rename[][2] = {
        {"token_embedding.weight", "text_model.embeddings.token_embedding.weight"},
        {"positional_embedding", "text_model.embeddings.position_embedding.weight"},
        {"ln_final.", "text_model.final_layer_norm."},
        {"visual.class_embedding", "vision_model.embeddings.class_embedding"},
        {"visual.conv1.weight", "vision_model.embeddings.patch_embedding.weight"},
        {"visual.positional_embedding", "vision_model.embeddings.position_embedding.weight"},
        {"visual.ln_pre.", "vision_model.pre_layrnorm."},
        {"visual.ln_post.", "vision_model.post_layernorm."},
        {"visual.transformer.resblocks.", "vision_model.encoder.layers."},
        {"transformer.resblocks.", "text_model.encoder.layers."},
        {"logit_scale", "logit_scale"},
    };
    static const char *const inner[][2] = {
        {"ln_1.", "layer_norm1."}, {"ln_2.", "layer_norm2."}, {"attn.out_proj.", "self_attn.out_proj."},
        {"mlp.c_fc.", "mlp.fc1."}, {"mlp.c_proj.", "mlp.fc2."},
    };
    st_out o[256];
    float *owned[256];
    char *names[256];
    int n = 0, nown = 0;
    for (int i = 0; i < ntens; i++) {
        const tensor *t = &tens[i];
        char name[160] = "";
        const char *nm = t->name;
        if (strcmp(nm, "text_projection") == 0 || strcmp(nm, "visual.proj") == 0) {
            int64_t r = t->shape[0], c = t->shape[1];
            float *w = owned[nown++] = uc_alloc((size_t)(r * c), sizeof(float));
            for (int64_t a = 0; a < r; a++)
                for (int64_t b = 0; b < c; b++)
                    w[b * r + a] = t->data[a * c + b];
            names[n] = uc_strdup(nm[0] == 't' ? "text_projection.weight" : "visual_projection.weight");
            o[n] = (st_out){.name = names[n], .dtype = UC_F32, .ndim = 2, .shape = {c, r}, .data = w};
            n++;
            continue;
        }
        for (size_t k = 0; k < UC_COUNT(rename) && !name[0]; k++) {
            size_t pl = strlen(rename[k][0]);
            if (strncmp(nm, rename[k][0], pl) == 0)
                snprintf(name, sizeof name, "%s%s", rename[k][1], nm + pl);
        }
        assert_true(name[0]);
        char *dot = strstr(name, "layers.");
        if (dot) {
            char *rest = strchr(dot + 7, '.') + 1;
            char tail[96];
            snprintf(tail, sizeof tail, "%s", rest);
            if (strncmp(tail, "attn.in_proj_", 13) == 0) {
                int bias = strcmp(tail + 13, "bias") == 0;
                int64_t third = t->shape[0] / 3, cols = bias ? 1 : t->shape[1];
                for (int q = 0; q < 3; q++) {
                    snprintf(rest, sizeof name - (size_t)(rest - name), "self_attn.%c_proj.%s", "qkv"[q],
                             bias ? "bias" : "weight");
                    names[n] = uc_strdup(name);
                    o[n] = (st_out){.name = names[n], .dtype = UC_F32, .ndim = t->ndim,
                                    .shape = {third, t->shape[1]}, .data = t->data + q * third * cols};
                    n++;
                }
                continue;
            }
            for (size_t k = 0; k < UC_COUNT(inner); k++) {
                size_t pl = strlen(inner[k][0]);
                if (strncmp(tail, inner[k][0], pl) == 0)
                    snprintf(rest, sizeof name - (size_t)(rest - name), "%s%s", inner[k][1], tail + pl);
            }
        }
        names[n] = uc_strdup(name);
        o[n] = (st_out){.name = names[n], .dtype = UC_F32, .ndim = t->ndim, .data = t->data};
        memcpy(o[n].shape, t->shape, sizeof t->shape);
        n++;
    }
    char path[600];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    assert_int_equal(st_write(path, o, n, NULL, 0), 0);
    for (int i = 0; i < n; i++)
        uc_free(names[i]);
    for (int i = 0; i < nown; i++)
        uc_free(owned[i]);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"projection_dim\": %d, \"text_config\": {\"hidden_size\": %d, \"num_attention_heads\": %d,"
               " \"hidden_act\": \"quick_gelu\", \"layer_norm_eps\": 1e-05},"
               " \"vision_config\": {\"hidden_size\": %d, \"num_attention_heads\": %d,"
               " \"hidden_act\": \"quick_gelu\", \"layer_norm_eps\": 1e-05}}\n",
            EMBED, TW, TH, VW, VH);
    fclose(f);
}

static const char *heads_cfg = "{\"transformer_heads\": 2, \"vision_heads\": 3}";

static clip_model *open_tiny(int towers, const char *name, const char *stage)
{
    char path[512];
    make_weights(towers);
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    const char *meta[4] = {"unclip.config", heads_cfg, "unclip.stage", stage};
    write_openai(path, meta, stage ? 2 : 1); /* pairs */
    return clip_open(path);
}

static void random_tokens(int32_t *tok, int B, int eot_at)
{
    for (int b = 0; b < B; b++) {
        tok[b * CTX] = VOCAB - 2; /* SOT */
        for (int t = 1; t < CTX; t++)
            tok[b * CTX + t] = t < eot_at ? (int32_t)uc_rng_below(&rng, VOCAB - 2) : t == eot_at ? VOCAB - 1 : 0;
    }
}

/* ---- tests ---- */

static void test_shapes(void **state)
{
    (void)state;
    clip_model *m = open_tiny(3, "both.safetensors", "clip");
    assert_non_null(m);
    const clip_info *mi = clip_get_info(m);
    assert_int_equal(mi->layout, CLIP_LAYOUT_OPENAI);
    assert_true(mi->has_text && mi->has_vision && mi->has_logit_scale);
    assert_int_equal(mi->embed_dim, EMBED);
    assert_int_equal(mi->context_length, CTX);
    assert_int_equal(mi->vocab_size, VOCAB);
    assert_int_equal(mi->transformer_width, TW);
    assert_int_equal(mi->transformer_layers, TL);
    assert_int_equal(mi->transformer_heads, TH);
    assert_int_equal(mi->vision_width, VW);
    assert_int_equal(mi->vision_layers, VL);
    assert_int_equal(mi->vision_heads, VH);
    assert_int_equal(mi->vision_patch_size, PATCH);
    assert_int_equal(mi->grid, GRID);
    assert_int_equal(mi->image_resolution, RES);
    assert_float_equal(mi->logit_scale, 2.5f, 0);
    assert_string_equal(mi->model.stage, "clip");
    assert_string_equal(mi->model.id, "both.safetensors");
    assert_true(strncmp(mi->model.checksum, "fnv1a64:", 8) == 0);
    clip_free(m);
}

static void test_config(void **state)
{
    (void)state;
    char path[512];
    make_weights(3);
    snprintf(path, sizeof path, "%s/nocfg.safetensors", tmpdir);
    write_openai(path, NULL, 0);
    st_file *f = st_open(path);
    assert_non_null(f);
    /* width 32 // 64 = 0 heads: the config must say */
    assert_null(clip_load(f, NULL));
    assert_non_null(strstr(uc_errmsg(), "transformer_heads"));
    /* shapes contradicting the config are refused */
    assert_null(clip_load(f, "{\"transformer_heads\": 2, \"vision_heads\": 3, \"transformer_width\": 64}"));
    assert_non_null(strstr(uc_errmsg(), "transformer_width"));
    assert_null(clip_load(f, "{\"transformer_heads\": 3, \"vision_heads\": 3}")); /* 32 % 3 */
    assert_null(clip_load(f, "[1, 2]"));
    clip_model *m = clip_load(f, "{\"transformer_heads\": 4, \"vision_heads\": 2, \"embed_dim\": 24}");
    assert_non_null(m);
    assert_int_equal(clip_get_info(m)->transformer_heads, 4);
    assert_int_equal(clip_get_info(m)->vision_heads, 2);
    clip_free(m);
    st_close(f);
}

static void test_stage(void **state)
{
    (void)state;
    assert_null(open_tiny(3, "prior.safetensors", "prior"));
    assert_non_null(strstr(uc_errmsg(), "prior"));
    assert_non_null(strstr(uc_errmsg(), "clip"));
}

static void test_causal_and_pooling(void **state)
{
    (void)state;
    clip_model *m = open_tiny(3, "both.safetensors", NULL);
    assert_non_null(m);
    int32_t tok[2 * CTX];
    random_tokens(tok, 1, 9);
    memcpy(tok + CTX, tok, CTX * sizeof *tok);
    tok[CTX + 6] = (tok[6] + 1) % (VOCAB - 2); /* a later token changes */
    float seq[2 * CTX * TW], emb[2 * EMBED];
    assert_int_equal(clip_encode_text(m, tok, 2, seq, emb), 0);
    for (int t = 0; t < CTX; t++) {
        double d = 0;
        for (int j = 0; j < TW; j++)
            d = fmax(d, fabs(seq[t * TW + j] - seq[(CTX + t) * TW + j]));
        if (t < 6)
            assert_true(d < 1e-6); /* the causal mask: earlier positions do not see it */
        else
            assert_true(d > 1e-4);
    }
    /* emb = text_seq at the first highest id times text_projection */
    tok[CTX + 3] = VOCAB - 1; /* an earlier EOT pools there */
    assert_int_equal(clip_encode_text(m, tok, 2, seq, emb), 0);
    const int at[2] = {9, 3};
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < EMBED; k++) {
            double s = 0;
            for (int j = 0; j < TW; j++)
                s += (double)seq[(b * CTX + at[b]) * TW + j] * tdata("text_projection")[j * EMBED + k];
            assert_true(fabs(s - emb[b * EMBED + k]) < 1e-5);
        }
    /* batching does not change a row */
    float seq1[CTX * TW], emb1[EMBED];
    assert_int_equal(clip_encode_text(m, tok + CTX, 1, seq1, emb1), 0);
    for (int i = 0; i < CTX * TW; i++)
        assert_true(fabsf(seq1[i] - seq[CTX * TW + i]) < 1e-5f);
    /* without seq only the positions up to the last pooled one are run
     * (rows pooled at 9 and 3): the embeddings are the same */
    float emb2[2 * EMBED];
    assert_int_equal(clip_encode_text(m, tok, 2, NULL, emb2), 0);
    for (int i = 0; i < 2 * EMBED; i++)
        assert_true(fabsf(emb2[i] - emb[i]) < 1e-6f);
    assert_int_equal(clip_encode_text(m, tok + CTX, 1, NULL, emb2), 0); /* alone: 4 positions */
    for (int i = 0; i < EMBED; i++)
        assert_true(fabsf(emb2[i] - emb[EMBED + i]) < 1e-6f);
    /* ids outside the vocabulary are refused */
    tok[5] = VOCAB;
    assert_int_equal(clip_encode_text(m, tok, 1, seq, emb), -1);
    clip_free(m);
}

static void test_image(void **state)
{
    (void)state;
    clip_model *m = open_tiny(3, "both.safetensors", NULL);
    assert_non_null(m);
    enum { T = GRID * GRID + 1, NPX = 3 * RES * RES };
    float px[2 * NPX], emb[2 * EMBED], seq[2 * T * VW], seq_ln[2 * T * VW], emb1[EMBED];
    uc_rng_normal(&rng, px, 2 * NPX);
    assert_int_equal(clip_encode_image(m, px, 2, emb, seq, seq_ln), 0);
    assert_int_equal(clip_encode_image(m, px + NPX, 1, emb1, NULL, NULL), 0);
    for (int k = 0; k < EMBED; k++)
        assert_true(fabsf(emb1[k] - emb[EMBED + k]) < 1e-5f);
    /* emb = ln_post(seq[CLS]) @ proj */
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < EMBED; k++) {
            double s = 0;
            for (int j = 0; j < VW; j++)
                s += (double)seq_ln[b * T * VW + j] * tdata("visual.proj")[j * EMBED + k];
            assert_true(fabs(s - emb[b * EMBED + k]) < 1e-5);
        }
    /* logits: scale * cosine similarity */
    float lg[4];
    assert_int_equal(clip_logits(m, emb, 2, emb, 2, lg), 0);
    assert_true(fabsf(lg[0] - expf(2.5f)) < 1e-4f && fabsf(lg[3] - expf(2.5f)) < 1e-4f);
    assert_true(fabsf(lg[1] - lg[2]) < 1e-5f);
    clip_free(m);
}

static void test_one_tower(void **state)
{
    (void)state;
    clip_model *m = open_tiny(1, "text.safetensors", "clip");
    assert_non_null(m);
    assert_true(clip_get_info(m)->has_text && !clip_get_info(m)->has_vision);
    float px[3 * RES * RES] = {0}, emb[EMBED];
    assert_int_equal(clip_encode_image(m, px, 1, emb, NULL, NULL), -1);
    clip_free(m);
    m = open_tiny(2, "vision.safetensors", "clip");
    assert_non_null(m);
    assert_true(!clip_get_info(m)->has_text && clip_get_info(m)->has_vision);
    assert_int_equal(clip_get_info(m)->embed_dim, EMBED);
    int32_t tok[CTX] = {0};
    assert_int_equal(clip_encode_text(m, tok, 1, NULL, emb), -1);
    assert_int_equal(clip_encode_image(m, px, 1, emb, NULL, NULL), 0);
    clip_free(m);
}

/* Hugging Face names through the layout table give the same numbers. */
static void test_hf_layout(void **state)
{
    (void)state;
    clip_model *a = open_tiny(3, "both.safetensors", NULL);
    assert_non_null(a);
    char dir[300];
    snprintf(dir, sizeof dir, "%s/hf", tmpdir);
    mkdir(dir, 0700);
    write_hf(dir);
    clip_model *b = clip_open(dir);
    if (!b)
        fail_msg("%s", uc_errmsg());
    assert_int_equal(clip_get_info(b)->layout, CLIP_LAYOUT_HF);
    assert_int_equal(clip_get_info(b)->transformer_heads, TH);
    assert_int_equal(clip_get_info(b)->vision_heads, VH);
    assert_int_equal(clip_get_info(b)->transformer_layers, TL);
    assert_int_equal(clip_get_info(b)->vision_layers, VL);
    int32_t tok[2 * CTX];
    random_tokens(tok, 2, 7);
    float sa[2 * CTX * TW], sb[2 * CTX * TW], ea[2 * EMBED], eb[2 * EMBED];
    assert_int_equal(clip_encode_text(a, tok, 2, sa, ea), 0);
    assert_int_equal(clip_encode_text(b, tok, 2, sb, eb), 0);
    for (int i = 0; i < 2 * CTX * TW; i++)
        assert_true(fabsf(sa[i] - sb[i]) < 1e-5f);
    for (int i = 0; i < 2 * EMBED; i++)
        assert_true(fabsf(ea[i] - eb[i]) < 1e-5f);
    float px[3 * RES * RES];
    uc_rng_normal(&rng, px, 3 * RES * RES);
    assert_int_equal(clip_encode_image(a, px, 1, ea, NULL, NULL), 0);
    assert_int_equal(clip_encode_image(b, px, 1, eb, NULL, NULL), 0);
    for (int i = 0; i < EMBED; i++)
        assert_true(fabsf(ea[i] - eb[i]) < 1e-5f);
    assert_float_equal(clip_get_info(a)->logit_scale, clip_get_info(b)->logit_scale, 0);
    clip_free(a);
    clip_free(b);
}

/* ---- preprocessing ---- */

static void test_resize_size(void **state)
{
    (void)state;
    static const int cases[][4] = {
        {100, 80, 280, 224}, {320, 241, 297, 224}, {180, 400, 224, 497}, {256, 300, 224, 262},
        {150, 230, 224, 343}, {300, 200, 336, 224}, {224, 224, 224, 224}, {1, 3, 224, 672},
    };
    for (size_t i = 0; i < UC_COUNT(cases); i++) {
        int ow, oh;
        assert_int_equal(clip_resize_size(cases[i][0], cases[i][1], 224, &ow, &oh), 0);
        assert_int_equal(ow, cases[i][2]);
        assert_int_equal(oh, cases[i][3]);
    }
    int ow, oh;
    assert_int_equal(clip_resize_size(0, 5, 224, &ow, &oh), -1);
}

static float norm_of(int v, int c)
{
    static const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f};
    static const float std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    return ((float)v / 255.0f - mean[c]) / std[c];
}

/* Size already right: no resampling; the crop offset rounds half to even. */
static void test_center_crop(void **state)
{
    (void)state;
    static const int heights[][2] = {{225, 0}, {226, 1}, {227, 2}, {229, 2}, {231, 4}};
    float *out = uc_alloc(3 * 224 * 224, sizeof *out);
    for (size_t k = 0; k < UC_COUNT(heights); k++) {
        int h = heights[k][0];
        uc_image img = {.w = 224, .h = h, .channels = 1};
        img.px = malloc((size_t)224 * (size_t)h);
        for (int y = 0; y < h; y++)
            memset(img.px + y * 224, y, 224);
        assert_int_equal(clip_preprocess(&img, 224, NULL, NULL, out), 0);
        for (int c = 0; c < 3; c++)
            assert_float_equal(out[c * 224 * 224], norm_of(heights[k][1], c), 0);
        free(img.px);
    }
    /* RGBA of the right size keeps its colours (no premultiply round trip) */
    uc_image rgba = {.w = 224, .h = 224, .channels = 4};
    rgba.px = malloc(224 * 224 * 4);
    for (int i = 0; i < 224 * 224; i++) {
        rgba.px[4 * i] = 200, rgba.px[4 * i + 1] = 7, rgba.px[4 * i + 2] = 99, rgba.px[4 * i + 3] = 3;
    }
    assert_int_equal(clip_preprocess(&rgba, 224, NULL, NULL, out), 0);
    assert_float_equal(out[0], norm_of(200, 0), 0);
    assert_float_equal(out[224 * 224], norm_of(7, 1), 0);
    assert_float_equal(out[2 * 224 * 224], norm_of(99, 2), 0);
    free(rgba.px);
    uc_free(out);
}

static void test_pil_constant(void **state)
{
    (void)state;
    /* fixed-point weights sum to one: a constant image stays constant */
    static const int sizes[][2] = {{100, 80}, {320, 241}, {7, 500}, {1000, 3}};
    for (size_t k = 0; k < UC_COUNT(sizes); k++) {
        int w = sizes[k][0], h = sizes[k][1], ow, oh;
        assert_int_equal(clip_resize_size(w, h, 64, &ow, &oh), 0);
        uint8_t *in = uc_alloc((size_t)(w * h * 3), 1), *out = uc_alloc(64 * 64 * 3, 1);
        for (int i = 0; i < w * h; i++)
            in[3 * i] = 13, in[3 * i + 1] = 128, in[3 * i + 2] = 255;
        assert_int_equal(uc_pil_resize_bicubic(in, w, h, 3, ow, oh, (ow - 64) / 2, (oh - 64) / 2, 64, 64, out), 0);
        for (int i = 0; i < 64 * 64; i++)
            assert_true(out[3 * i] == 13 && out[3 * i + 1] == 128 && out[3 * i + 2] == 255);
        uc_free(in);
        uc_free(out);
    }
    uint8_t px[4];
    assert_int_equal(uc_pil_resize_bicubic(px, 2, 2, 1, 4, 4, 2, 2, 3, 3, px), -1); /* window outside */
}

/* A window of the result equals the same pixels of the full result. */
static void test_pil_window(void **state)
{
    (void)state;
    int w = 37, h = 23, ow = 50, oh = 11;
    uint8_t in[37 * 23 * 2], full[50 * 11 * 2], win[20 * 5 * 2];
    for (size_t i = 0; i < sizeof in; i++)
        in[i] = (uint8_t)uc_rng_below(&rng, 256);
    assert_int_equal(uc_pil_resize_bicubic(in, w, h, 2, ow, oh, 0, 0, ow, oh, full), 0);
    assert_int_equal(uc_pil_resize_bicubic(in, w, h, 2, ow, oh, 13, 4, 20, 5, win), 0);
    for (int y = 0; y < 5; y++)
        assert_memory_equal(win + y * 40, full + ((y + 4) * ow + 13) * 2, 40);
    assert_int_equal(uc_pil_resize_nearest(in, w, h, 2, ow, oh, 0, 0, ow, oh, full), 0);
    assert_int_equal(uc_pil_resize_nearest(in, w, h, 2, ow, oh, 13, 4, 20, 5, win), 0);
    for (int y = 0; y < 5; y++)
        assert_memory_equal(win + y * 40, full + ((y + 4) * ow + 13) * 2, 40);
}

static void test_premultiply(void **state)
{
    (void)state;
    uint8_t px[12] = {200, 100, 255, 128, 50, 60, 70, 0, 1, 2, 3, 255};
    uc_pil_premultiply(px, 3, 4);
    static const uint8_t pm[12] = {100, 50, 128, 128, 0, 0, 0, 0, 1, 2, 3, 255};
    assert_memory_equal(px, pm, 12);
    uc_pil_unpremultiply(px, 3, 4);
    static const uint8_t back[12] = {199, 99, 255, 128, 0, 0, 0, 0, 1, 2, 3, 255};
    assert_memory_equal(px, back, 12);
    uint8_t la[2] = {255, 51};
    uc_pil_premultiply(la, 1, 2);
    assert_int_equal(la[0], 51);
}

/* Palette images: nearest on indices, then the palette's colours. */
static void test_palette(void **state)
{
    (void)state;
    uc_image img = {.w = 2, .h = 2, .channels = 1, .palette = 1, .nplte = 2};
    uint8_t idx[4] = {0, 1, 1, 5};
    img.px = idx;
    img.plte[0][0] = 10, img.plte[0][1] = 20, img.plte[0][2] = 30;
    img.plte[1][0] = 200, img.plte[1][1] = 150, img.plte[1][2] = 100;
    float *out = uc_alloc(3 * 8 * 8, sizeof *out);
    assert_int_equal(clip_preprocess(&img, 8, NULL, NULL, out), 0);
    assert_float_equal(out[0], norm_of(10, 0), 0);                 /* (0, 0): index 0 */
    assert_float_equal(out[7], norm_of(200, 0), 0);                /* (7, 0): index 1 */
    assert_float_equal(out[2 * 64 + 63], norm_of(5, 2), 0);        /* index 5 beyond the palette: gray ramp */
    uc_free(out);
}

/* ---- the description ---- */

/* Each listed tensor is checked against file f: present with the listed
 * shape (logit_scale: any shape of one element when scalar_any), and, when
 * dtypes is set, stored in the listed dtype. */
typedef struct {
    st_file *f;
    int dtypes, scalar_any;
    int n, bad;
    char first[200];
} lister;

static int check_listed(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    lister *l = ctx;
    assert_true(strcmp(dtype, "F16") == 0 || strcmp(dtype, "F32") == 0);
    const uc_tensor *t = st_get(l->f, name);
    l->n++;
    int shape_ok = t && (uc_tensor_shape_is(t, ndim, shape) ||
                         (l->scalar_any && strcmp(name, "logit_scale") == 0 && uc_tensor_numel(t) == 1));
    const char *why = !t                                                 ? "missing"
                      : !shape_ok                                        ? "shape differs"
                      : l->dtypes && strcmp(uc_dtype_name(t->dtype), dtype) ? "dtype differs"
                                                                         : NULL;
    if (why && !l->bad++)
        snprintf(l->first, sizeof l->first, "%s: %s", name, why);
    return 0;
}

/* The CLIP(...) arguments of a loaded model, as unclip-convert writes them. */
static void config_of(const clip_info *h, char *out, size_t n)
{
    int k = snprintf(out, n, "{\"embed_dim\": %d", h->embed_dim);
    if (h->has_vision)
        k += snprintf(out + k, n - (size_t)k,
                      ", \"image_resolution\": %d, \"vision_layers\": %d, \"vision_width\": %d, "
                      "\"vision_patch_size\": %d, \"vision_heads\": %d",
                      h->image_resolution, h->vision_layers, h->vision_width, h->vision_patch_size, h->vision_heads);
    if (h->has_text)
        k += snprintf(out + k, n - (size_t)k,
                      ", \"context_length\": %d, \"vocab_size\": %d, \"transformer_width\": %d, "
                      "\"transformer_heads\": %d, \"transformer_layers\": %d",
                      h->context_length, h->vocab_size, h->transformer_width, h->transformer_heads,
                      h->transformer_layers);
    snprintf(out + k, n - (size_t)k, "}");
}

/* A model file holds exactly what the description of its config lists:
 * the config as stored (the CLIP(...) arguments), else (shapes set, or
 * none stored) the one its shapes and stored head counts give. */
static void check_file(const char *path, int dtypes, int shapes)
{
    st_file *f = st_open(path);
    assert_non_null(f);
    char cfg[1024];
    const char *stored = st_meta(f, "unclip.config") ? st_meta(f, "unclip.config") : st_meta(f, "config");
    if (stored && !shapes) {
        snprintf(cfg, sizeof cfg, "%s", stored);
    } else {
        clip_model *m = clip_load(f, stored);
        assert_non_null(m);
        config_of(clip_get_info(m), cfg, sizeof cfg);
        clip_free(m);
    }
    lister l = {.f = f, .dtypes = dtypes, .scalar_any = dtypes};
    assert_int_equal(uc_clip_tensors(cfg, check_listed, &l), 0);
    if (l.bad)
        fail_msg("%s: %s", path, l.first);
    assert_int_equal(l.n, st_count(f)); /* nothing in the file that the walk does not list */
    st_close(f);
}

static int count_fn(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    int *n = ctx;
    if (strcmp(name, "visual.positional_embedding") == 0)
        assert_true(ndim == 2 && shape[0] == 16 * 16 + 1 && shape[1] == 1024);
    if (strcmp(name, "logit_scale") == 0)
        assert_true(ndim == 0 && strcmp(dtype, "F32") == 0);
    if (strcmp(name, "token_embedding.weight") == 0)
        assert_true(ndim == 2 && shape[0] == 49408 && shape[1] == 768 && strcmp(dtype, "F16") == 0);
    ++*n;
    return 0;
}

static int stop_at_2(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    int *n = ctx;
    (void)name, (void)ndim, (void)shape, (void)dtype;
    return ++*n == 2 ? 5 : 0;
}

static void test_description(void **state)
{
    (void)state;
    /* golden cases (stored configs, or shapes only) and the shipped model,
     * a half-precision file: names, shapes and dtypes */
    check_file("tests/golden/clip/text-encode/model.safetensors", 0, 0);
    check_file("tests/golden/clip/image-encode/model.safetensors", 0, 0);
    check_file("tests/golden/clip/image-encode-f32/model.safetensors", 0, 0);
    check_file("tests/golden/clip/logits/model.safetensors", 0, 0);
    check_file("tests/golden/karlo/clip-encode-text-karlo/model.safetensors", 0, 0);
    check_file("models/clip.safetensors", 1, 0);
    /* one tower only, from the tiny models */
    char path[512];
    for (int towers = 1; towers <= 3; towers++) {
        clip_model *m = open_tiny(towers, "tower.safetensors", "clip");
        assert_non_null(m);
        clip_free(m);
        snprintf(path, sizeof path, "%s/tower.safetensors", tmpdir);
        check_file(path, 0, 1); /* unclip.config holds the head counts only */
    }

    /* ViT-L/14: text 2 + 12 x 12 + 3, vision 5 + 24 x 12 + 3, logit_scale */
    int n = 0;
    assert_int_equal(uc_clip_tensors(NULL, count_fn, &n), 0);
    assert_int_equal(n, 149 + 296 + 1);
    n = 0;
    assert_int_equal(uc_clip_tensors(uc_clip_default_config(), count_fn, &n), 0);
    assert_int_equal(n, 446);
    n = 0;
    assert_int_equal(uc_clip_tensors(NULL, stop_at_2, &n), 5);
    assert_int_equal(n, 2);

    /* invalid configs */
    assert_int_equal(uc_clip_tensors("[]", count_fn, &n), -1);
    assert_int_equal(uc_clip_tensors("{\"embed_dim\": 8}", count_fn, &n), -1);
    assert_non_null(strstr(uc_errmsg(), "tower"));
    assert_int_equal(uc_clip_tensors("{\"embed_dim\": 8, \"vision_width\": 64, \"vision_layers\": 1, "
                                     "\"vision_patch_size\": 5, \"image_resolution\": 32}",
                                     count_fn, &n),
                     -1);
    assert_non_null(strstr(uc_errmsg(), "vision_patch_size"));
    assert_int_equal(uc_clip_tensors("{\"embed_dim\": 8, \"transformer_width\": 32, \"transformer_layers\": 1, "
                                     "\"vocab_size\": 10, \"context_length\": 4}",
                                     count_fn, &n),
                     -1); /* 32 // 64 = 0 heads */
    assert_non_null(strstr(uc_errmsg(), "transformer_heads"));
    assert_int_equal(uc_clip_tensors("{\"embed_dim\": 8, \"transformer_width\": 32, \"transformer_layers\": 1, "
                                     "\"vocab_size\": 10, \"context_length\": 100000, \"transformer_heads\": 2}",
                                     count_fn, &n),
                     -1);
}

static void test_tokenizer(void **state)
{
    (void)state;
    clip_model *m = clip_open("models/clip.safetensors"); /* carries unclip.tokenizer.merges */
    assert_non_null(m);
    uc_bpe *b = clip_tokenizer(m);
    assert_non_null(b);
    assert_true(uc_bpe_vocab_size(b) <= clip_get_info(m)->vocab_size);
    uc_bpe_free(b);
    clip_free(m);
    m = open_tiny(2, "vision.safetensors", "clip");
    assert_non_null(m);
    assert_null(clip_tokenizer(m));
    assert_non_null(strstr(uc_errmsg(), "no text tower"));
    clip_free(m);
}

static int setup(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/test_clip.XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    static const char *const files[] = {"both.safetensors", "nocfg.safetensors", "text.safetensors",
                                        "vision.safetensors", "prior.safetensors", "hf/model.safetensors",
                                        "hf/config.json", "hf", "tower.safetensors"};
    char p[600];
    for (size_t i = 0; i < UC_COUNT(files); i++) {
        snprintf(p, sizeof p, "%s/%s", tmpdir, files[i]);
        remove(p);
    }
    for (int i = 0; i < ntens; i++)
        uc_free(tens[i].data);
    return rmdir(tmpdir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shapes),       cmocka_unit_test(test_config),
        cmocka_unit_test(test_stage),        cmocka_unit_test(test_causal_and_pooling),
        cmocka_unit_test(test_image),        cmocka_unit_test(test_one_tower),
        cmocka_unit_test(test_hf_layout),    cmocka_unit_test(test_resize_size),
        cmocka_unit_test(test_center_crop),  cmocka_unit_test(test_pil_constant),
        cmocka_unit_test(test_pil_window),   cmocka_unit_test(test_premultiply),
        cmocka_unit_test(test_palette),     cmocka_unit_test(test_description),
        cmocka_unit_test(test_tokenizer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
