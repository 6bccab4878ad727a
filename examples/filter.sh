#!/usr/bin/env bash
# filter.sh - a content filter before and after drawing: clip-filter on the
# prompt's text embedding, on the prior's image embedding and on the
# picture (the DALL-E 2 system card's prompt and output filters, with a
# policy anyone can read).
#
#   examples/filter.sh "PROMPT" [OUT.png [POLICY]]
#
# POLICY defaults to examples/policies/no-triangles.txt (the default
# model): try "a red circle above a blue square" (drawn) and "a small green
# triangle" (stopped at the prompt). To see the picture point at work, give
# a prompt that passes the text point and a policy whose only rule is at
# image= (the verdict is in the PNG's "filter" text chunk). Exit status:
# 0 drawn, 3 blocked (the reason on standard error).
set -euo pipefail
usage='usage: filter.sh "PROMPT" [OUT.png [POLICY]]'
prompt=${1:?$usage}
out=${2:-filtered.png}
here=$(cd "$(dirname "$0")" && pwd)
policy=${3:-$here/policies/no-triangles.txt}
BIN=${BIN:-$here/../bin}

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# the prompt, then the image embedding: a blocked record is dropped, so the
# stream after it is empty and the next stage fails; keep each stage's status
set +e
"$BIN/clip-encode" "$prompt" | "$BIN/clip-filter" -p "$policy" > "$dir/text.rec"
st=$?
set -e
[ "$st" -eq 0 ] || { echo "filter.sh: blocked at the prompt" >&2; exit "$st"; }
"$BIN/prior-sample" "$dir/text.rec" > "$dir/prior.rec"
set +e
"$BIN/clip-filter" -p "$policy" "$dir/prior.rec" > "$dir/emb.rec"
st=$?
set -e
[ "$st" -eq 0 ] || { echo "filter.sh: blocked at the image embedding" >&2; exit "$st"; }
# the picture: blanked pictures are still written, black, with the reason
set +e
"$BIN/decoder-diffuse" "$dir/emb.rec" | "$BIN/clip-filter" -p "$policy" | "$BIN/upsample" > "$dir/out.png"
st=("${PIPESTATUS[@]}")
set -e
[ "${st[0]}" -eq 0 ] && [ "${st[2]}" -eq 0 ] || exit 1
mv "$dir/out.png" "$out"
[ "${st[1]}" -eq 0 ] || { echo "filter.sh: the picture was blanked: $out" >&2; exit "${st[1]}"; }
echo "filter.sh: $out" >&2
