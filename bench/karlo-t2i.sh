#!/bin/sh
# karlo-t2i.sh - time a whole Karlo text-to-image at the tools' defaults
# (prior 25 steps, decoder 25, SR 7: Karlo's "fast" setting) on the
# real-size models with random weights that unclip-bench writes, one stage
# at a time, each stage's record kept for the next.
#
#   bench/karlo-t2i.sh [-t THREADS] [MODEL-DIR]
#
# MODEL-DIR: where unclip-bench keeps its real-size files (default
# $UNCLIP_BENCH_DIR, else $TMPDIR/unclip-bench; run `bin/unclip-bench
# model-open clip` once to create them). Prints one line per stage and the
# total: NAME seconds=S peak_rss_mb=M. BIN selects the build (default bin/).
set -eu
threads=$(nproc)
if [ "${1:-}" = -t ]; then threads=$2; shift 2; fi
dir=${1:-${UNCLIP_BENCH_DIR:-${TMPDIR:-/tmp}/unclip-bench}}
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/bin}
for m in clip prior decoder sr; do
    [ -f "$dir/$m.safetensors" ] || { echo "karlo-t2i: no $dir/$m.safetensors (run unclip-bench first)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
total=0
# stage NAME OUT CMD...: run CMD > OUT, print its time and peak RSS
stage() {
    name=$1 out=$2
    shift 2
    /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" > "$out"
    read -r s kb < "$tmp/time"
    total=$(echo "$total + $s" | bc)
    echo "t2i-$name seconds=$s peak_rss_mb=$((kb / 1024))"
}
stage clip-text "$tmp/text.rec" "$BIN/clip-encode" -q -t "$threads" -m "$dir/clip.safetensors" "a red cube on top of a blue cube"
stage prior "$tmp/prior.rec" "$BIN/prior-sample" -q -t "$threads" -m "$dir/prior.safetensors" "$tmp/text.rec"
stage decoder "$tmp/decoder.rec" "$BIN/decoder-diffuse" -q -t "$threads" -m "$dir/decoder.safetensors" -f record "$tmp/prior.rec"
stage sr "$tmp/out.png" "$BIN/upsample" -q -t "$threads" -m "$dir/sr.safetensors" "$tmp/decoder.rec"
shape=$("$BIN/rec-dump" "$tmp/out.png" | grep -o '"image": *{[^}]*"shape": *\[[0-9, ]*\]' | grep -o '\[[0-9, ]*\]' | tr -d ' ')
[ -n "$shape" ] || { echo "karlo-t2i: the output has no picture" >&2; exit 1; }
echo "t2i-total seconds=$total threads=$threads image=$shape"
