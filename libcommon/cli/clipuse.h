/* clipuse.h - what the tools that use CLIP as an instrument share: the
 * model with its tokenizer, texts to embeddings, pictures (PNG files, or
 * records with pixels or an image_emb) to image embeddings, and the
 * text_emb of records (label banks written by clip-encode).
 *
 * uc_clipuse_open exits with a message (it is the tools' open); the other
 * functions return -1 (or NULL) with uc_err and leave the exiting to the
 * tool. Every size read from a record is checked against the model. */
#ifndef UNCLIP_CLIPUSE_H
#define UNCLIP_CLIPUSE_H

#include <stdint.h>

#include "formats/png.h"
#include "formats/record.h"
#include "libcommon/cli/cli.h"
#include "libcommon/models/clip.h"
#include "libcommon/text/bpe.h"

enum { UC_CLIPUSE_TEXT = 1, UC_CLIPUSE_VISION = 2 };

typedef struct {
    clip_model *m;
    const clip_info *info; /* the model's sizes, towers, logit scale, id and checksum */
    uc_bpe *bpe;      /* NULL unless the model has a text tower and a tokenizer (clip_tokenizer) */
    const char *path; /* the model file */
    int D;            /* embed_dim */
    int ctx;          /* context_length */
    int W;            /* text width: the columns of a token sequence */
    int any_clip;     /* 1 (--any-clip): take embeddings from records whatever CLIP made them;
                         0: a record's models.clip.checksum must be this CLIP's
                         (uc_clip_check_record) */
} uc_clipuse;

/* Open -m (or clip.safetensors by the default search) with its tokenizer.
 * need: UC_CLIPUSE_TEXT (a text tower and a tokenizer) and/or
 * UC_CLIPUSE_VISION; a missing part exits 1 naming the file. */
void uc_clipuse_open(uc_clipuse *u, const uc_cli *c, int need);
void uc_clipuse_close(uc_clipuse *u);

/* Embeddings emb[n, D] of n texts (clip.tokenize with truncation), batched.
 * ntokens[n] (or NULL) receives how many tokens each needs, SOT and EOT
 * included (more than ctx: it was truncated); labels[n] (or NULL: "text
 * N") name them in errors (invalid UTF-8, and the like). */
int uc_clipuse_texts(const uc_clipuse *u, const char *const *texts, const char *const *labels, int n, float *emb,
                     int *ntokens);
/* The same, one text a forward (so a prompt's numbers do not depend on
 * the others beside it), with what the prior and decoder read too: the
 * token sequences seq[n, ctx, W], tokens[n, ctx] and token masks mask[n,
 * ctx] (any output may be NULL). */
int uc_clipuse_texts_seq(const uc_clipuse *u, const char *const *texts, const char *const *labels, int n, float *emb,
                         float *seq, int32_t *tokens, uint8_t *mask, int *ntokens);

/* The image embedding emb[D] of a decoded picture (any PNG colour type). */
int uc_clipuse_picture(const uc_clipuse *u, const uc_image *img, float *emb);
/* ... of an RGB picture px[h, w, 3]. */
int uc_clipuse_rgb(const uc_clipuse *u, const unsigned char *px, int w, int h, float *emb);

/* The image embedding of a record (from uc_image_reader: a PNG's record or
 * a stream's): its pixels (`image`, U8 [H, W, 3]) encoded when it has them
 * and prefer_emb is 0, else its `image_emb` [D]. src names the input in
 * errors, which also name the record and the field. */
int uc_clipuse_record_image(const uc_clipuse *u, const rec *r, const char *src, int prefer_emb, float *emb);
/* The text_emb [D] of a record (a clip-encode record, a label bank entry). */
int uc_clipuse_record_text(const uc_clipuse *u, const rec *r, const char *src, float *emb);

/* ---- banks: labelled embeddings (texts, lexicons, label banks) ---- */

#define UC_CLIPUSE_BANK_MAX (1 << 20) /* entries in one bank */
#define UC_CLIPUSE_LINE_MAX (1 << 16) /* bytes of one line of a text file */

typedef struct {
    int n, cap;
    char **label;   /* [n] the text (a record's prompt) */
    float *emb;     /* [n, D] */
    uint8_t *have;  /* [n] 1: emb is set; 0: label still to be encoded */
    int32_t *id;    /* [n] token id of a vocabulary entry, else -1 */
} uc_clipuse_bank;

/* Append an entry: its label (copied) and its embedding (NULL: to be
 * encoded by uc_clipuse_bank_encode). -1 and uc_err past the bound. */
int uc_clipuse_bank_add(uc_clipuse_bank *b, const uc_clipuse *u, const char *label, const float *emb, int32_t id);
/* Append the entries of a file (- is standard input): text, one entry a
 * line (empty lines skipped, CR LF accepted), or records (told apart by the
 * first byte: a msgpack map), each with text_emb [D] and labelled by its
 * prompt (else "FILE#N"). */
int uc_clipuse_bank_read(uc_clipuse_bank *b, const uc_clipuse *u, const char *path);
/* Encode the entries that have no embedding yet (with the tokenizer). */
int uc_clipuse_bank_encode(uc_clipuse_bank *b, const uc_clipuse *u);
void uc_clipuse_bank_free(uc_clipuse_bank *b);

/* Cosine similarity of a[n] and b[n]; 0 when either is zero. */
double uc_clipuse_cosine(const float *a, const float *b, int64_t n);

#endif
