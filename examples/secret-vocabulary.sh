#!/usr/bin/env bash
# secret-vocabulary.sh - the "secret vocabulary" probe (clip-lexicon): a
# made-up word's BPE pieces, its nearest tokens in CLIP's text space, and
# what picture the prior draws for it, in words and as a PNG.
#
#   examples/secret-vocabulary.sh [WORD [OUT.png [SEED]]]
#
# On the default model (the shapes world) WORD defaults to "circed", glued
# from "circle" and "red"; its neighbours are listed among the whole
# 588-token vocabulary and among the grammar's words, and the picture the
# pipeline draws for it is written to OUT.png (default secret-WORD.png).
#
# With OpenAI's ViT-L/14 and Karlo's weights (converted with unclip-convert;
# NEEDS THE REAL WEIGHTS, not shipped), the mission's cases are:
#   clip-lexicon -m ViT-L-14.safetensors "Apoploe vesrreaitais" avflugzereo
#   clip-lexicon -m ViT-L-14.safetensors --prior --prior-model prior.safetensors avflugzereo
#   clip-encode -m ViT-L-14.safetensors "Apoploe vesrreaitais" | prior-sample -m prior.safetensors |
#       decoder-diffuse -m decoder.safetensors | upsample -m sr.safetensors > apoploe.png
# The first clip-lexicon run encodes all 49408 tokens once (cached; see
# clip-lexicon(1)); the pieces, ids and neighbours need only the CLIP file.
set -euo pipefail
word=${1:-circed}
out=${2:-secret-$word.png}
seed=${3:-1}
root=$(cd "$(dirname "$0")/.." && pwd)
BIN=${BIN:-$root/bin}

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "== $word: pieces and nearest tokens of the vocabulary (text), and of the prior's draw (prior)"
"$BIN/clip-lexicon" -k 5 --prior -s "$seed" "$word"
echo "== among the grammar's words"
printf '%s\n' red green blue yellow purple orange circle square triangle small big two three four \
    above below left right top > "$dir/words.txt"
"$BIN/clip-lexicon" -k 3 --prior -s "$seed" -L "$dir/words.txt" "$word" | grep -v '^piece'
"$BIN/clip-encode" "$word" | "$BIN/prior-sample" -s "$seed" | "$BIN/decoder-diffuse" -s "$seed" |
    "$BIN/upsample" -s "$seed" > "$out"
echo "== what the pipeline draws for \"$word\": $out"
