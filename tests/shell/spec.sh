#!/bin/sh
# unclip-spec: each stage's weight tree as JSON. The released sizes parse
# for every stage; for the config of every golden case the list is exactly
# the tensors of the case's model file (names and shapes, the prior's
# statistics from its inputs); a bad config exits 1 naming the field, an
# unknown stage exits 2.
. tests/shell/lib.sh
PY=
for p in ${PYTHON:-} /usr/bin/python3 python3; do
    if "$p" -c 'import json' 2> /dev/null; then PY=$p && break; fi
done
[ -n "$PY" ] || fail "needs Python 3"
S="$BIN/unclip-spec"

# the released sizes: one object per stage, every tensor with a name, a shape and F16 or F32
for stage in clip prior decoder sr; do
    "$S" $stage > "$tmp/$stage.json" || fail "unclip-spec $stage failed"
    "$PY" - "$tmp/$stage.json" $stage << 'PYEOF' || fail "unclip-spec $stage: bad output"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["stage"] == sys.argv[2] and isinstance(d["config"], dict), "stage or config"
names = [t["name"] for t in d["tensors"]]
assert names and len(set(names)) == len(names), "names missing or repeated"
for t in d["tensors"]:
    assert all(isinstance(x, int) and x > 0 for x in t["shape"]) and t["dtype"] in ("F16", "F32"), t
PYEOF
done
grep -q '"name":"visual.conv1.weight","shape":\[1024,3,14,14\],"dtype":"F16"' "$tmp/clip.json" ||
    fail "clip: not ViT-L/14's patch embedding"
grep -q '"name":"model.positional_embedding","shape":\[1,81,2048\],"dtype":"F32"' "$tmp/prior.json" ||
    fail "prior: not Karlo's positional embedding"
# the storage types of a half-precision file: convolutions and linear layers
# F16, norms, learned tokens and the statistics F32
for want in 'decoder "model.input_blocks.1.0.in_layers.2.weight","shape":\[320,320,3,3\],"dtype":"F16"' \
    'decoder "model.input_blocks.1.0.in_layers.0.weight","shape":\[320\],"dtype":"F32"' \
    'decoder "model.cf_param","shape":\[768\],"dtype":"F32"' 'decoder "model.middle_block.1.qkv.weight","shape":\[3840,1280,1\],"dtype":"F16"' \
    'prior "clip_mean","shape":\[768\],"dtype":"F32"' 'clip "logit_scale","shape":\[\],"dtype":"F32"' \
    'clip "token_embedding.weight","shape":\[49408,768\],"dtype":"F16"' 'sr "model_last_step.out.2.bias","shape":\[3\],"dtype":"F16"'; do
    grep -q "\"name\":${want#* }" "$tmp/${want%% *}.json" || fail "${want%% *}: no tensor ${want#* }"
done
# a config from stdin, and the printed config given back, give the same list
"$PY" -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["config"]))' "$tmp/sr.json" > "$tmp/sr-cfg.json"
"$S" sr - < "$tmp/sr-cfg.json" | cmp -s - "$tmp/sr.json" || fail "sr: the printed config gives another list"

# every golden case's model file holds exactly the listed tensors
n=0
for c in $G/karlo/prior-* $G/karlo/decoder-* $G/karlo/sr-forward* $G/karlo/sr-sample $G/clip/text-encode \
    $G/clip/image-encode* $G/clip/logits $G/karlo/clip-encode-text-karlo; do
    case ${c##*/} in prior*) stage=prior ;; decoder*) stage=decoder ;; sr*) stage=sr ;; *) stage=clip ;; esac
    "$PY" - "$c" "$tmp/cfg.json" << 'PYEOF' || fail "${c##*/}: cannot read the case's config"
import json, sys
cfg = json.load(open(sys.argv[1] + "/case.json"))["config"]
keys = ("embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size", "context_length",
        "vocab_size", "transformer_width", "transformer_heads", "transformer_layers")
cfg = {k: cfg[k] for k in keys} if "embed_dim" in cfg else {k: cfg[k] for k in ("model", "diffusion")}
json.dump(cfg, open(sys.argv[2], "w"))
PYEOF
    "$S" $stage "$tmp/cfg.json" > "$tmp/spec.json" || fail "${c##*/}: unclip-spec $stage failed"
    "$PY" - "$c" "$tmp/spec.json" << 'PYEOF' || fail "${c##*/}: unclip-spec lists other tensors than the model file"
import json, struct, sys

def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h

case, spec = sys.argv[1], json.load(open(sys.argv[2]))
want = {t["name"]: t["shape"] for t in spec["tensors"]}
have = {n: e["shape"] for n, e in header(case + "/model.safetensors").items()}
if spec["stage"] == "prior":  # the statistics travel in the case's inputs
    io = header(case + "/io.safetensors")
    for n in ("clip_mean", "clip_std"):
        have[n] = [d for d in io[n]["shape"] if d != 1]
bad = sorted(set(want) ^ set(have)) + sorted(n for n in want if n in have and want[n] != have[n])
if bad:
    sys.exit("%d differences: %s" % (len(bad), ", ".join(bad[:5])))
PYEOF
    n=$((n + 1))
done

# the shipped default model holds exactly its config's list, storage types
# included (logit_scale may be one value rather than a scalar, as the loader takes it)
for f in models/*.safetensors; do
    [ -e "$f" ] || continue
    "$PY" - "$f" "$S" << 'PYEOF' || fail "$f: not the tensors unclip-spec lists for its config"
import json, struct, subprocess, sys
with open(sys.argv[1], "rb") as f:
    h = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
meta = h.pop("__metadata__")
r = subprocess.run([sys.argv[2], meta["unclip.stage"], "-"], input=meta["unclip.config"].encode(), stdout=subprocess.PIPE)
want = {t["name"]: (t["shape"], t["dtype"]) for t in json.loads(r.stdout)["tensors"]}
have = {n: (e["shape"], e["dtype"]) for n, e in h.items()}
if have.get("logit_scale", (None,))[0] == [1]:
    have["logit_scale"] = ([], have["logit_scale"][1])
bad = sorted(set(want) ^ set(have)) + sorted(n for n in want if n in have and want[n] != have[n])
if r.returncode or bad:
    sys.exit("%d differences: %s" % (len(bad), ", ".join(bad[:5])))
PYEOF
    n=$((n + 1))
done

# bad input: the field named, exit 1; an unknown stage or no stage, exit 2
printf '{"model": {"type": "prior", "hparams": {"text_ctx": 77, "xf_width": "wide", "xf_layers": 1, "xf_heads": 1, "clip_dim": 8}}, "diffusion": {}}' > "$tmp/bad.json"
expect 1 'xf_width' "$S" prior "$tmp/bad.json"
printf '{"model": {"type": "t2i-decoder", "hparams": {"image_size": 64, "num_channels": "x"}}, "diffusion": {}}' > "$tmp/bad.json"
expect 1 'num_channels' "$S" decoder "$tmp/bad.json"
printf '{"model": {"hparams": {"channels": 32, "depth": 1}}, "diffusion": {}}' > "$tmp/bad.json"
expect 1 'channels_multiple' "$S" sr "$tmp/bad.json"
printf '{"embed_dim": 32, "transformer_width": -4, "context_length": 77, "vocab_size": 100, "transformer_layers": 1}' > "$tmp/bad.json"
expect 1 'transformer_width' "$S" clip "$tmp/bad.json"
printf 'model:\n  type: prior\n' > "$tmp/bad.yaml"
expect 1 'JSON' "$S" prior "$tmp/bad.yaml"
expect 1 'no-such.json' "$S" prior "$tmp/no-such.json"
expect 2 'unknown stage "vae"' "$S" vae
expect 2 'STAGE' "$S"
"$S" --help | grep -q '^Usage: unclip-spec' || fail "--help"
"$S" --version | grep -q 'unclip-spec' || fail "--version"
echo "spec.sh: 4 stages, $n golden and shipped model files listed exactly"
