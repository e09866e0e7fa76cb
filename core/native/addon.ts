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
export const NativeDType = { F32: 0, F16: 1, BF16: 2 } as const;
export type NativeDType = (typeof NativeDType)[keyof typeof NativeDType];

/** Opaque handle to a memory-mapped file (munmap on GC or on `unmap`). */
export interface NativeMapping {
  readonly __brand: "NativeMapping";
}

/** Opaque handle to a weight matrix: a view into a mapping, kept in its file dtype. */
export interface NativeWeight {
  readonly __brand: "NativeWeight";
}

export interface NativeAddon {
  /** mmap a whole file read-only. Throws Error("<path>: <reason>") when it cannot. */
  mapFile(path: string): { mapping: NativeMapping; byteLength: number };
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

  /** y[n][rows] = x[n][cols] · Wᵀ (+ bias[rows] if given). Batched (GEMM) when n > 1. */
  matmul(y: Float32Array, x: Float32Array, w: NativeWeight, n: number, bias: NativeWeight | null): void;
  /** y[i][:] = W[ids[i]][:] as f32 (embedding lookup; W not transposed). */
  embed(y: Float32Array, w: NativeWeight, ids: Int32Array): void;
  /** y[i] = x[i] / rms(x[i]) * g, for n rows of length dim = g.cols (g is a 1 × dim weight). */
  rmsNorm(y: Float32Array, x: Float32Array, g: NativeWeight, n: number, eps: number): void;
  /** y[i] = (x[i] - mean) / std * g + b, for n rows. g and b are 1 × dim weights. */
  layerNorm(y: Float32Array, x: Float32Array, g: NativeWeight, b: NativeWeight, n: number, eps: number): void;
  /**
   * Rotary embedding in place, Hugging Face "rotate_half" layout (pairs i and i + rotDim/2 of each head).
   * x is [n][nHeads][headDim]; token i sits at positions[i]; invFreq has rotDim/2 entries.
   */
  rope(x: Float32Array, n: number, nHeads: number, headDim: number, positions: Int32Array, invFreq: Float32Array): void;
  /**
   * Causal attention over a KV cache. q is [n][nHeads][headDim]; the cache is [nKvHeads][capacity][headDim]
   * and already holds positions 0 .. pos0 + n - 1. Query i (at position pos0 + i) attends to 0 .. pos0 + i.
   * Grouped-query: query head h reads kv head floor(h / (nHeads / nKvHeads)). out is [n][nHeads][headDim].
   */
  attention(
    out: Float32Array,
    q: Float32Array,
    kCache: Float32Array,
    vCache: Float32Array,
    n: number,
    nHeads: number,
    nKvHeads: number,
    headDim: number,
    pos0: number,
    capacity: number,
    scale: number,
  ): void;
  /** Copy k, v ([n][nKvHeads][headDim]) into the caches at positions pos0 .. pos0 + n - 1. */
  cacheWrite(
    kCache: Float32Array,
    vCache: Float32Array,
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
  /** In-place softmax over n rows of length dim. */
  softmax(x: Float32Array, n: number, dim: number): void;

  /** Number of threads the pool uses (the caller included). */
  getThreads(): number;
  /** Resize the thread pool (1 = run on the calling thread only). */
  setThreads(n: number): void;
  /** What the CPU supports, and which kernel path is active. */
  cpuInfo(): { avx2: boolean; fma: boolean; f16c: boolean; path: "avx2" | "portable" };
  /** Force the portable kernels ("portable") or go back to the best supported ("auto"). */
  setKernelPath(path: "auto" | "portable"): void;
  /** Measure memory read bandwidth in GB/s by streaming `bytes` bytes with all threads, best of `reps`. */
  readBandwidth(bytes: number, reps: number): number;
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
