// CohereForCausalLM (Aya 23, Aya Expanse, Command R): attention and a SwiGLU MLP side by side on one
// LayerNorm without bias (ModelConfig.parallelBlocks), the rotary step on adjacent pairs
// (ropeInterleaved), logits times logit_scale (folded into the final norm's weight:
// ModelConfig.finalNormScale) and by default a head tied to the embeddings. Command R+'s per-head q/k
// LayerNorms (use_qk_norm) are refused.
// Cohere2ForCausalLM (Command R7B, Aya Vision's language model): the same block, with a sliding window
// in three of every four layers (sliding_window_pattern, or layer_types) and the rotary step in
// those layers only: the global ones have no positions but the causal order.
import type { WeightStore } from "../loader/safetensors.js";
import { ModelError } from "../loader/errors.js";
import {
  ConfigReader,
  familyWeights,
  ropeFields,
  ropeFrequencies,
  ropeSettings,
  slidingRopeLayers,
  tensorReader,
  type ArchDefinition,
  type LayerWeights,
  type ModelConfig,
  type ModelWeights,
} from "./config.js";
import { familyConfig } from "./llama.js";

function parseConfig(raw: Record<string, unknown>, file: string, version: 1 | 2): ModelConfig {
  const r = new ConfigReader({ tie_word_embeddings: true, ...raw }, file); // Cohere(2)Config's default
  if (version === 1 && r.bool("use_qk_norm", false)) {
    throw new ModelError("BAD_CONFIG", file, `"use_qk_norm": true (LayerNorms of q and k per head) is not supported`);
  }
  const architecture = version === 1 ? "CohereForCausalLM" : "Cohere2ForCausalLM";
  const c = familyConfig(r, architecture, 1e-5, (headDim, layers) => {
    const maxPositions = r.int("max_position_embeddings", 8192);
    const rope = ropeFrequencies(ropeSettings(r), headDim, maxPositions);
    const common = {
      ...ropeFields(rope),
      attentionBias: r.bool("attention_bias", false),
    };
    if (version === 1) return common;
    // Without a window transformers turns no layer's rotary step: not a model anyone ships.
    if (raw.sliding_window === null)
      throw new ModelError("BAD_CONFIG", file, `"sliding_window": null is not supported`);
    // Cohere2Config's defaults: a 4096-position window in all but every 4th layer.
    return {
      ...common,
      ...slidingRopeLayers(r, layers, raw.sliding_window ?? 4096, r.int("sliding_window_pattern", 4)),
    };
  });
  return {
    ...c,
    norm: "layer",
    normEps: r.epsilon("layer_norm_eps", 1e-5),
    parallelBlocks: true,
    ropeInterleaved: true,
    finalNormScale: r.positive("logit_scale", 0.0625),
  };
}

function bindWeights(c: ModelConfig, s: WeightStore): ModelWeights {
  const { hidden: H, heads: A, kvHeads: K, headDim: D, intermediate: F } = c;
  const { linear: lin, norm } = tensorReader(s, H);
  const bias = c.attentionBias === true;
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.layers; i++) {
    const p = `model.layers.${i}`;
    layers.push({
      attnNorm: norm(`${p}.input_layernorm`),
      qkv: {
        q: lin(`${p}.self_attn.q_proj`, A * D, H, bias),
        k: lin(`${p}.self_attn.k_proj`, K * D, H, bias),
        v: lin(`${p}.self_attn.v_proj`, K * D, H, bias),
      },
      o: lin(`${p}.self_attn.o_proj`, H, A * D, bias),
      ffnNorm: null, // the MLP reads input_layernorm's output too (parallelBlocks)
      gate: lin(`${p}.mlp.gate_proj`, F, H),
      up: lin(`${p}.mlp.up_proj`, F, H),
      down: lin(`${p}.mlp.down_proj`, H, F),
    });
  }
  return familyWeights(c, s, layers, { finalNorm: norm("model.norm") });
}

export const cohere: ArchDefinition = { parseConfig: (raw, file) => parseConfig(raw, file, 1), bindWeights };
export const cohere2: ArchDefinition = { parseConfig: (raw, file) => parseConfig(raw, file, 2), bindWeights };
