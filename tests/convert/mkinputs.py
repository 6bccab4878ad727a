"""Test inputs for unclip-convert, built from the golden cases' weights with
the standard library and numpy only (no torch), and checks of its outputs:

  karlo CASE PREFIX [--legacy] [--f32]
      PREFIX.ckpt: a Karlo Lightning checkpoint of the case's weights in
      torch.save's zip layout (or the legacy one); PREFIX.json: the case's
      config; PREFIX.th: (clip_mean, clip_std) like ViT-L-14_stats.th (priors)
  clip CASE PREFIX [--legacy]
      PREFIX.pt: OpenAI CLIP as a TorchScript archive (the traced layout of
      OpenAI's files: no head counts inside; buffers input_resolution,
      context_length, vocab_size); PREFIX-sd.pt: a pickled state dict;
      PREFIX-hf/: the transformers layout; PREFIX.json: the case's config
  diffusers PRIOR DECODER SR OUTDIR [--bin]
      the weights of three Karlo cases as a diffusers pipeline, following the
      key mapping of diffusers' scripts/convert_kakao_brain_unclip_to_diffusers.py
  evil PREFIX
      PREFIX-KIND.ckpt: checkpoints whose pickle calls code (KIND: global,
      stack_global, reduce_builtin, nested)
  verify MODEL CASE [--derive DIR] [--stage S] [--id ID] [--dtypes] [--like FILE]
      MODEL holds the case's tensors (or FILE's), the prior's statistics of
      the case, a right unclip.checksum, stage and model id; --derive writes
      a copy of the case that runs MODEL with its unclip.config
  compare A B [--dtypes] [--ignore=NAME]...
      same tensor names and values (and dtypes)
  meta FILE KEY / dtypes FILE
      print a metadata value / "name dtype" lines
  real STAGE DIR [--quick] [--seed=N]
      random weights of a released file (clip: ViT-L-14.pt; prior:
      prior-ckpt-step=01000000-of-01000000.ckpt and ViT-L-14_stats.th;
      decoder: decoder-ckpt-step=01000000-of-01000000.ckpt; sr:
      improved-sr-ckpt-step=1.2M.ckpt) at its size and in its layout,
      streamed one tensor at a time; --quick: small, with DIR/STAGE.json
  realkeys CASE...
      the key list of each stage (unclip-spec, $UNCLIP_SPEC or $BIN/unclip-spec)
      gives each case's names and shapes
  realinfo [--quick] / recshape JSONL FIELD=DTYPE:D0,D1... FIELD==TEXT...
      the output sizes for tests/realsize.sh / check rec-dump's lines
"""
import hashlib
import json
import os
import shutil
import struct
import sys
import zipfile
from collections import OrderedDict

import numpy as np

NP = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4", "U8": "u1"}
STORAGE = {"F32": "FloatStorage", "F16": "HalfStorage", "F64": "DoubleStorage", "I64": "LongStorage",
           "I32": "IntStorage", "U8": "ByteStorage", "BF16": "BFloat16Storage"}


# ---- safetensors ----

def st_read(path):
    """(OrderedDict name -> numpy array (BF16 as uint16) with .st_dtype, metadata)."""
    with open(path, "rb") as f:
        b = f.read()
    (n,) = struct.unpack("<Q", b[:8])
    h = json.loads(b[8:8 + n], object_pairs_hook=OrderedDict)
    meta = h.pop("__metadata__", {}) or {}
    out = OrderedDict()
    for k, e in h.items():
        s, t = e["data_offsets"]
        a = np.frombuffer(b[8 + n + s:8 + n + t], dtype=NP[e["dtype"]]).reshape(e["shape"])
        out[k] = (e["dtype"], a)
    return out, meta


def st_write(path, tensors, meta=None):
    """tensors: name -> (dtype, array)."""
    hdr, off, blobs = OrderedDict(), 0, []
    if meta:
        hdr["__metadata__"] = meta
    for k, (dt, a) in tensors.items():
        b = np.ascontiguousarray(a.astype(NP[dt])).tobytes()
        hdr[k] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def weights(case):
    return st_read(os.path.join(case, "model.safetensors"))[0]


def io_tensor(case, name):
    return st_read(os.path.join(case, "io.safetensors"))[0][name]


def case_json(case):
    with open(os.path.join(case, "case.json")) as f:
        return json.load(f, object_pairs_hook=OrderedDict)


# ---- pickles in torch.save's layout (protocol 2, as torch writes them) ----

class Tensor:
    def __init__(self, key, dtype, arr, view=None):
        # view: (offset, size, stride) of a tensor over the storage arr
        self.key, self.dtype, self.arr, self.view = key, dtype, arr, view


class Global:
    """GLOBAL module name, called with args (REDUCE), or just pushed (args None)."""

    def __init__(self, module, name, args=None, stack=False):
        self.module, self.name, self.args, self.stack = module, name, args, stack


class DictOf:
    """An instance of a dict subclass (Lightning's AttributeDict): GLOBAL, NEWOBJ, SETITEMS."""

    def __init__(self, qualname, items):
        self.qualname, self.items = qualname, items


class Script:
    """A TorchScript object: GLOBAL qualname, NEWOBJ, BUILD attribute dict."""

    def __init__(self, qualname, attrs):
        self.qualname, self.attrs = qualname, attrs


class Pickler:
    def __init__(self, legacy=False):
        self.out, self.legacy = bytearray(b"\x80\x02"), legacy

    def s(self, b):
        self.out += b

    def glob(self, module, name, stack=False):
        if stack:  # protocol 4 STACK_GLOBAL
            for x in (module, name):
                b = x.encode()
                self.s(b"\x8c" + bytes([len(b)]) + b)
            self.s(b"\x93")
        else:
            self.s(b"c" + module.encode() + b"\n" + name.encode() + b"\n")

    def emit(self, o):
        if o is None:
            self.s(b"N")
        elif o is True or o is False:
            self.s(b"\x88" if o else b"\x89")
        elif isinstance(o, int):
            if 0 <= o < 256:
                self.s(b"K" + bytes([o]))
            elif 0 <= o < 65536:
                self.s(b"M" + struct.pack("<H", o))
            elif -2 ** 31 <= o < 2 ** 31:
                self.s(b"J" + struct.pack("<i", o))
            else:
                b = o.to_bytes((o.bit_length() + 8) // 8, "little", signed=True)
                self.s(b"\x8a" + bytes([len(b)]) + b)
        elif isinstance(o, float):
            self.s(b"G" + struct.pack(">d", o))
        elif isinstance(o, bytes):   # protocol 2 pickles bytes as _codecs.encode(text, "latin1")
            self.emit(Global("_codecs", "encode", [o.decode("latin-1"), "latin1"]))
        elif isinstance(o, str):
            b = o.encode()
            self.s(b"X" + struct.pack("<I", len(b)) + b)
        elif isinstance(o, tuple):
            if not o:
                self.s(b")")
            elif len(o) <= 3:
                for x in o:
                    self.emit(x)
                self.s(b"\x85\x86\x87"[len(o) - 1:len(o)])
            else:
                self.s(b"(")
                for x in o:
                    self.emit(x)
                self.s(b"t")
        elif isinstance(o, list):
            self.s(b"]")
            if o:
                self.s(b"(")
                for x in o:
                    self.emit(x)
                self.s(b"e")
        elif isinstance(o, OrderedDict):
            self.glob("collections", "OrderedDict")
            self.s(b")R")
            self.items(o)
        elif isinstance(o, dict):
            self.s(b"}")
            self.items(o)
        elif isinstance(o, Tensor):
            self.tensor(o)
        elif isinstance(o, Global):
            self.glob(o.module, o.name, o.stack)
            if o.args is not None:
                self.emit(tuple(o.args))
                self.s(b"R")
        elif isinstance(o, Script):
            m, _, n = o.qualname.rpartition(".")
            self.glob(m, n)
            self.s(b")\x81")
            self.s(b"}")
            self.items(o.attrs)
            self.s(b"b")
        elif isinstance(o, DictOf):
            m, _, n = o.qualname.rpartition(".")
            self.glob(m, n)
            self.s(b")\x81")
            self.items(o.items)
        else:
            raise TypeError(type(o))

    def items(self, d):
        if d:
            self.s(b"(")
            for k, v in d.items():
                self.emit(k)
                self.emit(v)
            self.s(b"u")

    def tensor(self, t):
        a = t.arr
        self.glob("torch._utils", "_rebuild_tensor_v2")
        self.s(b"(")
        self.s(b"(")
        self.emit("storage")
        self.glob("torch", STORAGE[t.dtype])
        self.emit(t.key)
        self.emit("cpu")
        self.emit(int(a.size))
        if self.legacy:  # the legacy format's persistent ids end with view metadata
            self.emit(None)
        self.s(b"tQ")
        if t.view:
            offset, size, stride = t.view
        else:
            offset, size, stride, s = 0, tuple(int(d) for d in a.shape), [], 1
            for d in reversed(a.shape):
                stride.insert(0, s)
                s *= int(d)
        self.emit(offset)
        self.emit(tuple(size))
        self.emit(tuple(stride))
        self.emit(False)
        self.emit(OrderedDict())
        self.s(b"tR")

    def done(self):
        return bytes(self.out + b".")


def blob(arr):
    """The bytes of an array, or of a Random tensor made now (one tensor in
    memory at a time), without a copy."""
    if isinstance(arr, Random):
        arr = arr.array()
    return memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))


def tensors_of(obj, found):
    if isinstance(obj, Tensor):
        found[obj.key] = obj
    elif isinstance(obj, (list, tuple)):
        for x in obj:
            tensors_of(x, found)
    elif isinstance(obj, dict):
        for x in obj.values():
            tensors_of(x, found)
    elif isinstance(obj, Script):
        tensors_of(obj.attrs, found)
    elif isinstance(obj, Global) and obj.args:
        tensors_of(obj.args, found)
    return found


def zip_entry(zf, name, data):
    """Stored entry with its data 64-byte aligned, as torch writes them."""
    base = zf.fp.tell() + 30 + len(name)
    pad = (-(base + 4)) % 64
    zi = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    zi.compress_type = zipfile.ZIP_STORED
    zi.extra = b"FB" + struct.pack("<H", pad) + b"Z" * pad
    zf.writestr(zi, data)


def torch_save(obj, path, extra_files=None):
    """torch.save's zip layout: <name>/data.pkl, <name>/data/<key>, <name>/version."""
    p = Pickler()
    p.emit(obj)
    data = p.done()
    found = tensors_of(obj, OrderedDict())
    prefix = os.path.basename(path).split(".")[0] + "/"
    with zipfile.ZipFile(path, "w") as zf:
        zip_entry(zf, prefix + "data.pkl", data)
        for name, data in (extra_files or {}).items():
            zip_entry(zf, prefix + name, data)
        for k, t in found.items():
            zip_entry(zf, prefix + "data/" + k, blob(t.arr))
        zip_entry(zf, prefix + "version", b"3\n")


def as_tensors(ws, f32=False):
    out, i = OrderedDict(), 0
    for k, (dt, a) in ws.items():
        if f32 and dt == "F16":
            dt, a = "F32", a.astype(np.float32)
        out[k] = Tensor(str(i), dt, a)
        i += 1
    return out


# ---- commands ----

def save(obj, out, legacy):
    if legacy:
        legacy_save(obj, out)
    else:
        torch_save(obj, out)


def legacy_save(obj, path):
    """torch.save(..., _use_new_zipfile_serialization=False): magic, protocol
    and system pickles, the object, the storage keys, then each storage as
    int64 numel + bytes."""
    def small(o):
        q = Pickler()
        q.emit(o)
        return q.done()
    p = Pickler(legacy=True)
    p.emit(obj)
    found = tensors_of(obj, OrderedDict())
    with open(path, "wb") as f:
        f.write(small(0x1950a86a20f9469cfc6c) + small(1001))
        f.write(small({"protocol_version": 1001, "little_endian": True,
                       "type_sizes": {"short": 2, "int": 4, "long": 4}}))
        f.write(p.done())
        keys = sorted(found)
        f.write(small(keys))
        for k in keys:
            f.write(struct.pack("<q", found[k].arr.size))
            f.write(blob(found[k].arr))


def clip_heads(cfg, W, Wv):
    return cfg.get("transformer_heads", W // 64), cfg.get("vision_heads", max(Wv // 64, 1))


def write_jit(case, out):
    jit_archive(as_tensors(weights(case)), out)


def jit_archive(ws, out):
    """OpenAI's JIT archives keep the module tree of model.py: CLIP with
    visual (VisionTransformer), transformer, token_embedding, ln_final; blocks
    with attn (nn.MultiheadAttention), ln_1, mlp (c_fc, gelu, c_proj), ln_2.
    ws: OpenAI name -> Tensor."""
    classes = OrderedDict()   # qualname -> (parameters, buffers, [(submodule, qualname)])

    def obj(cls, params=(), buffers=(), subs=()):
        qual = cls if cls.startswith("__torch__.") else "__torch__.model." + cls
        sig = ([p for p, _ in params], [b for b, _ in buffers], [(n, v.qualname) for n, v in subs])
        if classes.get(qual, sig) != sig:  # another type of the same class: torch mangles its name
            mod, _, name = qual.rpartition(".")
            qual = "%s.___torch_mangle_%d.%s" % (mod, len(classes), name)
            for q, got in classes.items():
                if got == sig and q.endswith("." + name) and "___torch_mangle_" in q:
                    qual = q
        classes[qual] = sig
        attrs = OrderedDict([("training", False), ("_is_full_backward_hook", None)])
        for n, v in list(params) + list(buffers) + list(subs):
            attrs[n] = v
        return Script(qual, attrs)
    nn = "__torch__.torch.nn.modules."

    def linear(prefix, cls=nn + "linear.Linear"):
        return obj(cls, [("weight", ws[prefix + ".weight"]), ("bias", ws[prefix + ".bias"])])

    def ln(prefix):
        return obj("LayerNorm", [("weight", ws[prefix + ".weight"]), ("bias", ws[prefix + ".bias"])])

    def transformer(prefix):
        blocks, i = [], 0
        while prefix + "resblocks.%d.ln_1.weight" % i in ws:
            b = prefix + "resblocks.%d." % i
            attn = obj(nn + "activation.MultiheadAttention",
                       [("in_proj_weight", ws[b + "attn.in_proj_weight"]), ("in_proj_bias", ws[b + "attn.in_proj_bias"])],
                       subs=[("out_proj", linear(b + "attn.out_proj", nn + "linear.NonDynamicallyQuantizableLinear"))])
            mlp = obj(nn + "container.Sequential", subs=[("c_fc", linear(b + "mlp.c_fc")), ("gelu", obj("QuickGELU")),
                                                         ("c_proj", linear(b + "mlp.c_proj"))])
            blocks.append((str(i), obj("ResidualAttentionBlock", subs=[("attn", attn), ("ln_1", ln(b + "ln_1")),
                                                                      ("mlp", mlp), ("ln_2", ln(b + "ln_2"))])))
            i += 1
        return obj("Transformer", subs=[("resblocks", obj(nn + "container.Sequential", subs=blocks))])

    n = len(ws)
    scalar = lambda v: Tensor(str(n + v[0]), "I64", np.array(v[1], dtype=np.int64))
    G = int(round((ws["visual.positional_embedding"].arr.shape[0] - 1) ** 0.5))
    P = ws["visual.conv1.weight"].arr.shape[-1]
    visual = obj("VisionTransformer", [("class_embedding", ws["visual.class_embedding"]),
                                       ("positional_embedding", ws["visual.positional_embedding"]),
                                       ("proj", ws["visual.proj"])],
                 subs=[("conv1", obj(nn + "conv.Conv2d", [("weight", ws["visual.conv1.weight"])])),
                       ("ln_pre", ln("visual.ln_pre")), ("transformer", transformer("visual.transformer.")),
                       ("ln_post", ln("visual.ln_post"))])
    root = obj("CLIP", [("positional_embedding", ws["positional_embedding"]),
                        ("text_projection", ws["text_projection"]), ("logit_scale", ws["logit_scale"])],
               [("input_resolution", scalar((0, G * P))), ("context_length", scalar((1, ws["positional_embedding"].arr.shape[0]))),
                ("vocab_size", scalar((2, ws["token_embedding.weight"].arr.shape[0])))],
               [("visual", visual), ("transformer", transformer("transformer.")),
                ("token_embedding", obj(nn + "sparse.Embedding", [("weight", ws["token_embedding.weight"])])),
                ("ln_final", ln("ln_final"))])
    files = OrderedDict()
    for qual, (params, buffers, subs) in classes.items():
        mod, _, cls = qual.rpartition(".")
        path = "code/" + mod.replace(".", "/") + ".py"
        text = "class %s(Module):\n  __parameters__ = [%s]\n  __buffers__ = [%s]\n" % (
            cls, "".join('"%s", ' % p for p in params), "".join('"%s", ' % b for b in buffers))
        text += "".join("  %s : Tensor\n" % n for n in params + buffers)
        text += "  training : bool\n  _is_full_backward_hook : Optional[bool]\n"
        text += "".join(("  %s : %s\n" if not n.isdigit() else '  __annotations__["%s"] = %s\n') % (n, q)
                        for n, q in subs)
        if "class %s(" % cls not in files.get(path, ""):
            files[path] = files.get(path, "") + text
    q = Pickler()
    q.emit(())
    blobs = OrderedDict((k, v.encode()) for k, v in files.items())
    blobs["constants.pkl"] = q.done()
    torch_save(root, out, extra_files=blobs)


def hf_names(ws):
    """OpenAI CLIP state dict -> transformers CLIPModel state dict."""
    out = OrderedDict()
    top = {"token_embedding.weight": "text_model.embeddings.token_embedding.weight",
           "positional_embedding": "text_model.embeddings.position_embedding.weight",
           "ln_final.weight": "text_model.final_layer_norm.weight", "ln_final.bias": "text_model.final_layer_norm.bias",
           "logit_scale": "logit_scale", "visual.class_embedding": "vision_model.embeddings.class_embedding",
           "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
           "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
           "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight", "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
           "visual.ln_post.weight": "vision_model.post_layernorm.weight",
           "visual.ln_post.bias": "vision_model.post_layernorm.bias"}
    block = {"attn.out_proj": "self_attn.out_proj", "ln_1": "layer_norm1", "ln_2": "layer_norm2",
             "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2"}
    for k, (dt, a) in ws.items():
        if k in top:
            out[top[k]] = (dt, a)
        elif k in ("text_projection", "visual.proj"):
            out["text_projection.weight" if k == "text_projection" else "visual_projection.weight"] = (dt, a.T)
        else:
            for op, hp in (("visual.transformer.resblocks.", "vision_model.encoder.layers."),
                           ("transformer.resblocks.", "text_model.encoder.layers.")):
                if k.startswith(op):
                    i, rest = k[len(op):].split(".", 1)
                    if rest.startswith("attn.in_proj_"):
                        part = rest[len("attn.in_proj_"):]
                        for x, chunk in zip("qkv", np.split(a, 3)):
                            out["%s%s.self_attn.%s_proj.%s" % (hp, i, x, part)] = (dt, chunk)
                    else:
                        mod, p = rest.rsplit(".", 1)
                        out["%s%s.%s.%s" % (hp, i, block[mod], p)] = (dt, a)
                    break
            else:
                raise SystemExit("hfclip: unknown key " + k)
    out["text_model.embeddings.position_ids"] = ("I64", np.arange(ws["positional_embedding"][1].shape[0])[None])
    return out


def write_hfclip(case, outdir):
    ws = weights(case)
    cfg = case_json(case)["config"]
    W, D = ws["ln_final.weight"][1].shape[0], ws["text_projection"][1].shape[1]
    Wv, P = ws["visual.conv1.weight"][1].shape[0], ws["visual.conv1.weight"][1].shape[-1]
    G = int(round((ws["visual.positional_embedding"][1].shape[0] - 1) ** 0.5))
    th, vh = clip_heads(cfg, W, Wv)
    L = len({k.split(".")[2] for k in ws if k.startswith("transformer.resblocks.")})
    Lv = len({k.split(".")[3] for k in ws if k.startswith("visual.transformer.resblocks.")})
    os.makedirs(outdir, exist_ok=True)
    st_write(os.path.join(outdir, "model.safetensors"), hf_names(ws), {"format": "pt"})
    conf = OrderedDict([("_name_or_path", "test/hf-" + os.path.basename(case.rstrip("/"))),
                        ("architectures", ["CLIPModel"]), ("model_type", "clip"), ("projection_dim", D),
                        ("logit_scale_init_value", 2.6592),
                        ("text_config", {"model_type": "clip_text_model", "hidden_size": W, "intermediate_size": 4 * W,
                                         "num_attention_heads": th, "num_hidden_layers": L, "hidden_act": "quick_gelu",
                                         "layer_norm_eps": 1e-5, "max_position_embeddings": ws["positional_embedding"][1].shape[0],
                                         "vocab_size": ws["token_embedding.weight"][1].shape[0], "projection_dim": D}),
                        ("vision_config", {"model_type": "clip_vision_model", "hidden_size": Wv, "intermediate_size": 4 * Wv,
                                           "num_attention_heads": vh, "num_hidden_layers": Lv, "hidden_act": "quick_gelu",
                                           "layer_norm_eps": 1e-5, "image_size": G * P, "patch_size": P,
                                           "num_channels": 3, "projection_dim": D})])
    with open(os.path.join(outdir, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)


# ---- diffusers: written after the diffusers script, block by block ----

def split_attentions(weight, bias, split, chunk):
    """Rows in chunks of `chunk`, dealt to `split` outputs in turn."""
    ws, bs = [[] for _ in range(split)], [[] for _ in range(split)]
    for j, start in enumerate(range(0, weight.shape[0], chunk)):
        ws[j % split].append(weight[start:start + chunk])
        bs[j % split].append(bias[start:start + chunk])
    return [np.concatenate(w) for w in ws], [np.concatenate(b) for b in bs]


class DiffusersWriter:
    def __init__(self, ck, prefix):
        self.ck, self.prefix, self.out, self.used = ck, prefix, OrderedDict(), set()

    def get(self, k):
        k = self.prefix + "." + k
        self.used.add(k)
        return self.ck[k]

    def has(self, k):
        return self.prefix + "." + k in self.ck

    def put(self, k, v):
        assert k not in self.out, k
        self.out[k] = v

    def lin(self, d, o):
        for p in ("weight", "bias"):
            self.put("%s.%s" % (d, p), self.get("%s.%s" % (o, p)))

    def resnet(self, d, o):
        for dn, on in (("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
                       ("norm2", "out_layers.0"), ("conv2", "out_layers.3")):
            self.lin(d + "." + dn, o + "." + on)
        if self.has(o + ".skip_connection.weight"):
            self.lin(d + ".conv_shortcut", o + ".skip_connection")

    def attention(self, d, o, head_ch):
        self.lin(d + ".group_norm", o + ".norm")
        dt, w = self.get(o + ".qkv.weight")
        _, b = self.get(o + ".qkv.bias")
        (qw, kw, vw), (qb, kb, vb) = split_attentions(w[:, :, 0], b, 3, head_ch)
        for n, a, c in (("to_q", qw, qb), ("to_k", kw, kb), ("to_v", vw, vb)):
            self.put("%s.%s.weight" % (d, n), (dt, a))
            self.put("%s.%s.bias" % (d, n), (dt, c))
        if self.has(o + ".encoder_kv.weight"):
            _, w = self.get(o + ".encoder_kv.weight")
            _, b = self.get(o + ".encoder_kv.bias")
            (ew, vw2), (eb, vb2) = split_attentions(w[:, :, 0], b, 2, head_ch)
            for n, a, c in (("add_k_proj", ew, eb), ("add_v_proj", vw2, vb2)):
                self.put("%s.%s.weight" % (d, n), (dt, a))
                self.put("%s.%s.bias" % (d, n), (dt, c))
        dt, w = self.get(o + ".proj_out.weight")
        self.put(d + ".to_out.0.weight", (dt, w[:, :, 0]))
        self.put(d + ".to_out.0.bias", self.get(o + ".proj_out.bias"))

    def unet(self, down_attn, layers, head_ch, mid_attn):
        """down_attn: per diffusers down block, whether it has attentions."""
        self.lin("time_embedding.linear_1", "time_embed.0")
        self.lin("time_embedding.linear_2", "time_embed.2")
        self.lin("conv_in", "input_blocks.0.0")
        n = len(down_attn)
        orig = 1
        for i in range(n):
            num = layers + (1 if i < n - 1 else 0)
            for r in range(num):
                d = "down_blocks.%d.downsamplers.0" % i if i < n - 1 and r == num - 1 else "down_blocks.%d.resnets.%d" % (i, r)
                self.resnet(d, "input_blocks.%d.0" % (orig + r))
            if down_attn[i]:
                for a in range(layers):
                    self.attention("down_blocks.%d.attentions.%d" % (i, a), "input_blocks.%d.1" % (orig + a), head_ch)
            orig += num
        self.resnet("mid_block.resnets.0", "middle_block.0")
        if mid_attn:
            self.attention("mid_block.attentions.0", "middle_block.1", head_ch)
        self.resnet("mid_block.resnets.1", "middle_block.%d" % (2 if mid_attn else 1))
        orig = 0
        up_attn = list(reversed(down_attn))
        for i in range(n):
            upsampler = i < n - 1
            num = layers + 1 + (1 if upsampler else 0)
            for r in range(num):
                if upsampler and r == num - 1:
                    sub = 2 if up_attn[i] else 1
                    self.resnet("up_blocks.%d.upsamplers.0" % i, "output_blocks.%d.%d" % (orig + r - 1, sub))
                else:
                    self.resnet("up_blocks.%d.resnets.%d" % (i, r), "output_blocks.%d.0" % (orig + r))
            if up_attn[i]:
                for a in range(layers + 1):
                    self.attention("up_blocks.%d.attentions.%d" % (i, a), "output_blocks.%d.1" % (orig + a), head_ch)
            orig += num - 1 if upsampler else num
        self.lin("conv_norm_out", "out.0")
        self.lin("conv_out", "out.2")

    def leftover(self):
        return [k for k in self.ck if k.startswith(self.prefix + ".") and k not in self.used]


def write_component(outdir, name, config, tensors, as_bin):
    d = os.path.join(outdir, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    if as_bin:
        torch_save(as_tensors(tensors), os.path.join(d, "diffusion_pytorch_model.bin"))
    else:
        st_write(os.path.join(d, "diffusion_pytorch_model.safetensors"), tensors)


def cmd_diffusers(prior_case, decoder_case, sr_case, outdir, *flags):
    as_bin = "--bin" in flags
    os.makedirs(outdir, exist_ok=True)
    index = OrderedDict([("_class_name", "UnCLIPPipeline"), ("_diffusers_version", "0.11.0")])
    # prior
    ck, hp = weights(prior_case), case_json(prior_case)["config"]["model"]["hparams"]
    w = DiffusersWriter(ck, "model")
    W, H, L = hp["xf_width"], hp["xf_heads"], hp["xf_layers"]
    for d, o in (("time_embedding.linear_1", "time_embed.0"), ("proj_in", "clip_img_proj"),
                 ("embedding_proj", "text_emb_proj"), ("encoder_hidden_states_proj", "text_enc_proj"),
                 ("time_embedding.linear_2", "time_embed.2")):
        w.lin(d, o)
    w.put("positional_embedding", w.get("positional_embedding"))
    w.put("prd_embedding", w.get("prd_emb"))
    for i in range(L):
        d, o = "transformer_blocks.%d" % i, "transformer.resblocks.%d" % i
        dt, cw = w.get(o + ".attn.c_qkv.weight")
        _, cb = w.get(o + ".attn.c_qkv.bias")
        (qw, kw, vw), (qb, kb, vb) = split_attentions(cw, cb, 3, W // H)
        for n, a, c in (("to_q", qw, qb), ("to_k", kw, kb), ("to_v", vw, vb)):
            w.put("%s.attn1.%s.weight" % (d, n), (dt, a))
            w.put("%s.attn1.%s.bias" % (d, n), (dt, c))
        w.lin(d + ".attn1.to_out.0", o + ".attn.c_proj")
        w.lin(d + ".ff.net.0.proj", o + ".mlp.c_fc")
        w.lin(d + ".ff.net.2", o + ".mlp.c_proj")
        w.lin(d + ".norm1", o + ".ln_1")
        w.lin(d + ".norm3", o + ".ln_2")
    w.lin("norm_out", "final_ln")
    w.lin("proj_to_clip_embeddings", "out_proj")
    for n in ("clip_mean", "clip_std"):
        dt, a = io_tensor(prior_case, n)
        w.put(n, (dt, a[None, :]))
    assert not w.leftover(), w.leftover()
    write_component(outdir, "prior", OrderedDict([
        ("_class_name", "PriorTransformer"), ("_diffusers_version", "0.11.0"), ("num_attention_heads", H),
        ("attention_head_dim", W // H), ("num_layers", L), ("embedding_dim", hp["clip_dim"]),
        ("num_embeddings", hp["text_ctx"]), ("additional_embeddings", 4), ("dropout", 0.0)]), w.out, as_bin)
    index["prior"] = ["diffusers", "PriorTransformer"]
    # decoder + text_proj
    ck, hp = weights(decoder_case), case_json(decoder_case)["config"]["model"]["hparams"]
    mult = [int(x) for x in hp["channel_mult"].split(",")] if hp["channel_mult"] else [1, 2, 3, 4]
    res = [int(r) for r in hp["attention_resolutions"].split(",")]
    down_attn = [hp["image_size"] // (1 << lv) in res for lv in range(len(mult))]
    w = DiffusersWriter(ck, "model")
    w.unet(down_attn, hp["num_res_blocks"], hp["num_head_channels"], True)
    mc = hp["num_channels"]
    write_component(outdir, "decoder", OrderedDict([
        ("_class_name", "UNet2DConditionModel"), ("_diffusers_version", "0.11.0"), ("sample_size", hp["image_size"]),
        ("in_channels", 3), ("out_channels", 6 if hp["learn_sigma"] else 3), ("layers_per_block", hp["num_res_blocks"]),
        ("block_out_channels", [mc * m for m in mult]),
        ("down_block_types", ["SimpleCrossAttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in down_attn]),
        ("up_block_types", ["SimpleCrossAttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in reversed(down_attn)]),
        ("mid_block_type", "UNetMidBlock2DSimpleCrossAttn"), ("cross_attention_dim", hp["xf_width"]),
        ("class_embed_type", "identity"), ("attention_head_dim", hp["num_head_channels"]),
        ("resnet_time_scale_shift", "scale_shift")]), w.out, as_bin)
    t = DiffusersWriter(ck, "model")
    t.used = w.used
    for d, o in (("encoder_hidden_states_proj", "text_seq_proj.0"), ("text_encoder_hidden_states_norm", "text_seq_proj.1"),
                 ("clip_extra_context_tokens_proj", "clip_tok_proj"), ("embedding_proj", "text_feat_proj"),
                 ("clip_image_embeddings_project_to_time_embeddings", "clip_emb")):
        t.lin(d, o)
    t.put("learned_classifier_free_guidance_embeddings", t.get("cf_param"))
    assert not t.leftover(), t.leftover()
    write_component(outdir, "text_proj", OrderedDict([
        ("_class_name", "UnCLIPTextProjModel"), ("_diffusers_version", "0.11.0"),
        ("clip_extra_context_tokens", hp["clip_emb_mult"]), ("clip_embeddings_dim", hp["clip_dim"]),
        ("time_embed_dim", 4 * mc), ("cross_attention_dim", hp["xf_width"])]), t.out, False)
    index["decoder"] = ["diffusers", "UNet2DConditionModel"]
    index["text_proj"] = ["unclip", "UnCLIPTextProjModel"]
    # super-resolution: one UNet2DModel per Karlo model
    ck, hp = weights(sr_case), case_json(sr_case)["config"]["model"]["hparams"]
    for sub, pre in (("super_res_first", "model_first_steps"), ("super_res_last", "model_last_step")):
        w = DiffusersWriter(ck, pre)
        w.unet([False] * len(hp["channels_multiple"]), hp["depth"], None, False)
        assert not w.leftover(), w.leftover()
        write_component(outdir, sub, OrderedDict([
            ("_class_name", "UNet2DModel"), ("_diffusers_version", "0.11.0"), ("sample_size", 256),
            ("layers_per_block", hp["depth"]),
            ("down_block_types", ["ResnetDownsampleBlock2D"] * len(hp["channels_multiple"])),
            ("up_block_types", ["ResnetUpsampleBlock2D"] * len(hp["channels_multiple"])),
            ("block_out_channels", [hp["channels"] * m for m in hp["channels_multiple"]]),
            ("in_channels", 6), ("out_channels", 3), ("add_attention", False)]), w.out, False)
        index[sub] = ["diffusers", "UNet2DModel"]
    with open(os.path.join(outdir, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)


def cmd_evil(prefix):
    for kind in ("global", "stack_global", "reduce_builtin", "nested"):
        out = "%s-%s.ckpt" % (prefix, kind)
        cmd = "echo pwned > %s.pwned" % out
        call = {"global": Global("os", "system", [cmd]), "stack_global": Global("os", "system", [cmd], stack=True),
                "reduce_builtin": Global("builtins", "eval", ["__import__('os').system(%r)" % cmd]),
                "nested": OrderedDict([("a", [Global("subprocess", "check_call", [["sh", "-c", cmd]])])])}[kind]
        ck = OrderedDict([("state_dict", OrderedDict([("model.prd_emb", Tensor("0", "F32", np.zeros((1, 1, 4), np.float32)))])),
                          ("hyper_parameters", call)])
        torch_save(ck, out)


def cmd_views(prefix):
    """Checkpoints whose one tensor views more than its storage: a zero
    stride, overlapping strides, a size or an offset past the storage, an
    empty tensor that starts past it, and a view of 128 M elements over a storage of one."""
    views = {"zero": (0, (2, 8), (0, 1)), "overlap": (0, (4, 4), (1, 1)), "past": (0, (4, 5), (5, 1)),
             "offset": (10, (8,), (1,)), "empty": (20, (0, 3), (3, 1)), "bomb": (0, (16384, 8192), (0, 0))}
    for kind, view in views.items():
        t = Tensor("0", "F32", np.arange(1 if kind == "bomb" else 16, dtype=np.float32), view)
        torch_save(OrderedDict([("state_dict", OrderedDict([("model.prd_emb", t)]))]), "%s-%s.ckpt" % (prefix, kind))


def derive(case, model, outdir):
    os.makedirs(outdir, exist_ok=True)
    cj = case_json(case)
    _, meta = st_read(model)
    cfg = json.loads(meta["unclip.config"], object_pairs_hook=OrderedDict)
    if meta["unclip.stage"] == "clip":   # the case's CLIP arguments replaced by the file's
        keep = OrderedDict((k, v) for k, v in cj["config"].items() if k not in CLIP_ARGS and "heads" not in k)
        keep.update(cfg)
        cj["config"] = keep
    else:
        for k in ("model", "diffusion"):
            cj["config"][k] = cfg[k]
    io_path = os.path.join(case, "io.safetensors")
    if cj["family"] == "layouts":
        # the transformers case, run as an OpenAI-layout logits case
        cj["family"], cj["case"] = "clip", "logits"
        io, _ = st_read(io_path)
        ren = {"input_ids": "tokens", "pixel_values": "image"}
        st_write(os.path.join(outdir, "io.safetensors"), OrderedDict((ren.get(k, k), v) for k, v in io.items()))
    else:
        shutil.copy(io_path, os.path.join(outdir, "io.safetensors"))
    for f in os.listdir(case):
        if f.endswith(".png"):
            shutil.copy(os.path.join(case, f), outdir)
    shutil.copy(model, os.path.join(outdir, "model.safetensors"))
    with open(os.path.join(outdir, "case.json"), "w") as f:
        json.dump(cj, f, indent=1)


CLIP_ARGS = ("embed_dim", "image_resolution", "vision_layers", "vision_width", "vision_patch_size", "context_length",
             "vocab_size", "transformer_width", "transformer_heads", "transformer_layers", "vision_heads",
             "text_config", "vision_config")


def widen(dt, a):
    if dt == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    return a.astype(np.float64)


def cmd_compare(a, b, *flags):
    ta, tb = st_read(a)[0], st_read(b)[0]
    ignore = [f[len("--ignore="):] for f in flags if f.startswith("--ignore=")]
    ta = OrderedDict((k, v) for k, v in ta.items() if k not in ignore)
    tb = OrderedDict((k, v) for k, v in tb.items() if k not in ignore)
    if set(ta) != set(tb):
        raise SystemExit("compare: names differ: only in %s: %s; only in %s: %s" %
                         (a, sorted(set(ta) - set(tb))[:5], b, sorted(set(tb) - set(ta))[:5]))
    for k in ta:
        (da, xa), (db, xb) = ta[k], tb[k]
        if "--dtypes" in flags and da != db:
            raise SystemExit("compare: %s is %s in %s, %s in %s" % (k, da, a, db, b))
        if xa.shape != xb.shape or not np.array_equal(widen(da, xa), widen(db, xb)):
            raise SystemExit("compare: tensor %s differs" % k)


def cmd_meta(path, key):
    """(reads the header only: fine for files of gigabytes)"""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        meta = json.loads(f.read(n)).get("__metadata__", {}) or {}
    print(meta.get(key, ""))


def cmd_dtypes(path):
    for k, (dt, a) in st_read(path)[0].items():
        print(k, dt)


def cmd_karlo(case, prefix, *flags):
    sd = as_tensors(weights(case), "--f32" in flags)
    hp = DictOf("pytorch_lightning.utilities.parsing.AttributeDict", OrderedDict([("lr", 1e-4), ("ema", True)]))
    ck = OrderedDict([("epoch", 41), ("global_step", 1000000), ("pytorch-lightning_version", "1.6.5"),
                      ("state_dict", sd), ("loops", {"fit_loop": {"state_dict": {}}}),
                      ("callbacks", {"ModelCheckpoint": {"best_model_score": None, "dirpath": b"ckpt"}}),
                      ("optimizer_states", []), ("lr_schedulers", []), ("hparams_name", "kwargs"),
                      ("hyper_parameters", hp)])
    save(ck, prefix + ".ckpt", "--legacy" in flags)
    write_config(case, prefix + ".json")
    if "prior" in case_json(case)["config"]["model"]["type"]:
        mean, std = io_tensor(case, "clip_mean"), io_tensor(case, "clip_std")
        torch_save((Tensor("0", mean[0], mean[1]), Tensor("1", std[0], std[1])), prefix + ".th")


def write_config(case, path):
    with open(path, "w") as f:
        json.dump(case_json(case)["config"], f, indent=1)


def cmd_clip(case, prefix, *flags):
    write_config(case, prefix + ".json")
    write_jit(case, prefix + ".pt")
    save(as_tensors(weights(case)), prefix + "-sd.pt", "--legacy" in flags)
    write_hfclip(case, prefix + "-hf")


def cmd_verify(model, case, *flags):
    opts = dict(f.split("=", 1) for f in flags if "=" in f)
    t, meta = st_read(model)
    like = opts.get("--like", os.path.join(case, "model.safetensors"))
    if meta.get("unclip.stage") == "prior":
        for n in ("clip_mean", "clip_std"):
            want = io_tensor(case, n)
            if n not in t or t[n][0] != "F32" or not np.array_equal(t[n][1], want[1].astype(np.float32)):
                raise SystemExit("verify: %s: %s is not the case's (F32)" % (model, n))
    cmd_compare(model, like, "--ignore=clip_mean", "--ignore=clip_std", *[f for f in flags if f == "--dtypes"])
    with open(model, "rb") as f:
        b = f.read()
    (n,) = struct.unpack("<Q", b[:8])
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__")
    if sorted(h, key=lambda k: h[k]["data_offsets"][0]) != sorted(h):
        raise SystemExit("verify: %s: tensors are not stored in name order" % model)
    digest = "sha256:" + hashlib.sha256(b[8 + n:]).hexdigest()
    if meta.get("unclip.checksum") != digest:
        raise SystemExit("verify: %s: unclip.checksum %s, the data gives %s" % (model, meta.get("unclip.checksum"), digest))
    for key, opt in (("unclip.stage", "--stage"), ("unclip.model_id", "--id")):
        if opt in opts and meta.get(key) != opts[opt]:
            raise SystemExit("verify: %s: %s is %r, expected %r" % (model, key, meta.get(key), opts[opt]))
    if "--derive" in opts:
        derive(case, model, opts["--derive"])


# ---- released sizes: random weights in the original layouts ----
#
# The key names and shapes of each file are the stage's one description, as
# unclip-spec prints it (the released sizes without a config); `realkeys`
# checks that it gives every golden case, which the upstream code itself
# wrote. Only the storage types of OpenAI's file are told here.

RELEASED_FILES = {"clip": ["ViT-L-14.pt"],
                  "prior": ["prior-ckpt-step=01000000-of-01000000.ckpt", "ViT-L-14_stats.th"],
                  "decoder": ["decoder-ckpt-step=01000000-of-01000000.ckpt"],
                  "sr": ["improved-sr-ckpt-step=1.2M.ckpt"]}
SPEC = {}


def unclip_spec(stage, cfg=None):
    """unclip-spec's output for stage (cfg None: the released sizes): its
    $UNCLIP_SPEC, else $BIN/unclip-spec, else bin/ of this tree."""
    import subprocess
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    prog = os.environ.get("UNCLIP_SPEC") or os.path.join(os.environ.get("BIN") or os.path.join(root, "bin"),
                                                         "unclip-spec")
    key = (stage, json.dumps(cfg))
    if key not in SPEC:
        r = subprocess.run([prog, "-q", stage] + (["-"] if cfg is not None else []), stdout=subprocess.PIPE,
                           input=None if cfg is None else json.dumps(cfg).encode())
        if r.returncode:
            raise SystemExit("%s %s failed" % (prog, stage))
        SPEC[key] = json.loads(r.stdout, object_pairs_hook=OrderedDict)
    return SPEC[key]


def released(stage):
    return unclip_spec(stage)["config"]


def clip_dtype(name):
    """Storage type in OpenAI's files: convert_weights (model.py) halves
    convolutions, linear layers, in_proj and the two projections."""
    half = (".attn.in_proj_", ".attn.out_proj.", ".mlp.c_fc.", ".mlp.c_proj.")
    if any(h in name for h in half) or name in ("text_projection", "visual.proj", "visual.conv1.weight"):
        return "F16"
    return "F32"


def stage_shapes(stage, cfg):
    """name -> shape of the upstream state dict (the prior's statistics are
    a file of their own)."""
    return OrderedDict((t["name"], tuple(t["shape"])) for t in unclip_spec(stage, cfg)["tensors"]
                       if stage != "prior" or t["name"] not in ("clip_mean", "clip_std"))


class Random:
    """A tensor of random values, made only when written (blob): norm gains
    near 1, biases and learned vectors small, matrices and convolutions with
    the variance of N(0, 1/fan_in), so activations stay finite at any depth."""

    def __init__(self, name, dtype, shape, seed):
        self.name, self.dtype, self.shape, self.seed = name, dtype, tuple(shape), seed
        self.size = int(np.prod(self.shape, dtype=np.int64))

    def array(self):
        rng = np.random.default_rng(self.seed)
        n, shape = self.name, self.shape
        x = rng.standard_normal(self.size, dtype=np.float32).reshape(shape)
        if not shape:                                     # logit_scale
            x = np.full((), np.log(100.0), np.float32)
        elif len(shape) == 1 and n.endswith(".weight"):   # LayerNorm / GroupNorm gains
            x = 1 + 0.02 * x
        elif len(shape) == 1 or "embedding" in n or n.endswith("prd_emb"):
            x *= 0.02
        else:
            fan = shape[0] if n in ("text_projection", "visual.proj") else int(np.prod(shape[1:]))
            x *= np.float32(1 / np.sqrt(fan))
        return x.astype(NP[self.dtype])


def lightning(state_dict):
    """A Karlo checkpoint: Lightning's dict, the weights under state_dict."""
    hp = DictOf("pytorch_lightning.utilities.parsing.AttributeDict", OrderedDict([("lr", 1e-4), ("ema", True)]))
    return OrderedDict([("epoch", 41), ("global_step", 1000000), ("pytorch-lightning_version", "1.6.5"),
                        ("state_dict", state_dict), ("callbacks", {}), ("optimizer_states", []),
                        ("lr_schedulers", []), ("hparams_name", "kwargs"), ("hyper_parameters", hp)])


# --quick: the same files, small: the golden sampling cases' configurations
# and a CLIP of their width (the converter then needs --config STAGE.json)
GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "golden")
QUICK_CASES = {"prior": "karlo/prior-sample", "decoder": "karlo/decoder-sample", "sr": "karlo/sr-sample"}
QUICK_CLIP = OrderedDict([("embed_dim", 32), ("image_resolution", 16), ("vision_layers", 1), ("vision_width", 64),
                          ("vision_patch_size", 8), ("context_length", 77), ("vocab_size", 49408),
                          ("transformer_width", 32), ("transformer_heads", 1), ("transformer_layers", 1),
                          ("vision_heads", 1)])


def real_config(stage, quick):
    if not quick:
        return released(stage)
    if stage == "clip":
        return QUICK_CLIP
    cfg = case_json(os.path.join(GOLDEN, QUICK_CASES[stage]))["config"]
    return OrderedDict((k, cfg[k]) for k in ("model", "diffusion", "sampling") if k in cfg)


def cmd_realinfo(*flags):
    """Shell assignments of the sizes the tools' outputs must have."""
    q = "--quick" in flags
    clip, prior = real_config("clip", q), real_config("prior", q)
    dec = real_config("decoder", q)
    dec = dec.get("model", {}).get("hparams", dec)
    print("clip_dim=%d text_width=%d ctx=%d prior_dim=%d image=%d sr_image=%d" % (
        clip["embed_dim"], clip["transformer_width"], clip["context_length"],
        prior.get("model", {}).get("hparams", prior)["clip_dim"], dec["image_size"], 4 * dec["image_size"]))


def cmd_recshape(path, *want):
    """Each record of the JSON lines of rec-dump in path has the tensors
    FIELD=DTYPE:D0,D1,... with finite values, and the strings FIELD==TEXT
    (FIELD dotted into maps)."""
    with open(path) as f:
        recs = [json.loads(line) for line in f if line.strip()]
    if not recs:
        raise SystemExit("recshape: %s: no record" % path)
    for i, r in enumerate(recs):
        for w in want:
            field, spec = w.split("=", 1)
            v = r
            for part in field.split("."):
                v = v.get(part) if isinstance(v, dict) else None
            if spec.startswith("="):   # FIELD==TEXT: a string field
                if v != spec[1:]:
                    raise SystemExit("recshape: %s: record %d: %s is %r, expected %r" % (path, i + 1, field, v, spec[1:]))
                continue
            if not isinstance(v, dict) or "shape" not in v:
                raise SystemExit("recshape: %s: record %d has no tensor %s" % (path, i + 1, field))
            got = "%s:%s" % (v["dtype"], ",".join(str(d) for d in v["shape"]))
            if got != spec:
                raise SystemExit("recshape: %s: record %d: %s is %s, expected %s" % (path, i + 1, field, got, spec))
            if not all(isinstance(v.get(m), (int, float)) and abs(v[m]) < 1e30 for m in ("min", "max", "mean")):
                raise SystemExit("recshape: %s: record %d: %s is not finite (min %r, max %r)" %
                                 (path, i + 1, field, v.get("min"), v.get("max")))
    print("%s: %d record(s): %s" % (path, len(recs), " ".join(want)))


def cmd_real(stage, outdir, *flags):
    """Random weights of a released file, at its size (--quick: small), in
    its layout; --quick also writes STAGE.json for --config."""
    seed = int(dict(f.split("=", 1) for f in flags if "=" in f).get("--seed", "1"))
    if stage not in RELEASED_FILES:
        raise SystemExit("real: stage is one of %s" % ", ".join(RELEASED_FILES))
    os.makedirs(outdir, exist_ok=True)
    cfg = real_config(stage, "--quick" in flags)
    if "--quick" in flags:
        with open(os.path.join(outdir, stage + ".json"), "w") as f:
            json.dump(cfg, f, indent=1)
    shapes = stage_shapes(stage, cfg)
    sd, total = OrderedDict(), 0
    for i, (k, shape) in enumerate(shapes.items()):
        dt = clip_dtype(k) if stage == "clip" else "F32"
        sd[k] = Tensor(str(i), dt, Random(k, dt, shape, [seed, i]))
        total += sd[k].arr.size
    path = os.path.join(outdir, RELEASED_FILES[stage][0])
    if stage == "clip":
        jit_archive(sd, path)
    else:
        torch_save(lightning(sd), path)
    if stage == "prior":   # ViT-L-14_stats.th: (mean, std) of CLIP image embeddings, F32 [clip_dim]
        D = shapes["model.out_proj.bias"][0]
        rng = np.random.default_rng([seed, len(sd)])
        mean = (0.05 * rng.standard_normal(D)).astype(np.float32)
        std = (0.02 + 0.05 * np.abs(rng.standard_normal(D))).astype(np.float32)
        torch_save((Tensor("0", "F32", mean), Tensor("1", "F32", std)), os.path.join(outdir, RELEASED_FILES[stage][1]))
    print("%s %d tensors %d parameters" % (path, len(sd), total))


def cmd_realkeys(*cases):
    """The enumeration gives each golden case's names and shapes exactly;
    then print the released sizes' tensor and parameter counts."""
    n = 0
    for case in cases:
        if not os.path.exists(os.path.join(case, "case.json")):
            continue
        cfg = case_json(case)["config"]
        t = cfg.get("model", {}).get("type") if isinstance(cfg.get("model"), dict) else None
        stage = {"prior": "prior", "t2i-decoder": "decoder", "improved_sr_64_256": "sr"}.get(t)
        if stage is None and "vision_width" in cfg:
            stage = "clip"
            cfg = OrderedDict((k, v) for k, v in cfg.items() if k in QUICK_CLIP)
        elif stage:
            cfg = OrderedDict((k, cfg[k]) for k in ("model", "diffusion", "sampling") if k in cfg)
        if stage is None or not os.path.exists(os.path.join(case, "model.safetensors")):
            continue
        want = OrderedDict((k, tuple(a.shape)) for k, (dt, a) in weights(case).items())
        got = stage_shapes(stage, cfg)
        if dict(got) != dict(want):
            diff = sorted(set(got.items()) ^ set(want.items()))[:4]
            raise SystemExit("realkeys: %s: the enumeration differs from the case: %s" % (case, diff))
        n += 1
    if not n:
        raise SystemExit("realkeys: no case checked")
    print("realkeys: %d golden cases: names and shapes as enumerated" % n)
    for stage in RELEASED_FILES:
        s = stage_shapes(stage, None)
        print("released %s: %d tensors, %d parameters" % (stage, len(s),
                                                         sum(int(np.prod(v, dtype=np.int64)) for v in s.values())))


def main(argv):
    cmds = {"karlo": cmd_karlo, "clip": cmd_clip, "diffusers": cmd_diffusers, "evil": cmd_evil, "views": cmd_views,
            "verify": cmd_verify, "compare": cmd_compare, "meta": cmd_meta, "dtypes": cmd_dtypes,
            "real": cmd_real, "realkeys": cmd_realkeys, "realinfo": cmd_realinfo, "recshape": cmd_recshape}
    if not argv or argv[0] not in cmds:
        raise SystemExit(__doc__)
    cmds[argv[0]](*argv[1:])


if __name__ == "__main__":
    main(sys.argv[1:])
