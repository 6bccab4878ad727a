/* golden-check - run the golden cases found under the given directories.
 *
 *   golden-check [--pending FILE] [--vocab FILE] [-t N] DIR...
 *
 * One line per case: "PASS family/case max_abs_err=..." or "FAIL family/case
 * <first difference>", then "N passed, M failed". Cases listed in the pending
 * file (one family/case a line) are expected to fail until their stage
 * lands: they print XFAIL and do not count as failures. A case of a kind
 * with no handler is a FAIL. Exit status 1 when anything failed. */
#define _DEFAULT_SOURCE
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <getopt.h>

#include "formats/base.h"
#include "libcommon/cli/cli.h"
#include "libcommon/nn/ops.h"
#include "gc.h"

static const struct {
    const char *family, *name;
    gc_handler fn;
} handlers[] = {
    {"clip", "tokenizer", gc_clip_tokenizer},
    {"clip", "text-encode", gc_clip_text},
    {"clip", "image-encode", gc_clip_image},
    {"clip", "image-encode-f32", gc_clip_image},
    {"clip", "logits", gc_clip_logits},
    {"clip", "preprocess", gc_clip_preprocess},
    {"karlo", "clip-encode-text-karlo", gc_karlo_clip_text},
    {"layouts", "hf-clip", gc_layout_hf_clip},
    {"karlo", "diffusion-schedule", gc_diffusion_schedule},
    {"karlo", "prior-forward", gc_prior_forward},
    {"karlo", "prior-sample", gc_prior_sample},
    {"karlo", "prior-sample-ddim", gc_prior_sample},
    {"karlo", "decoder-forward", gc_decoder_forward},
    {"karlo", "decoder-forward-f16", gc_decoder_forward},
    {"karlo", "decoder-sample", gc_decoder_sample},
    {"karlo", "sr-resize", gc_sr_resize},
    {"karlo", "sr-forward", gc_sr_forward},
    {"karlo", "sr-forward-updown", gc_sr_forward},
    {"karlo", "sr-sample", gc_sr_sample},
};

static char **pending;
static int npending, npass, nfail, nxfail;
static const char *vocab_override;

static int is_pending(const char *id)
{
    for (int i = 0; i < npending; i++)
        if (strcmp(pending[i], id) == 0)
            return 1;
    return 0;
}

static void load_pending(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    if (!f)
        return; /* no file: nothing pending */
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\r\n#")] = 0;
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        size_t n = strlen(s);
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
            s[--n] = 0;
        if (!n)
            continue;
        pending = uc_xrealloc(pending, (size_t)npending + 1, sizeof *pending);
        pending[npending++] = uc_strdup(s);
    }
    fclose(f);
}

/* The vocabulary: $UNCLIP_VOCAB, else ../vocab beside the golden root (the
 * root is the ancestor directory holding FORMAT.md), else ../shared/vocab. */
static void find_vocab(const char *casedir, char *out, size_t n)
{
    const char *env = vocab_override ? vocab_override : getenv("UNCLIP_VOCAB");
    if (env && *env) {
        snprintf(out, n, "%s", env);
        return;
    }
    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", casedir);
    struct stat sb;
    for (int depth = 0; depth < 6; depth++) {
        char probe[PATH_MAX + 32];
        snprintf(probe, sizeof probe, "%s/FORMAT.md", dir);
        if (stat(probe, &sb) == 0) {
            snprintf(out, n, "%.4000s/../vocab/bpe_simple_vocab_16e6.txt.gz", dir);
            if (stat(out, &sb) == 0)
                return;
            snprintf(out, n, "%.4000s/../../shared/vocab/bpe_simple_vocab_16e6.txt.gz", dir);
            if (stat(out, &sb) == 0)
                return;
            snprintf(out, n, "%.4000s/../../../shared/vocab/bpe_simple_vocab_16e6.txt.gz", dir);
            return;
        }
        char *slash = strrchr(dir, '/');
        if (slash && slash != dir)
            *slash = 0;
        else
            snprintf(dir, sizeof dir, "..");
    }
    snprintf(out, n, "../shared/vocab/bpe_simple_vocab_16e6.txt.gz");
}

static void run_case(const char *dir)
{
    char path[PATH_MAX + 32], vocab[PATH_MAX];
    gc_case c = {.dir = dir};
    char *text;
    size_t len;
    snprintf(path, sizeof path, "%s/case.json", dir);
    if (uc_read_file(path, 64u << 20, &text, &len)) {
        printf("FAIL %s %s\n", dir, uc_errmsg());
        nfail++;
        return;
    }
    c.json = cJSON_Parse(text);
    free(text);
    c.family = gc_str(c.json, "family", "?");
    c.name = gc_str(c.json, "case", "?");
    char id[512];
    snprintf(id, sizeof id, "%s/%s", c.family, c.name);
    c.config = gc_get(c.json, "config");
    cJSON *empty = cJSON_CreateObject();
    if (!c.config)
        c.config = empty;
    c.atol = gc_num(c.json, "tolerance.atol", 1e-5);
    c.rtol = gc_num(c.json, "tolerance.rtol", 1e-5);
    find_vocab(dir, vocab, sizeof vocab);
    c.vocab = vocab;
    snprintf(path, sizeof path, "%s/io.safetensors", dir);
    struct stat sb;
    if (stat(path, &sb) == 0 && !(c.io = st_open(path)))
        gc_fail(&c, "%s", uc_errmsg());
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    if (!c.fail[0] && stat(path, &sb) == 0 && sb.st_size > 16 && !(c.model = st_open(path)))
        gc_fail(&c, "%s", uc_errmsg());

    gc_handler fn = NULL;
    for (size_t i = 0; i < UC_COUNT(handlers); i++)
        if (strcmp(handlers[i].family, c.family) == 0 && strcmp(handlers[i].name, c.name) == 0)
            fn = handlers[i].fn;
    int rc = -1;
    double t0 = uc_now();
    if (c.fail[0])
        rc = -1;
    else if (!fn)
        gc_fail(&c, "no handler for this kind of case");
    else
        rc = fn(&c);
    if (rc != 0 && !c.fail[0])
        gc_fail(&c, "failed without a message");
    double secs = uc_now() - t0;
    if (rc == 0) {
        printf("PASS %s max_abs_err=%.3g (%.2fs)\n", id, c.max_err, secs);
        npass++;
    } else if (is_pending(id)) {
        printf("XFAIL %s (pending) %s\n", id, c.fail);
        nxfail++;
    } else {
        printf("FAIL %s %s\n", id, c.fail);
        nfail++;
    }
    fflush(stdout);
    st_close(c.io);
    st_close(c.model);
    cJSON_Delete(c.json);
    cJSON_Delete(empty);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void walk(const char *dir)
{
    char path[PATH_MAX + 32];
    struct stat sb;
    snprintf(path, sizeof path, "%s/case.json", dir);
    if (stat(path, &sb) == 0) {
        run_case(dir);
        return;
    }
    DIR *d = opendir(dir);
    if (!d) {
        printf("FAIL %s cannot open directory\n", dir);
        nfail++;
        return;
    }
    char **names = NULL;
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
            names = uc_xrealloc(names, (size_t)n + 1, sizeof *names);
            names[n++] = uc_strdup(path);
        }
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        walk(names[i]);
        free(names[i]);
    }
    free(names);
}

static const char usage[] =
    "Usage: golden-check [OPTION]... DIR...\n"
    "Run every golden case (a directory with case.json) under each DIR against\n"
    "the reference numbers the upstream PyTorch code computed: one line per\n"
    "case, PASS or FAIL with the largest error, then \"N passed, M failed\".\n"
    "\n"
    "      --pending FILE  cases (family/case a line) expected to fail: XFAIL\n"
    "      --vocab FILE    OpenAI's BPE vocabulary (default: $UNCLIP_VOCAB or\n"
    "                      ../shared/vocab)\n"
    "  -t, --threads N     threads (default 1)\n"
    "  -m, --model FILE    accepted for uniformity; each case names its model\n"
    "  -s, --seed N        accepted for uniformity; each case names its noise\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       more messages\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Exit status: 0 every case passed, 1 a case failed, 2 usage error.\n";

enum { OPT_PENDING = 256, OPT_VOCAB };

int main(int argc, char **argv)
{
    uc_cli c;
    uc_cli_init(&c, "golden-check", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS, {"pending", 1, 0, OPT_PENDING}, {"vocab", 1, 0, OPT_VOCAB}, {0, 0, 0, 0}};
    c.threads = 1;
    int opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS, longopts, NULL)) != -1) {
        if (uc_cli_common(&c, opt, optarg))
            continue;
        switch (opt) {
        case OPT_PENDING: load_pending(optarg); break;
        case OPT_VOCAB: vocab_override = optarg; break;
        default: uc_die(&c, UC_EXIT_USAGE, "unknown option");
        }
    }
    if (optind == argc)
        uc_die(&c, UC_EXIT_USAGE, "no DIR given");
    uc_cli_ready(&c);
    int i = optind;
    for (; i < argc; i++)
        walk(argv[i]);
    if (nxfail)
        printf("%d pending cases failed as expected (tests/golden/PENDING)\n", nxfail);
    printf("%d passed, %d failed\n", npass, nfail);
    for (int k = 0; k < npending; k++)
        free(pending[k]);
    free(pending);
    return nfail ? 1 : 0;
}
