// Session behaviour on a real (tiny, random) model: cancellation within one token, max tokens,
// stop strings, EOS, context limits, KV-cache reuse across turns, and chat templates.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeModel } from "../core/modelgen/make-model.js";
import { sentencePieceTokenizer, useReasoningTemplate } from "./helpers.js";
import { loadModel, type LoadedModel } from "../core/loader/model-folder.js";
import { Session, type GenerateOptions, type GenerationEvent } from "../core/engine/session.js";
import { KVCache } from "../core/engine/transformer.js";
import { ContextOverflowError, UsageError } from "../core/loader/errors.js";

let root: string;
let model: LoadedModel;

before(async () => {
  root = mkdtempSync(join(tmpdir(), "hire-session-"));
  await makeModel({ arch: "llama", dtype: "f32", seed: 21, out: join(root, "m") });
  model = loadModel(join(root, "m"));
});
after(() => {
  model.close();
  rmSync(root, { recursive: true, force: true });
});

async function collect(session: Session, prompt: string | number[], o: GenerateOptions) {
  const events: GenerationEvent[] = [];
  for await (const ev of session.generate(prompt, o)) events.push(ev);
  const done = events.at(-1);
  assert.ok(done && done.type === "done");
  return { events, done, tokens: events.filter((e) => e.type === "token") };
}

const PROMPT = "The quick brown fox";

test("maxTokens is honoured exactly, finish reason length", async () => {
  const { done, tokens } = await collect(new Session(model), PROMPT, { maxTokens: 7, temperature: 0 });
  assert.equal(tokens.length, 7);
  assert.equal(done.ids.length, 7);
  assert.equal(done.finishReason, "length");
  assert.ok(done.decodeTokensPerS > 0);
});

test("abort from the consumer stops at once and leaves the session usable", async () => {
  const session = new Session(model);
  const abort = new AbortController();
  const ids: number[] = [];
  let finish = "";
  for await (const ev of session.generate(PROMPT, { maxTokens: 50, temperature: 0, signal: abort.signal })) {
    if (ev.type === "token") {
      ids.push(ev.id);
      if (ids.length === 3) abort.abort();
    }
    if (ev.type === "done") finish = ev.finishReason;
  }
  assert.equal(finish, "aborted");
  assert.equal(ids.length, 3, "no token is computed after the abort");
  // Usable afterwards, and the cache is consistent: same result as a fresh session.
  const again = await collect(session, PROMPT, { maxTokens: 10, temperature: 0 });
  const fresh = await collect(new Session(model), PROMPT, { maxTokens: 10, temperature: 0 });
  assert.deepEqual(again.done.ids, fresh.done.ids);
  assert.equal(again.done.ids.slice(0, 3).join(), ids.join());
});

test("abort from a timer (another task) stops within one token", async () => {
  const session = new Session(model);
  const abort = new AbortController();
  let tokensAfterAbort = 0;
  let finish = "";
  for await (const ev of session.generate(PROMPT, {
    maxTokens: 400,
    temperature: 0.8,
    seed: 1,
    signal: abort.signal,
  })) {
    if (ev.type === "token") {
      if (abort.signal.aborted) tokensAfterAbort++;
      else setTimeout(() => abort.abort(), 2);
    }
    if (ev.type === "done") finish = ev.finishReason;
  }
  assert.equal(finish, "aborted");
  assert.ok(tokensAfterAbort <= 1, `${tokensAfterAbort} tokens after the abort`);
});

test("abort during a prefill batch stops after the layer it is in; the session stays consistent", async () => {
  const session = new Session(model);
  const ids = Array.from({ length: session.transformer.ws.batch + 10 }, (_, i) => (i * 11) % 300);
  const abort = new AbortController();
  // Runs at the first turn of the event loop the prefill gives, i.e. after its first layer.
  setImmediate(() => abort.abort());
  const { done, tokens } = await collect(session, ids, { maxTokens: 5, temperature: 0, signal: abort.signal });
  assert.equal(done.finishReason, "aborted");
  assert.equal(tokens.length, 0);
  assert.equal(session.position, 0, "the half-written batch is not counted as cached");
  // The keys and values that layer wrote are overwritten: the same reply as a fresh session's.
  const again = await collect(session, ids, { maxTokens: 5, temperature: 0 });
  const fresh = await collect(new Session(model), ids, { maxTokens: 5, temperature: 0 });
  assert.deepEqual(again.done.ids, fresh.done.ids);
});

test("an already-aborted signal stops before prefill", async () => {
  const abort = new AbortController();
  abort.abort();
  const { done, tokens } = await collect(new Session(model), PROMPT, { maxTokens: 5, signal: abort.signal });
  assert.equal(done.finishReason, "aborted");
  assert.equal(tokens.length, 0);
});

test("streamed text adds up to the decoded reply with a SentencePiece tokenizer (byte pieces, a stripped first space)", async () => {
  // Random tokens from a random model: byte pieces that split characters, words with and without "▁".
  const dir = join(root, "sentencepiece");
  await makeModel({ arch: "llama", dtype: "f32", seed: 5, shape: { vocab: 300 }, out: dir });
  writeFileSync(join(dir, "tokenizer.json"), JSON.stringify(sentencePieceTokenizer(300)));
  const sp = loadModel(dir);
  try {
    for (const seed of [1, 2, 3]) {
      const r = await collect(new Session(sp), "the quick fox", {
        maxTokens: 120,
        temperature: 1.5,
        seed,
        ignoreEos: true,
      });
      const streamed = r.tokens.map((e) => (e.type === "token" ? e.text : "")).join("");
      assert.equal(r.done.text, sp.tokenizer.decode(r.done.ids), `seed ${seed}`);
      // A reply cut in the middle of a character ends in U+FFFD: only the final text carries it.
      assert.equal(streamed, r.done.text.replace(/\ufffd+$/, ""), `seed ${seed}: streamed deltas`);
    }
  } finally {
    sp.close();
  }
});

test("stop strings end generation before the string, across token boundaries", async () => {
  const free = await collect(new Session(model), PROMPT, { maxTokens: 24, temperature: 0 });
  const text = free.done.text;
  assert.ok(text.length >= 6, `need some text to cut: ${JSON.stringify(text)}`);
  const stop = text.slice(3, 6);
  const cut = await collect(new Session(model), PROMPT, { maxTokens: 24, temperature: 0, stop: [stop] });
  assert.equal(cut.done.finishReason, "stop");
  assert.equal(cut.done.text, text.slice(0, text.indexOf(stop)));
  const streamed = cut.tokens.map((e) => (e.type === "token" ? e.text : "")).join("");
  assert.equal(streamed, cut.done.text, "streamed deltas add up to the final text, without the stop string");
});

test("EOS ends generation (eos ids from generation_config.json)", async (t) => {
  const first = (await collect(new Session(model), PROMPT, { maxTokens: 12, temperature: 0 })).done.ids;
  // The first position whose token has not appeared before: generation must stop right there.
  const at = first.findIndex((id, i) => i > 0 && !first.slice(0, i).includes(id));
  assert.ok(at > 0, `greedy output repeats one token: ${first}`);
  const dir = join(root, "m");
  writeFileSync(join(dir, "generation_config.json"), JSON.stringify({ eos_token_id: [first[at]] }));
  t.after(() => rmSync(join(dir, "generation_config.json")));
  const m = loadModel(dir);
  try {
    const { done } = await collect(new Session(m), PROMPT, { maxTokens: 10, temperature: 0 });
    assert.equal(done.finishReason, "eos");
    assert.deepEqual(done.ids, first.slice(0, at + 1));
  } finally {
    m.close();
  }
});

test("a prompt longer than the context is a ContextOverflowError, not a truncation", async () => {
  const session = new Session(model, { contextLength: 8 });
  await assert.rejects(
    collect(session, "this prompt is much longer than eight tokens", { maxTokens: 1 }),
    ContextOverflowError,
  );
});

test("reaching the context end: explicit finish reason, or an error when asked", async () => {
  const ids = [1, 2, 3, 4, 5];
  const stop = await collect(new Session(model, { contextLength: 8 }), ids, { maxTokens: 50, temperature: 0 });
  assert.equal(stop.done.finishReason, "context_full");
  assert.equal(stop.done.ids.length, 4, "8 positions: 5 prompt + 3 fed back + the last sampled");
  await assert.rejects(
    collect(new Session(model, { contextLength: 8 }), ids, { maxTokens: 50, onContextFull: "error" }),
    ContextOverflowError,
  );
});

test("the next turn reuses the cached prefix and gives the same tokens as a fresh session", async () => {
  const session = new Session(model);
  const turn1 = await collect(session, PROMPT, { maxTokens: 6, temperature: 0 });
  const prompt2 = [...turn1.done.promptIds, ...turn1.done.ids, ...model.tokenizer.encode(" and then")];
  const turn2 = await collect(session, prompt2, { maxTokens: 6, temperature: 0 });
  const prefill = turn2.events.find((e) => e.type === "prefill");
  assert.ok(prefill && prefill.type === "prefill");
  assert.equal(prefill.reusedTokens, turn1.done.promptIds.length + turn1.done.ids.length - 1);
  const fresh = await collect(new Session(model), prompt2, { maxTokens: 6, temperature: 0 });
  assert.deepEqual(turn2.done.ids, fresh.done.ids);
});

test("prompts longer than one prefill batch give the same result as token-by-token decoding", async () => {
  const batch = new Session(model).transformer.ws.batch;
  const ids = Array.from({ length: batch + 86 }, (_, i) => (i * 37) % 300);
  const batched = await collect(new Session(model), ids, { maxTokens: 4, temperature: 0, logprobs: 3 });
  const session = new Session(model);
  for (let i = 1; i < ids.length; i++) await collect(session, ids.slice(0, i), { maxTokens: 0 });
  const stepped = await collect(session, ids, { maxTokens: 4, temperature: 0, logprobs: 3 });
  assert.deepEqual(stepped.done.ids, batched.done.ids);
  const lp = (r: typeof batched) =>
    r.tokens.flatMap((e) => (e.type === "token" ? e.topLogprobs!.map(([, x]) => x) : []));
  lp(stepped).forEach((x, i) => assert.ok(Math.abs(x - lp(batched)[i]) < 1e-3));
});

test("one generation at a time per session", async () => {
  const session = new Session(model);
  const it = session.generate(PROMPT, { maxTokens: 3 });
  await it.next();
  await assert.rejects(session.generate(PROMPT, { maxTokens: 3 }).next(), UsageError);
  await it.return(undefined);
});

test("the chat template renders messages and the result tokenizes with the special tokens", () => {
  const text = model.tokenizer.applyChatTemplate([
    { role: "system", content: "Be brief." },
    { role: "user", content: "Hi!" },
  ]);
  assert.equal(
    text,
    "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
  );
  const ids = model.tokenizer.encode(text, false);
  assert.equal(ids[0], model.tokenizer.tokenId("<|im_start|>"));
  assert.ok(ids.includes(model.tokenizer.tokenId("<|im_end|>")!));
});

test("a reasoning template's enable_thinking: off renders the empty think block; the switch is detected", async (t) => {
  assert.equal(model.tokenizer.thinkingSwitch, false);
  const dir = join(root, "qwen3-thinking");
  await makeModel({ arch: "qwen3", dtype: "f32", seed: 3, out: dir });
  useReasoningTemplate(dir);
  const reasoning = loadModel(dir);
  t.after(() => reasoning.close());
  const tok = reasoning.tokenizer;
  assert.equal(tok.thinkingSwitch, true);
  const msgs = [{ role: "user" as const, content: "Hi" }];
  const open = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n";
  assert.equal(tok.applyChatTemplate(msgs), open);
  assert.equal(tok.applyChatTemplate(msgs, true, { thinking: true }), open);
  assert.equal(tok.applyChatTemplate(msgs, true, { thinking: false }), open + "<think>\n\n</think>\n\n");
});

test("an f16 KV cache: the same greedy reply as f32 here, log-probabilities within rounding of it", async () => {
  const f32 = await collect(new Session(model), PROMPT, { maxTokens: 12, temperature: 0, logprobs: 1 });
  const f16 = await collect(new Session(model, { kvCache: "f16" }), PROMPT, {
    maxTokens: 12,
    temperature: 0,
    logprobs: 1,
  });
  assert.deepEqual(f16.done.ids, f32.done.ids);
  let worst = 0;
  f16.tokens.forEach((ev, i) => {
    const a = ev.type === "token" ? ev.topLogprobs![0][1] : NaN;
    const b = f32.tokens[i].type === "token" ? f32.tokens[i].topLogprobs![0][1] : NaN;
    worst = Math.max(worst, Math.abs(a - b));
  });
  // Keys and values keep 11 significant bits: the log-probabilities move, but only a little.
  assert.ok(worst > 0, "f16 is really used (its rounding shows)");
  assert.ok(worst < 1e-2, `log-prob moved by ${worst}`);
});

test("logit bias moves the draw, also to a token HiRE's output layer left out (its exact logit computed)", async () => {
  const session = new Session(model);
  const greedy = async (o: GenerateOptions) => (await collect(session, PROMPT, { maxTokens: 3, ...o })).done.ids;
  const plain = await greedy({});
  const banned = await greedy({ logitBias: new Map([[plain[0], -100]]) });
  assert.notEqual(banned[0], plain[0], "-100 bans the greedy token");
  // The least likely first token, raised by 100: every step picks it (random logits span a few units).
  const tf = session.transformer;
  const first = Float32Array.from(
    tf.forward(session.encode(PROMPT), 0, new KVCache(tf.backend, model.config, 64, "f32"))!,
  );
  const least = first.indexOf(Math.min(...first));
  assert.deepEqual(await greedy({ logitBias: new Map([[least, 100]]) }), [least, least, least]);
  // With HiRE's output layer at two candidates, that token is not among them, yet the bias reaches it,
  // and its reported log-probability comes from its exact logit.
  session.sparsity.update({ head: { method: "hire", k: 2, oversample: 1 } });
  const r = await collect(session, PROMPT, { maxTokens: 3, logprobs: 0, logitBias: new Map([[least, 100]]) });
  session.sparsity.update({ head: { method: "dense" } });
  assert.deepEqual(r.done.ids, [least, least, least]);
  for (const e of r.tokens) assert.ok(e.type === "token" && Number.isFinite(e.logprob!) && e.logprob! < 0);
  await assert.rejects(collect(session, PROMPT, { logitBias: new Map([[model.config.vocab, 1]]) }), UsageError);
  await assert.rejects(collect(session, PROMPT, { logitBias: new Map([[1, NaN]]) }), UsageError);
});

test("a presence penalty reaches the session's draw: a large one never repeats a reply token", async () => {
  const session = new Session(model);
  const plain = (await collect(session, PROMPT, { maxTokens: 40, ignoreEos: true })).done.ids;
  assert.ok(new Set(plain).size < plain.length, "this random model repeats itself when greedy");
  const ids = (await collect(session, PROMPT, { maxTokens: 40, ignoreEos: true, presencePenalty: 1000 })).done.ids;
  assert.equal(new Set(ids).size, ids.length, ids.join(" "));
});

test("bad generate options are rejected before any compute", async () => {
  const session = new Session(model);
  await assert.rejects(collect(session, [999999], { maxTokens: 1 }), UsageError);
  await assert.rejects(collect(session, PROMPT, { maxTokens: -1 }), UsageError);
  await assert.rejects(collect(session, PROMPT, { topP: 2 }), RangeError);
  assert.throws(() => new Session(model, { contextLength: 10 ** 9 }), UsageError);
});
