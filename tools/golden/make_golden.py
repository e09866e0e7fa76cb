#!/usr/bin/env python3
"""Makes a tiny golden model of the Llama family the way ../shared/golden's are made: weights that
give clear greedy margins (embeddings N(0, 1), matrices N(0, 9 / fan_in), norm weights 1 + N(0, 0.1);
with std 1 / sqrt(fan_in) the tied head kept repeating one token), the byte tokenizer copied from a
shared golden folder, and expected.json from reference.py.

    python3 tools/golden/make_golden.py qwen3 test/golden/qwen3-bf16 --tokenizer-from ../shared/golden/llama-bf16
    (phi3-partial goes to test/golden/phi3-partial-bf16)

qwen3, smollm3, phi3, phi3-partial, gemma2, gemma3, granite, olmo2, llama-yarn, stablelm, gemma, phi, gptneox, starcoder2, cohere, cohere2, glm, glm4, ernie, exaone4, gptj, internlm2, olmo, minicpm, mixtral, qwen2moe, qwen3moe, olmoe, granitemoe, erniemoe and phimoe are defined: the shared folders cover the other
architectures.
"""
import argparse
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

# What the three configs share: the golden size (hidden 64, 4 heads over 2 key/value heads, vocab 257
# for the byte tokenizer, token 256 as bos and eos) and bf16 weights.
BASE = dict(
    hidden_size=64,
    intermediate_size=192,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=257,
    max_position_embeddings=512,
    rope_theta=10000.0,
    rope_scaling=None,
    hidden_act="silu",
    attention_bias=False,
    sliding_window=None,
    bos_token_id=256,
    eos_token_id=256,
    torch_dtype="bfloat16",
)

SHAPES = {
    # Fused qkv_proj / gate_up_proj, and longrope: 1024 positions over an original 256, so the short
    # factors and an attention factor of sqrt(1 + ln 4 / ln 256) apply.
    "phi3": dict(
        BASE,
        architectures=["Phi3ForCausalLM"],
        model_type="phi3",
        max_position_embeddings=1024,
        original_max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_scaling=dict(
            type="longrope",
            short_factor=[1.0, 1.02, 1.1, 1.3, 1.6, 2.0, 2.6, 3.2],
            long_factor=[1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 13.0, 18.0],
        ),
        tie_word_embeddings=False,
    ),
    # Phi-4-mini's form: 3/4 of each head rotated (12 of 16 dims), longrope's attention factor on the
    # rotated dims only, a tied head.
    "phi3-partial": dict(
        BASE,
        architectures=["Phi3ForCausalLM"],
        model_type="phi3",
        max_position_embeddings=2048,
        original_max_position_embeddings=256,
        partial_rotary_factor=0.75,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling=dict(
            type="longrope",
            short_factor=[1.0, 1.05, 1.2, 1.5, 2.0, 3.0],
            long_factor=[1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
        ),
        tie_word_embeddings=True,
    ),
    # 4 layers: the 4th has no rotary step (no_rope_layers), as every 4th layer of SmolLM3-3B.
    "smollm3": dict(
        BASE,
        architectures=["SmolLM3ForCausalLM"],
        model_type="smollm3",
        num_hidden_layers=4,
        head_dim=16,
        rms_norm_eps=1e-6,
        rope_theta=5000000.0,
        mlp_bias=False,
        no_rope_layers=[1, 1, 1, 0],
        no_rope_layer_interval=4,
        use_sliding_window=False,
        tie_word_embeddings=True,
    ),
    # Gemma 3: 8-position windows in layers 0, 1 and 3 (the prompt and steps run to 46 positions), a
    # global layer 2 with its own rotary base, query_pre_attn_scalar 24 (not head_dim), GELU gated FFN.
    "gemma3": dict(
        BASE,
        architectures=["Gemma3ForCausalLM"],
        model_type="gemma3_text",
        num_hidden_layers=4,
        head_dim=32,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        rope_local_base_freq=10000.0,
        hidden_act=None,
        hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=24,
        sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "full_attention", "sliding_attention"],
        final_logit_softcapping=None,
        attn_logit_softcapping=None,
        tie_word_embeddings=True,
    ),
    # Gemma 2: windows in layers 0 and 2, soft caps that bite (uncapped, scores reach the hundreds and
    # logits 31 here; Gemma 2 ships 50 and 30), no q/k norms.
    "gemma2": dict(
        BASE,
        architectures=["Gemma2ForCausalLM"],
        model_type="gemma2",
        num_hidden_layers=4,
        head_dim=32,
        rms_norm_eps=1e-6,
        rope_theta=10000.0,
        hidden_act=None,
        hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=32,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        attn_logit_softcapping=10.0,
        final_logit_softcapping=20.0,
        tie_word_embeddings=True,
    ),
    # Granite's four muP multipliers, each far enough from 1 to matter: embeddings x2, block outputs
    # x0.5 before their residual adds, attention scores x1/16 (not 1/sqrt(16)), logits /4. A norm eps
    # of 0.25 (real ones: 1e-5) makes the norms' eps show in the outputs: the engine folds r into it.
    "granite": dict(
        BASE,
        architectures=["GraniteForCausalLM"],
        model_type="granite",
        rms_norm_eps=0.25,
        embedding_multiplier=2.0,
        residual_multiplier=0.5,
        attention_multiplier=0.0625,
        logits_scaling=4.0,
        mlp_bias=False,
        tie_word_embeddings=True,
    ),
    # YaRN: factor 4 over an original 64 positions; with head_dim 16 the ramp runs over dimensions 0-3
    # (frequency 0 kept, 1 and 2 blended, the rest divided by 4), cos and sin times 0.1 ln 4 + 1.
    "llama-yarn": dict(
        BASE,
        architectures=["LlamaForCausalLM"],
        model_type="llama",
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=64),
        tie_word_embeddings=False,
    ),
    # StableLM 2: LayerNorms with biases, q/k/v biases (o_proj none), the rotary step on a quarter of
    # each head (4 of 16 dims), no rms_norm_eps.
    "stablelm": dict(
        {k: v for k, v in BASE.items() if k != "attention_bias"},
        architectures=["StableLmForCausalLM"],
        model_type="stablelm",
        layer_norm_eps=1e-5,
        partial_rotary_factor=0.25,
        use_qkv_bias=True,
        qk_layernorm=False,
        use_parallel_residual=False,
        tie_word_embeddings=False,
    ),
    # Phi-2's form: attention and an ungated GELU (tanh) MLP side by side on one LayerNorm, biases on
    # every projection and the head, 0.4 of each head rotated (int(16 * 0.4) = 6 dims), four heads.
    "phi": dict(
        {k: v for k, v in BASE.items() if k not in ("attention_bias", "sliding_window")},
        architectures=["PhiForCausalLM"],
        model_type="phi",
        num_key_value_heads=4,
        hidden_act="gelu_new",
        layer_norm_eps=1e-5,
        partial_rotary_factor=0.4,
        qk_layernorm=False,
        tie_word_embeddings=False,
    ),
    # Pythia's form (transformers 4.x names): two LayerNorms side by side, q/k/v fused head by head,
    # a quarter of each head rotated (4 of 16 dims), exact GELU, four heads, an untied embed_out.
    "gptneox": dict(
        architectures=["GPTNeoXForCausalLM"],
        model_type="gpt_neox",
        hidden_size=64,
        intermediate_size=192,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=257,
        max_position_embeddings=512,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        use_parallel_residual=True,
        attention_bias=True,
        tie_word_embeddings=False,
        bos_token_id=256,
        eos_token_id=256,
        torch_dtype="bfloat16",
    ),
    # StarCoder2: LayerNorms (norm_epsilon), biases on every projection, an ungated GELU (tanh) MLP,
    # GQA 4/2, an 8-position window in every layer (the run is 46 positions long), a tied head.
    "starcoder2": dict(
        {k: v for k, v in BASE.items() if k not in ("attention_bias", "hidden_act")},
        architectures=["Starcoder2ForCausalLM"],
        model_type="starcoder2",
        hidden_act="gelu_pytorch_tanh",
        norm_epsilon=1e-5,
        use_bias=True,
        sliding_window=8,
        tie_word_embeddings=True,
    ),
    # Cohere (Aya 23): attention and SwiGLU side by side on one bias-free LayerNorm, adjacent rotary
    # pairs, logits times 0.5 (Aya's 0.0625 leaves these weights margins of 0.004), a tied head, GQA 4/2.
    "cohere": dict(
        BASE,
        architectures=["CohereForCausalLM"],
        model_type="cohere",
        layer_norm_eps=1e-5,
        logit_scale=0.5,
        use_qk_norm=False,
        tie_word_embeddings=True,
    ),
    # Cohere 2 (Command R7B): Cohere's block with 8-position windows and the rotary step in 3 of 4
    # layers, as layer_types lists them (4 layers: the 4th global, without positions).
    "cohere2": dict(
        BASE,
        architectures=["Cohere2ForCausalLM"],
        model_type="cohere2",
        num_hidden_layers=4,
        layer_norm_eps=1e-5,
        logit_scale=0.5,
        sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
        tie_word_embeddings=True,
    ),
    # EXAONE 4.0: OLMo 2's norms after the blocks, per-head q/k norms, 8-position windows and the
    # rotary step in 3 of 4 layers (sliding_window_pattern), an untied head (tied, the greedy run
    # repeats one token, as with OLMo 2).
    "exaone4": dict(
        BASE,
        architectures=["Exaone4ForCausalLM"],
        model_type="exaone4",
        num_hidden_layers=4,
        rms_norm_eps=1e-5,
        rope_theta=1000000.0,
        sliding_window=8,
        sliding_window_pattern=4,
        tie_word_embeddings=False,
    ),
    # ERNIE 4.5: the Llama block with the rotary step on adjacent pairs (head_dim given: its config
    # class defaults to 128), a tied head.
    "ernie": dict(
        {k: v for k, v in BASE.items() if k != "attention_bias"},
        architectures=["Ernie4_5ForCausalLM"],
        model_type="ernie4_5",
        head_dim=16,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        use_bias=False,
        tie_word_embeddings=True,
    ),
    # GLM-4: q/k/v biases, fused gate_up_proj, half of each head (8 of 16 dims) rotated in adjacent
    # pairs. GLM-4-0414 (glm4) adds norms after the attention and the MLP.
    "glm": dict(
        BASE,
        architectures=["GlmForCausalLM"],
        model_type="glm",
        head_dim=16,  # GlmConfig's default is 128, not hidden / heads
        rms_norm_eps=1e-5,
        partial_rotary_factor=0.5,
        attention_bias=True,
        tie_word_embeddings=False,
    ),
    "glm4": dict(
        BASE,
        architectures=["Glm4ForCausalLM"],
        model_type="glm4",
        head_dim=16,  # GlmConfig's default is 128, not hidden / heads
        rms_norm_eps=1e-5,
        partial_rotary_factor=0.5,
        attention_bias=True,
        tie_word_embeddings=False,
    ),
    # GPT-J: one LayerNorm for attention and MLP side by side, 8 of 16 head dims rotated in adjacent
    # pairs, biases on fc_in, fc_out and the untied head, four heads.
    "gptj": dict(
        architectures=["GPTJForCausalLM"],
        model_type="gptj",
        n_embd=64,
        n_inner=192,
        n_layer=2,
        n_head=4,
        n_positions=512,
        rotary_dim=8,
        vocab_size=257,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=False,
        bos_token_id=256,
        eos_token_id=256,
        torch_dtype="bfloat16",
    ),
    # InternLM2.5: q/k/v in one wqkv grouped by key/value head (two q heads each), dynamic NTK rope
    # scaling (the base frequencies up to max_position_embeddings), an untied output head.
    "internlm2": dict(
        {k: v for k, v in BASE.items() if k not in ("attention_bias", "sliding_window")},
        architectures=["InternLM2ForCausalLM"],
        model_type="internlm2",
        rms_norm_eps=1e-5,
        rope_theta=1000000.0,
        rope_scaling=dict(type="dynamic", factor=2.0),
        bias=False,
        tie_word_embeddings=False,
    ),
    # Gemma (1): (1 + w) norms, embeddings times sqrt(hidden), GELU (tanh), one key/value head as
    # gemma-2b, head_dim 32 (not hidden / heads), 1/sqrt(head_dim) attention.
    "gemma": dict(
        BASE,
        architectures=["GemmaForCausalLM"],
        model_type="gemma",
        num_key_value_heads=1,
        head_dim=32,
        rms_norm_eps=1e-6,
        hidden_act="gelu",
        hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True,
    ),
    # MiniCPM: muP multipliers (embeddings times 12, block outputs times 1.4 / sqrt(2), the final state
    # divided by 64 / 16 = 4), an untied head (tied, the greedy run repeats one token).
    "minicpm": dict(
        BASE,
        architectures=["MiniCPMForCausalLM"],
        model_type="minicpm",
        rms_norm_eps=1e-5,
        scale_emb=12,
        scale_depth=1.4,
        dim_model_base=16,
        tie_word_embeddings=False,
    ),
    # OLMo (1): LayerNorms without weight or bias, MHA, an untied head.
    "olmo": dict(
        BASE,
        architectures=["OlmoForCausalLM"],
        model_type="olmo",
        num_key_value_heads=4,
        clip_qkv=None,
        tie_word_embeddings=False,
    ),
    # OLMo 2: norms after the attention and FFN blocks and none before, q/k norms over each token's
    # whole projection (64 and 32 wide here), an untied head.
    "olmo2": dict(
        BASE,
        architectures=["Olmo2ForCausalLM"],
        model_type="olmo2",
        rms_norm_eps=1e-6,
        rope_theta=500000.0,
        tie_word_embeddings=False,
    ),
    # Mixtures of experts (moe_tensors): Mixtral renormalizes its top 2 of 4 experts' weights.
    "mixtral": dict(
        BASE,
        architectures=["MixtralForCausalLM"],
        model_type="mixtral",
        intermediate_size=96,
        num_local_experts=4,
        num_experts_per_tok=2,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    # Qwen2-MoE: q/k/v biases, 4 experts of 48 (top 2, weights not renormalized), a shared expert of 96
    # behind a sigmoid gate, and layer 1 of 3 a dense FFN of intermediate_size (mlp_only_layers), 80:
    # narrower than the shared expert, so the widest FFN is not the dense layers' width.
    "qwen2moe": dict(
        BASE,
        intermediate_size=80,
        architectures=["Qwen2MoeForCausalLM"],
        model_type="qwen2_moe",
        num_hidden_layers=3,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=48,
        shared_expert_intermediate_size=96,
        norm_topk_prob=False,
        decoder_sparse_step=1,
        mlp_only_layers=[1],
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        use_sliding_window=False,
        tie_word_embeddings=False,
    ),
    # Qwen3-MoE: per-head q/k norms (head_dim 32), 8 experts of 64, top 2 renormalized.
    "qwen3moe": dict(
        BASE,
        architectures=["Qwen3MoeForCausalLM"],
        model_type="qwen3_moe",
        head_dim=32,
        num_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=64,
        norm_topk_prob=True,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        use_sliding_window=False,
        tie_word_embeddings=False,
    ),
    # OLMoE: q/k norms over whole projections (MHA: 64 and 64 wide), 8 experts of 64, top 2 as they are.
    "olmoe": dict(
        BASE,
        architectures=["OlmoeForCausalLM"],
        model_type="olmoe",
        num_key_value_heads=4,
        intermediate_size=64,
        num_experts=8,
        num_experts_per_tok=2,
        norm_topk_prob=False,
        clip_qkv=None,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    ),
    # GraniteMoeShared: Granite's multipliers, 4 experts of 48 stacked in input_linear/output_linear (top 2,
    # softmax over the chosen logits), a shared MLP of 64 added unscaled, a tied head.
    "granitemoe": dict(
        BASE,
        architectures=["GraniteMoeSharedForCausalLM"],
        model_type="granitemoeshared",
        intermediate_size=48,
        shared_intermediate_size=64,
        num_local_experts=4,
        num_experts_per_tok=2,
        rms_norm_eps=1e-6,
        embedding_multiplier=2.0,
        residual_multiplier=0.5,
        attention_multiplier=0.0625,
        logits_scaling=4.0,
        tie_word_embeddings=True,
    ),
    # ERNIE 4.5 MoE: adjacent rotary pairs, layer 0 dense (moe_layer_start_index 1), 6 experts of 32, top 2
    # chosen by probability + a correction bias (stored F32 with the router, as transformers keeps them),
    # 2 shared experts (one FFN of 64), 3 layers.
    "erniemoe": dict(
        BASE,
        architectures=["Ernie4_5_MoeForCausalLM"],
        model_type="ernie4_5_moe",
        num_hidden_layers=3,
        head_dim=16,
        moe_num_experts=6,
        moe_k=2,
        moe_intermediate_size=32,
        moe_num_shared_experts=2,
        moe_layer_start_index=1,
        moe_layer_end_index=-1,
        moe_layer_interval=1,
        use_bias=False,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        tie_word_embeddings=False,
    ),
    # Phi-3.5-MoE: 4 experts of 96 routed by sparsemixer (a jitter window of 0.3, so its softmax spans
    # several experts), LayerNorms with biases, q/k/v/o biases, a biased head, longrope (1024 positions
    # over 256: short factors, cos/sin times short_mscale).
    "phimoe": dict(
        BASE,
        architectures=["PhimoeForCausalLM"],
        model_type="phimoe",
        intermediate_size=96,
        num_local_experts=4,
        num_experts_per_tok=2,
        router_jitter_noise=0.3,
        attention_bias=True,
        lm_head_bias=True,
        rms_norm_eps=1e-5,
        max_position_embeddings=1024,
        original_max_position_embeddings=256,
        rope_scaling=dict(
            type="longrope",
            short_factor=[1.0, 1.05, 1.1, 1.3, 1.6, 2.0, 2.6, 3.2],
            long_factor=[1.0, 1.5, 2.5, 4.0, 6.0, 9.0, 13.0, 18.0],
            short_mscale=1.2,
            long_mscale=1.2,
            original_max_position_embeddings=256,
        ),
        tie_word_embeddings=False,
    ),
    # head_dim 32 with 4 heads: q is 128 wide against a hidden size of 64, as in Qwen3 (2048 vs 1024).
    "qwen3": dict(
        BASE,
        architectures=["Qwen3ForCausalLM"],
        model_type="qwen3",
        head_dim=32,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,
        use_sliding_window=False,
        tie_word_embeddings=True,
    ),
}


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    bits = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def neox_tensors(c: dict, rng: np.random.Generator) -> dict:
    H, F, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    mat = lambda out, inp: rng.normal(0, 3 / np.sqrt(inp), (out, inp))
    t = {"gpt_neox.embed_in.weight": rng.normal(0, 1, (V, H))}
    for i in range(c["num_hidden_layers"]):
        p = f"gpt_neox.layers.{i}"
        for n in ("input_layernorm", "post_attention_layernorm"):
            t[f"{p}.{n}.weight"] = 1 + rng.normal(0, 0.1, (H,))
            t[f"{p}.{n}.bias"] = rng.normal(0, 0.1, (H,))
        for name, rows, cols in (("attention.query_key_value", 3 * H, H), ("attention.dense", H, H),
                                 ("mlp.dense_h_to_4h", F, H), ("mlp.dense_4h_to_h", H, F)):
            t[f"{p}.{name}.weight"] = mat(rows, cols)
            t[f"{p}.{name}.bias"] = rng.normal(0, 0.5, (rows,))
    t["gpt_neox.final_layer_norm.weight"] = 1 + rng.normal(0, 0.1, (H,))
    t["gpt_neox.final_layer_norm.bias"] = rng.normal(0, 0.1, (H,))
    t["embed_out.weight"] = mat(V, H)
    return t


def gptj_tensors(c: dict, rng: np.random.Generator) -> dict:
    H, F, V = c["n_embd"], c["n_inner"], c["vocab_size"]
    mat = lambda out, inp: rng.normal(0, 3 / np.sqrt(inp), (out, inp))
    t = {"transformer.wte.weight": rng.normal(0, 1, (V, H))}
    for i in range(c["n_layer"]):
        p = f"transformer.h.{i}"
        t[f"{p}.ln_1.weight"] = 1 + rng.normal(0, 0.1, (H,))
        t[f"{p}.ln_1.bias"] = rng.normal(0, 0.1, (H,))
        for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t[f"{p}.attn.{n}.weight"] = mat(H, H)
        for name, rows, cols in (("mlp.fc_in", F, H), ("mlp.fc_out", H, F)):
            t[f"{p}.{name}.weight"] = mat(rows, cols)
            t[f"{p}.{name}.bias"] = rng.normal(0, 0.5, (rows,))
    t["transformer.ln_f.weight"] = 1 + rng.normal(0, 0.1, (H,))
    t["transformer.ln_f.bias"] = rng.normal(0, 0.1, (H,))
    t["lm_head.weight"] = mat(V, H)
    t["lm_head.bias"] = rng.normal(0, 0.5, (V,))
    return t


def internlm2_tensors(c: dict, rng: np.random.Generator) -> dict:
    H, F, V, A, K = (c[k] for k in ("hidden_size", "intermediate_size", "vocab_size",
                                     "num_attention_heads", "num_key_value_heads"))
    D = H // A
    mat = lambda out, inp: rng.normal(0, 3 / np.sqrt(inp), (out, inp))
    norm = lambda n: 1 + rng.normal(0, 0.1, (n,))
    t = {"model.tok_embeddings.weight": rng.normal(0, 1, (V, H))}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        t[f"{p}.attention_norm.weight"] = norm(H)
        t[f"{p}.attention.wqkv.weight"] = mat((A + 2 * K) * D, H)
        t[f"{p}.attention.wo.weight"] = mat(H, A * D)
        t[f"{p}.ffn_norm.weight"] = norm(H)
        t[f"{p}.feed_forward.w1.weight"] = mat(F, H)
        t[f"{p}.feed_forward.w3.weight"] = mat(F, H)
        t[f"{p}.feed_forward.w2.weight"] = mat(H, F)
    t["model.norm.weight"] = norm(H)
    t["output.weight"] = mat(V, H)
    return t


def moe_tensors(c: dict, rng: np.random.Generator) -> dict:
    """The Llama block's attention (Qwen2's biases, Qwen3's per-head or OLMoE's whole q/k norms) with
    mixture-of-experts FFNs: a router, each expert's gate/up/down, Qwen2-MoE's shared expert."""
    H, V, A, K = (c[k] for k in ("hidden_size", "vocab_size", "num_attention_heads", "num_key_value_heads"))
    mat = lambda out, inp: rng.normal(0, 3 / np.sqrt(inp), (out, inp))
    norm = lambda n: 1 + rng.normal(0, 0.1, (n,))
    D = c.get("head_dim", H // A)
    kind = c["model_type"]
    phimoe = kind == "phimoe"  # Mixtral's names, with LayerNorm and attention biases and a biased head
    mixtral = kind in ("mixtral", "phimoe")
    granite = kind == "granitemoeshared"
    ernie = kind == "ernie4_5_moe"
    E = c["num_local_experts"] if mixtral or granite else c["moe_num_experts"] if ernie else c["num_experts"]
    F = c.get("moe_intermediate_size", c["intermediate_size"])
    t = {"model.embed_tokens.weight": rng.normal(0, 1, (V, H))}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        t[f"{p}.input_layernorm.weight"] = norm(H)
        if phimoe:
            t[f"{p}.input_layernorm.bias"] = rng.normal(0, 0.1, (H,))
        for name, rows in (("q_proj", A * D), ("k_proj", K * D), ("v_proj", K * D)):
            t[f"{p}.self_attn.{name}.weight"] = mat(rows, H)
            if kind == "qwen2_moe" or phimoe:
                t[f"{p}.self_attn.{name}.bias"] = rng.normal(0, 0.5, (rows,))
        if kind == "qwen3_moe":
            t[f"{p}.self_attn.q_norm.weight"] = norm(D)
            t[f"{p}.self_attn.k_norm.weight"] = norm(D)
        if kind == "olmoe":
            t[f"{p}.self_attn.q_norm.weight"] = norm(A * D)
            t[f"{p}.self_attn.k_norm.weight"] = norm(K * D)
        t[f"{p}.self_attn.o_proj.weight"] = mat(H, A * D)
        if phimoe:
            t[f"{p}.self_attn.o_proj.bias"] = rng.normal(0, 0.5, (H,))
        t[f"{p}.post_attention_layernorm.weight"] = norm(H)
        if phimoe:
            t[f"{p}.post_attention_layernorm.bias"] = rng.normal(0, 0.1, (H,))
        if i in c.get("mlp_only_layers", []) or (ernie and i < c["moe_layer_start_index"]):
            Fd = c["intermediate_size"]
            t[f"{p}.mlp.gate_proj.weight"] = mat(Fd, H)
            t[f"{p}.mlp.up_proj.weight"] = mat(Fd, H)
            t[f"{p}.mlp.down_proj.weight"] = mat(H, Fd)
            continue
        if granite:  # every expert stacked in two tensors; the router under router.layer
            block = f"{p}.block_sparse_moe"
            t[f"{block}.router.layer.weight"] = mat(E, H)
            t[f"{block}.input_linear.weight"] = np.stack([mat(2 * F, H) for _ in range(E)])
            t[f"{block}.output_linear.weight"] = np.stack([mat(H, F) for _ in range(E)])
            S = c["shared_intermediate_size"]
            t[f"{p}.shared_mlp.input_linear.weight"] = mat(2 * S, H)
            t[f"{p}.shared_mlp.output_linear.weight"] = mat(H, S)
            continue
        block = f"{p}.block_sparse_moe" if mixtral else f"{p}.mlp"
        gate, up, down = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
        t[f"{block}.gate.weight"] = mat(E, H)
        for e in range(E):
            t[f"{block}.experts.{e}.{gate}.weight"] = mat(F, H)
            t[f"{block}.experts.{e}.{up}.weight"] = mat(F, H)
            t[f"{block}.experts.{e}.{down}.weight"] = mat(H, F)
        if ernie:  # the correction bias, and the shared experts as one FFN without a gate
            t[f"{block}.moe_statics.e_score_correction_bias"] = rng.normal(0, 0.1, (1, E))
            S = F * c["moe_num_shared_experts"]
            t[f"{block}.shared_experts.gate_proj.weight"] = mat(S, H)
            t[f"{block}.shared_experts.up_proj.weight"] = mat(S, H)
            t[f"{block}.shared_experts.down_proj.weight"] = mat(H, S)
        if "shared_expert_intermediate_size" in c:
            S = c["shared_expert_intermediate_size"]
            t[f"{block}.shared_expert.{gate}.weight"] = mat(S, H)
            t[f"{block}.shared_expert.{up}.weight"] = mat(S, H)
            t[f"{block}.shared_expert.{down}.weight"] = mat(H, S)
            t[f"{block}.shared_expert_gate.weight"] = mat(1, H)
    t["model.norm.weight"] = norm(H)
    if phimoe:
        t["model.norm.bias"] = rng.normal(0, 0.1, (H,))
    if not c["tie_word_embeddings"]:
        t["lm_head.weight"] = mat(V, H)
    if phimoe:
        t["lm_head.bias"] = rng.normal(0, 0.5, (V,))
    return t


def tensors(c: dict, rng: np.random.Generator) -> dict:
    if "num_experts_per_tok" in c or "moe_k" in c:
        return moe_tensors(c, rng)
    if c["model_type"] == "internlm2":
        return internlm2_tensors(c, rng)
    if c["model_type"] == "gpt_neox":
        return neox_tensors(c, rng)
    if c["model_type"] == "gptj":
        return gptj_tensors(c, rng)
    H, F, V, A, K = (c[k] for k in ("hidden_size", "intermediate_size", "vocab_size",
                                     "num_attention_heads", "num_key_value_heads"))
    mat = lambda out, inp: rng.normal(0, 3 / np.sqrt(inp), (out, inp))
    norm = lambda n: 1 + rng.normal(0, 0.1, (n,))
    D = c.get("head_dim", H // A)
    t = {"model.embed_tokens.weight": rng.normal(0, 1, (V, H))}
    gemma = c["model_type"] in ("gemma2", "gemma3_text")
    # Gemma's norms are stored as w and applied as 1 + w. Its block outputs' norms scale by about
    # 2 sqrt(hidden), against embeddings scaled by sqrt(hidden), so the blocks are not drowned by the
    # residual: with 1 + w near 1 the tied head kept repeating the last input token, with sqrt(hidden)
    # one token for all 16 steps.
    shift = 1 if gemma or c["model_type"] == "gemma" else 0
    post = lambda n: 2 * np.sqrt(H) * norm(n) - 1
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        olmo2 = c["model_type"] in ("olmo2", "exaone4")  # norms after the blocks
        if not olmo2 and c["model_type"] != "olmo":
            t[f"{p}.input_layernorm.weight"] = norm(H) - shift
        if c["model_type"] in ("glm", "glm4"):  # q/k/v biases; gate_up_proj; glm4: post norms
            for name, rows in (("q_proj", A * D), ("k_proj", K * D), ("v_proj", K * D)):
                t[f"{p}.self_attn.{name}.weight"] = mat(rows, H)
                t[f"{p}.self_attn.{name}.bias"] = rng.normal(0, 0.5, (rows,))
            t[f"{p}.self_attn.o_proj.weight"] = mat(H, A * D)
            t[f"{p}.post_attention_layernorm.weight"] = norm(H)
            t[f"{p}.mlp.gate_up_proj.weight"] = mat(2 * F, H)
            t[f"{p}.mlp.down_proj.weight"] = mat(H, F)
            if c["model_type"] == "glm4":
                t[f"{p}.post_self_attn_layernorm.weight"] = norm(H)
                t[f"{p}.post_mlp_layernorm.weight"] = norm(H)
            continue
        if c["model_type"] in ("cohere", "cohere2"):  # one norm; q, k, v, o; gate, up, down
            for name, rows, cols in (("self_attn.q_proj", A * D, H), ("self_attn.k_proj", K * D, H),
                                     ("self_attn.v_proj", K * D, H), ("self_attn.o_proj", H, A * D),
                                     ("mlp.gate_proj", F, H), ("mlp.up_proj", F, H), ("mlp.down_proj", H, F)):
                t[f"{p}.{name}.weight"] = mat(rows, cols)
            continue
        if c["model_type"] == "starcoder2":  # LayerNorms; biases everywhere; c_fc, c_proj
            t[f"{p}.input_layernorm.bias"] = rng.normal(0, 0.1, (H,))
            for name, rows, cols in (("self_attn.q_proj", A * D, H), ("self_attn.k_proj", K * D, H),
                                     ("self_attn.v_proj", K * D, H), ("self_attn.o_proj", H, A * D)):
                t[f"{p}.{name}.weight"] = mat(rows, cols)
                t[f"{p}.{name}.bias"] = rng.normal(0, 0.5, (rows,))
            t[f"{p}.post_attention_layernorm.weight"] = norm(H)
            t[f"{p}.post_attention_layernorm.bias"] = rng.normal(0, 0.1, (H,))
            for name, rows, cols in (("mlp.c_fc", F, H), ("mlp.c_proj", H, F)):
                t[f"{p}.{name}.weight"] = mat(rows, cols)
                t[f"{p}.{name}.bias"] = rng.normal(0, 0.5, (rows,))
            continue
        if c["model_type"] == "phi":  # one LayerNorm for both blocks; biases everywhere
            t[f"{p}.input_layernorm.bias"] = rng.normal(0, 0.1, (H,))
            for name, rows, cols in (("self_attn.q_proj", A * D, H), ("self_attn.k_proj", K * D, H),
                                     ("self_attn.v_proj", K * D, H), ("self_attn.dense", H, A * D),
                                     ("mlp.fc1", F, H), ("mlp.fc2", H, F)):
                t[f"{p}.{name}.weight"] = mat(rows, cols)
                t[f"{p}.{name}.bias"] = rng.normal(0, 0.5, (rows,))
            continue
        if c["model_type"] == "phi3":  # fused: q, k, v rows in one matrix; gate rows, then up rows
            t[f"{p}.self_attn.qkv_proj.weight"] = mat((A + 2 * K) * D, H)
            t[f"{p}.self_attn.o_proj.weight"] = mat(H, A * D)
            t[f"{p}.post_attention_layernorm.weight"] = norm(H)
            t[f"{p}.mlp.gate_up_proj.weight"] = mat(2 * F, H)
            t[f"{p}.mlp.down_proj.weight"] = mat(H, F)
            continue
        t[f"{p}.self_attn.q_proj.weight"] = mat(A * D, H)
        t[f"{p}.self_attn.k_proj.weight"] = mat(K * D, H)
        t[f"{p}.self_attn.v_proj.weight"] = mat(K * D, H)
        if c["model_type"] in ("qwen3", "gemma3_text", "exaone4"):
            t[f"{p}.self_attn.q_norm.weight"] = norm(D) - shift
            t[f"{p}.self_attn.k_norm.weight"] = norm(D) - shift
        if c["model_type"] == "olmo2":
            t[f"{p}.self_attn.q_norm.weight"] = norm(A * D)
            t[f"{p}.self_attn.k_norm.weight"] = norm(K * D)
        if c["model_type"] == "stablelm":  # LayerNorm biases; q/k/v biases
            t[f"{p}.input_layernorm.bias"] = rng.normal(0, 0.1, (H,))
            t[f"{p}.post_attention_layernorm.bias"] = rng.normal(0, 0.1, (H,))
            for name, n in (("q", A * D), ("k", K * D), ("v", K * D)):
                t[f"{p}.self_attn.{name}_proj.bias"] = rng.normal(0, 0.5, (n,))
        t[f"{p}.self_attn.o_proj.weight"] = mat(H, A * D)
        if gemma:  # Gemma's post_attention_layernorm norms the attention output; then the FFN's own
            t[f"{p}.post_attention_layernorm.weight"] = post(H)
            t[f"{p}.pre_feedforward_layernorm.weight"] = norm(H) - shift
        elif c["model_type"] != "olmo":
            t[f"{p}.post_attention_layernorm.weight"] = norm(H)
        t[f"{p}.mlp.gate_proj.weight"] = mat(F, H)
        t[f"{p}.mlp.up_proj.weight"] = mat(F, H)
        t[f"{p}.mlp.down_proj.weight"] = mat(H, F)
        if gemma:
            t[f"{p}.post_feedforward_layernorm.weight"] = post(H)
        if olmo2:
            t[f"{p}.post_feedforward_layernorm.weight"] = norm(H)
    final = "model.final_layernorm" if c["model_type"] == "phi" else "model.norm"
    if c["model_type"] != "olmo":
        t[f"{final}.weight"] = norm(H) - shift
    if c["model_type"] in ("stablelm", "phi", "starcoder2"):
        t[f"{final}.bias"] = rng.normal(0, 0.1, (H,))
    if not c["tie_word_embeddings"]:
        t["lm_head.weight"] = mat(V, H)
    if c["model_type"] == "phi":
        t["lm_head.bias"] = rng.normal(0, 0.5, (V,))
    return t


def fuse_experts(t: dict, c: dict) -> dict:
    """The experts stacked as transformers 5 keeps them: mlp.experts.gate_up_proj [E, 2F, H] (gate rows,
    then up rows), mlp.experts.down_proj [E, H, F], Mixtral's router renamed mlp.gate."""
    mixtral = c["model_type"] == "mixtral"
    gate, up, down = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    out = {}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        block = f"{p}.block_sparse_moe" if mixtral else f"{p}.mlp"
        E = sum(1 for n in t if n.startswith(f"{block}.experts.") and n.endswith(f".{gate}.weight"))
        for n in list(t):
            if n.startswith(f"{p}.") and not n.startswith(f"{block}."):
                out[n] = t[n]
        out[f"{p}.mlp.gate.weight"] = t[f"{block}.gate.weight"]
        out[f"{p}.mlp.experts.gate_up_proj"] = np.stack(
            [np.concatenate([t[f"{block}.experts.{e}.{gate}.weight"], t[f"{block}.experts.{e}.{up}.weight"]]) for e in range(E)])
        out[f"{p}.mlp.experts.down_proj"] = np.stack([t[f"{block}.experts.{e}.{down}.weight"] for e in range(E)])
    for n in t:
        if not n.startswith("model.layers."):
            out[n] = t[n]
    return out


def write_safetensors(path: Path, t: dict, f32=lambda name: False) -> None:
    header, blobs, off = {}, [], 0
    for name, a in t.items():
        b = a.astype("<f4").tobytes() if f32(name) else to_bf16_bits(a).tobytes()
        dtype = "F32" if f32(name) else "BF16"
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("arch", choices=sorted(SHAPES) + [f"{k}-fused" for k in ("mixtral", "qwen3moe")])
    ap.add_argument("out")
    ap.add_argument("--tokenizer-from", required=True, help="a shared golden folder (byte tokenizer)")
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    out, src = Path(a.out), Path(a.tokenizer_from)
    out.mkdir(parents=True, exist_ok=True)
    # NAME-fused: NAME's model with its experts stacked as transformers 5 keeps them (fuse_experts).
    fused = a.arch.endswith("-fused")
    c = SHAPES[a.arch.removesuffix("-fused")]
    (out / "config.json").write_text(json.dumps(c, indent=1) + "\n")
    # ERNIE 4.5 MoE's router and correction bias in F32, as transformers saves them.
    keep_f32 = lambda name: c["model_type"] == "ernie4_5_moe" and name.endswith(
        (".mlp.gate.weight", ".mlp.moe_statics.e_score_correction_bias"))
    t = tensors(c, np.random.default_rng(a.seed))
    write_safetensors(out / "model.safetensors", fuse_experts(t, c) if fused else t, keep_f32)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(src / f, out / f)
    ref = Path(__file__).with_name("reference.py")
    expected = subprocess.run([sys.executable, str(ref), str(out)], check=True, capture_output=True, text=True)
    (out / "expected.json").write_text(expected.stdout)


if __name__ == "__main__":
    main()
