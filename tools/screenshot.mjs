#!/usr/bin/env node
// Take the README's screenshot (docs/screenshot.png): `hire serve` on the built-in model, HiRE at
// k = 10 % with every token audited, one reply, and layer 0 open in the inspector.
// Usage: node tools/screenshot.mjs [OUT.png]   (needs Debian's chromium, as the e2e test does)
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const out = process.argv[2] ?? join(root, "docs", "screenshot.png");
const data = mkdtempSync(join(tmpdir(), "hire-shot-"));
const server = spawn(process.execPath, [join(root, "bin", "hire.js"), "serve", "--port", "0", "--data", data], {
  stdio: ["ignore", "pipe", "inherit"],
});
const url = await new Promise((resolve) => {
  let text = "";
  server.stdout.on("data", (d) => {
    text += d;
    const m = /at (http:\/\/\S+)/.exec(text);
    if (m) resolve(m[1]);
  });
});
const browser = await chromium.launch({
  executablePath: process.env.HIRE_CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 960 }, deviceScaleFactor: 1 });
  await page.goto(url);
  await page.getByTestId("model-name").filter({ hasText: "hire-brown-6m" }).waitFor();
  await page.getByTestId("ffn-method").selectOption("hire");
  await page.getByTestId("head-method").selectOption("hire");
  await page.getByTestId("audit-every").selectOption("1");
  await page.getByTestId("sampling-temperature").fill("0");
  await page.getByTestId("sampling-maxTokens").fill("40");
  await page.getByTestId("token-measure").selectOption({ index: 1 });
  await page.getByTestId("prompt-input").fill("Tell me about the new city hall.");
  await page.getByTestId("send").click();
  await page.getByTestId("send").waitFor({ timeout: 60_000 });
  // Open layer 0 (the hardest to predict), then run one more reply so its scores are drawn.
  const map = page.getByTestId("layer-map");
  const box = await map.boundingBox();
  await map.click({ position: { x: box.width / 2, y: 6 } });
  await page.getByTestId("prompt-input").fill("Who paid for it?");
  await page.getByTestId("send").click();
  await page.getByTestId("send").waitFor({ timeout: 60_000 });
  await page.waitForTimeout(500);
  await page.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  server.kill();
  rmSync(data, { recursive: true, force: true });
}
