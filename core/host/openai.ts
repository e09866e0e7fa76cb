// The OpenAI-compatible endpoints of `hire serve`: POST /v1/chat/completions and /v1/completions,
// streaming (server-sent events) or not, and GET /v1/models. Each chunk carries what HiRE did for that token
// in an extra `hire` field, so any OpenAI client works unchanged and a curious one can see the
// sparsity. Requests are validated here before they reach the engine.
import type { IncomingMessage, ServerResponse } from "node:http";
import { modelName } from "../loader/hf-cache.js";
import type { FinishReason } from "../engine/session.js";
import type { ChatMessage } from "../loader/tokenizer.js";
import type { LoadedModel } from "../loader/model-folder.js";
import { errorInfo, type Channel, type EngineHost, type GenerateParams, type TextInput } from "./engine-host.js";
import { LIMITS, ProtocolError, parseMessages, toolList, type HostEvent, type StepTelemetry } from "./protocol.js";
import { ToolCallStream, functionNames, parseToolCalls, withCallIds } from "./tool-calls.js";
import { UsageError } from "../loader/errors.js";
import { ANY_OBJECT, choice, wholeRegex, type Node as Grammar } from "../structured/schema.js";
import { compileGbnf } from "../structured/gbnf.js";
import { cachedGrammar, cachedSchema } from "../structured/grammar-cache.js";

const MAX_BODY = 16 * 1024 * 1024;

let nextId = 1;

/** What a chunk says about one token's sparsity. */
export interface HireChunkStats {
  ffn_method: string;
  head_method: string;
  /** Neurons used per layer. */
  selected: number[];
  /** Mean recall@k over the audited layers of this token, or null when not audited. */
  recall: number | null;
  bytes: number;
  dense_bytes: number;
  ms: number;
}

export function chunkStats(step: StepTelemetry): HireChunkStats {
  const selected: number[] = [];
  for (let l = 0; l + 1 < step.selectedOffsets.length; l++) {
    const n = step.selectedOffsets[l + 1] - step.selectedOffsets[l];
    selected.push(n > 0 ? n : step.k[l]);
  }
  let sum = 0;
  let n = 0;
  for (const r of step.recall)
    if (!Number.isNaN(r)) {
      sum += r;
      n++;
    }
  return {
    ffn_method: step.ffnMethod,
    head_method: step.headMethod,
    selected,
    recall: n > 0 ? sum / n : null,
    bytes: step.bytes,
    dense_bytes: step.denseBytes,
    ms: step.ms,
  };
}

export function handleModels(host: EngineHost, req: IncomingMessage, res: ServerResponse): void {
  if (req.method !== "GET") return sendError(res, 405, "invalid_request_error", "use GET");
  const m = host.loadedModel;
  sendJson(res, 200, {
    object: "list",
    data: m ? [{ id: modelName(m.dir), object: "model", created: 0, owned_by: "local" }] : [],
  });
}

/**
 * GET /health, as llama.cpp's server answers it (scripts wait on it after starting the server): 200
 * {"status": "ok"} once a model is loaded and ready, 503 while one loads or when none is.
 */
export function handleHealth(host: EngineHost, req: IncomingMessage, res: ServerResponse): void {
  if (req.method !== "GET") return sendError(res, 405, "invalid_request_error", "use GET");
  if (host.loadingModel) return sendJson(res, 503, { status: "loading model" });
  if (!host.loadedModel) return sendJson(res, 503, { status: "no model loaded" });
  sendJson(res, 200, { status: "ok" });
}

/** Host error codes that mean the request (not the engine) was at fault. */
const CLIENT_ERRORS = new Set(["USAGE", "CHAT_TEMPLATE", "CONTEXT_FULL"]);
/** OpenAI's `code` for host error codes that have one (clients match on it). */
const OPENAI_CODES: Record<string, string> = { CONTEXT_FULL: "context_length_exceeded" };

/** POST /v1/chat/completions: the messages through the model's chat template. */
export function handleChatCompletions(host: EngineHost, req: IncomingMessage, res: ServerResponse): Promise<void> {
  return handleCompletions(CHAT, host, req, res);
}

/** POST /v1/completions (OpenAI's legacy text completion): the prompt as it is, no chat template. */
export function handleTextCompletions(host: EngineHost, req: IncomingMessage, res: ServerResponse): Promise<void> {
  return handleCompletions(TEXT, host, req, res);
}

/** A generated token's log-probabilities, its alternatives' included, as token text. */
export interface TokenLogprobs {
  token: string;
  logprob: number;
  top: { token: string; logprob: number }[];
  /** Where the token's text starts in the completion (the legacy form's text_offset). */
  offset: number;
}

/** What sets the two endpoints apart: the request's input and the shapes of the answer. */
interface Endpoint {
  idPrefix: string;
  parse(x: unknown): ParsedBody;
  /** The first streamed chunk's choice, before any token (chat names the role there), or none. */
  openingChoice: object | null;
  /** A streamed chunk's choice for a token's text (lp: its log-probabilities, when asked for). */
  chunkChoice(text: string, lp?: TokenLogprobs[]): object;
  /** The last streamed chunk's choice, beside its finish_reason. */
  closingChoice: object;
  chunkObject: string;
  /** The non-streamed answer's choice. */
  choice(text: string, lp?: TokenLogprobs[]): object;
  object: string;
}

const utf8 = (t: string) => [...Buffer.from(t, "utf8")];

/** OpenAI's chat form: { content: [{ token, logprob, bytes, top_logprobs: [...] }] }. */
const chatLogprobs = (lp: TokenLogprobs[]) => ({
  content: lp.map((t) => ({
    token: t.token,
    logprob: t.logprob,
    bytes: utf8(t.token),
    top_logprobs: t.top.map((a) => ({ token: a.token, logprob: a.logprob, bytes: utf8(a.token) })),
  })),
});

/** OpenAI's legacy completion form: parallel lists, the alternatives as { token: logprob } maps. */
const textLogprobs = (lp: TokenLogprobs[]) => ({
  tokens: lp.map((t) => t.token),
  token_logprobs: lp.map((t) => t.logprob),
  top_logprobs: lp.map((t) => Object.fromEntries(t.top.map((a) => [a.token, a.logprob]))),
  text_offset: lp.map((t) => t.offset),
});

const CHAT: Endpoint = {
  idPrefix: "chatcmpl-hire",
  parse: parseBody,
  openingChoice: { delta: { role: "assistant", content: "" } },
  chunkChoice: (text, lp) => ({ delta: { content: text }, ...(lp && { logprobs: chatLogprobs(lp) }) }),
  closingChoice: { delta: {} },
  chunkObject: "chat.completion.chunk",
  choice: (text, lp) => ({ message: { role: "assistant", content: text }, ...(lp && { logprobs: chatLogprobs(lp) }) }),
  object: "chat.completion",
};

const TEXT: Endpoint = {
  idPrefix: "cmpl-hire",
  parse: parseTextBody,
  openingChoice: null,
  chunkChoice: (text, lp) => ({ text, logprobs: lp ? textLogprobs(lp) : null }),
  closingChoice: { text: "", logprobs: null },
  chunkObject: "text_completion",
  choice: (text, lp) => ({ text, logprobs: lp ? textLogprobs(lp) : null }),
  object: "text_completion",
};

/** Requests that may wait for the engine at once; past that a request is a 429. */
export const MAX_WAITING = 32;
let waiting = 0;

/**
 * Waits while the engine runs another reply (an app chat or an earlier request), as llama.cpp's
 * server queues its tasks, so that clients sending requests side by side get their answers in turn
 * rather than errors. False when the client left meanwhile, or when MAX_WAITING requests already wait
 * (then it has answered 429).
 */
async function turnFor(host: EngineHost, res: ServerResponse): Promise<boolean> {
  if (!host.busy) return true;
  if (waiting >= MAX_WAITING) {
    sendError(res, 429, "busy", `the engine is busy and ${MAX_WAITING} requests already wait for it; retry later`);
    return false;
  }
  let gone = false;
  const left = new Promise<void>((resolve) => res.once("close", () => resolve(void (gone = true))));
  waiting++;
  try {
    while (host.busy && !gone) await Promise.race([host.whenIdle(), left]);
  } finally {
    waiting--;
  }
  return !gone;
}

async function handleCompletions(
  ep: Endpoint,
  host: EngineHost,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  if (req.method !== "POST") return sendError(res, 405, "invalid_request_error", "use POST");
  let body: ParsedBody;
  try {
    body = ep.parse(JSON.parse(await readBody(req)));
  } catch (e) {
    if (e instanceof BodyTooLarge) {
      // Answer before the rest arrives, then close: the client gets the reason, not a reset.
      res.on("finish", () => req.destroy());
      res.setHeader("connection", "close");
      return sendError(res, 413, "invalid_request_error", e.message);
    }
    return sendError(res, 400, "invalid_request_error", (e as Error).message);
  }
  // The endpoint is a client of the host like any other: its channel receives nothing but the
  // generation events it iterates, and closing the connection stops the generation.
  const channel: Channel = () => {};
  let model: LoadedModel;
  let gen: ReturnType<EngineHost["generate"]>;
  for (;;) {
    if (!(await turnFor(host, res))) return;
    const loaded = host.loadedModel;
    if (!loaded) return sendError(res, 503, "no_model", "no model is loaded");
    for (const t of body.params.logitBias?.keys() ?? [])
      if (t >= loaded.config.vocab)
        return sendError(
          res,
          400,
          "invalid_request_error",
          `"logit_bias": token ${t} is outside the vocabulary (0..${loaded.config.vocab - 1})`,
        );
    try {
      gen = host.generate(body.input, body.params, channel, nextId);
      model = loaded;
      break;
    } catch (e) {
      const info = errorInfo(e);
      if (info.code === "BUSY") continue; // another waiter took the turn first: wait for the next
      return sendError(res, 400, info.code.toLowerCase(), info.message, OPENAI_CODES[info.code]);
    }
  }
  // The host holds a reply with tools to the model's call form (its chat template's).
  const tools = body.params.tools !== undefined;
  const id = `${ep.idPrefix}-${nextId++}`;
  const created = Math.floor(Date.now() / 1000);
  const name = modelName(model.dir);
  res.on("close", () => {
    if (!res.writableFinished) host.disconnect(channel);
  });
  const stats: HireChunkStats[] = [];
  // A token's text for its log-probabilities: the token decoded on its own, special tokens kept.
  const tokenText = (t: number) => model.tokenizer.decode([t], false);
  let offset = 0; // characters of token text so far, streamed or not
  const logprobsOf = (e: HostEvent): TokenLogprobs | undefined => {
    if (e.type !== "gen.token" || e.logprob === undefined) return undefined;
    const token = tokenText(e.tokenId);
    const top = (e.topLogprobs ?? []).map(([t, logprob]) => ({ token: tokenText(t), logprob }));
    offset += token.length;
    return { token, logprob: e.logprob, top, offset: offset - token.length };
  };
  const logprobs: TokenLogprobs[] = [];
  try {
    if (body.stream) {
      res.writeHead(200, {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        connection: "keep-alive",
      });
      const send = (x: unknown) => res.write(`data: ${JSON.stringify(x)}\n\n`);
      const chunk = (choice: object, finish: string | null, hire?: HireChunkStats) => ({
        id,
        object: ep.chunkObject,
        created,
        model: name,
        choices: [{ index: 0, ...choice, finish_reason: finish }],
        ...(hire ? { hire } : {}),
      });
      if (ep.openingChoice) send(chunk(ep.openingChoice, null));
      // With tools, a call's text is held back: it goes out as tool_calls at the end (or as text if it
      // holds no valid call).
      const calls = tools ? new ToolCallStream(functionNames(body.params.tools!)) : undefined;
      for await (const e of gen) {
        if (e.type !== "gen.token") continue;
        const s = chunkStats(e.step);
        stats.push(s);
        const lp = logprobsOf(e);
        send(chunk(ep.chunkChoice(calls ? calls.push(e.text) : e.text, lp && [lp]), null, s));
      }
      let finish = finishReason(gen.summary.finishReason);
      const end = calls?.finish();
      if (end && end.calls.length > 0) {
        send(chunk({ delta: { tool_calls: withCallIds(id, end.calls).map((c, index) => ({ index, ...c })) } }, null));
        finish = "tool_calls";
      } else if (end?.heldText) send(chunk(ep.chunkChoice(end.heldText), null));
      send({ ...chunk(ep.closingChoice, finish), usage: usage(gen.summary) });
      res.end("data: [DONE]\n\n");
      return;
    }
    for await (const e of gen) {
      if (e.type !== "gen.token") continue;
      stats.push(chunkStats(e.step));
      const lp = logprobsOf(e);
      if (lp) logprobs.push(lp);
    }
    const s = gen.summary;
    const lps = body.params.logprobs !== undefined ? logprobs : undefined;
    const choice = tools
      ? toolReply(id, s.text, finishReason(s.finishReason), lps, functionNames(body.params.tools!))
      : { ...ep.choice(s.text, lps), finish_reason: finishReason(s.finishReason) };
    sendJson(res, 200, {
      id,
      object: ep.object,
      created,
      model: name,
      choices: [{ index: 0, ...choice }],
      usage: usage(s),
      hire: { tokens: stats, decode_tokens_per_s: s.decodeTokensPerS, ttft_ms: s.ttftMs },
    });
  } catch (e) {
    const info = errorInfo(e);
    if (res.headersSent) {
      res.end(`data: ${JSON.stringify({ error: { message: info.message, type: info.code.toLowerCase() } })}\n\n`);
    } else
      sendError(
        res,
        CLIENT_ERRORS.has(info.code) ? 400 : 500,
        info.code.toLowerCase(),
        info.message,
        OPENAI_CODES[info.code],
      );
  }
}

interface ParsedBody {
  /** The conversation (chat), or the prompt text (a text completion). */
  input: ChatMessage[] | TextInput;
  stream: boolean;
  params: GenerateParams;
}

const bad = (msg: string): never => {
  throw new ProtocolError(msg);
};

function bodyObject(x: unknown): Record<string, unknown> {
  if (typeof x !== "object" || x === null || Array.isArray(x)) bad("the body must be a JSON object");
  return x as Record<string, unknown>;
}

/** The subset of OpenAI's chat request this engine honours; anything malformed is a 400 naming the field. */
export function parseBody(x: unknown): ParsedBody & { input: ChatMessage[] } {
  const o = bodyObject(x);
  const messages = parseMessages(Array.isArray(o.messages) ? o.messages.map(openAiMessage) : o.messages, "body");
  if (messages.length === 0) bad(`"messages" must be a non-empty array`);
  // One reply per request: several choices (OpenAI's n) would be as many replies decoded in turn.
  if (o.n !== undefined && o.n !== null && o.n !== 1) bad(`"n" is not supported (one choice per request)`);
  // vLLM's and SGLang's way to switch a reasoning model's thinking off: chat_template_kwargs.
  let thinking: boolean | undefined;
  const kwargs = o.chat_template_kwargs;
  if (kwargs !== undefined && kwargs !== null) {
    if (typeof kwargs !== "object" || Array.isArray(kwargs)) bad(`"chat_template_kwargs" must be an object`);
    const v = (kwargs as Record<string, unknown>).enable_thinking;
    if (v !== undefined && typeof v !== "boolean") bad(`"chat_template_kwargs.enable_thinking" must be a boolean`);
    thinking = v as boolean | undefined;
  }
  // logprobs: true (with top_logprobs alternatives, 0..20) reports each token's log-probability.
  if (o.logprobs !== undefined && o.logprobs !== null && typeof o.logprobs !== "boolean")
    bad(`"logprobs" must be a boolean`);
  const top = o.top_logprobs ?? 0;
  if (!(Number.isInteger(top) && (top as number) >= 0 && (top as number) <= 20))
    bad(`"top_logprobs" must be an integer in 0..20`);
  if ((top as number) > 0 && o.logprobs !== true) bad(`"top_logprobs" needs "logprobs": true`);
  const logprobs = o.logprobs === true ? (top as number) : undefined;
  const { tools, forced } = parseTools(o.tools, o.tool_choice);
  const format = parseResponseFormat(o.response_format);
  const { stream, params } = commonFields(o, 256);
  if (format && params.grammar) bad(`"response_format" and a guided reply cannot both decide the reply`);
  const grammar = format ?? params.grammar;
  if (grammar && forced)
    bad(`"response_format" (or a guided reply) and a forced "tool_choice" cannot both decide the reply`);
  return {
    input: messages,
    stream,
    params: {
      ...params,
      ...(thinking !== undefined && { thinking }),
      ...(logprobs !== undefined && { logprobs }),
      ...(tools && { tools }),
      ...(grammar && { grammar }),
      ...(forced && { forcedTool: forced }),
    },
  };
}

/**
 * OpenAI's `response_format` as a grammar: {type: "json_object"} any JSON object, {type: "json_schema",
 * json_schema: {name, schema}} a document of that schema (core/structured/schema.ts says which
 * keywords hold; one it cannot enforce is a 400), {type: "text"} or none: free text.
 */
function parseResponseFormat(x: unknown): Grammar | undefined {
  if (x === undefined || x === null) return undefined;
  const f = x as Record<string, unknown>;
  if (typeof x !== "object" || Array.isArray(x)) bad(`"response_format" must be an object`);
  if (f.type === "text") return undefined;
  if (f.type === "json_object") return ANY_OBJECT;
  if (f.type !== "json_schema") bad(`"response_format.type" must be "text", "json_object" or "json_schema"`);
  const js = f.json_schema as Record<string, unknown> | undefined;
  if (typeof js !== "object" || js === null || Array.isArray(js) || typeof js.name !== "string")
    bad(`"response_format.json_schema" must be an object with a "name"`);
  if (JSON.stringify(js).length > LIMITS.contentChars)
    bad(`"response_format.json_schema" is longer than ${LIMITS.contentChars} characters`);
  try {
    const schema: unknown = js!.schema ?? {};
    return cachedSchema(schema);
  } catch (e) {
    if (e instanceof UsageError) bad(`"response_format.json_schema.schema": ${e.message}`);
    throw e;
  }
}

/**
 * OpenAI's `tools` ([{type: "function", function: {name, description?, parameters?}}]) as the chat
 * template gets them (none without tools or with tool_choice "none"), and the call tool_choice
 * forces: "required" (true: one of the tools) or {type: "function", function: {name}} (that one).
 * With "auto" the model decides.
 */
function parseTools(tools: unknown, choice: unknown): { tools?: unknown[]; forced?: string | true } {
  const named = (choice as { type?: unknown; function?: { name?: unknown } } | null)?.function?.name;
  const forced =
    choice === "required"
      ? true
      : typeof choice === "object" && choice !== null && (choice as { type?: unknown }).type === "function"
        ? named
        : undefined;
  if (choice !== undefined && choice !== null && choice !== "auto" && choice !== "none" && forced === undefined)
    bad(`"tool_choice" must be "auto", "none", "required" or {"type": "function", "function": {"name": ...}}`);
  if (forced !== undefined && forced !== true && typeof forced !== "string")
    bad(`"tool_choice.function.name" must be a string`);
  if (tools === undefined || tools === null) {
    if (forced !== undefined) bad(`"tool_choice" forces a call, but there are no "tools"`);
    return {};
  }
  const list = toolList(tools, bad);
  if (typeof forced === "string" && !list.some((t) => (t as { function: { name: string } }).function.name === forced))
    bad(`"tool_choice" names ${JSON.stringify(forced)}, which is not one of the "tools"`);
  if (forced !== undefined && list.length === 0) bad(`"tool_choice" forces a call, but "tools" is empty`);
  return choice === "none" || list.length === 0 ? {} : { tools: list, forced: forced as string | true | undefined };
}

/**
 * A text completion's request: `prompt` a string or a list of token ids (or a list holding one of
 * those, as OpenAI allows; several prompts in one request are not served). Token ids go to the model
 * as they are (no BOS added); the host checks them against the vocabulary. max_tokens defaults to 16,
 * as in OpenAI's API.
 */
export function parseTextBody(x: unknown): ParsedBody & { input: TextInput } {
  const o = bodyObject(x);
  let prompt = o.prompt;
  const isIds = (p: unknown): p is number[] =>
    Array.isArray(p) && p.length > 0 && p.every((t) => Number.isSafeInteger(t) && t >= 0);
  if (Array.isArray(prompt) && prompt.length === 1 && (typeof prompt[0] === "string" || isIds(prompt[0])))
    prompt = prompt[0];
  if (typeof prompt !== "string" && !isIds(prompt))
    bad(`"prompt" must be a string or a list of token ids (one prompt per request)`);
  const length = (prompt as string | number[]).length;
  if (length > LIMITS.contentChars)
    bad(`"prompt" is longer than ${LIMITS.contentChars} ${typeof prompt === "string" ? "characters" : "tokens"}`);
  for (const key of ["suffix", "echo", "best_of", "n"] as const) {
    const v = o[key];
    if (v !== undefined && v !== null && v !== false && v !== 1) bad(`"${key}" is not supported`);
  }
  // logprobs: N (0..5) reports each token's log-probability and its N most likely alternatives'.
  const lp = o.logprobs;
  if (lp !== undefined && lp !== null && !(Number.isInteger(lp) && (lp as number) >= 0 && (lp as number) <= 5))
    bad(`"logprobs" must be an integer in 0..5`);
  const { stream, params } = commonFields(o, 16);
  return {
    input: typeof prompt === "string" ? { text: prompt } : { ids: prompt as number[] },
    stream,
    params: { ...params, ...(typeof lp === "number" && { logprobs: lp }) },
  };
}

/** max_tokens, stream, stop and the sampling fields both endpoints take. */
function commonFields(o: Record<string, unknown>, defaultMaxTokens: number): Omit<ParsedBody, "input"> {
  const optNum = (key: string, integer = false): number | undefined => {
    const v = o[key];
    if (v === undefined || v === null) return undefined;
    if (typeof v !== "number" || !Number.isFinite(v) || (integer && !Number.isInteger(v)))
      bad(`"${key}" must be a${integer ? "n integer" : " number"}`);
    return v as number;
  };
  const penalty = (key: string): number | undefined => {
    const v = optNum(key);
    if (v !== undefined && !(v >= -2 && v <= 2)) bad(`"${key}" must be in -2..2`);
    return v;
  };
  const maxTokens = optNum("max_completion_tokens", true) ?? optNum("max_tokens", true) ?? defaultMaxTokens;
  if (maxTokens < 1 || maxTokens > LIMITS.maxTokens) bad(`"max_tokens" must be in 1..${LIMITS.maxTokens}`);
  if (o.stream !== undefined && typeof o.stream !== "boolean") bad(`"stream" must be a boolean`);
  let stop: string[] | undefined;
  if (typeof o.stop === "string") stop = [o.stop];
  else if (Array.isArray(o.stop) && o.stop.every((s) => typeof s === "string")) stop = o.stop as string[];
  else if (o.stop !== undefined && o.stop !== null) bad(`"stop" must be a string or an array of strings`);
  const sampling = Object.fromEntries(
    Object.entries({
      temperature: optNum("temperature"),
      topP: optNum("top_p"),
      topK: optNum("top_k", true),
      minP: optNum("min_p"),
      repetitionPenalty: optNum("repetition_penalty"),
      presencePenalty: penalty("presence_penalty"),
      frequencyPenalty: penalty("frequency_penalty"),
      seed: optNum("seed", true),
    }).filter(([, v]) => v !== undefined),
  );
  const logitBias = parseLogitBias(o.logit_bias);
  const grammar = parseGuided(o);
  return {
    stream: o.stream === true,
    params: { sampling, maxTokens, stop, ...(logitBias && { logitBias }), ...(grammar && { grammar }) },
  };
}

/**
 * vLLM's guided replies, in its older top-level form (guided_json, guided_regex, guided_choice,
 * guided_grammar) or its newer `structured_outputs` ({json, regex, choice, grammar}), and llama.cpp's
 * `grammar`: a JSON schema's document, raw text that matches a regex from start to end, exactly one
 * of some strings, or a derivation of a GBNF grammar's root. At most one per request.
 */
function parseGuided(o: Record<string, unknown>): Grammar | undefined {
  const so = o.structured_outputs;
  if (so !== undefined && so !== null && (typeof so !== "object" || Array.isArray(so)))
    bad(`"structured_outputs" must be an object`);
  const s = (so ?? {}) as Record<string, unknown>;
  const given = (
    [
      ["guided_json", o.guided_json],
      ["guided_regex", o.guided_regex],
      ["guided_choice", o.guided_choice],
      ["guided_grammar", o.guided_grammar],
      ["grammar", o.grammar],
      ["structured_outputs.json", s.json],
      ["structured_outputs.regex", s.regex],
      ["structured_outputs.choice", s.choice],
      ["structured_outputs.grammar", s.grammar],
    ] as const
  ).filter(([, v]) => v !== undefined && v !== null);
  if (given.length === 0) return undefined;
  if (given.length > 1) bad(`only one guided reply per request (${given.map(([k]) => `"${k}"`).join(", ")} given)`);
  const [key, v] = given[0];
  if (JSON.stringify(v).length > LIMITS.contentChars) bad(`"${key}" is longer than ${LIMITS.contentChars} characters`);
  try {
    if (key.endsWith("json")) {
      const schema: unknown = typeof v === "string" ? JSON.parse(v) : v;
      return cachedSchema(schema);
    }
    if (key.endsWith("grammar")) {
      if (typeof v !== "string") bad(`"${key}" must be a string (a GBNF grammar)`);
      return cachedGrammar(`gbnf:${v}`, () => compileGbnf(v as string));
    }
    if (key.endsWith("regex")) {
      if (typeof v !== "string") bad(`"${key}" must be a string (a regular expression)`);
      return cachedGrammar(`regex:${v}`, () => wholeRegex(v as string));
    }
    if (!Array.isArray(v) || v.length === 0 || v.length > 256 || !v.every((c) => typeof c === "string" && c !== ""))
      bad(`"${key}" must be a list of 1 to 256 non-empty strings`);
    return choice(v as string[]);
  } catch (e) {
    if (e instanceof UsageError || e instanceof SyntaxError) bad(`"${key}": ${e.message}`);
    throw e;
  }
}

/** OpenAI's logit_bias: {"token id": bias in -100..100}. The ids are checked against the model's vocabulary later. */
function parseLogitBias(x: unknown): Map<number, number> | undefined {
  if (x === undefined || x === null) return undefined;
  if (typeof x !== "object" || Array.isArray(x)) bad(`"logit_bias" must be an object of token ids and biases`);
  const bias = new Map<number, number>();
  for (const [key, v] of Object.entries(x as Record<string, unknown>)) {
    if (!/^(0|[1-9][0-9]{0,9})$/.test(key)) bad(`"logit_bias": ${JSON.stringify(key)} is not a token id`);
    if (typeof v !== "number" || !(v >= -100 && v <= 100))
      bad(`"logit_bias"[${JSON.stringify(key)}] must be a number in -100..100`);
    bias.set(Number(key), v as number);
  }
  return bias.size > 0 ? bias : undefined;
}

/**
 * OpenAI's message forms that clients send, as the protocol's: content as a list of text parts
 * (joined with newlines, as vLLM does), and the "developer" role (OpenAI's newer name for system).
 * Anything else passes through for parseMessages to check.
 */
function openAiMessage(m: unknown, i: number): unknown {
  if (typeof m !== "object" || m === null || Array.isArray(m)) return m;
  const msg = m as Record<string, unknown>;
  let content = msg.content;
  if (Array.isArray(content)) {
    const texts = content.map((part: unknown) => {
      const p = part as Record<string, unknown> | null;
      if (typeof p !== "object" || p === null || p.type !== "text" || typeof p.text !== "string") {
        throw new ProtocolError(
          `body messages[${i}]: only text content parts ({"type": "text", "text": ...}) are supported`,
        );
      }
      return p.text;
    });
    content = texts.join("\n");
  }
  return { ...msg, role: msg.role === "developer" ? "system" : msg.role, content };
}

/**
 * A chat reply to a request with tools: the calls it made as message.tool_calls (finish_reason
 * "tool_calls", content the text outside them or null), else the text as it is.
 */
export function toolReply(
  id: string,
  text: string,
  finish: string,
  lps?: TokenLogprobs[],
  functions?: ReadonlySet<string>,
) {
  const { content, calls } = parseToolCalls(text, functions);
  const message =
    calls.length > 0
      ? { role: "assistant", content: content || null, tool_calls: withCallIds(id, calls) }
      : { role: "assistant", content: text };
  return {
    message,
    ...(lps && { logprobs: chatLogprobs(lps) }),
    finish_reason: calls.length > 0 ? "tool_calls" : finish,
  };
}

function finishReason(r: FinishReason): string {
  return r === "length" || r === "context_full" ? "length" : "stop";
}

function usage(s: { promptTokens: number; tokens: number }) {
  return { prompt_tokens: s.promptTokens, completion_tokens: s.tokens, total_tokens: s.promptTokens + s.tokens };
}

/** A request body past MAX_BODY: answered 413, and the connection closed (the rest is not read). */
class BodyTooLarge extends Error {}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) return void chunks.push(c);
      req.off("data", onData);
      req.pause();
      reject(new BodyTooLarge(`the body is larger than ${MAX_BODY} bytes`));
    };
    req.on("data", onData);
    req.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    req.on("error", reject);
  });
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

function sendError(res: ServerResponse, status: number, type: string, message: string, code?: string): void {
  sendJson(res, status, { error: { message, type, code: code ?? null } });
}
