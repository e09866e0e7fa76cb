// Weights for the ONNX export, read from the checkpoint files as f32 (exactly: bf16/f16 → f32 is
// lossless), in the layouts the graph wants, and the HiRE predictor as MatMulNBits blocks.
//
// The quantizer here is the engine's (core/native/src/sparse_ops.cc quantize_row) rewritten in
// TypeScript with the same f32 rounding steps, so the ONNX predictor dequantizes to the same values
// as ours: per group of G values along a row, scale = f16(max|w| / qmax) (qmax 7 for int4, 127 for
// int8), code = round-half-even(clamp(w / scale, ±qmax)).
import { closeSync, openSync, readSync } from "node:fs";
import type { Weight } from "../loader/safetensors.js";
import { f16ToF32, f32ToF16 } from "../modelgen/safetensors-writer.js";
import { isQuantDType } from "../loader/weight-format.js";

/** A tensor's stored values as f32, in its stored layout. */
export function readF32(w: Weight): Float32Array {
  if (w.values) return w.values.slice(); // computed at load, not in the file
  if (isQuantDType(w.dtype))
    throw new Error(`${w.name}: int8 and int4 weights are not the file's; load the model with its file's weights`);
  const n = w.shape.reduce((a, d) => a * d, 1);
  const out = new Float32Array(n);
  const fd = openSync(w.file, "r");
  try {
    const chunkElems = 1 << 22;
    const esize = w.dtype === "F32" ? 4 : 2;
    const buf = Buffer.allocUnsafe(Math.min(n, chunkElems) * esize);
    for (let done = 0; done < n;) {
      const count = Math.min(chunkElems, n - done);
      const want = count * esize;
      let got = 0;
      while (got < want) {
        const r = readSync(fd, buf, got, want - got, w.offset + done * esize + got);
        if (r <= 0) throw new Error(`${w.file}: unexpected end of file reading ${w.name}`);
        got += r;
      }
      if (w.dtype === "F32") {
        out.set(new Float32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + want)), done);
      } else {
        const u16 = new Uint16Array(buf.buffer, buf.byteOffset, count);
        if (w.dtype === "BF16") {
          const u32 = new Uint32Array(out.buffer, done * 4, count);
          for (let i = 0; i < count; i++) u32[i] = u16[i] << 16;
        } else {
          for (let i = 0; i < count; i++) out[done + i] = F16_TABLE[u16[i]];
        }
      }
      done += count;
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

const F16_TABLE = (() => {
  const t = new Float32Array(65536);
  for (let i = 0; i < 65536; i++) t[i] = f16ToF32(i);
  return t;
})();

/** W as [rows][cols] = [outputs][inputs] (PyTorch nn.Linear layout), transposing GPT-2 Conv1D. */
export function rowsF32(w: Weight): Float32Array {
  const data = readF32(w);
  return w.transposed ? transpose(data, w.cols, w.rows) : data;
}

/** W as [cols][rows] = [inputs][outputs]: one contiguous row per input (a neuron's W_down column). */
export function colsF32(w: Weight): Float32Array {
  const data = readF32(w);
  return w.transposed ? data : transpose(data, w.rows, w.cols);
}

/** [r][c] → [c][r]. */
export function transpose(m: Float32Array, r: number, c: number): Float32Array {
  const out = new Float32Array(m.length);
  const B = 64;
  for (let i0 = 0; i0 < r; i0 += B) {
    for (let j0 = 0; j0 < c; j0 += B) {
      const i1 = Math.min(r, i0 + B);
      const j1 = Math.min(c, j0 + B);
      for (let i = i0; i < i1; i++) for (let j = j0; j < j1; j++) out[j * r + i] = m[i * c + j];
    }
  }
  return out;
}

/** Two [n][d] matrices as one [n][2d]: row i = a_i ‖ b_i (a neuron's gate and up rows, one read). */
export function interleaveRows(a: Float32Array, b: Float32Array, n: number, d: number): Float32Array {
  const out = new Float32Array(2 * n * d);
  for (let i = 0; i < n; i++) {
    out.set(a.subarray(i * d, (i + 1) * d), 2 * i * d);
    out.set(b.subarray(i * d, (i + 1) * d), (2 * i + 1) * d);
  }
  return out;
}

/** A group-quantized matrix in com.microsoft MatMulNBits layout. */
export interface NBits {
  bits: 4 | 8;
  blockSize: number;
  rows: number; // N
  cols: number; // K
  /** [N][ceil(K / blockSize)][blockSize * bits / 8]: unsigned codes, zero point 2^(bits-1). */
  codes: Uint8Array;
  /** [N * blocks]: the f16-rounded scales as f32. */
  scales: Float32Array;
}

const roundEven = (v: number): number => {
  const r = Math.round(v);
  return r - v === 0.5 && r % 2 !== 0 ? r - 1 : r;
};

/**
 * Quantize the [rows][cols] matrix `m` as the engine's predictor does, laid out for MatMulNBits:
 * 4-bit blocks hold value 2j in the low nibble and 2j + 1 in the high nibble of byte j.
 */
export function quantizeNBits(m: Float32Array, rows: number, cols: number, bits: 4 | 8, group: number): NBits {
  const qmax = bits === 8 ? 127 : 7;
  const zero = bits === 8 ? 128 : 8;
  const blocks = Math.ceil(cols / group);
  const blob = (group * bits) / 8;
  const codes = new Uint8Array(rows * blocks * blob);
  const scales = new Float32Array(rows * blocks);
  const q = new Int32Array(group);
  for (let r = 0; r < rows; r++) {
    const row = m.subarray(r * cols, (r + 1) * cols);
    for (let g = 0; g < blocks; g++) {
      const lo = g * group;
      const n = Math.min(group, cols - lo);
      let amax = 0;
      for (let j = 0; j < n; j++) {
        const a = Math.abs(row[lo + j]);
        if (a > amax) amax = a;
      }
      let s16 = f32ToF16(Math.fround(amax / qmax));
      if (s16 === 0x7c00) s16 = 0x7bff; // beyond f16: the largest finite scale
      const d = f16ToF32(s16);
      scales[r * blocks + g] = d;
      for (let j = 0; j < group; j++) {
        const v = j < n ? row[lo + j] : 0;
        let t = d > 0 ? Math.fround(v / d) : 0;
        if (Number.isNaN(t)) t = 0;
        q[j] = roundEven(Math.max(-qmax, Math.min(qmax, t)));
      }
      const base = (r * blocks + g) * blob;
      if (bits === 8) for (let j = 0; j < group; j++) codes[base + j] = q[j] + zero;
      else for (let j = 0; j < group / 2; j++) codes[base + j] = (q[2 * j] + zero) | ((q[2 * j + 1] + zero) << 4);
    }
  }
  return { bits, blockSize: group, rows, cols, codes, scales };
}

/** The dequantized matrix [rows][cols] (for group sizes MatMulNBits does not take). */
export function dequantizeNBits(q: NBits): Float32Array {
  const { rows, cols, blockSize: G, bits } = q;
  const blocks = Math.ceil(cols / G);
  const blob = (G * bits) / 8;
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) {
      const g = Math.floor(c / G);
      const j = c % G;
      const base = (r * blocks + g) * blob;
      const code = bits === 8 ? q.codes[base + j] - 128 : ((q.codes[base + (j >> 1)] >> (4 * (j & 1))) & 15) - 8;
      out[r * cols + c] = code * q.scales[r * blocks + g];
    }
  }
  return out;
}
