// The llama.cpp peer: the model exported to GGUF (core/gguf/export.ts, same dtype as its weights)
// and run on the CPU by node-llama-cpp, fed our token ids directly (no text, no chat template),
// decoding greedily. node-llama-cpp is an optional dependency with prebuilt binaries; it is loaded
// with everything that could download or compile turned off, and anything missing (the package,
// its binary for this platform, an architecture llama.cpp cannot run) makes the peer `skipped`
// with the reason rather than an error.
import { existsSync, mkdirSync } from "node:fs";
import { availableParallelism } from "node:os";
import { basename, join } from "node:path";
import type { LoadedModel } from "../loader/model-folder.js";
import { ModelError } from "../loader/errors.js";
import { weightFiles } from "../loader/safetensors.js";
import { exportGguf, ggufArchitecture, sourceDtype, type GgufDType } from "../gguf/export.js";
import { importSource } from "../gguf/import.js";
import { cacheDir as cacheDirOf, filesKey } from "../sparse/cache.js";
import type { Peer, PeerOpenResult, PeerRun } from "./peer.js";

export interface LlamaCppPeerOptions {
  /** CPU threads for llama.cpp (default: all, as our CPU backend). */
  threads?: number;
  /** Where exported GGUF files are kept (default: $HIRE_CACHE_DIR/gguf, else ~/.cache/hire-studio/gguf). */
  cacheDir?: string;
  /** Context window to allocate (default: the model's, capped at 4096). */
  contextSize?: number;
  /**
   * llama.cpp's defaults (flash attention on the CPU, an F16 KV cache) are what a user of
   * llama.cpp gets, so the benchmark uses them; they round attention to F16. `false` / "f32"
   * compute attention in F32 (the tests compare log-probabilities that way).
   */
  flashAttention?: boolean;
  kvCacheType?: "f16" | "f32";
}

// The slice of node-llama-cpp's API used here, typed locally so this file compiles (and the peer
// reports `skipped`) when the optional package is not installed.
type Token = number;
export interface NlcSequence {
  clearHistory(): Promise<void>;
  evaluate(tokens: Token[], options: { temperature: number; yieldEogToken: boolean }): AsyncGenerator<Token>;
  /**
   * Evaluates the tokens in one batch; an entry given as [token, options] asks there for the next
   * token (sampled with `options`) or the probabilities of every token.
   */
  controlledEvaluate(
    input: (
      Token | [Token, { generateNext: { token?: boolean; probabilities?: boolean; options?: Record<string, number> } }]
    )[],
  ): Promise<({ next: { token?: Token | null; probabilities?: Map<number, number> } } | undefined)[]>;
}
export interface NlcContext {
  readonly contextSize: number;
  getSequence(): NlcSequence;
  dispose(): Promise<void>;
}
export interface NlcModel {
  /** Token ids of text, as llama.cpp's tokenizer makes them (special: special tokens' texts become their ids). */
  tokenize(text: string, special?: boolean): Token[];
  createContext(options: {
    contextSize: number;
    batchSize: number;
    threads: number;
    sequences: number;
    flashAttention?: boolean;
    experimentalKvCacheKeyType?: string;
    experimentalKvCacheValueType?: string;
  }): Promise<NlcContext>;
  dispose(): Promise<void>;
}
export interface NlcLlama {
  readonly llamaCppRelease: { release: string };
  loadModel(options: { modelPath: string; gpuLayers: number; useMmap?: boolean }): Promise<NlcModel>;
  dispose(): Promise<void>;
}
interface NlcModule {
  getLlama(options: Record<string, unknown>): Promise<NlcLlama>;
}

const PACKAGE = "node-llama-cpp";
/** The files an export's config and vocabulary come from (filesKey skips those a folder lacks). */
const TOKENIZER_FILES = [
  "config.json",
  "tokenizer.json",
  "tokenizer.model",
  "vocab.json",
  "merges.txt",
  "tokenizer_config.json",
  "special_tokens_map.json",
];
/** Bumped when the exporter's output changes, so cached files are rewritten. */
const EXPORT_VERSION = 1;

/**
 * The cached GGUF for this model and dtype, exported if missing. The key covers the folder, the
 * size and mtime of every file the export reads, and the exporter version.
 */
export async function cachedGguf(model: LoadedModel, dtype: GgufDType, cacheDir = cacheDirOf("gguf")): Promise<string> {
  const inputs = [...weightFiles(model.dir), ...TOKENIZER_FILES.map((f) => join(model.dir, f))];
  const key = filesKey(inputs, { v: EXPORT_VERSION, dtype });
  mkdirSync(cacheDir, { recursive: true });
  const file = join(cacheDir, `${basename(model.dir)}-${dtype}-${key}.gguf`);
  if (!existsSync(file)) await exportGguf(model, file, { dtype });
  return file;
}

async function importNodeLlamaCpp(): Promise<NlcModule | string> {
  try {
    const spec: string = PACKAGE; // a variable, so TypeScript does not need the optional package's types
    return (await import(spec)) as NlcModule;
  } catch (e) {
    return `${PACKAGE} is not installed (${firstLine(e)})`;
  }
}

function firstLine(e: unknown): string {
  return String(e instanceof Error ? e.message : e).split("\n")[0];
}

/** A CPU-only llama.cpp from node-llama-cpp's prebuilt binaries, or why there is none here. */
export async function loadLlamaCpp(
  threads?: number,
): Promise<{ llama: NlcLlama; logs: string[] } | { skipped: string }> {
  const mod = await importNodeLlamaCpp();
  if (typeof mod === "string") return { skipped: mod };
  const logs: string[] = [];
  try {
    const llama = await mod.getLlama({
      gpu: false, // the CPU build only: our engine is CPU-only, and this never probes CUDA/Vulkan
      build: "never", // never compile llama.cpp from source
      skipDownload: true, // never fetch its sources
      usePrebuiltBinaries: true,
      progressLogs: false,
      ...(threads !== undefined && { maxThreads: threads }),
      logLevel: "warn",
      logger: (level: string, message: string) => {
        logs.push(`${level}: ${message.trim()}`);
        if (logs.length > 20) logs.shift();
      },
    });
    return { llama, logs };
  } catch (e) {
    return {
      skipped: `${PACKAGE} has no usable llama.cpp binary for ${process.platform}-${process.arch} (${firstLine(e)})`,
    };
  }
}

export async function openLlamaCppPeer(model: LoadedModel, opts: LlamaCppPeerOptions = {}): Promise<PeerOpenResult> {
  try {
    ggufArchitecture(model.config, join(model.dir, "config.json"));
  } catch (e) {
    if (e instanceof ModelError) return { skipped: `llama.cpp: ${e.message}` };
    throw e;
  }
  const threads = opts.threads ?? availableParallelism();
  const loaded = await loadLlamaCpp(threads);
  if ("skipped" in loaded) return loaded;
  const { llama, logs } = loaded;

  // A model imported from a GGUF file runs in llama.cpp from that file, as it is (quantized),
  // whatever weights our load keeps; any other model is exported from its file's matrices.
  const source = importSource(model.dir);
  const dtype = source ? undefined : sourceDtype(model, "the llama.cpp peer");
  let nlcModel: NlcModel | undefined;
  // Past this point nothing is expected to fail; if something does (a GGUF llama.cpp rejects, a
  // full disk), the benchmark still runs without this peer, and the tests fail on the reason.
  const what = source ? `${basename(source.file)} (${mainTypes(source.sourceTypes)})` : `${dtype} GGUF`;
  try {
    const file = source?.file ?? (await cachedGguf(model, dtype!, opts.cacheDir));
    // Weights read into memory, as our engine loads them by default (core/native/src/mapping.h), so
    // the two stream the same kind of memory; with mmap both are at the mercy of the page cache.
    nlcModel = await llama.loadModel({ modelPath: file, gpuLayers: 0, useMmap: false });
    const contextSize = Math.min(model.config.maxPositions, opts.contextSize ?? 4096);
    const kv = opts.kvCacheType?.toUpperCase();
    const context = await nlcModel.createContext({
      contextSize,
      batchSize: Math.min(contextSize, 512),
      threads,
      sequences: 1,
      ...(opts.flashAttention !== undefined && { flashAttention: opts.flashAttention }),
      ...(kv && { experimentalKvCacheKeyType: kv, experimentalKvCacheValueType: kv }),
    });
    const version = llama.llamaCppRelease.release;
    return {
      peer: new LlamaCppPeer(
        llama,
        nlcModel,
        context,
        model.config.vocab,
        `llama.cpp ${version} CPU, ${what} read in (no mmap), ${threads} threads`,
      ),
    };
  } catch (e) {
    await nlcModel?.dispose().catch(() => undefined);
    await llama.dispose().catch(() => undefined);
    if (e instanceof ModelError) return { skipped: `llama.cpp: ${e.message}` };
    const detail = logs.length ? `; llama.cpp said: ${logs.slice(-3).join(" | ")}` : "";
    return { skipped: `llama.cpp could not load the exported model: ${firstLine(e)}${detail}` };
  }
}

class LlamaCppPeer implements Peer {
  readonly name = "llamacpp";
  private readonly sequence: NlcSequence;
  private closed = false;

  constructor(
    private readonly llama: NlcLlama,
    private readonly model: NlcModel,
    private readonly context: NlcContext,
    private readonly vocab: number,
    readonly detail: string,
  ) {
    this.sequence = context.getSequence();
  }

  async decode(promptIds: number[], nTokens: number): Promise<PeerRun> {
    if (this.closed) throw new Error("llama.cpp peer is closed");
    if (promptIds.length === 0) throw new RangeError("the prompt must have at least one token");
    if (!Number.isInteger(nTokens) || nTokens < 1)
      throw new RangeError(`nTokens must be a positive integer, got ${nTokens}`);
    const bad = promptIds.find((id) => !Number.isInteger(id) || id < 0 || id >= this.vocab);
    if (bad !== undefined) throw new RangeError(`token id ${bad} is outside the vocabulary of ${this.vocab}`);
    if (promptIds.length + nTokens > this.context.contextSize) {
      throw new RangeError(
        `${promptIds.length} prompt + ${nTokens} new tokens exceed llama.cpp's context of ${this.context.contextSize}`,
      );
    }
    await this.sequence.clearHistory();
    const ids: number[] = [];
    const t0 = performance.now();
    let tFirst = t0;
    // Greedy (temperature 0); EOS is generated like any token, as in our bench's decode loop.
    for await (const token of this.sequence.evaluate(promptIds as Token[], { temperature: 0, yieldEogToken: true })) {
      if (ids.length === 0) tFirst = performance.now();
      ids.push(token);
      if (ids.length >= nTokens) break;
    }
    const tEnd = performance.now();
    // Prefill: the prompt's forward pass up to the first token. Decode: each later token is one
    // single-token forward pass (the generator evaluates the previous token when resumed).
    const steps = ids.length - 1;
    return {
      ids,
      tokensPerSecond: steps > 0 ? (steps * 1000) / (tEnd - tFirst) : 0,
      prefillTokensPerSecond: (promptIds.length * 1000) / (tFirst - t0),
    };
  }

  async follow(promptIds: number[], ids: number[]): Promise<number[]> {
    if (this.closed) throw new Error("llama.cpp peer is closed");
    if (ids.length === 0) return [];
    const input = [...promptIds, ...ids.slice(0, -1)] as Token[];
    if (input.length > this.context.contextSize)
      throw new RangeError(`${input.length} tokens exceed llama.cpp's context of ${this.context.contextSize}`);
    await this.sequence.clearHistory();
    const greedy = { generateNext: { token: true, options: { temperature: 0 } } };
    const out = await this.sequence.controlledEvaluate(
      input.map((id, i) => (i >= promptIds.length - 1 ? ([id, greedy] as [Token, typeof greedy]) : id)),
    );
    return ids.map((_, k) => out[promptIds.length - 1 + k]?.next.token ?? -1);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.context.dispose();
    await this.model.dispose();
    await this.llama.dispose();
  }
}

/** A file's ggml types, most tensors first ("Q4_K+Q6_K+F32"). */
function mainTypes(types: Record<string, number>): string {
  return Object.entries(types)
    .sort((a, b) => b[1] - a[1])
    .map(([t]) => t)
    .join("+");
}
