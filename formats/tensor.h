/* tensor.h - a named, typed, shaped view of bytes; the unit that safetensors
 * files and record streams carry. Data is little-endian, C order. Compute is
 * F32: uc_tensor_to_f32 widens F16/BF16 (and copies F32) into float. */
#ifndef UNCLIP_TENSOR_H
#define UNCLIP_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#define UC_MAXDIM 8

typedef enum {
    UC_F32, UC_F16, UC_BF16, UC_F64, UC_I64, UC_I32, UC_I16, UC_I8, UC_U8, UC_BOOL,
    UC_DTYPE_COUNT
} uc_dtype;

typedef struct {
    uc_dtype dtype;
    int ndim;
    int64_t shape[UC_MAXDIM];
    const void *data;  /* borrowed: owned by the file or record it came from */
    size_t nbytes;
} uc_tensor;

/* safetensors dtype names ("F32", "F16", "BF16", ...); -1 when unknown. */
int uc_dtype_parse(const char *name, size_t len);
const char *uc_dtype_name(uc_dtype t);
size_t uc_dtype_size(uc_dtype t);

/* Product of the shape, or -1 on a negative dimension or overflow. */
int64_t uc_tensor_numel(const uc_tensor *t);
/* "[2, 77, 64]" into buf. */
const char *uc_shape_str(const uc_tensor *t, char *buf, size_t n);

/* Widen a float tensor (F32, F16, BF16, F64) to F32 in dst (numel floats). */
int uc_tensor_to_f32(const uc_tensor *t, float *dst);
/* Integer tensor (I64, I32, I16, I8, U8, BOOL) to int64 in dst. */
int uc_tensor_to_i64(const uc_tensor *t, int64_t *dst);
/* True when the tensor's shape equals dims[0..ndim). */
int uc_tensor_shape_is(const uc_tensor *t, int ndim, const int64_t *dims);

#endif
