/* models.c - random model files for unclip-bench (see bench.h).
 *
 * The tensors are those the loaders ask for: each stage's one description
 * (uc_stage_tensors, model.h), in its order. Files are streamed to disk tensor by tensor (a
 * real-size SR file is 5.6 GB of F32), under a temporary name renamed when
 * complete. Weights are uniform with the variance of N(0, 1/fan_in), norm
 * gains 1, biases 0, so activations stay finite through every layer. */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "formats/base.h"
#include "libcommon/models/model.h"
#include "libcommon/nn/rng.h"
#include "bench.h"

/* Bump when the weights written for the same config and seed change
 * (2: tensors in the order of the stages' descriptions). */
#define GEN_VERSION 2

/* ---- configs ------------------------------------------------------------ */

/* OpenAI CLIP ViT-L/14 (the text tower is Karlo's text encoder). */
static const char clip_real[] =
    "{\"embed_dim\":768,\"image_resolution\":224,\"vision_layers\":24,\"vision_width\":1024,"
    "\"vision_patch_size\":14,\"context_length\":77,\"vocab_size\":49408,\"transformer_width\":768,"
    "\"transformer_heads\":12,\"transformer_layers\":12}";
static const char clip_quick[] =
    "{\"embed_dim\":128,\"image_resolution\":64,\"vision_layers\":2,\"vision_width\":128,"
    "\"vision_patch_size\":16,\"context_length\":77,\"vocab_size\":49408,\"transformer_width\":128,"
    "\"transformer_heads\":2,\"transformer_layers\":2}";

/* kakaobrain/karlo configs/prior_1B_vit_l.yaml */
static const char prior_real[] =
    "{\"model\":{\"type\":\"prior\",\"diffusion_sampler\":\"uniform\",\"hparams\":{\"text_ctx\":77,"
    "\"xf_width\":2048,\"xf_layers\":20,\"xf_heads\":32,\"xf_final_ln\":true,\"text_drop\":0.2,"
    "\"clip_dim\":768}},\"diffusion\":{\"steps\":1000,\"learn_sigma\":false,\"sigma_small\":true,"
    "\"noise_schedule\":\"squaredcos_cap_v2\",\"use_kl\":false,\"predict_xstart\":true,"
    "\"rescale_learned_sigmas\":false,\"timestep_respacing\":\"\"}}";
static const char prior_quick[] =
    "{\"model\":{\"type\":\"prior\",\"hparams\":{\"text_ctx\":77,\"xf_width\":256,\"xf_layers\":2,"
    "\"xf_heads\":4,\"xf_final_ln\":true,\"clip_dim\":128}},\"diffusion\":{\"steps\":1000,"
    "\"learn_sigma\":false,\"sigma_small\":true,\"noise_schedule\":\"squaredcos_cap_v2\","
    "\"predict_xstart\":true,\"rescale_learned_sigmas\":false,\"timestep_respacing\":\"\"}}";

/* kakaobrain/karlo configs/decoder_900M_vit_l.yaml (channel_mult '' is
 * 1,2,3,4 at 64 px) */
static const char decoder_real[] =
    "{\"model\":{\"type\":\"t2i-decoder\",\"diffusion_sampler\":\"uniform\",\"hparams\":{\"image_size\":64,"
    "\"num_channels\":320,\"num_res_blocks\":3,\"channel_mult\":\"\",\"attention_resolutions\":\"32,16,8\","
    "\"num_heads\":-1,\"num_head_channels\":64,\"num_heads_upsample\":-1,\"use_scale_shift_norm\":true,"
    "\"dropout\":0.1,\"clip_dim\":768,\"clip_emb_mult\":4,\"text_ctx\":77,\"xf_width\":1536,\"xf_layers\":0,"
    "\"xf_heads\":0,\"xf_final_ln\":false,\"resblock_updown\":true,\"learn_sigma\":true,\"text_drop\":0.3,"
    "\"clip_emb_type\":\"image\",\"clip_emb_drop\":0.1,\"use_plm\":true}},\"diffusion\":{\"steps\":1000,"
    "\"learn_sigma\":true,\"sigma_small\":false,\"noise_schedule\":\"squaredcos_cap_v2\",\"use_kl\":false,"
    "\"predict_xstart\":false,\"rescale_learned_sigmas\":true,\"timestep_respacing\":\"\"}}";
static const char decoder_quick[] =
    "{\"model\":{\"type\":\"t2i-decoder\",\"hparams\":{\"image_size\":32,\"num_channels\":32,"
    "\"num_res_blocks\":1,\"channel_mult\":\"1,2,3\",\"attention_resolutions\":\"16,8\",\"num_heads\":-1,"
    "\"num_head_channels\":32,\"num_heads_upsample\":-1,\"use_scale_shift_norm\":true,\"dropout\":0.0,"
    "\"clip_dim\":128,\"clip_emb_mult\":4,\"text_ctx\":77,\"xf_width\":128,\"xf_layers\":0,"
    "\"resblock_updown\":true,\"learn_sigma\":true,\"clip_emb_type\":\"image\",\"clip_emb_drop\":0.1}},"
    "\"diffusion\":{\"steps\":1000,\"learn_sigma\":true,\"sigma_small\":false,"
    "\"noise_schedule\":\"squaredcos_cap_v2\",\"predict_xstart\":false,\"rescale_learned_sigmas\":true,"
    "\"timestep_respacing\":\"\"}}";

/* kakaobrain/karlo configs/improved_sr_64_256_1.4B.yaml */
static const char sr_real[] =
    "{\"model\":{\"type\":\"improved_sr_64_256\",\"diffusion_sampler\":\"uniform\",\"hparams\":{"
    "\"channels\":320,\"depth\":3,\"channels_multiple\":[1,2,3,4],\"dropout\":0.0}},\"diffusion\":{"
    "\"steps\":1000,\"learn_sigma\":false,\"sigma_small\":true,\"noise_schedule\":\"squaredcos_cap_v2\","
    "\"use_kl\":false,\"predict_xstart\":false,\"rescale_learned_sigmas\":true,\"timestep_respacing\":\"7\"},"
    "\"sampling\":{\"timestep_respacing\":\"7\",\"clip_denoise\":true}}";
static const char sr_quick[] =
    "{\"model\":{\"type\":\"improved_sr_64_256\",\"hparams\":{\"channels\":32,\"depth\":1,"
    "\"channels_multiple\":[1,2],\"dropout\":0.0}},\"diffusion\":{\"steps\":1000,\"learn_sigma\":false,"
    "\"sigma_small\":true,\"noise_schedule\":\"squaredcos_cap_v2\",\"predict_xstart\":false,"
    "\"rescale_learned_sigmas\":true,\"timestep_respacing\":\"7\"}}";

static const struct {
    const char *stage, *real, *quick;
} configs[] = {
    {"clip", clip_real, clip_quick},
    {"prior", prior_real, prior_quick},
    {"decoder", decoder_real, decoder_quick},
    {"sr", sr_real, sr_quick},
};

const char *bench_config(const char *stage, int quick)
{
    for (size_t i = 0; i < UC_COUNT(configs); i++)
        if (strcmp(stage, configs[i].stage) == 0)
            return quick ? configs[i].quick : configs[i].real;
    return NULL;
}

/* ---- tensor lists ------------------------------------------------------- */

typedef struct {
    char *name;
    int ndim;
    int64_t shape[UC_MAXDIM];
    int half; /* stored BF16 in a BF16 file (what a half-precision file halves) */
} tdesc;

typedef struct {
    tdesc *t;
    int n;
    int bf16; /* the file is the BF16 variant */
} tlist;

static int add(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    tlist *l = ctx;
    l->t = uc_xrealloc(l->t, (size_t)l->n + 1, sizeof *l->t);
    tdesc *d = &l->t[l->n++];
    memset(d, 0, sizeof *d);
    d->name = uc_strdup(name);
    d->ndim = ndim;
    d->half = l->bf16 && strcmp(dtype, "F16") == 0;
    if (ndim > UC_MAXDIM)
        return uc_err("bench: tensor %s has %d dimensions", name, ndim);
    if (ndim > 0)
        memcpy(d->shape, shape, (size_t)ndim * sizeof *shape);
    return 0;
}

static void tlist_free(tlist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->t[i].name);
    uc_free(l->t);
    memset(l, 0, sizeof *l);
}

/* ---- values ------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* Every value of tensor d is const_v when *std == 0, else uniform with
 * that standard deviation. */
static void init_rule(const tdesc *d, float *std, float *const_v)
{
    *std = 0;
    *const_v = 0;
    if (d->ndim == 0) { /* logit_scale: log(100) */
        *const_v = 4.6052f;
    } else if (strcmp(d->name, "clip_std") == 0) {
        *const_v = 1.0f;
    } else if (strcmp(d->name, "clip_mean") == 0) {
        *const_v = 0.0f;
    } else if (d->ndim == 1 && ends_with(d->name, ".weight")) { /* LayerNorm / GroupNorm gains */
        *const_v = 1.0f;
    } else if (d->ndim == 1 && ends_with(d->name, ".bias")) {
        *const_v = 0.0f;
    } else if (d->ndim == 1) { /* learned vectors: class_embedding, cf_param */
        *std = 0.02f;
    } else {
        /* fan_in: the input axis; CLIP's [in, out] projections have it first */
        int64_t fan = 1;
        if (strcmp(d->name, "text_projection") == 0 || strcmp(d->name, "visual.proj") == 0)
            fan = d->shape[0];
        else
            for (int i = 1; i < d->ndim; i++)
                fan *= d->shape[i];
        *std = (float)(1.0 / sqrt((double)UC_MAX(fan, 1)));
    }
}

static int64_t numel(const tdesc *d)
{
    int64_t n = 1;
    for (int i = 0; i < d->ndim; i++)
        n *= d->shape[i];
    return n;
}

/* ---- writing ------------------------------------------------------------ */

typedef struct {
    char *s;
    size_t len, cap;
} sbuf;

static void sb_printf(sbuf *b, const char *fmt, ...) UC_PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->len : NULL, b->s ? b->cap - b->len : 0, fmt, ap);
        va_end(ap);
        if (b->s && b->len + (size_t)k < b->cap) {
            b->len += (size_t)k;
            return;
        }
        b->cap = (b->cap + (size_t)k + 1) * 2;
        b->s = uc_xrealloc(b->s, b->cap, 1);
    }
}

/* A JSON string literal of s. */
static void sb_json_str(sbuf *b, const char *s)
{
    sb_printf(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            sb_printf(b, "\\%c", c);
        else if (c < 0x20)
            sb_printf(b, "\\u%04x", c);
        else
            sb_printf(b, "%c", c);
    }
    sb_printf(b, "\"");
}

static int write_model(const char *path, const tlist *l, const char *const *meta, int nmeta, uint64_t seed,
                       int quiet)
{
    sbuf h = {0};
    sb_printf(&h, "{\"__metadata__\":{");
    for (int i = 0; i < nmeta; i++) {
        sb_printf(&h, i ? "," : "");
        sb_json_str(&h, meta[2 * i]);
        sb_printf(&h, ":");
        sb_json_str(&h, meta[2 * i + 1]);
    }
    sb_printf(&h, "}");
    uint64_t off = 0;
    for (int i = 0; i < l->n; i++) {
        const tdesc *d = &l->t[i];
        uint64_t bytes = (uint64_t)numel(d) * (d->half ? 2 : 4);
        sb_printf(&h, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", d->name, d->half ? "BF16" : "F32");
        for (int k = 0; k < d->ndim; k++)
            sb_printf(&h, "%s%lld", k ? "," : "", (long long)d->shape[k]);
        sb_printf(&h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
                  (unsigned long long)(off + bytes));
        off += bytes;
    }
    sb_printf(&h, "}");
    while (h.len % 8) /* data starts 8-byte aligned */
        sb_printf(&h, " ");

    if (!quiet)
        fprintf(stderr, "unclip-bench: writing %s (%.2f GB of random %s weights)\n", path, (double)off / 1e9,
                l->bf16 ? "BF16 and F32" : "F32");
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *fp = fopen(tmp, "wb");
    if (!fp) {
        free(h.s);
        return uc_err("%s: %s", tmp, strerror(errno));
    }
    unsigned char len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (unsigned char)((uint64_t)h.len >> (8 * i));
    int ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(h.s, 1, h.len, fp) == h.len;
    free(h.s);

    enum { CHUNK = 1 << 20 };
    float *buf = uc_alloc(CHUNK, sizeof *buf);
    uint16_t *hb = uc_alloc(CHUNK, sizeof *hb);
    uc_rng rng;
    for (int i = 0; ok && i < l->n; i++) {
        const tdesc *d = &l->t[i];
        float std, cv;
        init_rule(d, &std, &cv);
        uc_rng_init(&rng, seed, (uint32_t)i);
        float a = std * 1.7320508f; /* uniform on [-a, a] has variance a^2 / 3 */
        for (int64_t left = numel(d); ok && left > 0;) {
            int64_t n = UC_MIN(left, (int64_t)CHUNK);
            for (int64_t j = 0; j < n; j++)
                buf[j] = std > 0 ? a * ((float)(uc_rng_u32(&rng) >> 8) * (2.0f / 16777216.0f) - 1.0f) : cv;
            if (d->half) { /* the same values rounded to nearest even */
                for (int64_t j = 0; j < n; j++)
                    hb[j] = uc_f32_to_bf16(buf[j]);
                ok = fwrite(hb, sizeof *hb, (size_t)n, fp) == (size_t)n;
            } else {
                ok = fwrite(buf, sizeof *buf, (size_t)n, fp) == (size_t)n;
            }
            left -= n;
        }
    }
    uc_free(buf);
    uc_free(hb);
    if (fclose(fp) != 0)
        ok = 0;
    if (!ok || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        return uc_err("%s: cannot write (%s)", path, strerror(e));
    }
    return 0;
}

/* The file at path is one this generator wrote for the same config, seed
 * and tensor list. */
static int is_current(const char *path, const char *config, const char *tag, const tlist *l)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return 0;
    st_file *f = st_open(path);
    if (!f)
        return 0;
    const char *c = st_meta(f, "unclip.config"), *g = st_meta(f, "unclip.bench");
    int ok = c && g && strcmp(c, config) == 0 && strcmp(g, tag) == 0 && st_count(f) == l->n;
    for (int i = 0; ok && i < l->n; i++) {
        const uc_tensor *t = st_get(f, l->t[i].name);
        ok = t && t->dtype == (l->t[i].half ? UC_BF16 : UC_F32) && uc_tensor_shape_is(t, l->t[i].ndim, l->t[i].shape);
    }
    st_close(f);
    return ok;
}

int bench_model(const char *dir, const char *stage, int quick, int bf16, uint64_t seed, int quiet, char *path,
                size_t n)
{
    const char *config = bench_config(stage, quick);
    if (!config)
        return uc_err("bench: no stage %s", stage);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return uc_err("%s: %s", dir, strerror(errno));
    snprintf(path, n, "%s/%s%s%s.safetensors", dir, stage, quick ? "-quick" : "", bf16 ? "-bf16" : "");
    tlist l = {.bf16 = bf16};
    int rc = uc_stage_tensors(stage, config, add, &l);
    if (rc == 0) {
        char tag[96], id[64];
        snprintf(tag, sizeof tag, "unclip-bench %d seed %llu", GEN_VERSION, (unsigned long long)seed);
        snprintf(id, sizeof id, "unclip-bench/%s%s%s", stage, quick ? "-quick" : "", bf16 ? "-bf16" : "");
        const char *meta[] = {"unclip.stage", stage, "unclip.config", config, "unclip.model_id", id,
                              "unclip.bench", tag};
        if (!is_current(path, config, tag, &l))
            rc = write_model(path, &l, meta, (int)UC_COUNT(meta) / 2, seed, quiet);
    }
    tlist_free(&l);
    return rc;
}
