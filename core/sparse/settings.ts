// Sparsity settings: which method each module uses, its k, oversampling, predictor and shards.
// Settings are plain data, validated here, and can change between any two tokens (the
// Sparsifier applies them); nothing here touches weights.
import { UsageError } from "../loader/errors.js";
import type { ModelConfig } from "../arch/config.js";

export const FFN_METHODS = ["dense", "topk-exact", "hire", "dip", "dip-ca"] as const;
export type FfnMethod = (typeof FFN_METHODS)[number];
export const HEAD_METHODS = ["dense", "hire"] as const;
export type HeadMethod = (typeof HEAD_METHODS)[number];

/** How HiRE predicts scores: a group-quantized copy (int8/int4) or a rank-r factorisation. */
export type PredictorSpec = { kind: "int8" | "int4"; groupSize: number } | { kind: "lowrank"; rank: number };

export interface FfnSettings {
  method: FfnMethod;
  /** Neurons kept per layer: a fraction of the layer's neurons when ≤ 1, else a count. */
  k: number;
  /** HiRE computes oversample × k candidate rows exactly (k' = oversample · k). */
  oversample: number;
  predictor: PredictorSpec;
  /** Per-layer overrides (layer → value) of k (same units), oversample and the predictor. */
  perLayerK: Record<number, number>;
  perLayerOversample: Record<number, number>;
  perLayerPredictor: Record<number, PredictorSpec>;
  /** dip-ca: cache capacity as a fraction of each layer's neurons, and the score factor for uncached ones. */
  cacheFraction: number;
  cacheGamma: number;
}

export interface HeadSettings {
  method: HeadMethod;
  /** Vocabulary rows kept for sampling: a fraction of the vocabulary when ≤ 1, else a count. */
  k: number;
  oversample: number;
  predictor: PredictorSpec;
}

export interface SparsitySettings {
  ffn: FfnSettings;
  head: HeadSettings;
  /** DA-top-k shards P (1 = global top-k). */
  shards: number;
  /** Compare with the dense computation every N-th token (0 = never, 1 = every token). */
  auditEvery: number;
}

/**
 * Values per quantization group of an int4/int8 predictor (and of the int8 copy of x it meets).
 * 128, the usual group of int4 weight quantization (GPTQ, AWQ); llama.cpp's Q8_K activations use 256.
 * A predictor only ranks rows, and on the default model recall@k moved 0.963 → 0.961 from group 32 to
 * 128 while the int4 copy shrank from 4.5 to 4.125 bits per weight.
 */
export const DEFAULT_QUANT_GROUP = 128;
export const DEFAULT_LOWRANK_RANK = 128;

export const DEFAULT_SETTINGS: SparsitySettings = {
  ffn: {
    method: "dense",
    k: 0.1,
    oversample: 2,
    predictor: { kind: "int4", groupSize: DEFAULT_QUANT_GROUP },
    perLayerK: {},
    perLayerOversample: {},
    perLayerPredictor: {},
    cacheFraction: 0.3,
    cacheGamma: 0.5,
  },
  head: { method: "dense", k: 128, oversample: 4, predictor: { kind: "int4", groupSize: DEFAULT_QUANT_GROUP } },
  shards: 1,
  auditEvery: 0,
};

/** "int4", "int8", "int4:64" (group size), "lowrank:256" (rank). */
export function parsePredictor(text: string): PredictorSpec {
  const [kind, arg] = text.split(":");
  const n = arg === undefined ? undefined : Number(arg);
  if (arg !== undefined && !(Number.isInteger(n) && n! > 0))
    throw new UsageError(`predictor "${text}": "${arg}" is not a positive integer`);
  if (kind === "int4" || kind === "int8") return { kind, groupSize: n ?? DEFAULT_QUANT_GROUP };
  if (kind === "lowrank") return { kind, rank: n ?? DEFAULT_LOWRANK_RANK };
  throw new UsageError(`predictor "${text}" is not one of int4[:GROUP], int8[:GROUP], lowrank[:RANK]`);
}

export function predictorName(p: PredictorSpec): string {
  return p.kind === "lowrank" ? `lowrank:${p.rank}` : `${p.kind}:${p.groupSize}`;
}

/** Layer l's k, oversample and predictor: its override where it has one, else the FFN's setting. */
export function layerK(s: SparsitySettings, l: number): number {
  return s.ffn.perLayerK[l] ?? s.ffn.k;
}
export function layerOversample(s: SparsitySettings, l: number): number {
  return s.ffn.perLayerOversample[l] ?? s.ffn.oversample;
}
export function layerPredictor(s: SparsitySettings, l: number): PredictorSpec {
  return s.ffn.perLayerPredictor[l] ?? s.ffn.predictor;
}

/** k as a count out of `total` (fractions round to nearest, at least 1, at most total). */
export function resolveCount(k: number, total: number): number {
  const count = k <= 1 ? Math.round(k * total) : Math.round(k);
  return Math.max(1, Math.min(total, count));
}

/** Merge a partial update into settings and check the result against the model. */
export function mergeSettings(
  base: SparsitySettings,
  update: DeepPartial<SparsitySettings>,
  config: ModelConfig,
): SparsitySettings {
  const next: SparsitySettings = {
    ffn: {
      ...base.ffn,
      ...update.ffn,
      perLayerK: { ...base.ffn.perLayerK, ...(update.ffn?.perLayerK ?? {}) },
      perLayerOversample: { ...base.ffn.perLayerOversample, ...(update.ffn?.perLayerOversample ?? {}) },
      perLayerPredictor: {
        ...base.ffn.perLayerPredictor,
        ...(update.ffn?.perLayerPredictor as Record<number, PredictorSpec> | undefined),
      },
    } as FfnSettings,
    head: { ...base.head, ...update.head } as HeadSettings,
    shards: update.shards ?? base.shards,
    auditEvery: update.auditEvery ?? base.auditEvery,
  };
  validateSettings(next, config);
  return next;
}

/** Drop undefined fields (recursively) so a partial update never overwrites a setting with undefined. */
export function compact<T>(x: T): T {
  if (typeof x !== "object" || x === null || ArrayBuffer.isView(x)) return x;
  return Object.fromEntries(
    Object.entries(x as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => [k, compact(v)]),
  ) as T;
}

export type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export function validateSettings(s: SparsitySettings, c: ModelConfig): void {
  const bad = (msg: string): never => {
    throw new UsageError(msg);
  };
  const checkK = (what: string, k: number) => {
    if (!(k > 0) || !Number.isFinite(k) || (k > 1 && !Number.isInteger(k)))
      bad(`${what} must be a fraction in (0, 1] or a whole count, got ${k}`);
  };
  if (!FFN_METHODS.includes(s.ffn.method)) bad(`FFN method "${s.ffn.method}" is not one of ${FFN_METHODS.join(", ")}`);
  if (!HEAD_METHODS.includes(s.head.method))
    bad(`output-layer method "${s.head.method}" is not one of ${HEAD_METHODS.join(", ")}`);
  if ((s.ffn.method === "dip" || s.ffn.method === "dip-ca") && !c.gatedFfn)
    bad(`${s.ffn.method} needs a SwiGLU (gated) FFN; ${c.architecture} has none`);
  checkK("FFN k", s.ffn.k);
  checkK("output-layer k", s.head.k);
  for (const [what, map] of [
    ["k", s.ffn.perLayerK],
    ["oversample", s.ffn.perLayerOversample],
    ["predictor", s.ffn.perLayerPredictor],
  ] as const) {
    for (const layer of Object.keys(map)) {
      const l = Number(layer);
      if (!Number.isInteger(l) || l < 0 || l >= c.layers)
        bad(`per-layer ${what} names layer ${layer}, but the model has layers 0..${c.layers - 1}`);
    }
  }
  for (const [layer, k] of Object.entries(s.ffn.perLayerK)) checkK(`k of layer ${layer}`, k);
  for (const [what, o] of [
    ["FFN oversample", s.ffn.oversample],
    ["output-layer oversample", s.head.oversample],
    ...Object.entries(s.ffn.perLayerOversample).map(([l, o]) => [`oversample of layer ${l}`, o] as const),
  ] as const) {
    if (!(o >= 1) || !Number.isFinite(o)) bad(`${what} must be ≥ 1, got ${o}`);
  }
  if (!Number.isInteger(s.shards) || s.shards < 1 || s.shards > 64)
    bad(`shards must be an integer in 1..64, got ${s.shards}`);
  if (!Number.isInteger(s.auditEvery) || s.auditEvery < 0)
    bad(`audit must be 0 (off) or every N-th token, got ${s.auditEvery}`);
  if (!(s.ffn.cacheFraction > 0 && s.ffn.cacheFraction <= 1))
    bad(`cache fraction must be in (0, 1], got ${s.ffn.cacheFraction}`);
  if (!(s.ffn.cacheGamma >= 0 && s.ffn.cacheGamma <= 1)) bad(`cache gamma must be in [0, 1], got ${s.ffn.cacheGamma}`);
  for (const p of [s.ffn.predictor, s.head.predictor, ...Object.values(s.ffn.perLayerPredictor)]) {
    if (p.kind !== "lowrank" && p.kind !== "int4" && p.kind !== "int8")
      bad(`predictor kind "${(p as { kind: string }).kind}" is not one of int4, int8, lowrank`);
    if (p.kind === "lowrank") {
      if (!Number.isInteger(p.rank) || p.rank < 1 || p.rank > Math.min(c.hidden, 4096))
        bad(`low-rank predictor rank must be in 1..${Math.min(c.hidden, 4096)}, got ${p.rank}`);
    } else if (!Number.isInteger(p.groupSize) || p.groupSize < 32 || p.groupSize % 32 !== 0) {
      bad(`quantized predictor group size must be a multiple of 32, got ${p.groupSize}`);
    }
  }
}
