#!/usr/bin/env python3
"""Make the SentencePiece fixtures of test/spm (checked in; rerun only to change them).

Two small BPE tokenizer.model files trained with Google's sentencepiece (Debian: python3-sentencepiece,
run with /usr/bin/python3) on this repository's Markdown, and what sentencepiece itself makes of a set
of test strings (ids and the decoded text), which test/sentencepiece.test.ts compares our conversion
to tokenizer.json against:
  llama-like/  Llama 2's settings: identity normalizer, add_dummy_prefix, whitespace kept, byte fallback,
               <unk> <s> </s> at 0, 1, 2;
  nfkc/        sentencepiece's defaults: NFKC normalization (a precompiled charsmap), runs of whitespace
               collapsed and stripped; no byte fallback, so unknown characters are <unk>;
  unigram/     a Unigram model (not BPE), which the conversion refuses.
Usage: /usr/bin/python3 tools/tokenizer/make-spm-fixtures.py
"""
import glob
import io
import json
import os

import sentencepiece as spm

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "test", "spm")

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    " leading space, and  two spaces,   three; trailing space ",
    "Tabs\tand\nnew lines\n\nhere",
    "Unicode: café, naïve, Straße, Ελληνικά, 中文字符, emoji 🦙🚀",
    "Full-width ＡＢＣ and ligature ﬁ and ① (NFKC folds these)",
    "HiRE predicts the top-k rows with an int4 copy of W_gate; k' = 2k.",
    "numbers 1234567890 and symbols <>[]{}|\\^~`@#$%&*",
    "<tool_call>{\"name\": \"f\"}</tool_call> (a user-defined piece)",
    "",
    "   ",
]


def train(name, model_type="bpe", vocab_size=700, **options):
    corpus = []
    for path in sorted(glob.glob(os.path.join(ROOT, "README.md")) + glob.glob(os.path.join(ROOT, "docs", "*.md"))):
        with open(path, encoding="utf8") as f:
            corpus.extend(line.rstrip("\n") for line in f if line.strip())
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=model,
        model_type=model_type,
        vocab_size=vocab_size,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
        **options,
    )
    folder = os.path.join(OUT, name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "tokenizer.model"), "wb") as f:
        f.write(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    cases = []
    for text in TEXTS:
        ids = sp.encode(text)
        cases.append({"text": text, "ids": ids, "pieces": [sp.id_to_piece(i) for i in ids], "decoded": sp.decode(ids)})
    expected = {"vocab_size": sp.get_piece_size(), "bos_id": sp.bos_id(), "eos_id": sp.eos_id(), "unk_id": sp.unk_id(), "cases": cases}
    with open(os.path.join(folder, "expected.json"), "w", encoding="utf8") as f:
        f.write(json.dumps({**expected, "cases": []}, ensure_ascii=False)[:-3] + "[\n")
        f.write(",\n".join(json.dumps(c, ensure_ascii=False) for c in cases) + "\n]}\n")


train(
    "llama-like",
    normalization_rule_name="identity",
    remove_extra_whitespaces=False,
    byte_fallback=True,
    split_digits=True,
    allow_whitespace_only_pieces=True,
    user_defined_symbols=["<tool_call>"],
)
train("nfkc")
train("unigram", model_type="unigram", vocab_size=300)
