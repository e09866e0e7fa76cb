// FP8 checkpoints: linear weights stored as float8 e4m3 codes with scales (transformers' "fp8" with a
// weight_block_size, as Qwen3-*-FP8 ship; "fbgemm_fp8"; compressed-tensors' "float-quantized", as
// llm-compressor's *-FP8-dynamic checkpoints ship). Each matrix is dequantized as e4m3 value × its
// block's scale, rounded to f32 (then to the folder's dtype by the import), as torch dequantizes.
import { numel } from "../modelgen/safetensors-writer.js";
import { ModelError } from "./errors.js";
import { isObject } from "./json.js";
import {
  badTensor,
  dtypeBits,
  floatValues,
  isFloat,
  rowsPerChunk,
  type DequantizedMatrix,
  type QuantScheme,
  type SchemeMatrices,
} from "./quant-scheme.js";
import type { DType, StoredDType, TensorInfo } from "./safetensors.js";
import { closeSync, openSync } from "node:fs";
import { readFully } from "./file-io.js";

/** e4m3 ("fn": no infinities, 0x7f/0xff NaN) code → value. */
export const E4M3_VALUES: Float32Array = (() => {
  const t = new Float32Array(256);
  for (let c = 0; c < 256; c++) {
    const e = (c >> 3) & 15;
    const m = c & 7;
    const v = e === 15 && m === 7 ? NaN : e === 0 ? m * 2 ** -9 : (1 + m / 8) * 2 ** (e - 7);
    t[c] = c & 0x80 ? -v : v;
  }
  return t;
})();

/** Per-tensor activation and KV-cache scales: for FP8 kernels only; this engine computes in f32. */
const ACTIVATION_SCALE = /\.(input_scale|input_scale_inv|output_scale|k_scale|v_scale|q_scale)$/;

/**
 * The FP8 scheme of a quantization_config, or undefined for any other (or none). An FP8 config this
 * reader cannot follow (e5m2, a block size that is no pair of positive integers) is an
 * UNSUPPORTED_QUANTIZATION error naming `file`.
 */
export function fp8Scheme(q: unknown, file: string): QuantScheme | undefined {
  if (!isObject(q) || typeof q.quant_method !== "string") return undefined;
  const method = q.quant_method;
  const bad = (detail: string) =>
    new ModelError("UNSUPPORTED_QUANTIZATION", file, `quantization_config (${method}): ${detail}`);
  const block = (b: unknown): readonly [number, number] | undefined => {
    if (b === undefined || b === null) return undefined;
    if (Array.isArray(b) && b.length === 2 && b.every((d) => Number.isSafeInteger(d) && d > 0)) return [b[0], b[1]];
    throw bad(`block size ${JSON.stringify(b)} is not [rows, columns]`);
  };
  if (method === "fp8") {
    if (q.fmt !== undefined && q.fmt !== "e4m3") throw bad(`fmt "${String(q.fmt)}" is not supported (e4m3 is)`);
    return fp8Matrices(method, block(q.weight_block_size));
  }
  if (method === "fbgemm_fp8") return fp8Matrices(method, undefined);
  if (method === "compressed-tensors") {
    // Every group's weights must be 8-bit floats, stored as such ("float-quantized").
    const groups = isObject(q.config_groups) ? Object.values(q.config_groups) : [];
    const weights = groups.map((g) => (isObject(g) && isObject(g.weights) ? g.weights : undefined));
    const formats = new Set(groups.map((g) => (isObject(g) && typeof g.format === "string" ? g.format : q.format)));
    const float8 = weights.length > 0 && weights.every((w) => w?.type === "float" && w.num_bits === 8);
    if (!float8 || formats.size !== 1 || !formats.has("float-quantized")) return undefined;
    const blocks = new Set(weights.map((w) => JSON.stringify(block(w?.block_structure) ?? null)));
    if (blocks.size > 1) throw bad("config groups with different block sizes are not supported");
    return fp8Matrices(method, block(weights[0]?.block_structure));
  }
  return undefined;
}

/**
 * Every F8_E4M3 tensor must be a matrix with a `<name>_scale_inv` (transformers' fp8) or
 * `<name>_scale` beside it covering it in whole blocks (`configBlock` when the config gives one).
 */
function fp8Matrices(method: string, configBlock: readonly [number, number] | undefined): QuantScheme {
  return {
    method,
    matrices(stored, dtype): SchemeMatrices {
      const consumed = new Set<string>();
      const matrices: DequantizedMatrix[] = [];
      for (const t of stored.values()) {
        if (ACTIVATION_SCALE.test(t.name)) consumed.add(t.name);
        if (t.dtype !== "F8_E4M3") continue;
        const scale = stored.get(`${t.name}_scale_inv`) ?? stored.get(`${t.name}_scale`);
        if (!scale) throw badTensor(t, `an FP8 tensor with no ${t.name}_scale_inv or ${t.name}_scale beside it`);
        consumed.add(t.name).add(scale.name);
        matrices.push(dequantized(t, scale, scaleBlock(t, scale, configBlock), dtype));
      }
      return { matrices, consumed };
    },
  };
}

/** The rows × columns one scale of `scale` covers in the matrix `w` (the config's block, or what the shapes imply). */
function scaleBlock(
  w: TensorInfo<StoredDType>,
  scale: TensorInfo<StoredDType>,
  configBlock: readonly [number, number] | undefined,
): readonly [number, number] {
  if (w.shape.length !== 2)
    throw badTensor(w, `an FP8 tensor of shape ${JSON.stringify(w.shape)}; only matrices are supported`);
  if (!isFloat(scale.dtype)) throw badTensor(scale, `scale dtype ${scale.dtype} is not F32, BF16 or F16`);
  const [rows, cols] = w.shape;
  const n = numel(scale.shape);
  // One scale for the whole tensor ([] or [1]), one per row ([rows] or [rows, 1]), or a grid of blocks.
  const grid: [number, number] | undefined =
    n === 1
      ? [1, 1]
      : scale.shape.length === 1
        ? [scale.shape[0], 1]
        : scale.shape.length === 2
          ? [scale.shape[0], scale.shape[1]]
          : undefined;
  if (!grid) throw badTensor(scale, `scale shape ${JSON.stringify(scale.shape)} is not a grid over ${w.name}`);
  const block: readonly [number, number] =
    configBlock && n > 1 ? configBlock : [Math.ceil(rows / grid[0]), Math.ceil(cols / grid[1])];
  if (Math.ceil(rows / block[0]) !== grid[0] || Math.ceil(cols / block[1]) !== grid[1]) {
    throw badTensor(
      scale,
      `scale shape ${JSON.stringify(scale.shape)} does not cover ${w.name} [${rows}, ${cols}] in ${block[0]} × ${block[1]} blocks`,
    );
  }
  return block;
}

/** The FP8 matrix `w`, dequantized whole block rows at a time. */
function dequantized(
  w: TensorInfo<StoredDType>,
  scale: TensorInfo<StoredDType>,
  [br, bc]: readonly [number, number],
  dtype: DType,
): DequantizedMatrix {
  const [rows, cols] = w.shape;
  return {
    entry: { name: w.name, dtype, shape: [rows, cols] },
    *chunks() {
      const scales = floatValues(scale);
      const gridCols = Math.ceil(cols / bc);
      const step = rowsPerChunk(cols, br);
      // A code takes one of 256 values per scale: with a 16-bit dtype, those values' bits (rounded to
      // f32, then to the dtype, once per scale) are looked up instead of rounding every weight.
      const dtype16 = dtype === "F32" ? undefined : dtype;
      let table: Uint16Array = new Uint16Array(0);
      let tableRow = -1;
      const fd = openSync(w.file, "r");
      try {
        for (let r0 = 0; r0 < rows; r0 += step) {
          const n = Math.min(step, rows - r0);
          const codes = new Uint8Array(n * cols);
          readFully(fd, codes, w.offset + r0 * cols, w.file);
          const nan = [codes.indexOf(0x7f), codes.indexOf(0xff)].filter((k) => k >= 0);
          if (nan.length > 0) {
            const k = Math.min(...nan);
            const detail = `element ${r0 * cols + k} is NaN (e4m3 code 0x${codes[k].toString(16)})`;
            throw new ModelError("NOT_FINITE", w.file, detail, w.name);
          }
          const values = dtype16 ? new Uint16Array(n * cols) : new Float32Array(n * cols);
          for (let r = 0; r < n; r++) {
            const blockRow = Math.floor((r0 + r) / br);
            const srow = blockRow * gridCols;
            if (dtype16 && blockRow !== tableRow) {
              table = codeBits(scales.subarray(srow, srow + gridCols), dtype16);
              tableRow = blockRow;
            }
            const base = r * cols;
            for (let c0 = 0, j = 0; c0 < cols; c0 += bc, j++) {
              const end = base + Math.min(cols, c0 + bc);
              if (dtype16) for (let k = base + c0, t = j << 8; k < end; k++) values[k] = table[t | codes[k]];
              else {
                const s = scales[srow + j];
                for (let k = base + c0; k < end; k++) values[k] = E4M3_VALUES[codes[k]] * s; // exact in f64, rounded once to f32
              }
            }
          }
          yield values;
        }
      } finally {
        closeSync(fd);
      }
    },
  };
}

/** For each scale j of a block row and code c, the bits of c's value × scale (rounded to f32, then to `dtype`) at 256j + c. */
function codeBits(scales: Float32Array, dtype: "F16" | "BF16"): Uint16Array {
  const values = new Float32Array(scales.length * 256);
  for (let j = 0; j < scales.length; j++)
    for (let c = 0; c < 256; c++) values[j * 256 + c] = E4M3_VALUES[c] * scales[j];
  return dtypeBits(values, dtype);
}
