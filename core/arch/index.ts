// The architecture registry: Hugging Face class name (config.json "architectures"[0]) → definition.
// To add an architecture: write core/arch/<name>.ts exporting an ArchDefinition (parse its
// config.json fields into ModelConfig, bind its tensor names into ModelWeights) and list it here.
import type { ArchDefinition } from "./config.js";
import { cohere, cohere2 } from "./cohere.js";
import { ernie, ernieMoe } from "./ernie.js";
import { gemma, gemma2, gemma3, gemma3Multimodal } from "./gemma.js";
import { glm, glm4 } from "./glm.js";
import { gpt2 } from "./gpt2.js";
import { gptj } from "./gptj.js";
import { gptneox } from "./gptneox.js";
import { internlm2 } from "./internlm2.js";
import {
  exaone4,
  granite,
  graniteMoe,
  graniteMoeShared,
  llama,
  minicpm,
  mistral,
  mixtral,
  olmo2,
  olmoe,
  qwen2,
  qwen2Moe,
  qwen3,
  qwen3Moe,
  smollm3,
} from "./llama.js";
import { olmo } from "./olmo.js";
import { opt } from "./opt.js";
import { phi } from "./phi.js";
import { phi3 } from "./phi3.js";
import { phimoe } from "./phimoe.js";
import { stablelm } from "./stablelm.js";
import { starcoder2 } from "./starcoder2.js";

export const ARCHITECTURES: Readonly<Record<string, ArchDefinition>> = {
  LlamaForCausalLM: llama,
  MistralForCausalLM: mistral,
  Qwen2ForCausalLM: qwen2,
  Qwen3ForCausalLM: qwen3,
  MixtralForCausalLM: mixtral,
  Qwen2MoeForCausalLM: qwen2Moe,
  Qwen3MoeForCausalLM: qwen3Moe,
  OlmoeForCausalLM: olmoe,
  SmolLM3ForCausalLM: smollm3,
  GraniteForCausalLM: granite,
  GraniteMoeForCausalLM: graniteMoe,
  GraniteMoeSharedForCausalLM: graniteMoeShared,
  MiniCPMForCausalLM: minicpm,
  OlmoForCausalLM: olmo,
  Olmo2ForCausalLM: olmo2,
  Exaone4ForCausalLM: exaone4,
  InternLM2ForCausalLM: internlm2,
  StableLmForCausalLM: stablelm,
  Starcoder2ForCausalLM: starcoder2,
  CohereForCausalLM: cohere,
  Cohere2ForCausalLM: cohere2,
  Ernie4_5ForCausalLM: ernie,
  Ernie4_5_MoeForCausalLM: ernieMoe,
  GlmForCausalLM: glm,
  Glm4ForCausalLM: glm4,
  PhiForCausalLM: phi,
  Phi3ForCausalLM: phi3,
  PhimoeForCausalLM: phimoe,
  GemmaForCausalLM: gemma,
  Gemma2ForCausalLM: gemma2,
  Gemma3ForCausalLM: gemma3,
  Gemma3ForConditionalGeneration: gemma3Multimodal,
  GPT2LMHeadModel: gpt2,
  GPTNeoXForCausalLM: gptneox,
  GPTJForCausalLM: gptj,
  OPTForCausalLM: opt,
};

export type { ArchDefinition, ModelConfig, ModelWeights, LayerWeights, Linear, Norm } from "./config.js";
