// SentencePiece vocabularies as tokenizer.json, the way transformers' converters write them
// (LlamaConverter: merges rebuilt from the pieces' scores, "▁" for spaces, bytes of unknown characters
// as <0xXX> pieces). Two callers: a model folder that ships only the slow tokenizer's tokenizer.model
// (a protobuf ModelProto, read here with protobufjs; older Llama-family repos, InternLM2), and GGUF
// imports of "llama" vocabularies, whose pieces, scores and types llama.cpp copied from such a file.
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import protobuf from "protobufjs";
import { ModelError } from "./errors.js";
import { isObject } from "./json.js";
import { addedToken, bosPostProcessor, bpeModelJson, configAddedTokens, tokenizerJson } from "./tokenizer-json.js";

/** sentencepiece's ModelProto.SentencePiece.Type (llama.cpp's token types copy these numbers). */
export enum PieceType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

/** What a SentencePiece BPE vocabulary needs to become tokenizer.json's model, normalizer and decoder. */
export interface SentencePieceVocab {
  pieces: string[];
  scores: number[];
  types: number[];
  unkId: number | undefined;
  /** A "▁" before the text (sentencepiece's add_dummy_prefix, llama.cpp's add_space_prefix). */
  addDummyPrefix: boolean;
  /** Leading and trailing whitespace dropped and runs of spaces made one (sentencepiece's default). */
  removeExtraWhitespaces: boolean;
  /**
   * NFKC normalization first (the nfkc and nmt_nfkc rules). tokenizer.json carries the rule's charsmap;
   * the JavaScript tokenizer's Precompiled normalizer applies NFKC and sentencepiece's whitespace rules.
   */
  precompiledCharsmap?: Uint8Array;
  /** Characters outside the vocabulary as their UTF-8 bytes' <0xXX> pieces, not <unk>. */
  byteFallback: boolean;
  /**
   * transformers' `legacy: false` (a tokenizer_config.json key): the dummy prefix only at the start of
   * the text, not again after each special token as sentencepiece (and the default, legacy) puts it.
   */
  prefixOnlyAtStart?: boolean;
}

/** tokenizer.json's parts for a SentencePiece BPE vocabulary. */
export interface SentencePieceJson {
  model: Record<string, unknown>;
  normalizer: unknown;
  preTokenizer: unknown;
  decoder: unknown;
}

export function sentencePieceJson(v: SentencePieceVocab): SentencePieceJson {
  const { pieces, scores, types } = v;
  const ids = new Map<string, number>();
  pieces.forEach((t, i) => {
    if (types[i] !== PieceType.UNUSED && !ids.has(t)) ids.set(t, i);
  });
  // transformers' SentencePieceExtractor: every way to split a piece into two pieces is a merge,
  // ranked by the whole piece's score (highest first), ties by the halves' ids. Splits fall between
  // code points (never inside a surrogate pair).
  const merges: { left: string; right: string; score: number; l: number; r: number }[] = [];
  pieces.forEach((piece, i) => {
    if (types[i] !== PieceType.NORMAL && types[i] !== PieceType.USER_DEFINED) return;
    for (let k = 1; k < piece.length; k++) {
      const c = piece.charCodeAt(k);
      if (c >= 0xdc00 && c <= 0xdfff) continue; // the second half of a surrogate pair
      const left = piece.slice(0, k);
      const l = ids.get(left);
      if (l === undefined) continue;
      const right = piece.slice(k);
      const r = ids.get(right);
      if (r !== undefined) merges.push({ left, right, score: scores[i], l, r });
    }
  });
  merges.sort((a, b) => b.score - a.score || a.l - b.l || a.r - b.r);
  // sentencepiece normalizes in this order: the character map, whitespace, the dummy prefix, then
  // spaces to "▁".
  const normalizers: unknown[] = [];
  if (v.precompiledCharsmap)
    normalizers.push({
      type: "Precompiled",
      precompiled_charsmap: Buffer.from(v.precompiledCharsmap).toString("base64"),
    });
  // Spaces only, and the prefix only before some text, as sentencepiece does: "   " gives no pieces.
  // (The anchors are lookarounds because a tokenizer.json regex's ^ and $ also match at line ends.)
  const [textStart, textEnd] = ["(?<![\\s\\S])", "(?![\\s\\S])"];
  if (v.removeExtraWhitespaces)
    normalizers.push(
      { type: "Replace", pattern: { Regex: `${textStart} +| +${textEnd}` }, content: "" },
      { type: "Replace", pattern: { Regex: " {2,}" }, content: " " },
    );
  const metaspace = v.addDummyPrefix && v.prefixOnlyAtStart === true;
  if (v.addDummyPrefix && !metaspace)
    normalizers.push(
      v.removeExtraWhitespaces
        ? { type: "Replace", pattern: { Regex: `${textStart}(?=[\\s\\S])` }, content: "▁" }
        : { type: "Prepend", prepend: "▁" },
    );
  normalizers.push({ type: "Replace", pattern: { String: " " }, content: "▁" });
  return {
    model: bpeModelJson({
      vocab: Object.fromEntries(ids),
      merges: merges.map((m) => [m.left, m.right]),
      unkToken: v.unkId === undefined ? null : pieces[v.unkId],
      fuseUnk: true,
      byteFallback: v.byteFallback,
    }),
    normalizer: normalizers.length === 1 ? normalizers[0] : { type: "Sequence", normalizers },
    // transformers' LlamaConverter for legacy: false: spaces become "▁" in the normalizer, the
    // pre-tokenizer adds the prefix to the text's first section only.
    preTokenizer: metaspace ? { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false } : null,
    decoder: {
      type: "Sequence",
      decoders: [
        { type: "Replace", pattern: { String: "▁" }, content: " " },
        ...(v.byteFallback ? [{ type: "ByteFallback" }] : []),
        { type: "Fuse" },
        ...(v.addDummyPrefix ? [{ type: "Strip", content: " ", start: 1, stop: 0 }] : []),
      ],
    },
  };
}

// The parts of sentencepiece_model.proto that say how a model tokenizes (field numbers as there).
const SCHEMA = `
syntax = "proto2";
message ModelProto {
  message SentencePiece {
    optional string piece = 1;
    optional float score = 2;
    optional int32 type = 3 [default = 1];
  }
  repeated SentencePiece pieces = 1;
  optional TrainerSpec trainer_spec = 2;
  optional NormalizerSpec normalizer_spec = 3;
}
message TrainerSpec {
  optional int32 model_type = 3 [default = 1];
  optional bool treat_whitespace_as_suffix = 24 [default = false];
  optional bool byte_fallback = 35 [default = false];
  optional int32 unk_id = 40 [default = 0];
  optional int32 bos_id = 41 [default = 1];
  optional int32 eos_id = 42 [default = 2];
  optional int32 pad_id = 43 [default = -1];
}
message NormalizerSpec {
  optional string name = 1;
  optional bytes precompiled_charsmap = 2;
  optional bool add_dummy_prefix = 3 [default = true];
  optional bool remove_extra_whitespaces = 4 [default = true];
  optional bool escape_whitespaces = 5 [default = true];
}
`;
let modelProto: protobuf.Type | undefined;

const MODEL_TYPES = ["", "Unigram", "BPE", "word", "char"];
/** Normalization rules tokenizer.json can express: none, or NFKC (the JavaScript tokenizer's Precompiled). */
const NORMALIZERS = new Set(["identity", "nfkc", "nmt_nfkc"]);

/** A tokenizer.model's vocabulary and special ids. */
export interface SentencePieceModel extends SentencePieceVocab {
  bosId: number | undefined;
  eosId: number | undefined;
  padId: number | undefined;
}

/** Reads a tokenizer.model file; a file that is not one, or a model this cannot convert, is BAD_TOKENIZER naming it. */
export function readSentencePieceModel(file: string): SentencePieceModel {
  const bad = (detail: string) => new ModelError("BAD_TOKENIZER", file, detail);
  let proto: Record<string, unknown>;
  try {
    modelProto ??= protobuf.parse(SCHEMA, { keepCase: true }).root.lookupType("ModelProto");
    proto = modelProto.toObject(modelProto.decode(readFileSync(file)), { defaults: true }) as Record<string, unknown>;
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code) throw new ModelError("NOT_FOUND", file, `cannot read it: ${err.message}`);
    throw bad(`not a SentencePiece model (protobuf: ${err.message})`);
  }
  const list = Array.isArray(proto.pieces) ? (proto.pieces as Record<string, unknown>[]) : [];
  const trainer = isObject(proto.trainer_spec) ? proto.trainer_spec : undefined;
  const norm = isObject(proto.normalizer_spec) ? proto.normalizer_spec : undefined;
  if (list.length === 0 || !trainer || !norm) throw bad("not a SentencePiece model (no pieces or no trainer spec)");
  const modelType = Number(trainer.model_type);
  if (modelType !== 2) {
    throw bad(
      `a SentencePiece ${MODEL_TYPES[modelType] ?? `type ${modelType}`} model; only BPE ones (Llama 2, Mistral, ` +
        `InternLM2, ...) convert to tokenizer.json here`,
    );
  }
  const name = String(norm.name || "identity");
  if (!NORMALIZERS.has(name))
    throw bad(`its normalization rule "${name}" is not supported (identity, nfkc, nmt_nfkc are)`);
  if (trainer.treat_whitespace_as_suffix === true)
    throw bad("its spaces end pieces (treat_whitespace_as_suffix), which is not supported");
  if (norm.escape_whitespaces === false)
    throw bad("it keeps spaces as spaces (escape_whitespaces false), which is not supported");
  const n = list.length;
  const id = (v: unknown) => {
    const x = Number(v);
    return Number.isInteger(x) && x >= 0 && x < n ? x : undefined;
  };
  const types = list.map((p) => Number(p.type));
  const oddType = types.findIndex((t) => !(t >= PieceType.NORMAL && t <= PieceType.BYTE));
  if (oddType >= 0) throw bad(`piece ${oddType} has type ${types[oddType]}, not one of sentencepiece's`);
  const charsmap = norm.precompiled_charsmap instanceof Uint8Array ? norm.precompiled_charsmap : new Uint8Array();
  return {
    pieces: list.map((p) => String(p.piece)),
    scores: list.map((p) => Number(p.score)),
    types,
    unkId: id(trainer.unk_id),
    bosId: id(trainer.bos_id),
    eosId: id(trainer.eos_id),
    padId: id(trainer.pad_id),
    addDummyPrefix: norm.add_dummy_prefix !== false,
    removeExtraWhitespaces: norm.remove_extra_whitespaces !== false,
    precompiledCharsmap: name === "identity" ? undefined : charsmap,
    byteFallback: trainer.byte_fallback === true,
  };
}

/**
 * tokenizer.json for a folder's tokenizer.model, as transformers converts a slow Llama-style tokenizer:
 * the pieces as a BPE model; control and unknown pieces special added tokens, user-defined ones plain
 * added tokens; tokenizer_config.json's added_tokens_decoder on top (tokens a slow tokenizer adds past
 * the model's pieces, such as chat markers); BOS added unless the config's add_bos_token is false
 * (LlamaTokenizer's default); with the config's legacy: false, no dummy prefix after special tokens.
 * The config comes back with the model's bos, eos and unk pieces where it names none.
 */
export function sentencePieceTokenizer(
  file: string,
  config: Record<string, unknown>,
): { json: Record<string, unknown>; config: Record<string, unknown> } {
  const m = readSentencePieceModel(file);
  const added = new Map<number, Record<string, unknown>>();
  m.types.forEach((type, id) => {
    if (type === PieceType.CONTROL || type === PieceType.UNKNOWN || type === PieceType.USER_DEFINED)
      added.set(id, addedToken(id, m.pieces[id], type !== PieceType.USER_DEFINED));
  });
  for (const t of configAddedTokens(config, join(dirname(file), "tokenizer_config.json"))) added.set(Number(t.id), t);
  const piece = (id: number | undefined) => (id === undefined ? undefined : m.pieces[id]);
  const bos = piece(m.bosId);
  const parts = sentencePieceJson({ ...m, prefixOnlyAtStart: config.legacy === false });
  const json = tokenizerJson({
    addedTokens: added.values(),
    normalizer: parts.normalizer,
    preTokenizer: parts.preTokenizer,
    postProcessor: bos !== undefined && config.add_bos_token !== false ? bosPostProcessor(bos, m.bosId!) : null,
    decoder: parts.decoder,
    model: parts.model,
  });
  const defaults = { bos_token: bos, eos_token: piece(m.eosId), unk_token: piece(m.unkId) };
  const filled = Object.fromEntries(Object.entries(defaults).filter(([k, v]) => v !== undefined && config[k] == null));
  return { json, config: { ...config, ...filled } };
}
