/* png.c - see png.h */
#include "formats/png.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"

typedef struct {
    char msg[256];
    char why[128]; /* libpng's warning that says which IHDR field is bad */
    int err;       /* errno when libpng gave up (its write callback's fwrite) */
    int budget;    /* refused by the memory budget: msg is the whole story */
    size_t live;   /* bytes libpng holds now (text chunks, once inflated, included) */
    int over;      /* an allocation was refused for UC_PNG_MAX_LIBPNG */
} png_errctx;

/* libpng's allocations, bounded in sum: each text chunk is bounded alone
 * (UC_PNG_MAX_TEXT), but a file may hold many, each inflating to the
 * limit. A header before each block keeps its size. */
#define HDR 16
static png_voidp budget_malloc(png_structp png, png_alloc_size_t n)
{
    png_errctx *e = png_get_mem_ptr(png);
    if (n > UC_PNG_MAX_LIBPNG - e->live) {
        e->over = 1;
        return NULL;
    }
    unsigned char *p = malloc(n + HDR);
    if (!p)
        return NULL;
    memcpy(p, &n, sizeof n);
    e->live += n;
    return p + HDR;
}

static void budget_free(png_structp png, png_voidp ptr)
{
    if (!ptr)
        return;
    png_errctx *e = png_get_mem_ptr(png);
    unsigned char *p = (unsigned char *)ptr - HDR;
    png_alloc_size_t n;
    memcpy(&n, p, sizeof n);
    e->live -= n;
    free(p);
}

static void on_error(png_structp png, png_const_charp msg)
{
    png_errctx *e = png_get_error_ptr(png);
    e->err = errno;
    if (e->over)
        snprintf(e->msg, sizeof e->msg, "%s (its chunks need more than %zu MiB in all)", msg,
                 UC_PNG_MAX_LIBPNG >> 20);
    else if (e->why[0])
        snprintf(e->msg, sizeof e->msg, "%s (%s)", msg, e->why);
    else
        snprintf(e->msg, sizeof e->msg, "%s", msg);
    png_longjmp(png, 1);
}

static void on_warning(png_structp png, png_const_charp msg)
{
    png_errctx *e = png_get_error_ptr(png);
    /* libpng reports a chunk longer than png_set_chunk_malloc_max as a
     * benign error, then allocates and clears it anyway: refuse it. */
    if (strstr(msg, "chunk data is too large"))
        png_error(png, msg);
    /* a chunk refused by the budget is dropped with a warning: refuse the
     * file instead, since a lost text chunk may be the record it carries */
    if (e->over)
        png_error(png, msg);
    /* a text chunk libpng cannot read (bad zlib data, no keyword, a bad
     * iTXt header) is dropped with a warning: refuse the file and say so,
     * since it may be the record the PNG carries */
    if (!strncmp(msg, "tEXt", 4) || !strncmp(msg, "zTXt", 4) || !strncmp(msg, "iTXt", 4)) {
        snprintf(e->why, sizeof e->why, "a text chunk that cannot be kept is refused, not dropped");
        png_error(png, msg);
    }
    if (!e->why[0] && strstr(msg, "IHDR"))
        snprintf(e->why, sizeof e->why, "%s", msg);
}

int uc_png_sig(const unsigned char *b8) { return png_sig_cmp(b8, 0, 8) == 0; }

void uc_image_free(uc_image *img)
{
    free(img->px);
    for (int i = 0; i < img->ntext; i++) {
        free(img->text[i].key);
        free(img->text[i].text);
    }
    free(img->text);
    memset(img, 0, sizeof *img);
}

const char *uc_png_text_get(const uc_image *img, const char *key)
{
    for (int i = 0; i < img->ntext; i++)
        if (strcmp(img->text[i].key, key) == 0)
            return img->text[i].text;
    return NULL;
}

static int take_text(png_structp png, png_infop info, uc_image *img)
{
    png_textp tx;
    int n = 0;
    if (!png_get_text(png, info, &tx, &n) || n <= 0)
        return 0;
    img->text = uc_xrealloc(img->text, (size_t)(img->ntext + n), sizeof *img->text);
    for (int i = 0; i < n; i++) {
        size_t len = tx[i].compression >= PNG_ITXT_COMPRESSION_NONE ? tx[i].itxt_length : tx[i].text_length;
        char *t = malloc(len + 1);
        if (!t)
            return -1;
        memcpy(t, tx[i].text ? tx[i].text : "", len);
        t[len] = 0;
        img->text[img->ntext].key = uc_strdup(tx[i].key);
        img->text[img->ntext].text = t;
        img->ntext++;
    }
    return 0;
}

int uc_png_read(FILE *f, const char *name, int sig_read, int keep_palette, uc_image *img)
{
    memset(img, 0, sizeof *img);
    png_errctx ectx = {{0}, {0}, 0, 0, 0, 0};
    png_structp png = png_create_read_struct_2(PNG_LIBPNG_VER_STRING, &ectx, on_error, on_warning, &ectx,
                                               budget_malloc, budget_free);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_infop endinfo = info ? png_create_info_struct(png) : NULL;
    unsigned char **volatile rows = NULL;
    if (!endinfo) {
        png_destroy_read_struct(&png, &info, &endinfo);
        return uc_err("%s: out of memory", name);
    }
    if (setjmp(png_jmpbuf(png))) {
        free(rows);
        uc_image_free(img);
        png_destroy_read_struct(&png, &info, &endinfo);
        if (ectx.budget)
            return uc_err("%s: %s", name, ectx.msg);
        if (feof(f))
            return uc_err("%s: bad PNG: truncated (the input ends inside it)", name);
        return uc_err("%s: bad PNG: %s", name, ectx.msg[0] ? ectx.msg : "read error");
    }
    png_set_user_limits(png, UC_PNG_MAX_SIDE, UC_PNG_MAX_SIDE);
    /* a damaged text chunk would lose the record it carries: refuse it */
    png_set_crc_action(png, PNG_CRC_DEFAULT, PNG_CRC_ERROR_QUIT);
    png_set_chunk_malloc_max(png, UC_PNG_MAX_TEXT);
    png_set_chunk_cache_max(png, 1000);
    png_init_io(png, f);
    png_set_sig_bytes(png, sig_read);
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, ctype, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
    if ((size_t)w * h > UC_PNG_MAX_PIXELS) {
        snprintf(ectx.msg, sizeof ectx.msg, "%ux%u pixels is above the limit", (unsigned)w, (unsigned)h);
        png_longjmp(png, 1);
    }
    if (depth == 16)
        png_set_scale_16(png);
    if (ctype == PNG_COLOR_TYPE_PALETTE) {
        if (keep_palette) {
            png_colorp pal;
            int np = 0;
            if (depth < 8)
                png_set_packing(png);
            png_get_PLTE(png, info, &pal, &np);
            png_bytep trans = NULL;
            int nt = 0;
            if (png_get_valid(png, info, PNG_INFO_tRNS))
                png_get_tRNS(png, info, &trans, &nt, NULL);
            img->palette = 1;
            img->nplte = np;
            for (int i = 0; i < np && i < 256; i++) {
                img->plte[i][0] = pal[i].red;
                img->plte[i][1] = pal[i].green;
                img->plte[i][2] = pal[i].blue;
                img->plte[i][3] = i < nt ? trans[i] : 255;
            }
        } else {
            png_set_palette_to_rgb(png);
            if (png_get_valid(png, info, PNG_INFO_tRNS))
                png_set_tRNS_to_alpha(png);
        }
    } else {
        if ((ctype & PNG_COLOR_MASK_COLOR) == 0 && depth < 8)
            png_set_expand_gray_1_2_4_to_8(png);
        if (png_get_valid(png, info, PNG_INFO_tRNS))
            png_set_tRNS_to_alpha(png);
    }
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    if (png_get_bit_depth(png, info) != 8 || ch < 1 || ch > 4) {
        snprintf(ectx.msg, sizeof ectx.msg, "unsupported sample layout");
        png_longjmp(png, 1);
    }
    char what[64];
    snprintf(what, sizeof what, "a picture of %ux%u pixels", (unsigned)w, (unsigned)h);
    /* the pixels and two copies a reader makes of them (the record's
     * tensor; CLIP's premultiplied RGBA) */
    if (uc_mem_fits(what, 3.0 * w * h * ch + (double)h * sizeof *rows)) {
        snprintf(ectx.msg, sizeof ectx.msg, "%s", uc_errmsg());
        ectx.budget = 1;
        png_longjmp(png, 1);
    }
    img->w = (int)w;
    img->h = (int)h;
    img->channels = ch;
    img->px = malloc((size_t)w * h * (size_t)ch);
    rows = malloc(h * sizeof *rows);
    if (!img->px || !rows) {
        snprintf(ectx.msg, sizeof ectx.msg, "out of memory");
        png_longjmp(png, 1);
    }
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = img->px + (size_t)y * w * (size_t)ch;
    png_read_image(png, rows);
    png_read_end(png, endinfo);
    if (take_text(png, info, img) || take_text(png, endinfo, img)) {
        snprintf(ectx.msg, sizeof ectx.msg, "out of memory for its text chunks");
        png_longjmp(png, 1);
    }
    free(rows);
    png_destroy_read_struct(&png, &info, &endinfo);
    return 0;
}

int uc_png_read_file(const char *path, int keep_palette, uc_image *img)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return uc_err("%s: cannot open", path);
    unsigned char sig[8];
    if (fread(sig, 1, 8, f) != 8 || !uc_png_sig(sig)) {
        fclose(f);
        return uc_err("%s: not a PNG file", path);
    }
    int rc = uc_png_read(f, path, 8, keep_palette, img);
    if (rc == 0 && fgetc(f) != EOF) { /* one picture: a second PNG or garbage after IEND is not ignored */
        uc_image_free(img);
        rc = uc_err("%s: bytes after the end of the PNG (IEND): one picture is read from this file", path);
    }
    fclose(f);
    return rc;
}

static int ascii(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80)
            return 0;
    return 1;
}

int uc_png_write(FILE *f, const unsigned char *px, int w, int h, int channels, const uc_png_text *text, int ntext)
{
    png_errctx ectx = {{0}, {0}, 0, 0, 0, 0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ectx, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    png_textp volatile tx = NULL;
    if (!info) {
        png_destroy_write_struct(&png, &info);
        return uc_err("out of memory");
    }
    if (setjmp(png_jmpbuf(png))) {
        free(tx);
        png_destroy_write_struct(&png, &info);
        return ectx.err ? uc_err("PNG write failed: %s: %s", ectx.msg, strerror(ectx.err))
                        : uc_err("PNG write failed: %s", ectx.msg);
    }
    static const int types[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                 PNG_COLOR_TYPE_RGB_ALPHA};
    errno = 0; /* what on_error keeps is the write's */
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)w, (png_uint_32)h, 8, types[channels], PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (ntext > 0) {
        tx = calloc((size_t)ntext, sizeof *tx);
        if (!tx)
            png_error(png, "out of memory");
        for (int i = 0; i < ntext; i++) {
            size_t len = strlen(text[i].text);
            int plain = ascii(text[i].text);
            tx[i].key = text[i].key;
            tx[i].text = text[i].text;
            if (plain) {
                tx[i].compression = len > 1024 ? PNG_TEXT_COMPRESSION_zTXt : PNG_TEXT_COMPRESSION_NONE;
                tx[i].text_length = len;
            } else {
                tx[i].compression = len > 1024 ? PNG_ITXT_COMPRESSION_zTXt : PNG_ITXT_COMPRESSION_NONE;
                tx[i].itxt_length = len;
            }
        }
        png_set_text(png, info, tx, ntext);
    }
    png_write_info(png, info);
    for (int y = 0; y < h; y++)
        png_write_row(png, px + (size_t)y * (size_t)w * (size_t)channels);
    png_write_end(png, info);
    free(tx);
    png_destroy_write_struct(&png, &info);
    if (fflush(f) != 0 || ferror(f))
        return uc_err("write error: %s", strerror(errno ? errno : EIO));
    return 0;
}
