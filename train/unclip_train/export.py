"""Unclip model files (formats/MODEL.md) from the trainer's modules:
safetensors with the upstream key names, hyperparameters in __metadata__
(unclip.stage, unclip.config, unclip.model_id, unclip.checksum; for
CLIP, unclip.tokenizer.merges; for prior and decoder,
unclip.default_guidance and unclip.clip, the checksum of the CLIP they
pair with; for the decoder, unclip.default_best_of; for
the upsampler, unclip.default_tile when it trained on crops smaller than
its output).

Storage: the weights and biases of linear, convolution and embedding layers
(and CLIP's fused in_proj, text_projection, visual.proj) as F16, like
OpenAI's convert_weights; normalisation parameters, positional and class
embeddings, learned tokens (prd_emb, cf_param), logit_scale and the prior's
clip_mean / clip_std as F32."""
import hashlib
import json

import numpy as np
import torch
import torch.nn as nn

from . import config, grammar, st

F16_MODULES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)
F16_NAMES = ("in_proj_weight", "in_proj_bias", "text_projection", "proj")


def f16_names(module, prefix=""):
    """Names (state-dict keys) stored as F16."""
    out = set()
    for mname, m in module.named_modules():
        for pname, _ in m.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if isinstance(m, F16_MODULES) or pname in F16_NAMES:
                out.add(prefix + full)
    return out


def tensors(module, prefix="", state=None):
    """state dict (default: module's) -> numpy arrays in storage dtypes."""
    state = state if state is not None else module.state_dict()
    half = f16_names(module)
    out = {}
    for k, v in state.items():
        a = v.detach().cpu().float().numpy()
        out[prefix + k] = a.astype(np.float16) if k in half else a.astype(np.float32)
    return out


def rounded(module):
    """Load into module its own weights as the file stores them (F16
    rounding), so that what is trained downstream sees the shipped model."""
    t = tensors(module)
    module.load_state_dict({k: torch.from_numpy(v.astype(np.float32)) for k, v in t.items()})
    return module


def checksum(t):
    h = hashlib.sha256()
    for k in sorted(t):
        h.update(np.ascontiguousarray(t[k]).tobytes())
    return "sha256:" + h.hexdigest()


def write(path, stage, config, t, extra_meta=None):
    meta = {"unclip.stage": stage, "unclip.config": json.dumps(config, sort_keys=False),
            "unclip.model_id": f"unclip-shapes/{stage}", "unclip.checksum": checksum(t)}
    meta.update(extra_meta or {})
    st.write(path, t, meta)
    return sum(v.nbytes for v in t.values())


def clip_tensors(ck):
    """The CLIP file's tensors from its checkpoint, as export writes them."""
    from .clip import CLIP
    m = CLIP(ck["config"])
    m.load_state_dict(ck["model"])
    return tensors(m)


def clip_checksum(runs, out_dir):
    """unclip.checksum of the CLIP that the prior and decoder pair with: from
    its checkpoint in runs/ (what export writes), else from an exported
    out_dir/clip.safetensors, else None."""
    import os
    path = os.path.join(runs, "clip", "ckpt.pt")
    if os.path.exists(path):
        return checksum(clip_tensors(torch.load(path, map_location="cpu")))
    path = os.path.join(out_dir, "clip.safetensors")
    if os.path.exists(path):
        return st.read(path)[1].get("unclip.checksum")
    return None


def export_all(runs, out_dir, stages=("clip", "prior", "decoder", "sr"), log=print):
    """Write out_dir/<stage>.safetensors from the checkpoints in runs/ (EMA
    weights where kept). Returns {stage: bytes}."""
    import os
    from .prior import PriorDiffusionModel
    from .unet import ImprovedSupRes64to256ProgressiveModel, Text2ImProgressiveModel
    os.makedirs(out_dir, exist_ok=True)
    sizes = {}
    pair = clip_checksum(runs, out_dir) if {"prior", "decoder"} & set(stages) else None
    if pair is None and {"prior", "decoder"} & set(stages):
        log("export: no CLIP checkpoint or file: the prior and decoder declare no CLIP (unclip.clip)")
    for stage in stages:
        path = os.path.join(runs, stage, "ckpt.pt")
        if not os.path.exists(path):
            log(f"export: no checkpoint for {stage} ({path}); skipped")
            continue
        ck = torch.load(path, map_location="cpu")
        state = ck.get("ema", ck["model"])
        extra = {}
        if stage in config.GUIDANCE:
            extra["unclip.default_guidance"] = repr(float(config.GUIDANCE[stage]))
        if stage in config.BEST_OF:
            extra["unclip.default_best_of"] = str(int(config.BEST_OF[stage]))
        if stage in ("prior", "decoder") and pair is not None:
            extra["unclip.clip"] = pair  # records of another CLIP are refused (formats/MODEL.md)
        # an upsampler trained on crops runs on tiles of their side: its group
        # norms' statistics over a whole 128 px picture, mostly white ground,
        # are not those of its training crops (it tinted the ground, issue 24)
        crop = ck.get("crop", config.TRAIN["sr"]["crop"]) if stage == "sr" else None
        if crop is not None and crop < config.IMAGE * config.SR_SCALE:
            extra["unclip.default_tile"] = str(int(crop))
        if stage == "clip":
            cfg = ck["config"]
            extra["unclip.tokenizer.merges"] = ck["merges"]
            extra["unclip.vocabulary"] = " ".join(sorted(grammar.words()))  # clip-encode warns on others
            t = clip_tensors(ck)
        elif stage == "prior":
            m = PriorDiffusionModel(ck["config"])
            m.load_state_dict(state)
            cfg = ck["config"]
            t = tensors(m)
            t["clip_mean"] = ck["clip_mean"].float().numpy()
            t["clip_std"] = ck["clip_std"].float().numpy()
        elif stage == "decoder":
            m = Text2ImProgressiveModel(ck["config"])
            m.load_state_dict(state)
            cfg = ck["config"]
            t = tensors(m)
        else:
            # one trained UNet serves both model_first_steps and model_last_step
            state = dict(state)
            for k in list(state):
                if k.startswith("model_first_steps."):
                    state["model_last_step." + k[len("model_first_steps."):]] = state[k]
            m = ImprovedSupRes64to256ProgressiveModel(ck["config"])
            m.load_state_dict(state)
            cfg = ck["config"]
            t = tensors(m)
        n = write(os.path.join(out_dir, f"{stage}.safetensors"), stage, cfg, t, extra)
        sizes[stage] = n
        log(f"export: {stage} step {ck['step']} ({ck['elapsed'] / 60:.1f} min) -> "
            f"{os.path.join(out_dir, stage + '.safetensors')} ({n / 1e6:.2f} MB of tensors)")
    return sizes
