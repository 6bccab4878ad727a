/* shapes-render - pictures of the shapes world (SHAPES.md) for captions:
 * the training data and test data of the default model. */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
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
    "Usage: shapes-render [OPTION]... [CAPTION]...\n"
    "Render scenes of the shapes world: for each CAPTION, or each line of\n"
    "standard input when there is none, or for N captions drawn from the\n"
    "grammar (--random), a white canvas with the objects the caption names.\n"
    "Sample i of a run (0-based, in input order) has its layout (and, with\n"
    "--random, its caption) drawn from the streams of (seed, i).\n"
    "\n"
    "      --random N      draw N captions from the grammar instead\n"
    "      --captions-only print the (normalised) captions, one a line, and no pictures\n"
    "      --size PX       canvas side in pixels (default 64, 8..4096)\n"
    "  -f, --format FMT    png (default): PNGs with the record in text chunks,\n"
    "                      concatenated; record: the record stream; raw: per\n"
    "                      sample a u16 little-endian caption length, the caption,\n"
    "                      then PX*PX*3 bytes of RGB\n"
    "  -o, --output PATH   write to PATH instead of standard output; for png a\n"
    "                      pattern with one %d, the sample index (img-%d.png),\n"
    "                      or a plain name when there is one picture\n"
    "  -s, --seed N        seed of captions and layouts (default 0)\n"
    "  -m, --model FILE    accepted for uniformity; no model is used\n"
    "  -t, --threads N     accepted for uniformity\n"
    "      --progress WHEN auto (a bar when stderr is a terminal), json (one\n"
    "                      object a step on stderr) or none\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       a count of samples on standard error\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Exit status: 0 ok, 1 a caption outside the grammar or a write error,\n"
    "2 usage error.\n";

enum { OPT_RANDOM = 256, OPT_CAPTIONS_ONLY, OPT_SIZE };
enum { FMT_PNG, FMT_RECORD, FMT_RAW };

typedef struct {
    uc_cli cli;
    int size, format, captions_only;
    const char *output; /* NULL: standard output */
    FILE *out;          /* record and raw output */
    unsigned char *px;  /* size * size * 3 */
    long done;
} render;

/* A PNG to standard output, or to its own file (temporary name, renamed
 * when complete). */
static void emit_png(render *R, const rec *r, uint32_t index)
{
    FILE *f = stdout;
    char path[4096];
    int plain = R->output && !strchr(R->output, '%'); /* one picture, committed at the end */
    if (plain && R->out)
        uc_die(&R->cli, UC_EXIT_USAGE, "-o %s: more than one picture; give a pattern with %%d (img-%%d.png)",
               R->output);
    if (plain) {
        snprintf(path, sizeof path, "%s", R->output);
        f = R->out = uc_out_open(&R->cli, path);
    } else if (R->output) {
        uc_out_pattern(&R->cli, R->output, (long)index, path, sizeof path);
        f = uc_out_open(&R->cli, path);
    }
    if (uc_write_png_record(f, r))
        uc_die(&R->cli, UC_EXIT_DATA, "%s: %s", R->output ? path : "stdout", uc_errmsg());
    if (R->output && !plain)
        uc_out_commit(&R->cli, f);
}

/* One sample: lay out c with the stream of (seed, index), paint, write. */
static void emit(render *R, const sh_caption *c, uint32_t index)
{
    char text[SH_CAPTION_MAX];
    if (sh_caption_format(c, text, sizeof text) < 0)
        uc_die(&R->cli, UC_EXIT_DATA, "sample %u: invalid caption", index);
    if (R->captions_only) {
        puts(text);
        return;
    }
    uc_rng rng;
    sh_scene s;
    sh_rng_for(&rng, R->cli.seed, index, SH_RNG_LAYOUT);
    if (sh_layout(c, &rng, &s))
        uc_die_err(&R->cli);
    sh_render(&s, R->size, R->px);
    size_t npx = (size_t)R->size * R->size * 3;
    if (R->format == FMT_RAW) {
        size_t len = strlen(text);
        unsigned char hdr[2] = {(unsigned char)(len & 255), (unsigned char)(len >> 8)};
        if (fwrite(hdr, 1, 2, R->out) != 2 || fwrite(text, 1, len, R->out) != len ||
            fwrite(R->px, 1, npx, R->out) != npx)
            uc_die(&R->cli, UC_EXIT_DATA, "write error: %s", strerror(errno ? errno : EIO));
    } else {
        rec *r = rec_new();
        rec_set_str(r, "prompt", text);
        rec_set_u64(r, "seed", R->cli.seed);
        rec_set_u64(r, "index", index);
        rec *p = rec_new();
        rec_del(p, "version");
        rec_set_u64(p, "size", (uint64_t)R->size);
        rec_set_stage(r, "params", "shapes", p);
        rec_free(p);
        rec_history_add(r, R->cli.tool, R->cli.argc, R->cli.argv);
        rec_set_tensor(r, "image", UC_U8, 3, (int64_t[]){R->size, R->size, 3}, R->px);
        if (R->format == FMT_PNG)
            emit_png(R, r, index);
        else if (rec_write(r, R->out))
            uc_die_err(&R->cli);
        rec_free(r);
    }
    R->done++;
}

static void parse_or_die(render *R, const char *text, const char *where, sh_caption *c)
{
    if (sh_caption_parse(text, c)) {
        if (where)
            uc_die(&R->cli, UC_EXIT_DATA, "%s: %s", where, uc_errmsg());
        uc_die_err(&R->cli);
    }
}

static void from_stdin(render *R)
{
    char *line = NULL, where[64];
    size_t cap = 0;
    long lineno = 0;
    uint32_t index = 0;
    while (getline(&line, &cap, stdin) >= 0) {
        lineno++;
        size_t len = strlen(line);
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = 0;
        if (strspn(line, " \t") == len)
            continue;
        sh_caption c;
        if (index == INT32_MAX)
            uc_die(&R->cli, UC_EXIT_DATA, "stdin line %ld: more than %d captions", lineno, INT32_MAX);
        snprintf(where, sizeof where, "stdin line %ld", lineno);
        parse_or_die(R, line, where, &c);
        emit(R, &c, index++);
    }
    if (ferror(stdin))
        uc_die(&R->cli, UC_EXIT_DATA, "stdin: read error");
    free(line);
}

int main(int argc, char **argv)
{
    render R = {.size = 64};
    uc_cli *c = &R.cli;
    uc_cli_init(c, "shapes-render", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS,
        {"random", 1, 0, OPT_RANDOM},
        {"captions-only", 0, 0, OPT_CAPTIONS_ONLY},
        {"size", 1, 0, OPT_SIZE},
        {"format", 1, 0, 'f'},
        {"output", 1, 0, 'o'},
        {0, 0, 0, 0},
    };
    long random = -1;
    int opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "f:o:", longopts, NULL)) != -1) {
        if (uc_cli_common(c, opt, optarg))
            continue;
        switch (opt) {
        case OPT_RANDOM: random = uc_parse_long(c, "--random", optarg, 0, INT32_MAX); break;
        case OPT_CAPTIONS_ONLY: R.captions_only = 1; break;
        case OPT_SIZE: R.size = (int)uc_parse_long(c, "--size", optarg, 8, 4096); break;
        case 'f':
            if (strcmp(optarg, "png") == 0)
                R.format = FMT_PNG;
            else if (strcmp(optarg, "record") == 0)
                R.format = FMT_RECORD;
            else if (strcmp(optarg, "raw") == 0)
                R.format = FMT_RAW;
            else
                uc_die(c, UC_EXIT_USAGE, "--format: '%s' is not png, record or raw", optarg);
            break;
        case 'o': R.output = strcmp(optarg, "-") ? optarg : NULL; break; /* -o -: standard output */
        default: uc_die(c, UC_EXIT_USAGE, "bad option");
        }
    }
    if (random >= 0 && optind < argc)
        uc_die(c, UC_EXIT_USAGE, "--random and captions exclude each other");
    if (R.captions_only && R.output)
        uc_die(c, UC_EXIT_USAGE, "--captions-only writes to standard output; drop -o");
    uc_cli_ready(c);
    /* every caption is checked before any picture is written */
    sh_caption cap;
    for (int i = optind; i < argc; i++)
        parse_or_die(&R, argv[i], NULL, &cap);

    if (!R.captions_only) {
        if (R.output)
            uc_out_dir_check(c, R.output);
        if (R.output && R.format == FMT_PNG) {
            char probe[4096];
            if (strchr(R.output, '%'))
                uc_out_pattern(c, R.output, 0, probe, sizeof probe); /* exits unless one %d */
        } else if (R.output) {
            R.out = uc_out_open(c, R.output);
        } else {
            if (isatty(1))
                uc_die(c, UC_EXIT_USAGE, "refusing to write pictures to a terminal; redirect or use -o");
            R.out = stdout;
        }
        R.px = uc_alloc((size_t)R.size * R.size, 3);
    }

    if (random >= 0) {
        for (long i = 0; i < random; i++) {
            uc_rng rng;
            sh_rng_for(&rng, c->seed, (uint32_t)i, SH_RNG_CAPTION);
            sh_caption_random(&rng, &cap);
            emit(&R, &cap, (uint32_t)i);
            uc_progress(c, "render", i + 1, random);
        }
    } else if (optind < argc) {
        for (int i = optind; i < argc; i++) {
            sh_caption_parse(argv[i], &cap);
            emit(&R, &cap, (uint32_t)(i - optind));
        }
    } else {
        from_stdin(&R);
    }

    if (R.out && R.out != stdout)
        uc_out_commit(c, R.out);
    uc_stdout_check(c);
    uc_info(c, "%ld samples of %dx%d", R.done, R.size, R.size);
    uc_free(R.px);
    return UC_EXIT_OK;
}
