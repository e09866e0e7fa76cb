// Ernie4_5ForCausalLM (ERNIE 4.5 0.3B): the Llama block with the rotary step on adjacent pairs
// (ropeInterleaved) and Ernie4_5Config's defaults (head_dim 128, 2 key/value heads, rope_theta
// 500000, a tied head). use_bias puts biases on every projection, the gated MLP's too, which the FFN
// kernels do not take: refused.
//
// Ernie4_5_MoeForCausalLM (ERNIE 4.5 21B-A3B, 300B-A47B): the same block with mixture-of-experts FFNs
// (moe.ts) and Ernie4_5_MoeConfig's defaults (hidden 2560, 20 heads over 4, 28 layers, 64 experts,
// 6 a token); transformers keeps its router and correction bias in float32 (f32Tensors).
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
import { moeWeights, parseMoe } from "./moe.js";

function parseConfig(raw: Record<string, unknown>, file: string, moe: boolean): ModelConfig {
  const defaults = moe
    ? {
        hidden_size: 2560,
        intermediate_size: 12288,
        num_hidden_layers: 28,
        num_attention_heads: 20,
        num_key_value_heads: 4,
        tie_word_embeddings: true,
        rope_theta: 500000,
      }
    : { head_dim: 128, num_key_value_heads: 2, tie_word_embeddings: true, rope_theta: 500000 };
  const r = new ConfigReader({ ...defaults, ...raw }, file);
  if (r.bool("use_bias", false)) {
    throw new ModelError("BAD_CONFIG", file, `"use_bias": true (biases in the FFN) is not supported`);
  }
  const architecture = moe ? "Ernie4_5_MoeForCausalLM" : "Ernie4_5ForCausalLM";
  const c = familyConfig(r, architecture, 1e-5, (headDim) => {
    const maxPositions = r.int("max_position_embeddings", 131072);
    const rope = ropeFrequencies(ropeSettings(r), headDim, maxPositions);
    return ropeFields(rope);
  });
  return { ...c, ropeInterleaved: true, ...(moe && parseMoe(r, c.layers, "ernie")) };
}

function bindWeights(c: ModelConfig, s: WeightStore): ModelWeights {
  const { hidden: H, heads: A, kvHeads: K, headDim: D } = c;
  const F = c.moe?.denseIntermediate ?? c.intermediate; // the dense layers' (c.intermediate: the widest FFN)
  const { linear: lin, norm } = tensorReader(s, H);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.layers; i++) {
    const p = `model.layers.${i}`;
    layers.push({
      attnNorm: norm(`${p}.input_layernorm`),
      qkv: {
        q: lin(`${p}.self_attn.q_proj`, A * D, H),
        k: lin(`${p}.self_attn.k_proj`, K * D, H),
        v: lin(`${p}.self_attn.v_proj`, K * D, H),
      },
      o: lin(`${p}.self_attn.o_proj`, H, A * D),
      ffnNorm: norm(`${p}.post_attention_layernorm`),
      ...(c.moe?.layers[i]
        ? { moe: moeWeights(c.moe, H, p, "ernie", s) }
        : {
            gate: lin(`${p}.mlp.gate_proj`, F, H),
            up: lin(`${p}.mlp.up_proj`, F, H),
            down: lin(`${p}.mlp.down_proj`, H, F),
          }),
    });
  }
  return familyWeights(c, s, layers);
}

export const ernie: ArchDefinition = { parseConfig: (raw, file) => parseConfig(raw, file, false), bindWeights };
export const ernieMoe: ArchDefinition = {
  parseConfig: (raw, file) => parseConfig(raw, file, true),
  bindWeights,
  f32Tensors: /\.mlp\.(gate\.weight|moe_statics\.e_score_correction_bias)$/,
};
