// Loader tests: every architecture and dtype made by make-model loads and runs; sharded and
// single-file checkpoints agree; and every kind of bad input is a typed ModelError naming the
// file (and tensor), through the API and through the CLI (non-zero exit, no crash).
import { test } from "node:test";
import assert from "node:assert/strict";
import { cpSync, mkdirSync, readFileSync, readdirSync, rmSync, truncateSync, writeFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { hire, NO_SYSTEM_TEMPLATE, tempDir } from "./helpers.js";
import { ARCHS, makeModel, type Arch, type DType } from "../core/modelgen/make-model.js";
import { loadModel, type LoadOptions } from "../core/loader/model-folder.js";
import { readInFits, WeightStore } from "../core/loader/safetensors.js";
import { ChatTemplateError, ModelError, type ModelErrorCode } from "../core/loader/errors.js";
import { errorInfo } from "../core/host/engine-host.js";
import { Session } from "../core/engine/session.js";
import { native, NativeDType, type NativeWeight } from "../core/native/addon.js";
import { firstFfn } from "../core/arch/config.js";

const ST = "model.safetensors";

async function greedy(
  dir: string,
  prompt: string,
  n = 8,
  options: LoadOptions = {},
): Promise<{ ids: number[]; logits: number[][] }> {
  const model = loadModel(dir, options);
  try {
    const session = new Session(model);
    const ids: number[] = [];
    const logits: number[][] = [];
    for await (const ev of session.generate(prompt, { maxTokens: n, temperature: 0, logprobs: 3 })) {
      if (ev.type === "token") {
        ids.push(ev.id);
        logits.push(ev.topLogprobs!.map(([, lp]) => lp));
      }
    }
    return { ids, logits };
  } finally {
    model.close();
  }
}

for (const arch of Object.keys(ARCHS) as Arch[]) {
  for (const dtype of ["f32", "f16", "bf16"] as DType[]) {
    test(`make-model ${arch} ${dtype} loads and generates`, async (t) => {
      const dir = join(tempDir(t), "m");
      await makeModel({ arch, dtype, seed: 7, out: dir });
      const model = loadModel(dir);
      assert.equal(model.config.dtype, dtype.toUpperCase());
      assert.equal(model.weights.embed.dtype, dtype.toUpperCase());
      model.close();
      const { ids } = await greedy(dir, "Hello, world", 6);
      assert.equal(ids.length, 6);
    });
  }
}

test("sharded checkpoint loads and matches the single-file one", async (t) => {
  const root = tempDir(t);
  await makeModel({ arch: "llama", dtype: "bf16", seed: 3, out: join(root, "single") });
  await makeModel({ arch: "llama", dtype: "bf16", seed: 3, out: join(root, "sharded"), maxShardBytes: 40_000 });
  const shards = readdirSync(join(root, "sharded")).filter((f) => f.endsWith(".safetensors"));
  assert.ok(shards.length > 1, `expected several shards, got ${shards}`);
  const a = await greedy(join(root, "single"), "shards", 8);
  const b = await greedy(join(root, "sharded"), "shards", 8);
  assert.deepEqual(b, a);
});

test("weights read into memory (the default) and mapped (--mmap) give the same output", async (t) => {
  const dir = join(tempDir(t), "m");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 5, out: dir, maxShardBytes: 40_000 });
  const readIn = await greedy(dir, "mapped or not", 8);
  const mapped = await greedy(dir, "mapped or not", 8, { mmap: true });
  assert.deepEqual(mapped, readIn);
  // Read in, each file's data section starts a cache line whatever the header length, so rows of a
  // 64-byte multiple never straddle two lines (the AVX-512 kernels read a line per load). Mapped,
  // the weights sit at their file offsets, off a cache line here.
  const info = (w: { handle: NativeWeight }) => native().weightAlignment(w.handle);
  const readInModel = loadModel(dir);
  const mappedModel = loadModel(dir, { mmap: true });
  try {
    for (const l of readInModel.weights.layers)
      assert.ok(info(firstFfn(l).up.w) >= 64, "read-in rows start cache lines");
    assert.ok(
      mappedModel.weights.layers.some((l) => info(firstFfn(l).up.w) < 64),
      "some mapped weight is off a cache line (so the check above tests the shift)",
    );
  } finally {
    readInModel.close();
    mappedModel.close();
  }
  // Models that would not fit in free memory are mapped whatever was asked.
  assert.equal(readInFits(3e9, 24e9), true);
  assert.equal(readInFits(3e9, 4e9), true);
  assert.equal(readInFits(3e9, 3.9e9), false);
});

test("a file read in on several threads (64 MiB pieces) holds every byte at its place", (t) => {
  // 36 864 rows of 1024 f32 = 144 MiB: three pieces. Value i mod 1 000 003 at element i, so a piece
  // landing 64 MiB off (16 777 216 elements) would show.
  const rows = 36_864,
    cols = 1024;
  const file = join(tempDir(t), "big.bin");
  const data = new Float32Array(rows * cols);
  for (let i = 0; i < data.length; i++) data[i] = i % 1_000_003;
  writeFileSync(file, data);
  const hn = native();
  const { mapping, byteLength } = hn.mapFile(file, true, 40);
  try {
    assert.equal(byteLength, data.byteLength);
    const w = hn.weight(mapping, 0, NativeDType.F32, rows, cols, false);
    const ids = Int32Array.from([0, 1, 16_383, 16_384, 16_385, 32_767, 32_768, rows - 1]);
    const got = new Float32Array(ids.length * cols);
    hn.embed(got, w, ids);
    ids.forEach((r, j) =>
      assert.deepEqual(got.subarray(j * cols, (j + 1) * cols), data.subarray(r * cols, (r + 1) * cols), `row ${r}`),
    );
  } finally {
    hn.unmap(mapping);
  }
});

test("GPT-2 loads with and without the transformer. prefix, with identical output", async (t) => {
  const root = tempDir(t);
  const plain = join(root, "plain");
  await makeModel({ arch: "gpt2", dtype: "f32", seed: 5, out: plain });
  // The same bytes under prefixed names, as some GPT-2 checkpoints are saved.
  const prefixed = join(root, "prefixed");
  cpSync(plain, prefixed, { recursive: true });
  const h = readHeader(join(plain, ST));
  const renamed = Object.fromEntries(
    Object.entries(h.json).map(([k, v]) => [k === "__metadata__" ? k : `transformer.${k}`, v]),
  );
  writeSafetensors(join(prefixed, ST), renamed, readFileSync(join(plain, ST)).subarray(8 + h.length));
  const loaded = loadModel(prefixed);
  assert.ok(loaded.store.has("transformer.wte.weight"));
  loaded.close();
  assert.deepEqual(await greedy(prefixed, "prefix"), await greedy(plain, "prefix"));
  // And make-model's own prefixed layout loads too.
  await makeModel({ arch: "gpt2", dtype: "f32", seed: 5, out: join(root, "made"), gpt2Prefix: true });
  assert.equal((await greedy(join(root, "made"), "prefix")).ids.length, 8);
});

test("Gemma 3 multimodal checkpoints: the language model under either prefix gives Gemma3ForCausalLM's output", async (t) => {
  const root = tempDir(t);
  const text = join(root, "text");
  await makeModel({ arch: "gemma3", dtype: "bf16", seed: 9, out: text });
  const want = await greedy(text, "hello there", 6);
  const header = readHeader(join(text, "model.safetensors"));
  const data = readFileSync(join(text, "model.safetensors")).subarray(8 + header.length);
  const config = JSON.parse(readFileSync(join(text, "config.json"), "utf8")) as Record<string, unknown>;
  const { torch_dtype, bos_token_id, eos_token_id, ...textConfig } = config;
  // The two layouts transformers has saved Gemma3ForConditionalGeneration in (before and after 4.52).
  for (const prefix of ["language_model.model.", "model.language_model."]) {
    const dir = join(root, prefix.replace(/\./g, "-"));
    cpSync(text, dir, { recursive: true });
    const renamed = Object.fromEntries(
      Object.entries(header.json).map(([k, v]) => [k.startsWith("model.") ? prefix + k.slice(6) : k, v]),
    );
    writeSafetensors(join(dir, "model.safetensors"), renamed, data);
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({
        architectures: ["Gemma3ForConditionalGeneration"],
        model_type: "gemma3",
        text_config: textConfig,
        torch_dtype,
        bos_token_id,
        eos_token_id,
      }),
    );
    assert.deepEqual(await greedy(dir, "hello there", 6), want, prefix);
  }
});

test("tied and untied heads: an untied head equal to the embedding gives the tied result", async (t) => {
  // tiny-qwen2 is tied. Rewriting it as untied with lm_head = embed_tokens must not change anything,
  // and an untied head that differs must change the output.
  const root = tempDir(t);
  const tied = join(root, "tied");
  await makeModel({ arch: "qwen2", dtype: "f32", seed: 11, out: tied });
  const untied = join(root, "untied");
  cpSync(tied, untied, { recursive: true });
  const header = readHeader(join(tied, "model.safetensors"));
  const embed = header.json["model.embed_tokens.weight"] as {
    dtype: string;
    shape: number[];
    data_offsets: [number, number];
  };
  const data = readFileSync(join(tied, "model.safetensors")).subarray(8 + header.length);
  const end = data.length;
  const headBytes = Buffer.from(data.subarray(embed.data_offsets[0], embed.data_offsets[1]));
  header.json["lm_head.weight"] = { ...embed, data_offsets: [end, end + headBytes.length] };
  writeSafetensors(join(untied, "model.safetensors"), header.json, Buffer.concat([data, headBytes]));
  const config = JSON.parse(readFileSync(join(untied, "config.json"), "utf8"));
  writeFileSync(join(untied, "config.json"), JSON.stringify({ ...config, tie_word_embeddings: false }));
  assert.deepEqual(await greedy(untied, "tied?"), await greedy(tied, "tied?"));
  // Now perturb the separate head (every f32 negated: its sign bit flipped): the output must change.
  for (let i = 3; i < headBytes.length; i += 4) headBytes[i] ^= 0x80;
  writeSafetensors(join(untied, "model.safetensors"), header.json, Buffer.concat([data, headBytes]));
  assert.notDeepEqual((await greedy(untied, "tied?")).logits, (await greedy(tied, "tied?")).logits);
});

// ---- bad input -------------------------------------------------------------------------------

function readHeader(file: string): { length: number; json: Record<string, unknown> } {
  const buf = readFileSync(file);
  const length = Number(buf.readBigUInt64LE(0));
  return { length, json: JSON.parse(buf.subarray(8, 8 + length).toString("utf8")) };
}

function writeSafetensors(file: string, json: Record<string, unknown>, data: Buffer, rawHeader?: Buffer): void {
  const header = rawHeader ?? Buffer.from(JSON.stringify(json), "utf8");
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(header.length));
  writeFileSync(file, Buffer.concat([len, header, data]));
}

/** Copy a good tiny model, damage it with `damage`, and expect `code` naming `file` (and `tensor`). */
function badCase(
  name: string,
  damage: (dir: string) => void,
  code: ModelErrorCode,
  file: string,
  tensor?: string,
): void {
  test(`bad input: ${name} → ${code}`, async (t) => {
    const dir = join(tempDir(t), "bad");
    await makeModel({ arch: "llama", dtype: "bf16", seed: 1, out: dir });
    damage(dir);
    assert.throws(
      () => loadModel(dir).close(),
      (e: unknown) => {
        assert.ok(e instanceof ModelError, `expected ModelError, got ${String(e)}`);
        assert.equal(e.code, code, e.message);
        assert.ok(e.message.includes(file), `message should name ${file}: ${e.message}`);
        if (tensor) assert.equal(e.tensor, tensor);
        return true;
      },
    );
    const r = hire(["generate", "--model", dir, "--prompt", "hi", "--max-tokens", "2"]);
    assert.equal(r.signal, null, "the CLI must not crash");
    assert.equal(r.status, 1, r.stderr);
    assert.ok(r.stderr.includes(file), r.stderr);
  });
}

const lastTensor = (dir: string) => {
  const h = readHeader(join(dir, ST));
  const entries = Object.entries(h.json).filter(([k]) => k !== "__metadata__") as [
    string,
    { data_offsets: [number, number] },
  ][];
  return entries.reduce((a, b) => (b[1].data_offsets[1] > a[1].data_offsets[1] ? b : a));
};

badCase("missing folder", (dir) => rmSync(dir, { recursive: true }), "NOT_FOUND", "bad");
badCase("missing config.json", (dir) => rmSync(join(dir, "config.json")), "NOT_FOUND", "config.json");
badCase(
  "malformed config.json",
  (dir) => writeFileSync(join(dir, "config.json"), "{ not json"),
  "BAD_JSON",
  "config.json",
);
badCase(
  "unsupported architecture",
  (dir) =>
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({ architectures: ["MambaForCausalLM"], model_type: "mamba" }),
    ),
  "UNSUPPORTED_ARCHITECTURE",
  "config.json",
);
// An HQQ checkpoint as transformers saves one: quantization_config in config.json, packed tensors
// (here one U8 tensor stands in for the codes). The config names the cause before any tensor is
// read. (FP8, GPTQ, AWQ, compressed-tensors and bitsandbytes checkpoints are imported:
// test/quantized-import.test.ts.)
const hqq = (dir: string) => {
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  config.quantization_config = {
    quant_method: "hqq",
    quant_config: { weight_quant_params: { nbits: 4, group_size: 64 } },
  };
  writeFileSync(join(dir, "config.json"), JSON.stringify(config));
  const file = join(dir, ST);
  const h = readHeader(file);
  const e = h.json["model.norm.weight"] as { shape: number[]; data_offsets: [number, number] };
  h.json["model.norm.weight"] = { ...e, dtype: "U8", shape: [e.data_offsets[1] - e.data_offsets[0]] };
  writeSafetensors(file, h.json, readFileSync(file).subarray(8 + h.length));
};
badCase("an HQQ checkpoint", hqq, "UNSUPPORTED_QUANTIZATION", "config.json");
test("bad input: a quantized checkpoint's error names its method and the ways to load the model", async (t) => {
  const dir = join(tempDir(t), "m");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 1, out: dir });
  hqq(dir);
  assert.throws(
    () => loadModel(dir),
    (e: unknown) =>
      e instanceof ModelError &&
      /quant_method "hqq"/.test(e.message) &&
      /unquantized model/.test(e.message) &&
      /GGUF/.test(e.message),
  );
});
badCase("no weights", (dir) => rmSync(join(dir, ST)), "NO_WEIGHTS", "bad");
test("bad input: loadModel on a folder with only PyTorch's pytorch_model.bin says the commands import it", async (t) => {
  const dir = join(tempDir(t), "bad");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 1, out: dir });
  rmSync(join(dir, ST));
  writeFileSync(join(dir, "pytorch_model.bin"), "PK");
  assert.throws(
    () => loadModel(dir),
    (e: unknown) =>
      e instanceof ModelError &&
      e.code === "NO_WEIGHTS" &&
      e.message.includes(
        "it has pytorch_model.bin (PyTorch's pickle format), which the hire commands and the app import once",
      ),
  );
});
badCase("missing tokenizer.json", (dir) => rmSync(join(dir, "tokenizer.json")), "NOT_FOUND", "tokenizer.json");
badCase(
  "an empty vocab.json beside merges.txt (no tokenizer.json)",
  (dir) => {
    rmSync(join(dir, "tokenizer.json"));
    rmSync(join(dir, "tokenizer_config.json")); // a GPT-2 tokenizer, then
    writeFileSync(join(dir, "vocab.json"), "{}");
    writeFileSync(join(dir, "merges.txt"), "");
  },
  "BAD_TOKENIZER",
  "vocab.json: has no tokens",
);
badCase(
  "truncated safetensors",
  (dir) => truncateSync(join(dir, ST), statSync(join(dir, ST)).size - 100),
  "TRUNCATED",
  ST,
);
test("bad input: truncated safetensors names the cut tensor", async (t) => {
  const dir = join(tempDir(t), "m");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 1, out: dir });
  const [name] = lastTensor(dir);
  truncateSync(join(dir, ST), statSync(join(dir, ST)).size - 100);
  assert.throws(
    () => loadModel(dir),
    (e: unknown) => e instanceof ModelError && e.tensor === name && e.code === "TRUNCATED",
  );
});
badCase(
  "header offsets past the end of the file",
  (dir) => {
    const file = join(dir, ST);
    const h = readHeader(file);
    const data = readFileSync(file).subarray(8 + h.length);
    const [name, entry] = lastTensor(dir);
    const size = entry.data_offsets[1] - entry.data_offsets[0];
    h.json[name] = { ...(h.json[name] as object), data_offsets: [data.length + 64, data.length + 64 + size] };
    writeSafetensors(file, h.json, data);
  },
  "OFFSET_OUT_OF_RANGE",
  ST,
);
badCase(
  "offsets that disagree with the tensor's shape",
  (dir) => {
    const file = join(dir, ST);
    const h = readHeader(file);
    const [name, entry] = lastTensor(dir);
    h.json[name] = { ...(h.json[name] as object), data_offsets: [entry.data_offsets[0], entry.data_offsets[1] - 2] };
    writeSafetensors(file, h.json, readFileSync(file).subarray(8 + h.length));
  },
  "BAD_HEADER",
  ST,
);
badCase(
  "non-UTF-8 header",
  (dir) => {
    const file = join(dir, ST);
    const h = readHeader(file);
    const raw = Buffer.from(JSON.stringify(h.json), "utf8");
    raw[raw.indexOf('"', 1) - 1] = 0xff; // an invalid byte inside the first tensor name
    writeSafetensors(file, {}, readFileSync(file).subarray(8 + h.length), raw);
  },
  "BAD_HEADER",
  ST,
);
badCase(
  "oversized header length",
  (dir) => {
    const file = join(dir, ST);
    const buf = readFileSync(file);
    buf.writeBigUInt64LE(1n << 40n, 0);
    writeFileSync(file, buf);
  },
  "BAD_HEADER",
  ST,
);
badCase(
  "tensors of two dtypes (one F16 in a BF16 checkpoint)",
  (dir) => {
    const file = join(dir, ST);
    const h = readHeader(file);
    const entry = h.json["model.layers.0.mlp.up_proj.weight"] as { dtype: string };
    entry.dtype = "F16"; // the same two bytes a value, read as another dtype
    writeSafetensors(file, h.json, readFileSync(file).subarray(8 + h.length));
  },
  "DTYPE_MISMATCH",
  "dtype F16 disagrees with torch_dtype in config.json (BF16)",
  "model.layers.0.mlp.up_proj.weight",
);

test("a config whose torch_dtype disagrees with every tensor alike loads the stored dtype, as transformers would", async (t) => {
  // A bf16 checkpoint whose config.json says float32 (or float16): transformers loads it (casting);
  // reading the stored values is exact, so the model is the same one.
  const dir = join(tempDir(t), "m");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 1, out: dir });
  const before = await greedy(dir, "dtype?");
  const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
  for (const torch_dtype of ["float32", "float16"]) {
    writeFileSync(join(dir, "config.json"), JSON.stringify({ ...config, torch_dtype }));
    const model = loadModel(dir);
    assert.equal(model.config.dtype, "BF16", "the model's dtype is its weights'");
    model.close();
    assert.deepEqual(await greedy(dir, "dtype?"), before);
  }
});
/** Every one-dimensional BF16 tensor of a single-file checkpoint rewritten as F32 (the same values). */
function vectorsToF32(file: string): number {
  const h = readHeader(file);
  const data = readFileSync(file).subarray(8 + h.length);
  const entries = Object.entries(h.json).filter(([k]) => k !== "__metadata__") as [
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] },
  ][];
  entries.sort(([, a], [, b]) => a.data_offsets[0] - b.data_offsets[0]);
  const parts: Buffer[] = [];
  let offset = 0;
  let changed = 0;
  for (const [, e] of entries) {
    let bytes = data.subarray(e.data_offsets[0], e.data_offsets[1]);
    if (e.shape.length === 1 && e.dtype === "BF16") {
      const f32 = Buffer.alloc(bytes.length * 2);
      for (let i = 0; i < bytes.length / 2; i++) f32.writeUInt32LE((bytes.readUInt16LE(2 * i) << 16) >>> 0, 4 * i);
      [bytes, e.dtype] = [f32, "F32"];
      changed++;
    }
    e.data_offsets = [offset, offset + bytes.length];
    offset += bytes.length;
    parts.push(bytes);
  }
  writeSafetensors(file, h.json, Buffer.concat(parts));
  return changed;
}

test("F32 norms and biases in a BF16 checkpoint load, as transformers keeps such modules in float32", async (t) => {
  for (const arch of ["qwen2", "gpt2"] as const) {
    const dir = join(tempDir(t), arch);
    await makeModel({ arch, dtype: "bf16", seed: 1, out: dir });
    const before = await greedy(dir, "mixed?");
    assert.ok(vectorsToF32(join(dir, ST)) >= 5, "norm weights and biases rewritten");
    const model = loadModel(dir);
    assert.equal(model.config.dtype, "BF16", "the model's dtype is its matrices'");
    model.close();
    assert.deepEqual(await greedy(dir, "mixed?"), before, arch);
  }
});
badCase(
  "shape that disagrees with config.json",
  (dir) => {
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8"));
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({ ...config, intermediate_size: config.intermediate_size + 8 }),
    );
  },
  "SHAPE_MISMATCH",
  ST,
  "model.layers.0.mlp.gate_proj.weight",
);
badCase(
  "missing tensor",
  (dir) => {
    const file = join(dir, ST);
    const h = readHeader(file);
    delete h.json["model.norm.weight"];
    writeSafetensors(file, h.json, readFileSync(file).subarray(8 + h.length));
  },
  "MISSING_TENSOR",
  "bad",
  "model.norm.weight",
);
badCase(
  "unsupported tensor dtype",
  (dir) => {
    const file = join(dir, ST);
    const h = readHeader(file);
    const e = h.json["model.norm.weight"] as { shape: number[]; data_offsets: [number, number] };
    h.json["model.norm.weight"] = { ...e, dtype: "I8", shape: [e.data_offsets[1] - e.data_offsets[0]] };
    writeSafetensors(file, h.json, readFileSync(file).subarray(8 + h.length));
  },
  "UNSUPPORTED_DTYPE",
  ST,
  "model.norm.weight",
);
badCase(
  "sharded index naming a missing shard",
  (dir) => {
    const h = readHeader(join(dir, ST));
    const weightMap = Object.fromEntries(
      Object.keys(h.json)
        .filter((k) => k !== "__metadata__")
        .map((k) => [k, "model-00001-of-00002.safetensors"]),
    );
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  },
  "NOT_FOUND",
  "model-00001-of-00002.safetensors",
);

badCase(
  "a folder where the weights file should be",
  (dir) => {
    rmSync(join(dir, ST));
    mkdirSync(join(dir, ST));
  },
  "NOT_FOUND",
  ST,
);
badCase(
  "a folder where config.json should be",
  (dir) => {
    rmSync(join(dir, "config.json"));
    mkdirSync(join(dir, "config.json"));
  },
  "NOT_FOUND",
  "config.json",
);
badCase(
  "generation_config.json with a sampling default out of range",
  (dir) => writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ do_sample: true, top_p: 1.5 })),
  "BAD_CONFIG",
  "generation_config.json",
);
badCase(
  "generation_config.json with max_new_tokens that is not a positive integer",
  (dir) => writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ max_new_tokens: 0 })),
  "BAD_CONFIG",
  "generation_config.json",
);

badCase(
  "chat_template.jinja that does not parse",
  (dir) => writeFileSync(join(dir, "chat_template.jinja"), "{% for m in messages %}{{ m.content }}"),
  "BAD_TOKENIZER",
  "chat_template.jinja",
);
badCase(
  "chat_template.json without a template",
  (dir) => {
    const file = join(dir, "tokenizer_config.json");
    const { chat_template: _, ...cfg } = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
    writeFileSync(file, JSON.stringify(cfg));
    writeFileSync(join(dir, "chat_template.json"), JSON.stringify({ template: "x" }));
  },
  "BAD_TOKENIZER",
  "chat_template.json",
);

test("chat templates are found where transformers looks: chat_template.jinja first, then the config, then chat_template.json", async (t) => {
  const dir = join(tempDir(t), "m");
  await makeModel({ arch: "llama", dtype: "f32", seed: 1, out: dir });
  const cfgFile = join(dir, "tokenizer_config.json");
  const msgs = [{ role: "user" as const, content: "hi" }];
  const render = () => {
    const model = loadModel(dir);
    try {
      return model.tokenizer.hasChatTemplate ? model.tokenizer.applyChatTemplate(msgs) : undefined;
    } finally {
      model.close();
    }
  };
  const fromConfig = render();
  assert.ok(fromConfig?.includes("<|im_start|>user\nhi"), fromConfig);

  // A saved chat_template.jinja wins over tokenizer_config.json's (transformers >= 4.50 saves it).
  writeFileSync(join(dir, "chat_template.jinja"), "{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}");
  assert.equal(render(), "[user] hi");
  rmSync(join(dir, "chat_template.jinja"));
  assert.equal(render(), fromConfig);

  // Without either, a processor's chat_template.json; without any, no template.
  const { chat_template: _, ...cfg } = JSON.parse(readFileSync(cfgFile, "utf8")) as Record<string, unknown>;
  writeFileSync(cfgFile, JSON.stringify(cfg));
  assert.equal(render(), undefined);
  writeFileSync(join(dir, "chat_template.json"), JSON.stringify({ chat_template: "<{{ messages[0].content }}>" }));
  assert.equal(render(), "<hi>");
});

test("a chat template that raises is a ChatTemplateError naming its file; `hire chat` says so and goes on", async (t) => {
  const dir = join(tempDir(t), "m");
  await makeModel({ arch: "llama", dtype: "f32", seed: 1, out: dir });
  writeFileSync(join(dir, "chat_template.jinja"), NO_SYSTEM_TEMPLATE);
  const model = loadModel(dir);
  try {
    const user = { role: "user" as const, content: "hi" };
    assert.equal(model.tokenizer.applyChatTemplate([user]), "<user>hi");
    assert.throws(
      () => model.tokenizer.applyChatTemplate([{ role: "system", content: "be brief" }, user]),
      (e: unknown) =>
        e instanceof ChatTemplateError &&
        e.file === join(dir, "chat_template.jinja") &&
        /refused this conversation: System role not supported/.test(e.message) &&
        errorInfo(e).code === "CHAT_TEMPLATE",
    );
  } finally {
    model.close();
  }
  // Every turn is refused with --system; the chat reports each and still ends normally on /exit.
  const r = hire(["chat", "--model", dir, "--system", "be brief", "--max-tokens", "2"], "hi\nagain\n/exit\n");
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.match(/refused this conversation: System role not supported/g)?.length, 2, r.stderr);
});

test("NaN in the weights: a reply stops at its first token with NOT_FINITE instead of decoding token 0", async (t) => {
  const dir = join(tempDir(t), "nan");
  await makeModel({ arch: "llama", dtype: "f32", seed: 1, out: dir });
  const file = join(dir, ST);
  const h = readHeader(file);
  const [begin, end] = (h.json["model.norm.weight"] as { data_offsets: [number, number] }).data_offsets;
  const buf = readFileSync(file);
  for (let at = 8 + h.length + begin; at < 8 + h.length + end; at += 4) buf.writeFloatLE(NaN, at);
  writeFileSync(file, buf);
  const model = loadModel(dir); // the file itself is well formed
  try {
    for (const temperature of [0, 0.8]) {
      const session = new Session(model);
      await assert.rejects(
        async () => {
          for await (const _ of session.generate("hi", { maxTokens: 3, temperature, seed: 1 }));
        },
        (e: unknown) => e instanceof ModelError && e.code === "NOT_FINITE" && /logits .* are NaN/.test(e.message),
      );
    }
  } finally {
    model.close();
  }
  const r = hire(["generate", "--model", dir, "--prompt", "hi", "--max-tokens", "2"]);
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /NaN or inf/);
});

test("bad input: a file instead of a folder", (t) => {
  const file = join(tempDir(t), "not-a-dir");
  writeFileSync(file, "x");
  assert.throws(
    () => loadModel(file),
    (e: unknown) => e instanceof ModelError && e.code === "NOT_A_DIRECTORY",
  );
});

test("row views of a fused tensor (Phi-3's gate_up_proj) are its rows, no copy, and bounds are checked", async (t) => {
  const dir = join(tempDir(t), "phi3");
  await makeModel({ arch: "phi3", dtype: "f32", seed: 5, out: dir });
  const store = WeightStore.open(dir);
  t.after(() => store.close());
  const name = "model.layers.1.mlp.gate_up_proj.weight";
  const full = store.get(name, [256, 64]);
  const up = store.getRows(name, [256, 64], 128, 128);
  assert.equal(up.name, `${name}[128:256]`);
  assert.deepEqual([up.rows, up.cols, up.byteLength, up.offset], [128, 64, 128 * 64 * 4, full.offset + 128 * 64 * 4]);
  // The view's products are the full matrix's rows 128..255.
  const hn = native();
  const x = Float32Array.from({ length: 64 }, (_, i) => Math.sin(i));
  const yFull = new Float32Array(256);
  const yUp = new Float32Array(128);
  hn.matmul(yFull, x, full.handle, 1, null);
  hn.matmul(yUp, x, up.handle, 1, null);
  assert.deepEqual(yUp, yFull.subarray(128));
  assert.throws(() => store.getRows(name, [256, 64], 200, 100), /rows 200\.\.300 are outside its 256 rows/);
  assert.throws(
    () => store.getRows(name, [128, 64], 0, 64),
    (e) => e instanceof ModelError && e.code === "SHAPE_MISMATCH",
  );
});
