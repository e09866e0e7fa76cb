// A full or read-only disk while a model is imported, exported or made: a NO_SPACE or CANNOT_WRITE
// error naming the file or folder, and nothing left behind (where a bare ENOSPC or EROFS with Node's
// stack trace came out). Writes to /dev/full fail with ENOSPC; small tmpfs mounts, read-write or
// read-only, stand for the disks (mounted where the tests may mount, as root in CI; skipped with the
// reason elsewhere).
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  closeSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { open } from "node:fs/promises";
import { join } from "node:path";
import { hire, REPO_ROOT, tempDir } from "./helpers.js";
import { ModelError } from "../core/loader/errors.js";
import { checkFreeSpace, makeFolder, writeAll, writeFully } from "../core/loader/file-io.js";
import { importGguf } from "../core/gguf/import.js";
import { importPytorch } from "../core/loader/pytorch-import.js";
import { makeModel } from "../core/modelgen/make-model.js";
import { defaultModelDir } from "../core/loader/default-model.js";

const FIXTURE = join(REPO_ROOT, "test", "gguf", "tiny-llama-quants.gguf");

function isNoSpace(e: unknown, where: RegExp): boolean {
  return e instanceof ModelError && e.code === "NO_SPACE" && where.test(e.message);
}

test("disk full: writes that fail with ENOSPC are NO_SPACE errors naming the file", async (t) => {
  if (!existsSync("/dev/full")) return t.skip("no /dev/full here");
  const fd = openSync("/dev/full", "w");
  try {
    assert.throws(
      () => writeAll(fd, new Uint8Array(4096), "/models/out.safetensors"),
      (e) => isNoSpace(e, /^\/models\/out\.safetensors: the disk is full \(ENOSPC\) writing this file$/),
    );
  } finally {
    closeSync(fd);
  }
  const fh = await open("/dev/full", "w");
  try {
    await assert.rejects(writeFully(fh, new Uint8Array(4096), 0, "/models/x.gguf"), (e) =>
      isNoSpace(e, /^\/models\/x\.gguf: the disk is full/),
    );
  } finally {
    await fh.close();
  }
});

test("disk full: checkFreeSpace refuses what the disk cannot hold, from the nearest existing folder", (t) => {
  const dir = tempDir(t);
  checkFreeSpace(join(dir, "not", "made", "yet"), 1, "a byte");
  assert.throws(
    () => checkFreeSpace(join(dir, "not", "made", "yet"), 1e18, "importing big.gguf"),
    (e) =>
      isNoSpace(e, /not\/made\/yet: importing big\.gguf needs 1000000000\.00 GB here; the disk has [\d.]+ [MG]B free$/),
  );
});

/** A tmpfs of `size` at a new folder, unmounted after the test; undefined (with the reason) where mounting is not allowed. */
function smallDisk(t: { after: (fn: () => void) => void }, size: string, readOnly = false): string | undefined {
  const dir = mkdtempSync(join(tmpdir(), "hire-small-disk-"));
  const options = `size=${size}${readOnly ? ",ro" : ""}`;
  const r = spawnSync("mount", ["-t", "tmpfs", "-o", options, "tmpfs", dir], { encoding: "utf8" });
  t.after(() => {
    if (r.status === 0) spawnSync("umount", [dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  return r.status === 0 ? dir : undefined;
}

test("disk full: a GGUF import that cannot fit is refused before it writes, leaving nothing", async (t) => {
  const disk = smallDisk(t, "512k");
  if (!disk) return t.skip("cannot mount a tmpfs here (needs root)");
  const out = join(disk, "imports", "tiny");
  await assert.rejects(importGguf(FIXTURE, out), (e) =>
    isNoSpace(e, /\/imports: importing tiny-llama-quants\.gguf needs [\d.]+ MB here; the disk has 0\.5 MB free$/),
  );
  assert.deepEqual(readdirSync(disk), [], "nothing left on the disk");
  // The CLI says so in one line, with no stack trace.
  const r = hire(["import", "--gguf", FIXTURE, "--out", out]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /^hire import: .*importing tiny-llama-quants\.gguf needs [\d.]+ MB here/);
  assert.doesNotMatch(r.stderr, /\n\s+at /);
});

test("disk full: a PyTorch checkpoint's import that cannot fit is refused before it writes, leaving nothing", async (t) => {
  const disk = smallDisk(t, "128k");
  if (!disk) return t.skip("cannot mount a tmpfs here (needs root)");
  const pickled = join(tempDir(t), "pickled");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 1, out: pickled });
  rmSync(join(pickled, "model.safetensors"));
  copyFileSync(join(REPO_ROOT, "test", "pytorch", "single", "pytorch_model.bin"), join(pickled, "pytorch_model.bin"));
  await assert.rejects(importPytorch(pickled, join(disk, "imports", "pickled")), (e) =>
    isNoSpace(e, /\/imports: importing pickled needs [\d.]+ MB here; the disk has 0\.1 MB free$/),
  );
  assert.deepEqual(readdirSync(disk), [], "nothing left on the disk");
});

test("disk full: exports and make-model that fill the disk stop with NO_SPACE and leave no partial file", (t) => {
  const disk = smallDisk(t, "1m");
  if (!disk) return t.skip("cannot mount a tmpfs here (needs root)");
  for (const [args, file] of [
    [["export", "--model", defaultModelDir(), "--gguf", join(disk, "m.gguf")], /m\.gguf\.\d+\.tmp/],
    [["export", "--model", defaultModelDir(), "--onnx", join(disk, "m.onnx")], /m\.onnx\.data/],
    [
      ["make-model", "--arch", "llama", "--preset", "smollm2-135m", "--dtype", "bf16", "--seed", "1"],
      /model\.safetensors/,
    ],
  ] as const) {
    const argv: string[] = args[0] === "make-model" ? [...args, "--out", join(disk, "made")] : [...args];
    const r = hire(argv);
    assert.equal(r.status, 1, `${argv.join(" ")}: ${r.stderr}`);
    assert.match(
      r.stderr,
      new RegExp(`^hire ${args[0]}: .*${file.source}: the disk is full \\(ENOSPC\\) writing this file\\n$`),
    );
    assert.deepEqual(readdirSync(disk), [], `${args[0]}: nothing left on the disk`);
  }
});

test("read-only disk: imports and exports are CANNOT_WRITE errors naming the place; a folder is not an output file", async (t) => {
  const disk = smallDisk(t, "16m", true);
  if (!disk) return t.skip("cannot mount a tmpfs here (needs root)");
  const readOnly = (where: RegExp) => (e: unknown) =>
    e instanceof ModelError &&
    e.code === "CANNOT_WRITE" &&
    where.test(e.message) &&
    /cannot write here: the file system is read-only \(EROFS\)$/.test(e.message);
  // Into the disk itself, and below folders not made yet (the first one it cannot make is named).
  await assert.rejects(importGguf(FIXTURE, join(disk, "tiny")), readOnly(/\/tiny\.\d+\.tmp: /));
  await assert.rejects(importGguf(FIXTURE, join(disk, "imports", "tiny")), readOnly(/disk-\w+\/imports: /));
  assert.throws(() => makeFolder(join(disk, "a", "b")), readOnly(/disk-\w+\/a: /));
  for (const [flag, file] of [
    ["--gguf", /m\.gguf\.\d+\.tmp/],
    ["--onnx", /m\.onnx\.data/],
  ] as const) {
    const ext = flag.slice(2);
    const r = hire(["export", "--model", defaultModelDir(), flag, join(disk, `m.${ext}`)]);
    assert.equal(r.status, 1, r.stderr);
    assert.match(
      r.stderr,
      new RegExp(`^hire export: .*${file.source}: cannot write here: the file system is read-only`),
    );
    // A folder given as the output file is a usage error before anything is written.
    const dir = hire(["export", "--model", defaultModelDir(), flag, tmpdir()]);
    assert.equal(dir.status, 2);
    assert.match(dir.stderr, new RegExp(`${flag}: ${tmpdir()} is a folder; give the file to write`));
  }
  // The CLI's first load of a GGUF into a read-only cache says so in one line.
  const r = hire(["generate", "--model", FIXTURE, "--prompt", "hi", "--max-tokens", "1"], undefined, {
    HIRE_CACHE_DIR: disk,
  });
  assert.equal(r.status, 1);
  assert.match(r.stderr, /\/imports: cannot write here: the file system is read-only \(EROFS\)\n$/);
  // An evaluation whose plot cannot be written still prints its table first.
  const evalRun = hire([
    "eval",
    "--text",
    join(REPO_ROOT, "assets", "models", "hire-brown-6m", "eval.txt"),
    "--max-tokens",
    "32",
    "--ffn-k",
    "0.1",
    "--oversample",
    "2",
    "--plot",
    join(disk, "plot.svg"),
  ]);
  assert.equal(evalRun.status, 1, evalRun.stderr);
  assert.match(evalRun.stdout, /^hire +0\.1 +2 +[\d.]+ +[\d.]+ +-$/m);
  assert.match(evalRun.stderr, /plot\.svg: cannot write here: the file system is read-only \(EROFS\)\n$/);
  // `hire serve` with a data folder it cannot make stops at once, saying so.
  const serve = hire(["serve", "--port", "0", "--no-model", "--data", join(disk, "data")]);
  assert.equal(serve.status, 1, serve.stderr);
  assert.match(serve.stderr, /^hire serve: .*\/data: cannot write here: the file system is read-only \(EROFS\)\n$/);
});

test("a cache path through a file: a GGUF's first load says so; HiRE runs without its predictor cache", (t) => {
  const file = join(tempDir(t), "not-a-folder");
  writeFileSync(file, "x");
  const gguf = hire(["generate", "--model", FIXTURE, "--prompt", "hi", "--max-tokens", "1"], undefined, {
    HIRE_CACHE_DIR: file,
  });
  assert.equal(gguf.status, 1);
  assert.match(
    gguf.stderr,
    /not-a-folder\/imports: cannot write here: a part of its path is not a folder \(ENOTDIR\)\n$/,
  );
  // The predictors and content hashes are a cache: failing to store them costs a rebuild, not the reply.
  const args = [
    "generate",
    "--prompt",
    "hi",
    "--max-tokens",
    "3",
    "--temperature",
    "0",
    "--ffn",
    "hire",
    "--head",
    "hire",
  ];
  const withCache = hire(args);
  const without = hire(args, undefined, { HIRE_CACHE_DIR: file });
  assert.equal(without.status, 0, without.stderr);
  assert.equal(without.stdout, withCache.stdout);
});

test("what an import, export or make-model killed mid-way left is removed by the next run; a live writer's is kept", async (t) => {
  const dir = tempDir(t);
  // A pid that ran and is gone, and one that runs (this test's parent).
  const gone = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
  const dead = Number(gone.stdout);
  const live = process.ppid;
  const leftovers = (names: string[]) => {
    for (const n of names) {
      mkdirSync(join(dir, n), { recursive: true });
      writeFileSync(join(dir, n, "model.safetensors"), "partial");
    }
  };
  // A GGUF import (and, through model-source, the cache's imports folder): its own leftovers.
  leftovers([`tiny.${dead}.tmp`, `tiny.${live}.tmp`, `other.${dead}.tmp`]);
  await importGguf(FIXTURE, join(dir, "tiny"));
  assert.deepEqual(readdirSync(dir).sort(), ["other." + dead + ".tmp", "tiny", `tiny.${live}.tmp`].sort());
  // A GGUF export beside an earlier one's leftover file.
  writeFileSync(join(dir, `m.gguf.${dead}.tmp`), "partial");
  const r = hire(["export", "--model", defaultModelDir(), "--gguf", join(dir, "m.gguf")]);
  assert.equal(r.status, 0, r.stderr);
  assert.ok(!existsSync(join(dir, `m.gguf.${dead}.tmp`)));
  // make-model's hidden partial folder.
  leftovers([`.made.partial-${dead}-0a1b2c3d`]);
  const m = hire(["make-model", "--arch", "llama", "--dtype", "f32", "--seed", "1", "--out", join(dir, "made")]);
  assert.equal(m.status, 0, m.stderr);
  assert.ok(!existsSync(join(dir, `.made.partial-${dead}-0a1b2c3d`)));
  assert.ok(existsSync(join(dir, `tiny.${live}.tmp`)), "a running writer's folder stays");
});
