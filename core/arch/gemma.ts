// Gemma text models: GemmaForCausalLM (gemma-2b/7b, CodeGemma), Gemma2ForCausalLM (gemma-2-2b/9b/27b), Gemma3ForCausalLM
// (gemma-3-270m, gemma-3-1b) and the language model inside Gemma3ForConditionalGeneration
// (gemma-3-4b/12b/27b; its text_config and language-model tensors, the vision tower left unread).
// The Llama block with these differences, as transformers' modeling code has them:
// - token embeddings times √hidden as they enter the first layer;
// - every RMSNorm scales by (1 + w): the weights are read with the 1 added (in f32, as transformers
//   computes it), so the engine's norm op serves unchanged;
// - Gemma 2 and 3: norms after the attention and FFN blocks too (before their residual adds);
// - Gemma 2 and 3: attention scaled by query_pre_attn_scalar^-1/2 (Gemma: head_dim^-1/2);
// - Gemma 2 and 3: sliding-window attention in some layers (`layer_types`; else Gemma 2 every other layer from the
//   first, Gemma 3 all but every `sliding_window_pattern`-th);
// - a GELU (tanh) gated FFN;
// - Gemma 2: attention scores and final logits soft-capped (cap · tanh(x / cap));
// - Gemma 3: q/k norms per head, and a rotary base of its own (rope_local_base_freq, unscaled) in the
//   sliding-window layers.
import type { WeightStore } from "../loader/safetensors.js";
import { ModelError } from "../loader/errors.js";
import {
  ConfigReader,
  familyWeights,
  mappedNorm,
  ropeFrequencies,
  ropeSettings,
  slidingWindows,
  validateConfig,
  type ArchDefinition,
  type LayerWeights,
  type Linear,
  type ModelConfig,
  type ModelWeights,
  type Norm,
} from "./config.js";

/** Which Gemma (see the header). */
interface Variant {
  version: 1 | 2 | 3;
}

/** Gemma3TextConfig's defaults (the 4B text model's shapes), for the fields a text_config leaves out. */
const GEMMA3_DEFAULTS = {
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  vocab_size: 262208,
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-6,
  rope_theta: 1_000_000,
  rope_local_base_freq: 10_000,
  query_pre_attn_scalar: 256,
  sliding_window: 4096,
  sliding_window_pattern: 6,
  final_logit_softcapping: null,
  attn_logit_softcapping: null,
};

/** Gemma2Config's defaults (the 2B model's shapes, bar the vocabulary). */
const GEMMA2_DEFAULTS = {
  ...GEMMA3_DEFAULTS,
  vocab_size: 256000,
  max_position_embeddings: 8192,
  rope_theta: 10_000,
  sliding_window_pattern: 2,
  final_logit_softcapping: 30.0,
  attn_logit_softcapping: 50.0,
};

/** GemmaConfig's defaults (the 7B model's shapes): no windows, no soft caps, no q/k norms. */
const GEMMA1_DEFAULTS = {
  ...GEMMA2_DEFAULTS,
  hidden_size: 3072,
  intermediate_size: 24576,
  num_hidden_layers: 28,
  num_attention_heads: 16,
  num_key_value_heads: 16,
  final_logit_softcapping: null,
  attn_logit_softcapping: null,
};

/** The text model's config: config.json itself, or its text_config (multimodal checkpoints). */
function textConfig(raw: Record<string, unknown>, architecture: string, file: string): Record<string, unknown> {
  if (architecture !== "Gemma3ForConditionalGeneration") return raw;
  const text = raw.text_config;
  if (typeof text !== "object" || text === null || Array.isArray(text)) {
    throw new ModelError("BAD_CONFIG", file, `"text_config" must be an object for ${architecture}`);
  }
  // Token ids and the dtype sit at the top level of a multimodal config.
  const top = Object.fromEntries(
    ["torch_dtype", "dtype", "bos_token_id", "eos_token_id", "tie_word_embeddings"]
      .filter((k) => raw[k] !== undefined)
      .map((k) => [k, raw[k]]),
  );
  return { ...top, ...(text as Record<string, unknown>) };
}

/** A soft cap: the config's value (null: none), or the variant's default when absent. */
function softcap(r: ConfigReader, key: string, fallback: number | null): number | undefined {
  const v = r.raw[key] === undefined ? fallback : r.raw[key];
  if (v === null) return undefined;
  if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
    throw new ModelError("BAD_CONFIG", r.file, `"${key}" must be a positive number or null`);
  }
  return v;
}

/**
 * A Gemma layer type's frequencies: one cos/sin factor and one context for all layers is all the
 * engine has, so YaRN's factor and dynamic NTK's shorter context are refused.
 */
function plainRope(s: ConfigReader, headDim: number, maxPositions: number, file: string): Float32Array {
  const rope = ropeFrequencies(s, headDim, maxPositions);
  if (rope.factor !== 1 || rope.maxPositions !== maxPositions)
    throw new ModelError("BAD_CONFIG", file, "Gemma with YaRN's attention factor or dynamic NTK is not supported");
  return rope.inv;
}

function parseConfig(raw: Record<string, unknown>, file: string, architecture: string, v: Variant): ModelConfig {
  const r = new ConfigReader(textConfig(raw, architecture, file), file);
  const DEFAULTS = { 1: GEMMA1_DEFAULTS, 2: GEMMA2_DEFAULTS, 3: GEMMA3_DEFAULTS }[v.version];
  const gemma1 = v.version === 1;
  const hidden = r.int("hidden_size", DEFAULTS.hidden_size);
  const heads = r.int("num_attention_heads", DEFAULTS.num_attention_heads);
  const headDim = r.int("head_dim", DEFAULTS.head_dim);
  const layers = r.int("num_hidden_layers", DEFAULTS.num_hidden_layers);
  // layer_types, or every sliding_window_pattern-th layer global (older configs).
  const every = r.int("sliding_window_pattern", r.int("_sliding_window_pattern", DEFAULTS.sliding_window_pattern));
  const windows = gemma1
    ? undefined
    : slidingWindows(r, layers, r.int("sliding_window", DEFAULTS.sliding_window), (i) => (i + 1) % every !== 0);
  // Gemma 3's local layers' rotary step: their own base, unscaled (transformers' rotary_emb_local); in
  // transformers 5's form, rope_parameters.sliding_attention.
  const local =
    r.raw.rope_parameters === undefined || r.raw.rope_parameters === null
      ? new ConfigReader({ rope_theta: r.positive("rope_local_base_freq", DEFAULTS.rope_local_base_freq) }, file)
      : ropeSettings(r, "sliding_attention", DEFAULTS.rope_local_base_freq);
  const global = ropeSettings(r, "full_attention", DEFAULTS.rope_theta);
  const maxPositions = r.int("max_position_embeddings", DEFAULTS.max_position_embeddings);
  const attentionSoftcap = gemma1 ? undefined : softcap(r, "attn_logit_softcapping", DEFAULTS.attn_logit_softcapping);
  const finalSoftcap = gemma1 ? undefined : softcap(r, "final_logit_softcapping", DEFAULTS.final_logit_softcapping);
  return validateConfig(
    {
      architecture,
      hidden,
      layers,
      heads,
      kvHeads: r.int("num_key_value_heads", DEFAULTS.num_key_value_heads),
      headDim,
      intermediate: r.int("intermediate_size", DEFAULTS.intermediate_size),
      vocab: r.int("vocab_size", DEFAULTS.vocab_size),
      maxPositions,
      norm: "rms",
      normEps: r.epsilon("rms_norm_eps", DEFAULTS.rms_norm_eps),
      activation: r.activation("hidden_activation", "gelu_pytorch_tanh"),
      gatedFfn: true,
      ropeTheta: global.positive("rope_theta"),
      ropeInvFreq: plainRope(global, headDim, maxPositions, file),
      ...(v.version === 3 && { localRopeInvFreq: plainRope(local, headDim, maxPositions, file) }),
      ...(windows && { attentionWindows: windows }),
      attentionScale:
        1 / Math.sqrt(gemma1 ? headDim : r.positive("query_pre_attn_scalar", DEFAULTS.query_pre_attn_scalar)),
      embedScale: Math.sqrt(hidden),
      ...(attentionSoftcap !== undefined && { attentionSoftcap }),
      ...(finalSoftcap !== undefined && { finalSoftcap }),
      attentionBias: r.bool("attention_bias", false),
      positionOffset: 0,
      tiedEmbeddings: r.bool("tie_word_embeddings", true),
      bosTokenId: r.ids("bos_token_id")[0] ?? null,
      eosTokenIds: r.ids("eos_token_id"),
      dtype: r.dtype(),
    },
    file,
  );
}

/** Where the text model's tensors are: model.* (CausalLM), or under the multimodal model's prefix. */
function textPrefix(s: WeightStore): string {
  for (const p of ["model.", "model.language_model.", "language_model.model."]) {
    if (s.has(`${p}embed_tokens.weight`)) return p;
  }
  throw new ModelError("MISSING_TENSOR", s.dir, "no Gemma text model in the weights", "model.embed_tokens.weight");
}

/** A Gemma RMSNorm weight as the engine's norm reads it: 1 + w, in f32. */
function offsetNorm(s: WeightStore, name: string, dim: number): Norm {
  return mappedNorm(s.get(name, [dim]), "+1", (x) => 1 + x);
}

function bindWeights(c: ModelConfig, s: WeightStore, v: Variant): ModelWeights {
  const { hidden: H, heads: A, kvHeads: K, headDim: D, intermediate: F } = c;
  const p = textPrefix(s);
  const bias = c.attentionBias === true;
  const lin = (name: string, out: number, inp: number, withBias = false): Linear => ({
    w: s.get(`${name}.weight`, [out, inp]),
    b: withBias ? s.get(`${name}.bias`, [out]) : null,
  });
  const norm = (name: string, dim = H) => offsetNorm(s, `${name}.weight`, dim);
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.layers; i++) {
    const l = `${p}layers.${i}`;
    layers.push({
      attnNorm: norm(`${l}.input_layernorm`),
      qkv: {
        q: lin(`${l}.self_attn.q_proj`, A * D, H, bias),
        k: lin(`${l}.self_attn.k_proj`, K * D, H, bias),
        v: lin(`${l}.self_attn.v_proj`, K * D, H, bias),
      },
      ...(v.version === 3 && {
        qkNorm: { q: norm(`${l}.self_attn.q_norm`, D), k: norm(`${l}.self_attn.k_norm`, D) },
      }),
      o: lin(`${l}.self_attn.o_proj`, H, A * D, bias),
      gate: lin(`${l}.mlp.gate_proj`, F, H),
      up: lin(`${l}.mlp.up_proj`, F, H),
      down: lin(`${l}.mlp.down_proj`, H, F),
      // Gemma: the Llama block's two norms; Gemma 2 and 3: norms after both blocks too.
      ...(v.version === 1
        ? { ffnNorm: norm(`${l}.post_attention_layernorm`) }
        : {
            postAttnNorm: norm(`${l}.post_attention_layernorm`),
            ffnNorm: norm(`${l}.pre_feedforward_layernorm`),
            postFfnNorm: norm(`${l}.post_feedforward_layernorm`),
          }),
    });
  }
  return familyWeights(c, s, layers, {
    prefix: p,
    heads: ["lm_head.weight", "language_model.lm_head.weight"],
    finalNorm: norm(`${p}norm`),
  });
}

const variant = (architecture: string, v: Variant): ArchDefinition => ({
  parseConfig: (raw, file) => parseConfig(raw, file, architecture, v),
  bindWeights: (c, s) => bindWeights(c, s, v),
});

export const gemma = variant("GemmaForCausalLM", { version: 1 });
export const gemma2 = variant("Gemma2ForCausalLM", { version: 2 });
export const gemma3 = variant("Gemma3ForCausalLM", { version: 3 });
export const gemma3Multimodal = variant("Gemma3ForConditionalGeneration", { version: 3 });
