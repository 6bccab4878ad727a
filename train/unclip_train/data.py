"""Training data: scenes of the shapes world rendered by the project's own
renderer (tools/shapes-render, raw format), cached as numpy files in
train/data/ (git-ignored)."""
import os
import struct
import subprocess
import zlib

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # train/
ROOT = os.path.dirname(HERE)
DATA = os.path.join(HERE, "data")


def renderer():
    """Path of shapes-render: $UNCLIP_SHAPES_RENDER, build/train/bin, bin/, build/*/bin."""
    cands = [os.environ.get("UNCLIP_SHAPES_RENDER", ""),
             os.path.join(ROOT, "build", "train", "bin", "shapes-render"),
             os.path.join(ROOT, "bin", "shapes-render")]
    bdir = os.path.join(ROOT, "build")
    if os.path.isdir(bdir):
        cands += [os.path.join(bdir, d, "bin", "shapes-render") for d in sorted(os.listdir(bdir))]
    for c in cands:
        if c and os.access(c, os.X_OK):
            return c
    raise FileNotFoundError("shapes-render not found: build it with "
                            "`make BUILD=build/train BIN=build/train/bin build/train/bin/shapes-render`")


def parse_raw(blob, size):
    """shapes-render -f raw: per sample u16 LE caption length, caption, size*size*3 RGB bytes."""
    caps, imgs = [], []
    off, n = 0, size * size * 3
    while off < len(blob):
        (ln,) = struct.unpack_from("<H", blob, off)
        off += 2
        caps.append(blob[off:off + ln].decode("utf-8"))
        off += ln
        if off + n > len(blob):
            raise ValueError("truncated raw stream")
        imgs.append(np.frombuffer(blob, np.uint8, n, off).reshape(size, size, 3))
        off += n
    return caps, np.stack(imgs) if imgs else np.zeros((0, size, size, 3), np.uint8)


def render(n, seed, size, captions=None):
    """n random scenes (or one per caption) -> (captions list, uint8 [n, size, size, 3])."""
    cmd = [renderer(), "-q", "--size", str(size), "-f", "raw", "--seed", str(seed)]
    if captions is None:
        cmd += ["--random", str(n)]
        inp = None
    else:
        inp = ("\n".join(captions) + "\n").encode()
    out = subprocess.run(cmd, input=inp, stdout=subprocess.PIPE, check=True).stdout
    return parse_raw(out, size)


def dataset(name, n, seed, size):
    """Cached dataset train/data/<name>.npz: (captions, images)."""
    os.makedirs(DATA, exist_ok=True)
    path = os.path.join(DATA, f"{name}-{size}px-{n}-s{seed}.npz")
    if not os.path.exists(path):
        caps, imgs = [], []
        chunk = 20000
        for start in range(0, n, chunk):
            # chunk k uses seed*1000+k so a dataset is a pure function of (n, seed)
            c, im = render(min(chunk, n - start), seed * 1000 + start // chunk, size)
            caps += c
            imgs.append(im)
        imgs = np.concatenate(imgs)
        tmp = path + ".tmp.npz"
        np.savez(tmp, captions=np.array(caps), images=imgs)
        os.replace(tmp, path)
    z = np.load(path)
    return [str(c) for c in z["captions"]], z["images"]


def write_png(path, img):
    """uint8 [H, W, 3] -> PNG (no dependencies)."""
    h, w, _ = img.shape
    raw = b"".join(b"\x00" + img[y].tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(png)


def grid(images, cols):
    """uint8 [N, H, W, 3] -> one uint8 grid image with 2-pixel grey gutters."""
    n, h, w, _ = images.shape
    rows = (n + cols - 1) // cols
    g = np.full((rows * (h + 2) + 2, cols * (w + 2) + 2, 3), 128, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        g[2 + r * (h + 2):2 + r * (h + 2) + h, 2 + c * (w + 2):2 + c * (w + 2) + w] = images[i]
    return g
