#!/usr/bin/env bash
# batch-parallel.sh - many prompts at once, one pipeline per prompt, run in
# parallel with GNU parallel (xargs -P when parallel is not installed).
#
#   examples/batch-parallel.sh PROMPTS.txt [OUT-DIR [JOBS]]
#
# PROMPTS.txt holds one prompt a line; blank lines are skipped. The prompt
# on line n is drawn with seed n and written to OUT-DIR/n.png (default
# out/); every PNG records its prompt and seed. Each pipeline runs its
# stages with one thread (-t 1), so JOBS pipelines (default: the number of
# cores) share the machine without oversubscribing it; the results do not
# depend on JOBS.
set -euo pipefail
prompts=${1:?usage: batch-parallel.sh PROMPTS.txt [OUT-DIR [JOBS]]}
outdir=${2:-out}
jobs=${3:-$(nproc)}
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/bin}
export BIN outdir
mkdir -p "$outdir"

# One prompt: $1 = line number (the seed and the file name), $2 = prompt.
one() {
    set -o pipefail
    local n=$1 prompt=$2 tmp="$outdir/$1.png.tmp"
    [ -n "${prompt//[[:space:]]/}" ] || return 0 # a blank line is no prompt (as clip-encode reads stdin)
    if "$BIN/clip-encode" -t 1 "$prompt" |
        "$BIN/prior-sample" -t 1 -s "$n" |
        "$BIN/decoder-diffuse" -t 1 -s "$n" |
        "$BIN/upsample" -t 1 -s "$n" > "$tmp"; then
        mv "$tmp" "$outdir/$n.png"
    else
        rm -f "$tmp"
        echo "batch-parallel: prompt $n failed: $prompt" >&2
        return 1
    fi
}
export -f one

if command -v parallel > /dev/null; then
    # {#} is the job number (= line number), {} the prompt, quoted by parallel
    parallel --will-cite -j "$jobs" --halt soon,fail=1 one '{#}' '{}' :::: "$prompts"
else
    # "n:prompt" lines, split again inside (single quotes: expanded by bash -c)
    # shellcheck disable=SC2016
    grep -n '' "$prompts" | tr '\n' '\0' |
        xargs -0 -P "$jobs" -I{} bash -c 'line=$1; one "${line%%:*}" "${line#*:}"' _ {}
fi
ls "$outdir"
