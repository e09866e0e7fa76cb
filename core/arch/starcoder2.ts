// Starcoder2ForCausalLM (StarCoder2 3B/7B/15B): the Llama block with LayerNorms (weight and bias,
// norm_epsilon), biases on q/k/v/o and on an ungated tanh-GELU MLP (c_fc, c_proj) when use_bias is
// set (the default), sliding-window attention in every layer when sliding_window is set, and by
// default a head tied to the embeddings.
import type { WeightStore } from "../loader/safetensors.js";
import {
  ConfigReader,
  familyWeights,
  ropeFields,
  ropeFrequencies,
  ropeSettings,
  slidingWindows,
  tensorReader,
  type ArchDefinition,
  type LayerWeights,
  type ModelConfig,
  type ModelWeights,
} from "./config.js";
import { familyConfig } from "./llama.js";

function parseConfig(raw: Record<string, unknown>, file: string): ModelConfig {
  // Starcoder2Config's defaults that differ from the family's.
  const r = new ConfigReader(
    { hidden_act: "gelu_pytorch_tanh", num_key_value_heads: 2, tie_word_embeddings: true, ...raw },
    file,
  );
  const c = familyConfig(r, "Starcoder2ForCausalLM", 1e-5, (headDim, layers) => {
    const maxPositions = r.int("max_position_embeddings", 4096);
    const rope = ropeFrequencies(ropeSettings(r), headDim, maxPositions);
    const windows = slidingWindows(r, layers, raw.sliding_window, () => true);
    return {
      ...ropeFields(rope),
      ...(windows && { attentionWindows: windows }),
      attentionBias: r.bool("use_bias", true), // q/k/v/o, and c_fc/c_proj (see bindWeights)
    };
  });
  return { ...c, norm: "layer", normEps: r.epsilon("norm_epsilon", 1e-5), gatedFfn: false };
}

function bindWeights(c: ModelConfig, s: WeightStore): ModelWeights {
  const { hidden: H, heads: A, kvHeads: K, headDim: D, intermediate: F } = c;
  const { linear: lin, norm } = tensorReader(s, H, { normBias: true, linearBias: c.attentionBias === true });
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
      gate: null,
      up: lin(`${p}.mlp.c_fc`, F, H),
      down: lin(`${p}.mlp.c_proj`, H, F),
    });
  }
  return familyWeights(c, s, layers, { finalNorm: norm("model.norm") });
}

export const starcoder2: ArchDefinition = { parseConfig, bindWeights };
