/* clipfilter.c - see clipfilter.h */
#include "libcommon/cli/clipfilter.h"

#include <math.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/image/preprocess.h"

#define TEXT_BATCH 8 /* text rows per forward */

uc_bpe *uc_clip_tokenizer(const clip_model *m) { return clip_tokenizer(m); }

int uc_clip_texts(const clip_model *m, const uc_bpe *bpe, const char *const *texts, int n, float *emb,
                  int *truncated)
{
    const clip_info *ci = clip_get_info(m);
    if (!ci->has_text)
        return uc_err("%s: this CLIP model has no text tower", ci->model.path);
    int ctx = ci->context_length, D = ci->embed_dim;
    int32_t *tok = uc_alloc((size_t)TEXT_BATCH * (size_t)ctx, sizeof *tok);
    int rc = 0;
    if (truncated)
        *truncated = 0;
    for (int i0 = 0; i0 < n && !rc; i0 += TEXT_BATCH) {
        int b = UC_MIN(TEXT_BATCH, n - i0);
        for (int i = 0; i < b && !rc; i++) {
            int k = uc_bpe_encode(bpe, texts[i0 + i], NULL, 0);
            if (k < 0 || uc_tokenize(bpe, texts[i0 + i], ctx, 1, tok + (size_t)i * (size_t)ctx, NULL)) {
                rc = uc_err_prefix("text %d", i0 + i + 1);
                break;
            }
            if (truncated && k + 2 > ctx)
                (*truncated)++;
        }
        if (!rc && clip_encode_text(m, tok, b, NULL, emb + (size_t)i0 * (size_t)D))
            rc = -1;
    }
    uc_free(tok);
    return rc;
}

int uc_clip_picture(const clip_model *m, const unsigned char *px, int h, int w, float *emb)
{
    const clip_info *ci = clip_get_info(m);
    if (!ci->has_vision)
        return uc_err("%s: this CLIP model has no vision tower", ci->model.path);
    int R = ci->image_resolution;
    uc_image img = {.w = w, .h = h, .channels = 3, .px = (unsigned char *)px};
    float *x = uc_alloc((size_t)3 * (size_t)R * (size_t)R, sizeof *x);
    int rc = clip_preprocess(&img, R, NULL, NULL, x);
    if (!rc)
        rc = clip_encode_image(m, x, 1, emb, NULL, NULL);
    uc_free(x);
    return rc;
}

int uc_clip_record_picture(const clip_model *m, const rec *r, const char *src, float *emb)
{
    uc_tensor t;
    char shp[96];
    if (!rec_has(r, "image"))
        return uc_err("%s: record %ld field image: missing", src, rec_number(r));
    if (rec_get_tensor(r, "image", &t))
        return uc_err_prefix("%s", src);
    if (t.dtype != UC_U8 || t.ndim != 3 || t.shape[2] != 3 || t.shape[0] < 1 || t.shape[1] < 1 ||
        t.shape[0] > 16384 || t.shape[1] > 16384)
        return uc_err("%s: record %ld field image: %s %s, expected U8 [H, W, 3] (sides 1 to 16384)", src,
                      rec_number(r), uc_dtype_name(t.dtype), uc_shape_str(&t, shp, sizeof shp));
    if (uc_clip_picture(m, t.data, (int)t.shape[0], (int)t.shape[1], emb))
        return uc_err_prefix("%s: record %ld field image", src, rec_number(r));
    return 0;
}

int uc_clip_check_record(const clip_model *m, const rec *r, const char *src, const char *field)
{
    const char *why = NULL, *sum = NULL;
    rec *models = NULL, *clip = NULL;
    if (!rec_has(r, "models") || !(models = rec_get_map(r, "models")))
        why = "no models field";
    else if (!rec_has(models, "clip") || !(clip = rec_get_map(models, "clip")))
        why = "no models.clip";
    else if (!rec_has(clip, "checksum") || !(sum = rec_get_str(clip, "checksum")))
        why = "no models.clip.checksum";
    int rc = 0;
    if (why)
        rc = uc_err("%s: record %ld field %s: %s, so the CLIP that made it is unknown (this one is %s)", src,
                    rec_number(r), field, why, clip_get_info(m)->model.checksum);
    else if (strcmp(sum, clip_get_info(m)->model.checksum))
        rc = uc_err("%s: record %ld field %s: made by another CLIP (models.clip.checksum %s, this one %s)", src,
                    rec_number(r), field, sum, clip_get_info(m)->model.checksum);
    rec_free(clip);
    rec_free(models);
    return rc;
}

float uc_cosine(const float *a, const float *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    if (aa <= 0 || bb <= 0)
        return 0;
    return (float)(ab / sqrt(aa * bb));
}
