// Model folders with only a slow tokenizer's files (no tokenizer.json) load, converted as transformers
// converts them:
//   - SentencePiece's tokenizer.model tokenizes as sentencepiece itself does: test/spm holds BPE
//     models trained with Google's sentencepiece and the ids it gives for a set of texts
//     (tools/tokenizer/make-spm-fixtures.py), which the conversion must reproduce;
//   - GPT-2's vocab.json + merges.txt tokenize as the tokenizer.json they were written from;
// and files that cannot be converted are BAD_TOKENIZER errors naming the file.
import { after, test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, hire, putInHubCache, tempDir } from "./helpers.js";
import { listCachedModels } from "../core/loader/hf-cache.js";
import { ModelTokenizer } from "../core/loader/tokenizer.js";
import { ModelError } from "../core/loader/errors.js";
import { loadModel } from "../core/loader/model-folder.js";
import { makeModel } from "../core/modelgen/make-model.js";
import { Session } from "../core/engine/session.js";
import { loadLlamaCpp } from "../core/peers/llamacpp.js";

const SPM = join(REPO_ROOT, "test", "spm");

interface Expected {
  vocab_size: number;
  bos_id: number;
  eos_id: number;
  unk_id: number;
  cases: { text: string; ids: number[]; pieces: string[]; decoded: string }[];
}

function fixture(t: { after: (fn: () => void) => void }, name: string): { dir: string; expected: Expected } {
  const dir = tempDir(t);
  copyFileSync(join(SPM, name, "tokenizer.model"), join(dir, "tokenizer.model"));
  const expected = JSON.parse(readFileSync(join(SPM, name, "expected.json"), "utf8")) as Expected;
  return { dir, expected };
}

for (const name of ["llama-like", "nfkc"]) {
  test(`tokenizer.model (${name}): ids and text as sentencepiece gives them`, (t) => {
    const { dir, expected } = fixture(t, name);
    const tok = ModelTokenizer.load(dir);
    assert.equal(tok.file, join(dir, "tokenizer.model"));
    let checked = 0;
    for (const c of expected.cases) {
      const ids = tok.encode(c.text, false);
      if (c.pieces[1] === "<tool_call>") {
        // The JavaScript tokenizer cuts the text at added tokens before normalizing, so the dummy
        // prefix sentencepiece puts before a user-defined piece at the very start is not there;
        // from the piece on, the ids are sentencepiece's.
        assert.equal(c.pieces[0], "▁");
        assert.deepEqual(ids, c.ids.slice(1), c.text);
      } else {
        assert.deepEqual(ids, c.ids, c.text);
        checked++;
      }
      // sentencepiece writes <unk> as " ⁇ "; decoding drops special tokens, <unk> among them.
      if (!c.ids.includes(expected.unk_id)) assert.equal(tok.decode(c.ids), c.decoded, c.text);
    }
    assert.ok(checked >= 8, `${checked} texts compared whole`);
    // LlamaTokenizer's default: BOS before a prompt; EOS and BOS from the model's ids.
    assert.deepEqual(tok.encode("The"), [expected.bos_id, ...tok.encode("The", false)]);
    assert.equal(tok.bosId, expected.bos_id);
    assert.equal(tok.tokenId(tok.eosToken!), expected.eos_id);
  });
}

test("tokenizer.model: the unknown pieces of a model without byte fallback are one <unk> each run, as sentencepiece's", (t) => {
  const { dir, expected } = fixture(t, "nfkc");
  const c = expected.cases.find((x) => x.text.startsWith("Unicode"))!;
  assert.ok(c.ids.includes(expected.unk_id));
  assert.deepEqual(ModelTokenizer.load(dir).encode(c.text, false), c.ids);
});

for (const legacy of [undefined, false]) {
  test(`tokenizer.model with tokenizer_config.json (legacy ${legacy}): its added tokens, add_bos_token and chat template apply`, (t) => {
    const { dir, expected } = fixture(t, "llama-like");
    const n = expected.vocab_size;
    writeFileSync(
      join(dir, "tokenizer_config.json"),
      JSON.stringify({
        legacy,
        add_bos_token: false,
        added_tokens_decoder: {
          [n]: { content: "<|im_start|>", special: true, lstrip: false, rstrip: false, normalized: false },
          [n + 1]: { content: "<|im_end|>", special: true, lstrip: false, rstrip: false, normalized: false },
        },
        eos_token: "<|im_end|>",
        chat_template:
          "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}" +
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}",
      }),
    );
    const tok = ModelTokenizer.load(dir);
    const prompt = tok.applyChatTemplate([{ role: "user", content: "The quick brown fox" }]);
    const ids = tok.encode(prompt);
    assert.equal(ids[0], n, "no BOS (add_bos_token false), the chat marker's id first");
    assert.equal(ids.filter((i) => i === n).length, 2);
    assert.equal(ids.filter((i) => i === n + 1).length, 1);
    assert.equal(tok.eosToken, "<|im_end|>");
    // Legacy (transformers' default, and sentencepiece's own way: each piece of text between special
    // tokens is encoded alone) puts the dummy prefix "▁" after each special token too.
    const text =
      legacy === false ? "user\nThe quick brown fox\nassistant\n" : "user\nThe quick brown fox \n assistant\n";
    assert.equal(tok.decode(ids), text);
  });
}

test("a model folder with only tokenizer.model loads and generates (API and CLI)", async (t) => {
  const { dir: spm, expected } = fixture(t, "llama-like");
  const dir = join(tempDir(t), "m");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 1, out: dir, shape: { vocab: expected.vocab_size } });
  rmSync(join(dir, "tokenizer.json"));
  rmSync(join(dir, "tokenizer_config.json"), { force: true });
  copyFileSync(join(spm, "tokenizer.model"), join(dir, "tokenizer.model"));
  const model = loadModel(dir);
  try {
    const session = new Session(model);
    let done: { promptIds: number[]; ids: number[] } | undefined;
    for await (const ev of session.generate("The quick brown fox", { maxTokens: 4, temperature: 0 }))
      if (ev.type === "done") done = ev;
    assert.deepEqual(done!.promptIds, [expected.bos_id, ...expected.cases[0].ids.slice(0, 11)]);
    assert.equal(done!.ids.length, 4);
  } finally {
    model.close();
  }
  const r = hire(["generate", "--model", dir, "--prompt", "The quick brown fox", "--max-tokens", "3", "--json"]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as { ids: number[] }).ids.length, 3);
});

function assertBadTokenizer(dir: string, detail: RegExp): void {
  assert.throws(
    () => ModelTokenizer.load(dir),
    (e: unknown) =>
      e instanceof ModelError &&
      e.code === "BAD_TOKENIZER" &&
      e.file === join(dir, "tokenizer.model") &&
      detail.test(e.message),
  );
}

test("bad input: a tokenizer.model that is not a SentencePiece model, or is cut short, is BAD_TOKENIZER naming it", (t) => {
  const dir = tempDir(t);
  const file = join(dir, "tokenizer.model");
  writeFileSync(file, "version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 499723\n");
  assertBadTokenizer(dir, /not a SentencePiece model/);
  writeFileSync(file, readFileSync(join(SPM, "llama-like", "tokenizer.model")).subarray(0, 5000));
  assertBadTokenizer(dir, /not a SentencePiece model/);
  writeFileSync(file, Buffer.alloc(0));
  assertBadTokenizer(dir, /not a SentencePiece model/);
});

test("bad input: a Unigram tokenizer.model is BAD_TOKENIZER saying only BPE ones convert", (t) => {
  const { dir } = fixture(t, "unigram");
  assertBadTokenizer(dir, /a SentencePiece Unigram model; only BPE ones/);
});

// ---------------------------------------------------------------------------------------------
// vocab.json + merges.txt
// ---------------------------------------------------------------------------------------------

/** A make-model folder (GPT-2's byte-level BPE tokenizer.json) and a copy with only vocab.json and merges.txt. */
async function bpeFolders(
  t: { after: (fn: () => void) => void },
  tokenizerClass = "GPT2Tokenizer",
): Promise<{ fast: string; slow: string }> {
  const root = tempDir(t);
  const fast = join(root, "fast");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 1, out: fast });
  const slow = join(root, "slow");
  cpSync(fast, slow, { recursive: true });
  const json = JSON.parse(readFileSync(join(fast, "tokenizer.json"), "utf8")) as {
    model: { vocab: Record<string, number>; merges: [string, string][] };
  };
  writeFileSync(join(slow, "vocab.json"), JSON.stringify(json.model.vocab));
  writeFileSync(
    join(slow, "merges.txt"),
    ["#version: 0.2", ...json.model.merges.map((m) => m.join(" ")), ""].join("\n"),
  );
  rmSync(join(slow, "tokenizer.json"));
  const config = JSON.parse(readFileSync(join(fast, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
  writeFileSync(join(slow, "tokenizer_config.json"), JSON.stringify({ ...config, tokenizer_class: tokenizerClass }));
  return { fast, slow };
}

const BPE_TEXTS = [
  "The quick brown fox",
  " leading  spaces\tand\nlines\n\n",
  "café 中文 🦙 2024 12345",
  "<|im_start|>user\nhi<|im_end|>",
  "it's I'LL don't",
];

test("vocab.json + merges.txt (GPT2Tokenizer): the same ids and text as the tokenizer.json they came from", async (t) => {
  const { fast, slow } = await bpeFolders(t);
  const [a, b] = [ModelTokenizer.load(fast), ModelTokenizer.load(slow)];
  assert.equal(b.file, join(slow, "vocab.json"));
  for (const text of BPE_TEXTS) {
    assert.deepEqual(b.encode(text), a.encode(text), text);
    assert.equal(b.decode(b.encode(text)), a.decode(a.encode(text)), text);
  }
  assert.equal(b.eosToken, a.eosToken);
  assert.equal(b.tokenId("<|im_end|>"), a.tokenId("<|im_end|>"));
  // Such a folder generates.
  const r = hire(["generate", "--model", slow, "--prompt", "The quick brown fox", "--max-tokens", "3", "--json"]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal((JSON.parse(r.stdout) as { ids: number[] }).ids.length, 3);
});

test("vocab.json + merges.txt (Qwen2Tokenizer): digits one by one and NFC, as Qwen2's pre-tokenizer splits", async (t) => {
  const { fast, slow } = await bpeFolders(t, "Qwen2Tokenizer");
  const [gpt2, qwen] = [ModelTokenizer.load(fast), ModelTokenizer.load(slow)];
  const digits = qwen.encode("12345", false);
  assert.deepEqual(
    digits,
    [..."12345"].map((d) => qwen.tokenId(d)),
  );
  assert.deepEqual(qwen.encode("cafe\u0301", false), qwen.encode("caf\u00e9", false), "NFC first");
  assert.notDeepEqual(gpt2.encode("cafe\u0301", false), gpt2.encode("caf\u00e9", false));
  for (const text of BPE_TEXTS) assert.equal(qwen.decode(qwen.encode(text, false), false), text.normalize("NFC"), text);
});

test("special_tokens_map.json names the special tokens tokenizer_config.json leaves out", async (t) => {
  const { slow } = await bpeFolders(t);
  const file = join(slow, "tokenizer_config.json");
  const config = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  delete config.eos_token;
  writeFileSync(file, JSON.stringify(config));
  assert.equal(ModelTokenizer.load(slow).eosToken, undefined);
  writeFileSync(join(slow, "special_tokens_map.json"), JSON.stringify({ eos_token: { content: "<|im_end|>" } }));
  assert.equal(ModelTokenizer.load(slow).eosToken, "<|im_end|>");
});

test("bad input: broken vocab.json or merges.txt, or a tokenizer class with no conversion, is BAD_TOKENIZER naming the file", async (t) => {
  const { slow } = await bpeFolders(t);
  const expectBad = (file: string, detail: RegExp) =>
    assert.throws(
      () => ModelTokenizer.load(slow),
      (e: unknown) =>
        e instanceof ModelError && e.code === "BAD_TOKENIZER" && e.file === join(slow, file) && detail.test(e.message),
    );
  const merges = readFileSync(join(slow, "merges.txt"), "utf8");
  writeFileSync(join(slow, "merges.txt"), merges.replace(/\n[^\n]*\n/, "\nzzz@@ qqq@@\n"));
  expectBad("merges.txt", /line 2 is not a merge of two tokens of vocab.json/);
  writeFileSync(join(slow, "merges.txt"), merges);
  const vocab = readFileSync(join(slow, "vocab.json"), "utf8");
  writeFileSync(join(slow, "vocab.json"), JSON.stringify({ a: -1 }));
  expectBad("vocab.json", /not a JSON object of token → id/);
  writeFileSync(join(slow, "vocab.json"), vocab);
  const file = join(slow, "tokenizer_config.json");
  writeFileSync(
    file,
    JSON.stringify({ ...JSON.parse(readFileSync(file, "utf8")), tokenizer_class: "RobertaTokenizer" }),
  );
  expectBad("tokenizer_config.json", /tokenizer_class RobertaTokenizer/);
});

test("hf cache: a repo with only a slow tokenizer's files is listed as loadable, one with no tokenizer says so", async (t) => {
  const { slow } = await bpeFolders(t);
  const hub = join(tempDir(t), "hub");
  putInHubCache(hub, "org/slow", slow, "1".repeat(40));
  rmSync(join(slow, "merges.txt"));
  putInHubCache(hub, "org/none", slow, "2".repeat(40));
  const by = Object.fromEntries((await listCachedModels({ HF_HUB_CACHE: hub })).map((m) => [m.repo, m]));
  assert.equal(by["org/slow"].problem, null);
  assert.equal(by["org/none"].problem?.code, "NOT_FOUND");
  assert.match(by["org/none"].problem!.message, /tokenizer.json is missing/);
});

test("GGUF export of a vocab.json + merges.txt folder imports back with the same ids and text", async (t) => {
  const { slow } = await bpeFolders(t);
  const out = join(tempDir(t), "m.gguf");
  const e = hire(["export", "--model", slow, "--gguf", out]);
  assert.equal(e.status, 0, e.stderr);
  assert.deepEqual(greedyIds(out), greedyIds(slow));
});

function greedyIds(model: string): { prompt_ids: number[]; ids: number[]; text: string } {
  const r = hire([
    "generate",
    "--model",
    model,
    "--prompt",
    " leading space, and  two spaces",
    "--max-tokens",
    "3",
    "--temperature",
    "0",
    "--json",
  ]);
  assert.equal(r.status, 0, r.stderr);
  const { prompt_ids, ids, text } = JSON.parse(r.stdout) as { prompt_ids: number[]; ids: number[]; text: string };
  return { prompt_ids, ids, text };
}

const llamaCpp = await loadLlamaCpp(2);
after(async () => {
  if ("llama" in llamaCpp) await llamaCpp.llama.dispose();
});

test("GGUF export of a tokenizer.model folder: a SentencePiece vocabulary that imports back the same and that llama.cpp tokenizes as sentencepiece", async (t) => {
  const { dir: spm, expected } = fixture(t, "llama-like");
  const dir = join(tempDir(t), "spm");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 1, out: dir, shape: { vocab: expected.vocab_size } });
  rmSync(join(dir, "tokenizer.json"));
  rmSync(join(dir, "tokenizer_config.json"));
  copyFileSync(join(spm, "tokenizer.model"), join(dir, "tokenizer.model"));
  const out = join(tempDir(t), "spm.gguf");
  const e = hire(["export", "--model", dir, "--gguf", out]);
  assert.equal(e.status, 0, e.stderr);
  assert.deepEqual(greedyIds(out), greedyIds(dir));
  if ("skipped" in llamaCpp) return t.skip(llamaCpp.skipped);
  const model = await llamaCpp.llama.loadModel({ modelPath: out, gpuLayers: 0 });
  try {
    for (const c of expected.cases) {
      const ids = model.tokenize(c.text, false);
      // llama.cpp cuts the text at a user-defined piece first, and puts the "▁" sentencepiece puts
      // before the piece after it.
      if (c.pieces[1] === "<tool_call>") assert.deepEqual(ids, [c.ids[1], c.ids[0], ...c.ids.slice(2)], c.text);
      else assert.deepEqual(ids, c.ids, c.text);
    }
  } finally {
    await model.dispose();
  }
});

test("bad input: a tokenizer_config.json added token that is not {content} is BAD_TOKENIZER naming that file", (t) => {
  const { dir } = fixture(t, "llama-like");
  const file = join(dir, "tokenizer_config.json");
  writeFileSync(file, JSON.stringify({ added_tokens_decoder: { "700": "<|im_start|>" } }));
  assert.throws(
    () => ModelTokenizer.load(dir),
    (e: unknown) =>
      e instanceof ModelError &&
      e.code === "BAD_TOKENIZER" &&
      e.file === file &&
      /added_tokens_decoder\["700"\] is not \{content, \.\.\.\} under an id/.test(e.message),
  );
});
