// The `hire` command as a user runs it: a real process, real files, real exit codes.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { hire, REPO_ROOT } from "./helpers.js";
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
});

test("generate --json prints the documented object", () => {
  const r = hire([
    "generate",
    "--model",
    model,
    "--prompt",
    "Hello",
    "--max-tokens",
    "5",
    "--temperature",
    "0",
    "--logprobs",
    "3",
    "--json",
  ]);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.ok(Array.isArray(out.prompt_ids) && out.prompt_ids.length > 0);
  assert.ok(out.ids.length >= 1 && out.ids.length <= 5);
  assert.equal(typeof out.text, "string");
  assert.equal(out.steps.length, out.ids.length);
  for (const [i, s] of out.steps.entries()) {
    assert.equal(s.id, out.ids[i]);
    assert.equal(s.top_logprobs.length, 3);
    assert.equal(s.top_logprobs[0][0], s.id, "greedy picks the most likely token");
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

test("bench --json reports speed against the measured roofline", () => {
  const r = hire([
    "bench",
    "--model",
    model,
    "--json",
    "--prompt-tokens",
    "8",
    "--decode-tokens",
    "4",
    "--repeats",
    "1",
  ]);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  for (const k of [
    "decode_tokens_per_s",
    "decode_ms_per_token",
    "prefill_tokens_per_s",
    "weight_bytes_per_token",
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
  assert.ok(
    Math.abs(out.effective_read_gb_per_s - out.weight_bytes_per_token / (out.decode_ms_per_token * 1e6)) <
      0.01 * out.effective_read_gb_per_s + 1e-3,
  );
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
  const r = hire([
    "bench",
    "--model",
    model,
    "--json",
    "--methods",
    "hire,topk-exact",
    "--ffn-k",
    "0.1,0.5",
    "--prompt-tokens",
    "4",
    "--decode-tokens",
    "3",
    "--repeats",
    "1",
  ]);
  assert.equal(r.status, 0, r.stderr);
  const rows = JSON.parse(r.stdout).rows as {
    method: string;
    ffn_k: number | null;
    speedup: number;
    bytes_per_token: number;
    percent_of_roofline: number;
  }[];
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
});

test("eval reports perplexity and recall per method and k, and draws the plot", () => {
  const text = join(root, "eval.txt");
  writeFileSync(text, "The quick brown fox jumps over the lazy dog. ".repeat(8));
  const svg = join(root, "eval.svg");
  const r = hire([
    "eval",
    "--model",
    model,
    "--text",
    text,
    "--ffn-k",
    "0.1,1",
    "--oversample",
    "1,2",
    "--json",
    "--plot",
    svg,
  ]);
  assert.equal(r.status, 0, r.stderr);
  const rows = JSON.parse(r.stdout).rows as {
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
  assert.match(readFileSync(svg, "utf8"), /^<svg[\s\S]*polyline[\s\S]*<\/svg>$/);
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
