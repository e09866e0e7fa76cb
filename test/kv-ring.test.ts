// The KV cache of sliding-window layers is a ring (window + RING_SLACK slots, position p in slot
// p % slots): decoding past the ring's length gives exactly what a slot per position gives, the
// memory estimate counts the rings, and a session reuses a cached prefix only while the rings still
// hold it (a long reply since overwrites the start of the window).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { makeModel } from "../core/modelgen/make-model.js";
import { loadModel, type LoadedModel } from "../core/loader/model-folder.js";
import { createBackend } from "../core/backend/select.js";
import { KVCache, RING_SLACK, Transformer, kvReadBytes } from "../core/engine/transformer.js";
import { Session } from "../core/engine/session.js";
import { estimateModel } from "../core/host/engine-host.js";
import { native } from "../core/native/addon.js";
import { kvBufferGroups } from "../core/backend/cpu.js";

const WINDOW = 8;
const CONTEXT = 2048;
let root: string;
const models = new Map<string, LoadedModel>();

before(async () => {
  root = mkdtempSync(join(tmpdir(), "hire-kv-ring-"));
  // Gemma 2 and 3 (windows in layers 0 and 2) with a context long enough to wrap their rings.
  for (const arch of ["gemma2", "gemma3"] as const) {
    const out = join(root, arch);
    await makeModel({ arch, shape: { maxPositions: CONTEXT }, dtype: "f32", seed: 7, out });
    models.set(arch, loadModel(out));
  }
});
after(() => {
  for (const m of models.values()) m.close();
  rmSync(root, { recursive: true, force: true });
});

const argmax = (x: Float32Array) => x.reduce((best, v, i) => (v > x[best] ? i : best), 0);

test("decoding past a ring's length gives, bit for bit, what a slot per position gives", () => {
  for (const [arch, model] of models) {
    const c = model.config;
    assert.deepEqual(c.attentionWindows, [WINDOW, 0, WINDOW, 0], arch);
    const b = createBackend("cpu", 2);
    const t = new Transformer(b, c, model.weights);
    const ring = new KVCache(b, c, CONTEXT);
    // The same model's cache without windows: a slot per position in every layer (attention still
    // applies the windows; only where the keys live differs).
    const full = new KVCache(b, { ...c, attentionWindows: undefined }, CONTEXT);
    const slots = WINDOW + RING_SLACK;
    assert.deepEqual(ring.slots, [slots, CONTEXT, slots, CONTEXT], arch);
    assert.deepEqual(full.slots, [CONTEXT, CONTEXT, CONTEXT, CONTEXT], arch);

    // A prompt in batches of 64; greedy decode to just before the ring's end; a batch of 64 written
    // across it (slot slots - 1, then slot 0); decode on to 300 past it, so every slot has been
    // overwritten and the window wraps around slot 0.
    const prompt = Array.from({ length: 200 }, (_, i) => (i * 37 + 11) % c.vocab);
    let a: Float32Array | null = null;
    let z: Float32Array | null = null;
    const step = (ids: number[], pos: number, what: string) => {
      a = Float32Array.from(t.forward(ids, pos, ring)!);
      z = Float32Array.from(t.forward(ids, pos, full)!);
      if (a.some((v, i) => v !== z![i])) assert.fail(`${arch}: logits differ ${what} at position ${pos}`);
    };
    for (let p = 0; p < prompt.length; p += 64) step(prompt.slice(p, p + 64), p, "after a prompt batch");
    let pos = prompt.length;
    for (; pos < slots - 30; pos++) step([argmax(a!)], pos, "decoding");
    step(prompt.slice(0, 64), pos, "after a batch across the ring's end");
    for (pos += 64; pos < slots + 300; pos++) step([argmax(a!)], pos, "decoding past the ring's length");
  }
});

test("the memory estimate counts a ring for each sliding-window layer", async () => {
  const c = models.get("gemma3")!.config;
  const est = await estimateModel(join(root, "gemma3"));
  assert.equal(est.contextLength, CONTEXT);
  const perSlot = 2 * c.kvHeads * c.headDim * 4; // keys and values, f32
  // Layers 0 and 2 keep window + RING_SLACK slots; 1 and 3 a slot per position.
  assert.equal(est.kvCacheBytes, perSlot * (2 * (WINDOW + RING_SLACK) + 2 * CONTEXT));
  assert.ok(est.kvCacheBytes < perSlot * 4 * CONTEXT);
  const b = createBackend("cpu", 1);
  const cache = new KVCache(b, c, CONTEXT);
  assert.equal(
    cache.k.reduce((sum, k) => sum + 2 * k.length * 4, 0),
    est.kvCacheBytes,
  );
  // An f16 cache: half of it, in Uint16Arrays.
  assert.equal((await estimateModel(join(root, "gemma3"), undefined, "f16")).kvCacheBytes, est.kvCacheBytes / 2);
  const half = new KVCache(b, c, CONTEXT, "f16");
  assert.ok(half.k.every((k) => k instanceof Uint16Array));
  assert.equal(
    half.k.reduce((sum, k) => sum + 2 * (k as Uint16Array).byteLength, 0),
    est.kvCacheBytes / 2,
  );
});

test(
  "a KVCache faults in, when it is made, each kv head's page its first token writes",
  { skip: process.platform !== "linux" },
  () => {
    const c = models.get("gemma3")!.config;
    const b = createBackend("cpu", 1);
    const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))![1]) * 1024;
    // 16 layers of 8 kv heads with every slot (no rings): each head's part of a cache is 2048 slots
    // apart, pages apart, so 256 pages at least (2 MiB ones where the kernel gives them).
    const wide = { ...c, layers: 16, kvHeads: 8, attentionWindows: undefined };
    const parts = wide.layers * 2 * wide.kvHeads;
    assert.ok(CONTEXT * wide.headDim * 4 >= 4096);
    const before = rss();
    const cache = new KVCache(b, wide, CONTEXT);
    const grown = rss() - before;
    assert.ok(grown >= parts * 4096, `resident memory grew ${grown} bytes for ${parts} head parts`);
    assert.ok([...cache.k, ...cache.v].every((x) => (x as Float32Array).every((v) => v === 0)));
  },
);

test("a KVCache's caches share one buffer: on cache lines, apart, zeroed, the lot on a 2 MiB page once it spans one", () => {
  const c = models.get("gemma3")!.config;
  const b = createBackend("cpu", 1);
  const hn = native();
  type Cache = Float32Array | Uint16Array; // what the CPU backend's Bufs are
  const lineOffset = (x: Cache) => hn.cacheLineOffset(new Float32Array(x.buffer, x.byteOffset, 16));
  for (const dtype of ["f32", "f16"] as const) {
    const cache = new KVCache(b, c, CONTEXT, dtype);
    const k = cache.k as Cache[];
    const v = cache.v as Cache[];
    const all = [...k, ...v];
    cache.slots.forEach((slots, l) => {
      for (const x of [k[l], v[l]]) {
        assert.equal(x.length, c.kvHeads * slots * c.headDim, `${dtype} layer ${l}`);
        assert.ok(dtype === "f32" ? x instanceof Float32Array : x instanceof Uint16Array);
        assert.equal(lineOffset(x), 0, `${dtype} layer ${l}: on a cache line`);
        assert.ok(x.every((v) => v === 0));
      }
    });
    assert.ok(
      all.every((x) => x.buffer === all[0].buffer),
      "one buffer",
    );
    const spans = all.map((x) => [x.byteOffset, x.byteOffset + x.byteLength]).sort((p, q) => p[0] - q[0]);
    for (let i = 1; i < spans.length; i++) assert.ok(spans[i - 1][1] <= spans[i][0], `${dtype}: caches overlap`);
    k[0].fill(1);
    assert.ok(v[0].every((x) => x === 0) && k[1].every((x) => x === 0));
  }
  // Buffers hold at most KV_BUFFER_BYTES of caches, in order; a larger cache gets its own.
  assert.deepEqual(kvBufferGroups([3, 3, 3], 6), [[0, 1], [2]]);
  assert.deepEqual(kvBufferGroups([2, 10, 2, 2], 6), [[0], [1], [2, 3]]);
  assert.deepEqual(kvBufferGroups([], 6), []);
  // 4.8 MB of caches: the first starts a 2 MiB page (no whole page lies before it).
  const [k, v] = b.allocKvSet!([600_000, 600_000], "f32") as Float32Array[];
  assert.equal(hn.hugePageOffset(k), 0);
  assert.equal(k.length, 600_000);
  assert.equal(v.byteOffset, k.byteOffset + 600_000 * 4);
});

test("the bytes attention reads per token: every position so far, the last window in a windowed layer", () => {
  const c = models.get("gemma3")!.config;
  const perPosition = 2 * c.kvHeads * c.headDim * 4;
  // Position 3: 4 positions in every layer. Position 100: 101 in layers 1 and 3, WINDOW in 0 and 2.
  assert.equal(kvReadBytes(c, 3), perPosition * 4 * 4);
  assert.equal(kvReadBytes(c, 100), perPosition * (2 * 101 + 2 * WINDOW));
  assert.equal(kvReadBytes({ ...c, attentionWindows: undefined }, 100), perPosition * 4 * 101);
});

test("a session reuses the prefix while the rings hold it, and starts over after a reply that overwrote it", async () => {
  const model = models.get("gemma3")!;
  const prompt = Array.from({ length: 40 }, (_, i) => (i * 13 + 5) % model.config.vocab);
  // Greedy ids, and the log-probabilities of the first tokens (keys read from the wrong slots
  // change them, even where the tiny model's argmax would not notice).
  const generate = async (session: Session, maxTokens: number) => {
    const out = { reused: -1, ids: [] as number[], logprobs: [] as number[] };
    for await (const ev of session.generate(prompt, { maxTokens, temperature: 0, ignoreEos: true, logprobs: 1 })) {
      if (ev.type === "prefill") out.reused = ev.reusedTokens;
      if (ev.type === "token") out.ids.push(ev.id);
      if (ev.type === "token" && out.logprobs.length < 16) out.logprobs.push(ev.topLogprobs![0][1]);
    }
    return out;
  };
  const session = new Session(model, { contextLength: CONTEXT });

  // A short reply leaves the window before the prompt's end in place: regenerating reuses it.
  const short = await generate(session, 20);
  const again = await generate(session, 20);
  assert.equal(again.reused, prompt.length - 1);
  assert.deepEqual(again.ids, short.ids);

  // A reply longer than the slack has overwritten those slots: regenerating starts over, and decodes
  // exactly what a fresh session decodes.
  const long = await generate(session, RING_SLACK + 100);
  assert.equal(long.reused, prompt.length - 1);
  const after = await generate(session, RING_SLACK + 100);
  assert.equal(after.reused, 0, "the prefix is recomputed");
  assert.deepEqual(after, { ...(await generate(new Session(model, { contextLength: CONTEXT }), RING_SLACK + 100)) });
});
