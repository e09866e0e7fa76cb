// The ONNX export run by ONNX Runtime against our engine: the dense graph reproduces the golden
// references and our engine's logits on every architecture; the HiRE graph at k = 100 % equals the
// dense graph, and at k = 10 % keeps the same neurons and candidate tokens as our engine's HiRE on
// the trained built-in model; the peer and `hire bench --peers` report honest rows.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { goldenDir, hire, REPO_ROOT, setF32 } from "./helpers.js";
import { makeModel, type Arch, type DType } from "../core/modelgen/make-model.js";
import { loadModel, type LoadedModel } from "../core/loader/model-folder.js";
import { CpuBackend } from "../core/backend/cpu.js";
import { KVCache, Transformer, type ForwardReport } from "../core/engine/transformer.js";
import { Sparsifier } from "../core/sparse/sparsifier.js";
import { argmax, logSumExp } from "../core/engine/sampler.js";
import type { DeepPartial, SparsitySettings } from "../core/sparse/settings.js";
import { exportOnnx, type OnnxExportOptions } from "../core/onnx/export.js";
import { OrtRunner, lastRow } from "../core/onnx/ort-runner.js";
import { OrtError } from "../core/onnx/errors.js";
import { openOrtPeer } from "../core/peers/ort.js";
import { benchmarkWithPeers } from "../core/engine/bench.js";
import { UsageError } from "../core/loader/errors.js";

let root: string;
const tiny: Partial<Record<Arch, LoadedModel>> = {};
// One dtype each, so every weight conversion (f32, f16, bf16 → f32) is exercised.
const TINY: [Arch, DType][] = [
  ["llama", "bf16"],
  ["qwen2", "f16"],
  ["qwen3", "bf16"],
  ["smollm3", "f32"],
  ["granite", "bf16"],
  ["minicpm", "f16"],
  ["olmo", "bf16"],
  ["olmo2", "f16"],
  ["exaone4", "bf16"],
  ["internlm2", "f16"],
  ["stablelm", "bf16"],
  ["starcoder2", "bf16"],
  ["cohere", "f16"],
  ["cohere2", "bf16"],
  ["ernie", "bf16"],
  ["glm", "f32"],
  ["glm4", "bf16"],
  ["phi", "f32"],
  ["phi3", "f16"],
  ["gemma", "bf16"],
  ["gemma2", "f16"],
  ["gemma3", "bf16"],
  ["gpt2", "f32"],
  ["gptj", "f32"],
  ["gptneox", "f16"],
  ["opt", "bf16"],
];

before(async () => {
  root = mkdtempSync(join(tmpdir(), "hire-onnx-"));
  process.env.HIRE_CACHE_DIR = join(root, "cache");
  for (const [arch, dtype] of TINY) {
    await makeModel({ arch, dtype, seed: 17, out: join(root, arch) });
    tiny[arch] = loadModel(join(root, arch));
  }
});
after(() => {
  for (const m of Object.values(tiny)) m?.close();
  rmSync(root, { recursive: true, force: true });
});

let exports = 0;
function exportTo(model: LoadedModel, opts: OnnxExportOptions = {}): string {
  return exportOnnx(model, join(root, `export-${exports++}`, "model.onnx"), opts).file;
}

interface EngineRun {
  ids: number[];
  /** Last-position logits of the prompt's pass, then of each decode step (copies). */
  logits: Float32Array[];
  /** Per decode step, per layer: the neurons the sparse FFN kept. */
  selected: Int32Array[][];
}

/** Our engine: greedy nTokens after the prompt (the prompt in one pass), with optional sparsity. */
function engineGreedy(
  model: LoadedModel,
  prompt: number[],
  nTokens: number,
  sparsity?: DeepPartial<SparsitySettings>,
): EngineRun {
  const b = new CpuBackend();
  const t = new Transformer(b, model.config, model.weights);
  const sp = new Sparsifier(t);
  if (sparsity) sp.update(sparsity);
  const cache = new KVCache(b, model.config, prompt.length + nTokens + 1);
  sp.beginPrefill();
  const run: EngineRun = { ids: [], logits: [Float32Array.from(t.forward(prompt, 0, cache)!)], selected: [] };
  run.ids.push(argmax(run.logits[0]));
  while (run.ids.length < nTokens) {
    const report: ForwardReport = { tokens: 0, layers: [], outputMs: 0 };
    sp.beginToken();
    const logits = Float32Array.from(t.forward([run.ids.at(-1)!], prompt.length + run.ids.length - 1, cache, report)!);
    run.logits.push(logits);
    run.selected.push(report.layers.map((l) => l.ffn?.selected ?? new Int32Array(0)));
    run.ids.push(argmax(logits));
  }
  return run;
}

/** ONNX Runtime fed the same tokens (the prompt in one run, then `ids` one per run). */
async function ortForced(
  runner: OrtRunner,
  prompt: number[],
  ids: number[],
): Promise<{ logits: Float32Array[]; selected: number[][][] }> {
  runner.reset();
  const out = { logits: [] as Float32Array[], selected: [] as number[][][] };
  let f = await runner.forward(prompt);
  out.logits.push(Float32Array.from(lastRow(f, runner.vocab)));
  for (const id of ids.slice(0, -1)) {
    f = await runner.forward([id]);
    out.logits.push(Float32Array.from(lastRow(f, runner.vocab)));
    out.selected.push((f.selected ?? []).map((s) => Array.from(s, Number)));
  }
  return out;
}

/** Largest |a - b| over entries finite in both; asserts both have the same −∞ entries. */
function maxDiff(a: Float32Array, b: Float32Array, what: string): number {
  assert.equal(a.length, b.length, `${what}: lengths`);
  let d = 0;
  for (let i = 0; i < a.length; i++) {
    assert.equal(Number.isFinite(a[i]), Number.isFinite(b[i]), `${what}: entry ${i} is ${a[i]} vs ${b[i]}`);
    if (Number.isFinite(a[i])) d = Math.max(d, Math.abs(a[i] - b[i]));
  }
  return d;
}

const scale = (v: Float32Array) => Math.max(1, ...Array.from(v).filter(Number.isFinite).map(Math.abs));
const prompt = (model: LoadedModel, n = 12) => Array.from({ length: n }, (_, i) => (i * 97 + 5) % model.config.vocab);

// ---- dense graph ------------------------------------------------------------------------------

interface Expected {
  prompt_ids: number[];
  ids: number[];
  top_logprobs: [number, number][][];
}

const gRoot = goldenDir();
const golden = gRoot ? readdirSync(gRoot).filter((d) => !d.includes(".")) : [];
const ourGolden = join(REPO_ROOT, "test", "golden"); // architectures the shared set lacks (golden.test.ts)
const goldenDirs = [...golden.map((d) => join(gRoot!, d)), ...readdirSync(ourGolden).map((d) => join(ourGolden, d))];

test(
  "golden models: ONNX Runtime matches the reference and our engine",
  { skip: !gRoot && "no golden models" },
  async () => {
    assert.ok(golden.length >= 5, `golden folders: ${golden.join(", ")}`);
    for (const dir of goldenDirs) {
      const name = basename(dir);
      const exp = JSON.parse(readFileSync(join(dir, "expected.json"), "utf8")) as Expected;
      const model = loadModel(dir);
      if (model.config.moe) {
        model.close(); // the export has no mixtures of experts (moe.test.ts checks that it says so)
        continue;
      }
      try {
        const runner = await OrtRunner.open(exportTo(model), { threads: 2 });
        const steps: Float32Array[] = [];
        const r = await runner.greedy(exp.prompt_ids, exp.ids.length, (f) =>
          steps.push(Float32Array.from(lastRow(f, runner.vocab))),
        );
        assert.deepEqual(r.ids, exp.ids, `${name}: greedy ids`);
        exp.top_logprobs.forEach((want, i) => {
          const lse = logSumExp(steps[i]);
          for (const [id, lp] of want) {
            const got = steps[i][id] - lse;
            assert.ok(Math.abs(got - lp) < 1e-3, `${name} step ${i} token ${id}: ${got} vs ${lp}`);
          }
        });
        const ours = engineGreedy(model, exp.prompt_ids, exp.ids.length);
        assert.deepEqual(ours.ids, r.ids, `${name}: our engine's ids`);
        ours.logits.forEach((l, i) => {
          const d = maxDiff(l, steps[i], `${name} step ${i}`);
          assert.ok(d <= 1e-4 * scale(l), `${name} step ${i}: logits differ by ${d}`);
        });
        await runner.close();
      } finally {
        model.close();
      }
    }
  },
);

for (const [arch] of TINY) {
  test(`random ${arch}: ONNX Runtime and our engine agree over 16 greedy steps`, async () => {
    const model = tiny[arch]!;
    const p = prompt(model);
    const ours = engineGreedy(model, p, 16);
    const runner = await OrtRunner.open(exportTo(model), { threads: 2 });
    const forced = await ortForced(runner, p, ours.ids);
    ours.logits.forEach((l, i) => {
      const d = maxDiff(l, forced.logits[i], `${arch} step ${i}`);
      assert.ok(d <= 1e-4 * scale(l), `${arch} step ${i}: logits differ by ${d}`);
    });
    const greedy = await runner.greedy(p, 16);
    // Ids may only part where our two largest logits are within rounding of each other.
    const split = greedy.ids.findIndex((id, i) => id !== ours.ids[i]);
    if (split >= 0) {
      const sorted = Array.from(ours.logits[split]).sort((a, b) => b - a);
      assert.ok(sorted[0] - sorted[1] < 1e-5 * scale(ours.logits[split]), `${arch}: ids part at step ${split}`);
    }
    await runner.close();
  });
}

test("the prompt in one run, in two chunks, or token by token gives the same logits", async () => {
  const model = tiny.gpt2!;
  const runner = await OrtRunner.open(exportTo(model), { threads: 2 });
  const p = prompt(model, 9);
  const whole = await runner.forward(p); // all positions
  assert.equal(whole.rows, p.length);
  runner.reset();
  const first = await runner.forward(p.slice(0, 4));
  const second = await runner.forward(p.slice(4)); // several tokens after a non-empty cache
  assert.equal(runner.position, p.length);
  const chunked = new Float32Array([...first.logits, ...second.logits]);
  runner.reset();
  const single: number[] = [];
  for (const id of p) single.push(...(await runner.forward([id])).logits);
  const V = model.config.vocab;
  for (let i = 0; i < p.length; i++) {
    const row = whole.logits.subarray(i * V, (i + 1) * V);
    assert.ok(maxDiff(row, chunked.subarray(i * V, (i + 1) * V), `chunked ${i}`) < 1e-5 * scale(row));
    assert.ok(maxDiff(row, Float32Array.from(single.slice(i * V, (i + 1) * V)), `single ${i}`) < 1e-5 * scale(row));
  }
  await runner.close();
});

test("llama3 rope scaling and partial rotary dimensions export as the engine computes them", async () => {
  const dir = join(root, "llama3");
  await makeModel({
    arch: "llama",
    dtype: "f32",
    seed: 5,
    out: dir,
    shape: {
      ropeTheta: 500000,
      maxPositions: 256,
      ropeScaling: {
        rope_type: "llama3",
        factor: 8,
        low_freq_factor: 1,
        high_freq_factor: 4,
        original_max_position_embeddings: 32,
      },
    },
  });
  const configFile = join(dir, "config.json");
  const config = JSON.parse(readFileSync(configFile, "utf8")) as Record<string, unknown>;
  writeFileSync(configFile, JSON.stringify({ ...config, partial_rotary_factor: 0.5 }));
  const model = loadModel(dir);
  try {
    assert.equal(model.config.ropeInvFreq!.length * 4, model.config.headDim);
    // Positions far enough out that scaled and unscaled frequencies differ.
    const p = Array.from({ length: 60 }, (_, i) => (i * 31 + 7) % model.config.vocab);
    const ours = engineGreedy(model, p, 4);
    const runner = await OrtRunner.open(exportTo(model, { maxContext: 64 }), { threads: 2 });
    const forced = await ortForced(runner, p, ours.ids);
    ours.logits.forEach((l, i) => assert.ok(maxDiff(l, forced.logits[i], `step ${i}`) <= 1e-4 * scale(l)));
    await assert.rejects(runner.forward(prompt(model, 8)), OrtError); // past maxContext
    await runner.close();
  } finally {
    model.close();
  }
});

test("lastTokenLogits exports [1, 1, V]; settings the graph cannot express are usage errors", async () => {
  const model = tiny.llama!;
  const runner = await OrtRunner.open(exportTo(model, { lastTokenLogits: true }), { threads: 1 });
  const f = await runner.forward(prompt(model, 5));
  assert.equal(f.rows, 1);
  await runner.close();
  assert.throws(() => exportTo(model, { hire: { ffn: { method: "dip" } } }), UsageError);
  assert.throws(() => exportTo(model, { hire: { ffn: { method: "hire" }, shards: 2 } }), UsageError);
});

// ---- HiRE graph ------------------------------------------------------------------------------

const ALL: DeepPartial<SparsitySettings> = {
  ffn: { method: "hire", k: 1, oversample: 1 },
  head: { method: "hire", k: 1, oversample: 1 },
};

for (const arch of ["llama", "qwen3", "gemma2", "gemma3", "gpt2", "opt", "phi", "gptneox", "cohere"] as Arch[]) {
  test(`HiRE graph at k = 100 % equals the dense graph (${arch})`, async () => {
    const model = tiny[arch]!;
    const p = prompt(model);
    const dense = await OrtRunner.open(exportTo(model), { threads: 2 });
    const sparse = await OrtRunner.open(exportTo(model, { hire: ALL, selectionOutputs: true }), { threads: 2 });
    const d = await dense.greedy(p, 8);
    const a = await ortForced(dense, p, d.ids);
    const b = await ortForced(sparse, p, d.ids);
    a.logits.forEach((l, i) => {
      const diff = maxDiff(l, b.logits[i], `${arch} step ${i}`); // also: no −∞ at k = V
      assert.ok(diff <= 1e-4 * scale(l), `${arch} step ${i}: ${diff}`);
    });
    for (const step of b.selected) for (const sel of step) assert.equal(new Set(sel).size, model.config.intermediate);
    assert.deepEqual((await sparse.greedy(p, 8)).ids, d.ids);
    await dense.close();
    await sparse.close();
  });
}

test("HiRE graph: a biased head's bias (Phi) is added to the predicted logits as well as the exact ones", async () => {
  const dir = join(root, "phi-bias");
  await makeModel({ arch: "phi", dtype: "f32", seed: 5, out: dir });
  setF32(join(dir, "model.safetensors"), "lm_head.bias", 77, 50); // token 77: every step's argmax
  const model = loadModel(dir);
  try {
    const head = { method: "hire", k: 4, oversample: 1, predictor: { kind: "int4", groupSize: 32 } } as const;
    const ort = await OrtRunner.open(exportTo(model, { hire: { head } }), { threads: 2 });
    assert.deepEqual((await ort.greedy(prompt(model), 8)).ids, Array(8).fill(77));
    await ort.close();
  } finally {
    model.close();
  }
});

test("HiRE graph at k = 10 % keeps the neurons and tokens our engine's HiRE keeps (hire-brown-6m)", async () => {
  const model = loadModel(join(REPO_ROOT, "assets", "models", "hire-brown-6m"));
  try {
    const settings: DeepPartial<SparsitySettings> = {
      ffn: { method: "hire", k: 0.1, oversample: 2, predictor: { kind: "int4", groupSize: 32 } },
      head: { method: "hire", k: 64, oversample: 4, predictor: { kind: "int8", groupSize: 32 } },
    };
    const p = model.tokenizer.encode("The jury said it did find that the city");
    const ours = engineGreedy(model, p, 12, settings);
    const file = exportTo(model, { hire: settings, selectionOutputs: true });
    const runner = await OrtRunner.open(file, { threads: 2 });
    const forced = await ortForced(runner, p, ours.ids);
    const k = Math.round(0.1 * model.config.intermediate);
    let overlap = 0;
    let total = 0;
    ours.selected.forEach((layers, step) =>
      layers.forEach((sel, l) => {
        const got = forced.selected[step][l];
        assert.equal(got.length, k, `step ${step} layer ${l}: k`);
        const mine = new Set(sel);
        overlap += got.filter((i) => mine.has(i)).length;
        total += k;
      }),
    );
    // Same predictor values; only x's int8 rounding and float summation order may differ.
    assert.ok(overlap / total >= 0.98, `selected-neuron overlap ${overlap}/${total}`);
    let kept = 0;
    let same = 0;
    ours.logits.forEach((l, i) => {
      const mine = new Set(Array.from(l).flatMap((v, id) => (Number.isFinite(v) ? [id] : [])));
      const theirs = Array.from(forced.logits[i]).flatMap((v, id) => (Number.isFinite(v) ? [id] : []));
      assert.equal(theirs.length, 64, `step ${i}: candidate tokens kept`);
      kept += theirs.length;
      same += theirs.filter((id) => mine.has(id)).length;
      assert.equal(argmax(forced.logits[i]), ours.ids[i], `step ${i}: greedy token`);
    });
    assert.ok(same / kept >= 0.98, `kept-token overlap ${same}/${kept}`);
    await runner.close();
  } finally {
    model.close();
  }
});

// ---- peers and bench -------------------------------------------------------------------------

test("the ort peers decode what our engine decodes, and reuse their export", async () => {
  const model = tiny.qwen2!;
  const cacheDir = join(root, "peer-cache");
  const p = prompt(model);
  const ours = engineGreedy(model, p, 6);
  const opened = await openOrtPeer(model, { cacheDir, threads: 1 });
  assert.ok("peer" in opened, JSON.stringify(opened));
  assert.equal(opened.peer.name, "ort");
  const r = await opened.peer.decode(p, 6);
  assert.deepEqual(r.ids, ours.ids);
  assert.ok(r.tokensPerSecond > 0 && r.prefillTokensPerSecond! > 0);
  // Teacher-forced: fed its own greedy ids it picks them again; fed others from step 2 on, the picks
  // before them are unchanged and the later ones those of its own greedy run on that prefix.
  assert.deepEqual(await opened.peer.follow!(p, ours.ids), ours.ids);
  const other = ours.ids.map((id, k) => (k === 2 ? (id + 1) % model.config.vocab : id));
  const picks = await opened.peer.follow!(p, other);
  assert.deepEqual(picks.slice(0, 3), ours.ids.slice(0, 3));
  assert.equal(picks[3], (await opened.peer.decode([...p, ...other.slice(0, 3)], 1)).ids[0]);
  await opened.peer.close();
  const [dir] = readdirSync(cacheDir);
  const stamp = statSync(join(cacheDir, dir, "model.onnx.data")).mtimeMs;
  const again = await openOrtPeer(model, { cacheDir, threads: 1 });
  assert.ok("peer" in again);
  await again.peer.close();
  assert.equal(statSync(join(cacheDir, dir, "model.onnx.data")).mtimeMs, stamp, "the export was rewritten");

  const sparse = await openOrtPeer(model, { cacheDir, hire: { ffn: { method: "hire", k: 0.25 } } });
  assert.ok("peer" in sparse);
  assert.equal(sparse.peer.name, "ort-hire");
  await sparse.peer.close();
  const cuda = await openOrtPeer(model, { cacheDir, ep: "cuda" });
  if ("skipped" in cuda) assert.match(cuda.skipped, /cuda/);
  else await cuda.peer.close(); // a machine with the CUDA provider installed
});

test("an unavailable execution provider is a typed error", async () => {
  const file = exportTo(tiny.llama!);
  for (const ep of ["cuda", "webgpu"] as const) {
    try {
      const r = await OrtRunner.open(file, { ep });
      await r.close(); // this machine has it
    } catch (e) {
      assert.ok(e instanceof OrtError && e.code === "EP_UNAVAILABLE", String(e));
    }
  }
});

test("bench with peers: interleaved rows, ids checked, absent peers skipped", async () => {
  const model = tiny.llama!;
  const r = await benchmarkWithPeers(model, {
    peers: ["ort", "ort-hire", "no-such-peer"],
    methods: ["hire"],
    promptTokens: 8,
    decodeTokens: 4,
    repeats: 1,
    probeBytes: 1 << 20,
    threads: 1,
    cacheDir: join(root, "bench-cache"),
  });
  assert.deepEqual(
    r.peers!.map((p) => p.method),
    ["ort", "ort-hire", "no-such-peer"],
  );
  const [ort, ortHire, none] = r.peers!;
  assert.equal(ort.skipped, undefined, ort.skipped);
  assert.equal(ort.vs_row, "dense");
  assert.equal(ort.ids_agree, 5);
  assert.equal(ort.ids_compared, 5);
  assert.ok(ort.decode_tokens_per_s! > 0);
  assert.ok(Math.abs(ort.speedup! - ort.decode_tokens_per_s! / r.decode_tokens_per_s) < 1e-9);
  assert.ok(Math.abs(ort.vs_ours! - r.decode_tokens_per_s / ort.decode_tokens_per_s!) < 1e-9);
  assert.equal(ortHire.vs_row, "hire");
  assert.equal(ortHire.ids_compared, 5);
  assert.match(none.skipped!, /unknown peer/);
  assert.equal(none.decode_tokens_per_s, null);
});

test("hire bench --peers prints peer rows and skipped rows", () => {
  const dir = join(root, "llama");
  const out = hire([
    "bench",
    "--model",
    dir,
    "--peers",
    "ort,bogus",
    "--prompt-tokens",
    "8",
    "--decode-tokens",
    "4",
    "--repeats",
    "1",
    "--threads",
    "1",
  ]);
  assert.equal(out.status, 0, out.stderr);
  assert.match(out.stdout, /^ort\s+[\d.]+\s+[\d.]+x\s+[\d.]+x \(dense\)\s+5\/5\s+5\/5 {2}onnxruntime cpu/m);
  assert.match(out.stdout, /^bogus\s+skipped: unknown peer "bogus"/m);
  assert.ok(existsSync(join(process.env.HIRE_CACHE_DIR!, "onnx")), "the CLI's export went to $HIRE_CACHE_DIR/onnx");
});
