// The CUDA backend: activations in GPU memory, weights copied to the GPU on first use (each weight
// once, keeping its dtype and layout), ops from core/native/src/cuda ordered on one stream. Host code
// waits only where it reads a result back (read, topk, hireFfn's selections).
//
// Preparing sparse layouts (relayout, interleaveRows, quantize, the predictor cache) stays on the
// host: those produce host weights with the CPU backend's code and bits, and the first GPU op that
// uses one uploads it. So a predictor built for the CPU is the same predictor on the GPU.
import {
  native,
  type CudaBuffer,
  type CudaDevice,
  type CudaGraph,
  type CudaQuant,
  type CudaWeight,
} from "../native/addon.js";
import type { NativeQuant, NativeWeight } from "../native/addon.js";
import type { Activation } from "../arch/config.js";
import type {
  Backend,
  Buf,
  HireFfnResult,
  HireFfnStep,
  HireHeadStep,
  KvDtype,
  MatmulPart,
  QuantWeight,
  StepGraph,
  StepGraphs,
  Weight,
} from "./backend.js";
import { CpuBackend } from "./cpu.js";
import { UsageError } from "../loader/errors.js";

/** A GPU buffer of `length` f32 values. */
class CudaBuf implements Buf {
  constructor(
    readonly length: number,
    readonly handle: CudaBuffer,
  ) {}
}

/** No usable GPU (no CUDA in this build, no driver, no device, or a bad device index). */
export class CudaUnavailableError extends Error {
  readonly code = "CUDA_UNAVAILABLE";
  constructor(message: string) {
    super(message);
    this.name = "CudaUnavailableError";
  }
}

/** The GPUs this build can use, or why there are none. */
export function cudaDevices(): { compiled: boolean; devices: CudaDevice[]; reason: string } {
  const c = native().cuda;
  const { devices, reason } = c.devices();
  return { compiled: c.compiled(), devices, reason };
}

/** CUDA graphs of decode steps (StepGraphs): one cudaGraphLaunch per token. */
class CudaGraphs implements StepGraphs {
  private readonly c = native().cuda;

  get recording(): boolean {
    return this.c.capturing();
  }
  setStep(id: number, pos: number): void {
    this.c.setStep(id, pos);
  }
  begin(): void {
    this.c.graphBegin();
  }
  end(): StepGraph {
    return this.c.graphEnd() as unknown as StepGraph;
  }
  abort(): void {
    this.c.graphAbort();
  }
  launch(g: StepGraph): boolean {
    return this.c.graphLaunch(g as unknown as CudaGraph);
  }
  mark(i: number): void {
    this.c.mark(i);
  }
  markTimes(count: number): Float64Array {
    return this.c.markTimes(count);
  }
  hireResults(slot: number, cand: Int32Array, nCand: number, sel: Int32Array, nSel: number) {
    return this.c.hireResults(slot, cand, nCand, sel, nSel);
  }
}

export class CudaBackend implements Backend {
  readonly device: CudaDevice;
  readonly graphs: StepGraphs = new CudaGraphs();
  private readonly c = native().cuda;
  /** Host-side preparation (layouts, quantization) with the CPU backend's code. */
  private readonly host = new CpuBackend();
  private readonly weights = new WeakMap<NativeWeight, CudaWeight>();
  private readonly quants = new WeakMap<NativeQuant, CudaQuant>();

  constructor(index = 0) {
    const { devices, reason } = cudaDevices();
    if (devices.length === 0) throw new CudaUnavailableError(`no CUDA device: ${reason}`);
    const d = devices.find((x) => x.index === index);
    if (!d) throw new CudaUnavailableError(`no CUDA device ${index} (found ${devices.length})`);
    this.c.useDevice(index);
    this.device = d;
  }

  get name(): string {
    return `cuda:${this.device.index} ${this.device.name}`;
  }

  synchronize(): void {
    this.c.synchronize();
  }

  private d(b: Buf): CudaBuffer {
    if (!(b instanceof CudaBuf)) throw new TypeError("the CUDA backend was given a buffer it did not allocate");
    return b.handle;
  }

  /** The device copy of a weight, uploaded on first use. */
  private w(w: Weight): CudaWeight {
    let dw = this.weights.get(w.handle);
    if (!dw) {
      dw = this.c.uploadWeight(w.handle);
      this.weights.set(w.handle, dw);
    }
    return dw;
  }

  private q(q: QuantWeight): CudaQuant {
    let dq = this.quants.get(q.handle);
    if (!dq) {
      dq = this.c.uploadQuant(q.handle);
      this.quants.set(q.handle, dq);
    }
    return dq;
  }

  alloc(length: number): Buf {
    return new CudaBuf(length, this.c.alloc(length));
  }

  /** The batch the GPU runs were measured at (docs/cuda.md); the kernels take any count. */
  readonly prefillBatch = 64;

  allocKv(length: number, dtype: KvDtype): Buf {
    if (dtype !== "f32")
      throw new UsageError(`the CUDA backend keeps its KV cache in f32; --kv-cache ${dtype} is CPU only`);
    return this.alloc(length);
  }

  /** Host copies of whole buffers, reused: a whole-buffer read (the logits, every token) allocates once. */
  private readonly mirrors = new WeakMap<CudaBuf, Float32Array>();

  read(b: Buf, offset: number, length: number): Float32Array {
    // As on the CPU backend, what read returns for a whole buffer changes with the next read of it.
    let out: Float32Array | undefined;
    if (offset === 0 && length === b.length && b instanceof CudaBuf) {
      out = this.mirrors.get(b);
      if (!out) this.mirrors.set(b, (out = new Float32Array(length)));
    } else out = new Float32Array(length);
    this.c.read(this.d(b), offset, out);
    return out;
  }

  write(b: Buf, offset: number, data: Float32Array): void {
    this.c.write(this.d(b), offset, data);
  }

  copy2d(
    dst: Buf,
    dstOff: number,
    dstStride: number,
    src: Buf,
    srcOff: number,
    srcStride: number,
    rows: number,
    width: number,
  ): void {
    this.c.copy2d(this.d(dst), dstOff, dstStride, this.d(src), srcOff, srcStride, rows, width);
  }

  matmul(y: Buf, x: Buf, w: Weight, n: number, bias: Weight | null, accumulate = false): void {
    this.c.matmul(this.d(y), this.d(x), this.w(w), n, bias ? this.w(bias) : null, accumulate);
  }

  matmulMany(x: Buf, n: number, parts: readonly MatmulPart[]): void {
    this.c.matmulMany(
      this.d(x),
      n,
      parts.map((p) => this.d(p.y)),
      parts.map((p) => this.w(p.w)),
      parts.map((p) => (p.bias ? this.w(p.bias) : null)),
    );
  }

  gatedMatmul(
    y: Buf,
    x: Buf,
    gate: Weight,
    up: Weight,
    gateBias: Weight | null,
    upBias: Weight | null,
    n: number,
    act: Activation,
    scratchUp: Buf,
  ): void {
    const gb = gateBias ? this.w(gateBias) : null;
    const ub = upBias ? this.w(upBias) : null;
    this.c.gatedMatmul(this.d(y), this.d(x), this.w(gate), this.w(up), gb, ub, n, act, this.d(scratchUp));
  }

  embed(y: Buf, w: Weight, ids: Int32Array, scale?: number): void {
    this.c.embed(this.d(y), this.w(w), ids, this.c.capturing(), scale);
  }

  rmsNorm(y: Buf, x: Buf, g: Weight, n: number, eps: number): void {
    this.c.rmsNorm(this.d(y), this.d(x), this.w(g), n, eps);
  }

  layerNorm(y: Buf, x: Buf, g: Weight, b: Weight, n: number, eps: number): void {
    this.c.layerNorm(this.d(y), this.d(x), this.w(g), this.w(b), n, eps);
  }

  rope(
    x: Buf,
    n: number,
    heads: number,
    headDim: number,
    positions: Int32Array,
    invFreq: Float32Array,
    factor = 1,
  ): void {
    this.c.rope(this.d(x), n, heads, headDim, positions, invFreq, this.c.capturing(), factor);
  }

  cacheWrite(
    kc: Buf,
    vc: Buf,
    k: Buf,
    v: Buf,
    n: number,
    kvHeads: number,
    headDim: number,
    pos0: number,
    capacity: number,
  ): void {
    this.c.cacheWrite(
      this.d(kc),
      this.d(vc),
      this.d(k),
      this.d(v),
      n,
      kvHeads,
      headDim,
      pos0,
      capacity,
      this.c.capturing(),
    );
  }

  ropeCacheWrite(
    q: Buf,
    k: Buf,
    v: Buf,
    kc: Buf,
    vc: Buf,
    n: number,
    heads: number,
    kvHeads: number,
    headDim: number,
    positions: Int32Array,
    invFreq: Float32Array | null,
    pos0: number,
    capacity: number,
    ropeFactor = 1,
  ): void {
    const [dq, dk, dv, dkc, dvc] = [q, k, v, kc, vc].map((b) => this.d(b));
    const fromStep = this.c.capturing();
    this.c.ropeCacheWrite(
      dq,
      dk,
      dv,
      dkc,
      dvc,
      n,
      heads,
      kvHeads,
      headDim,
      positions,
      invFreq,
      pos0,
      capacity,
      fromStep,
      ropeFactor,
    );
  }

  argmax(x: Buf, n: number): void {
    this.c.argmax(this.d(x), n);
  }

  readArgmax(): number {
    return this.c.readArgmax();
  }

  attention(
    out: Buf,
    q: Buf,
    kc: Buf,
    vc: Buf,
    n: number,
    heads: number,
    kvHeads: number,
    headDim: number,
    pos0: number,
    capacity: number,
    scale: number,
    window?: number,
    softcap?: number,
  ): void {
    const fromStep = this.c.capturing();
    this.c.attention(
      this.d(out),
      this.d(q),
      this.d(kc),
      this.d(vc),
      n,
      heads,
      kvHeads,
      headDim,
      pos0,
      capacity,
      scale,
      fromStep,
      window,
      softcap,
    );
  }

  softcap(x: Buf, count: number, cap: number): void {
    this.c.softcap(this.d(x), count, cap);
  }

  gatedAct(gate: Buf, up: Buf, count: number, act: Activation): void {
    this.c.gatedAct(this.d(gate), this.d(up), count, act);
  }

  activate(x: Buf, count: number, act: Activation): void {
    this.c.activate(this.d(x), count, act);
  }

  add(y: Buf, x: Buf, count: number): void {
    this.c.add(this.d(y), this.d(x), count);
  }

  gather(y: Buf, x: Buf, idx: Int32Array, count: number): void {
    this.c.gather(this.d(y), this.d(x), idx, count);
  }

  relayout(w: Weight, transposed: boolean): Weight {
    return this.host.relayout(w, transposed);
  }

  interleaveRows(a: Weight, b: Weight): Weight {
    return this.host.interleaveRows(a, b);
  }

  quantize(w: Weight, bits: 4 | 8, groupSize: number): QuantWeight {
    return this.host.quantize(w, bits, groupSize);
  }

  writeQuant(q: QuantWeight, file: string): void {
    this.host.writeQuant(q, file);
  }

  readQuant(file: string, rows: number, cols: number, bits: 4 | 8, groupSize: number): QuantWeight {
    return this.host.readQuant(file, rows, cols, bits, groupSize);
  }

  quantMatvec(y: Buf, x: Buf, q: QuantWeight): void {
    this.c.quantMatvec(this.d(y), this.d(x), this.q(q));
  }

  matvecRows(y: Buf, x: Buf, w: Weight, idx: Int32Array, count: number): void {
    this.c.matvecRows(this.d(y), this.d(x), this.w(w), idx, count);
  }

  accumulateCols(y: Buf, a: Buf, w: Weight, idx: Int32Array, count: number): void {
    this.c.accumulateCols(this.d(y), this.d(a), this.w(w), idx, count);
  }

  topk(values: Buf, n: number, k: number, byAbs: boolean, shards: number, out: Int32Array): number {
    return this.c.topk(this.d(values), n, k, byAbs, shards, out);
  }

  hireFfn(s: HireFfnStep): HireFfnResult {
    return this.c.hireFfn(
      this.d(s.out),
      this.d(s.x),
      this.q(s.predictor),
      s.biasIn ? this.d(s.biasIn) : null,
      this.w(s.rows),
      s.gated,
      s.activation,
      this.w(s.down),
      s.k,
      s.kp,
      s.shards,
      this.d(s.scores),
      s.cand,
      s.sel,
      this.d(s.aSel),
      s.slot,
    );
  }

  hireHead(s: HireHeadStep): { candidates: number; selected: number } {
    return this.c.hireHead(
      this.d(s.logits),
      this.d(s.x),
      this.q(s.predictor),
      this.w(s.head),
      s.k,
      s.kp,
      s.shards,
      this.d(s.scores),
      s.slot,
    );
  }

  /** Device memory read bandwidth, GB/s (the roofline of GPU decode). */
  readBandwidth(bytes: number, reps: number): number {
    return this.c.readBandwidth(bytes, reps);
  }
}
