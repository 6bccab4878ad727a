"""Hyperparameters of the default model (unclip-shapes) and of its training.

Sizes are chosen for ~4 hours of a 2-core CPU in all (SHAPES.md): 32 px
scenes for CLIP, prior and decoder; a x4 upsampler 32 -> 128 trained on
64 px crops. The model configs use the upstream names (OpenAI CLIP
constructor arguments; Karlo's yaml sections)."""

SEED = 1234
CONTEXT = 16       # text tokens: the longest grammar caption needs 12 (SOT + 10 words + EOT)
IMAGE = 32         # CLIP / prior / decoder resolution
SR_SCALE = 4       # upsampler output = 128 px
EMBED = 128        # CLIP embed_dim = transformer_width (Karlo projects both with clip_dim)


def clip_config(vocab_size):
    return dict(embed_dim=EMBED, image_resolution=IMAGE, vision_layers=4, vision_width=128,
                vision_patch_size=8, context_length=CONTEXT, vocab_size=vocab_size,
                transformer_width=EMBED, transformer_heads=2, transformer_layers=3)


def _diffusion(**kw):
    d = dict(steps=1000, noise_schedule="squaredcos_cap_v2", use_kl=False, timestep_respacing="",
             learn_sigma=False, sigma_small=True, predict_xstart=False, rescale_learned_sigmas=False)
    d.update(kw)
    return d


PRIOR = {
    "model": {"type": "prior", "diffusion_sampler": "uniform",
              "hparams": dict(text_ctx=CONTEXT, xf_width=128, xf_layers=6, xf_heads=2, xf_final_ln=True,
                              text_drop=0.2, clip_dim=EMBED)},
    "diffusion": _diffusion(predict_xstart=True),
}

DECODER = {
    "model": {"type": "t2i-decoder", "diffusion_sampler": "uniform",
              "hparams": dict(image_size=IMAGE, num_channels=32, num_res_blocks=1, channel_mult="1,2,4",
                              attention_resolutions="16,8", num_heads=-1, num_head_channels=32,
                              num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0,
                              clip_dim=EMBED, clip_emb_mult=4, text_ctx=CONTEXT, xf_width=128,
                              xf_layers=0, xf_heads=0, xf_final_ln=False, resblock_updown=True,
                              learn_sigma=True, text_drop=0.3, clip_emb_type="image",
                              clip_emb_drop=0.15, use_plm=True)},
    "diffusion": _diffusion(learn_sigma=True, sigma_small=False, rescale_learned_sigmas=True,
                            predict_xstart=True),
}

SR = {
    "model": {"type": "improved_sr_64_256", "diffusion_sampler": "uniform",
              "hparams": dict(channels=32, depth=1, channels_multiple=[1, 1, 2], dropout=0.0,
                              scale=SR_SCALE)},
    "diffusion": _diffusion(timestep_respacing="7", predict_xstart=True),
}

# training: batch, learning rate, EMA decay, the planned steps (run_all.sh;
# the learning rate warms up, then falls by a half cosine to 10 % at the
# last step)
TRAIN = {
    "clip":    dict(batch=256, lr=5e-4, wd=0.1, warmup=100, ema=0.0, steps=3200, hard=0.5, text_neg=True),
    "prior":   dict(batch=128, lr=3e-4, wd=0.01, warmup=100, ema=0.999, steps=12000),
    "decoder": dict(batch=32, lr=4e-4, wd=0.0, warmup=200, ema=0.999, steps=16000,
                    kinds=dict(single=0.15, relation=0.45, count=0.4), high_t=(0.3, 900)),
    "sr":      dict(batch=16, lr=3e-4, wd=0.0, warmup=100, ema=0.999, steps=5400, crop=64),
}

# datasets rendered by shapes-render (kinds drawn uniformly by the renderer)
DATA = {
    "scenes": dict(n=80000, seed=1, size=IMAGE),           # CLIP, prior, decoder
    "heldout": dict(n=1000, seed=2, size=IMAGE),           # CLIP retrieval accuracy
    "sr_lo": dict(n=12000, seed=3, size=IMAGE),            # the same scenes at 32 px ...
    "sr_hi": dict(n=12000, seed=3, size=IMAGE * SR_SCALE),  # ... and at 128 px
}

# decoder high_t=(p, t0): a fraction p of each batch draws its timestep from
# [t0, 1000) instead of [0, 1000). At 32 px the noisy image shows the layout
# (where the objects are, how many) down to t ~ 950, so uniform timesteps
# leave the layout to ~5 % of the batches and the network learned to take it
# from the noise, not from the embedding: at t = 999 the x0 prediction for an
# "A above B" scene was as close to the scene as to its upside-down copy
# (55 %), whichever of the two embeddings it was given. 2 500 steps with
# high_t did not change that measurably (DecoderStage.evaluate; README).

# decoder guidance dropouts (per sample): both text and image embedding
# replaced (the unconditional branch of CFG), only the text, only the embedding
DECODER_DROP = dict(both=0.10, text_only=0.20, emb_only=0.05)

# classifier-free guidance scales the tools use with this model when no -g
# is given (model metadata unclip.default_guidance). Karlo's are 4 and 8:
# 8 over-saturates this small x0 decoder, and 4 throws the draws of a prior
# trained to 12 000 steps off the scenes' embeddings (a third of its count
# draws nearest another meaning, train/probe_prior.py), where 2 keeps them
# as right as the scenes and lets them vary (models/MODEL_CARD.md)
GUIDANCE = dict(prior=2.0, decoder=2.0)

# candidates decoder-diffuse draws per picture when no --best-of is given,
# kept by CLIP: the one whose image embedding is nearest the one it was
# decoded from (model metadata unclip.default_best_of)
BEST_OF = dict(decoder=4)
