// The backend interface: every op the model runs, in one place. Model code (core/engine) calls
// only these, never a kernel directly: the CPU backend (cpu.ts) and the CUDA one (cuda.ts) slot in
// alike, and select.ts picks one.
//
// Activations live in backend-owned buffers (`Buf`), sized once by the workspace and reused for
// every token. Shapes are passed explicitly (n = tokens in the batch); a buffer may be larger
// than the op needs. To add an op: add it here, implement it in every backend (cpu.ts, and its
// native kernel in core/native, cuda.ts and its kernel in core/native/src/cuda), add a reference
// test in test/kernels.test.ts and a CPU-vs-CUDA case in test/cuda.test.ts.
import type { DType } from "../loader/safetensors.js";
import type { QuantDType } from "../loader/weight-format.js";
import type { Activation } from "../arch/config.js";
import type { HireFfnResult, NativeQuant, NativeWeight } from "../native/addon.js";

export type { HireFfnResult };

/** A weight's storage: a checkpoint's dtype, or Q8 / Q4 (int8 / int4 in groups: a model loaded with int8 or int4 weights). */
export type WeightDType = DType | QuantDType;

/** A weight matrix as the kernels see it: rows = outputs, cols = inputs, in its storage dtype and layout. */
export interface Weight {
  readonly handle: NativeWeight;
  readonly dtype: WeightDType;
  readonly rows: number;
  readonly cols: number;
  /** Stored [cols][rows] (each input column contiguous) instead of [rows][cols]. */
  readonly transposed: boolean;
  readonly byteLength: number;
}

/** A group-quantized (int8/int4) copy of a weight, used to predict which rows matter. */
export interface QuantWeight {
  readonly handle: NativeQuant;
  readonly rows: number;
  readonly cols: number;
  readonly bits: number;
  readonly groupSize: number;
  readonly byteLength: number;
}

/** One decode token of a HiRE FFN layer, for Backend.hireFfn (inputs, settings, outputs). */
export interface HireFfnStep {
  out: Buf;
  x: Buf;
  predictor: QuantWeight;
  /** Bias of the first matrix [F], or null. */
  biasIn: Buf | null;
  /** W_gate/W_up rows interleaved (gated) or W_in rows, not transposed. */
  rows: Weight;
  gated: boolean;
  activation: Activation;
  /** W_down, transposed (each neuron's column contiguous). */
  down: Weight;
  k: number;
  kp: number;
  shards: number;
  /** Written: act(approximate scores) [F], candidates, selected neurons and their activations. */
  scores: Buf;
  cand: Int32Array;
  sel: Int32Array;
  aSel: Buf;
  /** Which layer this is (0..1023): where a GPU backend keeps the step's results for a replay. */
  slot: number;
}

/** HiRE on the output layer as one op, for Backend.hireHead. */
export interface HireHeadStep {
  /** Written: exact logits of the kept tokens, -inf elsewhere. */
  logits: Buf;
  x: Buf;
  predictor: QuantWeight;
  /** The LM head, not transposed. */
  head: Weight;
  k: number;
  kp: number;
  shards: number;
  scores: Buf;
  slot: number;
}

/** A decode step recorded by StepGraphs. */
export interface StepGraph {
  readonly __brand: "StepGraph";
}

/**
 * Decode steps recorded once and replayed (CUDA graphs), so a token costs one launch instead of one
 * per op. While recording, ops are recorded, not run; the position-dependent ones read the token id
 * and position set by setStep; an op that must reach the host (read, topk, host indices) throws, and
 * the caller runs that step op by op instead. Offered by backends where launches are the cost.
 */
export interface StepGraphs {
  readonly recording: boolean;
  setStep(id: number, pos: number): void;
  begin(): void;
  end(): StepGraph;
  abort(): void;
  /** Replays a step; false when it is stale and must be recorded again. */
  launch(g: StepGraph): boolean;
  /** A timing mark recorded with the step (0..1023). */
  mark(i: number): void;
  /** Once the step has finished: the time from mark i to mark i + 1, for every i < count - 1. */
  markTimes(count: number): Float64Array;
  /** hireFfn's (or hireHead's) lists and GPU step times for `slot`, once the step has finished. */
  hireResults(
    slot: number,
    cand: Int32Array,
    nCand: number,
    sel: Int32Array,
    nSel: number,
  ): { scoreMs: number; rowsMs: number; downMs: number };
}

/** One product of Backend.matmulMany. */
export interface MatmulPart {
  y: Buf;
  w: Weight;
  bias: Weight | null;
}

/** A backend-owned f32 buffer. On the CPU backend it is a Float32Array. */
export interface Buf {
  readonly length: number;
}

/** Element type of a KV cache. */
export type KvDtype = "f32" | "f16";
export const KV_DTYPES: readonly KvDtype[] = ["f32", "f16"];
export const isKvDtype = (x: unknown): x is KvDtype => (KV_DTYPES as readonly unknown[]).includes(x);
/** Bytes per element of a KV cache. */
export const KV_ELEMENT_BYTES: Record<KvDtype, number> = { f32: 4, f16: 2 };

export interface Backend {
  /** What runs the ops, for people: "cpu (avx512 kernels, 2 threads)", "cuda:0 NVIDIA H200". */
  readonly name: string;
  /** Wait until every op issued so far has finished (a no-op where ops run synchronously). */
  synchronize(): void;
  /** A zero-filled f32 buffer of `length` elements. */
  alloc(length: number): Buf;
  /**
   * Read `length` values starting at `offset`: a view where the backend can (CPU), else a copy (GPU),
   * so writing into the result changes the buffer only after `write`.
   */
  read(b: Buf, offset: number, length: number): Float32Array;
  /** b[offset + i] = data[i]. Writing back what `read` returned is free on the CPU backend. */
  write(b: Buf, offset: number, data: Float32Array): void;
  /** dst[dstOff + i*dstStride + j] = src[srcOff + i*srcStride + j] for i < rows, j < width. */
  copy2d(
    dst: Buf,
    dstOff: number,
    dstStride: number,
    src: Buf,
    srcOff: number,
    srcStride: number,
    rows: number,
    width: number,
  ): void;

  /** y[n][w.rows] = x[n][w.cols] · Wᵀ (+ bias); with accumulate, y += that (a residual add in the same op). */
  matmul(y: Buf, x: Buf, w: Weight, n: number, bias: Weight | null, accumulate?: boolean): void;
  /** Several products of the same x (q, k and v): parts[i].y = x · parts[i].wᵀ (+ bias). */
  matmulMany(x: Buf, n: number, parts: readonly MatmulPart[]): void;
  /**
   * The gated FFN's first half: y = act(x · gateᵀ + gateBias) * (x · upᵀ + upBias) over n tokens;
   * scratchUp (n × rows) may be overwritten.
   */
  gatedMatmul(
    y: Buf,
    x: Buf,
    gate: Weight,
    up: Weight,
    gateBias: Weight | null,
    upBias: Weight | null,
    n: number,
    act: Activation,
    scratchUp: Buf,
  ): void;
  /** y[i] = W[ids[i]] (embedding / position-table lookup), times scale when given (Gemma: √hidden). */
  embed(y: Buf, w: Weight, ids: Int32Array, scale?: number): void;
  rmsNorm(y: Buf, x: Buf, g: Weight, n: number, eps: number): void;
  layerNorm(y: Buf, x: Buf, g: Weight, b: Weight, n: number, eps: number): void;
  /** Rotary embedding in place; x is [n][heads][headDim]; cos and sin times factor (longrope; default 1). */
  rope(
    x: Buf,
    n: number,
    heads: number,
    headDim: number,
    positions: Int32Array,
    invFreq: Float32Array,
    factor?: number,
  ): void;
  /**
   * A layer's key or value cache of `length` elements, zeroed: floats ("f32") or IEEE halves ("f16",
   * half the memory and half the bytes attention reads). cacheWrite and attention take either.
   */
  allocKv(length: number, dtype: KvDtype): Buf;
  /**
   * Every cache of a KVCache at once (their lengths, in elements), where one allocation serves the
   * backend better than one per cache: the CPU backend puts them on 2 MiB pages. Absent: allocKv each.
   */
  allocKvSet?(lengths: readonly number[], dtype: KvDtype): Buf[];
  /**
   * Fault in now the memory a first token writes in each cache: the first element of each of its
   * `parts` equal parts (a layer's kv heads). The CPU backend's caches are on 2 MiB pages that the
   * kernel zeroes on first write, and the first prefill wrote into every head's page (the 1B shape
   * at context 4096: 437 ms in its first 16 cache writes on the Zen 5 VM), so the cost moves to the
   * session's creation (a model load) instead of the first reply. Absent: nothing to do.
   */
  prefaultKv?(caches: readonly Buf[], parts: number): void;
  /** Whether it runs int8 and int4 (Q8, Q4) weights, a model loaded with `weights: "int8"` or `"int4"` (the CPU backend does). */
  readonly quantizedWeights?: boolean;
  /** Tokens per prefill forward pass (the workspace's batch; at most MAX_BATCH in transformer.ts). */
  readonly prefillBatch: number;
  /**
   * Keys and values of n tokens into a layer's cache, [kvHeads][capacity][headDim]: position p goes
   * to slot p % capacity, so a sliding-window layer's cache can be a ring (KVCache); attention reads
   * the same slots and needs every position it sees still in place.
   */
  cacheWrite(
    kc: Buf,
    vc: Buf,
    k: Buf,
    v: Buf,
    n: number,
    kvHeads: number,
    headDim: number,
    pos0: number,
    capacity: number,
  ): void;
  /**
   * rope(q), rope(k) (when invFreq is given, cos and sin times ropeFactor) and cacheWrite(k, v at
   * pos0) as one op: what the attention block does before attention, in one launch on a GPU.
   */
  ropeCacheWrite(
    q: Buf,
    k: Buf,
    v: Buf,
    kc: Buf,
    vc: Buf,
    n: number,
    heads: number,
    kvHeads: number,
    headDim: number,
    positions: Int32Array,
    invFreq: Float32Array | null,
    pos0: number,
    capacity: number,
    ropeFactor?: number,
  ): void;
  attention(
    out: Buf,
    q: Buf,
    kc: Buf,
    vc: Buf,
    n: number,
    heads: number,
    kvHeads: number,
    headDim: number,
    pos0: number,
    capacity: number,
    scale: number,
    /** > 0: each query attends to its last `window` positions only (sliding-window layers); else all. */
    window?: number,
    /** > 0: scores s become softcap · tanh(s / softcap) before the softmax (Gemma 2). */
    softcap?: number,
  ): void;
  /** x = cap · tanh(x / cap) over `count` values, −∞ kept (Gemma 2's final logits; HiRE's left-out tokens stay out). */
  softcap(x: Buf, count: number, cap: number): void;
  /**
   * Greedy sampling where the logits are: argmax finds the index of the largest of x[0..n) (the first
   * on ties; NaN never wins, unless it is x[0]: sampler.ts's argmax), readArgmax returns it once the
   * ops before it have run. A recorded step may end with argmax, so a token reads back one id.
   */
  argmax(x: Buf, n: number): void;
  readArgmax(): number;
  /** gate = act(gate) * up, elementwise over `count` values (SwiGLU with act = silu). */
  gatedAct(gate: Buf, up: Buf, count: number, act: Activation): void;
  activate(x: Buf, count: number, act: Activation): void;
  /** y += x over `count` values. */
  add(y: Buf, x: Buf, count: number): void;
  /** y[i] = x[idx[i]] for i < count (y and x distinct). */
  gather(y: Buf, x: Buf, idx: Int32Array, count: number): void;

  // ---- sparse ops (HiRE, DIP) ----
  /** The same matrix stored in the other layout (a copy owned by the backend). */
  relayout(w: Weight, transposed: boolean): Weight;
  /** A 2·rows × cols copy with the rows of a and b interleaved (a0, b0, a1, b1, …). */
  interleaveRows(a: Weight, b: Weight): Weight;
  /**
   * Gives back the memory of a weight read from a model file while another layout serves it (HiRE's
   * FFN copies); a later use reads it back from the file. Returns the bytes given back. Optional:
   * the CPU backend (a GPU backend computes from its own device copies).
   */
  releaseWeight?(w: Weight): number;

  quantize(w: Weight, bits: 4 | 8, groupSize: number): QuantWeight;
  /** Store a quantized copy in a file, and read one back (the predictor disk cache). */
  writeQuant(q: QuantWeight, file: string): void;
  readQuant(file: string, rows: number, cols: number, bits: 4 | 8, groupSize: number): QuantWeight;
  /** y[r] ≈ W[r] · x for every row (approximate scores from the quantized copy). */
  quantMatvec(y: Buf, x: Buf, q: QuantWeight): void;
  /** y[i] = W[idx[i]] · x for i < count (W not transposed). */
  matvecRows(y: Buf, x: Buf, w: Weight, idx: Int32Array, count: number): void;
  /** y = Σ_{i<count} a[i] · W[:, idx[i]] (W transposed, so each column is contiguous). */
  accumulateCols(y: Buf, a: Buf, w: Weight, idx: Int32Array, count: number): void;
  /**
   * DA-top-k: values[0..n) in `shards` contiguous shards, each keeping its local top-(k/P) (by |v| when
   * byAbs). Writes ascending indices to out and returns how many. shards = 1 is the exact top-k.
   */
  topk(values: Buf, n: number, k: number, byAbs: boolean, shards: number, out: Int32Array): number;
  /**
   * One token through a HiRE FFN. Selects exactly what quantMatvec → activate → topk(kp, P) →
   * matvecRows → act → topk(k, P) selects. shards ≥ 2 (DA-top-k): each shard runs start to finish on
   * one worker with no barrier or global sort between the steps, and out is the sum of the shards'
   * partial down products (so it differs from accumulateCols only in rounding). shards = 1: those
   * steps, each parallel inside, and out is accumulateCols' result bit for bit.
   */
  hireFfn(step: HireFfnStep): HireFfnResult;
  /**
   * Optional: several independent hireFfn steps at once, shards = 1, each with its own outputs (a
   * mixture layer's routed experts): every step runs start to finish on one worker, the steps spread
   * over the workers; each result and output is hireFfn's, bit for bit. MoeFeedForward runs the
   * experts one hireFfn at a time where it is missing.
   */
  hireFfnBatch?(steps: readonly HireFfnStep[]): HireFfnResult[];
  /** Optional: HiRE on the output layer in one op (head.ts runs it op by op where it is missing). */
  hireHead?(step: HireHeadStep): { candidates: number; selected: number };
  /** Optional: recorded decode steps (see StepGraphs). */
  readonly graphs?: StepGraphs;
}
