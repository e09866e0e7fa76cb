// Byte-level BPE tokenizer generator (GPT-2 style) for random models.
//
// Produces tokenizer.json, tokenizer_config.json and the special-token ids:
//   ids 0..255      one token per byte, written with GPT-2's bytes_to_unicode symbols (id = byte value,
//                   exactly as the golden models' tokenizer.json)
//   ids 256..       merges learned deterministically by a tiny BPE trainer on TRAINING_TEXT below
//   last 3 ids      special added tokens <|endoftext|>, <|im_start|>, <|im_end|>
// Merges are written as [left, right] pairs, the format Hugging Face tokenizers (>= 0.20) writes and
// @huggingface/tokenizers reads. The number of merges shrinks so the tokenizer fits in the model vocab.
//
// To change the vocabulary: edit TRAINING_TEXT (merges follow from it) or SPECIAL_TOKENS (append only,
// ids are assigned in order after the merges).

import { bpeModelJson, byteLevel, byteLevelDecoder, tokenizerJson } from "../loader/tokenizer-json.js";
import { bytesToUnicode } from "../loader/tokenizer.js";

export const SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"] as const;

export const DEFAULT_MAX_MERGES = 500;

/** Smallest vocab that can hold the tokenizer: 256 byte tokens + special tokens (no merges). */
export const MIN_TOKENIZER_SIZE = 256 + SPECIAL_TOKENS.length;

export const CHATML_TEMPLATE =
  "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

// A short English text the BPE trainer learns from. Common words end up as single tokens.
export const TRAINING_TEXT = `
The quick brown fox jumps over the lazy dog. The dog was not amused, and the fox ran into the forest
before anyone could say a word. In the morning the farmer found the fence broken and the hens gone.
He said that he would build a better fence, one that no fox could ever jump over again.

Language models read text as a sequence of tokens. A token can be a single byte, a piece of a word,
a whole word, or even a few words that often appear together. The tokenizer learns which pieces are
common by counting pairs of symbols in a large body of text and merging the most frequent pair, again
and again, until the vocabulary is full. This is called byte pair encoding, and it is the method used
by many of the models that people run on their own computers today.

When you ask a question, the model predicts the next token, then the next one, and so on. Each step
looks at all of the tokens that came before. The attention layers decide which earlier tokens matter
for the current one, and the feed forward layers transform what was found. At the end, the model
produces a score for every token in the vocabulary, and the most likely one is chosen or sampled.

Small models are useful for testing. They are fast to create, they fit in memory on any machine, and
they behave in the same way as the large ones, even if the text they write makes no sense at all. A
random model with the right shapes lets us check that the weights are loaded in the right order, that
the layers are connected in the right way, and that the numbers that come out are the numbers that
should come out. If something is wrong, it is much easier to find the problem in a small model than
in a large one.

There are many kinds of models. Some use rotary position embeddings, others learn a table of positions.
Some share the weights of the input embedding with the output layer, others keep them separate. Some
use one key and value head for several query heads, which saves memory when the context is long. The
names of the weights differ from one family to another, but the ideas behind them are the same.

The weather was warm and the sky was clear, so they walked along the river and talked about the
things they wanted to build. She wanted to write a program that could understand what people said;
he wanted to make it run faster than anything that came before. They agreed that the first step was
to make it work, the second step was to make it right, and only then would they make it fast.

Numbers appear in text as well: 1, 2, 3, 10, 42, 100, 2024 and 3.14 are all common. So are dates
like March 5, times like 10:30, and prices like $9.99. Code has its own patterns, such as for loops,
if statements, function calls, and return values, and a good tokenizer should handle all of them.

Every morning the baker opened the shop at six o'clock. The smell of fresh bread filled the street,
and people would stop on their way to work to buy a loaf or two. The children liked the sweet rolls
best, while the old men who sat by the window preferred black coffee and a slice of plain cake. It
was a small shop, but everyone in the town knew it, and many said it was the best bakery they had
ever visited.
`;

const BYTE_SYMBOLS = bytesToUnicode();

/** GPT-2 pre-tokenization regex (the one ByteLevel with use_regex: true applies). */
const GPT2_SPLIT = /'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+/gu;

function toByteSymbols(word: string): string[] {
  return Array.from(new TextEncoder().encode(word), (b) => BYTE_SYMBOLS[b]);
}

/**
 * Deterministic BPE training: repeatedly merge the most frequent adjacent pair (ties: the
 * lexicographically smallest pair). Stops at maxMerges or when every word is a single token.
 */
export function trainByteLevelBpe(text: string, maxMerges: number): [string, string][] {
  const counts = new Map<string, number>();
  for (const m of text.matchAll(GPT2_SPLIT)) counts.set(m[0], (counts.get(m[0]) ?? 0) + 1);
  const words = [...counts.entries()]
    .sort((a, b) => (a[0] < b[0] ? -1 : 1))
    .map(([w, freq]) => ({ syms: toByteSymbols(w), freq }));

  const merges: [string, string][] = [];
  while (merges.length < maxMerges) {
    const pairCounts = new Map<string, number>();
    for (const { syms, freq } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const key = syms[i] + "\u0000" + syms[i + 1];
        pairCounts.set(key, (pairCounts.get(key) ?? 0) + freq);
      }
    }
    let best: string | null = null;
    let bestCount = 0;
    for (const [key, c] of pairCounts) {
      if (c > bestCount || (c === bestCount && best !== null && key < best)) {
        best = key;
        bestCount = c;
      }
    }
    if (best === null) break;
    const [a, b] = best.split("\u0000") as [string, string];
    merges.push([a, b]);
    const merged = a + b;
    for (const w of words) {
      const out: string[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === a && w.syms[i + 1] === b) {
          out.push(merged);
          i++;
        } else {
          out.push(w.syms[i]);
        }
      }
      w.syms = out;
    }
  }
  return merges;
}

let trainedCache: [string, string][] | null = null;

/** Merges learned from TRAINING_TEXT; training is prefix-stable, so fewer merges = a prefix. */
export function builtinMerges(maxMerges: number): [string, string][] {
  if (trainedCache === null || trainedCache.length < Math.min(maxMerges, DEFAULT_MAX_MERGES)) {
    trainedCache = trainByteLevelBpe(TRAINING_TEXT, Math.max(maxMerges, DEFAULT_MAX_MERGES));
  }
  return trainedCache.slice(0, maxMerges);
}

export interface TokenizerIds {
  endoftext: number;
  imStart: number;
  imEnd: number;
  /** bos for config.json / generation_config.json */
  bos: number;
  /** primary eos (end of a chat turn) */
  eos: number;
  /** every id that should stop generation */
  eosAll: number[];
}

export interface GeneratedTokenizer {
  tokenizerJson: Record<string, unknown>;
  tokenizerConfig: Record<string, unknown>;
  ids: TokenizerIds;
  /** number of ids used by the tokenizer (must be <= model vocab_size) */
  size: number;
  merges: number;
}

export interface TokenizerOptions {
  /** The model's vocab_size: the tokenizer is shrunk (fewer merges) to fit. */
  vocabSize: number;
  modelMaxLength: number;
  maxMerges?: number;
}

export function makeTokenizer(o: TokenizerOptions): GeneratedTokenizer {
  if (o.vocabSize < MIN_TOKENIZER_SIZE) {
    throw new RangeError(`vocab_size ${o.vocabSize} is smaller than the tokenizer minimum ${MIN_TOKENIZER_SIZE}`);
  }
  const room = o.vocabSize - MIN_TOKENIZER_SIZE;
  const merges = builtinMerges(Math.min(o.maxMerges ?? DEFAULT_MAX_MERGES, room));

  const vocab: Record<string, number> = {};
  BYTE_SYMBOLS.forEach((s, id) => (vocab[s] = id));
  let next = 256;
  for (const [a, b] of merges) {
    const tok = a + b;
    if (!(tok in vocab)) vocab[tok] = next++;
  }
  const addedTokens = SPECIAL_TOKENS.map((content) => {
    const id = next++;
    vocab[content] = id;
    return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
  });
  const [endoftext, imStart, imEnd] = addedTokens.map((t) => t.id);

  const tokenizer = tokenizerJson({
    addedTokens,
    normalizer: null,
    preTokenizer: byteLevel(true),
    postProcessor: null,
    decoder: byteLevelDecoder,
    model: bpeModelJson({ vocab, merges }),
  });

  const tokenizerConfig = {
    add_bos_token: false,
    add_prefix_space: false,
    added_tokens_decoder: Object.fromEntries(
      addedTokens.map((t) => [
        String(t.id),
        { content: t.content, lstrip: false, normalized: false, rstrip: false, single_word: false, special: true },
      ]),
    ),
    bos_token: "<|endoftext|>",
    eos_token: "<|im_end|>",
    pad_token: "<|endoftext|>",
    unk_token: null,
    additional_special_tokens: ["<|im_start|>", "<|im_end|>"],
    chat_template: CHATML_TEMPLATE,
    clean_up_tokenization_spaces: false,
    errors: "replace",
    model_max_length: o.modelMaxLength,
    tokenizer_class: "PreTrainedTokenizerFast",
  };

  return {
    tokenizerJson: tokenizer,
    tokenizerConfig,
    ids: { endoftext, imStart, imEnd, bos: endoftext, eos: imEnd, eosAll: [imEnd, endoftext] },
    size: next,
    merges: merges.length,
  };
}
