/* clip-lexicon - the "secret vocabulary" probe: a word's BPE pieces and its
 * nearest neighbours in CLIP text-embedding space among a lexicon (the
 * tokenizer's whole vocabulary, encoded once and cached, or a word list),
 * and the neighbours of the image embedding the prior draws for it or of a
 * picture's embedding. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <sys/stat.h>
#include <time.h>

#include "formats/base.h"
#include "libcommon/cli/cli.h"
#include "libcommon/cli/clipuse.h"
#include "libcommon/cli/stage.h"
#include "libcommon/image/imageio.h"
#include "libcommon/models/prior.h"
#include "libcommon/nn/rng.h"

static const char usage[] =
    "Usage: clip-lexicon [OPTION]... [WORD]...\n"
    "For each WORD (a word or phrase; none: one a line from standard input,\n"
    "unless --image is given), print its BPE pieces and ids and its nearest\n"
    "neighbours in CLIP text-embedding space (cosine) among a lexicon: by\n"
    "default every token of the tokenizer's vocabulary, each encoded alone\n"
    "(<|startoftext|> token <|endoftext|>), once per model and then read back\n"
    "from a cache file.\n"
    "\n"
    "  -L, --lexicon FILE  the lexicon instead: one entry a line, or records\n"
    "                      with text_emb and prompt (clip-encode output)\n"
    "  -k, --top K         neighbours per query (default 10)\n"
    "      --prior         also the neighbours of the image embedding the prior\n"
    "                      draws for each WORD (the same draw as clip-encode\n"
    "                      WORD... | prior-sample -s SEED)\n"
    "      --prior-model FILE  the prior (default: prior.safetensors)\n"
    "  -S, --steps STR     the prior's timestep respacing (default \"25\")\n"
    "  -g, --guidance F    the prior's guidance scale (default: the model's)\n"
    "  -i, --image FILE    also the neighbours of each picture of FILE (PNGs or\n"
    "                      records: pixels, else image_emb); may repeat\n"
    "      --cache FILE    the vocabulary cache (default: vocab-CHECKSUM.rec in\n"
    "                      $UNCLIP_CACHE, else $XDG_CACHE_HOME/unclip, else\n"
    "                      ~/.cache/unclip)\n"
    "                      (a --cache FILE of another model, or a file that\n"
    "                      is not a cache, is an error; a damaged cache is\n"
    "                      made again)\n"
    "      --no-cache      encode the vocabulary without reading or writing a cache\n"
    "  -f, --format FMT    table (default): TSV lines KIND, QUERY, RANK, ENTRY,\n"
    "                      SCORE (KIND piece: ENTRY is the piece and the fifth\n"
    "                      column its id; text, prior, image: a neighbour and its\n"
    "                      cosine); record: one record per line with the fields\n"
    "                      kind, query, rank, entry, and id or score\n"
    "      --any-clip      use embeddings from records that another CLIP made\n"
    "                      (models.clip.checksum not this CLIP's)\n"
    "  -m, --model FILE    CLIP model (default: clip.safetensors, see unclip-model(5))\n"
    "  -t, --threads N     threads (default: all cores)\n"
    "  -s, --seed N        the prior's seed (default 0)\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       more messages (timings)\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Vocabulary entries are shown as the tokenizer writes them: \"</w>\" ends a\n"
    "piece that ends a word. The cache is a record stream, one record per\n"
    "token (prompt, token_id, text_emb, models.clip), usable as a label bank.\n"
    "Exit status: 0 ok, 1 data error, 2 usage error.\n";

enum { OPT_PRIOR = 256, OPT_PRIOR_MODEL, OPT_CACHE, OPT_NO_CACHE };
#define VOCAB_BATCH 256 /* tokens per forward when building the cache */
#define MAX_QUERY_PIECES 4096

typedef struct {
    uc_cli cli;
    uc_clipuse u;
    uc_clipuse_bank lex;
    float *unit; /* [n, D]: the lexicon's rows normalised */
    int top, records;
} lexicon;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- output ---- */

static void cell(FILE *f, const char *s)
{
    for (; *s; s++)
        fputc(*s == '\t' || *s == '\n' || *s == '\r' ? ' ' : *s, f);
}

/* One line of the table, or one record: id >= 0 for pieces, else score. */
static void row(const lexicon *L, const char *kind, const char *query, int rank, const char *entry, size_t elen,
                long id, double score)
{
    char *e = uc_alloc(elen + 1, 1);
    memcpy(e, entry, elen);
    if (!L->records) {
        printf("%s\t", kind);
        cell(stdout, query);
        printf("\t%d\t", rank);
        cell(stdout, e);
        if (id >= 0)
            printf("\t%ld\n", id);
        else
            printf("\t%.4f\n", score);
    } else {
        rec *r = rec_new();
        rec_set_str(r, "kind", kind);
        rec_set_str(r, "query", query);
        rec_set_u64(r, "rank", (uint64_t)rank);
        rec_set_str(r, "entry", e);
        if (id >= 0)
            rec_set_u64(r, "id", (uint64_t)id);
        else
            rec_set_f64(r, "score", score);
        uc_emit_record(&L->cli, r);
    }
    uc_free(e);
}

typedef struct {
    float score;
    int idx;
} scored;

static int by_score(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/* The K lexicon entries nearest (cosine) to e [D]. */
static void neighbours(const lexicon *L, const char *kind, const char *query, const float *e)
{
    int n = L->lex.n, D = L->u.D;
    double nn = 0;
    for (int j = 0; j < D; j++)
        nn += (double)e[j] * e[j];
    float inv = nn > 0 ? (float)(1.0 / sqrt(nn)) : 0.0f;
    scored *s = uc_alloc((size_t)n, sizeof *s);
    for (int i = 0; i < n; i++) {
        const float *u = L->unit + (size_t)i * (size_t)D;
        double d = 0;
        for (int j = 0; j < D; j++)
            d += (double)u[j] * e[j];
        s[i] = (scored){(float)(d * inv), i};
    }
    qsort(s, (size_t)n, sizeof *s, by_score);
    for (int k = 0; k < n && k < L->top; k++) {
        const char *lab = L->lex.label[s[k].idx];
        row(L, kind, query, k + 1, lab, strlen(lab), -1, s[k].score);
    }
    uc_free(s);
}

/* ---- the vocabulary and its cache ---- */

static void cache_path(const uc_cli *c, const char *checksum, char *buf, size_t n)
{
    const char *dir = getenv("UNCLIP_CACHE"), *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    char base[4096];
    if (dir && *dir)
        snprintf(base, sizeof base, "%s", dir);
    else if (xdg && *xdg)
        snprintf(base, sizeof base, "%s/unclip", xdg);
    else if (home && *home)
        snprintf(base, sizeof base, "%s/.cache/unclip", home);
    else
        uc_die(c, UC_EXIT_DATA, "no cache directory: set UNCLIP_CACHE or HOME, or give --cache or --no-cache");
    /* create it (and the directories above it), like mkdir -p */
    for (char *p = base + 1;; p++) {
        if (*p == '/' || !*p) {
            char save = *p;
            *p = 0;
            if (mkdir(base, 0777) && errno != EEXIST)
                uc_die(c, UC_EXIT_DATA, "%s: %s", base, strerror(errno));
            *p = save;
            if (!save)
                break;
        }
    }
    /* the checksum as a file name: letters and digits, others to '-' */
    char key[80];
    size_t k = 0;
    for (const char *p = checksum; *p && k + 1 < sizeof key; p++)
        key[k++] = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ? *p : '-';
    key[k] = 0;
    if ((size_t)snprintf(buf, n, "%s/vocab-%s.rec", base, key) >= n)
        uc_die(c, UC_EXIT_DATA, "%s: cache path too long", base);
}

/* Read the cache: 0 when it holds the whole vocabulary for this model,
 * -2 when it was made with another model or is no cache at all (its first
 * record unreadable or without token_id), -1 (uc_err says why) when it is
 * missing or damaged; lex is left empty unless 0. */
static int cache_read(lexicon *L, const char *path, int V)
{
    FILE *probe = fopen(path, "rb");
    if (!probe)
        return uc_err("%s: %s", path, strerror(errno));
    fclose(probe);
    rec_reader *rr = uc_open_records(&L->cli, path);
    float *e = uc_alloc((size_t)L->u.D, sizeof *e);
    rec *r;
    int got, rc = 0;
    while (!rc && (got = rec_read(rr, &r)) != 0) {
        if (got < 0) {
            rc = L->lex.n ? -1 : -2;
            break;
        }
        const char *label = rec_get_str(r, "prompt");
        uint64_t id;
        if (L->lex.n == 0 && !rec_has(r, "token_id")) {
            uc_err("%s: not a vocabulary cache (its first record has no token_id)", path);
            rc = -2;
        } else if (!label || rec_get_u64(r, "token_id", &id))
            rc = uc_err_prefix("%s", path);
        else if (id != (uint64_t)L->lex.n || L->lex.n >= V)
            rc = uc_err("%s: record %ld: token_id %llu out of order or beyond the vocabulary of %d", path,
                        rec_number(r), (unsigned long long)id, V);
        if (!rc && L->lex.n == 0) { /* the model it was made with */
            rec *mo = rec_get_map(r, "models"), *cl = mo ? rec_get_map(mo, "clip") : NULL;
            const char *sum = cl ? rec_get_str(cl, "checksum") : NULL;
            if (!sum || strcmp(sum, L->u.info->model.checksum) != 0) {
                uc_err("%s: made with another model (models.clip.checksum %s)", path, sum ? sum : "missing");
                rc = -2;
            }
            rec_free(cl);
            rec_free(mo);
        }
        if (!rc)
            rc = uc_clipuse_record_text(&L->u, r, path, e);
        if (!rc)
            rc = uc_clipuse_bank_add(&L->lex, &L->u, label, e, (int32_t)id);
        rec_free(r);
    }
    if (!rc && L->lex.n != V)
        rc = uc_err("%s: %d entries, the vocabulary has %d", path, L->lex.n, V);
    rec_reader_free(rr);
    uc_free(e);
    if (rc)
        uc_clipuse_bank_free(&L->lex);
    return rc;
}

/* Encode every token alone: <|startoftext|> id <|endoftext|>. */
static void vocab_encode(lexicon *L, int V)
{
    const uc_clipuse *u = &L->u;
    int ctx = u->ctx, D = u->D;
    if (ctx < 3)
        uc_die(&L->cli, UC_EXIT_DATA, "%s: context length %d, a token needs 3", u->path, ctx);
    int32_t *tok = uc_alloc((size_t)VOCAB_BATCH * (size_t)ctx, sizeof *tok);
    float *e = uc_alloc((size_t)VOCAB_BATCH * (size_t)D, sizeof *e);
    int32_t sot = uc_bpe_sot(u->bpe), eot = uc_bpe_eot(u->bpe);
    double t0 = now();
    for (int i0 = 0; i0 < V; i0 += VOCAB_BATCH) {
        int nb = UC_MIN(VOCAB_BATCH, V - i0);
        memset(tok, 0, (size_t)nb * (size_t)ctx * sizeof *tok);
        for (int j = 0; j < nb; j++) {
            tok[j * ctx] = sot;
            tok[j * ctx + 1] = i0 + j;
            tok[j * ctx + 2] = eot;
        }
        if (clip_encode_text(u->m, tok, nb, NULL, e))
            uc_die_err(&L->cli);
        for (int j = 0; j < nb; j++) {
            size_t len;
            const char *p = uc_bpe_piece(u->bpe, i0 + j, &len);
            char *s = uc_alloc(len + 1, 1);
            memcpy(s, p, len);
            if (uc_clipuse_bank_add(&L->lex, u, s, e + (size_t)j * (size_t)D, i0 + j))
                uc_die_err(&L->cli);
            uc_free(s);
        }
        uc_progress(&L->cli, "vocabulary", i0 + nb, V);
        if (L->cli.verbose > 0 && (i0 / VOCAB_BATCH) % 16 == 15) /* a line every 4096 tokens */
            uc_info(&L->cli, "vocabulary: %d of %d tokens encoded, %.1f s", i0 + nb, V, now() - t0);
    }
    uc_free(tok);
    uc_free(e);
}

static void cache_write(lexicon *L, const char *path)
{
    FILE *f = uc_out_open(&L->cli, path);
    int64_t D = L->u.D;
    rec *mo = rec_new();
    rec_del(mo, "version");
    rec_set_str(mo, "id", L->u.info->model.id);
    rec_set_str(mo, "checksum", L->u.info->model.checksum);
    for (int i = 0; i < L->lex.n; i++) {
        rec *r = rec_new();
        rec_set_str(r, "prompt", L->lex.label[i]);
        rec_set_u64(r, "token_id", (uint64_t)L->lex.id[i]);
        rec_set_tensor(r, "text_emb", UC_F32, 1, &D, L->lex.emb + (size_t)i * (size_t)D);
        rec_set_stage(r, "models", "clip", mo);
        if (rec_write(r, f))
            uc_die(&L->cli, UC_EXIT_DATA, "%s: %s", path, uc_errmsg());
        rec_free(r);
    }
    rec_free(mo);
    uc_out_commit(&L->cli, f);
}

static void load_vocabulary(lexicon *L, const char *cache, int no_cache)
{
    int V = uc_bpe_vocab_size(L->u.bpe);
    char path[4096];
    if (!no_cache) {
        if (cache)
            snprintf(path, sizeof path, "%s", cache);
        else
            cache_path(&L->cli, L->u.info->model.checksum, path, sizeof path);
    }
    double t0 = now();
    if (!no_cache) {
        int rc = cache_read(L, path, V);
        if (rc == 0) {
            uc_info(&L->cli, "lexicon: %d vocabulary entries read from %s in %.3f s", V, path, now() - t0);
            return;
        }
        if (rc == -2 && cache) /* the user's file: not overwritten */
            uc_die(&L->cli, UC_EXIT_DATA, "--cache %s (give another file)", uc_errmsg());
        uc_info(&L->cli, "no usable cache (%s): encoding the vocabulary", uc_errmsg());
    }
    vocab_encode(L, V);
    uc_info(&L->cli, "lexicon: %d vocabulary entries encoded in %.3f s", V, now() - t0);
    if (!no_cache) {
        double t1 = now();
        cache_write(L, path);
        uc_info(&L->cli, "cache %s written in %.3f s", path, now() - t1);
    }
}

/* ---- the prior ---- */

typedef struct {
    uc_prior *p;
    const char *steps; /* the respacing (the prior keeps its schedule) */
    int sampler;
    double guidance;
    uint64_t seed;
} prior_ctx;

typedef struct {
    uc_rng *rng;
    int64_t dim;
} noise_ctx;

static int draw_noise(void *ctx, int draw, float *out, int64_t nelem)
{
    noise_ctx *n = ctx;
    (void)draw;
    if (nelem != n->dim)
        return uc_err("noise request of %lld values for one sample", (long long)nelem);
    uc_rng_normal(n->rng, out, n->dim);
    return 0;
}

static void prior_open(prior_ctx *P, const uc_cli *c, const uc_clipuse *u, const char *path, const char *steps,
                       double guidance)
{
    if (!path)
        path = uc_model_find(c, "prior");
    if (!(P->p = uc_prior_open(path)))
        uc_die_err(c);
    const uc_prior_info *pi = uc_prior_get_info(P->p);
    if (pi->clip_dim != u->D || pi->text_dim != u->W || pi->text_ctx != u->ctx)
        uc_die(c, UC_EXIT_DATA,
               "%s: the prior reads CLIP embeddings of %d, token sequences [%d, %d]; %s gives %d and [%d, %d]", path,
               pi->clip_dim, pi->text_ctx, pi->text_dim, u->path, u->D, u->ctx, u->W);
    if (!c->any_clip && !uc_model_pairs(&pi->model, u->info->model.id, u->info->model.checksum))
        uc_die(c, UC_EXIT_DATA, "%s: the prior pairs with %.200s, not with this CLIP, %.100s (%s) (--any-clip to use it "
               "anyway)", path, pi->model.clip, u->info->model.id, u->info->model.checksum);
    P->guidance = guidance ? guidance : pi->model.default_guidance ? pi->model.default_guidance : 4.0;
    int nsteps;
    if (uc_prior_schedule(P->p, steps, &nsteps))
        uc_die(c, UC_EXIT_USAGE, "--steps: %s", uc_errmsg());
    P->steps = steps;
    P->sampler = uc_sampler_for_respacing(steps);
    P->seed = c->seed_set ? c->seed : 0;
}

/* The embedding prior-sample -s SEED draws for the record clip-encode
 * writes for word: its first sample. Noise is data of the record (its
 * noise key, from the prompt), so this is the same embedding. */
static void prior_draw(prior_ctx *P, const uc_cli *c, const uc_clipuse *u, const char *word, float *out)
{
    const char *texts[2] = {word, ""};
    int D = u->D, T = u->ctx, W = u->W;
    float *emb = uc_alloc(2 * (size_t)D, sizeof *emb), *seq = uc_alloc(2 * (size_t)T * (size_t)W, sizeof *seq);
    uint8_t *mask = uc_alloc(2 * (size_t)T, 1);
    if (uc_clipuse_texts_seq(u, texts, NULL, 2, emb, seq, NULL, mask, NULL))
        uc_die(c, UC_EXIT_DATA, "%s: %s", word, uc_errmsg());
    uc_prior_text *txt;
    if (uc_prior_text_new(P->p, 2, emb, seq, mask, &txt))
        uc_die_err(c);
    uc_rng rng;
    uc_rng_init(&rng, uc_stage_key(P->seed, uc_noise_key_text(word, ""), "prior"), 0);
    noise_ctx nc = {&rng, D};
    int64_t cond = 0, uncond = 1;
    float scale = (float)P->guidance;
    uc_stage_opts so = {.respacing = P->steps, .sampler = (uc_sampler)P->sampler, .noise = draw_noise, .noise_ctx = &nc};
    uc_prior_batch pb = {.text = txt, .n = 1, .cond = &cond, .uncond = &uncond, .scale = &scale};
    if (uc_prior_sample(P->p, &so, &pb, out))
        uc_die(c, UC_EXIT_DATA, "%s: %s", word, uc_errmsg());
    uc_prior_text_free(txt);
    uc_free(emb);
    uc_free(seq);
    uc_free(mask);
}

/* ---- queries ---- */

static void query_word(lexicon *L, const char *word, prior_ctx *P)
{
    const uc_cli *c = &L->cli;
    int32_t *ids = uc_alloc(MAX_QUERY_PIECES, sizeof *ids);
    int n = uc_bpe_encode(L->u.bpe, word, ids, MAX_QUERY_PIECES);
    if (n < 0)
        uc_die(c, UC_EXIT_DATA, "%s: %s", word, uc_errmsg());
    if (n > MAX_QUERY_PIECES)
        uc_warn(c, "%s: %d pieces, the first %d shown", word, n, MAX_QUERY_PIECES);
    if (n + 2 > L->u.ctx && c->verbose >= 0)
        uc_warn(c, "%s: %d tokens, truncated to the context of %d", word, n + 2, L->u.ctx);
    for (int i = 0; i < n && i < MAX_QUERY_PIECES; i++) {
        size_t len;
        const char *p = uc_bpe_piece(L->u.bpe, ids[i], &len);
        row(L, "piece", word, i + 1, p, len, ids[i], 0);
    }
    uc_free(ids);
    float *e = uc_alloc((size_t)L->u.D, sizeof *e);
    const char *texts[1] = {word};
    if (uc_clipuse_texts(&L->u, texts, NULL, 1, e, NULL))
        uc_die(c, UC_EXIT_DATA, "%s: %s", word, uc_errmsg());
    neighbours(L, "text", word, e);
    if (P) {
        prior_draw(P, c, &L->u, word, e);
        neighbours(L, "prior", word, e);
    }
    uc_free(e);
}

static void query_images(lexicon *L, const char *path)
{
    const uc_cli *c = &L->cli;
    const char *src = strcmp(path, "-") ? path : "stdin";
    uc_image_reader *ir = uc_image_reader_open_path(path);
    if (!ir)
        uc_die_err(c);
    /* every picture first, so that names are FILE alone for one, FILE#N for several */
    int D = L->u.D, n = 0, cap = 0;
    float *e = NULL;
    char **names = NULL;
    rec *r;
    int got;
    while ((got = uc_image_reader_next(ir, &r)) > 0) {
        if (n == 1 << 20)
            uc_die(c, UC_EXIT_DATA, "%s: more than %d images", src, 1 << 20);
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            e = uc_xrealloc(e, (size_t)cap * (size_t)D, sizeof *e);
            names = uc_xrealloc(names, (size_t)cap, sizeof *names);
        }
        if (uc_clipuse_record_image(&L->u, r, src, 0, e + (size_t)n * (size_t)D))
            uc_die_err(c);
        const char *s = rec_has(r, "source") ? rec_get_str(r, "source") : NULL;
        names[n++] = s ? uc_strdup(s) : NULL;
        rec_free(r);
    }
    if (got < 0)
        uc_die_err(c);
    if (n == 0)
        uc_die(c, UC_EXIT_DATA, "%s: no image", src);
    for (int i = 0; i < n; i++) {
        char name[4200];
        if (names[i])
            snprintf(name, sizeof name, "%s", names[i]);
        else
            snprintf(name, sizeof name, n > 1 ? "%s#%d" : "%s", src, i + 1);
        neighbours(L, "image", name, e + (size_t)i * (size_t)D);
        uc_free(names[i]);
    }
    uc_free(names);
    uc_free(e);
    uc_image_reader_free(ir);
}

int main(int argc, char **argv)
{
    lexicon L = {.top = 10};
    uc_cli *c = &L.cli;
    uc_cli_init(c, "clip-lexicon", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS, UC_ANY_CLIP_LONGOPT,
        {"lexicon", 1, 0, 'L'},
        {"top", 1, 0, 'k'},
        {"prior", 0, 0, OPT_PRIOR},
        {"prior-model", 1, 0, OPT_PRIOR_MODEL},
        {"steps", 1, 0, 'S'},
        {"guidance", 1, 0, 'g'},
        {"image", 1, 0, 'i'},
        {"cache", 1, 0, OPT_CACHE},
        {"no-cache", 0, 0, OPT_NO_CACHE},
        {"format", 1, 0, 'f'},
        {0, 0, 0, 0},
    };
    const char *lexfile = NULL, *prior_model = NULL, *steps = "25", *cache = NULL;
    const char **images = uc_alloc((size_t)argc + 1, sizeof *images);
    int nimages = 0, use_prior = 0, no_cache = 0, opt;
    double guidance = 0;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "L:k:S:g:i:f:", longopts, NULL)) != -1) {
        if (uc_cli_common(c, opt, optarg))
            continue;
        switch (opt) {
        case 'L': lexfile = optarg; break;
        case 'k': L.top = (int)uc_parse_long(c, "--top", optarg, 1, 1 << 22); break;
        case OPT_PRIOR: use_prior = 1; break;
        case OPT_PRIOR_MODEL: prior_model = optarg, use_prior = 1; break;
        case 'S': steps = uc_parse_steps(c, optarg); break;
        case 'g': guidance = uc_parse_guidance(c, optarg); break;
        case 'i': images[nimages++] = optarg; break;
        case OPT_CACHE: cache = optarg; break;
        case OPT_NO_CACHE: no_cache = 1; break;
        case 'f':
            if (strcmp(optarg, "table") == 0)
                L.records = 0;
            else if (strcmp(optarg, "record") == 0 || strcmp(optarg, "records") == 0)
                L.records = 1;
            else
                uc_die(c, UC_EXIT_USAGE, "--format: '%s' is not table or record", optarg);
            break;
        default: uc_die(c, UC_EXIT_USAGE, "bad option");
        }
    }
    if (cache && no_cache)
        uc_die(c, UC_EXIT_USAGE, "--cache and --no-cache exclude each other");
    if (cache && lexfile)
        uc_die(c, UC_EXIT_USAGE, "--cache is the vocabulary's; --lexicon gives another lexicon");
    int words_from_stdin = optind == argc && nimages == 0;
    for (int i = 0; i < nimages; i++)
        if (strcmp(images[i], "-") == 0 && (words_from_stdin || (lexfile && strcmp(lexfile, "-") == 0)))
            uc_die(c, UC_EXIT_USAGE, "standard input can be read only once");
    if (words_from_stdin && lexfile && strcmp(lexfile, "-") == 0)
        uc_die(c, UC_EXIT_USAGE, "standard input can be read only once (give WORDs as arguments)");
    uc_cli_ready(c);

    uc_clipuse_open(&L.u, c, UC_CLIPUSE_TEXT | (nimages ? UC_CLIPUSE_VISION : 0));
    double t0 = now();
    if (lexfile) {
        if (uc_clipuse_bank_read(&L.lex, &L.u, lexfile) || uc_clipuse_bank_encode(&L.lex, &L.u))
            uc_die_err(c);
        uc_info(c, "lexicon: %d entries from %s in %.3f s", L.lex.n, lexfile, now() - t0);
    } else {
        load_vocabulary(&L, cache, no_cache);
    }
    int D = L.u.D;
    L.unit = uc_alloc((size_t)L.lex.n * (size_t)D, sizeof *L.unit);
    for (int i = 0; i < L.lex.n; i++) {
        const float *x = L.lex.emb + (size_t)i * (size_t)D;
        double nn = 0;
        for (int j = 0; j < D; j++)
            nn += (double)x[j] * x[j];
        float inv = nn > 0 ? (float)(1.0 / sqrt(nn)) : 0.0f;
        for (int j = 0; j < D; j++)
            L.unit[(size_t)i * (size_t)D + j] = x[j] * inv;
    }

    prior_ctx P, *pp = NULL;
    if (use_prior) {
        prior_open(&P, c, &L.u, prior_model, steps, guidance);
        pp = &P;
    }
    uint64_t nwords = 0;
    for (int i = optind; i < argc; i++)
        query_word(&L, argv[i], pp);
    if (words_from_stdin) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        long lineno = 0;
        while ((len = getline(&line, &cap, stdin)) >= 0) {
            lineno++;
            if ((size_t)len != strlen(line))
                uc_die(c, UC_EXIT_DATA, "stdin line %ld: contains a NUL byte", lineno);
            if (len > UC_CLIPUSE_LINE_MAX)
                uc_die(c, UC_EXIT_DATA, "stdin line %ld: more than %d bytes", lineno, UC_CLIPUSE_LINE_MAX);
            while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                line[--len] = 0;
            if (len > 0) {
                query_word(&L, line, pp);
                nwords++;
            }
        }
        if (ferror(stdin))
            uc_die(c, UC_EXIT_DATA, "stdin: read error");
        free(line);
        if (nwords == 0)
            uc_die(c, UC_EXIT_DATA, "stdin: empty input (no words)");
    }
    for (int i = 0; i < nimages; i++)
        query_images(&L, images[i]);
    uc_info(c, "total %.3f s", now() - t0);
    uc_stdout_check(c);
    if (pp) {
        uc_prior_free(P.p);
    }
    uc_free(images);
    uc_free(L.unit);
    uc_clipuse_bank_free(&L.lex);
    uc_clipuse_close(&L.u);
    return UC_EXIT_OK;
}
