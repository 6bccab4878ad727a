#!/bin/sh
# bf16.sh - golden cases run with BF16 weights: each decoder case's model
# converted by `unclip-convert --bf16` (the weights PyTorch's .bfloat16()
# gives), run by golden-check on both BF16 paths (vdpbf16ps where this CPU
# has AVX512_BF16, and the widening one, UNCLIP_BF16_WIDEN=1), against the
# case's F32 reference outputs.
#
# Tolerance: PyTorch's own BF16 run of the same case, the largest absolute
# error of its outputs (model_out and guided_out, the guided one 8x the
# model's) against the same F32 reference, as train/bf16_tolerance.py
# measures it (torch 1.13, torch.autocast("cpu", dtype=torch.bfloat16):
# BF16 products on BF16-rounded weights and activations, F32 elsewhere):
#   karlo/decoder-forward     0.243 (reference outputs up to 12.8)
#   karlo/decoder-forward-32  0.513 (up to 15.5; reaches the Winograd path)
# unclip's BF16 run must be no further from the F32 reference than
# PyTorch's (atol = that error, rtol 0). Measured when this test was
# written: 0.128 / 0.315 with vdpbf16ps, 0.087 / 0.179 widening.
. tests/shell/lib.sh
GC=$BIN/golden-check
for entry in decoder-forward:0.243 decoder-forward-32:0.513; do
    c=${entry%%:*} tol=${entry#*:}
    mkdir -p "$tmp/g/karlo"
    rm -rf "$tmp/g/karlo/$c"
    cp -r "$G/karlo/$c" "$tmp/g/karlo/$c"
    /usr/bin/python3 - "$tmp/g/karlo/$c/case.json" "$tmp/$c.cfg" "$tol" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
json.dump(c["config"], open(sys.argv[2], "w"))
c["tolerance"] = {"atol": float(sys.argv[3]), "rtol": 0.0}
json.dump(c, open(sys.argv[1], "w"))
PY
    "$BIN/unclip-convert" -q --bf16 --config "$tmp/$c.cfg" "$G/karlo/$c/model.safetensors" \
        "$tmp/g/karlo/$c/model.safetensors" || fail "$c: unclip-convert --bf16 failed"
done
"$GC" "$tmp/g" > "$tmp/native.txt" || { cat "$tmp/native.txt" >&2; fail "BF16 golden cases (vdpbf16ps or widening by CPU)"; }
UNCLIP_BF16_WIDEN=1 "$GC" "$tmp/g" > "$tmp/widen.txt" || { cat "$tmp/widen.txt" >&2; fail "BF16 golden cases, widening path"; }
[ "$(grep -c '^PASS' "$tmp/native.txt")" -eq 2 ] && [ "$(grep -c '^PASS' "$tmp/widen.txt")" -eq 2 ] ||
    fail "expected 2 BF16 cases to pass on each path"
echo "bf16.sh: the decoder golden cases pass with BF16 weights within PyTorch's BF16 error (both paths)"
