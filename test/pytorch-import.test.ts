// PyTorch checkpoints (pytorch_model.bin, single or sharded) are imported once as safetensors: the
// fixtures in test/pytorch were written by torch.save from the model make-model writes with seed 1
// (tools/pytorch/make-bin-fixtures.py), so the import must give that model's tensors byte for byte,
// and generation the same ids and log-probabilities. Pickles that do anything but build a state
// dict, strided views, float64 and broken files are typed errors naming the file; nothing runs.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  copyFileSync,
  cpSync,
  existsSync,
  readdirSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, hire, hostAsker, putInHubCache, tempDir } from "./helpers.js";
import { makeModel } from "../core/modelgen/make-model.js";
import { modelFolderFor } from "../core/loader/model-source.js";
import { loadModel } from "../core/loader/model-folder.js";
import { ModelError } from "../core/loader/errors.js";
import { importPytorch, PYTORCH_IMPORT_RECORD } from "../core/loader/pytorch-import.js";
import { listCachedModels } from "../core/loader/hf-cache.js";
import { EngineHost } from "../core/host/engine-host.js";
import type { ModelEstimate } from "../core/host/protocol.js";

const FIXTURES = join(REPO_ROOT, "test", "pytorch");

/** name → [dtype, shape, bytes] of a safetensors file. */
function tensorsOf(file: string): Map<string, [string, number[], Buffer]> {
  const buf = readFileSync(file);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const out = new Map<string, [string, number[], Buffer]>();
  for (const [name, e] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    out.set(name, [e.dtype, e.shape, buf.subarray(8 + n + e.data_offsets[0], 8 + n + e.data_offsets[1])]);
  }
  return out;
}

/** The seed-1 llama folder, and a copy whose weights are the fixture's PyTorch files instead. */
async function folders(t: { after: (fn: () => void) => void }, fixture: "single" | "sharded") {
  const root = tempDir(t);
  const reference = join(root, "reference");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 1, out: reference });
  const pickled = join(root, "pickled");
  cpSync(reference, pickled, { recursive: true });
  rmSync(join(pickled, "model.safetensors"));
  for (const f of readdirSync(join(FIXTURES, fixture))) copyFileSync(join(FIXTURES, fixture, f), join(pickled, f));
  return { root, reference, pickled };
}

for (const fixture of ["single", "sharded"] as const) {
  test(`pytorch_model.bin (${fixture}): imported once, the same tensors and replies as the safetensors model`, async (t) => {
    const { root, reference, pickled } = await folders(t, fixture);
    const out = join(root, "imported");
    const r = await importPytorch(pickled, out);
    const want = tensorsOf(join(reference, "model.safetensors"));
    const got = tensorsOf(join(out, "model.safetensors"));
    assert.equal(r.tensors, want.size);
    assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort(), "the int64 buffer is left out");
    for (const [name, [dtype, shape, bytes]] of want) {
      const [d, s, b] = got.get(name)!;
      assert.equal(d, dtype, name);
      assert.deepEqual(s, shape, name);
      assert.ok(b.equals(bytes), `${name}: the stored bytes`);
    }
    for (const f of ["config.json", "tokenizer.json", "tokenizer_config.json", PYTORCH_IMPORT_RECORD])
      assert.ok(existsSync(join(out, f)), f);
    assert.ok(!readdirSync(out).some((f) => f.endsWith(".bin")), "the pickles are not copied");
    loadModel(out).close();

    // Through the CLI, as --model: imported into the cache on the first run, read from there after.
    const env = { HIRE_CACHE_DIR: join(root, "cache") };
    const run = (model: string) => {
      const args = ["generate", "--model", model, "--prompt", "The quick brown", "--max-tokens", "6"];
      const g = hire([...args, "--temperature", "0", "--json", "--logprobs", "2"], undefined, env);
      assert.equal(g.status, 0, g.stderr);
      const j = JSON.parse(g.stdout) as { ids: number[]; steps: { top_logprobs: unknown }[] };
      return { ids: j.ids, logprobs: j.steps.map((s) => s.top_logprobs), stderr: g.stderr };
    };
    const first = run(pickled);
    assert.match(first.stderr, /importing pickled/);
    const { ids, logprobs } = run(reference);
    assert.deepEqual({ ids: first.ids, logprobs: first.logprobs }, { ids, logprobs });
    assert.doesNotMatch(run(pickled).stderr, /importing/, "the second run reads the import");
  });
}

test("pytorch_model.bin: the Hugging Face cache lists such a repo as loadable, and it loads by repo id", async (t) => {
  const { root, pickled } = await folders(t, "single");
  const hub = join(root, "hub");
  putInHubCache(hub, "org/pickled", pickled, "1".repeat(40));
  const [m] = await listCachedModels({ HF_HUB_CACHE: hub });
  assert.equal(m.problem, null);
  assert.equal(m.pytorch, true);
  assert.equal(m.weightBytes, readFileSync(join(pickled, "pytorch_model.bin")).length);
  const listed = hire(["models"], undefined, { HF_HUB_CACHE: hub });
  assert.match(
    listed.stdout,
    /org\/pickled\s+LlamaForCausalLM, [\d.]+ MB, PyTorch pickles \(imported on its first load\)/,
  );
  const prev = [process.env.HF_HUB_CACHE, process.env.HIRE_CACHE_DIR];
  process.env.HF_HUB_CACHE = hub;
  process.env.HIRE_CACHE_DIR = join(root, "cache");
  t.after(() => {
    for (const [k, v] of [
      ["HF_HUB_CACHE", prev[0]],
      ["HIRE_CACHE_DIR", prev[1]],
    ] as const)
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
  });
  loadModel(await modelFolderFor("org/pickled")).close();
});

async function assertRefused(
  t: { after: (fn: () => void) => void },
  make: (dir: string) => void,
  code: string,
  detail: RegExp,
) {
  const { root, pickled } = await folders(t, "single");
  make(pickled);
  const out = join(root, "imported");
  await assert.rejects(importPytorch(pickled, out), (e: unknown) => {
    assert.ok(e instanceof ModelError, String(e));
    assert.equal(e.code, code, e.message);
    assert.match(e.message, detail);
    return true;
  });
  assert.ok(!existsSync(out), "no import is left");
  assert.deepEqual(
    readdirSync(root).filter((f) => f.includes(".tmp")),
    [],
    "no temporary folder is left",
  );
}

const badFixture = (name: string) => (dir: string) =>
  copyFileSync(join(FIXTURES, "bad", name), join(dir, "pytorch_model.bin"));

test("bad input: a pickle that calls os.system is refused, not run", async (t) => {
  // The fixture's pickle calls os.system("echo pwned") when Python unpickles it.
  await assertRefused(
    t,
    badFixture("evil.bin"),
    "BAD_CHECKPOINT",
    /pytorch_model\.bin: its pickle calls (posix|os|nt)\.system, which a state dict never does/,
  );
});

test("bad input: a strided view, a float64 tensor, a cut or foreign file: typed errors naming the file", async (t) => {
  await assertRefused(
    t,
    badFixture("strided.bin"),
    "BAD_CHECKPOINT",
    /\[model\.embed_tokens\.weight\]: a tensor that is not contiguous/,
  );
  await assertRefused(
    t,
    badFixture("f64.bin"),
    "UNSUPPORTED_DTYPE",
    /stored as torch\.DoubleStorage; F32, F16 and BF16 load/,
  );
  await assertRefused(
    t,
    (dir) => truncateSync(join(dir, "pytorch_model.bin"), 100_000),
    "BAD_CHECKPOINT",
    /pytorch_model\.bin: not a PyTorch checkpoint \(zip: /,
  );
  await assertRefused(
    t,
    (dir) => writeFileSync(join(dir, "pytorch_model.bin"), Buffer.from([0x80, 0x02, 0x8a, 0x0a])),
    "BAD_CHECKPOINT",
    /saved in torch's legacy format \(before 1\.6, not a zip\)/,
  );
  await assertRefused(
    t,
    (dir) => writeFileSync(join(dir, "pytorch_model.bin"), "version https://git-lfs.github.com/spec/v1\n"),
    "BAD_CHECKPOINT",
    /not a PyTorch checkpoint/,
  );
});

test("pytorch_model.bin in the app: the estimate before loading matches the safetensors model's, and the load imports it", async (t) => {
  const { root, reference, pickled } = await folders(t, "sharded");
  const prev = process.env.HIRE_CACHE_DIR;
  process.env.HIRE_CACHE_DIR = join(root, "cache");
  const host = new EngineHost({ dataDir: join(root, "data"), contextLength: 64 });
  t.after(() => {
    host.close();
    if (prev === undefined) delete process.env.HIRE_CACHE_DIR;
    else process.env.HIRE_CACHE_DIR = prev;
  });
  const ask = hostAsker(host);
  const estimate = async (path: string) => {
    const r = await ask({ type: "model.inspect", path });
    assert.ok(r.type === "reply" && r.ok, JSON.stringify(r));
    return r.result as ModelEstimate;
  };
  const [a, b] = [await estimate(reference), await estimate(pickled)];
  assert.ok(a.weightBytes > 0 && a.parameters > 0);
  assert.deepEqual({ ...b, path: a.path }, a);
  const loaded = await ask({ type: "model.load", path: pickled });
  assert.ok(loaded.type === "reply" && loaded.ok, JSON.stringify(loaded));
  assert.equal((loaded.result as { name: string }).name, "pickled", "the checkpoint's name, not its import's");
});

test("bad input: a quantized checkpoint in PyTorch's pickles (old AutoGPTQ) says quantized ones load from safetensors", async (t) => {
  const { root, pickled } = await folders(t, "single");
  const file = join(pickled, "config.json");
  const config = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  writeFileSync(file, JSON.stringify({ ...config, quantization_config: { quant_method: "gptq", bits: 4 } }));
  const prev = process.env.HIRE_CACHE_DIR;
  process.env.HIRE_CACHE_DIR = join(root, "cache");
  t.after(() => (prev === undefined ? delete process.env.HIRE_CACHE_DIR : (process.env.HIRE_CACHE_DIR = prev)));
  await assert.rejects(
    modelFolderFor(pickled),
    (e: unknown) =>
      e instanceof ModelError &&
      e.code === "UNSUPPORTED_QUANTIZATION" &&
      /a gptq checkpoint in PyTorch's pickles \(pytorch_model\.bin\): quantized checkpoints load from safetensors only/.test(
        e.message,
      ),
  );
});

test("hire import --checkpoint writes a PyTorch checkpoint as a folder of safetensors; wrong uses are usage errors", async (t) => {
  const { root, reference, pickled } = await folders(t, "single");
  const out = join(root, "out");
  const r = hire(["import", "--checkpoint", pickled, "--out", out]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /^wrote .*out: PyTorch's pickles, \d+ tensors, in [\d.]+ s\n$/);
  assert.deepEqual(
    new Map([...tensorsOf(join(out, "model.safetensors"))].map(([k, [, , b]]) => [k, b.toString("hex")])),
    new Map([...tensorsOf(join(reference, "model.safetensors"))].map(([k, [, , b]]) => [k, b.toString("hex")])),
  );
  const plain = hire(["import", "--checkpoint", reference, "--out", join(root, "out2")]);
  assert.equal(plain.status, 2);
  assert.match(plain.stderr, /holds neither PyTorch pickles nor a quantized checkpoint; it loads as it is/);
  const both = hire(["import", "--gguf", "x.gguf", "--checkpoint", pickled, "--out", join(root, "out3")]);
  assert.equal(both.status, 2);
  assert.match(both.stderr, /one of --gguf FILE\.gguf or --checkpoint DIR is required/);
});
