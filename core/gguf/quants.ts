// GGML tensor types as GGUF files store them (ggml-common.h's block layouts) and their dequantization,
// so that a llama.cpp model file (Q4_K_M, Q8_0, ...) can be imported into the engine's bf16 weights.
// The sizes are checked here; the blocks are decoded by the native addon (core/native/src/
// gguf_dequant.cc, on the thread pool), the way ggml's `dequantize_row_*` does. test/gguf-import.test.ts
// checks every type against values gguf-py (llama.cpp's Python package) dequantized from a file
// llama-quantize wrote.

import { native, NativeDType } from "../native/addon.js";
import type { StDType } from "../modelgen/safetensors-writer.js";

/** ggml's type ids (enum ggml_type) that model files use. */
export enum GgmlTypeId {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  IQ4_NL = 20,
  IQ4_XS = 23,
  BF16 = 30,
}

/** Values per block and bytes per block of each type this module reads. */
export const GGML_BLOCKS: Readonly<Record<GgmlTypeId, { values: number; bytes: number; name: string }>> = {
  [GgmlTypeId.F32]: { values: 1, bytes: 4, name: "F32" },
  [GgmlTypeId.F16]: { values: 1, bytes: 2, name: "F16" },
  [GgmlTypeId.BF16]: { values: 1, bytes: 2, name: "BF16" },
  [GgmlTypeId.Q4_0]: { values: 32, bytes: 18, name: "Q4_0" },
  [GgmlTypeId.Q4_1]: { values: 32, bytes: 20, name: "Q4_1" },
  [GgmlTypeId.Q5_0]: { values: 32, bytes: 22, name: "Q5_0" },
  [GgmlTypeId.Q5_1]: { values: 32, bytes: 24, name: "Q5_1" },
  [GgmlTypeId.Q8_0]: { values: 32, bytes: 34, name: "Q8_0" },
  [GgmlTypeId.Q2_K]: { values: 256, bytes: 84, name: "Q2_K" },
  [GgmlTypeId.Q3_K]: { values: 256, bytes: 110, name: "Q3_K" },
  [GgmlTypeId.Q4_K]: { values: 256, bytes: 144, name: "Q4_K" },
  [GgmlTypeId.Q5_K]: { values: 256, bytes: 176, name: "Q5_K" },
  [GgmlTypeId.Q6_K]: { values: 256, bytes: 210, name: "Q6_K" },
  [GgmlTypeId.IQ4_NL]: { values: 32, bytes: 18, name: "IQ4_NL" },
  [GgmlTypeId.IQ4_XS]: { values: 256, bytes: 136, name: "IQ4_XS" },
};

/** ggml's names of the types it has that this module does not read (for the error). */
const OTHER_TYPE_NAMES: Record<number, string> = {
  9: "Q8_1",
  15: "Q8_K",
  16: "IQ2_XXS",
  17: "IQ2_XS",
  18: "IQ3_XXS",
  19: "IQ1_S",
  21: "IQ3_S",
  22: "IQ2_S",
  24: "I8",
  25: "I16",
  26: "I32",
  27: "I64",
  28: "F64",
  29: "IQ1_M",
  34: "TQ1_0",
  35: "TQ2_0",
  39: "MXFP4",
};

export function isSupportedType(t: number): t is GgmlTypeId {
  return Object.prototype.hasOwnProperty.call(GGML_BLOCKS, t);
}

export function ggmlTypeName(t: number): string {
  return isSupportedType(t) ? GGML_BLOCKS[t].name : (OTHER_TYPE_NAMES[t] ?? `type ${t}`);
}

/** Bytes `n` values of type `t` take, or undefined when n is not a whole number of blocks. */
export function ggmlBytes(t: GgmlTypeId, n: number): number | undefined {
  const b = GGML_BLOCKS[t];
  return n % b.values === 0 ? (n / b.values) * b.bytes : undefined;
}

const NATIVE_DTYPES: Record<StDType, NativeDType> = {
  F32: NativeDType.F32,
  F16: NativeDType.F16,
  BF16: NativeDType.BF16,
};

function checkSize(t: GgmlTypeId, src: Uint8Array, n: number): void {
  const bytes = ggmlBytes(t, n);
  if (bytes === undefined || bytes !== src.byteLength) {
    throw new RangeError(`dequantize: ${n} values of ${ggmlTypeName(t)} do not fill ${src.byteLength} bytes`);
  }
}

/** The `n` values stored as type `t` in `src` (which holds exactly their bytes), as float32. */
export function dequantize(t: GgmlTypeId, src: Uint8Array, n: number): Float32Array {
  checkSize(t, src, n);
  const out = new Float32Array(n);
  native().dequantizeGguf(t, src, n, out, NativeDType.F32);
  return out;
}

/** The same values as the bytes of `dtype` (f16 / bf16 rounded to nearest even), ready for a safetensors file. */
export function dequantizeTo(t: GgmlTypeId, src: Uint8Array, n: number, dtype: StDType): Uint8Array {
  if (dtype === "F32") return new Uint8Array(dequantize(t, src, n).buffer);
  checkSize(t, src, n);
  const out = new Uint16Array(n);
  native().dequantizeGguf(t, src, n, out, NATIVE_DTYPES[dtype]);
  return new Uint8Array(out.buffer);
}
