#!/usr/bin/env bash
# interpolation.sh - blend two prompts through CLIP image-embedding space
# (DALL-E 2 paper, section 3.2).
#
#   examples/interpolation.sh PROMPT-A PROMPT-B [FRAMES [OUT-PREFIX [SEED]]]
#
# Each prompt goes through clip-encode and prior-sample to an image
# embedding; emb-interp writes FRAMES records whose image_emb turns from A's
# to B's along the great circle (slerp; add --lerp for a straight line),
# with A's text fields, seed and noise key, so decoder-diffuse and upsample
# render every frame with the same noise and only the embedding changes;
# upsample -o writes one PNG per frame: OUT-PREFIX-0.png ... (default
# prefix: frame).
set -euo pipefail
usage="usage: interpolation.sh PROMPT-A PROMPT-B [FRAMES [OUT-PREFIX [SEED]]]"
a=${1:?$usage}
b=${2:?$usage}
frames=${3:-5}
prefix=${4:-frame}
seed=${5:-0}
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/bin}

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# The two embeddings are cached as record files; rerun only the last line
# to try other frame counts or seeds.
"$BIN/clip-encode" "$a" | "$BIN/prior-sample" -s "$seed" > "$dir/a.rec"
"$BIN/clip-encode" "$b" | "$BIN/prior-sample" -s "$seed" > "$dir/b.rec"
"$BIN/emb-interp" --steps "$frames" "$dir/a.rec" "$dir/b.rec" |
    "$BIN/decoder-diffuse" -s "$seed" |
    "$BIN/upsample" -s "$seed" -o "$prefix-%d.png"
