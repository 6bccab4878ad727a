/* unclip-bench - time every stage's real forward function on real-size
 * models with random weights, and the machine's GEMM throughput.
 *
 * One line per benchmark on stdout:
 *     NAME seconds=S gflops=G peak_rss_mb=M
 * S is the median of --runs timed runs after one warm-up run; G counts the
 * direct work (convolutions as direct convolutions, attention and linear
 * layers as plain matrix products, the full sequence where our code skips
 * some), so that different algorithms compare; M is the peak resident set
 * of the process that ran the benchmark (each runs in its own child).
 *
 * Model files are written once by bench_model (models.c) into a cache
 * directory and opened with the stages' own open functions. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "libcommon/cli/cli.h"
#include "libcommon/models/clip.h"
#include "formats/base.h"
#include "libcommon/models/decoder.h"
#include "libcommon/nn/cpu.h"
#include "libcommon/nn/ops.h"
#include "libcommon/models/prior.h"
#include "libcommon/nn/rng.h"
#include "libcommon/nn/winograd.h"
#include "libcommon/models/sr.h"
#include "bench.h"

static const char usage[] =
    "Usage: unclip-bench [OPTION]... [NAME]...\n"
    "Time unclip's stages on real-size models with random weights, one line per\n"
    "benchmark: NAME seconds=S gflops=G [gflops_done=R] peak_rss_mb=M (median of\n"
    "the timed runs after a warm-up; GFLOP counted as direct convolution and\n"
    "plain matrix products, R the multiplications actually done, Winograd's\n"
    "counted as such; peak RSS of the child process that ran it).\n"
    "\n"
    "Benchmarks (a NAME selects those it equals or prefixes up to a '-', so\n"
    "'sgemm', 'clip' and 'prior' select groups; none selects all):\n"
    "  peak-f32-t1          register-only FMA loop (AVX-512; 256-bit below that level):\n"
    "                       one core's F32 peak\n"
    "  peak-bf16-t1         register-only vdpbf16ps loop: one core's BF16 peak\n"
    "  sgemm-square-tN      uc_gemm 2048x2048x2048 on 1 and on all threads\n"
    "  sgemm-xf-tN          uc_linear 162x2048 -> 8192 (the prior's MLP at batch 2)\n"
    "  clip-text            CLIP ViT-L/14 text tower, prompt + empty prompt (as clip-encode)\n"
    "  clip-image           CLIP ViT-L/14 image tower, one 224 px image\n"
    "  prior-step           Karlo prior, one guided step of a 25-step sample\n"
    "                       (text keys/values amortised over the 25 steps)\n"
    "  prior-forward-full   Karlo prior, text + one guided step (what one upstream call does)\n"
    "  decoder-step         Karlo 64 px decoder UNet, one guided forward (batch 2)\n"
    "  decoder-step-bf16    the same with the weights a half-precision file halves\n"
    "                       stored BF16 (the UNet reads them in place)\n"
    "  sr-step              Karlo 64->256 SR UNet, one forward at 256 px (batch 1)\n"
    "  sr-step-bf16         the same with BF16 weights\n"
    "  model-open           uc_decoder_open of the real-size decoder file (budget 50 ms)\n"
    "\n"
    "Options:\n"
    "  -t, --threads N      threads (default: all cores)\n"
    "  -r, --runs N         timed runs after the warm-up (default 5; at least 3,\n"
    "                       then stop once --max-time seconds are spent)\n"
    "      --max-time S     time budget of the timed runs of one benchmark (default 60)\n"
    "      --quick          small models: a smoke test that runs in seconds\n"
    "  -m, --model DIR      directory of the generated model files (default\n"
    "                       $UNCLIP_BENCH_DIR, else $TMPDIR/unclip-bench); files are\n"
    "                       reused while their config and seed match (about 15 GB)\n"
    "  -s, --seed N         seed of the random weights (default 1)\n"
    "      --torch SCRIPT   also run the PyTorch comparison SCRIPT (bench/torch_bench.py)\n"
    "                       with $PYTHON (default /usr/bin/python3) when it can import\n"
    "                       torch, then print a table of speedups\n"
    "  -q, --quiet          no progress messages\n"
    "  -v, --verbose        every run's time and the load average\n"
    "  -h, --help           this help\n"
    "  -V, --version        version\n"
    "\n"
    "Exit status: 0 ok, 1 a benchmark failed, 2 usage error.\n";

typedef struct {
    uc_cli cli;
    int threads; /* resolved: all cores when -t is 0 */
    int runs;
    double max_time;
    int quick;
    const char *dir;
    uint64_t seed;
    const char *torch;
} opts;

/* ---- measurement -------------------------------------------------------- */

#define MAXPART 3

/* One run of a benchmark: fills parts[] with seconds; 0 or -1. */
typedef int (*run_fn)(void *ctx, double *parts);

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double loadavg(void)
{
    double l = -1;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1)
            l = -1;
        fclose(f);
    }
    return l;
}

/* A warm-up run, then o->runs timed runs (at least 3 before the time
 * budget may stop them); med[p] is the median of part p. */
static int measure(const opts *o, const char *name, run_fn fn, void *ctx, int nparts, double *med)
{
    double parts[MAXPART], t0 = uc_now();
    if (fn(ctx, parts))
        return -1;
    uc_info(&o->cli, "%s: warm-up %.4g s, load average %.2f", name, uc_now() - t0, loadavg());
    double *t = uc_alloc((size_t)o->runs * MAXPART, sizeof *t), spent = 0;
    int k = 0;
    while (k < o->runs) {
        double s = uc_now();
        if (fn(ctx, t + k * MAXPART)) {
            uc_free(t);
            return -1;
        }
        spent += uc_now() - s;
        uc_info(&o->cli, "%s: run %d: %.4g s", name, k + 1, t[k * MAXPART]);
        k++;
        if (k >= 3 && spent > o->max_time)
            break;
    }
    for (int p = 0; p < nparts; p++) {
        double v[4096];
        int n = UC_MIN(k, (int)UC_COUNT(v));
        for (int i = 0; i < n; i++)
            v[i] = t[i * MAXPART + p];
        med[p] = median(v, n);
    }
    uc_info(&o->cli, "%s: %d timed runs, load average %.2f", name, k, loadavg());
    uc_free(t);
    return 0;
}

/* done > 0: the multiplications actually done (Winograd counted as
 * such), printed as gflops_done next to the direct rate. */
static void emit2(const opts *o, const char *name, double seconds, double flops, double done)
{
    if (flops > 0)
        uc_info(&o->cli, "%s: %.2f GFLOP direct", name, flops / 1e9);
    if (done > 0)
        uc_info(&o->cli, "%s: %.2f GFLOP done", name, done / 1e9);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("%s seconds=%.4g gflops=%.1f", name, seconds, seconds > 0 ? flops / seconds / 1e9 : 0);
    if (done > 0)
        printf(" gflops_done=%.1f", seconds > 0 ? done / seconds / 1e9 : 0);
    printf(" peak_rss_mb=%.0f\n", (double)ru.ru_maxrss / 1024.0);
    fflush(stdout);
}

static void emit(const opts *o, const char *name, double seconds, double flops) { emit2(o, name, seconds, flops, 0); }

/* ---- the machine's peaks: register-only loops --------------------------
 *
 * 24 independent accumulators (more than any FMA or vdpbf16ps latency x
 * throughput on current cores), operands in registers, so that nothing but
 * the arithmetic units is measured. vdpbf16ps does 2 multiply-adds per F32
 * lane (64 FLOP per 512-bit instruction), an FMA 1 (32 FLOP). */
#define PEAK_ACC 24
#define PEAK_ITERS 4000000L

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
/* bf16: vdpbf16ps, else FMA. A target attribute does not let the compiler
 * use AVX512_BF16 on its own: the FMA loop runs on CPUs without it. */
__attribute__((target("avx512f,avx512bf16"), noinline)) static float peak_loop(long iters, int bf16)
{
    __m512 a[PEAK_ACC], x = _mm512_set1_ps(0.999f), y = _mm512_set1_ps(1e-3f);
    __m512bh xb = (__m512bh)_mm512_set1_epi32(0x3f803f80), yb = (__m512bh)_mm512_set1_epi32(0x3a833a83);
#pragma GCC unroll 24
    for (int i = 0; i < PEAK_ACC; i++)
        a[i] = _mm512_set1_ps((float)i);
    for (long k = 0; k < iters && bf16; k++) {
#pragma GCC unroll 24
        for (int i = 0; i < PEAK_ACC; i++)
            a[i] = _mm512_dpbf16_ps(a[i], xb, yb);
        __asm__ volatile("" : "+v"(xb), "+v"(yb));
    }
    for (long k = 0; k < iters && !bf16; k++) {
#pragma GCC unroll 24
        for (int i = 0; i < PEAK_ACC; i++)
            a[i] = _mm512_fmadd_ps(a[i], x, y);
        __asm__ volatile("" : "+v"(x), "+v"(y));
    }
    __m512 s = a[0];
#pragma GCC unroll 24
    for (int i = 1; i < PEAK_ACC; i++)
        s = _mm512_add_ps(s, a[i]);
    return _mm512_reduce_add_ps(s);
}

/* The F32 loop on 256-bit FMA (16 FLOP an instruction), for AVX2 CPUs. */
__attribute__((target("avx2,fma"), noinline)) static float peak_loop_avx2(long iters)
{
    __m256 a[PEAK_ACC], x = _mm256_set1_ps(0.999f), y = _mm256_set1_ps(1e-3f);
#pragma GCC unroll 24
    for (int i = 0; i < PEAK_ACC; i++)
        a[i] = _mm256_set1_ps((float)i);
    for (long k = 0; k < iters; k++) {
#pragma GCC unroll 24
        for (int i = 0; i < PEAK_ACC; i++)
            a[i] = _mm256_fmadd_ps(a[i], x, y);
        __asm__ volatile("" : "+v"(x), "+v"(y));
    }
    float s = 0, v[8];
    for (int i = 0; i < PEAK_ACC; i++) {
        _mm256_storeu_ps(v, a[i]);
        for (int l = 0; l < 8; l++)
            s += v[l];
    }
    return s;
}
#endif

typedef struct {
    int bf16, avx2; /* avx2: the 256-bit F32 loop */
    volatile float sink;
} peak_ctx;

static int peak_run(void *ctx, double *parts)
{
    peak_ctx *c = ctx;
    double t0 = uc_now();
#if defined(__x86_64__) && defined(__GNUC__)
    c->sink = c->avx2 ? peak_loop_avx2(PEAK_ITERS) : peak_loop(PEAK_ITERS, c->bf16);
#endif
    parts[0] = uc_now() - t0;
    return 0;
}

/* One thread: the F32 FMA or the BF16 dot-product peak of one core. */
static int bench_peak(const opts *o, const char *name, int bf16)
{
#if defined(__x86_64__) && defined(__GNUC__)
    int level = uc_cpu_level();
    if (bf16 && level < UC_CPU_AVX512BF16) {
        uc_info(&o->cli, "%s: this CPU lacks AVX512_BF16 (or UNCLIP_CPU caps it)", name);
        return 0;
    }
    peak_ctx c = {bf16, level < UC_CPU_AVX512, 0};
    double med;
    int rc = measure(o, name, peak_run, &c, 1, &med);
    if (!rc)
        emit(o, name, med, (double)PEAK_ITERS * PEAK_ACC * (bf16 ? 64.0 : c.avx2 ? 16.0 : 32.0));
    return rc;
#else
    (void)bf16;
    uc_info(&o->cli, "%s: not an x86-64 build", name);
    return 0;
#endif
}

static int all_finite(const float *x, int64_t n, const char *what)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return uc_err("%s: output %lld is not finite (%g)", what, (long long)i, (double)x[i]);
    return 0;
}

/* Uniform values in [-1, 1). */
static float *random_floats(int64_t n, uint32_t stream)
{
    uc_rng r;
    uc_rng_init(&r, 12345, stream);
    float *x = uc_alloc((size_t)n + 1, sizeof *x);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(uc_rng_u32(&r) >> 8) * (2.0f / 16777216.0f) - 1.0f;
    return x;
}

/* Direct FLOPs of a pre-LN transformer: rows x T tokens, every token
 * attending to all T (masks are not discounted). */
static double xf_flops(double rows, double T, double W, double layers)
{
    return layers * (24.0 * rows * T * W * W + 4.0 * rows * T * T * W);
}

/* ---- sgemm -------------------------------------------------------------- */

typedef struct {
    int64_t M, N, K;
    const float *A, *B, *bias;
    float *C;
    int linear; /* uc_linear (weights [N, K]) rather than a plain product */
} gemm_ctx;

static int gemm_run(void *ctx, double *parts)
{
    gemm_ctx *g = ctx;
    double t0 = uc_now();
    if (g->linear)
        uc_linear(g->C, g->A, g->B, g->bias, g->M, g->K, g->N);
    else
        uc_gemm(g->M, g->N, g->K, g->A, g->K, 1, g->B, g->N, 1, 0.0f, g->C, g->N);
    parts[0] = uc_now() - t0;
    return 0;
}

static int bench_gemm(const opts *o, const char *name, int linear)
{
    gemm_ctx g = {0};
    if (linear) /* the prior's mlp.c_fc on its 2 x 81 tokens */
        g.M = o->quick ? 154 : 162, g.K = o->quick ? 256 : 2048, g.N = 4 * g.K;
    else
        g.M = g.N = g.K = o->quick ? 512 : 2048;
    g.linear = linear;
    float *A = random_floats(g.M * g.K, 1), *B = random_floats(g.K * g.N, 2), *bias = random_floats(g.N, 3);
    g.A = A, g.B = B, g.bias = bias;
    g.C = uc_alloc((size_t)(g.M * g.N), sizeof(float));
    double med;
    int rc = measure(o, name, gemm_run, &g, 1, &med);
    if (rc == 0)
        emit(o, name, med, 2.0 * (double)g.M * (double)g.N * (double)g.K);
    uc_free(A);
    uc_free(B);
    uc_free(bias);
    uc_free(g.C);
    return rc;
}

/* ---- CLIP --------------------------------------------------------------- */

typedef struct {
    const clip_model *m;
    int32_t *tokens;
    float *px, *seq, *emb;
} clip_ctx;

static int clip_text_run(void *ctx, double *parts)
{
    clip_ctx *c = ctx;
    double t0 = uc_now();
    int rc = clip_encode_text(c->m, c->tokens, 2, c->seq, c->emb);
    parts[0] = uc_now() - t0;
    return rc;
}

static int clip_image_run(void *ctx, double *parts)
{
    clip_ctx *c = ctx;
    double t0 = uc_now();
    int rc = clip_encode_image(c->m, c->px, 1, c->emb, NULL, NULL);
    parts[0] = uc_now() - t0;
    return rc;
}

/* clip-text: what clip-encode runs for one prompt, one forward over the
 * prompt (a full 77-token context) and the empty unconditional prompt.
 * clip-image: one image. */
static int bench_clip(const opts *o, const char *name, const char *path, int image)
{
    clip_model *m = clip_open(path);
    if (!m)
        return -1;
    const clip_info *mi = clip_get_info(m);
    int64_t T = mi->context_length, W = mi->transformer_width, D = mi->embed_dim, R = mi->image_resolution;
    clip_ctx c = {m, NULL, NULL, NULL, NULL};
    c.emb = uc_alloc((size_t)(2 * D), sizeof(float));
    double flops, med;
    int rc;
    if (!image) {
        c.tokens = uc_alloc((size_t)(2 * T), sizeof *c.tokens);
        c.seq = uc_alloc((size_t)(2 * T * W), sizeof(float));
        uc_rng r;
        uc_rng_init(&r, 7, 0);
        int32_t sot = mi->vocab_size - 2, eot = mi->vocab_size - 1; /* CLIP's special ids are the last two */
        c.tokens[0] = sot;
        for (int64_t j = 1; j < T - 1; j++)
            c.tokens[j] = (int32_t)uc_rng_below(&r, (uint32_t)sot);
        c.tokens[T - 1] = eot;
        c.tokens[T] = sot;
        c.tokens[T + 1] = eot;
        flops = xf_flops(2, (double)T, (double)W, mi->transformer_layers) + 2.0 * 2 * (double)W * (double)D;
        rc = measure(o, name, clip_text_run, &c, 1, &med);
        if (!rc)
            rc = all_finite(c.seq, 2 * T * W, name);
    } else {
        int64_t G = mi->grid, P = mi->vision_patch_size, Wv = mi->vision_width;
        c.px = random_floats(3 * R * R, 4);
        flops = xf_flops(1, (double)(G * G + 1), (double)Wv, mi->vision_layers) +
                2.0 * (double)(G * G) * (double)(3 * P * P) * (double)Wv + 2.0 * (double)Wv * (double)D;
        rc = measure(o, name, clip_image_run, &c, 1, &med);
    }
    if (!rc)
        rc = all_finite(c.emb, image ? D : 2 * D, name);
    if (!rc)
        emit(o, name, med, flops);
    uc_free(c.tokens);
    uc_free(c.seq);
    uc_free(c.px);
    uc_free(c.emb);
    clip_free(m);
    return rc;
}

/* ---- prior -------------------------------------------------------------- */

#define PRIOR_STEPS 25 /* Karlo's prior respacing */

typedef struct {
    uc_prior *p;
    float *text_emb, *text_seq, *x, *out;
    uint8_t *mask;
} prior_ctx;

static int prior_run(void *ctx, double *parts)
{
    prior_ctx *c = ctx;
    uc_prior_text *txt;
    const int64_t cond = 0, uncond = 1, t = 500;
    const float scale = 4.0f;
    double t0 = uc_now();
    if (uc_prior_text_new(c->p, 2, c->text_emb, c->text_seq, c->mask, &txt))
        return -1;
    double t1 = uc_now();
    int rc = uc_prior_guided(c->p, txt, 1, &cond, &uncond, &scale, c->x, &t, c->out);
    double t2 = uc_now();
    uc_prior_text_free(txt);
    parts[0] = t2 - t0; /* text + step */
    parts[1] = t1 - t0; /* text keys and values */
    parts[2] = t2 - t1; /* one guided step */
    return rc;
}

/* One guided call at batch 2: a full 77-token prompt and the empty
 * unconditional prompt (2 tokens), as Karlo's sampler pairs them. */
static int bench_prior(const opts *o, const char *path)
{
    uc_prior *p = uc_prior_open(path);
    if (!p)
        return -1;
    const uc_prior_info *pi = uc_prior_get_info(p);
    int64_t T = pi->text_ctx, D = pi->clip_dim, E = pi->text_dim, W = pi->width;
    prior_ctx c = {p, random_floats(2 * D, 5), random_floats(2 * T * E, 6), random_floats(D, 7), NULL, NULL};
    c.out = uc_alloc((size_t)D, sizeof(float));
    c.mask = uc_alloc((size_t)(2 * T), 1);
    for (int64_t j = 0; j < T; j++)
        c.mask[j] = 1;
    c.mask[T] = c.mask[T + 1] = 1;
    /* direct count: 2 rows of T + 4 tokens through every layer, plus the
     * input and output projections */
    double R = 2, S = (double)(T + 4);
    double flops = xf_flops(R, S, (double)W, pi->layers) + 2 * R * 2 * (double)(W * W) + 2 * R * (double)(T * E * W) +
                   2 * R * 2 * (double)(D * W) + 2 * R * (double)(W * D);
    double med[3];
    int rc = measure(o, "prior", prior_run, &c, 3, med);
    if (!rc)
        rc = all_finite(c.out, D, "prior");
    if (!rc) {
        uc_info(&o->cli, "prior: text %.4g s, step %.4g s", med[1], med[2]);
        emit(o, "prior-step", med[2] + med[1] / PRIOR_STEPS, flops);
        emit(o, "prior-forward-full", med[0], flops);
    }
    uc_free(c.text_emb);
    uc_free(c.text_seq);
    uc_free(c.x);
    uc_free(c.out);
    uc_free(c.mask);
    uc_prior_free(p);
    return rc;
}

/* ---- decoder ------------------------------------------------------------ */

typedef struct {
    uc_decoder *d;
    uc_decoder_cond cond;
    int64_t S;
    float *x, *out;
    double t[2];
} decoder_ctx;

static int decoder_run(void *ctx, double *parts)
{
    decoder_ctx *c = ctx;
    double t0 = uc_now();
    int rc = uc_decoder_guided(c->d, &c->cond, c->S, c->S, c->x, c->t, c->out);
    parts[0] = uc_now() - t0;
    return rc;
}

static int bench_decoder(const opts *o, const char *name, const char *path)
{
    uc_decoder *d = uc_decoder_open(path);
    if (!d)
        return -1;
    const uc_decoder_info *cfg = uc_decoder_get_info(d);
    int64_t S = cfg->image_size, D = cfg->clip_dim, T = cfg->text_ctx, oc = cfg->out_channels;
    float *feat = random_floats(2 * D, 8), *seq = random_floats(2 * T * D, 9), *img = random_floats(D, 10);
    float *y = uc_alloc((size_t)(2 * D), sizeof(float));
    unsigned char *mask = uc_alloc((size_t)(2 * T), 1);
    for (int64_t j = 0; j < T; j++)
        mask[j] = 1;
    mask[T] = mask[T + 1] = 1;
    uc_decoder_guided_y(d, 1, img, y);
    static const float scale = 8.0f; /* Karlo's decoder guidance */
    decoder_ctx c = {d, {1, T, feat, seq, mask, y, &scale, 1}, S, random_floats(2 * 3 * S * S, 11), NULL, {500, 500}};
    c.out = uc_alloc((size_t)(2 * oc * S * S), sizeof(float));
    double flops = uc_decoder_flops(d, 2, T), done = uc_decoder_flops_done(d, 2, T);
    double med;
    int rc = measure(o, name, decoder_run, &c, 1, &med);
    if (!rc)
        rc = all_finite(c.out, 2 * oc * S * S, name);
    if (!rc)
        emit2(o, name, med, flops, done);
    uc_free(feat);
    uc_free(seq);
    uc_free(img);
    uc_free(y);
    uc_free(mask);
    uc_free(c.x);
    uc_free(c.out);
    uc_decoder_free(d);
    return rc;
}

/* ---- SR ----------------------------------------------------------------- */

typedef struct {
    uc_sr *s;
    int64_t S;
    float *x, *low, *out;
} sr_ctx;

static int sr_run(void *ctx, double *parts)
{
    sr_ctx *c = ctx;
    double t = 500, t0 = uc_now();
    int rc = uc_sr_forward(c->s, 0, 1, c->S, c->S, c->x, &t, c->low, c->out);
    parts[0] = uc_now() - t0;
    return rc;
}

/* One forward of model_first_steps at the output size (256 px for Karlo's
 * 64 -> 256 model), batch 1. */
static int bench_sr(const opts *o, const char *name, const char *path)
{
    uc_winograd_default_cache_mb(0); /* as upsample */
    uc_sr *s = uc_sr_open(path);
    if (!s)
        return -1;
    int64_t S = o->quick ? 64 : 256, oc = uc_sr_get_info(s)->out_channels;
    sr_ctx c = {s, S, random_floats(3 * S * S, 12), random_floats(3 * S * S, 13), NULL};
    c.out = uc_alloc((size_t)(oc * S * S), sizeof(float));
    double flops = uc_sr_flops(s, 1, S, S), done = uc_sr_flops_done(s, 1, S, S);
    double med;
    int rc = measure(o, name, sr_run, &c, 1, &med);
    if (!rc)
        rc = all_finite(c.out, oc * S * S, name);
    if (!rc)
        emit2(o, name, med, flops, done);
    uc_free(c.x);
    uc_free(c.low);
    uc_free(c.out);
    uc_sr_free(s);
    return rc;
}

/* ---- model-open --------------------------------------------------------- */

static int open_run(void *ctx, double *parts)
{
    double t0 = uc_now();
    uc_decoder *d = uc_decoder_open(ctx);
    if (!d)
        return -1;
    parts[0] = uc_now() - t0;
    uc_decoder_free(d);
    return 0;
}

#define OPEN_BUDGET 0.050

static int bench_open(const opts *o, const char *name, const char *path)
{
    double med;
    if (measure(o, name, open_run, (void *)path, 1, &med))
        return -1;
    emit(o, name, med, 0);
    if (med > OPEN_BUDGET && !o->quick)
        uc_warn(&o->cli, "%s: %.1f ms, above the %.0f ms budget", name, med * 1e3, OPEN_BUDGET * 1e3);
    return 0;
}

/* ---- the table of benchmarks -------------------------------------------- */

enum { B_GEMM, B_LINEAR, B_CLIP_TEXT, B_CLIP_IMAGE, B_PRIOR, B_DECODER, B_SR, B_OPEN, B_PEAK_F32, B_PEAK_BF16 };

typedef struct {
    int kind;
    int threads;       /* 0: the -t count */
    const char *stage; /* model file it needs, or NULL */
    int bf16;          /* its BF16 variant (bench_model) */
    char lines[2][48]; /* names of the lines it prints */
    int nlines;
    int selected;
} entry;

static int make_entries(const opts *o, entry *e)
{
    int n = 0;
#define ENTRY(k, th, st, ...)                                                                                    \
    do {                                                                                                         \
        const char *nm[] = {__VA_ARGS__};                                                                        \
        e[n] = (entry){.kind = k, .threads = th, .stage = st, .nlines = (int)UC_COUNT(nm)};                      \
        for (size_t i_ = 0; i_ < UC_COUNT(nm); i_++)                                                             \
            snprintf(e[n].lines[i_], sizeof e[n].lines[i_], nm[i_], th ? th : o->threads);                       \
        n++;                                                                                                     \
    } while (0)
    ENTRY(B_PEAK_F32, 1, NULL, "peak-f32-t%d");
    ENTRY(B_PEAK_BF16, 1, NULL, "peak-bf16-t%d");
    ENTRY(B_GEMM, 1, NULL, "sgemm-square-t%d");
    if (o->threads > 1)
        ENTRY(B_GEMM, 0, NULL, "sgemm-square-t%d");
    ENTRY(B_LINEAR, 1, NULL, "sgemm-xf-t%d");
    if (o->threads > 1)
        ENTRY(B_LINEAR, 0, NULL, "sgemm-xf-t%d");
    ENTRY(B_CLIP_TEXT, 0, "clip", "clip-text");
    ENTRY(B_CLIP_IMAGE, 0, "clip", "clip-image");
    ENTRY(B_PRIOR, 0, "prior", "prior-step", "prior-forward-full");
    ENTRY(B_DECODER, 0, "decoder", "decoder-step");
    ENTRY(B_DECODER, 0, "decoder", "decoder-step-bf16");
    e[n - 1].bf16 = 1;
    ENTRY(B_SR, 0, "sr", "sr-step");
    ENTRY(B_SR, 0, "sr", "sr-step-bf16");
    e[n - 1].bf16 = 1;
    ENTRY(B_OPEN, 0, "decoder", "model-open");
#undef ENTRY
    return n;
}

/* NAME selects a line it equals, or whose name it prefixes up to a '-'. */
static int selects(const char *name, const char *line)
{
    size_t k = strlen(name);
    return strncmp(name, line, k) == 0 && (line[k] == 0 || line[k] == '-');
}

static int run_entry(const opts *o, const entry *e, const char *model)
{
    uc_threads_init(e->threads ? e->threads : o->threads);
    const char *name = e->lines[0];
    switch (e->kind) {
    case B_GEMM: return bench_gemm(o, name, 0);
    case B_LINEAR: return bench_gemm(o, name, 1);
    case B_CLIP_TEXT: return bench_clip(o, name, model, 0);
    case B_CLIP_IMAGE: return bench_clip(o, name, model, 1);
    case B_PRIOR: return bench_prior(o, model);
    case B_DECODER: return bench_decoder(o, name, model);
    case B_SR: return bench_sr(o, name, model);
    case B_OPEN: return bench_open(o, name, model);
    case B_PEAK_F32: return bench_peak(o, name, 0);
    case B_PEAK_BF16: return bench_peak(o, name, 1);
    }
    return uc_err("no benchmark %d", e->kind);
}

/* ---- results and the PyTorch comparison --------------------------------- */

#define MAXRES 64

typedef struct {
    char name[64];
    double seconds;
} result;

typedef struct {
    result r[MAXRES];
    int n;
} results;

/* Echo the lines of fd to stdout, keeping "NAME seconds=S" pairs. */
static void collect(int fd, results *res)
{
    FILE *f = fdopen(fd, "r");
    if (!f) {
        close(fd);
        return;
    }
    char line[1024];
    while (fgets(line, sizeof line, f)) {
        fputs(line, stdout);
        fflush(stdout);
        char name[64];
        double s;
        if (sscanf(line, "%63s seconds=%lf", name, &s) == 2 && res->n < MAXRES) {
            snprintf(res->r[res->n].name, sizeof res->r[res->n].name, "%s", name);
            res->r[res->n++].seconds = s;
        }
    }
    fclose(f);
}

/* Run argv with its stdout into collect(); returns its exit status (or -1). */
static int run_collect(char *const *argv, results *res, int quiet_stderr)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], 1);
        close(fds[1]);
        if (quiet_stderr) {
            int nul = open("/dev/null", O_WRONLY);
            if (nul >= 0)
                dup2(nul, 2);
        }
        execvp(argv[0], argv);
        _exit(127);
    }
    close(fds[1]);
    collect(fds[0], res);
    int st;
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static const char *python(void)
{
    const char *p = getenv("PYTHON");
    if (p && *p)
        return p;
    return access("/usr/bin/python3", X_OK) == 0 ? "/usr/bin/python3" : "python3";
}

static void torch_compare(const opts *o, int nnames, char **names, const results *ours)
{
    const char *py = python();
    char *check[] = {(char *)py, "-c", "import torch", NULL};
    results dummy = {0};
    if (run_collect(check, &dummy, 1) != 0) {
        uc_warn(&o->cli, "PyTorch comparison skipped: %s cannot import torch", py);
        return;
    }
    char threads[16], runs[16], maxt[32];
    snprintf(threads, sizeof threads, "%d", o->threads);
    snprintf(runs, sizeof runs, "%d", o->runs);
    snprintf(maxt, sizeof maxt, "%g", o->max_time);
    char **argv = uc_alloc((size_t)nnames + 16, sizeof *argv);
    int k = 0;
    argv[k++] = (char *)py;
    argv[k++] = (char *)o->torch;
    argv[k++] = "--threads";
    argv[k++] = threads;
    argv[k++] = "--runs";
    argv[k++] = runs;
    argv[k++] = "--max-time";
    argv[k++] = maxt;
    if (o->quick)
        argv[k++] = "--quick";
    for (int i = 0; i < nnames; i++)
        argv[k++] = names[i];
    argv[k] = NULL;
    if (o->cli.verbose >= 0)
        fprintf(stderr, "unclip-bench: running %s %s (PyTorch, same sizes)\n", py, o->torch);
    results theirs = {0};
    int rc = run_collect(argv, &theirs, 0);
    uc_free(argv);
    if (rc != 0)
        uc_warn(&o->cli, "%s exited with status %d", o->torch, rc);

    printf("\ncomparison with PyTorch (speedup = torch seconds / unclip seconds)\n");
    printf("%-20s %12s %12s %9s\n", "benchmark", "unclip s", "torch s", "speedup");
    for (int i = 0; i < ours->n; i++) {
        char want[80];
        snprintf(want, sizeof want, "torch-%s", ours->r[i].name);
        for (int j = 0; j < theirs.n; j++)
            if (strcmp(theirs.r[j].name, want) == 0 && ours->r[i].seconds > 0)
                printf("%-20s %12.4g %12.4g %8.2fx\n", ours->r[i].name, ours->r[i].seconds, theirs.r[j].seconds,
                       theirs.r[j].seconds / ours->r[i].seconds);
    }
    fflush(stdout);
}

/* ---- main --------------------------------------------------------------- */

static const char *default_dir(char *buf, size_t n)
{
    const char *d = getenv("UNCLIP_BENCH_DIR");
    if (d && *d)
        return d;
    const char *tmp = getenv("TMPDIR");
    snprintf(buf, n, "%s/unclip-bench", tmp && *tmp ? tmp : "/tmp");
    return buf;
}

int main(int argc, char **argv)
{
    opts o = {.runs = 5, .max_time = 60, .seed = 1};
    uc_cli_init(&o.cli, "unclip-bench", usage, argc, argv);
    enum { OPT_QUICK = 256, OPT_TORCH, OPT_MAXTIME };
    static const struct option longopts[] = {
        UC_CLI_LONGOPTS,
        {"runs", 1, 0, 'r'},
        {"max-time", 1, 0, OPT_MAXTIME},
        {"quick", 0, 0, OPT_QUICK},
        {"torch", 1, 0, OPT_TORCH},
        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, UC_CLI_SHORTOPTS "r:", longopts, NULL)) != -1) {
        if (c == 'r')
            o.runs = (int)uc_parse_long(&o.cli, "--runs", optarg, 1, 1000);
        else if (c == OPT_MAXTIME)
            o.max_time = uc_parse_double(&o.cli, "--max-time", optarg);
        else if (c == OPT_QUICK)
            o.quick = 1;
        else if (c == OPT_TORCH)
            o.torch = optarg;
        else if (!uc_cli_common(&o.cli, c, optarg))
            uc_die(&o.cli, UC_EXIT_USAGE, "unknown option");
    }
    if (o.cli.seed_set)
        o.seed = o.cli.seed;
    o.threads = o.cli.threads;
    if (o.threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.threads = n > 0 ? (int)n : 1;
    }
    char dirbuf[4096];
    o.dir = o.cli.model ? o.cli.model : default_dir(dirbuf, sizeof dirbuf);

    entry e[24];
    int ne = make_entries(&o, e), nnames = argc - optind;
    char **names = argv + optind;
    for (int i = 0; i < ne; i++)
        e[i].selected = nnames == 0;
    for (int k = 0; k < nnames; k++) {
        int hit = 0;
        for (int i = 0; i < ne; i++)
            for (int j = 0; j < e[i].nlines; j++)
                if (selects(names[k], e[i].lines[j]))
                    e[i].selected = hit = 1;
        if (!hit)
            uc_die(&o.cli, UC_EXIT_USAGE, "no benchmark named '%s'", names[k]);
    }
    if (o.cli.verbose >= 0)
        fprintf(stderr, "unclip-bench: %d threads, %s sizes, load average %.2f%s\n", o.threads,
                o.quick ? "quick" : "real", loadavg(), loadavg() > 0.5 ? " (timings are noisy on a busy machine)" : "");

    results ours = {0};
    int failed = 0;
    for (int i = 0; i < ne; i++) {
        if (!e[i].selected)
            continue;
        char model[4096] = "";
        if (e[i].stage && bench_model(o.dir, e[i].stage, o.quick, e[i].bf16, o.seed, o.cli.verbose < 0, model, sizeof model)) {
            uc_warn(&o.cli, "%s: %s", e[i].lines[0], uc_errmsg());
            failed = 1;
            continue;
        }
        int fds[2];
        if (pipe(fds) != 0)
            uc_die(&o.cli, UC_EXIT_DATA, "pipe: %s", strerror(errno));
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        if (pid < 0)
            uc_die(&o.cli, UC_EXIT_DATA, "fork: %s", strerror(errno));
        if (pid == 0) { /* the benchmark runs alone in this child, for its peak RSS */
            close(fds[0]);
            dup2(fds[1], 1);
            close(fds[1]);
            int rc = run_entry(&o, &e[i], model);
            if (rc)
                uc_warn(&o.cli, "%s: %s", e[i].lines[0], uc_errmsg());
            fflush(stdout);
            exit(rc ? 1 : 0);
        }
        close(fds[1]);
        collect(fds[0], &ours);
        int st = 0;
        if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            if (WIFSIGNALED(st))
                uc_warn(&o.cli, "%s: killed by signal %d", e[i].lines[0], WTERMSIG(st));
            failed = 1;
        }
    }
    if (o.cli.verbose >= 0)
        fprintf(stderr, "unclip-bench: load average %.2f at the end\n", loadavg());
    if (o.torch)
        torch_compare(&o, nnames, names, &ours);
    return failed ? UC_EXIT_DATA : UC_EXIT_OK;
}
