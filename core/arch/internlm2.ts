// InternLM2ForCausalLM (InternLM2 and 2.5, remote code in their folders): the Llama block under its own
// tensor names, with q/k/v in one wqkv whose rows go key/value head by key/value head, each with its
// group's q heads, then its k and v (qkv.grouped), and wqkv/wo biases when `bias` is set. Dynamic NTK
// rope scaling (InternLM2.5) keeps the base frequencies up to max_position_embeddings.
import type { WeightStore } from "../loader/safetensors.js";
import {
  ConfigReader,
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
  return familyConfig(r, "InternLM2ForCausalLM", 1e-6, (headDim) => {
    const rope = ropeFrequencies(ropeSettings(r), headDim, r.int("max_position_embeddings", 2048));
    return { ...ropeFields(rope), attentionBias: r.bool("bias", true) }; // InternLM2Config's default
  });
}

function bindWeights(c: ModelConfig, s: WeightStore): ModelWeights {
  const { hidden: H, heads: A, kvHeads: K, headDim: D, intermediate: F, vocab: V } = c;
  const { linear: lin, norm } = tensorReader(s, H);
  const bias = c.attentionBias === true;
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.layers; i++) {
    const p = `model.layers.${i}`;
    layers.push({
      attnNorm: norm(`${p}.attention_norm`),
      qkv: { fused: lin(`${p}.attention.wqkv`, (A + 2 * K) * D, H, bias), grouped: true },
      o: lin(`${p}.attention.wo`, H, A * D, bias),
      ffnNorm: norm(`${p}.ffn_norm`),
      gate: lin(`${p}.feed_forward.w1`, F, H),
      up: lin(`${p}.feed_forward.w3`, F, H),
      down: lin(`${p}.feed_forward.w2`, H, F),
    });
  }
  const embed = s.get("model.tok_embeddings.weight", [V, H]);
  return {
    embed,
    positions: null,
    layers,
    finalNorm: norm("model.norm"),
    head: { w: c.tiedEmbeddings ? embed : s.get("output.weight", [V, H]), b: null },
  };
}

export const internlm2: ArchDefinition = { parseConfig, bindWeights };
