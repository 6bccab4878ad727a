#!/bin/sh
# portable.sh - one build runs on any x86-64-v3 CPU (issue 27). The tools
# are compiled for x86-64-v3 (AVX2, FMA, F16C, BMI2) and choose their
# AVX-512 kernels at run time (libcommon/nn/cpu.h), so:
# - under qemu-x86_64 emulating a Haswell (AVX2, no AVX-512: one AVX-512
#   instruction would end the tool with SIGILL), golden-check passes every
#   golden case, with the same numbers as UNCLIP_CPU=avx2 gives here (the
#   AVX-512 paths off, BLIS's Haswell kernels) on an AVX-512 CPU, and
#   clip-encode writes the same record;
# - every golden case and the kernels' unit tests pass with UNCLIP_CPU=avx2;
# - a CPU without AVX2 (qemu's Westmere) gets exit 1 and one line that
#   names what it lacks, not SIGILL;
# - UNCLIP_CPU other than avx2, avx512, avx512bf16 or native is a usage error.
# The emulated part needs qemu-user (make deps) and is left out of the
# sanitizer build (ASan's shadow memory does not map under qemu-user).
. tests/shell/lib.sh
GC=$BIN/golden-check

expect 2 "^clip-encode: UNCLIP_CPU: 'sse2' is not one of avx2, avx512, avx512bf16, native" \
    env UNCLIP_CPU=sse2 "$BIN/clip-encode" "a red circle"
UNCLIP_CPU=avx2 "$GC" --pending "$G/PENDING" "$G" > "$tmp/avx2.txt" ||
    { cat "$tmp/avx2.txt" >&2; fail "golden cases with UNCLIP_CPU=avx2"; }
UNCLIP_CPU=avx2 "$BIN/clip-encode" "a red circle above a blue square" > "$tmp/avx2.rec"
# the kernels' own unit tests, on the AVX2 paths
T=$(dirname "${MKMODEL:?}")
for t in test_ops test_winograd test_unet test_bf16; do
    UNCLIP_CPU=avx2 "$T/$t" > "$tmp/unit.txt" 2>&1 || { cat "$tmp/unit.txt" >&2; fail "$t with UNCLIP_CPU=avx2"; }
done

if nm "$BIN/clip-encode" | grep -q __asan_init; then
    echo "portable: sanitizer build, emulated runs left out"
    exit 0
fi
command -v qemu-x86_64 > /dev/null || fail "qemu-x86_64 not found (make deps installs qemu-user)"
# qemu warns about CPU features TCG lacks (pcid, x2apic...): not the tools' output
qemu() { qemu-x86_64 -cpu "$@" 2> "$tmp/qerr"; }

qemu Haswell-v4 "$GC" --pending "$G/PENDING" "$G" > "$tmp/haswell.txt" ||
    { cat "$tmp/haswell.txt" "$tmp/qerr" >&2; fail "golden cases on an emulated Haswell"; }
qemu Haswell-v4 "$BIN/clip-encode" "a red circle above a blue square" > "$tmp/haswell.rec" ||
    { cat "$tmp/qerr" >&2; fail "clip-encode on an emulated Haswell"; }
# the same cases, the same errors (the timings aside) and the same record,
# where the cap also gives BLIS its Haswell kernels: on an AVX-512 CPU (on
# an AVX2-only one BLIS keeps its own choice, Zen's blocking perhaps)
if grep -qw avx512f /proc/cpuinfo; then
    sed 's/ (.*//' "$tmp/avx2.txt" > "$tmp/a"
    sed 's/ (.*//' "$tmp/haswell.txt" > "$tmp/h"
    cmp -s "$tmp/a" "$tmp/h" || { diff "$tmp/a" "$tmp/h" >&2; fail "Haswell's golden numbers differ from UNCLIP_CPU=avx2's"; }
    cmp -s "$tmp/avx2.rec" "$tmp/haswell.rec" || fail "clip-encode on Haswell differs from UNCLIP_CPU=avx2"
fi

set +e
qemu Westmere "$BIN/clip-encode" "a red circle" > "$tmp/out"
st=$?
set -e
[ "$st" -eq 1 ] || { cat "$tmp/qerr" >&2; fail "clip-encode on a CPU without AVX2 exited $st, expected 1"; }
grep -q "^clip-encode: this CPU has no AVX2, which this build of unclip needs" "$tmp/qerr" ||
    { cat "$tmp/qerr" >&2; fail "clip-encode on a CPU without AVX2: no message naming AVX2"; }
[ ! -s "$tmp/out" ] || fail "clip-encode on a CPU without AVX2 wrote output"
echo "portable: ok ($(grep -c '^PASS' "$tmp/haswell.txt") golden cases on an emulated Haswell)"
