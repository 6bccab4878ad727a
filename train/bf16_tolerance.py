#!/usr/bin/python3
"""bf16_tolerance.py - the tolerance of tests/shell/bf16.sh: PyTorch's own
BF16 run of each decoder golden case against the case's F32 reference.

    cd train && /usr/bin/python3 bf16_tolerance.py [GOLDEN-DIR]

The trainer's Text2ImProgressiveModel (which check_golden.py validates in
F32) runs the case under torch.autocast("cpu", dtype=torch.bfloat16):
its convolutions and linear layers on BF16-rounded weights and
activations, the rest in F32. Prints, per case and output, the largest
absolute error against the reference; bf16.sh's atol for a case is the
largest of its outputs'."""
import sys

import torch

import check_golden as cg
from unclip_train.unet import Text2ImProgressiveModel

CASES = ("karlo/decoder-forward", "karlo/decoder-forward-32")


def main():
    g = sys.argv[1] if len(sys.argv) > 1 else cg.golden_dir()
    for case in CASES:
        cj, io, sd = cg.load_case(g, case)
        d = Text2ImProgressiveModel(cj["config"])
        d.load_state_dict(sd, strict=True)
        d.eval()
        mask = io["mask"].bool()
        b = io["img_feat"].shape[0]
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            out = d.model(io["x_t"], io["timesteps"], io["txt_feat"], io["txt_feat_seq"], mask, io["y"])
            y = torch.cat([io["img_feat"], d.model.cf_param[None].expand(io["y"].shape[0] - b, -1)])
            gout = d.guided(io["guided_x_t"], io["guided_timesteps"], io["txt_feat"], io["txt_feat_seq"], mask, y,
                            io["cf_scales"].view(-1, 1, 1, 1))
        errs = []
        for name, got in (("model_out", out), ("guided_out", gout)):
            want = io[name].double()
            e = float((got.double() - want).abs().max())
            errs.append(e)
            print("%s %s: BF16 max|d| %.3g (reference up to %.3g)" % (case, name, e, float(want.abs().max())))
        print("%s: atol %.3g" % (case, max(errs)))


if __name__ == "__main__":
    main()
