#!/usr/bin/env bash
# gallery.sh - draw the pictures of examples/README.md with the default
# model: text to image, variations, interpolation and a text diff, each
# through the example script that shows how.
#
#   examples/gallery.sh [OUT-DIR]      (default: examples/pictures)
#
# Every picture is seeded, so a rerun on the same machine redraws the same
# bytes (another CPU may round differently and draw slightly other ones).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export BIN=${BIN:-$here/../bin}
out=${1:-$here/pictures}
mkdir -p "$out"
cd "$out"

# text to image: one prompt of each caption kind, two seeds each
i=0
while read -r prompt; do
    for seed in 1 2; do
        "$here/text-to-image.sh" "$prompt" "t2i-$i-$seed.png" "$seed" 2> /dev/null
    done
    i=$((i + 1))
done << 'PROMPTS'
a red circle above a blue square
a small green triangle
three yellow squares
a purple circle to the left of an orange triangle
PROMPTS

# variations of a rendered scene: the picture's CLIP embedding, four seeds
"$BIN/shapes-render" --size 128 "a blue circle to the right of a red triangle" > source.png
"$here/variations.sh" source.png 4 variation 2> /dev/null

# interpolation between two prompts' image embeddings, five frames
"$here/interpolation.sh" "a red square" "a blue circle" 5 frame 1 2> /dev/null

# text diff: the rendered red circle turned towards "a green circle"
"$BIN/shapes-render" --size 128 "a big red circle" > circle.png
"$here/textdiff.sh" circle.png "a big red circle" "a big green circle" 5 0.5 textdiff 2> /dev/null
# the ground: the decoder's 32 px picture, then upsampled on the whole
# picture (--tile 0: the pale patch of issue 24), on tiles of the 64 px
# the upsampler trained on (its unclip.default_tile) that only touch
# (--overlap 0), and on tiles that overlap by half (the default)
i=0
for prompt in "a small green triangle" "a yellow circle" "three orange triangles" "a red circle above a blue square"; do
    "$BIN/clip-encode" "$prompt" | "$BIN/prior-sample" -s 1 | "$BIN/decoder-diffuse" -s 1 > "ground-$i-32.png"
    "$BIN/upsample" --tile 0 "ground-$i-32.png" > "ground-$i-whole.png"
    "$BIN/upsample" --overlap 0 "ground-$i-32.png" > "ground-$i-touch.png"
    "$BIN/upsample" "ground-$i-32.png" > "ground-$i-tiles.png"
    i=$((i + 1))
done
ls "$out"
