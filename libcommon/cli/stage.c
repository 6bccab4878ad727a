/* stage.c - see stage.h */
#include "libcommon/cli/stage.h"

#include <math.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/nn/cpu.h"
#include "libcommon/sample/emb.h"

/* ---- options ---- */

const char *uc_parse_steps(const uc_cli *c, const char *arg)
{
    if (strlen(arg) > UC_RESPACING_MAX)
        uc_die(c, UC_EXIT_USAGE, "--steps: longer than %d characters", UC_RESPACING_MAX);
    if (!*arg) /* an empty respacing would mean every step of the base process */
        uc_die(c, UC_EXIT_USAGE, "--steps: empty");
    return arg;
}

double uc_parse_guidance(const uc_cli *c, const char *arg)
{
    double g = uc_parse_double(c, "--guidance", arg);
    if (!(g > 0) || g > 1e6)
        uc_die(c, UC_EXIT_USAGE, "--guidance: '%s' is not a scale in (0, 1e6]", arg);
    return g;
}

uc_sampler uc_parse_sampler(const uc_cli *c, const char *arg)
{
    if (!strcmp(arg, "ddpm"))
        return UC_SAMPLER_DDPM;
    if (!strcmp(arg, "ddim"))
        return UC_SAMPLER_DDIM;
    if (!strcmp(arg, "dpm++2m"))
        return UC_SAMPLER_DPMPP_2M;
    uc_die(c, UC_EXIT_USAGE, "--sampler: '%s' is not ddpm, ddim or dpm++2m", arg);
}

/* ---- seeds ---- */

uint64_t uc_record_seed(const uc_cli *c, const rec *r, const char *src)
{
    uint64_t seed = 0;
    if (c->seed_set)
        seed = c->seed;
    else if (rec_has(r, "seed") && rec_get_u64(r, "seed", &seed))
        uc_die(c, UC_EXIT_DATA, "%s: %s", src, uc_errmsg());
    return seed;
}

static uint64_t splitmix(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Noise keys are kept to 53 bits, so that JSON tools (jq) show them exactly. */
static uint64_t key53(uint64_t k) { return k & ((1ull << 53) - 1); }

uint64_t uc_record_noise_key(const uc_cli *c, const rec *r, const char *src)
{
    uint64_t key;
    if (rec_has(r, "noise_key")) {
        if (rec_get_u64(r, "noise_key", &key))
            uc_die(c, UC_EXIT_DATA, "%s: %s", src, uc_errmsg());
        return key;
    }
    /* a record born outside unclip: a key from what it is */
    static const char *const fields[] = {"prompt", "image", "image_emb", "text_emb"};
    for (size_t i = 0; i < UC_COUNT(fields); i++) {
        if (!rec_has(r, fields[i]))
            continue;
        uc_tensor t;
        const char *s = i == 0 ? rec_get_str(r, fields[i]) : NULL;
        if (s)
            return key53(uc_fnv1a(s, strlen(s), UC_FNV_INIT));
        if (i > 0 && rec_get_tensor(r, fields[i], &t) == 0)
            return key53(uc_fnv1a(t.data, t.nbytes, UC_FNV_INIT));
        uc_die(c, UC_EXIT_DATA, "%s: %s", src, uc_errmsg());
    }
    return 0;
}

uint64_t uc_noise_key_text(const char *prompt, const char *negative)
{
    uint64_t h = uc_fnv1a(prompt, strlen(prompt), UC_FNV_INIT);
    h = uc_fnv1a("", 1, h); /* the NUL between the two */
    return key53(uc_fnv1a(negative, strlen(negative), h));
}

uint64_t uc_noise_key_bytes(const void *data, size_t n) { return key53(uc_fnv1a(data, n, UC_FNV_INIT)); }

static uint64_t str_key(const char *s) { return uc_fnv1a(s, strlen(s), UC_FNV_INIT); }

uint64_t uc_stage_key(uint64_t seed, uint64_t noise_key, const char *stage)
{
    return splitmix(splitmix(splitmix(seed) ^ noise_key) ^ str_key(stage));
}

uint64_t uc_output_noise_key(uint64_t noise_key, const char *stage, uint64_t i)
{
    return key53(splitmix(splitmix(noise_key ^ str_key(stage)) + i));
}

void uc_set_draw(const uc_cli *c, rec *params, uint64_t seed, uint64_t noise_key, uint64_t index)
{
    rec_set_u64(params, "threads", (uint64_t)c->threads); /* sums split by thread differ in the last bits */
    rec_set_str(params, "cpu", uc_cpu_name(uc_cpu_level())); /* and so do kernels of another level */
    rec_set_u64(params, "seed", seed);
    rec_set_u64(params, "noise_key", noise_key);
    rec_set_u64(params, "index", index);
}

/* ---- inputs ---- */

void uc_inputs_init(uc_inputs *in, const uc_cli *c, int n, char **names, int images)
{
    static char *std_in[] = {"-"};
    memset(in, 0, sizeof *in);
    in->cli = c;
    in->names = n ? names : std_in;
    in->n = n ? n : 1;
    in->images = images;
}

void uc_input_rest(const uc_cli *c, uc_image_reader *ir, const char *src, const char *one)
{
    rec *r;
    int got;
    while ((got = uc_image_reader_next(ir, &r)) == 1) {
        long n = rec_number(r);
        rec_free(r);
        if (one)
            uc_die(c, UC_EXIT_DATA, "%s: more than one %s (%s %ld follows; %s)", src,
                   uc_image_reader_pngs(ir) == 1 ? "picture" : "record", uc_image_reader_pngs(ir) == 1 ? "image" : "record",
                   n, one);
    }
    if (got < 0)
        uc_die(c, UC_EXIT_DATA, "%s (after the records used)", uc_errmsg());
}

rec *uc_inputs_next(uc_inputs *in)
{
    rec_free(in->r);
    in->r = NULL;
    for (;;) {
        if (!in->rr && !in->ir) {
            if (in->next == in->n)
                return NULL;
            const char *name = in->names[in->next++];
            in->src = strcmp(name, "-") ? name : "stdin";
            in->first = in->ordinal;
            if (!in->images)
                in->rr = uc_open_records(in->cli, name);
            else if (!(in->ir = uc_image_reader_open_path(name)))
                uc_die_err(in->cli);
        }
        int got = in->images ? uc_image_reader_next(in->ir, &in->r) : rec_read(in->rr, &in->r);
        if (got == 1) {
            in->ordinal++;
            /* the text a stage carries on: checked here, not found bad
             * when the output is written */
            static const char *const text[] = {"prompt", "negative_prompt", "source"};
            for (size_t i = 0; i < UC_COUNT(text); i++)
                if (rec_has(in->r, text[i]) && !rec_get_str(in->r, text[i]))
                    uc_die(in->cli, UC_EXIT_DATA, "%s: %s", in->src, uc_errmsg());
            return in->r;
        }
        if (got < 0)
            uc_die_err(in->cli);
        if (in->ordinal == in->first) /* an upstream stage that failed leaves nothing */
            uc_die(in->cli, UC_EXIT_DATA, "%s: empty input (no %s)", in->src,
                   in->images ? "images or records" : "records");
        rec_reader_free(in->rr);
        uc_image_reader_free(in->ir);
        in->rr = NULL;
        in->ir = NULL;
    }
}

/* ---- text conditioning ---- */

float *uc_field_f32(const rec *r, const char *src, const char *pre, const char *key, int ndim, const int64_t *want,
                    const char *model)
{
    uc_tensor t, w = {.ndim = ndim};
    char got[96], need[96];
    if (!rec_has(r, key)) {
        uc_err("%s: record %ld field %s%s: missing", src, rec_number(r), pre, key);
        return NULL;
    }
    if (rec_get_tensor(r, key, &t)) {
        uc_err_prefix("%s", src);
        return NULL;
    }
    memcpy(w.shape, want, (size_t)ndim * sizeof *want);
    if (!uc_tensor_shape_is(&t, ndim, want)) {
        uc_err("%s: record %ld field %s%s: shape %s, but the %s model needs %s", src, rec_number(r), pre, key,
               uc_shape_str(&t, got, sizeof got), model, uc_shape_str(&w, need, sizeof need));
        return NULL;
    }
    float *x = rec_get_f32(r, key, ndim, want, NULL);
    if (!x)
        uc_err_prefix("%s", src);
    return x;
}

static int get_text(const rec *r, const char *src, const char *pre, const char *model, int64_t D, int64_t T,
                    int64_t W, uc_text_in *t)
{
    memset(t, 0, sizeof *t);
    t->emb = uc_field_f32(r, src, pre, "text_emb", 1, &D, model);
    t->seq = t->emb ? uc_field_f32(r, src, pre, "text_seq", 2, (int64_t[]){T, W}, model) : NULL;
    if (!t->seq)
        return -1;
    uc_tensor m;
    char got[96];
    if (!rec_has(r, "token_mask"))
        return uc_err("%s: record %ld field %stoken_mask: missing", src, rec_number(r), pre);
    if (rec_get_tensor(r, "token_mask", &m))
        return uc_err_prefix("%s", src);
    if (m.dtype == UC_F32 || m.dtype == UC_F16 || m.dtype == UC_BF16 || m.dtype == UC_F64)
        return uc_err("%s: record %ld field %stoken_mask: dtype %s, expected U8", src, rec_number(r), pre,
                      uc_dtype_name(m.dtype));
    if (!uc_tensor_shape_is(&m, 1, &T))
        return uc_err("%s: record %ld field %stoken_mask: shape %s, but the %s model needs [%lld]", src,
                      rec_number(r), pre, uc_shape_str(&m, got, sizeof got), model, (long long)T);
    int64_t *v = uc_alloc((size_t)T, sizeof *v);
    uc_tensor_to_i64(&m, v);
    t->mask = uc_alloc((size_t)T, 1);
    int rc = 0;
    for (int64_t i = 0; i < T && !rc; i++) {
        if (v[i] != 0 && v[i] != 1)
            rc = uc_err("%s: record %ld field %stoken_mask: value %lld at %lld is not 0 or 1", src, rec_number(r),
                        pre, (long long)v[i], (long long)i);
        t->mask[i] = (unsigned char)v[i];
    }
    uc_free(v);
    return rc;
}

void uc_text_pair(const uc_cli *c, const rec *r, const char *src, const char *model, int64_t D, int64_t T, int64_t W,
                  uc_text_in *cond, uc_text_in *uncond)
{
    if (get_text(r, src, "", model, D, T, W, cond))
        uc_die_err(c);
    if (!rec_has(r, "uncond"))
        uc_die(c, UC_EXIT_DATA, "%s: record %ld field uncond: missing (clip-encode writes it)", src, rec_number(r));
    rec *um = rec_get_map(r, "uncond");
    if (!um)
        uc_die(c, UC_EXIT_DATA, "%s: %s", src, uc_errmsg());
    if (get_text(um, src, "uncond.", model, D, T, W, uncond))
        uc_die_err(c);
    rec_free(um);
}

void uc_text_in_free(uc_text_in *t)
{
    uc_free(t->emb);
    uc_free(t->seq);
    uc_free(t->mask);
}

/* ---- outputs ---- */

void uc_set_model(rec *out, const char *stage, const char *id, const char *checksum)
{
    rec *m = rec_new();
    rec_del(m, "version");
    rec_set_str(m, "id", id);
    if (checksum)
        rec_set_str(m, "checksum", checksum);
    rec_set_stage(out, "models", stage, m);
    rec_free(m);
}

void uc_set_model_info(rec *out, const char *stage, const uc_model_info *m)
{
    rec *x = rec_new();
    rec_del(x, "version");
    rec_set_str(x, "id", m->id);
    rec_set_str(x, "checksum", m->checksum);
    if (m->verified)
        rec_set_str(x, "verified", "sha256");
    rec_set_stage(out, "models", stage, x);
    rec_free(x);
}

/* ---- the CLIP that made a record's embeddings ---- */

void uc_get_record_clip(const uc_cli *c, const rec *r, const char *src, uc_record_clip *out)
{
    memset(out, 0, sizeof *out);
    if (!rec_has(r, "models"))
        return;
    rec *models = rec_get_map(r, "models"), *clip = NULL;
    if (!models)
        uc_die(c, UC_EXIT_DATA, "%s: %s", src, uc_errmsg());
    if (rec_has(models, "clip") && !(clip = rec_get_map(models, "clip")))
        uc_die(c, UC_EXIT_DATA, "%s: record %ld field models.clip: not a map", src, rec_number(r));
    if (clip) {
        static const char *const keys[2] = {"id", "checksum"};
        char *dst[2] = {out->id, out->checksum};
        size_t cap[2] = {sizeof out->id, sizeof out->checksum};
        for (int k = 0; k < 2; k++) {
            if (!rec_has(clip, keys[k]))
                continue;
            const char *v = rec_get_str(clip, keys[k]);
            if (!v || strlen(v) >= cap[k])
                uc_die(c, UC_EXIT_DATA, "%s: record %ld field models.clip.%s: not a string of at most %zu bytes", src,
                       rec_number(r), keys[k], cap[k] - 1);
            memcpy(dst[k], v, strlen(v) + 1);
        }
        out->known = 1;
    }
    rec_free(clip);
    rec_free(models);
}

/* "ID (CHECKSUM)" of a record's CLIP, for messages (one line: control
 * characters shown as '?'). */
static const char *clip_name(const uc_record_clip *k, char *buf, size_t n)
{
    snprintf(buf, n, "%.100s (%.80s)", *k->id ? k->id : "no id", *k->checksum ? k->checksum : "no checksum");
    for (char *p = buf; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';
    return buf;
}

void uc_check_pairing(const uc_cli *c, const rec *r, const char *src, const uc_model_info *m)
{
    if (c->any_clip || !m->clip)
        return;
    uc_record_clip k;
    uc_get_record_clip(c, r, src, &k);
    char a[200];
    if (!k.known)
        uc_die(c, UC_EXIT_DATA,
               "%s: record %ld field models.clip: missing, so the CLIP that made its embeddings is unknown; %s pairs "
               "with %.200s (--any-clip to use it anyway)",
               src, rec_number(r), m->path, m->clip);
    if (!uc_model_pairs(m, *k.id ? k.id : NULL, *k.checksum ? k.checksum : NULL))
        uc_die(c, UC_EXIT_DATA,
               "%s: record %ld field models.clip: made by CLIP %s, but %s pairs with %.200s (--any-clip to use it "
               "anyway)",
               src, rec_number(r), clip_name(&k, a, sizeof a), m->path, m->clip);
}

void uc_check_same_clip(const uc_cli *c, const rec *a, const char *src_a, const rec *b, const char *src_b)
{
    if (c->any_clip)
        return;
    uc_record_clip ka, kb;
    uc_get_record_clip(c, a, src_a, &ka);
    uc_get_record_clip(c, b, src_b, &kb);
    if (!ka.known && !kb.known)
        return;
    char na[200], nb[200];
    if (!ka.known || !kb.known) {
        int miss_b = !kb.known;
        uc_die(c, UC_EXIT_DATA,
               "%s: record %ld field models.clip: missing, so the CLIP that made its embeddings is unknown; %s "
               "record %ld is from CLIP %s (--any-clip to mix them anyway)",
               miss_b ? src_b : src_a, rec_number(miss_b ? b : a), miss_b ? src_a : src_b, rec_number(miss_b ? a : b),
               clip_name(miss_b ? &ka : &kb, na, sizeof na));
    }
    if (strcmp(ka.checksum, kb.checksum))
        uc_die(c, UC_EXIT_DATA,
               "%s: record %ld field models.clip: made by CLIP %s, but %s record %ld by CLIP %s: embeddings of two "
               "CLIPs do not mix (--any-clip to mix them anyway)",
               src_b, rec_number(b), clip_name(&kb, nb, sizeof nb), src_a, rec_number(a), clip_name(&ka, na, sizeof na));
}

void uc_check_finite(const uc_cli *c, const char *src, const rec *r, const char *field, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            uc_die(c, UC_EXIT_DATA,
                   "%s: record %ld field %s: %s computed %s at element %lld (an input far out of range, or a "
                   "damaged model)",
                   src, rec_number(r), field, c->tool, isnan(x[i]) ? "NaN" : "an infinity", (long long)i);
}

rec *uc_emb_record(const rec *base, const rec *text, const float *e, int64_t n)
{
    rec *out = rec_clone(base);
    if (text)
        uc_emb_take_text(out, text);
    rec_del(out, "image");
    rec_del(out, "image_f32");
    rec_del(out, "source");
    rec_set_tensor(out, "image_emb", UC_F32, 1, &n, e);
    return out;
}

void uc_emit_record(const uc_cli *c, rec *out)
{
    rec_history_add(out, c->tool, c->argc, c->argv);
    if (rec_write(out, stdout))
        uc_die_err(c);
    rec_free(out);
}

int uc_image_out_option(uc_image_out *o, const uc_cli *c, int opt, const char *arg)
{
    switch (opt) {
    case 'f':
        if (!strcmp(arg, "png"))
            o->format = UC_OUT_PNG;
        else if (!strcmp(arg, "record"))
            o->format = UC_OUT_RECORD;
        else
            uc_die(c, UC_EXIT_USAGE, "--format: '%s' is not png or record", arg);
        return 1;
    case UC_OPT_FLOAT: o->want_float = 1; return 1;
    case 'o': o->path = strcmp(arg, "-") ? arg : NULL; return 1; /* -o -: standard output */
    default: return 0;
    }
}

void uc_image_out_check(const uc_image_out *o, const uc_cli *c)
{
    if (!o->path)
        return;
    if (o->format == UC_OUT_PNG && strchr(o->path, '%')) {
        char probe[4096];
        uc_out_pattern(c, o->path, 0, probe, sizeof probe); /* exits unless one %d */
    }
    uc_out_dir_check(c, o->path);
}

void uc_image_out_open(uc_image_out *o, const uc_cli *c)
{
    o->f = stdout;
    if (o->path && o->format == UC_OUT_RECORD)
        o->f = uc_out_open(c, o->path);
}

void uc_image_out_emit(uc_image_out *o, const uc_cli *c, rec *out)
{
    rec_history_add(out, c->tool, c->argc, c->argv);
    if (o->format == UC_OUT_RECORD) {
        if (rec_write(out, o->f))
            uc_die(c, UC_EXIT_DATA, "%s: %s", o->path ? o->path : "stdout", uc_errmsg());
    } else {
        FILE *f = stdout;
        char path[4096];
        int plain = o->path && !strchr(o->path, '%'); /* one picture, kept until close */
        if (plain && o->n > 0)
            uc_die(c, UC_EXIT_USAGE, "-o %s: more than one picture; give a pattern with %%d (img-%%d.png)", o->path);
        if (plain) {
            snprintf(path, sizeof path, "%s", o->path);
            f = o->f = uc_out_open(c, path);
        } else if (o->path) {
            uc_out_pattern(c, o->path, o->n, path, sizeof path);
            f = uc_out_open(c, path);
        }
        if (uc_write_png_record(f, out))
            uc_die(c, UC_EXIT_DATA, "%s: %s", o->path ? path : "stdout", uc_errmsg());
        if (o->path && !plain)
            uc_out_commit(c, f);
    }
    o->n++;
    rec_free(out);
}

void uc_image_out_close(uc_image_out *o, const uc_cli *c)
{
    if (o->path && (o->format == UC_OUT_RECORD || (!strchr(o->path, '%') && o->n > 0)))
        uc_out_commit(c, o->f);
}

/* ---- progress ---- */

void uc_step_progress_fn(void *ctx, int done, int total)
{
    uc_step_progress *p = ctx;
    uc_progress(p->cli, p->label, done, total);
}
