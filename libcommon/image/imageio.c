/* imageio.c - see imageio.h. PNGs carry their record in a text chunk; the
 * image reader tells a PNG stream from a record stream by its first 8
 * bytes. */
#define _POSIX_C_SOURCE 200809L
#include "libcommon/image/imageio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/base.h"

/* ---- base64 (RFC 4648, standard alphabet, padded) ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *uc_base64_encode(const void *data, size_t n)
{
    const unsigned char *p = data;
    size_t len;
    if (n > (SIZE_MAX - 1) / 4 * 3 - 3)
        return NULL;
    len = (n + 2) / 3 * 4;
    char *s = malloc(len + 1), *o = s;
    if (!s)
        return NULL;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = b64[(v >> 6) & 63];
        *o++ = b64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = b64[v >> 18];
        *o++ = b64[(v >> 12) & 63];
        *o++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    *o = 0;
    return s;
}

static int b64_value(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Whitespace (line breaks some tools insert) is skipped; padding is
 * optional but, when present, only at the end. */
int uc_base64_decode(const char *s, unsigned char **out, size_t *n)
{
    size_t len = strlen(s);
    unsigned char *buf = malloc(len / 4 * 3 + 3), *o = buf;
    if (!buf)
        return uc_err("base64: out of memory");
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int v = b64_value(c);
        if (v < 0 || pad) {
            free(buf);
            return uc_err("base64: %s at offset %zu", v < 0 ? "invalid character" : "data after padding", i);
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            *o++ = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* 6 leftover bits cannot end a quantum; 2 or 4 must be zero and padded
     * to a multiple of 4 symbols when padding is used */
    if (bits >= 6 || acc != 0 || pad > 2 || (pad && (bits / 2 != pad))) {
        free(buf);
        return uc_err("base64: bad ending (truncated data or wrong padding)");
    }
    *out = buf;
    *n = (size_t)(o - buf);
    return 0;
}

/* ---- a growing string ---- */

typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) UC_PRINTF(2, 3);
static void sb_add(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0)
        return;
    if (b->n + (size_t)k + 1 > b->cap) {
        b->cap = (b->n + (size_t)k + 1) * 2;
        b->s = uc_xrealloc(b->s, b->cap, 1);
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, (size_t)k + 1, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

/* ---- the "parameters" line ---- */

/* A value of the settings line; quoted (with \" and \\ escapes) when it
 * holds a separator, as other generators do for "10,10,3,2,2". */
static void sb_value(sbuf *b, const char *v)
{
    if (!strpbrk(v, ",:\"\\\n\r")) {
        sb_add(b, "%s", v);
        return;
    }
    sb_add(b, "\"");
    for (; *v; v++)
        sb_add(b, "%s%c", *v == '"' || *v == '\\' ? "\\" : "", *v == '\n' || *v == '\r' ? ' ' : *v);
    sb_add(b, "\"");
}

/* A prompt on its line: a newline in it would start a line of its own (a
 * forged "Steps: ..." or "Negative prompt: ..."), so a backslash is written
 * \\, a newline \n, a carriage return \r. */
static void sb_line(sbuf *b, const char *s)
{
    for (size_t k; *s; s += k + 1) {
        k = strcspn(s, "\\\n\r");
        sb_add(b, "%.*s", (int)k, s);
        if (!s[k])
            break;
        sb_add(b, "\\%c", s[k] == '\n' ? 'n' : s[k] == '\r' ? 'r' : '\\');
    }
}

/* A scalar field as text: a string as is, integers in decimal, other
 * numbers with %g. 0 when absent or not a scalar (the fields are optional
 * here, so a failed probe is not an error). */
static int scalar_text(const rec *r, const char *key, char *buf, size_t n)
{
    uint64_t u;
    double d;
    const char *s;
    if (!r || !rec_has(r, key))
        return 0;
    if (rec_get_u64(r, key, &u) == 0)
        snprintf(buf, n, "%llu", (unsigned long long)u);
    else if (rec_get_f64(r, key, &d) == 0)
        snprintf(buf, n, "%g", d);
    else if ((s = rec_get_str(r, key)) != NULL)
        snprintf(buf, n, "%s", s);
    else
        return 0;
    return 1;
}

static rec *sub_map(const rec *r, const char *key) { return r && rec_has(r, key) ? rec_get_map(r, key) : NULL; }

/* steps, sampler and guidance of one stage: "Steps: 25, Sampler: ddpm,
 * CFG scale: 8" for the image stage, "Prior steps: 25, ..." for another. */
static void stage_settings(sbuf *b, const rec *st, const char *stage, int *first)
{
    static const struct {
        const char *key, *label, *sublabel;
    } items[] = {{"steps", "Steps", "steps"}, {"sampler", "Sampler", "sampler"}, {"guidance", "CFG scale", "CFG scale"}};
    char v[256];
    for (size_t i = 0; i < UC_COUNT(items); i++) {
        if (!scalar_text(st, items[i].key, v, sizeof v))
            continue;
        sb_add(b, "%s", *first ? "" : ", ");
        if (stage)
            sb_add(b, "%c%s %s: ", stage[0] >= 'a' && stage[0] <= 'z' ? stage[0] - 32 : stage[0], stage + 1,
                   items[i].sublabel);
        else
            sb_add(b, "%s: ", items[i].label);
        sb_value(b, v);
        *first = 0;
    }
}

/* The one-line summary other generators write ("parameters"): the prompt,
 * "Negative prompt: ..." when there is one, then the settings of the image
 * stage (the decoder, else the first stage with settings), the seed, the
 * size and the model, then the settings of the other stages prefixed with
 * the stage name ("Prior steps: 25"). */
static char *parameters_text(const rec *r, int w, int h)
{
    sbuf b = {0};
    char v[1024];
    const char *s;
    sb_add(&b, "%s", "");
    if (rec_has(r, "prompt") && (s = rec_get_str(r, "prompt")) != NULL) {
        sb_line(&b, s);
        sb_add(&b, "\n");
    }
    if (rec_has(r, "negative_prompt") && (s = rec_get_str(r, "negative_prompt")) != NULL && *s) {
        sb_add(&b, "Negative prompt: ");
        sb_line(&b, s);
        sb_add(&b, "\n");
    }
    rec *params = sub_map(r, "params"), *models = sub_map(r, "models");
    const char *main_stage = NULL;
    if (params) {
        if (rec_has(params, "decoder"))
            main_stage = "decoder";
        for (int i = 0; !main_stage && i < rec_count(params); i++) {
            rec *st = sub_map(params, rec_key_at(params, i));
            if (st && (rec_has(st, "steps") || rec_has(st, "guidance")))
                main_stage = rec_key_at(params, i);
            rec_free(st);
        }
    }
    int first = 1;
    if (main_stage) {
        rec *st = sub_map(params, main_stage);
        stage_settings(&b, st, NULL, &first);
        rec_free(st);
    }
    if (scalar_text(r, "seed", v, sizeof v)) {
        sb_add(&b, "%sSeed: %s", first ? "" : ", ", v);
        first = 0;
    }
    sb_add(&b, "%sSize: %dx%d", first ? "" : ", ", w, h);
    first = 0;
    if (main_stage && models) {
        rec *m = sub_map(models, main_stage);
        if (scalar_text(m, "id", v, sizeof v)) {
            sb_add(&b, ", Model: ");
            sb_value(&b, v);
        }
        rec_free(m);
    }
    for (int i = 0; params && i < rec_count(params); i++) {
        const char *name = rec_key_at(params, i);
        if (main_stage && strcmp(name, main_stage) == 0)
            continue;
        rec *st = sub_map(params, name);
        stage_settings(&b, st, name, &first);
        rec_free(st);
    }
    rec_free(params);
    rec_free(models);
    return b.s;
}

/* ---- writing ---- */

static int image_err(const rec *r, const char *fmt, ...) UC_PRINTF(2, 3);
static int image_err(const rec *r, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (rec_number(r) > 0)
        return uc_err("record %ld field image: %s", rec_number(r), msg);
    return uc_err("field image: %s", msg);
}

/* The "filter" chunk: "POINT: REASON" for each map of the filter field
 * that has a reason string (clip-filter writes them), one a line; NULL when
 * there is none. */
static char *filter_text(const rec *r)
{
    rec *fm = sub_map(r, "filter");
    if (!fm)
        return NULL;
    sbuf b = {0};
    for (int i = 0; i < rec_count(fm); i++) {
        const char *point = rec_key_at(fm, i), *reason;
        rec *p = sub_map(fm, point);
        if (p && rec_has(p, "reason") && (reason = rec_get_str(p, "reason")) != NULL)
            sb_add(&b, "%s%s: %s", b.n ? "\n" : "", point, reason);
        rec_free(p);
    }
    rec_free(fm);
    return b.s;
}

int uc_write_png_record(FILE *f, const rec *r)
{
    uc_tensor t;
    char shp[96];
    if (rec_get_tensor(r, "image", &t))
        return -1;
    if (t.dtype != UC_U8 || t.ndim != 3 || t.shape[2] != 3)
        return image_err(r, "%s %s, expected U8 [H, W, 3]", uc_dtype_name(t.dtype), uc_shape_str(&t, shp, sizeof shp));
    if (t.shape[0] < 1 || t.shape[1] < 1 || t.shape[0] > UC_PNG_MAX_SIDE || t.shape[1] > UC_PNG_MAX_SIDE ||
        (size_t)(t.shape[0] * t.shape[1]) > UC_PNG_MAX_PIXELS)
        return image_err(r, "size %s out of range for a PNG", uc_shape_str(&t, shp, sizeof shp));
    int h = (int)t.shape[0], w = (int)t.shape[1];

    rec *meta = rec_clone(r);
    rec_del(meta, "image");
    rec_del(meta, "image_f32");
    char *mp;
    size_t mn;
    rec_encode(meta, &mp, &mn);
    rec_free(meta);
    char *enc = mn < UC_PNG_MAX_TEXT / 4 * 3 ? uc_base64_encode(mp, mn) : NULL;
    free(mp);
    if (!enc)
        return image_err(r, "the record (%zu bytes without pixels) is too large for a PNG text chunk", mn);

    uc_png_text text[5];
    int nt = 0;
    char *params = parameters_text(r, w, h), seedbuf[32], *filter = filter_text(r);
    const char *prompt = NULL;
    uint64_t seed;
    text[nt++] = (uc_png_text){"parameters", params};
    if (rec_has(r, "prompt") && (prompt = rec_get_str(r, "prompt")) == NULL) {
        free(enc);
        free(params);
        free(filter);
        return -1;
    }
    if (prompt)
        text[nt++] = (uc_png_text){"prompt", (char *)prompt};
    if (rec_has(r, "seed")) {
        if (rec_get_u64(r, "seed", &seed)) {
            free(enc);
            free(params);
            free(filter);
            return -1;
        }
        snprintf(seedbuf, sizeof seedbuf, "%llu", (unsigned long long)seed);
        text[nt++] = (uc_png_text){"seed", seedbuf};
    }
    if (filter)
        text[nt++] = (uc_png_text){"filter", filter};
    text[nt++] = (uc_png_text){"unclip-record", enc};
    int rc = uc_png_write(f, t.data, w, h, 3, text, nt);
    free(enc);
    free(params);
    free(filter);
    return rc;
}

/* ---- reading ---- */

/* Composite value c with alpha a over white, rounded. */
static unsigned char over_white(unsigned c, unsigned a) { return (unsigned char)((c * a + 255 * (255 - a) + 127) / 255); }

rec *uc_record_from_png(const uc_image *img)
{
    rec *r = NULL;
    const char *carried = uc_png_text_get(img, "unclip-record");
    if (carried) {
        unsigned char *buf;
        size_t n;
        if (uc_base64_decode(carried, &buf, &n)) {
            uc_err_prefix("text chunk unclip-record");
            return NULL;
        }
        rec_reader *rr = rec_reader_mem(buf, n, "text chunk unclip-record");
        free(buf);
        rec *extra = NULL;
        int got = rec_read(rr, &r), more = got == 1 ? rec_read(rr, &extra) : 0;
        if (more != 0) {
            rec_free(r);
            rec_free(extra);
            r = NULL;
            if (more == 1)
                uc_err("text chunk unclip-record: holds more than one record");
            got = -1;
        } else if (got == 0) {
            uc_err("text chunk unclip-record: holds no record");
            got = -1;
        }
        rec_reader_free(rr);
        if (got != 1)
            return NULL;
        rec_del(r, "image_f32");
        rec_set_number(r, 0);
    } else {
        r = rec_new();
    }

    if (img->w < 1 || img->h < 1 || img->channels < 1 || img->channels > 4) {
        rec_free(r);
        uc_err("PNG: unsupported layout (%dx%d, %d channels)", img->w, img->h, img->channels);
        return NULL;
    }
    size_t npx = (size_t)img->w * (size_t)img->h;
    unsigned char *rgb = uc_alloc(npx, 3);
    const unsigned char *p = img->px;
    for (size_t i = 0; i < npx; i++) {
        unsigned char *o = rgb + 3 * i;
        if (img->palette) {
            unsigned k = p[i];
            if (k >= (unsigned)img->nplte) {
                uc_free(rgb);
                rec_free(r);
                uc_err("PNG: palette index %u out of range (%d entries)", k, img->nplte);
                return NULL;
            }
            for (int c = 0; c < 3; c++)
                o[c] = over_white(img->plte[k][c], img->plte[k][3]);
            continue;
        }
        switch (img->channels) {
        case 1: o[0] = o[1] = o[2] = p[i]; break;
        case 2: o[0] = o[1] = o[2] = over_white(p[2 * i], p[2 * i + 1]); break;
        case 3: memcpy(o, p + 3 * i, 3); break;
        default:
            for (int c = 0; c < 3; c++)
                o[c] = over_white(p[4 * i + c], p[4 * i + 3]);
        }
    }
    rec_set_tensor(r, "image", UC_U8, 3, (int64_t[]){img->h, img->w, 3}, rgb);
    uc_free(rgb);
    return r;
}

/* ---- the image reader ---- */

struct uc_image_reader {
    int fd, own_fd;
    char *name;
    enum { SNIFF, PNGS, RECORDS, DONE } mode;
    FILE *f;         /* PNGS: a stream over a dup of fd */
    rec_reader *rr;  /* RECORDS */
    long count;      /* images returned so far */
    int failed;
};

uc_image_reader *uc_image_reader_open(int fd, const char *name)
{
    uc_image_reader *r = uc_alloc(1, sizeof *r);
    r->fd = fd;
    r->name = uc_strdup(name);
    return r;
}

uc_image_reader *uc_image_reader_open_path(const char *path)
{
    if (!path || strcmp(path, "-") == 0)
        return uc_image_reader_open(0, "stdin");
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        uc_err("%s: %s", path, strerror(errno));
        return NULL;
    }
    uc_image_reader *r = uc_image_reader_open(fd, path);
    r->own_fd = 1;
    return r;
}

void uc_image_reader_free(uc_image_reader *r)
{
    if (!r)
        return;
    if (r->f)
        fclose(r->f);
    rec_reader_free(r->rr);
    if (r->own_fd)
        close(r->fd);
    uc_free(r->name);
    uc_free(r);
}

ssize_t uc_read_prefix(int fd, unsigned char *b)
{
    size_t got = 0;
    while (got < 8) {
        ssize_t k = read(fd, b + got, 8 - got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

static int sniff(uc_image_reader *r)
{
    unsigned char sig[8];
    ssize_t got = uc_read_prefix(r->fd, sig);
    if (got < 0)
        return uc_err("%s: read error: %s", r->name, strerror(errno));
    if (got == 0) {
        r->mode = DONE;
        return 0;
    }
    if (got == 8 && uc_png_sig(sig)) {
        int fd2 = dup(r->fd);
        if (fd2 < 0 || !(r->f = fdopen(fd2, "rb"))) {
            if (fd2 >= 0)
                close(fd2);
            return uc_err("%s: %s", r->name, strerror(errno));
        }
        r->mode = PNGS;
        return 1;
    }
    r->rr = rec_reader_new_prefixed(r->fd, r->name, sig, (size_t)got);
    r->mode = RECORDS;
    return 1;
}

static int next_png(uc_image_reader *r, rec **out)
{
    char name[300];
    snprintf(name, sizeof name, "%s: image %ld", r->name, r->count + 1);
    if (r->count > 0) {
        unsigned char sig[8];
        size_t got = fread(sig, 1, 8, r->f);
        if (got == 0 && feof(r->f)) {
            r->mode = DONE;
            return 0;
        }
        if (ferror(r->f))
            return uc_err("%s: read error", name);
        if (got < 8 || !uc_png_sig(sig))
            return uc_err("%s: not a PNG signature after image %ld (a PNG stream holds only PNGs)", name,
                          r->count);
    }
    uc_image img;
    if (uc_png_read(r->f, name, 8, 0, &img))
        return -1;
    rec *rc = uc_record_from_png(&img);
    uc_image_free(&img);
    if (!rc)
        return uc_err_prefix("%s", name);
    r->count++;
    rec_set_number(rc, r->count);
    *out = rc;
    return 1;
}

int uc_image_reader_pngs(const uc_image_reader *r) { return r->mode == PNGS ? 1 : r->mode == RECORDS ? 0 : -1; }

int uc_image_reader_next(uc_image_reader *r, rec **out)
{
    *out = NULL;
    if (r->failed)
        return -1;
    int rc = 1;
    if (r->mode == SNIFF)
        rc = sniff(r);
    if (rc == 1) {
        switch (r->mode) {
        case PNGS: rc = next_png(r, out); break;
        case RECORDS:
            rc = rec_read(r->rr, out);
            if (rc == 1)
                r->count++;
            break;
        default: rc = 0;
        }
    }
    if (rc < 0)
        r->failed = 1;
    return rc;
}

/* ---- pixel conversions ---- */

void uc_image_u8_to_f32(const unsigned char *px, int h, int w, float *out)
{
    size_t plane = (size_t)h * (size_t)w;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++)
            out[(size_t)c * plane + i] = (float)px[3 * i + (size_t)c] / 127.5f - 1.0f;
}

void uc_image_f32_to_u8(const float *x, int h, int w, unsigned char *px)
{
    size_t plane = (size_t)h * (size_t)w;
    for (size_t i = 0; i < plane; i++)
        for (int c = 0; c < 3; c++) {
            float v = x[(size_t)c * plane + i] * 0.5f + 0.5f;
            v = v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f; /* also maps NaN to 0 */
            px[3 * i + (size_t)c] = (unsigned char)(v * 255.0f);
        }
}

void uc_rec_set_image(rec *r, float *x, int64_t h, int64_t w, int want_f32)
{
    for (int64_t i = 0; i < 3 * h * w; i++)
        x[i] = x[i] < -1.0f ? -1.0f : x[i] > 1.0f ? 1.0f : x[i];
    unsigned char *px = uc_alloc((size_t)(3 * h * w), 1);
    uc_image_f32_to_u8(x, (int)h, (int)w, px);
    rec_set_tensor(r, "image", UC_U8, 3, (int64_t[]){h, w, 3}, px);
    uc_free(px);
    if (want_f32)
        rec_set_tensor(r, "image_f32", UC_F32, 3, (int64_t[]){3, h, w}, x);
    else
        rec_del(r, "image_f32");
}
