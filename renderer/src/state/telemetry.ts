// Telemetry of the current generation, at token rate. The store keeps a ring of the last N steps,
// each layer's selection frequency over them (a Float32Array per layer, updated incrementally),
// the running mean recall per layer, the latest step and the whole generation's trace (export).
//
// The typed arrays are mutated in place and `version` bumps on every step: canvases subscribe to
// the store (`store.subscribe`) and redraw in requestAnimationFrame; React components only select
// low-rate values from it. Nothing here re-renders React at token rate.
import { createStore } from "zustand/vanilla";
import type { StepTelemetry, TokenMark } from "../../../core/host/protocol.js";

export interface TraceStep {
  index: number;
  tokenId: number;
  text: string;
  step: StepTelemetry;
}

/** The last N steps and, per layer, how often each neuron was selected in them. */
export class SelectionWindow {
  readonly ring: (TraceStep | undefined)[];
  /** Next slot to write. */
  private head = 0;
  filled = 0;
  readonly counts: Uint16Array[];
  /** counts / filled, per layer. */
  readonly freq: Float32Array[];

  constructor(
    readonly layers: number,
    readonly neurons: number,
    readonly capacity: number,
  ) {
    if (!(capacity >= 1 && capacity <= 65535)) throw new RangeError(`window ${capacity} is not in 1..65535`);
    this.ring = new Array<TraceStep | undefined>(capacity).fill(undefined);
    this.counts = Array.from({ length: layers }, () => new Uint16Array(neurons));
    this.freq = Array.from({ length: layers }, () => new Float32Array(neurons));
  }

  push(t: TraceStep): void {
    const evicted = this.ring[this.head];
    this.ring[this.head] = t;
    this.head = (this.head + 1) % this.capacity;
    const grew = evicted === undefined;
    if (grew) this.filled++;
    const inv = 1 / this.filled;
    for (let l = 0; l < this.layers; l++) {
      const counts = this.counts[l];
      const freq = this.freq[l];
      if (evicted) {
        forSelected(evicted.step, l, this.neurons, (i) => {
          counts[i]--;
          freq[i] = counts[i] * inv;
        });
      }
      forSelected(t.step, l, this.neurons, (i) => {
        counts[i]++;
        freq[i] = counts[i] * inv;
      });
      // While the window fills, every frequency's denominator changes.
      if (grew) for (let i = 0; i < this.neurons; i++) freq[i] = counts[i] * inv;
    }
  }

  /** The steps in the window, oldest first. */
  steps(): TraceStep[] {
    const out: TraceStep[] = [];
    for (let j = 0; j < this.capacity; j++) {
      const t = this.ring[(this.head + j) % this.capacity];
      if (t) out.push(t);
    }
    return out;
  }
}

/** Call fn for each selected neuron of layer l in the step (indices outside 0..neurons-1 are skipped). */
export function forSelected(step: StepTelemetry, l: number, neurons: number, fn: (i: number) => void): void {
  const off = step.selectedOffsets;
  if (l + 1 >= off.length) return;
  const sel = step.selected;
  for (let j = off[l], end = off[l + 1]; j < end; j++) {
    const i = sel[j];
    if (i >= 0 && i < neurons) fn(i);
  }
}

/** Layer l's selected neuron indices (a view, no copy). */
export function selectedOf(step: StepTelemetry, l: number): Int32Array {
  const off = step.selectedOffsets;
  if (l + 1 >= off.length) return new Int32Array(0);
  return step.selected.subarray(off[l], off[l + 1]);
}

/** Mean of the finite values (NaN when there are none). */
export function finiteMean(a: ArrayLike<number>): number {
  let sum = 0;
  let n = 0;
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (Number.isFinite(v)) {
      sum += v;
      n++;
    }
  }
  return n === 0 ? NaN : sum / n;
}

/** A token's marks for colouring the reply: mean recall and divergence from dense over layers (audited tokens), head mass, time. */
export function tokenMark(text: string, step: StepTelemetry): TokenMark {
  const r = step.audited ? finiteMean(step.recall) : NaN;
  const mass = step.head?.massCovered;
  const div = step.audited ? finiteMean(step.relError) : NaN;
  return {
    text,
    recall: Number.isFinite(r) ? r : null,
    headMass: typeof mass === "number" && Number.isFinite(mass) ? mass : null,
    divergence: Number.isFinite(div) ? div : null,
    ms: Number.isFinite(step.ms) ? step.ms : 0,
  };
}

/** What layer l's FFN read this token against the dense FFN, e.g. "FFN read 1.26 of 6.29 MB (20.0 %)". */
export function layerBytesText(step: StepTelemetry, l: number): string {
  const read = step.ffnBytes[l];
  const dense = step.ffnDenseBytes[l];
  if (!(dense > 0)) return "";
  const mb = (b: number) => (b / 1e6).toFixed(2);
  const storage = Number.isFinite(step.storageBytes[l]) ? ` · ${mb(step.storageBytes[l])} MB on cache misses` : "";
  return `FFN read ${mb(read)} of ${mb(dense)} MB (${((100 * read) / dense).toFixed(1)} %)${storage}`;
}

/** The step's selection summary: total selected neurons and per-layer k. */
export function selectionSummary(step: StepTelemetry | null, neurons: number): string {
  if (!step) return "no tokens yet";
  const layers = step.selectedOffsets.length - 1;
  const total = step.selected.length;
  // A dense mixture of experts still selects: its routed experts' neurons.
  if (layers <= 0 || total === 0) return `dense FFN · all ${neurons} neurons/layer`;
  let lo = Infinity;
  let hi = -Infinity;
  for (let l = 0; l < layers; l++) {
    const n = step.selectedOffsets[l + 1] - step.selectedOffsets[l];
    lo = Math.min(lo, n);
    hi = Math.max(hi, n);
  }
  const k = lo === hi ? `k ${lo}` : `k ${lo}–${hi}`;
  const share = neurons > 0 ? ` (${((100 * total) / (layers * neurons)).toFixed(1)}%)` : "";
  return `${total.toLocaleString("en-US")} selected${share} · ${k}/layer × ${layers}`;
}

export const TRACE_LIMIT = 4096;

export interface TelemetryState {
  layers: number;
  neurons: number;
  /** Bumps on every change; canvases redraw when it moves. */
  version: number;
  requestId: number | null;
  /** Steps received in this generation. */
  count: number;
  /** The latest decoded (not prompt-pass) step. */
  latest: TraceStep | null;
  window: SelectionWindow;
  /** Running mean recall per layer over the audited steps of this generation (NaN = none yet). */
  meanRecall: Float32Array;
  recallSum: Float64Array;
  recallCount: Int32Array;
  /** The latest step that carried `inspect` data (the layer detail panel), with its selection. */
  inspected: TraceStep | null;
  /** Every step of this generation, for export (the first TRACE_LIMIT). */
  trace: TraceStep[];
  traceDropped: number;
  /** Set up for a model (layers × neurons) and a window; clears everything. */
  configure(layers: number, neurons: number, window?: number): void;
  /** A new generation: clear the steps, keep the shape. */
  begin(requestId: number | null): void;
  push(t: TraceStep): void;
  /** Change the frequency window, refilling it from the trace. */
  setWindow(n: number): void;
}

export type TelemetryStore = ReturnType<typeof createTelemetryStore>;

function fresh(layers: number, neurons: number, window: number) {
  return {
    layers,
    neurons,
    count: 0,
    latest: null,
    window: new SelectionWindow(layers, neurons, window),
    meanRecall: new Float32Array(layers).fill(NaN),
    recallSum: new Float64Array(layers),
    recallCount: new Int32Array(layers),
    inspected: null,
    trace: [],
    traceDropped: 0,
  };
}

export function createTelemetryStore(layers = 0, neurons = 0, window = 64) {
  return createStore<TelemetryState>()((set, get) => ({
    ...fresh(layers, neurons, window),
    version: 0,
    requestId: null,
    configure: (l, n, w) => set((s) => ({ ...fresh(l, n, w ?? s.window.capacity), version: s.version + 1 })),
    begin: (requestId) =>
      set((s) => ({ ...fresh(s.layers, s.neurons, s.window.capacity), requestId, version: s.version + 1 })),
    push: (t) => {
      const s = get();
      // The prompt pass's token has no per-layer selection and its time is the whole prompt's:
      // it goes to the trace, not to the window, the recall means or the latest step.
      if (t.step.prefill) {
        let { traceDropped } = s;
        if (s.trace.length < TRACE_LIMIT) s.trace.push(t);
        else traceDropped++;
        set({ count: s.count + 1, traceDropped, version: s.version + 1 });
        return;
      }
      s.window.push(t);
      const layers = Math.min(s.layers, t.step.recall.length);
      if (t.step.audited) {
        for (let l = 0; l < layers; l++) {
          const r = t.step.recall[l];
          if (Number.isFinite(r)) {
            s.recallSum[l] += r;
            s.recallCount[l]++;
            s.meanRecall[l] = s.recallSum[l] / s.recallCount[l];
          }
        }
      }
      let { traceDropped } = s;
      if (s.trace.length < TRACE_LIMIT) s.trace.push(t);
      else traceDropped++;
      set({
        latest: t,
        count: s.count + 1,
        inspected: t.step.inspect ? t : s.inspected,
        traceDropped,
        version: s.version + 1,
      });
    },
    setWindow: (n) => {
      const s = get();
      const window = new SelectionWindow(s.layers, s.neurons, n);
      for (const t of s.trace.filter((x) => !x.step.prefill).slice(-n)) window.push(t);
      set({ window, version: s.version + 1 });
    },
  }));
}

/** Tokens per second over the window (from each step's forward time). */
export function windowTokensPerS(w: SelectionWindow): number {
  let ms = 0;
  let n = 0;
  for (const t of w.ring) {
    if (t && Number.isFinite(t.step.ms) && t.step.ms > 0) {
      ms += t.step.ms;
      n++;
    }
  }
  return n === 0 ? NaN : (1000 * n) / ms;
}

/** Whether any step of this generation was audited (the recall bars' "audit off" hint). */
export function hasRecall(s: Pick<TelemetryState, "recallCount">): boolean {
  for (let l = 0; l < s.recallCount.length; l++) if (s.recallCount[l] > 0) return true;
  return false;
}

const plain = (a: ArrayLike<number>): (number | null)[] => Array.from(a, (v) => (Number.isFinite(v) ? v : null));

/** The generation's per-token, per-layer telemetry as plain JSON (typed arrays → arrays, NaN → null). */
export function traceJson(trace: TraceStep[], meta: Record<string, unknown> = {}): string {
  const tokens = trace.map(({ index, tokenId, text, step }) => {
    const layers = [];
    const n = step.attentionMs.length;
    for (let l = 0; l < n; l++) {
      layers.push({
        layer: l,
        attentionMs: num(step.attentionMs[l]),
        ffnMs: num(step.ffnMs[l]),
        predictorMs: num(step.predictorMs[l]),
        exactMs: num(step.exactMs[l]),
        downMs: num(step.downMs[l]),
        k: step.k[l] ?? null,
        candidates: step.candidates[l] ?? null,
        selected: Array.from(selectedOf(step, l)),
        recall: num(step.recall[l]),
        relError: num(step.relError[l]),
        cacheHitRate: num(step.cacheHitRate[l]),
      });
    }
    return {
      index,
      tokenId,
      text,
      ffnMethod: step.ffnMethod,
      headMethod: step.headMethod,
      prefill: step.prefill,
      audited: step.audited,
      ms: num(step.ms),
      outputMs: num(step.outputMs),
      bytes: num(step.bytes),
      denseBytes: num(step.denseBytes),
      head: step.head,
      inspect: step.inspect && {
        layer: step.inspect.layer,
        approx: plain(step.inspect.approx),
        candidates: Array.from(step.inspect.candidates),
        exact: step.inspect.exact && plain(step.inspect.exact),
        exactTopK: step.inspect.exactTopK && Array.from(step.inspect.exactTopK),
      },
      layers,
    };
  });
  return JSON.stringify({ ...meta, tokens }, null, 1);
}

function num(v: number | undefined): number | null {
  return v !== undefined && Number.isFinite(v) ? v : null;
}
