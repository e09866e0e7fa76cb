// Which backend runs the model: `cpu`, `cuda` (or `cuda:N` for device N), or `auto`, which takes
// the first GPU when this build has CUDA and the machine has a device, and the CPU otherwise.
// HIRE_BACKEND sets the default for every command and the app.
import type { Backend } from "./backend.js";
import { CpuBackend } from "./cpu.js";
import { CudaBackend, cudaDevices } from "./cuda.js";
import { isQuantDType } from "../loader/weight-format.js";

export type BackendChoice = "auto" | "cpu" | "cuda" | `cuda:${number}`;

/** A malformed backend choice (a CLI flag or HIRE_BACKEND). */
export class BackendChoiceError extends Error {
  readonly code = "BAD_BACKEND";
  constructor(message: string) {
    super(message);
    this.name = "BackendChoiceError";
  }
}

export function parseBackendChoice(text: string, source = "--backend"): BackendChoice {
  const t = text.trim().toLowerCase();
  if (t === "auto" || t === "cpu" || t === "cuda") return t;
  const m = /^cuda:(\d{1,4})$/.exec(t);
  if (m) return `cuda:${Number(m[1])}`;
  throw new BackendChoiceError(`${source}: "${text}" is not a backend (auto, cpu, cuda or cuda:N)`);
}

/** The choice in effect when none is given: HIRE_BACKEND, else auto. */
export function defaultBackendChoice(): BackendChoice {
  const env = process.env.HIRE_BACKEND;
  return env ? parseBackendChoice(env, "HIRE_BACKEND") : "auto";
}

export function createBackend(choice: BackendChoice = defaultBackendChoice(), threads?: number): Backend {
  if (choice === "cpu") return new CpuBackend(threads);
  if (choice === "auto") {
    const { devices } = cudaDevices();
    return devices.length > 0 ? new CudaBackend(devices[0].index) : new CpuBackend(threads);
  }
  return new CudaBackend(choice === "cuda" ? 0 : Number(choice.slice(5)));
}

/**
 * createBackend for a loaded model: `auto` (the default) picks the CPU backend for int8 and int4
 * weights, which only it runs; an explicit GPU choice then fails when the session starts, saying why.
 */
export function backendForModel(
  model: { readonly weights: { readonly head: { readonly w: { readonly dtype: string } } } },
  choice: BackendChoice = defaultBackendChoice(),
  threads?: number,
): Backend {
  return createBackend(choice === "auto" && isQuantDType(model.weights.head.w.dtype) ? "cpu" : choice, threads);
}
