/* test_prior.c - the prior transformer against a plain full-sequence
 * implementation of Karlo's PriorTransformer (all text_ctx + 4 positions,
 * padding and causal masks as upstream), model-file checks, guidance and
 * sampling determinism. A small random model is written with st_write. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "formats/safetensors.h"
#include "formats/base.h"
#include "libcommon/nn/ops.h"
#include "libcommon/models/prior.h"
#include "libcommon/nn/rng.h"

enum { T = 6, W = 16, L = 2, H = 4, D = 8, E = 12, S = T + 4 };

static char tmpdir[] = "/tmp/unclip-prior-XXXXXX";
static char model_path[300], clip_path[300], bare_path[300], narrow_path[300];

/* ---- a random model ----------------------------------------------------- */

static st_out outs[64];
static float *bufs[64];
static int nout;

static void add(uc_rng *r, const char *name, float std, float mean, int ndim, const int64_t *shape)
{
    st_out *o = &outs[nout];
    o->name = uc_strdup(name);
    o->dtype = UC_F32;
    o->ndim = ndim;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (o->shape[i] = shape[i]);
    float *x = uc_alloc((size_t)n + 1, sizeof *x);
    uc_rng_normal(r, x, n);
    for (int64_t i = 0; i < n; i++)
        x[i] = mean + std * x[i];
    o->data = bufs[nout++] = x;
}

static int ends(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && !strcmp(s + n - m, suffix);
}

/* A tensor of the prior's description gets random values of a scale by its
 * kind: norms near 1, biases 0.1, matrices 1/sqrt(fan-in). */
static int add_described(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    (void)dtype;
    float std = 0.1f, mean = 0;
    if (!strcmp(name, "clip_std"))
        mean = 1;
    else if (!strcmp(name, "clip_mean"))
        std = 0.5f;
    else if ((strstr(name, "ln_") || strstr(name, "final_ln")) && ends(name, ".weight"))
        std = 0.2f, mean = 1;
    else if (strstr(name, "positional_embedding") || strstr(name, "prd_emb"))
        std = 0.3f;
    else if (ndim == 2)
        std = (strstr(name, "c_qkv") ? 2.0f : strstr(name, "mlp.c_proj") ? 0.5f : 1.0f) / sqrtf((float)shape[1]);
    add(ctx, name, std, mean, ndim, shape);
    return 0;
}

/* Write a prior of the sizes above, its tensors those the prior's one
 * description lists; width_cfg lets the config disagree with the weights.
 * stage NULL: no metadata at all; key (not NULL): one more metadata key,
 * value val. */
static int write_model_meta(const char *path, const char *stage, int width_cfg, const char *key, const char *val)
{
    uc_rng r;
    uc_rng_init(&r, 42, 7);
    nout = 0;
    char desc[400];
    snprintf(desc, sizeof desc,
             "{\"model\":{\"hparams\":{\"text_ctx\":%d,\"xf_width\":%d,\"xf_layers\":%d,\"xf_heads\":%d,"
             "\"xf_final_ln\":true,\"clip_dim\":%d,\"text_dim\":%d}},\"diffusion\":{}}",
             T, W, L, H, D, E);
    if (uc_prior_tensors(desc, add_described, &r))
        return -1;
    char cfg[600];
    snprintf(cfg, sizeof cfg,
             "{\"model\":{\"type\":\"prior\",\"hparams\":{\"text_ctx\":%d,\"xf_width\":%d,\"xf_layers\":%d,"
             "\"xf_heads\":%d,\"xf_final_ln\":true,\"clip_dim\":%d}},\"diffusion\":{\"steps\":1000,"
             "\"noise_schedule\":\"squaredcos_cap_v2\",\"learn_sigma\":false,\"sigma_small\":true,"
             "\"predict_xstart\":true,\"timestep_respacing\":\"\"}}",
             T, width_cfg, L, H, D);
    const char *meta[] = {"unclip.stage", stage, "unclip.config", cfg, "unclip.model_id", "test/prior-random", key, val};
    int rc = st_write(path, outs, nout, meta, stage ? (key ? 4 : 3) : 0);
    for (int i = 0; i < nout; i++) {
        uc_free((void *)outs[i].name);
        uc_free(bufs[i]);
    }
    return rc;
}

static int write_model(const char *path, const char *stage, int width_cfg)
{
    return write_model_meta(path, stage, width_cfg, NULL, NULL);
}

/* ---- the reference: Karlo's forward over the whole sequence ------------- */

static void ref_linear(float *out, const float *in, const float *w, const float *b, int n, int k, int m)
{
    for (int i = 0; i < n; i++)
        for (int j = 0; j < m; j++) {
            double acc = b ? b[j] : 0;
            for (int q = 0; q < k; q++)
                acc += (double)in[i * k + q] * w[j * k + q];
            out[i * m + j] = (float)acc;
        }
}

static void ref_ln(float *x, const float *g, const float *b, int n, int d)
{
    for (int i = 0; i < n; i++) {
        double m = 0, v = 0;
        for (int j = 0; j < d; j++)
            m += x[i * d + j];
        m /= d;
        for (int j = 0; j < d; j++)
            v += (x[i * d + j] - m) * (x[i * d + j] - m);
        v /= d;
        for (int j = 0; j < d; j++)
            x[i * d + j] = (float)((x[i * d + j] - m) / sqrt(v + 1e-5) * g[j] + b[j]);
    }
}

/* One row: text_emb [D], seq [T, E], mask [T], x [D], timestep t. */
/* Weight `name` of model file f; bw: of block l. */
static const float *wt(st_file *f, const char *name)
{
    const float *w = st_f32(f, name, -1, NULL);
    assert_non_null(w);
    return w;
}

static const float *bw(st_file *f, int l, const char *name)
{
    char k[128];
    snprintf(k, sizeof k, "model.transformer.resblocks.%d.%s", l, name);
    return wt(f, k);
}

static void ref_forward(st_file *mf, const float *temb, const float *seq, const uint8_t *mask, const float *x,
                        double t, float *out)
{
    static float h[S * W], a[S * W], qkv[S * 3 * W], att[S * W], f[S * 4 * W], tmp[S * W];
    const int dh = W / H;
    float te[W];
#define WT(name) wt(mf, name)
#define BW(x) bw(mf, l, x)
    uc_timestep_embedding(te, t, W);
    ref_linear(tmp, te, WT("model.time_embed.0.weight"), WT("model.time_embed.0.bias"), 1, W, W);
    for (int j = 0; j < W; j++)
        tmp[j] = tmp[j] / (1 + expf(-tmp[j]));
    ref_linear(h + (T + 1) * W, tmp, WT("model.time_embed.2.weight"), WT("model.time_embed.2.bias"), 1, W, W);
    ref_linear(h, seq, WT("model.text_enc_proj.weight"), WT("model.text_enc_proj.bias"), T, E, W);
    ref_linear(h + T * W, temb, WT("model.text_emb_proj.weight"), WT("model.text_emb_proj.bias"), 1, D, W);
    ref_linear(h + (T + 2) * W, x, WT("model.clip_img_proj.weight"), WT("model.clip_img_proj.bias"), 1, D, W);
    memcpy(h + (T + 3) * W, WT("model.prd_emb"), W * sizeof(float));
    for (int i = 0; i < S * W; i++)
        h[i] += WT("model.positional_embedding")[i];
    double sc = 1 / sqrt(sqrt((double)dh));
    for (int l = 0; l < L; l++) {
        memcpy(a, h, sizeof a);
        ref_ln(a, BW("ln_1.weight"), BW("ln_1.bias"), S, W);
        ref_linear(qkv, a, BW("attn.c_qkv.weight"), BW("attn.c_qkv.bias"), S, W, 3 * W);
        for (int hd = 0; hd < H; hd++)
            for (int q = 0; q < S; q++) {
                double w[S], mx = -INFINITY, sum = 0;
                for (int k = 0; k < S; k++) {
                    int valid = (k >= T || mask[k]) && k <= q;
                    double dot = 0;
                    for (int c = 0; c < dh; c++)
                        dot += qkv[q * 3 * W + hd * 3 * dh + c] * sc * qkv[k * 3 * W + hd * 3 * dh + dh + c] * sc;
                    w[k] = valid ? dot : -INFINITY;
                    mx = fmax(mx, w[k]);
                }
                for (int k = 0; k < S; k++)
                    sum += (w[k] = exp(w[k] - mx));
                for (int c = 0; c < dh; c++) {
                    double o = 0;
                    for (int k = 0; k < S; k++)
                        o += w[k] / sum * qkv[k * 3 * W + hd * 3 * dh + 2 * dh + c];
                    att[q * W + hd * dh + c] = (float)o;
                }
            }
        ref_linear(tmp, att, BW("attn.c_proj.weight"), BW("attn.c_proj.bias"), S, W, W);
        for (int i = 0; i < S * W; i++)
            h[i] += tmp[i];
        memcpy(a, h, sizeof a);
        ref_ln(a, BW("ln_2.weight"), BW("ln_2.bias"), S, W);
        ref_linear(f, a, BW("mlp.c_fc.weight"), BW("mlp.c_fc.bias"), S, W, 4 * W);
        for (int i = 0; i < S * 4 * W; i++)
            f[i] = (float)(0.5 * f[i] * (1 + erf(f[i] / sqrt(2.0))));
        ref_linear(tmp, f, BW("mlp.c_proj.weight"), BW("mlp.c_proj.bias"), S, 4 * W, W);
        for (int i = 0; i < S * W; i++)
            h[i] += tmp[i];
    }
    memcpy(a, h + (S - 1) * W, W * sizeof(float));
    ref_ln(a, WT("model.final_ln.weight"), WT("model.final_ln.bias"), 1, W);
    ref_linear(out, a, WT("model.out_proj.weight"), WT("model.out_proj.bias"), 1, W, D);
#undef BW
#undef WT
}

/* ---- inputs ------------------------------------------------------------- */

enum { P = 4 };
static float emb[P * D], seq[P * T * E];
static const uint8_t masks[P * T] = {
    1, 1, 1, 1, 1, 1, /* full */
    1, 1, 0, 0, 0, 0, /* the empty prompt: SOT, EOT */
    1, 1, 1, 1, 0, 0, /* a prompt with padding */
    1, 0, 1, 1, 0, 1, /* holes */
};

static void make_inputs(void)
{
    uc_rng r;
    uc_rng_init(&r, 9, 1);
    uc_rng_normal(&r, emb, P * D);
    uc_rng_normal(&r, seq, P * T * E);
}

static void assert_close(const float *got, const float *want, int n, double tol)
{
    for (int i = 0; i < n; i++)
        if (!(fabs((double)got[i] - want[i]) <= tol * (1 + fabs((double)want[i]))))
            fail_msg("element %d: got %.9g want %.9g", i, got[i], want[i]);
}

/* ---- tests -------------------------------------------------------------- */

static void test_open_and_refuse(void **state)
{
    (void)state;
    uc_prior *p = uc_prior_open(model_path);
    assert_non_null(p);
    const uc_prior_info *pi = uc_prior_get_info(p);
    assert_int_equal(pi->width, W);
    assert_int_equal(pi->layers, L);
    assert_int_equal(pi->heads, H);
    assert_int_equal(pi->text_ctx, T);
    assert_int_equal(pi->text_dim, E);
    assert_int_equal(pi->clip_dim, D);
    assert_true(pi->final_ln && pi->has_stats);
    assert_string_equal(pi->model.stage, "prior");
    assert_string_equal(pi->model.id, "test/prior-random");
    int steps = 0;
    assert_int_equal(uc_prior_schedule(p, "ddim8", &steps), 0);
    assert_int_equal(steps, 8);
    assert_int_equal(uc_prior_schedule(p, NULL, &steps), 0); /* the config's own: "" */
    assert_int_equal(steps, 1000);
    assert_int_equal(uc_prior_schedule(p, "x7", &steps), -1);
    uc_prior_free(p);

    assert_null(uc_prior_open(clip_path)); /* names both stages */
    assert_non_null(strstr(uc_errmsg(), "a clip model, not a prior model"));
    assert_null(uc_prior_open(bare_path));
    assert_non_null(strstr(uc_errmsg(), "unclip.stage"));
    assert_null(uc_prior_open(narrow_path)); /* config width 8, weights 16 */
    assert_non_null(strstr(uc_errmsg(), "model.time_embed.0.weight"));
}

/* unclip.clip: the CLIPs a model pairs with, checked at open; a record's
 * CLIP matches by id or checksum, whole entries only; no declaration pairs
 * with anything */
static void test_clip_pairing(void **state)
{
    (void)state;
    char path[320];
    snprintf(path, sizeof path, "%s/paired.safetensors", tmpdir);
    assert_int_equal(write_model_meta(path, "prior", W, "unclip.clip", "test/clip-a sha256:abc"), 0);
    uc_prior *p = uc_prior_open(path);
    assert_non_null(p);
    const uc_model_info *m = &uc_prior_get_info(p)->model;
    assert_string_equal(m->clip, "test/clip-a sha256:abc");
    assert_true(uc_model_pairs(m, "test/clip-a", NULL));
    assert_true(uc_model_pairs(m, "other", "sha256:abc"));
    assert_false(uc_model_pairs(m, "test/clip", "sha256:ab"));
    assert_false(uc_model_pairs(m, "test/clip-a sha256:abc", NULL));
    assert_false(uc_model_pairs(m, NULL, NULL));
    uc_prior_free(p);
    p = uc_prior_open(model_path);
    assert_null(uc_prior_get_info(p)->model.clip);
    assert_true(uc_model_pairs(&uc_prior_get_info(p)->model, "anything", NULL));
    uc_prior_free(p);
    static const char *const bad[] = {"", "a  b", " a", "a ", "a\tb", "caf\xc3\xa9",
                                      "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(write_model_meta(path, "prior", W, "unclip.clip", bad[i]), 0);
        assert_null(uc_prior_open(path));
        assert_non_null(strstr(uc_errmsg(), "paired.safetensors: metadata unclip.clip"));
    }
}

/* uc_model_verify: the SHA-256 of the tensor data, recomputed at open; a
 * claim that differs is refused, an equal one marked verified; off, the
 * checksum is the claim as it stands */
static void test_verify(void **state)
{
    (void)state;
    char path[320], sum[80];
    snprintf(path, sizeof path, "%s/claims.safetensors", tmpdir);
    uc_model_verify(1);
    uc_prior *p = uc_prior_open(model_path); /* claims nothing */
    assert_non_null(p);
    const uc_model_info *m = &uc_prior_get_info(p)->model;
    assert_int_equal(m->verified, 1);
    assert_int_equal(strlen(m->checksum), 7 + 64);
    assert_memory_equal(m->checksum, "sha256:", 7);
    snprintf(sum, sizeof sum, "%s", m->checksum);
    uc_prior_free(p);
    assert_int_equal(write_model_meta(path, "prior", W, "unclip.checksum", sum), 0);
    assert_non_null(p = uc_prior_open(path));
    assert_int_equal(uc_prior_get_info(p)->model.verified, 1);
    assert_string_equal(uc_prior_get_info(p)->model.checksum, sum);
    uc_prior_free(p);
    assert_int_equal(write_model_meta(path, "prior", W, "unclip.checksum", "sha256:0123"), 0);
    assert_null(uc_prior_open(path));
    assert_non_null(strstr(uc_errmsg(), "claims.safetensors: metadata unclip.checksum sha256:0123, but the SHA-256"));
    assert_non_null(strstr(uc_errmsg(), sum));
    uc_model_verify(0);
    assert_non_null(p = uc_prior_open(path)); /* the claim, unchecked */
    assert_int_equal(uc_prior_get_info(p)->model.verified, 0);
    assert_string_equal(uc_prior_get_info(p)->model.checksum, "sha256:0123");
    uc_prior_free(p);
    assert_non_null(p = uc_prior_open(model_path)); /* no claim: a hash of the header */
    assert_memory_equal(uc_prior_get_info(p)->model.checksum, "fnv1a64:", 8);
    uc_prior_free(p);
}

static void test_forward_matches_reference(void **state)
{
    (void)state;
    uc_prior *p = uc_prior_open(model_path);
    assert_non_null(p);
    make_inputs();
    uc_prior_text *txt;
    assert_int_equal(uc_prior_text_new(p, P, emb, seq, masks, &txt), 0);
    assert_int_equal(uc_prior_text_count(txt), P);

    enum { N = 6 };
    int64_t prompt[N] = {0, 1, 2, 3, 2, 0}, t[N] = {999, 0, 500, 17, 250, 3};
    float x[N * D], out[N * D], want[D];
    uc_rng r;
    uc_rng_init(&r, 3, 3);
    uc_rng_normal(&r, x, N * D);
    assert_int_equal(uc_prior_forward(p, txt, N, prompt, x, t, out), 0);
    st_file *mf = st_open(model_path);
    assert_non_null(mf);
    for (int i = 0; i < N; i++) {
        ref_forward(mf, emb + prompt[i] * D, seq + prompt[i] * T * E, masks + prompt[i] * T, x + i * D,
                    (double)t[i], want);
        assert_close(out + i * D, want, D, 2e-5);
    }
    st_close(mf);

    /* padding positions cannot matter: change them, get the same bytes */
    float seq2[P * T * E];
    memcpy(seq2, seq, sizeof seq2);
    for (int i = 0; i < P * T; i++)
        if (!masks[i])
            for (int c = 0; c < E; c++)
                seq2[i * E + c] = 1e3f * (float)(c + 1);
    uc_prior_text *txt2;
    float out2[N * D];
    assert_int_equal(uc_prior_text_new(p, P, emb, seq2, masks, &txt2), 0);
    assert_int_equal(uc_prior_forward(p, txt2, N, prompt, x, t, out2), 0);
    assert_memory_equal(out, out2, sizeof out);

    int64_t badp[1] = {P};
    assert_int_equal(uc_prior_forward(p, txt, 1, badp, x, t, out), -1);
    uc_prior_text_free(txt);
    uc_prior_text_free(txt2);
    uc_prior_free(p);
}

static void test_guided(void **state)
{
    (void)state;
    uc_prior *p = uc_prior_open(model_path);
    assert_non_null(p);
    make_inputs();
    uc_prior_text *txt;
    assert_int_equal(uc_prior_text_new(p, P, emb, seq, masks, &txt), 0);
    int64_t cond[2] = {0, 2}, unc[2] = {1, 1}, t[2] = {700, 700}, rows[4] = {0, 2, 1, 1};
    float scale[2] = {4, 1}, x[2 * D], g[2 * D], raw[4 * D];
    for (int i = 0; i < 2 * D; i++)
        x[i] = 0.1f * (float)(i % 7) - 0.3f;
    float xx[4 * D];
    memcpy(xx, x, sizeof x);
    memcpy(xx + 2 * D, x, sizeof x);
    int64_t tt[4] = {700, 700, 700, 700};
    assert_int_equal(uc_prior_guided(p, txt, 2, cond, unc, scale, x, t, g), 0);
    assert_int_equal(uc_prior_forward(p, txt, 4, rows, xx, tt, raw), 0);
    for (int i = 0; i < 2; i++)
        for (int c = 0; c < D; c++) {
            float cv = raw[i * D + c], uv = raw[(2 + i) * D + c];
            assert_true(fabsf(g[i * D + c] - (uv + scale[i] * (cv - uv))) <= 1e-6f * (1 + fabsf(cv)));
        }
    /* scale 1: the conditional prediction */
    assert_close(g + D, raw + D, D, 1e-6);
    uc_prior_text_free(txt);
    uc_prior_free(p);
}

typedef struct {
    uc_rng rng[4];
    int rows;
} noise_rows;

static int noise(void *ctx, int draw, float *out, int64_t n)
{
    noise_rows *nr = ctx;
    (void)draw;
    for (int r = 0; r < nr->rows; r++)
        uc_rng_normal(&nr->rng[r], out + r * (n / nr->rows), n / nr->rows);
    return 0;
}

typedef struct {
    int calls, last_done, last_total;
} progress_count;

static void count_progress(void *ctx, int done, int total)
{
    progress_count *pc = ctx;
    pc->calls++;
    assert_int_equal(done, pc->last_done + 1);
    pc->last_done = done;
    pc->last_total = total;
}

static void test_sample(void **state)
{
    (void)state;
    uc_prior *p = uc_prior_open(model_path);
    assert_non_null(p);
    make_inputs();
    uc_prior_text *txt;
    assert_int_equal(uc_prior_text_new(p, 2, emb + 2 * D, seq + 2 * T * E, masks + 2 * T, &txt), 0);
    int64_t cond[3] = {0, 0, 0}, unc[3] = {1, 1, 1};
    float scale[3] = {4, 4, 4}, a[3 * D], b[3 * D], one[D];
    for (int sampler = 0; sampler < 2; sampler++) {
        noise_rows nr = {.rows = 3};
        progress_count pc = {0};
        uc_stage_opts o = {.respacing = "ddim8", .sampler = sampler ? UC_SAMPLER_DDIM : UC_SAMPLER_DDPM,
                           .noise = noise, .noise_ctx = &nr, .progress = count_progress, .progress_ctx = &pc};
        uc_prior_batch pb = {.text = txt, .n = 3, .cond = cond, .uncond = unc, .scale = scale};
        for (int r = 0; r < 3; r++)
            uc_rng_init(&nr.rng[r], 5, (uint32_t)r);
        assert_int_equal(uc_prior_sample(p, &o, &pb, a), 0);
        assert_int_equal(pc.calls, 8);
        assert_int_equal(pc.last_total, 8);
        for (int r = 0; r < 3; r++)
            uc_rng_init(&nr.rng[r], 5, (uint32_t)r);
        o.progress = NULL;
        assert_int_equal(uc_prior_sample(p, &o, &pb, b), 0);
        assert_memory_equal(a, b, sizeof a); /* deterministic */
        for (int i = 0; i < 3 * D; i++)
            assert_true(isfinite(a[i]));
        assert_true(memcmp(a, a + D, D * sizeof(float)) != 0); /* rows draw their own noise */
        /* a row sampled alone is the same row (the workspace of 3 rows serves 1) */
        nr.rows = 1;
        pb.n = 1;
        uc_rng_init(&nr.rng[0], 5, 2);
        assert_int_equal(uc_prior_sample(p, &o, &pb, one), 0);
        assert_close(one, a + 2 * D, D, 1e-5);
    }
    /* a bad respacing is an error, and the model stays usable */
    noise_rows nr = {.rows = 1};
    uc_stage_opts bad = {.respacing = "ddim0", .noise = noise, .noise_ctx = &nr};
    uc_prior_batch pb = {.text = txt, .n = 1, .cond = cond, .uncond = unc, .scale = scale};
    assert_int_equal(uc_prior_sample(p, &bad, &pb, one), -1);
    uc_prior_text_free(txt);
    uc_prior_free(p);
}

/* ---- the description ----------------------------------------------------- */

/* Each listed tensor is checked against file f: present with the listed
 * shape (and, when dtypes is set, the listed dtype). */
typedef struct {
    st_file *f;
    int dtypes;
    int n, skipped, bad;
    char first[200];
    const char *skip[4]; /* names the file may lack */
} lister;

static int check_listed(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    lister *l = ctx;
    assert_true(strcmp(dtype, "F16") == 0 || strcmp(dtype, "F32") == 0);
    const uc_tensor *t = st_get(l->f, name);
    for (int i = 0; !t && i < 4 && l->skip[i]; i++)
        if (strcmp(name, l->skip[i]) == 0) {
            l->skipped++;
            return 0;
        }
    l->n++;
    const char *why = !t                                            ? "missing"
                      : !uc_tensor_shape_is(t, ndim, shape)           ? "shape differs"
                      : l->dtypes && strcmp(uc_dtype_name(t->dtype), dtype) ? "dtype differs"
                                                                      : NULL;
    if (why && !l->bad++)
        snprintf(l->first, sizeof l->first, "%s: %s", name, why);
    return 0;
}

static char *read_text(const char *path)
{
    char *text;
    size_t len;
    return uc_read_file(path, 1 << 20, &text, &len) ? NULL : text;
}

/* A golden case's checkpoint holds exactly the description of its config
 * (Karlo's state_dict has no clip_mean / clip_std: non-persistent buffers). */
static void check_golden(const char *dir)
{
    char path[256];
    snprintf(path, sizeof path, "tests/golden/karlo/%s/case.json", dir);
    char *text = read_text(path);
    assert_non_null(text);
    cJSON *cs = cJSON_Parse(text);
    free(text);
    assert_non_null(cs);
    char *cfg = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(cs, "config"));
    snprintf(path, sizeof path, "tests/golden/karlo/%s/model.safetensors", dir);
    lister l = {.f = st_open(path), .skip = {"clip_mean", "clip_std"}};
    assert_non_null(l.f);
    assert_int_equal(uc_prior_tensors(cfg, check_listed, &l), 0);
    if (l.bad)
        fail_msg("%s: %s", dir, l.first);
    assert_int_equal(l.skipped, 2);
    assert_int_equal(l.n, st_count(l.f)); /* nothing in the file that the walk does not list */
    st_close(l.f);
    cJSON_free(cfg);
    cJSON_Delete(cs);
}

static int count_fn(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    int *n = ctx;
    (void)ndim, (void)dtype;
    if (strcmp(name, "model.positional_embedding") == 0) {
        assert_int_equal(ndim, 3);
        assert_true(shape[0] == 1 && shape[1] == 81 && shape[2] == 2048);
    }
    if (strcmp(name, "model.text_enc_proj.weight") == 0)
        assert_true(shape[0] == 2048 && shape[1] == 768);
    ++*n;
    return 0;
}

static int stop_at_3(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    int *n = ctx;
    (void)name, (void)ndim, (void)shape, (void)dtype;
    return ++*n == 3 ? 7 : 0;
}

static void test_description(void **state)
{
    (void)state;
    check_golden("prior-forward");
    check_golden("prior-sample");
    check_golden("prior-sample-ddim");

    /* the shipped model (a half-precision file): names, shapes and dtypes,
     * the statistics included */
    st_file *f = st_open("models/prior.safetensors");
    assert_non_null(f);
    lister ls = {.f = f, .dtypes = 1};
    assert_int_equal(uc_prior_tensors(st_meta(f, "unclip.config"), check_listed, &ls), 0);
    if (ls.bad)
        fail_msg("models/prior.safetensors: %s", ls.first);
    assert_int_equal(ls.n, st_count(f));
    st_close(f);

    /* the released sizes: 12 + 20 x 12 + final_ln 2 + positions, prd 2 + stats 2 */
    int n = 0;
    assert_int_equal(uc_prior_tensors(NULL, count_fn, &n), 0);
    assert_int_equal(n, 12 + 20 * 12 + 2 + 2 + 2);
    n = 0;
    assert_int_equal(uc_prior_tensors(uc_prior_default_config(), count_fn, &n), 0);
    assert_int_equal(n, 258);
    n = 0;
    assert_int_equal(uc_prior_tensors(NULL, stop_at_3, &n), 7);
    assert_int_equal(n, 3);
    /* text_dim: Karlo's is clip_dim; a config may name another */
    lister l = {.f = st_open(model_path)};
    char cfg[400];
    snprintf(cfg, sizeof cfg,
             "{\"model\":{\"hparams\":{\"text_ctx\":%d,\"xf_width\":%d,\"xf_layers\":%d,\"xf_heads\":%d,"
             "\"xf_final_ln\":true,\"clip_dim\":%d,\"text_dim\":%d}}}",
             T, W, L, H, D, E);
    assert_int_equal(uc_prior_tensors(cfg, check_listed, &l), 0);
    if (l.bad)
        fail_msg("%s", l.first);
    assert_int_equal(l.n, st_count(l.f));
    /* which the loader checks too */
    uc_prior *p = uc_prior_load(l.f, cfg);
    assert_non_null(p);
    uc_prior_free(p);
    snprintf(cfg, sizeof cfg,
             "{\"model\":{\"hparams\":{\"text_ctx\":%d,\"xf_width\":%d,\"xf_layers\":%d,\"xf_heads\":%d,"
             "\"xf_final_ln\":true,\"clip_dim\":%d,\"text_dim\":%d}}}",
             T, W, L, H, D, E + 1);
    assert_null(uc_prior_load(l.f, cfg));
    assert_non_null(strstr(uc_errmsg(), "model.text_enc_proj.weight"));
    st_close(l.f);

    /* invalid configs */
    assert_int_equal(uc_prior_tensors("[1]", count_fn, &n), -1);
    assert_int_equal(uc_prior_tensors("{\"model\":{\"hparams\":{\"text_ctx\":77}}}", count_fn, &n), -1);
    assert_non_null(strstr(uc_errmsg(), "xf_width"));
    assert_int_equal(
        uc_prior_tensors("{\"model\":{\"hparams\":{\"text_ctx\":7,\"xf_width\":30,\"xf_layers\":1,\"xf_heads\":4,"
                         "\"xf_final_ln\":0,\"clip_dim\":8}}}",
                         count_fn, &n),
        -1);
    assert_non_null(strstr(uc_errmsg(), "divisible"));
}

static int setup(void **state)
{
    (void)state;
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(model_path, sizeof model_path, "%s/prior.safetensors", tmpdir);
    snprintf(clip_path, sizeof clip_path, "%s/clip.safetensors", tmpdir);
    snprintf(bare_path, sizeof bare_path, "%s/bare.safetensors", tmpdir);
    snprintf(narrow_path, sizeof narrow_path, "%s/narrow.safetensors", tmpdir);
    return write_model(model_path, "prior", W) || write_model(clip_path, "clip", W) ||
                   write_model(bare_path, NULL, W) || write_model(narrow_path, "prior", W / 2)
               ? -1
               : 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_and_refuse),
        cmocka_unit_test(test_clip_pairing),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_guided),
        cmocka_unit_test(test_sample),
        cmocka_unit_test(test_description),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
