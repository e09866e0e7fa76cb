// The Electron shell without the Electron binary (it cannot be downloaded on our machines): the
// window's security settings, the preload's surface, and the relay between renderer and engine —
// run against a real engine process (the same engine-process.js, forked by Node), including the
// engine being killed mid-generation while the "window" carries on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fork, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { secureWebPreferences } from "../electron/security.js";
import { EngineRelay, type EngineProcess } from "../electron/relay.js";
import type { HostMessage, Reply } from "../core/host/protocol.js";
import { REPO_ROOT, tempDir } from "./helpers.js";

test("the window runs sandboxed and isolated, with no Node integration", () => {
  const p = secureWebPreferences("/app/preload.cjs");
  assert.equal(p.contextIsolation, true);
  assert.equal(p.sandbox, true);
  assert.equal(p.nodeIntegration, false);
  assert.equal(p.nodeIntegrationInWorker, false);
  assert.equal(p.nodeIntegrationInSubFrames, false);
  assert.equal(p.webSecurity, true);
  assert.equal(p.webviewTag, false);
  assert.equal(p.preload, "/app/preload.cjs");
});

test("the preload exposes one bridge and requires nothing but electron", () => {
  const src = readFileSync(join(REPO_ROOT, "dist", "electron", "preload.cjs"), "utf8");
  const requires = [...src.matchAll(/require\("([^"]+)"\)/g)].map((m) => m[1]);
  assert.deepEqual([...new Set(requires)], ["electron"]);
  const exposed = [...src.matchAll(/exposeInMainWorld\("([^"]+)"/g)].map((m) => m[1]);
  assert.deepEqual(exposed, ["hireBridge"]);
  assert.doesNotMatch(src, /ipcRenderer\.(sendSync|invoke\("(?!hire:pick-folder))/);
});

function forkEngine(dataDir: string, children: ChildProcess[]): () => EngineProcess {
  return () => {
    const child = fork(join(REPO_ROOT, "dist", "electron", "engine-process.js"), [dataDir], { stdio: "ignore" });
    children.push(child);
    return {
      postMessage: (m) => child.send(m as object),
      onMessage: (cb) => child.on("message", (m) => cb(m as HostMessage)),
      onExit: (cb) => child.on("exit", (code) => cb(code)),
      kill: () => void child.kill(),
    };
  };
}

test("relay: hostile requests never reach the engine; a killed engine answers pending requests and restarts", async (t) => {
  const children: ChildProcess[] = [];
  const seen: HostMessage[] = [];
  const waiters: { pred: (m: HostMessage) => boolean; resolve: (m: HostMessage) => void }[] = [];
  const relay = new EngineRelay(forkEngine(tempDir(t), children), (m) => {
    seen.push(m);
    for (const w of waiters.splice(0))
      if (w.pred(m)) w.resolve(m);
      else waiters.push(w);
  });
  t.after(() => relay.stop());
  const next = (pred: (m: HostMessage) => boolean) =>
    new Promise<HostMessage>((resolve) => {
      const found = seen.find(pred);
      if (found) resolve(found);
      else waiters.push({ pred, resolve });
    });
  const reply = (id: number) => next((m) => m.type === "reply" && m.id === id) as Promise<Reply>;

  // Rejected in the relay: the engine process is not even started for them.
  relay.request({ id: 1, type: "eval", code: "process.exit()" });
  relay.request("not an object");
  relay.request({ id: 2, type: "conversations.get", conversationId: "../../../etc/passwd" });
  const r1 = await reply(1);
  assert.ok(!r1.ok && r1.error.code === "PROTOCOL");
  const r2 = await reply(2);
  assert.ok(!r2.ok && r2.error.code === "PROTOCOL");
  assert.equal(children.length, 0);

  relay.request({ id: 3, type: "model.load" });
  const loaded = await reply(3);
  assert.ok(loaded.ok, JSON.stringify(loaded));
  assert.equal(children.length, 1);

  // Kill the engine as an out-of-memory would, while it is generating.
  relay.request({
    id: 4,
    type: "generate",
    messages: [{ role: "user", content: "Tell a long story" }],
    maxTokens: 500,
    sampling: { temperature: 0.8, seed: 2 },
  });
  await next((m) => m.type === "gen.token" && m.requestId === 4);
  children[0].kill("SIGKILL");
  const crashed = await reply(4);
  assert.ok(!crashed.ok && crashed.error.code === "ENGINE_CRASHED", JSON.stringify(crashed));
  await next((m) => m.type === "host.crashed");

  // The next request starts a fresh engine, which opens on the built-in model as at start-up.
  relay.request({ id: 5, type: "hello" });
  const hello = await reply(5);
  assert.ok(hello.ok, JSON.stringify(hello));
  assert.match((hello.result as { model: { path: string } }).model.path, /hire-brown-6m/);
  assert.equal(children.length, 2);
  relay.request({ id: 6, type: "generate", messages: [{ role: "user", content: "Hi" }], maxTokens: 2 });
  assert.ok((await reply(6)).ok);
});
