// GGUF export and the llama.cpp peer (issue 6): the writer read back by @huggingface/gguf, the
// exported tensors and tokenizer metadata checked against the safetensors and tokenizer.json they
// came from, the rotary permutation against convert_hf_to_gguf's reshape and against RoPE itself,
// and llama.cpp (node-llama-cpp) running the exported files: the golden models' greedy ids, and
// log-probabilities against the golden reference and our engine. The llama.cpp tests skip, saying
// why, only when node-llama-cpp or its prebuilt binary is missing.
// Run: npx tsc -p tsconfig.json && node --test dist/test/gguf.test.js
import { after, test } from "node:test";
import assert from "node:assert/strict";
import {
  cpSync,
  existsSync,
  openSync,
  readFileSync,
  readSync,
  closeSync,
  readdirSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { gguf, type GGUFParseOutput } from "@huggingface/gguf";
import { goldenDir, hire, REPO_ROOT, tempDir } from "./helpers.js";
import { loadModel, type LoadedModel } from "../core/loader/model-folder.js";
import { ModelError } from "../core/loader/errors.js";
import { makeModel } from "../core/modelgen/make-model.js";
import { Session } from "../core/engine/session.js";
import { bf16ToF32, convertF32, f16ToF32 } from "../core/modelgen/safetensors-writer.js";
import {
  GgmlType,
  GgufFileWriter,
  GgufType,
  GgufWriteError,
  ggufLayout,
  kv,
  type GgufTensorInfo,
  type GgufValue,
} from "../core/gguf/writer.js";
import { exportGguf, permuteRotary, qkvBlocks, sourceDtype } from "../core/gguf/export.js";
import { TokenType } from "../core/gguf/vocab.js";
import { importGguf, readGguf, unpermutedRowOrder } from "../core/gguf/import.js";
import { quantizedFrom } from "../core/gguf/block-weights.js";
import { GgmlTypeId, dequantize, ggmlTypeName } from "../core/gguf/quants.js";
import { native } from "../core/native/addon.js";
import type { Weight } from "../core/loader/safetensors.js";
import { cachedGguf, loadLlamaCpp, openLlamaCppPeer, type NlcLlama } from "../core/peers/llamacpp.js";
import { compareSteps, llamaCppSteps, ourGreedy } from "./llamacpp-helpers.js";

const GOLDEN = goldenDir();
const noGolden = GOLDEN ? false : "shared/golden not found (set HIRE_GOLDEN_DIR)";

interface Expected {
  prompt_ids: number[];
  ids: number[];
  top_logprobs: [number, number][][];
}
/** A golden folder: the shared ones, or test/golden's (architectures the shared set lacks). */
const goldenPath = (name: string) =>
  existsSync(join(REPO_ROOT, "test", "golden", name)) ? join(REPO_ROOT, "test", "golden", name) : join(GOLDEN!, name);
const expected = (name: string) =>
  JSON.parse(readFileSync(join(goldenPath(name), "expected.json"), "utf8")) as Expected;

async function parse(file: string): Promise<GGUFParseOutput> {
  return gguf(file, { allowLocalFile: true });
}

const meta = (p: GGUFParseOutput) => p.metadata as Record<string, unknown>;

function readBytes(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, "r");
  try {
    const buf = Buffer.alloc(length);
    assert.equal(readSync(fd, buf, 0, length, offset), length);
    return buf;
  } finally {
    closeSync(fd);
  }
}

/** A tensor's bytes from a parsed GGUF file. */
function ggufTensor(file: string, p: GGUFParseOutput, name: string): { bytes: Buffer; dtype: number; dims: number[] } {
  const t = p.tensorInfos.find((x) => x.name === name);
  assert.ok(t, `${name} missing from ${file}`);
  const dims = t.shape.map(Number);
  const dtype = Number(t.dtype);
  const elem = dtype === GgmlType.F32 ? 4 : 2;
  const n = dims.reduce((a, d) => a * d, 1);
  return { bytes: readBytes(file, Number(p.tensorDataOffset + t.offset), n * elem), dtype, dims };
}

/** A tensor's stored bytes in the model's safetensors. */
function sourceBytes(model: LoadedModel, name: string): Buffer {
  const t = model.store.info(name);
  return readBytes(t.file, t.offset, t.byteLength);
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

test("writer: metadata, tensor infos, offsets and data read back by @huggingface/gguf", async (t) => {
  const dir = tempDir(t);
  const metadata = new Map<string, GgufValue>([
    ["general.architecture", kv.str("llama")],
    ["test.u8", { type: GgufType.UINT8, value: 255 }],
    ["test.i8", { type: GgufType.INT8, value: -128 }],
    ["test.u16", { type: GgufType.UINT16, value: 65535 }],
    ["test.i16", { type: GgufType.INT16, value: -32768 }],
    ["test.u32", kv.u32(4294967295)],
    ["test.i32", kv.i32(-2147483648)],
    ["test.f32", kv.f32(1.5)],
    ["test.bool", kv.bool(true)],
    ["test.u64", kv.u64(2n ** 63n + 5n)],
    ["test.i64", { type: GgufType.INT64, value: -(2n ** 40n) }],
    ["test.f64", { type: GgufType.FLOAT64, value: Math.PI }],
    ["test.unicode", kv.str("héllo 🦙\n")],
    ["test.strings", kv.strings(["a b", "", "Ġthe"])],
    ["test.empty", kv.strings([])],
    ["test.i32s", kv.i32s([1, -2, 3])],
    ["test.f32s", kv.f32s([0.5, -0.25])],
  ]);
  const tensors: GgufTensorInfo[] = [
    { name: "a", type: GgmlType.F32, dims: [3] }, // 12 bytes: padded
    { name: "b.weight", type: GgmlType.F16, dims: [5, 3] }, // 30 bytes
    { name: "c", type: GgmlType.BF16, dims: [2, 2, 2] },
    { name: "d", type: GgmlType.F32, dims: [64] }, // 256 bytes: already aligned
  ];
  for (const alignment of [32, 64]) {
    const file = join(dir, `w${alignment}.gguf`);
    const data = tensors.map((tt, i) => {
      const n = tt.dims.reduce((a, d) => a * d, 1) * (tt.type === GgmlType.F32 ? 4 : 2);
      return Uint8Array.from({ length: n }, (_, k) => (i * 37 + k * 11 + 1) & 0xff);
    });
    const w = await GgufFileWriter.open(file, metadata, tensors, alignment);
    await w.write(data[0]);
    await w.write(data[1].subarray(0, 7)); // a tensor may come in pieces...
    await w.write(Buffer.concat([data[1].subarray(7), data[2]])); // ...and a piece may span tensors
    await w.write(data[3]);
    await w.close();

    const size = statSync(file).size;
    assert.equal(size, w.layout.fileBytes);
    assert.equal(size % alignment, 0);
    const p = await gguf(file, { allowLocalFile: true, typedMetadata: true });
    const m = meta(p);
    assert.equal(m.version, 3);
    assert.equal(m.tensor_count, 4n);
    assert.equal(m.kv_count, BigInt(metadata.size + (alignment === 32 ? 0 : 1)));
    assert.equal(m["general.alignment"], alignment === 32 ? undefined : alignment);
    for (const [key, v] of metadata) {
      assert.deepEqual(m[key], v.value, key);
      assert.equal((p.typedMetadata as Record<string, { type: number }>)[key].type, v.type, `${key} type`);
    }
    assert.equal(Number(p.tensorDataOffset), w.layout.header.length);
    assert.equal(Number(p.tensorDataOffset) % alignment, 0);
    let end = 0;
    p.tensorInfos.forEach((info, i) => {
      assert.equal(info.name, tensors[i].name);
      assert.equal(info.n_dims, tensors[i].dims.length);
      assert.deepEqual(info.shape.map(Number), tensors[i].dims);
      assert.equal(info.dtype, tensors[i].type);
      const offset = Number(info.offset);
      assert.equal(offset % alignment, 0, `${info.name} offset ${offset} is not aligned`);
      assert.ok(offset >= end, `${info.name} overlaps the previous tensor`);
      const at = Number(p.tensorDataOffset) + offset;
      assert.deepEqual(new Uint8Array(readBytes(file, at, data[i].length)), data[i], `${info.name} data`);
      // Padding after the data is zeros.
      const next = i + 1 < tensors.length ? Number(p.tensorInfos[i + 1].offset) : size - Number(p.tensorDataOffset);
      const gap = next - offset - data[i].length;
      if (gap > 0) assert.ok(readBytes(file, at + data[i].length, gap).every((b) => b === 0));
      end = offset + data[i].length;
    });
  }
});

test("writer: rejects duplicate tensors, bad dims, out-of-range values and wrong byte counts", async (t) => {
  const dir = tempDir(t);
  const one = { name: "x", type: GgmlType.F32, dims: [2] };
  assert.throws(() => ggufLayout({}, [one, one]), GgufWriteError);
  assert.throws(() => ggufLayout({}, [{ ...one, dims: [0] }]), GgufWriteError);
  assert.throws(() => ggufLayout({}, [{ ...one, dims: [1, 1, 1, 1, 1] }]), GgufWriteError);
  assert.throws(() => ggufLayout({ k: kv.u32(-1) }, []), GgufWriteError);
  assert.throws(() => ggufLayout({ k: kv.u32(2 ** 32) }, []), GgufWriteError);
  assert.throws(() => ggufLayout({ k: kv.i32(1.5) }, []), GgufWriteError);
  assert.throws(() => ggufLayout({ k: kv.i32s([1, 2 ** 31]) }, []), GgufWriteError);
  assert.throws(() => ggufLayout({ "general.alignment": kv.u32(64) }, []), GgufWriteError);
  assert.throws(() => ggufLayout({}, [], 12), GgufWriteError);

  const short = await GgufFileWriter.open(join(dir, "short.gguf"), {}, [one]);
  await short.write(new Uint8Array(4));
  await assert.rejects(short.close(), /closed after 0 of 1 tensors/);
  const long = await GgufFileWriter.open(join(dir, "long.gguf"), {}, [one]);
  await assert.rejects(long.write(new Uint8Array(9)), /after the last tensor/);
  await long.abort();
});

// ---------------------------------------------------------------------------------------------
// Rotary permutation
// ---------------------------------------------------------------------------------------------

/**
 * convert_hf_to_gguf.py: w.reshape(heads, 2, rows/heads/2, cols).swapaxes(1, 2).reshape(w.shape),
 * written as numpy's index arithmetic on a C-contiguous array.
 */
function referencePermute(w: Float32Array, heads: number, rows: number, cols: number): Float32Array {
  const half = rows / heads / 2;
  const out = new Float32Array(w.length);
  // out[h, j, s, c] (shape heads × half × 2 × cols) = w[h, s, j, c] (shape heads × 2 × half × cols)
  for (let h = 0; h < heads; h++)
    for (let j = 0; j < half; j++)
      for (let s = 0; s < 2; s++)
        for (let c = 0; c < cols; c++)
          out[((h * half + j) * 2 + s) * cols + c] = w[((h * 2 + s) * half + j) * cols + c];
  return out;
}

const f32Bytes = (a: Float32Array) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
const asF32 = (b: Uint8Array) => new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));

function seeded(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  });
}

/** ggml's quantize_row_q8_0_ref, in float32 arithmetic: the reference for the native quantizeBlocks. */
function referenceQ8_0(x: Float32Array): Uint8Array {
  const f = Math.fround;
  const out = new Uint8Array((x.length / 32) * 34);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[32 * b + j]));
    const d = f(amax / 127);
    const id = d ? f(1 / d) : 0;
    const half = f32ToF16(d);
    out[34 * b] = half & 0xff;
    out[34 * b + 1] = half >> 8;
    for (let j = 0; j < 32; j++) {
      const v = f(x[32 * b + j] * id);
      out[34 * b + 2 + j] = (Math.sign(v) * Math.floor(Math.abs(v) + 0.5)) & 0xff; // roundf: halves away from 0
    }
  }
  return out;
}

/** ggml's quantize_row_q4_0_ref, in float32 arithmetic: d from the value of largest magnitude, signed. */
/** The value of largest magnitude in block b of 32 (the first such), as Q4_0 and Q5_0 take it. */
function largestMagnitude(x: Float32Array, b: number): number {
  let amax = 0;
  let max = 0;
  for (let j = 0; j < 32; j++) {
    const v = x[32 * b + j];
    if (amax < Math.abs(v)) [amax, max] = [Math.abs(v), v];
  }
  return max;
}

function referenceQ4_0(x: Float32Array): Uint8Array {
  const f = Math.fround;
  const out = new Uint8Array((x.length / 32) * 18);
  for (let b = 0; b < x.length / 32; b++) {
    const d = f(largestMagnitude(x, b) / -8);
    const id = d ? f(1 / d) : 0;
    const half = f32ToF16(d);
    out[18 * b] = half & 0xff;
    out[18 * b + 1] = half >> 8;
    const code = (v: number) => Math.min(15, Math.trunc(f(f(v * id) + 8.5))); // (int8_t) truncates
    for (let j = 0; j < 16; j++) out[18 * b + 2 + j] = code(x[32 * b + j]) | (code(x[32 * b + 16 + j]) << 4);
  }
  return out;
}

/** ggml's quantize_row_q5_0_ref: Q4_0's rule with d = max / -16 and codes 0..31, fifth bits in qh. */
function referenceQ5_0(x: Float32Array): Uint8Array {
  const f = Math.fround;
  const out = new Uint8Array((x.length / 32) * 22);
  for (let b = 0; b < x.length / 32; b++) {
    const d = f(largestMagnitude(x, b) / -16);
    const id = d ? f(1 / d) : 0;
    const half = f32ToF16(d);
    out[22 * b] = half & 0xff;
    out[22 * b + 1] = half >> 8;
    const code = (v: number) => Math.min(31, Math.trunc(f(f(v * id) + 16.5)));
    let qh = 0;
    for (let j = 0; j < 16; j++) {
      const [lo, hi] = [code(x[32 * b + j]), code(x[32 * b + 16 + j])];
      out[22 * b + 6 + j] = (lo & 15) | ((hi & 15) << 4);
      qh |= ((lo >> 4) << j) | ((hi >> 4) << (j + 16));
    }
    new DataView(out.buffer).setUint32(22 * b + 2, qh >>> 0, true);
  }
  return out;
}

/** f32 → IEEE half bits, round to nearest even (through the writer's converter). */
function f32ToF16(x: number): number {
  const h = new Uint16Array(1);
  convertF32(new Uint32Array(Float32Array.of(x).buffer), 1, "F16", h);
  return h[0];
}

test("quantizeBlocks (native) makes the Q8_0, Q4_0 and Q5_0 blocks ggml's reference quantizers make", () => {
  let seed = 11;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const x = Float32Array.from(
    { length: 32 * 300 },
    (_, i) => rand() * (i % 97 === 0 ? 40 : 1) * 10 ** (((i >> 5) % 7) - 4),
  );
  x.fill(0, 32, 64); // a block of zeros: d = 0, codes 0 (Q4_0: 8)
  // max 127, so Q8_0's d = 1 and the other values are codes of exact halves: roundf takes them away from 0.
  for (let j = 0; j < 32; j++) x[64 + j] = j === 0 ? 127 : j - 16.5;
  x[100] = -x[100];
  for (const [type, bytes, reference] of [
    [GgmlTypeId.Q8_0, 34, referenceQ8_0],
    [GgmlTypeId.Q4_0, 18, referenceQ4_0],
    [GgmlTypeId.Q5_0, 22, referenceQ5_0],
  ] as const) {
    const out = new Uint8Array((x.length / 32) * bytes);
    native().quantizeBlocks(type, x, out);
    assert.deepEqual(out, reference(x), `type ${type}`);
    // ggml reads them back within half a step (plus what storing d as f16 moves a code; a Q4_0 / Q5_0
    // code can be clipped at 15 / 31: within a step), where d is a normal f16.
    const back = dequantize(type, out, x.length);
    for (let b = 0; b < x.length / 32; b++) {
      const d = Math.abs(f16ToF32(out[bytes * b] | (out[bytes * b + 1] << 8)));
      if (d < 2 ** -14) continue;
      for (let j = 0; j < 32; j++) {
        const i = 32 * b + j;
        assert.ok(Math.abs(back[i] - x[i]) <= d * (type === GgmlTypeId.Q8_0 ? 0.5625 : 1), `type ${type} value ${i}`);
      }
    }
  }
  assert.throws(
    () => native().quantizeBlocks(GgmlTypeId.Q8_0, x.subarray(0, 40), new Uint8Array(34)),
    /not whole blocks/,
  );
  assert.throws(() => native().quantizeBlocks(GgmlTypeId.Q8_0, x, new Uint8Array(34)), /x needs/);
  assert.throws(() => native().quantizeBlocks(GgmlTypeId.Q5_K, x, new Uint8Array(0)), /Q8_0, Q4_0, Q5_0, Q4_K, Q6_K/);
  assert.throws(
    () => native().quantizeBlocks(GgmlTypeId.Q4_K, x.subarray(0, 288), new Uint8Array(144)),
    /blocks of 256/,
  );
});

test("quantizeBlocks (native) makes Q4_K blocks ggml reads back closer to the values than Q4_0's", () => {
  let seed = 5;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  // Sub-blocks of different scales and offsets, as a layer's rows have.
  // Sub-blocks of different scales (up to 4x within a block, as in a layer's rows; 6-bit scales
  // cannot hold sub-blocks far smaller than their block's largest) and offsets, blocks 10^-3 .. 10.
  const x = Float32Array.from(
    { length: 256 * 64 },
    (_, i) =>
      (rand() + rand() + rand()) * (1 + ((i >> 5) % 4)) * 10 ** (((i >> 8) % 5) - 3) + (i % 512 < 32 ? 0.01 : 0),
  );
  x.fill(0, 256, 288); // a sub-block of zeros
  const back = (type: number, bytes: number) => {
    const out = new Uint8Array((x.length / (type === GgmlTypeId.Q4_K ? 256 : 32)) * bytes);
    native().quantizeBlocks(type, x, out);
    return dequantize(type, out, x.length);
  };
  const k = back(GgmlTypeId.Q4_K, 144);
  const q4 = back(GgmlTypeId.Q4_0, 18);
  let errK = 0;
  let err0 = 0;
  for (let sb = 0; sb < x.length / 32; sb++) {
    const v = x.subarray(32 * sb, 32 * sb + 32);
    const range = Math.max(0, ...v) - Math.min(0, ...v);
    for (let j = 0; j < 32; j++) {
      const i = 32 * sb + j;
      // Within two of its range's 15 steps (the 6-bit scales and mins move a sub-block's own fit).
      assert.ok(Math.abs(k[i] - x[i]) <= (2 * range) / 15 + 1e-30, `value ${i}: ${k[i]} vs ${x[i]}`);
      errK += (k[i] - x[i]) ** 2;
      err0 += (q4[i] - x[i]) ** 2;
    }
  }
  assert.deepEqual(k.subarray(256, 288), new Float32Array(32), "zeros stay zeros");
  // Both 4.5 bits a value; measured 0.75 of Q4_0's squared error here.
  assert.ok(errK < 0.8 * err0, `Q4_K squared error ${errK} against Q4_0's ${err0}`);
});

test("quantizeBlocks (native) makes Q6_K blocks ggml reads back within a step of their 16 values' scale", () => {
  let seed = 9;
  const rand = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  const x = Float32Array.from(
    { length: 256 * 32 },
    (_, i) => rand() * (1 + ((i >> 4) % 5)) * 10 ** (((i >> 8) % 4) - 3),
  );
  x.fill(0, 512, 528); // 16 zeros: scale 0, codes 0
  const out = new Uint8Array((x.length / 256) * 210);
  native().quantizeBlocks(GgmlTypeId.Q6_K, x, out);
  const back = dequantize(GgmlTypeId.Q6_K, out, x.length);
  for (let b = 0; b < x.length / 256; b++) {
    const blk = out.subarray(210 * b, 210 * (b + 1));
    const d = f16ToF32(blk[208] | (blk[209] << 8));
    for (let j = 0; j < 16; j++) {
      const e = Math.abs(d * ((blk[192 + j] << 24) >> 24)); // the 16 values' scale as it decodes
      for (let l = 0; l < 16; l++) {
        const i = 256 * b + 16 * j + l;
        // Half a step (a step where a code of the other sign clips at 31, as Q4_0's at 15), plus what
        // rounding the scale to d's int8 multiple moves a code of up to 32.
        assert.ok(Math.abs(back[i] - x[i]) <= e + 16 * d + 1e-30, `value ${i}: ${back[i]} vs ${x[i]}`);
      }
    }
  }
  assert.deepEqual(back.subarray(512, 528), new Float32Array(16));
});

test("qkvBlocks regroups GPT-NeoX's head-by-head q/k/v rows as all q, all k, all v (weights and biases)", () => {
  // Row r of the source holds the value r, so each output row names the input row it came from.
  const [heads, headDim] = [3, 2];
  for (const cols of [1, 4]) {
    const rows = 3 * heads * headDim;
    const w = Float32Array.from({ length: rows * cols }, (_, i) => Math.floor(i / cols));
    const got = asF32(qkvBlocks(f32Bytes(w), heads, headDim, cols * 4));
    const from = (r: number) => {
      const [j, h, d] = [Math.floor(r / (heads * headDim)), Math.floor(r / headDim) % heads, r % headDim];
      return (h * 3 + j) * headDim + d; // HF: view(heads, 3, headDim)
    };
    assert.deepEqual(
      Array.from({ length: rows }, (_, r) => got[r * cols]),
      Array.from({ length: rows }, (_, r) => from(r)),
    );
  }
  assert.throws(() => qkvBlocks(new Uint8Array(12), 3, 2, 4), /size mismatch/);
});

test("permuteRotary equals convert_hf_to_gguf's permute, and turns rotate-half RoPE into interleaved RoPE", () => {
  const cols = 5;
  for (const [heads, headDim] of [
    [1, 4],
    [3, 8],
    [2, 16],
  ]) {
    const w = seeded(heads * headDim * cols, heads * 100 + headDim);
    const got = asF32(permuteRotary(f32Bytes(w), heads, headDim, headDim, cols * 4));
    assert.deepEqual(got, referencePermute(w, heads, heads * headDim, cols), `${heads} heads × ${headDim}`);
  }

  // Attention scores q·k after RoPE do not depend on the layout: HF (rotate-half on q = W x) and
  // llama.cpp (adjacent pairs on q' = W' x, W' permuted) give the same scores, with full and
  // partial rotary dimensions (rows past rotDim are not rotated and not moved).
  const theta = 10000;
  const headDim = 8;
  for (const rotDim of [8, 4]) {
    const heads = 2;
    const hidden = 6;
    const Wq = seeded(heads * headDim * hidden, 7);
    const Wk = seeded(heads * headDim * hidden, 8);
    const perm = (w: Float32Array) => asF32(permuteRotary(f32Bytes(w), heads, headDim, rotDim, hidden * 4));
    const [Pq, Pk] = [perm(Wq), perm(Wk)];
    const matvec = (W: Float32Array, x: Float32Array) =>
      Float64Array.from({ length: W.length / hidden }, (_, r) => x.reduce((a, v, c) => a + v * W[r * hidden + c], 0));
    const rope = (v: Float64Array, pos: number, interleaved: boolean) => {
      const out = Float64Array.from(v);
      for (let h = 0; h < heads; h++) {
        for (let i = 0; i < rotDim / 2; i++) {
          const a = pos / Math.pow(theta, (2 * i) / rotDim);
          const [x, y] = interleaved
            ? [h * headDim + 2 * i, h * headDim + 2 * i + 1]
            : [h * headDim + i, h * headDim + i + rotDim / 2];
          out[x] = v[x] * Math.cos(a) - v[y] * Math.sin(a);
          out[y] = v[y] * Math.cos(a) + v[x] * Math.sin(a);
        }
      }
      return out;
    };
    const xq = seeded(hidden, 11);
    const xk = seeded(hidden, 12);
    for (const [pq, pk] of [
      [5, 2],
      [17, 0],
      [3, 3],
    ]) {
      const hf = [rope(matvec(Wq, xq), pq, false), rope(matvec(Wk, xk), pk, false)];
      const gg = [rope(matvec(Pq, xq), pq, true), rope(matvec(Pk, xk), pk, true)];
      for (let h = 0; h < heads; h++) {
        let sHf = 0;
        let sGg = 0;
        for (let d = 0; d < headDim; d++) {
          sHf += hf[0][h * headDim + d] * hf[1][h * headDim + d];
          sGg += gg[0][h * headDim + d] * gg[1][h * headDim + d];
        }
        assert.ok(Math.abs(sHf - sGg) < 1e-5, `rotDim ${rotDim} head ${h} positions ${pq},${pk}: ${sHf} vs ${sGg}`);
      }
      // The unpermuted weights under interleaved RoPE do not give the same scores (the check has teeth).
      const wrong = [rope(matvec(Wq, xq), pq, true), rope(matvec(Wk, xk), pk, true)];
      if (pq !== pk) {
        let diff = 0;
        for (let d = 0; d < heads * headDim; d++) diff += Math.abs(wrong[0][d] * wrong[1][d] - hf[0][d] * hf[1][d]);
        assert.ok(diff > 1e-4, "unpermuted weights should not match");
      }
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Export: tensors, metadata, tokenizer
// ---------------------------------------------------------------------------------------------

async function tinyModel(
  t: Parameters<typeof tempDir>[0],
  arch: "llama" | "qwen2" | "gemma3" | "gpt2",
  dtype: "f32" | "bf16",
  extra = {},
) {
  const dir = join(tempDir(t), arch);
  await makeModel({ arch, dtype, seed: 3, out: dir, ...extra });
  return dir;
}

test("export: a make-model llama as GGUF: names, shapes, dtypes, permuted q/k, untouched v, metadata", async (t) => {
  const dir = await tinyModel(t, "llama", "bf16");
  const model = loadModel(dir);
  t.after(() => model.close());
  const out = join(tempDir(t), "m.gguf");
  const r = await exportGguf(model, out);
  assert.equal(r.architecture, "llama");
  assert.equal(r.dtype, "bf16");
  assert.equal(r.bytes, statSync(out).size);
  const p = await parse(out);
  const c = model.config;
  const m = meta(p);
  assert.equal(m["general.architecture"], "llama");
  assert.equal(m["general.file_type"], 32);
  assert.equal(m["llama.block_count"], c.layers);
  assert.equal(m["llama.embedding_length"], c.hidden);
  assert.equal(m["llama.feed_forward_length"], c.intermediate);
  assert.equal(m["llama.attention.head_count"], c.heads);
  assert.equal(m["llama.attention.head_count_kv"], c.kvHeads);
  assert.equal(m["llama.context_length"], c.maxPositions);
  assert.equal(m["llama.rope.dimension_count"], c.headDim);
  assert.equal(m["llama.rope.freq_base"], 10000);
  assert.ok(Math.abs((m["llama.attention.layer_norm_rms_epsilon"] as number) - c.normEps) < 1e-12);

  // Every tensor, in ggml dims order, F32 for 1-D, the model's dtype for matrices.
  const { hidden: H, heads: A, kvHeads: K, headDim: D, intermediate: F, vocab: V } = c;
  const want = new Map<string, number[]>([
    ["token_embd.weight", [H, V]],
    ["output_norm.weight", [H]],
    ["output.weight", [H, V]],
  ]);
  for (let i = 0; i < c.layers; i++) {
    want.set(`blk.${i}.attn_norm.weight`, [H]);
    want.set(`blk.${i}.attn_q.weight`, [H, A * D]);
    want.set(`blk.${i}.attn_k.weight`, [H, K * D]);
    want.set(`blk.${i}.attn_v.weight`, [H, K * D]);
    want.set(`blk.${i}.attn_output.weight`, [A * D, H]);
    want.set(`blk.${i}.ffn_norm.weight`, [H]);
    want.set(`blk.${i}.ffn_gate.weight`, [H, F]);
    want.set(`blk.${i}.ffn_up.weight`, [H, F]);
    want.set(`blk.${i}.ffn_down.weight`, [F, H]);
  }
  assert.deepEqual(new Set(p.tensorInfos.map((x) => x.name)), new Set(want.keys()));
  for (const info of p.tensorInfos) {
    assert.deepEqual(info.shape.map(Number), want.get(info.name), info.name);
    assert.equal(info.dtype, info.shape.length === 1 ? GgmlType.F32 : GgmlType.BF16, `${info.name} dtype`);
  }

  // Data: q/k permuted per head (with their own head counts), v and the head copied, norms widened.
  const bf16Rows = (b: Buffer) => Float32Array.from(new Uint16Array(b.buffer, b.byteOffset, b.length / 2), bf16ToF32);
  for (const [name, hf, heads] of [
    ["attn_q", "q_proj", A],
    ["attn_k", "k_proj", K],
  ] as const) {
    const src = bf16Rows(sourceBytes(model, `model.layers.1.self_attn.${hf}.weight`));
    const got = bf16Rows(ggufTensor(out, p, `blk.1.${name}.weight`).bytes);
    assert.deepEqual(got, referencePermute(src, heads, heads * D, H), `${name} is convert_hf_to_gguf's permute`);
  }
  assert.ok(
    ggufTensor(out, p, "blk.0.attn_v.weight").bytes.equals(
      sourceBytes(model, "model.layers.0.self_attn.v_proj.weight"),
    ),
  );
  assert.ok(ggufTensor(out, p, "output.weight").bytes.equals(sourceBytes(model, "lm_head.weight")));
  const norm = ggufTensor(out, p, "blk.0.ffn_norm.weight").bytes;
  assert.deepEqual(asF32(norm), bf16Rows(sourceBytes(model, "model.layers.0.post_attention_layernorm.weight")));
});

test("export: tokenizer metadata matches tokenizer.json and tokenizer_config.json", async (t) => {
  // A vocabulary larger than the tokenizer, so some ids are unused padding.
  const dir = await tinyModel(t, "llama", "f32", { shape: { vocab: 900 } });
  const model = loadModel(dir);
  t.after(() => model.close());
  const out = join(tempDir(t), "m.gguf");
  await exportGguf(model, out);
  const m = meta(await parse(out));
  const tok = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8")) as {
    model: { vocab: Record<string, number>; merges: [string, string][] };
    added_tokens: { id: number; content: string; special: boolean }[];
  };
  const cfg = JSON.parse(readFileSync(join(dir, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  const tokens = m["tokenizer.ggml.tokens"] as string[];
  const types = m["tokenizer.ggml.token_type"] as number[];
  assert.equal(tokens.length, 900);
  assert.equal(types.length, 900);
  const byId = new Map<number, [string, number]>();
  for (const [text, id] of Object.entries(tok.model.vocab)) byId.set(id, [text, TokenType.NORMAL]);
  for (const a of tok.added_tokens) byId.set(a.id, [a.content, a.special ? TokenType.CONTROL : TokenType.USER_DEFINED]);
  let pads = 0;
  for (let i = 0; i < 900; i++) {
    const [text, type] = byId.get(i) ?? [`[PAD${i}]`, TokenType.UNUSED];
    if (!byId.has(i)) pads++;
    assert.equal(tokens[i], text, `token ${i}`);
    assert.equal(types[i], type, `token type ${i}`);
  }
  assert.ok(pads > 0, "the test needs unused ids");
  assert.equal(tokens[10], "Ċ"); // byte 0x0a in GPT-2's byte-to-unicode alphabet
  assert.ok(tok.model.merges.length > 0);
  assert.deepEqual(
    m["tokenizer.ggml.merges"],
    tok.model.merges.map(([a, b]) => `${a} ${b}`),
  );
  assert.equal(m["tokenizer.ggml.model"], "gpt2");
  assert.equal(m["tokenizer.ggml.pre"], "gpt-2");
  const eos = tok.added_tokens.find((a) => a.content === cfg.eos_token)!.id;
  assert.equal(m["tokenizer.ggml.eos_token_id"], eos);
  assert.equal(m["tokenizer.ggml.bos_token_id"], model.tokenizer.bosId ?? model.config.bosTokenId);
  assert.equal(m["tokenizer.ggml.add_bos_token"], false);
  assert.equal(typeof cfg.chat_template, "string");
  assert.equal(m["tokenizer.chat_template"], cfg.chat_template);
});

test(
  "export: qwen2 keeps q/k unpermuted with F32 biases; tied heads have no output.weight; dtype conversion",
  {
    skip: noGolden,
  },
  async (t) => {
    const dir = tempDir(t);
    const qwen = loadModel(join(GOLDEN!, "qwen2-f16"));
    const tied = loadModel(join(GOLDEN!, "llama-f32-tied"));
    const bf = loadModel(join(GOLDEN!, "llama-bf16"));
    t.after(() => [qwen, tied, bf].forEach((x) => x.close()));

    const q = join(dir, "q.gguf");
    await exportGguf(qwen, q);
    const pq = await parse(q);
    assert.equal(meta(pq)["general.architecture"], "qwen2");
    assert.ok(
      ggufTensor(q, pq, "blk.0.attn_q.weight").bytes.equals(
        sourceBytes(qwen, "model.layers.0.self_attn.q_proj.weight"),
      ),
    );
    assert.ok(
      ggufTensor(q, pq, "blk.0.attn_k.weight").bytes.equals(
        sourceBytes(qwen, "model.layers.0.self_attn.k_proj.weight"),
      ),
    );
    const bias = ggufTensor(q, pq, "blk.0.attn_k.bias");
    assert.equal(bias.dtype, GgmlType.F32);
    const srcBias = sourceBytes(qwen, "model.layers.0.self_attn.k_proj.bias");
    assert.deepEqual(
      asF32(bias.bytes),
      Float32Array.from(new Uint16Array(srcBias.buffer, srcBias.byteOffset, srcBias.length / 2), f16ToF32),
    );

    const tf = join(dir, "t.gguf");
    await exportGguf(tied, tf);
    const pt = await parse(tf);
    assert.ok(!pt.tensorInfos.some((x) => x.name === "output.weight"), "a tied head must not be written");
    assert.ok(pt.tensorInfos.some((x) => x.name === "token_embd.weight"));

    // bf16 → f32 is exact; f32 → f16 rounds to nearest (within half an f16 ulp).
    const wide = join(dir, "wide.gguf");
    assert.equal((await exportGguf(bf, wide, { dtype: "f32" })).dtype, "f32");
    const pw = await parse(wide);
    assert.equal(meta(pw)["general.file_type"], 0);
    const src = sourceBytes(bf, "model.embed_tokens.weight");
    const emb = ggufTensor(wide, pw, "token_embd.weight");
    assert.equal(emb.dtype, GgmlType.F32);
    assert.deepEqual(
      asF32(emb.bytes),
      Float32Array.from(new Uint16Array(src.buffer, src.byteOffset, src.length / 2), bf16ToF32),
    );
    const narrow = join(dir, "narrow.gguf");
    await exportGguf(tied, narrow, { dtype: "f16" });
    const pn = await parse(narrow);
    const h = ggufTensor(narrow, pn, "blk.2.ffn_down.weight");
    assert.equal(h.dtype, GgmlType.F16);
    const orig = asF32(sourceBytes(tied, "model.layers.2.mlp.down_proj.weight"));
    const half = Array.from(new Uint16Array(h.bytes.buffer, h.bytes.byteOffset, h.bytes.length / 2), f16ToF32);
    orig.forEach((x, i) => assert.ok(Math.abs(half[i] - x) <= Math.abs(x) * 2 ** -11 + 2 ** -25, `element ${i}`));
  },
);

test("export: qwen3 writes its q/k norms as attn_q_norm / attn_k_norm (F32), q/k unpermuted, head_dim as key_length", async (t) => {
  const model = loadModel(goldenPath("qwen3-bf16"));
  t.after(() => model.close());
  const file = join(tempDir(t), "q3.gguf");
  assert.equal((await exportGguf(model, file)).architecture, "qwen3");
  const p = await parse(file);
  const m = meta(p);
  assert.equal(m["general.architecture"], "qwen3");
  assert.equal(m["qwen3.attention.key_length"], 32); // head_dim, not hidden / heads = 16
  assert.equal(m["qwen3.attention.head_count_kv"], 2);
  for (const i of [0, 1]) {
    for (const [gguf, hf] of [
      ["attn_q_norm", "q_norm"],
      ["attn_k_norm", "k_norm"],
    ]) {
      const norm = ggufTensor(file, p, `blk.${i}.${gguf}.weight`);
      assert.equal(norm.dtype, GgmlType.F32);
      const src = sourceBytes(model, `model.layers.${i}.self_attn.${hf}.weight`);
      assert.deepEqual(
        asF32(norm.bytes),
        Float32Array.from(new Uint16Array(src.buffer, src.byteOffset, src.length / 2), bf16ToF32),
      );
    }
    assert.ok(
      ggufTensor(file, p, `blk.${i}.attn_q.weight`).bytes.equals(
        sourceBytes(model, `model.layers.${i}.self_attn.q_proj.weight`),
      ),
    );
  }
  assert.ok(!p.tensorInfos.some((x) => x.name === "output.weight"), "the tied head is token_embd");
});

test("export: smollm3 permutes q/k as llama does; a NoPE pattern llama.cpp cannot run is a ModelError", async (t) => {
  const dir = tempDir(t);
  const model = loadModel(goldenPath("smollm3-bf16"));
  t.after(() => model.close());
  const file = join(dir, "s.gguf");
  assert.equal((await exportGguf(model, file)).architecture, "smollm3");
  const p = await parse(file);
  const q = ggufTensor(file, p, "blk.0.attn_q.weight");
  const src = sourceBytes(model, "model.layers.0.self_attn.q_proj.weight");
  assert.equal(q.bytes.length, src.length);
  assert.ok(!q.bytes.equals(src), "q is permuted to llama.cpp's interleaved rotary pairs");

  const odd = join(dir, "odd");
  cpSync(goldenPath("smollm3-bf16"), odd, { recursive: true });
  const config = JSON.parse(readFileSync(join(odd, "config.json"), "utf8")) as Record<string, unknown>;
  config.no_rope_layers = [1, 0, 1, 1];
  writeFileSync(join(odd, "config.json"), JSON.stringify(config));
  const oddModel = loadModel(odd);
  t.after(() => oddModel.close());
  await assert.rejects(
    exportGguf(oddModel, join(dir, "odd.gguf")),
    (e) => e instanceof ModelError && e.code === "BAD_CONFIG" && /every 4th layer/.test(e.message),
  );
});

test("export: cohere writes q/k as stored (llama.cpp turns adjacent pairs too); cohere2's window, or a ModelError", async (t) => {
  const dir = tempDir(t);
  const model = loadModel(goldenPath("cohere2-bf16"));
  t.after(() => model.close());
  const file = join(dir, "c.gguf");
  assert.equal((await exportGguf(model, file)).architecture, "cohere2");
  const p = await parse(file);
  assert.equal(meta(p)["cohere2.attention.sliding_window"], 8);
  assert.equal(meta(p)["cohere2.context_length"], 512, "not cut to the window: llama.cpp slides it");
  assert.equal(meta(p)["cohere2.logit_scale"], 1, "the scale is in output_norm");
  const q = ggufTensor(file, p, "blk.0.attn_q.weight");
  assert.ok(q.bytes.equals(sourceBytes(model, "model.layers.0.self_attn.q_proj.weight")), "q unpermuted");
  assert.ok(!p.tensorInfos.some((t) => t.name.endsWith("norm.bias")), "LayerNorms without bias");

  const odd = join(dir, "odd");
  cpSync(goldenPath("cohere2-bf16"), odd, { recursive: true });
  const config = JSON.parse(readFileSync(join(odd, "config.json"), "utf8")) as Record<string, unknown>;
  config.layer_types = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"];
  writeFileSync(join(odd, "config.json"), JSON.stringify(config));
  const oddModel = loadModel(odd);
  t.after(() => oddModel.close());
  await assert.rejects(
    exportGguf(oddModel, join(dir, "odd.gguf")),
    (e) => e instanceof ModelError && e.code === "BAD_CONFIG" && /every layer but each 4th/.test(e.message),
  );
});

test("export: a sliding window llama.cpp does not run (Mistral) cuts the GGUF's context to the window", async (t) => {
  const dir = await tinyModel(t, "llama", "bf16");
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  writeFileSync(
    join(dir, "config.json"),
    JSON.stringify({ ...config, architectures: ["MistralForCausalLM"], model_type: "mistral", sliding_window: 64 }),
  );
  const model = loadModel(dir);
  t.after(() => model.close());
  assert.equal(model.config.maxPositions, 512);
  const file = join(dir, "m.gguf");
  await exportGguf(model, file);
  assert.equal(meta(await parse(file))["llama.context_length"], 64);
});

test("export: an unsupported architecture is a ModelError and leaves no file", { skip: noGolden }, async (t) => {
  const dir = tempDir(t);
  const opt = loadModel(join(GOLDEN!, "opt-bf16"));
  t.after(() => opt.close());
  const out = join(dir, "opt.gguf");
  await assert.rejects(exportGguf(opt, out), (e) => e instanceof ModelError && e.code === "UNSUPPORTED_ARCHITECTURE");
  assert.deepEqual(readdirSync(dir), []);
});

test("hire export: writes a GGUF, and reports bad flags and models", { skip: noGolden }, async (t) => {
  const dir = tempDir(t);
  const out = join(dir, "cli.gguf");
  const ok = hire(["export", "--model", join(GOLDEN!, "llama-bf16"), "--gguf", out, "--dtype", "f16"]);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /wrote .*cli\.gguf: GGUF v3, llama, f16, 21 tensors/);
  assert.equal(meta(await parse(out))["general.file_type"], 1);

  const none = hire(["export", "--model", join(GOLDEN!, "llama-bf16")]);
  assert.equal(none.status, 2);
  assert.match(none.stderr, /--gguf FILE/);
  const badType = hire(["export", "--model", join(GOLDEN!, "llama-bf16"), "--gguf", out, "--dtype", "q4"]);
  assert.equal(badType.status, 2);
  assert.match(badType.stderr, /--dtype must be/);
  const opt = hire(["export", "--model", join(GOLDEN!, "opt-bf16"), "--gguf", join(dir, "opt.gguf")]);
  assert.equal(opt.status, 1);
  assert.match(opt.stderr, /OPTForCausalLM/);
  assert.ok(!existsSync(join(dir, "opt.gguf")));
});

// ---------------------------------------------------------------------------------------------
// llama.cpp
// ---------------------------------------------------------------------------------------------

const llamaCpp = await loadLlamaCpp(2);
const noLlama = "skipped" in llamaCpp ? llamaCpp.skipped : false;
after(async () => {
  if ("llama" in llamaCpp) await llamaCpp.llama.dispose();
});

// Log-probability tolerance against the float64 reference. llama.cpp rounds the activations to
// the weights' 16-bit type inside its matmuls (bf16 keeps 8 bits), and GPT-2's GELU goes
// through an f16 table, so only the f32 Llama can be held to the golden 1e-3.
const GOLDEN_TOL: Record<string, number> = {
  "llama-bf16": 0.05,
  "llama-f32-tied": 1e-3,
  "qwen2-f16": 0.01,
  "gpt2-f32": 0.01,
};

for (const name of Object.keys(GOLDEN_TOL)) {
  test(
    `llama.cpp runs the exported golden ${name}: same greedy ids as the reference`,
    { skip: noGolden || noLlama },
    async (t) => {
      const model = loadModel(goldenPath(name));
      t.after(() => model.close());
      const cacheDir = tempDir(t);
      const exp = expected(name);
      const r = await openLlamaCppPeer(model, { cacheDir, threads: 2 });
      assert.ok("peer" in r, `the peer did not open: ${"skipped" in r ? r.skipped : ""}`);
      const { peer } = r;
      try {
        assert.equal(peer.name, "llamacpp");
        assert.match(peer.detail, /llama\.cpp .* CPU, (bf16|f16|f32) GGUF read in \(no mmap\), 2 threads/);
        const run = await peer.decode(exp.prompt_ids, exp.ids.length);
        assert.deepEqual(run.ids, exp.ids, `${name}: llama.cpp's greedy ids differ from the reference`);
        assert.ok(run.tokensPerSecond > 0 && Number.isFinite(run.tokensPerSecond));
        assert.ok(run.prefillTokensPerSecond! > 0);
        // A fresh context each call: the same ids again.
        assert.deepEqual((await peer.decode(exp.prompt_ids, 4)).ids, exp.ids.slice(0, 4));
        // Teacher-forced (bench's steps column): fed the reference's ids, it picks them; fed other ids
        // from step 2 on, its later picks are those of the ids it was fed (as llamaCppSteps finds them).
        assert.deepEqual(await peer.follow!(exp.prompt_ids, exp.ids), exp.ids);
        const other = exp.ids.map((id, k) => (k >= 2 ? (id + 7) % model.config.vocab : id));
        const picks = await peer.follow!(exp.prompt_ids, other);
        assert.deepEqual(picks.slice(0, 3), exp.ids.slice(0, 3), "the picks before the first other id");
        const file = await cachedGguf(model, sourceDtype(model, "test"), cacheDir);
        const steps = await llamaCppSteps((llamaCpp as { llama: NlcLlama }).llama, file, exp.prompt_ids, other);
        assert.deepEqual(
          picks,
          steps.map((x) => x.argmax),
        );
        await assert.rejects(peer.decode([model.config.vocab], 2), RangeError);
        await assert.rejects(peer.decode(exp.prompt_ids, 0), RangeError);
        await assert.rejects(peer.decode([], 2), RangeError);
      } finally {
        await peer.close();
      }
      // Log-probabilities against the reference (the peer left the GGUF in the cache).
      assert.equal(readdirSync(cacheDir).filter((f) => f.endsWith(".gguf")).length, 1);
      const file = await cachedGguf(model, sourceDtype(model, "test"), cacheDir);
      const llama = (llamaCpp as { llama: NlcLlama }).llama;
      compareSteps(name, exp.top_logprobs, await llamaCppSteps(llama, file, exp.prompt_ids, exp.ids), GOLDEN_TOL[name]);
    },
  );
}

// test/golden's models (architectures the shared set lacks) as f32 GGUFs: bf16 → f32 is exact, and
// llama.cpp then keeps its activations in f32, so a third implementation checks Qwen3's q/k norms,
// SmolLM3's layers without a rotary step, Granite's folded multipliers, OLMo 2's norms after the
// blocks, StableLM's LayerNorms and biases at the golden tolerance. (Exported as bf16, llama.cpp rounds
// the activations to bf16, and these models' are large, from matrices of 3 / sqrt(fan_in): Qwen3 gave
// the same greedy ids but top-5 log-probabilities 0.07-0.19 off, past the 0.05 the bf16 Llama keeps.)
// The GELU models at 0.01, as for GPT-2 and Gemma 2/3: llama.cpp's GELU goes through an f16 table, and
// its gptneox uses the tanh form for Pythia's exact GELU (0.4-1.1e-3 apart on gptneox-bf16).
const F32_GOLDEN_TOL: Record<string, number> = {
  "qwen3-bf16": 1e-3,
  "smollm3-bf16": 1e-3,
  "granite-bf16": 1e-3,
  "olmo2-bf16": 1e-3,
  "stablelm-bf16": 1e-3,
  "cohere-bf16": 1e-3,
  "cohere2-bf16": 1e-3,
  "glm4-bf16": 1e-3,
  "ernie-bf16": 1e-3,
  "gemma-bf16": 0.01,
  "phi-bf16": 0.01,
  "gptneox-bf16": 0.01,
  // Mixtures: the router and stacked experts (ffn_gate_inp, ffn_*_exps), Mixtral as llama.
  "mixtral-bf16": 1e-3,
  "qwen3moe-bf16": 1e-3,
  "olmoe-bf16": 1e-3,
  "granitemoe-bf16": 1e-3, // stacked input_linear split into gate and up, a shared MLP without a gate
  "erniemoe-bf16": 1e-3, // a dense first layer, the correction bias as exp_probs_b
};
for (const [name, tol] of Object.entries(F32_GOLDEN_TOL)) {
  test(
    `llama.cpp runs the golden ${name} exported as f32: log-probabilities within ${tol} of the reference`,
    { skip: noLlama },
    async (t) => {
      const model = loadModel(goldenPath(name));
      t.after(() => model.close());
      const file = join(tempDir(t), "m.gguf");
      await exportGguf(model, file, { dtype: "f32" });
      const exp = expected(name);
      const llama = (llamaCpp as { llama: NlcLlama }).llama;
      const theirs = await llamaCppSteps(llama, file, exp.prompt_ids, exp.ids);
      assert.deepEqual(
        theirs.map((s) => s.argmax),
        exp.ids,
      );
      compareSteps(`${name} as f32`, exp.top_logprobs, theirs, tol);
    },
  );
}

test(
  "llama.cpp runs Qwen2-MoE (a shared expert behind its gate) like our engine; routing it cannot express is refused",
  { skip: noLlama },
  async (t) => {
    // The golden Qwen2-MoE has a dense layer (mlp_only_layers), which llama.cpp's qwen2moe cannot run.
    const golden = loadModel(goldenPath("qwen2moe-bf16"));
    const refused = join(tempDir(t), "refused.gguf");
    await assert.rejects(
      exportGguf(golden, refused),
      (e) => e instanceof ModelError && e.code === "BAD_CONFIG" && /mixture in every layer/.test(e.message),
    );
    golden.close();
    const dir = join(tempDir(t), "qwen2moe");
    await makeModel({ arch: "qwen2moe", dtype: "f32", seed: 4, out: dir });
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, norm_topk_prob: true }));
    const renormalized = loadModel(dir);
    await assert.rejects(
      exportGguf(renormalized, refused),
      (e) => e instanceof ModelError && e.code === "BAD_CONFIG" && /norm_topk_prob differs/.test(e.message),
    );
    renormalized.close();
    writeFileSync(join(dir, "config.json"), JSON.stringify(config));
    const model = loadModel(dir);
    t.after(() => model.close());
    const file = join(tempDir(t), "m.gguf");
    await exportGguf(model, file, { dtype: "f32" });
    const p = await parse(file);
    const shape = (name: string) => p.tensorInfos.find((x) => x.name === name)!.shape.map(Number);
    assert.deepEqual(shape("blk.0.ffn_gate_exps.weight"), [64, 64, 4], "[hidden, expert width, experts]");
    assert.deepEqual(shape("blk.1.ffn_down_exps.weight"), [64, 64, 4]);
    assert.deepEqual(shape("blk.0.ffn_gate_inp.weight"), [64, 4]);
    assert.deepEqual(shape("blk.0.ffn_up_shexp.weight"), [64, 128]);
    assert.equal((p.metadata as Record<string, unknown>)["qwen2moe.expert_shared_feed_forward_length"], 128);
    const prompt = [5, 17, 99, 3, 42, 7];
    const ours = await ourGreedy(model, prompt, 10);
    const llama = (llamaCpp as { llama: NlcLlama }).llama;
    compareSteps("qwen2moe", ours.steps, await llamaCppSteps(llama, file, prompt, ours.ids), 1e-3);
  },
);

test(
  "llama.cpp runs a GraniteMoE without a shared MLP (make-model's) like our engine",
  { skip: noLlama },
  async (t) => {
    const dir = join(tempDir(t), "granitemoe");
    await makeModel({ arch: "granitemoe", dtype: "f32", seed: 6, out: dir });
    const model = loadModel(dir);
    t.after(() => model.close());
    const file = join(tempDir(t), "m.gguf");
    await exportGguf(model, file, { dtype: "f32" });
    const names = (await parse(file)).tensorInfos.map((x) => x.name);
    assert.ok(names.includes("blk.1.ffn_up_exps.weight") && !names.some((n) => n.includes("shexp")));
    const prompt = [9, 40, 120, 7, 33];
    const ours = await ourGreedy(model, prompt, 10);
    const llama = (llamaCpp as { llama: NlcLlama }).llama;
    compareSteps("granitemoe", ours.steps, await llamaCppSteps(llama, file, prompt, ours.ids), 1e-3);
  },
);

test(
  "llama.cpp runs Phi-3 (fused attn_qkv and ffn_up written back from the engine's row views) like our engine",
  { skip: noLlama },
  async (t) => {
    // The golden Phi-3 without its longrope (which has no export): llama.cpp against our engine.
    // Not in a folder named "phi…": llama.cpp then looks up Phi-3's "<|end|>" token by name
    // (general.name is the folder's), which the golden byte tokenizer does not have.
    const dir = join(tempDir(t), "fused");
    cpSync(goldenPath("phi3-bf16"), dir, { recursive: true });
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    const longrope = join(tempDir(t), "longrope.gguf");
    const withLongrope = loadModel(dir);
    await assert.rejects(exportGguf(withLongrope, longrope), (e) => e instanceof ModelError && e.code === "BAD_CONFIG");
    withLongrope.close();
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({ ...config, rope_scaling: null, max_position_embeddings: 256 }),
    );
    const model = loadModel(dir);
    t.after(() => model.close());
    const file = join(dir, "m.gguf");
    await exportGguf(model, file, { dtype: "f32" });
    const p = await parse(file);
    const names = p.tensorInfos.map((x) => x.name);
    assert.ok(names.includes("blk.0.attn_qkv.weight") && names.includes("blk.1.ffn_up.weight"));
    assert.ok(!names.some((n) => /attn_q\.|ffn_gate/.test(n)), "fused, as llama.cpp's phi3 reads them");
    assert.deepEqual(p.tensorInfos.find((x) => x.name === "blk.0.ffn_up.weight")!.shape.map(Number), [64, 2 * 192]);
    const prompt = expected("phi3-bf16").prompt_ids;
    const ours = await ourGreedy(model, prompt, 12);
    const llama = (llamaCpp as { llama: NlcLlama }).llama;
    compareSteps("phi3", ours.steps, await llamaCppSteps(llama, file, prompt, ours.ids), 1e-3);
  },
);

test(
  "llama.cpp runs Gemma 3 (8-position windows, post-block norms, 1 + w norms) like our engine; configs it cannot express are refused",
  { skip: noLlama },
  async (t) => {
    // The golden Gemma 3 as llama.cpp can run it: llama.cpp puts a window in every layer but each
    // 6th (here: all 4) and scales attention by 1/sqrt(head_dim). As it is, the export refuses it.
    const dir = join(tempDir(t), "gemma");
    cpSync(goldenPath("gemma3-bf16"), dir, { recursive: true });
    const asIs = loadModel(dir);
    for (const [change, why] of [
      [{}, /layer_types differ|query_pre_attn_scalar differs/],
      [{ query_pre_attn_scalar: 32 }, /layer_types differ/],
      [
        { query_pre_attn_scalar: 32, layer_types: Array(4).fill("sliding_attention"), rope_local_base_freq: 20000 },
        /rope_local_base_freq/,
      ],
    ] as const) {
      const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
      writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, ...change }));
      const m = loadModel(dir);
      await assert.rejects(
        exportGguf(m, join(dir, "no.gguf")),
        (e) => e instanceof ModelError && e.code === "BAD_CONFIG" && why.test(e.message),
      );
      m.close();
    }
    asIs.close();
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({
        ...config,
        rope_local_base_freq: 10000,
        query_pre_attn_scalar: 32,
        layer_types: Array(4).fill("sliding_attention"),
      }),
    );
    const model = loadModel(dir);
    t.after(() => model.close());
    const file = join(dir, "m.gguf");
    await exportGguf(model, file, { dtype: "f32" });
    const p = await parse(file);
    assert.equal(meta(p)["gemma3.attention.sliding_window"], 8);
    const names = p.tensorInfos.map((x) => x.name);
    for (const n of ["blk.0.post_attention_norm.weight", "blk.3.post_ffw_norm.weight", "blk.2.attn_k_norm.weight"])
      assert.ok(names.includes(n), n);
    // Norms as the engine applies them: the stored w plus 1.
    const raw = sourceBytes(model, "model.layers.1.post_feedforward_layernorm.weight");
    const stored = new Uint16Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
    const written = asF32(ggufTensor(file, p, "blk.1.post_ffw_norm.weight").bytes);
    assert.deepEqual(
      Array.from(written),
      Array.from(stored, (bits) => Math.fround(1 + bf16ToF32(bits))),
    );

    const prompt = expected("gemma3-bf16").prompt_ids; // 30 positions, then 12 more: windows of 8 slide
    const ours = await ourGreedy(model, prompt, 12);
    const llama = (llamaCpp as { llama: NlcLlama }).llama;
    // 0.01, as for GPT-2: llama.cpp's GELU goes through an f16 table.
    compareSteps("gemma3", ours.steps, await llamaCppSteps(llama, file, prompt, ours.ids), 0.01);
  },
);

test(
  "llama.cpp runs the golden Gemma 2 (soft caps, windows every other layer) exported as f32: the reference's ids and log-probabilities",
  { skip: noLlama },
  async (t) => {
    const model = loadModel(goldenPath("gemma2-bf16"));
    t.after(() => model.close());
    const file = join(tempDir(t), "m.gguf");
    await exportGguf(model, file, { dtype: "f32" });
    const p = await parse(file);
    assert.equal(meta(p)["gemma2.attn_logit_softcapping"], 10);
    assert.equal(meta(p)["gemma2.final_logit_softcapping"], 20);
    assert.equal(meta(p)["gemma2.attention.sliding_window"], 8);
    const exp = expected("gemma2-bf16");
    const llama = (llamaCpp as { llama: NlcLlama }).llama;
    const theirs = await llamaCppSteps(llama, file, exp.prompt_ids, exp.ids);
    assert.deepEqual(
      theirs.map((s) => s.argmax),
      exp.ids,
    );
    // 0.01, as for GPT-2 and Gemma 3: llama.cpp's GELU goes through an f16 table.
    compareSteps("gemma2 as f32", exp.top_logprobs, theirs, 0.01);
  },
);

/**
 * llama.cpp on an f32 GGUF of a copy of golden `name` with sliding_window null, against our engine
 * on the same copy (greedy ids equal, top-5 log-probabilities within `tol`).
 */
async function windowlessMatchesOurs(t: { after: (fn: () => void) => void }, name: string, tol: number) {
  const dir = join(tempDir(t), name);
  cpSync(goldenPath(name), dir, { recursive: true });
  const configFile = join(dir, "config.json");
  writeFileSync(configFile, JSON.stringify({ ...JSON.parse(readFileSync(configFile, "utf8")), sliding_window: null }));
  const model = loadModel(dir);
  t.after(() => model.close());
  assert.equal(model.config.attentionWindows, undefined);
  const exp = expected(name);
  const ours = await ourGreedy(model, exp.prompt_ids, exp.ids.length);
  const file = join(dir, "m.gguf");
  await exportGguf(model, file, { dtype: "f32" });
  const llama = (llamaCpp as { llama: NlcLlama }).llama;
  const theirs = await llamaCppSteps(llama, file, exp.prompt_ids, ours.ids);
  assert.deepEqual(
    theirs.map((s) => s.argmax),
    ours.ids,
  );
  compareSteps(`${name} without windows, as f32`, ours.steps, theirs, tol);
}

test(
  "llama.cpp runs the golden StarCoder2 without its window (which llama.cpp's starcoder2 does not slide) like our engine",
  { skip: noLlama },
  // ggml's GELU goes through an f16 table: 0.002-0.014 apart per step here (the golden weights make
  // large pre-activations), as Gemma's and Phi-2's are within 0.01.
  (t) => windowlessMatchesOurs(t, "starcoder2-bf16", 0.02),
);

test(
  "llama.cpp runs the golden EXAONE 4.0 without its windows like our engine; with them, export is a ModelError",
  { skip: noLlama },
  async (t) => {
    const windowed = loadModel(goldenPath("exaone4-bf16"));
    t.after(() => windowed.close());
    await assert.rejects(
      exportGguf(windowed, join(tempDir(t), "w.gguf")),
      (e) => e instanceof ModelError && e.code === "BAD_CONFIG" && /sliding windows/.test(e.message),
    );
    await windowlessMatchesOurs(t, "exaone4-bf16", 1e-3);
  },
);

test(
  "llama.cpp: a random Gemma 3 from make-model (a global layer every 6th, two rotary bases) decodes like our engine",
  { skip: noLlama },
  async (t) => {
    const dir = await tinyModel(t, "gemma3", "f32", { shape: { layers: 6, slidingPattern: 6, slidingWindow: 8 } });
    const model = loadModel(dir);
    t.after(() => model.close());
    assert.deepEqual(model.config.attentionWindows, [8, 8, 8, 8, 8, 0]);
    const prompt = model.tokenizer.encode("The quick brown fox jumps over the lazy dog, and then it ran");
    const ours = await ourGreedy(model, prompt, 16);
    const file = join(dir, "m.gguf");
    await exportGguf(model, file);
    const llama = (llamaCpp as { llama: NlcLlama }).llama;
    compareSteps("make-model gemma3", ours.steps, await llamaCppSteps(llama, file, prompt, ours.ids), 0.01);
  },
);

test(
  "llama.cpp: llama3 rope scaling (rope_freqs) on the golden f32 Llama matches our engine",
  { skip: noGolden || noLlama },
  async (t) => {
    // The golden weights with a llama3 rope_scaling whose ramp covers most frequencies at this
    // context length: our engine applies it to the rotary frequencies, llama.cpp through rope_freqs.
    const dir = join(tempDir(t), "scaled");
    cpSync(join(GOLDEN!, "llama-f32-tied"), dir, { recursive: true });
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    config.rope_scaling = {
      rope_type: "llama3",
      factor: 8,
      low_freq_factor: 1,
      high_freq_factor: 4,
      original_max_position_embeddings: 32,
    };
    writeFileSync(join(dir, "config.json"), JSON.stringify(config));
    const model = loadModel(dir);
    t.after(() => model.close());
    const file = join(dir, "m.gguf");
    await exportGguf(model, file);
    const p = await parse(file);
    const freqs = asF32(ggufTensor(file, p, "rope_freqs.weight").bytes);
    assert.equal(freqs.length, model.config.headDim / 2);
    freqs.forEach((f, i) => {
      const base = 1 / Math.pow(10000, (2 * i) / model.config.headDim);
      assert.ok(Math.abs(f - base / model.config.ropeInvFreq![i]) < 1e-4 * f, `rope_freqs[${i}]`);
    });
    assert.ok(freqs[0] === 1 && freqs[freqs.length - 1] > 7.9, "high frequencies kept, low ones slowed by 8");

    const prompt = expected("llama-f32-tied").prompt_ids;
    const ours = await ourGreedy(model, prompt, 12);
    const llama = (llamaCpp as { llama: NlcLlama }).llama;
    compareSteps("llama3-scaled", ours.steps, await llamaCppSteps(llama, file, prompt, ours.ids), 1e-3);
  },
);

test(
  "llama.cpp: a random llama from make-model (GQA, untied, llama3 scaling) decodes like our engine",
  { skip: noLlama },
  async (t) => {
    const dir = await tinyModel(t, "llama", "f32", {
      shape: {
        ropeScaling: {
          rope_type: "llama3",
          factor: 8,
          low_freq_factor: 1,
          high_freq_factor: 4,
          original_max_position_embeddings: 64,
        },
      },
    });
    const model = loadModel(dir);
    t.after(() => model.close());
    const prompt = model.tokenizer.encode(
      "The quick brown fox jumps over the lazy dog, and then the fox ran into the forest",
    );
    const ours = await ourGreedy(model, prompt, 16);

    const r = await openLlamaCppPeer(model, { cacheDir: tempDir(t), threads: 2 });
    assert.ok("peer" in r, `the peer did not open: ${"skipped" in r ? r.skipped : ""}`);
    let ids: number[];
    try {
      ids = (await r.peer.decode(prompt, 16)).ids;
    } finally {
      await r.peer.close();
    }
    // Greedy ids agree until the first step where our top two are within rounding (random models
    // have near-ties); after a legitimate divergence the continuations are unrelated.
    for (let k = 0; k < ours.ids.length; k++) {
      const margin = ours.steps[k][0][1] - ours.steps[k][1][1];
      if (margin < 0.01) break;
      assert.equal(ids[k], ours.ids[k], `step ${k} (margin ${margin.toFixed(4)})`);
    }
    const file = join(dir, "m.gguf");
    await exportGguf(model, file);
    const llama = (llamaCpp as { llama: NlcLlama }).llama;
    compareSteps("make-model llama", ours.steps, await llamaCppSteps(llama, file, prompt, ours.ids), 1e-3);
  },
);

/**
 * A tiny f32 Llama exported as `dtype`, the file read back, and its import loaded with weights "auto":
 * every matrix must come from the file's blocks.
 */
async function blockExport(t: Parameters<typeof tempDir>[0], dtype: "q8_0" | "q4_0", format: "int8" | "int4") {
  const model = loadModel(await tinyModel(t, "llama", "f32"));
  t.after(() => model.close());
  const file = join(tempDir(t), `m-${dtype}.gguf`);
  assert.equal((await exportGguf(model, file, { dtype })).dtype, dtype);
  const g = await readGguf(file);
  const imported = await importGguf(file, join(tempDir(t), "imported"));
  const loaded = loadModel(imported.dir, { weights: "auto" });
  t.after(() => loaded.close());
  const type = dtype.toUpperCase();
  assert.equal(loaded.weightFormat, format);
  assert.equal(loaded.blockCount!.taken[type], loaded.blockCount!.of, "every matrix from the file's blocks");
  assert.equal(quantizedFrom("BF16", loaded.blockCount), `from the GGUF's ${type} blocks`);
  return { model, file, g, loaded };
}

/**
 * llama.cpp running `file` and our engine running `loaded` (its import), teacher-forced on our 16
 * greedy steps. Both multiply the same weights; decoding, both quantize the activations to int8 per
 * 32 (our prefill keeps them f32, llama.cpp's does not). Measured on this tiny Llama: within 0.006 for
 * Q8_0 (0.003 fails) and Q4_0 (0.004 fails).
 */
async function compareWithLlamaCpp(what: string, loaded: LoadedModel, file: string, tol = 0.01): Promise<void> {
  const prompt = loaded.tokenizer.encode(
    "The quick brown fox jumps over the lazy dog, and then the fox ran into the forest",
  );
  const ours = await ourGreedy(loaded, prompt, 16);
  const llama = (llamaCpp as { llama: NlcLlama }).llama;
  compareSteps(what, ours.steps, await llamaCppSteps(llama, file, prompt, ours.ids), tol);
}

test(
  "Q8_0 export: llama.cpp decodes the file as our engine decodes its import, whose int8 weights are the file's blocks (q/k too)",
  { skip: noLlama },
  async (t) => {
    const { model, file, g, loaded: q8 } = await blockExport(t, "q8_0", "int8");
    const type = (name: string) => ggmlTypeName(g.tensors.find((x) => x.name === name)!.type);
    assert.deepEqual(
      ["token_embd.weight", "blk.0.attn_q.weight", "blk.1.ffn_down.weight", "blk.0.attn_norm.weight"].map(type),
      ["Q8_0", "Q8_0", "Q8_0", "F32"],
    );
    // Each block's values within half a step of the f32 it came from, plus what storing d as f16 moves
    // a code of at most 127 (ggml picks the codes with the unrounded d): 127 · d · 2^-11.
    const buf = readFileSync(file);
    const blocks = (name: string) => {
      const x = g.tensors.find((y) => y.name === name)!;
      const bytes = new Uint8Array(buf.subarray(x.offset, x.offset + x.byteLength));
      return { bytes, values: dequantize(x.type, bytes, x.dims[0] * x.dims[1]) };
    };
    const down = model.weights.layers[1].down!.w;
    const f32 = new Float32Array(readFileSync(down.file).buffer.slice(down.offset, down.offset + down.byteLength));
    const d = blocks("blk.1.ffn_down.weight");
    for (let i = 0; i < f32.length; i++) {
      const step = f16ToF32(d.bytes[34 * (i >> 5)] | (d.bytes[34 * (i >> 5) + 1] << 8));
      const bound = step / 2 + (127 * step) / 2048;
      assert.ok(Math.abs(d.values[i] - f32[i]) <= bound, `value ${i}: ${d.values[i]} vs ${f32[i]}, step ${step}`);
    }
    // q's rows are the file's blocks, back in rotate-half order (the import's unpermute).
    const c = q8.config;
    const q = (q8.weights.layers[0].qkv as { q: { w: Weight } }).q.w;
    const got = new Float32Array(q.rows * q.cols);
    native().embed(
      got,
      q.handle,
      Int32Array.from({ length: q.rows }, (_, i) => i),
    );
    const want = blocks("blk.0.attn_q.weight").values;
    const order = unpermutedRowOrder(c.heads, c.headDim);
    for (let r = 0; r < q.rows; r++) {
      assert.deepEqual(
        got.subarray(r * q.cols, (r + 1) * q.cols),
        want.subarray(order[r] * q.cols, (order[r] + 1) * q.cols),
      );
    }
    await compareWithLlamaCpp("Q8_0", q8, file);
  },
);

test(
  "Q4_0 export: llama.cpp decodes the file as our engine decodes its import with int4 weights, all of them the file's blocks",
  { skip: noLlama },
  async (t) => {
    const { file, g, loaded: q4 } = await blockExport(t, "q4_0", "int4"); // all Q4_0: "auto" is int4
    const types = new Set(g.tensors.filter((x) => x.dims.length === 2).map((x) => ggmlTypeName(x.type)));
    assert.deepEqual([...types], ["Q4_0"]);
    await compareWithLlamaCpp("Q4_0", q4, file);
  },
);

/**
 * A random Llama 256 wide (rows of whole 256-value blocks) of `layers` layers exported as `dtype`, the
 * file read back, and its import loaded with weights "auto".
 */
async function kQuantExport(
  t: Parameters<typeof tempDir>[0],
  dtype: "q4_k" | "q4_k_m",
  layers: number,
  widths = { hidden: 256, intermediate: 512 },
) {
  const dir = await tinyModel(t, "llama", "f32", {
    shape: { ...widths, layers, heads: 4, kvHeads: 2, vocab: 512, maxPositions: 256 },
  });
  const model = loadModel(dir);
  t.after(() => model.close());
  const file = join(tempDir(t), `m-${dtype}.gguf`);
  assert.equal((await exportGguf(model, file, { dtype })).dtype, dtype);
  const imported = await importGguf(file, join(tempDir(t), "imported"));
  const loaded = loadModel(imported.dir, { weights: "auto" });
  t.after(() => loaded.close());
  return { file, g: await readGguf(file), loaded };
}

test(
  "Q4_K export: llama.cpp decodes the file as our engine decodes its import with int4 weights, all of them the file's blocks",
  { skip: noLlama },
  async (t) => {
    const { file, g, loaded: q4 } = await kQuantExport(t, "q4_k", 2);
    const types = new Set(g.tensors.filter((x) => x.dims.length === 2).map((x) => ggmlTypeName(x.type)));
    assert.deepEqual([...types], ["Q4_K"]);
    assert.equal(q4.weightFormat, "int4");
    assert.equal(q4.blockCount!.taken.Q4_K, q4.blockCount!.of, "every matrix from the file's blocks");
    assert.equal(q4.weights.layers[1].down!.w.dtype, "Q4M");
    // llama.cpp quantizes x per 256 for Q4_K (Q8_K), we per 32, and our sub-block scales and mins are
    // f16: within 0.016 here (int8 copies of the import's bf16: 0.018; the bf16 with x in f32: 0.013).
    await compareWithLlamaCpp("Q4_K", q4, file, 0.02);
  },
);

test(
  "Q4_K_M export: Q6_K where llama-quantize puts it, loaded as int4+int8 (Q4_K blocks as int4, the rest int8), within 0.02 of llama.cpp",
  { skip: noLlama },
  async (t) => {
    const { file, g, loaded: m } = await kQuantExport(t, "q4_k_m", 8);
    const q6 = g.tensors.filter((x) => ggmlTypeName(x.type) === "Q6_K").map((x) => x.name);
    // The output matrix, and attn_v / ffn_down of the first and last eighth and every third between.
    const layers = [0, 3, 6, 7].flatMap((i) => [`blk.${i}.attn_v.weight`, `blk.${i}.ffn_down.weight`]);
    assert.deepEqual(q6.sort(), ["output.weight", ...layers].sort());
    assert.equal(m.weightFormat, "int4+int8");
    assert.deepEqual(
      [m.weights.layers[0].down!.w.dtype, m.weights.layers[1].down!.w.dtype, m.weights.head.w.dtype],
      ["Q8", "Q4M", "Q8"],
    );
    await compareWithLlamaCpp("Q4_K_M", m, file, 0.02);
  },
);

test(
  "Q4_K_M export of rows that are not whole blocks of 256: llama-quantize's fallbacks (Q5_0 for Q4_K, Q8_0 for Q6_K), within 0.02 of llama.cpp",
  { skip: noLlama },
  async (t) => {
    // 96 wide (whole blocks of 32, not of 256), as Qwen2.5-0.5B's 896: only ffn_down's rows (256) are K blocks.
    const { file, g, loaded: m } = await kQuantExport(t, "q4_k_m", 8, { hidden: 96, intermediate: 256 });
    const typeOf = new Map(g.tensors.map((x) => [x.name, ggmlTypeName(x.type)]));
    assert.deepEqual(
      [
        "blk.1.attn_q.weight",
        "blk.0.attn_v.weight",
        "blk.1.ffn_down.weight",
        "blk.0.ffn_down.weight",
        "output.weight",
      ].map((n) => typeOf.get(n)),
      ["Q5_0", "Q8_0", "Q4_K", "Q6_K", "Q8_0"],
    );
    assert.equal(m.weightFormat, "int4+int8");
    assert.deepEqual(
      [m.weights.layers[1].down!.w.dtype, m.weights.layers[1].up!.w.dtype],
      ["Q4M", "Q8"],
      "Q4_K blocks as int4, Q5_0 ones as int8",
    );
    await compareWithLlamaCpp("Q4_K_M with fallbacks", m, file, 0.02);
  },
);

test("Q4_K export of a mixture: stacked experts whose rows are not whole blocks of 256 take Q5_0", async (t) => {
  const dir = join(tempDir(t), "qwen3moe");
  await makeModel({
    arch: "qwen3moe",
    dtype: "f32",
    seed: 3,
    out: dir,
    shape: { hidden: 64, intermediate: 96, layers: 2, heads: 4, kvHeads: 2, vocab: 512, maxPositions: 256 },
  });
  const model = loadModel(dir);
  t.after(() => model.close());
  const file = join(tempDir(t), "moe-q4_k.gguf");
  await exportGguf(model, file, { dtype: "q4_k" }); // threw "rows of 64 are not whole blocks" before
  const g = await readGguf(file);
  const typeOf = new Map(g.tensors.map((x) => [x.name, ggmlTypeName(x.type)]));
  assert.deepEqual(
    ["blk.0.ffn_gate_exps.weight", "blk.0.ffn_down_exps.weight", "blk.0.ffn_gate_inp.weight"].map((n) => typeOf.get(n)),
    ["Q5_0", "Q5_0", "F32"],
  );
  const imported = await importGguf(file, join(tempDir(t), "imported"));
  const q = loadModel(imported.dir, { weights: "auto" });
  t.after(() => q.close());
  // Q5_0 values are within half a step of the source's: the first reply token's log-probabilities
  // follow the f32 model's (its top 5 among the import's top 20: a random model's are close together).
  const prompt = model.tokenizer.encode("The harbour was quiet");
  const top = async (m: LoadedModel, n: number) => {
    for await (const ev of new Session(m).generate(prompt, { maxTokens: 1, temperature: 0, logprobs: n }))
      if (ev.type === "token") return new Map(ev.topLogprobs!);
    throw new Error("no token");
  };
  const [a, b] = [await top(model, 5), await top(q, 20)];
  for (const [id, p] of a)
    assert.ok(Math.abs((b.get(id) ?? -Infinity) - p) < 0.05, `token ${id}: ${b.get(id)} vs ${p}`);
});

test(
  "llama.cpp peer: an architecture llama.cpp cannot run is skipped with the reason",
  { skip: noGolden },
  async (t) => {
    const model = loadModel(join(GOLDEN!, "opt-bf16"));
    t.after(() => model.close());
    const r = await openLlamaCppPeer(model, { cacheDir: tempDir(t) });
    assert.ok("skipped" in r);
    assert.match(r.skipped, /OPTForCausalLM/);
  },
);

test("GGUF export refuses YaRN rather than write a model without its attention factor", async (t) => {
  const model = loadModel(goldenPath("llama-yarn-bf16"));
  t.after(() => model.close());
  await assert.rejects(
    exportGguf(model, join(tempDir(t), "yarn.gguf")),
    (e) => e instanceof ModelError && e.code === "BAD_CONFIG" && /attention factor \(longrope, YaRN\)/.test(e.message),
  );
});
