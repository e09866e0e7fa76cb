// `exportGguf`: a loaded model as a GGUF v3 file that llama.cpp runs, with its tokenizer. The
// tensor names, metadata keys and layouts follow llama.cpp's convert_hf_to_gguf.py:
//   - llama (LlamaForCausalLM, MistralForCausalLM): q_proj/k_proj rows permuted per head from
//     Hugging Face's rotate-half rotary layout to llama.cpp's interleaved pairs (`permute`);
//     llama3 rope scaling as the rope_freqs tensor (per-frequency divisors), linear as metadata.
//   - smollm3: as llama; llama.cpp skips the rotary step in every 4th layer, so other no_rope_layers
//     lists are a ModelError (BAD_CONFIG).
//   - phi3: q/k/v and gate/up written back as the fused attn_qkv and ffn_up (gate rows first) that
//     llama.cpp reads, from the row views the engine uses; unpermuted (NEOX rotary). longrope (its
//     factors and attention factor) has no export here: a ModelError (BAD_CONFIG).
//   - qwen2, qwen3: no permutation (llama.cpp runs both with NEOX rotary, which is rotate-half);
//     qwen3's per-head q/k norms as attn_q_norm / attn_k_norm.
//   - gemma2, gemma3: NEOX rotary, post_attention_norm and post_ffw_norm, gemma3's attn_q_norm /
//     attn_k_norm; norms are written as the engine reads them, 1 + w (llama.cpp's converter adds
//     the 1 too); gemma2's soft caps as metadata. llama.cpp fixes what config.json may vary: sliding
//     windows in every other layer from the first (gemma2) or all but every 6th (gemma3), gemma3's
//     local rotary base of 10000, and 1/sqrt(head_dim) as the attention scale (27B: 1/sqrt(hidden /
//     heads)); other configs are a ModelError (BAD_CONFIG).
//   - gpt2: Conv1D weights ([in, out]) transposed to [out, in]; learned positions.
//   - granite: as llama, with the multipliers as the engine runs them folded (ModelConfig): the
//     embeddings' scale, the norms' eps and the final norm's weight carry them, so residual_scale
//     and logit_scale are written as 1 and llama.cpp computes what the engine does.
//   - gemma (1): NEOX rotary, norms as 1 + w as for gemma2/3, 1/sqrt(head_dim) attention.
//   - olmo2: NEOX rotary, no attn_norm/ffn_norm, post_attention_norm and post_ffw_norm, q/k norms
//     over the whole projection. exaone4: the same with per-head q/k norms, for a config without
//     sliding_window (every layer global, with positions); windowed ones are a ModelError
//     (BAD_CONFIG): no window pattern is written here for llama.cpp's exaone4.
//   - glm4 (GLM-4-0414): gate/up written back as the fused ffn_up, q/k as stored (llama.cpp turns
//     adjacent pairs), post_attention_norm and post_ffw_norm. GLM-4-9B's GlmForCausalLM is not
//     exported: llama.cpp's glm4 requires those two norms, which it does not have.
//   - ernie4_5: as llama but q/k as stored (llama.cpp turns adjacent pairs, as ERNIE does). ernie4_5-moe:
//     that with mixtures (below) after leading_dense_block_count dense layers, the correction bias as
//     exp_probs_b, the shared experts as ffn_*_shexp.
//   - command-r (Cohere), cohere2 (its windows and rotary step in all but every 4th layer, which
//     llama.cpp fixes; other layer_types are a ModelError): q/k rows as stored (llama.cpp turns adjacent rotary pairs, as Cohere
//     does), LayerNorms without bias, logit_scale 1 with the scale in the final norm's weight as the
//     engine runs it.
//   - stablelm, starcoder2, phi2, gptneox: LayerNorms with biases (attention.layer_norm_epsilon), NEOX rotary
//     over the partial rotary dims. phi2 runs attention and MLP on one norm, with the head's bias;
//     gptneox's fused q/k/v rows (and bias) go from head by head to all q, all k, all v, as the
//     converter reorders them for llama.cpp's views, and its blocks
//     side by side or not (use_parallel_residual). llama.cpp's gptneox computes GELU with the tanh
//     form whatever the checkpoint's is, as it does for every Pythia converted.
//   - mixtures of experts: Mixtral as llama and GraniteMoE(Shared) as granitemoe (q/k permuted, Granite's
//     multipliers folded as for granite; feed_forward_length is an expert's width), qwen2moe, qwen3moe, olmoe (NEOX rotary):
//     the router as ffn_gate_inp, the experts' matrices stacked into ffn_{gate,up,down}_exps
//     ([experts, rows, cols]), Qwen2-MoE's shared expert as ffn_*_shexp and its gate as
//     ffn_gate_inp_shexp (GraniteMoeShared's has no gate). llama.cpp fixes whether the chosen experts' weights are renormalized
//     (llama, granitemoe, qwen3moe: yes; qwen2moe, olmoe: no), runs a mixture in every layer, and reads OLMoE's
//     q/k norms as hidden wide (MHA only): other configs are a ModelError (BAD_CONFIG).
// Matrices are written in the requested dtype (default: the model's), 1-D tensors (norms, biases,
// rope_freqs) in F32 as the converter does. A tied head has no output.weight (llama.cpp reuses
// token_embd). Other architectures are a ModelError (UNSUPPORTED_ARCHITECTURE).
import { open, rename, rm, type FileHandle } from "node:fs/promises";
import { basename, join } from "node:path";
import type { LoadedModel } from "../loader/model-folder.js";
import type { DType, Weight } from "../loader/safetensors.js";
import { ModelError } from "../loader/errors.js";
import { tempPathFor, writeError } from "../loader/file-io.js";
import type { FfnWeights, ModelConfig } from "../arch/config.js";
import { convertF32, f16ToF32 } from "../modelgen/safetensors-writer.js";
import { GGML_TYPE_BLOCKS, GgmlType, GgufFileWriter, kv, type GgufTensorInfo, type GgufValue } from "./writer.js";
import { ggufVocab, vocabMetadata } from "./vocab.js";
import { isQuantDType } from "../loader/weight-format.js";
import { native } from "../native/addon.js";

/**
 * The matrices' type: a float type, q8_0 / q4_0 (llama.cpp's 8- and 4-bit blocks of 32 with an f16
 * scale, as ggml's reference quantizers make them), q4_k (4-bit blocks of 256 with a 6-bit scale
 * and min per 32, by our own least-squares fit; llama-quantize's weighted search is a little more
 * accurate), or q4_k_m (those, and Q6_K for the matrices llama-quantize's Q4_K_M keeps at 6 bits:
 * matrixTypes). Matrices whose rows are not whole blocks of 256 take llama-quantize's fallback
 * (Q5_0 for Q4_K, Q8_0 for Q6_K: fitType); those not of 32, and the routers and position table
 * convert_hf_to_gguf.py keeps in float, stay f32.
 */
export type GgufDType = "f32" | "f16" | "bf16" | "q8_0" | "q4_0" | "q4_k" | "q4_k_m";

export interface GgufExportOptions {
  /** Dtype of the matrices (default: the model's weight dtype). */
  dtype?: GgufDType;
  /** Called after each tensor: bytes of tensor data written so far, and in all. */
  onProgress?: (done: number, total: number) => void;
}

export interface GgufExportResult {
  file: string;
  /** llama.cpp's architecture name (general.architecture). */
  architecture:
    | "llama"
    | "granite"
    | "granitemoe"
    | "qwen2"
    | "qwen3"
    | "qwen2moe"
    | "qwen3moe"
    | "olmoe"
    | "smollm3"
    | "olmo2"
    | "exaone4"
    | "stablelm"
    | "starcoder2"
    | "command-r"
    | "cohere2"
    | "phi2"
    | "phi3"
    | "glm4"
    | "ernie4_5"
    | "ernie4_5-moe"
    | "gemma"
    | "gemma2"
    | "gemma3"
    | "gpt2"
    | "gptneox";
  dtype: GgufDType;
  tensors: number;
  bytes: number;
}

const GGML_TYPES: Record<GgufDType, GgmlType> = {
  f32: GgmlType.F32,
  f16: GgmlType.F16,
  bf16: GgmlType.BF16,
  q8_0: GgmlType.Q8_0,
  q4_0: GgmlType.Q4_0,
  q4_k: GgmlType.Q4_K,
  q4_k_m: GgmlType.Q4_K, // and Q6_K where matrixTypes says
};
/** general.file_type (llama_ftype): ALL_F32, MOSTLY_F16, MOSTLY_BF16, MOSTLY_Q8_0, MOSTLY_Q4_0, MOSTLY_Q4_K_S, _M. */
const FILE_TYPES: Record<GgufDType, number> = { f32: 0, f16: 1, bf16: 32, q8_0: 7, q4_0: 2, q4_k: 14, q4_k_m: 15 };

/**
 * Each matrix's ggml type (by GGUF name) for `dtype`. q4_k_m mixes as llama-quantize's Q4_K_M does:
 * Q6_K for the output matrix (the embedding when tied) and for attn_v and ffn_down in the layers its
 * use_more_bits picks (the first and last eighth, and every third between), Q4_K for the rest.
 */
function matrixTypes(dtype: GgufDType, layers: number, tied: boolean): (name: string) => GgmlType {
  const base = GGML_TYPES[dtype];
  if (dtype !== "q4_k_m") return () => base;
  const eighth = Math.floor(layers / 8);
  const moreBits = (i: number) => i < eighth || i >= (7 * layers) / 8 || (i - eighth) % 3 === 2;
  return (name) => {
    if (name === "output.weight" || (tied && name === "token_embd.weight")) return GgmlType.Q6_K;
    const m = /^blk\.(\d+)\.(attn_v|ffn_down)(_exps)?\.weight$/.exec(name);
    return m && moreBits(Number(m[1])) ? GgmlType.Q6_K : base;
  };
}
const SOURCE_DTYPES: Record<DType, GgufDType> = { F32: "f32", F16: "f16", BF16: "bf16" };

/** The GGUF dtype of a model's weights as its files store them; a model loaded with int8 or int4 weights has none. */
export function sourceDtype(model: LoadedModel, what: string): GgufDType {
  const d = model.weights.embed.dtype;
  if (isQuantDType(d))
    throw new ModelError(
      "UNSUPPORTED_DTYPE",
      model.dir,
      `${what} reads the file's weights: load the model without int8 or int4 weights`,
    );
  return SOURCE_DTYPES[d];
}

const ARCH_NAMES: Record<string, GgufExportResult["architecture"]> = {
  LlamaForCausalLM: "llama",
  MistralForCausalLM: "llama",
  MixtralForCausalLM: "llama",
  Qwen2MoeForCausalLM: "qwen2moe",
  Qwen3MoeForCausalLM: "qwen3moe",
  OlmoeForCausalLM: "olmoe",
  Qwen2ForCausalLM: "qwen2",
  Qwen3ForCausalLM: "qwen3",
  SmolLM3ForCausalLM: "smollm3",
  GraniteForCausalLM: "granite",
  GraniteMoeForCausalLM: "granitemoe",
  GraniteMoeSharedForCausalLM: "granitemoe",
  Olmo2ForCausalLM: "olmo2",
  Exaone4ForCausalLM: "exaone4",
  StableLmForCausalLM: "stablelm",
  Starcoder2ForCausalLM: "starcoder2",
  CohereForCausalLM: "command-r",
  Cohere2ForCausalLM: "cohere2",
  Glm4ForCausalLM: "glm4",
  Ernie4_5ForCausalLM: "ernie4_5",
  Ernie4_5_MoeForCausalLM: "ernie4_5-moe",
  PhiForCausalLM: "phi2",
  Phi3ForCausalLM: "phi3",
  GemmaForCausalLM: "gemma",
  Gemma2ForCausalLM: "gemma2",
  Gemma3ForCausalLM: "gemma3",
  Gemma3ForConditionalGeneration: "gemma3",
  GPT2LMHeadModel: "gpt2",
  GPTNeoXForCausalLM: "gptneox",
};

/** llama.cpp's architectures with LayerNorms (weight and bias) and the activation each runs. */
const LAYER_NORM_ARCHS: Partial<Record<GgufExportResult["architecture"], readonly string[]>> = {
  stablelm: ["silu"],
  starcoder2: ["gelu_tanh"],
  "command-r": ["silu"],
  cohere2: ["silu"],
  phi2: ["gelu_tanh"],
  gptneox: ["gelu", "gelu_tanh"], // llama.cpp's is the tanh form (see the header)
};

/** How a tensor's rows are rearranged on the way out. */
type Transform =
  | { kind: "copy" }
  /** Per head: the first rotDim rows go from [half0 | half1] to interleaved pairs. */
  | { kind: "permute"; heads: number; headDim: number; rotDim: number }
  /** Stored [in, out] (Conv1D): written [out, in]. */
  | { kind: "transpose" }
  /** GPT-NeoX's fused q/k/v rows, head by head ([q_h; k_h; v_h]), written as [q; k; v]. */
  | { kind: "qkvBlocks"; heads: number; headDim: number };

interface PlannedTensor {
  info: GgufTensorInfo;
  /** Stored bytes, values computed at load, or matrices written one after another (stacked experts). */
  source: Weight | Float32Array | Weight[];
  transform: Transform;
}

/** llama.cpp's name for the model's architecture, or a ModelError saying it cannot be exported. */
export function ggufArchitecture(config: ModelConfig, file = "config.json"): GgufExportResult["architecture"] {
  const arch = ARCH_NAMES[config.architecture];
  if (!arch) {
    throw new ModelError(
      "UNSUPPORTED_ARCHITECTURE",
      file,
      `GGUF export supports ${Object.keys(ARCH_NAMES).join(", ")}; ${config.architecture} is not one of them`,
    );
  }
  return arch;
}

/**
 * HF's rotate-half rotary layout → llama.cpp's interleaved pairs, on the rows of a q/k projection
 * ([heads·headDim, cols], row-major, `elemBytes` per element): within each head, row 2j+h of the
 * output is row h·(rotDim/2)+j of the input, for j < rotDim/2; rows past rotDim stay in place.
 * The same as convert_hf_to_gguf's `permute` (reshape(heads, 2, D/2, cols).swapaxes(1, 2)).
 */
export function permuteRotary(
  src: Uint8Array,
  heads: number,
  headDim: number,
  rotDim: number,
  rowBytes: number,
): Uint8Array {
  if (src.length !== heads * headDim * rowBytes) throw new Error("permuteRotary: size mismatch");
  const dst = new Uint8Array(src.length);
  const half = rotDim / 2;
  for (let h = 0; h < heads; h++) {
    const base = h * headDim;
    for (let r = 0; r < headDim; r++) {
      const from = r < rotDim ? (r % 2) * half + Math.floor(r / 2) : r;
      dst.set(src.subarray((base + from) * rowBytes, (base + from + 1) * rowBytes), (base + r) * rowBytes);
    }
  }
  return dst;
}

/**
 * Rows (of `rowBytes`) grouped by head, [q_h; k_h; v_h] of headDim rows each (GPT-NeoX), regrouped
 * as [q; k; v]: output row (j·heads + h)·headDim + d is input row (h·3 + j)·headDim + d.
 */
export function qkvBlocks(src: Uint8Array, heads: number, headDim: number, rowBytes: number): Uint8Array {
  if (src.length !== 3 * heads * headDim * rowBytes) throw new Error("qkvBlocks: size mismatch");
  const dst = new Uint8Array(src.length);
  const piece = headDim * rowBytes;
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < 3; j++) {
      dst.set(src.subarray((h * 3 + j) * piece, (h * 3 + j + 1) * piece), (j * heads + h) * piece);
    }
  }
  return dst;
}

/** Writes `model` to `outFile` as GGUF (atomically: a temporary file renamed at the end). */
export async function exportGguf(
  model: LoadedModel,
  outFile: string,
  opts: GgufExportOptions = {},
): Promise<GgufExportResult> {
  const c = model.config;
  const configFile = join(model.dir, "config.json");
  const arch = ggufArchitecture(c, configFile);
  const dtype = opts.dtype ?? sourceDtype(model, "GGUF export");
  if (!(dtype in GGML_TYPES))
    throw new ModelError(
      "UNSUPPORTED_DTYPE",
      outFile,
      `GGUF dtype ${dtype} (f32, f16, bf16, q8_0, q4_0, q4_k, q4_k_m)`,
    );
  const metadata: [string, GgufValue][] = [
    ["general.architecture", kv.str(arch)],
    ["general.name", kv.str(basename(model.dir))],
    ["general.file_type", kv.u32(FILE_TYPES[dtype])],
    ...architectureMetadata(arch, c, configFile),
    ...moeMetadata(arch, c, configFile),
  ];
  const tied = model.weights.head.w.name === model.weights.embed.name;
  const planned = planTensors(arch, model, matrixTypes(dtype, c.layers, tied));
  if (arch !== "gpt2") {
    const rope = ropeScaling(c, configFile);
    if (rope.kind === "linear") {
      metadata.push(
        [`${arch}.rope.scaling.type`, kv.str("linear")],
        [`${arch}.rope.scaling.factor`, kv.f32(rope.factor)],
      );
    } else if (rope.kind === "factors") {
      if (arch !== "llama") {
        throw new ModelError("BAD_CONFIG", configFile, `this rope_scaling has no GGUF form for ${arch} in llama.cpp`);
      }
      planned.unshift({
        info: { name: "rope_freqs.weight", type: GgmlType.F32, dims: [rope.factors.length] },
        source: rope.factors,
        transform: { kind: "copy" },
      });
    }
    metadata.push(
      [`${arch}.rope.dimension_count`, kv.u32(c.ropeInvFreq!.length * 2)],
      [`${arch}.rope.freq_base`, kv.f32(rope.theta)],
    );
  }
  metadata.push(...vocabMetadata(ggufVocab(model)));

  const tmp = tempPathFor(outFile); // an earlier export killed mid-way left its own: removed
  const writer = await GgufFileWriter.open(
    tmp,
    new Map(metadata),
    planned.map((p) => p.info),
  );
  const reader = new TensorReader();
  const total = writer.layout.byteLengths.reduce((a, b) => a + b, 0);
  let done = 0;
  try {
    for (const [i, p] of planned.entries()) {
      for await (const chunk of tensorBytes(p, reader)) await writer.write(chunk);
      done += writer.layout.byteLengths[i];
      opts.onProgress?.(done, total);
    }
    await writer.close();
    await rename(tmp, outFile).catch((e: unknown) => {
      throw writeError(e, outFile);
    });
  } catch (e) {
    await writer.abort();
    await rm(tmp, { force: true });
    throw e;
  } finally {
    await reader.close();
  }
  return { file: outFile, architecture: arch, dtype, tensors: planned.length, bytes: writer.layout.fileBytes };
}

function architectureMetadata(
  arch: GgufExportResult["architecture"],
  c: ModelConfig,
  file: string,
): [string, GgufValue][] {
  // llama.cpp runs sliding windows for gemma3 only: elsewhere (Mistral, Phi-3, Qwen2 with
  // use_sliding_window) the context is cut to the window, within which full attention is the same.
  const gemma = arch === "gemma2" || arch === "gemma3";
  const windows = gemma || arch === "cohere2" ? [] : (c.attentionWindows ?? []).filter((w) => w > 0);
  const common: [string, GgufValue][] = [
    [`${arch}.context_length`, kv.u32(Math.min(c.maxPositions, ...windows))],
    [`${arch}.embedding_length`, kv.u32(c.hidden)],
    [`${arch}.block_count`, kv.u32(c.layers)],
    [`${arch}.feed_forward_length`, kv.u32(feedForwardLength(arch, c))],
    [`${arch}.attention.head_count`, kv.u32(c.heads)],
  ];
  if (arch === "gpt2") {
    if (c.activation !== "gelu_tanh") {
      throw new ModelError("BAD_CONFIG", file, `llama.cpp's gpt2 uses tanh GELU; this model uses ${c.activation}`);
    }
    return [...common, [`gpt2.attention.layer_norm_epsilon`, kv.f32(c.normEps)]];
  }
  if (gemma) return [...common, ...attentionMetadata(arch, c), ...gemmaMetadata(arch, c, file)];
  if (c.ropeFactor !== undefined) {
    throw new ModelError("BAD_CONFIG", file, "the rotary attention factor (longrope, YaRN) has no GGUF form here");
  }
  const layerNormActs = LAYER_NORM_ARCHS[arch];
  if (layerNormActs) {
    if (!layerNormActs.includes(c.activation)) {
      throw new ModelError("BAD_CONFIG", file, `llama.cpp's ${arch} does not run ${c.activation}`);
    }
    const out: [string, GgufValue][] = [
      ...common,
      [`${arch}.attention.head_count_kv`, kv.u32(c.kvHeads)],
      [`${arch}.attention.layer_norm_epsilon`, kv.f32(c.normEps)],
    ];
    // stablelm and gptneox read from the file whether the blocks run side by side (phi2's always do,
    // starcoder2's never).
    if (arch === "stablelm" || arch === "gptneox") {
      out.push([`${arch}.use_parallel_residual`, kv.bool(c.parallelBlocks === true)]);
    }
    // Cohere's logit_scale is in the final norm's weight (ModelConfig.finalNormScale).
    if (arch === "command-r" || arch === "cohere2") out.push([`${arch}.logit_scale`, kv.f32(1)]);
    if (arch === "cohere2") out.push(...cohere2Windows(c, file));
    return out;
  }
  if (arch === "gemma") {
    if (c.activation !== "gelu_tanh") {
      throw new ModelError("BAD_CONFIG", file, `llama.cpp's gemma uses tanh GELU; this model uses ${c.activation}`);
    }
    if (c.attentionScale !== undefined && Math.abs(c.attentionScale * Math.sqrt(c.headDim) - 1) > 1e-7) {
      throw new ModelError("BAD_CONFIG", file, "llama.cpp's gemma scales attention by 1/sqrt(head_dim)");
    }
    return [...common, ...attentionMetadata(arch, c)];
  }
  if (c.activation !== "silu") {
    throw new ModelError("BAD_CONFIG", file, `llama.cpp's ${arch} uses SiLU; this model uses ${c.activation}`);
  }
  if (c.ropeLayers?.some((rope, i) => rope !== ((i + 1) % 4 !== 0))) {
    throw new ModelError("BAD_CONFIG", file, "llama.cpp's smollm3 skips the rotary step in every 4th layer only");
  }
  if (arch === "exaone4" && c.attentionWindows) {
    throw new ModelError(
      "BAD_CONFIG",
      file,
      "EXAONE 4.0 with sliding windows (and global layers without positions) has no GGUF export here",
    );
  }
  if (arch === "granite" || arch === "granitemoe") {
    // The multipliers as folded into the weights and eps the engine runs (see the header).
    return [
      ...common,
      ...attentionMetadata(arch, c),
      [`${arch}.attention.scale`, kv.f32(c.attentionScale ?? 1 / Math.sqrt(c.headDim))],
      [`${arch}.embedding_scale`, kv.f32(c.embedScale ?? 1)],
      [`${arch}.residual_scale`, kv.f32(1)],
      [`${arch}.logit_scale`, kv.f32(1)],
    ];
  }
  return [...common, ...attentionMetadata(arch, c)];
}

/** n_ff: the dense FFNs' width; a mixture's experts' where llama.cpp takes it for theirs (llama, olmoe, granitemoe). */
function feedForwardLength(arch: GgufExportResult["architecture"], c: ModelConfig): number {
  if (!c.moe) return c.intermediate;
  return arch === "ernie4_5-moe" ? c.moe.denseIntermediate : c.moe.expertIntermediate;
}

/** A mixture's expert counts and widths, after checking that llama.cpp's fixed choices give this model. */
function moeMetadata(arch: GgufExportResult["architecture"], c: ModelConfig, file: string): [string, GgufValue][] {
  const m = c.moe;
  if (!m) return [];
  const bad = (d: string) => new ModelError("BAD_CONFIG", file, `llama.cpp's ${arch} ${d}`);
  // ernie4_5-moe: dense layers first, then a mixture in every layer; the others: mixtures only.
  const lead = arch === "ernie4_5-moe" ? Math.max(0, m.layers.indexOf(true)) : 0;
  if (!m.layers.every((moe, i) => moe === i >= lead)) {
    throw bad(
      arch === "ernie4_5-moe"
        ? "has dense layers first, then a mixture in every layer; moe_layer_interval / moe_layer_end_index differ"
        : "has a mixture in every layer; mlp_only_layers / decoder_sparse_step differ",
    );
  }
  const renormalizes = arch === "llama" || arch === "granitemoe" || arch === "qwen3moe" || arch === "ernie4_5-moe";
  if (m.normalize !== renormalizes) {
    throw bad(
      `${renormalizes ? "renormalizes" : "does not renormalize"} the chosen experts' weights; norm_topk_prob differs`,
    );
  }
  if (arch === "olmoe" && c.kvHeads !== c.heads) throw bad("reads q/k norms as wide as the hidden size: no GQA");
  const out: [string, GgufValue][] = [
    [`${arch}.expert_count`, kv.u32(m.experts)],
    [`${arch}.expert_used_count`, kv.u32(m.topK)],
  ];
  if (arch === "qwen2moe" || arch === "qwen3moe" || arch === "ernie4_5-moe") {
    out.push([`${arch}.expert_feed_forward_length`, kv.u32(m.expertIntermediate)]);
  }
  if (arch === "ernie4_5-moe") {
    out.push([`${arch}.leading_dense_block_count`, kv.u32(lead)], [`${arch}.interleave_moe_layer_step`, kv.u32(1)]);
  }
  if (m.sharedIntermediate !== undefined) {
    out.push([`${arch}.expert_shared_feed_forward_length`, kv.u32(m.sharedIntermediate)]);
  }
  return out;
}

function attentionMetadata(arch: GgufExportResult["architecture"], c: ModelConfig): [string, GgufValue][] {
  return [
    [`${arch}.attention.head_count_kv`, kv.u32(c.kvHeads)],
    [`${arch}.attention.key_length`, kv.u32(c.headDim)],
    [`${arch}.attention.value_length`, kv.u32(c.headDim)],
    [`${arch}.attention.layer_norm_rms_epsilon`, kv.f32(c.normEps)],
    [`${arch}.vocab_size`, kv.u32(c.vocab)],
  ];
}

/**
 * Gemma's sliding window (and Gemma 2's soft caps), after checking that llama.cpp's fixed choices
 * (see the header) give this model: it reads only the window's length and the caps from the file.
 */
function gemmaMetadata(arch: "gemma2" | "gemma3", c: ModelConfig, file: string): [string, GgufValue][] {
  const bad = (d: string) => new ModelError("BAD_CONFIG", file, `llama.cpp's ${arch} ${d}`);
  if (c.activation !== "gelu_tanh") throw bad(`uses tanh GELU; this model uses ${c.activation}`);
  const is27b = c.layers === (arch === "gemma2" ? 46 : 62);
  const scale = 1 / Math.sqrt(is27b ? Math.floor(c.hidden / c.heads) : c.headDim);
  if (Math.abs((c.attentionScale ?? scale) - scale) > 1e-7 * scale) {
    throw bad("scales attention by 1/sqrt(head_dim) (27B: 1/sqrt(hidden/heads)); query_pre_attn_scalar differs");
  }
  const out: [string, GgufValue][] = [];
  if (arch === "gemma2") {
    // llama.cpp caps every Gemma 2 (50 and 30 unless the file says otherwise).
    if (c.attentionSoftcap === undefined || c.finalSoftcap === undefined) {
      throw bad("soft-caps attention scores and logits; this model's attn/final_logit_softcapping is null");
    }
    out.push(
      ["gemma2.attn_logit_softcapping", kv.f32(c.attentionSoftcap)],
      ["gemma2.final_logit_softcapping", kv.f32(c.finalSoftcap)],
    );
  } else if (c.attentionSoftcap !== undefined || c.finalSoftcap !== undefined) {
    throw bad("has no soft caps; this model's attn/final_logit_softcapping is set");
  }
  const window = largestWindow(c);
  if (window === 0) {
    if (arch === "gemma2") throw bad("slides a window over every other layer; this model has none");
    return out;
  }
  const every = arch === "gemma2" ? 2 : 6;
  if (!windowedAllButEvery(c, every)) {
    throw bad(`has a sliding window in every layer but each ${every === 2 ? "2nd" : "6th"}; layer_types differ`);
  }
  const local = c.localRopeInvFreq;
  if (local?.some((f, i) => Math.abs(f - Math.pow(10000, (-2 * i) / (2 * local.length))) > 1e-6 * f)) {
    throw bad("rotates its sliding-window layers with base 10000, unscaled; rope_local_base_freq differs");
  }
  return [...out, [`${arch}.attention.sliding_window`, kv.u32(window)]];
}

/**
 * Cohere 2's window, after checking that llama.cpp's fixed choice gives this model: a window in
 * every layer but each 4th, and the rotary step in exactly those layers.
 */
function cohere2Windows(c: ModelConfig, file: string): [string, GgufValue][] {
  const window = largestWindow(c);
  const ropeWhereWindowed = (c.attentionWindows ?? []).every((w, i) => (c.ropeLayers?.[i] ?? true) === w > 0);
  if (window === 0 || !windowedAllButEvery(c, 4) || !ropeWhereWindowed) {
    throw new ModelError(
      "BAD_CONFIG",
      file,
      "llama.cpp's cohere2 has a sliding window, and the rotary step, in every layer but each 4th; layer_types differ",
    );
  }
  return [["cohere2.attention.sliding_window", kv.u32(window)]];
}

/** The model's largest sliding window, 0 when it has none (windowedAllButEvery checks they are one size). */
function largestWindow(c: ModelConfig): number {
  return Math.max(0, ...(c.attentionWindows ?? []));
}

/** Whether every layer but each `every`-th slides the window and those are global (llama.cpp's patterns). */
function windowedAllButEvery(c: ModelConfig, every: number): boolean {
  const window = largestWindow(c);
  return (c.attentionWindows ?? []).every((w, i) => w === (i % every < every - 1 ? window : 0));
}

type RopeScaling = { theta: number } & (
  { kind: "none" } | { kind: "linear"; factor: number } | { kind: "factors"; factors: Float32Array }
);

/**
 * The model's rotary frequencies (config.ropeInvFreq, scaling applied) against the unscaled ones
 * from its base (config.ropeTheta): equal means no scaling, one common ratio is linear scaling,
 * anything else (llama3) is per-frequency divisors, which llama.cpp reads from the rope_freqs tensor.
 */
function ropeScaling(c: ModelConfig, file: string): RopeScaling {
  const inv = c.ropeInvFreq!;
  const theta = c.ropeTheta;
  if (theta === undefined) throw new Error(`${c.architecture}: the config reader did not record rope_theta`);
  const rotDim = inv.length * 2;
  const factors = new Float32Array(inv.length);
  for (let i = 0; i < inv.length; i++) factors[i] = 1 / Math.pow(theta, (2 * i) / rotDim) / inv[i];
  if (!factors.every((f) => Number.isFinite(f) && f > 0)) {
    throw new ModelError("BAD_CONFIG", file, "rotary frequencies do not follow from rope_theta");
  }
  const close = (a: number, b: number) => Math.abs(a - b) <= 1e-5 * Math.max(a, b);
  if (factors.every((f) => close(f, 1))) return { theta, kind: "none" };
  if (factors.every((f) => close(f, factors[0]))) return { theta, kind: "linear", factor: factors[0] };
  return { theta, kind: "factors", factors };
}

/**
 * `type` for a matrix of rows of `cols` values when they are whole blocks of it; else what
 * llama-quantize falls back to for a k-quant (Q5_0 for Q4_K, Q8_0 for Q6_K: blocks of 32, as for
 * Qwen2.5-0.5B's 896 columns), or f32 when not even those fit.
 */
function fitType(type: GgmlType, cols: number): GgmlType {
  const fits = (t: GgmlType) => cols % GGML_TYPE_BLOCKS[t].values === 0;
  const fallback = type === GgmlType.Q4_K ? GgmlType.Q5_0 : type === GgmlType.Q6_K ? GgmlType.Q8_0 : undefined;
  return fits(type) ? type : fallback !== undefined && fits(fallback) ? fallback : GgmlType.F32;
}

function planTensors(
  arch: GgufExportResult["architecture"],
  model: LoadedModel,
  typeOf: (name: string) => GgmlType,
): PlannedTensor[] {
  const c = model.config;
  const w = model.weights;
  const out: PlannedTensor[] = [];
  const copy: Transform = { kind: "copy" };
  /** A stored tensor; matrices in typeOf's type, 1-D tensors in F32. Dims are ggml order (reversed). */
  const add = (name: string, src: Weight, transform: Transform = copy) => {
    const type = typeOf(name);
    const shape = transform.kind === "transpose" ? [src.shape[1], src.shape[0]] : [...src.shape];
    // Routers and positions stay float, as the converter keeps them; other rows take whole blocks.
    const float = /ffn_gate_inp|position_embd/.test(name);
    const matrix = GGML_TYPE_BLOCKS[type].values > 1 && float ? GgmlType.F32 : fitType(type, shape[shape.length - 1]);
    out.push({
      info: { name, type: shape.length === 1 ? GgmlType.F32 : matrix, dims: shape.reverse() },
      source: src.values ?? src, // values computed at load (Gemma's 1 + w norms) are not in the file
      transform,
    });
  };
  const tied = w.head.w.name === w.embed.name;
  add("token_embd.weight", w.embed);
  if (w.positions) add("position_embd.weight", w.positions);
  const rotDim = c.ropeInvFreq ? c.ropeInvFreq.length * 2 : 0;
  w.layers.forEach((l, i) => {
    const p = `blk.${i}`;
    const norm = (name: string, n: { weight: Weight; bias: Weight | null } | null) => {
      if (!n) return; // no norm before the block (OLMo 2; Phi's FFN reads the attention's)
      add(`${p}.${name}.weight`, n.weight);
      if (n.bias) add(`${p}.${name}.bias`, n.bias);
    };
    const lin = (name: string, l: { w: Weight; b: Weight | null }, t: Transform = copy) => {
      add(`${p}.${name}.weight`, l.w, l.w.transposed ? { kind: "transpose" } : t);
      if (l.b) add(`${p}.${name}.bias`, l.b, t);
    };
    norm("attn_norm", l.attnNorm);
    if ("fused" in l.qkv) {
      // Grouped rows reach here from GPT-NeoX only, one q head per group (InternLM2 has no export).
      lin("attn_qkv", l.qkv.fused, l.qkv.grouped ? { kind: "qkvBlocks", heads: c.heads, headDim: c.headDim } : copy);
    } else if (arch === "phi3") {
      add(`${p}.attn_qkv.weight`, joinRows([l.qkv.q.w, l.qkv.k.w, l.qkv.v.w]));
    } else {
      // llama.cpp's rotary pairs, not NEOX
      const interleaved = arch === "llama" || arch === "smollm3" || arch === "granite" || arch === "granitemoe";
      const perm = (heads: number): Transform =>
        interleaved ? { kind: "permute", heads, headDim: c.headDim, rotDim } : copy;
      if (interleaved && (l.qkv.q.b || l.qkv.k.b)) {
        // convert_hf_to_gguf would permute the biases too; no supported Llama checkpoint has them.
        throw new ModelError(
          "UNSUPPORTED_ARCHITECTURE",
          model.dir,
          "Llama q/k biases are not supported in GGUF export",
        );
      }
      lin("attn_q", l.qkv.q, perm(c.heads));
      lin("attn_k", l.qkv.k, perm(c.kvHeads));
      lin("attn_v", l.qkv.v);
    }
    if (l.qkNorm) {
      add(`${p}.attn_q_norm.weight`, l.qkNorm.q.weight);
      add(`${p}.attn_k_norm.weight`, l.qkNorm.k.weight);
    }
    lin("attn_output", l.o);
    if (l.postAttnNorm) norm("post_attention_norm", l.postAttnNorm);
    norm("ffn_norm", l.ffnNorm);
    if (l.moe) {
      const { router, experts, shared, selectionBias } = l.moe;
      lin("ffn_gate_inp", router);
      if (selectionBias) {
        out.push({
          info: { name: `${p}.exp_probs_b.bias`, type: GgmlType.F32, dims: [selectionBias.length] },
          source: selectionBias,
          transform: copy,
        });
      }
      for (const [name, pick] of [
        ["ffn_gate_exps", (e: FfnWeights) => e.gate!.w],
        ["ffn_up_exps", (e: FfnWeights) => e.up.w],
        ["ffn_down_exps", (e: FfnWeights) => e.down.w],
      ] as const) {
        const mats = experts.map(pick);
        out.push({
          info: {
            name: `${p}.${name}.weight`,
            type: fitType(typeOf(`${p}.${name}.weight`), mats[0].cols),
            dims: [mats[0].cols, mats[0].rows, mats.length],
          },
          source: mats,
          transform: copy,
        });
      }
      if (shared) {
        lin("ffn_gate_shexp", shared.gate!);
        lin("ffn_up_shexp", shared.up);
        lin("ffn_down_shexp", shared.down);
        if (shared.sharedGate) lin("ffn_gate_inp_shexp", shared.sharedGate);
      }
      if (l.postFfnNorm) norm("post_ffw_norm", l.postFfnNorm);
      return;
    }
    if (arch === "phi3" || arch === "glm4") {
      add(`${p}.ffn_up.weight`, joinRows([l.gate!.w, l.up.w]));
    } else {
      if (l.gate) lin("ffn_gate", l.gate);
      lin("ffn_up", l.up);
    }
    lin("ffn_down", l.down);
    if (l.postFfnNorm) norm("post_ffw_norm", l.postFfnNorm);
  });
  add("output_norm.weight", w.finalNorm.weight);
  if (w.finalNorm.bias) add("output_norm.bias", w.finalNorm.bias);
  if (!tied) add("output.weight", w.head.w);
  if (w.head.b) add("output.bias", w.head.b);
  return out;
}

/** Row views that lie back to back in one file (WeightStore.getRows of one tensor) as one source. */
function joinRows(parts: Weight[]): Weight {
  let bytes = 0;
  for (const w of parts) {
    if (w.file !== parts[0].file || w.offset !== parts[0].offset + bytes || w.cols !== parts[0].cols) {
      throw new Error(`${w.name} does not follow ${parts[0].name} in its file`);
    }
    bytes += w.byteLength;
  }
  const rows = parts.reduce((a, w) => a + w.rows, 0);
  return { ...parts[0], shape: [rows, parts[0].cols], rows, byteLength: bytes };
}

/** Reads stored tensor bytes from the safetensors files (one handle per file). */
class TensorReader {
  private readonly handles = new Map<string, FileHandle>();

  async read(file: string, offset: number, length: number): Promise<Uint8Array> {
    let fh = this.handles.get(file);
    if (!fh) {
      fh = await open(file, "r");
      this.handles.set(file, fh);
    }
    const buf = new Uint8Array(length);
    for (let done = 0; done < length;) {
      const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
      if (bytesRead <= 0) throw new ModelError("TRUNCATED", file, "file ended while reading a tensor");
      done += bytesRead;
    }
    return buf;
  }

  async close(): Promise<void> {
    for (const fh of this.handles.values()) await fh.close();
    this.handles.clear();
  }
}

const CHUNK_BYTES = 16 << 20;

/** The tensor's bytes in the output dtype and layout, in chunks of whole rows. */
async function* tensorBytes(p: PlannedTensor, reader: TensorReader): AsyncGenerator<Uint8Array> {
  const dst = p.info.type;
  if (Array.isArray(p.source)) {
    for (const source of p.source) yield* tensorBytes({ ...p, source }, reader);
    return;
  }
  if (p.source instanceof Float32Array) {
    yield convert(new Uint8Array(p.source.buffer, p.source.byteOffset, p.source.byteLength), GgmlType.F32, dst);
    return;
  }
  const src = p.source;
  const srcType = GGML_TYPES[SOURCE_DTYPES[src.dtype as DType]]; // exportGguf refuses int8 weights (sourceDtype)
  const elem = GGML_TYPE_BLOCKS[srcType].bytes;
  const t = p.transform;
  if (t.kind === "copy") {
    const rowBytes = (src.shape.length === 1 ? src.shape[0] : src.shape[1]) * elem;
    const rowsPerChunk = Math.max(1, Math.floor(CHUNK_BYTES / rowBytes));
    for (let at = 0; at < src.byteLength; at += rowsPerChunk * rowBytes) {
      const n = Math.min(rowsPerChunk * rowBytes, src.byteLength - at);
      yield convert(await reader.read(src.file, src.offset + at, n), srcType, dst);
    }
    return;
  }
  const bytes = await reader.read(src.file, src.offset, src.byteLength);
  if (t.kind === "permute") {
    yield convert(permuteRotary(bytes, t.heads, t.headDim, t.rotDim, src.shape[1] * elem), srcType, dst);
  } else if (t.kind === "qkvBlocks") {
    const rowBytes = src.shape.length === 1 ? elem : src.shape[1] * elem; // a bias: one element per row
    yield convert(qkvBlocks(bytes, t.heads, t.headDim, rowBytes), srcType, dst);
  } else {
    yield convert(transpose(bytes, src.shape[0], src.shape[1], elem), srcType, dst);
  }
}

/** [rows, cols] row-major → [cols, rows] row-major, elements of `elem` bytes. */
function transpose(src: Uint8Array, rows: number, cols: number, elem: number): Uint8Array {
  const dst = new Uint8Array(src.length);
  if (elem === 2) {
    const s = new Uint16Array(src.buffer, src.byteOffset, rows * cols);
    const d = new Uint16Array(dst.buffer);
    for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) d[k * rows + r] = s[r * cols + k];
  } else {
    const s = new Uint32Array(src.buffer, src.byteOffset, rows * cols);
    const d = new Uint32Array(dst.buffer);
    for (let r = 0; r < rows; r++) for (let k = 0; k < cols; k++) d[k * rows + r] = s[r * cols + k];
  }
  return dst;
}

let f16Table: Float32Array | undefined;

/**
 * Element conversion between F32, F16 and BF16 (exact widening; narrowing rounds to nearest even),
 * and to any block type quantizeBlocks writes (src whole rows of whole blocks).
 */
function convert(src: Uint8Array, from: GgmlType, to: GgmlType): Uint8Array {
  if (from === to) return src;
  let f32: Uint32Array;
  if (from === GgmlType.F32) {
    f32 = new Uint32Array(src.buffer, src.byteOffset, src.length / 4);
  } else {
    const h = new Uint16Array(src.buffer, src.byteOffset, src.length / 2);
    f32 = new Uint32Array(h.length);
    if (from === GgmlType.BF16) {
      for (let i = 0; i < h.length; i++) f32[i] = h[i] << 16;
    } else {
      if (!f16Table) {
        f16Table = new Float32Array(65536);
        for (let i = 0; i < 65536; i++) f16Table[i] = f16ToF32(i);
      }
      const f = new Float32Array(f32.buffer);
      for (let i = 0; i < h.length; i++) f[i] = f16Table[h[i]];
    }
  }
  if (to === GgmlType.F32) return new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength);
  if (GGML_TYPE_BLOCKS[to].values > 1)
    return quantizeBlocks(to, new Float32Array(f32.buffer, f32.byteOffset, f32.length));
  return convertF32(f32, f32.length, to === GgmlType.F16 ? "F16" : "BF16", new Uint16Array(f32.length));
}

/** Q8_0, Q4_0, Q5_0, Q4_K or Q6_K blocks of x (whole blocks; native gguf_quantize). */
function quantizeBlocks(type: GgmlType, x: Float32Array): Uint8Array {
  const { values, bytes } = GGML_TYPE_BLOCKS[type];
  const out = new Uint8Array((x.length / values) * bytes);
  native().quantizeBlocks(type, x, out);
  return out;
}
