"""A Llama decoder in plain PyTorch (gpt-fast style), with HiRE's top-k FFN.

Exactly the computation of Hugging Face's LlamaForCausalLM (what the engine runs):
  x = embed(ids)
  per layer:  x = x + o_proj(attn(rope(q_proj(rms(x))), rope(k_proj(rms(x))), v_proj(rms(x))))   (causal, GQA)
              x = x + down_proj(topk(silu(gate_proj(rms(x))) * up_proj(rms(x))))
  logits = rms(x) @ embed.T   (tied embeddings)
RMSNorm: x * rsqrt(mean(x^2) + eps) * w, computed in f32. Rotary: HF's rotate_half convention
(the two halves of each head are the pair), inv_freq = theta^(-2i/d).

Top-k FFN (HiRE): per token, the activations a = silu(gate(x)) * up(x) outside the k largest |a|
are zeroed (a forward mask; gradients flow through the kept entries). k = round(frac * intermediate),
the same rounding as the engine's resolveCount. topk_frac = None is the dense FFN.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class ModelArgs:
    vocab_size: int = 4096
    dim: int = 320
    n_layers: int = 6
    n_heads: int = 5
    n_kv_heads: int = 5
    intermediate: int = 864
    max_seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    topk_frac: float | None = 0.1

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def topk(self) -> int | None:
        if self.topk_frac is None:
            return None
        return max(1, min(self.intermediate, round(self.topk_frac * self.intermediate)))

    def to_dict(self) -> dict:
        return asdict(self)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def rope_cache(seq_len: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    t = torch.arange(seq_len, dtype=torch.float32)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, head_dim)
    return emb.cos(), emb.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x: (B, H, T, D); cos/sin: (T, D)
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = a.n_heads, a.n_kv_heads, a.head_dim
        self.q_proj = nn.Linear(a.dim, a.n_heads * self.hd, bias=False)
        self.k_proj = nn.Linear(a.dim, a.n_kv_heads * self.hd, bias=False)
        self.v_proj = nn.Linear(a.dim, a.n_kv_heads * self.hd, bias=False)
        self.o_proj = nn.Linear(a.n_heads * self.hd, a.dim, bias=False)

    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.n_heads, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if self.n_kv != self.n_heads:
            rep = self.n_heads // self.n_kv
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.hd))
        att = att.masked_fill(mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, self.n_heads * self.hd)
        return self.o_proj(y)


def topk_mask(a: torch.Tensor, k: int) -> torch.Tensor:
    """Zero all but the k largest |a| along the last dim (ties at the threshold are kept)."""
    with torch.no_grad():
        thr = a.abs().topk(k, dim=-1, sorted=False).values.min(dim=-1, keepdim=True).values
        keep = a.abs() >= thr
    return a * keep


class FeedForward(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.gate_proj = nn.Linear(a.dim, a.intermediate, bias=False)
        self.up_proj = nn.Linear(a.dim, a.intermediate, bias=False)
        self.down_proj = nn.Linear(a.intermediate, a.dim, bias=False)
        self.k = a.topk
        # Optional recall term (train.py --recall-weight): set to an oversample factor to compute it.
        self.recall_oversample: float | None = None
        self.aux: torch.Tensor | None = None

    def activations(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.gate_proj(x)) * self.up_proj(x)

    def forward(self, x: torch.Tensor, k: int | None = -1) -> torch.Tensor:
        sg = F.silu(self.gate_proj(x))
        a = sg * self.up_proj(x)
        k = self.k if k == -1 else k
        if self.recall_oversample is not None and k is not None:
            self.aux = recall_penalty(sg, a, k, self.recall_oversample)
        if k is not None:
            a = topk_mask(a, k)
        return self.down_proj(a)


def recall_penalty(sg: torch.Tensor, a: torch.Tensor, k: int, oversample: float) -> torch.Tensor:
    """Mean share of |a| outside the top-(oversample*k) neurons by |silu(gate)| — HiRE's candidate set
    (its int4 predictor ranks by |silu(Q4(W_gate) x)|). Zero when every neuron that matters is a
    candidate, i.e. recall@k = 1; its gradient shrinks |a| where the gate is small."""
    kp = min(a.shape[-1], math.ceil(k * oversample))
    with torch.no_grad():
        outside = torch.ones_like(a, dtype=torch.bool).scatter_(-1, sg.abs().topk(kp, dim=-1).indices, False)
    aa = a.abs()
    return ((aa * outside).sum(-1) / (aa.sum(-1).detach() + 1e-6)).mean()


class Block(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.input_layernorm = RMSNorm(a.dim, a.norm_eps)
        self.self_attn = Attention(a)
        self.post_attention_layernorm = RMSNorm(a.dim, a.norm_eps)
        self.mlp = FeedForward(a)

    def forward(self, x, cos, sin, mask, k=-1):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return x + self.mlp(self.post_attention_layernorm(x), k)


class Llama(nn.Module):
    def __init__(self, a: ModelArgs):
        super().__init__()
        self.args = a
        self.embed_tokens = nn.Embedding(a.vocab_size, a.dim)
        self.layers = nn.ModuleList(Block(a) for _ in range(a.n_layers))
        self.norm = RMSNorm(a.dim, a.norm_eps)
        cos, sin = rope_cache(a.max_seq_len, a.head_dim, a.rope_theta)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        for name, p in self.named_parameters():
            if p.dim() == 2:
                s = std
                if name.endswith("o_proj.weight") or name.endswith("down_proj.weight"):
                    s = std / math.sqrt(2 * self.args.n_layers)  # GPT-2 / Llama residual scaling
                nn.init.normal_(p, mean=0.0, std=s)

    def hidden(self, ids: torch.Tensor, k: int | None = -1, capture=None) -> torch.Tensor:
        T = ids.shape[1]
        mask = torch.ones(T, T, dtype=torch.bool, device=ids.device).triu(1)
        cos, sin = self.cos[:T], self.sin[:T]
        x = self.embed_tokens(ids)
        for layer in self.layers:
            if capture is not None:
                x = x + layer.self_attn(layer.input_layernorm(x), cos, sin, mask)
                h = layer.post_attention_layernorm(x)
                capture.append(h)
                x = x + layer.mlp(h, k)
            else:
                x = layer(x, cos, sin, mask, k)
        return self.norm(x)

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None, k: int | None = -1):
        """k = -1: the model's own top-k (args.topk_frac); None: dense FFN; an int: that k."""
        h = self.hidden(ids, k)
        logits = h @ self.embed_tokens.weight.t()
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))

    def set_recall_penalty(self, oversample: float | None) -> None:
        for layer in self.layers:
            layer.mlp.recall_oversample = oversample
            layer.mlp.aux = None

    def recall_aux(self) -> torch.Tensor:
        return sum(layer.mlp.aux for layer in self.layers) / len(self.layers)

    def param_counts(self) -> dict:
        total = sum(p.numel() for p in self.parameters())
        emb = self.embed_tokens.weight.numel()
        return {"total": total, "embedding": emb, "non_embedding": total - emb}

    @torch.no_grad()
    def greedy(self, ids: list[int], n: int, k: int | None = -1, stop: tuple[int, ...] = ()) -> list[int]:
        """Greedy decoding (full recompute each step; fine for a check)."""
        seq = list(ids)
        out = []
        for _ in range(n):
            x = torch.tensor([seq[-self.args.max_seq_len:]])
            nxt = int(self(x, k=k)[0, -1].argmax())
            out.append(nxt)
            seq.append(nxt)
            if nxt in stop:
                break
        return out
