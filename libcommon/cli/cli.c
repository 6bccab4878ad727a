/* cli.c - see cli.h */
#define _GNU_SOURCE
#include "libcommon/cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/base.h"
#include "libcommon/models/model.h"
#include "libcommon/nn/cpu.h"
#include "libcommon/nn/ops.h"
#include "libcommon/nn/winograd.h"

#ifndef UC_SHARE_DIR
#define UC_SHARE_DIR "/usr/local/share/unclip"
#endif

/* Temporary outputs to remove on a signal or an exit without commit. */
#define MAX_TMP 64
static char tmp_paths[MAX_TMP][PATH_MAX];
static char final_paths[MAX_TMP][PATH_MAX];
static FILE *tmp_files[MAX_TMP];
static volatile sig_atomic_t ntmp;

static void cleanup_tmp(void)
{
    for (int i = 0; i < ntmp; i++)
        if (tmp_paths[i][0])
            unlink(tmp_paths[i]);
}

static const uc_cli *oom_cli;

static void on_oom(size_t bytes)
{
    if (bytes == SIZE_MAX)
        uc_die(oom_cli, UC_EXIT_DATA, "out of memory: a size past what this machine can address was asked for");
    uc_die(oom_cli, UC_EXIT_DATA, "out of memory: %.1f MiB more could not be had (ulimit -v, or too large an input "
           "for this machine)", (double)bytes / (1 << 20));
}

/* A mapped model file that shrinks under a running tool raises SIGBUS on
 * the next read of a page past its new end: say so, remove temporaries,
 * exit 1 (async-signal-safe calls only). */
static void on_sigbus(int sig)
{
    (void)sig;
    static const char msg[] = ": a model file changed or shrank while in use (SIGBUS); nothing written\n";
    const char *tool = oom_cli ? oom_cli->tool : "unclip";
    if (write(2, tool, strlen(tool)) < 0 || write(2, msg, sizeof msg - 1) < 0) {
        /* nothing more to do */
    }
    cleanup_tmp();
    _exit(UC_EXIT_DATA);
}

static void on_signal(int sig)
{
    cleanup_tmp();
    signal(sig, SIG_DFL);
    raise(sig);
}

void uc_cli_init(uc_cli *c, const char *tool, const char *usage, int argc, char **argv)
{
    memset(c, 0, sizeof *c);
    c->tool = tool;
    c->usage = usage;
    c->argc = argc;
    c->argv = argv;
    /* every catchable signal whose default ends the process */
    static const int fatal[] = {SIGINT, SIGTERM, SIGHUP,  SIGQUIT,   SIGXFSZ, SIGXCPU,
                                SIGALRM, SIGUSR1, SIGUSR2, SIGVTALRM, SIGPROF};
    for (size_t i = 0; i < sizeof fatal / sizeof fatal[0]; i++)
        signal(fatal[i], on_signal);
    opterr = 0; /* getopt's own message would repeat ours */
    /* A reader that goes away early ends us quietly (SIGPIPE's default). */
    signal(SIGPIPE, SIG_DFL);
    atexit(cleanup_tmp);
    oom_cli = c;
    uc_set_oom_handler(on_oom);
    const char *mb = getenv("UNCLIP_MEMORY_BUDGET");
    if (mb && *mb)
        uc_mem_set_budget(uc_parse_size(c, "UNCLIP_MEMORY_BUDGET", mb));
    /* the Winograd cache's budget (nn/winograd.c) */
    const char *wc = getenv("UNCLIP_WINOGRAD_CACHE_MB");
    if (wc) {
        char *end;
        double v = strtod(wc, &end);
        if (end == wc || *end || !(v >= 0 && v <= 1e9))
            uc_die(c, UC_EXIT_USAGE, "UNCLIP_WINOGRAD_CACHE_MB: '%s' is not a number of MiB in [0, 1e9]", wc);
        uc_winograd_set_cache_mb(v);
    }
    /* the kernels' level (nn/cpu.h), which would take junk as "native" */
    const char *cpu = getenv("UNCLIP_CPU");
    if (cpu && *cpu && uc_cpu_parse(cpu) < 0)
        uc_die(c, UC_EXIT_USAGE, "UNCLIP_CPU: '%s' is not one of avx2, avx512, avx512bf16, native", cpu);
    signal(SIGBUS, on_sigbus);
}

static void vmsg(const uc_cli *c, const char *fmt, va_list ap)
{
    fprintf(stderr, "%s: ", c->tool);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

void uc_die(const uc_cli *c, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(c, fmt, ap);
    va_end(ap);
    if (status == UC_EXIT_USAGE)
        fprintf(stderr, "Try '%s --help' for more information.\n", c->tool);
    exit(status);
}

void uc_die_err(const uc_cli *c) { uc_die(c, UC_EXIT_DATA, "%s", uc_errmsg()); }

void uc_warn(const uc_cli *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vmsg(c, fmt, ap);
    va_end(ap);
}

void uc_info(const uc_cli *c, const char *fmt, ...)
{
    if (c->verbose < 1)
        return;
    va_list ap;
    va_start(ap, fmt);
    vmsg(c, fmt, ap);
    va_end(ap);
}

double uc_parse_double(const uc_cli *c, const char *opt, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || v != v)
        uc_die(c, UC_EXIT_USAGE, "%s: '%s' is not a number", opt, s);
    if (v > 1e300 || v < -1e300) /* inf, and overflows (ERANGE) */
        uc_die(c, UC_EXIT_USAGE, "%s: '%s' is out of range (past 1e300 in magnitude)", opt, s);
    return v; /* an underflow (ERANGE too) is the tiny or zero value strtod rounds it to */
}

long uc_parse_long(const uc_cli *c, const char *opt, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        uc_die(c, UC_EXIT_USAGE, "%s: '%s' is not an integer in %ld..%ld", opt, s, lo, hi);
    return v;
}

uint64_t uc_parse_size(const uc_cli *c, const char *opt, const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    int shift = 0;
    if (end != s && *end && !end[1]) {
        const char *units = "KMGTkmgt", *u = strchr(units, *end);
        if (u && *u) {
            shift = 10 * (int)((u - units) % 4 + 1);
            end++;
        }
    }
    v = ldexp(v, shift);
    if (errno || end == s || *end || !(s[0] >= '0' && s[0] <= '9') || !(v >= 1 << 20) || v > ldexp(1, 50))
        uc_die(c, UC_EXIT_USAGE, "%s: '%s' is not a size from 1M to 1024T (bytes, or a number with K, M, G or T)",
               opt, s);
    return (uint64_t)v;
}

int uc_cli_common(uc_cli *c, int opt, const char *arg)
{
    switch (opt) {
    case UC_OPT_MEMORY: uc_mem_set_budget(uc_parse_size(c, "--memory-budget", arg)); return 1;
    case 'm': c->model = arg; return 1;
    case 't': c->threads = (int)uc_parse_long(c, "--threads", arg, 0, 1024); return 1;
    case 's': {
        char *end;
        errno = 0;
        unsigned long long v = strtoull(arg, &end, 10);
        if (errno || end == arg || *end || !(arg[0] >= '0' && arg[0] <= '9')) /* strtoull takes " -1" */
            uc_die(c, UC_EXIT_USAGE, "--seed: '%s' is not a non-negative integer", arg);
        c->seed = v;
        c->seed_set = 1;
        return 1;
    }
    case 'q': c->verbose = -1; return 1;
    case UC_OPT_VERIFY:
        c->verify = 1;
        uc_model_verify(1);
        return 1;
    case UC_OPT_ANY_CLIP: c->any_clip = 1; return 1;
    case UC_OPT_PROGRESS:
        if (!strcmp(arg, "auto"))
            c->progress = UC_PROGRESS_AUTO;
        else if (!strcmp(arg, "json"))
            c->progress = UC_PROGRESS_JSON;
        else if (!strcmp(arg, "none"))
            c->progress = UC_PROGRESS_NONE;
        else
            uc_die(c, UC_EXIT_USAGE, "--progress: '%s' is not auto, json or none", arg);
        return 1;
    case 'v': c->verbose = 1; return 1;
    case 'h':
        fputs(c->usage, stdout);
        uc_stdout_check(c);
        exit(0);
    case 'V':
        printf("%s (unclip) %s\n", c->tool, UC_VERSION);
        uc_stdout_check(c);
        exit(0);
    case '?':
    case ':': {
        /* getopt_long leaves the option in optopt (short) or argv[optind - 1] */
        char name[3] = {'-', (char)optopt, 0};
        const char *o = optopt ? name : optind > 0 && optind <= c->argc ? c->argv[optind - 1] : "?";
        uc_die(c, UC_EXIT_USAGE, opt == ':' ? "option '%s' needs a value" : "unknown option '%s'", o);
    }
    default: return 0;
    }
}

void uc_cli_ready(uc_cli *c) { c->threads = uc_threads_init(c->threads); }

static int file_exists(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISREG(sb.st_mode);
}

const char *uc_model_path(const uc_cli *c, const char *stage)
{
    return c->model ? c->model : uc_model_find(c, stage);
}

const char *uc_model_find(const uc_cli *c, const char *stage)
{
    static char buf[PATH_MAX + 64];
    const char *env = getenv("UNCLIP_MODELS");
    if (env && *env) {
        snprintf(buf, sizeof buf, "%s/%s.safetensors", env, stage);
        if (file_exists(buf))
            return buf;
    }
    char exe[PATH_MAX / 2];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = 0;
        char *slash = strrchr(exe, '/');
        if (slash) {
            *slash = 0;
            snprintf(buf, sizeof buf, "%s/../models/%s.safetensors", exe, stage);
            if (file_exists(buf))
                return buf;
            snprintf(buf, sizeof buf, "%s/../share/unclip/models/%s.safetensors", exe, stage);
            if (file_exists(buf))
                return buf;
        }
    }
    snprintf(buf, sizeof buf, "%s/models/%s.safetensors", UC_SHARE_DIR, stage);
    if (file_exists(buf))
        return buf;
    uc_die(c, UC_EXIT_DATA, "no %s model: give one with -m FILE or set UNCLIP_MODELS", stage);
}

rec_reader *uc_open_records(const uc_cli *c, const char *path)
{
    if (!path || strcmp(path, "-") == 0)
        return rec_reader_new(0, "stdin");
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        uc_die(c, UC_EXIT_DATA, "%s: %s", path, strerror(errno));
    return rec_reader_new(fd, path); /* fd closed at exit */
}

void uc_progress(const uc_cli *c, const char *label, int64_t done, int64_t total)
{
    static char last[64];
    static double t0;
    if (c->progress == UC_PROGRESS_NONE || total <= 0 ||
        (c->progress == UC_PROGRESS_AUTO && (c->verbose < 0 || !isatty(2))))
        return;
    /* time left from the rate of this label's steps so far */
    double now = uc_now();
    if (strncmp(last, label, sizeof last - 1) || done <= 1) {
        snprintf(last, sizeof last, "%s", label);
        t0 = now;
    }
    double el = now - t0, left = done > 0 ? el / (double)done * (double)(total - done) : 0;
    if (c->progress == UC_PROGRESS_JSON) {
        /* one object a line, for programs that drive the tools (label is ours: no escaping needed) */
        fprintf(stderr, "{\"tool\":\"%s\",\"what\":\"%s\",\"done\":%lld,\"total\":%lld,\"elapsed\":%.3f,\"left\":%.3f}\n",
                c->tool, label, (long long)done, (long long)total, el, left);
        fflush(stderr);
        return;
    }
    int width = 24, fill = (int)(width * done / total);
    fprintf(stderr, "\r%s: %-12s [", c->tool, label);
    for (int i = 0; i < width; i++)
        fputc(i < fill ? '#' : '.', stderr);
    fprintf(stderr, "] %lld/%lld, %.0f s left\033[K", (long long)done, (long long)total, left);
    if (done >= total)
        fputs("\r\033[K", stderr);
    fflush(stderr);
}

FILE *uc_out_open(const uc_cli *c, const char *path)
{
    if (!*path) /* no name to rename the temporary to: it would stay, and nothing be written */
        uc_die(c, UC_EXIT_USAGE, "an output file name is empty (give a file name)");
    int i = 0;
    while (i < ntmp && (tmp_paths[i][0] || tmp_files[i])) /* reuse committed slots */
        i++;
    if (i == MAX_TMP)
        uc_die(c, UC_EXIT_DATA, "too many outputs open at once");
    struct stat sb;
    char real[PATH_MAX];
    const char *target = path;
    if (lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode)) { /* write through a link: replace its target */
        if (!realpath(path, real))
            uc_die(c, UC_EXIT_DATA, "%s: %s", path, strerror(errno));
        target = real;
    }
    int exists = stat(target, &sb) == 0;
    if (exists && S_ISDIR(sb.st_mode))
        uc_die(c, UC_EXIT_DATA, "%s: is a directory", path);
    if (exists && !S_ISREG(sb.st_mode)) {
        /* a device or FIFO (/dev/null, a pipe) is written directly, never
         * replaced; a FIFO waits for its reader, as a shell's > does (not
         * opened without blocking: a reader still starting was refused) */
        int fd = open(target, O_WRONLY);
        FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
        if (!f)
            uc_die(c, UC_EXIT_DATA, "%s: %s", path, strerror(errno));
        final_paths[i][0] = 0; /* nothing to rename */
        tmp_paths[i][0] = 0;
        tmp_files[i] = f;
        if (i == ntmp)
            ntmp = i + 1;
        return f;
    }
    int n1 = snprintf(final_paths[i], PATH_MAX, "%s", target);
    int n2 = snprintf(tmp_paths[i], PATH_MAX, "%s.tmp.%ld", target, (long)getpid());
    if (n1 < 0 || n1 >= PATH_MAX || n2 < 0 || n2 >= PATH_MAX) {
        tmp_paths[i][0] = 0;
        uc_die(c, UC_EXIT_DATA, "%.64s...: the path is too long for a temporary name beside it", path);
    }
    int fd = open(tmp_paths[i], O_WRONLY | O_CREAT | O_EXCL, exists ? sb.st_mode & 07777 : 0666);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!f) {
        int e = errno;
        tmp_paths[i][0] = 0;
        uc_die(c, UC_EXIT_DATA, "%s: %s", path, strerror(e));
    }
    if (exists && fchmod(fd, sb.st_mode & 07777) != 0) { /* keep the mode, whatever the umask */
        int e = errno;
        unlink(tmp_paths[i]);
        tmp_paths[i][0] = 0;
        uc_die(c, UC_EXIT_DATA, "%s: %s", path, strerror(e));
    }
    tmp_files[i] = f;
    if (i == ntmp)
        ntmp = i + 1;
    return f;
}

void uc_out_commit(const uc_cli *c, FILE *f)
{
    for (int i = 0; i < ntmp; i++) {
        if (tmp_files[i] != f)
            continue;
        int e = 0;
        if (fflush(f) != 0 || ferror(f))
            e = errno ? errno : EIO;
        if (fclose(f) != 0 && !e)
            e = errno ? errno : EIO;
        tmp_files[i] = NULL;
        if (!e && final_paths[i][0] && rename(tmp_paths[i], final_paths[i]) != 0)
            e = errno;
        if (e) {
            unlink(tmp_paths[i]);
            tmp_paths[i][0] = 0;
            uc_die(c, UC_EXIT_DATA, "%s: write failed: %s", final_paths[i][0] ? final_paths[i] : "output",
                   strerror(e));
        }
        tmp_paths[i][0] = 0;
        return;
    }
}

void uc_out_pattern(const uc_cli *c, const char *pattern, long index, char *buf, size_t n)
{
    const char *p = strchr(pattern, '%');
    if (!p || p[1] != 'd' || strchr(p + 2, '%'))
        uc_die(c, UC_EXIT_USAGE, "-o: '%s' needs exactly one %%d", pattern);
    int len = snprintf(buf, n, "%.*s%ld%s", (int)(p - pattern), pattern, index, p + 2);
    if (len < 0 || (size_t)len >= n)
        uc_die(c, UC_EXIT_USAGE, "-o: '%.64s...' is too long", pattern);
}

void uc_out_dir_check(const uc_cli *c, const char *path)
{
    if (!*path)
        uc_die(c, UC_EXIT_USAGE, "-o: empty (give a file name)");
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)UC_MIN((size_t)(slash - path), sizeof dir - 1), path);
    struct stat sb;
    if (stat(dir, &sb) != 0)
        uc_die(c, UC_EXIT_DATA, "-o %s: folder %s: %s", path, dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode))
        uc_die(c, UC_EXIT_DATA, "-o %s: %s is not a folder", path, dir);
    if (access(dir, W_OK | X_OK) != 0)
        uc_die(c, UC_EXIT_DATA, "-o %s: folder %s: %s", path, dir, strerror(errno));
}

void uc_stdout_check(const uc_cli *c)
{
    if (fflush(stdout) != 0 || ferror(stdout))
        uc_die(c, UC_EXIT_DATA, "write error on standard output: %s", strerror(errno ? errno : EIO));
}
