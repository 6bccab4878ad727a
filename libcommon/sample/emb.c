/* emb.c - see emb.h. */
#include "libcommon/sample/emb.h"

#include <math.h>
#include <string.h>

#include "formats/base.h"

/* Below this sine of the angle two unit vectors count as parallel. */
#define PARALLEL_EPS 1e-6

static double dot(const float *a, const float *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (double)a[i] * (double)b[i];
    return s;
}

double uc_emb_norm(const float *x, int64_t n) { return sqrt(dot(x, x, n)); }

double uc_emb_angle(const float *a, const float *b, int64_t n)
{
    double na = uc_emb_norm(a, n), nb = uc_emb_norm(b, n);
    if (na == 0 || nb == 0)
        return -1;
    double c = dot(a, b, n) / (na * nb);
    return acos(c > 1 ? 1 : c < -1 ? -1 : c);
}

/* The coefficients (ca, cb) with slerp direction = ca * ua + cb * ub for
 * unit vectors ua, ub of cosine `cosw`; -1 when they are opposite. */
static int slerp_coef(double cosw, double t, double *ca, double *cb)
{
    cosw = cosw > 1 ? 1 : cosw < -1 ? -1 : cosw;
    double w = acos(cosw), s = sin(w);
    if (s < PARALLEL_EPS) {
        if (cosw < 0)
            return -1;
        *ca = 1 - t; /* same direction: a linear blend, normalised later */
        *cb = t;
        return 0;
    }
    *ca = sin((1 - t) * w) / s;
    *cb = sin(t * w) / s;
    return 0;
}

/* out = len * normalise(ca * a / na + cb * b / nb) */
static void combine(const float *a, double na, const float *b, double nb, int64_t n, double ca, double cb, double len,
                    float *out)
{
    double norm2 = 0;
    for (int64_t i = 0; i < n; i++) {
        double v = ca * a[i] / na + cb * b[i] / nb;
        norm2 += v * v;
    }
    double k = norm2 > 0 ? len / sqrt(norm2) : 0;
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)(k * (ca * a[i] / na + cb * b[i] / nb));
}

int uc_emb_slerp(const float *a, const float *b, int64_t n, double t, float *out)
{
    double na = uc_emb_norm(a, n), nb = uc_emb_norm(b, n), ca, cb;
    if (na == 0 || nb == 0)
        return uc_err("slerp: %s embedding is zero", na == 0 ? "the first" : "the second");
    if (memcmp(a, b, (size_t)n * sizeof *a) == 0) { /* between a point and itself: that point, exactly */
        memcpy(out, a, (size_t)n * sizeof *out);
        return 0;
    }
    if (slerp_coef(dot(a, b, n) / (na * nb), t, &ca, &cb))
        return uc_err("slerp: the embeddings point in opposite directions (the path between them is not unique)");
    if (t == 0 || t == 1) {
        const float *src = t == 0 ? a : b;
        for (int64_t i = 0; i < n; i++)
            out[i] = src[i];
        return 0;
    }
    combine(a, na, b, nb, n, ca, cb, (1 - t) * na + t * nb, out);
    return 0;
}

void uc_emb_lerp(const float *a, const float *b, int64_t n, double t, float *out)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = (float)((1 - t) * a[i] + t * b[i]);
}

int uc_emb_textdiff(const float *image_emb, const float *current, const float *target, int64_t n, double theta,
                    float *out)
{
    double ni = uc_emb_norm(image_emb, n), nd2 = 0, dz = 0, ca, cb;
    if (ni == 0)
        return uc_err("text diff: the image embedding is zero");
    for (int64_t i = 0; i < n; i++) {
        double d = (double)target[i] - current[i];
        nd2 += d * d;
        dz += d * image_emb[i];
    }
    double nd = sqrt(nd2);
    if (nd == 0 || nd <= 1e-7 * (uc_emb_norm(target, n) + uc_emb_norm(current, n)))
        return uc_err("text diff: the current and target text embeddings are equal (no direction to move in)");
    if (slerp_coef(dz / (nd * ni), theta, &ca, &cb))
        return uc_err("text diff: the text direction points opposite to the image embedding");
    if (theta == 0) {
        for (int64_t i = 0; i < n; i++)
            out[i] = image_emb[i];
        return 0;
    }
    float *d = uc_alloc((size_t)n, sizeof *d);
    for (int64_t i = 0; i < n; i++)
        d[i] = (float)(((double)target[i] - current[i]) / nd);
    combine(image_emb, ni, d, 1.0, n, ca, cb, ni, out);
    uc_free(d);
    return 0;
}

/* ---- records ---- */

const char *const uc_emb_text_fields[7] = {"prompt",   "negative_prompt", "tokens", "token_mask",
                                           "text_emb", "text_seq",        "uncond"};

void uc_emb_take_text(rec *out, const rec *src)
{
    for (size_t i = 0; i < UC_COUNT(uc_emb_text_fields); i++) {
        if (rec_has(src, uc_emb_text_fields[i]))
            rec_copy_field(out, src, uc_emb_text_fields[i]);
        else
            rec_del(out, uc_emb_text_fields[i]);
    }
}

float *uc_emb_get(const rec *r, const char *source, const char *key, int64_t *dim)
{
    float *x = rec_get_f32(r, key, 1, NULL, dim);
    if (!x) {
        uc_err_prefix("%s", source);
        return NULL;
    }
    if (*dim < 1) {
        uc_free(x);
        uc_err("%s: record %ld field %s: empty", source, rec_number(r), key);
        return NULL;
    }
    return x;
}
