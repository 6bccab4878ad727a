/* clip.h - OpenAI CLIP (openai/CLIP model.py), as clip.load runs it on a
 * CPU: float32 throughout, weights widened from F16/BF16.
 *
 * Text: token + positional embedding, causal pre-LN residual attention
 * blocks (nn.MultiheadAttention, QuickGELU MLP), ln_final; the embedding is
 * the ln_final output at the first highest token id (EOT) times
 * text_projection. Image (ViT): conv1 patchify, [CLS] + patches, positional
 * embedding, ln_pre, blocks without mask, ln_post on [CLS], times proj.
 *
 * The weight tree is written once, as the walk behind uc_clip_tensors
 * (clip.c), in OpenAI's state-dict names: every tensor's key, its shape
 * from the CLIP(...) arguments and its half-precision storage dtype. The
 * loader binds the weights through that same walk (a Hugging Face
 * CLIPModel file answers it through the one name table in clip.c), so what
 * uc_clip_tensors lists is exactly what a model file holds; it is the
 * single source of CLIP's weight tree.
 *
 * Hyperparameters come from the weight shapes as OpenAI's build_model
 * infers them; the config (JSON text: the CLIP(...) arguments as in
 * unclip.config and unclip-convert --config, e.g. {"embed_dim": 768,
 * "image_resolution": 224, "vision_layers": 24, "vision_width": 1024,
 * "vision_patch_size": 14, "context_length": 77, "vocab_size": 49408,
 * "transformer_width": 768, "transformer_heads": 12, "transformer_layers":
 * 12}, optionally "vision_heads"; or a Hugging Face config.json) supplies
 * what shapes cannot say: the head counts (default width // 64) and, for
 * Hugging Face files, hidden_act and layer_norm_eps. A config value that
 * the shapes contradict is an error.
 *
 * A model may hold only one tower; has_text / has_vision say which. */
#ifndef UNCLIP_CLIP_H
#define UNCLIP_CLIP_H

#include <stdint.h>

#include "formats/safetensors.h"
#include "libcommon/models/model.h"
#include "libcommon/text/bpe.h"

enum { CLIP_LAYOUT_OPENAI, CLIP_LAYOUT_HF };

typedef struct clip_model clip_model;

/* Hyperparameters, with the names of OpenAI's CLIP(...) arguments (0 for
 * an absent tower's), and the model file's info. */
typedef struct {
    int embed_dim; /* D */
    int has_text, has_vision;
    int context_length; /* ctx */
    int vocab_size;
    int transformer_width; /* W */
    int transformer_heads;
    int transformer_layers;
    int image_resolution; /* R = patch * grid */
    int vision_width;     /* Wv */
    int vision_heads;
    int vision_layers;
    int vision_patch_size; /* P */
    int grid;              /* G = R / P; G*G + 1 tokens */
    int has_logit_scale;
    float logit_scale; /* log of the logits' scale (as stored) */
    int layout;        /* CLIP_LAYOUT_* the file came in */
    uc_model_info model;
} clip_info;

/* ---- the description ---- */

/* Every tensor of a CLIP for config_json (the CLIP(...) arguments above;
 * a tower is there when its width is: transformer_width, vision_width;
 * NULL: OpenAI ViT-L/14), in a fixed order (text tower, vision tower,
 * logit_scale): OpenAI name, shape and the dtype a half-precision file
 * stores it in (the converter's --f16 rule: embedding, attention, MLP and
 * projection weights and their biases F16; norms, positional and class
 * embeddings and logit_scale F32). A nonzero return of fn stops the walk
 * and is returned; -1 and uc_err on an invalid config. */
int uc_clip_tensors(const char *config_json, uc_tensor_fn fn, void *ctx);
/* The ViT-L/14 config (the text tower is Karlo's text encoder) as JSON. */
const char *uc_clip_default_config(void);

/* ---- opening ---- */

/* Build a model over an open file (borrowed: it must outlive the model).
 * config: JSON text or NULL. The layout is told from the key names. */
clip_model *clip_load(st_file *f, const char *config_json);
/* Open a model: a safetensors file (config from its unclip.config or
 * config metadata, else a config.json beside it), or a Hugging Face model
 * directory (model.safetensors + config.json). A file whose unclip.stage
 * is present and not "clip" is refused. */
clip_model *clip_open(const char *path);
void clip_free(clip_model *m);
const clip_info *clip_get_info(const clip_model *m);

/* The model's tokenizer: the BPE merges of its unclip.tokenizer.merges
 * metadata, else the default vocabulary file (uc_bpe_default_path). NULL
 * and uc_err when there is none, the model has no text tower, or the
 * tokenizer has more ids than the model's vocabulary. Free with
 * uc_bpe_free. */
uc_bpe *clip_tokenizer(const clip_model *m);

/* ---- the encoders ---- */

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
