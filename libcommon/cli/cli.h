/* cli.h - the skeleton every tool shares: common options, messages on stderr
 * prefixed with the tool name, exit statuses (0 ok, 1 data or I/O error,
 * 2 usage), default model lookup, progress on a terminal, and output files
 * written under a temporary name and renamed when complete. */
#ifndef UNCLIP_CLI_H
#define UNCLIP_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "formats/record.h"

enum { UC_EXIT_OK = 0, UC_EXIT_DATA = 1, UC_EXIT_USAGE = 2 };
/* --progress: a bar on a terminal (auto), a JSON object a step on stderr,
 * or nothing. */
enum { UC_PROGRESS_AUTO, UC_PROGRESS_JSON, UC_PROGRESS_NONE };
enum { UC_OPT_PROGRESS = 0x2000, UC_OPT_VERIFY, UC_OPT_ANY_CLIP, UC_OPT_MEMORY };

typedef struct {
    const char *tool;
    const char *usage;    /* full --help text */
    const char *model;    /* -m/--model, or NULL */
    int threads;          /* -t/--threads (0: all cores) */
    uint64_t seed;        /* -s/--seed */
    int seed_set;
    int verbose;          /* -q: -1, default 0, -v: 1 */
    int progress;         /* --progress: UC_PROGRESS_* */
    int verify;           /* --verify: model files' tensor data hashed at open */
    int any_clip;         /* --any-clip: embeddings of any CLIP accepted */
    int argc;
    char **argv;
} uc_cli;

/* The common long options, to splice into a tool's getopt_long table, and
 * their short letters ("m:t:s:qvhV"). */
#define UC_CLI_SHORTOPTS "m:t:s:qvhV"
#define UC_CLI_LONGOPTS                                                                                      \
    {"model", 1, 0, 'm'}, {"threads", 1, 0, 't'}, {"seed", 1, 0, 's'}, {"quiet", 0, 0, 'q'},            \
        {"verbose", 0, 0, 'v'}, {"help", 0, 0, 'h'}, {"version", 0, 0, 'V'}, {"progress", 1, 0, UC_OPT_PROGRESS},   \
        {"memory-budget", 1, 0, UC_OPT_MEMORY}

/* --memory-budget SIZE (every tool; default $UNCLIP_MEMORY_BUDGET, else
 * 4G): bytes, or a number with K, M, G or T (powers of 1024). A tool sizes
 * the large buffers of each piece of work before starting it and exits 1
 * naming what would not fit (uc_mem_fits in formats/base.h). */
uint64_t uc_parse_size(const uc_cli *c, const char *opt, const char *s);

/* Options of the tools that open model files (--verify: recompute each
 * file's SHA-256 at open, uc_model_verify) and of those that take CLIP
 * embeddings from records (--any-clip: accept them whatever CLIP made
 * them); uc_cli_common handles both. */
#define UC_VERIFY_LONGOPT {"verify", 0, 0, UC_OPT_VERIFY}
#define UC_ANY_CLIP_LONGOPT {"any-clip", 0, 0, UC_OPT_ANY_CLIP}
/* Their lines in --help. */
#define UC_VERIFY_HELP                                                                                       \
    "      --verify        recompute the SHA-256 of the model's tensor data at\n"                                \
    "                      open and compare it with its unclip.checksum (reads\n"                              \
    "                      all the weights); the record then says verified\n"
#define UC_ANY_CLIP_PAIR_HELP                                                                                \
    "      --any-clip      take records whose embeddings were made by a CLIP\n"                                \
    "                      the model does not pair with (unclip.clip), or by\n"                                \
    "                      an unknown one (no models.clip)\n"

void uc_cli_init(uc_cli *c, const char *tool, const char *usage, int argc, char **argv);
/* Handle a common option; returns 1 when it was one (exits for -h, -V and
 * bad values), 0 otherwise. */
int uc_cli_common(uc_cli *c, int opt, const char *arg);
/* Set up threads after parsing. */
void uc_cli_ready(uc_cli *c);

void uc_die(const uc_cli *c, int status, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));
/* Print uc_errmsg() and exit 1. */
void uc_die_err(const uc_cli *c) __attribute__((noreturn));
void uc_warn(const uc_cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void uc_info(const uc_cli *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Parse helpers that exit 2 on a bad value, naming the option. */
double uc_parse_double(const uc_cli *c, const char *opt, const char *s);
long uc_parse_long(const uc_cli *c, const char *opt, const char *s, long lo, long hi);

/* Path of a model: -m when given, else <stage>.safetensors in $UNCLIP_MODELS,
 * next to the binary (../models), or the installed share directory.
 * Exits 1 with a clear message when none is found. */
const char *uc_model_path(const uc_cli *c, const char *stage);
/* The same search without -m: a model of another stage than the tool's. */
const char *uc_model_find(const uc_cli *c, const char *stage);

/* Open an input: "-" or NULL is stdin. Exits 1 if it cannot be opened. */
rec_reader *uc_open_records(const uc_cli *c, const char *path);

/* Progress: by default a one-line bar on stderr (label, steps, time left)
 * when it is a terminal and not quiet; --progress json writes one object
 * per call, {tool, what, done, total, elapsed, left}, whatever stderr is. */
void uc_progress(const uc_cli *c, const char *label, int64_t done, int64_t total);

/* Output files: write to a temporary name beside path (with the mode of the
 * file it replaces), then commit renames it into place. Temporary files are
 * removed if the process exits without committing or is ended by a signal
 * that can be caught. A symbolic link is written through (its target is
 * replaced, the link stays); a device or FIFO (/dev/null) is written
 * directly, never replaced. */
FILE *uc_out_open(const uc_cli *c, const char *path);
void uc_out_commit(const uc_cli *c, FILE *f);
/* Expand a pattern with one %d (e.g. "img-%d.png"); exits 2 if invalid. */
void uc_out_pattern(const uc_cli *c, const char *pattern, long index, char *buf, size_t n);
/* Before any work: exits 1 unless the folder of path exists and is writable
 * (2 for an empty path). */
void uc_out_dir_check(const uc_cli *c, const char *path);
/* Check stdout after writing; a write error exits 1. */
void uc_stdout_check(const uc_cli *c);

#endif
