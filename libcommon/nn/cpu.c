/* cpu.c - see cpu.h. */
#define _GNU_SOURCE
#include "libcommon/nn/cpu.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef UC_HAVE_X86
#include <cpuid.h>
#endif

static const char *const names[] = {"", "avx2", "avx512", "avx512bf16"};
static int cap = UC_CPU_AVX512BF16;
static int level = -1;

const char *uc_cpu_name(int l) { return l >= UC_CPU_AVX2 && l <= UC_CPU_AVX512BF16 ? names[l] : "?"; }

int uc_cpu_parse(const char *name)
{
    if (!strcmp(name, "native"))
        return UC_CPU_AVX512BF16;
    for (int l = UC_CPU_AVX2; l <= UC_CPU_AVX512BF16; l++)
        if (!strcmp(name, names[l]))
            return l;
    return -1;
}

void uc_cpu_cap(int l)
{
    cap = l;
    level = -1;
}

static int detect(void)
{
#ifdef UC_HAVE_X86
    __builtin_cpu_init();
    if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
          __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")))
        return UC_CPU_AVX2;
    return __builtin_cpu_supports("avx512bf16") ? UC_CPU_AVX512BF16 : UC_CPU_AVX512;
#else
    return UC_CPU_AVX2;
#endif
}

int uc_cpu_level(void)
{
    /* set before any thread starts (uc_threads_init reads it first) */
    if (level < 0) {
        const char *e = getenv("UNCLIP_CPU");
        int l = e && *e ? uc_cpu_parse(e) : UC_CPU_AVX512BF16, d = detect();
        if (l < 0)
            l = UC_CPU_AVX512BF16; /* refused by the CLI; tests see the native level */
        l = l < cap ? l : cap;
        level = l < d ? l : d;
    }
    return level;
}

#ifdef UC_HAVE_X86
/* What this build was compiled to assume, checked before main. This
 * function is compiled for plain x86-64, so that it runs on any CPU. */
__attribute__((constructor, target("arch=x86-64"))) static void check_baseline(void)
{
    unsigned a, b, c, d;
    const char *miss = NULL;
    __builtin_cpu_init();
    int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    (void)f16c;
#ifdef __AVX2__
    if (!__builtin_cpu_supports("avx2"))
        miss = "AVX2";
#endif
#ifdef __FMA__
    if (!miss && !__builtin_cpu_supports("fma"))
        miss = "FMA";
#endif
#ifdef __BMI2__
    if (!miss && !__builtin_cpu_supports("bmi2"))
        miss = "BMI2";
#endif
#ifdef __F16C__
    if (!miss && !f16c)
        miss = "F16C";
#endif
#ifdef __AVX512F__
    if (!miss && detect() < UC_CPU_AVX512)
        miss = "AVX-512";
#endif
    if (miss) {
        fprintf(stderr, "%s: this CPU has no %s, which this build of unclip needs (see the README's \"CPU\")\n",
                program_invocation_short_name, miss);
        exit(1);
    }
}
#endif
