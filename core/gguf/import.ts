// Importing a GGUF file (llama.cpp's model format, what most people download) as a Hugging Face
// model folder the engine loads like any other: config.json from the file's metadata, the weights
// as safetensors, tokenizer.json and tokenizer_config.json (with the chat template) from its
// tokenizer.ggml.* keys. The engine's kernels read f32/f16/bf16, so quantized tensors (Q4_K_M's
// Q4_K and Q6_K, Q8_0, ...) are dequantized once, at import, to bf16 (importDtype says why); files
// of f32, f16 or bf16 matrices keep their dtype. The reverse of convert_hf_to_gguf.py for the
// architectures in ARCHS; what each needs undone:
//   - llama, smollm3, granite(moe), Mixtral: q/k rows from llama.cpp's interleaved rotary pairs back to
//     rotate-half (the inverse of export.ts's `permuteRotary`); Llama 3's rope_freqs → rope_scaling.
//   - gemma, gemma2, gemma3: norms stored as 1 + w back to w; the windows, caps and attention scale
//     llama.cpp fixes become config keys (smollm3's rotary-free layers, likewise).
//   - phi3 (longrope from rope_factors_long/_short), glm4: fused matrices as transformers keeps them.
//   - gpt2: Conv1D matrices transposed back to [in, out]; gptneox: fused q/k/v regrouped head by head.
//   - granite, granitemoe, command-r, cohere2: their multipliers and logit scale from the metadata.
//   - mixtures (qwen2moe, qwen3moe, olmoe, Mixtral, ernie4_5-moe, granitemoe): experts stacked
//     [experts, rows, cols] become one tensor each (GraniteMoE's its own stacked form).
//   - qwen2, qwen3, olmo2, stablelm, starcoder2, exaone4, phi2, ernie4_5: names only (starcoder2 and
//     exaone4 without windows, as llama.cpp runs them).
// loader/model-source.ts's `modelFolderFor` is the one entry point the CLI and the app use: a .gguf
// path is imported once into the cache (imports/, keyed by the file's path, size and mtime).
import { closeSync, existsSync, openSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { gguf } from "@huggingface/gguf";
import { ModelError } from "../loader/errors.js";
import { checkFreeSpace, moveIntoPlace, readBytes, readFully, tempFolderFor, writeAll } from "../loader/file-io.js";
import { isObject } from "../loader/json.js";
import { blockFit, isInt4Block, isWeightFormat, type WeightFormat } from "../loader/weight-format.js";
import {
  buildHeader,
  convertF32,
  DTYPE_BYTES,
  type StDType,
  type TensorEntry,
} from "../modelgen/safetensors-writer.js";
import {
  GGML_BLOCKS,
  GgmlTypeId,
  dequantize,
  dequantizeTo,
  ggmlBytes,
  ggmlTypeName,
  isSupportedType,
} from "./quants.js";
import { tokenizerFromGguf, type ImportedTokenizer } from "./vocab.js";

/** Bumped when an import's output changes, so that cached imports are redone. */
// 4: gguf-import.json lists the matrices int8 / int4 weights take from the blocks; 5: Q4_1 and Q4_K ones too
export const IMPORT_VERSION = 5;
/** The file in an imported folder that names its GGUF source. */
export const IMPORT_RECORD = "gguf-import.json";

export interface GgufTensor {
  readonly name: string;
  readonly type: GgmlTypeId;
  /** ggml order: dims[0] is the contiguous dimension (a matrix's columns). */
  readonly dims: readonly number[];
  /** Absolute offset of its data in the file. */
  readonly offset: number;
  readonly byteLength: number;
}

export interface GgufFile {
  readonly file: string;
  readonly metadata: Record<string, unknown>;
  readonly tensors: readonly GgufTensor[];
}

export interface GgufImportResult {
  dir: string;
  /** general.architecture, and the Hugging Face class it became. */
  ggufArchitecture: string;
  architecture: string;
  /** The weights' dtype in the folder. */
  dtype: StDType;
  /** How many tensors the file stored in each ggml type (e.g. {Q4_K: 97, Q6_K: 17, F32: 65}). */
  sourceTypes: Record<string, number>;
  tensors: number;
  bytes: number;
}

/** Reads a file's `${arch}.*` metadata and asks about its tensors. */
interface Meta {
  num(key: string, fallback?: number): number;
  str(key: string): string | undefined;
  bool(key: string): boolean | undefined;
  has(tensor: string): boolean;
}

interface ArchImport {
  hf: string;
  modelType: string;
  /** q/k rows stored in llama.cpp's interleaved rotary order (the converter's `permute`). */
  permutedQK?: boolean;
  /** Norm weights stored as 1 + w (Gemma's converter adds the 1 its RMSNorm applies): 1 is taken off. */
  normsPlusOne?: boolean;
  /** blk.N.<name> → module, where this architecture's names differ from LAYER_TENSORS. */
  layers?: Record<string, string>;
  /** Experts stacked as transformers' GraniteMoE keeps them (fusedExpertTensor). */
  fusedExperts?: boolean;
  /** Where layer N's modules live, when not under model.layers.N (GPT-2's h.N). */
  layerPrefix?: string;
  /** Matrices stored [in, out] in the checkpoint (GPT-2's Conv1D): transposed back on the way in. */
  conv1d?: boolean;
  /** Fused q/k/v rows grouped head by head in the checkpoint (GPT-NeoX); llama.cpp's are all q, all k, all v. */
  qkvHeadGroups?: boolean;
  /** Whole-model tensor names that differ from GLOBAL_TENSORS (Phi's final_layernorm). */
  globals?: Record<string, string>;
  /** The rotary step may cover part of each head (partial_rotary_factor). */
  partialRotary?: boolean;
  /** config.json keys of this architecture. */
  config?: (m: Meta) => Record<string, unknown>;
}

/** A mixture's config keys, as transformers names them for Qwen and OLMoE. */
const qwenMoe = (normTopk: boolean) => (m: Meta) => ({
  num_experts: m.num("expert_count"),
  num_experts_per_tok: m.num("expert_used_count"),
  moe_intermediate_size: m.num("expert_feed_forward_length", m.num("feed_forward_length")),
  norm_topk_prob: normTopk, // llama.cpp's qwen3moe renormalizes the chosen experts' weights, its qwen2moe does not
  decoder_sparse_step: 1,
  mlp_only_layers: [],
  ...(m.has("blk.0.ffn_gate_inp_shexp.weight") || m.has("blk.0.ffn_up_shexp.weight")
    ? { shared_expert_intermediate_size: m.num("expert_shared_feed_forward_length") }
    : {}),
});

/** Gemma 2 and 3's config: the windows, caps and attention scale llama.cpp fixes for them. */
const gemma = (version: 2 | 3) => (m: Meta) => {
  const layers = m.num("block_count");
  const hidden = m.num("embedding_length");
  const heads = m.num("attention.head_count");
  const headDim = m.num("attention.key_length", hidden / heads);
  // llama.cpp scales attention by 1/sqrt(head_dim), and the 27B models (46 / 62 layers) by 1/sqrt(hidden / heads).
  const is27b = layers === (version === 2 ? 46 : 62);
  const every = version === 2 ? 2 : 6;
  return {
    hidden_activation: "gelu_pytorch_tanh",
    query_pre_attn_scalar: is27b ? hidden / heads : headDim,
    sliding_window: m.num("attention.sliding_window"),
    layer_types: Array.from({ length: layers }, (_, i) =>
      (i + 1) % every !== 0 ? "sliding_attention" : "full_attention",
    ),
    attn_logit_softcapping: version === 2 ? m.num("attn_logit_softcapping", 50) : null,
    final_logit_softcapping: version === 2 ? m.num("final_logit_softcapping", 30) : null,
    ...(version === 3 && { rope_local_base_freq: 10000 }),
  };
};

/** Granite's multipliers, which llama.cpp's converter writes as scales (granite, granitemoe). */
const graniteScales = (m: Meta) => ({
  embedding_multiplier: m.num("embedding_scale", 1),
  residual_multiplier: m.num("residual_scale", 1),
  attention_multiplier: m.num("attention.scale"),
  logits_scaling: m.num("logit_scale", 1),
});

const GEMMA_LAYERS = {
  post_attention_norm: "post_attention_layernorm",
  ffn_norm: "pre_feedforward_layernorm",
  post_ffw_norm: "post_feedforward_layernorm",
};

const ARCHS: Record<string, ArchImport> = {
  llama: { hf: "LlamaForCausalLM", modelType: "llama", permutedQK: true },
  qwen2: { hf: "Qwen2ForCausalLM", modelType: "qwen2" },
  qwen3: { hf: "Qwen3ForCausalLM", modelType: "qwen3" },
  gemma2: { hf: "Gemma2ForCausalLM", modelType: "gemma2", normsPlusOne: true, layers: GEMMA_LAYERS, config: gemma(2) },
  gemma3: {
    hf: "Gemma3ForCausalLM",
    modelType: "gemma3_text",
    normsPlusOne: true,
    layers: GEMMA_LAYERS,
    config: gemma(3),
  },
  phi3: {
    hf: "Phi3ForCausalLM",
    modelType: "phi3",
    partialRotary: true,
    layers: { attn_qkv: "self_attn.qkv_proj", ffn_up: "mlp.gate_up_proj" },
    config: (m) => ({
      original_max_position_embeddings: m.num("rope.scaling.original_context_length", m.num("context_length")),
      sliding_window: m.num("attention.sliding_window", 0) || null,
    }),
  },
  smollm3: {
    hf: "SmolLM3ForCausalLM",
    modelType: "smollm3",
    permutedQK: true,
    // llama.cpp's smollm3 skips the rotary step in every 4th layer.
    config: (m) => ({
      no_rope_layers: Array.from({ length: m.num("block_count") }, (_, i) => ((i + 1) % 4 !== 0 ? 1 : 0)),
      no_rope_layer_interval: 4,
    }),
  },
  gemma: {
    hf: "GemmaForCausalLM",
    modelType: "gemma",
    normsPlusOne: true,
    config: () => ({ hidden_act: "gelu", hidden_activation: "gelu_pytorch_tanh" }),
  },
  stablelm: {
    hf: "StableLmForCausalLM",
    modelType: "stablelm",
    partialRotary: true,
    config: (m) => ({
      layer_norm_eps: m.num("attention.layer_norm_epsilon"),
      use_qkv_bias: m.has("blk.0.attn_q.bias"),
      use_parallel_residual: m.bool("use_parallel_residual") ?? false,
      qk_layernorm: false,
    }),
  },
  phi2: {
    hf: "PhiForCausalLM",
    modelType: "phi",
    partialRotary: true,
    layers: { attn_output: "self_attn.dense", ffn_up: "mlp.fc1", ffn_down: "mlp.fc2" },
    globals: { "output_norm.weight": "model.final_layernorm.weight", "output_norm.bias": "model.final_layernorm.bias" },
    config: (m) => ({
      hidden_act: "gelu_new",
      layer_norm_eps: m.num("attention.layer_norm_epsilon"),
      qk_layernorm: false,
    }),
  },
  starcoder2: {
    hf: "Starcoder2ForCausalLM",
    modelType: "starcoder2",
    layers: { ffn_up: "mlp.c_fc", ffn_down: "mlp.c_proj" },
    // llama.cpp's starcoder2 has no window: the whole context, as here.
    config: (m) => ({
      hidden_act: "gelu_pytorch_tanh",
      norm_epsilon: m.num("attention.layer_norm_epsilon"),
      use_bias: true,
      sliding_window: null,
    }),
  },
  ernie4_5: { hf: "Ernie4_5ForCausalLM", modelType: "ernie4_5", config: () => ({ use_bias: false }) },
  glm4: {
    hf: "Glm4ForCausalLM",
    modelType: "glm4",
    partialRotary: true,
    layers: {
      post_attention_norm: "post_self_attn_layernorm",
      ffn_norm: "post_attention_layernorm",
      post_ffw_norm: "post_mlp_layernorm",
      ffn_up: "mlp.gate_up_proj",
    },
    config: (m) => ({ attention_bias: m.has("blk.0.attn_q.bias") }),
  },
  exaone4: {
    hf: "Exaone4ForCausalLM",
    modelType: "exaone4",
    layers: { post_attention_norm: "post_attention_layernorm", post_ffw_norm: "post_feedforward_layernorm" },
    config: () => ({ sliding_window: null }),
  },
  granite: {
    hf: "GraniteForCausalLM",
    modelType: "granite",
    permutedQK: true,
    config: graniteScales,
  },
  granitemoe: {
    hf: "GraniteMoeForCausalLM",
    modelType: "granitemoe",
    permutedQK: true,
    fusedExperts: true,
    layers: { ffn_gate_inp: "block_sparse_moe.router.layer" },
    config: (m) => ({
      ...(m.has("blk.0.ffn_gate_shexp.weight") && {
        architectures: ["GraniteMoeSharedForCausalLM"],
        model_type: "granitemoeshared",
        shared_intermediate_size: m.num("expert_shared_feed_forward_length"),
      }),
      num_local_experts: m.num("expert_count"),
      num_experts_per_tok: m.num("expert_used_count"),
      ...graniteScales(m),
    }),
  },
  "ernie4_5-moe": {
    hf: "Ernie4_5_MoeForCausalLM",
    modelType: "ernie4_5_moe",
    layers: {
      ffn_gate_shexp: "mlp.shared_experts.gate_proj",
      ffn_up_shexp: "mlp.shared_experts.up_proj",
      ffn_down_shexp: "mlp.shared_experts.down_proj",
    },
    config: (m) => {
      const expert = m.num("expert_feed_forward_length");
      return {
        use_bias: false,
        moe_num_experts: m.num("expert_count"),
        moe_k: m.num("expert_used_count"),
        moe_intermediate_size: expert,
        moe_num_shared_experts: m.num("expert_shared_feed_forward_length", 0) / expert,
        moe_layer_start_index: m.num("leading_dense_block_count", 0),
        moe_layer_end_index: -1,
        moe_layer_interval: m.num("interleave_moe_layer_step", 1),
      };
    },
  },
  gpt2: {
    hf: "GPT2LMHeadModel",
    modelType: "gpt2",
    layerPrefix: "h",
    conv1d: true,
    layers: {
      attn_norm: "ln_1",
      attn_qkv: "attn.c_attn",
      attn_output: "attn.c_proj",
      ffn_norm: "ln_2",
      ffn_up: "mlp.c_fc",
      ffn_down: "mlp.c_proj",
    },
    globals: {
      "token_embd.weight": "wte.weight",
      "position_embd.weight": "wpe.weight",
      "output_norm.weight": "ln_f.weight",
      "output_norm.bias": "ln_f.bias",
    },
    config: (m) => ({
      n_embd: m.num("embedding_length"),
      n_layer: m.num("block_count"),
      n_head: m.num("attention.head_count"),
      n_inner: m.num("feed_forward_length"),
      n_positions: m.num("context_length"),
      layer_norm_epsilon: m.num("attention.layer_norm_epsilon"),
      activation_function: "gelu_new", // llama.cpp's gpt2 runs tanh GELU
    }),
  },
  gptneox: {
    hf: "GPTNeoXForCausalLM",
    modelType: "gpt_neox",
    partialRotary: true,
    qkvHeadGroups: true,
    layerPrefix: "gpt_neox.layers",
    layers: {
      attn_qkv: "attention.query_key_value",
      attn_output: "attention.dense",
      ffn_up: "mlp.dense_h_to_4h",
      ffn_down: "mlp.dense_4h_to_h",
    },
    globals: {
      "token_embd.weight": "gpt_neox.embed_in.weight",
      "output.weight": "embed_out.weight",
      "output_norm.weight": "gpt_neox.final_layer_norm.weight",
      "output_norm.bias": "gpt_neox.final_layer_norm.bias",
    },
    // The file does not say which GELU: Pythia's checkpoints use the exact one (llama.cpp runs tanh's).
    config: (m) => ({
      hidden_act: "gelu",
      layer_norm_eps: m.num("attention.layer_norm_epsilon"),
      use_parallel_residual: m.bool("use_parallel_residual") ?? true,
      attention_bias: m.has("blk.0.attn_qkv.bias"),
    }),
  },
  "command-r": {
    hf: "CohereForCausalLM",
    modelType: "cohere",
    config: (m) => ({ layer_norm_eps: m.num("attention.layer_norm_epsilon"), logit_scale: m.num("logit_scale", 1) }),
  },
  cohere2: {
    hf: "Cohere2ForCausalLM",
    modelType: "cohere2",
    // llama.cpp's cohere2: a window (and the rotary step) in every layer but each 4th.
    config: (m) => ({
      layer_norm_eps: m.num("attention.layer_norm_epsilon"),
      logit_scale: m.num("logit_scale", 1),
      sliding_window: m.num("attention.sliding_window"),
      sliding_window_pattern: 4,
    }),
  },
  olmo2: {
    hf: "Olmo2ForCausalLM",
    modelType: "olmo2",
    // Norms after each block and none before: llama.cpp's post_* names are Hugging Face's.
    layers: { post_attention_norm: "post_attention_layernorm", post_ffw_norm: "post_feedforward_layernorm" },
  },
  qwen2moe: { hf: "Qwen2MoeForCausalLM", modelType: "qwen2_moe", config: qwenMoe(false) },
  qwen3moe: { hf: "Qwen3MoeForCausalLM", modelType: "qwen3_moe", config: qwenMoe(true) },
  olmoe: {
    hf: "OlmoeForCausalLM",
    modelType: "olmoe",
    config: (m) => ({
      num_experts: m.num("expert_count"),
      num_experts_per_tok: m.num("expert_used_count"),
      norm_topk_prob: false,
    }),
  },
};

/** llama with experts in its FFNs (ffn_gate_exps): Mixtral. */
const MIXTRAL: ArchImport = {
  hf: "MixtralForCausalLM",
  modelType: "mixtral",
  permutedQK: true,
  layers: { ffn_gate_inp: "block_sparse_moe.gate" },
  config: (m) => ({ num_local_experts: m.num("expert_count"), num_experts_per_tok: m.num("expert_used_count") }),
};

/** The architecture a file's general.architecture (and tensors) name, or a ModelError. */
function archOf(g: GgufFile): { name: string; a: ArchImport } {
  const name = String(g.metadata["general.architecture"]);
  const a = name === "llama" && g.tensors.some((t) => t.name.endsWith(".ffn_gate_exps.weight")) ? MIXTRAL : ARCHS[name];
  if (!a) {
    throw new ModelError(
      "UNSUPPORTED_ARCHITECTURE",
      g.file,
      `general.architecture "${name}" cannot be imported (supported: ${Object.keys(ARCHS).join(", ")})`,
    );
  }
  return { name, a };
}

const GLOBAL_TENSORS: Record<string, string> = {
  "token_embd.weight": "model.embed_tokens.weight",
  "output_norm.weight": "model.norm.weight",
  "output_norm.bias": "model.norm.bias",
  "output.weight": "lm_head.weight",
  "output.bias": "lm_head.bias",
};

/** blk.N.<name> → model.layers.N.<module> */
const LAYER_TENSORS: Record<string, string> = {
  attn_norm: "input_layernorm",
  attn_q: "self_attn.q_proj",
  attn_k: "self_attn.k_proj",
  attn_v: "self_attn.v_proj",
  attn_output: "self_attn.o_proj",
  attn_q_norm: "self_attn.q_norm",
  attn_k_norm: "self_attn.k_norm",
  ffn_norm: "post_attention_layernorm",
  ffn_gate: "mlp.gate_proj",
  ffn_up: "mlp.up_proj",
  ffn_down: "mlp.down_proj",
  ffn_gate_inp: "mlp.gate",
  ffn_gate_shexp: "mlp.shared_expert.gate_proj",
  ffn_up_shexp: "mlp.shared_expert.up_proj",
  ffn_down_shexp: "mlp.shared_expert.down_proj",
  ffn_gate_inp_shexp: "mlp.shared_expert_gate",
};

/** A mixture's experts stacked [experts, rows, cols]: each expert's module under its number. */
const EXPERT_TENSORS: Record<string, { qwen: string; mixtral: string }> = {
  ffn_gate_exps: { qwen: "mlp.experts.{e}.gate_proj", mixtral: "block_sparse_moe.experts.{e}.w1" },
  ffn_up_exps: { qwen: "mlp.experts.{e}.up_proj", mixtral: "block_sparse_moe.experts.{e}.w3" },
  ffn_down_exps: { qwen: "mlp.experts.{e}.down_proj", mixtral: "block_sparse_moe.experts.{e}.w2" },
};

/** The Hugging Face name of a GGUF tensor in architecture `a`, or undefined when it has none. */
export function hfTensorName(name: string, a: ArchImport = ARCHS.llama): string | undefined {
  const global = a.globals?.[name] ?? GLOBAL_TENSORS[name];
  if (global) return global;
  const m = /^blk\.(\d+)\.(\w+)\.(weight|bias)$/.exec(name);
  const module = m ? (a.layers?.[m[2]] ?? LAYER_TENSORS[m[2]]) : undefined;
  return m && module ? `${a.layerPrefix ?? "model.layers"}.${m[1]}.${module}.${m[3]}` : undefined;
}

/** Reads and checks a GGUF file's metadata and tensor table (@huggingface/gguf parses it). */
export async function readGguf(file: string): Promise<GgufFile> {
  if (!existsSync(file)) throw new ModelError("NOT_FOUND", file, "GGUF file not found");
  const st = statSync(file);
  if (!st.isFile()) throw new ModelError("NOT_FOUND", file, "is a directory or device, not a GGUF file");
  let parsed: Awaited<ReturnType<typeof gguf>>;
  try {
    parsed = await gguf(file, { allowLocalFile: true });
  } catch (e) {
    throw new ModelError("BAD_GGUF", file, `not a readable GGUF file: ${(e as Error).message}`);
  }
  if (!parsed.littleEndian) {
    throw new ModelError("BAD_GGUF", file, "is a big-endian GGUF file; only little-endian ones are read");
  }
  const metadata = parsed.metadata as Record<string, unknown>;
  const split = metadata["split.count"];
  if (split !== undefined && Number(split) > 1) {
    throw new ModelError(
      "BAD_GGUF",
      file,
      `is one of ${Number(split)} split files; merge them with llama-gguf-split --merge first`,
    );
  }
  const dataStart = Number(parsed.tensorDataOffset);
  // The parser reads past the end of a cut-short file as zeros: a header that ends past the file, or
  // tensor entries without a name or dimensions, are a file cut short (or overwritten), not tensors.
  if (!(dataStart <= st.size)) {
    throw new ModelError(
      "TRUNCATED",
      file,
      `its header (with the list of ${parsed.tensorInfos.length} tensors) runs to byte ${dataStart}, past the end of the file (${st.size} bytes)`,
    );
  }
  parsed.tensorInfos.forEach((t, i) => {
    if (!t.name || t.shape.length === 0)
      throw new ModelError("BAD_GGUF", file, `tensor ${i} of the header has no name or no dimensions`);
  });
  const tensors = parsed.tensorInfos.map((t): GgufTensor => {
    const type = Number(t.dtype);
    if (!isSupportedType(type)) {
      throw new ModelError(
        "UNSUPPORTED_DTYPE",
        file,
        `type ${ggmlTypeName(type)} is not supported (${Object.values(GGML_BLOCKS)
          .map((b) => b.name)
          .join(", ")} are)`,
        t.name,
      );
    }
    const dims = t.shape.map(Number);
    const n = dims.reduce((a, d) => a * d, 1);
    const byteLength = ggmlBytes(type, n);
    if (byteLength === undefined || dims[0] % GGML_BLOCKS[type].values !== 0) {
      throw new ModelError(
        "BAD_GGUF",
        file,
        `${ggmlTypeName(type)} rows of ${dims[0]} values are not whole blocks`,
        t.name,
      );
    }
    const offset = dataStart + Number(t.offset);
    if (offset + byteLength > st.size) {
      throw new ModelError(
        "TRUNCATED",
        file,
        `tensor data [${offset}, ${offset + byteLength}) lies past the end of the file (${st.size} bytes)`,
        t.name,
      );
    }
    return { name: t.name, type, dims, offset, byteLength };
  });
  return { file, metadata, tensors };
}

/**
 * A metadata number (GGUF stores u32, u64 as bigint, f32, ...). An f32 comes back as the shortest
 * decimal that rounds to it (1e-5, not 9.99999974737875e-6): what the converter was given.
 */
function metaNumber(g: GgufFile, key: string, fallback?: number): number {
  const v = g.metadata[key];
  const x = typeof v === "bigint" ? Number(v) : v;
  if (typeof x === "number" && Number.isFinite(x)) return shortestF32(x);
  if (v === undefined && fallback !== undefined) return fallback;
  throw new ModelError(
    "BAD_GGUF",
    g.file,
    v === undefined ? `metadata ${key} is missing` : `metadata ${key} is not a number`,
  );
}

function shortestF32(x: number): number {
  if (Number.isInteger(x) || Math.fround(x) !== x) return x;
  for (let digits = 1; digits < 10; digits++) {
    const y = Number(x.toPrecision(digits));
    if (Math.fround(y) === x) return y;
  }
  return x;
}

/** config.json for the file's model (the Hugging Face config llama.cpp's converter read). */
export function configFromGguf(
  g: GgufFile,
  dtype: StDType,
  eosIds: number[],
  bosId: number | undefined,
): Record<string, unknown> {
  const { name: arch, a } = archOf(g);
  const key = (k: string) => `${arch}.${k}`;
  const meta: Meta = {
    num: (k, fallback) => metaNumber(g, key(k), fallback),
    str: (k) => (typeof g.metadata[key(k)] === "string" ? (g.metadata[key(k)] as string) : undefined),
    bool: (k) => (typeof g.metadata[key(k)] === "boolean" ? (g.metadata[key(k)] as boolean) : undefined),
    has: (tensor) => g.tensors.some((t) => t.name === tensor),
  };
  const hidden = meta.num("embedding_length");
  const heads = meta.num("attention.head_count");
  const headDim = meta.num("attention.key_length", hidden / heads);
  if (meta.num("attention.value_length", headDim) !== headDim) {
    throw new ModelError("BAD_GGUF", g.file, `${key("attention.value_length")} differs from the key length`);
  }
  const rotDim = meta.num("rope.dimension_count", headDim);
  if (rotDim !== headDim && !a.partialRotary) {
    throw new ModelError(
      "BAD_GGUF",
      g.file,
      `a rotary step over ${rotDim} of ${headDim} dims per head is not supported for ${arch}`,
    );
  }
  const embed = g.tensors.find((t) => t.name === "token_embd.weight");
  if (!embed) throw new ModelError("MISSING_TENSOR", g.file, "the file has no token embeddings", "token_embd.weight");
  const config: Record<string, unknown> = {
    architectures: [a.hf],
    model_type: a.modelType,
    hidden_size: hidden,
    intermediate_size: meta.num("feed_forward_length"),
    num_hidden_layers: meta.num("block_count"),
    num_attention_heads: heads,
    num_key_value_heads: meta.num("attention.head_count_kv", heads),
    head_dim: headDim,
    hidden_act: "silu",
    rms_norm_eps: meta.num("attention.layer_norm_rms_epsilon", 1e-6),
    rope_theta: meta.num("rope.freq_base", 10000),
    max_position_embeddings: meta.num("context_length"),
    vocab_size: embed.dims[1],
    tie_word_embeddings: !meta.has("output.weight"),
    torch_dtype: { F32: "float32", F16: "float16", BF16: "bfloat16" }[dtype],
    ...(rotDim !== headDim && { partial_rotary_factor: rotDim / headDim }),
    ...(bosId !== undefined && { bos_token_id: bosId }),
    ...(eosIds.length > 0 && { eos_token_id: eosIds.length === 1 ? eosIds[0] : eosIds }),
    ...a.config?.(meta),
  };
  if (a.permutedQK && (meta.has("blk.0.attn_q.bias") || meta.has("blk.0.attn_k.bias"))) {
    // The converter permutes these too; no Llama checkpoint we know of has them (and our exporter refuses them).
    throw new ModelError("BAD_GGUF", g.file, "Llama q/k biases are not supported", "blk.0.attn_q.bias");
  }
  if (meta.has("blk.0.attn_v.bias") && a.hf === "LlamaForCausalLM") config.attention_bias = true;
  const scaling = meta.str("rope.scaling.type");
  if (scaling === "linear" || scaling === "yarn") {
    config.rope_scaling = {
      rope_type: scaling,
      factor: meta.num("rope.scaling.factor"),
      ...(scaling === "yarn" && { original_max_position_embeddings: meta.num("rope.scaling.original_context_length") }),
    };
  } else if (scaling !== undefined && scaling !== "none") {
    throw new ModelError("BAD_GGUF", g.file, `rope scaling "${scaling}" is not supported (linear, yarn are)`);
  }
  return config;
}

/** general.sampling.* → generation_config.json's keys (the sampling defaults the model ships). */
const SAMPLING_KEYS: Record<string, string> = {
  temp: "temperature",
  top_k: "top_k",
  top_p: "top_p",
  min_p: "min_p",
  penalty_repeat: "repetition_penalty",
};

/**
 * generation_config.json from the sampling defaults llama.cpp's converter copies into the file
 * (general.sampling.*, from the checkpoint's generation_config.json), or undefined when it has none.
 */
export function generationConfig(g: GgufFile): Record<string, number> | undefined {
  const out: Record<string, number> = {};
  for (const [key, name] of Object.entries(SAMPLING_KEYS)) {
    const v = g.metadata[`general.sampling.${key}`];
    if (v !== undefined) out[name] = metaNumber(g, `general.sampling.${key}`);
  }
  return Object.keys(out).length > 0 ? out : undefined;
}

/**
 * Llama 3's rope_scaling from the rope_freqs tensor llama.cpp's converter computed from it (one
 * divisor per rotary frequency): the settings, among those Llama 3.x models use and their
 * neighbours, that give the same divisors.
 */
export function llama3Scaling(
  divisors: Float32Array,
  theta: number,
  dim: number,
  file: string,
): Record<string, unknown> {
  const factor = Math.max(...divisors);
  for (const orig of [8192, 4096, 2048, 16384, 32768, 65536, 131072]) {
    for (const low of [1, 0.5, 2]) {
      for (const high of [4, 2, 8, 1]) {
        if (high <= low) continue;
        const ok = Array.from(divisors).every((d, i) => {
          const wavelen = (2 * Math.PI) / theta ** ((-2 * i) / dim);
          let want: number;
          if (wavelen < orig / high) want = 1;
          else if (wavelen > orig / low) want = factor;
          else {
            const smooth = (orig / wavelen - low) / (high - low);
            want = 1 / ((1 - smooth) / factor + smooth);
          }
          return Math.abs(d - want) <= 1e-5 * want;
        });
        if (ok) {
          return {
            rope_type: "llama3",
            factor,
            low_freq_factor: low,
            high_freq_factor: high,
            original_max_position_embeddings: orig,
          };
        }
      }
    }
  }
  throw new ModelError(
    "BAD_GGUF",
    file,
    "rope_freqs.weight matches no Llama 3 rope scaling settings (factor, low/high frequency factors, original context)",
    "rope_freqs.weight",
  );
}

/**
 * llama.cpp's interleaved rotary pairs → Hugging Face's rotate-half layout, on a q/k projection's
 * rows (`heads` heads of `headDim` rows of `rowBytes` each): within each head, output row
 * h·(headDim/2) + j is input row 2j + h. The inverse of export.ts's `permuteRotary` (full rotary).
 */
export function unpermuteRotary(src: Uint8Array, heads: number, headDim: number, rowBytes: number): Uint8Array {
  if (src.length !== heads * headDim * rowBytes) throw new Error("unpermuteRotary: size mismatch");
  const dst = new Uint8Array(src.length);
  const half = headDim / 2;
  for (let h = 0; h < heads; h++) {
    const base = h * headDim;
    for (let r = 0; r < headDim; r++) {
      const from = base + 2 * (r % half) + Math.floor(r / half);
      dst.set(src.subarray(from * rowBytes, (from + 1) * rowBytes), (base + r) * rowBytes);
    }
  }
  return dst;
}

/**
 * The dtype the folder's weights get: the matrices' own when they are all f32, all f16 or all bf16
 * (nothing lost); bf16 for quantized files. bf16 keeps 8 significant bits, well under what Q8_0 and
 * the k-quants lose already, and the engine's bf16 kernels decode faster than its f16 ones (f16 is
 * converted on the fly; README, GGUF files).
 */
function importDtype(g: GgufFile): StDType {
  const matrices = g.tensors.filter((t) => t.dims.length >= 2).map((t) => t.type);
  for (const [type, dtype] of [
    [GgmlTypeId.F32, "F32"],
    [GgmlTypeId.F16, "F16"],
    [GgmlTypeId.BF16, "BF16"],
  ] as const) {
    if (matrices.length > 0 && matrices.every((t) => t === type)) return dtype;
  }
  return "BF16";
}

/** Values dequantized at a time (16 MB of float32): whole rows, so that no block is split. */
const CHUNK_VALUES = 4 << 20;

/** How a tensor's values change on the way in. */
type Transform = "copy" | "unpermute" | "minusOne" | "transpose" | "headGroups";

/**
 * One tensor of the folder: where its bytes lie in the GGUF file (one tensor, a slice of one, or
 * pieces written one after another: GraniteMoE's gate and up rows of each expert), and what it is
 * called and becomes.
 */
export interface PlannedTensor {
  parts: GgufTensor[];
  entry: TensorEntry;
  transform: Transform;
}

/** What an import writes: config.json, the tokenizer files, and each tensor's source and Hugging Face entry. */
export interface GgufImportPlan {
  architecture: string;
  hfArchitecture: string;
  dtype: StDType;
  config: Record<string, unknown>;
  tokenizer: ImportedTokenizer;
  tensors: PlannedTensor[];
  /** How many tensors the file stores in each ggml type (e.g. {Q4_K: 97, Q6_K: 17, F32: 65}). */
  sourceTypes: Record<string, number>;
  /** What weights "auto" keeps the import as (autoWeightsOf). */
  autoWeights: WeightFormat;
}

/** Plans the import of a read GGUF file: every check, reading no tensor data but the rotary factors'. */
export function planImport(g: GgufFile): GgufImportPlan {
  const { name: arch, a } = archOf(g);
  const dtype = importDtype(g);
  const tokenizer = tokenizerFromGguf(g.metadata, g.file);
  const config = configFromGguf(g, dtype, tokenizer.eosIds, tokenizer.bosId);
  const tensors: PlannedTensor[] = [];
  const plain = (t: GgufTensor, name: string, transform: Transform = "copy") =>
    tensors.push({ parts: [t], entry: { name, dtype, shape: [...t.dims].reverse() }, transform });
  const byName = new Map(g.tensors.map((t) => [t.name, t]));
  for (const t of g.tensors) {
    if (a.fusedExperts) {
      const fused = fusedExpertTensor(t, byName, dtype, g.file);
      if (fused !== undefined) {
        if (fused) tensors.push(fused);
        continue;
      }
    }
    if (t.name === "rope_freqs.weight") {
      const divisors = dequantize(t.type, readBytes(g.file, t.offset, t.byteLength), t.dims[0]);
      config.rope_scaling = llama3Scaling(divisors, config.rope_theta as number, config.head_dim as number, g.file);
      continue;
    }
    const longrope = /^rope_factors_(long|short)\.weight$/.exec(t.name);
    if (longrope) {
      // Phi-3's longrope factors (one per rotary frequency); llama.cpp's attention factor rides along.
      const factors = Array.from(dequantize(t.type, readBytes(g.file, t.offset, t.byteLength), t.dims[0]), shortestF32);
      // The attention factor is written only where it is not the one transformers derives (the
      // converter's f32 of that is recognised, so the exact value is kept).
      const attn = g.metadata[`${arch}.rope.scaling.attn_factor`];
      const orig = config.original_max_position_embeddings as number;
      const scale = (config.max_position_embeddings as number) / orig;
      const derived = scale <= 1 ? 1 : Math.sqrt(1 + Math.log(scale) / Math.log(orig));
      config.rope_scaling = {
        ...(config.rope_scaling as object),
        rope_type: "longrope",
        [`${longrope[1]}_factor`]: factors,
        ...(typeof attn === "number" && attn !== Math.fround(derived) && { attention_factor: shortestF32(attn) }),
      };
      continue;
    }
    const bias = /^blk\.(\d+)\.exp_probs_b\.bias$/.exec(t.name);
    if (bias) {
      // ERNIE 4.5's expert-choice correction, [1, experts] in transformers.
      const name = `model.layers.${bias[1]}.mlp.moe_statics.e_score_correction_bias`;
      tensors.push({ parts: [t], entry: { name, dtype, shape: [1, t.dims[0]] }, transform: "copy" });
      continue;
    }
    const stacked = /^blk\.(\d+)\.(ffn_(?:gate|up|down)_exps)\.weight$/.exec(t.name);
    if (stacked && t.dims.length === 3) {
      const module = EXPERT_TENSORS[stacked[2]][a === MIXTRAL ? "mixtral" : "qwen"];
      for (let e = 0; e < t.dims[2]; e++) {
        plain(expertSlice(t, e), `model.layers.${stacked[1]}.${module.replace("{e}", String(e))}.weight`);
      }
      continue;
    }
    const name = hfTensorName(t.name, a);
    if (!name) throw new ModelError("BAD_GGUF", g.file, `tensor has no counterpart in a ${a.hf}`, t.name);
    if (t.dims.length > 2) {
      throw new ModelError("BAD_GGUF", g.file, `${t.dims.length}-D tensors are not supported here`, t.name);
    }
    const isNorm = t.dims.length === 1 && /_norm\.weight$/.test(t.name);
    if (a.qkvHeadGroups && /\.attn_qkv\.(weight|bias)$/.test(t.name)) {
      plain(t, name, "headGroups");
      continue;
    }
    if (a.conv1d && t.dims.length === 2 && t.name.startsWith("blk.")) {
      tensors.push({ parts: [t], entry: { name, dtype, shape: [...t.dims] }, transform: "transpose" });
      continue;
    }
    plain(
      t,
      name,
      a.permutedQK && /\.attn_[qk]\.weight$/.test(t.name)
        ? "unpermute"
        : a.normsPlusOne && isNorm
          ? "minusOne"
          : "copy",
    );
  }
  const sourceTypes: Record<string, number> = {};
  for (const t of g.tensors) sourceTypes[ggmlTypeName(t.type)] = (sourceTypes[ggmlTypeName(t.type)] ?? 0) + 1;
  const hfArchitecture = (config.architectures as string[])[0];
  return {
    architecture: arch,
    hfArchitecture,
    dtype,
    config,
    tokenizer,
    tensors,
    sourceTypes,
    autoWeights: autoWeightsOf(tensors),
  };
}

/** Expert e's [rows, cols] matrix in a [experts, rows, cols] tensor: the e-th slice, back to back. */
function expertSlice(t: GgufTensor, e: number): GgufTensor {
  const [cols, rows, experts] = t.dims;
  const bytes = t.byteLength / experts;
  return { ...t, name: `${t.name}[${e}]`, dims: [cols, rows], offset: t.offset + e * bytes, byteLength: bytes };
}

/**
 * GraniteMoE's stacked tensors from llama.cpp's split ones: each expert's gate rows then its up rows
 * as block_sparse_moe.input_linear [experts, 2F, hidden], the down matrices as output_linear as they
 * are, the shared expert's gate and up as shared_mlp.input_linear. Returns the tensor to write, null
 * for a piece already written with its partner (the up halves), undefined for other tensors.
 */
function fusedExpertTensor(
  t: GgufTensor,
  byName: Map<string, GgufTensor>,
  dtype: StDType,
  file: string,
): PlannedTensor | null | undefined {
  const m = /^blk\.(\d+)\.(ffn_(?:gate|up|down)_(?:exps|shexp))\.weight$/.exec(t.name);
  if (!m) return undefined;
  const layer = `model.layers.${m[1]}`;
  const partner = (name: string) => {
    const p = byName.get(`blk.${m[1]}.${name}.weight`);
    if (!p || p.type !== t.type || p.dims.join() !== t.dims.join())
      throw new ModelError("BAD_GGUF", file, `${name} is missing or unlike ${m[2]}`, t.name);
    return p;
  };
  const entry = (name: string, shape: number[]): TensorEntry => ({ name, dtype, shape });
  switch (m[2]) {
    case "ffn_gate_exps": {
      const up = partner("ffn_up_exps");
      const [cols, rows, experts] = t.dims;
      const parts = Array.from({ length: experts }, (_, e) => [expertSlice(t, e), expertSlice(up, e)]).flat();
      return {
        parts,
        entry: entry(`${layer}.block_sparse_moe.input_linear.weight`, [experts, 2 * rows, cols]),
        transform: "copy",
      };
    }
    case "ffn_gate_shexp": {
      const [cols, rows] = t.dims;
      const parts = [t, partner("ffn_up_shexp")];
      return { parts, entry: entry(`${layer}.shared_mlp.input_linear.weight`, [2 * rows, cols]), transform: "copy" };
    }
    case "ffn_down_exps":
      return {
        parts: [t],
        entry: entry(`${layer}.block_sparse_moe.output_linear.weight`, [...t.dims].reverse()),
        transform: "copy",
      };
    case "ffn_down_shexp":
      return {
        parts: [t],
        entry: entry(`${layer}.shared_mlp.output_linear.weight`, [...t.dims].reverse()),
        transform: "copy",
      };
    default:
      return null; // ffn_up_exps, ffn_up_shexp: written with their gate
  }
}

/** Writes the model in `file` as a Hugging Face model folder at `outDir` (atomically: built beside it, then renamed). */
export async function importGguf(
  file: string,
  outDir: string,
  opts: { onProgress?: (done: number, total: number) => void } = {},
): Promise<GgufImportResult> {
  const g = await readGguf(file);
  const {
    architecture: arch,
    hfArchitecture,
    dtype,
    config,
    tokenizer: tok,
    tensors: plan,
    sourceTypes,
    autoWeights,
  } = planImport(g);
  const heads: Heads = {
    q: config.num_attention_heads as number,
    kv: config.num_key_value_heads as number,
    dim: config.head_dim as number,
  };

  const header = buildHeader(
    plan.map((p) => p.entry),
    { format: "pt", source: basename(file) },
  );
  const total = plan.reduce((a, p) => a + p.parts.reduce((n, t) => n + t.dims.reduce((x, d) => x * d, 1), 0), 0);
  checkFreeSpace(dirname(outDir), header.length + total * DTYPE_BYTES[dtype], `importing ${basename(file)}`);
  const tmp = tempFolderFor(outDir);
  try {
    const weightsFile = join(tmp, "model.safetensors");
    const out = openSync(weightsFile, "w");
    let bytes = 0;
    try {
      writeAll(out, header, weightsFile);
      bytes += header.length;
      let done = 0;
      const in_ = openSync(file, "r");
      try {
        for (const { parts, transform } of plan) {
          for (const t of parts) {
            for (const { chunk, values } of convertedChunks(in_, file, t, transform, dtype, heads)) {
              writeAll(out, chunk, weightsFile);
              bytes += chunk.byteLength;
              done += values;
              opts.onProgress?.(done, total);
              // Let the host's event loop send the progress (and answer other requests) between chunks.
              await new Promise((r) => setImmediate(r));
            }
          }
        }
      } finally {
        closeSync(in_);
      }
    } finally {
      closeSync(out);
    }
    const json = (name: string, value: unknown) =>
      writeFileSync(join(tmp, name), JSON.stringify(value, null, 2) + "\n");
    json("config.json", config);
    json("tokenizer.json", tok.tokenizer);
    json("tokenizer_config.json", tok.config);
    const generation = generationConfig(g);
    if (generation) json("generation_config.json", generation);
    // Where the folder came from (modelFolderFor replaces an older import of the same file), and
    // which of its matrices int8 / int4 weights can take from the file's blocks exactly.
    const { size, mtimeMs } = statSync(file);
    const blocks = blockTensors(plan, heads);
    const record = { source: file, sourceTypes, autoWeights, importVersion: IMPORT_VERSION, size, mtimeMs, blocks };
    json(IMPORT_RECORD, record);
    moveIntoPlace(tmp, outDir);
    return {
      dir: outDir,
      ggufArchitecture: arch,
      architecture: hfArchitecture,
      dtype,
      sourceTypes,
      tensors: plan.length,
      bytes,
    };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/**
 * The GGUF file a model folder was imported from (its IMPORT_RECORD), when the folder is an import
 * and the file is still there: the llama.cpp peer runs that file as it is, quantized.
 */
export function importSource(dir: string): ImportRecord | undefined {
  const r = importRecord(dir);
  return r && existsSync(r.file) ? r : undefined;
}

/**
 * What an imported folder's IMPORT_RECORD says: the GGUF file it came from (which may be gone since),
 * how many tensors of each ggml type it stored, the file's size and modification time at import, and
 * the matrices int8 / int4 weights can take from its blocks (entries that do not check out left
 * out; none in imports from before IMPORT_VERSION 4).
 */
export interface ImportRecord {
  file: string;
  sourceTypes: Record<string, number>;
  /** What weights "auto" keeps the import as (autoWeightsOf; none in imports from before IMPORT_VERSION 5). */
  autoWeights?: WeightFormat;
  size?: number;
  mtimeMs?: number;
  blocks: Record<string, BlockTensor>;
}

/** A model folder's IMPORT_RECORD, or undefined for a folder that is no import. */
export function importRecord(dir: string): ImportRecord | undefined {
  const record = join(dir, IMPORT_RECORD);
  if (!existsSync(record)) return undefined;
  try {
    const r: unknown = JSON.parse(readFileSync(record, "utf8"));
    if (!isObject(r) || typeof r.source !== "string") return undefined;
    const types = isObject(r.sourceTypes) ? r.sourceTypes : {};
    const sourceTypes = Object.fromEntries(Object.entries(types).filter(([, n]) => typeof n === "number"));
    const blocks = Object.fromEntries(
      Object.entries(isObject(r.blocks) ? r.blocks : {}).filter(([, b]) => isBlockTensor(b)),
    );
    return {
      file: r.source,
      sourceTypes: sourceTypes as Record<string, number>,
      ...(isWeightFormat(r.autoWeights) && { autoWeights: r.autoWeights }),
      ...(typeof r.size === "number" && { size: r.size }),
      ...(typeof r.mtimeMs === "number" && { mtimeMs: r.mtimeMs }),
      blocks: blocks as Record<string, BlockTensor>,
    };
  } catch {
    return undefined;
  }
}

/** Attention heads, for un-permuting q/k rows. */
interface Heads {
  q: number;
  kv: number;
  dim: number;
}

/** Whether quantized weights take blocks of ggml type `type` as they are (weight-format.ts blockFit). */
const isBlockType = (type: number): boolean => blockFit(ggmlTypeName(type)) !== undefined;

/**
 * A matrix of the folder whose GGUF source stores it as blocks of a type isBlockType takes, whole
 * and untransformed but for q/k's row order: where its blocks lie, and (`unpermute`) the heads whose
 * interleaved rotary rows the import put back in rotate-half order.
 */
export interface BlockTensor {
  type: GgmlTypeId;
  offset: number;
  rows: number;
  cols: number;
  unpermute?: { heads: number; headDim: number };
}

const isCount = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) > 0;

export function isBlockTensor(b: unknown): b is BlockTensor {
  if (!isObject(b) || !isCount(b.rows) || !isCount(b.cols) || !Number.isSafeInteger(b.offset)) return false;
  if (typeof b.type !== "number" || !isBlockType(b.type)) return false;
  if (b.unpermute === undefined) return true;
  const u = b.unpermute;
  return isObject(u) && isCount(u.heads) && isCount(u.headDim) && u.headDim % 2 === 0 && u.heads * u.headDim === b.rows;
}

/** The folder's tensors (by Hugging Face name) that int8 / int4 weights can take from the GGUF blocks. */
function blockTensors(plan: readonly PlannedTensor[], heads: Heads): Record<string, BlockTensor> {
  const out: Record<string, BlockTensor> = {};
  for (const p of plan) {
    const t = blockPart(p);
    if (!t) continue;
    const [rows, cols] = p.entry.shape;
    out[p.entry.name] = { type: t.type, offset: t.offset, rows, cols };
    if (p.transform === "unpermute") {
      out[p.entry.name].unpermute = { heads: t.name.includes("attn_q") ? heads.q : heads.kv, headDim: heads.dim };
    }
  }
  return out;
}

/** The GGUF tensor whose blocks a planned matrix is, whole (up to q/k's row order), when quantized weights can take them. */
function blockPart({ parts, entry, transform }: PlannedTensor): PlannedTensor["parts"][number] | undefined {
  const t = parts[0];
  if (parts.length !== 1 || entry.shape.length !== 2 || !isBlockType(t.type)) return undefined;
  return transform === "copy" || transform === "unpermute" ? t : undefined;
}

/**
 * What weights "auto" keeps an import of the file as (weight-format.ts): its matrices as stored
 * ("file") when none is quantized; int4 when every matrix is blocks int4 holds as they are (Q4_0,
 * Q4_1, Q4_K); int4+int8 when some are (the others, Q6_K, Q8_0 or float, as int8: a Q4_K_M file's
 * Q6_K head keeps its precision); else int8.
 */
function autoWeightsOf(tensors: readonly PlannedTensor[]): WeightFormat {
  const matrices = tensors.filter((p) => p.entry.shape.length === 2);
  const isFloat = (type: number) => /^B?F\d+$/.test(ggmlTypeName(type));
  if (matrices.every((p) => p.parts.every((t) => isFloat(t.type)))) return "file";
  const fourBit = matrices.filter((p) => {
    const t = blockPart(p);
    return t !== undefined && isInt4Block(ggmlTypeName(t.type));
  }).length;
  return fourBit === matrices.length ? "int4" : fourBit > 0 ? "int4+int8" : "int8";
}

/** The ggml type of each planned matrix quantized weights will take from the file's blocks (by Hugging Face name). */
export function plannedBlockTypes(plan: GgufImportPlan): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of plan.tensors) {
    const t = blockPart(p);
    if (t) out[p.entry.name] = ggmlTypeName(t.type);
  }
  return out;
}

/**
 * For each row of a q or k matrix the import un-permuted, the row of the GGUF tensor it came from
 * (unpermuteRotary applied to row numbers).
 */
export function unpermutedRowOrder(heads: number, headDim: number): Int32Array {
  const rows = Int32Array.from({ length: heads * headDim }, (_, i) => i);
  return new Int32Array(unpermuteRotary(new Uint8Array(rows.buffer), heads, headDim, 4).buffer);
}

/**
 * A tensor's bytes in the folder's dtype, transformed, in chunks of whole rows (q/k and Conv1D
 * matrices whole: their transforms move rows across chunks); `values`: how many each chunk holds.
 */
function* convertedChunks(
  fd: number,
  file: string,
  t: GgufTensor,
  transform: Transform,
  dtype: StDType,
  heads: Heads,
): Generator<{ chunk: Uint8Array; values: number }> {
  const cols = t.dims[0];
  const rows = t.dims.slice(1).reduce((a, d) => a * d, 1);
  const rowBytes = t.byteLength / rows;
  const whole = transform !== "copy" && transform !== "minusOne";
  const step = whole ? rows : Math.max(1, Math.floor(CHUNK_VALUES / cols));
  for (let r = 0; r < rows; r += step) {
    const n = Math.min(step, rows - r);
    const raw = new Uint8Array(n * rowBytes);
    readFully(fd, raw, t.offset + r * rowBytes, file);
    let chunk: Uint8Array;
    if (transform === "minusOne" || transform === "transpose") {
      const x = dequantize(t.type, raw, n * cols);
      const values = transform === "minusOne" ? x.map((v) => v - 1) : transposed(x, n, cols);
      chunk = convertF32(new Uint32Array(values.buffer), values.length, dtype, new Uint16Array(values.length));
    } else {
      chunk = dequantizeTo(t.type, raw, n * cols, dtype);
    }
    if (transform === "unpermute") {
      const h = t.name.includes("attn_q") ? heads.q : heads.kv;
      if (h * heads.dim !== rows) {
        throw new ModelError("SHAPE_MISMATCH", file, `${rows} rows are not ${h} heads of ${heads.dim}`, t.name);
      }
      chunk = unpermuteRotary(chunk, h, heads.dim, chunk.byteLength / rows);
    }
    if (transform === "headGroups") chunk = headGroups(chunk, heads.q);
    yield { chunk, values: n * cols };
  }
}

/**
 * llama.cpp's fused q/k/v (all q rows, all k, all v; a bias the same, one value per row) back to
 * GPT-NeoX's head by head ([q_h; k_h; v_h]): the inverse of export.ts's `qkvBlocks`.
 */
export function headGroups(src: Uint8Array, heads: number): Uint8Array {
  const piece = src.byteLength / (3 * heads); // one head's rows of q, k or v
  const dst = new Uint8Array(src.byteLength);
  for (let h = 0; h < heads; h++) {
    for (let j = 0; j < 3; j++) {
      dst.set(src.subarray((j * heads + h) * piece, (j * heads + h + 1) * piece), (h * 3 + j) * piece);
    }
  }
  return dst;
}

/** A row-major [rows, cols] matrix as [cols, rows]. */
export function transposed(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = x[r * cols + c];
  return out;
}
