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

#define ADD(name, std, mean, ...)                                                                              \
    add(&r, name, std, mean, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})

/* Write a prior of the sizes above; width_cfg lets the config disagree
 * with the weights. stage NULL: no metadata at all. */
static int write_model(const char *path, const char *stage, int width_cfg)
{
    uc_rng r;
    uc_rng_init(&r, 42, 7);
    nout = 0;
    float s = 1.0f / sqrtf((float)W);
    ADD("model.time_embed.0.weight", s, 0, W, W);
    ADD("model.time_embed.0.bias", 0.1f, 0, W);
    ADD("model.time_embed.2.weight", s, 0, W, W);
    ADD("model.time_embed.2.bias", 0.1f, 0, W);
    ADD("model.text_enc_proj.weight", 1.0f / sqrtf((float)E), 0, W, E);
    ADD("model.text_enc_proj.bias", 0.1f, 0, W);
    ADD("model.text_emb_proj.weight", 1.0f / sqrtf((float)D), 0, W, D);
    ADD("model.text_emb_proj.bias", 0.1f, 0, W);
    ADD("model.clip_img_proj.weight", 1.0f / sqrtf((float)D), 0, W, D);
    ADD("model.clip_img_proj.bias", 0.1f, 0, W);
    ADD("model.out_proj.weight", s, 0, D, W);
    ADD("model.out_proj.bias", 0.1f, 0, D);
    ADD("model.positional_embedding", 0.3f, 0, 1, S, W);
    ADD("model.prd_emb", 0.3f, 0, 1, 1, W);
    ADD("model.final_ln.weight", 0.2f, 1, W);
    ADD("model.final_ln.bias", 0.1f, 0, W);
    char k[128];
    for (int l = 0; l < L; l++) {
#define K(x) (snprintf(k, sizeof k, "model.transformer.resblocks.%d.%s", l, x), k)
        ADD(K("ln_1.weight"), 0.2f, 1, W);
        ADD(K("ln_1.bias"), 0.1f, 0, W);
        ADD(K("attn.c_qkv.weight"), 2 * s, 0, 3 * W, W);
        ADD(K("attn.c_qkv.bias"), 0.1f, 0, 3 * W);
        ADD(K("attn.c_proj.weight"), s, 0, W, W);
        ADD(K("attn.c_proj.bias"), 0.1f, 0, W);
        ADD(K("ln_2.weight"), 0.2f, 1, W);
        ADD(K("ln_2.bias"), 0.1f, 0, W);
        ADD(K("mlp.c_fc.weight"), s, 0, 4 * W, W);
        ADD(K("mlp.c_fc.bias"), 0.1f, 0, 4 * W);
        ADD(K("mlp.c_proj.weight"), 0.5f * s, 0, W, 4 * W);
        ADD(K("mlp.c_proj.bias"), 0.1f, 0, W);
#undef K
    }
    ADD("clip_mean", 0.5f, 0, D);
    ADD("clip_std", 0.1f, 1, D);
    char cfg[600];
    snprintf(cfg, sizeof cfg,
             "{\"model\":{\"type\":\"prior\",\"hparams\":{\"text_ctx\":%d,\"xf_width\":%d,\"xf_layers\":%d,"
             "\"xf_heads\":%d,\"xf_final_ln\":true,\"clip_dim\":%d}},\"diffusion\":{\"steps\":1000,"
             "\"noise_schedule\":\"squaredcos_cap_v2\",\"learn_sigma\":false,\"sigma_small\":true,"
             "\"predict_xstart\":true,\"timestep_respacing\":\"\"}}",
             T, width_cfg, L, H, D);
    const char *meta[] = {"unclip.stage", stage, "unclip.config", cfg, "unclip.model_id", "test/prior-random"};
    int rc = st_write(path, outs, nout, meta, stage ? 3 : 0);
    for (int i = 0; i < nout; i++) {
        uc_free((void *)outs[i].name);
        uc_free(bufs[i]);
    }
    return rc;
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
static void ref_forward(const uc_prior *p, const float *temb, const float *seq, const uint8_t *mask, const float *x,
                        double t, float *out)
{
    static float h[S * W], a[S * W], qkv[S * 3 * W], att[S * W], f[S * 4 * W], tmp[S * W];
    const int dh = W / H;
    float te[W];
    uc_timestep_embedding(te, t, W);
    ref_linear(tmp, te, p->time_embed_0_w, p->time_embed_0_b, 1, W, W);
    for (int j = 0; j < W; j++)
        tmp[j] = tmp[j] / (1 + expf(-tmp[j]));
    ref_linear(h + (T + 1) * W, tmp, p->time_embed_2_w, p->time_embed_2_b, 1, W, W);
    ref_linear(h, seq, p->text_enc_proj_w, p->text_enc_proj_b, T, E, W);
    ref_linear(h + T * W, temb, p->text_emb_proj_w, p->text_emb_proj_b, 1, D, W);
    ref_linear(h + (T + 2) * W, x, p->clip_img_proj_w, p->clip_img_proj_b, 1, D, W);
    memcpy(h + (T + 3) * W, p->prd_emb, W * sizeof(float));
    for (int i = 0; i < S * W; i++)
        h[i] += p->positional_embedding[i];
    double sc = 1 / sqrt(sqrt((double)dh));
    for (int l = 0; l < L; l++) {
        const uc_prior_block *b = &p->blocks[l];
        memcpy(a, h, sizeof a);
        ref_ln(a, b->ln_1_w, b->ln_1_b, S, W);
        ref_linear(qkv, a, b->c_qkv_w, b->c_qkv_b, S, W, 3 * W);
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
        ref_linear(tmp, att, b->c_proj_w, b->c_proj_b, S, W, W);
        for (int i = 0; i < S * W; i++)
            h[i] += tmp[i];
        memcpy(a, h, sizeof a);
        ref_ln(a, b->ln_2_w, b->ln_2_b, S, W);
        ref_linear(f, a, b->c_fc_w, b->c_fc_b, S, W, 4 * W);
        for (int i = 0; i < S * 4 * W; i++)
            f[i] = (float)(0.5 * f[i] * (1 + erf(f[i] / sqrt(2.0))));
        ref_linear(tmp, f, b->mlp_proj_w, b->mlp_proj_b, S, 4 * W, W);
        for (int i = 0; i < S * W; i++)
            h[i] += tmp[i];
    }
    memcpy(a, h + (S - 1) * W, W * sizeof(float));
    ref_ln(a, p->final_ln_w, p->final_ln_b, 1, W);
    ref_linear(out, a, p->out_proj_w, p->out_proj_b, 1, W, D);
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
    uc_prior p;
    assert_int_equal(uc_prior_open(&p, model_path), 0);
    assert_int_equal(p.width, W);
    assert_int_equal(p.layers, L);
    assert_int_equal(p.text_dim, E);
    assert_int_equal(p.clip_dim, D);
    assert_string_equal(p.info.id, "test/prior-random");
    assert_non_null(p.clip_mean);
    uc_prior_free(&p);

    assert_int_equal(uc_prior_open(&p, clip_path), -1); /* names both stages */
    assert_non_null(strstr(uc_errmsg(), "a clip model, not a prior model"));
    assert_int_equal(uc_prior_open(&p, bare_path), -1);
    assert_non_null(strstr(uc_errmsg(), "unclip.stage"));
    assert_int_equal(uc_prior_open(&p, narrow_path), -1); /* config width 8, weights 16 */
    assert_non_null(strstr(uc_errmsg(), "model.time_embed.0.weight"));
}

static void test_forward_matches_reference(void **state)
{
    (void)state;
    uc_prior p;
    assert_int_equal(uc_prior_open(&p, model_path), 0);
    make_inputs();
    uc_prior_text *txt;
    assert_int_equal(uc_prior_text_new(&p, P, emb, seq, masks, &txt), 0);
    assert_int_equal(uc_prior_text_count(txt), P);

    enum { N = 6 };
    int64_t prompt[N] = {0, 1, 2, 3, 2, 0}, t[N] = {999, 0, 500, 17, 250, 3};
    float x[N * D], out[N * D], want[D];
    uc_rng r;
    uc_rng_init(&r, 3, 3);
    uc_rng_normal(&r, x, N * D);
    assert_int_equal(uc_prior_forward(&p, txt, N, prompt, x, t, out), 0);
    for (int i = 0; i < N; i++) {
        ref_forward(&p, emb + prompt[i] * D, seq + prompt[i] * T * E, masks + prompt[i] * T, x + i * D,
                    (double)t[i], want);
        assert_close(out + i * D, want, D, 2e-5);
    }

    /* padding positions cannot matter: change them, get the same bytes */
    float seq2[P * T * E];
    memcpy(seq2, seq, sizeof seq2);
    for (int i = 0; i < P * T; i++)
        if (!masks[i])
            for (int c = 0; c < E; c++)
                seq2[i * E + c] = 1e3f * (float)(c + 1);
    uc_prior_text *txt2;
    float out2[N * D];
    assert_int_equal(uc_prior_text_new(&p, P, emb, seq2, masks, &txt2), 0);
    assert_int_equal(uc_prior_forward(&p, txt2, N, prompt, x, t, out2), 0);
    assert_memory_equal(out, out2, sizeof out);

    int64_t badp[1] = {P};
    assert_int_equal(uc_prior_forward(&p, txt, 1, badp, x, t, out), -1);
    uc_prior_text_free(txt);
    uc_prior_text_free(txt2);
    uc_prior_free(&p);
}

static void test_guided(void **state)
{
    (void)state;
    uc_prior p;
    assert_int_equal(uc_prior_open(&p, model_path), 0);
    make_inputs();
    uc_prior_text *txt;
    assert_int_equal(uc_prior_text_new(&p, P, emb, seq, masks, &txt), 0);
    int64_t cond[2] = {0, 2}, unc[2] = {1, 1}, t[2] = {700, 700}, rows[4] = {0, 2, 1, 1};
    float scale[2] = {4, 1}, x[2 * D], g[2 * D], raw[4 * D];
    for (int i = 0; i < 2 * D; i++)
        x[i] = 0.1f * (float)(i % 7) - 0.3f;
    float xx[4 * D];
    memcpy(xx, x, sizeof x);
    memcpy(xx + 2 * D, x, sizeof x);
    int64_t tt[4] = {700, 700, 700, 700};
    assert_int_equal(uc_prior_guided(&p, txt, 2, cond, unc, scale, x, t, g), 0);
    assert_int_equal(uc_prior_forward(&p, txt, 4, rows, xx, tt, raw), 0);
    for (int i = 0; i < 2; i++)
        for (int c = 0; c < D; c++) {
            float cv = raw[i * D + c], uv = raw[(2 + i) * D + c];
            assert_true(fabsf(g[i * D + c] - (uv + scale[i] * (cv - uv))) <= 1e-6f * (1 + fabsf(cv)));
        }
    /* scale 1: the conditional prediction */
    assert_close(g + D, raw + D, D, 1e-6);
    uc_prior_text_free(txt);
    uc_prior_free(&p);
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

static void test_sample(void **state)
{
    (void)state;
    uc_prior p;
    assert_int_equal(uc_prior_open(&p, model_path), 0);
    make_inputs();
    uc_prior_text *txt;
    assert_int_equal(uc_prior_text_new(&p, 2, emb + 2 * D, seq + 2 * T * E, masks + 2 * T, &txt), 0);
    uc_diffusion d;
    assert_int_equal(uc_diffusion_from_config(&d, cJSON_GetObjectItem(p.config, "diffusion"), "ddim8"), 0);
    int64_t cond[3] = {0, 0, 0}, unc[3] = {1, 1, 1};
    float scale[3] = {4, 4, 4}, a[3 * D], b[3 * D], one[D];
    for (int sampler = 0; sampler < 2; sampler++) {
        noise_rows nr = {.rows = 3};
        uc_prior_sample_opts o = {.diffusion = &d, .sampler = sampler ? UC_SAMPLER_DDIM : UC_SAMPLER_DDPM,
                                  .text = txt, .n = 3, .cond = cond, .uncond = unc, .scale = scale,
                                  .noise = noise, .noise_ctx = &nr};
        for (int r = 0; r < 3; r++)
            uc_rng_init(&nr.rng[r], 5, (uint32_t)r);
        assert_int_equal(uc_prior_sample(&p, &o, a), 0);
        for (int r = 0; r < 3; r++)
            uc_rng_init(&nr.rng[r], 5, (uint32_t)r);
        assert_int_equal(uc_prior_sample(&p, &o, b), 0);
        assert_memory_equal(a, b, sizeof a); /* deterministic */
        for (int i = 0; i < 3 * D; i++)
            assert_true(isfinite(a[i]));
        assert_true(memcmp(a, a + D, D * sizeof(float)) != 0); /* rows draw their own noise */
        /* a row sampled alone is the same row */
        nr.rows = 1;
        o.n = 1;
        uc_rng_init(&nr.rng[0], 5, 2);
        assert_int_equal(uc_prior_sample(&p, &o, one), 0);
        assert_close(one, a + 2 * D, D, 1e-5);
    }
    uc_diffusion_free(&d);
    uc_prior_text_free(txt);
    uc_prior_free(&p);
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
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_guided),
        cmocka_unit_test(test_sample),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
