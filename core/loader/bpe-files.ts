// A slow byte-level BPE tokenizer's files, vocab.json + merges.txt (GPT-2's format: OPT, CodeGen, and
// older GPT-2 / Qwen2 repos), as tokenizer.json, the way transformers' GPT2Converter and
// Qwen2Converter build the fast tokenizer from them: the vocabulary and merges as a BPE model, text
// split by the class's pre-tokenizer, tokenizer_config.json's added tokens, and its special tokens
// (bos, eos, unk, pad) as special added tokens.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ModelError } from "./errors.js";
import { isObject, readJsonFile } from "./json.js";
import {
  addedToken,
  bosPostProcessor,
  bpeModelJson,
  byteLevel,
  byteLevelDecoder,
  configAddedTokens,
  QWEN2_SPLIT,
  split,
  SPECIAL_TOKEN_KEYS,
  tokenizerJson,
  tokenText,
} from "./tokenizer-json.js";

/** How each slow byte-level BPE class splits and normalizes text before BPE. */
function classParts(cls: string, addPrefixSpace: boolean): { normalizer: unknown; preTokenizer: unknown } | undefined {
  switch (cls) {
    case "GPT2Tokenizer":
    case "GPT2TokenizerFast":
    case "CodeGenTokenizer":
    case "CodeGenTokenizerFast":
      return { normalizer: null, preTokenizer: byteLevel(true, addPrefixSpace) };
    case "Qwen2Tokenizer":
    case "Qwen2TokenizerFast":
      return { normalizer: { type: "NFC" }, preTokenizer: split(QWEN2_SPLIT) };
    default:
      return undefined;
  }
}

/**
 * tokenizer.json for a folder's vocab.json and merges.txt. tokenizer_config.json's tokenizer_class
 * picks the pre-tokenizer (GPT-2's when it names none); a class this does not know is BAD_TOKENIZER.
 */
export function bpeFilesTokenizer(dir: string, config: Record<string, unknown>): Record<string, unknown> {
  const vocabFile = join(dir, "vocab.json");
  const mergesFile = join(dir, "merges.txt");
  const cls = typeof config.tokenizer_class === "string" ? config.tokenizer_class : "GPT2Tokenizer";
  const parts = classParts(cls, config.add_prefix_space === true);
  if (!parts) {
    throw new ModelError(
      "BAD_TOKENIZER",
      join(dir, "tokenizer_config.json"),
      `tokenizer_class ${cls} with only vocab.json and merges.txt: converting those to tokenizer.json is ` +
        `supported for GPT2Tokenizer, CodeGenTokenizer and Qwen2Tokenizer`,
    );
  }
  const vocab = readJsonFile(vocabFile);
  if (!isObject(vocab) || !Object.values(vocab).every((id) => Number.isSafeInteger(id) && (id as number) >= 0))
    throw new ModelError("BAD_TOKENIZER", vocabFile, "not a JSON object of token → id");
  const ids = new Map(Object.entries(vocab as Record<string, number>));
  if (ids.size === 0) throw new ModelError("BAD_TOKENIZER", vocabFile, "has no tokens");
  const merges: [string, string][] = [];
  let text: string;
  try {
    text = readFileSync(mergesFile, "utf8");
  } catch (e) {
    throw new ModelError("NOT_FOUND", mergesFile, `cannot read it: ${(e as Error).message}`);
  }
  text.split("\n").forEach((line, i) => {
    if ((i === 0 && line.startsWith("#version")) || line.trim() === "") return;
    const pair = line.replace(/\r$/, "").split(" ");
    if (pair.length !== 2 || !ids.has(pair[0]) || !ids.has(pair[1]) || !ids.has(pair[0] + pair[1])) {
      throw new ModelError(
        "BAD_TOKENIZER",
        mergesFile,
        `line ${i + 1} is not a merge of two tokens of vocab.json into a third: ${JSON.stringify(line.slice(0, 80))}`,
      );
    }
    merges.push(pair as [string, string]);
  });

  // Added tokens: the config's added_tokens_decoder, and its special tokens where they are in the vocabulary.
  const added = new Map<number, Record<string, unknown>>();
  for (const key of SPECIAL_TOKEN_KEYS) {
    const t = tokenText(config[key]);
    const id = t === undefined ? undefined : ids.get(t);
    if (id !== undefined) added.set(id, addedToken(id, t!, true));
  }
  for (const t of configAddedTokens(config, join(dir, "tokenizer_config.json"))) added.set(Number(t.id), t);
  const bos = tokenText(config.bos_token);
  const bosId = bos === undefined ? undefined : [...added.values()].find((t) => t.content === bos)?.id;
  const addBos = config.add_bos_token === true && bos !== undefined && bosId !== undefined;
  return tokenizerJson({
    addedTokens: added.values(),
    normalizer: parts.normalizer,
    preTokenizer: parts.preTokenizer,
    postProcessor: addBos ? bosPostProcessor(bos, Number(bosId)) : null,
    decoder: byteLevelDecoder,
    model: bpeModelJson({ vocab: Object.fromEntries(ids), merges }),
  });
}
