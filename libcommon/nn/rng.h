/* rng.h - the project's counter-based random numbers: Philox4x32-10 keyed
 * by (seed, stream), so any draw is a pure function of (seed, stream,
 * counter) and runs are reproducible whatever the thread count. Normal
 * variates by Box-Muller on pairs of 24-bit uniforms in (0, 1]. */
#ifndef UNCLIP_RNG_H
#define UNCLIP_RNG_H

#include <stdint.h>

typedef struct {
    uint32_t key[2];
    uint64_t counter; /* next 128-bit block (low 64 bits; high = stream) */
    uint32_t stream;
    uint32_t buf[4];
    int nbuf;
} uc_rng;

void uc_rng_init(uc_rng *r, uint64_t seed, uint32_t stream);
uint32_t uc_rng_u32(uc_rng *r);
double uc_rng_uniform(uc_rng *r); /* [0, 1) with 53 bits */
void uc_rng_normal(uc_rng *r, float *out, int64_t n);
/* A uniform integer in [0, n). */
uint32_t uc_rng_below(uc_rng *r, uint32_t n);

#endif
