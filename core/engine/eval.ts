// `hire eval`: quality of each sparse method on a text — perplexity (teacher-forced, one token at
// a time through the decode path, so the sparse FFN and head are what is measured) and the mean
// recall@k of every layer's selection against the exact top-k (an audit on every token).
import { setImmediate as nextTurn } from "node:timers/promises";
import type { LoadedModel } from "../loader/model-folder.js";
import { KVCache, Transformer, type ForwardReport } from "./transformer.js";
import { backendForModel } from "../backend/select.js";
import { Sparsifier } from "../sparse/sparsifier.js";
import { logSumExp } from "./sampler.js";
import type { DeepPartial, SparsitySettings } from "../sparse/settings.js";
import { UsageError } from "../loader/errors.js";

export interface EvalConfig {
  label: string;
  ffnK: number | null;
  oversample: number | null;
  settings: DeepPartial<SparsitySettings>;
}

export interface EvalRow {
  method: string;
  ffn_k: number | null;
  oversample: number | null;
  tokens: number;
  perplexity: number;
  /** Mean recall@k over tokens, per layer (null for dense). */
  recall_per_layer: number[] | null;
  mean_recall: number | null;
  /** Output layer: share of tokens whose dense argmax was kept, and mean probability mass kept. */
  head_argmax_hit_rate: number | null;
  head_mass_covered: number | null;
}

export function evaluate(model: LoadedModel, text: string, configs: EvalConfig[], maxTokens = 512): EvalRow[] {
  const steps = evalSteps(model, text, configs, maxTokens);
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
  }
}

/** Progress of an evaluation: tokens scored so far, of all configurations together. */
export interface EvalProgress {
  done: number;
  total: number;
}

/**
 * evaluate() for a host that must stay responsive (the app): the event loop runs between tokens,
 * progress is reported, and an aborted `signal` stops it (an AbortError).
 */
export async function evaluateAsync(
  model: LoadedModel,
  text: string,
  configs: EvalConfig[],
  opts: { maxTokens?: number; onProgress?: (p: EvalProgress) => void; signal?: AbortSignal } = {},
): Promise<EvalRow[]> {
  const steps = evalSteps(model, text, configs, opts.maxTokens ?? 512);
  let last = 0;
  for (;;) {
    const r = steps.next();
    if (r.done) return r.value;
    const now = performance.now();
    if (now - last > 50 || r.value.done === r.value.total) {
      opts.onProgress?.(r.value);
      last = now;
    }
    await nextTurn();
    opts.signal?.throwIfAborted();
  }
}

/** The evaluation, one scored token at a time (yields progress; returns the rows). */
function* evalSteps(
  model: LoadedModel,
  text: string,
  configs: EvalConfig[],
  maxTokens: number,
): Generator<EvalProgress, EvalRow[]> {
  const ids = model.tokenizer.encode(text);
  const n = Math.min(ids.length, maxTokens, model.config.maxPositions);
  if (n < 2) throw new UsageError("the evaluation text must have at least 2 tokens");
  const backend = backendForModel(model);
  const c = model.config;
  const t = new Transformer(backend, c, model.weights);
  const cache = new KVCache(backend, c, n);
  const sparsifier = new Sparsifier(t, { releaseFileLayout: false });
  const headLogits = backend.alloc(c.vocab);
  const rows: EvalRow[] = [];
  const total = configs.length * (n - 1);
  for (const cfg of configs) {
    const sparse = cfg.settings.ffn?.method !== undefined && cfg.settings.ffn.method !== "dense";
    const head = cfg.settings.head?.method === "hire";
    sparsifier.update({ ffn: { method: "dense" }, head: { method: "dense" }, auditEvery: 0 });
    // The text is scored through the dense head (a HiRE head gives −∞ outside its candidates);
    // the HiRE head is measured on the same hidden states by probeHead.
    sparsifier.update({ ...cfg.settings, head: { ...cfg.settings.head, method: "dense" }, auditEvery: sparse ? 1 : 0 });
    let nll = 0;
    const recallSum = new Float64Array(c.layers);
    let headHits = 0;
    let headMass = 0;
    const report: ForwardReport = { tokens: 0, layers: [], outputMs: 0 };
    for (let i = 0; i < n - 1; i++) {
      sparsifier.beginToken();
      const logits = t.forward([ids[i]], i, cache, report)!;
      nll += logSumExp(logits) - logits[ids[i + 1]];
      report.layers.forEach((l, j) => (recallSum[j] += l.ffn?.recall ?? 0));
      if (head) {
        sparsifier.probeHead(t.ws.last, headLogits, report);
        headHits += report.head?.argmaxInCandidates ? 1 : 0;
        headMass += report.head?.massCovered ?? 0;
      }
      yield { done: rows.length * (n - 1) + i + 1, total };
    }
    const steps = n - 1;
    const perLayer = sparse ? Array.from(recallSum, (r) => r / steps) : null;
    rows.push({
      method: cfg.label,
      ffn_k: cfg.ffnK,
      oversample: cfg.oversample,
      tokens: steps,
      perplexity: Math.exp(nll / steps),
      recall_per_layer: perLayer,
      mean_recall: perLayer ? perLayer.reduce((a, b) => a + b, 0) / perLayer.length : null,
      head_argmax_hit_rate: head ? headHits / steps : null,
      head_mass_covered: head ? headMass / steps : null,
    });
  }
  return rows;
}

/** A small SVG: mean recall (left axis) and perplexity (right axis) against k, one line per method/oversample. */
export function evalPlot(rows: EvalRow[], title: string): string {
  const W = 640;
  const H = 360;
  const m = { l: 56, r: 64, t: 36, b: 44 };
  const sparse = rows.filter((r) => r.ffn_k !== null);
  const dense = rows.find((r) => r.ffn_k === null);
  const ks = [...new Set(sparse.map((r) => r.ffn_k!))].sort((a, b) => a - b);
  const ppl = rows.map((r) => r.perplexity).filter(Number.isFinite);
  const pMin = Math.min(...ppl);
  const pMax = Math.max(...ppl) * 1.02 + 1e-9;
  const x = (k: number) => m.l + (ks.length < 2 ? 0.5 : ks.indexOf(k) / (ks.length - 1)) * (W - m.l - m.r);
  const yR = (r: number) => m.t + (1 - r) * (H - m.t - m.b);
  const yP = (p: number) => m.t + (1 - (p - pMin) / (pMax - pMin || 1)) * (H - m.t - m.b);
  const groups = new Map<string, EvalRow[]>();
  for (const r of sparse) {
    const key = `${r.method} ×${r.oversample ?? 1}`;
    groups.set(key, [...(groups.get(key) ?? []), r]);
  }
  const colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf"];
  const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;");
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="${W / 2}" y="20" text-anchor="middle" font-size="14">${esc(title)}</text>`,
    `<line x1="${m.l}" y1="${H - m.b}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${m.l}" y1="${m.t}" x2="${m.l}" y2="${H - m.b}" stroke="black"/>`,
    `<line x1="${W - m.r}" y1="${m.t}" x2="${W - m.r}" y2="${H - m.b}" stroke="black"/>`,
    `<text x="${W / 2}" y="${H - 8}" text-anchor="middle">FFN k (fraction of neurons)</text>`,
    `<text x="14" y="${H / 2}" transform="rotate(-90 14 ${H / 2})" text-anchor="middle">recall@k (solid)</text>`,
    `<text x="${W - 12}" y="${H / 2}" transform="rotate(90 ${W - 12} ${H / 2})" text-anchor="middle">perplexity (dashed)</text>`,
  ];
  for (const k of ks) parts.push(`<text x="${x(k)}" y="${H - m.b + 16}" text-anchor="middle">${k}</text>`);
  for (const r of [0, 0.5, 1]) parts.push(`<text x="${m.l - 6}" y="${yR(r) + 4}" text-anchor="end">${r}</text>`);
  for (const p of [pMin, (pMin + pMax) / 2, pMax])
    parts.push(`<text x="${W - m.r + 6}" y="${yP(p) + 4}">${p.toFixed(1)}</text>`);
  if (dense) {
    parts.push(
      `<line x1="${m.l}" y1="${yP(dense.perplexity)}" x2="${W - m.r}" y2="${yP(dense.perplexity)}" stroke="gray" stroke-dasharray="2 3"/>`,
    );
    parts.push(
      `<text x="${m.l + 4}" y="${yP(dense.perplexity) - 4}" fill="gray">dense ${dense.perplexity.toFixed(2)}</text>`,
    );
  }
  [...groups.entries()].forEach(([name, rs], i) => {
    const color = colors[i % colors.length];
    const sorted = rs.sort((a, b) => a.ffn_k! - b.ffn_k!);
    const line = (y: (r: EvalRow) => number) => sorted.map((r) => `${x(r.ffn_k!)},${y(r)}`).join(" ");
    parts.push(
      `<polyline fill="none" stroke="${color}" stroke-width="2" points="${line((r) => yR(r.mean_recall ?? 0))}"/>`,
    );
    parts.push(
      `<polyline fill="none" stroke="${color}" stroke-width="2" stroke-dasharray="6 4" points="${line((r) => yP(r.perplexity))}"/>`,
    );
    parts.push(`<text x="${m.l + 8}" y="${m.t + 14 + 16 * i}" fill="${color}">${esc(name)}</text>`);
  });
  parts.push("</svg>");
  return parts.join("\n");
}
