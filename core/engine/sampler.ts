// Turning logits into the next token: repetition penalty → presence and frequency penalties →
// temperature → top-k → top-p → min-p → a seeded draw (the order Hugging Face applies its logits
// processors in; OpenAI's penalties where vLLM applies them). Temperature 0 is greedy.
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
  /** OpenAI's: subtracted from the logit of every token the reply already holds; 0 = off. */
  presencePenalty: number;
  /** OpenAI's: subtracted once per time the reply already holds the token; 0 = off. */
  frequencyPenalty: number;
  seed: number;
}

export const GREEDY: SamplingOptions = {
  temperature: 0,
  topK: 0,
  topP: 1,
  minP: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  seed: 0,
};

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
 * Indices of the k largest values, largest first (ties: lower index first). A few hundred or fewer
 * (top-k, log-probabilities): one pass keeping a min-heap of the best k, where almost every value
 * fails one comparison with the heap's smallest — a quickselect over a copy of a 128K vocabulary
 * took ~1.2 ms a token, most of it mispredicted branches. More: a quickselect finds the k-th value,
 * then only the survivors are sorted.
 */
export function topIndices(v: ArrayLike<number>, k: number): Int32Array {
  const n = v.length;
  k = Math.max(0, Math.min(k, n));
  if (k === 0) return new Int32Array(0);
  let idx: Int32Array;
  if (k === n) {
    idx = new Int32Array(n);
    for (let i = 0; i < n; i++) idx[i] = i;
  } else if (k <= HEAP_TOP_K) {
    idx = heapTop(v, k);
  } else {
    const threshold = kthLargest(Float64Array.from(v as ArrayLike<number>), k);
    idx = new Int32Array(k);
    let m = 0;
    for (let i = 0; i < n && m < k; i++) if (v[i] > threshold) idx[m++] = i;
    for (let i = 0; i < n && m < k; i++) if (v[i] === threshold) idx[m++] = i;
  }
  return idx.sort((a, b) => v[b] - v[a] || a - b);
}

const HEAP_TOP_K = 256;

/** The k best indices of v (k < v.length), unordered: a min-heap by (value, then higher index). */
function heapTop(v: ArrayLike<number>, k: number): Int32Array {
  const heap = new Int32Array(k);
  // a is worse than b: smaller, or equal and later (the lower index wins a tie).
  const worse = (a: number, b: number) => v[a] < v[b] || (v[a] === v[b] && a > b);
  const down = (at: number) => {
    for (;;) {
      const l = 2 * at + 1;
      if (l >= k) return;
      const c = l + 1 < k && worse(heap[l + 1], heap[l]) ? l + 1 : l;
      if (!worse(heap[c], heap[at])) return;
      [heap[c], heap[at]] = [heap[at], heap[c]];
      at = c;
    }
  };
  for (let i = 0; i < k; i++) heap[i] = i;
  for (let i = (k >> 1) - 1; i >= 0; i--) down(i);
  for (let i = k; i < v.length; i++) {
    // Strictly larger: an equal value arrives later, so the one in the heap keeps its place.
    if (v[i] > v[heap[0]]) {
      heap[0] = i;
      down(0);
    }
  }
  return heap;
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

/** The `n` most likely tokens as [id, log-probability] pairs, most likely first (lse: the logits' logSumExp). */
export function topLogprobs(logits: ArrayLike<number>, n: number, lse = logSumExp(logits)): [number, number][] {
  return Array.from(topIndices(logits, n), (id) => [id, logits[id] - lse]);
}

export class Sampler {
  private readonly rng: Rng;
  private scores: Float32Array;
  /** Unnormalised probabilities of the tokens a draw walks (scratch, one per vocabulary entry). */
  private probs: Float64Array;

  constructor(readonly options: SamplingOptions) {
    validateSampling(options);
    this.rng = new Rng(options.seed);
    this.scores = new Float32Array(0);
    this.probs = new Float64Array(0);
  }

  /** Whether sample() is the plain argmax of the logits (so it can run where the logits are). */
  get greedy(): boolean {
    const o = this.options;
    return o.temperature <= 0 && o.repetitionPenalty === 1 && o.presencePenalty === 0 && o.frequencyPenalty === 0;
  }

  /**
   * The next token from `logits` (not modified), given the ids seen so far in the context
   * (`history`, for the repetition penalty) and in the reply (`reply`, for presence and frequency).
   */
  sample(logits: Float32Array, history: readonly number[], reply: readonly number[] = []): number {
    const o = this.options;
    if (this.scores.length !== logits.length) {
      this.scores = new Float32Array(logits.length);
      this.probs = new Float64Array(logits.length);
    }
    const s = this.scores;
    s.set(logits);
    if (o.repetitionPenalty !== 1) {
      for (const id of new Set(history)) {
        if (id < s.length) s[id] = s[id] > 0 ? s[id] / o.repetitionPenalty : s[id] * o.repetitionPenalty;
      }
    }
    if (o.presencePenalty !== 0 || o.frequencyPenalty !== 0) {
      const counts = new Map<number, number>();
      for (const id of reply) counts.set(id, (counts.get(id) ?? 0) + 1);
      for (const [id, n] of counts) if (id < s.length) s[id] -= o.presencePenalty + n * o.frequencyPenalty;
    }
    if (o.temperature <= 0) return argmax(s);
    const invT = 1 / o.temperature;
    for (let i = 0; i < s.length; i++) s[i] *= invT;
    const untruncated = (o.topK <= 0 || o.topK >= s.length) && o.topP >= 1 && o.minP <= 0;
    return this.draw(s, untruncated ? null : this.candidates(s));
  }

  /**
   * A draw from softmax(s) over `candidates` (every token when null), walked in the order given:
   * each token's share of [0, total) is its probability, so any fixed order samples the same
   * distribution (the whole vocabulary goes in index order, unsorted).
   */
  private draw(s: Float32Array, candidates: Int32Array | null): number {
    const n = candidates ? candidates.length : s.length;
    const at = (i: number) => (candidates ? candidates[i] : i);
    let max = -Infinity;
    for (let i = 0; i < n; i++) max = Math.max(max, s[at(i)]);
    const p = this.probs;
    let total = 0;
    for (let i = 0; i < n; i++) total += p[i] = Math.exp(s[at(i)] - max);
    let r = this.rng.next() * total;
    let last = at(0);
    for (let i = 0; i < n; i++) {
      if (p[i] === 0) continue;
      last = at(i);
      r -= p[i];
      if (r < 0) return last;
    }
    return last; // rounding left r >= 0: the last token with any probability
  }

  /** Token ids allowed by top-k, top-p and min-p: most likely first, or a large top-p set in index order. */
  private candidates(s: Float32Array): Int32Array {
    const o = this.options;
    const k = o.topK > 0 ? Math.min(o.topK, s.length) : s.length;
    if (o.topP >= 1 && o.minP <= 0) return topIndices(s, k);
    if (k < s.length) {
      // Top-p and min-p then act on the top-k set, renormalised (as HF's warpers chain).
      const top = topIndices(s, k);
      return this.applyTopPMinP(s, top, logSumExp(Array.from(top, (i) => s[i])), true);
    }
    // The top-p set is usually a few dozen tokens: try the 64 most likely first.
    const lse = logSumExp(s);
    const kept = this.applyTopPMinP(s, topIndices(s, Math.min(k, 64)), lse, k <= 64);
    if (kept) return kept;
    return topPSet(s, lse, o.topP, o.minP, this.probs);
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

/**
 * The top-p set when it is large (a flat distribution: high temperature, an untrained model), in
 * index order, with min-p applied (p: scratch for the probabilities): the same tokens as a prefix of the sorted vocabulary, found by
 * a radix select over the scores' bits weighted by probability (11 + 11 + 10 bits) instead of
 * sorting 128K entries (which took ~37 ms a token).
 */
export function topPSet(
  s: Float32Array,
  lse: number,
  topP: number,
  minP: number,
  p: Float64Array = new Float64Array(s.length),
): Int32Array {
  const n = s.length;
  const bits = new Uint32Array(s.buffer, s.byteOffset, n);
  const keys = new Uint32Array(n); // order-preserving: a larger score has a larger key
  for (let i = 0; i < n; i++) {
    const b = bits[i];
    keys[i] = (b & 0x80000000 ? ~b : b | 0x80000000) >>> 0;
    p[i] = Math.exp(s[i] - lse);
  }
  let members: Int32Array | null = null; // the threshold bucket's tokens (null: all of them)
  let above = 0; // the probability of every token whose key is above the bucket
  let prefix = 0; // the bucket's key bits so far
  for (const [shift, width] of [
    [21, 11],
    [10, 11],
    [0, 10],
  ]) {
    const mask = (1 << width) - 1;
    const hist = new Float64Array(1 << width);
    const count = members ? members.length : n;
    for (let j = 0; j < count; j++) {
      const i = members ? members[j] : j;
      hist[(keys[i] >>> shift) & mask] += p[i];
    }
    // The bucket where the mass from the top reaches topP (rounding may leave it short: then the
    // lowest bucket with any), and the mass above it.
    let bucket = 0;
    let before = above;
    for (let b = mask; b >= 0; b--) {
      if (hist[b] === 0) continue;
      [bucket, before] = [b, above];
      if (above + hist[b] >= topP) break;
      above += hist[b];
    }
    above = before;
    prefix = (prefix << width) | bucket;
    const next: number[] = [];
    for (let j = 0; j < count; j++) {
      const i = members ? members[j] : j;
      if (keys[i] >>> shift === prefix >>> 0) next.push(i);
    }
    members = Int32Array.from(next);
  }
  // members: the tokens with the threshold key (equal scores), in index order; the first ones go in.
  const t = prefix >>> 0;
  let ties = 0;
  for (let mass = above; ties < members!.length && mass < topP; ties++) mass += p[members![ties]];
  const tieEnd = ties > 0 ? members![ties - 1] : -1;
  const floor = minP > 0 ? s[argmax(s)] + Math.log(minP) : -Infinity;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const kept = keys[i] > t || (keys[i] === t && i <= tieEnd);
    if (kept && s[i] >= floor) out.push(i);
  }
  return Int32Array.from(out);
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
  if (!Number.isFinite(o.presencePenalty)) bad(`presence penalty must be a finite number, got ${o.presencePenalty}`);
  if (!Number.isFinite(o.frequencyPenalty)) bad(`frequency penalty must be a finite number, got ${o.frequencyPenalty}`);
  if (!Number.isInteger(o.seed)) bad(`seed must be an integer, got ${o.seed}`);
}
