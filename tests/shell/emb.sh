#!/bin/sh
# emb-interp and emb-textdiff on real records: endpoints exact, the norm
# interpolated in between, a text diff that moves the embedding; and
# decoder-diffuse -n 3 -o writing three files.
. tests/shell/lib.sh
MKMODEL=${MKMODEL:?MKMODEL must name the test model maker}
"$MKMODEL" clip "$tmp/clip.st"
"$MKMODEL" prior "$tmp/prior.st" $G/karlo/prior-sample
"$MKMODEL" decoder "$tmp/dec.st" $G/karlo/decoder-sample
for p in a:"a red cube" b:"two blue circles" c:"a green cube"; do
    "$BIN/clip-encode" -m "$tmp/clip.st" "${p#*:}" | "$BIN/prior-sample" -m "$tmp/prior.st" -s 3 > "$tmp/${p%%:*}.rec"
done
# the image_emb of each record as "fnv1a norm"
embs() {
    "$BIN/rec-dump" --full "$@" | grep -o '"image_emb":{[^}]*}' | awk '{
        v = $0; sub(/.*"values":\[/, "", v); sub(/\].*/, "", v)
        n = split(v, x, ","); s = 0; for (i = 1; i <= n; i++) s += x[i] * x[i]
        h = $0; sub(/.*"fnv1a":"/, "", h); sub(/".*/, "", h)
        printf "%s %.6f\n", h, sqrt(s) }'
}
embs "$tmp/a.rec" > "$tmp/ea"
embs "$tmp/b.rec" > "$tmp/eb"
"$BIN/emb-interp" --steps 5 "$tmp/a.rec" "$tmp/b.rec" > "$tmp/i.rec"
embs "$tmp/i.rec" > "$tmp/ei"
[ "$(wc -l < "$tmp/ei")" -eq 5 ] || fail "emb-interp --steps 5: not five records"
[ "$(head -1 "$tmp/ei" | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$tmp/ea")" ] || fail "first embedding is not A's"
[ "$(tail -1 "$tmp/ei" | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$tmp/eb")" ] || fail "last embedding is not B's"
na=$(cut -d' ' -f2 "$tmp/ea") nb=$(cut -d' ' -f2 "$tmp/eb") nm=$(sed -n 3p "$tmp/ei" | cut -d' ' -f2)
awk -v a="$na" -v b="$nb" -v m="$nm" 'BEGIN { w = (a + b) / 2; d = m - w; if (d < 0) d = -d; exit !(d < 1e-3 * w) }' ||
    fail "middle norm $nm is not the mean of $na and $nb"
# a text diff keeps the norm and changes the embedding
"$BIN/emb-textdiff" --theta 0.3 "$tmp/a.rec" "$tmp/a.rec" "$tmp/c.rec" > "$tmp/t.rec"
embs "$tmp/t.rec" > "$tmp/et"
[ "$(cut -d' ' -f1 "$tmp/et")" != "$(cut -d' ' -f1 "$tmp/ea")" ] || fail "emb-textdiff changed nothing"
awk -v a="$na" -v t="$(cut -d' ' -f2 "$tmp/et")" 'BEGIN { d = a - t; if (d < 0) d = -d; exit !(d < 1e-3 * a) }' ||
    fail "emb-textdiff changed the norm"
# three samples into three files
"$BIN/decoder-diffuse" -m "$tmp/dec.st" -S 3 -n 3 -o "$tmp/img-%d.png" "$tmp/a.rec"
for i in 0 1 2; do [ -s "$tmp/img-$i.png" ] || fail "-n 3 -o: img-$i.png missing"; done
[ ! -e "$tmp/img-3.png" ] || fail "-n 3 wrote a fourth file"
echo "emb.sh: ok"
