/* clip.h - OpenAI CLIP (openai/CLIP model.py), as clip.load runs it on a
 * CPU: float32 throughout, weights widened from F16/BF16.
 *
 * Text: token + positional embedding, causal pre-LN residual attention
 * blocks (nn.MultiheadAttention, QuickGELU MLP), ln_final; the embedding is
 * the ln_final output at the first highest token id (EOT) times
 * text_projection. Image (ViT): conv1 patchify, [CLS] + patches, positional
 * embedding, ln_pre, blocks without mask, ln_post on [CLS], times proj.
 *
 * Weights carry OpenAI's state-dict names. Hyperparameters come from the
 * weight shapes as OpenAI's build_model infers them; the config (JSON text:
 * the CLIP(...) arguments as in unclip.config, or a Hugging Face config.json)
 * supplies what shapes cannot say: the head counts (default width // 64)
 * and, for Hugging Face files, hidden_act and layer_norm_eps. A config value
 * that the shapes contradict is an error. Hugging Face CLIPModel files are
 * read through one name table that converts them to the OpenAI layout.
 *
 * A model may hold only one tower; has_text / has_vision say which. */
#ifndef UNCLIP_CLIP_H
#define UNCLIP_CLIP_H

#include <stdint.h>

#include "formats/safetensors.h"
#include "libcommon/models/model.h"

enum { CLIP_ACT_QUICK_GELU, CLIP_ACT_GELU };
enum { CLIP_LAYOUT_OPENAI, CLIP_LAYOUT_HF };

/* One residual attention block (W = width of its tower). */
typedef struct {
    const float *ln_1_w, *ln_1_b;  /* [W] */
    const float *in_proj_w;        /* [3W, W]: q, k, v stacked */
    const float *in_proj_b;        /* [3W] */
    const float *out_proj_w;       /* [W, W] */
    const float *out_proj_b;       /* [W] */
    const float *ln_2_w, *ln_2_b;  /* [W] */
    const float *c_fc_w;           /* [4W, W] */
    const float *c_fc_b;           /* [4W] */
    const float *c_proj_w;         /* [W, 4W] */
    const float *c_proj_b;         /* [W] */
} clip_block;

typedef struct {
    int width;           /* W */
    int layers;
    int heads;           /* W % heads == 0 */
    int act;             /* CLIP_ACT_* of the MLP */
    float eps;           /* LayerNorm epsilon (1e-5) */
    clip_block *blocks;  /* [layers] */
} clip_transformer;

typedef struct {
    /* Hyperparameters, with the names of OpenAI's CLIP(...) arguments. */
    int embed_dim;          /* D */
    int has_text, has_vision;
    int context_length;     /* ctx */
    int vocab_size;
    int transformer_width;  /* W */
    int transformer_heads;
    int transformer_layers;
    int image_resolution;   /* R = patch * grid */
    int vision_width;       /* Wv */
    int vision_heads;
    int vision_layers;
    int vision_patch_size;  /* P */
    int grid;               /* G = R / P; G*G + 1 tokens */
    int layout;             /* CLIP_LAYOUT_* the file came in */

    /* Text tower. */
    const float *token_embedding;       /* [vocab, W] */
    const float *positional_embedding;  /* [ctx, W] */
    clip_transformer text;
    const float *ln_final_w, *ln_final_b; /* [W] */
    const float *text_projection;       /* [W, D] */

    /* Vision tower. */
    const float *conv1_w;               /* [Wv, 3, P, P] (no bias) */
    const float *class_embedding;       /* [Wv] */
    const float *vis_positional;        /* [G*G + 1, Wv] */
    const float *ln_pre_w, *ln_pre_b;   /* [Wv] */
    clip_transformer visual;
    const float *ln_post_w, *ln_post_b; /* [Wv] */
    const float *proj;                  /* [Wv, D] */

    float logit_scale;  /* log of the logits' scale (stored) */
    int has_logit_scale;

    uc_model_info info; /* filled by clip_open */

    /* Ownership. */
    st_file *file;
    int own_file;
    float **owned;  /* buffers built by the layout conversion */
    int nowned;
} clip_model;

/* Build a model over an open file (borrowed: it must outlive the model).
 * config: JSON text or NULL. The layout is told from the key names. */
clip_model *clip_load(st_file *f, const char *config_json);
/* Open a model: a safetensors file (config from its unclip.config or
 * config metadata, else a config.json beside it), or a Hugging Face model
 * directory (model.safetensors + config.json). A file whose unclip.stage
 * is present and not "clip" is refused. */
clip_model *clip_open(const char *path);
void clip_free(clip_model *m);

/* tokens[B, ctx] (ids < vocab_size) -> seq[B, ctx, W] after ln_final (NULL
 * to skip) and emb[B, D] (NULL to skip). Without seq only the positions up
 * to the last EOT of the batch are computed (the mask is causal): the
 * embedding is the same, and short texts cost far less. */
int clip_encode_text(const clip_model *m, const int32_t *tokens, int B, float *seq, float *emb);

/* Normalised pixels px[B, 3, R, R] -> emb[B, D]; optionally seq[B, G*G+1,
 * Wv], the transformer output, and seq_ln[B, G*G+1, Wv], ln_post applied to
 * every token. Any output may be NULL. */
int clip_encode_image(const clip_model *m, const float *px, int B, float *emb, float *seq, float *seq_ln);

/* logits[Bi, Bt] = exp(logit_scale) * normalize(img) normalize(txt)^T;
 * logits_per_text is its transpose. */
int clip_logits(const clip_model *m, const float *img, int Bi, const float *txt, int Bt, float *logits);

#endif
