/* cpu.h - the processor's features, read at run time.
 *
 * The release build targets x86-64-v3 (AVX2, FMA, F16C, BMI2): code the
 * compiler writes may use those anywhere, and every tool that links this
 * file checks them before main, stopping with a message and exit 1 on a
 * CPU without them (never SIGILL). Code past that level, the AVX-512
 * kernels, is compiled per function (UC_AVX512) and run only when
 * uc_cpu_level() says the CPU has it; BLIS chooses its own kernels.
 *
 * UNCLIP_CPU caps the level for testing the other paths on a larger CPU:
 * "avx2" (no AVX-512 code of ours; BLIS's AVX2 kernels), "avx512" (no
 * AVX512_BF16), "native" (the default: all the CPU has). Results differ
 * between levels in the last bits (other kernels, other summation order),
 * so a picture is replayed exactly at the level that drew it. */
#ifndef UNCLIP_CPU_H
#define UNCLIP_CPU_H

enum {
    UC_CPU_AVX2 = 1,       /* x86-64-v3; also any non-x86 CPU (plain C paths) */
    UC_CPU_AVX512 = 2,     /* AVX512F, DQ, BW and VL (Skylake-X and later) */
    UC_CPU_AVX512BF16 = 3, /* and AVX512_BF16 (Cooper Lake, Zen 4 and later) */
};

/* A loop the compiler vectorizes runs twice as wide on AVX-512: its body,
 * written as UC_INLINE function BODY(void *ctx, int64_t i0, int64_t i1),
 * is compiled twice by UC_CLONE(NAME, BODY), as NAME (for the build's
 * level) and NAME_avx512, and uc_pick(NAME) gives the one this CPU runs. */
#define UC_INLINE static inline __attribute__((always_inline))

#if defined(__x86_64__) && defined(__GNUC__)
#define UC_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
#define UC_CLONE(name, body)                                                                                   \
    UC_AVX512 static void name##_avx512(void *ctx, int64_t i0, int64_t i1) { body(ctx, i0, i1); }             \
    static void name(void *ctx, int64_t i0, int64_t i1) { body(ctx, i0, i1); }
#define uc_pick(name) (uc_cpu_level() >= UC_CPU_AVX512 ? name##_avx512 : name)
#define UC_HAVE_X86 1
#else
#define UC_CLONE(name, body)                                                                                   \
    static void name(void *ctx, int64_t i0, int64_t i1) { body(ctx, i0, i1); }
#define uc_pick(name) (name)
#endif

/* The level in use: the CPU's, capped by uc_cpu_cap or UNCLIP_CPU. */
int uc_cpu_level(void);
/* Its name ("avx2", "avx512", "avx512bf16"). */
const char *uc_cpu_name(int level);
/* The level a name means (the names above and "native"), -1 for another. */
int uc_cpu_parse(const char *name);
/* Caps the level, for tests that run both paths in one process (the
 * tools take UNCLIP_CPU instead). */
void uc_cpu_cap(int level);

#endif
