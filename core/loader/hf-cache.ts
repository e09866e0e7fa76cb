// Models already in the Hugging Face cache: what `hf download` / `from_pretrained` left on this
// machine, found by repo id ("Qwen/Qwen2.5-0.5B-Instruct") instead of by snapshot path. Nothing is
// downloaded. The layout is huggingface_hub's:
//   <hub>/models--<org>--<name>/refs/<branch>        the commit a branch points at
//   <hub>/models--<org>--<name>/snapshots/<commit>/  the repo's files (links into ../../blobs)
// where <hub> is $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE, else $HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
import { existsSync, lstatSync, readdirSync, readFileSync, statSync } from "node:fs";
import { homedir } from "node:os";
import { basename, dirname, join, resolve, sep } from "node:path";
import { ModelError, type ModelErrorCode } from "./errors.js";
import {
  checkpointWeightFiles,
  quantizedImportRecord,
  planQuantizedImport,
  quantSchemeOf,
} from "./quantized-import.js";
import { readModelConfig } from "./model-folder.js";
import { ModelTokenizer } from "./tokenizer.js";
import { pytorchFiles, pytorchImportRecord } from "./pytorch-import.js";
import { importSource, planImport, readGguf } from "../gguf/import.js";

type Env = Record<string, string | undefined>;

export function hubCacheDir(env: Env = process.env): string {
  const hub = env.HF_HUB_CACHE || env.HUGGINGFACE_HUB_CACHE;
  if (hub) return resolve(hub);
  const home = env.HF_HOME || join(env.XDG_CACHE_HOME || join(homedir(), ".cache"), "huggingface");
  return resolve(home, "hub");
}

// Hub repo ids: "name" or "org/name", letters, digits, "-", "_", "."; "@revision" picks a branch,
// tag or commit. A path that exists on disk is always a path.
const REPO_ID = /^(?:[A-Za-z0-9][\w.-]*\/)?[A-Za-z0-9][\w.-]*(?:@[\w.\-/]+)?$/;
// A GGUF file in a repo's main snapshot: "org/name/file.gguf" (GGUF repos hold one file per quantization).
const REPO_GGUF = /^([A-Za-z0-9][\w.-]*\/[A-Za-z0-9][\w.-]*)\/([\w.-]+\.gguf)$/i;
const COMMIT = /^[0-9a-f]{40}$/;

export function looksLikeRepoId(arg: string): boolean {
  return (REPO_ID.test(arg) || REPO_GGUF.test(arg)) && !arg.includes("..");
}

/**
 * The folder a --model argument names: an existing path as given, else a repo id looked up in the
 * Hugging Face cache. Anything else is returned resolved, for the loader's NOT_FOUND.
 */
export function findModelFolder(arg: string, env: Env = process.env): string {
  if (existsSync(arg) || !looksLikeRepoId(arg)) return resolve(arg);
  const gguf = REPO_GGUF.exec(arg);
  if (gguf) {
    const file = join(findModelFolder(gguf[1], env), gguf[2]);
    if (!existsSync(file)) throw new ModelError("NOT_FOUND", file, `${gguf[1]}'s snapshot has no ${gguf[2]}`);
    return file;
  }
  const hub = hubCacheDir(env);
  const at = arg.indexOf("@");
  const repo = at < 0 ? arg : arg.slice(0, at);
  const revision = at < 0 ? "main" : arg.slice(at + 1);
  const repoDir = join(hub, repoFolderName(repo));
  if (!existsSync(repoDir))
    throw new ModelError(
      "NOT_FOUND",
      arg,
      `not a folder, and not in the Hugging Face cache (${hub} has no ${basename(repoDir)}); ` +
        `HiRE Studio does not download models: \`hf download ${repo}\` puts it there`,
    );
  const snapshot = snapshotFor(repoDir, revision);
  if (!snapshot)
    throw new ModelError(
      "NOT_FOUND",
      repoDir,
      `revision "${revision}" of ${repo} is not in the cache (have: ${snapshotNames(repoDir).join(", ") || "no snapshots"})`,
    );
  return snapshot;
}

/** The repo id of a snapshot folder in any hub cache, or null for other folders. */
export function repoIdOf(dir: string): string | null {
  const parts = resolve(dir).split(sep);
  const n = parts.length;
  if (n < 3 || parts[n - 2] !== "snapshots" || !parts[n - 3].startsWith("models--")) return null;
  return parts[n - 3].slice("models--".length).split("--").join("/");
}

/**
 * A loaded model's display name: its repo id when it came from the cache, the GGUF file's name for an
 * import (ORG/NAME/FILE.gguf when the file is in the cache), the checkpoint's for a quantized checkpoint's import, else
 * the folder's name.
 */
export function modelName(dir: string): string {
  const gguf = importSource(dir)?.file;
  if (gguf) {
    const repo = repoIdOf(dirname(gguf));
    return repo ? `${repo}/${basename(gguf)}` : basename(gguf);
  }
  const checkpoint = quantizedImportRecord(dir)?.source ?? pytorchImportRecord(dir)?.source;
  if (checkpoint) return repoIdOf(checkpoint) ?? basename(checkpoint);
  return repoIdOf(dir) ?? basename(dir);
}

export interface CachedModel {
  /** "org/name": what --model and the app's model field accept. */
  repo: string;
  /** The snapshot `main` points at (else the newest), and its commit. */
  path: string;
  revision: string;
  /** Sum of the weight files' sizes (0 when they cannot be listed). */
  weightBytes: number;
  architecture: string | null;
  /** A quantized checkpoint's quant_method ("gptq", "fp8", …; imported on its first load), else null. */
  quantization: string | null;
  /** The weights are PyTorch pickles (pytorch_model.bin), imported as safetensors on the first load. */
  pytorch: boolean;
  /** null when the snapshot loads as far as its config, weights list and tokenizer go. */
  problem: { code: ModelErrorCode; message: string } | null;
}

/**
 * Every model repo in the cache, with what stands in the way of loading it. Sorted by repo id. A
 * repo of GGUF files (no config.json) lists each file as "org/name/file.gguf", checked as far as
 * its import can be planned without reading the weights.
 */
export async function listCachedModels(env: Env = process.env): Promise<CachedModel[]> {
  const hub = hubCacheDir(env);
  if (!existsSync(hub)) return [];
  const out: CachedModel[] = [];
  for (const entry of readdirSync(hub).sort()) {
    if (!entry.startsWith("models--")) continue;
    const repoDir = join(hub, entry);
    const path = snapshotFor(repoDir, "main");
    if (!path) continue;
    const repo = repoIdOf(path)!;
    const ggufs = existsSync(join(path, "config.json"))
      ? []
      : readdirSync(path).filter((f) => f.toLowerCase().endsWith(".gguf"));
    if (ggufs.length === 0) out.push(await inspectSnapshot(repo, path));
    for (const f of ggufs) out.push(await inspectGguf(`${repo}/${f}`, join(path, f)));
  }
  return out.sort((a, b) => a.repo.localeCompare(b.repo));
}

const INCOMPLETE = "links to a blob that is not in the cache (download incomplete?)";

/** A listed model, with what `check` finds standing in the way of loading it as its problem. */
async function inspected(
  repo: string,
  path: string,
  revision: string,
  check: (model: CachedModel) => void | Promise<void>,
): Promise<CachedModel> {
  const model: CachedModel = {
    repo,
    path,
    revision,
    weightBytes: 0,
    architecture: null,
    quantization: null,
    pytorch: false,
    problem: null,
  };
  try {
    await check(model);
  } catch (e) {
    if (!(e instanceof ModelError)) throw e;
    model.problem = { code: e.code, message: e.message };
  }
  return model;
}

function inspectSnapshot(repo: string, path: string): Promise<CachedModel> {
  return inspected(repo, path, basename(path), (model) => {
    // A download in progress or cut short leaves links to blobs that are not there yet.
    for (const name of readdirSync(path)) {
      const f = join(path, name);
      if (lstatSync(f).isSymbolicLink() && !existsSync(f)) throw new ModelError("NOT_FOUND", f, INCOMPLETE);
    }
    model.architecture = readModelConfig(path).architecture;
    // A PyTorch checkpoint (pytorch_model.bin): imported as safetensors on its first load.
    const pickles = pytorchFiles(path);
    model.pytorch = pickles !== undefined;
    for (const f of pickles ?? checkpointWeightFiles(path)) model.weightBytes += statSync(f).size;
    // A quantized checkpoint: as far as its import can be planned.
    if (quantSchemeOf(path)) model.quantization = planQuantizedImport(path).method;
    ModelTokenizer.fileIn(path);
  });
}

function inspectGguf(repo: string, file: string): Promise<CachedModel> {
  return inspected(repo, file, basename(dirname(file)), async (model) => {
    if (!existsSync(file)) throw new ModelError("NOT_FOUND", file, INCOMPLETE);
    model.weightBytes = statSync(file).size;
    model.architecture = planImport(await readGguf(file)).hfArchitecture;
  });
}

function repoFolderName(repo: string): string {
  return `models--${repo.split("/").join("--")}`;
}

function snapshotNames(repoDir: string): string[] {
  const dir = join(repoDir, "snapshots");
  return existsSync(dir) ? readdirSync(dir).filter((s) => statSync(join(dir, s)).isDirectory()) : [];
}

/**
 * The snapshot folder for a branch, tag or commit: refs/<revision> when the cache has it, the
 * snapshot named by a commit hash, and for "main" without a ref (a cache written by hand or
 * copied) the only, else the most recently written, snapshot.
 */
function snapshotFor(repoDir: string, revision: string): string | null {
  const snapshots = join(repoDir, "snapshots");
  const ref = join(repoDir, "refs", ...revision.split("/"));
  if (existsSync(ref) && statSync(ref).isFile()) {
    const commit = readFileSync(ref, "utf8").trim();
    if (COMMIT.test(commit) && existsSync(join(snapshots, commit))) return join(snapshots, commit);
    return null;
  }
  if (existsSync(join(snapshots, revision))) return join(snapshots, revision);
  if (revision !== "main") return null;
  const names = snapshotNames(repoDir);
  if (names.length === 0) return null;
  const newest = names
    .map((n) => ({ n, t: statSync(join(snapshots, n)).mtimeMs }))
    .sort((a, b) => b.t - a.t || a.n.localeCompare(b.n))[0];
  return join(snapshots, newest.n);
}
