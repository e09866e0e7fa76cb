// Loading a Hugging Face model folder: config.json → architecture → weights (read into memory, or
// mapped with `mmap`; validated against the config) → tokenizer and generation defaults. One
// function, `loadModel`, and every failure is a ModelError naming the file (and tensor).
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { ARCHITECTURES, type ModelConfig, type ModelWeights } from "../arch/index.js";
import { attentionBytes, layerFfnBytes } from "../arch/config.js";
import { GREEDY, validateSampling } from "../engine/sampler.js";
import { ModelError } from "./errors.js";
import { quantizedBlockSource, quantizedImportRecord, quantScheme, quantSchemeOf } from "./quantized-import.js";
import { findModelFolder } from "./hf-cache.js";
import { isObject, readJsonFile } from "./json.js";
import { WeightStore } from "./safetensors.js";
import { autoWeightFormat, quantizedWeights, type WeightChoice, type WeightFormat } from "./weight-format.js";
import { importRecord, type ImportRecord } from "../gguf/import.js";
import { blockCopies, ggufBlockSource, type BlockCount } from "../gguf/block-weights.js";
import { ModelTokenizer } from "./tokenizer.js";

/** Sampling defaults a model ships in generation_config.json (all optional). */
export interface GenerationDefaults {
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  maxNewTokens?: number;
}

export interface LoadedModel {
  readonly dir: string;
  readonly config: ModelConfig;
  readonly weights: ModelWeights;
  readonly store: WeightStore;
  readonly tokenizer: ModelTokenizer;
  /** Every id that ends generation: config.json, generation_config.json and the tokenizer's eos_token. */
  readonly eosIds: ReadonlySet<number>;
  readonly generationDefaults: GenerationDefaults;
  /** Bytes of weights read per decoded token by the dense path (all matrices + the output layer). */
  readonly weightBytesPerToken: number;
  /** How the matrices are kept: the load's weights choice, "auto" resolved (resolveWeights). */
  readonly weightFormat: WeightFormat;
  /** For a GGUF import loaded quantized: the matrices taken from the file's blocks (core/gguf/block-weights.ts). */
  readonly blockCount?: BlockCount;
  close(): void;
}

/** model_type → class name, for configs without an "architectures" list. */
const MODEL_TYPES: Record<string, string> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
  smollm3: "SmolLM3ForCausalLM",
  phi3: "Phi3ForCausalLM",
  gpt2: "GPT2LMHeadModel",
  opt: "OPTForCausalLM",
};

export function readModelConfig(dir: string): ModelConfig {
  if (!existsSync(dir)) throw new ModelError("NOT_FOUND", dir, "model folder not found");
  if (!statSync(dir).isDirectory())
    throw new ModelError(
      "NOT_A_DIRECTORY",
      dir,
      "expected a model folder (config.json, *.safetensors, tokenizer.json)",
    );
  const file = join(dir, "config.json");
  if (!existsSync(file))
    throw new ModelError("NOT_FOUND", file, "config.json is missing; is this a Hugging Face model folder?");
  const raw = readJsonFile(file);
  if (!isObject(raw)) throw new ModelError("BAD_CONFIG", file, "config.json is not a JSON object");
  const archs = raw.architectures;
  const name =
    Array.isArray(archs) && typeof archs[0] === "string"
      ? archs[0]
      : typeof raw.model_type === "string"
        ? MODEL_TYPES[raw.model_type]
        : undefined;
  if (name === undefined)
    throw new ModelError("BAD_CONFIG", file, `neither "architectures" nor a known "model_type" is given`);
  const arch = ARCHITECTURES[name];
  if (!arch) {
    throw new ModelError(
      "UNSUPPORTED_ARCHITECTURE",
      file,
      `architecture ${name} is not supported (supported: ${Object.keys(ARCHITECTURES).join(", ")})`,
    );
  }
  checkNotQuantized(raw.quantization_config, file);
  return arch.parseConfig(raw, file);
}

/**
 * A checkpoint whose config.json carries a `quantization_config` stores packed tensors that only
 * its own kernels read; without this check the first such tensor would fail as a bare "dtype I32 is
 * not supported". FP8, GPTQ, AWQ, compressed-tensors and bitsandbytes ones are read through an
 * import (quantized-import.ts); every other quant_method packs its weights, so any of them is refused.
 */
function checkNotQuantized(q: unknown, file: string): void {
  if (q === undefined || q === null || quantScheme(q, file)) return;
  const method = isObject(q) && typeof q.quant_method === "string" ? q.quant_method : "unknown";
  const bits = isObject(q) && typeof q.bits === "number" ? ` ${q.bits}-bit` : "";
  throw new ModelError(
    "UNSUPPORTED_QUANTIZATION",
    file,
    `this checkpoint is quantized (quantization_config: quant_method "${method}"${bits}), which only its own ` +
      `kernels read; load the unquantized model (--weights int8 or int4 quantizes it here) or a GGUF file of it`,
  );
}

export interface LoadOptions {
  /**
   * Map the weight files instead of reading them into memory (less RAM in use, slower decode on some
   * machines). Default: false, but true with int8 weights.
   */
  mmap?: boolean;
  /** "int8"/"int4": every linear layer as quantized copies (weight-format.ts); "auto": see resolveWeights; default "file": as stored. */
  weights?: WeightChoice;
}

/**
 * The format a load uses for `choice`, `record` being the folder's import record (importRecord or
 * quantizedImportRecord, or the plan of an import still to come): "auto" is what the record says its
 * matrices allow (int4 where they are 4-bit blocks, int8 for an import of other quantized types, the
 * file otherwise; see autoWeightsOf in core/gguf/import.ts and importQuantized), or for a record
 * that does not say, what its source types suggest (autoWeightFormat); "file" for a folder that is
 * no import.
 */
export function resolveWeights(
  choice: WeightChoice,
  record: (Pick<ImportRecord, "sourceTypes"> & { autoWeights?: WeightFormat }) | undefined,
): WeightFormat {
  return choice === "auto" ? (record?.autoWeights ?? autoWeightFormat(record?.sourceTypes)) : choice;
}

/** `folder`: a model folder, or a repo id ("org/name[@revision]") already in the Hugging Face cache. */
export function loadModel(folder: string, options: LoadOptions = {}): LoadedModel {
  const dir = findModelFolder(folder);
  let config = readModelConfig(dir);
  const scheme = quantSchemeOf(dir);
  if (scheme) {
    throw new ModelError(
      "UNSUPPORTED_QUANTIZATION",
      join(dir, "config.json"),
      `a quantized checkpoint (${scheme.method}) is read through its import: open the folder with modelFolderFor, as the CLI and the app do`,
    );
  }
  const tokenizer = ModelTokenizer.load(dir);
  // Quantized weights read each file matrix once, to quantize it: mapping the files (unless told)
  // keeps a load's peak memory near the copies' instead of the whole file read in first (1B shape,
  // int8: max RSS 1.86 GB mapped against 2.50 read in; 2.76 for the file's bf16).
  const record = importRecord(dir);
  const quantized = record ? undefined : quantizedImportRecord(dir);
  const format = resolveWeights(options.weights ?? "file", record ?? quantized);
  const store = WeightStore.open(dir, { mmap: options.mmap ?? format !== "file" });
  try {
    const dtype = store.storedDType(
      config.dtype,
      join(dir, "config.json"),
      ARCHITECTURES[config.architecture].f32Tensors,
    );
    if (dtype !== config.dtype) config = { ...config, dtype }; // what the weights are, whatever config.json says
    const bound = ARCHITECTURES[config.architecture].bindWeights(config, store);
    const blocks =
      format === "file"
        ? undefined
        : blockCopies(ggufBlockSource(dir, record) ?? quantizedBlockSource(dir, quantized), store);
    const weights = format === "file" ? bound : quantizedWeights(bound, format, blocks);
    const gen = readGenerationConfig(dir);
    const eosIds = new Set<number>([...config.eosTokenIds, ...gen.eosIds]);
    const eosFromTokenizer = tokenizer.eosToken === undefined ? undefined : tokenizer.tokenId(tokenizer.eosToken);
    if (eosFromTokenizer !== undefined) eosIds.add(eosFromTokenizer);
    return {
      dir,
      config,
      weights,
      store,
      tokenizer,
      eosIds,
      generationDefaults: gen.defaults,
      weightBytesPerToken: bytesPerToken(weights, config),
      weightFormat: format,
      ...(blocks && blocks.count.of > 0 && { blockCount: blocks.count }),
      close: () => store.close(),
    };
  } catch (e) {
    store.close();
    throw e;
  }
}

function readGenerationConfig(dir: string): { eosIds: number[]; defaults: GenerationDefaults } {
  const file = join(dir, "generation_config.json");
  if (!existsSync(file)) return { eosIds: [], defaults: {} };
  const raw = readJsonFile(file);
  if (!isObject(raw)) throw new ModelError("BAD_JSON", file, "not a JSON object");
  const num = (k: string) => (typeof raw[k] === "number" && Number.isFinite(raw[k]) ? (raw[k] as number) : undefined);
  const eos = raw.eos_token_id;
  const eosIds = (Array.isArray(eos) ? eos : [eos]).filter((x): x is number => Number.isSafeInteger(x));
  // do_sample: false means the model's authors intend greedy decoding.
  const temperature = raw.do_sample === false ? 0 : num("temperature");
  const defaults: GenerationDefaults = {
    temperature,
    topK: num("top_k"),
    topP: num("top_p"),
    minP: num("min_p"),
    repetitionPenalty: num("repetition_penalty"),
    maxNewTokens: num("max_new_tokens"),
  };
  // A default out of range would fail every reply later with no file named; say so at load.
  try {
    validateSampling({ ...GREEDY, temperature: 1, ...defined(defaults) });
  } catch (e) {
    throw new ModelError("BAD_CONFIG", file, (e as Error).message.replace(/^sampling: /, ""));
  }
  const max = defaults.maxNewTokens;
  if (max !== undefined && !(Number.isSafeInteger(max) && max > 0)) {
    throw new ModelError("BAD_CONFIG", file, `max_new_tokens must be a positive integer, got ${max}`);
  }
  return { eosIds, defaults };
}

/** o without its undefined fields, so that spreading it keeps the values underneath. */
function defined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Dense decode reads every layer matrix once per token, plus the output layer (not the embedding lookup). */
function bytesPerToken(w: ModelWeights, c: ModelConfig): number {
  let bytes = w.head.w.byteLength;
  for (const l of w.layers) {
    bytes += attentionBytes(l) + layerFfnBytes(l, c);
  }
  return bytes;
}
