"""CLIP's byte-level BPE tokenizer (the algorithm of OpenAI's
simple_tokenizer) with the project's own merges, learned from the words of
the caption grammar so that every grammar word is one token.

Vocabulary ids: the 256 byte symbols (bytes_to_unicode order), the same 256
with '</w>', one id per merge in merge order, then <|startoftext|> and
<|endoftext|> (the highest id: CLIP pools at argmax of the token ids)."""
import html
import re
import unicodedata

try:
    import regex as _re
    _PAT = _re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
                       _re.IGNORECASE)
except ImportError:  # same classes with the standard library: letters, single digits, other runs
    _PAT = re.compile(r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+""",
                      re.IGNORECASE)

SOT, EOT = "<|startoftext|>", "<|endoftext|>"
HEADER = "#version: unclip-shapes"


def bytes_to_unicode():
    """Byte -> printable unicode character, as CLIP: printable latin-1 bytes
    map to themselves, the rest to 256, 257, ... in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) \
        + list(range(ord("\xae"), ord("\xff") + 1))
    table = {}
    extra = 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    # CLIP's order: the kept bytes first (ascending), then the others
    return {b: table[b] for b in keep + [b for b in range(256) if b not in keep]}


def _symbols(word):
    return list(word[:-1]) + [word[-1] + "</w>"]


def learn_merges(word_freq):
    """BPE merges learned from {word: frequency} until every word is one
    symbol. Ties between equally frequent pairs go to the smaller pair
    (string order), so the result is deterministic."""
    enc = bytes_to_unicode()
    words = {w: [c for c in _symbols("".join(enc[b] for b in w.encode("utf-8")))]
             for w in word_freq}
    merges = []
    while True:
        counts = {}
        for w, syms in words.items():
            for a, b in zip(syms, syms[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + word_freq[w]
        if not counts:
            return merges
        best = min(counts, key=lambda p: (-counts[p], p))
        merges.append(best)
        for w, syms in words.items():
            out = []
            i = 0
            while i < len(syms):
                if i + 1 < len(syms) and (syms[i], syms[i + 1]) == best:
                    out.append(syms[i] + syms[i + 1])
                    i += 2
                else:
                    out.append(syms[i])
                    i += 1
            words[w] = out


def merges_text(merges):
    return HEADER + "\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n"


def parse_merges(text):
    lines = text.split("\n")[1:]
    return [tuple(l.split(" ")) for l in lines if l]


def _clean(text):
    text = unicodedata.normalize("NFC", text)  # stands in for ftfy.fix_text
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class Tokenizer:
    def __init__(self, merges):
        self.byte_encoder = bytes_to_unicode()
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab += ["".join(m) for m in merges]
        vocab += [SOT, EOT]
        self.encoder = {v: i for i, v in enumerate(vocab)}
        self.decoder = {i: v for v, i in self.encoder.items()}
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.merges = [tuple(m) for m in merges]
        self.sot = self.encoder[SOT]
        self.eot = self.encoder[EOT]
        self.vocab_size = len(vocab)
        self.cache = {SOT: SOT, EOT: EOT}

    @classmethod
    def from_text(cls, text):
        return cls(parse_merges(text))

    def text(self):
        return merges_text(self.merges)

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = _symbols(token)
        while len(word) > 1:
            pairs = set(zip(word, word[1:]))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            out = []
            i = 0
            while i < len(word):
                if i + 1 < len(word) and word[i] == best[0] and word[i + 1] == best[1]:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            word = out
        res = " ".join(word)
        self.cache[token] = res
        return res

    def encode(self, text):
        ids = []
        for tok in _PAT.findall(_clean(text).lower()):
            tok = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[p] for p in self.bpe(tok).split(" "))
        return ids

    def tokenize(self, texts, ctx):
        """Karlo's padded_tokens_and_mask: (tokens [N, ctx] int64, mask [N, ctx]
        bool), SOT ids EOT zeros; too long: ctx tokens, the last one EOT."""
        import torch
        toks = torch.zeros(len(texts), ctx, dtype=torch.long)
        mask = torch.zeros(len(texts), ctx, dtype=torch.bool)
        for i, t in enumerate(texts):
            ids = [self.sot] + self.encode(t) + [self.eot]
            if len(ids) > ctx:
                ids = ids[:ctx]
                ids[-1] = self.eot
            toks[i, :len(ids)] = torch.tensor(ids)
            mask[i, :len(ids)] = True
        return toks, mask


def shapes_tokenizer():
    """The tokenizer of the default model: merges from the grammar's words."""
    from . import grammar
    return Tokenizer(learn_merges(grammar.words()))
