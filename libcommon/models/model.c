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
    } else if (uc_model_info_fill(f, stage, &got_info)) {
        /* the message names the file and the key */
    } else if (load(model, f, cfg) == 0) {
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

static int verify_on;

void uc_model_verify(int on) { verify_on = on; }

static int by_name(const void *a, const void *b)
{
    return strcmp((*(const st_entry *const *)a)->name, (*(const st_entry *const *)b)->name);
}

/* The SHA-256 of f's tensor data in name order, as "sha256:" + hex. */
static void data_digest(const st_file *f, char *out, size_t n)
{
    int k = st_count(f);
    const st_entry **e = uc_alloc((size_t)k + 1, sizeof *e);
    for (int i = 0; i < k; i++)
        e[i] = st_at(f, i);
    qsort(e, (size_t)k, sizeof *e, by_name);
    uc_sha256 s;
    uc_sha256_init(&s);
    for (int i = 0; i < k; i++)
        uc_sha256_update(&s, e[i]->t.data, e[i]->t.nbytes);
    uc_free(e);
    unsigned char d[32];
    uc_sha256_final(&s, d);
    size_t at = (size_t)snprintf(out, n, "sha256:");
    for (int i = 0; i < 32 && at + 2 < n; i++, at += 2)
        snprintf(out + at, n - at, "%02x", d[i]);
}

/* unclip.clip: 1 to 16 entries of 1 to 200 printable ASCII characters,
 * separated by single spaces. */
static int check_pairing(const st_file *f, const char *v)
{
    int entries = 0;
    const char *p = v;
    while (*p) {
        const char *q = p;
        while (*q > ' ' && *q < 127)
            q++;
        if (q == p || q - p > 200 || (*q && (*q != ' ' || !q[1])) || ++entries > 16)
            return uc_err("%s: metadata unclip.clip '%.64s': not 1 to 16 CLIP model ids or checksums (printable, "
                          "at most 200 characters each) separated by single spaces",
                          st_path(f), v);
        p = *q ? q + 1 : q;
    }
    return entries ? 0 : uc_err("%s: metadata unclip.clip: empty (leave the key out to declare no CLIP)", st_path(f));
}

int uc_model_pairs(const uc_model_info *m, const char *clip_id, const char *clip_checksum)
{
    if (!m->clip)
        return 1;
    for (const char *p = m->clip; *p;) {
        size_t n = strcspn(p, " ");
        if ((clip_id && strlen(clip_id) == n && !strncmp(p, clip_id, n)) ||
            (clip_checksum && strlen(clip_checksum) == n && !strncmp(p, clip_checksum, n)))
            return 1;
        p += n + (p[n] == ' ');
    }
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
    info->clip = st_meta(f, "unclip.clip");
    if (info->clip && check_pairing(f, info->clip))
        return -1;
    if (verify_on) {
        char got[80];
        data_digest(f, got, sizeof got);
        if (meta && strcmp(meta, got))
            return uc_err("%s: metadata unclip.checksum %.80s, but the SHA-256 of the tensor data is %s", st_path(f),
                          meta, got);
        snprintf(info->checksum, sizeof info->checksum, "%s", got);
        info->verified = 1;
    }
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
