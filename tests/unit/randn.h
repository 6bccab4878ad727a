/* randn.h - n standard normal floats from the project's RNG (one spare
 * element past the end), for the unit tests; uc_free the result. */
#ifndef UC_TEST_RANDN_H
#define UC_TEST_RANDN_H

#include "formats/base.h"
#include "libcommon/nn/rng.h"

static inline float *randn(int64_t n, uint64_t seed)
{
    uc_rng r;
    uc_rng_init(&r, seed, 0);
    float *x = uc_alloc((size_t)n + 1, sizeof *x);
    uc_rng_normal(&r, x, n);
    return x;
}

#endif
