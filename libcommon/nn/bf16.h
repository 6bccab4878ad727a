/* bf16.h - matrix products with half-precision weights (BF16 or F16 bit
 * patterns as stored in the model file) and F32 activations, accumulated
 * in F32.
 *
 * Two paths, chosen at run time by the CPU (never by the build machine):
 *   - AVX512_BF16: vdpbf16ps on BF16 weights read in place; the
 *     activations are rounded to BF16 (nearest even) as they are packed,
 *     as a BF16 framework computes (PyTorch's BF16 products do the same).
 *     Used for BF16 weights only.
 *   - otherwise (and for F16 weights): the weights widened exactly to F32
 *     a block of rows at a time into a reused buffer, then uc_gemm (BLIS)
 *     on F32 activations: the result of an F32 model with those weights.
 * Both split the work into fixed blocks whose sums run in a fixed order:
 * results do not depend on the thread count. */
#ifndef UNCLIP_BF16_H
#define UNCLIP_BF16_H

#include <stdint.h>

typedef enum { UC_HALF_BF16, UC_HALF_F16 } uc_half;

/* C[M,N] = W[M,K] X[K,N] + beta C. W: half-precision bits, row-major with
 * row stride ldw; X[k][n] at X[k * rsx + n * csx]; C[m][n] at
 * C[m * rsc + n * csc]. */
void uc_gemm_half(int64_t M, int64_t N, int64_t K, const uint16_t *W, uc_half type, int64_t ldw, const float *X,
                  int64_t rsx, int64_t csx, float beta, float *C, int64_t rsc, int64_t csc);

/* out[M,N] = in[M,K] W[N,K]^T (+ b[N] when b): nn.Linear with half weights. */
void uc_linear_half(float *out, const float *in, const uint16_t *W, uc_half type, const float *b, int64_t M,
                    int64_t K, int64_t N);

/* A weight matrix as a model holds it: F32 (f), or half-precision bits
 * read in place from the model file (h, type). Exactly one of f, h is set. */
typedef struct {
    const float *f;
    const uint16_t *h;
    uc_half type;
} uc_wref;

/* C[M,N] = W[M,K] X[K,N] + beta C (row stride ldc) for either kind of W
 * (row stride ldw): uc_gemm or uc_gemm_half. */
void uc_gemm_w(int64_t M, int64_t N, int64_t K, uc_wref W, int64_t ldw, const float *X, int64_t rsx, int64_t csx,
               float beta, float *C, int64_t ldc);
/* out[M,N] = in[M,K] W[N,K]^T (+ b): uc_linear or uc_linear_half. */
void uc_linear_w(float *out, const float *in, uc_wref W, const float *b, int64_t M, int64_t K, int64_t N);
/* Rows r0 .. r0+n of W (row length k) widened to F32 in dst, or a pointer
 * into W.f (dst unused) when W is F32. */
const float *uc_wref_rows(uc_wref W, int64_t r0, int64_t n, int64_t k, float *dst);

/* Whether BF16 products run on vdpbf16ps (the CPU has AVX512_BF16, and
 * neither uc_bf16_force_widen nor UNCLIP_BF16_WIDEN says otherwise). */
int uc_bf16_native(void);
/* Tests: nonzero takes the widening path even where vdpbf16ps exists. */
void uc_bf16_force_widen(int on);

#endif
