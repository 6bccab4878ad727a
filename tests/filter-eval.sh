#!/bin/sh
# filter-eval.sh [DIR] - how well a clip-filter policy blocks what it
# should, at each of the three points of the default model's pipeline.
#
# N captions drawn from the grammar (shapes-render --random N --seed SEED)
# go through clip-encode, prior-sample, decoder-diffuse and upsample at
# default settings (the same commands as `make eval`); a caption, and the
# picture drawn from it, is labelled blocked when the caption matches
# PATTERN (default: triangle). clip-filter --calibrate then scores the text
# records (text point), the prior's records (image embedding) and the
# upsampled pictures (the picture) with POLICY, and prints per point the
# counts and recall and precision of the policy's blocking rules, and the
# picture point's errors with what shapes-eval says of each picture (the
# label comes from the caption; the picture may not hold it). The stage itself is then run at
# each point and must block exactly as many records as the calibration says.
# Exits 1 when recall or precision is below MIN (default 0.95) at a point.
#
#   DIR      work folder (default build/eval-filter); the pipeline's outputs
#            stay there per seed and are reused when present (remove them
#            to draw again)
# Environment: BIN (default bin), SEED (default 1; calibrate on another),
# N (default 200), POLICY (default examples/policies/no-triangles.txt),
# PATTERN (default triangle), MIN (default 0.95), CLIP (-m for clip-filter).
# `make eval-filter` runs it; the pipeline takes about 20 minutes on 2 cores.
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
SEED=${SEED:-1}
N=${N:-200}
POLICY=${POLICY:-examples/policies/no-triangles.txt}
PATTERN=${PATTERN:-triangle}
MIN=${MIN:-0.95}
DIR=${1:-build/eval-filter}
D=$DIR/seed$SEED-n$N
fail() {
    echo "filter-eval.sh: $*" >&2
    exit 1
}
for t in shapes-render clip-encode prior-sample decoder-diffuse upsample shapes-eval clip-filter rec-dump; do
    [ -x "$BIN/$t" ] || fail "$BIN/$t missing (make first)"
done
mkdir -p "$D"

# the pipeline, each output written under a temporary name and kept
step() { # OUT CMD...: run CMD > OUT unless OUT exists
    out=$1
    shift
    [ -s "$out" ] && return 0
    echo "filter-eval: $out" >&2
    "$@" > "$out.tmp" || {
        rm -f "$out.tmp"
        fail "$* failed"
    }
    mv "$out.tmp" "$out"
}
step "$D/captions.txt" "$BIN/shapes-render" --random "$N" --seed "$SEED" --captions-only
step "$D/text.rec" sh -c "'$BIN/clip-encode' < '$D/captions.txt'"
step "$D/prior.rec" "$BIN/prior-sample" "$D/text.rec"
step "$D/decoder.rec" "$BIN/decoder-diffuse" -f record "$D/prior.rec"
step "$D/images.rec" "$BIN/upsample" -f record "$D/decoder.rec"
# a line per picture, "INPUT: record I<TAB>match|mismatch<TAB>CAPTION...", in order
step "$D/judge.txt" sh -c "'$BIN/shapes-eval' -v '$D/images.rec' | grep '	'"

awk -v p="$PATTERN" '{ print ($0 ~ p ? "blocked" : "allowed"), $0 }' "$D/captions.txt" > "$D/labels.txt"

set -- ${CLIP:+-m "$CLIP"}
echo "policy $POLICY, seed $SEED, $N captions, blocked: captions matching '$PATTERN'"
printf '%-22s %4s %4s %4s %4s %7s %9s\n' point tp fp fn tn recall precision
bad=0
row() { # NAME CALIBRATION-OUTPUT
    line=$(grep '^policy at ' "$2") || fail "$1: no policy line in $2"
    set -- "$1" $(echo "$line" | sed 's/.*: tp \([0-9]*\) fp \([0-9]*\) fn \([0-9]*\) tn \([0-9]*\).*/\1 \2 \3 \4/')
    awk -v n="$1" -v tp="$2" -v fp="$3" -v fn="$4" -v tn="$5" -v min="$MIN" 'BEGIN {
        r = tp + fn ? tp / (tp + fn) : 1; p = tp + fp ? tp / (tp + fp) : 1
        printf "%-22s %4d %4d %4d %4d %7.3f %9.3f\n", n, tp, fp, fn, tn, r, p
        exit (r < min || p < min) }' || bad=1
}
for pt in text emb image; do
    case $pt in
        text) in=$D/text.rec ;;
        emb) in=$D/prior.rec ;;
        image) in=$D/images.rec ;;
    esac
    "$BIN/clip-filter" "$@" -q -p "$POLICY" --at "$pt" --calibrate "$D/labels.txt" "$in" > "$D/cal-$pt.txt" ||
        fail "clip-filter --calibrate at $pt failed"
    row "$pt" "$D/cal-$pt.txt"
    # the stage: as many records blocked (dropped or blanked) as counted
    st=0
    "$BIN/clip-filter" "$@" -q -p "$POLICY" --at "$pt" -f record "$in" > "$D/out-$pt.rec" || st=$?
    [ "$st" -eq 0 ] || [ "$st" -eq 3 ] || fail "clip-filter at $pt exited $st"
    out=$("$BIN/rec-dump" "$D/out-$pt.rec" | grep -c '"verdict":"\(pass\|tag\)"' || true)
    blocked=$(sed 's/.*: tp \([0-9]*\) fp \([0-9]*\) .*/\1 \2/' "$D/cal-$pt.txt" | tail -1 | awk '{ print $1 + $2 }')
    [ $((N - out)) -eq "$blocked" ] || fail "$pt: the stage blocked $((N - out)), the calibration counts $blocked"
    [ "$st" -eq $([ "$blocked" -gt 0 ] && echo 3 || echo 0) ] || fail "$pt: exit status $st with $blocked blocked"
done
# the picture point's errors, each with the judge's verdict on the picture
"$BIN/clip-filter" "$@" -v -p "$POLICY" --at image --calibrate "$D/labels.txt" "$D/images.rec" 2>&1 > /dev/null |
    sed -n 's/.*: \(false positive\|missed\): item \([0-9]*\) .*/\2 \1/p' > "$D/miss-image.txt"
while read -r i what; do
    printf '  picture %s, %s: judged %s\n' "$i" "$what" "$(sed -n "${i}p" "$D/judge.txt" | cut -f2- | tr '\t' ' ')"
done < "$D/miss-image.txt"
nr=$(grep -c "$(printf '\tmatch\t')" "$D/judge.txt" || true)
echo "pictures judged right by shapes-eval: $nr of $N"
[ "$bad" -eq 0 ] || fail "recall or precision below $MIN"
echo "filter-eval: ok"
