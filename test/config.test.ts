// config.json → ModelConfig: the fields each architecture reads, rope scaling, and the errors.
import { test } from "node:test";
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { tempDir } from "./helpers.js";
import { readModelConfig } from "../core/loader/model-folder.js";
import { ModelError } from "../core/loader/errors.js";
import { interleavedRopeOrder } from "../core/arch/config.js";

const LLAMA_32_1B = {
  architectures: ["LlamaForCausalLM"],
  model_type: "llama",
  hidden_size: 2048,
  intermediate_size: 8192,
  num_hidden_layers: 16,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  head_dim: 64,
  vocab_size: 128256,
  max_position_embeddings: 131072,
  rms_norm_eps: 1e-5,
  rope_theta: 500000.0,
  rope_scaling: {
    factor: 32.0,
    high_freq_factor: 4.0,
    low_freq_factor: 1.0,
    original_max_position_embeddings: 8192,
    rope_type: "llama3",
  },
  hidden_act: "silu",
  tie_word_embeddings: true,
  bos_token_id: 128000,
  eos_token_id: [128001, 128008, 128009],
  torch_dtype: "bfloat16",
};

function configIn(t: { after: (fn: () => void) => void }, json: object): string {
  const dir = tempDir(t);
  writeFileSync(join(dir, "config.json"), JSON.stringify(json));
  return dir;
}

/** Each config is a BAD_CONFIG error whose message matches its pattern. */
function badConfigs(t: { after: (fn: () => void) => void }, cases: readonly (readonly [object, RegExp])[]): void {
  for (const [json, pattern] of cases) {
    assert.throws(
      () => readModelConfig(configIn(t, json)),
      (e: unknown) => e instanceof ModelError && e.code === "BAD_CONFIG" && pattern.test(e.message),
      String(pattern),
    );
  }
}

test("Llama 3.2 config: shapes, GQA, eos list, llama3 rope scaling", (t) => {
  const c = readModelConfig(configIn(t, LLAMA_32_1B));
  assert.equal(c.heads / c.kvHeads, 4);
  assert.equal(c.headDim, 64);
  assert.deepEqual(c.eosTokenIds, [128001, 128008, 128009]);
  assert.equal(c.dtype, "BF16");
  const plain = readModelConfig(configIn(t, { ...LLAMA_32_1B, rope_scaling: null })).ropeInvFreq!;
  const scaled = c.ropeInvFreq!;
  assert.equal(scaled.length, 32);
  // High frequencies (wavelength < 8192/4) are kept, low ones (wavelength > 8192) slowed 32×,
  // the band between interpolates smoothly and stays ordered.
  for (let i = 0; i < 32; i++) {
    const wavelen = (2 * Math.PI) / plain[i];
    if (wavelen < 2048) assert.equal(scaled[i], plain[i]);
    else if (wavelen > 8192) assert.ok(Math.abs(scaled[i] - plain[i] / 32) < 1e-12 + 1e-6 * plain[i]);
    else assert.ok(scaled[i] < plain[i] && scaled[i] > plain[i] / 32, `band ${i}`);
    if (i > 0) assert.ok(scaled[i] < scaled[i - 1]);
  }
  assert.ok(
    scaled.some((f, i) => f !== plain[i] && Math.abs(f - plain[i] / 32) > 1e-9 * plain[i]),
    "the smooth band is exercised",
  );
});

test("linear rope scaling divides every frequency; dynamic NTK keeps them and stops the context; unknown types are rejected", (t) => {
  const base = { ...LLAMA_32_1B, rope_scaling: null, max_position_embeddings: 32768 };
  const plainConfig = readModelConfig(configIn(t, base));
  const plain = plainConfig.ropeInvFreq!;
  const lin = readModelConfig(configIn(t, { ...base, rope_scaling: { type: "linear", factor: 4 } })).ropeInvFreq!;
  lin.forEach((f, i) => assert.ok(Math.abs(f - plain[i] / 4) <= 1e-7 * plain[i]));
  // Dynamic NTK (InternLM2.5): transformers' base frequencies up to the original length, a new base past it.
  const dynamic = readModelConfig(configIn(t, { ...base, rope_scaling: { type: "dynamic", factor: 2 } }));
  assert.deepEqual(dynamic.ropeInvFreq, plain);
  assert.equal(dynamic.maxPositions, 32768);
  const original = { type: "dynamic", factor: 2, original_max_position_embeddings: 8192 };
  assert.equal(readModelConfig(configIn(t, { ...base, rope_scaling: original })).maxPositions, 8192);
  assert.throws(
    () => readModelConfig(configIn(t, { ...base, rope_scaling: { rope_type: "longrope", factor: 4 } })),
    (e: unknown) =>
      e instanceof ModelError &&
      e.code === "BAD_CONFIG" &&
      /"rope_scaling.rope_type" "longrope" is not supported/.test(e.message),
  );
  badConfigs(t, [
    [{ ...base, rope_scaling: { type: "dynamic", factor: 0 } }, /"rope_scaling.factor" must be a positive number/],
  ]);
});

test("sliding windows as transformers builds them: Mistral's in every layer, Qwen2's from max_window_layers on", (t) => {
  const base = { ...LLAMA_32_1B, rope_scaling: null, num_hidden_layers: 4, max_position_embeddings: 32768 };
  const mistral = readModelConfig(
    configIn(t, { ...base, architectures: ["MistralForCausalLM"], model_type: "mistral", sliding_window: 4096 }),
  );
  assert.equal(mistral.maxPositions, 32768); // the window slides; the context is not capped
  assert.deepEqual(mistral.attentionWindows, [4096, 4096, 4096, 4096]);
  const noWindow = { ...base, architectures: ["MistralForCausalLM"], model_type: "mistral", sliding_window: null };
  assert.equal(readModelConfig(configIn(t, noWindow)).attentionWindows, undefined);

  const qwen2 = { ...base, architectures: ["Qwen2ForCausalLM"], model_type: "qwen2", sliding_window: 1024 };
  assert.equal(readModelConfig(configIn(t, { ...qwen2, use_sliding_window: false })).attentionWindows, undefined);
  assert.deepEqual(
    readModelConfig(configIn(t, { ...qwen2, use_sliding_window: true, max_window_layers: 2 })).attentionWindows,
    [0, 0, 1024, 1024],
  );
  const listed = {
    ...qwen2,
    use_sliding_window: true,
    layer_types: ["sliding_attention", "full_attention", "full_attention", "sliding_attention"],
  };
  assert.deepEqual(readModelConfig(configIn(t, listed)).attentionWindows, [1024, 0, 0, 1024]);
  assert.throws(
    () => readModelConfig(configIn(t, { ...qwen2, use_sliding_window: true, sliding_window: -1 })),
    (e: unknown) => e instanceof ModelError && e.code === "BAD_CONFIG" && /sliding_window/.test(e.message),
  );
});

test("SmolLM3: no_rope_layers picks the layers without a rotary step; without it every 4th (or interval-th)", (t) => {
  const smol = {
    ...LLAMA_32_1B,
    rope_scaling: null,
    architectures: ["SmolLM3ForCausalLM"],
    model_type: "smollm3",
    num_hidden_layers: 8,
  };
  const listed = readModelConfig(configIn(t, { ...smol, no_rope_layers: [1, 0, 1, 1, 1, 1, 1, 0] }));
  assert.deepEqual(listed.ropeLayers, [true, false, true, true, true, true, true, false]);
  assert.deepEqual(readModelConfig(configIn(t, smol)).ropeLayers, [true, true, true, false, true, true, true, false]);
  const every2 = readModelConfig(configIn(t, { ...smol, no_rope_layer_interval: 2 }));
  assert.deepEqual(every2.ropeLayers, [true, false, true, false, true, false, true, false]);
  for (const bad of [[1, 1, 1], [1, 1, 1, 1, 1, 1, 1, 2], "all"]) {
    assert.throws(
      () => readModelConfig(configIn(t, { ...smol, no_rope_layers: bad })),
      (e: unknown) =>
        e instanceof ModelError &&
        e.code === "BAD_CONFIG" &&
        /no_rope_layers must list 0 or 1 for each of the 8 layers/.test(e.message),
    );
  }
  // Other members of the family rotate in every layer.
  assert.equal(readModelConfig(configIn(t, LLAMA_32_1B)).ropeLayers, undefined);
});

test("Qwen3 and Llama read attention_bias (q/k/v/o biases); Qwen2 has q/k/v biases whatever it says", (t) => {
  const qwen3 = { ...LLAMA_32_1B, rope_scaling: null, architectures: ["Qwen3ForCausalLM"], model_type: "qwen3" };
  assert.equal(readModelConfig(configIn(t, qwen3)).attentionBias, false);
  assert.equal(readModelConfig(configIn(t, { ...qwen3, attention_bias: true })).attentionBias, true);
  assert.equal(readModelConfig(configIn(t, { ...LLAMA_32_1B, attention_bias: true })).attentionBias, true);
  const qwen2 = { ...qwen3, architectures: ["Qwen2ForCausalLM"], model_type: "qwen2", attention_bias: true };
  assert.equal(readModelConfig(configIn(t, qwen2)).attentionBias, false); // its biases are not optional
});

test("Phi-3 longrope: short factors, context capped at the original length, attention factor on cos and sin", (t) => {
  const phi = {
    ...LLAMA_32_1B,
    architectures: ["Phi3ForCausalLM"],
    model_type: "phi3",
    hidden_size: 3072,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    head_dim: undefined,
    max_position_embeddings: 131072,
    original_max_position_embeddings: 4096,
    rope_theta: 10000,
    sliding_window: 262144,
    rope_scaling: { type: "longrope", short_factor: Array.from({ length: 48 }, (_, i) => 1 + i / 10), long_factor: [] },
  };
  const c = readModelConfig(configIn(t, phi));
  assert.equal(c.headDim, 96);
  assert.equal(c.maxPositions, 4096);
  const want = 1 / (1.5 * Math.pow(10000, 10 / 96)); // frequency 5 over short factor 1.5
  assert.ok(Math.abs(c.ropeInvFreq![5] - want) < 1e-6 * want, `${c.ropeInvFreq![5]} vs ${want}`);
  const m = Math.sqrt(1 + Math.log(32) / Math.log(4096));
  assert.ok(Math.abs(c.ropeFactor! - m) < 1e-12);
  // Partial rotary (Phi-4-mini): short factors over the rotary dims only, the same factor.
  const partial = readModelConfig(
    configIn(t, {
      ...phi,
      partial_rotary_factor: 0.75,
      rope_scaling: { ...phi.rope_scaling, short_factor: Array(36).fill(1) },
    }),
  );
  assert.equal(partial.ropeInvFreq!.length, 36);
  assert.ok(Math.abs(partial.ropeFactor! - m) < 1e-12);
  // No scaling: plain frequencies and scale; a 2047-position window in every layer (Phi-3-mini-4k).
  const plain = readModelConfig(
    configIn(t, { ...phi, rope_scaling: null, max_position_embeddings: 4096, sliding_window: 2047 }),
  );
  assert.equal(plain.ropeFactor, undefined);
  assert.equal(plain.maxPositions, 4096);
  assert.ok(plain.attentionWindows!.length === plain.layers && plain.attentionWindows!.every((w) => w === 2047));
  badConfigs(t, [
    [
      { ...phi, rope_scaling: { ...phi.rope_scaling, short_factor: [1, 2] } },
      /"rope_scaling.short_factor" must hold 48 positive numbers/,
    ],
  ]);
});

test("missing and invalid fields name the field and the file", (t) => {
  const { hidden_size: _h, ...noHidden } = LLAMA_32_1B;
  for (const [json, pattern] of [
    [noHidden, /"hidden_size" is missing/],
    [{ ...LLAMA_32_1B, num_key_value_heads: 5 }, /not a multiple of 5/],
    [{ ...LLAMA_32_1B, vocab_size: -3 }, /"vocab_size" must be a positive integer/],
    [{ ...LLAMA_32_1B, hidden_act: "swishglu" }, /activation "swishglu" is not supported/],
    [{ ...LLAMA_32_1B, eos_token_id: 999999 }, /outside the vocabulary/],
    [{ model_type: "mamba" }, /neither "architectures" nor a known "model_type"/],
  ] as const) {
    assert.throws(
      () => readModelConfig(configIn(t, json)),
      (e: unknown) => e instanceof ModelError && pattern.test(e.message) && e.message.includes("config.json"),
      String(pattern),
    );
  }
});

test("numbers that would turn into NaN, inf or a wrong model are rejected before any weight is read", (t) => {
  const phi3 = { ...LLAMA_32_1B, architectures: ["Phi3ForCausalLM"], model_type: "phi3", rope_scaling: null };
  const gpt2 = {
    architectures: ["GPT2LMHeadModel"],
    n_embd: 64,
    n_head: 4,
    n_layer: 2,
    n_positions: 64,
    vocab_size: 100,
  };
  const llama3 = LLAMA_32_1B.rope_scaling;
  badConfigs(t, [
    [{ ...LLAMA_32_1B, rope_theta: 0 }, /"rope_theta" must be a positive number, got 0/],
    [{ ...LLAMA_32_1B, rope_theta: -10000 }, /"rope_theta" must be a positive number/],
    [{ ...LLAMA_32_1B, rms_norm_eps: -1e-5 }, /"rms_norm_eps" must not be negative/],
    [{ ...LLAMA_32_1B, rope_scaling: { rope_type: "linear", factor: 0 } }, /"rope_scaling.factor" must be a positive/],
    [
      { ...LLAMA_32_1B, rope_scaling: { ...llama3, high_freq_factor: 1 } },
      /"rope_scaling.high_freq_factor" must exceed low_freq_factor/,
    ],
    [{ ...LLAMA_32_1B, mlp_bias: true }, /"mlp_bias": true \(biases in the FFN\) is not supported/],
    [{ ...phi3, partial_rotary_factor: 0 }, /"partial_rotary_factor" must be a positive number/],
    [{ ...phi3, partial_rotary_factor: 0.3 }, /rotary dimension 19 .* must be even/],
    // Found by tools/fuzz/loaders.mjs: this one took two minutes to build its rotary table.
    [{ ...LLAMA_32_1B, head_dim: 2 ** 31 }, /rotary dimension 2147483648 .* is over 65536/],
    [{ ...GEMMA_3_1B, query_pre_attn_scalar: 0 }, /"query_pre_attn_scalar" must be a positive number/],
    [{ ...GEMMA_3_1B, rope_local_base_freq: -1 }, /"rope_local_base_freq" must be a positive number/],
    [{ ...gpt2, n_head: 5 }, /hidden size 64 is not a multiple of 5 attention heads/],
    [{ ...gpt2, layer_norm_epsilon: -1 }, /"layer_norm_epsilon" must not be negative/],
    [{ ...gpt2, scale_attn_weights: false }, /scaled other than by 1\/√head_dim/],
    [{ ...gpt2, scale_attn_by_inverse_layer_idx: true }, /scaled other than by 1\/√head_dim/],
  ]);
  // transformers' Qwen2 and Mistral configs have no mlp_bias, so a stray one changes nothing there.
  const qwen2 = { ...LLAMA_32_1B, architectures: ["Qwen2ForCausalLM"], model_type: "qwen2", mlp_bias: true };
  assert.equal(readModelConfig(configIn(t, qwen2)).architecture, "Qwen2ForCausalLM");
  assert.equal(readModelConfig(configIn(t, { ...LLAMA_32_1B, rms_norm_eps: 0 })).normEps, 0);
});

test("OPT variants the engine cannot run are rejected clearly", (t) => {
  const opt = {
    architectures: ["OPTForCausalLM"],
    hidden_size: 64,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    ffn_dim: 128,
    max_position_embeddings: 64,
    vocab_size: 100,
  };
  assert.equal(readModelConfig(configIn(t, opt)).positionOffset, 2);
  assert.throws(() => readModelConfig(configIn(t, { ...opt, do_layer_norm_before: false })), /post-norm/);
  assert.throws(() => readModelConfig(configIn(t, { ...opt, word_embed_proj_dim: 32 })), /project_in/);
});

// gemma-3-1b-it's config.json (the fields it sets).
const GEMMA_3_1B = {
  architectures: ["Gemma3ForCausalLM"],
  model_type: "gemma3_text",
  hidden_size: 1152,
  intermediate_size: 6912,
  num_hidden_layers: 26,
  num_attention_heads: 4,
  num_key_value_heads: 1,
  head_dim: 256,
  vocab_size: 262144,
  max_position_embeddings: 32768,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  rope_local_base_freq: 10000,
  rope_scaling: null,
  hidden_activation: "gelu_pytorch_tanh",
  query_pre_attn_scalar: 256,
  sliding_window: 512,
  sliding_window_pattern: 6,
  final_logit_softcapping: null,
  attn_logit_softcapping: null,
  bos_token_id: 2,
  eos_token_id: [1, 106],
  torch_dtype: "bfloat16",
};

test("Gemma 3: windows every layer but each 6th, two rotary bases, √hidden embeddings, query_pre_attn_scalar", (t) => {
  const c = readModelConfig(configIn(t, GEMMA_3_1B));
  assert.equal(c.architecture, "Gemma3ForCausalLM");
  assert.equal(c.activation, "gelu_tanh");
  assert.equal(c.tiedEmbeddings, true); // Gemma3TextConfig's default
  assert.deepEqual(
    c.attentionWindows,
    Array.from({ length: 26 }, (_, i) => ((i + 1) % 6 === 0 ? 0 : 512)),
  );
  assert.equal(c.embedScale, Math.sqrt(1152));
  assert.equal(c.attentionScale, 1 / 16);
  assert.ok(Math.abs(c.ropeInvFreq![1] - Math.pow(1e6, -2 / 256)) < 1e-7);
  assert.ok(Math.abs(c.localRopeInvFreq![1] - Math.pow(1e4, -2 / 256)) < 1e-7);
  assert.deepEqual(c.eosTokenIds, [1, 106]);

  // layer_types (newer configs) wins over the pattern; the global layers' rope_scaling leaves the local base alone.
  const types = Array.from({ length: 26 }, (_, i) => (i % 2 ? "full_attention" : "sliding_attention"));
  const listed = readModelConfig(
    configIn(t, { ...GEMMA_3_1B, layer_types: types, rope_scaling: { rope_type: "linear", factor: 8 } }),
  );
  assert.deepEqual(
    listed.attentionWindows,
    types.map((x) => (x === "sliding_attention" ? 512 : 0)),
  );
  assert.ok(Math.abs(listed.ropeInvFreq![1] - Math.pow(1e6, -2 / 256) / 8) < 1e-7);
  assert.deepEqual(listed.localRopeInvFreq, c.localRopeInvFreq);

  for (const [bad, what] of [
    [{ layer_types: ["sliding_attention"] }, /layer_types/],
    [{ layer_types: types.map(() => "chunked_attention") }, /layer_types/],
    [{ final_logit_softcapping: "30" }, /final_logit_softcapping/],
    [{ hidden_activation: "swiglu_oai" }, /hidden_activation/],
  ] as const) {
    assert.throws(
      () => readModelConfig(configIn(t, { ...GEMMA_3_1B, ...bad })),
      (e: unknown) => e instanceof ModelError && e.code === "BAD_CONFIG" && what.test(e.message),
      JSON.stringify(bad),
    );
  }
});

test("Gemma 3 multimodal checkpoints: the text model from text_config, with Gemma3TextConfig's defaults", (t) => {
  // gemma-3-4b-it's config.json, vision_config left out (the engine runs the language model only).
  const c = readModelConfig(
    configIn(t, {
      architectures: ["Gemma3ForConditionalGeneration"],
      model_type: "gemma3",
      text_config: {
        hidden_size: 2560,
        intermediate_size: 10240,
        model_type: "gemma3_text",
        num_hidden_layers: 34,
        rope_scaling: { factor: 8.0, rope_type: "linear" },
        sliding_window: 1024,
      },
      eos_token_id: [1, 106],
      torch_dtype: "bfloat16",
    }),
  );
  assert.equal(c.architecture, "Gemma3ForConditionalGeneration");
  assert.equal(c.hidden, 2560);
  assert.equal(c.layers, 34);
  assert.equal(c.heads, 8);
  assert.equal(c.kvHeads, 4);
  assert.equal(c.headDim, 256);
  assert.equal(c.vocab, 262208);
  assert.equal(c.dtype, "BF16");
  assert.deepEqual(c.eosTokenIds, [1, 106]);
  assert.equal(c.attentionWindows!.filter((w) => w === 1024).length, 34 - 5);
  assert.throws(
    () => readModelConfig(configIn(t, { architectures: ["Gemma3ForConditionalGeneration"], text_config: 3 })),
    (e: unknown) => e instanceof ModelError && e.code === "BAD_CONFIG" && /text_config/.test(e.message),
  );
});

test("Gemma 2: a window every other layer from the first, soft caps (null: none), no local rotary base", (t) => {
  // gemma-2-2b-it's config.json (the fields it sets).
  const gemma2 = {
    architectures: ["Gemma2ForCausalLM"],
    model_type: "gemma2",
    hidden_size: 2304,
    intermediate_size: 9216,
    num_hidden_layers: 26,
    num_attention_heads: 8,
    num_key_value_heads: 4,
    head_dim: 256,
    vocab_size: 256000,
    max_position_embeddings: 8192,
    rms_norm_eps: 1e-6,
    rope_theta: 10000.0,
    hidden_activation: "gelu_pytorch_tanh",
    query_pre_attn_scalar: 256,
    sliding_window: 4096,
    attn_logit_softcapping: 50.0,
    final_logit_softcapping: 30.0,
    cache_implementation: "hybrid",
    bos_token_id: 2,
    eos_token_id: [1, 107],
    torch_dtype: "float32",
  };
  const c = readModelConfig(configIn(t, gemma2));
  assert.deepEqual(
    c.attentionWindows,
    Array.from({ length: 26 }, (_, i) => (i % 2 === 0 ? 4096 : 0)),
  );
  assert.equal(c.attentionSoftcap, 50);
  assert.equal(c.finalSoftcap, 30);
  assert.equal(c.localRopeInvFreq, undefined);
  assert.equal(c.embedScale, Math.sqrt(2304));
  assert.equal(c.attentionScale, 1 / 16);
  const { attn_logit_softcapping: _a, final_logit_softcapping: _f, ...defaults } = gemma2;
  const d = readModelConfig(configIn(t, defaults)); // Gemma2Config's defaults
  assert.equal(d.attentionSoftcap, 50);
  assert.equal(d.finalSoftcap, 30);
  const off = readModelConfig(configIn(t, { ...gemma2, attn_logit_softcapping: null, final_logit_softcapping: null }));
  assert.equal(off.attentionSoftcap, undefined);
  assert.equal(off.finalSoftcap, undefined);
  assert.throws(
    () => readModelConfig(configIn(t, { ...gemma2, final_logit_softcapping: -1 })),
    (e: unknown) => e instanceof ModelError && e.code === "BAD_CONFIG" && /final_logit_softcapping/.test(e.message),
  );
});

/** A config as transformers 5 saves it: rotary settings in rope_parameters, no rope_theta/rope_scaling. */
function v5(json: Record<string, unknown>, ropeParameters: unknown): Record<string, unknown> {
  const { rope_theta: _t, rope_scaling: _s, rope_local_base_freq: _l, ...rest } = json;
  return { ...rest, rope_parameters: ropeParameters };
}

test("transformers 5's rope_parameters give the same rotary step as rope_theta + rope_scaling", (t) => {
  const same = (older: Record<string, unknown>, newer: Record<string, unknown>) => {
    const a = readModelConfig(configIn(t, older));
    const b = readModelConfig(configIn(t, newer));
    assert.deepEqual(b.ropeInvFreq, a.ropeInvFreq);
    assert.deepEqual(b.localRopeInvFreq, a.localRopeInvFreq);
    assert.equal(b.ropeTheta, a.ropeTheta);
    assert.equal(b.ropeFactor, a.ropeFactor);
    assert.equal(b.maxPositions, a.maxPositions);
    return b;
  };
  // Llama 3.2: llama3 scaling, base 500000 (the default base of 10000 would be silently wrong).
  const llama = same(LLAMA_32_1B, v5(LLAMA_32_1B, { ...LLAMA_32_1B.rope_scaling, rope_theta: 500000.0 }));
  assert.equal(llama.ropeTheta, 500000);
  // Linear scaling under the older key "type"; no scaling at all.
  const linear = { ...LLAMA_32_1B, rope_scaling: { type: "linear", factor: 4 } };
  same(linear, v5(linear, { type: "linear", factor: 4, rope_theta: 500000.0 }));
  const plain = { ...LLAMA_32_1B, rope_scaling: null };
  same(plain, v5(plain, { rope_type: "default", rope_theta: 500000.0 }));
  // A top-level rope_theta still counts when the object has none (transformers' setdefault).
  same(plain, { ...plain, rope_parameters: { rope_type: "default" } });
  // Phi-4-mini style: longrope, partial rotary at the top, original_max_position_embeddings at the top.
  const short = Array(36).fill(1.25);
  const phi = {
    ...LLAMA_32_1B,
    architectures: ["Phi3ForCausalLM"],
    model_type: "phi3",
    hidden_size: 3072,
    num_key_value_heads: 32,
    head_dim: undefined,
    original_max_position_embeddings: 4096,
    partial_rotary_factor: 0.75,
    rope_theta: 10000,
    rope_scaling: { type: "longrope", short_factor: short, long_factor: short },
  };
  const p = same(phi, v5(phi, { rope_type: "longrope", short_factor: short, long_factor: short, rope_theta: 10000 }));
  assert.equal(p.ropeInvFreq!.length, 36);
  assert.ok(p.ropeFactor! > 1);
  // Gemma 3: one object per layer type; the global layers' linear scaling, the local layers' own base.
  const gemma = { ...GEMMA_3_1B, rope_scaling: { rope_type: "linear", factor: 8 } };
  const layerTypes = Array.from({ length: 26 }, (_, i) => ((i + 1) % 6 === 0 ? "full_attention" : "sliding_attention"));
  const g = same(
    gemma,
    v5(
      { ...gemma, layer_types: layerTypes },
      {
        full_attention: { rope_type: "linear", factor: 8, rope_theta: 1000000 },
        sliding_attention: { rope_type: "default", rope_theta: 10000 },
      },
    ),
  );
  assert.notDeepEqual(g.ropeInvFreq, g.localRopeInvFreq);
});

test("malformed rope_parameters are BAD_CONFIG errors naming the field where the file has it", (t) => {
  const gemmaTypes = { ...GEMMA_3_1B, layer_types: Array(26).fill("sliding_attention") };
  badConfigs(t, [
    [v5(LLAMA_32_1B, [1, 2]), /"rope_parameters" must be an object or null/],
    [v5(LLAMA_32_1B, { rope_type: "linear", factor: 0 }), /"rope_parameters.factor" must be a positive number/],
    [v5(LLAMA_32_1B, { rope_type: "longrope", factor: 4 }), /"rope_parameters.rope_type" "longrope" is not supported/],
    [v5(LLAMA_32_1B, { rope_theta: -1 }), /"rope_parameters.rope_theta" must be a positive number/],
    [
      v5(LLAMA_32_1B, { ...LLAMA_32_1B.rope_scaling, high_freq_factor: 1 }),
      /"rope_parameters.high_freq_factor" must exceed low_freq_factor/,
    ],
    [v5(gemmaTypes, { sliding_attention: { rope_theta: 10000 } }), /"rope_parameters.full_attention" is missing/],
    [
      v5(gemmaTypes, { sliding_attention: { rope_theta: 0 }, full_attention: {} }),
      /"rope_parameters.sliding_attention.rope_theta" must be a positive number/,
    ],
  ]);
});

test("Granite: its multipliers folded into embedScale, normEps, attentionScale and finalNormScale", (t) => {
  const granite = {
    ...LLAMA_32_1B,
    architectures: ["GraniteForCausalLM"],
    model_type: "granite",
    rope_scaling: null,
    rope_theta: 10000000,
    embedding_multiplier: 12.0,
    residual_multiplier: 0.22,
    attention_multiplier: 0.015625,
    logits_scaling: 8.0,
  };
  const c = readModelConfig(configIn(t, granite));
  assert.equal(c.architecture, "GraniteForCausalLM");
  // The residual stream is carried divided by 0.22: embeddings × 12 / 0.22, norms with eps / 0.22².
  assert.ok(Math.abs(c.embedScale! - 12 / 0.22) < 1e-12);
  assert.ok(Math.abs(c.normEps - 1e-5 / (0.22 * 0.22)) < 1e-18);
  assert.equal(c.attentionScale, 0.015625);
  assert.equal(c.finalNormScale, 1 / 8);
  // GraniteConfig's defaults are 1: a plain Llama block.
  const {
    embedding_multiplier: _e,
    residual_multiplier: _r,
    attention_multiplier: _a,
    logits_scaling: _l,
    ...bare
  } = granite;
  const d = readModelConfig(configIn(t, bare));
  assert.equal(d.embedScale, 1);
  assert.equal(d.normEps, 1e-5);
  assert.equal(d.attentionScale, 1);
  badConfigs(t, [
    [{ ...granite, residual_multiplier: 0 }, /"residual_multiplier" must be a positive number/],
    [{ ...granite, logits_scaling: "8" }, /"logits_scaling" must be a number/],
    [{ ...granite, mlp_bias: true }, /"mlp_bias": true/],
  ]);
});

test("YaRN (Qwen2.5/Qwen3 long context): kept, blended and interpolated frequencies, attention factor on cos and sin", (t) => {
  // Qwen2.5-7B-Instruct's documented YaRN setting: factor 4 over 32768 positions.
  const qwen = {
    ...LLAMA_32_1B,
    architectures: ["Qwen2ForCausalLM"],
    model_type: "qwen2",
    hidden_size: 3584,
    num_attention_heads: 28,
    num_key_value_heads: 4,
    head_dim: 128,
    max_position_embeddings: 131072,
    rope_theta: 1000000,
    rope_scaling: { type: "yarn", factor: 4.0, original_max_position_embeddings: 32768 },
  };
  const c = readModelConfig(configIn(t, qwen));
  const plain = readModelConfig(configIn(t, { ...qwen, rope_scaling: null })).ropeInvFreq!;
  const inv = c.ropeInvFreq!;
  assert.equal(c.maxPositions, 131072); // static scaling: the whole context, unlike longrope
  assert.ok(Math.abs(c.ropeFactor! - (0.1 * Math.log(4) + 1)) < 1e-12);
  // Dimension d turns 32768 · inv[d] / 2π times over the original length: more than 32 times (the
  // fast end) kept, fewer than once (the slow end) divided by 4, blended between.
  const turns = (d: number) => (32768 * plain[d]) / (2 * Math.PI);
  let blended = 0;
  for (let d = 0; d < inv.length; d++) {
    const ratio = inv[d] / plain[d];
    if (turns(d) > 32 * 1.2) assert.ok(Math.abs(ratio - 1) < 1e-6, `dim ${d} kept`);
    else if (turns(d) < 1 / 1.2) assert.ok(Math.abs(ratio - 0.25) < 1e-6, `dim ${d} interpolated`);
    else if (ratio > 0.25 + 1e-6 && ratio < 1 - 1e-6) blended++;
  }
  assert.ok(blended > 0, "some frequencies blend");
  // An explicit attention_factor wins; DeepSeek's mscale pair is a ratio of two such terms.
  const given = readModelConfig(
    configIn(t, { ...qwen, rope_scaling: { ...qwen.rope_scaling, attention_factor: 1.5 } }),
  );
  assert.equal(given.ropeFactor, 1.5);
  const pair = readModelConfig(
    configIn(t, { ...qwen, rope_scaling: { ...qwen.rope_scaling, mscale: 1, mscale_all_dim: 0.5 } }),
  );
  assert.ok(Math.abs(pair.ropeFactor! - (0.1 * Math.log(4) + 1) / (0.05 * Math.log(4) + 1)) < 1e-12);
  // Without the original length, max_position_embeddings stands in (transformers' default).
  const { original_max_position_embeddings: _o, ...noOriginal } = qwen.rope_scaling;
  const fallback = readModelConfig(configIn(t, { ...qwen, rope_scaling: noOriginal }));
  assert.notDeepEqual(fallback.ropeInvFreq, inv);
  assert.throws(
    () => readModelConfig(configIn(t, { ...qwen, rope_scaling: { ...qwen.rope_scaling, factor: 0 } })),
    (e: unknown) => e instanceof ModelError && /"rope_scaling.factor" must be a positive number/.test(e.message),
  );
});

test("StableLM: LayerNorms, partial rotary by default a quarter, q/k/v biases; parallel residual refused", (t) => {
  const stablelm = {
    architectures: ["StableLmForCausalLM"],
    model_type: "stablelm",
    hidden_size: 2048,
    intermediate_size: 5632,
    num_hidden_layers: 24,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    vocab_size: 100352,
    max_position_embeddings: 4096,
    layer_norm_eps: 1e-5,
    rope_theta: 10000,
    use_qkv_bias: true,
    tie_word_embeddings: false,
    bos_token_id: 100257,
    eos_token_id: 100257,
  };
  const c = readModelConfig(configIn(t, stablelm));
  assert.equal(c.norm, "layer");
  assert.equal(c.normEps, 1e-5);
  assert.equal(c.headDim, 64);
  assert.equal(c.ropeInvFreq!.length, 8); // 64 × 0.25 / 2
  assert.equal(c.attentionBias, true);
  assert.equal(readModelConfig(configIn(t, { ...stablelm, partial_rotary_factor: 0.5 })).ropeInvFreq!.length, 16);
  badConfigs(t, [
    [{ ...stablelm, use_parallel_residual: true }, /"use_parallel_residual": true .* is not supported/],
    [{ ...stablelm, qk_layernorm: true }, /"qk_layernorm": true .* is not supported/],
    [{ ...stablelm, layer_norm_eps: -1 }, /"layer_norm_eps" must not be negative/],
  ]);
});

test("Phi (1.5, 2): parallel blocks, LayerNorms, 0.4 of each head rotated, tanh GELU ungated; qk_layernorm refused", (t) => {
  const phi2 = {
    architectures: ["PhiForCausalLM"],
    model_type: "phi",
    hidden_size: 2560,
    intermediate_size: 10240,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    vocab_size: 51200,
    max_position_embeddings: 2048,
    layer_norm_eps: 1e-5,
    partial_rotary_factor: 0.4,
    hidden_act: "gelu_new",
    qk_layernorm: false,
    rope_theta: 10000,
    tie_word_embeddings: false,
    bos_token_id: 50256,
    eos_token_id: 50256,
  };
  const c = readModelConfig(configIn(t, phi2));
  assert.equal(c.parallelBlocks, true);
  assert.equal(c.norm, "layer");
  assert.equal(c.gatedFfn, false);
  assert.equal(c.activation, "gelu_tanh");
  assert.equal(c.headDim, 80);
  assert.equal(c.ropeInvFreq!.length, 16); // int(80 × 0.4) = 32 rotated dims
  assert.equal(c.attentionBias, true);
  // PhiConfig's defaults: half of each head rotated, gelu_new.
  const { partial_rotary_factor: _p, hidden_act: _a, ...bare } = phi2;
  const d = readModelConfig(configIn(t, bare));
  assert.equal(d.ropeInvFreq!.length, 20);
  assert.equal(d.activation, "gelu_tanh");
  badConfigs(t, [
    [{ ...phi2, qk_layernorm: true }, /"qk_layernorm": true .* is not supported/],
    [{ ...phi2, partial_rotary_factor: 0.01 }, /partial_rotary_factor/],
  ]);
});

test("GPT-NeoX (Pythia): rotary_pct / rotary_emb_base or their transformers 5 names, parallel blocks unless turned off", (t) => {
  const pythia = {
    architectures: ["GPTNeoXForCausalLM"],
    model_type: "gpt_neox",
    hidden_size: 2048,
    intermediate_size: 8192,
    num_hidden_layers: 16,
    num_attention_heads: 8,
    vocab_size: 50304,
    max_position_embeddings: 2048,
    rotary_pct: 0.25,
    rotary_emb_base: 10000,
    hidden_act: "gelu",
    layer_norm_eps: 1e-5,
    use_parallel_residual: true,
    tie_word_embeddings: false,
    bos_token_id: 0,
    eos_token_id: 0,
  };
  const c = readModelConfig(configIn(t, pythia));
  assert.equal(c.parallelBlocks, true);
  assert.equal(c.norm, "layer");
  assert.equal(c.activation, "gelu");
  assert.equal(c.gatedFfn, false);
  assert.equal(c.attentionBias, true); // GPTNeoXConfig's default
  assert.equal(c.ropeInvFreq!.length, 32); // 256 × 0.25 / 2
  assert.equal(c.ropeInvFreq![1], Math.fround(1 / Math.pow(10000, 2 / 64)));
  const { rotary_pct: _p, rotary_emb_base: _b, ...bare } = pythia;
  assert.deepEqual(readModelConfig(configIn(t, bare)).ropeInvFreq, c.ropeInvFreq, "defaults 0.25 and 10000");
  const v5 = { ...bare, rope_parameters: { rope_type: "default", rope_theta: 10000, partial_rotary_factor: 0.25 } };
  assert.deepEqual(readModelConfig(configIn(t, v5)).ropeInvFreq, c.ropeInvFreq, "transformers 5's rope_parameters");
  const sequential = readModelConfig(configIn(t, { ...pythia, use_parallel_residual: false, attention_bias: false }));
  assert.equal(sequential.parallelBlocks, undefined);
  assert.equal(sequential.attentionBias, false);
  badConfigs(t, [
    [{ ...pythia, rotary_pct: -1 }, /"rotary_pct" must be a positive number/],
    [{ ...pythia, rotary_emb_base: "x" }, /"rotary_emb_base" must be a number/],
    [{ ...pythia, num_key_value_heads: 4 }, /num_key_value_heads 4 ≠ 8 attention heads/],
  ]);
});

test("StarCoder2: LayerNorms (norm_epsilon), biases with use_bias, a window in every layer, Starcoder2Config's defaults", (t) => {
  const starcoder2 = {
    architectures: ["Starcoder2ForCausalLM"],
    model_type: "starcoder2",
    hidden_size: 3072,
    intermediate_size: 12288,
    num_hidden_layers: 30,
    num_attention_heads: 24,
    num_key_value_heads: 2,
    vocab_size: 49152,
    max_position_embeddings: 16384,
    norm_epsilon: 1e-5,
    rope_theta: 999999.4420358813,
    sliding_window: 4096,
    use_bias: true,
    hidden_act: "gelu_pytorch_tanh",
    bos_token_id: 0,
    eos_token_id: 0,
  };
  const c = readModelConfig(configIn(t, starcoder2));
  assert.equal(c.norm, "layer");
  assert.equal(c.gatedFfn, false);
  assert.equal(c.activation, "gelu_tanh");
  assert.equal(c.attentionBias, true);
  assert.equal(c.tiedEmbeddings, true); // Starcoder2Config's default
  assert.deepEqual(c.attentionWindows, Array(30).fill(4096));
  assert.equal(c.parallelBlocks, undefined);
  const { num_key_value_heads: _k, hidden_act: _a, use_bias: _b, sliding_window: _w, ...bare } = starcoder2;
  const d = readModelConfig(configIn(t, bare));
  assert.equal(d.kvHeads, 2);
  assert.equal(d.activation, "gelu_tanh");
  assert.equal(d.attentionBias, true);
  assert.equal(d.attentionWindows, undefined);
  assert.equal(readModelConfig(configIn(t, { ...starcoder2, use_bias: false })).attentionBias, false);
  badConfigs(t, [
    [{ ...starcoder2, norm_epsilon: -1 }, /"norm_epsilon" must not be negative/],
    [{ ...starcoder2, sliding_window: 0 }, /"sliding_window" must be a positive integer or null/],
  ]);
});

test("Cohere (Aya 23): parallel blocks, bias-free LayerNorm, adjacent rotary pairs, logit_scale; use_qk_norm refused", (t) => {
  const aya = {
    architectures: ["CohereForCausalLM"],
    model_type: "cohere",
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    vocab_size: 256000,
    max_position_embeddings: 8192,
    layer_norm_eps: 1e-5,
    logit_scale: 0.0625,
    rope_theta: 10000,
    use_qk_norm: false,
    bos_token_id: 5,
    eos_token_id: 255001,
  };
  const c = readModelConfig(configIn(t, aya));
  assert.equal(c.parallelBlocks, true);
  assert.equal(c.ropeInterleaved, true);
  assert.equal(c.norm, "layer");
  assert.equal(c.gatedFfn, true);
  assert.equal(c.finalNormScale, 0.0625);
  assert.equal(c.tiedEmbeddings, true); // CohereConfig's default
  assert.equal(c.attentionBias, false);
  const { logit_scale: _s, ...bare } = aya;
  assert.equal(readModelConfig(configIn(t, bare)).finalNormScale, 0.0625);
  badConfigs(t, [
    [{ ...aya, use_qk_norm: true }, /"use_qk_norm": true .* is not supported/],
    [{ ...aya, logit_scale: 0 }, /"logit_scale" must be a positive number/],
  ]);
});

test("Cohere 2 (Command R7B): windows and the rotary step in all but every 4th layer, or as layer_types say", (t) => {
  const r7b = {
    architectures: ["Cohere2ForCausalLM"],
    model_type: "cohere2",
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 8,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    vocab_size: 256000,
    max_position_embeddings: 8192,
    layer_norm_eps: 1e-5,
    logit_scale: 0.25,
    rope_theta: 50000,
    sliding_window: 4096,
    sliding_window_pattern: 4,
    bos_token_id: 5,
    eos_token_id: 255001,
  };
  const c = readModelConfig(configIn(t, r7b));
  assert.deepEqual(c.attentionWindows, [4096, 4096, 4096, 0, 4096, 4096, 4096, 0]);
  assert.deepEqual(c.ropeLayers, [true, true, true, false, true, true, true, false]);
  assert.equal(c.ropeInterleaved, true);
  assert.equal(c.parallelBlocks, true);
  assert.equal(c.finalNormScale, 0.25);
  const types = ["full_attention", "sliding_attention", "sliding_attention", "full_attention"];
  const listed = readModelConfig(configIn(t, { ...r7b, num_hidden_layers: 4, layer_types: types }));
  assert.deepEqual(listed.ropeLayers, [false, true, true, false]);
  badConfigs(t, [[{ ...r7b, sliding_window: null }, /"sliding_window": null is not supported/]]);
});

test("GLM-4 (GlmForCausalLM, Glm4ForCausalLM): Glm(4)Config's defaults, half of each head rotated in adjacent pairs", (t) => {
  const glm4 = {
    architectures: ["Glm4ForCausalLM"],
    model_type: "glm4",
    hidden_size: 4096,
    intermediate_size: 13696,
    num_hidden_layers: 40,
    num_attention_heads: 32,
    vocab_size: 151552,
    max_position_embeddings: 32768,
    rope_theta: 10000,
    eos_token_id: [151329, 151336, 151338],
  };
  const c = readModelConfig(configIn(t, glm4));
  assert.equal(c.headDim, 128);
  assert.equal(c.kvHeads, 2);
  assert.equal(c.normEps, 1.5625e-7);
  assert.equal(c.attentionBias, true);
  assert.equal(c.ropeInterleaved, true);
  assert.equal(c.ropeInvFreq!.length, 32); // 128 × 0.5 / 2
  assert.equal(c.tiedEmbeddings, false);
  const v5 = { ...glm4, rope_parameters: { rope_type: "default", rope_theta: 10000, partial_rotary_factor: 0.25 } };
  assert.equal(readModelConfig(configIn(t, v5)).ropeInvFreq!.length, 16, "rope_parameters' fraction, not the default");
  const glm = readModelConfig(configIn(t, { ...glm4, architectures: ["GlmForCausalLM"], model_type: "glm" }));
  assert.equal(glm.architecture, "GlmForCausalLM");
  assert.equal(glm.ropeInterleaved, true);
});

test("ERNIE 4.5: Ernie4_5Config's defaults (head_dim 128, rope_theta 500000, tied), adjacent rotary pairs; use_bias refused", (t) => {
  const ernie = {
    architectures: ["Ernie4_5ForCausalLM"],
    model_type: "ernie4_5",
    hidden_size: 1024,
    intermediate_size: 3072,
    num_hidden_layers: 18,
    num_attention_heads: 16,
    vocab_size: 103424,
    max_position_embeddings: 131072,
  };
  const c = readModelConfig(configIn(t, ernie));
  assert.equal(c.headDim, 128);
  assert.equal(c.kvHeads, 2);
  assert.equal(c.ropeTheta, 500000);
  assert.equal(c.ropeInvFreq![1], Math.fround(1 / Math.pow(500000, 2 / 128)));
  assert.equal(c.tiedEmbeddings, true);
  assert.equal(c.ropeInterleaved, true);
  badConfigs(t, [[{ ...ernie, use_bias: true }, /"use_bias": true \(biases in the FFN\) is not supported/]]);
});

test("EXAONE 4.0: OLMo 2's norms with per-head q/k norms; windows and rotary in 3 of 4 layers, or none without sliding_window", (t) => {
  const exaone = {
    architectures: ["Exaone4ForCausalLM"],
    model_type: "exaone4",
    hidden_size: 2048,
    intermediate_size: 4096,
    num_hidden_layers: 8,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    head_dim: 64,
    vocab_size: 102400,
    max_position_embeddings: 65536,
    rope_theta: 1000000,
    sliding_window: 4096,
    sliding_window_pattern: 4,
  };
  const c = readModelConfig(configIn(t, exaone));
  assert.deepEqual(c.attentionWindows, [4096, 4096, 4096, 0, 4096, 4096, 4096, 0]);
  assert.deepEqual(c.ropeLayers, [true, true, true, false, true, true, true, false]);
  assert.equal(c.normEps, 1e-5);
  const global = readModelConfig(configIn(t, { ...exaone, sliding_window: null }));
  assert.equal(global.attentionWindows, undefined);
  assert.equal(global.ropeLayers, undefined);
  const types = ["sliding_attention", "full_attention", "full_attention", "sliding_attention"];
  const listed = readModelConfig(
    configIn(t, { ...exaone, num_hidden_layers: 4, sliding_window_pattern: "LGGL", layer_types: types }),
  );
  assert.deepEqual(listed.ropeLayers, [true, false, false, true]);
  badConfigs(t, [[{ ...exaone, sliding_window_pattern: "LLLG" }, /"sliding_window_pattern" "LLLG" needs layer_types/]]);
});

test("GPT-J: n_* names, rotary_dim of each head in adjacent pairs (all when null), parallel blocks, GPTJConfig's defaults", (t) => {
  const gptj = {
    architectures: ["GPTJForCausalLM"],
    model_type: "gptj",
    n_embd: 4096,
    n_layer: 28,
    n_head: 16,
    n_positions: 2048,
    rotary_dim: 64,
    vocab_size: 50400,
    activation_function: "gelu_new",
    bos_token_id: 50256,
    eos_token_id: 50256,
  };
  const c = readModelConfig(configIn(t, gptj));
  assert.equal(c.headDim, 256);
  assert.equal(c.intermediate, 16384); // n_inner unset: 4 × n_embd
  assert.equal(c.ropeInvFreq!.length, 32);
  assert.equal(c.ropeInterleaved, true);
  assert.equal(c.parallelBlocks, true);
  assert.equal(c.activation, "gelu_tanh");
  assert.equal(readModelConfig(configIn(t, { ...gptj, rotary_dim: null })).ropeInvFreq!.length, 128);
  badConfigs(t, [
    [{ ...gptj, rotary_dim: 512 }, /"rotary_dim" must be even and at most 256/],
    [{ ...gptj, rotary_dim: 63 }, /"rotary_dim" must be even/],
  ]);
});

test("InternLM2: its own names, bias (default true), dynamic NTK with the context at max_position_embeddings", (t) => {
  const internlm = {
    architectures: ["InternLM2ForCausalLM"],
    model_type: "internlm2",
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    vocab_size: 92544,
    max_position_embeddings: 32768,
    rms_norm_eps: 1e-5,
    rope_theta: 1000000,
    rope_scaling: { type: "dynamic", factor: 2.0 },
    bias: false,
  };
  const c = readModelConfig(configIn(t, internlm));
  assert.equal(c.attentionBias, false);
  assert.equal(c.maxPositions, 32768);
  assert.equal(c.ropeInvFreq![1], Math.fround(1 / Math.pow(1000000, 2 / 128)));
  const { bias: _b, ...bare } = internlm;
  assert.equal(readModelConfig(configIn(t, bare)).attentionBias, true);
});

test("OLMo (1): LayerNorms without parameters (eps 1e-5 whatever the file says); clip_qkv refused", (t) => {
  const olmo = {
    architectures: ["OlmoForCausalLM"],
    model_type: "olmo",
    hidden_size: 2048,
    intermediate_size: 8192,
    num_hidden_layers: 16,
    num_attention_heads: 16,
    vocab_size: 50304,
    max_position_embeddings: 2048,
    rope_theta: 10000,
    clip_qkv: null,
    tie_word_embeddings: true,
    eos_token_id: 50279,
  };
  const c = readModelConfig(configIn(t, olmo));
  assert.equal(c.norm, "layer");
  assert.equal(c.normEps, 1e-5);
  assert.equal(c.tiedEmbeddings, true);
  badConfigs(t, [[{ ...olmo, clip_qkv: 8 }, /"clip_qkv": 8 \(q, k, v clamped\) is not supported/]]);
});

test("MiniCPM: scale_emb, scale_depth / √layers and hidden / dim_model_base fold as Granite's multipliers", (t) => {
  const minicpm = {
    architectures: ["MiniCPMForCausalLM"],
    model_type: "minicpm",
    hidden_size: 2304,
    intermediate_size: 5760,
    num_hidden_layers: 40,
    num_attention_heads: 36,
    num_key_value_heads: 36,
    vocab_size: 122753,
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    scale_emb: 12,
    scale_depth: 1.4,
    dim_model_base: 256,
    tie_word_embeddings: true,
  };
  const c = readModelConfig(configIn(t, minicpm));
  const residual = 1.4 / Math.sqrt(40);
  assert.ok(Math.abs(c.embedScale! - 12 / residual) < 1e-9);
  assert.ok(Math.abs(c.normEps - 1e-5 / (residual * residual)) < 1e-15);
  assert.ok(Math.abs(c.finalNormScale! - 256 / 2304) < 1e-12);
  assert.equal(c.attentionScale, undefined); // 1/√head_dim, unlike Granite
  badConfigs(t, [[{ ...minicpm, scale_depth: 0 }, /"scale_depth" must be a positive number/]]);
});

test("interleavedRopeOrder moves adjacent rotary pairs to rotate-half order per head, leaving dims past rotDim", () => {
  // 2 tokens × 2 heads of 6 dims, 4 of them rotated: pairs (0,1), (2,3) → places (0,2), (1,3).
  const idx = interleavedRopeOrder(2, 2, 6, 4);
  const head = [0, 2, 1, 3, 4, 5];
  assert.deepEqual(
    Array.from(idx),
    [0, 1, 2, 3].flatMap((r) => head.map((d) => r * 6 + d)),
  );
});

test("Gemma (1): √hidden embeddings and GELU as Gemma 2/3, but no windows, caps or q/k norms, 1/√head_dim", (t) => {
  const gemma2b = {
    architectures: ["GemmaForCausalLM"],
    model_type: "gemma",
    hidden_size: 2048,
    intermediate_size: 16384,
    num_hidden_layers: 18,
    num_attention_heads: 8,
    num_key_value_heads: 1,
    head_dim: 256,
    vocab_size: 256000,
    max_position_embeddings: 8192,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    hidden_act: "gelu",
    hidden_activation: null,
    bos_token_id: 2,
    eos_token_id: 1,
  };
  const c = readModelConfig(configIn(t, gemma2b));
  assert.equal(c.architecture, "GemmaForCausalLM");
  assert.equal(c.activation, "gelu_tanh"); // hidden_activation unset: transformers' gelu_pytorch_tanh
  assert.equal(c.embedScale, Math.sqrt(2048));
  assert.equal(c.attentionScale, 1 / 16);
  assert.equal(c.attentionWindows, undefined);
  assert.equal(c.attentionSoftcap, undefined);
  assert.equal(c.finalSoftcap, undefined);
  assert.equal(c.localRopeInvFreq, undefined);
  assert.equal(c.tiedEmbeddings, true);
});

/** Mixtral-8x7B-v0.1's config.json, less fields the engine does not read. */
const MIXTRAL = {
  architectures: ["MixtralForCausalLM"],
  model_type: "mixtral",
  hidden_size: 4096,
  intermediate_size: 14336,
  num_hidden_layers: 32,
  num_attention_heads: 32,
  num_key_value_heads: 8,
  num_local_experts: 8,
  num_experts_per_tok: 2,
  vocab_size: 32000,
  max_position_embeddings: 32768,
  rms_norm_eps: 1e-5,
  rope_theta: 1e6,
  sliding_window: null,
  tie_word_embeddings: false,
};

test("Mixtral: 8 experts of intermediate_size, 2 per token, renormalized, every layer a mixture", (t) => {
  const c = readModelConfig(configIn(t, MIXTRAL));
  assert.deepEqual(
    { ...c.moe!, layers: c.moe!.layers.length },
    { experts: 8, topK: 2, normalize: true, expertIntermediate: 14336, denseIntermediate: 14336, layers: 32 },
  );
  assert.ok(c.moe!.layers.every(Boolean));
  assert.equal(c.intermediate, 14336);
  assert.equal(c.attentionWindows, undefined);
  badConfigs(t, [
    [{ ...MIXTRAL, num_experts_per_tok: 9 }, /"num_experts_per_tok" \(9\) exceeds the 8 experts/],
    [{ ...MIXTRAL, num_local_experts: 0 }, /"num_local_experts" must be a positive integer/],
  ]);
});

test("Qwen2-MoE: moe_intermediate_size experts, a shared expert, dense mlp_only_layers, norm_topk_prob off", (t) => {
  // Qwen1.5-MoE-A2.7B's fields, with layers 0 and 5 made dense and a sparse step of 1.
  const qwen2moe = {
    architectures: ["Qwen2MoeForCausalLM"],
    model_type: "qwen2_moe",
    hidden_size: 2048,
    intermediate_size: 5632,
    moe_intermediate_size: 1408,
    shared_expert_intermediate_size: 5632,
    num_experts: 60,
    num_experts_per_tok: 4,
    decoder_sparse_step: 1,
    mlp_only_layers: [0, 5],
    num_hidden_layers: 24,
    num_attention_heads: 16,
    num_key_value_heads: 16,
    vocab_size: 151936,
    max_position_embeddings: 8192,
    rope_theta: 1e6,
    use_sliding_window: false,
    tie_word_embeddings: false,
  };
  const c = readModelConfig(configIn(t, qwen2moe));
  const m = c.moe!;
  assert.equal(m.experts, 60);
  assert.equal(m.topK, 4);
  assert.equal(m.normalize, false);
  assert.equal(m.expertIntermediate, 1408);
  assert.equal(m.sharedIntermediate, 5632);
  assert.equal(m.denseIntermediate, 5632);
  assert.deepEqual(
    m.layers.map((x, i) => (x ? -1 : i)).filter((i) => i >= 0),
    [0, 5],
  );
  assert.equal(c.intermediate, 5632, "the widest FFN: the shared expert's and the dense layers'");
  // decoder_sparse_step 2: layers 1, 3, 5 … are mixtures (transformers: (i + 1) % step == 0).
  const stepped = readModelConfig(configIn(t, { ...qwen2moe, mlp_only_layers: [], decoder_sparse_step: 2 }));
  assert.deepEqual(stepped.moe!.layers.slice(0, 4), [false, true, false, true]);
  badConfigs(t, [
    [{ ...qwen2moe, mlp_only_layers: [24] }, /"mlp_only_layers" must list layer numbers below 24/],
    [{ ...qwen2moe, moe_intermediate_size: undefined }, /"moe_intermediate_size" is missing/],
  ]);
});

test("Qwen3-MoE and OLMoE: norm_topk_prob as set; OLMoE's clip_qkv is refused", (t) => {
  const qwen3moe = {
    architectures: ["Qwen3MoeForCausalLM"],
    model_type: "qwen3_moe",
    hidden_size: 2048,
    intermediate_size: 6144,
    moe_intermediate_size: 768,
    num_experts: 128,
    num_experts_per_tok: 8,
    norm_topk_prob: true,
    num_hidden_layers: 48,
    num_attention_heads: 32,
    num_key_value_heads: 4,
    head_dim: 128,
    vocab_size: 151936,
    max_position_embeddings: 40960,
    rope_theta: 1e6,
    tie_word_embeddings: false,
  };
  const q = readModelConfig(configIn(t, qwen3moe));
  assert.equal(q.moe!.normalize, true);
  assert.equal(q.intermediate, 768, "no dense layer: the experts' width");
  assert.equal(q.moe!.sharedIntermediate, undefined);
  const olmoe = {
    architectures: ["OlmoeForCausalLM"],
    model_type: "olmoe",
    hidden_size: 2048,
    intermediate_size: 1024,
    num_experts: 64,
    num_experts_per_tok: 8,
    num_hidden_layers: 16,
    num_attention_heads: 16,
    vocab_size: 50304,
    max_position_embeddings: 4096,
    clip_qkv: null,
    tie_word_embeddings: false,
  };
  const o = readModelConfig(configIn(t, olmoe));
  assert.equal(o.moe!.normalize, false);
  assert.equal(o.normEps, 1e-5, "OlmoeConfig's rms_norm_eps default");
  assert.equal(o.moe!.expertIntermediate, 1024);
  badConfigs(t, [[{ ...olmoe, clip_qkv: 8 }, /"clip_qkv": 8 \(q, k, v clamped\) is not supported/]]);
});

test("GraniteMoE: stacked experts, Granite's multipliers folded, a shared MLP when shared_intermediate_size is set", (t) => {
  // granite-3.0-1b-a400m-base's fields.
  const granitemoe = {
    architectures: ["GraniteMoeForCausalLM"],
    model_type: "granitemoe",
    hidden_size: 1024,
    intermediate_size: 512,
    num_local_experts: 32,
    num_experts_per_tok: 8,
    num_hidden_layers: 24,
    num_attention_heads: 16,
    num_key_value_heads: 8,
    vocab_size: 49155,
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-6,
    rope_theta: 10000,
    embedding_multiplier: 12,
    residual_multiplier: 0.22,
    attention_multiplier: 0.015625,
    logits_scaling: 6,
    tie_word_embeddings: true,
  };
  const c = readModelConfig(configIn(t, granitemoe));
  assert.deepEqual([c.moe!.experts, c.moe!.topK, c.moe!.expertIntermediate], [32, 8, 512]);
  assert.equal(c.moe!.normalize, true, "a softmax over the chosen experts' logits");
  assert.equal(c.moe!.sharedIntermediate, undefined);
  assert.ok(Math.abs(c.embedScale! - 12 / 0.22) < 1e-9, "Granite's multipliers folded as for GraniteForCausalLM");
  assert.equal(c.attentionScale, 0.015625);
  const shared = readModelConfig(
    configIn(t, { ...granitemoe, architectures: ["GraniteMoeSharedForCausalLM"], shared_intermediate_size: 1024 }),
  );
  assert.equal(shared.moe!.sharedIntermediate, 1024);
  assert.equal(shared.intermediate, 1024, "the widest FFN: the shared MLP");
  const noShared = readModelConfig(configIn(t, { ...granitemoe, shared_intermediate_size: 0 }));
  assert.equal(noShared.moe!.sharedIntermediate, undefined, "0 means none, as GraniteMoeShared builds it");
});

test("ERNIE 4.5 MoE: moe_k of moe_num_experts from moe_layer_start_index on, shared experts as one FFN", (t) => {
  // ERNIE-4.5-21B-A3B-PT's fields.
  const ernie = {
    architectures: ["Ernie4_5_MoeForCausalLM"],
    model_type: "ernie4_5_moe",
    hidden_size: 2560,
    intermediate_size: 12288,
    moe_intermediate_size: 1536,
    moe_num_experts: 64,
    moe_k: 6,
    moe_num_shared_experts: 2,
    moe_layer_start_index: 1,
    moe_layer_end_index: 27,
    moe_layer_interval: 1,
    num_hidden_layers: 28,
    num_attention_heads: 20,
    num_key_value_heads: 4,
    head_dim: 128,
    vocab_size: 103424,
    max_position_embeddings: 131072,
    rope_theta: 500000,
    use_bias: false,
    tie_word_embeddings: true,
  };
  const c = readModelConfig(configIn(t, ernie));
  const m = c.moe!;
  assert.deepEqual([m.experts, m.topK, m.expertIntermediate, m.sharedIntermediate], [64, 6, 1536, 3072]);
  assert.equal(m.normalize, true);
  assert.deepEqual(m.layers.slice(0, 3), [false, true, true], "layer 0 dense");
  assert.equal(m.denseIntermediate, 12288);
  assert.equal(c.intermediate, 12288);
  assert.equal(c.ropeInterleaved, true, "ERNIE's adjacent rotary pairs");
  const every2 = readModelConfig(configIn(t, { ...ernie, moe_layer_interval: 2, moe_layer_end_index: 5 }));
  assert.deepEqual(every2.moe!.layers.slice(0, 8), [false, true, false, true, false, true, false, false]);
  const noShared = readModelConfig(configIn(t, { ...ernie, moe_num_shared_experts: 0 }));
  assert.equal(noShared.moe!.sharedIntermediate, undefined);
  badConfigs(t, [
    [{ ...ernie, moe_k: 65 }, /"moe_k" \(65\) exceeds the 64 experts/],
    [{ ...ernie, moe_layer_start_index: 28 }, /"moe_layer_start_index" must be a layer number below 28/],
  ]);
});

test("Phi-3.5-MoE: sparsemixer routing of 2 experts, LayerNorms, attention biases, longrope times short_mscale", (t) => {
  // Phi-3.5-MoE-instruct's fields (the factor lists shortened to its 64 rotary pairs' first values).
  const factors = Array.from({ length: 64 }, (_, i) => 1 + i / 64);
  const phimoe = {
    architectures: ["PhimoeForCausalLM"],
    model_type: "phimoe",
    hidden_size: 4096,
    intermediate_size: 6400,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    num_local_experts: 16,
    num_experts_per_tok: 2,
    router_jitter_noise: 0.01,
    attention_bias: true,
    lm_head_bias: true,
    rms_norm_eps: 1e-5,
    vocab_size: 32064,
    max_position_embeddings: 131072,
    original_max_position_embeddings: 4096,
    rope_theta: 10000,
    rope_scaling: {
      type: "longrope",
      short_factor: factors,
      long_factor: factors,
      short_mscale: 1.243163121016122,
      long_mscale: 1.243163121016122,
      original_max_position_embeddings: 4096,
    },
    tie_word_embeddings: false,
  };
  const c = readModelConfig(configIn(t, phimoe));
  assert.equal(c.norm, "layer");
  assert.equal(c.attentionBias, true);
  assert.deepEqual([c.moe!.experts, c.moe!.topK, c.moe!.expertIntermediate], [16, 2, 6400]);
  assert.deepEqual(c.moe!.sparsemixer, { jitterEps: 0.01 });
  assert.ok(Math.abs(c.ropeFactor! - 1.243163121016122) < 1e-12, "short_mscale, not the longrope formula");
  assert.equal(c.maxPositions, 4096, "the short factors' range");
  badConfigs(t, [[{ ...phimoe, num_experts_per_tok: 3 }, /"num_experts_per_tok" must be 2/]]);
});
