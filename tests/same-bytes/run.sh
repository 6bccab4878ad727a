#!/bin/sh
# run.sh - run tests/same-bytes/commands.txt and print one line per command:
# its number, the sha256 of its standard output and its exit status. To
# check that a change keeps every output byte, save this before the change
# and diff it after:
#   sh tests/same-bytes/run.sh > /tmp/before.txt    (old tree, built)
#   sh tests/same-bytes/run.sh | diff /tmp/before.txt -    (new tree, built)
# B (default bin) is the tools' folder, G (default tests/golden) the golden
# cases. Paths in messages must not differ, so both runs use the same B.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
B=$(cd "${B:-$root/bin}" && pwd)
G=${G:-$root/tests/golden}
export B G
w=$(mktemp -d)
trap 'rm -rf "$w"' EXIT
cd "$w" || exit 1
n=0
grep -v -e '^#' -e '^$' "$root/tests/same-bytes/commands.txt" | while IFS= read -r cmd; do
    n=$((n + 1))
    sh -c "$cmd" > "$w/.out" 2>/dev/null < /dev/null
    rc=$?
    echo "$n $(sha256sum < "$w/.out" | cut -c1-16) rc=$rc"
done
