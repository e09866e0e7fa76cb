// Structured output: which tokens a grammar allows next, as a mask over the vocabulary's logits. The
// session masks every step's logits before sampling, so whatever the sampler draws (greedy, top-p,
// any temperature) continues a document the grammar accepts, and it advances the grammar by the
// token it chose. Sampling from masked logits is sampling from the model's distribution restricted
// to valid tokens, renormalized: the reply is the model's own, only kept inside the grammar.
import { accepting, feed, feedAll, finished, inFreeString, initial, type Stack } from "./automaton.js";
import type { Node } from "./schema.js";

/** A tokenizer's vocabulary as bytes, with what masking precomputes once per model. */
export class TokenVocabulary {
  /** Tokens whose bytes can sit anywhere inside a string: no `"`, `\` or control characters. */
  readonly plain: Uint8Array;

  constructor(
    /** Each id's bytes in the decoded text; null for special tokens. */
    readonly bytes: readonly (Uint8Array | null)[],
    /** End-of-sequence ids: allowed exactly where the document may end. */
    readonly eos: ReadonlySet<number>,
  ) {
    this.plain = new Uint8Array(bytes.length);
    bytes.forEach((b, id) => {
      if (b && b.length > 0 && b.every((x) => x >= 0x20 && x !== 0x22 && x !== 0x5c)) this.plain[id] = 1;
    });
  }
}

export class GrammarConstraint {
  private stacks: Stack[];

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
    const { bytes, eos, plain } = this.vocab;
    const canEnd = accepting(this.stacks);
    const free = inFreeString(this.stacks);
    // The stacks after each first byte and each first two bytes, shared by every token that starts so:
    // most tokens are ruled out by a table lookup, not by running the automaton.
    const after1: (Stack[] | null)[] = new Array(256).fill(null);
    for (let b = 0; b < 256; b++) {
      const next = feed(this.stacks, b);
      if (next.length > 0) after1[b] = next;
    }
    const after2 = new Map<number, Stack[] | null>();
    let kept = 0;
    const n = Math.min(logits.length, bytes.length);
    for (let id = 0; id < n; id++) {
      if (logits[id] === -Infinity) continue;
      const t = bytes[id];
      let ok: boolean;
      if (eos.has(id)) ok = canEnd;
      else if (t === null || t.length === 0) ok = false;
      else if (after1[t[0]] === null) ok = false;
      else if (free && plain[id]) ok = true;
      else if (t.length === 1) ok = true;
      else {
        const key = t[0] * 256 + t[1];
        let two = after2.get(key);
        if (two === undefined) {
          const next = feed(after1[t[0]]!, t[1]);
          two = next.length > 0 ? next : null;
          after2.set(key, two);
        }
        ok = two !== null && (t.length === 2 || feedAll(two, t.subarray(2)) !== null);
      }
      if (ok) kept++;
      else logits[id] = -Infinity;
    }
    logits.fill(-Infinity, n);
    return kept;
  }

  /** Moves the grammar past the chosen token (one mask() allowed). */
  advance(id: number): void {
    if (this.vocab.eos.has(id)) return;
    const t = this.vocab.bytes[id];
    const next = t ? feedAll(this.stacks, t) : null;
    if (!next) throw new Error(`token ${id} does not continue the grammar`);
    this.stacks = next;
  }
}
