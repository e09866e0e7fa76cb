// The engine host's typed protocol: what a UI may ask (requests), what the host answers (one reply
// per request) and what it streams (events). The same messages travel over Electron IPC (through
// the main process, which validates them) and over `hire serve`'s WebSocket, so the renderer never
// knows its transport. Everything arriving from a UI is `unknown` until `parseRequest` accepts it.
//
// This module is imported by the renderer too: types and pure functions only, no Node APIs.
import type { ChatMessage, ToolCall } from "../loader/tokenizer.js";
import type { CachedModel } from "../loader/hf-cache.js";
import type { SamplingOptions } from "../engine/sampler.js";
import type { FinishReason } from "../engine/session.js";
import type { EvalRow } from "../engine/eval.js";
import type { DeepPartial, SparsitySettings } from "../sparse/settings.js";
import { isKvDtype, KV_DTYPES, type KvDtype } from "../backend/backend.js";
import type { WeightChoice, WeightFormat } from "../loader/weight-format.js";

export const PROTOCOL_VERSION = 1;

export type {
  CachedModel,
  ChatMessage,
  SamplingOptions,
  SparsitySettings,
  DeepPartial,
  FinishReason,
  WeightChoice,
  WeightFormat,
};

// How a load keeps the model's matrices (core/loader/weight-format.ts): a load asks for a choice
// ("auto" or a format), a loaded model reports the format. Listed here rather than imported because
// that module loads the native addon, which the renderer cannot; the record makes the compiler hold
// this list to the WeightChoice type, every choice and no other.
const WEIGHT_CHOICE_SET: Record<WeightChoice, true> = { auto: true, file: true, int8: true, int4: true };
export const WEIGHT_CHOICES = Object.keys(WEIGHT_CHOICE_SET) as readonly WeightChoice[];
export const isWeightChoice = (x: unknown): x is WeightChoice => (WEIGHT_CHOICES as readonly unknown[]).includes(x);

// ---------------------------------------------------------------------------------------------
// Requests (UI → host). `id` is chosen by the UI; the host answers each with one Reply.

export type Request =
  | { id: number; type: "hello" }
  /** contextLength, kvCache, weights: what the estimate assumes (default: the host's). */
  | {
      id: number;
      type: "model.inspect";
      path: string;
      contextLength?: number;
      kvCache?: KvDtype;
      weights?: WeightChoice;
    }
  /** The models already in the Hugging Face cache on the host's machine. */
  | { id: number; type: "models.cached" }
  | {
      id: number;
      type: "model.load";
      path?: string;
      contextLength?: number;
      kvCache?: KvDtype;
      /**
       * "int8" / "int4": the linear layers as int8 / int4 copies (a half / a quarter of bf16's memory;
       * CPU backend only); "auto" (the default): int8 for an import of a quantized GGUF file (int4 for an all-Q4_0 one), else "file".
       */
      weights?: WeightChoice;
    }
  | {
      id: number;
      type: "generate";
      messages: ChatMessage[];
      sampling: Partial<SamplingOptions>;
      maxTokens: number;
      /** Settings for this generation only (A/B: the dense lane); the live settings are restored after. */
      sparsity?: DeepPartial<SparsitySettings>;
      /** false: the chat template's `enable_thinking: false` (ModelInfo.thinkingSwitch). */
      thinking?: boolean;
      /** Structured output: the reply is a JSON document of this JSON Schema ({"type": "object"}: any object). */
      jsonSchema?: unknown;
      /** Functions the model may call (OpenAI's tool form), for a chat template that reads `tools`. */
      tools?: unknown[];
      /** With tools: "auto" (the model decides; a call it starts is held to the tools) or "required". */
      toolChoice?: "auto" | "required";
    }
  | { id: number; type: "stop"; target: number }
  /**
   * Quality against k on a text (hire eval): dense, then the live sparse settings at each FFN k in
   * `ffnK`: perplexity and recall per layer. Progress comes as eval.progress; "stop" ends it.
   */
  | { id: number; type: "eval"; text: string; ffnK: number[] }
  | { id: number; type: "sparsity.update"; update: DeepPartial<SparsitySettings> }
  | { id: number; type: "inspect.layer"; layer: number }
  | { id: number; type: "conversations.list" }
  | { id: number; type: "conversations.get"; conversationId: string }
  | { id: number; type: "conversations.save"; conversation: Conversation }
  | { id: number; type: "conversations.delete"; conversationId: string };

export type RequestType = Request["type"];

/** What each request's successful reply carries. */
export interface ReplyResults {
  hello: HelloInfo;
  "model.inspect": ModelEstimate;
  "models.cached": CachedModels;
  "model.load": ModelInfo;
  generate: GenerationSummary;
  stop: { stopped: boolean };
  "sparsity.update": SparsitySettings;
  "inspect.layer": { layer: number };
  eval: EvalRow[];
  "conversations.list": ConversationSummary[];
  "conversations.get": Conversation;
  "conversations.save": ConversationSummary;
  "conversations.delete": { deleted: boolean };
}

// ---------------------------------------------------------------------------------------------
// Host → UI

export type Reply =
  | { type: "reply"; id: number; ok: true; result: unknown }
  | { type: "reply"; id: number; ok: false; error: HostErrorInfo };

export type HostEvent =
  | { type: "model.progress"; stage: "import" | "weights" | "ffn" | "head"; done: number; total: number; path: string }
  | { type: "model.loaded"; info: ModelInfo }
  | { type: "settings"; settings: SparsitySettings; releasedBytes: number }
  | { type: "gen.prefill"; requestId: number; promptTokens: number; reusedTokens: number; ms: number }
  | {
      type: "gen.token";
      requestId: number;
      index: number;
      tokenId: number;
      text: string;
      step: StepTelemetry;
      /** Asked for by the OpenAI endpoints: the token's log-probability and the top alternatives' [id, logprob]. */
      logprob?: number;
      topLogprobs?: [number, number][];
    }
  | { type: "eval.progress"; requestId: number; done: number; total: number }
  /** Electron's File → Open Model Folder… picked `path`: the UI loads it as if typed in. */
  | { type: "app.openModel"; path: string }
  /** The engine process died or failed outside any request; the UI offers to reload the model. */
  | { type: "host.crashed"; message: string };

export type HostMessage = Reply | HostEvent;

export interface HostErrorInfo {
  /** ModelError codes (NOT_FOUND, BAD_HEADER, …), or USAGE, PROTOCOL, CONTEXT_FULL, CHAT_TEMPLATE (the
   * template refused the conversation), BUSY, NO_MODEL, INTERNAL. */
  code: string;
  message: string;
  file?: string;
}

export interface HelloInfo {
  protocol: number;
  /** Which compute backend runs the engine, e.g. "cpu (avx2+fma+f16c, 2 threads)" or "cuda:0 NVIDIA H200". */
  backend: string;
  /** The GPUs the engine can use ("cuda:0 NVIDIA H200, 139.8 GiB"), or why none (one line). */
  gpus: string[];
  defaultModel: string | null;
  recentModels: string[];
  model: ModelInfo | null;
  settings: SparsitySettings | null;
  /** The request id of a generation still running (a reconnecting UI can stop it). */
  generating: number | null;
}

/** The Hugging Face cache the host looked in, and the model repos it holds (core/loader/hf-cache.ts). */
export interface CachedModels {
  hub: string;
  models: CachedModel[];
}

/** What loading a folder will cost, read from its headers before any weight is mapped. */
export interface ModelEstimate {
  path: string;
  architecture: string;
  parameters: number;
  dtype: string;
  /** The weights as `weights` keeps them: with "int8" or "int4", an estimate (see engine-host.ts: estimate). */
  weightBytes: number;
  /** KV cache at contextLength positions, in kvCache's element type. */
  kvCacheBytes: number;
  contextLength: number;
  kvCache: KvDtype;
  /** How the matrices are kept: as the file stores them (`dtype`), or as int8 / int4 copies ("auto" resolved). */
  weights: WeightFormat;
}

export interface ModelInfo extends ModelEstimate {
  /** The repo id for a model from the Hugging Face cache, else the folder's name. */
  name: string;
  /** What the recent list keeps for it: the repo id it was loaded by ("org/name[@rev]"), else `path`. */
  source: string;
  layers: number;
  hidden: number;
  /**
   * FFN neurons per layer: the width of the inspector's layer × neuron map. A mixture's layer numbers
   * every expert's neurons in turn (expert e's neuron i is e·F + i), then the shared expert's.
   */
  neurons: number;
  /** A mixture of experts: experts per layer, how many a token takes, each one's width (k applies per
   * expert) and the shared expert's (0: none); null for dense FFNs. */
  moe: { experts: number; perToken: number; expertNeurons: number; sharedNeurons: number } | null;
  vocab: number;
  gatedFfn: boolean;
  hasChatTemplate: boolean;
  /** The chat template reads `enable_thinking`: a reasoning model whose thinking can be switched off. */
  thinkingSwitch: boolean;
  /** Dense weight bytes streamed per decoded token. */
  bytesPerToken: number;
  /** File-layout FFN weights given back while HiRE's own copies serve them (Sparsifier). */
  releasedBytes: number;
  /**
   * Where quantized weights came from, for the model line: "from BF16", "from the GGUF's Q8_0
   * blocks", ... (core/gguf/block-weights.ts quantizedFrom); null for the file's weights.
   */
  quantizedFrom: string | null;
  settings: SparsitySettings;
}

export interface GenerationSummary {
  requestId: number;
  finishReason: FinishReason;
  text: string;
  promptTokens: number;
  reusedTokens: number;
  tokens: number;
  /** Time to first token: prefill plus the first decode step. */
  ttftMs: number;
  decodeTokensPerS: number;
  /** The context window and how much of it this conversation now uses. */
  contextLength: number;
  contextUsed: number;
  /** The calls of the request's tools the reply made (then `content` is its text outside them). */
  toolCalls?: ToolCall[];
  content?: string;
}

/**
 * One decoded token's telemetry, flattened into typed arrays so it crosses IPC/WebSocket cheaply
 * and a canvas can draw it without per-layer objects. Per-layer arrays have one entry per layer;
 * NaN means "not measured" (dense layers have no selection; unaudited tokens have no recall).
 */
export interface StepTelemetry {
  ffnMethod: string;
  headMethod: string;
  /** This token's logits came from the batched prompt pass (no per-layer selection is reported). */
  prefill: boolean;
  audited: boolean;
  /** Whole forward pass. */
  ms: number;
  attentionMs: Float32Array;
  ffnMs: Float32Array;
  predictorMs: Float32Array;
  exactMs: Float32Array;
  downMs: Float32Array;
  outputMs: number;
  k: Int32Array;
  candidates: Int32Array;
  /** Selected neurons of all layers, concatenated; layer l's are selected[offsets[l] .. offsets[l+1]). */
  selected: Int32Array;
  selectedOffsets: Int32Array;
  recall: Float32Array;
  relError: Float32Array;
  cacheHitRate: Float32Array;
  /** Per layer: the FFN's weight bytes read this token and what the dense FFN reads (equal when dense). */
  ffnBytes: Float64Array;
  ffnDenseBytes: Float64Array;
  /** dip-ca only: bytes a miss would stream from storage (NaN elsewhere). */
  storageBytes: Float64Array;
  /** Weight bytes read this token (FFNs + output layer + attention), and what dense reads. */
  bytes: number;
  denseBytes: number;
  head: {
    k: number;
    candidates: number;
    ms: number;
    /** Weight bytes the output layer read, and what the dense one reads. */
    bytes: number;
    denseBytes: number;
    argmaxInCandidates: boolean | null;
    massCovered: number | null;
  } | null;
  /** The inspected layer's predicted vs exact scores (see `inspect.layer`). */
  inspect: {
    layer: number;
    approx: Float32Array;
    candidates: Int32Array;
    exact: Float32Array | null;
    exactTopK: Int32Array | null;
  } | null;
}

// ---------------------------------------------------------------------------------------------
// Conversations (persisted by the host; the UI owns their content)

export interface MessageStats {
  tokens: number;
  ttftMs: number;
  decodeTokensPerS: number;
  finishReason: FinishReason;
  /** Mean recall over audited tokens and the output-layer mass, when measured. */
  meanRecall?: number;
}

/** Per-token marks for colouring a reply: the token's text and its measures (null = not measured). */
export interface TokenMark {
  text: string;
  recall: number | null;
  headMass: number | null;
  /** Audited tokens: mean over layers of ‖FFN out − dense out‖ / ‖dense out‖ (0 = same as dense). */
  divergence?: number | null;
  ms: number;
}

export interface StoredMessage extends ChatMessage {
  stats?: MessageStats;
  tokens?: TokenMark[];
  /** "dense" or "sparse" for the two halves of an A/B comparison. */
  lane?: string;
}

export interface Conversation {
  id: string;
  title: string;
  createdAt: number;
  updatedAt: number;
  modelPath: string | null;
  system: string;
  messages: StoredMessage[];
}

export interface ConversationSummary {
  id: string;
  title: string;
  updatedAt: number;
  messages: number;
}

// ---------------------------------------------------------------------------------------------
// Validation of everything a UI sends. Hostile input gets a ProtocolError, never reaches the engine.

export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
}

export const LIMITS = {
  messages: 10_000,
  contentChars: 1_000_000,
  pathChars: 4096,
  titleChars: 200,
  maxTokens: 1_000_000,
  tokenMarks: 100_000,
} as const;

const ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

type Obj = Record<string, unknown>;

function isObj(x: unknown): x is Obj {
  return typeof x === "object" && x !== null && !Array.isArray(x) && !ArrayBuffer.isView(x);
}

/**
 * OpenAI's function tools, [{"type": "function", "function": {"name", "description"?, "parameters"?}}],
 * checked for shape and size (their parameters are compiled, and checked, where the host makes their
 * grammar); `bad` says what is wrong.
 */
export function toolList(tools: unknown, bad: (what: string) => never): unknown[] {
  if (!Array.isArray(tools) || tools.length > 128) bad(`"tools" must be an array of at most 128 functions`);
  const list = (tools as unknown[]).map((t, i) => {
    const f = (t as Record<string, unknown> | null)?.function as Record<string, unknown> | undefined;
    const ok =
      typeof t === "object" &&
      t !== null &&
      (t as Record<string, unknown>).type === "function" &&
      typeof f === "object" &&
      f !== null &&
      typeof f.name === "string" &&
      f.name !== "" &&
      (f.description === undefined || typeof f.description === "string") &&
      (f.parameters === undefined || (typeof f.parameters === "object" && f.parameters !== null));
    if (!ok) bad(`"tools[${i}]" must be {"type": "function", "function": {"name", "description"?, "parameters"?}}`);
    return t;
  });
  if (JSON.stringify(list).length > LIMITS.contentChars)
    bad(`"tools" is longer than ${LIMITS.contentChars} characters`);
  return list;
}

function fail(where: string, what: string): never {
  throw new ProtocolError(`${where}: ${what}`);
}

function str(o: Obj, key: string, where: string, max: number): string {
  const v = o[key];
  if (typeof v !== "string") fail(where, `"${key}" must be a string`);
  if (v.length > max) fail(where, `"${key}" is longer than ${max} characters`);
  return v;
}

function num(o: Obj, key: string, where: string, integer = false): number {
  const v = o[key];
  if (typeof v !== "number" || !Number.isFinite(v)) fail(where, `"${key}" must be a finite number`);
  if (integer && !Number.isInteger(v)) fail(where, `"${key}" must be an integer`);
  return v;
}

function contextLengthField(o: Obj, where: string): number | undefined {
  const contextLength = optional(o, "contextLength", () => num(o, "contextLength", where, true));
  if (contextLength !== undefined && contextLength < 1) fail(where, `"contextLength" must be positive`);
  return contextLength;
}

function kvCacheField(o: Obj, where: string): KvDtype | undefined {
  return optional(o, "kvCache", () => {
    const v = o.kvCache;
    if (!isKvDtype(v)) fail(where, `"kvCache" must be one of ${KV_DTYPES.join(", ")}`);
    return v;
  });
}

function weightsField(o: Obj, where: string): WeightChoice | undefined {
  return optional(o, "weights", () => {
    const v = o.weights;
    if (!isWeightChoice(v)) fail(where, `"weights" must be one of ${WEIGHT_CHOICES.join(", ")}`);
    return v;
  });
}

function optional<T>(o: Obj, key: string, read: () => T): T | undefined {
  return o[key] === undefined || o[key] === null ? undefined : read();
}

function onlyKeys(o: Obj, allowed: readonly string[], where: string): void {
  for (const k of Object.keys(o)) if (!allowed.includes(k)) fail(where, `unknown field "${k}"`);
}

function conversationId(o: Obj, key: string, where: string): string {
  const v = str(o, key, where, 64);
  if (!ID_PATTERN.test(v)) fail(where, `"${key}" must be 1–64 letters, digits, "-" or "_"`);
  return v;
}

function chatMessage(x: unknown, where: string): ChatMessage {
  if (!isObj(x)) fail(where, "a message must be an object");
  const role = x.role;
  if (role !== "system" && role !== "user" && role !== "assistant" && role !== "tool")
    fail(where, `role must be "system", "user", "assistant" or "tool"`);
  // An assistant turn that only called tools may have no content (OpenAI sends null).
  const calls = role === "assistant" && x.tool_calls !== undefined && x.tool_calls !== null;
  const content =
    calls && (x.content === null || x.content === undefined) ? "" : str(x, "content", where, LIMITS.contentChars);
  return {
    role,
    content,
    ...(calls && { tool_calls: toolCalls(x.tool_calls, where) }),
    ...(role === "tool" && x.tool_call_id !== undefined && { tool_call_id: str(x, "tool_call_id", where, 256) }),
  };
}

/** An assistant turn's tool_calls: [{id, type: "function", function: {name, arguments (JSON text)}}]. */
function toolCalls(x: unknown, where: string): ToolCall[] {
  if (!Array.isArray(x) || x.length > LIMITS.messages) fail(where, `"tool_calls" must be an array of calls`);
  return x.map((c, i) => {
    const at = `${where} tool_calls[${i}]`;
    if (!isObj(c) || (c.type !== undefined && c.type !== "function") || !isObj(c.function))
      fail(at, `a call must be {"type": "function", "function": {"name", "arguments"}}`);
    const f = c.function;
    return {
      id: c.id === undefined ? `call_${i}` : str(c, "id", at, 256),
      type: "function",
      function: { name: str(f, "name", at, 256), arguments: str(f, "arguments", at, LIMITS.contentChars) },
    };
  });
}

/** A list of chat messages (roles, text bounded), or a ProtocolError naming the first bad one. */
export function parseMessages(x: unknown, where: string): ChatMessage[] {
  if (!Array.isArray(x)) fail(where, `"messages" must be an array`);
  if (x.length > LIMITS.messages) fail(where, `more than ${LIMITS.messages} messages`);
  return x.map((m, i) => chatMessage(m, `${where} messages[${i}]`));
}

const SAMPLING_KEYS = [
  "temperature",
  "topK",
  "topP",
  "minP",
  "repetitionPenalty",
  "presencePenalty",
  "frequencyPenalty",
  "seed",
] as const;

function sampling(x: unknown, where: string): Partial<SamplingOptions> {
  if (x === undefined) return {};
  if (!isObj(x)) fail(where, `"sampling" must be an object`);
  onlyKeys(x, SAMPLING_KEYS, `${where} sampling`);
  const out: Partial<SamplingOptions> = {};
  for (const k of SAMPLING_KEYS) {
    const v = optional(x, k, () => num(x, k, `${where} sampling`, k === "topK" || k === "seed"));
    if (v !== undefined) out[k] = v;
  }
  return out;
}

/**
 * A sparsity update is a nested partial of SparsitySettings: check its shape here (known keys,
 * primitive types, bounded size); the Sparsifier's own validation then checks the values against
 * the model (k ranges, layer numbers, predictor ranks).
 */
const PREDICTOR_SHAPE: Obj = { kind: "string", groupSize: "number", rank: "number" };
const SPARSITY_SHAPE: Obj = {
  ffn: {
    method: "string",
    k: "number",
    oversample: "number",
    predictor: PREDICTOR_SHAPE,
    perLayerK: "layerMap",
    perLayerOversample: "layerMap",
    perLayerPredictor: "layerPredictors",
    cacheFraction: "number",
    cacheGamma: "number",
  },
  head: {
    method: "string",
    k: "number",
    oversample: "number",
    predictor: PREDICTOR_SHAPE,
  },
  shards: "number",
  auditEvery: "number",
};

function sparsityUpdate(x: unknown, shape: Obj, where: string): Obj {
  if (!isObj(x)) fail(where, "must be an object");
  const out: Obj = {};
  for (const [key, v] of Object.entries(x)) {
    const kind = shape[key];
    const at = `${where}.${key}`;
    if (kind === undefined) fail(where, `unknown setting "${key}"`);
    if (v === undefined || v === null) continue;
    if (isObj(kind)) out[key] = sparsityUpdate(v, kind, at);
    else if (kind === "layerMap" || kind === "layerPredictors") {
      if (!isObj(v)) fail(at, "must be an object keyed by layer number");
      const entries = Object.entries(v);
      if (entries.length > 4096) fail(at, "too many layers");
      const map: Record<number, unknown> = {};
      for (const [layer, value] of entries) {
        if (!/^\d{1,4}$/.test(layer)) fail(at, `"${layer}" is not a layer number`);
        if (kind === "layerPredictors") map[Number(layer)] = sparsityUpdate(value, PREDICTOR_SHAPE, `${at}.${layer}`);
        else if (typeof value !== "number" || !Number.isFinite(value))
          fail(at, `the value for layer ${layer} must be a finite number`);
        else map[Number(layer)] = value;
      }
      out[key] = map;
    } else if (typeof v !== kind || (kind === "number" && !Number.isFinite(v as number))) fail(at, `must be a ${kind}`);
    else if (kind === "string" && (v as string).length > 64) fail(at, "is too long");
    else out[key] = v;
  }
  return out;
}

function tokenMarks(x: unknown, where: string): TokenMark[] {
  if (!Array.isArray(x)) fail(where, "must be an array");
  if (x.length > LIMITS.tokenMarks) fail(where, `more than ${LIMITS.tokenMarks} tokens`);
  const nullableNum = (o: Obj, k: string, w: string) => (o[k] === null ? null : num(o, k, w));
  return x.map((t, i) => {
    const w = `${where}[${i}]`;
    if (!isObj(t)) fail(w, "must be an object");
    const mark: TokenMark = {
      text: str(t, "text", w, 1000),
      recall: nullableNum(t, "recall", w),
      headMass: nullableNum(t, "headMass", w),
      ms: num(t, "ms", w),
    };
    if (t.divergence !== undefined) mark.divergence = nullableNum(t, "divergence", w);
    return mark;
  });
}

const FINISH_REASONS: readonly FinishReason[] = ["eos", "stop", "length", "context_full", "aborted"];

function storedMessage(x: unknown, where: string): StoredMessage {
  const m: StoredMessage = chatMessage(x, where);
  const o = x as Obj;
  onlyKeys(o, ["role", "content", "tool_calls", "tool_call_id", "stats", "tokens", "lane"], where);
  if (o.lane !== undefined) m.lane = str(o, "lane", where, 16);
  if (o.tokens !== undefined) m.tokens = tokenMarks(o.tokens, `${where}.tokens`);
  if (o.stats !== undefined) {
    const s = o.stats;
    const w = `${where}.stats`;
    if (!isObj(s)) fail(w, "must be an object");
    const finishReason = s.finishReason as FinishReason;
    if (!FINISH_REASONS.includes(finishReason)) fail(w, `finishReason must be one of ${FINISH_REASONS.join(", ")}`);
    m.stats = {
      tokens: num(s, "tokens", w, true),
      ttftMs: num(s, "ttftMs", w),
      decodeTokensPerS: num(s, "decodeTokensPerS", w),
      finishReason,
      meanRecall: optional(s, "meanRecall", () => num(s, "meanRecall", w)),
    };
  }
  return m;
}

export function parseConversation(x: unknown, where = "conversation"): Conversation {
  if (!isObj(x)) fail(where, "must be an object");
  onlyKeys(x, ["id", "title", "createdAt", "updatedAt", "modelPath", "system", "messages"], where);
  if (!Array.isArray(x.messages)) fail(where, `"messages" must be an array`);
  if (x.messages.length > LIMITS.messages) fail(where, `more than ${LIMITS.messages} messages`);
  return {
    id: conversationId(x, "id", where),
    title: str(x, "title", where, LIMITS.titleChars),
    createdAt: num(x, "createdAt", where),
    updatedAt: num(x, "updatedAt", where),
    modelPath: x.modelPath === null ? null : str(x, "modelPath", where, LIMITS.pathChars),
    system: str(x, "system", where, LIMITS.contentChars),
    messages: x.messages.map((m, i) => storedMessage(m, `${where}.messages[${i}]`)),
  };
}

/** The answer to a message that is not a valid request: its id when it carries a usable one, else -1. */
export function rejection(raw: unknown, e: unknown): Reply {
  const id = isObj(raw) && Number.isSafeInteger(raw.id) ? (raw.id as number) : -1;
  return {
    type: "reply",
    id,
    ok: false,
    error: { code: "PROTOCOL", message: e instanceof Error ? e.message : String(e) },
  };
}

/** Accept a request from a UI, or throw ProtocolError naming the first thing wrong with it. */
export function parseRequest(x: unknown): Request {
  if (!isObj(x)) fail("request", "must be a JSON object");
  const id = num(x, "id", "request", true);
  if (id < 0 || id > Number.MAX_SAFE_INTEGER) fail("request", `"id" must be a non-negative integer`);
  const type = x.type;
  const where = `request ${id} (${String(type).slice(0, 40)})`;
  switch (type) {
    case "hello":
    case "models.cached":
    case "conversations.list":
      onlyKeys(x, ["id", "type"], where);
      return { id, type };
    case "model.inspect":
      onlyKeys(x, ["id", "type", "path", "contextLength", "kvCache", "weights"], where);
      return {
        id,
        type,
        path: str(x, "path", where, LIMITS.pathChars),
        contextLength: contextLengthField(x, where),
        kvCache: kvCacheField(x, where),
        weights: weightsField(x, where),
      };
    case "model.load": {
      onlyKeys(x, ["id", "type", "path", "contextLength", "kvCache", "weights"], where);
      const path = optional(x, "path", () => str(x, "path", where, LIMITS.pathChars));
      return {
        id,
        type,
        path,
        contextLength: contextLengthField(x, where),
        kvCache: kvCacheField(x, where),
        weights: weightsField(x, where),
      };
    }
    case "generate": {
      onlyKeys(
        x,
        [
          "id",
          "type",
          "messages",
          "sampling",
          "maxTokens",
          "sparsity",
          "thinking",
          "jsonSchema",
          "tools",
          "toolChoice",
        ],
        where,
      );
      const tools = optional(x, "tools", () => toolList(x.tools, (what) => fail(where, what)));
      const toolChoice = optional(x, "toolChoice", () => {
        if (x.toolChoice !== "auto" && x.toolChoice !== "required")
          fail(where, `"toolChoice" must be "auto" or "required"`);
        if (!tools || tools.length === 0) fail(where, `"toolChoice" needs "tools"`);
        return x.toolChoice as "auto" | "required";
      });
      const maxTokens = num(x, "maxTokens", where, true);
      if (maxTokens < 1 || maxTokens > LIMITS.maxTokens) fail(where, `"maxTokens" must be in 1..${LIMITS.maxTokens}`);
      const msgs = parseMessages(x.messages, where);
      if (msgs.length === 0) fail(where, `"messages" is empty`);
      return {
        id,
        type,
        messages: msgs,
        sampling: sampling(x.sampling, where),
        maxTokens,
        sparsity: optional(x, "sparsity", () => sparsityUpdate(x.sparsity, SPARSITY_SHAPE, `${where} sparsity`)),
        thinking: optional(x, "thinking", () => {
          if (typeof x.thinking !== "boolean") fail(where, `"thinking" must be true or false`);
          return x.thinking;
        }),
        // Its keywords are checked where it is compiled (the host); here only its kind and size.
        jsonSchema: optional(x, "jsonSchema", () => {
          const v = x.jsonSchema;
          if (typeof v !== "boolean" && (typeof v !== "object" || v === null || Array.isArray(v)))
            fail(where, `"jsonSchema" must be a JSON Schema (an object)`);
          if (JSON.stringify(v).length > LIMITS.contentChars)
            fail(where, `"jsonSchema" is longer than ${LIMITS.contentChars} characters`);
          return v;
        }),
        ...(tools && tools.length > 0 && { tools }),
        ...(toolChoice && { toolChoice }),
      };
    }
    case "stop":
      onlyKeys(x, ["id", "type", "target"], where);
      return { id, type, target: num(x, "target", where, true) };
    case "sparsity.update":
      onlyKeys(x, ["id", "type", "update"], where);
      return { id, type, update: sparsityUpdate(x.update, SPARSITY_SHAPE, `${where} update`) };
    case "eval": {
      onlyKeys(x, ["id", "type", "text", "ffnK"], where);
      const text = str(x, "text", where, LIMITS.contentChars);
      if (!Array.isArray(x.ffnK) || x.ffnK.length === 0 || x.ffnK.length > 16)
        fail(where, `"ffnK" must be a list of 1 to 16 values of k`);
      const ffnK = (x.ffnK as unknown[]).map((k) => {
        if (typeof k !== "number" || !(k > 0))
          fail(where, `"ffnK" values must be positive numbers (a fraction or a count)`);
        return k as number;
      });
      return { id, type, text, ffnK };
    }
    case "inspect.layer":
      onlyKeys(x, ["id", "type", "layer"], where);
      return { id, type, layer: num(x, "layer", where, true) };
    case "conversations.get":
    case "conversations.delete":
      onlyKeys(x, ["id", "type", "conversationId"], where);
      return { id, type, conversationId: conversationId(x, "conversationId", where) };
    case "conversations.save":
      onlyKeys(x, ["id", "type", "conversation"], where);
      return { id, type, conversation: parseConversation(x.conversation, `${where} conversation`) };
    default:
      fail("request", `unknown type ${JSON.stringify(String(type).slice(0, 40))}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Wire encoding for text transports (WebSocket): JSON with typed arrays as tagged base64, so
// telemetry keeps its types (and NaN) across the wire. Electron IPC uses structured clone instead.

const TYPED = { Int32Array, Float32Array, Uint8Array, Float64Array } as const;
type TypedName = keyof typeof TYPED;

function toBase64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromBase64(b64: string): Uint8Array<ArrayBuffer> {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

export function encodeWire(msg: unknown): string {
  return JSON.stringify(msg, (_key, v: unknown) => {
    if (ArrayBuffer.isView(v) && !(v instanceof DataView)) {
      const name = v.constructor.name;
      if (name in TYPED) return { $typed: name, b64: toBase64(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)) };
    }
    return v;
  });
}

/** Parse a wire message; tagged typed arrays come back as typed arrays. */
export function decodeWire(text: string): unknown {
  return JSON.parse(text, (_key, v: unknown) => {
    if (isObj(v) && typeof v.$typed === "string" && typeof v.b64 === "string" && v.$typed in TYPED) {
      const bytes = fromBase64(v.b64);
      const Ctor = TYPED[v.$typed as TypedName];
      if (bytes.byteLength % Ctor.BYTES_PER_ELEMENT !== 0) throw new ProtocolError(`bad ${v.$typed} payload`);
      return new Ctor(bytes.buffer, 0, bytes.byteLength / Ctor.BYTES_PER_ELEMENT);
    }
    return v;
  });
}
