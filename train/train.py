#!/usr/bin/env python3
"""Trainer of unclip's default model (the shapes world).

  python3 train/train.py clip|prior|decoder|sr [--total-steps N | --minutes M | --total-minutes T]
  python3 train/train.py export [--out models] [STAGE...]
  python3 train/train.py data        # render and cache the datasets
  python3 train/train.py report      # steps, minutes and last losses per stage
  python3 train/train.py slim [STAGE...]   # checkpoints without optimizer state, EMA as weights (to commit)

A stage continues from train/runs/<stage>/ckpt.pt when it exists and trains
until its step N (--total-steps; without a budget, the stage's planned steps
in unclip_train/config.py), so a rerun resumes where the last one stopped.
--minutes M trains M more minutes, --total-minutes T until T minutes in all
(CPU time per thread), for experiments.
Use Debian's python (/usr/bin/python3) with python3-torch."""
import argparse
import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

from unclip_train import config, data, export, stages  # noqa: E402


def report(runs):
    """Per stage: steps, training minutes, the last logged losses."""
    for stage in ("clip", "prior", "decoder", "sr"):
        log = os.path.join(runs, stage, "log.txt")
        if not os.path.exists(log):
            print(f"{stage}: not started")
            continue
        lines = open(log).read().splitlines()
        steps = [l for l in lines if " step " in l and " t=" in l]
        print(f"{stage}: {steps[-1][20:] if steps else 'no steps logged'}")
        for l in lines:
            if "held-out" in l:
                last_eval = l
        if stage == "clip" and any("held-out" in l for l in lines):
            print(f"  {last_eval[20:]}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["clip", "prior", "decoder", "sr", "export", "data", "report", "slim"])
    ap.add_argument("stages", nargs="*", help="export, slim: which stages (default all with a checkpoint)")
    ap.add_argument("--total-steps", type=int, help="train until this step (default: the planned steps)")
    ap.add_argument("--plan-steps", type=int, help="length of the learning-rate schedule in steps (default: --total-steps)")
    ap.add_argument("--minutes", type=float, help="train this many more minutes")
    ap.add_argument("--total-minutes", type=float, help="train until the stage's total training time")
    ap.add_argument("--plan-minutes", type=float, help="length of the learning-rate schedule in minutes (default: --total-minutes or --minutes)")
    ap.add_argument("--ckpt-every", type=float, default=300.0, help="seconds between checkpoints (300)")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (2)")
    ap.add_argument("--seed", type=int, default=config.SEED)
    ap.add_argument("--runs", default=stages.RUNS, help="checkpoint directory (train/runs)")
    ap.add_argument("--out", default=os.path.join(data.ROOT, "models"), help="export: output directory")
    ap.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE",
                    help="override a training setting of the stage (config.TRAIN), e.g. crop=128")
    ap.add_argument("--ema-restart", action="store_true",
                    help="restart the EMA of the weights from the resumed weights (a fine-tune)")
    ap.add_argument("--smoke", action="store_true",
                    help="smoke test: datasets 1/20 the size, checkpoints in train/runs/smoke")
    a = ap.parse_args()
    if a.smoke:
        for d in config.DATA.values():
            d["n"] = max(200, d["n"] // 20)
        if a.runs == stages.RUNS:
            a.runs = os.path.join(stages.RUNS, "smoke")
    torch.set_num_threads(a.threads)
    stages.RUNS = a.runs
    if a.what == "export":
        sizes = export.export_all(a.runs, a.out, a.stages or ("clip", "prior", "decoder", "sr"))
        print(f"export: {sum(sizes.values()) / 1e6:.2f} MB of tensors in all")
        return 0
    if a.what == "report":
        return report(a.runs)
    if a.what == "slim":
        for stage in a.stages or ("clip", "prior", "decoder", "sr"):
            if os.path.exists(os.path.join(a.runs, stage, "ckpt.pt")):
                before, after = stages.slim(os.path.join(a.runs, stage))
                print(f"{stage}: {before / 1e6:.1f} -> {after / 1e6:.1f} MB")
        return 0
    if a.what == "data":
        for name, d in config.DATA.items():
            caps, imgs = data.dataset(name, d["n"], d["seed"], d["size"])
            print(f"{name}: {len(caps)} scenes of {imgs.shape[1]} px")
        return 0
    for kv in a.hp:
        key, _, value = kv.partition("=")
        old = config.TRAIN[a.what].get(key)
        if old is None or not value:
            ap.error(f"--hp {kv}: {a.what} has no setting {key!r} (config.TRAIN)")
        config.TRAIN[a.what][key] = type(old)(value)
    st = stages.STAGES[a.what](a.seed)
    st.ema_restart = a.ema_restart
    done = st.run(a.minutes, a.total_minutes, a.plan_minutes, a.ckpt_every, a.total_steps, a.plan_steps)
    return 0 if done else 3


if __name__ == "__main__":
    sys.exit(main())
