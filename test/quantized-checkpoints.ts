// Quantized checkpoints for tests, written from a model made by `hire make-model` the way their
// makers write them:
// - FP8: transformers' "fp8" (e4m3 codes, an f32 weight_scale_inv per block of rows × columns, as
//   Qwen3-*-FP8 ship), compressed-tensors' "float-quantized" (a bf16 weight_scale per row, as
//   llm-compressor's FP8-dynamic checkpoints ship) and fbgemm_fp8 (an f32 weight_scale per row);
// - GPTQ (AutoGPTQ's layout: codes packed along the input, zero points stored minus one, g_idx,
//   f16 scales), AWQ (AutoAWQ's GEMM layout: codes packed along the output in the order 0 2 4 6
//   1 3 5 7) and compressed-tensors' pack-quantized;
// - bitsandbytes: NF4 (double-quantized or not) and LLM.int8.
// The encoders and the reference values here are written from each format's definition, apart from
// the importer (core/loader/fp8.ts, gptq.ts, bitsandbytes.ts), so that the tests check one against
// the other.
import { closeSync, copyFileSync, mkdirSync, openSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { readBytes, writeAll } from "../core/loader/file-io.js";
import { readSafetensorsHeader, weightFiles } from "../core/loader/safetensors.js";
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16 } from "../core/modelgen/safetensors-writer.js";

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

export type QuantizedOptions =
  /** fp8: `block` rows × columns per scale (transformers' weight_block_size; default [128, 128]). */
  | { method: "fp8"; block?: [number, number] }
  | { method: "compressed-tensors" | "fbgemm_fp8" }
  /** GPTQ: `descAct` permutes the inputs' groups (act-order), `sym` fixes the zero points at the middle. */
  | { method: "gptq"; bits: 4 | 8; groupSize: number; sym?: boolean; descAct?: boolean }
  | { method: "awq"; groupSize: number }
  /** compressed-tensors' pack-quantized (symmetric), scales in the model's dtype (f16 unless `bf16`). */
  | { method: "pack-quantized"; bits: 4 | 8; groupSize: number; bf16?: boolean; actOrder?: boolean }
  /** compressed-tensors' int-quantized (W8A8): one I8 code a weight, a bf16 scale per row. */
  | { method: "int-quantized" }
  /** bitsandbytes: NF4 in blocks of 64 (`doubleQuant`: the absmaxes quantized again), or LLM.int8. */
  | { method: "bnb-nf4"; doubleQuant?: boolean }
  | { method: "bnb-int8" };

/** The dtype a checkpoint written with `opts` keeps its unquantized tensors in (and its import writes). */
export function checkpointDtype(opts: QuantizedOptions): "F16" | "BF16" {
  return opts.method === "gptq" || opts.method === "awq" || (opts.method === "pack-quantized" && !opts.bf16)
    ? "F16"
    : "BF16";
}

/** A matrix the checkpoint stores quantized, and its values as the format defines them (exact, before any rounding). */
export interface QuantizedMatrix {
  rows: number;
  cols: number;
  values: Float64Array;
}

const LINEAR = /_proj\.weight$|\.(fc1|fc2|dense|dense_h_to_4h|dense_4h_to_h|query_key_value)\.weight$/;

/**
 * Writes a quantized copy of the model folder `src` at `out`: every linear layer's weight (not the
 * embedding or the head, which such checkpoints keep) in the method's format; every other tensor as
 * in `src` (as f16 for GPTQ and AWQ, whose checkpoints are f16), and the other files. Returns the
 * quantized matrices by their weight's name. `shards` splits the tensors over that many files with an
 * index, as save_pretrained does for large models.
 */
export function writeQuantizedCheckpoint(
  src: string,
  out: string,
  opts: QuantizedOptions,
  shards?: number,
): Map<string, QuantizedMatrix> {
  mkdirSync(out, { recursive: true });
  const [file] = weightFiles(src);
  const header = readSafetensorsHeader(file);
  const f16 = checkpointDtype(opts) === "F16";
  const entries: Stored[] = [];
  const put = (name: string, dtype: string, shape: number[], data: Uint8Array) =>
    entries.push([name, dtype, shape, data]);
  const matrices = new Map<string, QuantizedMatrix>();
  for (const t of header.tensors.values()) {
    const raw = readBytes(file, t.offset, t.byteLength);
    if (t.shape.length !== 2 || !LINEAR.test(t.name)) {
      if (f16 && t.dtype !== "F16") put(t.name, "F16", [...t.shape], bytesOf(toF16(toF32(raw, t.dtype))));
      else put(t.name, t.dtype, [...t.shape], raw);
      continue;
    }
    const [rows, cols] = t.shape;
    const w = toF32(raw, t.dtype);
    const base = t.name.slice(0, -".weight".length);
    if (opts.method === "int-quantized") {
      const round = (x: number) => bf16ToF32(f32ToBf16(x));
      const q = groupQuantize(w, rows, cols, 8, 1, () => 0, true, round);
      put(t.name, "I8", [rows, cols], new Uint8Array(Int8Array.from(q.codes, (c) => c - 128).buffer));
      put(`${base}.weight_scale`, "BF16", [rows, 1], bytesOf(Uint16Array.from(q.scale, f32ToBf16)));
      matrices.set(t.name, { rows, cols, values: q.values });
      continue;
    }
    if (opts.method === "bnb-nf4" || opts.method === "bnb-int8") {
      const q = opts.method === "bnb-nf4" ? nf4(w, rows, cols, opts.doubleQuant ?? false) : llmInt8(w, rows, cols);
      for (const [suffix, dtype, shape, data] of q.tensors) put(base + suffix, dtype, shape, data);
      matrices.set(t.name, { rows, cols, values: q.values });
      continue;
    }
    if (opts.method === "gptq" || opts.method === "awq" || opts.method === "pack-quantized") {
      const q =
        opts.method === "gptq"
          ? gptq(w, rows, cols, opts)
          : opts.method === "awq"
            ? awq(w, rows, cols, opts.groupSize)
            : packQuantized(w, rows, cols, opts);
      for (const [suffix, dtype, shape, data] of q.tensors) put(base + suffix, dtype, shape, data);
      matrices.set(t.name, { rows, cols, values: q.values });
      continue;
    }
    const block: [number, number] = opts.method === "fp8" ? (opts.block ?? [128, 128]) : [1, cols];
    let m = fp8(w, rows, cols, block);
    if (opts.method === "compressed-tensors") {
      // compressed-tensors stores the scales in the model's dtype: round them to bf16 first, so that
      // the codes are made with the scales the file holds.
      m = fp8(
        w,
        rows,
        cols,
        block,
        Float32Array.from(m.scales, (s) => bf16ToF32(f32ToBf16(s))),
      );
    }
    put(t.name, "F8_E4M3", [rows, cols], m.codes);
    const grid = [Math.ceil(rows / block[0]), Math.ceil(cols / block[1])];
    if (opts.method === "fp8") put(`${t.name}_scale_inv`, "F32", grid, bytesOf(m.scales));
    else if (opts.method === "fbgemm_fp8") put(`${t.name}_scale`, "F32", grid, bytesOf(m.scales));
    else {
      put(`${t.name}_scale`, "BF16", grid, bytesOf(Uint16Array.from(m.scales, f32ToBf16)));
      // A static input scale, as a W8A8 checkpoint has: for FP8 kernels only, dropped by the import.
      put(`${base}.input_scale`, "BF16", [1], bytesOf(new Uint16Array([0x3f80])));
    }
    matrices.set(t.name, { rows, cols, values: m.values });
  }
  if (shards) {
    // As save_pretrained shards: model-0000i-of-0000n.safetensors and the index naming each tensor's file.
    const per = Math.ceil(entries.length / shards);
    const weightMap: Record<string, string> = {};
    for (let i = 0; i < shards; i++) {
      const file = `model-${String(i + 1).padStart(5, "0")}-of-${String(shards).padStart(5, "0")}.safetensors`;
      const part = entries.slice(i * per, (i + 1) * per);
      writeSafetensors(join(out, file), part);
      for (const [name] of part) weightMap[name] = file;
    }
    const total = entries.reduce((a, e) => a + e[3].byteLength, 0);
    writeFileSync(
      join(out, "model.safetensors.index.json"),
      JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }),
    );
  } else writeSafetensors(join(out, "model.safetensors"), entries);

  const config = JSON.parse(readFileSync(join(src, "config.json"), "utf8"));
  config.quantization_config = quantizationConfig(opts);
  if (f16) config.torch_dtype = "float16";
  writeFileSync(join(out, "config.json"), JSON.stringify(config, null, 2));
  for (const name of readdirSync(src)) {
    if (name !== "config.json" && !name.endsWith(".safetensors")) copyFileSync(join(src, name), join(out, name));
  }
  return matrices;
}

function quantizationConfig(opts: QuantizedOptions): Record<string, unknown> {
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
    case "gptq":
      return {
        quant_method: "gptq",
        bits: opts.bits,
        group_size: opts.groupSize,
        desc_act: opts.descAct ?? false,
        sym: opts.sym ?? false,
        damp_percent: 0.01,
        true_sequential: true,
        checkpoint_format: "gptq",
      };
    case "awq":
      return { quant_method: "awq", bits: 4, group_size: opts.groupSize, zero_point: true, version: "gemm" };
    case "bnb-nf4":
      return {
        quant_method: "bitsandbytes",
        load_in_4bit: true,
        load_in_8bit: false,
        bnb_4bit_quant_type: "nf4",
        bnb_4bit_use_double_quant: opts.doubleQuant ?? false,
        bnb_4bit_compute_dtype: "bfloat16",
        llm_int8_skip_modules: ["lm_head"],
      };
    case "int-quantized":
      return {
        quant_method: "compressed-tensors",
        format: "int-quantized",
        config_groups: {
          group_0: {
            targets: ["Linear"],
            weights: { num_bits: 8, type: "int", symmetric: true, strategy: "channel", dynamic: false },
            input_activations: { num_bits: 8, type: "int", symmetric: true, strategy: "token", dynamic: true },
          },
        },
        ignore: ["lm_head"],
        quantization_status: "compressed",
      };
    case "bnb-int8":
      return { quant_method: "bitsandbytes", load_in_8bit: true, load_in_4bit: false, llm_int8_threshold: 6.0 };
    case "pack-quantized":
      return {
        quant_method: "compressed-tensors",
        format: "pack-quantized",
        config_groups: {
          group_0: {
            targets: ["Linear"],
            weights: {
              num_bits: opts.bits,
              type: "int",
              symmetric: true,
              strategy: "group",
              group_size: opts.groupSize,
              actorder: opts.actOrder ? "group" : null,
            },
          },
        },
        ignore: ["lm_head"],
        quantization_status: "compressed",
      };
  }
}

/** FP8 codes with a scale per block (the block's largest |w| / 448, or `given`), and the values they stand for. */
function fp8(w: Float32Array, rows: number, cols: number, block: [number, number], given?: Float32Array) {
  const gridCols = Math.ceil(cols / block[1]);
  const at = (r: number, c: number) => Math.floor(r / block[0]) * gridCols + Math.floor(c / block[1]);
  const scales = given ?? new Float32Array(Math.ceil(rows / block[0]) * gridCols);
  if (!given) {
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) scales[at(r, c)] = Math.max(scales[at(r, c)], Math.abs(w[r * cols + c]) / 448);
  }
  const codes = new Uint8Array(rows * cols);
  const values = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const s = scales[at(r, c)];
      codes[r * cols + c] = s === 0 ? 0 : encodeE4M3(w[r * cols + c] / s);
      values[r * cols + c] = e4m3Reference(codes[r * cols + c]) * s;
    }
  return { codes, scales, values };
}

export type Stored = [name: string, dtype: string, shape: number[], data: Uint8Array];

/**
 * Per output o and group g: an f16 scale and an integer zero point, code = round(w / scale) + zero
 * clamped to the code range, value = scale × (code − zero). `groupOf` gives each input's group.
 */
function groupQuantize(
  w: Float32Array,
  rows: number,
  cols: number,
  bits: number,
  groups: number,
  groupOf: (i: number) => number,
  sym: boolean,
  roundScale: (s: number) => number = (s) => f16ToF32(f32ToF16(s)),
) {
  const maxq = (1 << bits) - 1;
  const scale = new Float32Array(groups * rows);
  const zero = new Int32Array(groups * rows);
  const lo = new Float32Array(groups * rows);
  const hi = new Float32Array(groups * rows);
  for (let o = 0; o < rows; o++)
    for (let i = 0; i < cols; i++) {
      const k = groupOf(i) * rows + o;
      lo[k] = Math.min(lo[k], w[o * cols + i]);
      hi[k] = Math.max(hi[k], w[o * cols + i]);
    }
  for (let k = 0; k < groups * rows; k++) {
    const a = Math.max(-lo[k], hi[k]);
    const s = sym ? (2 * a) / maxq : (hi[k] - lo[k]) / maxq;
    scale[k] = roundScale(s || 1e-4);
    // GPTQ's original format stores zero − 1, so a zero of 0 would not survive: keep it at least 1.
    zero[k] = sym ? (maxq + 1) / 2 : Math.min(maxq, Math.max(1, Math.round(-lo[k] / scale[k])));
  }
  const codes = new Int32Array(rows * cols);
  const values = new Float64Array(rows * cols);
  for (let o = 0; o < rows; o++)
    for (let i = 0; i < cols; i++) {
      const k = groupOf(i) * rows + o;
      const q = Math.min(maxq, Math.max(0, Math.round(w[o * cols + i] / scale[k]) + zero[k]));
      codes[o * cols + i] = q;
      values[o * cols + i] = scale[k] * (q - zero[k]);
    }
  // scales are stored [groups, out]: transpose from [groups][rows] (already that order).
  return { scale, zero, codes, values };
}

/** AutoGPTQ's layout for W [rows = out, cols = in]. */
function gptq(w: Float32Array, rows: number, cols: number, opts: Extract<QuantizedOptions, { method: "gptq" }>) {
  const { bits } = opts;
  const groupSize = opts.groupSize === -1 ? cols : opts.groupSize; // -1: one group over the whole input
  const pack = 32 / bits;
  const groups = Math.ceil(cols / groupSize);
  // act-order: inputs are quantized in another order, so each input's group is its place in that order / group size.
  const gIdx = Int32Array.from({ length: cols }, (_, i) => Math.floor((opts.descAct ? (i * 7) % cols : i) / groupSize));
  const q = groupQuantize(w, rows, cols, bits, groups, (i) => gIdx[i], opts.sym ?? false);
  const qweight = new Int32Array((cols / pack) * rows);
  for (let i = 0; i < cols; i++)
    for (let o = 0; o < rows; o++)
      qweight[Math.floor(i / pack) * rows + o] |= q.codes[o * cols + i] << (bits * (i % pack));
  const qzeros = new Int32Array(groups * (rows / pack));
  for (let g = 0; g < groups; g++)
    for (let o = 0; o < rows; o++)
      qzeros[g * (rows / pack) + Math.floor(o / pack)] |= (q.zero[g * rows + o] - 1) << (bits * (o % pack));
  const tensors: Stored[] = [
    [".qweight", "I32", [cols / pack, rows], bytesOf(qweight)],
    [".qzeros", "I32", [groups, rows / pack], bytesOf(qzeros)],
    [".scales", "F16", [groups, rows], bytesOf(Uint16Array.from(q.scale, f32ToF16))],
    [".g_idx", "I32", [cols], bytesOf(gIdx)],
  ];
  return { tensors, values: q.values };
}

/** AutoAWQ's GEMM layout for W [rows = out, cols = in]: pack_awq's order map puts output 8c + ORDER[n] in nibble n. */
function awq(w: Float32Array, rows: number, cols: number, groupSize: number) {
  const ORDER = [0, 2, 4, 6, 1, 3, 5, 7];
  const groups = Math.ceil(cols / groupSize);
  const q = groupQuantize(w, rows, cols, 4, groups, (i) => Math.floor(i / groupSize), false);
  const qweight = new Int32Array(cols * (rows / 8));
  for (let i = 0; i < cols; i++)
    for (let c = 0; c < rows / 8; c++)
      for (let n = 0; n < 8; n++) qweight[i * (rows / 8) + c] |= q.codes[(8 * c + ORDER[n]) * cols + i] << (4 * n);
  const qzeros = new Int32Array(groups * (rows / 8));
  for (let g = 0; g < groups; g++)
    for (let c = 0; c < rows / 8; c++)
      for (let n = 0; n < 8; n++) qzeros[g * (rows / 8) + c] |= q.zero[g * rows + 8 * c + ORDER[n]] << (4 * n);
  const tensors: Stored[] = [
    [".qweight", "I32", [cols, rows / 8], bytesOf(qweight)],
    [".qzeros", "I32", [groups, rows / 8], bytesOf(qzeros)],
    [".scales", "F16", [groups, rows], bytesOf(Uint16Array.from(q.scale, f32ToF16))],
  ];
  return { tensors, values: q.values };
}

/**
 * compressed-tensors' pack_to_int32 for W [rows = out, cols = in]: each row's signed codes + 2^(bits − 1),
 * `pack` to a word along the input, the first in the lowest bits; scales [out, groups].
 */
function packQuantized(
  w: Float32Array,
  rows: number,
  cols: number,
  opts: Extract<QuantizedOptions, { method: "pack-quantized" }>,
) {
  const { bits, groupSize } = opts;
  const pack = 32 / bits;
  const groups = Math.ceil(cols / groupSize);
  const gIdx = Int32Array.from({ length: cols }, (_, i) =>
    Math.floor((opts.actOrder ? (i * 7) % cols : i) / groupSize),
  );
  const round = opts.bf16 ? (x: number) => bf16ToF32(f32ToBf16(x)) : undefined;
  const q = groupQuantize(w, rows, cols, bits, groups, (i) => gIdx[i], true, round);
  const packed = new Int32Array(rows * (cols / pack));
  for (let o = 0; o < rows; o++)
    for (let i = 0; i < cols; i++)
      packed[o * (cols / pack) + Math.floor(i / pack)] |= q.codes[o * cols + i] << (bits * (i % pack));
  const byOutput = new Float32Array(rows * groups);
  for (let g = 0; g < groups; g++) for (let o = 0; o < rows; o++) byOutput[o * groups + g] = q.scale[g * rows + o];
  const scales = opts.bf16 ? Uint16Array.from(byOutput, f32ToBf16) : toF16(byOutput);
  const tensors: Stored[] = [
    [".weight_packed", "I32", [rows, cols / pack], bytesOf(packed)],
    [".weight_scale", opts.bf16 ? "BF16" : "F16", [rows, groups], bytesOf(scales)],
    [".weight_shape", "I64", [2], bytesOf(new BigInt64Array([BigInt(rows), BigInt(cols)]))],
  ];
  if (opts.actOrder) tensors.push([".weight_g_idx", "I32", [cols], bytesOf(gIdx)]);
  return { tensors, values: q.values };
}

/** bitsandbytes' NF4 code values. */
const NF4 = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
].map(Math.fround);

const nearest = (table: readonly number[], x: number) =>
  table.reduce((best, v, i) => (Math.abs(v - x) < Math.abs(table[best] - x) ? i : best), 0);

/**
 * bitsandbytes' 4-bit layout for W [rows, cols]: the flattened matrix in blocks of 64 with their
 * largest |w| as absmax, each value the nearest NF4 code, two codes a byte with the first in the
 * high nibble. With `doubleQuant` the absmaxes, less their mean, are coded again in groups of 256
 * against a 256-value map (here an even one; the file carries it).
 */
function nf4(w: Float32Array, rows: number, cols: number, doubleQuant: boolean) {
  const n = rows * cols;
  const blocksize = 64;
  const blocks = Math.ceil(n / blocksize);
  const absmax = new Float32Array(blocks);
  for (let i = 0; i < n; i++)
    absmax[Math.floor(i / blocksize)] = Math.max(absmax[Math.floor(i / blocksize)], Math.abs(w[i]));
  const tensors: Stored[] = [];
  const state: Record<string, unknown> = { quant_type: "nf4", blocksize, dtype: "bfloat16", shape: [rows, cols] };
  let scale = absmax;
  if (doubleQuant) {
    const offset = Math.fround(absmax.reduce((a, x) => a + x, 0) / blocks);
    const map = Array.from({ length: 256 }, (_, j) => Math.fround(-1 + (2 * j) / 255));
    const groups = Math.ceil(blocks / 256);
    const groupAbsmax = new Float32Array(groups);
    for (let b = 0; b < blocks; b++) groupAbsmax[b >> 8] = Math.max(groupAbsmax[b >> 8], Math.abs(absmax[b] - offset));
    const codes = Uint8Array.from(absmax, (a, b) => nearest(map, (a - offset) / groupAbsmax[b >> 8]));
    scale = Float32Array.from(codes, (c, b) => Math.fround(map[c] * groupAbsmax[b >> 8]) + offset);
    tensors.push([".weight.absmax", "U8", [blocks], codes]);
    tensors.push([".weight.nested_absmax", "F32", [groups], bytesOf(groupAbsmax)]);
    tensors.push([".weight.nested_quant_map", "F32", [256], bytesOf(new Float32Array(map))]);
    Object.assign(state, { nested_blocksize: 256, nested_offset: offset, nested_dtype: "float32" });
  } else tensors.push([".weight.absmax", "F32", [blocks], bytesOf(absmax)]);
  const packed = new Uint8Array(Math.ceil(n / 2));
  const values = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const s = scale[Math.floor(i / blocksize)];
    const q = s === 0 ? 7 : nearest(NF4, w[i] / s);
    packed[i >> 1] |= i & 1 ? q : q << 4;
    values[i] = Math.fround(NF4[q] * s);
  }
  tensors.push([".weight", "U8", [packed.length, 1], packed]);
  tensors.push([".weight.quant_map", "F32", [16], bytesOf(new Float32Array(NF4))]);
  tensors.push([".weight.quant_state.bitsandbytes__nf4", "U8", [0], new TextEncoder().encode(JSON.stringify(state))]);
  const blob = tensors.at(-1)!;
  blob[2] = [blob[3].length];
  return { tensors, values };
}

/** LLM.int8's layout: codes round(w × 127 / the row's largest |w|) as I8, that largest |w| as the layer's SCB. */
function llmInt8(w: Float32Array, rows: number, cols: number) {
  const scb = new Float32Array(rows);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) scb[r] = Math.max(scb[r], Math.abs(w[r * cols + c]));
  const q = new Int8Array(rows * cols);
  const values = new Float64Array(rows * cols);
  const inv127 = Math.fround(1 / 127);
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) {
      const k = r * cols + c;
      q[k] = scb[r] === 0 ? 0 : Math.round((w[k] * 127) / scb[r]);
      values[k] = Math.fround(Math.fround(q[k] * scb[r]) * inv127);
    }
  const tensors: Stored[] = [
    [".weight", "I8", [rows, cols], new Uint8Array(q.buffer)],
    [".SCB", "F32", [rows], bytesOf(scb)],
  ];
  return { tensors, values };
}

/** A safetensors file of `entries` (name, dtype, shape, bytes), in order. */
export function writeSafetensors(file: string, entries: readonly Stored[]): void {
  const json: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, dtype, shape, data] of entries) {
    json[name] = { dtype, shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  const text = Buffer.from(JSON.stringify({ ...json, __metadata__: { format: "pt" } }));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(text.length));
  const fd = openSync(file, "w");
  try {
    for (const b of [len, text, ...entries.map((e) => e[3])]) writeAll(fd, b, file);
  } finally {
    closeSync(fd);
  }
}

const bytesOf = (a: ArrayBufferView) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);

function toF32(raw: Uint8Array, dtype: string): Float32Array {
  const copy = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
  if (dtype === "F32") return new Float32Array(copy);
  // A loop, not Float32Array.from (which builds a list first and fails on an embedding's 2^28 values).
  const h = new Uint16Array(copy);
  const out = new Float32Array(h.length);
  const widen = dtype === "BF16" ? bf16ToF32 : f16ToF32;
  for (let i = 0; i < h.length; i++) out[i] = widen(h[i]);
  return out;
}

function toF16(x: Float32Array): Uint16Array {
  const out = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f32ToF16(x[i]);
  return out;
}

/**
 * The bits the importer must write for a matrix in `dtype`: each value rounded to f32 (as torch's
 * FP8 dequantization computes; GPTQ's and AWQ's values are exact in f32), then to bf16 or f16.
 */
export function expectedBits(m: QuantizedMatrix, dtype: "BF16" | "F16"): Uint16Array {
  return Uint16Array.from(m.values, (v) => (dtype === "BF16" ? f32ToBf16(Math.fround(v)) : f32ToF16(Math.fround(v))));
}
