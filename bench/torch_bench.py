#!/usr/bin/python3
"""torch_bench.py - the PyTorch side of unclip-bench: the same models at the
same sizes with random fp32 weights, the same inputs and the same timing
(median of the timed runs after one warm-up), one line per benchmark:

    torch-NAME seconds=S peak_rss_mb=M

The models are the trainer's PyTorch modules (train/unclip_train), which
check_golden.py validates against the upstream golden cases. Each benchmark
runs in its own process (for its peak RSS). Threads: --threads (default all
cores) with OMP_WAIT_POLICY=PASSIVE, the best setting found on a 2-core
machine. Matrix products run on the same BLIS kernels as unclip's (see
choose_blis_kernels); convolutions on oneDNN.

Usage: torch_bench.py [--threads N] [--runs N] [--max-time S] [--quick] [NAME...]
(NAME as unclip-bench: a name or a prefix up to a '-', e.g. sgemm, clip, prior)
"""
import argparse
import math
import os
import resource
import subprocess
import sys
import time


def choose_blis_kernels():
    """Debian's torch calls BLIS 0.9 (libblas.so.3) for its matrix products;
    BLIS knows no Zen 4/5 and falls back to its generic kernels, about 5x
    slower. Pick the Skylake-X kernels on AVX-512 processors, as unclip's
    ops.c does, unless the user chose (BLIS_ARCH_TYPE 0 is BLIS_ARCH_SKX)."""
    if "BLIS_ARCH_TYPE" in os.environ:
        return
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((l.split() for l in f if l.startswith("flags")), [])
    except OSError:
        return
    if all(x in flags for x in ("avx512f", "avx512dq", "avx512bw", "avx512vl")):
        os.environ["BLIS_ARCH_TYPE"] = "0"


os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
choose_blis_kernels()
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "train"))

# The configs of bench/models.c (keep the two in step): OpenAI CLIP
# ViT-L/14 and Karlo's released prior, decoder and SR yaml files.
CLIP = {
    False: dict(embed_dim=768, image_resolution=224, vision_layers=24, vision_width=1024, vision_patch_size=14,
                context_length=77, vocab_size=49408, transformer_width=768, transformer_heads=12,
                transformer_layers=12),
    True: dict(embed_dim=128, image_resolution=64, vision_layers=2, vision_width=128, vision_patch_size=16,
               context_length=77, vocab_size=49408, transformer_width=128, transformer_heads=2,
               transformer_layers=2),
}
PRIOR = {
    False: dict(text_ctx=77, xf_width=2048, xf_layers=20, xf_heads=32, xf_final_ln=True, text_drop=0.2,
                clip_dim=768),
    True: dict(text_ctx=77, xf_width=256, xf_layers=2, xf_heads=4, xf_final_ln=True, clip_dim=128),
}
DECODER = {
    # channel_mult '' in Karlo's yaml is 1,2,3,4 at 64 px
    False: dict(image_size=64, num_channels=320, num_res_blocks=3, channel_mult="1,2,3,4",
                attention_resolutions="32,16,8", num_heads=-1, num_head_channels=64, num_heads_upsample=-1,
                use_scale_shift_norm=True, dropout=0.1, clip_dim=768, clip_emb_mult=4, text_ctx=77,
                xf_width=1536, xf_layers=0, xf_heads=0, xf_final_ln=False, resblock_updown=True,
                learn_sigma=True, text_drop=0.3, clip_emb_type="image", clip_emb_drop=0.1, use_plm=True),
    True: dict(image_size=32, num_channels=32, num_res_blocks=1, channel_mult="1,2,3", attention_resolutions="16,8",
               num_heads=-1, num_head_channels=32, num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0,
               clip_dim=128, clip_emb_mult=4, text_ctx=77, xf_width=128, xf_layers=0, resblock_updown=True,
               learn_sigma=True, clip_emb_type="image", clip_emb_drop=0.1),
}
SR = {
    False: dict(channels=320, depth=3, channels_multiple=[1, 2, 3, 4], dropout=0.0),
    True: dict(channels=32, depth=1, channels_multiple=[1, 2], dropout=0.0),
}
PRIOR_STEPS = 25


def line_names(threads):
    """(entry, [line names]) in unclip-bench's order."""
    out = [("sgemm-square-1", ["sgemm-square-t1"])]
    if threads > 1:
        out.append(("sgemm-square-n", ["sgemm-square-t%d" % threads]))
    out.append(("sgemm-xf-1", ["sgemm-xf-t1"]))
    if threads > 1:
        out.append(("sgemm-xf-n", ["sgemm-xf-t%d" % threads]))
    out += [("clip-text", ["clip-text"]), ("clip-image", ["clip-image"]),
            ("prior", ["prior-step", "prior-forward-full"]), ("decoder-step", ["decoder-step"]),
            ("sr-step", ["sr-step"])]
    return out


def selects(name, line):
    return line.startswith(name) and (len(line) == len(name) or line[len(name)] == "-")


# ---- one benchmark (child process) -------------------------------------------

def reinit(model):
    """The weights of bench/models.c's rule: uniform with the variance of
    N(0, 1/fan_in), norm gains 1, biases 0, learned vectors 0.02."""
    import torch
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 0:
                continue
            if p.ndim == 1:
                if name.endswith("weight"):
                    p.fill_(1.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    p.uniform_(-0.02 * 3 ** 0.5, 0.02 * 3 ** 0.5)
                continue
            fan = p.shape[0] if name.endswith("text_projection") or name.endswith("visual.proj") \
                else math.prod(p.shape[1:])
            a = (3.0 / fan) ** 0.5
            p.uniform_(-a, a)
    return model.eval()


def measure(fn, runs, max_time):
    fn()  # warm-up
    times, spent = [], 0.0
    while len(times) < runs:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
        if len(times) >= 3 and spent > max_time:
            break
    times.sort()
    n = len(times)
    return times[n // 2] if n % 2 else 0.5 * (times[n // 2 - 1] + times[n // 2])


def emit(name, seconds):
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print("torch-%s seconds=%.4g peak_rss_mb=%.0f" % (name, seconds, rss), flush=True)


def run_one(entry, a):
    import torch
    torch.set_grad_enabled(False)
    torch.set_num_threads(1 if entry.endswith("-1") else a.threads)
    g = torch.Generator().manual_seed(12345)

    def rand(*shape):
        return torch.rand(*shape, generator=g) * 2 - 1

    if entry.startswith("sgemm"):
        n = torch.get_num_threads()
        if entry.startswith("sgemm-square"):
            s = 512 if a.quick else 2048
            A, B = rand(s, s), rand(s, s)
            emit("sgemm-square-t%d" % n, measure(lambda: torch.mm(A, B), a.runs, a.max_time))
        else:  # the prior's mlp.c_fc on 2 x 81 tokens
            m, k = (154, 256) if a.quick else (162, 2048)
            x, w, b = rand(m, k), rand(4 * k, k), rand(4 * k)
            emit("sgemm-xf-t%d" % n, measure(lambda: torch.nn.functional.linear(x, w, b), a.runs, a.max_time))
        return

    if entry.startswith("clip"):
        from unclip_train.clip import CLIP as ClipModel
        cfg = dict(CLIP[a.quick])
        if entry == "clip-text":  # the other tower is a token one
            cfg.update(vision_layers=1, vision_width=64, image_resolution=cfg["vision_patch_size"])
            m = reinit(ClipModel(cfg))
            T, V = cfg["context_length"], cfg["vocab_size"]
            tok = torch.zeros(2, T, dtype=torch.long)
            tok[0, 0], tok[0, 1:T - 1], tok[0, T - 1] = V - 2, torch.randint(0, V - 2, (T - 2,), generator=g), V - 1
            tok[1, 0], tok[1, 1] = V - 2, V - 1
            emit("clip-text", measure(lambda: m.encode_text_full(tok), a.runs, a.max_time))
        else:
            cfg.update(transformer_layers=1, transformer_width=64, transformer_heads=1, vocab_size=1)
            m = reinit(ClipModel(cfg))
            R = cfg["image_resolution"]
            px = rand(1, 3, R, R)
            emit("clip-image", measure(lambda: m.encode_image(px), a.runs, a.max_time))
        return

    if entry == "prior":
        from unclip_train.prior import PriorDiffusionModel
        hp = PRIOR[a.quick]
        m = reinit(PriorDiffusionModel({"model": {"hparams": dict(hp)}}))
        D, T = hp["clip_dim"], hp["text_ctx"]
        x, t = rand(2, D), torch.tensor([500, 500])
        emb, enc = rand(2, D), rand(2, T, D)
        mask = torch.zeros(2, T, dtype=torch.bool)
        mask[0], mask[1, :2] = True, True  # a full prompt and the empty one
        s = measure(lambda: m.guided(x, t, emb, enc, mask, 4.0), a.runs, a.max_time)
        emit("prior-step", s)  # upstream recomputes the text at every step
        emit("prior-forward-full", s)
        return

    if entry == "decoder-step":
        from unclip_train.unet import Text2ImProgressiveModel
        hp = DECODER[a.quick]
        m = reinit(Text2ImProgressiveModel({"model": {"hparams": dict(hp)}}))
        S, D, T = hp["image_size"], hp["clip_dim"], hp["text_ctx"]
        x, t = rand(2, 3, S, S), torch.tensor([500, 500])
        feat, seq = rand(2, D), rand(2, T, D)
        mask = torch.zeros(2, T, dtype=torch.bool)
        mask[0], mask[1, :2] = True, True
        y = torch.cat([rand(1, D), m.model.cf_param[None]])
        emit("decoder-step", measure(lambda: m.guided(x, t, feat, seq, mask, y, 8.0), a.runs, a.max_time))
        return

    if entry == "sr-step":  # one model_first_steps forward at the output size
        from unclip_train.unet import sr_unet
        m = reinit(sr_unet(SR[a.quick]))
        S = 64 if a.quick else 256
        x, low, t = rand(1, 3, S, S), rand(1, 3, S, S), torch.tensor([500])
        emit("sr-step", measure(lambda: m(x, t, low), a.runs, a.max_time))
        return
    raise SystemExit("torch_bench: no benchmark %s" % entry)


# ---- driver ------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-time", type=float, default=60.0)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads <= 0:
        a.threads = os.cpu_count() or 1
    if a.one:
        run_one(a.one, a)
        return 0
    entries = line_names(a.threads)
    chosen = []
    for e, lines in entries:
        if not a.names or any(selects(n, l) for n in a.names for l in lines):
            chosen.append(e)
    for n in a.names:
        if not any(selects(n, l) for _, lines in entries for l in lines):
            print("torch_bench: no benchmark named '%s'" % n, file=sys.stderr)
            return 2
    failed = 0
    for e in chosen:
        cmd = [sys.executable, os.path.abspath(__file__), "--one", e, "--threads", str(a.threads),
               "--runs", str(a.runs), "--max-time", str(a.max_time)] + (["--quick"] if a.quick else [])
        rc = subprocess.call(cmd)
        if rc:
            print("torch_bench: %s failed (status %d)" % (e, rc), file=sys.stderr)
            failed = 1
    return failed


if __name__ == "__main__":
    sys.exit(main())
