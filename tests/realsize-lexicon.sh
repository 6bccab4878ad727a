#!/bin/sh
# realsize-lexicon.sh - clip-lexicon at the real size: a ViT-L/14 CLIP with
# random weights (tests/convert/mkinputs.py real clip, as tests/realsize.sh
# makes it), converted to F16, ranks the whole 49 408-token vocabulary for
# two words; the first query encodes every token and writes the cache, the
# second reads it. Prints both wall times and their ratio, and fails unless
# the cache holds 49 408 records and the second query is at least 20 times
# faster. Not part of `make check` (0.9 GB of disk; the first query takes
# 10 to 40 minutes on 2 cores).
#
#   tests/realsize-lexicon.sh [DIR]     (default $TMPDIR/unclip-lexicon)
#
# Environment: BIN (default bin), PYTHON (with numpy), KEEP=1 keeps DIR.
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
DIR=${1:-${TMPDIR:-/tmp}/unclip-lexicon}
fail() {
    echo "realsize-lexicon.sh: FAIL: $*" >&2
    exit 1
}
PY=
for p in ${PYTHON:-} /usr/bin/python3 python3; do
    if "$p" -c 'import numpy' 2> /dev/null; then PY=$p && break; fi
done
[ -n "$PY" ] || fail "needs Python 3 with numpy (Debian: python3-numpy)"
mkdir -p "$DIR"
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$DIR"' EXIT
m=$DIR/clip.safetensors
if [ ! -s "$m" ]; then
    "$PY" tests/convert/mkinputs.py real clip "$DIR/orig"
    PATH=$(dirname "$PY"):$PATH "$BIN/unclip-convert" -q --f16 "$DIR/orig/ViT-L-14.pt" "$m"
    rm -rf "$DIR/orig"
fi
rm -f "$DIR/vocab.rec"
now() { date +%s.%N; }
t0=$(now)
"$BIN/clip-lexicon" -v -m "$m" --cache "$DIR/vocab.rec" -k 10 "Apoploe vesrreaitais" avflugzereo > "$DIR/q1.tsv"
t1=$(now)
"$BIN/clip-lexicon" -v -m "$m" --cache "$DIR/vocab.rec" -k 10 "Apoploe vesrreaitais" avflugzereo > "$DIR/q2.tsv"
t2=$(now)
cmp -s "$DIR/q1.tsv" "$DIR/q2.tsv" || fail "the cached answer differs"
n=$("$BIN/rec-dump" --fields "$DIR/vocab.rec" | wc -l)
[ "$n" -eq 49408 ] || fail "the cache holds $n records, not 49408"
cat "$DIR/q1.tsv"
awk -v a="$t0" -v b="$t1" -v c="$t2" 'BEGIN {
    printf "first query %.1f s (encodes 49408 tokens), second %.2f s (reads the cache): %.0fx\n", b - a, c - b, (b - a) / (c - b)
    exit !((b - a) >= 20 * (c - b)) }' || fail "the cache is not 20 times faster"
