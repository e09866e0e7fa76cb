// The ONNX Runtime peers: the model exported by core/onnx/export.ts (f32 weights, KV cache as
// inputs/outputs) and run by onnxruntime-node. "ort" is the dense graph; "ort-hire" the same model
// with HiRE expressed in ONNX ops (MatMulNBits predictor → TopK → Gather → exact rows → TopK →
// Gather of W_down columns; the same on the output layer). Exports are cached by a key over the
// model files' size and mtime, the settings and the exporter version, so a second bench run only
// opens a session.
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import type { LoadedModel } from "../loader/model-folder.js";
import { UsageError } from "../loader/errors.js";
import { weightFiles } from "../loader/safetensors.js";
import { ONNX_EXPORT_VERSION, exportOnnx, type OnnxExportResult } from "../onnx/export.js";
import { OrtError } from "../onnx/errors.js";
import { OrtRunner, type ExecutionProvider } from "../onnx/ort-runner.js";
import type { DeepPartial, SparsitySettings } from "../sparse/settings.js";
import { cacheDir as cacheDirOf, filesKey } from "../sparse/cache.js";
import type { Peer, PeerOpenResult, PeerRun } from "./peer.js";

export interface OrtPeerOptions {
  /** HiRE settings (FFN and/or head method "hire"): the "ort-hire" peer. Absent: the dense "ort". */
  hire?: DeepPartial<SparsitySettings>;
  ep?: ExecutionProvider;
  /** Intra-op threads (default: all cores, as our CPU backend). */
  threads?: number;
  /** Where exports are kept (default: $HIRE_CACHE_DIR/onnx, else ~/.cache/hire-studio/onnx). */
  cacheDir?: string;
}

/**
 * The cached export of `model` with these settings, written if missing: <cacheDir>/<key>/model.onnx
 * (+ .data). The export goes to a temporary folder renamed into place, so an interrupted export is
 * never reused.
 */
export function cachedOnnx(
  model: LoadedModel,
  hire: DeepPartial<SparsitySettings> | undefined,
  cacheDir = cacheDirOf("onnx"),
): OnnxExportResult {
  const key = filesKey([...weightFiles(model.dir), join(model.dir, "config.json")], {
    v: ONNX_EXPORT_VERSION,
    hire: hire ?? null,
    last: true,
  });
  const dir = join(cacheDir, key);
  const meta = join(dir, "export.json");
  if (existsSync(meta)) {
    try {
      return JSON.parse(readFileSync(meta, "utf8")) as OnnxExportResult;
    } catch {
      rmSync(dir, { recursive: true, force: true });
    }
  }
  mkdirSync(cacheDir, { recursive: true });
  const tmp = join(cacheDir, `${key}.${process.pid}.tmp`);
  rmSync(tmp, { recursive: true, force: true });
  let r: OnnxExportResult;
  try {
    r = exportOnnx(model, join(tmp, "model.onnx"), { hire, lastTokenLogits: true });
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir); // the .onnx names its data file relatively, so the pair moves together
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  const result: OnnxExportResult = { ...r, file: join(dir, "model.onnx"), dataFile: join(dir, "model.onnx.data") };
  writeFileSync(meta, JSON.stringify(result));
  return result;
}

export async function openOrtPeer(model: LoadedModel, opts: OrtPeerOptions = {}): Promise<PeerOpenResult> {
  const sparse = opts.hire?.ffn?.method === "hire" || opts.hire?.head?.method === "hire";
  const name = sparse ? "ort-hire" : "ort";
  const ep = opts.ep ?? "cpu";
  const threads = opts.threads ?? availableParallelism();
  let exported: OnnxExportResult;
  try {
    exported = cachedOnnx(model, sparse ? opts.hire : undefined, opts.cacheDir);
  } catch (e) {
    if (e instanceof UsageError) return { skipped: `${name}: ${e.message}` };
    throw e;
  }
  let runner: OrtRunner;
  try {
    runner = await OrtRunner.open(exported.file, { ep, threads });
  } catch (e) {
    if (e instanceof OrtError) return { skipped: `${name}: ${e.message}` };
    throw e;
  }
  const what = sparse ? hireDetail(exported.hire, model.config) : "dense";
  return {
    peer: new OrtPeer(name, runner, exported.maxContext, `onnxruntime ${ep}, f32 weights, ${threads} threads, ${what}`),
  };
}

/** "ffn hire k=70/704 (k'=140), int4:32; head hire k=128 (k'=512), int4:32" from the export's summary. */
function hireDetail(h: OnnxExportResult["hire"], c: LoadedModel["config"]): string {
  const parts: string[] = [];
  if (h.ffn) parts.push(`ffn hire k=${h.ffn.k[0]}/${c.intermediate} (k'=${h.ffn.candidates[0]}), ${h.ffn.predictor}`);
  if (h.head) parts.push(`head hire k=${h.head.k} (k'=${h.head.candidates}), ${h.head.predictor}`);
  return parts.join("; ");
}

class OrtPeer implements Peer {
  private closed = false;

  constructor(
    readonly name: string,
    private readonly runner: OrtRunner,
    private readonly maxContext: number,
    readonly detail: string,
  ) {}

  async decode(promptIds: number[], nTokens: number): Promise<PeerRun> {
    if (this.closed) throw new Error(`${this.name} peer is closed`);
    if (promptIds.length === 0) throw new RangeError("the prompt must have at least one token");
    if (!Number.isInteger(nTokens) || nTokens < 1)
      throw new RangeError(`nTokens must be a positive integer, got ${nTokens}`);
    const bad = promptIds.find((id) => !Number.isInteger(id) || id < 0 || id >= this.runner.vocab);
    if (bad !== undefined) throw new RangeError(`token id ${bad} is outside the vocabulary of ${this.runner.vocab}`);
    if (promptIds.length + nTokens > this.maxContext)
      throw new RangeError(
        `${promptIds.length} prompt + ${nTokens} new tokens exceed the exported context of ${this.maxContext}`,
      );
    const r = await this.runner.greedy(promptIds, nTokens);
    return {
      ids: r.ids,
      tokensPerSecond: r.decodeRuns > 0 ? (r.decodeRuns * 1000) / r.decodeMs : 0,
      prefillTokensPerSecond: (promptIds.length * 1000) / r.prefillMs,
    };
  }

  async follow(promptIds: number[], ids: number[]): Promise<number[]> {
    if (this.closed) throw new Error(`${this.name} peer is closed`);
    if (promptIds.length + ids.length > this.maxContext)
      throw new RangeError(`${promptIds.length + ids.length} tokens exceed the exported context of ${this.maxContext}`);
    return this.runner.follow(promptIds, ids);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.runner.close();
  }
}
