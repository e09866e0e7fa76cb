// Structured output: which tokens a grammar allows next, as a mask over the vocabulary's logits. The
// session masks every step's logits before sampling, so whatever the sampler draws (greedy, top-p,
// any temperature) continues a document the grammar accepts, and it advances the grammar by the
// token it chose. Sampling from masked logits is sampling from the model's distribution restricted
// to valid tokens, renormalized: the reply is the model's own, only kept inside the grammar.
import { accepting, feed, feedAll, finished, inFreeString, initial, type Stack } from "./automaton.js";
import type { Node } from "./schema.js";

const STRICT_UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * How many of t's first bytes are whole characters of string text: ASCII other than `"`, `\` and
 * controls, and complete, well-formed UTF-8 sequences (a partial one at the end is not counted).
 */
function plainLength(t: Uint8Array): number {
  let p = 0;
  while (p < t.length) {
    const b = t[p];
    if (b < 0x80) {
      if (b < 0x20 || b === 0x22 || b === 0x5c) return p;
      p++;
      continue;
    }
    const len = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    if (len === 0 || p + len > t.length) return p;
    try {
      STRICT_UTF8.decode(t.subarray(p, p + len));
    } catch {
      return p;
    }
    p += len;
  }
  return p;
}

/**
 * A tokenizer's vocabulary as bytes, with what masking precomputes once per model. The bytes sit in
 * one buffer (token id's at data[start[id] .. start[id + 1])), not 100K+ small arrays for the
 * garbage collector to walk.
 */
export class TokenVocabulary {
  readonly size: number;
  readonly data: Uint8Array;
  readonly start: Int32Array;
  /** Tokens that write no bytes (special tokens, which decoding drops): never allowed inside a document. */
  readonly empty: Uint8Array;
  /** End of a token's plain string text (plainLength): where its bytes start to depend on the state. */
  readonly plainEnd: Int32Array;
  /**
   * Token ids by their first two bytes (index b1 * 257 + b2; b2 = 256 for one-byte tokens), so that a
   * mask rules out a whole group with one automaton step and never visits its tokens.
   */
  readonly groups: (Int32Array | undefined)[];

  constructor(
    /** Each id's bytes in the decoded text; null for special tokens. */
    bytes: readonly (Uint8Array | null)[],
    /** End-of-sequence ids: allowed exactly where the document may end. */
    readonly eos: ReadonlySet<number>,
  ) {
    const size = (this.size = bytes.length);
    this.start = new Int32Array(size + 1);
    for (let id = 0; id < size; id++) this.start[id + 1] = this.start[id] + (bytes[id]?.length ?? 0);
    this.data = new Uint8Array(this.start[size]);
    this.empty = new Uint8Array(size);
    this.plainEnd = new Int32Array(size);
    const lists: number[][] = [];
    for (let id = 0; id < size; id++) {
      const t = bytes[id];
      const a = this.start[id];
      if (t) this.data.set(t, a);
      if (!t || t.length === 0 || eos.has(id)) {
        this.empty[id] = 1;
        continue;
      }
      this.plainEnd[id] = a + plainLength(t);
      (lists[t[0] * 257 + (t.length > 1 ? t[1] : 256)] ??= []).push(id);
    }
    this.groups = Array.from({ length: 256 * 257 }, (_, i) => (lists[i] ? Int32Array.from(lists[i]) : undefined));
  }
}

export class GrammarConstraint {
  private stacks: Stack[];
  private scratch = new Float32Array(0);

  constructor(
    root: Node,
    private readonly vocab: TokenVocabulary,
  ) {
    this.stacks = initial(root);
  }

  /** The document is complete and nothing may follow: generation should end here. */
  get finished(): boolean {
    return finished(this.stacks);
  }

  /**
   * Sets the logit of every token the grammar does not allow next to -Infinity, in place. Returns how
   * many allowed tokens kept a finite logit (0: none did, e.g. every one HiRE's output layer left out).
   */
  mask(logits: Float32Array): number {
    const { eos, size } = this.vocab;
    if (this.scratch.length !== logits.length) this.scratch = new Float32Array(logits.length);
    const out = this.scratch.fill(-Infinity);
    const n = Math.min(logits.length, size);
    let kept = 0;
    const keep = (id: number) => {
      if (id < n && logits[id] !== -Infinity) {
        out[id] = logits[id];
        kept++;
      }
    };
    if (inFreeString(this.stacks)) this.maskInString(n, keep);
    else this.maskByGroups(keep);
    if (accepting(this.stacks)) eos.forEach(keep);
    logits.set(out);
    return kept;
  }

  /**
   * Inside a string, most tokens are plain text and leave the automaton as it is; the rest are decided
   * by what follows their plain start (`",`, `"}`, `\n`, ...), which few distinct tails share: each
   * tail is run once.
   */
  private maskInString(n: number, keep: (id: number) => void): void {
    const { data, start, empty, plainEnd } = this.vocab;
    const tails = new Map<string, boolean>();
    for (let id = 0; id < n; id++) {
      if (empty[id]) continue;
      const from = plainEnd[id];
      const to = start[id + 1];
      if (from === to) {
        keep(id);
        continue;
      }
      const key = String.fromCharCode(...data.subarray(from, to));
      let ok = tails.get(key);
      if (ok === undefined) tails.set(key, (ok = feedAll(this.stacks, data, from, to) !== null));
      if (ok) keep(id);
    }
  }

  /** Elsewhere: tokens by their first two bytes, a whole group ruled out by one step. */
  private maskByGroups(keep: (id: number) => void): void {
    const { data, start, groups } = this.vocab;
    for (let b1 = 0; b1 < 256; b1++) {
      const one = feed(this.stacks, b1);
      if (one.length === 0) continue;
      for (let b2 = 0; b2 <= 256; b2++) {
        const group = groups[b1 * 257 + b2];
        if (!group) continue;
        if (b2 === 256) {
          group.forEach(keep);
          continue;
        }
        const two = feed(one, b2);
        if (two.length === 0) continue;
        for (let i = 0; i < group.length; i++) {
          const id = group[i];
          const from = start[id] + 2;
          const to = start[id + 1];
          if (from === to || feedAll(two, data, from, to) !== null) keep(id);
        }
      }
    }
  }

  /** Moves the grammar past the chosen token (one mask() allowed). */
  advance(id: number): void {
    const { eos, empty, data, start } = this.vocab;
    if (eos.has(id)) return;
    const next = id < this.vocab.size && !empty[id] ? feedAll(this.stacks, data, start[id], start[id + 1]) : null;
    if (!next) throw new Error(`token ${id} does not continue the grammar`);
    this.stacks = next;
  }
}
