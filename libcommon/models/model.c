/* model.c - see model.h */
#include "libcommon/models/model_file.h"

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
                       uc_model_info *info)
{
    st_file *f = st_open(path);
    if (!f)
        return NULL;
    const char *got = st_meta(f, "unclip.stage"), *text = st_meta(f, "unclip.config");
    cJSON *cfg = NULL;
    uc_model_info got_info;
    if (!got || strcmp(got, stage)) {
        uc_err("%s: %s%.64s%s model, not %s model", path, got ? "a " : "", got ? got : "an unknown",
               got ? "" : " (no unclip.stage)", what);
    } else if (!text || !(cfg = cJSON_Parse(text))) {
        uc_err("%s: metadata unclip.config missing or not JSON", path);
    } else if (uc_model_info_fill(f, stage, &got_info) == 0 && load(model, f, cfg) == 0) {
        cJSON_Delete(cfg);
        *info = got_info; /* after load, which may clear the model holding info */
        return f;
    } else {
        uc_err_prefix("%s", path);
    }
    cJSON_Delete(cfg);
    st_close(f);
    return NULL;
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

int uc_model_info_fill(const st_file *f, const char *stage, uc_model_info *info)
{
    memset(info, 0, sizeof *info);
    info->stage = stage;
    info->path = st_path(f);
    const char *slash = strrchr(info->path, '/');
    info->id = st_meta(f, "unclip.model_id") ? st_meta(f, "unclip.model_id")
               : slash && slash[1]              ? slash + 1
                                                : info->path;
    const char *meta = st_meta(f, "unclip.checksum");
    size_t len;
    const unsigned char *hdr = st_header(f, &len);
    if (meta)
        snprintf(info->checksum, sizeof info->checksum, "%s", meta);
    else
        snprintf(info->checksum, sizeof info->checksum, "fnv1a64:%016llx",
                 (unsigned long long)uc_fnv1a(hdr, len, UC_FNV_INIT));
    double k;
    if (meta_number(f, "unclip.default_guidance", 0, 1, 1000, 0, 0, &info->default_guidance) ||
        meta_number(f, "unclip.default_best_of", 1, 0, 64, 1, 0, &k))
        return -1;
    info->default_best_of = (int)k;
    if (meta_number(f, "unclip.default_tile", 1, 0, 4096, 1, 0, &k))
        return -1;
    info->default_tile = (int)k;
    info->vocabulary = st_meta(f, "unclip.vocabulary");
    return 0;
}

/* ---- config helpers ---- */

/* An integer in -1e6..1e6 (checked before any conversion: casting a double
 * outside int's range is undefined). */
static int small_int(double x) { return x >= -1e6 && x <= 1e6 && x == floor(x); }

int uc_cfg_int_list(const cJSON *v, const char *what, int *out, int max)
{
    int n = 0;
    if (cJSON_IsNumber(v)) {
        if (!small_int(v->valuedouble))
            return uc_err("config %s: %g is not an integer", what, v->valuedouble);
        out[0] = (int)v->valuedouble;
        return max < 1 ? uc_err("config %s: too many entries", what) : 1;
    }
    if (cJSON_IsArray(v)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v)
        {
            if (n >= max)
                return uc_err("config %s: more than %d entries", what, max);
            if (!cJSON_IsNumber(e) || !small_int(e->valuedouble))
                return uc_err("config %s: entry %d is not an integer", what, n + 1);
            out[n++] = (int)e->valuedouble;
        }
        return n;
    }
    if (!cJSON_IsString(v))
        return uc_err("config %s: expected a list of integers", what);
    const char *s = v->valuestring;
    while (*s) {
        char *end;
        while (*s == ' ')
            s++;
        long x = strtol(s, &end, 10);
        if (end == s || x < -1000000 || x > 1000000)
            return uc_err("config %s: \"%s\" is not a list of integers", what, v->valuestring);
        if (n >= max)
            return uc_err("config %s: more than %d entries", what, max);
        out[n++] = (int)x;
        s = end;
        while (*s == ' ')
            s++;
        if (*s == ',')
            s++;
        else if (*s)
            return uc_err("config %s: \"%s\" is not a list of integers", what, v->valuestring);
    }
    return n;
}

int uc_cfg_int(const cJSON *obj, const char *key, int dflt, int lo, int hi, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) {
        *out = dflt;
        return 0;
    }
    double x;
    if (cJSON_IsBool(v))
        x = cJSON_IsTrue(v);
    else if (cJSON_IsNumber(v))
        x = v->valuedouble;
    else
        return uc_err("config %s: expected a number", key);
    if (!(x >= lo && x <= hi) || x != floor(x))
        return uc_err("config %s: %g is not an integer in %d..%d", key, x, lo, hi);
    *out = (int)x;
    return 0;
}
