"""Byte-level BPE (GPT-2 style): trainer, encoder, and the Hugging Face tokenizer.json writer.

The format is the one core/modelgen/tokenizer-gen.ts writes and the engine reads through
@huggingface/tokenizers:
  ids 0..255    one token per byte, written with GPT-2's bytes_to_unicode symbols (id = byte value)
  ids 256..     merged tokens, in merge order
  last 3 ids    added special tokens <|endoftext|>, <|im_start|>, <|im_end|>
  pre-tokenizer ByteLevel (use_regex true, add_prefix_space false), decoder ByteLevel,
  merges written as [left, right] pairs.

Training: count the GPT-2 pre-tokens of the training text, then repeatedly merge the most frequent
adjacent pair (ties: the lexicographically smallest pair, as tokenizer-gen.ts), with incremental pair
counts and a lazy max-heap, so the whole Brown corpus trains in seconds.

Encoding (used to tokenize the training data) applies the merges by rank, lowest first, exactly as
Hugging Face's BPE model does; `train.py tokenizer` checks it against @huggingface/tokenizers.
"""
from __future__ import annotations

import heapq
import json
from collections import Counter, defaultdict

try:
    import regex as _re

    _SPLIT = _re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
    _ASCII_ONLY = False
except ImportError:  # Debian: apt-get install python3-regex. Without it, only ASCII text is supported.
    import re as _re

    _SPLIT = _re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""")
    _ASCII_ONLY = True

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable unicode symbol table (index = byte value)."""
    direct = set(range(0x21, 0x7F)) | set(range(0xA1, 0xAD)) | set(range(0xAE, 0x100))
    table, n = [], 0
    for b in range(256):
        if b in direct:
            table.append(chr(b))
        else:
            table.append(chr(256 + n))
            n += 1
    return table


BYTE_SYMBOLS = bytes_to_unicode()


def pretokenize(text: str) -> list[str]:
    if _ASCII_ONLY and not text.isascii():
        raise SystemExit("non-ASCII text needs the `regex` module: apt-get install python3-regex")
    return _SPLIT.findall(text)


def to_symbols(word: str) -> list[str]:
    return [BYTE_SYMBOLS[b] for b in word.encode("utf-8")]


def train(texts, vocab_size: int, log=print) -> list[tuple[str, str]]:
    """Learn merges until 256 + distinct merged tokens + len(SPECIAL_TOKENS) == vocab_size."""
    target = vocab_size - 256 - len(SPECIAL_TOKENS)
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(pretokenize(t))
    words = [to_symbols(w) for w in sorted(counts)]
    freqs = [counts[w] for w in sorted(counts)]

    pair_counts: dict[tuple[str, str], int] = defaultdict(int)
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, (syms, f) in enumerate(zip(words, freqs)):
        for p in zip(syms, syms[1:]):
            pair_counts[p] += f
            where[p].add(i)
    heap = [(-c, p) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    merges: list[tuple[str, str]] = []
    tokens: set[str] = set(BYTE_SYMBOLS)
    new_tokens = 0
    while new_tokens < target and heap:
        negc, pair = heapq.heappop(heap)
        cur = pair_counts.get(pair, 0)
        if cur <= 0:
            continue
        if -negc != cur:  # stale entry: re-push with the current count
            heapq.heappush(heap, (-cur, pair))
            continue
        a, b = pair
        merged = a + b
        merges.append(pair)
        if merged not in tokens:
            tokens.add(merged)
            new_tokens += 1
        changed: set[tuple[str, str]] = set()
        for i in sorted(where.pop(pair, ())):
            syms, f = words[i], freqs[i]
            for p in zip(syms, syms[1:]):
                pair_counts[p] -= f
                changed.add(p)
            out, j = [], 0
            while j < len(syms):
                if j + 1 < len(syms) and syms[j] == a and syms[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            words[i] = out
            for p in zip(out, out[1:]):
                pair_counts[p] += f
                where[p].add(i)
                changed.add(p)
        pair_counts.pop(pair, None)
        for p in changed:
            c = pair_counts.get(p, 0)
            if c > 0:
                heapq.heappush(heap, (-c, p))
            elif p in pair_counts:
                del pair_counts[p]
        if log and len(merges) % 500 == 0:
            log(f"  bpe: {len(merges)} merges, last {merged!r} x{cur}")
    return merges


class Encoder:
    """Byte-level BPE encoder over a vocab + ranked merges (same results as HF tokenizers)."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], special: dict[str, int]):
        self.vocab = vocab
        self.ranks = {tuple(m): r for r, m in enumerate(merges)}
        self.special = special
        self.inv = {i: t for t, i in vocab.items()}
        self.byte_of = {s: b for b, s in enumerate(BYTE_SYMBOLS)}
        self.cache: dict[str, list[int]] = {}

    @classmethod
    def from_tokenizer_json(cls, path: str) -> "Encoder":
        tj = json.load(open(path, encoding="utf-8"))
        special = {t["content"]: t["id"] for t in tj["added_tokens"]}
        vocab = {k: v for k, v in tj["model"]["vocab"].items() if k not in special}
        return cls(vocab, [tuple(m) for m in tj["model"]["merges"]], special)

    def _bpe(self, word: str) -> list[int]:
        ids = self.cache.get(word)
        if ids is not None:
            return ids
        syms = to_symbols(word)
        ranks = self.ranks
        while len(syms) > 1:
            best, best_rank = None, None
            for p in zip(syms, syms[1:]):
                r = ranks.get(p)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = p, r
            if best is None:
                break
            a, b = best
            out, j = [], 0
            while j < len(syms):
                if j + 1 < len(syms) and syms[j] == a and syms[j + 1] == b:
                    out.append(a + b)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            syms = out
        ids = [self.vocab[s] for s in syms]
        if len(self.cache) < 500_000:
            self.cache[word] = ids
        return ids

    def encode(self, text: str, parse_special: bool = False) -> list[int]:
        """Token ids of text; special tokens written in the text become their ids when parse_special."""
        if parse_special and self.special:
            pattern = "(" + "|".join(_re.escape(s) for s in sorted(self.special, key=len, reverse=True)) + ")"
            out: list[int] = []
            for k, part in enumerate(_re.split(pattern, text)):
                out.extend([self.special[part]] if k % 2 else self.encode(part))
            return out
        out = []
        for w in pretokenize(text):
            out.extend(self._bpe(w))
        return out

    def decode(self, ids: list[int]) -> str:
        special = {v: k for k, v in self.special.items()}
        parts, buf = [], bytearray()
        for i in ids:
            if i in special:
                parts.append(buf.decode("utf-8", "replace"))
                buf = bytearray()
                parts.append(special[i])
                continue
            buf.extend(self.byte_of[c] for c in self.inv[i])
        parts.append(buf.decode("utf-8", "replace"))
        return "".join(parts)


def build(merges: list[tuple[str, str]], model_max_length: int) -> tuple[dict, dict, dict]:
    """tokenizer.json, tokenizer_config.json and the special ids, in tokenizer-gen.ts's format."""
    vocab: dict[str, int] = {s: i for i, s in enumerate(BYTE_SYMBOLS)}
    nxt = 256
    for a, b in merges:
        if a + b not in vocab:
            vocab[a + b] = nxt
            nxt += 1
    added = []
    for content in SPECIAL_TOKENS:
        vocab[content] = nxt
        added.append({"id": nxt, "content": content, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True})
        nxt += 1
    endoftext, im_start, im_end = (t["id"] for t in added)
    tokenizer_json = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": vocab,
            "merges": [[a, b] for a, b in merges],
        },
    }
    tokenizer_config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(t["id"]): {"content": t["content"], "lstrip": False, "normalized": False, "rstrip": False,
                           "single_word": False, "special": True}
            for t in added
        },
        "bos_token": "<|endoftext|>",
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "chat_template": CHATML_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": model_max_length,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    ids = {"endoftext": endoftext, "im_start": im_start, "im_end": im_end, "bos": endoftext, "eos": im_end,
           "eos_all": [im_end, endoftext], "size": nxt}
    return tokenizer_json, tokenizer_config, ids
