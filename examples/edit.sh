#!/usr/bin/env bash
# edit.sh - edits as DALL-E 2's editor makes them: inpainting (erase part of
# a picture and have it redrawn from a prompt) and outpainting (extend a
# picture past its border), the kept pixels untouched.
#
#   examples/edit.sh [OUT-DIR]
#
# Three edits of scenes rendered by shapes-render (default OUT-DIR:
# examples/pictures), each at the decoder's size (32 px) and the
# upsampler's (128 px):
#   edit-recolour-*   the blue square of "a red circle to the left of a blue
#                     square" erased and redrawn green
#   edit-reshape-*    the purple circle of "a yellow triangle above a purple
#                     circle" replaced by a purple square
#   edit-outpaint-*   "a red circle" extended to twice its width, to the
#                     right, as "a red circle to the left of a blue triangle"
# Each writes -source.png (the picture), -mask.png (white: redraw; not for
# the outpainting) and -result.png (128 px high, upsampled with the same
# mask). The mask is the object's pixels (found by its colour) grown by 3
# pixels, written by Python (zlib only).
set -euo pipefail
out=${1:-$(cd "$(dirname "$0")" && pwd)/pictures}
BIN=${BIN:-$(cd "$(dirname "$0")/.." && pwd)/bin}
PY=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$out"

# mask IN.png R,G,B OUT.png: white where IN has colour R,G,B (within 60),
# grown by 3 pixels, black elsewhere
mask() {
    "$BIN/rec-dump" --full "$1" > "$tmp/m.json"
    "$PY" - "$tmp/m.json" "$2" "$3" << 'EOF'
import json, struct, sys, zlib
t = json.loads(open(sys.argv[1]).readline())["image"]
(h, w, _), v = t["shape"], t["values"]
col = [int(c) for c in sys.argv[2].split(",")]
hit = [[sum(abs(v[3 * (y * w + x) + c] - col[c]) for c in range(3)) < 60 for x in range(w)] for y in range(h)]
g = 3
m = [[any(hit[j][i] for j in range(max(0, y - g), min(h, y + g + 1)) for i in range(max(0, x - g), min(w, x + g + 1)))
      for x in range(w)] for y in range(h)]
raw = b"".join(b"\0" + bytes(255 if m[y][x] else 0 for x in range(w)) for y in range(h))
def chunk(k, b):
    return struct.pack(">I", len(b)) + k + b + struct.pack(">I", zlib.crc32(k + b))
open(sys.argv[3], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
EOF
}

# inpaint NAME "SCENE" R,G,B "PROMPT" SEED
inpaint() {
    "$BIN/shapes-render" --size 32 -s 3 -o "$out/edit-$1-source.png" "$2"
    "$BIN/shapes-render" --size 128 -s 3 -o "$tmp/big.png" "$2"
    mask "$out/edit-$1-source.png" "$3" "$out/edit-$1-mask.png"
    "$BIN/clip-encode" "$4" | "$BIN/prior-sample" -s "$5" |
        "$BIN/decoder-diffuse" --image "$out/edit-$1-source.png" --mask "$out/edit-$1-mask.png" |
        "$BIN/upsample" --image "$tmp/big.png" --mask "$out/edit-$1-mask.png" > "$tmp/result.png"
    mv "$tmp/result.png" "$out/edit-$1-result.png"
    echo "$out/edit-$1-result.png" >&2
}
inpaint recolour "a red circle to the left of a blue square" 40,80,220 "a red circle to the left of a green square" 1
inpaint reshape "a yellow triangle above a purple circle" 150,60,200 "a yellow triangle above a purple square" 1

# outpainting: the 32 px picture extended right by 32; at 128 px the
# picture on the grown canvas, the new part transparent (Python again)
"$BIN/shapes-render" --size 32 -s 2 -o "$out/edit-outpaint-source.png" "a red circle"
"$BIN/shapes-render" --size 128 -s 2 -o "$tmp/big.png" "a red circle"
"$BIN/rec-dump" --full "$tmp/big.png" > "$tmp/b.json"
"$PY" - "$tmp/b.json" "$tmp/wide.png" << 'EOF'
import json, struct, sys, zlib
t = json.loads(open(sys.argv[1]).readline())["image"]
(h, w, _), v = t["shape"], t["values"]
rows = []
for y in range(h):
    row = bytearray(b"\0")
    for x in range(2 * w):
        row += bytes(v[3 * (y * w + x):3 * (y * w + x) + 3] + [255]) if x < w else b"\0\0\0\0"
    rows.append(bytes(row))
def chunk(k, b):
    return struct.pack(">I", len(b)) + k + b + struct.pack(">I", zlib.crc32(k + b))
open(sys.argv[2], "wb").write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2 * w, h, 8, 6, 0, 0, 0))
                              + chunk(b"IDAT", zlib.compress(b"".join(rows))) + chunk(b"IEND", b""))
EOF
"$BIN/clip-encode" "a red circle to the left of a blue triangle" | "$BIN/prior-sample" -s 1 |
    "$BIN/decoder-diffuse" --image "$out/edit-outpaint-source.png" --extend right=32 |
    "$BIN/upsample" --image "$tmp/wide.png" > "$tmp/result.png"
mv "$tmp/result.png" "$out/edit-outpaint-result.png"
echo "$out/edit-outpaint-result.png" >&2
