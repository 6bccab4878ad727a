"""The shapes-world caption grammar (SHAPES.md in the shared folder beside the repository).

single    := article " " [size " "] colour " " shape
relation  := article " " colour " " shape " " rel " " article " " colour " " shape
count     := number " " colour " " shape "s"
"""
import random

SIZES = ["small", "big"]
COLOURS = ["red", "green", "blue", "yellow", "purple", "orange"]
SHAPES = ["circle", "square", "triangle"]
RELATIONS = ["above", "below", "to the left of", "to the right of", "on top of"]
NUMBERS = ["two", "three", "four"]


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def np_phrase(colour, shape, size=None):
    words = ([size] if size else []) + [colour, shape]
    return f"{article(words[0])} {' '.join(words)}"


def singles():
    out = []
    for size in [None] + SIZES:
        for c in COLOURS:
            for s in SHAPES:
                out.append(np_phrase(c, s, size))
    return out


def relations():
    out = []
    for c1 in COLOURS:
        for s1 in SHAPES:
            for rel in RELATIONS:
                for c2 in COLOURS:
                    for s2 in SHAPES:
                        if c1 == c2 and s1 == s2:
                            continue
                        out.append(f"{np_phrase(c1, s1)} {rel} {np_phrase(c2, s2)}")
    return out


def counts():
    return [f"{n} {c} {s}s" for n in NUMBERS for c in COLOURS for s in SHAPES]


def all_captions():
    """Every caption the grammar can produce (single, relation, count)."""
    return singles() + relations() + counts()


def kind(caption):
    words = caption.split()
    if words[0] in NUMBERS:
        return "count"
    if len(words) > 4:
        return "relation"
    return "single"


def words():
    """Every word of the grammar with a frequency weight (its count over
    all captions), the corpus the BPE merges are learned from."""
    freq = {}
    for cap in all_captions():
        for w in cap.split():
            freq[w] = freq.get(w, 0) + 1
    return freq


def random_captions(n, seed, mix=(0.3, 0.45, 0.25)):
    """n captions drawn by kind with probabilities mix (single, relation,
    count), uniformly within a kind."""
    rng = random.Random(seed)
    pools = [singles(), relations(), counts()]
    return [rng.choice(pools[rng.choices(range(3), weights=mix)[0]]) for _ in range(n)]


# --------------------------------------------------------------------------
# Meanings: captions that describe the same scenes share one ("a red circle
# above a blue square", "a red circle on top of a blue square" and "a blue
# square below a red circle"), and the contrastive loss counts them all as
# positives of each other.

AXES = {"above": ("v", False), "on top of": ("v", False), "below": ("v", True),
        "to the left of": ("h", False), "to the right of": ("h", True)}


def meaning(caption):
    """A hashable meaning: ("single", size or "", colour, shape), ("count", number,
    colour, shape) or ("relation", axis, (colour, shape) of the object above
    or on the left, (colour, shape) of the other)."""
    w = caption.split()
    k = kind(caption)
    if k == "count":
        return ("count", w[0], w[1], w[2][:-1])
    if k == "single":
        return ("single", w[1] if len(w) == 4 else "", w[-2], w[-1])
    for rel, (axis, flip) in AXES.items():
        head, sep, tail = caption.partition(f" {rel} ")
        if sep:
            a, b = tuple(head.split()[1:]), tuple(tail.split()[1:])
            return ("relation", axis, b, a) if flip else ("relation", axis, a, b)
    raise ValueError(f"not a grammar caption: {caption!r}")


def neighbours(m):
    """Hard negatives of meaning m, as [(meaning, weight)]: the scenes that a
    model reading the caption as a bag of words would confuse with it. For a
    relation: the two objects swapped (0.4), their colours swapped (0.2), the
    other axis (0.2) and one attribute of one object changed (0.2), the
    weights of the kinds left out (the colour swap of two objects that share
    a colour or a shape is the meaning itself) shared by the others; for a
    count: another number (0.6), colour (0.2) or shape (0.2); for a single
    object: another colour (0.5) or shape (0.5)."""
    def spread(ms, w):
        ms = [x for x in ms if x != m]
        return [(x, w / len(ms)) for x in ms] if ms else []

    if m[0] == "relation":
        _, axis, a, b = m
        other = "h" if axis == "v" else "v"
        bind = ("relation", axis, (b[0], a[1]), (a[0], b[1]))  # m itself when a colour or shape is shared
        attr = [("relation", axis, x, b) for x in _objects_near(a) if x != b] + \
               [("relation", axis, a, x) for x in _objects_near(b) if x != a]
        return (spread([("relation", axis, b, a)], 0.4) + spread([bind], 0.2)
                + spread([("relation", other, a, b), ("relation", other, b, a)], 0.2) + spread(attr, 0.2))
    kind_, x, c, s = m
    if kind_ == "count":
        return (spread([(kind_, n, c, s) for n in NUMBERS], 0.6)
                + spread([(kind_, x, c2, s) for c2 in COLOURS], 0.2)
                + spread([(kind_, x, c, s2) for s2 in SHAPES], 0.2))
    return spread([(kind_, x, c2, s) for c2 in COLOURS], 0.5) + spread([(kind_, x, c, s2) for s2 in SHAPES], 0.5)


OPPOSITE = {"above": "below", "on top of": "below", "below": "above",
            "to the left of": "to the right of", "to the right of": "to the left of"}


def opposite(caption):
    """A relation caption with the opposite relation ("A below B" for "A
    above B"), or None for the other kinds."""
    for rel, opp in OPPOSITE.items():
        head, sep, tail = caption.partition(f" {rel} ")
        if sep:
            return f"{head} {opp} {tail}"
    return None


def _objects_near(o):
    """Objects that differ from o = (colour, shape) in exactly one attribute."""
    return [(c, o[1]) for c in COLOURS if c != o[0]] + [(o[0], s) for s in SHAPES if s != o[1]]
