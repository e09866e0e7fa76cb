// Sampling: partial selection is exact, seeded sampling is reproducible, and temperature, top-k,
// top-p, min-p and repetition penalty restrict or reshape the support exactly as specified.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Rng,
  Sampler,
  argmax,
  logSumExp,
  topIndices,
  topLogprobs,
  topPSet,
  GREEDY,
  type SamplingOptions,
} from "../core/engine/sampler.js";

const opts = (o: Partial<SamplingOptions>): SamplingOptions => ({ ...GREEDY, temperature: 1, seed: 42, ...o });

function randomLogits(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  return Float32Array.from({ length: n }, () => (rng.next() - 0.5) * 8);
}

function softmax(v: Float32Array, t = 1): number[] {
  const max = Math.max(...v);
  const e = Array.from(v, (x) => Math.exp((x - max) / t));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / s);
}

function draw(o: SamplingOptions, logits: Float32Array, n: number, history: number[] = []): number[] {
  const s = new Sampler(o);
  return Array.from({ length: n }, () => s.sample(logits, history));
}

test("topIndices equals a full sort, ties broken by lower index", () => {
  for (const n of [1, 2, 7, 100, 1000]) {
    const v = randomLogits(n, n);
    v[n - 1] = v[0]; // a tie
    const full = Array.from({ length: n }, (_, i) => i).sort((a, b) => v[b] - v[a] || a - b);
    for (const k of [1, 3, Math.floor(n / 2), n]) {
      assert.deepEqual(Array.from(topIndices(v, k)), full.slice(0, Math.min(k, n)), `n=${n} k=${k}`);
    }
  }
});

test("topLogprobs are normalised log-probabilities, most likely first", () => {
  const v = randomLogits(50, 3);
  const p = softmax(v);
  const top = topLogprobs(v, 5);
  assert.equal(top[0][0], argmax(v));
  for (const [id, lp] of top) assert.ok(Math.abs(Math.exp(lp) - p[id]) < 1e-6);
});

test("temperature 0 is greedy and ignores the seed", () => {
  const v = randomLogits(300, 1);
  const ids = new Set([
    ...draw(opts({ temperature: 0, seed: 1 }), v, 20),
    ...draw(opts({ temperature: 0, seed: 2 }), v, 20),
  ]);
  assert.deepEqual([...ids], [argmax(v)]);
});

test("seeded sampling is reproducible and the seed matters", () => {
  const v = randomLogits(500, 2);
  assert.deepEqual(draw(opts({ seed: 7 }), v, 200), draw(opts({ seed: 7 }), v, 200));
  assert.notDeepEqual(draw(opts({ seed: 7 }), v, 200), draw(opts({ seed: 8 }), v, 200));
});

test("sampling follows the softmax distribution (temperature applied)", () => {
  const v = Float32Array.from([2, 1, 0, -1]);
  for (const t of [0.5, 1, 2]) {
    const n = 40000;
    const counts = [0, 0, 0, 0];
    for (const id of draw(opts({ temperature: t, seed: 3 }), v, n)) counts[id]++;
    const p = softmax(v, t);
    for (let i = 0; i < 4; i++) {
      const sd = Math.sqrt((p[i] * (1 - p[i])) / n);
      assert.ok(Math.abs(counts[i] / n - p[i]) < 5 * sd + 1e-3, `t=${t} id ${i}: ${counts[i] / n} vs ${p[i]}`);
    }
  }
});

test("top-k restricts the support to exactly the k most likely tokens", () => {
  const v = randomLogits(200, 4);
  const seen = new Set(draw(opts({ topK: 5, temperature: 3 }), v, 5000));
  assert.deepEqual(
    [...seen].sort((a, b) => a - b),
    Array.from(topIndices(v, 5)).sort((a, b) => a - b),
  );
});

test("top-p keeps the smallest set whose mass reaches p", () => {
  const v = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
  // 0.5 + 0.3 = 0.8 ≥ 0.75: tokens 0 and 1 only.
  assert.deepEqual(new Set(draw(opts({ topP: 0.75 }), v, 3000)), new Set([0, 1]));
  // 0.8 < 0.85: token 2 joins.
  assert.deepEqual(new Set(draw(opts({ topP: 0.85 }), v, 3000)), new Set([0, 1, 2]));
  // Renormalised inside the kept set: P(0) = 0.5 / 0.8.
  const ids = draw(opts({ topP: 0.75, seed: 9 }), v, 20000);
  const p0 = ids.filter((i) => i === 0).length / ids.length;
  assert.ok(Math.abs(p0 - 0.625) < 0.02, `P(0) = ${p0}`);
});

test("top-p over a large vocabulary (the growing-prefix path)", () => {
  const v = new Float32Array(5000); // uniform: top-p 0.5 keeps 2500 tokens
  const seen = new Set(draw(opts({ topP: 0.5, seed: 5 }), v, 4000));
  // 2500 × (1/5000) reaches 0.5 up to float rounding, so the cut is at 2500 or 2501 tokens;
  // 4000 uniform draws over 2500 tokens see about 2000 distinct ones.
  assert.ok(seen.size > 1500 && [...seen].every((id) => id <= 2500), `support ${seen.size}, max ${Math.max(...seen)}`);
});

test("the large top-p set equals the sorted prefix that reaches p (ties to the lower index, min-p after)", () => {
  const rng = new Rng(11);
  for (const [n, kind] of [
    [3000, "flat"],
    [3000, "few values"],
    [5000, "with -inf"],
    [40, "flat"],
  ] as const) {
    const s = Float32Array.from({ length: n }, (_, i) => {
      if (kind === "few values") return Math.floor(rng.next() * 5) * 0.25;
      if (kind === "with -inf" && i % 3 === 0) return -Infinity;
      return (rng.next() - 0.5) * 0.5;
    });
    const lse = logSumExp(s);
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => s[b] - s[a] || a - b);
    for (const topP of [0.3, 0.5, 0.9, 0.999]) {
      for (const minP of [0, 0.5]) {
        let mass = 0;
        let keep = 0;
        while (keep < n && mass < topP) mass += Math.exp(s[order[keep++]] - lse);
        const floor = minP > 0 ? s[order[0]] + Math.log(minP) : -Infinity;
        const want = order
          .slice(0, keep)
          .filter((i) => s[i] >= floor)
          .sort((a, b) => a - b);
        assert.deepEqual(Array.from(topPSet(s, lse, topP, minP)), want, `${kind} n=${n} topP=${topP} minP=${minP}`);
      }
    }
  }
});

test("untruncated sampling over a large vocabulary follows the softmax distribution", () => {
  // No top-k, top-p or min-p: the draw walks the whole vocabulary unsorted.
  const v = new Float32Array(20000).fill(-3);
  v[5] = 2;
  v[19000] = 1;
  const n = 20000;
  const ids = draw(opts({ temperature: 1, seed: 4 }), v, n);
  const p = softmax(v);
  for (const id of [5, 19000]) {
    const got = ids.filter((x) => x === id).length / n;
    const sd = Math.sqrt((p[id] * (1 - p[id])) / n);
    assert.ok(Math.abs(got - p[id]) < 5 * sd, `id ${id}: ${got} vs ${p[id]}`);
  }
});

test("min-p drops tokens below min_p × the top probability", () => {
  const v = Float32Array.from([Math.log(0.6), Math.log(0.25), Math.log(0.1), Math.log(0.05)]);
  // floor = 0.2 × 0.6 = 0.12: tokens 0 and 1 survive.
  assert.deepEqual(new Set(draw(opts({ minP: 0.2 }), v, 3000)), new Set([0, 1]));
});

test("top-k and top-p compose (both restrictions apply)", () => {
  const v = Float32Array.from([Math.log(0.4), Math.log(0.3), Math.log(0.2), Math.log(0.1)]);
  assert.deepEqual(new Set(draw(opts({ topK: 3, topP: 0.65 }), v, 3000)), new Set([0, 1]));
  assert.deepEqual(new Set(draw(opts({ topK: 2, topP: 0.99 }), v, 3000)), new Set([0, 1]));
});

test("repetition penalty pushes seen tokens down (positive ÷ p, negative × p)", () => {
  const v = Float32Array.from([3, 2.5, -1, -1.2]);
  assert.equal(new Sampler(opts({ temperature: 0, repetitionPenalty: 1.5 })).sample(v, [0]), 1); // 3/1.5 = 2 < 2.5
  assert.equal(new Sampler(opts({ temperature: 0, repetitionPenalty: 1.1 })).sample(v, [0]), 0); // 2.73 > 2.5
  const w = Float32Array.from([-1, -1.1]);
  assert.equal(new Sampler(opts({ temperature: 0, repetitionPenalty: 2 })).sample(w, [0]), 1); // -2 < -1.1
  assert.deepEqual(v, Float32Array.from([3, 2.5, -1, -1.2]), "the caller's logits are not modified");
});

test("presence and frequency penalties count the reply's tokens only (OpenAI's rule)", () => {
  const v = Float32Array.from([3, 2.5, 2.2, 0]);
  const greedy = (o: Partial<SamplingOptions>, history: number[], reply: number[]) =>
    new Sampler(opts({ temperature: 0, ...o })).sample(v, history, reply);
  // Presence: once is enough (3 - 0.6 = 2.4 < 2.5), however often.
  assert.equal(greedy({ presencePenalty: 0.6 }, [0], [0]), 1);
  assert.equal(greedy({ presencePenalty: 0.4 }, [0, 0, 0], [0, 0, 0]), 0);
  // Frequency: per occurrence (3 - 2 × 0.3 = 2.4 < 2.5; once: 2.7).
  assert.equal(greedy({ frequencyPenalty: 0.3 }, [0, 0], [0, 0]), 1);
  assert.equal(greedy({ frequencyPenalty: 0.3 }, [0], [0]), 0);
  // Both add up: 3 - 0.3 - 2 × 0.3 = 2.1 and 2.5 - 0.3 - 0.3 = 1.9 lose to token 2's 2.2.
  assert.equal(greedy({ presencePenalty: 0.3, frequencyPenalty: 0.3 }, [0, 0, 1], [0, 0, 1]), 2);
  // The prompt's tokens (history outside the reply) do not count; a negative penalty raises.
  assert.equal(greedy({ presencePenalty: 2 }, [1, 0], []), 0);
  assert.equal(greedy({ frequencyPenalty: -1 }, [3], [3]), 0, "0 + 1 < 3");
  assert.equal(greedy({ frequencyPenalty: -1 }, [3, 3, 3, 3], [3, 3, 3, 3]), 3, "0 + 4 > 3");
  assert.equal(
    new Sampler(opts({ temperature: 0, presencePenalty: 0.1 })).greedy,
    false,
    "penalties need the host's logits",
  );
  assert.deepEqual(v, Float32Array.from([3, 2.5, 2.2, 0]), "the caller's logits are not modified");
});

test("invalid sampling settings are rejected", () => {
  for (const bad of [
    { temperature: -1 },
    { topP: 0 },
    { topP: 1.5 },
    { minP: 1 },
    { topK: -2 },
    { topK: 1.5 },
    { repetitionPenalty: 0 },
    { presencePenalty: NaN },
    { frequencyPenalty: Infinity },
    { seed: 0.5 },
  ]) {
    assert.throws(() => new Sampler(opts(bad)), RangeError, JSON.stringify(bad));
  }
});
