// GPU time per kernel of the CUDA backend on llama-3.2-1b shapes, each op recorded R times into one
// CUDA graph (so launches do not count) over enough weight copies to miss the 60 MB L2, timed with
// marks. Run on the device machine after `npm run build` (tools/cuda/device-check.sh runs it):
//   node tools/cuda/kernel-bench.mjs
import { performance } from "node:perf_hooks";
import { native, NativeDType } from "../../dist/core/native/addon.js";

const n = native();
const c = n.cuda;
c.useDevice(0);
const R = 40;
const bw = c.readBandwidth(4 * 1024 ** 3, 3);
console.log(`device read bandwidth ${bw.toFixed(0)} GB/s`);

let seed = 1;
function bf16(rows, cols) {
  const a = new Uint16Array(rows * cols);
  for (let i = 0; i < a.length; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    a[i] = 0x3c00 | ((seed >>> 16) & 0x80ff); // small values of either sign
  }
  return a;
}
function buf(len) {
  const b = c.alloc(len);
  const v = new Float32Array(len);
  for (let i = 0; i < len; i++) v[i] = Math.sin(i * 0.37);
  c.write(b, 0, v);
  return b;
}
/** ms per op: `op(i)` recorded R times in one graph. */
function time(op) {
  op(0); // eager once: uploads, scratch sizes
  c.synchronize();
  c.graphBegin();
  c.mark(0);
  for (let i = 0; i < R; i++) op(i);
  c.mark(1);
  const g = c.graphEnd();
  c.graphLaunch(g);
  c.synchronize();
  c.graphLaunch(g);
  c.synchronize();
  return c.markMs(0, 1) / R;
}
function row(name, ms, bytes) {
  const gbs = bytes / (ms * 1e6);
  console.log(
    `${name.padEnd(38)} ${(ms * 1000).toFixed(1).padStart(8)} us ${gbs.toFixed(0).padStart(6)} GB/s ${((100 * gbs) / bw).toFixed(0).padStart(4)} %`,
  );
}

const shapes = [
  ["gemv bf16 512x2048 (k, v)", 512, 2048],
  ["gemv bf16 2048x2048 (q, o)", 2048, 2048],
  ["gemv bf16 8192x2048 (gate, up)", 8192, 2048],
  ["gemv bf16 2048x8192 (down)", 2048, 8192],
  ["gemv bf16 128256x2048 (head)", 128256, 2048],
];
for (const [name, rows, cols] of shapes) {
  const bytes = rows * cols * 2;
  const copies = Math.max(1, Math.ceil(256e6 / bytes));
  const host = bf16(rows, cols);
  const ws = Array.from({ length: copies }, () =>
    c.uploadWeight(n.weightFromArray(host, NativeDType.BF16, rows, cols, false)),
  );
  const x = buf(cols);
  const y = buf(rows);
  row(
    name,
    time((i) => c.matmul(y, x, ws[i % copies], 1, null)),
    bytes,
  );
}

// A graph of tiny kernels: what each node costs beyond its work.
{
  const a = buf(1);
  const b = buf(1);
  row(
    "add of 1 value (per-node overhead)",
    time(() => c.add(a, b, 1)),
    0,
  );
}

// HiRE pieces on the 1B shape (F = 8192, H = 2048), one layer.
{
  const F = 8192,
    H = 2048;
  const gate = n.weightFromArray(bf16(F, H), NativeDType.BF16, F, H, false);
  const up = n.weightFromArray(bf16(F, H), NativeDType.BF16, F, H, false);
  const rows = n.interleaveRows(gate, up);
  const down = n.weightFromArray(bf16(F, H), NativeDType.BF16, H, F, true);
  const pred = n.quantize(gate, 4, 128);
  const dq = c.uploadQuant(pred);
  const x = buf(H);
  const scores = buf(F);
  const y = buf(H);
  const aSel = buf(F);
  const cand = new Int32Array(F);
  const sel = new Int32Array(F);
  row(
    "int4 scores 8192x2048 g128",
    time(() => c.quantMatvec(scores, x, dq)),
    n.quantInfo(pred).bytes,
  );
  const dRows = c.uploadWeight(rows);
  const dDown = c.uploadWeight(down);
  const bytes = n.quantInfo(pred).bytes + 1638 * 2 * H * 2 + 819 * H * 2;
  row(
    "hireFfn k=819 kp=1638 P=1 (whole layer)",
    time(() => c.hireFfn(y, x, dq, null, dRows, true, "silu", dDown, 819, 1638, 1, scores, cand, sel, aSel, 0)),
    bytes,
  );
  row(
    "hireFfn k=819 kp=1638 P=2",
    time(() => c.hireFfn(y, x, dq, null, dRows, true, "silu", dDown, 819, 1638, 2, scores, cand, sel, aSel, 0)),
    bytes,
  );
  const r = c.hireResults(0, cand, 1638, sel, 819);
  console.log(
    `  hireFfn steps (last replay): scores+top-k' ${(r.scoreMs * 1000).toFixed(1)} us, rows+top-k ${(r.rowsMs * 1000).toFixed(1)} us, down ${(r.downMs * 1000).toFixed(1)} us`,
  );
}
{
  const V = 128256,
    H = 2048;
  const head = n.weightFromArray(bf16(V, H), NativeDType.BF16, V, H, false);
  const pred = n.quantize(head, 4, 128);
  const dq = c.uploadQuant(pred);
  const dh = c.uploadWeight(head);
  const x = buf(H);
  const logits = buf(V);
  const scores = buf(V);
  const bytes = n.quantInfo(pred).bytes + 512 * H * 2;
  row(
    "hireHead k=128 kp=512 (whole head)",
    time(() => c.hireHead(logits, x, dq, dh, 128, 512, 1, scores, 16)),
    bytes,
  );
  const r = c.hireResults(16, new Int32Array(0), 0, new Int32Array(0), 0);
  console.log(
    `  hireHead steps (last replay): scores+top-k' ${(r.scoreMs * 1000).toFixed(1)} us, rows+top-k ${(r.rowsMs * 1000).toFixed(1)} us, scatter ${(r.downMs * 1000).toFixed(1)} us`,
  );
}

// One dense llama-3.2-1b layer op by op (GPU time per node, recorded in graphs), and the host side
// of a decode token: what a replayed step costs beyond its kernels.
{
  const H = 2048,
    heads = 32,
    kvh = 8,
    hd = 64,
    F = 8192,
    cap = 1024;
  const w = (r, cl) => c.uploadWeight(n.weightFromArray(bf16(r, cl), NativeDType.BF16, r, cl, false));
  const g = c.uploadWeight(n.weightFromArray(bf16(1, H), NativeDType.BF16, 1, H, false));
  const [wq, wk, wv, wo] = [w(H, H), w(kvh * hd, H), w(kvh * hd, H), w(H, H)];
  const [wg, wu, wd] = [w(F, H), w(F, H), w(H, F)];
  const x = buf(H),
    h = buf(H),
    q = buf(H),
    k = buf(kvh * hd),
    v = buf(kvh * hd),
    att = buf(H),
    f1 = buf(F),
    f2 = buf(F),
    kc = buf(kvh * cap * hd),
    vc = buf(kvh * cap * hd);
  const inv = new Float32Array(hd / 2).map((_, i) => Math.pow(500000, (-2 * i) / hd));
  const pos = new Int32Array([95]);
  for (const p of [95, 511]) {
    c.setStep(1, p);
    row(
      `rmsNorm 2048`,
      time(() => c.rmsNorm(h, x, g, 1, 1e-5)),
      0,
    );
    row(
      `matmulMany q/k/v`,
      time(() => c.matmulMany(h, 1, [q, k, v], [wq, wk, wv], [null, null, null])),
      (H + 2 * kvh * hd) * H * 2,
    );
    row(
      `rope q`,
      time(() => c.rope(q, 1, heads, hd, pos, inv, true)),
      0,
    );
    row(
      `rope k`,
      time(() => c.rope(k, 1, kvh, hd, pos, inv, true)),
      0,
    );
    row(
      `cacheWrite`,
      time(() => c.cacheWrite(kc, vc, k, v, 1, kvh, hd, p, cap, true)),
      0,
    );
    row(
      `attention at position ${p}`,
      time(() => c.attention(att, q, kc, vc, 1, heads, kvh, hd, p, cap, 0.125, true)),
      2 * kvh * (p + 1) * hd * 4,
    );
    row(
      `o-projection + residual`,
      time(() => c.matmul(x, att, wo, 1, null, true)),
      H * H * 2,
    );
    row(
      `gatedMatmul 8192x2048`,
      time(() => c.gatedMatmul(f2, h, wg, wu, null, null, 1, "silu", f1)),
      2 * F * H * 2,
    );
    row(
      `down 2048x8192`,
      time(() => c.matmul(h, f2, wd, 1, null)),
      F * H * 2,
    );
    row(
      `add 2048`,
      time(() => c.add(x, h, H)),
      0,
    );
    row(
      `mark (event node)`,
      time((i) => c.mark(10 + (i % 8))),
      0,
    );
    // The fused forms the engine runs (transformer.ts).
    row(
      `rope q, k + cache write (one op)`,
      time(() => c.ropeCacheWrite(q, k, v, kc, vc, 1, heads, kvh, hd, pos, inv, p, cap, true)),
      0,
    );
    const layer = () => {
      c.rmsNorm(h, x, g, 1, 1e-5);
      c.matmulMany(h, 1, [q, k, v], [wq, wk, wv], [null, null, null]);
      c.ropeCacheWrite(q, k, v, kc, vc, 1, heads, kvh, hd, pos, inv, p, cap, true);
      c.attention(att, q, kc, vc, 1, heads, kvh, hd, p, cap, 0.125, true);
      c.matmul(x, att, wo, 1, null, true);
      c.rmsNorm(h, x, g, 1, 1e-5);
      c.gatedMatmul(f2, h, wg, wu, null, null, 1, "silu", f1);
      c.matmul(h, f2, wd, 1, null);
      c.add(x, h, H);
    };
    row(`dense layer, 9 kernels (engine)`, time(layer), (H + 2 * kvh * hd + H + 3 * F) * H * 2);
  }
  {
    const V = 128256;
    const lg = buf(V);
    row(
      `argmax over 128256 logits`,
      time(() => c.argmax(lg, V)),
      V * 4,
    );
  }
  // Host costs of a token (ms), averaged over 50.
  const V = 128256;
  const logits = buf(V);
  const out = new Float32Array(V);
  const avg = (f) => {
    f();
    const t0 = performance.now();
    for (let i = 0; i < 50; i++) f();
    return (performance.now() - t0) / 50;
  };
  c.graphBegin();
  c.add(x, h, 1);
  const tiny = c.graphEnd();
  console.log(
    `host: launch + wait of a 1-node graph   ${(
      avg(() => {
        c.graphLaunch(tiny);
        c.synchronize();
      }) * 1000
    ).toFixed(1)} us`,
  );
  console.log(`host: read 128256 logits               ${(avg(() => c.read(logits, 0, out)) * 1000).toFixed(1)} us`);
  console.log(
    `host: argmax over them in JS           ${(
      avg(() => {
        let b = 0;
        for (let i = 1; i < V; i++) if (out[i] > out[b]) b = i;
        return b;
      }) * 1000
    ).toFixed(1)} us`,
  );
  c.graphBegin();
  for (let i = 0; i < 34; i++) c.mark(i);
  const marks = c.graphEnd();
  c.graphLaunch(marks);
  c.synchronize();
  c.argmax(logits, V);
  console.log(
    `host: argmax + read of the id           ${(
      avg(() => {
        c.argmax(logits, V);
        return c.readArgmax();
      }) * 1000
    ).toFixed(1)} us`,
  );
  console.log(`host: markTimes(34)                    ${(avg(() => c.markTimes(34)) * 1000).toFixed(1)} us`);
  console.log(`host: setStep                          ${(avg(() => c.setStep(1, 95)) * 1000).toFixed(1)} us`);
}
