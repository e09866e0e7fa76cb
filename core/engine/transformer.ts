// The decoder forward pass, shared by every architecture: embed → layers (attention block, FFN
// block, both pre-norm with residuals, or side by side on one normed input) → final norm → output
// layer. What differs between architectures is data (ModelConfig, ModelWeights), not code paths here.
//
// Replaceable parts: each layer's FFN is a `FeedForward` and the output layer an `OutputLayer`, so
// a sparse method (HiRE, DIP) swaps them per layer between two tokens without touching this loop.
// Every forward fills a `ForwardReport` with per-layer timings for telemetry.
import {
  KV_ELEMENT_BYTES,
  type Backend,
  type Buf,
  type HireFfnResult,
  type HireFfnStep,
  type KvDtype,
  type StepGraph,
} from "../backend/backend.js";
import {
  interleavedRopeOrder,
  layerRope,
  mappedNorm,
  type FfnWeights,
  type LayerWeights,
  type ModelConfig,
  type ModelWeights,
  type Norm,
} from "../arch/config.js";
import type { Weight } from "../loader/safetensors.js";
import type { FfnTelemetry, HeadTelemetry } from "../sparse/telemetry.js";
import { MoeFeedForward, MoeScratch, type MoeTelemetry } from "./moe.js";
import { setImmediate as nextTurn } from "node:timers/promises";

/** The most tokens any backend's forward pass takes at once (Backend.prefillBatch is at most this). */
export const MAX_BATCH = 256;

/** Activation buffers, allocated once per session and reused for every token. */
export class Workspace {
  readonly x: Buf; // residual stream [batch][hidden]
  readonly h: Buf; // normed input of a block [batch][hidden]
  readonly hFfn: Buf; // the FFN's normed input, made before the attention block adds to x (parallelBlocks)
  readonly q: Buf; // [batch][heads*headDim]
  readonly k: Buf; // [batch][kvHeads*headDim]
  readonly v: Buf;
  readonly qkv: Buf; // fused projection output (GPT-2) [batch][3*hidden]
  readonly att: Buf; // attention output before o_proj [batch][heads*headDim]
  /** q and k with adjacent rotary pairs moved to rotate-half order (ModelConfig.ropeInterleaved). */
  readonly qRope: Buf;
  readonly kRope: Buf;
  readonly tmp: Buf; // block output before the residual add [batch][hidden]
  readonly ff1: Buf; // FFN intermediate [batch][intermediate]
  readonly ff2: Buf;
  readonly last: Buf; // final hidden state of the last token [hidden]
  readonly logits: Buf; // [vocab]
  readonly moe: MoeScratch; // mixture-of-experts layers' router logits and expert rows
  readonly positions: Int32Array;

  constructor(
    b: Backend,
    c: ModelConfig,
    w: ModelWeights,
    readonly batch = Math.min(b.prefillBatch, MAX_BATCH),
  ) {
    this.positions = new Int32Array(batch);
    const qDim = c.heads * c.headDim;
    const kvDim = c.kvHeads * c.headDim;
    this.x = b.alloc(batch * c.hidden);
    this.h = b.alloc(batch * c.hidden);
    this.hFfn = b.alloc(c.parallelBlocks && w.layers.some((l) => l.ffnNorm) ? batch * c.hidden : 0);
    this.q = b.alloc(batch * qDim);
    this.k = b.alloc(batch * kvDim);
    this.v = b.alloc(batch * kvDim);
    this.qkv = b.alloc(w.layers.some((l) => "fused" in l.qkv) ? batch * (qDim + 2 * kvDim) : 0);
    this.att = b.alloc(batch * qDim);
    this.qRope = b.alloc(c.ropeInterleaved ? batch * qDim : 0);
    this.kRope = b.alloc(c.ropeInterleaved ? batch * kvDim : 0);
    this.tmp = b.alloc(batch * c.hidden);
    this.ff1 = b.alloc(batch * c.intermediate);
    this.ff2 = b.alloc(c.gatedFfn ? batch * c.intermediate : 0);
    this.last = b.alloc(c.hidden);
    this.logits = b.alloc(c.vocab);
    this.moe = new MoeScratch(b, c, batch);
  }
}

/**
 * Sliding-window layers keep a ring of window + RING_SLACK slots. The slack lets a batch of up to
 * MAX_BATCH tokens see its whole window (all its keys are written before attention), and lets the
 * next prompt reuse the cached prefix after a reply of up to about RING_SLACK tokens (regenerate).
 */
export const RING_SLACK = 1024;

/** Cache slots of each layer for a context of `capacity` positions (see KVCache). */
export function kvSlots(c: ModelConfig, capacity: number): number[] {
  return Array.from({ length: c.layers }, (_, l) => {
    const window = c.attentionWindows?.[l] ?? 0;
    return window > 0 ? Math.min(capacity, window + RING_SLACK) : capacity;
  });
}

/** Bytes one position takes in one layer's cache: its key and value rows for every key/value head. */
function kvBytesPerPosition(c: ModelConfig, dtype: KvDtype): number {
  return 2 * c.kvHeads * c.headDim * KV_ELEMENT_BYTES[dtype];
}

/** Bytes of a KV cache for a context of `capacity` positions. */
export function kvCacheBytes(c: ModelConfig, capacity: number, dtype: KvDtype = "f32"): number {
  return kvSlots(c, capacity).reduce((sum, slots) => sum + slots, 0) * kvBytesPerPosition(c, dtype);
}

/**
 * Bytes of keys and values that attention reads over all layers for the token at `position`:
 * every position up to it, or its last `window` in a sliding-window layer. At long contexts this
 * rivals the weights (Llama 3.2 1B at position 4000: 262 MB against 2.47 GB of bf16 weights).
 */
export function kvReadBytes(c: ModelConfig, position: number, dtype: KvDtype = "f32"): number {
  let visible = 0;
  for (let l = 0; l < c.layers; l++) {
    const window = c.attentionWindows?.[l] ?? 0;
    visible += window > 0 ? Math.min(position + 1, window) : position + 1;
  }
  return kvBytesPerPosition(c, dtype) * visible;
}

/** A ring size shared by the layers of one window: which position each slot holds (-1: none). */
interface Ring {
  slots: number;
  window: number;
  held: Int32Array;
}

/**
 * Keys and values of every layer, sized once for the whole context. Layout [kvHeads][slots][headDim],
 * position p in slot p % slots: a full-attention layer has a slot per position of the context; a
 * sliding-window layer only a ring (see RING_SLACK), which is what makes a long context affordable
 * for Gemma 2/3 and Mistral-style models (most of their layers look back only `window` tokens).
 */
export class KVCache {
  readonly k: Buf[] = [];
  readonly v: Buf[] = [];
  /** Slots of each layer (what the backend's attention ops call `capacity`). */
  readonly slots: number[];
  private readonly rings = new Map<number, Ring>();

  constructor(
    b: Backend,
    c: ModelConfig,
    /** Positions the cache holds: the context length. */
    readonly capacity: number,
    /** f16 halves the cache's memory and what attention reads, at about 3 significant digits a value. */
    readonly dtype: KvDtype = "f32",
  ) {
    this.slots = kvSlots(c, capacity);
    this.slots.forEach((slots, l) => {
      if (slots < capacity && !this.rings.has(slots))
        this.rings.set(slots, { slots, window: c.attentionWindows![l], held: new Int32Array(slots).fill(-1) });
    });
    // Each layer's keys, then its values.
    const lengths = this.slots.flatMap((slots) => [c.kvHeads * slots * c.headDim, c.kvHeads * slots * c.headDim]);
    const bufs = b.allocKvSet ? b.allocKvSet(lengths, dtype) : lengths.map((n) => b.allocKv(n, dtype));
    for (let l = 0; l < this.slots.length; l++) {
      this.k.push(bufs[2 * l]);
      this.v.push(bufs[2 * l + 1]);
    }
    b.prefaultKv?.(bufs, c.kvHeads);
  }

  /** Positions pos0 .. pos0 + n - 1 are about to be written (so their slots stop holding older ones). */
  claim(pos0: number, n: number): void {
    for (const r of this.rings.values()) for (let p = pos0; p < pos0 + n; p++) r.held[p % r.slots] = p;
  }

  /**
   * Whether a forward pass may start at position `length` over the cached positions before it: every
   * ring still holds the last `window` of them (a longer reply since may have overwritten them).
   */
  holdsPrefix(length: number): boolean {
    for (const r of this.rings.values())
      for (let p = Math.max(0, length - r.window + 1); p < length; p++) if (r.held[p % r.slots] !== p) return false;
    return true;
  }
}

/** What one layer did during one forward call. */
export interface LayerReport {
  attentionMs: number;
  ffnMs: number;
  /** Filled by sparse FFNs: what was selected, what it cost, how good it was. */
  ffn?: FfnTelemetry;
  /** Filled by mixture-of-experts layers: each token's experts and their weights. */
  moe?: MoeTelemetry;
}

export interface ForwardReport {
  tokens: number;
  layers: LayerReport[];
  outputMs: number;
  /** Filled by a sparse output layer. */
  head?: HeadTelemetry;
}

/**
 * One token of an FFN as a single backend step that can run beside others (Backend.hireFfnBatch: a
 * mixture layer's routed experts at once), and what the FFN does once it has run.
 */
export interface BatchableStep {
  step: HireFfnStep;
  finish(result: HireFfnResult, report?: LayerReport): void;
}

/** An FFN block: reads the normed input `h` of n tokens and writes its output into `out`. */
export interface FeedForward {
  forward(out: Buf, h: Buf, n: number, report?: LayerReport): void;
  /**
   * This token (one) as a BatchableStep writing `out` and using concurrent-step buffers `slot`, or
   * undefined where the FFN's method is not one such step (then forward runs it).
   */
  batchStep?(out: Buf, h: Buf, slot: number): BatchableStep | undefined;
  /** Whether this token's block can be recorded into a decode graph (no host data mid-step). */
  graphable?(): boolean;
  /** After a recorded step is replayed: fill the telemetry the block would have (report.ffn). */
  afterReplay?(report: LayerReport): void;
}

/** The output (softmax) layer: final hidden state of one token → logits over the vocabulary. */
export interface OutputLayer {
  forward(logits: Buf, hidden: Buf, report?: ForwardReport): void;
  graphable?(): boolean;
  afterReplay?(report: ForwardReport): void;
}

/** The dense FFN: SwiGLU (gate, up, down) or a plain two-matrix MLP, as the weights say. */
export class DenseFeedForward implements FeedForward {
  constructor(
    private readonly b: Backend,
    private readonly c: ModelConfig,
    private readonly w: FfnWeights,
    private readonly ws: Workspace,
  ) {}

  graphable(): boolean {
    return true;
  }

  forward(out: Buf, h: Buf, n: number): void {
    const { b, c, w, ws } = this;
    if (w.gate) {
      b.gatedMatmul(ws.ff2, h, w.gate.w, w.up.w, w.gate.b, w.up.b, n, c.activation, ws.ff1);
      b.matmul(out, ws.ff2, w.down.w, n, w.down.b);
    } else {
      b.matmul(ws.ff1, h, w.up.w, n, w.up.b);
      b.activate(ws.ff1, n * w.up.w.rows, c.activation);
      b.matmul(out, ws.ff1, w.down.w, n, w.down.b);
    }
  }
}

export class DenseOutputLayer implements OutputLayer {
  constructor(
    private readonly b: Backend,
    private readonly w: ModelWeights,
  ) {}

  graphable(): boolean {
    return true;
  }

  forward(logits: Buf, hidden: Buf): void {
    this.b.matmul(logits, hidden, this.w.head.w, 1, this.w.head.b);
  }
}

/**
 * A forward pass stopped between two layers because its AbortSignal fired: the keys and values of
 * its tokens are only partly written, so the caller must not count them as cached.
 */
export class ForwardAborted extends Error {
  constructor() {
    super("forward pass aborted");
    this.name = "ForwardAborted";
  }
}

export class Transformer {
  /** Per-layer FFN implementations; replace an entry to change how that layer computes. */
  readonly ffn: FeedForward[];
  output: OutputLayer;
  private readonly idsBuf = new Int32Array(MAX_BATCH);
  /**
   * Recorded decode steps, per KV cache (where the backend offers StepGraphs). A cache's first
   * graphable token runs op by op (weights reach the device, scratch buffers take their size), the
   * second is recorded, and every later one replays; any change to the FFNs, the head or their
   * settings drops them (invalidateGraphs).
   */
  private graphs = new Map<KVCache, { warm: boolean; graph?: StepGraph; failed?: string }>();
  /** Decode steps run by replaying a recorded step (a count, for tests and the bench). */
  replays = 0;
  /** ModelConfig.ropeInterleaved: where each q and k entry of a batch goes before the rope op. */
  private readonly ropeOrder?: { q: Int32Array; k: Int32Array };
  /** The zero bias of LayerNorms without one (Cohere's): the kernel takes one. */
  private zeroBias?: Weight;

  constructor(
    readonly backend: Backend,
    readonly config: ModelConfig,
    readonly weights: ModelWeights,
    readonly ws: Workspace = new Workspace(backend, config, weights),
  ) {
    this.ffn = weights.layers.map((l) => this.denseFfn(l));
    this.output = new DenseOutputLayer(backend, weights);
    if (config.ropeInterleaved && config.ropeInvFreq) {
      const { heads, kvHeads, headDim } = config;
      const rotDim = 2 * config.ropeInvFreq.length;
      this.ropeOrder = {
        q: interleavedRopeOrder(ws.batch, heads, headDim, rotDim),
        k: interleavedRopeOrder(ws.batch, kvHeads, headDim, rotDim),
      };
    }
  }

  /** Layer `l`'s FFN as the model defines it: dense, or a mixture of dense experts. */
  private denseFfn(l: LayerWeights): FeedForward {
    const { backend: b, config: c, ws } = this;
    if (!l.moe) return new DenseFeedForward(b, c, l, ws);
    const expert = (f: FfnWeights) => new DenseFeedForward(b, c, f, ws);
    const { experts, shared } = l.moe;
    return new MoeFeedForward(b, c, l.moe, ws.moe, experts.map(expert), shared && expert(shared));
  }

  /**
   * Run `ids` (at most ws.batch tokens) at positions pos0, pos0+1, …, appending their keys and
   * values to `cache`. Returns the logits of the last token (in ws.logits) unless `logits` is false.
   */
  forward(
    ids: ArrayLike<number>,
    pos0: number,
    cache: KVCache,
    report?: ForwardReport,
    logits = true,
  ): Float32Array | null {
    const { backend: b, config: c, ws } = this;
    this.startForward(ids.length, pos0, cache);
    if (ids.length === 1 && logits && this.decodeGraph(ids[0], pos0, cache)) {
      const out = b.read(ws.logits, 0, c.vocab); // waits for the step
      this.reportReplay(report);
      return out;
    }
    this.run(ids, pos0, cache, report, logits);
    return logits ? b.read(ws.logits, 0, c.vocab) : null;
  }

  /**
   * forward for a prefill batch, giving the event loop a turn after every layer: a batch of a large
   * model takes seconds, and a Stop (or any message) would otherwise wait for all of it. When `signal`
   * has fired at a turn, ForwardAborted is thrown. The pass keeps the FFNs and the head it started
   * with, so a settings change in a turn applies from the next pass, as in forward.
   */
  async forwardYielding(
    ids: ArrayLike<number>,
    pos0: number,
    cache: KVCache,
    report: ForwardReport | undefined,
    logits: boolean,
    signal?: AbortSignal,
  ): Promise<Float32Array | null> {
    const { backend: b, config: c, ws } = this;
    this.startForward(ids.length, pos0, cache);
    for (const _layer of this.pass(ids, pos0, cache, report, logits)) {
      await nextTurn();
      if (signal?.aborted) throw new ForwardAborted();
    }
    return logits ? b.read(ws.logits, 0, c.vocab) : null;
  }

  /**
   * forward, then the greedy next token (sampler.ts's argmax of the last token's logits), found
   * where the logits are: on a GPU only the id comes back, not the vocabulary's logits.
   */
  forwardGreedy(ids: ArrayLike<number>, pos0: number, cache: KVCache, report?: ForwardReport): number {
    const { backend: b, config: c, ws } = this;
    this.startForward(ids.length, pos0, cache);
    if (ids.length === 1 && this.decodeGraph(ids[0], pos0, cache)) {
      const id = b.readArgmax(); // waits for the step
      this.reportReplay(report);
      return id;
    }
    this.run(ids, pos0, cache, report, true);
    b.argmax(ws.logits, c.vocab);
    return b.readArgmax();
  }

  /**
   * The last forward pass's logits from the whole output layer, whatever computes it now (HiRE's
   * leaves most at -inf): for a step that needs a token HiRE left out (structured output).
   */
  denseLogits(): Float32Array {
    const { backend: b, config: c, ws } = this;
    new DenseOutputLayer(b, this.weights).forward(ws.logits, ws.last);
    if (c.finalSoftcap !== undefined) b.softcap(ws.logits, c.vocab, c.finalSoftcap);
    return b.read(ws.logits, 0, c.vocab);
  }

  /** Whether exactLogits can compute rows (the head has no bias and is not stored transposed). */
  get rowLogits(): boolean {
    const head = this.weights.head;
    return !head.b && !head.w.transposed;
  }

  /**
   * The last forward pass's exact logits of these tokens only (one head row each, as HiRE computes
   * its candidates), or null where rowLogits is false (then denseLogits).
   */
  exactLogits(ids: Int32Array): Float32Array | null {
    const { backend: b, config: c, ws } = this;
    if (!this.rowLogits || ids.length > c.vocab) return null;
    b.matvecRows(ws.logits, ws.last, this.weights.head.w, ids, ids.length);
    if (c.finalSoftcap !== undefined) b.softcap(ws.logits, ids.length, c.finalSoftcap);
    return b.read(ws.logits, 0, ids.length).slice();
  }

  /** The vocabulary's logits with exactLogits' values at `ids` and -Infinity elsewhere (null as exactLogits). */
  rowsLogits(ids: Int32Array): Float32Array | null {
    const exact = this.exactLogits(ids);
    if (!exact) return null;
    const out = new Float32Array(this.config.vocab).fill(-Infinity);
    ids.forEach((id, i) => (out[id] = exact[i]));
    return out;
  }

  /**
   * forward for one token when only `rows` of the next logits can matter (the tokens a grammar
   * allows next, when they are few): the output layer reads those rows alone, as HiRE reads its
   * candidates, the grammar being a perfect predictor. The other logits are -Infinity. Needs rowLogits.
   */
  forwardRows(id: number, pos0: number, cache: KVCache, rows: Int32Array, report?: ForwardReport): Float32Array {
    this.startForward(1, pos0, cache);
    this.run([id], pos0, cache, report, "rows");
    const t0 = performance.now();
    const out = this.rowsLogits(rows)!;
    if (report) {
      const ms = performance.now() - t0;
      const head = this.weights.head.w.byteLength;
      report.outputMs += ms;
      // The output layer read the allowed tokens' rows: telemetry as for a sparse head.
      const bytes = Math.round((rows.length * head) / this.config.vocab);
      report.head = { method: "grammar", k: rows.length, candidates: rows.length, ms, bytes, denseBytes: head };
    }
    return out;
  }

  /** Checks a forward pass's shape, then claims its positions' cache slots. */
  private startForward(n: number, pos0: number, cache: KVCache): void {
    if (n < 1 || n > this.ws.batch) throw new RangeError(`forward takes 1..${this.ws.batch} tokens, got ${n}`);
    if (pos0 + n > cache.capacity)
      throw new RangeError(`positions ${pos0}..${pos0 + n - 1} exceed the cache (${cache.capacity})`);
    cache.claim(pos0, n);
  }

  /** Drop the recorded decode steps (the FFNs, the head or their settings changed). */
  invalidateGraphs(): void {
    this.graphs = new Map();
  }

  /** Why recording failed for `cache`, if it did (recorded steps then stay off for it). */
  graphFailure(cache: KVCache): string | undefined {
    return this.graphs.get(cache)?.failed;
  }

  private graphable(): boolean {
    // Learned position tables (GPT-2, OPT) are looked up with host positions: those run op by op.
    if (this.weights.positions) return false;
    return this.ffn.every((f) => f.graphable?.() ?? false) && (this.output.graphable?.() ?? false);
  }

  /**
   * One token through a recorded step (enqueued: the caller's read waits for it); false when it must
   * run op by op (see `graphs`). The step ends with the logits' argmax, for forwardGreedy.
   */
  private decodeGraph(id: number, pos0: number, cache: KVCache): boolean {
    const g = this.backend.graphs;
    if (!g || !this.graphable()) return false;
    let entry = this.graphs.get(cache);
    if (!entry) this.graphs.set(cache, (entry = { warm: false }));
    if (entry.failed) return false;
    if (!entry.warm) {
      entry.warm = true;
      return false;
    }
    g.setStep(id, pos0);
    if (!entry.graph) {
      g.begin();
      try {
        this.run([id], pos0, cache, { tokens: 0, layers: [], outputMs: 0 }, true);
        entry.graph = g.end();
      } catch (e) {
        g.abort();
        entry.failed = e instanceof Error ? e.message : String(e);
        return false;
      }
    }
    if (!g.launch(entry.graph)) {
      this.graphs.delete(cache); // stale: record again from the next token
      return false;
    }
    this.replays++;
    return true;
  }

  /** After a replayed step has finished: its telemetry, from the GPU marks and the blocks' results. */
  private reportReplay(report: ForwardReport | undefined): void {
    const c = this.config;
    const g = this.backend.graphs!;
    if (report) {
      // GPU times between the marks the step recorded: 2l..2l+1 attention, 2l+1..2l+2 FFN.
      const t = g.markTimes(2 * c.layers + 2);
      report.tokens = 1;
      report.layers.length = c.layers;
      report.head = undefined;
      for (let l = 0; l < c.layers; l++) {
        const lr: LayerReport = { attentionMs: t[2 * l], ffnMs: t[2 * l + 1] };
        this.ffn[l].afterReplay?.(lr);
        report.layers[l] = lr;
      }
      report.outputMs = t[2 * c.layers];
      this.output.afterReplay?.(report);
    }
  }

  /** The ops of one forward pass (recorded instead of run while the backend records a step). */
  private run(
    ids: ArrayLike<number>,
    pos0: number,
    cache: KVCache,
    report: ForwardReport | undefined,
    logits: boolean | "rows",
  ): void {
    for (const _layer of this.pass(ids, pos0, cache, report, logits));
  }

  /** run's ops, pausing after each layer (forwardYielding takes a turn of the event loop there). */
  private *pass(
    ids: ArrayLike<number>,
    pos0: number,
    cache: KVCache,
    report: ForwardReport | undefined,
    /** false: no output; "rows": the last token's final hidden state (ws.last) without the output layer. */
    logits: boolean | "rows",
  ): Generator<number> {
    const { backend: b, config: c, weights: w, ws } = this;
    const ffn = this.ffn.slice(); // the layers this pass started with (see forwardYielding)
    const output = this.output;
    const n = ids.length;
    const marks = b.graphs?.recording ? b.graphs : undefined;
    marks?.mark(0);
    const tokenIds = this.idsBuf.subarray(0, n);
    tokenIds.set(Array.from(ids));
    const positions = ws.positions.subarray(0, n);
    for (let i = 0; i < n; i++) positions[i] = pos0 + i;

    b.embed(ws.x, w.embed, tokenIds, c.embedScale);
    if (w.positions) {
      for (let i = 0; i < n; i++) positions[i] += c.positionOffset;
      b.embed(ws.tmp, w.positions, positions);
      b.add(ws.x, ws.tmp, n * c.hidden);
      for (let i = 0; i < n; i++) positions[i] -= c.positionOffset;
    }

    if (report) {
      report.tokens = n;
      report.layers.length = c.layers;
    }
    for (let l = 0; l < c.layers; l++) {
      const t0 = performance.now();
      // Parallel blocks read x as it was before the attention block adds to it: their own norm of it
      // now (GPT-NeoX), or the attention's, which ws.h still holds after the block (Phi).
      const ffnNorm = w.layers[l].ffnNorm;
      if (c.parallelBlocks && ffnNorm) this.norm(ws.hFfn, ws.x, ffnNorm, n);
      this.attentionBlock(l, n, pos0, positions, cache);
      marks?.mark(2 * l + 1);
      const t1 = performance.now();
      if (!c.parallelBlocks) this.norm(ws.h, ws.x, ffnNorm, n);
      const layerReport: LayerReport | undefined = report ? { attentionMs: t1 - t0, ffnMs: 0 } : undefined;
      ffn[l].forward(ws.tmp, c.parallelBlocks && ffnNorm ? ws.hFfn : ws.h, n, layerReport);
      const post = w.layers[l].postFfnNorm;
      if (post) this.norm(ws.tmp, ws.tmp, post, n);
      b.add(ws.x, ws.tmp, n * c.hidden);
      marks?.mark(2 * l + 2);
      if (report && layerReport) {
        layerReport.ffnMs = performance.now() - t1;
        report.layers[l] = layerReport;
      }
      yield l;
    }
    if (!logits) return;

    const t0 = performance.now();
    b.copy2d(ws.last, 0, c.hidden, ws.x, (n - 1) * c.hidden, c.hidden, 1, c.hidden);
    this.norm(ws.last, ws.last, w.finalNorm, 1);
    if (logits === "rows") {
      if (report) report.outputMs = performance.now() - t0;
      return;
    }
    output.forward(ws.logits, ws.last, report);
    if (c.finalSoftcap !== undefined) b.softcap(ws.logits, c.vocab, c.finalSoftcap);
    marks?.mark(2 * c.layers + 1);
    if (marks) b.argmax(ws.logits, c.vocab); // a replay's greedy id (forwardGreedy), after the last mark
    if (report) report.outputMs = performance.now() - t0;
  }

  private attentionBlock(l: number, n: number, pos0: number, positions: Int32Array, cache: KVCache): void {
    const { backend: b, config: c, weights: w, ws } = this;
    const lw = w.layers[l];
    const qDim = c.heads * c.headDim;
    const kvDim = c.kvHeads * c.headDim;
    this.norm(ws.h, ws.x, lw.attnNorm, n);
    if ("fused" in lw.qkv && lw.qkv.grouped) {
      // One row per (token, key/value head) of (G + 2)·headDim: its G q heads, its k and its v.
      const [D, G] = [c.headDim, c.heads / c.kvHeads];
      const row = (G + 2) * D;
      b.matmul(ws.qkv, ws.h, lw.qkv.fused.w, n, lw.qkv.fused.b);
      b.copy2d(ws.q, 0, G * D, ws.qkv, 0, row, n * c.kvHeads, G * D);
      b.copy2d(ws.k, 0, D, ws.qkv, G * D, row, n * c.kvHeads, D);
      b.copy2d(ws.v, 0, D, ws.qkv, (G + 1) * D, row, n * c.kvHeads, D);
    } else if ("fused" in lw.qkv) {
      const width = qDim + 2 * kvDim;
      b.matmul(ws.qkv, ws.h, lw.qkv.fused.w, n, lw.qkv.fused.b);
      b.copy2d(ws.q, 0, qDim, ws.qkv, 0, width, n, qDim);
      b.copy2d(ws.k, 0, kvDim, ws.qkv, qDim, width, n, kvDim);
      b.copy2d(ws.v, 0, kvDim, ws.qkv, qDim + kvDim, width, n, kvDim);
    } else {
      const { q, k, v } = lw.qkv;
      b.matmulMany(ws.h, n, [
        { y: ws.q, w: q.w, bias: q.b },
        { y: ws.k, w: k.w, bias: k.b },
        { y: ws.v, w: v.w, bias: v.b },
      ]);
    }
    if (lw.qkNorm) {
      // In place, as many rows as the weights' width makes: a head's (Qwen3) or a token's (OLMo 2).
      const { q, k } = lw.qkNorm;
      b.rmsNorm(ws.q, ws.q, q.weight, (n * qDim) / q.weight.cols, c.normEps);
      b.rmsNorm(ws.k, ws.k, k.weight, (n * kvDim) / k.weight.cols, c.normEps);
    }
    let [q, k] = [ws.q, ws.k];
    if (this.ropeOrder) {
      // Adjacent rotary pairs into the order the rope op turns, in q and k alike (the cache keeps
      // them so): their dot products, so the attention, are the model's.
      b.gather(ws.qRope, ws.q, this.ropeOrder.q, n * qDim);
      b.gather(ws.kRope, ws.k, this.ropeOrder.k, n * kvDim);
      [q, k] = [ws.qRope, ws.kRope];
    }
    const [kc, vc] = [cache.k[l], cache.v[l]];
    const window = c.attentionWindows?.[l] ?? 0;
    b.ropeCacheWrite(
      q,
      k,
      ws.v,
      kc,
      vc,
      n,
      c.heads,
      c.kvHeads,
      c.headDim,
      positions,
      layerRope(c, l),
      pos0,
      cache.slots[l],
      c.ropeFactor,
    );
    b.attention(
      ws.att,
      q,
      cache.k[l],
      cache.v[l],
      n,
      c.heads,
      c.kvHeads,
      c.headDim,
      pos0,
      cache.slots[l],
      c.attentionScale ?? 1 / Math.sqrt(c.headDim),
      window,
      c.attentionSoftcap,
    );
    if (lw.postAttnNorm) {
      b.matmul(ws.tmp, ws.att, lw.o.w, n, lw.o.b);
      this.norm(ws.tmp, ws.tmp, lw.postAttnNorm, n);
      b.add(ws.x, ws.tmp, n * c.hidden);
    } else {
      b.matmul(ws.x, ws.att, lw.o.w, n, lw.o.b, true); // the residual add in the same op
    }
  }

  /** y = norm(x) over n rows, or a copy of x where the block has no norm (OLMo 2). */
  private norm(y: Buf, x: Buf, norm: Norm | null, n: number): void {
    const { backend: b, config: c } = this;
    if (!norm) b.copy2d(y, 0, c.hidden, x, 0, c.hidden, n, c.hidden);
    else if (c.norm === "rms") b.rmsNorm(y, x, norm.weight, n, c.normEps);
    else b.layerNorm(y, x, norm.weight, norm.bias ?? (this.zeroBias ??= zeros(norm.weight)), n, c.normEps);
  }
}

/** A vector of zeros as long as `like` (f32). */
function zeros(like: Weight): Weight {
  return mappedNorm(like, "*0", () => 0).weight;
}
