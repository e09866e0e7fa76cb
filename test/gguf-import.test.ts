// Importing GGUF files (core/gguf/import.ts): models exported to GGUF come back bit for bit and
// decode the same; tokenizers come back encoding every text the same (and as llama.cpp encodes the
// file); Llama 3's rope_freqs comes back as its rope_scaling; every quantized type dequantizes to
// the values gguf-py (llama.cpp's Python package) gives for a file llama-quantize wrote, and that
// file's model decodes as llama.cpp decodes it; bad files are typed errors that leave nothing behind.
// Run: npx tsc -p tsconfig.json && node --test dist/test/gguf-import.test.js
import { after, test } from "node:test";
import assert from "node:assert/strict";
import {
  cpSync,
  mkdirSync,
  copyFileSync,
  existsSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  truncateSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { moveIntoPlace } from "../core/loader/file-io.js";
import { hire, putInHubCache, REPO_ROOT, tempDir } from "./helpers.js";
import { findModelFolder, listCachedModels, modelName } from "../core/loader/hf-cache.js";
import { compareSteps, llamaCppSteps, ourGreedy } from "./llamacpp-helpers.js";
import { loadModel, resolveWeights, type LoadedModel } from "../core/loader/model-folder.js";
import { ModelError } from "../core/loader/errors.js";
import { makeModel } from "../core/modelgen/make-model.js";
import { exportGguf, permuteRotary, qkvBlocks } from "../core/gguf/export.js";
import {
  headGroups,
  importGguf,
  importRecord,
  readGguf,
  unpermuteRotary,
  unpermutedRowOrder,
} from "../core/gguf/import.js";
import type { Weight } from "../core/loader/safetensors.js";
import { modelFolderFor } from "../core/loader/model-source.js";
import { Session } from "../core/engine/session.js";
import type { SparsitySettings } from "../core/sparse/settings.js";
import { GgmlTypeId, dequantize, ggmlTypeName } from "../core/gguf/quants.js";
import { GgmlType, GgufFileWriter, kv, type GgufValue } from "../core/gguf/writer.js";
import { TokenType } from "../core/gguf/vocab.js";
import { native, NativeDType, type NativeWeight } from "../core/native/addon.js";
import { f16ToF32, f32ToF16 } from "../core/modelgen/safetensors-writer.js";
import { loadLlamaCpp, openLlamaCppPeer, type NlcLlama } from "../core/peers/llamacpp.js";

const FIXTURES = join(REPO_ROOT, "test", "gguf");
const QUANTS = join(FIXTURES, "tiny-llama-quants.gguf");

const llamaCpp = await loadLlamaCpp(2);
const noLlama = "skipped" in llamaCpp ? llamaCpp.skipped : false;
after(async () => {
  if ("llama" in llamaCpp) await llamaCpp.llama.dispose();
});

/** llama.cpp's token ids for each text of a GGUF file's vocabulary (`special`: special tokens written in the text count). */
async function llamaCppTokenize(file: string, texts: readonly string[], special: boolean): Promise<number[][]> {
  const model = (await (llamaCpp as { llama: NlcLlama }).llama.loadModel({
    modelPath: file,
    gpuLayers: 0,
  })) as unknown as {
    tokenize(text: string, special: boolean): number[];
    dispose(): Promise<void>;
  };
  try {
    return texts.map((text) => model.tokenize(text, special));
  } finally {
    await model.dispose();
  }
}

function bytesOf(model: LoadedModel, name: string): Buffer {
  const t = model.store.info(name);
  return readFileSync(t.file).subarray(t.offset, t.offset + t.byteLength);
}

/** The make-model architectures whose GGUF export and import are both written. */
type RoundTripArch = (typeof ROUND_TRIP_ARCHS)[number];
const ROUND_TRIP_ARCHS = [
  "llama",
  "qwen2",
  "qwen3",
  "gemma",
  "gemma2",
  "gemma3",
  "smollm3",
  "olmo2",
  "stablelm",
  "starcoder2",
  "phi",
  "ernie",
  "glm4",
  "exaone4",
  "gpt2",
  "gptneox",
  "granite",
  "granitemoe",
  "erniemoe",
  "cohere",
  "cohere2",
  "phi3",
  "mixtral",
  "qwen2moe",
  "qwen3moe",
  "olmoe",
] as const;

/** A model exported to GGUF and imported back, with both loaded. */
async function roundTrip(
  t: { after: (fn: () => void) => void },
  arch: RoundTripArch,
  opts: { dtype?: "f32" | "f16" | "bf16"; shape?: Record<string, unknown>; edit?: (dir: string) => void } = {},
) {
  const dir = tempDir(t);
  const made = await makeModel({ arch, dtype: "bf16", seed: 3, out: join(dir, "model"), shape: opts.shape });
  opts.edit?.(made.dir);
  const source = loadModel(made.dir);
  t.after(() => source.close());
  const file = join(dir, `${arch}.gguf`);
  await exportGguf(source, file, { dtype: opts.dtype ?? "bf16" });
  const result = await importGguf(file, join(dir, "imported"));
  const imported = loadModel(result.dir);
  t.after(() => imported.close());
  return { source, imported, result, file };
}

const TEXTS = [
  "The quick brown fox jumps over the lazy dog.",
  "  leading spaces, trailing\n\nnewlines\t and tabs  ",
  "Numbers 1234567 and 3.14159, prices $12.50!",
  "Ünïcödé: naïve café — 日本語のテキスト 🙂",
  "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n",
  "don't won't I'll they're WE'VE",
];

test("unpermuteRotary undoes export's permuteRotary (llama.cpp's interleaved pairs → rotate-half)", () => {
  const heads = 3;
  const headDim = 8;
  const cols = 5;
  const src = Float32Array.from({ length: heads * headDim * cols }, (_, i) => i * 0.5 - 7);
  const bytes = new Uint8Array(src.buffer.slice(0));
  const permuted = permuteRotary(bytes, heads, headDim, headDim, cols * 4);
  const back = unpermuteRotary(permuted, heads, headDim, cols * 4);
  assert.deepEqual(new Float32Array(back.buffer), src);
  // And the permutation is not the identity: row 1 of a head is its row headDim/2 in llama.cpp's order.
  assert.equal(new Float32Array(permuted.buffer)[1 * cols], src[(headDim / 2) * cols]);
});

/** Shapes whose settings llama.cpp's fixed choices express (Gemma 3: a global layer every 6th). */
const ROUND_TRIP_SHAPES: Partial<Record<RoundTripArch, Record<string, unknown>>> = {
  gemma3: { layers: 6, slidingPattern: 6, slidingWindow: 8 },
};

/**
 * Config changes that keep our exporter from folding a multiplier into the weights (Granite's
 * residual and logit scales, Cohere's logit scale: written as 1, the scale carried by the final
 * norm), so that the round trip can be bit for bit; and EXAONE 4.0 and StarCoder 2 without
 * windows, which is what llama.cpp runs for them. Real files carry the scales as metadata, which the
 * import reads.
 */
const ROUND_TRIP_CONFIG: Partial<Record<RoundTripArch, Record<string, unknown>>> = {
  granite: { residual_multiplier: 1, logits_scaling: 1 },
  granitemoe: { residual_multiplier: 1, logits_scaling: 1 },
  cohere: { logit_scale: 1 },
  cohere2: { logit_scale: 1 },
  exaone4: { sliding_window: null, layer_types: null, sliding_window_pattern: null },
  starcoder2: { sliding_window: null },
};

test("headGroups undoes export's qkvBlocks (GPT-NeoX's q/k/v head by head)", () => {
  const heads = 3;
  const rows = 3 * heads * 4; // headDim 4
  const src = Uint8Array.from({ length: rows * 2 }, (_, i) => i % 251);
  assert.deepEqual(headGroups(qkvBlocks(src, heads, 4, 2), heads), src);
  assert.notDeepEqual(qkvBlocks(src, heads, 4, 2), src);
});

for (const arch of ROUND_TRIP_ARCHS) {
  const shape = ROUND_TRIP_SHAPES[arch];
  test(`${arch}: exported to bf16 GGUF and imported, every tensor and the decode are the same`, async (t) => {
    const change = ROUND_TRIP_CONFIG[arch];
    const edit = change && ((dir: string) => editConfig(dir, change));
    const { source, imported, result } = await roundTrip(t, arch, { shape, edit });
    assert.equal(result.architecture, source.config.architecture);
    assert.equal(result.dtype, "BF16");
    assert.deepEqual(Object.keys(result.sourceTypes).sort(), ["BF16", "F32"]); // matrices, and 1-D tensors
    const c = source.config;
    const d = imported.config;
    for (const k of [
      "hidden",
      "layers",
      "heads",
      "kvHeads",
      "headDim",
      "intermediate",
      "vocab",
      "normEps",
      "tiedEmbeddings",
      "activation",
      "attentionScale",
      "attentionWindows",
      "ropeLayers",
      "ropeFactor",
      "ropeInterleaved",
      "localRopeInvFreq",
      "norm",
      "gatedFfn",
      "parallelBlocks",
      "embedScale",
      "finalNormScale",
      "attentionBias",
      "attentionSoftcap",
      "finalSoftcap",
    ] as const) {
      assert.deepEqual(d[k], c[k], `config ${k}`);
    }
    // A mixture's dense FFN width is not in GGUF (feed_forward_length is an expert's); with a mixture in
    // every layer nothing reads it.
    assert.deepEqual(d.moe && { ...d.moe, denseIntermediate: 0 }, c.moe && { ...c.moe, denseIntermediate: 0 });
    assert.deepEqual(d.ropeInvFreq && Array.from(d.ropeInvFreq), c.ropeInvFreq && Array.from(c.ropeInvFreq));
    // The same tensors, byte for byte (norms went to F32 in the GGUF and back to bf16 exactly), but
    // Gemma's norms: stored as 1 + w in f32, a |w| below 2^-16 comes back within f32's 2^-24 of 1.
    const names = [...source.store.tensors.keys()].sort();
    assert.deepEqual([...imported.store.tensors.keys()].sort(), names);
    const gemma = arch.startsWith("gemma");
    for (const name of names) {
      const [x, y] = [bytesOf(source, name), bytesOf(imported, name)];
      if (gemma && name.endsWith("norm.weight")) {
        const [u, v] = [bf16Values(x), bf16Values(y)];
        u.forEach((a, i) => assert.ok(Math.abs(a - v[i]) <= 2 ** -24, `${name}[${i}]: ${v[i]} vs ${a}`));
      } else {
        assert.ok(x.equals(y), `${name} differs`);
      }
    }
    // And the tokenizer and end-of-generation ids.
    for (const text of TEXTS) {
      assert.deepEqual(imported.tokenizer.encode(text), source.tokenizer.encode(text), JSON.stringify(text));
    }
    assert.deepEqual([...imported.eosIds].sort(), [...source.eosIds].sort());
    assert.equal(imported.tokenizer.templateSource, source.tokenizer.templateSource);
    const prompt = source.tokenizer.encode("The quick brown fox jumps over the lazy dog");
    const a = await ourGreedy(source, prompt, 8);
    const b = await ourGreedy(imported, prompt, 8);
    if (!gemma) assert.deepEqual(b.steps, a.steps);
    else compareSteps(arch, a.steps, b.steps.map(asReference), 1e-4);
  });
}

function editConfig(dir: string, change: Record<string, unknown>): void {
  const file = join(dir, "config.json");
  writeFileSync(file, JSON.stringify({ ...JSON.parse(readFileSync(file, "utf8")), ...change }));
}

/**
 * `imported` gives the golden reference's greedy ids on its prompt, and the log-probabilities our
 * engine gives on the golden folder itself (`source`) within 1e-4.
 */
async function decodesAsGolden(label: string, golden: string, imported: LoadedModel, source: LoadedModel) {
  const exp = JSON.parse(readFileSync(join(golden, "expected.json"), "utf8")) as {
    prompt_ids: number[];
    ids: number[];
  };
  const ours = await ourGreedy(imported, exp.prompt_ids, exp.ids.length);
  assert.deepEqual(ours.ids, exp.ids, label);
  const want = await ourGreedy(source, exp.prompt_ids, exp.ids.length);
  compareSteps(label, want.steps, ours.steps.map(asReference), 1e-4);
}

/** Our top-5 steps in the shape compareSteps takes as the reference side. */
function asReference(top: [number, number][]): { argmax: number; logprob: (id: number) => number } {
  const m = new Map(top);
  return { argmax: top[0][0], logprob: (id) => m.get(id) ?? -Infinity };
}

function bf16Values(b: Buffer): Float32Array {
  const u16 = new Uint16Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  return new Float32Array(Uint32Array.from(u16, (h) => h << 16).buffer);
}

test("Granite's and Command-R's scales in the metadata, as llama.cpp's converter writes them, become their config multipliers", async (t) => {
  const cases: [RoundTripArch, [string, number][], Record<string, unknown>][] = [
    [
      "granite",
      [
        ["granite.residual_scale", 0.22],
        ["granite.logit_scale", 8],
      ],
      { residual_multiplier: 0.22, logits_scaling: 8 },
    ],
    ["cohere", [["command-r.logit_scale", 0.0625]], { logit_scale: 0.0625 }],
  ];
  for (const [arch, keys, change] of cases) {
    // Exported with the scales at 1 (nothing folded into the weights), then given the real ones.
    const { source, file } = await roundTrip(t, arch, { edit: (dir) => editConfig(dir, ROUND_TRIP_CONFIG[arch]!) });
    const scaled = join(tempDir(t), `${arch}-scaled.gguf`);
    await rewriteGguf(file, scaled, { set: keys.map(([k, v]): [string, GgufValue] => [k, kv.f32(v)]) });
    const imported = loadModel((await importGguf(scaled, join(tempDir(t), `${arch}-imported`))).dir);
    const referenceDir = join(tempDir(t), `${arch}-reference`);
    cpSync(source.dir, referenceDir, { recursive: true });
    editConfig(referenceDir, change);
    const reference = loadModel(referenceDir);
    t.after(() => (imported.close(), reference.close()));
    const prompt = source.tokenizer.encode("The quick brown fox");
    const want = await ourGreedy(reference, prompt, 6);
    assert.notDeepEqual(
      want.steps,
      (await ourGreedy(source, prompt, 6)).steps,
      `${arch}: the scales change the output`,
    );
    assert.deepEqual((await ourGreedy(imported, prompt, 6)).steps, want.steps, arch);
  }
});

test("the sampling defaults a GGUF file carries (general.sampling.*) become the model's generation defaults", async (t) => {
  const { file } = await roundTrip(t, "qwen3");
  const withSampling = join(tempDir(t), "sampling.gguf");
  await rewriteGguf(file, withSampling, {
    set: [
      ["general.sampling.temp", kv.f32(0.6)],
      ["general.sampling.top_k", kv.i32(20)],
      ["general.sampling.top_p", kv.f32(0.95)],
      ["general.sampling.min_p", kv.f32(0)],
    ],
  });
  const model = loadModel((await importGguf(withSampling, join(tempDir(t), "imported"))).dir);
  t.after(() => model.close());
  assert.deepEqual(model.generationDefaults, {
    temperature: 0.6,
    topK: 20,
    topP: 0.95,
    minP: 0,
    repetitionPenalty: undefined,
    maxNewTokens: undefined,
  });
  const plain = (await importGguf(file, join(tempDir(t), "plain"))).dir;
  assert.ok(!existsSync(join(plain, "generation_config.json")), "none without general.sampling.*");
});

test("GraniteMoeShared (the golden): its shared expert and stacked experts come back as transformers keeps them", async (t) => {
  const dir = join(tempDir(t), "granitemoe");
  cpSync(join(REPO_ROOT, "test", "golden", "granitemoe-bf16"), dir, { recursive: true });
  editConfig(dir, ROUND_TRIP_CONFIG.granitemoe!);
  const source = loadModel(dir);
  const file = join(dir, "m.gguf");
  await exportGguf(source, file, { dtype: "bf16" });
  const result = await importGguf(file, join(tempDir(t), "imported"));
  const imported = loadModel(result.dir);
  t.after(() => (source.close(), imported.close()));
  assert.equal(result.architecture, "GraniteMoeSharedForCausalLM");
  const names = [...source.store.tensors.keys()].sort();
  assert.deepEqual([...imported.store.tensors.keys()].sort(), names);
  assert.ok(names.some((n) => n.endsWith("shared_mlp.input_linear.weight")));
  for (const name of names) assert.ok(bytesOf(source, name).equals(bytesOf(imported, name)), `${name} differs`);
  assert.deepEqual(imported.config.moe, source.config.moe);
  const prompt = source.tokenizer.encode("The quick brown fox");
  assert.deepEqual((await ourGreedy(imported, prompt, 6)).steps, (await ourGreedy(source, prompt, 6)).steps);
});

test("ERNIE 4.5 MoE (the golden: a dense first layer, f32 router and correction bias) decodes as the reference", async (t) => {
  const golden = join(REPO_ROOT, "test", "golden", "erniemoe-bf16");
  const source = loadModel(golden);
  const file = join(tempDir(t), "erniemoe.gguf");
  await exportGguf(source, file, { dtype: "f32" }); // the router stays f32
  const imported = loadModel((await importGguf(file, join(tempDir(t), "imported"))).dir);
  t.after(() => (source.close(), imported.close()));
  assert.deepEqual(imported.config.moe, source.config.moe);
  assert.deepEqual(imported.config.moe!.layers, [false, true, true]);
  await decodesAsGolden("erniemoe", golden, imported, source);
});

test("llama exported to f32 GGUF imports as f32 with the bf16 values", async (t) => {
  const { source, imported, result } = await roundTrip(t, "llama", { dtype: "f32" });
  assert.equal(result.dtype, "F32");
  const name = "model.layers.1.self_attn.k_proj.weight";
  const bf16 = new Uint16Array(new Uint8Array(bytesOf(source, name)).buffer);
  const f32 = new Uint32Array(new Uint8Array(bytesOf(imported, name)).buffer);
  assert.equal(f32.length, bf16.length);
  for (let i = 0; i < f32.length; i++) assert.equal(f32[i], (bf16[i] << 16) >>> 0, `value ${i}`);
  const prompt = source.tokenizer.encode("over the lazy dog");
  assert.deepEqual((await ourGreedy(imported, prompt, 6)).ids, (await ourGreedy(source, prompt, 6)).ids);
});

test("Llama 3's rope_freqs tensor imports as its rope_scaling", async (t) => {
  const ropeScaling = {
    rope_type: "llama3",
    factor: 32,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 8192,
  };
  const { source, imported } = await roundTrip(t, "llama", {
    shape: { ropeTheta: 500000, maxPositions: 131072, ropeScaling, headDim: 64, heads: 4, kvHeads: 2, hidden: 256 },
  });
  const config = JSON.parse(readFileSync(join(imported.dir, "config.json"), "utf8")) as Record<string, unknown>;
  assert.deepEqual(config.rope_scaling, ropeScaling);
  const a = Array.from(source.config.ropeInvFreq!);
  const b = Array.from(imported.config.ropeInvFreq!);
  b.forEach((x, i) => assert.ok(Math.abs(x - a[i]) <= 1e-7 * a[i], `inverse frequency ${i}: ${x} vs ${a[i]}`));
  assert.ok(
    a.some((x, i) => x !== 500000 ** ((-2 * i) / 64)),
    "the scaling changes some frequencies",
  );
});

/** Rewrites a make-model tokenizer.json's pre-tokenizer into Llama 3's or Qwen2's (regex split, then bytes). */
function usePreTokenizer(dir: string, regex: string, ignoreMerges: boolean): void {
  const file = join(dir, "tokenizer.json");
  const json = JSON.parse(readFileSync(file, "utf8")) as Record<string, Record<string, unknown>>;
  json.pre_tokenizer = {
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: regex }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  };
  json.model.ignore_merges = ignoreMerges;
  writeFileSync(file, JSON.stringify(json));
}

const LLAMA3_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const QWEN2_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

for (const [pre, regex, ignoreMerges] of [
  ["llama-bpe", LLAMA3_REGEX, true],
  ["qwen2", QWEN2_REGEX, false],
] as const) {
  test(`a ${pre} tokenizer imports encoding every text as tokenizer.json does, and as llama.cpp does`, async (t) => {
    const { source, imported, file } = await roundTrip(t, "llama", {
      edit: (dir) => usePreTokenizer(dir, regex, ignoreMerges),
    });
    const meta = (await readGguf(file)).metadata;
    assert.equal(meta["tokenizer.ggml.pre"], pre);
    const json = JSON.parse(readFileSync(join(imported.dir, "tokenizer.json"), "utf8")) as Record<
      string,
      Record<string, unknown>
    >;
    assert.equal(json.model.ignore_merges, ignoreMerges);
    for (const text of TEXTS) {
      const ids = source.tokenizer.encode(text, false);
      assert.deepEqual(imported.tokenizer.encode(text, false), ids, JSON.stringify(text));
      assert.equal(imported.tokenizer.decode(ids, false), source.tokenizer.decode(ids, false));
    }
    if (noLlama || !("llama" in llamaCpp)) return t.skip(String(noLlama));
    const theirs = await llamaCppTokenize(file, TEXTS, true);
    TEXTS.forEach((text, i) =>
      assert.deepEqual(imported.tokenizer.encode(text, false), theirs[i], `llama.cpp: ${JSON.stringify(text)}`),
    );
  });
}

/**
 * A SentencePiece vocabulary of exactly `size` tokens, as llama.cpp's converter writes Llama 2's:
 * <unk>, <s>, </s>, the 256 byte tokens, then the characters of `text`'s words ("▁" for the space
 * before each), their two- and three-character pieces and whole words, scored in a scrambled order so
 * that which merges apply first decides how a word splits.
 */
function sentencePieceVocab(size: number, text: string): { tokens: string[]; types: number[]; scores: number[] } {
  const tokens = ["<unk>", "<s>", "</s>"];
  const types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL];
  for (let b = 0; b < 256; b++) {
    tokens.push(`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`);
    types.push(TokenType.BYTE);
  }
  const pieces: string[] = [];
  const add = (p: string) => {
    if (!pieces.includes(p) && tokens.length + pieces.length < size) pieces.push(p);
  };
  const words = text
    .split(/\s+/)
    .filter((w) => w !== "")
    .map((w) => `▁${w}`);
  for (const w of words) for (const c of w) add(c);
  for (const k of [2, 3]) for (const w of words) for (let i = 0; i + k <= w.length; i++) add(w.slice(i, i + k));
  for (const w of words) add(w);
  for (let i = 0; tokens.length + pieces.length < size; i++) add(`▁pad${i}`);
  const scores = [...tokens.map(() => 0), ...pieces.map((_, i) => -((i * 7919) % pieces.length))];
  return { tokens: [...tokens, ...pieces], types: [...types, ...pieces.map(() => TokenType.NORMAL)], scores };
}

/**
 * `src` (a GGUF file) rewritten: its metadata but the keys `drop` matches, then `set`; its tensors,
 * then `extra` ones (F32).
 */
async function rewriteGguf(
  src: string,
  out: string,
  opts: { drop?: RegExp; set?: [string, GgufValue][]; extra?: { name: string; data: Float32Array }[] },
): Promise<void> {
  const g = await readGguf(src);
  const keys = new Map<string, GgufValue>();
  for (const [k, v] of Object.entries(g.metadata)) {
    if (opts.drop?.test(k) || ["version", "tensor_count", "kv_count"].includes(k)) continue;
    if (typeof v === "string") keys.set(k, kv.str(v));
    else if (typeof v === "boolean") keys.set(k, kv.bool(v));
    else if (typeof v === "number") keys.set(k, /epsilon|freq_base|scale|factor/.test(k) ? kv.f32(v) : kv.u32(v));
    else if (Array.isArray(v) && v.every((x) => typeof x === "string")) keys.set(k, kv.strings(v as string[]));
    else if (Array.isArray(v)) keys.set(k, k.endsWith("scores") ? kv.f32s(v.map(Number)) : kv.i32s(v.map(Number)));
  }
  for (const [k, v] of opts.set ?? []) keys.set(k, v);
  const extra = opts.extra ?? [];
  const w = await GgufFileWriter.open(out, keys, [
    ...g.tensors.map((t) => ({ name: t.name, type: t.type as unknown as GgmlType, dims: t.dims })),
    ...extra.map((e) => ({ name: e.name, type: GgmlType.F32, dims: [e.data.length] })),
  ]);
  const bytes = readFileSync(src);
  for (const t of g.tensors) await w.write(bytes.subarray(t.offset, t.offset + t.byteLength));
  for (const e of extra) await w.write(new Uint8Array(e.data.buffer, e.data.byteOffset, e.data.byteLength));
  await w.close();
}

/** `src` with its tokenizer.* keys replaced by `vocab`. */
const withVocab = (src: string, out: string, vocab: [string, GgufValue][]) =>
  rewriteGguf(src, out, { drop: /^tokenizer\./, set: vocab });

test("Phi-3's longrope (rope_factors_long / _short, attn_factor) imports as its rope_scaling and decodes as the reference", async (t) => {
  // The golden Phi-3 has longrope, which our exporter refuses: export it without, then add what
  // llama.cpp's converter writes for it.
  const dir = join(tempDir(t), "phi3");
  cpSync(join(REPO_ROOT, "test", "golden", "phi3-bf16"), dir, { recursive: true });
  const golden = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
  const scaling = golden.rope_scaling as { long_factor: number[]; short_factor: number[] };
  writeFileSync(
    join(dir, "config.json"),
    JSON.stringify({ ...golden, rope_scaling: null, max_position_embeddings: golden.original_max_position_embeddings }),
  );
  const plain = loadModel(dir);
  const plainFile = join(dir, "plain.gguf");
  await exportGguf(plain, plainFile, { dtype: "f32" });
  plain.close();
  const max = golden.max_position_embeddings as number;
  const orig = golden.original_max_position_embeddings as number;
  const file = join(dir, "longrope.gguf");
  await rewriteGguf(plainFile, file, {
    set: [
      ["phi3.context_length", kv.u32(max)],
      ["phi3.rope.scaling.original_context_length", kv.u32(orig)],
      ["phi3.rope.scaling.attn_factor", kv.f32(Math.sqrt(1 + Math.log(max / orig) / Math.log(orig)))],
    ],
    extra: [
      { name: "rope_factors_long.weight", data: Float32Array.from(scaling.long_factor) },
      { name: "rope_factors_short.weight", data: Float32Array.from(scaling.short_factor) },
    ],
  });
  const result = await importGguf(file, join(tempDir(t), "imported"));
  const config = JSON.parse(readFileSync(join(result.dir, "config.json"), "utf8")) as Record<string, unknown>;
  const got = config.rope_scaling as { rope_type: string; long_factor: number[]; short_factor: number[] };
  assert.equal(got.rope_type, "longrope");
  assert.deepEqual(got.long_factor, scaling.long_factor); // the shortest decimals that round to the file's f32
  assert.deepEqual(got.short_factor, scaling.short_factor);
  const reference = loadModel(join(REPO_ROOT, "test", "golden", "phi3-bf16"));
  const imported = loadModel(result.dir);
  t.after(() => (reference.close(), imported.close()));
  assert.deepEqual(Array.from(imported.config.ropeInvFreq!), Array.from(reference.config.ropeInvFreq!));
  assert.equal(imported.config.ropeFactor, reference.config.ropeFactor);
  await decodesAsGolden("phi3 longrope", join(REPO_ROOT, "test", "golden", "phi3-bf16"), imported, reference);
});

test("a SentencePiece vocabulary imports encoding every text as llama.cpp does, and the model decodes as llama.cpp's", async (t) => {
  const { source, file } = await roundTrip(t, "llama", { dtype: "f32" });
  const v = sentencePieceVocab(source.config.vocab, TEXTS.join(" ") + " the quick brown fox jumps over lazy dog");
  const spm = join(tempDir(t), "spm.gguf");
  await withVocab(file, spm, [
    ["tokenizer.ggml.model", kv.str("llama")],
    ["tokenizer.ggml.tokens", kv.strings(v.tokens)],
    ["tokenizer.ggml.scores", kv.f32s(v.scores)],
    ["tokenizer.ggml.token_type", kv.i32s(v.types)],
    ["tokenizer.ggml.bos_token_id", kv.u32(1)],
    ["tokenizer.ggml.eos_token_id", kv.u32(2)],
    ["tokenizer.ggml.unknown_token_id", kv.u32(0)],
  ]);
  const result = await importGguf(spm, join(tempDir(t), "imported"));
  const model = loadModel(result.dir);
  t.after(() => model.close());
  assert.deepEqual([...model.eosIds], [2]);
  // The pieces are used, not only bytes.
  assert.ok(model.tokenizer.encode("the quick brown fox", false).length < 12);
  assert.equal(model.tokenizer.encode("quick")[0], 1, "BOS first by default");
  for (const text of TEXTS) {
    const ids = model.tokenizer.encode(text, false);
    assert.equal(model.tokenizer.decode(ids, false), text, `decode ∘ encode: ${JSON.stringify(text)}`);
  }
  if (!("llama" in llamaCpp)) return t.skip(String(noLlama));
  const theirs = await llamaCppTokenize(spm, TEXTS, false);
  TEXTS.forEach((text, i) =>
    assert.deepEqual(model.tokenizer.encode(text, false), theirs[i], `llama.cpp: ${JSON.stringify(text)}`),
  );
  const prompt = model.tokenizer.encode("the quick brown fox");
  const ours = await ourGreedy(model, prompt, 6);
  compareSteps("spm", ours.steps, await llamaCppSteps(llamaCpp.llama, spm, prompt, ours.ids), 1e-3);
});

/** More texts that tell pre-tokenizers apart: digit runs, CJK, case changes, contractions, code. */
const SPLIT_TEXTS = [
  ...TEXTS,
  "1234567890 12 345",
  "中文字符和日本語のひらがなカタカナ混在",
  "HelloWorld camelCase XMLHttpRequest I'M HERE",
  "def f(x):\n    return x**2 // 3  # note",
  "a\r\nb\n\n\nc   d",
  "x.constructor = __proto__.toString",
];

/**
 * A byte-level vocabulary of `size` tokens whose merges cross the boundaries pre-tokenizers disagree
 * on (digit runs, a space before digits, case changes inside a word, contractions, CJK next to Latin,
 * runs of newlines and spaces), so that splitting text differently tokenizes it differently.
 * `bytes[b]` is byte b's symbol (GPT-2's bytes_to_unicode, as the exported vocabulary's first 256).
 */
function crossingVocab(bytes: string[], size: number, specials: string[]) {
  const sym = (text: string) => Array.from(new TextEncoder().encode(text), (b) => bytes[b]).join("");
  const tokens = [...bytes];
  const merges: string[] = [];
  const known = new Set(tokens);
  const make = (text: string): string => {
    const parts = Array.from(text);
    let left = sym(parts[0]);
    // A character of several bytes is built byte by byte first.
    if (!known.has(left)) {
      const b = Array.from(left);
      let acc = b[0];
      for (const c of b.slice(1)) acc = merge(acc, c);
      left = acc;
    }
    for (const ch of parts.slice(1)) left = merge(left, make(ch));
    return left;
  };
  const merge = (l: string, r: string): string => {
    const m = l + r;
    if (!known.has(m)) {
      known.add(m);
      tokens.push(m);
      merges.push(`${l} ${r}`);
    }
    return m;
  };
  for (const w of ["123", "456", "789", "34", "56", "67", "90", " 1", " 3", "12345"]) make(w);
  for (const w of ["oW", "lW", "pR", "tH", "HelloWorld", "'M", "'m", "I'", "don", "'t"]) make(w);
  for (const w of ["中文", "a中", "日本", "本語", "のひ"]) make(w);
  for (const w of ["\n\n", "\n\n\n", "  ", "   ", "\r\n", " \n", "  d"]) make(w);
  // Tokens that are names of Object.prototype's properties must be vocabulary entries like any other.
  for (const w of ["constructor", "__proto__", "toString"]) make(w);
  const types = tokens.map(() => TokenType.NORMAL);
  while (tokens.length < size - specials.length) {
    tokens.push(`[PAD${tokens.length}]`);
    types.push(TokenType.UNUSED);
  }
  for (const sp of specials) {
    tokens.push(sp);
    types.push(TokenType.CONTROL);
  }
  return { tokens, types, merges };
}

test(
  "tokenizer.ggml.pre names: the import splits text as llama.cpp does for each, and they split differently",
  { skip: noLlama },
  async (t) => {
    const { source, file } = await roundTrip(t, "llama", { dtype: "f32" });
    const meta = (await readGguf(file)).metadata;
    const exported = meta["tokenizer.ggml.tokens"] as string[];
    const specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
    const v = crossingVocab(exported.slice(0, 256), source.config.vocab, specials);
    assert.equal(v.tokens.length, source.config.vocab);
    assert.ok(v.merges.length > 40, `${v.merges.length} merges`);
    const seen = new Map<string, string>();
    for (const pre of ["gpt-2", "llama-bpe", "qwen2", "smollm", "tekken", "gpt-4o", "deepseek-v3"]) {
      const renamed = join(tempDir(t), `${pre}.gguf`);
      await withVocab(file, renamed, [
        ["tokenizer.ggml.model", kv.str("gpt2")],
        ["tokenizer.ggml.pre", kv.str(pre)],
        ["tokenizer.ggml.tokens", kv.strings(v.tokens)],
        ["tokenizer.ggml.token_type", kv.i32s(v.types)],
        ["tokenizer.ggml.merges", kv.strings(v.merges)],
        ["tokenizer.ggml.bos_token_id", kv.u32(v.tokens.indexOf("<|endoftext|>"))],
        ["tokenizer.ggml.eos_token_id", kv.u32(v.tokens.indexOf("<|im_end|>"))],
      ]);
      const result = await importGguf(renamed, join(tempDir(t), `imported-${pre}`));
      const model = loadModel(result.dir);
      const ours = SPLIT_TEXTS.map((text) => model.tokenizer.encode(text, false));
      model.close();
      const theirs = await llamaCppTokenize(renamed, SPLIT_TEXTS, true);
      ours.forEach((ids, i) => assert.deepEqual(ids, theirs[i], `${pre}: ${JSON.stringify(SPLIT_TEXTS[i])}`));
      const key = JSON.stringify(ours);
      assert.ok(
        !seen.has(key),
        `${pre} tokenizes every text as ${seen.get(key)} does: the test cannot tell them apart`,
      );
      seen.set(key, pre);
    }
  },
);

// ---------------------------------------------------------------------------------------------
// Quantized types: test/gguf/tiny-llama-quants.gguf, written by llama-quantize (tools/gguf/make-quant-fixture.sh)
// ---------------------------------------------------------------------------------------------

interface Reference {
  type: string;
  n: number;
  sum: number;
  sumsq: number;
  samples: [number, number][];
}

test("every quantized type dequantizes to gguf-py's values", async () => {
  const g = await readGguf(QUANTS);
  const ref = JSON.parse(readFileSync(join(FIXTURES, "tiny-llama-quants.expected.json"), "utf8")) as Record<
    string,
    Reference
  >;
  const seen = new Set<string>();
  const buf = readFileSync(QUANTS);
  for (const t of g.tensors) {
    const r = ref[t.name];
    assert.ok(r, `${t.name} has no reference`);
    assert.equal(ggmlTypeName(t.type), r.type, `${t.name} type`);
    seen.add(r.type);
    const n = t.dims.reduce((a, d) => a * d, 1);
    assert.equal(n, r.n);
    const values = dequantize(t.type, new Uint8Array(buf.subarray(t.offset, t.offset + t.byteLength)), n);
    for (const [i, want] of r.samples) {
      assert.ok(
        Math.abs(values[i] - want) <= 1e-6 * Math.max(1, Math.abs(want)),
        `${t.name} [${i}]: ${values[i]} vs ${want}`,
      );
    }
    let sum = 0;
    let sumsq = 0;
    for (const v of values) {
      sum += v;
      sumsq += v * v;
    }
    assert.ok(Math.abs(sum - r.sum) <= 1e-6 * Math.max(1, r.sumsq), `${t.name} sum ${sum} vs ${r.sum}`);
    assert.ok(Math.abs(sumsq - r.sumsq) <= 1e-6 * r.sumsq, `${t.name} sum of squares ${sumsq} vs ${r.sumsq}`);
  }
  const quantized = [
    "Q4_0",
    "Q4_1",
    "Q5_0",
    "Q5_1",
    "Q8_0",
    "Q2_K",
    "Q3_K",
    "Q4_K",
    "Q5_K",
    "Q6_K",
    "IQ4_NL",
    "IQ4_XS",
  ];
  for (const q of quantized) assert.ok(seen.has(q), `the fixture has no ${q} tensor`);
});

/** The values of an int8 / int4 weight, read back through embed (code × scale, exact in f32). */
function weightValues(w: NativeWeight, rows: number, cols: number): Float32Array {
  const out = new Float32Array(rows * cols);
  native().embed(
    out,
    w,
    Int32Array.from({ length: rows }, (_, i) => i),
  );
  return out;
}

test("quantizeGguf: Q8_0, Q4_0 and Q5_0 blocks as int8, Q4_0, Q4_1 and Q4_K as int4 hold ggml's values, rows in rowOrder's order", (t) => {
  const n = native();
  const rows = 6;
  const cols = 512;
  // Random blocks: f16 d (and Q4_1's m, Q4_K's dmin) normal, 2^-10 .. 2^-2, and random code bytes
  // (Q4_K's 6-bit scales and mins among them), Q8_0's -128 included.
  let seed = 7;
  const byte = () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  const halves: Partial<Record<number, number>> = { [GgmlTypeId.Q4_1]: 2, [GgmlTypeId.Q4_K]: 2 };
  const blocks = (type: number, values: number, bytes: number) => {
    const out = new Uint8Array((rows * cols * bytes) / values);
    for (let b = 0; b < out.length; b += bytes) {
      for (let j = 0; j < bytes; j++) out[b + j] = byte();
      for (let h = 0; h < (halves[type] ?? 1); h++) {
        const half = ((5 + (byte() % 9)) << 10) | (byte() << 2);
        out[b + 2 * h] = half & 0xff;
        out[b + 2 * h + 1] = half >> 8;
      }
    }
    if (type === GgmlTypeId.Q8_0) out[2] = 0x80;
    return out;
  };
  // Q4_K's values as int4 with mins hold them: code * f16(d * scale) + f16(-dmin * min), each of its
  // sub-blocks' scale and min rounded once to f16 (ggml multiplies them in f32).
  const q4kAsHeld = (data: Uint8Array): Float32Array => {
    const out = new Float32Array(rows * cols);
    const f16 = (x: number) => f16ToF32(f32ToF16(Math.fround(x)));
    for (let b = 0; b < out.length / 256; b++) {
      const blk = data.subarray(144 * b, 144 * (b + 1));
      const d = f16ToF32(blk[0] | (blk[1] << 8));
      const dmin = f16ToF32(blk[2] | (blk[3] << 8));
      const sc = blk.subarray(4, 16);
      for (let j = 0; j < 8; j++) {
        const s = j < 4 ? sc[j] & 63 : (sc[j + 4] & 15) | ((sc[j - 4] >> 6) << 4);
        const m = j < 4 ? sc[j + 4] & 63 : (sc[j + 4] >> 4) | ((sc[j] >> 6) << 4);
        const scale = f16(d * s);
        const min = f16(-Math.fround(dmin * m));
        for (let l = 0; l < 32; l++) {
          const c = (blk[16 + 32 * (j >> 1) + l] >> (j & 1 ? 4 : 0)) & 15;
          out[256 * b + 32 * j + l] = Math.fround(c * scale + min);
        }
      }
    }
    return out;
  };
  const order = Int32Array.from([3, 0, 5, 1, 4, 2]);
  const dir = tempDir(t);
  for (const [type, values, bytes, bits, dtype] of [
    [GgmlTypeId.Q8_0, 32, 34, 8, NativeDType.Q8],
    [GgmlTypeId.Q4_0, 32, 18, 8, NativeDType.Q8],
    [GgmlTypeId.Q5_0, 32, 22, 8, NativeDType.Q8],
    [GgmlTypeId.Q4_0, 32, 18, 4, NativeDType.Q4],
    [GgmlTypeId.Q4_1, 32, 20, 4, NativeDType.Q4M],
    [GgmlTypeId.Q4_K, 256, 144, 4, NativeDType.Q4M],
  ] as const) {
    const data = blocks(type, values, bytes);
    const file = join(dir, `${ggmlTypeName(type)}-${bits}.bin`);
    // 8 bytes in front: the tensor lies at an offset of the file, as in a GGUF.
    writeFileSync(file, Buffer.concat([Buffer.alloc(8), data]));
    // Mapped, and read in: the copy gives the blocks' pages back, and reads them back to be made again.
    const mapped = n.mapFile(file, false).mapping;
    const readIn = n.mapFile(file, true).mapping;
    t.after(() => [mapped, readIn].forEach((m) => n.unmap(m)));
    const want = type === GgmlTypeId.Q4_K ? q4kAsHeld(data) : dequantize(type, data, rows * cols);
    if (type === GgmlTypeId.Q4_K) {
      // ... which is ggml's value within 2^-11 of the scale's and the min's parts.
      const ggml = dequantize(type, data, rows * cols);
      let worst = 0;
      for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(want[i] - ggml[i]));
      const step = Math.max(...Array.from(ggml, Math.abs));
      assert.ok(worst > 0 && worst <= step * 2 ** -10, `Q4_K held within f16 rounding: ${worst} of ${step}`);
    }
    for (const [mapping, rowOrder] of [
      [mapped, null],
      [readIn, order],
    ] as const) {
      const w = n.quantizeGguf(mapping, 8, type, rows, cols, bits, rowOrder);
      assert.equal(n.weightInfo(w).dtype, dtype);
      const got = weightValues(w, rows, cols);
      for (let r = 0; r < rows; r++) {
        const from = rowOrder ? rowOrder[r] : r;
        assert.deepEqual(
          got.subarray(r * cols, (r + 1) * cols),
          want.subarray(from * cols, (from + 1) * cols),
          `${ggmlTypeName(type)} as int${bits}, row ${r}`,
        );
      }
      // Given back and made again from the blocks: the same bits.
      assert.ok(n.releaseWeight(w) > 0);
      assert.deepEqual(weightValues(w, rows, cols), got);
    }
  }
  const { mapping } = n.mapFile(join(dir, "Q8_0-8.bin"), false);
  t.after(() => n.unmap(mapping));
  const bad = (args: Parameters<typeof n.quantizeGguf>, pattern: RegExp) =>
    assert.throws(() => n.quantizeGguf(...args), pattern);
  bad([mapping, 8, GgmlTypeId.Q8_0, rows, cols, 4, null], /does not fit int4/);
  bad([mapping, 8, GgmlTypeId.Q4_K, rows, cols, 8, null], /does not fit int8/);
  bad([mapping, 8, GgmlTypeId.Q8_0, rows, 80, 8, null], /whole blocks of 32/);
  bad([mapping, 8, GgmlTypeId.Q4_K, 1, 288, 4, null], /whole blocks of 256/);
  bad([mapping, 8, GgmlTypeId.Q6_K, 1, 256, 4, null], /does not fit int4/);
  bad([mapping, 8, GgmlTypeId.Q8_0, rows + 1, cols, 8, null], /outside the mapping/);
  bad([mapping, 8, GgmlTypeId.Q8_0, rows, cols, 8, Int32Array.from([0, 1])], /needs rows = 6/);
  bad([mapping, 8, GgmlTypeId.Q8_0, rows, cols, 8, Int32Array.from([0, 1, 2, 3, 4, 6])], /outside \[0, 6\)/);
});

test("quantizeGguf gives the blocks' pages back once its copy exists, and reads them back to make it again", (t) => {
  const n = native();
  const [rows, cols] = [8192, 1024]; // 4.7 MB of Q4_K: whole 2 MiB pages of read-in memory
  let seed = 3;
  const data = new Uint8Array((rows * cols * 144) / 256);
  for (let i = 0; i < data.length; i++) data[i] = ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 16) & 0xff;
  for (let b = 0; b < data.length; b += 144) [data[b + 1], data[b + 3]] = [0x1c, 0x1c]; // d, dmin normal
  const file = join(tempDir(t), "q4_k.bin");
  writeFileSync(file, data);
  const { mapping } = n.mapFile(file, true);
  t.after(() => n.unmap(mapping));
  const w = n.quantizeGguf(mapping, 0, GgmlTypeId.Q4_K, rows, cols, 4, null);
  assert.ok(n.releasedBytes(mapping) >= 2 << 20, `given back: ${n.releasedBytes(mapping)}`);
  const values = weightValues(w, rows, cols);
  assert.ok(n.releaseWeight(w) > 0);
  assert.deepEqual(weightValues(w, rows, cols), values, "made again from the blocks read back");
  assert.ok(n.releasedBytes(mapping) >= 2 << 20, "and given back again");
});

test("dequantize refuses bytes that are not whole blocks of the type", () => {
  assert.throws(() => dequantize(GgmlTypeId.Q4_K, new Uint8Array(144), 128), RangeError);
  assert.throws(() => dequantize(GgmlTypeId.Q8_0, new Uint8Array(33), 32), RangeError);
});

test("the quantized file imports to bf16 and decodes as llama.cpp decodes the file", { skip: noLlama }, async (t) => {
  const dir = tempDir(t);
  const result = await importGguf(QUANTS, join(dir, "imported"));
  assert.equal(result.dtype, "BF16");
  assert.ok((result.sourceTypes.Q4_K ?? 0) > 0 && (result.sourceTypes.Q6_K ?? 0) > 0);
  const model = loadModel(result.dir);
  t.after(() => model.close());
  const prompt = model.tokenizer.encode("The quick brown fox jumps over");
  const ours = await ourGreedy(model, prompt, 8);
  if (!("llama" in llamaCpp)) return;
  const theirs = await llamaCppSteps(llamaCpp.llama, QUANTS, prompt, ours.ids);
  // llama.cpp rounds activations to 8 bits for its quantized dot products; we run bf16 weights on f32 activations.
  compareSteps("tiny-llama-quants", ours.steps, theirs, 0.02);
  // The bench's llama.cpp peer runs the file the model was imported from, quantized as it is.
  const r = await openLlamaCppPeer(model, { threads: 2 });
  assert.ok("peer" in r, "skipped" in r ? r.skipped : "");
  try {
    assert.match(r.peer.detail, /, tiny-llama-quants\.gguf \(F32\+[\w+]*Q4_K[\w+]*\) read in/);
    assert.equal((await r.peer.decode(prompt, 3)).ids.length, 3);
  } finally {
    await r.peer.close();
  }
});

test('weights "auto": an import of a quantized GGUF loads its 4-bit blocks as int4 and the rest as int8, a float one and a plain folder as the file', async (t) => {
  const dir = tempDir(t);
  const quantized = await importGguf(QUANTS, join(dir, "quantized"));
  const q = loadModel(quantized.dir, { weights: "auto" });
  t.after(() => q.close());
  assert.equal(q.weightFormat, "int4+int8");
  const layer0 = q.weights.layers[0];
  assert.ok("q" in layer0.qkv);
  assert.deepEqual(
    [layer0.gate!.w.dtype, layer0.up!.w.dtype, layer0.o.w.dtype, layer0.down!.w.dtype, layer0.qkv.q.w.dtype],
    ["Q4", "Q4M", "Q4M", "Q8", "Q8"],
    "Q4_0, Q4_1 and Q4_K blocks as int4; Q5_0 blocks and a Q2_K matrix as int8",
  );
  assert.equal(q.weights.layers[0].down!.w.stored?.dtype, "BF16");
  const { source, result } = await roundTrip(t, "llama"); // exported as bf16
  const f = loadModel(result.dir, { weights: "auto" });
  t.after(() => f.close());
  assert.equal(f.weightFormat, "file");
  assert.equal(f.weights.layers[0].down!.w.dtype, "BF16");
  assert.equal(resolveWeights("auto", importRecord(source.dir)), "file", "a folder that is no import");
  assert.equal(resolveWeights("int4", importRecord(quantized.dir)), "int4", "a format asked for is kept");
  // The CLI's default is "auto"; the file's bf16 is one --weights away.
  const cli = (extra: string[]) =>
    hire([
      "bench",
      "--model",
      quantized.dir,
      "--prompt-tokens",
      "4",
      "--decode-tokens",
      "2",
      "--repeats",
      "1",
      "--json",
      ...extra,
    ]);
  const auto = cli([]);
  assert.equal(auto.status, 0, auto.stderr);
  assert.match(
    JSON.parse(auto.stdout).dtype,
    /^int4\+int8 weights from BF16, 5 of 16 from the GGUF's Q4_0\/Q4_1\/Q4_K\/Q5_0\/Q8_0 blocks/,
  );
  const asFile = cli(["--weights", "file"]);
  assert.equal(asFile.status, 0, asFile.stderr);
  assert.equal(JSON.parse(asFile.stdout).dtype, "BF16");
  const twice = cli(["--weights", "auto,int8,int4+int8"]);
  assert.equal(twice.status, 2, twice.stderr);
  assert.match(twice.stderr, /--weights must be one of auto, file, int8, int4, got "int4\+int8"/);
  // hire export reads the file's matrices whatever "auto" would load.
  const exported = hire(["export", "--model", quantized.dir, "--gguf", join(dir, "again.gguf")]);
  assert.equal(exported.status, 0, exported.stderr);
  assert.equal((await readGguf(join(dir, "again.gguf"))).tensors.length > 0, true);
});

test("HiRE runs on an import whose W_gate and W_up differ in dtype (Q4_0 beside Q4_1 blocks): every neuron kept follows dense", async (t) => {
  const imported = await importGguf(QUANTS, join(tempDir(t), "imported"));
  const m = loadModel(imported.dir, { weights: "auto" });
  t.after(() => m.close());
  const l0 = m.weights.layers[0];
  assert.deepEqual([l0.gate!.w.dtype, l0.up!.w.dtype], ["Q4", "Q4M"]);
  // The first step's top log-probabilities: dense, and HiRE keeping every neuron (its interleaved
  // gate/up rows as bf16, the values of both; W_down as bf16 with x in f32, where dense quantizes x):
  // 0.0023 apart at most here.
  const first = async (ffn: Partial<SparsitySettings["ffn"]>) => {
    const s = new Session(m, { contextLength: 64 });
    s.sparsity.update({ ffn });
    for await (const e of s.generate("The quick brown fox", { maxTokens: 1, temperature: 0, logprobs: 5 }))
      if (e.type === "token") return e.topLogprobs!;
    throw new Error("no token");
  };
  const dense = await first({ method: "dense" });
  const all = await first({ method: "hire", k: 1, oversample: 1, predictor: { kind: "int4", groupSize: 128 } });
  assert.equal(all[0][0], dense[0][0], "the same argmax");
  for (const [i, [id, lp]] of dense.entries()) {
    const got = all.find(([j]) => j === id)?.[1];
    assert.ok(got !== undefined && Math.abs(got - lp) < 0.01, `top ${i}: ${got} vs ${lp}`);
  }
});

test("int8 / int4 weights take a GGUF import's Q8_0, Q4_0 and Q5_0 matrices from the file's blocks: exactly ggml's values", async (t) => {
  const dir = tempDir(t);
  const file = join(dir, "tiny.gguf");
  copyFileSync(QUANTS, file);
  const imported = await importGguf(file, join(dir, "imported"));
  const g = await readGguf(file);
  const buf = readFileSync(file);
  const ggml = (name: string) => {
    const t = g.tensors.find((x) => x.name === name)!;
    return dequantize(t.type, new Uint8Array(buf.subarray(t.offset, t.offset + t.byteLength)), t.dims[0] * t.dims[1]);
  };
  const exact = [
    { gguf: "blk.0.ffn_gate.weight", layer: 0, w: "gate", type: "Q4_0", int4: true },
    { gguf: "blk.0.ffn_down.weight", layer: 0, w: "down", type: "Q5_0", int4: false },
    { gguf: "blk.1.ffn_up.weight", layer: 1, w: "up", type: "Q8_0", int4: false },
  ] as const;
  const load = (weights: "int8" | "int4") => {
    const m = loadModel(imported.dir, { weights });
    t.after(() => m.close());
    return m;
  };
  const int8 = load("int8");
  const viaBf16 = (name: string, w: Weight) => {
    // What quantizing the import's bf16 gives instead: not the file's values.
    const q = native().quantizeWeight(int8.store.get(name, [w.rows, w.cols]).handle, 32, 8);
    return weightValues(q, w.rows, w.cols);
  };
  for (const e of exact) {
    const w = int8.weights.layers[e.layer][e.w]!.w;
    assert.equal(ggmlTypeName(g.tensors.find((x) => x.name === e.gguf)!.type), e.type);
    assert.equal(w.dtype, "Q8");
    const want = ggml(e.gguf);
    assert.deepEqual(weightValues(w.handle, w.rows, w.cols), want, `${e.gguf} (${e.type}) as int8`);
    assert.notDeepEqual(viaBf16(w.name, w), want, `${e.gguf}: the bf16 round trip would have changed it`);
  }
  assert.deepEqual(int8.blockCount, { taken: { Q4_0: 1, Q5_0: 1, Q8_0: 1 }, of: 16, from: "the GGUF's" });
  // A type int8 holds only approximately (Q4_1 has an offset per block) is quantized from the bf16.
  const q41 = int8.weights.layers[0].up!.w;
  assert.deepEqual(weightValues(q41.handle, q41.rows, q41.cols), viaBf16(q41.name, q41));
  const int4 = load("int4");
  assert.deepEqual(int4.blockCount, { taken: { Q4_0: 1, Q4_1: 1, Q4_K: 1 }, of: 16, from: "the GGUF's" });
  for (const e of exact) {
    const w = int4.weights.layers[e.layer][e.w]!.w;
    const values = weightValues(w.handle, w.rows, w.cols);
    if (e.int4) assert.deepEqual(values, ggml(e.gguf), `${e.gguf} as int4`);
    else assert.notDeepEqual(values, ggml(e.gguf), `${e.gguf}: ${e.type} does not fit int4, so it is quantized`);
  }
  // Q4_1 and Q4_K as int4 with a minimum per group: Q4_1's values exactly, Q4_K's within the f16
  // rounding of its sub-blocks' scales and mins (quantizeGguf's test holds them to the bit).
  const up = int4.weights.layers[0].up!.w;
  assert.equal(up.dtype, "Q4M");
  assert.deepEqual(weightValues(up.handle, up.rows, up.cols), ggml("blk.0.ffn_up.weight"), "Q4_1 as int4");
  const o = int4.weights.layers[0].o.w;
  assert.equal(o.dtype, "Q4M");
  const want = ggml("blk.0.attn_output.weight");
  const got = weightValues(o.handle, o.rows, o.cols);
  const amax = want.reduce((a, v) => Math.max(a, Math.abs(v)), 0);
  for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= amax * 2 ** -10, `Q4_K [${i}]`);
  // Given back (as HiRE's own rows do with W_gate and W_up) and made again: from the blocks.
  const gate = int8.weights.layers[0].gate!.w;
  const before = weightValues(gate.handle, gate.rows, gate.cols);
  assert.ok(native().releaseWeight(gate.handle) > 0);
  assert.ok(int8.store.releasedBytes() > 0, "counted as given back");
  assert.deepEqual(weightValues(gate.handle, gate.rows, gate.cols), before);
  // The model decodes with them, and llama.cpp runs the file beside it (bench --peers llamacpp).
  const r = hire(["generate", "--model", imported.dir, "--prompt", "The", "--max-tokens", "3", "--json"]);
  assert.equal(r.status, 0, r.stderr);
  if (!noLlama) {
    const peer = await openLlamaCppPeer(int8, { threads: 2 });
    assert.ok("peer" in peer, "skipped" in peer ? peer.skipped : "");
    await peer.peer.close();
  }
  // A record whose blocks do not fit the file: a typed error naming the record and the matrix.
  const record = join(imported.dir, "gguf-import.json");
  const saved = readFileSync(record, "utf8");
  const edited = JSON.parse(saved);
  edited.blocks["model.layers.1.mlp.up_proj.weight"].offset = statSync(file).size - 100;
  writeFileSync(record, JSON.stringify(edited));
  assert.throws(
    () => loadModel(imported.dir, { weights: "int8" }),
    (e: unknown) =>
      e instanceof ModelError &&
      e.code === "BAD_GGUF" &&
      e.file === record &&
      e.tensor === "model.layers.1.mlp.up_proj.weight" &&
      /outside the mapping/.test(e.message),
  );
  writeFileSync(record, saved);
  // A GGUF file changed since the import: every matrix from the import's bf16 again.
  utimesSync(file, new Date(), new Date(Date.now() + 5000));
  const changed = load("int8");
  const w = changed.weights.layers[1].up!.w;
  assert.deepEqual(weightValues(w.handle, w.rows, w.cols), viaBf16(w.name, w));
});

test("unpermutedRowOrder names each un-permuted q/k row's source row", () => {
  const heads = 3;
  const headDim = 8;
  const rowBytes = 6;
  const src = Uint8Array.from({ length: heads * headDim * rowBytes }, (_, i) => (i * 7) & 0xff);
  const dst = unpermuteRotary(src, heads, headDim, rowBytes);
  const order = unpermutedRowOrder(heads, headDim);
  for (let r = 0; r < heads * headDim; r++) {
    assert.deepEqual(
      dst.subarray(r * rowBytes, (r + 1) * rowBytes),
      src.subarray(order[r] * rowBytes, (order[r] + 1) * rowBytes),
    );
  }
  assert.deepEqual(
    [...order].sort((a, b) => a - b),
    [...Array(heads * headDim).keys()],
    "a permutation",
  );
});

// ---------------------------------------------------------------------------------------------
// The cache, the CLI and bad files
// ---------------------------------------------------------------------------------------------

test("modelFolderFor imports a .gguf once, again after the file changes, and finds a folder's one GGUF", async (t) => {
  const dir = tempDir(t);
  const prev = process.env.HIRE_CACHE_DIR;
  process.env.HIRE_CACHE_DIR = join(dir, "cache");
  t.after(() => (prev === undefined ? delete process.env.HIRE_CACHE_DIR : (process.env.HIRE_CACHE_DIR = prev)));
  const file = join(dir, "m", "tiny.gguf");
  (await import("node:fs")).mkdirSync(join(dir, "m"));
  copyFileSync(QUANTS, file);
  const calls: number[] = [];
  const first = await modelFolderFor(file, (_f, done, total) => calls.push(done / total));
  assert.ok(existsSync(join(first, "config.json")) && calls.at(-1) === 1);
  const stamp = statSync(join(first, "model.safetensors")).mtimeMs;
  calls.length = 0;
  assert.equal(await modelFolderFor(file, () => calls.push(1)), first);
  assert.equal(calls.length, 0, "a second call does not import again");
  assert.equal(statSync(join(first, "model.safetensors")).mtimeMs, stamp);
  assert.equal(await modelFolderFor(join(dir, "m")), first, "a folder with one GGUF file names it");
  utimesSync(file, new Date(), new Date(Date.now() + 5000));
  const second = await modelFolderFor(file);
  assert.notEqual(second, first);
  assert.ok(!existsSync(first), "the import of the file before it changed is removed");
  assert.equal(JSON.parse(readFileSync(join(second, "gguf-import.json"), "utf8")).source, file);
  copyFileSync(QUANTS, join(dir, "m", "other.gguf"));
  await assert.rejects(
    modelFolderFor(join(dir, "m")),
    (e: ModelError) => e.code === "NOT_FOUND" && /other\.gguf/.test(e.message),
  );
  const folder = join(dir, "plain");
  assert.equal(await modelFolderFor(folder), folder, "anything else is returned as given");
});

test("hire generate --model FILE.gguf imports it and decodes", async (t) => {
  const dir = tempDir(t);
  const r = hire(
    ["generate", "--model", QUANTS, "--prompt", "The quick", "--max-tokens", "4", "--temperature", "0", "--json"],
    undefined,
    {
      HIRE_CACHE_DIR: join(dir, "cache"),
    },
  );
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { ids: number[]; finish_reason: string };
  assert.equal(out.ids.length, 4);
  assert.equal(out.finish_reason, "length");
  assert.match(r.stderr, /importing tiny-llama-quants\.gguf/);
  assert.equal(readdirSync(join(dir, "cache", "imports")).length, 1);
});

test("a GGUF repo in the Hugging Face cache: each file listed with its architecture or problem, loadable as ORG/NAME/FILE.gguf", async (t) => {
  const dir = tempDir(t);
  const src = join(dir, "src");
  mkdirSync(src);
  copyFileSync(QUANTS, join(src, "tiny-Q4_K_M.gguf"));
  await tinyGguf(join(src, "broken-IQ4_XS.gguf"), [["general.architecture", kv.str("mamba")]]);
  const hub = join(dir, "hub");
  putInHubCache(hub, "org/tiny-GGUF", src, "c".repeat(40));
  const env = { HF_HUB_CACHE: hub };
  const list = await listCachedModels(env);
  assert.deepEqual(
    list.map((m) => [m.repo, m.architecture, m.problem?.code ?? null]),
    [
      ["org/tiny-GGUF/broken-IQ4_XS.gguf", null, "UNSUPPORTED_ARCHITECTURE"],
      ["org/tiny-GGUF/tiny-Q4_K_M.gguf", "LlamaForCausalLM", null],
    ],
  );
  assert.equal(list[1].weightBytes, statSync(QUANTS).size);
  const file = findModelFolder("org/tiny-GGUF/tiny-Q4_K_M.gguf", env);
  assert.ok(file.endsWith("tiny-Q4_K_M.gguf") && existsSync(file));
  // Its import is named as it was asked for (the app's model bar, /v1/models).
  const imported = (await importGguf(file, join(dir, "imported"))).dir;
  assert.equal(modelName(imported), "org/tiny-GGUF/tiny-Q4_K_M.gguf");
  assert.equal(modelName((await importGguf(QUANTS, join(dir, "plain"))).dir), "tiny-llama-quants.gguf");
  assert.throws(
    () => findModelFolder("org/tiny-GGUF/nope.gguf", env),
    (e: ModelError) => e.code === "NOT_FOUND",
  );
  const cli = { ...env, HIRE_CACHE_DIR: join(dir, "cache") };
  const models = hire(["models"], undefined, cli);
  assert.equal(models.status, 0, models.stderr);
  assert.match(models.stdout, /org\/tiny-GGUF\/tiny-Q4_K_M\.gguf +LlamaForCausalLM, 1\.0 MB/);
  const r = hire(
    ["generate", "--model", "org/tiny-GGUF/tiny-Q4_K_M.gguf", "--prompt", "The", "--max-tokens", "2", "--json"],
    undefined,
    cli,
  );
  assert.equal(r.status, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as { ids: number[] }).ids.length, 2);
});

test("hire import --gguf FILE --out DIR writes the folder, and refuses a folder that is not empty", (t) => {
  const dir = tempDir(t);
  const out = join(dir, "tiny");
  const r = hire(["import", "--gguf", QUANTS, "--out", out]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(
    r.stdout,
    /^wrote .*tiny: LlamaForCausalLM \(llama\), 21 tensors in BF16 from .*Q4_K.*, 0\.00 GB in [\d.]+ s\n$/,
  );
  for (const f of ["config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors", "gguf-import.json"]) {
    assert.ok(existsSync(join(out, f)), f);
  }
  const again = hire(["import", "--gguf", QUANTS, "--out", out]);
  assert.equal(again.status, 2);
  assert.match(again.stderr, /exists and is not an empty folder/);
  assert.equal(hire(["import", "--out", out]).status, 2);
});

/** A GGUF of one F32 tensor and the given metadata (plus a small byte-level vocabulary unless given). */
async function tinyGguf(file: string, meta: [string, GgufValue][]): Promise<void> {
  const keys = new Map<string, GgufValue>([
    ["general.architecture", kv.str("llama")],
    ["tokenizer.ggml.model", kv.str("gpt2")],
    ["tokenizer.ggml.pre", kv.str("gpt-2")],
    ["tokenizer.ggml.tokens", kv.strings(["a", "b", "ab"])],
    ["tokenizer.ggml.merges", kv.strings(["a b"])],
    ...meta,
  ]);
  const w = await GgufFileWriter.open(file, keys, [{ name: "token_embd.weight", type: GgmlType.F32, dims: [4, 3] }]);
  await w.write(new Uint8Array(48));
  await w.close();
}

test("bad GGUF files are typed errors naming the file, and leave no folder behind", async (t) => {
  const dir = tempDir(t);
  const out = join(dir, "out");
  const expectError = async (file: string, code: string, pattern: RegExp) => {
    await assert.rejects(importGguf(file, out), (e: unknown) => {
      assert.ok(e instanceof ModelError, String(e));
      assert.equal(e.code, code, e.message);
      assert.ok(e.message.startsWith(file), e.message);
      assert.match(e.message, pattern);
      return true;
    });
    assert.ok(!existsSync(out));
    assert.deepEqual(
      readdirSync(dir).filter((f) => f.includes(".tmp")),
      [],
    );
  };
  await expectError(join(dir, "missing.gguf"), "NOT_FOUND", /not found/);
  const junk = join(dir, "junk.gguf");
  writeFileSync(junk, "this is not a gguf file at all, just text");
  await expectError(junk, "BAD_GGUF", /not a readable GGUF/);
  const cut = join(dir, "cut.gguf");
  copyFileSync(QUANTS, cut);
  truncateSync(cut, statSync(QUANTS).size - 1000);
  await expectError(cut, "TRUNCATED", /past the end/);
  // Cut inside the header: the tensor list runs past the end (the parser read zeros there).
  const header = join(dir, "header.gguf");
  copyFileSync(QUANTS, header);
  truncateSync(header, 1000);
  await expectError(header, "TRUNCATED", /its header \(with the list of \d+ tensors\) runs to byte \d+, past the end/);

  const mamba = join(dir, "mamba.gguf");
  await tinyGguf(mamba, [["general.architecture", kv.str("mamba")]]);
  await expectError(mamba, "UNSUPPORTED_ARCHITECTURE", /"mamba" cannot be imported/);
  const spm = join(dir, "spm.gguf");
  await tinyGguf(spm, [["tokenizer.ggml.model", kv.str("llama")]]);
  await expectError(spm, "BAD_TOKENIZER", /scores is missing/);
  const wordpiece = join(dir, "bert.gguf");
  await tinyGguf(wordpiece, [["tokenizer.ggml.model", kv.str("bert")]]);
  await expectError(wordpiece, "BAD_TOKENIZER", /"bert"/);
  const chameleon = join(dir, "chameleon.gguf");
  await tinyGguf(chameleon, [["tokenizer.ggml.pre", kv.str("chameleon")]]);
  await expectError(chameleon, "BAD_TOKENIZER", /"chameleon" names a pre-tokenizer this import does not know/);

  // A type this import does not read (IQ2_XXS): the tensor's type field patched in place.
  const iq = join(dir, "iq.gguf");
  await tinyGguf(iq, []);
  const bytes = readFileSync(iq);
  const at = bytes.indexOf("token_embd.weight") + "token_embd.weight".length + 4 + 2 * 8;
  assert.equal(bytes.readUInt32LE(at), GgmlType.F32);
  bytes.writeUInt32LE(16, at);
  writeFileSync(iq, bytes);
  await expectError(iq, "UNSUPPORTED_DTYPE", /IQ2_XXS is not supported/);
});

// Two processes importing one file at once (the app and a terminal, say): each builds its own
// temporary folder, and the second to finish keeps the first's import rather than pulling it from
// under that process.
test("import: a finished import already in place is kept; a partial folder there is replaced", (t) => {
  const root = tempDir(t);
  const out = join(root, "imports", "m-key");
  const ours = join(root, "ours.tmp");
  mkdirSync(out, { recursive: true });
  writeFileSync(join(out, "config.json"), "{}");
  writeFileSync(join(out, "theirs"), "");
  mkdirSync(ours);
  writeFileSync(join(ours, "config.json"), "{}");
  assert.equal(moveIntoPlace(ours, out), false);
  assert.ok(existsSync(join(out, "theirs")), "the finished import is untouched");
  assert.ok(!existsSync(ours), "ours is removed");
  rmSync(join(out, "config.json"));
  mkdirSync(ours);
  writeFileSync(join(ours, "config.json"), "{}");
  assert.equal(moveIntoPlace(ours, out), true);
  assert.deepEqual(readdirSync(out), ["config.json"]);
});

test("import: two processes importing the same GGUF file at once both run it, from one import", async (t) => {
  const dir = tempDir(t);
  const env = { ...process.env, HIRE_CACHE_DIR: join(dir, "cache") };
  const run = () =>
    promisify(execFile)(
      process.execPath,
      [
        join(REPO_ROOT, "bin", "hire.js"),
        "generate",
        "--model",
        QUANTS,
        "--prompt",
        "The quick",
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        "--json",
      ],
      { env, encoding: "utf8" },
    );
  const [a, b] = await Promise.all([run(), run()]);
  const ids = (r: { stdout: string }) => (JSON.parse(r.stdout) as { ids: number[] }).ids;
  assert.deepEqual(ids(a), ids(b));
  assert.equal(ids(a).length, 4);
  const imports = readdirSync(join(dir, "cache", "imports"));
  assert.equal(imports.length, 1, imports.join(", "));
  assert.ok(existsSync(join(dir, "cache", "imports", imports[0], "config.json")));
});
