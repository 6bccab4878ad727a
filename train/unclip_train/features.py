"""The frozen CLIP of the later stages: text features of every caption the
grammar can produce (plus the empty prompt), and image embeddings of the
training scenes, computed with the CLIP weights exactly as exported."""
import os

import numpy as np
import torch

from . import config, export, grammar
from .clip import CLIP, normalize_images
from .tokenizer import shapes_tokenizer


def load_clip(run_dir, device="cpu"):
    ck = torch.load(os.path.join(run_dir, "ckpt.pt"), map_location="cpu")
    m = CLIP(ck["config"])
    m.load_state_dict(ck["model"])
    export.rounded(m)
    return m.to(device).eval(), ck["step"]


class TextTable:
    """Per caption string: pooled feature [D], sequence [ctx, W], mask [ctx]."""

    def __init__(self, clip, tok, captions, device="cpu"):
        self.index = {c: i for i, c in enumerate(captions)}
        toks, mask = tok.tokenize(captions, clip.context_length)
        feats, seqs = [], []
        with torch.no_grad():
            for s in range(0, len(captions), 512):
                f, q = clip.encode_text_full(toks[s:s + 512].to(device))
                feats.append(f.cpu())
                seqs.append(q.cpu())
        self.feat = torch.cat(feats)
        self.seq = torch.cat(seqs)
        self.mask = mask
        self.empty = self.index[""]

    def ids(self, captions):
        return torch.tensor([self.index[c] for c in captions])


@torch.no_grad()
def image_embeddings(clip, images_u8, device="cpu", batch=500):
    out = []
    for s in range(0, len(images_u8), batch):
        x = normalize_images(torch.from_numpy(images_u8[s:s + batch]).to(device))
        out.append(clip.encode_image(x).cpu())
    return torch.cat(out)


def frozen(runs, images_u8, name, device="cpu", log=print):
    """(clip, tokenizer, TextTable, embeddings [N, D]) with a cache in
    runs/clip/features-<name>.pt tied to the CLIP checkpoint step."""
    run_dir = os.path.join(runs, "clip")
    clip, step = load_clip(run_dir, device)
    tok = shapes_tokenizer()
    table = TextTable(clip, tok, [""] + grammar.all_captions(), device)
    cache = os.path.join(run_dir, f"features-{name}.pt")
    if os.path.exists(cache):
        c = torch.load(cache)
        if c["clip_step"] == step and c["n"] == len(images_u8):
            return clip, tok, table, c["emb"]
    log(f"computing CLIP image embeddings of {len(images_u8)} scenes (clip step {step})")
    emb = image_embeddings(clip, images_u8, device)
    torch.save({"clip_step": step, "n": len(images_u8), "emb": emb}, cache + ".tmp")
    os.replace(cache + ".tmp", cache)
    return clip, tok, table, emb
