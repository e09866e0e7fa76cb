// `hire bench`: decode and prefill speed at batch 1 against this machine's memory roofline.
// Decode is memory-bound: every token streams every weight once, so the floor on time per token
// is weight bytes ÷ read bandwidth. The bandwidth probe runs in the same process, interleaved with
// the model runs, so the ratio holds even on a noisy machine.
import { native } from "../native/addon.js";
import type { LoadedModel } from "../loader/model-folder.js";
import { Rng, argmax } from "./sampler.js";
import { KVCache, MAX_BATCH, Transformer, Workspace } from "./transformer.js";
import { CpuBackend } from "../backend/cpu.js";

export interface BenchOptions {
  promptTokens?: number;
  decodeTokens?: number;
  /** Repeat the decode measurement and keep the best run (default 3). */
  repeats?: number;
  threads?: number;
  /** Bytes streamed by the bandwidth probe (default 512 MiB, well beyond any cache). */
  probeBytes?: number;
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
  /** Time per token at the roofline ÷ measured time per token, in percent. */
  percent_of_roofline: number;
}

export function benchmark(model: LoadedModel, o: BenchOptions = {}): BenchResult {
  const promptTokens = o.promptTokens ?? 128;
  const decodeTokens = o.decodeTokens ?? 32;
  const repeats = o.repeats ?? 3;
  const probeBytes = o.probeBytes ?? 512 * 1024 * 1024;
  const backend = new CpuBackend(o.threads);
  const c = model.config;
  const ctx = Math.min(c.maxPositions, promptTokens + decodeTokens + 1);
  const t = new Transformer(backend, c, model.weights, new Workspace(backend, c, model.weights));
  const cache = new KVCache(backend, c, ctx);
  const rng = new Rng(1234);
  const prompt = Array.from({ length: Math.min(promptTokens, ctx - decodeTokens - 1) }, () =>
    Math.floor(rng.next() * c.vocab),
  );

  const prefill = () => {
    let logits: Float32Array | null = null;
    for (let p = 0; p < prompt.length; p += MAX_BATCH) {
      const chunk = prompt.slice(p, p + MAX_BATCH);
      logits = t.forward(chunk, p, cache, undefined, p + chunk.length === prompt.length);
    }
    return logits!;
  };
  const decode = (first: number) => {
    let id = first;
    for (let i = 0; i < decodeTokens; i++) id = argmax(t.forward([id], prompt.length + i, cache)!);
  };

  // Warm-up: faults the mapped weights in and settles the thread pool.
  decode(argmax(prefill()));

  let bandwidth = native().readBandwidth(probeBytes, 3);
  let bestPrefillMs = Infinity;
  let bestDecodeMs = Infinity;
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    const first = argmax(prefill());
    const t1 = performance.now();
    decode(first);
    const t2 = performance.now();
    bestPrefillMs = Math.min(bestPrefillMs, t1 - t0);
    bestDecodeMs = Math.min(bestDecodeMs, t2 - t1);
    bandwidth = Math.max(bandwidth, native().readBandwidth(probeBytes, 1));
  }
  const msPerToken = bestDecodeMs / decodeTokens;
  const effective = model.weightBytesPerToken / (msPerToken * 1e6);
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
    decode_tokens_per_s: 1000 / msPerToken,
    decode_ms_per_token: msPerToken,
    weight_bytes_per_token: model.weightBytesPerToken,
    effective_read_gb_per_s: effective,
    measured_read_bandwidth_gb_per_s: bandwidth,
    percent_of_roofline: (100 * effective) / bandwidth,
  };
}
