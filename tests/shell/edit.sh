#!/bin/sh
# Edits (issue 21) with small test models: decoder-diffuse and upsample
# --image/--mask keep every kept pixel byte for byte (mask file, alpha
# channel, a mask at the input's size scaled up, outpainting with
# --extend), record the edit in params.<stage>.edit, a mask that redraws
# everything is plain sampling, and each bad input is one clear line.
. tests/shell/lib.sh
MKMODEL=${MKMODEL:?MKMODEL must name the test model maker}
PY=
for p in ${PYTHON:-} /usr/bin/python3 python3; do
    command -v "$p" > /dev/null 2>&1 && PY=$p && break
done
[ -n "$PY" ] || fail "needs Python 3"

"$MKMODEL" clip "$tmp/clip.st"
"$MKMODEL" prior "$tmp/prior.st" $G/karlo/prior-sample
"$MKMODEL" decoder "$tmp/dec.st" $G/karlo/decoder-forward
"$MKMODEL" sr "$tmp/sr.st" $G/karlo/sr-forward-updown
"$BIN/clip-encode" -m "$tmp/clip.st" "a red cube" | "$BIN/prior-sample" -m "$tmp/prior.st" -S 3 -s 5 > "$tmp/p.rec"
D="$BIN/decoder-diffuse -m $tmp/dec.st -S 4 --best-of 1"
U="$BIN/upsample -m $tmp/sr.st -S 3"

# pictures (8x8, the test decoder's size; 32x32, its x4 upsampler's) and
# masks, written as PNGs by Python's zlib
"$PY" - "$tmp" << 'EOF'
import struct, sys, zlib
d = sys.argv[1]
def png(name, w, h, ch, px):
    raw = b"".join(b"\0" + bytes(px[(y * w) * ch:(y + 1) * w * ch]) for y in range(h))
    def chunk(t, b):
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b))
    kind = {1: 0, 3: 2, 4: 6}[ch]
    open(f"{d}/{name}", "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, kind, 0, 0, 0))
                                    + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
def pic(s):
    return [(x * 37 + y * 11 + c * 71) % 256 for y in range(s) for x in range(s) for c in range(3)]
png("pic.png", 8, 8, 3, pic(8))
png("big.png", 32, 32, 3, pic(32))
png("mask.png", 8, 8, 1, [255 if 2 <= x < 6 and y >= 3 else 0 for y in range(8) for x in range(8)])
png("soft.png", 8, 8, 3, [v for y in range(8) for x in range(8) for v in [127 + x % 2] * 3])  # 127 keeps, 128 redraws
png("black.png", 8, 8, 1, [0] * 64)
png("white.png", 8, 8, 1, [255] * 64)
png("mask16.png", 16, 16, 1, [255] * 256)
png("alpha.png", 8, 8, 4, [v for y in range(8) for x in range(8) for v in [(x * 37) % 256, 90, 200, 0 if x >= 5 else 255]])
png("opaque.png", 8, 8, 4, [v for i in range(64) for v in [10, 20, 30, 255]])
png("half.png", 4, 8, 3, pic(8)[: 4 * 8 * 3])
EOF
printf 'not a picture\n' > "$tmp/junk.txt"

# kept_same RESULT PICTURE MASK|- [X0 Y0]: every kept pixel of PICTURE (mask
# below 128, or alpha 255 without a mask; the mask scaled up to the
# picture) is the same in each picture of RESULT at (X0, Y0) on; read back
# by rec-dump --full
kept_same() {
    "$BIN/rec-dump" --full "$1" > "$tmp/r.json"
    "$BIN/rec-dump" --full "$2" > "$tmp/k.json"
    if [ "$3" = - ]; then : > "$tmp/m.json"; else "$BIN/rec-dump" --full "$3" > "$tmp/m.json"; fi
    "$PY" - "$tmp" "$2" "${4:-0}" "${5:-0}" << 'EOF'
import json, struct, sys, zlib
d, picpath, x0, y0 = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def img(p, line=0):
    t = json.loads(open(p).readlines()[line])["image"]
    return t["shape"], t["values"]
(h, w, _), k = img(f"{d}/k.json")
m = open(f"{d}/m.json").read()
alpha = None
if not m:  # the alpha channel: read the PNG itself (RGBA, filter 0, as written above)
    b = open(picpath, "rb").read()
    if b[25] == 6:
        raw = zlib.decompress(b[b.index(b"IDAT") + 4:b.index(b"IEND") - 8])
        alpha = [raw[y * (w * 4 + 1) + 1 + x * 4 + 3] for y in range(h) for x in range(w)]
else:
    (mh, mw, _), mv = img(f"{d}/m.json")
kept = bad = 0
for n in range(len(open(f"{d}/r.json").readlines())):
  (rh, rw, _), r = img(f"{d}/r.json", n)
  for y in range(h):
    for x in range(w):
        if m:
            i = (y * mh // h) * mw + x * mw // w
            if sum(mv[3 * i:3 * i + 3]) >= 3 * 128:
                continue
        elif alpha is not None and alpha[y * w + x] < 255:
            continue
        kept += 1
        a = k[3 * (y * w + x):3 * (y * w + x) + 3]
        j = (y + y0) * rw + x + x0
        bad += a != r[3 * j:3 * j + 3]
if bad or not kept:
    sys.exit(f"{bad} of {kept} kept pixels changed")
EOF
}

# inpainting with a mask file, at the decoder and through upsample (the
# 8x8 mask scaled up to 32x32; and a 32x32 mask)
$D --image "$tmp/pic.png" --mask "$tmp/mask.png" --resample 3 "$tmp/p.rec" > "$tmp/d.png"
kept_same "$tmp/d.png" "$tmp/pic.png" "$tmp/mask.png" || fail "decoder-diffuse --mask: kept pixels changed"
$U --image "$tmp/big.png" --mask "$tmp/mask.png" --resample 2 --jump 2 "$tmp/d.png" > "$tmp/u.png"
kept_same "$tmp/u.png" "$tmp/big.png" "$tmp/mask.png" || fail "upsample --mask (input size): kept pixels changed"
$U --fast --image "$tmp/big.png" --mask "$tmp/mask.png" "$tmp/d.png" > "$tmp/uf.png"
kept_same "$tmp/uf.png" "$tmp/big.png" "$tmp/mask.png" || fail "upsample --fast --mask: kept pixels changed"
# records and --float too; the mask's grey: 127 keeps, 128 redraws
$D --image "$tmp/pic.png" --mask "$tmp/soft.png" --resample 2 -f record --float "$tmp/p.rec" > "$tmp/d.rec"
kept_same "$tmp/d.rec" "$tmp/pic.png" "$tmp/soft.png" || fail "decoder-diffuse -f record: kept pixels changed"
"$BIN/rec-dump" "$tmp/d.rec" | grep -q '"kept":32,"redrawn":32' || fail "a grey of 127 keeps, 128 redraws: not 32/32"
# -n 2 --best-of 2: two pictures, each its best of two candidates, both keeping
$D -n 2 --best-of 2 --clip "$tmp/clip.st" --image "$tmp/pic.png" --mask "$tmp/mask.png" --resample 2 -f record \
    "$tmp/p.rec" > "$tmp/n2.rec"
[ "$("$BIN/rec-dump" "$tmp/n2.rec" | grep -c '"best_of":2,.*"edit":{')" -eq 2 ] || fail "-n 2 --best-of 2: not two edits"
"$BIN/rec-dump" --full "$tmp/n2.rec" | sed -n 2p > "$tmp/second.json"
kept_same "$tmp/n2.rec" "$tmp/pic.png" "$tmp/mask.png" || fail "-n 2: the first picture changed kept pixels"
# the alpha channel: transparent pixels redrawn
$D --image "$tmp/alpha.png" --resample 2 "$tmp/p.rec" > "$tmp/da.png"
kept_same "$tmp/da.png" "$tmp/alpha.png" - || fail "decoder-diffuse, alpha: kept pixels changed"
"$BIN/rec-dump" "$tmp/da.png" | grep -q '"mask_from":"alpha","resample":2,"jump":1,"kept":40,"redrawn":24' ||
    fail "decoder-diffuse, alpha: provenance"

# provenance: params.decoder.edit and params.sr.edit with the checksums
"$BIN/rec-dump" "$tmp/u.png" > "$tmp/u.json"
for f in '"decoder":{"steps":"4","guidance":8,"sampler":"ddpm","best_of":1,"threads":[0-9]*,"cpu":"avx[0-9a-z]*","seed":5,"noise_key":[0-9]*,"index":0,"edit":{"image":"fnv1a64:[0-9a-f]\{16\}","mask":"fnv1a64:[0-9a-f]\{16\}","mask_from":"mask","resample":3,"jump":1,"kept":44,"redrawn":20,"windows":1}}' \
    '"sr":{"steps":"3","input":"image","threads":[0-9]*,"cpu":"avx[0-9a-z]*","seed":5,"noise_key":[0-9]*,"index":0,"scale":4,"edit":{"image":"fnv1a64:[0-9a-f]\{16\}","mask":"fnv1a64:[0-9a-f]\{16\}","mask_from":"mask","resample":2,"jump":2,"kept":704,"redrawn":320}}'; do
    grep -q "$f" "$tmp/u.json" || { grep -o '"params":.*' "$tmp/u.json" | head -c 900 >&2; fail "provenance lacks $f"; }
done
# the same edit gives the same bytes; another mask another checksum
$D --image "$tmp/pic.png" --mask "$tmp/mask.png" --resample 3 "$tmp/p.rec" | cmp -s - "$tmp/d.png" ||
    fail "an edit is not deterministic"
m1=$("$BIN/rec-dump" "$tmp/d.png" | grep -o '"mask":"fnv1a64:[0-9a-f]*"')
m2=$("$BIN/rec-dump" "$tmp/d.rec" | grep -o '"mask":"fnv1a64:[0-9a-f]*"')
[ -n "$m1" ] && [ "$m1" != "$m2" ] || fail "the mask checksum does not tell masks apart"

# outpainting: a 4x8 half grown to 8x8 (left) and to 12x8 (both sides, two
# windows); the picture exact at its place
$D --image "$tmp/half.png" --extend left=4 --resample 2 "$tmp/p.rec" > "$tmp/o.png"
kept_same "$tmp/o.png" "$tmp/half.png" - 4 0 || fail "--extend left=4: the picture changed"
$D --image "$tmp/half.png" --extend left=4,right=4 --resample 2 "$tmp/p.rec" > "$tmp/o2.png"
kept_same "$tmp/o2.png" "$tmp/half.png" - 4 0 || fail "--extend left=4,right=4: the picture changed"
"$BIN/rec-dump" "$tmp/o2.png" > "$tmp/o2.json"
grep -q '"image":{"dtype":"U8","shape":\[8,12,3\]' "$tmp/o2.json" || fail "--extend left=4,right=4: not 12x8"
grep -q '"extend":"left=4,right=4,top=0,bottom=0","windows":2' "$tmp/o2.json" || fail "--extend: provenance"
$U --image "$tmp/big.png" --mask "$tmp/mask.png" "$tmp/o.png" > /dev/null # upsample of an outpainting

# a mask that redraws everything is plain sampling (said with -v), bit for bit
$D -f record "$tmp/p.rec" | "$BIN/rec-dump" | grep -o '"image":{[^}]*}' > "$tmp/plain"
$D -v --image "$tmp/pic.png" --mask "$tmp/white.png" -f record "$tmp/p.rec" 2> "$tmp/err" | "$BIN/rec-dump" |
    grep -o '"image":{[^}]*}' | cmp -s - "$tmp/plain" || fail "an all-white mask is not plain sampling"
grep -q "every pixel is redrawn, so this is plain sampling" "$tmp/err" || fail "-v does not say it is plain sampling"
$U -f record "$tmp/d.png" | "$BIN/rec-dump" | grep -o '"image":{[^}]*}' > "$tmp/plain"
$U --image "$tmp/big.png" --mask "$tmp/mask16.png" -f record "$tmp/d.png" 2> /dev/null && fail "a 16x16 mask for 32x32 accepted"
$U --image "$tmp/big.png" --mask "$tmp/white.png" -f record "$tmp/d.png" | "$BIN/rec-dump" |
    grep -o '"image":{[^}]*}' | cmp -s - "$tmp/plain" || fail "upsample: an all-white mask is not plain sampling"

# errors: exit 1 (or 2 for usage), one clear line, nothing written
expect 1 "mask.*mask16.png is 16x16, the picture .*pic.png is 8x8: they must be the same size" \
    $D --image "$tmp/pic.png" --mask "$tmp/mask16.png" -o "$tmp/x.png" "$tmp/p.rec"
expect 1 "mask16.png is 16x16, the picture .*big.png is 32x32: the mask must be 32x32 or 8x8" \
    $U --image "$tmp/big.png" --mask "$tmp/mask16.png" -o "$tmp/x.png" "$tmp/d.png"
expect 1 "black.png: nothing to redraw" $D --image "$tmp/pic.png" --mask "$tmp/black.png" -o "$tmp/x.png" "$tmp/p.rec"
expect 1 "opaque.png: nothing to redraw (no pixel is transparent)" $D --image "$tmp/opaque.png" "$tmp/p.rec"
expect 1 "pic.png has no alpha channel: give --mask" $D --image "$tmp/pic.png" "$tmp/p.rec"
expect 1 "junk.txt: not a PNG or an image record" $D --image "$tmp/junk.txt" --mask "$tmp/mask.png" "$tmp/p.rec"
expect 1 "mask .*junk.txt: not a PNG" $D --image "$tmp/pic.png" --mask "$tmp/junk.txt" "$tmp/p.rec"
expect 1 "image .*none.png: No such file" $D --image "$tmp/none.png" --mask "$tmp/mask.png" "$tmp/p.rec"
expect 1 "big.png is 32x32, larger than the decoder's 8x8 canvas: crop or shrink it to 8x8, or extend" \
    $D --image "$tmp/big.png" --mask "$tmp/white.png" "$tmp/p.rec"
expect 1 "half.png is 4x8, the decoder draws 8x8" $D --image "$tmp/half.png" --mask "$tmp/mask.png" "$tmp/p.rec"
expect 1 "the picture to edit, .*pic.png, is 8x8; the image 8x8 upsampled is 32x32" \
    $U --image "$tmp/pic.png" --mask "$tmp/mask.png" "$tmp/d.png"
expect 2 "a side grows by at most the picture's width" $D --image "$tmp/half.png" --extend right=5 "$tmp/p.rec"
expect 1 "the canvas 6x8 is smaller than the decoder's 8x8 window" $D --image "$tmp/half.png" --extend right=2 "$tmp/p.rec"
expect 2 "extend 'up=3': expected left=N" $D --image "$tmp/half.png" --extend up=3 "$tmp/p.rec"
expect 2 "left given twice" $D --image "$tmp/half.png" --extend left=1,left=2 "$tmp/p.rec"
expect 2 "\-\-mask needs \-\-image" $D --mask "$tmp/mask.png" "$tmp/p.rec"
expect 2 "\-\-mask needs \-\-image" $U --mask "$tmp/mask.png" "$tmp/d.png"
expect 2 "\-\-resample" $D --image "$tmp/pic.png" --mask "$tmp/mask.png" --resample 0 "$tmp/p.rec"
expect 2 "\-\-jump 9: more than the 4 steps" $D --image "$tmp/pic.png" --mask "$tmp/mask.png" --jump 9 "$tmp/p.rec"
# DPM-Solver++ is a plain sampler: an edit refuses it before any work
expect 2 "\-\-sampler dpm++2m: not for edits" $D --image "$tmp/pic.png" --mask "$tmp/mask.png" --sampler dpm++2m "$tmp/p.rec"
expect 2 "\-\-sampler dpm++2m: not for edits" $U --image "$tmp/pic.png" --sampler dpm++2m "$tmp/d.png"
[ ! -e "$tmp/x.png" ] || fail "an output written despite an error"
echo "edit.sh: ok"
