#!/usr/bin/env bash
# variations.sh - image variations (DALL-E 2 paper, section 3.1): new
# pictures that keep the content and style of a given one.
#
#   examples/variations.sh IN.png [COUNT [OUT-PREFIX]]
#
# clip-encode --image gives the picture's CLIP image embedding (with the
# empty prompt's text fields, as Karlo's image-to-image sampler uses); the
# prior is skipped; the decoder renders the same embedding with COUNT
# different seeds, so only what CLIP does not capture changes.
# Writes OUT-PREFIX-1.png ... OUT-PREFIX-COUNT.png (default prefix: variation).
set -euo pipefail
in=${1:?usage: variations.sh IN.png [COUNT [OUT-PREFIX]]}
count=${2:-4}
prefix=${3:-variation}
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/bin}

# Encode once; the record file is the cache for every variation.
emb=$(mktemp)
trap 'rm -f "$emb" "$prefix".tmp.$$' EXIT
"$BIN/clip-encode" --image "$in" > "$emb"
for i in $(seq 1 "$count"); do
    "$BIN/decoder-diffuse" -s "$i" "$emb" | "$BIN/upsample" -s "$i" > "$prefix.tmp.$$"
    mv "$prefix.tmp.$$" "$prefix-$i.png"
    echo "$prefix-$i.png" >&2
done
