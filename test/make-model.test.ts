// Tests for core/modelgen: random HF-layout models (safetensors layout, names, determinism,
// sharding), the byte-level BPE tokenizer, the ChatML template, option validation and exact
// float conversion. Run: npx tsc -p tsconfig.json && node --test dist/test/make-model.test.js

import { test } from "node:test";
import assert from "node:assert/strict";
import {
  mkdtempSync,
  readFileSync,
  readdirSync,
  existsSync,
  rmSync,
  mkdirSync,
  writeFileSync,
  statSync,
  openSync,
  readSync,
  closeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import {
  ARCHS,
  makeModel,
  MakeModelError,
  PRESETS,
  resolveShape,
  planTensors,
  type Arch,
  type DType,
} from "../core/modelgen/make-model.js";
import {
  f32ToBf16,
  f32ToF16,
  bf16ToF32,
  f16ToF32,
  f32BitsToBf16,
  f32BitsToF16,
  DTYPE_BYTES,
  type HeaderEntry,
  type StDType,
} from "../core/modelgen/safetensors-writer.js";
import { makeTokenizer, SPECIAL_TOKENS, CHATML_TEMPLATE } from "../core/modelgen/tokenizer-gen.js";

const ROOT = mkdtempSync(join(tmpdir(), "make-model-test-"));
process.on("exit", () => rmSync(ROOT, { recursive: true, force: true }));
let counter = 0;
const freshDir = (tag: string) => join(ROOT, `${tag}-${counter++}`);

const ARCHES = Object.keys(ARCHS) as Arch[]; // every architecture make-model writes
const DTYPES: DType[] = ["f32", "f16", "bf16"];
const ST: Record<DType, StDType> = { f32: "F32", f16: "F16", bf16: "BF16" };

/** Expected HF tensor names for the tiny presets (2 layers, smollm3 and gemma 4), written out independently of the tables. */
function expectedNames(arch: Arch, tied: boolean, gpt2Prefix = false): string[] {
  const L = ["smollm3", "gemma2", "gemma3", "cohere2", "exaone4"].includes(arch) ? [0, 1, 2, 3] : [0, 1];
  switch (arch) {
    case "llama":
    case "qwen2":
    case "qwen3":
    case "smollm3":
    case "granite":
    case "minicpm":
    case "ernie":
    case "gemma": {
      const attn =
        arch === "qwen2"
          ? [
              "q_proj.weight",
              "q_proj.bias",
              "k_proj.weight",
              "k_proj.bias",
              "v_proj.weight",
              "v_proj.bias",
              "o_proj.weight",
            ]
          : arch === "qwen3"
            ? ["q_proj.weight", "k_proj.weight", "v_proj.weight", "q_norm.weight", "k_norm.weight", "o_proj.weight"]
            : ["q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"];
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) => [
          `model.layers.${i}.input_layernorm.weight`,
          ...attn.map((a) => `model.layers.${i}.self_attn.${a}`),
          `model.layers.${i}.post_attention_layernorm.weight`,
          `model.layers.${i}.mlp.gate_proj.weight`,
          `model.layers.${i}.mlp.up_proj.weight`,
          `model.layers.${i}.mlp.down_proj.weight`,
        ]),
        "model.norm.weight",
        ...(tied ? [] : ["lm_head.weight"]),
      ];
    }
    case "stablelm":
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) =>
          [
            "input_layernorm.weight",
            "input_layernorm.bias",
            "self_attn.q_proj.weight",
            "self_attn.q_proj.bias",
            "self_attn.k_proj.weight",
            "self_attn.k_proj.bias",
            "self_attn.v_proj.weight",
            "self_attn.v_proj.bias",
            "self_attn.o_proj.weight",
            "post_attention_layernorm.weight",
            "post_attention_layernorm.bias",
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
            "mlp.down_proj.weight",
          ].map((n) => `model.layers.${i}.${n}`),
        ),
        "model.norm.weight",
        "model.norm.bias",
        ...(tied ? [] : ["lm_head.weight"]),
      ];
    case "glm":
    case "glm4":
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) =>
          [
            "input_layernorm.weight",
            "self_attn.q_proj.weight",
            "self_attn.q_proj.bias",
            "self_attn.k_proj.weight",
            "self_attn.k_proj.bias",
            "self_attn.v_proj.weight",
            "self_attn.v_proj.bias",
            "self_attn.o_proj.weight",
            "post_attention_layernorm.weight",
            "mlp.gate_up_proj.weight",
            "mlp.down_proj.weight",
            ...(arch === "glm4" ? ["post_self_attn_layernorm.weight", "post_mlp_layernorm.weight"] : []),
          ].map((n) => `model.layers.${i}.${n}`),
        ),
        "model.norm.weight",
        ...(tied ? [] : ["lm_head.weight"]),
      ];
    case "cohere":
    case "cohere2":
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) =>
          [
            "input_layernorm.weight",
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
            "self_attn.o_proj.weight",
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
            "mlp.down_proj.weight",
          ].map((n) => `model.layers.${i}.${n}`),
        ),
        "model.norm.weight",
        ...(tied ? [] : ["lm_head.weight"]),
      ];
    case "starcoder2":
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) =>
          [
            "input_layernorm.weight",
            "input_layernorm.bias",
            "self_attn.q_proj.weight",
            "self_attn.q_proj.bias",
            "self_attn.k_proj.weight",
            "self_attn.k_proj.bias",
            "self_attn.v_proj.weight",
            "self_attn.v_proj.bias",
            "self_attn.o_proj.weight",
            "self_attn.o_proj.bias",
            "post_attention_layernorm.weight",
            "post_attention_layernorm.bias",
            "mlp.c_fc.weight",
            "mlp.c_fc.bias",
            "mlp.c_proj.weight",
            "mlp.c_proj.bias",
          ].map((n) => `model.layers.${i}.${n}`),
        ),
        "model.norm.weight",
        "model.norm.bias",
        ...(tied ? [] : ["lm_head.weight"]),
      ];
    case "gptj":
      return [
        "transformer.wte.weight",
        ...L.flatMap((i) =>
          [
            "ln_1.weight",
            "ln_1.bias",
            "attn.q_proj.weight",
            "attn.k_proj.weight",
            "attn.v_proj.weight",
            "attn.out_proj.weight",
            "mlp.fc_in.weight",
            "mlp.fc_in.bias",
            "mlp.fc_out.weight",
            "mlp.fc_out.bias",
          ].map((n) => `transformer.h.${i}.${n}`),
        ),
        "transformer.ln_f.weight",
        "transformer.ln_f.bias",
        ...(tied ? [] : ["lm_head.weight", "lm_head.bias"]),
      ];
    case "gptneox":
      return [
        "gpt_neox.embed_in.weight",
        ...L.flatMap((i) =>
          [
            "input_layernorm.weight",
            "input_layernorm.bias",
            "post_attention_layernorm.weight",
            "post_attention_layernorm.bias",
            "attention.query_key_value.weight",
            "attention.query_key_value.bias",
            "attention.dense.weight",
            "attention.dense.bias",
            "mlp.dense_h_to_4h.weight",
            "mlp.dense_h_to_4h.bias",
            "mlp.dense_4h_to_h.weight",
            "mlp.dense_4h_to_h.bias",
          ].map((n) => `gpt_neox.layers.${i}.${n}`),
        ),
        "gpt_neox.final_layer_norm.weight",
        "gpt_neox.final_layer_norm.bias",
        ...(tied ? [] : ["embed_out.weight"]),
      ];
    case "phi":
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) =>
          [
            "input_layernorm.weight",
            "input_layernorm.bias",
            "self_attn.q_proj.weight",
            "self_attn.q_proj.bias",
            "self_attn.k_proj.weight",
            "self_attn.k_proj.bias",
            "self_attn.v_proj.weight",
            "self_attn.v_proj.bias",
            "self_attn.dense.weight",
            "self_attn.dense.bias",
            "mlp.fc1.weight",
            "mlp.fc1.bias",
            "mlp.fc2.weight",
            "mlp.fc2.bias",
          ].map((n) => `model.layers.${i}.${n}`),
        ),
        "model.final_layernorm.weight",
        "model.final_layernorm.bias",
        ...(tied ? [] : ["lm_head.weight"]),
        "lm_head.bias",
      ];
    case "olmo":
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) =>
          [
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
            "self_attn.o_proj.weight",
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
            "mlp.down_proj.weight",
          ].map((n) => `model.layers.${i}.${n}`),
        ),
        ...(tied ? [] : ["lm_head.weight"]),
      ];
    case "internlm2":
      return [
        "model.tok_embeddings.weight",
        ...L.flatMap((i) =>
          [
            "attention_norm.weight",
            "attention.wqkv.weight",
            "attention.wo.weight",
            "ffn_norm.weight",
            "feed_forward.w1.weight",
            "feed_forward.w3.weight",
            "feed_forward.w2.weight",
          ].map((n) => `model.layers.${i}.${n}`),
        ),
        "model.norm.weight",
        ...(tied ? [] : ["output.weight"]),
      ];
    case "mixtral":
    case "qwen2moe":
    case "qwen3moe":
    case "olmoe": {
      const experts = { mixtral: 4, qwen2moe: 4, qwen3moe: 8, olmoe: 8 }[arch];
      const attn = {
        mixtral: ["q_proj.weight", "k_proj.weight", "v_proj.weight", "o_proj.weight"],
        qwen2moe: [
          "q_proj.weight",
          "q_proj.bias",
          "k_proj.weight",
          "k_proj.bias",
          "v_proj.weight",
          "v_proj.bias",
        ].concat(["o_proj.weight"]),
        qwen3moe: [
          "q_proj.weight",
          "k_proj.weight",
          "v_proj.weight",
          "q_norm.weight",
          "k_norm.weight",
          "o_proj.weight",
        ],
        olmoe: ["q_proj.weight", "k_proj.weight", "v_proj.weight", "q_norm.weight", "k_norm.weight", "o_proj.weight"],
      }[arch];
      const [block, mats] =
        arch === "mixtral" ? ["block_sparse_moe", ["w1", "w3", "w2"]] : ["mlp", ["gate_proj", "up_proj", "down_proj"]];
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) => [
          `model.layers.${i}.input_layernorm.weight`,
          ...attn.map((a) => `model.layers.${i}.self_attn.${a}`),
          `model.layers.${i}.post_attention_layernorm.weight`,
          `model.layers.${i}.${block}.gate.weight`,
          ...Array.from({ length: experts }, (_, e) =>
            mats.map((m) => `model.layers.${i}.${block}.experts.${e}.${m}.weight`),
          ).flat(),
          ...(arch === "qwen2moe"
            ? ["gate_proj", "up_proj", "down_proj"].map((m) => `model.layers.${i}.mlp.shared_expert.${m}.weight`)
            : []),
          ...(arch === "qwen2moe" ? [`model.layers.${i}.mlp.shared_expert_gate.weight`] : []),
        ]),
        "model.norm.weight",
        ...(tied ? [] : ["lm_head.weight"]),
      ];
    }
    case "phimoe":
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) =>
          [
            "input_layernorm.weight",
            "input_layernorm.bias",
            ...["q", "k", "v", "o"].flatMap((m) => [`self_attn.${m}_proj.weight`, `self_attn.${m}_proj.bias`]),
            "post_attention_layernorm.weight",
            "post_attention_layernorm.bias",
            "block_sparse_moe.gate.weight",
            ...Array.from({ length: 4 }, (_, e) =>
              ["w1", "w3", "w2"].map((m) => `block_sparse_moe.experts.${e}.${m}.weight`),
            ).flat(),
          ].map((n) => `model.layers.${i}.${n}`),
        ),
        "model.norm.weight",
        "model.norm.bias",
        ...(tied ? [] : ["lm_head.weight"]),
        "lm_head.bias",
      ];
    case "erniemoe":
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) =>
          [
            "input_layernorm.weight",
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
            "self_attn.o_proj.weight",
            "post_attention_layernorm.weight",
            "mlp.gate.weight",
            ...Array.from({ length: 8 }, (_, e) =>
              ["gate_proj", "up_proj", "down_proj"].map((m) => `mlp.experts.${e}.${m}.weight`),
            ).flat(),
            "mlp.moe_statics.e_score_correction_bias",
            "mlp.shared_experts.gate_proj.weight",
            "mlp.shared_experts.up_proj.weight",
            "mlp.shared_experts.down_proj.weight",
          ].map((n) => `model.layers.${i}.${n}`),
        ),
        "model.norm.weight",
        ...(tied ? [] : ["lm_head.weight"]),
      ];
    case "granitemoe":
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) =>
          [
            "input_layernorm.weight",
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
            "self_attn.o_proj.weight",
            "post_attention_layernorm.weight",
            "block_sparse_moe.router.layer.weight",
            "block_sparse_moe.input_linear.weight",
            "block_sparse_moe.output_linear.weight",
          ].map((n) => `model.layers.${i}.${n}`),
        ),
        "model.norm.weight",
        ...(tied ? [] : ["lm_head.weight"]),
      ];
    case "olmo2":
    case "exaone4":
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) =>
          [
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
            "self_attn.q_norm.weight",
            "self_attn.k_norm.weight",
            "self_attn.o_proj.weight",
            "post_attention_layernorm.weight",
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
            "mlp.down_proj.weight",
            "post_feedforward_layernorm.weight",
          ].map((n) => `model.layers.${i}.${n}`),
        ),
        "model.norm.weight",
        ...(tied ? [] : ["lm_head.weight"]),
      ];
    case "gemma2":
    case "gemma3":
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) =>
          [
            "input_layernorm.weight",
            "self_attn.q_proj.weight",
            "self_attn.k_proj.weight",
            "self_attn.v_proj.weight",
            ...(arch === "gemma3" ? ["self_attn.q_norm.weight", "self_attn.k_norm.weight"] : []),
            "self_attn.o_proj.weight",
            "post_attention_layernorm.weight",
            "pre_feedforward_layernorm.weight",
            "mlp.gate_proj.weight",
            "mlp.up_proj.weight",
            "mlp.down_proj.weight",
            "post_feedforward_layernorm.weight",
          ].map((n) => `model.layers.${i}.${n}`),
        ),
        "model.norm.weight",
        ...(tied ? [] : ["lm_head.weight"]),
      ];
    case "phi3":
      return [
        "model.embed_tokens.weight",
        ...L.flatMap((i) =>
          [
            "input_layernorm.weight",
            "self_attn.qkv_proj.weight",
            "self_attn.o_proj.weight",
            "post_attention_layernorm.weight",
            "mlp.gate_up_proj.weight",
            "mlp.down_proj.weight",
          ].map((n) => `model.layers.${i}.${n}`),
        ),
        "model.norm.weight",
        ...(tied ? [] : ["lm_head.weight"]),
      ];
    case "gpt2": {
      const p = gpt2Prefix ? "transformer." : "";
      return [
        `${p}wte.weight`,
        `${p}wpe.weight`,
        ...L.flatMap((i) =>
          [
            "ln_1.weight",
            "ln_1.bias",
            "attn.c_attn.weight",
            "attn.c_attn.bias",
            "attn.c_proj.weight",
            "attn.c_proj.bias",
            "ln_2.weight",
            "ln_2.bias",
            "mlp.c_fc.weight",
            "mlp.c_fc.bias",
            "mlp.c_proj.weight",
            "mlp.c_proj.bias",
          ].map((n) => `${p}h.${i}.${n}`),
        ),
        `${p}ln_f.weight`,
        `${p}ln_f.bias`,
      ];
    }
    case "opt": {
      const p = "model.decoder.";
      return [
        `${p}embed_tokens.weight`,
        `${p}embed_positions.weight`,
        ...L.flatMap((i) =>
          [
            "self_attn_layer_norm.weight",
            "self_attn_layer_norm.bias",
            "self_attn.q_proj.weight",
            "self_attn.q_proj.bias",
            "self_attn.k_proj.weight",
            "self_attn.k_proj.bias",
            "self_attn.v_proj.weight",
            "self_attn.v_proj.bias",
            "self_attn.out_proj.weight",
            "self_attn.out_proj.bias",
            "final_layer_norm.weight",
            "final_layer_norm.bias",
            "fc1.weight",
            "fc1.bias",
            "fc2.weight",
            "fc2.bias",
          ].map((n) => `${p}layers.${i}.${n}`),
        ),
        `${p}final_layer_norm.weight`,
        `${p}final_layer_norm.bias`,
      ];
    }
  }
}

/** Expected shapes for a few tensors of each tiny preset (H 64, A 4, F per preset, V 512, P 512). */
function expectedShapes(arch: Arch): Record<string, number[]> {
  switch (arch) {
    case "llama":
      return {
        "model.embed_tokens.weight": [512, 64],
        "model.layers.0.self_attn.q_proj.weight": [64, 64],
        "model.layers.0.self_attn.k_proj.weight": [32, 64],
        "model.layers.1.self_attn.o_proj.weight": [64, 64],
        "model.layers.0.mlp.gate_proj.weight": [128, 64],
        "model.layers.0.mlp.down_proj.weight": [64, 128],
        "lm_head.weight": [512, 64],
      };
    case "qwen2":
      return {
        "model.layers.0.self_attn.q_proj.bias": [64],
        "model.layers.0.self_attn.k_proj.bias": [32],
        "model.layers.0.self_attn.v_proj.weight": [32, 64],
      };
    case "qwen3": // head_dim 32: q is 4 x 32 = 128 wide, against a hidden size of 64
      return {
        "model.layers.0.self_attn.q_proj.weight": [128, 64],
        "model.layers.0.self_attn.k_proj.weight": [64, 64],
        "model.layers.0.self_attn.q_norm.weight": [32],
        "model.layers.1.self_attn.k_norm.weight": [32],
        "model.layers.1.self_attn.o_proj.weight": [64, 128],
      };
    case "gemma": // head_dim 32: q 4 x 32 = 128 wide, one key/value head
      return {
        "model.layers.0.self_attn.q_proj.weight": [128, 64],
        "model.layers.1.self_attn.k_proj.weight": [32, 64],
        "model.layers.1.self_attn.o_proj.weight": [64, 128],
      };
    case "stablelm":
      return {
        "model.layers.0.input_layernorm.bias": [64],
        "model.layers.1.self_attn.k_proj.bias": [32],
        "model.norm.bias": [64],
      };
    case "ernie":
      return { "model.layers.1.self_attn.k_proj.weight": [32, 64], "model.layers.0.mlp.up_proj.weight": [128, 64] };
    case "glm":
    case "glm4": // gate and up: 128 rows each in one matrix
      return {
        "model.layers.0.self_attn.k_proj.bias": [32],
        "model.layers.1.mlp.gate_up_proj.weight": [256, 64],
        "lm_head.weight": [512, 64],
      };
    case "cohere":
    case "cohere2":
      return {
        "model.layers.0.self_attn.k_proj.weight": [32, 64],
        "model.layers.1.mlp.gate_proj.weight": [128, 64],
        "model.norm.weight": [64],
      };
    case "starcoder2": // GQA 4/2 of 16; c_fc 256 rows
      return {
        "model.layers.0.self_attn.k_proj.bias": [32],
        "model.layers.1.self_attn.o_proj.bias": [64],
        "model.layers.0.mlp.c_fc.weight": [256, 64],
        "model.layers.1.mlp.c_proj.weight": [64, 256],
        "model.norm.bias": [64],
      };
    case "gptj":
      return { "transformer.h.1.mlp.fc_in.weight": [256, 64], "lm_head.bias": [512] };
    case "gptneox": // q, k and v of 4 heads of 16 in one matrix; FFN 256
      return {
        "gpt_neox.layers.0.attention.query_key_value.weight": [192, 64],
        "gpt_neox.layers.1.attention.query_key_value.bias": [192],
        "gpt_neox.layers.1.mlp.dense_h_to_4h.weight": [256, 64],
        "embed_out.weight": [512, 64],
      };
    case "phi": // hidden 80, 4 heads of 20, fc1 320 rows; the head's bias over the vocabulary
      return {
        "model.layers.0.self_attn.q_proj.weight": [80, 80],
        "model.layers.1.self_attn.dense.bias": [80],
        "model.layers.0.mlp.fc1.weight": [320, 80],
        "model.layers.1.mlp.fc2.weight": [80, 320],
        "lm_head.bias": [512],
      };
    case "olmo":
      return { "model.layers.1.self_attn.k_proj.weight": [64, 64] };
    case "internlm2": // q 4 x 16 + k, v 2 x 16 in one matrix
      return { "model.layers.0.attention.wqkv.weight": [128, 64], "output.weight": [512, 64] };
    case "exaone4": // q/k norms over each head of 16
      return {
        "model.layers.0.self_attn.q_norm.weight": [16],
        "model.layers.3.self_attn.k_norm.weight": [16],
        "model.layers.3.post_feedforward_layernorm.weight": [64],
      };
    case "mixtral": // 4 experts of 96
      return {
        "model.layers.0.block_sparse_moe.gate.weight": [4, 64],
        "model.layers.1.block_sparse_moe.experts.3.w1.weight": [96, 64],
        "model.layers.1.block_sparse_moe.experts.3.w2.weight": [64, 96],
      };
    case "qwen2moe": // 4 experts of 64, a shared expert of 128 with a one-row gate
      return {
        "model.layers.0.mlp.gate.weight": [4, 64],
        "model.layers.0.mlp.experts.2.up_proj.weight": [64, 64],
        "model.layers.1.mlp.shared_expert.down_proj.weight": [64, 128],
        "model.layers.1.mlp.shared_expert_gate.weight": [1, 64],
      };
    case "qwen3moe": // head_dim 32, per-head q/k norms, 8 experts of 64
      return {
        "model.layers.0.self_attn.q_proj.weight": [128, 64],
        "model.layers.0.self_attn.q_norm.weight": [32],
        "model.layers.1.mlp.gate.weight": [8, 64],
        "model.layers.1.mlp.experts.7.down_proj.weight": [64, 64],
      };
    case "olmoe": // q/k norms as wide as the projections, 8 experts of 64
      return {
        "model.layers.0.self_attn.k_norm.weight": [64],
        "model.layers.1.mlp.gate.weight": [8, 64],
        "model.layers.1.mlp.experts.0.gate_proj.weight": [64, 64],
      };
    case "phimoe": // 4 experts of 64, biases everywhere
      return {
        "model.layers.0.self_attn.o_proj.bias": [64],
        "model.layers.1.block_sparse_moe.experts.3.w2.weight": [64, 64],
        "lm_head.bias": [512],
      };
    case "erniemoe": // 8 experts of 32, shared experts 2 × 32
      return {
        "model.layers.0.mlp.gate.weight": [8, 64],
        "model.layers.1.mlp.moe_statics.e_score_correction_bias": [1, 8],
        "model.layers.1.mlp.shared_experts.down_proj.weight": [64, 64],
      };
    case "granitemoe": // 4 experts of 64, stacked
      return {
        "model.layers.0.block_sparse_moe.router.layer.weight": [4, 64],
        "model.layers.0.block_sparse_moe.input_linear.weight": [4, 128, 64],
        "model.layers.1.block_sparse_moe.output_linear.weight": [4, 64, 64],
      };
    case "olmo2": // q/k norms as wide as the projections (4 heads x 16, no GQA)
      return {
        "model.layers.0.self_attn.q_norm.weight": [64],
        "model.layers.1.self_attn.k_norm.weight": [64],
        "model.layers.1.self_attn.k_proj.weight": [64, 64],
        "lm_head.weight": [512, 64],
      };
    case "granite":
    case "minicpm":
      return {
        "model.layers.1.self_attn.k_proj.weight": [32, 64],
        "model.layers.1.mlp.down_proj.weight": [64, 128],
      };
    case "smollm3":
      return {
        "model.layers.3.self_attn.q_proj.weight": [64, 64],
        "model.layers.3.mlp.down_proj.weight": [64, 128],
      };
    case "gemma2":
      return {
        "model.layers.0.self_attn.q_proj.weight": [128, 64],
        "model.layers.3.post_feedforward_layernorm.weight": [64],
      };
    case "gemma3": // head_dim 32, as qwen3
      return {
        "model.layers.0.self_attn.q_proj.weight": [128, 64],
        "model.layers.3.self_attn.k_norm.weight": [32],
        "model.layers.2.post_feedforward_layernorm.weight": [64],
        "model.layers.1.self_attn.o_proj.weight": [64, 128],
      };
    case "phi3": // q 4 x 16 + k, v 2 x 16 each; gate and up 128 rows each
      return {
        "model.layers.0.self_attn.qkv_proj.weight": [128, 64],
        "model.layers.1.mlp.gate_up_proj.weight": [256, 64],
        "lm_head.weight": [512, 64],
      };
    case "gpt2":
      return {
        "wpe.weight": [512, 64],
        "h.0.attn.c_attn.weight": [64, 192],
        "h.0.attn.c_attn.bias": [192],
        "h.0.mlp.c_fc.weight": [64, 256],
        "h.0.mlp.c_proj.weight": [256, 64],
      };
    case "opt":
      return {
        "model.decoder.embed_positions.weight": [514, 64],
        "model.decoder.layers.0.fc1.weight": [256, 64],
        "model.decoder.layers.0.fc2.weight": [64, 256],
        "model.decoder.layers.0.self_attn.out_proj.bias": [64],
      };
  }
}

/** The raw header of a written file (data_offsets as stored, metadata kept), to check the writer's layout. */
function readSafetensorsHeader(path: string): {
  headerBytes: number;
  tensors: Record<string, HeaderEntry>;
  metadata?: Record<string, string>;
} {
  const fd = openSync(path, "r");
  try {
    const lenBuf = Buffer.alloc(8);
    if (readSync(fd, lenBuf, 0, 8, 0) !== 8) throw new Error(`${path}: too short`);
    const n = Number(lenBuf.readBigUInt64LE(0));
    if (n > 100 * 1024 * 1024) throw new Error(`${path}: header too large (${n})`);
    const buf = Buffer.alloc(n);
    if (readSync(fd, buf, 0, n, 8) !== n) throw new Error(`${path}: truncated header`);
    const parsed = JSON.parse(buf.toString("utf8")) as Record<string, unknown>;
    const { __metadata__: metadata, ...tensors } = parsed;
    return {
      headerBytes: 8 + n,
      tensors: tensors as Record<string, HeaderEntry>,
      metadata: metadata as Record<string, string> | undefined,
    };
  } finally {
    closeSync(fd);
  }
}

interface ParsedFile {
  names: string[];
  header: ReturnType<typeof readSafetensorsHeader>;
  data: Buffer;
}

/** Parses a safetensors file and checks layout invariants (contiguity, sizes, padding). */
function checkSafetensors(path: string, dtype: StDType): ParsedFile {
  const buf = readFileSync(path);
  const header = readSafetensorsHeader(path);
  const n = Number(buf.readBigUInt64LE(0));
  assert.equal(n % 8, 0, "header length is a multiple of 8");
  assert.equal(header.headerBytes, 8 + n);
  const rawHeader = buf.subarray(8, 8 + n).toString("utf8");
  assert.match(rawHeader, /^\{.*\} *$/s, "JSON header padded with trailing spaces only");
  assert.deepEqual(header.metadata, { format: "pt" });
  const names = Object.keys(header.tensors);
  let expectBegin = 0;
  for (const name of names) {
    const t = header.tensors[name];
    assert.equal(t.dtype, dtype, `${name} dtype`);
    const [b, e] = t.data_offsets;
    assert.equal(b, expectBegin, `${name} begins where the previous tensor ended`);
    assert.equal(e - b, t.shape.reduce((x, y) => x * y, 1) * DTYPE_BYTES[dtype], `${name} size`);
    expectBegin = e;
  }
  assert.equal(buf.length, 8 + n + expectBegin, "file ends right after the last tensor");
  return { names, header, data: buf.subarray(8 + n) };
}

function tensorBytesOf(f: ParsedFile, name: string): Buffer {
  const [b, e] = f.header.tensors[name].data_offsets;
  return f.data.subarray(b, e);
}

function readJson(path: string): Record<string, unknown> {
  return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
}

const STD_FILES = [
  "config.json",
  "generation_config.json",
  "model.safetensors",
  "tokenizer.json",
  "tokenizer_config.json",
];

for (const arch of ARCHES) {
  for (const dtype of DTYPES) {
    test(`${arch} ${dtype}: files, HF names, shapes, layout, config`, async () => {
      const out = freshDir(`${arch}-${dtype}`);
      const r = await makeModel({ arch, dtype, seed: 7, out });
      assert.deepEqual([...r.files].sort(), STD_FILES);
      assert.deepEqual(readdirSync(out).sort(), STD_FILES);
      assert.equal(
        r.bytes,
        STD_FILES.reduce((a, f) => a + statSync(join(out, f)).size, 0),
      );
      // No temp directories left beside the model.
      assert.deepEqual(
        readdirSync(ROOT).filter((f) => f.includes(".partial-")),
        [],
      );

      const shape = resolveShape({ arch });
      const f = checkSafetensors(join(out, "model.safetensors"), ST[dtype]);
      assert.deepEqual(f.names, expectedNames(arch, shape.tied));
      for (const [name, s] of Object.entries(expectedShapes(arch))) {
        assert.deepEqual(f.header.tensors[name].shape, s, name);
      }
      const params = Object.values(f.header.tensors).reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
      assert.equal(r.params, params);

      const cfg = readJson(join(out, "config.json"));
      const expectClass = {
        llama: "LlamaForCausalLM",
        qwen2: "Qwen2ForCausalLM",
        qwen3: "Qwen3ForCausalLM",
        mixtral: "MixtralForCausalLM",
        qwen2moe: "Qwen2MoeForCausalLM",
        qwen3moe: "Qwen3MoeForCausalLM",
        olmoe: "OlmoeForCausalLM",
        granitemoe: "GraniteMoeForCausalLM",
        erniemoe: "Ernie4_5_MoeForCausalLM",
        phimoe: "PhimoeForCausalLM",
        smollm3: "SmolLM3ForCausalLM",
        granite: "GraniteForCausalLM",
        minicpm: "MiniCPMForCausalLM",
        olmo: "OlmoForCausalLM",
        olmo2: "Olmo2ForCausalLM",
        exaone4: "Exaone4ForCausalLM",
        internlm2: "InternLM2ForCausalLM",
        stablelm: "StableLmForCausalLM",
        starcoder2: "Starcoder2ForCausalLM",
        cohere: "CohereForCausalLM",
        cohere2: "Cohere2ForCausalLM",
        ernie: "Ernie4_5ForCausalLM",
        glm: "GlmForCausalLM",
        glm4: "Glm4ForCausalLM",
        phi: "PhiForCausalLM",
        phi3: "Phi3ForCausalLM",
        gemma: "GemmaForCausalLM",
        gemma2: "Gemma2ForCausalLM",
        gemma3: "Gemma3ForCausalLM",
        gpt2: "GPT2LMHeadModel",
        gptj: "GPTJForCausalLM",
        gptneox: "GPTNeoXForCausalLM",
        opt: "OPTForCausalLM",
      }[arch];
      assert.deepEqual(cfg.architectures, [expectClass]);
      assert.equal(
        cfg.model_type,
        {
          gemma3: "gemma3_text",
          gptneox: "gpt_neox",
          ernie: "ernie4_5",
          erniemoe: "ernie4_5_moe",
          qwen2moe: "qwen2_moe",
          qwen3moe: "qwen3_moe",
        }[arch as string] ?? arch,
      );
      assert.equal(cfg.vocab_size, 512);
      assert.equal(cfg.tie_word_embeddings, shape.tied);
      assert.equal(cfg.torch_dtype, { f32: "float32", f16: "float16", bf16: "bfloat16" }[dtype]);
      if (["llama", "qwen2", "qwen3", "smollm3", "granite", "minicpm", "olmo2", "stablelm", "phi3"].includes(arch)) {
        for (const k of [
          "hidden_size",
          "intermediate_size",
          "num_hidden_layers",
          "num_attention_heads",
          "num_key_value_heads",
          "head_dim",
          "max_position_embeddings",
          "rms_norm_eps",
          "rope_theta",
          "rope_scaling",
          "hidden_act",
        ]) {
          assert.ok(k in cfg, `config has ${k}`);
        }
        assert.equal(cfg.rope_scaling, null);
        assert.equal(cfg.hidden_act, "silu");
        if (arch === "qwen2" || arch === "qwen3") assert.equal(cfg.use_sliding_window, false);
        if (arch === "qwen3") assert.equal(cfg.head_dim, 32);
        if (arch === "smollm3") assert.deepEqual(cfg.no_rope_layers, [1, 1, 1, 0]);
        if (arch === "stablelm") assert.equal(cfg.partial_rotary_factor, 0.25);
        if (arch === "minicpm") assert.equal(cfg.scale_depth, 1.4);
        if (arch === "granite") {
          assert.equal(cfg.residual_multiplier, 0.22);
          assert.equal(cfg.attention_multiplier, 1 / 16);
        }
      } else if (arch === "phimoe") {
        assert.equal(cfg.router_jitter_noise, 0.01);
        assert.equal(cfg.attention_bias, true);
        assert.equal(cfg.lm_head_bias, true);
      } else if (arch === "erniemoe") {
        assert.deepEqual([cfg.moe_num_experts, cfg.moe_k, cfg.moe_intermediate_size], [8, 2, 32]);
        assert.equal(cfg.moe_layer_start_index, 0);
      } else if (arch === "granitemoe") {
        assert.equal(cfg.num_local_experts, 4);
        assert.equal(cfg.num_experts_per_tok, 2);
        assert.equal(cfg.intermediate_size, 64);
        assert.equal(cfg.residual_multiplier, 0.22);
      } else if (["mixtral", "qwen2moe", "qwen3moe", "olmoe"].includes(arch)) {
        // What each transformers config class calls its experts, their width and routing.
        const experts = arch === "mixtral" ? cfg.num_local_experts : cfg.num_experts;
        assert.equal(experts, { mixtral: 4, qwen2moe: 4, qwen3moe: 8, olmoe: 8 }[arch as string]);
        assert.equal(cfg.num_experts_per_tok, 2);
        const width = arch === "qwen2moe" || arch === "qwen3moe" ? cfg.moe_intermediate_size : cfg.intermediate_size;
        assert.equal(width, { mixtral: 96, qwen2moe: 64, qwen3moe: 64, olmoe: 64 }[arch as string]);
        if (arch === "qwen2moe") assert.equal(cfg.shared_expert_intermediate_size, 128);
        if (arch === "qwen3moe") assert.equal(cfg.norm_topk_prob, true);
      } else if (arch === "gpt2") {
        assert.equal(cfg.n_embd, 64);
        assert.equal(cfg.n_inner, 256);
        assert.equal(cfg.activation_function, "gelu_new");
      } else if (arch === "cohere") {
        assert.equal(cfg.logit_scale, 0.0625);
        assert.equal(cfg.layer_norm_eps, 1e-5);
        assert.equal(cfg.use_qk_norm, false);
        assert.ok(!("rms_norm_eps" in cfg), "CohereConfig has no rms_norm_eps");
      } else if (arch === "olmo") {
        assert.equal(cfg.clip_qkv, null);
      } else if (arch === "internlm2") {
        assert.equal(cfg.bias, false);
        assert.equal(cfg.num_key_value_heads, 2);
      } else if (arch === "exaone4") {
        assert.equal(cfg.sliding_window, 8);
        assert.equal(cfg.sliding_window_pattern, 4);
      } else if (arch === "ernie") {
        assert.equal(cfg.use_bias, false);
        assert.equal(cfg.rope_theta, 500000);
      } else if (arch === "glm" || arch === "glm4") {
        assert.equal(cfg.partial_rotary_factor, 0.5);
        assert.equal(cfg.attention_bias, true);
      } else if (arch === "cohere2") {
        assert.equal(cfg.sliding_window, 8);
        assert.equal(cfg.sliding_window_pattern, 4);
      } else if (arch === "starcoder2") {
        assert.equal(cfg.norm_epsilon, 1e-5);
        assert.equal(cfg.sliding_window, 8);
        assert.equal(cfg.use_bias, true);
        assert.equal(cfg.hidden_act, "gelu_pytorch_tanh");
        assert.ok(!("rms_norm_eps" in cfg) && !("head_dim" in cfg), "Starcoder2Config has neither");
      } else if (arch === "gptj") {
        assert.equal(cfg.rotary_dim, 8);
        assert.equal(cfg.n_embd, 64);
      } else if (arch === "gptneox") {
        assert.equal(cfg.rotary_pct, 0.25);
        assert.equal(cfg.rotary_emb_base, 10000);
        assert.equal(cfg.use_parallel_residual, true);
        assert.equal(cfg.hidden_act, "gelu");
      } else if (arch === "phi") {
        assert.equal(cfg.hidden_size, 80);
        assert.equal(cfg.intermediate_size, 320);
        assert.equal(cfg.partial_rotary_factor, 0.4);
        assert.equal(cfg.hidden_act, "gelu_new");
        assert.equal(cfg.layer_norm_eps, 1e-5);
        assert.ok(!("head_dim" in cfg), "PhiConfig has no head_dim");
      } else if (arch === "gemma") {
        assert.equal(cfg.hidden_activation, "gelu_pytorch_tanh");
        assert.equal(cfg.head_dim, 32);
        assert.equal(cfg.num_key_value_heads, 1);
      } else if (arch === "gemma2") {
        assert.equal(cfg.hidden_activation, "gelu_pytorch_tanh");
        assert.equal(cfg.attn_logit_softcapping, 50);
        assert.equal(cfg.final_logit_softcapping, 30);
        assert.deepEqual(cfg.layer_types, [
          "sliding_attention",
          "full_attention",
          "sliding_attention",
          "full_attention",
        ]);
      } else if (arch === "gemma3") {
        assert.equal(cfg.hidden_activation, "gelu_pytorch_tanh");
        assert.equal(cfg.sliding_window, 8);
        assert.deepEqual(cfg.layer_types, [
          "sliding_attention",
          "full_attention",
          "sliding_attention",
          "full_attention",
        ]);
        assert.equal(cfg.query_pre_attn_scalar, 32);
      } else {
        assert.equal(cfg.ffn_dim, 256);
        assert.equal(cfg.activation_function, "relu");
        assert.equal(cfg.word_embed_proj_dim, 64);
        assert.equal(cfg.do_layer_norm_before, true);
      }
      const tok = readJson(join(out, "tokenizer.json")) as { added_tokens: { id: number; content: string }[] };
      const ids = Object.fromEntries(tok.added_tokens.map((t) => [t.content, t.id]));
      assert.equal(cfg.bos_token_id, ids["<|endoftext|>"]);
      assert.equal(cfg.eos_token_id, ids["<|im_end|>"]);
      const gen = readJson(join(out, "generation_config.json"));
      assert.deepEqual(gen.eos_token_id, [ids["<|im_end|>"], ids["<|endoftext|>"]]);
      assert.equal(gen.bos_token_id, ids["<|endoftext|>"]);
    });
  }
}

function decodeAll(bytes: Buffer, dtype: StDType): Float64Array {
  const out = new Float64Array(bytes.length / DTYPE_BYTES[dtype]);
  for (let i = 0; i < out.length; i++) {
    out[i] =
      dtype === "F32"
        ? bytes.readFloatLE(i * 4)
        : dtype === "BF16"
          ? bf16ToF32(bytes.readUInt16LE(i * 2))
          : f16ToF32(bytes.readUInt16LE(i * 2));
  }
  return out;
}
const meanStd = (v: Float64Array) => {
  const m = v.reduce((a, b) => a + b, 0) / v.length;
  return [m, Math.sqrt(v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length)];
};

test("weights: std 0.02 matrices, norms near 1, dtypes agree with each other", async () => {
  const files: Record<string, ParsedFile> = {};
  for (const dtype of DTYPES) {
    const out = freshDir(`vals-${dtype}`);
    await makeModel({ arch: "llama", dtype, seed: 3, out });
    files[dtype] = checkSafetensors(join(out, "model.safetensors"), ST[dtype]);
  }
  const emb = decodeAll(tensorBytesOf(files.f32, "model.embed_tokens.weight"), "F32");
  const [m, s] = meanStd(emb);
  assert.ok(Math.abs(m) < 0.002 && Math.abs(s - 0.02) < 0.001, `embedding mean ${m} std ${s}`);
  const norm = decodeAll(tensorBytesOf(files.f32, "model.norm.weight"), "F32");
  assert.ok(Math.abs(meanStd(norm)[0] - 1) < 0.02, "norm weights near 1");
  // bf16/f16 files hold exactly the rounded f32 values.
  const q = "model.layers.1.self_attn.q_proj.weight";
  const f32 = tensorBytesOf(files.f32, q);
  const bf = tensorBytesOf(files.bf16, q);
  const h = tensorBytesOf(files.f16, q);
  for (let i = 0; i < f32.length / 4; i++) {
    const bits = f32.readUInt32LE(i * 4);
    assert.equal(bf.readUInt16LE(i * 2), f32BitsToBf16(bits));
    assert.equal(h.readUInt16LE(i * 2), f32BitsToF16(bits));
  }
});

test("determinism: same seed is byte-identical, different seed differs", async () => {
  for (const arch of ARCHES) {
    const a = freshDir("det-a");
    const b = freshDir("det-b");
    const c = freshDir("det-c");
    await makeModel({ arch, dtype: "bf16", seed: 42, out: a });
    await makeModel({ arch, dtype: "bf16", seed: 42, out: b });
    await makeModel({ arch, dtype: "bf16", seed: 43, out: c });
    for (const f of STD_FILES) {
      assert.ok(readFileSync(join(a, f)).equals(readFileSync(join(b, f))), `${arch} ${f} identical`);
    }
    assert.ok(!readFileSync(join(a, "model.safetensors")).equals(readFileSync(join(c, "model.safetensors"))));
    // Metadata does not depend on the seed; every tensor does.
    assert.ok(readFileSync(join(a, "config.json")).equals(readFileSync(join(c, "config.json"))));
    const fa = checkSafetensors(join(a, "model.safetensors"), "BF16");
    const fc = checkSafetensors(join(c, "model.safetensors"), "BF16");
    for (const n of fa.names) assert.ok(!tensorBytesOf(fa, n).equals(tensorBytesOf(fc, n)), `${arch} ${n} differs`);
  }
});

test("sharded output: index maps every tensor to the file holding it, same bytes as unsharded", async () => {
  for (const arch of ARCHES) {
    const single = freshDir("single");
    const sharded = freshDir("sharded");
    await makeModel({ arch, dtype: "f32", seed: 5, out: single });
    const maxShardBytes = 150_000;
    const r = await makeModel({ arch, dtype: "f32", seed: 5, out: sharded, maxShardBytes });
    const whole = checkSafetensors(join(single, "model.safetensors"), "F32");
    const shardFiles = r.files.filter((f) => f.endsWith(".safetensors")).sort();
    assert.ok(shardFiles.length >= 2, `${arch}: several shards (${shardFiles.length})`);
    shardFiles.forEach((f, i) =>
      assert.equal(
        f,
        `model-${String(i + 1).padStart(5, "0")}-of-${String(shardFiles.length).padStart(5, "0")}.safetensors`,
      ),
    );
    assert.ok(r.files.includes("model.safetensors.index.json"));
    assert.ok(!r.files.includes("model.safetensors"));

    const index = readJson(join(sharded, "model.safetensors.index.json")) as {
      metadata: { total_size: number };
      weight_map: Record<string, string>;
    };
    assert.deepEqual(Object.keys(index.weight_map).sort(), [...whole.names].sort());
    let total = 0;
    const seen: string[] = [];
    for (const f of shardFiles) {
      const p = checkSafetensors(join(sharded, f), "F32");
      const shardData = p.data.length;
      total += shardData;
      assert.ok(shardData <= maxShardBytes || p.names.length === 1, `${f} within the limit`);
      for (const n of p.names) {
        assert.equal(index.weight_map[n], f, `${n} maps to ${f}`);
        assert.ok(tensorBytesOf(p, n).equals(tensorBytesOf(whole, n)), `${n} same bytes`);
        seen.push(n);
      }
    }
    assert.deepEqual(seen, whole.names, "shards keep the tensor order");
    assert.equal(index.metadata.total_size, total);
    assert.equal(total, whole.data.length);
  }
});

test("gpt2Prefix writes transformer.* names", async () => {
  const out = freshDir("gpt2-prefix");
  await makeModel({ arch: "gpt2", dtype: "f16", seed: 1, out, gpt2Prefix: true });
  const f = checkSafetensors(join(out, "model.safetensors"), "F16");
  assert.deepEqual(f.names, expectedNames("gpt2", true, true));
});

test("presets: shapes of the real models (parameter counts) and overrides", () => {
  const count = (preset: string) => {
    const p = PRESETS[preset];
    const s = resolveShape({ arch: p.arch, preset });
    return planTensors(p.arch, s, "bf16").reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
  };
  assert.equal(count("smollm2-135m"), 134_515_008);
  assert.equal(count("qwen2.5-0.5b"), 494_032_768);
  assert.equal(count("llama-3.2-1b"), 1_235_814_400);
  assert.equal(count("gpt2"), 124_439_808);
  assert.equal(count("opt-125m"), 125_239_296);
  for (const arch of ARCHES) assert.equal(PRESETS[`tiny-${arch}`].arch, arch);

  const l = resolveShape({ arch: "llama", preset: "llama-3.2-1b" });
  assert.equal(l.headDim, 64);
  assert.deepEqual(l.ropeScaling, {
    rope_type: "llama3",
    factor: 32,
    low_freq_factor: 1,
    high_freq_factor: 4,
    original_max_position_embeddings: 8192,
  });
  const o = resolveShape({
    arch: "llama",
    preset: "llama-3.2-1b",
    shape: { layers: 2, hidden: 256, heads: 4, kvHeads: 2 },
  });
  assert.equal(o.layers, 2);
  assert.equal(o.headDim, 64);
  assert.equal(o.intermediate, 8192);
  const g = resolveShape({ arch: "gpt2", preset: "gpt2", shape: { heads: 6 } });
  assert.equal(g.kvHeads, 6);
  assert.equal(g.headDim, 128);
});

test("bad options throw MakeModelError and leave nothing behind", async () => {
  const bad: Parameters<typeof makeModel>[0][] = [
    { arch: "llama", dtype: "bf16", seed: 1, out: freshDir("bad"), shape: { hidden: 65 } },
    { arch: "llama", dtype: "bf16", seed: 1, out: freshDir("bad"), shape: { kvHeads: 3 } },
    { arch: "llama", dtype: "bf16", seed: 1, out: freshDir("bad"), shape: { vocab: 200 } },
    { arch: "llama", dtype: "bf16", seed: 1, out: freshDir("bad"), shape: { layers: 0 } },
    { arch: "llama", dtype: "bf16", seed: 1, out: freshDir("bad"), shape: { intermediate: 1.5 } },
    { arch: "gpt2", dtype: "bf16", seed: 1, out: freshDir("bad"), shape: { kvHeads: 2 } },
    { arch: "gpt2", dtype: "bf16", seed: 1, out: freshDir("bad"), shape: { ropeTheta: 1e4 } },
    { arch: "llama", dtype: "bf16", seed: 1, out: freshDir("bad"), preset: "gpt2" },
    { arch: "llama", dtype: "bf16", seed: 1, out: freshDir("bad"), preset: "no-such-preset" },
    { arch: "mamba" as Arch, dtype: "bf16", seed: 1, out: freshDir("bad") },
    { arch: "llama", dtype: "f8" as DType, seed: 1, out: freshDir("bad") },
    { arch: "llama", dtype: "bf16", seed: -1, out: freshDir("bad") },
    { arch: "llama", dtype: "bf16", seed: 1, out: freshDir("bad"), maxShardBytes: 0 },
    { arch: "llama", dtype: "bf16", seed: 1, out: freshDir("bad"), gpt2Prefix: true },
  ];
  for (const o of bad) {
    await assert.rejects(
      makeModel(o),
      (e: unknown) => e instanceof MakeModelError && e.message.length > 10,
      JSON.stringify(o.shape ?? o),
    );
    assert.ok(!existsSync(o.out));
  }
  // Existing non-empty directory: refused unless overwrite.
  const taken = freshDir("taken");
  mkdirSync(taken);
  writeFileSync(join(taken, "keep.txt"), "x");
  await assert.rejects(makeModel({ arch: "opt", dtype: "bf16", seed: 1, out: taken }), MakeModelError);
  assert.deepEqual(readdirSync(taken), ["keep.txt"]);
  await makeModel({ arch: "opt", dtype: "bf16", seed: 1, out: taken, overwrite: true });
  assert.deepEqual(readdirSync(taken).sort(), STD_FILES);
  // An interrupted run (here: the progress callback throws) leaves neither the model nor a temp dir.
  const interrupted = freshDir("interrupted");
  await assert.rejects(
    makeModel({
      arch: "llama",
      dtype: "f32",
      seed: 1,
      out: interrupted,
      onProgress: () => {
        throw new Error("stop");
      },
    }),
    /stop/,
  );
  assert.ok(!existsSync(interrupted));
  assert.deepEqual(
    readdirSync(ROOT).filter((f) => f.includes(".partial-")),
    [],
  );
});

test("progress reports reach the total", async () => {
  const calls: [number, number][] = [];
  await makeModel({
    arch: "qwen2",
    dtype: "bf16",
    seed: 1,
    out: freshDir("progress"),
    onProgress: (d, t) => calls.push([d, t]),
  });
  assert.ok(calls.length > 0);
  const [done, total] = calls[calls.length - 1];
  assert.equal(done, total);
  for (let i = 1; i < calls.length; i++) assert.ok(calls[i][0] > calls[i - 1][0]);
});

// ---------------------------------------------------------------------------------------------
// Tokenizer + chat template
// ---------------------------------------------------------------------------------------------

test("tokenizer: loads in @huggingface/tokenizers, round-trips, uses merges, special ids", async () => {
  const out = freshDir("tok");
  await makeModel({ arch: "qwen2", dtype: "bf16", seed: 1, out, shape: { vocab: 1024 } });
  const json = readJson(join(out, "tokenizer.json"));
  const cfg = readJson(join(out, "tokenizer_config.json"));
  const model = json.model as { vocab: Record<string, number>; merges: [string, string][] };
  assert.equal(model.merges.length, 500);
  assert.ok(model.merges.every((m) => Array.isArray(m) && m.length === 2));
  // Byte tokens: id = byte value with GPT-2's bytes_to_unicode symbols (as the golden tokenizers).
  for (const [sym, id] of [
    ["Ā", 0],
    ["Ċ", 10],
    ["Ġ", 32],
    ["!", 33],
    ["~", 126],
    ["ġ", 127],
    ["¡", 161],
    ["Ń", 173],
    ["ÿ", 255],
  ] as const) {
    assert.equal(model.vocab[sym], id, `byte ${id}`);
  }
  const goldenFile = "/work/shared/golden/llama-bf16/tokenizer.json";
  if (existsSync(goldenFile)) {
    const golden = JSON.parse(readFileSync(goldenFile, "utf8")) as typeof json;
    const gv = (golden.model as typeof model).vocab;
    for (const [sym, id] of Object.entries(gv)) if (id < 256) assert.equal(model.vocab[sym], id, `byte ${id}`);
  }

  const tok = new Tokenizer(json, cfg);
  const texts = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello, world! héllo wörld — ünïcödé, 日本語のテキスト, emoji 👋🏽🚀 and 🧑‍🤝‍🧑",
    "  leading spaces\n\ttabs\r\nand trailing  ",
    "numbers 3.14159 and code: for (let i = 0; i < n; i++) { x += y; }",
  ];
  assert.deepEqual(tok.encode("").ids, []); // (decode([]) throws in @huggingface/tokenizers 0.2)
  for (const t of texts) {
    const ids = tok.encode(t).ids;
    assert.equal(tok.decode(ids), t, JSON.stringify(t));
    for (const id of ids) assert.ok(id < 1024);
  }
  const word = " the";
  assert.ok(tok.encode(word).ids.length < Buffer.byteLength(word), "merges apply");
  const sentence = "the model predicts the next token";
  assert.ok(tok.encode(sentence).ids.length < Buffer.byteLength(sentence) / 2);

  const added = json.added_tokens as { id: number; content: string; special: boolean }[];
  assert.deepEqual(
    added.map((t) => t.content),
    [...SPECIAL_TOKENS],
  );
  for (const t of added) {
    assert.ok(t.special);
    assert.deepEqual(tok.encode(t.content).ids, [t.id]);
  }
  const [eot, imStart, imEnd] = added.map((t) => t.id);
  const chat = tok.encode("<|im_start|>user\nhi there<|im_end|>\n").ids;
  assert.equal(chat[0], imStart);
  assert.ok(chat.includes(imEnd));
  assert.equal(tok.decode([...tok.encode("hi").ids, eot], { skip_special_tokens: true }), "hi");
  assert.equal(cfg.add_bos_token, false);
  assert.equal(cfg.tokenizer_class, "PreTrainedTokenizerFast");
  assert.equal(cfg.eos_token, "<|im_end|>");
});

test("tokenizer shrinks its merges to fit small vocabularies", () => {
  for (const [vocab, merges] of [
    [259, 0],
    [300, 41],
    [512, 253],
    [100_000, 500],
  ] as const) {
    const t = makeTokenizer({ vocabSize: vocab, modelMaxLength: 128 });
    assert.equal(t.merges, merges);
    assert.ok(t.size <= vocab);
    const tk = new Tokenizer(t.tokenizerJson, t.tokenizerConfig);
    assert.equal(tk.decode(tk.encode("round trip ✓").ids), "round trip ✓");
  }
  assert.throws(() => makeTokenizer({ vocabSize: 258, modelMaxLength: 128 }), RangeError);
});

test("chat template renders ChatML", async () => {
  const out = freshDir("chat");
  await makeModel({ arch: "llama", dtype: "bf16", seed: 1, out });
  const cfg = readJson(join(out, "tokenizer_config.json"));
  assert.equal(cfg.chat_template, CHATML_TEMPLATE);
  const rendered = new Template(cfg.chat_template as string).render({
    messages: [
      { role: "system", content: "You are helpful." },
      { role: "user", content: "Hi!" },
    ],
    add_generation_prompt: true,
    bos_token: cfg.bos_token,
    eos_token: cfg.eos_token,
  });
  assert.equal(
    rendered,
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\n",
  );
});

// ---------------------------------------------------------------------------------------------
// Float conversion
// ---------------------------------------------------------------------------------------------

test("bf16 / f16 conversion of known values is exact", () => {
  // bf16
  assert.equal(f32ToBf16(1.0), 0x3f80);
  assert.equal(f32ToBf16(-2.5), 0xc020);
  assert.equal(f32ToBf16(0), 0x0000);
  assert.equal(f32ToBf16(-0), 0x8000);
  assert.equal(f32ToBf16(65504), 0x4780); // 65504 = 0x477fe000 rounds up to 65536 in bf16
  assert.equal(f32ToBf16(Infinity), 0x7f80);
  assert.equal(f32ToBf16(-Infinity), 0xff80);
  assert.equal(f32ToBf16(NaN), 0x7fc0);
  assert.equal(f32BitsToBf16(0x7f800001) & 0x7f80, 0x7f80, "signalling NaN stays NaN");
  assert.notEqual(f32BitsToBf16(0x7f800001) & 0x7f, 0);
  assert.equal(f32BitsToBf16(0x3f808000), 0x3f80, "tie rounds to even (down)");
  assert.equal(f32BitsToBf16(0x3f818000), 0x3f82, "tie rounds to even (up)");
  assert.equal(f32BitsToBf16(0x3f808001), 0x3f81, "above half rounds up");
  assert.equal(f32BitsToBf16(0x7f7fffff), 0x7f80, "max f32 rounds to inf");
  assert.equal(f32BitsToBf16(0x00000001), 0x0000, "smallest f32 subnormal -> 0");
  assert.equal(f32BitsToBf16(0x00010000), 0x0001, "bf16 subnormal kept");
  assert.equal(bf16ToF32(0x3f80), 1);
  assert.equal(bf16ToF32(0xc020), -2.5);
  assert.ok(Number.isNaN(bf16ToF32(0x7fc0)));

  // f16
  assert.equal(f32ToF16(1.0), 0x3c00);
  assert.equal(f32ToF16(-2.5), 0xc100);
  assert.equal(f32ToF16(65504), 0x7bff);
  assert.equal(f32ToF16(65519.99), 0x7bff, "just below the rounding boundary");
  assert.equal(f32ToF16(65520), 0x7c00, "rounds to inf");
  assert.equal(f32ToF16(-0), 0x8000);
  assert.equal(f32ToF16(Infinity), 0x7c00);
  assert.equal(f32ToF16(NaN), 0x7e00);
  assert.equal(f32ToF16(2 ** -24), 0x0001, "smallest subnormal");
  assert.equal(f32ToF16(2 ** -25), 0x0000, "half of it ties to even (0)");
  assert.equal(f32ToF16(1.5 * 2 ** -25), 0x0001);
  assert.equal(f32ToF16(3 * 2 ** -25), 0x0002, "1.5 ulp ties to even (2)");
  assert.equal(f32ToF16(-(2 ** -14)), 0x8400, "smallest normal");
  assert.equal(f32ToF16(2 ** -14 - 2 ** -25), 0x0400, "rounds up into the normals");
  assert.equal(f32ToF16(1e-10), 0x0000);
  assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00, "tie to even (down)");
  assert.equal(f32ToF16(1 + 3 * 2 ** -11), 0x3c02, "tie to even (up)");
  assert.equal(f32ToF16(0.1), 0x2e66);
  assert.equal(f16ToF32(0x7bff), 65504);
  assert.equal(f16ToF32(0x0001), 2 ** -24);
  assert.ok(Number.isNaN(f16ToF32(0x7e00)));
  // Every f16 value survives f16 -> f32 -> f16.
  for (let h = 0; h < 0x10000; h++) {
    const x = f16ToF32(h);
    if (Number.isNaN(x)) continue;
    assert.equal(f32ToF16(x), h);
  }
});
