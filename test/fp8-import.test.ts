// FP8 checkpoints (core/loader/fp8-import.ts): each scheme's matrices imported as code × scale, the
// import cached and redone when the checkpoint changes, loading, estimates and bad files.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync, readdirSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeModel } from "../core/modelgen/make-model.js";
import { E4M3_VALUES, fp8ImportRecord } from "../core/loader/fp8-import.js";
import { modelFolderFor } from "../core/loader/model-source.js";
import { loadModel, type LoadedModel } from "../core/loader/model-folder.js";
import { readSafetensorsHeader } from "../core/loader/safetensors.js";
import { ModelError } from "../core/loader/errors.js";
import { estimateModel } from "../core/host/engine-host.js";
import { listCachedModels } from "../core/loader/hf-cache.js";
import { CpuBackend } from "../core/backend/cpu.js";
import { KVCache, Transformer } from "../core/engine/transformer.js";
import { e4m3Reference, encodeE4M3, expectedBf16, writeFp8Checkpoint, type Fp8Options } from "./fp8-helpers.js";
import { hire, putInHubCache, tempDir } from "./helpers.js";

/** A bf16 tiny Llama and its FP8 copy, with the cache in a temporary folder. */
async function fp8Model(t: Parameters<typeof tempDir>[0], opts: Fp8Options) {
  const dir = tempDir(t);
  const prev = process.env.HIRE_CACHE_DIR;
  process.env.HIRE_CACHE_DIR = join(dir, "cache");
  t.after(() => (prev === undefined ? delete process.env.HIRE_CACHE_DIR : (process.env.HIRE_CACHE_DIR = prev)));
  const src = join(dir, "src");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 7, out: src });
  const fp8 = join(dir, "fp8");
  const matrices = writeFp8Checkpoint(src, fp8, opts);
  return { dir, src, fp8, matrices };
}

/** Every tensor of a model folder's one safetensors file, as raw bytes. */
function tensorBytes(dir: string): Map<string, Buffer> {
  const file = join(dir, "model.safetensors");
  const bytes = readFileSync(file);
  const out = new Map<string, Buffer>();
  for (const t of readSafetensorsHeader(file).tensors.values())
    out.set(t.name, bytes.subarray(t.offset, t.offset + t.byteLength));
  return out;
}

test("fp8: the importer's e4m3 table is the format's value for each of the 256 codes; the test encoder rounds to nearest even", () => {
  for (let c = 0; c < 256; c++) {
    const want = e4m3Reference(c);
    if (Number.isNaN(want)) assert.ok(Number.isNaN(E4M3_VALUES[c]), `code ${c}`);
    else assert.ok(Object.is(E4M3_VALUES[c], want), `code 0x${c.toString(16)}: ${E4M3_VALUES[c]} vs ${want}`);
  }
  // Values from the OCP FP8 specification: 1.0, the largest normal, the smallest subnormal and normal.
  assert.deepEqual(
    [0x38, 0x7e, 0x01, 0x08, 0xb8].map((c) => E4M3_VALUES[c]),
    [1, 448, 2 ** -9, 2 ** -6, -1],
  );
  assert.ok(Number.isNaN(E4M3_VALUES[0x7f]) && Number.isNaN(E4M3_VALUES[0xff]));
  assert.equal(encodeE4M3(1.0625), 0x38, "halfway between 1 and 1.125: the even code");
  assert.equal(encodeE4M3(1.1875), 0x3a, "halfway between 1.125 and 1.25: the even code");
  assert.equal(encodeE4M3(-500), 0xfe, "saturated at -448");
});

for (const opts of [
  { method: "fp8", block: [48, 32] },
  { method: "compressed-tensors" },
  { method: "fbgemm_fp8" },
] as Fp8Options[]) {
  const name = opts.block
    ? `${opts.method} (${opts.block.join(" × ")} blocks, ragged at the edges)`
    : `${opts.method} (a scale per row)`;
  test(`fp8 import, ${name}: each FP8 matrix becomes code × scale in bf16, the rest is copied, the scales are dropped`, async (t) => {
    const { src, fp8, matrices } = await fp8Model(t, opts);
    const progress: number[] = [];
    const dir = await modelFolderFor(fp8, (_f, done, total) => progress.push(done / total));
    assert.equal(progress.at(-1), 1);
    const imported = tensorBytes(dir);
    const original = tensorBytes(src);
    assert.deepEqual([...imported.keys()].sort(), [...original.keys()].sort(), "the source's tensors, no scales");
    assert.ok(matrices.size >= 14, "every linear layer of the 2-layer model was FP8");
    for (const [tensor, bytes] of imported) {
      const m = matrices.get(tensor);
      if (!m) {
        assert.ok(bytes.equals(original.get(tensor)!), `${tensor} copied as stored`);
        continue;
      }
      const got = new Uint16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
      assert.deepEqual(got, expectedBf16(m), `${tensor}: code × scale rounded to bf16`);
    }
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    assert.equal(config.quantization_config, undefined);
    assert.equal(config.torch_dtype, "bfloat16");
    for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
      assert.ok(readFileSync(join(dir, f)).equals(readFileSync(join(fp8, f))), f);
    }
    const record = fp8ImportRecord(dir)!;
    assert.equal(record.source, fp8);
    assert.equal(record.quantMethod, opts.method);
    assert.equal(record.sourceTypes.F8_E4M3, matrices.size);
  });
}

/** Next-token logits after each of `ids`, fed one by one. */
function logits(model: LoadedModel, ids: number[]): Float32Array[] {
  const b = new CpuBackend();
  const tr = new Transformer(b, model.config, model.weights);
  const cache = new KVCache(b, model.config, ids.length, "f32");
  return ids.map((id, pos) => Float32Array.from(tr.forward([id], pos, cache, undefined, true)!));
}

test("an FP8 checkpoint loads as int8 by default and decodes as its bf16 source within FP8's rounding", async (t) => {
  const { src, fp8 } = await fp8Model(t, { method: "fp8", block: [48, 32] });
  const dir = await modelFolderFor(fp8);
  const ids = [1, 17, 99, 250, 3, 42, 7, 300];
  const source = loadModel(src);
  const file = loadModel(dir, { weights: "file" });
  const auto = loadModel(dir, { weights: "auto" });
  t.after(() => [source, file, auto].forEach((m) => m.close()));
  assert.equal(file.weightFormat, "file");
  assert.equal(auto.weightFormat, "int8", "auto keeps an FP8 import as int8");
  const [a, b, c] = [source, file, auto].map((m) => logits(m, ids));
  let fp8Diff = 0;
  let int8Diff = 0;
  let spread = 0;
  for (let p = 0; p < ids.length; p++)
    for (let i = 0; i < a[p].length; i++) {
      fp8Diff = Math.max(fp8Diff, Math.abs(a[p][i] - b[p][i]));
      int8Diff = Math.max(int8Diff, Math.abs(b[p][i] - c[p][i]));
      spread = Math.max(spread, Math.abs(a[p][i]));
    }
  // e4m3 keeps 3 mantissa bits (a relative step of 1/8 to 1/16), so the logits move, by a small part
  // of their size; int8 over the import moves them far less.
  assert.ok(fp8Diff > 0 && fp8Diff < 0.1 * spread, `FP8 vs bf16: ${fp8Diff} (logits up to ${spread})`);
  assert.ok(int8Diff < fp8Diff, `int8 vs the import: ${int8Diff}`);
});

test("the CLI generates from an FP8 folder, importing it once; a changed checkpoint is imported again", async (t) => {
  const { dir, src, fp8 } = await fp8Model(t, { method: "compressed-tensors" });
  const env = { HIRE_CACHE_DIR: join(dir, "cache") };
  const args = (model: string) => [
    "generate",
    "--model",
    model,
    "--prompt",
    "hello world",
    "--max-tokens",
    "6",
    "--temperature",
    "0",
    "--json",
  ];
  const first = hire(args(fp8), undefined, env);
  assert.equal(first.status, 0, first.stderr);
  assert.match(first.stderr, /importing fp8/);
  const again = hire(args(fp8), undefined, env);
  assert.equal(again.status, 0, again.stderr);
  assert.doesNotMatch(again.stderr, /importing/, "the import is kept in the cache");
  assert.equal(JSON.parse(again.stdout).text, JSON.parse(first.stdout).text);
  assert.ok(hire(args(src), undefined, env).status === 0);
  const imports = () => readdirSync(join(dir, "cache", "imports"));
  assert.equal(imports().length, 1);
  utimesSync(join(fp8, "model.safetensors"), new Date(), new Date(Date.now() + 5000));
  const changed = hire(args(fp8), undefined, env);
  assert.equal(changed.status, 0, changed.stderr);
  assert.match(changed.stderr, /importing fp8/);
  assert.equal(imports().length, 1, "the import of the checkpoint before it changed is removed");
});

test("an FP8 folder's estimate counts what its import holds: bf16 matrices for file weights, int8 copies for auto", async (t) => {
  const { src, fp8 } = await fp8Model(t, { method: "fp8" });
  const [fileFp8, fileSrc, autoFp8, int8Src] = await Promise.all([
    estimateModel(fp8, 64, "f32", "file"),
    estimateModel(src, 64, "f32", "file"),
    estimateModel(fp8, 64, "f32", "auto"),
    estimateModel(src, 64, "f32", "int8"),
  ]);
  assert.equal(fileFp8.weightBytes, fileSrc.weightBytes);
  assert.equal(fileFp8.parameters, fileSrc.parameters);
  assert.equal(autoFp8.weightBytes, int8Src.weightBytes);
  assert.ok(autoFp8.weightBytes < fileFp8.weightBytes);
});

test("hire models lists an FP8 checkpoint in the Hugging Face cache as loadable", async (t) => {
  const { dir, fp8 } = await fp8Model(t, { method: "fp8" });
  const hub = join(dir, "hub");
  putInHubCache(hub, "Org/Tiny-FP8", fp8, "0123456789abcdef0123456789abcdef01234567");
  const [m] = await listCachedModels({ HF_HUB_CACHE: hub });
  assert.equal(m.repo, "Org/Tiny-FP8");
  assert.equal(m.problem, null, JSON.stringify(m.problem));
  assert.equal(m.architecture, "LlamaForCausalLM");
});

// ---------------------------------------------------------------------------------------------
// Bad checkpoints: a typed error naming the file (and tensor), and no import left behind
// ---------------------------------------------------------------------------------------------

/** Rewrites the checkpoint's safetensors header with `edit` (data unchanged). */
function editHeader(
  dir: string,
  edit: (json: Record<string, { dtype: string; shape: number[]; data_offsets: number[] }>) => void,
) {
  const file = join(dir, "model.safetensors");
  const bytes = readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const json = JSON.parse(bytes.subarray(8, 8 + n).toString("utf8"));
  edit(json);
  const text = Buffer.from(JSON.stringify(json));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(text.length));
  writeFileSync(file, Buffer.concat([len, text, bytes.subarray(8 + n)]));
}

const editConfig = (dir: string, edit: (c: Record<string, unknown>) => void) => {
  const c = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  edit(c);
  writeFileSync(join(dir, "config.json"), JSON.stringify(c));
};

const GATE = "model.layers.0.mlp.gate_proj.weight";

for (const [what, spoil, code, names] of [
  [
    "an FP8 matrix without its scale",
    (d: string) => editHeader(d, (j) => void delete j[`${GATE}_scale_inv`]),
    "BAD_HEADER",
    GATE,
  ],
  [
    "scales that do not cover the matrix in the config's blocks",
    (d: string) =>
      editConfig(d, (c) => ((c.quantization_config as Record<string, unknown>).weight_block_size = [64, 64])),
    "BAD_HEADER",
    "_scale_inv",
  ],
  [
    "a NaN code in a matrix",
    (d: string) => {
      const file = join(d, "model.safetensors");
      const bytes = readFileSync(file);
      const t = readSafetensorsHeaderStored(file, GATE);
      bytes[t + 5] = 0x7f;
      writeFileSync(file, bytes);
    },
    "NOT_FINITE",
    GATE,
  ],
  [
    "e5m2 codes",
    (d: string) => editConfig(d, (c) => ((c.quantization_config as Record<string, unknown>).fmt = "e5m2")),
    "UNSUPPORTED_QUANTIZATION",
    "e5m2",
  ],
] as const) {
  test(`bad FP8 checkpoint: ${what} is a ${code} error naming ${names}, and leaves no import`, async (t) => {
    const { dir, fp8 } = await fp8Model(t, { method: "fp8", block: [48, 32] });
    spoil(fp8);
    await assert.rejects(modelFolderFor(fp8), (e: unknown) => {
      assert.ok(e instanceof ModelError, String(e));
      assert.equal(e.code, code);
      assert.ok(e.message.includes(fp8), e.message);
      assert.ok(e.message.includes(names), e.message);
      return true;
    });
    const imports = join(dir, "cache", "imports");
    assert.deepEqual(existsSync(imports) ? readdirSync(imports) : [], []);
  });
}

/** The file offset of an FP8 tensor's data (the loadable-dtype header reader refuses F8 tensors). */
function readSafetensorsHeaderStored(file: string, tensor: string): number {
  const bytes = readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const json = JSON.parse(bytes.subarray(8, 8 + n).toString("utf8"));
  return 8 + n + json[tensor].data_offsets[0];
}

test("bad FP8 use: loading the checkpoint folder directly names the import; int4 compressed-tensors stays refused", async (t) => {
  const { fp8 } = await fp8Model(t, { method: "fp8" });
  assert.throws(
    () => loadModel(fp8),
    (e: unknown) =>
      e instanceof ModelError && e.code === "UNSUPPORTED_QUANTIZATION" && /through its import/.test(e.message),
  );
  editConfig(fp8, (c) => {
    c.quantization_config = {
      quant_method: "compressed-tensors",
      format: "pack-quantized",
      config_groups: {
        group_0: { targets: ["Linear"], weights: { num_bits: 4, type: "int", strategy: "group", group_size: 128 } },
      },
    };
  });
  await assert.rejects(
    async () => loadModel(await modelFolderFor(fp8)),
    (e: unknown) =>
      e instanceof ModelError && e.code === "UNSUPPORTED_QUANTIZATION" && /compressed-tensors/.test(e.message),
  );
});
