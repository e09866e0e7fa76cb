// tokenizer.json sections as transformers writes them, for the tokenizers this project makes
// (make-model's, GGUF imports', the conversions of a folder's slow tokenizer files).
import { ModelError } from "./errors.js";
import { isObject } from "./json.js";

/** A whole tokenizer.json from its sections (null where a tokenizer has none), added tokens by id. */
export function tokenizerJson(o: {
  addedTokens: Iterable<Record<string, unknown>>;
  normalizer: unknown;
  preTokenizer: unknown;
  postProcessor: unknown;
  decoder: unknown;
  model: Record<string, unknown>;
}): Record<string, unknown> {
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [...o.addedTokens].sort((a, b) => Number(a.id) - Number(b.id)),
    normalizer: o.normalizer,
    pre_tokenizer: o.preTokenizer,
    post_processor: o.postProcessor,
    decoder: o.decoder,
    model: o.model,
  };
}

/** tokenizer.json's BPE model section: merges as [left, right] pairs. */
export function bpeModelJson(o: {
  vocab: Record<string, number>;
  merges: readonly (readonly [string, string] | string[])[];
  unkToken?: string | null;
  fuseUnk?: boolean;
  byteFallback?: boolean;
  ignoreMerges?: boolean;
}): Record<string, unknown> {
  return {
    type: "BPE",
    dropout: null,
    unk_token: o.unkToken ?? null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: o.fuseUnk ?? false,
    byte_fallback: o.byteFallback ?? false,
    ignore_merges: o.ignoreMerges ?? false,
    vocab: o.vocab,
    merges: o.merges,
  };
}

/** An added_tokens entry of tokenizer.json; special ones match the raw text, others the normalized text. */
export function addedToken(id: number, content: string, special: boolean): Record<string, unknown> {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: !special, special };
}

/** A post-processor that puts BOS before each sequence (transformers' Llama converters). */
export function bosPostProcessor(bos: string, bosId: number): Record<string, unknown> {
  return {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: "A", type_id: 0 } }],
    pair: [
      { SpecialToken: { id: bos, type_id: 0 } },
      { Sequence: { id: "A", type_id: 0 } },
      { SpecialToken: { id: bos, type_id: 1 } },
      { Sequence: { id: "B", type_id: 1 } },
    ],
    special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
  };
}

/** The split regexes of Llama 3's and Qwen2's tokenizer.json (llama.cpp rewrites them without `(?i:`). */
export const LLAMA3_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
export const QWEN2_SPLIT =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** Bytes to GPT-2's symbols, after splitting the text with GPT-2's regex (useRegex) or not. */
export const byteLevel = (useRegex: boolean, addPrefixSpace = false) => ({
  type: "ByteLevel",
  add_prefix_space: addPrefixSpace,
  trim_offsets: true,
  use_regex: useRegex,
});

/** GPT-2's symbols back to bytes: the decoder of every byte-level BPE tokenizer. */
export const byteLevelDecoder = { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true };

/** The special tokens a tokenizer config names (tokenizer_config.json, special_tokens_map.json). */
export const SPECIAL_TOKEN_KEYS = ["bos_token", "eos_token", "unk_token", "pad_token"] as const;

/** Text split by each regex in turn (matches and the text between them as pieces), then bytes to symbols. */
export const split = (...regexes: string[]) => ({
  type: "Sequence",
  pretokenizers: [
    ...regexes.map((r) => ({ type: "Split", pattern: { Regex: r }, behavior: "Isolated", invert: false })),
    byteLevel(false),
  ],
});

/** A special token as tokenizer configs write it: a string, or an AddedToken object {content: ...}. */
export function tokenText(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (isObject(v) && typeof v.content === "string") return v.content;
  return undefined;
}

/**
 * tokenizer_config.json's added_tokens_decoder ({"id": {content, special, lstrip, ...}}, what
 * transformers saves for a slow tokenizer's added tokens) as tokenizer.json added_tokens entries.
 */
export function configAddedTokens(config: Record<string, unknown>, file: string): Record<string, unknown>[] {
  const decoder = isObject(config.added_tokens_decoder) ? config.added_tokens_decoder : {};
  return Object.entries(decoder).map(([key, t]) => {
    const id = Number(key);
    if (!Number.isInteger(id) || id < 0 || !isObject(t) || typeof t.content !== "string")
      throw new ModelError("BAD_TOKENIZER", file, `added_tokens_decoder["${key}"] is not {content, ...} under an id`);
    const flags = ["single_word", "lstrip", "rstrip", "normalized"].filter((k) => typeof t[k] === "boolean");
    return { ...addedToken(id, t.content, t.special === true), ...Object.fromEntries(flags.map((k) => [k, t[k]])) };
  });
}
