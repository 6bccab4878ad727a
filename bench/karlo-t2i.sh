#!/bin/sh
# karlo-t2i.sh - time a whole Karlo text-to-image at the tools' defaults
# (prior 25 steps, decoder 25, SR 7: Karlo's "fast" setting) on the
# real-size models with random weights that unclip-bench writes, one stage
# at a time, each stage's record kept for the next.
#
#   bench/karlo-t2i.sh [-t THREADS] [-p f32|bf16|both] [-D OPTIONS] [-U OPTIONS] [MODEL-DIR]
#
# MODEL-DIR: where unclip-bench keeps its real-size files (default
# $UNCLIP_BENCH_DIR, else $TMPDIR/unclip-bench; run `bin/unclip-bench
# model-open clip prior sr-step` once to create them, and
# `bin/unclip-bench decoder-step-bf16 sr-step-bf16` for the BF16 ones).
# -p: the precision of the decoder and SR files (their UNets read BF16
# weights in place; CLIP and the prior stay F32): f32 (default), bf16, or
# both one after the other. -D / -U: extra options for decoder-diffuse /
# upsample (e.g. another sampler), split at spaces. Prints one line per
# stage and a total per precision: NAME seconds=S peak_rss_mb=M, the
# BF16 run's names ending in -bf16. BIN selects the build (default bin/).
set -eu
threads=$(nproc) prec=f32 dopts= uopts=
while [ $# -gt 0 ]; do
    case $1 in
    -t) threads=$2; shift 2 ;;
    -p) prec=$2; shift 2 ;;
    -D) dopts=$2; shift 2 ;;
    -U) uopts=$2; shift 2 ;;
    -*) echo "karlo-t2i: unknown option $1" >&2; exit 2 ;;
    *) break ;;
    esac
done
case $prec in f32) precs=f32 ;; bf16) precs=bf16 ;; both) precs="f32 bf16" ;;
*) echo "karlo-t2i: -p must be f32, bf16 or both" >&2; exit 2 ;; esac
dir=${1:-${UNCLIP_BENCH_DIR:-${TMPDIR:-/tmp}/unclip-bench}}
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/bin}
need="clip prior"
for p in $precs; do
    case $p in f32) need="$need decoder sr" ;; bf16) need="$need decoder-bf16 sr-bf16" ;; esac
done
for m in $need; do
    [ -f "$dir/$m.safetensors" ] || { echo "karlo-t2i: no $dir/$m.safetensors (run unclip-bench first)" >&2; exit 1; }
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# stage NAME OUT CMD...: run CMD > OUT, print its time and peak RSS
stage() {
    name=$1 out=$2
    shift 2
    /usr/bin/time -f "%e %M" -o "$tmp/time" "$@" > "$out"
    read -r s kb < "$tmp/time"
    total=$(echo "$total + $s" | bc)
    echo "t2i-$name seconds=$s peak_rss_mb=$((kb / 1024))"
}
for p in $precs; do
    total=0
    sfx= file=
    [ "$p" = bf16 ] && sfx=-bf16 file=-bf16
    # shellcheck disable=SC2086 # -D and -U are split at spaces on purpose
    {
        stage clip-text$sfx "$tmp/text.rec" "$BIN/clip-encode" -q -t "$threads" -m "$dir/clip.safetensors" \
            "a red cube on top of a blue cube"
        stage prior$sfx "$tmp/prior.rec" "$BIN/prior-sample" -q -t "$threads" -m "$dir/prior.safetensors" "$tmp/text.rec"
        stage decoder$sfx "$tmp/decoder.rec" "$BIN/decoder-diffuse" -q -t "$threads" \
            -m "$dir/decoder$file.safetensors" -f record $dopts "$tmp/prior.rec"
        stage sr$sfx "$tmp/out.png" "$BIN/upsample" -q -t "$threads" -m "$dir/sr$file.safetensors" $uopts \
            "$tmp/decoder.rec"
    }
    shape=$("$BIN/rec-dump" "$tmp/out.png" | grep -o '"image": *{[^}]*"shape": *\[[0-9, ]*\]' | grep -o '\[[0-9, ]*\]' | tr -d ' ')
    [ -n "$shape" ] || { echo "karlo-t2i: the output has no picture" >&2; exit 1; }
    echo "t2i-total$sfx seconds=$total threads=$threads image=$shape"
done
