// Quantized checkpoints (core/loader/quantized-import.ts, fp8.ts, gptq.ts): each scheme's matrices
// imported as its format defines them, the import cached and redone when the checkpoint changes,
// loading, estimates and bad files.
import { test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, existsSync, readFileSync, readdirSync, renameSync, utimesSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeModel } from "../core/modelgen/make-model.js";
import { E4M3_VALUES } from "../core/loader/fp8.js";
import { planQuantizedImport, quantizedImportRecord } from "../core/loader/quantized-import.js";
import { modelFolderFor } from "../core/loader/model-source.js";
import { loadModel, type LoadedModel } from "../core/loader/model-folder.js";
import { readStoredHeader, type Weight } from "../core/loader/safetensors.js";
import { native } from "../core/native/addon.js";
import { ModelError } from "../core/loader/errors.js";
import { estimateModel } from "../core/host/engine-host.js";
import { listCachedModels, modelName } from "../core/loader/hf-cache.js";
import { CpuBackend } from "../core/backend/cpu.js";
import { KVCache, Transformer } from "../core/engine/transformer.js";
import {
  checkpointDtype,
  e4m3Reference,
  encodeE4M3,
  expectedBits,
  writeQuantizedCheckpoint,
  writeSafetensors,
  type QuantizedOptions,
} from "./quantized-checkpoints.js";
import { hire, putInHubCache, tempDir } from "./helpers.js";

/** A bf16 tiny Llama and its quantized copy, with the cache in a temporary folder. */
async function quantizedModel(t: Parameters<typeof tempDir>[0], opts: QuantizedOptions) {
  const dir = tempDir(t);
  const prev = process.env.HIRE_CACHE_DIR;
  process.env.HIRE_CACHE_DIR = join(dir, "cache");
  t.after(() => (prev === undefined ? delete process.env.HIRE_CACHE_DIR : (process.env.HIRE_CACHE_DIR = prev)));
  const src = join(dir, "src");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 7, out: src });
  const checkpoint = join(dir, opts.method);
  const matrices = writeQuantizedCheckpoint(src, checkpoint, opts);
  return { dir, src, checkpoint, fp8: checkpoint, matrices };
}

/** Every tensor of a model folder's one safetensors file (a quantized checkpoint's too), as raw bytes. */
function tensorBytes(dir: string): Map<string, Buffer> {
  const file = join(dir, "model.safetensors");
  const bytes = readFileSync(file);
  const out = new Map<string, Buffer>();
  for (const t of readStoredHeader(file).tensors.values())
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

const SCHEMES: [string, QuantizedOptions][] = [
  ["fp8, 48 × 32 blocks ragged at the edges", { method: "fp8", block: [48, 32] }],
  ["compressed-tensors, bf16 scales per row", { method: "compressed-tensors" }],
  ["fbgemm_fp8, f32 scales per row", { method: "fbgemm_fp8" }],
  ["gptq, 4-bit, groups of 32", { method: "gptq", bits: 4, groupSize: 32 }],
  ["gptq, 4-bit symmetric, act-order groups", { method: "gptq", bits: 4, groupSize: 32, sym: true, descAct: true }],
  ["gptq, 4-bit symmetric, groups of 64", { method: "gptq", bits: 4, groupSize: 64, sym: true }],
  ["gptq, 8-bit, one group per row", { method: "gptq", bits: 8, groupSize: -1 }],
  ["awq, 4-bit GEMM layout, groups of 32", { method: "awq", groupSize: 32 }],
  ["compressed-tensors pack-quantized, 4-bit, groups of 32", { method: "pack-quantized", bits: 4, groupSize: 32 }],
  [
    "compressed-tensors pack-quantized, 4-bit, bf16 scales, act-order",
    { method: "pack-quantized", bits: 4, groupSize: 32, bf16: true, actOrder: true },
  ],
  ["compressed-tensors pack-quantized, 8-bit, groups of 64", { method: "pack-quantized", bits: 8, groupSize: 64 }],
  ["compressed-tensors int-quantized (W8A8), bf16 scales per row", { method: "int-quantized" }],
  ["bitsandbytes nf4, blocks of 64", { method: "bnb-nf4" }],
  ["bitsandbytes nf4, double quantized", { method: "bnb-nf4", doubleQuant: true }],
  ["bitsandbytes LLM.int8", { method: "bnb-int8" }],
];

for (const [name, opts] of SCHEMES) {
  test(`import of ${name}: each matrix as the format defines it, rounded once; the rest copied; scales and zeros dropped`, async (t) => {
    const { checkpoint, matrices } = await quantizedModel(t, opts);
    const progress: number[] = [];
    const dir = await modelFolderFor(checkpoint, (_f, done, total) => progress.push(done / total));
    assert.equal(progress.at(-1), 1);
    const imported = tensorBytes(dir);
    const stored = tensorBytes(checkpoint);
    assert.equal(matrices.size, 14, "every linear layer of the 2-layer model was quantized");
    const copied = [...stored.keys()].filter(
      (k) =>
        !/(scale(_inv)?|qweight|qzeros|scales|g_idx|weight_packed|weight_shape|absmax|quant_map|bitsandbytes__nf4|SCB)$/.test(
          k,
        ),
    );
    assert.deepEqual(
      [...imported.keys()].sort(),
      [...copied, ...[...matrices.keys()].filter((k) => !stored.has(k))].sort(),
    );
    const dtype = checkpointDtype(opts);
    for (const [tensor, bytes] of imported) {
      const m = matrices.get(tensor);
      if (!m) {
        assert.ok(bytes.equals(stored.get(tensor)!), `${tensor} copied as stored`);
        continue;
      }
      const got = new Uint16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
      assert.deepEqual(got, expectedBits(m, dtype), `${tensor}: the format's values rounded to ${dtype}`);
    }
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    assert.equal(config.quantization_config, undefined);
    assert.equal(config.torch_dtype, dtype === "F16" ? "float16" : "bfloat16");
    for (const f of ["tokenizer.json", "tokenizer_config.json", "generation_config.json"]) {
      assert.ok(readFileSync(join(dir, f)).equals(readFileSync(join(checkpoint, f))), f);
    }
    const record = quantizedImportRecord(dir)!;
    assert.equal(record.source, checkpoint);
    const method = {
      "pack-quantized": "compressed-tensors",
      "int-quantized": "compressed-tensors",
      "bnb-nf4": "bitsandbytes",
      "bnb-int8": "bitsandbytes",
    };
    assert.equal(record.quantMethod, method[opts.method as keyof typeof method] ?? opts.method);
    // The stored tensors of the codes' dtypes, for the 14 matrices.
    const codeTensors = {
      gptq: { I32: 3 * 14 }, // qweight, qzeros, g_idx
      awq: { I32: 2 * 14 },
      "pack-quantized": { I32: (opts.method === "pack-quantized" && opts.actOrder ? 2 : 1) * 14, I64: 14 },
      "bnb-nf4": { U8: (opts.method === "bnb-nf4" && opts.doubleQuant ? 3 : 2) * 14 }, // codes, state (, absmax)
      "bnb-int8": { I8: 14 },
      "int-quantized": { I8: 14 },
    }[opts.method as string] ?? { F8_E4M3: 14 };
    for (const [type, n] of Object.entries(codeTensors)) assert.equal(record.sourceTypes[type], n, type);
  });
}

test("bitsandbytes nf4: packed bytes decode to the values bitsandbytes 0.49 gives them (the high nibble first)", (t) => {
  // Eight bytes of a real NF4 checkpoint with their block's absmax, and what bitsandbytes'
  // dequantize_4bit made of them (bf16, as published beside them).
  const bytes = [110, 90, 88, 44, 228, 163, 9, 25];
  const want = [
    -0.002838, 0.022583, -0.005768, 0.00769, -0.005768, 0.002487, -0.016357, 0.013794, 0.022583, -0.008911, 0.00769,
    -0.012329, -0.03125, 0.005035, -0.021729, 0.005035,
  ];
  const nf4 = new Float32Array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
    -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
  ]);
  const dir = tempDir(t);
  const config = {
    architectures: ["LlamaForCausalLM"],
    torch_dtype: "bfloat16",
    quantization_config: { quant_method: "bitsandbytes", load_in_4bit: true },
  };
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  const state = { quant_type: "nf4", blocksize: 64, dtype: "bfloat16", shape: [1, 16] };
  const blob = new TextEncoder().encode(JSON.stringify(state));
  writeSafetensors(join(dir, "model.safetensors"), [
    ["m.weight", "U8", [8, 1], new Uint8Array(bytes)],
    ["m.weight.absmax", "F32", [1], new Uint8Array(new Float32Array([0.03125]).buffer)],
    ["m.weight.quant_map", "F32", [16], new Uint8Array(nf4.buffer)],
    ["m.weight.quant_state.bitsandbytes__nf4", "U8", [blob.length], blob],
  ]);
  const [m] = planQuantizedImport(dir).tensors;
  assert.ok(m.kind === "dequantize");
  const values = [...m.chunks()][0] as Float32Array;
  const bf16 = (x: number) =>
    new Float32Array(
      new Uint32Array([expectedBits({ rows: 1, cols: 1, values: new Float64Array([x]) }, "BF16")[0] << 16]).buffer,
    )[0];
  const got = Array.from(values, bf16);
  for (let i = 0; i < want.length; i++)
    assert.ok(Math.abs(got[i] - want[i]) <= 5e-6, `value ${i}: ${got[i]} vs ${want[i]}`);
});

/** Next-token logits after each of `ids`, fed one by one. */
function logits(model: LoadedModel, ids: number[]): Float32Array[] {
  const b = new CpuBackend();
  const tr = new Transformer(b, model.config, model.weights);
  const cache = new KVCache(b, model.config, ids.length, "f32");
  return ids.map((id, pos) => Float32Array.from(tr.forward([id], pos, cache, undefined, true)!));
}

for (const [name, opts, bound, format] of [
  // e4m3 keeps 3 mantissa bits (a relative step of 1/8 to 1/16); 4-bit codes in groups of 32 are
  // coarser still: the logits move by a small part of their size.
  ["an FP8", { method: "fp8", block: [48, 32] }, 0.1, "int8"],
  ["a GPTQ 4-bit", { method: "gptq", bits: 4, groupSize: 32 }, 0.25, "int4+int8"],
  ["an AWQ", { method: "awq", groupSize: 32 }, 0.25, "int4+int8"],
] as [string, QuantizedOptions, number, string][]) {
  test(`${name} checkpoint loads as ${format} by default and decodes as its bf16 source within its rounding`, async (t) => {
    const { src, checkpoint } = await quantizedModel(t, opts);
    const dir = await modelFolderFor(checkpoint);
    const ids = [1, 17, 99, 250, 3, 42, 7, 300];
    const source = loadModel(src);
    const file = loadModel(dir, { weights: "file" });
    const auto = loadModel(dir, { weights: "auto" });
    t.after(() => [source, file, auto].forEach((m) => m.close()));
    assert.equal(file.weightFormat, "file");
    assert.equal(auto.weightFormat, format, `auto keeps the import as ${format}`);
    const [a, b, c] = [source, file, auto].map((m) => logits(m, ids));
    let quantDiff = 0;
    let int8Diff = 0;
    let spread = 0;
    for (let p = 0; p < ids.length; p++)
      for (let i = 0; i < a[p].length; i++) {
        quantDiff = Math.max(quantDiff, Math.abs(a[p][i] - b[p][i]));
        int8Diff = Math.max(int8Diff, Math.abs(b[p][i] - c[p][i]));
        spread = Math.max(spread, Math.abs(a[p][i]));
      }
    assert.ok(quantDiff > 0 && quantDiff < bound * spread, `import vs bf16: ${quantDiff} (logits up to ${spread})`);
    assert.ok(int8Diff < quantDiff, `${format} vs the import: ${int8Diff}, less than the checkpoint's own rounding`);
  });
}

/** Every weight of a loaded model by name (the layers' matrices and the head). */
function weightsByName(model: LoadedModel): Map<string, Weight> {
  const out = new Map<string, Weight>();
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach(walk);
    else if (typeof node === "object" && node !== null && Object.getPrototypeOf(node) === Object.prototype) {
      if ("handle" in node && "name" in node) out.set((node as Weight).name, node as Weight);
      else Object.values(node).forEach(walk);
    }
  };
  walk(model.weights);
  return out;
}

for (const [name, opts, from, type] of [
  ["a symmetric 4-bit GPTQ", { method: "gptq", bits: 4, groupSize: 64, sym: true }, "the GPTQ checkpoint's", "Q4_0"],
  [
    "a 4-bit compressed-tensors pack-quantized (bf16 scales)",
    { method: "pack-quantized", bits: 4, groupSize: 32, bf16: true },
    "the compressed-tensors checkpoint's",
    "Q4_0",
  ],
  ["an asymmetric 4-bit GPTQ", { method: "gptq", bits: 4, groupSize: 64 }, "the GPTQ checkpoint's", "Q4_1"],
  ["an AWQ", { method: "awq", groupSize: 64 }, "the awq checkpoint's", "Q4_1"],
] as [string, QuantizedOptions, string, "Q4_0" | "Q4_1"][]) {
  const exactly = type === "Q4_0" ? "exactly" : "with each group's −zero × scale rounded to f16";
  test(`${name} checkpoint loads its matrices as int4 holding their codes ${exactly} (${type} blocks)`, async (t) => {
    const { checkpoint, matrices } = await quantizedModel(t, opts);
    const dir = await modelFolderFor(checkpoint);
    const record = quantizedImportRecord(dir)!;
    assert.equal(record.autoWeights, "int4+int8", "the checkpoint's float head and embedding as int8");
    assert.equal(Object.keys(record.blocks!.tensors).length, 14);
    const estimate = await estimateModel(checkpoint, 64, "f32", "auto");
    // int8 holds only symmetric codes of 32 (Q4_0) as they are.
    for (const bits of type === "Q4_0" ? ([4, 8] as const) : ([4] as const)) {
      const model = loadModel(dir, { weights: bits === 4 ? "auto" : "int8" });
      t.after(() => model.close());
      assert.equal(model.weightFormat, bits === 4 ? "int4+int8" : "int8");
      // The layers' 14 matrices from the blocks; the rest (the head, which such checkpoints keep) from the import.
      assert.deepEqual(model.blockCount?.taken, { [type]: 14 });
      assert.equal(model.blockCount?.from, from);
      if (bits === 4) assert.equal(estimate.weightBytes, (await estimateModel(dir, 64, "f32", "auto")).weightBytes);
      if (bits === 4) assert.equal(model.weights.head.w.dtype, "Q8");
      for (const [name, w] of weightsByName(model)) {
        const m = matrices.get(name);
        if (!m) continue;
        assert.equal(w.dtype, bits === 8 ? "Q8" : type === "Q4_0" ? "Q4" : "Q4M");
        const got = new Float32Array(m.rows * m.cols);
        native().embed(
          got,
          w.handle,
          Int32Array.from({ length: m.rows }, (_, i) => i),
        );
        const want = Float32Array.from(m.values);
        if (type === "Q4_0") {
          assert.deepEqual(got, want, `${name} (int${bits}): scale × (code − 8), unrounded`);
        } else {
          // scale × code + f16(−zero × scale): |zero × scale| <= 15 scale <= 2 max|value|, rounded by 2^-11.
          const amax = want.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
          let worst = 0;
          for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i] - want[i]));
          assert.ok(worst > 0 && worst <= amax * 2 ** -10, `${name}: ${worst} of ${amax}`);
        }
      }
    }
  });
}

test("an import's Q4_0 blocks: a changed blocks file is not used (quantized from the import), an edited record is an error naming it", async (t) => {
  const { checkpoint } = await quantizedModel(t, { method: "gptq", bits: 4, groupSize: 32, sym: true });
  const dir = await modelFolderFor(checkpoint);
  const recordFile = join(dir, "quantized-import.json");
  const record = JSON.parse(readFileSync(recordFile, "utf8"));
  const q = record.blocks.tensors["model.layers.1.mlp.down_proj.weight"];
  // An offset past the file's end: the record no longer fits its blocks.
  writeFileSync(
    recordFile,
    JSON.stringify({
      ...record,
      blocks: {
        ...record.blocks,
        tensors: {
          ...record.blocks.tensors,
          "model.layers.1.mlp.down_proj.weight": { ...q, offset: record.blocks.size },
        },
      },
    }),
  );
  assert.throws(
    () => loadModel(dir, { weights: "int4" }),
    (e: unknown) =>
      e instanceof ModelError && e.file === recordFile && /model\.layers\.1\.mlp\.down_proj\.weight/.test(e.message),
  );
  // The blocks file changed since the record (its time): every matrix is quantized from the import's f16.
  writeFileSync(recordFile, JSON.stringify(record));
  utimesSync(join(dir, "int4-blocks.bin"), new Date(), new Date(Date.now() + 5000));
  const model = loadModel(dir, { weights: "int4" });
  t.after(() => model.close());
  assert.equal(model.blockCount, undefined);
  assert.equal(model.weightFormat, "int4");
});

test("GPTQ inputs grouped out of order (act-order) or in groups of 16 are no blocks: int8", async (t) => {
  for (const opts of [
    { method: "gptq", bits: 4, groupSize: 32, sym: true, descAct: true },
    { method: "gptq", bits: 4, groupSize: 16 },
  ] as QuantizedOptions[]) {
    const other = await quantizedModel(t, opts);
    const r = quantizedImportRecord(await modelFolderFor(other.checkpoint))!;
    assert.equal(r.autoWeights, "int8", JSON.stringify(opts));
    assert.equal(r.blocks, undefined, JSON.stringify(opts));
  }
});

test("the CLI generates from an FP8 folder, importing it once; a changed checkpoint is imported again", async (t) => {
  const { dir, src, fp8 } = await quantizedModel(t, { method: "compressed-tensors" });
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
  assert.match(first.stderr, /importing compressed-tensors/);
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
  assert.match(changed.stderr, /importing compressed-tensors/);
  assert.equal(imports().length, 1, "the import of the checkpoint before it changed is removed");
});

test("hire export turns a quantized checkpoint into a GGUF file (through its import) that loads and generates", async (t) => {
  const { dir, checkpoint } = await quantizedModel(t, { method: "bnb-nf4", doubleQuant: true });
  const env = { HIRE_CACHE_DIR: join(dir, "cache") };
  const gguf = join(dir, "nf4.q8_0.gguf");
  const exported = hire(["export", "--model", checkpoint, "--gguf", gguf, "--dtype", "q8_0"], undefined, env);
  assert.equal(exported.status, 0, exported.stderr);
  assert.match(exported.stdout, /GGUF v3, llama, q8_0/);
  const run = hire(["generate", "--model", gguf, "--prompt", "hello", "--max-tokens", "4", "--json"], undefined, env);
  assert.equal(run.status, 0, run.stderr);
  assert.equal(JSON.parse(run.stdout).steps.length, 4);
});

test("an FP8 folder's estimate counts what its import holds: bf16 matrices for file weights, int8 copies for auto", async (t) => {
  const { src, fp8 } = await quantizedModel(t, { method: "fp8" });
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
  const { dir, fp8 } = await quantizedModel(t, { method: "fp8" });
  const hub = join(dir, "hub");
  putInHubCache(hub, "Org/Tiny-FP8", fp8, "0123456789abcdef0123456789abcdef01234567");
  const [m] = await listCachedModels({ HF_HUB_CACHE: hub });
  assert.equal(m.repo, "Org/Tiny-FP8");
  assert.equal(m.problem, null, JSON.stringify(m.problem));
  assert.equal(m.architecture, "LlamaForCausalLM");
  assert.equal(m.quantization, "fp8");
  const listed = hire(["models"], undefined, { HF_HUB_CACHE: hub });
  assert.equal(listed.status, 0, listed.stderr);
  assert.match(listed.stdout, /Org\/Tiny-FP8 +LlamaForCausalLM, [\d.]+ MB, fp8 \(imported on its first load\)/);
});

test("a sharded GPTQ checkpoint, opened by its repo id in the Hugging Face cache, imports as its single-file twin", async (t) => {
  const opts: QuantizedOptions = { method: "gptq", bits: 4, groupSize: 32, sym: true };
  const { dir, src, checkpoint } = await quantizedModel(t, opts);
  const sharded = join(dir, "sharded");
  writeQuantizedCheckpoint(src, sharded, opts, 3);
  assert.ok(existsSync(join(sharded, "model.safetensors.index.json")));
  const hub = join(dir, "hub");
  putInHubCache(hub, "Org/Tiny-GPTQ-Int4", sharded, "0123456789abcdef0123456789abcdef01234567");
  const prev = process.env.HF_HUB_CACHE;
  process.env.HF_HUB_CACHE = hub;
  t.after(() => (prev === undefined ? delete process.env.HF_HUB_CACHE : (process.env.HF_HUB_CACHE = prev)));
  const fromHub = await modelFolderFor("Org/Tiny-GPTQ-Int4");
  const single = tensorBytes(await modelFolderFor(checkpoint));
  const imported = tensorBytes(fromHub);
  assert.deepEqual([...imported.keys()].sort(), [...single.keys()].sort());
  for (const [name, bytes] of imported) assert.ok(bytes.equals(single.get(name)!), name);
  const model = loadModel(fromHub, { weights: "auto" });
  t.after(() => model.close());
  assert.deepEqual([model.weightFormat, model.blockCount?.taken], ["int4+int8", { Q4_0: 14 }]);
  assert.equal(modelName(fromHub), "Org/Tiny-GPTQ-Int4");
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
    const { dir, fp8 } = await quantizedModel(t, { method: "fp8", block: [48, 32] });
    spoil(fp8);
    await assertNoImport(dir, fp8, code, names);
  });
}

const GATE_BASE = "model.layers.0.mlp.gate_proj";

for (const [what, opts, spoil, code, names] of [
  [
    "GPTQ codes without their zero points",
    { method: "gptq", bits: 4, groupSize: 32 },
    (d: string) => editHeader(d, (j) => void delete j[`${GATE_BASE}.qzeros`]),
    "BAD_HEADER",
    `${GATE_BASE}.qzeros`,
  ],
  [
    "AWQ scales for another group size",
    { method: "awq", groupSize: 32 },
    (d: string) => editConfig(d, (c) => ((c.quantization_config as Record<string, unknown>).group_size = 16)),
    "BAD_HEADER",
    "q_proj.scales]: shape [2,64] where [4,64]",
  ],
  [
    "a g_idx naming a group past the scales",
    { method: "gptq", bits: 4, groupSize: 32, descAct: true },
    (d: string) => {
      const file = join(d, "model.safetensors");
      const bytes = readFileSync(file);
      bytes.writeInt32LE(99, readSafetensorsHeaderStored(file, `${GATE_BASE}.g_idx`) + 4 * 3);
      writeFileSync(file, bytes);
    },
    "BAD_HEADER",
    "input 3 is in group 99",
  ],
  [
    "3-bit GPTQ",
    { method: "gptq", bits: 4, groupSize: 32 },
    (d: string) => editConfig(d, (c) => ((c.quantization_config as Record<string, unknown>).bits = 3)),
    "UNSUPPORTED_QUANTIZATION",
    "3-bit",
  ],
  [
    "AWQ's GEMV layout",
    { method: "awq", groupSize: 32 },
    (d: string) => editConfig(d, (c) => ((c.quantization_config as Record<string, unknown>).version = "gemv")),
    "UNSUPPORTED_QUANTIZATION",
    "gemv",
  ],
  [
    "an I32 tensor no weight is made of",
    { method: "awq", groupSize: 32 },
    (d: string) =>
      editHeader(d, (j) => {
        j["model.extra.qcodes"] = j[`${GATE_BASE}.qzeros`];
      }),
    "BAD_HEADER",
    "model.extra.qcodes",
  ],
  [
    "NF4 codes without their absmax",
    { method: "bnb-nf4" },
    (d: string) => editHeader(d, (j) => void delete j[`${GATE_BASE}.weight.absmax`]),
    "BAD_HEADER",
    `${GATE_BASE}.weight.absmax`,
  ],
  [
    "a quant_state that is not JSON",
    { method: "bnb-nf4", doubleQuant: true },
    (d: string) => {
      const file = join(d, "model.safetensors");
      const bytes = readFileSync(file);
      bytes[readSafetensorsHeaderStored(file, `${GATE_BASE}.weight.quant_state.bitsandbytes__nf4`)] = 0x7b + 1;
      writeFileSync(file, bytes);
    },
    "BAD_HEADER",
    "not a JSON quant_state",
  ],
] as [string, QuantizedOptions, (d: string) => void, string, string][]) {
  test(`bad ${opts.method.toUpperCase()} checkpoint: ${what} is a ${code} error naming ${names}, and leaves no import`, async (t) => {
    const { dir, checkpoint } = await quantizedModel(t, opts);
    spoil(checkpoint);
    await assertNoImport(dir, checkpoint, code, names);
  });
}

/** Opening `checkpoint` is a ModelError `code` naming it and `names`, and the cache holds no import after. */
async function assertNoImport(dir: string, checkpoint: string, code: string, names: string) {
  await assert.rejects(modelFolderFor(checkpoint), (e: unknown) => {
    assert.ok(e instanceof ModelError, String(e));
    assert.equal(e.code, code);
    assert.ok(e.message.includes(checkpoint), e.message);
    assert.ok(e.message.includes(names), e.message);
    return true;
  });
  const imports = join(dir, "cache", "imports");
  assert.deepEqual(existsSync(imports) ? readdirSync(imports) : [], []);
}

/** The file offset of a quantized tensor's data (the loadable-dtype header reader refuses F8 and I32 tensors). */
function readSafetensorsHeaderStored(file: string, tensor: string): number {
  const bytes = readFileSync(file);
  const n = Number(bytes.readBigUInt64LE(0));
  const json = JSON.parse(bytes.subarray(8, 8 + n).toString("utf8"));
  return 8 + n + json[tensor].data_offsets[0];
}

test("bad use: loading a quantized checkpoint's folder directly names the import; what no scheme reads stays refused", async (t) => {
  const { fp8 } = await quantizedModel(t, { method: "fp8" });
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
        group_0: {
          targets: ["Linear"],
          weights: { num_bits: 4, type: "int", symmetric: false, strategy: "group", group_size: 128 },
        },
      },
    };
  });
  await assert.rejects(
    async () => loadModel(await modelFolderFor(fp8)),
    (e: unknown) =>
      e instanceof ModelError &&
      e.code === "UNSUPPORTED_QUANTIZATION" &&
      /compressed-tensors, pack-quantized\): asymmetric codes/.test(e.message),
  );
  editConfig(fp8, (c) => {
    c.quantization_config = { quant_method: "compressed-tensors", format: "marlin-24", config_groups: {} };
  });
  await assert.rejects(
    async () => loadModel(await modelFolderFor(fp8)),
    (e: unknown) =>
      e instanceof ModelError && e.code === "UNSUPPORTED_QUANTIZATION" && /"compressed-tensors"/.test(e.message),
  );
});

// Legacy AutoGPTQ folders (TheBloke's 2023 uploads, before transformers read GPTQ): the scheme in
// quantize_config.json, none in config.json, and the weights under the name it gives.
test("gptq: a legacy AutoGPTQ folder (quantize_config.json, gptq_model-4bit-32g.safetensors) imports as its modern form does", async (t) => {
  const { dir, checkpoint } = await quantizedModel(t, { method: "gptq", bits: 4, groupSize: 32, sym: true });
  const legacy = join(dir, "legacy");
  cpSync(checkpoint, legacy, { recursive: true });
  const config = JSON.parse(readFileSync(join(legacy, "config.json"), "utf8")) as Record<string, unknown>;
  const q = config.quantization_config as Record<string, unknown>;
  delete config.quantization_config;
  writeFileSync(join(legacy, "config.json"), JSON.stringify(config));
  writeFileSync(
    join(legacy, "quantize_config.json"),
    JSON.stringify({
      bits: q.bits,
      group_size: q.group_size,
      desc_act: q.desc_act,
      sym: q.sym,
      true_sequential: true,
      model_name_or_path: null,
      model_file_base_name: "gptq_model-4bit-32g",
    }),
  );
  renameSync(join(legacy, "model.safetensors"), join(legacy, "gptq_model-4bit-32g.safetensors"));
  assert.equal(planQuantizedImport(legacy).method, "gptq");
  const [modern, old] = [await modelFolderFor(checkpoint), await modelFolderFor(legacy)];
  assert.notEqual(old, modern);
  assert.deepEqual(tensorBytes(old), tensorBytes(modern));
  assert.ok(!existsSync(join(old, "quantize_config.json")), "the import's config says how it is stored");
  putInHubCache(join(dir, "hub"), "org/legacy-gptq", legacy, "1".repeat(40));
  const [m] = await listCachedModels({ HF_HUB_CACHE: join(dir, "hub") });
  assert.equal(m.problem, null, JSON.stringify(m.problem));
  assert.equal(m.quantization, "gptq");
  // loadModel (which imports nothing) sends it to its import, as any quantized checkpoint.
  assert.throws(
    () => loadModel(legacy),
    (e: unknown) =>
      e instanceof ModelError && /a quantized checkpoint \(gptq\) is read through its import/.test(e.message),
  );
  // A base name whose file is not there says so.
  renameSync(join(legacy, "gptq_model-4bit-32g.safetensors"), join(legacy, "other.safetensors"));
  assert.throws(
    () => planQuantizedImport(legacy),
    (e: unknown) =>
      e instanceof ModelError &&
      e.code === "NO_WEIGHTS" &&
      /quantize_config\.json: model_file_base_name names gptq_model-4bit-32g\.safetensors, which is not in the folder/.test(
        e.message,
      ),
  );
});
