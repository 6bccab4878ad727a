/* model.c - see model.h */
#include "libcommon/models/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"

int uc_model_sections(const cJSON *config, const char *stage, const cJSON **hparams, const cJSON **diffusion)
{
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(config, "model");
    *diffusion = cJSON_GetObjectItemCaseSensitive(config, "diffusion");
    *hparams = cJSON_GetObjectItemCaseSensitive(model, "hparams");
    if (!cJSON_IsObject(*diffusion))
        return uc_err("%s config: diffusion section missing", stage);
    return 0;
}

st_file *uc_model_open(const char *path, const char *stage, const char *what, uc_model_load_fn load, void *model,
                       const char **id, const char **checksum)
{
    st_file *f = st_open(path);
    if (!f)
        return NULL;
    const char *got = st_meta(f, "unclip.stage"), *text = st_meta(f, "unclip.config");
    cJSON *cfg = NULL;
    if (!got || strcmp(got, stage)) {
        uc_err("%s: %s%.64s%s model, not %s model", path, got ? "a " : "", got ? got : "an unknown",
               got ? "" : " (no unclip.stage)", what);
    } else if (!text || !(cfg = cJSON_Parse(text))) {
        uc_err("%s: metadata unclip.config missing or not JSON", path);
    } else if (load(model, f, cfg) == 0) {
        cJSON_Delete(cfg);
        *id = st_meta(f, "unclip.model_id") ? st_meta(f, "unclip.model_id") : st_path(f);
        *checksum = st_meta(f, "unclip.checksum") ? st_meta(f, "unclip.checksum") : "";
        return f;
    } else {
        uc_err_prefix("%s", path);
    }
    cJSON_Delete(cfg);
    st_close(f);
    return NULL;
}

void uc_model_checksum(const st_file *f, char *out, size_t n)
{
    const char *meta = st_meta(f, "unclip.checksum");
    size_t len;
    const unsigned char *hdr = st_header(f, &len);
    if (meta)
        snprintf(out, n, "%s", meta);
    else
        snprintf(out, n, "fnv1a64:%016llx", (unsigned long long)uc_fnv1a(hdr, len, UC_FNV_INIT));
}

/* Metadata key of f as a number in [lo, hi] ((lo, hi] when open; an
 * integer when integer), or fallback when absent. */
static int meta_number(const st_file *f, const char *key, double lo, int open, double hi, int integer,
                       double fallback, double *out)
{
    const char *v = st_meta(f, key);
    *out = fallback;
    if (!v)
        return 0;
    char *end;
    double x = strtod(v, &end);
    if (end == v || *end || !isfinite(x) || x < lo || (open && x == lo) || x > hi || (integer && x != floor(x)))
        return uc_err("%s: metadata %s '%.32s' is not %s in %c%g, %g]", st_path(f), key, v,
                      integer ? "an integer" : "a number", open ? '(' : '[', lo, hi);
    *out = x;
    return 0;
}

int uc_model_guidance(const st_file *f, double fallback, double *guidance)
{
    return meta_number(f, "unclip.default_guidance", 0, 1, 1000, 0, fallback, guidance);
}

int uc_model_best_of(const st_file *f, long *best_of)
{
    double k;
    if (meta_number(f, "unclip.default_best_of", 1, 0, 64, 1, 1, &k))
        return -1;
    *best_of = (long)k;
    return 0;
}
