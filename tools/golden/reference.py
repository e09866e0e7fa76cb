#!/usr/bin/env python3
"""A float64 NumPy reference of the Hugging Face forward pass for the Llama family (LlamaForCausalLM,
MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, SmolLM3ForCausalLM, Phi3ForCausalLM,
GraniteForCausalLM, Olmo2ForCausalLM, StableLmForCausalLM; the mixture-of-experts MixtralForCausalLM,
Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, OlmoeForCausalLM, GraniteMoeForCausalLM,
GraniteMoeSharedForCausalLM, Ernie4_5_MoeForCausalLM and PhimoeForCausalLM), PhiForCausalLM, GPTNeoXForCausalLM, Starcoder2ForCausalLM, CohereForCausalLM, Cohere2ForCausalLM, GlmForCausalLM, Glm4ForCausalLM, Ernie4_5ForCausalLM, Exaone4ForCausalLM, GPTJForCausalLM, InternLM2ForCausalLM, OlmoForCausalLM, MiniCPMForCausalLM,
GemmaForCausalLM, Gemma2ForCausalLM and Gemma3ForCausalLM, written from the transformers modeling code's semantics and independent of the
engine: it shares no code with core/.

It writes the golden `expected.json` format (../shared/golden/README.md): greedy ids after the
prompt, the top-5 log-probabilities and the top-2 margin of every step. The prompt is tokenized the
golden way (one token per UTF-8 byte, no BOS), so the model folder needs the golden byte tokenizer.

    python3 tools/golden/reference.py MODEL_DIR [--prompt TEXT] [--steps 16] > MODEL_DIR/expected.json
    python3 tools/golden/reference.py MODEL_DIR --check   # compare with MODEL_DIR/expected.json

`--check` on ../shared/golden/{llama-bf16,llama-f32-tied,qwen2-f16} is how this script was checked
against the project's independent reference before it made test/golden/qwen3-bf16.
"""
import argparse
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np


def read_safetensors(path: Path) -> dict:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        buf = raw[base + a : base + b]
        if t["dtype"] == "F32":
            v = np.frombuffer(buf, dtype="<f4").astype(np.float64)
        elif t["dtype"] == "F16":
            v = np.frombuffer(buf, dtype="<f2").astype(np.float64)
        elif t["dtype"] == "BF16":
            bits = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            v = bits.view(np.float32).astype(np.float64)
        else:
            raise SystemExit(f"{path}: {name} has dtype {t['dtype']}")
        out[name] = v.reshape(t["shape"])
    return out


def unfuse_experts(w: dict, arch: str) -> dict:
    """transformers 5's stacked experts (mlp.experts.gate_up_proj [E, 2F, H]: each expert's gate rows,
    then its up rows; mlp.experts.down_proj [E, H, F]; Mixtral's router as mlp.gate) under the
    per-expert names of the checkpoints on the Hub, which the rest of this file reads."""
    mixtral = arch in ("MixtralForCausalLM", "PhimoeForCausalLM")
    gate, up, down = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    out = dict(w)
    for name in [n for n in w if n.endswith(".mlp.experts.gate_up_proj")]:
        p = name[: -len(".mlp.experts.gate_up_proj")]
        block = f"{p}.block_sparse_moe" if mixtral else f"{p}.mlp"
        gu, dn = out.pop(name), out.pop(f"{p}.mlp.experts.down_proj")
        F = gu.shape[1] // 2
        for e in range(gu.shape[0]):
            out[f"{block}.experts.{e}.{gate}.weight"] = gu[e, :F]
            out[f"{block}.experts.{e}.{up}.weight"] = gu[e, F:]
            out[f"{block}.experts.{e}.{down}.weight"] = dn[e]
        if mixtral:
            out[f"{block}.gate.weight"] = out.pop(f"{p}.mlp.gate.weight")
    return out


def rms_norm(x, w, eps):
    return w * (x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps))


def layer_norm(x, w, b, eps):
    mu = np.mean(x, axis=-1, keepdims=True)
    var = np.mean((x - mu) ** 2, axis=-1, keepdims=True)
    return w * (x - mu) / np.sqrt(var + eps) + b


def gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def gelu_erf(x):
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / np.sqrt(2.0)))


def rope_params(cfg, head_dim):
    """(inverse frequencies over the rotary dims, cos/sin multiplier), as transformers' rope init
    functions compute them: default, or Phi-3's longrope while the sequence fits in
    original_max_position_embeddings (short factors)."""
    theta = float(cfg.get("rope_theta", 10000.0))
    dim = int(head_dim * cfg.get("partial_rotary_factor", 1.0))
    inv = 1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float64) / dim)
    scaling = cfg.get("rope_scaling")
    if not scaling:
        return inv, 1.0
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "linear":
        return inv / scaling["factor"], 1.0
    if kind == "dynamic":
        # transformers raises the base only past max_position_embeddings; golden runs are shorter.
        return inv, 1.0
    if kind == "yarn":
        # YaRN as transformers computes it: a frequency that turns more than beta_fast times over the
        # original length is kept, fewer than beta_slow times divided by factor, a linear ramp over the
        # dimensions between (ends floored and ceiled); cos and sin times 0.1 ln(factor) + 1.
        original = scaling.get("original_max_position_embeddings") or cfg["max_position_embeddings"]
        factor = scaling["factor"]
        turns = lambda n: dim * np.log(original / (n * 2 * np.pi)) / (2 * np.log(theta))
        low = max(np.floor(turns(scaling.get("beta_fast") or 32)), 0)
        high = min(np.ceil(turns(scaling.get("beta_slow") or 1)), dim - 1)
        ramp = np.clip((np.arange(dim // 2) - low) / (high - low), 0, 1)
        m = scaling.get("attention_factor") or 0.1 * np.log(factor) + 1
        return inv / factor * ramp + inv * (1 - ramp), float(m)
    if kind != "longrope":
        raise SystemExit(f"rope_scaling {kind} is not implemented here")
    original = cfg.get("original_max_position_embeddings") or scaling["original_max_position_embeddings"]
    factor = cfg["max_position_embeddings"] / original
    m = scaling.get("attention_factor") or (1.0 if factor <= 1 else np.sqrt(1 + np.log(factor) / np.log(original)))
    m = scaling.get("short_mscale") or m  # Phi-3.5-MoE: cos and sin times short_mscale instead
    return inv / np.array(scaling["short_factor"], dtype=np.float64), float(m)


def rotate(x, pos, inv, m=1.0):
    # x [T, heads, D]; rotate-half over the first 2 * len(inv) dims with cos/sin of pos * inv
    # repeated over both halves (times m), the rest passed through.
    rd = 2 * len(inv)
    f = np.outer(pos, inv)  # [T, rd/2]
    cos = m * np.cos(np.concatenate([f, f], axis=-1))[:, None, :]
    sin = m * np.sin(np.concatenate([f, f], axis=-1))[:, None, :]
    xr, xp = x[..., :rd], x[..., rd:]
    half = rd // 2
    rot = np.concatenate([-xr[..., half:], xr[..., :half]], axis=-1)
    return np.concatenate([xr * cos + rot * sin, xp], axis=-1)


def rotate_pairs(x, pos, inv):
    # x [T, heads, D]; GPT-J-style rotary: each adjacent pair (2i, 2i + 1) of the first 2 * len(inv)
    # dims turned by pos * inv[i], the rest passed through.
    rd = 2 * len(inv)
    f = np.outer(pos, inv)[:, None, :]  # [T, 1, rd/2]
    cos, sin = np.cos(f), np.sin(f)
    even, odd = x[..., 0:rd:2], x[..., 1:rd:2]
    out = x.copy()
    out[..., 0:rd:2] = even * cos - odd * sin
    out[..., 1:rd:2] = odd * cos + even * sin
    return out


class Model:
    def __init__(self, folder: Path):
        self.cfg = json.loads((folder / "config.json").read_text())
        arch = self.cfg["architectures"][0]
        known = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
                 "SmolLM3ForCausalLM", "Phi3ForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM",
                 "GemmaForCausalLM", "GraniteForCausalLM", "Olmo2ForCausalLM", "StableLmForCausalLM",
                 "PhiForCausalLM", "GPTNeoXForCausalLM", "Starcoder2ForCausalLM",
                 "CohereForCausalLM", "Cohere2ForCausalLM", "GlmForCausalLM", "Glm4ForCausalLM",
                 "Ernie4_5ForCausalLM", "Exaone4ForCausalLM", "GPTJForCausalLM",
                 "InternLM2ForCausalLM", "OlmoForCausalLM", "MiniCPMForCausalLM",
                 "MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "OlmoeForCausalLM",
                 "GraniteMoeForCausalLM", "GraniteMoeSharedForCausalLM", "Ernie4_5_MoeForCausalLM",
                 "PhimoeForCausalLM")
        if arch not in known:
            raise SystemExit(f"{arch} is not one of {', '.join(known)}")
        self.qwen2 = arch in ("Qwen2ForCausalLM", "Qwen2MoeForCausalLM")
        # Mixture-of-experts FFNs (see moe): Mixtral's block_sparse_moe, the others' mlp. OLMoE: q/k
        # norms over each token's whole projection, as OLMo 2's, with the Llama block's norms.
        self.arch = arch
        self.granite_moe = arch in ("GraniteMoeForCausalLM", "GraniteMoeSharedForCausalLM")
        # ERNIE 4.5 MoE: experts chosen by probability + e_score_correction_bias, weighted by
        # probability; shared experts added unscaled; dense FFNs outside moe_layer_start/end_index.
        self.ernie_moe = arch == "Ernie4_5_MoeForCausalLM"
        # Phi-3.5-MoE: Mixtral's block_sparse_moe routed by sparsemixer (see moe_ffn), LayerNorms with
        # biases (eps rms_norm_eps), q/k/v/o biases, longrope with short_mscale, a biased head.
        self.phimoe = arch == "PhimoeForCausalLM"
        self.moe = self.granite_moe or self.ernie_moe or self.phimoe or arch in (
            "MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "OlmoeForCausalLM")
        self.olmoe = arch == "OlmoeForCausalLM"
        # Gemma 2 and 3: embeddings times sqrt(hidden), (1 + w) norms, norms after both blocks,
        # sliding-window layers (layer_types), query_pre_attn_scalar, GELU (tanh) gated FFN. Gemma 3:
        # q/k norms, its own rotary base in the sliding layers. Gemma 2: soft-capped scores and logits.
        self.gemma3 = arch == "Gemma3ForCausalLM"
        self.gemma = self.gemma3 or arch == "Gemma2ForCausalLM"
        # Gemma (1): the same embeddings, (1 + w) norms and GELU, but the Llama block's two norms, no
        # windows or caps, attention scaled by 1/sqrt(head_dim).
        self.gemma1 = arch == "GemmaForCausalLM"
        self.qk_norm = arch in ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM") or self.gemma3 or arch == "Exaone4ForCausalLM"
        self.phi3 = arch == "Phi3ForCausalLM"  # fused qkv_proj and gate_up_proj (gate first)
        # OLMo 2: no norm before the blocks, one after each (post_attention_layernorm,
        # post_feedforward_layernorm), q/k norms over each token's whole projection, before the reshape.
        self.olmo2 = arch == "Olmo2ForCausalLM"
        # OLMo (1): the Llama block with LayerNorms that have no weight or bias (eps 1e-5).
        self.olmo = arch == "OlmoForCausalLM"
        # EXAONE 4.0: OLMo 2's norms after the blocks with per-head q/k norms; with sliding_window,
        # windows in layer_types' sliding layers (else all but every sliding_window_pattern-th) and
        # the rotary step in those only.
        self.exaone4 = arch == "Exaone4ForCausalLM"
        self.post_norms = self.olmo2 or self.exaone4
        # StableLM: LayerNorms (weight and bias, layer_norm_eps), q/k/v biases with use_qkv_bias.
        self.stablelm = arch == "StableLmForCausalLM"
        # Phi (1, 1.5, 2): attention and MLP side by side on one LayerNorm of x (x + attn + mlp),
        # biases on q/k/v, "dense" (the output projection), fc1, fc2 and lm_head; GELU (tanh) MLP.
        self.phi = arch == "PhiForCausalLM"
        # GPT-NeoX: its own tensor names, q/k/v fused head by head, two LayerNorms side by side
        # (use_parallel_residual), exact GELU, rotary_pct / rotary_emb_base (see neox_logits).
        self.neox = arch == "GPTNeoXForCausalLM"
        # GPT-J: its own names (see gptj_logits), one LayerNorm for attention and MLP side by side,
        # adjacent rotary pairs over the first rotary_dim dims, base 10000, a biased head.
        self.gptj = arch == "GPTJForCausalLM"
        # InternLM2: the Llama block under its own names (see internlm2_logits), q/k/v in one wqkv
        # laid out key/value head by key/value head: its group's q heads, then k, then v.
        self.internlm2 = arch == "InternLM2ForCausalLM"
        # StarCoder2: LayerNorms (norm_epsilon), biases on q/k/v/o and on an ungated GELU (tanh) MLP
        # (c_fc, c_proj) with use_bias, a sliding window in every layer when sliding_window is set.
        self.starcoder2 = arch == "Starcoder2ForCausalLM"
        # Cohere: attention and SwiGLU MLP side by side on one LayerNorm without bias, the rotary step
        # on adjacent pairs (2i, 2i + 1), logits times logit_scale, a tied head by default.
        # Cohere 2: the same, with windows in layer_types' sliding layers (else all but every
        # sliding_window_pattern-th), and the rotary step only in those.
        self.cohere2 = arch == "Cohere2ForCausalLM"
        # GLM-4: q/k/v biases (o_proj none), gate_up_proj fused (gate first), the rotary step on
        # adjacent pairs of the first partial_rotary_factor of each head. GLM-4-0414: norms after the
        # attention (post_self_attn_layernorm) and the MLP (post_mlp_layernorm).
        self.glm4 = arch == "Glm4ForCausalLM"
        self.glm = arch == "GlmForCausalLM" or self.glm4
        # ERNIE 4.5: the Llama block with the rotary step on adjacent pairs.
        self.ernie = arch in ("Ernie4_5ForCausalLM", "Ernie4_5_MoeForCausalLM")
        self.cohere = arch == "CohereForCausalLM" or self.cohere2
        self.layer_norm = self.stablelm or self.phi or self.neox or self.starcoder2 or self.cohere or self.gptj or self.phimoe
        self.bias = self.qwen2 or self.phi or (self.starcoder2 and self.cfg.get("use_bias", True)) or bool(self.cfg.get("attention_bias", False) or self.cfg.get("use_qkv_bias", False))
        # Granite: embeddings times embedding_multiplier, attention scores times attention_multiplier,
        # each block's output times residual_multiplier before its residual add, logits / logits_scaling.
        self.granite = arch == "GraniteForCausalLM" or self.granite_moe
        g = self.cfg if self.granite else {}
        self.embed_mult = g.get("embedding_multiplier", 1.0)
        self.residual_mult = g.get("residual_multiplier", 1.0)
        self.logits_div = g.get("logits_scaling", 1.0)
        # MiniCPM: embeddings times scale_emb, block outputs times scale_depth / sqrt(layers), the
        # final hidden state divided by hidden_size / dim_model_base.
        if arch == "MiniCPMForCausalLM":
            m = self.cfg
            self.embed_mult = m.get("scale_emb", 1.0)
            self.residual_mult = m.get("scale_depth", 1.0) / np.sqrt(m["num_hidden_layers"])
            self.logits_div = m["hidden_size"] / m.get("dim_model_base", m["hidden_size"])
        self.w = unfuse_experts(read_safetensors(folder / "model.safetensors"), arch)
        c = self.cfg
        if self.gptj:
            c = self.cfg = dict(c, hidden_size=c["n_embd"], num_attention_heads=c["n_head"],
                                num_hidden_layers=c["n_layer"], layer_norm_eps=c.get("layer_norm_epsilon", 1e-5))
        self.H = c["hidden_size"]
        self.A = c["num_attention_heads"]
        self.K = c.get("num_key_value_heads", self.A)
        self.D = c.get("head_dim") or self.H // self.A
        self.eps = c.get("layer_norm_eps", 1e-5) if self.layer_norm else c.get("rms_norm_eps", 1e-6)
        if self.phimoe:
            self.eps = c.get("rms_norm_eps", 1e-5)
        if self.starcoder2:
            self.eps = c.get("norm_epsilon", 1e-5)
        if self.neox:
            c = dict(c, rope_theta=c.get("rotary_emb_base", 10000), partial_rotary_factor=c.get("rotary_pct", 0.25))
        if self.gptj:
            rd = c.get("rotary_dim") or self.H // self.A
            c = dict(c, rope_theta=10000.0, partial_rotary_factor=rd / (self.H // self.A))
        self.inv, self.m = rope_params(c, self.D)
        if self.internlm2:
            self.head = self.w.get("output.weight", self.w["model.tok_embeddings.weight"])
        elif self.gptj:
            self.head = self.w.get("lm_head.weight", self.w["transformer.wte.weight"])
        elif self.neox:
            self.head = self.w.get("embed_out.weight", self.w["gpt_neox.embed_in.weight"])
        else:
            self.head = self.w.get("lm_head.weight", self.w["model.embed_tokens.weight"])
        layers = c["num_hidden_layers"]
        self.scale = 1.0 / np.sqrt(c["query_pre_attn_scalar"] if self.gemma else self.D)
        if self.granite:
            self.scale = c.get("attention_multiplier", 1.0)
        self.window = [None] * layers
        self.local_inv = self.inv
        self.att_cap = c.get("attn_logit_softcapping") if self.gemma else None
        self.final_cap = c.get("final_logit_softcapping") if self.gemma else None
        if self.gemma:
            self.window = [c["sliding_window"] if t == "sliding_attention" else None for t in c["layer_types"]]
        if self.starcoder2:
            self.window = [c.get("sliding_window")] * layers
        if self.cohere2:
            every = c.get("sliding_window_pattern", 4)
            types = c.get("layer_types") or [
                "sliding_attention" if (i + 1) % every else "full_attention" for i in range(layers)
            ]
            self.window = [c.get("sliding_window", 4096) if t == "sliding_attention" else None for t in types]
        if self.gemma3:
            self.local_inv, _ = rope_params({"rope_theta": c["rope_local_base_freq"]}, self.D)
        if arch == "SmolLM3ForCausalLM":
            # SmolLM3Attention.use_rope = config.no_rope_layers[i]; the default list leaves out every
            # no_rope_layer_interval-th layer.
            every = c.get("no_rope_layer_interval", 4)
            self.use_rope = c.get("no_rope_layers") or [int((i + 1) % every != 0) for i in range(layers)]
        else:
            self.use_rope = [1] * layers
        if self.exaone4 and c.get("sliding_window", 4096) is not None:
            every = c.get("sliding_window_pattern", 4)
            types = c.get("layer_types") or [
                "sliding_attention" if (i + 1) % every else "full_attention" for i in range(layers)
            ]
            self.window = [c.get("sliding_window", 4096) if t == "sliding_attention" else None for t in types]
            self.use_rope = [int(w is not None) for w in self.window]

    def norm(self, x, name):
        if self.olmo:
            return layer_norm(x, 1.0, 0.0, 1e-5)
        w = self.w[f"{name}.weight"]
        if self.layer_norm:
            return layer_norm(x, w, 0.0 if self.cohere else self.w[f"{name}.bias"], self.eps)
        return rms_norm(x, 1.0 + w if self.gemma or self.gemma1 else w, self.eps)

    def moe_layer(self, i):
        # transformers' Qwen MoE: dense in mlp_only_layers and off the decoder_sparse_step grid.
        c = self.cfg
        if self.ernie_moe:
            end = c.get("moe_layer_end_index", -1)
            end = c["num_hidden_layers"] - 1 if end == -1 else end
            return (i + 1) % c.get("moe_layer_interval", 1) == 0 and c.get("moe_layer_start_index", 1) <= i <= end
        return i not in c.get("mlp_only_layers", []) and (i + 1) % c.get("decoder_sparse_step", 1) == 0

    def moe_ffn(self, h, p):
        """The softmax of the router's logits over all experts; each token's num_experts_per_tok best
        experts (SwiGLU FFNs) summed with those weights, renormalized to sum to 1 by Mixtral and with
        norm_topk_prob; Qwen2-MoE adds its shared expert times sigmoid(shared_expert_gate · h)."""
        c, w = self.cfg, self.w
        if self.granite_moe:
            return self.granite_moe_ffn(h, p)
        mixtral = self.arch in ("MixtralForCausalLM", "PhimoeForCausalLM")
        block = f"{p}.block_sparse_moe" if mixtral else f"{p}.mlp"
        gate, up, down = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
        swiglu = lambda x, e: self.lin(
            (lambda g: g / (1.0 + np.exp(-g)))(self.lin(x, f"{e}.{gate}", False)) * self.lin(x, f"{e}.{up}", False),
            f"{e}.{down}", False)
        z = self.lin(h, f"{block}.gate", False)
        prob = np.exp(z - z.max(axis=-1, keepdims=True))
        prob /= prob.sum(axis=-1, keepdims=True)
        k = c["moe_k"] if self.ernie_moe else c["num_experts_per_tok"]
        key = prob + w[f"{block}.moe_statics.e_score_correction_bias"][0] if self.ernie_moe else prob
        out = np.zeros_like(h)
        for t in range(len(h)):
            top = np.argsort(-key[t], kind="stable")[:k]
            wt = prob[t][top]
            if self.phimoe:
                top, wt = sparsemixer(z[t], c.get("router_jitter_noise", 0.01))
            elif self.ernie_moe:
                wt = wt / max(wt.sum(), c.get("moe_norm_min", 1e-12))
            elif mixtral or c.get("norm_topk_prob", False):
                wt = wt / wt.sum()
            for e, we in zip(top, wt):
                out[t] += we * swiglu(h[t : t + 1], f"{block}.experts.{e}")[0]
        if f"{block}.shared_expert_gate.weight" in w:
            s = self.lin(h, f"{block}.shared_expert_gate", False)
            out += swiglu(h, f"{block}.shared_expert") / (1.0 + np.exp(-s))
        if f"{block}.shared_experts.gate_proj.weight" in w:
            out += swiglu(h, f"{block}.shared_experts")
        return out

    def granite_moe_ffn(self, h, p):
        """GraniteMoE: the router's top num_experts_per_tok logits, softmaxed over those; each expert's
        rows of the stacked input_linear [E, 2F, H] (gate, then up) and output_linear [E, H, F];
        GraniteMoeShared adds shared_mlp (the same split) unscaled."""
        c, w = self.cfg, self.w
        silu = lambda g: g / (1.0 + np.exp(-g))
        glu = lambda x, wi, wo: (lambda gu: silu(gu[:, : gu.shape[1] // 2]) * gu[:, gu.shape[1] // 2 :])(x @ wi.T) @ wo.T
        block = f"{p}.block_sparse_moe"
        z = h @ w[f"{block}.router.layer.weight"].T
        k = c["num_experts_per_tok"]
        wi, wo = w[f"{block}.input_linear.weight"], w[f"{block}.output_linear.weight"]
        out = np.zeros_like(h)
        for t in range(len(h)):
            top = np.argsort(-z[t], kind="stable")[:k]
            g = np.exp(z[t][top] - z[t][top].max())
            g /= g.sum()
            for e, ge in zip(top, g):
                out[t] += ge * glu(h[t : t + 1], wi[e], wo[e])[0]
        if f"{p}.shared_mlp.input_linear.weight" in w:
            out += glu(h, w[f"{p}.shared_mlp.input_linear.weight"], w[f"{p}.shared_mlp.output_linear.weight"])
        return out

    def lin(self, x, name, bias):
        y = x @ self.w[f"{name}.weight"].T
        return y + self.w[f"{name}.bias"] if bias else y

    def attend(self, q, k, v, mask):
        # q, k, v [T, heads, D] (rotated): softmax(q k^T / sqrt(D) + mask) v, as [T, heads * D].
        s = np.einsum("tad,sad->ats", q, k) / np.sqrt(self.D) + mask
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        return np.einsum("ats,sad->tad", s, v).reshape(len(q), -1)

    def neox_logits(self, ids):
        A, D = self.A, self.D
        T = len(ids)
        pos = np.arange(T, dtype=np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        x = self.w["gpt_neox.embed_in.weight"][ids]
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"gpt_neox.layers.{i}"
            bias = self.cfg.get("attention_bias", True)
            h = self.norm(x, f"{p}.input_layernorm")
            qkv = self.lin(h, f"{p}.attention.query_key_value", bias).reshape(T, A, 3 * D)
            q, k, v = qkv[..., :D], qkv[..., D : 2 * D], qkv[..., 2 * D :]
            att = self.attend(rotate(q, pos, self.inv), rotate(k, pos, self.inv), v, mask)
            o = self.lin(att, f"{p}.attention.dense", bias)
            mlp = lambda y: self.lin(gelu_erf(self.lin(y, f"{p}.mlp.dense_h_to_4h", True)), f"{p}.mlp.dense_4h_to_h", True)
            if self.cfg.get("use_parallel_residual", True):
                x = x + o + mlp(self.norm(x, f"{p}.post_attention_layernorm"))
            else:
                x = x + o
                x = x + mlp(self.norm(x, f"{p}.post_attention_layernorm"))
        return self.norm(x, "gpt_neox.final_layer_norm") @ self.head.T

    def gptj_logits(self, ids):
        A, D = self.A, self.D
        T = len(ids)
        pos = np.arange(T, dtype=np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        x = self.w["transformer.wte.weight"][ids]
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"transformer.h.{i}"
            h = self.norm(x, f"{p}.ln_1")
            q, k, v = (self.lin(h, f"{p}.attn.{n}_proj", False).reshape(T, A, D) for n in "qkv")
            att = self.attend(rotate_pairs(q, pos, self.inv), rotate_pairs(k, pos, self.inv), v, mask)
            mlp = self.lin(gelu_tanh(self.lin(h, f"{p}.mlp.fc_in", True)), f"{p}.mlp.fc_out", True)
            x = x + self.lin(att, f"{p}.attn.out_proj", False) + mlp
        z = self.norm(x, "transformer.ln_f") @ self.head.T
        return z + self.w["lm_head.bias"] if "lm_head.bias" in self.w else z

    def internlm2_logits(self, ids):
        A, K, D = self.A, self.K, self.D
        G = A // K
        T = len(ids)
        pos = np.arange(T, dtype=np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        bias = self.cfg.get("bias", True)
        x = self.w["model.tok_embeddings.weight"][ids]
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{i}"
            h = self.norm(x, f"{p}.attention_norm")
            qkv = self.lin(h, f"{p}.attention.wqkv", bias).reshape(T, K, G + 2, D)
            q = qkv[:, :, :G, :].reshape(T, A, D)  # head j is group j // G
            k, v = qkv[:, :, G, :], qkv[:, :, G + 1, :]
            k, v = np.repeat(k, G, axis=1), np.repeat(v, G, axis=1)
            att = self.attend(rotate(q, pos, self.inv), rotate(k, pos, self.inv), v, mask)
            x = x + self.lin(att, f"{p}.attention.wo", bias)
            h = self.norm(x, f"{p}.ffn_norm")
            g, u = self.lin(h, f"{p}.feed_forward.w1", False), self.lin(h, f"{p}.feed_forward.w3", False)
            x = x + self.lin(g / (1.0 + np.exp(-g)) * u, f"{p}.feed_forward.w2", False)
        return self.norm(x, "model.norm") @ self.head.T

    def logits(self, ids):
        """Logits of every position of ids (the whole sequence, causal)."""
        if self.internlm2:
            return self.internlm2_logits(ids)
        if self.gptj:
            return self.gptj_logits(ids)
        if self.neox:
            return self.neox_logits(ids)
        w, A, K, D = self.w, self.A, self.K, self.D
        T = len(ids)
        pos = np.arange(T, dtype=np.float64)
        x = w["model.embed_tokens.weight"][ids] * (np.sqrt(self.H) if self.gemma or self.gemma1 else self.embed_mult)
        r = self.residual_mult
        causal = np.triu(np.full((T, T), -np.inf), 1)
        for i in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{i}"
            mask = causal
            if self.window[i]:  # key j is visible to query t when t - window < j <= t
                mask = causal + np.tril(np.full((T, T), -np.inf), -self.window[i])
            h = x if self.post_norms else self.norm(x, f"{p}.input_layernorm")
            if self.phi3:
                qkv = self.lin(h, f"{p}.self_attn.qkv_proj", False)
                q, k, v = np.split(qkv, [A * D, (A + K) * D], axis=-1)
                q, k, v = q.reshape(T, A, D), k.reshape(T, K, D), v.reshape(T, K, D)
            elif self.olmo2 or self.olmoe:
                q = self.norm(self.lin(h, f"{p}.self_attn.q_proj", self.bias), f"{p}.self_attn.q_norm").reshape(T, A, D)
                k = self.norm(self.lin(h, f"{p}.self_attn.k_proj", self.bias), f"{p}.self_attn.k_norm").reshape(T, K, D)
                v = self.lin(h, f"{p}.self_attn.v_proj", self.bias).reshape(T, K, D)
            else:
                q = self.lin(h, f"{p}.self_attn.q_proj", self.bias).reshape(T, A, D)
                k = self.lin(h, f"{p}.self_attn.k_proj", self.bias).reshape(T, K, D)
                v = self.lin(h, f"{p}.self_attn.v_proj", self.bias).reshape(T, K, D)
            if self.qk_norm:
                q = self.norm(q, f"{p}.self_attn.q_norm")
                k = self.norm(k, f"{p}.self_attn.k_norm")
            if self.glm or self.ernie:
                q, k = rotate_pairs(q, pos, self.inv), rotate_pairs(k, pos, self.inv)
            elif self.cohere:
                if self.window[i] or not self.cohere2:
                    q, k = rotate_pairs(q, pos, self.inv), rotate_pairs(k, pos, self.inv)
            elif self.use_rope[i]:
                inv = self.local_inv if self.window[i] else self.inv
                q, k = rotate(q, pos, inv, self.m), rotate(k, pos, inv, self.m)
            k = np.repeat(k, A // K, axis=1)  # head j uses key/value head j // (A / K)
            v = np.repeat(v, A // K, axis=1)
            s = np.einsum("tad,sad->ats", q, k) * self.scale
            if self.att_cap:
                s = self.att_cap * np.tanh(s / self.att_cap)
            s = s + mask
            s = np.exp(s - s.max(axis=-1, keepdims=True))
            s /= s.sum(axis=-1, keepdims=True)
            att = np.einsum("ats,sad->tad", s, v).reshape(T, A * D)
            if self.phi:
                f = self.lin(gelu_tanh(self.lin(h, f"{p}.mlp.fc1", True)), f"{p}.mlp.fc2", True)
                x = x + self.lin(att, f"{p}.self_attn.dense", True) + f
                continue
            o = self.lin(att, f"{p}.self_attn.o_proj", self.bias and not (self.qwen2 or self.stablelm or self.glm))
            if self.glm4:
                o = self.norm(o, f"{p}.post_self_attn_layernorm")
            if self.cohere:  # the MLP reads the same normed input h as attention
                g, u = self.lin(h, f"{p}.mlp.gate_proj", False), self.lin(h, f"{p}.mlp.up_proj", False)
                x = x + o + self.lin(g / (1.0 + np.exp(-g)) * u, f"{p}.mlp.down_proj", False)
                continue
            x = x + (self.norm(o, f"{p}.post_attention_layernorm") if self.gemma or self.post_norms else r * o)
            if self.post_norms:
                h = x
            else:
                h = self.norm(x, f"{p}.pre_feedforward_layernorm" if self.gemma else f"{p}.post_attention_layernorm")
            if self.starcoder2:
                f = self.lin(gelu_tanh(self.lin(h, f"{p}.mlp.c_fc", self.bias)), f"{p}.mlp.c_proj", self.bias)
                x = x + f
                continue
            if self.moe and self.moe_layer(i):
                x = x + r * self.moe_ffn(h, p)
                continue
            if self.phi3 or self.glm:
                g, u = np.split(self.lin(h, f"{p}.mlp.gate_up_proj", False), 2, axis=-1)
            else:
                g = self.lin(h, f"{p}.mlp.gate_proj", False)
                u = self.lin(h, f"{p}.mlp.up_proj", False)
            act = gelu_tanh(g) if self.gemma or self.gemma1 else g / (1.0 + np.exp(-g))
            f = self.lin(act * u, f"{p}.mlp.down_proj", False)
            if self.glm4:
                f = self.norm(f, f"{p}.post_mlp_layernorm")
            x = x + (self.norm(f, f"{p}.post_feedforward_layernorm") if self.gemma or self.post_norms else r * f)
        if self.phi:
            return self.norm(x, "model.final_layernorm") @ self.head.T + self.w["lm_head.bias"]
        if self.cohere:
            return self.norm(x, "model.norm") @ self.head.T * self.cfg.get("logit_scale", 0.0625)
        z = self.norm(x, "model.norm") @ self.head.T / self.logits_div
        if self.phimoe and "lm_head.bias" in self.w:
            z = z + self.w["lm_head.bias"]
        return self.final_cap * np.tanh(z / self.final_cap) if self.final_cap else z


def sparsemixer(z, eps):
    """transformers' sparsemixer at inference, for one token's router logits z: twice, the best remaining
    expert, weighted by its softmax probability over the remaining experts e with
    (best - z_e) / max(|z_e|, best) <= 2 eps."""
    z = z.copy()
    top, wt = [], []
    for _ in range(2):
        e = int(np.argmax(z))
        best = z[e]
        keep = (best - z) / np.maximum(np.abs(z), best) <= 2 * eps
        g = np.where(keep, np.exp(z - best), 0.0)
        top.append(e)
        wt.append(1.0 / g.sum())
        z[e] = -np.inf
    return np.array(top), np.array(wt)


def generate(model, prompt, steps):
    prompt_ids = list(prompt.encode("utf-8"))
    ids, tops, margins = [], [], []
    for _ in range(steps):
        z = model.logits(np.array(prompt_ids + ids))[-1]
        lp = z - z.max() - np.log(np.exp(z - z.max()).sum())
        order = np.argsort(-z, kind="stable")
        ids.append(int(order[0]))
        tops.append([[int(j), float(lp[j])] for j in order[:5]])
        margins.append(float(z[order[0]] - z[order[1]]))
    return {"prompt": prompt, "prompt_ids": prompt_ids, "ids": ids, "top_logprobs": tops, "margins": margins}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--prompt", default="The quick brown fox jumps over")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--check", action="store_true", help="compare with MODEL/expected.json instead")
    a = ap.parse_args()
    folder = Path(a.model)
    model = Model(folder)
    if not a.check:
        json.dump(generate(model, a.prompt, a.steps), sys.stdout, indent=1)
        print()
        return
    want = json.loads((folder / "expected.json").read_text())
    got = generate(model, want["prompt"], len(want["ids"]))
    worst = max(
        abs(g[1] - w[1]) for gs, ws in zip(got["top_logprobs"], want["top_logprobs"]) for g, w in zip(gs, ws)
    )
    same = got["ids"] == want["ids"]
    print(f"{folder.name}: greedy ids {'agree' if same else 'DIFFER'}, max |log-prob difference| {worst:.2e}")
    sys.exit(0 if same and worst < 1e-6 else 1)


if __name__ == "__main__":
    main()
