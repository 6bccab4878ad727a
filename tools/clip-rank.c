/* clip-rank - CLIP as a zero-shot classifier and retriever: score every
 * (text, image) pair with CLIP's own logit scale and rank texts per image
 * (labels for pictures) or images per text (pictures for a caption, and the
 * DALL-E 2 paper's reranking of generated candidates). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/cli/cli.h"
#include "libcommon/cli/clipfilter.h"
#include "libcommon/cli/clipuse.h"
#include "libcommon/cli/stage.h"
#include "libcommon/image/imageio.h"
#include "libcommon/sample/emb.h"

static const char usage[] =
    "Usage: clip-rank [OPTION]... -T TEXTS [IMAGE]...\n"
    "  or:  clip-rank [OPTION]... -p TEXT [-p TEXT]... [IMAGE]...\n"
    "  or:  clip-rank [OPTION]... [IMAGE]...   (each image against its own prompt)\n"
    "Score every (text, image) pair with CLIP: the logit exp(logit_scale) *\n"
    "cos(image embedding, text embedding), as CLIP's zero-shot classifier\n"
    "does, and rank the texts for each image (rank 1: the best text).\n"
    "IMAGEs are PNGs or record streams (none, or -: standard input): a record's\n"
    "pixels (image) are encoded with CLIP's vision tower, else its image_emb\n"
    "(from clip-encode --image) is used. With no -T or -p, each image is\n"
    "scored against its own prompt (its text_emb, else the prompt encoded) and\n"
    "ranked among the run of consecutive images with the same prompt: the\n"
    "reranking of generated candidates (decoder-diffuse -n 8 -f record).\n"
    "\n"
    "  -T, --texts FILE    texts: one a line, or records with text_emb and prompt\n"
    "                      (clip-encode output: a label bank); may repeat\n"
    "  -p, --prompt TEXT   a text; may repeat\n"
    "  -b, --by-text       rank the images for each text instead (rank 1: the\n"
    "                      image that fits the text best)\n"
    "  -k, --top K         keep ranks 1..K only (default: all)\n"
    "  -f, --format FMT    table (default): TSV lines image, text, score, rank;\n"
    "                      record: for each kept pair the image's record with\n"
    "                      clip_rank {text, score, rank} added\n"
    "      --relabel       records: the text also becomes the record's prompt\n"
    "                      (zero-shot labels; the text fields of the old prompt\n"
    "                      are removed)\n"
    "      --emb           use a record's image_emb even when it has pixels\n"
    "      --to-emb        with no -T or -p: score each picture against the\n"
    "                      image_emb its record carries (the embedding it was\n"
    "                      decoded from), decoder-diffuse --best-of's criterion\n"
    "      --any-clip      use embeddings from records that another CLIP made\n"
    "                      (models.clip.checksum not this CLIP's)\n"
    "  -m, --model FILE    CLIP model (default: clip.safetensors, see unclip-model(5))\n"
    "  -t, --threads N     threads (default: all cores)\n"
    "  -s, --seed N        accepted for uniformity; nothing random is drawn\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       more messages\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Images are named by their record's source field, else by their file\n"
    "(FILE#N for the N-th image of a file with several). Ties keep input\n"
    "order. Exit status: 0 ok, 1 data error, 2 usage error.\n";

enum { OPT_RELABEL = 256, OPT_EMB, OPT_TO_EMB };
#define MAX_IMAGES (1 << 20)
#define MAX_PAIRS ((int64_t)1 << 28)

typedef struct {
    char *name;   /* in the table */
    char *prompt; /* own-prompt mode: the record's prompt */
    int group;    /* own-prompt mode: index of its text */
    rec *r;       /* kept for record output */
} image;

typedef struct {
    uc_cli cli;
    uc_clipuse u;
    uc_clipuse_bank texts;
    image *img;
    float *emb; /* [nimg, D] */
    int nimg, cap;
    int by_text, top, records, relabel, prefer_emb, own, to_emb;
} ranker;

/* Text for a table cell: tabs and line breaks become spaces. */
static void cell(FILE *f, const char *s)
{
    for (; *s; s++)
        fputc(*s == '\t' || *s == '\n' || *s == '\r' ? ' ' : *s, f);
}

/* Every image of one input, named once the count is known. */
static void read_images(ranker *R, const char *path)
{
    const uc_cli *c = &R->cli;
    const char *src = strcmp(path, "-") ? path : "stdin";
    uc_image_reader *ir = uc_image_reader_open_path(path);
    if (!ir)
        uc_die_err(c);
    int first = R->nimg, D = R->u.D;
    rec *r;
    int got;
    while ((got = uc_image_reader_next(ir, &r)) > 0) {
        if (R->nimg == MAX_IMAGES)
            uc_die(c, UC_EXIT_DATA, "%s: more than %d images", src, MAX_IMAGES);
        if (R->nimg == R->cap) {
            R->cap = R->cap ? 2 * R->cap : 64;
            R->img = uc_xrealloc(R->img, (size_t)R->cap, sizeof *R->img);
            R->emb = uc_xrealloc(R->emb, (size_t)R->cap * (size_t)D, sizeof *R->emb);
        }
        image *im = &R->img[R->nimg];
        memset(im, 0, sizeof *im);
        if (uc_clipuse_record_image(&R->u, r, src, R->prefer_emb, R->emb + (size_t)R->nimg * (size_t)D))
            uc_die_err(c);
        if (rec_has(r, "source")) {
            const char *s = rec_get_str(r, "source");
            if (!s)
                uc_die(c, UC_EXIT_DATA, "%s: %s", src, uc_errmsg());
            im->name = uc_strdup(s);
        }
        if (R->own) {
            const char *p = rec_has(r, "prompt") ? rec_get_str(r, "prompt") : NULL;
            if (!p && rec_has(r, "prompt"))
                uc_die(c, UC_EXIT_DATA, "%s", uc_errmsg());
            if (!p || !*p)
                uc_die(c, UC_EXIT_DATA, "%s: record %ld field prompt: %s (give texts with -T or -p)", src,
                       rec_number(r), p ? "empty" : "missing");
            im->prompt = uc_strdup(p);
            /* a new group unless the previous image has the same prompt */
            int prev = R->nimg - 1;
            if (prev >= 0 && strcmp(R->img[prev].prompt, p) == 0) {
                im->group = R->img[prev].group;
            } else {
                im->group = R->texts.n;
                float *te = NULL;
                int64_t tD = D;
                if (R->to_emb) { /* the target: the embedding the picture was decoded from */
                    if (!rec_has(r, "image"))
                        uc_die(c, UC_EXIT_DATA, "%s: record %ld: --to-emb needs pixels (field image)", src,
                               rec_number(r));
                    if (!(te = uc_field_f32(r, src, "", "image_emb", 1, &tD, "CLIP")) ||
                        (!c->any_clip && uc_clip_check_record(R->u.m, r, src, "image_emb")))
                        uc_die_err(c);
                } else if (rec_has(r, "text_emb") &&
                           (!(te = uc_field_f32(r, src, "", "text_emb", 1, &tD, "CLIP")) ||
                            (!c->any_clip && uc_clip_check_record(R->u.m, r, src, "text_emb")))) {
                    uc_die_err(c);
                }
                if (uc_clipuse_bank_add(&R->texts, &R->u, p, te, -1))
                    uc_die(c, UC_EXIT_DATA, "%s: %s", src, uc_errmsg());
                uc_free(te);
            }
        }
        if (R->records)
            im->r = r;
        else
            rec_free(r);
        R->nimg++;
    }
    if (got < 0)
        uc_die_err(c);
    if (R->nimg == first)
        uc_die(c, UC_EXIT_DATA, "%s: no image", src);
    for (int i = first; i < R->nimg; i++)
        if (!R->img[i].name) {
            char buf[64];
            snprintf(buf, sizeof buf, "#%d", i - first + 1);
            size_t n = strlen(src) + strlen(buf) + 1;
            R->img[i].name = uc_alloc(n, 1);
            snprintf(R->img[i].name, n, "%s%s", src, R->nimg - first > 1 ? buf : "");
        }
    uc_image_reader_free(ir);
}

/* Sort keys: score descending, then index ascending. */
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

static void emit(ranker *R, int i, int t, float score, int rank)
{
    if (!R->records) {
        cell(stdout, R->img[i].name);
        fputc('\t', stdout);
        cell(stdout, R->texts.label[t]);
        printf("\t%.4f\t%d\n", score, rank);
        return;
    }
    rec *out = rec_clone(R->img[i].r);
    rec *m = rec_new();
    rec_del(m, "version");
    rec_set_str(m, "text", R->texts.label[t]);
    rec_set_f64(m, "score", score);
    rec_set_u64(m, "rank", (uint64_t)rank);
    rec_set_map(out, "clip_rank", m);
    rec_free(m);
    if (R->relabel) {
        for (size_t k = 0; k < sizeof uc_emb_text_fields / sizeof *uc_emb_text_fields; k++)
            rec_del(out, uc_emb_text_fields[k]);
        rec_set_str(out, "prompt", R->texts.label[t]);
    }
    uc_emit_record(&R->cli, out);
}

int main(int argc, char **argv)
{
    ranker R = {0};
    uc_cli *c = &R.cli;
    uc_cli_init(c, "clip-rank", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS, UC_ANY_CLIP_LONGOPT,
        {"texts", 1, 0, 'T'},
        {"prompt", 1, 0, 'p'},
        {"by-text", 0, 0, 'b'},
        {"top", 1, 0, 'k'},
        {"format", 1, 0, 'f'},
        {"relabel", 0, 0, OPT_RELABEL},
        {"emb", 0, 0, OPT_EMB},
        {"to-emb", 0, 0, OPT_TO_EMB},
        {0, 0, 0, 0},
    };
    /* -T and -p in command-line order: 'T' or 'p' and the argument */
    char *src_kind = uc_alloc((size_t)argc + 1, 1);
    const char **src_arg = uc_alloc((size_t)argc + 1, sizeof *src_arg);
    int nsrc = 0, opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "T:p:bk:f:", longopts, NULL)) != -1) {
        if (uc_cli_common(c, opt, optarg))
            continue;
        switch (opt) {
        case 'T':
        case 'p':
            src_kind[nsrc] = (char)opt;
            src_arg[nsrc++] = optarg;
            break;
        case 'b': R.by_text = 1; break;
        case 'k': R.top = (int)uc_parse_long(c, "--top", optarg, 1, 1 << 30); break;
        case 'f':
            if (strcmp(optarg, "table") == 0)
                R.records = 0;
            else if (strcmp(optarg, "record") == 0 || strcmp(optarg, "records") == 0)
                R.records = 1;
            else
                uc_die(c, UC_EXIT_USAGE, "--format: '%s' is not table or record", optarg);
            break;
        case OPT_RELABEL: R.relabel = 1; break;
        case OPT_EMB: R.prefer_emb = 1; break;
        case OPT_TO_EMB: R.to_emb = 1; break;
        default: uc_die(c, UC_EXIT_USAGE, "bad option");
        }
    }
    if (R.relabel && !R.records)
        uc_die(c, UC_EXIT_USAGE, "--relabel needs --format record");
    int stdin_uses = 0;
    for (int i = 0; i < nsrc; i++)
        stdin_uses += src_kind[i] == 'T' && strcmp(src_arg[i], "-") == 0;
    for (int i = optind; i < argc; i++)
        stdin_uses += strcmp(argv[i], "-") == 0;
    stdin_uses += optind == argc;
    if (stdin_uses > 1)
        uc_die(c, UC_EXIT_USAGE, "standard input can be read only once (texts or images)");
    R.own = nsrc == 0;
    if (R.to_emb && !R.own)
        uc_die(c, UC_EXIT_USAGE, "--to-emb ranks against the records' own image_emb: no -T or -p");
    if (R.to_emb && R.prefer_emb)
        uc_die(c, UC_EXIT_USAGE, "--to-emb and --emb exclude each other");
    if (R.own && R.by_text)
        uc_info(c, "no -T or -p: images are ranked per own prompt (--by-text is implied)");
    uc_cli_ready(c);

    uc_clipuse_open(&R.u, c, 0);
    /* the texts */
    for (int i = 0; i < nsrc; i++) {
        if (src_kind[i] == 'p') {
            if (uc_clipuse_bank_add(&R.texts, &R.u, src_arg[i], NULL, -1))
                uc_die(c, UC_EXIT_DATA, "-p: %s", uc_errmsg());
        } else if (uc_clipuse_bank_read(&R.texts, &R.u, src_arg[i])) {
            uc_die_err(c);
        }
    }
    uc_free(src_kind);
    uc_free(src_arg);
    /* the images (in own-prompt mode, their prompts too) */
    if (optind == argc)
        read_images(&R, "-");
    for (int i = optind; i < argc; i++)
        read_images(&R, argv[i]);
    for (int i = 0; i < R.texts.n; i++)
        if (!R.texts.have[i] && !R.u.bpe)
            uc_die(c, UC_EXIT_DATA, "%s: no text tower or tokenizer to encode \"%s\" (give records with text_emb)",
                   R.u.path, R.texts.label[i]);
    if (uc_clipuse_bank_encode(&R.texts, &R.u))
        uc_die_err(c);
    int NI = R.nimg, NT = R.texts.n, D = R.u.D;
    uc_info(c, "%d images, %d texts, embed_dim %d", NI, NT, D);

    if (R.own) {
        /* each image against its own prompt, ranked within its group */
        float *s = uc_alloc((size_t)NI, sizeof *s);
        for (int i = 0; i < NI; i++)
            if (clip_logits(R.u.m, R.emb + (size_t)i * (size_t)D, 1, R.texts.emb + (size_t)R.img[i].group * (size_t)D,
                            1, &s[i]))
                uc_die(c, UC_EXIT_DATA, "%s: %s", R.u.path, uc_errmsg());
        scored *o = uc_alloc((size_t)NI, sizeof *o);
        for (int i0 = 0; i0 < NI;) {
            int i1 = i0;
            while (i1 < NI && R.img[i1].group == R.img[i0].group)
                i1++;
            for (int i = i0; i < i1; i++)
                o[i - i0] = (scored){s[i], i};
            qsort(o, (size_t)(i1 - i0), sizeof *o, by_score);
            for (int k = 0; k < i1 - i0 && (!R.top || k < R.top); k++)
                emit(&R, o[k].idx, R.img[i0].group, o[k].score, k + 1);
            i0 = i1;
        }
        uc_free(o);
        uc_free(s);
    } else {
        if ((int64_t)NI * NT > MAX_PAIRS)
            uc_die(c, UC_EXIT_DATA, "%d images times %d texts: more than %lld pairs", NI, NT, (long long)MAX_PAIRS);
        float *L = uc_alloc((size_t)NI * (size_t)NT, sizeof *L); /* [NI, NT] */
        if (clip_logits(R.u.m, R.emb, NI, R.texts.emb, NT, L))
            uc_die(c, UC_EXIT_DATA, "%s: %s", R.u.path, uc_errmsg());
        int outer = R.by_text ? NT : NI, inner = R.by_text ? NI : NT;
        scored *o = uc_alloc((size_t)inner, sizeof *o);
        for (int a = 0; a < outer; a++) {
            for (int b = 0; b < inner; b++) {
                size_t at = R.by_text ? (size_t)b * (size_t)NT + (size_t)a : (size_t)a * (size_t)NT + (size_t)b;
                o[b] = (scored){L[at], b};
            }
            qsort(o, (size_t)inner, sizeof *o, by_score);
            for (int k = 0; k < inner && (!R.top || k < R.top); k++) {
                int i = R.by_text ? o[k].idx : a, t = R.by_text ? a : o[k].idx;
                emit(&R, i, t, o[k].score, k + 1);
            }
        }
        uc_free(o);
        uc_free(L);
    }
    uc_stdout_check(c);
    for (int i = 0; i < NI; i++) {
        uc_free(R.img[i].name);
        uc_free(R.img[i].prompt);
        rec_free(R.img[i].r);
    }
    uc_free(R.img);
    uc_free(R.emb);
    uc_clipuse_bank_free(&R.texts);
    uc_clipuse_close(&R.u);
    return UC_EXIT_OK;
}
