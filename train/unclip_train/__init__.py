"""unclip_train: trainer of unclip's small default model (the shapes world).

Modules (each written from the published architecture, with the upstream
state-dict key names so that the C tools load the exported files):

  st          safetensors reader/writer (numpy)
  tokenizer   CLIP byte-level BPE with merges learned from the caption grammar
  grammar     the shapes-world caption grammar (SHAPES.md)
  clip        OpenAI CLIP: text transformer + ViT image tower
  prior       Karlo PriorTransformer inside a PriorDiffusionModel-like wrapper
  unet        Karlo/guided-diffusion UNet: PLMImUNet (decoder), SuperResUNetModel
  diffusion   squaredcos_cap_v2 schedule, respacing, losses, samplers
  data        datasets rendered by tools/shapes-render, cached in train/data/
  stages      the four training stages, checkpoints, logging
  export      unclip model files (formats/MODEL.md)
"""
