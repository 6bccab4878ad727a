/* base.c - see base.h */
#define _POSIX_C_SOURCE 200809L
#include "formats/base.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char err_buf[1024];

/* Messages quote names from hostile files: keep them on one line. */
static void one_line(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            *s = '?';
}

int uc_err(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_buf, sizeof err_buf, fmt, ap);
    va_end(ap);
    one_line(err_buf);
    return -1;
}

int uc_err_prefix(const char *fmt, ...)
{
    char prefix[512], old[sizeof err_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err_buf, sizeof old);
    snprintf(err_buf, sizeof err_buf, "%.200s: %.800s", prefix, old);
    one_line(err_buf);
    return -1;
}

const char *uc_errmsg(void) { return err_buf; }

static void (*oom_handler)(size_t bytes);

void uc_set_oom_handler(void (*fn)(size_t bytes)) { oom_handler = fn; }

static void oom(size_t n)
{
    if (oom_handler)
        oom_handler(n); /* a tool's: says so and exits 1 */
    fprintf(stderr, "unclip: out of memory (%zu bytes)\n", n);
    abort();
}

void uc_oom(size_t bytes) { oom(bytes); }

static uint64_t mem_budget = UC_MEM_BUDGET_DEFAULT;

void uc_mem_set_budget(uint64_t bytes) { mem_budget = bytes; }
uint64_t uc_mem_budget(void) { return mem_budget; }

const char *uc_bytes_str(double bytes, char *buf, size_t n)
{
    if (bytes >= (double)(1 << 30))
        snprintf(buf, n, "%.1f GiB", bytes / (1 << 30));
    else if (bytes >= (double)(1 << 20))
        snprintf(buf, n, "%.0f MiB", bytes / (1 << 20));
    else
        snprintf(buf, n, "%.0f KiB", bytes / (1 << 10));
    return buf;
}

/* Address space this process holds now (Linux: /proc/self/statm), or -1. */
static double vm_size(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long pages = 0;
    int ok = f && fscanf(f, "%llu", &pages) == 1;
    if (f)
        fclose(f);
    return ok ? (double)pages * (double)sysconf(_SC_PAGESIZE) : -1;
}

int uc_mem_fits(const char *what, double bytes)
{
    char a[32], b[32];
    if (bytes > (double)mem_budget)
        return uc_err("%s needs %s, more than the memory budget of %s (--memory-budget)", what,
                      uc_bytes_str(bytes, a, sizeof a), uc_bytes_str((double)mem_budget, b, sizeof b));
    struct rlimit rl;
    double held;
    if (getrlimit(RLIMIT_AS, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && (held = vm_size()) >= 0) {
        double left = (double)rl.rlim_cur - held;
        if (bytes > left)
            return uc_err("%s needs %s, more than the %s that the address-space limit (ulimit -v) leaves", what,
                          uc_bytes_str(bytes, a, sizeof a), uc_bytes_str(left > 0 ? left : 0, b, sizeof b));
    }
    return 0;
}

int uc_mul_ok(size_t n, size_t m, size_t *out)
{
    if (m && n > SIZE_MAX / m)
        return -1;
    *out = n * m;
    return 0;
}

void *uc_alloc_raw(size_t n, size_t size)
{
    size_t bytes;
    if (uc_mul_ok(n, size, &bytes) || bytes > SIZE_MAX - 64)
        oom(SIZE_MAX);
    bytes = (bytes + 63) & ~(size_t)63;
    void *p = aligned_alloc(64, bytes ? bytes : 64);
    if (!p)
        oom(bytes);
    return p;
}

void *uc_alloc(size_t n, size_t size)
{
    void *p = uc_alloc_raw(n, size);
    memset(p, 0, n * size);
    return p;
}

void uc_free(void *p) { free(p); }

void *uc_xrealloc(void *p, size_t n, size_t size)
{
    size_t bytes;
    if (uc_mul_ok(n, size, &bytes))
        oom(SIZE_MAX);
    void *q = realloc(p, bytes ? bytes : 1);
    if (!q)
        oom(bytes);
    return q;
}

char *uc_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = uc_xrealloc(NULL, n, 1);
    memcpy(d, s, n);
    return d;
}

float uc_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t uc_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow */
        return (uint16_t)(sign | 0x7c00);
    if (ax < 0x38800000u) { /* subnormal half or zero */
        if (ax < 0x33000000u)
            return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((ax >> 13) - ((127 - 15) << 10));
    uint32_t rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1)))
        r++;
    return (uint16_t)(sign | r);
}

float uc_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t uc_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

int uc_read_file(const char *path, size_t limit, char **data, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return uc_err("%s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    char *buf = uc_xrealloc(NULL, cap, 1);
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > limit) {
                free(buf);
                fclose(f);
                return uc_err("%s: larger than %zu bytes", path, limit);
            }
            cap *= 2;
            buf = uc_xrealloc(buf, cap, 1);
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad || n > limit) {
        free(buf);
        return uc_err("%s: %s", path, bad ? "read error" : "file too large");
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

uint64_t uc_fnv1a(const void *data, size_t n, uint64_t h)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* ---- SHA-256, written from FIPS 180-4 ---- */

static const uint32_t sha_k[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror32(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha_block(uint32_t h[8], const unsigned char *p)
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ror32(w[i - 15], 7) ^ ror32(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ror32(w[i - 2], 17) ^ ror32(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = k + (ror32(e, 6) ^ ror32(e, 11) ^ ror32(e, 25)) + ((e & f) ^ (~e & g)) + sha_k[i] + w[i];
        uint32_t t2 = (ror32(a, 2) ^ ror32(a, 13) ^ ror32(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

void uc_sha256_init(uc_sha256 *s)
{
    static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, h0, sizeof h0);
    s->len = 0;
    s->n = 0;
}

void uc_sha256_update(uc_sha256 *s, const void *data, size_t n)
{
    const unsigned char *p = data;
    s->len += n;
    if (s->n) {
        size_t k = UC_MIN(n, 64 - s->n);
        memcpy(s->buf + s->n, p, k);
        s->n += k, p += k, n -= k;
        if (s->n < 64)
            return;
        sha_block(s->h, s->buf);
        s->n = 0;
    }
    for (; n >= 64; p += 64, n -= 64)
        sha_block(s->h, p);
    memcpy(s->buf, p, n);
    s->n = n;
}

void uc_sha256_final(uc_sha256 *s, unsigned char out[32])
{
    uint64_t bits = s->len * 8;
    s->buf[s->n++] = 0x80;
    if (s->n > 56) {
        memset(s->buf + s->n, 0, 64 - s->n);
        sha_block(s->h, s->buf);
        s->n = 0;
    }
    memset(s->buf + s->n, 0, 56 - s->n);
    for (int i = 0; i < 8; i++)
        s->buf[56 + i] = (unsigned char)(bits >> (56 - 8 * i));
    sha_block(s->h, s->buf);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++)
            out[4 * i + j] = (unsigned char)(s->h[i] >> (24 - 8 * j));
}

double uc_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
