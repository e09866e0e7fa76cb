// Two builds of the native addon compared on single-token products (matmul), in one process:
// memory phases on the shared VMs swing the rates 2x within minutes, so separate runs mislead.
// Each build gets its own copies of the weights; the builds alternate shape by shape, in flipped
// order every round, with a short sleep between runs so that one pool's spinning workers do not
// overlap the other's. Both builds' outputs are compared too (a speed change must keep the bits).
//
//   cp core/native/build/Release/hire_native.node /tmp/a.node   # then change, rebuild
//   node tools/native/ab-builds.mjs /tmp/a.node core/native/build/Release/hire_native.node \
//     --bits 4 --shapes 151936x896,4864x896,8192x2048 [--model-file DIR/model.safetensors]
//
// --bits 16 measures the bf16 GEMV, 8 and 4 int8 and int4 copies in groups of 32 (quantizeWeight).
// The weights' values are any bf16 bytes of --model-file (default: a make-model 1B shape's), read in.
import { createRequire } from "node:module";
import { resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";

const { positionals, values } = parseArgs({
  allowPositionals: true,
  options: {
    bits: { type: "string", default: "8" },
    shapes: { type: "string", default: "8192x2048,2048x8192" },
    rounds: { type: "string", default: "10" },
    "model-file": { type: "string", default: "/tmp/m/llama-3.2-1b/model.safetensors" },
  },
});
if (positionals.length !== 2) {
  console.error("usage: ab-builds.mjs A.node B.node [--bits 16|8|4] [--shapes RxC,...] [--rounds N] [--model-file F]");
  process.exit(2);
}
const require = createRequire(import.meta.url);
const builds = positionals.map((p) => ({ path: p, n: require(resolve(p)) }));
const bits = Number(values.bits);
const shapes = values.shapes.split(",").map((s) => s.split("x").map(Number));
const BF16 = 2;

function weightsFor(n) {
  const { mapping } = n.mapFile(values["model-file"], true, 0);
  return shapes.map(([rows, cols]) => {
    // Several matrices of about 300 MB in all, so that each run streams from memory, not cache.
    const at = (i) => n.weight(mapping, 4096 + (i % 8) * (1 << 20), BF16, rows, cols, false);
    const make = (i) => (bits === 16 ? at(i) : n.quantizeWeight(at(i), 32, bits));
    const bytes = n.weightInfo(make(0)).bytes;
    const ws = Array.from({ length: Math.max(1, Math.floor(3e8 / bytes)) }, (_, i) => make(i));
    const x = Float32Array.from({ length: cols }, (_, i) => Math.sin(i));
    return { bytes, ws, x, y: new Float32Array(rows) };
  });
}
for (const b of builds) b.sets = weightsFor(b.n);

const rates = builds.map(() => shapes.map(() => []));
for (let round = 0; round < Number(values.rounds); round++) {
  const order = round % 2 ? [1, 0] : [0, 1];
  for (let s = 0; s < shapes.length; s++)
    for (const b of order) {
      await sleep(3);
      const { n, sets } = builds[b];
      const set = sets[s];
      const t0 = performance.now();
      for (const w of set.ws) n.matmul(set.y, set.x, w, 1, null);
      rates[b][s].push((set.bytes * set.ws.length) / (performance.now() - t0) / 1e6);
    }
}
const median = (v) => [...v].sort((a, b) => a - b)[v.length >> 1];
console.log(
  `probe ${builds[0].n.readBandwidth(1 << 28, 3).toFixed(1)} GB/s; A = ${builds[0].path}, B = ${builds[1].path}`,
);
shapes.forEach(([rows, cols], s) => {
  const [a, b] = builds.map((bd) => bd.sets[s]);
  builds[0].n.matmul(a.y, a.x, a.ws[0], 1, null);
  builds[1].n.matmul(b.y, b.x, b.ws[0], 1, null);
  const same = a.y.every((v, i) => Object.is(v, b.y[i]));
  const [ra, rb] = rates.map((r) => median(r[s]));
  console.log(
    `${bits === 16 ? "bf16" : `int${bits}`} ${rows}x${cols}: A ${ra.toFixed(1)}  B ${rb.toFixed(1)} GB/s ` +
      `(B/A ${(rb / ra).toFixed(3)}), outputs ${same ? "identical" : "DIFFER"}`,
  );
});
