// FP8 checkpoints for tests, written from a model made by `hire make-model` the way their makers
// write them: transformers' "fp8" (e4m3 codes, an f32 weight_scale_inv per block of rows × columns,
// as Qwen3-*-FP8 ship), compressed-tensors' "float-quantized" (a weight_scale per row, bf16, as
// llm-compressor's FP8-dynamic checkpoints ship) and fbgemm_fp8 (an f32 weight_scale per row).
// The e4m3 encoder and the reference decoder here are written from the format's definition, apart
// from the importer's table (core/loader/fp8-import.ts), so that the tests check one against the other.
import { closeSync, copyFileSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readBytes, writeAll } from "../core/loader/file-io.js";
import { readSafetensorsHeader, weightFiles } from "../core/loader/safetensors.js";
import { bf16ToF32, f16ToF32 } from "../core/modelgen/safetensors-writer.js";

/** The value of an e4m3fn code, built from its bits (sign, 4 exponent bits with bias 7, 3 mantissa bits). */
export function e4m3Reference(code: number): number {
  const sign = code & 0x80 ? -1 : 1;
  const e = (code >> 3) & 15;
  const m = code & 7;
  if (e === 15 && m === 7) return NaN;
  if (e === 0) return (sign * m) / 512; // subnormal: m/8 · 2^-6
  const f = new DataView(new ArrayBuffer(4));
  f.setUint32(0, ((e - 7 + 127) << 23) | (m << 20));
  return sign * f.getFloat32(0);
}

/** Positive e4m3 values by code 0 .. 0x7e (they increase with the code). */
const POSITIVE = Array.from({ length: 0x7f }, (_, c) => e4m3Reference(c));

/** x as the nearest e4m3fn code (ties to the even code), saturated at ±448 as torch's cast after a clamp. */
export function encodeE4M3(x: number): number {
  const sign = x < 0 || Object.is(x, -0) ? 0x80 : 0;
  const a = Math.abs(x);
  if (a >= 448) return sign | 0x7e;
  let lo = 0;
  let hi = 0x7e;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (POSITIVE[mid] <= a) lo = mid;
    else hi = mid;
  }
  const dLo = a - POSITIVE[lo];
  const dHi = POSITIVE[hi] - a;
  return sign | (dLo < dHi || (dLo === dHi && (lo & 1) === 0) ? lo : hi);
}

export type Fp8Method = "fp8" | "compressed-tensors" | "fbgemm_fp8";

export interface Fp8Options {
  method: Fp8Method;
  /** fp8 only: rows × columns per scale (transformers' weight_block_size; default [128, 128]). */
  block?: [number, number];
}

/** What the checkpoint stores for one quantized matrix. */
export interface Fp8Matrix {
  rows: number;
  cols: number;
  codes: Uint8Array;
  /** One per block, row-major over the block grid, as f32 (the stored bf16 ones widened). */
  scales: Float32Array;
  block: [number, number];
}

const LINEAR = /_proj\.weight$|\.(fc1|fc2|dense|dense_h_to_4h|dense_4h_to_h|query_key_value)\.weight$/;

/**
 * Writes an FP8 copy of the bf16/f32 model folder `src` at `out`: every linear layer's weight (not the
 * embedding or the head, which FP8 checkpoints keep) as e4m3 codes with the method's scales, scale =
 * the block's largest |w| / 448; every other tensor and file as in `src`. Returns the matrices written.
 */
export function writeFp8Checkpoint(src: string, out: string, opts: Fp8Options): Map<string, Fp8Matrix> {
  mkdirSync(out, { recursive: true });
  const [file] = weightFiles(src);
  const header = readSafetensorsHeader(file);
  const json: Record<string, unknown> = {};
  const parts: Buffer[] = [];
  let offset = 0;
  const put = (name: string, dtype: string, shape: number[], data: Uint8Array) => {
    json[name] = { dtype, shape, data_offsets: [offset, offset + data.byteLength] };
    parts.push(Buffer.from(data.buffer, data.byteOffset, data.byteLength));
    offset += data.byteLength;
  };
  const matrices = new Map<string, Fp8Matrix>();
  for (const t of header.tensors.values()) {
    const raw = readBytes(file, t.offset, t.byteLength);
    if (t.shape.length !== 2 || !LINEAR.test(t.name)) {
      put(t.name, t.dtype, [...t.shape], raw);
      continue;
    }
    const [rows, cols] = t.shape;
    const w = toF32(raw, t.dtype);
    const block: [number, number] = opts.method === "fp8" ? (opts.block ?? [128, 128]) : [1, cols];
    let m = quantize(w, rows, cols, block);
    if (opts.method === "compressed-tensors") {
      // compressed-tensors stores the scales in the model's dtype: round them to bf16 first, so that
      // the codes are made with the scales the file holds.
      const bf16 = Float32Array.from(m.scales, (s) =>
        bf16ToF32(new Uint32Array(new Float32Array([s]).buffer)[0] >>> 16),
      );
      m = quantize(w, rows, cols, block, bf16);
    }
    matrices.set(t.name, m);
    put(t.name, "F8_E4M3", [rows, cols], m.codes);
    const grid = [Math.ceil(rows / block[0]), Math.ceil(cols / block[1])];
    if (opts.method === "fp8") {
      put(`${t.name}_scale_inv`, "F32", grid, new Uint8Array(m.scales.buffer));
    } else if (opts.method === "fbgemm_fp8") {
      put(`${t.name}_scale`, "F32", grid, new Uint8Array(m.scales.buffer));
    } else {
      const s16 = Uint16Array.from(m.scales, (s) => new Uint32Array(new Float32Array([s]).buffer)[0] >>> 16);
      put(`${t.name}_scale`, "BF16", grid, new Uint8Array(s16.buffer));
      // A static input scale, as a W8A8 checkpoint has: for FP8 kernels only, dropped by the import.
      put(t.name.replace(/weight$/, "input_scale"), "BF16", [1], new Uint8Array(new Uint16Array([0x3f80]).buffer));
    }
  }
  const text = Buffer.from(JSON.stringify({ ...json, __metadata__: { format: "pt" } }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(text.length));
  const fd = openSync(join(out, "model.safetensors"), "w");
  try {
    for (const b of [len, text, ...parts]) writeAll(fd, b);
  } finally {
    closeSync(fd);
  }

  const config = JSON.parse(readFileSync(join(src, "config.json"), "utf8"));
  config.quantization_config = quantizationConfig(opts);
  writeFileSync(join(out, "config.json"), JSON.stringify(config, null, 2));
  for (const name of readdirSync(src)) {
    if (name !== "config.json" && !name.endsWith(".safetensors")) copyFileSync(join(src, name), join(out, name));
  }
  return matrices;
}

function quantizationConfig(opts: Fp8Options): Record<string, unknown> {
  switch (opts.method) {
    case "fp8":
      return {
        activation_scheme: "dynamic",
        fmt: "e4m3",
        quant_method: "fp8",
        weight_block_size: opts.block ?? [128, 128],
      };
    case "fbgemm_fp8":
      return { quant_method: "fbgemm_fp8", activation_scale_ub: 1200, modules_to_not_convert: ["lm_head"] };
    case "compressed-tensors":
      return {
        quant_method: "compressed-tensors",
        format: "float-quantized",
        config_groups: {
          group_0: {
            targets: ["Linear"],
            weights: { num_bits: 8, type: "float", strategy: "channel", symmetric: true, dynamic: false },
            input_activations: { num_bits: 8, type: "float", strategy: "token", symmetric: true, dynamic: true },
          },
        },
        ignore: ["lm_head"],
        quantization_status: "compressed",
      };
  }
}

function quantize(
  w: Float32Array,
  rows: number,
  cols: number,
  block: [number, number],
  given?: Float32Array,
): Fp8Matrix {
  const gridCols = Math.ceil(cols / block[1]);
  const scales = given ?? new Float32Array(Math.ceil(rows / block[0]) * gridCols);
  if (!given) {
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) {
        const i = Math.floor(r / block[0]) * gridCols + Math.floor(c / block[1]);
        scales[i] = Math.max(scales[i], Math.abs(w[r * cols + c]) / 448);
      }
  }
  const codes = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const s = scales[Math.floor(r / block[0]) * gridCols + Math.floor(c / block[1])];
      codes[r * cols + c] = s === 0 ? 0 : encodeE4M3(w[r * cols + c] / s);
    }
  return { rows, cols, codes, scales, block };
}

function toF32(raw: Uint8Array, dtype: string): Float32Array {
  if (dtype === "F32") return new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const h = new Uint16Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  return Float32Array.from(h, dtype === "BF16" ? bf16ToF32 : f16ToF32);
}

/** The bf16 bits the importer must write for a matrix: code value × scale rounded to f32, then to bf16 (round to nearest even). */
export function expectedBf16(m: Fp8Matrix): Uint16Array {
  const out = new Uint16Array(m.rows * m.cols);
  const gridCols = Math.ceil(m.cols / m.block[1]);
  const f = new Float32Array(1);
  const u = new Uint32Array(f.buffer);
  for (let r = 0; r < m.rows; r++)
    for (let c = 0; c < m.cols; c++) {
      f[0] =
        e4m3Reference(m.codes[r * m.cols + c]) *
        m.scales[Math.floor(r / m.block[0]) * gridCols + Math.floor(c / m.block[1])];
      const x = u[0];
      out[r * m.cols + c] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    }
  return out;
}
