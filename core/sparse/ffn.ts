// Sparse FFN blocks, one class per layer, replacing DenseFeedForward in Transformer.ffn[l].
// Methods (settings.ts): topk-exact (dense activations, exact top-k), hire (predict top-k', compute
// those rows exactly, keep the exact top-k), dip / dip-ca (predictor-free input and GLU pruning,
// with a simulated weight cache for dip-ca). Every method ends with the down product over the k
// selected neurons only, read as contiguous rows of a transposed W_down.
//
// Batches of several tokens (prefill) run the dense GEMMs and keep each token's exact top-k, so
// a model sees the same top-k FFN in prefill as in decode. Decode (one token) runs the method.
import type { Buf, HireFfnResult, HireFfnStep, Weight } from "../backend/backend.js";
import { ffnBytes, type FfnWeights, type ModelConfig } from "../arch/config.js";
import type { BatchableStep, FeedForward, LayerReport } from "../engine/transformer.js";
import { buildPredictor, type Predictor } from "./predictor.js";
import {
  layerK,
  layerOversample,
  layerPredictor,
  predictorName,
  resolveCount,
  type PredictorSpec,
  type SparsitySettings,
} from "./settings.js";
import { recall, relativeError, type FfnTelemetry } from "./telemetry.js";
import type { HireBuffers, SparseContext } from "./context.js";
import { weightContentKey } from "./cache.js";
import { isQuantDType } from "../loader/weight-format.js";

/** One token's HiRE: k, k', and the predictor and layouts it reads (SparseFeedForward.hirePlan). */
interface HirePlan {
  k: number;
  kp: number;
  pred: Predictor;
  rows: Weight;
  down: Weight;
}

/** Weights of one layer in the layouts the sparse kernels read, built on first use. */
export class LayerPrep {
  private rowsIn?: Weight;
  private rowsGateUp?: Weight;
  private colsDown?: Weight;
  private colsGate?: Weight;
  private colsUpT?: Weight;
  private predictors = new Map<string, Predictor>();
  /** The biases as backend buffers, for the ops that add them. */
  biasIn?: Buf;
  biasDown?: Buf;

  constructor(
    private readonly ctx: SparseContext,
    readonly w: FfnWeights,
  ) {
    const first = w.gate ?? w.up;
    if (first.b) this.biasIn = ctx.upload(ctx.readBias(first.b));
    if (w.down.b) this.biasDown = ctx.upload(ctx.readBias(w.down.b));
  }

  /** First FFN matrix (W_gate, or W_in), one contiguous row per neuron. */
  inRows(): Weight {
    return (this.rowsIn ??= this.ctx.layout((this.w.gate ?? this.w.up).w, false));
  }
  /**
   * W_gate and W_up of a gated FFN interleaved: a neuron's two rows are one contiguous read. A load
   * can keep the two in different dtypes (one from a file's 4-bit blocks, the other int8; Q4_0 and
   * Q4_1 blocks): their rows are then interleaved as bf16, the values a quantized relayout gives.
   */
  gateUpRows(): Weight {
    if (this.rowsGateUp) return this.rowsGateUp;
    const { b } = this.ctx;
    let gate = this.inRows();
    let up = this.ctx.layout(this.w.up.w, false);
    if (gate.dtype !== up.dtype) [gate, up] = [gate, up].map((w) => (isQuantDType(w.dtype) ? b.relayout(w, false) : w));
    return (this.rowsGateUp = b.interleaveRows(gate, up));
  }
  /** W_down with each neuron's column contiguous. */
  downCols(): Weight {
    return (this.colsDown ??= this.ctx.layout(this.w.down.w, true));
  }
  /** W_gate / W_up with each input column contiguous (DIP's column-sparse products). */
  gateInputCols(): Weight {
    return (this.colsGate ??= this.ctx.layout(this.w.gate!.w, true));
  }
  upInputCols(): Weight {
    return (this.colsUpT ??= this.ctx.layout(this.w.up.w, true));
  }
  predictor(spec: PredictorSpec): Predictor {
    const key = predictorName(spec);
    let p = this.predictors.get(key);
    if (!p) {
      const src = (this.w.gate ?? this.w.up).w;
      p = buildPredictor(this.ctx.b, this.inRows(), spec, weightContentKey(src));
      this.predictors.set(key, p);
    }
    return p;
  }
  /**
   * HiRE reads its own layouts (interleaved gate/up rows, transposed W_down), and so can every other
   * pass of this layer once they exist (prefill, audit, topk-exact, dense): the file-layout matrices
   * they copy are then given back to the system. The backend reads one back from the file if anything
   * uses it again (DIP's copies and a new predictor are made from W_gate), and this gives it back
   * again. Not for biased gate/up matrices (the interleaved product has no bias). Int8 and int4 weights
   * give back their gate/up copies (made again from the file when used) but keep W_down: its transposed
   * copy is bf16, twice the bytes for a dense pass.
   */
  releaseFileLayout(): void {
    const { b } = this.ctx;
    if (!b.releaseWeight) return;
    const w = this.w;
    const down = this.colsDown !== undefined && this.colsDown !== w.down.w && !isQuantDType(w.down.w.dtype);
    const free: Weight[] = [];
    if (down) free.push(w.down.w);
    if (w.gate && this.denseGateUp()) free.push(w.gate.w, w.up.w);
    let bytes = 0;
    for (const x of free) bytes += b.releaseWeight(x);
    // Read-in memory goes back in whole 2 MiB pages, so one matrix may give back 0 bytes and still
    // be released: the flags follow the layer.
    if (bytes > 0) {
      this.gaveBack = true;
      this.downGivenBack ||= down;
    }
  }
  private gaveBack = false;
  private downGivenBack = false;
  /** Whether releaseFileLayout gave anything back: the dense method then reads the copies. */
  get released(): boolean {
    return this.gaveBack;
  }
  /** W_down for a dense pass: the file's layout, or the transposed copy once the file's is given back. */
  denseDown(): Weight {
    return this.downGivenBack ? this.downCols() : this.w.down.w;
  }
  /** The interleaved gate/up rows, when built and usable for a dense pass (no biases). */
  denseGateUp(): Weight | undefined {
    const w = this.w;
    return this.rowsGateUp && !w.gate?.b && !w.up.b ? this.rowsGateUp : undefined;
  }
  /** Whether everything `s` needs for layer `layer` is built (so the first sparse token does not stall on it). */
  prepare(s: SparsitySettings, layer: number): void {
    const m = s.ffn.method;
    if (m === "dense") return;
    this.downCols();
    if (m === "hire") {
      if (this.w.gate) this.gateUpRows();
      else this.inRows();
      this.predictor(layerPredictor(s, layer));
    }
    if (m === "dip" || m === "dip-ca") {
      this.gateInputCols();
      this.upInputCols();
    }
  }
}

/** LRU over weight-column ids (neurons or inputs) with O(1) touch and evict (a doubly linked list in typed arrays). */
class ColumnLru {
  private readonly prev: Int32Array;
  private readonly next: Int32Array;
  readonly resident: Uint8Array;
  private head = -1; // most recent
  private tail = -1; // least recent
  private size = 0;
  constructor(
    n: number,
    private capacity: number,
  ) {
    this.prev = new Int32Array(n).fill(-1);
    this.next = new Int32Array(n).fill(-1);
    this.resident = new Uint8Array(n);
  }
  setCapacity(c: number): void {
    this.capacity = c;
    while (this.size > this.capacity) this.evict();
  }
  /** Mark `id` used; returns whether it was already resident. */
  touch(id: number): boolean {
    const hit = this.resident[id] === 1;
    if (hit) this.unlink(id);
    else {
      if (this.size >= this.capacity) this.evict();
      this.resident[id] = 1;
      this.size++;
    }
    this.prev[id] = -1;
    this.next[id] = this.head;
    if (this.head >= 0) this.prev[this.head] = id;
    this.head = id;
    if (this.tail < 0) this.tail = id;
    return hit;
  }
  private unlink(id: number): void {
    const p = this.prev[id];
    const n = this.next[id];
    if (p >= 0) this.next[p] = n;
    else this.head = n;
    if (n >= 0) this.prev[n] = p;
    else this.tail = p;
  }
  private evict(): void {
    const id = this.tail;
    if (id < 0) return;
    this.unlink(id);
    this.resident[id] = 0;
    this.size--;
  }
}

/** What a HiRE step read, per token (the same for every token until the settings change). */
interface HireShape {
  candidates: number;
  selected: number;
  bytes: number;
}

export class SparseFeedForward implements FeedForward {
  readonly prep: LayerPrep;
  /** dip-ca's simulated caches: W_down columns (neurons) and W_gate/W_up input columns. */
  private lru?: ColumnLru;
  private lruIn?: ColumnLru;
  /** The last HiRE step's counts and bytes, for telemetry after a recorded step's replay. */
  private lastHire?: HireShape;
  /** Neurons of this FFN (ModelConfig.intermediate is the widest of a model's FFNs). */
  private readonly F: number;

  constructor(
    private readonly ctx: SparseContext,
    private readonly c: ModelConfig,
    private readonly w: FfnWeights,
    private readonly layer: number,
  ) {
    this.prep = new LayerPrep(ctx, w);
    this.F = w.up.w.rows;
  }

  forward(out: Buf, h: Buf, n: number, report?: LayerReport): void {
    const s = this.ctx.settings;
    if (s.ffn.method === "dense") {
      this.dense(out, h, n);
      return;
    }
    if (n > 1 || s.ffn.method === "topk-exact") {
      this.topkExact(out, h, n, s, report);
      return;
    }
    if (s.ffn.method === "hire") this.hire(out, h, s, report);
    else this.dip(out, h, s, report);
  }

  /**
   * Whether this token's layer can be part of a recorded decode step: HiRE with a quantized
   * predictor (one device op), when neither an audit nor the inspector needs data on the host mid-step.
   */
  graphable(): boolean {
    const { ctx } = this;
    const s = ctx.settings;
    return (
      s.ffn.method === "hire" &&
      this.prep.predictor(layerPredictor(s, this.layer)).quant !== undefined &&
      !ctx.auditNow &&
      ctx.inspectLayer !== this.layer
    );
  }

  /** After a replay of a recorded step: this layer's telemetry from the results the GPU kept. */
  afterReplay(report: LayerReport): void {
    const { ctx } = this;
    const graphs = ctx.b.graphs;
    const shape = this.lastHire;
    if (!graphs || !shape) return;
    const { cand, sel } = ctx.scratch;
    const t = graphs.hireResults(this.layer, cand, shape.candidates, sel, shape.selected);
    report.ffn = {
      method: "hire",
      k: shape.selected,
      candidates: shape.candidates,
      selected: sel.slice(0, shape.selected),
      predictorMs: t.scoreMs,
      exactMs: t.rowsMs,
      downMs: t.downMs,
      bytes: shape.bytes,
      denseBytes: this.denseBytes(),
    };
  }

  private kFor(s: SparsitySettings): number {
    return resolveCount(layerK(s, this.layer), this.F);
  }

  private denseBytes(): number {
    return ffnBytes(this.w);
  }

  /** act(W_gate·h) * (W_up·h), or act(W_in·h): all F activations of n tokens into `act`. */
  private denseActivations(act: Buf, other: Buf, h: Buf, n: number): void {
    const { b } = this.ctx;
    const { w, c } = this;
    const gateUp = this.prep.denseGateUp();
    if (gateUp) {
      // One product over HiRE's interleaved rows (the same dot products), then the pairs split.
      const F = this.F;
      const pairs = this.ctx.scratch.pairN();
      b.matmul(pairs, h, gateUp, n, null);
      b.copy2d(act, 0, 1, pairs, 0, 2, n * F, 1);
      b.copy2d(other, 0, 1, pairs, 1, 2, n * F, 1);
      b.gatedAct(act, other, n * F, c.activation);
    } else if (w.gate) {
      b.matmul(act, h, w.gate.w, n, w.gate.b);
      b.matmul(other, h, w.up.w, n, w.up.b);
      b.gatedAct(act, other, n * this.F, c.activation);
    } else {
      b.matmul(act, h, w.up.w, n, w.up.b);
      b.activate(act, n * this.F, c.activation);
    }
  }

  /**
   * The dense FFN from HiRE's layouts, once the file layout was given back (Sparsifier): the same
   * products, with a given-back W_down summed column by column (about 10 % slower than the row-major
   * GEMV on the 1B model's W_down: 55.5 against 61.1 GB/s).
   */
  private dense(out: Buf, h: Buf, n: number): void {
    const { b, scratch: sc } = this.ctx;
    this.denseActivations(sc.actN, sc.otherN, h, n);
    b.matmul(out, sc.actN, this.prep.denseDown(), n, this.w.down.b);
  }

  /** Dense activations, each token's exact top-k, down product from those k columns only. */
  private topkExact(out: Buf, h: Buf, n: number, s: SparsitySettings, report?: LayerReport): void {
    const { ctx, c } = this;
    const { b, scratch: sc } = ctx;
    const F = this.F;
    const H = c.hidden;
    const k = this.kFor(s);
    const t0 = performance.now();
    this.denseActivations(sc.actN, sc.otherN, h, n);
    const t1 = performance.now();
    const down = this.prep.downCols();
    let ns = 0;
    for (let t = 0; t < n; t++) {
      // Token t's activations, where the ops can take them (offset 0 of a buffer).
      let act = sc.actN;
      if (t > 0) {
        b.copy2d(sc.g, 0, F, sc.actN, t * F, F, 1, F);
        act = sc.g;
      }
      ns = b.topk(act, F, k, true, s.shards, sc.sel);
      b.gather(sc.aSel, act, sc.sel, ns);
      b.accumulateCols(sc.outOne, sc.aSel, down, sc.sel, ns);
      if (this.prep.biasDown) b.add(sc.outOne, this.prep.biasDown, H);
      b.copy2d(out, t * H, H, sc.outOne, 0, H, 1, H);
    }
    if (!report || n > 1) return;
    const t2 = performance.now();
    const rowBytes = down.byteLength / F;
    const tel: FfnTelemetry = {
      method: "topk-exact",
      k,
      candidates: F,
      selected: sc.sel.slice(0, ns),
      scores:
        ctx.inspectLayer === this.layer
          ? { approx: Float32Array.from(b.read(sc.actN, 0, F)), candidates: new Int32Array(0) }
          : undefined,
      predictorMs: 0,
      exactMs: t1 - t0,
      downMs: t2 - t1,
      bytes: this.denseBytes() - this.w.down.w.byteLength + ns * rowBytes,
      denseBytes: this.denseBytes(),
    };
    if (ctx.auditNow) this.audit(tel, out, h, s);
    report.ffn = tel;
  }

  /** HiRE: predictor → top-k' candidates → exact rows → exact top-k → down product. */
  private hire(out: Buf, h: Buf, s: SparsitySettings, report?: LayerReport): void {
    const { ctx } = this;
    const { b, scratch: sc } = ctx;
    const plan = this.hirePlan(s);
    // A quantized predictor's HiRE step is one backend op. DA-top-k over P ≥ 2 shards: each worker
    // takes its shards from scores to partial output on data it wrote itself, with no barrier or
    // serial top-k in between. P = 1 (global top-k): hireSteps' steps, each parallel inside, without
    // returning here between them. Low-rank predictors run hireSteps op by op.
    const result = plan.pred.quant
      ? b.hireFfn(this.hireStep(out, h, plan, s.shards, sc))
      : this.hireSteps(out, h, plan.pred, plan.rows, plan.down, plan.k, plan.kp, s.shards);
    this.hireDone(out, h, s, plan, result, sc, report);
  }

  /**
   * A decode token's HiRE as one step beside others (a mixture's routed experts, Backend.hireFfnBatch):
   * with a quantized predictor, global top-k (shards 1) and no first-matrix bias; else undefined.
   */
  batchStep(out: Buf, h: Buf, slot: number): BatchableStep | undefined {
    const s = this.ctx.settings;
    if (s.ffn.method !== "hire" || s.shards !== 1 || this.prep.biasIn) return undefined;
    const plan = this.hirePlan(s);
    if (!plan.pred.quant) return undefined;
    const bufs = this.ctx.hireSlot(slot);
    return {
      step: this.hireStep(out, h, plan, 1, bufs),
      finish: (result, report) => this.hireDone(out, h, s, plan, result, bufs, report),
    };
  }

  /** This token's k and k', and the predictor and layouts HiRE reads. */
  private hirePlan(s: SparsitySettings): HirePlan {
    const { prep, w } = this;
    const F = this.F;
    const P = s.shards;
    const k = this.kFor(s);
    // k' is a multiple of P so every shard contributes the same number of candidates, and the
    // second (exact) selection can shard the candidate list at the same boundaries.
    let kp = Math.min(F, Math.ceil((k * layerOversample(s, this.layer)) / P) * P);
    if (kp > F - P) kp = F;
    const pred = prep.predictor(layerPredictor(s, this.layer));
    const rows = w.gate ? prep.gateUpRows() : prep.inRows();
    return { k, kp, pred, rows, down: prep.downCols() };
  }

  private hireStep(out: Buf, h: Buf, plan: HirePlan, shards: number, bufs: HireBuffers): HireFfnStep {
    return {
      out,
      x: h,
      predictor: plan.pred.quant!,
      biasIn: this.prep.biasIn ?? null,
      rows: plan.rows,
      gated: Boolean(this.w.gate),
      activation: this.c.activation,
      down: plan.down,
      k: plan.k,
      kp: plan.kp,
      shards,
      scores: bufs.scores,
      cand: bufs.cand,
      sel: bufs.sel,
      aSel: bufs.aSel,
      slot: this.layer,
    };
  }

  /** After a HiRE step: the down bias, what it read, and its telemetry (audited when asked). */
  private hireDone(
    out: Buf,
    h: Buf,
    s: SparsitySettings,
    plan: HirePlan,
    step: HireFfnResult,
    bufs: HireBuffers,
    report?: LayerReport,
  ): void {
    const { ctx } = this;
    const { b } = ctx;
    const F = this.F;
    const t = performance.now();
    this.addDownBias(out);
    // The down product's time is the op's and the bias's; building this telemetry is not part of it.
    const biasMs = performance.now() - t;
    const nc = step.candidates;
    const ns = step.selected;
    const bytes = plan.pred.byteLength + nc * (plan.rows.byteLength / F) + ns * (plan.down.byteLength / F);
    this.lastHire = { candidates: nc, selected: ns, bytes };
    if (!report) return;
    const tel: FfnTelemetry = {
      method: "hire",
      k: ns,
      candidates: nc,
      selected: bufs.sel.slice(0, ns),
      predictorMs: step.scoreMs,
      exactMs: step.rowsMs,
      downMs: step.downMs + biasMs,
      bytes,
      denseBytes: this.denseBytes(),
      scores:
        ctx.inspectLayer === this.layer
          ? { approx: Float32Array.from(b.read(bufs.scores, 0, F)), candidates: bufs.cand.slice(0, nc) }
          : undefined,
    };
    if (ctx.auditNow) this.audit(tel, out, h, s);
    report.ffn = tel;
  }

  /** HiRE one op at a time (each op parallel inside), for low-rank predictors. */
  private hireSteps(
    out: Buf,
    h: Buf,
    pred: Predictor,
    rows: Weight,
    down: Weight,
    k: number,
    kp: number,
    P: number,
  ): HireFfnResult {
    const { ctx, c, w, prep } = this;
    const { b, scratch: sc } = ctx;
    const F = this.F;
    const t0 = performance.now();
    pred.score(sc.scores, h);
    if (prep.biasIn) b.add(sc.scores, prep.biasIn, F);
    // Rank neurons by the activation they would produce: |act(gate score)| (or act(W_in·x)).
    b.activate(sc.scores, F, c.activation);
    const nc = b.topk(sc.scores, F, kp, true, P, sc.cand);
    const t1 = performance.now();
    if (w.gate) {
      // One pass over the interleaved gate/up rows of the candidates, then split the pairs.
      for (let i = 0; i < nc; i++) {
        sc.pairIdx[2 * i] = 2 * sc.cand[i];
        sc.pairIdx[2 * i + 1] = 2 * sc.cand[i] + 1;
      }
      b.matvecRows(sc.pairOut, h, rows, sc.pairIdx, 2 * nc);
      b.copy2d(sc.g, 0, 1, sc.pairOut, 0, 2, nc, 1); // gate outputs: the even entries
      b.copy2d(sc.u, 0, 1, sc.pairOut, 1, 2, nc, 1); // up outputs: the odd ones
      b.gatedAct(sc.g, sc.u, nc, c.activation);
    } else {
      b.matvecRows(sc.g, h, rows, sc.cand, nc);
      if (prep.biasIn) {
        b.gather(sc.u, prep.biasIn, sc.cand, nc);
        b.add(sc.g, sc.u, nc);
      }
      b.activate(sc.g, nc, c.activation);
    }
    const ns = b.topk(sc.g, nc, Math.min(k, nc), true, P, sc.selPos);
    b.gather(sc.aSel, sc.g, sc.selPos, ns);
    for (let i = 0; i < ns; i++) sc.sel[i] = sc.cand[sc.selPos[i]];
    const t2 = performance.now();
    b.accumulateCols(out, sc.aSel, down, sc.sel, ns);
    const t3 = performance.now();
    return { candidates: nc, selected: ns, scoreMs: t1 - t0, rowsMs: t2 - t1, downMs: t3 - t2 };
  }

  /** DIP: top |x| input columns for gate/up, top |GLU| neurons for down; dip-ca biases toward cached neurons. */
  private dip(out: Buf, h: Buf, s: SparsitySettings, report?: LayerReport): void {
    const { ctx, c, prep } = this;
    const { b, scratch: sc } = ctx;
    const F = this.F;
    const H = c.hidden;
    const k = this.kFor(s);
    const kx = resolveCount(layerK(s, this.layer), H);
    const t0 = performance.now();
    const ca = s.ffn.method === "dip-ca";
    const gateCols = prep.gateInputCols();
    const upCols = prep.upInputCols();
    const inCol = gateCols.byteLength / H + upCols.byteLength / H; // one input's W_gate and W_up columns
    let missBytes = 0;
    let nx: number;
    if (ca) {
      this.lruIn ??= new ColumnLru(H, kx);
      const m = this.cacheAwareTopk(this.lruIn, h, H, kx, 1, sc.inSel, s);
      nx = m.count;
      missBytes += m.misses * inCol;
    } else {
      nx = b.topk(h, H, kx, true, 1, sc.inSel);
    }
    b.gather(sc.hSel, h, sc.inSel, nx);
    b.accumulateCols(sc.g, sc.hSel, gateCols, sc.inSel, nx);
    b.accumulateCols(sc.u, sc.hSel, upCols, sc.inSel, nx);
    b.gatedAct(sc.g, sc.u, F, c.activation);
    const t1 = performance.now();
    const down = prep.downCols();
    const downRow = down.byteLength / F;
    let ns: number;
    if (ca) {
      this.lru ??= new ColumnLru(F, k);
      const m = this.cacheAwareTopk(this.lru, sc.g, F, k, s.shards, sc.sel, s);
      ns = m.count;
      missBytes += m.misses * downRow;
    } else {
      ns = b.topk(sc.g, F, k, true, s.shards, sc.sel);
    }
    b.gather(sc.aSel, sc.g, sc.sel, ns);
    const t2 = performance.now();
    b.accumulateCols(out, sc.aSel, down, sc.sel, ns);
    this.addDownBias(out);
    const t3 = performance.now();
    if (!report) return;
    const tel: FfnTelemetry = {
      method: s.ffn.method,
      k: ns,
      candidates: F,
      selected: sc.sel.slice(0, ns),
      predictorMs: 0,
      exactMs: t1 - t0 + (t2 - t1),
      downMs: t3 - t2,
      bytes: nx * inCol + ns * downRow,
      denseBytes: this.denseBytes(),
    };
    if (ca) {
      tel.storageBytes = missBytes;
      tel.cacheHitRate = tel.bytes > 0 ? 1 - missBytes / tel.bytes : 1;
    }
    if (ctx.auditNow) this.audit(tel, out, h, s);
    report.ffn = tel;
  }

  /**
   * dip-ca's cache-aware selection over n weight columns (inputs of W_gate/W_up, or neurons of
   * W_down) scored by |v|: columns not in the simulated cache compete with their score scaled by γ
   * (DIP-CA's mask), then the picks are touched in the LRU. Returns the count and the misses.
   */
  private cacheAwareTopk(
    lru: ColumnLru,
    v: Buf,
    n: number,
    k: number,
    shards: number,
    out: Int32Array,
    s: SparsitySettings,
  ): { count: number; misses: number } {
    const { b, scratch: sc } = this.ctx;
    lru.setCapacity(Math.max(k, Math.round(s.ffn.cacheFraction * n)));
    const vals = b.read(v, 0, n);
    const biased = b.read(sc.scores, 0, n);
    const gamma = s.ffn.cacheGamma;
    for (let i = 0; i < n; i++) biased[i] = lru.resident[i] ? Math.abs(vals[i]) : gamma * Math.abs(vals[i]);
    b.write(sc.scores, 0, biased);
    const count = b.topk(sc.scores, n, k, false, shards, out);
    let misses = 0;
    for (let i = 0; i < count; i++) if (!lru.touch(out[i])) misses++;
    return { count, misses };
  }

  private addDownBias(out: Buf): void {
    if (this.prep.biasDown) this.ctx.b.add(out, this.prep.biasDown, this.c.hidden);
  }

  /** Dense pass for comparison: recall of the selection against the exact top-k, and output error. */
  private audit(tel: FfnTelemetry, out: Buf, h: Buf, s: SparsitySettings): void {
    const { ctx, c, w } = this;
    const { b, scratch: sc } = ctx;
    const F = this.F;
    const k = this.kFor(s);
    this.denseActivations(sc.auditAct, sc.auditOther, h, 1);
    const exactK = b.topk(sc.auditAct, F, k, true, 1, sc.auditTop);
    tel.recall = recall(tel.selected, sc.auditTop.subarray(0, exactK));
    if (tel.scores) {
      tel.scores.exact = Float32Array.from(b.read(sc.auditAct, 0, F));
      tel.scores.exactTopK = sc.auditTop.slice(0, exactK);
    }
    b.matmul(sc.auditOut, sc.auditAct, this.prep.downCols(), 1, w.down.b);
    tel.relError = relativeError(b.read(out, 0, c.hidden), b.read(sc.auditOut, 0, c.hidden), c.hidden);
  }
}
