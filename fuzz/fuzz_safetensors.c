/* fuzz_safetensors - header parsing, offset and overlap checks, and reading
 * every tensor the parser accepted. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "formats/safetensors.h"
#include "formats/base.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/fuzz-st-%d", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f)
        return 0;
    fwrite(data, 1, size, f);
    fclose(f);
    st_file *s = st_open(path);
    if (s) {
        for (int i = 0; i < st_count(s); i++) {
            const st_entry *e = st_at(s, i);
            const float *x = st_f32(s, e->name, -1, NULL);
            if (x && uc_tensor_numel(&e->t) > 0) {
                volatile float sink = x[uc_tensor_numel(&e->t) - 1];
                (void)sink;
            }
        }
        for (int i = 0; i < st_meta_count(s); i++) {
            const char *k, *v;
            st_meta_at(s, i, &k, &v);
        }
        st_close(s);
    }
    unlink(path);
    return 0;
}
