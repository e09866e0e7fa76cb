// End to end, as a user would: `hire serve` (a real process, the real engine, the built-in model)
// and the built renderer in Debian's Chromium, driven by playwright-core. Load a model, chat, watch
// tokens stream and the inspector fill, move the k slider and see the next tokens use fewer
// neurons, stop a reply mid-way, reload the page and find the conversation. Screenshots go to
// test-artifacts/ so a person can look at what the test saw.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium, type Page } from "playwright-core";
import { defaultModelDir } from "../core/loader/default-model.js";
import { makeModel } from "../core/modelgen/make-model.js";
import { HERMES_TOOLS_TEMPLATE, putInHubCache, REPO_ROOT, useReasoningTemplate } from "./helpers.js";

const CHROMIUM = process.env.HIRE_CHROMIUM ?? "/usr/bin/chromium";
const ARTIFACTS = join(REPO_ROOT, "test-artifacts");

async function startServer(
  dataDir: string,
  env: Record<string, string> = {},
): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(
    process.execPath,
    [join(REPO_ROOT, "bin", "hire.js"), "serve", "--port", "0", "--no-model", "--data", dataDir],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } },
  );
  let output = "";
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hire serve did not start:\n${output}`)), 30_000);
    const onData = (d: Buffer) => {
      output += d.toString();
      const m = /HiRE Studio at (http:\/\/\S+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => reject(new Error(`hire serve exited with ${code}:\n${output}`)));
  });
  return { child, url };
}

// Browser-side code runs through Playwright (not eval: the app's CSP forbids it). Minimal DOM
// shapes keep the tests compiling without the DOM's types.
interface Canvas {
  width: number;
  height: number;
  getContext(
    kind: "2d",
  ): { getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray } } | null;
}
interface Doc {
  querySelector(selector: string): (Canvas & { querySelector(s: string): Canvas | null; tagName: string }) | null;
  querySelectorAll(selector: string): ArrayLike<{ textContent: string | null }>;
}

/** Pixels of a canvas that differ from its first pixel (the background): is anything drawn? */
async function drawnPixels(page: Page, testId: string): Promise<number> {
  return page.evaluate((id) => {
    const d = (globalThis as unknown as { document: Doc }).document;
    const el = d.querySelector(`[data-testid="${id}"]`);
    const canvas = el?.tagName === "CANVAS" ? el : el?.querySelector("canvas");
    const ctx = canvas?.getContext("2d");
    if (!canvas || !ctx) return -1;
    const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
    let n = 0;
    for (let i = 0; i < data.length; i += 4)
      if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2]) n++;
    return n;
  }, testId);
}

/** Wait until there are at least `count` replies and the last has more than `chars` characters. */
/** Skips the test, saying why, where there is no Chromium to drive. */
function noChromium(t: { skip: (why: string) => void }): boolean {
  if (existsSync(CHROMIUM)) return false;
  t.skip(`no Chromium at ${CHROMIUM} (.ci/run installs Debian's chromium; set HIRE_CHROMIUM to use another)`);
  return true;
}

async function waitForReply(page: Page, count: number, chars: number): Promise<void> {
  await page.waitForFunction(
    ([n, c]) => {
      const all = (globalThis as unknown as { document: Doc }).document.querySelectorAll(
        '[data-testid="assistant-message"]',
      );
      return all.length >= n && (all[all.length - 1].textContent ?? "").trim().length > c;
    },
    [count, chars] as const,
    { timeout: 60_000 },
  );
}

/** Stop replaces Send while a reply is generated. */
async function waitIdle(page: Page): Promise<void> {
  await page.getByTestId("send").waitFor({ timeout: 90_000 });
}

/**
 * `hire serve` on dataDir and a headless Chromium page on it; page errors and console errors are
 * collected for the test to assert on. Server, browser and dataDir go when the test ends.
 */
async function openApp(
  t: { after: (fn: () => Promise<void>) => void },
  dataDir: string,
  viewport: { width: number; height: number },
  env: Record<string, string> = {},
): Promise<{ page: Page; pageErrors: string[] }> {
  const { child, url } = await startServer(dataDir, env);
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ["--headless", "--no-sandbox", "--disable-gpu"],
  });
  t.after(async () => {
    await browser.close();
    child.kill();
    rmSync(dataDir, { recursive: true, force: true });
  });
  const page = await browser.newPage({ viewport });
  const pageErrors: string[] = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") pageErrors.push(m.text());
  });
  await page.goto(url);
  return { page, pageErrors };
}

test("e2e: chat in the browser with the live sparsity inspector", { timeout: 240_000 }, async (t) => {
  if (noChromium(t)) return;
  assert.ok(existsSync(join(REPO_ROOT, "dist", "ui", "index.html")), "the UI is not built: npm run build:ui");
  mkdirSync(ARTIFACTS, { recursive: true });
  const dataDir = mkdtempSync(join(tmpdir(), "hire-e2e-"));
  const { page, pageErrors } = await openApp(t, dataDir, { width: 1440, height: 900 });
  const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `e2e-${name}.png`) });

  // A bad folder: a clear error, and the app stays usable.
  await page.getByTestId("model-path").fill(join(dataDir, "no-such-model"));
  await page.getByTestId("load-model").click();
  await page
    .getByTestId("error")
    .filter({ hasText: /no-such-model/ })
    .first()
    .waitFor({ timeout: 20_000 });

  // Load the built-in model by its path.
  await page.getByTestId("model-path").fill(defaultModelDir());
  await page.getByTestId("load-model").click();
  await page.getByTestId("model-name").filter({ hasText: "hire-brown-6m" }).waitFor({ timeout: 30_000 });

  // HiRE on, audited every token, k = 10 %.
  await page.getByTestId("ffn-method").selectOption("hire");
  await page.getByTestId("audit-every").selectOption("1");
  await page.getByTestId("ffn-k").fill("0.1");
  await page.getByTestId("ffn-k-value").filter({ hasText: "70" }).waitFor();
  await page.getByTestId("sampling-maxTokens").fill("24");
  await page.getByTestId("sampling-temperature").fill("0");

  // Send a message; tokens stream into the reply while the inspector fills.
  await page.getByTestId("prompt-input").fill("The city council said");
  await page.getByTestId("send").click();
  const reply = page.getByTestId("assistant-message").last();
  await waitForReply(page, 1, 0);
  await waitIdle(page);
  const firstReply = (await reply.textContent())?.trim() ?? "";
  assert.ok(firstReply.length > 0, "the reply is empty");
  await page.waitForTimeout(300); // one animation frame or two for the canvases
  await shot("1-reply-hire-10");
  assert.ok((await drawnPixels(page, "layer-map")) > 50, "the layer map is blank");
  assert.ok((await drawnPixels(page, "recall-bars")) > 20, "the recall bars are blank");
  assert.ok((await drawnPixels(page, "latency-bars")) > 20, "the latency bars are blank");
  const at10 = (await page.getByTestId("selected-count").textContent()) ?? "";
  assert.match(at10, /\b420\b/, `6 layers × 70 neurons selected, got "${at10}"`);

  // Move k to 5 %: the next tokens select 35 per layer.
  await page.getByTestId("ffn-k").fill("0.05");
  await page.getByTestId("ffn-k-value").filter({ hasText: "35" }).waitFor();
  await page.getByTestId("prompt-input").fill("And then?");
  await page.getByTestId("send").click();
  await page
    .getByTestId("selected-count")
    .filter({ hasText: /\b210\b/ })
    .waitFor({ timeout: 60_000 });
  await waitIdle(page);
  await shot("2-reply-hire-5");

  // Switch to a random model with SmolLM2-135M's shapes: 20× the weights of the built-in one and
  // it almost never samples end-of-sequence, so its reply is long and slow enough to stop mid-way.
  const big = join(dataDir, "smollm2-random");
  await makeModel({ arch: "llama", preset: "smollm2-135m", dtype: "bf16", seed: 1, out: big });
  // With an f16 KV cache and a 3000-token context: the estimate before loading and the loaded
  // model's line say so.
  await page.getByTestId("kv-cache").selectOption("f16");
  await page.getByTestId("context-length").fill("3000");
  await page.getByTestId("model-path").fill(big);
  await page.getByTestId("model-estimate").filter({ hasText: "f16 @ 3000" }).waitFor({ timeout: 10_000 });
  await page.getByTestId("load-model").click();
  await page.getByTestId("model-name").filter({ hasText: "smollm2-random" }).waitFor({ timeout: 30_000 });
  await page.locator(".model-info .line").filter({ hasText: "ctx 3000 · KV f16" }).waitFor({ timeout: 5_000 });
  // HiRE on this model: the model bar reports the file-layout FFN weights its copies let the engine
  // give back (whole 2 MiB pages: the built-in model's layers are too small to have any).
  await page.getByTestId("ffn-method").selectOption("hire");
  await page
    .getByTestId("released-bytes")
    .filter({ hasText: /given back/ })
    .waitFor({ timeout: 30_000 });

  // Stop mid-answer: a long reply is cut short and the app is idle again.
  await page.getByTestId("sampling-maxTokens").fill("2000");
  await page.getByTestId("sampling-temperature").fill("0.8");
  await page.getByTestId("prompt-input").fill("Tell me a very long story about the harbour.");
  await page.getByTestId("send").click();
  await waitForReply(page, 3, 20);
  await page
    .getByTestId("stop")
    .click({ timeout: 5000 })
    .catch(async (e: Error) => {
      await shot("stop-missing");
      const texts = await page.getByTestId("assistant-message").allTextContents();
      throw new Error(`${e.message}\nreplies: ${JSON.stringify(texts.map((x) => x.slice(0, 300)))}`);
    });
  await waitIdle(page);
  const stopped = (await page.getByTestId("assistant-message").last().textContent()) ?? "";
  await page.waitForTimeout(500);
  assert.equal(
    (await page.getByTestId("assistant-message").last().textContent()) ?? "",
    stopped,
    "tokens kept coming after Stop",
  );
  assert.match(stopped, /aborted/, "the reply says it was stopped");
  await shot("3-stopped");

  // Reload: the conversation is still there.
  await page.reload();
  await page.getByTestId("conversation-item").first().waitFor({ timeout: 20_000 });
  await page.getByTestId("conversation-item").first().click();
  await page.getByTestId("assistant-message").first().waitFor();
  const afterReload = (await page.getByTestId("assistant-message").first().textContent())?.trim() ?? "";
  assert.equal(afterReload, firstReply);
  assert.equal(await page.getByTestId("assistant-message").count(), 3);
  await shot("4-after-reload");

  // int8, then int4 weights for the next load: the estimate and the loaded model's line say so, and a
  // reply streams.
  for (const weights of ["int8", "int4"]) {
    await page.getByTestId("weights").selectOption(weights);
    await page.getByTestId("model-path").fill(defaultModelDir());
    await page
      .getByTestId("model-estimate")
      .filter({ hasText: `${weights} (from BF16)` })
      .waitFor({ timeout: 10_000 });
    await page.getByTestId("load-model").click();
    await page
      .locator(".model-info .line")
      .filter({ hasText: `${weights} (from BF16)` })
      .waitFor({ timeout: 30_000 });
    await page.getByTestId("model-name").filter({ hasText: "hire-brown-6m" }).waitFor({ timeout: 5_000 });
    await page.getByTestId("new-conversation").click();
    await page.getByTestId("sampling-maxTokens").fill("16");
    await page.getByTestId("prompt-input").fill("The city council said");
    await page.getByTestId("send").click();
    await waitForReply(page, 1, 0);
    await waitIdle(page);
    await page.waitForTimeout(300); // the inspector's next frame
    await shot(`4b-${weights}-weights`);
  }

  // The desktop window's smallest width (electron/main.ts minWidth 960): nothing runs off the right edge.
  await page.setViewportSize({ width: 960, height: 700 });
  const right = async (id: string) => {
    const box = await page.getByTestId(id).boundingBox();
    return box ? box.x + box.width : Infinity;
  };
  const edges = {
    scroll: (await page.evaluate("document.documentElement.scrollWidth")) as number,
    pill: await right("connection-status"),
    sparsity: await right("ffn-method"),
  };
  assert.ok(edges.scroll <= 960 && edges.pill <= 960 && edges.sparsity <= 960, JSON.stringify(edges));
  await shot("5-narrow-window");
  assert.deepEqual(pageErrors, [], "errors in the page's console");
});

test("e2e: a saved reasoning reply shows its <think> block folded above the answer", { timeout: 60_000 }, async (t) => {
  if (noChromium(t)) return;
  const dataDir = mkdtempSync(join(tmpdir(), "hire-e2e-think-"));
  // A conversation as the app saves it: a Qwen3-style reply, the tags tokens of their own.
  const texts = ["<think>", "\n", "The user", " greets me", ".", "</think>", "\n\n", "Hello", "!"];
  const tokens = texts.map((text, i) => ({ text, recall: 0.9, headMass: null, ms: 10 + i }));
  mkdirSync(join(dataDir, "conversations"), { recursive: true });
  writeFileSync(
    join(dataDir, "conversations", "think.json"),
    JSON.stringify({
      id: "think",
      title: "Reasoning reply",
      createdAt: 1,
      updatedAt: 2,
      modelPath: null,
      system: "",
      messages: [
        { role: "user", content: "Hi" },
        { role: "assistant", content: texts.join(""), tokens },
      ],
    }),
  );
  const { page, pageErrors } = await openApp(t, dataDir, { width: 1200, height: 700 });
  await page.getByTestId("conversation-item").filter({ hasText: "Reasoning reply" }).click();
  const reply = page.getByTestId("assistant-message");
  const fold = reply.getByTestId("thinking");
  await fold.waitFor();
  assert.equal(await fold.getAttribute("open"), null, "a finished thought starts folded");
  assert.equal((await fold.locator("summary").textContent())?.trim(), "Thought");
  // The answer outside the fold, without the tags or the blank lines after them.
  const answer = reply.locator(":scope > .msg-body");
  assert.equal(await answer.textContent(), "Hello!");
  await fold.locator("summary").click();
  assert.equal(await fold.getAttribute("open"), "");
  assert.equal(await fold.locator(".thinking-body").textContent(), "The user greets me.");
  // Each token keeps its tooltip and its number in the whole reply (the "<think>" tag is #0).
  assert.match((await fold.locator(".tok").first().getAttribute("title")) ?? "", /^#2 "The user"/);
  assert.match((await answer.locator(".tok").first().getAttribute("title")) ?? "", /^#7 "Hello"/);
  assert.ok(!(await reply.textContent())?.includes("<think>"), "the tags are not shown");
  mkdirSync(ARTIFACTS, { recursive: true });

  // A reasoning model (its chat template reads enable_thinking) gets the Thinking switch, on by default.
  assert.equal(await page.getByTestId("sampling-thinking").count(), 0, "no switch without such a model");
  const reasoning = join(dataDir, "reasoning-model");
  await makeModel({ arch: "qwen3", dtype: "f32", seed: 2, out: reasoning });
  useReasoningTemplate(reasoning);
  await page.getByTestId("model-path").fill(reasoning);
  await page.getByTestId("load-model").click();
  await page.getByTestId("model-name").filter({ hasText: "reasoning-model" }).waitFor({ timeout: 30_000 });
  const toggle = page.getByTestId("sampling-thinking");
  assert.equal(await toggle.isChecked(), true);
  await toggle.uncheck();
  assert.equal(await toggle.isChecked(), false);
  await page.screenshot({ path: join(ARTIFACTS, "e2e-thinking.png") });
  assert.deepEqual(pageErrors, []);
});

test(
  "e2e: a mixture of experts: its experts in the model bar and the map, k per expert",
  { timeout: 90_000 },
  async (t) => {
    if (noChromium(t)) return;
    const dataDir = mkdtempSync(join(tmpdir(), "hire-e2e-moe-"));
    const { page, pageErrors } = await openApp(t, dataDir, { width: 1280, height: 800 });
    // tiny-mixtral: 2 layers of 4 experts of 96 neurons, 2 a token.
    const dir = join(dataDir, "mixtral-random");
    await makeModel({ arch: "mixtral", dtype: "f32", seed: 3, out: dir });
    await page.getByTestId("model-path").fill(dir);
    await page.getByTestId("load-model").click();
    await page.getByTestId("model-name").filter({ hasText: "mixtral-random" }).waitFor({ timeout: 30_000 });
    await page.locator(".model-info .line").filter({ hasText: "2L × 4 experts of 96 (2 a token)" }).waitFor();
    await page.getByTestId("sampling-maxTokens").fill("6");
    await page.getByTestId("sampling-temperature").fill("0");
    await page.getByTestId("prompt-input").fill("Route this");
    await page.getByTestId("send").click();
    await waitForReply(page, 1, 0);
    await waitIdle(page);
    // Dense experts: each layer "selects" its two routed experts' 192 neurons of 384.
    await page.getByTestId("selected-count").filter({ hasText: "384 selected (50.0%) · k 192/layer × 2" }).waitFor();
    await page.waitForTimeout(300);
    assert.ok((await drawnPixels(page, "layer-map")) > 50, "the layer map is blank");
    const map = page.getByTestId("layer-map");
    const box = (await map.boundingBox())!;
    await page.mouse.move(box.x + box.width - 4, box.y + 4); // the last expert's last neurons, layer 0
    await page
      .locator(".map-legend")
      .filter({ hasText: /layer 0 · expert 3 · neuron 9\d/ })
      .waitFor();
    // HiRE inside the routed experts: k is a share of each expert's 96 neurons.
    await page.getByTestId("ffn-method").selectOption("hire");
    await page.getByTestId("ffn-k").fill("0.1");
    await page.getByTestId("ffn-k-value").filter({ hasText: "10% · 10 per expert" }).waitFor();
    await page.getByTestId("prompt-input").fill("And again");
    await page.getByTestId("send").click();
    await page.getByTestId("selected-count").filter({ hasText: "40 selected" }).waitFor({ timeout: 30_000 });
    await waitIdle(page);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "e2e-moe.png") });
    assert.deepEqual(pageErrors, []);
  },
);

test(
  "e2e: replies held to a JSON schema (structured output), and a schema box that is not JSON",
  { timeout: 90_000 },
  async (t) => {
    if (noChromium(t)) return;
    const dataDir = mkdtempSync(join(tmpdir(), "hire-e2e-json-"));
    const { page, pageErrors } = await openApp(t, dataDir, { width: 1280, height: 900 });
    await page.getByTestId("model-path").fill(defaultModelDir());
    await page.getByTestId("load-model").click();
    await page.getByTestId("model-name").filter({ hasText: "hire-brown-6m" }).waitFor({ timeout: 30_000 });
    await page.getByTestId("ffn-method").selectOption("hire");
    await page.getByTestId("sampling-maxTokens").fill("300");
    await page.getByTestId("sampling-format").selectOption("schema");
    const schema = {
      type: "object",
      properties: { city: { type: "string", maxLength: 20 }, people: { type: "integer" }, big: { type: "boolean" } },
      required: ["city", "people", "big"],
    };
    await page.getByTestId("sampling-schema").fill(JSON.stringify(schema, null, 2));
    await page.getByTestId("prompt-input").fill("Tell me about a city.");
    await page.getByTestId("send").click();
    await waitForReply(page, 1, 0);
    await waitIdle(page);
    const body = (await page.getByTestId("assistant-message").last().locator(".msg-body").textContent()) ?? "";
    const v = JSON.parse(body) as { city: string; people: number; big: boolean };
    assert.deepEqual(Object.keys(v), ["city", "people", "big"], body);
    assert.ok([...v.city].length <= 20 && Number.isInteger(v.people) && typeof v.big === "boolean", body);
    mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: join(ARTIFACTS, "e2e-json-schema.png") });
    // Any JSON object.
    await page.getByTestId("sampling-format").selectOption("json");
    await page.getByTestId("prompt-input").fill("Again.");
    await page.getByTestId("send").click();
    await waitForReply(page, 2, 0);
    await waitIdle(page);
    const second = (await page.getByTestId("assistant-message").last().locator(".msg-body").textContent()) ?? "";
    assert.equal(second.trimStart()[0], "{", second);
    // A schema box that is not JSON: said under the box, and sending is an error, not a reply.
    await page.getByTestId("sampling-format").selectOption("schema");
    await page.getByTestId("sampling-schema").fill('{"type": "object",');
    await page
      .getByTestId("sampling-schema-error")
      .filter({ hasText: /not JSON/ })
      .waitFor({ timeout: 5_000 });
    await page.getByTestId("prompt-input").fill("Once more.");
    await page.getByTestId("send").click();
    await page
      .getByTestId("error")
      .filter({ hasText: /not JSON/ })
      .first()
      .waitFor({ timeout: 10_000 });
    assert.equal(await page.getByTestId("assistant-message").count(), 2, "no reply was started");
    assert.equal(await page.getByTestId("user-message").count(), 2, "no message was added");
    assert.equal(await page.getByTestId("prompt-input").inputValue(), "Once more.", "the typed message is kept");
    // A schema the engine cannot enforce: the host's error names the keyword.
    await page.getByTestId("sampling-schema").fill('{"type": "array", "uniqueItems": true}');
    await page.getByTestId("send").click();
    await page
      .getByTestId("error")
      .filter({ hasText: /"uniqueItems" is not supported/ })
      .first()
      .waitFor({ timeout: 10_000 });
    assert.deepEqual(pageErrors, []);
  },
);

test("e2e: a GGUF file typed into the model bar is imported, loaded and chats", { timeout: 60_000 }, async (t) => {
  if (noChromium(t)) return;
  const dataDir = mkdtempSync(join(tmpdir(), "hire-e2e-gguf-"));
  const { page, pageErrors } = await openApp(
    t,
    dataDir,
    { width: 1280, height: 800 },
    {
      HIRE_CACHE_DIR: join(dataDir, "cache"),
    },
  );
  await page.getByTestId("model-path").fill(join(REPO_ROOT, "test", "gguf", "tiny-llama-quants.gguf"));
  await page.getByTestId("load-model").click();
  await page.getByTestId("model-name").filter({ hasText: "tiny-llama-quants.gguf" }).waitFor({ timeout: 30_000 });
  assert.equal(readdirSync(join(dataDir, "cache", "imports")).length, 1, "imported once into the cache");
  // Weights "auto" (the default): a quantized GGUF runs its 4-bit blocks as int4, the rest as int8.
  assert.equal(await page.getByTestId("weights").inputValue(), "auto");
  // Its Q4_0, Q4_1, Q4_K, Q5_0 and Q8_0 matrices come from the file's blocks, the rest from the import's bf16.
  await page
    .locator(".model-info .line")
    .filter({ hasText: "int4+int8 (from BF16, 5 of 16 from the GGUF's Q4_0/Q4_1/Q4_K/Q5_0/Q8_0 blocks)" })
    .waitFor({ timeout: 5_000 });
  await page.getByTestId("sampling-maxTokens").fill("4");
  await page.getByTestId("sampling-temperature").fill("0");
  await page.getByTestId("prompt-input").fill("Hello");
  await page.getByTestId("send").click();
  await waitForReply(page, 1, 0);
  await waitIdle(page);
  assert.deepEqual(pageErrors, []);
});

test(
  "e2e: a model from the Hugging Face cache, picked in the model bar by its repo id",
  { timeout: 60_000 },
  async (t) => {
    if (noChromium(t)) return;
    const dataDir = mkdtempSync(join(tmpdir(), "hire-e2e-hub-"));
    const hub = join(dataDir, "hub");
    putInHubCache(hub, "hire/brown-6m", defaultModelDir(), "a".repeat(40));
    const cut = putInHubCache(hub, "org/cut", defaultModelDir(), "b".repeat(40));
    rmSync(join(cut, readlinkSync(join(cut, "model.safetensors")))); // a download cut short
    const { page, pageErrors } = await openApp(t, dataDir, { width: 1400, height: 800 }, { HF_HUB_CACHE: hub });
    const picker = page.getByTestId("hf-cache");
    await picker.waitFor();
    assert.equal(await picker.locator('option[value="org/cut"]').isDisabled(), true, "a broken repo cannot be picked");
    assert.match((await picker.locator('option[value="org/cut"]').textContent()) ?? "", /cannot load \(NOT_FOUND\)/);
    await picker.selectOption("hire/brown-6m");
    assert.equal(await page.getByTestId("model-path").inputValue(), "hire/brown-6m");
    await page.getByTestId("model-estimate").filter({ hasText: "LlamaForCausalLM" }).waitFor({ timeout: 10_000 });
    await page.getByTestId("load-model").click();
    await page.getByTestId("model-name").filter({ hasText: "hire/brown-6m" }).waitFor({ timeout: 30_000 });
    assert.deepEqual(pageErrors, []);
  },
);

test(
  "e2e: tools in the app: a required call shows as a card, its result goes back, the model answers",
  { timeout: 120_000 },
  async (t) => {
    if (noChromium(t)) return;
    const dataDir = mkdtempSync(join(tmpdir(), "hire-e2e-tools-"));
    const modelDir = join(dataDir, "tool-model");
    await makeModel({ arch: "qwen3", dtype: "f32", seed: 3, shape: { maxPositions: 2048 }, out: modelDir });
    writeFileSync(join(modelDir, "chat_template.jinja"), HERMES_TOOLS_TEMPLATE);
    const { page, pageErrors } = await openApp(t, dataDir, { width: 1400, height: 900 });
    await page.getByTestId("model-path").fill(modelDir);
    await page.getByTestId("load-model").click();
    await page.getByTestId("model-name").filter({ hasText: "tool-model" }).waitFor({ timeout: 30_000 });
    await page.getByTestId("sampling-maxTokens").fill("400");
    await page.getByTestId("sampling-temperature").fill("0");
    await page.getByTestId("sampling-tools").selectOption("required");
    // A box that is not a list of tools is said under it, and Send keeps the message.
    await page.getByTestId("sampling-tools-json").fill("{");
    await page.getByTestId("sampling-tools-json-error").waitFor();
    const clock = {
      type: "function",
      function: {
        name: "get_time",
        parameters: { type: "object", properties: { zone: { enum: ["UTC", "CET"] } }, required: ["zone"] },
      },
    };
    await page.getByTestId("sampling-tools-json").fill(JSON.stringify([clock]));
    assert.equal(await page.getByTestId("sampling-tools-json-error").count(), 0);
    await page.getByTestId("prompt-input").fill("What time is it?");
    await page.getByTestId("send").click();
    const card = page.getByTestId("tool-call");
    await card.waitFor({ timeout: 60_000 });
    await waitIdle(page);
    const cardText = (await card.textContent()) ?? "";
    assert.match(cardText, /calls get_time/);
    assert.match(cardText, /"zone": "(UTC|CET)"/);
    // The result goes back as the tool's message; with tools on "auto" the model answers in text.
    await page.getByTestId("sampling-tools").selectOption("auto");
    await page.getByTestId("sampling-maxTokens").fill("8");
    await page.getByTestId("tool-result-input").fill('{"time": "12:00"}');
    await page.getByTestId("tool-result-send").click();
    await page.getByTestId("tool-message").filter({ hasText: '{"time": "12:00"}' }).waitFor({ timeout: 30_000 });
    await page.getByTestId("assistant-message").nth(1).waitFor({ timeout: 60_000 });
    await waitIdle(page);
    assert.equal(await page.getByTestId("tool-result-input").count(), 0, "an answered call has no result box");
    // The calls and the result are part of the saved conversation.
    await page.reload();
    await page.getByTestId("conversation-item").first().click();
    await page.getByTestId("tool-call").waitFor({ timeout: 20_000 });
    await page.getByTestId("tool-message").waitFor();
    assert.deepEqual(pageErrors, []);
  },
);

test("e2e: quality against k on a text, scored in the app", { timeout: 120_000 }, async (t) => {
  if (noChromium(t)) return;
  const dataDir = mkdtempSync(join(tmpdir(), "hire-e2e-eval-"));
  const { page, pageErrors } = await openApp(t, dataDir, { width: 1400, height: 1000 });
  await page.getByTestId("model-path").fill(defaultModelDir());
  await page.getByTestId("load-model").click();
  await page.getByTestId("model-name").filter({ hasText: "hire-brown-6m" }).waitFor({ timeout: 30_000 });
  await page.getByTestId("ffn-method").selectOption("hire");
  await page.getByTestId("evaluation").locator("summary").click();
  assert.equal(await page.getByTestId("eval-run").isDisabled(), true, "nothing to score yet");
  await page.getByTestId("eval-text").fill("The old man walked to the market and bought bread. ".repeat(8));
  await page.getByTestId("eval-ks").fill("0.1, 1");
  await page.getByTestId("eval-run").click();
  const table = page.getByTestId("eval-table");
  await table.waitFor({ timeout: 60_000 });
  const rows = await table.locator("tbody tr").all();
  const cells = await Promise.all(rows.map((r) => r.locator("td").allTextContents()));
  assert.equal(cells.length, 3, JSON.stringify(cells));
  const [dense, tenth, whole] = cells; // method, k, perplexity, recall, head hit
  assert.deepEqual([dense[0], dense[1], dense[3]], ["dense", "—", "—"]);
  assert.deepEqual([tenth[0], tenth[1], whole[1]], ["hire", "0.1", "1"]);
  assert.ok(Number(tenth[3]) > 0 && Number(tenth[3]) < 1, `recall at k = 10 %: ${tenth[3]}`);
  assert.deepEqual([whole[2], whole[3]], [dense[2], "1.000"], "k = 100 % is dense: its perplexity, all neurons");
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, "e2e-eval.png") });
  assert.deepEqual(pageErrors, []);
});
