// The tokenizer as llama.cpp's GGUF metadata (tokenizer.ggml.*), from tokenizer.json and
// tokenizer_config.json, the way llama.cpp's convert_hf_to_gguf.py writes a byte-level BPE
// ("gpt2") vocabulary: one string per id (ids the tokenizer does not use become "[PAD<id>]",
// type UNUSED), the merges as "left right", token types (added special tokens CONTROL, other
// added tokens USER_DEFINED), the special-token ids, add_bos_token, and the chat template.
import { ModelError } from "../loader/errors.js";
import { isObject, readJsonFile } from "../loader/json.js";
import type { LoadedModel } from "../loader/model-folder.js";
import { kv, type GgufValue } from "./writer.js";

/** llama.cpp `enum llama_token_type` (tokenizer.ggml.token_type values). */
export enum TokenType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

/** The pre-tokenizer regexes llama.cpp knows by name (tokenizer.ggml.pre), as tokenizer.json writes them. */
const PRE_TOKENIZERS: Record<string, string> = {
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+":
    "llama-bpe",
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+":
    "qwen2",
};

export interface GgufVocab {
  tokens: string[];
  tokenTypes: TokenType[];
  merges: string[];
  pre: string;
  bosId: number | undefined;
  eosId: number | undefined;
  padId: number | undefined;
  addBos: boolean;
  addEos: boolean;
  chatTemplate: string | undefined;
}

/** The model's tokenizer in llama.cpp's terms, one entry per row of the embedding. */
export function ggufVocab(model: LoadedModel): GgufVocab {
  const file = model.tokenizer.file;
  const json = readJsonFile(file);
  const bad = (detail: string) => new ModelError("BAD_TOKENIZER", file, detail);
  if (!isObject(json) || !isObject(json.model)) throw bad("not a Hugging Face tokenizer.json (no model section)");
  const m = json.model;
  if (m.type !== "BPE" || !isByteLevel(json)) {
    throw bad(
      `GGUF export supports byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2 style); this one is ${String(m.type)}` +
        (m.type === "BPE" ? " without a ByteLevel pre-tokenizer (SentencePiece-style)" : ""),
    );
  }
  if (!isObject(m.vocab)) throw bad("model.vocab is not an object");
  const n = model.config.vocab;
  const tokens: (string | undefined)[] = new Array(n);
  const types: TokenType[] = new Array(n).fill(TokenType.NORMAL);
  const place = (text: string, id: unknown, type: TokenType) => {
    if (!Number.isSafeInteger(id) || (id as number) < 0)
      throw bad(`token ${JSON.stringify(text)} has id ${String(id)}`);
    if ((id as number) >= n) {
      throw bad(`token ${JSON.stringify(text)} has id ${String(id)}, outside the model's vocabulary of ${n}`);
    }
    tokens[id as number] = text;
    types[id as number] = type;
  };
  for (const [text, id] of Object.entries(m.vocab)) place(text, id, TokenType.NORMAL);
  for (const t of Array.isArray(json.added_tokens) ? json.added_tokens : []) {
    if (!isObject(t) || typeof t.content !== "string") throw bad("added_tokens entry without content");
    place(t.content, t.id, t.special === true ? TokenType.CONTROL : TokenType.USER_DEFINED);
  }
  for (let i = 0; i < n; i++) {
    if (tokens[i] === undefined) {
      tokens[i] = `[PAD${i}]`;
      types[i] = TokenType.UNUSED;
    }
  }

  const rawMerges = Array.isArray(m.merges) ? m.merges : [];
  const merges = rawMerges.map((x, i) => {
    if (typeof x === "string") return x;
    if (Array.isArray(x) && x.length === 2 && typeof x[0] === "string" && typeof x[1] === "string")
      return `${x[0]} ${x[1]}`;
    throw bad(`merge ${i} is neither "a b" nor ["a", "b"]`);
  });

  const tk = model.tokenizer;
  const cfg = tk.config;
  const id = (token: unknown): number | undefined => {
    const text = typeof token === "string" ? token : isObject(token) ? token.content : undefined;
    return typeof text === "string" ? tk.tokenId(text) : undefined;
  };
  const bosId = tk.bosId ?? model.config.bosTokenId ?? undefined;
  const eosId = id(cfg.eos_token) ?? model.config.eosTokenIds[0];
  return {
    tokens: tokens as string[],
    tokenTypes: types,
    merges,
    pre: preTokenizerName(json.pre_tokenizer),
    bosId,
    eosId,
    padId: id(cfg.pad_token),
    addBos: tk.addsSpecialTokens && bosId !== undefined,
    addEos: cfg.add_eos_token === true,
    chatTemplate: tk.templateSource,
  };
}

/** The tokenizer.ggml.* keys for a vocabulary. */
export function vocabMetadata(v: GgufVocab): [string, GgufValue][] {
  const out: [string, GgufValue][] = [
    ["tokenizer.ggml.model", kv.str("gpt2")],
    ["tokenizer.ggml.pre", kv.str(v.pre)],
    ["tokenizer.ggml.tokens", kv.strings(v.tokens)],
    ["tokenizer.ggml.token_type", kv.i32s(v.tokenTypes)],
    ["tokenizer.ggml.merges", kv.strings(v.merges)],
  ];
  if (v.bosId !== undefined) out.push(["tokenizer.ggml.bos_token_id", kv.u32(v.bosId)]);
  if (v.eosId !== undefined) out.push(["tokenizer.ggml.eos_token_id", kv.u32(v.eosId)]);
  if (v.padId !== undefined) out.push(["tokenizer.ggml.padding_token_id", kv.u32(v.padId)]);
  out.push(["tokenizer.ggml.add_bos_token", kv.bool(v.addBos)]);
  out.push(["tokenizer.ggml.add_eos_token", kv.bool(v.addEos)]);
  if (v.chatTemplate !== undefined) out.push(["tokenizer.chat_template", kv.str(v.chatTemplate)]);
  return out;
}

function preTokenizers(p: unknown): Record<string, unknown>[] {
  if (!isObject(p)) return [];
  if (p.type === "Sequence" && Array.isArray(p.pretokenizers)) return p.pretokenizers.flatMap(preTokenizers);
  return [p];
}

function isByteLevel(json: Record<string, unknown>): boolean {
  return (
    preTokenizers(json.pre_tokenizer).some((p) => p.type === "ByteLevel") ||
    (isObject(json.decoder) && json.decoder.type === "ByteLevel")
  );
}

/**
 * llama.cpp's name for the pre-tokenizer (how text is split before BPE): "llama-bpe" and "qwen2"
 * by their split regex, "gpt-2" for a plain ByteLevel with GPT-2's regex, else "default". Only
 * text tokenization inside llama.cpp depends on it; the peer feeds token ids.
 */
function preTokenizerName(p: unknown): string {
  const parts = preTokenizers(p);
  for (const s of parts) {
    if (s.type === "Split" && isObject(s.pattern) && typeof s.pattern.Regex === "string") {
      const name = PRE_TOKENIZERS[s.pattern.Regex];
      if (name) return name;
    }
  }
  if (parts.length === 1 && parts[0].type === "ByteLevel" && parts[0].use_regex !== false) return "gpt-2";
  return "default";
}
