// The studio: the four stores wired to a host client. Events from the host update the stores;
// actions (send, stop, regenerate, A/B, load, sparsity changes…) send requests. Plain TS with no
// DOM: the browser passes a requestAnimationFrame-based `schedule`, tests a synchronous one.
import type {
  DeepPartial,
  GenerationSummary,
  HostEvent,
  ModelInfo,
  SparsitySettings,
  TokenMark,
  WeightChoice,
} from "../../../core/host/protocol.js";
import { errorInfo, type HostClient } from "./client.js";
import { createConnectionStore } from "./connection.js";
import type { KvDtype } from "../../../core/backend/backend.js";
import {
  appendTokens,
  appendToolResult,
  appendUser,
  beginReply,
  createConversationsStore,
  dropTrailingReplies,
  editUserMessage,
  emptyConversation,
  failReply,
  finishReply,
  historyFor,
  savePayload,
} from "./conversations.js";
import {
  createSettingsStore,
  DENSE_OVERRIDE,
  generatePayload,
  mergeSparsity,
  mergeUpdates,
  replySchema,
  replyTools,
} from "./settings.js";
import { createTelemetryStore, tokenMark, traceJson } from "./telemetry.js";
import { createEvaluationStore, parseKs } from "./evaluation.js";

export interface StudioOptions {
  /** Run `fn` soon (the browser: next animation frame). Streamed tokens reach the chat in batches. Default: at once. */
  schedule?: (fn: () => void) => void;
  now?: () => number;
  /** Coalesce sparsity changes for this long (a dragged slider sends one update). Default 0. */
  sparsityDebounceMs?: number;
  setTimer?: (fn: () => void, ms: number) => unknown;
  clearTimer?: (t: unknown) => void;
}

export type Studio = ReturnType<typeof createStudio>;

export function createStudio(client: HostClient, opts: StudioOptions = {}) {
  const schedule = opts.schedule ?? ((fn: () => void) => fn());
  const now = opts.now ?? Date.now;
  const debounceMs = opts.sparsityDebounceMs ?? 0;
  const setTimer = opts.setTimer ?? ((fn: () => void, ms: number) => setTimeout(fn, ms));
  const clearTimer = opts.clearTimer ?? ((t: unknown) => clearTimeout(t as ReturnType<typeof setTimeout>));

  const connection = createConnectionStore(client.kind);
  const conversations = createConversationsStore(emptyConversation(now()));
  const settings = createSettingsStore();
  const telemetry = createTelemetryStore(0, 0, settings.getState().frequencyWindow);
  const evaluation = createEvaluationStore();

  // ---- streamed tokens: telemetry at once, chat text in batches --------------------------------
  let active: { requestId: number; index: number } | null = null;
  let queue: TokenMark[] = [];
  let queueIndex = -1;
  let flushScheduled = false;
  let stopRequested = false;
  let loadActive = false;
  let inspectSeq = 0;
  let pendingUpdate: DeepPartial<SparsitySettings> | null = null;
  let timer: unknown = null;
  let inFlight = false;
  /** Settles when the sparsity update being sent (if any) has been answered. */
  let inFlightDone: Promise<void> = Promise.resolve();

  function flush(): void {
    flushScheduled = false;
    if (queue.length === 0) return;
    const marks = queue;
    const index = queueIndex;
    queue = [];
    conversations.getState().update((c) => appendTokens(c, index, marks));
  }

  function enqueue(index: number, mark: TokenMark): void {
    if (queueIndex !== index) flush();
    queueIndex = index;
    queue.push(mark);
    if (!flushScheduled) {
      flushScheduled = true;
      schedule(flush);
    }
  }

  function modelReady(info: ModelInfo): void {
    connection.getState().setModel(info);
    settings.getState().confirm(info.settings);
    settings.getState().setSelectedLayer(null);
    telemetry.getState().configure(info.layers, info.neurons, settings.getState().frequencyWindow);
  }

  function onEvent(ev: HostEvent): void {
    switch (ev.type) {
      case "model.progress": {
        const p = { path: ev.path, stage: ev.stage, done: ev.done, total: ev.total };
        if (loadActive) connection.getState().setLoading(p);
        else connection.getState().setPreparing(ev.done >= ev.total ? null : p);
        break;
      }
      case "model.loaded":
        if (!loadActive) modelReady(ev.info);
        break;
      case "settings":
        connection.getState().setReleasedBytes(ev.releasedBytes);
        if (!settings.getState().applying && pendingUpdate === null) settings.getState().confirm(ev.settings);
        break;
      case "gen.prefill": {
        const s = conversations.getState().streaming;
        if (s && s.requestId === ev.requestId)
          conversations.getState().setStreaming({
            ...s,
            prefill: { promptTokens: ev.promptTokens, reusedTokens: ev.reusedTokens, ms: ev.ms },
          });
        break;
      }
      case "gen.token":
        if (active && ev.requestId === active.requestId) {
          telemetry.getState().push({ index: ev.index, tokenId: ev.tokenId, text: ev.text, step: ev.step });
          enqueue(active.index, tokenMark(ev.text, ev.step));
        }
        break;
      case "eval.progress":
        evaluation.getState().setProgress(ev.requestId, ev.done, ev.total);
        break;
      case "app.openModel":
        connection.getState().setPathInput(ev.path);
        void loadModel(ev.path);
        break;
      case "host.crashed": {
        const c = connection.getState();
        const path = c.model?.path;
        c.setCrashed(ev.message);
        c.setModel(null);
        // "Reload model" reloads what crashed.
        if (path && c.pathInput.trim() === "") c.setPathInput(path);
        break;
      }
    }
  }

  // ---- connection -------------------------------------------------------------------------------
  async function hello(): Promise<void> {
    try {
      const h = await client.request({ type: "hello" });
      connection.getState().setHello(h);
      if (h.model) {
        connection.getState().setModel(h.model);
        const t = telemetry.getState();
        if (t.layers !== h.model.layers || t.neurons !== h.model.neurons)
          t.configure(h.model.layers, h.model.neurons, settings.getState().frequencyWindow);
      }
      if (h.settings) settings.getState().confirm(h.settings);
      else if (h.model) settings.getState().confirm(h.model.settings);
      connection
        .getState()
        .setOrphan(h.generating !== null && h.generating !== active?.requestId ? h.generating : null);
      await refreshList();
    } catch (e) {
      connection.getState().showError("Connecting to the engine", errorInfo(e));
    }
    void refreshCached();
  }

  /** The Hugging Face cache's models, for the model bar. A host that cannot list them shows none. */
  async function refreshCached(): Promise<void> {
    try {
      connection.getState().setCached(await client.request({ type: "models.cached" }));
    } catch {
      connection.getState().setCached(null);
    }
  }

  const unsubscribe = [
    client.onEvent(onEvent),
    client.onStatus((status) => {
      connection.getState().setStatus(status);
      if (status === "open") void hello();
    }),
  ];
  connection.getState().setStatus(client.status);
  if (client.status === "open") void hello();

  // ---- model ------------------------------------------------------------------------------------
  async function inspectModel(path: string): Promise<void> {
    const seq = ++inspectSeq;
    if (path.trim() === "") {
      connection.getState().setEstimate(null, null);
      return;
    }
    try {
      const est = await client.request({ type: "model.inspect", path: path.trim(), ...loadChoices() });
      if (seq === inspectSeq) connection.getState().setEstimate(est, null);
    } catch (e) {
      if (seq === inspectSeq) connection.getState().setEstimate(null, errorInfo(e));
    }
  }

  /** The model bar's KV type, weight format and context length (left out when it is the host's default). */
  function loadChoices(): { kvCache: KvDtype; weights: WeightChoice; contextLength?: number } {
    const { kvCache, weights, contextLength } = connection.getState();
    return { kvCache, weights, ...(contextLength !== null && { contextLength }) };
  }

  /** Load a folder (no path: the host's default model). */
  async function loadModel(path?: string): Promise<ModelInfo | null> {
    if (busy() || loadActive) return null;
    const p = path?.trim() || undefined;
    loadActive = true;
    connection.getState().clearError();
    connection.getState().setCrashed(null);
    connection
      .getState()
      .setLoading({ path: p ?? connection.getState().defaultModel, stage: "start", done: 0, total: 0 });
    try {
      const info = await client.request({ type: "model.load", ...(p !== undefined && { path: p }), ...loadChoices() });
      modelReady(info);
      connection.getState().addRecent(info.source);
      conversations.getState().setContext(null);
      return info;
    } catch (e) {
      connection.getState().showError("Loading model", errorInfo(e));
      return null;
    } finally {
      loadActive = false;
      connection.getState().setLoading(null);
    }
  }

  // ---- sparsity ---------------------------------------------------------------------------------
  /** Change sparsity settings: shown now, sent (coalesced) as `sparsity.update`; applies from the next token. */
  function updateSparsity(update: DeepPartial<SparsitySettings>): void {
    settings.getState().applyLocal(update);
    pendingUpdate = pendingUpdate ? mergeUpdates(pendingUpdate, update) : update;
    if (timer !== null) clearTimer(timer);
    timer = null;
    if (debounceMs > 0) timer = setTimer(() => void sendSparsity(), debounceMs);
    else void sendSparsity();
  }

  async function sendSparsity(): Promise<void> {
    timer = null;
    if (inFlight || pendingUpdate === null) return;
    const update = pendingUpdate;
    pendingUpdate = null;
    inFlight = true;
    settings.getState().setApplying(true);
    let answered = () => {};
    inFlightDone = new Promise<void>((resolve) => (answered = resolve));
    try {
      const confirmed = await client.request({ type: "sparsity.update", update });
      settings.getState().confirm(confirmed, pendingUpdate !== null);
    } catch (e) {
      connection.getState().showError("Applying sparsity settings", errorInfo(e));
      settings.getState().confirm(settings.getState().confirmed, pendingUpdate !== null);
    } finally {
      inFlight = false;
      answered();
      connection.getState().setPreparing(null);
    }
    if (pendingUpdate !== null) {
      settings.setState((s) => ({ sparsity: mergeSparsity(s.confirmed, pendingUpdate ?? {}) }));
      await sendSparsity();
    }
  }

  /**
   * Send any debounced sparsity change now and wait until the host has applied it, so that a
   * reply requested right after moving a control is generated with the new settings.
   */
  async function settleSparsity(): Promise<void> {
    if (timer !== null) clearTimer(timer);
    timer = null;
    while (inFlight || pendingUpdate !== null) {
      if (inFlight) await inFlightDone;
      else await sendSparsity();
    }
  }

  /** Open (or, with null, close) a layer in the detail panel: the host then sends its scores with each token. */
  async function inspectLayer(layer: number | null): Promise<void> {
    settings.getState().setSelectedLayer(layer);
    if (!connection.getState().model) return;
    try {
      await client.request({ type: "inspect.layer", layer: layer ?? -1 });
    } catch (e) {
      connection.getState().showError("Inspecting a layer", errorInfo(e));
    }
  }

  function setFrequencyWindow(n: number): void {
    settings.getState().setFrequencyWindow(n);
    telemetry.getState().setWindow(n);
  }

  // ---- generation -------------------------------------------------------------------------------
  function busy(): boolean {
    const c = conversations.getState();
    return c.streaming !== null || c.comparing || evaluation.getState().requestId !== null;
  }

  async function save(): Promise<void> {
    const c = conversations.getState().current;
    if (c.messages.length === 0) return;
    try {
      const summary = await client.request({ type: "conversations.save", conversation: savePayload(c) });
      conversations.getState().upsert(summary);
    } catch (e) {
      connection.getState().showError("Saving the conversation", errorInfo(e));
    }
  }

  /** Stream one reply to the conversation as it stands (it ends with a user message). */
  async function generate(lane?: string, sparsity?: DeepPartial<SparsitySettings>): Promise<GenerationSummary | null> {
    await settleSparsity();
    if (!replyFormatOk()) return null;
    const { replyFormat, schemaText, toolChoice, toolsText } = settings.getState();
    const schema = replySchema(replyFormat, schemaText);
    const tools = replyTools(toolChoice, toolsText) as Exclude<ReturnType<typeof replyTools>, Error>;
    const cs = conversations.getState();
    const history = historyFor(cs.current);
    const [conv, index] = beginReply(cs.current, lane, now());
    cs.update(() => conv);
    cs.setStreaming({ requestId: null, index, lane, prefill: null });
    try {
      const { sampling, thinking } = settings.getState();
      const pending = client.send(generatePayload(history, sampling, sparsity, thinking, schema, tools));
      active = { requestId: pending.id, index };
      telemetry.getState().begin(pending.id);
      conversations.getState().setStreaming({ requestId: pending.id, index, lane, prefill: null });
      const summary = await pending.result;
      flush();
      conversations.getState().update((c) => finishReply(c, index, summary, now()));
      conversations.getState().setContext({
        used: summary.contextUsed,
        length: summary.contextLength,
        finishReason: summary.finishReason,
      });
      return summary;
    } catch (e) {
      flush();
      conversations.getState().update((c) => failReply(c, index, now()));
      const info = errorInfo(e);
      connection.getState().showError("Generating", info);
      if (info.code === "CONTEXT_FULL") {
        const length = connection.getState().model?.contextLength ?? 0;
        conversations.getState().setContext({ used: length, length, finishReason: "context_full" });
      }
      return null;
    } finally {
      active = null;
      conversations.getState().setStreaming(null);
    }
  }

  function canGenerate(): boolean {
    if (busy()) return false;
    if (!connection.getState().model) {
      connection.getState().showError("Generating", { code: "NO_MODEL", message: "Load a model first." });
      return false;
    }
    return true;
  }

  function stampModel(): void {
    const path = connection.getState().model?.path ?? null;
    conversations.getState().update((c) => ({ ...c, modelPath: path }));
  }

  /**
   * Whether the reply format and tools can be sent (a schema or tools box that is not JSON cannot);
   * if not, says so.
   */
  function replyFormatOk(): boolean {
    const s = settings.getState();
    const schema = replySchema(s.replyFormat, s.schemaText);
    if (schema instanceof Error) {
      connection.getState().showError("Generating", { code: "BAD_SCHEMA", message: schema.message });
      return false;
    }
    const tools = replyTools(s.toolChoice, s.toolsText);
    if (tools instanceof Error) {
      connection.getState().showError("Generating", { code: "BAD_TOOLS", message: tools.message });
      return false;
    }
    return true;
  }

  /** Answer tool call `callId` with its result, and stream the model's next reply. */
  async function sendToolResult(callId: string, result: string): Promise<void> {
    if (!canGenerate()) return;
    stopRequested = false;
    conversations.getState().update((c) => appendToolResult(c, callId, result, now()));
    await save();
    await generate();
    await save();
  }

  /** Send a user message and stream the reply. */
  async function send(text: string): Promise<void> {
    if (text.trim() === "" || !canGenerate()) return;
    stopRequested = false;
    conversations.getState().update((c) => appendUser(c, text, now()));
    stampModel();
    await save();
    await generate();
    await save();
  }

  /** Replace the last reply(s) with a new one. */
  async function regenerate(): Promise<void> {
    if (!canGenerate()) return;
    const c = dropTrailingReplies(conversations.getState().current, now());
    if (!c) return;
    stopRequested = false;
    conversations.getState().update(() => c);
    await generate();
    await save();
  }

  /** Edit user message `index`, drop what followed, and generate again. */
  async function editAndResend(index: number, text: string): Promise<void> {
    if (text.trim() === "" || !canGenerate()) return;
    stopRequested = false;
    conversations.getState().update((c) => editUserMessage(c, index, text, now()));
    stampModel();
    await save();
    await generate();
    await save();
  }

  /** A/B: the prompt (or the last user message) dense, then with the current sparsity, side by side. */
  async function compare(text?: string): Promise<void> {
    if (!canGenerate()) return;
    const cs = conversations.getState();
    let conv =
      text && text.trim() !== "" ? appendUser(cs.current, text, now()) : dropTrailingReplies(cs.current, now());
    if (!conv) {
      connection.getState().showError("A/B", { code: "USAGE", message: "Type a prompt first." });
      return;
    }
    conv = { ...conv, modelPath: connection.getState().model?.path ?? null };
    stopRequested = false;
    cs.setComparing(true);
    try {
      cs.update(() => conv);
      await save();
      const dense = await generate("dense", DENSE_OVERRIDE);
      if (dense && !stopRequested) await generate("sparse");
    } finally {
      conversations.getState().setComparing(false);
    }
    await save();
  }

  /** Quality against k on the evaluation panel's text: dense, then the live settings at each k. */
  async function runEvaluation(): Promise<void> {
    const e = evaluation.getState();
    if (e.requestId !== null || !canGenerate()) return;
    const ffnK = parseKs(e.ksText);
    if (ffnK instanceof Error) {
      connection.getState().showError("Evaluating", { code: "USAGE", message: ffnK.message });
      return;
    }
    await settleSparsity();
    const pending = client.send({ type: "eval", text: e.text, ffnK });
    evaluation.getState().begin(pending.id);
    try {
      evaluation.getState().end(await pending.result);
    } catch (err) {
      evaluation.getState().end(null);
      connection.getState().showError("Evaluating", errorInfo(err));
    }
  }

  /** Stop the running generation (and the rest of an A/B), or the evaluation. */
  async function stop(): Promise<void> {
    stopRequested = true;
    const target = active?.requestId ?? evaluation.getState().requestId ?? connection.getState().orphanGeneration;
    if (target === null || target === undefined) return;
    try {
      await client.request({ type: "stop", target });
      if (target === connection.getState().orphanGeneration) connection.getState().setOrphan(null);
    } catch (e) {
      connection.getState().showError("Stopping", errorInfo(e));
    }
  }

  // ---- conversations ----------------------------------------------------------------------------
  async function refreshList(): Promise<void> {
    try {
      conversations.getState().setList(await client.request({ type: "conversations.list" }));
    } catch (e) {
      connection.getState().showError("Listing conversations", errorInfo(e));
    }
  }

  function newConversation(): void {
    if (busy()) return;
    const system = conversations.getState().current.system;
    conversations.getState().open(emptyConversation(now(), undefined, system));
    telemetry.getState().begin(null);
  }

  async function selectConversation(id: string): Promise<void> {
    if (busy() || conversations.getState().current.id === id) return;
    try {
      conversations.getState().open(await client.request({ type: "conversations.get", conversationId: id }));
      telemetry.getState().begin(null);
    } catch (e) {
      connection.getState().showError("Opening the conversation", errorInfo(e));
    }
  }

  async function deleteConversation(id: string): Promise<void> {
    if (busy() && conversations.getState().current.id === id) return;
    try {
      await client.request({ type: "conversations.delete", conversationId: id });
      conversations.setState((s) => ({ list: s.list.filter((x) => x.id !== id) }));
      if (conversations.getState().current.id === id) newConversation();
    } catch (e) {
      connection.getState().showError("Deleting the conversation", errorInfo(e));
    }
  }

  function setSystem(system: string): void {
    conversations.getState().update((c) => ({ ...c, system }));
  }

  /** The last generation's telemetry as JSON (Export trace). */
  function exportTrace(): string {
    const t = telemetry.getState();
    const m = connection.getState().model;
    return traceJson(t.trace, {
      format: "hire-studio.trace",
      version: 1,
      model: m ? { name: m.name, path: m.path, layers: m.layers, neurons: m.neurons } : null,
      settings: settings.getState().confirmed,
      requestId: t.requestId,
      droppedSteps: t.traceDropped,
    });
  }

  return {
    client,
    connection,
    conversations,
    settings,
    telemetry,
    evaluation,
    hello,
    refreshCached,
    inspectModel,
    loadModel,
    updateSparsity,
    inspectLayer,
    setFrequencyWindow,
    replyFormatOk,
    send,
    sendToolResult,
    regenerate,
    editAndResend,
    compare,
    runEvaluation,
    stop,
    busy,
    refreshList,
    newConversation,
    selectConversation,
    deleteConversation,
    setSystem,
    save,
    exportTrace,
    dispose(): void {
      for (const u of unsubscribe) u();
      if (timer !== null) clearTimer(timer);
    },
  };
}
