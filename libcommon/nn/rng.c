/* rng.c - see rng.h */
#include "libcommon/nn/rng.h"

#include <math.h>

static void philox(const uint32_t ctr_in[4], const uint32_t key_in[2], uint32_t out[4])
{
    uint32_t c0 = ctr_in[0], c1 = ctr_in[1], c2 = ctr_in[2], c3 = ctr_in[3];
    uint32_t k0 = key_in[0], k1 = key_in[1];
    for (int i = 0; i < 10; i++) {
        uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
        c1 = (uint32_t)p1;
        c3 = (uint32_t)p0;
        c0 = n0;
        c2 = n2;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

void uc_rng_init(uc_rng *r, uint64_t seed, uint32_t stream)
{
    r->key[0] = (uint32_t)seed;
    r->key[1] = (uint32_t)(seed >> 32);
    r->counter = 0;
    r->stream = stream;
    r->nbuf = 0;
}

uint32_t uc_rng_u32(uc_rng *r)
{
    if (r->nbuf == 0) {
        uint32_t ctr[4] = {(uint32_t)r->counter, (uint32_t)(r->counter >> 32), r->stream, 0x756e636cu};
        philox(ctr, r->key, r->buf);
        r->counter++;
        r->nbuf = 4;
    }
    return r->buf[4 - r->nbuf--];
}

double uc_rng_uniform(uc_rng *r)
{
    uint64_t hi = uc_rng_u32(r) >> 5, lo = uc_rng_u32(r) >> 6;
    return (double)(hi * 67108864u + lo) / 9007199254740992.0;
}

uint32_t uc_rng_below(uc_rng *r, uint32_t n)
{
    /* Lemire's multiply-shift with rejection: unbiased */
    uint64_t m = (uint64_t)uc_rng_u32(r) * n;
    uint32_t l = (uint32_t)m;
    if (l < n) {
        uint32_t t = (uint32_t)(-n) % n;
        while (l < t) {
            m = (uint64_t)uc_rng_u32(r) * n;
            l = (uint32_t)m;
        }
    }
    return (uint32_t)(m >> 32);
}

void uc_rng_normal(uc_rng *r, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = ((uc_rng_u32(r) >> 8) + 1.0) / 16777216.0; /* (0, 1] */
        double u2 = (uc_rng_u32(r) >> 8) / 16777216.0;
        double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
        out[i] = (float)(rad * cos(th));
        if (i + 1 < n)
            out[i + 1] = (float)(rad * sin(th));
    }
}
