#!/bin/sh
# Hostile input: a table of truncated, corrupted and crafted streams, model
# files and PNGs. Each row runs one tool on one bad input and expects its
# exit status and a single line on standard error that names the problem
# (and, for streams, the record and the field). Inputs are crafted with
# tests/tools/craft.sh (msgpack by hand with printf) and dd, or are the PNGs
# of fuzz/corpus/fuzz_image, which serve as fuzzing seeds and fixtures.
set -eu
BIN=${BIN:-bin}
MKMODEL=${MKMODEL:?MKMODEL must name the test model maker}
G=tests/golden
PNGS=fuzz/corpus/fuzz_image
# the default model for the rows that use it (models/ beside bin/, or here)
[ "$(cd "$BIN/.." && pwd)" = "$(pwd)" ] || export UNCLIP_MODELS="$PWD/models"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "hostile.sh: $*" >&2
    exit 1
}
rows=0

# t STATUS PATTERN INPUT CMD...: CMD with INPUT on stdin exits STATUS; for a
# failure its standard error is one line that matches PATTERN (grep -E).
t() {
    want=$1 pat=$2 in=$3
    shift 3
    set +e
    "$@" < "$in" > "$tmp/out" 2> "$tmp/err"
    got=$?
    set -e
    rows=$((rows + 1))
    [ "$got" -lt 128 ] || { cat "$tmp/err" >&2; fail "row $rows: '$*' < $in ended by signal $((got - 128))"; }
    [ "$got" -eq "$want" ] || { cat "$tmp/err" >&2; fail "row $rows: '$*' < $in exited $got, expected $want"; }
    if [ "$want" -ne 0 ]; then
        # one line; a usage error (2) adds the "Try '... --help'" line
        [ "$(grep -cv "^Try '.* --help' for more information.$" "$tmp/err")" -eq 1 ] ||
            { cat "$tmp/err" >&2; fail "row $rows: '$*': not one line on stderr"; }
        grep -Eq -- "$pat" "$tmp/err" || { cat "$tmp/err" >&2; fail "row $rows: '$*': stderr lacks '$pat'"; }
    elif [ -n "$pat" ]; then
        grep -Eq -- "$pat" "$tmp/err" || { cat "$tmp/err" >&2; fail "row $rows: '$*': stderr lacks '$pat'"; }
    fi
}

# ---- crafted inputs (by, rep, map, arr, str, uint, tensor, stfile) ----
. tests/tools/craft.sh
# emb KEY DTYPE: a record {version: 1, KEY: DTYPE [4] of ones}
emb() {
    map 2
    str version
    by 1
    str "$1"
    case $2 in
    F32) tensor F32 16 4 && rep 4 $ONE ;;
    I32) tensor I32 16 4 && rep 4 1 0 0 0 ;;
    esac
}

# ---- models and valid inputs ----
"$MKMODEL" clip "$tmp/clip.st" 16 16 1 2 64 16 8
"$MKMODEL" prior "$tmp/prior.st" $G/karlo/prior-sample
"$MKMODEL" decoder "$tmp/dec.st" $G/karlo/decoder-forward
"$MKMODEL" sr "$tmp/sr.st" $G/karlo/sr-forward-updown
"$BIN/clip-encode" -m "$tmp/clip.st" "a red cube" > "$tmp/a.rec"
emb image_emb F32 > "$tmp/e.rec"
: > "$tmp/empty"

# ---- streams: every byte offset of a valid record ----
{ map 3 && str version && by 1 && str p && str ab && str x && tensor F32 4 1 && by $ONE; } > "$tmp/small.rec"
n=$(wc -c < "$tmp/small.rec")
i=1
while [ "$i" -lt "$n" ]; do
    head -c "$i" "$tmp/small.rec" > "$tmp/cut"
    t 1 '^rec-dump: stdin: record 1: stream ends inside the record \(truncated\)$' "$tmp/cut" "$BIN/rec-dump"
    i=$((i + 1))
done
# ... and of the second record: the first is printed, the second named
cat "$tmp/small.rec" "$tmp/small.rec" | head -c $((n + n / 2)) > "$tmp/cut"
t 1 'stdin: record 2: stream ends inside the record' "$tmp/cut" "$BIN/rec-dump"
[ "$(wc -l < "$tmp/out")" -eq 1 ] || fail "rec-dump: the record before the cut is not printed"
# every stage names the cut record
head -c 5000 "$tmp/a.rec" > "$tmp/cut"
t 1 'stdin: record 1: stream ends inside' "$tmp/cut" "$BIN/prior-sample" -m "$tmp/prior.st"
t 1 'stdin: record 1: stream ends inside' "$tmp/cut" "$BIN/decoder-diffuse" -m "$tmp/dec.st"
t 1 'stdin: record 1: stream ends inside' "$tmp/cut" "$BIN/upsample" -m "$tmp/sr.st"
t 1 'stdin: record 1: stream ends inside' "$tmp/cut" "$BIN/emb-interp"
t 1 'stdin: record 1: stream ends inside' "$tmp/cut" "$BIN/shapes-eval"
t 1 'cut: record 1: stream ends inside' "$tmp/empty" "$BIN/emb-textdiff" "$tmp/cut" "$tmp/a.rec" "$tmp/a.rec"

# ---- streams: empty input ----
# A stage needs a record in each input (an upstream stage that failed
# leaves nothing); rec-dump and shapes-eval only look, and print nothing or
# an empty summary.
t 1 '^prior-sample: stdin: empty input \(no images or records\)$' "$tmp/empty" "$BIN/prior-sample" -m "$tmp/prior.st"
t 1 '^decoder-diffuse: stdin: empty input \(no images or records\)$' "$tmp/empty" "$BIN/decoder-diffuse" -m "$tmp/dec.st"
t 1 '^upsample: stdin: empty input \(no images or records\)$' "$tmp/empty" "$BIN/upsample" -m "$tmp/sr.st"
t 1 '^upsample: .*/empty: empty input' "$tmp/empty" "$BIN/upsample" --fast "$PNGS/rgb8.png" "$tmp/empty"
t 1 '^clip-encode: stdin: empty input \(no prompts\)$' "$tmp/empty" "$BIN/clip-encode" -m "$tmp/clip.st"
printf '\n\r\n\n' > "$tmp/in"
t 1 '^clip-encode: stdin: empty input \(no prompts\)$' "$tmp/in" "$BIN/clip-encode" -m "$tmp/clip.st"
t 1 '^emb-interp: stdin: no record for A$' "$tmp/empty" "$BIN/emb-interp"
t 1 '^emb-interp: stdin: no record for B' "$tmp/e.rec" "$BIN/emb-interp"
t 1 '^emb-textdiff: .*/empty: no record' "$tmp/empty" "$BIN/emb-textdiff" "$tmp/empty" "$tmp/a.rec" "$tmp/a.rec"
t 0 '' "$tmp/empty" "$BIN/rec-dump"
[ ! -s "$tmp/out" ] || fail "rec-dump printed something for an empty stream"

# ---- streams: crafted records ----
emb image_emb I32 > "$tmp/in"
t 1 'record 1 field image_emb: dtype I32, expected a float type' "$tmp/in" "$BIN/emb-interp" - "$tmp/e.rec"
{ map 2 && str version && by 1 && str image_emb && tensor I32 128 32 && rep 32 1 0 0 0; } > "$tmp/in"
t 1 'record 1 field image_emb: dtype I32, expected a float type' "$tmp/in" "$BIN/decoder-diffuse" -m "$tmp/dec.st"
{ map 2 && str version && by 1 && str image_emb && tensor F32 16 2 2 && rep 4 $ONE; } > "$tmp/in"
t 1 'record 1 field image_emb: shape \[2, ?2\] has rank 2, expected 1' "$tmp/in" "$BIN/emb-interp" - "$tmp/e.rec"
t 1 'record 1 field image_emb: shape \[2, ?2\], but the decoder model needs \[32\]' "$tmp/in" "$BIN/decoder-diffuse" -m "$tmp/dec.st"
t 1 'record 1 field image_emb: shape \[4\], but the decoder model needs \[32\]' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/dec.st"
{ map 2 && str version && by 1 && str image && tensor F32 48 2 2 3 && rep 12 $ONE; } > "$tmp/in"
t 1 'record 1 field image: .*U8' "$tmp/in" "$BIN/upsample" -m "$tmp/sr.st"
{ map 2 && str version && by 1 && str image && tensor U8 12 2 2 3 2 && rep 12 0; } > "$tmp/in"
t 1 'record 1 field image: ' "$tmp/in" "$BIN/upsample" -m "$tmp/sr.st"
# an image whose upscaled output could not travel in a record: refused
# before any work
{ map 2 && str version && by 1 && str image && map 3 && str dtype && str U8 && str shape && arr 3 && uint 530 &&
    uint 530 && by 3 && str data && by 198 0 12 219 204 && head -c 842700 /dev/zero; } > "$tmp/in"
t 1 'record 1 field image: 530x530 times 4 would not fit in a record' "$tmp/in" "$BIN/upsample" --fast --float
# declared sizes far beyond the data
{ map 2 && str version && by 1 && str image_emb && tensor F32 16 1000000 && rep 4 $ONE; } > "$tmp/in"
t 1 'record 1 field image_emb: 16 data bytes, but dtype F32 and the shape need 4000000' "$tmp/in" "$BIN/emb-interp" - "$tmp/e.rec"
{ map 2 && str version && by 1 && str image_emb && by 198 255 255 255 255 && rep 4 $ONE; } > "$tmp/in"
t 1 'stdin: record 1: larger than the record size limit' "$tmp/in" "$BIN/rec-dump"
{ map 2 && str version && by 1 && str image_emb && by 198 1 0 0 0 && rep 4 $ONE; } > "$tmp/in"
t 1 'stdin: record 1: stream ends inside the record' "$tmp/in" "$BIN/rec-dump"
{ by 223 255 255 255 255 && str version && by 1; } > "$tmp/in"
t 1 'stdin: record 1: larger than the record size limit' "$tmp/in" "$BIN/rec-dump"
{ map 2 && str version && by 1 && str x && by 219 255 255 255 255 && str abc; } > "$tmp/in"
t 1 'stdin: record 1: larger than the record size limit' "$tmp/in" "$BIN/rec-dump"
{ map 2 && str version && by 1 && str x && rep 40 145 && by 1; } > "$tmp/in"
t 1 'stdin: record 1: nested too deeply' "$tmp/in" "$BIN/rec-dump"
# a million values (msgpack-c spends 24 bytes on each); 200 000 keys with a
# duplicate at the end (found by sorting, not by comparing every pair)
{ map 2 && str version && by 1 && str x && by 221 0 16 200 224 && head -c 1100000 /dev/zero | tr '\0' '\300'; } > "$tmp/in"
t 1 'stdin: record 1: more than 1048576 values' "$tmp/in" "$BIN/rec-dump"
{ by 223 0 3 13 66 && str version && by 1 &&
    awk 'BEGIN { for (i = 0; i < 200000; i++) printf "{%c%c%c%c}", 65 + i % 26, 65 + int(i / 26) % 26,
        65 + int(i / 676) % 26, 65 + int(i / 17576) % 26; printf "{AAAA}" }' | tr '{}' '\244\300'; } > "$tmp/in"
t 1 'stdin: record 1 field AAAA: duplicate key' "$tmp/in" "$BIN/rec-dump" --fields
# shape products that overflow, sizes that do not fit int64
{ map 2 && str version && by 1 && str image_emb && map 3 && str dtype && str F32 && str shape && arr 2 &&
    by 207 64 0 0 0 0 0 0 0 207 64 0 0 0 0 0 0 0 && str data && by 196 16 && rep 4 $ONE; } > "$tmp/in"
t 1 'record 1 field image_emb: shape product overflows' "$tmp/in" "$BIN/emb-interp" - "$tmp/e.rec"
{ map 2 && str version && by 1 && str image_emb && map 3 && str dtype && str F32 && str shape && arr 1 &&
    by 207 255 255 255 255 255 255 255 255 && str data && by 196 16 && rep 4 $ONE; } > "$tmp/in"
t 1 'record 1 field image_emb: shape\[0\] is not a non-negative integer' "$tmp/in" "$BIN/emb-interp" - "$tmp/e.rec"
{ map 2 && str version && by 1 && str image_emb && map 3 && str dtype && str F32 && str shape && arr 9 &&
    rep 9 1 && str data && by 196 4 && rep 1 $ONE; } > "$tmp/in"
t 1 'record 1 field image_emb: shape is not an array of at most 8' "$tmp/in" "$BIN/emb-interp" - "$tmp/e.rec"
{ map 2 && str version && by 1 && str image_emb && map 3 && str dtype && str F33 && str shape && arr 1 &&
    by 4 && str data && by 196 16 && rep 4 $ONE; } > "$tmp/in"
t 1 "record 1 field image_emb: unknown dtype 'F33'" "$tmp/in" "$BIN/emb-interp" - "$tmp/e.rec"
# duplicate keys, in a record and in a tensor
{ map 3 && str version && by 1 && str prompt && str a && str prompt && str b; } > "$tmp/in"
t 1 'stdin: record 1 field prompt: duplicate key' "$tmp/in" "$BIN/rec-dump"
{ map 2 && str version && by 1 && str image_emb && map 4 && str dtype && str F32 && str shape && arr 1 && by 4 &&
    str data && by 196 16 && rep 4 $ONE && str dtype && str F32; } > "$tmp/in"
t 1 'record 1 field image_emb: duplicate key dtype inside it' "$tmp/in" "$BIN/emb-interp" - "$tmp/e.rec"
# not a map, no version, another version, a key that is not a string
{ arr 2 && by 1 2; } > "$tmp/in"
t 1 'stdin: record 1: not a map' "$tmp/in" "$BIN/rec-dump"
{ emb image_emb F32 && by 7; } > "$tmp/in"
t 1 'stdin: record 2: not a map' "$tmp/in" "$BIN/rec-dump"
{ map 1 && str prompt && str a; } > "$tmp/in"
t 1 'stdin: record 1 field version: missing' "$tmp/in" "$BIN/rec-dump"
{ map 1 && str version && by 2; } > "$tmp/in"
t 1 'stdin: record 1 field version: unknown format version 2' "$tmp/in" "$BIN/rec-dump"
{ map 1 && str version && str 1; } > "$tmp/in"
t 1 'record 1 field version: not a non-negative integer' "$tmp/in" "$BIN/rec-dump"
{ map 2 && str version && by 1 && by 5 && by 1; } > "$tmp/in"
t 1 'stdin: record 1: a key is not a string' "$tmp/in" "$BIN/rec-dump"
{ by 193; } > "$tmp/in"
t 1 'stdin: record 1: malformed msgpack' "$tmp/in" "$BIN/rec-dump"
# NaN and infinite embeddings
{ map 2 && str version && by 1 && str image_emb && tensor F32 16 4 && by $ONE $ONE $NAN $ONE; } > "$tmp/in"
t 1 'record 1 field image_emb: element 2 is not finite' "$tmp/in" "$BIN/emb-interp" - "$tmp/e.rec"
{ map 2 && str version && by 1 && str image_emb && tensor F32 128 32 && rep 31 $ONE && by $INF; } > "$tmp/in"
t 1 'record 1 field image_emb: element 31 is not finite' "$tmp/in" "$BIN/decoder-diffuse" -m "$tmp/dec.st"
{ map 2 && str version && by 1 && str image_emb && tensor F16 4 2 && by 0 124 0 60; } > "$tmp/in"
t 1 'record 1 field image_emb: element 0 is not finite' "$tmp/in" "$BIN/emb-interp" - "$tmp/e.rec"
# strings: a prompt that is not UTF-8 reaches the PNG text chunks
{ map 3 && str version && by 1 && str prompt && by 162 255 65 && str image && tensor U8 12 2 2 3 && rep 12 9; } > "$tmp/in"
t 1 'record 1 field prompt: not valid UTF-8' "$tmp/in" "$BIN/upsample" --fast

# ---- prompts ----
words=$(i=0 && while [ $i -lt 100 ]; do printf 'cube '; i=$((i + 1)); done)
t 0 'prompt 1: 102 tokens, truncated to the context of 77' "$tmp/empty" "$BIN/clip-encode" -m "$tmp/clip.st" "$words"
"$BIN/rec-dump" "$tmp/out" | grep -q '"truncated":1' || fail "clip-encode: a truncated prompt is not marked"
t 1 'prompt 1: .*UTF-8' "$tmp/empty" "$BIN/clip-encode" -m "$tmp/clip.st" "$(printf 'caf\351')"
printf 'a cube\n\377\376\n' > "$tmp/in"
t 1 'stdin line 2: .*UTF-8' "$tmp/in" "$BIN/clip-encode" -m "$tmp/clip.st"
printf 'a cube\nnul \000 byte\n' > "$tmp/in"
t 1 'stdin line 2: contains a NUL byte' "$tmp/in" "$BIN/clip-encode" -m "$tmp/clip.st"
printf '&#%04301d;\n' 1 > "$tmp/in"
t 1 'stdin line 1: text: numeric character reference with 4301 digits' "$tmp/in" "$BIN/clip-encode" -m "$tmp/clip.st"
head -c 17000000 /dev/zero | tr '\0' 'a' > "$tmp/in"
t 1 'stdin line 1: text: 17000000 bytes, more than the limit 16777216' "$tmp/in" "$BIN/clip-encode" -m "$tmp/clip.st"

# ---- model files ----
t 1 'a prior model, not a decoder model' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/prior.st"
t 1 'a decoder model, not a prior model' "$tmp/a.rec" "$BIN/prior-sample" -m "$tmp/dec.st"
t 1 'a decoder model, not an sr model' "$tmp/e.rec" "$BIN/upsample" -m "$tmp/dec.st"
t 1 'stage.*sr.*clip|clip.*sr' "$tmp/empty" "$BIN/clip-encode" -m "$tmp/sr.st" "a cube"
t 1 'clip.*decoder|decoder.*clip' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/clip.st"
t 1 'nothing.st: No such file' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/nothing.st"
t 1 'empty: not a safetensors file' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/empty"
# header length past the end
cp "$tmp/dec.st" "$tmp/bad.st"
by 255 255 255 0 | dd of="$tmp/bad.st" bs=1 conv=notrunc 2> /dev/null
t 1 'bad.st: header length 16777215 past the end of the file' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
head -c 4000 "$tmp/dec.st" > "$tmp/bad.st"
t 1 'bad.st: header length [0-9]+ past the end' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
# a missing tensor: rename one, keeping the header's length
off=$(grep -boa '"model.out.2.bias"' "$tmp/dec.st" | head -1 | cut -d: -f1)
cp "$tmp/dec.st" "$tmp/bad.st"
printf X | dd of="$tmp/bad.st" bs=1 seek=$((off + 16)) conv=notrunc 2> /dev/null
t 1 'tensor model.out.2.bias: missing' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
# a tensor whose shape disagrees with the config
off=$(grep -boa '"model.cf_param":{"dtype":"F32","shape":\[32\]' "$tmp/dec.st" | head -1 | cut -d: -f1)
cp "$tmp/dec.st" "$tmp/bad.st"
printf '"shape":[16],"data_offsets":[0, 64]}' > "$tmp/patch"
grep -q '"model.cf_param":{"dtype":"F32","shape":\[32\],"data_offsets":\[0,128\]}' "$tmp/dec.st" ||
    fail "decoder test model: unexpected header layout"
dd if="$tmp/patch" of="$tmp/bad.st" bs=1 seek=$((off + 32)) conv=notrunc 2> /dev/null
t 1 'model.cf_param' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
# small crafted files: out-of-range and overlapping offsets, bad dtype,
# duplicate names, a header that is not JSON
stfile '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,800]}}' 8 > "$tmp/bad.st"
t 1 'bad.st: tensor a: data_offsets outside the 8 data bytes' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
stfile '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}' 12 > "$tmp/bad.st"
t 1 'bad.st: tensors a and b overlap' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
stfile '{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}' 8 > "$tmp/bad.st"
t 1 'bad.st: tensor a: 8 data bytes do not match its dtype and shape' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
stfile '{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}' 8 > "$tmp/bad.st"
t 1 'bad.st: tensor a: 8 data bytes do not match' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
stfile '{"a":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}' 8 > "$tmp/bad.st"
t 1 'bad.st: tensor a: unknown dtype Q4' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
stfile '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}' 16 > "$tmp/bad.st"
t 1 'bad.st: tensor a: duplicate name' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
stfile '{"__metadata__":{"a":"1","b":"2","c":"3","d":"4","e":"5"},"__metadata__":{"x":"1"}}' 0 > "$tmp/bad.st"
t 1 'bad.st: __metadata__: duplicate name' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
stfile '{"__metadata__":{"unclip.stage":7}}' 0 > "$tmp/bad.st"
t 1 'bad.st: __metadata__.unclip.stage is not a string' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
stfile '{"__metadata__":{"unclip.stage":"pri\nor\u0007"}}' 0 > "$tmp/bad.st"
t 1 'bad.st: a pri\?or\? model, not a decoder model' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
# 100 000 tensors with a duplicate at the end (found by sorting)
awk 'BEGIN { printf "{"; for (i = 0; i < 100000; i++) printf "\"t%06d\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]},", i
    printf "\"t000000\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}" }' > "$tmp/hdr"
l=$(wc -c < "$tmp/hdr")
{ by $((l & 255)) $((l >> 8 & 255)) $((l >> 16 & 255)) 0 0 0 0 0 && cat "$tmp/hdr"; } > "$tmp/bad.st"
t 1 'bad.st: tensor t000000: duplicate name' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
stfile '{"a":' 0 > "$tmp/bad.st"
t 1 'bad.st: header is not a JSON object' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
stfile '{"__metadata__":{"unclip.stage":"decoder","unclip.config":"{\"model\":"}}' 0 > "$tmp/bad.st"
t 1 'bad.st: .*unclip.config' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
# config numbers far outside int (casting them would be undefined)
stfile '{"__metadata__":{"unclip.stage":"decoder","unclip.config":"{\"model\":{\"hparams\":{\"num_channels\":1e99}},\"diffusion\":{}}"}}' 0 > "$tmp/bad.st"
t 1 'bad.st: decoder config: config num_channels: 1e\+99 is not an integer in 1\.\.' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
stfile '{"__metadata__":{"unclip.stage":"decoder","unclip.config":"{\"model\":{\"hparams\":{\"image_size\":64,\"num_channels\":32,\"channel_mult\":[1e99]}},\"diffusion\":{}}"}}' 0 > "$tmp/bad.st"
t 1 'bad.st: .*channel_mult: entry 1 is not an integer' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
stfile '{"__metadata__":{"unclip.stage":"prior","unclip.config":"{\"model\":{\"hparams\":{\"xf_width\":1e300}}}"}}' 0 > "$tmp/bad.st"
t 1 'bad.st: ' "$tmp/a.rec" "$BIN/prior-sample" -m "$tmp/bad.st"

# ---- PNGs ----
"$BIN/upsample" --fast "$PNGS/rgb8.png" > "$tmp/ok.png"
n=$(wc -c < "$tmp/ok.png")
for cut in 8 33 $((n / 2)) $((n - 1)); do
    head -c "$cut" "$tmp/ok.png" > "$tmp/cut.png"
    t 1 'cut.png: image 1: bad PNG: truncated' "$tmp/empty" "$BIN/upsample" --fast "$tmp/cut.png"
done
head -c 5 "$tmp/ok.png" > "$tmp/cut.png"
t 1 'cut.png: record 1: stream ends inside' "$tmp/empty" "$BIN/upsample" --fast "$tmp/cut.png"
t 1 'cut.png: not a PNG file' "$tmp/empty" "$BIN/clip-encode" -m "$tmp/clip.st" --image "$tmp/cut.png"
head -c 100 "$tmp/ok.png" > "$tmp/cut.png"
t 1 'cut.png: bad PNG: truncated' "$tmp/empty" "$BIN/clip-encode" -m "$tmp/clip.st" --image "$tmp/cut.png"
t 1 'stdin: bad PNG: truncated' "$tmp/cut.png" "$BIN/clip-encode" -m "$tmp/clip.st" --image -
t 1 'stdin: image 1: bad PNG: truncated' "$tmp/cut.png" "$BIN/shapes-eval"
# a prompt that is not a string: the record and field named once (it said
# "stdin: record 1: record 1 field prompt")
{ map 2 && str version && by 1 && str prompt && by 7; } > "$tmp/in"
t 1 '^shapes-eval: stdin: record 1 field prompt: ' "$tmp/in" "$BIN/shapes-eval"
# ... and a stage finds it in its input, not when it writes its output (it
# said "stdout: record 1 field prompt", and with -f record passed it on)
{ map 3 && str version && by 1 && str prompt && by 7 && str image_emb && tensor F32 16 4 && rep 4 $ONE; } > "$tmp/in"
t 1 '^decoder-diffuse: stdin: record 1 field prompt: ' "$tmp/in" "$BIN/decoder-diffuse" -m "$tmp/dec.st" -f record
# bad CRCs: in IHDR, IDAT, and a text chunk (which may carry the record)
cp "$tmp/ok.png" "$tmp/crc.png"
by 255 | dd of="$tmp/crc.png" bs=1 seek=29 conv=notrunc 2> /dev/null
t 1 'crc.png: image 1: bad PNG: IHDR: CRC error' "$tmp/empty" "$BIN/upsample" --fast "$tmp/crc.png"
t 1 'crc.png: bad PNG: IHDR: CRC error' "$tmp/empty" "$BIN/clip-encode" -m "$tmp/clip.st" --image "$tmp/crc.png"
cp "$tmp/ok.png" "$tmp/crc.png"
by 0 | dd of="$tmp/crc.png" bs=1 seek=$((n - 13)) conv=notrunc 2> /dev/null
t 1 'crc.png: image 1: bad PNG: IDAT: CRC error' "$tmp/empty" "$BIN/upsample" --fast "$tmp/crc.png"
off=$(grep -boa 'tEXtparameters' "$tmp/ok.png" | head -1 | cut -d: -f1)
cp "$tmp/ok.png" "$tmp/crc.png"
printf X | dd of="$tmp/crc.png" bs=1 seek=$((off + 4)) conv=notrunc 2> /dev/null
t 1 'crc.png: image 1: bad PNG: tEXt: CRC error' "$tmp/empty" "$BIN/upsample" --fast "$tmp/crc.png"
# declared sizes far beyond the data and the limits
t 1 'huge-side.png: image 1: bad PNG: .*width exceeds user limit' "$tmp/empty" "$BIN/upsample" --fast "$PNGS/huge-side.png"
t 1 'huge-pixels.png: image 1: bad PNG: 16000x16000 pixels is above the limit' "$tmp/empty" "$BIN/upsample" --fast "$PNGS/huge-pixels.png"
t 1 'huge-pixels.png: bad PNG: 16000x16000 pixels' "$tmp/empty" "$BIN/clip-encode" -m "$tmp/clip.st" --image "$PNGS/huge-pixels.png"
t 1 'text-huge.png: image 1: bad PNG: tEXt: chunk data is too large' "$tmp/empty" "$BIN/rec-dump" "$PNGS/text-huge.png"
t 1 'carried-bad.png: image 1: text chunk unclip-record: base64' "$tmp/empty" "$BIN/rec-dump" "$PNGS/carried-bad.png"
cat "$PNGS/rgb8.png" "$tmp/e.rec" > "$tmp/mixed"
t 1 'stdin: image 2: not a PNG signature after image 1' "$tmp/mixed" "$BIN/upsample" --fast
# 16-bit, gray, gray+alpha, palette (with transparency), 1-bit and
# interlaced PNGs are read, as U8 [H, W, 3]
set -- rgb16 gray16 gray8 graya rgba palette palette-trns
t 0 '' "$tmp/empty" "$BIN/rec-dump" $(for f; do echo "$PNGS/$f.png"; done)
[ "$(grep -c '"image":{"dtype":"U8","shape":\[4,4,3\]' "$tmp/out")" -eq $# ] || fail "PNGs not read as U8 [4, 4, 3]"
t 0 '' "$tmp/empty" "$BIN/clip-encode" -m "$tmp/clip.st" --image $(for f; do echo "$PNGS/$f.png"; done)
[ "$("$BIN/rec-dump" --fields "$tmp/out" | grep -c image_emb)" -eq $# ] || fail "clip-encode --image: not one record per PNG"
t 0 '' "$PNGS/gray1.png" "$BIN/rec-dump"
grep -q '"shape":\[2,8,3\],"values":\[255,255,255,0,0,0,255,255\]' "$tmp/out" || fail "gray1.png: wrong pixels"
t 0 '' "$PNGS/interlaced.png" "$BIN/upsample" --fast -f record
"$BIN/rec-dump" "$tmp/out" | grep -q '"shape":\[36,36,3\]' || fail "interlaced.png: not upsampled"
t 0 '' "$PNGS/rgb16.png" "$BIN/rec-dump" --full
grep -q '"values":\[0,0,156,35,0,156,70,0,156,105,0,156,0,35,156' "$tmp/out" || fail "rgb16.png: not narrowed to 8 bits"

# ---- second round (issue 26): sums, nested duplicates, JSON of bad bytes ----

# duplicate keys inside a nested map, and inside a safetensors __metadata__
{ map 2; str version; uint 1; str params; map 1; str prior; map 2; str steps; uint 5; str steps; uint 6; } > "$tmp/in"
t 1 'stdin: record 1 field params: duplicate key steps inside it' "$tmp/in" "$BIN/rec-dump"
{ map 2; str version; uint 1; str history; arr 2; map 1; str tool; str a; map 2; str x; uint 1; str x; uint 1; } > "$tmp/in"
t 1 'record 1 field history: duplicate key x inside it' "$tmp/in" "$BIN/rec-dump"
stfile '{"__metadata__":{"unclip.stage":"decoder","unclip.stage":"prior"}}' 0 > "$tmp/bad.st"
t 1 'bad.st: __metadata__.unclip.stage: duplicate name' "$tmp/e.rec" "$BIN/decoder-diffuse" -m "$tmp/bad.st"

# bytes that are not UTF-8 in a string field: rec-dump still prints JSON
{ map 2; str version; uint 1; str source; by 164 255 65 0 192; } > "$tmp/in"
t 0 '' "$tmp/in" "$BIN/rec-dump"
python3 -c 'import json, sys; v = json.load(open(sys.argv[1]))["source"]; assert v == "\ufffdA\ufffd\ufffd", v' "$tmp/out" ||
    fail "rec-dump: bytes that are not UTF-8 not shown as U+FFFD"

# text chunks that inflate, each under the per-chunk limit, past the sum
python3 - "$tmp/bomb.png" << 'PY'
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
ihdr = struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)
text = b"".join(chunk(b"zTXt", b"k%d\0\0" % i + zlib.compress(b"a" * (30 << 20), 9)) for i in range(6))
idat = chunk(b"IDAT", zlib.compress(b"".join(b"\0" + b"\xff" * 12 for _ in range(4))))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + text + idat + chunk(b"IEND", b""))
PY
t 1 'bomb.png: image 1: bad PNG: zTXt: .*more than 128 MiB in all' "$tmp/empty" "$BIN/rec-dump" "$tmp/bomb.png"
t 1 'bomb.png: bad PNG: zTXt: .*more than 128 MiB in all' "$tmp/empty" "$BIN/clip-encode" -m "$tmp/clip.st" --image "$tmp/bomb.png"

# class 1: an image embedding of 1e37 (finite) made the decoder compute
# NaN, a black picture; a value past 1e4, which no CLIP output comes near,
# is refused by the reader. A stage checks what it computes: a NaN in the
# model's weights is exit 1 naming the record, the field and the stage
"$BIN/clip-encode" "a red circle" | "$BIN/prior-sample" -S 2 > "$tmp/p.rec" # the default model
python3 - "$tmp/p.rec" "$tmp/huge.rec" << 'PY'
import struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
i = b.index(b"\xa9image_emb")
j = b.index(b"\xa4data", i) + 5
n = b[j + 1] if b[j] == 0xC4 else struct.unpack(">H", b[j + 1:j + 3])[0]
k = j + (2 if b[j] == 0xC4 else 3)
b[k:k + n] = struct.pack("<%df" % (n // 4), *[1e37] * (n // 4))
open(sys.argv[2], "wb").write(b)
PY
t 1 '^decoder-diffuse: stdin: record 1 field image_emb: element 0 is 1e\+37, past the bound of 10000$' "$tmp/huge.rec" \
    "$BIN/decoder-diffuse" --best-of 1 -S 2
python3 - models/decoder.safetensors "$tmp/nan.st" << 'PY'
import json, struct, sys
b = bytearray(open(sys.argv[1], "rb").read())
n = struct.unpack("<Q", b[:8])[0]
t = json.loads(b[8:8 + n])["model.time_embed.2.bias"]
k = 8 + n + t["data_offsets"][0]
b[k:k + 4] = {"F16": b"\x00\x7e\x00\x7e", "BF16": b"\xc0\x7f\xc0\x7f", "F32": b"\x00\x00\xc0\x7f"}[t["dtype"]]
open(sys.argv[2], "wb").write(b)
PY
t 1 'record 1 field image: decoder-diffuse computed NaN' "$tmp/p.rec" "$BIN/decoder-diffuse" -m "$tmp/nan.st" --best-of 1 -S 2
[ ! -s "$tmp/out" ] || fail "decoder-diffuse wrote a picture of NaN"
# DDIM's --eta: at 1 (DDPM's variance) rounding made the first step's
# sqrt(1 - acp_prev - sigma^2) NaN with -S 2; past 1 every sample was NaN
t 0 '' "$tmp/p.rec" "$BIN/decoder-diffuse" --best-of 1 -S 2 --sampler ddim --eta 1
t 2 "^decoder-diffuse: --eta: '1.01' is not in \[0, 1\]$" "$tmp/p.rec" "$BIN/decoder-diffuse" -S 2 --sampler ddim --eta 1.01
# a field of a nested map is named with its place: a NaN in uncond.text_emb
# was reported as one in text_emb, and unclip-replay said "record 1 field
# params.decoder.steps: record 1 field steps: not a string"
python3 - "$tmp/p.rec" "$tmp/in" << 'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
i = b.index(b"\xa4data", b.index(b"\xa8text_emb", b.index(b"\xa6uncond")))
k = i + 5 + {0xC4: 2, 0xC5: 3, 0xC6: 5}[b[i + 5]]
b[k:k + 4] = b"\x00\x00\xc0\x7f"
open(sys.argv[2], "wb").write(b)
PY
t 1 '^prior-sample: stdin: record 1 field uncond.text_emb: element 0 is not finite$' "$tmp/in" "$BIN/prior-sample" -S 2
"$BIN/decoder-diffuse" -S 2 --best-of 1 -f record "$tmp/p.rec" > "$tmp/d.rec"
python3 -c 'import sys; b = open(sys.argv[1], "rb").read(); i = b.rindex(b"\xa5steps\xa12")
open(sys.argv[2], "wb").write(b[:i + 6] + b"\xcc\x02" + b[i + 8:])' "$tmp/d.rec" "$tmp/in"
t 1 '^unclip-replay: record 1 field params.decoder.steps: not a string$' "$tmp/empty" "$BIN/unclip-replay" "$tmp/in"
# numbers: an underflow is its tiny value (4.9e-324 was "not a number"),
# an overflow or infinity out of range, NaN not a number
t 2 "^decoder-diffuse: --guidance: '1e400' is out of range \(past 1e300 in magnitude\)$" "$tmp/empty" "$BIN/decoder-diffuse" -g 1e400
t 2 "^decoder-diffuse: --guidance: '-inf' is out of range" "$tmp/empty" "$BIN/decoder-diffuse" -g -inf
t 2 "^decoder-diffuse: --guidance: 'nan' is not a number$" "$tmp/empty" "$BIN/decoder-diffuse" -g nan
t 0 '' "$tmp/p.rec" "$BIN/decoder-diffuse" -g 4.9e-324 --best-of 1 -S 2
# the kernel level a stage recorded: not a level is refused; one above this
# CPU's (or the replay's UNCLIP_CPU) replays at this one, with a warning
python3 - "$tmp/d.rec" "$tmp/in" "$tmp/in2" << 'PY'
import sys
b = open(sys.argv[1], "rb").read()
i = b.rindex(b"\xa3cpu")
end = i + 5 + (b[i + 4] & 0x1F)
open(sys.argv[2], "wb").write(b[:i + 4] + b"\xa4sse9" + b[end:])
open(sys.argv[3], "wb").write(b[:i + 4] + b"\xaaavx512bf16" + b[end:])
PY
t 1 "^unclip-replay: record 1 field params.decoder.cpu: 'sse9' is not a kernel level \(avx2, avx512, avx512bf16\)$" \
    "$tmp/empty" "$BIN/unclip-replay" "$tmp/in"
t 0 '^unclip-replay: record 1 field params.decoder.cpu: drawn with avx512bf16 kernels, replayed with avx2: the picture may differ in its last bits$' \
    "$tmp/empty" env UNCLIP_CPU=avx2 "$BIN/unclip-replay" "$tmp/in2"

# class 7: a FIFO given as a model is refused without blocking; a model
# file that shrinks under a running tool ends it with exit 1, not SIGBUS
mkfifo "$tmp/fifo.st"
t 1 'fifo.st: not a safetensors file \(not a regular file\)' "$tmp/p.rec" "$BIN/decoder-diffuse" -m "$tmp/fifo.st"
cp models/decoder.safetensors "$tmp/shrink.st"
set +e
"$BIN/decoder-diffuse" -t 1 --best-of 1 -S 1000 --progress json -m "$tmp/shrink.st" "$tmp/p.rec" > "$tmp/out" \
    2> "$tmp/err" &
pid=$!
n=0 # until it samples (a step done), however slow the machine
while ! grep -q '"done"' "$tmp/err" 2> /dev/null && [ "$n" -lt 600 ]; do
    sleep 0.1
    n=$((n + 1))
done
truncate -s 100000 "$tmp/shrink.st"
wait "$pid"
st=$?
set -e
rows=$((rows + 1))
[ "$st" -eq 1 ] && grep -q 'a model file changed or shrank while in use' "$tmp/err" ||
    { cat "$tmp/err" >&2; fail "a model file shrunk under decoder-diffuse: status $st"; }

# stmeta SRC DST KEY=VALUE...: a copy of the model file SRC whose
# __metadata__ KEY is VALUE (VALUE empty: KEY removed); config:A.B=JSON sets
# field A.B of unclip.config. The tensor data is copied as it is.
stmeta() {
    python3 - "$@" << 'PY'
import json, struct, sys
src, dst = sys.argv[1], sys.argv[2]
b = open(src, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
m = h.setdefault("__metadata__", {})
for kv in sys.argv[3:]:
    k, v = kv.split("=", 1)
    if k.startswith("config:"):
        c = json.loads(m["unclip.config"])
        *path, last = k[7:].split(".")
        o = c
        for p in path:
            o = o[p]
        o[last] = json.loads(v)
        m["unclip.config"] = json.dumps(c)
    elif v:
        m[k] = v
    else:
        m.pop(k, None)
hb = json.dumps(h).encode()
hb += b" " * (-len(hb) % 8)
open(dst, "wb").write(struct.pack("<Q", len(hb)) + hb + b[8 + n:])
PY
}
# field RECORD A.B: the string at A.B of the first record (rec-dump's JSON)
field() { "$BIN/rec-dump" "$1" | python3 -c 'import json, sys; r = json.loads(sys.stdin.readline())
for k in sys.argv[1].split("."): r = r[k]
print(r)' "$2"; }

# class 2: records of another CLIP. Two CLIPs of the same shapes (the
# second differs in its metadata, so in its header checksum); the test
# prior and decoder declare the first (unclip.clip = its checksum). A
# record of the second, or one that does not say (no models.clip), is
# refused naming the record, the field and both CLIPs; --any-clip takes it.
# emb-interp and emb-textdiff refuse to mix the two; clip-rank refuses
# embeddings of another CLIP than its own.
"$MKMODEL" clip "$tmp/clipA.st" # embed_dim 32, as the test prior and decoder
stmeta "$tmp/clipA.st" "$tmp/clipB.st" unclip.model_id=test/clip-b
"$BIN/clip-encode" -m "$tmp/clipA.st" "a red cube" > "$tmp/A.rec"
"$BIN/clip-encode" -m "$tmp/clipB.st" "a red cube" > "$tmp/B.rec"
"$BIN/clip-encode" -m "$tmp/clipB.st" "a blue cube" > "$tmp/B2.rec"
python3 -c 'import sys; b = open(sys.argv[1], "rb").read(); k = b"\xa6models\x81\xa4clip"; assert k in b
open(sys.argv[2], "wb").write(b.replace(k, b"\xa6models\x81\xa4clap"))' "$tmp/A.rec" "$tmp/U.rec" # no models.clip
sumA=$(field "$tmp/A.rec" models.clip.checksum)
sumB=$(field "$tmp/B.rec" models.clip.checksum)
[ "$sumA" != "$sumB" ] || fail "the two test CLIPs have one checksum"
"$MKMODEL" prior "$tmp/priorA.st" $G/karlo/prior-sample "unclip.clip=$sumA"
"$MKMODEL" decoder "$tmp/decA.st" $G/karlo/decoder-forward "unclip.clip=test/clip-x $sumA"
"$BIN/prior-sample" -m "$tmp/prior.st" -S 2 "$tmp/A.rec" > "$tmp/pA.rec"
"$BIN/prior-sample" -m "$tmp/prior.st" -S 2 "$tmp/B.rec" > "$tmp/pB.rec"
"$BIN/prior-sample" -m "$tmp/prior.st" -S 2 "$tmp/U.rec" > "$tmp/pU.rec"
t 0 '' "$tmp/A.rec" "$BIN/prior-sample" -m "$tmp/priorA.st" -S 2
t 1 "^prior-sample: stdin: record 1 field models.clip: made by CLIP test/clip-b \($sumB\), but .*/priorA.st pairs with $sumA \(--any-clip" \
    "$tmp/B.rec" "$BIN/prior-sample" -m "$tmp/priorA.st" -S 2
[ ! -s "$tmp/out" ] || fail "prior-sample wrote a record of another CLIP"
t 0 '' "$tmp/B.rec" "$BIN/prior-sample" -m "$tmp/priorA.st" -S 2 --any-clip
[ "$(field "$tmp/out" models.clip.checksum)" = "$sumB" ] || fail "prior-sample --any-clip: models.clip not passed on"
t 1 'stdin: record 1 field models.clip: missing, so the CLIP that made its embeddings is unknown; .*/priorA.st pairs with' \
    "$tmp/U.rec" "$BIN/prior-sample" -m "$tmp/priorA.st" -S 2
t 0 '' "$tmp/pA.rec" "$BIN/decoder-diffuse" -m "$tmp/decA.st" -S 2
t 1 "stdin: record 1 field models.clip: made by CLIP test/clip-b \($sumB\), but .*/decA.st pairs with test/clip-x $sumA" \
    "$tmp/pB.rec" "$BIN/decoder-diffuse" -m "$tmp/decA.st" -S 2
t 1 'stdin: record 1 field models.clip: missing' "$tmp/pU.rec" "$BIN/decoder-diffuse" -m "$tmp/decA.st" -S 2
t 1 'stdin: record 1 field models.clip: missing' "$tmp/pU.rec" "$BIN/decoder-diffuse" -m "$tmp/decA.st" -S 2 \
    --image "$PNGS/rgb8.png" --extend right=4,bottom=4
t 0 '' "$tmp/pB.rec" "$BIN/decoder-diffuse" -m "$tmp/decA.st" -S 2 --any-clip
t 1 "clipB.st: the CLIP that ranks the candidates, test/clip-b \($sumB\), is not one the decoder .*/decA.st pairs with" \
    "$tmp/pA.rec" "$BIN/decoder-diffuse" -m "$tmp/decA.st" -S 2 --best-of 2 --clip "$tmp/clipB.st"
# a model that declares no CLIP (the test prior, an older converted file) takes any
t 0 '' "$tmp/B.rec" "$BIN/prior-sample" -m "$tmp/prior.st" -S 2
t 1 "pB.rec: record 1 field models.clip: made by CLIP test/clip-b \($sumB\), but .*/pA.rec record 1 by CLIP test/clip-random \($sumA\): embeddings of two CLIPs do not mix" \
    "$tmp/empty" "$BIN/emb-interp" "$tmp/pA.rec" "$tmp/pB.rec"
t 0 '' "$tmp/empty" "$BIN/emb-interp" --any-clip "$tmp/pA.rec" "$tmp/pB.rec"
t 1 'pU.rec: record 1 field models.clip: missing, so the CLIP that made its embeddings is unknown; .*/pA.rec record 1 is from CLIP test/clip-random' \
    "$tmp/empty" "$BIN/emb-interp" "$tmp/pA.rec" "$tmp/pU.rec"
t 0 '' "$tmp/empty" "$BIN/emb-interp" "$tmp/pU.rec" "$tmp/pU.rec" # neither says: nothing to compare
t 1 'B2.rec: record 1 field models.clip: made by CLIP test/clip-b .*embeddings of two CLIPs do not mix' \
    "$tmp/empty" "$BIN/emb-textdiff" "$tmp/pA.rec" "$tmp/A.rec" "$tmp/B2.rec"
t 0 '' "$tmp/empty" "$BIN/emb-textdiff" --any-clip "$tmp/pA.rec" "$tmp/A.rec" "$tmp/B2.rec"
t 1 "B.rec: record 1 field text_emb: made by another CLIP \(models.clip.checksum $sumB, this one $sumA\)" \
    "$tmp/empty" "$BIN/clip-rank" -m "$tmp/clipA.st" -T "$tmp/B.rec" "$tmp/pA.rec"
t 1 "pB.rec: record 1 field image_emb: made by another CLIP" "$tmp/empty" "$BIN/clip-rank" -m "$tmp/clipA.st" -p cube "$tmp/pB.rec"
t 1 "pU.rec: record 1 field image_emb: no models.clip, so the CLIP that made it is unknown" \
    "$tmp/empty" "$BIN/clip-rank" -m "$tmp/clipA.st" -p cube "$tmp/pU.rec"
t 0 '' "$tmp/empty" "$BIN/clip-rank" -m "$tmp/clipA.st" --any-clip -T "$tmp/B.rec" "$tmp/pB.rec"
printf 'tag text=0 a red cube vs a blue cube\n' > "$tmp/policy.txt"
t 1 "stdin: record 1 field text_emb: made by another CLIP \(models.clip.checksum $sumB, this one $sumA\)" \
    "$tmp/B.rec" "$BIN/clip-filter" -m "$tmp/clipA.st" -p "$tmp/policy.txt"
t 0 '' "$tmp/B.rec" "$BIN/clip-filter" -m "$tmp/clipA.st" -p "$tmp/policy.txt" --any-clip
t 1 "priorA.st: the prior pairs with $sumA, not with this CLIP, test/clip-b \($sumB\)" "$tmp/empty" \
    "$BIN/clip-lexicon" -m "$tmp/clipB.st" --prior --prior-model "$tmp/priorA.st" cube
# the shipped prior and decoder pair with the shipped CLIP (by checksum):
# a CLIP of its shapes that claims another checksum is refused
sumS=$(field "$tmp/p.rec" models.clip.checksum)
stmeta models/clip.safetensors "$tmp/clipS.st" unclip.model_id=test/clip-s unclip.checksum=sha256:0
"$BIN/clip-encode" -m "$tmp/clipS.st" "a red circle" > "$tmp/S.rec"
t 1 "stdin: record 1 field models.clip: made by CLIP test/clip-s \(sha256:0\), but .*prior.safetensors pairs with $sumS" \
    "$tmp/S.rec" "$BIN/prior-sample" -S 2
"$BIN/prior-sample" -S 2 --any-clip "$tmp/S.rec" > "$tmp/pS.rec"
t 1 "stdin: record 1 field models.clip: made by CLIP test/clip-s \(sha256:0\), but .*decoder.safetensors pairs with $sumS" \
    "$tmp/pS.rec" "$BIN/decoder-diffuse" -S 2
# a malformed declaration is the model's fault, found before the input is read
stmeta "$tmp/priorA.st" "$tmp/bad.st" "unclip.clip=$sumA  test/x"
t 1 '^prior-sample: .*/bad.st: metadata unclip.clip .*not 1 to 16 CLIP model ids or checksums' "$tmp/cut" \
    "$BIN/prior-sample" -m "$tmp/bad.st"

# class 3: a checksum is what the file claims (unclip.checksum), unless
# --verify recomputes the SHA-256 of the tensor data at open: then the
# record says verified, and a file whose data differ is refused
cp models/prior.safetensors "$tmp/flip.st"
printf '\001' | dd of="$tmp/flip.st" bs=1 seek=$(($(wc -c < "$tmp/flip.st") - 5)) conv=notrunc 2> /dev/null
claim=$(field "$tmp/p.rec" models.prior.checksum)
t 0 '' "$tmp/p.rec" "$BIN/prior-sample" -m "$tmp/flip.st" -S 2
[ "$(field "$tmp/out" models.prior.checksum)" = "$claim" ] || fail "prior-sample: models.prior.checksum is not the file's claim"
"$BIN/rec-dump" "$tmp/out" | grep -q '"verified"' && fail "prior-sample: verified without --verify"
t 1 "flip.st: metadata unclip.checksum $claim, but the SHA-256 of the tensor data is sha256:[0-9a-f]{64}\$" \
    "$tmp/cut" "$BIN/prior-sample" -m "$tmp/flip.st" --verify
t 0 '' "$tmp/p.rec" "$BIN/prior-sample" -S 2 --verify
[ "$(field "$tmp/out" models.prior.verified)" = sha256 ] && [ "$(field "$tmp/out" models.prior.checksum)" = "$claim" ] ||
    fail "prior-sample --verify: models.prior not verified"
t 0 '' "$tmp/empty" "$BIN/clip-encode" --verify "a red circle"
[ "$(field "$tmp/out" models.clip.verified)" = sha256 ] || fail "clip-encode --verify: models.clip not verified"
# a file that claims nothing: its checksum is a hash of its header, or with --verify its data's SHA-256
t 0 '' "$tmp/A.rec" "$BIN/prior-sample" -m "$tmp/priorA.st" -S 2 --verify
field "$tmp/out" models.prior.checksum | grep -Eq '^sha256:[0-9a-f]{64}$' || fail "--verify: no SHA-256 for a file without a claim"

# class 10: a model's config faults are the model's, named with its file
# and field at open, before any input is read (a cut stream on stdin)
stmeta "$tmp/prior.st" "$tmp/bad.st" config:diffusion.predict_xstart=false
t 1 '^prior-sample: .*/bad.st: prior config: the diffusion must predict x_0 with a fixed variance' "$tmp/cut" \
    "$BIN/prior-sample" -m "$tmp/bad.st"
stmeta "$tmp/dec.st" "$tmp/bad.st" config:diffusion.learn_sigma=false
t 1 '^decoder-diffuse: .*/bad.st: decoder config: diffusion.learn_sigma is false, but the model has 6 output channels$' \
    "$tmp/cut" "$BIN/decoder-diffuse" -m "$tmp/bad.st"
stmeta "$tmp/prior.st" "$tmp/bad.st" unclip.default_guidance=abc
t 1 "^prior-sample: [^ ]*/bad.st: metadata unclip.default_guidance 'abc' is not a number" "$tmp/cut" \
    "$BIN/prior-sample" -m "$tmp/bad.st"
stmeta "$tmp/clipA.st" "$tmp/bad.st" config:vision_heads=3
t 1 '^clip-encode: .*/bad.st: CLIP vision tower: vision_heads: 3 heads do not divide width' "$tmp/empty" \
    "$BIN/clip-encode" -m "$tmp/bad.st" --image "$PNGS/rgb8.png"

# options: an empty respacing, a seed with a blank before its sign, an
# unknown option reported once, --help to a full disk
t 2 '^prior-sample: --steps: empty$' "$tmp/a.rec" "$BIN/prior-sample" -m "$tmp/prior.st" -S ""
t 2 "^prior-sample: --seed: ' -1' is not a non-negative integer$" "$tmp/a.rec" "$BIN/prior-sample" -m "$tmp/prior.st" -s " -1"
t 2 "^rec-dump: unknown option '--bogus'$" "$tmp/a.rec" "$BIN/rec-dump" --bogus
t 2 "^rec-dump: unknown option '-Z'$" "$tmp/a.rec" "$BIN/rec-dump" -Z
for tool in clip-encode prior-sample decoder-diffuse upsample emb-interp rec-dump shapes-render; do
    set +e
    "$BIN/$tool" --help > /dev/full 2> "$tmp/err"
    st=$?
    set -e
    rows=$((rows + 1))
    [ "$st" -eq 1 ] && grep -q 'write error on standard output' "$tmp/err" || fail "$tool --help > /dev/full exited $st"
done

# -o: a link is written through (the link stays), a device is written
# into (never replaced), an existing file keeps its mode, a missing folder
# is found before any work, a path too long for its temporary is refused
"$BIN/shapes-render" "a red circle" > "$tmp/r.png"
mkdir -p "$tmp/o"
: > "$tmp/o/target.png"
chmod 640 "$tmp/o/target.png"
ln -s target.png "$tmp/o/link.png"
t 0 '' "$tmp/empty" "$BIN/upsample" --fast -o "$tmp/o/link.png" "$tmp/r.png"
[ -L "$tmp/o/link.png" ] || fail "-o through a symbolic link replaced the link"
[ -s "$tmp/o/target.png" ] || fail "-o through a symbolic link did not write its target"
[ "$(stat -c %a "$tmp/o/target.png")" = 640 ] || fail "-o did not keep the mode of the file it replaced"
# a FIFO is written into and waits for its reader (here one that comes a
# second late: without blocking, a reader not yet there was refused)
mkfifo "$tmp/o/fifo"
(sleep 1; cat "$tmp/o/fifo" > "$tmp/o/from-fifo") &
t 0 '' "$tmp/empty" "$BIN/upsample" --fast -o "$tmp/o/fifo" "$tmp/r.png"
wait
[ -p "$tmp/o/fifo" ] || fail "-o to a FIFO replaced it"
"$BIN/rec-dump" "$tmp/o/from-fifo" | grep -q '"shape":\[256,256,3\]' || fail "-o to a FIFO: no picture came through"
t 0 '' "$tmp/empty" "$BIN/upsample" --fast -o /dev/null "$tmp/r.png"
[ -c /dev/null ] || fail "-o /dev/null replaced the device"
t 1 'folder .*/nodir: No such file or directory' "$tmp/empty" "$BIN/shapes-render" -o "$tmp/nodir/x-%d.png" "a red circle"
long=$tmp/o/$(printf '%0250d' 0)
long=$long/$(printf '%0250d' 0)/$(printf '%0250d' 0)/$(printf '%0250d' 0)/$(printf '%0250d' 0)/$(printf '%0250d' 0)
long=$long/$(printf '%0250d' 0)/$(printf '%0250d' 0)/$(printf '%0250d' 0)/$(printf '%0250d' 0)/$(printf '%0250d' 0)
long=$long/$(printf '%0250d' 0)/$(printf '%0250d' 0)/$(printf '%0250d' 0)/$(printf '%0250d' 0)/$(printf '%0250d' 0)/x.png
t 1 'too long|File name too long|No such file' "$tmp/empty" "$BIN/upsample" --fast -o "$long" "$tmp/r.png"
ls "$tmp/o" | grep -q '\.tmp\.' && fail "a temporary file was left behind"
# an empty -o is a usage error (it named no file to rename the temporary
# to: exit 0, nothing written, a .tmp.PID left in the working folder)
t 2 "^shapes-render: -o: empty \(give a file name\)$" "$tmp/empty" "$BIN/shapes-render" -o "" "a red circle"
t 2 "^upsample: -o: empty" "$tmp/empty" "$BIN/upsample" --fast -f record -o "" "$tmp/r.png"
t 2 "^clip-lexicon: an output file name is empty" "$tmp/empty" "$BIN/clip-lexicon" --cache "" cube
# -o - is standard output (it wrote a file named "-"); junk in
# UNCLIP_WINOGRAD_CACHE_MB is refused (the cache took its default silently)
render=$(cd "$BIN" && pwd)/shapes-render
(cd "$tmp" && "$render" -o - "a red circle" > "$tmp/dash.png") || fail "shapes-render -o - failed"
[ ! -e "$tmp/-" ] && [ -s "$tmp/dash.png" ] || fail "shapes-render -o - did not write to standard output"
t 2 "^shapes-render: UNCLIP_WINOGRAD_CACHE_MB: 'junk' is not a number of MiB" "$tmp/empty" \
    env UNCLIP_WINOGRAD_CACHE_MB=junk "$BIN/shapes-render" "a red circle"
# a --cache FILE that is no cache at all (a record of clip-encode) is not
# replaced by one (it was, silently, as a damaged cache)
cp "$tmp/a.rec" "$tmp/notcache.rec"
t 1 '^clip-lexicon: --cache .*notcache.rec: not a vocabulary cache \(its first record has no token_id\)' "$tmp/empty" \
    "$BIN/clip-lexicon" --cache "$tmp/notcache.rec" cube
cmp -s "$tmp/a.rec" "$tmp/notcache.rec" || fail "clip-lexicon replaced a file that is not a cache"
ls -a | grep -q '^\.tmp\.[0-9]*$' && fail "-o '': a temporary file was left behind"
# a signal that ends the process (USR1, XCPU, ALRM...) leaves no temporary
for sig in USR1 USR2 ALRM XCPU XFSZ; do
    "$BIN/shapes-render" --random 100000 --size 256 -f record -o "$tmp/o/sig.rec" 2> /dev/null &
    pid=$!
    sleep 0.3
    kill -s "$sig" "$pid" 2> /dev/null || true
    wait "$pid" 2> /dev/null || true
    rows=$((rows + 1))
    ls "$tmp/o" | grep -q '\.tmp\.' && fail "SIG$sig left a temporary file"
done

# shapes-edit --check reads a task folder: an offset that is not one, a
# mask or a result that does not fit the task's pictures (a negative
# offset was SIGSEGV; a 4x4 mask of a 32x32 picture was read past its end)
mkdir "$tmp/se"
"$BIN/shapes-edit" --tasks 3 "$tmp/se" > "$tmp/se/tasks.txt"
for i in 0 1 2; do cp "$tmp/se/$i-pic.png" "$tmp/se/$i-dec.png" && cp "$tmp/se/$i-big.png" "$tmp/se/$i-out.png"; done
printf '2\toutpaint\tx\tleft=-100000000\n' > "$tmp/se/tasks.txt"
t 1 "se/tasks.txt: task 2: 'left=-100000000' is not an offset in 0\.\.16384$" "$tmp/empty" "$BIN/shapes-edit" --check "$tmp/se"
printf '0\tinpaint\tx\t-\n' > "$tmp/se/tasks.txt"
cp "$PNGS/rgb8.png" "$tmp/se/0-mask.png"
set +e
"$BIN/shapes-edit" --check "$tmp/se" > "$tmp/out" 2> "$tmp/err"
st=$?
set -e
rows=$((rows + 1))
[ "$st" -eq 1 ] && grep -q "task 0: dec: its size or channels do not fit the task's pictures" "$tmp/err" ||
    { cat "$tmp/err" >&2; fail "shapes-edit --check with a 4x4 mask of a 32x32 picture: status $st"; }

# ---- third round (issue 26): memory budget, sums, trailing bytes, escapes, disk full ----

# class 4: the memory a piece of work needs is sized before it starts and
# checked against --memory-budget (default 4 GiB) and what ulimit -v leaves
"$BIN/shapes-render" --size 1024 "a red circle" > "$tmp/big.png"
t 1 'big.png: record 1 field image: 1024x1024 upsampled to 4096x4096 needs [0-9.]+ GiB, more than the memory budget of 4.0 GiB \(--memory-budget\)' \
    "$tmp/empty" "$BIN/upsample" -S 2 "$tmp/big.png"
t 1 'needs [0-9.]+ GiB, more than the memory budget of 1.0 GiB' "$tmp/empty" "$BIN/upsample" --memory-budget 1G -S 2 "$tmp/big.png"
t 1 'needs [0-9.]+ MiB, more than the memory budget of 64 MiB' "$tmp/empty" env UNCLIP_MEMORY_BUDGET=64M "$BIN/upsample" -S 2 "$tmp/r.png"
t 2 "^upsample: --memory-budget: '512k' is not a size from 1M to 1024T" "$tmp/empty" "$BIN/upsample" --memory-budget 512k "$tmp/r.png"
t 2 "^rec-dump: UNCLIP_MEMORY_BUDGET: '4Q' is not a size" "$tmp/empty" env UNCLIP_MEMORY_BUDGET=4Q "$BIN/rec-dump" "$tmp/r.png"
# a 3000x3000 picture in a PNG of 27 KB: its pixels are sized against the
# budget before they are read, and rec-dump --full of it fits in 1.5 GB of
# address space (the values are streamed, not one JSON node each)
python3 - "$tmp/wide.png" << 'EOF'
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
raw = b"".join(b"\0" + b"\x07" * 9000 for _ in range(3000))
open(sys.argv[1], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3000, 3000, 8, 2, 0, 0, 0)) +
                          chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
EOF
t 1 'wide.png: image 1: a picture of 3000x3000 pixels needs 77 MiB, more than the memory budget of 16 MiB' "$tmp/empty" "$BIN/rec-dump" --memory-budget 16M "$tmp/wide.png"
# under ulimit -v (where the build can start under one: not with ASan)
if (set +e; ulimit -v 6000000 && "$BIN/rec-dump" --version > /dev/null 2>&1; exit $?) 2> /dev/null; then
    t 1 'needs [0-9.]+ GiB, more than the [0-9.]+ GiB that the address-space limit \(ulimit -v\) leaves' "$tmp/empty" \
        sh -c 'ulimit -v 6000000 && exec "$0" --memory-budget 100G -S 2 "$1"' "$BIN/upsample" "$tmp/big.png"
    t 0 '' "$tmp/empty" sh -c 'ulimit -v 1500000 && exec "$0" --full "$1"' "$BIN/rec-dump" "$tmp/wide.png"
    [ "$(wc -c < "$tmp/out")" -eq 54000122 ] || fail "rec-dump --full of a 3000x3000 PNG: $(wc -c < "$tmp/out") bytes"
    # a record of one 60 MiB tensor read under limits from 100 to 200 MB:
    # where the reader's buffer fit and the copy into msgpack's zone did
    # not, the reader called abort() (status 134); now every limit ends in
    # the record read (0) or an out-of-memory message (1)
    python3 - "$tmp/big.rec" << 'EOF'
import struct, sys
n = 60 << 20
s = lambda x: bytes([0xA0 | len(x)]) + x.encode()
t = bytes([0x83]) + s("dtype") + s("F32") + s("shape") + b"\x91\xce" + struct.pack(">I", n // 4) + s("data") + b"\xc6" + struct.pack(">I", n)
open(sys.argv[1], "wb").write(bytes([0x82]) + s("version") + b"\x01" + s("x") + t + bytes(n))
EOF
    v=100000
    while [ "$v" -le 200000 ]; do
        set +e
        sh -c "ulimit -v $v && exec \"\$0\" \"\$1\"" "$BIN/rec-dump" "$tmp/big.rec" > /dev/null 2> "$tmp/err"
        st=$?
        set -e
        [ "$st" -eq 0 ] || { [ "$st" -eq 1 ] && grep -q 'out of memory' "$tmp/err"; } ||
            fail "rec-dump of a 60 MiB record under ulimit -v $v: status $st ($(head -c 200 "$tmp/err"))"
        v=$((v + 1000))
    done
else
    echo "hostile.sh: this build cannot start under ulimit -v (a sanitizer build?): ulimit rows skipped" >&2
fi

# class 5: history keeps 4096 bytes of a tool's arguments, then says what
# it left out (300 prompts gave each of 300 records all 300)
set --
i=0
while [ $i -lt 300 ]; do set -- "$@" "a red cube $i" && i=$((i + 1)); done
t 0 '' "$tmp/empty" "$BIN/clip-encode" -q -m "$tmp/clip.st" "$@"
set --
"$BIN/rec-dump" "$tmp/out" > "$tmp/dump"
python3 - "$tmp/dump" << 'EOF' || fail "history: arguments not bounded to 4096 bytes with a note"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
assert len(recs) == 300, len(recs)
for r in recs:
    a = r["history"][-1]["arguments"]
    assert sum(len(x.encode()) for x in a[:-1]) <= 4096, a
    assert a[-1].startswith("(") and "more arguments" in a[-1] and "not kept" in a[-1], a[-1]
EOF

# class 5: a text chunk that cannot be read is refused, not dropped
python3 - "$tmp" << 'EOF'
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
idat = chunk(b"IDAT", zlib.compress(b"".join(b"\0" + b"\xff" * 12 for _ in range(4))))
for name, c in (("badz", chunk(b"zTXt", b"unclip-record\0\0not a zlib stream")),
                ("badi", chunk(b"iTXt", b"k\0\1\0en\0k\0not zlib")),
                ("badm", chunk(b"zTXt", b"k\0\5" + zlib.compress(b"x")))):
    open("%s/%s.png" % (sys.argv[1], name), "wb").write(b"\x89PNG\r\n\x1a\n" + ihdr + c + idat + chunk(b"IEND", b""))
EOF
t 1 'badz.png: image 1: bad PNG: zTXt: .*\(a text chunk that cannot be kept is refused, not dropped\)' "$tmp/empty" "$BIN/rec-dump" "$tmp/badz.png"
t 1 'badi.png: image 1: bad PNG: iTXt: .*cannot be kept' "$tmp/empty" "$BIN/upsample" --fast "$tmp/badi.png"
t 1 'badm.png: bad PNG: zTXt: unknown compression type' "$tmp/empty" "$BIN/clip-encode" -m "$tmp/clip.st" --image "$tmp/badm.png"

# class 10: bytes after the records a tool uses. emb-interp and
# emb-textdiff use the first record(s) of an input: further records are
# ignored, bytes that are not one refused; unclip-replay and an edit's
# --image take one picture; a PNG file read as one picture ends at IEND
cat "$tmp/e.rec" "$tmp/e.rec" > "$tmp/two.rec"
{ cat "$tmp/two.rec" && printf 'junk'; } > "$tmp/in"
t 1 '^emb-interp: stdin: record 3: .* \(after the records used\)$' "$tmp/in" "$BIN/emb-interp"
cat "$tmp/two.rec" "$tmp/e.rec" > "$tmp/in"
t 0 '' "$tmp/in" "$BIN/emb-interp"
{ cat "$tmp/e.rec" && by 129; } > "$tmp/in"
t 1 '^emb-interp: stdin: record 2: stream ends inside the record .*\(after the records used\)$' "$tmp/in" "$BIN/emb-interp" - "$tmp/e.rec"
t 1 '^emb-textdiff: .*/in: record 2: stream ends inside .*\(after the records used\)$' "$tmp/empty" "$BIN/emb-textdiff" "$tmp/in" "$tmp/a.rec" "$tmp/a.rec"
cat "$tmp/r.png" "$tmp/r.png" > "$tmp/rr.png"
t 1 '^unclip-replay: .*/rr.png: more than one picture \(image 2 follows; unclip-replay replays one picture at a time\)$' "$tmp/empty" "$BIN/unclip-replay" "$tmp/rr.png"
{ cat "$tmp/r.png" && echo x; } > "$tmp/rx.png"
t 1 'rx.png: bytes after the end of the PNG \(IEND\)' "$tmp/empty" "$BIN/clip-encode" -m "$tmp/clip.st" --image "$tmp/rx.png"
"$BIN/upsample" --fast -f record "$tmp/r.png" > "$tmp/up.rec"
cat "$tmp/up.rec" "$tmp/up.rec" > "$tmp/up2.rec"
t 1 'up2.rec: more than one record \(record 2 follows; --image takes one picture\)' "$tmp/empty" "$BIN/upsample" --fast --image "$tmp/up2.rec" "$tmp/r.png"

# class 10: a newline in a prompt cannot forge a line of the parameters chunk
{ map 3 && str version && by 1 && str prompt && str "$(printf 'a\nSteps: 999')" && str image && tensor U8 12 2 2 3 && rep 12 9; } > "$tmp/in"
t 0 '' "$tmp/in" "$BIN/upsample" --fast
python3 - "$tmp/out" << 'EOF' || fail "a newline in a prompt forged a line of the parameters chunk"
import struct, sys
b, i, p = open(sys.argv[1], "rb").read(), 8, None
while i < len(b):
    n, = struct.unpack(">I", b[i:i + 4])
    if b[i + 4:i + 8] == b"tEXt" and b[i + 8:i + 19] == b"parameters\0":
        p = b[i + 19:i + 8 + n].decode()
    i += 12 + n
assert p is not None and p.split("\n")[0] == "a\\nSteps: 999" and len(p.split("\n")) == 2, repr(p)
EOF

# class 10: a full disk is reported with its reason
for cmd in "shapes-render" "shapes-render -f record" "upsample --fast $PNGS/rgb8.png" "upsample --fast -f record $PNGS/rgb8.png" \
    "rec-dump $PNGS/rgb8.png" "emb-interp $tmp/two.rec"; do
    set +e
    # shellcheck disable=SC2086
    case $cmd in shapes-render*) "$BIN"/$cmd "a red circle" ;; *) "$BIN"/$cmd ;; esac > /dev/full 2> "$tmp/err" < /dev/null
    st=$?
    set -e
    rows=$((rows + 1))
    [ "$st" -eq 1 ] && [ "$(wc -l < "$tmp/err")" -eq 1 ] && grep -q 'No space left on device' "$tmp/err" ||
        { cat "$tmp/err" >&2; fail "$cmd > /dev/full: status $st, no reason given"; }
done

echo "hostile.sh: $rows rows ok"
