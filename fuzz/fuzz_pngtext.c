#define _GNU_SOURCE /* fmemopen */
/* fuzz_pngtext - PNG text chunks and the record they carry. The input is
 * not a PNG: it is a list of text chunks that the harness wraps in a valid
 * 4x4 picture (IHDR, IDAT, IEND, every CRC right), so every mutation reaches
 * libpng's text handling, the budget on what it inflates (formats/png.c),
 * and uc_record_from_png (base64, msgpack, the record's checks).
 *
 * Each chunk is read from the input as
 *   kind (1 byte): bits 0-1 tEXt, zTXt, iTXt, or (3) a chunk of any type
 *                  named by the next 4 bytes; bit 2: the keyword is
 *                  "unclip-record" (else taken from the input); bit 3: the
 *                  text is base64 of the bytes given (a carried record);
 *                  bit 4: zTXt/iTXt data is given as is, not compressed
 *                  here (bad zlib streams); bit 5: iTXt compressed flag;
 *                  bit 6: the chunk goes after IDAT
 *   keyword length (1 byte) and keyword, unless bit 2
 *   text length (2 bytes, little-endian) and text (clipped to the input)
 * up to 64 chunks. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "formats/base.h"
#include "formats/png.h"
#include "libcommon/image/imageio.h"

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf;

static int put(buf *b, const void *d, size_t n)
{
    if (!n)
        return 0;
    if (b->n + n > b->cap) {
        size_t cap = (b->n + n) * 2 + 256;
        uint8_t *p = realloc(b->p, cap);
        if (!p)
            return -1;
        b->p = p, b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
    return 0;
}

static int chunk(buf *b, const char *type, const uint8_t *d, size_t n)
{
    uint8_t be[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    uLong crc = crc32(0, (const Bytef *)type, 4);
    crc = crc32(crc, d, (uInt)n);
    uint8_t c[4] = {(uint8_t)(crc >> 24), (uint8_t)(crc >> 16), (uint8_t)(crc >> 8), (uint8_t)crc};
    return put(b, be, 4) || put(b, type, 4) || put(b, d, n) || put(b, c, 4) ? -1 : 0;
}

/* zlib of d[0..n) appended to b, or d as is (raw: not a zlib stream). */
static int deflated(buf *b, const uint8_t *d, size_t n, int raw)
{
    if (raw)
        return put(b, d, n);
    uLongf m = compressBound((uLong)n);
    uint8_t *z = malloc(m);
    if (!z)
        return -1;
    int rc = compress2(z, &m, d, (uLong)n, 6) != Z_OK || put(b, z, m) ? -1 : 0;
    free(z);
    return rc;
}

static void read_png(const uint8_t *png, size_t n)
{
    FILE *f = fmemopen((void *)png, n, "rb");
    if (!f)
        return;
    uc_image img;
    if (uc_png_read(f, "fuzz", 0, 0, &img) == 0) {
        rec *r = uc_record_from_png(&img);
        if (r) {
            char *s;
            size_t len;
            FILE *o = open_memstream(&s, &len);
            if (o) {
                rec_dump_json(r, o, 0);
                fclose(o);
                free(s);
            }
            rec_free(r);
        }
        uc_image_free(&img);
    }
    fclose(f);
}

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    static const uint8_t sig[8] = {137, 'P', 'N', 'G', 13, 10, 26, 10};
    static const uint8_t ihdr[13] = {0, 0, 0, 4, 0, 0, 0, 4, 8, 2, 0, 0, 0};
    buf png = {0}, before = {0}, after = {0}, data = {0};
    size_t at = 0;
    for (int k = 0; k < 64 && at < size; k++) {
        uint8_t kind = in[at++];
        char key[256] = "unclip-record";
        char type[5] = "tEXt";
        if ((kind & 3) == 3) {
            if (size - at < 4)
                break;
            memcpy(type, in + at, 4);
            at += 4;
        } else {
            memcpy(type, (kind & 3) == 0 ? "tEXt" : (kind & 3) == 1 ? "zTXt" : "iTXt", 4);
        }
        if (!(kind & 4)) {
            if (at >= size)
                break;
            size_t kl = UC_MIN(in[at], size - at - 1);
            memcpy(key, in + at + 1, kl);
            key[kl] = 0;
            at += 1 + kl;
        }
        size_t tl = 0;
        if (size - at >= 2) {
            tl = UC_MIN((size_t)(in[at] | in[at + 1] << 8), size - at - 2);
            at += 2;
        }
        const uint8_t *text = in + at;
        at += tl;
        char *b64 = NULL;
        if (kind & 8) { /* a carried record: the bytes as base64 */
            b64 = uc_base64_encode(text, tl);
            text = (const uint8_t *)b64;
            tl = strlen(b64);
        }
        data.n = 0;
        size_t klen = strlen(key);
        int ok = put(&data, key, klen) == 0;
        if (!memcmp(type, "tEXt", 4)) {
            ok = ok && !put(&data, "", 1) && !put(&data, text, tl);
        } else if (!memcmp(type, "zTXt", 4)) {
            ok = ok && !put(&data, "\0\0", 2) && !deflated(&data, text, tl, kind & 16);
        } else if (!memcmp(type, "iTXt", 4)) {
            uint8_t flag[2] = {0, (kind & 32) ? 1 : 0};
            ok = ok && !put(&data, flag, 1) && !put(&data, &flag[1], 1) && !put(&data, "\0", 1) &&
                 !put(&data, "en\0", 3) && !put(&data, "k\0", 2) &&
                 !(flag[1] ? deflated(&data, text, tl, kind & 16) : put(&data, text, tl));
        } else {
            ok = ok && !put(&data, text, tl);
        }
        free(b64);
        if (!ok || chunk((kind & 64) ? &after : &before, type, data.p, data.n))
            goto out;
    }
    {
        uint8_t raw[4 * 13];
        for (int y = 0; y < 4; y++) {
            raw[y * 13] = 0;
            memset(raw + y * 13 + 1, 40 * y, 12);
        }
        buf idat = {0};
        int ok = !deflated(&idat, raw, sizeof raw, 0);
        ok = ok && !put(&png, sig, 8) && !chunk(&png, "IHDR", ihdr, sizeof ihdr) &&
             !put(&png, before.p ? before.p : (uint8_t *)"", before.n) && !chunk(&png, "IDAT", idat.p, idat.n) &&
             !put(&png, after.p ? after.p : (uint8_t *)"", after.n) && !chunk(&png, "IEND", (const uint8_t *)"", 0);
        free(idat.p);
        if (ok)
            read_png(png.p, png.n);
    }
out:
    free(png.p);
    free(before.p);
    free(after.p);
    free(data.p);
    return 0;
}
