#!/bin/sh
# eval-diversity.sh - how much the default model's layouts vary (issue 24).
#   sh scripts/eval-diversity.sh BIN DIR [CAPTIONS [SEEDS [SEED [VARIATIONS]]]]
# Seeds: CAPTIONS captions drawn from the grammar (shapes-render --random,
# seed SEED), each through clip-encode | prior-sample -n SEEDS |
# decoder-diffuse | upsample at the tools' defaults, judged by shapes-eval
# --quality: per caption the spread of the matched pictures' layouts (object
# centroids) and sizes over the world's spread for that caption (1: it
# varies as much as the world), averaged over the captions.
# Variations: for each of the first VARIATIONS captions, the pipeline's
# picture at its defaults (seed 0), then SEEDS variations of it
# (clip-encode --image | decoder-diffuse -n SEEDS | upsample), judged
# against the caption: do they keep it true, and vary its layout?
# Defaults 20 captions, 16 seeds, seed 1, 4 variations. Files stay in DIR.
# $DECODER_OPTS: more options of decoder-diffuse for the seeds and the
# variations (split at spaces), e.g. "--best-of 1".
set -eu
BIN=$1 DIR=$2 N=${3:-20} S=${4:-16} SEED=${5:-1} V=${6:-4}
mkdir -p "$DIR"
"$BIN/shapes-render" --random "$N" --seed "$SEED" --captions-only > "$DIR/captions.txt"
"$BIN/clip-encode" < "$DIR/captions.txt" > "$DIR/text.rec"
"$BIN/prior-sample" -q -n "$S" "$DIR/text.rec" > "$DIR/prior.rec"
"$BIN/decoder-diffuse" -q -f record ${DECODER_OPTS:-} "$DIR/prior.rec" > "$DIR/decoder.rec"
"$BIN/upsample" -q -f record "$DIR/decoder.rec" > "$DIR/images.rec"
"$BIN/shapes-eval" --quality -v "$DIR/images.rec" > "$DIR/seeds-v.txt"
grep -v '	' "$DIR/seeds-v.txt" > "$DIR/seeds.txt"
echo "seeds: $N captions x $S seeds"
cat "$DIR/seeds.txt"

[ "$V" -gt 0 ] || exit 0
: > "$DIR/variations.txt"
i=0
head -n "$V" "$DIR/captions.txt" | while IFS= read -r cap; do
    i=$((i + 1))
    "$BIN/clip-encode" "$cap" | "$BIN/prior-sample" -q | "$BIN/decoder-diffuse" -q -o "$DIR/var-$i.png"
    "$BIN/clip-encode" --image "$DIR/var-$i.png" | "$BIN/decoder-diffuse" -q -n "$S" -f record ${DECODER_OPTS:-} |
        "$BIN/upsample" -q -f record > "$DIR/var-$i.rec"
    "$BIN/shapes-eval" --quality -c "$cap" "$DIR/var-$i.rec" > "$DIR/var-$i.txt"
    awk -v cap="$cap" '$1 == "overall" { acc = $2 " " $3 } $1 == "position" { pos = $2 } $1 == "size" { size = $2 }
        END { printf "%s\taccuracy %s\tposition %s\tsize %s\n", cap, acc, pos, size }' "$DIR/var-$i.txt" \
        >> "$DIR/variations.txt"
done
echo "variations: $V pictures x $S variations (judged against the caption of the picture)"
cat "$DIR/variations.txt"
awk -F'\t' '{ split($3, p, " "); split($4, s, " "); if (p[2] != "-") { np++; sp += p[2] } if (s[2] != "-") { ns++; ss += s[2] } }
    END { printf "variations position %s, size %s (mean over the pictures with 2 or more matched variations)\n",
          np ? sprintf("%.3f", sp / np) : "-", ns ? sprintf("%.3f", ss / ns) : "-" }' "$DIR/variations.txt"
