// The N-API surface of the native CPU backend (core/native/src/*.cc), typed for TypeScript.
//
// Everything here is synchronous and allocation-free on the hot path: activations are caller-owned
// Float32Arrays, weights are views into memory-mapped files. Callers (core/backend/cpu.ts) validate
// shapes before calling; the C++ side re-checks bounds and throws a JS Error instead of touching
// memory it does not own. To add a kernel: declare it here, implement it in src/, bind it in
// src/addon.cc, and add a reference test in test/kernels.test.ts.
import { createRequire } from "node:module";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Storage dtype of a weight, as numbered on the native side. */
/**
 * Q8 / Q4: int8 / int4 codes in groups with an f16 scale each (quantizeWeight's copies, or a GGUF's
 * Q8_0 / Q4_0 blocks); Q4M: int4 with an f16 minimum per group too (a GGUF's Q4_1 / Q4_K blocks,
 * quantizeGguf). Never read from a file as they are.
 */
export const NativeDType = { F32: 0, F16: 1, BF16: 2, Q8: 3, Q4: 4, Q4M: 5 } as const;
export type NativeDType = (typeof NativeDType)[keyof typeof NativeDType];

/** Opaque handle to a memory-mapped file (munmap on GC or on `unmap`). */
/** The instruction-set paths of the CPU kernels (see cpuInfo). */
export type KernelPath = "avx512" | "avx2" | "portable";

/** A KV cache as the kernels take it: floats, or IEEE halves (an f16 cache) in a Uint16Array. */
export type KvArray = Float32Array | Uint16Array;

export interface NativeMapping {
  readonly __brand: "NativeMapping";
}

/** Opaque handle to a weight matrix: a view into a mapping, kept in its file dtype. */
export interface NativeWeight {
  readonly __brand: "NativeWeight";
}

/**
 * Opaque group-quantized copy of a weight (native memory, freed on GC). Rows packed one after the
 * other, each: the codes of cols zero-padded to a multiple of groupSize (int8: one byte per value;
 * int4: 32 bytes per 64 values, byte j holding value j in its low nibble and value j + 32 in its
 * high nibble, code = q + 8), then one f16 scale per group. 2048 columns in groups of 32: 1152 bytes
 * per row for int4 (4.5 bits per weight), 2176 for int8. See core/native/src/quant.h.
 */
export interface NativeQuant {
  readonly __brand: "NativeQuant";
}

export interface NativeAddon {
  /**
   * A whole file in memory, read-only: mmap of the file (inMemory = false), or the file read into
   * anonymous memory advised for huge pages (see core/native/src/mapping.h for why that is the
   * loader's default), placed so that file offset `alignAt` (a safetensors data section) starts a
   * 64-byte cache line. Throws Error("<path>: <reason>") when it cannot.
   */
  mapFile(path: string, inMemory: boolean, alignAt?: number): { mapping: NativeMapping; byteLength: number };
  /** Release a mapping now (weights made from it must no longer be used). */
  unmap(mapping: NativeMapping): void;
  /**
   * A rows × cols matrix at `byteOffset` inside `mapping`.
   * transposed = false: stored [rows][cols] (PyTorch nn.Linear [out, in]); y = W·x has `rows` outputs.
   * transposed = true: stored [cols][rows] (GPT-2 Conv1D [in, out]); still rows = outputs, cols = inputs.
   * Throws if the byte range falls outside the mapping.
   */
  weight(
    mapping: NativeMapping,
    byteOffset: number,
    dtype: NativeDType,
    rows: number,
    cols: number,
    transposed: boolean,
  ): NativeWeight;
  /**
   * Gives back the memory of a weight made from a mapping (the whole pages inside it), for a weight
   * that another layout now serves; returns the bytes given back (0 for a weight owning its memory).
   * Its next use reads the pages back from the file, or throws Error("<path>: <reason>") when the
   * file changed since loading: a released weight is never computed with zeros.
   */
  releaseWeight(w: NativeWeight): number;
  /** Bytes of a read-in mapping now given back by releaseWeight (and not yet read back). */
  releasedBytes(mapping: NativeMapping): number;

  /** y[n][rows] = x[n][cols] · Wᵀ (+ bias[rows] if given). Batched (GEMM) when n > 1. */
  matmul(y: Float32Array, x: Float32Array, w: NativeWeight, n: number, bias: NativeWeight | null): void;
  /**
   * One token through several matrices sharing x (q, k, v): x, then (y, w, bias) for each (1 to 8
   * parts, none transposed, all with x's columns). The results of one matmul per part, in one
   * parallel dispatch.
   */
  matmulMany(x: Float32Array, ...parts: (Float32Array | NativeWeight | null)[]): void;
  /** y[i][:] = W[ids[i]][:] as f32, times scale when given (embedding lookup; W not transposed). */
  embed(y: Float32Array, w: NativeWeight, ids: Int32Array, scale?: number): void;
  /** y[i] = x[i] / rms(x[i]) * g, for n rows of length dim = g.cols (g is a 1 × dim weight). */
  rmsNorm(y: Float32Array, x: Float32Array, g: NativeWeight, n: number, eps: number): void;
  /** y[i] = (x[i] - mean) / std * g + b, for n rows. g and b are 1 × dim weights. */
  layerNorm(y: Float32Array, x: Float32Array, g: NativeWeight, b: NativeWeight, n: number, eps: number): void;
  /**
   * Rotary embedding in place, Hugging Face "rotate_half" layout (pairs i and i + rotDim/2 of each head).
   * x is [n][nHeads][headDim]; token i sits at positions[i]; invFreq has rotDim/2 entries; cos and sin
   * are multiplied by factor (longrope's attention factor; default 1).
   */
  rope(
    x: Float32Array,
    n: number,
    nHeads: number,
    headDim: number,
    positions: Int32Array,
    invFreq: Float32Array,
    factor?: number,
  ): void;
  /**
   * Causal attention over a KV cache. q is [n][nHeads][headDim]; the cache is [nKvHeads][capacity][headDim]
   * and already holds positions 0 .. pos0 + n - 1. Query i (at position pos0 + i) attends to 0 .. pos0 + i.
   * Grouped-query: query head h reads kv head floor(h / (nHeads / nKvHeads)). out is [n][nHeads][headDim].
   * window > 0 (sliding-window layers): query i attends to the last `window` of those positions only.
   * softcap > 0 (Gemma 2): each score s becomes softcap · tanh(s / softcap) before the softmax.
   */
  attention(
    out: Float32Array,
    q: Float32Array,
    kCache: KvArray,
    vCache: KvArray,
    n: number,
    nHeads: number,
    nKvHeads: number,
    headDim: number,
    pos0: number,
    capacity: number,
    scale: number,
    window?: number,
    softcap?: number,
  ): void;
  /** x[i] = cap · tanh(x[i] / cap) for i < count, −∞ kept (Gemma 2's soft-capped logits). */
  softcap(x: Float32Array, count: number, cap: number): void;
  /**
   * Copy k, v ([n][nKvHeads][headDim]) into the caches at positions pos0 .. pos0 + n - 1 (slot
   * p % capacity), rounded to IEEE halves when the caches are Uint16Arrays.
   */
  cacheWrite(
    kCache: KvArray,
    vCache: KvArray,
    k: Float32Array,
    v: Float32Array,
    n: number,
    nKvHeads: number,
    headDim: number,
    pos0: number,
    capacity: number,
  ): void;
  /** gate[i] = silu(gate[i]) * up[i] for the first `count` entries (in place into gate). */
  siluMul(gate: Float32Array, up: Float32Array, count: number): void;
  /** In-place activations over the first `count` entries. kind: "relu" | "gelu" (erf) | "gelu_tanh". */
  activate(x: Float32Array, count: number, kind: "relu" | "gelu" | "gelu_tanh" | "silu"): void;
  /** y[i] += x[i] for the first `count` entries. */
  add(y: Float32Array, x: Float32Array, count: number): void;
  /** The greedy id: index of the largest of x[0..n) as sampler.ts's argmax picks it. */
  argmax(x: Float32Array, n: number): number;
  /** In-place softmax over n rows of length dim. */
  softmax(x: Float32Array, n: number, dim: number): void;

  /** Floats from x[0] to the first 64-byte boundary (0 .. 15; x's data must not be 4-byte misaligned). */
  cacheLineOffset(x: Float32Array): number;
  /**
   * Advises the whole 2 MiB pages inside x for transparent huge pages (and collapses them now where
   * Linux can); returns the floats from x[0] to the first of them (x.length when there is none).
   */
  hugePageOffset(x: Float32Array): number;
  /** Number of threads the pool uses (the caller included). */
  getThreads(): number;
  /** Resize the thread pool (1 = run on the calling thread only). */
  setThreads(n: number): void;
  /**
   * What the CPU supports, the kernel paths it can run (best first, "portable" last) and the active
   * one. "avx512" is the "avx2" path with an AVX-512 VNNI int4/int8 scoring GEMV.
   */
  cpuInfo(): {
    avx2: boolean;
    fma: boolean;
    f16c: boolean;
    avx512vnni: boolean;
    paths: KernelPath[];
    path: KernelPath;
  };
  /** Use one of cpuInfo().paths, or "auto" for the best. Throws for a path this CPU cannot run. */
  setKernelPath(path: "auto" | KernelPath): void;
  /**
   * Measure memory read bandwidth in GB/s by streaming `bytes` bytes with all threads, best of `reps`;
   * with `chunk` > 0, by reading one in five `chunk`-byte pieces of them instead (scattered rows).
   */
  readBandwidth(bytes: number, reps: number, chunk?: number): number;

  // ---- HiRE sparse inference -----------------------------------------------------------------------

  /**
   * A new weight owning native memory: the same logical rows × cols matrix as `w`, same dtype, stored
   * in the requested layout (transposed = true: storage [cols][rows], so each logical column — an FFN
   * neuron of W_down — is one contiguous read). A plain copy when the layout already matches. An int8
   * or int4 (Q8, Q4) weight's copy is its values rounded to bf16: its groups run along rows, not columns.
   */
  relayout(w: NativeWeight, transposed: boolean): NativeWeight;
  /**
   * An int8 (bits 8, the default) or int4 copy of w (its logical rows, groups of groupSize values with
   * an f16 scale each, as HiRE's predictors): products with it quantize x to int8 per group, as
   * llama.cpp's Q8_0 and Q4_0 do.
   * Prefill (n > 1) multiplies the dequantized values in f32. Not transposable; relayout gives bf16.
   */
  quantizeWeight(w: NativeWeight, groupSize: number, bits?: 4 | 8): NativeWeight;
  /**
   * x (a multiple of 32 values) as blocks of ggml type 8 (Q8_0: 34 bytes per 32, an f16 d and 32 int8
   * codes), 2 (Q4_0: 18 bytes, an f16 d and 16 bytes of nibbles) or 6 (Q5_0: 22 bytes, d, 32 fifth bits
   * and the nibbles) in out, as ggml's quantize_row_*_ref make them (codes from the unrounded d); 12
   * (Q4_K) and 14 (Q6_K) in blocks of 256 (gguf_dequant.h). For GGUF export.
   */
  quantizeBlocks(ggmlType: number, x: Float32Array, out: Uint8Array): void;
  /**
   * rows × cols of a GGUF file's blocks at byteOffset of a mapping, as an int8 / int4 weight in groups
   * of 32 holding the blocks' codes and scales: Q8_0, Q4_0 and Q5_0 (ggmlType 8, 2, 6) as int8 (Q8),
   * Q4_0 as int4 (Q4), all with exactly the values ggml dequantizes them to; Q4_1 and Q4_K (3, 12) as
   * int4 with mins (Q4M): Q4_1 exactly, Q4_K with each sub-block's d·scale and −dmin·min rounded once
   * to f16. Any other type is an error. rowOrder[r] names the source row of row r (null: the same
   * order). Given back, it is made again from the same blocks (the file must be unchanged).
   */
  quantizeGguf(
    mapping: NativeMapping,
    byteOffset: number,
    ggmlType: number,
    rows: number,
    cols: number,
    bits: 4 | 8,
    rowOrder: Int32Array | null,
  ): NativeWeight;
  /** A new 2·rows × cols weight with the rows of a and b interleaved (a0, b0, a1, b1, …); both not transposed, same dtype and shape. */
  interleaveRows(a: NativeWeight, b: NativeWeight): NativeWeight;
  /**
   * A weight that owns a copy of `data` (Float32Array for F32, Uint16Array of raw bits for F16 and
   * BF16), rows × cols, memory layout as in weight(). data needs at least rows * cols elements.
   */
  weightFromArray(
    data: Float32Array | Uint16Array,
    dtype: NativeDType,
    rows: number,
    cols: number,
    transposed: boolean,
  ): NativeWeight;
  /**
   * Wᵀ without a copy: a cols × rows weight over the same memory with the opposite layout flag (so
   * W [rows][cols] becomes a transposed weight whose columns are W's rows). Keeps W's mapping or
   * native memory alive.
   */
  transposeView(w: NativeWeight): NativeWeight;
  /** Logical shape and storage of a weight; bytes = rows * cols * element size (Q8 / Q4: codes and scales, and its groupSize). */
  weightInfo(w: NativeWeight): {
    rows: number;
    cols: number;
    dtype: NativeDType;
    transposed: boolean;
    bytes: number;
    groupSize?: number;
  };
  /** The largest power of two, up to 4096, that divides the weight's data address. */
  weightAlignment(w: NativeWeight): number;

  /**
   * y[i] = W[idx[i]][:] · x for i < count (selected output rows; W must not be transposed). Indices
   * may come in any order and repeat; ascending order reads the weight most sequentially. Each y[i]
   * is bitwise equal to row idx[i] of matmul(W, x) on the same kernel path.
   */
  matvecRows(y: Float32Array, x: Float32Array, w: NativeWeight, idx: Int32Array, count: number): void;
  /**
   * y[0..rows) = Σ_{i<count} a[i] · W[:, idx[i]] (selected input columns; W must be transposed, i.e.
   * stored [cols][rows], so each column is contiguous). y is overwritten (zeros when count = 0).
   * Accumulates in f32 in the order of idx; the result does not depend on the thread count.
   */
  accumulateCols(y: Float32Array, a: Float32Array, w: NativeWeight, idx: Int32Array, count: number): void;

  /**
   * Group-wise symmetric quantization of each logical row of W (either layout) along cols: bits 8
   * (codes -127..127) or 4 (codes -7..7), groupSize a multiple of 32 in [32, 4096]; the last group is
   * zero-padded when cols % groupSize != 0. Scale per group = f16(max|w| / qmax); q = round(w / scale).
   * Runs on the thread pool.
   */
  quantize(w: NativeWeight, bits: 4 | 8, groupSize: number): NativeQuant;
  /**
   * y[r] ≈ W[r] · x for every row r (approximate scores). x is quantized once per call to int8 per
   * group (scale max|x_g| / 127, round to nearest even, in f32), then y[r] = Σ_g wScale_g · xScale_g ·
   * Σ_{j∈g} q_j · xq_j with exact integer inner sums (llama.cpp Q4_0×Q8_0 / Q8_0×Q8_0 style); the
   * result does not depend on the thread count.
   */
  quantMatvec(y: Float32Array, x: Float32Array, q: NativeQuant): void;
  /** Shape and storage of a quantized weight; bytes = codes + scales as stored (what quantMatvec reads). */
  quantInfo(q: NativeQuant): { rows: number; cols: number; bits: number; groupSize: number; bytes: number };
  /** Write q's stored bytes (codes + scales) to `path` (the predictor disk cache). */
  quantWrite(q: NativeQuant, path: string): void;
  /** A quantized weight read back from quantWrite's file; throws unless its size matches the shape. */
  quantRead(path: string, rows: number, cols: number, bits: 4 | 8, groupSize: number): NativeQuant;
  /** Dequantize row r into out (cols floats): out[c] = q[r][c] · scale[r][group of c]. */
  quantRow(q: NativeQuant, r: number, out: Float32Array): void;
  /**
   * n values of a GGUF tensor stored as ggml type `type` (src: exactly their blocks) into out: f32
   * (a Float32Array) or f16 / bf16 bits (a Uint16Array), as ggml dequantizes them (core/gguf/quants.ts).
   */
  dequantizeGguf(
    type: number,
    src: Uint8Array,
    n: number,
    out: Float32Array | Uint16Array,
    outDtype: NativeDType,
  ): void;

  /**
   * Approximate top-k by DA-top-k sharding: values[0..n) is split into `shards` contiguous shards
   * (shard s covers [floor(s*n/P), floor((s+1)*n/P))); shard s keeps its local top-k_s with
   * k_s = floor(k/P) + (s < k % P ? 1 : 0), capped at the shard size. shards = 1 is the exact global
   * top-k. byAbs ranks by |value|. Ties: lower index wins; -0 equals +0; NaN ranks below everything.
   * Writes the chosen indices to out in ascending order and returns how many (Σ_s min(k_s, size_s));
   * throws if out is shorter than that. Sample-then-radix selection (never a sort of n); large shards
   * run on the thread pool.
   */
  topk(values: Float32Array, n: number, k: number, byAbs: boolean, shards: number, out: Int32Array): number;
  /**
   * One decode token through a HiRE FFN as DA-top-k shards, each run start to finish by one task of
   * the pool: score the shard's neurons with the predictor (+ biasIn), scores = act(score); keep its
   * top-kp/P by |score| (cand); compute those rows of `rows` exactly (W_gate/W_up interleaved when
   * gated: g = act(gate) · up; else g = act(W_in · x + biasIn)); keep its top-k/P by |g| (sel, with
   * aSel = g); y = Σ over shards, in shard order, of that shard's k/P columns of `down` (transposed).
   * cand and sel are what topk(…, shards) gives over quantMatvec and matvecRows; kp must be a multiple
   * of shards or ≥ F (every neuron a candidate). shards = 1 is the global top-k: the same steps, each
   * parallel inside, and y = accumulateCols over sel, bit for bit. Returns the counts and each step's
   * share of the time.
   */
  hireFfn(...args: HireFfnArgs): HireFfnResult;
  /**
   * Several independent hireFfn calls at once, each an array of hireFfn's arguments with shards = 1
   * and outputs of its own: every step runs start to finish on one worker of the pool (its selections
   * and y are hireFfn's, bit for bit). Throws if one step's outputs overlap another's arrays.
   */
  hireFfnBatch(steps: HireFfnArgs[]): HireFfnResult[];
  /**
   * HiRE on the output layer in one op: logits = the exact logits of the top-k of the top-kp
   * predicted tokens (per shard when shards >= 2), -inf elsewhere; scores = the predicted logits.
   * The same as quantMatvec, topk, matvecRows and topk in turn (head: [V][hidden], not transposed).
   */
  hireHead(
    logits: Float32Array,
    x: Float32Array,
    predictor: NativeQuant,
    head: NativeWeight,
    k: number,
    kp: number,
    shards: number,
    scores: Float32Array,
  ): { candidates: number; selected: number };

  /** The CUDA backend's kernels (present in every build; see CudaAddon). */
  readonly cuda: CudaAddon;
}

/** Opaque f32 buffer in GPU memory (freed on GC). */
export interface CudaBuffer {
  readonly __brand: "CudaBuffer";
}
/** Opaque device copy of a weight (same dtype and layout as its NativeWeight). */
export interface CudaWeight {
  readonly __brand: "CudaWeight";
}
/** A recorded decode step (cudaGraphExec; freed on GC). */
export interface CudaGraph {
  readonly __brand: "CudaGraph";
}
/** Opaque device copy of a quantized predictor (same bytes as its NativeQuant). */
export interface CudaQuant {
  readonly __brand: "CudaQuant";
}

export interface CudaDevice {
  index: number;
  name: string;
  computeCapability: string;
  multiprocessors: number;
  totalBytes: number;
  l2Bytes: number;
  /** Memory clock × bus width × 2, from the device properties (the datasheet's bandwidth). */
  peakGBps: number;
}

type Act = "relu" | "gelu" | "gelu_tanh" | "silu";

/**
 * The CUDA backend's kernels (core/native/src/cuda): the ops of the CPU addon on device buffers, all
 * ordered on one stream. Host arrays (ids, positions, indices) are copied in by each call; read, topk
 * and hireFfn wait for the stream because they return results to the host. In a build without nvcc
 * `compiled()` is false, `devices()` says why and every other call throws.
 */
export interface CudaAddon {
  compiled(): boolean;
  devices(): { devices: CudaDevice[]; reason: string };
  useDevice(index: number): void;
  alloc(length: number): CudaBuffer;
  write(buf: CudaBuffer, offset: number, data: Float32Array): void;
  read(buf: CudaBuffer, offset: number, out: Float32Array): void;
  synchronize(): void;
  uploadWeight(w: NativeWeight): CudaWeight;
  uploadQuant(q: NativeQuant): CudaQuant;
  copy2d(
    dst: CudaBuffer,
    dstOff: number,
    dstStride: number,
    src: CudaBuffer,
    srcOff: number,
    srcStride: number,
    rows: number,
    width: number,
  ): void;
  matmul(y: CudaBuffer, x: CudaBuffer, w: CudaWeight, n: number, bias: CudaWeight | null, accumulate?: boolean): void;
  /** ys[i] = W_i · x (+ bias_i) for up to 4 products of the same x (one launch when they share dtype and width). */
  matmulMany(x: CudaBuffer, n: number, ys: CudaBuffer[], ws: CudaWeight[], biases: (CudaWeight | null)[]): void;
  /** y = act(gate · x + gateBias) · (up · x + upBias); scratchUp is used where it takes two launches. */
  gatedMatmul(
    y: CudaBuffer,
    x: CudaBuffer,
    gate: CudaWeight,
    up: CudaWeight,
    gateBias: CudaWeight | null,
    upBias: CudaWeight | null,
    n: number,
    activation: Act,
    scratchUp: CudaBuffer,
  ): void;
  /** fromStep (one token): the ids and positions come from setStep, as a recorded step needs. */
  embed(y: CudaBuffer, w: CudaWeight, ids: Int32Array, fromStep?: boolean, scale?: number): void;
  rmsNorm(y: CudaBuffer, x: CudaBuffer, g: CudaWeight, n: number, eps: number): void;
  layerNorm(y: CudaBuffer, x: CudaBuffer, g: CudaWeight, b: CudaWeight, n: number, eps: number): void;
  rope(
    x: CudaBuffer,
    n: number,
    nHeads: number,
    headDim: number,
    positions: Int32Array,
    invFreq: Float32Array,
    fromStep?: boolean,
    factor?: number,
  ): void;
  cacheWrite(
    kCache: CudaBuffer,
    vCache: CudaBuffer,
    k: CudaBuffer,
    v: CudaBuffer,
    n: number,
    nKvHeads: number,
    headDim: number,
    pos0: number,
    capacity: number,
    fromStep?: boolean,
  ): void;
  /** rope on q and k (invFreq null: none), then k and v into the caches at pos0, in one launch. */
  ropeCacheWrite(
    q: CudaBuffer,
    k: CudaBuffer,
    v: CudaBuffer,
    kCache: CudaBuffer,
    vCache: CudaBuffer,
    n: number,
    nHeads: number,
    nKvHeads: number,
    headDim: number,
    positions: Int32Array,
    invFreq: Float32Array | null,
    pos0: number,
    capacity: number,
    fromStep?: boolean,
    factor?: number,
  ): void;
  /** Enqueue the argmax of x[0..n) (greedy sampling on the device); readArgmax waits and returns it. */
  argmax(x: CudaBuffer, n: number): void;
  readArgmax(): number;
  attention(
    out: CudaBuffer,
    q: CudaBuffer,
    kCache: CudaBuffer,
    vCache: CudaBuffer,
    n: number,
    nHeads: number,
    nKvHeads: number,
    headDim: number,
    pos0: number,
    capacity: number,
    scale: number,
    fromStep?: boolean,
    window?: number,
    softcap?: number,
  ): void;
  softcap(x: CudaBuffer, count: number, cap: number): void;
  gatedAct(gate: CudaBuffer, up: CudaBuffer, count: number, activation: Act): void;
  activate(x: CudaBuffer, count: number, activation: Act): void;
  add(y: CudaBuffer, x: CudaBuffer, count: number): void;
  /** y[i] = x[idx[i]] for i < count. */
  gather(y: CudaBuffer, x: CudaBuffer, idx: Int32Array, count: number): void;
  quantMatvec(y: CudaBuffer, x: CudaBuffer, q: CudaQuant): void;
  matvecRows(y: CudaBuffer, x: CudaBuffer, w: CudaWeight, idx: Int32Array, count: number): void;
  accumulateCols(y: CudaBuffer, a: CudaBuffer, w: CudaWeight, idx: Int32Array, count: number): void;
  topk(values: CudaBuffer, n: number, k: number, byAbs: boolean, shards: number, out: Int32Array): number;
  /**
   * hireFfn of the CPU addon on the GPU; the times are GPU time per step (CUDA events). `slot` (0..1023,
   * one per layer) holds the lists and times; while a graph is recorded, cand and sel are not written
   * and the times are 0: hireResults gives them after each replay.
   */
  hireFfn(
    y: CudaBuffer,
    x: CudaBuffer,
    predictor: CudaQuant,
    biasIn: CudaBuffer | null,
    rows: CudaWeight,
    gated: boolean,
    activation: Act,
    down: CudaWeight,
    k: number,
    kp: number,
    shards: number,
    scores: CudaBuffer,
    cand: Int32Array,
    sel: Int32Array,
    aSel: CudaBuffer,
    slot: number,
  ): HireFfnResult;
  /** The candidates, selection and GPU step times (ms) of the last hireFfn / hireHead run in `slot`. */
  hireResults(
    slot: number,
    cand: Int32Array,
    nCand: number,
    sel: Int32Array,
    nSel: number,
  ): { scoreMs: number; rowsMs: number; downMs: number };
  /**
   * HiRE on the output layer in one op: logits = the exact logits of the top-k/P of the top-kp/P
   * predicted tokens per shard, -inf elsewhere (head: [V][hidden], not transposed).
   */
  hireHead(
    logits: CudaBuffer,
    x: CudaBuffer,
    predictor: CudaQuant,
    head: CudaWeight,
    k: number,
    kp: number,
    shards: number,
    scores: CudaBuffer,
    slot: number,
  ): { candidates: number; selected: number };
  /** The token id and position a recorded step reads (see core/native/src/cuda/cuda_backend.h). */
  setStep(id: number, pos: number): void;
  graphBegin(): void;
  graphEnd(): CudaGraph;
  graphAbort(): void;
  /** False when the graph is stale (a scratch buffer moved since it was recorded). */
  graphLaunch(g: CudaGraph): boolean;
  capturing(): boolean;
  /** Timing marks on the stream (0..1023); markMs(i, j) after a wait. */
  mark(i: number): void;
  markMs(from: number, to: number): number;
  /** markMs(i, i + 1) for i < count - 1, in one call. */
  markTimes(count: number): Float64Array;
  /** Device memory read bandwidth in GB/s: best of `reps` streaming reads of a `bytes` buffer. */
  readBandwidth(bytes: number, reps: number): number;
}

/** hireFfn's arguments, in order (hireFfnBatch takes one array of them per step). */
export type HireFfnArgs = [
  y: Float32Array,
  x: Float32Array,
  predictor: NativeQuant,
  biasIn: Float32Array | null,
  rows: NativeWeight,
  gated: boolean,
  activation: "relu" | "gelu" | "gelu_tanh" | "silu",
  down: NativeWeight,
  k: number,
  kp: number,
  shards: number,
  scores: Float32Array,
  cand: Int32Array,
  sel: Int32Array,
  aSel: Float32Array,
];

/** What hireFfn did: candidate and selected counts, and the time of each step (ms, wall-time share). */
export interface HireFfnResult {
  candidates: number;
  selected: number;
  scoreMs: number;
  rowsMs: number;
  downMs: number;
}

function addonPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  // Works both from the sources (core/native) and from the compiled tree (dist/core/native).
  const candidates = [
    join(here, "build", "Release", "hire_native.node"),
    join(here, "..", "..", "..", "core", "native", "build", "Release", "hire_native.node"),
  ];
  const found = candidates.find((p) => existsSync(p));
  if (!found) {
    throw new Error(
      `native addon not built (looked in ${candidates.join(", ")}); run \`npm install\` or \`npm run build\``,
    );
  }
  return found;
}

let cached: NativeAddon | undefined;

/** Load the compiled addon once. */
export function native(): NativeAddon {
  if (!cached) {
    const require = createRequire(import.meta.url);
    cached = require(addonPath()) as NativeAddon;
  }
  return cached;
}
