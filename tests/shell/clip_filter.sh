#!/bin/sh
# clip-filter with small random CLIP models: every action (drop, blank,
# tag, pass) at each point (text, emb, picture), the exit statuses, PNGs in
# giving PNGs out with the verdict in their text chunks, the concept cache
# (created, reused, invalidated by another CLIP, rebuilt when damaged),
# calibration, and the errors: a bad policy line named by its line, a
# record with nothing to score, an embedding of another CLIP or of the
# wrong width.
. tests/shell/lib.sh
MKMODEL=${MKMODEL:?MKMODEL must name the test model maker}
F=$BIN/clip-filter

"$MKMODEL" clip "$tmp/clip.st"
"$MKMODEL" clip "$tmp/clip48.st" 48 48
M="-m $tmp/clip.st"
"$BIN/clip-encode" $M "a red cube" "two green circles" > "$tmp/t.rec"
"$BIN/clip-encode" $M --image tests/golden/clip/preprocess/rgb_large_320x241.png > "$tmp/e.rec"
"$BIN/shapes-render" "a red circle" "a blue square" > "$tmp/pic.png"
pol() { printf '%s\n' "$@" > "$tmp/p.txt"; }
count() { "$BIN/rec-dump" "$1" | wc -l; }

# pass: nothing reaches a threshold of 1.5 (a score is at most 1): exit 0,
# every record out with filter.text {verdict pass, ...}
pol '# comment' '' 'drop text=1.5 a cube  # trailing comment'
"$F" $M -p "$tmp/p.txt" "$tmp/t.rec" > "$tmp/o.rec" || fail "pass: exit $?"
[ "$(count "$tmp/o.rec")" -eq 2 ] || fail "pass: expected 2 records"
for f in '"filter":{"text":{"policy":"p.txt","checksum":"fnv1a64:' '"verdict":"pass"' '"line":3' \
    '"concept":"a cube"' '"threshold":1.5' '"scores":{"dtype":"F32","shape":\[1\]' '"reason":"pass: line 3'; do
    "$BIN/rec-dump" "$tmp/o.rec" | head -1 | grep -q "$f" || fail "pass: record lacks $f"
done
"$BIN/rec-dump" "$tmp/o.rec" | head -1 | grep -q '"tool":"clip-filter"' || fail "no history entry"

# drop: the record whose prompt is the concept itself (cosine 1) goes, the
# other passes; one line on stderr names the record, concept and score; exit 3
pol 'drop text=0.99999 a red cube'
expect 3 "record 1 'a red cube' dropped at text: drop: line 1 'a red cube' 1.0000 >= 0.99999" "$F" $M -p "$tmp/p.txt" "$tmp/t.rec"
[ "$(count "$tmp/out")" -eq 1 ] || fail "drop: expected 1 record out"
"$BIN/rec-dump" "$tmp/out" | grep -q '"prompt":"two green circles"' || fail "drop: the wrong record passed"
[ "$(wc -l < "$tmp/err")" -eq 1 ] || fail "drop: expected one stderr line"
# -q: no line for the drop, the same exit status
st=0
"$F" $M -q -p "$tmp/p.txt" "$tmp/t.rec" > /dev/null 2> "$tmp/err" || st=$?
[ "$st" -eq 3 ] || fail "-q: exit $st, expected 3"
[ ! -s "$tmp/err" ] || fail "-q: stderr not empty"

# tag: passed on, the hit recorded; exit 0
pol 'tag text=-2 a cube'
"$F" $M -p "$tmp/p.txt" < "$tmp/t.rec" > "$tmp/o.rec" || fail "tag: exit $?"
[ "$(count "$tmp/o.rec")" -eq 2 ] || fail "tag: expected 2 records"
[ "$("$BIN/rec-dump" "$tmp/o.rec" | grep -c '"verdict":"tag"')" -eq 2 ] || fail "tag: verdict not tag"

# blank without a picture drops; the strongest action wins
pol 'tag text=-2 a cube' 'blank text=-2 a cube' 'tag text=-2 a ball'
expect 3 'dropped at text: blank: line 2.*(blank: no picture)' "$F" $M -p "$tmp/p.txt" "$tmp/t.rec"
[ ! -s "$tmp/out" ] || fail "blank without a picture: records came out"

# the embedding point: image_emb of clip-encode --image (auto picks it)
pol 'tag emb=-2 a photo'
"$F" $M -p "$tmp/p.txt" "$tmp/e.rec" | "$BIN/rec-dump" | grep -q '"filter":{"emb":{.*"verdict":"tag"' ||
    fail "emb: no filter.emb"
# --at text scores the same record's text_emb instead
pol 'tag text=-2 a photo'
"$F" $M -p "$tmp/p.txt" --at text "$tmp/e.rec" | "$BIN/rec-dump" | grep -q '"filter":{"text":' ||
    fail "--at text: no filter.text"

# the picture: PNGs in, PNGs out; blank makes them black, with the reason in
# a text chunk and filter.image in the record the PNG carries
pol 'blank image=-2 a red circle | a blue square'
expect 3 'record 1 blanked at image: blank: line 1' "$F" $M -p "$tmp/p.txt" "$tmp/pic.png"
cp "$tmp/out" "$tmp/b.png"
"$BIN/rec-dump" "$tmp/b.png" > "$tmp/b.json"
[ "$(wc -l < "$tmp/b.json")" -eq 2 ] || fail "blank: expected 2 PNGs"
grep -q '"image":{"dtype":"U8","shape":\[64,64,3\],.*"max":0,' "$tmp/b.json" || fail "blank: the picture is not black"
grep -q '"filter":{"image":{.*"verdict":"blank"' "$tmp/b.json" || fail "blank: no filter.image in the PNG's record"
grep -q '"prompt":"a red circle"' "$tmp/b.json" || fail "blank: the record was not passed through"
grep -aq 'image: blank: line 1' "$tmp/b.png" || fail "blank: no filter text chunk"
# records in, records out (-f png turns them into PNGs)
"$BIN/shapes-render" -f record "a red circle" > "$tmp/pic.rec"
pol 'tag image=-2 a red circle'
"$F" $M -p "$tmp/p.txt" "$tmp/pic.rec" | head -c 8 | od -An -c | grep -q P && fail "records in gave a PNG"
"$F" $M -p "$tmp/p.txt" -f png "$tmp/pic.rec" | head -c 8 | od -An -c | grep -q P || fail "-f png gave no PNG"
# a PNG passed on keeps the reason in its chunk, and a later stage keeps the record
"$F" $M -p "$tmp/p.txt" "$tmp/pic.png" > "$tmp/tag.png"
grep -aq 'image: tag: line 1' "$tmp/tag.png" || fail "tag: no filter text chunk"
"$BIN/upsample" --fast "$tmp/tag.png" | "$BIN/rec-dump" | grep -q '"verdict":"tag"' || fail "upsample lost filter"

# file concepts: a PNG (picture) and a record (its image_emb), relative to the policy
mkdir "$tmp/pd"
cp "$tmp/pic.png" "$tmp/pd/two.png"
cp "$tmp/e.rec" "$tmp/pd/e.rec"
printf 'drop image=0.99999 @two.png\ntag image=-2 @e.rec\n' > "$tmp/pd/p.txt"
expect 3 "dropped at image: drop: line 1 '@two.png'" "$F" $M -p "$tmp/pd/p.txt" "$tmp/pic.png"
printf 'drop image=0 @missing.png\n' > "$tmp/pd/p.txt"
expect 1 'p.txt line 1: @missing.png' "$F" $M -p "$tmp/pd/p.txt" "$tmp/pic.png"

# contrasts and continued lines
pol 'drop text=0 a red cube | a red ball \' '   vs two green circles  # continued'
expect 3 "record 1 'a red cube' dropped at text: drop: line 1 'a red cube' vs 'two green circles' " "$F" $M -p "$tmp/p.txt" "$tmp/t.rec"
grep -q 'record 2' "$tmp/err" && fail "contrast: record 2 dropped"
"$BIN/rec-dump" "$tmp/out" | grep -q '"concept":"a red [a-z]*","contrast":"two green circles"' || fail "contrast: fields"

# braces: each alternative, every combination; the rule keeps its text
pol 'drop text=0.99999 a {blue,red} {ball,cube}'
expect 3 "dropped at text: drop: line 1 'a red cube' 1.0000" "$F" $M -p "$tmp/p.txt" "$tmp/t.rec"
"$F" $M -v -p "$tmp/p.txt" "$tmp/t.rec" 2>&1 > /dev/null | grep -q '1 rules, 4 concepts' || fail "braces: not 4 concepts"

# the cache: created beside the policy, keyed by the CLIP's checksum
pol 'tag text=-2 a cube | a ball'
rm -f "$tmp/p.txt.cache.rec"
"$F" $M -v -p "$tmp/p.txt" "$tmp/t.rec" > /dev/null 2> "$tmp/err"
grep -q 'p.txt.cache.rec: written' "$tmp/err" || fail "cache: not written"
"$BIN/rec-dump" "$tmp/p.txt.cache.rec" > "$tmp/c.json"
[ "$(wc -l < "$tmp/c.json")" -eq 2 ] || fail "cache: expected 2 concepts"
grep -q '"concept":"a ball","text_emb":{"dtype":"F32","shape":\[32\]' "$tmp/c.json" || fail "cache: no a ball"
sum=$(cksum < "$tmp/p.txt.cache.rec")
"$F" $M -v -p "$tmp/p.txt" "$tmp/t.rec" > "$tmp/o1.rec" 2> "$tmp/err"
grep -q 'cache.rec: reused' "$tmp/err" || fail "cache: not reused"
[ "$(cksum < "$tmp/p.txt.cache.rec")" = "$sum" ] || fail "cache: rewritten though reused"
"$F" $M --no-cache -p "$tmp/p.txt" "$tmp/t.rec" > "$tmp/o2.rec"
[ "$("$BIN/rec-dump" --full "$tmp/o1.rec" | sed 's/"history".*//')" = \
    "$("$BIN/rec-dump" --full "$tmp/o2.rec" | sed 's/"history".*//')" ] || fail "cache: the cached concepts score differently"
# a new concept in the policy is encoded and added
pol 'tag text=-2 a cube | a ball | a cone'
"$F" $M -v -p "$tmp/p.txt" "$tmp/t.rec" > /dev/null 2> "$tmp/err"
grep -q "lacks 'a cone'" "$tmp/err" || fail "cache: new concept not noticed"
[ "$(count "$tmp/p.txt.cache.rec")" -eq 3 ] || fail "cache: new concept not added"
# another CLIP: the cache is made again for its checksum
"$BIN/clip-encode" -m "$tmp/clip48.st" "a red cube" > "$tmp/t48.rec"
"$F" -m "$tmp/clip48.st" -v -p "$tmp/p.txt" "$tmp/t48.rec" > /dev/null 2> "$tmp/err"
grep -q 'made with another CLIP' "$tmp/err" || fail "cache: another CLIP not noticed"
"$BIN/rec-dump" "$tmp/p.txt.cache.rec" | grep -q '"shape":\[48\]' || fail "cache: not rewritten for the other CLIP"
# a damaged cache is a warning, and is written again
head -c 50 "$tmp/t.rec" > "$tmp/p.txt.cache.rec"
expect 0 'damaged cache' "$F" $M -p "$tmp/p.txt" "$tmp/t.rec"
[ "$(count "$tmp/p.txt.cache.rec")" -eq 3 ] || fail "cache: damaged one not replaced"

# calibration: prompts labelled, the best threshold and the policy's counts
pol 'drop text=0.99999 a red cube'
printf 'blocked a red cube\nallowed two green circles\n# a comment\nallowed a blue ball\n' > "$tmp/labels"
"$F" $M -p "$tmp/p.txt" --calibrate "$tmp/labels" > "$tmp/cal" || fail "calibrate: exit $?"
grep -q '^calibration of .* at text: 3 items, 1 blocked, 2 allowed' "$tmp/cal" || fail "calibrate: header"
grep -q '^  best threshold .*(0 errors): tp 1 fp 0 fn 0 tn 2 recall 1.000 precision 1.000' "$tmp/cal" ||
    { cat "$tmp/cal"; fail "calibrate: best threshold"; }
grep -q '^policy at text (drop and blank rules): tp 1 fp 0 fn 0 tn 2' "$tmp/cal" || fail "calibrate: policy line"
# ... or records, the i-th label for the i-th record
printf 'blocked\nallowed\n' > "$tmp/labels2"
"$F" $M -p "$tmp/p.txt" --calibrate "$tmp/labels2" "$tmp/t.rec" | grep -q 'tp 1 fp 0 fn 0 tn 1' ||
    fail "calibrate: records"
expect 1 '2 records for the 3 labels' "$F" $M -p "$tmp/p.txt" --calibrate "$tmp/labels" "$tmp/t.rec"
printf 'blocked a\nmaybe b\n' > "$tmp/labels3"
expect 1 'labels3 line 2: .maybe. is not allowed or blocked' "$F" $M -p "$tmp/p.txt" --calibrate "$tmp/labels3"

# a bad policy line is an error naming the file and the line
for bad in 'drop text=0.5' 'dorp text=0.5 a cube' 'drop a cube' 'drop text=abc a cube' 'drop text=3 a cube' \
    'drop txt=0.5 a cube' 'drop text=0.1 text=0.2 a cube' 'drop text=0.5 a cube | | a ball' \
    'drop text=0.5 a vs b vs c' 'drop text=0.5 a {b,c' 'drop text=0.5 a {b,{c}}' 'drop text=0.5 {,}'; do
    pol '# first line' "$bad"
    expect 1 'p.txt line 2: ' "$F" $M -p "$tmp/p.txt" "$tmp/t.rec"
done
printf '# bad UTF-8\ntag text=0 a \377 cube\n' > "$tmp/p.txt"
expect 1 'p.txt line 2: .*UTF-8' "$F" $M -p "$tmp/p.txt" "$tmp/t.rec"
pol '# nothing but comments'
expect 1 'no rules' "$F" $M -p "$tmp/p.txt" "$tmp/t.rec"
expect 1 'nofile' "$F" $M -p "$tmp/nofile" "$tmp/t.rec"

# records that cannot be scored are errors, never a pass
pol 'drop text=0.5 emb=0.5 a cube'
# no text_emb, image_emb or image: a record of only the version field
printf '\201\247version\001' > "$tmp/bare.rec"
expect 1 'record 1: nothing to score' "$F" $M -p "$tmp/p.txt" "$tmp/bare.rec"
expect 1 'record 1 field text_emb: missing (--at text)' "$F" $M -p "$tmp/p.txt" --at text "$tmp/bare.rec"
# a text embedding of another CLIP
expect 1 'record 1 field text_emb: made by another CLIP' "$F" $M -p "$tmp/p.txt" "$tmp/t48.rec"
# one that does not say its CLIP: the picture's record from shapes-render, --at emb
expect 1 'record 1 field image_emb: missing' "$F" $M -p "$tmp/p.txt" --at emb "$tmp/pic.rec"
# a text_emb of width 2 that claims this CLIP
ck=$("$BIN/rec-dump" "$tmp/t.rec" | head -1 | sed 's/.*"models":{"clip":{[^}]*"checksum":"\([^"]*\)".*/\1/')
[ ${#ck} -eq 24 ] || fail "test: unexpected checksum '$ck'"
{
    printf '\203\247version\001\250text_emb\203\245dtype\243F32\245shape\221\002\244data\304\010'
    printf '\000\000\200\077\000\000\200\077'
    printf '\246models\201\244clip\201\250checksum\270%s' "$ck"
} > "$tmp/w2.rec"
expect 1 'record 1 field text_emb: shape \[2\], but the CLIP model needs \[32\]' "$F" $M -p "$tmp/p.txt" "$tmp/w2.rec"
# a policy without a threshold at the record's point
pol 'drop image=0.5 a cube'
expect 1 'scored at text but .*has no text= threshold' "$F" $M -p "$tmp/p.txt" "$tmp/t.rec"
expect 1 'has no emb= threshold' "$F" $M -p "$tmp/p.txt" --at emb "$tmp/t.rec"
# a truncated stream
pol 'tag text=-2 a cube'
expect 1 'record' sh -c "head -c 100 '$tmp/t.rec' | '$F' $M -p '$tmp/p.txt'"

# the common options and usage errors
"$F" --help | grep -q '^Usage: clip-filter -p POLICY' || fail "--help"
"$F" --version | grep -q '^clip-filter (unclip) ' || fail "--version"
expect 2 'no policy' "$F" $M "$tmp/t.rec"
expect 2 "'nowhere' is not text, emb, image or auto" "$F" $M -p "$tmp/p.txt" --at nowhere "$tmp/t.rec"
expect 2 'format' "$F" $M -p "$tmp/p.txt" -f jpeg "$tmp/t.rec"
expect 2 'threads' "$F" $M -p "$tmp/p.txt" -t abc "$tmp/t.rec"
"$F" $M -p "$tmp/p.txt" -t 1 -s 5 "$tmp/t.rec" | "$BIN/rec-dump" | sed 's/"history".*//' > "$tmp/a.json"
"$F" $M -p "$tmp/p.txt" "$tmp/t.rec" | "$BIN/rec-dump" | sed 's/"history".*//' > "$tmp/b.json"
cmp -s "$tmp/a.json" "$tmp/b.json" || fail "-t 1 -s 5 changed the output"
"$F" $M -v -p "$tmp/p.txt" "$tmp/t.rec" 2>&1 > /dev/null | grep -q 'p.txt: 1 rules, 1 concepts' || fail "-v"
# the shipped policies with the default model (models/, as default_model.sh
# finds it): a prompt and a picture with a triangle are stopped, others pass
[ "$(cd "$BIN/.." && pwd)" = "$(pwd)" ] || export UNCLIP_MODELS="$PWD/models"
cp examples/policies/no-triangles.txt examples/policies/no-red.txt "$tmp/"
expect 3 "'a small green triangle' dropped at text: blank: line [0-9]* 'a green triangle' vs" \
    sh -c "'$BIN/clip-encode' 'a small green triangle' | '$F' -p '$tmp/no-triangles.txt'"
"$BIN/clip-encode" "a red circle above a blue square" | "$F" -p "$tmp/no-triangles.txt" > /dev/null ||
    fail "no-triangles: a circle and a square were blocked"
"$BIN/shapes-render" --size 128 "a blue square to the left of an orange triangle" "three green circles" > "$tmp/nt.png"
expect 3 'record 1 blanked at image' "$F" -p "$tmp/no-triangles.txt" "$tmp/nt.png"
"$BIN/rec-dump" "$tmp/out" > "$tmp/nt.json"
grep -q '"prompt":"a blue square to the left of an orange triangle".*"verdict":"blank"' "$tmp/nt.json" || fail "no-triangles: not blanked"
grep -q '"prompt":"three green circles".*"verdict":"pass"' "$tmp/nt.json" || fail "no-triangles: circles blanked"
"$BIN/shapes-render" "a red square" "a blue circle" | "$F" -p "$tmp/no-red.txt" | "$BIN/rec-dump" > "$tmp/nr.json"
grep -q '"prompt":"a red square".*"verdict":"tag"' "$tmp/nr.json" || fail "no-red: red square not tagged"
grep -q '"prompt":"a blue circle".*"verdict":"pass"' "$tmp/nr.json" || fail "no-red: blue circle tagged"
echo "clip_filter.sh: ok"
