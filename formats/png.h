/* png.h - PNG in and out through libpng, with hard limits on untrusted sizes.
 *
 * Reading gives 8-bit samples: gray (1), gray+alpha (2), RGB (3) or RGBA (4)
 * channels; 16-bit samples are narrowed, low bit depths expanded. A palette
 * image is expanded to RGB(A) unless the caller asks to keep its indices
 * (CLIP's preprocessing resizes palette images by index). Text chunks (tEXt,
 * zTXt, iTXt) are returned as UTF-8 key/value pairs. */
#ifndef UNCLIP_PNG_H
#define UNCLIP_PNG_H

#include <stdio.h>

#define UC_PNG_MAX_SIDE 16384
#define UC_PNG_MAX_PIXELS ((size_t)64 << 20)
#define UC_PNG_MAX_TEXT ((size_t)64 << 20)    /* one text chunk, inflated */
#define UC_PNG_MAX_LIBPNG ((size_t)128 << 20) /* all that libpng holds at once: every text chunk */

typedef struct {
    char *key, *text;
} uc_png_text;

typedef struct {
    int w, h, channels;
    int palette;                  /* px holds indices into plte (channels 1) */
    unsigned char plte[256][4];   /* RGBA palette entries when palette */
    int nplte;
    unsigned char *px;            /* h * w * channels bytes, row-major */
    uc_png_text *text;
    int ntext;
} uc_image;

/* Read one PNG from f. sig_read: 8 when the caller already consumed and
 * checked the signature. name is used in messages. */
int uc_png_read(FILE *f, const char *name, int sig_read, int keep_palette, uc_image *img);
int uc_png_read_file(const char *path, int keep_palette, uc_image *img);
void uc_image_free(uc_image *img);
/* Value of a text chunk, or NULL. */
const char *uc_png_text_get(const uc_image *img, const char *key);
/* True when the 8 bytes are the PNG signature. */
int uc_png_sig(const unsigned char *b8);

/* Write 8-bit gray/RGB/RGBA pixels with text chunks (compressed when long). */
int uc_png_write(FILE *f, const unsigned char *px, int w, int h, int channels, const uc_png_text *text,
                 int ntext);

#endif
