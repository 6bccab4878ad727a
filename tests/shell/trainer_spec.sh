#!/bin/sh
# The trainer (train/, PyTorch) builds the modules whose state dicts become
# the shipped model files: for each shipped file's config, the names, shapes
# and storage types it exports are those unclip-spec lists. Skipped where
# PyTorch is not installed (Debian: python3-torch).
. tests/shell/lib.sh
TPY=
for p in ${PYTHON:-} /usr/bin/python3 python3; do
    if "$p" -c 'import torch, numpy' 2> /dev/null; then TPY=$p && break; fi
done
if [ -z "$TPY" ]; then
    echo "trainer_spec.sh: no python3-torch: the trainer's modules not checked against unclip-spec" >&2
    exit 0
fi
ls models/*.safetensors > /dev/null 2>&1 || fail "no shipped model files in models/"
"$TPY" -W ignore train/check_spec.py "$BIN/unclip-spec" models > "$tmp/out" 2>&1 || { cat "$tmp/out" >&2; fail "the trainer's modules differ from unclip-spec"; }
echo "trainer_spec.sh: $(grep -c 'as unclip-spec lists' "$tmp/out") stages: the trainer exports what unclip-spec lists"
