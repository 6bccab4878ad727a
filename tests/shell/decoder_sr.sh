#!/bin/sh
# decoder-diffuse and upsample in real pipelines with small test models:
# PNG and record outputs, provenance through PNGs, determinism, -o files,
# --fast, and clean failures on bad input.
. tests/shell/lib.sh
MKMODEL=${MKMODEL:?MKMODEL must name the test model maker}

"$MKMODEL" clip "$tmp/clip.st"
"$MKMODEL" prior "$tmp/prior.st" $G/karlo/prior-sample
"$MKMODEL" decoder "$tmp/dec.st" $G/karlo/decoder-forward
"$MKMODEL" sr "$tmp/sr.st" $G/karlo/sr-forward-updown
"$BIN/clip-encode" -m "$tmp/clip.st" "a red cube" "two green circles" > "$tmp/a.rec"
"$BIN/prior-sample" -m "$tmp/prior.st" -s 5 "$tmp/a.rec" > "$tmp/p.rec"

# records: image added, everything else passed through, params/models/history
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 5 -n 2 -f record --float "$tmp/p.rec" > "$tmp/d.rec"
"$BIN/rec-dump" "$tmp/d.rec" > "$tmp/d.json"
[ "$(wc -l < "$tmp/d.json")" -eq 4 ] || fail "decoder-diffuse -n 2: expected 4 records"
for f in '"image":{"dtype":"U8","shape":\[8,8,3\]' '"image_f32":{"dtype":"F32","shape":\[3,8,8\]' \
    '"decoder":{"steps":"5","guidance":8,"sampler":"ddpm","best_of":1,"threads":[0-9]*,"cpu":"avx[0-9a-z]*","seed":5,"noise_key":[0-9]*,"index":1}' '"tool":"decoder-diffuse"'; do
    grep -q "$f" "$tmp/d.json" || fail "decoder-diffuse: output lacks $f"
done
e_in=$("$BIN/rec-dump" "$tmp/p.rec" | head -1 | grep -o '"image_emb":{[^}]*}')
e_out=$(head -1 "$tmp/d.json" | grep -o '"image_emb":{[^}]*}')
[ "$e_in" = "$e_out" ] || fail "decoder-diffuse changed image_emb"
# same seed (the record's), same bytes; -s changes them; PNG by default
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 5 -n 2 -f record --float "$tmp/p.rec" | cmp -s - "$tmp/d.rec" ||
    fail "decoder-diffuse is not deterministic"
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 5 -n 2 -s 6 -f record --float "$tmp/p.rec" | cmp -s - "$tmp/d.rec" &&
    fail "the seed changes nothing"
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S ddim5 "$tmp/p.rec" > "$tmp/d.png"
head -c 8 "$tmp/d.png" | od -An -c | grep -q 'P   N   G' || fail "decoder-diffuse: no PNG on stdout"
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 5 -o "$tmp/img-%d.png" "$tmp/p.rec"
[ -s "$tmp/img-0.png" ] && [ -s "$tmp/img-1.png" ] && [ ! -e "$tmp/img-2.png" ] || fail "-o pattern: files missing"

# the model's unclip.default_guidance stands in for -g; -g overrides it;
# a bad value is an error naming the file and the key (prior likewise)
"$MKMODEL" decoder "$tmp/dec-g.st" $G/karlo/decoder-forward 2.5
"$BIN/decoder-diffuse" -m "$tmp/dec-g.st" -S 3 -f record "$tmp/p.rec" | "$BIN/rec-dump" | grep -q '"guidance":2.5,' ||
    fail "decoder-diffuse ignores unclip.default_guidance"
"$BIN/decoder-diffuse" -m "$tmp/dec-g.st" -S 3 -g 3 -f record "$tmp/p.rec" | "$BIN/rec-dump" | grep -q '"guidance":3,' ||
    fail "decoder-diffuse: -g does not override unclip.default_guidance"
"$MKMODEL" prior "$tmp/prior-g.st" $G/karlo/prior-sample 1.5
"$BIN/prior-sample" -m "$tmp/prior-g.st" -S 3 "$tmp/a.rec" | "$BIN/rec-dump" | grep -q '"guidance":1.5,' ||
    fail "prior-sample ignores unclip.default_guidance"
for g in abc 0 -1 1e9 nan "2 "; do
    "$MKMODEL" decoder "$tmp/dec-g.st" $G/karlo/decoder-forward "$g"
    expect 1 "dec-g.st: metadata unclip.default_guidance '$g' is not a number" \
        "$BIN/decoder-diffuse" -m "$tmp/dec-g.st" "$tmp/p.rec"
    "$MKMODEL" prior "$tmp/prior-g.st" $G/karlo/prior-sample "$g"
    expect 1 "prior-g.st: metadata unclip.default_guidance '$g' is not a number" \
        "$BIN/prior-sample" -m "$tmp/prior-g.st" "$tmp/a.rec"
done
[ ! -s "$tmp/out" ] || fail "output written despite a bad unclip.default_guidance"

images() { "$BIN/rec-dump" "$@" | grep -o '"image":{[^}]*}'; }
# --best-of K: candidate c of sample i is what stream i*K + c gives alone,
# and the kept one is the candidate with the highest cosine (-v lists them);
# the model's unclip.default_best_of stands in for it; bad values refused
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 3 -n 6 -f record "$tmp/p.rec" > "$tmp/c6.rec"
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 3 -n 2 --best-of 3 --clip "$tmp/clip.st" -v -f record "$tmp/p.rec" \
    > "$tmp/b.rec" 2> "$tmp/b.err"
"$BIN/rec-dump" "$tmp/b.rec" > "$tmp/b.json"
[ "$(wc -l < "$tmp/b.json")" -eq 4 ] || fail "--best-of 3 -n 2: expected 4 records"
grep -q '"best_of":3,' "$tmp/b.json" && grep -q '"rank":{"id":"test/clip-random"' "$tmp/b.json" ||
    fail "--best-of: params.decoder.best_of or models.rank missing"
[ "$(grep -c 'candidate [012]: cosine' "$tmp/b.err")" -eq 12 ] || fail "--best-of 3 -v: not 12 candidate scores"
images "$tmp/c6.rec" > "$tmp/c6.img"
images "$tmp/b.rec" > "$tmp/b.img"
for r in 1 2; do
    for i in 0 1; do
        c=$(grep "record $r, sample $i, candidate" "$tmp/b.err" | sort -t' ' -k9 -g | tail -1 |
            sed 's/.*candidate \([0-9]\).*/\1/')
        [ -n "$c" ] || fail "--best-of: no scores for record $r sample $i"
        sed -n "$(( (r - 1) * 6 + i * 3 + c + 1 ))p" "$tmp/c6.img" > "$tmp/want"
        sed -n "$(( (r - 1) * 2 + i + 1 ))p" "$tmp/b.img" | cmp -s - "$tmp/want" ||
            fail "--best-of: record $r sample $i is not its best candidate ($c)"
    done
done
"$MKMODEL" decoder "$tmp/dec-b.st" $G/karlo/decoder-forward unclip.default_best_of=3
images "$tmp/b.rec" > "$tmp/want"
"$BIN/decoder-diffuse" -m "$tmp/dec-b.st" -S 3 -n 2 --clip "$tmp/clip.st" -f record "$tmp/p.rec" | images |
    cmp -s - "$tmp/want" || fail "decoder-diffuse ignores unclip.default_best_of"
images "$tmp/c6.rec" > "$tmp/want"
"$BIN/decoder-diffuse" -m "$tmp/dec-b.st" -S 3 -n 6 --best-of 1 -f record "$tmp/p.rec" | images |
    cmp -s - "$tmp/want" || fail "--best-of 1 does not override unclip.default_best_of"
for k in 0 65 1.5 x; do
    "$MKMODEL" decoder "$tmp/dec-b.st" $G/karlo/decoder-forward unclip.default_best_of=$k
    expect 1 "dec-b.st: metadata unclip.default_best_of '$k' is not an integer in \[1, 64\]" \
        "$BIN/decoder-diffuse" -m "$tmp/dec-b.st" "$tmp/p.rec"
done
expect 2 "\-\-best-of" "$BIN/decoder-diffuse" -m "$tmp/dec.st" --best-of 0 "$tmp/p.rec"
expect 1 "\-\-best-of needs a CLIP model" "$BIN/decoder-diffuse" -m "$tmp/dec.st" --best-of 2 --clip "$tmp/none.st" "$tmp/p.rec"
expect 1 "a decoder model (unclip.stage), not a clip model" "$BIN/decoder-diffuse" -m "$tmp/dec.st" --best-of 2 --clip "$tmp/dec.st" "$tmp/p.rec"
"$MKMODEL" clip "$tmp/clip48.st" 48
expect 1 "CLIP embed_dim 48 is not the decoder's clip_dim 32" \
    "$BIN/decoder-diffuse" -m "$tmp/dec.st" --best-of 2 --clip "$tmp/clip48.st" "$tmp/p.rec"

# upsample: records (image_f32 used), PNGs with their provenance, --fast
"$BIN/upsample" -m "$tmp/sr.st" -f record "$tmp/d.rec" > "$tmp/u.rec"
"$BIN/rec-dump" "$tmp/u.rec" > "$tmp/u.json"
[ "$(wc -l < "$tmp/u.json")" -eq 4 ] || fail "upsample: expected 4 records"
grep -q '"image":{"dtype":"U8","shape":\[32,32,3\]' "$tmp/u.json" || fail "upsample: no 32x32 image"
grep -q '"image_f32":{' "$tmp/u.json" && fail "upsample: stale image_f32 kept"
grep -q '"sr":{"steps":"7","input":"image_f32","threads":[0-9]*,"cpu":"avx[0-9a-z]*","seed":5,"noise_key":[0-9]*,"index":0,"scale":4}' "$tmp/u.json" || fail "upsample: params.sr"
"$BIN/upsample" -m "$tmp/sr.st" "$tmp/img-0.png" "$tmp/img-1.png" | "$BIN/upsample" --fast -f record |
    "$BIN/rec-dump" > "$tmp/v.json"
grep -q '"prompt":"two green circles"' "$tmp/v.json" || fail "upsample: provenance lost through PNGs"
grep -q '"image":{"dtype":"U8","shape":\[128,128,3\]' "$tmp/v.json" || fail "upsample --fast: not x4"
"$BIN/upsample" -m "$tmp/sr.st" "$tmp/d.png" > "$tmp/u1.png"
"$BIN/upsample" -m "$tmp/sr.st" "$tmp/d.png" | cmp -s - "$tmp/u1.png" || fail "upsample is not deterministic"
# DPM-Solver++(2M) at both stages: deterministic, named in params, and
# not the DDPM picture; a sampler it does not know is a usage error
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 4 --sampler dpm++2m -f record "$tmp/p.rec" > "$tmp/dpm.rec"
"$BIN/rec-dump" "$tmp/dpm.rec" | grep -q '"decoder":{"steps":"4","guidance":8,"sampler":"dpm++2m","best_of"' ||
    fail "decoder-diffuse: params.decoder does not name dpm++2m"
"$BIN/upsample" -m "$tmp/sr.st" -S 4 --sampler dpm++2m "$tmp/d.png" > "$tmp/u-dpm.png"
"$BIN/upsample" -m "$tmp/sr.st" -S 4 --sampler dpm++2m "$tmp/d.png" | cmp -s - "$tmp/u-dpm.png" ||
    fail "upsample --sampler dpm++2m is not deterministic"
"$BIN/upsample" -m "$tmp/sr.st" -S 4 -s 77 --sampler dpm++2m "$tmp/d.png" | cmp -s - "$tmp/u-dpm.png" &&
    fail "upsample --sampler dpm++2m: the seed (x_T) changes nothing"
"$BIN/upsample" -m "$tmp/sr.st" -S 4 "$tmp/d.png" | cmp -s - "$tmp/u-dpm.png" && fail "dpm++2m draws the DDPM picture"
"$BIN/rec-dump" "$tmp/u-dpm.png" | grep -q '"sr":{"steps":"4","sampler":"dpm++2m","input"' ||
    fail "upsample: params.sr does not name dpm++2m"
expect 2 "\-\-sampler: 'euler' is not ddpm, ddim or dpm++2m" "$BIN/upsample" -m "$tmp/sr.st" --sampler euler "$tmp/d.png"

# --tile: 0, or a tile holding the whole picture, changes no pixel; a
# smaller one runs the network on the tiles (other pixels) and records it
img() { "$BIN/upsample" -m "$tmp/sr.st" -f record "$@" "$tmp/d.rec" | "$BIN/rec-dump" | grep -o '"image":{[^}]*}'; }
whole=$(img)
[ "$(img --tile 0)" = "$whole" ] || fail "upsample --tile 0 changed the picture"
[ "$(img --tile 32)" = "$whole" ] || fail "upsample --tile 32 (the whole 32 px picture) changed it"
[ "$(img --tile 16)" != "$whole" ] || fail "upsample --tile 16 ran on the whole picture"
"$BIN/upsample" -m "$tmp/sr.st" -f record --tile 16 "$tmp/d.rec" | "$BIN/rec-dump" | grep -q '"index":0,"tile":16,"overlap":8,"scale":4}' ||
    fail "upsample --tile 16: params.sr.tile and overlap (half the tile) missing"
expect 2 "tile 3: not 0 or a positive multiple" "$BIN/upsample" -m "$tmp/sr.st" --tile 3 "$tmp/d.rec"
# --overlap: 0 (tiles that touch, a plain mean where the last one overlaps)
# to half the tile; any overlap is another picture, and none runs without tiles
[ "$(img --tile 16 --overlap 0)" != "$(img --tile 16)" ] || fail "upsample --overlap 0: the default picture"
[ "$(img --tile 16 --overlap 4)" != "$(img --tile 16)" ] || fail "upsample --overlap 4: the default picture"
[ "$(img --tile 0 --overlap 0)" = "$whole" ] || fail "upsample --tile 0 --overlap 0 changed the picture"
expect 2 "overlap 9: not in \[0, 8\] (half the tile of 16)" "$BIN/upsample" -m "$tmp/sr.st" --tile 16 --overlap 9 "$tmp/d.rec"
expect 2 "overlap 4: no tiles to overlap (tile 0: the whole picture)" "$BIN/upsample" -m "$tmp/sr.st" --tile 0 --overlap 4 "$tmp/d.rec"
expect 2 "\-\-overlap: 'x'" "$BIN/upsample" -m "$tmp/sr.st" --overlap x "$tmp/d.rec"
# many tiles (71 x 71 of 8 px at 288 px: 3.9 times the picture's pixels)
# run in batches of at most 2^18 pixels, the last one padded: a 288 px
# picture, the same at every run
"$BIN/shapes-render" --size 72 -f record "a red circle" > "$tmp/r72.rec"
"$BIN/upsample" -m "$tmp/sr.st" -S 2 --tile 8 -f record "$tmp/r72.rec" > "$tmp/u288.rec"
"$BIN/rec-dump" "$tmp/u288.rec" | grep -q '"image":{"dtype":"U8","shape":\[288,288,3\]' || fail "upsample --tile 8: no 288 px picture"
"$BIN/upsample" -m "$tmp/sr.st" -S 2 --tile 8 -f record "$tmp/r72.rec" | cmp -s - "$tmp/u288.rec" ||
    fail "upsample --tile 8 in batches is not deterministic"
# the model's unclip.default_tile stands in for --tile; --tile 0 overrides it
"$MKMODEL" sr "$tmp/sr-t.st" $G/karlo/sr-forward-updown unclip.default_tile=16
[ "$(img --tile 16)" = "$("$BIN/upsample" -m "$tmp/sr-t.st" -f record "$tmp/d.rec" | "$BIN/rec-dump" | grep -o '"image":{[^}]*}')" ] ||
    fail "upsample ignores unclip.default_tile"
[ "$("$BIN/upsample" -m "$tmp/sr-t.st" --tile 0 -f record "$tmp/d.rec" | "$BIN/rec-dump" | grep -o '"image":{[^}]*}')" = "$whole" ] ||
    fail "upsample --tile 0 does not override unclip.default_tile"
"$MKMODEL" sr "$tmp/sr-t3.st" $G/karlo/sr-forward-updown unclip.default_tile=3
expect 1 "sr-t3.st: metadata unclip.default_tile: sr: tile 3" "$BIN/upsample" -m "$tmp/sr-t3.st" "$tmp/d.rec"
"$MKMODEL" sr "$tmp/sr-tx.st" $G/karlo/sr-forward-updown unclip.default_tile=x
expect 1 "metadata unclip.default_tile 'x' is not an integer" "$BIN/upsample" -m "$tmp/sr-tx.st" "$tmp/d.rec"

# bad input: clear one-line messages naming record and field, exit 1 / 2
expect 1 "record 1 field image_emb: missing" "$BIN/decoder-diffuse" -m "$tmp/dec.st" "$tmp/a.rec"
expect 1 "a sr model, not a decoder model" "$BIN/decoder-diffuse" -m "$tmp/sr.st" "$tmp/p.rec"
expect 2 "needs exactly one %d" "$BIN/decoder-diffuse" -m "$tmp/dec.st" -o "$tmp/x%d-%d.png" "$tmp/p.rec"
"$BIN/clip-encode" -m "$tmp/clip.st" "a red cube" | "$BIN/prior-sample" -m "$tmp/prior.st" -S 2 > "$tmp/p1.rec"
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 2 -o "$tmp/one.png" "$tmp/p1.rec" # a plain name for one picture
"$BIN/rec-dump" "$tmp/one.png" | grep -q '"image":' || fail "decoder-diffuse -o one.png: no picture"
expect 2 "more than one picture" "$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 2 -o "$tmp/two.png" "$tmp/p.rec"
[ ! -e "$tmp/two.png" ] || fail "decoder-diffuse -o two.png: a file was left for two pictures"
expect 1 "folder $tmp/nodir: No such file" "$BIN/decoder-diffuse" -m "$tmp/dec.st" -o "$tmp/nodir/x-%d.png" "$tmp/p.rec"
expect 2 "\-\-steps" "$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 2000 "$tmp/p.rec"
expect 1 "record 1 field image: missing" "$BIN/upsample" -m "$tmp/sr.st" "$tmp/a.rec"
head -c 200 "$tmp/d.png" > "$tmp/cut.png"
expect 1 "cut.png" "$BIN/upsample" -m "$tmp/sr.st" "$tmp/cut.png"
ls "$tmp" | grep -q '\.tmp\.' && fail "a temporary file was left behind"
echo "decoder_sr.sh: ok"
