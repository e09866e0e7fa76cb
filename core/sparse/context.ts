// State shared by the sparse layers of one session: the backend, the live settings, whether this
// token is audited, and scratch buffers sized once for the model (hot loops allocate nothing).
import type { Backend, Buf, Weight } from "../backend/backend.js";
import type { ModelConfig } from "../arch/config.js";
import type { Workspace } from "../engine/transformer.js";
import type { SparsitySettings } from "./settings.js";

export class SparseScratch {
  readonly actN: Buf; // activations of a batch [batch][F] (the workspace's FFN buffers)
  readonly otherN: Buf;
  readonly scores: Buf; // predictor scores [max(F, V)]
  readonly g: Buf; // exact activations of candidates [max(F, V)]
  readonly u: Buf;
  readonly aSel: Buf; // activations of the selected neurons
  readonly outOne: Buf; // one token's FFN output [H]
  readonly hSel: Buf; // DIP: selected input entries [H]
  readonly auditAct: Buf;
  readonly auditOther: Buf;
  readonly auditOut: Buf; // [max(H, V)]
  readonly cand: Int32Array;
  readonly sel: Int32Array;
  readonly selPos: Int32Array;
  readonly inSel: Int32Array;
  readonly auditTop: Int32Array;
  readonly pairIdx: Int32Array; // HiRE: rows 2c, 2c+1 of the interleaved gate/up matrix [2F]
  readonly pairOut: Buf; // their outputs, interleaved [2F]

  private pairBatch?: Buf;

  /** A batch's outputs of a whole interleaved gate/up matrix [batch][2F], allocated on first use. */
  pairN(): Buf {
    return (this.pairBatch ??= this.b.alloc(this.ws.batch * 2 * this.c.intermediate));
  }

  constructor(
    private readonly b: Backend,
    private readonly c: ModelConfig,
    private readonly ws: Workspace,
  ) {
    const F = c.intermediate;
    const N = Math.max(F, c.vocab);
    this.actN = ws.ff1;
    this.otherN = ws.ff2;
    this.scores = b.alloc(N);
    this.g = b.alloc(N);
    this.u = b.alloc(F);
    this.aSel = b.alloc(N);
    this.outOne = b.alloc(c.hidden);
    this.hSel = b.alloc(c.hidden);
    this.auditAct = b.alloc(F);
    this.auditOther = b.alloc(c.gatedFfn ? F : 0);
    this.auditOut = b.alloc(Math.max(c.hidden, c.vocab));
    this.cand = new Int32Array(N);
    this.sel = new Int32Array(N);
    this.selPos = new Int32Array(N);
    this.inSel = new Int32Array(c.hidden);
    this.auditTop = new Int32Array(N);
    this.pairIdx = new Int32Array(c.gatedFfn ? 2 * F : 0);
    this.pairOut = b.alloc(c.gatedFfn ? 2 * F : 0);
  }
}

/** What one HiRE step writes besides its output: its scores, candidates and selection. */
export interface HireBuffers {
  scores: Buf;
  cand: Int32Array;
  sel: Int32Array;
  aSel: Buf;
}

export class SparseContext {
  /** Compare with the dense computation on this token (set by the Sparsifier before each token). */
  auditNow = false;
  /** The layer whose scores the telemetry carries (-1 = none): a UI inspecting one layer. */
  inspectLayer = -1;
  readonly scratch: SparseScratch;

  constructor(
    readonly b: Backend,
    readonly c: ModelConfig,
    ws: Workspace,
    public settings: SparsitySettings,
  ) {
    this.scratch = new SparseScratch(b, c, ws);
  }

  private readonly slots: HireBuffers[] = [];

  /**
   * HiRE buffers of concurrent step `slot` (a mixture layer's routed experts run at once: one slot
   * each), sized for the model's widest FFN and allocated on first use.
   */
  hireSlot(slot: number): HireBuffers {
    const F = this.c.intermediate;
    return (this.slots[slot] ??= {
      scores: this.b.alloc(F),
      cand: new Int32Array(F),
      sel: new Int32Array(F),
      aSel: this.b.alloc(F),
    });
  }

  /** `w` in the requested storage layout: itself if it already is, else a copy. */
  layout(w: Weight, transposed: boolean): Weight {
    return w.transposed === transposed ? w : this.b.relayout(w, transposed);
  }

  /** A backend buffer holding `v` (biases the sparse ops add on the device). */
  upload(v: Float32Array): Buf {
    const buf = this.b.alloc(v.length);
    this.b.write(buf, 0, v);
    return buf;
  }

  /** A bias vector (any dtype) as f32. */
  readBias(w: Weight): Float32Array {
    const buf = this.b.alloc(w.cols);
    this.b.embed(buf, w, Int32Array.of(0));
    return Float32Array.from(this.b.read(buf, 0, w.cols));
  }
}
