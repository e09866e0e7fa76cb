// Tests of every native CPU kernel (core/native/src) against plain TypeScript references computed in
// float64 from the same stored values, on both kernel paths ("auto" = AVX2 where supported, and
// "portable"), all weight dtypes and both layouts, with odd sizes; plus argument validation.
// To add a kernel: add a reference here and loop it over forPaths(), like the tests below.
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { native, NativeDType } from "../core/native/addon.js";
import type { KernelPath, NativeMapping, NativeWeight } from "../core/native/addon.js";
import type { Weight } from "../core/backend/backend.js";
import { CpuBackend } from "../core/backend/cpu.js";
import { argmax } from "../core/engine/sampler.js";
import {
  DTYPES,
  DTYPE_NAME,
  assertClose,
  bitsToF32,
  f32ToBits,
  forPaths,
  PATHS,
  halfToFloat,
  seededRandom,
} from "./kernel-helpers.js";

const hn = native();
const tmp = mkdtempSync(join(tmpdir(), "hire-kernels-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

// ---- deterministic random numbers -------------------------------------------------------------------

const { rand, uniform, randArray } = seededRandom(0x12345678);

// ---- dtype decoding (reference) ---------------------------------------------------------------------

const bf16ToFloat = (h: number): number => bitsToF32(h << 16);

/** Random stored values of a dtype: the raw bytes and the exact f32 values they decode to. */
function randomStored(dtype: NativeDType, count: number): { bytes: Buffer; values: Float64Array } {
  const values = new Float64Array(count);
  if (dtype === NativeDType.F32) {
    const a = randArray(count);
    for (let i = 0; i < count; i++) values[i] = a[i];
    return { bytes: Buffer.from(a.buffer), values };
  }
  const h = new Uint16Array(count);
  for (let i = 0; i < count; i++) {
    if (dtype === NativeDType.BF16) {
      h[i] = f32ToBits(uniform(-1, 1)) >>> 16;
      values[i] = bf16ToFloat(h[i]);
    } else {
      // Mostly normal halves around 2^-5 .. 2^2, some subnormals.
      const sign = rand() < 0.5 ? 0x8000 : 0;
      const exp = rand() < 0.05 ? 0 : 10 + Math.floor(rand() * 8);
      h[i] = sign | (exp << 10) | Math.floor(rand() * 1024);
      values[i] = halfToFloat(h[i]);
    }
  }
  return { bytes: Buffer.from(h.buffer), values };
}

// One token through q, k and v in one dispatch (matvec_many): each part's rows cut across the threads
// wherever the joint range falls, and still every matmul's bits.
test("matmulMany (one token) gives each part's matmul bit for bit, on every path and dtype", () => {
  forPaths((path) => {
    for (const dtype of [NativeDType.BF16, NativeDType.F16, NativeDType.F32]) {
      const cols = 520; // not a multiple of 32: the kernels' tails run too
      const rows = [1030, 250, 250];
      const { mapping, weights } = makeWeights([
        ...rows.map((r) => ({ dtype, rows: r, cols })),
        { dtype: NativeDType.F32, rows: 1, cols: 250 },
      ]);
      try {
        const [q, k, v, bias] = weights;
        const x = randArray(cols);
        const ys = rows.map((r) => new Float32Array(r));
        hn.matmulMany(x, ys[0], q.w, null, ys[1], k.w, bias.w, ys[2], v.w, null);
        const want = rows.map((r) => new Float32Array(r));
        hn.matmul(want[0], x, q.w, 1, null);
        hn.matmul(want[1], x, k.w, 1, bias.w);
        hn.matmul(want[2], x, v.w, 1, null);
        assert.deepEqual(ys, want, `${path} dtype ${dtype}`);
      } finally {
        hn.unmap(mapping);
      }
    }
  });
  const a = hn.weightFromArray(randArray(64 * 32), NativeDType.F32, 64, 32, false);
  const b = hn.weightFromArray(randArray(64 * 16), NativeDType.F32, 64, 16, false);
  const x = randArray(32);
  const y = new Float32Array(128);
  assert.throws(() => hn.matmulMany(x, y, a), /triples/);
  assert.throws(() => hn.matmulMany(x, y.subarray(0, 64), a, null, y.subarray(64), b, null), /w\[1\] has 16 columns/);
  assert.throws(() => hn.matmulMany(x, y.subarray(0, 64), a, null, y.subarray(32), a, null), /must not overlap/);
  assert.throws(() => hn.matmulMany(x, y.subarray(0, 63), a, null), /y\[0\] has 63 elements/);
});

// ---- weight files -----------------------------------------------------------------------------------

interface TestWeight {
  w: NativeWeight;
  /** Logical [rows][cols] values (row-major, whatever the memory layout). */
  values: Float64Array;
  rows: number;
  cols: number;
}

interface WeightSpec {
  dtype: NativeDType;
  rows: number;
  cols: number;
  transposed?: boolean;
  stored?: { bytes: Buffer; values: Float64Array };
}

let fileCounter = 0;
/** Writes the weights into one temp file at odd, non-zero offsets, maps it, returns the views. */
function makeWeights(specs: WeightSpec[]): { mapping: NativeMapping; byteLength: number; weights: TestWeight[] } {
  const parts: Buffer[] = [];
  const offsets: number[] = [];
  const stored: { bytes: Buffer; values: Float64Array }[] = [];
  let off = 0;
  for (const s of specs) {
    const pad = 2 + 2 * Math.floor(rand() * 15); // even, often not 4-aligned
    parts.push(Buffer.alloc(pad, 0xa5));
    off += pad;
    offsets.push(off);
    const st = s.stored ?? randomStored(s.dtype, s.rows * s.cols);
    stored.push(st);
    parts.push(st.bytes);
    off += st.bytes.length;
  }
  parts.push(Buffer.alloc(8, 0x5a));
  const file = join(tmp, `w${fileCounter++}.bin`);
  writeFileSync(file, Buffer.concat(parts));
  const { mapping, byteLength } = hn.mapFile(file, false);
  const weights = specs.map((s, i) => {
    const tr = s.transposed ?? false;
    const mem = stored[i].values;
    // Memory is [rows][cols], or [cols][rows] when transposed.
    let values = mem;
    if (tr) {
      values = new Float64Array(s.rows * s.cols);
      for (let r = 0; r < s.rows; r++) for (let c = 0; c < s.cols; c++) values[r * s.cols + c] = mem[c * s.rows + r];
    }
    return { w: hn.weight(mapping, offsets[i], s.dtype, s.rows, s.cols, tr), values, rows: s.rows, cols: s.cols };
  });
  return { mapping, byteLength, weights };
}

// ---- comparison ---------------------------------------------------------------------------------

const relTol = (want: ArrayLike<number>, rel: number, abs: number) => (i: number) => abs + rel * Math.abs(want[i]);

// ---- kernel paths ---------------------------------------------------------------------------------

describe("cpu info and kernel paths", () => {
  test("cpuInfo reports features and switches paths", () => {
    const info = hn.cpuInfo();
    assert.equal(typeof info.avx2, "boolean");
    assert.equal(typeof info.fma, "boolean");
    assert.equal(typeof info.f16c, "boolean");
    assert.equal(typeof info.avx512vnni, "boolean");
    const avx2 = info.avx2 && info.fma && info.f16c;
    const want = [...(avx2 && info.avx512vnni ? ["avx512"] : []), ...(avx2 ? ["avx2"] : []), "portable"];
    assert.deepEqual(info.paths, want);
    assert.equal(info.path, want[0]);
    for (const p of want) {
      hn.setKernelPath(p as KernelPath);
      assert.equal(hn.cpuInfo().path, p);
    }
    hn.setKernelPath("auto");
    assert.equal(hn.cpuInfo().path, want[0]);
    assert.throws(
      () => hn.setKernelPath("fast" as "auto"),
      /setKernelPath: path must be one of "auto", .*"portable" on this CPU, got "fast"/,
    );
    if (!info.avx512vnni) assert.throws(() => hn.setKernelPath("avx512"), /setKernelPath/);
  });

  test("threads and bandwidth probe", () => {
    const t = hn.getThreads();
    assert.ok(Number.isInteger(t) && t >= 1);
    assert.throws(() => hn.setThreads(0), /setThreads/);
    assert.throws(() => hn.setThreads(1.5), /setThreads/);
    const bw = hn.readBandwidth(1 << 20, 2);
    assert.ok(typeof bw === "number" && bw > 0 && Number.isFinite(bw), `bandwidth ${bw}`);
    assert.throws(() => hn.readBandwidth(-1, 1), /readBandwidth/);
    // Gathering one in five 8 KiB pieces; a chunk larger than the buffer has nothing to read.
    const gather = hn.readBandwidth(1 << 22, 2, 8192);
    assert.ok(gather > 0 && Number.isFinite(gather), `gather bandwidth ${gather}`);
    assert.equal(hn.readBandwidth(1 << 20, 1, 1 << 21), 0);
    assert.throws(() => hn.readBandwidth(1 << 20, 1, -8), /chunk/);
  });
});

// ---- conversions ----------------------------------------------------------------------------------

describe("dtype conversion", () => {
  test("every f16 and bf16 bit pattern decodes exactly (embed)", () => {
    const all = new Uint16Array(65536);
    for (let i = 0; i < 65536; i++) all[i] = i;
    const bytes = Buffer.from(all.buffer);
    const f16v = Float64Array.from(all, halfToFloat);
    const bf16v = Float64Array.from(all, bf16ToFloat);
    const { weights } = makeWeights([
      { dtype: NativeDType.F16, rows: 2, cols: 32768, stored: { bytes, values: f16v } },
      { dtype: NativeDType.BF16, rows: 2, cols: 32768, stored: { bytes, values: bf16v } },
    ]);
    forPaths((path) => {
      for (const [k, tw] of weights.entries()) {
        const y = new Float32Array(65536);
        hn.embed(y, tw.w, Int32Array.from([0, 1]));
        for (let i = 0; i < 65536; i++) {
          const want = tw.values[i];
          if (Number.isNaN(want)) assert.ok(Number.isNaN(y[i]), `${path} ${k} ${i}`);
          else assert.ok(Object.is(y[i], Math.fround(want)), `${path} dtype ${k} pattern ${i}: ${y[i]} vs ${want}`);
        }
      }
    });
  });
});

// ---- matmul -----------------------------------------------------------------------------------------

function refMatmul(
  x: Float32Array,
  tw: TestWeight,
  n: number,
  bias: Float64Array | null,
): { y: Float64Array; mag: Float64Array } {
  const { rows, cols, values } = tw;
  const y = new Float64Array(n * rows);
  const mag = new Float64Array(n * rows);
  for (let t = 0; t < n; t++) {
    for (let r = 0; r < rows; r++) {
      let s = bias ? bias[r] : 0;
      let m = bias ? Math.abs(bias[r]) : 0;
      const wo = r * cols;
      const xo = t * cols;
      for (let k = 0; k < cols; k++) {
        const p = x[xo + k] * values[wo + k];
        s += p;
        m += Math.abs(p);
      }
      y[t * rows + r] = s;
      mag[t * rows + r] = m;
    }
  }
  return { y, mag };
}

describe("mapFile", () => {
  test("a file read into memory gives the same bytes and results as the file mapped", () => {
    // 3 MiB + 7 bytes: more than one 2 MiB huge page, and a size that is not a page multiple.
    const bytes = Buffer.alloc(3 * 1024 * 1024 + 7);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
    const file = join(tmp, "read-in.bin");
    writeFileSync(file, bytes);
    const mapped = hn.mapFile(file, false);
    const read = hn.mapFile(file, true);
    assert.equal(read.byteLength, bytes.length);
    assert.equal(mapped.byteLength, bytes.length);
    // A bf16 512 x 1024 weight at an odd even offset near the end, through each mapping.
    const off = bytes.length - 7 - 2 * 512 * 1024 - 2;
    const x = randArray(1024);
    const yMapped = new Float32Array(512);
    const yRead = new Float32Array(512);
    hn.matmul(yMapped, x, hn.weight(mapped.mapping, off, NativeDType.BF16, 512, 1024, false), 1, null);
    hn.matmul(yRead, x, hn.weight(read.mapping, off, NativeDType.BF16, 512, 1024, false), 1, null);
    assert.deepEqual(yRead, yMapped);
    assert.ok(yRead.some((v) => v !== 0));
    hn.unmap(read.mapping);
    hn.unmap(mapped.mapping);

    const empty = join(tmp, "empty.bin");
    writeFileSync(empty, Buffer.alloc(0));
    assert.equal(hn.mapFile(empty, true).byteLength, 0);
    for (const inMemory of [false, true]) {
      assert.throws(() => hn.mapFile(join(tmp, "missing.bin"), inMemory), /missing\.bin: No such file/);
      assert.throws(() => hn.mapFile(tmp, inMemory), /not a regular file/);
    }
    assert.throws(() => (hn.mapFile as (p: string) => unknown)(file), /inMemory must be a boolean/);
  });
});

describe("matmul", () => {
  const ROWS = [1, 7, 33, 257];
  const COLS = [1, 5, 17, 100, 1000];
  const NS = [1, 2, 3, 7, 17]; // n > 1 hits the GEMM token-block tails 2, 3, 1 (7) and 5 (17)

  for (const dtype of DTYPES) {
    for (const transposed of [false, true]) {
      test(`${DTYPE_NAME[dtype]} ${transposed ? "transposed [in][out]" : "[out][in]"} vs reference`, () => {
        const specs: WeightSpec[] = [];
        for (const rows of ROWS) for (const cols of COLS) specs.push({ dtype, rows, cols, transposed });
        // Biases in every dtype, one per row count.
        for (const rows of ROWS) specs.push({ dtype: DTYPES[rows % 3], rows: 1, cols: rows });
        const { weights } = makeWeights(specs);
        const biases = new Map<number, TestWeight>();
        for (const [i, rows] of ROWS.entries()) biases.set(rows, weights[ROWS.length * COLS.length + i]);
        let s = 0;
        for (const tw of weights.slice(0, ROWS.length * COLS.length)) {
          for (const n of NS) {
            const b = (s++ & 1) === 1 ? biases.get(tw.rows)! : null;
            const x = randArray(n * tw.cols);
            const ref = refMatmul(x, tw, n, b ? b.values : null);
            forPaths((path) => {
              const y = new Float32Array(n * tw.rows + 3).fill(777);
              hn.matmul(y, x, tw.w, n, b ? b.w : null);
              assertClose(
                y,
                ref.y,
                (i) => 1e-6 + 2e-6 * ref.mag[i],
                `${path} ${tw.rows}x${tw.cols} n=${n} bias=${!!b}`,
              );
              // Nothing written past n*rows.
              assert.deepEqual(Array.from(y.subarray(n * tw.rows)), [777, 777, 777]);
            });
          }
        }
      });
    }
  }

  test("large token counts (GEMM tails) and thread counts give identical results", () => {
    const { weights } = makeWeights([
      { dtype: NativeDType.BF16, rows: 257, cols: 1000 },
      { dtype: NativeDType.F16, rows: 257, cols: 1000, transposed: true },
      { dtype: NativeDType.F32, rows: 100, cols: 301 },
      { dtype: NativeDType.BF16, rows: 1, cols: 257 },
    ]);
    const threads = hn.getThreads();
    try {
      forPaths((path) => {
        for (const tw of weights.slice(0, 3)) {
          for (const n of [1, 17, 64, 100]) {
            const x = randArray(n * tw.cols);
            const bias = tw.rows === 257 ? weights[3] : null;
            const ref = refMatmul(x, tw, n, bias ? bias.values : null);
            const results: Float32Array[] = [];
            for (const t of [1, 2, 3]) {
              hn.setThreads(t);
              const y = new Float32Array(n * tw.rows);
              hn.matmul(y, x, tw.w, n, bias ? bias.w : null);
              results.push(y);
            }
            assertClose(results[0], ref.y, (i) => 1e-6 + 2e-6 * ref.mag[i], `${path} ${tw.rows}x${tw.cols} n=${n}`);
            assert.deepEqual(results[1], results[0], `${path} ${tw.rows}x${tw.cols} n=${n}: 2 threads differ from 1`);
            assert.deepEqual(results[2], results[0], `${path} ${tw.rows}x${tw.cols} n=${n}: 3 threads differ from 1`);
          }
        }
      });
    } finally {
      hn.setThreads(threads);
    }
  });

  // The AVX-512 micro-kernel (two panels x 8 tokens, k in blocks of 2048) sums every output exactly as
  // the AVX2 one does (k in order from zero, then the bias), so the two paths agree bit for bit: on
  // odd panel counts and a partial last panel (rows 16, 17, 48, 61), on k spanning two blocks (2100)
  // and on every token tail of both kernels (n = 2 .. 9, 13, 17, 24; one token is the GEMV).
  test("GEMM: the avx512 path gives the avx2 path's bits", (t) => {
    if (!PATHS.includes("avx512") || !PATHS.includes("avx2")) {
      t.skip(`this CPU runs ${PATHS.join(", ")}`);
      return;
    }
    const specs: WeightSpec[] = [];
    for (const rows of [16, 17, 48, 61])
      for (const cols of [7, 64, 2100]) specs.push({ dtype: DTYPES[rows % 3], rows, cols });
    const { weights } = makeWeights([...specs, { dtype: NativeDType.BF16, rows: 1, cols: 61 }]);
    const bias = weights[specs.length];
    try {
      for (const tw of weights.slice(0, specs.length)) {
        for (const n of [2, 3, 4, 5, 6, 7, 8, 9, 13, 17, 24]) {
          const x = randArray(n * tw.cols);
          const b = tw.rows === 61 ? bias.w : null;
          const ys = (["avx2", "avx512"] as const).map((path) => {
            hn.setKernelPath(path);
            const y = new Float32Array(n * tw.rows);
            hn.matmul(y, x, tw.w, n, b);
            return y;
          });
          assert.deepEqual(ys[1], ys[0], `${tw.rows}x${tw.cols} n=${n} bias=${!!b}`);
        }
      }
    } finally {
      hn.setKernelPath("auto");
    }
  });

  test("n = 0 is a no-op", () => {
    const { weights } = makeWeights([{ dtype: NativeDType.F32, rows: 3, cols: 4 }]);
    hn.matmul(new Float32Array(0), new Float32Array(0), weights[0].w, 0, null);
  });
});

// ---- embedding and norms ------------------------------------------------------------------------------

describe("embed", () => {
  test("rows of every dtype, and scaled rows (Gemma's √hidden)", () => {
    const { weights } = makeWeights(DTYPES.map((dtype) => ({ dtype, rows: 50, cols: 37 })));
    const ids = Int32Array.from([0, 49, 7, 7, 23]);
    forPaths((path) => {
      for (const tw of weights) {
        const y = new Float32Array(ids.length * tw.cols);
        hn.embed(y, tw.w, ids);
        const want = new Float64Array(y.length);
        ids.forEach((id, i) => want.set(tw.values.subarray(id * tw.cols, (id + 1) * tw.cols), i * tw.cols));
        assertClose(y, want, () => 0, `${path} embed`);
        const scale = Math.sqrt(1152);
        hn.embed(y, tw.w, ids, scale);
        // Each value times the scale rounded to f32, once (as transformers multiplies in f32).
        assertClose(
          y,
          want.map((v) => Math.fround(Math.fround(v) * Math.fround(scale))),
          () => 0,
          `${path} scaled embed`,
        );
      }
    });
  });
});

function refRmsNorm(x: Float32Array, g: Float64Array, n: number, dim: number, eps: number): Float64Array {
  const y = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) {
    let ss = 0;
    for (let j = 0; j < dim; j++) ss += x[i * dim + j] ** 2;
    const inv = 1 / Math.sqrt(ss / dim + eps);
    for (let j = 0; j < dim; j++) y[i * dim + j] = x[i * dim + j] * inv * g[j];
  }
  return y;
}

function refLayerNorm(
  x: Float32Array,
  g: Float64Array,
  b: Float64Array,
  n: number,
  dim: number,
  eps: number,
): Float64Array {
  const y = new Float64Array(n * dim);
  for (let i = 0; i < n; i++) {
    let s = 0;
    for (let j = 0; j < dim; j++) s += x[i * dim + j];
    const mean = s / dim;
    let v = 0;
    for (let j = 0; j < dim; j++) v += (x[i * dim + j] - mean) ** 2;
    const inv = 1 / Math.sqrt(v / dim + eps);
    for (let j = 0; j < dim; j++) y[i * dim + j] = (x[i * dim + j] - mean) * inv * g[j] + b[j];
  }
  return y;
}

describe("norms", () => {
  const DIMS = [1, 7, 64, 1000, 4099];
  test("rmsNorm and layerNorm vs reference, in place and not", () => {
    const specs: WeightSpec[] = [];
    for (const dim of DIMS)
      for (const dtype of DTYPES) specs.push({ dtype, rows: 1, cols: dim }, { dtype, rows: 1, cols: dim });
    const { weights } = makeWeights(specs);
    forPaths((path) => {
      let k = 0;
      for (const dim of DIMS) {
        for (const dtype of DTYPES) {
          const g = weights[k++];
          const b = weights[k++];
          for (const n of [1, 3, 40]) {
            const x = randArray(n * dim, -3, 3);
            const what = `${path} dim=${dim} ${DTYPE_NAME[dtype]} n=${n}`;
            const eps = 1e-5;
            const wantR = refRmsNorm(x, g.values, n, dim, eps);
            const y = new Float32Array(n * dim);
            hn.rmsNorm(y, x, g.w, n, eps);
            assertClose(y, wantR, relTol(wantR, 1e-5, 1e-6), `rmsNorm ${what}`);
            const wantL = refLayerNorm(x, g.values, b.values, n, dim, eps);
            hn.layerNorm(y, x, g.w, b.w, n, eps);
            assertClose(y, wantL, relTol(wantL, 1e-5, 1e-5), `layerNorm ${what}`);
            const inPlace = Float32Array.from(x);
            hn.rmsNorm(inPlace, inPlace, g.w, n, eps);
            assertClose(inPlace, wantR, relTol(wantR, 1e-5, 1e-6), `rmsNorm in place ${what}`);
          }
        }
      }
    });
  });
});

// ---- rope -------------------------------------------------------------------------------------------

function refRope(
  x: Float32Array,
  n: number,
  nHeads: number,
  headDim: number,
  pos: Int32Array,
  invFreq: Float32Array,
  factor = 1,
): Float64Array {
  const y = Float64Array.from(x);
  const half = invFreq.length;
  for (let i = 0; i < n; i++) {
    for (let h = 0; h < nHeads; h++) {
      const o = (i * nHeads + h) * headDim;
      for (let j = 0; j < half; j++) {
        const a = pos[i] * invFreq[j];
        const c = factor * Math.cos(a);
        const s = factor * Math.sin(a);
        const x1 = x[o + j];
        const x2 = x[o + j + half];
        y[o + j] = x1 * c - x2 * s;
        y[o + j + half] = x2 * c + x1 * s;
      }
    }
  }
  return y;
}

describe("rope", () => {
  test("rotate_half, full and partial rotary dims", () => {
    const cases = [
      { nHeads: 3, headDim: 64, half: 32 },
      { nHeads: 2, headDim: 10, half: 4 },
      { nHeads: 5, headDim: 34, half: 17 },
      { nHeads: 1, headDim: 8, half: 0 },
      { nHeads: 8, headDim: 128, half: 64 }, // 200 tokens of this run on the thread pool
    ];
    forPaths((path) => {
      for (const c of cases) {
        for (const n of [1, 3, 200]) {
          const pos = Int32Array.from({ length: n }, (_, i) => (i === 1 ? 100000 : i * 37));
          const invFreq = Float32Array.from({ length: c.half }, (_, j) => 10000 ** ((-2 * j) / (2 * c.half)));
          const x = randArray(n * c.nHeads * c.headDim);
          const want = refRope(x, n, c.nHeads, c.headDim, pos, invFreq);
          const y = Float32Array.from(x);
          hn.rope(y, n, c.nHeads, c.headDim, pos, invFreq);
          assertClose(y, want, () => 2e-6, `${path} rope ${JSON.stringify(c)} n=${n}`);
          // Dims at or past rotDim are untouched bit for bit.
          for (let i = 0; i < n * c.nHeads; i++)
            for (let d = 2 * c.half; d < c.headDim; d++) assert.equal(y[i * c.headDim + d], x[i * c.headDim + d]);
        }
      }
    });
  });

  test("longrope's factor scales cos and sin of the rotary dims only; a bad factor is an error", () => {
    const [n, nHeads, headDim, half] = [5, 3, 16, 6]; // partial: dims 12..15 pass through
    const pos = Int32Array.from({ length: n }, (_, i) => 40 * i + 3);
    const invFreq = Float32Array.from({ length: half }, (_, j) => 10000 ** (-j / half));
    const x = randArray(n * nHeads * headDim);
    forPaths((path) => {
      const y = Float32Array.from(x);
      hn.rope(y, n, nHeads, headDim, pos, invFreq, 1.19);
      assertClose(y, refRope(x, n, nHeads, headDim, pos, invFreq, 1.19), () => 3e-6, `${path} factor 1.19`);
      for (let i = 0; i < n * nHeads; i++)
        for (let d = 2 * half; d < headDim; d++) assert.equal(y[i * headDim + d], x[i * headDim + d]);
      const one = Float32Array.from(x);
      const none = Float32Array.from(x);
      hn.rope(one, n, nHeads, headDim, pos, invFreq, 1);
      hn.rope(none, n, nHeads, headDim, pos, invFreq);
      assert.deepEqual(one, none, "factor 1 is the plain rotation, bit for bit");
    });
    for (const bad of [0, -1, NaN, Infinity]) {
      assert.throws(
        () => hn.rope(Float32Array.from(x), n, nHeads, headDim, pos, invFreq, bad),
        /factor must be|finite/,
      );
    }
  });
});

// ---- elementwise ------------------------------------------------------------------------------------

function erf(x: number): number {
  // Maclaurin series; |x| >= 4 gives erf = +-1 within 2e-8.
  if (Math.abs(x) >= 4) return Math.sign(x);
  let term = x;
  let sum = x;
  for (let k = 1; k < 200; k++) {
    term *= (-x * x) / k;
    const add = term / (2 * k + 1);
    sum += add;
    if (Math.abs(add) < 1e-17) break;
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}
const silu = (v: number): number => v / (1 + Math.exp(-v));
const ACTS: Record<"relu" | "gelu" | "gelu_tanh" | "silu", (v: number) => number> = {
  relu: (v) => Math.max(v, 0),
  gelu: (v) => 0.5 * v * (1 + erf(v / Math.SQRT2)),
  gelu_tanh: (v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))),
  silu,
};

describe("elementwise", () => {
  const COUNTS = [1, 7, 1000, 200003];
  test("activate, siluMul, add vs reference", () => {
    forPaths((path) => {
      for (const count of COUNTS) {
        const x = randArray(count + 5, -12, 12);
        for (const [kind, f] of Object.entries(ACTS)) {
          const y = Float32Array.from(x);
          hn.activate(y, count, kind as keyof typeof ACTS);
          const want = Array.from(x.subarray(0, count), f);
          assertClose(y, want, relTol(want, 2e-6, 2e-6), `${path} ${kind} count=${count}`);
          assert.deepEqual(y.subarray(count), x.subarray(count), `${kind}: wrote past count`);
        }
        const up = randArray(count, -3, 3);
        const g = Float32Array.from(x);
        hn.siluMul(g, up, count);
        const wantSm = Array.from({ length: count }, (_, i) => silu(x[i]) * up[i]);
        assertClose(g, wantSm, relTol(wantSm, 2e-6, 2e-6), `${path} siluMul count=${count}`);
        const a = Float32Array.from(x);
        hn.add(a, up, count);
        const wantAdd = Array.from({ length: count }, (_, i) => Math.fround(x[i] + up[i]));
        assertClose(a, wantAdd, () => 0, `${path} add count=${count}`);
        hn.add(a, a, count); // aliasing is allowed
        assertClose(
          a,
          wantAdd.map((v) => 2 * v),
          () => 0,
          `${path} add aliased count=${count}`,
        );
      }
    });
  });

  test("softmax vs reference", () => {
    forPaths((path) => {
      for (const dim of [1, 7, 100, 1000, 40000]) {
        for (const n of [1, 3]) {
          const x = randArray(n * dim, -20, 20);
          if (dim > 2) x[1] = -Infinity; // masked entry
          const want = new Float64Array(n * dim);
          for (let i = 0; i < n; i++) {
            const row = x.subarray(i * dim, (i + 1) * dim);
            const m = Math.max(...row);
            let s = 0;
            for (const v of row) s += Math.exp(v - m);
            row.forEach((v, j) => (want[i * dim + j] = Math.exp(v - m) / s));
          }
          const y = Float32Array.from(x);
          hn.softmax(y, n, dim);
          assertClose(y, want, relTol(want, 1e-5, 1e-9), `${path} softmax dim=${dim} n=${n}`);
        }
      }
    });
  });
});

test("argmax is sampler.ts's argmax: first of ties, NaN never wins (x[0] kept when NaN), -0, -inf, tails", () => {
  const cases: Float32Array[] = [];
  for (const n of [1, 7, 8, 9, 1000, 128256]) cases.push(randArray(n, -10, 10));
  const ties = randArray(5000, -1, 1);
  ties[17] = ties[4000] = 3;
  cases.push(ties);
  const nan = randArray(300, -1, 1);
  nan[3] = NaN;
  nan[200] = NaN;
  cases.push(nan);
  const first = randArray(300, -1, 1);
  first[0] = NaN;
  cases.push(first);
  cases.push(Float32Array.of(-Infinity, -Infinity, -Infinity));
  cases.push(Float32Array.of(-0, 0, -1, 0));
  cases.push(Float32Array.of(-Infinity, NaN, -5));
  const tail = new Float32Array(19).fill(-2);
  tail[18] = 1; // the maximum in the scalar tail after the 8-wide loop
  cases.push(tail);
  for (const [i, x] of cases.entries()) {
    assert.equal(hn.argmax(x, x.length), argmax(x), `case ${i} (n=${x.length})`);
    assert.equal(hn.argmax(x, 1), 0, `case ${i}: n = 1`);
  }
  assert.throws(() => hn.argmax(new Float32Array(4), 5), /x has 4/);
  assert.throws(() => hn.argmax(new Float32Array(4), 0), /n/);
});

// ---- attention --------------------------------------------------------------------------------------

function refAttention(
  q: Float32Array,
  kc: Float32Array,
  vc: Float32Array,
  n: number,
  nHeads: number,
  nKv: number,
  d: number,
  pos0: number,
  cap: number,
  scale: number,
  window = 0,
  softcap = 0,
): Float64Array {
  const out = new Float64Array(n * nHeads * d);
  const group = nHeads / nKv;
  for (let i = 0; i < n; i++) {
    for (let h = 0; h < nHeads; h++) {
      const g = Math.floor(h / group);
      const len = pos0 + i + 1;
      const qo = (i * nHeads + h) * d;
      // Position j is visible when it is one of the last `window` (or window is 0).
      const visible = (j: number) => window === 0 || len - 1 - j < window;
      const s = new Float64Array(len).fill(-Infinity);
      for (let j = 0; j < len; j++) {
        if (!visible(j)) continue;
        let dot = 0;
        for (let e = 0; e < d; e++) dot += q[qo + e] * kc[(g * cap + j) * d + e];
        s[j] = softcap > 0 ? softcap * Math.tanh((dot * scale) / softcap) : dot * scale;
      }
      const m = Math.max(...s);
      let sum = 0;
      for (let j = 0; j < len; j++) sum += s[j] = Math.exp(s[j] - m);
      for (let e = 0; e < d; e++) {
        let acc = 0;
        for (let j = 0; j < len; j++) if (s[j] > 0) acc += s[j] * vc[(g * cap + j) * d + e];
        out[qo + e] = acc / sum;
      }
    }
  }
  return out;
}

describe("attention", () => {
  test("cacheWrite layout and causal GQA attention vs reference, with and without a sliding window", () => {
    const cases = [
      { n: 3, nHeads: 4, nKv: 2, d: 8, pos0: 5, cap: 16, window: 0 },
      { n: 1, nHeads: 6, nKv: 2, d: 13, pos0: 40, cap: 64, window: 0 },
      { n: 17, nHeads: 4, nKv: 1, d: 64, pos0: 0, cap: 20, window: 0 },
      { n: 2, nHeads: 3, nKv: 3, d: 5, pos0: 300, cap: 302, window: 0 },
      { n: 1, nHeads: 14, nKv: 2, d: 64, pos0: 1000, cap: 1024, window: 0 },
      // Groups the AVX-512 kernel takes 4, 2 or 1 heads at a time (head dims 64, 96 and 128), with
      // ragged last blocks of 16 positions.
      { n: 1, nHeads: 16, nKv: 2, d: 64, pos0: 77, cap: 80, window: 0 },
      { n: 2, nHeads: 5, nKv: 1, d: 96, pos0: 37, cap: 40, window: 0 },
      { n: 1, nHeads: 24, nKv: 4, d: 128, pos0: 130, cap: 131, window: 0 },
      // Windows: a prefill chunk crossing the window's length, decode far past it, a window of 1,
      // and a window longer than the sequence (all positions).
      { n: 17, nHeads: 4, nKv: 2, d: 32, pos0: 0, cap: 20, window: 8 },
      { n: 1, nHeads: 4, nKv: 1, d: 256, pos0: 700, cap: 1024, window: 512 },
      { n: 3, nHeads: 2, nKv: 2, d: 8, pos0: 6, cap: 12, window: 1 },
      { n: 4, nHeads: 4, nKv: 2, d: 16, pos0: 3, cap: 8, window: 100 },
      // Soft-capped scores (Gemma 2), with and without a window; q spans ±2, so scores reach the cap.
      { n: 5, nHeads: 4, nKv: 2, d: 64, pos0: 20, cap: 32, window: 0, softcap: 2 },
      { n: 1, nHeads: 2, nKv: 1, d: 256, pos0: 300, cap: 512, window: 64, softcap: 5 },
      // Prefill blocks of 8 queries over hundreds of shared positions, ragged last blocks, head dims not
      // a multiple of 16, a window (positions only the earlier tokens see) and a soft cap.
      { n: 19, nHeads: 8, nKv: 2, d: 64, pos0: 300, cap: 320, window: 0 },
      { n: 10, nHeads: 6, nKv: 2, d: 13, pos0: 90, cap: 100, window: 0 },
      { n: 12, nHeads: 4, nKv: 2, d: 40, pos0: 200, cap: 212, window: 150 },
      { n: 9, nHeads: 4, nKv: 1, d: 64, pos0: 100, cap: 109, window: 0, softcap: 3 },
      // Enough blocks for one range per block and head: 600 shared positions each.
      { n: 64, nHeads: 8, nKv: 4, d: 16, pos0: 600, cap: 664, window: 0 },
    ];
    forPaths((path) => {
      for (const c of cases) {
        const what = `${path} ${JSON.stringify(c)}`;
        const cacheLen = c.nKv * c.cap * c.d;
        const kc = new Float32Array(cacheLen).fill(NaN);
        const vc = new Float32Array(cacheLen).fill(NaN);
        // History 0 .. pos0-1 written in one go, then the n new positions.
        const total = c.pos0 + c.n;
        const kAll = randArray(total * c.nKv * c.d, -1, 1);
        const vAll = randArray(total * c.nKv * c.d, -1, 1);
        const rowLen = c.nKv * c.d;
        if (c.pos0 > 0) {
          hn.cacheWrite(
            kc,
            vc,
            kAll.subarray(0, c.pos0 * rowLen),
            vAll.subarray(0, c.pos0 * rowLen),
            c.pos0,
            c.nKv,
            c.d,
            0,
            c.cap,
          );
        }
        hn.cacheWrite(
          kc,
          vc,
          kAll.subarray(c.pos0 * rowLen),
          vAll.subarray(c.pos0 * rowLen),
          c.n,
          c.nKv,
          c.d,
          c.pos0,
          c.cap,
        );
        for (let p = 0; p < c.cap; p++) {
          for (let h = 0; h < c.nKv; h++) {
            for (let e = 0; e < c.d; e++) {
              const at = (h * c.cap + p) * c.d + e;
              if (p < total) {
                assert.equal(kc[at], kAll[(p * c.nKv + h) * c.d + e], `${what} kCache`);
                assert.equal(vc[at], vAll[(p * c.nKv + h) * c.d + e], `${what} vCache`);
              } else {
                assert.ok(Number.isNaN(kc[at]) && Number.isNaN(vc[at]), `${what}: wrote past pos0 + n`);
              }
            }
          }
        }
        const q = randArray(c.n * c.nHeads * c.d, -2, 2);
        const scale = 1 / Math.sqrt(c.d);
        const softcap = ("softcap" in c ? c.softcap : undefined) ?? 0;
        const want = refAttention(
          q,
          kc,
          vc,
          c.n,
          c.nHeads,
          c.nKv,
          c.d,
          c.pos0,
          c.cap,
          Math.fround(scale),
          c.window,
          softcap,
        );
        const out = new Float32Array(q.length);
        hn.attention(out, q, kc, vc, c.n, c.nHeads, c.nKv, c.d, c.pos0, c.cap, scale, c.window, softcap);
        assertClose(out, want, () => 2e-6, what);
        if (softcap > 0) {
          const uncapped = refAttention(
            q,
            kc,
            vc,
            c.n,
            c.nHeads,
            c.nKv,
            c.d,
            c.pos0,
            c.cap,
            Math.fround(scale),
            c.window,
          );
          assert.ok(
            out.some((v, i) => Math.abs(v - uncapped[i]) > 1e-3),
            `${what}: the cap changes the result`,
          );
        }
        if (c.window > 0 && c.window < c.pos0 + c.n) {
          const full = refAttention(q, kc, vc, c.n, c.nHeads, c.nKv, c.d, c.pos0, c.cap, Math.fround(scale));
          assert.ok(
            out.some((v, i) => Math.abs(v - full[i]) > 1e-3),
            `${what}: the window changes the result`,
          );
        }
        const inPlace = Float32Array.from(q);
        hn.attention(inPlace, inPlace, kc, vc, c.n, c.nHeads, c.nKv, c.d, c.pos0, c.cap, scale, c.window, softcap);
        assert.deepEqual(inPlace, out, `${what}: out aliasing q`);
      }
    });
  });
});

describe("attention split over positions", () => {
  test("one key/value head decoding at 3000 positions: the reference's result, the same bits on 1 and 2 threads", () => {
    // Decode with one or two key/value heads splits each head's positions into ranges merged after.
    const threads = hn.getThreads();
    try {
      forPaths((path) => {
        for (const c of [
          { nHeads: 4, nKv: 1, d: 64, pos0: 3000, window: 0 },
          { nHeads: 8, nKv: 2, d: 32, pos0: 2500, window: 1000 },
        ]) {
          const cap = c.pos0 + 1;
          const kc = randArray(c.nKv * cap * c.d, -1, 1);
          const vc = randArray(c.nKv * cap * c.d, -1, 1);
          const q = randArray(c.nHeads * c.d, -2, 2);
          const scale = 1 / Math.sqrt(c.d);
          const outs = [1, 2].map((t) => {
            hn.setThreads(t);
            const out = new Float32Array(q.length);
            hn.attention(out, q, kc, vc, 1, c.nHeads, c.nKv, c.d, c.pos0, cap, scale, c.window);
            return out;
          });
          const what = `${path} ${JSON.stringify(c)}`;
          assert.deepEqual(outs[0], outs[1], `${what}: thread count changed the bits`);
          const want = refAttention(q, kc, vc, 1, c.nHeads, c.nKv, c.d, c.pos0, cap, Math.fround(scale), c.window);
          assertClose(outs[0], want, () => 2e-6, what);
        }
      });
    } finally {
      hn.setThreads(threads);
    }
  });
});

describe("attention over a ring cache", () => {
  test("a sliding-window layer's ring of slots gives what a slot per position gives, wrapped anywhere", () => {
    // slots >= window + n - 1: a batch's first query still sees its whole window after the batch's
    // own keys went in. History is written in chunks of at most `slots`, wrapping as it goes.
    const cases = [
      { nHeads: 4, nKv: 2, d: 8, window: 5, slots: 7, chunks: [3, 4, 2, 3], n: 3 },
      { nHeads: 2, nKv: 1, d: 64, window: 16, slots: 20, chunks: [20, 20, 7], n: 1 },
      { nHeads: 4, nKv: 4, d: 13, window: 3, slots: 10, chunks: [10, 9, 10], n: 8 },
      { nHeads: 8, nKv: 2, d: 256, window: 32, slots: 40, chunks: [33, 12, 30], n: 9 },
      { nHeads: 2, nKv: 2, d: 32, window: 8, slots: 8, chunks: [5, 6], n: 1 },
      // A prefill block's shared positions wrapping around the ring.
      { nHeads: 4, nKv: 2, d: 16, window: 100, slots: 120, chunks: [120, 50, 30], n: 12 },
      { nHeads: 8, nKv: 4, d: 16, window: 600, slots: 700, chunks: [700, 200], n: 64 },
    ];
    forPaths((path) => {
      for (const c of cases) {
        const what = `${path} ${JSON.stringify(c)}`;
        const pos0 = c.chunks.reduce((a, b) => a + b, 0);
        const total = pos0 + c.n;
        const rowLen = c.nKv * c.d;
        const kAll = randArray(total * rowLen, -1, 1);
        const vAll = randArray(total * rowLen, -1, 1);
        const full = { k: new Float32Array(c.nKv * total * c.d), v: new Float32Array(c.nKv * total * c.d) };
        const ring = { k: new Float32Array(c.nKv * c.slots * c.d), v: new Float32Array(c.nKv * c.slots * c.d) };
        let p = 0;
        for (const n of [...c.chunks, c.n]) {
          const k = kAll.subarray(p * rowLen, (p + n) * rowLen);
          const v = vAll.subarray(p * rowLen, (p + n) * rowLen);
          hn.cacheWrite(full.k, full.v, k, v, n, c.nKv, c.d, p, total);
          hn.cacheWrite(ring.k, ring.v, k, v, n, c.nKv, c.d, p, c.slots);
          p += n;
        }
        // Slot s holds the last position written that is s modulo slots.
        for (let s = 0; s < c.slots; s++) {
          const pos = s + c.slots * Math.floor((total - 1 - s) / c.slots);
          assert.equal(ring.k[s * c.d], kAll[pos * rowLen], `${what}: slot ${s} holds position ${pos}`);
        }
        const q = randArray(c.n * c.nHeads * c.d, -2, 2);
        const scale = 1 / Math.sqrt(c.d);
        const want = new Float32Array(q.length);
        hn.attention(want, q, full.k, full.v, c.n, c.nHeads, c.nKv, c.d, pos0, total, scale, c.window);
        const got = new Float32Array(q.length);
        hn.attention(got, q, ring.k, ring.v, c.n, c.nHeads, c.nKv, c.d, pos0, c.slots, scale, c.window);
        // The same keys in the same order: the same sums, bit for bit.
        assert.deepEqual(got, want, what);
      }
    });
  });
});

describe("attention over an f16 cache", () => {
  test("cacheWrite rounds keys and values to the nearest half; attention reads them as that reference does", () => {
    const cases = [
      { n: 1, nHeads: 32, nKv: 8, d: 64, pos0: 300, cap: 320, window: 0 },
      { n: 3, nHeads: 14, nKv: 2, d: 64, pos0: 45, cap: 64, window: 0 },
      { n: 1, nHeads: 4, nKv: 2, d: 128, pos0: 77, cap: 80, window: 0 },
      { n: 2, nHeads: 5, nKv: 1, d: 96, pos0: 37, cap: 40, window: 0 },
      { n: 1, nHeads: 4, nKv: 1, d: 256, pos0: 700, cap: 720, window: 512, softcap: 5 },
      { n: 2, nHeads: 6, nKv: 2, d: 40, pos0: 20, cap: 24, window: 0 },
      { n: 2, nHeads: 6, nKv: 3, d: 13, pos0: 9, cap: 12, window: 4 },
      // A ring of 8 slots, written past its end.
      { n: 1, nHeads: 4, nKv: 2, d: 32, pos0: 19, cap: 8, window: 6 },
      // Prefill blocks over 300 and 600 shared positions.
      { n: 11, nHeads: 8, nKv: 2, d: 64, pos0: 300, cap: 320, window: 0 },
      { n: 64, nHeads: 8, nKv: 4, d: 32, pos0: 600, cap: 664, window: 0 },
    ];
    forPaths((path) => {
      for (const c of cases) {
        const what = `${path} ${JSON.stringify(c)}`;
        const rowLen = c.nKv * c.d;
        const kc = new Uint16Array(c.nKv * c.cap * c.d);
        const vc = new Uint16Array(c.nKv * c.cap * c.d);
        const total = c.pos0 + c.n;
        const kAll = randArray(total * rowLen, -1, 1);
        const vAll = randArray(total * rowLen, -1, 1);
        for (let p = 0; p < total; p += Math.min(c.cap, total - p)) {
          const m = Math.min(c.cap, total - p);
          hn.cacheWrite(
            kc,
            vc,
            kAll.subarray(p * rowLen, (p + m) * rowLen),
            vAll.subarray(p * rowLen, (p + m) * rowLen),
            m,
            c.nKv,
            c.d,
            p,
            c.cap,
          );
        }
        // Each stored half is the nearest one to the float written (its neighbours are no closer).
        const kf = Float32Array.from(kc, halfToFloat);
        const vf = Float32Array.from(vc, halfToFloat);
        for (let p = Math.max(0, total - c.cap); p < total; p++)
          for (let h = 0; h < c.nKv; h++)
            for (let e = 0; e < c.d; e++) {
              const at = (h * c.cap + (p % c.cap)) * c.d + e;
              for (const [cache, src] of [
                [kc, kAll],
                [vc, vAll],
              ] as const) {
                const x = src[(p * c.nKv + h) * c.d + e];
                const err = Math.abs(halfToFloat(cache[at]) - x);
                for (const nb of [cache[at] - 1, cache[at] + 1])
                  if (nb >= 0 && nb < 0x7c00)
                    assert.ok(err <= Math.abs(halfToFloat(nb) - x), `${what}: ${x} -> ${cache[at]}`);
              }
            }
        const q = randArray(c.n * c.nHeads * c.d, -2, 2);
        const scale = 1 / Math.sqrt(c.d);
        const softcap = ("softcap" in c ? c.softcap : undefined) ?? 0;
        // The reference over the halves as floats, in a cache with a slot per position when the
        // cache is a ring (the reference indexes positions directly).
        const full = (f: Float32Array) => {
          if (c.cap >= total) return f;
          const out = new Float32Array(c.nKv * total * c.d);
          for (let p = total - c.cap; p < total; p++)
            for (let h = 0; h < c.nKv; h++)
              out.set(
                f.subarray((h * c.cap + (p % c.cap)) * c.d, (h * c.cap + (p % c.cap) + 1) * c.d),
                (h * total + p) * c.d,
              );
          return out;
        };
        const want = refAttention(
          q,
          full(kf),
          full(vf),
          c.n,
          c.nHeads,
          c.nKv,
          c.d,
          c.pos0,
          Math.max(c.cap, total),
          Math.fround(scale),
          c.window,
          softcap,
        );
        const out = new Float32Array(q.length);
        hn.attention(out, q, kc, vc, c.n, c.nHeads, c.nKv, c.d, c.pos0, c.cap, scale, c.window, softcap);
        assertClose(out, want, () => 2e-6, what);
      }
    });
  });

  test("the caches must both be f32 or both f16, and long enough in elements", () => {
    const q = new Float32Array(32);
    assert.throws(
      () => hn.attention(new Float32Array(32), q, new Uint16Array(64), new Float32Array(64), 1, 4, 2, 8, 0, 4, 1),
      /kCache and vCache must be the same type of array/,
    );
    assert.throws(
      () => hn.attention(new Float32Array(32), q, new Uint16Array(63), new Uint16Array(64), 1, 4, 2, 8, 0, 4, 1),
      /kCache has 63 elements, needs at least nKvHeads\*capacity\*headDim = 64/,
    );
    assert.throws(
      () => hn.cacheWrite(new Int16Array(64) as unknown as Uint16Array, new Uint16Array(64), q, q, 1, 2, 8, 0, 4),
      /kCache must be a Float32Array \(f32 cache\) or a Uint16Array \(f16 cache\)/,
    );
  });
});

describe("softcap", () => {
  test("cap · tanh(x / cap) on every value, −∞ kept (HiRE's left-out tokens)", () => {
    const x = Float32Array.from([0, 1, -1, 29, -400, 1e6, -Infinity, 3.5]);
    const want = Array.from(x, (v) => (v === -Infinity ? v : Math.fround(30 * Math.tanh(Math.fround(v / 30)))));
    hn.softcap(x, x.length, 30);
    x.forEach((v, i) =>
      assert.ok(v === want[i] || Math.abs(v - want[i]) <= 4e-6 * Math.abs(want[i]), `${i}: ${v} vs ${want[i]}`),
    );
    assert.equal(x[6], -Infinity);
    assert.ok(x[5] <= 30 && x[5] > 29.99);
  });
});

// ---- validation -------------------------------------------------------------------------------------

describe("argument validation", () => {
  test("bad arguments throw instead of touching memory", () => {
    const { mapping, byteLength, weights } = makeWeights([
      { dtype: NativeDType.BF16, rows: 8, cols: 16 },
      { dtype: NativeDType.F32, rows: 1, cols: 16 },
    ]);
    const [w, g] = weights;
    const x = new Float32Array(16);
    const y = new Float32Array(8);
    hn.matmul(y, x, w.w, 1, null);

    // Weight ranges.
    assert.throws(() => hn.weight(mapping, byteLength - 10, NativeDType.F32, 1, 3, false), /outside the mapping/);
    assert.throws(() => hn.weight(mapping, byteLength + 1, NativeDType.F16, 1, 1, false), /outside the mapping/);
    assert.throws(
      () => hn.weight(mapping, 0, NativeDType.F32, 2 ** 30, 2 ** 30, false),
      /outside the mapping|overflow/,
    );
    assert.throws(() => hn.weight(mapping, -2, NativeDType.F32, 1, 1, false), /byteOffset/);
    assert.throws(() => hn.weight(mapping, 0.5, NativeDType.F32, 1, 1, false), /byteOffset/);
    assert.throws(() => hn.weight(mapping, 0, 3 as NativeDType, 1, 1, false), /dtype/);
    assert.throws(() => hn.weight(mapping, 0, NativeDType.F32, 0, 1, false), /rows/);
    hn.weight(mapping, byteLength - 4, NativeDType.F32, 1, 1, true); // last element is fine

    // Arrays too short, wrong types, overlap.
    assert.throws(() => hn.matmul(new Float32Array(7), x, w.w, 1, null), /y has 7 elements/);
    assert.throws(() => hn.matmul(y, new Float32Array(15), w.w, 1, null), /x has 15/);
    assert.throws(
      () => hn.matmul(new Float32Array(15), new Float32Array(32), w.w, 2, null),
      /y has 15 elements, needs at least n\*rows = 16/,
    );
    assert.throws(() => hn.matmul(new Float64Array(8) as unknown as Float32Array, x, w.w, 1, null), /Float32Array/);
    assert.throws(() => hn.matmul(y, x, w.w, -1, null), /n/);
    assert.throws(() => hn.matmul(y, x, w.w, 1, g.w), /bias has 16 elements/);
    const shared = new Float32Array(32);
    assert.throws(() => hn.matmul(shared.subarray(8, 16), shared.subarray(0, 16), w.w, 1, null), /overlap/);
    assert.throws(() => hn.matmul(y, x, mapping as unknown as NativeWeight, 1, null), /NativeWeight/);
    assert.throws(() => hn.matmul(y, x, {} as NativeWeight, 1, null), /NativeWeight/);
    assert.throws(() => hn.rmsNorm(new Float32Array(15), x, g.w, 1, 1e-5), /y has 15/);
    assert.throws(() => hn.rmsNorm(x, x, w.w, 1, 1e-5), /vector weight/);
    assert.throws(() => hn.softmax(new Float32Array(5), 2, 3), /x has 5/);
    assert.throws(() => hn.add(new Float32Array(3), new Float32Array(4), 4), /y has 3/);
    assert.throws(() => hn.activate(new Float32Array(3), 3, "tanh" as "relu"), /unknown kind/);

    // Ids and positions.
    assert.throws(() => hn.embed(new Float32Array(16), w.w, Int32Array.from([8])), /ids\[0\] = 8 is out of range/);
    assert.throws(() => hn.embed(new Float32Array(16), w.w, Int32Array.from([-1])), /out of range/);
    assert.throws(() => hn.embed(new Float32Array(16), w.w, Int32Array.from([1, 2])), /y has 16/);
    const ropeX = new Float32Array(16);
    assert.throws(() => hn.rope(ropeX, 1, 2, 8, Int32Array.from([-1]), new Float32Array(4)), /negative/);
    assert.throws(() => hn.rope(ropeX, 1, 2, 8, Int32Array.from([0]), new Float32Array(5)), /exceeds headDim/);
    assert.throws(() => hn.rope(ropeX, 2, 2, 8, Int32Array.from([0]), new Float32Array(4)), /x has 16|positions/);

    // Attention shapes.
    const cache = new Float32Array(2 * 4 * 8);
    const cache2 = new Float32Array(2 * 4 * 8);
    const q = new Float32Array(4 * 8);
    assert.throws(() => hn.attention(new Float32Array(32), q, cache, cache2, 1, 4, 2, 8, 4, 4, 1), /exceeds capacity/);
    assert.throws(() => hn.attention(new Float32Array(32), q, cache, cache2, 1, 4, 2, 8, 0, 4, 1, -1), /window/);
    assert.throws(() => hn.attention(new Float32Array(32), q, cache, cache2, 1, 4, 2, 8, 0, 4, 1, 0, -3), /softcap/);
    assert.throws(() => hn.softcap(new Float32Array(4), 4, 0), /cap must be/);
    assert.throws(() => hn.softcap(new Float32Array(4), 5, 30), /x has 4/);
    assert.throws(() => hn.embed(new Float32Array(16), w.w, Int32Array.from([0]), NaN), /scale/);
    assert.throws(
      () => hn.attention(new Float32Array(32), q, cache, cache2, 1, 4, 3, 8, 0, 4, 1),
      /multiple of nKvHeads/,
    );
    assert.throws(
      () => hn.attention(new Float32Array(32), q, cache.subarray(1), cache2, 1, 4, 2, 8, 0, 4, 1),
      /kCache has/,
    );
    assert.throws(() => hn.attention(cache.subarray(0, 32), q, cache, cache2, 1, 4, 2, 8, 0, 4, 1), /overlap/);
    // A cache of 4 slots is a ring: writes wrap, but a batch needs distinct slots, and attention needs
    // every position it sees still there (the last `window` of them, or all of them without a window).
    hn.cacheWrite(cache, cache2, new Float32Array(16), new Float32Array(16), 1, 2, 8, 4, 4);
    assert.throws(
      () => hn.cacheWrite(cache, cache2, new Float32Array(80), new Float32Array(80), 5, 2, 8, 0, 4),
      /n = 5 exceeds capacity = 4/,
    );
    hn.attention(new Float32Array(32), q, cache, cache2, 1, 4, 2, 8, 9, 4, 1, 4);
    assert.throws(
      () => hn.attention(new Float32Array(64), new Float32Array(64), cache, cache2, 2, 4, 2, 8, 9, 4, 1, 4),
      /window = 4 with n = 2 at pos0 = 9 needs 5 cache slots, capacity = 4/,
    );
    assert.throws(
      () => hn.cacheWrite(cache, cache2, new Float32Array(15), new Float32Array(16), 1, 2, 8, 0, 4),
      /k has 15/,
    );

    // Mapping errors and use after unmap.
    assert.throws(() => hn.mapFile(join(tmp, "missing.bin"), true), /missing\.bin/);
    hn.unmap(mapping);
    assert.throws(() => hn.matmul(y, x, w.w, 1, null), /unmapped/);
    assert.throws(() => hn.embed(new Float32Array(16), w.w, Int32Array.from([0])), /unmapped/);
    assert.throws(() => hn.rmsNorm(x, x, g.w, 1, 1e-5), /unmapped/);
    assert.throws(() => hn.weight(mapping, 0, NativeDType.F32, 1, 1, false), /unmapped/);
    hn.unmap(mapping); // twice is harmless
  });
});

// The CPU backend's composite products (Backend.matmul with accumulate, matmulMany, gatedMatmul)
// against the native ops they are made of: the same bits, since they run those very ops.
describe("CpuBackend buffers", () => {
  test("alloc gives zeroed arrays of the length asked, starting on a cache line", () => {
    const b = new CpuBackend();
    for (const length of [0, 1, 17, 4096, 100_003]) {
      const a = b.alloc(length) as Float32Array;
      assert.equal(a.length, length);
      assert.ok(a.every((v) => v === 0));
      assert.equal(hn.cacheLineOffset(a), 0, `length ${length}`);
    }
    // The check itself: one float on from a line start is 15 floats short of the next one.
    const a = b.alloc(64) as Float32Array;
    assert.equal(hn.cacheLineOffset(a.subarray(1)), 15);
    assert.equal(hn.cacheLineOffset(a.subarray(16)), 0);
  });
});

describe("CpuBackend composite products", () => {
  const H = 96;
  const F = 160;
  const w = (rows: number, cols: number): Weight => {
    const handle = hn.weightFromArray(randArray(rows * cols), NativeDType.F32, rows, cols, false);
    return { handle, dtype: "F32", rows, cols, transposed: false, byteLength: rows * cols * 4 };
  };
  const b = new CpuBackend();
  const n = 3;
  const x = randArray(n * H);

  test("matmul with accumulate adds the product (and bias) to y", () => {
    const wt = w(H, H);
    const bias = w(1, H);
    const y0 = randArray(n * H);
    const y = Float32Array.from(y0);
    b.matmul(y, x, wt, n, bias, true);
    const p = new Float32Array(n * H);
    hn.matmul(p, x, wt.handle, n, bias.handle);
    assert.deepEqual(
      y,
      Float32Array.from(y0, (v, i) => v + p[i]),
    );
  });

  test("matmulMany gives each product; gatedMatmul gives act(gate) * up", () => {
    const [wq, wk] = [w(H, H), w(32, H)];
    const [yq, yk] = [new Float32Array(n * H), new Float32Array(n * 32)];
    b.matmulMany(x, n, [
      { y: yq, w: wq, bias: null },
      { y: yk, w: wk, bias: null },
    ]);
    const [rq, rk] = [new Float32Array(n * H), new Float32Array(n * 32)];
    hn.matmul(rq, x, wq.handle, n, null);
    hn.matmul(rk, x, wk.handle, n, null);
    assert.deepEqual([yq, yk], [rq, rk]);
    const [gate, up] = [w(F, H), w(F, H)];
    const y = new Float32Array(n * F);
    b.gatedMatmul(y, x, gate, up, null, null, n, "silu", new Float32Array(n * F));
    const g = new Float32Array(n * F);
    const u = new Float32Array(n * F);
    hn.matmul(g, x, gate.handle, n, null);
    hn.matmul(u, x, up.handle, n, null);
    hn.siluMul(g, u, n * F);
    assert.deepEqual(y, g);
  });
});
