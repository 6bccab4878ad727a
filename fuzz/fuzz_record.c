/* fuzz_record - the record reader and every getter on whatever it accepts. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "formats/record.h"
#include "formats/base.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rec_reader *rd = rec_reader_mem(data, size, "fuzz");
    rec *r;
    while (rec_read(rd, &r) == 1) {
        for (int i = 0; i < rec_count(r); i++) {
            const char *k = rec_key_at(r, i);
            uc_tensor t;
            uint64_t u;
            double d;
            if (rec_get_tensor(r, k, &t) == 0) {
                float *x = rec_get_f32(r, k, t.ndim, NULL, NULL);
                uc_free(x);
            }
            (void)rec_get_str(r, k);
            (void)rec_get_u64(r, k, &u);
            (void)rec_get_f64(r, k, &d);
            rec *m = rec_get_map(r, k);
            rec_free(m);
        }
        FILE *null = fopen("/dev/null", "w");
        rec_dump_json(r, null, (int)(size & 1)); /* --full (values streamed) for odd sizes */
        fclose(null);
        char *buf;
        size_t n;
        rec_encode(r, &buf, &n);
        free(buf);
        rec_free(r);
    }
    rec_reader_free(rd);
    return 0;
}
