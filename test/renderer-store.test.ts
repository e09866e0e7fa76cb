// The renderer's stores, in Node: streaming reducers, the telemetry ring and its frequency math,
// settings → request payloads, and what the studio persists (against a fake host).
import { test } from "node:test";
import assert from "node:assert/strict";
import type {
  CachedModels,
  Conversation,
  GenerationSummary,
  HostEvent,
  ModelInfo,
  ReplyResults,
  Request,
  SparsitySettings,
  StepTelemetry,
} from "../core/host/protocol.js";
import { parseConversation, parseRequest } from "../core/host/protocol.js";
import { DEFAULT_SETTINGS } from "../core/sparse/settings.js";
import {
  HostRequestError,
  type ConnectionStatus,
  type HostClient,
  type PendingRequest,
  type RequestBody,
} from "../renderer/src/state/client.js";
import {
  appendTokens,
  appendUser,
  beginReply,
  displayTokens,
  appendToolResult,
  dropTrailingReplies,
  editUserMessage,
  emptyConversation,
  exportJson,
  failReply,
  finishReply,
  firstDivergence,
  historyFor,
  savePayload,
  splitThinking,
  unansweredCalls,
  upsertSummary,
} from "../renderer/src/state/conversations.js";
import {
  DENSE_OVERRIDE,
  INITIAL_SAMPLING,
  INITIAL_SPARSITY,
  createSettingsStore,
  generatePayload,
  replySchema,
  replyTools,
  EXAMPLE_TOOLS,
  EXAMPLE_SCHEMA,
  REPLY_PREFS_KEY,
  mergeSparsity,
  mergeUpdates,
  predictorName,
  resolveCount,
  samplingPayload,
} from "../renderer/src/state/settings.js";
import {
  SelectionWindow,
  createTelemetryStore,
  selectionSummary,
  layerBytesText,
  tokenMark,
  traceJson,
  windowTokensPerS,
} from "../renderer/src/state/telemetry.js";
import { createStudio } from "../renderer/src/state/studio.js";
import { parseKs } from "../renderer/src/state/evaluation.js";
import { createConnectionStore, LOAD_PREFS_KEY, type KeyValueStorage } from "../renderer/src/state/connection.js";

// ---- fixtures -----------------------------------------------------------------------------------

/** A step of a model with `selected[l]` neurons selected in layer l. */
function step(selected: number[][], o: Partial<StepTelemetry> = {}): StepTelemetry {
  const L = selected.length;
  const offsets = new Int32Array(L + 1);
  selected.forEach((s, l) => (offsets[l + 1] = offsets[l] + s.length));
  const nan = () => new Float32Array(L).fill(NaN);
  return {
    ffnMethod: "hire",
    headMethod: "dense",
    prefill: false,
    audited: false,
    ms: 2,
    attentionMs: new Float32Array(L).fill(0.1),
    ffnMs: new Float32Array(L).fill(0.2),
    predictorMs: new Float32Array(L).fill(0.05),
    exactMs: new Float32Array(L).fill(0.1),
    downMs: new Float32Array(L).fill(0.05),
    outputMs: 0.3,
    k: Int32Array.from(selected, (s) => s.length),
    candidates: Int32Array.from(selected, (s) => 2 * s.length),
    selected: Int32Array.from(selected.flat()),
    selectedOffsets: offsets,
    recall: nan(),
    relError: nan(),
    cacheHitRate: nan(),
    ffnBytes: new Float64Array(L).fill(25),
    ffnDenseBytes: new Float64Array(L).fill(100),
    storageBytes: new Float64Array(L).fill(NaN),
    bytes: 100,
    denseBytes: 400,
    head: null,
    inspect: null,
    ...o,
  };
}

const SUMMARY: GenerationSummary = {
  requestId: 0,
  finishReason: "eos",
  text: "Hello world",
  promptTokens: 5,
  reusedTokens: 0,
  tokens: 2,
  ttftMs: 12.5,
  decodeTokensPerS: 80,
  contextLength: 512,
  contextUsed: 7,
};

const MODEL: ModelInfo = {
  path: "/models/tiny",
  architecture: "LlamaForCausalLM",
  parameters: 1000,
  dtype: "BF16",
  weightBytes: 2000,
  kvCacheBytes: 100,
  contextLength: 512,
  kvCache: "f32",
  weights: "file",
  name: "tiny",
  source: "/models/tiny",
  layers: 2,
  hidden: 8,
  neurons: 8,
  moe: null,
  vocab: 32,
  gatedFfn: true,
  thinkingSwitch: false,
  hasChatTemplate: true,
  bytesPerToken: 2000,
  releasedBytes: 0,
  quantizedFrom: null,
  settings: DEFAULT_SETTINGS,
};

/** A host in memory: answers requests through handlers; a generate waits until the test finishes it. */
const CACHED: CachedModels = {
  hub: "/hf/hub",
  models: [
    {
      repo: "org/tiny",
      path: "/hf/hub/models--org--tiny/snapshots/c",
      revision: "c",
      weightBytes: 2000,
      architecture: "LlamaForCausalLM",
      quantization: null,
      pytorch: false,
      problem: null,
    },
  ],
};

class FakeHost implements HostClient {
  readonly kind = "websocket" as const;
  status: ConnectionStatus = "open";
  sent: Request[] = [];
  private nextId = 1;
  private events = new Set<(ev: HostEvent) => void>();
  private statuses = new Set<(s: ConnectionStatus) => void>();
  private waiting = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
  saved: Conversation[] = [];
  settings: SparsitySettings = DEFAULT_SETTINGS;
  /** Requests of these types fail with this error. */
  failures = new Map<string, { code: string; message: string }>();

  send<R extends RequestBody>(body: R): PendingRequest<R["type"]> {
    const id = this.nextId++;
    const req = { ...body, id } as Request;
    // What the host would accept: the renderer must only send valid requests.
    parseRequest(JSON.parse(JSON.stringify(req)));
    this.sent.push(req);
    const result = new Promise<ReplyResults[R["type"]]>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
    });
    queueMicrotask(() => this.answer(req));
    return { id, result };
  }
  request<R extends RequestBody>(body: R): Promise<ReplyResults[R["type"]]> {
    return this.send(body).result;
  }
  onEvent(cb: (ev: HostEvent) => void) {
    this.events.add(cb);
    return () => this.events.delete(cb);
  }
  onStatus(cb: (s: ConnectionStatus) => void) {
    this.statuses.add(cb);
    return () => this.statuses.delete(cb);
  }
  emit(ev: HostEvent) {
    for (const cb of this.events) cb(ev);
  }
  reply(id: number, result: unknown) {
    this.waiting.get(id)?.resolve(result);
    this.waiting.delete(id);
  }
  fail(id: number, code: string, message: string) {
    this.waiting.get(id)?.reject(new HostRequestError({ code, message }));
    this.waiting.delete(id);
  }
  lastOf<T extends Request["type"]>(type: T): Extract<Request, { type: T }> {
    const r = [...this.sent].reverse().find((x) => x.type === type);
    assert.ok(r, `no ${type} request was sent`);
    return r as Extract<Request, { type: T }>;
  }
  private answer(req: Request) {
    const f = this.failures.get(req.type);
    if (f) return this.fail(req.id, f.code, f.message);
    switch (req.type) {
      case "hello":
        return this.reply(req.id, {
          protocol: 1,
          backend: "cpu (test)",
          defaultModel: "/models/tiny",
          recentModels: [],
          model: MODEL,
          settings: this.settings,
          generating: null,
        });
      case "conversations.list":
        return this.reply(req.id, []);
      case "models.cached":
        return this.reply(req.id, CACHED);
      case "conversations.save": {
        this.saved.push(structuredClone(req.conversation));
        const c = req.conversation;
        return this.reply(req.id, { id: c.id, title: c.title, updatedAt: c.updatedAt, messages: c.messages.length });
      }
      case "sparsity.update":
        this.settings = mergeSparsity(this.settings, req.update);
        return this.reply(req.id, this.settings);
      case "stop":
        return this.reply(req.id, { stopped: true });
      case "inspect.layer":
        return this.reply(req.id, { layer: req.layer });
      default:
        return; // generate and the rest: the test answers
    }
  }
}

const flush = () => new Promise<void>((r) => setImmediate(r));

// ---- conversations ------------------------------------------------------------------------------

test("streaming reducers: tokens append to the reply, the summary finishes it", () => {
  const asked = appendUser(emptyConversation(1000, "c1"), "Say hello", 1001);
  assert.equal(asked.title, "Say hello");
  const [started, index] = beginReply(asked, undefined, 1002);
  let c = started;
  assert.equal(index, 1);
  assert.deepEqual(c.messages[1], { role: "assistant", content: "", tokens: [] });

  const before = c;
  c = appendTokens(c, index, [{ text: "Hello", recall: 0.9, headMass: null, ms: 2 }]);
  c = appendTokens(c, index, [{ text: " world", recall: null, headMass: 0.99, ms: 3 }]);
  assert.equal(c.messages[1].content, "Hello world");
  assert.equal(c.messages[1].tokens?.length, 2);
  assert.equal(before.messages[1].content, "", "reducers do not mutate");
  assert.equal(c.messages[0], before.messages[0], "untouched messages keep their identity");

  c = finishReply(c, index, SUMMARY, 1003);
  const m = c.messages[1];
  assert.equal(m.content, "Hello world");
  assert.deepEqual(m.stats, { tokens: 2, ttftMs: 12.5, decodeTokensPerS: 80, finishReason: "eos", meanRecall: 0.9 });
  assert.equal(c.updatedAt, 1003);
});

test("a stop string cut from the final text also cuts the displayed tokens", () => {
  const marks = ["Hi", " there", "\nUser"].map((text) => ({ text, recall: null, headMass: null, ms: 1 }));
  assert.deepEqual(
    displayTokens({ role: "assistant", content: "Hi there", tokens: marks })?.map((t) => t.text),
    ["Hi", " there"],
  );
  assert.equal(displayTokens({ role: "assistant", content: "something else", tokens: marks }), null);
});

test("a reasoning reply's <think> block splits from the answer, token by token, tags left out", () => {
  const pieces = (texts: string[]) => texts.map((text, i) => ({ text, ms: i }));
  const show = (part: { piece: { text: string; ms: number }; index: number }[]) =>
    part.map((p) => `${p.index}:${p.piece.text}`);

  // Tags as tokens of their own (Qwen3), and blank lines before the answer.
  const a = splitThinking(pieces(["<think>", "\n", "Let me", " see", "</think>", "\n\n", "Four", "."]))!;
  assert.equal(a.done, true);
  assert.deepEqual(show(a.thinking), ["2:Let me", "3: see"]);
  assert.deepEqual(show(a.answer), ["6:Four", "7:."]);
  assert.equal(a.answer[0].piece.ms, 6, "pieces keep their telemetry");

  // Tags cut across tokens, answer text in the token that closes the thinking.
  const b = splitThinking(pieces(["<th", "ink>hm", "m</thi", "nk> Yes"]))!;
  assert.deepEqual(show(b.thinking), ["1:hm", "2:m"]);
  assert.deepEqual(show(b.answer), ["3:Yes"]);

  // Still thinking: everything after <think> is thinking, no answer yet.
  const c = splitThinking(pieces(["\n<think>", "Step 1"]))!;
  assert.equal(c.done, false);
  assert.deepEqual(show(c.thinking), ["1:Step 1"]);
  assert.deepEqual(c.answer, []);

  // Empty thinking (Qwen3 with thinking switched off) leaves only the answer.
  const d = splitThinking(pieces(["<think>\n\n</think>\n\n", "Hi"]))!;
  assert.deepEqual([show(d.thinking), show(d.answer), d.done], [[], ["1:Hi"], true]);

  // Not a reasoning reply: text before <think>, or no tag at all.
  assert.equal(splitThinking(pieces(["Sure: ", "<think>"])), null);
  assert.equal(splitThinking(pieces(["Hello"])), null);
  assert.equal(splitThinking([]), null);
});

test("failed replies, regenerate, edit-and-resend and A/B history", () => {
  const [started, i] = beginReply(appendUser(emptyConversation(0, "c2"), "one", 1), undefined, 2);
  let c = started;
  assert.equal(failReply(c, i, 3).messages.length, 1, "an empty failed reply is dropped");
  c = appendTokens(c, i, [{ text: "par", recall: null, headMass: null, ms: 1 }]);
  assert.equal(failReply(c, i, 3).messages[1].stats?.finishReason, "aborted", "a partial one is kept as aborted");
  c = finishReply(c, i, { ...SUMMARY, text: "partial" }, 4);

  assert.equal(dropTrailingReplies(c, 5)?.messages.length, 1);
  assert.equal(dropTrailingReplies(emptyConversation(0, "x"), 5), null);

  const edited = editUserMessage(c, 0, "uno", 6);
  assert.deepEqual(
    edited.messages.map((m) => m.content),
    ["uno"],
  );
  assert.equal(edited.title, "uno");
  assert.throws(() => editUserMessage(c, 1, "x"));

  // A/B: both lanes are shown; only the sparse one continues the conversation.
  let ab = { ...c, system: "Be brief." };
  [ab] = beginReply(ab, "dense", 7);
  ab = appendTokens(ab, 2, [{ text: "dense reply", recall: null, headMass: null, ms: 1 }]);
  [ab] = beginReply(ab, "sparse", 8);
  ab = appendTokens(ab, 3, [{ text: "sparse reply", recall: null, headMass: null, ms: 1 }]);
  assert.deepEqual(historyFor(ab), [
    { role: "system", content: "Be brief." },
    { role: "user", content: "one" },
    { role: "assistant", content: "partial" },
    { role: "assistant", content: "sparse reply" },
  ]);
});

test("first divergence of two replies", () => {
  const t = (...xs: string[]) => xs.map((text) => ({ text, recall: null, headMass: null, ms: 1 }));
  assert.equal(firstDivergence(t("a", "b", "c"), t("a", "b", "c")), -1);
  assert.equal(firstDivergence(t("a", "b", "c"), t("a", "x", "c")), 1);
  assert.equal(firstDivergence(t("a", "b"), t("a", "b", "c")), 2);
  assert.equal(firstDivergence([], t("a")), 0);
});

test("persistence payload: exactly what conversations.save accepts", () => {
  const [started, i] = beginReply(appendUser(emptyConversation(10, "conv_1"), "hi", 11), "sparse", 12);
  let c = started;
  c = appendTokens(c, i, [
    { text: "x".repeat(1500), recall: NaN, headMass: 0.5, ms: Infinity },
    { text: "y", recall: 1, headMass: null, ms: 1 },
  ]);
  c = finishReply(c, i, { ...SUMMARY, text: "x".repeat(1500) + "y", decodeTokensPerS: NaN }, 13);
  // Extra fields a UI might carry must not reach the host.
  (c.messages[1] as unknown as Record<string, unknown>).pending = true;
  const p = savePayload(c);
  assert.deepEqual(JSON.parse(JSON.stringify(parseConversation(JSON.parse(JSON.stringify(p))))), p);
  assert.equal(p.messages[1].tokens?.[0].text.length, 1000);
  assert.equal(p.messages[1].tokens?.[0].recall, null);
  assert.equal(p.messages[1].tokens?.[0].ms, 0);
  assert.equal(p.messages[1].stats?.decodeTokensPerS, 0);
  assert.equal(p.messages[1].lane, "sparse");
  assert.ok(!("pending" in p.messages[1]));
  const exported = JSON.parse(exportJson(c));
  assert.equal(exported.format, "hire-studio.conversation");
  assert.equal(exported.messages.length, 2);

  const list = upsertSummary([{ id: "a", title: "A", updatedAt: 5, messages: 1 }], {
    id: "b",
    title: "B",
    updatedAt: 9,
    messages: 2,
  });
  assert.deepEqual(
    upsertSummary(list, { id: "a", title: "A2", updatedAt: 20, messages: 3 }).map((s) => s.title),
    ["A2", "B"],
  );
});

// ---- telemetry ----------------------------------------------------------------------------------

test("selection window: per-layer frequency over the last N tokens, incrementally", () => {
  const w = new SelectionWindow(2, 6, 3);
  const push = (sel: number[][]) => w.push({ index: 0, tokenId: 0, text: "", step: step(sel) });
  push([[0, 1], [5]]);
  assert.deepEqual(Array.from(w.freq[0]), [1, 1, 0, 0, 0, 0]);
  push([[1, 2], [5]]);
  assert.deepEqual(Array.from(w.freq[0]), [0.5, 1, 0.5, 0, 0, 0]);
  push([[1, 3], [4]]);
  assert.deepEqual(Array.from(w.freq[0]), [1 / 3, 1, 1 / 3, 1 / 3, 0, 0].map(Math.fround));
  // Full: the oldest token ([0, 1] / [5]) leaves the window.
  push([[2, 3], [4]]);
  assert.equal(w.filled, 3);
  assert.deepEqual(Array.from(w.freq[0]), [0, 2 / 3, 2 / 3, 2 / 3, 0, 0].map(Math.fround));
  assert.deepEqual(Array.from(w.freq[1]), [0, 0, 0, 0, 2 / 3, 1 / 3].map(Math.fround));
  // The frequencies always equal a recount from scratch.
  const counts = new Array(6).fill(0);
  for (const t of w.steps())
    for (const i of t.step.selected.subarray(t.step.selectedOffsets[0], t.step.selectedOffsets[1])) counts[i]++;
  assert.deepEqual(
    Array.from(w.freq[0]),
    counts.map((c) => Math.fround(c / 3)),
  );
  // Indices outside the layer are ignored, not written out of bounds.
  push([[99, -1], [0]]);
  assert.equal(w.freq[0].length, 6);
});

test("telemetry store: ring, running mean recall, latest step, inspect, window change, trace", () => {
  const store = createTelemetryStore(2, 4, 2);
  const seen: number[] = [];
  store.subscribe((s) => seen.push(s.version));
  store.getState().begin(7);
  const recall = (a: number, b: number) => Float32Array.of(a, b);
  const audited = step([[0], [1]], { audited: true, recall: recall(1, 0.5) });
  const plain = step([[1], [2]]);
  const inspected = step([[2], [3]], {
    audited: true,
    recall: recall(0, NaN),
    inspect: { layer: 1, approx: new Float32Array(4), candidates: Int32Array.of(3), exact: null, exactTopK: null },
  });
  const s = store.getState();
  s.push({ index: 0, tokenId: 5, text: "a", step: audited });
  s.push({ index: 1, tokenId: 6, text: "b", step: plain });
  s.push({ index: 2, tokenId: 7, text: "c", step: inspected });
  const t = store.getState();
  assert.equal(t.count, 3);
  assert.equal(t.latest?.text, "c");
  assert.equal(t.requestId, 7);
  assert.equal(t.window.filled, 2);
  assert.deepEqual(Array.from(t.meanRecall), [0.5, 0.5]);
  assert.equal(t.inspected?.index, 2);
  assert.equal(t.trace.length, 3);
  assert.ok(seen.length >= 4 && seen.every((v, i) => i === 0 || v > seen[i - 1]), "version bumps on every change");
  // The prompt pass's token counts and is traced, but stays out of the window and the latest step.
  t.push({ index: 3, tokenId: 8, text: "p", step: step([[], []], { prefill: true, ms: 50 }) });
  assert.equal(store.getState().count, 4);
  assert.equal(store.getState().latest?.text, "c");
  assert.equal(store.getState().window.filled, 2);
  store.getState().setWindow(3);
  assert.equal(store.getState().window.filled, 3, "a larger window refills from the trace");
  assert.equal(store.getState().trace.length, 4);
  assert.equal(windowTokensPerS(store.getState().window), 500);
  store.getState().begin(8);
  assert.equal(store.getState().count, 0);
  assert.ok(Number.isNaN(store.getState().meanRecall[0]));
});

test("token marks, selection summary and the trace export", () => {
  const s = step([[0, 1], [2]], {
    audited: true,
    recall: Float32Array.of(1, 0.5),
    relError: Float32Array.of(0.5, 0.25),
    ms: 4,
    head: {
      k: 10,
      candidates: 40,
      ms: 0.2,
      bytes: 10,
      denseBytes: 100,
      argmaxInCandidates: true,
      massCovered: 0.98,
    },
  });
  assert.deepEqual(tokenMark("x", s), { text: "x", recall: 0.75, headMass: 0.98, divergence: 0.375, ms: 4 });
  assert.deepEqual(tokenMark("y", step([[0], [1]])), {
    text: "y",
    recall: null,
    headMass: null,
    divergence: null,
    ms: 2,
  });
  assert.equal(selectionSummary(s, 8), "3 selected (18.8%) · k 1–2/layer × 2");
  assert.equal(selectionSummary(step([[], []], { ffnMethod: "dense" }), 8), "dense FFN · all 8 neurons/layer");
  const bytes = step([[0], [1]], {
    ffnBytes: Float64Array.of(1.26e6, 2e6),
    ffnDenseBytes: Float64Array.of(6.3e6, 8e6),
    storageBytes: Float64Array.of(NaN, 0.5e6),
  });
  assert.equal(layerBytesText(bytes, 0), "FFN read 1.26 of 6.30 MB (20.0 %)");
  assert.equal(layerBytesText(bytes, 1), "FFN read 2.00 of 8.00 MB (25.0 %) · 0.50 MB on cache misses");
  const json = JSON.parse(traceJson([{ index: 0, tokenId: 3, text: "x", step: s }], { model: "m" }));
  assert.equal(json.model, "m");
  assert.deepEqual(json.tokens[0].layers[0].selected, [0, 1]);
  assert.deepEqual(json.tokens[0].layers[1].selected, [2]);
  assert.equal(json.tokens[0].layers[1].recall, 0.5);
  assert.equal(json.tokens[0].layers[1].relError, 0.25);
  assert.equal(json.tokens[0].layers[1].cacheHitRate, null, "NaN becomes null");
});

// ---- settings -----------------------------------------------------------------------------------

test("settings → request payloads", () => {
  const g = generatePayload([{ role: "user", content: "hi" }], {
    ...INITIAL_SAMPLING,
    topK: 12.4,
    presencePenalty: 3, // the panel's range is OpenAI's, -2..2
    maxTokens: 64,
  });
  assert.deepEqual(g, {
    type: "generate",
    messages: [{ role: "user", content: "hi" }],
    sampling: {
      temperature: 0.7,
      topK: 12,
      topP: 0.95,
      minP: 0,
      repetitionPenalty: 1.1,
      presencePenalty: 2,
      frequencyPenalty: 0,
      seed: 1,
    },
    maxTokens: 64,
  });
  parseRequest({ id: 1, ...g });
  const dense = generatePayload([{ role: "user", content: "hi" }], INITIAL_SAMPLING, DENSE_OVERRIDE);
  assert.deepEqual(dense.sparsity, { ffn: { method: "dense" }, head: { method: "dense" } });
  parseRequest({ id: 2, ...dense });
  // Thinking off goes out as thinking: false; on (the default) sends nothing.
  const quiet = generatePayload([{ role: "user", content: "hi" }], INITIAL_SAMPLING, undefined, false);
  assert.equal(quiet.thinking, false);
  assert.equal(parseRequest({ id: 3, ...quiet }).type, "generate");
  assert.equal("thinking" in g, false);
  assert.throws(() => parseRequest({ id: 4, ...quiet, thinking: "no" }), /"thinking" must be true or false/);
  // The reply format: a JSON Schema goes out as jsonSchema (the host compiles it); text sends none.
  assert.equal(replySchema("text", EXAMPLE_SCHEMA), undefined);
  assert.deepEqual(replySchema("json", "ignored"), { type: "object" });
  const schema = replySchema("schema", EXAMPLE_SCHEMA);
  assert.deepEqual((schema as { required: string[] }).required, ["answer", "confidence"]);
  assert.match(String(replySchema("schema", '{"type":')), /the JSON schema is not JSON/);
  const structured = generatePayload([{ role: "user", content: "hi" }], INITIAL_SAMPLING, undefined, true, schema);
  assert.deepEqual(parseRequest({ id: 5, ...structured }), {
    id: 5,
    ...structured,
    sparsity: undefined,
    thinking: undefined,
  });
  assert.throws(() => parseRequest({ id: 6, ...g, jsonSchema: "a string" }), /"jsonSchema" must be a JSON Schema/);
  assert.equal(samplingPayload({ ...INITIAL_SAMPLING, temperature: NaN, topP: 3 }).temperature, 0.7);
  assert.equal(samplingPayload({ ...INITIAL_SAMPLING, topP: 3 }).topP, 1);

  assert.equal(predictorName({ kind: "int8", groupSize: 64 }), "int8:64");
  assert.equal(resolveCount(0.1, 704), 70);
  assert.equal(resolveCount(5000, 704), 704);

  // A slider drag coalesces into one update; a predictor of another kind replaces the old one.
  const u = mergeUpdates(
    { ffn: { k: 0.1, predictor: { kind: "int4", groupSize: 32 }, perLayerK: { 1: 0.2 } } },
    { ffn: { k: 0.2, predictor: { kind: "lowrank", rank: 16 }, perLayerK: { 3: 0.5 } }, auditEvery: 1 },
  );
  assert.deepEqual(u, {
    ffn: { k: 0.2, predictor: { kind: "lowrank", rank: 16 }, perLayerK: { 1: 0.2, 3: 0.5 } },
    auditEvery: 1,
  });
  parseRequest({ id: 3, type: "sparsity.update", update: u });
  const merged = mergeSparsity(INITIAL_SPARSITY, u);
  assert.deepEqual(merged.ffn.predictor, { kind: "lowrank", rank: 16 });
  assert.deepEqual(merged.ffn.perLayerK, { 1: 0.2, 3: 0.5 });
  assert.equal(merged.ffn.k, 0.2);
  assert.equal(merged.ffn.method, "dense");
  assert.equal(merged.auditEvery, 1);
  // Per-layer oversample and predictor overrides merge per layer; a per-layer predictor of another
  // kind replaces that layer's whole.
  const perLayer = mergeUpdates(
    { ffn: { perLayerOversample: { 0: 3 }, perLayerPredictor: { 1: { kind: "int8", groupSize: 64 } } } },
    { ffn: { perLayerOversample: { 2: 4 }, perLayerPredictor: { 1: { kind: "lowrank", rank: 8 } } } },
  );
  parseRequest({ id: 4, type: "sparsity.update", update: perLayer });
  const withLayers = mergeSparsity(merged, perLayer);
  assert.deepEqual(withLayers.ffn.perLayerOversample, { 0: 3, 2: 4 });
  assert.deepEqual(withLayers.ffn.perLayerPredictor, { 1: { kind: "lowrank", rank: 8 } });
  assert.deepEqual(withLayers.ffn.perLayerK, { 1: 0.2, 3: 0.5 }, "other per-layer settings kept");
  assert.deepEqual(INITIAL_SPARSITY, DEFAULT_SETTINGS, "the UI's initial settings mirror the engine's defaults");

  const store = createSettingsStore();
  store.getState().applyLocal({ ffn: { method: "hire" } });
  assert.equal(store.getState().sparsity.ffn.method, "hire");
  assert.equal(store.getState().confirmed.ffn.method, "dense");
});

// ---- the studio against a fake host -------------------------------------------------------------

test("studio: a send saves after the user message and after the reply, streaming tokens in between", async () => {
  const host = new FakeHost();
  const studio = createStudio(host, { now: () => 5000 });
  await flush();
  assert.equal(studio.connection.getState().model?.name, "tiny");
  assert.equal(studio.connection.getState().status, "open");
  assert.equal(studio.telemetry.getState().layers, 2);

  studio.settings.getState().setSampling({ maxTokens: 16, temperature: 0 });
  studio.conversations.getState().update((c) => ({ ...c, system: "sys" }));
  const done = studio.send("Hello?");
  await flush();
  assert.equal(host.saved.length, 1, "saved after the user's message");
  assert.deepEqual(
    host.saved[0].messages.map((m) => [m.role, m.content]),
    [["user", "Hello?"]],
  );
  assert.equal(host.saved[0].modelPath, "/models/tiny");
  const gen = host.lastOf("generate");
  assert.deepEqual(gen.messages, [
    { role: "system", content: "sys" },
    { role: "user", content: "Hello?" },
  ]);
  assert.equal(gen.maxTokens, 16);
  assert.equal(gen.sampling.temperature, 0);
  assert.equal(gen.sparsity, undefined);
  assert.equal(studio.conversations.getState().streaming?.requestId, gen.id);

  host.emit({ type: "gen.prefill", requestId: gen.id, promptTokens: 4, reusedTokens: 0, ms: 1 });
  host.emit({ type: "gen.token", requestId: gen.id, index: 0, tokenId: 1, text: "Hi", step: step([[0], [1]]) });
  host.emit({ type: "gen.token", requestId: 999, index: 0, tokenId: 1, text: "other", step: step([[0], [1]]) });
  host.emit({ type: "gen.token", requestId: gen.id, index: 1, tokenId: 2, text: "!", step: step([[2], [1]]) });
  const streaming = studio.conversations.getState().current.messages[1];
  assert.equal(streaming.content, "Hi!", "tokens of other requests are ignored");
  assert.equal(studio.telemetry.getState().count, 2);
  assert.equal(studio.conversations.getState().streaming?.prefill?.promptTokens, 4);

  host.reply(gen.id, { ...SUMMARY, requestId: gen.id, text: "Hi!", tokens: 2, contextUsed: 8 });
  await done;
  assert.equal(studio.conversations.getState().streaming, null);
  assert.equal(host.saved.length, 2, "saved again after the reply");
  const last = host.saved[1];
  assert.deepEqual(JSON.parse(JSON.stringify(parseConversation(last))), last);
  assert.equal(last.messages[1].content, "Hi!");
  assert.equal(last.messages[1].stats?.finishReason, "eos");
  assert.equal(last.messages[1].tokens?.length, 2);
  assert.deepEqual(studio.conversations.getState().context, { used: 8, length: 512, finishReason: "eos" });
  assert.equal(studio.conversations.getState().list[0].messages, 2);
  studio.dispose();
});

test("studio: tools go with the request; a reply's calls become cards, a result goes back as the tool's message", async () => {
  const host = new FakeHost();
  const studio = createStudio(host, { now: () => 5000 });
  await flush();
  const tools = [{ type: "function", function: { name: "get_time", parameters: { type: "object" } } }];
  studio.settings.getState().setToolChoice("required");
  studio.settings.getState().setToolsText("[1,");
  // A tools box that is not JSON: said (the chat keeps the typed message then).
  assert.equal(studio.replyFormatOk(), false);
  assert.match(studio.connection.getState().error?.message ?? "", /the tools are not JSON/);
  assert.ok(replyTools("auto", "{}") instanceof Error, "an object is not a list of tools");
  studio.settings.getState().setToolsText(JSON.stringify(tools));
  const done = studio.send("Time?");
  await flush();
  const gen = host.lastOf("generate");
  assert.deepEqual([gen.tools, gen.toolChoice], [tools, "required"]);
  assert.equal(parseRequest({ ...gen }).type, "generate", "the protocol accepts it");
  const call = {
    id: "call_r1_0",
    type: "function" as const,
    function: { name: "get_time", arguments: '{"zone":"UTC"}' },
  };
  host.reply(gen.id, {
    ...SUMMARY,
    requestId: gen.id,
    text: '<tool_call>{"name": ...}</tool_call>',
    toolCalls: [call],
    content: "",
  });
  await done;
  let c = studio.conversations.getState().current;
  assert.deepEqual(c.messages[1].tool_calls, [call]);
  assert.equal(c.messages[1].content, "", "the reply's text outside its calls");
  assert.deepEqual(unansweredCalls(c, 1), ["call_r1_0"]);
  // The result: a tool message, then the next reply, which sees the call and the result.
  const next = studio.sendToolResult("call_r1_0", '{"time": "12:00"}');
  await flush();
  const gen2 = host.lastOf("generate");
  assert.deepEqual(gen2.messages.slice(-2), [
    { role: "assistant", content: "", tool_calls: [call] },
    { role: "tool", content: '{"time": "12:00"}', tool_call_id: "call_r1_0" },
  ]);
  host.reply(gen2.id, { ...SUMMARY, requestId: gen2.id, text: "It is noon." });
  await next;
  c = studio.conversations.getState().current;
  assert.deepEqual(unansweredCalls(c, 1), []);
  assert.deepEqual(
    c.messages.map((m) => m.role),
    ["user", "assistant", "tool", "assistant"],
  );
  // Saved as it is, and the protocol takes the saved form back.
  const saved = host.saved.at(-1)!;
  assert.deepEqual(JSON.parse(JSON.stringify(parseConversation(saved))), saved);
  assert.deepEqual(saved.messages[1].tool_calls, [call]);
  assert.equal(saved.messages[2].tool_call_id, "call_r1_0");
  // Regenerate after a tool result redoes the answer to it, not the call.
  assert.deepEqual(
    dropTrailingReplies(c)!.messages.map((m) => m.role),
    ["user", "assistant", "tool"],
  );
  assert.throws(() => appendToolResult(c, "call_nope", "x"), /no tool call call_nope/);
  assert.throws(() => parseRequest({ ...gen, tools: undefined }), /"toolChoice" needs "tools"/);
  assert.throws(() => parseRequest({ ...gen, toolChoice: "none" }), /"toolChoice" must be "auto" or "required"/);
  assert.throws(() => parseRequest({ ...gen, tools: [{ type: "function" }] }), /"tools\[0\]" must be/);
  studio.dispose();
});

test("studio: quality against k: the k box parsed and sent, progress shown, rows kept; Stop targets it", async () => {
  const host = new FakeHost();
  const studio = createStudio(host, { now: () => 5000 });
  await flush();
  assert.ok(parseKs("0.1 x") instanceof Error);
  assert.ok(parseKs("") instanceof Error);
  assert.deepEqual(parseKs(" 0.05, 0.1 64 "), [0.05, 0.1, 64]);
  studio.evaluation.getState().setText("Some text to score.");
  studio.evaluation.getState().setKsText("0.1, 0.2");
  const run = studio.runEvaluation();
  await flush();
  const req = host.lastOf("eval");
  assert.deepEqual([req.text, req.ffnK], ["Some text to score.", [0.1, 0.2]]);
  assert.equal(studio.busy(), true, "no chat while the engine evaluates");
  host.emit({ type: "eval.progress", requestId: req.id, done: 3, total: 12 });
  host.emit({ type: "eval.progress", requestId: 999, done: 11, total: 12 });
  assert.deepEqual(studio.evaluation.getState().progress, { done: 3, total: 12 }, "only this run's progress");
  void studio.stop();
  await flush();
  assert.equal(host.lastOf("stop").target, req.id);
  const rows = [
    {
      method: "dense",
      ffn_k: null,
      oversample: null,
      tokens: 4,
      perplexity: 9,
      recall_per_layer: null,
      mean_recall: null,
      head_argmax_hit_rate: null,
      head_mass_covered: null,
    },
  ];
  host.reply(req.id, rows);
  await run;
  assert.deepEqual(studio.evaluation.getState().rows, rows);
  assert.equal(studio.evaluation.getState().progress, null);
  assert.equal(studio.busy(), false);
  // A bad k box is said and nothing is sent.
  studio.evaluation.getState().setKsText("fast");
  const before = host.sent.length;
  await studio.runEvaluation();
  assert.equal(host.sent.length, before);
  assert.match(studio.connection.getState().error?.message ?? "", /"fast" is not a positive number/);
  studio.dispose();
});

test("studio: stop targets the generate request; A/B runs dense then sparse", async () => {
  const host = new FakeHost();
  const studio = createStudio(host);
  await flush();
  const done = studio.send("Tell me");
  await flush();
  const gen = host.lastOf("generate");
  await studio.stop();
  assert.equal(host.lastOf("stop").target, gen.id);
  host.reply(gen.id, { ...SUMMARY, requestId: gen.id, text: "", tokens: 0, finishReason: "aborted" });
  await done;

  const ab = studio.compare("Compare this");
  await flush();
  const dense = host.lastOf("generate");
  assert.deepEqual(dense.sparsity, DENSE_OVERRIDE);
  assert.equal(dense.messages.at(-1)?.content, "Compare this");
  host.emit({ type: "gen.token", requestId: dense.id, index: 0, tokenId: 1, text: "A", step: step([[], []]) });
  host.reply(dense.id, { ...SUMMARY, requestId: dense.id, text: "A" });
  await flush();
  const sparse = host.lastOf("generate");
  assert.notEqual(sparse.id, dense.id);
  assert.equal(sparse.sparsity, undefined, "the sparse lane runs with the live settings");
  assert.ok(!sparse.messages.some((m) => m.content === "A"), "the dense reply is not in the sparse lane's history");
  host.emit({ type: "gen.token", requestId: sparse.id, index: 0, tokenId: 2, text: "B", step: step([[0], [1]]) });
  host.reply(sparse.id, { ...SUMMARY, requestId: sparse.id, text: "B" });
  await ab;
  const msgs = studio.conversations.getState().current.messages;
  assert.deepEqual(
    msgs.slice(-3).map((m) => [m.role, m.lane ?? null, m.content]),
    [
      ["user", null, "Compare this"],
      ["assistant", "dense", "A"],
      ["assistant", "sparse", "B"],
    ],
  );
  assert.deepEqual(host.saved.at(-1)?.messages.at(-1)?.lane, "sparse");
  assert.equal(studio.conversations.getState().comparing, false);
  studio.dispose();
});

test("studio: sparsity changes are coalesced, confirmed by the host, and reverted on error", async () => {
  const host = new FakeHost();
  let fire: (() => void) | null = null;
  const studio = createStudio(host, {
    sparsityDebounceMs: 100,
    setTimer: (fn) => (fire = fn),
    clearTimer: () => (fire = null),
  });
  await flush();
  studio.updateSparsity({ ffn: { method: "hire" } });
  studio.updateSparsity({ ffn: { k: 0.2 } });
  studio.updateSparsity({ ffn: { k: 0.25 } });
  assert.equal(studio.settings.getState().sparsity.ffn.k, 0.25, "shown at once");
  assert.equal(host.sent.filter((r) => r.type === "sparsity.update").length, 0, "not sent while the slider moves");
  (fire as unknown as () => void)();
  await flush();
  const ups = host.sent.filter((r) => r.type === "sparsity.update");
  assert.equal(ups.length, 1);
  assert.deepEqual(host.lastOf("sparsity.update").update, { ffn: { method: "hire", k: 0.25 } });
  assert.equal(studio.settings.getState().confirmed.ffn.method, "hire");
  assert.equal(studio.settings.getState().applying, false);
  // The host's settings event says how much of the file-layout FFN it gave back: the model bar shows it.
  assert.equal(studio.connection.getState().model?.releasedBytes, 0);
  host.emit({ type: "settings", settings: studio.settings.getState().confirmed, releasedBytes: 1 << 20 });
  assert.equal(studio.connection.getState().model?.releasedBytes, 1 << 20);

  // A rejected update: the error is shown and the controls go back to the host's settings.
  host.failures.set("sparsity.update", { code: "USAGE", message: "FFN k must be a fraction" });
  studio.updateSparsity({ ffn: { k: 7.5 } });
  assert.equal(studio.settings.getState().sparsity.ffn.k, 7.5);
  (fire as unknown as () => void)();
  await flush();
  assert.equal(studio.connection.getState().error?.code, "USAGE");
  assert.equal(studio.connection.getState().error?.context, "Applying sparsity settings");
  assert.equal(studio.settings.getState().sparsity.ffn.k, 0.25);
  host.failures.clear();

  // Thinking switched off in the panel: the next generate asks for it.
  studio.settings.getState().setThinking(false);
  const quiet = studio.send("Quietly");
  await flush();
  assert.equal(host.lastOf("generate").thinking, false);
  host.fail(host.lastOf("generate").id, "ABORTED_BY_TEST", "not needed");
  await quiet;
  studio.settings.getState().setThinking(true);

  // Moving a control and pressing Send at once: the update reaches the host before the request.
  studio.updateSparsity({ ffn: { k: 0.05 } });
  assert.ok(fire, "the update is still debounced");
  const reply = studio.send("Now");
  await flush();
  const order = host.sent.map((r) => r.type).filter((t) => t === "sparsity.update" || t === "generate");
  assert.deepEqual(order.slice(-2), ["sparsity.update", "generate"]);
  assert.deepEqual(host.lastOf("sparsity.update").update, { ffn: { k: 0.05 } });
  host.fail(host.lastOf("generate").id, "ABORTED_BY_TEST", "not needed");
  await reply;

  await studio.inspectLayer(1);
  assert.equal(host.lastOf("inspect.layer").layer, 1);
  await studio.inspectLayer(null);
  assert.equal(host.lastOf("inspect.layer").layer, -1);
  studio.dispose();
});

test("studio: the Hugging Face cache's models arrive after hello; the recent list keeps what a model was loaded by", async () => {
  const host = new FakeHost();
  const studio = createStudio(host);
  await flush();
  await flush();
  assert.deepEqual(studio.connection.getState().cached, CACHED);
  const load = studio.loadModel("org/tiny");
  await flush();
  const req = host.lastOf("model.load");
  assert.equal(req.path, "org/tiny");
  host.reply(req.id, { ...MODEL, path: CACHED.models[0].path, name: "org/tiny", source: "org/tiny" });
  await load;
  assert.equal(studio.connection.getState().recentModels[0], "org/tiny");
  // A host that cannot list the cache leaves the list empty, and nothing else fails.
  const old = new FakeHost();
  old.failures.set("models.cached", { code: "PROTOCOL", message: "unknown request type" });
  const other = createStudio(old);
  await flush();
  await flush();
  assert.equal(other.connection.getState().cached, null);
  assert.equal(other.connection.getState().error, null);
  studio.dispose();
  other.dispose();
});

test("the reply format and the schema box are kept between app starts", () => {
  const saved = new Map<string, string>();
  const g = globalThis as { localStorage?: KeyValueStorage };
  g.localStorage = { getItem: (k) => saved.get(k) ?? null, setItem: (k, v) => void saved.set(k, v) };
  try {
    const first = createSettingsStore();
    assert.deepEqual([first.getState().replyFormat, first.getState().schemaText], ["text", EXAMPLE_SCHEMA]);
    first.getState().setReplyFormat("schema");
    first.getState().setSchemaText('{"type": "array"}');
    const next = createSettingsStore(); // a new start of the app
    assert.deepEqual([next.getState().replyFormat, next.getState().schemaText], ["schema", '{"type": "array"}']);
    saved.set(REPLY_PREFS_KEY, JSON.stringify({ replyFormat: "yaml", schemaText: 5 }));
    assert.deepEqual(
      [createSettingsStore().getState().replyFormat, createSettingsStore().getState().schemaText],
      ["text", EXAMPLE_SCHEMA],
    );
    saved.set(REPLY_PREFS_KEY, "{not json");
    assert.equal(createSettingsStore().getState().replyFormat, "text");
    // The tools too.
    const tools = createSettingsStore();
    assert.deepEqual([tools.getState().toolChoice, tools.getState().toolsText], ["off", EXAMPLE_TOOLS]);
    tools.getState().setToolChoice("auto");
    tools.getState().setToolsText("[]");
    assert.deepEqual(
      [createSettingsStore().getState().toolChoice, createSettingsStore().getState().toolsText],
      ["auto", "[]"],
    );
  } finally {
    delete g.localStorage;
  }
});

test("the model bar's load choices are kept between app starts, and sent with inspect and load", async () => {
  const saved = new Map<string, string>();
  const storage: KeyValueStorage = {
    getItem: (k) => saved.get(k) ?? null,
    setItem: (k, v) => void saved.set(k, v),
  };
  const g = globalThis as { localStorage?: KeyValueStorage };
  g.localStorage = storage;
  try {
    const choices = (s: ReturnType<typeof createConnectionStore>) => {
      const { kvCache, weights, contextLength } = s.getState();
      return [kvCache, weights, contextLength];
    };
    const first = createConnectionStore();
    assert.deepEqual(choices(first), ["f32", "auto", null]);
    first.getState().setKvCache("f16");
    first.getState().setWeights("int8");
    first.getState().setContextLength(8192);
    const next = createConnectionStore(); // a new start of the app
    assert.deepEqual(choices(next), ["f16", "int8", 8192]);
    // Whatever was stored that is not a valid choice falls back to the defaults.
    saved.set(LOAD_PREFS_KEY, JSON.stringify({ kvCache: "q2", weights: "int3", contextLength: -5 }));
    assert.deepEqual(choices(createConnectionStore()), ["f32", "auto", null]);
    saved.set(LOAD_PREFS_KEY, "{not json");
    assert.deepEqual(choices(createConnectionStore()), ["f32", "auto", null]);

    saved.set(LOAD_PREFS_KEY, JSON.stringify({ kvCache: "f16", weights: "int8", contextLength: 2048 }));
    const host = new FakeHost();
    const studio = createStudio(host);
    await flush();
    const inspecting = studio.inspectModel("/models/tiny");
    await flush();
    const inspect = host.lastOf("model.inspect");
    assert.deepEqual([inspect.kvCache, inspect.weights, inspect.contextLength], ["f16", "int8", 2048]);
    host.reply(inspect.id, { ...MODEL, kvCache: "f16", weights: "int8", contextLength: 2048 });
    await inspecting;
    const load = studio.loadModel("/models/tiny");
    await flush();
    const req = host.lastOf("model.load");
    assert.deepEqual([req.kvCache, req.weights, req.contextLength], ["f16", "int8", 2048]);
    host.reply(req.id, { ...MODEL, kvCache: "f16", weights: "int8", contextLength: 2048 });
    await load;
    studio.dispose();
  } finally {
    delete g.localStorage;
  }
});

test("studio: a failed load shows the loader's error (code, file, message)", async () => {
  const host = new FakeHost();
  host.failures.set("model.load", { code: "BAD_HEADER", message: "model.safetensors: header is not JSON" });
  const studio = createStudio(host);
  await flush();
  const info = await studio.loadModel("/models/broken");
  assert.equal(info, null);
  assert.deepEqual(host.lastOf("model.load").path, "/models/broken");
  const e = studio.connection.getState().error;
  assert.equal(e?.code, "BAD_HEADER");
  assert.equal(e?.context, "Loading model");
  assert.equal(studio.connection.getState().loading, null);
  await studio.loadModel();
  assert.equal(host.lastOf("model.load").path, undefined, "Default model: no path");
  studio.dispose();
});

test("studio: a reply that fills the context window reports context_full", async () => {
  const host = new FakeHost();
  const studio = createStudio(host);
  await flush();
  const done = studio.send("long");
  await flush();
  const gen = host.lastOf("generate");
  host.reply(gen.id, { ...SUMMARY, requestId: gen.id, finishReason: "context_full", contextUsed: 512 });
  await done;
  assert.deepEqual(studio.conversations.getState().context, { used: 512, length: 512, finishReason: "context_full" });
  assert.equal(host.saved.at(-1)?.messages[1].stats?.finishReason, "context_full");

  // A prompt that does not fit at all: the host refuses it; the empty reply is dropped.
  host.failures.set("generate", {
    code: "CONTEXT_FULL",
    message: "the prompt needs 600 tokens; the context holds 512",
  });
  await studio.send("more");
  assert.equal(studio.connection.getState().error?.code, "CONTEXT_FULL");
  assert.equal(studio.conversations.getState().context?.finishReason, "context_full");
  assert.equal(studio.conversations.getState().current.messages.at(-1)?.role, "user");
  studio.dispose();
});
