// CohereForCausalLM (Aya 23, Aya Expanse, Command R): attention and a SwiGLU MLP side by side on one
// LayerNorm without bias (ModelConfig.parallelBlocks), the rotary step on adjacent pairs
// (ropeInterleaved), logits times logit_scale (folded into the final norm's weight:
// ModelConfig.finalNormScale) and by default a head tied to the embeddings. Command R+'s per-head q/k
// LayerNorms (use_qk_norm) are refused.
import type { WeightStore } from "../loader/safetensors.js";
import { ModelError } from "../loader/errors.js";
import {
  ConfigReader,
  familyWeights,
  ropeFrequencies,
  ropeSettings,
  type ArchDefinition,
  type LayerWeights,
  type Linear,
  type ModelConfig,
  type ModelWeights,
  type Norm,
} from "./config.js";
import { familyConfig } from "./llama.js";

function parseConfig(raw: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader({ tie_word_embeddings: true, ...raw }, file); // CohereConfig's default
  if (r.bool("use_qk_norm", false)) {
    throw new ModelError("BAD_CONFIG", file, `"use_qk_norm": true (LayerNorms of q and k per head) is not supported`);
  }
  const c = familyConfig(r, "CohereForCausalLM", 1e-5, (headDim) => {
    const maxPositions = r.int("max_position_embeddings", 8192);
    const rope = ropeFrequencies(ropeSettings(r), headDim, maxPositions);
    return {
      maxPositions,
      ropeInvFreq: rope.inv,
      ...(rope.factor !== 1 && { ropeFactor: rope.factor }),
      attentionBias: r.bool("attention_bias", false),
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
  const lin = (name: string, out: number, inp: number, bias = false): Linear => ({
    w: s.get(`${name}.weight`, [out, inp]),
    b: bias ? s.get(`${name}.bias`, [out]) : null,
  });
  const norm = (name: string): Norm => ({ weight: s.get(`${name}.weight`, [H]), bias: null });
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

export const cohere: ArchDefinition = { parseConfig, bindWeights };
