// Streaming safetensors writer (single file or sharded) plus exact f32 -> bf16 / f16 conversion.
//
// File format (https://github.com/huggingface/safetensors):
//   [u64 little-endian N][N bytes of JSON header, space-padded to a multiple of 8][tensor data]
//   header = { "<name>": { "dtype": "F32"|"F16"|"BF16", "shape": [...], "data_offsets": [begin, end] },
//              ..., "__metadata__": { "format": "pt" } }
//   Offsets are relative to the start of the data section; tensors are contiguous, in the order
//   given by the caller (we use the model's forward order so a reader touches the file front to back).
//
// Because every tensor's size is known from its shape, the header is written first and the data is
// then streamed chunk by chunk: nothing larger than one chunk is ever held in memory.
//
// Sharding (maxShardBytes): tensors are grouped greedily in order into files
// `model-0000i-of-0000N.safetensors` (a tensor larger than the limit gets a file of its own, as in
// transformers' save_pretrained) and `model.safetensors.index.json` maps every tensor to its file.
//
// To add a dtype: extend `StDType`, `DTYPE_BYTES`, and give `convertF32` a branch for it.

import { open, writeFile, type FileHandle } from "node:fs/promises";
import { endianness } from "node:os";
import { join } from "node:path";
import { writeFully } from "../loader/file-io.js";

export type StDType = "F32" | "F16" | "BF16";

export const DTYPE_BYTES: Readonly<Record<StDType, number>> = { F32: 4, F16: 2, BF16: 2 };

export interface TensorEntry {
  name: string;
  dtype: StDType;
  shape: readonly number[];
}

/** Header entry as it appears in a safetensors file. */
export interface HeaderEntry {
  dtype: string;
  shape: number[];
  data_offsets: [number, number];
}

export class SafetensorsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SafetensorsError";
  }
}

if (endianness() !== "LE") {
  // Float32Array/Uint16Array views are written as-is; safetensors is little-endian.
  throw new SafetensorsError("safetensors-writer assumes a little-endian host");
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function tensorBytes(t: TensorEntry): number {
  return numel(t.shape) * DTYPE_BYTES[t.dtype];
}

// ---------------------------------------------------------------------------------------------
// Header
// ---------------------------------------------------------------------------------------------

/** 8-byte length prefix + JSON header padded with spaces to a multiple of 8. */
export function buildHeader(
  tensors: readonly TensorEntry[],
  metadata: Record<string, string> = { format: "pt" },
): Buffer {
  const obj: Record<string, unknown> = {};
  let offset = 0;
  for (const t of tensors) {
    if (t.name in obj || t.name === "__metadata__") {
      throw new SafetensorsError(`duplicate or reserved tensor name: ${t.name}`);
    }
    const end = offset + tensorBytes(t);
    obj[t.name] = { dtype: t.dtype, shape: [...t.shape], data_offsets: [offset, end] };
    offset = end;
  }
  obj["__metadata__"] = metadata;
  const json = Buffer.from(JSON.stringify(obj), "utf8");
  const padded = Math.ceil(json.length / 8) * 8;
  const out = Buffer.alloc(8 + padded, 0x20);
  out.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(out, 8);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sharding
// ---------------------------------------------------------------------------------------------

export const SINGLE_FILE_NAME = "model.safetensors";
export const INDEX_FILE_NAME = "model.safetensors.index.json";

export function shardFileName(i: number, n: number): string {
  const pad = (x: number) => String(x).padStart(5, "0");
  return `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
}

/** Greedy in-order grouping; a shard never exceeds maxShardBytes unless it holds a single tensor. */
export function planShards(tensors: readonly TensorEntry[], maxShardBytes: number): TensorEntry[][] {
  const shards: TensorEntry[][] = [];
  let cur: TensorEntry[] = [];
  let curBytes = 0;
  for (const t of tensors) {
    const b = tensorBytes(t);
    if (cur.length > 0 && curBytes + b > maxShardBytes) {
      shards.push(cur);
      cur = [];
      curBytes = 0;
    }
    cur.push(t);
    curBytes += b;
  }
  if (cur.length > 0) shards.push(cur);
  return shards;
}

export interface ShardIndex {
  metadata: { total_size: number };
  weight_map: Record<string, string>;
}

export function buildShardIndex(shards: readonly (readonly TensorEntry[])[]): ShardIndex {
  const entries: [string, string][] = [];
  let total = 0;
  shards.forEach((shard, i) => {
    const file = shardFileName(i, shards.length);
    for (const t of shard) {
      entries.push([t.name, file]);
      total += tensorBytes(t);
    }
  });
  entries.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)); // transformers sorts keys
  return { metadata: { total_size: total }, weight_map: Object.fromEntries(entries) };
}

// ---------------------------------------------------------------------------------------------
// Streaming writer
// ---------------------------------------------------------------------------------------------

export interface WriterOptions {
  /** When set, shard into model-0000i-of-0000N.safetensors + model.safetensors.index.json. */
  maxShardBytes?: number;
  metadata?: Record<string, string>;
}

/**
 * Writes tensors into `dir` in the planned order. Usage:
 *   const w = new SafetensorsWriter(dir, tensors, opts);
 *   for (const t of tensors) { w.beginTensor(t.name); await w.write(chunk); ... }
 *   const files = await w.finish();
 * `write` resolves once the chunk is on its way to disk; the caller may reuse the chunk buffer only
 * after its promise resolved (double-buffer to overlap generation with I/O). Chunks never straddle
 * tensors; byte counts are checked.
 */
export class SafetensorsWriter {
  readonly shards: TensorEntry[][];
  readonly files: string[];
  readonly totalDataBytes: number;
  private shardOf = new Map<string, number>();
  private fh: FileHandle | null = null;
  private fhShard = -1;
  private pos = 0; // absolute write position in the current file
  private nextTensor = 0;
  private remaining = 0; // bytes still expected for the current tensor
  private order: TensorEntry[];
  private pending: Promise<unknown> = Promise.resolve(); // settles when all issued writes settled
  private failure: unknown = undefined; // first write error, rethrown by finish()

  constructor(
    private readonly dir: string,
    tensors: readonly TensorEntry[],
    private readonly opts: WriterOptions = {},
  ) {
    this.order = [...tensors];
    const max = opts.maxShardBytes;
    if (max !== undefined && !(Number.isFinite(max) && max > 0)) {
      throw new SafetensorsError(`maxShardBytes must be a positive number, got ${max}`);
    }
    this.shards = max === undefined ? [this.order] : planShards(this.order, max);
    const single = max === undefined;
    this.files = single ? [SINGLE_FILE_NAME] : this.shards.map((_, i) => shardFileName(i, this.shards.length));
    this.shards.forEach((s, i) => s.forEach((t) => this.shardOf.set(t.name, i)));
    this.totalDataBytes = this.order.reduce((a, t) => a + tensorBytes(t), 0);
  }

  /** Starts the next tensor; must be called in planned order. */
  async beginTensor(name: string): Promise<void> {
    if (this.remaining !== 0) {
      throw new SafetensorsError(`tensor ${this.order[this.nextTensor - 1].name} is incomplete`);
    }
    const t = this.order[this.nextTensor];
    if (!t || t.name !== name) {
      throw new SafetensorsError(`expected tensor ${t ? t.name : "(none)"}, got ${name}`);
    }
    const shard = this.shardOf.get(name)!;
    if (shard !== this.fhShard) await this.openShard(shard);
    this.nextTensor++;
    this.remaining = tensorBytes(t);
  }

  /** Appends bytes of the current tensor. */
  write(chunk: Uint8Array): Promise<unknown> {
    if (chunk.byteLength > this.remaining) {
      throw new SafetensorsError(
        `chunk of ${chunk.byteLength} bytes overflows tensor ${this.order[this.nextTensor - 1]?.name}`,
      );
    }
    this.remaining -= chunk.byteLength;
    const fh = this.fh!;
    const at = this.pos;
    this.pos += chunk.byteLength;
    // Writes use explicit positions, so issuing them while an earlier one is in flight is safe.
    const p = writeFully(fh, chunk, at, join(this.dir, this.files[this.fhShard]));
    const settled = p.catch((e: unknown) => {
      this.failure ??= e;
    });
    this.pending = Promise.all([this.pending, settled]);
    return p;
  }

  /** Closes the last file, writes the index when sharded; returns the file names written. */
  async finish(): Promise<string[]> {
    if (this.remaining !== 0 || this.nextTensor !== this.order.length) {
      throw new SafetensorsError(`finish() before all tensors were written`);
    }
    await this.pending;
    if (this.failure !== undefined) throw this.failure;
    await this.closeCurrent();
    if (this.order.length === 0) {
      // Still produce a valid (empty) file.
      await writeFile(join(this.dir, this.files[0]), buildHeader([], this.opts.metadata));
    }
    if (this.opts.maxShardBytes !== undefined) {
      const index = buildShardIndex(this.shards);
      await writeFile(join(this.dir, INDEX_FILE_NAME), JSON.stringify(index, null, 2) + "\n");
      return [...this.files, INDEX_FILE_NAME];
    }
    return [...this.files];
  }

  /** Best-effort close after an error. */
  async abort(): Promise<void> {
    await this.pending;
    await this.fh?.close().catch(() => undefined);
    this.fh = null;
  }

  private async openShard(i: number): Promise<void> {
    await this.pending;
    if (this.failure !== undefined) throw this.failure;
    await this.closeCurrent();
    const header = buildHeader(this.shards[i], this.opts.metadata);
    this.fh = await open(join(this.dir, this.files[i]), "w");
    this.fhShard = i;
    await writeFully(this.fh, header, 0, join(this.dir, this.files[i]));
    this.pos = header.length;
  }

  private async closeCurrent(): Promise<void> {
    if (this.fh) {
      await this.fh.close();
      this.fh = null;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Exact float conversion (inputs are IEEE float32 bit patterns)
// ---------------------------------------------------------------------------------------------

/** float32 bits -> bfloat16 bits, round-to-nearest-even; NaN stays NaN (quiet), inf stays inf. */
export function f32BitsToBf16(u: number): number {
  u >>>= 0;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x0040) & 0xffff;
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 bits -> IEEE binary16 bits, correctly rounded (nearest-even), with subnormals. */
export function f32BitsToF16(u: number): number {
  u >>>= 0;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  let mant = u & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x0200 | (mant >>> 13) : 0);
  const e = exp - 112; // rebias 127 -> 15
  if (e >= 0x1f) return sign | 0x7c00; // >= 2^16: overflow to infinity
  if (e <= 0) {
    if (e < -10) return sign; // < 2^-25: rounds to (signed) zero
    mant |= 0x800000;
    const shift = 14 - e; // 14..24
    const rest = mant & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    let m = mant >>> shift;
    if (rest > half || (rest === half && (m & 1) !== 0)) m++; // may carry into the smallest normal
    return sign | m;
  }
  const rest = mant & 0x1fff;
  let h = sign | (e << 10) | (mant >>> 13);
  if (rest > 0x1000 || (rest === 0x1000 && (h & 1) !== 0)) h++; // carry may reach infinity: correct
  return h;
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

export function f32ToBf16(x: number): number {
  f32Scratch[0] = x;
  return f32BitsToBf16(u32Scratch[0]);
}
export function f32ToF16(x: number): number {
  f32Scratch[0] = x;
  return f32BitsToF16(u32Scratch[0]);
}
export function bf16ToF32(h: number): number {
  u32Scratch[0] = (h & 0xffff) << 16;
  return f32Scratch[0];
}
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/**
 * Converts `n` float32 values (as their bit patterns in `src`) to the bytes of `dtype`.
 * Returns a byte view over `dst16` (16-bit dtypes) or over `src` itself (F32).
 */
export function convertF32(src: Uint32Array, n: number, dtype: StDType, dst16: Uint16Array): Uint8Array {
  if (dtype === "F32") return new Uint8Array(src.buffer, src.byteOffset, n * 4);
  if (dtype === "BF16") {
    for (let i = 0; i < n; i++) {
      const u = src[i];
      dst16[i] = (u & 0x7fffffff) > 0x7f800000 ? (u >>> 16) | 0x0040 : (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
    }
  } else {
    for (let i = 0; i < n; i++) dst16[i] = f32BitsToF16(src[i]);
  }
  return new Uint8Array(dst16.buffer, dst16.byteOffset, n * 2);
}
