/* walk.c - see walk.h. */
#include "libcommon/models/walk.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int ends_with(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && !memcmp(s + n - k, suffix, k);
}

static uc_wref walk(uc_walk *w, int ndim, const int64_t *shape, int half, const char *fmt, va_list ap)
{
    char key[256], name[512];
    uc_wref r = {0};
    if (w->rc)
        return r;
    vsnprintf(key, sizeof key, fmt, ap);
    snprintf(name, sizeof name, "%s%s", w->prefix ? w->prefix : "", key);
    if (w->f) {
        const uc_tensor *t = half ? st_get(w->f, name) : NULL;
        if (t && (t->dtype == UC_BF16 || t->dtype == UC_F16) && !((uintptr_t)t->data & 1) &&
            uc_tensor_shape_is(t, ndim, shape)) {
            r.h = t->data;
            r.type = t->dtype == UC_BF16 ? UC_HALF_BF16 : UC_HALF_F16;
            return r;
        }
        if (!(r.f = st_f32(w->f, name, ndim, shape)))
            w->rc = -1;
        return r;
    }
    size_t n = strlen(name);
    const char *dtype = "F32";
    if (ends_with(name, n, ".weight")) {
        snprintf(w->stem, sizeof w->stem, "%.*s", (int)(n - 7), name);
        w->stem_ndim = ndim;
        dtype = ndim >= 2 ? "F16" : "F32";
    } else if (ends_with(name, n, ".bias")) {
        int same = strlen(w->stem) == n - 5 && !memcmp(w->stem, name, n - 5);
        dtype = same && w->stem_ndim >= 2 ? "F16" : "F32";
    }
    w->rc = w->fn(w->ctx, name, ndim, shape, dtype);
    return r;
}

const float *uc_walk_tensor(uc_walk *w, int ndim, const int64_t *shape, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    uc_wref r = walk(w, ndim, shape, 0, fmt, ap);
    va_end(ap);
    return r.f;
}

uc_wref uc_walk_weight(uc_walk *w, int ndim, const int64_t *shape, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    uc_wref r = walk(w, ndim, shape, 1, fmt, ap);
    va_end(ap);
    return r;
}
