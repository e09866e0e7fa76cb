// Llama family: LlamaForCausalLM (Llama 2/3.x, TinyLlama, SmolLM2), MistralForCausalLM,
// Qwen2ForCausalLM (the same block with q/k/v biases), Qwen3ForCausalLM (an RMSNorm over each head
// of q and k before the rotary step, no biases) and SmolLM3ForCausalLM (no rotary step in some
// layers, `no_rope_layers`). RMSNorm, rotary positions, SwiGLU FFN, grouped-query attention.
//
// GraniteForCausalLM (IBM Granite 3.x) is the same block with four muP multipliers: embeddings times
// embedding_multiplier, attention scores times attention_multiplier (in place of 1/√head_dim), each
// block's output times residual_multiplier r before its residual add, logits divided by
// logits_scaling. It runs with no op of its own: the engine carries the residual stream divided by r
// (u = h / r, so the embeddings enter times embedding_multiplier / r and the blocks' outputs add
// unscaled); an RMSNorm of h = r·u equals one of u with eps / r², so every norm takes that eps; and
// the logits, linear in the final norm's weight, are divided by scaling that weight (finalNormScale).
//
// MiniCPMForCausalLM (MiniCPM 1B/2B, remote code) has the same kind of multipliers under other names:
// embeddings times scale_emb, block outputs times scale_depth / √layers, logits divided by
// hidden_size / dim_model_base (attention keeps 1/√head_dim); they fold the same way.
//
// Olmo2ForCausalLM (OLMo 2) norms the blocks' outputs instead of their inputs (post_attention_layernorm,
// post_feedforward_layernorm, none before), and its q/k norms span each token's whole projection
// (weights [heads × head_dim]) rather than each head.
//
// Exaone4ForCausalLM (EXAONE 4.0) has OLMo 2's norms after the blocks with Qwen3's per-head q/k norms,
// and, when sliding_window is set, windows in three of four layers (sliding_window_pattern, or
// layer_types) with the rotary step in those only: the global layers have no positions.
// MixtralForCausalLM (Mistral's block), GraniteMoeForCausalLM and GraniteMoeSharedForCausalLM (Granite's), Qwen2MoeForCausalLM (Qwen2's), Qwen3MoeForCausalLM (Qwen3's)
// and OlmoeForCausalLM (Llama's with RMSNorms of q and k over whole projections, as OLMo 2's) have
// mixture-of-experts FFNs: see moe.ts.
//
// Phi-3 (phi3.ts) builds its config with familyConfig too.
import type { WeightStore } from "../loader/safetensors.js";
import {
  ConfigReader,
  familyWeights,
  ropeFields,
  ropeFrequencies,
  ropeSettings,
  slidingRopeLayers,
  slidingWindows,
  validateConfig,
  tensorReader,
  type ArchDefinition,
  type LayerWeights,
  type ModelConfig,
  type ModelWeights,
} from "./config.js";
import { ModelError } from "../loader/errors.js";
import { moeWeights, parseMoe, type MoeFamily } from "./moe.js";

/** What sets a variant's attention apart (see the header). */
interface Variant {
  /** "always": q/k/v biases whatever config.json says (Qwen2); "config": q/k/v/o biases when
   * `attention_bias` is true, as Hugging Face's Llama, Mistral and Qwen3 classes build them. */
  bias: "always" | "config";
  qkNorm: boolean;
  /** SmolLM3: per-layer NoPE from `no_rope_layers` (1 = rotary step) or `no_rope_layer_interval`. */
  noRope?: boolean;
  /** Granite: the muP multipliers (see the header). */
  granite?: boolean;
  /** MiniCPM: its muP multipliers, folded as Granite's (see the header). */
  minicpm?: boolean;
  /** OLMo 2: norms after the blocks, q/k norms over whole projections (see the header). */
  olmo2?: boolean;
  /** EXAONE 4.0: OLMo 2's norms, per-head q/k norms, windows with rotary only there (see the header). */
  exaone4?: boolean;
  /** q/k norms over each token's whole projection (OLMo 2, OLMoE), not each head. */
  wholeQkNorm?: boolean;
  /** Mixture-of-experts FFNs, named and routed as this family's (moe.ts). */
  moe?: MoeFamily;
}

/** EXAONE 4.0's windows (Exaone4Config: 4096, in all but every 4th layer) and its rotary layers. */
function exaone4Layers(r: ConfigReader, layers: number): Pick<ModelConfig, "attentionWindows" | "ropeLayers"> {
  if (r.raw.sliding_window === null) return {}; // every layer global, with the rotary step
  const pattern = r.raw.sliding_window_pattern ?? 4;
  if (typeof pattern !== "number" && r.raw.layer_types == null) {
    throw new ModelError("BAD_CONFIG", r.file, `"sliding_window_pattern" ${JSON.stringify(pattern)} needs layer_types`);
  }
  // A pattern string ("LLLG") leaves the layers to layer_types, which slidingWindows reads first.
  const every = typeof pattern === "number" ? r.int("sliding_window_pattern", 4) : 0;
  return slidingRopeLayers(r, layers, r.raw.sliding_window ?? 4096, every);
}

/** SmolLM3's layers with a rotary step: `no_rope_layers` (1 = rotary), else every
 * `no_rope_layer_interval`-th layer (default 4) without, as transformers builds the default list. */
function ropeLayers(raw: Record<string, unknown>, r: ConfigReader, layers: number, file: string): boolean[] {
  const list = raw.no_rope_layers;
  if (list === undefined || list === null) {
    const every = r.int("no_rope_layer_interval", 4);
    return Array.from({ length: layers }, (_, i) => (i + 1) % every !== 0);
  }
  if (!Array.isArray(list) || list.length !== layers || !list.every((x) => x === 0 || x === 1)) {
    throw new ModelError("BAD_CONFIG", file, `no_rope_layers must list 0 or 1 for each of the ${layers} layers`);
  }
  return list.map((x) => x === 1);
}

/** What a member of the family reads its own way: its context, rotary step and attention biases. */
export type MemberFields = Pick<ModelConfig, "maxPositions" | "ropeInvFreq"> &
  Partial<Pick<ModelConfig, "ropeFactor" | "ropeLayers" | "attentionBias" | "attentionWindows">>;

/**
 * A Llama-family ModelConfig (Phi-3's too): the fields every member reads alike, plus what
 * `member(headDim, layers)` reads. `normEps` is the rms_norm_eps default of the member's
 * transformers config class (Llama 1e-6, Phi-3 1e-5).
 */
export function familyConfig(
  r: ConfigReader,
  architecture: string,
  normEps: number,
  member: (headDim: number, layers: number) => MemberFields,
): ModelConfig {
  const hidden = r.int("hidden_size");
  const heads = r.int("num_attention_heads");
  const headDim = r.int("head_dim", Math.floor(hidden / heads));
  const layers = r.int("num_hidden_layers");
  // transformers' Llama and SmolLM3 MLPs take biases on gate, up and down with mlp_bias; the FFN
  // kernels here have none, so such a model would run without them and answer wrongly.
  const readsMlpBias = ["LlamaForCausalLM", "SmolLM3ForCausalLM", "GraniteForCausalLM"].includes(architecture);
  if (readsMlpBias && r.bool("mlp_bias", false)) {
    throw new ModelError("BAD_CONFIG", r.file, `"mlp_bias": true (biases in the FFN) is not supported`);
  }
  return validateConfig(
    {
      architecture,
      hidden,
      layers,
      heads,
      kvHeads: r.int("num_key_value_heads", heads),
      headDim,
      intermediate: r.int("intermediate_size"),
      vocab: r.int("vocab_size"),
      norm: "rms",
      normEps: r.epsilon("rms_norm_eps", normEps),
      ropeTheta: ropeSettings(r).positive("rope_theta"), // what ropeInvFreq and longrope build on
      activation: r.activation("hidden_act", "silu"),
      gatedFfn: true,
      positionOffset: 0,
      tiedEmbeddings: r.bool("tie_word_embeddings", false),
      bosTokenId: r.ids("bos_token_id")[0] ?? null,
      eosTokenIds: r.ids("eos_token_id"),
      dtype: r.dtype(),
      ...member(headDim, layers),
    },
    r.file,
  );
}

function parseConfig(raw: Record<string, unknown>, file: string, architecture: string, v: Variant): ModelConfig {
  const r = new ConfigReader(raw, file);
  const eps = v.olmo2 || v.exaone4 || v.moe === "olmoe" ? 1e-5 : 1e-6;
  const parsed = familyConfig(r, architecture, eps, (headDim, layers) => {
    // Sliding-window attention as transformers builds it: Mistral's (Mixtral's) in every layer whenever
    // sliding_window is set; Qwen2's and Qwen3's with use_sliding_window, from layer
    // max_window_layers on (Qwen2Config's default: 28), or as layer_types lists.
    const mistral = architecture === "MistralForCausalLM" || v.moe === "mixtral";
    const window = mistral || raw.use_sliding_window === true ? raw.sliding_window : undefined;
    const from = mistral ? 0 : r.int("max_window_layers", 28);
    const windows = slidingWindows(r, layers, window, (i) => i >= from);
    const maxPositions = r.int("max_position_embeddings", 2048);
    const rope = ropeFrequencies(ropeSettings(r), headDim, maxPositions);
    return {
      ...ropeFields(rope),
      ...(windows?.some((w) => w > 0) && { attentionWindows: windows }),
      ...(v.exaone4 && exaone4Layers(r, layers)),
      ...(v.noRope && { ropeLayers: ropeLayers(raw, r, layers, file) }),
      attentionBias: v.bias === "config" && r.bool("attention_bias", false),
    };
  });
  if (v.moe === "olmoe" && r.raw.clip_qkv != null) {
    throw new ModelError(
      "BAD_CONFIG",
      file,
      `"clip_qkv": ${JSON.stringify(r.raw.clip_qkv)} (q, k, v clamped) is not supported`,
    );
  }
  const c = v.moe ? { ...parsed, ...parseMoe(r, parsed.layers, v.moe) } : parsed;
  if (v.granite) {
    return foldMultipliers(c, {
      embedding: r.positive("embedding_multiplier", 1),
      residual: r.positive("residual_multiplier", 1),
      attention: r.positive("attention_multiplier", 1),
      logitsDivisor: r.positive("logits_scaling", 1),
    });
  }
  if (v.minicpm) {
    return foldMultipliers(c, {
      embedding: r.positive("scale_emb", 1),
      residual: r.positive("scale_depth", 1) / Math.sqrt(c.layers),
      logitsDivisor: c.hidden / r.positive("dim_model_base", c.hidden),
    });
  }
  return c;
}

/** muP multipliers (Granite's, MiniCPM's) folded into what the engine already runs (see the header). */
function foldMultipliers(
  c: ModelConfig,
  m: { embedding: number; residual: number; attention?: number; logitsDivisor: number },
): ModelConfig {
  return {
    ...c,
    embedScale: m.embedding / m.residual,
    normEps: c.normEps / (m.residual * m.residual),
    ...(m.attention !== undefined && { attentionScale: m.attention }),
    finalNormScale: 1 / m.logitsDivisor,
  };
}

function bindWeights(c: ModelConfig, s: WeightStore, v: Variant): ModelWeights {
  const { hidden: H, heads: A, kvHeads: K, headDim: D, intermediate: F } = c;
  const { linear: lin, norm } = tensorReader(s, H);
  const qkvBias = v.bias === "always" || c.attentionBias === true;
  const denseF = c.moe?.denseIntermediate ?? F; // a mixture model's dense layers (F: its widest FFN)
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.layers; i++) {
    const p = `model.layers.${i}`;
    const post = v.olmo2 === true || v.exaone4 === true;
    layers.push({
      attnNorm: post ? null : norm(`${p}.input_layernorm`),
      qkv: {
        q: lin(`${p}.self_attn.q_proj`, A * D, H, qkvBias),
        k: lin(`${p}.self_attn.k_proj`, K * D, H, qkvBias),
        v: lin(`${p}.self_attn.v_proj`, K * D, H, qkvBias),
      },
      o: lin(`${p}.self_attn.o_proj`, H, A * D, c.attentionBias === true),
      ffnNorm: post ? null : norm(`${p}.post_attention_layernorm`),
      ...(post && {
        postAttnNorm: norm(`${p}.post_attention_layernorm`),
        postFfnNorm: norm(`${p}.post_feedforward_layernorm`),
      }),
      ...(v.qkNorm && {
        qkNorm: {
          q: norm(`${p}.self_attn.q_norm`, v.wholeQkNorm ? A * D : D),
          k: norm(`${p}.self_attn.k_norm`, v.wholeQkNorm ? K * D : D),
        },
      }),
      ...(v.moe && c.moe?.layers[i]
        ? { moe: moeWeights(c.moe, H, p, v.moe, s) }
        : {
            gate: lin(`${p}.mlp.gate_proj`, denseF, H),
            up: lin(`${p}.mlp.up_proj`, denseF, H),
            down: lin(`${p}.mlp.down_proj`, H, denseF),
          }),
    });
  }
  return familyWeights(c, s, layers);
}

const variant = (architecture: string, v: Variant): ArchDefinition => ({
  parseConfig: (raw, file) => parseConfig(raw, file, architecture, v),
  bindWeights: (c, s) => bindWeights(c, s, v),
});

export const llama = variant("LlamaForCausalLM", { bias: "config", qkNorm: false });
export const mistral = variant("MistralForCausalLM", { bias: "config", qkNorm: false });
export const qwen2 = variant("Qwen2ForCausalLM", { bias: "always", qkNorm: false });
export const qwen3 = variant("Qwen3ForCausalLM", { bias: "config", qkNorm: true });
export const smollm3 = variant("SmolLM3ForCausalLM", { bias: "config", qkNorm: false, noRope: true });
export const olmo2 = variant("Olmo2ForCausalLM", { bias: "config", qkNorm: true, olmo2: true, wholeQkNorm: true });
export const exaone4 = variant("Exaone4ForCausalLM", { bias: "config", qkNorm: true, exaone4: true });
export const minicpm = variant("MiniCPMForCausalLM", { bias: "config", qkNorm: false, minicpm: true });
export const mixtral = variant("MixtralForCausalLM", { bias: "config", qkNorm: false, moe: "mixtral" });
export const qwen2Moe = variant("Qwen2MoeForCausalLM", { bias: "always", qkNorm: false, moe: "qwen2" });
export const qwen3Moe = variant("Qwen3MoeForCausalLM", { bias: "config", qkNorm: true, moe: "qwen" });
export const olmoe = variant("OlmoeForCausalLM", { bias: "config", qkNorm: true, wholeQkNorm: true, moe: "olmoe" });
export const graniteMoe = variant("GraniteMoeForCausalLM", {
  bias: "config",
  qkNorm: false,
  granite: true,
  moe: "granite",
});
export const graniteMoeShared = variant("GraniteMoeSharedForCausalLM", {
  bias: "config",
  qkNorm: false,
  granite: true,
  moe: "granite",
});
export const granite = variant("GraniteForCausalLM", { bias: "config", qkNorm: false, granite: true });
