"""Recall of the engine's HiRE FFN predictor on held-out text, simulated in PyTorch.

The engine's predictor is an int4 group-quantized copy of W_gate (group 32, symmetric, f16 scales,
codes round-to-even in [-7, 7]); it quantizes x to int8 per group (scale max|x|/127) and ranks the
neurons by |silu(Q4(W_gate) . Q8(x))|. HiRE computes the top k' = oversample * k candidates exactly and
keeps the exact top-k of |a| among them (a = silu(gate(x)) * up(x)). recall@k = |selected ∩ exact top-k| / k,
with the exact top-k taken over all neurons: the share of the true top-k that the candidates caught.

The FFN inputs come from the model's own top-k forward (as trained) over windows of eval.txt.

  /usr/bin/python3 tools/train/check_recall.py --model assets/models/hire-brown-6m [--tokens 4096] [--json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import bpe  # noqa: E402
import export  # noqa: E402
from model import Llama, ModelArgs  # noqa: E402


def quantize_rows(w: torch.Tensor, bits: int, group: int) -> torch.Tensor:
    """Dequantized group-quantized copy of w (rows x cols), quantized along each row as the engine does."""
    qmax = 7.0 if bits == 4 else 127.0
    rows, cols = w.shape
    pad = -cols % group
    wp = F.pad(w.float(), (0, pad)).view(rows, -1, group)
    amax = wp.abs().amax(-1, keepdim=True)
    scale = (amax / qmax).clamp(max=65504.0).to(torch.float16).float()  # f16 scales, as stored
    codes = torch.where(scale > 0, wp / scale, torch.zeros_like(wp)).clamp(-qmax, qmax).round()
    return (codes * scale).view(rows, -1)[:, :cols]


def quantize_x(x: torch.Tensor, group: int) -> torch.Tensor:
    """Per-group int8 quantization of activations (..., cols), scale max|x|/127, in f32."""
    cols = x.shape[-1]
    pad = -cols % group
    xp = F.pad(x.float(), (0, pad)).view(*x.shape[:-1], -1, group)
    amax = xp.abs().amax(-1, keepdim=True)
    inv = torch.where(amax > 0, 127.0 / amax, torch.zeros_like(amax))
    q = (xp * inv).clamp(-127, 127).round()
    return (q * (amax / 127.0)).view(*x.shape[:-1], -1)[..., :cols]


def resolve(frac: float, n: int) -> int:
    return max(1, min(n, round(frac * n)))


def recall_table(model: Llama, hs: list[torch.Tensor], ks, oversamples, bits=4, group=32, exact_pred=False):
    """{(k, oversample): [recall per layer]}"""
    F_ = model.args.intermediate
    out = {}
    for layer, h in zip(model.layers, hs):
        h = h.reshape(-1, h.shape[-1])
        wg = layer.mlp.gate_proj.weight
        g = h @ wg.t()
        a = (F.silu(g) * (h @ layer.mlp.up_proj.weight.t())).abs()
        if exact_pred:
            s = F.silu(g).abs()
        else:
            s = F.silu(quantize_x(h, group) @ quantize_rows(wg, bits, group).t()).abs()
        for kf in ks:
            k = resolve(kf, F_)
            exact = torch.zeros_like(a, dtype=torch.bool).scatter_(-1, a.topk(k, -1).indices, True)
            for o in oversamples:
                kp = min(F_, math.ceil(k * o))
                cand = s.topk(kp, -1).indices
                ac = a.gather(-1, cand)
                sel = cand.gather(-1, ac.topk(min(k, kp), -1).indices)
                hit = exact.gather(-1, sel).float().sum(-1) / k
                out.setdefault((kf, o), []).append(float(hit.mean()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", default=None, help="default: MODEL/eval.txt")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--ks", default="0.05,0.1,0.2")
    ap.add_argument("--oversamples", default="1,2,4")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    margs = ModelArgs(**export.read_args(a.model))
    model = Llama(margs)
    model.load_state_dict(export.load_safetensors_state(a.model), strict=False)
    model.eval()
    enc = bpe.Encoder.from_tokenizer_json(os.path.join(a.model, "tokenizer.json"))
    text = open(a.text or os.path.join(a.model, "eval.txt"), encoding="utf-8").read()
    ids = enc.encode(text)[: a.tokens]
    T = margs.max_seq_len
    hs_all: list[list[torch.Tensor]] = [[] for _ in range(margs.n_layers)]
    with torch.no_grad():
        for i in range(0, len(ids) - 1, T):
            x = torch.tensor([ids[i: i + T]])
            hs: list[torch.Tensor] = []
            model.hidden(x, capture=hs)
            for l, h in enumerate(hs):
                hs_all[l].append(h.reshape(-1, h.shape[-1]))
        hs = [torch.cat(h) for h in hs_all]
        ks = [float(k) for k in a.ks.split(",")]
        os_ = [float(o) for o in a.oversamples.split(",")]
        table = recall_table(model, hs, ks, os_)
        table_exact = recall_table(model, hs, [0.1], [2.0], exact_pred=True)
    n = hs[0].shape[0]
    if a.json:
        print(json.dumps({"tokens": n, "int4_g32": {f"k={k},oversample={o}": v for (k, o), v in table.items()},
                          "unquantized_gate_k=0.1,oversample=2": table_exact[(0.1, 2.0)]}))
        return
    print(f"recall@k of the int4:32 W_gate predictor on {n} held-out tokens ({a.model})")
    print("k      over  mean    per layer")
    for (k, o), v in table.items():
        print(f"{k:<6g} {o:<5g} {sum(v) / len(v):.3f}   " + " ".join(f"{x:.3f}" for x in v))
    v = table_exact[(0.1, 2.0)]
    print(f"(unquantized |silu(W_gate x)| ranking, k=0.1, oversample 2: {sum(v) / len(v):.3f}; "
          f"the rest is the int4 quantization's share of the misses)")


if __name__ == "__main__":
    main()
