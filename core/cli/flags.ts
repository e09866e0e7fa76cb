// Flag parsing shared by the `hire` commands (main, export, serve, sparsity flags): strict parseArgs whose errors
// are UsageErrors, number and integer flags with the flag's name in the message, and the model
// folder (--model, else the built-in default model).
import { parseArgs, type ParseArgsConfig } from "node:util";
import { basename, dirname, resolve } from "node:path";
import { existsSync, readFileSync, statSync } from "node:fs";
import { loadModel, type LoadedModel } from "../loader/model-folder.js";
import { modelFolderFor } from "../loader/model-source.js";
import { defaultModelDir } from "../loader/default-model.js";
import { isWeightChoice, WEIGHT_CHOICES, type WeightChoice } from "../loader/weight-format.js";
import { UsageError } from "../loader/errors.js";
import { isKvDtype, KV_DTYPES, type KvDtype } from "../backend/backend.js";
import { MAX_THREADS } from "../backend/cpu.js";
import { choice, compileSchema, wholeRegex, type Node as Grammar } from "../structured/schema.js";
import { compileGbnf } from "../structured/gbnf.js";

/** The flags that choose and load the model: --model DIR (or FILE.gguf), and --mmap to map the weight files instead of reading them in. */
export const MODEL_FLAGS = {
  model: { type: "string" },
  mmap: { type: "boolean" },
} as const satisfies ParseArgsConfig["options"];

/** MODEL_FLAGS and --weights file|int8|int4|auto (how the loaded model keeps its matrices), for the commands that run it. */
export const RUN_MODEL_FLAGS = {
  ...MODEL_FLAGS,
  weights: { type: "string" },
} as const satisfies ParseArgsConfig["options"];

/** --weights file|int8|int4|auto (undefined when not given: the commands then load with "auto"). */
export const weightsFlag = (v: string | undefined): WeightChoice | undefined => {
  if (v === undefined) return undefined;
  if (!isWeightChoice(v)) throw new UsageError(`--weights must be one of ${WEIGHT_CHOICES.join(", ")}, got "${v}"`);
  return v;
};

/** Loads --model (a folder, a repo id in the Hugging Face cache, or a .gguf file, imported once). */
export async function openModel(v: { model?: string; mmap?: boolean; weights?: string }): Promise<LoadedModel> {
  const weights = weightsFlag(v.weights) ?? "auto";
  let shown = -1;
  const dir = await modelFolderFor(v.model ?? defaultModelDir(), (file, done, total) => {
    // A percentage on a terminal; one line at the start and one at the end otherwise.
    const pct = Math.floor((100 * done) / total);
    if (pct === shown || (!process.stderr.isTTY && pct !== 0 && pct !== 100)) return;
    shown = pct;
    const line = `importing ${basename(file)} (once; kept in the cache): ${pct} %`;
    process.stderr.write(process.stderr.isTTY ? `\r${line}${pct === 100 ? "\n" : ""}` : `${line}\n`);
  });
  return loadModel(dir, { mmap: v.mmap, weights });
}

export const num = (name: string, v: string | undefined): number | undefined => {
  if (v === undefined) return undefined;
  const x = Number(v);
  if (v.trim() === "" || !Number.isFinite(x)) throw new UsageError(`--${name} must be a number, got "${v}"`);
  return x;
};

/** An integer flag, optionally within [min, max]. */
export const int = (name: string, v: string | undefined, range?: [number, number]): number | undefined => {
  const x = num(name, v);
  if (x !== undefined && !Number.isInteger(x)) throw new UsageError(`--${name} must be an integer, got "${v}"`);
  if (x !== undefined && range && (x < range[0] || x > range[1]))
    throw new UsageError(`--${name} must be an integer in ${range[0]}..${range[1]}, got "${v}"`);
  return x;
};

/** An integer flag that must be at least 1. */
export const positiveInt = (name: string, v: string | undefined): number | undefined => {
  const x = int(name, v);
  if (x !== undefined && x < 1) throw new UsageError(`--${name} must be a positive integer, got "${v}"`);
  return x;
};

/** --threads N: the native thread pool's size. */
export const threadsFlag = (v: string | undefined): number | undefined => int("threads", v, [1, MAX_THREADS]);

/** --kv-cache f32|f16: the KV cache's element type. */
export const kvCacheFlag = (v: string | undefined): KvDtype | undefined => {
  if (v === undefined) return undefined;
  if (!isKvDtype(v)) throw new UsageError(`--kv-cache must be one of ${KV_DTYPES.join(", ")}, got "${v}"`);
  return v;
};

/** A number that may also be written as a percentage: "0.1" or "10%" (k flags). */
export const fraction = (name: string, v: string | undefined): number | undefined =>
  v?.endsWith("%") ? num(name, v.slice(0, -1))! / 100 : num(name, v);

/**
 * An output file flag's value checked before any work: its folder must exist, and the path must not
 * be a folder (the write would fail only after the export or evaluation had run).
 */
export function outputFile(flag: string, path: string): void {
  if (path === "") throw new UsageError(`--${flag} needs a file name`);
  const folder = dirname(resolve(path));
  if (!(existsSync(folder) && statSync(folder).isDirectory()))
    throw new UsageError(`--${flag}: folder ${folder} does not exist`);
  if (existsSync(path) && statSync(path).isDirectory())
    throw new UsageError(`--${flag}: ${path} is a folder; give the file to write`);
}

export function parse<T extends ParseArgsConfig["options"]>(argv: string[], options: T) {
  try {
    return parseArgs({ args: argv, options, strict: true, allowPositionals: false }).values;
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

/**
 * --schema: a JSON Schema the reply must be a document of (structured output), given inline (text
 * starting with "{") or as a file. Absent: free text.
 */
/**
 * The grammar a reply is held to: --schema FILE|JSON, --regex PATTERN (the whole reply),
 * --choice A,B,... (exactly one of them) or --grammar FILE|GBNF; at most one of them.
 */
export function grammarFlags(v: {
  schema?: string;
  regex?: string;
  choice?: string;
  grammar?: string;
}): Grammar | undefined {
  const given = (["schema", "regex", "choice", "grammar"] as const).filter((k) => v[k] !== undefined);
  if (given.length > 1) throw new UsageError(`give one of ${given.map((k) => `--${k}`).join(", ")}, not several`);
  if (v.regex !== undefined) {
    try {
      return wholeRegex(v.regex);
    } catch (e) {
      throw new UsageError(`--regex: ${(e as Error).message}`);
    }
  }
  if (v.grammar !== undefined) {
    // A file, or the grammar itself (it has a "::=" where a path would not).
    const inline = v.grammar.includes("::=");
    let text = v.grammar;
    if (!inline) {
      try {
        text = readFileSync(v.grammar, "utf8");
      } catch (e) {
        throw new UsageError(
          `--grammar ${v.grammar}: cannot read the file (${(e as NodeJS.ErrnoException).code ?? e})`,
        );
      }
    }
    try {
      return compileGbnf(text);
    } catch (e) {
      throw new UsageError(`--grammar ${inline ? "(inline)" : v.grammar}: ${(e as Error).message}`);
    }
  }
  if (v.choice !== undefined) {
    const options = v.choice.split(",").filter((c) => c !== "");
    if (options.length === 0) throw new UsageError("--choice: give the options, separated by commas");
    return choice(options);
  }
  return schemaFlag(v.schema);
}

function schemaFlag(flag: string | undefined): Grammar | undefined {
  if (flag === undefined) return undefined;
  const inline = flag.trimStart().startsWith("{");
  let text = flag;
  if (!inline) {
    try {
      text = readFileSync(flag, "utf8");
    } catch (e) {
      throw new UsageError(`--schema ${flag}: cannot read the file (${(e as NodeJS.ErrnoException).code ?? e})`);
    }
  }
  let schema: unknown;
  try {
    schema = JSON.parse(text);
  } catch (e) {
    throw new UsageError(`--schema ${inline ? "(inline)" : flag}: not JSON (${(e as Error).message})`);
  }
  try {
    return compileSchema(schema);
  } catch (e) {
    throw new UsageError(`--schema ${inline ? "(inline)" : flag}: ${(e as Error).message}`);
  }
}
