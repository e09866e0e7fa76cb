// GPT2LMHeadModel: LayerNorm, learned absolute positions, fused c_attn, GELU (tanh) MLP, tied head.
// Its Conv1D weights are stored [in, out]; the kernels read them in place (transposed = true).
// Checkpoints name tensors with or without the "transformer." prefix; both load.
import type { WeightStore } from "../loader/safetensors.js";
import { ModelError } from "../loader/errors.js";
import { ConfigReader, validateConfig, type ArchDefinition, type LayerWeights, type Linear } from "./config.js";

export const gpt2: ArchDefinition = {
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const hidden = r.int("n_embd");
    const heads = r.int("n_head");
    // transformers' other GPT-2 attention scalings: none at all, or also 1/(layer index + 1).
    if (!r.bool("scale_attn_weights", true) || r.bool("scale_attn_by_inverse_layer_idx", false)) {
      throw new ModelError(
        "BAD_CONFIG",
        file,
        "GPT-2 attention scaled other than by 1/√head_dim (scale_attn_weights: false or scale_attn_by_inverse_layer_idx: true) is not supported",
      );
    }
    return validateConfig(
      {
        architecture: "GPT2LMHeadModel",
        hidden,
        layers: r.int("n_layer"),
        heads,
        kvHeads: heads,
        headDim: hidden / heads,
        intermediate: r.int("n_inner", 4 * hidden),
        vocab: r.int("vocab_size"),
        maxPositions: r.int("n_positions"),
        norm: "layer",
        normEps: r.epsilon("layer_norm_epsilon", 1e-5),
        activation: r.activation("activation_function", "gelu_new"),
        gatedFfn: false,
        ropeInvFreq: null,
        positionOffset: 0,
        tiedEmbeddings: true,
        bosTokenId: r.ids("bos_token_id")[0] ?? null,
        eosTokenIds: r.ids("eos_token_id"),
        dtype: r.dtype(),
      },
      file,
    );
  },

  bindWeights(c, s: WeightStore) {
    const { hidden: H, intermediate: F, vocab: V } = c;
    const prefix = s.has("transformer.wte.weight") ? "transformer." : "";
    const conv = (name: string, inp: number, out: number): Linear => ({
      w: s.get(`${prefix}${name}.weight`, [inp, out], true),
      b: s.get(`${prefix}${name}.bias`, [out]),
    });
    const ln = (name: string) => ({
      weight: s.get(`${prefix}${name}.weight`, [H]),
      bias: s.get(`${prefix}${name}.bias`, [H]),
    });
    const layers: LayerWeights[] = [];
    for (let i = 0; i < c.layers; i++) {
      const p = `h.${i}`;
      layers.push({
        attnNorm: ln(`${p}.ln_1`),
        qkv: { fused: conv(`${p}.attn.c_attn`, H, 3 * H) },
        o: conv(`${p}.attn.c_proj`, H, H),
        ffnNorm: ln(`${p}.ln_2`),
        gate: null,
        up: conv(`${p}.mlp.c_fc`, H, F),
        down: conv(`${p}.mlp.c_proj`, F, H),
      });
    }
    const embed = s.get(`${prefix}wte.weight`, [V, H]);
    return {
      embed,
      positions: s.get(`${prefix}wpe.weight`, [c.maxPositions, H]),
      layers,
      finalNorm: ln("ln_f"),
      head: { w: embed, b: null },
    };
  },
};
