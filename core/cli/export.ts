// `hire export --model DIR [--gguf OUT.gguf] [--onnx OUT.onnx [--onnx-hire]] [--dtype f32|f16|bf16|q8_0|q4_0|q4_k|q4_k_m]`: write a model in another
// engine's format. Each format is one entry in TARGETS, keyed by the flag that names its output
// file; several can be given at once (each gets the same model and --dtype). To add one (ONNX:
// `--onnx OUT.onnx`): add its flag to EXPORT_FLAGS and an entry to TARGETS.
import { existsSync, readdirSync, realpathSync, statSync } from "node:fs";
import { basename, join, resolve } from "node:path";
import { UsageError } from "../loader/errors.js";
import type { LoadedModel } from "../loader/model-folder.js";
import { exportGguf, type GgufDType } from "../gguf/export.js";
import { importRecord } from "../gguf/import.js";
import { quantizedImportRecord } from "../loader/quantized-import.js";
import { exportOnnx } from "../onnx/export.js";
import { MODEL_FLAGS, openModel, outputFile, parse } from "./flags.js";

export type ExportDType = "f32" | "f16" | "bf16" | "q8_0" | "q4_0" | "q4_k" | "q4_k_m";
const DTYPES: readonly ExportDType[] = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q4_k_m"];

export const EXPORT_FLAGS = {
  ...MODEL_FLAGS,
  dtype: { type: "string" },
  gguf: { type: "string" },
  onnx: { type: "string" },
  /** ONNX only: express the HiRE FFN/output layer in the graph (sparsity flags as for generate). */
  "onnx-hire": { type: "boolean" },
} as const;

interface ExportTarget {
  /** What the format is for, in the usage line. */
  readonly what: string;
  /** The files it writes for output `out`. */
  files(out: string): string[];
  /** Writes the file; returns a one-line summary ("llama, bf16, 21 tensors"). */
  write(
    model: LoadedModel,
    out: string,
    dtype: ExportDType | undefined,
    progress: Progress,
    options: { onnxHire: boolean },
  ): Promise<string>;
}

type Progress = (done: number, total: number) => void;

export const TARGETS: Record<
  Exclude<keyof typeof EXPORT_FLAGS, "model" | "mmap" | "dtype" | "onnx-hire">,
  ExportTarget
> = {
  gguf: {
    what: "llama.cpp",
    files: (out) => [out],
    async write(model, out, dtype, onProgress) {
      const r = await exportGguf(model, out, { dtype: dtype as GgufDType | undefined, onProgress });
      return `GGUF v3, ${r.architecture}, ${r.dtype}, ${r.tensors} tensors`;
    },
  },
  onnx: {
    what: "ONNX Runtime; f32 weights as external data",
    files: (out) => [out, `${out}.data`],
    async write(model, out, dtype, onProgress, options) {
      // ONNX Runtime's CPU kernels have no bf16 MatMul, and f16 measured no faster: weights are f32.
      if (dtype !== undefined && dtype !== "f32")
        throw new UsageError(`--onnx writes f32 weights; drop --dtype ${dtype}`);
      const hire = options.onnxHire
        ? { ffn: { method: "hire" as const }, head: { method: "hire" as const } }
        : undefined;
      const r = exportOnnx(model, out, { hire, onProgress });
      return `ONNX opset 17, ${r.layers} layers, ${(r.dataBytes / 1e6).toFixed(1)} MB of weights in ${basename(r.dataFile)}${hire ? ", HiRE FFN + output layer" : ""}`;
    },
  },
};

/** `f` with its links resolved where it exists (a snapshot's files are links to the cache's blobs). */
function realFile(f: string): string {
  try {
    return realpathSync(f);
  } catch {
    return f;
  }
}

/**
 * The files a model is read from: its folder's, and for an import the GGUF file or checkpoint folder
 * it came from, and the --model argument itself.
 */
function sourceFiles(dir: string, arg: string | undefined): Set<string> {
  const folders = [dir, quantizedImportRecord(dir)?.source].filter((d): d is string => d !== undefined);
  const files = folders.flatMap((d) => (existsSync(d) ? readdirSync(d).map((n) => join(d, n)) : []));
  const gguf = importRecord(dir)?.file;
  if (gguf) files.push(gguf);
  if (arg) files.push(resolve(arg));
  return new Set(files.map(realFile));
}

export const EXPORT_HELP = `--model DIR ${Object.entries(TARGETS)
  .map(([flag, t]) => `[--${flag} OUT.${flag} (${t.what})]`)
  .join(" ")} [--onnx-hire] [--dtype f32|f16|bf16|q8_0|q4_0|q4_k|q4_k_m]`;

export async function runExport(argv: string[]): Promise<void> {
  const v = parse(argv, EXPORT_FLAGS);
  const targets = (Object.keys(TARGETS) as (keyof typeof TARGETS)[]).filter((k) => v[k] !== undefined);
  if (targets.length === 0) {
    throw new UsageError(
      `name at least one output: ${Object.keys(TARGETS)
        .map((k) => `--${k} FILE`)
        .join(", ")}`,
    );
  }
  for (const k of targets) outputFile(k, v[k]!);
  const dtype = v.dtype as ExportDType | undefined;
  if (dtype !== undefined && !DTYPES.includes(dtype)) {
    throw new UsageError(`--dtype must be ${DTYPES.join(", ")}, got "${dtype}"`);
  }
  // Two outputs in one file would leave only the last one written.
  const writes = new Map<string, string>(); // file -> the flag that writes it
  for (const k of targets) {
    for (const f of TARGETS[k].files(resolve(v[k]!))) {
      const other = writes.get(f);
      if (other) throw new UsageError(`--${other} and --${k} would both write ${f}`);
      writes.set(f, `${k}`);
    }
  }
  // The exporters read the file's matrices (f32/f16/bf16), never quantized copies, whatever the model is.
  const model = await openModel({ ...v, weights: "file" });
  try {
    // Nor may an output replace a file the model is read from (the weights it is exporting).
    const sources = sourceFiles(model.dir, v.model);
    for (const [f, k] of writes) {
      if (sources.has(realFile(f)))
        throw new UsageError(`--${k} would overwrite ${f}, a file of the model being exported`);
    }
    for (const k of targets) {
      const out = v[k]!;
      const started = performance.now();
      let lastPct = -1;
      const summary = await TARGETS[k].write(
        model,
        out,
        dtype,
        (done, total) => {
          const pct = Math.floor((100 * done) / total);
          if (process.stderr.isTTY && pct !== lastPct) process.stderr.write(`\rwriting ${out} ${pct}%`);
          lastPct = pct;
        },
        { onnxHire: v["onnx-hire"] === true },
      );
      if (process.stderr.isTTY) process.stderr.write("\r\x1b[K");
      const { size } = statSync(out);
      process.stdout.write(
        `wrote ${out}: ${summary}, ${(size / 1e6).toFixed(1)} MB in ${((performance.now() - started) / 1000).toFixed(1)} s\n`,
      );
    }
  } finally {
    model.close();
  }
}
