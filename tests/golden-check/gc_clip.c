/* gc_clip.c - golden handlers of the CLIP family: text and image encoders,
 * logits, preprocessing, Karlo's text wrapper and the Hugging Face layout.
 * Each builds the model from the case's weights and config, computes every
 * output the case lists and compares it. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libcommon/text/bpe.h"
#include "libcommon/image/preprocess.h"
#include "libcommon/models/clip.h"
#include "formats/base.h"
#include "gc.h"

/* ---- outputs and tolerances ---- */

typedef struct {
    const char *name;
    const float *got;
    int64_t n;
} gc_out;

/* Per-output tolerance: tolerance.overrides.<name>, or a clause of
 * tolerance.note of the form "a/b: atol X, rtol Y"; else the case's. */
static void tol_for(const gc_case *c, const char *name, double *atol, double *rtol, double *mean_max)
{
    const cJSON *tol = gc_get(c->json, "tolerance");
    *atol = c->atol;
    *rtol = c->rtol;
    *mean_max = gc_num(tol, "mean_abs_max", -1);
    const char *note = gc_str(tol, "note", NULL);
    size_t nl = strlen(name);
    for (const char *seg = note; seg && *seg;) {
        const char *end = strchr(seg, ';'), *colon = strchr(seg, ':');
        if (!end)
            end = seg + strlen(seg);
        if (colon && colon < end) {
            for (const char *p = seg; p + nl <= colon; p++) {
                if (strncmp(p, name, nl) != 0 || (p > seg && !strchr(" /,", p[-1])) ||
                    !strchr(" /,:", p[nl]))
                    continue;
                const char *a = strstr(colon, "atol"), *r = strstr(colon, "rtol");
                if (a && a < end)
                    *atol = strtod(a + 4, NULL);
                if (r && r < end)
                    *rtol = strtod(r + 4, NULL);
                break;
            }
        }
        seg = *end ? end + 1 : end;
    }
    const cJSON *ov = gc_get(gc_get(tol, "overrides"), name);
    if (ov) {
        *atol = gc_num(ov, "atol", *atol);
        *rtol = gc_num(ov, "rtol", *rtol);
        *mean_max = gc_num(ov, "mean_abs_max", *mean_max);
    }
}

static int check_one(gc_case *c, const gc_out *o)
{
    double atol, rtol, mean_max;
    tol_for(c, o->name, &atol, &rtol, &mean_max);
    if (gc_check_tol(c, o->name, o->got, o->n, atol, rtol))
        return -1;
    if (mean_max >= 0) {
        float *want = gc_f32(c, o->name, NULL);
        if (!want)
            return -1;
        double s = 0;
        for (int64_t i = 0; i < o->n; i++)
            s += fabs((double)o->got[i] - want[i]);
        uc_free(want);
        if (o->n && s / (double)o->n > mean_max)
            return gc_fail(c, "%s: mean |diff| %.3g > %.3g", o->name, s / (double)o->n, mean_max);
    }
    return 0;
}

/* Compare every output case.json lists (names or {name: ...}) with what was
 * computed; an output listed but not computed is a failure. */
static int check_outputs(gc_case *c, const gc_out *outs, int n)
{
    const cJSON *list = gc_get(c->json, "outputs");
    int rc = 0, seen = 0;
    for (const cJSON *it = list ? list->child : NULL; it; it = it->next) {
        const char *name = cJSON_IsString(it) ? it->valuestring : gc_str(it, "name", NULL);
        if (!name)
            continue;
        int found = 0;
        for (int i = 0; i < n && !found; i++)
            if (strcmp(outs[i].name, name) == 0) {
                found = 1;
                if (check_one(c, &outs[i]))
                    rc = -1;
            }
        if (!found)
            rc = gc_fail(c, "output %s: not computed by this handler", name);
        seen++;
    }
    if (!seen)
        return gc_fail(c, "case lists no outputs");
    return rc;
}

/* ---- inputs ---- */

#define I(m) clip_get_info(m)

static clip_model *load_model(gc_case *c, const char *config_json)
{
    if (!c->model) {
        gc_fail(c, "model.safetensors missing");
        return NULL;
    }
    char *own = NULL;
    if (!config_json)
        config_json = own = cJSON_PrintUnformatted(c->config);
    clip_model *m = clip_load(c->model, config_json);
    free(own);
    if (!m)
        gc_fail(c, "%s", uc_errmsg());
    return m;
}

/* I64 token ids [B, ctx] as int32; NULL and a failure on a bad shape. */
static int32_t *load_tokens(gc_case *c, const clip_model *m, const char *name, int *B)
{
    uc_tensor t;
    int64_t *ids = gc_i64(c, name, &t);
    if (!ids)
        return NULL;
    if (t.ndim != 2 || t.shape[1] != I(m)->context_length || t.shape[0] < 1) {
        uc_free(ids);
        gc_fail(c, "%s: expected [N, %d]", name, I(m)->context_length);
        return NULL;
    }
    int64_t n = t.shape[0] * t.shape[1];
    int32_t *tok = uc_alloc((size_t)n, sizeof *tok);
    for (int64_t i = 0; i < n; i++)
        tok[i] = ids[i] < 0 || ids[i] > INT32_MAX ? -1 : (int32_t)ids[i];
    uc_free(ids);
    *B = (int)t.shape[0];
    return tok;
}

/* F32 images [B, 3, R, R] at the model's resolution. */
static float *load_images(gc_case *c, const clip_model *m, const char *name, int *B)
{
    uc_tensor t;
    float *px = gc_f32(c, name, &t);
    if (!px)
        return NULL;
    int64_t R = I(m)->image_resolution;
    if (t.ndim != 4 || t.shape[0] < 1 || t.shape[1] != 3 || t.shape[2] != R || t.shape[3] != R) {
        uc_free(px);
        gc_fail(c, "%s: expected [N, 3, %lld, %lld]", name, (long long)R, (long long)R);
        return NULL;
    }
    *B = (int)t.shape[0];
    return px;
}

/* ---- handlers ---- */

int gc_clip_text(gc_case *c)
{
    clip_model *m = load_model(c, NULL);
    if (!m)
        return -1;
    int B, rc = -1;
    int32_t *tok = load_tokens(c, m, "tokens", &B);
    float *seq = NULL, *emb = NULL;
    if (tok) {
        int64_t ns = (int64_t)B * I(m)->context_length * I(m)->transformer_width, ne = (int64_t)B * I(m)->embed_dim;
        seq = uc_alloc((size_t)ns, sizeof *seq);
        emb = uc_alloc((size_t)ne, sizeof *emb);
        if (clip_encode_text(m, tok, B, seq, emb))
            gc_fail(c, "%s", uc_errmsg());
        else
            rc = check_outputs(c, (gc_out[]){{"text_emb", emb, ne}, {"text_seq", seq, ns}}, 2);
    }
    uc_free(tok);
    uc_free(seq);
    uc_free(emb);
    clip_free(m);
    return rc;
}

int gc_clip_image(gc_case *c)
{
    clip_model *m = load_model(c, NULL);
    if (!m)
        return -1;
    int B, rc = -1;
    float *px = load_images(c, m, "image", &B), *emb = NULL, *seq = NULL, *seq_ln = NULL;
    if (px) {
        int64_t T = (int64_t)I(m)->grid * I(m)->grid + 1, ns = B * T * I(m)->vision_width;
        int64_t ne = (int64_t)B * I(m)->embed_dim;
        emb = uc_alloc((size_t)ne, sizeof *emb);
        seq = uc_alloc((size_t)ns, sizeof *seq);
        seq_ln = uc_alloc((size_t)ns, sizeof *seq_ln);
        if (clip_encode_image(m, px, B, emb, seq, seq_ln))
            gc_fail(c, "%s", uc_errmsg());
        else
            rc = check_outputs(c,
                               (gc_out[]){{"image_emb", emb, ne},
                                          {"image_seq", seq, ns},
                                          {"image_seq_ln_post", seq_ln, ns}},
                               3);
    }
    uc_free(px);
    uc_free(emb);
    uc_free(seq);
    uc_free(seq_ln);
    clip_free(m);
    return rc;
}

/* Text and image embeddings and sequences plus both logits: shared by the
 * logits case and the Hugging Face layout case. */
static int full_forward(gc_case *c, clip_model *m, const char *tok_name, const char *img_name)
{
    int Bt, Bi, rc = -1;
    int32_t *tok = load_tokens(c, m, tok_name, &Bt);
    float *px = tok ? load_images(c, m, img_name, &Bi) : NULL;
    if (!px) {
        uc_free(tok);
        return -1;
    }
    int64_t D = I(m)->embed_dim, Ti = (int64_t)I(m)->grid * I(m)->grid + 1;
    int64_t nts = (int64_t)Bt * I(m)->context_length * I(m)->transformer_width, nis = Bi * Ti * I(m)->vision_width;
    float *temb = uc_alloc((size_t)(Bt * D), sizeof(float)), *iemb = uc_alloc((size_t)(Bi * D), sizeof(float));
    float *tseq = uc_alloc((size_t)nts, sizeof(float)), *iseq = uc_alloc((size_t)nis, sizeof(float));
    float *lpi = uc_alloc((size_t)Bi * (size_t)Bt, sizeof(float)), *lpt = uc_alloc((size_t)Bi * (size_t)Bt, sizeof(float));
    if (clip_encode_text(m, tok, Bt, tseq, temb) || clip_encode_image(m, px, Bi, iemb, iseq, NULL) ||
        clip_logits(m, iemb, Bi, temb, Bt, lpi)) {
        gc_fail(c, "%s", uc_errmsg());
    } else {
        for (int i = 0; i < Bi; i++)
            for (int j = 0; j < Bt; j++)
                lpt[(size_t)j * (size_t)Bi + (size_t)i] = lpi[(size_t)i * (size_t)Bt + (size_t)j];
        gc_out outs[] = {
            {"text_emb", temb, Bt * D},         {"text_seq", tseq, nts},
            {"image_emb", iemb, Bi * D},        {"image_seq", iseq, nis},
            {"logits_per_image", lpi, (int64_t)Bi * Bt}, {"logits_per_text", lpt, (int64_t)Bi * Bt},
        };
        rc = check_outputs(c, outs, (int)UC_COUNT(outs));
    }
    uc_free(tok);
    uc_free(px);
    uc_free(temb);
    uc_free(iemb);
    uc_free(tseq);
    uc_free(iseq);
    uc_free(lpi);
    uc_free(lpt);
    return rc;
}

int gc_clip_logits(gc_case *c)
{
    clip_model *m = load_model(c, NULL);
    if (!m)
        return -1;
    int rc = full_forward(c, m, "tokens", "image");
    clip_free(m);
    return rc;
}

int gc_layout_hf_clip(gc_case *c)
{
    char path[4096], *cfg;
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", c->dir);
    if (uc_read_file(path, 16u << 20, &cfg, &len))
        return gc_fail(c, "%s", uc_errmsg());
    clip_model *m = load_model(c, cfg);
    free(cfg);
    if (!m)
        return -1;
    int rc = I(m)->layout == CLIP_LAYOUT_HF ? full_forward(c, m, "input_ids", "pixel_values")
                                         : gc_fail(c, "model.safetensors is not in the Hugging Face layout");
    clip_free(m);
    return rc;
}

int gc_karlo_clip_text(gc_case *c)
{
    const cJSON *prompts = gc_get(c->config, "prompts");
    int B = cJSON_GetArraySize(prompts);
    if (!cJSON_IsArray(prompts) || B < 1)
        return gc_fail(c, "config.prompts: expected a list of strings");
    uc_bpe *bpe = uc_bpe_load_gz(c->vocab);
    if (!bpe)
        return gc_fail(c, "vocabulary: %s", uc_errmsg());
    clip_model *m = load_model(c, NULL);
    if (!m) {
        uc_bpe_free(bpe);
        return -1;
    }
    int ctx = (int)gc_num(c->config, "text_ctx", I(m)->context_length), rc = -1;
    int64_t W = I(m)->transformer_width, D = I(m)->embed_dim, n = (int64_t)B * ctx;
    int32_t *tok = uc_alloc((size_t)n, sizeof *tok);
    uint8_t *mask = uc_alloc((size_t)n, 1);
    int64_t *tok64 = uc_alloc((size_t)n, sizeof *tok64), *mask64 = uc_alloc((size_t)n, sizeof *mask64);
    float *seq = uc_alloc((size_t)(n * W), sizeof *seq), *emb = uc_alloc((size_t)(B * D), sizeof *emb);
    int i = 0;
    if (ctx != I(m)->context_length) {
        gc_fail(c, "text_ctx %d differs from the model's context_length %d", ctx, I(m)->context_length);
        goto out;
    }
    for (const cJSON *p = prompts->child; p; p = p->next, i++) {
        if (!cJSON_IsString(p) || uc_tokenize(bpe, p->valuestring, ctx, 1, tok + i * ctx, mask + i * ctx)) {
            gc_fail(c, "prompt %d: %s", i, cJSON_IsString(p) ? uc_errmsg() : "not a string");
            goto out;
        }
    }
    for (int64_t k = 0; k < n; k++) {
        tok64[k] = tok[k];
        mask64[k] = mask[k];
    }
    if (gc_check_i64(c, "tokens", tok64, n) | gc_check_i64(c, "mask", mask64, n))
        goto out;
    if (clip_encode_text(m, tok, B, seq, emb)) {
        gc_fail(c, "%s", uc_errmsg());
        goto out;
    }
    rc = check_one(c, &(gc_out){"txt_feat", emb, B * D}) | check_one(c, &(gc_out){"txt_feat_seq", seq, n * W});
out:
    uc_free(tok);
    uc_free(mask);
    uc_free(tok64);
    uc_free(mask64);
    uc_free(seq);
    uc_free(emb);
    clip_free(m);
    uc_bpe_free(bpe);
    return rc;
}

int gc_clip_preprocess(gc_case *c)
{
    int n_px = (int)gc_num(c->config, "n_px", 224);
    float mean[3], std[3];
    for (int i = 0; i < 3; i++) {
        const cJSON *mv = cJSON_GetArrayItem(gc_get(c->config, "mean"), i);
        const cJSON *sv = cJSON_GetArrayItem(gc_get(c->config, "std"), i);
        if (!cJSON_IsNumber(mv) || !cJSON_IsNumber(sv))
            return gc_fail(c, "config mean/std: expected three numbers each");
        mean[i] = (float)mv->valuedouble;
        std[i] = (float)sv->valuedouble;
    }
    if (n_px < 1 || n_px > 4096)
        return gc_fail(c, "config n_px: bad value");
    const cJSON *list = gc_get(c->json, "outputs");
    size_t n = (size_t)3 * (size_t)n_px * (size_t)n_px;
    float *x = uc_alloc(n, sizeof *x);
    int rc = 0, count = 0;
    for (const cJSON *it = list ? list->child : NULL; it && rc == 0; it = it->next, count++) {
        const char *name = gc_str(it, "name", NULL), *from = gc_str(it, "from", NULL);
        if (!name || !from) {
            rc = gc_fail(c, "outputs: entry without name/from");
            break;
        }
        char path[4096];
        uc_image img;
        snprintf(path, sizeof path, "%s/%s", c->dir, from);
        if (uc_png_read_file(path, 1, &img)) {
            rc = gc_fail(c, "%s", uc_errmsg());
            break;
        }
        if (clip_preprocess(&img, n_px, mean, std, x))
            rc = gc_fail(c, "%s: %s", from, uc_errmsg());
        else
            rc = check_one(c, &(gc_out){name, x, (int64_t)n});
        uc_image_free(&img);
    }
    uc_free(x);
    if (rc == 0 && count == 0)
        rc = gc_fail(c, "case lists no outputs");
    return rc;
}
