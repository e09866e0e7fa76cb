// Sparse inference end to end on real (tiny, random) models: every method at 100 % equals dense,
// telemetry is consistent (counts, ordering, bytes), audits measure what they claim, and settings
// changed mid-generation apply from the next token.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { createHash } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ARCHS, makeModel, type Arch } from "../core/modelgen/make-model.js";
import { loadModel, type LoadedModel } from "../core/loader/model-folder.js";
import { Session, type GenerateOptions } from "../core/engine/session.js";
import type { ForwardReport } from "../core/engine/transformer.js";
import { bytesRead, recall, relativeError } from "../core/sparse/telemetry.js";
import type { PrepareProgress } from "../core/sparse/sparsifier.js";
import type { TensorInfo } from "../core/loader/safetensors.js";
import { bf16ToF32 } from "../core/modelgen/safetensors-writer.js";
import {
  DEFAULT_LOWRANK_RANK,
  DEFAULT_QUANT_GROUP,
  parsePredictor,
  predictorName,
  resolveCount,
  type DeepPartial,
  type FfnMethod,
  type SparsitySettings,
} from "../core/sparse/settings.js";
import { UsageError } from "../core/loader/errors.js";
import { tensorHash } from "../core/sparse/cache.js";
import { setF32 } from "./helpers.js";
import { firstFfn } from "../core/arch/config.js";

let root: string;
const models: Partial<Record<Arch, LoadedModel>> = {};
// Every architecture but Qwen2 and SmolLM3, whose FFNs and heads are Llama's.
const SPARSE_ARCHS = (Object.keys(ARCHS) as Arch[]).filter((a) => a !== "qwen2" && a !== "smollm3");

before(async () => {
  root = mkdtempSync(join(tmpdir(), "hire-sparse-"));
  process.env.HIRE_CACHE_DIR = join(root, "cache");
  for (const arch of SPARSE_ARCHS) {
    const dtype = arch === "gpt2" || arch === "opt" ? "f32" : "bf16";
    await makeModel({ arch, dtype, seed: 31, out: join(root, arch) });
    models[arch] = loadModel(join(root, arch));
  }
});
after(() => {
  for (const m of Object.values(models)) m?.close();
  rmSync(root, { recursive: true, force: true });
});

interface Run {
  ids: number[];
  logprobs: [number, number][][];
  reports: ForwardReport[];
}

async function run(
  model: LoadedModel,
  settings: DeepPartial<SparsitySettings>,
  o: GenerateOptions = {},
  onToken?: (s: Session, i: number) => void,
): Promise<Run> {
  const session = new Session(model);
  session.sparsity.update(settings);
  const r: Run = { ids: [], logprobs: [], reports: [] };
  for await (const ev of session.generate("Sparse inference reads less", {
    maxTokens: 8,
    temperature: 0,
    logprobs: 4,
    ignoreEos: true,
    ...o,
  })) {
    if (ev.type === "token") {
      r.ids.push(ev.id);
      r.logprobs.push(ev.topLogprobs!);
      r.reports.push(ev.report);
      onToken?.(session, r.ids.length);
    }
  }
  return r;
}

function assertSameOutput(a: Run, b: Run, what: string): void {
  assert.deepEqual(a.ids, b.ids, `${what}: greedy ids`);
  a.logprobs.forEach((step, i) =>
    step.forEach(([id, lp], j) => {
      assert.equal(id, b.logprobs[i][j][0], `${what}: step ${i} rank ${j}`);
      assert.ok(
        Math.abs(lp - b.logprobs[i][j][1]) < 1e-3,
        `${what}: step ${i} logprob ${lp} vs ${b.logprobs[i][j][1]}`,
      );
    }),
  );
}

const FULL = { k: 1, oversample: 1 };

for (const arch of SPARSE_ARCHS) {
  const gated = !["gpt2", "gptj", "gptneox", "opt", "phi", "starcoder2"].includes(arch); // gated FFN (SwiGLU, Gemma's GeGLU): DIP applies
  test(`${arch}: hire, topk-exact${gated ? ", dip" : ""} and the HiRE head at 100 % equal dense`, async () => {
    const model = models[arch]!;
    const dense = await run(model, {});
    const methods: FfnMethod[] = ["hire", "topk-exact", ...(gated ? (["dip", "dip-ca"] as const) : [])];
    for (const method of methods) {
      for (const predictor of method === "hire"
        ? [{ kind: "int4", groupSize: 32 } as const, { kind: "lowrank", rank: 8 } as const]
        : [undefined]) {
        const sparse = await run(model, { ffn: { method, ...FULL, predictor, cacheFraction: 1 }, shards: 2 });
        assert.equal(sparse.reports[1].layers[0].ffn?.method, method, "the sparse path ran");
        assertSameOutput(sparse, dense, `${arch} ${method} ${predictor?.kind ?? ""}`);
      }
    }
    const head = await run(model, { head: { method: "hire", k: 1, oversample: 1 } });
    assert.equal(head.reports[1].head?.method, "hire", "the sparse head ran");
    assertSameOutput(head, dense, `${arch} hire head`);
  });
}

test("the HiRE head adds a biased head's bias (Phi) to the predicted logits as well as the exact ones", async () => {
  const dir = join(root, "phi-bias");
  await makeModel({ arch: "phi", dtype: "f32", seed: 5, out: dir });
  // A bias that makes token 77 every step's argmax: a predictor without it would keep 77 among its
  // 4 candidates about 4 times in 512.
  setF32(join(dir, "model.safetensors"), "lm_head.bias", 77, 50);
  const model = loadModel(dir);
  try {
    assert.deepEqual((await run(model, {})).ids, Array(8).fill(77), "dense");
    for (const predictor of [{ kind: "int4", groupSize: 32 } as const, { kind: "lowrank", rank: 8 } as const]) {
      const r = await run(model, { head: { method: "hire", k: 4, oversample: 1, predictor }, auditEvery: 1 });
      assert.deepEqual(r.ids, Array(8).fill(77), predictor.kind);
      assert.equal(r.reports[1].head?.candidates, 4);
      assert.equal(r.reports[2].head?.argmaxInCandidates, true, "audited against the biased dense logits");
    }
  } finally {
    model.close();
  }
});

test("hire whose candidates cover every neuron equals topk-exact at the same k", async () => {
  const model = models.llama!;
  const F = model.config.intermediate;
  const exact = await run(model, { ffn: { method: "topk-exact", k: 0.25 } });
  // k' = 4k = F: the predictor's guess no longer matters, only the exact top-k among all rows.
  const hire = await run(model, {
    ffn: { method: "hire", k: 0.25, oversample: 4, predictor: { kind: "lowrank", rank: 1 } },
  });
  assert.equal(hire.reports[1].layers[0].ffn!.candidates, F);
  hire.reports
    .slice(1)
    .forEach((rep, t) =>
      rep.layers.forEach((l, i) =>
        assert.deepEqual(l.ffn!.selected, exact.reports[t + 1].layers[i].ffn!.selected, `token ${t + 1} layer ${i}`),
      ),
    );
  assertSameOutput(hire, exact, "hire with k' = F vs topk-exact");
});

test("predictor specs: parsed with their defaults, named back, bad ones rejected", () => {
  assert.deepEqual(parsePredictor("int4"), { kind: "int4", groupSize: DEFAULT_QUANT_GROUP });
  assert.deepEqual(parsePredictor("int8:64"), { kind: "int8", groupSize: 64 });
  assert.deepEqual(parsePredictor("lowrank"), { kind: "lowrank", rank: DEFAULT_LOWRANK_RANK });
  assert.equal(predictorName(parsePredictor("lowrank:64")), "lowrank:64");
  for (const bad of ["int3", "int4:0", "int4:x", "lowrank:-2"])
    assert.throws(() => parsePredictor(bad), UsageError, bad);
});

test("telemetry: k selected per layer, ascending unique indices, candidates = k', bytes add up", async () => {
  const model = models.llama!;
  const c = model.config;
  const F = c.intermediate;
  const r = await run(model, {
    ffn: { method: "hire", k: 0.25, oversample: 2, predictor: { kind: "int8", groupSize: 32 } },
    head: { method: "hire", k: 16, oversample: 4 },
  });
  const k = resolveCount(0.25, F);
  const kp = 2 * k;
  const w = model.weights;
  for (const report of r.reports.slice(1)) {
    assert.equal(report.layers.length, c.layers);
    report.layers.forEach((l, i) => {
      const f = l.ffn!;
      assert.equal(f.method, "hire");
      assert.equal(f.k, k);
      assert.equal(f.selected.length, k);
      assert.equal(f.candidates, kp);
      for (let j = 1; j < k; j++) assert.ok(f.selected[j] > f.selected[j - 1], "ascending and unique");
      assert.ok(f.selected[k - 1] < F);
      const lw = firstFfn(w.layers[i]);
      const rowBytes = (lw.gate!.w.byteLength + lw.up.w.byteLength) / F;
      const predictorBytes = f.bytes - kp * rowBytes - k * (lw.down.w.byteLength / F);
      // int8 with one f16/f32 scale per 32: between 1 and 1.2 bytes per weight.
      assert.ok(
        predictorBytes >= F * c.hidden && predictorBytes <= 1.2 * F * c.hidden,
        `predictor bytes ${predictorBytes}`,
      );
      assert.equal(f.denseBytes, lw.gate!.w.byteLength + lw.up.w.byteLength + lw.down.w.byteLength);
      assert.ok(f.bytes < f.denseBytes);
      assert.ok(f.predictorMs >= 0 && f.exactMs >= 0 && f.downMs >= 0);
      assert.equal(f.recall, undefined, "no audit unless asked");
    });
    assert.equal(report.head!.k, 16);
    assert.equal(report.head!.candidates, 64);
  }
});

test("audit: topk-exact has recall 1; k = 100 % has zero output error; hire reports recall in [0, 1]", async () => {
  const model = models.llama!;
  const exact = await run(model, { ffn: { method: "topk-exact", k: 0.1 }, auditEvery: 1 });
  for (const rep of exact.reports.slice(1)) for (const l of rep.layers) assert.equal(l.ffn!.recall, 1);
  const full = await run(model, {
    ffn: { method: "hire", ...FULL },
    head: { method: "hire", k: 1, oversample: 1 },
    auditEvery: 1,
  });
  for (const rep of full.reports.slice(1)) {
    for (const l of rep.layers) {
      assert.equal(l.ffn!.recall, 1);
      assert.ok(l.ffn!.relError! < 1e-5, `rel error ${l.ffn!.relError}`);
    }
    assert.equal(rep.head!.argmaxInCandidates, true);
    assert.ok(Math.abs(rep.head!.massCovered! - 1) < 1e-6);
  }
  const hire = await run(model, {
    ffn: { method: "hire", k: 0.1, oversample: 2, predictor: { kind: "int8", groupSize: 32 } },
    auditEvery: 2,
  });
  const audited = hire.reports.slice(1).filter((rep) => rep.layers[0].ffn!.recall !== undefined);
  assert.equal(audited.length, Math.ceil((hire.reports.length - 1) / 2), "every 2nd token is audited");
  for (const rep of audited)
    for (const l of rep.layers) assert.ok(l.ffn!.recall! >= 0 && l.ffn!.recall! <= 1 && l.ffn!.relError! >= 0);
});

test("settings changed mid-generation apply from the next token", async () => {
  const model = models.llama!;
  const F = model.config.intermediate;
  const r = await run(model, { ffn: { method: "hire", k: 0.1 } }, { maxTokens: 6 }, (s, i) => {
    if (i === 3) s.sparsity.update({ ffn: { k: 0.3 }, shards: 2 });
  });
  // Token i's report is the forward that produced it; token 0 comes from prefill.
  assert.equal(r.reports[2].layers[0].ffn!.k, resolveCount(0.1, F));
  assert.equal(r.reports[3].layers[0].ffn!.k, resolveCount(0.3, F));
  assert.equal(r.reports[5].layers[0].ffn!.k, resolveCount(0.3, F));
});

test("per-layer k overrides only that layer", async () => {
  const model = models.llama!;
  const F = model.config.intermediate;
  const r = await run(model, { ffn: { method: "topk-exact", k: 0.1, perLayerK: { 1: 0.5 } } }, { maxTokens: 2 });
  assert.equal(r.reports[1].layers[0].ffn!.k, resolveCount(0.1, F));
  assert.equal(r.reports[1].layers[1].ffn!.k, resolveCount(0.5, F));
});

test("per-layer oversample and predictor override only their layer", async () => {
  const model = models.llama!;
  const { intermediate: F, hidden: H } = model.config;
  const k = resolveCount(0.25, F);
  const r = await run(
    model,
    {
      ffn: {
        method: "hire",
        k: 0.25,
        oversample: 2,
        predictor: { kind: "int8", groupSize: 32 },
        perLayerOversample: { 1: 3 },
        perLayerPredictor: { 0: { kind: "int4", groupSize: 32 } },
      },
    },
    { maxTokens: 3 },
  );
  const lw = model.weights.layers;
  const predictorBytes = (l: number) => {
    const f = r.reports[2].layers[l].ffn!;
    return (
      f.bytes -
      f.candidates * ((firstFfn(lw[l]).gate!.w.byteLength + firstFfn(lw[l]).up.w.byteLength) / F) -
      k * (firstFfn(lw[l]).down.w.byteLength / F)
    );
  };
  assert.deepEqual(
    r.reports[2].layers.map((l) => l.ffn!.candidates),
    [2 * k, 3 * k],
  );
  // int4 (layer 0): half a byte per weight plus scales; int8 (layer 1): one byte plus scales.
  assert.ok(predictorBytes(0) >= (F * H) / 2 && predictorBytes(0) <= 0.7 * F * H, `layer 0: ${predictorBytes(0)}`);
  assert.ok(predictorBytes(1) >= F * H && predictorBytes(1) <= 1.2 * F * H, `layer 1: ${predictorBytes(1)}`);
  const s = new Session(model);
  for (const bad of [
    { ffn: { perLayerOversample: { 9: 2 } } },
    { ffn: { perLayerOversample: { 0: 0.5 } } },
    { ffn: { perLayerPredictor: { 0: { kind: "int3", groupSize: 32 } } } },
    { ffn: { perLayerPredictor: { 5: { kind: "int8", groupSize: 32 } } } },
  ])
    assert.throws(() => s.sparsity.update(bad as DeepPartial<SparsitySettings>), UsageError, JSON.stringify(bad));
});

test("DA-top-k: with P shards every shard contributes k/P neurons", async () => {
  const model = models.llama!;
  const F = model.config.intermediate;
  const P = 4;
  const r = await run(model, { ffn: { method: "topk-exact", k: 0.25 }, shards: P }, { maxTokens: 2 });
  const sel = r.reports[1].layers[0].ffn!.selected;
  const k = resolveCount(0.25, F);
  for (let s = 0; s < P; s++) {
    const lo = Math.floor((s * F) / P);
    const hi = Math.floor(((s + 1) * F) / P);
    const inShard = Array.from(sel).filter((i) => i >= lo && i < hi).length;
    assert.equal(inShard, Math.floor(k / P) + (s < k % P ? 1 : 0), `shard ${s}`);
  }
});

test("dip-ca reports a cache hit rate and the bytes streamed on misses", async () => {
  const model = models.llama!;
  const r = await run(
    model,
    { ffn: { method: "dip-ca", k: 0.2, cacheFraction: 0.5, cacheGamma: 0.5 } },
    { maxTokens: 6 },
  );
  const { hidden: H, intermediate: F } = model.config;
  const lw = firstFfn(model.weights.layers[0]);
  const downRow = lw.down.w.byteLength / F;
  const inCol = (lw.gate!.w.byteLength + lw.up.w.byteLength) / H;
  const kx = resolveCount(0.2, H);
  const first = r.reports[1].layers[0].ffn!;
  assert.equal(first.cacheHitRate, 0, "the caches start cold");
  assert.equal(first.storageBytes, first.bytes, "so every byte is streamed");
  for (const rep of r.reports.slice(2)) {
    const f = rep.layers[0].ffn!;
    assert.ok(f.cacheHitRate! > 0 && f.cacheHitRate! <= 1, `hit rate ${f.cacheHitRate}`);
    assert.ok(Math.abs(f.storageBytes! - (1 - f.cacheHitRate!) * f.bytes) < 1e-6 * f.bytes);
    // The misses are whole input columns (W_gate and W_up) and whole W_down columns.
    const ways: number[] = [];
    for (let a = 0; a <= kx; a++)
      for (let d = 0; d <= f.k; d++) if (a * inCol + d * downRow === f.storageBytes) ways.push(a);
    assert.ok(ways.length > 0, `${f.storageBytes} bytes are not whole columns`);
  }
});

test("low-rank predictors are cached on disk per tensor content and rank, and reused", async () => {
  const model = models.llama!;
  const settings = { ffn: { method: "hire", k: 0.2, oversample: 2, predictor: { kind: "lowrank", rank: 6 } } } as const;
  const first = await run(model, settings);
  const files = readdirSync(join(root, "cache", "predictors")).filter((f) => f.includes("lowrank6"));
  assert.equal(files.length, model.config.layers, "one factorisation per layer");
  const mtimes = files.map((f) => statSync(join(root, "cache", "predictors", f)).mtimeMs);
  const second = await run(model, settings);
  assert.deepEqual(second.ids, first.ids, "cached factors give the same output");
  assert.deepEqual(
    files.map((f) => statSync(join(root, "cache", "predictors", f)).mtimeMs),
    mtimes,
    "not rebuilt",
  );
  await run(model, { ffn: { ...settings.ffn, predictor: { kind: "lowrank", rank: 5 } } });
  assert.equal(
    readdirSync(join(root, "cache", "predictors")).filter((f) => f.includes("lowrank5")).length,
    model.config.layers,
    "a new rank builds new factors",
  );
});

test("int4/int8 predictors are cached on disk per tensor content and group size; a damaged file is rebuilt", async () => {
  const model = models.llama!;
  const cached = (tag: string) =>
    readdirSync(join(root, "cache", "predictors")).filter((f) => f.includes(tag) && f.endsWith(".q"));
  const settings = {
    ffn: { method: "hire", k: 0.2, oversample: 2, predictor: { kind: "int4", groupSize: 64 } },
  } as const;
  const first = await run(model, settings);
  const files = cached("int4g64");
  assert.equal(files.length, model.config.layers, "one quantized copy per layer");
  const mtimes = files.map((f) => statSync(join(root, "cache", "predictors", f)).mtimeMs);
  const second = await run(model, settings);
  assert.deepEqual(second.ids, first.ids, "the cached copy gives the same output");
  assert.deepEqual(
    files.map((f) => statSync(join(root, "cache", "predictors", f)).mtimeMs),
    mtimes,
    "not rebuilt",
  );
  // A truncated file (a crash mid-copy, a full disk) is detected by its size and rebuilt.
  const victim = join(root, "cache", "predictors", files[0]);
  const bytes = readFileSync(victim);
  writeFileSync(victim, bytes.subarray(0, bytes.length - 10));
  const third = await run(model, settings);
  assert.deepEqual(third.ids, first.ids);
  assert.equal(statSync(victim).size, bytes.length, "rebuilt in full");
  await run(model, { ffn: { ...settings.ffn, predictor: { kind: "int8", groupSize: 64 } } });
  assert.equal(cached("int8g64").length, model.config.layers, "another type builds new copies");
});

test("tensor hashes are remembered per file identity; a changed or freshly written file is hashed again", () => {
  const dir = mkdtempSync(join(root, "hashes-"));
  const file = join(dir, "w.bin");
  const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex").slice(0, 32);
  const hashes = () => (existsSync(join(root, "cache", "hashes")) ? readdirSync(join(root, "cache", "hashes")) : []);
  const a = Buffer.from(Array.from({ length: 4096 }, (_, i) => i % 251));
  writeFileSync(file, a);
  const before = hashes().length;
  // Written just now: hashed, not remembered (its mtime may not change on a quick rewrite).
  assert.equal(tensorHash(file, 16, 1000), sha(a.subarray(16, 1016)));
  assert.equal(hashes().length, before, "a racy file's hash is not stored");
  const hourAgo = new Date(Date.now() - 3600_000);
  utimesSync(file, hourAgo, hourAgo);
  assert.equal(tensorHash(file, 16, 1000), sha(a.subarray(16, 1016)));
  assert.equal(hashes().length, before + 1, "stored under the file's identity and range");
  // Reused, not recomputed: bytes changed behind an unchanged stat (same inode, size and mtime) still
  // give the remembered hash, as git's index trusts a file's stat.
  const c = Buffer.from(a);
  c[30] ^= 1;
  writeFileSync(file, c);
  utimesSync(file, hourAgo, hourAgo);
  assert.equal(tensorHash(file, 16, 1000), sha(a.subarray(16, 1016)), "the remembered hash");
  assert.equal(tensorHash(file, 0, 1000), sha(c.subarray(0, 1000)), "another range is its own entry");
  // Rewritten with the same size: the new mtime gives a new identity, so the new bytes are hashed.
  const b = Buffer.from(a);
  b[20] ^= 1;
  writeFileSync(file, b);
  const later = new Date(Date.now() - 1800_000);
  utimesSync(file, later, later);
  assert.equal(tensorHash(file, 16, 1000), sha(b.subarray(16, 1016)));
});

test("recall and relative error on constructed cases", () => {
  assert.equal(recall([1, 2, 3, 4], [1, 2, 3, 4]), 1);
  assert.equal(recall([4, 3, 9, 8], [1, 2, 3, 4]), 0.5);
  assert.equal(recall([], [1, 2]), 0);
  assert.equal(recall([5], []), 1);
  assert.equal(relativeError([1, 2], [1, 2], 2), 0);
  assert.ok(Math.abs(relativeError([0, 0], [3, 4], 2) - 1) < 1e-12);
  assert.ok(Math.abs(relativeError([3, 5], [3, 4], 2) - 0.2) < 1e-12);
});

test("invalid settings are rejected with a clear message", () => {
  const session = new Session(models.gpt2!);
  assert.throws(
    () => session.sparsity.update({ ffn: { method: "dip" } }),
    (e: unknown) => e instanceof UsageError && /SwiGLU/.test(e.message),
  );
  const s2 = new Session(models.llama!);
  for (const bad of [
    { ffn: { k: 0 } },
    { ffn: { k: 2.5 } },
    { ffn: { oversample: 0.5 } },
    { shards: 0 },
    { auditEvery: -1 },
    { ffn: { perLayerK: { 99: 0.1 } } },
    { ffn: { predictor: { kind: "int4", groupSize: 20 } } },
  ]) {
    assert.throws(() => s2.sparsity.update(bad as DeepPartial<SparsitySettings>), UsageError, JSON.stringify(bad));
  }
  assert.equal(s2.sparsity.settings.ffn.method, "dense", "a rejected update changes nothing");
});

// ---- checks against references computed here, independent of the sparse code paths ----------------

/** A bf16/f32 weight's values as the file holds them ([rows][cols] row-major). */
function weightValues(w: unknown): Float32Array {
  const t = w as TensorInfo;
  const fd = openSync(t.file, "r");
  const bytes = Buffer.alloc(t.byteLength);
  readSync(fd, bytes, 0, t.byteLength, t.offset);
  closeSync(fd);
  if (t.dtype === "F32") return new Float32Array(bytes.buffer, bytes.byteOffset, t.byteLength / 4).slice();
  assert.equal(t.dtype, "BF16");
  return Float32Array.from(new Uint16Array(bytes.buffer, bytes.byteOffset, t.byteLength / 2), bf16ToF32);
}

/** The k indices with the largest |v| (ties to the lower index). */
function topAbs(v: ArrayLike<number>, k: number): number[] {
  return Array.from(v, (x, i) => [Math.abs(x), i])
    .sort((a, b) => b[0] - a[0] || a[1] - b[1])
    .slice(0, k)
    .map(([, i]) => i);
}

test("preparing a method reports progress: every FFN layer in order, then the head", () => {
  const model = models.llama!;
  const L = model.config.layers;
  const session = new Session(model);
  const events: PrepareProgress[] = [];
  session.sparsity.update({ auditEvery: 1 }, (p) => events.push(p));
  assert.equal(events.length, 0, "nothing to build for dense");
  session.sparsity.update(
    { ffn: { method: "hire", predictor: { kind: "int8", groupSize: 32 } }, head: { method: "hire" } },
    (p) => events.push(p),
  );
  assert.deepEqual(events, [
    ...Array.from({ length: L }, (_, i) => ({ stage: "ffn", done: i + 1, total: L })),
    { stage: "head", done: 1, total: 1 },
  ]);
});

test("audit: recall and output error equal a reference from the exact activations and W_down", async () => {
  const model = models.llama!;
  const c = model.config;
  const k = resolveCount(0.1, c.intermediate);
  let imperfect = 0;
  for (const layer of [0, c.layers - 1]) {
    // A rank-1 predictor misses often, so recall and error are far from their trivial values.
    const r = await run(
      model,
      { ffn: { method: "hire", k: 0.1, oversample: 1, predictor: { kind: "lowrank", rank: 1 } }, auditEvery: 1 },
      { maxTokens: 6 },
      (s, i) => i === 1 && s.sparsity.inspect(layer),
    );
    const down = weightValues(firstFfn(model.weights.layers[layer]).down.w); // [hidden][intermediate]
    const H = c.hidden;
    const F = c.intermediate;
    for (const rep of r.reports.slice(1)) {
      const f = rep.layers[layer].ffn!;
      const act = f.scores!.exact!;
      const exactTop = topAbs(act, k);
      assert.deepEqual(
        Array.from(f.scores!.exactTopK!).sort((a, b) => a - b),
        exactTop.sort((a, b) => a - b),
      );
      assert.equal(f.recall, recall(f.selected, exactTop), "recall against the exact top-k");
      const kept = new Set(f.selected);
      let num = 0;
      let den = 0;
      for (let row = 0; row < H; row++) {
        let all = 0;
        let sel = 0;
        for (let i = 0; i < F; i++) {
          const p = down[row * F + i] * act[i];
          all += p;
          if (kept.has(i)) sel += p;
        }
        num += (sel - all) ** 2;
        den += all * all;
      }
      const want = Math.sqrt(num / den);
      assert.ok(Math.abs(f.relError! - want) <= 1e-4 + 1e-3 * want, `layer ${layer}: error ${f.relError} vs ${want}`);
      if (f.recall! < 1 && f.relError! > 0.01) imperfect++;
    }
  }
  assert.ok(imperfect > 0, "a rank-1 predictor should miss some of the exact top-k");
});

/** Token ids whose log-probability is finite: what the sampler can pick. */
const finiteIds = (top: [number, number][]) => top.filter(([, lp]) => lp > -Infinity).map(([id]) => id);

test("head audit: argmax-in-kept and mass covered equal a reference from the dense logits", async () => {
  const model = models.llama!;
  const V = model.config.vocab;
  let hits = 0;
  let misses = 0;
  for (const [k, predictor] of [
    [4, { kind: "lowrank", rank: 1 }], // a poor guess: the dense argmax is usually not kept
    [V / 2, { kind: "int4", groupSize: 32 }], // k' = V: every token is a candidate, half are kept
  ] as const) {
    for (let seed = 0; seed < 4; seed++) {
      const prompt = Array.from({ length: 3 + seed }, (_, i) => (seed * 97 + i * 31) % (V - 8));
      const session = new Session(model);
      session.sparsity.update({ head: { method: "hire", k, oversample: 2, predictor }, auditEvery: 1 });
      const sparse: { id: number; top: [number, number][]; report: ForwardReport }[] = [];
      for await (const ev of session.generate(prompt, { maxTokens: 2, temperature: 0, logprobs: V, ignoreEos: true }))
        if (ev.type === "token") sparse.push({ id: ev.id, top: ev.topLogprobs!, report: ev.report });
      // The audited step ran the head on the hidden state after prompt + first token: the dense
      // model's distribution there is the last prefill position of prompt + that token.
      const dense = new Session(model);
      let denseTop: [number, number][] = [];
      for await (const ev of dense.generate([...prompt, sparse[0].id], { maxTokens: 1, temperature: 0, logprobs: V }))
        if (ev.type === "token") denseTop = ev.topLogprobs!;
      const kept = new Set(finiteIds(sparse[1].top));
      assert.equal(kept.size, k, "exactly k tokens can be sampled");
      const lp = new Map(denseTop);
      const mass = [...kept].reduce((m, id) => m + Math.exp(lp.get(id)!), 0);
      const head = sparse[1].report.head!;
      assert.equal(head.argmaxInCandidates, kept.has(denseTop[0][0]), `k ${k} seed ${seed}: argmax kept`);
      assert.ok(Math.abs(head.massCovered! - mass) < 1e-4, `k ${k} seed ${seed}: mass ${head.massCovered} vs ${mass}`);
      if (head.argmaxInCandidates) hits++;
      else misses++;
    }
  }
  assert.ok(hits > 0 && misses > 0, `both outcomes seen (${hits} kept, ${misses} missed)`);
});

test("the HiRE head restricts sampling to its k tokens, under temperature and top-p", async () => {
  const model = models.llama!;
  const V = model.config.vocab;
  const k = 6;
  const seen = new Set<number>();
  for (let seed = 1; seed <= 6; seed++) {
    const session = new Session(model);
    session.sparsity.update({ head: { method: "hire", k, oversample: 2 } });
    for await (const ev of session.generate("Sparse inference reads less", {
      maxTokens: 6,
      temperature: 1.5,
      topP: 0.95,
      seed,
      logprobs: V,
      ignoreEos: true,
    })) {
      if (ev.type !== "token") continue;
      const kept = finiteIds(ev.topLogprobs!);
      assert.equal(kept.length, k, "only the kept tokens have a probability");
      assert.ok(kept.includes(ev.id), `sampled ${ev.id} is one of the kept ${kept}`);
      seen.add(ev.id);
    }
  }
  assert.ok(seen.size > 6, "temperature 1.5 samples more than the argmax");
});

test("DA-top-k is wired through hire and the head: each shard keeps k/P of its own rows", async () => {
  const model = models.llama!;
  const { intermediate: F, vocab: V } = model.config;
  const P = 2;
  const k = resolveCount(0.25, F);
  const headK = 16;
  const perShard = (ids: ArrayLike<number>, n: number) =>
    Array.from(
      { length: P },
      (_, s) => Array.from(ids).filter((i) => i >= (s * n) / P && i < ((s + 1) * n) / P).length,
    );
  for (const predictor of [{ kind: "int8", groupSize: 32 } as const, { kind: "lowrank", rank: 4 } as const]) {
    const r = await run(
      model,
      {
        ffn: { method: "hire", k: 0.25, oversample: 2, predictor },
        head: { method: "hire", k: headK, oversample: 2 },
        shards: P,
      },
      { logprobs: V, maxTokens: 5 },
    );
    for (const [t, rep] of r.reports.entries()) {
      if (t > 0)
        for (const l of rep.layers) assert.deepEqual(perShard(l.ffn!.selected, F), [k / P, k / P], predictor.kind);
      assert.deepEqual(perShard(finiteIds(r.logprobs[t]), V), [headK / P, headK / P], `head, token ${t}`);
    }
  }
});

test("dip keeps the top |x| inputs and top |GLU| neurons: bytes follow both counts; the output moves", async () => {
  const model = models.llama!;
  const { hidden: H, intermediate: F } = model.config;
  const lw = firstFfn(model.weights.layers[0]);
  const r = await run(model, { ffn: { method: "dip", k: 0.5 }, auditEvery: 1 }, { maxTokens: 4 });
  const kx = resolveCount(0.5, H);
  const k = resolveCount(0.5, F);
  for (const rep of r.reports.slice(1)) {
    const f = rep.layers[0].ffn!;
    assert.equal(f.k, k);
    // Column-sparse gate/up over kx inputs (a column of each holds F values), then k columns of W_down.
    assert.equal(f.bytes, kx * ((lw.gate!.w.byteLength + lw.up.w.byteLength) / H) + k * (lw.down.w.byteLength / F));
    assert.ok(f.relError! > 1e-3, `pruning half the inputs changes the output (error ${f.relError})`);
  }
});

test("dip-ca favours cached neurons: with no score for uncached ones, a warm cache serves every pick", async () => {
  const model = models.llama!;
  const hitRates = async (gamma: number) => {
    const r = await run(
      model,
      { ffn: { method: "dip-ca", k: 0.25, cacheFraction: 0.25, cacheGamma: gamma } },
      { maxTokens: 6 },
    );
    return r.reports.slice(2).map((rep) => rep.layers[0].ffn!.cacheHitRate!);
  };
  // Capacity = k: after the first token the cache holds exactly the last pick, and γ = 0 keeps it.
  assert.deepEqual(await hitRates(0), [1, 1, 1, 1]);
  const plain = await hitRates(1);
  assert.ok(
    plain.some((h) => h < 1),
    `without the bonus the picks move (${plain})`,
  );
});

test("method, head and predictor switched mid-generation apply from the next token", async () => {
  const model = models.llama!;
  const plan: Record<number, DeepPartial<SparsitySettings>> = {
    2: { ffn: { method: "hire", predictor: { kind: "int8", groupSize: 32 } } },
    3: { head: { method: "hire", k: 8 } },
    4: { ffn: { predictor: { kind: "int4", groupSize: 32 } } },
    5: { ffn: { method: "dip" }, head: { method: "dense" } },
    6: { ffn: { method: "dense" } },
  };
  const r = await run(model, {}, { maxTokens: 8 }, (s, i) => plan[i] && s.sparsity.update(plan[i]));
  // reports[i] is the forward that produced token i, after the callback for token i's predecessor.
  const method = (i: number) => r.reports[i].layers[0].ffn?.method ?? "dense";
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7].map(method), ["dense", "hire", "hire", "hire", "dip", "dense", "dense"]);
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6, 7].map((i) => r.reports[i].head?.k ?? 0),
    [0, 0, 8, 8, 0, 0, 0],
  );
  const b2 = r.reports[2].layers[0].ffn!.bytes;
  const b4 = r.reports[4].layers[0].ffn!.bytes;
  const F = model.config.intermediate;
  const H = model.config.hidden;
  // int8 → int4: the predictor (F × H codes) halves; the exact rows and columns are unchanged.
  assert.ok(Math.abs(b2 - b4 - (F * H) / 2) < 0.05 * F * H, `bytes ${b2} → ${b4}`);
});

test("head telemetry counts its predictor and candidate rows; a token's bytes add up", async () => {
  const model = models.llama!;
  const { vocab: V, hidden: H } = model.config;
  const r = await run(model, {
    ffn: { method: "hire", k: 0.25, predictor: { kind: "int8", groupSize: 32 } },
    head: { method: "hire", k: 16, oversample: 4, predictor: { kind: "int8", groupSize: 32 } },
  });
  const headW = model.weights.head.w;
  const dense = 1e9;
  for (const rep of r.reports.slice(1)) {
    const h = rep.head!;
    assert.equal(h.denseBytes, headW.byteLength);
    const predictorBytes = h.bytes - h.candidates * (headW.byteLength / V);
    assert.ok(predictorBytes >= V * H && predictorBytes <= 1.2 * V * H, `head predictor bytes ${predictorBytes}`);
    let saved = h.denseBytes - h.bytes;
    for (const l of rep.layers) saved += l.ffn!.denseBytes - l.ffn!.bytes;
    assert.equal(bytesRead(rep, dense), dense - saved);
  }
});
