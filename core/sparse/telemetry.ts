// Per-token, per-layer telemetry of the sparse paths: what was selected, what it cost, and —
// when auditing — how well it matched the exact computation. Typed arrays so a UI can draw
// them at token rate.

import type { ForwardReport } from "../engine/transformer.js";

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

/** One expert's telemetry in a mixture layer, and where its neurons start in the layer's numbering. */
export interface ExpertTelemetry {
  ffn: FfnTelemetry;
  firstNeuron: number;
}

/**
 * A mixture layer's telemetry from its experts' (each run as a sparse FFN): expert e's neuron i is the
 * layer's neuron e·F + i (F: an expert's width; the shared expert's come after the last expert's),
 * counts, times and bytes add up, with the router's bytes read in both; recall is the experts' mean
 * weighted by k. An output error is not kept: each expert's is of its own output, not of the sum.
 * An inspected layer's scores span its `neurons`, 0 in the experts the token was not routed to.
 */
export function mergeExperts(parts: readonly ExpertTelemetry[], routerBytes: number, neurons: number): FfnTelemetry {
  let size = 0;
  for (const p of parts) size += p.ffn.selected.length;
  const selected = new Int32Array(size);
  const sum = {
    k: 0,
    candidates: 0,
    predictorMs: 0,
    exactMs: 0,
    downMs: 0,
    bytes: routerBytes,
    denseBytes: routerBytes,
  };
  let hits = 0;
  let audited = 0;
  let at = 0;
  const sorted = [...parts].sort((a, b) => a.firstNeuron - b.firstNeuron);
  for (const { ffn: f, firstNeuron } of sorted) {
    for (let i = 0; i < f.selected.length; i++) selected[at++] = firstNeuron + f.selected[i];
    sum.k += f.k;
    sum.candidates += f.candidates;
    sum.predictorMs += f.predictorMs;
    sum.exactMs += f.exactMs;
    sum.downMs += f.downMs;
    sum.bytes += f.bytes;
    sum.denseBytes += f.denseBytes;
    if (f.recall !== undefined) {
      hits += f.recall * f.k;
      audited += f.k;
    }
  }
  const scores = mergeScores(sorted, neurons);
  return {
    method: parts[0].ffn.method,
    ...sum,
    selected,
    ...(audited > 0 && { recall: hits / audited }),
    ...(scores && { scores }),
  };
}

/** The routed experts' scores in the layer's numbering (see mergeExperts), when each part has them; parts by firstNeuron. */
function mergeScores(parts: readonly ExpertTelemetry[], neurons: number): LayerScores | undefined {
  if (!parts.every((p) => p.ffn.scores)) return undefined;
  const approx = new Float32Array(neurons);
  const exact = parts.every((p) => p.ffn.scores!.exact) ? new Float32Array(neurons) : undefined;
  const candidates: number[] = [];
  const exactTopK: number[] = [];
  for (const { ffn, firstNeuron } of parts) {
    const s = ffn.scores!;
    approx.set(s.approx, firstNeuron);
    for (const c of s.candidates) candidates.push(firstNeuron + c);
    if (exact) {
      exact.set(s.exact!, firstNeuron);
      for (const c of s.exactTopK ?? []) exactTopK.push(firstNeuron + c);
    }
  }
  return {
    approx,
    candidates: Int32Array.from(candidates),
    ...(exact && { exact, exactTopK: Int32Array.from(exactTopK) }),
  };
}
