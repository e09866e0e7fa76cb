// The sampling panel and the sparsity controls. Sparsity settings live in the host (they apply to
// the model between tokens): this store mirrors what the host last confirmed, shows a change at
// once (optimistic), and the studio sends it as a `sparsity.update`. Pure functions here turn the
// panels into request payloads.
import { createStore } from "zustand/vanilla";
import type {
  ChatMessage,
  DeepPartial,
  Request,
  SamplingOptions,
  SparsitySettings,
} from "../../../core/host/protocol.js";
import { DEFAULT_SETTINGS, predictorName, resolveCount } from "../../../core/sparse/settings.js";
import { readPrefs, savePrefs } from "./connection.js";

export type TokenMeasure = "none" | "recall" | "divergence" | "headMass" | "latency";

export interface SamplingPanel extends SamplingOptions {
  maxTokens: number;
}

/** What a fresh UI shows before the host reports its settings: the engine's defaults. */
export const INITIAL_SPARSITY: SparsitySettings = DEFAULT_SETTINGS;

export const INITIAL_SAMPLING: SamplingPanel = {
  temperature: 0.7,
  topP: 0.95,
  topK: 40,
  minP: 0,
  repetitionPenalty: 1.1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  seed: 1,
  maxTokens: 256,
};

export const FFN_METHOD_OPTIONS = ["dense", "topk-exact", "hire", "dip", "dip-ca"] as const;
export const HEAD_METHOD_OPTIONS = ["dense", "hire"] as const;
/** The audit select: 0 = off, 1 = every token, N = every N-th token. */
export const AUDIT_OPTIONS = [0, 1, 2, 4, 8, 16, 32] as const;

/** What a reply is: free text, any JSON object, or a document of the schema in `schemaText`. */
export type ReplyFormat = "text" | "json" | "schema";

/** Whether replies get the tools in `toolsText`: no, the model decides ("auto"), or a call is "required". */
export type ToolChoice = "off" | "auto" | "required";

export interface SettingsState {
  sampling: SamplingPanel;
  /** Off: reasoning models are asked not to think (enable_thinking: false), where the model can be. */
  thinking: boolean;
  replyFormat: ReplyFormat;
  /** The JSON Schema (as typed) that replies follow when replyFormat is "schema". */
  schemaText: string;
  toolChoice: ToolChoice;
  /** The functions (OpenAI's tools list, as typed) the model may call when toolChoice is not "off". */
  toolsText: string;
  /** The settings as shown (the host's, plus any change not yet confirmed). */
  sparsity: SparsitySettings;
  /** The settings the host last confirmed. */
  confirmed: SparsitySettings;
  /** A sparsity update is on its way to the host. */
  applying: boolean;
  tokenMeasure: TokenMeasure;
  /** Window (tokens) of the inspector's selection frequency. */
  frequencyWindow: number;
  /** The layer open in the inspector's detail panel. */
  selectedLayer: number | null;
  setSampling(patch: Partial<SamplingPanel>): void;
  setThinking(on: boolean): void;
  setReplyFormat(format: ReplyFormat): void;
  setSchemaText(text: string): void;
  setToolChoice(choice: ToolChoice): void;
  setToolsText(text: string): void;
  setTokenMeasure(m: TokenMeasure): void;
  setFrequencyWindow(n: number): void;
  setSelectedLayer(l: number | null): void;
  /** Show a change now (before the host confirms it). */
  applyLocal(update: DeepPartial<SparsitySettings>): void;
  /** The host's settings (hello, model.loaded, `settings` events, sparsity.update replies). */
  confirm(settings: SparsitySettings, applying?: boolean): void;
  setApplying(applying: boolean): void;
}

export type SettingsStore = ReturnType<typeof createSettingsStore>;

export function createSettingsStore(init: Partial<Pick<SettingsState, "sampling" | "sparsity">> = {}) {
  const sparsity = init.sparsity ?? INITIAL_SPARSITY;
  return createStore<SettingsState>()((set) => ({
    sampling: init.sampling ?? INITIAL_SAMPLING,
    sparsity,
    confirmed: sparsity,
    applying: false,
    tokenMeasure: "none",
    frequencyWindow: 64,
    setSampling: (patch) => set((s) => ({ sampling: { ...s.sampling, ...patch } })),
    thinking: true,
    setThinking: (thinking) => set({ thinking }),
    ...readReplyPrefs(),
    setReplyFormat: (replyFormat) => set((s) => keepReplyPrefs({ ...s, replyFormat })),
    setSchemaText: (schemaText) => set((s) => keepReplyPrefs({ ...s, schemaText })),
    setToolChoice: (toolChoice) => set((s) => keepReplyPrefs({ ...s, toolChoice })),
    setToolsText: (toolsText) => set((s) => keepReplyPrefs({ ...s, toolsText })),
    setTokenMeasure: (tokenMeasure) => set({ tokenMeasure }),
    setFrequencyWindow: (frequencyWindow) => set({ frequencyWindow }),
    selectedLayer: null,
    setSelectedLayer: (selectedLayer) => set({ selectedLayer }),
    applyLocal: (update) => set((s) => ({ sparsity: mergeSparsity(s.sparsity, update) })),
    confirm: (settings, applying = false) => set({ sparsity: settings, confirmed: settings, applying }),
    setApplying: (applying) => set({ applying }),
  }));
}

// ---------------------------------------------------------------------------------------------
// Pure helpers

/** Deep-merge a partial update into settings (what the host does, without its validation). */
export function mergeSparsity(base: SparsitySettings, u: DeepPartial<SparsitySettings>): SparsitySettings {
  const numbers = (to: Record<number, number>, from: DeepPartial<Record<number, number>> | undefined) => {
    for (const [layer, v] of Object.entries(from ?? {})) if (typeof v === "number") to[+layer] = v;
    return to;
  };
  const perLayerPredictor = { ...base.ffn.perLayerPredictor };
  for (const [layer, p] of Object.entries(u.ffn?.perLayerPredictor ?? {}))
    if (p) perLayerPredictor[+layer] = mergePredictor(base.ffn.perLayerPredictor[+layer] ?? base.ffn.predictor, p);
  return {
    ffn: {
      ...base.ffn,
      ...defined(u.ffn ?? {}),
      predictor: mergePredictor(base.ffn.predictor, u.ffn?.predictor),
      perLayerK: numbers({ ...base.ffn.perLayerK }, u.ffn?.perLayerK),
      perLayerOversample: numbers({ ...base.ffn.perLayerOversample }, u.ffn?.perLayerOversample),
      perLayerPredictor,
    },
    head: {
      ...base.head,
      ...defined(u.head ?? {}),
      predictor: mergePredictor(base.head.predictor, u.head?.predictor),
    },
    shards: u.shards ?? base.shards,
    auditEvery: u.auditEvery ?? base.auditEvery,
  };
}

/** A predictor of another kind replaces the old one whole; the same kind takes the changed fields. */
function mergePredictor(base: PredictorSpec, u: DeepPartial<PredictorSpec> | undefined): PredictorSpec {
  if (!u) return base;
  const kind = u.kind ?? base.kind;
  return (kind === base.kind ? { ...base, ...defined(u) } : { ...defined(u) }) as PredictorSpec;
}

function defined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** Merge two pending updates into one (later wins), so a dragged slider sends one request. */
export function mergeUpdates(
  a: DeepPartial<SparsitySettings>,
  b: DeepPartial<SparsitySettings>,
): DeepPartial<SparsitySettings> {
  const out: DeepPartial<SparsitySettings> = { ...a, ...b };
  if (a.ffn || b.ffn) {
    out.ffn = { ...a.ffn, ...b.ffn };
    if (a.ffn?.perLayerK || b.ffn?.perLayerK) out.ffn.perLayerK = { ...a.ffn?.perLayerK, ...b.ffn?.perLayerK };
    if (a.ffn?.perLayerOversample || b.ffn?.perLayerOversample)
      out.ffn.perLayerOversample = { ...a.ffn?.perLayerOversample, ...b.ffn?.perLayerOversample };
    // Per-layer predictors, like the FFN's, are replaced whole.
    if (a.ffn?.perLayerPredictor || b.ffn?.perLayerPredictor)
      out.ffn.perLayerPredictor = { ...a.ffn?.perLayerPredictor, ...b.ffn?.perLayerPredictor };
    // A predictor is replaced whole: int4 → lowrank must not keep the group size.
    if (b.ffn?.predictor) out.ffn.predictor = b.ffn.predictor;
  }
  if (a.head || b.head) {
    out.head = { ...a.head, ...b.head };
    if (b.head?.predictor) out.head.predictor = b.head.predictor;
  }
  return out;
}

export type PredictorSpec = SparsitySettings["ffn"]["predictor"];

// Naming a predictor and resolving k to a count follow the engine's own rules.
export { predictorName, resolveCount };

/** The sampling options a generate request carries (only what the protocol accepts). */
export function samplingPayload(s: SamplingPanel): Partial<SamplingOptions> {
  const finite = (x: number, fallback: number) => (Number.isFinite(x) ? x : fallback);
  return {
    temperature: Math.max(0, finite(s.temperature, INITIAL_SAMPLING.temperature)),
    topK: Math.max(0, Math.round(finite(s.topK, 0))),
    topP: Math.min(1, Math.max(0, finite(s.topP, 1))),
    minP: Math.min(1, Math.max(0, finite(s.minP, 0))),
    repetitionPenalty: Math.max(0.01, finite(s.repetitionPenalty, 1)),
    presencePenalty: Math.min(2, Math.max(-2, finite(s.presencePenalty, 0))),
    frequencyPenalty: Math.min(2, Math.max(-2, finite(s.frequencyPenalty, 0))),
    seed: Math.round(finite(s.seed, 0)),
  };
}

/** Where the reply format, the schema box, the tool choice and the tools box are kept between app starts. */
export const REPLY_PREFS_KEY = "hire-studio.reply-prefs";
const REPLY_FORMATS: readonly ReplyFormat[] = ["text", "json", "schema"];
const TOOL_CHOICES: readonly ToolChoice[] = ["off", "auto", "required"];
type ReplyPrefs = Pick<SettingsState, "replyFormat" | "schemaText" | "toolChoice" | "toolsText">;

function readReplyPrefs(): ReplyPrefs {
  const saved = readPrefs(REPLY_PREFS_KEY);
  return {
    replyFormat: REPLY_FORMATS.includes(saved.replyFormat as ReplyFormat) ? (saved.replyFormat as ReplyFormat) : "text",
    schemaText: typeof saved.schemaText === "string" ? saved.schemaText : EXAMPLE_SCHEMA,
    toolChoice: TOOL_CHOICES.includes(saved.toolChoice as ToolChoice) ? (saved.toolChoice as ToolChoice) : "off",
    toolsText: typeof saved.toolsText === "string" ? saved.toolsText : EXAMPLE_TOOLS,
  };
}

/** Saves the reply preferences of `s`; returns them, as the store's new state. */
function keepReplyPrefs(s: ReplyPrefs): ReplyPrefs {
  const prefs = {
    replyFormat: s.replyFormat,
    schemaText: s.schemaText,
    toolChoice: s.toolChoice,
    toolsText: s.toolsText,
  };
  savePrefs(REPLY_PREFS_KEY, prefs);
  return prefs;
}

/** What the tools box holds until the user writes their own. */
export const EXAMPLE_TOOLS = `[
  {
    "type": "function",
    "function": {
      "name": "get_weather",
      "description": "The current weather in a city",
      "parameters": {
        "type": "object",
        "properties": { "city": { "type": "string" } },
        "required": ["city"]
      }
    }
  }
]`;

/**
 * The tools a reply gets: undefined when off, else the tools box's list with the choice; an Error
 * saying what is wrong when the box is not a JSON list of tools (the host checks their schemas).
 */
export function replyTools(
  choice: ToolChoice,
  toolsText: string,
): { tools: unknown[]; toolChoice: "auto" | "required" } | Error | undefined {
  if (choice === "off") return undefined;
  let tools: unknown;
  try {
    tools = JSON.parse(toolsText) as unknown;
  } catch (e) {
    return new Error(`the tools are not JSON: ${(e as Error).message}`);
  }
  if (!Array.isArray(tools) || tools.length === 0)
    return new Error(`the tools must be a list of functions, [{"type": "function", "function": {"name", ...}}]`);
  return { tools, toolChoice: choice };
}

/** What the schema box holds until the user writes their own. */
export const EXAMPLE_SCHEMA = `{
  "type": "object",
  "properties": {
    "answer": { "type": "string" },
    "confidence": { "enum": ["low", "medium", "high"] }
  },
  "required": ["answer", "confidence"]
}`;

/**
 * The JSON Schema a reply format asks for: undefined for free text, {"type": "object"} for any JSON
 * object, the schema box's JSON; an Error saying what is wrong when the box does not hold JSON
 * (the host checks the schema's keywords).
 */
export function replySchema(format: ReplyFormat, schemaText: string): unknown {
  if (format === "text") return undefined;
  if (format === "json") return { type: "object" };
  try {
    return JSON.parse(schemaText) as unknown;
  } catch (e) {
    return new Error(`the JSON schema is not JSON: ${(e as Error).message}`);
  }
}

/** Sparsity of the dense lane of an A/B comparison. */
export const DENSE_OVERRIDE: DeepPartial<SparsitySettings> = { ffn: { method: "dense" }, head: { method: "dense" } };

export type GenerateBody = Omit<Extract<Request, { type: "generate" }>, "id">;

/**
 * A generate request for these messages with the panel's sampling (and an optional one-off sparsity);
 * `thinking: false` asks a reasoning model not to think; `jsonSchema` holds the reply to a schema.
 */
export function generatePayload(
  messages: ChatMessage[],
  sampling: SamplingPanel,
  sparsity?: DeepPartial<SparsitySettings>,
  thinking = true,
  jsonSchema?: unknown,
  tools?: { tools: unknown[]; toolChoice: "auto" | "required" },
): GenerateBody {
  const maxTokens = Math.min(
    1_000_000,
    Math.max(1, Math.round(Number.isFinite(sampling.maxTokens) ? sampling.maxTokens : 256)),
  );
  const body: GenerateBody = { type: "generate", messages, sampling: samplingPayload(sampling), maxTokens };
  if (sparsity) body.sparsity = sparsity;
  if (!thinking) body.thinking = false;
  if (jsonSchema !== undefined) body.jsonSchema = jsonSchema;
  if (tools) Object.assign(body, tools);
  return body;
}

/** A short description of the settings, e.g. "hire k=0.1 ×2 int4:32 · head hire 128". */
export function describeSparsity(s: SparsitySettings): string {
  const ffn =
    s.ffn.method === "dense"
      ? "dense FFN"
      : `${s.ffn.method} k=${s.ffn.k}${s.ffn.method === "hire" ? ` ×${s.ffn.oversample} ${predictorName(s.ffn.predictor)}` : ""}`;
  const head = s.head.method === "dense" ? "" : ` · head ${s.head.method} ${s.head.k}`;
  const shards = s.shards > 1 ? ` · P=${s.shards}` : "";
  return ffn + head + shards;
}
