/* gc.c - helpers shared by the golden handlers: loading io tensors,
 * comparing with tolerance, reading config values. */
#include "gc.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "formats/base.h"

int gc_fail(gc_case *c, const char *fmt, ...)
{
    if (c->fail[0])
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->fail, sizeof c->fail, fmt, ap);
    va_end(ap);
    return -1;
}

static const uc_tensor *io_get(gc_case *c, const char *name)
{
    const uc_tensor *t = c->io ? st_get(c->io, name) : NULL;
    if (!t)
        gc_fail(c, "io tensor %s missing", name);
    return t;
}

float *gc_f32(gc_case *c, const char *name, uc_tensor *shape)
{
    const uc_tensor *t = io_get(c, name);
    if (!t)
        return NULL;
    float *x = uc_alloc((size_t)uc_tensor_numel(t) + 1, sizeof(float));
    if (uc_tensor_to_f32(t, x)) {
        uc_free(x);
        gc_fail(c, "io tensor %s: %s", name, uc_errmsg());
        return NULL;
    }
    if (shape)
        *shape = *t;
    return x;
}

int64_t *gc_i64(gc_case *c, const char *name, uc_tensor *shape)
{
    const uc_tensor *t = io_get(c, name);
    if (!t)
        return NULL;
    int64_t *x = uc_alloc((size_t)uc_tensor_numel(t) + 1, sizeof(int64_t));
    if (uc_tensor_to_i64(t, x)) {
        uc_free(x);
        gc_fail(c, "io tensor %s: %s", name, uc_errmsg());
        return NULL;
    }
    if (shape)
        *shape = *t;
    return x;
}

int gc_check_tol(gc_case *c, const char *name, const float *got, int64_t n, double atol, double rtol)
{
    uc_tensor t;
    float *want = gc_f32(c, name, &t);
    if (!want)
        return -1;
    int rc = 0;
    if (uc_tensor_numel(&t) != n) {
        uc_free(want);
        return gc_fail(c, "%s: computed %lld values, expected %lld", name, (long long)n,
                       (long long)uc_tensor_numel(&t));
    }
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (!(d <= atol + rtol * fabs((double)want[i]))) {
            if (rc == 0)
                gc_fail(c, "%s[%lld]: got %.8g want %.8g (|diff| %.3g > %.3g)", name, (long long)i, got[i],
                        want[i], d, atol + rtol * fabs((double)want[i]));
            rc = -1;
        }
        if (d > c->max_err || d != d)
            c->max_err = d != d ? INFINITY : d;
    }
    uc_free(want);
    return rc;
}

int gc_check(gc_case *c, const char *name, const float *got, int64_t n)
{
    return gc_check_tol(c, name, got, n, c->atol, c->rtol);
}

int gc_check_i64(gc_case *c, const char *name, const int64_t *got, int64_t n)
{
    uc_tensor t;
    int64_t *want = gc_i64(c, name, &t);
    if (!want)
        return -1;
    int rc = 0;
    if (uc_tensor_numel(&t) != n)
        rc = gc_fail(c, "%s: computed %lld values, expected %lld", name, (long long)n,
                     (long long)uc_tensor_numel(&t));
    for (int64_t i = 0; rc == 0 && i < n; i++)
        if (got[i] != want[i])
            rc = gc_fail(c, "%s[%lld]: got %lld want %lld", name, (long long)i, (long long)got[i],
                         (long long)want[i]);
    uc_free(want);
    return rc;
}

const cJSON *gc_get(const cJSON *j, const char *path)
{
    char part[128];
    while (j && *path) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n >= sizeof part)
            return NULL;
        memcpy(part, path, n);
        part[n] = 0;
        j = cJSON_GetObjectItemCaseSensitive(j, part);
        path += n + (dot ? 1 : 0);
    }
    return j;
}

double gc_num(const cJSON *j, const char *path, double dflt)
{
    const cJSON *v = gc_get(j, path);
    if (cJSON_IsNumber(v))
        return v->valuedouble;
    if (cJSON_IsBool(v))
        return cJSON_IsTrue(v);
    return dflt;
}

const char *gc_str(const cJSON *j, const char *path, const char *dflt)
{
    const cJSON *v = gc_get(j, path);
    return cJSON_IsString(v) ? v->valuestring : dflt;
}
