#!/bin/sh
# shapes-captions.sh KIND - every caption of one kind of the shapes world's
# grammar (SHAPES.md), one a line: single (54: 3 sizes incl. none x 6
# colours x 3 shapes), relation (1530: ordered pairs of objects that differ
# in colour or shape, 18 x 17, x 5 relation words), count (54: 3 numbers x
# 6 colours x 3 shapes). Used by make eval-clip as the label sets.
set -eu
colours="red green blue yellow purple orange"
shapes="circle square triangle"
art() { case $1 in [aeiou]*) echo an ;; *) echo a ;; esac; }
case ${1:-} in
single)
    for size in "" small big; do
        for c in $colours; do
            for s in $shapes; do
                if [ -n "$size" ]; then echo "a $size $c $s"; else echo "$(art "$c") $c $s"; fi
            done
        done
    done ;;
relation)
    for rel in "above" "below" "to the left of" "to the right of" "on top of"; do
        for c1 in $colours; do for s1 in $shapes; do
            for c2 in $colours; do for s2 in $shapes; do
                [ "$c1 $s1" = "$c2 $s2" ] && continue
                echo "$(art "$c1") $c1 $s1 $rel $(art "$c2") $c2 $s2"
            done; done
        done; done
    done ;;
count)
    for n in two three four; do
        for c in $colours; do
            for s in $shapes; do echo "$n $c ${s}s"; done
        done
    done ;;
*)
    echo "usage: shapes-captions.sh single|relation|count" >&2
    exit 2 ;;
esac
