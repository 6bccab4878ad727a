#!/usr/bin/env python3
"""End-to-end sampling with the exported model files, in PyTorch, for
comparison with the C pipeline: CLIP text encoding (tokenizer from the CLIP
file's metadata), prior (CFG, ancestral), decoder (CFG, learned-range
variance), x4 upsampler (model_first_steps, then model_last_step).

  python3 train/sample.py [--models DIR] [--n N] [--seed S] [--out grid.png]
                          [--records out.rec] [--eval] [PROMPT...]

Without prompts: N captions drawn from the grammar (a third of each kind).
--eval pipes the results to shapes-eval (32 px decoder output and the
upsampled pictures)."""
import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from unclip_train import data, grammar, st  # noqa: E402
from unclip_train.clip import CLIP  # noqa: E402
from unclip_train.diffusion import Diffusion  # noqa: E402
from unclip_train.prior import PriorDiffusionModel  # noqa: E402
from unclip_train.tokenizer import Tokenizer  # noqa: E402
from unclip_train.unet import ImprovedSupRes64to256ProgressiveModel, Text2ImProgressiveModel  # noqa: E402


def load(path, stage):
    t, meta = st.read(path)
    if meta.get("unclip.stage") != stage:
        sys.exit(f"{path}: stage {meta.get('unclip.stage')!r}, need {stage!r}")
    return st.to_torch(t), meta, json.loads(meta["unclip.config"])


class Pipeline:
    def __init__(self, models):
        t, meta, cfg = load(os.path.join(models, "clip.safetensors"), "clip")
        self.clip = CLIP(cfg)
        self.clip.load_state_dict(t)
        self.tok = Tokenizer.from_text(meta["unclip.tokenizer.merges"])
        # the guidance the tools use without -g: the file's, else Karlo's
        self.guidance = {}
        t, meta, cfg = load(os.path.join(models, "prior.safetensors"), "prior")
        self.guidance["prior"] = float(meta.get("unclip.default_guidance", 4.0))
        self.prior = PriorDiffusionModel(cfg)
        self.prior.clip_mean.copy_(t.pop("clip_mean"))
        self.prior.clip_std.copy_(t.pop("clip_std"))
        self.prior.load_state_dict(t)
        t, meta, cfg = load(os.path.join(models, "decoder.safetensors"), "decoder")
        self.guidance["decoder"] = float(meta.get("unclip.default_guidance", 8.0))
        self.dec = Text2ImProgressiveModel(cfg)
        self.dec.load_state_dict(t)
        t, _, cfg = load(os.path.join(models, "sr.safetensors"), "sr")
        self.sr = ImprovedSupRes64to256ProgressiveModel(cfg)
        self.sr.load_state_dict(t)
        self.scale = cfg["model"]["hparams"].get("scale", 4)
        for m in (self.clip, self.prior, self.dec, self.sr):
            m.eval()

    @torch.no_grad()
    def __call__(self, prompts, gen, prior_steps="25", prior_g=4.0, dec_steps="25", dec_g=8.0, sr_steps="7"):
        b = len(prompts)
        draw = lambda shape: torch.randn(*shape, generator=gen)
        toks, mask = self.tok.tokenize(list(prompts) + [""] * b, self.clip.context_length)
        tf, ts = self.clip.encode_text_full(toks)
        # prior
        p = self.prior
        d = Diffusion.from_config(p.config["diffusion"], prior_steps)
        x = p.sample(d, tf, ts, mask, prior_g, draw)
        emb = (x * p.clip_std + p.clip_mean)[:b]
        # decoder
        net = self.dec.model
        y = torch.cat([emb, net.cf_param[None].expand(b, -1)])
        size = self.dec.config["model"]["hparams"]["image_size"]
        d = Diffusion.from_config(self.dec.config["diffusion"], dec_steps)
        x = d.sample_loop(lambda x, t: self.dec.guided(x, t, tf, ts, mask, y, dec_g), (2 * b, 3, size, size), draw)
        lo = x[:b].clamp(-1, 1)
        # upsampler
        hi_size = size * self.scale
        up = F.interpolate(lo, size=(hi_size, hi_size), mode="bicubic", align_corners=False, antialias=True)
        d = Diffusion.from_config(self.sr.config["diffusion"], sr_steps)
        hi = d.sample_loop(lambda x, t: self.sr.model_first_steps(x, t, up), tuple(up.shape), draw,
                           last_model_fn=lambda x, t: self.sr.model_last_step(x, t, up))
        to_u8 = lambda im: ((im.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        return emb, to_u8(lo), to_u8(hi)


def write_records(path, prompts, images):
    import msgpack
    with open(path, "wb") as f:
        for i, (p, im) in enumerate(zip(prompts, images)):
            f.write(msgpack.packb({"version": 1, "prompt": p, "index": i,
                                   "image": {"dtype": "U8", "shape": list(im.shape), "data": im.tobytes()}}))


def shapes_eval(path):
    exe = os.path.join(os.path.dirname(data.renderer()), "shapes-eval")
    r = subprocess.run([exe, "--json", path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return r.stdout.strip() or r.stderr.strip()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompts", nargs="*")
    ap.add_argument("--models", default=os.path.join(data.ROOT, "models"))
    ap.add_argument("--n", type=int, default=24, help="random grammar captions when no prompts (24)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=24)
    ap.add_argument("--prior-steps", default="25")
    ap.add_argument("--prior-guidance", type=float, help="default: the prior file's, else 4")
    ap.add_argument("--decoder-steps", default="25")
    ap.add_argument("--decoder-guidance", type=float, help="default: the decoder file's, else 8")
    ap.add_argument("--sr-steps", default="7")
    ap.add_argument("--out", default="sample.png", help="PNG grid of the upsampled pictures")
    ap.add_argument("--records", help="also write the pictures as a record stream (and -lo for 32 px)")
    ap.add_argument("--eval", action="store_true", help="judge the pictures with shapes-eval")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    prompts = a.prompts or grammar.random_captions(a.n, a.seed, mix=(1 / 3, 1 / 3, 1 / 3))
    pipe = Pipeline(a.models)
    pg = pipe.guidance["prior"] if a.prior_guidance is None else a.prior_guidance
    dg = pipe.guidance["decoder"] if a.decoder_guidance is None else a.decoder_guidance
    gen = torch.Generator().manual_seed(a.seed)
    los, his = [], []
    t0 = time.time()
    for s in range(0, len(prompts), a.batch):
        _, lo, hi = pipe(prompts[s:s + a.batch], gen, a.prior_steps, pg, a.decoder_steps, dg, a.sr_steps)
        los.append(lo)
        his.append(hi)
    lo, hi = np.concatenate(los), np.concatenate(his)
    print(f"sampled {len(prompts)} pictures in {time.time() - t0:.1f} s")
    data.write_png(a.out, data.grid(hi, min(8, len(hi))))
    print(f"wrote {a.out}")
    if a.records or a.eval:
        rec = a.records or os.path.splitext(a.out)[0] + ".rec"
        lo_rec = os.path.splitext(rec)[0] + "-lo.rec"
        write_records(rec, prompts, hi)
        write_records(lo_rec, prompts, lo)
        if a.eval:
            print("shapes-eval 128 px:", shapes_eval(rec))
            print("shapes-eval 32 px: ", shapes_eval(lo_rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
