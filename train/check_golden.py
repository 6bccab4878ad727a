#!/usr/bin/env python3
"""Validate the trainer's modules against the golden cases: load each
golden model strictly into our module, run the io inputs, compare with the
case tolerance (|got - want| <= atol + rtol * |want|).

usage: python3 train/check_golden.py [GOLDEN_DIR]   (default ../shared/golden
relative to the repository, else the repository's tests/golden)"""
import gzip
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from unclip_train import st  # noqa: E402
from unclip_train.clip import CLIP  # noqa: E402
from unclip_train.diffusion import Diffusion, space_timesteps  # noqa: E402
from unclip_train.prior import PriorDiffusionModel  # noqa: E402
from unclip_train.tokenizer import Tokenizer, parse_merges  # noqa: E402
from unclip_train.unet import ImprovedSupRes64to256ProgressiveModel, Text2ImProgressiveModel  # noqa: E402

torch.set_num_threads(1)
RESULTS = []


def golden_dir():
    if len(sys.argv) > 1:
        return sys.argv[1]
    here = os.path.dirname(os.path.abspath(__file__))
    for c in (os.path.join(here, "..", "..", "shared", "golden"), os.path.join(here, "..", "tests", "golden")):
        if os.path.isdir(c):
            return c
    sys.exit("check_golden: no golden directory")


def compare(case, name, got, want, tol):
    got = got.detach().double().numpy() if torch.is_tensor(got) else np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        RESULTS.append((case, name, False, f"shape {got.shape} != {want.shape}"))
        return
    atol, rtol = tol["atol"], tol["rtol"]
    err = np.abs(got - want)
    ok = bool(np.all(err <= atol + rtol * np.abs(want)))
    ratio = float(np.max(err / (atol + rtol * np.abs(want)))) if err.size else 0.0
    RESULTS.append((case, name, ok, f"max|d|={err.max():.3g} worst/tol={ratio:.3f}"))


def load_case(d, case):
    p = os.path.join(d, case)
    cj = json.load(open(os.path.join(p, "case.json")))
    io, _ = st.read(os.path.join(p, "io.safetensors"))
    io = st.to_torch(io)
    model = None
    if os.path.exists(os.path.join(p, "model.safetensors")):
        model, _ = st.read(os.path.join(p, "model.safetensors"))
        model = st.to_torch(model)  # F16 widened to F32 per tensor
    return cj, io, model


def clip_cfg(c):
    keys = ["embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size",
            "context_length", "vocab_size", "transformer_width", "transformer_heads", "transformer_layers"]
    return {k: c[k] for k in keys}


def clip_model(cj, sd):
    m = CLIP(clip_cfg(cj["config"]))
    m.load_state_dict(sd, strict=True)
    return m.eval()


def check_clip(g):
    case = "clip/text-encode"
    cj, io, sd = load_case(g, case)
    m = clip_model(cj, sd)
    with torch.no_grad():
        emb, seq = m.encode_text_full(io["tokens"])
    compare(case, "text_emb", emb, io["text_emb"], cj["tolerance"])
    compare(case, "text_seq", seq, io["text_seq"], cj["tolerance"])

    for case in ("clip/image-encode", "clip/image-encode-f32"):
        cj, io, sd = load_case(g, case)
        m = clip_model(cj, sd)
        with torch.no_grad():
            seq = m.visual.tokens(io["image"])
            compare(case, "image_emb", m.encode_image(io["image"]), io["image_emb"], cj["tolerance"])
            if "image_seq" in io:
                compare(case, "image_seq", seq, io["image_seq"], cj["tolerance"])
                compare(case, "image_seq_ln_post", m.visual.ln_post(seq), io["image_seq_ln_post"], cj["tolerance"])

    case = "clip/logits"
    cj, io, sd = load_case(g, case)
    m = clip_model(cj, sd)
    with torch.no_grad():
        lpi, lpt = m(io["image"], io["tokens"])
        small = {"atol": 5e-5, "rtol": 1e-4}
        compare(case, "logits_per_image", lpi, io["logits_per_image"], cj["tolerance"])
        compare(case, "logits_per_text", lpt, io["logits_per_text"], cj["tolerance"])
        compare(case, "image_emb", m.encode_image(io["image"]), io["image_emb"], small)
        compare(case, "text_emb", m.encode_text(io["tokens"]), io["text_emb"], small)

    case = "karlo/clip-encode-text-karlo"
    cj, io, sd = load_case(g, case)
    m = clip_model(cj, sd)
    with torch.no_grad():
        f, s = m.encode_text_full(io["tokens"])
    compare(case, "txt_feat", f, io["txt_feat"], cj["tolerance"])
    compare(case, "txt_feat_seq", s, io["txt_feat_seq"], cj["tolerance"])


def real_tokenizer(g):
    path = os.path.join(g, "..", "vocab", "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.exists(path):
        return None
    text = gzip.open(path).read().decode("utf-8")
    return Tokenizer(parse_merges(text)[:49152 - 256 - 2])


def check_tokenizer(g):
    tk = real_tokenizer(g)
    if tk is None:
        RESULTS.append(("clip/tokenizer", "vocab", False, "bpe_simple_vocab_16e6.txt.gz not found"))
        return
    case = "clip/tokenizer"
    cj, io, _ = load_case(g, case)
    texts = [s["text"] for s in cj["strings"]]
    toks = torch.zeros(len(texts), 77, dtype=torch.long)
    for i, t in enumerate(texts):
        ids = [tk.sot] + tk.encode(t) + [tk.eot]
        if len(ids) > 77:
            ids = ids[:77]
            ids[-1] = tk.eot
        toks[i, :len(ids)] = torch.tensor(ids)
    bad = (toks != io["tokens"]).any(dim=1).nonzero().flatten().tolist()
    RESULTS.append((case, "tokens", not bad, f"{len(texts) - len(bad)}/{len(texts)} strings exact" +
                    (f", differ: {bad}" if bad else "")))
    case = "karlo/clip-encode-text-karlo"
    cj, io, _ = load_case(g, case)
    t, m = tk.tokenize(cj["config"]["prompts"], cj["config"]["text_ctx"])
    ok = torch.equal(t, io["tokens"]) and torch.equal(m, io["mask"].bool())
    RESULTS.append((case, "tokens+mask", ok, "padded_tokens_and_mask exact" if ok else "differ"))


def check_prior(g):
    case = "karlo/prior-forward"
    cj, io, sd = load_case(g, case)
    p = PriorDiffusionModel(cj["config"])
    p.load_state_dict(sd, strict=True)
    p.eval()
    tol = cj["tolerance"]
    mask = io["mask"].bool()
    with torch.no_grad():
        out = p.model(io["x_t"], io["timesteps"], io["txt_feat"], io["txt_feat_seq"], mask)
        compare(case, "model_out", out, io["model_out"], tol)
        compare(case, "model_out_denorm", out * io["clip_std"] + io["clip_mean"], io["model_out_denorm"], tol)
        gout = p.guided(io["guided_x_t"], io["guided_timesteps"], io["txt_feat"], io["txt_feat_seq"], mask,
                        io["cf_scales"].view(-1, 1))
        compare(case, "guided_out", gout, io["guided_out"], tol)

    for case in ("karlo/prior-sample", "karlo/prior-sample-ddim"):
        if not os.path.isdir(os.path.join(g, case)):
            continue
        cj, io, sd = load_case(g, case)
        spec = cj["config"]["timestep_respacing"]
        if spec.startswith(("ddim", "fast")):
            continue  # our sampler is ancestral only (what the trainer uses)
        p = PriorDiffusionModel(cj["config"])
        p.load_state_dict(sd, strict=True)
        p.eval()
        diff = Diffusion.from_config(cj["config"]["diffusion"], spec)
        noises = iter(io[k] for k in sorted(k for k in io if k.startswith("noise_")))
        mask = io["mask"].bool()
        s = io["cf_scales"].view(-1, 1)
        trace = []
        x = p.sample(diff, io["txt_feat"], io["txt_feat_seq"], mask, s, lambda shape: next(noises), trace=trace)
        b = io["img_feat"].shape[0]
        compare(case, "step_pred_xstart", torch.stack([t[3] for t in trace]), io["step_pred_xstart"], cj["tolerance"])
        compare(case, "img_feat", (x * io["clip_std"] + io["clip_mean"])[:b], io["img_feat"], cj["tolerance"])


def check_decoder(g):
    for case in ("karlo/decoder-forward", "karlo/decoder-forward-f16"):
        cj, io, sd = load_case(g, case)
        d = Text2ImProgressiveModel(cj["config"])
        d.load_state_dict(sd, strict=True)
        d.eval()
        tol = cj["tolerance"]
        mask = io["mask"].bool()
        with torch.no_grad():
            out = d.model(io["x_t"], io["timesteps"], io["txt_feat"], io["txt_feat_seq"], mask, io["y"])
            compare(case, "model_out", out, io["model_out"], tol)
            b = io["img_feat"].shape[0]
            y = torch.cat([io["img_feat"], d.model.cf_param[None].expand(io["y"].shape[0] - b, -1)])
            compare(case, "y (img_feat + cf_param)", y, io["y"], tol)
            gout = d.guided(io["guided_x_t"], io["guided_timesteps"], io["txt_feat"], io["txt_feat_seq"], mask, y,
                            io["cf_scales"].view(-1, 1, 1, 1))
            compare(case, "guided_out", gout, io["guided_out"], tol)

    case = "karlo/decoder-sample"
    cj, io, sd = load_case(g, case)
    d = Text2ImProgressiveModel(cj["config"])
    d.load_state_dict(sd, strict=True)
    d.eval()
    diff = Diffusion.from_config(cj["config"]["diffusion"], cj["config"]["timestep_respacing"])
    noises = iter(io[k] for k in sorted(k for k in io if k.startswith("noise_")))
    mask = io["mask"].bool()
    b = io["img_feat"].shape[0]
    y = torch.cat([io["img_feat"], d.model.cf_param[None].expand(b, -1)])
    s = io["cf_scales"].view(-1, 1, 1, 1)
    x = diff.sample_loop(lambda x, t: d.guided(x, t, io["txt_feat"], io["txt_feat_seq"], mask, y, s),
                         tuple(io["noise_000"].shape), lambda shape: next(noises), clip_denoised=True)
    compare(case, "sample", x[:b], io["sample"], cj["tolerance"])


def check_sr(g):
    for case in ("karlo/sr-forward", "karlo/sr-forward-updown"):
        cj, io, sd = load_case(g, case)
        m = ImprovedSupRes64to256ProgressiveModel(cj["config"])
        m.load_state_dict(sd, strict=True)
        m.eval()
        with torch.no_grad():
            compare(case, "out_first_steps", m.model_first_steps(io["x_t"], io["timesteps"], io["low_res"]),
                    io["out_first_steps"], cj["tolerance"])
            compare(case, "out_last_step", m.model_last_step(io["x_t"], io["timesteps"], io["low_res"]),
                    io["out_last_step"], cj["tolerance"])

    case = "karlo/sr-sample"
    cj, io, sd = load_case(g, case)
    m = ImprovedSupRes64to256ProgressiveModel(cj["config"])
    m.load_state_dict(sd, strict=True)
    m.eval()
    diff = Diffusion.from_config(cj["config"]["diffusion"], cj["config"]["timestep_respacing"])
    noises = iter(io[k] for k in sorted(k for k in io if k.startswith("noise_")))
    lr = io["low_res"]
    x = diff.sample_loop(lambda x, t: m.model_first_steps(x, t, lr), tuple(lr.shape), lambda shape: next(noises),
                         last_model_fn=lambda x, t: m.model_last_step(x, t, lr))
    compare(case, "sample", x, io["sample"], cj["tolerance"])

    case = "karlo/sr-resize"
    cj, io, _ = load_case(g, case)
    keys = list(io)
    src = [k for k in keys if io[k].shape[-1] == cj["config"]["low"]][0]
    dst = [k for k in keys if io[k].shape[-1] == cj["config"]["high"]][0]
    up = torch.nn.functional.interpolate(io[src], size=(cj["config"]["high"],) * 2, mode="bicubic",
                                         align_corners=False, antialias=True)
    compare(case, f"{dst} (F.interpolate bicubic antialias)", up, io[dst], cj["tolerance"])


def check_schedule(g):
    case = "karlo/diffusion-schedule"
    cj, io, _ = load_case(g, case)
    c = cj["config"]
    tol = cj["tolerance"]
    base = Diffusion.from_config({"steps": c["steps"], "noise_schedule": c["noise_schedule"], "learn_sigma": False,
                                  "sigma_small": True, "predict_xstart": False, "timestep_respacing": ""})
    for name in ("betas", "alphas_cumprod", "alphas_cumprod_prev", "posterior_variance",
                 "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2"):
        compare(case, name, np.float32(getattr(base, name)), io[name], tol)
    for r in c["respacings"]:
        pre = f"respace_{r}_"
        keep = space_timesteps(c["steps"], r)
        ok = keep == io[pre + "timesteps"].tolist()
        RESULTS.append((case, pre + "timesteps", ok, f"{len(keep)} kept" if ok else f"{keep} != {io[pre + 'timesteps'].tolist()}"))
        d = Diffusion.from_config({"steps": c["steps"], "noise_schedule": c["noise_schedule"], "learn_sigma": False,
                                   "sigma_small": True, "predict_xstart": False, "timestep_respacing": r})
        for name in ("betas", "alphas_cumprod", "posterior_log_variance_clipped"):
            compare(case, pre + name, np.float32(getattr(d, name)), io[pre + name], tol)
    for kind, spec in c["p_mean_variance"].items():
        d = Diffusion.from_config(spec["diffusion"])
        fn = (lambda x: x.clamp(-10, 10)) if spec["denoised_fn"] else None
        x, t = io[kind + "_x_t"], io[kind + "_t"]
        r = d.p_mean_variance(io[kind + "_model_output"], x, t, spec["clip_denoised"], fn)
        for k in ("mean", "variance", "log_variance", "pred_xstart"):
            compare(case, f"{kind}_{k}", r[k], io[f"{kind}_{k}"], tol)
        qm, qv, qlv = d.q_posterior(io[kind + "_q_x_start"], x, t)
        compare(case, f"{kind}_q_posterior_mean", qm, io[kind + "_q_posterior_mean"], tol)
        compare(case, f"{kind}_q_posterior_variance", qv, io[kind + "_q_posterior_variance"], tol)
        compare(case, f"{kind}_q_posterior_log_variance", qlv, io[kind + "_q_posterior_log_variance"], tol)


def main():
    g = golden_dir()
    for fn in (check_tokenizer, check_clip, check_prior, check_decoder, check_sr, check_schedule):
        try:
            fn(g)
        except Exception as e:  # a crash is a failure of that group, not of the run
            import traceback
            traceback.print_exc()
            RESULTS.append((fn.__name__, "exception", False, repr(e)))
    npass = sum(r[2] for r in RESULTS)
    for case, name, ok, msg in RESULTS:
        print(f"{'PASS' if ok else 'FAIL'} {case} {name}: {msg}")
    print(f"{npass} passed, {len(RESULTS) - npass} failed")
    return 0 if npass == len(RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
