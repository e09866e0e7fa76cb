// HiRE on the output (softmax) layer: approximate logits from a quantized or low-rank copy of the
// LM head → top-k' candidate tokens (DA-top-k when sharded) → exact logits for the candidates →
// the exact top-k among them. Logits outside the kept set are −∞, so sampling (temperature,
// top-p, …) is restricted to the candidates with no change to the sampler.
import type { Buf, Weight } from "../backend/backend.js";
import type { ModelConfig, ModelWeights } from "../arch/config.js";
import type { ForwardReport, OutputLayer } from "../engine/transformer.js";
import { buildPredictor, type Predictor } from "./predictor.js";
import { predictorName, resolveCount } from "./settings.js";
import type { SparseContext } from "./context.js";
import type { HeadTelemetry } from "./telemetry.js";
import { weightContentKey } from "./cache.js";
import { argmax, logSumExp } from "../engine/sampler.js";

export class HireOutputLayer implements OutputLayer {
  private readonly head: Weight;
  /** The head's bias (Phi-2), added to the predicted and the exact logits alike. */
  private readonly bias?: Buf;
  private readonly predictors = new Map<string, Predictor>();
  /** The last step's counts and bytes, for telemetry after a recorded step's replay. */
  private last?: { candidates: number; selected: number; bytes: number };

  constructor(
    private readonly ctx: SparseContext,
    private readonly c: ModelConfig,
    private readonly w: ModelWeights,
  ) {
    this.head = ctx.layout(w.head.w, false);
    if (w.head.b) this.bias = ctx.upload(ctx.readBias(w.head.b));
  }

  predictor(): Predictor {
    const spec = this.ctx.settings.head.predictor;
    const key = predictorName(spec);
    let p = this.predictors.get(key);
    if (!p) {
      const src = this.w.head.w;
      p = buildPredictor(this.ctx.b, this.head, spec, weightContentKey(src), 2);
      this.predictors.set(key, p);
    }
    return p;
  }

  /**
   * Whether the whole head runs as one backend op (the GPU: no indices cross to the host). An
   * audited token needs the kept ids on the host and the op adds no bias, so those run op by op.
   */
  private fused(pred: Predictor): boolean {
    return Boolean(this.ctx.b.hireHead) && pred.quant !== undefined && !this.ctx.auditNow && !this.bias;
  }

  private bytes(pred: Predictor, candidates: number): number {
    return pred.byteLength + candidates * (this.head.byteLength / this.c.vocab);
  }

  /** Part of a recorded decode step when the whole head is one backend op (see forward). */
  graphable(): boolean {
    return this.fused(this.predictor());
  }

  /** After a replay of a recorded step: the head's telemetry, with its GPU time. */
  afterReplay(report: ForwardReport): void {
    const graphs = this.ctx.b.graphs;
    if (!graphs || !this.last) return;
    const none = new Int32Array(0);
    const t = graphs.hireResults(this.c.layers, none, 0, none, 0);
    report.head = {
      method: "hire",
      k: this.last.selected,
      candidates: this.last.candidates,
      ms: t.scoreMs + t.rowsMs + t.downMs,
      bytes: this.last.bytes,
      denseBytes: this.w.head.w.byteLength,
    };
  }

  forward(logits: Buf, hidden: Buf, report?: ForwardReport): void {
    const { ctx, c } = this;
    const { b, scratch: sc } = ctx;
    const s = ctx.settings;
    const V = c.vocab;
    const P = s.shards;
    const k = resolveCount(s.head.k, V);
    let kp = Math.min(V, Math.ceil((k * s.head.oversample) / P) * P);
    if (kp > V - P) kp = V;
    const t0 = performance.now();
    const pred = this.predictor();
    if (this.fused(pred)) {
      const r = b.hireHead!({
        logits,
        x: hidden,
        predictor: pred.quant!,
        head: this.head,
        k,
        kp,
        shards: P,
        scores: sc.scores,
        slot: c.layers,
      });
      this.last = { candidates: r.candidates, selected: r.selected, bytes: this.bytes(pred, r.candidates) };
      if (report)
        report.head = {
          method: "hire",
          k: r.selected,
          candidates: r.candidates,
          ms: performance.now() - t0,
          bytes: this.last.bytes,
          denseBytes: this.w.head.w.byteLength,
        };
      return;
    }
    pred.score(sc.scores, hidden);
    if (this.bias) b.add(sc.scores, this.bias, V);
    const nc = b.topk(sc.scores, V, kp, false, P, sc.cand);
    b.matvecRows(sc.g, hidden, this.head, sc.cand, nc);
    if (this.bias) {
      b.gather(sc.aSel, this.bias, sc.cand, nc);
      b.add(sc.g, sc.aSel, nc);
    }
    const ns = b.topk(sc.g, nc, Math.min(k, nc), false, P, sc.selPos);
    // Logits outside the selection are -inf, so sampling stays within it.
    const out = b.read(logits, 0, V);
    const exact = b.read(sc.g, 0, nc);
    out.fill(-Infinity);
    for (let i = 0; i < ns; i++) out[sc.cand[sc.selPos[i]]] = exact[sc.selPos[i]];
    b.write(logits, 0, out);
    const ms = performance.now() - t0;
    if (!report) return;
    const tel: HeadTelemetry = {
      method: "hire",
      k: ns,
      candidates: nc,
      ms,
      bytes: this.bytes(pred, nc),
      denseBytes: this.w.head.w.byteLength,
    };
    if (ctx.auditNow) {
      b.matmul(sc.auditOut, hidden, this.w.head.w, 1, this.w.head.b);
      const cap = ctx.c.finalSoftcap; // the model's distribution is over the capped logits
      if (cap !== undefined) b.softcap(sc.auditOut, V, cap);
      const dense = b.read(sc.auditOut, 0, V);
      const best = argmax(dense);
      const lse = logSumExp(dense);
      let kept = 0;
      let hit = false;
      for (let i = 0; i < ns; i++) {
        const id = sc.cand[sc.selPos[i]];
        kept += Math.exp(dense[id] - lse);
        if (id === best) hit = true;
      }
      tel.argmaxInCandidates = hit;
      tel.massCovered = kept;
    }
    report.head = tel;
  }
}
