/* emb-interp - records whose image embeddings go from one image's to
 * another's (DALL-E 2 paper, section 3.2), for the decoder to render. */
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
    "Usage: emb-interp [OPTION]... [A [B]]\n"
    "Interpolate between the image embeddings (image_emb) of two records.\n"
    "A and B are record streams or unclip PNGs; the first record of each is used.\n"
    "With one stream (or none: standard input), its first two records are A and B.\n"
    "Writes --steps records to standard output; record i has t = i / (steps - 1).\n"
    "\n"
    "  -a, --from FILE     A (instead of the first argument)\n"
    "  -b, --to FILE       B (instead of the second argument)\n"
    "  -n, --steps N       number of records, at least 2 (default 5)\n"
    "      --lerp          linear interpolation instead of spherical (slerp)\n"
    "      --text WHICH    take the text fields (prompt, tokens, token_mask,\n"
    "                      text_emb, text_seq, uncond) from a or b (default a)\n"
    "      --fresh-noise   give each record a noise key of its own (default:\n"
    "                      every record keeps A's, so the frames a decoder\n"
    "                      draws differ only as the embedding does)\n"
    "      --any-clip      mix records whose embeddings two CLIPs made\n"
    "  -m, --model FILE    accepted for uniformity; no model is used\n"
    "  -t, --threads N     accepted for uniformity\n"
    "  -s, --seed N        accepted for uniformity; nothing random is drawn\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       more messages\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Every other field of A passes through; image, image_f32 and source are\n"
    "dropped (they describe A's picture, not the new embedding), and A's\n"
    "noise_key is kept. Each record gets params.interp {t, method, steps,\n"
    "index} and a history entry.\n"
    "Exit status: 0 ok, 1 data error, 2 usage error.\n";

enum { OPT_LERP = 256, OPT_TEXT, OPT_FRESH };

/* The first record of a stream, numbered as in it. */
static rec *first_record(const uc_cli *c, uc_image_reader *ir, const char *name, const char *which)
{
    rec *r;
    int got = uc_image_reader_next(ir, &r);
    if (got < 0)
        uc_die_err(c);
    if (got == 0)
        uc_die(c, UC_EXIT_DATA, "%s: no record for %s", name, which);
    return r;
}

int main(int argc, char **argv)
{
    uc_cli c;
    uc_cli_init(&c, "emb-interp", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS, UC_ANY_CLIP_LONGOPT,     {"from", 1, 0, 'a'}, {"to", 1, 0, 'b'}, {"steps", 1, 0, 'n'},
        {"lerp", 0, 0, OPT_LERP}, {"text", 1, 0, OPT_TEXT}, {"fresh-noise", 0, 0, OPT_FRESH}, {0, 0, 0, 0},
    };
    const char *pa = NULL, *pb = NULL;
    long steps = 5;
    int lerp = 0, text_b = 0, fresh = 0, opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS "a:b:n:", longopts, NULL)) != -1) {
        if (uc_cli_common(&c, opt, optarg))
            continue;
        switch (opt) {
        case 'a': pa = optarg; break;
        case 'b': pb = optarg; break;
        case 'n': steps = uc_parse_long(&c, "--steps", optarg, 2, 100000); break;
        case OPT_LERP: lerp = 1; break;
        case OPT_FRESH: fresh = 1; break;
        case OPT_TEXT:
            if (strcmp(optarg, "a") == 0 || strcmp(optarg, "A") == 0)
                text_b = 0;
            else if (strcmp(optarg, "b") == 0 || strcmp(optarg, "B") == 0)
                text_b = 1;
            else
                uc_die(&c, UC_EXIT_USAGE, "--text: '%s' is not a or b", optarg);
            break;
        default: uc_die(&c, UC_EXIT_USAGE, "bad option");
        }
    }
    for (int i = optind; i < argc; i++) {
        if (!pa)
            pa = argv[i];
        else if (!pb)
            pb = argv[i];
        else
            uc_die(&c, UC_EXIT_USAGE, "too many inputs (A and B at most)");
    }
    uc_cli_ready(&c);

    /* A and B: two streams, or the first two records of one */
    const char *na = pa ? pa : "-", *nb = pb ? pb : na;
    int one_stream = !pb || (strcmp(na, "-") == 0 && strcmp(nb, "-") == 0);
    uc_image_reader *ia = uc_image_reader_open_path(na);
    if (!ia)
        uc_die_err(&c);
    const char *la = strcmp(na, "-") ? na : "stdin", *lb = strcmp(nb, "-") ? nb : "stdin";
    rec *ra = first_record(&c, ia, la, "A");
    uc_image_reader *ib = NULL;
    rec *rb;
    if (one_stream) {
        rb = first_record(&c, ia, la, "B (its second record)");
    } else {
        ib = uc_image_reader_open_path(nb);
        if (!ib)
            uc_die_err(&c);
        rb = first_record(&c, ib, lb, "B");
        uc_input_rest(&c, ib, lb, NULL);
    }
    uc_input_rest(&c, ia, la, NULL); /* further records are ignored, bytes that are not one refused */

    int64_t da, db;
    float *ea = uc_emb_get(ra, la, "image_emb", &da);
    if (!ea)
        uc_die_err(&c);
    float *eb = uc_emb_get(rb, lb, "image_emb", &db);
    if (!eb)
        uc_die_err(&c);
    if (da != db)
        uc_die(&c, UC_EXIT_DATA, "%s: record %ld field image_emb: %lld values, but A (%s record %ld) has %lld", lb,
               rec_number(rb), (long long)db, la, rec_number(ra), (long long)da);
    uc_check_same_clip(&c, ra, la, rb, lb);
    uc_info(&c, "%s from %s to %s, %ld steps, %lld dimensions", lerp ? "lerp" : "slerp", la, lb, steps,
            (long long)da);

    float *e = uc_alloc((size_t)da, sizeof *e);
    for (long i = 0; i < steps; i++) {
        double t = (double)i / (double)(steps - 1);
        if (lerp)
            uc_emb_lerp(ea, eb, da, t, e);
        else if (uc_emb_slerp(ea, eb, da, t, e))
            uc_die(&c, UC_EXIT_DATA, "%s and %s: %s (use --lerp)", la, lb, uc_errmsg());
        uc_check_finite(&c, la, ra, "image_emb", e, da);
        rec *out = uc_emb_record(ra, text_b ? rb : NULL, e, da);
        uint64_t key = uc_record_noise_key(&c, ra, la);
        rec_set_u64(out, "noise_key", fresh ? uc_output_noise_key(key, "interp", (uint64_t)i) : key);
        rec *p = rec_new();
        rec_del(p, "version");
        rec_set_f64(p, "t", t);
        rec_set_str(p, "method", lerp ? "lerp" : "slerp");
        rec_set_u64(p, "steps", (uint64_t)steps);
        rec_set_u64(p, "index", (uint64_t)i);
        rec_set_stage(out, "params", "interp", p);
        rec_free(p);
        uc_emit_record(&c, out);
    }
    uc_stdout_check(&c);
    uc_free(e);
    uc_free(ea);
    uc_free(eb);
    rec_free(ra);
    rec_free(rb);
    uc_image_reader_free(ia);
    uc_image_reader_free(ib);
    return UC_EXIT_OK;
}
