// `hire bench`: decode and prefill speed at batch 1 against this machine's memory roofline, for
// the dense path and, with `methods`, for sparse methods interleaved in the same run.
//
// Decode is memory-bound: every token streams the weights it uses once, so the floor on time per
// token is bytes read ÷ read bandwidth. The bandwidth probe runs in the same process between the
// model runs, and every method is measured round-robin, so ratios hold on a noisy machine.
// `benchmarkWithPeers` adds other engines (core/peers: ONNX Runtime dense and HiRE, llama.cpp) to
// the same rounds, on the same prompt ids and decode length; each peer module is imported only
// when named, so a missing one (or one that cannot run here) is a skipped row.
import { native } from "../native/addon.js";
import type { LoadedModel } from "../loader/model-folder.js";
import { Rng, argmax } from "./sampler.js";
import { KVCache, Transformer, kvReadBytes, type ForwardReport } from "./transformer.js";
import { CpuBackend } from "../backend/cpu.js";
import { CudaBackend } from "../backend/cuda.js";
import type { Backend, KvDtype } from "../backend/backend.js";
import { backendForModel, type BackendChoice } from "../backend/select.js";
import { Sparsifier } from "../sparse/sparsifier.js";
import type { DeepPartial, FfnMethod, SparsitySettings } from "../sparse/settings.js";
import type { Peer, PeerOpenResult, PeerRun } from "../peers/peer.js";
import { bytesRead } from "../sparse/telemetry.js";
import { attentionBytes, firstFfn, layerFfnBytes } from "../arch/config.js";
import { setTimeout as sleep } from "node:timers/promises";
import { readFileSync, readdirSync } from "node:fs";
import { isQuantDType } from "../loader/weight-format.js";
import { quantizedFrom } from "../gguf/block-weights.js";

/**
 * The probe's buffer: 512 MiB, or four times the last-level cache when that is larger, so the probe
 * reads DRAM and not the cache (this project's Xeon VMs report a 480 MiB L3; a 512 MiB probe there
 * read 34.6-38.6 GB/s from run to run).
 */
export function defaultProbeBytes(llcBytes: number): number {
  return Math.max(512 * 1024 * 1024, 4 * llcBytes);
}

/** The largest CPU cache sysfs reports for cpu0 ("491520K" and the like), or 0 where it cannot tell. */
export function lastLevelCacheBytes(dir = "/sys/devices/system/cpu/cpu0/cache"): number {
  let best = 0;
  try {
    for (const entry of readdirSync(dir)) {
      if (!entry.startsWith("index")) continue;
      best = Math.max(best, parseCacheSize(readFileSync(`${dir}/${entry}/size`, "utf8")));
    }
  } catch {
    // no sysfs (not Linux) or an unreadable entry: what was read so far
  }
  return best;
}

/** "491520K" -> bytes; "32M", "1G" likewise; anything else 0. */
export function parseCacheSize(text: string): number {
  const m = /^\s*(\d+)\s*([KMG]?)\s*$/i.exec(text);
  if (!m) return 0;
  const unit = { "": 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3 }[m[2].toUpperCase() as "" | "K" | "M" | "G"];
  return Number(m[1]) * unit;
}

export interface BenchOptions {
  promptTokens?: number;
  /** KV-cache element type (default "f32"). */
  kvCache?: KvDtype;
  decodeTokens?: number;
  /** Rounds over all methods; each method keeps its best round (default 3). */
  repeats?: number;
  threads?: number;
  /** What runs the model (default: HIRE_BACKEND, else auto: the GPU when there is one). */
  backend?: BackendChoice;
  /** Bytes streamed by the bandwidth probe (default: defaultProbeBytes(), or 4 GiB on a GPU). */
  probeBytes?: number;
  /** Sparse FFN methods to compare with dense (each at every k of `ffnK`). */
  methods?: FfnMethod[];
  ffnK?: number[];
  /** Other sparsity settings for the sparse rows (oversample, predictor, head, shards). */
  sparsity?: DeepPartial<SparsitySettings>;
}

export interface MethodRow {
  method: string;
  /** The load this row ran on (`benchmarkLoads`, e.g. "file" or "int8"); absent for a single load. */
  weights?: string;
  ffn_k: number | null;
  head: string;
  decode_tokens_per_s: number;
  decode_ms_per_token: number;
  /** Decode tokens/s over the dense row's, in the same run. */
  speedup: number;
  /** Weight bytes this method read per token, plus kv_bytes_per_token. */
  bytes_per_token: number;
  effective_read_gb_per_s: number;
  /** Bytes this method actually read per token ÷ bandwidth, against its measured time per token. */
  percent_of_roofline: number;
  /**
   * Of decode_ms_per_token, the time between the step's first and last timing marks (the layers and
   * the output layer): GPU time where steps replay on a GPU, so the rest is the host's share
   * (launch, read-back, sampling) during which the GPU waits.
   */
  step_ms_per_token: number;
  /** Decode steps of the last round that replayed a recorded step (GPU backends), and why recording failed, if it did. */
  replayed_steps: number;
  graph_failure?: string;
  /** Where the best round's time and bytes went, per token (see STEP_NAMES). */
  steps: StepRate[];
}

/**
 * The parts of a decode token the reports time: the attention blocks (projections and the KV cache),
 * the FFNs — for HiRE split into its predictor (with the top-k' selection), its exact rows (with the
 * exact top-k) and its down product — and the output layer. Embedding, norms and residual adds are
 * in no step (norm weights are not counted as read, like weightBytesPerToken; their time is in
 * decode_ms_per_token).
 */
export const STEP_NAMES = ["attention", "ffn", "predictor", "exact rows", "down product", "output layer"] as const;
export type StepName = (typeof STEP_NAMES)[number];

export interface StepRate {
  step: StepName;
  ms_per_token: number;
  bytes_per_token: number;
  gb_per_s: number;
  /** gb_per_s against the measured streaming bandwidth. */
  percent_of_roofline: number;
}

type StepTotals = Map<StepName, { ms: number; bytes: number }>;

function addStep(steps: StepTotals, name: StepName, ms: number, bytes: number): void {
  const t = steps.get(name) ?? { ms: 0, bytes: 0 };
  t.ms += ms;
  t.bytes += bytes;
  steps.set(name, t);
}

/** One token's steps into `steps`, from its report (kv: the KV-cache bytes attention reads a token). */
function addTokenSteps(steps: StepTotals, report: ForwardReport, m: LoadedModel, kv: number): void {
  const w = m.weights;
  addStep(steps, "attention", 0, kv);
  report.layers.forEach((l, i) => {
    const lw = w.layers[i];
    addStep(steps, "attention", l.attentionMs, attentionBytes(lw));
    const f = l.ffn;
    if (f?.method !== "hire") {
      addStep(steps, "ffn", l.ffnMs, f ? f.bytes : layerFfnBytes(lw, m.config));
      return;
    }
    // A HiRE candidate's exact rows are its W_gate and W_up rows (W_in's when not gated); a selected
    // neuron's down product reads its W_down column; the predictor is the rest of what the layer read
    // (a mixture's router too; its experts' neurons all read alike, but a shared expert is counted as one).
    const ffn = firstFfn(lw);
    const F = ffn.up.w.rows;
    const exact = (f.candidates * (ffn.up.w.byteLength + (ffn.gate?.w.byteLength ?? 0))) / F;
    // A quantized W_down is read from HiRE's transposed bf16 copy (2 bytes a value).
    const downColumn = isQuantDType(ffn.down.w.dtype) ? 2 * ffn.down.w.rows : ffn.down.w.byteLength / F;
    const down = f.k * downColumn;
    addStep(steps, "predictor", f.predictorMs, f.bytes - exact - down);
    addStep(steps, "exact rows", f.exactMs, exact);
    addStep(steps, "down product", f.downMs, down);
  });
  addStep(steps, "output layer", report.outputMs, report.head ? report.head.bytes : w.head.w.byteLength);
}

export interface BenchResult {
  model: string;
  /** What ran the model (Backend.name). */
  backend: string;
  architecture: string;
  dtype: string;
  threads: number;
  kernels: string;
  prompt_tokens: number;
  decode_tokens: number;
  prefill_tokens_per_s: number;
  decode_tokens_per_s: number;
  decode_ms_per_token: number;
  weight_bytes_per_token: number;
  /** The KV cache's element type. */
  kv_cache: KvDtype;
  /**
   * Keys and values attention read per decode token (the mean over the decode positions), the same
   * for every method; each row's bytes_per_token and the dense roofline include them.
   */
  kv_bytes_per_token: number;
  effective_read_gb_per_s: number;
  measured_read_bandwidth_gb_per_s: number;
  /** The probe reading one in five `gather_chunk_bytes` pieces (one exact neuron's rows), ascending. */
  measured_gather_bandwidth_gb_per_s: number;
  gather_chunk_bytes: number;
  /** Time per token at the roofline ÷ measured time per token, in percent (dense). */
  percent_of_roofline: number;
  rows: MethodRow[];
  /** Other engines on the same model (`benchmarkWithPeers`). */
  peers?: PeerRow[];
}

interface Config {
  label: string;
  ffnK: number | null;
  head: string;
  update: DeepPartial<SparsitySettings>;
  bestMs: number;
  /** Summed step time (layers + output layer) of the best round, and its steps. */
  bestStepMs: number;
  bestSteps: StepTotals;
  bytes: number;
  replayed: number;
  graphFailure?: string;
  /** Greedy ids of the first measured round: the prefill's token, then one per decode step. */
  ids: number[];
}

/**
 * One benchmark: the model, the prompt, our configurations and their best times so far. `round()`
 * measures every configuration once; callers interleave other work (peers) between rounds.
 */
class BenchRun {
  readonly prompt: number[];
  readonly decodeTokens: number;
  readonly configs: Config[];
  readonly dense: Config;
  readonly backend: Backend;
  private readonly t: Transformer;
  private readonly sparsifier: Sparsifier;
  private readonly cache: KVCache;
  private readonly kvCache: KvDtype;
  /** kvReadBytes over the decode positions, per token: the same for every method and round. */
  private readonly kvBytesPerToken: number;
  private readonly probeBytes: number;
  private bandwidth = 0;
  /** The same probe reading one in five neuron-row-sized pieces: the ceiling for HiRE's gathers. */
  private gatherBandwidth = 0;
  private readonly gatherChunk: number;
  private bestPrefillMs = Infinity;

  constructor(
    private readonly model: LoadedModel,
    o: BenchOptions,
  ) {
    const promptTokens = o.promptTokens ?? 128;
    this.decodeTokens = o.decodeTokens ?? 32;
    this.backend = backendForModel(model, o.backend, o.threads);
    // A GPU's probe reads device memory: 4 GiB, far past its L2 (60 MB on an H200).
    this.probeBytes =
      o.probeBytes ?? (this.backend instanceof CudaBackend ? 4 * 1024 ** 3 : defaultProbeBytes(lastLevelCacheBytes()));
    const c = model.config;
    // One exact neuron as HiRE reads it: its W_gate and W_up rows (interleaved), or its W_in row.
    const up = firstFfn(model.weights.layers[0]).up.w;
    this.gatherChunk = (c.gatedFfn ? 2 : 1) * (up.byteLength / up.rows);
    const ctx = Math.min(c.maxPositions, promptTokens + this.decodeTokens + 1);
    this.t = new Transformer(this.backend, c, model.weights);
    this.sparsifier = new Sparsifier(this.t, { releaseFileLayout: false });
    this.kvCache = o.kvCache ?? "f32";
    this.cache = new KVCache(this.backend, c, ctx, this.kvCache);
    const rng = new Rng(1234);
    this.prompt = Array.from({ length: Math.min(promptTokens, ctx - this.decodeTokens - 1) }, () =>
      Math.floor(rng.next() * c.vocab),
    );
    let kvBytes = 0;
    for (let i = 0; i < this.decodeTokens; i++) kvBytes += kvReadBytes(c, this.prompt.length + i, this.kvCache);
    this.kvBytesPerToken = kvBytes / this.decodeTokens;

    this.dense = {
      label: "dense",
      ffnK: null,
      head: "dense",
      update: { ffn: { method: "dense" }, head: { method: "dense" }, auditEvery: 0 },
      bestMs: Infinity,
      bestStepMs: 0,
      bestSteps: new Map(),
      bytes: 0,
      replayed: 0,
      ids: [],
    };
    this.configs = [this.dense];
    const head = o.sparsity?.head?.method ?? "dense";
    for (const method of o.methods ?? []) {
      if (method === "dense") continue;
      for (const k of o.ffnK ?? [0.1]) {
        this.configs.push({
          label: head === "hire" ? `${method}+head` : method,
          ffnK: k,
          head,
          update: { ...o.sparsity, ffn: { ...o.sparsity?.ffn, method, k }, auditEvery: 0 },
          bestMs: Infinity,
          bestStepMs: 0,
          bestSteps: new Map(),
          bytes: 0,
          replayed: 0,
          ids: [],
        });
      }
    }
  }

  private prefill(): Float32Array {
    const { t, sparsifier, prompt, cache } = this;
    let logits: Float32Array | null = null;
    sparsifier.beginPrefill();
    const batch = t.ws.batch;
    for (let p = 0; p < prompt.length; p += batch) {
      const chunk = prompt.slice(p, p + batch);
      logits = t.forward(chunk, p, cache, undefined, p + chunk.length === prompt.length);
    }
    return logits!;
  }

  /**
   * Decode `decodeTokens` tokens after `first`; returns the bytes read per token (weights, from the
   * reports, and the KV cache) and the summed time inside the steps (ms, from the reports' layer and
   * output times).
   */
  private decode(first: number, ids: number[]): { bytes: number; stepMs: number; steps: StepTotals } {
    const { t, sparsifier, model, prompt, cache, decodeTokens } = this;
    let id = first;
    let bytes = 0;
    let stepMs = 0;
    const steps: StepTotals = new Map();
    const report: ForwardReport = { tokens: 0, layers: [], outputMs: 0 };
    for (let i = 0; i < decodeTokens; i++) {
      sparsifier.beginToken();
      report.head = undefined;
      id = t.forwardGreedy([id], prompt.length + i, cache, report);
      ids.push(id);
      // forward() gives every layer a fresh report and sets report.head when the head is sparse.
      bytes += bytesRead(report, model.weightBytesPerToken);
      stepMs += report.outputMs;
      for (const l of report.layers) stepMs += l.attentionMs + l.ffnMs;
      addTokenSteps(steps, report, model, this.kvBytesPerToken);
    }
    return { bytes: bytes / decodeTokens + this.kvBytesPerToken, stepMs, steps };
  }

  /** Faults the mapped weights in, builds every method's predictors, settles the pool. */
  warmup(): void {
    for (const cfg of this.configs) {
      this.sparsifier.update(cfg.update);
      this.decode(argmax(this.prefill()), []);
    }
    this.sparsifier.update(this.dense.update);
    this.probe(3);
  }

  /** CPU threads (the GPU backend still runs the host side on them). */
  get threads(): number {
    return this.backend instanceof CpuBackend ? this.backend.threads : native().getThreads();
  }

  /** Best-so-far streaming and gather bandwidth, measured between the model runs. */
  private probe(reps: number): void {
    if (this.backend instanceof CudaBackend) {
      // Device memory is the roofline of GPU decode. No gather probe there: a warp reads a whole
      // neuron row, so the gathered rows stream like the rest (see the GPU section of the README).
      this.bandwidth = Math.max(this.bandwidth, this.backend.readBandwidth(this.probeBytes, reps));
      return;
    }
    this.bandwidth = Math.max(this.bandwidth, native().readBandwidth(this.probeBytes, reps));
    this.gatherBandwidth = Math.max(
      this.gatherBandwidth,
      native().readBandwidth(this.probeBytes, reps, this.gatherChunk),
    );
  }

  /** Every configuration once (each keeps its best time), then one bandwidth probe. */
  round(): void {
    for (const cfg of this.configs) {
      this.sparsifier.update(cfg.update);
      const t0 = performance.now();
      const first = argmax(this.prefill());
      const t1 = performance.now();
      const ids = [first];
      const replays = this.t.replays;
      const { bytes, stepMs, steps } = this.decode(first, ids);
      cfg.bytes = bytes;
      cfg.replayed = this.t.replays - replays;
      cfg.graphFailure = this.t.graphFailure(this.cache);
      const ms = performance.now() - t1;
      if (ms < cfg.bestMs) [cfg.bestMs, cfg.bestStepMs, cfg.bestSteps] = [ms, stepMs, steps];
      if (cfg.ids.length === 0) cfg.ids = ids;
      if (cfg === this.dense) this.bestPrefillMs = Math.min(this.bestPrefillMs, t1 - t0);
    }
    this.probe(1);
  }

  result(peers?: PeerRow[]): BenchResult {
    const { model, configs, dense, decodeTokens, prompt, backend } = this;
    this.sparsifier.update(dense.update);
    const c = model.config;
    const rows = configs.map((cfg): MethodRow => {
      const ms = cfg.bestMs / decodeTokens;
      const effective = cfg.bytes / (ms * 1e6);
      return {
        method: cfg.label,
        ffn_k: cfg.ffnK,
        head: cfg.head,
        decode_tokens_per_s: 1000 / ms,
        decode_ms_per_token: ms,
        speedup: dense.bestMs / cfg.bestMs,
        step_ms_per_token: cfg.bestStepMs / decodeTokens,
        bytes_per_token: cfg.bytes,
        effective_read_gb_per_s: effective,
        percent_of_roofline: (100 * effective) / this.bandwidth,
        replayed_steps: cfg.replayed,
        ...(cfg.graphFailure !== undefined && { graph_failure: cfg.graphFailure }),
        steps: STEP_NAMES.filter((n) => cfg.bestSteps.has(n)).map((step): StepRate => {
          const t = cfg.bestSteps.get(step)!;
          const gbPerS = t.ms > 0 ? t.bytes / (t.ms * 1e6) : 0;
          return {
            step,
            ms_per_token: t.ms / decodeTokens,
            bytes_per_token: t.bytes / decodeTokens,
            gb_per_s: gbPerS,
            percent_of_roofline: (100 * gbPerS) / this.bandwidth,
          };
        }),
      };
    });
    const d = rows[0];
    const info = native().cpuInfo();
    const format = model.weightFormat === "file" ? undefined : model.weightFormat;
    return {
      model: model.dir,
      backend: backend.name,
      architecture: c.architecture,
      // A model loaded with int8 or int4 weights says so, with the dtype its files hold (or the
      // GGUF blocks its matrices came from).
      dtype: format
        ? `${format} weights ${quantizedFrom(c.dtype ?? model.weights.head.w.stored?.dtype ?? "the file", model.blockCount)}`
        : (c.dtype ?? model.weights.embed.dtype),
      threads: this.threads,
      kernels: backend instanceof CudaBackend ? "cuda" : info.path,
      prompt_tokens: prompt.length,
      decode_tokens: decodeTokens,
      prefill_tokens_per_s: (prompt.length * 1000) / this.bestPrefillMs,
      decode_tokens_per_s: d.decode_tokens_per_s,
      decode_ms_per_token: d.decode_ms_per_token,
      weight_bytes_per_token: model.weightBytesPerToken,
      kv_cache: this.kvCache,
      kv_bytes_per_token: this.kvBytesPerToken,
      effective_read_gb_per_s: d.effective_read_gb_per_s,
      measured_read_bandwidth_gb_per_s: this.bandwidth,
      measured_gather_bandwidth_gb_per_s: this.gatherBandwidth,
      gather_chunk_bytes: this.gatherChunk,
      percent_of_roofline: d.percent_of_roofline,
      rows,
      ...(peers && { peers }),
    };
  }
}

export function benchmark(model: LoadedModel, o: BenchOptions = {}): BenchResult {
  const run = new BenchRun(model, o);
  run.warmup();
  for (let r = 0; r < (o.repeats ?? 3); r++) run.round();
  return run.result();
}

/**
 * The bench over several loads of one model (`hire bench --weights file,int8`): each load's rows,
 * rounds interleaved load by load so that every row sees the same memory phases, every row's speedup
 * over the first load's dense row. The header (prefill, bandwidth, ...) is the first load's.
 */
export function benchmarkLoads(loads: { weights: string; model: LoadedModel }[], o: BenchOptions = {}): BenchResult {
  if (loads.length === 1) return benchmark(loads[0].model, o);
  const runs = loads.map((l) => new BenchRun(l.model, o));
  for (const run of runs) run.warmup();
  for (let r = 0; r < (o.repeats ?? 3); r++) for (const run of runs) run.round();
  const results = runs.map((run) => run.result());
  const baseMs = results[0].rows[0].decode_ms_per_token;
  const rows = results.flatMap((res, i) =>
    res.rows.map((row) => ({ ...row, weights: loads[i].weights, speedup: baseMs / row.decode_ms_per_token })),
  );
  return { ...results[0], dtype: loads.map((l, i) => `${l.weights}: ${results[i].dtype}`).join("; "), rows };
}

// ---- peers: other engines on the same model, measured round-robin with our rows -------------

/** Pause before each engine's turn in a peers round (longer than any peer's thread spin-wait). */
const PEER_SETTLE_MS = 200;

/** Peers `hire bench --peers` knows: module (loaded only when asked) and how to open it. */
export const PEER_NAMES = ["ort", "ort-hire", "llamacpp"] as const;

export interface PeerBenchOptions {
  /** Peer names, run in this order after our rows each round (see PEER_NAMES). */
  peers: string[];
  /** ONNX Runtime execution provider for the ort peers (default cpu). */
  ortEp?: "cpu" | "cuda" | "webgpu";
  /** Where peers cache their exported models (default: each peer's own). */
  cacheDir?: string;
}

export interface PeerRow {
  /** The peer's name ("ort", "ort-hire", "llamacpp"). */
  method: string;
  /** Why the peer did not run; the numbers are then null. */
  skipped?: string;
  detail: string;
  decode_tokens_per_s: number | null;
  decode_ms_per_token: number | null;
  prefill_tokens_per_s: number | null;
  /** Peer tokens/s over our dense row's, in the same run (as `speedup` of our rows). */
  speedup: number | null;
  /** The row of ours it is compared with: our HiRE row for ort-hire when there is one, else dense. */
  vs_row: string | null;
  /** That row's tokens/s over the peer's: > 1 means ours decodes faster. */
  vs_ours: number | null;
  /** Leading greedy ids equal to that row's (a check that it ran the same model), out of ids_compared. */
  ids_agree: number | null;
  ids_compared: number | null;
  /**
   * Fed that row's ids (teacher-forced, Peer.follow), the steps whose greedy pick is that row's, out
   * of ids_compared: free-running ids part for good at the first near-tie; null where the peer cannot.
   */
  steps_agree: number | null;
}

type PeerModule = { open: (model: LoadedModel) => Promise<PeerOpenResult> };

/** Load a peer's module by name with a dynamic import, so a missing module is a skipped row. */
async function loadPeer(
  name: string,
  o: PeerBenchOptions & BenchOptions,
  threads: number,
): Promise<PeerModule | string> {
  const hire: DeepPartial<SparsitySettings> = {
    ...o.sparsity,
    ffn: { ...o.sparsity?.ffn, method: "hire", k: o.ffnK?.[0] ?? o.sparsity?.ffn?.k },
  };
  const table: Record<string, { file: string; fn: string; opts: Record<string, unknown> }> = {
    ort: { file: "ort.js", fn: "openOrtPeer", opts: { ep: o.ortEp, threads, cacheDir: o.cacheDir } },
    "ort-hire": { file: "ort.js", fn: "openOrtPeer", opts: { hire, ep: o.ortEp, threads, cacheDir: o.cacheDir } },
    llamacpp: { file: "llamacpp.js", fn: "openLlamaCppPeer", opts: { threads, cacheDir: o.cacheDir } },
  };
  const entry = table[name];
  if (!entry) return `unknown peer "${name}" (known: ${PEER_NAMES.join(", ")})`;
  let mod: Record<string, unknown>;
  try {
    const spec: string = `../peers/${entry.file}`; // a variable: the module may not exist in this build
    mod = (await import(spec)) as Record<string, unknown>;
  } catch (e) {
    return `core/peers/${entry.file.replace(/\.js$/, ".ts")} is not available (${(e as Error).message.split("\n")[0]})`;
  }
  const open = mod[entry.fn];
  if (typeof open !== "function") return `core/peers/${entry.file} does not export ${entry.fn}`;
  return {
    open: (model) =>
      (open as (m: LoadedModel, opts: Record<string, unknown>) => Promise<PeerOpenResult>)(model, entry.opts),
  };
}

/** Leading positions where a and b agree. */
function agreeingPrefix(a: number[], b: number[]): number {
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
}

/**
 * `benchmark` plus peers: each round measures our rows, then every peer that opened, on the same
 * prompt ids and the same number of decode steps (a peer gets decodeTokens + 1 ids: the prompt
 * run's token, then decodeTokens one-token runs, as ours). Each row keeps its best round. A peer
 * that is unknown, missing, skipped or fails becomes a row with `skipped` and its reason.
 */
export async function benchmarkWithPeers(model: LoadedModel, o: BenchOptions & PeerBenchOptions): Promise<BenchResult> {
  const run = new BenchRun(model, o);
  interface Live {
    peer: Peer;
    best: PeerRun | null;
    row: PeerRow;
    /** Its greedy picks fed our row's ids (Peer.follow). */
    followed?: number[];
  }
  // The row of ours a peer is compared with: our HiRE row for ort-hire when there is one, else dense.
  const oursFor = (p: Live) =>
    (p.row.method === "ort-hire" ? run.configs.find((c) => c.label.startsWith("hire")) : undefined) ?? run.dense;
  const blank = (method: string, detail: string, skipped?: string): PeerRow => ({
    method,
    ...(skipped !== undefined && { skipped }),
    detail,
    decode_tokens_per_s: null,
    decode_ms_per_token: null,
    prefill_tokens_per_s: null,
    speedup: null,
    vs_row: null,
    vs_ours: null,
    ids_agree: null,
    steps_agree: null,
    ids_compared: null,
  });
  const rows: PeerRow[] = [];
  const live: Live[] = [];
  const n = run.decodeTokens + 1;
  const fail = (row: PeerRow, what: string, e: unknown) => {
    row.skipped = `${what}: ${(e instanceof Error ? e.message : String(e)).split("\n")[0]}`;
  };
  try {
    for (const name of o.peers) {
      const row = blank(name, "");
      rows.push(row);
      const mod = await loadPeer(name, o, run.threads);
      if (typeof mod === "string") {
        row.skipped = mod;
        continue;
      }
      try {
        const opened = await mod.open(model);
        if ("skipped" in opened) row.skipped = opened.skipped;
        else {
          row.detail = opened.peer.detail;
          live.push({ peer: opened.peer, best: null, row });
        }
      } catch (e) {
        fail(row, "failed to open", e);
      }
    }

    run.warmup();
    const decodePeer = async (p: Live) => {
      if (p.row.skipped) return;
      try {
        const r = await p.peer.decode(run.prompt, n);
        if (!p.best || r.tokensPerSecond > p.best.tokensPerSecond) p.best = { ...r, ids: p.best?.ids ?? r.ids };
      } catch (e) {
        fail(p.row, "failed to decode", e);
      }
    };
    // Each engine starts on a quiet machine: ONNX Runtime's and llama.cpp's worker threads spin for a
    // while after a call returns, and would otherwise steal a core from whichever engine runs next.
    const settle = () => sleep(PEER_SETTLE_MS);
    for (const p of live) {
      await settle();
      await decodePeer(p); // warm-up
    }
    for (const p of live) p.best = null;
    for (let r = 0; r < (o.repeats ?? 3); r++) {
      await settle();
      run.round();
      for (const p of live) {
        await settle();
        await decodePeer(p);
      }
    }
    for (const p of live) {
      if (p.row.skipped || !p.peer.follow) continue;
      try {
        p.followed = await p.peer.follow(run.prompt, oursFor(p).ids);
      } catch {
        // steps_agree stays null: the speed and free-running ids stand without it.
      }
    }
  } finally {
    for (const p of live) await p.peer.close().catch(() => undefined);
  }

  const dense = run.dense;
  const denseTps = (1000 * run.decodeTokens) / dense.bestMs;
  for (const p of live) {
    if (p.row.skipped || !p.best) continue;
    const ours = oursFor(p);
    const oursTps = (1000 * run.decodeTokens) / ours.bestMs;
    const tps = p.best.tokensPerSecond;
    Object.assign(p.row, {
      decode_tokens_per_s: tps,
      decode_ms_per_token: tps > 0 ? 1000 / tps : null,
      prefill_tokens_per_s: p.best.prefillTokensPerSecond ?? null,
      speedup: tps / denseTps,
      vs_row: ours.label,
      vs_ours: tps > 0 ? oursTps / tps : null,
      ids_agree: agreeingPrefix(p.best.ids, ours.ids),
      ids_compared: Math.min(p.best.ids.length, ours.ids.length),
      steps_agree: p.followed ? p.followed.filter((id, k) => id === ours.ids[k]).length : null,
    });
  }
  return run.result(rows);
}
