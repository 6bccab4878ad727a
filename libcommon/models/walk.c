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

const float *uc_walk_tensor(uc_walk *w, int ndim, const int64_t *shape, const char *fmt, ...)
{
    char key[256], name[512];
    va_list ap;
    if (w->rc)
        return NULL;
    va_start(ap, fmt);
    vsnprintf(key, sizeof key, fmt, ap);
    va_end(ap);
    snprintf(name, sizeof name, "%s%s", w->prefix ? w->prefix : "", key);
    if (w->f) {
        const float *p = st_f32(w->f, name, ndim, shape);
        if (!p)
            w->rc = -1;
        return p;
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
    return NULL;
}
