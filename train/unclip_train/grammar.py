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
