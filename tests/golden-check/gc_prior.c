/* gc_prior.c - golden handlers for the diffusion math (schedules,
 * respacing, p_mean_variance) and Karlo's prior (forward, guided forward,
 * DDPM and DDIM sampling with step traces). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/sample/diffusion.h"
#include "libcommon/models/prior.h"
#include "gc.h"

/* ---- helpers ------------------------------------------------------------ */

/* Compare a double array (rounded to f32 as upstream casts it) with io. */
static int check_f64(gc_case *c, const char *name, const double *v, int64_t n)
{
    float *f = uc_alloc((size_t)n + 1, sizeof *f);
    for (int64_t i = 0; i < n; i++)
        f[i] = (float)v[i];
    int rc = gc_check(c, name, f, n);
    uc_free(f);
    return rc;
}

/* Elements per row after the first dimension; channels = dim 1. */
static int64_t tail_numel(const uc_tensor *t, int from)
{
    int64_t n = 1;
    for (int i = from; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

/* Parse Karlo's denoised_fn description: null or "clamp(x,-a,a)". */
static int parse_denoise(gc_case *c, const cJSON *kind, uc_denoise *dn)
{
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(kind, "denoised_fn");
    dn->clip_denoised = (int)gc_num(kind, "clip_denoised", 0);
    dn->clamp = 0;
    if (!fn || cJSON_IsNull(fn))
        return 0;
    double lo, hi;
    if (!cJSON_IsString(fn) || sscanf(fn->valuestring, "clamp(x,%lf,%lf)", &lo, &hi) != 2 || lo != -hi || hi <= 0)
        return gc_fail(c, "unsupported denoised_fn");
    dn->clamp = (float)hi;
    return 0;
}

/* ---- diffusion-schedule ------------------------------------------------- */

static int check_kind(gc_case *c, const char *kind, const cJSON *kc)
{
    uc_diffusion d;
    uc_denoise dn;
    char name[128];
    if (parse_denoise(c, kc, &dn))
        return -1;
    if (uc_diffusion_from_config(&d, cJSON_GetObjectItemCaseSensitive(kc, "diffusion"), NULL))
        return gc_fail(c, "%s: %s", kind, uc_errmsg());
    uc_tensor xs, ms;
    snprintf(name, sizeof name, "%s_x_t", kind);
    float *x = gc_f32(c, name, &xs);
    snprintf(name, sizeof name, "%s_model_output", kind);
    float *mo = gc_f32(c, name, &ms);
    snprintf(name, sizeof name, "%s_q_x_start", kind);
    float *xq = gc_f32(c, name, NULL);
    snprintf(name, sizeof name, "%s_t", kind);
    int64_t *t = gc_i64(c, name, NULL);
    int rc = -1;
    if (x && mo && xq && t) {
        int learned = d.var_type == UC_VAR_LEARNED || d.var_type == UC_VAR_LEARNED_RANGE;
        int64_t n = xs.shape[0], ch = xs.ndim > 1 ? xs.shape[1] : 1, sp = tail_numel(&xs, 2);
        int64_t nel = n * ch * sp;
        if (ms.shape[0] != n || tail_numel(&ms, 1) != (learned ? 2 : 1) * ch * sp) {
            uc_diffusion_free(&d);
            uc_free(x), uc_free(mo), uc_free(xq), uc_free(t);
            return gc_fail(c, "%s: model output shape does not fit x_t", kind);
        }
        float *mean = uc_alloc((size_t)nel, sizeof *mean), *var = uc_alloc((size_t)nel, sizeof *var);
        float *lv = uc_alloc((size_t)nel, sizeof *lv), *x0 = uc_alloc((size_t)nel, sizeof *x0);
        rc = uc_p_mean_variance(&d, n, ch, sp, t, x, mo, &dn, mean, var, lv, x0);
        if (rc)
            gc_fail(c, "%s: %s", kind, uc_errmsg());
        const char *sfx[] = {"mean", "variance", "log_variance", "pred_xstart"};
        float *got[] = {mean, var, lv, x0};
        for (int i = 0; i < 4 && !rc; i++) {
            snprintf(name, sizeof name, "%s_%s", kind, sfx[i]);
            rc = gc_check(c, name, got[i], nel);
        }
        if (!rc) {
            uc_q_posterior(&d, n, ch * sp, t, xq, x, mean, var, lv);
            const char *qs[] = {"q_posterior_mean", "q_posterior_variance", "q_posterior_log_variance"};
            for (int i = 0; i < 3 && !rc; i++) {
                snprintf(name, sizeof name, "%s_%s", kind, qs[i]);
                rc = gc_check(c, name, got[i], nel);
            }
        }
        uc_free(mean), uc_free(var), uc_free(lv), uc_free(x0);
    }
    uc_diffusion_free(&d);
    uc_free(x), uc_free(mo), uc_free(xq), uc_free(t);
    return rc;
}

int gc_diffusion_schedule(gc_case *c)
{
    const char *sched = gc_str(c->config, "noise_schedule", NULL);
    int steps = (int)gc_num(c->config, "steps", -1);
    if (!sched || steps < 2)
        return gc_fail(c, "config: noise_schedule / steps missing");
    uc_diffusion d;
    if (uc_diffusion_init(&d, sched, steps, "", UC_MEAN_EPSILON, UC_VAR_FIXED_SMALL))
        return gc_fail(c, "%s", uc_errmsg());
    int rc = check_f64(c, "betas", d.betas, d.steps) || check_f64(c, "alphas_cumprod", d.alphas_cumprod, d.steps) ||
             check_f64(c, "alphas_cumprod_prev", d.alphas_cumprod_prev, d.steps) ||
             check_f64(c, "posterior_variance", d.posterior_variance, d.steps) ||
             check_f64(c, "posterior_log_variance_clipped", d.posterior_log_variance_clipped, d.steps) ||
             check_f64(c, "posterior_mean_coef1", d.posterior_mean_coef1, d.steps) ||
             check_f64(c, "posterior_mean_coef2", d.posterior_mean_coef2, d.steps);
    uc_diffusion_free(&d);
    if (rc)
        return -1;

    const cJSON *resp;
    cJSON_ArrayForEach(resp, gc_get(c->config, "respacings"))
    {
        if (!cJSON_IsString(resp))
            return gc_fail(c, "config: respacings holds a non-string");
        char prefix[96], name[160];
        const char *pat = gc_str(gc_get(c->config, "respacing_tensor_name"), resp->valuestring, NULL);
        if (pat && strlen(pat) < sizeof prefix && strchr(pat, '*'))
            snprintf(prefix, sizeof prefix, "%.*s", (int)(strchr(pat, '*') - pat), pat);
        else
            snprintf(prefix, sizeof prefix, "respace_%.60s_", resp->valuestring);
        if (uc_diffusion_init(&d, sched, steps, resp->valuestring, UC_MEAN_EPSILON, UC_VAR_FIXED_SMALL))
            return gc_fail(c, "respacing %s: %s", resp->valuestring, uc_errmsg());
        snprintf(name, sizeof name, "%stimesteps", prefix);
        rc = gc_check_i64(c, name, d.timestep_map, d.steps);
        snprintf(name, sizeof name, "%sbetas", prefix);
        rc = rc || check_f64(c, name, d.betas, d.steps);
        snprintf(name, sizeof name, "%salphas_cumprod", prefix);
        rc = rc || check_f64(c, name, d.alphas_cumprod, d.steps);
        snprintf(name, sizeof name, "%sposterior_log_variance_clipped", prefix);
        rc = rc || check_f64(c, name, d.posterior_log_variance_clipped, d.steps);
        uc_diffusion_free(&d);
        if (rc)
            return -1;
    }

    const cJSON *kind;
    cJSON_ArrayForEach(kind, gc_get(c->config, "p_mean_variance"))
    {
        if (!kind->string || check_kind(c, kind->string, kind))
            return -1;
    }
    return 0;
}

/* ---- the prior ---------------------------------------------------------- */

typedef struct {
    uc_prior *p;
    int64_t D; /* clip_dim */
    uc_prior_text *text;
    float *clip_mean, *clip_std, *cf;
    int64_t n; /* rows of txt_feat (2B) */
    int64_t ncf;
} prior_case;

static void prior_case_free(prior_case *pc)
{
    uc_prior_text_free(pc->text);
    uc_prior_free(pc->p);
    uc_free(pc->clip_mean);
    uc_free(pc->clip_std);
    uc_free(pc->cf);
}

/* Model from the case, clip stats and text conditioning from io. */
static int prior_case_load(gc_case *c, prior_case *pc)
{
    memset(pc, 0, sizeof *pc);
    if (!c->model)
        return gc_fail(c, "model.safetensors missing");
    char *cfg = cJSON_PrintUnformatted(c->config);
    pc->p = cfg ? uc_prior_load(c->model, cfg) : NULL;
    cJSON_free(cfg);
    if (!pc->p)
        return gc_fail(c, "%s", uc_errmsg());
    const uc_prior_info *p = uc_prior_get_info(pc->p);
    pc->D = p->clip_dim;
    uc_tensor te, ts, tm, tmean, tstd;
    float *emb = gc_f32(c, "txt_feat", &te), *seq = gc_f32(c, "txt_feat_seq", &ts);
    int64_t *mask = gc_i64(c, "mask", &tm);
    pc->clip_mean = gc_f32(c, "clip_mean", &tmean);
    pc->clip_std = gc_f32(c, "clip_std", &tstd);
    int rc = -1;
    if (emb && seq && mask && pc->clip_mean && pc->clip_std) {
        int64_t n = te.shape[0];
        if (!uc_tensor_shape_is(&te, 2, (int64_t[]){n, p->clip_dim}) ||
            !uc_tensor_shape_is(&ts, 3, (int64_t[]){n, p->text_ctx, p->text_dim}) ||
            !uc_tensor_shape_is(&tm, 2, (int64_t[]){n, p->text_ctx}) ||
            !uc_tensor_shape_is(&tmean, 1, (int64_t[]){p->clip_dim}) ||
            !uc_tensor_shape_is(&tstd, 1, (int64_t[]){p->clip_dim})) {
            gc_fail(c, "io text / clip stat shapes do not fit the model");
        } else {
            uint8_t *m8 = uc_alloc((size_t)(n * p->text_ctx), 1);
            for (int64_t i = 0; i < n * p->text_ctx; i++)
                m8[i] = mask[i] != 0;
            if (uc_prior_text_new(pc->p, n, emb, seq, m8, &pc->text))
                gc_fail(c, "%s", uc_errmsg());
            else
                rc = 0;
            uc_free(m8);
            pc->n = n;
            uc_prior_set_stats(pc->p, pc->clip_mean, pc->clip_std);
        }
    }
    uc_free(emb);
    uc_free(seq);
    uc_free(mask);
    if (!rc) {
        uc_tensor tc;
        if (!(pc->cf = gc_f32(c, "cf_scales", &tc)))
            rc = -1;
        else if ((pc->ncf = uc_tensor_numel(&tc)) != 1 && pc->ncf != pc->n / 2)
            rc = gc_fail(c, "cf_scales: %lld values for %lld rows", (long long)pc->ncf, (long long)pc->n);
    }
    if (rc)
        prior_case_free(pc);
    return rc;
}

/* Karlo's guided_model_fn over the full 2B batch: the guided x_0 of the first
 * half, for both halves. */
static int guided_full(prior_case *pc, const float *x, const int64_t *t, float *out)
{
    int64_t B = pc->n / 2, D = pc->D;
    int64_t *cond = uc_alloc((size_t)B, sizeof *cond), *unc = uc_alloc((size_t)B, sizeof *unc);
    float *scale = uc_alloc((size_t)B, sizeof *scale);
    for (int64_t i = 0; i < B; i++) {
        cond[i] = i;
        unc[i] = B + i;
        scale[i] = pc->cf[pc->ncf == 1 ? 0 : i];
    }
    int rc = uc_prior_guided(pc->p, pc->text, B, cond, unc, scale, x, t, out);
    if (!rc)
        memcpy(out + B * D, out, (size_t)(B * D) * sizeof *out);
    uc_free(cond);
    uc_free(unc);
    uc_free(scale);
    return rc;
}

int gc_prior_forward(gc_case *c)
{
    prior_case pc;
    if (prior_case_load(c, &pc))
        return -1;
    int64_t n = pc.n, D = pc.D;
    uc_tensor tx, tt, tgx, tgt;
    float *x = gc_f32(c, "x_t", &tx), *gx = gc_f32(c, "guided_x_t", &tgx);
    int64_t *t = gc_i64(c, "timesteps", &tt), *gt = gc_i64(c, "guided_timesteps", &tgt);
    float *out = uc_alloc((size_t)(n * D), sizeof *out);
    int64_t *rows = uc_alloc((size_t)n, sizeof *rows);
    int rc = -1;
    if (x && gx && t && gt) {
        if (uc_tensor_numel(&tx) != n * D || uc_tensor_numel(&tgx) != n * D || uc_tensor_numel(&tt) != n ||
            uc_tensor_numel(&tgt) != n || n % 2) {
            gc_fail(c, "io x_t / timesteps shapes do not fit the text rows");
        } else {
            for (int64_t i = 0; i < n; i++)
                rows[i] = i;
            if (uc_prior_forward(pc.p, pc.text, n, rows, x, t, out))
                gc_fail(c, "%s", uc_errmsg());
            else if (!gc_check(c, "model_out", out, n * D) && !uc_prior_denormalize(pc.p, n, out) &&
                     !gc_check(c, "model_out_denorm", out, n * D)) {
                if (guided_full(&pc, gx, gt, out))
                    gc_fail(c, "%s", uc_errmsg());
                else
                    rc = gc_check(c, "guided_out", out, n * D);
            }
        }
    }
    uc_free(x), uc_free(gx), uc_free(t), uc_free(gt), uc_free(out), uc_free(rows);
    prior_case_free(&pc);
    return rc;
}

/* Sampling: replay the recorded noise, record every step. */
typedef struct {
    gc_case *c;
    prior_case *pc;
    int64_t nel; /* 2B * D */
    int steps;
    int64_t *t_spaced, *t_model; /* [S, 2B] */
    float *x_in, *sample, *pred;  /* [S, 2B, D] */
} sample_run;

static int replay_noise(void *ctx, int draw, float *out, int64_t nelem)
{
    sample_run *s = ctx;
    char name[32];
    snprintf(name, sizeof name, "noise_%03d", draw);
    const uc_tensor *t = st_get(s->c->io, name);
    if (!t)
        return uc_err("io tensor %s missing", name);
    if (uc_tensor_numel(t) != nelem)
        return uc_err("io tensor %s: %lld values, the batch needs %lld", name, (long long)uc_tensor_numel(t),
                      (long long)nelem);
    return uc_tensor_to_f32(t, out);
}

static int sample_model(void *ctx, const uc_step *st, const float *x, float *out)
{
    sample_run *s = ctx;
    int64_t n = s->pc->n, *t = uc_alloc((size_t)n, sizeof *t);
    for (int64_t i = 0; i < n; i++)
        t[i] = st->t_model;
    int rc = guided_full(s->pc, x, t, out);
    uc_free(t);
    return rc;
}

static int record_step(void *ctx, const uc_step *st, const float *x_in, const float *sample, const float *pred)
{
    sample_run *s = ctx;
    int64_t n = s->pc->n, i = st->index;
    for (int64_t r = 0; r < n; r++) {
        s->t_spaced[i * n + r] = st->t;
        s->t_model[i * n + r] = st->t_model;
    }
    memcpy(s->x_in + i * s->nel, x_in, (size_t)s->nel * sizeof(float));
    memcpy(s->sample + i * s->nel, sample, (size_t)s->nel * sizeof(float));
    memcpy(s->pred + i * s->nel, pred, (size_t)s->nel * sizeof(float));
    return 0;
}

/* Compare one step's slice of a trace; names the step and tensor. */
static int check_step(gc_case *c, const char *name, const float *want, const float *got, int64_t nel, int step,
                      int64_t t)
{
    for (int64_t i = 0; i < nel; i++) {
        double d = fabs((double)got[i] - (double)want[i]), lim = c->atol + c->rtol * fabs((double)want[i]);
        if (d > c->max_err || d != d)
            c->max_err = d != d ? INFINITY : d;
        if (!(d <= lim))
            return gc_fail(c, "first difference at step %d (t=%lld): %s[%d][%lld]: got %.8g want %.8g", step,
                           (long long)t, name, step, (long long)i, got[i], want[i]);
    }
    return 0;
}

int gc_prior_sample(gc_case *c)
{
    prior_case pc;
    if (prior_case_load(c, &pc))
        return -1;
    const char *resp = gc_str(c->config, "timestep_respacing", NULL);
    uc_diffusion d;
    if (uc_diffusion_from_config(&d, gc_get(c->config, "diffusion"), resp)) {
        prior_case_free(&pc);
        return gc_fail(c, "%s", uc_errmsg());
    }
    int64_t n = pc.n, D = pc.D, S = d.steps;
    sample_run s = {.c = c, .pc = &pc, .nel = n * D, .steps = d.steps};
    s.t_spaced = uc_alloc((size_t)(S * n), sizeof(int64_t));
    s.t_model = uc_alloc((size_t)(S * n), sizeof(int64_t));
    s.x_in = uc_alloc((size_t)(S * n * D), sizeof(float));
    s.sample = uc_alloc((size_t)(S * n * D), sizeof(float));
    s.pred = uc_alloc((size_t)(S * n * D), sizeof(float));
    float *x = uc_alloc((size_t)(n * D), sizeof *x);
    uc_sample_opts o = {
        .n = n,
        .channels = D,
        .spatial = 1,
        .sampler = uc_sampler_for_respacing(resp ? resp : gc_str(c->config, "diffusion.timestep_respacing", "")),
        .eta = 0.0f,
        .denoise = {.clamp = 10.0f, .clip_denoised = 0},
        .model = sample_model,
        .model_ctx = &s,
        .noise = replay_noise,
        .noise_ctx = &s,
        .trace = record_step,
        .trace_ctx = &s,
    };
    int rc = -1;
    char name[32];
    snprintf(name, sizeof name, "noise_%03lld", (long long)S + 1);
    if (n % 2)
        gc_fail(c, "txt_feat: %lld rows, not a cond/uncond pair layout", (long long)n);
    else if (st_get(c->io, name))
        gc_fail(c, "%s present: the case has more noise draws than %lld steps use", name, (long long)S);
    else if (uc_diffusion_sample(&d, &o, x))
        gc_fail(c, "%s", uc_errmsg());
    else
        rc = 0;

    const char *names[] = {"step_x_in", "step_pred_xstart", "step_sample"};
    const float *got[] = {s.x_in, s.pred, s.sample};
    float *want[3] = {0};
    uc_tensor ws[3];
    for (int k = 0; k < 3 && !rc; k++)
        if (!(want[k] = gc_f32(c, names[k], &ws[k])) || uc_tensor_numel(&ws[k]) != S * n * D)
            rc = gc_fail(c, "%s: shape does not fit %lld steps of %lld x %lld", names[k], (long long)S,
                         (long long)n, (long long)D);
    for (int64_t i = 0; i < S && !rc; i++)
        for (int k = 0; k < 3 && !rc; k++)
            rc = check_step(c, names[k], want[k] + i * n * D, got[k] + i * n * D, n * D, (int)i,
                            s.t_model[i * n]);
    rc = rc || gc_check_i64(c, "step_t_spaced", s.t_spaced, S * n);
    rc = rc || gc_check_i64(c, "step_t_model", s.t_model, S * n);
    if (!rc) {
        if (uc_prior_denormalize(pc.p, n / 2, x))
            rc = gc_fail(c, "%s", uc_errmsg());
        else
            rc = gc_check(c, "img_feat", x, n / 2 * D);
    }
    for (int k = 0; k < 3; k++)
        uc_free(want[k]);
    uc_free(s.t_spaced), uc_free(s.t_model), uc_free(s.x_in), uc_free(s.sample), uc_free(s.pred), uc_free(x);
    uc_diffusion_free(&d);
    prior_case_free(&pc);
    return rc;
}
