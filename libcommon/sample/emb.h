/* emb.h - moving through CLIP embedding space (DALL-E 2 paper, 3.1-3.3).
 *
 * Interpolation between two image embeddings (variations that blend two
 * images) and text diffs (turning an image's embedding towards the
 * direction between two captions). Vectors are float[n]; arithmetic is
 * done in double. Functions that can meet a degenerate case return -1 with
 * an error message (uc_errmsg) and leave out untouched. */
#ifndef UNCLIP_EMB_H
#define UNCLIP_EMB_H

#include <stdint.h>

#include "formats/record.h"

double uc_emb_norm(const float *x, int64_t n);
/* Angle between a and b in radians, in [0, pi]; -1 when either is zero. */
double uc_emb_angle(const float *a, const float *b, int64_t n);

/* Spherical interpolation: the direction moves along the great circle from
 * a/|a| to b/|b| (angle t * omega), the length goes linearly from |a| to
 * |b|. t = 0 gives exactly a and t = 1 exactly b; other t (also outside
 * [0, 1]) follow the same formula. When a and b point the same way
 * (omega ~ 0) the direction is the normalised linear blend. Errors: a zero
 * vector, or a and b pointing in opposite directions (no unique circle). */
int uc_emb_slerp(const float *a, const float *b, int64_t n, double t, float *out);

/* Linear interpolation (1 - t) a + t b. */
void uc_emb_lerp(const float *a, const float *b, int64_t n, double t, float *out);

/* Text diff (paper section 3.3): d = (target - current) / |target - current|
 * from the text embeddings of the current description and of the target
 * one; the image embedding's direction is slerped towards d by theta
 * (0: unchanged, 1: along d) and keeps the image embedding's norm:
 *   out = |z_i| * slerp(z_i / |z_i|, d, theta).
 * Errors: a zero image embedding, equal text embeddings, or d pointing
 * opposite to the image embedding. */
int uc_emb_textdiff(const float *image_emb, const float *current, const float *target, int64_t n, double theta,
                    float *out);

/* ---- records, for emb-interp and emb-textdiff ---- */

/* The text fields a record carries for conditioning: prompt,
 * negative_prompt, tokens, token_mask, text_emb, text_seq, uncond. */
extern const char *const uc_emb_text_fields[7];
/* Make out's text fields those of src: copied where src has them, removed
 * where it does not (so they never mix two prompts). */
void uc_emb_take_text(rec *out, const rec *src);
/* A 1-D float field (image_emb, text_emb) widened to F32; the error names
 * `source` (a file) as well as the record and field. dim receives the
 * length. Caller frees with uc_free. */
float *uc_emb_get(const rec *r, const char *source, const char *key, int64_t *dim);

#endif
