/* rec-dump - print records as JSON lines, to look inside a pipeline. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <errno.h>
#include <string.h>

#include "libcommon/cli/cli.h"
#include "formats/base.h"
#include "libcommon/image/imageio.h"

static const char usage[] =
    "Usage: rec-dump [OPTION]... [FILE]...\n"
    "Print each record of record streams, or the record an unclip PNG carries\n"
    "(with its pixels as the image field), as one line of JSON.\n"
    "With no FILE, or when FILE is -, read standard input.\n"
    "Tensors are shown as {dtype, shape, values, min, max, mean, fnv1a}, with\n"
    "the first 8 values unless --full.\n"
    "\n"
    "      --full          every tensor value\n"
    "      --fields        only the field names of each record, as a JSON array\n"
    "  -m, --model FILE    accepted for uniformity; no model is used\n"
    "  -t, --threads N     accepted for uniformity\n"
    "  -s, --seed N        accepted for uniformity; nothing random is drawn\n"
    "  -q, --quiet         no messages but errors\n"
    "  -v, --verbose       a count of records per input on standard error\n"
    "  -h, --help          this help\n"
    "  -V, --version       version\n"
    "\n"
    "Exit status: 0 ok, 1 data error (the message names the input and the\n"
    "record), 2 usage error.\n";

enum { OPT_FULL = 256, OPT_FIELDS };

static int print_fields(const rec *r)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < rec_count(r); i++)
        cJSON_AddItemToArray(a, cJSON_CreateString(rec_key_at(r, i)));
    char *s = cJSON_PrintUnformatted(a);
    cJSON_Delete(a);
    int rc = puts(s) < 0 ? uc_err("write error on standard output: %s", strerror(errno ? errno : EIO)) : 0;
    free(s);
    return rc;
}

static void dump(const uc_cli *c, const char *path, int full, int fields)
{
    uc_image_reader *ir = uc_image_reader_open_path(path);
    if (!ir)
        uc_die_err(c);
    rec *r;
    long n = 0;
    int got;
    while ((got = uc_image_reader_next(ir, &r)) == 1) {
        n++;
        int rc = fields ? print_fields(r) : rec_dump_json(r, stdout, full);
        rec_free(r);
        if (rc)
            uc_die_err(c);
    }
    if (got < 0)
        uc_die_err(c);
    uc_info(c, "%s: %ld records", path ? path : "stdin", n);
    uc_image_reader_free(ir);
}

int main(int argc, char **argv)
{
    uc_cli c;
    uc_cli_init(&c, "rec-dump", usage, argc, argv);
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS, {"full", 0, 0, OPT_FULL}, {"fields", 0, 0, OPT_FIELDS}, {0, 0, 0, 0},
    };
    int full = 0, fields = 0, opt;
    while ((opt = getopt_long(argc, argv, UC_CLI_SHORTOPTS, longopts, NULL)) != -1) {
        if (uc_cli_common(&c, opt, optarg))
            continue;
        switch (opt) {
        case OPT_FULL: full = 1; break;
        case OPT_FIELDS: fields = 1; break;
        default: uc_die(&c, UC_EXIT_USAGE, "bad option");
        }
    }
    if (full && fields)
        uc_die(&c, UC_EXIT_USAGE, "--full and --fields exclude each other");
    uc_cli_ready(&c);
    if (optind == argc)
        dump(&c, NULL, full, fields);
    for (int i = optind; i < argc; i++)
        dump(&c, argv[i], full, fields);
    uc_stdout_check(&c);
    return UC_EXIT_OK;
}
