// The on-disk caches, all under $HIRE_CACHE_DIR (else ~/.cache/hire-studio): predictors/ (low-rank
// factors, int4/int8 copies) keyed by a hash of the source tensor's bytes plus the predictor
// settings, so a changed model, rank or group size never reuses a stale file; hashes/ (those tensor
// hashes, remembered per file identity, see tensorHash); onnx/ and gguf/ (the peers' exports) and
// imports/ (GGUF files imported as model folders) keyed by their input files' sizes and mtimes
// (`filesKey`).
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import type { Weight } from "../loader/safetensors.js";
import { QUANT_GROUP, quantFormatOf } from "../loader/weight-format.js";

export function cacheDir(kind: "predictors" | "onnx" | "gguf" | "hashes" | "imports" = "predictors"): string {
  return join(process.env.HIRE_CACHE_DIR ?? join(homedir(), ".cache", "hire-studio"), kind);
}

/** A short key over files' paths, sizes and mtimes plus `extra`: what an export is redone for. */
export function filesKey(files: string[], extra: unknown): string {
  const stamp = files
    .filter((f) => existsSync(f))
    .map((f) => {
      const s = statSync(f);
      return [f, s.size, s.mtimeMs];
    });
  return createHash("sha256").update(JSON.stringify({ stamp, extra })).digest("hex").slice(0, 16);
}

/**
 * sha256 of a byte range of a file (the tensor's stored bytes). Hashing reads the bytes (about 0.8 s
 * for the 1B model's gate matrices and head), so each result is remembered under the file's identity
 * (path, device, inode, size, mtime) and the range, in memory and in the cache's hashes/ folder, the
 * way git's index trusts a file's stat: a file rewritten keeps neither its mtime nor its stored hash.
 */
export function tensorHash(file: string, offset: number, byteLength: number): string {
  const st = statSync(file, { bigint: true });
  // A file modified in the last seconds may change again within its mtime's granularity ("racy
  // git"): hash it every time.
  if (Date.now() - Number(st.mtimeMs) < RACY_MS) return hashBytes(file, offset, byteLength);
  const identity = JSON.stringify([file, `${st.dev}`, `${st.ino}`, `${st.size}`, `${st.mtimeNs}`, offset, byteLength]);
  const memoKey = createHash("sha256").update(identity).digest("hex").slice(0, 32);
  const known = hashMemo.get(memoKey) ?? readStoredHash(memoKey);
  if (known) {
    hashMemo.set(memoKey, known);
    return known;
  }
  const hash = hashBytes(file, offset, byteLength);
  hashMemo.set(memoKey, hash);
  storeAtomically(join(cacheDir("hashes"), memoKey), (tmp) => writeFileSync(tmp, hash));
  return hash;
}

/**
 * What identifies a weight's values for the predictor cache: its stored bytes' hash, and for an int8
 * or int4 weight the hash of the file's tensor it was quantized from, marked with its format (its
 * predictor is built from the quantized values, not the file's).
 */
export function weightContentKey(w: Weight): string {
  const format = quantFormatOf(w.dtype);
  if (!format) return tensorHash(w.file, w.offset, w.byteLength);
  if (!w.stored) throw new Error(`${w.name}: a quantized weight without its stored tensor`);
  // int4 with mins (a GGUF's Q4_1 / Q4_K blocks) holds other values than int4 quantized here.
  const kind = w.dtype === "Q4M" ? "int4m" : format;
  return `${tensorHash(w.file, w.offset, w.stored.byteLength)}-${kind}g${QUANT_GROUP}`;
}

const hashMemo = new Map<string, string>();
const RACY_MS = 3000;

function readStoredHash(memoKey: string): string | undefined {
  try {
    const text = readFileSync(join(cacheDir("hashes"), memoKey), "utf8");
    return /^[0-9a-f]{32}$/.test(text) ? text : undefined;
  } catch {
    return undefined;
  }
}

/** sha256 of bytes [offset, offset + byteLength) of `file`, read in 16 MiB chunks. */
function hashBytes(file: string, offset: number, byteLength: number): string {
  const h = createHash("sha256");
  const fd = openSync(file, "r");
  try {
    const buf = Buffer.allocUnsafe(Math.min(byteLength, 16 << 20));
    for (let done = 0; done < byteLength;) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, byteLength - done), offset + done);
      if (n <= 0) throw new Error(`${file}: unexpected end while hashing a tensor`);
      h.update(buf.subarray(0, n));
      done += n;
    }
  } finally {
    closeSync(fd);
  }
  return h.digest("hex").slice(0, 32);
}

/** Float32 arrays stored under `key`, or undefined when absent or unreadable (then rebuilt). */
export function readCached(key: string, lengths: number[]): Float32Array[] | undefined {
  const file = cacheFile(key, "f32");
  if (!existsSync(file)) return undefined;
  try {
    const bytes = readFileSync(file);
    const total = lengths.reduce((a, b) => a + b, 0);
    if (bytes.length !== total * 4) return undefined;
    const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
    let at = 0;
    return lengths.map((n) => all.slice(at, (at += n)));
  } catch {
    return undefined;
  }
}

/** Store arrays under `key` atomically. Failures only cost a rebuild next time. */
export function writeCached(key: string, arrays: Float32Array[]): void {
  storeAtomically(cacheFile(key, "f32"), (tmp) =>
    writeFileSync(tmp, Buffer.concat(arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)))),
  );
}

/** The cache's path for `key` (the file may not exist). */
export function cacheFile(key: string, ext: string): string {
  return join(cacheDir(), `${key}.${ext}`);
}

/**
 * Write `file` through `write(tmp)` then rename, so a reader never sees half a file. A read-only
 * or full disk must not break inference: failures are swallowed (the next load rebuilds).
 */
export function storeAtomically(file: string, write: (tmp: string) => void): void {
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    mkdirSync(dirname(file), { recursive: true });
    write(tmp);
    renameSync(tmp, file);
  } catch {
    try {
      rmSync(tmp, { force: true });
    } catch {
      // the cache's folder is not a folder (or not ours): nothing was written to take back
    }
  }
}
