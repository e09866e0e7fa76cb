// How a loaded model keeps its matrices: as the file stores them ("file": f32, f16 or bf16), or as
// int8 copies ("int8": groups of INT8_GROUP values with an f16 scale each, about half of bf16's
// bytes). Decoding reads every weight once a token, so int8 weights decode up to twice as fast and
// take half the memory, at llama.cpp's Q8_0 error (each product quantizes x to int8 per group too).
import { native, NativeDType } from "../native/addon.js";
import type { DType, Weight } from "./safetensors.js";
import type { ModelWeights } from "../arch/index.js";

export type WeightFormat = "file" | "int8";
export const WEIGHT_FORMATS: readonly WeightFormat[] = ["file", "int8"];
export const isWeightFormat = (x: unknown): x is WeightFormat => (WEIGHT_FORMATS as readonly unknown[]).includes(x);

/**
 * Values per f16 scale of int8 weights. Q8_0's 32: a group's scale follows its largest value, so
 * smaller groups keep more of the rest (on the 1B shape, 32 and 128 decoded at the same speed).
 */
export const INT8_GROUP = 32;

/** Bytes of a rows × cols matrix as int8 weights: codes padded to whole groups, then the group scales. */
export function int8Bytes(rows: number, cols: number, group = INT8_GROUP): number {
  const groups = Math.ceil(cols / group);
  return rows * (groups * group + 2 * groups);
}

// Linears that stay as stored: a mixture's router and Qwen2-MoE's shared-expert gate pick and weight
// experts from a handful of logits, where a rounding can change which expert runs.
const KEEP = new Set(["router", "sharedGate"]);

const isPlainObject = (x: unknown): x is Record<string, unknown> =>
  typeof x === "object" && x !== null && Object.getPrototypeOf(x) === Object.prototype;
const isWeight = (x: unknown): x is Weight => isPlainObject(x) && "handle" in x && "transposed" in x;

/**
 * The model's weights with every linear layer's matrix (and the token embedding, which a tied head
 * shares) replaced by an int8 copy; norms, biases, position tables and routers stay as stored. The
 * file's copy of each quantized matrix is given back as soon as its int8 copy exists, so loading
 * never holds both in full. A weight shared by several places (a tied head) is quantized once.
 */
export function int8Weights(w: ModelWeights): ModelWeights {
  const n = native();
  const done = new Map<Weight, Weight>();
  const toInt8 = (x: Weight): Weight => {
    let q = done.get(x);
    if (q) return q;
    if (x.rows < 2 || x.cols < INT8_GROUP) return x; // vectors and narrow matrices gain nothing
    const handle = n.quantizeWeight(x.handle, INT8_GROUP);
    n.releaseWeight(x.handle);
    const info = n.weightInfo(handle);
    if (info.dtype !== NativeDType.Q8) throw new Error("quantizeWeight did not return an int8 weight");
    const stored = { dtype: x.dtype as DType, byteLength: x.byteLength };
    q = { ...x, handle, dtype: "Q8", transposed: false, byteLength: info.bytes, stored };
    done.set(x, q);
    return q;
  };
  const walk = (node: unknown, key: string): unknown => {
    if (Array.isArray(node)) return node.map((v) => walk(v, key));
    if (!isPlainObject(node) || isWeight(node)) return node;
    if (isWeight(node.w) && "b" in node && !KEEP.has(key)) return { ...node, w: toInt8(node.w) };
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, walk(v, k)]));
  };
  const out = walk(w, "") as ModelWeights;
  return { ...out, embed: toInt8(w.embed) };
}
