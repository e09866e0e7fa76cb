// The CPU backend: Float32Array buffers (KV caches: Float32Array or, f16, Uint16Array) and the native
// AVX2/AVX-512/portable kernels in core/native.
import { native } from "../native/addon.js";
import type { Activation } from "../arch/config.js";
import {
  KV_ELEMENT_BYTES,
  type Backend,
  type Buf,
  type HireFfnResult,
  type HireFfnStep,
  type HireHeadStep,
  type KvDtype,
  type MatmulPart,
  type QuantWeight,
  type Weight,
} from "./backend.js";
import type { HireFfnArgs, KvArray } from "../native/addon.js";
import { isQuantDType } from "../loader/weight-format.js";

const f32 = (b: Buf) => b as Float32Array;
const kv = (b: Buf) => b as KvArray;

/** Transparent huge pages on x86-64 Linux. */
const HUGE_PAGE_BYTES = 2 * 1024 * 1024;
/** The most KV-cache bytes one buffer of allocKvSet holds (one cache may be larger). */
export const KV_BUFFER_BYTES = 1024 * 1024 * 1024;

/**
 * Consecutive caches (their byte sizes) packed into buffers of at most `cap` bytes, in order: the
 * indices of each buffer's caches. A cache larger than `cap` gets a buffer of its own.
 */
export function kvBufferGroups(bytes: readonly number[], cap: number): number[][] {
  const groups: number[][] = [];
  let sum = 0;
  bytes.forEach((b, i) => {
    if (groups.length === 0 || sum + b > cap) {
      groups.push([]);
      sum = 0;
    }
    groups[groups.length - 1].push(i);
    sum += b;
  });
  return groups;
}

/** The most threads the native pool runs (setThreads' range is 1..MAX_THREADS). */
export const MAX_THREADS = 256;

export class CpuBackend implements Backend {
  private readonly n = native();

  constructor(threads?: number) {
    if (threads !== undefined) {
      if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS)
        throw new RangeError(`threads must be an integer in 1..${MAX_THREADS}, got ${threads}`);
      this.n.setThreads(threads);
    }
  }

  get name(): string {
    return `cpu (${this.n.cpuInfo().path} kernels, ${this.threads} threads)`;
  }

  synchronize(): void {}

  get threads(): number {
    return this.n.getThreads();
  }

  // Bigger batches pack each weight panel for more tokens: on the Zen 5 VM, llama-3.2-1b prefill of
  // 200, 1024 and 3000 tokens took 1.38, 6.93 and 22.7 s in batches of 64 against 1.22, 6.18 and
  // 20.3 in batches of 256 (128: 6.44 s for 1024).
  readonly prefillBatch = 256;

  readonly quantizedWeights = true;

  // Cache-line aligned: typed arrays start 16 bytes into a line, and then every 64-byte load of a KV
  // row straddles two lines (attention over 16 layers' caches measured 13 % slower at head_dim 128
  // and 21 % at 256, the same at 64).
  alloc(length: number): Buf {
    const a = new Float32Array(length + 15);
    const at = this.n.cacheLineOffset(a);
    return a.subarray(at, at + length);
  }

  allocKv(length: number, dtype: KvDtype): Buf {
    return this.allocKvSet([length], dtype)[0];
  }

  // A KVCache's caches in as few buffers as possible, each cache on a cache line, each buffer on 2 MiB
  // pages once it spans one: the caches are JavaScript memory (on 4 KiB pages by default), and a
  // decode step touches every layer's cache in a few places per head. Llama 3.2 1B's shape, 16
  // layers' attention at position 4000: 11.5 -> 10.1 ms; at 1000: 3.2 -> 2.8 ms. A buffer holds at
  // most KV_BUFFER_BYTES (unless one cache is larger), so a long context never needs one allocation
  // past what a JavaScript engine allows for an ArrayBuffer.
  allocKvSet(lengths: readonly number[], dtype: KvDtype): Buf[] {
    const lineBytes = (n: number) => Math.ceil((n * KV_ELEMENT_BYTES[dtype]) / 64) * 64;
    return kvBufferGroups(lengths.map(lineBytes), KV_BUFFER_BYTES).flatMap((group) => {
      const bytes = group.reduce((a, i) => a + lineBytes(lengths[i]), 0);
      let a: Float32Array;
      if (bytes >= HUGE_PAGE_BYTES) {
        const raw = new Float32Array(bytes / 4 + HUGE_PAGE_BYTES / 4);
        const at = this.n.hugePageOffset(raw); // the start of a 2 MiB page: on a cache line too
        a = raw.subarray(at, at + bytes / 4);
      } else {
        a = this.alloc(bytes / 4) as Float32Array;
      }
      let offset = a.byteOffset;
      return group.map((i) => {
        const buf =
          dtype === "f32"
            ? new Float32Array(a.buffer, offset, lengths[i])
            : new Uint16Array(a.buffer, offset, lengths[i]);
        offset += lineBytes(lengths[i]);
        return buf;
      });
    });
  }

  prefaultKv(caches: readonly Buf[], parts: number): void {
    for (const c of caches) {
      const a = c as Float32Array | Uint16Array;
      const stride = Math.floor(a.length / parts);
      for (let p = 0; p < parts; p++) a[p * stride] = 0; // a write: a read would map the zero page
    }
  }

  read(b: Buf, offset: number, length: number): Float32Array {
    return f32(b).subarray(offset, offset + length);
  }

  write(b: Buf, offset: number, data: Float32Array): void {
    const d = f32(b);
    // Writing back a view that read() returned is a no-op.
    if (data.buffer === d.buffer && data.byteOffset === d.byteOffset + offset * 4) return;
    d.set(data, offset);
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
    const d = f32(dst);
    const s = f32(src);
    if (width === 1) {
      for (let i = 0; i < rows; i++) d[dstOff + i * dstStride] = s[srcOff + i * srcStride];
      return;
    }
    for (let i = 0; i < rows; i++) {
      const from = srcOff + i * srcStride;
      d.set(s.subarray(from, from + width), dstOff + i * dstStride);
    }
  }

  /** Room for a product that is then added (matmul with accumulate). */
  private sum = new Float32Array(0);

  matmul(y: Buf, x: Buf, w: Weight, n: number, bias: Weight | null, accumulate = false): void {
    if (!accumulate) {
      this.n.matmul(f32(y), f32(x), w.handle, n, bias ? bias.handle : null);
      return;
    }
    const len = n * w.rows;
    if (this.sum.length < len) this.sum = new Float32Array(len);
    const t = this.sum.subarray(0, len);
    this.n.matmul(t, f32(x), w.handle, n, bias ? bias.handle : null);
    this.n.add(f32(y), t, len);
  }

  matmulMany(x: Buf, n: number, parts: readonly MatmulPart[]): void {
    // One token: one dispatch over all the parts' rows (see matvec_many in ops.cc).
    if (n === 1 && parts.length > 1 && parts.every((p) => !p.w.transposed)) {
      this.n.matmulMany(f32(x), ...parts.flatMap((p) => [f32(p.y), p.w.handle, p.bias ? p.bias.handle : null]));
      return;
    }
    for (const p of parts) this.matmul(p.y, x, p.w, n, p.bias);
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
    this.matmulMany(x, n, [
      { y, w: gate, bias: gateBias },
      { y: scratchUp, w: up, bias: upBias },
    ]);
    this.gatedAct(y, scratchUp, n * gate.rows, act);
  }

  embed(y: Buf, w: Weight, ids: Int32Array, scale?: number): void {
    this.n.embed(f32(y), w.handle, ids, scale);
  }

  rmsNorm(y: Buf, x: Buf, g: Weight, n: number, eps: number): void {
    this.n.rmsNorm(f32(y), f32(x), g.handle, n, eps);
  }

  layerNorm(y: Buf, x: Buf, g: Weight, b: Weight, n: number, eps: number): void {
    this.n.layerNorm(f32(y), f32(x), g.handle, b.handle, n, eps);
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
    this.n.rope(f32(x), n, heads, headDim, positions, invFreq, factor);
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
    this.n.cacheWrite(kv(kc), kv(vc), f32(k), f32(v), n, kvHeads, headDim, pos0, capacity);
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
    if (invFreq) {
      this.rope(q, n, heads, headDim, positions, invFreq, ropeFactor);
      this.rope(k, n, kvHeads, headDim, positions, invFreq, ropeFactor);
    }
    this.cacheWrite(kc, vc, k, v, n, kvHeads, headDim, pos0, capacity);
  }

  private argmaxIndex = 0;

  argmax(x: Buf, n: number): void {
    this.argmaxIndex = this.n.argmax(f32(x), n);
  }

  readArgmax(): number {
    return this.argmaxIndex;
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
    this.n.attention(
      f32(out),
      f32(q),
      kv(kc),
      kv(vc),
      n,
      heads,
      kvHeads,
      headDim,
      pos0,
      capacity,
      scale,
      window,
      softcap,
    );
  }

  softcap(x: Buf, count: number, cap: number): void {
    this.n.softcap(f32(x), count, cap);
  }

  gatedAct(gate: Buf, up: Buf, count: number, act: Activation): void {
    if (act === "silu") {
      this.n.siluMul(f32(gate), f32(up), count);
      return;
    }
    this.n.activate(f32(gate), count, act);
    const g = f32(gate);
    const u = f32(up);
    for (let i = 0; i < count; i++) g[i] *= u[i];
  }

  activate(x: Buf, count: number, act: Activation): void {
    this.n.activate(f32(x), count, act);
  }

  add(y: Buf, x: Buf, count: number): void {
    this.n.add(f32(y), f32(x), count);
  }

  gather(y: Buf, x: Buf, idx: Int32Array, count: number): void {
    const d = f32(y);
    const s = f32(x);
    if (count > idx.length || count > d.length) throw new RangeError(`gather: count ${count} exceeds idx or y`);
    for (let i = 0; i < count; i++) {
      const j = idx[i];
      if (!(j >= 0 && j < s.length)) throw new RangeError(`gather: idx[${i}] = ${j} is outside x (${s.length})`);
      d[i] = s[j];
    }
  }

  relayout(w: Weight, transposed: boolean): Weight {
    const handle = this.n.relayout(w.handle, transposed);
    return {
      handle,
      dtype: isQuantDType(w.dtype) ? "BF16" : w.dtype, // quantized groups run along rows: columns come as bf16
      rows: w.rows,
      cols: w.cols,
      transposed,
      byteLength: this.n.weightInfo(handle).bytes,
    };
  }

  releaseWeight(w: Weight): number {
    return this.n.releaseWeight(w.handle);
  }

  interleaveRows(a: Weight, b: Weight): Weight {
    const handle = this.n.interleaveRows(a.handle, b.handle);
    return {
      handle,
      dtype: a.dtype,
      rows: 2 * a.rows,
      cols: a.cols,
      transposed: false,
      byteLength: this.n.weightInfo(handle).bytes,
    };
  }

  quantize(w: Weight, bits: 4 | 8, groupSize: number): QuantWeight {
    const handle = this.n.quantize(w.handle, bits, groupSize);
    return { handle, rows: w.rows, cols: w.cols, bits, groupSize, byteLength: this.n.quantInfo(handle).bytes };
  }

  writeQuant(q: QuantWeight, file: string): void {
    this.n.quantWrite(q.handle, file);
  }

  readQuant(file: string, rows: number, cols: number, bits: 4 | 8, groupSize: number): QuantWeight {
    const handle = this.n.quantRead(file, rows, cols, bits, groupSize);
    return { handle, rows, cols, bits, groupSize, byteLength: this.n.quantInfo(handle).bytes };
  }

  quantMatvec(y: Buf, x: Buf, q: QuantWeight): void {
    this.n.quantMatvec(f32(y), f32(x), q.handle);
  }

  matvecRows(y: Buf, x: Buf, w: Weight, idx: Int32Array, count: number): void {
    this.n.matvecRows(f32(y), f32(x), w.handle, idx, count);
  }

  accumulateCols(y: Buf, a: Buf, w: Weight, idx: Int32Array, count: number): void {
    this.n.accumulateCols(f32(y), f32(a), w.handle, idx, count);
  }

  topk(values: Buf, n: number, k: number, byAbs: boolean, shards: number, out: Int32Array): number {
    return this.n.topk(f32(values), n, k, byAbs, shards, out);
  }

  hireHead(s: HireHeadStep): { candidates: number; selected: number } {
    return this.n.hireHead(
      f32(s.logits),
      f32(s.x),
      s.predictor.handle,
      s.head.handle,
      s.k,
      s.kp,
      s.shards,
      f32(s.scores),
    );
  }

  hireFfn(s: HireFfnStep): HireFfnResult {
    return this.n.hireFfn(...hireFfnArgs(s));
  }

  hireFfnBatch(steps: readonly HireFfnStep[]): HireFfnResult[] {
    return this.n.hireFfnBatch(steps.map(hireFfnArgs));
  }
}

/** A HiRE FFN step as the addon's hireFfn takes it. */
function hireFfnArgs(s: HireFfnStep): HireFfnArgs {
  return [
    f32(s.out),
    f32(s.x),
    s.predictor.handle,
    s.biasIn && f32(s.biasIn),
    s.rows.handle,
    s.gated,
    s.activation,
    s.down.handle,
    s.k,
    s.kp,
    s.shards,
    f32(s.scores),
    s.cand,
    s.sel,
    f32(s.aSel),
  ];
}
