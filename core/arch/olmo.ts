// OlmoForCausalLM (OLMo 1B/7B, 2024): the Llama block with LayerNorms that have no parameters at all
// (eps 1e-5 fixed, as OlmoLayerNorm has it): the kernels get a weight of ones and no bias. clip_qkv,
// which clamps q, k and v, is refused: the engine has no clamp.
import type { WeightStore } from "../loader/safetensors.js";
import { ModelError } from "../loader/errors.js";
import {
  ConfigReader,
  familyWeights,
  ropeFields,
  ropeFrequencies,
  ropeSettings,
  tensorReader,
  unitNorm,
  type ArchDefinition,
  type LayerWeights,
  type ModelConfig,
  type ModelWeights,
} from "./config.js";
import { familyConfig } from "./llama.js";

function parseConfig(raw: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader(raw, file);
  if (raw.clip_qkv !== undefined && raw.clip_qkv !== null) {
    throw new ModelError(
      "BAD_CONFIG",
      file,
      `"clip_qkv": ${JSON.stringify(raw.clip_qkv)} (q, k, v clamped) is not supported`,
    );
  }
  const c = familyConfig(r, "OlmoForCausalLM", 1e-5, (headDim) => ({
    ...ropeFields(ropeFrequencies(ropeSettings(r), headDim, r.int("max_position_embeddings", 2048))),
    attentionBias: r.bool("attention_bias", false),
  }));
  return { ...c, norm: "layer", normEps: 1e-5 };
}

function bindWeights(c: ModelConfig, s: WeightStore): ModelWeights {
  const { hidden: H, heads: A, kvHeads: K, headDim: D, intermediate: F } = c;
  const { linear: lin } = tensorReader(s, H);
  const bias = c.attentionBias === true;
  const norm = unitNorm(s.get("model.embed_tokens.weight", [c.vocab, H]));
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.layers; i++) {
    const p = `model.layers.${i}`;
    layers.push({
      attnNorm: norm,
      qkv: {
        q: lin(`${p}.self_attn.q_proj`, A * D, H, bias),
        k: lin(`${p}.self_attn.k_proj`, K * D, H, bias),
        v: lin(`${p}.self_attn.v_proj`, K * D, H, bias),
      },
      o: lin(`${p}.self_attn.o_proj`, H, A * D, bias),
      ffnNorm: norm,
      gate: lin(`${p}.mlp.gate_proj`, F, H),
      up: lin(`${p}.mlp.up_proj`, F, H),
      down: lin(`${p}.mlp.down_proj`, H, F),
    });
  }
  return familyWeights(c, s, layers, { finalNorm: norm });
}

export const olmo: ArchDefinition = { parseConfig, bindWeights };
