/* tensor.c - see tensor.h */
#include "formats/tensor.h"

#include <stdio.h>
#include <string.h>
#ifdef __F16C__
#include <immintrin.h>
#endif

#include "formats/base.h"

static const struct {
    const char *name;
    size_t size;
} dtypes[UC_DTYPE_COUNT] = {
    [UC_F32] = {"F32", 4}, [UC_F16] = {"F16", 2}, [UC_BF16] = {"BF16", 2},
    [UC_F64] = {"F64", 8}, [UC_I64] = {"I64", 8}, [UC_I32] = {"I32", 4},
    [UC_I16] = {"I16", 2}, [UC_I8] = {"I8", 1},   [UC_U8] = {"U8", 1},
    [UC_BOOL] = {"BOOL", 1},
};

int uc_dtype_parse(const char *name, size_t len)
{
    for (int i = 0; i < UC_DTYPE_COUNT; i++)
        if (strlen(dtypes[i].name) == len && memcmp(dtypes[i].name, name, len) == 0)
            return i;
    return -1;
}

const char *uc_dtype_name(uc_dtype t) { return (unsigned)t < UC_DTYPE_COUNT ? dtypes[t].name : "?"; }
size_t uc_dtype_size(uc_dtype t) { return (unsigned)t < UC_DTYPE_COUNT ? dtypes[t].size : 0; }

int64_t uc_tensor_numel(const uc_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) {
        if (t->shape[i] < 0)
            return -1;
        if (t->shape[i] && n > INT64_MAX / t->shape[i])
            return -1;
        n *= t->shape[i];
    }
    return n;
}

const char *uc_shape_str(const uc_tensor *t, char *buf, size_t n)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < t->ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < n)
        snprintf(buf + o, n - o, "]");
    return buf;
}

int uc_tensor_shape_is(const uc_tensor *t, int ndim, const int64_t *dims)
{
    if (t->ndim != ndim)
        return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != dims[i])
            return 0;
    return 1;
}

int uc_tensor_to_f32(const uc_tensor *t, float *dst)
{
    int64_t n = uc_tensor_numel(t);
    const unsigned char *p = t->data;
    if (n < 0)
        return uc_err("bad shape");
    switch (t->dtype) {
    case UC_F32:
        memcpy(dst, p, (size_t)n * 4);
        return 0;
    case UC_F16: {
        int64_t i = 0;
#ifdef __F16C__
        for (; i + 8 <= n; i += 8) /* exact widening in hardware */
            _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 2 * i))));
#endif
        for (; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = uc_f16_to_f32(h);
        }
        return 0;
    }
    case UC_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = uc_bf16_to_f32(h);
        }
        return 0;
    case UC_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return 0;
    default:
        return uc_err("dtype %s is not a float type", uc_dtype_name(t->dtype));
    }
}

int uc_tensor_to_i64(const uc_tensor *t, int64_t *dst)
{
    int64_t n = uc_tensor_numel(t);
    const unsigned char *p = t->data;
    if (n < 0)
        return uc_err("bad shape");
    for (int64_t i = 0; i < n; i++) {
        switch (t->dtype) {
        case UC_I64: memcpy(&dst[i], p + 8 * i, 8); break;
        case UC_I32: { int32_t v; memcpy(&v, p + 4 * i, 4); dst[i] = v; } break;
        case UC_I16: { int16_t v; memcpy(&v, p + 2 * i, 2); dst[i] = v; } break;
        case UC_I8: dst[i] = (int8_t)p[i]; break;
        case UC_U8: case UC_BOOL: dst[i] = p[i]; break;
        default: return uc_err("dtype %s is not an integer type", uc_dtype_name(t->dtype));
        }
    }
    return 0;
}
