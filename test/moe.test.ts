// Mixture-of-experts layers beyond the goldens (test/golden/*moe*, mixtral: the forward pass against
// the NumPy reference): the routing rule on constructed logits, a sparse method run per expert with
// its telemetry merged per layer, the CLI's per-layer experts, and the ONNX export that refuses them.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { makeModel } from "../core/modelgen/make-model.js";
import { loadModel } from "../core/loader/model-folder.js";
import { Session } from "../core/engine/session.js";
import { layerNeurons, route, sparsemixer } from "../core/engine/moe.js";
import { stepTelemetry } from "../core/host/engine-host.js";
import type { ForwardReport } from "../core/engine/transformer.js";
import { ffnBytes, layerFfnBytes, linearBytes } from "../core/arch/config.js";
import { resolveCount } from "../core/sparse/settings.js";
import { exportOnnx } from "../core/onnx/export.js";
import { ModelError, UsageError } from "../core/loader/errors.js";
import { hire, tempDir } from "./helpers.js";
import { createBackend } from "../core/backend/select.js";

test("route: each token's top-k experts by logit, softmax weights over all experts or renormalized", () => {
  // Token 0: logits 0, ln 3, ln 2, ln 4 → probabilities 1/10, 3/10, 2/10, 4/10. Token 1: expert 0 leads.
  const logits = Float32Array.of(0, Math.log(3), Math.log(2), Math.log(4), 5, 1, 0, 2);
  const plain = route(logits, 2, {
    experts: 4,
    topK: 2,
    normalize: false,
    expertIntermediate: 8,
    denseIntermediate: 8,
    layers: [true],
  });
  assert.deepEqual(Array.from(plain.ids), [3, 1, 0, 3]);
  assert.ok(Math.abs(plain.weights[0] - 0.4) < 1e-6 && Math.abs(plain.weights[1] - 0.3) < 1e-6);
  const norm = route(logits, 2, {
    experts: 4,
    topK: 2,
    normalize: true,
    expertIntermediate: 8,
    denseIntermediate: 8,
    layers: [true],
  });
  assert.ok(Math.abs(norm.weights[0] - 4 / 7) < 1e-6 && Math.abs(norm.weights[1] - 3 / 7) < 1e-6);
  assert.ok(Math.abs(norm.weights[2] + norm.weights[3] - 1) < 1e-6);
  assert.ok(norm.weights[2] > norm.weights[3]);
  // ERNIE 4.5's correction bias chooses (experts 0 and 2 here: 0.1 + 0.5, 0.2 + 0.3) but does not weigh.
  const bias = Float32Array.of(0.5, 0, 0.3, 0);
  const m = { experts: 4, topK: 2, normalize: true, expertIntermediate: 8, denseIntermediate: 8, layers: [true] };
  const biased = route(logits.subarray(0, 4), 1, m, bias);
  assert.deepEqual(Array.from(biased.ids), [0, 2]);
  assert.ok(Math.abs(biased.weights[0] - 1 / 3) < 1e-6 && Math.abs(biased.weights[1] - 2 / 3) < 1e-6);
});

test("sparsemixer: the best expert weighted over those within the jitter window of it, then the best of the rest", () => {
  // Logits 4, 3.8, 1, 3: with eps 0.15 the window keeps (4 - z) / max(|z|, 4) <= 0.3, i.e. z >= 2.8.
  const z = Float32Array.of(4, 3.8, 1, 3);
  const r = sparsemixer(z, 1, 4, 2, 0.15);
  assert.deepEqual(Array.from(r.ids), [0, 1]);
  const first = 1 / (1 + Math.exp(3.8 - 4) + Math.exp(3 - 4)); // softmax over experts 0, 1 and 3
  // Second: the best of 1, 2, 3 is 3.8; its window (3.8 - z) / 3.8 <= 0.3 keeps 3.8 and 3, not 1.
  const second = 1 / (1 + Math.exp(3 - 3.8));
  assert.ok(Math.abs(r.weights[0] - first) < 1e-6, `${r.weights[0]} vs ${first}`);
  assert.ok(Math.abs(r.weights[1] - second) < 1e-6, `${r.weights[1]} vs ${second}`);
  // A tiny window: each expert alone, weight 1.
  assert.deepEqual(Array.from(sparsemixer(z, 1, 4, 2, 1e-4).weights), [1, 1]);
});

test("hire on a mixture runs per routed expert: k per expert, neurons numbered expert by expert, bytes add up", async (t) => {
  const dir = join(tempDir(t), "olmoe");
  await makeModel({ arch: "olmoe", dtype: "bf16", seed: 5, out: dir });
  const model = loadModel(dir);
  t.after(() => model.close());
  const c = model.config;
  const m = c.moe!;
  const F = m.expertIntermediate;
  const session = new Session(model);
  session.sparsity.update({ ffn: { method: "hire", k: 0.25, oversample: 2 }, auditEvery: 1 });
  const reports: ForwardReport[] = [];
  for await (const ev of session.generate("experts", { maxTokens: 5, temperature: 0, ignoreEos: true })) {
    if (ev.type === "token") reports.push(ev.report);
  }
  const k = resolveCount(0.25, F);
  for (const r of reports.slice(1)) {
    r.layers.forEach((l, i) => {
      const lw = model.weights.layers[i];
      assert.ok(l.moe && lw.moe, `layer ${i} is a mixture`);
      const f = l.ffn!;
      assert.equal(f.method, "hire");
      assert.equal(f.k, m.topK * k, "k of each routed expert");
      assert.equal(f.selected.length, m.topK * k);
      assert.equal(f.candidates, m.topK * 2 * k);
      // Every selected neuron lies in a routed expert's range, k of them in each.
      const experts = Array.from(l.moe.ids);
      for (const e of experts) {
        const inside = Array.from(f.selected).filter((x) => x >= e * F && x < (e + 1) * F);
        assert.equal(inside.length, k, `expert ${e}`);
      }
      for (let j = 1; j < f.selected.length; j++) assert.ok(f.selected[j] > f.selected[j - 1], "ascending");
      // What the dense mixture reads: its router and its routed experts.
      assert.equal(f.denseBytes, layerFfnBytes(lw, c));
      assert.equal(f.denseBytes, linearBytes(lw.moe.router) + m.topK * ffnBytes(lw.moe.experts[0]));
      assert.ok(f.bytes > linearBytes(lw.moe.router) && f.bytes < f.denseBytes);
      assert.ok(f.recall !== undefined && f.recall >= 0 && f.recall <= 1, "audited: recall merged over experts");
    });
  }
});

test("generate --json names each mixture layer's experts and weights; the ONNX export refuses mixtures", async (t) => {
  const dir = join(tempDir(t), "mixtral");
  await makeModel({ arch: "mixtral", dtype: "f32", seed: 9, out: dir });
  const r = hire(["generate", "--model", dir, "--prompt", "hi", "--max-tokens", "3", "--temperature", "0", "--json"]);
  assert.equal(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { steps: { layers: { experts: number[]; expert_weights: number[] }[] }[] };
  for (const step of out.steps) {
    for (const l of step.layers) {
      assert.equal(l.experts.length, 2);
      assert.notEqual(l.experts[0], l.experts[1]);
      assert.ok(l.experts.every((e) => Number.isInteger(e) && e >= 0 && e < 4));
      // Mixtral renormalizes over the chosen two, best first.
      assert.ok(Math.abs(l.expert_weights[0] + l.expert_weights[1] - 1) < 1e-3);
      assert.ok(l.expert_weights[0] >= l.expert_weights[1]);
    }
  }
  const model = loadModel(dir);
  t.after(() => model.close());
  assert.throws(
    () => exportOnnx(model, join(tempDir(t), "m.onnx")),
    (e: unknown) => e instanceof UsageError && /no mixture-of-experts layers \(MixtralForCausalLM\)/.test(e.message),
  );
});

test("the app's step telemetry maps a dense mixture layer's routed experts onto the layer's neurons", async (t) => {
  const dir = join(tempDir(t), "qwen2moe");
  await makeModel({ arch: "qwen2moe", dtype: "bf16", seed: 2, out: dir });
  const model = loadModel(dir);
  t.after(() => model.close());
  const m = model.config.moe!;
  const F = m.expertIntermediate;
  assert.equal(layerNeurons(model.config), m.experts * F + m.sharedIntermediate!, "experts', then the shared one's");
  const session = new Session(model);
  let checked = 0;
  for await (const ev of session.generate("route me", { maxTokens: 3, temperature: 0, ignoreEos: true })) {
    if (ev.type !== "token") continue;
    const s = stepTelemetry(ev.report, session, 1, false);
    ev.report.layers.forEach((l, i) => {
      const experts = Array.from(l.moe!.ids.subarray(-m.topK)).sort((a, b) => a - b); // the step's last token's
      const expected = experts.flatMap((e) => Array.from({ length: F }, (_, j) => e * F + j));
      assert.deepEqual(Array.from(s.selected.subarray(s.selectedOffsets[i], s.selectedOffsets[i + 1])), expected);
      assert.equal(s.k[i], m.topK * F);
      checked++;
    });
  }
  assert.equal(checked, 3 * model.config.layers);
});

test("a mixture's routed experts run as one hireFfnBatch: the same tokens, log-probabilities and selections as one at a time", async (t) => {
  const dir = join(tempDir(t), "olmoe");
  await makeModel({ arch: "olmoe", dtype: "bf16", seed: 8, out: dir });
  const model = loadModel(dir);
  t.after(() => model.close());
  const run = async (batched: boolean) => {
    const backend = createBackend("cpu", 2);
    let batches = 0;
    const batch = backend.hireFfnBatch!.bind(backend);
    Object.assign(backend, {
      hireFfnBatch: batched
        ? (steps: Parameters<typeof batch>[0]) => {
            batches++;
            assert.equal(steps.length, model.config.moe!.topK, "the token's routed experts, at once");
            return batch(steps);
          }
        : undefined,
    });
    const session = new Session(model, { backend });
    session.sparsity.update({
      ffn: { method: "hire", k: 0.2, oversample: 2, predictor: { kind: "int4", groupSize: 32 } },
    });
    const out: { id: number; lp: [number, number][]; sel: number[][] }[] = [];
    for await (const ev of session.generate("one at a time", {
      maxTokens: 6,
      temperature: 0,
      logprobs: 3,
      ignoreEos: true,
    })) {
      if (ev.type === "token")
        out.push({
          id: ev.id,
          lp: ev.topLogprobs!,
          sel: ev.report.layers.map((l) => Array.from(l.ffn?.selected ?? [])),
        });
    }
    return { out, batches };
  };
  const one = await run(false);
  const at = await run(true);
  assert.equal(one.batches, 0);
  assert.equal(at.batches, 5 * model.config.layers, "every decoded token, every layer (not the prompt)");
  assert.deepEqual(at.out, one.out);
});

test("an inspected mixture layer's scores span the layer's neurons, the routed experts' in place", async (t) => {
  const dir = join(tempDir(t), "qwen3moe");
  await makeModel({ arch: "qwen3moe", dtype: "bf16", seed: 4, out: dir });
  const model = loadModel(dir);
  t.after(() => model.close());
  const m = model.config.moe!;
  const F = m.expertIntermediate;
  const session = new Session(model);
  session.sparsity.update({ ffn: { method: "hire", k: 0.25, oversample: 2 }, auditEvery: 1 });
  session.sparsity.inspect(1);
  let seen = 0;
  for await (const ev of session.generate("look", { maxTokens: 3, temperature: 0, ignoreEos: true })) {
    if (ev.type !== "token" || ev.report.tokens !== 1) continue;
    const l = ev.report.layers[1];
    const s = l.ffn!.scores!;
    assert.equal(s.approx.length, layerNeurons(model.config));
    const routed = new Set(Array.from(l.moe!.ids));
    for (let e = 0; e < m.experts; e++) {
      const block = s.approx.subarray(e * F, (e + 1) * F);
      if (!routed.has(e))
        assert.ok(
          block.every((v) => v === 0),
          `expert ${e} was not routed: zeros`,
        );
      else
        assert.ok(
          block.some((v) => v !== 0),
          `expert ${e}'s predicted scores`,
        );
    }
    for (const c of s.candidates) assert.ok(routed.has(Math.floor(c / F)), `candidate ${c} in a routed expert`);
    assert.equal(s.exactTopK!.length, l.ffn!.k, "audited: each routed expert's exact top-k");
    assert.equal(l.ffn!.recall !== undefined, true);
    seen++;
  }
  assert.ok(seen >= 2);
});

test("a mixture whose config.json and weights disagree is a ModelError naming the tensor", async (t) => {
  const dir = join(tempDir(t), "mixtral");
  await makeModel({ arch: "mixtral", dtype: "f32", seed: 1, out: dir });
  const file = join(dir, "config.json");
  const config = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  // More experts than the file has: the router's shape is wrong first.
  writeFileSync(file, JSON.stringify({ ...config, num_local_experts: 8 }));
  assert.throws(
    () => loadModel(dir),
    (e: unknown) =>
      e instanceof ModelError && e.code === "SHAPE_MISMATCH" && /block_sparse_moe\.gate\.weight/.test(e.message),
  );
  // Each expert narrower than the file's: the first expert's matrix is named.
  writeFileSync(file, JSON.stringify({ ...config, intermediate_size: 64 }));
  assert.throws(
    () => loadModel(dir),
    (e: unknown) => e instanceof ModelError && e.code === "SHAPE_MISMATCH" && /experts\.0\.w1\.weight/.test(e.message),
  );
  // More experts per token than experts: a config error before any weight is read.
  writeFileSync(file, JSON.stringify({ ...config, num_experts_per_tok: 5 }));
  assert.throws(
    () => loadModel(dir),
    (e: unknown) =>
      e instanceof ModelError &&
      e.code === "BAD_CONFIG" &&
      /"num_experts_per_tok" \(5\) exceeds the 4 experts/.test(e.message),
  );
});
