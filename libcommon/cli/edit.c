/* edit.c - see edit.h. */
#include "libcommon/cli/edit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"
#include "formats/png.h"
#include "libcommon/cli/stage.h"
#include "libcommon/image/imageio.h"

static void checksum(const unsigned char *b, size_t n, char out[32])
{
    snprintf(out, 32, "fnv1a64:%016llx", (unsigned long long)uc_fnv1a(b, n, UC_FNV_INIT));
}

/* 1 when the file starts with the PNG signature; exits 1 when it cannot be read. */
static int is_png(const uc_cli *c, const char *opt, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        uc_die(c, UC_EXIT_DATA, "%s %s: %s", opt, path, strerror(errno));
    unsigned char b[8];
    size_t n = fread(b, 1, 8, f);
    fclose(f);
    return n == 8 && uc_png_sig(b);
}

/* Any 8-bit PNG as RGB composited on white, and its alpha (255 without). */
static void png_rgb(const uc_image *im, unsigned char *rgb, unsigned char *alpha)
{
    size_t n = (size_t)im->w * (size_t)im->h;
    for (size_t i = 0; i < n; i++) {
        const unsigned char *p = im->px + i * (size_t)im->channels;
        unsigned char v[3], a = 255;
        if (im->channels <= 2) {
            v[0] = v[1] = v[2] = p[0];
            if (im->channels == 2)
                a = p[1];
        } else {
            memcpy(v, p, 3);
            if (im->channels == 4)
                a = p[3];
        }
        for (int k = 0; k < 3; k++) /* over white, rounded */
            rgb[3 * i + k] = (unsigned char)((v[k] * a + 255 * (255 - a) + 127) / 255);
        alpha[i] = a;
    }
}

void uc_edit_load_image(const uc_cli *c, const char *image, uc_edit_in *e)
{
    memset(e, 0, sizeof *e);
    e->image_path = image;
    if (is_png(c, "--image", image)) {
        uc_image im;
        if (uc_png_read_file(image, 0, &im))
            uc_die(c, UC_EXIT_DATA, "--image %s: %s", image, uc_errmsg());
        e->w = im.w, e->h = im.h;
        size_t n = (size_t)im.w * (size_t)im.h;
        e->px = uc_alloc(n, 3);
        e->alpha = uc_alloc(n, 1);
        png_rgb(&im, e->px, e->alpha);
        e->has_alpha = im.channels == 2 || im.channels == 4;
        uc_image_free(&im);
    } else {
        uc_image_reader *ir = uc_image_reader_open_path(image);
        rec *r = NULL;
        if (!ir || uc_image_reader_next(ir, &r) != 1)
            uc_die(c, UC_EXIT_DATA, "--image %s: not a PNG or an image record (%s)", image,
                   ir ? uc_errmsg() : "cannot open");
        uc_input_rest(c, ir, image, "--image takes one picture");
        uc_tensor t;
        if (!rec_has(r, "image") || rec_get_tensor(r, "image", &t) || t.dtype != UC_U8 || t.ndim != 3 ||
            t.shape[2] != 3 || t.shape[0] < 1 || t.shape[1] < 1 || t.shape[0] > UC_PNG_MAX_SIDE ||
            t.shape[1] > UC_PNG_MAX_SIDE)
            uc_die(c, UC_EXIT_DATA, "--image %s: not a PNG or an image record (no image field U8 [H, W, 3])", image);
        e->h = (int)t.shape[0], e->w = (int)t.shape[1];
        size_t n = (size_t)e->w * (size_t)e->h;
        e->px = uc_alloc(n, 3);
        memcpy(e->px, t.data, n * 3);
        rec_free(r);
        uc_image_reader_free(ir);
    }
}

void uc_edit_load_mask(const uc_cli *c, const char *mask, int mask_scale, int extend, uc_edit_in *e)
{
    const char *image = e->image_path;
    size_t n = (size_t)e->w * (size_t)e->h;
    e->redraw = uc_alloc(n, 1);
    if (mask) {
        if (!is_png(c, "--mask", mask))
            uc_die(c, UC_EXIT_DATA, "--mask %s: not a PNG", mask);
        uc_image im;
        if (uc_png_read_file(mask, 0, &im))
            uc_die(c, UC_EXIT_DATA, "--mask %s: %s", mask, uc_errmsg());
        int k = 1;
        if (im.w == e->w && im.h == e->h)
            k = 1;
        else if (mask_scale > 1 && im.w * mask_scale == e->w && im.h * mask_scale == e->h)
            k = mask_scale;
        else if (mask_scale > 1)
            uc_die(c, UC_EXIT_DATA, "--mask %s is %dx%d, the picture %s is %dx%d: the mask must be %dx%d or %dx%d",
                   mask, im.w, im.h, image, e->w, e->h, e->w, e->h, e->w / mask_scale, e->h / mask_scale);
        else
            uc_die(c, UC_EXIT_DATA, "--mask %s is %dx%d, the picture %s is %dx%d: they must be the same size", mask,
                   im.w, im.h, image, e->w, e->h);
        size_t m = (size_t)im.w * (size_t)im.h;
        unsigned char *rgb = uc_alloc(m, 3), *ma = uc_alloc(m, 1);
        png_rgb(&im, rgb, ma);
        for (int y = 0; y < e->h; y++)
            for (int x = 0; x < e->w; x++) {
                const unsigned char *p = rgb + 3 * ((size_t)(y / k) * (size_t)im.w + (size_t)(x / k));
                e->redraw[(size_t)y * (size_t)e->w + (size_t)x] = p[0] + p[1] + p[2] >= 3 * 128;
            }
        uc_free(rgb);
        uc_free(ma);
        uc_image_free(&im);
        e->mask_from = "mask";
    } else if (!e->has_alpha && extend) { /* outpainting only: every pixel kept */
        e->mask_from = "none";
    } else {
        if (!e->has_alpha)
            uc_die(c, UC_EXIT_DATA,
                   "--image %s has no alpha channel: give --mask (white redraws, black keeps) or a picture whose "
                   "transparent pixels are the ones to redraw",
                   image);
        for (size_t i = 0; i < n; i++)
            e->redraw[i] = e->alpha[i] < 255;
        e->mask_from = "alpha";
    }
    for (size_t i = 0; i < n; i++)
        e->nredraw += e->redraw[i];
    if (e->nredraw == 0 && !extend)
        uc_die(c, UC_EXIT_DATA, "%s %s: nothing to redraw (%s)", mask ? "--mask" : "--image", mask ? mask : image,
               mask ? "every pixel is dark; white marks the pixels to redraw" : "no pixel is transparent");
    checksum(e->px, n * 3, e->image_sum);
    checksum(e->redraw, n, e->mask_sum);
}

void uc_edit_in_free(uc_edit_in *e)
{
    uc_free(e->px);
    uc_free(e->alpha);
    uc_free(e->redraw);
    memset(e, 0, sizeof *e);
}

void uc_parse_extend(const uc_cli *c, const char *arg, int ext[4])
{
    static const char *const names[4] = {"left", "right", "top", "bottom"};
    int seen[4] = {0};
    ext[0] = ext[1] = ext[2] = ext[3] = 0;
    const char *p = arg;
    if (!*p)
        uc_die(c, UC_EXIT_USAGE, "--extend: empty (expected left=N,right=N,top=N,bottom=N)");
    while (*p) {
        const char *eq = strchr(p, '=');
        const char *end = strchr(p, ',');
        if (!end)
            end = p + strlen(p);
        int k = -1;
        for (int i = 0; eq && eq < end && i < 4; i++)
            if ((size_t)(eq - p) == strlen(names[i]) && !strncmp(p, names[i], (size_t)(eq - p)))
                k = i;
        if (k < 0)
            uc_die(c, UC_EXIT_USAGE, "--extend '%s': expected left=N,right=N,top=N,bottom=N", arg);
        if (seen[k]++)
            uc_die(c, UC_EXIT_USAGE, "--extend '%s': %s given twice", arg, names[k]);
        long v = 0;
        const char *q = eq + 1;
        if (q == end)
            uc_die(c, UC_EXIT_USAGE, "--extend '%s': %s has no value", arg, names[k]);
        for (; q < end; q++) {
            if (*q < '0' || *q > '9' || v > UC_PNG_MAX_SIDE)
                uc_die(c, UC_EXIT_USAGE, "--extend '%s': %s is not a pixel count in 0..%d", arg, names[k],
                       UC_PNG_MAX_SIDE);
            v = v * 10 + (*q - '0');
        }
        if (v > UC_PNG_MAX_SIDE)
            uc_die(c, UC_EXIT_USAGE, "--extend '%s': %s is not a pixel count in 0..%d", arg, names[k],
                   UC_PNG_MAX_SIDE);
        ext[k] = (int)v;
        p = *end ? end + 1 : end;
        if (*end && !*p)
            uc_die(c, UC_EXIT_USAGE, "--extend '%s': ends with a comma", arg);
    }
}

void uc_edit_paste(const uc_cli *c, rec *out, const uc_edit_in *e, int x0, int y0)
{
    uc_tensor t;
    if (rec_get_tensor(out, "image", &t) || t.dtype != UC_U8 || t.ndim != 3 || t.shape[2] != 3 ||
        t.shape[1] < x0 + e->w || t.shape[0] < y0 + e->h)
        uc_die(c, UC_EXIT_DATA, "edit: the output has no image to paste the kept pixels into");
    int64_t H = t.shape[0], W = t.shape[1];
    unsigned char *px = uc_alloc((size_t)(H * W * 3), 1);
    memcpy(px, t.data, (size_t)(H * W * 3));
    for (int y = 0; y < e->h; y++)
        for (int x = 0; x < e->w; x++) {
            size_t i = (size_t)y * (size_t)e->w + (size_t)x;
            if (!e->redraw[i])
                memcpy(px + 3 * ((size_t)(y + y0) * (size_t)W + (size_t)(x + x0)), e->px + 3 * i, 3);
        }
    rec_set_tensor(out, "image", UC_U8, 3, (int64_t[]){H, W, 3}, px);
    uc_free(px);
}

rec *uc_edit_params(const uc_edit_in *e, int resample, int jump)
{
    rec *m = rec_new();
    rec_del(m, "version");
    rec_set_str(m, "image", e->image_sum);
    rec_set_str(m, "mask", e->mask_sum);
    rec_set_str(m, "mask_from", e->mask_from);
    rec_set_u64(m, "resample", (uint64_t)resample);
    rec_set_u64(m, "jump", (uint64_t)jump);
    rec_set_u64(m, "kept", (uint64_t)((int64_t)e->w * e->h - e->nredraw));
    rec_set_u64(m, "redrawn", (uint64_t)e->nredraw);
    return m;
}
