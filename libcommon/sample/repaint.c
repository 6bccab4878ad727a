/* repaint.c - the edit's sampling loop (uc_edit in diffusion.h): RePaint
 * (Lugmayr et al. 2022) on the spaced process, with the known region
 * replaced in each step's input and pasted exactly at the end.
 *
 * Levels: level L (0..T) is the noise of the input to spaced step L-1,
 * alpha-bar acp[L-1] (level 0: the clean picture, alpha-bar 1). A step at
 * level L (spaced t = L-1) goes to level L-1; a jump from level L to level
 * L+J draws q(x_{L+J} | x_L) = N(sqrt(a) x_L, (1-a) I) with
 * a = acp(L+J) / acp(L). */
#include <math.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/sample/diffusion.h"

/* alpha-bar of level L */
static double level_acp(const uc_diffusion *d, int L) { return L == 0 ? 1.0 : d->alphas_cumprod[L - 1]; }

/* Does arriving at level L (by a step) start a jump? */
static int jump_point(int T, int J, int L) { return L >= 1 && (L - 1) % J == 0 && L + J <= T; }

int64_t uc_edit_calls(int T, int R, int J)
{
    if (T < 1 || R < 1 || J < 1)
        return 0;
    int64_t points = 0;
    for (int L = 1; L + J <= T; L += J)
        points++;
    return T + (int64_t)(R - 1) * J * points;
}

/* Window corners along a side of n pixels for windows of s: 0, s/2, ...,
 * and n - s; returns how many (at most max). */
static int corners(int n, int s, int *out, int max)
{
    int k = 0, step = s / 2 > 0 ? s / 2 : 1;
    for (int p = 0; p + s < n && k < max - 1; p += step)
        out[k++] = p;
    out[k++] = n - s;
    return k;
}

int uc_edit_window(const unsigned char *known, int cw, int ch, int s, int *wx, int *wy)
{
    int xs[256], ys[256];
    if (s < 1 || cw < s || ch < s)
        return 0;
    int nx = corners(cw, s, xs, 256), ny = corners(ch, s, ys, 256);
    int64_t best = -1;
    for (int j = 0; j < ny; j++)
        for (int i = 0; i < nx; i++) {
            int64_t kn = 0, unk = 0;
            for (int y = ys[j]; y < ys[j] + s; y++)
                for (int x = xs[i]; x < xs[i] + s; x++) {
                    int k = known[(size_t)y * (size_t)cw + (size_t)x] != 0;
                    kn += k;
                    unk += !k;
                }
            if (unk > 0 && kn > best) {
                best = kn;
                *wx = xs[i];
                *wy = ys[j];
            }
        }
    return best >= 0;
}

int uc_edit_sample(const uc_diffusion *d, const uc_sample_opts *o, float *x)
{
    const uc_edit *e = o->edit;
    int T = d->steps, R = e->resample, J = e->jump;
    if (o->sampler == UC_SAMPLER_DPMPP_2M) /* RePaint goes back up: a multistep ODE solver has no such step */
        return uc_err("edit: the dpm++2m sampler does not apply to edits (RePaint); use ddpm or ddim");
    if (R < 1 || R > UC_EDIT_MAX_RESAMPLE)
        return uc_err("edit: resample %d out of range 1..%d", R, UC_EDIT_MAX_RESAMPLE);
    if (J < 1 || J > T)
        return uc_err("edit: jump %d out of range 1..%d (the steps)", J, T);
    uc_step_ws w;
    uc_step_ws_init(&w, d, o); /* the shape was checked by the caller */
    size_t nel = w.nel;
    float *noise = w.noise;
    int *left = uc_alloc((size_t)T + 1, sizeof *left); /* jumps left at each level */
    for (int L = 0; L <= T; L++)
        left[L] = jump_point(T, J, L) ? R - 1 : 0;
    int64_t calls = uc_edit_calls(T, R, J);
    int draw = 0, call = 0, L = T;
    int rc = o->noise(o->noise_ctx, draw++, x, (int64_t)nel) ? uc_err_prefix("initial noise") : 0;
    while (!rc && L > 0) {
        uc_step s = {.index = T - L, .count = T, .t = L - 1, .call = call, .calls = (int)calls};
        s.t_model = d->timestep_map[s.t];
        /* the kept pixels of the input: the known picture noised to level L */
        if (o->noise(o->noise_ctx, draw++, noise, (int64_t)nel)) {
            rc = uc_err_prefix("step %d of %d (t=%lld), call %d", s.index + 1, T, (long long)s.t_model, call + 1);
            break;
        }
        double a = level_acp(d, L);
        float sa = (float)sqrt(a), sb = (float)sqrt(1.0 - a);
        for (int64_t r = 0; r < o->n; r++)
            for (int64_t c = 0; c < o->channels; c++) {
                size_t base = (size_t)(r * o->channels + c) * (size_t)o->spatial;
                const float *k = e->known + c * o->spatial;
                for (int64_t i = 0; i < o->spatial; i++)
                    if (e->keep[i])
                        x[base + i] = sa * k[i] + sb * noise[base + i];
            }
        if (uc_denoise_step(d, o, &s, draw++, x, &w)) {
            rc = uc_err_prefix("step %d of %d (t=%lld), call %d", s.index + 1, T, (long long)s.t_model, call + 1);
            break;
        }
        memcpy(x, w.next, nel * sizeof *x);
        call++;
        L--;
        if (left[L] > 0) { /* back up J levels, to take the steps down again */
            left[L]--;
            if (o->noise(o->noise_ctx, draw++, noise, (int64_t)nel)) {
                rc = uc_err_prefix("jump from step %d of %d", T - L, T);
                break;
            }
            double ratio = level_acp(d, L + J) / level_acp(d, L);
            float ca = (float)sqrt(ratio), cb = (float)sqrt(1.0 - ratio);
            for (size_t i = 0; i < nel; i++)
                x[i] = ca * x[i] + cb * noise[i];
            L += J;
        }
    }
    if (!rc) /* level 0: the known pixels exactly */
        for (int64_t r = 0; r < o->n; r++)
            for (int64_t c = 0; c < o->channels; c++) {
                float *xr = x + (size_t)(r * o->channels + c) * (size_t)o->spatial;
                const float *k = e->known + c * o->spatial;
                for (int64_t i = 0; i < o->spatial; i++)
                    if (e->keep[i])
                        xr[i] = k[i];
            }
    uc_step_ws_free(&w);
    uc_free(left);
    return rc;
}
