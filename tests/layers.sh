#!/bin/sh
# layers.sh [ROOT] - the include rule of the layers (README, "Layout"): a
# source file includes headers of its own folder or of a lower layer only.
#   0 formats/             bytes in and out
#   1 libcommon/nn/        kernels, threads, random numbers
#   2 libcommon/text/ image/ shapes/   tokenizer; pictures; the shapes world
#   3 libcommon/sample/    schedules, samplers, embedding arithmetic
#   4 libcommon/models/    model files, weights and forwards
#   5 libcommon/cli/       the tool skeleton: the only code that may exit
#   6 tools/ tests/ bench/ fuzz/   programs; none includes another's files
# Prints each include that breaks the rule and exits 1, else prints
# "layers: N files, N includes, ok". Run by `make check`.
root=${1:-.}
cd "$root" || exit 2
find formats libcommon tools tests bench fuzz -name '*.[ch]' 2>/dev/null | sort |
awk '
function rank(p) {
    if (p ~ /^formats\//) return 0
    if (p ~ /^libcommon\/nn\//) return 1
    if (p ~ /^libcommon\/(text|image|shapes)\//) return 2
    if (p ~ /^libcommon\/sample\//) return 3
    if (p ~ /^libcommon\/models\//) return 4
    if (p ~ /^libcommon\/cli\//) return 5
    if (p ~ /^libcommon\//) return -1      # a file outside the layers
    return 6
}
function dir(p) { sub(/\/[^\/]*$/, "", p); return p }
function top(p) { sub(/\/.*$/, "", p); return p }
{
    file = $0; nfiles++
    while ((getline line < file) > 0) {
        if (line !~ /^[ \t]*#[ \t]*include[ \t]*"/) continue
        inc = line; sub(/^[^"]*"/, "", inc); sub(/".*$/, "", inc)
        nincs++
        if (inc !~ /\//) continue                 # beside the includer
        rf = rank(file); ri = rank(inc)
        if (rf < 0 || ri < 0) { print file ": includes \"" inc "\": outside the layers"; bad++; continue }
        if (dir(inc) == dir(file)) continue
        if (ri < rf) continue
        if (rf == 6 && ri == 6 && top(inc) == top(file)) continue   # a program folder within itself
        print file ": includes \"" inc "\", a layer not below its own"; bad++
    }
    close(file)
}
END {
    if (bad) { print "layers: " bad " includes break the rule"; exit 1 }
    print "layers: " nfiles " files, " nincs " includes, ok"
}'
