/* unclip-replay - redraw a picture from the record it carries: run the
 * stages that drew it again (decoder-diffuse, then upsample) with the seed,
 * noise key, sample index, steps, guidance, sampler and best-of the record
 * names, check that the models are the recorded ones and that the picture
 * comes out byte for byte, and write it. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "formats/base.h"
#include "libcommon/cli/cli.h"
#include "libcommon/cli/stage.h"
#include "libcommon/image/imageio.h"
#include "libcommon/nn/cpu.h"

static const char usage[] =
    "Usage: unclip-replay [OPTION]... [FILE]\n"
    "Redraw the picture of an unclip PNG (or of the first record with image\n"
    "of a record stream) from its record alone: run decoder-diffuse, then\n"
    "upsample when the record went through it, with the seed, noise key,\n"
    "sample index, steps, guidance, sampler, eta, best-of, tile and overlap of\n"
    "params.decoder and params.sr; check that each model's checksum is the\n"
    "one in the record's models field and that every pixel comes out the\n"
    "same; then write the picture with its record (by default the same\n"
    "PNG bytes). The image embedding is the record's own, so frames of\n"
    "emb-interp and emb-textdiff replay as well as the prior's samples.\n"
    "With no FILE, or when FILE is -, read standard input.\n"
    "\n"
    "      --decoder FILE  the decoder model (default: found as the tools find it)\n"
    "      --sr FILE       the super-resolution model (likewise)\n"
    "      --clip FILE     the CLIP that ranked --best-of candidates (likewise)\n"
    "  -f, --format FMT    png (default) or record\n"
    "  -o, --output PATH   write to PATH instead of standard output\n"
    "  -m, --model FILE    accepted for uniformity; use --decoder, --sr, --clip\n"
    "  -t, --threads N     threads of each stage (default: as recorded; sums\n"
    "                      split over threads differ in their last bits)\n"
    "  -s, --seed N        accepted for uniformity; the record's seeds are used\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       the stages' command lines on standard error\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Exit status: 0 the picture was redrawn byte for byte, 1 it was not (or\n"
    "the record lacks what a replay needs, or a model differs), 2 usage error.\n";

enum { OPT_DECODER = 256, OPT_SR, OPT_CLIP };

#define MAX_ARGS 40

typedef struct {
    char *argv[MAX_ARGS];
    char buf[MAX_ARGS][PATH_MAX];
    int n;
    char cpu[16]; /* UNCLIP_CPU for the stage, or "" */
} cmd;

static void arg(cmd *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void arg(cmd *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->buf[c->n], sizeof c->buf[c->n], fmt, ap);
    va_end(ap);
    c->argv[c->n] = c->buf[c->n];
    c->argv[++c->n] = NULL;
}

/* The folder of this program: the stages live beside it. */
static void bin_dir(const uc_cli *c, char *out, size_t n)
{
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0)
        uc_die(c, UC_EXIT_DATA, "cannot find the folder of this program: %s", strerror(errno));
    exe[len] = 0;
    char *slash = strrchr(exe, '/');
    *slash = 0;
    snprintf(out, n, "%s", exe);
}

/* A stage's params map, or NULL when the record has none. */
static rec *stage_params(const uc_cli *c, const rec *r, const char *stage)
{
    rec *params = rec_has(r, "params") ? rec_get_map(r, "params") : NULL;
    if (rec_has(r, "params") && !params)
        uc_die_err(c);
    rec *p = params && rec_has(params, stage) ? rec_get_map(params, stage) : NULL;
    if (params && rec_has(params, stage) && !p)
        uc_die_err(c); /* "record 1 field params.STAGE: ..." */
    rec_free(params);
    return p;
}

static const char *need_str(const uc_cli *c, const rec *p, const char *stage, const char *key)
{
    if (!rec_has(p, key))
        uc_die(c, UC_EXIT_DATA, "record 1 field params.%s.%s: missing (drawn before unclip-replay existed?)", stage,
               key);
    const char *s = rec_get_str(p, key);
    if (!s)
        uc_die_err(c); /* "record 1 field params.STAGE.KEY: ..." */
    return s;
}

static uint64_t need_u64(const uc_cli *c, const rec *p, const char *stage, const char *key)
{
    uint64_t v;
    if (!rec_has(p, key))
        uc_die(c, UC_EXIT_DATA, "record 1 field params.%s.%s: missing (drawn before unclip-replay existed?)", stage,
               key);
    if (rec_get_u64(p, key, &v))
        uc_die_err(c);
    return v;
}

static double need_f64(const uc_cli *c, const rec *p, const char *stage, const char *key)
{
    double v;
    if (!rec_has(p, key))
        uc_die(c, UC_EXIT_DATA, "record 1 field params.%s.%s: missing", stage, key);
    if (rec_get_f64(p, key, &v))
        uc_die_err(c);
    return v;
}

/* The kernels' level the stage drew at (params.STAGE.cpu; absent in
 * pictures drawn before it was recorded): the stage runs at it, or at
 * this CPU's level when that is lower, with a warning. */
static void cpu_level(const uc_cli *c, cmd *x, const rec *p, const char *stage)
{
    if (!rec_has(p, "cpu"))
        return;
    const char *name = need_str(c, p, stage, "cpu");
    int l = uc_cpu_parse(name);
    if (l < 0 || !strcmp(name, "native"))
        uc_die(c, UC_EXIT_DATA, "record 1 field params.%s.cpu: '%.32s' is not a kernel level (avx2, avx512, avx512bf16)",
               stage, name);
    if (l > uc_cpu_level()) {
        uc_warn(c, "record 1 field params.%s.cpu: drawn with %s kernels, replayed with %s: the picture may differ in "
                   "its last bits", stage, name, uc_cpu_name(uc_cpu_level()));
        l = uc_cpu_level();
    }
    snprintf(x->cpu, sizeof x->cpu, "%s", uc_cpu_name(l));
}

/* The command line of decoder-diffuse for the record's params.decoder. */
static void decoder_cmd(const uc_cli *c, cmd *d, const char *dir, const rec *p, const char *model, const char *clip,
                        int want_float)
{
    arg(d, "%s/decoder-diffuse", dir);
    cpu_level(c, d, p, "decoder");
    arg(d, "-q");
    arg(d, "-f");
    arg(d, "record");
    arg(d, "-t");
    arg(d, "%llu", c->threads ? (unsigned long long)c->threads : (unsigned long long)need_u64(c, p, "decoder", "threads"));
    arg(d, "-s");
    arg(d, "%llu", (unsigned long long)need_u64(c, p, "decoder", "seed"));
    arg(d, "--index");
    arg(d, "%llu", (unsigned long long)need_u64(c, p, "decoder", "index"));
    arg(d, "-S");
    arg(d, "%s", need_str(c, p, "decoder", "steps"));
    arg(d, "-g");
    arg(d, "%.17g", need_f64(c, p, "decoder", "guidance"));
    const char *sampler = need_str(c, p, "decoder", "sampler");
    arg(d, "--sampler");
    arg(d, "%s", sampler);
    if (!strcmp(sampler, "ddim")) {
        arg(d, "--eta");
        arg(d, "%.17g", need_f64(c, p, "decoder", "eta"));
    }
    arg(d, "--best-of");
    arg(d, "%llu", (unsigned long long)need_u64(c, p, "decoder", "best_of"));
    if (model) {
        arg(d, "-m");
        arg(d, "%s", model);
    }
    if (clip) {
        arg(d, "--clip");
        arg(d, "%s", clip);
    }
    if (want_float)
        arg(d, "--float");
}

static void sr_cmd(const uc_cli *c, cmd *u, const char *dir, const rec *p, const char *model)
{
    arg(u, "%s/upsample", dir);
    arg(u, "-q");
    arg(u, "-f");
    arg(u, "record");
    if (rec_has(p, "fast")) {
        arg(u, "--fast");
        return;
    }
    cpu_level(c, u, p, "sr");
    arg(u, "-t");
    arg(u, "%llu", c->threads ? (unsigned long long)c->threads : (unsigned long long)need_u64(c, p, "sr", "threads"));
    arg(u, "-s");
    arg(u, "%llu", (unsigned long long)need_u64(c, p, "sr", "seed"));
    arg(u, "-S");
    arg(u, "%s", need_str(c, p, "sr", "steps"));
    if (rec_has(p, "sampler")) { /* absent: ddpm, upsample's default */
        arg(u, "--sampler");
        arg(u, "%s", need_str(c, p, "sr", "sampler"));
    }
    arg(u, "--tile"); /* absent: the whole picture, whatever the model's unclip.default_tile */
    arg(u, "%llu", rec_has(p, "tile") ? (unsigned long long)need_u64(c, p, "sr", "tile") : 0ULL);
    arg(u, "--overlap"); /* absent: 0, as records written before --overlap */
    arg(u, "%llu", rec_has(p, "overlap") ? (unsigned long long)need_u64(c, p, "sr", "overlap") : 0ULL);
    if (model) {
        arg(u, "-m");
        arg(u, "%s", model);
    }
}

static void show(const uc_cli *c, const cmd *x)
{
    if (c->verbose < 1)
        return;
    fprintf(stderr, "%s:", c->tool);
    if (x->cpu[0])
        fprintf(stderr, " UNCLIP_CPU=%s", x->cpu);
    for (int i = 0; i < x->n; i++)
        fprintf(stderr, " %s", x->argv[i]);
    fputc('\n', stderr);
}

/* UNCLIP_CPU for the stages spawned next ("": unset) */
static void set_cpu(const char *level)
{
    if (*level)
        setenv("UNCLIP_CPU", level, 1);
    else
        unsetenv("UNCLIP_CPU");
}

/* Run in -> stage 1 [-> stage 2] and read the last one's record stream. */
static rec *run(const uc_cli *c, const rec *in, cmd *s1, cmd *s2)
{
    char own_cpu[16] = ""; /* the replay's own UNCLIP_CPU, checked by uc_cli_init */
    const char *own = getenv("UNCLIP_CPU");
    snprintf(own_cpu, sizeof own_cpu, "%s", own ? own : "");
    int p_in[2], p_mid[2], p_out[2];
    if (pipe(p_in) || pipe(p_out) || (s2 && pipe(p_mid)))
        uc_die(c, UC_EXIT_DATA, "pipe: %s", strerror(errno));
    pid_t pid[2];
    cmd *stage[2] = {s1, s2};
    for (int k = 0; k < (s2 ? 2 : 1); k++) {
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        int from = k == 0 ? p_in[0] : p_mid[0], to = (k == 1 || !s2) ? p_out[1] : p_mid[1];
        posix_spawn_file_actions_adddup2(&fa, from, 0);
        posix_spawn_file_actions_adddup2(&fa, to, 1);
        int fds[] = {p_in[0], p_in[1], p_out[0], p_out[1], s2 ? p_mid[0] : -1, s2 ? p_mid[1] : -1};
        for (size_t i = 0; i < UC_COUNT(fds); i++)
            if (fds[i] > 2)
                posix_spawn_file_actions_addclose(&fa, fds[i]);
        show(c, stage[k]);
        set_cpu(stage[k]->cpu[0] ? stage[k]->cpu : own_cpu); /* a stage without one: the replay's own */
        int e = posix_spawn(&pid[k], stage[k]->argv[0], &fa, NULL, stage[k]->argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        if (e)
            uc_die(c, UC_EXIT_DATA, "%s: %s", stage[k]->argv[0], strerror(e));
    }
    close(p_in[0]);
    close(p_out[1]);
    if (s2) {
        close(p_mid[0]);
        close(p_mid[1]);
    }
    set_cpu(own_cpu);
    FILE *w = fdopen(p_in[1], "wb");
    signal(SIGPIPE, SIG_IGN); /* a stage that fails early closes its input */
    int werr = !w || rec_write(in, w) || fclose(w) != 0;
    signal(SIGPIPE, SIG_DFL);
    rec_reader *rr = rec_reader_new(p_out[0], "the replayed stages");
    rec *out = NULL;
    int got = rec_read(rr, &out);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", got < 0 ? uc_errmsg() : "");
    rec_reader_free(rr);
    close(p_out[0]);
    int failed = 0;
    for (int k = 0; k < (s2 ? 2 : 1); k++) {
        int st;
        if (waitpid(pid[k], &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            failed = 1;
    }
    if (failed || got != 1 || werr) {
        rec_free(out);
        uc_die(c, UC_EXIT_DATA, "the replayed stages failed%s%s (their message is above)", msg[0] ? ": " : "", msg);
    }
    return out;
}

/* models.<stage>.checksum of a and b agree (both absent counts as agreeing). */
static void same_model(const uc_cli *c, const rec *was, const rec *now, const char *stage)
{
    rec *ma = rec_has(was, "models") ? rec_get_map(was, "models") : NULL;
    rec *mb = rec_has(now, "models") ? rec_get_map(now, "models") : NULL;
    rec *a = ma && rec_has(ma, stage) ? rec_get_map(ma, stage) : NULL;
    rec *b = mb && rec_has(mb, stage) ? rec_get_map(mb, stage) : NULL;
    const char *ca = a && rec_has(a, "checksum") ? rec_get_str(a, "checksum") : NULL;
    const char *cb = b && rec_has(b, "checksum") ? rec_get_str(b, "checksum") : NULL;
    int differ = (ca || cb) && (!ca || !cb || strcmp(ca, cb));
    char msg[400];
    if (differ)
        snprintf(msg, sizeof msg, "record 1 field models.%s.checksum: drawn with %.80s, replayed with %.80s", stage,
                 ca ? ca : "(none)", cb ? cb : "(none)");
    rec_free(a);
    rec_free(b);
    rec_free(ma);
    rec_free(mb);
    if (differ)
        uc_die(c, UC_EXIT_DATA, "%s: give the model it was drawn with", msg);
}

int main(int argc, char **argv)
{
    uc_cli c;
    uc_cli_init(&c, "unclip-replay", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS,
        {"decoder", 1, 0, OPT_DECODER},
        {"sr", 1, 0, OPT_SR},
        {"clip", 1, 0, OPT_CLIP},
        UC_IMAGE_OUT_LONGOPTS,
        {0, 0, 0, 0},
    };
    const char *dec_model = NULL, *sr_model = NULL, *clip_model = NULL;
    uc_image_out out = {0};
    int opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS UC_IMAGE_OUT_SHORTOPTS, longopts, NULL)) != -1) {
        if (uc_cli_common(&c, opt, optarg) || uc_image_out_option(&out, &c, opt, optarg))
            continue;
        switch (opt) {
        case OPT_DECODER: dec_model = optarg; break;
        case OPT_SR: sr_model = optarg; break;
        case OPT_CLIP: clip_model = optarg; break;
        default: uc_die(&c, UC_EXIT_USAGE, "unknown option");
        }
    }
    if (argc - optind > 1)
        uc_die(&c, UC_EXIT_USAGE, "one picture at a time");
    uc_image_out_check(&out, &c);
    const char *path = optind < argc ? argv[optind] : "-";
    const char *src = strcmp(path, "-") ? path : "stdin";

    uc_image_reader *ir = uc_image_reader_open_path(path);
    if (!ir)
        uc_die_err(&c);
    rec *r = NULL;
    int got = uc_image_reader_next(ir, &r);
    if (got < 0)
        uc_die_err(&c);
    if (got == 0)
        uc_die(&c, UC_EXIT_DATA, "%s: empty input (no picture)", src);
    uc_input_rest(&c, ir, src, "unclip-replay replays one picture at a time");
    uc_tensor want;
    if (!rec_has(r, "image") || rec_get_tensor(r, "image", &want))
        uc_die(&c, UC_EXIT_DATA, "%s: record 1 field image: %s", src, rec_has(r, "image") ? uc_errmsg() : "missing");
    rec *pd = stage_params(&c, r, "decoder"), *ps = stage_params(&c, r, "sr");
    if (!pd)
        uc_die(&c, UC_EXIT_DATA, "%s: record 1 field params.decoder: missing (not drawn by decoder-diffuse)", src);

    if (rec_has(pd, "edit") || (ps && rec_has(ps, "edit")))
        uc_die(&c, UC_EXIT_DATA, "%s: record 1 field params.%s.edit: an edit (inpainting or outpainting) needs its "
               "source picture and mask, which the PNG does not hold", src, rec_has(pd, "edit") ? "decoder" : "sr");
    /* The decoder's input: the record as it was, its noise key the decoder's */
    rec *in = rec_clone(r);
    rec_del(in, "image");
    rec_del(in, "image_f32");
    rec_set_u64(in, "noise_key", need_u64(&c, pd, "decoder", "noise_key"));
    int want_float = ps && rec_has(ps, "input") && !strcmp(need_str(&c, ps, "sr", "input"), "image_f32");

    char dir[PATH_MAX];
    bin_dir(&c, dir, sizeof dir);
    static cmd d, u;
    decoder_cmd(&c, &d, dir, pd, dec_model, clip_model, want_float);
    if (ps)
        sr_cmd(&c, &u, dir, ps, sr_model);
    rec *now = run(&c, in, &d, ps ? &u : NULL);

    same_model(&c, r, now, "decoder");
    same_model(&c, r, now, "rank");
    same_model(&c, r, now, "sr");
    uc_tensor t;
    if (rec_get_tensor(now, "image", &t))
        uc_die(&c, UC_EXIT_DATA, "the replayed record: %s", uc_errmsg());
    if (t.nbytes != want.nbytes || memcmp(t.data, want.data, t.nbytes)) {
        size_t diff = 0, n = UC_MIN(t.nbytes, want.nbytes);
        for (size_t i = 0; i < n; i++)
            diff += ((const unsigned char *)t.data)[i] != ((const unsigned char *)want.data)[i];
        uc_die(&c, UC_EXIT_DATA, "%s: the replayed picture differs (%zu of %zu bytes%s): another build or CPU?", src,
               diff, want.nbytes, t.nbytes != want.nbytes ? ", and its size" : "");
    }
    uc_info(&c, "%s: redrawn byte for byte (%zu bytes of pixels)", src, t.nbytes);

    /* the picture as it came, record and all */
    uc_image_out_open(&out, &c);
    if (out.format == UC_OUT_RECORD) {
        if (rec_write(r, out.f))
            uc_die(&c, UC_EXIT_DATA, "%s: %s", out.path ? out.path : "stdout", uc_errmsg());
    } else {
        FILE *f = out.path ? uc_out_open(&c, out.path) : stdout;
        if (uc_write_png_record(f, r))
            uc_die(&c, UC_EXIT_DATA, "%s: %s", out.path ? out.path : "stdout", uc_errmsg());
        if (out.path)
            uc_out_commit(&c, f);
    }
    if (out.path && out.format == UC_OUT_RECORD)
        uc_out_commit(&c, out.f);
    uc_stdout_check(&c);
    rec_free(now);
    rec_free(in);
    rec_free(pd);
    rec_free(ps);
    rec_free(r);
    uc_image_reader_free(ir);
    return UC_EXIT_OK;
}
