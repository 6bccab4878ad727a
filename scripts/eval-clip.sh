#!/bin/sh
# eval-clip.sh - the measurements of CLIP as an instrument (make eval-clip):
#  1. zero-shot classification: N rendered scenes (shapes-render), each
#     ranked by clip-rank among every caption of its kind
#     (scripts/shapes-captions.sh); top-1 judged by shapes-eval (a caption
#     that truly describes the scene counts: "a red circle" for a small red
#     circle, "on top of" for "above") and as exact caption matches;
#  2. reranking: for R prompts, 8 decoded candidates each (decoder-diffuse
#     -n 8 --best-of 1); clip-rank's pick per prompt against decoder-diffuse
#     --best-of 8's (the same 8 candidates: same seed and streams; computed
#     by clip-rank --to-emb, VERIFY=1 checks it against the decoder), each
#     upsampled and judged, and a candidate taken blindly (all 8 judged
#     after upsample --fast);
#  3. clip-lexicon: 50 portmanteaus (scripts/portmanteaus.sh), how often a
#     source word is among the top 5 neighbours, in the vocabulary and in the
#     grammar's word list.
# Environment: BIN (tools), OUT (work folder), N (600), SEED (1), R (26),
# PARTS (default "1 2 3").
set -eu
BIN=${BIN:-bin} OUT=${OUT:-build/rel/eval-clip} N=${N:-600} SEED=${SEED:-1} R=${R:-26}
PARTS=${PARTS:-1 2 3}
mkdir -p "$OUT"
here=$(cd "$(dirname "$0")" && pwd)
kind_of() { # caption lines -> kind (single, relation, count)
    awk '{ if ($1 == "two" || $1 == "three" || $1 == "four") k = "count";
           else if ($0 ~ / (above|below|to the left of|to the right of|on top of) /) k = "relation";
           else k = "single"; print k }'
}
json_frac() { # shapes-eval --json summary, kind -> "frac matched total"
    tr ',{}' '\n\n\n' < "$1" | awk -v k="\"$2\"" '$0 ~ k { on = 1 } on && /matched/ { split($0, a, ":"); m = a[2] }
        on && /total/ { split($0, a, ":"); print m, a[2]; exit }'
}

for part in $PARTS; do case $part in
1)
    echo "== zero-shot classification: $N rendered scenes, seed $SEED"
    "$BIN/shapes-render" --random "$N" --seed "$SEED" --captions-only > "$OUT/zs-captions.txt"
    kind_of < "$OUT/zs-captions.txt" > "$OUT/zs-kinds.txt"
    "$BIN/shapes-render" --seed "$SEED" -f record < "$OUT/zs-captions.txt" > "$OUT/zs-scenes.rec"
    printf 'kind      scenes  labels  top-1 (judged)  top-1 (exact caption)  judge on the true captions\n'
    for k in single relation count; do
        sh "$here/shapes-captions.sh" $k > "$OUT/zs-labels-$k.txt"
        paste "$OUT/zs-kinds.txt" "$OUT/zs-captions.txt" | awk -F'\t' -v k=$k '$1 == k { print $2 }' > "$OUT/zs-$k.txt"
        "$BIN/shapes-render" --seed "$SEED" -f record < "$OUT/zs-$k.txt" > "$OUT/zs-$k.rec"
        "$BIN/clip-rank" -T "$OUT/zs-labels-$k.txt" --top 1 "$OUT/zs-$k.rec" > "$OUT/zs-top1-$k.tsv"
        "$BIN/clip-rank" -T "$OUT/zs-labels-$k.txt" --top 1 -f record --relabel "$OUT/zs-$k.rec" |
            "$BIN/shapes-eval" --json > "$OUT/zs-judged-$k.json"
        "$BIN/shapes-eval" --json "$OUT/zs-$k.rec" > "$OUT/zs-truth-$k.json"
        n=$(wc -l < "$OUT/zs-$k.txt") labels=$(wc -l < "$OUT/zs-labels-$k.txt")
        exact=$(cut -f2 "$OUT/zs-top1-$k.tsv" | paste - "$OUT/zs-$k.txt" | awk -F'\t' '$1 == $2 { e++ } END { print e + 0 }')
        set -- $(json_frac "$OUT/zs-judged-$k.json" $k)
        judged=$1
        set -- $(json_frac "$OUT/zs-truth-$k.json" $k)
        awk -v k=$k -v n="$n" -v l="$labels" -v j="$judged" -v e="$exact" -v t="$1" 'BEGIN {
            printf "%-9s %6d  %6d  %.3f (%d)     %.3f (%d)            %.3f\n", k, n, l, j / n, j, e / n, e, t / n }'
    done
    ;;
2)
    echo "== reranking: $R prompts x 8 candidates, seed $SEED"
    "$BIN/shapes-render" --random "$R" --seed "$((SEED + 1000))" --captions-only > "$OUT/rr-captions.txt"
    "$BIN/clip-encode" < "$OUT/rr-captions.txt" | "$BIN/prior-sample" -s "$SEED" > "$OUT/rr-prior.rec"
    "$BIN/decoder-diffuse" -q -n 8 --best-of 1 -f record "$OUT/rr-prior.rec" > "$OUT/rr-cands.rec"
    # clip-rank's pick: the text-image logit against the prompt. decoder-diffuse
    # --best-of 8 draws the same 8 candidates (same seed, streams 0..7) and keeps
    # the one nearest the image_emb they were decoded from: clip-rank --to-emb
    # is that criterion (VERIFY=1 runs decoder-diffuse --best-of 8 as well and
    # checks that it keeps the same pictures).
    "$BIN/clip-rank" --top 1 -f record "$OUT/rr-cands.rec" > "$OUT/rr-cliprank.rec"
    "$BIN/clip-rank" --to-emb --top 1 -f record "$OUT/rr-cands.rec" > "$OUT/rr-bestof.rec"
    if [ "${VERIFY:-0}" = 1 ]; then
        "$BIN/decoder-diffuse" -q --best-of 8 -f record "$OUT/rr-prior.rec" > "$OUT/rr-bestof-decoder.rec"
        for f in rr-bestof rr-bestof-decoder; do
            "$BIN/rec-dump" "$OUT/$f.rec" | grep -o '"image":{[^}]*}' | sed 's/.*"fnv1a":"//; s/".*//' > "$OUT/$f.hash"
        done
        cmp -s "$OUT/rr-bestof.hash" "$OUT/rr-bestof-decoder.hash" &&
            echo "verified: decoder-diffuse --best-of 8 keeps the same $R pictures" ||
            echo "VERIFY FAILED: decoder-diffuse --best-of 8 keeps other pictures"
    fi
    for f in cliprank bestof; do
        "$BIN/upsample" -q -f record "$OUT/rr-$f.rec" | "$BIN/shapes-eval" > "$OUT/rr-$f.txt"
        "$BIN/upsample" -q --fast -f record "$OUT/rr-$f.rec" | "$BIN/shapes-eval" > "$OUT/rr-$f-fast.txt"
    done
    "$BIN/upsample" -q --fast -f record "$OUT/rr-cands.rec" | "$BIN/shapes-eval" > "$OUT/rr-cands-fast.txt"
    echo "-- clip-rank --top 1 (logit against the prompt), upsampled:"; cat "$OUT/rr-cliprank.txt"
    echo "-- decoder-diffuse --best-of 8 (cosine to the image_emb), upsampled:"; cat "$OUT/rr-bestof.txt"
    echo "-- the same two picks after a plain 4x resize (upsample --fast):"
    cat "$OUT/rr-cliprank-fast.txt" "$OUT/rr-bestof-fast.txt"
    echo "-- every candidate (a blind pick), after upsample --fast:"; cat "$OUT/rr-cands-fast.txt"
    ;;
3)
    echo "== clip-lexicon: 50 portmanteaus, a source word in the top 5"
    sh "$here/portmanteaus.sh" > "$OUT/lex-words.tsv"
    printf '%s\n' red green blue yellow purple orange circle square triangle small big two three four \
        above below left right top > "$OUT/lex-grammar.txt"
    cut -f1 "$OUT/lex-words.tsv" > "$OUT/lex-queries.txt"
    "$BIN/clip-lexicon" -k 5 --no-cache < "$OUT/lex-queries.txt" > "$OUT/lex-vocab.tsv"
    "$BIN/clip-lexicon" -k 5 -L "$OUT/lex-grammar.txt" < "$OUT/lex-queries.txt" > "$OUT/lex-grammar.tsv"
    "$BIN/clip-lexicon" -k 5 --prior -s "$SEED" -L "$OUT/lex-grammar.txt" < "$OUT/lex-queries.txt" > "$OUT/lex-prior.tsv"
    for f in vocab grammar prior; do
        kind=text; [ $f = prior ] && kind=prior
        awk -F'\t' -v kind=$kind -v name=$f 'NR == FNR { a[$1] = $2; b[$1] = $3; next }
            $1 == kind { e = $4; sub(/<\/w>$/, "", e); if (e == a[$2] || e == b[$2]) { hit[$2] = 1; if ($3 == 1) top1[$2] = 1 } }
            END { for (w in a) { n++; h += (w in hit); t += (w in top1) }
                  printf "%-8s %d/%d words with a source word in the top 5 (%.2f), %d at rank 1\n", name, h, n, h / n, t }' \
            "$OUT/lex-words.tsv" "$OUT/lex-$f.tsv"
    done
    ;;
esac; done
