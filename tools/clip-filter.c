/* clip-filter - a content filter stage: each record (or PNG) is scored with
 * CLIP against the concepts of a policy file, and dropped, blanked, tagged
 * or passed on. Scores go into the record's filter field. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/base.h"
#include "formats/record.h"
#include "libcommon/cli/cli.h"
#include "libcommon/cli/clipfilter.h"
#include "libcommon/cli/stage.h"
#include "libcommon/image/imageio.h"
#include "libcommon/models/clip.h"

static const char usage[] =
    "Usage: clip-filter -p POLICY [OPTION]... [FILE]...\n"
    "  or:  clip-filter -p POLICY --calibrate LABELS [OPTION]... [FILE]...\n"
    "Score each record or PNG of the FILEs (default: standard input) with CLIP\n"
    "against the concepts of POLICY, and drop, blank, tag or pass it on.\n"
    "Records after clip-encode are scored by text_emb, after prior-sample by\n"
    "image_emb, after decoder-diffuse or upsample by the picture itself (CLIP's\n"
    "image encoder). PNGs in give PNGs out, records give records.\n"
    "\n"
    "  -p, --policy FILE     the policy: one rule a line, ACTION POINT=THRESHOLD...\n"
    "                        CONCEPT[|CONCEPT]... [vs CONTRAST[|CONTRAST]...]\n"
    "                        where {x,y} in a concept stands for x and for y, and\n"
    "                        @PATH is a PNG or record (see clip-filter(1)); text\n"
    "                        concepts are cached in FILE.cache.rec, keyed by\n"
    "                        the CLIP checksum\n"
    "      --at POINT        what to score: text (text_emb), emb (image_emb),\n"
    "                        image (the picture) or auto (default: the picture\n"
    "                        when there is one, else image_emb, else text_emb)\n"
    "  -f, --format FMT      png or record (default: what the first input is)\n"
    "      --calibrate LABELS  print, for each rule, the scores of items labelled\n"
    "                        allowed or blocked and the threshold that separates\n"
    "                        them best; LABELS has a line 'allowed TEXT' or\n"
    "                        'blocked TEXT' per item: with FILEs the i-th line\n"
    "                        labels the i-th record, without them TEXT is a prompt\n"
    "      --no-cache        neither read nor write the concept cache\n"
    "      --any-clip        score embeddings of records that another CLIP made\n"
    "                        (models.clip.checksum not this CLIP's)\n"
    "  -m, --model FILE      CLIP model (default: clip.safetensors)\n"
    "  -t, --threads N       threads (default: all cores)\n"
    "  -s, --seed N          accepted for uniformity; nothing random is drawn\n"
    "  -q, --quiet           no messages but errors (no line per dropped record)\n"
    "  -v, --verbose         more messages\n"
    "  -h, --help            this help\n"
    "  -V, --version         version\n"
    "\n"
    "A rule's score is the largest cosine similarity between the record's\n"
    "embedding and its CONCEPTs, less the largest with its CONTRASTs; the rule\n"
    "hits when the score reaches its threshold at the record's point. drop: the\n"
    "record is not passed on (one line on standard error); blank: its picture\n"
    "becomes flat black (a record without a picture is dropped); tag: passed on\n"
    "with the hit recorded. Every record passed on gets filter.POINT {policy,\n"
    "checksum, clip, verdict, line, concept, contrast, score, threshold, reason,\n"
    "scores}: concept and contrast are the deciding rule's nearest.\n"
    "Exit status: 0 nothing blocked, 3 something dropped or blanked, 1 data\n"
    "error (a record that cannot be scored is one), 2 usage error.\n";

enum { OPT_AT = 256, OPT_CALIBRATE, OPT_NO_CACHE };
enum { UC_EXIT_BLOCKED = 3 };

enum { PT_TEXT, PT_EMB, PT_IMAGE, NPT, PT_AUTO = -1 };
static const char *const pt_name[NPT] = {"text", "emb", "image"};
static const char *const pt_field[NPT] = {"text_emb", "image_emb", "image"};
/* actions, weakest first (a record hit by several gets the strongest) */
enum { ACT_TAG, ACT_BLANK, ACT_DROP, NACT };
static const char *const act_name[NACT] = {"tag", "blank", "drop"};

#define POLICY_MAX_BYTES (1u << 20)
#define LABELS_MAX_BYTES (64u << 20)
#define MAX_RULES 4096
#define MAX_TERMS 4096 /* texts and files of one rule, braces expanded */
#define MAX_ALL_TERMS 16384 /* of the policy */
#define MAX_TERM_LEN 1000
#define MAX_ITEMS (1 << 20) /* calibration items */

/* One concept: a text (encoded with CLIP) or a file (@PATH: a PNG or a
 * record with image_emb, text_emb or image). */
typedef struct {
    char *text;   /* the text, or the path as written after @ */
    int file;
    int line;     /* the first policy line naming it */
    float *emb;   /* [D] */
} term;

typedef struct {
    int line, action;
    int has[NPT];
    double thr[NPT];
    char *concept; /* the concept part as written */
    int nalt, ncon;
    int *alt, *con; /* [nalt], [ncon] indices into the terms */
} rule;

typedef struct {
    const char *path;
    const char *name; /* the file name without folders */
    char checksum[40];
    rule *rules;
    int nrules;
    term *terms;
    int nterms;
} policy;

typedef struct {
    uc_cli cli;
    const char *policy_path, *labels;
    int at, format, no_cache;
    clip_model *m;
    uc_bpe *bpe;
    int D;
    policy p;
    float *cos;    /* [nterms] */
    float *scores; /* [nrules] */
    int *near;     /* [nrules, 2] the nearest concept and contrast (-1: none) */
} filter;

/* ---- the policy file ---- */

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = 0;
    return s;
}

static int add_term(policy *p, const char *s, int line)
{
    int file = s[0] == '@';
    const char *t = s + file;
    for (int i = 0; i < p->nterms; i++)
        if (p->terms[i].file == file && !strcmp(p->terms[i].text, t))
            return i;
    if (p->nterms == MAX_ALL_TERMS)
        return uc_err("%s line %d: more than %d concepts in the policy", p->path, line, MAX_ALL_TERMS);
    if (p->nterms % 64 == 0)
        p->terms = uc_xrealloc(p->terms, (size_t)p->nterms + 64, sizeof *p->terms);
    p->terms[p->nterms] = (term){.text = uc_strdup(t), .file = file, .line = line};
    return p->nterms++;
}

/* Add the texts a concept stands for: each {x,y,...} is one of its
 * comma-separated alternatives (several braces: every combination). */
static int expand(policy *p, const char *t, int line, int *out, int *n)
{
    const char *open = strchr(t, '{'), *close = open ? strchr(open, '}') : strchr(t, '}');
    if (!open && !close) {
        char buf[MAX_TERM_LEN + 1];
        snprintf(buf, sizeof buf, "%s", t);
        char *x = trim(buf);
        if (!*x)
            return uc_err("%s line %d: a concept expands to an empty text", p->path, line);
        if (*n == MAX_TERMS)
            return uc_err("%s line %d: more than %d concepts in one rule", p->path, line, MAX_TERMS);
        return (out[(*n)++] = add_term(p, x, line)) < 0 ? -1 : 0;
    }
    if (!open || !close || close < open || memchr(open + 1, '{', (size_t)(close - open - 1)))
        return uc_err("%s line %d: unbalanced or nested braces", p->path, line);
    size_t pre = (size_t)(open - t);
    for (const char *a = open + 1;;) {
        const char *e = a + strcspn(a, ",}");
        char buf[2 * MAX_TERM_LEN + 2];
        if (pre + (size_t)(e - a) + strlen(close + 1) > MAX_TERM_LEN)
            return uc_err("%s line %d: a concept longer than %d bytes", p->path, line, MAX_TERM_LEN);
        snprintf(buf, sizeof buf, "%.*s%.*s%s", (int)pre, t, (int)(e - a), a, close + 1);
        if (expand(p, buf, line, out, n))
            return -1;
        if (*e == '}')
            return 0;
        a = e + 1;
    }
}

/* "a|b|c" -> term indices; -1 and uc_err on an empty or too long part. */
static int parse_terms(policy *p, char *s, int line, int **out, int *n)
{
    *out = uc_alloc(MAX_TERMS, sizeof **out);
    *n = 0;
    for (char *part = s;;) {
        char *bar = strchr(part, '|');
        if (bar)
            *bar = 0;
        char *t = trim(part);
        if (!*t || (t[0] == '@' && !t[1]))
            return uc_err("%s line %d: an empty concept (between '|', or after 'vs' or '@')", p->path, line);
        if (strlen(t) > MAX_TERM_LEN)
            return uc_err("%s line %d: a concept longer than %d bytes", p->path, line, MAX_TERM_LEN);
        if (t[0] == '@') {
            if (*n == MAX_TERMS)
                return uc_err("%s line %d: more than %d concepts in one rule", p->path, line, MAX_TERMS);
            if (((*out)[(*n)++] = add_term(p, t, line)) < 0)
                return -1;
        } else if (expand(p, t, line, *out, n)) {
            return -1;
        }
        if (!bar) {
            *out = uc_xrealloc(*out, (size_t)*n, sizeof **out);
            return 0;
        }
        part = bar + 1;
    }
}

/* One rule line (comment already cut, trimmed, not empty). */
static int parse_rule(policy *p, char *s, int line)
{
    rule r = {.line = line};
    char *w = s, *end;
    end = w + strcspn(w, " \t");
    char save = *end;
    *end = 0;
    r.action = -1;
    for (int a = 0; a < NACT; a++)
        if (!strcmp(w, act_name[a]))
            r.action = a;
    if (r.action < 0)
        return uc_err("%s line %d: '%s' is not an action (drop, blank or tag)", p->path, line, w);
    *end = save;
    int nthr = 0;
    for (w = end;;) {
        w += strspn(w, " \t");
        end = w + strcspn(w, " \t");
        char *eq = memchr(w, '=', (size_t)(end - w));
        if (!eq)
            break;
        int pt = -1;
        for (int i = 0; i < NPT; i++)
            if ((size_t)(eq - w) == strlen(pt_name[i]) && !strncmp(w, pt_name[i], (size_t)(eq - w)))
                pt = i;
        if (pt < 0)
            return uc_err("%s line %d: '%.*s' is not a point (text, emb or image)", p->path, line, (int)(eq - w),
                          w);
        if (r.has[pt])
            return uc_err("%s line %d: two thresholds for %s", p->path, line, pt_name[pt]);
        char *num_end;
        errno = 0;
        double v = strtod(eq + 1, &num_end);
        if (errno || num_end != end || num_end == eq + 1 || !(v >= -2 && v <= 2))
            return uc_err("%s line %d: %s threshold '%.*s' is not a number in [-2, 2]", p->path, line,
                          pt_name[pt], (int)(end - eq - 1), eq + 1);
        r.has[pt] = 1;
        r.thr[pt] = v;
        nthr++;
        w = end;
    }
    if (!nthr)
        return uc_err("%s line %d: no threshold (text=T, emb=T or image=T after the action)", p->path, line);
    if (!*w)
        return uc_err("%s line %d: no concept after the thresholds", p->path, line);
    if (p->nrules == MAX_RULES)
        return uc_err("%s line %d: more than %d rules", p->path, line, MAX_RULES);
    char *vs = strstr(w, " vs ");
    if (vs && strstr(vs + 4, " vs "))
        return uc_err("%s line %d: 'vs' twice", p->path, line);
    r.concept = uc_strdup(w);
    if (vs)
        *vs = 0;
    if (parse_terms(p, w, line, &r.alt, &r.nalt) || (vs && parse_terms(p, vs + 4, line, &r.con, &r.ncon))) {
        uc_free(r.concept);
        uc_free(r.alt);
        uc_free(r.con);
        return -1;
    }
    p->rules = uc_xrealloc(p->rules, (size_t)p->nrules + 1, sizeof *p->rules);
    p->rules[p->nrules++] = r;
    return 0;
}

static int policy_parse(policy *p, const char *path)
{
    memset(p, 0, sizeof *p);
    p->path = path;
    const char *slash = strrchr(path, '/');
    p->name = slash ? slash + 1 : path;
    char *text;
    size_t len;
    if (uc_read_file(path, POLICY_MAX_BYTES, &text, &len))
        return -1;
    snprintf(p->checksum, sizeof p->checksum, "fnv1a64:%016llx",
             (unsigned long long)uc_fnv1a(text, len, UC_FNV_INIT));
    if (strlen(text) != len) {
        free(text);
        return uc_err("%s: contains a NUL byte", path);
    }
    /* a rule may go on over lines that end in a backslash; it is named
     * by its first line */
    char *joined = uc_alloc(len + 2, 1);
    size_t jn = 0;
    int line = 0, first = 0, rc = 0;
    for (char *s = text; !rc;) {
        char *nl = strchr(s, '\n');
        if (nl)
            *nl = 0;
        line++;
        char *hash = strchr(s, '#');
        if (hash)
            *hash = 0;
        char *t = trim(s);
        size_t tn = strlen(t);
        int more = tn > 0 && t[tn - 1] == '\\';
        if (more) {
            t[--tn] = 0;
            t = trim(t);
            tn = strlen(t);
        }
        if (!jn)
            first = line;
        if (tn) {
            if (jn)
                joined[jn++] = ' ';
            memcpy(joined + jn, t, tn);
            jn += tn;
            joined[jn] = 0;
        }
        if ((!more || !nl) && jn) {
            rc = parse_rule(p, trim(joined), first);
            jn = 0;
        }
        if (!nl)
            break;
        s = nl + 1;
    }
    uc_free(joined);
    free(text);
    if (!rc && !p->nrules)
        rc = uc_err("%s: no rules", path);
    return rc;
}

static void policy_free(policy *p)
{
    for (int i = 0; i < p->nrules; i++) {
        uc_free(p->rules[i].concept);
        uc_free(p->rules[i].alt);
        uc_free(p->rules[i].con);
    }
    for (int i = 0; i < p->nterms; i++) {
        uc_free(p->terms[i].text);
        uc_free(p->terms[i].emb);
    }
    uc_free(p->rules);
    uc_free(p->terms);
}

/* ---- concept embeddings: the cache, the CLIP, the files ---- */

static char *cache_path(const policy *p)
{
    size_t n = strlen(p->path) + 16;
    char *s = uc_alloc(n, 1);
    snprintf(s, n, "%s.cache.rec", p->path);
    return s;
}

/* Fill the text terms the cache has for this CLIP; 1 when the cache is
 * usable as it is (every text term found), 0 otherwise (with a message
 * saying why at -v, or a warning when it is damaged). */
static int cache_load(filter *f, const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        uc_info(&f->cli, "%s: no cache yet", path);
        return 0;
    }
    rec_reader *rr = rec_reader_new(fd, path);
    rec *r;
    int got, stale = 0, bad = 0;
    int64_t D = f->D;
    while (!stale && !bad && (got = rec_read(rr, &r)) == 1) {
        const char *concept = rec_has(r, "concept") ? rec_get_str(r, "concept") : NULL;
        if (!concept) {
            bad = 1;
        } else if (uc_clip_check_record(f->m, r, path, "text_emb")) {
            stale = 1;
        } else {
            float *e = rec_get_f32(r, "text_emb", 1, &D, NULL);
            if (!e)
                bad = 1;
            for (int i = 0; e && i < f->p.nterms; i++) {
                term *t = &f->p.terms[i];
                if (!t->file && !t->emb && !strcmp(t->text, concept)) {
                    t->emb = uc_alloc((size_t)D, sizeof *t->emb);
                    memcpy(t->emb, e, (size_t)D * sizeof *e);
                }
            }
            uc_free(e);
        }
        rec_free(r);
    }
    if (!stale && !bad && got < 0)
        bad = 1;
    rec_reader_free(rr);
    close(fd);
    if (bad || stale) {
        if (!bad)
            uc_info(&f->cli, "%s: made with another CLIP: encoding the concepts again", path);
        else if (f->cli.verbose >= 0)
            uc_warn(&f->cli, "%s: damaged cache (%s): encoding the concepts again", path, uc_errmsg());
        for (int i = 0; i < f->p.nterms; i++)
            if (!f->p.terms[i].file) {
                uc_free(f->p.terms[i].emb);
                f->p.terms[i].emb = NULL;
            }
        return 0;
    }
    for (int i = 0; i < f->p.nterms; i++)
        if (!f->p.terms[i].file && !f->p.terms[i].emb) {
            uc_info(&f->cli, "%s: lacks '%s': encoding it", path, f->p.terms[i].text);
            return 0;
        }
    uc_info(&f->cli, "%s: reused", path);
    return 1;
}

/* Write the text terms to the cache (a temporary file renamed into place);
 * a cache that cannot be written is only a warning. */
static void cache_save(filter *f, const char *path)
{
    size_t n = strlen(path) + 32;
    char *tmp = uc_alloc(n, 1);
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    FILE *out = fopen(tmp, "wb");
    int ok = out != NULL;
    int64_t D = f->D;
    for (int i = 0; ok && i < f->p.nterms; i++) {
        const term *t = &f->p.terms[i];
        if (t->file)
            continue;
        rec *r = rec_new();
        rec_set_str(r, "concept", t->text);
        rec_set_tensor(r, "text_emb", UC_F32, 1, &D, t->emb);
        uc_set_model(r, "clip", clip_get_info(f->m)->model.id, clip_get_info(f->m)->model.checksum);
        ok = rec_write(r, out) == 0;
        rec_free(r);
    }
    if (out && fclose(out))
        ok = 0;
    if (ok && rename(tmp, path) == 0)
        uc_info(&f->cli, "%s: written", path);
    else if (f->cli.verbose >= 0)
        uc_warn(&f->cli, "%s: cannot write the cache: %s", path, strerror(errno));
    if (!ok || access(tmp, F_OK) == 0)
        unlink(tmp);
    uc_free(tmp);
}

/* A file concept: its path relative to the policy's folder. */
static int load_file_term(filter *f, term *t)
{
    char *path;
    if (t->text[0] == '/' || !strchr(f->p.path, '/')) {
        path = uc_strdup(t->text);
    } else {
        size_t dn = (size_t)(strrchr(f->p.path, '/') - f->p.path), n = dn + strlen(t->text) + 2;
        path = uc_alloc(n, 1);
        snprintf(path, n, "%.*s/%s", (int)dn, f->p.path, t->text);
    }
    uc_image_reader *ir = uc_image_reader_open_path(path);
    rec *r = NULL;
    int rc = -1;
    int64_t D = f->D;
    t->emb = uc_alloc((size_t)D, sizeof *t->emb);
    if (ir && uc_image_reader_next(ir, &r) == 1) {
        if (uc_image_reader_pngs(ir) == 1 || (!rec_has(r, "image_emb") && !rec_has(r, "text_emb"))) {
            rc = uc_clip_record_picture(f->m, r, path, t->emb);
        } else {
            const char *field = rec_has(r, "image_emb") ? "image_emb" : "text_emb";
            float *e = NULL;
            if ((f->cli.any_clip || !uc_clip_check_record(f->m, r, path, field)) &&
                (e = uc_field_f32(r, path, "", field, 1, &D, "CLIP"))) {
                memcpy(t->emb, e, (size_t)D * sizeof *e);
                rc = 0;
            }
            uc_free(e);
        }
    } else if (ir) {
        uc_err("%s: empty or unreadable", path);
    }
    rec_free(r);
    uc_image_reader_free(ir);
    uc_free(path);
    if (rc)
        uc_err_prefix("%s line %d: @%s", f->p.path, t->line, t->text);
    return rc;
}

static void encode_terms(filter *f)
{
    policy *p = &f->p;
    char *cpath = f->no_cache ? NULL : cache_path(p);
    int cached = cpath && cache_load(f, cpath);
    int need = 0;
    for (int i = 0; i < p->nterms; i++)
        need += !p->terms[i].file && !p->terms[i].emb;
    if (need) {
        if (!f->bpe && !(f->bpe = uc_clip_tokenizer(f->m)))
            uc_die_err(&f->cli);
        const char **texts = uc_alloc((size_t)need, sizeof *texts);
        int *idx = uc_alloc((size_t)need, sizeof *idx), k = 0, truncated;
        for (int i = 0; i < p->nterms; i++)
            if (!p->terms[i].file && !p->terms[i].emb) {
                if (uc_bpe_encode(f->bpe, p->terms[i].text, NULL, 0) < 0) /* invalid UTF-8 */
                    uc_die(&f->cli, UC_EXIT_DATA, "%s line %d: %s", p->path, p->terms[i].line, uc_errmsg());
                idx[k] = i;
                texts[k++] = p->terms[i].text;
            }
        float *emb = uc_alloc((size_t)need * (size_t)f->D, sizeof *emb);
        if (uc_clip_texts(f->m, f->bpe, texts, need, emb, &truncated))
            uc_die(&f->cli, UC_EXIT_DATA, "%s: %s", p->path, uc_errmsg());
        if (truncated && f->cli.verbose >= 0)
            uc_warn(&f->cli, "%s: %d concepts truncated to the context of %d tokens", p->path, truncated,
                    clip_get_info(f->m)->context_length);
        for (int j = 0; j < need; j++) {
            term *t = &p->terms[idx[j]];
            t->emb = uc_alloc((size_t)f->D, sizeof *t->emb);
            memcpy(t->emb, emb + (size_t)j * (size_t)f->D, (size_t)f->D * sizeof *emb);
        }
        uc_free(emb);
        uc_free(idx);
        uc_free(texts);
    }
    if (cpath && !cached)
        cache_save(f, cpath);
    uc_free(cpath);
    for (int i = 0; i < p->nterms; i++)
        if (p->terms[i].file && load_file_term(f, &p->terms[i]))
            uc_die_err(&f->cli);
}

/* ---- scoring ---- */

/* Scores of the rules that have a threshold at pt for an embedding e[D]
 * into f->scores (indexed by rule). */
static void score(filter *f, int pt, const float *e)
{
    const policy *p = &f->p;
    for (int i = 0; i < p->nterms; i++)
        f->cos[i] = NAN;
    for (int k = 0; k < p->nrules; k++) {
        const rule *r = &p->rules[k];
        if (!r->has[pt])
            continue;
        float best = -INFINITY, contrast = -INFINITY;
        int *near = f->near + 2 * k;
        near[0] = near[1] = -1;
        for (int j = 0; j < r->nalt + r->ncon; j++) {
            int ti = j < r->nalt ? r->alt[j] : r->con[j - r->nalt];
            if (isnan(f->cos[ti]))
                f->cos[ti] = uc_cosine(e, p->terms[ti].emb, f->D);
            if (j < r->nalt && f->cos[ti] > best) {
                best = f->cos[ti];
                near[0] = ti;
            } else if (j >= r->nalt && f->cos[ti] > contrast) {
                contrast = f->cos[ti];
                near[1] = ti;
            }
        }
        f->scores[k] = best - (r->ncon ? contrast : 0);
    }
}

typedef struct {
    int verdict; /* -1 pass, else ACT_* */
    int rule;    /* the deciding rule */
} decision;

/* The strongest action among the hits (ties: the largest excess over the
 * threshold); with no hit, the rule nearest to its threshold. */
static decision decide(const filter *f, int pt)
{
    decision d = {-1, -1};
    double best = -INFINITY;
    for (int k = 0; k < f->p.nrules; k++) {
        const rule *r = &f->p.rules[k];
        if (!r->has[pt])
            continue;
        double ex = f->scores[k] - r->thr[pt];
        int v = ex >= 0 ? r->action : -1;
        if (v > d.verdict || (v == d.verdict && ex > best)) {
            d.verdict = v;
            d.rule = k;
            best = ex;
        }
    }
    return d;
}

static int has_point(const policy *p, int pt)
{
    for (int k = 0; k < p->nrules; k++)
        if (p->rules[k].has[pt])
            return 1;
    return 0;
}

/* The point of a record: --at, else the latest stage's product. */
static int record_point(const filter *f, const rec *r, const char *src)
{
    int pt = f->at;
    if (pt == PT_AUTO) {
        for (pt = NPT - 1; pt >= 0 && !rec_has(r, pt_field[pt]); pt--)
            ;
        if (pt < 0)
            uc_die(&f->cli, UC_EXIT_DATA, "%s: record %ld: nothing to score (no image, image_emb or text_emb)", src,
                   rec_number(r));
    } else if (!rec_has(r, pt_field[pt])) {
        uc_die(&f->cli, UC_EXIT_DATA, "%s: record %ld field %s: missing (--at %s)", src, rec_number(r),
               pt_field[pt], pt_name[pt]);
    }
    if (!has_point(&f->p, pt))
        uc_die(&f->cli, UC_EXIT_DATA, "%s: record %ld is scored at %s but %s has no %s= threshold", src,
               rec_number(r), pt_name[pt], f->p.path, pt_name[pt]);
    return pt;
}

/* The record's embedding at pt into e[D]; exits when it cannot be had. */
static void record_embedding(filter *f, const rec *r, const char *src, int pt, float *e)
{
    if (pt == PT_IMAGE) {
        if (uc_clip_record_picture(f->m, r, src, e))
            uc_die_err(&f->cli);
        return;
    }
    int64_t D = f->D;
    float *x = NULL;
    if ((!f->cli.any_clip && uc_clip_check_record(f->m, r, src, pt_field[pt])) ||
        !(x = uc_field_f32(r, src, "", pt_field[pt], 1, &D, "CLIP")))
        uc_die_err(&f->cli);
    memcpy(e, x, (size_t)D * sizeof *x);
    uc_free(x);
}

/* A term as the policy names it: the text, or @path. */
static const char *term_name(const filter *f, int ti, char *buf, size_t n)
{
    const term *t = &f->p.terms[ti];
    snprintf(buf, n, "%s%s", t->file ? "@" : "", t->text);
    return buf;
}

/* "drop: line 3 'a red triangle' vs 'a red square' 0.0312 >= 0 (policy
 * no-triangles.txt fnv1a64:...)": the rule's nearest concept and contrast. */
static void reason_text(const filter *f, int pt, decision d, char *buf, size_t n)
{
    const rule *r = &f->p.rules[d.rule];
    const int *near = f->near + 2 * d.rule;
    double s = f->scores[d.rule], t = r->thr[pt];
    char a[MAX_TERM_LEN + 2], b[MAX_TERM_LEN + 2];
    snprintf(buf, n, "%s: line %d '%s'%s%s%s %.4f %s %g (policy %s %s)", d.verdict < 0 ? "pass" : act_name[d.verdict],
             r->line, term_name(f, near[0], a, sizeof a), near[1] >= 0 ? " vs '" : "",
             near[1] >= 0 ? term_name(f, near[1], b, sizeof b) : "", near[1] >= 0 ? "'" : "", s, s >= t ? ">=" : "<", t,
             f->p.name, f->p.checksum);
}

/* filter.<point> of an output record. */
static void set_filter_field(const filter *f, rec *out, int pt, decision d, const char *reason)
{
    const rule *r = &f->p.rules[d.rule];
    rec *m = rec_new();
    rec_del(m, "version");
    rec_set_str(m, "policy", f->p.name);
    rec_set_str(m, "checksum", f->p.checksum);
    rec_set_str(m, "clip", clip_get_info(f->m)->model.checksum);
    rec_set_str(m, "verdict", d.verdict < 0 ? "pass" : act_name[d.verdict]);
    rec_set_u64(m, "line", (uint64_t)r->line);
    char a[MAX_TERM_LEN + 2];
    rec_set_str(m, "concept", term_name(f, f->near[2 * d.rule], a, sizeof a));
    if (f->near[2 * d.rule + 1] >= 0)
        rec_set_str(m, "contrast", term_name(f, f->near[2 * d.rule + 1], a, sizeof a));
    rec_set_f64(m, "score", f->scores[d.rule]);
    rec_set_f64(m, "threshold", r->thr[pt]);
    rec_set_str(m, "reason", reason);
    int64_t n = 0;
    float *all = uc_alloc((size_t)f->p.nrules, sizeof *all);
    for (int k = 0; k < f->p.nrules; k++)
        if (f->p.rules[k].has[pt])
            all[n++] = f->scores[k];
    rec_set_tensor(m, "scores", UC_F32, 1, &n, all);
    uc_free(all);
    rec_set_stage(out, "filter", pt_name[pt], m);
    rec_free(m);
}

/* ---- the stage ---- */

static int run_stage(filter *f, int n, char **files)
{
    uc_inputs in;
    uc_inputs_init(&in, &f->cli, n, files, 1);
    float *e = uc_alloc((size_t)f->D, sizeof *e);
    int blocked = 0;
    long passed = 0;
    rec *r;
    while ((r = uc_inputs_next(&in))) {
        if (f->format < 0)
            f->format = uc_image_reader_pngs(in.ir) == 1 ? UC_OUT_PNG : UC_OUT_RECORD;
        int pt = record_point(f, r, in.src);
        record_embedding(f, r, in.src, pt, e);
        score(f, pt, e);
        decision d = decide(f, pt);
        char reason[MAX_TERM_LEN * 2 + 4352];
        reason_text(f, pt, d, reason, sizeof reason);
        int has_picture = rec_has(r, "image");
        if (d.verdict == ACT_DROP || (d.verdict == ACT_BLANK && !has_picture)) {
            blocked = 1;
            const char *prompt = rec_has(r, "prompt") ? rec_get_str(r, "prompt") : NULL;
            if (f->cli.verbose >= 0)
                uc_warn(&f->cli, "%s: record %ld%s%.60s%s dropped at %s: %s%s", in.src, rec_number(r),
                        prompt ? " '" : "", prompt ? prompt : "", prompt ? "'" : "", pt_name[pt], reason,
                        d.verdict == ACT_BLANK ? " (blank: no picture)" : "");
            continue;
        }
        rec *out = rec_clone(r);
        if (d.verdict == ACT_BLANK) {
            uc_tensor t;
            if (rec_get_tensor(out, "image", &t))
                uc_die(&f->cli, UC_EXIT_DATA, "%s: %s", in.src, uc_errmsg());
            size_t bytes = (size_t)uc_tensor_numel(&t);
            unsigned char *black = uc_alloc(bytes, 1);
            rec_set_tensor(out, "image", UC_U8, 3, t.shape, black);
            uc_free(black);
            rec_del(out, "image_f32");
            blocked = 1;
            if (f->cli.verbose >= 0)
                uc_warn(&f->cli, "%s: record %ld blanked at %s: %s", in.src, rec_number(r), pt_name[pt], reason);
        }
        set_filter_field(f, out, pt, d, reason);
        rec_history_add(out, f->cli.tool, f->cli.argc, f->cli.argv);
        if (f->format == UC_OUT_PNG) {
            if (!rec_has(out, "image"))
                uc_die(&f->cli, UC_EXIT_DATA, "%s: record %ld: no image to write as PNG (use -f record)", in.src,
                       rec_number(r));
            if (uc_write_png_record(stdout, out))
                uc_die(&f->cli, UC_EXIT_DATA, "stdout: %s", uc_errmsg());
        } else if (rec_write(out, stdout)) {
            uc_die_err(&f->cli);
        }
        rec_free(out);
        passed++;
    }
    uc_info(&f->cli, "%ld records passed on%s", passed, blocked ? ", some blocked" : "");
    uc_free(e);
    return blocked;
}

/* ---- calibration ---- */

typedef struct {
    int blocked;
    char *text;
    int line;
} label;

static label *read_labels(const filter *f, int *n)
{
    char *text;
    size_t len;
    if (uc_read_file(f->labels, LABELS_MAX_BYTES, &text, &len))
        uc_die_err(&f->cli);
    if (strlen(text) != len)
        uc_die(&f->cli, UC_EXIT_DATA, "%s: contains a NUL byte", f->labels);
    label *l = NULL;
    int k = 0, line = 0;
    for (char *s = text; *s;) {
        char *nl = strchr(s, '\n');
        if (nl)
            *nl = 0;
        line++;
        char *t = trim(s);
        if (*t && *t != '#') {
            size_t w = strcspn(t, " \t");
            int b = w == 7 && !strncmp(t, "blocked", 7) ? 1 : w == 7 && !strncmp(t, "allowed", 7) ? 0 : -1;
            if (b < 0)
                uc_die(&f->cli, UC_EXIT_DATA, "%s line %d: '%.*s' is not allowed or blocked", f->labels, line, (int)w,
                       t);
            if (k == MAX_ITEMS)
                uc_die(&f->cli, UC_EXIT_DATA, "%s: more than %d items", f->labels, MAX_ITEMS);
            if (k % 1024 == 0)
                l = uc_xrealloc(l, (size_t)k + 1024, sizeof *l);
            l[k++] = (label){b, uc_strdup(trim(t + w)), line};
        }
        if (!nl)
            break;
        s = nl + 1;
    }
    free(text);
    if (!k)
        uc_die(&f->cli, UC_EXIT_DATA, "%s: no labelled items", f->labels);
    *n = k;
    return l;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static double quantile(const float *s, int n, double q) { return n ? s[(int)floor(q * (n - 1) + 0.5)] : NAN; }

static void print_dist(const char *name, float *s, int n)
{
    qsort(s, (size_t)n, sizeof *s, cmp_float);
    double mean = 0;
    for (int i = 0; i < n; i++)
        mean += s[i];
    if (!n) {
        printf("  %s n=0\n", name);
        return;
    }
    printf("  %s n=%d min %.4f p05 %.4f p50 %.4f p95 %.4f max %.4f mean %.4f\n", name, n, s[0], quantile(s, n, 0.05),
           quantile(s, n, 0.5), quantile(s, n, 0.95), s[n - 1], mean / n);
}

typedef struct {
    int tp, fp, fn, tn;
} counts;

static void print_counts(const char *what, counts c)
{
    printf("%s: tp %d fp %d fn %d tn %d", what, c.tp, c.fp, c.fn, c.tn);
    if (c.tp + c.fn)
        printf(" recall %.3f", (double)c.tp / (c.tp + c.fn));
    if (c.tp + c.fp)
        printf(" precision %.3f", (double)c.tp / (c.tp + c.fp));
    printf("\n");
}

/* The threshold with the fewest errors (ties: the widest gap), as the
 * midpoint between neighbouring scores. */
typedef struct {
    float s;
    int b;
} scored;

static int cmp_scored(const void *a, const void *b) { return cmp_float(&((const scored *)a)->s, &((const scored *)b)->s); }

static double best_threshold(const float *sc, const label *l, int n, int *errors)
{
    scored *v = uc_alloc((size_t)n, sizeof *v);
    int pos = 0;
    for (int i = 0; i < n; i++) {
        v[i] = (scored){sc[i], l[i].blocked};
        pos += l[i].blocked;
    }
    qsort(v, (size_t)n, sizeof *v, cmp_scored); /* equal scores are never split below */
    /* threshold below v[i]: items i.. are blocked */
    int fn = 0, fp = n - pos, best_err = n + 1;
    double best_t = 0, best_gap = -1;
    for (int i = 0; i <= n; i++) {
        if (i == 0 || i == n || v[i].s > v[i - 1].s) {
            double t = i == 0 ? v[0].s - 0.01 : i == n ? v[n - 1].s + 0.01 : 0.5 * ((double)v[i - 1].s + v[i].s);
            double gap = i == 0 || i == n ? 0 : (double)v[i].s - v[i - 1].s;
            int err = fn + fp;
            if (err < best_err || (err == best_err && gap > best_gap)) {
                best_err = err;
                best_t = t;
                best_gap = gap;
            }
        }
        if (i < n) {
            if (v[i].b)
                fn++;
            else
                fp--;
        }
    }
    uc_free(v);
    *errors = best_err;
    return best_t;
}

static int run_calibrate(filter *f, int nfiles, char **files)
{
    int n;
    label *l = read_labels(f, &n);
    const policy *p = &f->p;
    float *sc = uc_alloc((size_t)n * (size_t)p->nrules, sizeof *sc), *e = uc_alloc((size_t)f->D, sizeof *e);
    int pt = f->at;
    if (nfiles == 0) { /* prompts */
        if (pt != PT_AUTO && pt != PT_TEXT)
            uc_die(&f->cli, UC_EXIT_USAGE, "--calibrate with prompts (no FILE) scores at text, not %s", pt_name[pt]);
        pt = PT_TEXT;
        if (!has_point(p, pt))
            uc_die(&f->cli, UC_EXIT_DATA, "%s has no text= threshold", p->path);
        if (!f->bpe && !(f->bpe = uc_clip_tokenizer(f->m)))
            uc_die_err(&f->cli);
        const char **texts = uc_alloc((size_t)n, sizeof *texts);
        for (int i = 0; i < n; i++) {
            if (!*l[i].text)
                uc_die(&f->cli, UC_EXIT_DATA, "%s line %d: no prompt after the label", f->labels, l[i].line);
            texts[i] = l[i].text;
        }
        float *emb = uc_alloc((size_t)n * (size_t)f->D, sizeof *emb);
        if (uc_clip_texts(f->m, f->bpe, texts, n, emb, NULL))
            uc_die(&f->cli, UC_EXIT_DATA, "%s: %s", f->labels, uc_errmsg());
        for (int i = 0; i < n; i++) {
            score(f, pt, emb + (size_t)i * (size_t)f->D);
            memcpy(sc + (size_t)i * (size_t)p->nrules, f->scores, (size_t)p->nrules * sizeof *sc);
        }
        uc_free(emb);
        uc_free(texts);
    } else {
        uc_inputs in;
        uc_inputs_init(&in, &f->cli, nfiles, files, 1);
        rec *r;
        int k = 0, first_pt = -1;
        while ((r = uc_inputs_next(&in))) {
            if (k == n)
                uc_die(&f->cli, UC_EXIT_DATA, "%s: more records than the %d labels of %s", in.src, n, f->labels);
            int rp = record_point(f, r, in.src);
            if (first_pt >= 0 && rp != first_pt)
                uc_die(&f->cli, UC_EXIT_DATA, "%s: record %ld is scored at %s, the first at %s: give --at", in.src,
                       rec_number(r), pt_name[rp], pt_name[first_pt]);
            first_pt = rp;
            record_embedding(f, r, in.src, rp, e);
            score(f, rp, e);
            memcpy(sc + (size_t)k * (size_t)p->nrules, f->scores, (size_t)p->nrules * sizeof *sc);
            k++;
            uc_progress(&f->cli, "records", k, n);
        }
        if (k != n)
            uc_die(&f->cli, UC_EXIT_DATA, "%d records for the %d labels of %s", k, n, f->labels);
        pt = first_pt;
    }

    int pos = 0;
    for (int i = 0; i < n; i++)
        pos += l[i].blocked;
    printf("calibration of %s (%s) at %s: %d items, %d blocked, %d allowed\n", p->path, p->checksum, pt_name[pt], n,
           pos, n - pos);
    float *col = uc_alloc((size_t)n, sizeof *col), *a = uc_alloc((size_t)n, sizeof *a),
          *b = uc_alloc((size_t)n, sizeof *b);
    counts policy_c = {0};
    int *hit = uc_alloc((size_t)n, sizeof *hit);
    for (int k = 0; k < p->nrules; k++) {
        const rule *r = &p->rules[k];
        if (!r->has[pt])
            continue;
        int na = 0, nb = 0;
        counts c = {0};
        for (int i = 0; i < n; i++) {
            float s = col[i] = sc[(size_t)i * (size_t)p->nrules + (size_t)k];
            int h = s >= r->thr[pt];
            if (l[i].blocked)
                b[nb++] = s;
            else
                a[na++] = s;
            if (r->action != ACT_TAG && h)
                hit[i] = 1;
            c.tp += h && l[i].blocked;
            c.fp += h && !l[i].blocked;
            c.fn += !h && l[i].blocked;
            c.tn += !h && !l[i].blocked;
        }
        printf("line %d: %s %s=%.4f %s\n", r->line, act_name[r->action], pt_name[pt], r->thr[pt], r->concept);
        print_dist("allowed", a, na);
        print_dist("blocked", b, nb);
        int err;
        double t = best_threshold(col, l, n, &err);
        counts bc = {0};
        for (int i = 0; i < n; i++) {
            int h = col[i] >= t;
            bc.tp += h && l[i].blocked;
            bc.fp += h && !l[i].blocked;
            bc.fn += !h && l[i].blocked;
            bc.tn += !h && !l[i].blocked;
        }
        char what[96];
        snprintf(what, sizeof what, "  best threshold %.4f (%d errors)", t, err);
        print_counts(what, bc);
        print_counts("  at the policy's threshold", c);
    }
    for (int i = 0; i < n; i++) {
        policy_c.tp += hit[i] && l[i].blocked;
        policy_c.fp += hit[i] && !l[i].blocked;
        policy_c.fn += !hit[i] && l[i].blocked;
        policy_c.tn += !hit[i] && !l[i].blocked;
    }
    char what[64];
    snprintf(what, sizeof what, "policy at %s (drop and blank rules)", pt_name[pt]);
    print_counts(what, policy_c);
    if (f->cli.verbose > 0)
        for (int i = 0; i < n; i++)
            if (hit[i] != l[i].blocked)
                fprintf(stderr, "%s: %s: item %d (%s line %d) %s: %s\n", f->cli.tool, hit[i] ? "false positive" : "missed",
                        i + 1, f->labels, l[i].line, l[i].blocked ? "blocked" : "allowed", l[i].text);
    uc_free(hit);
    uc_free(col);
    uc_free(a);
    uc_free(b);
    uc_free(sc);
    uc_free(e);
    for (int i = 0; i < n; i++)
        uc_free(l[i].text);
    uc_free(l);
    return 0;
}

int main(int argc, char **argv)
{
    filter f = {.at = PT_AUTO, .format = -1};
    uc_cli_init(&f.cli, "clip-filter", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS, UC_ANY_CLIP_LONGOPT,
        {"policy", 1, 0, 'p'},
        {"at", 1, 0, OPT_AT},
        {"format", 1, 0, 'f'},
        {"calibrate", 1, 0, OPT_CALIBRATE},
        {"no-cache", 0, 0, OPT_NO_CACHE},
        {0, 0, 0, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "p:f:", longopts, NULL)) != -1) {
        if (uc_cli_common(&f.cli, opt, optarg))
            continue;
        switch (opt) {
        case 'p': f.policy_path = optarg; break;
        case OPT_AT:
            if (!strcmp(optarg, "auto")) {
                f.at = PT_AUTO;
                break;
            }
            f.at = -2;
            for (int i = 0; i < NPT; i++)
                if (!strcmp(optarg, pt_name[i]))
                    f.at = i;
            if (f.at == -2)
                uc_die(&f.cli, UC_EXIT_USAGE, "--at: '%s' is not text, emb, image or auto", optarg);
            break;
        case 'f':
            if (!strcmp(optarg, "png"))
                f.format = UC_OUT_PNG;
            else if (!strcmp(optarg, "record"))
                f.format = UC_OUT_RECORD;
            else
                uc_die(&f.cli, UC_EXIT_USAGE, "--format: '%s' is not png or record", optarg);
            break;
        case OPT_CALIBRATE: f.labels = optarg; break;
        case OPT_NO_CACHE: f.no_cache = 1; break;
        default: uc_die(&f.cli, UC_EXIT_USAGE, "bad option");
        }
    }
    if (!f.policy_path)
        uc_die(&f.cli, UC_EXIT_USAGE, "no policy (-p FILE)");
    uc_cli_ready(&f.cli);

    if (policy_parse(&f.p, f.policy_path))
        uc_die_err(&f.cli);
    if (f.at >= 0 && !has_point(&f.p, f.at))
        uc_die(&f.cli, UC_EXIT_DATA, "%s has no %s= threshold (--at %s)", f.policy_path, pt_name[f.at],
               pt_name[f.at]);
    const char *path = uc_model_path(&f.cli, "clip");
    if (!(f.m = clip_open(path)))
        uc_die_err(&f.cli);
    f.D = clip_get_info(f.m)->embed_dim;
    if (f.at == PT_IMAGE && !clip_get_info(f.m)->has_vision)
        uc_die(&f.cli, UC_EXIT_DATA, "%s: this CLIP model has no vision tower (--at image)", path);
    f.cos = uc_alloc((size_t)f.p.nterms, sizeof *f.cos);
    f.scores = uc_alloc((size_t)f.p.nrules, sizeof *f.scores);
    f.near = uc_alloc((size_t)f.p.nrules * 2, sizeof *f.near);
    encode_terms(&f);
    uc_info(&f.cli, "%s: %d rules, %d concepts, %s; CLIP %s (%s)", f.policy_path, f.p.nrules, f.p.nterms,
            f.p.checksum, clip_get_info(f.m)->model.id, clip_get_info(f.m)->model.checksum);

    int blocked = f.labels ? run_calibrate(&f, argc - optind, argv + optind) : run_stage(&f, argc - optind, argv + optind);
    uc_stdout_check(&f.cli);
    uc_free(f.cos);
    uc_free(f.scores);
    uc_free(f.near);
    policy_free(&f.p);
    uc_bpe_free(f.bpe);
    clip_free(f.m);
    return blocked ? UC_EXIT_BLOCKED : UC_EXIT_OK;
}
