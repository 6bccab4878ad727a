#!/bin/sh
# shapes-render and shapes-eval in pipelines: rendered scenes are judged
# right in every format, wrong captions are judged wrong, runs repeat
# exactly, and bad input ends with the documented exit statuses.
set -eu
BIN=${BIN:-bin}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "shapes.sh: $*" >&2
    exit 1
}
render() { "$BIN/shapes-render" "$@"; }
judge() { "$BIN/shapes-eval" "$@"; }

# records through a pipe: all 50 judged right
render --random 50 --seed 7 -f record | judge > "$tmp/sum"
grep -qx 'overall  1.000 (50/50)' "$tmp/sum" || { cat "$tmp/sum"; fail "records: not every scene matched"; }
[ "$(wc -l < "$tmp/sum")" -eq 4 ] || fail "summary is not four lines"

# concatenated PNGs at 128 px, captions from the record each carries; JSON
render --random 50 --seed 8 --size 128 | judge --json > "$tmp/json"
grep -q '"overall": {"matched": 50, "total": 50, "fraction": 1.000000}' "$tmp/json" ||
    { cat "$tmp/json"; fail "PNG stream: not every scene matched"; }

# one PNG file each (more than 64 of them), judged from the files
mkdir "$tmp/png"
render --random 70 --seed 9 -o "$tmp/png/img-%d.png"
[ "$(ls "$tmp/png" | wc -l)" -eq 70 ] || fail "-o did not write 70 files"
judge "$tmp/png"/*.png | grep -qx 'overall  1.000 (70/70)' || fail "PNG files: not every scene matched"

# the same seed gives the same bytes; captions-only lists the prompts
a=$(render --random 20 -s 3 -f record | cksum)
b=$(render --random 20 -s 3 -f record | cksum)
[ "$a" = "$b" ] || fail "two runs with one seed differ"
c=$(render --random 20 -s 4 -f record | cksum)
[ "$a" != "$c" ] || fail "two seeds give the same output"
render --random 5 -s 3 --captions-only > "$tmp/caps"
[ "$(wc -l < "$tmp/caps")" -eq 5 ] || fail "--captions-only did not print 5 lines"

# captions are normalised; standard input gives one a line, blank lines skipped
render --captions-only 'An  Orange circle' 'two red squares' > "$tmp/args"
printf 'an orange circle\ntwo red squares\n' > "$tmp/expect"
cmp -s "$tmp/args" "$tmp/expect" || fail "captions are not normalised"
printf 'an orange circle\n\ntwo red squares\n' | render -s 5 -f record > "$tmp/stdin.rec"
judge -v "$tmp/stdin.rec" > "$tmp/v"
grep -q "record 2	match	two red squares" "$tmp/v" || { cat "$tmp/v"; fail "-v line missing"; }
[ "$(render -s 5 -f raw 'an orange circle' | wc -c)" -eq $((2 + 16 + 64 * 64 * 3)) ] || fail "raw size"

# raw: u16 length, caption, PX*PX*3 bytes per sample
render --random 10 -s 1 --size 32 -f raw > "$tmp/raw"
render --random 10 -s 1 --captions-only > "$tmp/rawcaps"
want=$(($(wc -c < "$tmp/rawcaps") + 10 + 10 * 32 * 32 * 3))
[ "$(wc -c < "$tmp/raw")" -eq "$want" ] || fail "raw stream is $(wc -c < "$tmp/raw") bytes, expected $want"

# a caption the pictures do not show: judged wrong, exit 0
render --random 30 -s 2 -f record | judge -c 'four purple triangles' > "$tmp/wrong"
grep -q '^overall  0\.' "$tmp/wrong" || { cat "$tmp/wrong"; fail "a wrong caption was judged right"; }
render -f record 'a red circle above a blue square' | judge -c 'a red circle below a blue square' -v > "$tmp/rel"
grep -q 'mismatch.*is not below' "$tmp/rel" || { cat "$tmp/rel"; fail "swapped relation not reported"; }

# exit statuses: 1 for a bad caption or bad input, 2 for usage
st=0; render 'a pink circle' > /dev/null 2> "$tmp/err" || st=$?
[ "$st" -eq 1 ] && grep -q "caption 'a pink circle'" "$tmp/err" || fail "bad caption: status $st"
st=0; printf 'a red circle\na red circles\n' | render -f record > /dev/null 2> "$tmp/err" || st=$?
[ "$st" -eq 1 ] && grep -q 'stdin line 2' "$tmp/err" || fail "bad stdin caption: status $st"
st=0; echo garbage | judge > /dev/null 2>&1 || st=$?
[ "$st" -eq 1 ] || fail "garbage input: status $st"
st=0; render -f record 'a red circle' | judge -c 'a red circle on a blue square' > /dev/null 2>&1 || st=$?
[ "$st" -eq 2 ] || fail "bad --caption: status $st"
st=0; render --size 3 'a red circle' > /dev/null 2>&1 || st=$?
[ "$st" -eq 2 ] || fail "--size 3: status $st"
st=0; render --random 2 'a red circle' > /dev/null 2>&1 || st=$?
[ "$st" -eq 2 ] || fail "--random with captions: status $st"
judge < /dev/null | grep -qx 'overall  -     (0/0)' || fail "empty input"
echo "shapes.sh: ok"
