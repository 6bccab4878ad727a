#!/bin/sh
# clip-encode and prior-sample in real pipelines with small test models:
# the fields each stage writes, pass-through of everything else,
# determinism, record files as the cache, and clean failures on bad input.
. tests/shell/lib.sh
MKMODEL=${MKMODEL:?MKMODEL must name the test model maker}

"$MKMODEL" clip "$tmp/clip.st"
"$MKMODEL" prior "$tmp/prior.st" $G/karlo/prior-sample

# clip-encode: one record per prompt with every text field and the uncond map
"$BIN/clip-encode" -m "$tmp/clip.st" "a red cube on top of a blue cube" "two green circles" > "$tmp/a.rec"
"$BIN/rec-dump" "$tmp/a.rec" > "$tmp/a.json"
[ "$(wc -l < "$tmp/a.json")" -eq 2 ] || fail "clip-encode: expected 2 records"
for f in '"version":1' '"prompt":"a red cube on top of a blue cube"' '"tokens":{"dtype":"I32","shape":\[77\]' \
    '"token_mask":{"dtype":"U8","shape":\[77\]' '"text_emb":{"dtype":"F32","shape":\[32\]' \
    '"text_seq":{"dtype":"F32","shape":\[77,32\]' '"uncond":{' '"history":\['; do
    head -1 "$tmp/a.json" | grep -q "$f" || fail "clip-encode: record lacks $f"
done
"$BIN/rec-dump" --full "$tmp/a.rec" | head -1 | grep -q '"values":\[49406,320,736,11353,525,1253,539,320,1746,11353,49407,0,' ||
    fail "clip-encode: tokens differ from clip.tokenize"
# prompts from stdin lines give the same records as arguments
printf 'a red cube on top of a blue cube\ntwo green circles\n' | "$BIN/clip-encode" -m "$tmp/clip.st" > "$tmp/b.rec"
"$BIN/rec-dump" "$tmp/b.rec" | sed 's/"history".*//' > "$tmp/b.json"
sed 's/"history".*//' "$tmp/a.json" | cmp -s - "$tmp/b.json" || fail "stdin prompts differ from argument prompts"

# prior-sample: image_emb added, the text fields passed through unchanged
"$BIN/prior-sample" -m "$tmp/prior.st" -n 2 -s 5 "$tmp/a.rec" > "$tmp/p.rec"
"$BIN/rec-dump" "$tmp/p.rec" > "$tmp/p.json"
[ "$(wc -l < "$tmp/p.json")" -eq 4 ] || fail "prior-sample -n 2: expected 4 records"
grep -c '"image_emb":{"dtype":"F32","shape":\[32\]' "$tmp/p.json" | grep -qx 4 || fail "prior-sample: image_emb missing"
te_in=$(head -1 "$tmp/a.json" | grep -o '"text_seq":{[^}]*}')
te_out=$(head -1 "$tmp/p.json" | grep -o '"text_seq":{[^}]*}')
[ "$te_in" = "$te_out" ] || fail "prior-sample changed text_seq"
grep -q '"prior":{[^}]*"index":1}' "$tmp/p.json" || fail "prior-sample: no index field"
# same seed, same bytes; another seed, other bytes
"$BIN/prior-sample" -m "$tmp/prior.st" -n 2 -s 5 "$tmp/a.rec" | cmp -s - "$tmp/p.rec" || fail "prior-sample is not deterministic"
"$BIN/prior-sample" -m "$tmp/prior.st" -n 2 -s 6 "$tmp/a.rec" | cmp -s - "$tmp/p.rec" && fail "the seed changes nothing"
# the cache: stdin and a file argument give the same output
nohist() { "$BIN/rec-dump" --full "$@" | sed 's/"history".*//'; }
"$BIN/prior-sample" -m "$tmp/prior.st" -n 2 -s 5 < "$tmp/a.rec" > "$tmp/q.rec"
[ "$(nohist "$tmp/q.rec")" = "$(nohist "$tmp/p.rec")" ] || fail "stdin and file differ"
# DDIM respacing and best-of
"$BIN/prior-sample" -m "$tmp/prior.st" --steps ddim5 --best-of 3 "$tmp/a.rec" | "$BIN/rec-dump" | grep -q '"image_emb"' ||
    fail "prior-sample --steps ddim5 --best-of 3 gave no image_emb"
# DPM-Solver++(2M) at the prior: deterministic, named in params.prior
"$BIN/prior-sample" -m "$tmp/prior.st" -S 6 --sampler dpm++2m "$tmp/a.rec" > "$tmp/dpm.rec"
"$BIN/prior-sample" -m "$tmp/prior.st" -S 6 --sampler dpm++2m "$tmp/a.rec" | cmp -s - "$tmp/dpm.rec" ||
    fail "prior-sample --sampler dpm++2m is not deterministic"
"$BIN/rec-dump" "$tmp/dpm.rec" | grep -q '"prior":{"steps":"6","guidance":[0-9.]*,"sampler":"dpm++2m"' ||
    fail "prior-sample: params.prior does not name dpm++2m"

# bad input: exit 1 with one line naming the problem, exit 2 for usage
expect 1 'a clip model, not a prior model' "$BIN/prior-sample" -m "$tmp/clip.st" "$tmp/a.rec"
expect 1 'record 1' sh -c "head -c 100 '$tmp/a.rec' | '$BIN/prior-sample' -m '$tmp/prior.st'"
"$MKMODEL" clip "$tmp/clip48.st" 48 48
"$BIN/clip-encode" -m "$tmp/clip48.st" "a cube" > "$tmp/w.rec"
expect 1 'record 1 field' "$BIN/prior-sample" -m "$tmp/prior.st" "$tmp/w.rec"
expect 1 'missing' sh -c "'$BIN/shapes-render' -f record 'a red circle' | '$BIN/prior-sample' -m '$tmp/prior.st'"
expect 2 'guidance' "$BIN/prior-sample" -m "$tmp/prior.st" --guidance abc "$tmp/a.rec"
expect 1 'safetensors\|short\|header' sh -c "head -c 1000 '$tmp/prior.st' > '$tmp/cut.st'; '$BIN/prior-sample' -m '$tmp/cut.st' '$tmp/a.rec'"
expect 1 'UTF-8' "$BIN/clip-encode" -m "$tmp/clip.st" "$(printf 'bad \377 byte')"
expect 1 '' "$BIN/clip-encode" -m "$tmp/clip.st" --image "$tmp/a.rec"
# a reader that closes early ends the upstream tool quietly
"$BIN/clip-encode" -m "$tmp/clip.st" a b c d e f g h | head -c 1 > /dev/null
# a write error is an error
if [ -w /dev/full ]; then
    expect 1 'write' sh -c "'$BIN/clip-encode' -m '$tmp/clip.st' 'a cube' > /dev/full"
fi
echo "clip_prior.sh: ok"
