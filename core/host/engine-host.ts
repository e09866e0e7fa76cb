// The engine host: owns the loaded model, its Session (KV cache + Sparsifier) and the conversation
// store, and answers protocol requests. It knows nothing of transports: Electron's utility process,
// `hire serve`'s WebSocket and the OpenAI-compatible endpoint all hand it requests and a channel
// to answer on. One generation runs at a time; between tokens it yields to the event loop so a
// Stop (or a settings change) arriving meanwhile is handled before the next token.
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { setImmediate as nextTurn } from "node:timers/promises";
import { native } from "../native/addon.js";
import type { Backend, KvDtype } from "../backend/backend.js";
import { CudaBackend, cudaDevices } from "../backend/cuda.js";
import { ChatTemplateError, ContextOverflowError, ModelError, UsageError } from "../loader/errors.js";
import { defaultModelDir } from "../loader/default-model.js";
import { importRecord, planImport, plannedBlockTypes, readGguf, type ImportRecord } from "../gguf/import.js";
import { ggmlTypeName } from "../gguf/quants.js";
import { ggufFileFor, modelFolderFor } from "../loader/model-source.js";
import {
  quantSchemeOf,
  planQuantizedImport,
  quantizedImportRecord,
  type QuantizedImportRecord,
} from "../loader/quantized-import.js";
import { tensorBytes, type TensorEntry } from "../modelgen/safetensors-writer.js";
import { ARCHITECTURES } from "../arch/index.js";
import { findModelFolder, hubCacheDir, listCachedModels, modelName } from "../loader/hf-cache.js";
import { loadModel, readModelConfig, resolveWeights, type LoadedModel } from "../loader/model-folder.js";
import { quantizedFrom } from "../gguf/block-weights.js";
import {
  blockFit,
  isInt4Block,
  QUANT_GROUP,
  quantBytes,
  type WeightChoice,
  type WeightFormat,
} from "../loader/weight-format.js";
import { readSafetensorsHeader, weightFiles, DTYPE_BYTES, type TensorInfo } from "../loader/safetensors.js";
import { pytorchFiles, pytorchTensors } from "../loader/pytorch-import.js";
import { layerFfnBytes, type ModelConfig } from "../arch/config.js";
import { DEFAULT_CONTEXT, Session, type GenerationEvent, type LazyGrammar } from "../engine/session.js";
import { kvCacheBytes, type ForwardReport } from "../engine/transformer.js";
import { layerNeurons, routedNeurons } from "../engine/moe.js";
import { evaluateAsync, type EvalConfig, type EvalRow } from "../engine/eval.js";
import { bytesRead } from "../sparse/telemetry.js";
import { GREEDY, validateSampling } from "../engine/sampler.js";
import type { ChatMessage } from "../loader/tokenizer.js";
import { functionNames, parseToolCalls, toolGrammar, withCallIds } from "./tool-calls.js";
import type { Node as Grammar } from "../structured/schema.js";
import { cachedSchema } from "../structured/grammar-cache.js";
import { ConversationStore, writeAtomic } from "./conversations.js";
import {
  PROTOCOL_VERSION,
  ProtocolError,
  parseRequest,
  rejection,
  type GenerationSummary,
  type HostErrorInfo,
  type HostEvent,
  type HostMessage,
  type ModelEstimate,
  type ModelInfo,
  type Request,
  type StepTelemetry,
} from "./protocol.js";

export interface EngineHostOptions {
  /** Where conversations and the recent-models list live. */
  dataDir: string;
  /** Context window for new sessions (default: the model's, capped by Session). */
  contextLength?: number;
  threads?: number;
  /** KV-cache element type for new sessions (default "f32"). */
  kvCache?: KvDtype;
  /** How loads keep the model's matrices (default "auto": see resolveWeights; `hire serve --weights`). */
  weights?: WeightChoice;
}

export interface GenerateParams {
  sampling: Extract<Request, { type: "generate" }>["sampling"];
  maxTokens: number;
  sparsity?: Extract<Request, { type: "generate" }>["sparsity"];
  /** false: the chat template's enable_thinking = false (a reasoning model answers without thinking). */
  thinking?: boolean;
  /** Stop strings (the OpenAI endpoint's `stop`). */
  stop?: string[];
  /** Each token's log-probability and its `logprobs` most likely alternatives' (the OpenAI endpoints'). */
  logprobs?: number;
  /** Functions the model may call (OpenAI's `tools`), given to the chat template as `tools`. */
  tools?: readonly unknown[];
  /**
   * With tools, a call is forced: of this function, or (true) of any of them; else the model
   * decides, and a call it starts is held to the tools (tool-calls.ts: toolGrammar).
   */
  forcedTool?: string | true;
  /** Structured output: the reply is a document of this grammar (response_format, a forced tool call). */
  grammar?: Grammar;
  /** A grammar from a trigger on (a tool call's marker): see GenerateOptions.lazyGrammar. */
  lazyGrammar?: LazyGrammar;
  /** Added to these tokens' logits (OpenAI's logit_bias): see GenerateOptions.logitBias. */
  logitBias?: ReadonlyMap<number, number>;
}

/** One generation's events; `summary` is set once they end. */
export interface Generation extends AsyncIterable<HostEvent> {
  summary: GenerationSummary;
}

/** Where a request's reply and its generation events go: the client that sent it. */
export type Channel = (m: HostMessage) => void;

/** A prompt without the chat template: text (encoded as the tokenizer does) or token ids as they are. */
export type TextInput = { text: string } | { ids: readonly number[] };

const MAX_RECENT = 10;

interface Running {
  channel: Channel;
  id: number;
  abort: AbortController;
}

export class EngineHost {
  private model: LoadedModel | null = null;
  /** What the loaded model was asked for by (ModelInfo.source). */
  private source = "";
  private session: Session | null = null;
  private running: Running | null = null;
  /**
   * A model load is under way (an import can take a while): the model it replaces is closed when it
   * ends, so nothing may start on it meanwhile.
   */
  private loading = false;
  /** Callers of whenIdle, woken in order when the running reply or evaluation ends. */
  private idleWaiters: (() => void)[] = [];
  /** An A/B lane is running with its own settings (restored when it ends). */
  private overriding = false;
  private readonly conversations: ConversationStore;
  private readonly recentFile: string;
  private readonly listeners = new Set<Channel>();

  constructor(private readonly options: EngineHostOptions) {
    this.conversations = new ConversationStore(join(options.dataDir, "conversations"));
    this.recentFile = join(options.dataDir, "recent-models.json");
    if (options.threads !== undefined) native().setThreads(options.threads);
  }

  /** Receive broadcast events (model progress, model loaded, settings) until the returned function is called. */
  subscribe(channel: Channel): () => void {
    this.listeners.add(channel);
    return () => this.listeners.delete(channel);
  }

  private broadcast(e: HostEvent): void {
    for (const l of this.listeners) l(e);
  }

  /** Handle one raw message from a client; always answers on `channel`, never throws. */
  async handle(raw: unknown, channel: Channel): Promise<void> {
    let req: Request;
    try {
      req = parseRequest(raw);
    } catch (e) {
      channel(rejection(raw, e));
      return;
    }
    try {
      const result = await this.dispatch(req, channel);
      channel({ type: "reply", id: req.id, ok: true, result });
    } catch (e) {
      channel({ type: "reply", id: req.id, ok: false, error: errorInfo(e) });
    }
  }

  /** A client went away: stop what it was generating. */
  disconnect(channel: Channel): void {
    this.listeners.delete(channel);
    if (this.running?.channel === channel) this.running.abort.abort();
  }

  close(): void {
    this.running?.abort.abort();
    this.model?.close();
    this.model = null;
    this.session = null;
  }

  get loadedModel(): LoadedModel | null {
    return this.model;
  }

  private async dispatch(req: Request, channel: Channel): Promise<unknown> {
    switch (req.type) {
      case "hello":
        return {
          protocol: PROTOCOL_VERSION,
          backend: backendName(this.session?.transformer.backend),
          gpus: gpuLines(),
          defaultModel: safeDefaultModel(),
          recentModels: this.recent(),
          model: this.model ? this.info() : null,
          settings: this.session?.sparsity.settings ?? null,
          generating: this.running?.channel === channel ? this.running.id : null,
        };
      case "model.inspect":
        return estimateModel(
          req.path,
          req.contextLength ?? this.options.contextLength,
          req.kvCache ?? this.options.kvCache,
          req.weights ?? this.options.weights,
        );
      case "models.cached":
        return { hub: hubCacheDir(), models: await listCachedModels() };
      case "model.load":
        return this.load(
          req.path ?? defaultModelDir(),
          req.contextLength,
          req.kvCache ?? this.options.kvCache,
          req.weights ?? this.options.weights ?? "auto",
        );
      case "generate": {
        const grammar = req.jsonSchema === undefined ? undefined : cachedSchema(req.jsonSchema);
        const forcedTool = req.toolChoice === "required" ? true : undefined;
        const events = this.generate(req.messages, { ...req, grammar, forcedTool }, channel, req.id);
        for await (const e of events) channel(e);
        return events.summary;
      }
      case "stop": {
        const r = this.running;
        if (!r || r.channel !== channel || r.id !== req.target) return { stopped: false };
        r.abort.abort();
        return { stopped: true };
      }
      case "sparsity.update": {
        const session = this.requireSession();
        if (this.overriding)
          throw new UsageError("an A/B generation is running with its own settings; change settings after it ends");
        const settings = session.sparsity.update(req.update, (p) =>
          this.broadcast({
            type: "model.progress",
            stage: p.stage,
            done: p.done,
            total: p.total,
            path: this.model!.dir,
          }),
        );
        this.broadcast({ type: "settings", settings, releasedBytes: this.model!.store.releasedBytes() });
        return settings;
      }
      case "eval":
        return this.evaluate(req.text, req.ffnK, channel, req.id);
      case "inspect.layer":
        this.requireSession().sparsity.inspect(req.layer);
        return { layer: req.layer };
      case "conversations.list":
        return this.conversations.list();
      case "conversations.get":
        return this.conversations.get(req.conversationId);
      case "conversations.save":
        return this.conversations.save(req.conversation);
      case "conversations.delete":
        return { deleted: this.conversations.delete(req.conversationId) };
    }
  }

  private requireSession(): Session {
    if (!this.session) throw new HostError("NO_MODEL", "no model is loaded; load one first");
    return this.session;
  }

  private async load(
    path: string,
    contextLength: number | undefined,
    kvCache: KvDtype | undefined,
    weights: WeightChoice,
  ): Promise<ModelInfo> {
    this.refuseIfBusy("a reply is being generated; stop it before loading a model");
    this.loading = true;
    try {
      return await this.replaceModel(path, contextLength, kvCache, weights);
    } finally {
      this.loading = false;
      this.wakeIfIdle();
    }
  }

  private async replaceModel(
    path: string,
    contextLength: number | undefined,
    kvCache: KvDtype | undefined,
    weights: WeightChoice,
  ): Promise<ModelInfo> {
    // A .gguf file is imported into a model folder the first time (progress as stage "import").
    const dir = await modelFolderFor(path, (file, done, total) =>
      this.broadcast({ type: "model.progress", stage: "import", done, total, path: file }),
    );
    const emit = (done: number) =>
      this.broadcast({ type: "model.progress", stage: "weights", done, total: 1, path: dir });
    emit(0);
    const model = loadModel(dir, { weights });
    let session: Session;
    try {
      const ctx = contextLength ?? this.options.contextLength ?? Math.min(model.config.maxPositions, DEFAULT_CONTEXT);
      session = new Session(model, {
        contextLength: Math.min(ctx, model.config.maxPositions),
        kvCache,
      });
    } catch (e) {
      model.close();
      throw e;
    }
    this.model?.close();
    this.model = model;
    this.session = session;
    emit(1);
    // A repo id stays a repo id in the list, so that it finds main's snapshot next time; a GGUF file
    // stays the file (its import lives in the cache).
    this.source = existsSync(path) ? resolve(path) : path;
    this.remember(this.source);
    const info = this.info();
    this.broadcast({ type: "model.loaded", info });
    return info;
  }

  private info(): ModelInfo {
    const m = this.model!;
    const c = m.config;
    const s = this.session!;
    const sizes = estimate(m.dir, c, m.store.tensors.values(), s.contextLength, s.kvCache, m.weightFormat, {
      blockTypes: importOf(m.dir).blockTypes,
    });
    return {
      ...sizes,
      name: modelName(m.dir),
      source: this.source,
      layers: c.layers,
      hidden: c.hidden,
      neurons: layerNeurons(c),
      moe: c.moe
        ? {
            experts: c.moe.experts,
            perToken: c.moe.topK,
            expertNeurons: c.moe.expertIntermediate,
            sharedNeurons: c.moe.sharedIntermediate ?? 0,
          }
        : null,
      vocab: c.vocab,
      gatedFfn: c.gatedFfn,
      hasChatTemplate: m.tokenizer.hasChatTemplate,
      thinkingSwitch: m.tokenizer.thinkingSwitch,
      bytesPerToken: m.weightBytesPerToken,
      releasedBytes: m.store.releasedBytes(),
      quantizedFrom: m.weightFormat === "file" ? null : quantizedFrom(c.dtype ?? "the file", m.blockCount),
      contextLength: this.session!.contextLength,
      settings: this.session!.sparsity.settings,
    };
  }

  /**
   * Quality against k on `text` (core/engine/eval.ts): dense, then the live sparse settings at each k.
   * It holds the engine as a generation does (one at a time; "stop" ends it).
   */
  private async evaluate(text: string, ks: number[], channel: Channel, id: number): Promise<EvalRow[]> {
    const session = this.requireSession();
    this.refuseIfBusy("a reply is being generated; stop it before evaluating");
    const live = session.sparsity.settings;
    if (live.ffn.method === "dense")
      throw new UsageError("the FFN method is dense: choose a sparse method (hire, dip, ...) to evaluate it against k");
    const label = live.head.method === "hire" ? `${live.ffn.method}+head` : live.ffn.method;
    const configs: EvalConfig[] = [
      { label: "dense", ffnK: null, oversample: null, settings: { ffn: { method: "dense" } } },
      ...ks.map((k) => ({
        label,
        ffnK: k,
        oversample: live.ffn.method === "hire" ? live.ffn.oversample : null,
        settings: { ...live, ffn: { ...live.ffn, k } },
      })),
    ];
    const running: Running = { channel, id, abort: new AbortController() };
    this.running = running;
    try {
      return await evaluateAsync(session.model, text, configs, {
        maxTokens: Math.min(512, session.contextLength),
        signal: running.abort.signal,
        onProgress: (p) => channel({ type: "eval.progress", requestId: id, ...p }),
      });
    } catch (e) {
      if (running.abort.signal.aborted) throw new UsageError("the evaluation was stopped");
      throw e;
    } finally {
      this.idle();
    }
  }

  /** Whether a model load (a GGUF import included) is under way. */
  get loadingModel(): boolean {
    return this.loading;
  }

  /** Whether a reply, an evaluation or a model load is under way (a generate call now would be refused as BUSY). */
  get busy(): boolean {
    return this.running !== null || this.loading;
  }

  /** Resolves once nothing is under way (at once when nothing is); waiters are woken in call order. */
  whenIdle(): Promise<void> {
    return this.busy ? new Promise((resolve) => this.idleWaiters.push(resolve)) : Promise.resolve();
  }

  /** BUSY while something runs (`whileRunning` says what to do about it) or a model loads. */
  private refuseIfBusy(whileRunning: string): void {
    if (this.running) throw new HostError("BUSY", whileRunning);
    if (this.loading) throw new HostError("BUSY", "a model is being loaded; wait for it");
  }

  private idle(): void {
    this.running = null;
    this.wakeIfIdle();
  }

  private wakeIfIdle(): void {
    if (!this.busy) for (const wake of this.idleWaiters.splice(0)) wake();
  }

  /**
   * Run one generation for `channel`: an async iterable of its events whose `summary` is set when
   * it ends. The input is a conversation (through the chat template) or a prompt's text as it is.
   * Exposed for the OpenAI-compatible endpoints, which stream the same events as chunks.
   */
  generate(input: ChatMessage[] | TextInput, req: GenerateParams, channel: Channel, id: number): Generation {
    const session = this.requireSession();
    this.refuseIfBusy("a reply is already being generated; stop it or wait for it");
    try {
      validateSampling({ ...GREEDY, ...req.sampling });
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
    if (req.tools) {
      const tok = session.model.tokenizer;
      if (!tok.readsTools) throw new UsageError(`"tools": this model's chat template does not take tools`);
      // The call's form is the model's (its chat template's).
      req = { ...req, ...toolGrammar(tok.templateSource, req.tools, req.forcedTool, req.grammar) };
    }
    // Rendered here, not in run(), so that a conversation the chat template refuses, or one too long
    // for the context, fails the call itself (the OpenAI endpoint answers 400 before it starts a stream).
    const prompt = Array.isArray(input)
      ? promptIds(session, input, { thinking: req.thinking, tools: req.tools })
      : "ids" in input
        ? [...input.ids]
        : session.encode(input.text);
    try {
      session.checkPrompt(prompt);
    } catch (e) {
      throw e instanceof ContextOverflowError ? new HostError("CONTEXT_FULL", e.message) : e;
    }
    const running: Running = { channel, id, abort: new AbortController() };
    this.running = running;
    const gen: Generation = {
      summary: undefined as unknown as GenerationSummary,
      [Symbol.asyncIterator]: () => this.run(session, prompt, req, running, gen),
    };
    return gen;
  }

  private async *run(
    session: Session,
    prompt: number[],
    req: GenerateParams,
    running: Running,
    out: Generation,
  ): AsyncGenerator<HostEvent> {
    const id = running.id;
    const restore = req.sparsity ? session.sparsity.settings : null;
    try {
      if (req.sparsity) {
        this.overriding = true;
        session.sparsity.update(req.sparsity);
      }
      const started = performance.now();
      let last = started;
      let ttft = 0;
      let reused = 0;
      let index = 0;
      const events: AsyncGenerator<GenerationEvent> = session.generate(prompt, {
        ...req.sampling,
        maxTokens: req.maxTokens,
        stop: req.stop,
        ...(req.logprobs !== undefined && { logprobs: req.logprobs }),
        ...(req.grammar && { grammar: req.grammar }),
        ...(req.lazyGrammar && { lazyGrammar: req.lazyGrammar }),
        ...(req.logitBias && { logitBias: req.logitBias }),
        signal: running.abort.signal,
        onContextFull: "stop",
      });
      for await (const ev of events) {
        const now = performance.now();
        if (ev.type === "prefill") {
          reused = ev.reusedTokens;
          yield { type: "gen.prefill", requestId: id, promptTokens: ev.promptTokens, reusedTokens: reused, ms: ev.ms };
        } else if (ev.type === "token") {
          if (index === 0) ttft = now - started;
          const step = stepTelemetry(ev.report, session, now - last, index === 0);
          yield {
            type: "gen.token",
            requestId: id,
            index: index++,
            tokenId: ev.id,
            text: ev.text,
            step,
            ...(ev.logprob !== undefined && { logprob: ev.logprob, topLogprobs: ev.topLogprobs ?? [] }),
          };
        } else {
          out.summary = {
            requestId: id,
            finishReason: ev.finishReason,
            text: ev.text,
            promptTokens: ev.promptIds.length,
            reusedTokens: reused,
            tokens: ev.ids.length,
            ttftMs: ttft,
            decodeTokensPerS: ev.decodeTokensPerS,
            contextLength: session.contextLength,
            contextUsed: session.position,
          };
          if (req.tools) {
            const { content, calls } = parseToolCalls(ev.text, functionNames(req.tools));
            if (calls.length > 0) Object.assign(out.summary, { content, toolCalls: withCallIds(`r${id}`, calls) });
          }
        }
        last = performance.now();
        // Let a Stop or settings change queued on the event loop land before the next token.
        await nextTurn();
      }
    } catch (e) {
      if (e instanceof ContextOverflowError) throw new HostError("CONTEXT_FULL", e.message);
      throw e;
    } finally {
      if (restore) session.sparsity.update(restore);
      this.overriding = false;
      this.idle();
    }
  }

  private recent(): string[] {
    try {
      const list = JSON.parse(readFileSync(this.recentFile, "utf8")) as unknown;
      return Array.isArray(list) ? list.filter((p): p is string => typeof p === "string").slice(0, MAX_RECENT) : [];
    } catch {
      return [];
    }
  }

  private remember(dir: string): void {
    const list = [dir, ...this.recent().filter((p) => p !== dir)].slice(0, MAX_RECENT);
    writeAtomic(this.recentFile, JSON.stringify(list));
  }
}

/** Errors of the host itself (no model, busy), with a protocol error code. */
export class HostError extends Error {
  override readonly name = "HostError";
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export function errorInfo(e: unknown): HostErrorInfo {
  if (e instanceof ModelError) return { code: e.code, message: e.message, file: e.file };
  if (e instanceof ChatTemplateError) return { code: "CHAT_TEMPLATE", message: e.message, file: e.file };
  if (e instanceof HostError) return { code: e.code, message: e.message };
  if (e instanceof ProtocolError) return { code: "PROTOCOL", message: e.message };
  if (e instanceof UsageError) return { code: "USAGE", message: e.message };
  if (e instanceof ContextOverflowError) return { code: "CONTEXT_FULL", message: e.message };
  return { code: "INTERNAL", message: e instanceof Error ? e.message : String(e) };
}

function safeDefaultModel(): string | null {
  try {
    return defaultModelDir();
  } catch {
    return null;
  }
}

/** The GPUs the CUDA backend can use, one line each, or one line saying why there are none. */
export function gpuLines(): string[] {
  const { devices, reason } = cudaDevices();
  if (devices.length === 0) return [`no GPU: ${reason}`];
  return devices.map((d) => `cuda:${d.index} ${d.name}, ${(d.totalBytes / 1024 ** 3).toFixed(1)} GiB`);
}

/** What runs the engine: the session's backend when it is on a GPU, else the CPU kernels. */
export function backendName(backend?: Backend): string {
  if (backend instanceof CudaBackend) return backend.name;
  const n = native();
  const info = n.cpuInfo();
  const features = { avx512: "avx512-vnni+avx2+fma+f16c", avx2: "avx2+fma+f16c", portable: "portable" }[info.path];
  return `cpu (${features}, ${n.getThreads()} threads)`;
}

/** The chat template's prompt, or for a model without one the messages as plain text. */
function promptIds(
  session: Session,
  messages: ChatMessage[],
  options: { thinking?: boolean; tools?: readonly unknown[] },
): number[] {
  const tok = session.model.tokenizer;
  if (tok.hasChatTemplate) return tok.encode(tok.applyChatTemplate(messages, true, options), false);
  return session.encode(messages.map((m) => m.content).join("\n"));
}

/** Read a folder's config and safetensors headers (no weights) to say what loading it costs. */
export async function estimateModel(
  path: string,
  contextLength?: number,
  kvCache?: KvDtype,
  weights: WeightChoice = "auto",
): Promise<ModelEstimate> {
  const dir = findModelFolder(path);
  const gguf = ggufFileFor(dir);
  if (gguf) {
    // What the import will hold: its config, and each tensor at the folder's dtype.
    const plan = planImport(await readGguf(gguf));
    const config = ARCHITECTURES[(plan.config.architectures as string[])[0]].parseConfig(plan.config, gguf);
    const tensors = plan.tensors.map(({ entry }) => plannedTensor(entry, gguf));
    return estimate(gguf, config, tensors, contextLength, kvCache, resolveWeights(weights, plan), {
      blockTypes: plannedBlockTypes(plan),
    });
  }
  if (!existsSync(dir)) throw new ModelError("NOT_FOUND", dir, "no such folder");
  if (quantSchemeOf(dir)) {
    // What the import will hold: the quantized matrices at the folder's dtype, without their scales.
    const plan = planQuantizedImport(dir);
    const tensors = plan.tensors.map(({ entry }) => plannedTensor(entry, dir));
    const int4 = plan.int4Blocks;
    const blockTypes: Record<string, string> = {};
    if (int4) for (const t of plan.tensors) if (t.kind === "dequantize") blockTypes[t.entry.name] = int4;
    return estimate(dir, readModelConfig(dir), tensors, contextLength, kvCache, resolveWeights(weights, plan), {
      blockTypes,
    });
  }
  if (pytorchFiles(dir)) {
    // What the import will hold: the checkpoint's float tensors as stored.
    const tensors = (await pytorchTensors(dir)).map((entry) => plannedTensor(entry, dir));
    return estimate(dir, readModelConfig(dir), tensors, contextLength, kvCache, resolveWeights(weights, undefined));
  }
  const tensors = weightFiles(dir).flatMap((f) => [...readSafetensorsHeader(f).tensors.values()]);
  const imported = importOf(dir);
  return estimate(
    dir,
    readModelConfig(dir),
    tensors,
    contextLength,
    kvCache,
    resolveWeights(weights, imported.record),
    { blockTypes: imported.blockTypes },
  );
}

/**
 * A folder's import record (a GGUF file's or a quantized checkpoint's, undefined for a folder that
 * is no import), read once: what "auto" resolves from, and the ggml type of each matrix quantized
 * weights take from its blocks (by name).
 */
function importOf(dir: string): {
  record: ImportRecord | QuantizedImportRecord | undefined;
  blockTypes: Record<string, string>;
} {
  const gguf = importRecord(dir);
  const quantized = gguf ? undefined : quantizedImportRecord(dir);
  const blocks = gguf?.blocks ?? quantized?.blocks?.tensors ?? {};
  const blockTypes = Object.fromEntries(Object.entries(blocks).map(([name, b]) => [name, ggmlTypeName(b.type)]));
  return { record: gguf ?? quantized, blockTypes };
}

/** A tensor an import will write, as the estimate counts it. */
function plannedTensor(entry: TensorEntry, file: string): TensorInfo {
  return { name: entry.name, file, dtype: entry.dtype, shape: entry.shape, offset: 0, byteLength: tensorBytes(entry) };
}

/**
 * Weights, parameters and KV cache of a model from its config and tensor list. With int8 or int4
 * weights, every matrix at least QUANT_GROUP columns wide counts as its copy (a tensor of more than two
 * dimensions, stacked experts, as its rows flattened by its last dimension, as the store views it)
 * and the rest as stored; `blockTypes` names the matrices taken from an import's blocks, by ggml
 * type (int4 from Q4_1 / Q4_K blocks keeps a minimum per group; int4+int8 keeps 4-bit blocks as int4,
 * the rest as int8). An estimate: the loader keeps a few such matrices as stored (a mixture's
 * router and shared-expert gate, position tables), which are tiny next to the layers' matrices.
 */
function estimate(
  dir: string,
  c: ModelConfig,
  tensors: Iterable<TensorInfo>,
  contextLength?: number,
  kvCache: KvDtype = "f32",
  weights: WeightFormat = "file",
  { blockTypes = {} }: { blockTypes?: Readonly<Record<string, string>> } = {},
): ModelEstimate {
  let weightBytes = 0;
  let parameters = 0;
  for (const t of tensors) {
    weightBytes += weights === "file" ? t.byteLength : quantTensorBytes(t, weights, blockTypes[t.name]);
    parameters += t.byteLength / DTYPE_BYTES[t.dtype];
  }
  const ctx = Math.min(c.maxPositions, contextLength ?? DEFAULT_CONTEXT);
  return {
    path: dir,
    architecture: c.architecture,
    parameters,
    dtype: c.dtype ?? "unknown",
    weightBytes,
    kvCacheBytes: kvCacheBytes(c, ctx, kvCache),
    contextLength: ctx,
    kvCache,
    weights,
  };
}

/**
 * A tensor's bytes as quantized weights would keep it: matrices of QUANT_GROUP columns or more
 * quantized (as the blocks of ggml type `blockType` when it has them), the rest as stored.
 */
function quantTensorBytes(t: TensorInfo, format: Exclude<WeightFormat, "file">, blockType?: string): number {
  if (t.shape.length < 2) return t.byteLength;
  const cols = t.shape[t.shape.length - 1];
  const rows = t.shape.slice(0, -1).reduce((a, d) => a * d, 1);
  if (rows < 2 || cols < QUANT_GROUP) return t.byteLength;
  const fourBit = blockType !== undefined && isInt4Block(blockType);
  const int4 = format === "int4" || (format === "int4+int8" && fourBit);
  const mins = int4 && blockType !== undefined && blockFit(blockType)?.mins === true;
  return quantBytes(int4 ? "int4" : "int8", rows, cols, QUANT_GROUP, mins);
}

/** Flatten a forward pass's per-layer reports into the typed arrays of the wire format. */
export function stepTelemetry(report: ForwardReport, session: Session, ms: number, prefill: boolean): StepTelemetry {
  const L = report.layers.length;
  const F = session.model.config.intermediate;
  const nan = () => new Float32Array(L).fill(NaN);
  const s = {
    attentionMs: new Float32Array(L),
    ffnMs: new Float32Array(L),
    predictorMs: nan(),
    exactMs: nan(),
    downMs: nan(),
    k: new Int32Array(L),
    candidates: new Int32Array(L),
    selectedOffsets: new Int32Array(L + 1),
    recall: nan(),
    relError: nan(),
    cacheHitRate: nan(),
    ffnBytes: new Float64Array(L),
    ffnDenseBytes: new Float64Array(L),
    storageBytes: new Float64Array(L).fill(NaN),
  };
  // A dense mixture layer's selection: the routed experts' neurons.
  const moe = session.model.config.moe;
  const chosen = report.layers.map((l) => l.ffn?.selected ?? (l.moe && routedNeurons(l.moe, moe!.expertIntermediate)));
  let total = 0;
  for (const c of chosen) total += c ? c.length : 0;
  const selected = new Int32Array(total);
  let pos = 0;
  let inspect: StepTelemetry["inspect"] = null;
  for (let l = 0; l < L; l++) {
    const r = report.layers[l];
    s.attentionMs[l] = r.attentionMs;
    s.ffnMs[l] = r.ffnMs;
    const f = r.ffn;
    s.selectedOffsets[l] = pos;
    if (!f) {
      const routed = chosen[l];
      if (routed) {
        selected.set(routed, pos);
        pos += routed.length;
      }
      s.k[l] = s.candidates[l] = routed ? routed.length : F;
      s.ffnBytes[l] = s.ffnDenseBytes[l] = layerFfnBytes(session.model.weights.layers[l], session.model.config);
      continue;
    }
    s.ffnBytes[l] = f.bytes;
    s.ffnDenseBytes[l] = f.denseBytes;
    if (f.storageBytes !== undefined) s.storageBytes[l] = f.storageBytes;
    s.k[l] = f.k;
    s.candidates[l] = f.candidates;
    selected.set(f.selected, pos);
    pos += f.selected.length;
    s.predictorMs[l] = f.predictorMs;
    s.exactMs[l] = f.exactMs;
    s.downMs[l] = f.downMs;
    if (f.recall !== undefined) s.recall[l] = f.recall;
    if (f.relError !== undefined) s.relError[l] = f.relError;
    if (f.cacheHitRate !== undefined) s.cacheHitRate[l] = f.cacheHitRate;
    if (f.scores)
      inspect = {
        layer: l,
        approx: f.scores.approx,
        candidates: f.scores.candidates,
        exact: f.scores.exact ?? null,
        exactTopK: f.scores.exactTopK ?? null,
      };
  }
  s.selectedOffsets[L] = pos;
  const h = report.head;
  const settings = session.sparsity.settings;
  return {
    ffnMethod: settings.ffn.method,
    headMethod: settings.head.method,
    prefill,
    audited: report.layers.some((l) => l.ffn?.recall !== undefined) || h?.argmaxInCandidates !== undefined,
    ms,
    outputMs: report.outputMs,
    selected,
    bytes: bytesRead(report, session.model.weightBytesPerToken),
    denseBytes: session.model.weightBytesPerToken,
    head: h
      ? {
          k: h.k,
          candidates: h.candidates,
          ms: h.ms,
          bytes: h.bytes,
          denseBytes: h.denseBytes,
          argmaxInCandidates: h.argmaxInCandidates ?? null,
          massCovered: h.massCovered ?? null,
        }
      : null,
    inspect,
    ...s,
  };
}
