// The CUDA backend against the CPU backend (llama.cpp's test-backend-ops idea): every op on fresh
// random inputs through both backends, then whole models (the golden models and random models made
// with make-model) dense and with each sparse method. Without a GPU the GPU cases skip with the
// reason, and what the machine must do instead (auto falls back to the CPU, an explicit cuda choice
// fails with a typed error) is checked.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { basename, join } from "node:path";
import { native, NativeDType } from "../core/native/addon.js";
import type { Backend, Buf, Weight } from "../core/backend/backend.js";
import { CpuBackend } from "../core/backend/cpu.js";
import { CudaBackend, CudaUnavailableError, cudaDevices } from "../core/backend/cuda.js";
import { createBackend, parseBackendChoice, BackendChoiceError } from "../core/backend/select.js";
import type { Activation } from "../core/arch/config.js";
import { loadModel } from "../core/loader/model-folder.js";
import { Session } from "../core/engine/session.js";
import { ARCHS, makeModel, type Arch } from "../core/modelgen/make-model.js";
import type { DeepPartial, SparsitySettings } from "../core/sparse/settings.js";
import { seededRandom } from "./kernel-helpers.js";
import { goldenDir, REPO_ROOT, tempDir } from "./helpers.js";

const gpu = cudaDevices();
const skip = gpu.devices.length > 0 ? false : `no CUDA device: ${gpu.reason}`;
if (skip) console.log(`# cuda.test: GPU cases skipped (${gpu.reason})`);

test("backend choice: auto falls back to the CPU without a GPU; an explicit cuda says why it cannot run", () => {
  assert.equal(parseBackendChoice("CUDA:1"), "cuda:1");
  assert.throws(() => parseBackendChoice("tpu"), BackendChoiceError);
  assert.ok(createBackend("cpu") instanceof CpuBackend);
  if (gpu.devices.length > 0) {
    assert.ok(createBackend("auto") instanceof CudaBackend);
    assert.throws(() => new CudaBackend(gpu.devices.length + 7), CudaUnavailableError);
    return;
  }
  assert.ok(createBackend("auto") instanceof CpuBackend);
  assert.ok(gpu.reason.length > 0, "a reason is given");
  assert.throws(
    () => new CudaBackend(),
    (e: unknown) => e instanceof CudaUnavailableError && e.message.includes(gpu.reason),
  );
});

// ---- op by op -------------------------------------------------------------------------------------

const DT = { F32: NativeDType.F32, F16: NativeDType.F16, BF16: NativeDType.BF16 } as const;
type DName = keyof typeof DT;

/** f32 -> f16 bits, for values that are exact in f16 (the tests draw multiples of 1/64). */
function f16Bits(v: number): number {
  if (v === 0) return Object.is(v, -0) ? 0x8000 : 0;
  const sign = v < 0 ? 0x8000 : 0;
  const a = Math.abs(v);
  const e = Math.floor(Math.log2(a));
  const m = Math.round((a / 2 ** e - 1) * 1024);
  return sign | ((e + 15) << 10) | m;
}

/** A weight holding `vals` (exact in every dtype), `rows` × `cols` in the given layout. */
function weight(vals: Float32Array, dtype: DName, rows: number, cols: number, transposed = false): Weight {
  let data: Float32Array | Uint16Array = vals;
  if (dtype !== "F32") {
    const u = new Uint16Array(vals.length);
    const f = new Float32Array(1);
    const bits = new Uint32Array(f.buffer);
    for (let i = 0; i < vals.length; i++) {
      f[0] = vals[i];
      u[i] = dtype === "BF16" ? bits[0] >>> 16 : f16Bits(vals[i]);
    }
    data = u;
  }
  const handle = native().weightFromArray(data, DT[dtype], rows, cols, transposed);
  return { handle, dtype, rows, cols, transposed, byteLength: rows * cols * (dtype === "F32" ? 4 : 2) };
}

function ops() {
  const rnd = seededRandom(4242);
  /** Multiples of 1/64 in [-1, 1]: exact in f16 and bf16. */
  const grid = (n: number) => Float32Array.from({ length: n }, () => Math.round(rnd.uniform(-64, 64)) / 64);
  return { rnd, grid, cpu: new CpuBackend(), gpu: new CudaBackend() };
}

function put(b: Backend, a: Float32Array): Buf {
  const buf = b.alloc(Math.max(1, a.length));
  b.write(buf, 0, a);
  return buf;
}

/** Relative closeness: |got - want| <= tol * (1 + |want|), NaN never passes. */
function close(got: Float32Array, want: Float32Array, tol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const g = got[i];
    const w = want[i];
    if (g === w) continue; // equal infinities too
    if (!(Math.abs(g - w) <= tol * (1 + Math.abs(w))))
      assert.fail(`${what}[${i}]: GPU ${g}, CPU ${w} (tolerance ${tol})`);
  }
}

/** Runs `op` on both backends with the same inputs; returns both outputs read back. */
function both(
  o: ReturnType<typeof ops>,
  inputs: Float32Array[],
  outLen: number,
  op: (b: Backend, out: Buf, ins: Buf[]) => void,
): [Float32Array, Float32Array] {
  const res: Float32Array[] = [];
  for (const b of [o.gpu, o.cpu]) {
    const ins = inputs.map((a) => put(b, a));
    const out = put(
      b,
      Float32Array.from({ length: outLen }, () => NaN),
    ); // poisoned: every element must be written
    op(b, out, ins);
    res.push(Float32Array.from(b.read(out, 0, outLen)));
  }
  return [res[0], res[1]];
}

test("cuda ops: matmul (every dtype, layout, batch size, with and without bias) matches the CPU", { skip }, () => {
  const o = ops();
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    for (const [rows, cols] of [
      [77, 136],
      [300, 2048],
      [33, 67],
    ]) {
      for (const transposed of [false, true]) {
        for (const n of [1, 5]) {
          const w = weight(o.grid(rows * cols), dtype, rows, cols, transposed);
          const bias = n === 5 ? weight(o.grid(rows), dtype, 1, rows) : null;
          const x = o.rnd.randArray(n * cols);
          const [g, c] = both(o, [x], n * rows, (b, y, [xb]) => b.matmul(y, xb, w, n, bias));
          // f32 sums of up to 2048 products in another order: rounding grows with the length.
          close(g, c, 1e-4, `matmul ${dtype} ${rows}x${cols} T=${transposed} n=${n}`);
        }
      }
    }
  }
});

test(
  "cuda ops: fused products (residual accumulate, q/k/v in one launch, gated FFN half) match the CPU",
  { skip },
  () => {
    const o = ops();
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      for (const n of [1, 3]) {
        const H = 256;
        const w = weight(o.grid(H * H), dtype, H, H);
        const bias = weight(o.grid(H), dtype, 1, H);
        const x = o.rnd.randArray(n * H);
        const y0 = o.rnd.randArray(n * H);
        let [g, c] = both(o, [x, y0], n * H, (b, y, [xb, yb]) => {
          b.copy2d(y, 0, n * H, yb, 0, n * H, 1, n * H);
          b.matmul(y, xb, w, n, bias, true);
        });
        close(g, c, 1e-4, `matmul accumulate ${dtype} n=${n}`);
        // q, k, v: 256, 64, 64 rows of the same x (one launch at n = 1).
        const ws = [256, 64, 64].map((r) => weight(o.grid(r * H), dtype, r, H));
        const bs = [weight(o.grid(256), dtype, 1, 256), null, weight(o.grid(64), dtype, 1, 64)];
        [g, c] = both(o, [x], n * 384, (b, y, [xb]) => {
          const parts = ws.map((wi, i) => ({ y: b.alloc(n * wi.rows), w: wi, bias: bs[i] }));
          b.matmulMany(xb, n, parts);
          let off = 0;
          for (const p of parts) {
            b.copy2d(y, off, p.w.rows, p.y, 0, p.w.rows, n, p.w.rows);
            off += n * p.w.rows;
          }
        });
        close(g, c, 1e-4, `matmulMany ${dtype} n=${n}`);
        // Gated FFN half, with and without biases.
        const F = 512;
        const gate = weight(o.grid(F * H), dtype, F, H);
        const up = weight(o.grid(F * H), dtype, F, H);
        for (const biased of [false, true]) {
          const gb = biased ? weight(o.grid(F), dtype, 1, F) : null;
          const ub = biased ? weight(o.grid(F), dtype, 1, F) : null;
          [g, c] = both(o, [x], n * F, (b, y, [xb]) =>
            b.gatedMatmul(y, xb, gate, up, gb, ub, n, "silu", b.alloc(n * F)),
          );
          close(g, c, 1e-4, `gatedMatmul ${dtype} n=${n} bias=${biased}`);
        }
      }
    }
  },
);

test("cuda ops: embed, norms, rope, activations, add, gather and copy2d match the CPU", { skip }, () => {
  const o = ops();
  const H = 96;
  for (const dtype of ["F32", "BF16"] as const) {
    const table = weight(o.grid(50 * H), dtype, 50, H);
    const [ge, ce] = both(o, [], 3 * H, (b, y) => b.embed(y, table, Int32Array.of(7, 0, 49)));
    close(ge, ce, 0, `embed ${dtype}`);
    const g = weight(o.grid(H), dtype, 1, H);
    const bb = weight(o.grid(H), dtype, 1, H);
    const x = o.rnd.randArray(4 * H, -3, 3);
    let [gg, cc] = both(o, [x], 4 * H, (b, y, [xb]) => b.rmsNorm(y, xb, g, 4, 1e-5));
    close(gg, cc, 1e-5, `rmsNorm ${dtype}`);
    [gg, cc] = both(o, [x], 4 * H, (b, y, [xb]) => b.layerNorm(y, xb, g, bb, 4, 1e-5));
    close(gg, cc, 1e-5, `layerNorm ${dtype}`);
  }
  // rope: full and partial rotary, positions up to 4000 (cos/sin in double on both).
  for (const half of [32, 16]) {
    const heads = 3;
    const hd = 64;
    const inv = Float32Array.from({ length: half }, (_, j) => 10000 ** ((-2 * j) / (2 * half)));
    const pos = Int32Array.of(0, 5, 100, 4000);
    const x = o.rnd.randArray(4 * heads * hd);
    const [gg, cc] = both(o, [x], x.length, (b, y) => {
      b.copy2d(y, 0, x.length, put(b, x), 0, x.length, 1, x.length);
      b.rope(y, 4, heads, hd, pos, inv);
    });
    close(gg, cc, 1e-6, `rope half=${half}`);
  }
  for (const act of ["relu", "gelu", "gelu_tanh", "silu"] as Activation[]) {
    const a = o.rnd.randArray(1000, -6, 6);
    const u = o.rnd.randArray(1000);
    let [gg, cc] = both(o, [a, u], 1000, (b, y, [ab, ub]) => {
      b.copy2d(y, 0, 1000, ab, 0, 1000, 1, 1000);
      b.gatedAct(y, ub, 1000, act);
    });
    close(gg, cc, 1e-6, `gatedAct ${act}`);
    [gg, cc] = both(o, [a], 1000, (b, y, [ab]) => {
      b.copy2d(y, 0, 1000, ab, 0, 1000, 1, 1000);
      b.activate(y, 1000, act);
    });
    close(gg, cc, 1e-6, `activate ${act}`);
  }
  const a = o.rnd.randArray(777);
  const z = o.rnd.randArray(777);
  let [gg, cc] = both(o, [a, z], 777, (b, y, [ab, zb]) => {
    b.copy2d(y, 0, 777, ab, 0, 777, 1, 777);
    b.add(y, zb, 777);
  });
  close(gg, cc, 0, "add");
  const idx = Int32Array.of(776, 0, 5, 5, 300);
  [gg, cc] = both(o, [a], 5, (b, y, [ab]) => b.gather(y, ab, idx, 5));
  close(gg, cc, 0, "gather");
  // Strided copy: every other element of a into a column.
  [gg, cc] = both(o, [a], 300, (b, y, [ab]) => b.copy2d(y, 0, 1, ab, 1, 2, 300, 1));
  close(gg, cc, 0, "copy2d strided");
});

test(
  "cuda ops: KV cache writes and attention (GQA, prefill, long decode, sliding windows, soft caps) and softcap match the CPU",
  { skip },
  () => {
    const o = ops();
    for (const [heads, kv, hd, pos0, n, cap, window, softcap] of [
      [4, 2, 64, 5, 3, 16, 0, 0],
      [6, 2, 32, 0, 7, 8, 0, 0],
      [2, 1, 128, 597, 2, 700, 0, 0], // several 256-position tiles of the online softmax
      [4, 1, 256, 600, 1, 1024, 512, 0], // Gemma 3's window, decode past it, over the splits
      [4, 2, 32, 0, 17, 20, 8, 0], // a prefill chunk crossing the window
      [8, 4, 256, 300, 2, 512, 64, 2], // Gemma 2: soft-capped scores in a window
      // Ring caches (sliding-window layers, position p in slot p % cap): decode with the window
      // wrapped past slot 0, and a batch written across the ring's end.
      [4, 1, 256, 1500, 1, 600, 512, 0],
      [4, 2, 32, 25, 9, 20, 8, 0],
    ]) {
      const kvLen = kv * cap * hd;
      const kc0 = o.rnd.randArray(kvLen);
      const vc0 = o.rnd.randArray(kvLen);
      const k = o.rnd.randArray(n * kv * hd);
      const v = o.rnd.randArray(n * kv * hd);
      const q = o.rnd.randArray(n * heads * hd, -2, 2);
      const [g, c] = both(o, [kc0, vc0, k, v, q], n * heads * hd, (b, out, [kc, vc, kb, vb, qb]) => {
        b.cacheWrite(kc, vc, kb, vb, n, kv, hd, pos0, cap);
        b.attention(out, qb, kc, vc, n, heads, kv, hd, pos0, cap, 1 / Math.sqrt(hd), window, softcap);
      });
      close(
        g,
        c,
        2e-5,
        `attention heads=${heads}/${kv} hd=${hd} pos0=${pos0} n=${n} window=${window} softcap=${softcap}`,
      );
    }
    const logits = o.rnd.randArray(1000, -80, 80);
    logits[7] = -Infinity; // a token HiRE's head left out stays out
    const [gs, cs] = both(o, [logits], 1000, (b, y, [x]) => {
      b.copy2d(y, 0, 1000, x, 0, 1000, 1, 1000);
      b.softcap(y, 1000, 30);
    });
    close(gs, cs, 1e-5, "softcap");
    assert.equal(gs[7], -Infinity);
  },
);

test(
  "cuda ops: rope + cache write in one op, and attention over every split of the positions, match the CPU",
  { skip },
  () => {
    const o = ops();
    for (const [heads, kv, hd, pos0, n, cap, rope, window = 0] of [
      [32, 8, 64, 95, 1, 1024, true],
      [4, 2, 64, 5, 3, 16, true],
      [6, 3, 32, 0, 7, 8, false],
      [2, 1, 128, 4090, 1, 4096, true], // 32 splits of 128 positions
      [4, 4, 256, 0, 1, 300, true], // the first position alone
      [3, 1, 48, 200, 2, 260, true], // head_dim not a multiple of 32
      [4, 2, 64, 70, 3, 16, true, 8], // a ring of 16 slots for an 8-position window, written across its end
    ] as const) {
      const kvLen = kv * cap * hd;
      const kc0 = o.rnd.randArray(kvLen);
      const vc0 = o.rnd.randArray(kvLen);
      const k = o.rnd.randArray(n * kv * hd);
      const v = o.rnd.randArray(n * kv * hd);
      const q = o.rnd.randArray(n * heads * hd, -2, 2);
      const inv = rope ? Float32Array.from({ length: hd / 2 }, (_, i) => Math.pow(10000, (-2 * i) / hd)) : null;
      const positions = Int32Array.from({ length: n }, (_, i) => pos0 + i);
      const [g, c] = both(o, [kc0, vc0, k, v, q], n * heads * hd + 2 * kvLen, (b, out, [kc, vc, kb, vb, qb]) => {
        b.ropeCacheWrite(qb, kb, vb, kc, vc, n, heads, kv, hd, positions, inv, pos0, cap);
        const att = b.alloc(n * heads * hd);
        b.attention(att, qb, kc, vc, n, heads, kv, hd, pos0, cap, 1 / Math.sqrt(hd), window);
        b.copy2d(out, 0, n * heads * hd, att, 0, n * heads * hd, 1, n * heads * hd);
        b.copy2d(out, n * heads * hd, kvLen, kc, 0, kvLen, 1, kvLen);
        b.copy2d(out, n * heads * hd + kvLen, kvLen, vc, 0, kvLen, 1, kvLen);
      });
      close(
        g,
        c,
        2e-5,
        `rope+cache+attention heads=${heads}/${kv} hd=${hd} pos0=${pos0} n=${n} rope=${rope} window=${window}`,
      );
    }
  },
);

test("cuda ops: argmax on the device picks sampler.ts's argmax (first of ties, NaN never, -inf rows)", { skip }, () => {
  const o = ops();
  const cases: Float32Array[] = [];
  const big = o.rnd.randArray(128256, -10, 10);
  cases.push(big);
  const ties = Float32Array.from(big);
  ties[777] = ties[100000] = 50; // the first of equal maxima
  cases.push(ties);
  const nan = Float32Array.from(big);
  nan[5] = NaN;
  nan[6] = 99;
  cases.push(nan);
  const first = Float32Array.from(big);
  first[0] = NaN; // sampler.ts keeps x[0] when it is NaN
  cases.push(first);
  cases.push(Float32Array.from({ length: 5000 }, (_, i) => (i === 4321 ? 1 : -Infinity)));
  cases.push(Float32Array.from({ length: 3 }, () => -Infinity));
  cases.push(Float32Array.of(-0, 0, -1));
  for (const [i, x] of cases.entries()) {
    const ids = [o.gpu, o.cpu].map((b) => {
      b.argmax(put(b, x), x.length);
      return b.readArgmax();
    });
    assert.equal(ids[0], ids[1], `case ${i}: GPU ${ids[0]}, CPU ${ids[1]}`);
  }
});

test("cuda ops: int4/int8 scoring gives the CPU's scores (same codes, exact integer sums)", { skip }, () => {
  const o = ops();
  for (const [rows, cols] of [
    [300, 2048],
    [70, 200],
  ]) {
    for (const bits of [4, 8] as const) {
      for (const group of [32, 128]) {
        const w = weight(o.grid(rows * cols), "BF16", rows, cols);
        const q = o.cpu.quantize(w, bits, group);
        const x = o.rnd.randArray(cols, -2, 2);
        const [g, c] = both(o, [x], rows, (b, y, [xb]) => b.quantMatvec(y, xb, q));
        close(g, c, 1e-5, `quantMatvec int${bits} g${group} ${rows}x${cols}`);
      }
    }
  }
});

test("cuda ops: gathered rows and columns match the CPU", { skip }, () => {
  const o = ops();
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    const rows = 512;
    const cols = 264;
    const w = weight(o.grid(rows * cols), dtype, rows, cols);
    const idx = Int32Array.from({ length: 100 }, (_, i) => (i * 37 + 11) % rows);
    const x = o.rnd.randArray(cols);
    let [g, c] = both(o, [x], 100, (b, y, [xb]) => b.matvecRows(y, xb, w, idx, 100));
    close(g, c, 1e-5, `matvecRows ${dtype}`);
    const wt = weight(o.grid(rows * cols), dtype, rows, cols, true); // memory [cols][rows]
    const colIdx = Int32Array.from({ length: 150 }, (_, i) => (i * 7 + 3) % cols);
    const a = o.rnd.randArray(150);
    [g, c] = both(o, [a], rows, (b, y, [ab]) => b.accumulateCols(y, ab, wt, colIdx, 150));
    close(g, c, 1e-5, `accumulateCols ${dtype}`);
    [g, c] = both(o, [a], rows, (b, y, [ab]) => b.accumulateCols(y, ab, wt, colIdx, 0));
    close(g, c, 0, `accumulateCols ${dtype} count 0`);
  }
});

test("cuda ops: DA-top-k selects exactly what the CPU selects (ties, NaN, -0, shards, two stages)", { skip }, () => {
  const o = ops();
  // 5000 values: one block per shard; 50000: shards longer than 8192 go through the two-stage path.
  for (const n of [5000, 50000]) {
    const cases: Float32Array[] = [o.rnd.randArray(n)];
    const ties = Float32Array.from({ length: n }, () => Math.round(o.rnd.uniform(-4, 4)) / 2);
    ties[17] = NaN;
    ties[18] = -0;
    ties[4000] = NaN;
    cases.push(ties);
    topkCases(o, n, cases);
  }
});

function topkCases(o: ReturnType<typeof ops>, n: number, cases: Float32Array[]): void {
  for (const values of cases) {
    for (const [k, shards] of [
      [700, 1],
      [700, 2],
      [701, 3],
      [64, 4],
      [1, 1],
      [n - 1, 1],
      [n + 1000, 2],
      [Math.floor(n / 2) + 1, 1],
    ]) {
      for (const byAbs of [true, false]) {
        const outs: Int32Array[] = [];
        const counts: number[] = [];
        for (const b of [o.gpu, o.cpu]) {
          const out = new Int32Array(n);
          counts.push(b.topk(put(b, values), n, k, byAbs, shards, out));
          outs.push(out.slice(0, counts[counts.length - 1]));
        }
        assert.equal(counts[0], counts[1], `topk n=${n} count k=${k} P=${shards} abs=${byAbs}`);
        assert.deepEqual(outs[0], outs[1], `topk n=${n} k=${k} P=${shards} abs=${byAbs}`);
      }
    }
  }
}

test("cuda ops: hireFfn's selections follow from its own scores as the CPU op's do", { skip }, () => {
  const o = ops();
  const H = 256;
  const F = 1024;
  for (const gated of [true, false]) {
    for (const [shards, kp] of [
      [1, 205],
      [2, 206],
      [2, F],
    ]) {
      const k = 100;
      const first = weight(o.grid(F * H), "BF16", F, H);
      const up = weight(o.grid(F * H), "BF16", F, H);
      const rows = gated ? o.cpu.interleaveRows(first, up) : first;
      const down = weight(o.grid(F * H), "BF16", H, F, true); // W_down [H][F], columns contiguous
      const pred = o.cpu.quantize(first, 4, 32);
      const biasIn = gated ? null : o.rnd.randArray(F, -0.2, 0.2);
      const x = o.rnd.randArray(H);
      const g = o.gpu;
      const out = put(g, new Float32Array(H));
      const scores = put(g, new Float32Array(F));
      const aSel = put(g, new Float32Array(F));
      const cand = new Int32Array(F);
      const sel = new Int32Array(F);
      const r = g.hireFfn({
        out,
        x: put(g, x),
        predictor: pred,
        biasIn: biasIn && put(g, biasIn),
        rows,
        gated,
        activation: "silu",
        down,
        k,
        kp,
        shards,
        scores,
        cand,
        sel,
        aSel,
        slot: 0,
      });
      const what = `hireFfn gated=${gated} P=${shards} kp=${kp}`;
      assert.equal(r.selected, k, `${what}: selected`);
      // Its candidates are the CPU top-k' of its scores, which are the CPU's scores within rounding.
      const gScores = g.read(scores, 0, F);
      const cScores = new Float32Array(F);
      o.cpu.quantMatvec(cScores, x, pred);
      if (biasIn) for (let i = 0; i < F; i++) cScores[i] += biasIn[i];
      o.cpu.activate(cScores, F, "silu");
      close(gScores, cScores, 1e-5, `${what}: scores`);
      const wantCand = new Int32Array(F);
      const nc = o.cpu.topk(gScores, F, kp >= F ? F : kp, true, kp >= F ? 1 : shards, wantCand);
      assert.equal(r.candidates, nc, `${what}: candidates`);
      assert.deepEqual(cand.slice(0, nc), wantCand.slice(0, nc), `${what}: candidate set`);
      // Exact activations of the candidates on the CPU, then the CPU's selection among them.
      const act = new Float32Array(nc);
      if (gated) {
        const pair = new Int32Array(2 * nc);
        for (let i = 0; i < nc; i++) [pair[2 * i], pair[2 * i + 1]] = [2 * cand[i], 2 * cand[i] + 1];
        const po = new Float32Array(2 * nc);
        o.cpu.matvecRows(po, x, rows, pair, 2 * nc);
        const gg = Float32Array.from({ length: nc }, (_, i) => po[2 * i]);
        const uu = Float32Array.from({ length: nc }, (_, i) => po[2 * i + 1]);
        o.cpu.gatedAct(gg, uu, nc, "silu");
        act.set(gg);
      } else {
        o.cpu.matvecRows(act, x, rows, cand, nc);
        for (let i = 0; i < nc; i++) act[i] += biasIn![cand[i]];
        o.cpu.activate(act, nc, "silu");
      }
      const selPos = new Int32Array(nc);
      const ns = o.cpu.topk(act, nc, k, true, shards, selPos);
      assert.deepEqual(
        sel.slice(0, ns),
        Int32Array.from(selPos.subarray(0, ns), (p) => cand[p]),
        `${what}: selected set`,
      );
      close(
        g.read(aSel, 0, ns),
        Float32Array.from(selPos.subarray(0, ns), (p) => act[p]),
        1e-5,
        `${what}: activations`,
      );
      const y = new Float32Array(H);
      o.cpu.accumulateCols(
        y,
        Float32Array.from(selPos.subarray(0, ns), (p) => act[p]),
        down,
        sel,
        ns,
      );
      close(g.read(out, 0, H), y, 1e-4, `${what}: output`);
    }
  }
});

// ---- whole models ---------------------------------------------------------------------------------

interface Run {
  ids: number[];
  top: [number, number][][];
}

async function greedy(session: Session, prompt: number[], maxTokens: number): Promise<Run> {
  const ids: number[] = [];
  const top: [number, number][][] = [];
  for await (const ev of session.generate(prompt, { maxTokens, temperature: 0, logprobs: 5, ignoreEos: true })) {
    if (ev.type === "token") {
      ids.push(ev.id);
      top.push(ev.topLogprobs!);
    }
  }
  return { ids, top };
}

/**
 * GPU against CPU on one model and settings: equal greedy ids while the CPU's top two are further
 * apart than `tol`, and top-5 log-probabilities within `tol` up to there. Dense runs differ only in
 * rounding; a sparse run can also keep a different neuron where two activations tie within rounding
 * at the k-th place, which moves the output a little more, hence a looser `tol` for those.
 */
function compareRuns(what: string, g: Run, c: Run, tol: number): void {
  for (let i = 0; i < c.ids.length; i++) {
    const [first, second] = c.top[i];
    const margin = second ? first[1] - second[1] : Infinity;
    for (const [id, lp] of c.top[i]) {
      const m = g.top[i].find(([gid]) => gid === id);
      if (m) assert.ok(Math.abs(m[1] - lp) < tol, `${what} step ${i} token ${id}: GPU ${m[1]}, CPU ${lp}`);
    }
    if (margin < tol) return; // a near-tie: the two may part here
    assert.equal(g.ids[i], c.ids[i], `${what}: greedy id at step ${i} (CPU margin ${margin.toFixed(4)})`);
  }
}

const SPARSE: [string, DeepPartial<SparsitySettings>, boolean][] = [
  ["dense", { ffn: { method: "dense" } }, false],
  ["topk-exact 25%", { ffn: { method: "topk-exact", k: 0.25 } }, false],
  ["hire int4 + head", { ffn: { method: "hire", k: 0.25, oversample: 2 }, head: { method: "hire", k: 32 } }, false],
  [
    "hire int8 P=2",
    { ffn: { method: "hire", k: 0.25, oversample: 2, predictor: { kind: "int8", groupSize: 32 } }, shards: 2 },
    false,
  ],
  [
    "hire lowrank",
    { ffn: { method: "hire", k: 0.25, oversample: 2, predictor: { kind: "lowrank", rank: 16 } } },
    false,
  ],
  ["dip 50%", { ffn: { method: "dip", k: 0.5 } }, true],
];

/** CPU against GPU for dense and SPARSE's methods; the gated-FFN ones (DIP) where `dip` and the model has one. */
async function parity(t: { after: (fn: () => void) => void }, dir: string, name: string, dip: boolean) {
  const prompt = [1, 2, 3, 5, 8, 13, 21, 34];
  process.env.HIRE_CACHE_DIR = tempDir(t, "hire-cuda-cache-");
  const model = loadModel(dir);
  try {
    const cpu = new Session(model, { backend: new CpuBackend(), contextLength: 64 });
    const gpuS = new Session(model, { backend: new CudaBackend(), contextLength: 64 });
    for (const [label, settings, needsGated] of SPARSE) {
      if (needsGated && !(dip && model.config.gatedFfn)) continue;
      cpu.reset();
      gpuS.reset();
      cpu.sparsity.update(settings);
      gpuS.sparsity.update(settings);
      const c = await greedy(cpu, prompt, 8);
      const g = await greedy(gpuS, prompt, 8);
      compareRuns(`${name} ${label}`, g, c, label === "dense" ? 2e-3 : 2e-2);
    }
  } finally {
    model.close();
  }
}

const root = goldenDir();
const ours = join(REPO_ROOT, "test", "golden"); // Qwen3, SmolLM3, Phi-3 (golden.test.ts)
const goldenDirs = [
  ...(root ? readdirSync(root).filter((d) => !d.includes(".")) : []).map((d) => join(root!, d)),
  ...readdirSync(ours).map((d) => join(ours, d)),
];

for (const dir of goldenDirs) {
  const name = basename(dir);
  test(`cuda golden ${name}: greedy ids and log-probabilities of the float64 reference`, { skip }, async () => {
    const expected = JSON.parse(readFileSync(join(dir, "expected.json"), "utf8")) as {
      prompt_ids: number[];
      ids: number[];
      top_logprobs: [number, number][][];
    };
    const model = loadModel(dir);
    try {
      const s = new Session(model, { backend: new CudaBackend() });
      const r = await greedy(s, expected.prompt_ids, expected.ids.length);
      assert.deepEqual(r.ids, expected.ids, `${name}: greedy ids`);
      for (let i = 0; i < expected.top_logprobs.length; i++)
        for (const [id, lp] of expected.top_logprobs[i]) {
          const m = r.top[i].find(([gid]) => gid === id);
          assert.ok(m, `${name} step ${i}: token ${id} missing`);
          assert.ok(Math.abs(m[1] - lp) < 1e-3, `${name} step ${i} token ${id}: ${m[1]} vs ${lp}`);
        }
    } finally {
      model.close();
    }
  });

  test(`cuda golden ${name}: every sparse method on the GPU matches the CPU`, { skip }, async (t) => {
    await parity(t, dir, name, true);
  });
}

for (const arch of Object.keys(ARCHS) as Arch[]) {
  test(`cuda random ${arch} (bf16, make-model): dense and sparse match the CPU`, { skip }, async (t) => {
    const dir = join(tempDir(t), arch);
    await makeModel({
      arch,
      dtype: "bf16",
      seed: 7,
      out: dir,
      shape: { hidden: 256, intermediate: 1024, layers: 2, vocab: 512 },
    });
    await parity(t, dir, `random-${arch}`, arch === "llama" || arch === "qwen2");
  });
}

test(
  "cuda: decode steps replay as CUDA graphs with their telemetry, and a new k applies from the next token",
  { skip },
  async (t) => {
    const dir = join(tempDir(t), "llama");
    await makeModel({
      arch: "llama",
      dtype: "bf16",
      seed: 11,
      out: dir,
      shape: { hidden: 256, intermediate: 1024, layers: 2, vocab: 512 },
    });
    process.env.HIRE_CACHE_DIR = tempDir(t, "hire-cuda-cache-");
    const model = loadModel(dir);
    try {
      const s = new Session(model, { backend: new CudaBackend(), contextLength: 64 });
      const cpu = new Session(model, { backend: new CpuBackend(), contextLength: 64 });
      // Dense: replayed steps give the CPU's tokens.
      const g = await greedy(s, [1, 2, 3], 10);
      assert.ok(s.transformer.replays >= 8, `dense steps replayed: ${s.transformer.replays}`);
      compareRuns("graph dense", g, await greedy(cpu, [1, 2, 3], 10), 2e-3);
      // HiRE + head: telemetry from the replayed steps; k changes between two tokens.
      s.reset();
      s.sparsity.update({ ffn: { method: "hire", k: 0.25, oversample: 2 }, head: { method: "hire", k: 32 } });
      const before = s.transformer.replays;
      const ks: number[] = [];
      let i = 0;
      for await (const ev of s.generate([1, 2, 3], { maxTokens: 10, temperature: 0, ignoreEos: true })) {
        if (ev.type !== "token" || ev.report.tokens !== 1) continue; // decode tokens (not the prefill's)
        const f = ev.report.layers[1].ffn!;
        ks.push(f.selected.length);
        assert.equal(f.k, f.selected.length);
        assert.ok(
          f.selected.every((n, j) => n >= 0 && n < 1024 && (j === 0 || n > f.selected[j - 1])),
          "ascending neurons",
        );
        assert.equal(ev.report.head?.k, 32);
        assert.ok(ev.report.layers[0].attentionMs >= 0 && ev.report.outputMs >= 0);
        if (++i === 4) s.sparsity.update({ ffn: { k: 0.5 } });
      }
      assert.ok(s.transformer.replays - before >= 6, `hire steps replayed: ${s.transformer.replays - before}`);
      assert.deepEqual(ks, [256, 256, 256, 256, 512, 512, 512, 512, 512]);
    } finally {
      model.close();
    }
  },
);
