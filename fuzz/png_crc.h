/* png_crc.h - let the fuzzer mutate PNG chunks past their checksums.
 *
 * A mutated chunk almost never keeps a valid CRC, so libpng would stop every
 * input at the first chunk it reads. png_fix_crcs recomputes the CRC of each
 * whole chunk of every PNG in buf (PNGs may follow one another, as in an
 * image stream), so the mutations reach the code behind the checks. The CRC
 * check itself is covered by the hostile-input table. */
#ifndef UC_FUZZ_PNG_CRC_H
#define UC_FUZZ_PNG_CRC_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static inline uint32_t png_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void png_fix_crcs(uint8_t *buf, size_t n)
{
    static const uint8_t sig[8] = {137, 'P', 'N', 'G', 13, 10, 26, 10};
    size_t at = 0;
    while (n - at >= 8 && memcmp(buf + at, sig, 8) == 0) {
        at += 8;
        for (;;) {
            if (n - at < 12)
                return;
            uint32_t len = png_be32(buf + at);
            if (len > n - at - 12)
                return;
            uint32_t crc = (uint32_t)crc32(0, buf + at + 4, (uInt)len + 4);
            uint8_t *c = buf + at + 8 + len;
            c[0] = (uint8_t)(crc >> 24), c[1] = (uint8_t)(crc >> 16), c[2] = (uint8_t)(crc >> 8), c[3] = (uint8_t)crc;
            int end = memcmp(buf + at + 4, "IEND", 4) == 0;
            at += 12 + (size_t)len;
            if (end)
                break;
        }
    }
}

/* A malloc'd copy of in with its PNG chunk CRCs fixed (free it); NULL when
 * out of memory. */
static inline uint8_t *png_fixed_copy(const uint8_t *in, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d) {
        memcpy(d, in, n);
        png_fix_crcs(d, n);
    }
    return d;
}

#endif
