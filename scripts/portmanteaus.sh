#!/bin/sh
# portmanteaus.sh - 50 made-up words glued from two words of the shapes
# world's grammar (its colours and shapes), for clip-lexicon's
# secret-vocabulary measurement (make eval-clip). Each line:
# WORD<TAB>SOURCE1<TAB>SOURCE2. The word is the head of the first source
# (its first ceil(0.6 n) letters) and the tail of the second (its last
# ceil(0.6 n) letters): blue + triangle -> bluangle. Of the 72 ordered pairs
# of different words, 50 spread evenly over the list are kept.
set -eu
words="red green blue yellow purple orange circle square triangle"
for a in $words; do
    for b in $words; do
        [ "$a" = "$b" ] || printf '%s %s\n' "$a" "$b"
    done
done | awk '
    function cut(n) { return int((6 * n + 9) / 10) }   # ceil(0.6 n)
    {
        n++
        if (int(n * 50 / 72) == int((n - 1) * 50 / 72)) next
        a = $1; b = $2
        w = substr(a, 1, cut(length(a))) substr(b, length(b) - cut(length(b)) + 1)
        printf "%s\t%s\t%s\n", w, a, b
    }'
