/* test_unet.c - the UNet family (unet.h, decoder.h, sr.h): the convolution
 * kernel against a direct loop, the tensor lists against the golden
 * checkpoints, batch rows that never mix, guidance, sampling determinism,
 * config parsing and error messages.
 *
 * It also writes small random model files for other tests and benchmarks:
 *   test_unet --write-model decoder|sr PATH [CONFIG.json] [--f16]
 * (CONFIG.json: {"model": {"hparams": ...}, "diffusion": ...}; without it a
 * small config of each stage). */
#define _DEFAULT_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/base.h"
#include "libcommon/models/decoder.h"
#include "libcommon/nn/conv.h"
#include "libcommon/nn/winograd.h"
#include "libcommon/nn/ops.h"
#include "libcommon/nn/rng.h"
#include "libcommon/models/sr.h"
#include "libcommon/models/model_file.h"
#include "libcommon/models/unet.h"

/* ---- small configs -------------------------------------------------------- */

static const char decoder_small[] =
    "{\"model\": {\"type\": \"t2i-decoder\", \"hparams\": {\"image_size\": 16, \"num_channels\": 32,"
    " \"num_res_blocks\": 1, \"channel_mult\": \"1,2\", \"attention_resolutions\": \"8\", \"num_heads\": -1,"
    " \"num_head_channels\": 16, \"num_heads_upsample\": -1, \"use_scale_shift_norm\": true, \"dropout\": 0.1,"
    " \"clip_dim\": 24, \"clip_emb_mult\": 2, \"text_ctx\": 6, \"xf_width\": 40, \"xf_layers\": 0,"
    " \"resblock_updown\": true, \"learn_sigma\": true, \"clip_emb_type\": \"image\", \"clip_emb_drop\": 0.1}},"
    " \"diffusion\": {\"steps\": 1000, \"noise_schedule\": \"squaredcos_cap_v2\", \"learn_sigma\": true,"
    " \"sigma_small\": false, \"predict_xstart\": false, \"rescale_learned_sigmas\": true,"
    " \"timestep_respacing\": \"\"}}";

/* Down/Upsample layers with convolutions instead of resampling ResBlocks,
 * no scale-shift norm, heads by count, three levels. */
static const char decoder_plain[] =
    "{\"model\": {\"hparams\": {\"image_size\": 16, \"num_channels\": 32, \"num_res_blocks\": 2,"
    " \"channel_mult\": [1, 1, 2], \"attention_resolutions\": \"16,4\", \"num_heads\": 2,"
    " \"num_head_channels\": -1, \"num_heads_upsample\": 4, \"use_scale_shift_norm\": false,"
    " \"clip_dim\": 16, \"clip_emb_mult\": 3, \"xf_width\": 32, \"resblock_updown\": false,"
    " \"learn_sigma\": true}},"
    " \"diffusion\": {\"steps\": 1000, \"noise_schedule\": \"squaredcos_cap_v2\", \"learn_sigma\": true}}";

static const char sr_small[] =
    "{\"model\": {\"type\": \"improved_sr_64_256\", \"hparams\": {\"channels\": 32, \"depth\": 1,"
    " \"channels_multiple\": [1, 2, 2], \"dropout\": 0.0, \"scale\": 4}},"
    " \"diffusion\": {\"steps\": 1000, \"noise_schedule\": \"squaredcos_cap_v2\", \"learn_sigma\": false,"
    " \"sigma_small\": true, \"predict_xstart\": false, \"rescale_learned_sigmas\": true,"
    " \"timestep_respacing\": \"7\"}}";

/* ---- random model files ------------------------------------------------- */

typedef struct {
    st_out *t;
    int n;
    uc_rng rng;
    int f16;
} gen;

/* GroupNorm / LayerNorm gains near 1 (1-D ".weight"), other 1-D tensors
 * small, matrices and kernels N(0, 1/fan_in); with f16, the tensors the
 * description marks F16 are stored so (as unclip-convert --f16 does). */
static int gen_tensor(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    gen *g = ctx;
    int half = g->f16 && !strcmp(dtype, "F16");
    int64_t n = 1, fan_in = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    for (int i = 1; i < ndim; i++)
        fan_in *= shape[i];
    float *x = uc_alloc((size_t)n, sizeof *x);
    uc_rng_normal(&g->rng, x, n);
    size_t len = strlen(name);
    int gain = ndim == 1 && len > 7 && !strcmp(name + len - 7, ".weight");
    for (int64_t i = 0; i < n; i++)
        x[i] = gain ? 1.0f + 0.1f * x[i] : ndim == 1 ? 0.1f * x[i] : x[i] / sqrtf((float)fan_in);
    g->t = uc_xrealloc(g->t, (size_t)g->n + 1, sizeof *g->t);
    st_out *o = &g->t[g->n++];
    memset(o, 0, sizeof *o);
    o->name = uc_strdup(name);
    o->ndim = ndim;
    memcpy(o->shape, shape, (size_t)ndim * sizeof *shape);
    o->dtype = half ? UC_F16 : UC_F32;
    if (half) {
        uint16_t *h = uc_alloc((size_t)n, sizeof *h);
        for (int64_t i = 0; i < n; i++)
            h[i] = uc_f32_to_f16(x[i]);
        uc_free(x);
        o->data = h;
    } else {
        o->data = x;
    }
    return 0;
}

/* Write a random model of `stage` for the config text to path. */
static int write_model(const char *stage, const char *config_text, const char *path, uint64_t seed, int f16)
{
    gen g = {.f16 = f16};
    uc_rng_init(&g.rng, seed, 0);
    int rc = !strcmp(stage, "decoder") ? uc_decoder_tensors(config_text, gen_tensor, &g)
             : !strcmp(stage, "sr")    ? uc_sr_tensors(config_text, gen_tensor, &g)
                                       : uc_err("unknown stage %s", stage);
    if (rc == 0) {
        char id[64];
        snprintf(id, sizeof id, "test/random-%s", stage);
        const char *meta[] = {"unclip.stage", stage, "unclip.config", config_text, "unclip.model_id", id};
        rc = st_write(path, g.t, g.n, meta, 3);
    }
    for (int i = 0; i < g.n; i++) {
        uc_free((void *)g.t[i].name);
        uc_free((void *)g.t[i].data);
    }
    uc_free(g.t);
    return rc;
}

static char tmpdir[64];

static const char *tmp_model(const char *stage, const char *config, const char *file)
{
    static char path[8][128];
    static int k;
    char *p = path[k++ % 8];
    snprintf(p, 128, "%s/%s", tmpdir, file);
    if (write_model(stage, config, p, 7, 0))
        fail_msg("write_model: %s", uc_errmsg());
    return p;
}

static void randn(float *x, int64_t n, uint64_t seed)
{
    uc_rng r;
    uc_rng_init(&r, seed, 1);
    uc_rng_normal(&r, x, n);
}

static double max_diff(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        m = d > m || d != d ? d : m;
    }
    return m;
}

/* ---- convolution ---------------------------------------------------------- */

static void conv_direct(const float *x, int64_t B, int64_t cin, int64_t h, int64_t w, const float *wt,
                        const float *bias, int64_t cout, int k, int stride, float *y)
{
    int64_t p = k / 2, ho = (h + 2 * p - k) / stride + 1, wo = (w + 2 * p - k) / stride + 1;
    for (int64_t co = 0; co < cout; co++)
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < ho; i++)
                for (int64_t j = 0; j < wo; j++) {
                    double s = bias[co];
                    for (int64_t ci = 0; ci < cin; ci++)
                        for (int ky = 0; ky < k; ky++)
                            for (int kx = 0; kx < k; kx++) {
                                int64_t yi = i * stride + ky - p, xi = j * stride + kx - p;
                                if (yi < 0 || yi >= h || xi < 0 || xi >= w)
                                    continue;
                                s += (double)x[(ci * B + b) * h * w + yi * w + xi] *
                                     wt[((co * cin + ci) * k + ky) * k + kx];
                            }
                    y[(co * B + b) * ho * wo + i * wo + j] = (float)s;
                }
}

static void test_conv2d(void **state)
{
    (void)state;
    static const int cases[][7] = {
        /* B, cin, h, w, cout, k, stride */
        {1, 3, 5, 7, 4, 3, 1}, {2, 6, 8, 8, 5, 3, 1}, {3, 4, 6, 5, 7, 1, 1}, {2, 5, 8, 6, 3, 3, 2},
        {1, 2, 1, 1, 3, 3, 1}, {2, 3, 4, 4, 2, 1, 2}, {4, 8, 3, 9, 6, 3, 1},
    };
    for (size_t c = 0; c < UC_COUNT(cases); c++) {
        int64_t B = cases[c][0], cin = cases[c][1], h = cases[c][2], w = cases[c][3], cout = cases[c][4];
        int k = cases[c][5], s = cases[c][6];
        int64_t p = k / 2, ho = (h + 2 * p - k) / s + 1, wo = (w + 2 * p - k) / s + 1;
        int64_t nx = B * cin * h * w, nw = cout * cin * k * k, ny = B * cout * ho * wo;
        float *x = uc_alloc((size_t)nx, 4), *wt = uc_alloc((size_t)nw, 4), *bias = uc_alloc((size_t)cout, 4);
        float *want = uc_alloc((size_t)ny, 4), *got = uc_alloc((size_t)ny, 4);
        randn(x, nx, c);
        randn(wt, nw, c + 100);
        randn(bias, cout, c + 200);
        conv_direct(x, B, cin, h, w, wt, bias, cout, k, s, want);
        /* column buffers of one output row (many tiles), a few rows, and all */
        int64_t K = cin * k * k, sizes[3] = {K * wo, K * wo * 2 + 1, K * wo * B * ho};
        for (int t = 0; t < 3; t++) {
            float *col = uc_alloc((size_t)sizes[t], 4);
            memset(got, 0, (size_t)ny * 4);
            uc_conv2d(x, B, cin, h, w, wt, bias, cout, k, s, got, 0, col, sizes[t], NULL);
            assert_true(max_diff(got, want, ny) < 1e-5);
            /* accumulate: adds the same again */
            uc_conv2d(x, B, cin, h, w, wt, bias, cout, k, s, got, 1, col, sizes[t], NULL);
            for (int64_t i = 0; i < ny; i++)
                assert_true(fabsf(got[i] - 2 * want[i]) < 2e-5f);
            uc_free(col);
        }
        uc_free(x);
        uc_free(wt);
        uc_free(bias);
        uc_free(want);
        uc_free(got);
    }
}

/* ---- tensor lists against the golden checkpoints ------------------------------ */

typedef struct {
    st_file *f;
    int n, bad;
    char first[300];
} lister;

static int check_listed(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    lister *l = ctx;
    (void)dtype;
    const uc_tensor *t = st_get(l->f, name);
    l->n++;
    if (!t || !uc_tensor_shape_is(t, ndim, shape)) {
        if (!l->bad++)
            snprintf(l->first, sizeof l->first, "%s %s", name, t ? "shape differs" : "missing");
    }
    return 0;
}

static void check_golden_list(const char *dir, int sr)
{
    char path[256];
    snprintf(path, sizeof path, "tests/golden/karlo/%s/case.json", dir);
    char *text;
    size_t len;
    if (uc_read_file(path, 1 << 20, &text, &len)) {
        skip();
        return;
    }
    cJSON *cs = cJSON_Parse(text);
    free(text);
    assert_non_null(cs);
    snprintf(path, sizeof path, "tests/golden/karlo/%s/model.safetensors", dir);
    lister l = {.f = st_open(path)};
    assert_non_null(l.f);
    char *cfg = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(cs, "config"));
    assert_int_equal(sr ? uc_sr_tensors(cfg, check_listed, &l) : uc_decoder_tensors(cfg, check_listed, &l), 0);
    free(cfg);
    if (l.bad)
        fail_msg("%s: %s", dir, l.first);
    /* the same set: nothing in the checkpoint that the model does not bind */
    assert_int_equal(l.n, st_count(l.f));
    st_close(l.f);
    cJSON_Delete(cs);
}

static void test_tensor_lists(void **state)
{
    (void)state;
    check_golden_list("decoder-forward", 0);
    check_golden_list("decoder-forward-f16", 0);
    check_golden_list("sr-forward", 1);
    check_golden_list("sr-forward-updown", 1);
}

/* ---- decoder ------------------------------------------------------------ */

typedef struct {
    int64_t B, S, ctx, D;
    float *x, *txt, *seq, *y;
    unsigned char *mask;
    double *t;
} dec_in;

static void dec_in_make(dec_in *in, const uc_decoder *d, int64_t B, uint64_t seed)
{
    const uc_decoder_info *info = uc_decoder_get_info(d);
    in->B = B;
    in->S = info->image_size;
    in->ctx = info->text_ctx;
    in->D = info->clip_dim;
    in->x = uc_alloc((size_t)(B * 3 * in->S * in->S), 4);
    in->txt = uc_alloc((size_t)(B * in->D), 4);
    in->seq = uc_alloc((size_t)(B * in->ctx * in->D), 4);
    in->y = uc_alloc((size_t)(B * in->D), 4);
    in->mask = uc_alloc((size_t)(B * in->ctx), 1);
    in->t = uc_alloc((size_t)B, sizeof(double));
    randn(in->x, B * 3 * in->S * in->S, seed);
    randn(in->txt, B * in->D, seed + 1);
    randn(in->seq, B * in->ctx * in->D, seed + 2);
    randn(in->y, B * in->D, seed + 3);
    for (int64_t b = 0; b < B; b++) {
        in->t[b] = (double)((b * 377 + 5) % 1000);
        for (int64_t j = 0; j < in->ctx; j++)
            in->mask[b * in->ctx + j] = j <= b + 1; /* a different length per row */
    }
}

static void dec_in_free(dec_in *in)
{
    uc_free(in->x);
    uc_free(in->txt);
    uc_free(in->seq);
    uc_free(in->y);
    uc_free(in->mask);
    uc_free(in->t);
}

/* Each row of a batch equals the row computed alone. */
static void check_decoder_rows(const char *config, const char *file)
{
    uc_decoder *d = uc_decoder_open(tmp_model("decoder", config, file));
    if (!d)
        fail_msg("open: %s", uc_errmsg());
    dec_in in;
    int64_t B = 3, S, oc = uc_decoder_get_info(d)->out_channels;
    dec_in_make(&in, d, B, 11);
    S = in.S;
    int64_t per = oc * S * S;
    float *all = uc_alloc((size_t)(B * per), 4), *one = uc_alloc((size_t)per, 4);
    assert_int_equal(uc_decoder_forward(d, B, S, S, in.ctx, in.x, in.t, in.txt, in.seq, in.mask, in.y, all), 0);
    double mag = 0;
    for (int64_t i = 0; i < B * per; i++)
        mag = fmax(mag, fabs(all[i]));
    assert_true(mag > 1e-3 && mag < 1e3); /* a real, finite output */
    for (int64_t b = 0; b < B; b++) {
        assert_int_equal(uc_decoder_forward(d, 1, S, S, in.ctx, in.x + b * 3 * S * S, in.t + b,
                                            in.txt + b * in.D, in.seq + b * in.ctx * in.D, in.mask + b * in.ctx,
                                            in.y + b * in.D, one),
                         0);
        assert_true(max_diff(one, all + b * per, per) < 1e-4 * mag);
    }
    /* rows differ from one another (the conditioning reaches the output) */
    assert_true(max_diff(all, all + per, per) > 1e-4);
    uc_free(all);
    uc_free(one);
    dec_in_free(&in);
    uc_decoder_free(d);
}

static void test_decoder_rows(void **state)
{
    (void)state;
    check_decoder_rows(decoder_small, "dec.safetensors");
    check_decoder_rows(decoder_plain, "dec-plain.safetensors");
}

/* A diffusion section that does not match the model's outputs (fixed
 * variance for a UNet with 6 output channels) is the file's fault, found
 * at open and named with the file, not at the first sample. */
static void test_decoder_config_at_open(void **state)
{
    (void)state;
    char cfg[sizeof decoder_small];
    memcpy(cfg, decoder_small, sizeof cfg);
    char *d = strstr(cfg, "\"diffusion\""), *ls = d ? strstr(d, "\"learn_sigma\": true") : NULL;
    assert_non_null(ls);
    memcpy(ls + strlen("\"learn_sigma\": "), "0   ", 4); /* true -> 0 (false), padded */
    assert_null(uc_decoder_open(tmp_model("decoder", cfg, "dec-fixed.safetensors")));
    assert_non_null(strstr(uc_errmsg(), "dec-fixed.safetensors: decoder config: diffusion.learn_sigma is false, but "
                                        "the model has 6 output channels"));
}

/* A masked token does not change the output; an unmasked one does. */
static void test_decoder_mask(void **state)
{
    (void)state;
    uc_decoder *d = uc_decoder_open(tmp_model("decoder", decoder_small, "dec.safetensors"));
    if (!d)
        fail_msg("open: %s", uc_errmsg());
    dec_in in;
    dec_in_make(&in, d, 1, 5);
    int64_t S = in.S, per = 6 * S * S;
    float *a = uc_alloc((size_t)per, 4), *b = uc_alloc((size_t)per, 4);
    assert_int_equal(uc_decoder_forward(d, 1, S, S, in.ctx, in.x, in.t, in.txt, in.seq, in.mask, in.y, a), 0);
    int64_t last = in.ctx - 1; /* masked in row 0 */
    assert_int_equal(in.mask[last], 0);
    for (int64_t c = 0; c < in.D; c++)
        in.seq[last * in.D + c] += 5.0f;
    assert_int_equal(uc_decoder_forward(d, 1, S, S, in.ctx, in.x, in.t, in.txt, in.seq, in.mask, in.y, b), 0);
    assert_memory_equal(a, b, (size_t)per * 4);
    in.seq[0] += 5.0f; /* token 0 is valid */
    assert_int_equal(uc_decoder_forward(d, 1, S, S, in.ctx, in.x, in.t, in.txt, in.seq, in.mask, in.y, b), 0);
    assert_true(max_diff(a, b, per) > 1e-5);
    uc_free(a);
    uc_free(b);
    dec_in_free(&in);
    uc_decoder_free(d);
}

/* With scale 1 the guided eps is the conditional eps; variance channels are
 * each half's own. */
static void test_decoder_guided(void **state)
{
    (void)state;
    uc_decoder *d = uc_decoder_open(tmp_model("decoder", decoder_small, "dec.safetensors"));
    if (!d)
        fail_msg("open: %s", uc_errmsg());
    dec_in in;
    int64_t B = 2, S;
    dec_in_make(&in, d, 2 * B, 21);
    S = in.S;
    int64_t HW = S * S, per = 6 * HW;
    for (int64_t b = 0; b < 2 * B; b++)
        in.t[b] = 500;
    float *g = uc_alloc((size_t)(2 * B * per), 4), *ref = uc_alloc((size_t)(2 * B * per), 4);
    float one = 1.0f;
    uc_decoder_cond cond = {B, in.ctx, in.txt, in.seq, in.mask, in.y, &one, 1};
    assert_int_equal(uc_decoder_guided(d, &cond, S, S, in.x, in.t, g), 0);
    /* reference: the network on [x[:B], x[:B]] */
    memcpy(in.x + B * 3 * HW, in.x, (size_t)(B * 3 * HW) * 4);
    assert_int_equal(
        uc_decoder_forward(d, 2 * B, S, S, in.ctx, in.x, in.t, in.txt, in.seq, in.mask, in.y, ref), 0);
    for (int64_t b = 0; b < B; b++) {
        assert_true(max_diff(g + b * per, ref + b * per, 3 * HW) < 1e-5);            /* cond eps */
        assert_true(max_diff(g + (B + b) * per, ref + b * per, 3 * HW) < 1e-5);      /* [g, g] */
        assert_true(max_diff(g + b * per + 3 * HW, ref + b * per + 3 * HW, 3 * HW) == 0); /* variance */
        assert_true(max_diff(g + (B + b) * per + 3 * HW, ref + (B + b) * per + 3 * HW, 3 * HW) == 0);
    }
    /* bad scale count */
    cond.nscales = 3;
    assert_int_not_equal(uc_decoder_guided(d, &cond, S, S, in.x, in.t, g), 0);
    uc_free(g);
    uc_free(ref);
    dec_in_free(&in);
    uc_decoder_free(d);
}

static int noise_counter(void *ctx, int draw, float *out, int64_t n)
{
    int *calls = ctx;
    (*calls)++;
    randn(out, n, 1000 + (uint64_t)draw);
    return 0;
}

static void test_decoder_sample(void **state)
{
    (void)state;
    uc_decoder *d = uc_decoder_open(tmp_model("decoder", decoder_small, "dec.safetensors"));
    if (!d)
        fail_msg("open: %s", uc_errmsg());
    dec_in in;
    int64_t B = 1;
    dec_in_make(&in, d, 2 * B, 3);
    int64_t n = 2 * B * 3 * in.S * in.S;
    float y[2 * 24], scale = 4.0f, *x1 = uc_alloc((size_t)n, 4), *x2 = uc_alloc((size_t)n, 4);
    uc_decoder_guided_y(d, B, in.y, y);
    assert_memory_equal(y, in.y, 24 * sizeof(float));
    assert_memory_not_equal(y + 24, in.y, 24 * sizeof(float)); /* cf_param */
    uc_decoder_cond cond = {B, in.ctx, in.txt, in.seq, in.mask, y, &scale, 1};
    int calls = 0;
    uc_stage_opts o = {.respacing = "4", .sampler = UC_SAMPLER_DDPM, .noise = noise_counter, .noise_ctx = &calls};
    assert_int_equal(uc_decoder_sample(d, &cond, &o, x1), 0);
    assert_int_equal(calls, 5); /* x_T and one per step */
    assert_int_equal(uc_decoder_sample(d, &cond, &o, x2), 0);
    assert_memory_equal(x1, x2, (size_t)n * 4);
    o.sampler = UC_SAMPLER_DDIM;
    assert_int_equal(uc_decoder_sample(d, &cond, &o, x2), 0);
    assert_true(max_diff(x1, x2, n) > 1e-4);
    for (int64_t i = 0; i < n; i++)
        assert_true(isfinite(x2[i]));
    o.respacing = "nonsense";
    assert_int_not_equal(uc_decoder_sample(d, &cond, &o, x2), 0);
    uc_free(x1);
    uc_free(x2);
    dec_in_free(&in);
    uc_decoder_free(d);
}

/* ---- super-resolution ----------------------------------------------------- */

typedef struct {
    int last_calls, steps;
    uc_sr *s;
} sr_probe;

static int sr_trace(void *ctx, const uc_step *st, const float *x_in, const float *sample, const float *pred)
{
    sr_probe *p = ctx;
    (void)x_in, (void)sample;
    for (int64_t i = 0; i < 3 * 16 * 16; i++)
        if (pred[i] < -1 || pred[i] > 1)
            return uc_err("x_0 not clamped");
    p->steps = st->index + 1;
    return 0;
}

static void test_sr(void **state)
{
    (void)state;
    uc_sr *s = uc_sr_open(tmp_model("sr", sr_small, "sr.safetensors"));
    if (!s)
        fail_msg("open: %s", uc_errmsg());
    assert_int_equal(uc_sr_get_info(s)->scale, 4);
    int64_t B = 2, H = 32, W = 24, n = B * 3 * H * W; /* 96 tiles of 4x4: Winograd */
    float *x = uc_alloc((size_t)n, 4), *low = uc_alloc((size_t)n, 4), *a = uc_alloc((size_t)n, 4);
    float *b = uc_alloc((size_t)n, 4), *one = uc_alloc((size_t)n, 4);
    double t[2] = {999, 0};
    randn(x, n, 1);
    randn(low, n, 2);
    /* the two models differ; rows are independent; any size that divides */
    int64_t held0 = uc_winograd_cache_bytes();
    assert_int_equal(uc_sr_forward(s, 0, B, H, W, x, t, low, a), 0);
    int64_t held1 = uc_winograd_cache_bytes() - held0;
    assert_int_equal(uc_sr_forward(s, 1, B, H, W, x, t, low, b), 0);
    assert_true(max_diff(a, b, n) > 1e-3);
    /* one UNet at a time: the first one's Winograd transforms were freed
     * when the second ran (the two have the same layers) */
    assert_true(held1 > 0);
    assert_int_equal(uc_winograd_cache_bytes() - held0, held1);
    assert_int_equal(uc_sr_forward(s, 1, 1, H, W, x + n / 2, t + 1, low + n / 2, one), 0);
    assert_true(max_diff(one, b + n / 2, n / 2) < 1e-5);
    assert_int_not_equal(uc_sr_forward(s, 0, 1, 10, 12, x, t, low, a), 0); /* 10 % 4 */
    assert_non_null(strstr(uc_errmsg(), "multiple of 4"));
    /* a shape from a hostile file is refused before any allocation */
    assert_int_equal(uc_sr_forward(s, 0, 4096, 16384, 16384, x, t, low, a), -1);
    assert_non_null(strstr(uc_errmsg(), "unet: 4096 images of 16384x16384 needs"));
    assert_non_null(strstr(uc_errmsg(), "more than the memory budget of 4.0 GiB"));

    int calls = 0;
    sr_probe p = {.s = s};
    uc_stage_opts o = {.respacing = "7", .noise = noise_counter, .noise_ctx = &calls, .trace = sr_trace,
                       .trace_ctx = &p};
    assert_int_equal(uc_sr_sample(s, 1, 16, 16, low, &o, a), 0);
    assert_int_equal(calls, 8);
    assert_int_equal(p.steps, 7);
    uc_free(x);
    uc_free(low);
    uc_free(a);
    uc_free(b);
    uc_free(one);
    uc_sr_free(s);
}

/* ---- configs and errors ------------------------------------------------------ */

static void test_config(void **state)
{
    (void)state;
    int v[8];
    cJSON *j = cJSON_Parse("[\"1,2, 3,4\", [1,2,3], 5, \"\", \"1,x\", [1.5], {}]");
    assert_int_equal(uc_cfg_int_list(cJSON_GetArrayItem(j, 0), "a", v, 8), 4);
    assert_int_equal(v[3], 4);
    assert_int_equal(uc_cfg_int_list(cJSON_GetArrayItem(j, 1), "a", v, 8), 3);
    assert_int_equal(uc_cfg_int_list(cJSON_GetArrayItem(j, 1), "a", v, 2), -1);
    assert_int_equal(uc_cfg_int_list(cJSON_GetArrayItem(j, 2), "a", v, 8), 1);
    assert_int_equal(v[0], 5);
    assert_int_equal(uc_cfg_int_list(cJSON_GetArrayItem(j, 3), "a", v, 8), 0);
    assert_int_equal(uc_cfg_int_list(cJSON_GetArrayItem(j, 4), "attention_resolutions", v, 8), -1);
    assert_non_null(strstr(uc_errmsg(), "attention_resolutions"));
    assert_int_equal(uc_cfg_int_list(cJSON_GetArrayItem(j, 5), "a", v, 8), -1);
    assert_int_equal(uc_cfg_int_list(cJSON_GetArrayItem(j, 6), "a", v, 8), -1);
    cJSON_Delete(j);

    /* a config the UNet refuses: 48 channels are not a multiple of 32 groups */
    char *bad = uc_strdup(decoder_small);
    memcpy(strstr(bad, "\"num_channels\": 32"), "\"num_channels\": 48", 18);
    assert_int_equal(uc_decoder_tensors(bad, NULL, NULL), -1);
    assert_non_null(strstr(uc_errmsg(), "multiple of 32"));
    uc_free(bad);
    assert_int_equal(uc_decoder_tensors("{\"model\": ", NULL, NULL), -1);
    assert_non_null(strstr(uc_errmsg(), "not JSON"));
    assert_int_equal(uc_sr_tensors("{\"model\": {\"hparams\": {}}}", NULL, NULL), -1);
    assert_non_null(strstr(uc_errmsg(), "diffusion section missing"));
}

/* ---- the descriptions ----------------------------------------------------- */

typedef struct {
    int n, f16, stop_at;
    double params;
    char want[4][80], got[4][8];
    int64_t shape[4][4];
} desc_probe;

static int probe_tensor(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    desc_probe *p = ctx;
    double n = 1;
    for (int i = 0; i < ndim; i++)
        n *= (double)shape[i];
    p->params += n;
    p->n++;
    p->f16 += !strcmp(dtype, "F16");
    for (int i = 0; i < 4; i++)
        if (!strcmp(name, p->want[i])) {
            snprintf(p->got[i], sizeof p->got[i], "%s", dtype);
            memcpy(p->shape[i], shape, (size_t)ndim * sizeof *shape);
        }
    return p->n == p->stop_at ? 7 : 0;
}

/* The released configs (NULL) list Karlo's decoder and SR with their
 * sizes and dtypes; a nonzero return of fn stops the walk and is returned. */
static void test_descriptions(void **state)
{
    (void)state;
    desc_probe p = {.want = {"model.input_blocks.9.0.in_layers.2.weight", "model.input_blocks.5.1.qkv.bias",
                             "model.out.0.weight", "model.cf_param"}};
    assert_int_equal(uc_decoder_tensors(NULL, probe_tensor, &p), 0);
    /* default channel_mult 1,2,3,4 of 320: level 2 starts at block 9 */
    assert_true(p.shape[0][0] == 960 && p.shape[0][1] == 640 && p.shape[0][3] == 3);
    assert_string_equal(p.got[0], "F16"); /* convolution */
    assert_string_equal(p.got[1], "F16"); /* the bias of a 3-D qkv weight (attention at ds 2) */
    assert_int_equal(p.shape[1][0], 3 * 640);
    assert_string_equal(p.got[2], "F32"); /* GroupNorm gain */
    assert_string_equal(p.got[3], "F32"); /* a learned vector */
    assert_int_equal(p.shape[3][0], 768);
    assert_true(p.params > 0.85e9 && p.params < 0.95e9); /* "900M" */
    assert_true(p.f16 > 0 && p.f16 < p.n);

    desc_probe q = {.want = {"model_first_steps.out.2.weight", "model_last_step.input_blocks.0.0.weight",
                             "model_last_step.out.0.bias", "model_first_steps.time_embed.0.bias"}};
    assert_int_equal(uc_sr_tensors(NULL, probe_tensor, &q), 0);
    assert_true(q.shape[0][0] == 3 && q.shape[0][1] == 320);
    assert_true(q.shape[1][0] == 320 && q.shape[1][1] == 6);
    assert_string_equal(q.got[2], "F32");
    assert_string_equal(q.got[3], "F16");
    assert_true(q.params > 1.3e9 && q.params < 1.5e9); /* "1.4B": two UNets */
    assert_int_equal(q.n % 2, 0);

    desc_probe r = {.stop_at = 5};
    assert_int_equal(uc_decoder_tensors(uc_decoder_default_config(), probe_tensor, &r), 7);
    assert_int_equal(r.n, 5);
    desc_probe t = {.stop_at = q.n / 2 + 3}; /* inside the second UNet */
    assert_int_equal(uc_sr_tensors(uc_sr_default_config(), probe_tensor, &t), 7);
    assert_int_equal(t.n, q.n / 2 + 3);
}

static void test_errors(void **state)
{
    (void)state;
    const char *sr_path = tmp_model("sr", sr_small, "sr.safetensors");
    assert_null(uc_decoder_open(sr_path));
    assert_non_null(strstr(uc_errmsg(), "sr model, not a decoder"));
    const char *dec_path = tmp_model("decoder", decoder_small, "dec.safetensors");
    assert_null(uc_sr_open(dec_path));
    assert_non_null(strstr(uc_errmsg(), "decoder model, not an sr"));
    /* a checkpoint of another shape: the first mismatched tensor is named */
    st_file *f = st_open(dec_path);
    assert_non_null(f);
    cJSON *cfg = cJSON_Parse(decoder_small);
    cJSON *hp = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(cfg, "model"), "hparams");
    cJSON_ReplaceItemInObject(hp, "num_res_blocks", cJSON_CreateNumber(2));
    char *text = cJSON_PrintUnformatted(cfg);
    assert_null(uc_decoder_load(f, text));
    free(text);
    /* input_blocks.2 (the second ResBlock) has the down-sampling block's
     * shapes; the level-1 ResBlock that follows does not */
    assert_non_null(strstr(uc_errmsg(), "model.input_blocks.3.0.in_layers.2.weight: shape [64, 32, 3, 3]"));
    cJSON_ReplaceItemInObject(hp, "num_res_blocks", cJSON_CreateNumber(1));
    cJSON_ReplaceItemInObject(hp, "xf_width", cJSON_CreateNumber(48));
    text = cJSON_PrintUnformatted(cfg);
    assert_null(uc_decoder_load(f, text));
    free(text);
    assert_non_null(strstr(uc_errmsg(), "encoder_kv"));
    /* the right config binds, and the file stays the caller's */
    uc_decoder *d = uc_decoder_load(f, decoder_small);
    assert_non_null(d);
    assert_int_equal(uc_decoder_get_info(d)->clip_emb_mult, 2);
    assert_int_equal(uc_decoder_steps(d, "ddim5"), 5);
    assert_int_equal(uc_decoder_steps(d, "ddim5"), 5); /* kept */
    assert_int_equal(uc_decoder_steps(d, NULL), 1000);
    assert_int_equal(uc_decoder_steps(d, "bogus"), -1);
    uc_decoder_free(d);
    cJSON_Delete(cfg);
    st_close(f);
}

static int setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/test_unet.XXXXXX");
    if (!mkdtemp(tmpdir))
        return -1;
    uc_threads_init(1);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    static const char *files[] = {"dec.safetensors", "dec-plain.safetensors", "sr.safetensors"};
    char p[128];
    for (size_t i = 0; i < UC_COUNT(files); i++) {
        snprintf(p, sizeof p, "%s/%s", tmpdir, files[i]);
        unlink(p);
    }
    rmdir(tmpdir);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[1], "--write-model")) {
        const char *stage = argv[2], *path = argc > 3 ? argv[3] : NULL, *cfgfile = NULL;
        int f16 = 0;
        for (int i = 4; i < argc; i++) {
            if (!strcmp(argv[i], "--f16"))
                f16 = 1;
            else
                cfgfile = argv[i];
        }
        char *text = NULL;
        size_t len;
        if (!path || (cfgfile && uc_read_file(cfgfile, 1 << 20, &text, &len))) {
            fprintf(stderr, "usage: test_unet --write-model decoder|sr PATH [CONFIG.json] [--f16]\n");
            return 2;
        }
        const char *cfg = text ? text : !strcmp(stage, "sr") ? sr_small : decoder_small;
        int rc = write_model(stage, cfg, path, 1, f16);
        free(text);
        if (rc)
            fprintf(stderr, "test_unet: %s\n", uc_errmsg());
        return rc ? 1 : 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv2d),         cmocka_unit_test(test_tensor_lists),
        cmocka_unit_test(test_decoder_rows),   cmocka_unit_test(test_decoder_config_at_open),
        cmocka_unit_test(test_decoder_mask),
        cmocka_unit_test(test_decoder_guided), cmocka_unit_test(test_decoder_sample),
        cmocka_unit_test(test_sr),             cmocka_unit_test(test_config),
        cmocka_unit_test(test_descriptions),   cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
