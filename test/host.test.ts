// The engine host behind the app: protocol validation (malformed and hostile messages rejected),
// the wire codec, conversation persistence (including a crash mid-write), and the host itself on
// the built-in model — streaming, settings applied from the next token, Stop, typed errors.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  decodeWire,
  encodeWire,
  isWeightChoice,
  parseRequest,
  WEIGHT_CHOICES,
  ProtocolError,
  type Conversation,
  type HostMessage,
  type Reply,
  type StepTelemetry,
} from "../core/host/protocol.js";
import { ConversationStore } from "../core/host/conversations.js";
import { WEIGHT_CHOICES as LOADER_WEIGHT_CHOICES } from "../core/loader/weight-format.js";
import { EngineHost, type Channel } from "../core/host/engine-host.js";
import { defaultModelDir } from "../core/loader/default-model.js";
import { native, NativeDType, type NativeWeight } from "../core/native/addon.js";
import { REPO_ROOT, tempDir, useReasoningTemplate } from "./helpers.js";
import { makeModel } from "../core/modelgen/make-model.js";
import { loadModel } from "../core/loader/model-folder.js";
import { exportGguf } from "../core/gguf/export.js";
import { writeQuantizedCheckpoint } from "./quantized-checkpoints.js";

const conversation = (id: string, text: string): Conversation => ({
  id,
  title: `about ${text}`,
  createdAt: 1,
  updatedAt: Date.now(),
  modelPath: null,
  system: "",
  messages: [
    { role: "user", content: text },
    {
      role: "assistant",
      content: "reply",
      stats: { tokens: 1, ttftMs: 3, decodeTokensPerS: 100, finishReason: "eos" },
      tokens: [{ text: "reply", recall: 0.9, headMass: null, divergence: 0.02, ms: 1 }],
    },
  ],
});

/** A sparsity update with every kind of field: numbers, per-layer maps, per-layer predictors. */
const SPARSITY_UPDATE = {
  ffn: {
    k: 0.05,
    perLayerK: { 3: 0.2 },
    perLayerOversample: { 0: 4 },
    perLayerPredictor: { 2: { kind: "int8", groupSize: 64 } },
  },
  shards: 2,
};

test("parseRequest accepts each well-formed request", () => {
  const ok: unknown[] = [
    { id: 1, type: "hello" },
    { id: 2, type: "model.inspect", path: "/models/x" },
    { id: 3, type: "model.load" },
    { id: 4, type: "model.load", path: "m", contextLength: 512 },
    {
      id: 5,
      type: "generate",
      messages: [{ role: "user", content: "hi" }],
      sampling: { temperature: 0.7, topK: 40, seed: 3 },
      maxTokens: 16,
      sparsity: { ffn: { method: "dense" }, head: { method: "dense" } },
    },
    { id: 6, type: "stop", target: 5 },
    { id: 7, type: "sparsity.update", update: SPARSITY_UPDATE },
    { id: 8, type: "inspect.layer", layer: -1 },
    { id: 9, type: "conversations.save", conversation: conversation("c-1", "x") },
    { id: 10, type: "conversations.delete", conversationId: "c-1" },
    { id: 11, type: "model.load", path: "m", kvCache: "f16" },
    { id: 12, type: "model.inspect", path: "m", kvCache: "f32", contextLength: 1024 },
    { id: 13, type: "eval", text: "the text", ffnK: [0.1, 64] },
    { id: 14, type: "model.load", path: "m", weights: "int8" },
    { id: 15, type: "model.inspect", path: "m", weights: "file", kvCache: "f16" },
    { id: 16, type: "model.load", weights: null },
  ];
  for (const r of ok) assert.deepEqual(parseRequest(r).id, (r as { id: number }).id);
  const load = parseRequest(ok[13]);
  assert.ok(load.type === "model.load" && load.weights === "int8");
  const inspect = parseRequest(ok[14]);
  assert.ok(inspect.type === "model.inspect" && inspect.weights === "file");
  const plain = parseRequest(ok[15]);
  assert.ok(plain.type === "model.load" && plain.weights === undefined);
  const upd = parseRequest(ok[6]);
  assert.ok(upd.type === "sparsity.update");
  assert.deepEqual(upd.update, SPARSITY_UPDATE);
});

test("the protocol's weight choices are the loader's (listed apart: the renderer cannot load the addon)", () => {
  assert.deepEqual(WEIGHT_CHOICES, LOADER_WEIGHT_CHOICES);
  assert.ok(isWeightChoice("int8") && isWeightChoice("auto") && !isWeightChoice("q8"));
});

test("parseRequest rejects malformed and hostile messages with a ProtocolError naming the problem", () => {
  const bad: [unknown, RegExp][] = [
    [null, /JSON object/],
    [[1, 2], /JSON object/],
    [{ type: "hello" }, /"id"/],
    [{ id: 1.5, type: "hello" }, /integer/],
    [{ id: -1, type: "hello" }, /non-negative/],
    [{ id: 1, type: "shutdown" }, /unknown type/],
    [{ id: 1, type: "hello", extra: true }, /unknown field "extra"/],
    [{ id: 1, type: "model.inspect", path: 42 }, /"path" must be a string/],
    [{ id: 1, type: "model.inspect", path: "x".repeat(5000) }, /longer than/],
    [{ id: 1, type: "model.load", kvCache: "q4" }, /"kvCache" must be one of f32, f16/],
    [{ id: 1, type: "model.inspect", path: "m", kvCache: 16 }, /"kvCache" must be one of f32, f16/],
    [{ id: 1, type: "model.load", weights: "int3" }, /"weights" must be one of auto, file, int8, int4/],
    [{ id: 1, type: "model.load", weights: "INT8" }, /"weights" must be one of auto, file, int8/],
    [{ id: 1, type: "model.inspect", path: "m", weights: 8 }, /"weights" must be one of auto, file, int8/],
    [{ id: 1, type: "model.inspect", path: "m", weights: ["int8"] }, /"weights" must be one of auto, file, int8/],
    [{ id: 1, type: "model.inspect", path: "m", contextLength: 0 }, /"contextLength" must be positive/],
    [{ id: 1, type: "generate", messages: [], maxTokens: 4 }, /empty/],
    [{ id: 1, type: "eval", text: "x", ffnK: [] }, /"ffnK" must be a list of 1 to 16/],
    [{ id: 1, type: "eval", text: "x", ffnK: [0.1, -2] }, /"ffnK" values must be positive/],
    [{ id: 1, type: "eval", ffnK: [0.1] }, /"text" must be a string/],
    [{ id: 1, type: "generate", messages: [{ role: "root", content: "x" }], maxTokens: 4 }, /role/],
    [{ id: 1, type: "generate", messages: [{ role: "user", content: "x" }], maxTokens: 0 }, /maxTokens/],
    [{ id: 1, type: "generate", messages: [{ role: "user", content: "x" }], maxTokens: 1e9 }, /maxTokens/],
    [
      {
        id: 1,
        type: "generate",
        messages: [{ role: "user", content: "x" }],
        maxTokens: 4,
        sampling: { temperature: "hot" },
      },
      /temperature/,
    ],
    [
      { id: 1, type: "generate", messages: [{ role: "user", content: "x" }], maxTokens: 4, sampling: { eval: 1 } },
      /unknown field "eval"/,
    ],
    [{ id: 1, type: "sparsity.update", update: { ffn: { k: "all" } } }, /ffn\.k: must be a number/],
    [{ id: 1, type: "sparsity.update", update: { ffn: { k: Infinity } } }, /must be a number/],
    [{ id: 1, type: "sparsity.update", update: { gpu: true } }, /unknown setting "gpu"/],
    [{ id: 1, type: "sparsity.update", update: JSON.parse('{"__proto__": {"polluted": 1}}') }, /unknown setting/],
    [{ id: 1, type: "sparsity.update", update: { ffn: { perLayerK: { first: 0.1 } } } }, /not a layer number/],
    [{ id: 1, type: "sparsity.update", update: { ffn: { perLayerOversample: { 1: "x" } } } }, /layer 1 must be/],
    [
      { id: 1, type: "sparsity.update", update: { ffn: { perLayerPredictor: { 1: { kind: "int4", bits: 3 } } } } },
      /perLayerPredictor\.1: unknown setting "bits"/,
    ],
    [{ id: 1, type: "conversations.get", conversationId: "../../etc/passwd" }, /letters, digits/],
    [{ id: 1, type: "conversations.save", conversation: { ...conversation("a", "b"), id: "a/b" } }, /letters/],
    [
      {
        id: 1,
        type: "conversations.save",
        conversation: { ...conversation("a", "b"), messages: [{ role: "user", content: "x", stats: { tokens: 1 } }] },
      },
      /ttftMs|finishReason/,
    ],
  ];
  for (const [msg, pattern] of bad) {
    assert.throws(
      () => parseRequest(msg),
      (e: unknown) => e instanceof ProtocolError && pattern.test(e.message),
      JSON.stringify(msg)?.slice(0, 80),
    );
  }
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
});

test("the wire codec keeps typed arrays, their types and NaN", () => {
  const msg = {
    a: new Int32Array([1, -2, 2 ** 31 - 1]),
    f: new Float32Array([0.5, NaN, -Infinity]),
    nested: [{ u: new Uint8Array([255, 0]) }],
    plain: "text",
  };
  const back = decodeWire(encodeWire(msg)) as typeof msg;
  assert.ok(back.a instanceof Int32Array);
  assert.deepEqual([...back.a], [1, -2, 2 ** 31 - 1]);
  assert.ok(back.f instanceof Float32Array);
  assert.equal(back.f[0], 0.5);
  assert.ok(Number.isNaN(back.f[1]));
  assert.equal(back.f[2], -Infinity);
  assert.ok(back.nested[0].u instanceof Uint8Array);
  assert.equal(back.plain, "text");
  // A subarray encodes only its own bytes.
  const sub = decodeWire(encodeWire(new Float32Array([1, 2, 3, 4]).subarray(1, 3))) as Float32Array;
  assert.deepEqual([...sub], [2, 3]);
});

test("conversations persist atomically: a crash mid-write leaves the saved version readable", (t) => {
  const dir = tempDir(t);
  const store = new ConversationStore(dir);
  store.save(conversation("one", "first"));
  store.save(conversation("two", "second"));
  assert.deepEqual(
    store
      .list()
      .map((c) => c.id)
      .sort(),
    ["one", "two"],
  );
  assert.equal(store.get("one").messages[1].tokens?.[0].recall, 0.9);
  assert.equal(store.get("one").messages[1].tokens?.[0].divergence, 0.02);

  // A crash after the temporary file was partly written, before the rename.
  writeFileSync(join(dir, "one.json.12345.tmp"), '{"id":"one","title":"half');
  // A file damaged some other way (e.g. edited by hand).
  writeFileSync(join(dir, "broken.json"), "{not json");
  const reopened = new ConversationStore(dir);
  assert.deepEqual(
    reopened
      .list()
      .map((c) => c.id)
      .sort(),
    ["one", "two"],
  );
  assert.equal(reopened.get("one").title, "about first");
  assert.throws(() => reopened.get("broken"), /broken\.json is damaged/);
  assert.throws(() => reopened.get("missing"), /not found/);

  // Overwrite, then delete; no temporary files are left behind by successful writes.
  reopened.save({ ...conversation("one", "again"), title: "renamed" });
  assert.equal(reopened.get("one").title, "renamed");
  assert.equal(reopened.delete("two"), true);
  assert.equal(reopened.delete("two"), false);
  assert.deepEqual(
    readdirSync(dir).filter((f) => f.endsWith(".tmp") && !f.includes("12345")),
    [],
  );
});

// ---- the host on the built-in model ----------------------------------------------------------------

let host: EngineHost;
let dataDir: string;
const events: HostMessage[] = [];
const channel: Channel = (m) => events.push(m);
let nextId = 100;

async function ask(msg: Record<string, unknown>): Promise<Reply> {
  const id = nextId++;
  const start = events.length;
  await host.handle({ ...msg, id }, channel);
  const reply = events.slice(start).find((m): m is Reply => m.type === "reply" && m.id === id);
  assert.ok(reply, `no reply to ${JSON.stringify(msg)}`);
  return reply;
}

function tokenSteps(from: number, requestId: number): StepTelemetry[] {
  return events
    .slice(from)
    .filter((m) => m.type === "gen.token" && m.requestId === requestId)
    .map((m) => (m as { step: StepTelemetry }).step)
    .filter((s) => !s.prefill); // the first token comes from the (batched, unaudited) prefill pass
}

before(() => {
  dataDir = mkdtempSync(join(tmpdir(), "hire-host-"));
  host = new EngineHost({ dataDir, contextLength: 256 });
  host.subscribe(channel);
});
after(() => {
  host.close();
  rmSync(dataDir, { recursive: true, force: true });
});

test("host: hello, inspect, load; a bad folder is a typed error naming the file", async () => {
  const hello = await ask({ type: "hello" });
  assert.ok(hello.ok);
  const info = hello.result as { model: unknown; defaultModel: string; backend: string };
  assert.equal(info.model, null);
  assert.equal(info.defaultModel, defaultModelDir());
  // Names the kernel path the engine runs: the best this CPU has.
  const features = { avx512: "avx512-vnni+avx2+fma+f16c", avx2: "avx2+fma+f16c", portable: "portable" };
  assert.equal(info.backend, `cpu (${features[native().cpuInfo().path]}, ${native().getThreads()} threads)`);

  const missing = await ask({ type: "model.load", path: join(dataDir, "nope") });
  assert.ok(!missing.ok);
  assert.equal(missing.error.code, "NOT_FOUND");
  assert.match(missing.error.file ?? "", /nope/);

  const notLoaded = await ask({ type: "generate", messages: [{ role: "user", content: "x" }], maxTokens: 2 });
  assert.ok(!notLoaded.ok && notLoaded.error.code === "NO_MODEL");

  const est = await ask({ type: "model.inspect", path: defaultModelDir() });
  assert.ok(est.ok);
  const e = est.result as { parameters: number; weightBytes: number; kvCacheBytes: number };
  assert.ok(e.parameters > 5e6 && e.parameters < 7e6, `parameters ${e.parameters}`);
  assert.equal(e.weightBytes, e.parameters * 2); // bf16

  const loaded = await ask({ type: "model.load" });
  assert.ok(loaded.ok, JSON.stringify(loaded));
  const m = loaded.result as { layers: number; neurons: number; hasChatTemplate: boolean; contextLength: number };
  assert.equal(m.layers, 6);
  assert.equal(m.neurons, 704);
  assert.equal(m.contextLength, 256);
  assert.ok(m.hasChatTemplate);
  assert.ok(events.some((x) => x.type === "model.loaded"));
  const again = await ask({ type: "hello" });
  assert.ok(again.ok && (again.result as { recentModels: string[] }).recentModels[0] === defaultModelDir());
});

test("host: a generation streams tokens with per-layer telemetry, and settings apply from the next generation", async () => {
  const messages = [{ role: "user", content: "The city council said" }];
  let from = events.length;
  const dense = await ask({ type: "generate", messages, maxTokens: 6, sampling: { temperature: 0 } });
  assert.ok(dense.ok, JSON.stringify(dense));
  const summary = dense.result as { tokens: number; requestId: number; contextUsed: number; promptTokens: number };
  assert.equal(events.slice(from).filter((m) => m.type === "gen.token").length, summary.tokens);
  let steps = tokenSteps(from, summary.requestId);
  assert.equal(steps[0].ffnMethod, "dense");
  assert.deepEqual([...steps[0].k], [704, 704, 704, 704, 704, 704]);
  assert.equal(steps[0].selected.length, 0);
  assert.equal(steps[0].bytes, steps[0].denseBytes);
  for (let l = 0; l < 6; l++) {
    assert.ok(steps[0].ffnDenseBytes[l] > 0);
    assert.equal(steps[0].ffnBytes[l], steps[0].ffnDenseBytes[l], "a dense FFN reads all of itself");
  }
  assert.equal(summary.contextUsed, summary.promptTokens + summary.tokens - 1);

  from = events.length;
  const upd = await ask({ type: "sparsity.update", update: { ffn: { method: "hire", k: 0.1 }, auditEvery: 1 } });
  assert.ok(upd.ok, JSON.stringify(upd));
  // HiRE's copies replace the file-layout FFN matrices, which the host gives back in whole 2 MiB
  // pages and reports: none for the built-in model, whose layers' FFN runs are smaller (see the
  // test below for a model that has some).
  const settingsEvent = events.slice(from).find((m) => m.type === "settings");
  assert.ok(settingsEvent?.type === "settings");
  assert.equal(settingsEvent.releasedBytes, 0);
  await ask({ type: "inspect.layer", layer: 2 });
  from = events.length;
  const sparse = await ask({ type: "generate", messages, maxTokens: 4, sampling: { temperature: 0 } });
  assert.ok(sparse.ok);
  steps = tokenSteps(from, (sparse.result as { requestId: number }).requestId);
  assert.ok(steps.length > 0);
  for (const s of steps) {
    assert.equal(s.ffnMethod, "hire");
    assert.deepEqual([...s.k], [70, 70, 70, 70, 70, 70]); // round(0.1 × 704)
    assert.equal(s.selected.length, 6 * 70);
    assert.deepEqual([...s.selectedOffsets], [0, 70, 140, 210, 280, 350, 420]);
    assert.ok(s.audited);
    for (const r of s.recall) assert.ok(r >= 0 && r <= 1, `recall ${r}`);
    assert.ok(s.bytes < s.denseBytes, `${s.bytes} < ${s.denseBytes}`);
    // The token's saving is the sum of the layers' (the head is dense here).
    let saved = 0;
    for (let l = 0; l < 6; l++) {
      assert.ok(s.ffnBytes[l] < s.ffnDenseBytes[l], `layer ${l}: ${s.ffnBytes[l]} < ${s.ffnDenseBytes[l]}`);
      saved += s.ffnDenseBytes[l] - s.ffnBytes[l];
    }
    assert.equal(s.denseBytes - s.bytes, saved);
    assert.equal(s.inspect?.layer, 2);
    assert.equal(s.inspect?.approx.length, 704);
    assert.equal(s.inspect?.exact?.length, 704);
    assert.equal(s.inspect?.exactTopK?.length, 70);
    for (const c of s.inspect!.candidates) assert.ok(c >= 0 && c < 704);
  }

  // An A/B lane overrides the settings for one generation only.
  from = events.length;
  const lane = await ask({
    type: "generate",
    messages,
    maxTokens: 2,
    sampling: { temperature: 0 },
    sparsity: { ffn: { method: "dense" } },
  });
  assert.ok(lane.ok);
  assert.equal(tokenSteps(from, (lane.result as { requestId: number }).requestId)[0].ffnMethod, "dense");
  const hello = await ask({ type: "hello" });
  assert.ok(hello.ok && (hello.result as { settings: { ffn: { method: string } } }).settings.ffn.method === "hire");

  const badK = await ask({ type: "sparsity.update", update: { ffn: { k: 3.5 } } });
  assert.ok(!badK.ok && badK.error.code === "USAGE", JSON.stringify(badK));
  await ask({ type: "sparsity.update", update: { ffn: { method: "dense" }, auditEvery: 0 } });
  await ask({ type: "inspect.layer", layer: -1 });
});

test("host: Stop ends a generation within a token; a second generation meanwhile is refused as busy", async () => {
  const id = nextId;
  nextId += 3;
  const replies = new Map<number, Reply>();
  let tokens = 0;
  // One client: its replies and events arrive on one channel, and only it may stop its generation.
  const client: Channel = (m) => {
    if (m.type === "reply") replies.set(m.id, m);
    if (m.type === "gen.token" && ++tokens === 1) {
      void host.handle(
        { id: id + 1, type: "generate", messages: [{ role: "user", content: "x" }], maxTokens: 2 },
        client,
      );
      void host.handle({ id: id + 2, type: "stop", target: id + 99 }, client); // not running: no effect
      void host.handle({ id: id + 3, type: "stop", target: id }, client);
    }
  };
  // Seed 1 runs 36 tokens to EOS when not stopped.
  const request = { role: "user", content: "Tell a long story" };
  await host.handle(
    { id, type: "generate", messages: [request], maxTokens: 200, sampling: { temperature: 0.8, seed: 1 } },
    client,
  );
  const reply = replies.get(id);
  assert.ok(reply?.ok, JSON.stringify(reply));
  const summary = reply.result as { finishReason: string; tokens: number };
  assert.equal(summary.finishReason, "aborted");
  assert.ok(summary.tokens <= 2, `stopped after ${summary.tokens} tokens`);
  const stopped = (rid: number) => {
    const r = replies.get(rid);
    return r?.ok ? (r.result as { stopped: boolean }).stopped : undefined;
  };
  assert.equal(stopped(id + 2), false);
  assert.equal(stopped(id + 3), true);
  const busy = replies.get(id + 1);
  assert.ok(busy && !busy.ok && busy.error.code === "BUSY", JSON.stringify(busy));
});

test("host: while a model loads (a GGUF being imported) a generation, an evaluation or another load is refused as busy", async (t) => {
  const dir = tempDir(t);
  const prev = process.env.HIRE_CACHE_DIR;
  process.env.HIRE_CACHE_DIR = join(dir, "cache");
  t.after(() => (prev === undefined ? delete process.env.HIRE_CACHE_DIR : (process.env.HIRE_CACHE_DIR = prev)));
  const gguf = join(dir, "brown.gguf");
  const source = loadModel(defaultModelDir());
  await exportGguf(source, gguf, { dtype: "q8_0" });
  source.close();
  const h = new EngineHost({ dataDir: join(dir, "data"), contextLength: 64 });
  t.after(() => h.close());
  const replies = new Map<number, Reply>();
  const client: Channel = (m) => void (m.type === "reply" && replies.set(m.id, m));
  await h.handle({ id: 1, type: "model.load", path: defaultModelDir() }, client);
  // The load imports the file first, during which a reply on the model it replaces would have its
  // weights closed under it ("w belongs to a mapping that was unmapped").
  const loading = h.handle({ id: 2, type: "model.load", path: gguf }, client);
  assert.equal(h.busy, true);
  const idle = h.whenIdle();
  await h.handle({ id: 3, type: "generate", messages: [{ role: "user", content: "x" }], maxTokens: 2 }, client);
  await h.handle({ id: 4, type: "model.load", path: defaultModelDir() }, client);
  await h.handle({ id: 5, type: "eval", text: "The city. ".repeat(4), ffnK: [0.5] }, client);
  for (const id of [3, 4, 5]) {
    const r = replies.get(id);
    assert.ok(r && !r.ok && r.error.code === "BUSY" && /being loaded/.test(r.error.message), JSON.stringify(r));
  }
  await loading;
  await idle; // woken when the load ends
  assert.equal(h.busy, false);
  const loaded = replies.get(2);
  assert.ok(loaded?.ok && (loaded.result as { architecture: string }).architecture === "LlamaForCausalLM");
  await h.handle({ id: 6, type: "generate", messages: [{ role: "user", content: "x" }], maxTokens: 2 }, client);
  assert.ok(replies.get(6)?.ok, JSON.stringify(replies.get(6)));
});

test("host: quality against k on a text, with progress; Stop ends it; a dense FFN has nothing to sweep", async () => {
  const text = "The quick brown fox jumps over the lazy dog. ".repeat(6);
  assert.ok((await ask({ type: "sparsity.update", update: { ffn: { method: "hire" }, head: { method: "hire" } } })).ok);
  const start = events.length;
  const r = await ask({ type: "eval", text, ffnK: [0.1, 1] });
  assert.ok(r.ok, JSON.stringify(r));
  const rows = r.result as { method: string; ffn_k: number | null; perplexity: number; mean_recall: number | null }[];
  assert.deepEqual(
    rows.map((x) => [x.method, x.ffn_k]),
    [
      ["dense", null],
      ["hire+head", 0.1],
      ["hire+head", 1],
    ],
  );
  // k = 100 % is dense (the same perplexity, recall 1); k = 10 % recalls less.
  assert.ok(Math.abs(rows[2].perplexity - rows[0].perplexity) < 1e-3 * rows[0].perplexity, JSON.stringify(rows));
  assert.equal(rows[2].mean_recall, 1);
  assert.ok(rows[1].mean_recall! < 1 && rows[1].mean_recall! > 0.5, JSON.stringify(rows[1]));
  const progress = events
    .slice(start)
    .filter((m): m is Extract<HostMessage, { type: "eval.progress" }> => m.type === "eval.progress");
  assert.ok(progress.length > 0);
  assert.equal(progress.at(-1)!.done, progress.at(-1)!.total, "the last progress is the whole");
  // The same settings as the live ones after it (the evaluation does not change them).
  const hello = await ask({ type: "hello" });
  assert.ok(hello.ok);
  assert.equal((hello.result as { settings: { ffn: { k: number } } }).settings.ffn.k, 0.1);

  // Stop: within a token of the request, as a generation.
  const id = nextId;
  nextId += 2;
  const replies = new Map<number, Reply>();
  const client: Channel = (m) => {
    if (m.type === "reply") replies.set(m.id, m);
    if (m.type === "eval.progress" && m.done === 1) void host.handle({ id: id + 1, type: "stop", target: id }, client);
  };
  await host.handle({ id, type: "eval", text, ffnK: [0.1, 0.2, 0.5] }, client);
  const stopped = replies.get(id);
  assert.ok(stopped && !stopped.ok && /stopped/.test(stopped.error.message), JSON.stringify(stopped));
  assert.ok(
    (await ask({ type: "sparsity.update", update: { ffn: { method: "dense" }, head: { method: "dense" } } })).ok,
  );
  const dense = await ask({ type: "eval", text, ffnK: [0.1] });
  assert.ok(!dense.ok && /dense: choose a sparse method/.test(dense.error.message));
});

test("host: conversations round-trip through requests and survive a new host", async () => {
  const saved = await ask({ type: "conversations.save", conversation: conversation("persist-me", "kept") });
  assert.ok(saved.ok);
  const fresh = new EngineHost({ dataDir });
  const replies: Reply[] = [];
  await fresh.handle({ id: 1, type: "conversations.get", conversationId: "persist-me" }, (m) => {
    if (m.type === "reply") replies.push(m);
  });
  assert.ok(replies[0].ok);
  assert.equal((replies[0].result as Conversation).messages[0].content, "kept");
  assert.ok(existsSync(join(dataDir, "conversations", "persist-me.json")));
  assert.match(readFileSync(join(dataDir, "recent-models.json"), "utf8"), /hire-brown-6m/);
  fresh.close();
});

test("host: switching HiRE on gives back the file-layout FFN weights and says how much", async () => {
  const dir = join(dataDir, "release");
  // FFN matrices of 4 MiB (bf16 4096 x 512): each layer's run holds whole 2 MiB pages.
  const shape = { hidden: 512, intermediate: 4096, layers: 2, heads: 8, kvHeads: 4, vocab: 1024 };
  await makeModel({ arch: "llama", shape, dtype: "bf16", seed: 5, out: dir });
  const loaded = await ask({ type: "model.load", path: dir });
  assert.ok(loaded.ok, JSON.stringify(loaded));
  assert.equal((loaded.result as { releasedBytes: number }).releasedBytes, 0);
  const from = events.length;
  const upd = await ask({ type: "sparsity.update", update: { ffn: { method: "hire", k: 0.1 } } });
  assert.ok(upd.ok, JSON.stringify(upd));
  const ev = events.slice(from).find((m) => m.type === "settings");
  assert.ok(ev?.type === "settings");
  const ffn = 2 * 3 * 4096 * 512 * 2;
  const huge = 2 * 1024 * 1024;
  assert.ok(ev.releasedBytes >= ffn - 2 * 2 * huge && ev.releasedBytes % huge === 0, `released ${ev.releasedBytes}`);
});

test("host: a reasoning model's thinking switch reaches its chat template", async () => {
  const dir = join(dataDir, "reasoning");
  await makeModel({ arch: "qwen3", dtype: "f32", seed: 4, out: dir });
  useReasoningTemplate(dir);
  const loaded = await ask({ type: "model.load", path: dir });
  assert.ok(loaded.ok, JSON.stringify(loaded));
  assert.equal((loaded.result as { thinkingSwitch: boolean }).thinkingSwitch, true);
  const messages = [{ role: "user", content: "Hi" }];
  const prompt = async (extra: object) => {
    const r = await ask({ type: "generate", messages, maxTokens: 1, sampling: { temperature: 0 }, ...extra });
    assert.ok(r.ok, JSON.stringify(r));
    return (r.result as { promptTokens: number }).promptTokens;
  };
  const thinking = await prompt({});
  // Off: the template appends "<think>\n\n</think>\n\n" to the prompt.
  assert.ok((await prompt({ thinking: false })) > thinking);
  assert.equal(await prompt({ thinking: true }), thinking);
});

test("host: the KV-cache type is chosen per load, and the estimates follow it", async () => {
  const est = async (kvCache?: string) => {
    const r = await ask({ type: "model.inspect", path: defaultModelDir(), ...(kvCache && { kvCache }) });
    assert.ok(r.ok, JSON.stringify(r));
    return r.result as { kvCacheBytes: number; kvCache: string };
  };
  const [f32, f16] = [await est(), await est("f16")];
  assert.equal(f32.kvCache, "f32");
  assert.equal(f16.kvCache, "f16");
  assert.equal(f16.kvCacheBytes, f32.kvCacheBytes / 2);
  // The estimate for a shorter context: the cache scales with it (the default model's is 256).
  const short = await ask({ type: "model.inspect", path: defaultModelDir(), contextLength: 64 });
  assert.ok(short.ok, JSON.stringify(short));
  const s = short.result as { kvCacheBytes: number; contextLength: number };
  assert.deepEqual([s.contextLength, s.kvCacheBytes], [64, f32.kvCacheBytes / 4]);
  const loaded = await ask({ type: "model.load", kvCache: "f16" });
  assert.ok(loaded.ok, JSON.stringify(loaded));
  const info = loaded.result as { kvCache: string; kvCacheBytes: number };
  assert.deepEqual([info.kvCache, info.kvCacheBytes], ["f16", f16.kvCacheBytes]);
  const reply = await ask({
    type: "generate",
    messages: [{ role: "user", content: "The city" }],
    maxTokens: 4,
    sampling: { temperature: 0 },
  });
  assert.ok(reply.ok, JSON.stringify(reply));
  assert.equal((reply.result as { tokens: number }).tokens, 4);
});

/** Bytes the loaded model's weights hold in memory, each native weight once (a tied head shares the embedding's). */
function residentWeightBytes(weights: unknown): { bytes: number; q8: number } {
  const seen = new Set<unknown>();
  let bytes = 0;
  let q8 = 0;
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) return node.forEach(walk);
    if (typeof node !== "object" || node === null) return;
    if ("handle" in node && "transposed" in node) {
      const handle = (node as { handle: NativeWeight }).handle;
      if (seen.has(handle)) return;
      seen.add(handle);
      const info = native().weightInfo(handle);
      bytes += info.bytes;
      if (info.dtype === NativeDType.Q8) q8++;
      return;
    }
    Object.values(node).forEach(walk);
  };
  walk(weights);
  return { bytes, q8 };
}

test("host: int8 weights are chosen per load or by the host's default; the estimate counts their bytes", async () => {
  const est = async (weights?: string) => {
    const r = await ask({ type: "model.inspect", path: defaultModelDir(), ...(weights && { weights }) });
    assert.ok(r.ok, JSON.stringify(r));
    return r.result as { weightBytes: number; parameters: number; weights: string; dtype: string };
  };
  const [file, int8] = [await est(), await est("int8")];
  assert.deepEqual([file.weights, int8.weights], ["file", "int8"]);
  assert.equal(int8.parameters, file.parameters);
  assert.equal(file.weightBytes, 2 * file.parameters); // bf16
  // Each matrix as 1 byte a value plus an f16 scale per 32 (the built-in model's widths are multiples
  // of 32), the norm vectors as stored: a little over half of bf16's bytes.
  assert.ok(
    int8.weightBytes < 0.55 * file.weightBytes && int8.weightBytes > 0.5 * file.weightBytes,
    `${int8.weightBytes}`,
  );

  const loaded = await ask({ type: "model.load", weights: "int8" });
  assert.ok(loaded.ok, JSON.stringify(loaded));
  const info = loaded.result as { weights: string; weightBytes: number; dtype: string; bytesPerToken: number };
  assert.deepEqual([info.weights, info.weightBytes, info.dtype], ["int8", int8.weightBytes, file.dtype]);
  // The estimate against what the loaded weights hold: every matrix is int8, and the bytes agree.
  const resident = residentWeightBytes(host.loadedModel!.weights);
  assert.equal(resident.q8, 1 + 6 * 7); // the (tied) embedding and 7 matrices a layer
  assert.ok(
    Math.abs(int8.weightBytes - resident.bytes) < 0.01 * resident.bytes,
    `estimate ${int8.weightBytes} B, loaded ${resident.bytes} B`,
  );
  const hello = await ask({ type: "hello" });
  assert.ok(hello.ok && (hello.result as { model: { weights: string } }).model.weights === "int8");
  const reply = await ask({
    type: "generate",
    messages: [{ role: "user", content: "The city" }],
    maxTokens: 4,
    sampling: { temperature: 0 },
  });
  assert.ok(reply.ok, JSON.stringify(reply));
  const summary = reply.result as { tokens: number; text: string };
  assert.equal(summary.tokens, 4);
  assert.ok(summary.text.length > 0);

  // Without a choice, a load keeps the file's weights again.
  const plain = await ask({ type: "model.load" });
  assert.ok(plain.ok, JSON.stringify(plain));
  assert.deepEqual(
    [(plain.result as { weights: string }).weights, residentWeightBytes(host.loadedModel!.weights).q8],
    ["file", 0],
  );

  // A host started with int8 weights (hire serve --weights int8) loads and estimates with them unless asked otherwise.
  const dir = mkdtempSync(join(tmpdir(), "hire-host-int8-"));
  const int8Host = new EngineHost({ dataDir: dir, contextLength: 64, weights: "int8" });
  try {
    const replies: Reply[] = [];
    const send = async (msg: Record<string, unknown>) => {
      await int8Host.handle({ id: replies.length, ...msg }, (m) => m.type === "reply" && replies.push(m));
      const r = replies.at(-1)!;
      assert.ok(r.ok, JSON.stringify(r));
      return r.result as { weights: string; weightBytes: number };
    };
    assert.equal((await send({ type: "model.inspect", path: defaultModelDir() })).weights, "int8");
    assert.equal((await send({ type: "model.inspect", path: defaultModelDir(), weights: "file" })).weights, "file");
    const m = await send({ type: "model.load" });
    assert.deepEqual([m.weights, m.weightBytes], ["int8", int8.weightBytes]);
    assert.ok(residentWeightBytes(int8Host.loadedModel!.weights).q8 > 0);
  } finally {
    int8Host.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("host: a GPTQ checkpoint is estimated as int4+int8, imported with progress, and loaded with int4 from its codes", async (t) => {
  const prev = process.env.HIRE_CACHE_DIR;
  process.env.HIRE_CACHE_DIR = join(dataDir, "cache");
  t.after(() => (prev === undefined ? delete process.env.HIRE_CACHE_DIR : (process.env.HIRE_CACHE_DIR = prev)));
  const src = join(tempDir(t), "src");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 5, out: src });
  const checkpoint = join(tempDir(t), "tiny-GPTQ-Int4");
  writeQuantizedCheckpoint(src, checkpoint, { method: "gptq", bits: 4, groupSize: 32, sym: true });
  const est = await ask({ type: "model.inspect", path: checkpoint });
  assert.ok(est.ok, JSON.stringify(est));
  const e = est.result as { weights: string; weightBytes: number; dtype: string };
  assert.deepEqual([e.weights, e.dtype], ["int4+int8", "F16"]);
  const start = events.length;
  const loaded = await ask({ type: "model.load", path: checkpoint });
  assert.ok(loaded.ok, JSON.stringify(loaded));
  assert.ok(events.slice(start).some((m) => m.type === "model.progress" && m.stage === "import"));
  const info = loaded.result as { name: string; weights: string; weightBytes: number; quantizedFrom: string };
  assert.deepEqual(
    [info.name, info.weights, info.weightBytes],
    ["tiny-GPTQ-Int4", "int4+int8", e.weightBytes],
    "named after the checkpoint, the estimate's format and size",
  );
  assert.match(info.quantizedFrom, /^from F16, 14 of \d+ from the GPTQ checkpoint's Q4_0 blocks$/);
  const reply = await ask({ type: "generate", messages: [{ role: "user", content: "Hi" }], maxTokens: 3 });
  assert.ok(reply.ok, JSON.stringify(reply));
});

test("host: a GGUF file is inspected, imported once with progress, loaded, and kept as the file", async (t) => {
  const prev = process.env.HIRE_CACHE_DIR;
  process.env.HIRE_CACHE_DIR = join(dataDir, "cache");
  t.after(() => (prev === undefined ? delete process.env.HIRE_CACHE_DIR : (process.env.HIRE_CACHE_DIR = prev)));
  const file = join(REPO_ROOT, "test", "gguf", "tiny-llama-quants.gguf");
  type Estimate = { architecture: string; dtype: string; parameters: number; weightBytes: number; weights: string };
  const asFile = await ask({ type: "model.inspect", path: file, weights: "file" });
  assert.ok(asFile.ok, JSON.stringify(asFile));
  const e = asFile.result as Estimate;
  assert.deepEqual([e.architecture, e.dtype, e.weights], ["LlamaForCausalLM", "BF16", "file"]);
  assert.equal(e.weightBytes, 2 * e.parameters); // as imported: bf16, not the file's 1 MB
  assert.equal(e.parameters, 1443072); // 2 layers of 256 × (256 + 128 + 128 + 256 + 3 × 512) + 2 norms, 512 × 256 twice, one norm
  // By default ("auto") a quantized GGUF loads its Q4_0, Q4_1 and Q4_K matrices as int4, the rest as
  // int8: between the two formats' sizes.
  const estimate = async (weights?: string) => {
    const r = await ask({ type: "model.inspect", path: file, ...(weights && { weights }) });
    assert.ok(r.ok, JSON.stringify(r));
    return r.result as Estimate;
  };
  const auto = await estimate();
  const [int8, int4] = [await estimate("int8"), await estimate("int4")];
  assert.equal(auto.weights, "int4+int8");
  assert.ok(int8.weightBytes < 0.6 * e.weightBytes && int8.weightBytes > 0.5 * e.weightBytes, String(int8.weightBytes));
  assert.ok(auto.weightBytes < int8.weightBytes && auto.weightBytes > int4.weightBytes, String(auto.weightBytes));
  const start = events.length;
  const loaded = await ask({ type: "model.load", path: file });
  assert.ok(loaded.ok, JSON.stringify(loaded));
  const imports = events.slice(start).filter((m) => m.type === "model.progress" && m.stage === "import") as {
    done: number;
    total: number;
  }[];
  assert.ok(imports.length >= 2 && imports.at(-1)!.done === imports.at(-1)!.total, "import progress reached the end");
  const info = loaded.result as {
    parameters: number;
    name: string;
    source: string;
    weights: string;
    weightBytes: number;
  };
  assert.equal(info.parameters, e.parameters);
  assert.deepEqual([info.weights, info.weightBytes], ["int4+int8", auto.weightBytes]);
  assert.equal(
    (loaded.result as { quantizedFrom: string }).quantizedFrom,
    "from BF16, 5 of 16 from the GGUF's Q4_0/Q4_1/Q4_K/Q5_0/Q8_0 blocks",
  );
  assert.deepEqual([info.name, info.source], ["tiny-llama-quants.gguf", file]);
  const hello = await ask({ type: "hello" });
  assert.ok(hello.ok && (hello.result as { recentModels: string[] }).recentModels[0] === file);
  // Loaded again from the cache: no import.
  const again = events.length;
  assert.ok((await ask({ type: "model.load", path: file })).ok);
  assert.ok(!events.slice(again).some((m) => m.type === "model.progress" && m.stage === "import"));
  const reply = await ask({ type: "generate", messages: [{ role: "user", content: "Hi" }], maxTokens: 3 });
  assert.ok(reply.ok, JSON.stringify(reply));
});
