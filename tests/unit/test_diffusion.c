/* test_diffusion.c - schedules, respacing, p_mean_variance and the
 * sampling loop (the numbers against upstream live in the golden cases;
 * these check the properties and the edge cases). */
#define _POSIX_C_SOURCE 200809L /* popen */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/sample/diffusion.h"

static int64_t ts[100000];

static int space(int base, const char *spec)
{
    int n = -1;
    if (uc_space_timesteps(base, spec, ts, &n))
        return -1;
    return n;
}

static void test_respacing(void **state)
{
    (void)state;
    assert_int_equal(space(1000, "7"), 7);
    const int64_t seven[] = {0, 166, 333, 500, 666, 832, 999}; /* round half to even */
    for (int i = 0; i < 7; i++)
        assert_int_equal(ts[i], seven[i]);

    assert_int_equal(space(1000, ""), 1000);
    assert_int_equal(ts[999], 999);
    assert_int_equal(space(1000, "25"), 25);
    assert_int_equal(ts[0], 0);
    assert_int_equal(ts[24], 999);

    assert_int_equal(space(1000, "ddim25"), 25); /* stride 40 */
    for (int i = 0; i < 25; i++)
        assert_int_equal(ts[i], 40 * i);
    assert_int_equal(space(1000, "ddim7"), 7); /* smallest stride: 143 */
    assert_int_equal(ts[1], 143);

    assert_int_equal(space(1000, "10,10,3,2,2"), 27);
    assert_int_equal(ts[26], 999);
    assert_int_equal(space(1000, "fast27"), 27);
    assert_int_equal(ts[26], 997); /* Karlo moves the noisiest step */
    assert_int_equal(ts[0], 0);

    /* sections of unequal size: the first (extra) ones are one longer */
    assert_int_equal(space(1001, "2,2"), 4);
    assert_int_equal(ts[1], 500);
    assert_int_equal(ts[2], 501);
    assert_int_equal(ts[3], 1000);

    /* errors */
    const char *bad[] = {"abc", "5,", ",5", "1001", "1", "0", "ddim", "ddim0", "ddim1", "ddimx", "fast50",
                         "-3", "2,,2", " 5", "5 ", "ddim999"};
    for (size_t i = 0; i < UC_COUNT(bad); i++) {
        if (space(1000, bad[i]) != -1)
            fail_msg("respacing \"%s\" accepted", bad[i]);
        assert_true(strlen(uc_errmsg()) > 0);
    }
}

static void test_schedules(void **state)
{
    (void)state;
    double b[1000];
    assert_int_equal(uc_beta_schedule("squaredcos_cap_v2", 1000, b), 0);
    for (int i = 0; i < 999; i++) {
        assert_true(b[i] > 0 && b[i] <= 0.999);
        assert_true(b[i] <= b[i + 1]);
    }
    assert_true(b[999] == 0.999); /* capped */
    assert_int_equal(uc_beta_schedule("linear", 1000, b), 0);
    assert_true(fabs(b[0] - 1e-4) < 1e-15 && b[999] == 0.02);
    assert_int_equal(uc_beta_schedule("linear", 500, b), 0); /* scaled by 1000 / n */
    assert_true(fabs(b[0] - 2e-4) < 1e-15 && b[499] == 0.04);
    assert_int_equal(uc_beta_schedule("cosine", 1000, b), -1);
    assert_non_null(strstr(uc_errmsg(), "cosine"));
}

static void test_respaced_process(void **state)
{
    (void)state;
    uc_diffusion full, d;
    assert_int_equal(uc_diffusion_init(&full, "squaredcos_cap_v2", 1000, "", UC_MEAN_EPSILON, UC_VAR_FIXED_SMALL), 0);
    assert_int_equal(uc_diffusion_init(&d, "squaredcos_cap_v2", 1000, "10,10,3,2,2", UC_MEAN_EPSILON,
                                       UC_VAR_FIXED_SMALL),
                     0);
    assert_int_equal(d.steps, 27);
    for (int t = 0; t < d.steps; t++) {
        /* the respaced chain keeps the base process's alpha-bar at its steps */
        double want = full.alphas_cumprod[d.timestep_map[t]];
        assert_true(fabs(d.alphas_cumprod[t] - want) <= 1e-12 * want + 1e-15);
        assert_true(d.alphas_cumprod_prev[t] == (t ? d.alphas_cumprod[t - 1] : 1.0));
        assert_true(d.posterior_log_variance_clipped[t] == log(d.posterior_variance[t ? t : 1]));
    }
    uc_diffusion_free(&full);
    uc_diffusion_free(&d);
}

static void test_from_config(void **state)
{
    (void)state;
    cJSON *j = cJSON_Parse("{\"steps\":1000,\"noise_schedule\":\"squaredcos_cap_v2\",\"learn_sigma\":true,"
                           "\"sigma_small\":false,\"predict_xstart\":false,\"timestep_respacing\":\"\"}");
    uc_diffusion d;
    assert_int_equal(uc_diffusion_from_config(&d, j, "50"), 0);
    assert_int_equal(d.steps, 50);
    assert_int_equal(d.mean_type, UC_MEAN_EPSILON);
    assert_int_equal(d.var_type, UC_VAR_LEARNED_RANGE);
    uc_diffusion_free(&d);
    assert_int_equal(uc_diffusion_from_config(&d, j, NULL), 0); /* the section's "": all steps */
    assert_int_equal(d.steps, 1000);
    uc_diffusion_free(&d);
    cJSON_ReplaceItemInObject(j, "steps", cJSON_CreateString("many"));
    assert_int_equal(uc_diffusion_from_config(&d, j, NULL), -1);
    assert_non_null(strstr(uc_errmsg(), "steps"));
    cJSON_Delete(j);

    assert_int_equal(uc_sampler_for_respacing("ddim25"), UC_SAMPLER_DDIM);
    assert_int_equal(uc_sampler_for_respacing("fast27"), UC_SAMPLER_DDIM);
    assert_int_equal(uc_sampler_for_respacing("25"), UC_SAMPLER_DDPM);
}

static void test_p_mean_variance(void **state)
{
    (void)state;
    uc_diffusion d;
    assert_int_equal(uc_diffusion_init(&d, "squaredcos_cap_v2", 1000, "25", UC_MEAN_START_X, UC_VAR_FIXED_SMALL), 0);
    enum { N = 2, C = 3 };
    int64_t t[N] = {24, 5};
    float x[N * C] = {0.5f, -1, 2, 0, 0.25f, -3}, mo[N * C] = {20, -20, 0.5f, 1, -1, 3};
    float mean[N * C], var[N * C], lv[N * C], x0[N * C], qm[N * C];
    uc_denoise dn = {.clamp = 10};
    assert_int_equal(uc_p_mean_variance(&d, N, C, 1, t, x, mo, &dn, mean, var, lv, x0), 0);
    assert_true(x0[0] == 10 && x0[1] == -10 && x0[2] == 0.5f); /* clamp(-10, 10) */
    uc_q_posterior(&d, N, C, t, x0, x, qm, NULL, NULL);
    for (int i = 0; i < N * C; i++) {
        assert_true(mean[i] == qm[i]);
        assert_true(var[i] == (float)d.posterior_variance[t[i / C]]);
        assert_true(lv[i] == (float)d.posterior_log_variance_clipped[t[i / C]]);
    }
    uc_denoise clip = {.clip_denoised = 1};
    assert_int_equal(uc_p_mean_variance(&d, N, C, 1, t, x, mo, &clip, mean, NULL, lv, x0), 0);
    assert_true(x0[0] == 1 && x0[1] == -1 && x0[5] == 1);
    int64_t bad[N] = {25, 0};
    assert_int_equal(uc_p_mean_variance(&d, N, C, 1, bad, x, mo, &dn, mean, NULL, lv, x0), -1);
    uc_diffusion_free(&d);

    /* eps prediction inverts q_sample; learned range spans [posterior, beta] */
    assert_int_equal(
        uc_diffusion_init(&d, "squaredcos_cap_v2", 1000, "50", UC_MEAN_EPSILON, UC_VAR_LEARNED_RANGE), 0);
    int64_t tt[1] = {30};
    double a = d.alphas_cumprod[30];
    float xs[2] = {0.3f, -0.7f}, eps[2] = {1.5f, -0.25f}, xt[2];
    for (int i = 0; i < 2; i++)
        xt[i] = (float)(sqrt(a) * xs[i] + sqrt(1 - a) * eps[i]);
    float out[4] = {eps[0], eps[1], -1, 1}; /* channels: eps (1 x 2 spatial), then v */
    float m2[2], l2[2], p2[2];
    assert_int_equal(uc_p_mean_variance(&d, 1, 1, 2, tt, xt, out, NULL, m2, NULL, l2, p2), 0);
    assert_true(fabsf(p2[0] - xs[0]) < 1e-5f && fabsf(p2[1] - xs[1]) < 1e-5f);
    assert_true(l2[0] == (float)d.posterior_log_variance_clipped[30]);
    assert_true(fabsf(l2[1] - (float)log(d.betas[30])) < 1e-6f);
    uc_diffusion_free(&d);
}

/* A model that always predicts x_0 = 0.25 (or its eps); counts noise draws. */
typedef struct {
    const uc_diffusion *d;
    int draws, steps_seen, bad;
    int64_t last_t;
} loop_ctx;

static int const_model(void *ctx, const uc_step *s, const float *x, float *out)
{
    loop_ctx *c = ctx;
    (void)x;
    if (s->t != s->count - 1 - s->index || s->t_model != c->d->timestep_map[s->t])
        c->bad = 1;
    for (int i = 0; i < 6; i++)
        out[i] = 0.25f;
    return 0;
}

static int count_noise(void *ctx, int draw, float *out, int64_t n)
{
    loop_ctx *c = ctx;
    if (draw != c->draws++ || n != 6)
        c->bad = 1;
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)((i * 7 + draw * 3) % 5) - 2.0f;
    return 0;
}

static int trace(void *ctx, const uc_step *s, const float *x_in, const float *sample, const float *pred)
{
    loop_ctx *c = ctx;
    (void)x_in, (void)sample;
    c->steps_seen++;
    c->last_t = s->t;
    if (pred[0] != 0.25f)
        c->bad = 1;
    return 0;
}

static int failing_model(void *ctx, const uc_step *s, const float *x, float *out)
{
    (void)ctx, (void)x, (void)out;
    return s->index == 2 ? uc_err("boom") : 0;
}

static void test_sample_loop(void **state)
{
    (void)state;
    uc_diffusion d;
    assert_int_equal(uc_diffusion_init(&d, "squaredcos_cap_v2", 1000, "ddim10", UC_MEAN_START_X, UC_VAR_FIXED_SMALL),
                     0);
    for (int s = 0; s < 2; s++) {
        loop_ctx c = {.d = &d};
        uc_sample_opts o = {.n = 2, .channels = 3, .spatial = 1, .sampler = s ? UC_SAMPLER_DDIM : UC_SAMPLER_DDPM,
                            .model = const_model, .model_ctx = &c, .noise = count_noise, .noise_ctx = &c,
                            .trace = trace, .trace_ctx = &c};
        float x[6];
        assert_int_equal(uc_diffusion_sample(&d, &o, x), 0);
        assert_int_equal(c.bad, 0);
        assert_int_equal(c.draws, d.steps + 1); /* x_T and one per step, also at t = 0 */
        assert_int_equal(c.steps_seen, d.steps);
        assert_int_equal(c.last_t, 0);
        for (int i = 0; i < 6; i++) /* the last step returns x_0 itself */
            assert_true(fabsf(x[i] - 0.25f) < 1e-6f);
    }
    loop_ctx c = {.d = &d};
    uc_sample_opts o = {.n = 2, .channels = 3, .spatial = 1, .model = failing_model, .noise = count_noise,
                        .noise_ctx = &c};
    float x[6];
    assert_int_equal(uc_diffusion_sample(&d, &o, x), -1);
    assert_non_null(strstr(uc_errmsg(), "step 3 of 10"));
    assert_non_null(strstr(uc_errmsg(), "boom"));
    uc_diffusion_free(&d);
}

/* ---- edits (RePaint) ---- */

typedef struct {
    const uc_diffusion *d;
    int calls, last_calls, bad;
    int noise_draws;
    float in[16][8]; /* the inputs of the first calls */
    int lasts;       /* calls that SR would give its last-step model */
} edit_ctx;

static int edit_model(void *ctx, const uc_step *s, const float *x, float *out)
{
    edit_ctx *c = ctx;
    if (s->call != c->calls)
        c->bad = 1;
    if (c->calls < 16)
        memcpy(c->in[c->calls], x, 8 * sizeof *x);
    c->calls++;
    c->last_calls = s->calls;
    c->lasts += s->index == s->count - 1;
    for (int i = 0; i < 8; i++)
        out[i] = 0.5f * x[i] - 0.1f;
    return 0;
}

static int edit_noise(void *ctx, int draw, float *out, int64_t n)
{
    edit_ctx *c = ctx;
    c->noise_draws++;
    for (int64_t i = 0; i < n; i++)
        out[i] = sinf((float)(draw * 13 + i));
    return 0;
}

static void test_edit_loop(void **state)
{
    (void)state;
    uc_diffusion d;
    assert_int_equal(uc_diffusion_init(&d, "squaredcos_cap_v2", 1000, "10", UC_MEAN_EPSILON, UC_VAR_FIXED_SMALL), 0);
    assert_int_equal(uc_edit_calls(25, 5, 1), 121);
    assert_int_equal(uc_edit_calls(10, 3, 2), 26); /* jumps at levels 1, 3, 5, 7 */
    assert_int_equal(uc_edit_calls(10, 1, 1), 10);
    const float known[4] = {0.5f, -0.25f, 1.0f, -1.0f}; /* channels 2, spatial 2 */
    unsigned char none[2] = {0, 0}, all[2] = {1, 1}, half[2] = {1, 0};
    for (int s = 0; s < 2; s++) {
        uc_sampler smp = s ? UC_SAMPLER_DDIM : UC_SAMPLER_DDPM;
        /* nothing kept: plain sampling bit for bit, whatever resample says */
        edit_ctx c0 = {.d = &d}, c1 = {.d = &d};
        uc_edit e = {.known = known, .keep = none, .resample = 3, .jump = 1};
        uc_sample_opts o = {.n = 2, .channels = 2, .spatial = 2, .sampler = smp, .model = edit_model,
                            .model_ctx = &c0, .noise = edit_noise, .noise_ctx = &c0};
        float plain[8], x[8];
        assert_int_equal(uc_diffusion_sample(&d, &o, plain), 0);
        o.model_ctx = o.noise_ctx = &c1;
        o.edit = &e;
        assert_int_equal(uc_diffusion_sample(&d, &o, x), 0);
        assert_memory_equal(plain, x, sizeof x);
        assert_int_equal(c1.calls, 10);

        /* all kept, resample 1: each step's input is the known picture
         * noised to its level with the draw 2k+1, the output the picture */
        edit_ctx c2 = {.d = &d};
        e = (uc_edit){.known = known, .keep = all, .resample = 1, .jump = 1};
        o.model_ctx = o.noise_ctx = &c2;
        assert_int_equal(uc_diffusion_sample(&d, &o, x), 0);
        assert_int_equal(c2.calls, 10);
        assert_int_equal(c2.noise_draws, 1 + 2 * 10);
        assert_int_equal(c2.bad, 0);
        for (int k = 0; k < 10; k++) {
            double a = d.alphas_cumprod[9 - k];
            float sa = (float)sqrt(a), sb = (float)sqrt(1.0 - a), nz[8];
            edit_noise(&c0, 2 * k + 1, nz, 8);
            for (int i = 0; i < 8; i++)
                assert_true(c2.in[k][i] == sa * known[i % 4] + sb * nz[i]);
        }
        for (int i = 0; i < 8; i++)
            assert_true(x[i] == known[i % 4]);

        /* half kept, resample 3, jump 2: 26 calls, the last step once, the
         * kept pixel exact */
        edit_ctx c3 = {.d = &d};
        e = (uc_edit){.known = known, .keep = half, .resample = 3, .jump = 2};
        o.model_ctx = o.noise_ctx = &c3;
        assert_int_equal(uc_diffusion_sample(&d, &o, x), 0);
        assert_int_equal(c3.calls, 26);
        assert_int_equal(c3.last_calls, 26);
        assert_int_equal(c3.lasts, 1);
        assert_int_equal(c3.bad, 0);
        assert_int_equal(c3.noise_draws, 1 + 2 * 26 + 2 * 4); /* x_T, two a call, one a jump */
        for (int r = 0; r < 2; r++)
            for (int ch = 0; ch < 2; ch++)
                assert_true(x[(r * 2 + ch) * 2] == known[ch * 2]);
    }
    /* bad settings */
    edit_ctx c = {.d = &d};
    uc_edit e = {.known = known, .keep = half, .resample = 0, .jump = 1};
    uc_sample_opts o = {.n = 1, .channels = 2, .spatial = 2, .model = edit_model, .model_ctx = &c,
                        .noise = edit_noise, .noise_ctx = &c, .edit = &e};
    float x[4];
    assert_int_equal(uc_diffusion_sample(&d, &o, x), -1);
    e.resample = 2, e.jump = 11;
    assert_int_equal(uc_diffusion_sample(&d, &o, x), -1);
    assert_non_null(strstr(uc_errmsg(), "jump"));
    uc_diffusion_free(&d);
}

static void test_edit_window(void **state)
{
    (void)state;
    unsigned char kn[32 * 64];
    int x = -1, y = -1;
    for (int r = 0; r < 32; r++) /* a 64x32 canvas, its left half known */
        for (int c = 0; c < 64; c++)
            kn[r * 64 + c] = c < 32;
    assert_int_equal(uc_edit_window(kn, 64, 32, 32, &x, &y), 1);
    assert_int_equal(x, 16);
    assert_int_equal(y, 0);
    for (int r = 0; r < 32; r++)
        memset(kn + r * 64 + 16, 1, 32);
    assert_int_equal(uc_edit_window(kn, 64, 32, 32, &x, &y), 1);
    assert_int_equal(x, 32);
    memset(kn, 1, sizeof kn);
    assert_int_equal(uc_edit_window(kn, 64, 32, 32, &x, &y), 0);
    assert_int_equal(uc_edit_window(kn, 16, 32, 32, &x, &y), 0); /* smaller than a window */
}


/* ---- DPM-Solver++(2M) ---- */

/* Data x_0 ~ N(MU, SD^2) in every coordinate: then E[x_0 | x_t] is exact,
 * mu + a SD^2 / (a^2 SD^2 + s^2) (x_t - a mu) with a = sqrt(acp),
 * s = sqrt(1 - acp), and the diffusion ODE carries x_t to level acp' by
 * the affine map that keeps (x - a mu) / sqrt(a^2 SD^2 + s^2). */
#define MU 0.3
#define SD 0.5
#define DPM_ROWS 4
static const float dpm_xT[DPM_ROWS] = {-2.0f, -0.5f, 0.3f, 1.7f};

typedef struct {
    const uc_diffusion *d;
    int gaussian;       /* 1: the exact Gaussian x_0; 0: the nonlinear one of dpm_ref.py */
    int draws, calls, bad;
    float at_t0[DPM_ROWS]; /* the sample at the smallest kept timestep */
    float x0_last[DPM_ROWS];
} dpm_ctx;

static double dpm_x0(const dpm_ctx *c, double x, int64_t t)
{
    if (!c->gaussian) /* dpm_ref.py's denoiser, clipped by the sampler (clip_denoised) */
        return 1.3 * tanh(0.8 * x + 0.0005 * (double)c->d->timestep_map[t]);
    double a = sqrt(c->d->alphas_cumprod[t]), s2 = 1 - c->d->alphas_cumprod[t];
    return MU + a * SD * SD / (a * a * SD * SD + s2) * (x - a * MU);
}

static int dpm_model(void *ctx, const uc_step *s, const float *x, float *out)
{
    dpm_ctx *c = ctx;
    if (s->call != c->calls++ || s->t != s->count - 1 - s->index)
        c->bad = 1;
    double acp = c->d->alphas_cumprod[s->t];
    for (int i = 0; i < DPM_ROWS; i++) {
        double x0 = dpm_x0(c, x[i], s->t);
        out[i] = c->d->mean_type == UC_MEAN_START_X ? (float)x0 : (float)((x[i] - sqrt(acp) * x0) / sqrt(1 - acp));
    }
    return 0;
}

static int dpm_noise(void *ctx, int draw, float *out, int64_t n)
{
    dpm_ctx *c = ctx;
    if (draw != c->draws++ || n != DPM_ROWS)
        c->bad = 1;
    for (int64_t i = 0; i < n; i++)
        out[i] = draw == 0 ? dpm_xT[i] : 1e3f; /* later draws must not reach the sample */
    return 0;
}

static int dpm_trace(void *ctx, const uc_step *s, const float *x_in, const float *sample, const float *pred)
{
    dpm_ctx *c = ctx;
    (void)x_in;
    if (s->t == 1)
        memcpy(c->at_t0, sample, sizeof c->at_t0);
    if (s->t == 0)
        memcpy(c->x0_last, pred, sizeof c->x0_last);
    return 0;
}

static int dpm_run(const char *schedule, const char *respacing, uc_mean_type mt, int gaussian, float *x,
                   dpm_ctx *c)
{
    uc_diffusion d;
    assert_int_equal(uc_diffusion_init(&d, schedule, 1000, respacing, mt, UC_VAR_FIXED_SMALL), 0);
    *c = (dpm_ctx){.d = &d, .gaussian = gaussian};
    uc_sample_opts o = {.n = DPM_ROWS, .channels = 1, .spatial = 1, .sampler = UC_SAMPLER_DPMPP_2M,
                        .denoise = {.clip_denoised = !gaussian}, .model = dpm_model, .model_ctx = c,
                        .noise = dpm_noise, .noise_ctx = c, .trace = dpm_trace, .trace_ctx = c};
    int rc = uc_diffusion_sample(&d, &o, x);
    assert_int_equal(c->bad, 0);
    assert_int_equal(c->calls, d.steps);     /* one model call a step */
    assert_int_equal(c->draws, d.steps + 1); /* the noise is drawn as for the others, and unused */
    for (int i = 0; i < DPM_ROWS; i++)       /* the last step lands on its x_0 */
        assert_true(x[i] == c->x0_last[i]);
    c->d = NULL;
    uc_diffusion_free(&d);
    return rc;
}

/* Many steps converge to the exact ODE solution, with second-order error:
 * doubling the steps divides it by about 4 (a first-order solver: 2). */
static void test_dpm_converges(void **state)
{
    (void)state;
    const char *scheds[] = {"squaredcos_cap_v2", "linear"};
    for (int k = 0; k < 2; k++)
        for (int m = 0; m < 2; m++) {
            uc_diffusion d;
            assert_int_equal(uc_diffusion_init(&d, scheds[k], 1000, "", UC_MEAN_START_X, UC_VAR_FIXED_SMALL), 0);
            double aT = d.alphas_cumprod[999], a0 = d.alphas_cumprod[0];
            uc_diffusion_free(&d);
            double err[4];
            const char *resp[4] = {"25", "50", "100", "200"};
            for (int j = 0; j < 4; j++) {
                float x[DPM_ROWS];
                dpm_ctx c;
                assert_int_equal(dpm_run(scheds[k], resp[j], m ? UC_MEAN_EPSILON : UC_MEAN_START_X, 1, x, &c), 0);
                err[j] = 0;
                for (int i = 0; i < DPM_ROWS; i++) {
                    double z = (dpm_xT[i] - sqrt(aT) * MU) / sqrt(aT * SD * SD + 1 - aT);
                    double exact = sqrt(a0) * MU + sqrt(a0 * SD * SD + 1 - a0) * z;
                    double e = fabs(c.at_t0[i] - exact);
                    err[j] = e > err[j] ? e : err[j];
                }
            }
            print_message("dpm++2m %s %s: error at 25, 50, 100, 200 steps %.3g %.3g %.3g %.3g\n", scheds[k],
                          m ? "eps" : "x0", err[0], err[1], err[2], err[3]);
            assert_true(err[0] < 0.25);
            assert_true(err[3] < 4e-3);
            for (int j = 0; j < 3; j++) { /* the linear schedule's first doubling: 3.2 */
                double ratio = err[j] / err[j + 1];
                assert_true(ratio > 3.0 && ratio < 5.0);
            }
        }
}

/* Against dpm_ref.py (float64, written from the paper), with a nonlinear
 * clipped denoiser, both schedules, x_0 and eps models; skipped (with a
 * message) only where python3 with numpy is missing. */
static void test_dpm_reference(void **state)
{
    (void)state;
    /* as tests/realsize.sh: $PYTHON, Debian's python3, then the one on PATH */
    const char *cands[] = {getenv("PYTHON"), "/usr/bin/python3", "python3"}, *py = NULL;
    for (int i = 0; i < 3 && !py; i++) {
        char probe[300];
        if (!cands[i] || !*cands[i] || strlen(cands[i]) > 200)
            continue;
        snprintf(probe, sizeof probe, "%s -c 'import numpy' >/dev/null 2>&1", cands[i]);
        if (system(probe) == 0)
            py = cands[i];
    }
    if (!py) {
        print_message("python3 with numpy missing: the dpm_ref.py comparison is skipped\n");
        return;
    }
    const char *scheds[] = {"squaredcos_cap_v2", "linear"};
    const char *resp[] = {"10", "7", "25"};
    int compared = 0;
    for (int k = 0; k < 2; k++)
        for (int r = 0; r < 3; r++) {
            char cmd[512];
            snprintf(cmd, sizeof cmd, "%s tests/unit/dpm_ref.py %s %s %.9g %.9g %.9g %.9g", py, scheds[k], resp[r],
                     dpm_xT[0], dpm_xT[1], dpm_xT[2], dpm_xT[3]);
            FILE *p = popen(cmd, "r");
            assert_non_null(p);
            double want[DPM_ROWS], want0[DPM_ROWS];
            for (int i = 0; i < DPM_ROWS; i++)
                assert_int_equal(fscanf(p, "%lf %lf", &want[i], &want0[i]), 2);
            assert_int_equal(pclose(p), 0);
            for (int m = 0; m < 2; m++) {
                float x[DPM_ROWS];
                dpm_ctx c;
                assert_int_equal(dpm_run(scheds[k], resp[r], m ? UC_MEAN_EPSILON : UC_MEAN_START_X, 0, x, &c), 0);
                /* an eps model's x_0 = sqrt(1/acp) x - sqrt(1/acp - 1) eps
                 * loses about 3 digits in float at the cosine schedule's
                 * noisiest step (acp 2.4e-9), as upstream's float32 does */
                double tol = m ? 1e-3 : 2e-5;
                for (int i = 0; i < DPM_ROWS; i++) {
                    if (fabs(x[i] - want[i]) > tol || fabs(c.at_t0[i] - want0[i]) > tol)
                        fail_msg("%s -S %s %s row %d: %.9g / %.9g, dpm_ref.py %.9g / %.9g", scheds[k], resp[r],
                                 m ? "eps" : "x0", i, x[i], c.at_t0[i], want[i], want0[i]);
                    compared++;
                }
            }
        }
    assert_int_equal(compared, 2 * 3 * 2 * DPM_ROWS);
}

/* The first and the last step are first order; edits refuse the sampler. */
static void test_dpm_steps(void **state)
{
    (void)state;
    uc_diffusion d;
    assert_int_equal(uc_diffusion_init(&d, "squaredcos_cap_v2", 1000, "10", UC_MEAN_START_X, UC_VAR_FIXED_SMALL), 0);
    assert_string_equal(uc_sampler_name(UC_SAMPLER_DPMPP_2M), "dpm++2m");
    assert_string_equal(uc_sampler_name(UC_SAMPLER_DDIM), "ddim");
    assert_string_equal(uc_sampler_name(UC_SAMPLER_DDPM), "ddpm");
    float x[2] = {0.5f, -1.5f}, x0[2] = {0.25f, -0.75f}, prev[2] = {9.0f, 9.0f}, out[2], out1[2];
    /* t = 0: the clean sample is x_0, whatever the history */
    uc_dpmpp_2m_step(&d, 2, 1, 0, x, x0, prev, out);
    assert_true(out[0] == 0.25f && out[1] == -0.75f);
    /* first order is DDIM with eta 0 */
    int64_t t[2] = {5, 5};
    uc_dpmpp_2m_step(&d, 2, 1, 5, x, x0, NULL, out);
    float nz[2] = {0, 0};
    uc_ddim_step(&d, 2, 1, t, x, x0, nz, 0.0f, out1);
    for (int i = 0; i < 2; i++)
        assert_float_equal(out[i], out1[i], 1e-5);
    /* second order: equal x_0 predictions give the first-order step */
    uc_dpmpp_2m_step(&d, 2, 1, 5, x, x0, x0, out1);
    for (int i = 0; i < 2; i++)
        assert_float_equal(out[i], out1[i], 1e-6);
    /* and a different history moves it */
    uc_dpmpp_2m_step(&d, 2, 1, 5, x, x0, prev, out1);
    assert_true(fabsf(out1[0] - out[0]) > 1e-3f);

    /* an edit with kept pixels refuses it */
    unsigned char keep[2] = {1, 0};
    float known[2] = {0, 0};
    uc_edit e = {.known = known, .keep = keep, .resample = 1, .jump = 1};
    dpm_ctx c = {.d = &d, .gaussian = 1};
    uc_sample_opts o = {.n = 2, .channels = 1, .spatial = 2, .sampler = UC_SAMPLER_DPMPP_2M, .model = dpm_model,
                        .model_ctx = &c, .noise = dpm_noise, .noise_ctx = &c, .edit = &e};
    float xs[4];
    assert_int_equal(uc_diffusion_sample(&d, &o, xs), -1);
    assert_non_null(strstr(uc_errmsg(), "dpm++2m"));
    assert_int_equal(c.calls, 0);
    uc_diffusion_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_respacing),       cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_respaced_process), cmocka_unit_test(test_from_config),
        cmocka_unit_test(test_p_mean_variance), cmocka_unit_test(test_sample_loop),
        cmocka_unit_test(test_edit_loop),       cmocka_unit_test(test_edit_window),
        cmocka_unit_test(test_dpm_converges),   cmocka_unit_test(test_dpm_reference),
        cmocka_unit_test(test_dpm_steps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
