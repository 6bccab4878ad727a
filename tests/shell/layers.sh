#!/bin/sh
# The layer rule fails when it should (tests/layers.sh, run by make check):
# on a copy of the sources, an include that goes up a layer, one that goes
# sideways, and one from a program folder into another are each refused,
# naming the file and the header; the sources as they are pass.
. tests/shell/lib.sh
sh tests/layers.sh > /dev/null || fail "the sources as they are break the layer rule"
for bad in 'formats/png.c:libcommon/nn/ops.h:a layer not below its own' \
    'libcommon/nn/ops.c:libcommon/models/clip.h:a layer not below its own' \
    'libcommon/text/bpe.c:libcommon/image/imageio.h:a layer not below its own' \
    'libcommon/models/prior.c:libcommon/cli/cli.h:a layer not below its own' \
    'tools/rec-dump.c:tests/golden-check/gc.h:a layer not below its own'; do
    file=${bad%%:*} rest=${bad#*:}
    inc=${rest%%:*} why=${rest#*:}
    rm -rf "$tmp/src"
    mkdir -p "$tmp/src"
    cp -r formats libcommon tools tests bench fuzz "$tmp/src/"
    printf '#include "%s"\n' "$inc" >> "$tmp/src/$file"
    set +e
    sh tests/layers.sh "$tmp/src" > "$tmp/out" 2>&1
    st=$?
    set -e
    [ "$st" -eq 1 ] || fail "$file including $inc: layers.sh exited $st"
    grep -q "^$file: includes \"$inc\", $why" "$tmp/out" || { cat "$tmp/out" >&2; fail "$file including $inc: not named"; }
done
echo "layers.sh: 5 includes that break the rule refused"
