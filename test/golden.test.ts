// Parity with the golden models (../shared/golden): an independent float64 reference of the
// Hugging Face forward pass. Greedy ids must match exactly and top-5 log-probabilities to 1e-3,
// through the real CLI (`hire generate --json`) and through the Session API. test/golden adds
// architectures the shared set lacks (Qwen3), made by tools/golden with a NumPy float64 reference
// that shares no code with the engine and reproduces the shared folders' expected.json to 1e-13.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readdirSync, readFileSync, symlinkSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";
import { goldenDir, hire, REPO_ROOT, tempDir } from "./helpers.js";
import { loadModel } from "../core/loader/model-folder.js";
import { Session } from "../core/engine/session.js";

interface Expected {
  prompt: string;
  prompt_ids: number[];
  ids: number[];
  top_logprobs: [number, number][][];
  margins: number[];
}

const root = goldenDir();
const folders = root ? readdirSync(root).filter((d) => !d.includes(".")) : [];
const ours = join(REPO_ROOT, "test", "golden");
const dirs = [...folders.map((d) => join(root!, d)), ...readdirSync(ours).map((d) => join(ours, d))];

test("golden models are present", { skip: root ? false : "shared/golden not found (set HIRE_GOLDEN_DIR)" }, () => {
  assert.ok(folders.length >= 5, `expected at least 5 golden folders, found ${folders.join(", ")}`);
});

function compare(name: string, expected: Expected, ids: number[], steps: [number, number][][]): void {
  assert.deepEqual(ids, expected.ids, `${name}: greedy ids differ`);
  for (let i = 0; i < expected.top_logprobs.length; i++) {
    const want = expected.top_logprobs[i];
    const got = steps[i];
    for (let j = 0; j < want.length; j++) {
      // Ids must agree unless two candidates are within rounding of each other.
      const [wid, wlp] = want[j];
      const match = got.find(([id]) => id === wid);
      assert.ok(match, `${name} step ${i}: token ${wid} missing from our top-${got.length}`);
      assert.ok(Math.abs(match[1] - wlp) < 1e-3, `${name} step ${i} token ${wid}: logprob ${match[1]} vs ${wlp}`);
    }
  }
}

for (const dir of dirs) {
  const name = basename(dir);
  const expected = JSON.parse(readFileSync(join(dir, "expected.json"), "utf8")) as Expected;

  test(`golden ${name}: CLI generate --json matches the reference`, () => {
    const r = hire([
      "generate",
      "--model",
      dir,
      "--prompt",
      expected.prompt,
      "--max-tokens",
      String(expected.ids.length),
      "--temperature",
      "0",
      "--logprobs",
      "5",
      "--ignore-eos",
      "--json",
    ]);
    assert.equal(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout) as {
      prompt_ids: number[];
      ids: number[];
      steps: { id: number; top_logprobs: [number, number][] }[];
      timings: Record<string, number>;
    };
    assert.deepEqual(out.prompt_ids, expected.prompt_ids, "prompt tokenization differs");
    compare(
      name,
      expected,
      out.ids,
      out.steps.map((s) => s.top_logprobs),
    );
    assert.equal(typeof out.timings.prefill_ms, "number");
    assert.equal(typeof out.timings.decode_tokens_per_s, "number");
  });

  test(`golden ${name}: token-by-token prefill gives the same result as batched prefill`, async () => {
    const model = loadModel(dir);
    try {
      const session = new Session(model);
      // Feed the prompt one token at a time through the cache (decode path only).
      for (let i = 1; i < expected.prompt_ids.length; i++) {
        for await (const ev of session.generate(expected.prompt_ids.slice(0, i), { maxTokens: 0 })) void ev;
      }
      const { ids, steps, reused } = await greedy(session, expected);
      assert.equal(reused, expected.prompt_ids.length - 1);
      compare(name, expected, ids, steps);
    } finally {
      model.close();
    }
  });
}

/** The reference's greedy run through a session: ids, top-5 log-probabilities, prompt tokens reused. */
async function greedy(session: Session, expected: Expected) {
  const ids: number[] = [];
  const steps: [number, number][][] = [];
  let reused = 0;
  for await (const ev of session.generate(expected.prompt_ids, {
    maxTokens: expected.ids.length,
    temperature: 0,
    logprobs: 5,
    ignoreEos: true,
  })) {
    if (ev.type === "prefill") reused = ev.reusedTokens;
    if (ev.type === "token") {
      ids.push(ev.id);
      steps.push(ev.topLogprobs!);
    }
  }
  return { ids, steps, reused };
}

/**
 * The folder's config.json as transformers 5 saves it: rope_theta, rope_scaling and Gemma 3's
 * rope_local_base_freq become rope_parameters (one object per layer type where the layers differ).
 */
function transformers5Config(config: Record<string, unknown>): Record<string, unknown> {
  const { rope_theta, rope_scaling, rope_local_base_freq, ...rest } = config;
  const scaling = (rope_scaling ?? {}) as Record<string, unknown>;
  const full = { rope_type: scaling.rope_type ?? scaling.type ?? "default", ...scaling, rope_theta };
  if (rope_local_base_freq === undefined) return { ...rest, rope_parameters: full };
  const sliding = { rope_type: "default", rope_theta: rope_local_base_freq };
  return { ...rest, rope_parameters: { full_attention: full, sliding_attention: sliding } };
}

// Partial rotary with longrope (Phi-4-mini's form) and two rotary bases by layer type (Gemma 3).
for (const name of ["phi3-partial-bf16", "gemma3-bf16"]) {
  test(`golden ${name}: the same results from a config in transformers 5's form (rope_parameters)`, async (t) => {
    const src = join(ours, name);
    const dir = tempDir(t);
    for (const f of readdirSync(src).filter((f) => f !== "config.json")) symlinkSync(join(src, f), join(dir, f));
    const config = transformers5Config(JSON.parse(readFileSync(join(src, "config.json"), "utf8")));
    assert.equal(config.rope_theta, undefined);
    writeFileSync(join(dir, "config.json"), JSON.stringify(config));
    const expected = JSON.parse(readFileSync(join(src, "expected.json"), "utf8")) as Expected;
    const model = loadModel(dir);
    try {
      const { ids, steps } = await greedy(new Session(model), expected);
      compare(name, expected, ids, steps);
    } finally {
      model.close();
    }
  });
}
