// The evaluation panel: quality against k on a text the user gives (the host's `eval`, `hire eval`
// in the app): dense, then the live sparse settings at each k, with perplexity and recall.
import { createStore } from "zustand/vanilla";
import type { EvalRow } from "../../../core/engine/eval.js";

export interface EvaluationState {
  text: string;
  /** The values of k to try, as typed ("0.05, 0.1, 0.2"). */
  ksText: string;
  requestId: number | null;
  progress: { done: number; total: number } | null;
  rows: EvalRow[] | null;
  setText(text: string): void;
  setKsText(text: string): void;
  begin(requestId: number): void;
  setProgress(requestId: number, done: number, total: number): void;
  /** The evaluation ended: its rows, or none (failed or stopped). */
  end(rows: EvalRow[] | null): void;
}

export const DEFAULT_KS = "0.05, 0.1, 0.2, 0.5";

export function createEvaluationStore() {
  return createStore<EvaluationState>()((set) => ({
    text: "",
    ksText: DEFAULT_KS,
    requestId: null,
    progress: null,
    rows: null,
    setText: (text) => set({ text }),
    setKsText: (ksText) => set({ ksText }),
    begin: (requestId) => set({ requestId, progress: { done: 0, total: 1 }, rows: null }),
    setProgress: (requestId, done, total) =>
      set((s) => (s.requestId === requestId ? { progress: { done, total } } : {})),
    end: (rows) => set({ requestId: null, progress: null, rows }),
  }));
}

/**
 * The values of k in the box: positive numbers separated by commas or spaces (fractions of the
 * neurons, or counts); an Error saying what is wrong otherwise.
 */
export function parseKs(text: string): number[] | Error {
  const parts = text.split(/[\s,]+/).filter((p) => p !== "");
  if (parts.length === 0) return new Error("give at least one value of k");
  if (parts.length > 16) return new Error("at most 16 values of k");
  const ks = parts.map(Number);
  const bad = parts.find((p, i) => !(ks[i] > 0));
  if (bad !== undefined) return new Error(`"${bad}" is not a positive number`);
  return ks;
}
