/* clip-encode - prompts (or images) to CLIP records: tokens, token mask,
 * pooled text embedding and token sequence, with the unconditional
 * (negative) prompt's encoding alongside for classifier-free guidance. */
#define _POSIX_C_SOURCE 200809L /* getline */
#include <ctype.h>
#include <math.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/png.h"
#include "formats/record.h"
#include "libcommon/text/bpe.h"
#include "libcommon/cli/cli.h"
#include "libcommon/cli/stage.h"
#include "libcommon/cli/clipuse.h"
#include "libcommon/models/clip.h"
#include "formats/base.h"
#include "libcommon/models/model.h"

static const char usage[] =
    "Usage: clip-encode [OPTION]... [PROMPT]...\n"
    "  or:  clip-encode [OPTION]... --image FILE...\n"
    "Encode prompts with CLIP's text encoder: one record per prompt on standard\n"
    "output with prompt, tokens, token_mask, text_emb, text_seq and uncond (the\n"
    "same fields for the negative prompt, for classifier-free guidance).\n"
    "With no PROMPT, prompts are read from standard input, one per line (empty\n"
    "lines are skipped; give \"\" as an argument for the empty prompt).\n"
    "\n"
    "  -N, --negative TEXT  prompt of the unconditional branch (default \"\");\n"
    "                       -n is a count in every other tool, so not this\n"
    "  -i, --image          the arguments are PNG files (- for standard input):\n"
    "                       one record per image with image_emb and source, the\n"
    "                       empty prompt's text fields and uncond (for variations)\n"
    "      --seq-f16        store text_seq as F16 instead of F32\n"
    UC_VERIFY_HELP
    "  -m, --model FILE     CLIP model (safetensors, OpenAI or Hugging Face key\n"
    "                       names, or a Hugging Face model directory); default:\n"
    "                       clip.safetensors in $UNCLIP_MODELS or the models\n"
    "                       directory\n"
    "  -t, --threads N      threads (default: all cores)\n"
    "  -s, --seed N         accepted for uniformity; nothing random is drawn\n"
    "      --progress WHEN  auto (a bar when stderr is a terminal), json (one\n"
    "                       object an image on stderr) or none\n"
    "  -q, --quiet          no messages but errors (no truncation warnings)\n"
    "  -v, --verbose        more messages\n"
    "  -h, --help           this help\n"
    "  -V, --version        version\n"
    "\n"
    "Prompts longer than the context (77 tokens for OpenAI CLIP) are truncated\n"
    "as clip.tokenize(truncate=True) does, with a warning. Prompts must be\n"
    "UTF-8. The tokenizer is the model's own (unclip.tokenizer.merges) or\n"
    "bpe_simple_vocab_16e6.txt.gz ($UNCLIP_VOCAB).\n"
    "Exit status: 0 ok, 1 data error, 2 usage error.\n";

enum { OPT_SEQ_F16 = 256 };
#define BATCH 8 /* text rows per forward */

typedef struct {
    uc_cli *cli;
    uc_clipuse u;
    const clip_model *m;
    const uc_bpe *bpe;
    int ctx, W, D;
    int seq_f16;
    const uc_model_info *model;
    const char *vocabulary; /* the model's words, space-separated, or NULL */
} encoder;

/* Warn (one line) about the words of a prompt that the model's vocabulary
 * lacks: letters and digits make a word, case folded as the tokenizer
 * folds ASCII. A model without unclip.vocabulary says nothing. */
static void check_words(const encoder *e, const char *label, const char *prompt)
{
    if (!e->vocabulary || e->cli->verbose < 0)
        return;
    char unknown[256] = "", word[64];
    int nunknown = 0;
    for (const char *p = prompt; *p;) {
        while (*p && !isalnum((unsigned char)*p))
            p++;
        size_t n = 0;
        while (isalnum((unsigned char)*p) || (*p & 0x80)) {
            if (n < sizeof word - 1)
                word[n++] = (char)tolower((unsigned char)*p);
            p++;
        }
        word[n] = 0;
        if (!n)
            continue;
        int known = 0;
        for (const char *v = e->vocabulary; *v && !known;) {
            size_t m = strcspn(v, " ");
            known = m == n && !memcmp(v, word, n);
            v += m + (v[m] == ' ');
        }
        if (!known && nunknown++ < 8)
            snprintf(unknown + strlen(unknown), sizeof unknown - strlen(unknown), "%s%s", nunknown > 1 ? ", " : "",
                     word);
    }
    if (nunknown)
        uc_warn(e->cli, "%s: %d word%s this model never saw (%s%s); its words are in unclip.vocabulary "
                "(for the default model, the shapes world's grammar: shapes-render(1))",
                label, nunknown, nunknown > 1 ? "s" : "", unknown, nunknown > 8 ? ", ..." : "");
}

/* One encoded text: the fields of a record or of its uncond map. */
typedef struct {
    const char *prompt;
    int32_t *tokens;  /* [ctx] */
    uint8_t *mask;    /* [ctx] */
    float *emb;       /* [D] */
    float *seq;       /* [ctx, W] */
} text_enc;

static void text_alloc(const encoder *e, text_enc *t, int n)
{
    t->tokens = uc_alloc((size_t)n * (size_t)e->ctx, sizeof *t->tokens);
    t->mask = uc_alloc((size_t)n * (size_t)e->ctx, 1);
    t->emb = uc_alloc((size_t)n * (size_t)e->D, sizeof *t->emb);
    t->seq = uc_alloc((size_t)n * (size_t)e->ctx * (size_t)e->W, sizeof *t->seq);
}

static void text_free(text_enc *t)
{
    uc_free(t->tokens);
    uc_free(t->mask);
    uc_free(t->emb);
    uc_free(t->seq);
}

/* Row i of a batch as a text_enc view. */
static text_enc text_row(const encoder *e, const text_enc *b, int i, const char *prompt)
{
    size_t c = (size_t)e->ctx;
    return (text_enc){prompt, b->tokens + (size_t)i * c, b->mask + (size_t)i * c, b->emb + (size_t)i * (size_t)e->D,
                      b->seq + (size_t)i * c * (size_t)e->W};
}

/* Tokenize prompts[n] and encode them in one forward into b (allocated for
 * n rows); labels name them in messages; truncated[n] (or NULL) says which
 * did not fit. */
static void encode_texts(const encoder *e, const char *const *prompts, const char *const *labels, int n,
                         text_enc *b, int *truncated)
{
    int *ntok = uc_alloc((size_t)n, sizeof *ntok);
    for (int i = 0; i < n; i++)
        check_words(e, labels[i], prompts[i]);
    if (uc_clipuse_texts_seq(&e->u, prompts, labels, n, b->emb, b->seq, b->tokens, b->mask, ntok))
        uc_die_err(e->cli);
    for (int i = 0; i < n; i++) {
        if (truncated)
            truncated[i] = ntok[i] > e->ctx;
        if (ntok[i] > e->ctx && e->cli->verbose >= 0)
            uc_warn(e->cli, "%s: %d tokens, truncated to the context of %d", labels[i], ntok[i], e->ctx);
    }
    uc_free(ntok);
}

static void set_text_fields(const encoder *e, rec *r, const text_enc *t)
{
    int64_t ctx = e->ctx, W = e->W, D = e->D;
    rec_set_str(r, "prompt", t->prompt);
    rec_set_tensor(r, "tokens", UC_I32, 1, &ctx, t->tokens);
    rec_set_tensor(r, "token_mask", UC_U8, 1, &ctx, t->mask);
    rec_set_tensor(r, "text_emb", UC_F32, 1, &D, t->emb);
    int64_t shape[2] = {ctx, W};
    if (e->seq_f16) {
        size_t n = (size_t)(ctx * W);
        uint16_t *h = uc_alloc(n, sizeof *h);
        for (size_t i = 0; i < n; i++)
            h[i] = uc_f32_to_f16(t->seq[i]);
        rec_set_tensor(r, "text_seq", UC_F16, 2, shape, h);
        uc_free(h);
    } else {
        rec_set_tensor(r, "text_seq", UC_F32, 2, shape, t->seq);
    }
}

static rec *new_map(void)
{
    rec *m = rec_new();
    rec_del(m, "version");
    return m;
}

/* One output record: text fields (t), negative_prompt and uncond (unc),
 * image_emb and source (image records), params, models, history. */
/* Exit 1 unless x[0..n) is finite: a damaged model must not write NaN. */
static void finite(const encoder *e, const char *what, const char *field, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            uc_die(e->cli, UC_EXIT_DATA, "%s: field %s: clip-encode computed %s at element %lld (a damaged model?)",
                   what, field, isnan(x[i]) ? "NaN" : "an infinity", (long long)i);
}

static void emit(const encoder *e, const text_enc *t, const text_enc *unc, const float *image_emb,
                 const char *source, int truncated, uint64_t noise_key)
{
    const text_enc *both[2] = {t, unc};
    for (int k = 0; k < 2; k++)
        if (both[k]) {
            const char *what = both[k]->prompt[0] ? both[k]->prompt : "the empty prompt";
            finite(e, what, k ? "uncond.text_emb" : "text_emb", both[k]->emb, e->D);
            finite(e, what, k ? "uncond.text_seq" : "text_seq", both[k]->seq, (int64_t)e->ctx * e->W);
        }
    if (image_emb)
        finite(e, source, "image_emb", image_emb, e->D);
    rec *r = rec_new();
    rec_set_u64(r, "noise_key", noise_key); /* the record's noise, wherever it goes later */
    if (t)
        set_text_fields(e, r, t);
    if (unc && unc->prompt[0])
        rec_set_str(r, "negative_prompt", unc->prompt);
    if (unc) {
        rec *u = new_map();
        set_text_fields(e, u, unc);
        rec_set_map(r, "uncond", u);
        rec_free(u);
    }
    if (image_emb) {
        int64_t D = e->D;
        rec_set_tensor(r, "image_emb", UC_F32, 1, &D, image_emb);
        rec_set_str(r, "source", source);
    }
    rec *p = new_map();
    if (unc)
        rec_set_str(p, "negative_prompt", unc->prompt);
    if (t) {
        rec_set_str(p, "text_seq_dtype", e->seq_f16 ? "F16" : "F32");
        rec_set_u64(p, "truncated", (uint64_t)truncated);
    }
    rec_set_stage(r, "params", "clip", p);
    rec_free(p);
    uc_set_model_info(r, "clip", e->model); /* the CLIP that made the embeddings; later stages pass it on */
    rec_history_add(r, e->cli->tool, e->cli->argc, e->cli->argv);
    if (rec_write(r, stdout))
        uc_die_err(e->cli);
    rec_free(r);
}

/* Encode and write a batch of prompts; the first call also encodes the
 * negative prompt (in the same forward) into *unc. */
static void run_batch(const encoder *e, char **prompts, char **labels, int n, const char *negative, text_enc *unc,
                      int *have_unc)
{
    const char *p[BATCH + 1], *l[BATCH + 1];
    int rows = 0;
    for (int i = 0; i < n; i++, rows++) {
        p[rows] = prompts[i];
        l[rows] = labels[i];
    }
    if (!*have_unc) {
        p[rows] = negative;
        l[rows++] = "negative prompt";
    }
    text_enc b;
    int truncated[BATCH + 1];
    text_alloc(e, &b, rows);
    encode_texts(e, p, l, rows, &b, truncated);
    if (!*have_unc) {
        text_enc u = text_row(e, &b, rows - 1, negative);
        memcpy(unc->tokens, u.tokens, (size_t)e->ctx * sizeof *u.tokens);
        memcpy(unc->mask, u.mask, (size_t)e->ctx);
        memcpy(unc->emb, u.emb, (size_t)e->D * sizeof *u.emb);
        memcpy(unc->seq, u.seq, (size_t)e->ctx * (size_t)e->W * sizeof *u.seq);
        unc->prompt = negative;
        *have_unc = 1;
    }
    for (int i = 0; i < n; i++) {
        text_enc t = text_row(e, &b, i, prompts[i]);
        emit(e, &t, unc, NULL, NULL, truncated[i], uc_noise_key_text(t.prompt, unc->prompt));
    }
    text_free(&b);
}

static void encode_prompts(encoder *e, int nargs, char **args, const char *negative)
{
    text_enc unc;
    int have_unc = 0;
    text_alloc(e, &unc, 1);
    char *prompts[BATCH], *labels[BATCH];
    int n = 0;
    if (nargs > 0) {
        for (int i = 0; i < nargs; i++) {
            labels[n] = uc_alloc(32, 1);
            snprintf(labels[n], 32, "prompt %d", i + 1);
            prompts[n++] = args[i];
            if (n == BATCH || i == nargs - 1) {
                run_batch(e, prompts, labels, n, negative, &unc, &have_unc);
                for (int k = 0; k < n; k++)
                    uc_free(labels[k]);
                n = 0;
            }
        }
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        long lineno = 0, nprompts = 0;
        for (;;) {
            len = getline(&line, &cap, stdin);
            if (len >= 0) {
                lineno++;
                if ((size_t)len != strlen(line))
                    uc_die(e->cli, UC_EXIT_DATA, "stdin line %ld: contains a NUL byte", lineno);
                while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
                    line[--len] = 0;
                if (len == 0)
                    continue;
                labels[n] = uc_alloc(48, 1);
                snprintf(labels[n], 48, "stdin line %ld", lineno);
                prompts[n++] = uc_strdup(line);
                nprompts++;
            } else if (ferror(stdin)) {
                uc_die(e->cli, UC_EXIT_DATA, "stdin: read error");
            }
            if (n == BATCH || (len < 0 && n > 0)) {
                run_batch(e, prompts, labels, n, negative, &unc, &have_unc);
                for (int k = 0; k < n; k++) {
                    uc_free(labels[k]);
                    uc_free(prompts[k]);
                }
                n = 0;
            }
            if (len < 0)
                break;
        }
        free(line);
        if (nprompts == 0)
            uc_die(e->cli, UC_EXIT_DATA, "stdin: empty input (no prompts)");
    }
    text_free(&unc);
}

static void encode_images(encoder *e, int n, char **files, const char *negative)
{
    const clip_model *m = e->m;
    const clip_info *mi = clip_get_info(m);
    if (!mi->has_vision)
        uc_die(e->cli, UC_EXIT_DATA, "%s: this CLIP model has no vision tower", e->u.path);
    /* The empty prompt's text fields and the negative prompt's, once. */
    text_enc b = {0}, cond = {0}, unc = {0};
    if (e->bpe) {
        const char *p[2] = {"", negative}, *l[2] = {"empty prompt", "negative prompt"};
        int rows = negative[0] ? 2 : 1;
        text_alloc(e, &b, rows);
        encode_texts(e, p, l, rows, &b, NULL);
        cond = text_row(e, &b, 0, "");
        unc = text_row(e, &b, rows - 1, negative);
    } else if (!mi->has_text) {
        uc_info(e->cli, "the model has no text tower: records carry image_emb only");
    }
    float *emb = uc_alloc((size_t)e->D, sizeof *emb);
    for (int i = 0; i < n; i++) {
        uc_image img;
        int rc;
        if (strcmp(files[i], "-") == 0)
            rc = uc_png_read(stdin, "stdin", 0, 1, &img);
        else
            rc = uc_png_read_file(files[i], 1, &img);
        if (rc)
            uc_die_err(e->cli);
        if (uc_clipuse_picture(&e->u, &img, emb))
            uc_die(e->cli, UC_EXIT_DATA, "%s: %s", files[i], uc_errmsg());
        size_t npx = (size_t)img.w * (size_t)img.h * (size_t)img.channels;
        uint64_t key = uc_noise_key_bytes(img.px, npx); /* a variation's noise: its picture's */
        uc_image_free(&img);
        emit(e, e->bpe ? &cond : NULL, e->bpe ? &unc : NULL, emb, files[i], 0, key);
        uc_progress(e->cli, "images", i + 1, n);
    }
    uc_free(emb);
    if (e->bpe)
        text_free(&b);
}

int main(int argc, char **argv)
{
    uc_cli c;
    uc_cli_init(&c, "clip-encode", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS, UC_VERIFY_LONGOPT,
        {"negative", 1, 0, 'N'},
        {"image", 0, 0, 'i'},
        {"seq-f16", 0, 0, OPT_SEQ_F16},
        {0, 0, 0, 0},
    };
    const char *negative = "";
    int images = 0, seq_f16 = 0, opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "N:i", longopts, NULL)) != -1) {
        if (uc_cli_common(&c, opt, optarg))
            continue;
        switch (opt) {
        case 'N': negative = optarg; break;
        case 'i': images = 1; break;
        case OPT_SEQ_F16: seq_f16 = 1; break;
        default: uc_die(&c, UC_EXIT_USAGE, "bad option");
        }
    }
    if (images && optind == argc)
        uc_die(&c, UC_EXIT_USAGE, "--image needs at least one FILE");
    uc_cli_ready(&c);

    encoder e = {.cli = &c, .seq_f16 = seq_f16};
    uc_clipuse_open(&e.u, &c, images ? 0 : UC_CLIPUSE_TEXT);
    const clip_model *m = e.m = e.u.m;
    const clip_info *mi = clip_get_info(m);
    e.bpe = e.u.bpe;
    e.ctx = e.u.ctx, e.W = e.u.W, e.D = e.u.D;
    e.model = &mi->model;
    e.vocabulary = mi->model.vocabulary;
    if (mi->has_text && !e.bpe) /* --image: the text fields are optional */
        uc_warn(&c, "records get image_emb only (no text fields): %s", uc_errmsg());
    uc_info(&c, "%s: text %s, vision %s, embed_dim %d", e.u.path, mi->has_text ? "yes" : "no",
            mi->has_vision ? "yes" : "no", mi->embed_dim);

    if (images)
        encode_images(&e, argc - optind, argv + optind, negative);
    else
        encode_prompts(&e, argc - optind, argv + optind, negative);
    uc_stdout_check(&c);
    uc_clipuse_close(&e.u);
    return UC_EXIT_OK;
}
