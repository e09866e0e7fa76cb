// The built-in default model (assets/models/, trained by tools/train/): quality that was measured
// with `hire eval` when it was trained, asserted with margins, so a regression in the engine's
// dense or sparse path shows up here. Numbers in the model card's Evaluation section.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { defaultModelDir } from "../core/loader/default-model.js";
import { loadModel } from "../core/loader/model-folder.js";
import { evaluate } from "../core/engine/eval.js";
import { Session } from "../core/engine/session.js";
import { DEFAULT_QUANT_GROUP } from "../core/sparse/settings.js";

const dir = defaultModelDir();
const text = readFileSync(join(dir, "eval.txt"), "utf8");
// Measured with `hire eval` on the first 512 tokens of eval.txt (see the model card): dense
// perplexity 139.16; HiRE k = 10 %, ×2, int4 (group 128) + head: perplexity 136.01, recall 0.961 (per
// layer 0.785 0.996 0.998 0.998 1 0.991), head argmax always kept.
const MEASURED = {
  densePerplexity: 139.16,
  hireRecall10x2: 0.961,
  hireRecallPerLayer: [0.785, 0.996, 0.998, 0.998, 1, 0.991],
  headHitRate: 1,
};
const TOKENS = 512;

test("default model: dense perplexity on the held-out text is what training reached", () => {
  const model = loadModel(dir);
  try {
    const [dense] = evaluate(
      model,
      text,
      [{ label: "dense", ffnK: null, oversample: null, settings: { ffn: { method: "dense" } } }],
      TOKENS,
    );
    assert.ok(dense.perplexity < MEASURED.densePerplexity * 1.02, `perplexity ${dense.perplexity}`);
  } finally {
    model.close();
  }
});

test("default model: HiRE at k = 10 %, oversample 2, int4 (+ output layer) keeps recall and perplexity", () => {
  const model = loadModel(dir);
  try {
    const [dense, hire] = evaluate(
      model,
      text,
      [
        { label: "dense", ffnK: null, oversample: null, settings: { ffn: { method: "dense" } } },
        {
          label: "hire",
          ffnK: 0.1,
          oversample: 2,
          settings: {
            ffn: { method: "hire", k: 0.1, oversample: 2, predictor: { kind: "int4", groupSize: DEFAULT_QUANT_GROUP } },
            head: { method: "hire", k: 128, oversample: 4 },
          },
        },
      ],
      TOKENS,
    );
    assert.ok(hire.mean_recall! >= MEASURED.hireRecall10x2 - 0.02, `recall ${hire.mean_recall}`);
    hire.recall_per_layer!.forEach((r, l) =>
      assert.ok(r >= MEASURED.hireRecallPerLayer[l] - 0.05, `layer ${l} recall ${r}`),
    );
    assert.ok(hire.perplexity <= dense.perplexity * 1.05, `perplexity ${hire.perplexity} vs dense ${dense.perplexity}`);
    assert.ok(hire.head_argmax_hit_rate! >= MEASURED.headHitRate - 0.01, `head hit rate ${hire.head_argmax_hit_rate}`);
  } finally {
    model.close();
  }
});

test("default model: greedy generation is deterministic and stops at <|im_end|> in chat", async () => {
  const model = loadModel(dir);
  try {
    const run = async () => {
      const ids: number[] = [];
      for await (const ev of new Session(model).generate("The", { maxTokens: 12, temperature: 0 }))
        if (ev.type === "token") ids.push(ev.id);
      return ids;
    };
    const a = await run();
    assert.equal(a.length, 12);
    assert.deepEqual(await run(), a);
    const prompt = model.tokenizer.encode(
      model.tokenizer.applyChatTemplate([{ role: "user", content: "Tell me about the city." }]),
      false,
    );
    let finish = "";
    for await (const ev of new Session(model).generate(prompt, { maxTokens: 200, temperature: 0.7, seed: 3 }))
      if (ev.type === "done") finish = ev.finishReason;
    assert.equal(finish, "eos", "the model learned to end its turn with <|im_end|>");
  } finally {
    model.close();
  }
});
