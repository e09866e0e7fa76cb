// Corrupt model files against the loaders: every file a user may bring broken (a GGUF file, a
// safetensors file, config.json, tokenizer.json, tokenizer.model, vocab.json or merges.txt, a GPTQ or FP8 checkpoint) is mutated at random and loaded, and each load must
// either work (then a two-token reply must too, or say why it cannot) or fail with a typed
// ModelError naming the file: never another exception, a crash or a hang. `npm run build:ts && node tools/fuzz/loaders.mjs
// [CASES] [SEED] [KIND]`; it prints each case's seed before running it, so a crash names the case to rerun.
import { Buffer } from "node:buffer";
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { importGguf } from "../../dist/core/gguf/import.js";
import { loadModel } from "../../dist/core/loader/model-folder.js";
import { makeModel } from "../../dist/core/modelgen/make-model.js";
import { Session } from "../../dist/core/engine/session.js";
import { Rng } from "../../dist/core/engine/sampler.js";
import { ContextOverflowError, ModelError, UsageError } from "../../dist/core/loader/errors.js";
import { importQuantized } from "../../dist/core/loader/quantized-import.js";
import { ModelTokenizer } from "../../dist/core/loader/tokenizer.js";
import { importPytorch } from "../../dist/core/loader/pytorch-import.js";
import { writeQuantizedCheckpoint } from "../../dist/test/quantized-checkpoints.js";
import { mutateBytes, mutateJson } from "./mutate.mjs";

const cases = Number(process.argv[2] ?? 200);
const seed0 = Number(process.argv[3] ?? 1);
const only = process.argv[4]; // one kind of file (a key of `kinds`), or all in turn
const root = mkdtempSync(join(tmpdir(), "hire-fuzz-"));
const ggufSource = readFileSync(new URL("../../test/gguf/tiny-llama-quants.gguf", import.meta.url));
const spmSource = readFileSync(new URL("../../test/spm/llama-like/tokenizer.model", import.meta.url));
const pytorchSource = readFileSync(new URL("../../test/pytorch/single/pytorch_model.bin", import.meta.url));
const folder = join(root, "model");
await makeModel({ arch: "llama", dtype: "bf16", seed: 1, shape: { vocab: 300 }, out: folder });
// The model test/pytorch's checkpoint was saved from (tools/pytorch/make-bin-fixtures.py).
const pytorchFolder = join(root, "pytorch-model");
await makeModel({ arch: "llama", dtype: "bf16", seed: 1, out: pytorchFolder });
const quantized = [
  { method: "gptq", bits: 4, groupSize: 32, sym: true },
  { method: "fp8", block: [48, 32] },
  { method: "bnb-nf4", doubleQuant: true },
].map((opts) => {
  const dir = join(root, opts.method);
  writeQuantizedCheckpoint(folder, dir, opts);
  return dir;
});

async function tryLoad(dir, weights = "file") {
  const model = loadModel(dir, { weights });
  try {
    const session = new Session(model, { contextLength: Math.min(32, model.config.maxPositions) });
    for await (const _ of session.generate("the quick", { maxTokens: 2, temperature: 0 }));
  } finally {
    model.close();
  }
}

const kinds = {
  async gguf(rng, dir) {
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "m.gguf");
    writeFileSync(file, mutateBytes(ggufSource, rng));
    await importGguf(file, join(dir, "imported"));
    // "auto": int4 from the file's Q4_0 / Q4_1 / Q4_K blocks, int8 from its Q8_0 / Q5_0 ones, as it is mutated.
    await tryLoad(join(dir, "imported"), "auto");
  },
  async safetensors(rng, dir) {
    cpSync(folder, dir, { recursive: true });
    const file = join(dir, "model.safetensors");
    writeFileSync(file, mutateBytes(readFileSync(file), rng));
    await tryLoad(dir);
  },
  async config(rng, dir) {
    cpSync(folder, dir, { recursive: true });
    const file = join(dir, "config.json");
    writeFileSync(file, mutateJson(readFileSync(file, "utf8"), rng));
    await tryLoad(dir);
  },
  // A GPTQ, FP8 or bitsandbytes checkpoint with its weights file or config.json broken, imported and
  // loaded as "auto" weights (int4 from the GPTQ codes' blocks, int8 for the others).
  async quantized(rng, dir) {
    cpSync(quantized[Math.floor(rng.next() * quantized.length)], dir, { recursive: true });
    if (rng.next() < 0.6) {
      const file = join(dir, "model.safetensors");
      writeFileSync(file, mutateBytes(readFileSync(file), rng));
    } else {
      const file = join(dir, "config.json");
      writeFileSync(file, mutateJson(readFileSync(file, "utf8"), rng));
    }
    await importQuantized(dir, join(dir, "imported"));
    await tryLoad(join(dir, "imported"), "auto");
  },
  async tokenizer(rng, dir) {
    cpSync(folder, dir, { recursive: true });
    const name = rng.next() < 0.7 ? "tokenizer.json" : "tokenizer_config.json";
    const file = join(dir, name);
    writeFileSync(file, mutateJson(readFileSync(file, "utf8"), rng));
    await tryLoad(dir);
  },
  // A PyTorch checkpoint (pytorch_model.bin: a zip of a pickle and the storages), broken, imported
  // and loaded.
  async pytorch(rng, dir) {
    cpSync(pytorchFolder, dir, { recursive: true });
    rmSync(join(dir, "model.safetensors"));
    writeFileSync(join(dir, "pytorch_model.bin"), mutateBytes(pytorchSource, rng));
    await importPytorch(dir, join(dir, "imported"));
    await tryLoad(join(dir, "imported"));
  },
  // A folder with only GPT-2's vocab.json and merges.txt, one of them broken, loaded and asked for a reply.
  async bpefiles(rng, dir) {
    cpSync(folder, dir, { recursive: true });
    const json = JSON.parse(readFileSync(join(dir, "tokenizer.json"), "utf8"));
    rmSync(join(dir, "tokenizer.json"));
    rmSync(join(dir, "tokenizer_config.json"));
    const vocab = JSON.stringify(json.model.vocab);
    const merges = ["#version: 0.2", ...json.model.merges.map((m) => m.join(" "))].join("\n");
    const broken = rng.next() < 0.5;
    writeFileSync(join(dir, "vocab.json"), broken ? mutateJson(vocab, rng) : vocab);
    writeFileSync(
      join(dir, "merges.txt"),
      broken ? merges : Buffer.from(mutateBytes(Buffer.from(merges), rng)).toString(),
    );
    await tryLoad(dir);
  },
  // A folder with only SentencePiece's tokenizer.model, broken: converted, then a text encoded and decoded.
  async sentencepiece(rng, dir) {
    mkdirSync(dir, { recursive: true });
    const file = join(dir, "tokenizer.model");
    writeFileSync(file, mutateBytes(spmSource, rng));
    const tok = ModelTokenizer.load(dir);
    tok.decode(tok.encode("The quick brown fox, café 🦙"));
  },
};

if (only !== undefined && !(only in kinds)) throw new Error(`no kind "${only}" (${Object.keys(kinds).join(", ")})`);
const tally = {};
const failures = [];
for (let c = 0; c < cases; c++) {
  const seed = seed0 + c;
  const rng = new Rng(seed);
  const names = only ? [only] : Object.keys(kinds);
  const kind = names[seed % names.length];
  const dir = join(root, `case-${seed}`);
  // A crash (rather than an exception) ends the run: the last line names the case.
  process.stdout.write(`case ${seed} ${kind}${process.stdout.isTTY ? "\r" : "\n"}`);
  const t0 = performance.now();
  let outcome;
  try {
    await kinds[kind](rng, dir);
    outcome = "loaded";
  } catch (e) {
    if (e instanceof ModelError) outcome = `ModelError ${e.code}`;
    // What a loaded but odd model may then say when asked for a reply (a context of one position,
    // a tokenizer that makes no tokens of the prompt): typed errors about that reply.
    else if (e instanceof UsageError || e instanceof ContextOverflowError) outcome = e.name;
    else {
      outcome = "UNTYPED";
      failures.push({ seed, kind, error: `${e?.name}: ${e?.message}`.slice(0, 300) });
    }
  }
  const ms = performance.now() - t0;
  if (ms > 10000) failures.push({ seed, kind, error: `took ${Math.round(ms)} ms` });
  tally[`${kind}: ${outcome}`] = (tally[`${kind}: ${outcome}`] ?? 0) + 1;
  rmSync(dir, { recursive: true, force: true });
}
rmSync(root, { recursive: true, force: true });
console.log(`\n${cases} cases from seed ${seed0}`);
for (const [k, n] of Object.entries(tally).sort()) console.log(`  ${String(n).padStart(4)}  ${k}`);
for (const f of failures) console.log(`FAIL seed ${f.seed} (${f.kind}): ${f.error}`);
process.exitCode = failures.length > 0 ? 1 : 0;
