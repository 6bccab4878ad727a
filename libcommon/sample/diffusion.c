/* diffusion.c - see diffusion.h. Formulas follow Karlo's
 * gaussian_diffusion.py / respace.py (from guided-diffusion). */
#include "libcommon/sample/diffusion.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"

/* ---- schedules ---------------------------------------------------------- */

static double cosine_alpha_bar(double t)
{
    double c = cos((t + 0.008) / 1.008 * 3.141592653589793 / 2);
    return c * c;
}

int uc_beta_schedule(const char *name, int n, double *betas)
{
    if (n < 1 || n > UC_DIFFUSION_MAX_STEPS)
        return uc_err("diffusion steps %d out of range 1..%d", n, UC_DIFFUSION_MAX_STEPS);
    if (!strcmp(name, "squaredcos_cap_v2")) {
        for (int i = 0; i < n; i++) {
            double t1 = (double)i / n, t2 = (double)(i + 1) / n;
            double b = 1 - cosine_alpha_bar(t2) / cosine_alpha_bar(t1);
            betas[i] = b < 0.999 ? b : 0.999;
        }
        return 0;
    }
    if (!strcmp(name, "linear")) {
        /* numpy linspace(start, end, n): i * step + start, last = end */
        double scale = 1000.0 / n, start = scale * 0.0001, end = scale * 0.02;
        double step = n > 1 ? (end - start) / (n - 1) : 0;
        for (int i = 0; i < n; i++)
            betas[i] = i * step + start;
        if (n > 1)
            betas[n - 1] = end;
        return 0;
    }
    return uc_err("unknown noise schedule \"%s\" (squaredcos_cap_v2, linear)", name);
}

/* ---- respacing ---------------------------------------------------------- */

/* A decimal count from s[0..len): digits only, at most 9 of them. */
static int parse_count(const char *s, size_t len, long *v)
{
    if (len == 0 || len > 9)
        return -1;
    long x = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        x = x * 10 + (s[i] - '0');
    }
    *v = x;
    return 0;
}

/* Mark the steps of comma-separated section counts in keep[base]. */
static int space_sections(int base, const char *spec, unsigned char *keep)
{
    int nsec = 1;
    for (const char *p = spec; *p; p++)
        nsec += *p == ',';
    if (nsec > base)
        return uc_err("respacing \"%s\": more sections than %d steps", spec, base);
    int size_per = base / nsec, extra = base % nsec, start = 0;
    const char *p = spec;
    for (int i = 0; i < nsec; i++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        long count;
        if (parse_count(p, len, &count))
            return uc_err("respacing \"%s\": section %d is not a step count", spec, i + 1);
        int size = size_per + (i < extra ? 1 : 0);
        if (size < count)
            return uc_err("respacing \"%s\": cannot divide a section of %d steps into %ld", spec, size, count);
        double stride = count <= 1 ? 1.0 : (double)(size - 1) / (double)(count - 1);
        double cur = 0.0;
        for (long k = 0; k < count; k++) {
            keep[start + (int)rint(cur)] = 1; /* Python round(): half to even */
            cur += stride;
        }
        start += size;
        p = e ? e + 1 : p + len;
    }
    return 0;
}

int uc_space_timesteps(int base, const char *spec, int64_t *out, int *count)
{
    if (base < 1 || base > UC_DIFFUSION_MAX_STEPS)
        return uc_err("diffusion steps %d out of range 1..%d", base, UC_DIFFUSION_MAX_STEPS);
    if (!spec)
        spec = "";
    if (strlen(spec) > UC_RESPACING_MAX)
        return uc_err("respacing string longer than %d characters", UC_RESPACING_MAX);
    unsigned char *keep = uc_alloc((size_t)base, 1);
    int rc = 0;
    if (!*spec) {
        memset(keep, 1, (size_t)base);
    } else if (!strncmp(spec, "ddim", 4)) {
        long want;
        if (parse_count(spec + 4, strlen(spec + 4), &want)) {
            rc = uc_err("respacing \"%s\": expected ddimN", spec);
        } else {
            int stride = 0;
            for (int i = 1; i < base && !stride; i++)
                if ((base + i - 1) / i == want)
                    stride = i;
            if (!stride)
                rc = uc_err("respacing \"%s\": no integer stride gives exactly %ld of %d steps", spec, want, base);
            for (int i = 0; stride && i < base; i += stride)
                keep[i] = 1;
        }
    } else if (!strcmp(spec, "fast27")) {
        /* Karlo's preset: "10,10,3,2,2" with the noisiest step moved two
         * steps earlier */
        rc = space_sections(base, "10,10,3,2,2", keep);
        if (!rc && (base < 3 || !keep[base - 1]))
            rc = uc_err("respacing \"fast27\" needs a longer process than %d steps", base);
        if (!rc) {
            keep[base - 1] = 0;
            keep[base - 3] = 1;
        }
    } else {
        rc = space_sections(base, spec, keep);
    }
    int n = 0;
    for (int i = 0; !rc && i < base; i++)
        if (keep[i])
            out[n++] = i;
    uc_free(keep);
    if (rc)
        return -1;
    if (n < 2)
        return uc_err("respacing \"%s\" keeps %d step%s; at least 2 are needed", spec, n, n == 1 ? "" : "s");
    *count = n;
    return 0;
}

/* ---- the process -------------------------------------------------------- */

void uc_diffusion_free(uc_diffusion *d)
{
    if (!d)
        return;
    double **arr[] = {&d->betas, &d->log_betas, &d->alphas_cumprod, &d->alphas_cumprod_prev,
                      &d->sqrt_recip_alphas_cumprod, &d->sqrt_recipm1_alphas_cumprod, &d->posterior_variance,
                      &d->posterior_log_variance_clipped, &d->posterior_mean_coef1, &d->posterior_mean_coef2,
                      &d->fixed_large_variance};
    for (size_t i = 0; i < UC_COUNT(arr); i++) {
        uc_free(*arr[i]);
        *arr[i] = NULL;
    }
    uc_free(d->timestep_map);
    d->timestep_map = NULL;
    d->steps = 0;
}

int uc_diffusion_init(uc_diffusion *d, const char *schedule, int base_steps, const char *respacing,
                      uc_mean_type mean_type, uc_var_type var_type)
{
    memset(d, 0, sizeof *d);
    if (base_steps < 2 || base_steps > UC_DIFFUSION_MAX_STEPS)
        return uc_err("diffusion steps %d out of range 2..%d", base_steps, UC_DIFFUSION_MAX_STEPS);
    double *base = uc_alloc((size_t)base_steps, sizeof *base);
    int64_t *kept = uc_alloc((size_t)base_steps, sizeof *kept);
    int T = 0;
    if (uc_beta_schedule(schedule, base_steps, base) || uc_space_timesteps(base_steps, respacing, kept, &T)) {
        uc_free(base);
        uc_free(kept);
        return -1;
    }
    d->steps = T;
    d->base_steps = base_steps;
    d->mean_type = mean_type;
    d->var_type = var_type;
    d->timestep_map = uc_alloc((size_t)T, sizeof *d->timestep_map);
    memcpy(d->timestep_map, kept, (size_t)T * sizeof *kept);
    double **arr[] = {&d->betas, &d->log_betas, &d->alphas_cumprod, &d->alphas_cumprod_prev,
                      &d->sqrt_recip_alphas_cumprod, &d->sqrt_recipm1_alphas_cumprod, &d->posterior_variance,
                      &d->posterior_log_variance_clipped, &d->posterior_mean_coef1, &d->posterior_mean_coef2,
                      &d->fixed_large_variance};
    for (size_t i = 0; i < UC_COUNT(arr); i++)
        *arr[i] = uc_alloc((size_t)T, sizeof(double));

    /* respaced betas from the base process's cumulative products */
    double acp = 1.0, last = 1.0;
    int k = 0;
    for (int i = 0; i < base_steps && k < T; i++) {
        acp *= 1.0 - base[i];
        if (i == kept[k]) {
            d->betas[k++] = 1 - acp / last;
            last = acp;
        }
    }
    uc_free(base);
    uc_free(kept);
    for (int t = 0; t < T; t++)
        if (!(d->betas[t] > 0 && d->betas[t] <= 1)) {
            uc_diffusion_free(d);
            return uc_err("diffusion schedule: beta %d out of (0, 1]", t);
        }

    double *b = d->betas;
    acp = 1.0;
    for (int t = 0; t < T; t++) {
        double prev = acp;
        acp *= 1.0 - b[t];
        d->alphas_cumprod[t] = acp;
        d->alphas_cumprod_prev[t] = prev;
        d->log_betas[t] = log(b[t]);
        d->sqrt_recip_alphas_cumprod[t] = sqrt(1.0 / acp);
        d->sqrt_recipm1_alphas_cumprod[t] = sqrt(1.0 / acp - 1);
        d->posterior_variance[t] = b[t] * (1.0 - prev) / (1.0 - acp);
        d->posterior_mean_coef1[t] = b[t] * sqrt(prev) / (1.0 - acp);
        d->posterior_mean_coef2[t] = (1.0 - prev) * sqrt(1.0 - b[t]) / (1.0 - acp);
    }
    for (int t = 0; t < T; t++) {
        double pv = d->posterior_variance[t == 0 ? 1 : t];
        d->posterior_log_variance_clipped[t] = log(pv);
        d->fixed_large_variance[t] = t == 0 ? pv : b[t];
    }
    return 0;
}

/* A boolean config field (true/false or a number); dflt when absent. */
static int cfg_bool(const cJSON *j, const char *key, int dflt, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!v) {
        *out = dflt;
        return 0;
    }
    if (cJSON_IsBool(v))
        *out = cJSON_IsTrue(v);
    else if (cJSON_IsNumber(v))
        *out = v->valuedouble != 0;
    else
        return uc_err("diffusion config: %s is not a boolean", key);
    return 0;
}

int uc_diffusion_from_config(uc_diffusion *d, const cJSON *j, const char *respacing)
{
    memset(d, 0, sizeof *d);
    if (!cJSON_IsObject(j))
        return uc_err("diffusion config: not an object");
    const cJSON *steps = cJSON_GetObjectItemCaseSensitive(j, "steps");
    const cJSON *sched = cJSON_GetObjectItemCaseSensitive(j, "noise_schedule");
    const cJSON *resp = cJSON_GetObjectItemCaseSensitive(j, "timestep_respacing");
    if (!cJSON_IsNumber(steps) || steps->valuedouble != floor(steps->valuedouble) || steps->valuedouble < 2 ||
        steps->valuedouble > UC_DIFFUSION_MAX_STEPS)
        return uc_err("diffusion config: steps missing or not an integer in 2..%d", UC_DIFFUSION_MAX_STEPS);
    if (!cJSON_IsString(sched))
        return uc_err("diffusion config: noise_schedule missing or not a string");
    if (resp && !cJSON_IsString(resp) && !cJSON_IsNull(resp))
        return uc_err("diffusion config: timestep_respacing is not a string");
    int learn_sigma, sigma_small, predict_xstart;
    if (cfg_bool(j, "learn_sigma", 0, &learn_sigma) || cfg_bool(j, "sigma_small", 0, &sigma_small) ||
        cfg_bool(j, "predict_xstart", 0, &predict_xstart))
        return -1;
    if (!respacing)
        respacing = cJSON_IsString(resp) ? resp->valuestring : "";
    uc_var_type vt = learn_sigma ? UC_VAR_LEARNED_RANGE : sigma_small ? UC_VAR_FIXED_SMALL : UC_VAR_FIXED_LARGE;
    return uc_diffusion_init(d, sched->valuestring, (int)steps->valuedouble, respacing,
                             predict_xstart ? UC_MEAN_START_X : UC_MEAN_EPSILON, vt);
}

const uc_diffusion *uc_schedule_get(uc_schedule *s, const cJSON *diffusion, const char *respacing)
{
    if (s->have && (respacing && s->respacing ? !strcmp(respacing, s->respacing) : !respacing && !s->respacing))
        return &s->d;
    uc_diffusion d;
    if (!diffusion) {
        uc_err("config: diffusion section missing");
        return NULL;
    }
    if (uc_diffusion_from_config(&d, diffusion, respacing))
        return NULL;
    uc_schedule_free(s);
    s->d = d;
    s->have = 1;
    s->respacing = respacing ? uc_strdup(respacing) : NULL;
    return &s->d;
}

void uc_schedule_free(uc_schedule *s)
{
    if (s->have)
        uc_diffusion_free(&s->d);
    uc_free(s->respacing);
    memset(s, 0, sizeof *s);
}

const char *uc_sampler_name(uc_sampler s)
{
    return s == UC_SAMPLER_DDIM ? "ddim" : s == UC_SAMPLER_DPMPP_2M ? "dpm++2m" : "ddpm";
}

uc_sampler uc_sampler_for_respacing(const char *r)
{
    return r && (!strncmp(r, "ddim", 4) || !strncmp(r, "fast", 4)) ? UC_SAMPLER_DDIM : UC_SAMPLER_DDPM;
}

/* ---- per-step math (float, with coefficients rounded from double) -------- */

void uc_q_posterior(const uc_diffusion *d, int64_t n, int64_t cs, const int64_t *t, const float *x_start,
                    const float *x_t, float *mean, float *var, float *log_var)
{
    for (int64_t r = 0; r < n; r++) {
        float c1 = (float)d->posterior_mean_coef1[t[r]], c2 = (float)d->posterior_mean_coef2[t[r]];
        float pv = (float)d->posterior_variance[t[r]], plv = (float)d->posterior_log_variance_clipped[t[r]];
        for (int64_t i = r * cs; i < (r + 1) * cs; i++) {
            if (mean)
                mean[i] = c1 * x_start[i] + c2 * x_t[i];
            if (var)
                var[i] = pv;
            if (log_var)
                log_var[i] = plv;
        }
    }
}

int uc_p_mean_variance(const uc_diffusion *d, int64_t n, int64_t channels, int64_t spatial, const int64_t *t,
                       const float *x, const float *model_out, const uc_denoise *dn, float *mean, float *var,
                       float *log_var, float *pred_xstart)
{
    for (int64_t r = 0; r < n; r++)
        if (t[r] < 0 || t[r] >= d->steps)
            return uc_err("timestep %lld out of range 0..%d", (long long)t[r], d->steps - 1);
    int learned = d->var_type == UC_VAR_LEARNED || d->var_type == UC_VAR_LEARNED_RANGE;
    int64_t cs = channels * spatial, ocs = learned ? 2 * cs : cs;
    for (int64_t r = 0; r < n; r++) {
        const float *xr = x + r * cs, *mo = model_out + r * ocs, *vv = mo + cs;
        float *x0 = pred_xstart + r * cs;
        int64_t tr = t[r];
        /* variance */
        float *vr = var ? var + r * cs : NULL, *lr = log_var ? log_var + r * cs : NULL;
        if (d->var_type == UC_VAR_LEARNED_RANGE) {
            float min_log = (float)d->posterior_log_variance_clipped[tr], max_log = (float)d->log_betas[tr];
            for (int64_t i = 0; i < cs; i++) {
                float frac = (vv[i] + 1.0f) / 2.0f;
                float lv = frac * max_log + (1.0f - frac) * min_log;
                if (lr)
                    lr[i] = lv;
                if (vr)
                    vr[i] = expf(lv);
            }
        } else if (d->var_type == UC_VAR_LEARNED) {
            for (int64_t i = 0; i < cs; i++) {
                if (lr)
                    lr[i] = vv[i];
                if (vr)
                    vr[i] = expf(vv[i]);
            }
        } else {
            int small = d->var_type == UC_VAR_FIXED_SMALL;
            double v = small ? d->posterior_variance[tr] : d->fixed_large_variance[tr];
            float vf = (float)v, lf = (float)(small ? d->posterior_log_variance_clipped[tr] : log(v));
            for (int64_t i = 0; i < cs; i++) {
                if (lr)
                    lr[i] = lf;
                if (vr)
                    vr[i] = vf;
            }
        }
        /* x_0 */
        if (d->mean_type == UC_MEAN_START_X) {
            memcpy(x0, mo, (size_t)cs * sizeof *x0);
        } else {
            float a = (float)d->sqrt_recip_alphas_cumprod[tr], b = (float)d->sqrt_recipm1_alphas_cumprod[tr];
            for (int64_t i = 0; i < cs; i++)
                x0[i] = a * xr[i] - b * mo[i];
        }
        /* torch.clamp keeps NaN (fmaxf would turn it into the bound and
         * hide a broken sample behind a plausible one) */
        if (dn && dn->clamp > 0)
            for (int64_t i = 0; i < cs; i++)
                x0[i] = isnan(x0[i]) ? x0[i] : fminf(fmaxf(x0[i], -dn->clamp), dn->clamp);
        if (dn && dn->clip_denoised)
            for (int64_t i = 0; i < cs; i++)
                x0[i] = isnan(x0[i]) ? x0[i] : fminf(fmaxf(x0[i], -1.0f), 1.0f);
    }
    uc_q_posterior(d, n, cs, t, pred_xstart, x, mean, NULL, NULL);
    return 0;
}

void uc_ddpm_step(int64_t n, int64_t cs, const int64_t *t, const float *mean, const float *log_var,
                  const float *noise, float *x_prev)
{
    for (int64_t r = 0; r < n; r++) {
        float nz = t[r] != 0 ? 1.0f : 0.0f;
        for (int64_t i = r * cs; i < (r + 1) * cs; i++)
            x_prev[i] = mean[i] + nz * expf(0.5f * log_var[i]) * noise[i];
    }
}

void uc_ddim_step(const uc_diffusion *d, int64_t n, int64_t cs, const int64_t *t, const float *x,
                  const float *pred_xstart, const float *noise, float eta, float *x_prev)
{
    for (int64_t r = 0; r < n; r++) {
        int64_t tr = t[r];
        float a = (float)d->sqrt_recip_alphas_cumprod[tr], b = (float)d->sqrt_recipm1_alphas_cumprod[tr];
        float ab = (float)d->alphas_cumprod[tr], abp = (float)d->alphas_cumprod_prev[tr];
        float sigma = eta * sqrtf((1.0f - abp) / (1.0f - ab)) * sqrtf(1.0f - ab / abp);
        /* 1 - abp - sigma^2 is (1 - abp)^2 ab / (abp (1 - ab)) at eta 1: tiny at
         * the first step (ab near 0), where rounding made it negative (NaN) */
        float c0 = sqrtf(abp), ce = sqrtf(fmaxf(0.0f, 1.0f - abp - sigma * sigma));
        float nz = tr != 0 ? 1.0f : 0.0f;
        for (int64_t i = r * cs; i < (r + 1) * cs; i++) {
            float eps = (a * x[i] - pred_xstart[i]) / b;
            x_prev[i] = pred_xstart[i] * c0 + ce * eps + nz * sigma * noise[i];
        }
    }
}

void uc_dpmpp_2m_step(const uc_diffusion *d, int64_t n, int64_t cs, int64_t t, const float *x, const float *x0,
                      const float *x0_prev, float *x_prev)
{
    int64_t nel = n * cs;
    if (t == 0) { /* to the clean sample: sigma 0, h infinite, x = x_0 */
        memcpy(x_prev, x0, (size_t)nel * sizeof *x_prev);
        return;
    }
    double as = d->alphas_cumprod[t], at = d->alphas_cumprod_prev[t];
    double lam_s = 0.5 * log(as / (1 - as)), lam_t = 0.5 * log(at / (1 - at));
    double h = lam_t - lam_s;
    double ratio = sqrt((1 - at) / (1 - as));     /* sigma_t / sigma_s */
    double coef = sqrt(at) * -expm1(-h);           /* alpha_t (1 - e^-h) */
    double c0 = 1, c1 = 0;                         /* D = c0 x0 + c1 x0_prev */
    if (x0_prev && t + 1 < d->steps) {
        double ap = d->alphas_cumprod[t + 1];
        double h_prev = lam_s - 0.5 * log(ap / (1 - ap));
        double r = h_prev / h;
        c0 = 1 + 1 / (2 * r);
        c1 = -1 / (2 * r);
    }
    float fr = (float)ratio, fa = (float)(coef * c0), fb = (float)(coef * c1);
    if (c1 == 0)
        for (int64_t i = 0; i < nel; i++)
            x_prev[i] = fr * x[i] + fa * x0[i];
    else
        for (int64_t i = 0; i < nel; i++)
            x_prev[i] = fr * x[i] + fa * x0[i] + fb * x0_prev[i];
}

/* ---- the loop ----------------------------------------------------------- */

int uc_diffusion_sample(const uc_diffusion *d, const uc_sample_opts *o, float *x)
{
    size_t cs, nel, onel;
    int learned = d->var_type == UC_VAR_LEARNED || d->var_type == UC_VAR_LEARNED_RANGE;
    if (o->n < 1 || o->channels < 1 || o->spatial < 1 || uc_mul_ok((size_t)o->channels, (size_t)o->spatial, &cs) ||
        uc_mul_ok(cs, (size_t)o->n, &nel) || uc_mul_ok(nel, learned ? 2 : 1, &onel) || onel > (size_t)INT64_MAX / 4)
        return uc_err("diffusion batch shape %lld x %lld x %lld out of range", (long long)o->n,
                      (long long)o->channels, (long long)o->spatial);
    if (o->edit) { /* an edit with something to keep has its own loop */
        for (int64_t i = 0; i < o->spatial; i++)
            if (o->edit->keep[i])
                return uc_edit_sample(d, o, x);
    }
    uc_step_ws w;
    uc_step_ws_init(&w, d, o);
    int rc = o->noise(o->noise_ctx, 0, x, (int64_t)nel) ? uc_err_prefix("initial noise") : 0;
    for (int i = 0; !rc && i < d->steps; i++) {
        uc_step s = {.index = i, .count = d->steps, .t = d->steps - 1 - i, .call = i, .calls = d->steps};
        s.t_model = d->timestep_map[s.t];
        if (uc_denoise_step(d, o, &s, i + 1, x, &w)) {
            rc = uc_err_prefix("step %d of %d (t=%lld)", i + 1, d->steps, (long long)s.t_model);
            break;
        }
        memcpy(x, w.next, nel * sizeof *x);
    }
    uc_step_ws_free(&w);
    return rc;
}

void uc_step_ws_init(uc_step_ws *w, const uc_diffusion *d, const uc_sample_opts *o)
{
    int learned = d->var_type == UC_VAR_LEARNED || d->var_type == UC_VAR_LEARNED_RANGE;
    w->nel = (size_t)(o->channels * o->spatial) * (size_t)o->n;
    w->out = uc_alloc(w->nel * (learned ? 2 : 1), sizeof *w->out);
    w->mean = uc_alloc(w->nel, sizeof *w->mean);
    w->log_var = uc_alloc(w->nel, sizeof *w->log_var);
    w->x0 = uc_alloc(w->nel, sizeof *w->x0);
    w->noise = uc_alloc(w->nel, sizeof *w->noise);
    w->next = uc_alloc(w->nel, sizeof *w->next);
    w->x0_prev = o->sampler == UC_SAMPLER_DPMPP_2M ? uc_alloc(w->nel, sizeof *w->x0_prev) : NULL;
    w->prev_t = -1;
    w->t = uc_alloc((size_t)o->n, sizeof *w->t);
}

void uc_step_ws_free(uc_step_ws *w)
{
    float **f[] = {&w->out, &w->mean, &w->log_var, &w->x0, &w->noise, &w->next, &w->x0_prev};
    for (size_t i = 0; i < UC_COUNT(f); i++)
        uc_free(*f[i]);
    uc_free(w->t);
    memset(w, 0, sizeof *w);
}

int uc_denoise_step(const uc_diffusion *d, const uc_sample_opts *o, const uc_step *s, int draw, const float *x,
                    uc_step_ws *w)
{
    int64_t cs = o->channels * o->spatial;
    for (int64_t r = 0; r < o->n; r++)
        w->t[r] = s->t;
    if (o->model(o->model_ctx, s, x, w->out) ||
        uc_p_mean_variance(d, o->n, o->channels, o->spatial, w->t, x, w->out, &o->denoise, w->mean, NULL, w->log_var,
                           w->x0) ||
        o->noise(o->noise_ctx, draw, w->noise, (int64_t)w->nel))
        return -1;
    if (o->sampler == UC_SAMPLER_DPMPP_2M) {
        int second = w->x0_prev && w->prev_t == s->t + 1;
        uc_dpmpp_2m_step(d, o->n, cs, s->t, x, w->x0, second ? w->x0_prev : NULL, w->next);
        if (w->x0_prev) { /* keep this step's x_0 for the next */
            memcpy(w->x0_prev, w->x0, w->nel * sizeof *w->x0_prev);
            w->prev_t = s->t;
        }
    } else if (o->sampler == UC_SAMPLER_DDIM)
        uc_ddim_step(d, o->n, cs, w->t, x, w->x0, w->noise, o->eta, w->next);
    else
        uc_ddpm_step(o->n, cs, w->t, w->mean, w->log_var, w->noise, w->next);
    return o->trace && o->trace(o->trace_ctx, s, x, w->next, w->x0) ? -1 : 0;
}
