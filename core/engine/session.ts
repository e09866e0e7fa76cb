// A conversation with a loaded model: the KV cache, the ids it holds, and `generate()`, which
// streams tokens as an async iterator. gpt-fast's shape: prefill (batched, chunked) → decode one
// token at a time → stop on EOS / stop string / max tokens / full context / abort.
//
// The cache is reused across calls: a new prompt that starts with what the cache already holds
// (the next turn of a chat) only prefills the new part.
import { setImmediate as nextTurn } from "node:timers/promises";
import type { Backend, KvDtype } from "../backend/backend.js";
import { backendForModel } from "../backend/select.js";
import { ContextOverflowError, ModelError, UsageError } from "../loader/errors.js";
import type { LoadedModel } from "../loader/model-folder.js";
import { GREEDY, logSumExp, Sampler, topLogprobs, type SamplingOptions } from "./sampler.js";
import { ForwardAborted, KVCache, Transformer, type ForwardReport } from "./transformer.js";
import { Sparsifier } from "../sparse/sparsifier.js";
import { GrammarConstraint, TokenVocabulary, TriggeredGrammar } from "../structured/constraint.js";
import type { Node as Grammar } from "../structured/schema.js";
import { quantFormatOf } from "../loader/weight-format.js";

export interface SessionOptions {
  /** Context window in tokens (default: the model's, capped at 4096 to bound KV-cache memory). */
  contextLength?: number;
  backend?: Backend;
  /** KV-cache element type (default "f32"; "f16" halves its memory and what attention reads). */
  kvCache?: KvDtype;
}

export type FinishReason = "eos" | "stop" | "length" | "context_full" | "aborted";

export interface GenerateOptions extends Partial<SamplingOptions> {
  /** Most tokens to generate (default 256). */
  maxTokens?: number;
  /** Generation ends before any of these strings; they are not part of the text. */
  stop?: readonly string[];
  signal?: AbortSignal;
  /**
   * Report each chosen token's log-probability and the n most likely tokens' (of the raw model
   * output) at each step; 0: the chosen token's alone. Absent: none.
   */
  logprobs?: number;
  /** At a full context: "stop" ends with finishReason "context_full"; "error" throws ContextOverflowError. */
  onContextFull?: "stop" | "error";
  /** Keep generating past end-of-sequence tokens (benchmarks, reference comparisons). */
  ignoreEos?: boolean;
  /** Encode a text prompt with the tokenizer's special tokens (BOS); default: what the tokenizer config says. */
  addSpecialTokens?: boolean;
  /**
   * Structured output: every token keeps the reply a prefix of a document this grammar accepts
   * (core/structured: compileSchema(jsonSchema), ANY_OBJECT), and generation ends with finishReason
   * "stop" once the document is complete (or "eos" where the model ends it first, "length" where
   * maxTokens cuts it).
   */
  grammar?: Grammar;
  /**
   * A grammar that holds only after the reply writes `trigger`, until its document is complete, and
   * again after each later trigger, or from the reply's start where it opens with `opening` (the
   * document's own first bytes) (core/structured/constraint.ts: TriggeredGrammar): free text with
   * well-formed tool calls. Ignored beside `grammar`.
   */
  lazyGrammar?: LazyGrammar;
  /**
   * Added to these tokens' logits before sampling (OpenAI's logit_bias; -100 all but bans a token).
   * A token HiRE's output layer left out that a bias raises gets its exact logit computed first.
   */
  logitBias?: ReadonlyMap<number, number>;
}

/** See GenerateOptions.lazyGrammar. */
export interface LazyGrammar {
  trigger?: string;
  opening?: string;
  grammar: Grammar;
}

export type GenerationEvent =
  | { type: "prefill"; promptTokens: number; reusedTokens: number; ms: number }
  | {
      type: "token";
      id: number;
      /** New text this token completes (may be "" while a UTF-8 sequence or a possible stop string is pending). */
      text: string;
      topLogprobs?: [number, number][];
      /** The chosen token's log-probability under the raw model output (when logprobs is set). */
      logprob?: number;
      /** Per-layer timings of the forward pass that produced this token's logits. */
      report: ForwardReport;
    }
  | {
      type: "done";
      finishReason: FinishReason;
      promptIds: number[];
      ids: number[];
      text: string;
      prefillMs: number;
      decodeMs: number;
      decodeTokensPerS: number;
    };

/** KV-cache positions a session gets when no context length is asked for (capped by the model's). */
export const DEFAULT_CONTEXT = 4096;

export class Session {
  readonly transformer: Transformer;
  /** Sparse methods per module (HiRE, DIP, …): `sparsity.update(...)` applies from the next token. */
  readonly sparsity: Sparsifier;
  readonly contextLength: number;
  /** The KV cache's element type. */
  readonly kvCache: KvDtype;
  private readonly cache: KVCache;
  /** Token ids whose keys and values are in the cache, in order. */
  private cached: number[] = [];
  private busy = false;

  constructor(
    readonly model: LoadedModel,
    options: SessionOptions = {},
  ) {
    const c = model.config;
    const ctx = options.contextLength ?? Math.min(c.maxPositions, DEFAULT_CONTEXT);
    if (!Number.isInteger(ctx) || ctx < 1)
      throw new UsageError(`context length must be a positive integer, got ${ctx}`);
    if (ctx > c.maxPositions)
      throw new UsageError(`context length ${ctx} exceeds the model's ${c.maxPositions} positions`);
    this.contextLength = ctx;
    const backend = options.backend ?? backendForModel(model);
    const format = quantFormatOf(model.weights.head.w.dtype);
    if (format && !backend.quantizedWeights)
      throw new UsageError(
        `the ${backend.name} backend cannot run ${format} weights; load the model with its file's weights`,
      );
    this.transformer = new Transformer(backend, c, model.weights);
    this.kvCache = options.kvCache ?? "f32";
    this.cache = new KVCache(backend, c, ctx, this.kvCache);
    this.sparsity = new Sparsifier(this.transformer);
  }

  /** Number of positions in use (ids whose keys and values are cached). */
  get position(): number {
    return this.cached.length;
  }

  reset(): void {
    this.cached = [];
  }

  /** Encode a plain text prompt as `generate` would. */
  encode(prompt: string, addSpecialTokens?: boolean): number[] {
    return this.model.tokenizer.encode(prompt, addSpecialTokens);
  }

  /**
   * What generate checks of a prompt's ids before it runs: some (UsageError), each in the vocabulary
   * (UsageError), and all of them within the context window (ContextOverflowError).
   */
  checkPrompt(promptIds: readonly number[]): void {
    const vocab = this.model.config.vocab;
    if (promptIds.length === 0)
      throw new UsageError("the prompt is empty (no tokens); give some text or set a BOS token");
    for (const id of promptIds) {
      if (!Number.isInteger(id) || id < 0 || id >= vocab)
        throw new UsageError(`token id ${id} is outside the vocabulary (0..${vocab - 1})`);
    }
    if (promptIds.length > this.contextLength)
      throw new ContextOverflowError(
        promptIds.length,
        this.contextLength,
        "the prompt does not fit in the context window",
      );
  }

  async *generate(
    prompt: string | readonly number[],
    options: GenerateOptions = {},
  ): AsyncGenerator<GenerationEvent, void, undefined> {
    if (this.busy)
      throw new UsageError("this session is already generating; await or abort the running generation first");
    this.busy = true;
    try {
      yield* this.run(prompt, options);
    } finally {
      this.busy = false;
    }
  }

  private async *run(
    prompt: string | readonly number[],
    o: GenerateOptions,
  ): AsyncGenerator<GenerationEvent, void, undefined> {
    const model = this.model;
    const defaults = model.generationDefaults;
    const sampling: SamplingOptions = {
      temperature: o.temperature ?? defaults.temperature ?? GREEDY.temperature,
      topK: o.topK ?? defaults.topK ?? 0,
      topP: o.topP ?? defaults.topP ?? 1,
      minP: o.minP ?? defaults.minP ?? 0,
      repetitionPenalty: o.repetitionPenalty ?? defaults.repetitionPenalty ?? 1,
      presencePenalty: o.presencePenalty ?? 0,
      frequencyPenalty: o.frequencyPenalty ?? 0,
      seed: o.seed ?? Math.floor(Math.random() * 2 ** 31),
    };
    const sampler = new Sampler(sampling);
    const maxTokens = o.maxTokens ?? 256;
    if (!Number.isInteger(maxTokens) || maxTokens < 0)
      throw new UsageError(`maxTokens must be a non-negative integer, got ${maxTokens}`);
    const stops = (o.stop ?? []).filter((s) => s.length > 0);
    const wantLogprobs = o.logprobs !== undefined;
    const nLogprobs = o.logprobs ?? 0;
    if (!Number.isInteger(nLogprobs) || nLogprobs < 0)
      throw new UsageError(`logprobs must be a non-negative integer, got ${nLogprobs}`);
    const bias = o.logitBias && o.logitBias.size > 0 ? o.logitBias : undefined;
    for (const [id, b] of bias ?? []) {
      if (!Number.isInteger(id) || id < 0 || id >= model.config.vocab)
        throw new UsageError(`logit bias: token id ${id} is outside the vocabulary (0..${model.config.vocab - 1})`);
      if (!Number.isFinite(b)) throw new UsageError(`logit bias of token ${id} must be a finite number, got ${b}`);
    }
    const promptIds = typeof prompt === "string" ? this.encode(prompt, o.addSpecialTokens) : [...prompt];
    this.checkPrompt(promptIds);

    // Prefill: reuse the cached prefix, run the rest in batches of the workspace's size.
    const t0 = performance.now();
    let reused = 0;
    while (reused < this.cached.length && reused < promptIds.length - 1 && this.cached[reused] === promptIds[reused])
      reused++;
    // A long reply since may have overwritten the start of a sliding-window ring: then start over.
    if (!this.cache.holdsPrefix(reused)) reused = 0;
    this.cached.length = reused;
    let report: ForwardReport = { tokens: 0, layers: [], outputMs: 0 };
    let logits: Float32Array | null = null;
    const batch = this.transformer.ws.batch;
    for (let p = reused; p < promptIds.length; p += batch) {
      if (o.signal?.aborted) {
        yield this.done("aborted", promptIds, [], "", performance.now() - t0, 0, 0);
        return;
      }
      const chunk = promptIds.slice(p, Math.min(p + batch, promptIds.length));
      const isLast = p + chunk.length === promptIds.length;
      this.sparsity.beginPrefill();
      try {
        logits = await this.transformer.forwardYielding(chunk, p, this.cache, report, isLast, o.signal);
      } catch (e) {
        if (!(e instanceof ForwardAborted)) throw e;
        yield this.done("aborted", promptIds, [], "", performance.now() - t0, 0, 0);
        return;
      }
      this.cached.push(...chunk);
    }
    const prefillMs = performance.now() - t0;
    yield { type: "prefill", promptTokens: promptIds.length, reusedTokens: reused, ms: prefillMs };

    // Decode.
    const ids: number[] = [];
    const text = new StreamingText(model.tokenizer.decode.bind(model.tokenizer), stops);
    let decodeMs = 0;
    let steps = 0;
    let finish: FinishReason = "length";
    // Greedy decoding without log-probabilities takes the argmax where the logits are (on a GPU,
    // only the id comes back); the prompt's last token is sampled from its logits as usual.
    const grammar = o.grammar ? new GrammarConstraint(o.grammar, vocabularyOf(model)) : undefined;
    const lazy =
      o.lazyGrammar && !grammar
        ? new TriggeredGrammar(
            utf8(o.lazyGrammar.trigger),
            o.lazyGrammar.grammar,
            vocabularyOf(model),
            utf8(o.lazyGrammar.opening),
          )
        : undefined;
    const onDevice = sampler.greedy && !wantLogprobs && !grammar && !lazy && !bias;
    let next: number | null = null;
    while (ids.length < maxTokens) {
      let scores = logits!;
      if (bias && next === null) [logits, scores] = this.biased(logits!, bias);
      const holding = grammar ?? lazy?.current;
      if (holding && next === null) [logits, scores] = this.constrain(logits!, scores, holding, bias);
      const id = next ?? sampler.sample(scores, this.cached, ids);
      // NaN or inf in the weights poison every logit, and the sampler then picks token 0 as if it
      // meant it. Seen on the host's logits (every token sampled here, the first of a greedy reply).
      if (next === null && !Number.isFinite(scores[id])) {
        throw new ModelError(
          "NOT_FINITE",
          model.dir,
          `the logits at position ${this.cached.length} are ${logits![id]}: the weights hold NaN or inf values, or overflow`,
        );
      }
      const lse = wantLogprobs ? logSumExp(logits!) : 0;
      const top = nLogprobs > 0 ? topLogprobs(logits!, nLogprobs, lse) : undefined;
      const logprob = wantLogprobs ? logits![id] - lse : undefined;
      ids.push(id);
      if (model.eosIds.has(id) && !o.ignoreEos) {
        yield { type: "token", id, text: "", topLogprobs: top, logprob, report };
        finish = "eos";
        break;
      }
      const delta = text.push(ids);
      yield { type: "token", id, text: delta, topLogprobs: top, logprob, report };
      grammar?.advance(id);
      lazy?.advance(id);
      if (text.stopped || grammar?.finished) {
        finish = "stop";
        break;
      }
      if (ids.length >= maxTokens) break;
      await nextTurn(); // timers, I/O and abort handlers run between tokens
      if (o.signal?.aborted) {
        finish = "aborted";
        break;
      }
      if (this.cached.length >= this.contextLength) {
        if (o.onContextFull === "error") {
          throw new ContextOverflowError(
            this.cached.length + 1,
            this.contextLength,
            "generation reached the end of the context window",
          );
        }
        finish = "context_full";
        break;
      }
      const t = performance.now();
      report = { tokens: 0, layers: [], outputMs: 0 };
      this.sparsity.beginToken();
      // Where a grammar allows few tokens next, the output layer computes only their rows.
      const holdingNext = grammar ?? lazy?.current;
      const rows = holdingNext && this.transformer.rowLogits ? holdingNext.allowedTokens(MAX_GRAMMAR_ROWS) : null;
      if (rows) logits = this.transformer.forwardRows(id, this.cached.length, this.cache, rows, report);
      else if (onDevice) next = this.transformer.forwardGreedy([id], this.cached.length, this.cache, report);
      else logits = this.transformer.forward([id], this.cached.length, this.cache, report);
      this.cached.push(id);
      decodeMs += performance.now() - t;
      steps++;
    }
    yield this.done(finish, promptIds, ids, text.final(ids), prefillMs, decodeMs, steps);
  }

  /**
   * The scores (`scores`: the logits, biased) masked to what the grammar allows next. Where HiRE's
   * output layer left out every allowed token, this step computes the allowed tokens' exact logits
   * instead (a few head rows, as HiRE computes its candidates), or, when they are many, the whole
   * layer's (returned as the step's logits). Either way the draw is the dense one restricted to the
   * allowed tokens.
   */
  private constrain(
    logits: Float32Array,
    scores: Float32Array,
    grammar: GrammarConstraint,
    bias: ReadonlyMap<number, number> | undefined,
  ): [Float32Array, Float32Array] {
    scores = Float32Array.from(scores);
    if (grammar.mask(scores)) return [logits, scores];
    const allowed = new Float32Array(logits.length);
    grammar.mask(allowed);
    const ids = Int32Array.from(allowed.keys()).filter((i) => allowed[i] === 0);
    logits = (ids.length <= MAX_EXACT_ROWS && this.transformer.rowsLogits(ids)) || this.transformer.denseLogits();
    scores = bias ? withBias(logits, bias) : Float32Array.from(logits);
    grammar.mask(scores);
    return [logits, scores];
  }

  /**
   * The logits and the scores to sample from (logits + bias). A token the bias raises that HiRE's
   * output layer left out (-Infinity) gets its exact logit first, as a candidate would have.
   */
  private biased(logits: Float32Array, bias: ReadonlyMap<number, number>): [Float32Array, Float32Array] {
    const missing = Int32Array.from([...bias].filter(([id, b]) => b > 0 && logits[id] === -Infinity).map(([id]) => id));
    if (missing.length > 0) {
      logits = Float32Array.from(logits); // the layer's logits may be a view of the buffer exactLogits writes
      const exact = this.transformer.exactLogits(missing); // null where the head cannot give rows
      if (exact) missing.forEach((id, i) => (logits[id] = exact[i]));
    }
    return [logits, withBias(logits, bias)];
  }

  private done(
    finishReason: FinishReason,
    promptIds: number[],
    ids: number[],
    text: string,
    prefillMs: number,
    decodeMs: number,
    steps: number,
  ): GenerationEvent {
    return {
      type: "done",
      finishReason,
      promptIds,
      ids,
      text,
      prefillMs,
      decodeMs,
      decodeTokensPerS: steps > 0 ? (steps * 1000) / decodeMs : 0,
    };
  }
}

function utf8(text: string | undefined): Uint8Array | null {
  return text ? new TextEncoder().encode(text) : null;
}

/** A copy of `logits` with `bias` added. */
function withBias(logits: Float32Array, bias: ReadonlyMap<number, number>): Float32Array {
  const out = Float32Array.from(logits);
  for (const [id, b] of bias) out[id] += b;
  return out;
}

/** Allowed tokens up to which a step HiRE's output layer missed computes their rows, not the whole layer. */
const MAX_EXACT_ROWS = 4096;
/**
 * Allowed tokens up to which the output layer computes only their rows, before any other (the
 * grammar as a perfect predictor; beyond, the layer runs as set, HiRE or dense).
 */
const MAX_GRAMMAR_ROWS = 1024;

const vocabularies = new WeakMap<LoadedModel, TokenVocabulary>();

/** A model's vocabulary as a grammar masks it (built on the first structured reply, then kept). */
function vocabularyOf(model: LoadedModel): TokenVocabulary {
  let v = vocabularies.get(model);
  if (!v) {
    v = new TokenVocabulary(model.tokenizer.tokenBytes(), model.eosIds);
    vocabularies.set(model, v);
  }
  return v;
}

/**
 * Incremental detokenization with stop strings: emits only text that is final — not a partial
 * UTF-8 sequence, not a possible beginning of a stop string — and cuts at the first stop string.
 * Each token decodes a short window, not the whole reply (that grew with every token: 0.3 ms a
 * token at 2000 tokens): the text of ids[prefix..] less that of ids[prefix..read), where `prefix` is
 * one decode behind `read`, so a decoder that treats a sequence's first token specially (a
 * SentencePiece leading space) treats both the same way; the window grows only while its text ends
 * in a partial UTF-8 sequence (U+FFFD).
 */
class StreamingText {
  private emitted = 0;
  stopped = false;
  private text = "";
  private prefix = 0;
  private read = 0;

  constructor(
    private readonly decode: (ids: number[]) => string,
    private readonly stops: readonly string[],
  ) {}

  push(ids: number[]): string {
    const before = this.decode(ids.slice(this.prefix, this.read));
    const now = this.decode(ids.slice(this.prefix));
    if (now.length > before.length && !now.endsWith("\ufffd")) {
      this.text += now.slice(before.length);
      [this.prefix, this.read] = [this.read, ids.length];
    }
    let end = this.text.length;
    for (const s of this.stops) {
      const at = this.text.indexOf(s, Math.max(0, this.emitted - s.length));
      if (at >= 0 && at < end) {
        end = at;
        this.stopped = true;
      }
    }
    if (!this.stopped) {
      // Hold back a trailing replacement char (an incomplete UTF-8 sequence) and any tail that
      // could still grow into a stop string.
      while (end > this.emitted && this.text.charCodeAt(end - 1) === 0xfffd) end--;
      for (const s of this.stops) {
        for (let len = Math.min(s.length - 1, end - this.emitted); len > 0; len--) {
          if (this.text.endsWith(s.slice(0, len), end) && end - len >= this.emitted) {
            end -= len;
            break;
          }
        }
      }
    }
    this.text = this.text.slice(0, this.stopped ? end : this.text.length);
    const delta = this.text.slice(this.emitted, end);
    this.emitted = end;
    return delta;
  }

  /** All text, once generation has ended (pending tails released, stop string cut). */
  final(ids: number[]): string {
    if (this.stopped) return this.text;
    return this.decode(ids);
  }
}
