// The link to the engine host and the model it runs: connection state, hello info, the loaded
// model, load progress, the estimate for a folder before loading it, and the error box.
import { createStore } from "zustand/vanilla";
import {
  isWeightChoice,
  type CachedModels,
  type HelloInfo,
  type HostErrorInfo,
  type ModelEstimate,
  type ModelInfo,
  type WeightChoice,
} from "../../../core/host/protocol.js";
import type { ConnectionStatus } from "./client.js";
import { isKvDtype, type KvDtype } from "../../../core/backend/backend.js";

export interface LoadProgress {
  path: string | null;
  stage: "import" | "weights" | "ffn" | "head" | "start";
  done: number;
  total: number;
}

export interface ShownError extends HostErrorInfo {
  /** What the UI was doing, e.g. "Loading model". */
  context: string;
}

export interface ConnectionState {
  transport: "ipc" | "websocket";
  status: ConnectionStatus;
  hello: HelloInfo | null;
  backend: string;
  /** The GPUs the engine can use, or why none (HelloInfo.gpus). */
  gpus: string[];
  defaultModel: string | null;
  recentModels: string[];
  /** The models in the Hugging Face cache on the host's machine (null until asked). */
  cached: CachedModels | null;
  model: ModelInfo | null;
  loading: LoadProgress | null;
  /** Sparsity preparation progress (building predictors after a settings change). */
  preparing: LoadProgress | null;
  /** The model bar's path field (the studio fills it for Electron's File → Open Model…). */
  pathInput: string;
  /** The KV-cache type, weight format and context length (null: the host's default) the next load and the estimate use. */
  kvCache: KvDtype;
  weights: WeightChoice;
  contextLength: number | null;
  estimate: ModelEstimate | null;
  estimateError: HostErrorInfo | null;
  error: ShownError | null;
  crashed: string | null;
  /** A generation the host reports running that this UI did not start (e.g. before a reconnect). */
  orphanGeneration: number | null;
  setStatus(status: ConnectionStatus): void;
  setHello(h: HelloInfo): void;
  setModel(m: ModelInfo | null): void;
  /** The loaded model's file-layout FFN weights now given back (a `settings` event). */
  setReleasedBytes(bytes: number): void;
  setLoading(p: LoadProgress | null): void;
  setPreparing(p: LoadProgress | null): void;
  setPathInput(path: string): void;
  setKvCache(kvCache: KvDtype): void;
  setWeights(weights: WeightChoice): void;
  setContextLength(contextLength: number | null): void;
  setEstimate(e: ModelEstimate | null, err?: HostErrorInfo | null): void;
  showError(context: string, e: HostErrorInfo): void;
  clearError(): void;
  setCrashed(message: string | null): void;
  setOrphan(id: number | null): void;
  setCached(c: CachedModels | null): void;
  addRecent(path: string): void;
}

export type ConnectionStore = ReturnType<typeof createConnectionStore>;

/** Where the model bar's load choices (context length, KV type, weight format) are kept between app starts. */
export const LOAD_PREFS_KEY = "hire-studio.load-prefs";

interface LoadPrefs {
  kvCache: KvDtype;
  weights: WeightChoice;
  contextLength: number | null;
}

/** The part of the Web Storage API the preferences use. */
export interface KeyValueStorage {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

// The browser's (or Electron window's) localStorage; absent in Node, where the stores are tested.
function prefsStorage(): KeyValueStorage | null {
  try {
    return (globalThis as { localStorage?: KeyValueStorage }).localStorage ?? null;
  } catch {
    return null; // storage disabled by the browser
  }
}

/** A saved preference as its fields (each to be checked), or {} when none is saved or it is not JSON. */
export function readPrefs(key: string): Record<string, unknown> {
  try {
    const saved = JSON.parse(prefsStorage()?.getItem(key) ?? "null") as unknown;
    return typeof saved === "object" && saved !== null ? (saved as Record<string, unknown>) : {};
  } catch {
    return {}; // not JSON: the defaults
  }
}

export function savePrefs(key: string, prefs: object): void {
  try {
    prefsStorage()?.setItem(key, JSON.stringify(prefs));
  } catch {
    // full or disabled storage: the choice still holds for this session
  }
}

/** The saved choices, or the defaults for anything missing or malformed. */
function readLoadPrefs(): LoadPrefs {
  const saved = readPrefs(LOAD_PREFS_KEY);
  const n = saved.contextLength;
  return {
    kvCache: isKvDtype(saved.kvCache) ? saved.kvCache : "f32",
    weights: isWeightChoice(saved.weights) ? saved.weights : "auto",
    contextLength: typeof n === "number" && Number.isInteger(n) && n >= 1 ? n : null,
  };
}

export function createConnectionStore(transport: "ipc" | "websocket" = "websocket") {
  return createStore<ConnectionState>()((set) => ({
    transport,
    status: "connecting",
    hello: null,
    backend: "",
    gpus: [],
    defaultModel: null,
    recentModels: [],
    cached: null,
    model: null,
    loading: null,
    preparing: null,
    pathInput: "",
    ...readLoadPrefs(),
    estimate: null,
    estimateError: null,
    error: null,
    crashed: null,
    orphanGeneration: null,
    setStatus: (status) => set({ status }),
    setHello: (h) =>
      set({
        hello: h,
        backend: h.backend,
        gpus: h.gpus ?? [],
        defaultModel: h.defaultModel,
        recentModels: h.recentModels,
        model: h.model,
        crashed: null,
      }),
    setModel: (model) => set({ model }),
    setReleasedBytes: (releasedBytes) => set((s) => (s.model ? { model: { ...s.model, releasedBytes } } : {})),
    setLoading: (loading) => set({ loading }),
    setPreparing: (preparing) => set({ preparing }),
    setPathInput: (pathInput) => set({ pathInput }),
    setKvCache: (kvCache) =>
      set((s) => {
        savePrefs(LOAD_PREFS_KEY, { kvCache, weights: s.weights, contextLength: s.contextLength });
        return { kvCache };
      }),
    setWeights: (weights) =>
      set((s) => {
        savePrefs(LOAD_PREFS_KEY, { kvCache: s.kvCache, weights, contextLength: s.contextLength });
        return { weights };
      }),
    setContextLength: (contextLength) =>
      set((s) => {
        savePrefs(LOAD_PREFS_KEY, { kvCache: s.kvCache, weights: s.weights, contextLength });
        return { contextLength };
      }),
    setEstimate: (estimate, estimateError = null) => set({ estimate, estimateError }),
    showError: (context, e) =>
      set({ error: { context, code: e.code, message: e.message, ...(e.file ? { file: e.file } : {}) } }),
    clearError: () => set({ error: null }),
    setCrashed: (crashed) => set({ crashed }),
    setOrphan: (orphanGeneration) => set({ orphanGeneration }),
    setCached: (cached) => set({ cached }),
    addRecent: (path) =>
      set((s) => ({ recentModels: [path, ...s.recentModels.filter((p) => p !== path)].slice(0, 12) })),
  }));
}

/** "23.6 MB", "1.21 GB". */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return "—";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  let v = n;
  while (Math.abs(v) >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${v.toFixed(i === 0 ? 0 : v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[i]}`;
}

/** "5.9M", "494M", "1.24B". */
export function formatCount(n: number): string {
  if (!Number.isFinite(n)) return "—";
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e8 ? 0 : 1)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)}K`;
  return String(n);
}
