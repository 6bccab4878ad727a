#!/bin/sh
# eval-edit.sh BIN DIR N SEED [decoder-diffuse options...] - the default
# model's edits judged (make eval-edit): shapes-edit makes N tasks in DIR
# (inpainting two-object scenes with one object changed, outpainting a half
# scene to the full one), each goes through clip-encode | prior-sample |
# decoder-diffuse --image ... | upsample --image ..., shapes-eval judges the
# results against the caption to reach, and shapes-edit --check that every
# kept pixel is unchanged at both stages. Prints the scores; the outputs
# stay in DIR. EDIT_UPSAMPLE (default empty) adds options to upsample.
set -e
BIN=$1 DIR=$2 N=$3 SEED=$4
shift 4
mkdir -p "$DIR"
rm -f "$DIR"/*.png "$DIR"/*.rec
"$BIN"/shapes-edit --tasks "$N" -s "$SEED" "$DIR" > "$DIR/tasks.txt"
start=$(date +%s)
while IFS='	' read -r i kind caption ext; do
    "$BIN"/clip-encode -q "$caption" | "$BIN"/prior-sample -q -s "$i" > "$DIR/$i-prior.rec"
    if [ "$kind" = inpaint ]; then
        "$BIN"/decoder-diffuse -q "$@" --image "$DIR/$i-pic.png" --mask "$DIR/$i-mask.png" \
            -o "$DIR/$i-dec.png" "$DIR/$i-prior.rec"
        "$BIN"/upsample -q $EDIT_UPSAMPLE --image "$DIR/$i-big.png" --mask "$DIR/$i-mask.png" \
            -o "$DIR/$i-out.png" "$DIR/$i-dec.png"
    else
        "$BIN"/decoder-diffuse -q "$@" --image "$DIR/$i-pic.png" --extend "$ext" \
            -o "$DIR/$i-dec.png" "$DIR/$i-prior.rec"
        "$BIN"/upsample -q $EDIT_UPSAMPLE --image "$DIR/$i-big.png" -o "$DIR/$i-out.png" "$DIR/$i-dec.png"
    fi
    echo "$i $kind $(( $(date +%s) - start )) s" >&2
done < "$DIR/tasks.txt"
ins=$(awk -F'\t' '$2 == "inpaint" {printf "%s/%s-out.png ", d, $1}' d="$DIR" "$DIR/tasks.txt")
outs=$(awk -F'\t' '$2 == "outpaint" {printf "%s/%s-out.png ", d, $1}' d="$DIR" "$DIR/tasks.txt")
"$BIN"/shapes-eval -v $ins > "$DIR/inpaint.txt"
"$BIN"/shapes-eval -v $outs > "$DIR/outpaint.txt"
"$BIN"/shapes-eval $ins $outs > "$DIR/all.txt"
{
    echo "edit tasks: $N (seed $SEED), decoder-diffuse $*, upsample $EDIT_UPSAMPLE"
    echo "inpainting:  $(grep '^overall' "$DIR/inpaint.txt")"
    echo "outpainting: $(grep '^overall' "$DIR/outpaint.txt")"
    echo "all:         $(grep '^overall' "$DIR/all.txt")"
    "$BIN"/shapes-edit --check "$DIR"
    echo "wall time: $(( $(date +%s) - start )) s"
} > "$DIR/scores.txt" 2>&1 || true
cat "$DIR/scores.txt"
grep -q "decoder $N of $N tasks, upsampler $N of $N" "$DIR/scores.txt"
