// GlmForCausalLM (GLM-4-9B-Chat in the transformers format) and Glm4ForCausalLM (GLM-4-0414, GLM-Z1):
// the Llama block with q/k/v biases (attention_bias), gate and up in one gate_up_proj (gate first,
// read as row views as for Phi-3) and the rotary step on adjacent pairs (ropeInterleaved) of the
// first partial_rotary_factor of each head (0.5). GLM-4-0414 adds norms after the attention and the
// MLP (post_self_attn_layernorm, post_mlp_layernorm), as Gemma 2 has them.
import type { WeightStore } from "../loader/safetensors.js";
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

function parseConfig(raw: Record<string, unknown>, file: string, architecture: string): ModelConfig {
  // GlmConfig's and Glm4Config's defaults that differ from the family's (the rotary fraction only
  // where transformers 5's rope_parameters does not hold one: a top-level one would win over it).
  const params = raw.rope_parameters;
  const partialInParams = typeof params === "object" && params !== null && "partial_rotary_factor" in params;
  const defaults = { head_dim: 128, num_key_value_heads: 2, ...(!partialInParams && { partial_rotary_factor: 0.5 }) };
  const r = new ConfigReader({ ...defaults, ...raw }, file);
  const c = familyConfig(r, architecture, 1.5625e-7, (headDim) => {
    const maxPositions = r.int("max_position_embeddings", 131072);
    const rope = ropeFrequencies(ropeSettings(r), headDim, maxPositions);
    return {
      ...ropeFields(rope),
      attentionBias: r.bool("attention_bias", true), // q, k and v only (see bindWeights)
    };
  });
  return { ...c, ropeInterleaved: true };
}

function bindWeights(c: ModelConfig, s: WeightStore, postNorms: boolean): ModelWeights {
  const { hidden: H, heads: A, kvHeads: K, headDim: D, intermediate: F } = c;
  const { linear: lin, norm } = tensorReader(s, H);
  const bias = c.attentionBias === true;
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.layers; i++) {
    const p = `model.layers.${i}`;
    const gateUp = `${p}.mlp.gate_up_proj.weight`;
    layers.push({
      attnNorm: norm(`${p}.input_layernorm`),
      qkv: {
        q: lin(`${p}.self_attn.q_proj`, A * D, H, bias),
        k: lin(`${p}.self_attn.k_proj`, K * D, H, bias),
        v: lin(`${p}.self_attn.v_proj`, K * D, H, bias),
      },
      o: lin(`${p}.self_attn.o_proj`, H, A * D),
      ffnNorm: norm(`${p}.post_attention_layernorm`), // before the MLP, whatever its name says
      ...(postNorms && {
        postAttnNorm: norm(`${p}.post_self_attn_layernorm`),
        postFfnNorm: norm(`${p}.post_mlp_layernorm`),
      }),
      gate: { w: s.getRows(gateUp, [2 * F, H], 0, F), b: null },
      up: { w: s.getRows(gateUp, [2 * F, H], F, F), b: null },
      down: lin(`${p}.mlp.down_proj`, H, F),
    });
  }
  return familyWeights(c, s, layers);
}

export const glm: ArchDefinition = {
  parseConfig: (raw, file) => parseConfig(raw, file, "GlmForCausalLM"),
  bindWeights: (c, s) => bindWeights(c, s, false),
};
export const glm4: ArchDefinition = {
  parseConfig: (raw, file) => parseConfig(raw, file, "Glm4ForCausalLM"),
  bindWeights: (c, s) => bindWeights(c, s, true),
};
