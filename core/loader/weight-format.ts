// How a loaded model keeps its matrices: as the file stores them ("file": f32, f16 or bf16), or as
// quantized copies ("int8", "int4": groups of QUANT_GROUP values with an f16 scale each, about half
// and a quarter of bf16's bytes). Decoding reads every weight once a token, so quantized weights
// decode faster and take less memory, at llama.cpp's Q8_0 / Q4_0 error (each product quantizes x to
// int8 per group too).
import { native, NativeDType } from "../native/addon.js";
import type { DType, Weight } from "./safetensors.js";
import type { ModelWeights } from "../arch/index.js";
import type { BlockCopies } from "../gguf/block-weights.js";

/** A quantized weight format: every matrix as int8 or int4 copies. */
export type QuantFormat = "int8" | "int4";
/**
 * How a loaded model keeps its matrices: a format a load can ask for (WeightChoice), or what "auto"
 * makes of a source that stores some matrices in 4 bits and others in more (a GGUF's Q4_K_M: Q4_K
 * and Q6_K): "int4+int8", the 4-bit blocks as int4 as they are and every other matrix as int8, so
 * that the matrices the file's author kept at 6 or 8 bits are not squeezed into 4.
 */
export type WeightFormat = "file" | QuantFormat | "int4+int8";
// Every format, held to the type by the record (as the host's protocol holds its choices).
const WEIGHT_FORMAT_SET: Record<WeightFormat, true> = { file: true, int8: true, int4: true, "int4+int8": true };
/** Whether x names a weights format (an import record's autoWeights, as read back). */
export const isWeightFormat = (x: unknown): x is WeightFormat =>
  typeof x === "string" && Object.hasOwn(WEIGHT_FORMAT_SET, x);

/**
 * What a load asks for: a format, or "auto" (the default of the CLI, the host and the app), which
 * keeps a model imported from a quantized GGUF file in 4 bits where the file does (int4 from its
 * Q4_0, Q4_1 and Q4_K blocks, int4+int8 when it has others too) and as int8 where it does not, the
 * import of an FP8, GPTQ, AWQ or bitsandbytes checkpoint likewise (its bf16 or f16 is two to four
 * times the checkpoint), and any other model as its file stores it. An import holds the GGUF's 2-8 bit
 * values as bf16, about three times the file; int8 in groups of 32 keeps them within a rounding of
 * under 1/250 of each group's largest value (far below a 2-8 bit step; Q8_0, Q4_0 and Q5_0 exactly,
 * see core/gguf/block-weights.ts) at half of bf16's memory, and decodes faster.
 */
export type WeightChoice = "auto" | "file" | QuantFormat;
export const WEIGHT_CHOICES: readonly WeightChoice[] = ["auto", "file", "int8", "int4"];
export const isWeightChoice = (x: unknown): x is WeightChoice => (WEIGHT_CHOICES as readonly unknown[]).includes(x);

/** How int8 / int4 weights hold a ggml block type: the bits of the copies it fits, fewest first, and whether int4 keeps a minimum per group. */
export interface BlockFit {
  readonly bits: readonly (4 | 8)[];
  readonly mins?: true;
}
const BLOCK_FITS: Readonly<Record<string, BlockFit>> = {
  Q8_0: { bits: [8] },
  Q5_0: { bits: [8] },
  Q4_0: { bits: [4, 8] },
  Q4_1: { bits: [4], mins: true },
  Q4_K: { bits: [4], mins: true },
};
/**
 * The one list of the ggml block types quantized weights take as they are (core/native
 * gguf_quant_dtype), by name: Q8_0, Q4_0 and Q5_0 as int8 and Q4_0 as int4 exactly, Q4_1 and Q4_K as
 * int4 with mins (Q4M); undefined for any other type.
 */
export const blockFit = (type: string): BlockFit | undefined =>
  Object.hasOwn(BLOCK_FITS, type) ? BLOCK_FITS[type] : undefined;
/** Whether int4 weights hold blocks of ggml `type` as they are (Q4_0, Q4_1, Q4_K). */
export const isInt4Block = (type: string): boolean => blockFit(type)?.bits[0] === 4;

/**
 * The format "auto" picks from the types a model's source stored alone (the import record's
 * sourceTypes: ggml types of a GGUF file, e.g. {Q4_K: 97, Q6_K: 17, F32: 65}; undefined for a model
 * that is no import), for records that do not say it (imports from before GGUF IMPORT_VERSION 5):
 * "file" when none is quantized, int4+int8 when some are 4-bit blocks (isInt4Block), else int8. An import
 * records what its matrices allow (core/gguf/import.ts autoWeightsOf, core/loader/quantized-import.ts).
 */
export function autoWeightFormat(sourceTypes: Readonly<Record<string, number>> | undefined): WeightFormat {
  const quantized = Object.keys(sourceTypes ?? {}).filter((t) => !/^B?F\d+$/.test(t));
  if (quantized.length === 0) return "file";
  return quantized.some(isInt4Block) ? "int4+int8" : "int8";
}

/** Bits per code of the quantized formats. */
export const QUANT_BITS: Record<QuantFormat, 4 | 8> = { int8: 8, int4: 4 };
/** The dtype a quantized format's weights carry when quantized here (NativeDType.Q8 / Q4). */
export const QUANT_DTYPE = { int8: "Q8", int4: "Q4" } as const;
/** The dtypes of quantized weights: quantizeWeight's, and int4 with mins from a GGUF's Q4_1 / Q4_K blocks. */
export type QuantDType = "Q8" | "Q4" | "Q4M";
/** The quantized format a weight dtype belongs to ("Q8": int8, "Q4" and "Q4M": int4), or undefined for a file dtype. */
export const quantFormatOf = (d: string): QuantFormat | undefined =>
  d === "Q8" ? "int8" : d === "Q4" || d === "Q4M" ? "int4" : undefined;
export const isQuantDType = (d: string): d is QuantDType => quantFormatOf(d) !== undefined;

/**
 * Values per f16 scale of quantized weights. Q8_0's and Q4_0's 32: a group's scale follows its
 * largest value, so smaller groups keep more of the rest (on the 1B shape, int8 in groups of 32 and
 * 128 decoded at the same speed).
 */
export const QUANT_GROUP = 32;

/**
 * Bytes of a rows × cols matrix as quantized weights: codes padded to whole groups (int4: to 64
 * values, two codes a byte), then the group scales, and with `mins` (int4 from Q4_1 / Q4_K blocks)
 * the group minimums (core/native/src/quant.h).
 */
export function quantBytes(format: QuantFormat, rows: number, cols: number, group = QUANT_GROUP, mins = false): number {
  const groups = Math.ceil(cols / group);
  const codes = format === "int8" ? groups * group : Math.ceil((groups * group) / 64) * 32;
  return rows * (codes + (mins && format === "int4" ? 4 : 2) * groups);
}

// Linears that stay as stored: a mixture's router and Qwen2-MoE's shared-expert gate pick and weight
// experts from a handful of logits, where a rounding can change which expert runs.
const KEEP = new Set(["router", "sharedGate"]);

const isPlainObject = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && Object.getPrototypeOf(x) === Object.prototype;
const isWeight = (x: unknown): x is Weight => isPlainObject(x) && "handle" in x && "transposed" in x;

/**
 * The model's weights with every linear layer's matrix (and the token embedding, which a tied head
 * shares) replaced by a quantized copy; norms, biases, position tables and routers stay as stored.
 * `fromBlocks` makes the copies an import's recorded blocks hold (core/gguf/block-weights.ts); with
 * "int4+int8" a matrix is int4 when its blocks are 4-bit ones, else int8.
 * The file's copy of each quantized matrix is given back as soon as its copy exists, so loading
 * never holds both in full. A weight shared by several places (a tied head) is quantized once.
 */
export function quantizedWeights(
  w: ModelWeights,
  format: Exclude<WeightFormat, "file">,
  fromBlocks?: BlockCopies,
): ModelWeights {
  const n = native();
  const done = new Map<Weight, Weight>();
  const quantize = (x: Weight): Weight => {
    let q = done.get(x);
    if (q) return q;
    if (x.rows < 2 || x.cols < QUANT_GROUP) return x; // vectors and narrow matrices gain nothing
    const bits = format === "int4+int8" ? (fromBlocks?.bitsOf(x) === 4 ? 4 : 8) : QUANT_BITS[format];
    const handle = fromBlocks?.(x, bits) ?? n.quantizeWeight(x.handle, QUANT_GROUP, bits);
    n.releaseWeight(x.handle);
    const info = n.weightInfo(handle);
    const dtype = nativeDTypeName(info.dtype);
    if (quantFormatOf(dtype) !== (bits === 4 ? "int4" : "int8"))
      throw new Error(`${x.name}: a ${dtype} weight where int${bits} was asked for`);
    const stored = { dtype: x.dtype as DType, byteLength: x.byteLength };
    q = { ...x, handle, dtype: dtype as QuantDType, transposed: false, byteLength: info.bytes, stored };
    done.set(x, q);
    return q;
  };
  const walk = (node: unknown, key: string): unknown => {
    if (Array.isArray(node)) return node.map((v) => walk(v, key));
    if (!isPlainObject(node) || isWeight(node)) return node;
    if (isWeight(node.w) && "b" in node && !KEEP.has(key)) return { ...node, w: quantize(node.w) };
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, walk(v, k)]));
  };
  const out = walk(w, "") as ModelWeights;
  return { ...out, embed: quantize(w.embed) };
}

/** The name of a NativeDType number ("Q4M" for 5). */
const nativeDTypeName = (d: number): string =>
  Object.entries(NativeDType).find(([, v]) => v === d)?.[0] ?? `dtype ${d}`;
