// Turning logits into the next token: repetition penalty → temperature → top-k → top-p → min-p →
// a seeded draw (the order Hugging Face applies its logits processors in). Temperature 0 is greedy.
// Candidates are found by partial selection, never by sorting the whole vocabulary.

export interface SamplingOptions {
  /** 0 = greedy. */
  temperature: number;
  /** Keep the k most likely tokens; 0 = off. */
  topK: number;
  /** Keep the smallest set whose probability reaches p; 1 = off. */
  topP: number;
  /** Drop tokens less likely than minP × the most likely one; 0 = off. */
  minP: number;
  /** > 1 discourages tokens already seen (HF/CTRL rule: positive logits ÷ p, negative × p); 1 = off. */
  repetitionPenalty: number;
  seed: number;
}

export const GREEDY: SamplingOptions = { temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, seed: 0 };

/** xoshiro128** seeded through splitmix32: small, fast, and identical on every platform. */
export class Rng {
  private s = new Uint32Array(4);
  constructor(seed: number) {
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }

  /** Uniform in [0, 1). */
  next(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return r / 4294967296;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

/**
 * Indices of the k largest values, largest first (ties: lower index first). O(n + k log k):
 * a quickselect finds the k-th value, then only the survivors are sorted.
 */
export function topIndices(v: ArrayLike<number>, k: number): Int32Array {
  const n = v.length;
  k = Math.max(0, Math.min(k, n));
  if (k === 0) return new Int32Array(0);
  let idx: Int32Array;
  if (k === n) {
    idx = new Int32Array(n);
    for (let i = 0; i < n; i++) idx[i] = i;
  } else {
    const threshold = kthLargest(Float64Array.from(v as ArrayLike<number>), k);
    idx = new Int32Array(k);
    let m = 0;
    for (let i = 0; i < n && m < k; i++) if (v[i] > threshold) idx[m++] = i;
    for (let i = 0; i < n && m < k; i++) if (v[i] === threshold) idx[m++] = i;
  }
  return idx.sort((a, b) => v[b] - v[a] || a - b);
}

/** The k-th largest value (1-based), by in-place quickselect on a scratch copy. */
function kthLargest(a: Float64Array, k: number): number {
  let lo = 0;
  let hi = a.length - 1;
  const target = k - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] > pivot) i++;
      while (a[j] < pivot) j--;
      if (i <= j) {
        const t = a[i];
        a[i] = a[j];
        a[j] = t;
        i++;
        j--;
      }
    }
    if (target <= j) hi = j;
    else if (target >= i) lo = i;
    else return a[target];
  }
  return a[target];
}

/** log Σ exp(v) over the first `n` entries, computed stably. */
export function logSumExp(v: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < v.length; i++) if (v[i] > max) max = v[i];
  let sum = 0;
  for (let i = 0; i < v.length; i++) sum += Math.exp(v[i] - max);
  return max + Math.log(sum);
}

/** The `n` most likely tokens as [id, log-probability] pairs, most likely first. */
export function topLogprobs(logits: ArrayLike<number>, n: number): [number, number][] {
  const lse = logSumExp(logits);
  return Array.from(topIndices(logits, n), (id) => [id, logits[id] - lse]);
}

export class Sampler {
  private readonly rng: Rng;
  private scores: Float32Array;

  constructor(readonly options: SamplingOptions) {
    validateSampling(options);
    this.rng = new Rng(options.seed);
    this.scores = new Float32Array(0);
  }

  /** Whether sample() is the plain argmax of the logits (so it can run where the logits are). */
  get greedy(): boolean {
    return this.options.temperature <= 0 && this.options.repetitionPenalty === 1;
  }

  /** The next token from `logits` (not modified), given the ids seen so far in the context. */
  sample(logits: Float32Array, history: readonly number[]): number {
    const o = this.options;
    if (this.scores.length !== logits.length) this.scores = new Float32Array(logits.length);
    const s = this.scores;
    s.set(logits);
    if (o.repetitionPenalty !== 1) {
      for (const id of new Set(history)) {
        if (id < s.length) s[id] = s[id] > 0 ? s[id] / o.repetitionPenalty : s[id] * o.repetitionPenalty;
      }
    }
    if (o.temperature <= 0) return argmax(s);
    const invT = 1 / o.temperature;
    for (let i = 0; i < s.length; i++) s[i] *= invT;
    const candidates = this.candidates(s);
    const max = s[candidates[0]];
    const probs = new Float64Array(candidates.length);
    let total = 0;
    for (let i = 0; i < candidates.length; i++) total += probs[i] = Math.exp(s[candidates[i]] - max);
    let r = this.rng.next() * total;
    for (let i = 0; i < candidates.length; i++) {
      r -= probs[i];
      if (r < 0) return candidates[i];
    }
    return candidates[candidates.length - 1];
  }

  /** Token ids allowed by top-k, top-p and min-p, most likely first. */
  private candidates(s: Float32Array): Int32Array {
    const o = this.options;
    const k = o.topK > 0 ? Math.min(o.topK, s.length) : s.length;
    if (o.topP >= 1 && o.minP <= 0) return topIndices(s, k);
    if (k < s.length) {
      // Top-p and min-p then act on the top-k set, renormalised (as HF's warpers chain).
      const top = topIndices(s, k);
      return this.applyTopPMinP(s, top, logSumExp(Array.from(top, (i) => s[i])), true);
    }
    // Grow a sorted prefix until it holds the top-p mass (usually a few dozen tokens).
    const lse = logSumExp(s);
    for (let m = Math.min(k, 64); ; m = Math.min(k, m * 4)) {
      const kept = this.applyTopPMinP(s, topIndices(s, m), lse, m === k);
      if (kept) return kept;
    }
  }

  /** The prefix of `top` kept by top-p and min-p, or null if `top` is too short to decide top-p. */
  private applyTopPMinP(s: Float32Array, top: Int32Array, lse: number, complete: true): Int32Array;
  private applyTopPMinP(s: Float32Array, top: Int32Array, lse: number, complete: boolean): Int32Array | null;
  private applyTopPMinP(s: Float32Array, top: Int32Array, lse: number, complete: boolean): Int32Array | null {
    const o = this.options;
    let keep = top.length;
    if (o.topP < 1) {
      let mass = 0;
      let reached = false;
      for (let i = 0; i < top.length && !reached; i++) {
        mass += Math.exp(s[top[i]] - lse);
        if (mass >= o.topP) {
          keep = i + 1;
          reached = true;
        }
      }
      if (!reached && !complete) return null;
    }
    if (o.minP > 0) {
      const floor = s[top[0]] + Math.log(o.minP);
      while (keep > 1 && s[top[keep - 1]] < floor) keep--;
    }
    return top.subarray(0, keep);
  }
}

export function validateSampling(o: SamplingOptions): void {
  const bad = (what: string) => {
    throw new RangeError(`sampling: ${what}`);
  };
  if (!(o.temperature >= 0) || !Number.isFinite(o.temperature)) bad(`temperature must be ≥ 0, got ${o.temperature}`);
  if (!Number.isInteger(o.topK) || o.topK < 0) bad(`top-k must be a non-negative integer, got ${o.topK}`);
  if (!(o.topP > 0 && o.topP <= 1)) bad(`top-p must be in (0, 1], got ${o.topP}`);
  if (!(o.minP >= 0 && o.minP < 1)) bad(`min-p must be in [0, 1), got ${o.minP}`);
  if (!(o.repetitionPenalty > 0) || !Number.isFinite(o.repetitionPenalty))
    bad(`repetition penalty must be > 0, got ${o.repetitionPenalty}`);
  if (!Number.isInteger(o.seed)) bad(`seed must be an integer, got ${o.seed}`);
}
