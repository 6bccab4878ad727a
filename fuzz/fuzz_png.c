#define _GNU_SOURCE
/* fuzz_png - PNG reading with its size limits, text chunks and palette. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/png.h"
#include "png_crc.h"

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    uint8_t *data = png_fixed_copy(in, size);
    if (!data)
        return 0;
    for (int keep = 0; keep < 2; keep++) {
        FILE *f = fmemopen(data, size, "rb");
        if (!f)
            break;
        uc_image img;
        if (uc_png_read(f, "fuzz", 0, keep, &img) == 0)
            uc_image_free(&img);
        fclose(f);
    }
    free(data);
    return 0;
}
