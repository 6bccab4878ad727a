#!/bin/sh
# A picture reproduces from itself (issue 25), with the default model,
# whose CLIP file lists the words it knows (clip-encode warns about others):
# noise is data of the record, not its place in the stream, so a prompt
# draws the same picture alone or 4th in a batch; stages that write N
# records keep their indices apart; interpolation frames between one record
# and itself are the same picture, and between two records they move less
# than frames with fresh noise; every stage reads unclip PNGs; and 32
# pictures made in batches (prompts on stdin, -n at the prior and the
# decoder, upsampled ones, interpolation, text-diff and variation frames,
# DPM-Solver++ at the decoder and the upsampler, tiles that only touch)
# are each redrawn byte for byte by unclip-replay from the PNG alone.
. tests/shell/lib.sh
fnv() { "$BIN/rec-dump" "$@" | sed 's/.*"image":{[^}]*"fnv1a":"\([0-9a-f]*\)".*/\1/'; }

# the default model says which words it knows, and clip-encode warns
expect 0 'prompt 1: 1 word this model never saw (dog)' "$BIN/clip-encode" "a dog"
expect 0 'prompt 1: 17 tokens, truncated to the context of 16' "$BIN/clip-encode" \
    "a red circle above a blue square to the left of a big green triangle"
"$BIN/clip-encode" "a red circle above a blue square" 2> "$tmp/err" > /dev/null
[ ! -s "$tmp/err" ] || fail "clip-encode warned about a caption of the grammar: $(cat "$tmp/err")"
"$BIN/clip-encode" -q "a dog" 2> "$tmp/err" > /dev/null
[ ! -s "$tmp/err" ] || fail "clip-encode -q still warned"

# a batch of prompts on stdin; the 4th is the README caption
printf 'a red circle\na blue square\nthree green triangles\na red circle above a blue square\n' |
    "$BIN/clip-encode" > "$tmp/batch.rec"
"$BIN/prior-sample" "$tmp/batch.rec" | "$BIN/decoder-diffuse" -o "$tmp/batch-%d.png"
"$BIN/clip-encode" "a red circle above a blue square" | "$BIN/prior-sample" | "$BIN/decoder-diffuse" > "$tmp/alone.png"
[ "$(fnv "$tmp/batch-3.png")" = "$(fnv "$tmp/alone.png")" ] || fail "the 4th prompt of a batch draws another picture than alone"

# a prompt's numbers do not depend on the prompts beside it (11 at once: past
# the row count where the products change kernels)
for i in 1 2 3 4 5 6 7 8 9 10 11; do echo "a red circle above a blue square"; done | "$BIN/clip-encode" |
    "$BIN/rec-dump" | python3 -c 'import json, sys; print("\n".join(sorted({json.loads(l)["text_emb"]["fnv1a"] for l in sys.stdin})))' > "$tmp/e11"
"$BIN/clip-encode" "a red circle above a blue square" | "$BIN/rec-dump" |
    python3 -c 'import json, sys; print(json.loads(sys.stdin.readline())["text_emb"]["fnv1a"])' > "$tmp/e1"
cmp -s "$tmp/e11" "$tmp/e1" || fail "clip-encode: a prompt in a batch of 11 gets another embedding than alone"

# -n at the prior and at the decoder: six pictures, each stage's index its own
"$BIN/clip-encode" "two purple triangles" | "$BIN/prior-sample" -n 3 | "$BIN/decoder-diffuse" -n 2 --best-of 1 -o "$tmp/n-%d.png"
for i in 0 1 2 3 4 5; do
    "$BIN/rec-dump" "$tmp/n-$i.png" | sed 's/.*"prior":{[^}]*"index":\([0-9]*\)}.*"decoder":{[^}]*"index":\([0-9]*\)}.*/\1 \2/'
done > "$tmp/idx"
[ "$(sort -u "$tmp/idx" | wc -l)" -eq 6 ] || { cat "$tmp/idx" >&2; fail "prior -n 3 | decoder -n 2: the indices do not tell the six pictures apart"; }
[ "$(for i in 0 1 2 3 4 5; do fnv "$tmp/n-$i.png"; done | sort -u | wc -l)" -eq 6 ] || fail "prior -n 3 | decoder -n 2: not six pictures"

# every stage reads an unclip PNG as the record it carries
"$BIN/decoder-diffuse" -f record "$tmp/alone.png" | "$BIN/rec-dump" --fields | grep -q '"image"' ||
    fail "decoder-diffuse does not read an unclip PNG"
"$BIN/prior-sample" -f record "$tmp/alone.png" 2> /dev/null && fail "prior-sample took an option it lacks"
"$BIN/prior-sample" "$tmp/alone.png" | "$BIN/rec-dump" --fields | grep -q '"image_emb"' ||
    fail "prior-sample does not read an unclip PNG"

# interpolation: between a record and itself, the same picture every frame
"$BIN/clip-encode" "a red square" | "$BIN/prior-sample" -s 1 > "$tmp/A.rec"
"$BIN/emb-interp" -n 4 "$tmp/A.rec" "$tmp/A.rec" | "$BIN/decoder-diffuse" -f record > "$tmp/same.rec"
[ "$(fnv "$tmp/same.rec" | sort -u | wc -l)" -eq 1 ] || fail "frames between a record and itself differ"
# between two records, frames share the noise: consecutive ones differ less
# (mean absolute pixel difference) than frames drawn with fresh noise
"$BIN/clip-encode" "a blue circle" | "$BIN/prior-sample" -s 1 > "$tmp/B.rec"
"$BIN/emb-interp" -n 5 "$tmp/A.rec" "$tmp/B.rec" | "$BIN/decoder-diffuse" --best-of 1 -f record > "$tmp/shared.rec"
"$BIN/emb-interp" -n 5 --fresh-noise "$tmp/A.rec" "$tmp/B.rec" | "$BIN/decoder-diffuse" --best-of 1 -f record > "$tmp/fresh.rec"
step() {
    "$BIN/rec-dump" --full "$1" | python3 -c '
import json, sys
px = [json.loads(l)["image"]["values"] for l in sys.stdin]
d = [sum(abs(a - b) for a, b in zip(p, q)) / len(p) for p, q in zip(px, px[1:])]
print("%.3f" % (sum(d) / len(d)))'
}
s=$(step "$tmp/shared.rec") f=$(step "$tmp/fresh.rec")
awk -v s="$s" -v f="$f" 'BEGIN { exit !(s < f) }' ||
    fail "interpolation frames with shared noise move $s a step, fresh noise $f: not less"
echo "replay.sh: frames move $s per step with shared noise, $f with fresh noise"

# 31 pictures, each redrawn from its PNG alone
"$BIN/emb-interp" -n 5 "$tmp/A.rec" "$tmp/B.rec" | "$BIN/decoder-diffuse" -o "$tmp/interp-%d.png"
"$BIN/clip-encode" "a red square" "a blue square" > "$tmp/cur-tgt.rec"
"$BIN/clip-encode" "a blue square" > "$tmp/tgt.rec"
"$BIN/clip-encode" "a red square" > "$tmp/cur.rec"
"$BIN/emb-textdiff" -n 4 --max-theta 0.6 "$tmp/A.rec" "$tmp/cur.rec" "$tmp/tgt.rec" |
    "$BIN/decoder-diffuse" -o "$tmp/textdiff-%d.png"
"$BIN/clip-encode" --image "$tmp/alone.png" | "$BIN/decoder-diffuse" -n 3 -o "$tmp/variation-%d.png"
for i in 0 1 2 3; do "$BIN/upsample" "$tmp/batch-$i.png" > "$tmp/up-$i.png"; done
"$BIN/decoder-diffuse" -t 1 -S ddim10 --eta 0.5 "$tmp/A.rec" | "$BIN/upsample" -t 1 -S 3 -s 9 > "$tmp/t1.png"
"$BIN/decoder-diffuse" -f record --float "$tmp/B.rec" | "$BIN/upsample" > "$tmp/float.png"
"$BIN/upsample" --fast "$tmp/alone.png" > "$tmp/fast.png"
# the whole picture (--tile 0), other tiles than the model's default, and
# tiles that only touch: replay passes the record's tile (none: the whole
# picture) and overlap
"$BIN/upsample" --tile 0 "$tmp/alone.png" > "$tmp/whole.png"
"$BIN/upsample" --tile 32 "$tmp/alone.png" > "$tmp/tile32.png"
"$BIN/upsample" --overlap 0 "$tmp/alone.png" > "$tmp/touch.png"
cmp -s "$tmp/touch.png" "$tmp/up-3.png" && fail "upsample --overlap 0 draws the default picture"
"$BIN/unclip-replay" -v "$tmp/touch.png" 2>&1 > /dev/null | grep -q 'upsample .*--tile 64 --overlap 0' ||
    fail "unclip-replay does not pass the record's overlap 0"
"$BIN/unclip-replay" -v "$tmp/up-3.png" 2>&1 > /dev/null | grep -q 'upsample .*--tile 64 --overlap 32' ||
    fail "unclip-replay does not pass the record's overlap 32"
# DPM-Solver++ at both stages: the records name it, and replay redraws it
"$BIN/decoder-diffuse" -S 10 --sampler dpm++2m "$tmp/A.rec" | "$BIN/upsample" -S 5 --sampler dpm++2m > "$tmp/dpm.png"
"$BIN/rec-dump" "$tmp/dpm.png" | grep -q '"decoder":{"steps":"10","guidance":[0-9.]*,"sampler":"dpm++2m"' ||
    fail "params.decoder does not name the dpm++2m sampler"
"$BIN/rec-dump" "$tmp/dpm.png" | grep -q '"sr":{"steps":"5","sampler":"dpm++2m"' ||
    fail "params.sr does not name the dpm++2m sampler"
"$BIN/rec-dump" "$tmp/up-0.png" | grep -q '"sr":{[^}]*"sampler"' && fail "params.sr names the default sampler"
n=0
for f in "$tmp"/batch-?.png "$tmp"/n-?.png "$tmp"/interp-?.png "$tmp"/textdiff-?.png "$tmp"/variation-?.png \
    "$tmp"/up-?.png "$tmp/alone.png" "$tmp/t1.png" "$tmp/float.png" "$tmp/fast.png" "$tmp/dpm.png" \
    "$tmp/whole.png" "$tmp/tile32.png" "$tmp/touch.png"; do
    "$BIN/unclip-replay" "$f" > "$tmp/again.png" 2> "$tmp/err" || { cat "$tmp/err" >&2; fail "unclip-replay ${f##*/} failed"; }
    cmp -s "$tmp/again.png" "$f" || fail "unclip-replay ${f##*/}: not the same PNG bytes"
    n=$((n + 1))
done
[ "$n" -ge 34 ] || fail "only $n pictures replayed"

# a stage records its kernel level, and replay runs the stage at it
UNCLIP_CPU=avx2 "$BIN/decoder-diffuse" "$tmp/A.rec" > "$tmp/avx2.png"
"$BIN/rec-dump" "$tmp/avx2.png" | grep -q '"decoder":{[^}]*"cpu":"avx2"' || fail "params.decoder.cpu is not avx2"
"$BIN/unclip-replay" -v "$tmp/avx2.png" 2> "$tmp/err" > "$tmp/again.png" || { cat "$tmp/err" >&2; fail "replay at avx2"; }
grep -q "UNCLIP_CPU=avx2 .*decoder-diffuse" "$tmp/err" || { cat "$tmp/err" >&2; fail "replay ran the decoder at another level"; }
cmp -s "$tmp/again.png" "$tmp/avx2.png" || fail "the picture drawn at avx2 replays differently"

# replay refuses what it cannot redraw, and another model
"$BIN/shapes-render" "a red circle" > "$tmp/render.png"
expect 1 'params.decoder: missing' "$BIN/unclip-replay" "$tmp/render.png"
"$BIN/rec-dump" "$tmp/alone.png" > /dev/null
MK=${MKMODEL:-}
if [ -n "$MK" ]; then
    "$MK" decoder "$tmp/dec.st" $G/karlo/decoder-sample
    expect 1 'the replayed stages failed' "$BIN/unclip-replay" --decoder "$tmp/dec.st" "$tmp/alone.png"
fi
echo "replay.sh: $n pictures redrawn byte for byte"
