// HiRE predictors: cheap approximations of W·x used only to choose which rows to compute exactly.
// - int8 / int4: a group-quantized copy of W (the kernel quantizes x to int8 and uses integer dots).
// - lowrank:r: W ≈ Q·B with Q (rows × r, orthonormal columns) from a randomized range finder with
//   one power iteration, and B = Qᵀ·W (r × cols); scores = Q·(B·x).
// Both are cached on disk (cache.ts), keyed by a hash of W's stored bytes and the settings.
// To add a predictor: implement `Predictor`, build it in `buildPredictor`, name it in settings.ts.
import type { Backend, Buf, QuantWeight, Weight } from "../backend/backend.js";
import { CpuBackend } from "../backend/cpu.js";
import { native, NativeDType } from "../native/addon.js";
import { isQuantDType } from "../loader/weight-format.js";
import { Rng } from "../engine/sampler.js";
import type { PredictorSpec } from "./settings.js";
import { cacheFile, readCached, storeAtomically, writeCached } from "./cache.js";
import { existsSync } from "node:fs";

export interface Predictor {
  readonly name: string;
  /** Bytes the predictor reads per token. */
  readonly byteLength: number;
  /** y[0..rows) ≈ W·x. */
  score(y: Buf, x: Buf): void;
  /** The quantized copy, for fused ops that score inside (int8 / int4 predictors only). */
  readonly quant?: QuantWeight;
}

class QuantPredictor implements Predictor {
  readonly name: string;
  readonly byteLength: number;
  constructor(
    private readonly b: Backend,
    readonly quant: QuantWeight,
  ) {
    this.name = `int${quant.bits}:${quant.groupSize}`;
    this.byteLength = quant.byteLength;
  }
  score(y: Buf, x: Buf): void {
    this.b.quantMatvec(y, x, this.quant);
  }
}

class LowRankPredictor implements Predictor {
  readonly name: string;
  readonly byteLength: number;
  private readonly tmp: Buf;
  constructor(
    private readonly b: Backend,
    private readonly q: Weight, // rows × r
    private readonly proj: Weight, // r × cols
  ) {
    this.name = `lowrank:${proj.rows}`;
    this.byteLength = q.byteLength + proj.byteLength;
    this.tmp = b.alloc(proj.rows);
  }
  score(y: Buf, x: Buf): void {
    this.b.matmul(this.tmp, x, this.proj, 1, null);
    this.b.matmul(y, this.tmp, this.q, 1, null);
  }
}

/**
 * Build the predictor `spec` for W (rows = neurons or vocabulary entries, cols = inputs).
 * `sourceKey` identifies W's content (a hash of its stored bytes): the predictor is then cached on
 * disk and reused while the model and the predictor settings stay the same.
 */
export function buildPredictor(b: Backend, w: Weight, spec: PredictorSpec, sourceKey?: string, seed = 1): Predictor {
  if (spec.kind !== "lowrank")
    return new QuantPredictor(b, quantized(b, w, spec.kind === "int4" ? 4 : 8, spec.groupSize, sourceKey));
  const rank = Math.min(spec.rank, w.rows, w.cols);
  const key = sourceKey && `${sourceKey}-lowrank${rank}-s${seed}`;
  const cached = key ? readCached(key, [rank * w.rows, rank * w.cols]) : undefined;
  // The factors are computed on host arrays, so with the CPU backend whatever runs the model.
  const [qT, proj] = cached ?? lowRankFactors(new CpuBackend(), w, rank, seed);
  if (key && !cached) writeCached(key, [qT, proj]);
  return lowRankPredictor(b, w, rank, qT, proj);
}

/**
 * What the quantizer's output depends on beyond the weights and settings: bump when quantize()
 * changes, so cached copies from the old one are rebuilt. 2: scales that f16 rounds below
 * max|w| / qmax (subnormal halves) are rounded up, so no value is clipped.
 */
const QUANTIZER_VERSION = 2;

/** W's group-quantized copy, from the disk cache when there (a file of the wrong size is rebuilt). */
function quantized(b: Backend, w: Weight, bits: 4 | 8, groupSize: number, sourceKey?: string): QuantWeight {
  const file = sourceKey ? cacheFile(`${sourceKey}-int${bits}g${groupSize}-q${QUANTIZER_VERSION}`, "q") : undefined;
  if (file && existsSync(file)) {
    try {
      return b.readQuant(file, w.rows, w.cols, bits, groupSize);
    } catch {
      // Damaged or from another layout: fall through and rebuild it.
    }
  }
  const q = b.quantize(w, bits, groupSize);
  if (file) storeAtomically(file, (tmp) => b.writeQuant(q, tmp));
  return q;
}

/** rows × cols f32 values (storage [cols][rows] when transposed) as a weight owning a copy of them. */
function f32Weight(data: Float32Array, rows: number, cols: number, transposed: boolean): Weight {
  return {
    handle: native().weightFromArray(data, NativeDType.F32, rows, cols, transposed),
    dtype: "F32",
    rows,
    cols,
    transposed,
    byteLength: rows * cols * 4,
  };
}

function lowRankPredictor(b: Backend, w: Weight, rank: number, qT: Float32Array, proj: Float32Array): Predictor {
  // Q is stored transposed (storage [rank][rows] = Qᵀ), so Q·t reads it in place.
  return new LowRankPredictor(b, f32Weight(qT, w.rows, rank, true), f32Weight(proj, rank, w.cols, false));
}

/**
 * Randomized range finder (Halko, Martinsson & Tropp) with one power iteration:
 * Y = W·(Wᵀ·(W·Ω)), Q = orth(Y), B = Qᵀ·W. All products run through the backend's GEMM.
 */
function lowRankFactors(b: Backend, w: Weight, rank: number, seed: number): [Float32Array, Float32Array] {
  const { rows, cols } = w;
  const rng = new Rng(seed);
  // Ωᵀ: rank × cols, Gaussian.
  const omega = new Float32Array(rank * cols);
  for (let i = 0; i < omega.length; i += 2) {
    const u = Math.max(rng.next(), 1e-12);
    const v = rng.next();
    const r = Math.sqrt(-2 * Math.log(u));
    omega[i] = r * Math.cos(2 * Math.PI * v);
    if (i + 1 < omega.length) omega[i + 1] = r * Math.sin(2 * Math.PI * v);
  }
  const yT = new Float32Array(rank * rows); // (W·Ω)ᵀ: rank × rows
  b.matmul(yT, omega, w, rank, null);
  orthonormalizeRows(yT, rank, rows);
  const zT = timesTransposed(b, w, yT, rank); // (Wᵀ·Q)ᵀ
  orthonormalizeRows(zT, rank, cols);
  b.matmul(yT, zT, w, rank, null); // (W·Z)ᵀ
  orthonormalizeRows(yT, rank, rows); // Qᵀ
  return [yT, timesTransposed(b, w, yT, rank)]; // B = Qᵀ·W: rank × cols
}

/** f32 values a quantized W is dequantized in at a time for timesTransposed (4 MiB). */
const DEQUANT_BLOCK_FLOATS = 1 << 20;

/**
 * (Wᵀ·Y)ᵀ = Yᵀ·W (count × cols) for yT = Yᵀ (count × rows). A float W is read in place through its
 * transposed view; an int8 / int4 weight has none (its groups run along rows), so its rows are
 * dequantized to f32 a block at a time and each block's product added in.
 */
function timesTransposed(b: Backend, w: Weight, yT: Float32Array, count: number): Float32Array {
  const n = native();
  const { rows, cols } = w;
  const out = new Float32Array(count * cols);
  if (!isQuantDType(w.dtype)) {
    const wT: Weight = { ...w, handle: n.transposeView(w.handle), rows: cols, cols: rows, transposed: !w.transposed };
    b.matmul(out, yT, wT, count, null);
    return out;
  }
  const block = Math.max(1, Math.min(rows, Math.floor(DEQUANT_BLOCK_FLOATS / cols)));
  const values = new Float32Array(block * cols);
  const ys = new Float32Array(count * block);
  const part = new Float32Array(count * cols);
  for (let r0 = 0; r0 < rows; r0 += block) {
    const nb = Math.min(block, rows - r0);
    n.embed(
      values,
      w.handle,
      Int32Array.from({ length: nb }, (_, i) => r0 + i),
    ); // rows r0.. as f32
    // The block's rows as a transposed cols × nb weight (storage [nb][cols]), times Y's rows r0..
    const blockT = f32Weight(values.subarray(0, nb * cols), cols, nb, true);
    for (let i = 0; i < count; i++) ys.set(yT.subarray(i * rows + r0, i * rows + r0 + nb), i * nb);
    b.matmul(part, ys.subarray(0, count * nb), blockT, count, null);
    for (let i = 0; i < out.length; i++) out[i] += part[i];
  }
  return out;
}

/** Modified Gram–Schmidt on the `count` rows (each of length `len`) of m, twice for stability. */
function orthonormalizeRows(m: Float32Array, count: number, len: number): void {
  const acc = new Float64Array(len);
  for (let i = 0; i < count; i++) {
    const row = m.subarray(i * len, (i + 1) * len);
    for (let j = 0; j < len; j++) acc[j] = row[j];
    for (let pass = 0; pass < 2; pass++) {
      for (let p = 0; p < i; p++) {
        const prev = m.subarray(p * len, (p + 1) * len);
        let dot = 0;
        for (let j = 0; j < len; j++) dot += acc[j] * prev[j];
        for (let j = 0; j < len; j++) acc[j] -= dot * prev[j];
      }
    }
    let norm = 0;
    for (let j = 0; j < len; j++) norm += acc[j] * acc[j];
    const inv = norm > 1e-20 ? 1 / Math.sqrt(norm) : 0;
    for (let j = 0; j < len; j++) row[j] = acc[j] * inv;
  }
}
