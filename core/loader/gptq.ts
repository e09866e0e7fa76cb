// GPTQ, AWQ and compressed-tensors' int checkpoints: each linear layer stored as `qweight` (4- or
// 8-bit codes packed into int32 words), `qzeros` (a zero point per group and output, packed the same
// way) and `scales` (f16, per group and output), groups running along the input. A weight is scale × (code − zero), in the
// checkpoint's f16 as the reference kernels compute it (the import rounds it to the folder's dtype).
//
// GPTQ (AutoGPTQ, GPTQModel, optimum): qweight [in / pack, out], input i in bits (i mod pack) of
// word i / pack; qzeros [groups, out / pack] likewise along the output, stored as zero − 1 in the
// original ("gptq") checkpoint format and as the zero in "gptq_v2"; g_idx [in] maps each input to
// its group (permuted by act-order, desc_act). AWQ (AutoAWQ's GEMM layout): qweight [in, out / 8],
// the 8 outputs of a word in the interleaved order 0 2 4 6 1 3 5 7; qzeros packed the same way.
// compressed-tensors' pack-quantized (llm-compressor's W4A16 / W8A16, symmetric): weight_packed
// [out, in / pack] along each row, scales [out, groups], the zero fixed at 2^(bits − 1); its
// int-quantized (W8A8): `weight` itself I8 [out, in], scales [out, groups].
import { f16ToF32, f32ToF16 } from "../modelgen/safetensors-writer.js";
import { transposed } from "../gguf/import.js";
import { ModelError } from "./errors.js";
import { isObject } from "./json.js";
import {
  badTensor,
  dtypeBits,
  floatValues,
  int32Values,
  int8Values,
  isFloat,
  rowsPerChunk,
  type DequantizedMatrix,
  type Int4Blocks,
  type QuantScheme,
  type SchemeMatrices,
} from "./quant-scheme.js";
import type { DType, StoredDType, TensorInfo } from "./safetensors.js";

/** The nibble of an AWQ word that holds its output j (the inverse of AutoAWQ's packing order 0 2 4 6 1 3 5 7). */
const AWQ_NIBBLE = [0, 4, 1, 5, 2, 6, 3, 7];

interface Packing {
  /**
   * "packed": compressed-tensors' pack-quantized (symmetric codes along the input, row by row);
   * "int8": its int-quantized (one I8 code a weight, the [out, in] matrix as stored).
   */
  readonly format: "gptq" | "awq" | "packed" | "int8";
  readonly bits: 4 | 8;
  /** Inputs per group (the whole input for GPTQ's group_size -1). */
  readonly groupSize: number | "all";
  /** Added to each stored zero point (1 in GPTQ's original checkpoint format). */
  readonly zeroOffset: 0 | 1;
}

/**
 * The GPTQ, AWQ or compressed-tensors pack-quantized scheme of a quantization_config, or undefined
 * for any other (or none). A config of one this reader cannot follow (2- or 3-bit codes, AWQ's GEMV
 * layout or no zero points, asymmetric pack-quantized) is an UNSUPPORTED_QUANTIZATION error naming
 * `file`.
 */
export function gptqScheme(q: unknown, file: string): QuantScheme | undefined {
  if (isObject(q) && q.quant_method === "compressed-tensors") return packQuantizedScheme(q, file);
  if (!isObject(q) || (q.quant_method !== "gptq" && q.quant_method !== "awq")) return undefined;
  const method = q.quant_method;
  const bad = (detail: string) =>
    new ModelError("UNSUPPORTED_QUANTIZATION", file, `quantization_config (${method}): ${detail}`);
  const group = q.group_size ?? q.q_group_size;
  if (!(group === -1 || (Number.isSafeInteger(group) && (group as number) > 0)))
    throw bad(`group_size ${JSON.stringify(group)} is not a positive integer or -1`);
  const groupSize = group === -1 ? "all" : (group as number);
  const bits = q.bits ?? q.w_bit;
  if (method === "awq") {
    if (bits !== 4) throw bad(`${String(bits)}-bit codes are not supported (4-bit are)`);
    const version = typeof q.version === "string" ? q.version.toLowerCase() : "gemm";
    if (version !== "gemm") throw bad(`version "${String(q.version)}" is not supported (GEMM's layout is)`);
    if (q.zero_point === false) throw bad("checkpoints without zero points are not supported");
    const aligned = groupSize === "all" || groupSize % 32 === 0;
    return packedMatrices(method, { format: "awq", bits: 4, groupSize, zeroOffset: 0 }, aligned ? "Q4_1" : undefined);
  }
  if (bits !== 4 && bits !== 8) throw bad(`${String(bits)}-bit codes are not supported (4- and 8-bit are)`);
  const format = q.checkpoint_format ?? "gptq";
  if (format !== "gptq" && format !== "gptq_v2") throw bad(`checkpoint_format "${String(format)}" is not supported`);
  const packing: Packing = { format: "gptq", bits, groupSize, zeroOffset: format === "gptq" ? 1 : 0 };
  const aligned = groupSize === "all" || groupSize % 32 === 0;
  const int4 = bits === 4 && q.desc_act !== true && aligned;
  return packedMatrices(method, packing, int4 ? (q.sym === true ? "Q4_0" : "Q4_1") : undefined);
}

/**
 * compressed-tensors' "pack-quantized" (llm-compressor's W4A16 / W8A16): `weight_packed` [out, in /
 * pack], input i of a row in bits (i mod pack) of its word i / pack, the signed code + 2^(bits−1)
 * stored; `weight_scale` [out, groups]; `weight_g_idx` with act-order; `weight_shape` (dropped).
 * Symmetric only: a weight is scale × (stored − 2^(bits−1)).
 */
function packQuantizedScheme(q: Record<string, unknown>, file: string): QuantScheme | undefined {
  const groups = isObject(q.config_groups) ? Object.values(q.config_groups) : [];
  const weights = groups.map((g) => (isObject(g) && isObject(g.weights) ? g.weights : undefined));
  const formats = new Set(groups.map((g) => (isObject(g) && typeof g.format === "string" ? g.format : q.format)));
  const int8 = formats.has("int-quantized") || formats.has("naive-quantized");
  if (weights.length === 0 || !weights.every((w) => w?.type === "int") || !(int8 || formats.has("pack-quantized")))
    return undefined;
  const bad = (detail: string) =>
    new ModelError(
      "UNSUPPORTED_QUANTIZATION",
      file,
      `quantization_config (compressed-tensors, ${[...formats].join(", ")}): ${detail}`,
    );
  if (formats.size !== 1 || new Set(weights.map((w) => JSON.stringify(w))).size !== 1)
    throw bad("config groups quantized differently are not supported");
  const w = weights[0]!;
  if (int8 ? w.num_bits !== 8 : w.num_bits !== 4 && w.num_bits !== 8)
    throw bad(`${String(w.num_bits)}-bit codes are not supported (${int8 ? "8-bit are" : "4- and 8-bit are"})`);
  if (w.symmetric === false) throw bad("asymmetric codes (zero points) are not supported");
  const group = w.strategy === "channel" ? "all" : w.group_size;
  if (!(group === "all" || (Number.isSafeInteger(group) && (group as number) > 0)))
    throw bad(
      `strategy ${JSON.stringify(w.strategy)} with group_size ${JSON.stringify(w.group_size)} is not supported`,
    );
  const groupSize = group as number | "all";
  const bits = w.num_bits as 4 | 8;
  const packing: Packing = { format: int8 ? "int8" : "packed", bits, groupSize, zeroOffset: 0 };
  const aligned = groupSize === "all" || groupSize % 32 === 0;
  return packedMatrices("compressed-tensors", packing, bits === 4 && !w.actorder && aligned ? "Q4_0" : undefined);
}

/** Each format's tensor names beside a matrix's codes: [codes, scales, zero points, group indices]. */
const NAMES = {
  gptq: [".qweight", ".scales", ".qzeros", ".g_idx"],
  awq: [".qweight", ".scales", ".qzeros", undefined],
  packed: [".weight_packed", ".weight_scale", undefined, ".weight_g_idx"],
  int8: [".weight", ".weight_scale", undefined, ".weight_g_idx"],
} as const;

function packedMatrices(method: string, p: Packing, int4Blocks?: "Q4_0" | "Q4_1"): QuantScheme {
  const [codes, scaleSuffix, zeroSuffix, gIdxSuffix] = NAMES[p.format];
  return {
    method,
    int4Blocks,
    matrices(stored, dtype): SchemeMatrices {
      const consumed = new Set<string>();
      const matrices: DequantizedMatrix[] = [];
      for (const qweight of stored.values()) {
        // int-quantized codes share the name of the weights they are: only the I8 ones are codes.
        if (!qweight.name.endsWith(codes) || (p.format === "int8" && qweight.dtype !== "I8")) continue;
        const base = qweight.name.slice(0, -codes.length);
        const need = (suffix: string) => {
          const t = stored.get(base + suffix);
          if (!t) throw badTensor(qweight, `no ${base}${suffix} beside it`);
          consumed.add(t.name);
          return t;
        };
        consumed.add(qweight.name);
        const scales = need(scaleSuffix);
        const qzeros = zeroSuffix ? need(zeroSuffix) : undefined;
        const gIdx = gIdxSuffix ? stored.get(base + gIdxSuffix) : undefined;
        if (gIdx) consumed.add(gIdx.name);
        if (p.format === "packed" || p.format === "int8") {
          if (stored.has(`${base}.weight_zero_point`))
            throw badTensor(qweight, "asymmetric codes (zero points) are not supported");
          if (stored.has(`${base}.weight_shape`)) consumed.add(`${base}.weight_shape`);
        }
        if (p.format !== "int8" && stored.has(`${base}.weight`))
          throw badTensor(qweight, `${base}.weight is stored beside it`);
        matrices.push(dequantized(base, qweight, scales, qzeros, gIdx, p, dtype));
      }
      return { matrices, consumed };
    },
  };
}

/** Checks the tensors' shapes against each other and returns the matrix's dequantization. */
function dequantized(
  base: string,
  qweight: TensorInfo<StoredDType>,
  scales: TensorInfo<StoredDType>,
  qzeros: TensorInfo<StoredDType> | undefined,
  gIdx: TensorInfo<StoredDType> | undefined,
  p: Packing,
  dtype: DType,
): DequantizedMatrix {
  const pack = 32 / p.bits;
  const shape = (t: TensorInfo<StoredDType>, want: number[]) => {
    if (t.shape.length !== want.length || t.shape.some((d, i) => d !== want[i]))
      throw badTensor(t, `shape ${JSON.stringify(t.shape)} where ${JSON.stringify(want)} fits ${qweight.name}`);
  };
  if (qweight.dtype !== (p.format === "int8" ? "I8" : "I32") || qweight.shape.length !== 2)
    throw badTensor(qweight, `not an ${p.format === "int8" ? "I8 matrix of codes" : "I32 matrix of packed codes"}`);
  if (!isFloat(scales.dtype)) throw badTensor(scales, `dtype ${scales.dtype} is not F32, BF16 or F16`);
  if (qzeros && qzeros.dtype !== "I32") throw badTensor(qzeros, `dtype ${qzeros.dtype} is not I32`);
  const [inputs, outputs] =
    p.format === "gptq"
      ? [qweight.shape[0] * pack, qweight.shape[1]]
      : p.format === "awq"
        ? [qweight.shape[0], qweight.shape[1] * pack]
        : p.format === "packed"
          ? [qweight.shape[1] * pack, qweight.shape[0]]
          : [qweight.shape[1], qweight.shape[0]];
  if (qzeros && outputs % pack !== 0)
    throw badTensor(qweight, `${outputs} outputs do not fill whole words of ${pack} codes`);
  const groupSize = p.groupSize === "all" ? inputs : p.groupSize;
  // The scales are [groups, outputs], but [outputs, groups] in the packed format.
  const scalesByOutput = p.format === "packed" || p.format === "int8";
  const groups = gIdx ? scales.shape[scalesByOutput ? 1 : 0] : Math.ceil(inputs / groupSize);
  shape(scales, scalesByOutput ? [outputs, groups] : [groups, outputs]);
  if (qzeros) shape(qzeros, [groups, outputs / pack]);
  if (gIdx) {
    if (gIdx.dtype !== "I32") throw badTensor(gIdx, `dtype ${gIdx.dtype} is not I32`);
    shape(gIdx, [inputs]);
  }
  const mask = (1 << p.bits) - 1;
  // 4-bit codes with f16 scales in groups of whole 32-input blocks, in order, are ggml blocks
  // already: Q4_0 when symmetric (every zero 8), else Q4_1 (value d × code + m, m = −zero × scale).
  const blockAligned = p.bits === 4 && groupSize % 32 === 0;
  let blocks: Int4Blocks | undefined;
  return {
    entry: { name: `${base}.weight`, dtype, shape: [outputs, inputs] },
    int4Blocks: () => blocks,
    *chunks() {
      const words = p.format === "int8" ? int8Values(qweight) : int32Values(qweight);
      const stored = floatValues(scales);
      const s = scalesByOutput ? transposed(stored, outputs, groups) : stored;
      // Zero points unpacked to [groups, outputs], the format's offset added (the packed format's
      // codes are symmetric: stored as code + 2^(bits − 1)).
      const z = new Int16Array(groups * outputs).fill(1 << (p.bits - 1));
      if (qzeros) {
        const zWords = int32Values(qzeros);
        for (let g = 0; g < groups; g++)
          for (let o = 0; o < outputs; o++) {
            const word = zWords[g * (outputs / pack) + Math.floor(o / pack)];
            const shift = p.format === "awq" ? 4 * AWQ_NIBBLE[o & 7] : p.bits * (o % pack);
            z[g * outputs + o] = ((word >>> shift) & mask) + p.zeroOffset;
          }
      }
      const group = gIdx ? int32Values(gIdx) : Int32Array.from({ length: inputs }, (_, i) => Math.floor(i / groupSize));
      for (let i = 0; i < inputs; i++) {
        if (!(group[i] >= 0 && group[i] < groups))
          throw badTensor(
            gIdx ?? qweight,
            `input ${i} is in group ${group[i]}, outside the ${groups} groups of ${scales.name}`,
          );
      }
      const inOrder = group.every((g, i) => g === Math.floor(i / groupSize));
      // bf16 scales fit Q4_0's f16 when they are f16 values too (8 significant bits, in its range).
      const f16Scales = scales.dtype === "F16" || s.every((x) => f16ToF32(f32ToF16(x)) === x);
      const type: Int4Blocks["type"] | undefined = !(blockAligned && inOrder && f16Scales)
        ? undefined
        : z.every((zero) => zero === 8)
          ? "Q4_0"
          : "Q4_1";
      const out: Int4Blocks | undefined = type && {
        type,
        bytes: new Uint8Array((outputs * inputs * (type === "Q4_0" ? 18 : 20)) / 32),
      };
      // A 4-bit code takes one of 16 values per (group, output): their bits in the folder's dtype,
      // rounded once per pair, are looked up instead of rounding every weight.
      const table = p.bits === 4 && dtype !== "F32" ? valueBits(s, z, dtype) : undefined;
      const code = new Uint8Array(inputs); // one output's codes
      const step = rowsPerChunk(inputs);
      for (let o0 = 0; o0 < outputs; o0 += step) {
        const n = Math.min(step, outputs - o0);
        const values = table ? new Uint16Array(n * inputs) : new Float32Array(n * inputs);
        for (let r = 0; r < n; r++) {
          const o = o0 + r;
          if (p.format === "int8") {
            // A signed code a weight, stored as code + 128 here so that the zero point (128) applies.
            for (let i = 0, w = o * inputs; i < inputs; i++, w++) code[i] = words[w] + 128;
          } else if (p.format === "packed") {
            // Row o's inputs run along its words.
            for (let w = o * (inputs / pack), i = 0; i < inputs; w++) {
              const word = words[w];
              for (let shift = 0; shift < 32; shift += p.bits) code[i++] = (word >>> shift) & mask;
            }
          } else if (p.format === "gptq") {
            // Input i is in bits (i mod pack) of word i / pack of column o.
            for (let w = 0, i = 0; i < inputs; w += outputs) {
              const word = words[w + o];
              for (let shift = 0; shift < 32; shift += p.bits) code[i++] = (word >>> shift) & mask;
            }
          } else {
            const shift = 4 * AWQ_NIBBLE[o & 7];
            const per = outputs / 8;
            for (let i = 0, w = o >> 3; i < inputs; i++, w += per) code[i] = (words[w] >>> shift) & 15;
          }
          const row = r * inputs;
          if (table && inOrder) {
            // Groups in order: each group's 16 entries looked up for its whole run of inputs.
            for (let g = 0, i0 = 0; i0 < inputs; g++, i0 += groupSize) {
              const at = (g * outputs + o) << 4;
              for (let i = i0, end = Math.min(inputs, i0 + groupSize); i < end; i++)
                values[row + i] = table[at | code[i]];
            }
          } else if (table)
            for (let i = 0; i < inputs; i++) values[row + i] = table[((group[i] * outputs + o) << 4) | code[i]];
          else
            for (let i = 0; i < inputs; i++) {
              const k = group[i] * outputs + o;
              values[row + i] = s[k] * (code[i] - z[k]); // exact: an f16 scale times a small integer
            }
          if (out) writeBlocks(out, o * (inputs / 32), code, s, z, group, outputs, o);
        }
        yield values;
      }
      blocks = out;
    },
  };
}

/**
 * One output's codes as Q4_0 / Q4_1 blocks from block `first` on: per 32 inputs the f16 scale d
 * (exact: the scale was f16), Q4_1's f16 m = −zero × d (rounded once: the product has up to 4 more
 * bits), then byte j holding codes j (low nibble) and j + 16 (high); value d × (code − 8) or d × code + m.
 */
function writeBlocks(
  out: Int4Blocks,
  first: number,
  code: Uint8Array,
  s: Float32Array,
  z: Int16Array,
  group: Int32Array,
  outputs: number,
  o: number,
): void {
  const size = out.type === "Q4_0" ? 18 : 20;
  const nibbles = size - 16;
  const bytes = out.bytes;
  for (let b = 0; b < code.length / 32; b++) {
    const at = (first + b) * size;
    const k = group[b * 32] * outputs + o;
    const d = f32ToF16(s[k]);
    bytes[at] = d & 255;
    bytes[at + 1] = d >> 8;
    if (out.type === "Q4_1") {
      const m = f32ToF16(-z[k] * s[k]);
      bytes[at + 2] = m & 255;
      bytes[at + 3] = m >> 8;
    }
    for (let j = 0; j < 16; j++) bytes[at + nibbles + j] = code[b * 32 + j] | (code[b * 32 + 16 + j] << 4);
  }
}

/** For each (group, output) k and 4-bit code q, the bits of scale × (q − zero) in `dtype` (f16 or bf16) at 16k + q. */
function valueBits(s: Float32Array, z: Int16Array, dtype: "F16" | "BF16"): Uint16Array {
  const values = new Float32Array(s.length * 16);
  for (let k = 0; k < s.length; k++) for (let q = 0; q < 16; q++) values[k * 16 + q] = s[k] * (q - z[k]);
  return dtypeBits(values, dtype);
}
