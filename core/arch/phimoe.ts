// PhimoeForCausalLM (Phi-3.5-MoE): Mixtral's mixture (block_sparse_moe, 16 experts, 2 a token) on a
// block with LayerNorms (weight and bias, eps rms_norm_eps), biases on q, k, v and o
// (attention_bias), a biased LM head (lm_head_bias) and Phi-3's longrope, whose cos/sin factor is
// short_mscale here. Experts are routed by sparsemixer (MoeConfig.sparsemixer, router_jitter_noise).
import type { WeightStore } from "../loader/safetensors.js";
import { ModelError } from "../loader/errors.js";
import {
  ConfigReader,
  familyWeights,
  ropeFields,
  ropeFrequencies,
  ropeSettings,
  ropeType,
  tensorReader,
  type ArchDefinition,
  type LayerWeights,
  type ModelConfig,
  type ModelWeights,
} from "./config.js";
import { familyConfig } from "./llama.js";
import { moeWeights, parseMoe } from "./moe.js";
import { longrope } from "./phi3.js";

function parseConfig(raw: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader(raw, file);
  const c = familyConfig(r, "PhimoeForCausalLM", 1e-5, (headDim) => {
    const maxPositions = r.int("max_position_embeddings", 4096 * 32);
    const s = ropeSettings(r);
    const rope =
      ropeType(s) === "longrope"
        ? longrope(
            r,
            s,
            headDim,
            maxPositions,
            s.raw.short_mscale === undefined ? undefined : s.positive("short_mscale"),
          )
        : ropeFrequencies(s, headDim, maxPositions);
    return { ...ropeFields(rope), attentionBias: r.bool("attention_bias", false) };
  });
  const { moe, intermediate } = parseMoe(r, c.layers, "mixtral");
  if (moe.topK !== 2) {
    throw new ModelError("BAD_CONFIG", file, `"num_experts_per_tok" must be 2 (sparsemixer picks two experts)`);
  }
  return {
    ...c,
    norm: "layer",
    intermediate,
    moe: { ...moe, sparsemixer: { jitterEps: r.positive("router_jitter_noise", 0.01) } },
  };
}

function bindWeights(c: ModelConfig, s: WeightStore): ModelWeights {
  const { hidden: H, heads: A, kvHeads: K, headDim: D } = c;
  const { linear: lin, norm } = tensorReader(s, H, { normBias: true });
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
      ffnNorm: norm(`${p}.post_attention_layernorm`),
      moe: moeWeights(c.moe!, H, p, "mixtral", s),
    });
  }
  const w = familyWeights(c, s, layers, { finalNorm: norm("model.norm") });
  return s.has("lm_head.bias") ? { ...w, head: { ...w.head, b: s.get("lm_head.bias", [c.vocab]) } } : w;
}

export const phimoe: ArchDefinition = { parseConfig, bindWeights };
