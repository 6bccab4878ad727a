/* clipfilter.h - CLIP helpers for tools that score records against texts
 * and pictures (clip-filter): the model's tokenizer, batches of texts to
 * embeddings, a record's picture to an image embedding, the check that a
 * record's embedding came from this CLIP, and cosine similarity.
 *
 * Library style: each returns -1 (or NULL) with uc_err and never exits.
 * Only the public CLIP interface is used (clip_open, clip_encode_text,
 * clip_encode_image, clip_preprocess, embed_dim, context_length,
 * image_resolution, has_text, has_vision, info, and the model file's
 * unclip.tokenizer.merges). */
#ifndef UNCLIP_CLIPFILTER_H
#define UNCLIP_CLIPFILTER_H

#include "formats/record.h"
#include "libcommon/models/clip.h"
#include "libcommon/text/bpe.h"

/* The model's tokenizer (unclip.tokenizer.merges), else the default BPE
 * vocabulary ($UNCLIP_VOCAB, ../shared/vocab ...); NULL and uc_err. */
uc_bpe *uc_clip_tokenizer(const clip_model *m);

/* texts[n] -> emb[n, D], the pooled text embeddings, in batches; texts
 * longer than the context are truncated (*truncated counts them when not
 * NULL). -1 and uc_err naming the text's index on a bad text. */
int uc_clip_texts(const clip_model *m, const uc_bpe *bpe, const char *const *texts, int n, float *emb,
                  int *truncated);

/* A picture U8 [H, W, 3] (H, W >= 1) -> emb[D] with CLIP's preprocessing
 * and image encoder. */
int uc_clip_picture(const clip_model *m, const unsigned char *px, int h, int w, float *emb);

/* The `image` field of r (U8 [H, W, 3]) -> emb[D]; src names the input in
 * messages. */
int uc_clip_record_picture(const clip_model *m, const rec *r, const char *src, float *emb);

/* 0 when r's models.clip.checksum is m's; else -1 and uc_err naming src,
 * the record and `field`, the embedding that needs this CLIP. */
int uc_clip_check_record(const clip_model *m, const rec *r, const char *src, const char *field);

/* Cosine similarity of a[n] and b[n] (0 when either is zero). */
float uc_cosine(const float *a, const float *b, int n);

#endif
