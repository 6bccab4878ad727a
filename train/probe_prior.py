#!/usr/bin/env python3
"""How a prior checkpoint's draws compare with the CLIP image embeddings of
the training scenes, in a minute and without the decoder (issue 24: the
prior is where diversity is lost).

  python3 train/probe_prior.py [--runs DIR] [--guidance 4,1] [--captions K]
                               [--draws N] CKPT...

For K captions with at least max(N, 24) training scenes, N draws each (25 respaced
steps, guided as prior-sample guides, seed 1), against the first N scenes
of each caption:
  spread  mean pairwise cosine distance of a caption's draws over that of
          its scenes (1: the draws vary as much as the world's pictures)
  right   share of draws whose nearest scene embedding (of all scenes) has
          the caption's meaning (the scenes themselves, leave-one-out: the
          first line)
  near    mean cosine distance of a draw to its nearest scene, over the same
          for the scenes (leave-one-out): above 1, the draws lie off the
          scenes' manifold
CKPT: a prior checkpoint (train/runs/prior/ckpt.pt; its EMA weights when it
has them). --runs names the run whose clip/ holds the CLIP checkpoint and its
cached scene features (train.py prior computes them)."""
import argparse
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from unclip_train import config, features, grammar, stages  # noqa: E402
from unclip_train.diffusion import Diffusion  # noqa: E402
from unclip_train.prior import PriorDiffusionModel  # noqa: E402


def spread(e):
    e = F.normalize(e, dim=-1)
    n = len(e)
    return float((1 - e @ e.T).sum() / (n * (n - 1)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", nargs="+")
    ap.add_argument("--runs", default=stages.RUNS)
    ap.add_argument("--guidance", default="4,1", help="comma-separated guidance scales (4,1)")
    ap.add_argument("--captions", type=int, default=24)
    ap.add_argument("--draws", type=int, default=16)
    a = ap.parse_args()
    torch.set_num_threads(1)
    K, N = a.captions, a.draws
    caps, imgs = stages.scenes()
    _, _, text, emb = features.frozen(a.runs, imgs, "scenes")
    meanings = [grammar.meaning(c) for c in caps]
    byc = {}
    for i, c in enumerate(caps):
        byc.setdefault(c, []).append(i)
    pool = sorted((c for c in byc if len(byc[c]) >= max(N, 24)), key=lambda c: (grammar.kind(c), c))
    pick = [pool[i] for i in torch.randperm(len(pool), generator=torch.Generator().manual_seed(5))[:K].tolist()]
    K = len(pick)
    unit = F.normalize(emb, dim=-1)

    def nearest(e, exclude=None):
        s = F.normalize(e, dim=-1) @ unit.T
        if exclude is not None:
            s[torch.arange(len(e)), exclude] = -2
        v, i = s.max(1)
        return 1 - v, i

    def score(per_caption):
        """per_caption: (caption, embeddings, exclude) -> spread, right by kind, near"""
        sp, near, kinds = 0.0, [], {}
        for c, e, ex in per_caption:
            sp += spread(e)
            dist, idx = nearest(e, ex)
            near.append(dist)
            ok = sum(meanings[i] == grammar.meaning(c) for i in idx.tolist())
            r, n = kinds.get(grammar.kind(c), (0, 0))
            kinds[grammar.kind(c)] = (r + ok, n + len(e))
        right = sum(r for r, _ in kinds.values()) / sum(n for _, n in kinds.values())
        each = " ".join(f"{k} {r / n:.3f}" for k, (r, n) in sorted(kinds.items()))
        return sp / K, right, each, float(torch.cat(near).mean())

    real_sp, real_right, real_each, real_near = score(
        [(c, emb[byc[c][:N]], torch.tensor(byc[c][:N])) for c in pick])
    print(f"scenes: {K} captions x {N}: spread {real_sp:.4f} (cosine) right {real_right:.3f} ({real_each}) "
          f"near {real_near:.4f} (cosine)")
    d = Diffusion.from_config(config.PRIOR["diffusion"], "25")
    for path in a.ckpt:
        ck = torch.load(path, map_location="cpu")
        m = PriorDiffusionModel(config.PRIOR)
        m.clip_mean.copy_(ck["clip_mean"])
        m.clip_std.copy_(ck["clip_std"])
        m.load_state_dict(ck.get("ema", ck["model"]))
        m.eval()
        for g in (float(x) for x in a.guidance.split(",")):
            gen = torch.Generator().manual_seed(1)
            draws = []
            for c in pick:
                tid = torch.as_tensor(text.ids([c] * N + [""] * N))
                tf, ts, tm = text.feat[tid], text.seq[tid], text.mask[tid]
                with torch.no_grad():
                    x = m.sample(d, tf, ts, tm, g, lambda shape: torch.randn(*shape, generator=gen))
                draws.append((c, (x * m.clip_std + m.clip_mean)[:N], None))
            sp, right, each, near = score(draws)
            print(f"{path} (step {ck['step']}) guidance {g:g}: spread {sp / real_sp:.3f} right {right:.3f} "
                  f"({each}) near {near / real_near:.2f}", flush=True)


if __name__ == "__main__":
    main()
