/* bench.h - the model files of unclip-bench: real-size (or, with quick,
 * small) models of each stage with random weights, written once into a
 * cache directory and reused while their config and tensors still match. */
#ifndef UNCLIP_BENCH_H
#define UNCLIP_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* The unclip.config of `stage` ("clip", "prior", "decoder", "sr"): Karlo's
 * released configs (OpenAI ViT-L/14 for clip), or the small quick ones. */
const char *bench_config(const char *stage, int quick);

/* Path of the model file of `stage` in dir (created when missing), writing
 * it with random weights from seed unless a file with the same config,
 * seed and tensors is already there. bf16: the variant (STAGE-bf16) with
 * the tensors a half-precision file halves stored BF16 (the same values,
 * rounded to nearest even). Progress goes to stderr unless quiet.
 * Returns 0, or -1 and uc_err. */
int bench_model(const char *dir, const char *stage, int quick, int bf16, uint64_t seed, int quiet, char *path,
                size_t n);

#endif
