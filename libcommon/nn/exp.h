/* exp.h - the scalar exp of the kernels that vectorize by plain C in
 * 16-wide blocks (GroupNorm's SiLU in norm.c, uc_softmax_rows_blocked in
 * ops.c). ops.c's AVX-512 exp512 (CLIP's and the prior's activations and
 * attention) is the other one: the two round differently in the last ulp,
 * and each model's outputs were recorded with its own (see ops.h). */
#ifndef UNCLIP_EXP_H
#define UNCLIP_EXP_H

#include <stdint.h>
#include <string.h>

/* exp(x) in float for elementwise passes, written so that 16-wide
 * blocks vectorize: 2^n by the exponent bits, e^r on |r| <= ln2/2 by a
 * degree-6 polynomial (Cephes' coefficients); within 2 ulp of expf.
 * Below -87 it is 0 (exp(-inf) included); above 88 it saturates. */
static inline __attribute__((always_inline)) float uc_exp_f(float x)
{
    float xc = x > 88.0f ? 88.0f : x;
    float t = xc * 1.44269504088896341f + 12582912.0f; /* 1.5 * 2^23: rounds to an integer */
    float n = t - 12582912.0f;
    float r = xc - n * 0.693145751953125f - n * 1.428606765330187045e-06f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t ti, pi; /* unsigned: a NaN's bits must not overflow a signed int */
    memcpy(&ti, &t, sizeof ti);
    memcpy(&pi, &p, sizeof pi);
    pi += (ti - 0x4B400000u) << 23;
    memcpy(&p, &pi, sizeof p);
    return x < -87.0f ? 0.0f : p;
}

#endif
