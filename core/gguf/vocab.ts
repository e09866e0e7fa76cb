// The tokenizer as llama.cpp's GGUF metadata (tokenizer.ggml.*), from tokenizer.json and
// tokenizer_config.json, the way llama.cpp's convert_hf_to_gguf.py writes a byte-level BPE
// ("gpt2") vocabulary: one string per id (ids the tokenizer does not use become "[PAD<id>]",
// type UNUSED), the merges as "left right", token types (added special tokens CONTROL, other
// added tokens USER_DEFINED), the special-token ids, add_bos_token, and the chat template.
import { ModelError } from "../loader/errors.js";
import { isObject } from "../loader/json.js";
import type { LoadedModel } from "../loader/model-folder.js";
import { PieceType as TokenType, sentencePieceJson } from "../loader/sentencepiece.js";
import {
  addedToken,
  bosPostProcessor,
  bpeModelJson,
  byteLevel,
  LLAMA3_SPLIT,
  QWEN2_SPLIT,
  split,
  tokenizerJson,
  byteLevelDecoder,
} from "../loader/tokenizer-json.js";
import { kv, type GgufValue } from "./writer.js";

/** llama.cpp `enum llama_token_type` (tokenizer.ggml.token_type values): sentencepiece's piece types. */
export { TokenType };

/** The pre-tokenizer regexes llama.cpp knows by name (tokenizer.ggml.pre), as tokenizer.json writes them. */
const PRE_TOKENIZERS: Record<string, string> = { [LLAMA3_SPLIT]: "llama-bpe", [QWEN2_SPLIT]: "qwen2" };

export interface GgufVocab {
  /** "gpt2": byte-level BPE with merges; "llama": SentencePiece BPE, ranked by scores. */
  model: "gpt2" | "llama";
  tokens: string[];
  tokenTypes: TokenType[];
  /** gpt2: the merges. */
  merges: string[];
  /** llama: one score per token (the higher, the earlier a pair merges into it). */
  scores: number[];
  /** llama: a "▁" before the text. */
  addSpacePrefix: boolean;
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
  const { file, json } = model.tokenizer;
  const bad = (detail: string) => new ModelError("BAD_TOKENIZER", file, detail);
  if (!isObject(json) || !isObject(json.model)) throw bad("not a Hugging Face tokenizer.json (no model section)");
  const m = json.model;
  const spm = m.type === "BPE" && !isByteLevel(json) && spaceSymbol(json);
  if (m.type !== "BPE" || (!isByteLevel(json) && !spm)) {
    throw bad(
      `GGUF export supports byte-level BPE tokenizers (GPT-2, Llama 3, Qwen2 style) and SentencePiece BPE ones ` +
        `(Llama 2, Mistral style: "▁" for spaces); this one is ${String(m.type)}` +
        (m.type === "BPE" ? " with neither a ByteLevel pre-tokenizer nor spaces as ▁" : ""),
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
  // SentencePiece vocabularies mark their byte pieces and the unknown piece, as llama.cpp's converter does.
  const pieceType = (text: string) =>
    !spm ? TokenType.NORMAL : /^<0x[0-9A-F]{2}>$/.test(text) ? TokenType.BYTE : TokenType.NORMAL;
  for (const [text, id] of Object.entries(m.vocab)) place(text, id, pieceType(text));
  for (const t of Array.isArray(json.added_tokens) ? json.added_tokens : []) {
    if (!isObject(t) || typeof t.content !== "string") throw bad("added_tokens entry without content");
    const special =
      t.special === true ? (spm && t.content === m.unk_token ? TokenType.UNKNOWN : TokenType.CONTROL) : null;
    place(t.content, t.id, special ?? TokenType.USER_DEFINED);
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
    model: spm ? "llama" : "gpt2",
    tokens: tokens as string[],
    tokenTypes: types,
    merges: spm ? [] : merges,
    scores: spm ? mergeScores(tokens as string[], merges) : [],
    addSpacePrefix: spm && spacePrefix(json),
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
  const out: [string, GgufValue][] =
    v.model === "llama"
      ? [
          ["tokenizer.ggml.model", kv.str("llama")],
          ["tokenizer.ggml.pre", kv.str("default")],
          ["tokenizer.ggml.tokens", kv.strings(v.tokens)],
          ["tokenizer.ggml.scores", kv.f32s(v.scores)],
          ["tokenizer.ggml.token_type", kv.i32s(v.tokenTypes)],
          ["tokenizer.ggml.add_space_prefix", kv.bool(v.addSpacePrefix)],
        ]
      : [
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

/** A tokenizer.json section's steps in order: a Sequence's members (under `key`), or the step itself. */
function steps(node: unknown, key: "pretokenizers" | "normalizers"): Record<string, unknown>[] {
  if (!isObject(node)) return [];
  if (node.type === "Sequence" && Array.isArray(node[key])) return node[key].flatMap((n) => steps(n, key));
  return [node];
}
const preTokenizers = (p: unknown) => steps(p, "pretokenizers");
const normalizers = (n: unknown) => steps(n, "normalizers");

/** SentencePiece style: spaces become "▁" (a Replace normalizer, or a Metaspace pre-tokenizer). */
function spaceSymbol(json: Record<string, unknown>): boolean {
  return (
    normalizers(json.normalizer).some(
      (n) => n.type === "Replace" && isObject(n.pattern) && n.pattern.String === " " && n.content === "\u2581",
    ) || preTokenizers(json.pre_tokenizer).some((p) => p.type === "Metaspace")
  );
}

/** Whether a "▁" goes before the text: a Prepend normalizer, or a Metaspace that prepends. */
function spacePrefix(json: Record<string, unknown>): boolean {
  return (
    normalizers(json.normalizer).some(
      (n) =>
        n.type === "Prepend" ||
        (n.type === "Replace" && n.content === "\u2581" && isObject(n.pattern) && typeof n.pattern.Regex === "string"),
    ) ||
    preTokenizers(json.pre_tokenizer).some(
      (p) => p.type === "Metaspace" && p.prepend_scheme !== "never" && p.add_prefix_space !== false,
    )
  );
}

/**
 * SentencePiece scores from a BPE's merges: llama.cpp merges the adjacent pair whose joined piece
 * scores highest, so a piece scores minus the rank of the first merge that makes it (the merges
 * being in priority order, as our import rebuilds them from scores); pieces no merge makes score
 * below all of those (their score is never read).
 */
function mergeScores(tokens: string[], merges: string[]): number[] {
  const rank = new Map<string, number>();
  merges.forEach((m, r) => {
    const piece = m.replace(" ", "");
    if (!rank.has(piece)) rank.set(piece, r);
  });
  return tokens.map((t) => -(rank.get(t) ?? merges.length));
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

// ---------------------------------------------------------------------------------------------
// The other way: a GGUF file's tokenizer.ggml.* as tokenizer.json and tokenizer_config.json
// ---------------------------------------------------------------------------------------------

/** tokenizer.json's split regexes for Mistral's Tekken and GPT-4o's o200k (llama.cpp rewrites them for its engine). */
const TEKKEN_SPLIT =
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const GPT4O_SPLIT =
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
/** DeepSeek V3's three splits (digits in threes, CJK runs, then words and punctuation). */
const DEEPSEEK3_SPLITS = [
  "\\p{N}{1,3}",
  "[一-龥぀-ゟ゠-ヿ]+",
  "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
];

/**
 * tokenizer.ggml.pre → the tokenizer.json pre-tokenizer that splits text as llama.cpp does for that
 * name (llama-vocab.cpp), whether a piece already in the vocabulary skips the merges, and whether
 * llama.cpp adds BOS when the file does not say.
 */
const PRE_TOKENIZER_JSON: { names: readonly string[]; pre: object; ignoreMerges: boolean; addBos?: boolean }[] = [
  {
    names: ["llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral", "lfm2"],
    pre: split(LLAMA3_SPLIT),
    ignoreMerges: true,
    addBos: true,
  },
  { names: ["dbrx", "smaug-bpe"], pre: split(LLAMA3_SPLIT), ignoreMerges: false },
  { names: ["qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"], pre: split(QWEN2_SPLIT), ignoreMerges: false },
  { names: ["tekken"], pre: split(TEKKEN_SPLIT), ignoreMerges: true, addBos: true },
  { names: ["gpt-4o", "llama4"], pre: split(GPT4O_SPLIT), ignoreMerges: false },
  { names: ["deepseek-v3"], pre: split(...DEEPSEEK3_SPLITS), ignoreMerges: false },
  { names: ["gpt-2", "phi-2", "mpt", "olmo", "jais", "mellum", "exaone4"], pre: byteLevel(true), ignoreMerges: false },
  {
    // Digits one by one, then GPT-2's split (StarCoder, SmolLM).
    names: ["starcoder", "refact", "smollm", "command-r", "codeshell", "exaone", "minerva"],
    pre: { type: "Sequence", pretokenizers: [{ type: "Digits", individual_digits: true }, byteLevel(true)] },
    ignoreMerges: false,
  },
];

/** Tokens llama.cpp ends generation on by their text, whatever the file's eos says (llama-vocab.cpp). */
const END_OF_TURN = new Set([
  "<|eot_id|>",
  "<|eom_id|>",
  "<|im_end|>",
  "<|end|>",
  "<end_of_turn>",
  "<|endoftext|>",
  "<|end_of_text|>",
  "<EOT>",
]);

/** The tokenizer files of a model folder made from a GGUF file's metadata. */
export interface ImportedTokenizer {
  /** tokenizer.json */
  tokenizer: Record<string, unknown>;
  /** tokenizer_config.json */
  config: Record<string, unknown>;
  bosId: number | undefined;
  /** End-of-generation ids: eos, and the end-of-turn / end-of-message ids where the file names them. */
  eosIds: number[];
}

/**
 * A GGUF vocabulary as the Hugging Face tokenizer it came from (what transformers' converters write):
 *   - "gpt2", byte-level BPE (Llama 3, Qwen, SmolLM, ...): the tokens of type NORMAL and BYTE as the BPE
 *     vocabulary, the merges, the pre-tokenizer named by tokenizer.ggml.pre;
 *   - "llama", SentencePiece BPE (Llama 2, Mistral 7B, TinyLlama, ...): every token in the vocabulary,
 *     merges rebuilt from the scores as transformers' SentencePieceExtractor does (each piece's splits
 *     into two pieces, ranked by the piece's score), spaces as "▁" with one prepended to each text
 *     (add_space_prefix) and bytes of unknown characters as <0xXX> tokens, as llama.cpp tokenizes.
 * In both, CONTROL (and UNKNOWN) tokens are special added tokens, USER_DEFINED ones non-special added
 * tokens, UNUSED ids (padding rows) are left out, and BOS is added by a TemplateProcessing
 * post-processor when add_bos_token is set (llama.cpp's default: SentencePiece and the Llama 3
 * pre-tokenizer). Other vocabularies are a ModelError (BAD_TOKENIZER) naming what the file has.
 */
export function tokenizerFromGguf(meta: Record<string, unknown>, file: string): ImportedTokenizer {
  const bad = (detail: string) => new ModelError("BAD_TOKENIZER", file, detail);
  const model = meta["tokenizer.ggml.model"];
  if (model !== "gpt2" && model !== "llama") {
    throw bad(
      `tokenizer.ggml.model is ${JSON.stringify(model)}; importing GGUF supports byte-level BPE ("gpt2": Llama 3, ` +
        `Qwen, SmolLM, ...) and SentencePiece BPE ("llama": Llama 2, Mistral 7B, ...)`,
    );
  }
  const tokens = meta["tokenizer.ggml.tokens"];
  if (!Array.isArray(tokens) || tokens.length === 0 || !tokens.every((t) => typeof t === "string")) {
    throw bad("tokenizer.ggml.tokens is not a list of strings");
  }
  const texts = tokens as string[];
  const n = texts.length;
  const rawTypes = meta["tokenizer.ggml.token_type"];
  const types: number[] = Array.isArray(rawTypes) ? rawTypes.map(Number) : new Array<number>(n).fill(TokenType.NORMAL);
  if (types.length !== n) throw bad(`tokenizer.ggml.token_type has ${types.length} entries for ${n} tokens`);
  const id = (key: string): number | undefined => {
    const v = meta[`tokenizer.ggml.${key}`];
    const x = typeof v === "bigint" ? Number(v) : v;
    return Number.isSafeInteger(x) && (x as number) >= 0 && (x as number) < n ? (x as number) : undefined;
  };
  const spm = model === "llama";
  const bpe = spm
    ? sentencePieceModel(meta, texts, types, id("unknown_token_id"), bad)
    : byteLevelModel(meta, texts, types, bad);

  const added: Record<string, unknown>[] = [];
  for (let i = 0; i < n; i++) {
    const type = types[i];
    if (type === TokenType.CONTROL || type === TokenType.USER_DEFINED || (spm && type === TokenType.UNKNOWN)) {
      added.push(addedToken(i, texts[i], type !== TokenType.USER_DEFINED));
    }
  }

  const bosId = id("bos_token_id");
  const eosId = id("eos_token_id");
  const addBosMeta = meta["tokenizer.ggml.add_bos_token"];
  const addBos = bosId !== undefined && (typeof addBosMeta === "boolean" ? addBosMeta : bpe.addsBosByDefault);
  const bos = bosId === undefined ? undefined : texts[bosId];
  const postProcessor = addBos ? bosPostProcessor(bos!, bosId!) : null;
  const tokenizer = tokenizerJson({
    addedTokens: added,
    normalizer: bpe.normalizer,
    preTokenizer: bpe.preTokenizer,
    postProcessor,
    decoder: bpe.decoder,
    model: bpe.model,
  });
  const text = (i: number | undefined) => (i === undefined ? undefined : texts[i]);
  const config: Record<string, unknown> = {
    tokenizer_class: spm ? "LlamaTokenizerFast" : "PreTrainedTokenizerFast",
    add_bos_token: addBos,
    add_eos_token: meta["tokenizer.ggml.add_eos_token"] === true,
    bos_token: text(bosId) ?? null,
    eos_token: text(eosId) ?? null,
    pad_token: text(id("padding_token_id")) ?? null,
    unk_token: text(id("unknown_token_id")) ?? null,
    model_max_length: 1e30,
    clean_up_tokenization_spaces: false,
    ...(spm && { legacy: true }),
  };
  const template = meta["tokenizer.chat_template"];
  if (typeof template === "string") config.chat_template = template;
  // End of generation as llama.cpp decides it: eos, eot, eom, and the usual end-of-turn tokens by text.
  const ends = texts.flatMap((t, i) => (END_OF_TURN.has(t) ? [i] : []));
  const eosIds = [...new Set([eosId, id("eot_token_id"), id("eom_token_id"), ...ends].filter((x) => x !== undefined))];
  return { tokenizer, config, bosId, eosIds };
}

/** The parts of a tokenizer.json that differ between vocabulary kinds. */
interface BpeParts {
  model: Record<string, unknown>;
  normalizer: unknown;
  preTokenizer: unknown;
  decoder: unknown;
  /** llama.cpp's add_bos when the file does not say. */
  addsBosByDefault: boolean;
}

function byteLevelModel(
  meta: Record<string, unknown>,
  texts: string[],
  types: number[],
  bad: (detail: string) => ModelError,
): BpeParts {
  const rawMerges = meta["tokenizer.ggml.merges"];
  if (!Array.isArray(rawMerges)) throw bad("tokenizer.ggml.merges is missing (a BPE vocabulary needs its merges)");
  const merges = rawMerges.map((m, i) => {
    const parts = typeof m === "string" ? m.split(" ") : [];
    if (parts.length !== 2 || parts[0] === "" || parts[1] === "") throw bad(`merge ${i} is not "left right"`);
    return parts;
  });
  const pre = typeof meta["tokenizer.ggml.pre"] === "string" ? (meta["tokenizer.ggml.pre"] as string) : "default";
  const split = PRE_TOKENIZER_JSON.find((p) => p.names.includes(pre));
  if (!split) {
    throw bad(
      `tokenizer.ggml.pre "${pre}" names a pre-tokenizer this import does not know ` +
        `(known: ${PRE_TOKENIZER_JSON.flatMap((p) => p.names).join(", ")})`,
    );
  }
  // A Map, not an object: tokens such as "constructor" or "__proto__" are keys like any other.
  const ids = new Map<string, number>();
  texts.forEach((t, i) => {
    const type = types[i];
    const added = type === TokenType.CONTROL || type === TokenType.USER_DEFINED;
    if (!added && type !== TokenType.UNUSED && !ids.has(t)) ids.set(t, i);
  });
  const vocab = Object.fromEntries(ids);
  return {
    model: bpeModelJson({ vocab, merges, ignoreMerges: split.ignoreMerges }),
    normalizer: null,
    preTokenizer: split.pre,
    decoder: byteLevelDecoder,
    addsBosByDefault: split.addBos === true,
  };
}

function sentencePieceModel(
  meta: Record<string, unknown>,
  texts: string[],
  types: number[],
  unkId: number | undefined,
  bad: (detail: string) => ModelError,
): BpeParts {
  const rawScores = meta["tokenizer.ggml.scores"];
  if (!Array.isArray(rawScores) || rawScores.length !== texts.length) {
    throw bad("tokenizer.ggml.scores is missing or not one score per token (SentencePiece ranks its pieces by them)");
  }
  // As llama.cpp tokenizes: its own normalization is only the space prefix.
  const parts = sentencePieceJson({
    pieces: texts,
    scores: rawScores.map(Number),
    types,
    unkId,
    addDummyPrefix: meta["tokenizer.ggml.add_space_prefix"] !== false,
    removeExtraWhitespaces: false,
    byteFallback: true,
  });
  return { ...parts, addsBosByDefault: true };
}
