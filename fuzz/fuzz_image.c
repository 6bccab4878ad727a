#define _GNU_SOURCE /* memfd_create, fmemopen */
/* fuzz_image - the input of the image stages: a stream of PNGs or of
 * records told apart by its first bytes (uc_image_reader), the record an
 * unclip PNG carries in its text chunk (uc_record_from_png), writing each
 * image back as a PNG with its provenance (which reads hostile params and
 * models maps), and CLIP's preprocessing of a PNG read with its palette
 * kept (clip-encode --image). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "formats/png.h"
#include "libcommon/image/preprocess.h"
#include "libcommon/image/imageio.h"
#include "png_crc.h"

static FILE *devnull;

static void run(uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *in, size_t size)
{
    uint8_t *data = png_fixed_copy(in, size);
    if (!data)
        return 0;
    run(data, size);
    free(data);
    return 0;
}

static void run(uint8_t *data, size_t size)
{
    if (!devnull && !(devnull = fopen("/dev/null", "wb")))
        abort();
    int fd = memfd_create("fuzz-image", 0);
    if (fd < 0)
        return;
    if (write(fd, data, size) != (ssize_t)size || lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return;
    }
    uc_image_reader *ir = uc_image_reader_open(fd, "fuzz");
    rec *r;
    while (uc_image_reader_next(ir, &r) == 1) {
        uc_write_png_record(devnull, r);
        rec_free(r);
    }
    uc_image_reader_free(ir);
    close(fd);

    if (size >= 8 && uc_png_sig(data)) {
        FILE *f = fmemopen(data, size, "rb");
        uc_image img;
        if (f && uc_png_read(f, "fuzz", 0, 1, &img) == 0) {
            if ((size_t)img.w * (size_t)img.h <= ((size_t)1 << 20)) {
                float px[3 * 16 * 16];
                clip_preprocess(&img, 16, NULL, NULL, px);
            }
            uc_image_free(&img);
        }
        if (f)
            fclose(f);
    }
}
