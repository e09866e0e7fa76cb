// OPTForCausalLM: LayerNorm (pre-norm), learned positions offset by 2, ReLU MLP with biases,
// tied head. OPT-350m's post-norm layout and project_in/out are rejected with a clear error.
import { ModelError } from "../loader/errors.js";
import type { WeightStore } from "../loader/safetensors.js";
import { ConfigReader, validateConfig, type ArchDefinition, type LayerWeights, type Linear } from "./config.js";

export const opt: ArchDefinition = {
  parseConfig(raw, file) {
    const r = new ConfigReader(raw, file);
    const hidden = r.int("hidden_size");
    const heads = r.int("num_attention_heads");
    if (!r.bool("do_layer_norm_before", true)) {
      throw new ModelError(
        "BAD_CONFIG",
        file,
        "OPT with do_layer_norm_before = false (post-norm, OPT-350m) is not supported",
      );
    }
    if (r.int("word_embed_proj_dim", hidden) !== hidden) {
      throw new ModelError(
        "BAD_CONFIG",
        file,
        "OPT with word_embed_proj_dim != hidden_size (project_in/out) is not supported",
      );
    }
    if (!r.bool("enable_bias", true) || !r.bool("layer_norm_elementwise_affine", true)) {
      throw new ModelError("BAD_CONFIG", file, "OPT without biases or without affine LayerNorm is not supported");
    }
    return validateConfig(
      {
        architecture: "OPTForCausalLM",
        hidden,
        layers: r.int("num_hidden_layers"),
        heads,
        kvHeads: heads,
        headDim: hidden / heads,
        intermediate: r.int("ffn_dim"),
        vocab: r.int("vocab_size"),
        maxPositions: r.int("max_position_embeddings"),
        norm: "layer",
        normEps: 1e-5,
        activation: r.activation("activation_function", "relu"),
        gatedFfn: false,
        ropeInvFreq: null,
        positionOffset: 2,
        tiedEmbeddings: r.bool("tie_word_embeddings", true),
        bosTokenId: r.ids("bos_token_id")[0] ?? null,
        eosTokenIds: r.ids("eos_token_id"),
        dtype: r.dtype(),
      },
      file,
    );
  },

  bindWeights(c, s: WeightStore) {
    const { hidden: H, intermediate: F, vocab: V } = c;
    const lin = (name: string, out: number, inp: number): Linear => ({
      w: s.get(`${name}.weight`, [out, inp]),
      b: s.get(`${name}.bias`, [out]),
    });
    const ln = (name: string) => ({ weight: s.get(`${name}.weight`, [H]), bias: s.get(`${name}.bias`, [H]) });
    const layers: LayerWeights[] = [];
    for (let i = 0; i < c.layers; i++) {
      const p = `model.decoder.layers.${i}`;
      layers.push({
        attnNorm: ln(`${p}.self_attn_layer_norm`),
        qkv: {
          q: lin(`${p}.self_attn.q_proj`, H, H),
          k: lin(`${p}.self_attn.k_proj`, H, H),
          v: lin(`${p}.self_attn.v_proj`, H, H),
        },
        o: lin(`${p}.self_attn.out_proj`, H, H),
        ffnNorm: ln(`${p}.final_layer_norm`),
        gate: null,
        up: lin(`${p}.fc1`, F, H),
        down: lin(`${p}.fc2`, H, F),
      });
    }
    const embed = s.get("model.decoder.embed_tokens.weight", [V, H]);
    const head = c.tiedEmbeddings || !s.has("lm_head.weight") ? embed : s.get("lm_head.weight", [V, H]);
    return {
      embed,
      positions: s.get("model.decoder.embed_positions.weight", [c.maxPositions + 2, H]),
      layers,
      finalNorm: ln("model.decoder.final_layer_norm"),
      head: { w: head, b: null },
    };
  },
};
