#!/bin/sh
# Real sizes load and run: random weights at the released sizes, in the
# original layouts (OpenAI's ViT-L-14.pt TorchScript archive, Karlo's three
# Lightning checkpoints and ViT-L-14_stats.th), converted by unclip-convert to
# F32 and F16 model files, each of which then runs one forward of its stage in
# its tool, alone in a folder: clip-encode (a prompt and an image),
# clip-filter (the ViT-L/14 starter policy on the prompt, the image
# embedding and the picture),
# prior-sample and decoder-diffuse (2 steps, the fewest they take), upsample
# (2 steps: one of each UNet); with the F32 files an edit too (--image the
# stage's own output, --mask its right half, --resample 2: 3 network calls
# for 2 steps), its time per network call shown next to plain sampling's. Every output is checked for its fields' types,
# shapes and finite values, and for the converted file's checksum in
# models.<stage>.
# Prints a table of wall time, peak RSS and file size per step, also kept in
# DIR/realsize.txt.
#
#   tests/realsize.sh [--quick] [--keep] [--f32-only] [DIR]
#
#   DIR         work folder (default $TMPDIR/unclip-realsize, else
#               /tmp/unclip-realsize); needs 16 GB free (peak: the SR
#               checkpoint, its F32 and its F16 conversion)
#   --quick     the same files at small sizes (seconds; a smoke test)
#   --keep      keep the converted model files in DIR (about 21 GB more)
#   --f32-only  run the tools with the F32 files only (F16 still converted)
#
# Environment: BIN (default bin), NICE (niceness, default 5), THREADS (tools'
# -t, default all cores), PYTHON (with numpy). Not part of `make check`: the
# released sizes take about 15 GB of disk and many minutes of CPU.
set -eu
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
NICE=${NICE:-5}
quick='' keep='' f32only=''
while [ $# -gt 0 ]; do
    case $1 in
        --quick) quick=--quick ;;
        --keep) keep=1 ;;
        --f32-only) f32only=1 ;;
        -h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "realsize.sh: unknown option $1" >&2; exit 2 ;;
        *) break ;;
    esac
    shift
done
DIR=${1:-${TMPDIR:-/tmp}/unclip-realsize}

fail() {
    echo "realsize.sh: FAIL: $*" >&2
    exit 1
}
PY=
for p in ${PYTHON:-} /usr/bin/python3 python3; do
    if "$p" -c 'import numpy' 2> /dev/null; then PY=$p && break; fi
done
[ -n "$PY" ] || fail "needs Python 3 with numpy (Debian: python3-numpy)"
for t in unclip-convert unclip-spec clip-encode clip-filter prior-sample decoder-diffuse upsample rec-dump; do
    [ -x "$BIN/$t" ] || fail "$BIN/$t missing (make first)"
done
# the key lists of the released files come from the stages' descriptions
UNCLIP_SPEC=$(cd "$BIN" && pwd)/unclip-spec
export UNCLIP_SPEC
[ -x /usr/bin/time ] || fail "needs /usr/bin/time (Debian: time)"

mkdir -p "$DIR"
W=$(mktemp -d "$DIR/work.XXXXXX")
[ -n "$keep" ] || trap 'rm -rf "$W"' EXIT
need=16
[ -z "$keep" ] || need=37
[ -z "$quick" ] || need=1
free=$(df -Pk "$DIR" | awk 'NR == 2 { print int($4 / 1048576) }')
[ "$free" -ge "$need" ] || fail "$DIR: $free GB free, $need GB needed"

mk() { nice -n "$NICE" "$PY" tests/convert/mkinputs.py "$@"; }
# halfmask SIDE FILE: a SIDE x SIDE gray PNG, its right half white (redraw)
halfmask() {
    "$PY" - "$1" "$2" << 'EOF'
import struct, sys, zlib
n, path = int(sys.argv[1]), sys.argv[2]
raw = b"".join(b"\0" + bytes(255 if x >= n // 2 else 0 for x in range(n)) for _ in range(n))
def chunk(t, b):
    return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))
open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", n, n, 8, 0, 0, 0, 0))
                       + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
EOF
}
# per_call LABEL PLAIN_S PLAIN_CALLS EDIT_S EDIT_CALLS: a table row with both
per_call() {
    awk -v l="$1" -v a="$2" -v b="$3" -v c="$4" -v d="$5" 'BEGIN {
        printf "  %s: %.2f s a call plain, %.2f s a call edit (%d calls), ratio %.2f\n", l, a / b, c / d, d, (c / d) / (a / b) }' |
        tee -a "$TAB"
}
TAB=$W/table
: > "$TAB"
# measure LABEL STDOUT SIZEFILE CMD...: run CMD (niced) with stdout to
# STDOUT; a table row with its wall time, peak RSS and SIZEFILE's size
measure() {
    m_label=$1 m_out=$2 m_size=$3
    shift 3
    if ! /usr/bin/time -f '%e %M' -o "$W/time" nice -n "$NICE" "$@" > "$m_out" 2> "$W/err"; then
        cat "$W/err" >&2
        fail "$m_label: '$*' failed"
    fi
    read -r m_s m_kb < "$W/time"
    m_bytes=-
    [ -z "$m_size" ] || m_bytes=$(wc -c < "$m_size")
    printf '%-46s %9s %9d %14s\n' "$m_label" "$m_s" $((m_kb / 1024)) "$m_bytes" | tee -a "$TAB"
}
# check FILE FIELD=DTYPE:SHAPE...: the records of FILE have these fields
check() {
    c_file=$1
    shift
    "$BIN/rec-dump" "$c_file" > "$W/dump.jsonl" || fail "rec-dump $c_file"
    mk recshape "$W/dump.jsonl" "$@" > /dev/null || fail "$c_file: wrong output"
}
# convert STAGE FORMAT IN [OPTIONS]: IN to $W/STAGE-FORMAT/STAGE.safetensors
convert() {
    v_stage=$1 v_fmt=$2 v_in=$3
    shift 3
    set -- --"$v_fmt" "$@"
    [ -z "$quick" ] || set -- --config "$W/orig/$v_stage.json" "$@"
    mkdir -p "$W/$v_stage-$v_fmt"
    v_out=$W/$v_stage-$v_fmt/$v_stage.safetensors
    measure "convert $v_stage --$v_fmt" /dev/null "$v_out" "$BIN/unclip-convert" -q "$@" "$v_in" "$v_out"
    [ "$(ls -A "$W/$v_stage-$v_fmt")" = "$v_stage.safetensors" ] || fail "$v_stage-$v_fmt: more than the model"
    [ "$(mk meta "$v_out" unclip.stage)" = "$v_stage" ] || fail "$v_out: unclip.stage is not $v_stage"
    sum=$(mk meta "$v_out" unclip.checksum)
    eval "sum_${v_stage}_$v_fmt=\$sum"
}
formats=f32
[ -n "$f32only" ] || formats="f32 f16"
# the sizes of the outputs: clip_dim text_width ctx prior_dim image sr_image
clip_dim='' text_width='' ctx='' prior_dim='' image='' sr_image=''
eval "$(mk realinfo $quick)"
mk realkeys tests/golden/karlo/* tests/golden/clip/* > "$W/keys" || fail "the key enumeration does not give the golden cases"
cat "$W/keys"
export UNCLIP_MODELS="$W/none" # no default model anywhere: only -m
load0=$(cut -d' ' -f1-3 /proc/loadavg) start=$(date -u +%Y-%m-%dT%H:%MZ)
printf '%-46s %9s %9s %14s\n' step wall_s rss_mb bytes | tee -a "$TAB"

# ---- CLIP: OpenAI's TorchScript archive (F16 where convert_weights halves)
measure "write ViT-L-14.pt" /dev/null "" "$PY" tests/convert/mkinputs.py real clip "$W/orig" $quick
wc -c < "$W/orig/ViT-L-14.pt" | xargs printf '%-46s %9s %9s %14s\n' "  ViT-L-14.pt" - - | tee -a "$TAB"
for f in f32 f16; do convert clip $f "$W/orig/ViT-L-14.pt"; done
rm -f "$W/orig/ViT-L-14.pt"
png=tests/golden/clip/preprocess/rgb_large_320x241.png
for f in $formats; do
    m=$W/clip-$f/clip.safetensors
    eval "sum=\$sum_clip_$f"
    measure "clip-encode text ($f)" "$W/text-$f.rec" "" "$BIN/clip-encode" ${THREADS:+-t "$THREADS"} -m "$m" "a red cube on top of a blue cube"
    check "$W/text-$f.rec" tokens=I32:"$ctx" token_mask=U8:"$ctx" text_emb=F32:"$clip_dim" text_seq=F32:"$ctx","$text_width" \
        uncond.text_emb=F32:"$clip_dim" uncond.text_seq=F32:"$ctx","$text_width" models.clip.checksum=="$sum"
    measure "clip-encode --image ($f)" "$W/image-$f.rec" "" "$BIN/clip-encode" ${THREADS:+-t "$THREADS"} -m "$m" --image "$png"
    check "$W/image-$f.rec" image_emb=F32:"$clip_dim" text_emb=F32:"$clip_dim" models.clip.checksum=="$sum"
    # clip-filter with the ViT-L/14 starter policy (5 tag rules) at the three
    # points: the prompt, the image embedding, the picture; the concepts are
    # encoded by the first run and read from the cache by the others
    cp examples/policies/vit-l14-starter.txt "$W/policy-$f.txt"
    measure "clip-filter text, concepts encoded ($f)" "$W/filt-text-$f.rec" "$W/policy-$f.txt.cache.rec" \
        "$BIN/clip-filter" ${THREADS:+-t "$THREADS"} -m "$m" -p "$W/policy-$f.txt" "$W/text-$f.rec"
    check "$W/filt-text-$f.rec" filter.text.scores=F32:5 filter.text.clip=="$sum" text_emb=F32:"$clip_dim"
    measure "clip-filter image_emb ($f)" "$W/filt-emb-$f.rec" "" \
        "$BIN/clip-filter" ${THREADS:+-t "$THREADS"} -m "$m" -p "$W/policy-$f.txt" "$W/image-$f.rec"
    check "$W/filt-emb-$f.rec" filter.emb.scores=F32:5 filter.emb.clip=="$sum"
    measure "clip-filter picture ($f)" "$W/filt-png-$f.png" "" \
        "$BIN/clip-filter" ${THREADS:+-t "$THREADS"} -m "$m" -p "$W/policy-$f.txt" "$png"
    check "$W/filt-png-$f.png" filter.image.scores=F32:5 filter.image.clip=="$sum"
done
[ -n "$keep" ] || rm -rf "$W/clip-f32" "$W/clip-f16"

# ---- the prior (+ ViT-L-14_stats.th), the decoder, the super-resolution
# checkpoint: each converted, its original removed, run, its files removed
for stage in prior decoder sr; do
    case $stage in
        prior) ck=prior-ckpt-step=01000000-of-01000000.ckpt ;;
        decoder) ck=decoder-ckpt-step=01000000-of-01000000.ckpt ;;
        sr) ck=improved-sr-ckpt-step=1.2M.ckpt ;;
    esac
    measure "write $stage checkpoint" /dev/null "" "$PY" tests/convert/mkinputs.py real $stage "$W/orig" $quick
    wc -c < "$W/orig/$ck" | xargs printf '%-46s %9s %9s %14s\n' "  $ck" - - | tee -a "$TAB"
    set --
    [ $stage != prior ] || set -- --stats "$W/orig/ViT-L-14_stats.th"
    for f in f32 f16; do convert $stage $f "$W/orig/$ck" "$@"; done
    rm -f "$W/orig/$ck"
    for f in $formats; do
        m=$W/$stage-$f/$stage.safetensors
        eval "sum=\$sum_${stage}_$f"
        case $stage in
            prior)
                measure "prior-sample -S 2 ($f)" "$W/prior-$f.rec" "" \
                    "$BIN/prior-sample" ${THREADS:+-t "$THREADS"} -m "$m" -S 2 -s 7 "$W/text-f32.rec"
                check "$W/prior-$f.rec" image_emb=F32:"$prior_dim" text_seq=F32:"$ctx","$text_width" \
                    models.prior.checksum=="$sum"
                ;;
            decoder)
                measure "decoder-diffuse -S 2 ($f)" "$W/decoder-$f.rec" "" \
                    "$BIN/decoder-diffuse" ${THREADS:+-t "$THREADS"} -m "$m" -S 2 -f record "$W/prior-f32.rec"
                check "$W/decoder-$f.rec" image=U8:"$image","$image",3 image_emb=F32:"$prior_dim" \
                    models.decoder.checksum=="$sum"
                if [ "$f" = f32 ]; then
                    read -r t_plain _ < "$W/time"
                    halfmask "$image" "$W/mask.png"
                    measure "decoder-diffuse -S 2 edit --resample 2 ($f)" "$W/decoder-edit.rec" "" \
                        "$BIN/decoder-diffuse" ${THREADS:+-t "$THREADS"} -m "$m" -S 2 --resample 2 \
                        --image "$W/decoder-f32.rec" --mask "$W/mask.png" -f record "$W/prior-f32.rec"
                    read -r t_edit _ < "$W/time"
                    check "$W/decoder-edit.rec" image=U8:"$image","$image",3 models.decoder.checksum=="$sum"
                    per_call "decoder" "$t_plain" 2 "$t_edit" 3
                fi
                ;;
            sr)
                measure "upsample -S 2 ($f)" "$W/sr-$f.rec" "" \
                    "$BIN/upsample" ${THREADS:+-t "$THREADS"} -m "$m" -S 2 -f record "$W/decoder-f32.rec"
                # shellcheck disable=SC2154 # sum_decoder_f32 is set by convert (eval)
                check "$W/sr-$f.rec" image=U8:"$sr_image","$sr_image",3 models.sr.checksum=="$sum" \
                    models.decoder.checksum=="$sum_decoder_f32"
                if [ "$f" = f32 ]; then
                    read -r t_plain _ < "$W/time"
                    measure "upsample -S 2 edit --resample 2 ($f)" "$W/sr-edit.rec" "" \
                        "$BIN/upsample" ${THREADS:+-t "$THREADS"} -m "$m" -S 2 --resample 2 \
                        --image "$W/sr-f32.rec" --mask "$W/mask.png" -f record "$W/decoder-edit.rec"
                    read -r t_edit _ < "$W/time"
                    check "$W/sr-edit.rec" image=U8:"$sr_image","$sr_image",3 models.sr.checksum=="$sum"
                    per_call "upsample" "$t_plain" 2 "$t_edit" 3
                fi
                ;;
        esac
    done
    [ -n "$keep" ] || rm -rf "$W/$stage-f32" "$W/$stage-f16"
done
rm -rf "$W/orig"

{
    echo "realsize.sh: ${quick:-released sizes}, $start to $(date -u +%H:%MZ), $(nproc) cores," \
        "load $load0 at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end; NICE=$NICE"
    cat "$TAB"
} > "$DIR/realsize${quick:+-quick}.txt"
[ -z "$keep" ] || echo "realsize.sh: converted files kept in $W"
echo "realsize.sh: every stage loaded and ran; table in $DIR/realsize${quick:+-quick}.txt"
