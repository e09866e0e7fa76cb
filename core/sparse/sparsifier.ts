// The Sparsifier applies SparsitySettings to a Transformer: it swaps each layer's FFN and the
// output layer between the dense and sparse implementations, builds what a method needs on first
// use (relayouted weights, predictors) with progress callbacks, and decides which tokens are audited.
// It is a transform applied to a built model (gpt-fast style), never a flag inside `forward`.
import type { Transformer, FeedForward, ForwardReport, OutputLayer } from "../engine/transformer.js";
import type { Buf } from "../backend/backend.js";
import { SparseContext } from "./context.js";
import { UsageError } from "../loader/errors.js";
import { SparseFeedForward, type LayerPrep } from "./ffn.js";
import { MoeFeedForward } from "../engine/moe.js";
import type { FfnWeights, LayerWeights } from "../arch/config.js";
import { HireOutputLayer } from "./head.js";
import { DEFAULT_SETTINGS, compact, mergeSettings, type DeepPartial, type SparsitySettings } from "./settings.js";

export interface PrepareProgress {
  stage: "ffn" | "head";
  done: number;
  total: number;
}

export interface SparsifierOptions {
  /**
   * Once a sparse method has built its layouts, give back the memory of the file-layout FFN matrices
   * they copy (default true): HiRE's copies would otherwise nearly double the FFN's memory. Every
   * method, dense included, then reads HiRE's layouts (the dense down product sums W_down's column
   * copy: 55.5 against 61.1 GB/s for the row-major GEMV alone on the 1B model; whole dense tokens were
   * equal within the VM's noise). Bench and eval keep the file layout, so that their dense baseline is
   * the dense path a model gets without HiRE.
   */
  releaseFileLayout?: boolean;
}

export class Sparsifier {
  private readonly ctx: SparseContext;
  private readonly denseFfn: FeedForward[];
  private readonly denseOutput: OutputLayer;
  /** Each layer's sparse FFN, and what it builds (a mixture layer: one per expert). */
  private sparseFfn: { ffn: FeedForward; preps: LayerPrep[] }[] = [];
  private sparseHead?: HireOutputLayer;
  private tokens = 0;

  constructor(
    private readonly t: Transformer,
    private readonly options: SparsifierOptions = {},
  ) {
    this.denseFfn = [...t.ffn];
    this.denseOutput = t.output;
    this.ctx = new SparseContext(t.backend, t.config, t.ws, DEFAULT_SETTINGS);
  }

  get settings(): SparsitySettings {
    return this.ctx.settings;
  }

  /** Change settings (a partial update); takes effect from the next forward pass. */
  update(update: DeepPartial<SparsitySettings>, onProgress?: (p: PrepareProgress) => void): SparsitySettings {
    const next = mergeSettings(this.ctx.settings, compact(update), this.t.config);
    const c = this.t.config;
    if (next.ffn.method !== "dense" && this.sparseFfn.length === 0) {
      this.sparseFfn = this.t.weights.layers.map((w, l) => this.sparseLayer(w, l));
    }
    const release = this.options.releaseFileLayout !== false;
    if (next.ffn.method !== "dense") {
      this.sparseFfn.forEach((f, l) => {
        for (const prep of f.preps) {
          prep.prepare(next, l);
          // FFN by FFN, so the file layout and HiRE's copies are both resident for one of them at most.
          if (release) prep.releaseFileLayout();
        }
        onProgress?.({ stage: "ffn", done: l + 1, total: c.layers });
      });
    }
    if (next.head.method === "hire") {
      this.sparseHead ??= new HireOutputLayer(this.ctx, c, this.t.weights);
      this.sparseHead.predictor();
      onProgress?.({ stage: "head", done: 1, total: 1 });
    }
    this.ctx.settings = next;
    for (let l = 0; l < c.layers; l++) {
      const sparse = this.sparseFfn[l];
      const dense = next.ffn.method === "dense" && !sparse?.preps.some((p) => p.released);
      this.t.ffn[l] = dense ? this.denseFfn[l] : sparse.ffn;
    }
    this.t.output = next.head.method === "hire" ? this.sparseHead! : this.denseOutput;
    this.t.invalidateGraphs(); // recorded steps hold the old layers' ops and k
    return next;
  }

  /** Layer l's sparse FFN: the method in place of the dense FFN, or of each expert of a mixture. */
  private sparseLayer(w: LayerWeights, l: number): { ffn: FeedForward; preps: LayerPrep[] } {
    const { ctx, t } = this;
    const sparse = (f: FfnWeights) => new SparseFeedForward(ctx, t.config, f, l);
    if (!w.moe) {
      const ffn = sparse(w);
      return { ffn, preps: [ffn.prep] };
    }
    const experts = w.moe.experts.map(sparse);
    const shared = w.moe.shared && sparse(w.moe.shared);
    const ffn = new MoeFeedForward(t.backend, t.config, w.moe, t.ws.moe, experts, shared);
    return { ffn, preps: [...experts, ...(shared ? [shared] : [])].map((f) => f.prep) };
  }

  /**
   * Run the HiRE output layer on `hidden` without using its logits (they are −∞ outside the kept
   * tokens, so a perplexity through them is infinite): its telemetry, audited, lands in `report.head`.
   * `eval` uses this to measure the head while scoring the text with the dense head.
   */
  probeHead(hidden: Buf, scratchLogits: Buf, report: ForwardReport): void {
    this.sparseHead ??= new HireOutputLayer(this.ctx, this.t.config, this.t.weights);
    const audit = this.ctx.auditNow;
    this.ctx.auditNow = true;
    this.sparseHead.forward(scratchLogits, hidden, report);
    this.ctx.auditNow = audit;
  }

  /** Carry layer `layer`'s predicted and (when audited) exact scores in its telemetry; -1 stops. */
  inspect(layer: number): void {
    if (!Number.isInteger(layer) || layer < -1 || layer >= this.t.config.layers)
      throw new UsageError(`layer ${layer} is not one of 0..${this.t.config.layers - 1} (or -1 for none)`);
    this.ctx.inspectLayer = layer;
  }

  get inspectedLayer(): number {
    return this.ctx.inspectLayer;
  }

  /** Called before each decoded token: is this one audited? */
  beginToken(): boolean {
    const every = this.ctx.settings.auditEvery;
    this.ctx.auditNow = every > 0 && this.tokens % every === 0;
    this.tokens++;
    return this.ctx.auditNow;
  }

  /** Prefill passes are never audited. */
  beginPrefill(): void {
    this.ctx.auditNow = false;
  }
}
