#!/bin/sh
# Run every suite (cmocka unit tests, the golden cases, the shell pipelines),
# keep going after a failure, and close with one line of totals:
# "check: N passed, M failed". Called by `make check` with the build paths.
BUILD=${BUILD:?} BIN=${BIN:?}
pass=0 failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    echo "== $t"
    if "$t" > "$log" 2>&1; then st=0; else st=1; fi
    cat "$log"
    p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$log" | tail -1)
    pass=$((pass + ${p:-0}))
    failed=$((failed + ${f:-0}))
    [ "$st" -eq 0 ] || [ -n "$f" ] || failed=$((failed + 1))
done

echo "== golden"
if "$BIN/golden-check" --pending tests/golden/PENDING tests/golden > "$log" 2>&1; then st=0; else st=1; fi
cat "$log"
line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
p=${line%% passed*}
f=${line#*, }
f=${f%% failed}
pass=$((pass + ${p:-0}))
failed=$((failed + ${f:-0}))
[ "$st" -eq 0 ] || [ -n "$line" ] || failed=$((failed + 1))

for t in tests/shell/*.sh; do
    case $t in */lib.sh) continue ;; esac  # the tests' shared setup
    echo "== $t"
    if BIN=$BIN MKMODEL=$BUILD/tests/mkmodel sh "$t"; then
        pass=$((pass + 1))
    else
        echo "FAIL $t"
        failed=$((failed + 1))
    fi
done

echo "check: $pass passed, $failed failed"
[ "$failed" -eq 0 ]
