/* edit.h - the inputs of an edit, shared by decoder-diffuse and upsample
 * (--image, --mask, --resample, --jump, --extend): the picture to edit,
 * which of its pixels to redraw, their checksums for the provenance, and
 * the exact paste of the kept pixels into the output. Like cli.h, these
 * exit with a one-line message on bad input.
 *
 * Which pixels are redrawn:
 *   --mask FILE   a PNG of the picture's size: white redraws, black keeps.
 *                 The mask is composited on white when it has an alpha
 *                 channel (so a transparent mask pixel redraws too, as in
 *                 DALL-E's edit API) and a pixel whose mean of R, G, B is
 *                 128 or more redraws; below 128 it is kept.
 *   no --mask     the picture's alpha channel: a pixel that is at all
 *                 transparent (alpha below 255) is redrawn, an opaque one
 *                 kept. A picture without alpha needs --mask.
 * A kept pixel is byte-identical in the output. */
#ifndef UNCLIP_EDIT_H
#define UNCLIP_EDIT_H

#include <stdint.h>

#include "formats/record.h"
#include "libcommon/cli/cli.h"

typedef struct {
    int w, h;               /* the picture's size */
    unsigned char *px;      /* [h][w][3] its RGB pixels (alpha dropped) */
    unsigned char *alpha;   /* [h][w] its alpha (255 without) */
    int has_alpha;          /* the PNG has an alpha channel */
    const char *image_path; /* for messages */
    unsigned char *redraw;  /* [h][w] 1: redraw, 0: keep */
    int64_t nredraw;        /* pixels to redraw */
    const char *mask_from;  /* "mask", "alpha" or "none" (outpainting a whole picture) */
    char image_sum[32];     /* "fnv1a64:" + 16 hex digits of px */
    char mask_sum[32];      /* the same of redraw (one byte, 0 or 1, a pixel) */
} uc_edit_in;

/* Read the picture `image` (a PNG, or a record stream whose first record
 * has an image field U8 [H, W, 3]): exits 1 on a file that is neither.
 * Then (uc_edit_load_mask) the mask `mask` (a PNG; NULL: the picture's
 * alpha channel). The mask must have the picture's size, or
 * with mask_scale > 1 also 1/mask_scale of it (then each of its pixels
 * covers mask_scale x mask_scale). Exits 1 on a file that is neither, a
 * mask of another size (naming both sizes), a picture without alpha and
 * no mask, and a mask that keeps everything; with extend (outpainting)
 * the last two are allowed: the picture is kept whole. */
void uc_edit_load_image(const uc_cli *c, const char *image, uc_edit_in *e);
void uc_edit_load_mask(const uc_cli *c, const char *mask, int mask_scale, int extend, uc_edit_in *e);
void uc_edit_in_free(uc_edit_in *e);

/* --extend left=N,right=N,top=N,bottom=N (any of them, each once, N >= 0):
 * ext[0..3] = left, right, top, bottom. Exits 2 on a bad value. */
void uc_parse_extend(const uc_cli *c, const char *arg, int ext[4]);

/* out's image (U8 [h][w][3]): set the kept pixels of e (placed at column
 * x0, row y0 of the image) to e's bytes. Exits 1 when out has no such
 * image. */
void uc_edit_paste(const uc_cli *c, rec *out, const uc_edit_in *e, int x0, int y0);

/* The edit's provenance map: image and mask checksums, where the mask came
 * from, resample, jump, pixels kept and redrawn (caller frees). */
rec *uc_edit_params(const uc_edit_in *e, int resample, int jump);

#endif
