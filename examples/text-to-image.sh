#!/usr/bin/env bash
# text-to-image.sh - the whole unCLIP pipeline: a prompt to a PNG.
#
#   examples/text-to-image.sh [PROMPT [OUT.png [SEED]]]
#
# clip-encode turns the prompt into CLIP text features (and those of the
# empty prompt, for classifier-free guidance); prior-sample draws a CLIP image
# embedding for them; decoder-diffuse renders that embedding as a small
# image (64x64 with Karlo, 32x32 with the default model); upsample makes
# it four times larger. The PNG carries the prompt, seed,
# steps, guidance and model ids in its text chunks (see it with rec-dump).
# The default models are found without -m (models/ beside bin/, or
# $UNCLIP_MODELS); BIN selects another build (default: bin/ of this tree).
set -euo pipefail
prompt=${1:-"a red circle above a blue square"}
out=${2:-out.png}
seed=${3:-0}
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/bin}

# Write to a temporary name and rename, so a failure leaves no half PNG.
tmp=$out.tmp.$$
trap 'rm -f "$tmp"' EXIT
"$BIN/clip-encode" "$prompt" |
    "$BIN/prior-sample" -s "$seed" |
    "$BIN/decoder-diffuse" -s "$seed" |
    "$BIN/upsample" -s "$seed" > "$tmp"
mv "$tmp" "$out"
echo "$out (provenance: $BIN/rec-dump $out)" >&2
