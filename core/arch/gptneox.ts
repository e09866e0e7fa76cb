// GPTNeoXForCausalLM (Pythia, GPT-NeoX-20B, RedPajama-INCITE, Dolly v2): LayerNorms with biases,
// attention and MLP side by side on their own norms of the residual stream (use_parallel_residual,
// the default; false: one after the other), one fused query_key_value projection whose rows go head
// by head ([q_h; k_h; v_h]), the rotary step on the first rotary_pct of each head (0.25), an
// ungated exact-GELU MLP with biases and an untied head (embed_out).
import type { WeightStore } from "../loader/safetensors.js";
import { ModelError } from "../loader/errors.js";
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
  // transformers 4.x's GPTNeoXConfig names the rotary base and fraction rotary_emb_base and
  // rotary_pct (defaults 10000 and 0.25); read them under those names so a bad one is named as it stands.
  const legacy: Record<string, unknown> = { hidden_act: r.raw.hidden_act ?? "gelu" };
  if (raw.rope_theta === undefined) legacy.rope_theta = r.positive("rotary_emb_base", 10000);
  const params = raw.rope_parameters;
  const partialInParams = typeof params === "object" && params !== null && "partial_rotary_factor" in params;
  if (raw.partial_rotary_factor === undefined && !partialInParams) {
    legacy.partial_rotary_factor = r.positive("rotary_pct", 0.25);
  }
  const withDefaults = new ConfigReader({ ...raw, ...legacy }, file);
  const c = familyConfig(withDefaults, "GPTNeoXForCausalLM", 1e-5, (headDim) => {
    const maxPositions = r.int("max_position_embeddings", 2048);
    const rope = ropeFrequencies(ropeSettings(withDefaults), headDim, maxPositions);
    return ropeFields(rope);
  });
  // The fused rows interleave q, k and v per head, so there are as many key/value heads as heads.
  if (c.kvHeads !== c.heads) {
    throw new ModelError("BAD_CONFIG", file, `num_key_value_heads ${c.kvHeads} ≠ ${c.heads} attention heads`);
  }
  return {
    ...c,
    norm: "layer",
    normEps: r.epsilon("layer_norm_eps", 1e-5),
    gatedFfn: false,
    ...(r.bool("use_parallel_residual", true) && { parallelBlocks: true }),
    attentionBias: r.bool("attention_bias", true), // query_key_value and dense
  };
}

function bindWeights(c: ModelConfig, s: WeightStore): ModelWeights {
  const { hidden: H, intermediate: F, vocab: V } = c;
  const { linear: lin, norm } = tensorReader(s, H, { normBias: true });
  const bias = c.attentionBias === true;
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.layers; i++) {
    const p = `gpt_neox.layers.${i}`;
    layers.push({
      attnNorm: norm(`${p}.input_layernorm`),
      qkv: { fused: lin(`${p}.attention.query_key_value`, 3 * H, H, bias), grouped: true },
      o: lin(`${p}.attention.dense`, H, H, bias),
      ffnNorm: norm(`${p}.post_attention_layernorm`),
      gate: null,
      up: lin(`${p}.mlp.dense_h_to_4h`, F, H, true),
      down: lin(`${p}.mlp.dense_4h_to_h`, H, F, true),
    });
  }
  const embed = s.get("gpt_neox.embed_in.weight", [V, H]);
  return {
    embed,
    positions: null,
    layers,
    finalNorm: norm("gpt_neox.final_layer_norm"),
    head: { w: c.tiedEmbeddings ? embed : s.get("embed_out.weight", [V, H]), b: null },
  };
}

export const gptneox: ArchDefinition = { parseConfig, bindWeights };
