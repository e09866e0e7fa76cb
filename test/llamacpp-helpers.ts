// llama.cpp (node-llama-cpp) as a reference in tests: teacher-forced log-probabilities of a GGUF
// file, our engine's greedy steps, and the comparison of the two (test/gguf*.test.ts).
import assert from "node:assert/strict";
import type { LoadedModel } from "../core/loader/model-folder.js";
import { Session } from "../core/engine/session.js";
import type { NlcLlama } from "../core/peers/llamacpp.js";

/**
 * Teacher-forced llama.cpp on `prompt` + `ids`: at each generated position, its argmax and the
 * log-probabilities of all tokens. Attention in F32 (no flash attention, F32 KV cache).
 */
export async function llamaCppSteps(
  llama: NlcLlama,
  file: string,
  prompt: number[],
  ids: number[],
): Promise<{ argmax: number; logprob: (id: number) => number }[]> {
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  try {
    const ctx = await model.createContext({
      contextSize: 256,
      batchSize: 256,
      threads: 2,
      sequences: 1,
      flashAttention: false,
      experimentalKvCacheKeyType: "F32",
      experimentalKvCacheValueType: "F32",
    });
    const seq = ctx.getSequence();
    const input = [...prompt, ...ids.slice(0, -1)];
    const out = await seq.controlledEvaluate(
      input.map((id, i) =>
        i >= prompt.length - 1
          ? // Temperature 1 with every filter off: the probabilities are the softmax of the raw logits.
            [id, { generateNext: { probabilities: true, options: { temperature: 1, topK: 0, topP: 1, minP: 0 } } }]
          : id,
      ),
    );
    await ctx.dispose();
    return ids.map((_, k) => {
      const probabilities = out[prompt.length - 1 + k]!.next.probabilities!;
      // log p = logit − logsumexp(logits): the same ranking and, up to a constant, the same values.
      const logits = new Map([...probabilities].map(([id, p]) => [id, Math.log(p)]));
      let max = -Infinity;
      let argmax = -1;
      for (const [id, v] of logits) if (v > max) [max, argmax] = [v, id];
      let sum = 0;
      for (const v of logits.values()) sum += Math.exp(v - max);
      const lse = max + Math.log(sum);
      return { argmax, logprob: (id: number) => logits.get(id)! - lse };
    });
  } finally {
    await model.dispose();
  }
}

/** Our engine, greedy, with the top-5 log-probabilities at each step. */
export async function ourGreedy(model: LoadedModel, prompt: number[], n: number) {
  const session = new Session(model);
  const steps: [number, number][][] = [];
  for await (const ev of session.generate(prompt, { maxTokens: n, temperature: 0, logprobs: 5, ignoreEos: true })) {
    if (ev.type === "token") steps.push(ev.topLogprobs!);
  }
  return { ids: steps.map((s) => s[0][0]), steps };
}

/**
 * llama.cpp's log-probabilities match `steps` (top-5 per step) within `tol`, and its argmax is
 * the same token wherever the top two are further apart than rounding could explain.
 */
export function compareSteps(
  what: string,
  ours: [number, number][][],
  theirs: { argmax: number; logprob: (id: number) => number }[],
  tol: number,
): void {
  ours.forEach((top, k) => {
    for (const [id, lp] of top) {
      const got = theirs[k].logprob(id);
      assert.ok(
        Math.abs(got - lp) < tol,
        `${what} step ${k} token ${id}: llama.cpp ${got.toFixed(5)} vs ${lp.toFixed(5)}`,
      );
    }
    if (top[0][1] - top[1][1] > 2 * tol) assert.equal(theirs[k].argmax, top[0][0], `${what} step ${k}: argmax`);
  });
}
