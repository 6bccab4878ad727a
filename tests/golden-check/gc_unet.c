/* gc_unet.c - golden handlers of the UNet family: Karlo's decoder
 * (karlo/decoder-forward*, karlo/decoder-sample) and super-resolution
 * models (karlo/sr-forward*, karlo/sr-sample). Models are built from the
 * case config and the weight shapes; sampling cases replay the recorded
 * noise and compare every step's trace, reporting the first step that
 * differs. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <stdlib.h>

#include "formats/base.h"
#include "libcommon/models/decoder.h"
#include "libcommon/models/sr.h"
#include "gc.h"

/* ---- shared pieces ------------------------------------------------------ */

/* The stage handles are built from the case's config as JSON text. */
static uc_decoder *load_decoder(gc_case *c)
{
    char *text = cJSON_PrintUnformatted(c->config);
    uc_decoder *d = text ? uc_decoder_load(c->model, text) : NULL;
    free(text);
    if (!d)
        gc_fail(c, "model: %s", uc_errmsg());
    return d;
}

static uc_sr *load_sr(gc_case *c)
{
    char *text = cJSON_PrintUnformatted(c->config);
    uc_sr *s = text ? uc_sr_load(c->model, text) : NULL;
    free(text);
    if (!s)
        gc_fail(c, "model: %s", uc_errmsg());
    return s;
}

static double *timesteps(gc_case *c, const char *name, int64_t n)
{
    uc_tensor s;
    int64_t *t = gc_i64(c, name, &s);
    if (!t)
        return NULL;
    if (uc_tensor_numel(&s) != n) {
        uc_free(t);
        gc_fail(c, "%s: %lld values for a batch of %lld", name, (long long)uc_tensor_numel(&s), (long long)n);
        return NULL;
    }
    double *d = uc_alloc((size_t)n, sizeof(double));
    for (int64_t i = 0; i < n; i++)
        d[i] = (double)t[i];
    uc_free(t);
    return d;
}

static unsigned char *mask_u8(gc_case *c, const char *name, uc_tensor *s)
{
    int64_t *m = gc_i64(c, name, s);
    if (!m)
        return NULL;
    int64_t n = uc_tensor_numel(s);
    unsigned char *u = uc_alloc((size_t)n + 1, 1);
    for (int64_t i = 0; i < n; i++)
        u[i] = m[i] != 0;
    uc_free(m);
    return u;
}

/* Noise draws replayed from noise_000, noise_001, ... */
static int noise_fn(void *ctx, int draw, float *out, int64_t n)
{
    gc_case *c = ctx;
    char name[32];
    uc_tensor s;
    snprintf(name, sizeof name, "noise_%03d", draw);
    float *x = gc_f32(c, name, &s);
    if (!x)
        return uc_err("%s missing", name);
    if (uc_tensor_numel(&s) != n) {
        uc_free(x);
        return uc_err("%s: %lld values, the sampler wants %lld", name, (long long)uc_tensor_numel(&s),
                      (long long)n);
    }
    memcpy(out, x, (size_t)n * sizeof *out);
    uc_free(x);
    return 0;
}

/* Per-step traces, compared after the loop. */
typedef struct {
    int64_t per; /* floats per step */
    int nsteps, cap;
    int64_t *t_spaced, *t_model; /* [cap * rows] */
    int64_t rows;
    float *x_in, *sample, *pred; /* [cap * per] */
} trace;

static int trace_fn(void *ctx, const uc_step *s, const float *x_in, const float *sample, const float *pred)
{
    trace *tr = ctx;
    if (s->index >= tr->cap)
        return uc_err("more steps than the case records");
    int i = s->index;
    for (int64_t r = 0; r < tr->rows; r++) {
        tr->t_spaced[i * tr->rows + r] = s->t;
        tr->t_model[i * tr->rows + r] = s->t_model;
    }
    memcpy(tr->x_in + i * tr->per, x_in, (size_t)tr->per * sizeof(float));
    memcpy(tr->sample + i * tr->per, sample, (size_t)tr->per * sizeof(float));
    memcpy(tr->pred + i * tr->per, pred, (size_t)tr->per * sizeof(float));
    tr->nsteps = i + 1;
    return 0;
}

static void trace_init(trace *tr, int cap, int64_t rows, int64_t per)
{
    memset(tr, 0, sizeof *tr);
    tr->cap = cap, tr->rows = rows, tr->per = per;
    tr->t_spaced = uc_alloc((size_t)(cap * rows), sizeof(int64_t));
    tr->t_model = uc_alloc((size_t)(cap * rows), sizeof(int64_t));
    tr->x_in = uc_alloc((size_t)(cap * per), sizeof(float));
    tr->sample = uc_alloc((size_t)(cap * per), sizeof(float));
    tr->pred = uc_alloc((size_t)(cap * per), sizeof(float));
}

static void trace_free(trace *tr)
{
    uc_free(tr->t_spaced);
    uc_free(tr->t_model);
    uc_free(tr->x_in);
    uc_free(tr->sample);
    uc_free(tr->pred);
}

/* First step at which a traced tensor leaves the tolerance; -1 if none. */
static int first_bad_step(gc_case *c, const char *name, const float *got, int nsteps, int64_t per)
{
    uc_tensor s;
    float *want = gc_f32(c, name, &s);
    if (!want)
        return 0;
    int bad = -1;
    if (uc_tensor_numel(&s) != nsteps * per) {
        gc_fail(c, "%s: %d steps of %lld values computed, expected %lld values", name, nsteps, (long long)per,
                (long long)uc_tensor_numel(&s));
        bad = 0;
    }
    for (int64_t i = 0; bad < 0 && i < nsteps * per; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (d > c->max_err || d != d)
            c->max_err = d != d ? INFINITY : d;
        if (!(d <= c->atol + c->rtol * fabs((double)want[i]))) {
            bad = (int)(i / per);
            gc_fail(c, "step %d: %s[%lld]: got %.8g want %.8g", bad, name, (long long)(i % per), got[i], want[i]);
        }
    }
    uc_free(want);
    return bad;
}

/* Compare the traces in step order: the first step where any differs. */
static int check_trace(gc_case *c, trace *tr)
{
    if (tr->nsteps != tr->cap)
        return gc_fail(c, "sampled %d steps, the case records %d", tr->nsteps, tr->cap);
    if (gc_check_i64(c, "step_t_spaced", tr->t_spaced, tr->nsteps * tr->rows) ||
        gc_check_i64(c, "step_t_model", tr->t_model, tr->nsteps * tr->rows))
        return -1;
    /* run all three and fail on the earliest step (messages: first wins, so
     * find the earliest step first) */
    gc_case probe = *c;
    int b[3] = {first_bad_step(&probe, "step_x_in", tr->x_in, tr->nsteps, tr->per),
                first_bad_step(&probe, "step_pred_xstart", tr->pred, tr->nsteps, tr->per),
                first_bad_step(&probe, "step_sample", tr->sample, tr->nsteps, tr->per)};
    static const char *names[3] = {"step_x_in", "step_pred_xstart", "step_sample"};
    const float *bufs[3] = {tr->x_in, tr->pred, tr->sample};
    c->max_err = probe.max_err;
    int worst = -1;
    for (int i = 0; i < 3; i++)
        if (b[i] >= 0 && (worst < 0 || b[i] < b[worst]))
            worst = i;
    if (worst < 0)
        return 0;
    first_bad_step(c, names[worst], bufs[worst], tr->nsteps, tr->per);
    return -1;
}

static int steps_recorded(gc_case *c)
{
    const uc_tensor *t = st_get(c->io, "step_t_spaced");
    if (!t || t->ndim != 2 || t->shape[0] < 1 || t->shape[0] > 100000)
        return gc_fail(c, "step_t_spaced missing or not [steps, rows]");
    return (int)t->shape[0];
}

/* ---- decoder ------------------------------------------------------------ */

int gc_decoder_forward(gc_case *c)
{
    uc_decoder *d = load_decoder(c);
    if (!d)
        return -1;
    const uc_decoder_info *info = uc_decoder_get_info(d);
    uc_tensor xs, ss, ms, gs, sc;
    float *x = gc_f32(c, "x_t", &xs), *txt = gc_f32(c, "txt_feat", NULL), *seq = gc_f32(c, "txt_feat_seq", &ss);
    float *y = gc_f32(c, "y", NULL), *gx = gc_f32(c, "guided_x_t", &gs), *scales = gc_f32(c, "cf_scales", &sc);
    unsigned char *mask = mask_u8(c, "mask", &ms);
    int64_t B = x ? xs.shape[0] : 0, H = x ? xs.shape[2] : 0, W = x ? xs.shape[3] : 0;
    double *t = timesteps(c, "timesteps", B), *gt = timesteps(c, "guided_timesteps", B);
    float *out = NULL;
    if (x && txt && seq && y && gx && scales && mask && t && gt) {
        int64_t oc = info->out_channels, n = B * oc * H * W;
        out = uc_alloc((size_t)n, sizeof(float));
        if (uc_decoder_forward(d, B, H, W, ss.shape[1], x, t, txt, seq, mask, y, out))
            gc_fail(c, "forward: %s", uc_errmsg());
        else
            gc_check(c, "model_out", out, n);
        uc_decoder_cond cond = {B / 2, ss.shape[1], txt, seq, mask, y, scales, uc_tensor_numel(&sc)};
        if (uc_decoder_guided(d, &cond, H, W, gx, gt, out))
            gc_fail(c, "guided: %s", uc_errmsg());
        else
            gc_check(c, "guided_out", out, n);
    }
    uc_free(out);
    uc_free(x);
    uc_free(txt);
    uc_free(seq);
    uc_free(y);
    uc_free(gx);
    uc_free(scales);
    uc_free(mask);
    uc_free(t);
    uc_free(gt);
    uc_decoder_free(d);
    return c->fail[0] ? -1 : 0;
}

int gc_decoder_sample(gc_case *c)
{
    uc_decoder *d = load_decoder(c);
    if (!d)
        return -1;
    const uc_decoder_info *info = uc_decoder_get_info(d);
    const char *respacing = gc_str(c->config, "timestep_respacing", NULL);
    uc_tensor fs, ss, ms, sc;
    float *img = gc_f32(c, "img_feat", &fs), *txt = gc_f32(c, "txt_feat", NULL);
    float *seq = gc_f32(c, "txt_feat_seq", &ss), *scales = gc_f32(c, "cf_scales", &sc);
    unsigned char *mask = mask_u8(c, "mask", &ms);
    int nsteps = steps_recorded(c);
    if (img && txt && seq && scales && mask && nsteps > 0 && respacing) {
        int64_t B = fs.shape[0], S = info->image_size, per = 2 * B * 3 * S * S, D = info->clip_dim;
        float *y = uc_alloc((size_t)(2 * B * D), sizeof(float)), *x = uc_alloc((size_t)per, sizeof(float));
        uc_decoder_guided_y(d, B, img, y);
        uc_decoder_cond cond = {B, ss.shape[1], txt, seq, mask, y, scales, uc_tensor_numel(&sc)};
        trace tr;
        trace_init(&tr, nsteps, 2 * B, per);
        uc_stage_opts o = {.respacing = respacing,
                           .sampler = uc_sampler_for_respacing(respacing),
                           .noise = noise_fn,
                           .noise_ctx = c,
                           .trace = trace_fn,
                           .trace_ctx = &tr};
        if (uc_decoder_sample(d, &cond, &o, x))
            gc_fail(c, "sample: %s", uc_errmsg());
        else if (check_trace(c, &tr) == 0 && gc_check(c, "sample", x, per / 2) == 0) {
            for (int64_t i = 0; i < per / 2; i++)
                x[i] = x[i] < -1 ? -1 : x[i] > 1 ? 1 : x[i];
            gc_check(c, "sample_clamped", x, per / 2);
        }
        trace_free(&tr);
        uc_free(y);
        uc_free(x);
    } else if (!respacing) {
        gc_fail(c, "config.timestep_respacing missing");
    }
    uc_free(img);
    uc_free(txt);
    uc_free(seq);
    uc_free(scales);
    uc_free(mask);
    uc_decoder_free(d);
    return c->fail[0] ? -1 : 0;
}

/* ---- super-resolution --------------------------------------------------- */

int gc_sr_forward(gc_case *c)
{
    uc_sr *s = load_sr(c);
    if (!s)
        return -1;
    uc_tensor xs;
    float *x = gc_f32(c, "x_t", &xs), *low = gc_f32(c, "low_res", NULL);
    int64_t B = x ? xs.shape[0] : 0, H = x ? xs.shape[2] : 0, W = x ? xs.shape[3] : 0;
    double *t = timesteps(c, "timesteps", B);
    if (x && low && t) {
        int64_t n = B * uc_sr_get_info(s)->out_channels * H * W;
        float *out = uc_alloc((size_t)n, sizeof(float));
        static const char *names[2] = {"out_first_steps", "out_last_step"};
        for (int last = 0; last < 2; last++) {
            if (uc_sr_forward(s, last, B, H, W, x, t, low, out))
                gc_fail(c, "%s: %s", names[last], uc_errmsg());
            else
                gc_check(c, names[last], out, n);
        }
        uc_free(out);
    }
    uc_free(x);
    uc_free(low);
    uc_free(t);
    uc_sr_free(s);
    return c->fail[0] ? -1 : 0;
}

int gc_sr_sample(gc_case *c)
{
    uc_sr *s = load_sr(c);
    if (!s)
        return -1;
    const char *respacing = gc_str(c->config, "timestep_respacing", gc_str(c->config, "diffusion.timestep_respacing", NULL));
    uc_tensor ls;
    float *low = gc_f32(c, "low_res", &ls);
    int nsteps = steps_recorded(c);
    if (low && nsteps > 0 && respacing) {
        int64_t B = ls.shape[0], H = ls.shape[2], W = ls.shape[3], per = B * 3 * H * W;
        float *x = uc_alloc((size_t)per, sizeof(float));
        trace tr;
        trace_init(&tr, nsteps, B, per);
        uc_stage_opts o = {
            .respacing = respacing, .noise = noise_fn, .noise_ctx = c, .trace = trace_fn, .trace_ctx = &tr};
        if (uc_sr_sample(s, B, H, W, low, &o, x))
            gc_fail(c, "sample: %s", uc_errmsg());
        else if (check_trace(c, &tr) == 0 && gc_check(c, "sample", x, per) == 0) {
            for (int64_t i = 0; i < per; i++) {
                float v = x[i] * 0.5f + 0.5f;
                x[i] = v < 0 ? 0 : v > 1 ? 1 : v;
            }
            gc_check(c, "sample_01", x, per);
        }
        trace_free(&tr);
        uc_free(x);
    } else if (!respacing) {
        gc_fail(c, "config.timestep_respacing missing");
    }
    uc_free(low);
    uc_sr_free(s);
    return c->fail[0] ? -1 : 0;
}
