#!/bin/sh
# clip-rank and clip-lexicon (CLIP as an instrument) in real pipelines: the
# default CLIP classifies rendered scenes among captions, finds the picture
# for a caption and reranks candidates by their own prompt; texts and
# images given as lines, prompts, label banks (clip-encode records), PNGs
# and image records agree; clip-lexicon's pieces, its vocabulary cache, a
# word list, --prior (the draw prior-sample makes) and --image; records
# without an embedding or of the wrong width fail naming record and field.
. tests/shell/lib.sh
MKMODEL=${MKMODEL:?MKMODEL must name the test model maker}
if [ "$(cd "$BIN/.." && pwd)" = "$(pwd)" ]; then
    unset UNCLIP_MODELS
else
    export UNCLIP_MODELS="$PWD/models"
fi
export UNCLIP_CACHE="$tmp/cache"
"$MKMODEL" clip "$tmp/small.st" # embed_dim 32, OpenAI's vocabulary

for t in clip-rank clip-lexicon; do
    "$BIN/$t" --help | grep -q "^Usage: $t" || fail "$t --help"
    "$BIN/$t" --version | grep -q "^$t (unclip)" || fail "$t --version"
done

# ---- clip-rank ----
printf '%s\n' "a red circle" "two blue squares" "a green triangle above a yellow square" "a purple circle" \
    "three orange triangles" > "$tmp/labels.txt"
"$BIN/shapes-render" -s 3 "a red circle" "two blue squares" "a green triangle above a yellow square" > "$tmp/s.png"
"$BIN/clip-rank" -T "$tmp/labels.txt" "$tmp/s.png" > "$tmp/t1"
[ "$(wc -l < "$tmp/t1")" -eq 15 ] || fail "clip-rank: 3 images x 5 texts should be 15 lines"
awk -F'\t' '$4 == 1 { print $1 "|" $2 }' "$tmp/t1" > "$tmp/top"
printf '%s\n' "$tmp/s.png#1|a red circle" "$tmp/s.png#2|two blue squares" \
    "$tmp/s.png#3|a green triangle above a yellow square" | cmp -s - "$tmp/top" || {
    cat "$tmp/t1" >&2
    fail "clip-rank: the default CLIP does not classify three rendered scenes"
}
# texts as -p prompts and as a label bank (clip-encode records): the same table
set --
while IFS= read -r l; do set -- "$@" -p "$l"; done < "$tmp/labels.txt"
"$BIN/clip-rank" "$@" "$tmp/s.png" | cmp -s - "$tmp/t1" || fail "clip-rank: -p prompts differ from -T lines"
"$BIN/clip-encode" < "$tmp/labels.txt" > "$tmp/bank.rec"
"$BIN/clip-rank" -T "$tmp/bank.rec" "$tmp/s.png" | cmp -s - "$tmp/t1" || fail "clip-rank: a label bank differs from lines"
# images as records: pixels (shapes-render -f record) and image_emb (clip-encode --image)
"$BIN/shapes-render" -s 3 -f record "a red circle" "two blue squares" "a green triangle above a yellow square" > "$tmp/s.rec"
"$BIN/clip-rank" -T "$tmp/labels.txt" "$tmp/s.rec" | cut -f2- > "$tmp/t2"
cut -f2- "$tmp/t1" | cmp -s - "$tmp/t2" || fail "clip-rank: image records differ from PNGs"
"$BIN/shapes-render" -s 3 -o "$tmp/one-%d.png" "a red circle" "two blue squares"
"$BIN/clip-encode" --image "$tmp/one-0.png" "$tmp/one-1.png" > "$tmp/img.rec"
"$BIN/clip-rank" -T "$tmp/labels.txt" "$tmp/img.rec" > "$tmp/t3"
head -5 "$tmp/t3" | cut -f1 | sort -u | grep -qx "$tmp/one-0.png" || fail "clip-rank: an image record is not named by its source"
head -10 "$tmp/t1" | cut -f2- | cmp -s - "$(cut -f2- "$tmp/t3" > "$tmp/t3c"; echo "$tmp/t3c")" ||
    fail "clip-rank: image_emb records differ from the pictures"
# --by-text --top 1: the picture for each caption
"$BIN/clip-rank" -b -k 1 -p "two blue squares" -p "a red circle" "$tmp/s.png" | cut -f1,2,4 > "$tmp/t4"
printf '%s\t%s\t1\n' "$tmp/s.png#2" "two blue squares" "$tmp/s.png#1" "a red circle" | cmp -s - "$tmp/t4" ||
    fail "clip-rank --by-text: wrong picture for a caption"
# records out: --relabel gives zero-shot labels that shapes-eval accepts
"$BIN/clip-rank" -T "$tmp/labels.txt" -k 1 -f record --relabel "$tmp/s.png" > "$tmp/l.rec"
"$BIN/rec-dump" "$tmp/l.rec" | grep -c '"clip_rank":{"text":' | grep -qx 3 || fail "clip-rank -f record: clip_rank missing"
"$BIN/shapes-eval" "$tmp/l.rec" | grep -q '^overall  1.000 (3/3)' || fail "clip-rank --relabel: labels not accepted"
# own prompts: candidates ranked within each run of the same prompt
"$BIN/shapes-render" -s 1 -f record "a red circle" "a red circle" "a blue square" "a blue square" "a blue square" > "$tmp/c.rec"
"$BIN/clip-rank" "$tmp/c.rec" > "$tmp/t5"
awk -F'\t' '{ print $2, $4 }' "$tmp/t5" | sort | tr '\n' ',' | grep -qx 'a blue square 1,a blue square 2,a blue square 3,a red circle 1,a red circle 2,' ||
    fail "clip-rank (own prompts): ranks are not per prompt"
"$BIN/clip-rank" -k 1 -f record < "$tmp/c.rec" > "$tmp/best.rec"
"$BIN/rec-dump" "$tmp/best.rec" | grep -c '"image":{"dtype":"U8"' | grep -qx 2 || fail "clip-rank -k 1 -f record: not one picture per prompt"
# --to-emb keeps what decoder-diffuse --best-of keeps from the same candidates
"$BIN/clip-encode" "a red circle above a blue square" | "$BIN/prior-sample" -S 5 -s 2 > "$tmp/pr.rec"
"$BIN/decoder-diffuse" -q -S 4 -n 3 --best-of 1 -f record "$tmp/pr.rec" > "$tmp/cands.rec"
"$BIN/decoder-diffuse" -q -S 4 --best-of 3 -f record "$tmp/pr.rec" > "$tmp/bestof.rec"
image_hash() { "$BIN/rec-dump" "$@" | grep -o '"image":{[^}]*}' | sed 's/.*"fnv1a":"//; s/".*//'; }
[ "$(image_hash "$tmp/bestof.rec")" = "$(image_hash "$(
    "$BIN/clip-rank" --to-emb -k 1 -f record "$tmp/cands.rec" > "$tmp/toemb.rec"; echo "$tmp/toemb.rec")")" ] ||
    fail "clip-rank --to-emb does not keep decoder-diffuse --best-of's picture"
expect 2 "clip-rank: --to-emb ranks against" "$BIN/clip-rank" --to-emb -p x "$tmp/cands.rec"
expect 1 "pr.rec: record 1: --to-emb needs pixels" "$BIN/clip-rank" --to-emb "$tmp/pr.rec"

# errors: no embedding, wrong width, no text_emb in a bank, usage
"$BIN/clip-encode" "a red circle" > "$tmp/text.rec"
expect 1 "text.rec: record 1: no field image (pixels) or image_emb" "$BIN/clip-rank" -p "a red circle" "$tmp/text.rec"
"$BIN/clip-encode" -m "$tmp/small.st" --image "$tmp/one-0.png" > "$tmp/small.rec"
expect 1 "small.rec: record 1 field image_emb: shape \[32\], but the CLIP model needs \[128\]" \
    "$BIN/clip-rank" -p "a red circle" "$tmp/small.rec"
expect 1 "s.rec: record 1 field text_emb: missing" "$BIN/clip-rank" -T "$tmp/s.rec" "$tmp/s.png"
"$BIN/clip-encode" -m "$tmp/small.st" "a red circle" > "$tmp/smallbank.rec"
expect 1 "smallbank.rec: record 1 field text_emb: shape \[32\]" "$BIN/clip-rank" -T "$tmp/smallbank.rec" "$tmp/s.png"
expect 1 "img.rec: record 1 field prompt: empty" "$BIN/clip-rank" "$tmp/img.rec"
: > "$tmp/empty"
expect 1 "empty: no image" "$BIN/clip-rank" -p "a red circle" "$tmp/empty"
printf 'a red circle\n\377 bad\n' > "$tmp/bad.txt"
expect 1 "clip-rank: .*bad.txt line 2: invalid UTF-8" "$BIN/clip-rank" -T "$tmp/bad.txt" "$tmp/s.png"
expect 2 "clip-rank: --top" "$BIN/clip-rank" -k 0 -p x "$tmp/s.png"
expect 2 "clip-rank: --relabel needs --format record" "$BIN/clip-rank" --relabel -p x "$tmp/s.png"
expect 2 "clip-rank: --format" "$BIN/clip-rank" -f json -p x "$tmp/s.png"
expect 2 "clip-rank: standard input can be read only once" "$BIN/clip-rank" -T - -
expect 2 "clip-rank: " "$BIN/clip-rank" --no-such-option

# ---- clip-lexicon ----
"$BIN/clip-lexicon" -v -k 3 red redsquare > "$tmp/x1" 2> "$tmp/e1"
grep -q "vocabulary entries encoded" "$tmp/e1" || fail "clip-lexicon: the first run did not encode the vocabulary"
ls "$UNCLIP_CACHE"/vocab-sha256-*.rec > /dev/null || fail "clip-lexicon: no cache in \$UNCLIP_CACHE"
printf 'piece\tredsquare\t1\tre\t516\npiece\tredsquare\t2\td\t67\npiece\tredsquare\t3\tsquare</w>\t527\n' |
    cmp -s - "$(grep '^piece.redsquare' "$tmp/x1" > "$tmp/x1p"; echo "$tmp/x1p")" || fail "clip-lexicon: pieces of redsquare"
grep -q "^text	red	1	red</w>	1.0000$" "$tmp/x1" || fail "clip-lexicon: red is not its own nearest token"
"$BIN/clip-lexicon" -v -k 3 red redsquare > "$tmp/x2" 2> "$tmp/e2"
grep -q "vocabulary entries read from" "$tmp/e2" || fail "clip-lexicon: the second run did not read the cache"
cmp -s "$tmp/x1" "$tmp/x2" || fail "clip-lexicon: the cache changes the answer"
"$BIN/clip-lexicon" --no-cache -k 3 red redsquare | cmp -s - "$tmp/x1" || fail "clip-lexicon --no-cache differs"
printf 'red\nredsquare\n' | "$BIN/clip-lexicon" -k 3 | cmp -s - "$tmp/x1" || fail "clip-lexicon: stdin words differ"
# a damaged cache is rebuilt, and the cache is a label bank
for f in "$UNCLIP_CACHE"/vocab-*.rec; do head -c 1000 "$f" > "$f.x" && mv "$f.x" "$f"; done
"$BIN/clip-lexicon" -k 3 red redsquare | cmp -s - "$tmp/x1" || fail "clip-lexicon: a damaged cache is not rebuilt"
"$BIN/clip-lexicon" -k 3 --cache "$tmp/v.rec" red > /dev/null
[ "$("$BIN/rec-dump" "$tmp/v.rec" | wc -l)" -eq 588 ] || fail "clip-lexicon --cache: not one record per token"
"$BIN/clip-rank" -T "$tmp/v.rec" -k 1 "$tmp/one-0.png" | cut -f2 | grep -q . || fail "the cache is not a label bank"
# a word list, as lines and as records
printf '%s\n' red green blue circle square triangle > "$tmp/words.txt"
"$BIN/clip-lexicon" -L "$tmp/words.txt" -k 1 redsquare | grep -qx "text	redsquare	1	square	.*" ||
    fail "clip-lexicon -L: redsquare is not nearest to square"
"$BIN/clip-encode" < "$tmp/words.txt" > "$tmp/words.rec"
"$BIN/clip-lexicon" -L "$tmp/words.txt" -k 6 redsquare > "$tmp/w1"
"$BIN/clip-lexicon" -L "$tmp/words.rec" -k 6 redsquare | cmp -s - "$tmp/w1" || fail "clip-lexicon -L: records differ from lines"
# --prior draws what prior-sample draws; --image reads its record
"$BIN/clip-lexicon" -L "$tmp/words.txt" -k 6 --prior -s 3 bluangle | grep '^prior' | cut -f3- > "$tmp/p1"
[ -s "$tmp/p1" ] || fail "clip-lexicon --prior: no prior lines"
"$BIN/clip-encode" bluangle | "$BIN/prior-sample" -s 3 > "$tmp/p.rec"
"$BIN/clip-lexicon" -L "$tmp/words.txt" -k 6 --image "$tmp/p.rec" | grep '^image' | cut -f3- | cmp -s - "$tmp/p1" ||
    fail "clip-lexicon --prior differs from prior-sample's draw"
"$BIN/clip-lexicon" -L "$tmp/words.txt" -k 2 --image "$tmp/one-1.png" | cut -f2,4 | sort | tr '\n' ' ' |
    grep -qx "$tmp/one-1.png	blue $tmp/one-1.png	square " || fail "clip-lexicon --image: two blue squares are not nearest to blue and square"
"$BIN/clip-lexicon" -L "$tmp/words.txt" -k 2 -f record red | "$BIN/rec-dump" > "$tmp/r.json"
[ "$(wc -l < "$tmp/r.json")" -eq 3 ] && grep -q '"kind":"text","query":"red","rank":1,"entry":"red","score":' "$tmp/r.json" ||
    fail "clip-lexicon -f record: rows"
# the full 49408-token vocabulary of a small random OpenAI-layout model
"$BIN/clip-lexicon" -m "$tmp/small.st" --cache "$tmp/big.rec" -k 2 avflugzereo > "$tmp/b1"
[ "$("$BIN/rec-dump" "$tmp/big.rec" | wc -l)" -eq 49408 ] || fail "clip-lexicon: not the whole OpenAI vocabulary"
grep '^piece' "$tmp/b1" | cut -f4 | tr '\n' ' ' | grep -qx 'av flu g ze reo</w> ' || fail "clip-lexicon: the pieces of avflugzereo"
"$BIN/clip-lexicon" -m "$tmp/small.st" --cache "$tmp/big.rec" -k 2 avflugzereo | cmp -s - "$tmp/b1" ||
    fail "clip-lexicon: the cached OpenAI vocabulary differs"
# errors
expect 1 "clip-lexicon: .*made with another model" sh -c "\"$BIN/clip-lexicon\" -v --cache \"$tmp/big.rec\" red > /dev/null"
expect 1 "text.rec: record 1: no field image (pixels) or image_emb" "$BIN/clip-lexicon" --image "$tmp/text.rec"
expect 1 "small.rec: record 1 field image_emb: shape \[32\]" "$BIN/clip-lexicon" --image "$tmp/small.rec"
expect 1 "s.rec: record 1 field text_emb: missing" "$BIN/clip-lexicon" -L "$tmp/s.rec" red
expect 1 "clip-lexicon: stdin: empty input" "$BIN/clip-lexicon" < /dev/null
expect 2 "clip-lexicon: --top" "$BIN/clip-lexicon" -k 0 red
expect 2 "clip-lexicon: --cache and --no-cache" "$BIN/clip-lexicon" --cache x --no-cache red
expect 2 "clip-lexicon: --format" "$BIN/clip-lexicon" -f json red
echo "clip_tools.sh: ok"
