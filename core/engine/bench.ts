// `hire bench`: decode and prefill speed at batch 1 against this machine's memory roofline, for
// the dense path and, with `methods`, for sparse methods interleaved in the same run.
//
// Decode is memory-bound: every token streams the weights it uses once, so the floor on time per
// token is bytes read ÷ read bandwidth. The bandwidth probe runs in the same process between the
// model runs, and every method is measured round-robin, so ratios hold on a noisy machine.
import { native } from "../native/addon.js";
import type { LoadedModel } from "../loader/model-folder.js";
import { Rng, argmax } from "./sampler.js";
import { KVCache, MAX_BATCH, Transformer, type ForwardReport } from "./transformer.js";
import { CpuBackend } from "../backend/cpu.js";
import { Sparsifier } from "../sparse/sparsifier.js";
import type { DeepPartial, FfnMethod, SparsitySettings } from "../sparse/settings.js";

export interface BenchOptions {
  promptTokens?: number;
  decodeTokens?: number;
  /** Rounds over all methods; each method keeps its best round (default 3). */
  repeats?: number;
  threads?: number;
  /** Bytes streamed by the bandwidth probe (default 512 MiB, well beyond any cache). */
  probeBytes?: number;
  /** Sparse FFN methods to compare with dense (each at every k of `ffnK`). */
  methods?: FfnMethod[];
  ffnK?: number[];
  /** Other sparsity settings for the sparse rows (oversample, predictor, head, shards). */
  sparsity?: DeepPartial<SparsitySettings>;
}

export interface MethodRow {
  method: string;
  ffn_k: number | null;
  head: string;
  decode_tokens_per_s: number;
  decode_ms_per_token: number;
  /** Decode tokens/s over the dense row's, in the same run. */
  speedup: number;
  bytes_per_token: number;
  effective_read_gb_per_s: number;
  /** Bytes this method actually read per token ÷ bandwidth, against its measured time per token. */
  percent_of_roofline: number;
}

export interface BenchResult {
  model: string;
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
  effective_read_gb_per_s: number;
  measured_read_bandwidth_gb_per_s: number;
  /** Time per token at the roofline ÷ measured time per token, in percent (dense). */
  percent_of_roofline: number;
  rows: MethodRow[];
}

interface Config {
  label: string;
  ffnK: number | null;
  head: string;
  update: DeepPartial<SparsitySettings>;
  bestMs: number;
  bytes: number;
}

export function benchmark(model: LoadedModel, o: BenchOptions = {}): BenchResult {
  const promptTokens = o.promptTokens ?? 128;
  const decodeTokens = o.decodeTokens ?? 32;
  const repeats = o.repeats ?? 3;
  const probeBytes = o.probeBytes ?? 512 * 1024 * 1024;
  const backend = new CpuBackend(o.threads);
  const c = model.config;
  const ctx = Math.min(c.maxPositions, promptTokens + decodeTokens + 1);
  const t = new Transformer(backend, c, model.weights);
  const sparsifier = new Sparsifier(t);
  const cache = new KVCache(backend, c, ctx);
  const rng = new Rng(1234);
  const prompt = Array.from({ length: Math.min(promptTokens, ctx - decodeTokens - 1) }, () =>
    Math.floor(rng.next() * c.vocab),
  );

  const dense: Config = {
    label: "dense",
    ffnK: null,
    head: "dense",
    update: { ffn: { method: "dense" }, head: { method: "dense" }, auditEvery: 0 },
    bestMs: Infinity,
    bytes: 0,
  };
  const configs: Config[] = [dense];
  const head = o.sparsity?.head?.method ?? "dense";
  for (const method of o.methods ?? []) {
    if (method === "dense") continue;
    for (const k of o.ffnK ?? [0.1]) {
      configs.push({
        label: head === "hire" ? `${method}+head` : method,
        ffnK: k,
        head,
        update: { ...o.sparsity, ffn: { ...o.sparsity?.ffn, method, k }, auditEvery: 0 },
        bestMs: Infinity,
        bytes: 0,
      });
    }
  }

  const prefill = () => {
    let logits: Float32Array | null = null;
    sparsifier.beginPrefill();
    for (let p = 0; p < prompt.length; p += MAX_BATCH) {
      const chunk = prompt.slice(p, p + MAX_BATCH);
      logits = t.forward(chunk, p, cache, undefined, p + chunk.length === prompt.length);
    }
    return logits!;
  };
  /** Decode `decodeTokens` tokens; returns weight bytes read per token (from the reports). */
  const decode = (first: number): number => {
    let id = first;
    let bytes = 0;
    const report: ForwardReport = { tokens: 0, layers: [], outputMs: 0 };
    for (let i = 0; i < decodeTokens; i++) {
      sparsifier.beginToken();
      report.head = undefined;
      id = argmax(t.forward([id], prompt.length + i, cache, report)!);
      bytes += model.weightBytesPerToken;
      // forward() gives every layer a fresh report; a dense layer has no ffn telemetry.
      for (const l of report.layers) if (l.ffn) bytes += l.ffn.bytes - l.ffn.denseBytes;
      const head = (report as ForwardReport).head; // set by forward() (TS cannot see through the call)
      if (head) bytes += head.bytes - head.denseBytes;
    }
    return bytes / decodeTokens;
  };

  // Warm-up: faults the mapped weights in, builds every method's predictors, settles the pool.
  for (const cfg of configs) {
    sparsifier.update(cfg.update);
    decode(argmax(prefill()));
  }
  sparsifier.update(dense.update);

  let bandwidth = native().readBandwidth(probeBytes, 3);
  let bestPrefillMs = Infinity;
  for (let r = 0; r < repeats; r++) {
    for (const cfg of configs) {
      sparsifier.update(cfg.update);
      const t0 = performance.now();
      const first = argmax(prefill());
      const t1 = performance.now();
      cfg.bytes = decode(first);
      cfg.bestMs = Math.min(cfg.bestMs, performance.now() - t1);
      if (cfg === dense) bestPrefillMs = Math.min(bestPrefillMs, t1 - t0);
    }
    bandwidth = Math.max(bandwidth, native().readBandwidth(probeBytes, 1));
  }
  sparsifier.update(dense.update);

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
      bytes_per_token: cfg.bytes,
      effective_read_gb_per_s: effective,
      percent_of_roofline: (100 * effective) / bandwidth,
    };
  });
  const d = rows[0];
  const info = native().cpuInfo();
  return {
    model: model.dir,
    architecture: c.architecture,
    dtype: c.dtype ?? model.weights.embed.dtype,
    threads: backend.threads,
    kernels: info.path,
    prompt_tokens: prompt.length,
    decode_tokens: decodeTokens,
    prefill_tokens_per_s: (prompt.length * 1000) / bestPrefillMs,
    decode_tokens_per_s: d.decode_tokens_per_s,
    decode_ms_per_token: d.decode_ms_per_token,
    weight_bytes_per_token: model.weightBytesPerToken,
    effective_read_gb_per_s: d.effective_read_gb_per_s,
    measured_read_bandwidth_gb_per_s: bandwidth,
    percent_of_roofline: d.percent_of_roofline,
    rows,
  };
}
