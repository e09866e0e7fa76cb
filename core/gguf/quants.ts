// GGML tensor types as GGUF files store them, and their dequantization to float32: the block layouts
// of ggml's quantized types (ggml-common.h), so that a llama.cpp model file (Q4_K_M, Q8_0, ...)
// can be imported into the engine's f16 weights. Blocks are read in file order; every type here
// turns each block into its values the way ggml's `dequantize_row_*` does (the same float32 products).
// test/gguf-import.test.ts checks each type against values gguf-py (llama.cpp's Python package)
// dequantized from a file llama-quantize wrote.

/** ggml's type ids (enum ggml_type) that model files use. */
export enum GgmlTypeId {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  BF16 = 30,
}

/** Values per block and bytes per block of each type this module reads. */
export const GGML_BLOCKS: Readonly<Record<GgmlTypeId, { values: number; bytes: number; name: string }>> = {
  [GgmlTypeId.F32]: { values: 1, bytes: 4, name: "F32" },
  [GgmlTypeId.F16]: { values: 1, bytes: 2, name: "F16" },
  [GgmlTypeId.BF16]: { values: 1, bytes: 2, name: "BF16" },
  [GgmlTypeId.Q4_0]: { values: 32, bytes: 18, name: "Q4_0" },
  [GgmlTypeId.Q4_1]: { values: 32, bytes: 20, name: "Q4_1" },
  [GgmlTypeId.Q5_0]: { values: 32, bytes: 22, name: "Q5_0" },
  [GgmlTypeId.Q5_1]: { values: 32, bytes: 24, name: "Q5_1" },
  [GgmlTypeId.Q8_0]: { values: 32, bytes: 34, name: "Q8_0" },
  [GgmlTypeId.Q2_K]: { values: 256, bytes: 84, name: "Q2_K" },
  [GgmlTypeId.Q3_K]: { values: 256, bytes: 110, name: "Q3_K" },
  [GgmlTypeId.Q4_K]: { values: 256, bytes: 144, name: "Q4_K" },
  [GgmlTypeId.Q5_K]: { values: 256, bytes: 176, name: "Q5_K" },
  [GgmlTypeId.Q6_K]: { values: 256, bytes: 210, name: "Q6_K" },
};

/** ggml's names of the types it has that this module does not read (for the error). */
const OTHER_TYPE_NAMES: Record<number, string> = {
  9: "Q8_1",
  15: "Q8_K",
  16: "IQ2_XXS",
  17: "IQ2_XS",
  18: "IQ3_XXS",
  19: "IQ1_S",
  20: "IQ4_NL",
  21: "IQ3_S",
  22: "IQ2_S",
  23: "IQ4_XS",
  24: "I8",
  25: "I16",
  26: "I32",
  27: "I64",
  28: "F64",
  29: "IQ1_M",
  34: "TQ1_0",
  35: "TQ2_0",
  39: "MXFP4",
};

export function isSupportedType(t: number): t is GgmlTypeId {
  return Object.prototype.hasOwnProperty.call(GGML_BLOCKS, t);
}

export function ggmlTypeName(t: number): string {
  return isSupportedType(t) ? GGML_BLOCKS[t].name : (OTHER_TYPE_NAMES[t] ?? `type ${t}`);
}

/** Bytes `n` values of type `t` take, or undefined when n is not a whole number of blocks. */
export function ggmlBytes(t: GgmlTypeId, n: number): number | undefined {
  const b = GGML_BLOCKS[t];
  return n % b.values === 0 ? (n / b.values) * b.bytes : undefined;
}

/** Every f16 bit pattern's value: the blocks' scales are f16. */
const F16_VALUES = (() => {
  const out = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    out[h] =
      exp === 0
        ? sign * frac * 2 ** -24
        : exp === 31
          ? frac
            ? NaN
            : sign * Infinity
          : sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  return out;
})();

/** The `n` values stored as type `t` in `src` (which holds exactly their bytes), as float32. */
export function dequantize(t: GgmlTypeId, src: Uint8Array, n: number): Float32Array {
  const bytes = ggmlBytes(t, n);
  if (bytes === undefined || bytes !== src.byteLength) {
    throw new RangeError(`dequantize: ${n} values of ${ggmlTypeName(t)} do not fill ${src.byteLength} bytes`);
  }
  const y = new Float32Array(n);
  const u16 = (o: number) => src[o] | (src[o + 1] << 8);
  const f16 = (o: number) => F16_VALUES[u16(o)];
  const blocks = n / GGML_BLOCKS[t].values;
  switch (t) {
    case GgmlTypeId.F32:
      new Uint8Array(y.buffer).set(src);
      break;
    case GgmlTypeId.F16:
      for (let i = 0; i < n; i++) y[i] = f16(2 * i);
      break;
    case GgmlTypeId.BF16: {
      const bits = new Uint32Array(y.buffer);
      for (let i = 0; i < n; i++) bits[i] = u16(2 * i) << 16;
      break;
    }
    case GgmlTypeId.Q4_0:
    case GgmlTypeId.Q4_1:
      // d (and m for Q4_1), then 16 bytes: value j in the low nibble of byte j, value j + 16 in its high one.
      for (let b = 0, o = 0, k = 0; b < blocks; b++, k += 32) {
        const d = f16(o);
        const one = t === GgmlTypeId.Q4_1;
        const m = one ? f16(o + 2) : 0;
        const q = o + (one ? 4 : 2);
        for (let j = 0; j < 16; j++) {
          const lo = src[q + j] & 15;
          const hi = src[q + j] >> 4;
          y[k + j] = one ? lo * d + m : (lo - 8) * d;
          y[k + j + 16] = one ? hi * d + m : (hi - 8) * d;
        }
        o += one ? 20 : 18;
      }
      break;
    case GgmlTypeId.Q5_0:
    case GgmlTypeId.Q5_1:
      // As Q4 with a fifth bit per value from a 32-bit mask (value j's is bit j).
      for (let b = 0, o = 0, k = 0; b < blocks; b++, k += 32) {
        const one = t === GgmlTypeId.Q5_1;
        const d = f16(o);
        const m = one ? f16(o + 2) : 0;
        const h = o + (one ? 4 : 2);
        const qh = (src[h] | (src[h + 1] << 8) | (src[h + 2] << 16) | (src[h + 3] << 24)) >>> 0;
        const q = h + 4;
        for (let j = 0; j < 16; j++) {
          const lo = (src[q + j] & 15) | (((qh >>> j) & 1) << 4);
          const hi = (src[q + j] >> 4) | (((qh >>> (j + 16)) & 1) << 4);
          y[k + j] = one ? lo * d + m : (lo - 16) * d;
          y[k + j + 16] = one ? hi * d + m : (hi - 16) * d;
        }
        o += one ? 24 : 22;
      }
      break;
    case GgmlTypeId.Q8_0:
      for (let b = 0, o = 0, k = 0; b < blocks; b++, o += 34, k += 32) {
        const d = f16(o);
        for (let j = 0; j < 32; j++) y[k + j] = ((src[o + 2 + j] << 24) >> 24) * d;
      }
      break;
    case GgmlTypeId.Q2_K:
      dequantQ2K(src, y, blocks, f16);
      break;
    case GgmlTypeId.Q3_K:
      dequantQ3K(src, y, blocks, f16);
      break;
    case GgmlTypeId.Q4_K:
    case GgmlTypeId.Q5_K:
      dequantQ45K(src, y, blocks, f16, t === GgmlTypeId.Q5_K);
      break;
    case GgmlTypeId.Q6_K:
      dequantQ6K(src, y, blocks, f16);
      break;
  }
  return y;
}

type F16At = (offset: number) => number;

/** Q2_K: 16 scale/min bytes (4 bits each), 64 bytes of 2-bit values, d, dmin. */
function dequantQ2K(src: Uint8Array, y: Float32Array, blocks: number, f16: F16At): void {
  for (let b = 0, o = 0, k = 0; b < blocks; b++, o += 84) {
    const d = f16(o + 80);
    const dmin = f16(o + 82);
    let is = 0;
    for (let half = 0; half < 2; half++) {
      const q = o + 16 + 32 * half;
      for (let shift = 0; shift < 8; shift += 2) {
        for (let part = 0; part < 2; part++) {
          const sc = src[o + is++];
          const dl = d * (sc & 15);
          const ml = dmin * (sc >> 4);
          for (let l = 0; l < 16; l++) y[k++] = dl * ((src[q + 16 * part + l] >> shift) & 3) - ml;
        }
      }
    }
  }
}

/** Q3_K: 32 bytes of high bits, 64 bytes of 2-bit values, 12 bytes of 6-bit scales, d. */
function dequantQ3K(src: Uint8Array, y: Float32Array, blocks: number, f16: F16At): void {
  const scales = new Int8Array(16);
  for (let b = 0, o = 0, k = 0; b < blocks; b++, o += 110) {
    const d = f16(o + 108);
    // The 16 scales: low 4 bits from bytes 0-7 (low then high nibbles), high 2 bits from bytes 8-11.
    const s = o + 96;
    for (let j = 0; j < 16; j++) {
      const low = j < 8 ? src[s + j] & 15 : src[s + j - 8] >> 4;
      const high = (src[s + 8 + (j % 4)] >> (2 * Math.floor(j / 4))) & 3;
      scales[j] = (low | (high << 4)) - 32;
    }
    let is = 0;
    let m = 1;
    for (let half = 0; half < 2; half++) {
      const q = o + 32 + 32 * half;
      for (let shift = 0; shift < 8; shift += 2, m <<= 1) {
        for (let part = 0; part < 2; part++) {
          const dl = d * scales[is++];
          for (let l = 0; l < 16; l++) {
            const i = 16 * part + l;
            y[k++] = dl * (((src[q + i] >> shift) & 3) - (src[o + i] & m ? 0 : 4));
          }
        }
      }
    }
  }
}

/** Q4_K / Q5_K: d, dmin, 12 bytes of 6-bit scales and mins, (Q5_K: 32 bytes of fifth bits,) 128 bytes of nibbles. */
function dequantQ45K(src: Uint8Array, y: Float32Array, blocks: number, f16: F16At, five: boolean): void {
  const size = five ? 176 : 144;
  for (let b = 0, o = 0, k = 0; b < blocks; b++, o += size) {
    const d = f16(o);
    const dmin = f16(o + 2);
    const sc = o + 4;
    const qh = o + 16;
    let ql = o + (five ? 48 : 16);
    // Sub-block j's 6-bit scale and min (get_scale_min_k4).
    const scaleMin = (j: number): [number, number] =>
      j < 4
        ? [src[sc + j] & 63, src[sc + j + 4] & 63]
        : [(src[sc + j + 4] & 15) | ((src[sc + j - 4] >> 6) << 4), (src[sc + j + 4] >> 4) | ((src[sc + j] >> 6) << 4)];
    for (let j = 0; j < 8; j += 2, ql += 32) {
      const [s1, m1] = scaleMin(j);
      const [s2, m2] = scaleMin(j + 1);
      const d1 = d * s1;
      const d2 = d * s2;
      const n1 = dmin * m1;
      const n2 = dmin * m2;
      const u1 = 1 << j;
      const u2 = 2 << j;
      for (let l = 0; l < 32; l++) {
        const h = five && src[qh + l] & u1 ? 16 : 0;
        y[k + l] = d1 * ((src[ql + l] & 15) + h) - n1;
      }
      for (let l = 0; l < 32; l++) {
        const h = five && src[qh + l] & u2 ? 16 : 0;
        y[k + 32 + l] = d2 * ((src[ql + l] >> 4) + h) - n2;
      }
      k += 64;
    }
  }
}

/** Q6_K: 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 signed scales, d. */
function dequantQ6K(src: Uint8Array, y: Float32Array, blocks: number, f16: F16At): void {
  for (let b = 0, o = 0, k = 0; b < blocks; b++, o += 210) {
    const d = f16(o + 208);
    for (let half = 0; half < 2; half++, k += 128) {
      const ql = o + 64 * half;
      const qh = o + 128 + 32 * half;
      const sc = o + 192 + 8 * half;
      const scale = (i: number) => (src[sc + i] << 24) >> 24;
      for (let l = 0; l < 32; l++) {
        const is = l >> 4;
        const h = src[qh + l];
        const q1 = ((src[ql + l] & 15) | ((h & 3) << 4)) - 32;
        const q2 = ((src[ql + l + 32] & 15) | (((h >> 2) & 3) << 4)) - 32;
        const q3 = ((src[ql + l] >> 4) | (((h >> 4) & 3) << 4)) - 32;
        const q4 = ((src[ql + l + 32] >> 4) | (((h >> 6) & 3) << 4)) - 32;
        y[k + l] = d * scale(is) * q1;
        y[k + l + 32] = d * scale(is + 2) * q2;
        y[k + l + 64] = d * scale(is + 4) * q3;
        y[k + l + 96] = d * scale(is + 6) * q4;
      }
    }
  }
}
