#!/bin/sh
# unclip-convert: every input format (Karlo checkpoints, OpenAI CLIP TorchScript
# and state dicts, Hugging Face CLIP, diffusers karlo-v1-alpha), built here from
# the golden cases' weights, converts to model files that hold the same tensors
# and reproduce every golden case; converted files run in the tools alone;
# hostile or wrong input is refused with nothing written.
. tests/shell/lib.sh

PY=
for p in ${PYTHON:-} /usr/bin/python3 python3; do
    if "$p" -c 'import numpy' 2> /dev/null; then PY=$p && break; fi
done
[ -n "$PY" ] || fail "needs Python 3 with numpy (Debian: python3-numpy)"
[ -x "$BIN/unclip-convert" ] || fail "$BIN/unclip-convert missing"
mk() { "$PY" tests/convert/mkinputs.py "$@"; }
conv() { "$BIN/unclip-convert" -q "$@" || fail "unclip-convert $* failed"; }
mkdir "$tmp/cases"
ncases=0
verify() { # verify MODEL CASE NAME [OPTIONS]: MODEL holds the case's weights; the case runs it
    v_model=$1 v_case=$2 v_name=$3
    shift 3
    mk verify "$v_model" "$v_case" --derive="$tmp/cases/$v_name" "$@" || fail "$v_model: not the weights of $v_case"
    ncases=$((ncases + 1))
}

# ---- Karlo checkpoints (torch.save zip; the *-sample ones in the legacy format)
for c in prior-forward prior-sample prior-sample-ddim decoder-forward decoder-forward-f16 decoder-sample \
    sr-forward sr-forward-updown sr-sample; do
    case $c in prior*) stage=prior ;; decoder*) stage=decoder ;; *) stage=sr ;; esac
    fmt=
    case $c in *-sample) fmt=--legacy ;; esac
    mk karlo "$G/karlo/$c" "$tmp/$c" $fmt
    set --
    [ $stage != prior ] || set -- --stats "$tmp/$c.th"
    conv --stage $stage --config "$tmp/$c.json" "$@" "$tmp/$c.ckpt" "$tmp/$c.st"
    verify "$tmp/$c.st" "$G/karlo/$c" ckpt-$c --dtypes --stage=$stage --id=$c
done
# an unclip file converts to itself
conv "$tmp/decoder-forward.st" "$tmp/again.st"
cmp -s "$tmp/decoder-forward.st" "$tmp/again.st" || fail "re-converting an unclip file changed it"

# ---- diffusers layout (kakaobrain/karlo-v1-alpha), built after diffusers' own conversion script;
# hyperparameters from its config.json files, the rest from Karlo's release
mk diffusers "$G/karlo/prior-forward" "$G/karlo/decoder-forward" "$G/karlo/sr-forward-updown" "$tmp/karlo-a"
mk diffusers "$G/karlo/prior-sample" "$G/karlo/decoder-forward-f16" "$G/karlo/sr-sample" "$tmp/karlo-b" --bin
for set in a:prior-forward:decoder-forward:sr-forward-updown b:prior-sample:decoder-forward-f16:sr-sample; do
    IFS=: read -r p pc dc sc << EOF
$set
EOF
    for stage in prior decoder sr; do
        case $stage in prior) c=$pc ;; decoder) c=$dc ;; *) c=$sc ;; esac
        conv --stage $stage --model-id t/$stage "$tmp/karlo-$p" "$tmp/d$p-$stage.st"
        verify "$tmp/d$p-$stage.st" "$G/karlo/$c" diffusers-$p-$c --dtypes --stage=$stage --id=t/$stage
    done
    # one component folder gives the same file as the pipeline
    for sub in prior:prior decoder:decoder text_proj:decoder super_res_first:sr super_res_last:sr; do
        conv --model-id t/${sub#*:} "$tmp/karlo-$p/${sub%:*}" "$tmp/sub.st"
        cmp -s "$tmp/sub.st" "$tmp/d$p-${sub#*:}.st" || fail "diffusers folder ${sub%:*} differs from the pipeline"
    done
done
mk meta "$tmp/da-decoder.st" unclip.config | grep -q '"text_drop": 0.3' || fail "decoder config lacks Karlo's text_drop"

# ---- OpenAI CLIP: TorchScript archive (as ViT-L-14.pt), pickled state dict, transformers layout
for c in clip/text-encode clip/image-encode clip/image-encode-f32 clip/logits karlo/clip-encode-text-karlo; do
    n=$(basename $c)
    fmt=
    case $n in image-encode) fmt=--legacy ;; esac
    mk clip "$G/$c" "$tmp/$n" $fmt
    conv --config "$tmp/$n.json" "$tmp/$n.pt" "$tmp/$n.st"
    verify "$tmp/$n.st" "$G/$c" jit-$n --dtypes --stage=clip --id=openai/$n
    case $n in text-encode | image-encode) ;; *) continue ;; esac
    conv --config "$tmp/$n.json" "$tmp/$n-sd.pt" "$tmp/$n-sd.st"
    mk compare "$tmp/$n-sd.st" "$tmp/$n.st" --dtypes || fail "$n: state dict and TorchScript differ"
    conv "$tmp/$n-hf" "$tmp/$n-hf.st"
    verify "$tmp/$n-hf.st" "$G/$c" hf-$n --dtypes --stage=clip
done
# the published transformers layout: heads from config.json
conv "$G/layouts/hf-clip" "$tmp/hf-clip.st"
conv "$G/layouts/hf-clip/model.safetensors" "$tmp/hf-clip-file.st"
cmp -s "$tmp/hf-clip.st" "$tmp/hf-clip-file.st" || fail "hf-clip: folder and file differ"
mk meta "$tmp/hf-clip.st" unclip.config | grep -q '"transformer_heads": 2' || fail "hf-clip: head count lost"
mk verify "$tmp/hf-clip.st" "$G/layouts/hf-clip" --like="$tmp/hf-clip.st" --derive="$tmp/cases/layouts-hf-clip"
ncases=$((ncases + 1))

# ---- unclip.clip: a prior or decoder declares the CLIPs it pairs with (ids,
# checksums, or a CLIP file's checksum); an unclip file keeps its own;
# --meta-only changes the metadata alone, every data byte as it was
datasum() { "$PY" -c 'import hashlib, struct, sys; b = open(sys.argv[1], "rb").read()
print(hashlib.sha256(b[8 + struct.unpack("<Q", b[:8])[0]:]).hexdigest())' "$1"; }
[ -z "$(mk meta "$tmp/decoder-forward.st" unclip.clip)" ] || fail "a decoder of another config than Karlo's release declares a CLIP"
conv --clip "test/clip-a sha256:12" "$tmp/decoder-forward.st" "$tmp/paired.st"
[ "$(mk meta "$tmp/paired.st" unclip.clip)" = "test/clip-a sha256:12" ] || fail "--clip: unclip.clip not written"
conv "$tmp/paired.st" "$tmp/again.st"
[ "$(mk meta "$tmp/again.st" unclip.clip)" = "test/clip-a sha256:12" ] || fail "re-converting lost unclip.clip"
conv --clip "$tmp/hf-clip.st" "$tmp/prior-forward.st" "$tmp/paired.st"
[ "$(mk meta "$tmp/paired.st" unclip.clip)" = "$(mk meta "$tmp/hf-clip.st" unclip.checksum)" ] ||
    fail "--clip FILE: not the CLIP file's checksum"
cp "$tmp/decoder-forward.st" "$tmp/meta.st"
chmod 640 "$tmp/meta.st"
conv --meta-only --clip "openai/ViT-L-14" --model-id test/renamed "$tmp/meta.st" "$tmp/meta.st"
[ "$(mk meta "$tmp/meta.st" unclip.clip)" = openai/ViT-L-14 ] && [ "$(mk meta "$tmp/meta.st" unclip.model_id)" = test/renamed ] ||
    fail "--meta-only: metadata not rewritten"
[ "$(mk meta "$tmp/meta.st" unclip.checksum)" = "$(mk meta "$tmp/decoder-forward.st" unclip.checksum)" ] &&
    [ "$(mk meta "$tmp/meta.st" unclip.config)" = "$(mk meta "$tmp/decoder-forward.st" unclip.config)" ] ||
    fail "--meta-only: changed other metadata"
[ "$(datasum "$tmp/meta.st")" = "$(datasum "$tmp/decoder-forward.st")" ] || fail "--meta-only: the data bytes changed"
[ "sha256:$(datasum "$tmp/meta.st")" = "$(mk meta "$tmp/meta.st" unclip.checksum)" ] || fail "unclip.checksum is not the data's SHA-256"
[ "$(stat -c %a "$tmp/meta.st")" = 640 ] || fail "--meta-only: the mode of the file it replaced was not kept"
mk compare "$tmp/meta.st" "$tmp/decoder-forward.st" --dtypes || fail "--meta-only: the tensors differ"
conv --meta-only --clip none "$tmp/meta.st" "$tmp/unpaired.st"
[ -z "$(mk meta "$tmp/unpaired.st" unclip.clip)" ] || fail "--clip none: unclip.clip kept"
expect 2 'not 1 to 16 CLIP model ids or checksums' "$BIN/unclip-convert" --clip "a  b" "$tmp/decoder-forward.st" "$tmp/x.st"
expect 2 'belongs to a prior or decoder' "$BIN/unclip-convert" --meta-only --clip x "$tmp/sr-forward.st" "$tmp/x.st"
expect 2 'belongs to a prior or decoder' "$BIN/unclip-convert" --clip x "$tmp/sr-forward.st" "$tmp/x.st"
expect 2 'changes metadata only' "$BIN/unclip-convert" --meta-only --f16 "$tmp/decoder-forward.st" "$tmp/x.st"
expect 1 'not an unclip CLIP model file' "$BIN/unclip-convert" --clip "$tmp/decoder-forward.st" "$tmp/prior-forward.st" "$tmp/x.st"
expect 1 'not an unclip model file' "$BIN/unclip-convert" --meta-only "$G/layouts/hf-clip/model.safetensors" "$tmp/x.st"
[ ! -e "$tmp/x.st" ] || fail "a refused --clip or --meta-only wrote its output"

# ---- every derived case reproduces the golden numbers
"$BIN/golden-check" "$tmp/cases" > "$tmp/gc.txt" || { cat "$tmp/gc.txt" >&2; fail "golden cases fail with converted models"; }
tail -1 "$tmp/gc.txt" | grep -qx "$ncases passed, 0 failed" || { cat "$tmp/gc.txt" >&2; fail "expected $ncases passing cases"; }

# ---- a converted file runs in its tool with nothing beside it
mkdir "$tmp/alone"
cp "$tmp/hf-clip.st" "$tmp/alone/clip.safetensors"
"$BIN/clip-encode" -m "$tmp/alone/clip.safetensors" "a red cube on a blue cube" > "$tmp/c1.rec"
"$BIN/clip-encode" -m "$G/layouts/hf-clip" "a red cube on a blue cube" > "$tmp/c2.rec"
emb() { "$BIN/rec-dump" --full "$1" | grep -o '"text_emb":{[^}]*}'; }
[ -n "$(emb "$tmp/c1.rec")" ] && [ "$(emb "$tmp/c1.rec")" = "$(emb "$tmp/c2.rec")" ] ||
    fail "clip-encode: the converted transformers model gives another text_emb"
if [ -n "${MKMODEL:-}" ]; then
    rm -f "$tmp/alone/"*
    cp "$tmp/prior-sample.st" "$tmp/alone/prior.safetensors"
    "$MKMODEL" clip "$tmp/clip.st"
    "$MKMODEL" prior "$tmp/prior-mk.st" "$G/karlo/prior-sample"
    "$BIN/clip-encode" -m "$tmp/clip.st" "two green circles" > "$tmp/t.rec"
    ie() { "$BIN/rec-dump" --full "$1" | grep -o '"image_emb":{[^}]*}'; }
    "$BIN/prior-sample" -m "$tmp/alone/prior.safetensors" -s 4 "$tmp/t.rec" > "$tmp/p1.rec"
    "$BIN/prior-sample" -m "$tmp/prior-mk.st" -s 4 "$tmp/t.rec" > "$tmp/p2.rec"
    [ -n "$(ie "$tmp/p1.rec")" ] && [ "$(ie "$tmp/p1.rec")" = "$(ie "$tmp/p2.rec")" ] ||
        fail "prior-sample: the converted prior samples another image_emb"
    "$BIN/rec-dump" "$tmp/p1.rec" | grep -q '"prior":{"id":"prior-sample","checksum":"sha256:' ||
        fail "prior-sample: models.prior lacks the converted id and checksum"
    # the decoder and upsampler, where those tools are built
    if [ -x "$BIN/decoder-diffuse" ]; then
        cp "$tmp/decoder-sample.st" "$tmp/alone/decoder.safetensors"
        "$BIN/decoder-diffuse" -m "$tmp/alone/decoder.safetensors" -S 3 -s 1 "$tmp/p1.rec" > "$tmp/d.png" ||
            fail "decoder-diffuse: the converted decoder does not run"
        [ -s "$tmp/d.png" ] || fail "decoder-diffuse wrote nothing"
        if [ -x "$BIN/upsample" ]; then
            cp "$tmp/sr-sample.st" "$tmp/alone/sr.safetensors"
            "$BIN/upsample" -m "$tmp/alone/sr.safetensors" -s 1 "$tmp/d.png" > "$tmp/u.png" ||
                fail "upsample: the converted super-resolution model does not run"
            [ -s "$tmp/u.png" ] || fail "upsample wrote nothing"
        fi
    fi
fi

# ---- storage types: --f16 halves weights, keeps norms and embeddings F32; --f32 widens
conv --f16 --config "$tmp/decoder-forward.json" "$tmp/decoder-forward.ckpt" "$tmp/h.st"
mk dtypes "$tmp/h.st" > "$tmp/h.txt"
for want in 'model.input_blocks.1.0.in_layers.2.weight F16' 'model.input_blocks.1.0.in_layers.2.bias F16' \
    'model.input_blocks.1.0.in_layers.0.weight F32' 'model.cf_param F32' 'model.middle_block.1.qkv.weight F16' \
    'model.text_seq_proj.1.weight F32'; do
    grep -qx "$want" "$tmp/h.txt" || fail "--f16: expected '$want'"
done
# --bf16: the same tensors halved, as BF16, each weight rounded to nearest even
conv --bf16 --config "$tmp/decoder-forward.json" "$tmp/decoder-forward.ckpt" "$tmp/b.st"
mk dtypes "$tmp/b.st" > "$tmp/b.txt"
sed 's/ F16$/ BF16/' "$tmp/h.txt" | cmp -s - "$tmp/b.txt" || fail "--bf16: not --f16's tensors as BF16"
conv --f32 --config "$tmp/decoder-forward.json" "$tmp/decoder-forward.ckpt" "$tmp/f.st"
/usr/bin/python3 - "$tmp/b.st" "$tmp/f.st" <<'PY' || fail "--bf16: values not F32 rounded to nearest even"
import json, struct, sys, numpy as np, torch
def tensor(path, name, dt):
    f = open(path, "rb"); n = struct.unpack("<Q", f.read(8))[0]; e = json.loads(f.read(n))[name]
    f.seek(8 + n + e["data_offsets"][0])
    return np.frombuffer(f.read(e["data_offsets"][1] - e["data_offsets"][0]), dt)
for name in ("model.input_blocks.1.0.in_layers.2.weight", "model.middle_block.1.qkv.weight"):
    want = torch.from_numpy(tensor(sys.argv[2], name, "<f4").copy()).bfloat16().view(torch.int16).numpy()
    if not np.array_equal(tensor(sys.argv[1], name, "<u2"), want.view(np.uint16)):
        sys.exit(1)
PY
mk karlo "$G/karlo/decoder-forward-f16" "$tmp/wide" --f32
conv --f16 --config "$tmp/wide.json" "$tmp/wide.ckpt" "$tmp/h2.st"
mk compare "$tmp/h2.st" "$G/karlo/decoder-forward-f16/model.safetensors" || fail "--f16 changed values"
conv --f32 --config "$tmp/wide.json" "$G/karlo/decoder-forward-f16/model.safetensors" "$tmp/w.st"
mk dtypes "$tmp/w.st" > "$tmp/w.txt"
grep -qv ' F32$' "$tmp/w.txt" && fail "--f32 left tensors of another type"
conv --f16 --stats "$tmp/prior-forward.th" --config "$tmp/prior-forward.json" "$tmp/prior-forward.ckpt" "$tmp/hp.st"
mk dtypes "$tmp/hp.st" > "$tmp/hp.txt"
grep -qx 'clip_mean F32' "$tmp/hp.txt" || fail "--f16: clip_mean must stay F32"

# ---- refusals: exit 1, one clear line, nothing written, no code run
echo keep > "$tmp/keep.st"
mk evil "$tmp/evil"
for kind in global stack_global reduce_builtin nested; do
    case $kind in reduce_builtin) g=builtins.eval ;; nested) g=subprocess.check_call ;; *) g=os.system ;; esac
    expect 1 "refusing to load: the pickle calls $g" "$BIN/unclip-convert" "$tmp/evil-$kind.ckpt" "$tmp/evil.st"
    [ ! -e "$tmp/evil.st" ] && [ ! -e "$tmp/evil-$kind.ckpt.pwned" ] || fail "evil $kind: something was written"
    expect 1 'refusing to load' "$BIN/unclip-convert" "$tmp/evil-$kind.ckpt" "$tmp/keep.st"
done
[ "$(cat "$tmp/keep.st")" = keep ] || fail "a refused conversion touched an existing OUT"
# tensors that view more than their storage: zero or overlapping strides,
# a size or an offset past the storage, 128 M elements (512 MiB of F32) over
# a storage of one, in a checkpoint of 741 bytes; an empty tensor that
# starts past its storage
mk views "$tmp/view"
for v in 'zero:a zero stride 0 (strides \[0, 1\])' 'overlap:an overlapping stride 1 (strides \[1, 1\])' \
    'past:shape \[4, 5\] reaches element 19 of a storage of 16' 'offset:shape \[8\] reaches element 17 of a storage of 16' \
    'empty:shape \[0, 3\] starts at element 20, past the end of its storage of 16' \
    'bomb:shape \[16384, 8192\] (134217728 elements) views more than its storage holds past offset 0 (1 elements)'; do
    expect 1 "${v#*:}" "$BIN/unclip-convert" "$tmp/view-${v%%:*}.ckpt" "$tmp/view.st"
    [ ! -e "$tmp/view.st" ] || fail "view ${v%%:*}: an output was written"
done
size=$(wc -c < "$tmp/decoder-forward.ckpt")
head -c $((size / 2)) "$tmp/decoder-forward.ckpt" > "$tmp/cut.ckpt"
expect 1 'truncated' "$BIN/unclip-convert" --config "$tmp/decoder-forward.json" "$tmp/cut.ckpt" "$tmp/cut.st"
size=$(wc -c < "$tmp/decoder-sample.ckpt")
head -c $((size - 100)) "$tmp/decoder-sample.ckpt" > "$tmp/cut2.ckpt"
expect 1 'truncated' "$BIN/unclip-convert" --config "$tmp/decoder-sample.json" "$tmp/cut2.ckpt" "$tmp/cut.st"
head -c 5000 "$tmp/decoder-forward.st" > "$tmp/cut.safetensors"
expect 1 'beyond the file\|outside the data' "$BIN/unclip-convert" "$tmp/cut.safetensors" "$tmp/cut.st"
expect 1 'decoder checkpoint, not a prior' "$BIN/unclip-convert" --stage prior "$tmp/decoder-forward.ckpt" "$tmp/x.st"
expect 1 'give their config with --config' "$BIN/unclip-convert" "$tmp/decoder-forward.ckpt" "$tmp/x.st"
expect 1 "not a decoder configuration" "$BIN/unclip-convert" --config "$tmp/sr-forward.json" "$tmp/decoder-forward.ckpt" "$tmp/x.st"
expect 1 '62 missing' "$BIN/unclip-convert" --config "$tmp/decoder-forward-f16.json" "$tmp/decoder-forward.ckpt" "$tmp/x.st"
expect 2 'stats' "$BIN/unclip-convert" --config "$tmp/prior-forward.json" "$tmp/prior-forward.ckpt" "$tmp/x.st"
expect 2 'statistics file' "$BIN/unclip-convert" "$tmp/prior-forward.th" "$tmp/x.st"
expect 2 'choose a stage' "$BIN/unclip-convert" "$tmp/karlo-a" "$tmp/x.st"
expect 1 'not a prior one' "$BIN/unclip-convert" --stage prior "$tmp/karlo-a/decoder" "$tmp/x.st"
expect 2 'expected IN and OUT' "$BIN/unclip-convert" "$tmp/prior-forward.ckpt"
[ ! -e "$tmp/x.st" ] && [ ! -e "$tmp/cut.st" ] || fail "a refused conversion wrote its output"
ls -a "$tmp" | grep -q '\.part$' && fail "a temporary file was left behind"

# ---- files written by real PyTorch, where python3-torch is installed
TPY=
for p in "$PY" /usr/bin/python3 python3; do
    if "$p" -c 'import torch, numpy' 2> /dev/null; then TPY=$p && break; fi
done
if [ -n "$TPY" ]; then
    tc() { "$TPY" -W ignore tests/convert/torch_check.py "$@" > /dev/null 2>&1 || fail "torch_check $* failed"; }
    for fmt in zip legacy; do
        tc save "$G/karlo/decoder-forward" "$tmp/t-$fmt.ckpt" --$fmt
        conv --config "$tmp/decoder-forward.json" "$tmp/t-$fmt.ckpt" "$tmp/t.st"
        mk verify "$tmp/t.st" "$G/karlo/decoder-forward" --dtypes || fail "torch.save ($fmt): other tensors"
    done
    tc stats "$G/karlo/prior-forward" "$tmp/t.th"
    conv --config "$tmp/prior-forward.json" --stats "$tmp/t.th" "$tmp/prior-forward.ckpt" "$tmp/t.st"
    mk verify "$tmp/t.st" "$G/karlo/prior-forward" --dtypes || fail "torch.save'd statistics: other values"
    for how in trace script; do
        tc jit "$G/clip/image-encode" "$tmp/t-$how.pt" --$how
        conv --config "$tmp/image-encode.json" "$tmp/t-$how.pt" "$tmp/t.st"
        mk verify "$tmp/t.st" "$G/clip/image-encode" --dtypes || fail "torch.jit ($how): other tensors"
    done
    # what mkinputs.py writes is what torch reads
    tc load "$tmp/text-encode-sd.pt" "$G/clip/text-encode"
    tc load "$tmp/image-encode-sd.pt" "$G/clip/image-encode"
    tc load "$tmp/image-encode.pt" "$G/clip/image-encode"
else
    echo "convert.sh: no python3-torch: files written by real PyTorch not checked" >&2
fi
echo "convert.sh: $ncases golden cases pass with converted models"
