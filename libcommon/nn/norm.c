/* norm.c - see norm.h. */
#include "libcommon/nn/norm.h"

#include <math.h>

#include "libcommon/nn/cpu.h"
#include "libcommon/nn/exp.h"
#include "libcommon/nn/ops.h"

UC_INLINE float silu_f(float v) { return v / (1.0f + uc_exp_f(-v)); }

#define VB 16 /* block width of the vectorized passes */

/* y = x * a + s, then * sc + sh when film, then SiLU when silu; n floats. */
UC_INLINE void affine_act(const float *x, float *y, int64_t n, float a, float s, int film, float sc, float sh, int silu)
{
    int64_t i = 0;
    for (; i + VB <= n; i += VB) {
        float v[VB];
        for (int j = 0; j < VB; j++)
            v[j] = x[i + j] * a + s;
        if (film)
            for (int j = 0; j < VB; j++)
                v[j] = v[j] * sc + sh;
        if (silu)
            for (int j = 0; j < VB; j++)
                v[j] = silu_f(v[j]);
        for (int j = 0; j < VB; j++)
            y[i + j] = v[j];
    }
    for (; i < n; i++) {
        float v = x[i] * a + s;
        if (film)
            v = v * sc + sh;
        y[i] = silu ? silu_f(v) : v;
    }
}

/* Sum of x[n] - m and of its square, 16 float lanes, in double at the end. */
UC_INLINE void moments(const float *x, int64_t n, float m, double *sum, double *sq)
{
    float s[VB] = {0}, q[VB] = {0};
    int64_t i = 0;
    for (; i + VB <= n; i += VB)
        for (int j = 0; j < VB; j++) {
            float d = x[i + j] - m;
            s[j] += d;
            q[j] += d * d;
        }
    double ds = 0, dq = 0;
    for (; i < n; i++) {
        double d = (double)x[i] - m;
        ds += d;
        dq += d * d;
    }
    for (int j = 0; j < VB; j++)
        ds += s[j], dq += q[j];
    *sum += ds;
    *sq += dq;
}

/* ---- GroupNorm ----------------------------------------------------------- */

typedef struct {
    const float *x;
    float *y;
    int64_t C, B, hw;
    int groups;
    double eps;
    const float *gamma, *beta, *film;
    int silu;
} gn_job;

/* Items are (image, group) pairs. */
UC_INLINE void gn_body(void *ctx, int64_t i0, int64_t i1)
{
    const gn_job *j = ctx;
    int64_t C = j->C, B = j->B, hw = j->hw, G = j->groups, cpg = C / G;
    for (int64_t it = i0; it < i1; it++) {
        int64_t b = it / G, g = it % G;
        double sum = 0, sq = 0, n = (double)(cpg * hw);
        for (int64_t c = g * cpg; c < (g + 1) * cpg; c++)
            moments(j->x + (c * B + b) * hw, hw, 0.0f, &sum, &sq);
        double mean = sum / n;
        sum = sq = 0;
        for (int64_t c = g * cpg; c < (g + 1) * cpg; c++) /* two-pass variance */
            moments(j->x + (c * B + b) * hw, hw, (float)mean, &sum, &sq);
        double dm = sum / n, var = sq / n - dm * dm;
        mean += dm;
        double rstd = 1.0 / sqrt((var > 0 ? var : 0) + j->eps);
        for (int64_t c = g * cpg; c < (g + 1) * cpg; c++) {
            float a = (float)(rstd * j->gamma[c]), s = (float)(j->beta[c] - mean * rstd * j->gamma[c]);
            float sc = 1, sh = 0;
            if (j->film)
                sc = 1.0f + j->film[b * 2 * C + c], sh = j->film[b * 2 * C + C + c];
            affine_act(j->x + (c * B + b) * hw, j->y + (c * B + b) * hw, hw, a, s, j->film != NULL, sc, sh,
                       j->silu);
        }
    }
}

UC_CLONE(gn_items, gn_body)

void uc_group_norm(const float *x, float *y, int64_t C, int64_t B, int64_t hw, int groups, double eps,
                   const float *gamma, const float *beta, const float *film, int silu)
{
    gn_job j = {x, y, C, B, hw, groups, eps, gamma, beta, film, silu};
    uc_parallel_for(B * groups, 3.0 * (double)(C * B * hw), uc_pick(gn_items), &j);
}
