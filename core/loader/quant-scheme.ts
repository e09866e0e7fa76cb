// What a quantized checkpoint's scheme (FP8 in fp8.ts, GPTQ and AWQ in gptq.ts) gives the import
// (quantized-import.ts): the matrices it dequantizes, each as f32 values row by row, and the stored
// tensors they are made of, which the import does not copy.
import { bf16ToF32, convertF32, f16ToF32, type TensorEntry } from "../modelgen/safetensors-writer.js";
import { ModelError } from "./errors.js";
import { readBytes } from "./file-io.js";
import type { DType, StoredDType, TensorInfo } from "./safetensors.js";

export interface QuantScheme {
  /** quantization_config's quant_method. */
  readonly method: string;
  /** The ggml blocks the config says every matrix's codes fit (DequantizedMatrix.int4Blocks), if any. */
  readonly int4Blocks?: Int4Blocks["type"];
  /**
   * The matrices of `stored` (every tensor of the checkpoint) this scheme dequantizes, written as
   * `dtype`, and the names of the tensors they are made of. Checks shapes only (no weights are read,
   * at most small metadata tensors such as bitsandbytes' quant_state); a tensor that does not fit is a
   * ModelError naming its file and name.
   */
  matrices(stored: ReadonlyMap<string, TensorInfo<StoredDType>>, dtype: DType): SchemeMatrices;
}

export interface SchemeMatrices {
  readonly matrices: DequantizedMatrix[];
  readonly consumed: ReadonlySet<string>;
}

export interface DequantizedMatrix {
  /** The tensor as the import writes it ([rows, cols], the folder's dtype). */
  readonly entry: TensorEntry;
  /**
   * Its values, whole rows at a time, in order: f32 (the import rounds them to the entry's dtype),
   * or already the entry's 16-bit dtype's bits.
   */
  chunks(): Generator<Float32Array | Uint16Array>;
  /**
   * ggml blocks holding the matrix's codes, when they fit them (a 4-bit GPTQ or AWQ matrix in groups
   * of whole blocks, in order, with f16 scales): int4 weights take those instead of quantizing the
   * import's rounded values again. Known once chunks() has run to its end; undefined when they do
   * not fit.
   */
  int4Blocks?(): Int4Blocks | undefined;
}

/**
 * A matrix's 4-bit codes as ggml blocks of 32, row after row: Q4_0 (an f16 scale d, value d × (code −
 * 8); symmetric codes, exactly) or Q4_1 (d and an f16 m, value d × code + m; codes with a zero point,
 * m = −zero × d rounded once to f16).
 */
export interface Int4Blocks {
  readonly type: "Q4_0" | "Q4_1";
  readonly bytes: Uint8Array;
}

/** Elements per chunk a scheme yields (and per progress report). */
export const CHUNK_VALUES = 4 << 20;

/** Rows per chunk for a matrix `cols` wide, a multiple of `step` (the rows one scale covers). */
export function rowsPerChunk(cols: number, step = 1): number {
  return Math.max(step, Math.floor(CHUNK_VALUES / cols / step) * step);
}

export const isFloat = (d: StoredDType): d is DType => d === "F32" || d === "BF16" || d === "F16";

/** A float tensor's values as f32 (scales: F32, BF16 or F16), non-finite values a NOT_FINITE error. */
export function floatValues(t: TensorInfo<StoredDType>): Float32Array {
  const bytes = readBytes(t.file, t.offset, t.byteLength);
  let v: Float32Array;
  if (t.dtype === "F32") v = new Float32Array(bytes.buffer, bytes.byteOffset, t.byteLength / 4);
  else if (isFloat(t.dtype)) {
    const h = new Uint16Array(bytes.buffer, bytes.byteOffset, t.byteLength / 2);
    v = new Float32Array(h.length);
    if (t.dtype === "BF16") for (let i = 0; i < h.length; i++) v[i] = bf16ToF32(h[i]);
    else {
      const table = halfTable();
      for (let i = 0; i < h.length; i++) v[i] = table[h[i]];
    }
  } else
    throw new ModelError("UNSUPPORTED_DTYPE", t.file, `dtype ${t.dtype} where scales (F32, BF16, F16) belong`, t.name);
  for (let i = 0; i < v.length; i++) {
    if (!Number.isFinite(v[i])) throw new ModelError("NOT_FINITE", t.file, `value ${i} is ${v[i]}`, t.name);
  }
  return v;
}

let halves: Float32Array | undefined;
/** Every f16 bit pattern's value (a decoder call per scale costs seconds on a large checkpoint). */
function halfTable(): Float32Array {
  if (!halves) halves = Float32Array.from({ length: 65536 }, (_, h) => f16ToF32(h));
  return halves;
}

/** An I32 tensor's words (packed codes, group indices). */
export function int32Values(t: TensorInfo<StoredDType>): Int32Array {
  if (t.dtype !== "I32")
    throw new ModelError("UNSUPPORTED_DTYPE", t.file, `dtype ${t.dtype} where I32 belongs`, t.name);
  const bytes = readBytes(t.file, t.offset, t.byteLength);
  return new Int32Array(bytes.buffer, bytes.byteOffset, t.byteLength / 4);
}

/** An I8 tensor's codes. */
export function int8Values(t: TensorInfo<StoredDType>): Int8Array {
  if (t.dtype !== "I8") throw new ModelError("UNSUPPORTED_DTYPE", t.file, `dtype ${t.dtype} where I8 belongs`, t.name);
  const bytes = readBytes(t.file, t.offset, t.byteLength);
  return new Int8Array(bytes.buffer, bytes.byteOffset, t.byteLength);
}

/** f32 values as bits of the 16-bit `dtype` (round to nearest even): a scheme's lookup tables of the values its codes take. */
export function dtypeBits(values: Float32Array, dtype: "F16" | "BF16"): Uint16Array {
  const bits = new Uint16Array(values.length);
  convertF32(new Uint32Array(values.buffer, values.byteOffset, values.length), values.length, dtype, bits);
  return bits;
}

/** A header problem of a quantized checkpoint's tensor: a BAD_HEADER error naming it. */
export function badTensor(t: TensorInfo<StoredDType>, detail: string): ModelError {
  return new ModelError("BAD_HEADER", t.file, detail, t.name);
}
