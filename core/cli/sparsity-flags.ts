// The sparsity flags shared by `hire generate`, `chat` and `bench`, parsed into a settings update.
import { UsageError } from "../loader/errors.js";
import { fraction, int, num } from "./flags.js";
import {
  FFN_METHODS,
  HEAD_METHODS,
  parsePredictor,
  type DeepPartial,
  type FfnMethod,
  type HeadMethod,
  type SparsitySettings,
} from "../sparse/settings.js";
import type { ForwardReport } from "../engine/transformer.js";

export const SPARSITY_FLAGS = {
  ffn: { type: "string" },
  "ffn-k": { type: "string" },
  oversample: { type: "string" },
  predictor: { type: "string" },
  head: { type: "string" },
  "head-k": { type: "string" },
  "head-oversample": { type: "string" },
  "head-predictor": { type: "string" },
  shards: { type: "string" },
  audit: { type: "string" },
  "layer-k": { type: "string", multiple: true },
  "layer-oversample": { type: "string", multiple: true },
  "layer-predictor": { type: "string", multiple: true },
} as const;

type PerLayerFlag = "layer-k" | "layer-oversample" | "layer-predictor";
export type SparsityValues = { [K in keyof typeof SPARSITY_FLAGS]?: K extends PerLayerFlag ? string[] : string };

/** --layer-X LAYER=VALUE (repeatable) as layer → parsed value. */
function perLayer<T>(
  flag: PerLayerFlag,
  value: string,
  specs: string[] | undefined,
  parse: (v: string) => T,
): Record<number, T> {
  const out: Record<number, T> = {};
  for (const spec of specs ?? []) {
    const at = spec.indexOf("=");
    const layer = spec.slice(0, at);
    if (at < 0 || !/^\d+$/.test(layer)) throw new UsageError(`--${flag} must look like LAYER=${value}, got "${spec}"`);
    out[Number(layer)] = parse(spec.slice(at + 1));
  }
  return out;
}

/** k given as a fraction (0.1), a percentage (10%) or a count (512). */
export function parseK(flag: string, v: string): number {
  return fraction(flag, v)!;
}

export function sparsityUpdate(v: SparsityValues, ffnK?: number): DeepPartial<SparsitySettings> {
  const method = v.ffn as FfnMethod | undefined;
  if (method !== undefined && !FFN_METHODS.includes(method))
    throw new UsageError(`--ffn must be one of ${FFN_METHODS.join(", ")}, got "${method}"`);
  const head = v.head as HeadMethod | undefined;
  if (head !== undefined && !HEAD_METHODS.includes(head))
    throw new UsageError(`--head must be one of ${HEAD_METHODS.join(", ")}, got "${head}"`);
  const audit =
    v.audit === undefined ? undefined : v.audit === "off" ? 0 : v.audit === "all" ? 1 : int("audit", v.audit);
  return {
    ffn: {
      method,
      k: ffnK ?? fraction("ffn-k", v["ffn-k"]),
      oversample: num("oversample", v.oversample),
      predictor: v.predictor === undefined ? undefined : parsePredictor(v.predictor),
      perLayerK: perLayer("layer-k", "K", v["layer-k"], (k) => parseK("layer-k", k)),
      perLayerOversample: perLayer("layer-oversample", "O", v["layer-oversample"], (o) => num("layer-oversample", o)!),
      perLayerPredictor: perLayer("layer-predictor", "PREDICTOR", v["layer-predictor"], parsePredictor),
    },
    head: {
      method: head,
      k: fraction("head-k", v["head-k"]),
      oversample: num("head-oversample", v["head-oversample"]),
      predictor: v["head-predictor"] === undefined ? undefined : parsePredictor(v["head-predictor"]),
    },
    shards: int("shards", v.shards),
    auditEvery: audit,
  };
}

/** Per-layer telemetry of one forward pass as JSON (indices only with `trace`). */
export function reportJson(r: ForwardReport, trace: boolean): Record<string, unknown> {
  const round = (x: number) => Math.round(x * 1e4) / 1e4;
  return {
    layers: r.layers.map((l, i) => {
      const f = l.ffn;
      return {
        layer: i,
        attention_ms: round(l.attentionMs),
        ffn_ms: round(l.ffnMs),
        // A mixture layer: the step's last token's experts, best first, and their weights in the sum.
        ...(l.moe && {
          experts: Array.from(l.moe.ids.subarray(-l.moe.topK)),
          expert_weights: Array.from(l.moe.weights.subarray(-l.moe.topK), round),
        }),
        ...(f && {
          method: f.method,
          k: f.k,
          candidates: f.candidates,
          predictor_ms: round(f.predictorMs),
          exact_ms: round(f.exactMs),
          down_ms: round(f.downMs),
          bytes: f.bytes,
          dense_bytes: f.denseBytes,
          ...(f.recall !== undefined && { recall: round(f.recall) }),
          ...(f.relError !== undefined && { rel_error: round(f.relError) }),
          ...(f.cacheHitRate !== undefined && { cache_hit_rate: round(f.cacheHitRate), storage_bytes: f.storageBytes }),
          ...(trace ? { selected: Array.from(f.selected) } : { selected_count: f.selected.length }),
        }),
      };
    }),
    output_ms: round(r.outputMs),
    ...(r.head && {
      head: {
        method: r.head.method,
        k: r.head.k,
        candidates: r.head.candidates,
        ms: round(r.head.ms),
        bytes: r.head.bytes,
        dense_bytes: r.head.denseBytes,
        ...(r.head.massCovered !== undefined && {
          argmax_in_candidates: r.head.argmaxInCandidates,
          mass_covered: round(r.head.massCovered),
        }),
      },
    }),
  };
}
