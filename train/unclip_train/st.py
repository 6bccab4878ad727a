"""Minimal safetensors reader and writer on numpy.

Layout: u64 little-endian header length N, N bytes of JSON (name ->
{dtype, shape, data_offsets}, optional "__metadata__" of strings), then the
raw little-endian C-order tensor data."""
import json
import struct

import numpy as np

DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64,
          "I64": np.int64, "I32": np.int32, "U8": np.uint8, "I8": np.int8}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def read(path):
    """Returns (tensors: name -> numpy array in its stored dtype, metadata dict)."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8:
        raise ValueError(f"{path}: header length {n} exceeds the file")
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, info in header.items():
        if info["dtype"] == "BF16":
            b, e = info["data_offsets"]
            raw = np.frombuffer(blob[base + b:base + e], dtype=np.uint16)
            arr = (raw.astype(np.uint32) << 16).view(np.float32)
        else:
            dt = np.dtype(DTYPES[info["dtype"]]).newbyteorder("<")
            b, e = info["data_offsets"]
            arr = np.frombuffer(blob[base + b:base + e], dtype=dt)
        out[name] = arr.reshape(info["shape"]).copy()
    return out, meta


def write(path, tensors, metadata=None):
    """tensors: name -> numpy array (float32/float16/int64/uint8...); written
    in sorted name order. metadata: str -> str."""
    header = {}
    chunks = []
    off = 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        raw = a.tobytes()
        header[name] = {"dtype": NAMES[np.dtype(a.dtype.type)], "shape": list(a.shape),
                        "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    hj = json.dumps(header, separators=(",", ":")).encode()
    hj += b" " * ((8 - len(hj) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for c in chunks:
            f.write(c)
    import os
    os.replace(tmp, path)


def to_torch(tensors, dtype=None):
    """numpy dict -> torch dict; F16/BF16 widened to float32 (or dtype)."""
    import torch
    out = {}
    for k, v in tensors.items():
        t = torch.from_numpy(np.array(v))
        if t.is_floating_point():
            t = t.to(dtype or torch.float32)
        out[k] = t
    return out
