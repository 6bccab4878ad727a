/* ops.h - the kernels every model is built from. Plain float buffers owned
 * by the caller; shapes are passed explicitly, row-major. Every matrix
 * product goes through BLIS (uc_gemm). */
#ifndef UNCLIP_OPS_H
#define UNCLIP_OPS_H

#include <stdint.h>

/* Threads for BLIS (n <= 0: all cores). Returns the count in use. */
int uc_threads_init(int n);
int uc_threads(void);

/* fn(ctx, i0, i1) over items [i0, i1) of [0, n), spread over the threads
 * (work: a rough cost of the whole job; small jobs run on the caller). Each
 * item must be computed the same way whichever thread takes it. */
typedef void (*uc_par_fn)(void *ctx, int64_t i0, int64_t i1);
void uc_parallel_for(int64_t n, double work, uc_par_fn fn, void *ctx);

/* C[M,N] = A[M,K] B[K,N] + beta * C, each operand given by its row and
 * column strides (so transposes cost nothing to express); ldc is C's row
 * stride (column stride 1). */
void uc_gemm(int64_t M, int64_t N, int64_t K, const float *A, int64_t rsa, int64_t csa, const float *B,
             int64_t rsb, int64_t csb, float beta, float *C, int64_t ldc);

/* BLIS's micro-kernel, for callers that pack their operands themselves
 * (winograd.c): C[m,n] = A[m,k] B[k,n] + beta C on one register tile,
 * m <= mr and n <= nr. A is a panel of mr rows stored k-major
 * (a[kk * mr + i]), 64-byte aligned; B one of nr columns (b[kk * nr + j]);
 * both zero past m and n. C element (i, j) at c[i * rsc + j * csc]
 * (column-stored, rsc 1, runs fastest). next_a, next_b: the panels the
 * next call reads (a prefetch hint). uc_ukr_dims gives mr, nr and the k
 * block; it returns -1 when this CPU's kernel does not have that shape
 * (or UNCLIP_NO_UKR is set), and then uc_ukr must not be called. */
int uc_ukr_dims(int64_t *mr, int64_t *nr, int64_t *kc);
/* Tests: off nonzero makes uc_ukr_dims fail, as on a CPU without the kernel. */
void uc_ukr_disable(int off);
void uc_ukr(int64_t m, int64_t n, int64_t k, const float *a, const float *b, float beta, float *c, int64_t rsc,
            int64_t csc, const float *next_a, const float *next_b);

/* out[M,N] = in[M,K] W[N,K]^T (+ b[N] when b). W as stored by nn.Linear. */
void uc_linear(float *out, const float *in, const float *W, const float *b, int64_t M, int64_t K, int64_t N);
/* out[M,N] = in[M,K] P[K,N]: a projection stored [in, out] (CLIP's proj). */
void uc_matmul(float *out, const float *in, const float *P, int64_t M, int64_t K, int64_t N);

/* Row-wise LayerNorm over D (biased variance, eps inside the sqrt), as
 * torch.nn.LayerNorm. in and out may alias. */
void uc_layernorm(float *out, const float *in, const float *w, const float *b, int64_t M, int64_t D, float eps);

void uc_gelu(float *x, int64_t n);       /* exact, erf form */
void uc_quick_gelu(float *x, int64_t n); /* x * sigmoid(1.702 x) */
void uc_silu(float *x, int64_t n);
void uc_add(float *x, const float *y, int64_t n); /* x += y */
/* Softmax of each row of x[M,N] in place. -inf entries give 0; a row of
 * -inf gives zeros. Two kernels, as the models were recorded with them
 * (their results differ in the last ulp, which moves sampled pixels):
 * uc_softmax_rows, exp by AVX-512 exp512 (expf on CPUs without AVX-512),
 * for CLIP and the prior;
 * uc_softmax_rows_blocked, rows spread over the threads and exp by
 * uc_exp_f (exp.h) in 16-wide blocks, for the UNet's attention. */
void uc_softmax_rows(float *x, int64_t M, int64_t N);
void uc_softmax_rows_blocked(float *x, int64_t M, int64_t N);

/* One attention head: out[Tq,dh] = softmax(scale * q k^T + bias) v.
 * q, k, v, out are row-major with row strides ldq, ldk, ldv, ldo (so heads
 * can be read in place from a fused QKV buffer). bias is an additive
 * [Tq,Tk] matrix (0 or -inf for masks) or NULL. scores: Tq*Tk scratch, or
 * NULL for one kept per thread (so heads can run in a parallel loop). */
void uc_attention_head(float *out, int64_t ldo, const float *q, int64_t ldq, const float *k, int64_t ldk,
                       const float *v, int64_t ldv, int64_t Tq, int64_t Tk, int64_t dh, float scale,
                       const float *bias, float *scores);

/* Sinusoidal timestep embedding (GLIDE/Karlo): out[dim] = [cos(t f_i),
 * sin(t f_i)], f_i = exp(-ln(10000) i / half); a zero pad when dim is odd. */
void uc_timestep_embedding(float *out, double t, int64_t dim);

#endif
