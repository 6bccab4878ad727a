#!/bin/sh
# The tools behave alike (issue 25): one meaning per short option, the
# common options on every program, a plain -o name for one picture, the
# verbose model path right, and the examples' batch skipping blank lines.
. tests/shell/lib.sh

# -n is a count wherever it exists; clip-encode's negative prompt is -N
expect 2 "unknown option '-n'" "$BIN/clip-encode" -n 3 "a red circle"
"$BIN/clip-encode" -N "a blue square" "a red circle" | "$BIN/rec-dump" | grep -q '"negative_prompt":"a blue square"' ||
    fail "clip-encode -N does not set the negative prompt"

# every program answers the common options
for t in "$BIN"/*; do
    name=${t##*/}
    case $name in unclip-convert | unclip-bench) continue ;; esac # checked below / built by make bench
    "$t" --version | grep -q "^$name (unclip) " || fail "$name --version"
    "$t" --help | grep -q -- '--threads' || fail "$name --help lacks --threads"
    expect 2 "^$name: unknown option '--no-such-option'" "$t" --no-such-option
done
"$BIN/unclip-convert" --version | grep -q "^unclip-convert (unclip) " || fail "unclip-convert --version"
"$BIN/unclip-convert" --help | grep -q -- '--threads' || fail "unclip-convert --help lacks --threads"
expect 2 "^unclip-convert: unknown option --no-such-option" "$BIN/unclip-convert" --no-such-option a b

# the verbose line names the decoder's own file, not the ranking CLIP's
"$BIN/clip-encode" "a red circle" | "$BIN/prior-sample" -S 2 > "$tmp/p.rec"
"$BIN/decoder-diffuse" -v -S 2 "$tmp/p.rec" 2> "$tmp/err" > /dev/null
grep -q 'model .*/decoder.safetensors (unclip-shapes/decoder)' "$tmp/err" || { cat "$tmp/err" >&2; fail "decoder-diffuse -v names another model"; }

# a plain -o name for one picture, a pattern for several
"$BIN/decoder-diffuse" -S 2 -o "$tmp/one.png" "$tmp/p.rec"
"$BIN/upsample" --fast -o "$tmp/big.png" "$tmp/one.png"
"$BIN/rec-dump" "$tmp/big.png" | grep -q '"shape":\[128,128,3\]' || fail "upsample -o big.png"
"$BIN/shapes-render" -o "$tmp/r.png" "a red circle"
expect 2 'more than one picture' "$BIN/shapes-render" -o "$tmp/r2.png" "a red circle" "a blue square"
[ ! -e "$tmp/r2.png" ] || fail "shapes-render -o r2.png left a file for two pictures"

# examples/batch-parallel.sh: a blank line is no prompt
printf 'a red circle\n\n   \na blue square\n' > "$tmp/prompts.txt"
BIN=$BIN bash examples/batch-parallel.sh "$tmp/prompts.txt" "$tmp/batch" 1 > "$tmp/list"
[ "$(cat "$tmp/list" | tr '\n' ' ')" = "1.png 4.png " ] || fail "batch-parallel.sh drew $(cat "$tmp/list" | tr '\n' ' ')"
echo "cli.sh: ok"
