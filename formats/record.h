/* record.h - the unclip record stream (see man/man5/unclip-record.5).
 *
 * A stream is a concatenation of msgpack maps with string keys, one map per
 * record. The first field is "version" (uint, UC_REC_VERSION). Tensors are
 * maps {dtype: str, shape: [uint...], data: bin} with safetensors dtype names,
 * little-endian, C order. A tool replaces or appends only the fields it
 * produces; every other field passes through untouched and in order.
 *
 * Every read is bounded: a record may hold at most UC_REC_MAX bytes and 2^20
 * values, tensor sizes are checked against their data before use, and every
 * error names the record (1-based, in stream order) and the field. */
#ifndef UNCLIP_RECORD_H
#define UNCLIP_RECORD_H

#include <stdint.h>
#include <stdio.h>

#include "formats/tensor.h"

#define UC_REC_VERSION 1
#define UC_REC_MAX ((size_t)64 << 20)

typedef struct rec rec;
typedef struct rec_reader rec_reader;

/* Reading. `name` is used in messages ("stdin", a file name). */
rec_reader *rec_reader_new(int fd, const char *name);
/* Parse a stream from memory (copied); used by PNG text chunks and tests. */
rec_reader *rec_reader_mem(const void *data, size_t n, const char *name);
void rec_reader_free(rec_reader *r);
/* 1: a record in *out (caller frees); 0: clean end of stream; -1: error. */
int rec_read(rec_reader *r, rec **out);

rec *rec_new(void); /* with the version field */
void rec_free(rec *r);
rec *rec_clone(const rec *r);
/* Position of this record in its stream (1-based; 0 for new ones). */
long rec_number(const rec *r);
void rec_set_number(rec *r, long n);
int rec_count(const rec *r);
const char *rec_key_at(const rec *r, int i);

/* Getters. Each returns -1 and an error naming the record and field on a
 * missing (unless noted) or malformed field. */
int rec_has(const rec *r, const char *key);
int rec_get_tensor(const rec *r, const char *key, uc_tensor *t);
/* A float tensor widened to F32 (caller frees with uc_free). `want` gives
 * the expected dims (-1: any); ndim must match. Rejects NaN, Inf and
 * values past +-REC_MAX_ABS: no CLIP output, embedding or sample comes near
 * it, and a huge finite input gave a plausible-looking wrong picture. */
#define REC_MAX_ABS 1e4
float *rec_get_f32(const rec *r, const char *key, int ndim, const int64_t *want, int64_t *shape);
/* String as a NUL-terminated copy owned by the record; error if it holds a
 * NUL byte or is not valid UTF-8. */
const char *rec_get_str(const rec *r, const char *key);
int rec_get_u64(const rec *r, const char *key, uint64_t *v);
int rec_get_f64(const rec *r, const char *key, double *v);
/* A nested map as a record of its own (caller frees). */
rec *rec_get_map(const rec *r, const char *key);

/* Setters copy their data; an existing field keeps its position. */
void rec_set_tensor(rec *r, const char *key, uc_dtype dt, int ndim, const int64_t *shape, const void *data);
void rec_set_str(rec *r, const char *key, const char *s);
void rec_set_u64(rec *r, const char *key, uint64_t v);
void rec_set_f64(rec *r, const char *key, double v);
void rec_set_map(rec *r, const char *key, const rec *sub);
/* Copy field `key` of src into r (no-op when src lacks it). */
void rec_copy_field(rec *r, const rec *src, const char *key);
void rec_del(rec *r, const char *key);
/* params.<stage> = sub, keeping the other stages' maps. */
void rec_set_stage(rec *r, const char *field, const char *stage, const rec *sub);
/* Append {tool, version, arguments} to the history array. arguments holds
 * argv[1..] up to REC_HISTORY_ARGS bytes in all; the rest is replaced by one
 * string "(N more arguments, M bytes, not kept: ...)". */
#define REC_HISTORY_ARGS 4096
void rec_history_add(rec *r, const char *tool, int argc, char **argv);

/* Write one record as msgpack; -1 on a write error. */
int rec_write(const rec *r, FILE *out);
/* Encode into a malloc'd buffer (caller frees). */
int rec_encode(const rec *r, char **buf, size_t *n);
/* JSON rendering for rec-dump: tensors summarised unless full. */
int rec_dump_json(const rec *r, FILE *out, int full);

/* A reader over fd whose stream starts with the n bytes of prefix, already
 * read from fd by the caller (e.g. to sniff the input type). */
rec_reader *rec_reader_new_prefixed(int fd, const char *name, const void *prefix, size_t n);

#endif
