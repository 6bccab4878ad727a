/* imageio.h - images in and out of the tools, with their provenance.
 *
 * An unclip PNG carries text chunks: "parameters" (one line in the
 * convention other generators use: the prompt, then "Steps: 25, Sampler:
 * ddpm, CFG scale: 8, Seed: 42, Model: ..."), "prompt", "seed", and
 * "unclip-record": the record without its pixel tensors, msgpack in base64,
 * and, when the record has a `filter` field (clip-filter), "filter": each
 * point's reason, one a line ("image: blank: line 3 ...").
 * Reading such a PNG gives the record back with the pixels put in as the
 * `image` field, so a later stage keeps the provenance. */
#ifndef UNCLIP_IMAGEIO_H
#define UNCLIP_IMAGEIO_H

#include <stdio.h>
#include <sys/types.h>

#include "formats/png.h"
#include "formats/record.h"

/* Write r's `image` (U8 [H,W,3]) as a PNG with the provenance chunks. */
int uc_write_png_record(FILE *f, const rec *r);

/* A record for a PNG: the carried record when the PNG has one (else a new
 * record), with `image` set to the pixels as U8 [H,W,3] (gray, palette and
 * alpha composited on white are converted). */
rec *uc_record_from_png(const uc_image *img);

/* Base64 for the text chunk. Caller frees. */
char *uc_base64_encode(const void *data, size_t n);
int uc_base64_decode(const char *s, unsigned char **out, size_t *n);

/* The input of an image stage: a stream of PNGs (concatenated) or of
 * records, told apart by the first bytes. Yields one record per image. */
typedef struct uc_image_reader uc_image_reader;
/* The reader does not close fd. */
uc_image_reader *uc_image_reader_open(int fd, const char *name);
/* Open a file by name ("-" or NULL: stdin); the reader closes the file it
 * opened. NULL (uc_errmsg set) when it cannot be opened. */
uc_image_reader *uc_image_reader_open_path(const char *path);
/* 1: *out holds a record (caller frees); 0: end; -1: error (uc_errmsg).
 * Records of a record stream come as read (the caller checks their fields);
 * a PNG gives uc_record_from_png's record. Each is numbered in stream order
 * (rec_number), so messages name it. */
int uc_image_reader_next(uc_image_reader *r, rec **out);
void uc_image_reader_free(uc_image_reader *r);
/* What the reader found: 1 PNGs, 0 records, -1 not known yet (before the
 * first uc_image_reader_next) or an empty input. */
int uc_image_reader_pngs(const uc_image_reader *r);

/* Image conversions: U8 [H,W,3] <-> F32 [3,H,W] in [-1,1]. Forward:
 * x / 127.5 - 1. Back as Karlo's samplers and example.py turn the final
 * sample into pixels: clamp(x * 0.5 + 0.5, 0, 1) * 255, truncated to an
 * integer (float arithmetic; NaN gives 0). */
void uc_image_u8_to_f32(const unsigned char *px, int h, int w, float *out);
void uc_image_f32_to_u8(const float *x, int h, int w, unsigned char *px);
/* r's image (U8 [H,W,3]) from a sample x [3,H,W], clamped to [-1,1] in
 * place first; image_f32 (x itself) too when want_f32, else a stale
 * image_f32, which would not match image, is removed. */
void uc_rec_set_image(rec *r, float *x, int64_t h, int64_t w, int want_f32);

/* Up to 8 bytes from fd (fewer only at its end): how many, -1 on error. */
ssize_t uc_read_prefix(int fd, unsigned char *b);

#endif
