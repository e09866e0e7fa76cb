// Shared by the native kernel tests (kernels.test.ts, sparse-kernels.test.ts): the kernel paths
// and dtypes to loop over, a seeded generator, exact f16/bf16 decoding and tolerance checks.
import assert from "node:assert/strict";
import { native, NativeDType, type KernelPath } from "../core/native/addon.js";

/** Every kernel path this CPU can run (best first): each is checked against the references. */
export const PATHS = native().cpuInfo().paths;
export const DTYPES = [NativeDType.F32, NativeDType.F16, NativeDType.BF16] as const;
export const DTYPE_NAME = ["f32", "f16", "bf16"];

/** Runs fn once per kernel path, restoring "auto" afterwards. */
export function forPaths(fn: (path: KernelPath) => void): void {
  const hn = native();
  try {
    for (const p of PATHS) {
      hn.setKernelPath(p);
      fn(p);
    }
  } finally {
    hn.setKernelPath("auto");
  }
}

/** A seeded mulberry32 generator and the draws the tests use. */
export function seededRandom(initial: number) {
  let seed = initial;
  const rand = (): number => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const uniform = (lo: number, hi: number): number => lo + (hi - lo) * rand();
  const randArray = (count: number, lo = -1, hi = 1): Float32Array => {
    const a = new Float32Array(count);
    for (let i = 0; i < count; i++) a[i] = uniform(lo, hi);
    return a;
  };
  return { rand, uniform, randArray };
}

const f32view = new Float32Array(1);
const u32view = new Uint32Array(f32view.buffer);
export function bitsToF32(bits: number): number {
  u32view[0] = bits >>> 0;
  return f32view[0];
}
export function f32ToBits(v: number): number {
  f32view[0] = v;
  return u32view[0];
}
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** |got - want| <= tol(i) for every element (a NaN wanted must be a NaN got). */
export function assertClose(
  got: Float32Array,
  want: ArrayLike<number>,
  tol: (i: number) => number,
  what: string,
): void {
  assert.ok(got.length >= want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    const g = got[i];
    const w = want[i];
    if (Number.isNaN(w)) {
      assert.ok(Number.isNaN(g), `${what}[${i}]: got ${g}, want NaN`);
      continue;
    }
    const t = tol(i);
    if (!(Math.abs(g - w) <= t)) assert.fail(`${what}[${i}]: got ${g}, want ${w} (tolerance ${t})`);
  }
}
