// Export a loaded model (Llama/Mistral/Qwen2, GPT-2, OPT) to an ONNX decoder graph that ONNX
// Runtime can run with a KV cache, optionally with HiRE on the FFNs and the output layer.
//
// Graph interface (batch 1, opset 17; the HiRE predictor adds com.microsoft MatMulNBits):
//   inputs   input_ids [1, S] int64
//            past_key.L, past_value.L [1, kvHeads, P, headDim] f32 (P = 0 on the first call)
//   outputs  logits [1, S, vocab] f32 ([1, 1, vocab] with lastTokenLogits)
//            present_key.L, present_value.L [1, kvHeads, P + S, headDim]
//            hire_selected.L [S, k] int64 (HiRE FFN with selectionOutputs: each token's kept neurons)
// Positions are P .. P + S - 1, P read from the past's shape; rotary cos/sin tables (computed in
// f64, rounded to f32, as the engine does) cover `maxContext` positions.
//
// The math is the engine's (core/engine/transformer.ts, core/arch/*): pre-norm blocks, RMSNorm or
// LayerNorm, grouped-query attention with query head h reading key/value head h / (heads/kvHeads),
// rotate-half RoPE over the first 2·len(ropeInvFreq) dims, learned positions offset by
// positionOffset (OPT: 2), SwiGLU or act(W_in·x) FFN, tied or separate head; Gemma's embedding
// scale, attention scale, post-block norms, Gemma 2's soft caps, and sliding-window layers (their
// own mask, and Gemma 3's own rotary tables).
//
// Weight dtype: f32. ONNX Runtime's CPU MatMul has no bf16 kernel; it does run f16 MatMul/Gemm,
// but only with f16 activations, and on this x86 machine an f16 Gemm takes as long per matrix as
// the f32 one (2048×8192: 1.49 ms vs 1.48 ms, i.e. half the effective bandwidth), so f16 would
// lose accuracy against the engine (which accumulates in f32) without gaining speed. bf16/f16
// checkpoints are widened exactly, so the graph computes on the same weight values as the engine.
//
// HiRE (settings as in core/sparse/settings.ts; FFN method "hire" and/or head method "hire"):
// - FFN, one token (decode): predictor scores (MatMulNBits: the engine's int4/int8 group-quantized
//   W_gate or W_in, x quantized to int8 per block like our kernel: accuracy_level 4) + b_in →
//   act → TopK k' by |act| → Gather the candidates' interleaved W_gate/W_up rows (one [2k', H]
//   gather) → exact activations → TopK k by |activation| → Gather those rows of W_downᵀ → output.
//   Several tokens (prefill): dense activations, each token's exact top-k, down product over those
//   only (zeros elsewhere) — what the engine does in prefill. One `If` on S == 1 around the layer
//   stack picks the branch (one per graph, not per layer: each If costs ~0.2 ms per run in ORT).
// - Head: predictor logits → TopK k' → exact logits of the candidate rows → TopK k → logits with
//   every other entry −∞ (the engine's HireOutputLayer).
// - Predictors whose group size MatMulNBits does not take (not a power of two) are stored
//   dequantized (f32) and applied with Gemm: the same scores at f32 cost. Low-rank predictors use
//   the engine's own factors (built through core/sparse/predictor.ts and its on-disk cache) as two
//   f32 Gemms. DA-top-k shards (> 1) are not expressed in the graph.
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import {
  interleavedRopeOrder,
  layerRope,
  type FfnWeights,
  type Linear,
  type ModelConfig,
  type ModelWeights,
  type Norm,
} from "../arch/config.js";
import type { Weight } from "../loader/safetensors.js";
import { UsageError } from "../loader/errors.js";
import { writeError } from "../loader/file-io.js";
import {
  DEFAULT_SETTINGS,
  compact,
  layerK,
  layerOversample,
  layerPredictor,
  mergeSettings,
  predictorName,
  resolveCount,
  type DeepPartial,
  type PredictorSpec,
  type SparsitySettings,
} from "../sparse/settings.js";
import { CpuBackend } from "../backend/cpu.js";
import { buildPredictor } from "../sparse/predictor.js";
import { readCached, tensorHash } from "../sparse/cache.js";
import { DT, ExternalData, GraphBuilder, encodeModel } from "./proto.js";
import { colsF32, dequantizeNBits, interleaveRows, quantizeNBits, readF32, rowsF32 } from "./weights.js";

export interface OnnxExportOptions {
  /**
   * Sparsity settings (as for the engine) for a HiRE graph: FFN method "hire" and/or head method
   * "hire" (k, oversample, predictor, per-layer k). Absent, or both methods dense: the dense graph.
   */
  hire?: DeepPartial<SparsitySettings>;
  /** Output only the last position's logits, [1, 1, vocab] (what generation needs). Default false. */
  lastTokenLogits?: boolean;
  /** Positions the rotary tables cover (default: the model's, capped at 4096 like the engine). */
  maxContext?: number;
  /** HiRE FFN graphs: add outputs hire_selected.L, the neurons each token kept. Default false. */
  selectionOutputs?: boolean;
  /** Called after each layer's weights are written (done = 1..layers). */
  onProgress?: (done: number, total: number) => void;
}

export interface OnnxHireSummary {
  ffn: { k: number[]; candidates: number[]; predictor: string; route: string } | null;
  head: { k: number; candidates: number; predictor: string; route: string } | null;
}

export interface OnnxExportResult {
  /** The .onnx file and its external data file (same folder). */
  file: string;
  dataFile: string;
  /** Bytes of weights in the data file. */
  dataBytes: number;
  layers: number;
  kvHeads: number;
  headDim: number;
  vocab: number;
  maxContext: number;
  lastTokenLogits: boolean;
  hire: OnnxHireSummary;
  ms: number;
}

/** What the export needs of a loaded model. */
export type ExportableModel = { readonly config: ModelConfig; readonly weights: ModelWeights };

const OPSET = 17;
/** Bumped whenever the graph for the same model and options changes (caches key on it). */
export const ONNX_EXPORT_VERSION = 2;

/**
 * Write `outFile` (.onnx) and `outFile + ".data"` (weights) for `model`. Overwrites both.
 * Throws UsageError for settings the graph cannot express (a non-HiRE sparse method, shards > 1).
 */
export function exportOnnx(model: ExportableModel, outFile: string, opts: OnnxExportOptions = {}): OnnxExportResult {
  const t0 = performance.now();
  const file = resolve(outFile);
  const dataFile = `${file}.data`;
  try {
    mkdirSync(dirname(file), { recursive: true });
  } catch (e) {
    throw writeError(e, dirname(file));
  }
  const data = new ExternalData(dataFile);
  try {
    const ex = new Exporter(model, GraphBuilder.root(data), opts);
    const { graph, hire } = ex.build();
    const bytes = encodeModel(graph.graph("hire_studio_decoder", true), {
      "": OPSET,
      ...(ex.usesContrib ? { "com.microsoft": 1 } : {}),
    });
    try {
      writeFileSync(file, bytes);
    } catch (e) {
      throw writeError(e, file);
    }
    const c = model.config;
    return {
      file,
      dataFile,
      dataBytes: data.bytes,
      layers: c.layers,
      kvHeads: c.kvHeads,
      headDim: c.headDim,
      vocab: c.vocab,
      maxContext: ex.maxContext,
      lastTokenLogits: opts.lastTokenLogits ?? false,
      hire,
      ms: performance.now() - t0,
    };
  } catch (e) {
    data.close();
    for (const f of [file, dataFile]) if (existsSync(f)) rmSync(f, { force: true });
    throw e;
  } finally {
    data.close();
  }
}

/** Settings for the graph: null when the whole graph is dense. */
function hireSettings(c: ModelConfig, update: DeepPartial<SparsitySettings> | undefined): SparsitySettings | null {
  if (!update) return null;
  const s = mergeSettings(DEFAULT_SETTINGS, compact(update), c);
  if (s.ffn.method !== "dense" && s.ffn.method !== "hire")
    throw new UsageError(`the ONNX export runs the dense or hire FFN, not "${s.ffn.method}"`);
  if (s.ffn.method === "dense" && s.head.method === "dense") return null;
  if (s.shards !== 1) throw new UsageError(`the ONNX export has no DA-top-k: shards must be 1, got ${s.shards}`);
  return s;
}

/** k' as the engine computes it with one shard: ⌈oversample·k⌉, all rows once that leaves one out. */
function candidates(k: number, oversample: number, total: number): number {
  const kp = Math.min(total, Math.ceil(k * oversample));
  return kp > total - 1 ? total : kp;
}

/** Per-layer HiRE FFN pieces, written once and shared by both branches. */
interface FfnPrep {
  k: number;
  kp: number;
  inRows: string; // gated: [2F, H], row 2i = gate_i, 2i + 1 = up_i; else W_in [F, H]
  biasIn: string | null;
  downCols: string; // [F, H]: neuron i's W_down column
  biasDown: string | null;
  pred: Predictor;
}

interface Predictor {
  name: string;
  route: string;
  /** scores ≈ x·Wᵀ for x [N, cols], built on `b`. */
  apply: (b: GraphBuilder, x: string) => string;
}

/** How the FFNs of one pass compute: dense, HiRE for one token, exact top-k for several. */
type FfnMode = "dense" | "hire-one" | "topk-many";

class Exporter {
  readonly maxContext: number;
  usesContrib = false;
  private readonly c: ModelConfig;
  private readonly w: ModelWeights;
  private readonly s: SparsitySettings | null;
  private readonly inits = new Map<string, string>();
  private readonly ffnPreps: FfnPrep[] = [];
  private backend?: CpuBackend;
  // Values shared by every layer (outer scope of the If branches).
  /** cos/sin tables per rotary frequency array (layerRope: the global one, Gemma 3's local one). */
  private readonly rotary = new Map<Float32Array, { cos: string; sin: string }>();
  private mask = "";
  /** Per window length: the causal mask that also hides keys `window` or more positions back. */
  private readonly windowMasks = new Map<number, string>();
  private readonly hire: OnnxHireSummary = { ffn: null, head: null };

  constructor(
    model: ExportableModel,
    private readonly g: GraphBuilder,
    private readonly opts: OnnxExportOptions,
  ) {
    this.c = model.config;
    this.w = model.weights;
    if (this.c.moe) {
      throw new UsageError(`the ONNX export has no mixture-of-experts layers (${this.c.architecture})`);
    }
    this.s = hireSettings(this.c, opts.hire);
    const cap = this.c.ropeInvFreq ? Math.min(this.c.maxPositions, 4096) : this.c.maxPositions;
    this.maxContext = opts.maxContext ?? cap;
    if (!Number.isInteger(this.maxContext) || this.maxContext < 1 || this.maxContext > this.c.maxPositions)
      throw new UsageError(`maxContext must be an integer in 1..${this.c.maxPositions}, got ${opts.maxContext}`);
  }

  private get hireFfn(): boolean {
    return !!this.s && this.s.ffn.method === "hire";
  }

  private get selectionOutputs(): boolean {
    return !!this.opts.selectionOutputs && this.hireFfn;
  }

  build(): { graph: GraphBuilder; hire: OnnxHireSummary } {
    const { g, c } = this;
    const ids = g.input("input_ids", DT.INT64, [1, "S"]);
    const past: [string, string][] = [];
    for (let l = 0; l < c.layers; l++) {
      past.push([
        g.input(`past_key.${l}`, DT.FLOAT, [1, c.kvHeads, "P", c.headDim]),
        g.input(`past_value.${l}`, DT.FLOAT, [1, c.kvHeads, "P", c.headDim]),
      ]);
    }
    const c0 = g.i64([0], true);
    const c1 = g.i64([1], true);
    const S = g.op("Gather", [g.op("Shape", [ids]), c1], { axis: 0 }, { prefix: "S" });
    const P = g.op("Gather", [g.op("Shape", [past[0][0]]), g.i64([2], true)], { axis: 0 }, { prefix: "P" });
    const T = g.op("Add", [P, S], {}, { prefix: "T" });
    const pos = g.op("Range", [P, T, c1], {}, { prefix: "positions" });
    // mask[i][j]: key j lies after query i (position P + i); window masks also hide keys `w` or
    // more positions back.
    const keyPos = g.op("Unsqueeze", [g.op("Range", [c0, T, c1]), g.i64([0])]);
    const queryPos = g.op("Unsqueeze", [pos, g.i64([1])]);
    this.mask = g.op("Greater", [keyPos, queryPos], {}, { prefix: "causal_mask" });
    for (const w of new Set(c.attentionWindows ?? [])) {
      if (w === 0) continue;
      const far = g.op("GreaterOrEqual", [g.op("Sub", [queryPos, keyPos]), g.i64([w], true)]);
      this.windowMasks.set(w, g.op("Or", [this.mask, far], {}, { prefix: `window_mask_${w}` }));
    }

    let x = g.op("Gather", [this.weight(this.w.embed, "stored"), g.op("Reshape", [ids, g.i64([-1])])], { axis: 0 });
    if (this.w.positions) {
      const at = c.positionOffset ? g.op("Add", [pos, g.i64([c.positionOffset], true)]) : pos;
      const table = this.weight(this.w.positions, "stored");
      x = g.op("Add", [x, g.op("Gather", [table, at], { axis: 0 })], {}, { prefix: "x" });
    }
    if (c.embedScale !== undefined) x = g.op("Mul", [x, g.scalar(c.embedScale)], {}, { prefix: "x" });
    if (c.ropeInvFreq) this.rotary.set(c.ropeInvFreq, this.ropeTables(pos, c.ropeInvFreq, "rope"));
    if (c.localRopeInvFreq) this.rotary.set(c.localRopeInvFreq, this.ropeTables(pos, c.localRopeInvFreq, "rope_local"));

    const presentNames = past.flatMap((_, l) => [`present_key.${l}`, `present_value.${l}`]);
    const selectedNames = this.selectionOutputs ? past.map((_, l) => `hire_selected.${l}`) : [];
    if (!this.hireFfn) {
      x = this.layers(g, x, past, "dense", presentNames).x;
    } else {
      // One If for the whole stack: HiRE when the call has one token (decode), each token's exact
      // top-k when it has several (prefill), as the engine does. Both branches share the weights.
      const one = g.subgraph();
      const many = g.subgraph();
      for (const [b, mode] of [
        [one, "hire-one"],
        [many, "topk-many"],
      ] as const) {
        const r = this.layers(b, x, past, mode);
        b.output(r.x, DT.FLOAT);
        for (const name of r.present) b.output(name, DT.FLOAT);
        for (const name of r.selected.slice(0, selectedNames.length)) b.output(name, DT.INT64);
      }
      const isOne = g.op("Equal", [S, c1], {}, { prefix: "one_token" });
      x = g.opN(
        "If",
        [isOne],
        { then_branch: { graph: one }, else_branch: { graph: many } },
        { outputs: [g.name("x_final"), ...presentNames, ...selectedNames] },
      )[0];
    }

    if (this.opts.lastTokenLogits) x = g.op("Slice", [x, g.i64([-1]), g.i64([2 ** 53 - 1]), g.i64([0])]);
    const hf = this.norm(g, x, this.w.finalNorm);
    const hireHead = this.s?.head.method === "hire";
    let logits2d = hireHead ? this.hireHead(hf) : this.linear(g, hf, this.w.head);
    if (c.finalSoftcap !== undefined) {
      const capped = this.softcap(g, logits2d, c.finalSoftcap);
      // HiRE's left-out tokens stay at −∞ (tanh would bring them to −cap).
      logits2d = hireHead ? g.op("Where", [g.op("Equal", [logits2d, g.scalar(-Infinity)]), logits2d, capped]) : capped;
    }
    g.op("Unsqueeze", [logits2d, g.i64([0])], {}, { outputs: ["logits"] });
    g.output("logits", DT.FLOAT, [1, this.opts.lastTokenLogits ? 1 : "S", c.vocab]);
    for (let l = 0; l < c.layers; l++) {
      g.output(`present_key.${l}`, DT.FLOAT, [1, c.kvHeads, "T", c.headDim]);
      g.output(`present_value.${l}`, DT.FLOAT, [1, c.kvHeads, "T", c.headDim]);
    }
    for (const name of selectedNames) g.output(name, DT.INT64, ["S", "k"]);
    return { graph: g, hire: this.hire };
  }

  /**
   * The decoder layers on builder `b`. Returns the residual stream after the last layer, the
   * present key/value names (given, or fresh in a branch) and each layer's selected neurons.
   */
  private layers(
    b: GraphBuilder,
    x: string,
    past: [string, string][],
    mode: FfnMode,
    presentNames?: string[],
  ): { x: string; present: string[]; selected: string[] } {
    const present: string[] = [];
    const selected: string[] = [];
    for (let l = 0; l < this.c.layers; l++) {
      const lw = this.w.layers[l];
      const names = presentNames ? [presentNames[2 * l], presentNames[2 * l + 1]] : undefined;
      const hAtt = this.norm(b, x, lw.attnNorm);
      // Parallel blocks (ModelConfig.parallelBlocks) norm x before the attention's residual add.
      const hParallel = this.c.parallelBlocks ? (lw.ffnNorm ? this.norm(b, x, lw.ffnNorm) : hAtt) : null;
      const att = this.attention(b, l, hAtt, past[l], names);
      present.push(att.presentK, att.presentV);
      const attOut = lw.postAttnNorm ? this.norm(b, att.out, lw.postAttnNorm) : att.out;
      x = b.op("Add", [x, attOut], {}, { prefix: `x${l}` });
      const h = hParallel ?? this.norm(b, x, lw.ffnNorm);
      let ffn: string;
      if (mode === "dense") ffn = this.denseFfn(b, l, h);
      else {
        const r = mode === "hire-one" ? this.hireOne(b, l, h) : this.topkMany(b, l, h);
        ffn = r.out;
        selected.push(r.selected);
      }
      if (lw.postFfnNorm) ffn = this.norm(b, ffn, lw.postFfnNorm);
      x = b.op("Add", [x, ffn], {}, { prefix: `x${l}` });
      if (mode !== "topk-many") this.opts.onProgress?.(l + 1, this.c.layers);
    }
    return { x, present, selected };
  }

  // ---- weights -------------------------------------------------------------------------------

  /**
   * An initializer for `w` in a layout: "stored" (as in the file), "rows" ([outputs][inputs]) or
   * "cols" ([inputs][outputs]). Each (tensor, layout) is written once (a tied head reuses the embedding).
   */
  private weight(w: Weight, layout: "stored" | "rows" | "cols"): string {
    // A weight computed at load (Gemma's 1 + w, OLMo's unit norms) shares its source's file offset.
    const source = w.values ? `computed:${w.name}` : `${w.file}:${w.offset}`;
    const key = `${source}:${layout === "stored" ? (w.transposed ? "cols" : "rows") : layout}`;
    let name = this.inits.get(key);
    if (!name) {
      name = layout === "stored" ? w.name : `${w.name}.${layout}`;
      const data = layout === "rows" ? rowsF32(w) : layout === "cols" ? colsF32(w) : readF32(w);
      const dims = layout === "rows" ? [w.rows, w.cols] : layout === "cols" ? [w.cols, w.rows] : [...w.shape];
      this.g.f32(name, dims, data);
      this.inits.set(key, name);
    }
    return name;
  }

  private bias(b: Weight | null): string | null {
    return b ? this.weight(b, "stored") : null;
  }

  /** y = x·Wᵀ + b for x [N, in]: Gemm straight on the stored layout (Conv1D [in, out] untransposed). */
  private linear(b: GraphBuilder, x: string, lin: Linear): string {
    const inputs = [x, this.weight(lin.w, "stored")];
    const bias = this.bias(lin.b);
    if (bias) inputs.push(bias);
    return b.op("Gemm", inputs, { transB: lin.w.transposed ? 0 : 1 });
  }

  // ---- blocks --------------------------------------------------------------------------------

  /** norm(x), or x where the block has no norm (OLMo 2). */
  private norm(b: GraphBuilder, x: string, n: Norm | null): string {
    const c = this.c;
    if (!n) return x;
    const weight = this.weight(n.weight, "stored");
    if (c.norm === "layer") {
      const inputs = n.bias ? [x, weight, this.bias(n.bias)!] : [x, weight]; // Cohere's have no bias
      return b.op("LayerNormalization", inputs, { axis: -1, epsilon: { float: c.normEps } });
    }
    // RMSNorm as the engine computes it: (x · 1/sqrt(mean(x²) + eps)) · w.
    const ms = b.op("ReduceMean", [b.op("Mul", [x, x])], { axes: [-1], keepdims: 1 });
    const inv = b.op("Reciprocal", [b.op("Sqrt", [b.op("Add", [ms, b.scalar(c.normEps)])])]);
    return b.op("Mul", [b.op("Mul", [x, inv]), weight]);
  }

  /** cap · tanh(x / cap) (Gemma 2's soft caps), as the engine computes it. */
  private softcap(b: GraphBuilder, x: string, cap: number): string {
    return b.op("Mul", [b.op("Tanh", [b.op("Div", [x, b.scalar(cap)])]), b.scalar(cap)]);
  }

  /** act(x) with the engine's formulas. */
  private activate(b: GraphBuilder, x: string): string {
    switch (this.c.activation) {
      case "relu":
        return b.op("Relu", [x]);
      case "silu":
        return b.op("Mul", [x, b.op("Sigmoid", [x])]);
      case "gelu": {
        const erf = b.op("Erf", [b.op("Mul", [x, b.scalar(0.7071067811865476)])]);
        return b.op("Mul", [b.op("Mul", [x, b.scalar(0.5)]), b.op("Add", [erf, b.scalar(1)])]);
      }
      case "gelu_tanh": {
        const cube = b.op("Mul", [b.op("Mul", [b.op("Mul", [x, x]), x]), b.scalar(0.044715)]);
        const th = b.op("Tanh", [b.op("Mul", [b.op("Add", [x, cube]), b.scalar(0.7978845608028654)])]);
        return b.op("Mul", [b.op("Mul", [x, b.scalar(0.5)]), b.op("Add", [th, b.scalar(1)])]);
      }
    }
  }

  /** cos/sin of position · inv_freq for the positions of this call: [S, 1, rotDim/2] each. */
  private ropeTables(pos: string, inv: Float32Array, tag: string): { cos: string; sin: string } {
    const { g, c } = this;
    const factor = Math.fround(c.ropeFactor ?? 1);
    const half = inv.length;
    const cos = new Float32Array(this.maxContext * half);
    const sin = new Float32Array(this.maxContext * half);
    for (let p = 0; p < this.maxContext; p++) {
      for (let j = 0; j < half; j++) {
        const a = p * inv[j]; // f64 product of the f32 frequency, as the engine's rope kernel does
        cos[p * half + j] = Math.fround(Math.cos(a)) * factor; // rounded, then scaled in f32 (Float32Array)
        sin[p * half + j] = Math.fround(Math.sin(a)) * factor;
      }
    }
    const axis1 = g.i64([1]);
    const table = (name: string, data: Float32Array) =>
      g.op("Unsqueeze", [g.op("Gather", [g.f32(name, [this.maxContext, half], data), pos]), axis1]);
    return { cos: table(`${tag}.cos`, cos), sin: table(`${tag}.sin`, sin) };
  }

  /** Rotate-half RoPE on x [S, heads, headDim] over its first 2·half dims. */
  private rope(b: GraphBuilder, x: string, { cos, sin }: { cos: string; sin: string }): string {
    const c = this.c;
    const half = c.ropeInvFreq!.length;
    const axis = b.i64([2]);
    const slice = (from: number, to: number) => b.op("Slice", [x, b.i64([from]), b.i64([to]), axis]);
    const x1 = slice(0, half);
    const x2 = slice(half, 2 * half);
    const r1 = b.op("Sub", [b.op("Mul", [x1, cos]), b.op("Mul", [x2, sin])]);
    const r2 = b.op("Add", [b.op("Mul", [x2, cos]), b.op("Mul", [x1, sin])]);
    const parts = [r1, r2];
    if (2 * half < c.headDim) parts.push(slice(2 * half, c.headDim));
    return b.op("Concat", parts, { axis: 2 });
  }

  private attention(
    b: GraphBuilder,
    l: number,
    h: string,
    [pastK, pastV]: [string, string],
    names?: string[],
  ): { out: string; presentK: string; presentV: string } {
    const c = this.c;
    const lw = this.w.layers[l];
    const A = c.heads;
    const K = c.kvHeads;
    const D = c.headDim;
    let q: string, k: string, v: string;
    if ("fused" in lw.qkv && lw.qkv.grouped) {
      // [N, K, (G + 2)·D]: each key/value head's G q heads, k and v side by side, back to [N, ·] each.
      const G = A / K;
      const groups = b.op("Reshape", [this.linear(b, h, lw.qkv.fused), b.i64([-1, K, (G + 2) * D])]);
      const parts = b.opN("Split", [groups, b.i64([G * D, D, D])], { axis: 2 }, { outputs: 3 });
      [q, k, v] = parts.map((x, i) => b.op("Reshape", [x, b.i64([-1, (i === 0 ? A : K) * D])]));
    } else if ("fused" in lw.qkv) {
      const split = b.i64([A * D, K * D, K * D]);
      [q, k, v] = b.opN("Split", [this.linear(b, h, lw.qkv.fused), split], { axis: 1 }, { outputs: 3 });
    } else {
      q = this.linear(b, h, lw.qkv.q);
      k = this.linear(b, h, lw.qkv.k);
      v = this.linear(b, h, lw.qkv.v);
    }
    // q/k norms over the last axis: before the reshape a token's whole projection (OLMo 2), after it
    // each head on its own (Qwen3, Gemma 3), as the norm's width says.
    const perHead = lw.qkNorm?.q.weight.cols === D;
    if (lw.qkNorm && !perHead) {
      q = this.norm(b, q, lw.qkNorm.q);
      k = this.norm(b, k, lw.qkNorm.k);
    }
    q = b.op("Reshape", [q, b.i64([-1, A, D])]);
    k = b.op("Reshape", [k, b.i64([-1, K, D])]);
    if (lw.qkNorm && perHead) {
      q = this.norm(b, q, lw.qkNorm.q);
      k = this.norm(b, k, lw.qkNorm.k);
    }
    if (c.ropeInterleaved) {
      // As the engine does: adjacent rotary pairs into rotate-half order, q and k alike (see
      // interleavedRopeOrder); q·k does not change.
      const order = b.i64(Array.from(interleavedRopeOrder(1, 1, D, 2 * c.ropeInvFreq!.length)));
      q = b.op("Gather", [q, order], { axis: 2 });
      k = b.op("Gather", [k, order], { axis: 2 });
    }
    const window = c.attentionWindows?.[l] ?? 0;
    const inv = layerRope(c, l);
    if (inv) {
      q = this.rope(b, q, this.rotary.get(inv)!);
      k = this.rope(b, k, this.rotary.get(inv)!);
    }
    // Cache layout [1, K, T, D]: this call's keys appended after the past ones.
    const toCache = (t: string) => b.op("Unsqueeze", [b.op("Transpose", [t], { perm: [1, 0, 2] }), b.i64([0])]);
    const presentK = b.op("Concat", [pastK, toCache(k)], { axis: 2 }, names && { outputs: [names[0]] });
    const vv = b.op("Reshape", [v, b.i64([-1, K, D])]);
    const presentV = b.op("Concat", [pastV, toCache(vv)], { axis: 2 }, names && { outputs: [names[1]] });
    // Grouped-query attention: q [K, G, S, D] against keys [K, 1, D, T] (broadcast over the group).
    const qg = b.op("Transpose", [b.op("Reshape", [q, b.i64([-1, K, A / K, D])])], { perm: [1, 2, 0, 3] });
    const kt = b.op("Transpose", [presentK], { perm: [1, 0, 3, 2] });
    const vt = b.op("Transpose", [presentV], { perm: [1, 0, 2, 3] });
    let scores = b.op("Mul", [b.op("MatMul", [qg, kt]), b.scalar(c.attentionScale ?? 1 / Math.sqrt(D))]);
    if (c.attentionSoftcap !== undefined) scores = this.softcap(b, scores, c.attentionSoftcap);
    const mask = window > 0 ? this.windowMasks.get(window)! : this.mask;
    const masked = b.op("Where", [mask, b.scalar(-Infinity), scores]);
    const att = b.op("MatMul", [b.op("Softmax", [masked], { axis: -1 }), vt]); // [K, G, S, D]
    const merged = b.op("Reshape", [b.op("Transpose", [att], { perm: [2, 0, 1, 3] }), b.i64([-1, A * D])]);
    return { out: this.linear(b, merged, lw.o), presentK, presentV };
  }

  /** Layer l's FFN (the export has no mixture-of-experts layers: the constructor refuses them). */
  private ffnWeights(l: number): FfnWeights {
    const lw = this.w.layers[l];
    if (lw.moe) throw new Error(`layer ${l} is a mixture of experts`);
    return lw;
  }

  private denseFfn(b: GraphBuilder, l: number, h: string): string {
    const lw = this.ffnWeights(l);
    const up = this.linear(b, h, lw.up);
    const a = lw.gate ? b.op("Mul", [this.activate(b, this.linear(b, h, lw.gate)), up]) : this.activate(b, up);
    return this.linear(b, a, lw.down);
  }

  // ---- HiRE ----------------------------------------------------------------------------------

  private ffnPrep(l: number): FfnPrep {
    if (this.ffnPreps[l]) return this.ffnPreps[l];
    const { c, s } = this;
    const lw = this.ffnWeights(l);
    const F = c.intermediate;
    const k = resolveCount(layerK(s!, l), F);
    const kp = candidates(k, layerOversample(s!, l), F);
    const src = lw.gate ?? lw.up;
    const pred = this.predictor(src.w, layerPredictor(s!, l), `model.layers.${l}.ffn`, 1);
    const prep: FfnPrep = {
      k,
      kp,
      inRows: lw.gate ? this.interleavedGateUp(l) : this.weight(lw.up.w, "rows"),
      biasIn: this.bias(src.b),
      downCols: this.weight(lw.down.w, "cols"),
      biasDown: this.bias(lw.down.b),
      pred,
    };
    const summary = (this.hire.ffn ??= { k: [], candidates: [], predictor: pred.name, route: pred.route });
    summary.k.push(k);
    summary.candidates.push(kp);
    return (this.ffnPreps[l] = prep);
  }

  /** W_gate and W_up interleaved by rows: [2F, H], row 2i = gate_i, row 2i + 1 = up_i. */
  private interleavedGateUp(l: number): string {
    const lw = this.ffnWeights(l);
    const { hidden: H, intermediate: F } = this.c;
    const data = interleaveRows(rowsF32(lw.gate!.w), rowsF32(lw.up.w), F, H);
    return this.g.f32(`model.layers.${l}.mlp.gate_up.rows`, [2 * F, H], data);
  }

  private topk(b: GraphBuilder, x: string, n: number): [string, string] {
    const [values, indices] = b.opN("TopK", [x, b.i64([n])], { axis: -1, largest: 1, sorted: 0 }, { outputs: 2 });
    return [values, indices];
  }

  /**
   * HiRE for one token, h [1, H]: predictor → act → top-k' by |act| → the candidates' rows (gate
   * and up interleaved: one [2k', H] gather) → exact activations → top-k by |activation| → those
   * columns of W_down. Returns the output [1, H] and the kept neurons [1, k].
   */
  private hireOne(b: GraphBuilder, l: number, h: string): { out: string; selected: string } {
    const p = this.ffnPrep(l);
    const gated = !!this.w.layers[l].gate;
    let scores = p.pred.apply(b, h); // [1, F]
    if (p.biasIn) scores = b.op("Add", [scores, p.biasIn]);
    const [, cand2] = this.topk(b, b.op("Abs", [this.activate(b, scores)]), p.kp);
    const cand = b.op("Reshape", [cand2, b.i64([-1])]); // [k']
    let a: string; // exact activations of the candidates [k']
    if (gated) {
      // Rows 2c and 2c + 1 of the interleaved matrix, in one gather.
      const c2 = b.op("Mul", [b.op("Unsqueeze", [cand, b.i64([1])]), b.i64([2], true)]);
      const pairs = b.op("Concat", [c2, b.op("Add", [c2, b.i64([1], true)])], { axis: 1 });
      const rows = b.op("Gather", [p.inRows, b.op("Reshape", [pairs, b.i64([-1])])], { axis: 0 });
      const gu = b.op("Reshape", [b.op("Gemm", [h, rows], { transB: 1 }), b.i64([-1, 2])]); // [k', 2]
      const gate = b.op("Gather", [gu, b.i64([0], true)], { axis: 1 });
      const up = b.op("Gather", [gu, b.i64([1], true)], { axis: 1 });
      a = b.op("Mul", [this.activate(b, gate), up]);
    } else {
      const rows = b.op("Gather", [p.inRows, cand], { axis: 0 });
      let y = b.op("Reshape", [b.op("Gemm", [h, rows], { transB: 1 }), b.i64([-1])]);
      if (p.biasIn) y = b.op("Add", [y, b.op("Gather", [p.biasIn, cand], { axis: 0 })]);
      a = this.activate(b, y);
    }
    const [, pos] = this.topk(b, b.op("Abs", [a]), Math.min(p.k, p.kp));
    const sel = b.op("Gather", [cand, pos], { axis: 0 }); // [k]
    const aSel = b.op("Reshape", [b.op("Gather", [a, pos], { axis: 0 }), b.i64([1, -1])]);
    let out = b.op("MatMul", [aSel, b.op("Gather", [p.downCols, sel], { axis: 0 })]);
    if (p.biasDown) out = b.op("Add", [out, p.biasDown]);
    return { out, selected: b.op("Unsqueeze", [sel, b.i64([0])]) };
  }

  /** Several tokens, h [S, H]: dense activations, each token's exact top-k, down product over those only. */
  private topkMany(b: GraphBuilder, l: number, h: string): { out: string; selected: string } {
    const p = this.ffnPrep(l);
    const F = this.c.intermediate;
    let a: string; // [S, F]
    if (this.w.layers[l].gate) {
      const gu = b.op("Reshape", [b.op("Gemm", [h, p.inRows], { transB: 1 }), b.i64([0, F, 2])]);
      const gate = b.op("Gather", [gu, b.i64([0], true)], { axis: 2 });
      const up = b.op("Gather", [gu, b.i64([1], true)], { axis: 2 });
      a = b.op("Mul", [this.activate(b, gate), up]);
    } else {
      a = this.activate(b, b.op("Gemm", p.biasIn ? [h, p.inRows, p.biasIn] : [h, p.inRows], { transB: 1 }));
    }
    const [, idx] = this.topk(b, b.op("Abs", [a]), p.k); // [S, k]
    const zeros = b.op("ConstantOfShape", [b.op("Shape", [a])]);
    const kept = b.op("ScatterElements", [zeros, idx, b.op("GatherElements", [a, idx], { axis: 1 })], { axis: 1 });
    let out = b.op("MatMul", [kept, p.downCols]);
    if (p.biasDown) out = b.op("Add", [out, p.biasDown]);
    return { out, selected: idx };
  }

  /** The output layer: predictor → top-k' → exact logits of the candidates → top-k → the rest −∞. */
  private hireHead(hf: string): string {
    const { g, c, s } = this;
    const V = c.vocab;
    const head = this.w.head;
    const k = resolveCount(s!.head.k, V);
    const kp = candidates(k, s!.head.oversample, V);
    const pred = this.predictor(head.w, s!.head.predictor, "lm_head", 2);
    this.hire.head = { k, candidates: kp, predictor: pred.name, route: pred.route };
    const rows = this.weight(head.w, "rows"); // [V, H]
    const bias = this.bias(head.b); // Phi-2's: added to the predicted and the exact logits alike
    const approx = pred.apply(g, hf);
    const [, cand] = this.topk(g, bias ? g.op("Add", [approx, bias]) : approx, kp); // [N, k']
    // Exact logits of the candidates: rows [N, k', H] · h [N, H, 1].
    const gathered = g.op("Gather", [rows, cand], { axis: 0 });
    let exact = g.op("Squeeze", [g.op("MatMul", [gathered, g.op("Unsqueeze", [hf, g.i64([2])])]), g.i64([2])]);
    if (bias) exact = g.op("Add", [exact, g.op("Gather", [bias, cand], { axis: 0 })]);
    const [vals, pos] = this.topk(g, exact, Math.min(k, kp));
    const ids = g.op("GatherElements", [cand, pos], { axis: 1 });
    const n = g.op("Slice", [g.op("Shape", [hf]), g.i64([0]), g.i64([1])]);
    const fill = g.op("Expand", [g.scalar(-Infinity), g.op("Concat", [n, g.i64([V])], { axis: 0 })]);
    return g.op("ScatterElements", [fill, ids, vals], { axis: 1 });
  }

  /**
   * The predictor for W (rows = neurons or vocabulary entries): scores ≈ x·Wᵀ for x [N, cols].
   * `seed` is the engine's (FFN 1, head 2) so low-rank factors come from the same cache entry.
   */
  private predictor(w: Weight, spec: PredictorSpec, tag: string, seed: number): Predictor {
    const name = predictorName(spec);
    const { rows, cols } = w;
    if (spec.kind === "lowrank") {
      const [qT, proj, rank] = this.lowRankFactors(w, spec.rank, seed);
      const p = this.g.f32(`${tag}.lowrank.proj`, [rank, cols], proj);
      const q = this.g.f32(`${tag}.lowrank.qT`, [rank, rows], qT);
      return {
        name,
        route: "f32 low-rank (Gemm + MatMul)",
        apply: (b, x) => b.op("MatMul", [b.op("Gemm", [x, p], { transB: 1 }), q]),
      };
    }
    const bits = spec.kind === "int4" ? 4 : 8;
    const quant = quantizeNBits(rowsF32(w), rows, cols, bits, spec.groupSize);
    if ((spec.groupSize & (spec.groupSize - 1)) !== 0) {
      const deq = this.g.f32(`${tag}.${name}.dequantized`, [rows, cols], dequantizeNBits(quant));
      return { name, route: "dequantized f32 (Gemm)", apply: (b, x) => b.op("Gemm", [x, deq], { transB: 1 }) };
    }
    this.usesContrib = true;
    const blocks = Math.ceil(cols / spec.groupSize);
    const blob = (spec.groupSize * bits) / 8;
    const codes = this.g.tensor(`${tag}.${name}.codes`, DT.UINT8, [rows, blocks, blob], quant.codes);
    const scales = this.g.f32(`${tag}.${name}.scales`, [rows * blocks], quant.scales);
    const attrs = { K: cols, N: rows, bits, block_size: spec.groupSize, accuracy_level: 4 };
    return {
      name,
      route: "com.microsoft MatMulNBits (int8 activations)",
      apply: (b, x) => b.op("MatMulNBits", [x, codes, scales], attrs, { domain: "com.microsoft" }),
    };
  }

  /**
   * The engine's low-rank factors for W: built (and cached on disk) by core/sparse/predictor.ts
   * exactly as a HiRE session would, then read back from that cache. [Qᵀ (rank×rows), B (rank×cols)].
   */
  private lowRankFactors(w: Weight, rankWanted: number, seed: number): [Float32Array, Float32Array, number] {
    const b = (this.backend ??= new CpuBackend());
    const rows = w.transposed ? b.relayout(w, false) : w;
    const sourceKey = tensorHash(w.file, w.offset, w.byteLength);
    const rank = Math.min(rankWanted, w.rows, w.cols);
    buildPredictor(b, rows, { kind: "lowrank", rank: rankWanted }, sourceKey, seed);
    const cached = readCached(`${sourceKey}-lowrank${rank}-s${seed}`, [rank * w.rows, rank * w.cols]);
    if (!cached) throw new Error(`low-rank factors for ${w.name} were built but could not be read back from the cache`);
    return [cached[0], cached[1], rank];
  }
}
