# craft.sh - shell functions that write crafted msgpack records and
# safetensors files on standard output, for the hostile-input and pipeline
# tests (sourced: . tests/tools/craft.sh). POSIX sh and printf only.
#
#   by 129 0 255          bytes given in decimal
#   rep N BYTES...        the bytes N times
#   map N, arr N          fixmap / fixarray headers (N < 16)
#   str TEXT              fixstr (ASCII, under 32 bytes)
#   uint V                unsigned integer below 2^32
#   tensor DTYPE NBYTES DIMS...   a tensor map up to its data bytes, which
#                                 the caller writes next (NBYTES < 65536)
#   stfile JSON NBYTES    a safetensors file: header JSON, NBYTES zero bytes
#   ONE, NAN, INF         the little-endian bytes of F32 1.0, NaN, +Inf

by() {
    for v; do
        printf "\\$((v / 64))$((v / 8 % 8))$((v % 8))"
    done
}
rep() {
    _n=$1
    shift
    while [ "$_n" -gt 0 ]; do
        by "$@"
        _n=$((_n - 1))
    done
}
map() { by $((128 + $1)); }
arr() { by $((144 + $1)); }
str() {
    by $((160 + ${#1}))
    printf %s "$1"
}
uint() {
    if [ "$1" -lt 128 ]; then by "$1"; else
        by 206 $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255))
    fi
}
tensor() {
    _dt=$1 _nb=$2
    shift 2
    map 3
    str dtype
    str "$_dt"
    str shape
    arr $#
    for _d; do uint "$_d"; done
    str data
    if [ "$_nb" -lt 256 ]; then by 196 "$_nb"; else by 197 $((_nb >> 8)) $((_nb & 255)); fi
}
stfile() {
    _l=${#1}
    by $((_l & 255)) $((_l >> 8 & 255)) $((_l >> 16 & 255)) 0 0 0 0 0
    printf %s "$1"
    head -c "$2" /dev/zero
}
ONE="0 0 128 63" NAN="0 0 192 127" INF="0 0 128 127"
