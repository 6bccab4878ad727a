#!/usr/bin/env python3
"""fuzz_unpickle - a mutational fuzzer for the converter's restricted unpickler.

The converter (scripts/unclip-convert) is Python, so libFuzzer does not
apply, and Debian 12 has no python3-atheris. This harness is a plain
mutational fuzzer, not coverage-guided: it builds small torch.save-style
checkpoints at run time (tests/convert/mkinputs.py: the zip layout and the
legacy one, tensors of several dtypes, a transposed view, nested containers,
a Lightning-style dict subclass), mutates their pickles (bit flips,
interesting bytes and integers, inserted opcodes, deleted, duplicated and
spliced ranges), and loads each with the converter's own archive readers
(ZipArchive, LegacyArchive), reading every tensor found. A mutant that gives
a new outcome (a refusal message with its numbers blanked, or the shape of
what loaded) joins the corpus, a cheap stand-in for coverage feedback.

A finding is any exception other than the converter's Refused (its clean
refusal, exit 1), including MemoryError (the process runs under a 2 GiB
address-space limit, so a small input that asks for more is caught, not
run), or a tensor read that returns more elements than its storage holds.
Each finding is written to the artifacts folder with its traceback; the
exit status is 1 when there was one.

    fuzz/fuzz_unpickle.py [--seconds N] [--seed S] [--artifacts DIR]
"""
import argparse
import importlib.machinery
import importlib.util
import io
import os
import random
import re
import resource
import sys
import tempfile
import time
import traceback
import zipfile
from collections import OrderedDict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(name, path):
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_loader(name, loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


conv = load("unclip_convert", os.path.join(ROOT, "scripts", "unclip-convert"))
mk = load("mkinputs", os.path.join(ROOT, "tests", "convert", "mkinputs.py"))
np = mk.np


def seeds(tmp):
    """(kind, pickle bytes, zip storages or None) of each seed checkpoint."""
    T = mk.Tensor
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    sd = OrderedDict([("model.w", T("0", "F32", a)), ("model.h", T("1", "F16", np.ones(4, np.float16))),
                      ("model.i", T("2", "I64", np.arange(3, dtype=np.int64))),
                      ("model.t", T("3", "F32", np.arange(12, dtype=np.float32), (1, (3, 2), (1, 3))))])
    nested = OrderedDict([("state_dict", sd), ("epoch", 3), ("lr", 1e-4), ("names", ["a", "b", (1, 2, None)]),
                          ("hyper_parameters", mk.DictOf("pytorch_lightning.utilities.parsing.AttributeDict",
                                                         OrderedDict([("k", 1), ("s", "x")]))),
                          ("blob", b"\x00\x01latin")])
    out = []
    for i, obj in enumerate((sd, nested, OrderedDict([("state_dict", OrderedDict())]))):
        path = os.path.join(tmp, "seed%d.ckpt" % i)
        mk.torch_save(obj, path)
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl")][0]
            out.append(("zip", z.read(pkl), OrderedDict((n, z.read(n)) for n in names if n != pkl)))
        lpath = os.path.join(tmp, "seed%d-legacy.ckpt" % i)
        mk.legacy_save(obj, lpath)
        with open(lpath, "rb") as f:
            out.append(("legacy", f.read(), None))
    return out


INTERESTING = [0, 1, 2, 0x7f, 0x80, 0xff, 0xfe, 0x40]
INTS = [0, 1, -1, 255, 256, 65535, 2 ** 31 - 1, -2 ** 31, 2 ** 40, 2 ** 63 - 1]
OPCODES = b"()NKMJ\x8aGX\x8c]}tleusRbQ\x81\x93\x85\x86\x87cq\x94hjp0.\x88\x89"


def mutate(rng, data, corpus):
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 2, 3, 5))):
        op = rng.randrange(8)
        n = len(b)
        if op == 0 and n:
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and n:
            b[rng.randrange(n)] = rng.choice(INTERESTING)
        elif op == 2:
            b.insert(rng.randrange(n + 1), rng.choice(OPCODES))
        elif op == 3 and n > 1:
            i = rng.randrange(n)
            del b[i:i + rng.randrange(1, 9)]
        elif op == 4 and n > 1:
            i = rng.randrange(n)
            j = min(n, i + rng.randrange(1, 33))
            k = rng.randrange(n + 1)
            b[k:k] = b[i:j]
        elif op == 5 and n:  # an integer argument: K, M, J
            idx = [m.start() for m in re.finditer(rb"[KMJ]", bytes(b))]
            if idx:
                i = rng.choice(idx)
                v = rng.choice(INTS)
                enc = {ord("K"): (1, "<B"), ord("M"): (2, "<H"), ord("J"): (4, "<i")}[b[i]]
                try:
                    b[i + 1:i + 1 + enc[0]] = mk.struct.pack(enc[1], v)
                except mk.struct.error:
                    pass
        elif op == 6 and corpus:  # splice with another input
            other = rng.choice(corpus)[1]
            if other and n:
                i, j = rng.randrange(n), rng.randrange(len(other))
                b = b[:i] + other[j:j + rng.randrange(1, 65)] + b[i:]
        elif op == 7 and n:
            i = rng.randrange(n)
            b[i:i + 1] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5)))
    return bytes(b)


def walk(obj, depth=0):
    """Every TensorRef in obj, and a rough shape of obj for the outcome."""
    found = []

    def go(o, d):
        if d > 50:
            return "deep"
        if isinstance(o, conv.TensorRef):
            found.append(o)
            return "T%d" % len(o.shape)
        if isinstance(o, dict):
            return "{" + ",".join(sorted({go(v, d + 1) for v in list(o.values())[:32]})) + "}"
        if isinstance(o, (list, tuple)):
            return "[" + ",".join(sorted({go(v, d + 1) for v in list(o)[:32]})) + "]"
        return type(o).__name__

    shape = go(obj, depth)
    return found, shape[:200]


def run_one(kind, data, extra, tmp):
    """The outcome of loading one input; raises on a finding."""
    if kind == "zip":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            prefix = next(iter(extra)).split("/")[0] + "/" if extra else "seed/"
            mk.zip_entry(z, prefix + "data.pkl", data)
            for n, d in extra.items():
                mk.zip_entry(z, n, d)
        buf.seek(0)
        return read_all(conv.ZipArchive(buf))
    path = os.path.join(tmp, "input.ckpt")
    with open(path, "wb") as f:
        f.write(data)
    a = conv.LegacyArchive(path)
    try:
        return read_all(a)
    finally:
        a.f.close()


def read_all(a):
    tensors, shape = walk(a.load())
    for t in tensors[:64]:
        v = t.read()
        if v.size != conv.numel(t.shape) or v.size > t.storage.numel - t.offset:
            raise AssertionError("tensor of shape %s read %d elements from a storage of %d (offset %d)" %
                                 (list(t.shape), v.size, t.storage.numel, t.offset))
    return "ok " + shape


def outcome(msg):
    """A refusal's kind: its first words, numbers, quoted text and names
    blanked (a mutated global name or length is not a new behaviour)."""
    msg = re.sub(r"'[^']*'|\"[^\"]*\"|\b0x[0-9a-f]+|\d+|[\w.]+\.[\w.]+", "_", msg)
    return " ".join(msg.split()[:6])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--artifacts", default=os.path.join(ROOT, "build", "artifacts"))
    args = ap.parse_args()
    limit = 2 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.setrecursionlimit(5000)
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    os.makedirs(args.artifacts, exist_ok=True)
    findings = execs = 0
    seen = set()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = seeds(tmp)
        for kind, data, extra in corpus:  # the seeds themselves must load
            out = run_one(kind, data, extra, tmp)
            seen.add((kind, out))
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            kind, data, extra = rng.choice(corpus)
            m = mutate(rng, data, corpus)
            execs += 1
            try:
                out = run_one(kind, m, extra, tmp)
            except conv.Refused as e:
                out = "refused " + outcome(str(e).replace(tmp, ""))
            except Exception:
                findings += 1
                name = os.path.join(args.artifacts, "fuzz_unpickle-%s-%d-%d" % (kind, seed, execs))
                with open(name + ".pkl", "wb") as f:
                    f.write(m)
                with open(name + ".txt", "w") as f:
                    f.write(traceback.format_exc())
                print("fuzz_unpickle: finding: %s (%s)" % (traceback.format_exc().strip().splitlines()[-1], name),
                      file=sys.stderr)
                continue
            if (kind, out) not in seen and len(corpus) < 2000:
                seen.add((kind, out))
                corpus.append((kind, m, extra))
        el = time.monotonic() - start
    print("fuzz_unpickle: %d executions in %.0f s (%.0f/s), seed %d, %d inputs in the corpus, %d outcomes, %d findings"
          % (execs, el, execs / max(el, 1e-9), seed, len(corpus), len(seen), findings))
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
