#!/usr/bin/env python3
"""The trainer's modules against the engine's one description of each
stage: for the config of each shipped model file (models/<stage>.safetensors,
unclip.config), build the trainer's module and compare what the exporter
writes (names, shapes, storage types: export.tensors) with what
`unclip-spec STAGE CONFIG` lists. Run by tests/shell/trainer_spec.sh where
PyTorch is installed.

usage: python3 train/check_spec.py UNCLIP_SPEC [MODELS_DIR]"""
import json
import os
import subprocess
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unclip_train import export, st  # noqa: E402
from unclip_train.clip import CLIP  # noqa: E402
from unclip_train.prior import PriorDiffusionModel  # noqa: E402
from unclip_train.unet import ImprovedSupRes64to256ProgressiveModel, Text2ImProgressiveModel  # noqa: E402

MODULES = {"clip": CLIP, "prior": PriorDiffusionModel, "decoder": Text2ImProgressiveModel,
           "sr": ImprovedSupRes64to256ProgressiveModel}


def exported(stage, cfg):
    """name -> (shape, dtype) as export.export_all writes a module of cfg."""
    torch.manual_seed(0)
    m = MODULES[stage](cfg)
    t = export.tensors(m)
    if stage == "prior":  # the statistics: buffers outside the state dict, written F32
        t["clip_mean"] = m.clip_mean.float().numpy()
        t["clip_std"] = m.clip_std.float().numpy()
    return {k: (list(v.shape), {"float16": "F16", "float32": "F32"}[str(v.dtype)]) for k, v in t.items()}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    prog = sys.argv[1]
    models = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                                                  "models")
    bad = 0
    for stage in MODULES:
        path = os.path.join(models, stage + ".safetensors")
        _, meta = st.read(path)
        cfg = json.loads(meta["unclip.config"])
        r = subprocess.run([prog, "-q", stage, "-"], input=meta["unclip.config"].encode(), stdout=subprocess.PIPE)
        if r.returncode:
            sys.exit("check_spec: %s %s failed" % (prog, stage))
        spec = {t["name"]: (t["shape"], t["dtype"]) for t in json.loads(r.stdout)["tensors"]}
        have = exported(stage, cfg)
        diff = sorted(set(spec) ^ set(have)) + sorted(k for k in spec if k in have and spec[k] != have[k])
        if diff:
            bad += 1
            print("check_spec: %s: %d differences between the trainer and unclip-spec: %s" % (
                stage, len(diff), "; ".join("%s trainer %s spec %s" % (k, have.get(k), spec.get(k)) for k in diff[:4])))
        else:
            print("check_spec: %s: %d tensors, names, shapes and storage types as unclip-spec lists" % (
                stage, len(spec)))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
