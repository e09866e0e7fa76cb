// Quantized checkpoints: Hugging Face folders whose config.json names a quantization_config this
// engine can dequantize (FP8 in fp8.ts; GPTQ, AWQ and compressed-tensors' ints in gptq.ts;
// bitsandbytes in bitsandbytes.ts). No kernel here reads their codes, so such a folder is read
// through an import, as a GGUF file is (core/gguf/import.ts): each quantized matrix dequantized
// once, as its scheme's reference does, into a folder of plain tensors in the cache; every other
// tensor is copied as it is, and what the codes were made of (scales, zero points, group indices,
// activation scales) is dropped. Weights "auto" keeps such an import as int8 (weight-format.ts),
// near the checkpoint's size in memory, or as int4 where its codes are ggml blocks already (4-bit
// GPTQ and AWQ: Q4_0, or Q4_1 with zero points, written beside the tensors).
import {
  closeSync,
  copyFileSync,
  existsSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { buildHeader, convertF32, numel, tensorBytes, type TensorEntry } from "../modelgen/safetensors-writer.js";
import type { BlockSource } from "../gguf/block-weights.js";
import { isBlockTensor, type BlockTensor } from "../gguf/import.js";
import { GgmlTypeId } from "../gguf/quants.js";
import { ModelError } from "./errors.js";
import { byteRange, checkFreeSpace, moveIntoPlace, tempFolderFor, writeAll } from "./file-io.js";
import { bitsandbytesScheme } from "./bitsandbytes.js";
import { fp8Scheme } from "./fp8.js";
import { gptqScheme } from "./gptq.js";
import { isObject, readJsonFile } from "./json.js";
import { CHUNK_VALUES, isFloat, type DequantizedMatrix, type QuantScheme } from "./quant-scheme.js";
import { readStoredHeader, weightFiles, type DType, type StoredDType, type TensorInfo } from "./safetensors.js";
import { isWeightFormat, type WeightFormat } from "./weight-format.js";

/** Bumped when an import's output changes, so that cached imports are redone (2: Q4_1 blocks of codes with zero points). */
export const QUANTIZED_IMPORT_VERSION = 2;
/** Written into an import's folder: where it came from (quantizedImportRecord). */
export const QUANTIZED_IMPORT_RECORD = "quantized-import.json";

/**
 * The scheme of a quantization_config this engine imports, or undefined for any other (or none):
 * those stay refused by readModelConfig. A config of a known scheme this reader cannot follow is an
 * UNSUPPORTED_QUANTIZATION error naming `file`.
 */
export function quantScheme(q: unknown, file: string): QuantScheme | undefined {
  return fp8Scheme(q, file) ?? gptqScheme(q, file) ?? bitsandbytesScheme(q, file);
}

/** The scheme of the model folder `dir`'s config.json, or undefined when it is no quantized checkpoint it imports. */
export function quantSchemeOf(dir: string): QuantScheme | undefined {
  const file = join(dir, "config.json");
  if (!existsSync(file)) return undefined;
  const raw = readJsonFile(file);
  return isObject(raw) ? checkpointScheme(dir, raw, file).scheme : undefined;
}

/**
 * The scheme a checkpoint's config.json (`raw`, read from `file`) names, or a legacy AutoGPTQ
 * folder's quantize_config.json when config.json names none; with that folder's weights, if so.
 */
function checkpointScheme(
  dir: string,
  raw: Record<string, unknown>,
  file: string,
): { scheme: QuantScheme | undefined; legacy: ReturnType<typeof legacyGptq> } {
  const legacy = raw.quantization_config === undefined ? legacyGptq(dir) : undefined;
  const scheme = legacy
    ? quantScheme(legacy.quantizationConfig, legacy.file)
    : quantScheme(raw.quantization_config, file);
  return { scheme, legacy };
}

/**
 * A legacy AutoGPTQ folder (from before transformers read GPTQ): no quantization_config in
 * config.json, but a quantize_config.json (bits, group_size, desc_act, sym, …) and the weights in
 * `<model_file_base_name>.safetensors` (gptq_model-4bit-128g.safetensors, say) rather than
 * model.safetensors. Its quantization_config as transformers reads the same keys, and its weight
 * file; undefined for any other folder.
 */
export function legacyGptq(
  dir: string,
): { quantizationConfig: Record<string, unknown>; file: string; weights: string } | undefined {
  const file = join(dir, "quantize_config.json");
  if (
    !existsSync(file) ||
    existsSync(join(dir, "model.safetensors")) ||
    existsSync(join(dir, "model.safetensors.index.json"))
  )
    return undefined;
  const q = readJsonFile(file);
  if (!isObject(q)) throw new ModelError("BAD_JSON", file, "not a JSON object");
  const base = typeof q.model_file_base_name === "string" ? q.model_file_base_name : undefined;
  const candidates = readdirSync(dir).filter(
    (f) => f.endsWith(".safetensors") && (!base || f === `${base}.safetensors`),
  );
  if (candidates.length !== 1)
    throw new ModelError(
      "NO_WEIGHTS",
      file,
      base
        ? `model_file_base_name names ${base}.safetensors, which is not in the folder`
        : `a legacy AutoGPTQ folder needs one .safetensors file; it has ${candidates.length}`,
    );
  return { quantizationConfig: { ...q, quant_method: "gptq" }, file, weights: join(dir, candidates[0]) };
}

/** The safetensors files a quantized checkpoint's weights are in (a legacy AutoGPTQ folder's own name). */
export function checkpointWeightFiles(dir: string): string[] {
  const legacy = legacyGptq(dir);
  return legacy ? [legacy.weights] : weightFiles(dir);
}

/** One tensor of the import: a dequantized matrix, or a tensor copied as it is. */
export type ImportedTensor =
  ({ kind: "dequantize" } & DequantizedMatrix) | { kind: "copy"; entry: TensorEntry; source: TensorInfo<StoredDType> };

export interface QuantizedImportPlan {
  readonly method: string;
  /** What weights "auto" keeps the import as: int4+int8 when the config says the matrices' codes fit int4 blocks, else int8. */
  readonly autoWeights: WeightFormat;
  /** The blocks the config says every matrix's codes fit, if any (estimates count int4 weights from them). */
  readonly int4Blocks?: "Q4_0" | "Q4_1";
  /** config.json as the import writes it: without quantization_config. */
  readonly config: Record<string, unknown>;
  /** The dtype dequantized matrices are written in (config.json's torch_dtype; bf16 when it names none). */
  readonly dtype: DType;
  readonly tensors: readonly ImportedTensor[];
  /** How many tensors of each dtype the checkpoint stores (scales included). */
  readonly sourceTypes: Record<string, number>;
}

const TORCH_DTYPES: Record<string, DType> = { bfloat16: "BF16", float16: "F16", float32: "F32" };

/**
 * What importing the quantized checkpoint `dir` writes, from its config.json and safetensors headers
 * (no weights read); a tensor that does not fit its scheme is a ModelError naming the file and tensor.
 */
export function planQuantizedImport(dir: string): QuantizedImportPlan {
  const configFile = join(dir, "config.json");
  const raw = readJsonFile(configFile);
  if (!isObject(raw)) throw new ModelError("BAD_CONFIG", configFile, "config.json is not a JSON object");
  const { scheme, legacy } = checkpointScheme(dir, raw, configFile);
  if (!scheme)
    throw new ModelError("BAD_CONFIG", configFile, "quantization_config names no scheme this engine imports");
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
  for (const f of legacy ? [legacy.weights] : weightFiles(dir))
    for (const [name, t] of readStoredHeader(f).tensors) stored.set(name, t);
  const sourceTypes: Record<string, number> = {};
  for (const t of stored.values()) sourceTypes[t.dtype] = (sourceTypes[t.dtype] ?? 0) + 1;

  const { matrices, consumed } = scheme.matrices(stored, dtype);
  const tensors: ImportedTensor[] = matrices.map((m) => ({ kind: "dequantize", ...m }));
  for (const t of stored.values()) {
    if (consumed.has(t.name)) continue;
    if (!isFloat(t.dtype)) {
      throw new ModelError(
        "BAD_HEADER",
        t.file,
        `a ${t.dtype} tensor that no ${scheme.method} weight is made of`,
        t.name,
      );
    }
    tensors.push({ kind: "copy", entry: { name: t.name, dtype: t.dtype, shape: t.shape }, source: t });
  }
  // The checkpoint's order (its forward order, as written), so that the model reads front to back.
  const order = new Map<string, number>();
  for (const name of stored.keys()) order.set(name.replace(/\.(qweight|weight|weight_packed)$/, ""), order.size);
  const at = (name: string) => order.get(name.replace(/\.weight$/, "")) ?? order.size;
  tensors.sort((a, b) => at(a.entry.name) - at(b.entry.name));
  // The head and embedding such checkpoints keep in float are no blocks: int8 beside the blocks' int4.
  const autoWeights = scheme.int4Blocks ? "int4+int8" : "int8";
  return { method: scheme.method, autoWeights, int4Blocks: scheme.int4Blocks, config, dtype, tensors, sourceTypes };
}

export interface QuantizedImportRecord {
  /** The checkpoint folder the import was made from (which may be gone since). */
  source: string;
  quantMethod: string;
  sourceTypes: Record<string, number>;
  /**
   * What weights "auto" keeps the import as: int4+int8 when matrices' codes became int4 blocks (the
   * rest, the float head and embedding among them, as int8), else int8.
   */
  autoWeights: WeightFormat;
  /** The blocks the import wrote (INT4_BLOCKS, by matrix), as int8 / int4 weights take them (blockCopies). */
  blocks?: { size: number; mtimeMs: number; tensors: Record<string, BlockTensor> };
}

/** The file of Q4_0 / Q4_1 blocks an import writes beside its tensors. */
export const INT4_BLOCKS = "int4-blocks.bin";

/** A folder's QUANTIZED_IMPORT_RECORD, or undefined for a folder that is no such import. */
export function quantizedImportRecord(dir: string): QuantizedImportRecord | undefined {
  const file = join(dir, QUANTIZED_IMPORT_RECORD);
  if (!existsSync(file)) return undefined;
  try {
    const r: unknown = JSON.parse(readFileSync(file, "utf8"));
    if (!isObject(r) || typeof r.source !== "string" || typeof r.quantMethod !== "string") return undefined;
    const types = isObject(r.sourceTypes) ? r.sourceTypes : {};
    const sourceTypes = Object.fromEntries(Object.entries(types).filter(([, n]) => typeof n === "number"));
    const b = r.blocks;
    const ok = isObject(b) && typeof b.size === "number" && typeof b.mtimeMs === "number" && isObject(b.tensors);
    const tensors = ok
      ? Object.fromEntries(Object.entries(b.tensors as object).filter(([, t]) => isBlockTensor(t)))
      : {};
    return {
      source: r.source,
      quantMethod: r.quantMethod,
      sourceTypes: sourceTypes as Record<string, number>,
      // Never "file": the import's matrices are the checkpoint's codes, kept quantized.
      autoWeights: isWeightFormat(r.autoWeights) && r.autoWeights !== "file" ? r.autoWeights : "int8",
      ...(ok && { blocks: { size: b.size as number, mtimeMs: b.mtimeMs as number, tensors } }),
    };
  } catch {
    return undefined;
  }
}

/** The blocks a quantized checkpoint's import wrote, for blockCopies; undefined when it wrote none. */
export function quantizedBlockSource(dir: string, record: QuantizedImportRecord | undefined): BlockSource | undefined {
  if (!record?.blocks) return undefined;
  const { size, mtimeMs, tensors } = record.blocks;
  const from = `the ${record.quantMethod === "gptq" ? "GPTQ" : record.quantMethod} checkpoint's`;
  const file = join(dir, INT4_BLOCKS);
  return { file, size, mtimeMs, blocks: tensors, record: join(dir, QUANTIZED_IMPORT_RECORD), from };
}

/** Files an import does not copy: the weights it rewrites, and the checkpoint's config it replaces. */
const REWRITTEN = /(\.safetensors|\.safetensors\.index\.json|^config\.json|^quantize_config\.json)$/;

/**
 * Writes the quantized checkpoint `dir` as a model folder of plain tensors at `outDir` (atomically:
 * built beside it, then renamed), with the checkpoint's tokenizer and other files copied.
 */
export async function importQuantized(
  dir: string,
  outDir: string,
  opts: { onProgress?: (done: number, total: number) => void } = {},
): Promise<QuantizedImportPlan> {
  const plan = planQuantizedImport(dir);
  // At least the plain tensors' bytes (4-bit checkpoints' blocks come on top: about a quarter more).
  const header = buildHeader(
    plan.tensors.map((t) => t.entry),
    { format: "pt", source: basename(dir) },
  );
  checkFreeSpace(
    dirname(outDir),
    plan.tensors.reduce((a, t) => a + tensorBytes(t.entry), header.length),
    `importing ${basename(dir)}`,
  );
  const tmp = tempFolderFor(outDir);
  try {
    const total = plan.tensors.reduce((a, t) => a + numel(t.entry.shape), 0);
    let done = 0;
    const blocks: Record<string, BlockTensor> = {};
    let blockBytes = 0;
    const weightsFile = join(tmp, "model.safetensors");
    const blocksFile = join(tmp, INT4_BLOCKS);
    const out = openSync(weightsFile, "w");
    const blockFile = openSync(blocksFile, "w");
    try {
      writeAll(out, header, weightsFile);
      for (const t of plan.tensors) {
        for (const chunk of t.kind === "copy" ? copiedChunks(t.source) : roundedChunks(t, t.entry.dtype)) {
          writeAll(out, chunk.bytes, weightsFile);
          done += chunk.values;
          opts.onProgress?.(done, total);
          // Let the host's event loop send the progress (and answer other requests) between chunks.
          await new Promise((r) => setImmediate(r));
        }
        const int4 = t.kind === "dequantize" ? t.int4Blocks?.() : undefined;
        if (int4) {
          const [rows, cols] = t.entry.shape;
          blocks[t.entry.name] = { type: GgmlTypeId[int4.type], offset: blockBytes, rows, cols };
          writeAll(blockFile, int4.bytes, blocksFile);
          blockBytes += int4.bytes.byteLength;
        }
      }
    } finally {
      closeSync(out);
      closeSync(blockFile);
    }
    writeFileSync(join(tmp, "config.json"), JSON.stringify(plan.config, null, 2) + "\n");
    for (const name of readdirSync(dir)) {
      const f = join(dir, name);
      if (!REWRITTEN.test(name) && statSync(f).isFile()) copyFileSync(f, join(tmp, name));
    }
    const taken = Object.keys(blocks).length;
    if (taken === 0) rmSync(join(tmp, INT4_BLOCKS));
    const record: QuantizedImportRecord = {
      source: dir,
      quantMethod: plan.method,
      sourceTypes: plan.sourceTypes,
      autoWeights: taken > 0 ? "int4+int8" : "int8",
    };
    // The blocks' size and time, which a rename keeps; the record goes in with the folder.
    if (taken > 0) {
      const { size, mtimeMs } = statSync(join(tmp, INT4_BLOCKS));
      record.blocks = { size, mtimeMs, tensors: blocks };
    }
    const json = { ...record, importVersion: QUANTIZED_IMPORT_VERSION };
    writeFileSync(join(tmp, QUANTIZED_IMPORT_RECORD), JSON.stringify(json, null, 2) + "\n");
    moveIntoPlace(tmp, outDir);
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
  const per = t.byteLength / Math.max(1, numel(t.shape));
  for (const bytes of byteRange(t.file, t.offset, t.byteLength, CHUNK_VALUES))
    yield { bytes, values: bytes.byteLength / per };
}

/** A dequantized matrix's chunks in `dtype`: f32 values rounded to it (to nearest even, as torch casts), or its bits as given. */
function* roundedChunks(m: DequantizedMatrix, dtype: DType): Generator<Chunk> {
  for (const values of m.chunks()) {
    if (values instanceof Uint16Array) {
      yield { bytes: new Uint8Array(values.buffer, values.byteOffset, values.byteLength), values: values.length };
      continue;
    }
    const u32 = new Uint32Array(values.buffer, values.byteOffset, values.length);
    yield { bytes: convertF32(u32, values.length, dtype, new Uint16Array(values.length)), values: values.length };
  }
}
