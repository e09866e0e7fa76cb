// bitsandbytes checkpoints (transformers' BitsAndBytesConfig, as unsloth's *-bnb-4bit ship):
// - 4-bit (nf4 / fp4): `weight` U8, two codes a byte (the first in the high nibble) over the
//   flattened [out, in] matrix; `weight.absmax` one scale per block of `blocksize` (64) values, f32,
//   or with double quantization U8 codes into `weight.nested_quant_map` (256 f32) times
//   `weight.nested_absmax` (one per `nested_blocksize` blocks) plus `nested_offset`;
//   `weight.quant_map` the 16 code values (NF4 or FP4); `weight.quant_state.bitsandbytes__nf4` a
//   JSON blob with the shape, block sizes and offset. A weight is f32(code value × absmax), as
//   bitsandbytes' dequantize_4bit computes it (the import rounds it to the folder's dtype).
// - 8-bit (LLM.int8): `weight` I8 [out, in] and, beside it as the layer's, `SCB` one f32 scale per
//   row (and `weight_format`): a weight is code × SCB × (1/127 in f32), as int8_vectorwise_dequant
//   computes it.
import { numel } from "../modelgen/safetensors-writer.js";
import { ModelError } from "./errors.js";
import { readBytes } from "./file-io.js";
import { isObject } from "./json.js";
import {
  badTensor,
  floatValues,
  int8Values,
  rowsPerChunk,
  type DequantizedMatrix,
  type QuantScheme,
  type SchemeMatrices,
} from "./quant-scheme.js";
import type { DType, StoredDType, TensorInfo } from "./safetensors.js";

/** The bitsandbytes scheme of a quantization_config, or undefined for any other (or none). */
export function bitsandbytesScheme(q: unknown, file: string): QuantScheme | undefined {
  if (!isObject(q)) return undefined;
  // Older configs name no quant_method, only load_in_4bit / load_in_8bit.
  if (q.quant_method !== "bitsandbytes" && !(q.quant_method === undefined && (q.load_in_4bit || q.load_in_8bit)))
    return undefined;
  if (q.load_in_4bit === true)
    return { method: "bitsandbytes", matrices: (stored, dtype) => fourBit(stored, dtype, file) };
  if (q.load_in_8bit === true) return { method: "bitsandbytes", matrices: (stored, dtype) => eightBit(stored, dtype) };
  throw new ModelError(
    "UNSUPPORTED_QUANTIZATION",
    file,
    "quantization_config (bitsandbytes) sets neither load_in_4bit nor load_in_8bit",
  );
}

interface FourBitState {
  shape: [number, number];
  blocksize: number;
  nested?: { blocksize: number; offset: number };
}

const STATE = /\.quant_state\.bitsandbytes__(nf4|fp4)$/;

function fourBit(stored: ReadonlyMap<string, TensorInfo<StoredDType>>, dtype: DType, file: string): SchemeMatrices {
  const consumed = new Set<string>();
  const matrices: DequantizedMatrix[] = [];
  for (const stateTensor of stored.values()) {
    if (!STATE.test(stateTensor.name)) continue;
    const name = stateTensor.name.replace(STATE, "");
    const weight = stored.get(name);
    if (!weight) throw badTensor(stateTensor, `no ${name} beside it`);
    const need = (suffix: string) => {
      const t = stored.get(name + suffix);
      if (!t) throw badTensor(weight, `no ${name}${suffix} beside it`);
      consumed.add(t.name);
      return t;
    };
    consumed.add(stateTensor.name).add(name);
    const state = readState(stateTensor);
    const absmax = need(".absmax");
    const quantMap = need(".quant_map");
    const nested = state.nested ? { absmax: need(".nested_absmax"), map: need(".nested_quant_map") } : undefined;
    matrices.push(fourBitMatrix(name, weight, state, absmax, quantMap, nested, dtype));
  }
  if (matrices.length === 0)
    throw new ModelError("BAD_HEADER", file, "a 4-bit bitsandbytes config, but no tensor has a quant_state");
  return { matrices, consumed };
}

/** The JSON blob bitsandbytes stores as a U8 tensor beside each 4-bit weight. */
function readState(t: TensorInfo<StoredDType>): FourBitState {
  if (t.dtype !== "U8") throw badTensor(t, `dtype ${t.dtype} is not U8`);
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(readBytes(t.file, t.offset, t.byteLength)));
  } catch {
    throw badTensor(t, "not a JSON quant_state");
  }
  const count = (x: unknown) => Number.isSafeInteger(x) && (x as number) > 0;
  if (
    !isObject(raw) ||
    !Array.isArray(raw.shape) ||
    raw.shape.length !== 2 ||
    !raw.shape.every(count) ||
    !count(raw.blocksize)
  )
    throw badTensor(t, "the quant_state names no [rows, columns] shape and blocksize");
  const state: FourBitState = { shape: [raw.shape[0], raw.shape[1]], blocksize: raw.blocksize as number };
  if (raw.nested_blocksize !== undefined || raw.nested_offset !== undefined) {
    if (!count(raw.nested_blocksize) || typeof raw.nested_offset !== "number" || !Number.isFinite(raw.nested_offset))
      throw badTensor(t, "the quant_state's nested_blocksize or nested_offset is not a number");
    state.nested = { blocksize: raw.nested_blocksize as number, offset: raw.nested_offset };
  }
  return state;
}

function fourBitMatrix(
  name: string,
  weight: TensorInfo<StoredDType>,
  state: FourBitState,
  absmax: TensorInfo<StoredDType>,
  quantMap: TensorInfo<StoredDType>,
  nested: { absmax: TensorInfo<StoredDType>; map: TensorInfo<StoredDType> } | undefined,
  dtype: DType,
): DequantizedMatrix {
  const [rows, cols] = state.shape;
  const n = rows * cols;
  const blocks = Math.ceil(n / state.blocksize);
  const expect = (t: TensorInfo<StoredDType>, dtypes: StoredDType[], count: number) => {
    if (!dtypes.includes(t.dtype) || numel(t.shape) !== count)
      throw badTensor(
        t,
        `${t.dtype}${JSON.stringify(t.shape)} where ${count} ${dtypes.join(" or ")} values fit ${name}`,
      );
  };
  expect(weight, ["U8"], Math.ceil(n / 2));
  expect(quantMap, ["F32"], 16);
  if (nested) {
    expect(absmax, ["U8"], blocks);
    expect(nested.map, ["F32"], 256);
    expect(nested.absmax, ["F32"], Math.ceil(blocks / state.nested!.blocksize));
  } else expect(absmax, ["F32"], blocks);
  return {
    entry: { name, dtype, shape: [rows, cols] },
    *chunks() {
      const codeValues = floatValues(quantMap);
      const scale = nested
        ? nestedAbsmax(
            readBytes(absmax.file, absmax.offset, absmax.byteLength),
            floatValues(nested.map),
            floatValues(nested.absmax),
            state.nested!,
          )
        : floatValues(absmax);
      const packed = readBytes(weight.file, weight.offset, weight.byteLength);
      const step = rowsPerChunk(cols);
      for (let r0 = 0; r0 < rows; r0 += step) {
        const values = new Float32Array(Math.min(step, rows - r0) * cols);
        for (let k = 0, i = r0 * cols; k < values.length; k++, i++) {
          const byte = packed[i >> 1];
          values[k] = codeValues[i & 1 ? byte & 15 : byte >> 4] * scale[Math.floor(i / state.blocksize)];
        }
        yield values;
      }
    },
  };
}

/** Double quantization: each block's absmax = f32(f32(map[code] × its group's absmax) + offset), as bitsandbytes adds the offset back. */
function nestedAbsmax(
  codes: Uint8Array,
  map: Float32Array,
  groupAbsmax: Float32Array,
  nested: { blocksize: number; offset: number },
): Float32Array {
  const out = new Float32Array(codes.length);
  const offset = Math.fround(nested.offset);
  for (let b = 0; b < codes.length; b++)
    out[b] = Math.fround(map[codes[b]] * groupAbsmax[Math.floor(b / nested.blocksize)]) + offset;
  return out;
}

/** 1/127 as the f32 constant int8_vectorwise_dequant multiplies by. */
const INV_127 = Math.fround(7.874015718698502e-3);

function eightBit(stored: ReadonlyMap<string, TensorInfo<StoredDType>>, dtype: DType): SchemeMatrices {
  const consumed = new Set<string>();
  const matrices: DequantizedMatrix[] = [];
  for (const scb of stored.values()) {
    if (!scb.name.endsWith(".SCB")) continue;
    const layer = scb.name.slice(0, -".SCB".length);
    const name = `${layer}.weight`;
    const weight = stored.get(name);
    if (!weight) throw badTensor(scb, `no ${name} beside it`);
    if (weight.dtype !== "I8" || weight.shape.length !== 2)
      throw badTensor(weight, `${weight.dtype}${JSON.stringify(weight.shape)} is not an I8 matrix`);
    const [rows, cols] = weight.shape;
    if (scb.dtype !== "F32" || numel(scb.shape) !== rows) throw badTensor(scb, `not ${rows} F32 row scales`);
    consumed.add(scb.name).add(name);
    if (stored.has(`${layer}.weight_format`)) consumed.add(`${layer}.weight_format`); // "row", from older bitsandbytes
    matrices.push({
      entry: { name, dtype, shape: [rows, cols] },
      *chunks() {
        const s = floatValues(scb);
        const q = int8Values(weight);
        const step = rowsPerChunk(cols);
        for (let r0 = 0; r0 < rows; r0 += step) {
          const n = Math.min(step, rows - r0);
          const values = new Float32Array(n * cols);
          for (let r = 0; r < n; r++)
            for (let c = 0; c < cols; c++)
              values[r * cols + c] = Math.fround(q[(r0 + r) * cols + c] * s[r0 + r]) * INV_127;
          yield values;
        }
      },
    });
  }
  return { matrices, consumed };
}
