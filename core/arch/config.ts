// The architecture-neutral description of a model that the engine runs, and helpers that the
// per-architecture files (llama.ts, gpt2.ts, opt.ts) use to read Hugging Face config.json fields.
import type { DType, Weight, WeightStore } from "../loader/safetensors.js";
import { ModelError } from "../loader/errors.js";
import { native, NativeDType } from "../native/addon.js";

export type Activation = "silu" | "gelu" | "gelu_tanh" | "relu";

/** Everything the forward pass needs to know, whatever the checkpoint called it. */
export interface ModelConfig {
  readonly architecture: string; // the Hugging Face class name, e.g. "LlamaForCausalLM"
  readonly hidden: number;
  readonly layers: number;
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly intermediate: number;
  readonly vocab: number;
  readonly maxPositions: number;
  readonly norm: "rms" | "layer";
  readonly normEps: number;
  readonly activation: Activation;
  /** SwiGLU-style FFN: act(gate(x)) * up(x), then down. Otherwise act(up(x)), then down. */
  readonly gatedFfn: boolean;
  /** Rotary inverse frequencies (rotDim / 2 entries), or null for learned absolute positions. */
  readonly ropeInvFreq: Float32Array | null;
  /** The base ropeInvFreq was built from, before any rope_scaling (what a GGUF calls freq_base). */
  readonly ropeTheta?: number;
  /** cos and sin of the rotary step times this (Phi-3's longrope attention factor); absent: 1. */
  readonly ropeFactor?: number;
  /**
   * The rotary step turns adjacent pairs (2i, 2i + 1) (GPT-J, Cohere) rather than (i, i + rotDim/2)
   * (rotate-half, the rest); absent: rotate-half.
   */
  readonly ropeInterleaved?: boolean;
  /** Per layer, whether the rotary step runs (SmolLM3's NoPE layers have none); absent: every layer. */
  readonly ropeLayers?: readonly boolean[];
  /**
   * Per layer, how many of the latest positions a query attends to (Gemma 3's sliding-window layers),
   * 0 for all of them; absent: every layer attends to all.
   */
  readonly attentionWindows?: readonly number[];
  /** Rotary frequencies of the sliding-window layers (Gemma 3's local base); absent: ropeInvFreq. */
  readonly localRopeInvFreq?: Float32Array;
  /** Multiplies q·k in attention; absent: 1/√headDim (Gemma: query_pre_attn_scalar^-1/2). */
  readonly attentionScale?: number;
  /** Multiplies the token embeddings as they enter the first layer (Gemma: √hidden); absent: 1. */
  readonly embedScale?: number;
  /**
   * Multiplies the final norm's weight as the weights are bound, which multiplies the logits by it at
   * no cost per token (Granite: 1 / logits_scaling); absent: 1. ModelWeights.finalNorm already
   * holds the product, so nothing downstream applies it again.
   */
  readonly finalNormScale?: number;
  /**
   * The attention and FFN blocks run side by side on the same residual stream: x + attn(attnNorm(x)) +
   * ffn(ffnNorm(x)) (GPT-NeoX), where a null ffnNorm means the FFN reads attnNorm(x) too (Phi-1/1.5/2);
   * absent: one after the other.
   */
  readonly parallelBlocks?: boolean;
  /** Gemma 2: attention scores s become cap · tanh(s / cap) before the softmax; absent: as they are. */
  readonly attentionSoftcap?: number;
  /** Gemma 2: the output logits z become cap · tanh(z / cap); absent: as they are. */
  readonly finalSoftcap?: number;
  /** Added to a token's position before looking up learned position embeddings (OPT: 2). */
  readonly positionOffset: number;
  readonly tiedEmbeddings: boolean;
  readonly bosTokenId: number | null;
  readonly eosTokenIds: readonly number[];
  /** torch_dtype from config.json, when it names one we support. */
  readonly dtype: DType | undefined;
  /** Attention biases where the architecture has them: Llama family (`attention_bias`) q, k, v and o;
   * StableLM (`use_qkv_bias`) q, k and v. */
  readonly attentionBias?: boolean;
  /** Mixture-of-experts FFNs (Mixtral, Qwen MoE, OLMoE): how tokens are routed; absent: dense FFNs. */
  readonly moe?: MoeConfig;
}

/**
 * How a mixture-of-experts layer routes a token: a router scores every expert, the token goes to its
 * `topK` best, and their outputs are summed weighted by the softmax of the router's logits over all
 * experts, or over the chosen ones (`normalize`: Mixtral, Qwen3-MoE's norm_topk_prob). `intermediate`
 * (ModelConfig's) is the widest FFN of the model; each expert's is `expertIntermediate`.
 */
export interface MoeConfig {
  readonly experts: number;
  readonly topK: number;
  readonly normalize: boolean;
  readonly expertIntermediate: number;
  /** The dense FFNs' width, in layers that are not mixtures (Qwen's mlp_only_layers). */
  readonly denseIntermediate: number;
  /** Qwen2-MoE's shared expert, which every token takes: its width; absent: none. */
  readonly sharedIntermediate?: number;
  /**
   * Phi-3.5-MoE's sparsemixer at inference: the best expert, weighted by the softmax over the experts
   * within `jitterEps` of it (relative), then the best of the rest likewise; absent: the softmax rule.
   */
  readonly sparsemixer?: { readonly jitterEps: number };
  /** Per layer, whether its FFN is a mixture (Qwen MoE's mlp_only_layers and decoder_sparse_step). */
  readonly layers: readonly boolean[];
}

/** y = W·x + b, with W stored in the file's dtype and layout. */
export interface Linear {
  readonly w: Weight;
  readonly b: Weight | null;
}

export interface Norm {
  readonly weight: Weight;
  readonly bias: Weight | null; // LayerNorm only, and not every one has it (Cohere's)
}

/** A feed-forward network: SwiGLU (gate, up, down) or a plain two-matrix MLP (up, down). */
export interface FfnWeights {
  readonly gate: Linear | null; // gated FFN only
  readonly up: Linear; // first FFN matrix (W_in): up_proj / c_fc / fc1
  readonly down: Linear; // W_out: down_proj / c_proj / fc2
}

/** A mixture-of-experts FFN (see MoeConfig). */
export interface MoeWeights {
  /** [experts × hidden]: a token's logit for each expert. */
  readonly router: Linear;
  /**
   * ERNIE 4.5's e_score_correction_bias: added to the router's probabilities to choose the experts,
   * not to weight them; absent: chosen by probability.
   */
  readonly selectionBias?: Float32Array;
  readonly experts: readonly FfnWeights[];
  /**
   * An expert every token takes: Qwen2-MoE's scaled by sigmoid(sharedGate · x) ([1 × hidden]),
   * GraniteMoeShared's as it is (no sharedGate).
   */
  readonly shared?: FfnWeights & { readonly sharedGate?: Linear };
}

/** A layer's FFN: dense (gate/up/down), or a mixture of experts (`moe`, and no dense matrices). */
export type LayerFfn =
  | (FfnWeights & { readonly moe?: undefined })
  | { readonly moe: MoeWeights; readonly gate?: undefined; readonly up?: undefined; readonly down?: undefined };

export type LayerWeights = AttentionWeights & LayerFfn;

interface AttentionWeights {
  /** The norm before the attention block; null where there is none (OLMo 2 norms after its blocks). */
  readonly attnNorm: Norm | null;
  /**
   * Separate projections (Llama, Qwen2, OPT) or one fused projection: [q; k; v] (GPT-2), or with
   * `grouped` key/value head by key/value head, each with its group's q heads, then its k and v head
   * (InternLM2; GPT-NeoX, whose groups are one q head each).
   */
  readonly qkv: { q: Linear; k: Linear; v: Linear } | { fused: Linear; grouped?: boolean };
  readonly o: Linear;
  /** The norm before the FFN block; null where there is none (OLMo 2) or the FFN reads the attention's (Phi's parallelBlocks). */
  readonly ffnNorm: Norm | null;
  /**
   * An RMSNorm of q and of k before the rotary step: over each head (weights [headDim]: Qwen3, Gemma 3)
   * or over each token's whole projection (weights [heads × headDim]: OLMo 2).
   */
  readonly qkNorm?: { q: Norm; k: Norm };
  /** Gemma, OLMo 2: norms of the attention and FFN blocks' outputs, before their residual adds. */
  readonly postAttnNorm?: Norm;
  readonly postFfnNorm?: Norm;
}

/**
 * Readers of a checkpoint's linear layers and norms by name (`name.weight`, `name.bias`), shapes
 * checked: the linears' biases where asked (by default `linearBias`), the norms' with `normBias`
 * (LayerNorms that have one), norms `hidden` wide unless told.
 */
export function tensorReader(s: WeightStore, hidden: number, o: { normBias?: boolean; linearBias?: boolean } = {}) {
  return {
    linear: (name: string, out: number, inp: number, bias = o.linearBias ?? false): Linear => ({
      w: s.get(`${name}.weight`, [out, inp]),
      b: bias ? s.get(`${name}.bias`, [out]) : null,
    }),
    norm: (name: string, dim = hidden): Norm => ({
      weight: s.get(`${name}.weight`, [dim]),
      bias: o.normBias ? s.get(`${name}.bias`, [dim]) : null,
    }),
  };
}

/** Bytes of a linear layer's weight and bias. */
export function linearBytes(x: Linear): number {
  return x.w.byteLength + (x.b?.byteLength ?? 0);
}

/** Weight bytes a layer's attention block reads per token: q, k and v (or the fused one) and o. */
export function attentionBytes(lw: LayerWeights): number {
  const qkv = "fused" in lw.qkv ? [lw.qkv.fused] : [lw.qkv.q, lw.qkv.k, lw.qkv.v];
  return [...qkv, lw.o].reduce((a, x) => a + linearBytes(x), 0);
}

/** Weight bytes of a dense FFN: W_up (W_in), W_down and, when gated, W_gate, with their biases. */
export function ffnBytes(f: FfnWeights): number {
  return linearBytes(f.up) + linearBytes(f.down) + (f.gate ? linearBytes(f.gate) : 0);
}

/** A layer's dense FFN, or its first expert (a mixture's experts are all one size). */
export function firstFfn(lw: LayerWeights): FfnWeights {
  return lw.moe ? lw.moe.experts[0] : lw;
}

/**
 * Weight bytes a layer's FFN reads per decoded token: the dense FFN, or a mixture's router, its
 * top-k experts (all of one size) and its shared expert.
 */
export function layerFfnBytes(lw: LayerWeights, c: ModelConfig): number {
  if (!lw.moe) return ffnBytes(lw);
  const { router, experts, shared } = lw.moe;
  const k = c.moe?.topK ?? experts.length;
  return (
    linearBytes(router) +
    k * ffnBytes(experts[0]) +
    (shared ? ffnBytes(shared) + (shared.sharedGate ? linearBytes(shared.sharedGate) : 0) : 0)
  );
}

export interface ModelWeights {
  readonly embed: Weight; // [vocab, hidden]
  readonly positions: Weight | null; // learned position table [maxPositions + offset, hidden]
  readonly layers: readonly LayerWeights[];
  readonly finalNorm: Norm;
  readonly head: Linear; // [vocab, hidden]
}

/** One entry in the architecture registry (core/arch/index.ts). */
export interface ArchDefinition {
  parseConfig(raw: Record<string, unknown>, file: string): ModelConfig;
  bindWeights(config: ModelConfig, store: WeightStore): ModelWeights;
  /** Tensors that transformers keeps in float32 whatever torch_dtype says (ERNIE 4.5's router). */
  readonly f32Tensors?: RegExp;
}

const TORCH_DTYPES: Record<string, DType> = { float32: "F32", float16: "F16", bfloat16: "BF16" };

/** Typed field access on config.json that reports the field and file on failure. */
export class ConfigReader {
  /** `prefix` names a nested object in messages ("rope_scaling."), or names each key where the file has it. */
  constructor(
    readonly raw: Record<string, unknown>,
    readonly file: string,
    readonly prefix: string | ((key: string) => string) = "",
  ) {}

  /** How messages name `key`. */
  name(key: string): string {
    return typeof this.prefix === "string" ? this.prefix + key : this.prefix(key);
  }

  private fail(key: string, detail: string): never {
    throw new ModelError("BAD_CONFIG", this.file, `"${this.name(key)}" ${detail}`);
  }

  int(key: string, fallback?: number): number {
    const v = this.raw[key] ?? fallback;
    if (v === undefined) this.fail(key, "is missing");
    if (!Number.isSafeInteger(v) || (v as number) <= 0)
      this.fail(key, `must be a positive integer, got ${JSON.stringify(v)}`);
    return v as number;
  }

  /** A number > 0: rotary bases, scaling factors, attention scalars (0 or less makes NaN or inf). */
  positive(key: string, fallback?: number): number {
    const v = this.number(key, fallback);
    if (!(v > 0)) this.fail(key, `must be a positive number, got ${v}`);
    return v;
  }

  /** A norm's epsilon: a number >= 0 (a negative one can make the norm divide by zero). */
  epsilon(key: string, fallback: number): number {
    const v = this.number(key, fallback);
    if (v < 0) this.fail(key, `must not be negative, got ${v}`);
    return v;
  }

  private number(key: string, fallback?: number): number {
    const v = this.raw[key] ?? fallback;
    if (v === undefined) this.fail(key, "is missing");
    if (typeof v !== "number" || !Number.isFinite(v)) this.fail(key, `must be a number, got ${JSON.stringify(v)}`);
    return v;
  }

  str(key: string, fallback?: string): string {
    const v = this.raw[key] ?? fallback;
    if (typeof v !== "string") this.fail(key, v === undefined ? "is missing" : "must be a string");
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.raw[key] ?? fallback;
    if (typeof v !== "boolean") this.fail(key, "must be true or false");
    return v;
  }

  /** An id or a list of ids (eos_token_id may be either); [] when absent. */
  ids(key: string): number[] {
    const v = this.raw[key];
    if (v === undefined || v === null) return [];
    const list = Array.isArray(v) ? v : [v];
    if (!list.every((x) => Number.isSafeInteger(x) && x >= 0)) this.fail(key, "must be a token id or a list of ids");
    return list as number[];
  }

  dtype(): DType | undefined {
    const v = this.raw.torch_dtype ?? this.raw.dtype;
    return typeof v === "string" ? TORCH_DTYPES[v] : undefined;
  }

  activation(key: string, fallback: string): Activation {
    const name = this.str(key, fallback);
    const map: Record<string, Activation> = {
      silu: "silu",
      swish: "silu",
      relu: "relu",
      gelu: "gelu",
      gelu_new: "gelu_tanh",
      gelu_pytorch_tanh: "gelu_tanh",
      gelu_fast: "gelu_tanh",
    };
    const act = map[name];
    if (!act) this.fail(key, `activation ${JSON.stringify(name)} is not supported`);
    return act;
  }
}

/** Checks shared by every architecture once its fields are read. */
export function validateConfig(c: ModelConfig, file: string): ModelConfig {
  const bad = (d: string) => new ModelError("BAD_CONFIG", file, d);
  if (!Number.isSafeInteger(c.headDim))
    throw bad(`hidden size ${c.hidden} is not a multiple of ${c.heads} attention heads`);
  if (c.heads % c.kvHeads !== 0)
    throw bad(`${c.heads} attention heads are not a multiple of ${c.kvHeads} key/value heads`);
  if (c.ropeInvFreq && c.ropeInvFreq.length * 2 > c.headDim) throw bad("rotary dimension exceeds head_dim");
  for (const id of [...c.eosTokenIds, ...(c.bosTokenId === null ? [] : [c.bosTokenId])]) {
    if (id >= c.vocab) throw bad(`special token id ${id} is outside the vocabulary of ${c.vocab}`);
  }
  return c;
}

/**
 * Layer l's rotary frequencies: none in SmolLM3's NoPE layers (or without rotary positions), Gemma
 * 3's local ones in its sliding-window layers, else ropeInvFreq. The engine and the ONNX export
 * both ask here.
 */
export function layerRope(c: ModelConfig, l: number): Float32Array | null {
  if (c.ropeLayers?.[l] === false) return null;
  if ((c.attentionWindows?.[l] ?? 0) > 0 && c.localRopeInvFreq) return c.localRopeInvFreq;
  return c.ropeInvFreq;
}

/**
 * Per-layer attention windows of a config whose attention slides (transformers' layer_types when
 * listed, else `windowed(i)` for layer i), or undefined when `window` is unset: all layers attend
 * to all positions.
 */
export function slidingWindows(
  r: ConfigReader,
  layers: number,
  window: unknown,
  windowed: (i: number) => boolean,
): number[] | undefined {
  if (window === undefined || window === null) return undefined;
  if (!Number.isSafeInteger(window) || (window as number) <= 0) {
    throw new ModelError("BAD_CONFIG", r.file, `"sliding_window" must be a positive integer or null`);
  }
  const types = r.raw.layer_types;
  if (types === undefined || types === null) {
    return Array.from({ length: layers }, (_, i) => (windowed(i) ? (window as number) : 0));
  }
  if (
    !Array.isArray(types) ||
    types.length !== layers ||
    !types.every((t) => t === "sliding_attention" || t === "full_attention")
  ) {
    throw new ModelError(
      "BAD_CONFIG",
      r.file,
      `layer_types must list "sliding_attention" or "full_attention" for each of the ${layers} layers`,
    );
  }
  return types.map((t) => (t === "sliding_attention" ? (window as number) : 0));
}

/**
 * Windows in all but every `every`-th layer, or in layer_types' sliding layers, with the rotary step
 * in those layers only: the global ones have no positions (Cohere 2, EXAONE 4.0).
 */
export function slidingRopeLayers(
  r: ConfigReader,
  layers: number,
  window: unknown,
  every: number,
): Pick<ModelConfig, "attentionWindows" | "ropeLayers"> {
  const windows = slidingWindows(r, layers, window, (i) => (i + 1) % every !== 0)!;
  return { attentionWindows: windows, ropeLayers: windows.map((w) => w > 0) };
}

export type RopeLayerType = "full_attention" | "sliding_attention";

/**
 * A layer type's rotary settings as one flat reader (rope_theta, partial_rotary_factor, rope_type and
 * the scaling fields), wherever config.json keeps them. transformers 5 writes `rope_parameters`: one
 * object, or one per layer type (Gemma 3: "full_attention", "sliding_attention"); earlier versions
 * keep rope_theta and partial_rotary_factor at the top and the scaling in `rope_scaling`. Reading only
 * the old form would run a transformers 5 checkpoint with the default base and no scaling: wrong
 * positions, no error. As transformers does, a top-level partial_rotary_factor wins over the object's
 * and the object's rope_theta over a top-level one; `theta` fills in when neither has one. Messages
 * name each field where the file has it.
 */
export function ropeSettings(
  r: ConfigReader,
  layerType: RopeLayerType = "full_attention",
  theta = 10000,
): ConfigReader {
  const bad = (d: string) => new ModelError("BAD_CONFIG", r.file, d);
  const top = { rope_theta: r.raw.rope_theta ?? theta, partial_rotary_factor: r.raw.partial_rotary_factor };
  const params = r.raw.rope_parameters;
  if (params === undefined || params === null) {
    const scaling = objectOrNull(r.raw.rope_scaling, "rope_scaling", r.file) ?? {};
    const own = new Set(Object.keys(scaling));
    return new ConfigReader({ ...scaling, ...top }, r.file, (k) => (k in top || !own.has(k) ? k : `rope_scaling.${k}`));
  }
  const all = objectOrNull(params, "rope_parameters", r.file) ?? {};
  const layerTypes = Array.isArray(r.raw.layer_types) ? (r.raw.layer_types as unknown[]) : [];
  const keys = Object.keys(all);
  const perType =
    keys.length > 0 && keys.every((k) => k === "full_attention" || k === "sliding_attention" || layerTypes.includes(k));
  const where = perType ? `rope_parameters.${layerType}` : "rope_parameters";
  const own = perType ? objectOrNull(all[layerType], where, r.file) : all;
  if (!own) throw bad(`"${where}" is missing`);
  const merged: Record<string, unknown> = { ...own, rope_theta: own.rope_theta ?? top.rope_theta };
  if (top.partial_rotary_factor !== undefined) merged.partial_rotary_factor = top.partial_rotary_factor;
  const named = (k: string) =>
    (k === "partial_rotary_factor" && top.partial_rotary_factor !== undefined) || !(k in own) ? k : `${where}.${k}`;
  return new ConfigReader(merged, r.file, named);
}

function objectOrNull(v: unknown, name: string, file: string): Record<string, unknown> | null {
  if (v === undefined || v === null) return null;
  if (typeof v !== "object" || Array.isArray(v)) {
    throw new ModelError("BAD_CONFIG", file, `"${name}" must be an object or null`);
  }
  return v as Record<string, unknown>;
}

/** The rope_type of a ropeSettings reader ("type" in older files), "default" when unset. */
export function ropeType(s: ConfigReader): string {
  return s.str("rope_type", typeof s.raw.type === "string" ? s.raw.type : "default");
}

/** A rotary step: its inverse frequencies, and the factor on cos and sin (YaRN's attention factor; else 1). */
export interface RopeFrequencies {
  inv: Float32Array;
  factor: number;
  /**
   * The positions the frequencies hold for: max_position_embeddings, or with dynamic NTK scaling its
   * original length, past which transformers raises the base (changing every cached key), so the
   * context stops there.
   */
  maxPositions: number;
}

/** A rotary step's ModelConfig fields. */
export function ropeFields(rope: RopeFrequencies): Pick<ModelConfig, "maxPositions" | "ropeInvFreq" | "ropeFactor"> {
  return {
    maxPositions: rope.maxPositions,
    ropeInvFreq: rope.inv,
    ...(rope.factor !== 1 && { ropeFactor: rope.factor }),
  };
}

/**
 * Rotary frequencies from ropeSettings, with the scaling variants Hugging Face models ship (default,
 * linear, llama3, yarn, dynamic); `maxPositions` is max_position_embeddings, YaRN's fallback for its
 * original length and factor. Dynamic NTK (InternLM2, Qwen 1) turns at the base frequencies up to
 * its original length, which becomes the context.
 */
export function ropeFrequencies(s: ConfigReader, headDim: number, maxPositions: number): RopeFrequencies {
  const { theta, rotDim } = rotary(s, headDim);
  const inv = new Float64Array(rotDim / 2);
  for (let i = 0; i < inv.length; i++) inv[i] = 1 / Math.pow(theta, (2 * i) / rotDim);
  let factor = 1;
  let positions = maxPositions;
  const type = ropeType(s);
  if (type === "llama3") applyLlama3Scaling(inv, s);
  else if (type === "linear") inv.forEach((f, i) => (inv[i] = f / s.positive("factor")));
  else if (type === "yarn") factor = applyYarnScaling(inv, s, theta, rotDim, maxPositions);
  else if (type === "dynamic") {
    s.positive("factor"); // checked, though it only applies past the original length
    positions = Math.min(maxPositions, s.int("original_max_position_embeddings", maxPositions));
  } else if (type !== "default") {
    throw new ModelError(
      "BAD_CONFIG",
      s.file,
      `"${s.name("rope_type")}" "${type}" is not supported (default, linear, llama3, yarn, dynamic are)`,
    );
  }
  return { inv: Float32Array.from(inv), factor, maxPositions: positions };
}

/** Far above any model's head dimension (a few hundred at most). */
const MAX_ROTARY_DIM = 1 << 16;

/** The rotary base and the dimensions it turns (from ropeSettings): head_dim × partial_rotary_factor,
 * even and > 0 (validateConfig checks it fits head_dim). */
export function rotary(s: ConfigReader, headDim: number): { theta: number; rotDim: number } {
  const theta = s.positive("rope_theta");
  const rotDim = Math.floor(headDim * s.positive("partial_rotary_factor", 1));
  // Checked before the frequency table is built (the weights' shapes are checked later): a corrupt
  // head_dim of 2^31 spent two minutes here before the shape check refused it.
  if (rotDim > MAX_ROTARY_DIM)
    throw new ModelError(
      "BAD_CONFIG",
      s.file,
      `rotary dimension ${rotDim} (head_dim × partial_rotary_factor) is over ${MAX_ROTARY_DIM}`,
    );
  if (rotDim < 2 || rotDim % 2 !== 0) {
    throw new ModelError(
      "BAD_CONFIG",
      s.file,
      `rotary dimension ${rotDim} (head_dim × partial_rotary_factor) must be even and > 0`,
    );
  }
  return { theta, rotDim };
}

/**
 * YaRN (Qwen2.5/Qwen3 long context, OLMo 3), as transformers computes it: frequencies that turn fewer
 * than beta_slow times over the original length are interpolated (divided by factor), those turning
 * more than beta_fast times kept, a linear ramp between (its ends floored and ceiled unless
 * truncate is false); cos and sin are multiplied by the returned attention factor (attention_factor,
 * else 0.1·ln(factor) + 1, or DeepSeek's ratio of two such terms with mscale / mscale_all_dim).
 */
function applyYarnScaling(inv: Float64Array, s: ConfigReader, theta: number, rotDim: number, maxPositions: number) {
  const original = s.positive("original_max_position_embeddings", maxPositions);
  const factor = s.positive("factor", maxPositions / original);
  const betaFast = s.positive("beta_fast", 32);
  const betaSlow = s.positive("beta_slow", 1);
  const mscale = (m: number) => (factor <= 1 ? 1 : 0.1 * m * Math.log(factor) + 1);
  const attention = s.positive(
    "attention_factor",
    s.raw.mscale && s.raw.mscale_all_dim
      ? mscale(s.positive("mscale")) / mscale(s.positive("mscale_all_dim"))
      : mscale(1),
  );
  // The dimension whose frequency turns `rotations` times over the original length.
  const dimFor = (rotations: number) =>
    (rotDim * Math.log(original / (rotations * 2 * Math.PI))) / (2 * Math.log(theta));
  const truncate = s.bool("truncate", true);
  let low = dimFor(betaFast);
  let high = dimFor(betaSlow);
  if (truncate) [low, high] = [Math.floor(low), Math.ceil(high)];
  low = Math.max(low, 0);
  high = Math.min(high, rotDim - 1);
  if (low === high) high += 0.001;
  for (let i = 0; i < inv.length; i++) {
    const ramp = Math.min(1, Math.max(0, (i - low) / (high - low))); // 0: kept, 1: interpolated
    inv[i] = (inv[i] / factor) * ramp + inv[i] * (1 - ramp);
  }
  return attention;
}

/** Llama 3.1+: low frequencies slowed by `factor`, high ones kept, a smooth ramp between. */
function applyLlama3Scaling(inv: Float64Array, s: ConfigReader): void {
  const factor = s.positive("factor");
  const low = s.positive("low_freq_factor");
  const high = s.positive("high_freq_factor");
  const oldLen = s.positive("original_max_position_embeddings");
  if (!(high > low))
    throw new ModelError("BAD_CONFIG", s.file, `"${s.name("high_freq_factor")}" must exceed low_freq_factor`);
  const lowWavelen = oldLen / low;
  const highWavelen = oldLen / high;
  for (let i = 0; i < inv.length; i++) {
    const wavelen = (2 * Math.PI) / inv[i];
    if (wavelen > lowWavelen) inv[i] /= factor;
    else if (wavelen >= highWavelen) {
      const smooth = (oldLen / wavelen - low) / (high - low);
      inv[i] = (1 - smooth) * (inv[i] / factor) + smooth * inv[i];
    }
  }
}

/**
 * A Llama-family model (Phi-3's and Gemma's too) around its layers: the embedding, the final RMSNorm,
 * and lm_head, or the embedding when the head is tied (or, with tie_word_embeddings unset, absent).
 * A config that says untied with no lm_head is a MISSING_TENSOR error rather than a silently tied
 * model. `text` places a multimodal checkpoint's language model: its tensor prefix, where its lm_head
 * may be, and a final norm read its own way (Gemma's 1 + w).
 */
export function familyWeights(
  c: ModelConfig,
  s: WeightStore,
  layers: LayerWeights[],
  text: { prefix?: string; heads?: string[]; finalNorm?: Norm } = {},
): ModelWeights {
  const prefix = text.prefix ?? "model.";
  const embed = s.get(`${prefix}embed_tokens.weight`, [c.vocab, c.hidden]);
  const headName = (text.heads ?? ["lm_head.weight"]).find((n) => s.has(n));
  const tied = c.tiedEmbeddings || !headName;
  if (!c.tiedEmbeddings && tied) {
    throw new ModelError(
      "MISSING_TENSOR",
      s.dir,
      "config.json says the head is not tied, but there is no lm_head",
      "lm_head.weight",
    );
  }
  return {
    embed,
    positions: null,
    layers,
    finalNorm: scaledNorm(text.finalNorm ?? { weight: s.get(`${prefix}norm.weight`, [c.hidden]), bias: null }, c),
    head: { w: tied ? embed : s.get(headName!, [c.vocab, c.hidden]), b: null },
  };
}

/** The final norm times ModelConfig.finalNormScale (Granite's 1 / logits_scaling), when one is set. */
function scaledNorm(n: Norm, c: ModelConfig): Norm {
  const k = c.finalNormScale;
  if (k === undefined || k === 1) return n;
  if (n.bias) throw new Error(`${c.architecture}: finalNormScale is for RMSNorm weights`);
  return mappedNorm(n.weight, `*${k}`, (x) => x * k);
}

/** A stored [1, n] (or [n]) tensor's values as f32. */
export function vectorValues(w: Weight): Float32Array {
  const v = new Float32Array(w.cols);
  native().embed(v, w.handle, Int32Array.of(0));
  return v;
}

/** A norm weight as the engine reads it after `f` of each value (Gemma's 1 + w), in f32; `tag` marks its name. */
export function mappedNorm(w: Weight, tag: string, f: (x: number) => number): Norm {
  const n = native();
  const v = vectorValues(w);
  for (let i = 0; i < v.length; i++) v[i] = Math.fround(f(v[i]));
  const weight: Weight = {
    ...w,
    name: `${w.name}${tag}`,
    values: v,
    shape: [v.length],
    dtype: "F32",
    byteLength: v.length * 4,
    handle: n.weightFromArray(v, NativeDType.F32, 1, v.length, false),
    rows: 1,
    cols: v.length,
    transposed: false,
  };
  return { weight, bias: null };
}

/**
 * A LayerNorm with no parameters (OLMo's): weight 1, no bias, as long as `like`'s rows (the hidden
 * size, from a tensor that has it), since the kernels take a weight vector.
 */
export function unitNorm(like: Weight): Norm {
  return mappedNorm(like, "*0+1", () => 1);
}

/**
 * Where ModelConfig.ropeInterleaved: for each of `heads` heads of `headDim`, the index of the q or k
 * entry that goes to each place so that the rope op's rotate-half pairs (i, i + rotDim/2) are the
 * model's adjacent pairs (2i, 2i + 1); dims past rotDim stay. The same permutation of q and k in
 * every head leaves q·k, so the attention, unchanged; `tokens` copies, one per token of a batch.
 */
export function interleavedRopeOrder(tokens: number, heads: number, headDim: number, rotDim: number): Int32Array {
  const half = rotDim / 2;
  const idx = new Int32Array(tokens * heads * headDim);
  for (let r = 0; r < tokens * heads; r++) {
    for (let d = 0; d < headDim; d++) {
      idx[r * headDim + d] = r * headDim + (d < half ? 2 * d : d < rotDim ? 2 * (d - half) + 1 : d);
    }
  }
  return idx;
}
