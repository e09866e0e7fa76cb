// What a --model argument (or the app's model path) names, as a model folder the loader reads: a
// folder, a repo id in the Hugging Face cache (hf-cache.ts), or a GGUF file, quantized checkpoint
// (FP8, GPTQ, AWQ) or PyTorch checkpoint (pytorch_model.bin), imported once into the cache (core/gguf/import.ts, quantized-import.ts) and read
// from there after.
import { existsSync, readdirSync, rmSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { IMPORT_VERSION, importGguf, importSource } from "../gguf/import.js";
import { cacheDir, filesKey } from "../sparse/cache.js";
import { ModelError } from "./errors.js";
import { removeDeadTemps } from "./file-io.js";
import { isObject, readJsonFile } from "./json.js";
import {
  checkpointWeightFiles,
  QUANTIZED_IMPORT_VERSION,
  quantizedImportRecord,
  quantSchemeOf,
  importQuantized,
} from "./quantized-import.js";
import { findModelFolder, repoIdOf } from "./hf-cache.js";
import { importPytorch, PYTORCH_IMPORT_VERSION, pytorchFiles, pytorchImportRecord } from "./pytorch-import.js";

/**
 * The GGUF file a --model argument (or the app's path) names, if any: a .gguf file, or a folder with no
 * config.json and one GGUF file in it (several: a ModelError listing them).
 */
export function ggufFileFor(arg: string): string | undefined {
  if (existsSync(arg) && statSync(arg).isDirectory()) {
    if (existsSync(join(arg, "config.json"))) return undefined;
    const ggufs = readdirSync(arg).filter((f) => f.toLowerCase().endsWith(".gguf"));
    if (ggufs.length > 1) {
      throw new ModelError("NOT_FOUND", arg, `holds ${ggufs.length} GGUF files; pass one of them: ${ggufs.join(", ")}`);
    }
    return ggufs.length === 1 ? resolve(arg, ggufs[0]) : undefined;
  }
  if (!arg.toLowerCase().endsWith(".gguf")) return undefined;
  const file = resolve(arg);
  if (!existsSync(file)) throw new ModelError("NOT_FOUND", file, "GGUF file not found");
  return file;
}

/**
 * The model folder a --model argument (or the app's path) means (`findModelFolder`: a path, or a repo
 * id in the Hugging Face cache): a GGUF file (`ggufFileFor`) or a quantized checkpoint (`quantSchemeOf`) is
 * imported into the cache the first time (`onImport` is told, with progress) and its folder returned;
 * anything else is returned resolved.
 */
export async function modelFolderFor(
  arg: string,
  onImport?: (file: string, done: number, total: number) => void,
): Promise<string> {
  const found = findModelFolder(arg); // a repo id in the Hugging Face cache, ORG/NAME/FILE.gguf included
  const file = ggufFileFor(found);
  if (file) {
    const dir = join(
      cacheDir("imports"),
      `${basename(file).replace(/\.gguf$/i, "")}-${filesKey([file], { IMPORT_VERSION })}`,
    );
    if (existsSync(join(dir, "config.json"))) return dir;
    removeStaleImports((d) => d !== dir && importSource(d)?.file === file);
    onImport?.(file, 0, 1);
    await importGguf(file, dir, { onProgress: (done, total) => onImport?.(file, done, total) });
    return dir;
  }
  const pickles = pytorchFiles(found);
  if (pickles) {
    const config = readJsonFile(join(found, "config.json"));
    if (isObject(config) && isObject(config.quantization_config))
      throw new ModelError(
        "UNSUPPORTED_QUANTIZATION",
        join(found, "config.json"),
        `a ${String(config.quantization_config.quant_method ?? "quantized")} checkpoint in PyTorch's pickles ` +
          `(${basename(pickles[0])}): quantized checkpoints load from safetensors only`,
      );
    return folderImport(
      found,
      pickles,
      { PYTORCH_IMPORT_VERSION },
      (d) => pytorchImportRecord(d)?.source,
      onImport,
      (dir, progress) => importPytorch(found, dir, { onProgress: progress }),
    );
  }
  if (!quantSchemeOf(found)) return found;
  return folderImport(
    found,
    checkpointWeightFiles(found),
    { QUANTIZED_IMPORT_VERSION },
    (d) => quantizedImportRecord(d)?.source,
    onImport,
    (dir, progress) => importQuantized(found, dir, { onProgress: progress }),
  );
}

/**
 * The import of checkpoint folder `found` in the cache, made the first time: keyed by its weight
 * files and config.json (and the importer's version), so that a changed checkpoint is imported
 * again and its older imports (whose record names `found` as their source) are removed.
 */
async function folderImport(
  found: string,
  files: string[],
  version: Record<string, number>,
  sourceOf: (importDir: string) => string | undefined,
  onImport: ((file: string, done: number, total: number) => void) | undefined,
  run: (dir: string, progress: (done: number, total: number) => void) => Promise<unknown>,
): Promise<string> {
  const key = filesKey([...files, join(found, "config.json")], version);
  const dir = join(cacheDir("imports"), `${(repoIdOf(found) ?? basename(found)).replace(/\//g, "--")}-${key}`);
  if (existsSync(join(dir, "config.json"))) return dir;
  removeStaleImports((d) => d !== dir && sourceOf(d) === found);
  onImport?.(found, 0, 1);
  await run(dir, (done, total) => onImport?.(found, done, total));
  return dir;
}

/**
 * Earlier imports of a file or folder (made before it changed), and what imports killed mid-way left:
 * they would only take disk space. (Never the current import's folder: another process may have just
 * finished it.)
 */
function removeStaleImports(isStale: (importDir: string) => boolean): void {
  const root = cacheDir("imports");
  if (!existsSync(root)) return;
  removeDeadTemps(root, /\.(\d+)\.tmp$/); // any import killed mid-way
  for (const name of readdirSync(root)) {
    if (isStale(join(root, name))) rmSync(join(root, name), { recursive: true, force: true });
  }
}
