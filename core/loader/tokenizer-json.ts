// tokenizer.json sections as transformers writes them, for the tokenizers this project makes
// (make-model's, GGUF imports', the conversion of a folder's tokenizer.model).

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
