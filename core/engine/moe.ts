// A mixture-of-experts FFN block (Mixtral, Qwen2/3-MoE, OLMoE): a router scores every expert, each
// token runs through its top-k experts only, and their outputs are summed with the router's weights.
//
// The routing is decided on the host: the router's logits ([n][experts], a few hundred floats) come
// back, the top-k is picked here, and the chosen experts run as ordinary FFNs (any FeedForward, so a
// sparse method can take an expert's place). A batch is grouped by expert: each expert runs once over
// the rows of the tokens routed to it, which is what makes prefill a GEMM per expert instead of n·k
// GEMVs. The weighted sum is made on the host too: it is n·k rows of `hidden` floats, small next to
// the experts' weights, and it keeps the block free of new backend ops (every backend runs it as is).
// Reading logits back means a step cannot be recorded as a CUDA graph (graphable: false).
import type { Buf, Backend } from "../backend/backend.js";
import { linearBytes, type ModelConfig, type MoeConfig, type MoeWeights } from "../arch/config.js";
import { mergeExperts, type ExpertTelemetry } from "../sparse/telemetry.js";
import type { BatchableStep, FeedForward, LayerReport } from "./transformer.js";

/** What a mixture layer did for the tokens of one forward call. */
export interface MoeTelemetry {
  experts: number;
  topK: number;
  /** Token i's experts at [i·topK, (i+1)·topK), best first. */
  ids: Int32Array;
  /** Their weights in the sum, in the same order. */
  weights: Float32Array;
}

/**
 * Each of n tokens' top-k experts (ids, best first) and their weights: the softmax of the router's
 * logits over all experts, renormalized over the chosen ones when `normalize` (the same as a softmax
 * over the top-k logits, GraniteMoE's order of steps). With a `selectionBias` (ERNIE 4.5) the experts
 * are chosen by probability + bias, and weighted by their probabilities alone.
 */
export function route(logits: Float32Array, n: number, m: MoeConfig, selectionBias?: Float32Array): MoeTelemetry {
  if (m.sparsemixer) return sparsemixer(logits, n, m.experts, m.topK, m.sparsemixer.jitterEps);
  const { experts: E, topK: k } = m;
  const ids = new Int32Array(n * k);
  const weights = new Float32Array(n * k);
  const order = new Int32Array(E);
  const prob = new Float64Array(E);
  const key = new Float64Array(E);
  for (let t = 0; t < n; t++) {
    const row = logits.subarray(t * E, (t + 1) * E);
    let max = -Infinity;
    for (let e = 0; e < E; e++) max = Math.max(max, row[e]);
    let sum = 0;
    for (let e = 0; e < E; e++) sum += prob[e] = Math.exp(row[e] - max);
    for (let e = 0; e < E; e++) {
      prob[e] /= sum;
      key[e] = selectionBias ? prob[e] + selectionBias[e] : prob[e];
    }
    // A partial selection sort: k is at most a few experts of at most a few hundred.
    for (let e = 0; e < E; e++) order[e] = e;
    let chosen = 0;
    for (let j = 0; j < k; j++) {
      let best = j;
      for (let e = j + 1; e < E; e++) if (key[order[e]] > key[order[best]]) best = e;
      [order[j], order[best]] = [order[best], order[j]];
      ids[t * k + j] = order[j];
      weights[t * k + j] = prob[order[j]];
      chosen += weights[t * k + j];
    }
    if (m.normalize) for (let j = 0; j < k; j++) weights[t * k + j] /= chosen;
  }
  return { experts: E, topK: k, ids, weights };
}

/**
 * Phi-3.5-MoE's routing at inference (transformers' sparsemixer without its training noise): k times,
 * the best remaining expert by logit, weighted by its probability under a softmax over the remaining
 * experts whose logit is within 2·jitterEps of the best's, relative to max(|logit|, best).
 */
export function sparsemixer(logits: Float32Array, n: number, E: number, k: number, jitterEps: number): MoeTelemetry {
  const ids = new Int32Array(n * k);
  const weights = new Float32Array(n * k);
  const taken = new Uint8Array(E);
  for (let t = 0; t < n; t++) {
    const row = logits.subarray(t * E, (t + 1) * E);
    taken.fill(0);
    for (let j = 0; j < k; j++) {
      let best = -1;
      for (let e = 0; e < E; e++) if (!taken[e] && (best < 0 || row[e] > row[best])) best = e;
      const top = row[best];
      let sum = 0;
      for (let e = 0; e < E; e++) {
        const kept = !taken[e] && (top - row[e]) / Math.max(Math.abs(row[e]), top) <= 2 * jitterEps;
        if (kept) sum += Math.exp(row[e] - top);
      }
      ids[t * k + j] = best;
      weights[t * k + j] = 1 / sum;
      taken[best] = 1;
    }
  }
  return { experts: E, topK: k, ids, weights };
}

/** Scratch buffers of the mixture layers, shared by all of them (one layer runs at a time). */
export class MoeScratch {
  readonly logits: Buf; // router output [batch][experts]
  readonly rows: Buf; // the normed inputs of the tokens routed to one expert [batch][hidden]
  readonly out: Buf; // an expert's (or the shared expert's) output for them [batch][hidden]
  readonly gate: Buf; // the shared expert's gate logit [batch]
  readonly outs: Buf[]; // each routed expert's output of one token, when they run at once [topK][hidden]

  constructor(b: Backend, c: ModelConfig, batch: number) {
    const E = c.moe?.experts ?? 0;
    const H = c.moe ? c.hidden : 0;
    this.logits = b.alloc(batch * E);
    this.rows = b.alloc(batch * H);
    this.out = b.alloc(batch * H);
    this.gate = b.alloc(c.moe ? batch : 0);
    this.outs = Array.from({ length: c.moe?.topK ?? 0 }, () => b.alloc(c.hidden));
  }
}

export class MoeFeedForward implements FeedForward {
  constructor(
    private readonly b: Backend,
    private readonly c: ModelConfig,
    private readonly w: MoeWeights,
    private readonly scratch: MoeScratch,
    /** One FFN per expert (DenseFeedForward, or a sparse method's), and the shared expert's. */
    readonly experts: FeedForward[],
    readonly shared?: FeedForward,
  ) {}

  graphable(): boolean {
    return false; // the routing reads the router's logits on the host
  }

  /** One token's routed experts as steps that run at once, where the backend and every one of them can. */
  private batchSteps(r: MoeTelemetry, h: Buf): BatchableStep[] | undefined {
    if (!this.b.hireFfnBatch) return undefined;
    const steps: BatchableStep[] = [];
    for (let j = 0; j < r.topK; j++) {
      const step = this.experts[r.ids[j]].batchStep?.(this.scratch.outs[j], h, j);
      if (!step) return undefined;
      steps.push(step);
    }
    return steps;
  }

  forward(out: Buf, h: Buf, n: number, report?: LayerReport): void {
    const { b, c, w, scratch: s } = this;
    const m = c.moe!;
    const H = c.hidden;
    b.matmul(s.logits, h, w.router.w, n, w.router.b);
    const r = route(b.read(s.logits, 0, n * m.experts), n, m, w.selectionBias);
    const sum = new Float32Array(n * H);
    // A sparse method's telemetry of each expert it ran (see mergeExperts).
    const sub: LayerReport | undefined = report && { attentionMs: 0, ffnMs: 0 };
    const parts: ExpertTelemetry[] = [];
    const F = w.experts[0].up.w.rows;
    const collect = (firstNeuron: number) => {
      if (sub?.ffn) parts.push({ ffn: sub.ffn, firstNeuron });
      if (sub) sub.ffn = undefined;
    };
    const run = (expert: FeedForward, x: Buf, tokens: number, firstNeuron: number) => {
      expert.forward(s.out, x, tokens, sub);
      collect(firstNeuron);
    };
    const batch = n === 1 ? this.batchSteps(r, h) : undefined;
    if (batch) {
      // The routed experts' HiRE steps at once, each on one worker (Backend.hireFfnBatch).
      const results = b.hireFfnBatch!(batch.map((x) => x.step));
      batch.forEach((x, j) => {
        x.finish(results[j], sub);
        collect(r.ids[j] * F);
        addScaled(sum, 0, b.read(s.outs[j], 0, H), 0, r.weights[j], H);
      });
    } else if (n === 1) {
      for (let j = 0; j < m.topK; j++) {
        run(this.experts[r.ids[j]], h, 1, r.ids[j] * F);
        addScaled(sum, 0, b.read(s.out, 0, H), 0, r.weights[j], H);
      }
    } else {
      const x = b.read(h, 0, n * H);
      const rows = new Float32Array(n * H);
      for (const [e, tokens] of byExpert(r, n)) {
        tokens.forEach(({ token }, i) => rows.set(x.subarray(token * H, (token + 1) * H), i * H));
        b.write(s.rows, 0, rows.subarray(0, tokens.length * H));
        run(this.experts[e], s.rows, tokens.length, e * F);
        const y = b.read(s.out, 0, tokens.length * H);
        tokens.forEach(({ token, weight }, i) => addScaled(sum, token * H, y, i * H, weight, H));
      }
    }
    if (this.shared && w.shared) {
      run(this.shared, h, n, m.experts * F);
      const y = b.read(s.out, 0, n * H);
      const gate = w.shared.sharedGate;
      if (gate) b.matmul(s.gate, h, gate.w, n, gate.b);
      const g = gate ? b.read(s.gate, 0, n) : undefined;
      for (let t = 0; t < n; t++) addScaled(sum, t * H, y, t * H, g ? 1 / (1 + Math.exp(-g[t])) : 1, H);
    }
    b.write(out, 0, sum);
    if (!report) return;
    report.moe = r;
    if (parts.length > 0) report.ffn = mergeExperts(parts, linearBytes(w.router), layerNeurons(c));
  }
}

/**
 * The neurons of the experts that the last token of a step went through, ascending, numbered as a
 * layer's (expert e's neuron i is e·F + i): what a dense mixture layer "selected".
 */
export function routedNeurons(r: MoeTelemetry, F: number): Int32Array {
  const experts = Array.from(r.ids.subarray(-r.topK)).sort((a, b) => a - b);
  const out = new Int32Array(experts.length * F);
  experts.forEach((e, j) => {
    for (let i = 0; i < F; i++) out[j * F + i] = e * F + i;
  });
  return out;
}

/** Neurons of a mixture layer as telemetry numbers them: every expert's, then the shared expert's. */
export function layerNeurons(c: ModelConfig): number {
  const m = c.moe;
  return m ? m.experts * m.expertIntermediate + (m.sharedIntermediate ?? 0) : c.intermediate;
}

/** sum[at .. at + H) += weight · y[from .. from + H). */
function addScaled(sum: Float32Array, at: number, y: Float32Array, from: number, weight: number, H: number): void {
  for (let i = 0; i < H; i++) sum[at + i] += weight * y[from + i];
}

/** The tokens routed to each expert, with their weights, in token order. */
function byExpert(r: MoeTelemetry, n: number): Map<number, { token: number; weight: number }[]> {
  const groups = new Map<number, { token: number; weight: number }[]>();
  for (let t = 0; t < n; t++) {
    for (let j = 0; j < r.topK; j++) {
      const e = r.ids[t * r.topK + j];
      let g = groups.get(e);
      if (!g) groups.set(e, (g = []));
      g.push({ token: t, weight: r.weights[t * r.topK + j] });
    }
  }
  return groups;
}
