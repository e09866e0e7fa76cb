// PyTorch checkpoints (pytorch_model.bin, sharded with pytorch_model.bin.index.json: what older
// Hugging Face repos hold instead of safetensors) imported once into a model folder of safetensors,
// like GGUF files and quantized checkpoints (model-source.ts). A torch.save file is a zip (read with
// yauzl) of stored, uncompressed entries: data.pkl, a pickle of the state dict, and data/<key>, each
// tensor storage's raw bytes. Pickles can run code when Python loads them, so the pickle is not
// "loaded" here: a restricted reader walks its opcodes and accepts only what a state dict is made of
// (OrderedDict, torch._utils._rebuild_tensor_v2 / _rebuild_parameter, storages named by their
// types); anything else is BAD_CHECKPOINT naming the file.
import {
  closeSync,
  copyFileSync,
  existsSync,
  fstatSync,
  openSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import yauzl from "yauzl";
import { ModelError } from "./errors.js";
import { byteRange, checkFreeSpace, moveIntoPlace, readBytes, readFully, tempFolderFor, writeAll } from "./file-io.js";
import { isObject, readJsonFile } from "./json.js";
import {
  buildHeader,
  DTYPE_BYTES,
  tensorBytes,
  type StDType,
  type TensorEntry,
} from "../modelgen/safetensors-writer.js";
import { indexShards } from "./safetensors.js";

/** Bumped when the import's output changes, so that older imports are redone. */
export const PYTORCH_IMPORT_VERSION = 1;
export const PYTORCH_IMPORT_RECORD = "pytorch-import.json";

/**
 * A model folder's PyTorch checkpoint files: with its config.json, and no safetensors (those win, as
 * transformers prefers them).
 */
export function pytorchFiles(dir: string): string[] | undefined {
  if (
    !existsSync(join(dir, "config.json")) ||
    existsSync(join(dir, "model.safetensors")) ||
    existsSync(join(dir, "model.safetensors.index.json"))
  )
    return undefined;
  const index = join(dir, "pytorch_model.bin.index.json");
  if (existsSync(index)) return indexShards(index);
  const single = join(dir, "pytorch_model.bin");
  return existsSync(single) ? [single] : undefined;
}

/** The record an import leaves (its source folder), or undefined for other folders. */
export function pytorchImportRecord(dir: string): { source: string; importVersion: number } | undefined {
  const file = join(dir, PYTORCH_IMPORT_RECORD);
  if (!existsSync(file)) return undefined;
  const json = readJsonFile(file);
  return isObject(json) && typeof json.source === "string" && typeof json.importVersion === "number"
    ? { source: json.source, importVersion: json.importVersion }
    : undefined;
}

// ---------------------------------------------------------------------------------------------
// The zip
// ---------------------------------------------------------------------------------------------

/** Where each entry's bytes lie in the file (torch stores them uncompressed). */
async function zipEntries(file: string): Promise<Map<string, { offset: number; size: number }>> {
  const bad = (detail: string) => new ModelError("BAD_CHECKPOINT", file, detail);
  // torch.save before 1.6 wrote a bare pickle stream (it starts with the pickle PROTO opcode).
  if (readBytes(file, 0, Math.min(2, statSync(file).size))[0] === 0x80)
    throw bad("saved in torch's legacy format (before 1.6, not a zip), which is not read; torch.save it again");
  const zip = await new Promise<yauzl.ZipFile>((resolve, reject) =>
    yauzl.open(file, { lazyEntries: true, autoClose: false }, (e, z) =>
      e ? reject(bad(`not a PyTorch checkpoint (zip: ${e.message})`)) : resolve(z),
    ),
  );
  const raw: yauzl.Entry[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      zip.on("entry", (e: yauzl.Entry) => {
        raw.push(e);
        zip.readEntry();
      });
      zip.on("end", () => resolve());
      zip.on("error", (e: Error) => reject(bad(`not a PyTorch checkpoint (zip: ${e.message})`)));
      zip.readEntry();
    });
  } finally {
    zip.close();
  }
  const fd = openSync(file, "r");
  try {
    const fileSize = fstatSync(fd).size;
    const entries = new Map<string, { offset: number; size: number }>();
    const local = Buffer.alloc(30);
    for (const e of raw) {
      if (e.compressionMethod !== 0) throw bad(`zip entry ${e.fileName} is compressed; torch.save never compresses`);
      readFully(fd, local, e.relativeOffsetOfLocalHeader, file);
      if (local.readUInt32LE(0) !== 0x04034b50) throw bad(`zip entry ${e.fileName} has no local header`);
      const offset = e.relativeOffsetOfLocalHeader + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
      if (offset + e.uncompressedSize > fileSize) throw bad(`zip entry ${e.fileName} runs past the end of the file`);
      entries.set(e.fileName, { offset, size: e.uncompressedSize });
    }
    return entries;
  } finally {
    closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// The pickle
// ---------------------------------------------------------------------------------------------

const STORAGE_DTYPES: Record<string, StDType | "skip" | undefined> = {
  FloatStorage: "F32",
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  // Buffers a model keeps beside its weights (position ids, masks): not weights, left out.
  LongStorage: "skip",
  IntStorage: "skip",
  ShortStorage: "skip",
  CharStorage: "skip",
  ByteStorage: "skip",
  BoolStorage: "skip",
};

interface Global {
  global: string;
}
interface Storage {
  storage: { key: string; dtype: StDType | "skip"; numel: number };
}
/** A tensor as _rebuild_tensor_v2 describes it: a view of a storage. */
export interface TensorRef {
  storage: Storage["storage"];
  /** Elements into the storage. */
  offset: number;
  shape: number[];
  stride: number[];
}
const isGlobal = (v: unknown): v is Global => isObject(v) && typeof v.global === "string";
const isStorage = (v: unknown): v is Storage => isObject(v) && isObject(v.storage);
const isTensor = (v: unknown): v is { tensor: TensorRef } => isObject(v) && isObject(v.tensor);

/**
 * The state dict a torch.save pickle describes: tensor name → view of a storage. Only the opcodes and
 * the callables a state dict is built with are accepted (see the file's head).
 */
export function readStateDict(pkl: Uint8Array, file: string): Map<string, TensorRef> {
  const bad = (detail: string) => new ModelError("BAD_CHECKPOINT", file, detail);
  const view = new DataView(pkl.buffer, pkl.byteOffset, pkl.byteLength);
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const stack: unknown[] = [];
  const marks: number[] = [];
  const memo = new Map<number, unknown>();
  let at = 0;
  const need = (n: number) => {
    if (at + n > pkl.length) throw bad("its pickle (data.pkl) ends mid-way");
  };
  const u8 = () => (need(1), pkl[at++]);
  const u16 = () => (need(2), (at += 2), view.getUint16(at - 2, true));
  const u32 = () => (need(4), (at += 4), view.getUint32(at - 4, true));
  const i32 = () => (need(4), (at += 4), view.getInt32(at - 4, true));
  const bytes = (n: number) => (need(n), (at += n), pkl.subarray(at - n, at));
  const text = (n: number) => {
    try {
      return utf8.decode(bytes(n));
    } catch {
      throw bad("its pickle has a string that is not UTF-8");
    }
  };
  const line = () => {
    const end = pkl.indexOf(0x0a, at);
    if (end < 0) throw bad("its pickle (data.pkl) ends mid-way");
    const s = new TextDecoder().decode(pkl.subarray(at, end));
    at = end + 1;
    return s;
  };
  const pop = () => {
    if (stack.length === 0) throw bad("its pickle pops an empty stack");
    return stack.pop();
  };
  const popMark = () => {
    const m = marks.pop();
    if (m === undefined) throw bad("its pickle closes a mark it never opened");
    return stack.splice(m);
  };
  const setItems = (dict: unknown, items: unknown[]) => {
    if (!(dict instanceof Map)) throw bad("its pickle sets items on something that is not a dict");
    for (let i = 0; i + 1 < items.length; i += 2) dict.set(items[i], items[i + 1]);
  };
  const call = (fn: unknown, args: unknown): unknown => {
    if (!isGlobal(fn) || !Array.isArray(args)) throw bad("its pickle calls something that is not a named function");
    switch (fn.global) {
      case "collections.OrderedDict":
        return new Map();
      case "torch._utils._rebuild_tensor_v2": {
        const [storage, offset, shape, stride] = args as [unknown, unknown, unknown, unknown];
        const ints = (v: unknown) => Array.isArray(v) && v.every((x) => Number.isSafeInteger(x) && (x as number) >= 0);
        if (!isStorage(storage) || !Number.isSafeInteger(offset) || !ints(shape) || !ints(stride))
          throw bad("a tensor in its pickle is not (storage, offset, size, stride)");
        return { tensor: { storage: storage.storage, offset, shape, stride } as TensorRef };
      }
      case "torch._utils._rebuild_parameter":
        return args[0];
      default:
        throw bad(`its pickle calls ${fn.global}, which a state dict never does (not loaded: pickles can run code)`);
    }
  };
  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80: // PROTO
        u8();
        break;
      case 0x95: // FRAME
        bytes(8);
        break;
      case 0x2e: {
        // STOP
        const top = pop();
        if (!(top instanceof Map)) throw bad("its pickle is not a state dict (a dict of tensors)");
        const out = new Map<string, TensorRef>();
        for (const [k, v] of top) {
          if (typeof k !== "string" || !isTensor(v))
            throw bad(`its state dict holds ${JSON.stringify(String(k))}, which is not a tensor`);
          out.set(k, v.tensor);
        }
        return out;
      }
      case 0x28: // MARK
        marks.push(stack.length);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x5d: // EMPTY_LIST
        stack.push([]);
        break;
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x74: // TUPLE
        stack.push(popMark());
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: {
        // TUPLE2
        const b = pop();
        stack.push([pop(), b]);
        break;
      }
      case 0x87: {
        // TUPLE3
        const c = pop();
        const b = pop();
        stack.push([pop(), b, c]);
        break;
      }
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4a: // BININT
        stack.push(i32());
        break;
      case 0x4b: // BININT1
        stack.push(u8());
        break;
      case 0x4d: // BININT2
        stack.push(u16());
        break;
      case 0x8a: {
        // LONG1: a little-endian two's complement integer of n bytes
        const b = bytes(u8());
        let v = 0n;
        for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]);
        if (b.length > 0 && b[b.length - 1] & 0x80) v -= 1n << BigInt(8 * b.length);
        if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < -BigInt(Number.MAX_SAFE_INTEGER))
          throw bad("its pickle has an integer past 2^53");
        stack.push(Number(v));
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(view.getFloat64(at, false));
        at += 8;
        break;
      case 0x58: // BINUNICODE
        stack.push(text(u32()));
        break;
      case 0x8c: // SHORT_BINUNICODE
        stack.push(text(u8()));
        break;
      case 0x42: // BINBYTES
        stack.push(bytes(u32()));
        break;
      case 0x43: // SHORT_BINBYTES
        stack.push(bytes(u8()));
        break;
      case 0x71: // BINPUT
        memo.set(u8(), stack[stack.length - 1]);
        break;
      case 0x72: // LONG_BINPUT
        memo.set(u32(), stack[stack.length - 1]);
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, stack[stack.length - 1]);
        break;
      case 0x68: // BINGET
      case 0x6a: {
        // LONG_BINGET
        const i = op === 0x68 ? u8() : u32();
        if (!memo.has(i)) throw bad("its pickle refers to a memo entry it never made");
        stack.push(memo.get(i));
        break;
      }
      case 0x63: {
        // GLOBAL: "module\nname\n"
        const module = line();
        stack.push({ global: `${module}.${line()}` });
        break;
      }
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof name !== "string" || typeof module !== "string") throw bad("its pickle names a global oddly");
        stack.push({ global: `${module}.${name}` });
        break;
      }
      case 0x51: {
        // BINPERSID: ("storage", storage type, key, location, numel)
        const pid = pop();
        const [kind, type, key, , numel] = Array.isArray(pid) ? pid : [];
        const dtype =
          isGlobal(type) && type.global.startsWith("torch.") ? STORAGE_DTYPES[type.global.slice(6)] : undefined;
        if (kind !== "storage" || typeof key !== "string" || !Number.isSafeInteger(numel))
          throw bad("its pickle refers to a storage oddly");
        if (!dtype)
          throw new ModelError(
            "UNSUPPORTED_DTYPE",
            file,
            `a tensor is stored as ${isGlobal(type) ? type.global : "?"}; F32, F16 and BF16 load`,
          );
        stack.push({ storage: { key, dtype, numel } });
        break;
      }
      case 0x52: {
        // REDUCE
        const args = pop();
        stack.push(call(pop(), args));
        break;
      }
      case 0x62: // BUILD: state set on an object (an OrderedDict's, a parameter's hooks); nothing to keep
        pop();
        break;
      case 0x73: {
        // SETITEM
        const v = pop();
        const k = pop();
        setItems(stack[stack.length - 1], [k, v]);
        break;
      }
      case 0x75: {
        // SETITEMS
        const items = popMark();
        setItems(stack[stack.length - 1], items);
        break;
      }
      case 0x61: {
        // APPEND
        const v = pop();
        const list = stack[stack.length - 1];
        if (!Array.isArray(list)) throw bad("its pickle appends to something that is not a list");
        list.push(v);
        break;
      }
      case 0x65: {
        // APPENDS
        const items = popMark();
        const list = stack[stack.length - 1];
        if (!Array.isArray(list)) throw bad("its pickle appends to something that is not a list");
        list.push(...items);
        break;
      }
      default:
        throw bad(`its pickle uses opcode 0x${op.toString(16)} at byte ${at - 1}, which a state dict does not`);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The import
// ---------------------------------------------------------------------------------------------

interface PlannedTensor {
  entry: TensorEntry;
  file: string;
  /** Absolute byte offset of the tensor's first element in `file`. */
  offset: number;
}

/** Each weight of the checkpoint: where its bytes are, checked against its storage. */
async function planTensors(files: string[]): Promise<PlannedTensor[]> {
  const planned: PlannedTensor[] = [];
  const seen = new Set<string>();
  for (const file of files) {
    const entries = await zipEntries(file);
    const pklName = [...entries.keys()].find((n) => n === "data.pkl" || n.endsWith("/data.pkl"));
    if (!pklName) throw new ModelError("BAD_CHECKPOINT", file, "not a torch.save file (no data.pkl in the zip)");
    const prefix = pklName.slice(0, -"data.pkl".length);
    const pkl = entries.get(pklName)!;
    const order = entries.get(`${prefix}byteorder`);
    if (order && new TextDecoder().decode(readBytes(file, order.offset, order.size)).trim() !== "little")
      throw new ModelError("BAD_CHECKPOINT", file, "its tensors are big-endian");
    for (const [name, t] of readStateDict(readBytes(file, pkl.offset, pkl.size), file)) {
      if (t.storage.dtype === "skip") continue;
      if (seen.has(name)) throw new ModelError("BAD_CHECKPOINT", file, "a tensor appears twice", name);
      seen.add(name);
      const dtype = t.storage.dtype;
      const data = entries.get(`${prefix}data/${t.storage.key}`);
      if (!data) throw new ModelError("BAD_CHECKPOINT", file, `its storage ${t.storage.key} is missing`, name);
      if (t.shape.length !== t.stride.length)
        throw new ModelError("BAD_CHECKPOINT", file, "size and stride disagree", name);
      // Row-major and contiguous (dimensions of one element may have any stride).
      let expected = 1;
      for (let d = t.shape.length - 1; d >= 0; d--) {
        if (t.shape[d] !== 1 && t.stride[d] !== expected)
          throw new ModelError(
            "BAD_CHECKPOINT",
            file,
            "a tensor that is not contiguous (a strided view) is not supported",
            name,
          );
        expected *= t.shape[d];
      }
      const esize = DTYPE_BYTES[dtype];
      if ((t.offset + expected) * esize > data.size)
        throw new ModelError("BAD_CHECKPOINT", file, `runs past its storage (${data.size} bytes)`, name);
      planned.push({ entry: { name, dtype, shape: t.shape }, file, offset: data.offset + t.offset * esize });
    }
  }
  if (planned.length === 0) throw new ModelError("NO_WEIGHTS", files[0], "the checkpoint holds no float tensors");
  return planned;
}

/** pytorchFiles, or NO_WEIGHTS where the folder has none. */
function checkpointFiles(dir: string): string[] {
  const files = pytorchFiles(dir);
  if (!files)
    throw new ModelError("NO_WEIGHTS", dir, "no pytorch_model.bin or pytorch_model.bin.index.json in this folder");
  return files;
}

/** The tensors an import of `dir` will write (for estimates before it runs); reads only the pickles. */
export async function pytorchTensors(dir: string): Promise<TensorEntry[]> {
  return (await planTensors(checkpointFiles(dir))).map((p) => p.entry);
}

/** Files an import does not copy: the checkpoint's weights and their index. */
const WEIGHTS = /(\.bin|\.bin\.index\.json|\.pt|\.pth)$/;

/**
 * Writes the PyTorch checkpoint of `dir` as a model folder of safetensors at `outDir` (built beside
 * it, then moved into place), the tensors' bytes as stored, with the folder's config, tokenizer and
 * other files copied.
 */
export async function importPytorch(
  dir: string,
  outDir: string,
  opts: { onProgress?: (done: number, total: number) => void } = {},
): Promise<{ tensors: number; bytes: number }> {
  const files = checkpointFiles(dir);
  const plan = await planTensors(files);
  const header = buildHeader(
    plan.map((p) => p.entry),
    { format: "pt", source: basename(dir) },
  );
  const total = plan.reduce((a, p) => a + tensorBytes(p.entry), 0);
  checkFreeSpace(dirname(outDir), header.length + total, `importing ${basename(dir)}`);
  const tmp = tempFolderFor(outDir);
  try {
    const weightsFile = join(tmp, "model.safetensors");
    const out = openSync(weightsFile, "w");
    let done = 0;
    try {
      writeAll(out, header, weightsFile);
      for (const p of plan) {
        for (const bytes of byteRange(p.file, p.offset, tensorBytes(p.entry), 1 << 24)) {
          writeAll(out, bytes, weightsFile);
          done += bytes.byteLength;
          opts.onProgress?.(done, total);
          await new Promise((r) => setImmediate(r)); // the host's event loop between chunks
        }
      }
    } finally {
      closeSync(out);
    }
    for (const name of readdirSync(dir)) {
      const f = join(dir, name);
      if (!WEIGHTS.test(name) && statSync(f).isFile()) copyFileSync(f, join(tmp, name));
    }
    const record = { source: dir, files: files.map((f) => basename(f)), importVersion: PYTORCH_IMPORT_VERSION };
    writeFileSync(join(tmp, PYTORCH_IMPORT_RECORD), JSON.stringify(record, null, 2) + "\n");
    moveIntoPlace(tmp, outDir);
    return { tensors: plan.length, bytes: header.length + total };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
