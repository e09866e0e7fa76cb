// `hire serve` over real sockets: the protocol over WebSocket (with the wire codec), the
// OpenAI-compatible endpoint answering a plain HTTP client (streaming and not), and the guards:
// cross-origin WebSocket upgrades refused, no path traversal out of the UI folder.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { request } from "node:http";
import { spawn } from "node:child_process";
import { WebSocket } from "ws";
import { EngineHost } from "../core/host/engine-host.js";
import { parseBody } from "../core/host/openai.js";
import { serve, type RunningServer } from "../core/host/server.js";
import { decodeWire, encodeWire, type HostMessage, type StepTelemetry } from "../core/host/protocol.js";
import { makeModel } from "../core/modelgen/make-model.js";
import { hire, NO_SYSTEM_TEMPLATE, REPO_ROOT } from "./helpers.js";
import { defaultModelDir } from "../core/loader/default-model.js";
import { Session } from "../core/engine/session.js";

let root: string;
let host: EngineHost;
let server: RunningServer;

before(async () => {
  root = mkdtempSync(join(tmpdir(), "hire-serve-"));
  mkdirSync(join(root, "ui", "assets"), { recursive: true });
  writeFileSync(join(root, "ui", "index.html"), "<!doctype html><title>HiRE Studio</title>");
  writeFileSync(join(root, "ui", "assets", "app.js"), "console.log(1)");
  writeFileSync(join(root, "secret.txt"), "not for the browser");
  host = new EngineHost({ dataDir: join(root, "data"), contextLength: 256 });
  await host.handle({ id: 0, type: "model.load" }, () => {});
  server = await serve({ host, port: 0, uiDir: join(root, "ui") });
});

after(async () => {
  await server.close();
  host.close();
  rmSync(root, { recursive: true, force: true });
});

function wsUrl(): string {
  return server.url.replace("http:", "ws:") + "/ws";
}

test("serve: the UI's files are served with a CSP, and nothing outside its folder", async () => {
  const index = await fetch(server.url + "/");
  assert.equal(index.status, 200);
  assert.match(await index.text(), /HiRE Studio/);
  assert.match(index.headers.get("content-security-policy") ?? "", /default-src 'self'/);
  const js = await fetch(server.url + "/assets/app.js");
  assert.equal(js.headers.get("content-type"), "text/javascript; charset=utf-8");
  // fetch() normalises "..", so send the raw path with http.request.
  for (const path of ["/../secret.txt", "/%2e%2e/secret.txt", "/assets/../../secret.txt", "/%E0%A4%A"]) {
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(server.url + "/", { path }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      req.end();
    });
    assert.ok(status === 404 || status === 400, `${path} → ${status}`);
  }
});

test("serve: the protocol over WebSocket streams a generation with typed telemetry", async () => {
  const ws = new WebSocket(wsUrl());
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  const received: HostMessage[] = [];
  const done = new Promise<void>((resolve) => {
    ws.on("message", (data) => {
      const m = decodeWire(data.toString()) as HostMessage;
      received.push(m);
      if (m.type === "reply" && m.id === 2) resolve();
    });
  });
  ws.send("not json");
  ws.send(encodeWire({ id: 1, type: "hello" }));
  ws.send(
    encodeWire({
      id: 2,
      type: "generate",
      messages: [{ role: "user", content: "Hello" }],
      maxTokens: 3,
      sampling: { temperature: 0 },
    }),
  );
  await done;
  ws.close();
  const protocolError = received.find((m) => m.type === "reply" && m.id === -1);
  assert.ok(protocolError && protocolError.type === "reply" && !protocolError.ok);
  assert.equal(protocolError.error.code, "PROTOCOL");
  const hello = received.find((m) => m.type === "reply" && m.id === 1);
  assert.ok(hello?.type === "reply" && hello.ok);
  const tokens = received.filter((m) => m.type === "gen.token");
  assert.ok(tokens.length >= 1 && tokens.length <= 3);
  const step = (tokens[0] as { step: StepTelemetry }).step;
  assert.ok(step.attentionMs instanceof Float32Array && step.attentionMs.length === 6);
  assert.ok(step.selectedOffsets instanceof Int32Array);
});

test("serve: a WebSocket upgrade from another origin is refused", async () => {
  const ws = new WebSocket(wsUrl(), { headers: { origin: "https://evil.example" } });
  const outcome = await new Promise<string>((resolve) => {
    ws.once("open", () => resolve("open"));
    ws.once("error", (e) => resolve(e.message));
  });
  assert.match(outcome, /403|Unexpected server response/);
});

test("serve: the OpenAI-compatible endpoint streams chunks with sparsity stats to a plain HTTP client", async () => {
  const res = await fetch(server.url + "/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      messages: [{ role: "user", content: "Say something." }],
      max_tokens: 5,
      temperature: 0,
      stream: true,
    }),
  });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/event-stream");
  const lines = (await res.text()).split("\n\n").filter((l) => l.startsWith("data: "));
  assert.equal(lines.at(-1), "data: [DONE]");
  const chunks = lines.slice(0, -1).map((l) => JSON.parse(l.slice(6)));
  assert.ok(chunks.every((c) => c.object === "chat.completion.chunk"));
  assert.equal(chunks[0].choices[0].delta.role, "assistant");
  const content = chunks.filter((c) => c.hire);
  assert.ok(content.length >= 1);
  assert.deepEqual(content[0].hire.selected.length, 6);
  assert.equal(typeof content[0].hire.bytes, "number");
  const last = chunks.at(-1);
  assert.ok(["stop", "length"].includes(last.choices[0].finish_reason));
  assert.equal(last.usage.completion_tokens, content.length);

  const plain = await fetch(server.url + "/v1/chat/completions", {
    method: "POST",
    body: JSON.stringify({ messages: [{ role: "user", content: "Say something." }], max_tokens: 5, temperature: 0 }),
  });
  const body = (await plain.json()) as {
    object: string;
    choices: { message: { content: string } }[];
    hire: { tokens: unknown[] };
    usage: { completion_tokens: number };
  };
  assert.equal(body.object, "chat.completion");
  // Same greedy request, same text, streamed or not.
  assert.equal(body.choices[0].message.content, content.map((c) => c.choices[0].delta.content).join(""));
  assert.equal(body.hire.tokens.length, body.usage.completion_tokens);
});

test("serve: a conversation the chat template refuses is a 400 saying why, not a 500", async (t) => {
  const dir = join(root, "no-system-model");
  await makeModel({ arch: "llama", dtype: "f32", seed: 1, out: dir });
  writeFileSync(join(dir, "chat_template.jinja"), NO_SYSTEM_TEMPLATE);
  const own = new EngineHost({ dataDir: join(root, "data-template"), contextLength: 64 });
  await own.handle({ id: 0, type: "model.load", path: dir }, () => {});
  const ownServer = await serve({ host: own, port: 0, uiDir: join(root, "ui") });
  t.after(async () => {
    await ownServer.close();
    own.close();
  });
  const ask = (messages: unknown[], stream: boolean) =>
    fetch(ownServer.url + "/v1/chat/completions", {
      method: "POST",
      body: JSON.stringify({ messages, max_tokens: 2, temperature: 0, stream }),
    });
  for (const stream of [false, true]) {
    const res = await ask(
      [
        { role: "system", content: "be brief" },
        { role: "user", content: "hi" },
      ],
      stream,
    );
    assert.equal(res.status, 400, `stream: ${stream}`);
    const body = (await res.json()) as { error: { type: string; message: string } };
    assert.equal(body.error.type, "chat_template");
    assert.match(
      body.error.message,
      /chat_template\.jinja: the chat template refused this conversation: System role not supported/,
    );
  }
  assert.equal((await ask([{ role: "user", content: "hi" }], false)).status, 200);
});

test("serve: /health is 200 once a model is loaded and 503 without one, as llama.cpp's server answers", async (t) => {
  const ok = await fetch(server.url + "/health");
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), { status: "ok" });
  const empty = new EngineHost({ dataDir: join(root, "data-health") });
  const emptyServer = await serve({ host: empty, port: 0, uiDir: join(root, "ui") });
  t.after(async () => {
    await emptyServer.close();
    empty.close();
  });
  const none = await fetch(emptyServer.url + "/health");
  assert.equal(none.status, 503);
  assert.deepEqual(await none.json(), { status: "no model loaded" });
  assert.equal((await fetch(server.url + "/health", { method: "POST" })).status, 405);
});

test("serve: a body past 16 MiB is a 413 saying so (not a reset connection), and the server goes on", async () => {
  for (const path of ["/v1/chat/completions", "/v1/completions"]) {
    const res = await fetch(server.url + path, { method: "POST", body: "a".repeat(17 * 1024 * 1024) });
    assert.equal(res.status, 413, path);
    const { error } = (await res.json()) as { error: { message: string } };
    assert.equal(error.message, "the body is larger than 16777216 bytes");
  }
  const ok = await fetch(server.url + "/v1/completions", {
    method: "POST",
    body: JSON.stringify({ prompt: "the cat", max_tokens: 2 }),
  });
  assert.equal(ok.status, 200);
});

test("serve: a prompt longer than the context is a 400 context_length_exceeded, streamed or not", async () => {
  const long = "the cat sat on the mat ".repeat(200); // > 256 tokens (the host's context)
  for (const [path, body] of [
    ["/v1/chat/completions", { messages: [{ role: "user", content: long }] }],
    ["/v1/completions", { prompt: long }],
  ] as const) {
    for (const stream of [false, true]) {
      const res = await fetch(server.url + path, {
        method: "POST",
        body: JSON.stringify({ ...body, max_tokens: 2, stream }),
      });
      assert.equal(res.status, 400, `${path} stream: ${stream}`);
      const { error } = (await res.json()) as { error: { type: string; code: string; message: string } };
      assert.equal(error.code, "context_length_exceeded");
      assert.match(
        error.message,
        /the prompt does not fit in the context window: needs \d+ positions, the context holds 256/,
      );
    }
  }
  // The engine is free again: a short request is answered.
  const ok = await fetch(server.url + "/v1/completions", {
    method: "POST",
    body: JSON.stringify({ prompt: "the cat", max_tokens: 2 }),
  });
  assert.equal(ok.status, 200);
});

test("serve: /v1/completions continues the prompt as it is, streamed or not, with the same text", async () => {
  const prompt = "The city council said";
  const ask = (extra: object) =>
    fetch(server.url + "/v1/completions", {
      method: "POST",
      body: JSON.stringify({ prompt, max_tokens: 6, temperature: 0, ...extra }),
    });
  const plain = (await (await ask({})).json()) as {
    object: string;
    choices: { text: string; finish_reason: string }[];
    usage: { prompt_tokens: number; completion_tokens: number };
    hire: { tokens: unknown[] };
  };
  assert.equal(plain.object, "text_completion");
  // The prompt's own tokens, no chat template around them: what the session's encode gives.
  assert.equal(plain.usage.prompt_tokens, host.loadedModel!.tokenizer.encode(prompt).length);
  assert.equal(plain.hire.tokens.length, plain.usage.completion_tokens);
  assert.ok(plain.choices[0].text.length > 0);
  const streamed = await ask({ stream: true });
  assert.equal(streamed.headers.get("content-type"), "text/event-stream");
  const lines = (await streamed.text()).split("\n\n").filter((l) => l.startsWith("data: "));
  assert.equal(lines.at(-1), "data: [DONE]");
  const chunks = lines.slice(0, -1).map((l) => JSON.parse(l.slice(6)));
  assert.ok(chunks.every((c) => c.object === "text_completion"));
  assert.equal(chunks.map((c) => c.choices[0].text).join(""), plain.choices[0].text, "same greedy text");
  assert.equal(chunks.at(-1).choices[0].finish_reason, plain.choices[0].finish_reason);
  assert.equal(chunks.at(-1).usage.completion_tokens, plain.usage.completion_tokens);
  // OpenAI's default max_tokens for text completions is 16; one prompt per request.
  const dflt = (await (await ask({ max_tokens: undefined })).json()) as {
    usage: { completion_tokens: number };
  };
  assert.ok(dflt.usage.completion_tokens <= 16);
  // The prompt as token ids (OpenAI's other form), bare or in a list of one: the same reply.
  const ids = host.loadedModel!.tokenizer.encode(prompt);
  for (const p of [ids, [ids]]) {
    const byIds = (await (await ask({ prompt: p })).json()) as typeof plain;
    assert.equal(byIds.choices[0].text, plain.choices[0].text, "same greedy text from the ids");
    assert.equal(byIds.usage.prompt_tokens, ids.length);
  }
  const vocab = host.loadedModel!.config.vocab;
  for (const stream of [false, true]) {
    const res = await ask({ prompt: [1, vocab], stream });
    assert.equal(res.status, 400, `stream: ${stream}`);
    assert.match(((await res.json()) as { error: { message: string } }).error.message, /token id \d+ is outside/);
  }
  for (const [body, pattern] of [
    [{ prompt: ["a", "b"] }, /one prompt per request/],
    [{ prompt: [[1, 2], [3]] }, /one prompt per request/],
    [{ prompt: [1.5, 2] }, /a list of token ids/],
    [{ prompt: [] }, /a list of token ids/],
    [{ prompt: 3 }, /"prompt" must be a string/],
    [{ prompt: "x", echo: true }, /"echo" is not supported/],
    [{ prompt: "x", max_tokens: 0 }, /max_tokens/],
  ] as const) {
    const res = await fetch(server.url + "/v1/completions", { method: "POST", body: JSON.stringify(body) });
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.match(((await res.json()) as { error: { message: string } }).error.message, pattern);
  }
});

test("serve: log-probabilities in OpenAI's chat and legacy forms are the session's, token by token", async () => {
  const model = host.loadedModel!;
  const messages = [{ role: "user" as const, content: "The city council said" }];
  const post = async <T>(path: string, body: object): Promise<T> =>
    (await (
      await fetch(server.url + path, {
        method: "POST",
        body: JSON.stringify({ temperature: 0, repetition_penalty: 1, max_tokens: 5, ...body }),
      })
    ).json()) as T;
  interface ChatAnswer {
    choices: {
      message: { content: string };
      logprobs?: {
        content: {
          token: string;
          logprob: number;
          bytes: number[];
          top_logprobs: { token: string; logprob: number }[];
        }[];
      };
    }[];
  }
  interface TextAnswer {
    choices: {
      text: string;
      logprobs: {
        tokens: string[];
        token_logprobs: number[];
        top_logprobs: Record<string, number>[];
        text_offset: number[];
      };
    }[];
  }
  // What a session reports for the same greedy reply: the chosen tokens' log-probabilities and the top 3.
  const want: { id: number; logprob: number; top: [number, number][] }[] = [];
  const ids = model.tokenizer.encode(model.tokenizer.applyChatTemplate(messages, true), false);
  for await (const ev of new Session(model).generate(ids, {
    temperature: 0,
    repetitionPenalty: 1,
    maxTokens: 5,
    logprobs: 3,
  }))
    if (ev.type === "token") want.push({ id: ev.id, logprob: ev.logprob!, top: ev.topLogprobs! });
  const tok = (id: number) => model.tokenizer.decode([id], false);

  const chat = await post<ChatAnswer>("/v1/chat/completions", { messages, logprobs: true, top_logprobs: 3 });
  const content = chat.choices[0].logprobs!.content;
  assert.equal(content.length, want.length);
  content.forEach((c, i) => {
    assert.equal(c.token, tok(want[i].id));
    assert.ok(Math.abs(c.logprob - want[i].logprob) < 1e-9, `token ${i}: ${c.logprob} vs ${want[i].logprob}`);
    assert.deepEqual(c.bytes, [...Buffer.from(c.token, "utf8")]);
    assert.deepEqual(
      c.top_logprobs.map((a) => [a.token, a.logprob]),
      want[i].top.map(([id, lp]) => [tok(id), lp]),
    );
    assert.equal(c.top_logprobs[0].logprob, c.logprob, "greedy: the chosen token is the most likely");
  });

  const legacy = await post<TextAnswer>("/v1/completions", { prompt: "The city council said", logprobs: 2 });
  const lc = legacy.choices[0];
  const lp = lc.logprobs;
  assert.equal(lp.tokens.join(""), lc.text);
  assert.equal(lp.token_logprobs.length, lp.tokens.length);
  lp.top_logprobs.forEach((m, i) => {
    assert.equal(Object.keys(m).length, 2);
    assert.equal(Math.max(...Object.values(m)), lp.token_logprobs[i], "greedy: the chosen token is the most likely");
  });
  assert.deepEqual(
    lp.text_offset,
    lp.tokens.map((_, i) => lp.tokens.slice(0, i).join("").length),
  );
  // Streamed, each chunk's offset counts from the start of the completion too.
  const streamed = await fetch(server.url + "/v1/completions", {
    method: "POST",
    body: JSON.stringify({
      prompt: "The city council said",
      logprobs: 2,
      stream: true,
      temperature: 0,
      repetition_penalty: 1,
      max_tokens: 5,
    }),
  });
  const chunkLp = (await streamed.text())
    .split("\n\n")
    .filter((l) => l.startsWith("data: {"))
    .map((l) => JSON.parse(l.slice(6)) as TextAnswer)
    .filter((c) => c.choices[0].logprobs)
    .map((c) => c.choices[0].logprobs);
  assert.deepEqual(
    chunkLp.map((c) => [c.tokens[0], c.text_offset[0]]),
    lp.tokens.map((t, i) => [t, lp.text_offset[i]]),
  );

  // Without logprobs, none; malformed requests are 400s.
  assert.equal("logprobs" in (await post<ChatAnswer>("/v1/chat/completions", { messages })).choices[0], false);
  for (const [path, body, pattern] of [
    ["/v1/chat/completions", { messages, top_logprobs: 2 }, /"top_logprobs" needs "logprobs": true/],
    ["/v1/chat/completions", { messages, logprobs: true, top_logprobs: 21 }, /top_logprobs/],
    ["/v1/chat/completions", { messages, logprobs: 1 }, /"logprobs" must be a boolean/],
    ["/v1/completions", { prompt: "x", logprobs: 6 }, /"logprobs" must be an integer in 0..5/],
  ] as const) {
    const res = await fetch(server.url + path, { method: "POST", body: JSON.stringify(body) });
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.match(((await res.json()) as { error: { message: string } }).error.message, pattern);
  }
});

test("serve: a request sent while another reply runs waits its turn and is answered, not refused", async () => {
  const post = (content: string, extra: object = {}) =>
    fetch(server.url + "/v1/chat/completions", {
      method: "POST",
      body: JSON.stringify({ messages: [{ role: "user", content }], temperature: 0, max_tokens: 8, ...extra }),
    });
  type Answer = { choices: { message: { content: string } }[] };
  const alone = (await (await post("The harbour")).json()) as Answer;
  // A long streamed reply is running (its first chunk has come) when the second request arrives.
  const first = await post("A long story", { stream: true, max_tokens: 200 });
  const reader = first.body!.getReader();
  await reader.read();
  const [second, third] = await Promise.all([post("The harbour"), post("The harbour")]);
  for (const r of [second, third]) assert.equal(r.status, 200);
  for (const r of [second, third])
    assert.equal(((await r.json()) as Answer).choices[0].message.content, alone.choices[0].message.content);
  let rest = "";
  for (let c = await reader.read(); !c.done; c = await reader.read()) rest += new TextDecoder().decode(c.value);
  assert.ok(rest.endsWith("data: [DONE]\n\n"), "the first reply ran to its end");
});

test("serve: malformed OpenAI requests get a 400 naming the field", async () => {
  const cases: [unknown, RegExp][] = [
    [{ messages: "hi" }, /messages/],
    [{ messages: [{ role: "user", content: 3 }] }, /content/],
    [{ messages: [{ role: "user", content: "x" }], max_tokens: -1 }, /max_tokens/],
    [{ messages: [{ role: "user", content: "x" }], temperature: "warm" }, /temperature/],
    [{ messages: [{ role: "user", content: "x" }], temperature: -1 }, /temperature/],
    [{ messages: [{ role: "user", content: "x" }], chat_template_kwargs: [] }, /chat_template_kwargs/],
    [{ messages: [{ role: "user", content: "x" }], chat_template_kwargs: { enable_thinking: 1 } }, /enable_thinking/],
    [
      { messages: [{ role: "user", content: [{ type: "image_url", image_url: { url: "x" } }] }] },
      /messages\[0\]: only text/,
    ],
    [{ messages: [{ role: "user", content: [{ type: "text", text: 3 }] }] }, /only text content parts/],
    [{ messages: [{ role: "function", content: "x" }] }, /role must be/],
    [{ messages: [{ role: "user", content: "x" }], presence_penalty: 2.5 }, /"presence_penalty" must be in -2..2/],
    [{ messages: [{ role: "user", content: "x" }], frequency_penalty: "no" }, /"frequency_penalty" must be a number/],
    [{ messages: [{ role: "user", content: "x" }], n: 3 }, /"n" is not supported/],
  ];
  for (const [body, pattern] of cases) {
    const res = await fetch(server.url + "/v1/chat/completions", { method: "POST", body: JSON.stringify(body) });
    assert.equal(res.status, 400, JSON.stringify(body));
    const err = (await res.json()) as { error: { message: string } };
    assert.match(err.error.message, pattern);
  }
  // Content as a list of text parts (what OpenAI's SDKs and many chat clients send) and the
  // "developer" role read as vLLM reads them: the parts joined by newlines, developer as system.
  const parts = parseBody({
    messages: [
      { role: "developer", content: "Be brief." },
      {
        role: "user",
        content: [
          { type: "text", text: "Hello" },
          { type: "text", text: "there" },
        ],
      },
    ],
  });
  assert.deepEqual(parts.input, [
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hello\nthere" },
  ]);
  // The thinking switch in vLLM's form reaches the generation's parameters.
  const msgs = [{ role: "user", content: "x" }];
  assert.equal(parseBody({ messages: msgs, chat_template_kwargs: { enable_thinking: false } }).params.thinking, false);
  assert.equal("thinking" in parseBody({ messages: msgs }).params, false);
  const notJson = await fetch(server.url + "/v1/chat/completions", { method: "POST", body: "{" });
  assert.equal(notJson.status, 400);
  const models = (await (await fetch(server.url + "/v1/models")).json()) as { data: { id: string }[] };
  assert.equal(models.data[0].id, "hire-brown-6m");
});

test("hire serve --weights int8 loads its model with int8 weights; a bad --weights is a usage error", async (t) => {
  const bad = hire(["serve", "--no-model", "--port", "0", "--weights", "int3"]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--weights must be one of auto, file, int8, int4, got "int3"/);

  const dataDir = mkdtempSync(join(tmpdir(), "hire-serve-int8-"));
  const child = spawn(
    process.execPath,
    [join(REPO_ROOT, "bin", "hire.js"), "serve", "--port", "0", "--data", dataDir, "--weights", "int8"],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  t.after(() => {
    child.kill();
    rmSync(dataDir, { recursive: true, force: true });
  });
  let output = "";
  const url = await new Promise<string>((resolve, reject) => {
    const onData = (d: Buffer) => {
      output += d.toString();
      const m = /HiRE Studio at (http:\/\/\S+)/.exec(output);
      if (m) resolve(m[1]);
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`hire serve exited with ${code}:\n${output}`)));
  });
  const ws = new WebSocket(url.replace("http:", "ws:") + "/ws");
  await new Promise((resolve, reject) => ws.once("open", resolve).once("error", reject));
  const waiting = new Map<number, (m: HostMessage) => void>();
  ws.on("message", (data) => {
    const m = decodeWire(data.toString()) as HostMessage;
    if (m.type === "reply") waiting.get(m.id)?.(m);
  });
  const ask = (msg: { id: number; type: string } & Record<string, unknown>) =>
    new Promise<HostMessage>((resolve) => {
      waiting.set(msg.id, resolve);
      ws.send(encodeWire(msg));
    });
  const hello = await ask({ id: 1, type: "hello" });
  assert.ok(hello.type === "reply" && hello.ok, JSON.stringify(hello));
  const model = (hello.result as { model: { name: string; weights: string } }).model;
  assert.deepEqual([model.name, model.weights], ["hire-brown-6m", "int8"]);
  // The estimate for a load follows the flag unless the request says otherwise.
  const est = await ask({ id: 2, type: "model.inspect", path: defaultModelDir() });
  assert.ok(est.type === "reply" && est.ok && (est.result as { weights: string }).weights === "int8");
  const reply = await ask({
    id: 3,
    type: "generate",
    messages: [{ role: "user", content: "Hello" }],
    maxTokens: 3,
    sampling: { temperature: 0 },
  });
  assert.ok(reply.type === "reply" && reply.ok, JSON.stringify(reply));
  ws.close();
});
