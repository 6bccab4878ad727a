#define _GNU_SOURCE
/* fuzz_png - PNG reading with its size limits, text chunks and palette. */
#include <stdint.h>
#include <stdio.h>

#include "../formats/png.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int keep = 0; keep < 2; keep++) {
        FILE *f = fmemopen((void *)data, size, "rb");
        if (!f)
            return 0;
        uc_image img;
        if (uc_png_read(f, "fuzz", 0, keep, &img) == 0)
            uc_image_free(&img);
        fclose(f);
    }
    return 0;
}
