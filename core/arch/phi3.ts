// Phi3ForCausalLM (Phi-3 / Phi-3.5 mini and medium): the Llama block with fused checkpoints, q/k/v
// in one qkv_proj and gate/up in one gate_up_proj (gate first), which the engine reads as row views
// of those tensors (no copy), so everything downstream (HiRE's copies included) sees separate
// matrices. Rotary positions may be partial (`partial_rotary_factor`) and scaled by "longrope".
//
// longrope: transformers picks the short factors while the sequence fits in
// original_max_position_embeddings and the long ones past it, and multiplies cos and sin by an
// attention factor (ModelConfig.ropeFactor, which the rope ops apply). Switching factors
// mid-sequence would change every cached key, so the usable context is capped at
// original_max_position_embeddings with the short factors.
import type { WeightStore } from "../loader/safetensors.js";
import { ModelError } from "../loader/errors.js";
import {
  ConfigReader,
  familyWeights,
  ropeFields,
  ropeFrequencies,
  ropeSettings,
  ropeType,
  rotary,
  slidingWindows,
  type ArchDefinition,
  type LayerWeights,
  type Linear,
  type ModelConfig,
  type ModelWeights,
  type RopeFrequencies,
} from "./config.js";
import { familyConfig } from "./llama.js";

/**
 * `s`: ropeSettings. Phi-3's top-level original_max_position_embeddings wins, as in transformers; the
 * frequencies hold for the short factors' range. `mscale`: Phi-3.5-MoE's short_mscale, which replaces
 * the attention factor.
 */
export function longrope(
  r: ConfigReader,
  s: ConfigReader,
  headDim: number,
  maxPositions: number,
  mscale?: number,
): RopeFrequencies {
  const { theta, rotDim } = rotary(s, headDim);
  const original = r.int("original_max_position_embeddings", s.int("original_max_position_embeddings", maxPositions));
  const short = s.raw.short_factor;
  if (!Array.isArray(short) || short.length !== rotDim / 2 || !short.every((f) => typeof f === "number" && f > 0)) {
    throw new ModelError("BAD_CONFIG", r.file, `"${s.name("short_factor")}" must hold ${rotDim / 2} positive numbers`);
  }
  const factor = maxPositions / original;
  const m =
    mscale ?? s.positive("attention_factor", factor <= 1 ? 1 : Math.sqrt(1 + Math.log(factor) / Math.log(original)));
  const inv = new Float32Array(rotDim / 2);
  for (let i = 0; i < inv.length; i++) inv[i] = 1 / (short[i] * Math.pow(theta, (2 * i) / rotDim));
  return { inv, factor: m, maxPositions: Math.min(maxPositions, original) };
}

function parseConfig(raw: Record<string, unknown>, file: string): ModelConfig {
  const r = new ConfigReader(raw, file);
  return familyConfig(r, "Phi3ForCausalLM", 1e-5, (headDim, layers) => {
    const maxPositions = r.int("max_position_embeddings", 4096);
    const s = ropeSettings(r);
    const kind = ropeType(s);
    const rope =
      kind === "longrope" || kind === "su"
        ? longrope(r, s, headDim, maxPositions)
        : ropeFrequencies(s, headDim, maxPositions);
    // transformers' Phi-3 attends within sliding_window in every layer whenever it is set.
    const windows = slidingWindows(r, layers, raw.sliding_window, () => true);
    return { ...ropeFields(rope), ...(windows && { attentionWindows: windows }) };
  });
}

function bindWeights(c: ModelConfig, s: WeightStore): ModelWeights {
  const { hidden: H, heads: A, kvHeads: K, headDim: D, intermediate: F } = c;
  const plain = (w: Linear["w"]): Linear => ({ w, b: null });
  const norm = (name: string) => ({ weight: s.get(`${name}.weight`, [H]), bias: null });
  const layers: LayerWeights[] = [];
  for (let i = 0; i < c.layers; i++) {
    const p = `model.layers.${i}`;
    const qkv = `${p}.self_attn.qkv_proj.weight`;
    const qkvShape = [(A + 2 * K) * D, H] as const;
    const gateUp = `${p}.mlp.gate_up_proj.weight`;
    layers.push({
      attnNorm: norm(`${p}.input_layernorm`),
      qkv: {
        q: plain(s.getRows(qkv, qkvShape, 0, A * D)),
        k: plain(s.getRows(qkv, qkvShape, A * D, K * D)),
        v: plain(s.getRows(qkv, qkvShape, (A + K) * D, K * D)),
      },
      o: plain(s.get(`${p}.self_attn.o_proj.weight`, [H, A * D])),
      ffnNorm: norm(`${p}.post_attention_layernorm`),
      gate: plain(s.getRows(gateUp, [2 * F, H], 0, F)),
      up: plain(s.getRows(gateUp, [2 * F, H], F, F)),
      down: plain(s.get(`${p}.mlp.down_proj.weight`, [H, F])),
    });
  }
  return familyWeights(c, s, layers);
}

export const phi3: ArchDefinition = { parseConfig, bindWeights };
