#!/bin/sh
# The tools in pipelines, as Unix tools behave: a reader that closes early
# ends the writer quietly; a write error is an error (exit 1); -o files are
# written under a temporary name and renamed, so an error or SIGINT leaves
# no partial file (and an older file intact); every man page documents the
# exit statuses; a stream of 10 000 records runs in the memory of one.
set -eu
BIN=${BIN:-bin}
MKMODEL=${MKMODEL:?MKMODEL must name the test model maker}
G=tests/golden
tmp=$(mktemp -d)
pid=
trap 'if [ -n "$pid" ]; then kill "$pid" 2> /dev/null || :; fi; rm -rf "$tmp"' EXIT
fail() {
    echo "pipes.sh: $*" >&2
    exit 1
}
. tests/tools/craft.sh

"$MKMODEL" clip "$tmp/clip.st"
"$MKMODEL" prior "$tmp/prior.st" $G/karlo/prior-sample
"$MKMODEL" decoder "$tmp/dec.st" $G/karlo/decoder-forward
"$MKMODEL" sr "$tmp/sr.st" $G/karlo/sr-forward-updown
"$BIN/clip-encode" -m "$tmp/clip.st" "a red cube" "two green circles" "a blue square" > "$tmp/a.rec"
"$BIN/clip-encode" -m "$tmp/clip.st" "a green cube" > "$tmp/b.rec"
"$BIN/prior-sample" -m "$tmp/prior.st" -S ddim2 "$tmp/a.rec" > "$tmp/p.rec"
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 2 "$tmp/p.rec" > "$tmp/d.png"
"$BIN/shapes-render" --random 3 > "$tmp/s.png"

# ---- a reader that closes early: no message, status 0 or SIGPIPE's ----
quiet() {
    { "$@" 2> "$tmp/err" && echo 0 > "$tmp/st" || echo $? > "$tmp/st"; } | head -c 1 > /dev/null
    st=$(cat "$tmp/st")
    [ "$st" -eq 0 ] || [ "$st" -eq 141 ] || fail "'$* | head -c 1': status $st"
    [ ! -s "$tmp/err" ] || { cat "$tmp/err" >&2; fail "'$* | head -c 1' was not quiet"; }
}
quiet "$BIN/clip-encode" -m "$tmp/clip.st" a b c d e f g h i j k l
quiet "$BIN/prior-sample" -m "$tmp/prior.st" -S ddim2 -n 4 "$tmp/a.rec"
quiet "$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 2 -n 4 "$tmp/p.rec"
quiet "$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 2 -n 4 -f record "$tmp/p.rec"
quiet "$BIN/upsample" --fast "$tmp/d.png" "$tmp/d.png" "$tmp/d.png" "$tmp/d.png" "$tmp/d.png"
quiet "$BIN/rec-dump" --full "$tmp/a.rec" "$tmp/p.rec"
quiet "$BIN/emb-interp" -n 20 "$tmp/p.rec"
quiet "$BIN/emb-textdiff" -n 20 "$tmp/p.rec" "$tmp/a.rec" "$tmp/b.rec"
quiet "$BIN/shapes-render" --random 40
quiet "$BIN/shapes-eval" -v "$tmp/s.png" "$tmp/s.png" "$tmp/s.png"

# ---- a write error: exit 1, one line that says so ----
full() {
    st=0
    "$@" > /dev/full 2> "$tmp/err" || st=$?
    [ "$st" -eq 1 ] || { cat "$tmp/err" >&2; fail "'$* > /dev/full': status $st, expected 1"; }
    [ "$(wc -l < "$tmp/err")" -eq 1 ] && grep -qi 'write' "$tmp/err" ||
        { cat "$tmp/err" >&2; fail "'$* > /dev/full': no one-line write error"; }
}
if [ -w /dev/full ]; then
    full "$BIN/clip-encode" -m "$tmp/clip.st" "a cube"
    full "$BIN/prior-sample" -m "$tmp/prior.st" -S ddim2 "$tmp/a.rec"
    full "$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 2 "$tmp/p.rec"
    full "$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 2 -f record "$tmp/p.rec"
    full "$BIN/upsample" --fast "$tmp/d.png"
    full "$BIN/upsample" --fast -f record "$tmp/d.png"
    full "$BIN/rec-dump" "$tmp/a.rec"
    full "$BIN/rec-dump" --fields "$tmp/a.rec"
    full "$BIN/emb-interp" "$tmp/p.rec"
    full "$BIN/emb-textdiff" "$tmp/p.rec" "$tmp/a.rec" "$tmp/b.rec"
    full "$BIN/shapes-render" "a red circle"
    full "$BIN/shapes-render" --captions-only --random 3
    full "$BIN/shapes-eval" "$tmp/s.png"
    full "$BIN/shapes-eval" --json "$tmp/s.png"
fi

# ---- -o: temporary name, renamed when complete ----
nofile() { # nofile PATH: neither PATH nor a temporary of it exists
    [ ! -e "$1" ] || fail "$1 left behind"
    for f in "$1".tmp.*; do
        [ ! -e "$f" ] || fail "temporary $f left behind"
    done
}
# an error in record 4 leaves no output file, and an older one intact
{ cat "$tmp/p.rec" && map 2 && str version && by 1 && str image_emb && tensor F32 128 32 && rep 31 $ONE && by $NAN; } > "$tmp/bad.rec"
st=0
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 2 -f record -o "$tmp/o.rec" "$tmp/bad.rec" 2> "$tmp/err" || st=$?
[ "$st" -eq 1 ] && grep -q 'record 4 field image_emb: element 31 is not finite' "$tmp/err" || fail "bad record 4: status $st"
nofile "$tmp/o.rec"
echo old > "$tmp/o.rec"
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 2 -f record -o "$tmp/o.rec" "$tmp/bad.rec" 2> /dev/null && fail "bad record 4 accepted"
[ "$(cat "$tmp/o.rec")" = old ] || fail "a failed run changed the older output file"
rm "$tmp/o.rec"
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 2 -o "$tmp/img-%d.png" "$tmp/bad.rec" 2> /dev/null && fail "bad record 4 accepted"
for i in 0 1 2; do "$BIN/rec-dump" "$tmp/img-$i.png" > /dev/null || fail "img-$i.png is not a whole PNG"; done
nofile "$tmp/img-3.png"
"$BIN/upsample" --fast -f record "$tmp/d.png" > "$tmp/u.rec"
{ cat "$tmp/u.rec" && map 2 && str version && by 1 && str image && tensor U8 12 2 2 && rep 12 0; } > "$tmp/bad2.rec"
"$BIN/upsample" --fast -f record -o "$tmp/o.rec" "$tmp/bad2.rec" 2> /dev/null && fail "upsample: bad record 4 accepted"
nofile "$tmp/o.rec"
"$BIN/shapes-render" -f record -o "$tmp/o.rec" "a red circle" "a pink circle" 2> /dev/null && fail "bad caption accepted"
nofile "$tmp/o.rec"
st=0
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 2 -f record -o "$tmp/no/such/dir/o.rec" "$tmp/p.rec" 2> "$tmp/err" || st=$?
[ "$st" -eq 1 ] && grep -q 'folder .*/no/such/dir: No such file or directory' "$tmp/err" || fail "-o into a missing directory: status $st"
# SIGINT while a long job writes -o: the temporary file goes, nothing else
# appears; files of the pattern already complete stay whole
for i in 1 2 3 4 5 6 7 8 9 10; do cat "$tmp/p.rec"; done > "$tmp/many.rec"
interrupt() { # interrupt WATCH CMD...: SIGINT CMD once WATCH exists and is not empty
    watch=$1
    shift
    "$@" 2> "$tmp/err" &
    pid=$!
    i=0
    while [ $i -lt 600 ]; do
        for f in $watch; do [ -s "$f" ] && break 2; done
        kill -0 "$pid" 2> /dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    kill -INT "$pid" 2> /dev/null || fail "'$*' ended before it could be interrupted"
    st=0
    wait "$pid" || st=$?
    pid=
    [ "$st" -eq 130 ] || { cat "$tmp/err" >&2; fail "'$*': status $st after SIGINT, expected 130"; }
}
interrupt "$tmp/o.rec.tmp.*" "$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 30 -f record -o "$tmp/o.rec" "$tmp/many.rec"
nofile "$tmp/o.rec"
rm -f "$tmp"/img-*
interrupt "$tmp/img-0.png" "$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 30 -o "$tmp/img-%d.png" "$tmp/many.rec"
"$BIN/rec-dump" "$tmp/img-0.png" > /dev/null || fail "img-0.png is not a whole PNG after SIGINT"
for f in "$tmp"/img-*; do
    case $f in *.tmp.*) fail "temporary $f left behind after SIGINT" ;; esac
done

# ---- exit statuses in every man page ----
for page in man/man1/*.1; do
    sed -n '/^\.SH "*EXIT STATUS/,/^\.SH/p' "$page" > "$tmp/es"
    [ -s "$tmp/es" ] || fail "$page: no EXIT STATUS section"
    for s in 0 1 2; do
        grep -Eq "(^|[^0-9.])$s([^0-9]|$)" "$tmp/es" || fail "$page: EXIT STATUS does not give status $s"
    done
done

# ---- 10 000 records in the memory of one ----
# Records of 1.9 KB (an 8x8 picture and a 400-value embedding): the stream
# is 19 MB, so a tool that kept what it read would grow by as much.
{ map 4 && str version && by 1 && str prompt && str "a red circle" && str image && tensor U8 192 8 8 3 &&
    rep 64 200 30 30 && str image_emb && tensor F32 1600 400 && rep 400 $ONE; } > "$tmp/one.rec"
cp "$tmp/one.rec" "$tmp/x.rec"
for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14; do cat "$tmp/x.rec" "$tmp/x.rec" > "$tmp/y.rec" && mv "$tmp/y.rec" "$tmp/x.rec"; done
head -c $(($(wc -c < "$tmp/one.rec") * 10000)) "$tmp/x.rec" > "$tmp/big.rec"
rm "$tmp/x.rec"
# peak resident memory in KB of CMD (stdout discarded)
peak() {
    if /usr/bin/time -f %M true > /dev/null 2>&1; then
        /usr/bin/time -f %M -o "$tmp/rss" "$@" > /dev/null || fail "'$*' failed"
        tail -1 "$tmp/rss"
    else
        "$@" > /dev/null &
        pid=$!
        hwm=0
        while kill -0 "$pid" 2> /dev/null; do
            v=$(sed -n 's/^VmHWM:[^0-9]*\([0-9]*\).*/\1/p' "/proc/$pid/status" 2> /dev/null || :)
            [ -z "$v" ] || hwm=$v
            sleep 0.05
        done
        wait "$pid" || fail "'$*' failed"
        pid=
        echo "$hwm"
    fi
}
# (ASan's quarantine would hold freed blocks and look like growth)
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}quarantine_size_mb=0"
export ASAN_OPTIONS
bounded() {
    one=$(peak "$@" "$tmp/one.rec")
    many=$(peak "$@" "$tmp/big.rec")
    [ "$many" -le $((one + 8192)) ] || fail "'$*': $many KB for 10 000 records, $one KB for one"
}
bounded "$BIN/rec-dump"
bounded "$BIN/upsample" --fast -f record
bounded "$BIN/shapes-eval"
[ "$("$BIN/rec-dump" --fields "$tmp/big.rec" | wc -l)" -eq 10000 ] || fail "rec-dump: not 10 000 records"
echo "pipes.sh: ok"
