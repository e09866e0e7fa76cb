// StableLmForCausalLM (StableLM 2 1.6B and its Zephyr chat model, Stable Code 3B, StableLM 3B 4E1T):
// the Llama block with LayerNorms (weight and bias) in place of RMSNorms, q/k/v biases when
// use_qkv_bias is set (o_proj has none), and the rotary step on the first partial_rotary_factor of
// each head (0.25). StableLM 2 12B's parallel residual and per-head q/k LayerNorms are refused.
import type { WeightStore } from "../loader/safetensors.js";
import { ModelError } from "../loader/errors.js";
import {
  ConfigReader,
  familyWeights,
  ropeFields,
  ropeFrequencies,
  ropeSettings,
  tensorReader,
  type ArchDefinition,
  type LayerWeights,
  type ModelConfig,
  type ModelWeights,
} from "./config.js";
import { familyConfig } from "./llama.js";

function parseConfig(raw: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader(raw, file);
  for (const [key, what] of [
    ["use_parallel_residual", "attention and FFN side by side"],
    ["qk_layernorm", "LayerNorms of q and k per head"],
  ] as const) {
    if (r.bool(key, false)) throw new ModelError("BAD_CONFIG", file, `"${key}": true (${what}) is not supported`);
  }
  // StableLmConfig's defaults: partial_rotary_factor 0.25, layer_norm_eps 1e-5.
  const withDefaults = new ConfigReader({ partial_rotary_factor: 0.25, ...raw }, file);
  const c = familyConfig(withDefaults, "StableLmForCausalLM", 1e-5, (headDim) => {
    const maxPositions = r.int("max_position_embeddings", 4096);
    const rope = ropeFrequencies(ropeSettings(withDefaults), headDim, maxPositions);
    return {
      ...ropeFields(rope),
      attentionBias: r.bool("use_qkv_bias", false), // q, k and v only (see bindWeights)
    };
  });
  return { ...c, norm: "layer", normEps: r.epsilon("layer_norm_eps", 1e-5) };
}

function bindWeights(c: ModelConfig, s: WeightStore): ModelWeights {
  const { hidden: H, heads: A, kvHeads: K, headDim: D, intermediate: F } = c;
  const { linear: lin, norm } = tensorReader(s, H, { normBias: true });
  const qkvBias = c.attentionBias === true;
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.layers; i++) {
    const p = `model.layers.${i}`;
    layers.push({
      attnNorm: norm(`${p}.input_layernorm`),
      qkv: {
        q: lin(`${p}.self_attn.q_proj`, A * D, H, qkvBias),
        k: lin(`${p}.self_attn.k_proj`, K * D, H, qkvBias),
        v: lin(`${p}.self_attn.v_proj`, K * D, H, qkvBias),
      },
      o: lin(`${p}.self_attn.o_proj`, H, A * D),
      ffnNorm: norm(`${p}.post_attention_layernorm`),
      gate: lin(`${p}.mlp.gate_proj`, F, H),
      up: lin(`${p}.mlp.up_proj`, F, H),
      down: lin(`${p}.mlp.down_proj`, H, F),
    });
  }
  return familyWeights(c, s, layers, { finalNorm: norm("model.norm") });
}

export const stablelm: ArchDefinition = { parseConfig, bindWeights };
