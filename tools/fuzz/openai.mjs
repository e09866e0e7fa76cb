// Malformed requests against the OpenAI-compatible endpoints: valid chat and text-completion bodies
// (with tools, response_format, guided replies, logit_bias, penalties, logprobs, streaming) have one to three values
// replaced by junk or deleted, and each answer must be a 200 or a 4xx whose body says why: never a
// 5xx, a dropped connection or a hang; the server must answer a plain request afterwards.
// `npm run build:ts && node tools/fuzz/openai.mjs [CASES] [SEED]`.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EngineHost } from "../../dist/core/host/engine-host.js";
import { serve } from "../../dist/core/host/server.js";
import { defaultModelDir } from "../../dist/core/loader/default-model.js";
import { Rng } from "../../dist/core/engine/sampler.js";
import { mutateJson } from "./mutate.mjs";

const cases = Number(process.argv[2] ?? 300);
const seed0 = Number(process.argv[3] ?? 1);
const root = mkdtempSync(join(tmpdir(), "hire-fuzz-api-"));
const host = new EngineHost({ dataDir: join(root, "data"), contextLength: 512 });
await host.handle({ id: 0, type: "model.load", path: defaultModelDir() }, () => {});
const server = await serve({ host, port: 0 });

const TOOL = {
  type: "function",
  function: {
    name: "get_time",
    parameters: { type: "object", properties: { zone: { enum: ["UTC", "CET"] } }, required: ["zone"] },
  },
};
const BODIES = [
  [
    "/v1/chat/completions",
    {
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Hi" },
      ],
      max_tokens: 4,
      temperature: 0.7,
      top_p: 0.9,
      seed: 3,
    },
  ],
  [
    "/v1/chat/completions",
    {
      messages: [{ role: "user", content: [{ type: "text", text: "Hi" }] }],
      max_tokens: 3,
      stream: true,
      logprobs: true,
      top_logprobs: 2,
    },
  ],
  [
    "/v1/chat/completions",
    {
      messages: [{ role: "user", content: "Name?" }],
      max_tokens: 6,
      response_format: {
        type: "json_schema",
        json_schema: {
          name: "n",
          schema: { type: "object", properties: { n: { type: "integer", minimum: 0 } }, required: ["n"] },
        },
      },
    },
  ],
  [
    "/v1/chat/completions",
    {
      messages: [{ role: "user", content: "x" }],
      max_tokens: 3,
      logit_bias: { 5: -100, 7: 2 },
      presence_penalty: 0.5,
      frequency_penalty: -0.5,
      stop: ["\n", "."],
    },
  ],
  ["/v1/completions", { prompt: "The quick", max_tokens: 4, logprobs: 2, echo: false, stream: false }],
  ["/v1/completions", { prompt: "Code:", max_tokens: 8, guided_regex: "[A-Z]{2}-[0-9]{3}", temperature: 1 }],
  ["/v1/completions", { prompt: "Sum:", max_tokens: 8, grammar: 'root ::= [0-9]+ ("+" [0-9]+)*', temperature: 1 }],
  [
    "/v1/chat/completions",
    { messages: [{ role: "user", content: "Rate" }], max_tokens: 4, structured_outputs: { choice: ["good", "bad"] } },
  ],
  ["/v1/completions", { prompt: "The quick", max_tokens: 3, stream: true, stop: "x", min_p: 0.1, top_k: 5 }],
];
// The built-in model's chat template takes no tools, so bodies with tools test the 400s.
const WITH_TOOLS = [
  "/v1/chat/completions",
  { messages: [{ role: "user", content: "Time?" }], tools: [TOOL], tool_choice: "required", max_tokens: 4 },
];

async function ask(path, body) {
  const res = await fetch(server.url + path, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
    signal: AbortSignal.timeout(60_000),
  });
  return { status: res.status, text: await res.text() };
}

const tally = {};
const failures = [];
for (let c = 0; c < cases; c++) {
  const seed = seed0 + c;
  const rng = new Rng(seed);
  const [path, valid] = seed % 7 === 6 ? WITH_TOOLS : BODIES[seed % BODIES.length];
  const body = mutateJson(JSON.stringify(valid), rng);
  let outcome;
  try {
    const { status, text } = await ask(path, body);
    outcome = `${status}`;
    if (status >= 500) failures.push({ seed, body, error: `${status}: ${text.slice(0, 300)}` });
    else if (status >= 400 && !/"message"/.test(text))
      failures.push({ seed, body, error: `${status} with no message` });
  } catch (e) {
    outcome = "no answer";
    failures.push({ seed, body, error: `${e?.name}: ${e?.message}` });
  }
  tally[`${path} ${outcome}`] = (tally[`${path} ${outcome}`] ?? 0) + 1;
}
const after = await ask("/v1/completions", { prompt: "a", max_tokens: 1 });
if (after.status !== 200) failures.push({ seed: "after", body: "", error: `a plain request then got ${after.status}` });
await server.close();
host.close();
rmSync(root, { recursive: true, force: true });
console.log(`${cases} cases from seed ${seed0}`);
for (const [k, n] of Object.entries(tally).sort()) console.log(`  ${String(n).padStart(4)}  ${k}`);
for (const f of failures) console.log(`FAIL seed ${f.seed}: ${f.error}\n  body: ${f.body.slice(0, 400)}`);
process.exitCode = failures.length > 0 ? 1 : 0;
