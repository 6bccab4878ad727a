/* unclip-spec - print the weight tree of a stage (its one description,
 * model.h) for a config: every tensor's name, shape and half-precision
 * storage type, as JSON. The converter checks checkpoints against it. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/base.h"
#include "libcommon/cli/cli.h"
#include "libcommon/models/model.h"

static const char usage[] =
    "Usage: unclip-spec [OPTION]... STAGE [CONFIG]\n"
    "Print the tensors a model file of STAGE (clip, prior, decoder or sr) holds\n"
    "for the hyperparameters in CONFIG, as one JSON object:\n"
    "  {\"stage\": STAGE, \"config\": {...}, \"tensors\": [{\"name\", \"shape\", \"dtype\"}, ...]}\n"
    "in the order the loader binds them. dtype is the storage type of a\n"
    "half-precision file: F16, or F32 for what stays full precision.\n"
    "CONFIG is a JSON file as unclip-convert --config takes it (Karlo's yaml\n"
    "fields as JSON, or CLIP(...) arguments); - reads standard input. Without\n"
    "CONFIG: the released sizes (OpenAI ViT-L/14, Karlo v1.0.alpha).\n"
    "\n"
    "  -m, --model FILE    accepted for uniformity; no model is read\n"
    "  -t, --threads N     accepted for uniformity\n"
    "  -s, --seed N        accepted for uniformity; nothing random is drawn\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       the tensor count and parameter total on standard error\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Exit status: 0 ok, 1 bad config (the message names the field), 2 usage\n"
    "error (an unknown STAGE included).\n";

#define MAX_CONFIG (16 << 20)

typedef struct {
    FILE *out;
    long n;
    double params;
} printer;

static int print_tensor(void *ctx, const char *name, int ndim, const int64_t *shape, const char *dtype)
{
    printer *p = ctx;
    cJSON *s = cJSON_CreateString(name);
    char *q = cJSON_PrintUnformatted(s);
    cJSON_Delete(s);
    fprintf(p->out, "%s\n  {\"name\":%s,\"shape\":[", p->n ? "," : "", q);
    free(q);
    double numel = 1;
    for (int i = 0; i < ndim; i++) {
        fprintf(p->out, "%s%lld", i ? "," : "", (long long)shape[i]);
        numel *= (double)shape[i];
    }
    fprintf(p->out, "],\"dtype\":\"%s\"}", dtype);
    p->n++;
    p->params += numel;
    return 0;
}

int main(int argc, char **argv)
{
    uc_cli c;
    uc_cli_init(&c, "unclip-spec", usage, argc, argv);
    static const struct option longopts[] = {UC_CLI_LONGOPTS, {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS, longopts, NULL)) != -1) {
        if (uc_cli_common(&c, opt, optarg))
            continue;
        uc_die(&c, UC_EXIT_USAGE, "bad option");
    }
    if (optind == argc)
        uc_die(&c, UC_EXIT_USAGE, "expected STAGE (clip, prior, decoder or sr)");
    if (argc - optind > 2)
        uc_die(&c, UC_EXIT_USAGE, "expected STAGE and at most one CONFIG");
    uc_cli_ready(&c);
    const char *stage = argv[optind], *path = optind + 1 < argc ? argv[optind + 1] : NULL;
    const char *dflt = uc_stage_default_config(stage);
    if (!dflt)
        uc_die(&c, UC_EXIT_USAGE, "%s", uc_errmsg());

    char *text = NULL;
    size_t len = 0;
    if (path) {
        if (uc_read_file(strcmp(path, "-") ? path : "/dev/stdin", MAX_CONFIG, &text, &len))
            uc_die_err(&c);
        if (strlen(text) != len)
            uc_die(&c, UC_EXIT_DATA, "%s: not JSON (a NUL byte)", path);
    }
    const char *where = path ? (strcmp(path, "-") ? path : "stdin") : "default config";
    cJSON *cfg = cJSON_Parse(text ? text : dflt);
    if (!cJSON_IsObject(cfg))
        uc_die(&c, UC_EXIT_DATA, "%s: not a JSON object%s", where, cfg ? "" : " (is it YAML? give JSON)");

    /* walk once to check the config before printing anything */
    printer count = {fopen("/dev/null", "w"), 0, 0};
    if (!count.out)
        uc_die(&c, UC_EXIT_DATA, "cannot open /dev/null");
    int rc = uc_stage_tensors(stage, text ? text : NULL, print_tensor, &count);
    fclose(count.out);
    if (rc)
        uc_die(&c, UC_EXIT_DATA, "%s: %s", where, uc_errmsg());

    char *cs = cJSON_PrintUnformatted(cfg);
    cJSON *st = cJSON_CreateString(stage);
    char *ss = cJSON_PrintUnformatted(st);
    printf("{\"stage\":%s,\n\"config\":%s,\n\"tensors\":[", ss, cs);
    free(ss);
    free(cs);
    cJSON_Delete(st);
    printer p = {stdout, 0, 0};
    if (uc_stage_tensors(stage, text ? text : NULL, print_tensor, &p))
        uc_die_err(&c);
    printf("\n]}\n");
    uc_stdout_check(&c);
    uc_info(&c, "%s: %ld tensors, %.0f parameters", stage, p.n, p.params);
    cJSON_Delete(cfg);
    free(text);
    return UC_EXIT_OK;
}
