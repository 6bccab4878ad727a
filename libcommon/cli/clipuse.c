/* clipuse.c - CLIP as the tools use it: model and tokenizer, texts and
 * pictures to embeddings, embeddings from records. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "formats/base.h"
#include "libcommon/cli/clipfilter.h"
#include "libcommon/cli/clipuse.h"
#include "libcommon/cli/stage.h"
#include "libcommon/image/imageio.h"
#include "libcommon/image/preprocess.h"

#define TEXT_BATCH 64 /* texts per forward */

void uc_clipuse_open(uc_clipuse *u, const uc_cli *c, int need)
{
    memset(u, 0, sizeof *u);
    u->any_clip = c->any_clip;
    u->path = uc_model_path(c, "clip");
    if (!(u->m = clip_open(u->path)))
        uc_die_err(c);
    u->info = clip_get_info(u->m);
    if ((need & UC_CLIPUSE_TEXT) && !u->info->has_text)
        uc_die(c, UC_EXIT_DATA, "%s: this CLIP model has no text tower", u->path);
    if ((need & UC_CLIPUSE_VISION) && !u->info->has_vision)
        uc_die(c, UC_EXIT_DATA, "%s: this CLIP model has no vision tower", u->path);
    if (u->info->has_text && !(u->bpe = clip_tokenizer(u->m)) && (need & UC_CLIPUSE_TEXT))
        uc_die_err(c);
    u->D = u->info->embed_dim;
    u->ctx = u->info->context_length;
    u->W = u->info->transformer_width;
}

void uc_clipuse_close(uc_clipuse *u)
{
    uc_bpe_free(u->bpe);
    clip_free(u->m);
    memset(u, 0, sizeof *u);
}

/* Tokenize texts[n] into tokens[n, ctx] (and mask), truncating. */
static int tokenize(const uc_clipuse *u, const char *const *texts, const char *const *labels, int n,
                    int32_t *tokens, uint8_t *mask, int *ntokens)
{
    if (!u->bpe)
        return uc_err("%s: no tokenizer for this CLIP model", u->path);
    for (int i = 0; i < n; i++) {
        int k = uc_bpe_encode(u->bpe, texts[i], NULL, 0); /* UTF-8, size, &#N; */
        if (k < 0 || uc_tokenize(u->bpe, texts[i], u->ctx, 1, tokens + (size_t)i * (size_t)u->ctx,
                                 mask ? mask + (size_t)i * (size_t)u->ctx : NULL)) {
            if (labels)
                uc_err_prefix("%s", labels[i]);
            else
                uc_err_prefix("text %d", i + 1);
            return -1;
        }
        if (ntokens)
            ntokens[i] = k + 2;
    }
    return 0;
}

int uc_clipuse_texts(const uc_clipuse *u, const char *const *texts, const char *const *labels, int n, float *emb,
                     int *ntokens)
{
    int32_t *tokens = uc_alloc((size_t)TEXT_BATCH * (size_t)u->ctx, sizeof *tokens);
    int rc = 0;
    for (int i0 = 0; i0 < n && !rc; i0 += TEXT_BATCH) {
        int nb = n - i0 < TEXT_BATCH ? n - i0 : TEXT_BATCH;
        rc = tokenize(u, texts + i0, labels ? labels + i0 : NULL, nb, tokens, NULL, ntokens ? ntokens + i0 : NULL);
        if (!rc)
            rc = clip_encode_text(u->m, tokens, nb, NULL, emb + (size_t)i0 * (size_t)u->D);
    }
    uc_free(tokens);
    return rc;
}

int uc_clipuse_texts_seq(const uc_clipuse *u, const char *const *texts, const char *const *labels, int n, float *emb,
                         float *seq, int32_t *tokens, uint8_t *mask, int *ntokens)
{
    int32_t *tok = tokens ? tokens : uc_alloc((size_t)n * (size_t)u->ctx, sizeof *tok);
    int rc = tokenize(u, texts, labels, n, tok, mask, ntokens);
    /* one text a forward: the products' kernels depend on how many rows
     * they multiply, so a batch would give a prompt other last bits than it
     * gets alone, and the picture drawn from it would depend on its batch */
    size_t ctx = (size_t)u->ctx, W = (size_t)u->W, D = (size_t)u->D;
    for (int i = 0; i < n && !rc; i++)
        rc = clip_encode_text(u->m, tok + (size_t)i * ctx, 1, seq ? seq + (size_t)i * ctx * W : NULL,
                              emb ? emb + (size_t)i * D : NULL);
    if (!tokens)
        uc_free(tok);
    return rc;
}

int uc_clipuse_picture(const uc_clipuse *u, const uc_image *img, float *emb)
{
    const clip_model *m = u->m;
    if (!u->info->has_vision)
        return uc_err("%s: this CLIP model has no vision tower", u->path);
    int R = u->info->image_resolution;
    float *px = uc_alloc((size_t)3 * (size_t)R * (size_t)R, sizeof *px);
    int rc = clip_preprocess(img, R, NULL, NULL, px);
    if (!rc)
        rc = clip_encode_image(m, px, 1, emb, NULL, NULL);
    uc_free(px);
    return rc;
}

int uc_clipuse_rgb(const uc_clipuse *u, const unsigned char *px, int w, int h, float *emb)
{
    uc_image img = {.w = w, .h = h, .channels = 3, .px = (unsigned char *)px};
    return uc_clipuse_picture(u, &img, emb);
}

int uc_clipuse_record_image(const uc_clipuse *u, const rec *r, const char *src, int prefer_emb, float *emb)
{
    int64_t D = u->D;
    if (rec_has(r, "image") && !(prefer_emb && rec_has(r, "image_emb"))) {
        uc_tensor t;
        char shp[96];
        if (rec_get_tensor(r, "image", &t))
            return uc_err_prefix("%s", src);
        if (t.dtype != UC_U8 || t.ndim != 3 || t.shape[2] != 3 || t.shape[0] < 1 || t.shape[1] < 1 ||
            t.shape[0] > UC_PNG_MAX_SIDE || t.shape[1] > UC_PNG_MAX_SIDE)
            return uc_err("%s: record %ld field image: %s %s, expected U8 [H, W, 3] with sides of 1..%d", src,
                          rec_number(r), uc_dtype_name(t.dtype), uc_shape_str(&t, shp, sizeof shp), UC_PNG_MAX_SIDE);
        if (uc_clipuse_rgb(u, t.data, (int)t.shape[1], (int)t.shape[0], emb))
            return uc_err_prefix("%s: record %ld field image", src, rec_number(r));
        return 0;
    }
    if (!rec_has(r, "image_emb"))
        return uc_err("%s: record %ld: no field image (pixels) or image_emb to rank", src, rec_number(r));
    float *x = uc_field_f32(r, src, "", "image_emb", 1, &D, "CLIP");
    if (!x)
        return -1;
    if (!u->any_clip && uc_clip_check_record(u->m, r, src, "image_emb")) {
        uc_free(x);
        return -1;
    }
    memcpy(emb, x, (size_t)D * sizeof *emb);
    uc_free(x);
    if (uc_clipuse_cosine(emb, emb, D) == 0)
        return uc_err("%s: record %ld field image_emb: a zero vector (no direction to compare)", src, rec_number(r));
    return 0;
}

int uc_clipuse_record_text(const uc_clipuse *u, const rec *r, const char *src, float *emb)
{
    int64_t D = u->D;
    float *x = uc_field_f32(r, src, "", "text_emb", 1, &D, "CLIP");
    if (!x)
        return -1;
    if (!u->any_clip && uc_clip_check_record(u->m, r, src, "text_emb")) {
        uc_free(x);
        return -1;
    }
    memcpy(emb, x, (size_t)D * sizeof *emb);
    uc_free(x);
    if (uc_clipuse_cosine(emb, emb, D) == 0)
        return uc_err("%s: record %ld field text_emb: a zero vector (no direction to compare)", src, rec_number(r));
    return 0;
}

double uc_clipuse_cosine(const float *a, const float *b, int64_t n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0;
}

/* ---- banks ---- */

int uc_clipuse_bank_add(uc_clipuse_bank *b, const uc_clipuse *u, const char *label, const float *emb, int32_t id)
{
    if (b->n >= UC_CLIPUSE_BANK_MAX)
        return uc_err("more than %d entries", UC_CLIPUSE_BANK_MAX);
    if (b->n == b->cap) {
        b->cap = b->cap ? 2 * b->cap : 64;
        b->label = uc_xrealloc(b->label, (size_t)b->cap, sizeof *b->label);
        b->emb = uc_xrealloc(b->emb, (size_t)b->cap * (size_t)u->D, sizeof *b->emb);
        b->have = uc_xrealloc(b->have, (size_t)b->cap, sizeof *b->have);
        b->id = uc_xrealloc(b->id, (size_t)b->cap, sizeof *b->id);
    }
    b->label[b->n] = uc_strdup(label);
    b->have[b->n] = emb != NULL;
    if (emb)
        memcpy(b->emb + (size_t)b->n * (size_t)u->D, emb, (size_t)u->D * sizeof *emb);
    b->id[b->n] = id;
    b->n++;
    return 0;
}

static int bank_records(uc_clipuse_bank *b, const uc_clipuse *u, rec_reader *rr, const char *name)
{
    float *e = uc_alloc((size_t)u->D, sizeof *e);
    rec *r;
    int got, rc = 0;
    long count = 0;
    while (!rc && (got = rec_read(rr, &r)) != 0) {
        if (got < 0) {
            rc = -1;
            break;
        }
        count++;
        char fallback[64];
        const char *label = NULL;
        if (rec_has(r, "prompt") && !(label = rec_get_str(r, "prompt")))
            rc = uc_err_prefix("%s", name);
        if (!rc && !label) {
            snprintf(fallback, sizeof fallback, "#%ld", rec_number(r));
            label = fallback;
        }
        if (!rc)
            rc = uc_clipuse_record_text(u, r, name, e);
        if (!rc && uc_clipuse_bank_add(b, u, label, e, -1))
            rc = uc_err_prefix("%s", name);
        rec_free(r);
    }
    if (!rc && count == 0)
        rc = uc_err("%s: no record", name);
    uc_free(e);
    return rc;
}

/* Well-formed UTF-8: no overlong forms, surrogates or code points past
 * U+10FFFF. */
static int utf8_ok(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : 9;
        if (k == 9 || (k > 0 && i + k >= n)) /* not a lead byte, or cut short */
            return 0;
        uint32_t cp = k == 0 ? c : k == 1 ? c & 0x1f : k == 2 ? c & 0x0f : c & 0x07;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) || cp > 0x10ffff ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

static int bank_lines(uc_clipuse_bank *b, const uc_clipuse *u, const char *text, size_t len, const char *name)
{
    if (memchr(text, 0, len))
        return uc_err("%s: contains a NUL byte (not a text file)", name);
    long lineno = 0, added = 0;
    for (size_t i = 0; i < len;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t l = nl ? (size_t)(nl - (text + i)) : len - i;
        lineno++;
        if (l > UC_CLIPUSE_LINE_MAX)
            return uc_err("%s line %ld: more than %d bytes", name, lineno, UC_CLIPUSE_LINE_MAX);
        size_t k = l;
        while (k > 0 && text[i + k - 1] == '\r')
            k--;
        if (!utf8_ok((const unsigned char *)text + i, k))
            return uc_err("%s line %ld: invalid UTF-8", name, lineno);
        if (k > 0) {
            char *line = uc_alloc(k + 1, 1);
            memcpy(line, text + i, k);
            int rc = uc_clipuse_bank_add(b, u, line, NULL, -1);
            uc_free(line);
            if (rc)
                return uc_err_prefix("%s", name);
            added++;
        }
        i += l + (nl != NULL);
    }
    if (added == 0)
        return uc_err("%s: no text (only empty lines)", name);
    return 0;
}

int uc_clipuse_bank_read(uc_clipuse_bank *b, const uc_clipuse *u, const char *path)
{
    int is_stdin = !path || strcmp(path, "-") == 0;
    const char *name = is_stdin ? "stdin" : path;
    int fd = is_stdin ? 0 : open(path, O_RDONLY);
    if (fd < 0)
        return uc_err("%s: %s", path, strerror(errno));
    unsigned char pre[8];
    ssize_t got = uc_read_prefix(fd, pre);
    int rc;
    if (got < 0) {
        rc = uc_err("%s: read error: %s", name, strerror(errno));
    } else if (got == 0) {
        rc = uc_err("%s: empty", name);
    } else if ((pre[0] & 0xf0) == 0x80 || pre[0] == 0xde || pre[0] == 0xdf) { /* a msgpack map */
        rec_reader *rr = rec_reader_new_prefixed(fd, name, pre, (size_t)got);
        rc = bank_records(b, u, rr, name);
        rec_reader_free(rr);
    } else { /* text: read it whole, bounded */
        size_t cap = 1 << 16, len = (size_t)got, limit = (size_t)64 << 20;
        char *text = uc_alloc(cap, 1);
        memcpy(text, pre, len);
        rc = 0;
        for (;;) {
            if (len == cap) {
                if (cap >= limit) {
                    rc = uc_err("%s: more than %zu bytes of text", name, limit);
                    break;
                }
                cap *= 2;
                text = uc_xrealloc(text, cap, 1);
            }
            ssize_t k = read(fd, text + len, cap - len);
            if (k < 0 && errno == EINTR)
                continue;
            if (k < 0) {
                rc = uc_err("%s: read error: %s", name, strerror(errno));
                break;
            }
            if (k == 0)
                break;
            len += (size_t)k;
        }
        if (!rc)
            rc = bank_lines(b, u, text, len, name);
        uc_free(text);
    }
    if (!is_stdin)
        close(fd);
    return rc;
}

int uc_clipuse_bank_encode(uc_clipuse_bank *b, const uc_clipuse *u)
{
    const char **texts = uc_alloc((size_t)b->n + 1, sizeof *texts);
    int *idx = uc_alloc((size_t)b->n + 1, sizeof *idx), n = 0;
    for (int i = 0; i < b->n; i++)
        if (!b->have[i]) {
            idx[n] = i;
            texts[n++] = b->label[i];
        }
    int rc = 0;
    if (n > 0) {
        float *e = uc_alloc((size_t)n * (size_t)u->D, sizeof *e);
        rc = uc_clipuse_texts(u, texts, NULL, n, e, NULL);
        for (int k = 0; k < n && !rc; k++) {
            memcpy(b->emb + (size_t)idx[k] * (size_t)u->D, e + (size_t)k * (size_t)u->D, (size_t)u->D * sizeof *e);
            b->have[idx[k]] = 1;
        }
        uc_free(e);
    }
    uc_free(texts);
    uc_free(idx);
    return rc;
}

void uc_clipuse_bank_free(uc_clipuse_bank *b)
{
    for (int i = 0; i < b->n; i++)
        uc_free(b->label[i]);
    uc_free(b->label);
    uc_free(b->emb);
    uc_free(b->have);
    uc_free(b->id);
    memset(b, 0, sizeof *b);
}
