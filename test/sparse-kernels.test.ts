// Tests of the HiRE sparse-inference kernels of the native CPU backend (core/native/src/sparse_ops.cc,
// topk.cc, quant_*.cc and the gemv_rows / accumulate_cols primitives) against TypeScript references,
// on both kernel paths ("auto" = AVX2 where supported, and "portable"), every weight dtype, odd sizes,
// plus argument validation. To add a sparse kernel: add its reference here and loop it over forPaths().
import { after, describe, test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { native, NativeDType } from "../core/native/addon.js";
import type { HireFfnArgs, NativeQuant, NativeWeight } from "../core/native/addon.js";
import {
  DTYPES,
  DTYPE_NAME,
  assertClose,
  bitsToF32,
  f32ToBits,
  forPaths,
  halfToFloat,
  seededRandom,
} from "./kernel-helpers.js";

const hn = native();
const tmp = mkdtempSync(join(tmpdir(), "hire-sparse-kernels-"));
after(() => rmSync(tmp, { recursive: true, force: true }));

const ELEM_BYTES = [4, 2, 2];

/** Runs fn with the pool at `n` threads, restoring the previous count. */
function withThreads<T>(n: number, fn: () => T): T {
  const before = hn.getThreads();
  hn.setThreads(n);
  try {
    return fn();
  } finally {
    hn.setThreads(before);
  }
}

// ---- deterministic random numbers -------------------------------------------------------------------

const { rand, uniform, randArray } = seededRandom(0x5eed1234);
const randInt = (n: number): number => Math.floor(rand() * n);
function gaussian(): number {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}

// ---- dtypes -------------------------------------------------------------------------------------------

/** Storage for weightFromArray plus the exact values it decodes to (both in storage order). */
interface Stored {
  data: Float32Array | Uint16Array;
  values: Float64Array;
}

/** Stored values of a dtype from f64 values (rounded to the dtype: bf16 truncates, exact when representable). */
function store(dtype: NativeDType, vals: ArrayLike<number>): Stored {
  const n = vals.length;
  const values = new Float64Array(n);
  if (dtype === NativeDType.F32) {
    const data = Float32Array.from(vals);
    for (let i = 0; i < n; i++) values[i] = data[i];
    return { data, values };
  }
  const data = new Uint16Array(n);
  for (let i = 0; i < n; i++) {
    if (dtype === NativeDType.BF16) {
      data[i] = f32ToBits(vals[i]) >>> 16;
      values[i] = bitsToF32(data[i] << 16);
    } else {
      data[i] = f32ToHalfBits(vals[i]);
      values[i] = halfToFloat(data[i]);
    }
  }
  return { data, values };
}

/** f64 -> IEEE half bits, round to nearest even (test data only: |v| < 65504). */
function f32ToHalfBits(v: number): number {
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a === 0) return sign;
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  if (e < -14) return sign | roundEven(a / 2 ** -24); // subnormal
  const m = roundEven((a / 2 ** e - 1) * 1024);
  return m === 1024 ? sign | ((e + 16) << 10) : sign | ((e + 15) << 10) | m;
}

function roundEven(v: number): number {
  const f = Math.floor(v);
  const d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

function randomStored(dtype: NativeDType, count: number, gauss = false): Stored {
  const v = new Float64Array(count);
  for (let i = 0; i < count; i++) v[i] = gauss ? gaussian() * 0.5 : uniform(-1, 1);
  return store(dtype, v);
}

interface TestWeight {
  w: NativeWeight;
  /** Logical [rows][cols] values (row-major, whatever the memory layout). */
  values: Float64Array;
  rows: number;
  cols: number;
  dtype: NativeDType;
}

/** Logical row-major values of a stored matrix. */
function logical(mem: Float64Array, rows: number, cols: number, transposed: boolean): Float64Array {
  if (!transposed) return mem;
  const v = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) v[r * cols + c] = mem[c * rows + r];
  return v;
}

function ownedWeight(dtype: NativeDType, rows: number, cols: number, transposed: boolean, st?: Stored): TestWeight {
  const s = st ?? randomStored(dtype, rows * cols);
  const w = hn.weightFromArray(s.data, dtype, rows, cols, transposed);
  return { w, values: logical(s.values, rows, cols, transposed), rows, cols, dtype };
}

let fileCounter = 0;
/** A weight memory-mapped from a temp file at an odd (2 mod 4) offset. */
function mappedWeight(dtype: NativeDType, rows: number, cols: number, transposed: boolean): TestWeight {
  const s = randomStored(dtype, rows * cols);
  const bytes = Buffer.from(s.data.buffer, s.data.byteOffset, s.data.byteLength);
  const file = join(tmp, `w${fileCounter++}.bin`);
  writeFileSync(file, Buffer.concat([Buffer.alloc(6, 0xa5), bytes, Buffer.alloc(8, 0x5a)]));
  const { mapping } = hn.mapFile(file, true);
  const w = hn.weight(mapping, 6, dtype, rows, cols, transposed);
  return { w, values: logical(s.values, rows, cols, transposed), rows, cols, dtype };
}

// ---- comparison ---------------------------------------------------------------------------------------

function assertSame(got: Float32Array, want: Float32Array, count: number, what: string): void {
  for (let i = 0; i < count; i++) {
    if (!Object.is(got[i], want[i])) assert.fail(`${what}[${i}]: got ${got[i]}, want ${want[i]} (bitwise)`);
  }
}

// ---- relayout, weightFromArray, weightInfo -------------------------------------------------------------

describe("relayout / weightFromArray / weightInfo", () => {
  const SHAPES: [number, number][] = [
    [1, 1],
    [1, 9],
    [7, 33],
    [33, 7],
    [65, 130],
    [300, 257],
  ];

  test("weightInfo describes owned and mapped weights", () => {
    for (const dtype of DTYPES) {
      for (const tr of [false, true]) {
        const o = ownedWeight(dtype, 5, 3, tr);
        assert.deepEqual(hn.weightInfo(o.w), {
          rows: 5,
          cols: 3,
          dtype,
          transposed: tr,
          bytes: 15 * ELEM_BYTES[dtype],
        });
        const m = mappedWeight(dtype, 4, 6, tr);
        assert.deepEqual(hn.weightInfo(m.w), {
          rows: 4,
          cols: 6,
          dtype,
          transposed: tr,
          bytes: 24 * ELEM_BYTES[dtype],
        });
      }
    }
  });

  for (const dtype of DTYPES) {
    test(`${DTYPE_NAME[dtype]}: relayout keeps the logical matrix (embed exact, matmul equal)`, () => {
      for (const [rows, cols] of SHAPES) {
        for (const srcTr of [false, true]) {
          for (const src of [ownedWeight(dtype, rows, cols, srcTr), mappedWeight(dtype, rows, cols, srcTr)]) {
            const plain = hn.relayout(src.w, false);
            const trans = hn.relayout(src.w, true);
            const back = hn.relayout(trans, false);
            assert.deepEqual(hn.weightInfo(plain), {
              rows,
              cols,
              dtype,
              transposed: false,
              bytes: rows * cols * ELEM_BYTES[dtype],
            });
            assert.deepEqual(hn.weightInfo(trans), {
              rows,
              cols,
              dtype,
              transposed: true,
              bytes: rows * cols * ELEM_BYTES[dtype],
            });
            // Every element, exactly: embed reads rows of a [rows][cols] weight.
            const ids = Int32Array.from({ length: rows }, (_, i) => i);
            for (const w of [plain, back]) {
              const y = new Float32Array(rows * cols);
              hn.embed(y, w, ids);
              for (let i = 0; i < rows * cols; i++) {
                if (!Object.is(y[i], Math.fround(src.values[i])))
                  assert.fail(
                    `${rows}x${cols} src transposed=${srcTr}: element ${i} is ${y[i]}, want ${src.values[i]}`,
                  );
              }
            }
            forPaths((path) => {
              for (const n of [1, 3]) {
                const x = randArray(n * cols);
                const y0 = new Float32Array(n * rows);
                const y1 = new Float32Array(n * rows);
                hn.matmul(y0, x, src.w, n, null);
                for (const w of [plain, trans]) {
                  hn.matmul(y1, x, w, n, null);
                  // Same logical matrix; layouts may sum in a different order.
                  assertClose(
                    y1,
                    y0,
                    (i) => 1e-6 + 1e-5 * Math.abs(y0[i]) + 1e-6 * cols,
                    `${path} ${rows}x${cols} n=${n}`,
                  );
                  if (hn.weightInfo(w).transposed === srcTr) assertSame(y1, y0, n * rows, `${path} same layout`);
                }
              }
            });
          }
        }
      }
    });
  }

  test("transposeView is Wᵀ over the same memory", () => {
    for (const dtype of DTYPES) {
      for (const tr of [false, true]) {
        const src = mappedWeight(dtype, 13, 70, tr);
        const t = hn.transposeView(src.w);
        assert.deepEqual(hn.weightInfo(t), {
          rows: 70,
          cols: 13,
          dtype,
          transposed: !tr,
          bytes: 910 * ELEM_BYTES[dtype],
        });
        const plain = hn.relayout(t, false); // Wᵀ as [70][13]
        const y = new Float32Array(70 * 13);
        hn.embed(
          y,
          plain,
          Int32Array.from({ length: 70 }, (_, i) => i),
        );
        for (let c = 0; c < 70; c++)
          for (let r = 0; r < 13; r++) assert.equal(y[c * 13 + r], Math.fround(src.values[r * 70 + c]));
        const back = hn.transposeView(t);
        assert.deepEqual(hn.weightInfo(back), hn.weightInfo(src.w));
      }
    }
  });

  test("weightFromArray copies the data", () => {
    const data = Float32Array.from([1, 2, 3, 4, 5, 6]);
    const w = hn.weightFromArray(data, NativeDType.F32, 2, 3, false);
    data.fill(0);
    const y = new Float32Array(6);
    hn.embed(y, w, Int32Array.from([0, 1]));
    assert.deepEqual(Array.from(y), [1, 2, 3, 4, 5, 6]);
    // A subarray view at an offset.
    const big = Uint16Array.from([0, 0x3f80, 0x4000, 0x4040, 0]);
    const wb = hn.weightFromArray(big.subarray(1, 4), NativeDType.BF16, 1, 3, false);
    const yb = new Float32Array(3);
    hn.embed(yb, wb, Int32Array.from([0]));
    assert.deepEqual(Array.from(yb), [1, 2, 3]);
  });
});

// ---- matvecRows ------------------------------------------------------------------------------------------

function sortedSample(n: number, k: number): Int32Array {
  const pick = new Set<number>();
  while (pick.size < k) pick.add(randInt(n));
  return Int32Array.from([...pick].sort((a, b) => a - b));
}

describe("matvecRows", () => {
  const SHAPES: [number, number][] = [
    [1, 1],
    [9, 7],
    [40, 33],
    [301, 1000],
    [1024, 257],
  ];
  for (const dtype of DTYPES) {
    test(`${DTYPE_NAME[dtype]}: rows of the full matmul, bitwise`, () => {
      for (const [rows, cols] of SHAPES) {
        for (const tw of [ownedWeight(dtype, rows, cols, false), mappedWeight(dtype, rows, cols, false)]) {
          const x = randArray(cols);
          const many = Math.min(rows, Math.max(1, Math.floor(rows * 0.4)));
          const unsorted = sortedSample(rows, many);
          for (let i = unsorted.length - 1; i > 0; i--) {
            const j = randInt(i + 1);
            [unsorted[i], unsorted[j]] = [unsorted[j], unsorted[i]];
          }
          const dups = Int32Array.from({ length: 2 * rows + 3 }, () => randInt(rows));
          const cases: [string, Int32Array, number][] = [
            ["count 0", new Int32Array(0), 0],
            ["count 1", Int32Array.from([rows - 1]), 1],
            ["sorted", sortedSample(rows, many), many],
            ["unsorted", unsorted, many],
            ["duplicates", dups, dups.length],
            ["prefix of a longer idx", Int32Array.from([0, rows - 1, 0, 5 % rows]), 3],
          ];
          forPaths((path) => {
            const full = new Float32Array(rows);
            hn.matmul(full, x, tw.w, 1, null);
            // Against the f64 reference too, so that matmul itself is not trusted blindly.
            for (let r = 0; r < rows; r++) {
              let s = 0;
              let m = 0;
              for (let c = 0; c < cols; c++) {
                s += tw.values[r * cols + c] * x[c];
                m += Math.abs(tw.values[r * cols + c] * x[c]);
              }
              assert.ok(Math.abs(full[r] - s) <= 1e-6 + 2e-6 * m, `${path} matmul row ${r}`);
            }
            for (const [name, idx, count] of cases) {
              const y = new Float32Array(count + 2).fill(777);
              hn.matvecRows(y, x, tw.w, idx, count);
              const want = Float32Array.from({ length: count }, (_, i) => full[idx[i]]);
              assertSame(y, want, count, `${path} ${DTYPE_NAME[dtype]} ${rows}x${cols} ${name}`);
              assert.deepEqual(Array.from(y.subarray(count)), [777, 777], `${path} ${name}: wrote past count`);
            }
          });
        }
      }
    });
  }

  test("large selections on 1, 2 and 3 threads give the same bits", () => {
    const tw = ownedWeight(NativeDType.BF16, 4096, 512, false);
    const x = randArray(512);
    const idx = sortedSample(4096, 1500);
    forPaths((path) => {
      const full = new Float32Array(4096);
      hn.matmul(full, x, tw.w, 1, null);
      const want = Float32Array.from(idx, (r) => full[r]);
      for (const t of [1, 2, 3]) {
        const y = withThreads(t, () => {
          const out = new Float32Array(idx.length);
          hn.matvecRows(out, x, tw.w, idx, idx.length);
          return out;
        });
        assertSame(y, want, idx.length, `${path} threads=${t}`);
      }
    });
  });
});

// ---- accumulateCols --------------------------------------------------------------------------------------

describe("accumulateCols", () => {
  const SHAPES: [number, number][] = [
    [1, 1],
    [7, 5],
    [33, 40],
    [17, 300],
    [1000, 300],
    [2048, 64],
  ];
  for (const dtype of DTYPES) {
    test(`${DTYPE_NAME[dtype]}: Σ a_i W[:, idx_i] vs reference, and all columns = matmul`, () => {
      for (const [rows, cols] of SHAPES) {
        const owned = ownedWeight(dtype, rows, cols, true);
        const mapped = mappedWeight(dtype, rows, cols, true);
        for (const tw of [owned, mapped]) {
          const count = Math.max(1, Math.floor(cols * 0.6)) + 3;
          const idx = Int32Array.from({ length: count }, () => randInt(cols)); // any order, duplicates
          const a = randArray(count, -2, 2);
          const want = new Float64Array(rows);
          const mag = new Float64Array(rows);
          for (let i = 0; i < count; i++) {
            for (let r = 0; r < rows; r++) {
              const p = a[i] * tw.values[r * cols + idx[i]];
              want[r] += p;
              mag[r] += Math.abs(p);
            }
          }
          const all = Int32Array.from({ length: cols }, (_, i) => i);
          const x = randArray(cols);
          forPaths((path) => {
            const what = `${path} ${DTYPE_NAME[dtype]} ${rows}x${cols}`;
            const y = new Float32Array(rows + 2).fill(777);
            hn.accumulateCols(y, a, tw.w, idx, count);
            assertClose(y, want, (r) => 1e-6 + 2e-6 * mag[r], what);
            assert.deepEqual(Array.from(y.subarray(rows)), [777, 777], `${what}: wrote past rows`);
            // count = 0 overwrites with zeros.
            hn.accumulateCols(y, a, tw.w, idx, 0);
            assert.ok(
              y.subarray(0, rows).every((v) => Object.is(v, 0)),
              `${what}: count 0`,
            );
            // Every column in order with a = x is the matmul of the transposed weight, bit for bit.
            const full = new Float32Array(rows);
            hn.matmul(full, x, tw.w, 1, null);
            hn.accumulateCols(y, x, tw.w, all, cols);
            assertSame(y, full, rows, `${what} all columns vs matmul`);
          });
        }
      }
    });
  }

  test("1, 2 and 3 threads give the same bits", () => {
    const tw = ownedWeight(NativeDType.BF16, 2048, 1024, true);
    const idx = sortedSample(1024, 300);
    const a = randArray(300);
    forPaths((path) => {
      const results = [1, 2, 3].map((t) =>
        withThreads(t, () => {
          const y = new Float32Array(2048);
          hn.accumulateCols(y, a, tw.w, idx, idx.length);
          return y;
        }),
      );
      assertSame(results[1], results[0], 2048, `${path} 2 threads`);
      assertSame(results[2], results[0], 2048, `${path} 3 threads`);
    });
  });
});

// ---- quantize, quantRow, quantMatvec -------------------------------------------------------------------

/** bytes of a quantized matrix, per the layout documented in core/native/src/quant.h. */
function quantBytes(rows: number, cols: number, bits: number, g: number): number {
  const groups = Math.ceil(cols / g);
  const padded = groups * g;
  const rowBytes = bits === 8 ? padded : Math.ceil(padded / 64) * 32;
  return rows * (rowBytes + 2 * groups); // codes + one f16 scale per group, rows packed
}

function dequantized(q: NativeQuant, rows: number, cols: number): Float64Array {
  const out = new Float64Array(rows * cols);
  const row = new Float32Array(cols);
  for (let r = 0; r < rows; r++) {
    hn.quantRow(q, r, row);
    out.set(row, r * cols);
  }
  return out;
}

/** x quantized as quantMatvec does it: per group max|x| / 127, round half to even, all in f32. */
function quantizeX(x: Float32Array, cols: number, g: number): { xq: Int8Array; xs: Float64Array } {
  const groups = Math.ceil(cols / g);
  const xq = new Int8Array(cols);
  const xs = new Float64Array(groups);
  for (let gi = 0; gi < groups; gi++) {
    let amax = 0;
    for (let j = gi * g; j < Math.min(cols, (gi + 1) * g); j++) amax = Math.max(amax, Math.abs(x[j]));
    xs[gi] = Math.fround(amax / 127);
    const inv = amax > 0 ? Math.fround(127 / amax) : 0;
    for (let j = gi * g; j < Math.min(cols, (gi + 1) * g); j++) {
      const v = Math.min(127, Math.max(-127, Math.fround(x[j] * inv)));
      xq[j] = roundEven(v);
    }
  }
  return { xq, xs };
}

/**
 * Σ_g xScale_g Σ_{j∈g} deq_j xq_j in f64 (deq_j = q_j wScale_g exactly), and Σ_j |xScale deq_j xq_j|,
 * the scale of the f32 rounding error of any order of summation.
 */
function refQuantMatvec(deq: Float64Array, x: Float32Array, rows: number, cols: number, g: number) {
  const { xq, xs } = quantizeX(x, cols, g);
  const y = new Float64Array(rows);
  const mag = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    for (let gi = 0; gi * g < cols; gi++) {
      let s = 0;
      let m = 0;
      for (let j = gi * g; j < Math.min(cols, (gi + 1) * g); j++) {
        s += deq[r * cols + j] * xq[j];
        m += Math.abs(deq[r * cols + j] * xq[j]);
      }
      y[r] += xs[gi] * s;
      mag[r] += xs[gi] * m;
    }
  }
  return { y, mag };
}

describe("quantize / quantRow / quantMatvec", () => {
  const SHAPES: [number, number][] = [
    [1, 1],
    [3, 31],
    [5, 33],
    [37, 100],
    [300, 257],
    [64, 2048],
  ];
  const CONFIGS: [4 | 8, number][] = [
    [4, 32],
    [4, 64],
    [4, 96],
    [4, 128],
    [4, 256],
    [8, 32],
    [8, 64],
    [8, 128],
    [8, 160],
    [8, 192],
  ];

  test("dequantized error <= scale / 2 per element; quantInfo; layout-independent", () => {
    for (const dtype of DTYPES) {
      for (const [rows, cols] of SHAPES) {
        const tw = ownedWeight(dtype, rows, cols, false, randomStored(dtype, rows * cols, true));
        const trans = hn.relayout(tw.w, true);
        for (const [bits, g] of CONFIGS) {
          const q = hn.quantize(tw.w, bits, g);
          assert.deepEqual(hn.quantInfo(q), { rows, cols, bits, groupSize: g, bytes: quantBytes(rows, cols, bits, g) });
          const deq = dequantized(q, rows, cols);
          const qmax = bits === 8 ? 127 : 7;
          for (let r = 0; r < rows; r++) {
            for (let gi = 0; gi * g < cols; gi++) {
              const lo = r * cols + gi * g;
              const hi = r * cols + Math.min(cols, (gi + 1) * g);
              let amax = 0;
              for (let j = lo; j < hi; j++) amax = Math.max(amax, Math.abs(tw.values[j]));
              // scale = f16(amax / qmax): within 2^-11 relative of amax / qmax, or for a subnormal
              // half (amax / qmax < 2^-14) rounded up by at most one ulp (2^-24), so nothing clips.
              const half = 0.5 * ((amax * (1 + 2 ** -10)) / qmax + 2 ** -24) + 1e-30;
              for (let j = lo; j < hi; j++) {
                const err = Math.abs(deq[j] - tw.values[j]);
                if (!(err <= half))
                  assert.fail(`${DTYPE_NAME[dtype]} ${rows}x${cols} int${bits} g${g} [${j}]: error ${err} > ${half}`);
              }
            }
          }
          // Quantizing the transposed copy gives the same codes and scales.
          const qt = hn.quantize(trans, bits, g);
          assert.deepEqual(dequantized(qt, rows, cols), deq, `${DTYPE_NAME[dtype]} ${rows}x${cols} int${bits}: layout`);
        }
      }
    }
  });

  test("quantWrite / quantRead round-trip the stored bytes; a file of the wrong size is refused", () => {
    const dir = mkdtempSync(join(tmpdir(), "hire-quant-"));
    try {
      const [rows, cols] = [24, 160];
      const tw = ownedWeight(NativeDType.BF16, rows, cols, false, randomStored(NativeDType.BF16, rows * cols, true));
      for (const [bits, g] of CONFIGS) {
        const q = hn.quantize(tw.w, bits, g);
        const file = join(dir, `q${bits}-${g}`);
        hn.quantWrite(q, file);
        const back = hn.quantRead(file, rows, cols, bits, g);
        assert.deepEqual(hn.quantInfo(back), hn.quantInfo(q));
        assert.deepEqual(dequantized(back, rows, cols), dequantized(q, rows, cols));
        const x = new Float32Array(cols).map((_, i) => Math.sin(i));
        const [y1, y2] = [new Float32Array(rows), new Float32Array(rows)];
        hn.quantMatvec(y1, x, q);
        hn.quantMatvec(y2, x, back);
        assert.deepEqual(y2, y1);
        assert.throws(() => hn.quantRead(file, rows + 1, cols, bits, g), /bytes, the shape needs/);
      }
      assert.throws(() => hn.quantRead(join(dir, "missing"), rows, cols, 4, 32), /cannot open/);
      assert.throws(() => hn.quantRead(join(dir, "q4-32"), rows, cols, 5 as 4, 32), /bits must be 4 or 8/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a scale that f16 rounds down into a subnormal is taken one ulp up, so the group max does not clip", () => {
    // amax / qmax = (u + 0.49) · 2^-24 rounds to u · 2^-24, and amax / (u · 2^-24) > qmax + 0.5 for
    // these u: with that scale the max would clip at qmax, off by about 2 scales instead of half of one.
    for (const [bits, u] of [
      [8, 30],
      [4, 3],
    ] as const) {
      const qmax = bits === 8 ? 127 : 7;
      const amax = Math.fround(qmax * (u + 0.49) * 2 ** -24);
      const vals = new Float64Array(64).fill(0);
      vals[0] = amax;
      vals[5] = -amax;
      vals[9] = amax / 3;
      const tw = ownedWeight(
        NativeDType.F32,
        1,
        64,
        false,
        store(NativeDType.F32, Float64Array.from(vals, Math.fround)),
      );
      const deq = dequantized(hn.quantize(tw.w, bits, 32), 1, 64);
      const scale = (u + 1) * 2 ** -24; // the next half up
      assert.equal(deq[0], Math.round(amax / scale) * scale, `int${bits}: max`);
      assert.equal(deq[5], -deq[0], `int${bits}: -max`);
      for (let j = 0; j < 64; j++) assert.ok(Math.abs(deq[j] - tw.values[j]) <= scale / 2, `int${bits} [${j}]`);
    }
  });

  test("representable values dequantize exactly", () => {
    for (const [bits, g] of CONFIGS) {
      const qmax = bits === 8 ? 127 : 7;
      const rows = 6;
      const cols = 2 * g + 40;
      const vals = new Float64Array(rows * cols);
      for (let r = 0; r < rows; r++) {
        for (let gi = 0; gi * g < cols; gi++) {
          const scale = 2 ** -(3 + ((r + gi) % 9)); // exact in f16, bf16 and f32
          for (let j = gi * g; j < Math.min(cols, (gi + 1) * g); j++)
            vals[r * cols + j] = (randInt(2 * qmax + 1) - qmax) * scale;
          vals[r * cols + gi * g] = (r % 2 ? -qmax : qmax) * scale; // the group's max
        }
      }
      for (const dtype of DTYPES) {
        const tw = ownedWeight(dtype, rows, cols, false, store(dtype, vals));
        assert.deepEqual(tw.values, vals);
        const deq = dequantized(hn.quantize(tw.w, bits, g), rows, cols);
        assert.deepEqual(deq, vals, `int${bits} g${g} ${DTYPE_NAME[dtype]}`);
      }
    }
  });

  test("quantMatvec = Σ_g wScale·xScale·Σ q·xq (x quantized to int8 per group) within f32 rounding", () => {
    for (const [rows, cols] of SHAPES) {
      const tw = ownedWeight(NativeDType.BF16, rows, cols, false, randomStored(NativeDType.BF16, rows * cols, true));
      for (const [bits, g] of CONFIGS) {
        const q = hn.quantize(tw.w, bits, g);
        const deq = dequantized(q, rows, cols);
        for (const xKind of ["uniform", "spiky", "zeros"]) {
          const x = randArray(cols, -3, 3);
          if (xKind === "spiky") for (let j = 0; j < cols; j += 7) x[j] *= 50;
          if (xKind === "zeros") x.fill(0, 0, Math.min(cols, g));
          const ref = refQuantMatvec(deq, x, rows, cols, g);
          forPaths((path) => {
            const y = new Float32Array(rows + 1).fill(777);
            hn.quantMatvec(y, x, q);
            // Integer sums are exact; what is left is f32 rounding of the scale products and the sums.
            assertClose(
              y,
              ref.y,
              (r) => 1e-30 + 2e-6 * ref.mag[r],
              `${path} int${bits} g${g} ${rows}x${cols} ${xKind}`,
            );
            assert.equal(y[rows], 777, "wrote past rows");
          });
        }
      }
    }
  });

  test("quantMatvec does not depend on the thread count", () => {
    const tw = ownedWeight(NativeDType.F32, 3000, 256, false, randomStored(NativeDType.F32, 3000 * 256, true));
    const x = randArray(256);
    for (const [bits, g] of CONFIGS) {
      const q = hn.quantize(tw.w, bits, g);
      forPaths((path) => {
        const ys = [1, 2, 3].map((t) =>
          withThreads(t, () => {
            const y = new Float32Array(3000);
            hn.quantMatvec(y, x, q);
            return y;
          }),
        );
        assertSame(ys[1], ys[0], 3000, `${path} int${bits} g${g} 2 threads`);
        assertSame(ys[2], ys[0], 3000, `${path} int${bits} g${g} 3 threads`);
      });
    }
  });

  test("recall of the top 10 % on a random Gaussian matrix", (t) => {
    const rows = 4096;
    const cols = 1024;
    const vals = new Float64Array(rows * cols);
    for (let i = 0; i < vals.length; i++) vals[i] = gaussian() * 0.02;
    const tw = ownedWeight(NativeDType.BF16, rows, cols, false, store(NativeDType.BF16, vals));
    const x = Float32Array.from({ length: cols }, () => gaussian());
    const exact = new Float32Array(rows);
    hn.matmul(exact, x, tw.w, 1, null);
    const k = Math.floor(rows / 10);
    const top = (v: Float32Array): Set<number> => {
      const out = new Int32Array(k);
      assert.equal(hn.topk(v, rows, k, false, 1, out), k);
      return new Set(out);
    };
    const want = top(exact);
    for (const [bits, g, min] of [
      [8, 32, 0.9],
      [4, 32, 0.8],
      [4, 64, 0.8],
    ] as const) {
      const q = hn.quantize(tw.w, bits, g);
      forPaths((path) => {
        const approx = new Float32Array(rows);
        hn.quantMatvec(approx, x, q);
        let hit = 0;
        for (const i of top(approx)) if (want.has(i)) hit++;
        const recall = hit / k;
        t.diagnostic(`${path} int${bits} g${g}: recall of the top 10 % = ${recall.toFixed(4)}`);
        assert.ok(recall > min, `${path} int${bits} g${g}: recall ${recall} <= ${min}`);
      });
    }
  });
});

// ---- topk -----------------------------------------------------------------------------------------------------

/** Reference DA-top-k: per shard, a full sort by (rank desc, index asc); NaN lowest, -0 == +0. */
function refTopk(values: Float32Array, n: number, k: number, byAbs: boolean, shards: number): number[] {
  if (k >= n) return Array.from({ length: n }, (_, i) => i);
  const rank = (v: number): number => (Number.isNaN(v) ? -Infinity : byAbs ? Math.abs(v) : v);
  const nan = (v: number): number => (Number.isNaN(v) ? 1 : 0);
  const out: number[] = [];
  for (let s = 0; s < shards; s++) {
    const lo = Math.floor((s * n) / shards);
    const hi = Math.floor(((s + 1) * n) / shards);
    const ks = Math.min(Math.floor(k / shards) + (s < k % shards ? 1 : 0), hi - lo);
    const ids = Array.from({ length: hi - lo }, (_, i) => lo + i);
    ids.sort((a, b) => {
      const va = values[a];
      const vb = values[b];
      if (nan(va) !== nan(vb)) return nan(va) - nan(vb); // NaN after -Infinity
      const ra = rank(va);
      const rb = rank(vb);
      if (ra !== rb) return rb - ra > 0 ? 1 : -1;
      return a - b;
    });
    out.push(...ids.slice(0, ks).sort((a, b) => a - b));
  }
  return out;
}

describe("topk", () => {
  function makeValues(n: number, kind: string): Float32Array {
    const v = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      switch (kind) {
        case "continuous":
          v[i] = gaussian();
          break;
        case "ties": // few distinct values, ±0, ±Infinity, NaN
          v[i] = [0, -0, 1, -1, 2, -2, 0.5, Infinity, -Infinity, NaN][randInt(10)];
          break;
        case "ascending":
          v[i] = i * 0.25 - n / 8;
          break;
        case "constant":
          v[i] = 3;
          break;
        default: // logits-like: a few large, many similar
          v[i] = rand() < 0.01 ? 10 + gaussian() : gaussian() * 0.1;
      }
    }
    return v;
  }

  test("equals the per-shard sort reference (shards 1-4, byAbs both ways, ties, NaN)", () => {
    const cases: [number, number[]][] = [
      [1, [0, 1, 2]],
      [7, [1, 3, 6, 7, 9]],
      [100, [1, 10, 50, 99]],
      [5000, [1, 17, 256, 1000, 4999]],
      [20000, [25, 100, 2000, 5000]], // k/n <= 1/8: the sampling path
      [70001, [3, 256, 8000, 20000]], // large: shards on the pool
    ];
    for (const [n, ks] of cases) {
      for (const kind of ["continuous", "ties", "ascending", "constant", "logits"]) {
        const values = makeValues(n, kind);
        for (const k of ks) {
          for (const shards of [1, 2, 3, 4]) {
            for (const byAbs of [false, true]) {
              const want = refTopk(values, n, k, byAbs, shards);
              const out = new Int32Array(want.length + 2).fill(-7);
              const got = hn.topk(values, n, k, byAbs, shards, out);
              const what = `n=${n} ${kind} k=${k} shards=${shards} byAbs=${byAbs}`;
              assert.equal(got, want.length, `${what}: count`);
              assert.deepEqual(Array.from(out.subarray(0, got)), want, what);
              assert.deepEqual(Array.from(out.subarray(got)), [-7, -7], `${what}: wrote past the count`);
            }
          }
        }
      }
    }
  });

  test("k = 0, k >= n, n = 0, more shards than values, values longer than n", () => {
    const v = Float32Array.from([5, 1, 4, 2, 3, 9, 9]);
    const out = new Int32Array(10);
    assert.equal(hn.topk(v, 5, 0, false, 1, out), 0);
    assert.equal(hn.topk(v, 5, 5, false, 3, out), 5);
    assert.deepEqual(Array.from(out.subarray(0, 5)), [0, 1, 2, 3, 4]);
    assert.equal(hn.topk(v, 5, 99, true, 1, out), 5);
    assert.equal(hn.topk(v, 0, 3, false, 1, new Int32Array(0)), 0);
    assert.equal(hn.topk(v, 5, 2, false, 1, out), 2);
    assert.deepEqual(Array.from(out.subarray(0, 2)), [0, 2]); // the 9s past n are not seen
    // 8 shards over 5 values: shards of 0 or 1 values, k_s = 1 for s < 3.
    assert.equal(hn.topk(v, 5, 3, false, 8, out), refTopk(v, 5, 3, false, 8).length);
  });
});

// ---- argument validation -------------------------------------------------------------------------------

describe("hireFfn (DA-top-k shards fused)", () => {
  type Act = "relu" | "gelu" | "gelu_tanh" | "silu";
  interface Layer {
    F: number;
    H: number;
    gated: boolean;
    act: Act;
    pred: NativeQuant;
    rows: NativeWeight;
    down: NativeWeight;
    biasIn: Float32Array | null;
  }
  function layer(dtype: NativeDType, F: number, H: number, gated: boolean, act: Act, bias: boolean): Layer {
    const first = ownedWeight(dtype, F, H, false).w;
    const rows = gated ? hn.interleaveRows(first, ownedWeight(dtype, F, H, false).w) : first;
    const down = ownedWeight(dtype, H, F, true).w; // W_down: H outputs x F neurons, columns contiguous
    const pred = hn.quantize(first, 4, 32);
    return { F, H, gated, act, pred, rows, down, biasIn: bias ? randArray(F) : null };
  }

  /** The same step from the separate ops, each checked against its own reference elsewhere in this file. */
  function steps(L: Layer, x: Float32Array, k: number, kp: number, P: number) {
    const { F, H } = L;
    const scores = new Float32Array(F);
    hn.quantMatvec(scores, x, L.pred);
    if (L.biasIn) for (let i = 0; i < F; i++) scores[i] += L.biasIn[i];
    hn.activate(scores, F, L.act);
    const candAll = new Int32Array(F);
    const nc = hn.topk(scores, F, kp, true, P, candAll);
    const cand = candAll.slice(0, nc);
    const g = new Float32Array(nc);
    if (L.gated) {
      const pairs = new Int32Array(2 * nc);
      for (let i = 0; i < nc; i++) [pairs[2 * i], pairs[2 * i + 1]] = [2 * cand[i], 2 * cand[i] + 1];
      const dots = new Float32Array(2 * nc);
      hn.matvecRows(dots, x, L.rows, pairs, 2 * nc);
      const u = new Float32Array(nc);
      for (let i = 0; i < nc; i++) [g[i], u[i]] = [dots[2 * i], dots[2 * i + 1]];
      if (L.act === "silu") hn.siluMul(g, u, nc);
      else {
        hn.activate(g, nc, L.act);
        for (let i = 0; i < nc; i++) g[i] *= u[i];
      }
    } else {
      hn.matvecRows(g, x, L.rows, cand, nc);
      if (L.biasIn) for (let i = 0; i < nc; i++) g[i] += L.biasIn[cand[i]];
      hn.activate(g, nc, L.act);
    }
    const posAll = new Int32Array(nc);
    const ns = hn.topk(g, nc, Math.min(k, nc), true, P, posAll);
    const sel = Int32Array.from(posAll.subarray(0, ns), (p) => cand[p]);
    const aSel = Float32Array.from(posAll.subarray(0, ns), (p) => g[p]);
    // Shard s's partial output from its own selected columns, the partials added in shard order.
    const y = new Float32Array(H);
    const part = new Float32Array(H);
    let at = 0;
    for (let sh = 0; sh < P; sh++) {
      const lo = Math.floor((sh * nc) / P);
      const hi = Math.floor(((sh + 1) * nc) / P);
      let n = 0;
      while (at + n < ns && posAll[at + n] < hi) n++;
      assert.ok(n === 0 || posAll[at] >= lo, "selections stay in their shard");
      hn.accumulateCols(part, aSel.subarray(at, at + n), L.down, sel.subarray(at, at + n), n);
      for (let i = 0; i < H; i++) y[i] = sh === 0 ? part[i] : Math.fround(y[i] + part[i]);
      at += n;
    }
    const whole = new Float32Array(H);
    hn.accumulateCols(whole, aSel, L.down, sel, ns);
    return { scores, cand, sel, aSel, y, whole };
  }

  test("selects what the separate ops select; out = the shard partials summed (bitwise), on 1-3 threads", () => {
    const F = 301;
    const H = 70;
    const layers = [
      layer(NativeDType.BF16, F, H, true, "silu", false),
      layer(NativeDType.F32, F, H, true, "gelu_tanh", false),
      layer(NativeDType.F16, F, H, false, "gelu", true),
      layer(NativeDType.BF16, F, H, false, "relu", false),
    ];
    const cases: [number, number, number][] = [
      // [k, kp, shards]
      [30, 60, 2],
      [31, 60, 3],
      [10, 40, 4],
      [1, 2, 2],
      [30, F, 2], // every neuron a candidate (kp >= F)
      [F, F, 3], // everything kept
      [0, 40, 2],
      // P = 1 is the global top-k: one task on 1 thread, else local lists per worker and a merge
      [50, 60, 1],
      [30, 60, 1],
      [0, 40, 1],
      [30, F, 1],
      [F, F, 1],
      [1, 1, 1],
    ];
    for (const L of layers) {
      const x = randArray(H);
      for (const [k, kp, P] of cases) {
        const what = `gated=${L.gated} ${L.act} k=${k} kp=${kp} P=${P}`;
        for (const threads of [1, 2, 3]) {
          withThreads(threads, () =>
            forPaths((path) => {
              const y = new Float32Array(H).fill(NaN);
              const scores = new Float32Array(F);
              const cand = new Int32Array(F).fill(-1);
              const sel = new Int32Array(F).fill(-1);
              const aSel = new Float32Array(F);
              const pathWant = steps(L, x, k, kp, P); // on this path and thread count
              const r = hn.hireFfn(
                y,
                x,
                L.pred,
                L.biasIn,
                L.rows,
                L.gated,
                L.act,
                L.down,
                k,
                kp,
                P,
                scores,
                cand,
                sel,
                aSel,
              );
              const at = `${what} ${path} threads=${threads}`;
              assert.equal(r.candidates, pathWant.cand.length, `${at}: candidates`);
              assert.equal(r.selected, pathWant.sel.length, `${at}: selected`);
              assert.deepEqual(cand.subarray(0, r.candidates), pathWant.cand, `${at}: cand`);
              assert.deepEqual(sel.subarray(0, r.selected), pathWant.sel, `${at}: sel`);
              assertSame(scores, pathWant.scores, F, `${at}: scores`);
              assertSame(aSel, pathWant.aSel, r.selected, `${at}: aSel`);
              assertSame(y, pathWant.y, H, `${at}: y`);
              const scale = pathWant.whole.reduce((m, v) => Math.max(m, Math.abs(v)), 1);
              assertClose(y, pathWant.whole, () => 1e-5 * scale, `${at}: y against one accumulateCols`);
              for (const ms of [r.scoreMs, r.rowsMs, r.downMs]) assert.ok(ms >= 0 && Number.isFinite(ms), `${at}: ms`);
            }),
          );
        }
      }
    }
  });

  test("hireFfnBatch: several steps at once, each hireFfn's (shards 1) bit for bit, on 1-3 threads", () => {
    const H = 48;
    // Experts of different widths, dtypes and activations, as a mixture's routed experts (and more).
    const layers = [
      layer(NativeDType.BF16, 96, H, true, "silu", false),
      layer(NativeDType.F32, 96, H, true, "silu", false),
      layer(NativeDType.F16, 130, H, false, "gelu", true),
      layer(NativeDType.BF16, 64, H, true, "gelu_tanh", false),
      layer(NativeDType.BF16, 96, H, true, "silu", false),
    ];
    const x = randArray(H);
    const cases: [number, number][] = [
      [10, 20],
      [1, 1],
      [40, 200], // kp past F: every neuron a candidate
      [0, 8],
    ];
    const buffers = (F: number) => ({
      y: new Float32Array(H).fill(NaN),
      scores: new Float32Array(F),
      cand: new Int32Array(F).fill(-1),
      sel: new Int32Array(F).fill(-1),
      aSel: new Float32Array(F),
    });
    for (const [k, kp] of cases) {
      for (const threads of [1, 2, 3]) {
        withThreads(threads, () =>
          forPaths((path) => {
            const one = layers.map(() => buffers(0));
            const want = layers.map((L, i) => {
              const b = (one[i] = buffers(L.F));
              const kk = Math.min(k, L.F);
              const kpp = Math.min(kp, L.F);
              const r = hn.hireFfn(
                b.y,
                x,
                L.pred,
                L.biasIn,
                L.rows,
                L.gated,
                L.act,
                L.down,
                kk,
                kpp,
                1,
                b.scores,
                b.cand,
                b.sel,
                b.aSel,
              );
              return { r, b };
            });
            const got = layers.map((L) => buffers(L.F));
            const results = hn.hireFfnBatch(
              layers.map((L, i) => {
                const b = got[i];
                return [
                  b.y,
                  x,
                  L.pred,
                  L.biasIn,
                  L.rows,
                  L.gated,
                  L.act,
                  L.down,
                  Math.min(k, L.F),
                  Math.min(kp, L.F),
                  1,
                  b.scores,
                  b.cand,
                  b.sel,
                  b.aSel,
                ];
              }),
            );
            layers.forEach((L, i) => {
              const at = `step ${i} k=${k} kp=${kp} ${path} threads=${threads}`;
              const { r, b } = want[i];
              assert.equal(results[i].candidates, r.candidates, `${at}: candidates`);
              assert.equal(results[i].selected, r.selected, `${at}: selected`);
              assert.deepEqual(got[i].cand.subarray(0, r.candidates), b.cand.subarray(0, r.candidates), `${at}: cand`);
              assert.deepEqual(got[i].sel.subarray(0, r.selected), b.sel.subarray(0, r.selected), `${at}: sel`);
              assertSame(got[i].aSel, b.aSel, r.selected, `${at}: aSel`);
              assertSame(got[i].y, b.y, H, `${at}: y`);
            });
          }),
        );
      }
    }
    // Steps that would write each other's outputs, or shard, are refused before any work.
    const L = layers[0];
    const b = buffers(L.F);
    const args = (y: Float32Array, P = 1) =>
      [y, x, L.pred, null, L.rows, true, "silu", L.down, 4, 8, P, b.scores, b.cand, b.sel, b.aSel] as HireFfnArgs;
    assert.throws(
      () => hn.hireFfnBatch([args(b.y), args(new Float32Array(H))]),
      /steps\[0\]\.scores and steps\[1\]\.scores must not overlap/,
    );
    assert.throws(() => hn.hireFfnBatch([args(b.y, 2)]), /steps\[0\]: shards must be 1/);
    assert.throws(() => hn.hireFfnBatch([[b.y, x] as unknown as HireFfnArgs]), /hireFfnBatch: steps\[0\]/);
  });

  test("bad arguments throw before any work", () => {
    const L = layer(NativeDType.BF16, 64, 16, true, "silu", false);
    const x = randArray(16);
    const y = new Float32Array(16);
    const scores = new Float32Array(64);
    const cand = new Int32Array(64);
    const sel = new Int32Array(64);
    const aSel = new Float32Array(64);
    const call = (o: Partial<Record<string, unknown>>) =>
      hn.hireFfn(
        (o.y ?? y) as Float32Array,
        (o.x ?? x) as Float32Array,
        (o.pred ?? L.pred) as NativeQuant,
        (o.bias ?? null) as Float32Array | null,
        (o.rows ?? L.rows) as NativeWeight,
        (o.gated ?? true) as boolean,
        (o.act ?? "silu") as Act,
        (o.down ?? L.down) as NativeWeight,
        (o.k ?? 8) as number,
        (o.kp ?? 16) as number,
        (o.P ?? 2) as number,
        (o.scores ?? scores) as Float32Array,
        (o.cand ?? cand) as Int32Array,
        (o.sel ?? sel) as Int32Array,
        (o.aSel ?? aSel) as Float32Array,
      );
    assert.equal(call({}).selected, 8);
    assert.throws(() => call({ kp: 15 }), /kp = 15 must be a multiple of shards = 2/);
    assert.throws(() => call({ kp: 65 }), /kp = 65 is out of range/);
    assert.throws(() => call({ gated: false }), /rows is 128 x 16, the predictor needs 64 x 16/);
    assert.throws(() => call({ down: hn.relayout(L.down, false) }), /down must be transposed/);
    assert.throws(() => call({ act: "tanh" }), /unknown activation "tanh"/);
    assert.throws(() => call({ bias: new Float32Array(10) }), /biasIn has 10 elements/);
    assert.throws(() => call({ cand: new Int32Array(15) }), /cand has 15 elements, needs 16/);
    assert.throws(() => call({ sel: new Int32Array(7) }), /sel has 7 elements, needs 8/);
    assert.throws(() => call({ y: new Float32Array(15) }), /y has 15/);
    assert.throws(() => call({ scores: aSel }), /scores and aSel must not overlap/);
    const shared = new Int32Array(64);
    assert.throws(() => call({ cand: shared, sel: shared.subarray(10) }), /cand and sel must not overlap/);
    assert.throws(() => call({ pred: L.rows }), /predictor must be a NativeQuant handle/);
  });
});

describe("hireHead (the output layer in one op)", () => {
  /** The same head step from the separate ops: scores, top-kp per shard, exact rows, top-k, -inf elsewhere. */
  function steps(head: NativeWeight, pred: NativeQuant, V: number, x: Float32Array, k: number, kp: number, P: number) {
    const scores = new Float32Array(V);
    hn.quantMatvec(scores, x, pred);
    const candAll = new Int32Array(V);
    const nc = hn.topk(scores, V, kp, false, P, candAll);
    const g = new Float32Array(nc);
    hn.matvecRows(g, x, head, candAll.subarray(0, nc), nc);
    const pos = new Int32Array(nc);
    const ns = hn.topk(g, nc, Math.min(k, nc), false, P, pos);
    const logits = new Float32Array(V).fill(-Infinity);
    for (let i = 0; i < ns; i++) logits[candAll[pos[i]]] = g[pos[i]];
    return { scores, logits, nc, ns };
  }

  test("gives the separate ops' logits, bit for bit, for global and sharded top-k on 1-3 threads", () => {
    const H = 40;
    for (const V of [9000, 301]) {
      for (const dtype of [NativeDType.BF16, NativeDType.F32]) {
        const head = ownedWeight(dtype, V, H, false).w;
        const pred = hn.quantize(head, 4, 32);
        const x = randArray(H);
        // [k, kp, shards]: a head's usual k' = 4k, sharded, every row a candidate, everything kept.
        const cases: [number, number, number][] = [
          [128, 512, 1],
          [30, 120, 2],
          [31, 123, 3],
          [1, 1, 1],
          [0, 40, 1],
          [50, V, 1],
          [V, V, 2],
        ];
        for (const [k, kp, P] of cases) {
          if (kp > V) continue;
          for (const threads of [1, 2, 3]) {
            withThreads(threads, () =>
              forPaths((path) => {
                const at = `V=${V} dtype=${dtype} k=${k} kp=${kp} P=${P} ${path} threads=${threads}`;
                const want = steps(head, pred, V, x, k, kp, P);
                const logits = new Float32Array(V).fill(NaN);
                const scores = new Float32Array(V);
                const r = hn.hireHead(logits, x, pred, head, k, kp, P, scores);
                assert.equal(r.candidates, want.nc, `${at}: candidates`);
                assert.equal(r.selected, want.ns, `${at}: selected`);
                assertSame(scores, want.scores, V, `${at}: scores`);
                assertSame(logits, want.logits, V, `${at}: logits`);
              }),
            );
          }
        }
      }
    }
  });

  test("ties at the threshold go to the lower index, as the global top-k gives them", () => {
    // Every row the same: all scores tie, so the candidates are the first kp rows of the whole head.
    const V = 9000;
    const H = 32;
    const row = randArray(H);
    const values = new Float32Array(V * H);
    for (let r = 0; r < V; r++) values.set(row, r * H);
    const head = hn.weightFromArray(values, NativeDType.F32, V, H, false);
    const pred = hn.quantize(head, 4, 32);
    const logits = new Float32Array(V);
    withThreads(2, () => hn.hireHead(logits, randArray(H), pred, head, 3, 8, 1, new Float32Array(V)));
    const kept = [...logits.keys()].filter((i) => logits[i] !== -Infinity);
    assert.deepEqual(kept, [0, 1, 2]);
  });

  test("bad arguments throw before any work", () => {
    const head = ownedWeight(NativeDType.BF16, 64, 32, false).w;
    const pred = hn.quantize(head, 4, 32);
    const call = (o: Partial<Record<string, unknown>>) =>
      hn.hireHead(
        (o.logits ?? new Float32Array(64)) as Float32Array,
        (o.x ?? randArray(32)) as Float32Array,
        pred,
        (o.head ?? head) as NativeWeight,
        (o.k ?? 4) as number,
        (o.kp ?? 16) as number,
        (o.P ?? 2) as number,
        (o.scores ?? new Float32Array(64)) as Float32Array,
      );
    assert.equal(call({}).selected, 4);
    assert.throws(() => call({ kp: 15 }), /kp = 15 must be a multiple of shards = 2/);
    assert.throws(() => call({ head: ownedWeight(NativeDType.BF16, 63, 32, false).w }), /head must be 64 x 32/);
    assert.throws(() => call({ head: hn.relayout(head, true) }), /head must be 64 x 32/);
    assert.throws(() => call({ logits: new Float32Array(10) }), /logits has 10 elements/);
    assert.throws(() => call({ x: new Float32Array(3) }), /x has 3 elements/);
    const shared = new Float32Array(64);
    assert.throws(() => call({ logits: shared, scores: shared }), /overlap/);
  });
});

describe("sparse kernels: bad arguments throw", () => {
  test("layouts, indices, lengths, overlaps, handles", () => {
    const rowsW = ownedWeight(NativeDType.F32, 8, 4, false).w; // 8 x 4, [rows][cols]
    const colsW = ownedWeight(NativeDType.BF16, 8, 4, true).w; // 8 x 4, [cols][rows]
    const x = new Float32Array(4);
    const y = new Float32Array(8);
    const idx = Int32Array.from([0, 7, 3]);

    assert.throws(() => hn.matvecRows(y, x, colsW, idx, 3), /must not be transposed/);
    assert.throws(() => hn.matvecRows(y, x, rowsW, Int32Array.from([8]), 1), /idx\[0\] = 8 is out of range/);
    assert.throws(() => hn.matvecRows(y, x, rowsW, Int32Array.from([0, -1]), 2), /idx\[1\] = -1 is out of range/);
    assert.throws(() => hn.matvecRows(y, x, rowsW, idx, 4), /idx has 3 elements/);
    assert.throws(() => hn.matvecRows(new Float32Array(2), x, rowsW, idx, 3), /y has 2/);
    assert.throws(() => hn.matvecRows(y, new Float32Array(3), rowsW, idx, 3), /x has 3/);
    assert.throws(() => hn.matvecRows(y, x, rowsW, idx, -1), /count/);
    assert.throws(() => hn.matvecRows(y, x, rowsW, idx, 1.5), /count/);
    const shared = new Float32Array(16);
    assert.throws(() => hn.matvecRows(shared.subarray(0, 3), shared.subarray(2, 6), rowsW, idx, 3), /overlap/);
    const ab = new ArrayBuffer(64);
    assert.throws(() => hn.matvecRows(new Float32Array(ab, 0, 4), x, rowsW, new Int32Array(ab, 8, 3), 3), /overlap/);
    assert.throws(() => hn.matvecRows(y, x, {} as NativeWeight, idx, 3), /NativeWeight/);
    assert.throws(() => hn.matvecRows(y, x, rowsW, [0, 1] as unknown as Int32Array, 2), /Int32Array/);

    const a = new Float32Array(3);
    assert.throws(() => hn.accumulateCols(y, a, rowsW, idx, 3), /must be transposed/);
    assert.throws(() => hn.accumulateCols(y, a, colsW, Int32Array.from([4]), 1), /idx\[0\] = 4 is out of range/);
    assert.throws(() => hn.accumulateCols(new Float32Array(7), a, colsW, Int32Array.from([0]), 1), /y has 7/);
    assert.throws(() => hn.accumulateCols(y, new Float32Array(1), colsW, Int32Array.from([0, 1]), 2), /a has 1/);
    assert.throws(() => hn.accumulateCols(y, a, colsW, Int32Array.from([0]), 2), /idx has 1/);
    assert.throws(
      () => hn.accumulateCols(shared.subarray(0, 8), shared.subarray(4, 7), colsW, Int32Array.from([0, 1, 2]), 3),
      /overlap/,
    );

    assert.throws(() => hn.quantize(rowsW, 3 as 4, 32), /bits must be 4 or 8/);
    assert.throws(() => hn.quantize(rowsW, 16 as 8, 32), /bits/);
    assert.throws(() => hn.quantize(rowsW, 4, 48), /multiple of 32/);
    assert.throws(() => hn.quantize(rowsW, 4, 16), /groupSize/);
    assert.throws(() => hn.quantize(rowsW, 4, 0), /groupSize/);
    assert.throws(() => hn.quantize(rowsW, 4, 8192), /groupSize/);
    assert.throws(() => hn.quantize({} as NativeWeight, 4, 32), /NativeWeight/);
    const q = hn.quantize(rowsW, 4, 32);
    assert.throws(() => hn.quantMatvec(new Float32Array(7), x, q), /y has 7/);
    assert.throws(() => hn.quantMatvec(y, new Float32Array(3), q), /x has 3/);
    assert.throws(() => hn.quantMatvec(y, x, rowsW as unknown as NativeQuant), /NativeQuant/);
    assert.throws(() => hn.quantMatvec(shared.subarray(0, 8), shared.subarray(6, 10), q), /overlap/);
    assert.throws(() => hn.quantInfo(rowsW as unknown as NativeQuant), /NativeQuant/);
    assert.throws(() => hn.quantRow(q, 8, new Float32Array(4)), /r = 8 is out of range/);
    assert.throws(() => hn.quantRow(q, -1, new Float32Array(4)), /r/);
    assert.throws(() => hn.quantRow(q, 0, new Float32Array(3)), /out has 3/);
    assert.throws(() => hn.relayout(q as unknown as NativeWeight, true), /NativeWeight/);
    assert.throws(() => hn.weightInfo(q as unknown as NativeWeight), /NativeWeight/);

    const v = randArray(10);
    assert.throws(() => hn.topk(v, 10, 3, false, 1, new Int32Array(2)), /out has 2 elements, needs 3/);
    assert.throws(() => hn.topk(v, 10, 20, false, 1, new Int32Array(9)), /needs 10/);
    assert.throws(() => hn.topk(v, 11, 3, false, 1, new Int32Array(3)), /values has 10/);
    assert.throws(() => hn.topk(v, 10, 3, false, 0, new Int32Array(3)), /shards/);
    assert.throws(() => hn.topk(v, 10, -1, false, 1, new Int32Array(3)), /k/);
    assert.throws(() => hn.topk(v, 10, 3, 1 as unknown as boolean, 1, new Int32Array(3)), /byAbs must be a boolean/);
    assert.throws(() => hn.topk(v, 10, 3, false, 1, new Float32Array(3) as unknown as Int32Array), /Int32Array/);
    const vb = new ArrayBuffer(64);
    assert.throws(() => hn.topk(new Float32Array(vb, 0, 10), 10, 3, false, 1, new Int32Array(vb, 32, 3)), /overlap/);

    assert.throws(() => hn.weightFromArray(new Uint16Array(4), NativeDType.F32, 2, 2, false), /Float32Array/);
    assert.throws(() => hn.weightFromArray(new Float32Array(4), NativeDType.BF16, 2, 2, false), /Uint16Array/);
    assert.throws(() => hn.weightFromArray(new Float32Array(3), NativeDType.F32, 2, 2, false), /data has 3/);
    assert.throws(() => hn.weightFromArray(new Float32Array(4), NativeDType.F32, 0, 2, false), /rows/);
    assert.throws(() => hn.weightFromArray(new Float32Array(4), 5 as NativeDType, 2, 2, false), /dtype/);
    assert.throws(
      () => hn.weightFromArray(new Float32Array(4), NativeDType.F32, 2, 2, 0 as unknown as boolean),
      /transposed/,
    );
    assert.throws(() => hn.relayout(rowsW, "yes" as unknown as boolean), /transposed/);
  });

  test("weights relayouted from a mapping outlive unmap", () => {
    const file = join(tmp, "unmap.bin");
    writeFileSync(file, Buffer.from(Float32Array.from([1, 2, 3, 4, 5, 6]).buffer));
    const { mapping } = hn.mapFile(file, true);
    const w = hn.weight(mapping, 0, NativeDType.F32, 2, 3, false);
    const copy = hn.relayout(w, true);
    hn.unmap(mapping);
    assert.throws(() => hn.relayout(w, false), /unmapped/);
    assert.throws(
      () => hn.matvecRows(new Float32Array(1), new Float32Array(3), w, Int32Array.from([0]), 1),
      /unmapped/,
    );
    const y = new Float32Array(2);
    hn.accumulateCols(y, Float32Array.from([1, 1, 1]), copy, Int32Array.from([0, 1, 2]), 3);
    assert.deepEqual(Array.from(y), [6, 15]);
  });
});

test("interleaveRows: rows a0, b0, a1, b1, … (matvecRows over the pairs equals each matrix's rows)", () => {
  const n = native();
  const rows = 5;
  const cols = 37;
  const a = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i));
  const b = Float32Array.from({ length: rows * cols }, (_, i) => Math.cos(3 * i));
  const wa = n.weightFromArray(a, NativeDType.F32, rows, cols, false);
  const wb = n.weightFromArray(b, NativeDType.F32, rows, cols, false);
  const wab = n.interleaveRows(wa, wb);
  assert.deepEqual(n.weightInfo(wab), {
    rows: 2 * rows,
    cols,
    dtype: NativeDType.F32,
    transposed: false,
    bytes: 2 * rows * cols * 4,
  });
  const x = Float32Array.from({ length: cols }, (_, i) => 1 / (i + 1));
  const idx = Int32Array.from({ length: 2 * rows }, (_, i) => i);
  const y = new Float32Array(2 * rows);
  n.matvecRows(y, x, wab, idx, 2 * rows);
  const ya = new Float32Array(rows);
  const yb = new Float32Array(rows);
  n.matmul(ya, x, wa, 1, null);
  n.matmul(yb, x, wb, 1, null);
  for (let i = 0; i < rows; i++) {
    assert.equal(y[2 * i], ya[i]);
    assert.equal(y[2 * i + 1], yb[i]);
  }
  const wt = n.relayout(wa, true);
  assert.throws(() => n.interleaveRows(wt, wb), /must not be transposed/);
  assert.throws(
    () => n.interleaveRows(wa, n.weightFromArray(a, NativeDType.F32, rows - 1, cols, false)),
    /same dtype and shape/,
  );
});
