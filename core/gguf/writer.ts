// A small GGUF v3 writer (the llama.cpp file format): header, typed metadata, tensor infos, then
// the tensor data, each tensor aligned. @huggingface/gguf reads GGUF (tests use it to check our
// files) but only serializes metadata, so tensor infos and data are written here.
//
// Layout (little-endian):
//   "GGUF"  u32 version (3)  u64 tensor_count  u64 kv_count
//   kv_count × { string key, u32 value_type, value }          string = u64 byte length + UTF-8
//   tensor_count × { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//   zero padding to `alignment`, then the data; each tensor's offset (relative to the start of
//   the data) is a multiple of `alignment`, and the file ends padded to it.
// Dimensions are in ggml order: ne[0] is the contiguous one, so a row-major [rows, cols] matrix
// is written as ne = [cols, rows].
import { open, type FileHandle } from "node:fs/promises";
import { writeError, writeFully } from "../loader/file-io.js";

export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** Metadata value types (gguf.h `enum gguf_type`). */
export enum GgufType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

/** The tensor types this writer emits (ggml.h `enum ggml_type`). */
export enum GgmlType {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q5_0 = 6,
  Q8_0 = 8,
  Q4_K = 12,
  Q6_K = 14,
  BF16 = 30,
}

/** Values and bytes per block of each type (a float type's block is one value). */
export const GGML_TYPE_BLOCKS: Record<GgmlType, { values: number; bytes: number }> = {
  [GgmlType.F32]: { values: 1, bytes: 4 },
  [GgmlType.F16]: { values: 1, bytes: 2 },
  [GgmlType.Q4_0]: { values: 32, bytes: 18 },
  [GgmlType.Q5_0]: { values: 32, bytes: 22 },
  [GgmlType.Q8_0]: { values: 32, bytes: 34 },
  [GgmlType.Q4_K]: { values: 256, bytes: 144 },
  [GgmlType.Q6_K]: { values: 256, bytes: 210 },
  [GgmlType.BF16]: { values: 1, bytes: 2 },
};

type Scalar = number | bigint | boolean | string;
type ScalarType = Exclude<GgufType, GgufType.ARRAY>;

/** One metadata value; build them with the `kv` helpers. */
export type GgufValue =
  | { readonly type: ScalarType; readonly value: Scalar }
  | { readonly type: GgufType.ARRAY; readonly itemType: ScalarType; readonly value: readonly Scalar[] };

export const kv = {
  u32: (value: number): GgufValue => ({ type: GgufType.UINT32, value }),
  i32: (value: number): GgufValue => ({ type: GgufType.INT32, value }),
  u64: (value: number | bigint): GgufValue => ({ type: GgufType.UINT64, value }),
  f32: (value: number): GgufValue => ({ type: GgufType.FLOAT32, value }),
  bool: (value: boolean): GgufValue => ({ type: GgufType.BOOL, value }),
  str: (value: string): GgufValue => ({ type: GgufType.STRING, value }),
  strings: (value: readonly string[]): GgufValue => ({ type: GgufType.ARRAY, itemType: GgufType.STRING, value }),
  i32s: (value: readonly number[]): GgufValue => ({ type: GgufType.ARRAY, itemType: GgufType.INT32, value }),
  f32s: (value: readonly number[]): GgufValue => ({ type: GgufType.ARRAY, itemType: GgufType.FLOAT32, value }),
};

export type GgufMetadata = ReadonlyMap<string, GgufValue> | Readonly<Record<string, GgufValue>>;

export interface GgufTensorInfo {
  readonly name: string;
  readonly type: GgmlType;
  /** ggml order: dims[0] is the contiguous (fastest-varying) dimension. */
  readonly dims: readonly number[];
}

export interface GgufLayout {
  /** Everything before the tensor data, padding included. */
  readonly header: Buffer;
  /** Each tensor's offset relative to the start of the data section. */
  readonly offsets: readonly number[];
  readonly byteLengths: readonly number[];
  readonly alignment: number;
  /** Size of the whole file. */
  readonly fileBytes: number;
}

export class GgufWriteError extends Error {
  override readonly name = "GgufWriteError";
}

const pad = (n: number, a: number) => Math.ceil(n / a) * a;

export function tensorByteLength(t: GgufTensorInfo): number {
  const b = GGML_TYPE_BLOCKS[t.type];
  return (t.dims.reduce((a, d) => a * d, 1) / b.values) * b.bytes;
}

/** Grows as bytes are appended; little-endian throughout. */
class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private reserve(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.length + n));
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u32(x: number): void {
    this.reserve(4);
    this.buf.writeUInt32LE(x, this.length);
    this.length += 4;
  }
  u64(x: number | bigint): void {
    this.reserve(8);
    this.buf.writeBigUInt64LE(BigInt(x), this.length);
    this.length += 8;
  }
  scalar(type: ScalarType, v: Scalar, key: string): void {
    const bad = () =>
      new GgufWriteError(`metadata "${key}": ${JSON.stringify(String(v))} is not a valid ${GgufType[type]}`);
    if (type === GgufType.STRING) {
      if (typeof v !== "string") throw bad();
      const bytes = Buffer.from(v, "utf8");
      this.u64(bytes.length);
      this.reserve(bytes.length);
      bytes.copy(this.buf, this.length);
      this.length += bytes.length;
      return;
    }
    if (type === GgufType.BOOL) {
      if (typeof v !== "boolean") throw bad();
      this.reserve(1);
      this.buf.writeUInt8(v ? 1 : 0, this.length);
      this.length += 1;
      return;
    }
    if (type === GgufType.UINT64 || type === GgufType.INT64) {
      if (typeof v !== "number" && typeof v !== "bigint") throw bad();
      if (typeof v === "number" && !Number.isSafeInteger(v)) throw bad();
      this.reserve(8);
      if (type === GgufType.UINT64) this.buf.writeBigUInt64LE(BigInt(v), this.length);
      else this.buf.writeBigInt64LE(BigInt(v), this.length);
      this.length += 8;
      return;
    }
    if (typeof v !== "number") throw bad();
    if (type !== GgufType.FLOAT32 && type !== GgufType.FLOAT64 && !Number.isInteger(v)) throw bad();
    try {
      switch (type) {
        case GgufType.UINT8:
          this.reserve(1);
          this.length = this.buf.writeUInt8(v, this.length);
          return;
        case GgufType.INT8:
          this.reserve(1);
          this.length = this.buf.writeInt8(v, this.length);
          return;
        case GgufType.UINT16:
          this.reserve(2);
          this.length = this.buf.writeUInt16LE(v, this.length);
          return;
        case GgufType.INT16:
          this.reserve(2);
          this.length = this.buf.writeInt16LE(v, this.length);
          return;
        case GgufType.UINT32:
          this.reserve(4);
          this.length = this.buf.writeUInt32LE(v, this.length);
          return;
        case GgufType.INT32:
          this.reserve(4);
          this.length = this.buf.writeInt32LE(v, this.length);
          return;
        case GgufType.FLOAT32:
          this.reserve(4);
          this.length = this.buf.writeFloatLE(v, this.length);
          return;
        case GgufType.FLOAT64:
          this.reserve(8);
          this.length = this.buf.writeDoubleLE(v, this.length);
          return;
      }
    } catch (e) {
      // Buffer's range checks (an integer out of range for its type, a fraction for an integer).
      if (e instanceof RangeError) throw bad();
      throw e;
    }
  }
  string(s: string): void {
    this.scalar(GgufType.STRING, s, "(string)");
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function entries(m: GgufMetadata): [string, GgufValue][] {
  return m instanceof Map ? [...m.entries()] : Object.entries(m as Record<string, GgufValue>);
}

/** Serializes the header and computes where every tensor's data goes. */
export function ggufLayout(
  metadata: GgufMetadata,
  tensors: readonly GgufTensorInfo[],
  alignment = GGUF_DEFAULT_ALIGNMENT,
): GgufLayout {
  if (!Number.isInteger(alignment) || alignment <= 0 || alignment % 8 !== 0) {
    throw new GgufWriteError(`alignment must be a positive multiple of 8, got ${alignment}`);
  }
  const kvs = entries(metadata);
  if (kvs.some(([k]) => k === "general.alignment")) {
    throw new GgufWriteError(`"general.alignment" is set by the writer (pass the alignment option)`);
  }
  if (alignment !== GGUF_DEFAULT_ALIGNMENT) kvs.push(["general.alignment", kv.u32(alignment)]);
  const names = new Set<string>();
  for (const t of tensors) {
    if (names.has(t.name)) throw new GgufWriteError(`tensor "${t.name}" is listed twice`);
    names.add(t.name);
    if (t.dims.length < 1 || t.dims.length > 4 || !t.dims.every((d) => Number.isSafeInteger(d) && d > 0)) {
      throw new GgufWriteError(`tensor "${t.name}": dims ${JSON.stringify(t.dims)} must be 1 to 4 positive integers`);
    }
    if (!(t.type in GGML_TYPE_BLOCKS)) throw new GgufWriteError(`tensor "${t.name}": unsupported ggml type ${t.type}`);
    if (t.dims[0] % GGML_TYPE_BLOCKS[t.type].values !== 0) {
      throw new GgufWriteError(`tensor "${t.name}": rows of ${t.dims[0]} are not whole blocks of its type`);
    }
  }

  const s = new ByteSink();
  s.u32(0x46554747); // "GGUF"
  s.u32(GGUF_VERSION);
  s.u64(tensors.length);
  s.u64(kvs.length);
  for (const [key, v] of kvs) {
    s.string(key);
    s.u32(v.type);
    if (v.type === GgufType.ARRAY) {
      s.u32(v.itemType);
      s.u64(v.value.length);
      for (const x of v.value) s.scalar(v.itemType, x, key);
    } else {
      s.scalar(v.type, v.value, key);
    }
  }
  const offsets: number[] = [];
  const byteLengths: number[] = [];
  let offset = 0;
  for (const t of tensors) {
    s.string(t.name);
    s.u32(t.dims.length);
    for (const d of t.dims) s.u64(d);
    s.u32(t.type);
    s.u64(offset);
    offsets.push(offset);
    const n = tensorByteLength(t);
    byteLengths.push(n);
    offset = pad(offset + n, alignment);
  }
  const headerBytes = pad(s.length, alignment);
  const header = Buffer.alloc(headerBytes);
  s.bytes().copy(header);
  return { header, offsets, byteLengths, alignment, fileBytes: headerBytes + offset };
}

/**
 * Streams a GGUF file: the header on open, then each tensor's bytes in the order the tensors were
 * listed (in as many `write` calls as convenient), then `close`. Writing the wrong number of
 * bytes for a tensor, or closing early, is an error; on any error the partial file is left for
 * the caller to remove.
 */
export class GgufFileWriter {
  private tensor = 0;
  private written = 0; // bytes of the current tensor
  private position: number;

  private constructor(
    private readonly fh: FileHandle,
    private readonly file: string,
    readonly layout: GgufLayout,
    private readonly tensors: readonly GgufTensorInfo[],
  ) {
    this.position = layout.header.length;
  }

  static async open(
    file: string,
    metadata: GgufMetadata,
    tensors: readonly GgufTensorInfo[],
    alignment = GGUF_DEFAULT_ALIGNMENT,
  ): Promise<GgufFileWriter> {
    const layout = ggufLayout(metadata, tensors, alignment);
    const fh = await open(file, "w").catch((e: unknown) => {
      throw writeError(e, file);
    });
    try {
      await writeFully(fh, layout.header, 0, file);
    } catch (e) {
      await fh.close();
      throw e;
    }
    return new GgufFileWriter(fh, file, layout, tensors);
  }

  /** The tensor the next `write` belongs to, or undefined when all are written. */
  get current(): GgufTensorInfo | undefined {
    return this.tensors[this.tensor];
  }

  async write(bytes: Uint8Array): Promise<void> {
    let src = bytes;
    while (src.length > 0) {
      const t = this.tensors[this.tensor];
      if (!t) throw new GgufWriteError(`${src.length} bytes written after the last tensor`);
      const need = this.layout.byteLengths[this.tensor] - this.written;
      const part = src.subarray(0, need);
      await writeFully(this.fh, part, this.position, this.file);
      this.position += part.length;
      this.written += part.length;
      src = src.subarray(part.length);
      if (this.written === this.layout.byteLengths[this.tensor]) this.nextTensor();
    }
  }

  private nextTensor(): void {
    this.tensor++;
    this.written = 0;
    // The gap is zero padding: writing past it (or truncate() in close) fills it with zeros.
    this.position =
      this.tensor < this.tensors.length
        ? this.layout.header.length + this.layout.offsets[this.tensor]
        : this.layout.fileBytes;
  }

  async close(): Promise<void> {
    try {
      if (this.tensor < this.tensors.length) {
        throw new GgufWriteError(
          `closed after ${this.tensor} of ${this.tensors.length} tensors (next: "${this.tensors[this.tensor].name}")`,
        );
      }
      await this.fh.truncate(this.layout.fileBytes).catch((e: unknown) => {
        throw writeError(e, this.file);
      }); // trailing padding
    } finally {
      await this.fh.close();
    }
  }

  /** Closes without the completeness check (after a failure). */
  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
  }
}
