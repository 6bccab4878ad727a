"""Inputs written by real PyTorch, where it is installed (Debian's
python3-torch), to check unclip-convert against the real formats and
tests/convert/mkinputs.py's writer against torch.load:

  save CASE OUT [--legacy]      torch.save({'state_dict': ...}) of the case's weights
  stats CASE OUT                torch.save((clip_mean, clip_std))
  jit CASE OUT --trace|--script torch.jit of a module tree with OpenAI CLIP's
                                attribute names, holding the case's weights
  load FILE CASE                torch.load(FILE, weights_only=True) (or torch.jit.load)
                                gives the case's weights exactly
"""
import os
import sys
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mkinputs  # noqa: E402


def golden(case):
    out = OrderedDict()
    for k, (dt, a) in mkinputs.weights(case).items():
        t = torch.from_numpy(np.array(a))
        out[k] = t
    return out


def cmd_save(case, out, *flags):
    sd = golden(case)
    torch.save({"state_dict": sd, "epoch": 3, "global_step": 1000000}, out,
               _use_new_zipfile_serialization="--legacy" not in flags)


def cmd_stats(case, out):
    m, s = mkinputs.io_tensor(case, "clip_mean")[1], mkinputs.io_tensor(case, "clip_std")[1]
    torch.save((torch.from_numpy(np.array(m)), torch.from_numpy(np.array(s))), out)


class LayerNorm(nn.LayerNorm):
    pass


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, w, heads):
        super().__init__()
        self.attn = nn.MultiheadAttention(w, heads)
        self.ln_1 = LayerNorm(w)
        self.mlp = nn.Sequential(OrderedDict([("c_fc", nn.Linear(w, 4 * w)), ("gelu", QuickGELU()),
                                              ("c_proj", nn.Linear(4 * w, w))]))
        self.ln_2 = LayerNorm(w)

    def forward(self, x):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, w, layers, heads):
        super().__init__()
        self.resblocks = nn.Sequential(*[Block(w, heads) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class Visual(nn.Module):
    def __init__(self, res, patch, w, layers, heads, dim):
        super().__init__()
        self.conv1 = nn.Conv2d(3, w, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(w))
        self.positional_embedding = nn.Parameter(torch.zeros((res // patch) ** 2 + 1, w))
        self.ln_pre = LayerNorm(w)
        self.transformer = Transformer(w, layers, heads)
        self.ln_post = LayerNorm(w)
        self.proj = nn.Parameter(torch.zeros(w, dim))

    def forward(self, x):
        x = self.conv1(x).flatten(2).permute(2, 0, 1)
        x = self.transformer(self.ln_pre(x))
        return self.ln_post(x[0]) @ self.proj


class CLIP(nn.Module):
    def __init__(self, sd, heads, vheads):
        super().__init__()
        W = sd["ln_final.weight"].shape[0]
        V, ctx, D = sd["token_embedding.weight"].shape[0], sd["positional_embedding"].shape[0], sd["text_projection"].shape[1]
        Wv, P = sd["visual.conv1.weight"].shape[0], sd["visual.conv1.weight"].shape[-1]
        G = int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
        layers = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
        vlayers = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
        self.visual = Visual(G * P, P, Wv, vlayers, vheads, D)
        self.transformer = Transformer(W, layers, heads)
        self.token_embedding = nn.Embedding(V, W)
        self.positional_embedding = nn.Parameter(torch.zeros(ctx, W))
        self.ln_final = LayerNorm(W)
        self.text_projection = nn.Parameter(torch.zeros(W, D))
        self.logit_scale = nn.Parameter(torch.zeros([]))
        self.register_buffer("input_resolution", torch.tensor(G * P))
        self.register_buffer("context_length", torch.tensor(ctx))
        self.register_buffer("vocab_size", torch.tensor(V))

    def forward(self, image, text):
        x = self.token_embedding(text) + self.positional_embedding
        x = self.ln_final(self.transformer(x.permute(1, 0, 2)))
        return self.visual(image), x[0] @ self.text_projection


def cmd_jit(case, out, how):
    sd = golden(case)
    cfg = mkinputs.case_json(case)["config"]
    W, Wv = sd["ln_final.weight"].shape[0], sd["visual.conv1.weight"].shape[0]
    heads, vheads = mkinputs.clip_heads(cfg, W, Wv)
    m = CLIP(sd, heads, vheads)
    full = dict(sd)
    full.update({k: v for k, v in m.state_dict().items() if k in ("input_resolution", "context_length", "vocab_size")})
    m.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in full.items()})
    if how == "--trace":
        R, ctx = int(m.input_resolution), sd["positional_embedding"].shape[0]
        j = torch.jit.trace(m, (torch.zeros(1, 3, R, R), torch.zeros(1, ctx, dtype=torch.long)), check_trace=False)
    else:
        j = torch.jit.script(m)
    params = dict(j.named_parameters())
    for k, v in sd.items():   # the file's dtypes (OpenAI's archives hold F16 weights)
        params[k].data = v.clone()
    j.save(out)


def cmd_load(path, case):
    want = golden(case)
    with open(path, "rb") as f:
        script = b"constants.pkl" in f.read()
    got = torch.jit.load(path).state_dict() if script else torch.load(path, weights_only=True)
    if isinstance(got, dict) and "state_dict" in got:
        got = got["state_dict"]
    for k, v in want.items():
        if k not in got or got[k].dtype != v.dtype or not torch.equal(got[k], v):
            raise SystemExit("torch_check load: %s: tensor %s differs" % (path, k))
    print("torch_check: %s loads in torch with the case's %d tensors" % (path, len(want)))


def main(argv):
    cmds = {"save": cmd_save, "stats": cmd_stats, "jit": cmd_jit, "load": cmd_load}
    if not argv or argv[0] not in cmds:
        raise SystemExit(__doc__)
    cmds[argv[0]](*argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
