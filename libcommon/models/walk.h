/* walk.h - the models/ layer's one walk over a weight tree: each model
 * describes its tensors once, as a sequence of uc_walk_tensor calls, and
 * the same sequence either binds them from a file (loading) or lists them
 * with their dtype through a uc_tensor_fn (uc_stage_tensors, the model
 * makers, the converter). Only files in libcommon/models/ include this. */
#ifndef UNCLIP_WALK_H
#define UNCLIP_WALK_H

#include <stdint.h>

#include "formats/safetensors.h"
#include "libcommon/models/model.h"
#include "libcommon/models/unet.h"
#include "libcommon/nn/bf16.h"

typedef struct {
    st_file *f;         /* bind from f, or (NULL) list through fn */
    uc_tensor_fn fn;
    void *ctx;
    const char *prefix; /* put before every key ("model.", ...) */
    int rc;             /* 0 while the walk goes on: -1 after a failed bind, else fn's nonzero return */
    char stem[256];     /* the last ".weight" listed, without the suffix, */
    int stem_ndim;      /* and its rank: the dtype of the bias that follows */
} uc_walk;

/* The tensor prefix + the printf-formatted key, of exactly this shape.
 * Binding: its F32 data (widened from F16/BF16 and owned by f when
 * stored so), or NULL with rc = -1 and uc_err naming it. Listing: fn is
 * called with the dtype a half-precision file stores it in, and NULL is
 * returned. Once rc is nonzero every call returns NULL at once.
 *
 * The dtype is unclip-convert's halvable() rule: a ".weight" of rank 2 or
 * more (linear, convolution, attention projections) and the ".bias" of
 * such a weight are "F16"; every other tensor (norm gains and biases,
 * learned vectors such as cf_param) is "F32". A bias must directly follow
 * its weight in the walk. */
const float *uc_walk_tensor(uc_walk *w, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A weight matrix (rank 2 or more) as uc_walk_tensor, except that one
 * stored F16 or BF16 is bound in place, its bits read from the mapped file
 * by the half-precision kernels (nn/bf16.h), not widened. */
uc_wref uc_walk_weight(uc_walk *w, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Shapes as arguments: uc_walk_tensor(w, UC_D2(rows, cols), "x.weight"). */
#define UC_D1(a) 1, (int64_t[]){(a)}
#define UC_D2(a, b) 2, (int64_t[]){(a), (b)}
#define UC_D3(a, b, c) 3, (int64_t[]){(a), (b), (c)}
#define UC_D4(a, b, c, d) 4, (int64_t[]){(a), (b), (c), (d)}

/* The UNet's part of a walk, keys under w->prefix: its layer table, its
 * weights bound when binding. NULL when the walk stopped (w->rc) or on an
 * invalid config (uc_err, w->rc still 0). */
uc_unet *uc_unet_walk(uc_walk *w, const uc_unet_config *cfg);

#endif
