// A model folder with only SentencePiece's tokenizer.model (no tokenizer.json) tokenizes as
// sentencepiece itself does: test/spm holds BPE models trained with Google's sentencepiece and the
// ids it gives for a set of texts (tools/tokenizer/make-spm-fixtures.py), which the conversion to
// tokenizer.json must reproduce; such a folder loads and chats; files that are not BPE
// SentencePiece models are BAD_TOKENIZER errors naming the file.
import { test } from "node:test";
import assert from "node:assert/strict";
import { copyFileSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { REPO_ROOT, hire, tempDir } from "./helpers.js";
import { ModelTokenizer } from "../core/loader/tokenizer.js";
import { ModelError } from "../core/loader/errors.js";
import { loadModel } from "../core/loader/model-folder.js";
import { makeModel } from "../core/modelgen/make-model.js";
import { Session } from "../core/engine/session.js";

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
