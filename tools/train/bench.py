"""Measure training throughput (tokens/s) of candidate model shapes: forward + backward + AdamW step.

  /usr/bin/python3 tools/train/bench.py --threads 1 --seconds 20
  /usr/bin/python3 tools/train/bench.py --threads 2 --shapes 320x6x864

A shape is DIMxLAYERSxINTERMEDIATE[xHEADS[xKV_HEADS]] (heads default: dim / 64).
"""
from __future__ import annotations

import argparse
import time

import torch

from model import Llama, ModelArgs

DEFAULT_SHAPES = ["256x4x704", "256x6x704", "320x6x864", "384x6x1024", "384x8x1024"]


def parse_shape(s: str, vocab: int, seq: int, topk: float | None) -> ModelArgs:
    p = [int(x) for x in s.split("x")]
    dim, layers, inter = p[:3]
    heads = p[3] if len(p) > 3 else max(1, dim // 64)
    kv = p[4] if len(p) > 4 else heads
    return ModelArgs(vocab_size=vocab, dim=dim, n_layers=layers, n_heads=heads, n_kv_heads=kv,
                     intermediate=inter, max_seq_len=seq, topk_frac=topk)


def measure(a: ModelArgs, batch: int, seconds: float) -> tuple[float, dict]:
    torch.manual_seed(0)
    m = Llama(a)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-3, weight_decay=0.1)
    x = torch.randint(0, a.vocab_size, (batch, a.max_seq_len + 1))
    steps, t0, t_start = 0, None, time.time()
    while True:
        loss = m(x[:, :-1], x[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        steps += 1
        if steps == 2:  # warm-up steps excluded
            t0, s0 = time.time(), steps
        if t0 is not None and time.time() - t0 >= seconds:
            break
        if time.time() - t_start > 4 * seconds + 60:
            break
    dt = time.time() - t0
    return (steps - s0) * batch * a.max_seq_len / dt, m.param_counts()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=15)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--dense", action="store_true", help="no top-k mask (to see its cost)")
    ap.add_argument("--shapes", nargs="*", default=DEFAULT_SHAPES)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    for s in a.shapes:
        args = parse_shape(s, a.vocab, a.seq, None if a.dense else 0.1)
        tps, pc = measure(args, a.batch, a.seconds)
        print(f"{s:>14}  params {pc['total'] / 1e6:6.2f}M (non-emb {pc['non_embedding'] / 1e6:5.2f}M)  "
              f"{tps:8.0f} tok/s  -> 60 min x1.8: {tps * 1.8 * 3600 / 1e6:5.1f}M tokens", flush=True)


if __name__ == "__main__":
    main()
