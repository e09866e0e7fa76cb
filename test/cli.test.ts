// The `hire` command as a user runs it: a real process, real files, real exit codes.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { createServer, type AddressInfo } from "node:net";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { hire, REPO_ROOT, useReasoningTemplate } from "./helpers.js";
import { loadModel } from "../core/loader/model-folder.js";
import { Session } from "../core/engine/session.js";
import { defaultProbeBytes, lastLevelCacheBytes, parseCacheSize } from "../core/engine/bench.js";

let root: string;
let model: string;

before(() => {
  root = mkdtempSync(join(tmpdir(), "hire-cli-"));
  model = join(root, "tiny");
  const r = hire([
    "make-model",
    "--arch",
    "llama",
    "--hidden",
    "48",
    "--heads",
    "4",
    "--kv-heads",
    "2",
    "--layers",
    "2",
    "--intermediate",
    "96",
    "--vocab",
    "400",
    "--dtype",
    "bf16",
    "--seed",
    "9",
    "--out",
    model,
  ]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /wrote .*tiny: llama/);
});
after(() => rmSync(root, { recursive: true, force: true }));

test("usage errors exit with 2 and say what is wrong", () => {
  assert.equal(hire([]).status, 2);
  const unknown = hire(["frobnicate"]);
  assert.equal(unknown.status, 2);
  assert.match(unknown.stderr, /unknown command "frobnicate"/);
  const noPrompt = hire(["generate", "--model", model]);
  assert.equal(noPrompt.status, 2);
  assert.match(noPrompt.stderr, /--prompt TEXT is required/);
  const badNum = hire(["generate", "--model", model, "--prompt", "x", "--temperature", "hot"]);
  assert.equal(badNum.status, 2);
  assert.match(badNum.stderr, /--temperature must be a number/);
  const badFlag = hire(["generate", "--model", model, "--prompt", "x", "--bogus"]);
  assert.equal(badFlag.status, 2);
  const badPreset = hire(["make-model", "--preset", "gpt-5", "--out", join(root, "x")]);
  assert.equal(badPreset.status, 2);
  assert.match(badPreset.stderr, /unknown preset "gpt-5"/);
  // bench with nothing to time printed NaN and Infinity.
  const noDecode = hire(["bench", "--model", model, "--decode-tokens", "0"]);
  assert.equal(noDecode.status, 2, noDecode.stderr);
  assert.match(noDecode.stderr, /--decode-tokens must be a positive integer, got "0"/);
  // A folder make-model cannot write to is its error, not an exception's stack.
  const unwritable = hire(["make-model", "--preset", "tiny-llama", "--out", "/proc/hire-model"]);
  assert.equal(unwritable.status, 1, unwritable.stderr);
  assert.match(unwritable.stderr, /^hire make-model: cannot write into \/proc/);
  // Export outputs that would overwrite each other, or the model's own files, are usage errors that
  // write nothing (an ONNX export onto the model's weights replaced them).
  const weights = join(model, "model.safetensors");
  const before = readFileSync(weights);
  for (const [args, pattern] of [
    [["--gguf", join(root, "a.gguf"), "--onnx", join(root, "a.gguf")], /--gguf and --onnx would both write/],
    [["--onnx", weights], /--onnx would overwrite .*model\.safetensors, a file of the model being exported/],
    [["--gguf", join(model, "config.json")], /--gguf would overwrite .*config\.json/],
  ] as const) {
    const r = hire(["export", "--model", model, ...args]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, pattern);
  }
  assert.ok(readFileSync(weights).equals(before), "the model's weights are untouched");
  assert.ok(!existsSync(join(root, "a.gguf")));
  // A folder that holds a model already: kept, saying how to replace it; --overwrite does.
  const again = hire(["make-model", "--preset", "tiny-llama", "--seed", "2", "--out", model]);
  assert.equal(again.status, 1, again.stderr);
  assert.match(again.stderr, /already exists and is not empty \(--overwrite, or the overwrite option, replaces it\)/);
  const into = join(root, "replaced");
  assert.equal(hire(["make-model", "--preset", "tiny-llama", "--seed", "1", "--out", into]).status, 0);
  const replaced = hire(["make-model", "--preset", "tiny-llama", "--seed", "2", "--out", into, "--overwrite"]);
  assert.equal(replaced.status, 0, replaced.stderr);
  // The native pool runs 1..256 threads: outside that, a usage error rather than the addon's throw.
  for (const threads of ["0", "1000"]) {
    const r = hire(["generate", "--model", model, "--prompt", "x", "--max-tokens", "1", "--threads", threads]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /^hire generate: --threads must be an integer in 1\.\.256/);
  }
});

/** hire() without blocking the event loop (the test's own server must answer meanwhile). */
function hireAsync(args: string[]): Promise<{ status: number | null; stderr: string }> {
  return new Promise((done) => {
    const p = spawn(process.execPath, [join(REPO_ROOT, "bin", "hire.js"), ...args]);
    let stderr = "";
    p.stderr.on("data", (c: Buffer) => (stderr += c.toString()));
    const timer = setTimeout(() => p.kill(), 60_000);
    p.on("close", (status) => {
      clearTimeout(timer);
      done({ status, stderr });
    });
  });
}

test("eval --plot into a missing folder, and serve on a port in use, are usage errors before any work", async () => {
  const plot = hire([
    "eval",
    "--model",
    model,
    "--text",
    join(REPO_ROOT, "README.md"),
    "--plot",
    join(root, "no", "p.svg"),
  ]);
  assert.equal(plot.status, 2, plot.stderr);
  assert.match(plot.stderr, /^hire eval: --plot: folder .*\/no does not exist\n$/);
  // A port taken by another server: said at once, before the model loads.
  const taken = createServer();
  await new Promise<void>((done) => taken.listen(0, "127.0.0.1", done));
  try {
    const port = String((taken.address() as AddressInfo).port);
    const r = await hireAsync(["serve", "--port", port, "--model", model]);
    assert.equal(r.status, 2, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^hire serve: --port ${port}: the port is in use \\(EADDRINUSE\\); pick another\\n$`),
    );
  } finally {
    taken.close();
  }
});

test("generate --json prints the documented object", () => {
  const out = generateJson(["--max-tokens", "5", "--logprobs", "3"]);
  assert.ok(Array.isArray(out.prompt_ids) && out.prompt_ids.length > 0);
  assert.ok(out.ids.length >= 1 && out.ids.length <= 5);
  assert.equal(typeof out.text, "string");
  assert.equal(out.steps.length, out.ids.length);
  for (const [i, s] of out.steps.entries()) {
    assert.equal(s.id, out.ids[i]);
    assert.equal(s.top_logprobs?.length, 3);
    assert.equal(s.top_logprobs?.[0][0], s.id, "greedy picks the most likely token");
  }
  assert.ok(out.timings.prefill_ms >= 0 && out.timings.decode_tokens_per_s >= 0);
});

test("seeded sampling through the CLI is reproducible", () => {
  const args = [
    "generate",
    "--model",
    model,
    "--prompt",
    "Once",
    "--max-tokens",
    "12",
    "--temperature",
    "1.2",
    "--top-p",
    "0.95",
    "--json",
  ];
  const a = JSON.parse(hire([...args, "--seed", "5"]).stdout).ids;
  const b = JSON.parse(hire([...args, "--seed", "5"]).stdout).ids;
  const c = JSON.parse(hire([...args, "--seed", "6"]).stdout).ids;
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
});

test("chat: a two-turn conversation over stdin, using the chat template", () => {
  const r = hire(
    ["chat", "--model", model, "--max-tokens", "4", "--temperature", "0", "--ignore-eos"],
    "Hi there\nAnd again\n/exit\n",
  );
  assert.equal(r.status, 0, r.stderr);
  const stats = r.stderr.match(/\[\d+ tokens, [\d.]+ tokens\/s, \w+/g) ?? [];
  assert.equal(stats.length, 2, `two replies expected:\n${r.stderr}`);
});

test("chat on a model without a chat template is a usage error before the first prompt", () => {
  const dir = join(root, "base");
  cpSync(model, dir, { recursive: true });
  const file = join(dir, "tokenizer_config.json");
  const config = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  delete config.chat_template;
  writeFileSync(file, JSON.stringify(config));
  const r = hire(["chat", "--model", dir], "Hi there\n/exit\n");
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /has no chat template .*use hire generate --prompt TEXT/);
  assert.equal(r.stdout, "", "no banner, no prompt");
});

test("chat --no-think: the prompt gets the template's empty think block (enable_thinking false)", async () => {
  const dir = join(root, "reasoning");
  cpSync(model, dir, { recursive: true });
  useReasoningTemplate(dir);
  // The reply the API gives for each rendering of the one-turn conversation, greedy.
  const m = loadModel(dir);
  const replies: string[] = [];
  try {
    for (const thinking of [undefined, false]) {
      const text = m.tokenizer.applyChatTemplate([{ role: "user", content: "Hi there" }], true, { thinking });
      const session = new Session(m);
      for await (const ev of session.generate(m.tokenizer.encode(text, false), {
        maxTokens: 6,
        temperature: 0,
        ignoreEos: true,
      })) {
        if (ev.type === "done") replies.push(ev.text);
      }
    }
  } finally {
    m.close();
  }
  assert.notEqual(replies[0], replies[1], "the two prompts should lead to different replies");
  const args = ["chat", "--model", dir, "--max-tokens", "6", "--temperature", "0", "--ignore-eos"];
  for (const [flags, want] of [
    [[], replies[0]],
    [["--no-think"], replies[1]],
  ] as const) {
    const r = hire([...args, ...flags], "Hi there\n/exit\n");
    assert.equal(r.status, 0, r.stderr);
    assert.ok(
      r.stdout.includes(want),
      `${flags.join(" ") || "default"}: ${JSON.stringify(r.stdout)} lacks ${JSON.stringify(want)}`,
    );
  }
});

test("bench --json reports speed against the measured roofline", () => {
  const out = benchJson<Record<string, number>>(["--prompt-tokens", "8", "--decode-tokens", "4"]);
  for (const k of [
    "decode_tokens_per_s",
    "decode_ms_per_token",
    "prefill_tokens_per_s",
    "weight_bytes_per_token",
    "kv_bytes_per_token",
    "effective_read_gb_per_s",
    "measured_read_bandwidth_gb_per_s",
    "measured_gather_bandwidth_gb_per_s",
    "gather_chunk_bytes",
    "percent_of_roofline",
  ]) {
    assert.ok(typeof out[k] === "number" && out[k] > 0, `${k} = ${out[k]}`);
  }
  assert.ok(Object.keys(out).some((k) => k.includes("roofline")));
  // The gather probe reads pieces the size of one neuron's W_gate + W_up rows: 2 rows × 48 bf16 values.
  assert.equal(out.gather_chunk_bytes, 2 * 48 * 2);
  // Keys and values of positions 0 .. p for the tokens at p = 8 .. 11: 2 layers × 2 key/value heads ×
  // head_dim 12 × 4 bytes, for K and for V.
  assert.equal(out.kv_bytes_per_token, 2 * 2 * 12 * 4 * 2 * ((9 + 10 + 11 + 12) / 4));
  const bytes = out.weight_bytes_per_token + out.kv_bytes_per_token;
  assert.ok(
    Math.abs(out.effective_read_gb_per_s - bytes / (out.decode_ms_per_token * 1e6)) <
      0.01 * out.effective_read_gb_per_s + 1e-3,
  );
});

test("bench --kv-cache f16 reads half the cache bytes; a bad --kv-cache is a usage error", () => {
  const out = benchJson<{ kv_cache: string; kv_bytes_per_token: number }>([
    "--prompt-tokens",
    "8",
    "--decode-tokens",
    "4",
    "--kv-cache",
    "f16",
  ]);
  assert.equal(out.kv_cache, "f16");
  assert.equal(out.kv_bytes_per_token, 2 * 2 * 12 * 2 * 2 * ((9 + 10 + 11 + 12) / 4));
  const bad = hire(["generate", "--model", model, "--prompt", "Hi", "--kv-cache", "f8"]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--kv-cache must be one of f32, f16, got "f8"/);
});

test("the bandwidth probe's buffer is four times the last-level cache when that beats 512 MiB", () => {
  assert.equal(parseCacheSize("491520K"), 491520 * 1024);
  assert.equal(parseCacheSize("32M\n"), 32 * 1024 ** 2);
  assert.equal(parseCacheSize("1G"), 1024 ** 3);
  assert.equal(parseCacheSize("lots"), 0);
  assert.equal(defaultProbeBytes(32 * 1024 ** 2), 512 * 1024 ** 2);
  assert.equal(defaultProbeBytes(480 * 1024 ** 2), 4 * 480 * 1024 ** 2);
  const dir = mkdtempSync(join(tmpdir(), "hire-cache-"));
  try {
    for (const [index, size] of [
      ["index0", "48K"],
      ["index2", "2048K"],
      ["index3", "491520K"],
    ]) {
      mkdirSync(join(dir, index));
      writeFileSync(join(dir, index, "size"), `${size}\n`);
    }
    writeFileSync(join(dir, "uevent"), "");
    assert.equal(lastLevelCacheBytes(dir), 491520 * 1024);
    assert.equal(lastLevelCacheBytes(join(dir, "missing")), 0);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("without --model: the built-in default model, or a message saying how to get one", () => {
  const r = hire(["generate", "--prompt", "Hi", "--max-tokens", "2"]);
  if (existsSync(join(REPO_ROOT, "assets", "models", "DEFAULT"))) {
    assert.equal(r.status, 0, r.stderr);
  } else {
    assert.equal(r.status, 2);
    assert.match(r.stderr, /no built-in model in assets\/models\/ yet.*--model DIR/s);
  }
});

test("generate with sparsity flags reports per-layer telemetry (counts, or indices with --trace)", () => {
  const base = ["generate", "--model", model, "--prompt", "Hello", "--max-tokens", "3", "--temperature", "0", "--json"];
  const r = hire([
    ...base,
    "--ffn",
    "hire",
    "--ffn-k",
    "25%",
    "--oversample",
    "2",
    "--predictor",
    "int8",
    "--audit",
    "1",
  ]);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  const layer = out.steps[1].layers[0];
  assert.equal(layer.method, "hire");
  assert.equal(layer.k, 24); // 25 % of 96 neurons
  assert.equal(layer.candidates, 48);
  assert.equal(layer.selected_count, 24);
  assert.ok(layer.recall >= 0 && layer.recall <= 1);
  const traced = JSON.parse(hire([...base, "--ffn", "topk-exact", "--ffn-k", "10", "--trace"]).stdout);
  assert.equal(traced.steps[1].layers[1].selected.length, 10);
  const bad = hire([...base, "--ffn", "magic"]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--ffn must be one of/);
  const badK = hire([...base, "--ffn", "hire", "--ffn-k", "1.5"]);
  assert.equal(badK.status, 2);
  assert.match(badK.stderr, /FFN k must be a fraction/);
});

test("bench --methods interleaves methods and reports speedup rows", () => {
  const { rows } = benchJson<{
    rows: {
      method: string;
      ffn_k: number | null;
      speedup: number;
      bytes_per_token: number;
      percent_of_roofline: number;
      steps: { step: string; ms_per_token: number; bytes_per_token: number; gb_per_s: number }[];
    }[];
  }>(["--methods", "hire,topk-exact", "--ffn-k", "0.1,0.5", "--prompt-tokens", "4", "--decode-tokens", "3"]);
  assert.deepEqual(
    rows.map((x) => [x.method, x.ffn_k]),
    [
      ["dense", null],
      ["hire", 0.1],
      ["hire", 0.5],
      ["topk-exact", 0.1],
      ["topk-exact", 0.5],
    ],
  );
  assert.equal(rows[0].speedup, 1);
  for (const row of rows) assert.ok(row.speedup > 0 && row.percent_of_roofline > 0);
  assert.ok(rows[1].bytes_per_token < rows[2].bytes_per_token, "a smaller k reads fewer bytes");
  assert.ok(rows[1].bytes_per_token < rows[0].bytes_per_token);
  // Steps: HiRE's FFN in its three parts, every other FFN whole; their bytes are the row's but for the
  // embedding row and the final norm.
  const names = (i: number) => rows[i].steps.map((x) => x.step);
  assert.deepEqual(names(0), ["attention", "ffn", "output layer"]);
  assert.deepEqual(names(1), ["attention", "predictor", "exact rows", "down product", "output layer"]);
  assert.deepEqual(names(3), ["attention", "ffn", "output layer"]);
  for (const row of rows) {
    let bytes = 0;
    for (const st of row.steps) {
      assert.ok(st.ms_per_token > 0 && st.bytes_per_token > 0, `${row.method} ${st.step}`);
      assert.ok(st.gb_per_s > 0, `${row.method} ${st.step}: a rate`);
      bytes += st.bytes_per_token;
    }
    const rest = row.bytes_per_token - bytes;
    assert.ok(
      rest >= 0 && rest < 0.02 * row.bytes_per_token,
      `${row.method}: steps' bytes ${bytes} of ${row.bytes_per_token}`,
    );
  }
  // A smaller k: fewer exact rows and down columns, the same predictor.
  const step = (i: number, name: string) => rows[i].steps.find((x) => x.step === name)!.bytes_per_token;
  assert.ok(step(1, "exact rows") < step(2, "exact rows") && step(1, "down product") < step(2, "down product"));
  assert.equal(step(1, "predictor"), step(2, "predictor"));
});

test("eval reports perplexity and recall per method and k, and draws the plot", () => {
  const text = join(root, "eval.txt");
  writeFileSync(text, "The quick brown fox jumps over the lazy dog. ".repeat(8));
  const svg = join(root, "eval.svg");
  const rows = evalJson(text, ["--ffn-k", "0.1,1", "--oversample", "1,2", "--plot", svg]).rows as {
    method: string;
    ffn_k: number | null;
    perplexity: number;
    mean_recall: number | null;
    recall_per_layer: number[] | null;
  }[];
  assert.equal(rows.length, 5);
  const dense = rows[0];
  assert.equal(dense.method, "dense");
  assert.ok(dense.perplexity > 1);
  const full = rows.filter((x) => x.ffn_k === 1);
  for (const row of full) {
    assert.ok(Math.abs(row.perplexity - dense.perplexity) < 1e-3 * dense.perplexity, "k = 100 % is dense");
    assert.equal(row.mean_recall, 1);
  }
  for (const row of rows.slice(1)) assert.equal(row.recall_per_layer!.length, 2);
  const plot = readFileSync(svg, "utf8");
  assert.match(plot, /^<svg[\s\S]*<\/svg>$/);
  // One solid (recall) and one dashed (perplexity) line per method × oversample, a point per k.
  const lines = [...plot.matchAll(/<polyline [^>]*?(stroke-dasharray="6 4" )?points="([^"]*)"/g)].map((m) => ({
    dashed: m[1] !== undefined,
    points: m[2].split(" ").map((p) => p.split(",").map(Number)),
  }));
  assert.equal(lines.length, 4);
  for (const l of lines) assert.equal(l.points.length, 2, "k = 0.1 and k = 1");
  // Recall 1 at k = 100 % sits on the top of the plot area (y = 36); recall at k = 0.1 is below it.
  for (const l of lines.filter((l) => !l.dashed)) {
    assert.equal(l.points[1][1], 36);
    assert.ok(l.points[0][1] > 36);
  }
  for (const label of ["hire ×1", "hire ×2", ">0.1<", ">1<", "recall@k (solid)", "perplexity (dashed)"])
    assert.ok(plot.includes(label), label);
  assert.equal(hire(["eval", "--model", model]).status, 2, "--text is required");
});

test("backend choice on the CLI: hire gpus reports what auto picks; a bad --backend or HIRE_BACKEND is a clear error", () => {
  const gpus = hire(["gpus", "--json"]);
  assert.equal(gpus.status, 0, gpus.stderr);
  const info = JSON.parse(gpus.stdout) as { compiled: boolean; devices: unknown[]; reason: string };
  assert.equal(typeof info.compiled, "boolean");
  if (info.devices.length === 0) assert.ok(info.reason.length > 0, "no GPU comes with a reason");
  const text = hire(["gpus"]);
  assert.match(text.stdout, new RegExp(`--backend auto +${info.devices.length > 0 ? "cuda:" : "cpu"}`));

  const flag = hire(["generate", "--prompt", "Hi", "--max-tokens", "1", "--backend", "tpu"]);
  assert.equal(flag.status, 2);
  assert.match(flag.stderr, /--backend: "tpu" is not a backend/);
  const env = hire(["generate", "--prompt", "Hi", "--max-tokens", "1"], undefined, { HIRE_BACKEND: "tpu" });
  assert.equal(env.status, 1);
  assert.match(env.stderr, /HIRE_BACKEND: "tpu" is not a backend/);
  assert.doesNotMatch(env.stderr, /\n\s+at /, "one line, no stack trace");
});

// ---- sparsity flags, each checked against what it must do to the telemetry -------------------
// The tiny model of `before`: 48 hidden, 96 FFN neurons (gated), 400 tokens, 2 layers, bf16.
const F = 96;
const V = 400;
const GATE_UP_ROW = 2 * 48 * 2; // one neuron's W_gate and W_up rows, as HiRE reads them
const DOWN_COL = 48 * 2; // one neuron's W_down column
const HEAD_ROW = 48 * 2; // one token's LM-head row
const FFN_DENSE = 3 * F * 48 * 2;
const HEAD_DENSE = V * HEAD_ROW;
// An int8:32 predictor row over 48 inputs (core/native/src/quant.h): 64 codes (48 padded to whole
// groups of 32) and one f16 scale per group.
const INT8_32_ROW = 64 + 2 * 2;

interface LayerJson {
  layer: number;
  method?: string;
  k?: number;
  candidates?: number;
  bytes?: number;
  dense_bytes?: number;
  recall?: number;
  rel_error?: number;
  selected?: number[];
}
interface HeadJson {
  method: string;
  k: number;
  candidates: number;
  bytes: number;
  dense_bytes: number;
  argmax_in_candidates?: boolean;
  mass_covered?: number;
}
interface StepJson {
  id: number;
  top_logprobs?: [number, number | null][];
  layers: LayerJson[];
  head?: HeadJson;
}

/** `hire generate --json`'s object (the fields these tests read). */
interface GenerateJsonOut {
  prompt_ids: number[];
  ids: number[];
  text: string;
  steps: StepJson[];
  timings: { prefill_ms: number; decode_tokens_per_s: number };
}

// FFN k = 10 of 96 with k' = 1.5 k over 4 shards and an int8:32 predictor, and a HiRE head keeping
// 10 tokens of 1.5 × 10 candidates: the settings whose counts and bytes the tests below derive.
const SHARDED_FFN = ["--ffn-k", "10", "--oversample", "1.5", "--predictor", "int8:32", "--shards", "4"];
const SHARDED_HEAD = ["--head", "hire", "--head-k", "10", "--head-oversample", "1.5"];

/** Greedy `hire generate --json` of "Hello" on the tiny model, parsed (exit 0 asserted). */
function generateJson(args: string[]): GenerateJsonOut {
  const r = hire(["generate", "--model", model, "--prompt", "Hello", "--temperature", "0", "--json", ...args]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

/** `hire bench --json --repeats 1` on the tiny model, parsed (exit 0 asserted). */
function benchJson<T>(args: string[]): T {
  const r = hire(["bench", "--model", model, "--json", "--repeats", "1", ...args]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as T;
}

/** `hire eval --json` of `text` on the tiny model, parsed (exit 0 asserted). */
function evalJson(text: string, args: string[]): { rows: unknown[] } {
  const r = hire(["eval", "--model", model, "--text", text, "--json", ...args]);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as { rows: unknown[] };
}

/** Its steps, run past EOS; steps[0] is the prefill's token, steps[i] decode step i - 1. */
function generateSteps(args: string[]): StepJson[] {
  return generateJson(["--ignore-eos", ...args]).steps;
}

/** A malformed flag value: exit 2 and one line naming what is wrong. */
function usageError(args: string[], message: RegExp): void {
  const r = hire(["generate", "--model", model, "--prompt", "Hello", "--max-tokens", "1", ...args]);
  assert.equal(r.status, 2, `${args.join(" ")}: ${r.stderr}`);
  assert.match(r.stderr, message);
}

/** How many of the selected neurons fall in each of `parts` equal ranges of the F neurons (DA-top-k's shards). */
function perShard(selected: number[], parts: number): number[] {
  const counts = new Array<number>(parts).fill(0);
  for (const i of selected) counts[Math.floor((i * parts) / F)]++;
  return counts;
}

test("generate --head hire: --head-k/--head-oversample/--head-predictor shape every step's output layer; --audit N audits every N-th decode step", () => {
  const steps = generateSteps([
    "--max-tokens",
    "3",
    "--logprobs",
    "10",
    "--head",
    "hire",
    "--head-k",
    "8",
    "--head-oversample",
    "2",
    "--head-predictor",
    "int8:32",
  ]);
  assert.equal(steps.length, 3);
  for (const s of steps) {
    // k' = 2 × 8 candidate tokens scored exactly; the predictor reads 400 int8:32 rows.
    assert.ok(s.head, "every step reports the output layer");
    const { method, k, candidates, bytes, dense_bytes } = s.head;
    assert.deepEqual(
      { method, k, candidates, bytes, dense_bytes },
      {
        method: "hire",
        k: 8,
        candidates: 16,
        bytes: V * INT8_32_ROW + 16 * HEAD_ROW,
        dense_bytes: HEAD_DENSE,
      },
    );
    assert.ok(!("mass_covered" in s.head), "no audit without --audit");
    for (const l of s.layers) assert.equal(l.method, undefined, "the FFN stays dense");
    // Sampling sees only the 8 kept tokens: 8 finite log-probabilities (summing to probability 1), the rest -inf (null).
    const lp = s.top_logprobs!;
    assert.equal(lp[0][0], s.id);
    assert.deepEqual(
      lp.map(([, p]) => p !== null),
      [...new Array<boolean>(8).fill(true), false, false],
    );
    assert.ok(Math.abs(lp.reduce((sum, [, p]) => sum + (p === null ? 0 : Math.exp(p)), 0) - 1) < 1e-6);
  }

  const audited = (s: StepJson) => {
    const fields = [...s.layers.map((l) => "recall" in l && "rel_error" in l), "mass_covered" in s.head!];
    assert.ok(
      fields.every((x) => x === fields[0]),
      "every module of a step is audited, or none",
    );
    if (fields[0]) {
      for (const l of s.layers) assert.ok(l.recall! >= 0 && l.recall! <= 1 && l.rel_error! >= 0);
      assert.equal(typeof s.head!.argmax_in_candidates, "boolean");
      assert.ok(s.head!.mass_covered! > 0 && s.head!.mass_covered! <= 1);
    }
    return fields[0];
  };
  const sparse = ["--ffn", "hire", "--head", "hire", "--head-k", "8"];
  // The prefill's token is never audited; decode steps 0, 2, 4 are with --audit 2.
  const every2 = generateSteps([...sparse, "--max-tokens", "6", "--audit", "2"]);
  assert.deepEqual(every2.map(audited), [false, true, false, true, false, true]);
  const all = generateSteps([...sparse, "--max-tokens", "3", "--audit", "all"]);
  assert.deepEqual(all.map(audited), [false, true, true]);
  const off = generateSteps([...sparse, "--max-tokens", "3", "--audit", "off"]);
  assert.deepEqual(off.map(audited), [false, false, false]);

  usageError(["--head", "best"], /--head must be one of dense, hire, got "best"/);
  usageError(["--head", "hire", "--head-k", "abc"], /--head-k must be a number, got "abc"/);
  usageError(["--head", "hire", "--head-predictor", "int3"], /predictor "int3" is not one of int4/);
  usageError(["--audit", "sometimes"], /--audit must be a number, got "sometimes"/);
  usageError(["--audit", "1.5"], /--audit must be an integer, got "1.5"/);
});

test("generate --shards splits every selection evenly over the shards; --layer-k, --oversample and --predictor set exact counts and bytes", () => {
  const steps = generateSteps([
    "--max-tokens",
    "3",
    "--trace",
    "--ffn",
    "hire",
    ...SHARDED_FFN,
    "--layer-k",
    "1=25%",
    ...SHARDED_HEAD,
  ]);
  assert.equal(steps.length, 3);
  for (const s of steps.slice(1)) {
    const [l0, l1] = s.layers;
    // Layer 0: k = 10; k' = 1.5 × 10 rounded up to a multiple of 4 shards = 16 (15 with one shard);
    // shard s keeps 10 / 4 neurons, the first two one more.
    assert.equal(l0.method, "hire");
    assert.equal(l0.k, 10);
    assert.equal(l0.candidates, 16);
    assert.deepEqual(perShard(l0.selected!, 4), [3, 3, 2, 2]);
    assert.equal(l0.bytes, F * INT8_32_ROW + 16 * GATE_UP_ROW + 10 * DOWN_COL);
    // Layer 1: --layer-k 1=25 % is 24 neurons, 36 candidates, 6 per shard.
    assert.equal(l1.k, 24);
    assert.equal(l1.candidates, 36);
    assert.deepEqual(perShard(l1.selected!, 4), [6, 6, 6, 6]);
    assert.equal(l1.bytes, F * INT8_32_ROW + 36 * GATE_UP_ROW + 24 * DOWN_COL);
    assert.equal(l0.dense_bytes, FFN_DENSE);
    // The output layer shards too: 1.5 × 10 candidate tokens rounded up to 16.
    assert.equal(s.head!.k, 10);
    assert.equal(s.head!.candidates, 16);
  }
  // topk-exact over 2 shards: 5 of each half of the neurons.
  const exact = generateSteps([
    "--max-tokens",
    "3",
    "--trace",
    "--ffn",
    "topk-exact",
    "--ffn-k",
    "10",
    "--shards",
    "2",
  ]);
  for (const s of exact.slice(1)) {
    for (const l of s.layers) {
      assert.equal(l.selected!.length, 10);
      assert.deepEqual(perShard(l.selected!, 2), [5, 5], `layer ${l.layer}: ${l.selected}`);
    }
  }

  usageError(["--ffn", "hire", "--shards", "0"], /shards must be an integer in 1\.\.64, got 0/);
  usageError(["--ffn", "hire", "--shards", "2.5"], /--shards must be an integer, got "2.5"/);
  usageError(["--ffn", "hire", "--layer-k", "1:0.5"], /--layer-k must look like LAYER=K, got "1:0.5"/);
  usageError(["--ffn", "hire", "--layer-k", "2=0.5"], /per-layer k names layer 2, but the model has layers 0\.\.1/);
});

test("generate --layer-oversample and --layer-predictor override one layer's candidates and predictor", () => {
  const steps = generateSteps([
    "--max-tokens",
    "3",
    "--ffn",
    "hire",
    "--ffn-k",
    "10",
    "--oversample",
    "1",
    "--predictor",
    "int8:32",
    "--layer-oversample",
    "1=2",
    "--layer-predictor",
    "0=int4:32",
  ]);
  // An int4:32 row over 48 inputs: 32 code bytes (64 values, two per byte) and two f16 scales.
  const int4Row = 32 + 2 * 2;
  for (const s of steps.slice(1)) {
    const [l0, l1] = s.layers;
    assert.deepEqual([l0.k, l0.candidates, l1.k, l1.candidates], [10, 10, 10, 20]);
    assert.equal(l0.bytes, F * int4Row + 10 * GATE_UP_ROW + 10 * DOWN_COL);
    assert.equal(l1.bytes, F * INT8_32_ROW + 20 * GATE_UP_ROW + 10 * DOWN_COL);
  }
  usageError(["--ffn", "hire", "--layer-oversample", "x=2"], /--layer-oversample must look like LAYER=O, got "x=2"/);
  usageError(["--ffn", "hire", "--layer-oversample", "0=0.5"], /oversample of layer 0 must be ≥ 1, got 0\.5/);
  usageError(["--ffn", "hire", "--layer-predictor", "1=int3"], /predictor "int3" is not one of/);
});

test("bench --methods dense,hire,dip,topk-exact --head hire: a row per method, with the bytes its sparsity flags read", () => {
  const out = benchJson<{
    weight_bytes_per_token: number;
    kv_bytes_per_token: number;
    rows: { method: string; ffn_k: number | null; head: string; speedup: number; bytes_per_token: number }[];
  }>([
    "--methods",
    "dense,hire,dip,topk-exact",
    ...SHARDED_FFN,
    ...SHARDED_HEAD,
    "--head-predictor",
    "int8:32",
    "--prompt-tokens",
    "4",
    "--decode-tokens",
    "2",
  ]);
  assert.deepEqual(
    out.rows.map((x) => [x.method, x.ffn_k, x.head]),
    [
      ["dense", null, "dense"],
      ["hire+head", 10, "hire"],
      ["dip+head", 10, "hire"],
      ["topk-exact+head", 10, "hire"],
    ],
  );
  assert.equal(out.rows[0].speedup, 1);
  for (const row of out.rows) assert.ok(typeof row.speedup === "number" && row.speedup > 0, `${row.method}`);
  // Per token: the dense weights, less what each of the 2 FFN layers and the output layer saved, plus
  // the KV cache (the same for every method). The head: an int8:32 predictor and 16 candidate rows
  // (k' = 1.5 × 10 rounded up to 4 shards).
  const W = out.weight_bytes_per_token + out.kv_bytes_per_token;
  const headSaved = HEAD_DENSE - (V * INT8_32_ROW + 16 * HEAD_ROW);
  const expected = (layerBytes: number) => W - 2 * (FFN_DENSE - layerBytes) - headSaved;
  const bytes = Object.fromEntries(out.rows.map((x) => [x.method, x.bytes_per_token]));
  assert.deepEqual(bytes, {
    dense: W,
    // int8:32 predictor, 16 candidates' gate/up rows, 10 down columns.
    "hire+head": expected(F * INT8_32_ROW + 16 * GATE_UP_ROW + 10 * DOWN_COL),
    // 10 input columns of W_gate and of W_up (96 bf16 values each), 10 down columns.
    "dip+head": expected(10 * 2 * F * 2 + 10 * DOWN_COL),
    // Dense gate/up, 10 down columns.
    "topk-exact+head": expected(FFN_DENSE - F * DOWN_COL + 10 * DOWN_COL),
  });
  for (const row of out.rows.slice(1)) assert.ok(row.bytes_per_token < W, `${row.method} reads less than dense`);
});

test("eval --head hire measures the output layer's kept tokens against the dense head", () => {
  const text = join(root, "eval-head.txt");
  writeFileSync(text, "The quick brown fox jumps over the lazy dog. ".repeat(4));
  const rows = (headK: string) => {
    return evalJson(text, [
      "--methods",
      "hire",
      "--ffn-k",
      "0.25",
      "--oversample",
      "2",
      "--head",
      "hire",
      "--head-k",
      headK,
      "--head-oversample",
      "1",
      "--max-tokens",
      "32",
    ]).rows as {
      method: string;
      head_argmax_hit_rate: number | null;
      head_mass_covered: number | null;
    }[];
  };
  const all = rows("100%");
  assert.deepEqual(
    all.map((x) => [x.method, x.head_argmax_hit_rate, x.head_mass_covered]),
    [
      ["dense", null, null],
      ["hire+head", 1, 1], // every token kept: the argmax always, and all the mass
    ],
  );
  // 2 of 400 tokens: the tiny model's next-token distribution is nearly uniform (perplexity ≈ 400), so
  // they hold well under 5 % of the mass.
  const two = rows("2")[1];
  assert.equal(two.method, "hire+head");
  assert.ok(two.head_argmax_hit_rate! >= 0 && two.head_argmax_hit_rate! <= 1);
  assert.ok(two.head_mass_covered! > 0 && two.head_mass_covered! < 0.05, `${two.head_mass_covered}`);
});

test("generate --schema: the reply is a document of the schema (file or inline); a bad schema is a usage error", () => {
  const file = join(root, "book.json");
  writeFileSync(
    file,
    JSON.stringify({
      type: "object",
      properties: { title: { type: "string", maxLength: 10 }, year: { type: "integer" }, kind: { enum: ["a", "b"] } },
      required: ["title", "year", "kind"],
    }),
  );
  for (const schema of [file, '{"type": "array", "items": {"type": "boolean"}, "minItems": 1, "maxItems": 3}']) {
    const r = hire([
      "generate",
      "--model",
      model,
      "--prompt",
      "A book:",
      "--schema",
      schema,
      "--max-tokens",
      "600",
      "--temperature",
      "1",
      "--seed",
      "3",
      "--json",
    ]);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as { text: string; finish_reason: string };
    assert.equal(out.finish_reason, "stop", out.text);
    const v = JSON.parse(out.text) as unknown;
    if (schema === file) {
      const o = v as { title: string; year: number; kind: string };
      assert.deepEqual(Object.keys(o), ["title", "year", "kind"]);
      assert.ok([...o.title].length <= 10 && Number.isInteger(o.year) && ["a", "b"].includes(o.kind), out.text);
    } else {
      assert.ok(Array.isArray(v) && v.length >= 1 && v.length <= 3 && v.every((x) => typeof x === "boolean"), out.text);
    }
  }
  const bad = hire([
    "generate",
    "--model",
    model,
    "--prompt",
    "x",
    "--schema",
    '{"type": "array", "uniqueItems": true}',
  ]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--schema \(inline\): JSON schema at #: "uniqueItems" is not supported/);
  const missing = hire(["generate", "--model", model, "--prompt", "x", "--schema", join(root, "nope.json")]);
  assert.equal(missing.status, 2);
  assert.match(missing.stderr, /nope\.json: cannot read the file \(ENOENT\)/);
});

test("generate --regex, --choice and --grammar: the whole reply matches, is one of the options, or derives from root; one at a time", () => {
  const run = (...flags: string[]) =>
    hire(["generate", "--model", model, "--prompt", "Code:", "--temperature", "1", "--seed", "4", "--json", ...flags]);
  const code = run("--regex", "[A-Z]{2}-[0-9]{3}", "--max-tokens", "40");
  assert.equal(code.status, 0, code.stderr);
  const out = JSON.parse(code.stdout) as { text: string; finish_reason: string };
  assert.match(out.text, /^[A-Z]{2}-[0-9]{3}$/);
  assert.equal(out.finish_reason, "stop");
  const picked = run("--choice", "red,green,blue", "--max-tokens", "20");
  assert.match((JSON.parse(picked.stdout) as { text: string }).text, /^(red|green|blue)$/);
  const both = run("--regex", "a", "--choice", "b");
  assert.equal(both.status, 2);
  assert.match(both.stderr, /give one of --regex, --choice, not several/);
  const gbnf = run("--grammar", 'root ::= "(" [a-z] "," [0-9]+ ")"', "--max-tokens", "40");
  assert.equal(gbnf.status, 0, gbnf.stderr);
  assert.match((JSON.parse(gbnf.stdout) as { text: string }).text, /^\([a-z],[0-9]+\)$/);
  const file = join(root, "none.gbnf");
  writeFileSync(file, 'root ::= "a" x\nx ::= "b" x\n');
  assert.match(
    run("--grammar", file).stderr,
    /--grammar .*none\.gbnf: grammar: rule "root", rule "x" derive no finite text/,
  );
  const bad = run("--regex", "(a");
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--regex: pattern "\(a"/);
});
