#!/usr/bin/env bash
# textdiff.sh - edit a picture with words (DALL-E 2 paper, section 3.3).
#
#   examples/textdiff.sh IN.png "CAPTION NOW" "CAPTION WANTED" [STEPS [MAX-THETA [OUT-PREFIX]]]
#
# The picture's CLIP image embedding is turned towards the direction from
# the first caption's text embedding to the second's, in STEPS records with
# theta from 0 (the picture's own embedding) to MAX-THETA (the paper uses
# 0.25 to 0.5); each is rendered with the same decoder seed and the
# picture's noise key (emb-textdiff keeps it), hence the same noise, so the
# series shows the edit growing. Writes OUT-PREFIX-0.png ... (default: textdiff).
set -euo pipefail
usage='usage: textdiff.sh IN.png "CAPTION NOW" "CAPTION WANTED" [STEPS [MAX-THETA [OUT-PREFIX]]]'
in=${1:?$usage}
now=${2:?$usage}
want=${3:?$usage}
steps=${4:-5}
max=${5:-0.5}
prefix=${6:-textdiff}
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/bin}

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$BIN/clip-encode" --image "$in" > "$dir/image.rec"
"$BIN/clip-encode" "$now" > "$dir/now.rec"
"$BIN/clip-encode" "$want" > "$dir/want.rec"
"$BIN/emb-textdiff" --steps "$steps" --max-theta "$max" "$dir/image.rec" "$dir/now.rec" "$dir/want.rec" |
    "$BIN/decoder-diffuse" -s 0 |
    "$BIN/upsample" -s 0 -o "$prefix-%d.png"
