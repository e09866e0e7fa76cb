// PhiForCausalLM (Phi-1, Phi-1.5, Phi-2): attention and FFN side by side on one LayerNorm of the
// residual stream (ModelConfig.parallelBlocks), q/k/v and the output projection ("dense") with
// biases, the rotary step on the first partial_rotary_factor of each head (Phi-2: 0.4), an
// ungated tanh-GELU MLP (fc1, fc2, biases), a final LayerNorm and an LM head with a bias.
// Per-head q/k LayerNorms (qk_layernorm) are refused: no Phi checkpoint sets it.
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
  if (r.bool("qk_layernorm", false)) {
    throw new ModelError("BAD_CONFIG", file, `"qk_layernorm": true (LayerNorms of q and k per head) is not supported`);
  }
  // PhiConfig's defaults: partial_rotary_factor 0.5, gelu_new, layer_norm_eps 1e-5.
  const withDefaults = new ConfigReader({ partial_rotary_factor: 0.5, hidden_act: "gelu_new", ...raw }, file);
  const c = familyConfig(withDefaults, "PhiForCausalLM", 1e-5, (headDim) => {
    const maxPositions = r.int("max_position_embeddings", 2048);
    const rope = ropeFrequencies(ropeSettings(withDefaults), headDim, maxPositions);
    return ropeFields(rope);
  });
  return {
    ...c,
    norm: "layer",
    normEps: r.epsilon("layer_norm_eps", 1e-5),
    gatedFfn: false,
    parallelBlocks: true,
    attentionBias: true, // q, k, v and dense always have biases in PhiAttention
  };
}

function bindWeights(c: ModelConfig, s: WeightStore): ModelWeights {
  const { hidden: H, heads: A, kvHeads: K, headDim: D, intermediate: F } = c;
  const { linear: lin, norm } = tensorReader(s, H, { normBias: true, linearBias: true });
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
      o: lin(`${p}.self_attn.dense`, H, A * D),
      ffnNorm: null, // the FFN reads input_layernorm's output too (parallelBlocks)
      gate: null,
      up: lin(`${p}.mlp.fc1`, F, H),
      down: lin(`${p}.mlp.fc2`, H, F),
    });
  }
  const w = familyWeights(c, s, layers, { finalNorm: norm("model.final_layernorm") });
  return { ...w, head: { w: w.head.w, b: s.get("lm_head.bias", [c.vocab]) } }; // biased, tied or not
}

export const phi: ArchDefinition = { parseConfig, bindWeights };
