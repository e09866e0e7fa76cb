// Giving back the file-layout FFN weights that HiRE's own layouts replace (Backend.releaseWeight,
// SparsifierOptions.releaseFileLayout): the memory really goes, a released weight is read back from
// the file on its next use (never computed with the zeros left behind), a changed file is an error
// naming it, and a session that releases decodes exactly what one keeping everything decodes.
import { test, before, after, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, statSync, utimesSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeModel } from "../core/modelgen/make-model.js";
import { loadModel, type LoadedModel, type LoadOptions } from "../core/loader/model-folder.js";
import { createBackend } from "../core/backend/select.js";
import { KVCache, Transformer, type ForwardReport } from "../core/engine/transformer.js";
import { Sparsifier } from "../core/sparse/sparsifier.js";
import type { DeepPartial, SparsitySettings } from "../core/sparse/settings.js";
import type { Backend, Weight } from "../core/backend/backend.js";
import { ffnBytes as ffnWeightBytes, firstFfn } from "../core/arch/config.js";

let root: string;
let dir: string;

// FFN matrices of 4 MiB each (bf16 4096 x 512), so that a release is whole huge pages and visible in RSS.
before(async () => {
  root = mkdtempSync(join(tmpdir(), "hire-release-"));
  process.env.HIRE_CACHE_DIR = join(root, "cache");
  dir = join(root, "llama");
  await makeModel({
    arch: "llama",
    shape: { hidden: 512, intermediate: 4096, layers: 2, heads: 8, kvHeads: 4, vocab: 1024 },
    dtype: "bf16",
    seed: 5,
    out: dir,
  });
});
after(() => rmSync(root, { recursive: true, force: true }));

function rssBytes(): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync("/proc/self/status", "utf8"))![1]) * 1024;
}

/** Bytes of this process on transparent huge pages. */
function hugePageBytes(): number {
  return Number(/AnonHugePages:\s+(\d+)/.exec(readFileSync("/proc/self/smaps_rollup", "utf8"))![1]) * 1024;
}

/** Read-in weights go back in whole 2 MiB pages (Mapping::release_pages). */
const HUGE = 2 * 1024 * 1024;

function product(b: Backend, w: Weight): Float32Array {
  const x = b.alloc(w.cols);
  b.write(
    x,
    0,
    Float32Array.from({ length: w.cols }, (_, i) => Math.sin(i)),
  );
  const y = b.alloc(w.rows);
  b.matmul(y, x, w, 1, null);
  return Float32Array.from(b.read(y, 0, w.rows));
}

test("a released weight gives its memory back and is read back from the file on its next use", (t) => {
  const model = loadModel(dir);
  t.after(() => model.close());
  const b = createBackend("cpu", 2);
  const gate = firstFfn(model.weights.layers[0]).gate!.w;
  const before = product(b, gate);
  const rss0 = rssBytes();
  const bytes = b.releaseWeight!(gate);
  // The whole 2 MiB pages inside the tensor: all of it but its ragged first and last pages.
  assert.ok(bytes > 0 && bytes % HUGE === 0, `released ${bytes}`);
  assert.ok(bytes >= gate.byteLength - 2 * HUGE && bytes <= gate.byteLength, `released ${bytes} of ${gate.byteLength}`);
  assert.equal(model.store.releasedBytes(), bytes);
  const drop = rss0 - rssBytes();
  assert.ok(drop > bytes / 2, `RSS fell by ${drop} bytes after releasing ${bytes}`);
  assert.equal(b.releaseWeight!(gate), 0, "releasing it again gives back nothing more");
  assert.deepEqual(product(b, gate), before, "the product after a release equals the one before");
  assert.equal(model.store.releasedBytes(), 0, "the use read the pages back");
  assert.ok(b.releaseWeight!(gate) > 0, "and it can be given back again");
});

test("neighbours released one by one give back the pages they share, and no huge page of a live weight is split", (t) => {
  const model = loadModel(dir);
  t.after(() => model.close());
  const b = createBackend("cpu", 1);
  const l = firstFfn(model.weights.layers[0]);
  // In the file a layer's gate, up and down follow each other: 12 MiB with ragged ends.
  const [gate, up, down] = [l.gate!.w, l.up.w, l.down.w];
  const huge0 = hugePageBytes();
  const given = [gate, up, down].map((w) => b.releaseWeight!(w));
  const total = given.reduce((a, x) => a + x, 0);
  const span = gate.byteLength + up.byteLength + down.byteLength;
  assert.ok(total >= span - 2 * HUGE && total % HUGE === 0, `gave back ${given.join(" + ")} of ${span}`);
  assert.equal(model.store.releasedBytes(), total);
  if (huge0 === 0) return t.skip("this kernel put no weights on transparent huge pages");
  // Giving back 4 KiB pages inside a huge page would split it: the huge pages would then fall by more
  // than what was given back (the neighbours' bytes left in it going to 4 KiB pages).
  assert.equal(huge0 - hugePageBytes(), total, "huge pages fell by exactly the bytes given back");
});

test("a weight of a mapped file (--mmap) is released too and faults back in from the file by itself", (t) => {
  const model = loadModel(dir, { mmap: true });
  t.after(() => model.close());
  const b = createBackend("cpu", 2);
  const down = firstFfn(model.weights.layers[1]).down.w;
  const before = product(b, down);
  assert.ok(b.releaseWeight!(down) > down.byteLength - 2 * 4096);
  assert.equal(model.store.releasedBytes(), 0, "nothing to read back by hand: the pages are the file's");
  assert.deepEqual(product(b, down), before);
});

test("a released weight whose file changed since loading is an error naming the file, every time", (t) => {
  const model = loadModel(dir);
  t.after(() => model.close());
  const b = createBackend("cpu", 1);
  const up = firstFfn(model.weights.layers[1]).up.w;
  assert.ok(b.releaseWeight!(up) > 0);
  const file = join(dir, "model.safetensors");
  const st = statSync(file);
  utimesSync(file, st.atime, new Date(st.mtimeMs + 5000));
  t.after(() => utimesSync(file, st.atime, st.mtime));
  for (let i = 0; i < 2; i++)
    assert.throws(
      () => product(b, up),
      (e: Error) => e.message.includes(file) && /changed since the model was loaded/.test(e.message),
    );
  assert.ok(model.store.releasedBytes() > 0, "the pages stay released (zeros are never used)");
});

interface Decoded {
  ids: number[];
  logits: Float32Array[];
  recall: number[];
}

/** Greedy decode with the settings, audited every token, through a Sparsifier with or without release. */
function decode(
  model: LoadedModel,
  release: boolean,
  phases: DeepPartial<SparsitySettings>[],
): { phases: Decoded[]; released: number[] } {
  const b = createBackend("cpu", 2);
  const t = new Transformer(b, model.config, model.weights);
  const sp = new Sparsifier(t, { releaseFileLayout: release });
  const cache = new KVCache(b, model.config, 64);
  sp.beginPrefill();
  let logits = Float32Array.from(t.forward([3, 1, 4, 1, 5, 9], 0, cache, undefined, true)!);
  let pos = 6;
  const out: Decoded[] = [];
  const released: number[] = [];
  for (const settings of phases) {
    sp.update({ ...settings, auditEvery: 1 });
    released.push(model.store.releasedBytes());
    const d: Decoded = { ids: [], logits: [], recall: [] };
    for (let i = 0; i < 4; i++) {
      let id = 0;
      for (let j = 1; j < logits.length; j++) if (logits[j] > logits[id]) id = j;
      d.ids.push(id);
      sp.beginToken();
      const report: ForwardReport = { tokens: 0, layers: [], outputMs: 0 };
      logits = Float32Array.from(t.forward([id], pos++, cache, report, true)!);
      d.logits.push(logits);
      for (const l of report.layers) if (l.ffn?.recall !== undefined) d.recall.push(l.ffn.recall);
    }
    out.push(d);
    released.push(model.store.releasedBytes()); // still given back after decoding (nothing read it back)
  }
  return { phases: out, released };
}

/** Every method in turn, HiRE first (so that the file layout is given back from the start). */
const PHASES: DeepPartial<SparsitySettings>[] = [
  { ffn: { method: "hire", k: 0.25, oversample: 2 }, head: { method: "hire", k: 16 } },
  { ffn: { method: "dense" }, head: { method: "dense" } },
  { ffn: { method: "topk-exact", k: 0.25 } },
  { ffn: { method: "dip", k: 0.5 } },
  { ffn: { method: "hire", k: 0.1 } },
];

/** The same decode through two loads of the model, one keeping its file layout (a), one giving it back (b). */
function keptAndFreed(t: TestContext, options: LoadOptions) {
  const kept = loadModel(dir, options);
  const freed = loadModel(dir, options);
  t.after(() => {
    kept.close();
    freed.close();
  });
  const a = decode(kept, false, PHASES);
  const b = decode(freed, true, PHASES);
  assert.deepEqual(
    a.released,
    PHASES.flatMap(() => [0, 0]),
  );
  return { a, b, freed };
}

test("a session giving back the file layout decodes what one keeping it decodes, through every method", (t) => {
  const phases = PHASES;
  const { a, b, freed } = keptAndFreed(t, {});
  const ffnBytes = freed.weights.layers.reduce((s, l) => s + ffnWeightBytes(firstFfn(l)), 0);
  // Each layer's FFN matrices are one run in the file: all of it goes back but a ragged 2 MiB page at each end.
  const floor = ffnBytes - freed.weights.layers.length * 2 * HUGE;
  for (const r of b.released) assert.ok(r >= floor, `released ${r} of the FFN's ${ffnBytes} bytes`);
  phases.forEach((p, i) => {
    const what = `phase ${i} (${p.ffn?.method})`;
    assert.deepEqual(b.phases[i].ids, a.phases[i].ids, `${what}: greedy ids`);
    assert.deepEqual(b.phases[i].recall, a.phases[i].recall, `${what}: audited recall`);
    b.phases[i].logits.forEach((l, j) => {
      const ref = a.phases[i].logits[j];
      let scale = 0;
      let err = 0;
      for (let v = 0; v < l.length; v++) {
        // The HiRE head leaves -inf outside its candidates: the same ones in both.
        if (!Number.isFinite(ref[v])) {
          assert.equal(l[v], ref[v], `${what}: token ${j} logit ${v}`);
          continue;
        }
        scale = Math.max(scale, Math.abs(ref[v]));
        err = Math.max(err, Math.abs(l[v] - ref[v]));
      }
      // Dense sums W_down column by column from HiRE's copy instead of row by row: rounding only.
      assert.ok(err <= 1e-5 * scale, `${what}: token ${j} logits differ by ${err} (scale ${scale})`);
    });
  });
});

// Int8 and int4 weights (--weights int8|int4) own their memory: a given-back copy is quantized again
// from the file's matrix on its next use, which gives the same bits.
const QUANTIZED = [
  { weights: "int8", dtype: "Q8" },
  { weights: "int4", dtype: "Q4" },
] as const;

for (const { weights, dtype } of QUANTIZED)
  for (const mmap of [true, false]) {
    test(`an ${weights} weight given back is made again from the ${mmap ? "mapped" : "read-in"} file on its next use, bit for bit`, (t) => {
      const model = loadModel(dir, { weights, mmap });
      t.after(() => model.close());
      const b = createBackend("cpu", 2);
      const gate = firstFfn(model.weights.layers[0]).gate!.w;
      assert.equal(gate.dtype, dtype);
      const before = product(b, gate);
      const released0 = model.store.releasedBytes();
      const rss0 = rssBytes();
      const bytes = b.releaseWeight!(gate);
      assert.ok(bytes >= gate.byteLength, `gave back ${bytes} of an ${weights} weight of ${gate.byteLength} bytes`);
      assert.equal(model.store.releasedBytes() - released0, bytes, "the file's store counts it as given back");
      const drop = rss0 - rssBytes();
      assert.ok(drop > bytes / 2, `RSS fell by ${drop} bytes after giving back ${bytes}`);
      assert.equal(b.releaseWeight!(gate), 0, "giving it back again gives nothing more");
      assert.deepEqual(product(b, gate), before, "the product after it was made again equals the one before");
      assert.equal(model.store.releasedBytes(), released0, "made again, it is no longer counted");
      assert.equal(b.releaseWeight!(gate), bytes, "and it can be given back again");
    });
  }

test("a given-back int8 weight whose model was closed is an error, not zeros", () => {
  const model = loadModel(dir, { weights: "int8" });
  const b = createBackend("cpu", 1);
  const up = firstFfn(model.weights.layers[1]).up.w;
  assert.ok(b.releaseWeight!(up) > 0);
  model.close();
  assert.throws(
    () => product(b, up),
    (e: Error) => /given back and its file has been unmapped/.test(e.message),
  );
});

for (const { weights } of QUANTIZED)
  test(`an ${weights} session giving back W_gate and W_up decodes what one keeping them decodes, bit for bit`, (t) => {
    // DIP's column copies are made from W_gate and W_up: given back, they are quantized again first.
    const phases = PHASES;
    const { a, b, freed } = keptAndFreed(t, { weights });
    // The copies of every layer's W_gate and W_up (W_down stays: its transposed copy is bf16).
    const gateUp = freed.weights.layers.reduce(
      (s, l) => s + firstFfn(l).gate!.w.byteLength + firstFfn(l).up.w.byteLength,
      0,
    );
    const down = freed.weights.layers.reduce((s, l) => s + firstFfn(l).down.w.byteLength, 0);
    for (const r of b.released)
      assert.ok(
        r >= gateUp && r < gateUp + down / 2,
        `gave back ${r} bytes; ${weights} W_gate and W_up: ${gateUp}, W_down: ${down}`,
      );
    phases.forEach((p, i) => {
      const what = `phase ${i} (${p.ffn?.method})`;
      assert.deepEqual(b.phases[i].ids, a.phases[i].ids, `${what}: greedy ids`);
      assert.deepEqual(b.phases[i].recall, a.phases[i].recall, `${what}: audited recall`);
      // The interleaved rows are the same rows, and dense keeps the quantized W_down: the same bits.
      b.phases[i].logits.forEach((l, j) => assert.deepEqual(l, a.phases[i].logits[j], `${what}: token ${j} logits`));
    });
  });

test("a given-back int8 weight whose file changed since loading is an error naming the file, not other bits", (t) => {
  // A whole-second modification time, so that setting it back restores it exactly (a Date holds ms).
  const file = join(dir, "model.safetensors");
  const st = statSync(file);
  st.mtime.setMilliseconds(0);
  utimesSync(file, st.atime, st.mtime);
  const model = loadModel(dir, { weights: "int8" }); // mapped: its pages would fault in the new bytes
  t.after(() => model.close());
  const b = createBackend("cpu", 1);
  const gate = firstFfn(model.weights.layers[1]).gate!.w;
  const before = product(b, gate);
  assert.ok(b.releaseWeight!(gate) > 0);
  utimesSync(file, st.atime, new Date(st.mtime.getTime() + 5000));
  try {
    assert.throws(
      () => product(b, gate),
      (e: Error) => e.message.includes(file) && /changed since the model was loaded/.test(e.message),
    );
  } finally {
    utimesSync(file, st.atime, st.mtime);
  }
  assert.deepEqual(product(b, gate), before, "with the file as loaded again, it is made again");
});
