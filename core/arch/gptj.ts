// GPTJForCausalLM (GPT-J 6B and its fine-tunes): attention and a tanh-GELU MLP side by side on one
// LayerNorm (ModelConfig.parallelBlocks, as Phi), the rotary step on adjacent pairs
// (ropeInterleaved) of the first rotary_dim dims of each head (all of them when null), base 10000;
// q/k/v/out without biases, fc_in/fc_out and the untied head with them.
import type { WeightStore } from "../loader/safetensors.js";
import { ModelError } from "../loader/errors.js";
import {
  ConfigReader,
  validateConfig,
  tensorReader,
  type ArchDefinition,
  type LayerWeights,
  type ModelConfig,
  type ModelWeights,
} from "./config.js";

function parseConfig(raw: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader(raw, file);
  const hidden = r.int("n_embd", 4096);
  const heads = r.int("n_head", 16);
  const headDim = hidden / heads;
  const rotDim = raw.rotary_dim === null ? headDim : r.int("rotary_dim", 64);
  if (rotDim % 2 !== 0 || rotDim > headDim) {
    throw new ModelError("BAD_CONFIG", file, `"rotary_dim" must be even and at most ${headDim}, got ${rotDim}`);
  }
  const inv = new Float32Array(rotDim / 2);
  for (let i = 0; i < inv.length; i++) inv[i] = 1 / Math.pow(10000, (2 * i) / rotDim);
  return validateConfig(
    {
      architecture: "GPTJForCausalLM",
      hidden,
      layers: r.int("n_layer", 28),
      heads,
      kvHeads: heads,
      headDim,
      intermediate: raw.n_inner === null ? 4 * hidden : r.int("n_inner", 4 * hidden),
      vocab: r.int("vocab_size", 50400),
      maxPositions: r.int("n_positions", 2048),
      norm: "layer",
      normEps: r.epsilon("layer_norm_epsilon", 1e-5),
      activation: r.activation("activation_function", "gelu_new"),
      gatedFfn: false,
      ropeInvFreq: inv,
      ropeTheta: 10000,
      ropeInterleaved: true,
      parallelBlocks: true,
      positionOffset: 0,
      tiedEmbeddings: r.bool("tie_word_embeddings", false),
      bosTokenId: r.ids("bos_token_id")[0] ?? null,
      eosTokenIds: r.ids("eos_token_id"),
      dtype: r.dtype(),
    },
    file,
  );
}

function bindWeights(c: ModelConfig, s: WeightStore): ModelWeights {
  const { hidden: H, intermediate: F, vocab: V } = c;
  const { linear: lin, norm } = tensorReader(s, H, { normBias: true });
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.layers; i++) {
    const p = `transformer.h.${i}`;
    layers.push({
      attnNorm: norm(`${p}.ln_1`),
      qkv: {
        q: lin(`${p}.attn.q_proj`, H, H, false),
        k: lin(`${p}.attn.k_proj`, H, H, false),
        v: lin(`${p}.attn.v_proj`, H, H, false),
      },
      o: lin(`${p}.attn.out_proj`, H, H, false),
      ffnNorm: null, // the MLP reads ln_1's output too (parallelBlocks)
      gate: null,
      up: lin(`${p}.mlp.fc_in`, F, H, true),
      down: lin(`${p}.mlp.fc_out`, H, F, true),
    });
  }
  const embed = s.get("transformer.wte.weight", [V, H]);
  return {
    embed,
    positions: null,
    layers,
    finalNorm: norm("transformer.ln_f"),
    head: c.tiedEmbeddings ? { w: embed, b: null } : lin("lm_head", V, H, true),
  };
}

export const gptj: ArchDefinition = { parseConfig, bindWeights };
