/* shapes-eval - judge pictures of the shapes world against their captions
 * from the pixels alone (SHAPES.md, "Judging a picture") and report the
 * fraction that match, per caption kind. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "libcommon/cli/cli.h"
#include "formats/base.h"
#include "libcommon/image/imageio.h"
#include "libcommon/shapes/shapes.h"

static const char usage[] =
    "Usage: shapes-eval [OPTION]... [FILE]...\n"
    "Judge pictures of the shapes world against their captions from the\n"
    "pixels alone, and print the fraction that match per caption kind\n"
    "(single, relation, count) and overall. Input: record streams (fields\n"
    "prompt and image, U8 [H, W, 3]) or PNGs, concatenated or one a file,\n"
    "whose caption is the prompt of the record they carry or their prompt\n"
    "text chunk. With no FILE, or when FILE is -, read standard input.\n"
    "\n"
    "  -c, --caption TEXT  judge every picture against TEXT instead\n"
    "      --json          the summary as one JSON object\n"
    "  -v, --verbose       a line per picture: its input, match or mismatch,\n"
    "                      the caption and, for a mismatch, the reason\n"
    "                      (on standard error with --json)\n"
    "  -m, --model FILE    accepted for uniformity; no model is used\n"
    "  -t, --threads N     accepted for uniformity\n"
    "  -s, --seed N        accepted for uniformity; nothing random is drawn\n"
    "  -q, --quiet         no messages but errors\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Exit status: 0 when every picture was judged (whatever the verdicts),\n"
    "1 bad input (unreadable picture, missing or ungrammatical caption),\n"
    "2 usage error.\n";

enum { OPT_JSON = 256 };

typedef struct {
    uc_cli cli;
    const char *caption; /* --caption, or NULL */
    int json;
    long matched[SH_NKIND], total[SH_NKIND];
} eval;

/* Judge one picture (record r, with its image) named `where`. */
static void judge(eval *E, const rec *r, const char *png_prompt, const char *where)
{
    const uc_cli *c = &E->cli;
    const char *text = E->caption;
    if (!text && rec_has(r, "prompt") && !(text = rec_get_str(r, "prompt")))
        uc_die(c, UC_EXIT_DATA, "%s: %s", where, uc_errmsg());
    if (!text)
        text = png_prompt;
    if (!text)
        uc_die(c, UC_EXIT_DATA, "%s: no caption (no prompt field or text chunk); give --caption", where);
    sh_caption cap;
    if (sh_caption_parse(text, &cap))
        uc_die(c, UC_EXIT_DATA, "%s: %s", where, uc_errmsg());

    uc_tensor t;
    char shp[96];
    if (rec_get_tensor(r, "image", &t))
        uc_die(c, UC_EXIT_DATA, "%s: %s", where, uc_errmsg());
    if (t.dtype != UC_U8 || t.ndim != 3 || t.shape[2] != 3 || t.shape[0] < 1 || t.shape[1] < 1 ||
        t.shape[0] > UC_PNG_MAX_SIDE || t.shape[1] > UC_PNG_MAX_SIDE)
        uc_die(c, UC_EXIT_DATA, "%s: field image: %s %s, expected U8 [H, W, 3] with sides of 1..%d", where,
               uc_dtype_name(t.dtype), uc_shape_str(&t, shp, sizeof shp), UC_PNG_MAX_SIDE);
    sh_analysis a;
    if (sh_analyse(t.data, (int)t.shape[1], (int)t.shape[0], &a))
        uc_die(c, UC_EXIT_DATA, "%s: %s", where, uc_errmsg());
    char why[512];
    int ok = sh_judge(&cap, &a, why, sizeof why);
    E->total[cap.kind]++;
    E->matched[cap.kind] += ok;
    if (c->verbose > 0) {
        FILE *f = E->json ? stderr : stdout;
        fprintf(f, "%s\t%s\t%s%s%s\n", where, ok ? "match" : "mismatch", text, ok ? "" : "\t", ok ? "" : why);
    }
}

/* A stream of PNGs: the signature of the first is already read. */
static void judge_pngs(eval *E, int fd, const char *name)
{
    FILE *f = fdopen(fd, "rb");
    if (!f)
        uc_die(&E->cli, UC_EXIT_DATA, "%s: %s", name, strerror(errno));
    char where[300];
    for (long n = 1;; n++) {
        unsigned char sig[8];
        snprintf(where, sizeof where, "%s: image %ld", name, n);
        if (n > 1) {
            size_t got = fread(sig, 1, 8, f);
            if (got == 0 && feof(f))
                break;
            if (got < 8 || !uc_png_sig(sig))
                uc_die(&E->cli, UC_EXIT_DATA, "%s: not a PNG (a PNG stream holds only PNGs)", where);
        }
        uc_image img;
        if (uc_png_read(f, where, 8, 0, &img))
            uc_die_err(&E->cli);
        rec *r = uc_record_from_png(&img);
        if (!r)
            uc_die(&E->cli, UC_EXIT_DATA, "%s: %s", where, uc_errmsg());
        judge(E, r, uc_png_text_get(&img, "prompt"), where);
        rec_free(r);
        uc_image_free(&img);
    }
    fclose(f);
}

/* One input: PNGs or records, told apart by the first bytes. */
static void judge_input(eval *E, const char *path)
{
    int is_stdin = !path || strcmp(path, "-") == 0;
    const char *name = is_stdin ? "stdin" : path;
    int fd = is_stdin ? 0 : open(path, O_RDONLY);
    if (fd < 0)
        uc_die(&E->cli, UC_EXIT_DATA, "%s: %s", path, strerror(errno));
    unsigned char sig[8];
    ssize_t got = uc_read_prefix(fd, sig);
    if (got < 0)
        uc_die(&E->cli, UC_EXIT_DATA, "%s: read error: %s", name, strerror(errno));
    if (got == 8 && uc_png_sig(sig)) {
        judge_pngs(E, fd, name);
        return;
    }
    rec_reader *rr = rec_reader_new_prefixed(fd, name, sig, (size_t)got);
    rec *r;
    int rc;
    char where[300];
    while ((rc = rec_read(rr, &r)) == 1) {
        snprintf(where, sizeof where, "%s: record %ld", name, rec_number(r));
        judge(E, r, NULL, where);
        rec_free(r);
    }
    if (rc < 0)
        uc_die_err(&E->cli);
    rec_reader_free(rr);
    if (!is_stdin)
        close(fd);
}

static void summary(const eval *E)
{
    long m = 0, n = 0;
    for (int k = 0; k < SH_NKIND; k++) {
        m += E->matched[k];
        n += E->total[k];
    }
    if (E->json)
        putchar('{');
    for (int k = 0; k <= SH_NKIND; k++) {
        const char *name = k < SH_NKIND ? sh_kind_names[k] : "overall";
        long km = k < SH_NKIND ? E->matched[k] : m, kn = k < SH_NKIND ? E->total[k] : n;
        if (E->json) {
            printf("%s\"%s\": {\"matched\": %ld, \"total\": %ld, \"fraction\": ", k ? ", " : "", name, km, kn);
            if (kn)
                printf("%.6f}", (double)km / (double)kn);
            else
                printf("null}");
        } else if (kn) {
            printf("%-8s %.3f (%ld/%ld)\n", name, (double)km / (double)kn, km, kn);
        } else {
            printf("%-8s -     (0/0)\n", name);
        }
    }
    if (E->json)
        puts("}");
}

int main(int argc, char **argv)
{
    eval E = {0};
    uc_cli *c = &E.cli;
    uc_cli_init(c, "shapes-eval", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS, {"caption", 1, 0, 'c'}, {"json", 0, 0, OPT_JSON}, {0, 0, 0, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "c:", longopts, NULL)) != -1) {
        if (uc_cli_common(c, opt, optarg))
            continue;
        switch (opt) {
        case 'c': E.caption = optarg; break;
        case OPT_JSON: E.json = 1; break;
        default: uc_die(c, UC_EXIT_USAGE, "bad option");
        }
    }
    uc_cli_ready(c);
    sh_caption cap;
    if (E.caption && sh_caption_parse(E.caption, &cap))
        uc_die(c, UC_EXIT_USAGE, "--caption: %s", uc_errmsg());
    if (optind == argc)
        judge_input(&E, NULL);
    for (int i = optind; i < argc; i++)
        judge_input(&E, argv[i]);
    summary(&E);
    uc_stdout_check(c);
    return UC_EXIT_OK;
}
