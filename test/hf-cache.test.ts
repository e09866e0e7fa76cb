// Models in the Hugging Face cache, by repo id: a hub laid out as huggingface_hub lays it out
// (blobs, snapshot links, refs), through the loader, the CLI and the engine host.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { hire, hostAsker, putInHubCache, tempDir } from "./helpers.js";
import { makeModel } from "../core/modelgen/make-model.js";
import { findModelFolder, hubCacheDir, listCachedModels, modelName } from "../core/loader/hf-cache.js";
import { loadModel } from "../core/loader/model-folder.js";
import { ModelError } from "../core/loader/errors.js";
import { EngineHost } from "../core/host/engine-host.js";
import type { CachedModels } from "../core/host/protocol.js";

const C1 = "1".repeat(40);
const C2 = "2".repeat(40);

/**
 * A hub with org/tiny (two commits, main at the second), a sharded org/sharded without refs, and
 * repos that cannot load: a download cut short, an unknown architecture, nothing downloaded yet.
 */
async function makeHub(t: { after: (fn: () => void) => void }) {
  const root = tempDir(t);
  const hub = join(root, "hub");
  const src = join(root, "src");
  const old = join(root, "old");
  const sharded = join(root, "sharded");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 5, out: src });
  await makeModel({ arch: "llama", dtype: "bf16", seed: 6, out: old });
  await makeModel({ arch: "qwen2", dtype: "bf16", seed: 5, out: sharded, maxShardBytes: 40_000 });
  putInHubCache(hub, "org/tiny", old, C1);
  putInHubCache(hub, "org/tiny", src, C2); // refs/main now names C2
  putInHubCache(hub, "org/sharded", sharded, C1, false);
  const cut = putInHubCache(hub, "org/cut", sharded, C1);
  const shard = readdirSync(cut).find((f) => f.endsWith(".safetensors"))!;
  rmSync(join(cut, readlinkSync(join(cut, shard)))); // the blob never arrived; the link dangles
  const alien = putInHubCache(hub, "org/alien", src, C1);
  const cfg = JSON.parse(readFileSync(join(alien, "config.json"), "utf8")) as Record<string, unknown>;
  rmSync(join(alien, "config.json"));
  writeFileSync(join(alien, "config.json"), JSON.stringify({ ...cfg, architectures: ["MambaForCausalLM"] }));
  mkdirSync(join(hub, "models--org--empty", "snapshots"), { recursive: true });
  mkdirSync(join(hub, "datasets--org--data", "snapshots", C1), { recursive: true });
  return { root, hub, src, old, sharded, shard };
}

function modelError(f: () => unknown): ModelError {
  try {
    f();
  } catch (e) {
    if (e instanceof ModelError) return e;
    throw e;
  }
  assert.fail("expected a ModelError");
}

test("hf cache: the hub folder follows huggingface_hub's variables", () => {
  const home = process.env.HOME ?? "";
  assert.equal(hubCacheDir({ HOME: home }), join(home, ".cache", "huggingface", "hub"));
  assert.equal(hubCacheDir({ XDG_CACHE_HOME: "/x" }), "/x/huggingface/hub");
  assert.equal(hubCacheDir({ XDG_CACHE_HOME: "/x", HF_HOME: "/h" }), "/h/hub");
  assert.equal(hubCacheDir({ HF_HOME: "/h", HUGGINGFACE_HUB_CACHE: "/old" }), "/old");
  assert.equal(hubCacheDir({ HF_HOME: "/h", HUGGINGFACE_HUB_CACHE: "/old", HF_HUB_CACHE: "/new" }), "/new");
});

test("hf cache: repo ids resolve to snapshots by ref, commit or the only snapshot; misses say why", async (t) => {
  const { root, hub } = await makeHub(t);
  const env = { HF_HUB_CACHE: hub };
  const snap = (repo: string, c: string) => join(hub, `models--${repo.replace("/", "--")}`, "snapshots", c);
  assert.equal(findModelFolder("org/tiny", env), snap("org/tiny", C2));
  assert.equal(findModelFolder("org/tiny@main", env), snap("org/tiny", C2));
  assert.equal(findModelFolder(`org/tiny@${C1}`, env), snap("org/tiny", C1));
  assert.equal(findModelFolder("org/sharded", env), snap("org/sharded", C1));
  assert.equal(modelName(snap("org/tiny", C1)), "org/tiny");
  // The ref decides, not which snapshot is newer.
  writeFileSync(join(hub, "models--org--tiny", "refs", "main"), C1 + "\n");
  assert.equal(findModelFolder("org/tiny", env), snap("org/tiny", C1));
  writeFileSync(join(hub, "models--org--tiny", "refs", "main"), C2);
  assert.equal(modelName(root), root.split("/").pop());

  const missing = modelError(() => findModelFolder("org/nope", env));
  assert.equal(missing.code, "NOT_FOUND");
  assert.match(missing.message, /not in the Hugging Face cache/);
  assert.ok(missing.message.includes(hub) && missing.message.includes("hf download org/nope"), missing.message);
  const rev = modelError(() => findModelFolder("org/tiny@v2", env));
  assert.equal(rev.code, "NOT_FOUND");
  assert.ok(rev.message.includes(`revision "v2"`) && rev.message.includes(C1) && rev.message.includes(C2));
  assert.equal(modelError(() => findModelFolder("org/empty", env)).code, "NOT_FOUND");

  // A folder on disk wins over a repo id of the same name; other paths are left to the loader.
  const cwd = process.cwd();
  mkdirSync(join(root, "org", "tiny"), { recursive: true });
  process.chdir(root);
  try {
    assert.equal(findModelFolder("org/tiny", env), join(root, "org", "tiny"));
  } finally {
    process.chdir(cwd);
  }
  assert.equal(findModelFolder("/no/such/dir", env), "/no/such/dir");
});

test("hf cache: listing says what each repo holds and what stops it loading", async (t) => {
  const { hub, src, sharded } = await makeHub(t);
  const list = await listCachedModels({ HF_HUB_CACHE: hub });
  assert.deepEqual(
    list.map((m) => m.repo),
    ["org/alien", "org/cut", "org/sharded", "org/tiny"],
  );
  const by = Object.fromEntries(list.map((m) => [m.repo, m]));
  const bytes = (dir: string) =>
    readdirSync(dir)
      .filter((f) => f.endsWith(".safetensors"))
      .reduce((s, f) => s + statSync(join(dir, f)).size, 0);
  assert.equal(by["org/tiny"].problem, null);
  assert.equal(by["org/tiny"].revision, C2);
  assert.equal(by["org/tiny"].architecture, "LlamaForCausalLM");
  assert.equal(by["org/tiny"].weightBytes, bytes(src));
  assert.equal(by["org/sharded"].problem, null);
  assert.equal(by["org/sharded"].weightBytes, bytes(sharded));
  assert.equal(by["org/cut"].problem?.code, "NOT_FOUND");
  assert.match(by["org/cut"].problem!.message, /download incomplete/);
  assert.equal(by["org/alien"].problem?.code, "UNSUPPORTED_ARCHITECTURE");
  assert.deepEqual(await listCachedModels({ HF_HUB_CACHE: join(hub, "none") }), []);
});

test("hf cache: a repo id loads through the links and decodes as the folder does; the CLI lists and runs it", async (t) => {
  const { hub, src, shard } = await makeHub(t);
  const env = { HF_HUB_CACHE: hub };
  const run = (model: string) =>
    hire(
      ["generate", "--model", model, "--prompt", "Hello", "--max-tokens", "6", "--temperature", "0", "--json"],
      undefined,
      env,
    );
  const direct = run(src);
  const cached = run("org/tiny");
  assert.equal(cached.status, 0, cached.stderr);
  assert.deepEqual(
    (JSON.parse(cached.stdout) as { ids: number[] }).ids,
    (JSON.parse(direct.stdout) as { ids: number[] }).ids,
  );
  // The older commit is another model (another seed), and loads by its hash.
  const older = run(`org/tiny@${C1}`);
  assert.equal(older.status, 0, older.stderr);
  assert.notDeepEqual(JSON.parse(older.stdout).ids, JSON.parse(cached.stdout).ids);

  const cut = run("org/cut");
  assert.equal(cut.status, 1);
  assert.ok(cut.stderr.includes(shard), cut.stderr);
  const nope = run("org/nope");
  assert.equal(nope.status, 1);
  assert.match(nope.stderr, /hf download org\/nope/);

  const listed = hire(["models", "--json"], undefined, env);
  assert.equal(listed.status, 0, listed.stderr);
  const json = JSON.parse(listed.stdout) as CachedModels;
  assert.equal(json.hub, hub);
  assert.equal(json.models.length, 4);
  const text = hire(["models"], undefined, env);
  assert.match(text.stdout, /org\/tiny\s+LlamaForCausalLM, \d+\.\d MB/);
  assert.match(text.stdout, /org\/alien\s+cannot load: UNSUPPORTED_ARCHITECTURE/);

  process.env.HF_HUB_CACHE = hub;
  t.after(() => delete process.env.HF_HUB_CACHE);
  const model = loadModel("org/sharded");
  assert.equal(model.config.architecture, "Qwen2ForCausalLM");
  model.close();
});

test("hf cache: the engine host lists the cache, inspects and loads a repo id, and remembers the id", async (t) => {
  const { hub } = await makeHub(t);
  process.env.HF_HUB_CACHE = hub;
  const dataDir = tempDir(t);
  const host = new EngineHost({ dataDir, contextLength: 64 });
  t.after(() => {
    host.close();
    delete process.env.HF_HUB_CACHE;
  });
  const ask = hostAsker(host);
  const cached = await ask({ type: "models.cached" });
  assert.ok(cached.type === "reply" && cached.ok, JSON.stringify(cached));
  const result = cached.result as CachedModels;
  assert.equal(result.hub, hub);
  assert.deepEqual(
    result.models.filter((m) => m.problem === null).map((m) => m.repo),
    ["org/sharded", "org/tiny"],
  );
  const est = await ask({ type: "model.inspect", path: "org/tiny" });
  assert.ok(est.type === "reply" && est.ok, JSON.stringify(est));
  assert.equal((est.result as { path: string }).path, findModelFolder("org/tiny"));
  const loaded = await ask({ type: "model.load", path: "org/tiny" });
  assert.ok(loaded.type === "reply" && loaded.ok, JSON.stringify(loaded));
  assert.equal((loaded.result as { name: string }).name, "org/tiny");
  const hello = await ask({ type: "hello" });
  assert.ok(hello.type === "reply" && hello.ok);
  assert.equal((hello.result as { recentModels: string[] }).recentModels[0], "org/tiny");
  const bad = await ask({ type: "model.load", path: "org/alien" });
  assert.ok(bad.type === "reply" && !bad.ok);
  assert.equal(bad.error.code, "UNSUPPORTED_ARCHITECTURE");
});
