// Per-token, per-layer telemetry of the sparse paths: what was selected, what it cost, and —
// when auditing — how well it matched the exact computation. Typed arrays so a UI can draw
// them at token rate.

import type { ForwardReport } from "../engine/transformer.js";
import type { LayerWeights } from "../arch/config.js";

/** Weight bytes a dense FFN reads per token: W_up (W_in), W_down and, when gated, W_gate. */
export function ffnDenseBytes(w: LayerWeights): number {
  return w.up.w.byteLength + w.down.w.byteLength + (w.gate ? w.gate.w.byteLength : 0);
}

/**
 * Weight bytes one forward pass read: the dense total less what each sparse module (FFN layers,
 * output layer) reports it saved. Dense modules report nothing and count in full.
 */
export function bytesRead(report: ForwardReport, denseBytes: number): number {
  let bytes = denseBytes;
  for (const l of report.layers) if (l.ffn) bytes -= l.ffn.denseBytes - l.ffn.bytes;
  if (report.head) bytes -= report.head.denseBytes - report.head.bytes;
  return bytes;
}

export interface FfnTelemetry {
  method: string;
  /** Neurons used (k) and candidates computed exactly (k' for HiRE; all rows for topk-exact). */
  k: number;
  candidates: number;
  /** The k neuron indices used for the output, ascending. */
  selected: Int32Array;
  predictorMs: number;
  exactMs: number;
  downMs: number;
  /** Weight bytes this layer's FFN read, and what the dense FFN reads. */
  bytes: number;
  denseBytes: number;
  /** Audit only: |selected ∩ exact top-k| / k, and ‖out − dense out‖ / ‖dense out‖. */
  recall?: number;
  relError?: number;
  /**
   * dip-ca only: the share of this token's FFN bytes already in the simulated cache (the selected
   * input columns of W_gate/W_up and neuron columns of W_down), and the bytes streamed on misses.
   */
  cacheHitRate?: number;
  storageBytes?: number;
  /** Only for the inspected layer (`Sparsifier.inspect`): the scores behind the selection. */
  scores?: LayerScores;
}

/** One layer's view of one token, for drawing predicted against exact scores. */
export interface LayerScores {
  /** What ranked the neurons: the predictor's activated scores (HiRE), else the exact activations. */
  approx: Float32Array;
  /** Rows computed exactly (HiRE's k' candidates). */
  candidates: Int32Array;
  /** Audited tokens only: the exact activations of all neurons and their exact top-k. */
  exact?: Float32Array;
  exactTopK?: Int32Array;
}

export interface HeadTelemetry {
  method: string;
  k: number;
  candidates: number;
  ms: number;
  bytes: number;
  denseBytes: number;
  /** Audit only: whether the dense argmax is among the kept tokens, and the dense probability mass they hold. */
  argmaxInCandidates?: boolean;
  massCovered?: number;
}

/** |a ∩ b| / |b| for index sets (a may be unsorted; b is the exact set). */
export function recall(selected: ArrayLike<number>, exact: ArrayLike<number>): number {
  if (exact.length === 0) return 1;
  const set = new Set<number>();
  for (let i = 0; i < selected.length; i++) set.add(selected[i]);
  let hits = 0;
  for (let i = 0; i < exact.length; i++) if (set.has(exact[i])) hits++;
  return hits / exact.length;
}

/** ‖a − b‖ / ‖b‖ over the first n values. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>, n: number): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    const d = a[i] - b[i];
    num += d * d;
    den += b[i] * b[i];
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}
