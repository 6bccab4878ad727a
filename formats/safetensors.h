/* safetensors.h - read (mmap) and write safetensors files.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON mapping tensor
 * names to {dtype, shape, data_offsets:[begin,end]} plus an optional
 * "__metadata__" object of string values, then the data. The reader bounds
 * the header (100 MB, as the reference implementation), checks every dtype,
 * shape, offset and overlap against the file size before any use. */
#ifndef UNCLIP_SAFETENSORS_H
#define UNCLIP_SAFETENSORS_H

#include "formats/tensor.h"

#define ST_HEADER_MAX (100u * 1000u * 1000u)

typedef struct st_file st_file;

typedef struct {
    const char *name;
    uc_tensor t;
} st_entry;

st_file *st_open(const char *path); /* NULL and uc_err on failure */
void st_close(st_file *f);
const char *st_path(const st_file *f);
int st_count(const st_file *f);
const st_entry *st_at(const st_file *f, int i);
const uc_tensor *st_get(const st_file *f, const char *name); /* NULL if absent */
/* __metadata__ value, or NULL. */
const char *st_meta(const st_file *f, const char *key);
int st_meta_count(const st_file *f);
void st_meta_at(const st_file *f, int i, const char **key, const char **val);
/* The header as stored: its 8 length bytes and the JSON (*n = 8 + length). */
const unsigned char *st_header(const st_file *f, size_t *n);

/* A float tensor as F32 with exactly the given shape: the mapped bytes when
 * stored F32 and aligned, else a widened copy owned by f (freed by
 * st_close). NULL and uc_err ("tensor NAME: ...") when missing or
 * mismatched. ndim < 0 accepts any shape. */
const float *st_f32(st_file *f, const char *name, int ndim, const int64_t *shape);
/* Same, with the name built printf-style and the shape as varargs (int64_t
 * count then dims): st_f32v(f, 2, (int64_t[]){a, b}, "x.%d.w", i). */
const float *st_f32f(st_file *f, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Give back the resident pages of the stored bytes of every tensor whose
 * name starts with prefix (the pages wholly inside them): the mapping stays
 * valid and a later read faults them in from the file again. A model of two
 * networks (SR) holds one in memory at a time this way. Widened copies
 * (st_f32 of F16 data) are not affected. */
void st_release(st_file *f, const char *prefix);

/* Writing. Entries are written in the given order, data 8-byte aligned;
 * metadata is pairs of strings. The file is written to a temporary name and
 * renamed, so a failure leaves nothing behind. */
typedef struct {
    const char *name;
    uc_dtype dtype;
    int ndim;
    int64_t shape[UC_MAXDIM];
    const void *data;
} st_out;

int st_write(const char *path, const st_out *t, int n, const char *const *meta_kv, int nmeta);

#endif
