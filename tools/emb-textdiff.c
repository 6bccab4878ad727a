/* emb-textdiff - edit an image through language (DALL-E 2 paper, section
 * 3.3): turn its CLIP image embedding towards the difference between the
 * text embeddings of a target caption and of a caption of the image now. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "libcommon/cli/cli.h"
#include "formats/base.h"
#include "libcommon/sample/emb.h"
#include "libcommon/image/imageio.h"
#include "libcommon/cli/stage.h"

static const char usage[] =
    "Usage: emb-textdiff [OPTION]... IMAGE CURRENT TARGET\n"
    "Move an image embedding along a text diff (DALL-E 2, section 3.3).\n"
    "IMAGE: a record stream or unclip PNG whose first record has image_emb\n"
    "(clip-encode --image, prior-sample); CURRENT and TARGET: records from\n"
    "clip-encode with text_emb, a caption of the image as it is and of the\n"
    "image as wanted. One of the three may be - (standard input).\n"
    "With d = normalise(TARGET.text_emb - CURRENT.text_emb), each output's\n"
    "image_emb is |z| * slerp(z / |z|, d, theta) for the image embedding z.\n"
    "\n"
    "      --theta X       how far to turn towards d, 0..1 (default 0.5)\n"
    "  -n, --steps N       N records, theta = max * i / (N - 1), i = 0..N-1\n"
    "      --max-theta X   the largest theta with --steps (default 0.5)\n"
    "      --text WHICH    the text fields (prompt, tokens, token_mask,\n"
    "                      text_emb, text_seq, uncond) of the outputs: from\n"
    "                      image (default), current or target\n"
    "      --fresh-noise   give each record a noise key of its own (default:\n"
    "                      IMAGE's, so the pictures differ only as the\n"
    "                      embedding does)\n"
    "      --any-clip      mix records whose embeddings two CLIPs made\n"
    "  -m, --model FILE    accepted for uniformity; no model is used\n"
    "  -t, --threads N     accepted for uniformity\n"
    "  -s, --seed N        accepted for uniformity; nothing random is drawn\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       more messages\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Every other field of IMAGE passes through; image, image_f32 and source\n"
    "are dropped, and IMAGE's noise_key is kept. Each record gets\n"
    "params.textdiff {theta, current, target, index} and a history entry.\n"
    "Exit status: 0 ok, 1 data error, 2 usage error.\n";

enum { OPT_THETA = 256, OPT_MAX, OPT_TEXT, OPT_FRESH };

static rec *first_record(const uc_cli *c, const char *path, const char *which)
{
    uc_image_reader *ir = uc_image_reader_open_path(path);
    if (!ir)
        uc_die_err(c);
    rec *r;
    int got = uc_image_reader_next(ir, &r);
    if (got < 0)
        uc_die_err(c);
    if (got == 0)
        uc_die(c, UC_EXIT_DATA, "%s: no record (%s)", strcmp(path, "-") ? path : "stdin", which);
    uc_input_rest(c, ir, strcmp(path, "-") ? path : "stdin", NULL); /* further records ignored, garbage refused */
    uc_image_reader_free(ir);
    return r;
}

int main(int argc, char **argv)
{
    uc_cli c;
    uc_cli_init(&c, "emb-textdiff", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS, UC_ANY_CLIP_LONGOPT,         {"theta", 1, 0, OPT_THETA}, {"steps", 1, 0, 'n'},
        {"max-theta", 1, 0, OPT_MAX}, {"text", 1, 0, OPT_TEXT},  {"fresh-noise", 0, 0, OPT_FRESH},
        {0, 0, 0, 0},
    };
    double theta = 0.5, max_theta = 0.5;
    long steps = 0;
    int theta_set = 0, max_set = 0, text_from = 0, fresh = 0, opt; /* text_from: 0 image, 1 current, 2 target */
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "n:", longopts, NULL)) != -1) {
        if (uc_cli_common(&c, opt, optarg))
            continue;
        switch (opt) {
        case OPT_THETA: theta = uc_parse_double(&c, "--theta", optarg), theta_set = 1; break;
        case OPT_FRESH: fresh = 1; break;
        case OPT_MAX: max_theta = uc_parse_double(&c, "--max-theta", optarg), max_set = 1; break;
        case 'n': steps = uc_parse_long(&c, "--steps", optarg, 2, 100000); break;
        case OPT_TEXT:
            if (strcmp(optarg, "image") == 0)
                text_from = 0;
            else if (strcmp(optarg, "current") == 0)
                text_from = 1;
            else if (strcmp(optarg, "target") == 0)
                text_from = 2;
            else
                uc_die(&c, UC_EXIT_USAGE, "--text: '%s' is not image, current or target", optarg);
            break;
        default: uc_die(&c, UC_EXIT_USAGE, "bad option");
        }
    }
    if (argc - optind != 3)
        uc_die(&c, UC_EXIT_USAGE, "needs three inputs: IMAGE CURRENT TARGET");
    if (steps && theta_set)
        uc_die(&c, UC_EXIT_USAGE, "--theta and --steps exclude each other (use --max-theta)");
    if (max_set && !steps)
        uc_die(&c, UC_EXIT_USAGE, "--max-theta needs --steps");
    if (theta < 0 || theta > 1 || max_theta < 0 || max_theta > 1)
        uc_die(&c, UC_EXIT_USAGE, "theta must lie in 0..1");
    int nstdin = 0;
    for (int i = optind; i < argc; i++)
        nstdin += strcmp(argv[i], "-") == 0;
    if (nstdin > 1)
        uc_die(&c, UC_EXIT_USAGE, "only one input can be standard input");
    uc_cli_ready(&c);

    const char *path[3], *label[3];
    rec *r[3];
    static const char *const which[3] = {"IMAGE", "CURRENT", "TARGET"};
    for (int k = 0; k < 3; k++) {
        path[k] = argv[optind + k];
        label[k] = strcmp(path[k], "-") ? path[k] : "stdin";
        r[k] = first_record(&c, path[k], which[k]);
    }
    int64_t di, dc, dt;
    float *zi = uc_emb_get(r[0], label[0], "image_emb", &di);
    if (!zi)
        uc_die_err(&c);
    float *tc = uc_emb_get(r[1], label[1], "text_emb", &dc);
    if (!tc)
        uc_die_err(&c);
    float *tt = uc_emb_get(r[2], label[2], "text_emb", &dt);
    if (!tt)
        uc_die_err(&c);
    if (dc != di || dt != di)
        uc_die(&c, UC_EXIT_DATA, "%s: record %ld field text_emb: %lld values, but the image embedding (%s record %ld) has %lld",
               dc != di ? label[1] : label[2], rec_number(dc != di ? r[1] : r[2]), (long long)(dc != di ? dc : dt),
               label[0], rec_number(r[0]), (long long)di);
    uc_check_same_clip(&c, r[0], label[0], r[1], label[1]);
    uc_check_same_clip(&c, r[0], label[0], r[2], label[2]);
    const char *pc = rec_has(r[1], "prompt") ? rec_get_str(r[1], "prompt") : NULL;
    const char *pt = rec_has(r[2], "prompt") ? rec_get_str(r[2], "prompt") : NULL;

    long n = steps ? steps : 1;
    float *z = uc_alloc((size_t)di, sizeof *z);
    for (long i = 0; i < n; i++) {
        double th = steps ? max_theta * (double)i / (double)(steps - 1) : theta;
        if (uc_emb_textdiff(zi, tc, tt, di, th, z))
            uc_die(&c, UC_EXIT_DATA, "%s, %s, %s: %s", label[0], label[1], label[2], uc_errmsg());
        uc_check_finite(&c, label[0], r[0], "image_emb", z, di);
        rec *out = uc_emb_record(r[0], text_from ? r[text_from] : NULL, z, di);
        uint64_t key = uc_record_noise_key(&c, r[0], label[0]);
        rec_set_u64(out, "noise_key", fresh ? uc_output_noise_key(key, "textdiff", (uint64_t)i) : key);
        rec *p = rec_new();
        rec_del(p, "version");
        rec_set_f64(p, "theta", th);
        if (pc)
            rec_set_str(p, "current", pc);
        if (pt)
            rec_set_str(p, "target", pt);
        rec_set_u64(p, "index", (uint64_t)i);
        rec_set_stage(out, "params", "textdiff", p);
        rec_free(p);
        uc_emit_record(&c, out);
    }
    uc_stdout_check(&c);
    uc_info(&c, "%ld records, text diff between \"%s\" and \"%s\"", n, pc ? pc : "?", pt ? pt : "?");
    uc_free(z);
    uc_free(zi);
    uc_free(tc);
    uc_free(tt);
    for (int k = 0; k < 3; k++)
        rec_free(r[k]);
    return UC_EXIT_OK;
}
