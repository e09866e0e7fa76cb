// Run a graph written by core/onnx/export.ts with onnxruntime-node: one session, a KV cache held
// as the previous call's present_* tensors, and a greedy decode loop (the prompt in one run, then
// one token per run).
//
// Execution providers: "cpu" (default, bundled), "cuda" and "webgpu" only when asked. A provider
// this machine cannot use is an OrtError("EP_UNAVAILABLE") naming it, never a silent CPU fallback.
import type * as OrtModule from "onnxruntime-node";
import { argmax } from "../engine/sampler.js";
import { OrtError } from "./errors.js";

export const EXECUTION_PROVIDERS = ["cpu", "cuda", "webgpu"] as const;
export type ExecutionProvider = (typeof EXECUTION_PROVIDERS)[number];

type Ort = typeof OrtModule;
type Tensor = OrtModule.Tensor;

export interface OrtRunnerOptions {
  ep?: ExecutionProvider;
  /** Intra-op threads (default: ONNX Runtime's choice, one per core). */
  threads?: number;
}

/** One forward call: logits of the positions the graph returns, and HiRE selections if exported. */
export interface OrtForward {
  /** [rows][vocab]: every position of the call, or only the last (lastTokenLogits graphs). */
  logits: Float32Array;
  rows: number;
  /** Per layer, [S][k] neuron ids kept by the HiRE FFN (graphs exported with selectionOutputs). */
  selected?: BigInt64Array[];
}

export interface OrtGreedyResult {
  ids: number[];
  prefillMs: number;
  /** Time of the decode runs (after the first token, which the prefill gives). */
  decodeMs: number;
  decodeRuns: number;
}

let ortPromise: Promise<Ort> | undefined;

/** onnxruntime-node, loaded on first use (so importing this module never fails). */
export async function loadOrt(): Promise<Ort> {
  ortPromise ??= import("onnxruntime-node")
    .then((m) => (m as unknown as { default?: Ort }).default ?? (m as unknown as Ort))
    .catch((e: unknown) => {
      ortPromise = undefined;
      throw new OrtError("ORT_MISSING", `onnxruntime-node cannot be loaded: ${(e as Error).message}`);
    });
  return ortPromise;
}

export class OrtRunner {
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly vocab: number;
  private past: Record<string, Tensor> | null = null;
  private pos = 0;
  private readonly selectionNames: string[];

  private constructor(
    private readonly ort: Ort,
    private readonly session: OrtModule.InferenceSession,
    readonly ep: ExecutionProvider,
    readonly file: string,
  ) {
    const meta = session.inputMetadata.find((m) => m.name === "past_key.0");
    const logits = session.outputMetadata.find((m) => m.name === "logits");
    if (!meta || !meta.isTensor || !logits || !logits.isTensor)
      throw new OrtError(
        "SESSION_FAILED",
        `${file}: not a decoder graph from hire's ONNX export (no past_key.0 / logits)`,
      );
    this.layers = session.inputNames.filter((n) => n.startsWith("past_key.")).length;
    this.kvHeads = Number(meta.shape[1]);
    this.headDim = Number(meta.shape[3]);
    this.vocab = Number(logits.shape[2]);
    this.selectionNames = session.outputNames.filter((n) => n.startsWith("hire_selected."));
  }

  static async open(file: string, o: OrtRunnerOptions = {}): Promise<OrtRunner> {
    const ep = o.ep ?? "cpu";
    if (!EXECUTION_PROVIDERS.includes(ep)) throw new OrtError("EP_UNAVAILABLE", `unknown execution provider "${ep}"`);
    const ort = await loadOrt();
    if (ep !== "cpu") {
      const known = ort.listSupportedBackends?.() ?? [];
      if (!known.some((b) => b.name === ep))
        throw new OrtError("EP_UNAVAILABLE", `execution provider "${ep}" is not in this onnxruntime-node build`);
    }
    let session: OrtModule.InferenceSession;
    try {
      session = await ort.InferenceSession.create(file, {
        executionProviders: [ep],
        graphOptimizationLevel: "all",
        executionMode: "sequential",
        interOpNumThreads: 1,
        // Errors reach the caller as OrtError; a provider that fails to load would also log them.
        logSeverityLevel: ep === "cpu" ? 3 : 4,
        ...(o.threads ? { intraOpNumThreads: o.threads } : {}),
      });
    } catch (e) {
      const msg = (e as Error).message;
      if (ep !== "cpu") throw new OrtError("EP_UNAVAILABLE", `execution provider "${ep}" is not usable here: ${msg}`);
      throw new OrtError("SESSION_FAILED", `${file}: ONNX Runtime cannot load the graph: ${msg}`);
    }
    return new OrtRunner(ort, session, ep, file);
  }

  /** Positions already in the cache. */
  get position(): number {
    return this.pos;
  }

  /** Forget the cache (the next forward starts at position 0). */
  reset(): void {
    this.past = null;
    this.pos = 0;
  }

  /** Run `ids` at the next positions, appending their keys and values to the cache. */
  async forward(ids: readonly number[]): Promise<OrtForward> {
    const { ort } = this;
    if (ids.length < 1) throw new RangeError("forward takes at least one token");
    const feeds: Record<string, Tensor> = {
      input_ids: new ort.Tensor(
        "int64",
        BigInt64Array.from(ids, (i) => BigInt(i)),
        [1, ids.length],
      ),
    };
    for (let l = 0; l < this.layers; l++) {
      for (const kind of ["key", "value"]) {
        feeds[`past_${kind}.${l}`] =
          this.past?.[`present_${kind}.${l}`] ??
          new ort.Tensor("float32", new Float32Array(0), [1, this.kvHeads, 0, this.headDim]);
      }
    }
    let out: OrtModule.InferenceSession.ReturnType;
    try {
      out = await this.session.run(feeds);
    } catch (e) {
      throw new OrtError("SESSION_FAILED", `${this.file}: run failed at position ${this.pos}: ${(e as Error).message}`);
    }
    this.past = out as Record<string, Tensor>;
    this.pos += ids.length;
    const logits = out.logits.data as Float32Array;
    return {
      logits,
      rows: logits.length / this.vocab,
      selected: this.selectionNames.length ? this.selectionNames.map((n) => out[n].data as BigInt64Array) : undefined,
    };
  }

  /** Greedy decode of nTokens after the prompt, from an empty cache. */
  async greedy(
    promptIds: readonly number[],
    nTokens: number,
    onStep?: (step: OrtForward) => void,
  ): Promise<OrtGreedyResult> {
    this.reset();
    const t0 = performance.now();
    let step = await this.forward(promptIds);
    onStep?.(step);
    const ids = [argmax(lastRow(step, this.vocab))];
    const t1 = performance.now();
    while (ids.length < nTokens) {
      step = await this.forward([ids[ids.length - 1]]);
      onStep?.(step);
      ids.push(argmax(lastRow(step, this.vocab)));
    }
    return {
      ids: ids.slice(0, nTokens),
      prefillMs: t1 - t0,
      decodeMs: performance.now() - t1,
      decodeRuns: nTokens - 1,
    };
  }

  /** Teacher-forced: the greedy pick after promptIds, then after each of ids but the last, fed ids (Peer.follow). */
  async follow(promptIds: readonly number[], ids: readonly number[]): Promise<number[]> {
    this.reset();
    if (ids.length === 0) return [];
    const picks = [argmax(lastRow(await this.forward(promptIds), this.vocab))];
    for (const id of ids.slice(0, -1)) picks.push(argmax(lastRow(await this.forward([id]), this.vocab)));
    return picks;
  }

  async close(): Promise<void> {
    this.past = null;
    await this.session.release();
  }
}

/** The last position's logits of a forward call. */
export function lastRow(f: OrtForward, vocab: number): Float32Array {
  return f.logits.subarray((f.rows - 1) * vocab, f.rows * vocab);
}
