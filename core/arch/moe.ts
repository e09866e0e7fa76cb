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
import { ModelError } from "../loader/errors.js";
import type { WeightStore } from "../loader/safetensors.js";
import { tensorReader, type ConfigReader, type FfnWeights, type MoeConfig, type MoeWeights } from "./config.js";

export type MoeFamily = "mixtral" | "qwen2" | "qwen" | "olmoe" | "granite";

/** What the family's config.json says about its experts, and ModelConfig.intermediate (the widest FFN). */
export function parseMoe(r: ConfigReader, layers: number, family: MoeFamily): { moe: MoeConfig; intermediate: number } {
  const qwen = family === "qwen" || family === "qwen2";
  const experts = r.int(family === "mixtral" || family === "granite" ? "num_local_experts" : "num_experts");
  const topK = r.int("num_experts_per_tok");
  if (topK > experts) {
    throw new ModelError("BAD_CONFIG", r.file, `"num_experts_per_tok" (${topK}) exceeds the ${experts} experts`);
  }
  const dense = r.int("intermediate_size");
  const expertIntermediate = qwen ? r.int("moe_intermediate_size") : dense;
  const sharedIntermediate =
    family === "qwen2"
      ? r.int("shared_expert_intermediate_size")
      : family === "granite" && (r.raw.shared_intermediate_size ?? 0) !== 0
        ? r.int("shared_intermediate_size")
        : undefined;
  const moeLayers = qwen ? qwenMoeLayers(r, layers) : Array<boolean>(layers).fill(true);
  const widths = [expertIntermediate, sharedIntermediate ?? 0, ...(moeLayers.every(Boolean) ? [] : [dense])];
  return {
    moe: {
      experts,
      topK,
      normalize: family === "mixtral" || family === "granite" || r.bool("norm_topk_prob", false),
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
  const block = mixtral ? `${p}.block_sparse_moe` : `${p}.mlp`;
  const experts = Array.from({ length: m.experts }, (_, e) =>
    ffn(`${block}.experts.${e}`, m.expertIntermediate, names),
  );
  const shared =
    m.sharedIntermediate === undefined
      ? undefined
      : {
          ...ffn(`${block}.shared_expert`, m.sharedIntermediate, names),
          sharedGate: lin(`${block}.shared_expert_gate`, 1, H),
        };
  return { router: lin(`${block}.gate`, m.experts, H), experts, ...(shared && { shared }) };
}

/** GraniteMoE's stacked experts as one FfnWeights each: row views of the two tensors (see the header). */
function graniteMoeWeights(m: MoeConfig, H: number, p: string, s: WeightStore): MoeWeights {
  const { expertIntermediate: F, experts: E } = m;
  const view = (name: string, shape: number[], r0: number, n: number) => ({
    w: s.getRows(name, shape, r0, n),
    b: null,
  });
  const block = `${p}.block_sparse_moe`;
  const [inName, outName] = [`${block}.input_linear.weight`, `${block}.output_linear.weight`];
  const experts = Array.from({ length: E }, (_, e) => ({
    gate: view(inName, [E, 2 * F, H], e * 2 * F, F),
    up: view(inName, [E, 2 * F, H], e * 2 * F + F, F),
    down: view(outName, [E, H, F], e * H, H),
  }));
  const S = m.sharedIntermediate;
  const shared =
    S === undefined
      ? undefined
      : {
          gate: view(`${p}.shared_mlp.input_linear.weight`, [2 * S, H], 0, S),
          up: view(`${p}.shared_mlp.input_linear.weight`, [2 * S, H], S, S),
          down: view(`${p}.shared_mlp.output_linear.weight`, [H, S], 0, H),
        };
  const { linear: lin } = tensorReader(s, H);
  return { router: lin(`${block}.router.layer`, E, H), experts, ...(shared && { shared }) };
}
