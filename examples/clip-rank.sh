#!/usr/bin/env bash
# clip-rank.sh - CLIP as an instrument: classify pictures among labels, find
# the picture for a caption, and rerank generated candidates (DALL-E 2
# paper: several decoder samples, the one CLIP scores highest kept).
#
#   examples/clip-rank.sh ["PROMPT" [CANDIDATES [OUT.png [SEED]]]]
#
# 1. renders four scenes and classifies them among every single-object and
#    count caption of the shapes world (scripts/shapes-captions.sh);
# 2. finds, among the same four, the picture for "two blue squares";
# 3. draws CANDIDATES (default 8) pictures for PROMPT (default "a red circle
#    above a blue square"), prints each candidate's score and rank, and
#    upscales the best one to OUT.png (default clip-rank-best.png).
set -euo pipefail
prompt=${1:-a red circle above a blue square}
n=${2:-8}
out=${3:-clip-rank-best.png}
seed=${4:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$root/bin}

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "== labels for four rendered scenes (top 2 of 108 single-object and count captions)"
"$BIN/shapes-render" -s "$seed" -f record "a small red circle" "a big blue square" "two blue squares" \
    "a yellow triangle" > "$dir/scenes.rec"
{ sh "$root/scripts/shapes-captions.sh" single; sh "$root/scripts/shapes-captions.sh" count; } |
    "$BIN/clip-encode" > "$dir/labels.rec" # a label bank
"$BIN/clip-rank" -T "$dir/labels.rec" --top 2 "$dir/scenes.rec"

echo "== the picture for \"two blue squares\""
"$BIN/clip-rank" --by-text --top 1 -p "two blue squares" "$dir/scenes.rec"

echo "== $n candidates for \"$prompt\", ranked by CLIP"
"$BIN/clip-encode" "$prompt" | "$BIN/prior-sample" -s "$seed" |
    "$BIN/decoder-diffuse" -q -s "$seed" -n "$n" --best-of 1 -f record > "$dir/cands.rec"
"$BIN/clip-rank" "$dir/cands.rec"
"$BIN/clip-rank" --top 1 -f record "$dir/cands.rec" | "$BIN/upsample" -q -s "$seed" > "$out"
echo "best candidate upscaled to $out"
