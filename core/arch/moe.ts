// Mixture-of-experts FFNs of the Llama family (llama.ts binds the rest of the block):
//
// - MixtralForCausalLM: every layer a mixture, `num_local_experts` experts of intermediate_size,
//   `num_experts_per_tok` per token, weights renormalized over them; tensors block_sparse_moe.gate
//   (the router) and block_sparse_moe.experts.E.{w1, w3, w2} (gate, up, down).
// - Qwen2MoeForCausalLM, Qwen3MoeForCausalLM, OlmoeForCausalLM: mlp.gate and
//   mlp.experts.E.{gate,up,down}_proj, renormalized with norm_topk_prob (false by default). Qwen's
//   experts are moe_intermediate_size wide (OLMoE's intermediate_size), and its layers listed in
//   mlp_only_layers, or off the decoder_sparse_step grid, are dense FFNs of intermediate_size.
//   Qwen2-MoE adds a shared expert (mlp.shared_expert, shared_expert_intermediate_size) that every
//   token takes, scaled by sigmoid(mlp.shared_expert_gate · x).
// - GraniteMoeForCausalLM, GraniteMoeSharedForCausalLM (Granite 3.0/3.1 1B-A400M, 3B-A800M): Granite's
//   block (multipliers) with every expert in two stacked tensors, block_sparse_moe.input_linear
//   [experts, 2 × intermediate_size, hidden] (each expert's gate rows, then its up rows) and
//   output_linear [experts, hidden, intermediate_size], read as row views (no copy); the router is
//   block_sparse_moe.router.layer. It takes the softmax of the chosen experts' logits, which is the
//   renormalized softmax. GraniteMoeShared adds shared_mlp (input_linear [2 × shared_intermediate_size,
//   hidden], output_linear), which every token takes unscaled.
// - Ernie4_5_MoeForCausalLM (ERNIE 4.5 21B-A3B; ernie.ts binds the rest): moe_num_experts experts of
//   moe_intermediate_size, moe_k a token, chosen by probability + mlp.moe_statics.e_score_correction_bias
//   and weighted by probability, renormalized; mixtures from moe_layer_start_index to
//   moe_layer_end_index every moe_layer_interval-th layer, dense FFNs elsewhere; moe_num_shared_experts
//   shared experts as one FFN (mlp.shared_experts, that many times moe_intermediate_size) added unscaled.
import { ModelError } from "../loader/errors.js";
import type { WeightStore } from "../loader/safetensors.js";
import {
  tensorReader,
  vectorValues,
  type ConfigReader,
  type FfnWeights,
  type MoeConfig,
  type MoeWeights,
} from "./config.js";

export type MoeFamily = "mixtral" | "qwen2" | "qwen" | "olmoe" | "granite" | "ernie";

/** Each family's config.json names for its expert count, experts per token and expert width. */
const FIELDS: Record<MoeFamily, { experts: string; topK: string; width: string }> = {
  mixtral: { experts: "num_local_experts", topK: "num_experts_per_tok", width: "intermediate_size" },
  granite: { experts: "num_local_experts", topK: "num_experts_per_tok", width: "intermediate_size" },
  olmoe: { experts: "num_experts", topK: "num_experts_per_tok", width: "intermediate_size" },
  qwen: { experts: "num_experts", topK: "num_experts_per_tok", width: "moe_intermediate_size" },
  qwen2: { experts: "num_experts", topK: "num_experts_per_tok", width: "moe_intermediate_size" },
  ernie: { experts: "moe_num_experts", topK: "moe_k", width: "moe_intermediate_size" },
};

/** What the family's config.json says about its experts, and ModelConfig.intermediate (the widest FFN). */
export function parseMoe(r: ConfigReader, layers: number, family: MoeFamily): { moe: MoeConfig; intermediate: number } {
  const f = FIELDS[family];
  const experts = r.int(f.experts);
  const topK = r.int(f.topK);
  if (topK > experts) {
    throw new ModelError("BAD_CONFIG", r.file, `"${f.topK}" (${topK}) exceeds the ${experts} experts`);
  }
  const dense = r.int("intermediate_size");
  const expertIntermediate = r.int(f.width);
  const sharedIntermediate =
    family === "qwen2"
      ? r.int("shared_expert_intermediate_size")
      : family === "granite" && (r.raw.shared_intermediate_size ?? 0) !== 0
        ? r.int("shared_intermediate_size")
        : family === "ernie" && (r.raw.moe_num_shared_experts ?? 2) !== 0
          ? expertIntermediate * r.int("moe_num_shared_experts", 2)
          : undefined;
  const moeLayers =
    family === "qwen" || family === "qwen2"
      ? qwenMoeLayers(r, layers)
      : family === "ernie"
        ? ernieMoeLayers(r, layers)
        : Array<boolean>(layers).fill(true);
  const widths = [expertIntermediate, sharedIntermediate ?? 0, ...(moeLayers.every(Boolean) ? [] : [dense])];
  return {
    moe: {
      experts,
      topK,
      normalize: family === "mixtral" || family === "granite" || family === "ernie" || r.bool("norm_topk_prob", false),
      expertIntermediate,
      denseIntermediate: dense,
      ...(sharedIntermediate !== undefined && { sharedIntermediate }),
      layers: moeLayers,
    },
    intermediate: Math.max(...widths),
  };
}

/** Qwen's mixture layers: all but mlp_only_layers, on the decoder_sparse_step grid (transformers' rule). */
function qwenMoeLayers(r: ConfigReader, layers: number): boolean[] {
  const step = r.int("decoder_sparse_step", 1);
  const only = r.raw.mlp_only_layers ?? [];
  if (!Array.isArray(only) || !only.every((i) => Number.isSafeInteger(i) && i >= 0 && i < layers)) {
    throw new ModelError("BAD_CONFIG", r.file, `"mlp_only_layers" must list layer numbers below ${layers}`);
  }
  return Array.from({ length: layers }, (_, i) => !only.includes(i) && (i + 1) % step === 0);
}

/** ERNIE 4.5's mixture layers: every moe_layer_interval-th from moe_layer_start_index to moe_layer_end_index. */
function ernieMoeLayers(r: ConfigReader, layers: number): boolean[] {
  const start = r.raw.moe_layer_start_index ?? 1;
  const end = r.raw.moe_layer_end_index ?? -1;
  for (const [key, v] of [
    ["moe_layer_start_index", start],
    ["moe_layer_end_index", end],
  ] as const) {
    if (!Number.isSafeInteger(v) || (v as number) < -1 || (v as number) >= layers) {
      throw new ModelError(
        "BAD_CONFIG",
        r.file,
        `"${key}" must be a layer number below ${layers} (or -1), got ${JSON.stringify(v)}`,
      );
    }
  }
  const last = end === -1 ? layers - 1 : (end as number);
  const every = r.int("moe_layer_interval", 1);
  return Array.from({ length: layers }, (_, i) => (i + 1) % every === 0 && i >= (start as number) && i <= last);
}

/** Layer `p`'s mixture (p: "model.layers.3"). */
export function moeWeights(m: MoeConfig, hidden: number, p: string, family: MoeFamily, s: WeightStore): MoeWeights {
  if (family === "granite") return graniteMoeWeights(m, hidden, p, s);
  const H = hidden;
  const { linear: lin } = tensorReader(s, H);
  const ffn = (name: string, F: number, [gate, up, down]: string[]): FfnWeights => ({
    gate: lin(`${name}.${gate}`, F, H),
    up: lin(`${name}.${up}`, F, H),
    down: lin(`${name}.${down}`, H, F),
  });
  const mixtral = family === "mixtral";
  const names = mixtral ? ["w1", "w3", "w2"] : ["gate_proj", "up_proj", "down_proj"];
  // transformers 5 keeps (and may save) the experts stacked, and Mixtral's router as mlp.gate.
  const fused = s.has(`${p}.mlp.experts.gate_up_proj`);
  const block = mixtral && !fused ? `${p}.block_sparse_moe` : `${p}.mlp`;
  // The router first: a config that miscounts the experts is named by its shape, not a missing expert.
  const router = lin(`${block}.gate`, m.experts, H);
  const experts = fused
    ? stackedExperts(
        s,
        `${block}.experts.gate_up_proj`,
        `${block}.experts.down_proj`,
        m.experts,
        m.expertIntermediate,
        H,
      )
    : Array.from({ length: m.experts }, (_, e) => ffn(`${block}.experts.${e}`, m.expertIntermediate, names));
  const S = m.sharedIntermediate;
  const shared =
    S === undefined
      ? undefined
      : family === "ernie"
        ? ffn(`${block}.shared_experts`, S, names)
        : { ...ffn(`${block}.shared_expert`, S, names), sharedGate: lin(`${block}.shared_expert_gate`, 1, H) };
  const selectionBias =
    family === "ernie"
      ? vectorValues(s.get(`${block}.moe_statics.e_score_correction_bias`, [1, m.experts]))
      : undefined;
  return {
    router,
    experts,
    ...(shared && { shared }),
    ...(selectionBias && { selectionBias }),
  };
}

/** GraniteMoE's stacked experts as one FfnWeights each: row views of the two tensors (see the header). */
/** Rows of a tensor as a bias-free linear layer (no copy). */
function rowView(s: WeightStore, name: string, shape: number[], r0: number, n: number) {
  return { w: s.getRows(name, shape, r0, n), b: null };
}

/**
 * E experts stacked in two tensors, [E, 2F, H] (each expert's gate rows, then its up rows) and
 * [E, H, F]: transformers 5's gate_up_proj / down_proj, GraniteMoE's input_linear / output_linear.
 */
function stackedExperts(s: WeightStore, gateUp: string, down: string, E: number, F: number, H: number): FfnWeights[] {
  return Array.from({ length: E }, (_, e) => ({
    gate: rowView(s, gateUp, [E, 2 * F, H], e * 2 * F, F),
    up: rowView(s, gateUp, [E, 2 * F, H], e * 2 * F + F, F),
    down: rowView(s, down, [E, H, F], e * H, H),
  }));
}

function graniteMoeWeights(m: MoeConfig, H: number, p: string, s: WeightStore): MoeWeights {
  const { expertIntermediate: F, experts: E } = m;
  const block = `${p}.block_sparse_moe`;
  const { linear: lin } = tensorReader(s, H);
  const router = lin(`${block}.router.layer`, E, H);
  const experts = stackedExperts(s, `${block}.input_linear.weight`, `${block}.output_linear.weight`, E, F, H);
  const S = m.sharedIntermediate;
  const shared =
    S === undefined
      ? undefined
      : {
          gate: rowView(s, `${p}.shared_mlp.input_linear.weight`, [2 * S, H], 0, S),
          up: rowView(s, `${p}.shared_mlp.input_linear.weight`, [2 * S, H], S, S),
          down: rowView(s, `${p}.shared_mlp.output_linear.weight`, [H, S], 0, H),
        };
  return { router, experts, ...(shared && { shared }) };
}
