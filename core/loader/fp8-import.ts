// FP8 checkpoints: Hugging Face folders whose linear weights are stored as float8 e4m3 with scales
// (config.json's quantization_config: transformers' "fp8" with weight_block_size, as Qwen3-*-FP8 ship;
// "fbgemm_fp8"; compressed-tensors' "float-quantized", as the *-FP8-dynamic checkpoints of
// llm-compressor ship). No kernel here reads e4m3, so such a folder is read through an import, as a
// GGUF file is (core/gguf/import.ts): each FP8 matrix dequantized once, w = e4m3 value × its block's
// scale (rounded to f32, then to the folder's dtype, as torch's dequantization does), into a folder
// in the cache; every other tensor is copied as it is and the scales are dropped. Weights "auto"
// keeps an FP8 import as int8 (weight-format.ts), near the checkpoint's size in memory.
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  closeSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { buildHeader, bf16ToF32, convertF32, f16ToF32, type TensorEntry } from "../modelgen/safetensors-writer.js";
import { ModelError } from "./errors.js";
import { readBytes, readFully, writeAll } from "./file-io.js";
import { isObject, readJsonFile } from "./json.js";
import { readStoredHeader, weightFiles, type DType, type StoredDType, type TensorInfo } from "./safetensors.js";

/** Bumped when an import's output changes, so that cached imports are redone. */
export const FP8_IMPORT_VERSION = 1;
/** Written into an import's folder: where it came from (fp8ImportRecord). */
export const FP8_IMPORT_RECORD = "fp8-import.json";

/** What config.json's quantization_config says about an FP8 checkpoint. */
export interface Fp8Scheme {
  /** quant_method, as the config names it. */
  readonly method: string;
  /** Rows × columns each scale covers, when the config gives it (else read from the scales' shapes). */
  readonly block?: readonly [number, number];
}

/**
 * The FP8 scheme of a quantization_config, or undefined for any other (or none): those stay refused
 * by readModelConfig. An FP8 config this reader cannot follow (e5m2, a block size that is no pair of
 * positive integers) is an UNSUPPORTED_QUANTIZATION error naming `file`.
 */
export function fp8Scheme(q: unknown, file: string): Fp8Scheme | undefined {
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
    const b = block(q.weight_block_size);
    return b ? { method, block: b } : { method };
  }
  if (method === "fbgemm_fp8") return { method };
  if (method === "compressed-tensors") {
    // Every group's weights must be 8-bit floats, stored as such ("float-quantized").
    const groups = isObject(q.config_groups) ? Object.values(q.config_groups) : [];
    const weights = groups.map((g) => (isObject(g) && isObject(g.weights) ? g.weights : undefined));
    const formats = new Set(groups.map((g) => (isObject(g) && typeof g.format === "string" ? g.format : q.format)));
    const float8 = weights.length > 0 && weights.every((w) => w?.type === "float" && w.num_bits === 8);
    if (!float8 || formats.size !== 1 || !formats.has("float-quantized")) return undefined;
    const blocks = new Set(weights.map((w) => JSON.stringify(block(w?.block_structure) ?? null)));
    if (blocks.size > 1) throw bad("config groups with different block sizes are not supported");
    const b = block(weights[0]?.block_structure);
    return b ? { method, block: b } : { method };
  }
  return undefined;
}

/** The FP8 scheme of the model folder `dir`'s config.json, or undefined when it is no FP8 checkpoint. */
export function fp8SchemeOf(dir: string): Fp8Scheme | undefined {
  const file = join(dir, "config.json");
  if (!existsSync(file)) return undefined;
  const raw = readJsonFile(file);
  return isObject(raw) ? fp8Scheme(raw.quantization_config, file) : undefined;
}

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

/** One tensor of the import: an FP8 matrix with its scales, or a tensor copied as it is. */
export type Fp8ImportTensor =
  | {
      kind: "dequantize";
      entry: TensorEntry;
      weight: TensorInfo<StoredDType>;
      scale: TensorInfo<StoredDType>;
      /** Rows and columns each scale covers. */
      block: readonly [number, number];
    }
  | { kind: "copy"; entry: TensorEntry; source: TensorInfo<StoredDType> };

export interface Fp8ImportPlan {
  readonly scheme: Fp8Scheme;
  /** config.json as the import writes it: without quantization_config. */
  readonly config: Record<string, unknown>;
  /** The dtype dequantized matrices are written in (config.json's torch_dtype; bf16 when it names none). */
  readonly dtype: DType;
  readonly tensors: readonly Fp8ImportTensor[];
  /** How many tensors of each dtype the checkpoint stores (scales included). */
  readonly sourceTypes: Record<string, number>;
}

const TORCH_DTYPES: Record<string, DType> = { bfloat16: "BF16", float16: "F16", float32: "F32" };
const SCALE_DTYPES = new Set<StoredDType>(["F32", "BF16", "F16"]);
/** Per-tensor activation and KV-cache scales: for FP8 kernels only; this engine computes in f32. */
const ACTIVATION_SCALE = /\.(input_scale|input_scale_inv|output_scale|k_scale|v_scale|q_scale)$/;

/**
 * What importing the FP8 checkpoint `dir` writes, from its config.json and safetensors headers (no
 * weights read). Every F8_E4M3 tensor must be a matrix with a `<name>_scale_inv` (transformers' fp8)
 * or `<name>_scale` beside it, covering it in whole blocks; anything else is a ModelError naming the
 * file and tensor.
 */
export function planFp8Import(dir: string): Fp8ImportPlan {
  const configFile = join(dir, "config.json");
  const raw = readJsonFile(configFile);
  if (!isObject(raw)) throw new ModelError("BAD_CONFIG", configFile, "config.json is not a JSON object");
  const scheme = fp8Scheme(raw.quantization_config, configFile);
  if (!scheme) throw new ModelError("BAD_CONFIG", configFile, "quantization_config names no FP8 scheme");
  const torchDtype =
    typeof raw.torch_dtype === "string" ? raw.torch_dtype : typeof raw.dtype === "string" ? raw.dtype : "bfloat16";
  const dtype = TORCH_DTYPES[torchDtype] ?? "BF16";
  const config: Record<string, unknown> = {
    ...raw,
    torch_dtype: Object.keys(TORCH_DTYPES).find((k) => TORCH_DTYPES[k] === dtype),
  };
  delete config.quantization_config;
  delete config.compression_config; // compressed-tensors' older name for it

  const stored = new Map<string, TensorInfo<StoredDType>>();
  for (const f of weightFiles(dir)) for (const [name, t] of readStoredHeader(f).tensors) stored.set(name, t);
  const sourceTypes: Record<string, number> = {};
  for (const t of stored.values()) sourceTypes[t.dtype] = (sourceTypes[t.dtype] ?? 0) + 1;

  const scales = new Set<string>();
  const tensors: Fp8ImportTensor[] = [];
  for (const t of stored.values()) {
    if (t.dtype !== "F8_E4M3") continue;
    const scale = stored.get(`${t.name}_scale_inv`) ?? stored.get(`${t.name}_scale`);
    if (!scale)
      throw new ModelError(
        "BAD_HEADER",
        t.file,
        `an FP8 tensor with no ${t.name}_scale_inv or ${t.name}_scale beside it`,
        t.name,
      );
    scales.add(scale.name);
    tensors.push({
      kind: "dequantize",
      entry: { name: t.name, dtype, shape: t.shape },
      weight: t,
      scale,
      block: scaleBlock(t, scale, scheme),
    });
  }
  for (const t of stored.values()) {
    if (t.dtype === "F8_E4M3" || scales.has(t.name) || ACTIVATION_SCALE.test(t.name)) continue;
    tensors.push({ kind: "copy", entry: { name: t.name, dtype: t.dtype, shape: t.shape }, source: t });
  }
  // The forward order of the files (as written), so that the import reads and writes front to back.
  const order = [...stored.keys()];
  tensors.sort((a, b) => order.indexOf(a.entry.name) - order.indexOf(b.entry.name));
  return { scheme, config, dtype, tensors, sourceTypes };
}

/** The rows × columns one scale of `scale` covers in the matrix `w` (the scheme's block, or what the shapes imply). */
function scaleBlock(
  w: TensorInfo<StoredDType>,
  scale: TensorInfo<StoredDType>,
  scheme: Fp8Scheme,
): readonly [number, number] {
  const bad = (detail: string) => new ModelError("BAD_HEADER", scale.file, detail, scale.name);
  if (w.shape.length !== 2) {
    throw new ModelError(
      "BAD_HEADER",
      w.file,
      `an FP8 tensor of shape ${JSON.stringify(w.shape)}; only matrices are supported`,
      w.name,
    );
  }
  if (!SCALE_DTYPES.has(scale.dtype)) throw bad(`scale dtype ${scale.dtype} is not F32, BF16 or F16`);
  const [rows, cols] = w.shape;
  const n = scale.shape.reduce((a, d) => a * d, 1);
  // One scale for the whole tensor ([] or [1]), one per row ([rows] or [rows, 1]), or a grid of blocks.
  const grid: [number, number] | undefined =
    n === 1
      ? [1, 1]
      : scale.shape.length === 1
        ? [scale.shape[0], 1]
        : scale.shape.length === 2
          ? [scale.shape[0], scale.shape[1]]
          : undefined;
  if (!grid) throw bad(`scale shape ${JSON.stringify(scale.shape)} is not a grid over ${w.name}`);
  const block: readonly [number, number] =
    scheme.block && n > 1 ? scheme.block : [Math.ceil(rows / grid[0]), Math.ceil(cols / grid[1])];
  if (Math.ceil(rows / block[0]) !== grid[0] || Math.ceil(cols / block[1]) !== grid[1]) {
    throw bad(
      `scale shape ${JSON.stringify(scale.shape)} does not cover ${w.name} [${rows}, ${cols}] in ${block[0]} × ${block[1]} blocks`,
    );
  }
  return block;
}

export interface Fp8ImportRecord {
  /** The checkpoint folder the import was made from (which may be gone since). */
  source: string;
  quantMethod: string;
  sourceTypes: Record<string, number>;
}

/** A folder's FP8_IMPORT_RECORD, or undefined for a folder that is no FP8 import. */
export function fp8ImportRecord(dir: string): Fp8ImportRecord | undefined {
  const file = join(dir, FP8_IMPORT_RECORD);
  if (!existsSync(file)) return undefined;
  try {
    const r: unknown = JSON.parse(readFileSync(file, "utf8"));
    if (!isObject(r) || typeof r.source !== "string" || typeof r.quantMethod !== "string") return undefined;
    const types = isObject(r.sourceTypes) ? r.sourceTypes : {};
    const sourceTypes = Object.fromEntries(Object.entries(types).filter(([, n]) => typeof n === "number")) as Record<
      string,
      number
    >;
    return { source: r.source, quantMethod: r.quantMethod, sourceTypes };
  } catch {
    return undefined;
  }
}

/** Matrix elements dequantized per step (and per progress report). */
const CHUNK_VALUES = 4 << 20;
/** Files an import leaves as they are: the weights it rewrites, and the checkpoint's config it replaces. */
const REWRITTEN = /(\.safetensors|\.safetensors\.index\.json|^config\.json)$/;

/**
 * Writes the FP8 checkpoint `dir` as a model folder of plain tensors at `outDir` (atomically: built
 * beside it, then renamed), with the checkpoint's tokenizer and other files copied.
 */
export async function importFp8(
  dir: string,
  outDir: string,
  opts: { onProgress?: (done: number, total: number) => void } = {},
): Promise<Fp8ImportPlan> {
  const plan = planFp8Import(dir);
  const tmp = `${outDir}.${process.pid}.tmp`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  try {
    const total = plan.tensors.reduce((a, t) => a + t.entry.shape.reduce((x, d) => x * d, 1), 0);
    let done = 0;
    const out = openSync(join(tmp, "model.safetensors"), "w");
    try {
      writeAll(
        out,
        buildHeader(
          plan.tensors.map((t) => t.entry),
          { format: "pt", source: basename(dir) },
        ),
      );
      for (const t of plan.tensors) {
        for (const chunk of t.kind === "copy" ? copiedChunks(t.source) : dequantizedChunks(t, plan.dtype)) {
          writeAll(out, chunk.bytes);
          done += chunk.values;
          opts.onProgress?.(done, total);
          // Let the host's event loop send the progress (and answer other requests) between chunks.
          await new Promise((r) => setImmediate(r));
        }
      }
    } finally {
      closeSync(out);
    }
    writeFileSync(join(tmp, "config.json"), JSON.stringify(plan.config, null, 2) + "\n");
    for (const name of readdirSync(dir)) {
      const f = join(dir, name);
      if (!REWRITTEN.test(name) && statSync(f).isFile()) copyFileSync(f, join(tmp, name));
    }
    const record: Fp8ImportRecord = { source: dir, quantMethod: plan.scheme.method, sourceTypes: plan.sourceTypes };
    writeFileSync(
      join(tmp, FP8_IMPORT_RECORD),
      JSON.stringify({ ...record, importVersion: FP8_IMPORT_VERSION }, null, 2) + "\n",
    );
    rmSync(outDir, { recursive: true, force: true });
    mkdirSync(dirname(outDir), { recursive: true });
    renameSync(tmp, outDir);
    return plan;
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

interface Chunk {
  bytes: Uint8Array;
  values: number;
}

function* copiedChunks(t: TensorInfo<StoredDType>): Generator<Chunk> {
  const per =
    t.byteLength /
    Math.max(
      1,
      t.shape.reduce((a, d) => a * d, 1),
    );
  const fd = openSync(t.file, "r");
  try {
    for (let off = 0; off < t.byteLength; off += CHUNK_VALUES) {
      const buf = new Uint8Array(Math.min(CHUNK_VALUES, t.byteLength - off));
      readFully(fd, buf, t.offset + off, t.file);
      yield { bytes: buf, values: buf.byteLength / per };
    }
  } finally {
    closeSync(fd);
  }
}

/** The FP8 matrix `t` dequantized, whole block rows at a time. */
function* dequantizedChunks(t: Extract<Fp8ImportTensor, { kind: "dequantize" }>, dtype: DType): Generator<Chunk> {
  const [rows, cols] = t.weight.shape;
  const [br, bc] = t.block;
  const scales = scaleValues(t.scale);
  const gridCols = Math.ceil(cols / bc);
  for (let i = 0; i < scales.length; i++) {
    if (!Number.isFinite(scales[i]))
      throw new ModelError("NOT_FINITE", t.scale.file, `scale ${i} is ${scales[i]}`, t.scale.name);
  }
  const rowsPerChunk = Math.max(br, Math.floor(CHUNK_VALUES / cols / br) * br);
  const fd = openSync(t.weight.file, "r");
  try {
    for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
      const n = Math.min(rowsPerChunk, rows - r0);
      const codes = new Uint8Array(n * cols);
      readFully(fd, codes, t.weight.offset + r0 * cols, t.weight.file);
      const values = new Float32Array(n * cols);
      for (let r = 0; r < n; r++) {
        const srow = Math.floor((r0 + r) / br) * gridCols;
        const base = r * cols;
        for (let c0 = 0; c0 < cols; c0 += bc) {
          const s = scales[srow + c0 / bc];
          const end = base + Math.min(cols, c0 + bc);
          for (let k = base + c0; k < end; k++) {
            const code = codes[k];
            if ((code & 0x7f) === 0x7f) {
              throw new ModelError(
                "NOT_FINITE",
                t.weight.file,
                `element ${(r0 + r) * cols + (k - base)} is NaN (e4m3 code 0x${code.toString(16)})`,
                t.weight.name,
              );
            }
            values[k] = E4M3_VALUES[code] * s;
          }
        }
      }
      const u32 = new Uint32Array(values.buffer);
      yield { bytes: convertF32(u32, values.length, dtype, new Uint16Array(values.length)), values: values.length };
    }
  } finally {
    closeSync(fd);
  }
}

/** A scale tensor's values as f32. */
function scaleValues(t: TensorInfo<StoredDType>): Float32Array {
  const bytes = readBytes(t.file, t.offset, t.byteLength);
  if (t.dtype === "F32") return new Float32Array(bytes.buffer, bytes.byteOffset, t.byteLength / 4);
  const h = new Uint16Array(bytes.buffer, bytes.byteOffset, t.byteLength / 2);
  return Float32Array.from(h, t.dtype === "BF16" ? bf16ToF32 : f16ToF32);
}
