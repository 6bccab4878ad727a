# lib.sh - the preamble of the shell tests, sourced from the repository
# root as `. tests/shell/lib.sh`: sets BIN and G, makes $tmp (removed at
# exit) and defines fail and expect, whose messages name the test.
set -eu
BIN=${BIN:-bin}
G=tests/golden
# bin/ finds the default model in models/ beside it, as a user's build
# does; the builds under build/ (make check SAN=1) are pointed at it
if [ "$(cd "$BIN/.." && pwd)" = "$(pwd)" ]; then
    unset UNCLIP_MODELS
else
    export UNCLIP_MODELS="$PWD/models"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "${0##*/}: $*" >&2
    exit 1
}
# expect STATUS PATTERN CMD...: the command exits STATUS with one stderr line matching PATTERN
expect() {
    want=$1 pat=$2
    shift 2
    set +e
    "$@" > "$tmp/out" 2> "$tmp/err"
    got=$?
    set -e
    [ "$got" -eq "$want" ] || { cat "$tmp/err" >&2; fail "'$*' exited $got, expected $want"; }
    grep -q -- "$pat" "$tmp/err" || { cat "$tmp/err" >&2; fail "'$*': stderr lacks '$pat'"; }
}
