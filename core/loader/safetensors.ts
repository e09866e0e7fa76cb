// safetensors: header parsing and validation, and the weight store over one or more shards.
//
// Format: 8-byte little-endian header length N, N bytes of UTF-8 JSON
// { name: { dtype, shape, data_offsets: [begin, end] }, "__metadata__": {...} }, then the data.
// Offsets are relative to the end of the header. Everything is checked here, in TypeScript, before
// the native addon maps a single byte: a tensor handed to a kernel is known to lie inside its file.
import { closeSync, existsSync, openSync, readdirSync, readSync, fstatSync } from "node:fs";
import { freemem } from "node:os";
import { basename, dirname, join } from "node:path";
import { native, NativeDType, type NativeMapping } from "../native/addon.js";
import type { Weight as BackendWeight } from "../backend/backend.js";
import { ModelError } from "./errors.js";
import { decodeJson, isObject, readJsonFile } from "./json.js";

export type DType = "F32" | "F16" | "BF16";
export const DTYPE_BYTES: Record<DType, number> = { F32: 4, F16: 2, BF16: 2 };
/**
 * What a file may store beyond the loadable dtypes: FP8 (e4m3) weights, the I32 words of GPTQ, AWQ
 * and compressed-tensors checkpoints (and the latter's I64 shapes), bitsandbytes' U8 / I8 codes,
 * read only by their import (quantized-import.ts).
 */
export type StoredDType = DType | "F8_E4M3" | "I32" | "I64" | "U8" | "I8";
const STORED_BYTES: Record<StoredDType, number> = { ...DTYPE_BYTES, F8_E4M3: 1, I32: 4, I64: 8, U8: 1, I8: 1 };
const NATIVE_DTYPE: Record<DType, NativeDType> = {
  F32: NativeDType.F32,
  F16: NativeDType.F16,
  BF16: NativeDType.BF16,
};
/** Header JSON bigger than this is not a real checkpoint (real ones are well under 10 MB). */
export const MAX_HEADER_BYTES = 100 * 1024 * 1024;

export interface TensorInfo<D extends StoredDType = DType> {
  readonly name: string;
  readonly file: string;
  readonly dtype: D;
  readonly shape: readonly number[];
  /** Absolute byte offset in the file. */
  readonly offset: number;
  readonly byteLength: number;
}

export interface SafetensorsHeader<D extends StoredDType = DType> {
  readonly file: string;
  readonly fileSize: number;
  /** File offset of the data section (8 + header length): tensor offsets count from here. */
  readonly dataStart: number;
  readonly tensors: Map<string, TensorInfo<D>>;
}

/** Read and validate the header of one safetensors file (its tensors all of a loadable dtype). */
export function readSafetensorsHeader(file: string): SafetensorsHeader {
  return readHeader(file, DTYPE_BYTES);
}

/** readSafetensorsHeader for a file that may also hold quantized tensors (a quantized checkpoint, before its import). */
export function readStoredHeader(file: string): SafetensorsHeader<StoredDType> {
  return readHeader(file, STORED_BYTES);
}

function readHeader<D extends StoredDType>(file: string, accepted: Record<D, number>): SafetensorsHeader<D> {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch {
    throw new ModelError("NOT_FOUND", file, "weights file not found or unreadable");
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new ModelError("NOT_FOUND", file, "is a directory or device, not a weights file");
    const fileSize = st.size;
    if (fileSize < 8) {
      throw new ModelError("TRUNCATED", file, `file is ${fileSize} bytes, too short for a header`);
    }
    const lenBuf = Buffer.alloc(8);
    readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = lenBuf.readBigUInt64LE(0);
    if (headerLen > BigInt(MAX_HEADER_BYTES)) {
      throw new ModelError("BAD_HEADER", file, `header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
    }
    const n = Number(headerLen);
    if (8 + n > fileSize) {
      throw new ModelError(
        "TRUNCATED",
        file,
        `header claims ${n} bytes but the file has only ${fileSize - 8} after the length`,
      );
    }
    const headerBuf = Buffer.alloc(n);
    readSync(fd, headerBuf, 0, n, 8);
    const json = decodeJson(headerBuf, file, "safetensors header", "BAD_HEADER");
    if (!isObject(json)) throw new ModelError("BAD_HEADER", file, "header is not a JSON object");
    const dataStart = 8 + n;
    const dataSize = fileSize - dataStart;
    const tensors = new Map<string, TensorInfo<D>>();
    for (const [name, entry] of Object.entries(json)) {
      if (name === "__metadata__") continue;
      tensors.set(name, parseEntry(file, name, entry, dataStart, dataSize, accepted));
    }
    return { file, fileSize, dataStart, tensors };
  } finally {
    closeSync(fd);
  }
}

function parseEntry<D extends StoredDType>(
  file: string,
  name: string,
  entry: unknown,
  dataStart: number,
  dataSize: number,
  accepted: Record<D, number>,
): TensorInfo<D> {
  const bad = (detail: string) => new ModelError("BAD_HEADER", file, detail, name);
  if (!isObject(entry)) throw bad("entry is not an object");
  const { dtype, shape, data_offsets: offsets } = entry;
  if (typeof dtype !== "string") throw bad("missing dtype");
  if (!(dtype in accepted)) {
    const quantized =
      dtype in STORED_BYTES ? "; quantized checkpoints name their scheme in config.json's quantization_config" : "";
    throw new ModelError(
      "UNSUPPORTED_DTYPE",
      file,
      `dtype ${dtype} is not supported (F32, F16, BF16 are)${quantized}`,
      name,
    );
  }
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw bad("shape is not a list of non-negative integers");
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
    throw bad("data_offsets is not [begin, end]");
  }
  const [begin, end] = offsets as [number, number];
  const dims = shape as number[];
  const byteLength = dims.reduce((a, d) => a * d, 1) * accepted[dtype as D];
  if (end < begin || end - begin !== byteLength) {
    throw bad(
      `data_offsets [${begin}, ${end}] hold ${end - begin} bytes but ${dtype}${JSON.stringify(dims)} needs ${byteLength}`,
    );
  }
  if (end > dataSize) {
    // The header is self-consistent but the data stops early: a cut-off download or copy.
    throw new ModelError(
      begin >= dataSize ? "OFFSET_OUT_OF_RANGE" : "TRUNCATED",
      file,
      `tensor data [${begin}, ${end}) lies past the end of the data section (${dataSize} bytes)`,
      name,
    );
  }
  return { name, file, dtype: dtype as D, shape: dims, offset: dataStart + begin, byteLength };
}

/** A tensor ready for the backend: its description plus a native view into the mapped file. */
export interface Weight extends Omit<TensorInfo, "dtype">, BackendWeight {
  readonly byteLength: number;
  /**
   * Set on a weight computed at load rather than stored (Gemma's 1 + w norm vectors, f32): its
   * values, which readers of weight bytes (exporters) must use instead of the file's.
   */
  readonly values?: Float32Array;
  /** Set on a weight converted at load (int8 weights): the dtype and byte length of the tensor in its file. */
  readonly stored?: { readonly dtype: DType; readonly byteLength: number };
}

/**
 * All tensors of a checkpoint (one file or shards), each file read into memory by the native addon,
 * or mapped with `mmap: true` (see core/native/src/mapping.h for why reading in is the default).
 * `get` checks the shape the architecture expects, so a config/weights disagreement is reported
 * with the tensor's name instead of surfacing as garbage output.
 */
export class WeightStore {
  private readonly mappings = new Map<string, NativeMapping>();
  private closed = false;

  private constructor(
    readonly dir: string,
    readonly tensors: Map<string, TensorInfo>,
    private readonly inMemory: boolean,
    /** Each file's data section offset: read-in weights put it on a cache line (see mapping.h). */
    private readonly dataStarts: Map<string, number>,
  ) {}

  static open(dir: string, options: { mmap?: boolean } = {}): WeightStore {
    const files = weightFiles(dir);
    const tensors = new Map<string, TensorInfo>();
    const dataStarts = new Map<string, number>();
    let bytes = 0;
    for (const f of files) {
      const header = readSafetensorsHeader(f);
      for (const [name, info] of header.tensors) tensors.set(name, info);
      dataStarts.set(f, header.dataStart);
      bytes += header.fileSize;
    }
    return new WeightStore(dir, tensors, !(options.mmap ?? false) && readInFits(bytes, freemem()), dataStarts);
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (!t) throw new ModelError("MISSING_TENSOR", this.dir, "tensor not found in any weights file", name);
    return t;
  }

  /**
   * The tensor `name` with shape `shape` (1-D tensors are viewed as 1 × n).
   * `transposed` marks GPT-2 Conv1D weights stored [in, out]; `shape` is then given as [in, out].
   */
  get(name: string, shape: readonly number[], transposed = false): Weight {
    const t = this.info(name);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new ModelError(
        "SHAPE_MISMATCH",
        t.file,
        `shape ${JSON.stringify(t.shape)} does not match ${JSON.stringify(shape)} implied by config.json`,
        name,
      );
    }
    const [a, b] = shape.length === 1 ? [1, shape[0]] : [shape[0], shape[1]];
    const [rows, cols] = transposed ? [b, a] : [a, b];
    const handle = native().weight(this.mapping(t.file), t.offset, NATIVE_DTYPE[t.dtype], rows, cols, transposed);
    return { ...t, handle, rows, cols, transposed };
  }

  /**
   * Rows r0 .. r0+n of the tensor `name` as a weight of its own, without a copy: how fused checkpoints
   * (Phi-3's qkv_proj and gate_up_proj, GraniteMoE's experts stacked [experts, rows, cols]) give the
   * engine separate matrices. A tensor of more than two dimensions is seen as its rows (all but the
   * last dimension, flattened) by its columns. The view is named `name[r0:r1]` and covers exactly its
   * rows' bytes.
   */
  getRows(name: string, shape: readonly number[], r0: number, n: number): Weight {
    const t = this.info(name);
    if (shape.length < 2 || t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new ModelError(
        "SHAPE_MISMATCH",
        t.file,
        `shape ${JSON.stringify(t.shape)} does not match ${JSON.stringify(shape)} implied by config.json`,
        name,
      );
    }
    const cols = shape[shape.length - 1];
    const rows = shape.slice(0, -1).reduce((a, d) => a * d, 1);
    const rowBytes = cols * DTYPE_BYTES[t.dtype];
    if (!(Number.isSafeInteger(r0) && Number.isSafeInteger(n) && r0 >= 0 && n > 0 && r0 + n <= rows)) {
      throw new RangeError(`${name}: rows ${r0}..${r0 + n} are outside its ${rows} rows`);
    }
    const offset = t.offset + r0 * rowBytes;
    const handle = native().weight(this.mapping(t.file), offset, NATIVE_DTYPE[t.dtype], n, cols, false);
    return {
      ...t,
      name: `${name}[${r0}:${r0 + n}]`,
      shape: [n, cols],
      offset,
      byteLength: n * rowBytes,
      handle,
      rows: n,
      cols,
      transposed: false,
    };
  }

  /**
   * The dtype the weights are stored in, checked against config.json's torch_dtype (`expected`; none
   * named: no check, undefined). One-dimensional tensors (norm weights, biases) and tensors named by
   * `f32` may be F32 whatever it says (modules transformers keeps in float32, or a checkpoint saved
   * with them so; ArchDefinition.f32Tensors). Where every other tensor disagrees
   * with torch_dtype alike (a bf16 checkpoint whose config says float32), their dtype: transformers
   * loads such a checkpoint, casting, and reading the stored values is exact. Tensors of two dtypes
   * are DTYPE_MISMATCH, naming the one that disagrees with torch_dtype.
   */
  storedDType(expected: DType | undefined, configFile: string, f32?: RegExp): DType | undefined {
    if (!expected) return undefined;
    let first: TensorInfo | undefined;
    for (const t of this.tensors.values()) {
      if (t.dtype === "F32" && (t.shape.length === 1 || f32?.test(t.name))) continue;
      if (!first) first = t;
      else if (t.dtype !== first.dtype) {
        const odd = t.dtype === expected ? first : t;
        const other = odd === t ? first : t;
        throw new ModelError(
          "DTYPE_MISMATCH",
          odd.file,
          `dtype ${odd.dtype} disagrees with torch_dtype in ${basename(configFile)} (${expected}) and with ${other.name} (${other.dtype})`,
          odd.name,
        );
      }
    }
    return first?.dtype ?? expected;
  }

  /**
   * Another file the model's weights are made from (the GGUF file an import came from, see
   * core/gguf/block-weights.ts), mapped once; closed with the store, and its copies given back
   * counted in releasedBytes.
   */
  sourceMapping(file: string): NativeMapping {
    return this.mapping(file, false);
  }

  /** Bytes of read-in weights given back while other layouts serve them (Backend.releaseWeight). */
  releasedBytes(): number {
    let n = 0;
    for (const m of this.mappings.values()) n += native().releasedBytes(m);
    return n;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const m of this.mappings.values()) native().unmap(m);
    this.mappings.clear();
  }

  private mapping(file: string, inMemory = this.inMemory): NativeMapping {
    if (this.closed) throw new Error(`${this.dir}: weights were closed`);
    let m = this.mappings.get(file);
    if (!m) {
      m = native().mapFile(file, inMemory, this.dataStarts.get(file) ?? 0).mapping;
      this.mappings.set(file, m);
    }
    return m;
  }
}

/**
 * Whether weight files of `bytes` in all can be read into memory with `available` bytes free
 * (os.freemem: what the kernel can hand out, page cache included). Past that, reading in would end
 * in the OOM killer rather than an error, so such models are mapped instead, whatever was asked.
 */
export function readInFits(bytes: number, available: number): boolean {
  return bytes <= 0.75 * available;
}

/** The safetensors files of a model folder: the sharded index if present, else model.safetensors. */
export function weightFiles(dir: string): string[] {
  const index = join(dir, "model.safetensors.index.json");
  if (existsSync(index)) return indexShards(index);
  const single = join(dir, "model.safetensors");
  if (existsSync(single)) return [single];
  throw new ModelError(
    "NO_WEIGHTS",
    dir,
    "no model.safetensors or model.safetensors.index.json in this folder" + otherWeightsHint(dir),
  );
}

/**
 * The shard files a sharded checkpoint's index (model.safetensors.index.json,
 * pytorch_model.bin.index.json) names in its weight_map, each checked to be there.
 */
export function indexShards(index: string): string[] {
  const json = readJsonFile(index);
  if (!isObject(json) || !isObject(json.weight_map)) {
    throw new ModelError("BAD_JSON", index, "missing the weight_map object");
  }
  const shards = new Set<string>();
  for (const [tensor, shard] of Object.entries(json.weight_map)) {
    if (typeof shard !== "string" || shard.includes("/") || shard.includes("\\")) {
      throw new ModelError("BAD_JSON", index, `bad shard name ${JSON.stringify(shard)}`, tensor);
    }
    shards.add(shard);
  }
  const files = [...shards].sort().map((s) => join(dirname(index), s));
  for (const f of files) {
    if (!existsSync(f)) throw new ModelError("NOT_FOUND", f, `shard named in ${basename(index)} is missing`);
  }
  if (files.length === 0) throw new ModelError("NO_WEIGHTS", index, "weight_map is empty");
  return files;
}

/** What a folder holds instead of safetensors, and what reads it (older repos ship PyTorch's pickles). */
function otherWeightsHint(dir: string): string {
  const names = existsSync(dir) ? readdirSync(dir) : [];
  const pickles = names.filter((n) => /^pytorch_model.*\.bin$|\.pt$|\.pth$/.test(n));
  if (pickles.length > 0)
    return (
      `; it has ${pickles.slice(0, 3).join(", ")}${pickles.length > 3 ? ", ..." : ""} (PyTorch's pickle format), ` +
      `which the hire commands and the app import once as safetensors (modelFolderFor)`
    );
  const ggufs = names.filter((n) => n.toLowerCase().endsWith(".gguf"));
  if (ggufs.length > 0) return `; it has ${ggufs.join(", ")}: pass that file as the model`;
  return "";
}
